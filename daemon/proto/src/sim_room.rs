//! Set-up shared by the room machine's unit tests on simulated time.

use std::time::{Duration, Instant};

use peerix_wire::packet::SignalType;
use serde_json::Value as Json;

use crate::room::{Room, RoomConfig};
use crate::types::{Action, ConnId};

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A room for `me` with the given `connectionTimeout` and jitter seed.
pub(crate) fn room(me: &str, timeout: Duration, seed: u64) -> Room {
    Room::new(
        RoomConfig {
            me: me.into(),
            metadata: Json::Null,
            max_connecting: 4,
            connection_timeout: Some(timeout),
            candidate_debounce: ms(10),
        },
        seed,
    )
}

pub(crate) fn drain(r: &mut Room) -> Vec<Action> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

/// Runs the room's timers from `from` to `to` in 10 ms steps; returns every action.
pub(crate) fn run(r: &mut Room, from: Instant, to: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    let mut now = from;
    while now < to {
        now += ms(10);
        r.handle_timeout(now);
        out.extend(drain(r));
    }
    out
}

/// `peer` invokes us at `t0`: the connection the room makes to it.
pub(crate) fn invoked_by(r: &mut Room, t0: Instant, peer: &str) -> ConnId {
    r.handle_signal(t0, false, peer, SignalType::Invoke, vec![]);
    drain(r)
        .into_iter()
        .find_map(|a| match a {
            Action::Connect { conn, .. } => Some(conn),
            _ => None,
        })
        .expect("a connection")
}
