//! A description sent again (`resend.rs`) carries our candidates with it, on simulated time.
//! Seen against a real browser after a NAT rebinding: our first offer landed on the page's
//! dying connection, the copy 2 s later created a fresh one there, and without our candidates
//! (sent once, to the dying connection) that one never reached us behind the NAT.

use std::time::{Duration, Instant};

use peerix_wire::packet::{IceCandidateInit, SessionDescription, SignalType};
use serde_json::Value as Json;

use crate::room::Room;
use crate::sim_room::{drain, invoked_by, ms, run};
use crate::types::{Action, ConnEvent, ConnId, Target};

fn room(me: &str) -> Room {
    crate::sim_room::room(me, Duration::from_secs(15), 5)
}

fn desc(kind: &str, ufrag: &str) -> SessionDescription {
    SessionDescription {
        kind: kind.into(),
        sdp: format!(
            "v=0\r\na=fingerprint:sha-256 AA\r\nm=application 9 UDP/DTLS/SCTP \
             webrtc-datachannel\r\na=ice-ufrag:{ufrag}\r\n"
        ),
    }
}

fn cand(ufrag: &str, port: u16) -> IceCandidateInit {
    IceCandidateInit {
        candidate: format!("candidate:1 1 udp 1 192.0.2.7 {port} typ srflx"),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some(ufrag.into()),
    }
}

/// The signaling packets published to `peer`, in order: (kind, message).
fn publishes(actions: &[Action], peer: &str) -> Vec<(SignalType, Vec<Json>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish {
                to: Target::Peer(p),
                kind,
                message,
            } if p == peer => Some((*kind, message.clone().unwrap_or_default())),
            _ => None,
        })
        .collect()
}

fn gathered(r: &mut Room, t: Instant, conn: ConnId, ports: &[u16]) -> Vec<Action> {
    for &p in ports {
        r.handle_conn_event(t, conn, ConnEvent::LocalCandidate(cand("L1", p)));
    }
    run(r, t, t + ms(50))
}

fn done(d: Option<SessionDescription>) -> ConnEvent {
    ConnEvent::OpDone {
        stable: d.is_none(),
        result: Ok(d),
    }
}

#[test]
fn an_offer_sent_again_is_followed_by_our_candidates() {
    let t0 = Instant::now();
    let mut r = room("me");
    let conn = invoked_by(&mut r, t0, "zz");
    r.handle_conn_event(t0, conn, done(Some(desc("offer", "L1"))));
    let first = publishes(&drain(&mut r), "zz");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, SignalType::Offer);
    let sent = publishes(&gathered(&mut r, t0, conn, &[5001, 5002]), "zz");
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].0, sent[0].1.len()), (SignalType::Candidate, 2));

    // No answer: the copy of the offer goes at 2 s, and both candidates right after it.
    let again = publishes(&run(&mut r, t0 + ms(50), t0 + ms(2100)), "zz");
    let kinds: Vec<SignalType> = again.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [SignalType::Offer, SignalType::Candidate],
        "{again:?}"
    );
    assert_eq!(again[0].1, first[0].1, "the same offer");
    assert_eq!(again[1].1, sent[0].1, "the same candidates");
}

#[test]
fn an_answer_sent_again_is_followed_by_our_candidates() {
    let t0 = Instant::now();
    let mut r = room("me");
    r.handle_signal(
        t0,
        false,
        "aa",
        SignalType::Offer,
        vec![desc("offer", "R1").to_value(), Json::Null],
    );
    let actions = drain(&mut r);
    let conn = actions
        .iter()
        .find_map(|a| match a {
            Action::Connect { conn, .. } => Some(*conn),
            _ => None,
        })
        .expect("a connection");
    // Applying the remote offer makes our answer.
    r.handle_conn_event(
        t0,
        conn,
        ConnEvent::OpDone {
            stable: true,
            result: Ok(Some(desc("answer", "L1"))),
        },
    );
    let first = publishes(&drain(&mut r), "aa");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, SignalType::Answer);
    let sent = publishes(&gathered(&mut r, t0, conn, &[6001]), "aa");
    assert_eq!(sent.len(), 1);

    // A copy of the offer: the answer was lost, and our candidates with it.
    let t1 = t0 + ms(2000);
    r.handle_signal(
        t1,
        false,
        "aa",
        SignalType::Offer,
        vec![desc("offer", "R1").to_value(), Json::Null],
    );
    let again = publishes(&drain(&mut r), "aa");
    let kinds: Vec<SignalType> = again.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [SignalType::Answer, SignalType::Candidate],
        "{again:?}"
    );
    assert_eq!(again[1].1, sent[0].1);
}

#[test]
fn the_candidates_kept_are_bounded() {
    let t0 = Instant::now();
    let mut r = room("me");
    let conn = invoked_by(&mut r, t0, "zz");
    r.handle_conn_event(t0, conn, done(Some(desc("offer", "L1"))));
    drain(&mut r);
    let ports: Vec<u16> = (7000..7100).collect();
    gathered(&mut r, t0, conn, &ports);
    let again = publishes(&run(&mut r, t0 + ms(50), t0 + ms(2100)), "zz");
    assert_eq!(again.len(), 2);
    assert_eq!(again[1].1.len(), crate::resend::MAX_RESENT_CANDIDATES);
}
