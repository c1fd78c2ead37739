//! Every table of the room machine that ids anyone can forge feed stays bounded: the refusal
//! queue at the admission cap, the invites we expect offers for, and the recovery table.
//! Deterministic: a fixed seed and a hand-made clock.

use std::time::{Duration, Instant};

use peerix_wire::packet::SignalType;
use serde_json::Value as Json;

use crate::room::{Room, RoomConfig};
use crate::types::{Action, ConnEvent, IceState};

/// The bound on invites and recovery entries (`admission::MAX_TRACKED`).
const TRACKED: usize = 256;

fn room(max_connecting: usize) -> Room {
    Room::new(
        RoomConfig {
            me: "me".into(),
            metadata: Json::Null,
            max_connecting,
            connection_timeout: Some(Duration::from_secs(15)),
            candidate_debounce: Duration::from_millis(10),
        },
        7,
    )
}

fn drain(r: &mut Room) -> Vec<Action> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

#[test]
fn a_flood_of_announces_keeps_the_invites_table_bounded() {
    let t0 = Instant::now();
    let mut r = room(4);
    for i in 0..5 * TRACKED {
        r.handle_signal(
            t0,
            true,
            &format!("forged{i}"),
            SignalType::Announce,
            vec![],
        );
    }
    drain(&mut r);
    assert_eq!(r.invites.len(), TRACKED);
    // The newest are kept (a real peer announcing after the flood is still expected).
    assert!(r
        .invites
        .contains_key(&format!("forged{}", 5 * TRACKED - 1)));
    // Invites that are never answered end: three invokes, then the entry is gone.
    let mut now = t0;
    for _ in 0..10 {
        now += Duration::from_secs(40);
        r.handle_timeout(now);
        drain(&mut r);
    }
    assert!(r.invites.is_empty(), "{} invites left", r.invites.len());
}

#[test]
fn a_flood_of_invokes_at_the_cap_keeps_the_refusal_queue_bounded() {
    let t0 = Instant::now();
    let mut r = room(4);
    for i in 0..1000 {
        r.handle_signal(t0, false, &format!("forged{i}"), SignalType::Invoke, vec![]);
    }
    let connects = drain(&mut r)
        .into_iter()
        .filter(|a| matches!(a, Action::Connect { .. }))
        .count();
    assert_eq!(connects, 4);
    assert_eq!(r.conn_count(), 4);
    assert_eq!(
        r.refused.len(),
        4,
        "the refusal queue holds max_connecting ids"
    );
    assert_eq!(r.refused.back().map(|(p, _)| p.as_str()), Some("forged999"));
}

#[test]
fn failed_connections_keep_the_recovery_table_bounded() {
    let t0 = Instant::now();
    let mut r = room(0);
    for i in 0..2 * TRACKED {
        r.handle_signal(t0, false, &format!("peer{i}"), SignalType::Invoke, vec![]);
    }
    let conns: Vec<_> = drain(&mut r)
        .into_iter()
        .filter_map(|a| match a {
            Action::Connect { conn, .. } => Some(conn),
            _ => None,
        })
        .collect();
    assert_eq!(conns.len(), 2 * TRACKED);
    for (i, c) in conns.iter().enumerate() {
        let now = t0 + Duration::from_millis(i as u64);
        r.handle_conn_event(now, *c, ConnEvent::Ice(IceState::Failed));
    }
    drain(&mut r);
    assert_eq!(r.recovery.len(), TRACKED);
    assert!(r.recovery.contains_key(&format!("peer{}", 2 * TRACKED - 1)));
}

#[test]
fn a_control_channel_flood_keeps_the_operation_queue_bounded() {
    let t0 = Instant::now();
    let mut r = room(4);
    // "zz" > "me": we are impolite and offer when invoked... either way a connection and its
    // first operation (our offer, or the remote's) are outstanding while the flood arrives.
    r.handle_signal(t0, true, "zz", SignalType::Announce, vec![]);
    r.handle_signal(t0, false, "zz", SignalType::Invoke, vec![Json::Null]);
    let actions = drain(&mut r);
    let conn = actions
        .iter()
        .find_map(|a| match a {
            Action::Connect { conn, .. } => Some(*conn),
            _ => None,
        })
        .expect("a connection");
    r.handle_conn_event(t0, conn, ConnEvent::ControlOpen);
    drain(&mut r);
    let candidate = peerix_wire::control::ControlMessage::Signal(vec![serde_json::json!({
        "candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "u"
    })])
    .encode();
    let mut reports = 0;
    for i in 0..10_000u32 {
        let now = t0 + Duration::from_millis(u64::from(i));
        r.handle_conn_event(now, conn, ConnEvent::ControlMessage(candidate.clone()));
        reports += drain(&mut r)
            .iter()
            .filter(|a| matches!(a, Action::Emit(crate::types::Event::Error { code, .. }) if *code == "SIGNALING_ERROR"))
            .count();
    }
    let queued = r.conns.get(&conn).map(|c| c.queued_ops()).unwrap_or(0);
    assert!(
        queued <= crate::conn::MAX_QUEUED_OPS,
        "{queued} operations queued"
    );
    assert!(reports >= 1, "the flood is reported");
    assert!(reports < 20, "at a bounded rate: {reports} reports");
}

#[test]
fn a_drained_room_holds_no_action_buffer_and_queues_again() {
    let t0 = Instant::now();
    let mut r = room(4);
    r.announce();
    r.handle_signal(t0, true, "remote", SignalType::Announce, vec![]);
    assert!(r.out.capacity() > 0);
    assert!(!drain(&mut r).is_empty());
    // Idle between bursts: the buffer of the last one is handed back.
    assert_eq!(r.out.capacity(), 0);
    // The next burst queues as before.
    r.announce();
    assert!(matches!(drain(&mut r).as_slice(), [Action::Publish { .. }]));
}
