//! ICE restart between peerixd peers (`restart.rs`), on simulated time: when a restart is
//! offered and by whom, that it travels over signaling, how many attempts, the fall-back to a
//! new connection, and that browsers and new incarnations never get one.

use std::time::{Duration, Instant};

use peerix_wire::control::ControlMessage;
use peerix_wire::packet::{IceCandidateInit, SessionDescription, SignalType};
use serde_json::{json, Value as Json};

use crate::restart::RestartPolicy;
use crate::room::Room;
use crate::sim_room::{drain, ms, run};
use crate::types::{Action, ConnEvent, ConnId, Event, IceState, Op, PeerState, Target};

const TIMEOUT: Duration = Duration::from_secs(15);

fn room(me: &str) -> Room {
    crate::sim_room::room(me, TIMEOUT, 3)
}

fn sdp(kind: &str, ufrag: &str, fingerprint: &str) -> SessionDescription {
    SessionDescription {
        kind: kind.into(),
        sdp: format!(
            "v=0\r\na=fingerprint:sha-256 {fingerprint}\r\nm=application 9 UDP/DTLS/SCTP \
             webrtc-datachannel\r\na=ice-ufrag:{ufrag}\r\n"
        ),
    }
}

fn cand(ufrag: &str) -> IceCandidateInit {
    IceCandidateInit {
        candidate: "candidate:1 1 udp 1 10.0.0.1 5000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some(ufrag.into()),
    }
}

fn ops(actions: &[Action]) -> Vec<&Op> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Run { op, .. } => Some(op),
            _ => None,
        })
        .collect()
}

fn published(actions: &[Action], kind: SignalType) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Publish { kind: k, to: Target::Peer(_), .. } if *k == kind))
        .count()
}

fn states(actions: &[Action]) -> Vec<PeerState> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(Event::Connection { state, .. }) => Some(*state),
            _ => None,
        })
        .collect()
}

fn offer_of(actions: &[Action]) -> Option<SessionDescription> {
    actions.iter().find_map(|a| match a {
        Action::Publish {
            kind: SignalType::Offer,
            message: Some(m),
            ..
        } => m.first().and_then(SessionDescription::from_value),
        _ => None,
    })
}

/// `me` connected to `peer` (we offered, they answered over signaling), control channel open;
/// `hello`: the remote said it is a peerixd.
fn connected(r: &mut Room, t: Instant, peer: &str, hello: bool) -> ConnId {
    r.handle_signal(t, false, peer, SignalType::Invoke, vec![]);
    let conn = drain(r)
        .into_iter()
        .find_map(|a| match a {
            Action::Connect { conn, .. } => Some(conn),
            _ => None,
        })
        .expect("a connection");
    let done = |d: Option<SessionDescription>| ConnEvent::OpDone {
        stable: d.is_none(),
        result: Ok(d),
    };
    r.handle_conn_event(t, conn, done(Some(sdp("offer", "L1", "F:ME"))));
    r.handle_signal(
        t,
        false,
        peer,
        SignalType::Answer,
        vec![sdp("answer", "R1", "F:PEER").to_value()],
    );
    r.handle_conn_event(t, conn, done(None));
    r.handle_conn_event(t, conn, ConnEvent::Ice(IceState::Checking));
    r.handle_conn_event(t, conn, ConnEvent::Ice(IceState::Connected));
    r.handle_conn_event(t, conn, ConnEvent::ControlOpen);
    if hello {
        let bytes = ControlMessage::PeerixdHello(json!({"peerixd": 1})).encode();
        r.handle_conn_event(t, conn, ConnEvent::ControlMessage(bytes));
    }
    drain(r);
    assert_eq!(r.peer(peer).map(|p| p.1), Some(PeerState::Connected));
    conn
}

#[test]
fn a_dead_path_is_restarted_over_signaling_and_the_connection_carries_on() {
    let t0 = Instant::now();
    // "a" < "zz": we are the impolite side and offer first.
    let mut r = room("a");
    let conn = connected(&mut r, t0, "zz", true);

    let t1 = t0 + ms(100);
    r.handle_conn_event(t1, conn, ConnEvent::Ice(IceState::Disconnected));
    let a = drain(&mut r);
    assert_eq!(states(&a), [PeerState::Disconnected]);
    assert!(ops(&a).is_empty(), "no restart before the wait: {a:?}");
    let a = run(&mut r, t1, t1 + ms(240));
    assert!(ops(&a).is_empty(), "no restart before the wait: {a:?}");
    let t2 = t1 + ms(250);
    r.handle_timeout(t2);
    let a = drain(&mut r);
    assert_eq!(ops(&a), [&Op::RestartIce]);

    // The restart offer goes over signaling (the control channel rides the dead path).
    r.handle_conn_event(
        t2,
        conn,
        ConnEvent::OpDone {
            stable: false,
            result: Ok(Some(sdp("offer", "L2", "F:ME"))),
        },
    );
    let a = drain(&mut r);
    assert_eq!(published(&a, SignalType::Offer), 1, "{a:?}");
    assert!(!a.iter().any(|x| matches!(x, Action::SendControl { .. })));
    // So do our new candidates, batched.
    r.handle_conn_event(t2, conn, ConnEvent::LocalCandidate(cand("L2")));
    let a = run(&mut r, t2, t2 + ms(20));
    assert_eq!(published(&a, SignalType::Candidate), 1, "{a:?}");
    assert!(!a.iter().any(|x| matches!(x, Action::SendControl { .. })));

    // The answer and the remote's candidates come over signaling and are applied.
    let t3 = t2 + ms(50);
    r.handle_signal(
        t3,
        false,
        "zz",
        SignalType::Answer,
        vec![sdp("answer", "R2", "F:PEER").to_value()],
    );
    let a = drain(&mut r);
    assert!(
        matches!(ops(&a)[..], [Op::ApplyRemote { answer: false, .. }]),
        "{a:?}"
    );
    r.handle_signal(
        t3,
        false,
        "zz",
        SignalType::Candidate,
        vec![cand("R2").to_value()],
    );
    r.handle_conn_event(
        t3,
        conn,
        ConnEvent::OpDone {
            stable: true,
            result: Ok(None),
        },
    );
    let a = drain(&mut r);
    assert!(
        matches!(ops(&a)[..], [Op::AddCandidate(_)]),
        "the candidate is applied: {a:?}"
    );
    r.handle_conn_event(
        t3,
        conn,
        ConnEvent::OpDone {
            stable: true,
            result: Ok(None),
        },
    );
    r.handle_conn_event(t3, conn, ConnEvent::Ice(IceState::Checking));
    r.handle_conn_event(t3 + ms(30), conn, ConnEvent::Ice(IceState::Connected));
    let a = drain(&mut r);
    assert_eq!(states(&a), [PeerState::Connected], "{a:?}");

    // The same connection, and nothing is pending: no failure, no re-invoke, no timer.
    assert_eq!(r.peer("zz"), Some((conn, PeerState::Connected)));
    let a = run(&mut r, t3, t3 + TIMEOUT * 2);
    assert!(a.is_empty(), "{a:?}");
    // Candidates go over the control channel again.
    r.handle_conn_event(t3, conn, ConnEvent::LocalCandidate(cand("L2")));
    let a = drain(&mut r);
    assert!(matches!(a[..], [Action::SendControl { .. }]), "{a:?}");
}

#[test]
fn the_polite_side_waits_twice_as_long() {
    let t0 = Instant::now();
    // "zz" > "a": we are polite.
    let mut r = room("zz");
    let conn = connected(&mut r, t0, "a", true);
    r.handle_conn_event(t0, conn, ConnEvent::Ice(IceState::Disconnected));
    drain(&mut r);
    let a = run(&mut r, t0, t0 + ms(490));
    assert!(ops(&a).is_empty(), "{a:?}");
    let a = run(&mut r, t0 + ms(490), t0 + ms(510));
    assert_eq!(ops(&a), [&Op::RestartIce]);
}

#[test]
fn unanswered_restarts_are_bounded_then_the_connection_is_replaced() {
    let t0 = Instant::now();
    let mut r = room("a");
    let p = RestartPolicy::default();
    let conn = connected(&mut r, t0, "zz", true);
    r.handle_conn_event(t0, conn, ConnEvent::Ice(IceState::Disconnected));
    drain(&mut r);
    let mut restarts = 0;
    let mut all = Vec::new();
    let mut now = t0;
    while now < t0 + p.after + p.attempt_timeout * p.max_attempts + ms(1500) {
        now += ms(10);
        r.handle_timeout(now);
        for a in drain(&mut r) {
            if matches!(
                a,
                Action::Run {
                    op: Op::RestartIce,
                    ..
                }
            ) {
                restarts += 1;
                r.handle_conn_event(
                    now,
                    conn,
                    ConnEvent::OpDone {
                        stable: false,
                        result: Ok(Some(sdp("offer", &format!("L{restarts}x"), "F:ME"))),
                    },
                );
            }
            all.push(a);
        }
        all.extend(drain(&mut r));
    }
    assert_eq!(restarts, p.max_attempts);
    assert_eq!(published(&all, SignalType::Offer), p.max_attempts as usize);
    assert_eq!(
        states(&all),
        [PeerState::Failed, PeerState::Closed],
        "after the last attempt the connection fails: {all:?}"
    );
    assert_eq!(
        published(&all, SignalType::Invoke),
        1,
        "and is replaced by Peerix's recovery (re-invoke)"
    );
}

#[test]
fn a_remote_restart_offer_is_answered_over_signaling_on_the_same_connection() {
    let t0 = Instant::now();
    let mut r = room("zz");
    let conn = connected(&mut r, t0, "a", true);
    r.handle_signal(
        t0,
        false,
        "a",
        SignalType::Offer,
        vec![sdp("offer", "R2", "F:PEER").to_value(), Json::Null],
    );
    let a = drain(&mut r);
    assert!(
        matches!(ops(&a)[..], [Op::ApplyRemote { answer: true, .. }]),
        "{a:?}"
    );
    assert!(states(&a).is_empty(), "the connection stays: {a:?}");
    r.handle_conn_event(
        t0,
        conn,
        ConnEvent::OpDone {
            stable: true,
            result: Ok(Some(sdp("answer", "L2", "F:ME"))),
        },
    );
    r.handle_conn_event(t0, conn, ConnEvent::Ice(IceState::Checking));
    let a = drain(&mut r);
    assert_eq!(published(&a, SignalType::Answer), 1, "{a:?}");
    assert!(
        states(&a).is_empty(),
        "checking again is not reported: {a:?}"
    );
    r.handle_conn_event(t0, conn, ConnEvent::Ice(IceState::Connected));
    assert_eq!(r.peer("a"), Some((conn, PeerState::Connected)));
}

#[test]
fn new_credentials_with_a_new_certificate_or_from_a_browser_replace_the_connection() {
    let t0 = Instant::now();
    // A new incarnation of a peerixd: new ICE credentials and a new DTLS certificate.
    let mut r = room("zz");
    let conn = connected(&mut r, t0, "a", true);
    r.handle_signal(
        t0,
        false,
        "a",
        SignalType::Offer,
        vec![sdp("offer", "R2", "F:NEW").to_value(), Json::Null],
    );
    let a = drain(&mut r);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Close { conn: c } if *c == conn)));
    assert!(a.iter().any(|x| matches!(x, Action::Connect { .. })));

    // A browser (no hello): Peerix never restarts ICE, so new credentials are a new
    // connection object, whatever the certificate.
    let mut r = room("zz");
    let conn = connected(&mut r, t0, "a", false);
    r.handle_signal(
        t0,
        false,
        "a",
        SignalType::Offer,
        vec![sdp("offer", "R2", "F:PEER").to_value(), Json::Null],
    );
    let a = drain(&mut r);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Close { conn: c } if *c == conn)));
}

#[test]
fn a_browser_is_never_offered_a_restart() {
    let t0 = Instant::now();
    let mut r = room("a");
    let conn = connected(&mut r, t0, "zz", false);
    r.handle_conn_event(t0, conn, ConnEvent::Ice(IceState::Disconnected));
    let mut all = drain(&mut r);
    all.extend(run(&mut r, t0, t0 + TIMEOUT + ms(1100)));
    assert!(
        !ops(&all).contains(&&Op::RestartIce),
        "no restart toward a browser: {all:?}"
    );
    assert!(offer_of(&all).is_none());
    // Peerix's timing: failed at the connection timeout, then re-invoked.
    assert_eq!(
        states(&all),
        [
            PeerState::Disconnected,
            PeerState::Failed,
            PeerState::Closed
        ]
    );
    assert_eq!(published(&all, SignalType::Invoke), 1);
}

#[test]
fn without_a_policy_a_peerixd_fails_after_the_grace() {
    let t0 = Instant::now();
    let mut r = room("a");
    r.set_ice_restart(None);
    let conn = connected(&mut r, t0, "zz", true);
    r.handle_conn_event(t0, conn, ConnEvent::Ice(IceState::Disconnected));
    let mut all = drain(&mut r);
    all.extend(run(
        &mut r,
        t0,
        t0 + crate::room::PEERIXD_DISCONNECT_GRACE + ms(20),
    ));
    assert!(!ops(&all).contains(&&Op::RestartIce));
    assert_eq!(
        states(&all),
        [
            PeerState::Disconnected,
            PeerState::Failed,
            PeerState::Closed
        ]
    );
}

#[test]
fn a_peerixd_hello_is_reported_once_per_connection() {
    let t0 = Instant::now();
    let mut r = room("a");
    let conn = connected(&mut r, t0, "zz", false);
    let hello = ControlMessage::PeerixdHello(json!({"peerixd": 1})).encode();
    r.handle_conn_event(t0, conn, ConnEvent::ControlMessage(hello.clone()));
    r.handle_conn_event(t0, conn, ConnEvent::ControlMessage(hello));
    let told: Vec<_> = drain(&mut r)
        .into_iter()
        .filter(|a| matches!(a, Action::RemoteIsPeerixd { .. }))
        .collect();
    assert_eq!(told, [Action::RemoteIsPeerixd { conn }]);
}
