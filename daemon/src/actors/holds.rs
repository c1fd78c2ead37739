//! Holds: which client connections keep a room joined (PROTOCOL.md, "Several clients on one
//! daemon"). Every connection that `join`s a room holds it; `join` with `persist` (and a room
//! from the configuration) also gives it the persistent hold, owned by no connection. The room
//! is left when no hold remains. The bookkeeping is `Holds` (pure; kept in the room's
//! `Membership`, so a room re-joined after a crash keeps its holders); the `Daemon` carries
//! its decisions out: it leaves the room and tells the connections that held it, and the
//! subscribers of group `room`, with one `room:left` event.

use actix::prelude::*;
use peerix_ipc_proto::{event_names::ROOM_LEFT, LeaveArgs, LeaveResult};
use rmpv::Value;

use super::daemon::Daemon;
use super::event_bus::{Deliver, EmitAlsoTo, EventRecord};
use super::room::{Leave, RoomActor};
use super::verifier::SessionGone;
use crate::error::DaemonError;

/// A client connection that holds a room: the session, its client's name (for messages that
/// say who holds a room) and where its `room:left` goes.
#[derive(Clone)]
pub struct Holder {
    /// Session number.
    pub session: u64,
    /// The client's name from its `hello`.
    pub client: String,
    /// Where its events go.
    pub to: Recipient<Deliver>,
}

/// Why a room was left, as `room:left` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftReason {
    /// A `leave` released the last hold.
    Released,
    /// A `leave` with `all`.
    LeaveAll,
    /// The last holding connection closed (or its session crashed).
    Disconnected,
    /// The room was removed from the configuration (SIGHUP) and nothing else held it.
    Config,
}

impl LeftReason {
    /// The wire string of `room:left`'s `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            LeftReason::Released => "released",
            LeftReason::LeaveAll => "leave-all",
            LeftReason::Disconnected => "disconnected",
            LeftReason::Config => "config",
        }
    }
}

/// What releasing holds did.
#[derive(Debug)]
pub struct Released<T> {
    /// No hold remains: the room is to be left.
    pub left: bool,
    /// Connections still holding it.
    pub holders: u64,
    /// Why it is left (meaningful when `left`).
    pub reason: LeftReason,
    /// The connections whose holds went too, other than the caller's: they are told.
    pub others: Vec<(u64, T)>,
}

/// `leave` from a connection that holds nothing, of a room with no persistent hold: the
/// connections that do hold it.
#[derive(Debug)]
pub struct NotHeld<T>(pub Vec<(u64, T)>);

/// The holds on one room: one per connection (by session number) and the persistent one.
#[derive(Debug, Clone)]
pub struct Holds<T> {
    /// Sorted by session number. Not a `BTreeMap`: its first node has room for 11 holds
    /// (~630 bytes per room), and a room is nearly always held by one or two sessions.
    sessions: Vec<(u64, T)>,
    persist: bool,
}

impl<T> Default for Holds<T> {
    fn default() -> Self {
        Self {
            sessions: Vec::new(),
            persist: false,
        }
    }
}

impl<T: Clone> Holds<T> {
    /// Adds `session`'s hold (again: a no-op) and, with `persist`, the persistent hold.
    pub fn hold(&mut self, session: Option<(u64, T)>, persist: bool) {
        if let Some((id, t)) = session {
            match self.sessions.binary_search_by_key(&id, |(k, _)| *k) {
                Ok(i) => self.sessions[i].1 = t,
                Err(i) => {
                    // Grown one hold at a time: a `Vec`'s first allocation has room for 4.
                    self.sessions.reserve_exact(1);
                    self.sessions.insert(i, (id, t));
                }
            }
        }
        self.persist |= persist;
    }

    /// Connections holding the room.
    pub fn holders(&self) -> u64 {
        self.sessions.len() as u64
    }

    /// Whether the persistent hold is set.
    pub fn persist(&self) -> bool {
        self.persist
    }

    /// No hold at all: the room must not stay joined.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && !self.persist
    }

    /// `leave` from `session`: with `all`, every hold goes; otherwise the caller's, or, if it
    /// holds none, the persistent one. A caller that holds none, of a room without the
    /// persistent hold that others hold, releases nothing.
    pub fn release(&mut self, session: u64, all: bool) -> Result<Released<T>, NotHeld<T>> {
        if all {
            self.persist = false;
            let others = std::mem::take(&mut self.sessions)
                .into_iter()
                .filter(|(id, _)| *id != session)
                .collect();
            return Ok(self.outcome(LeftReason::LeaveAll, others));
        }
        if self.remove(session).is_none() {
            if !self.persist && !self.sessions.is_empty() {
                return Err(NotHeld(self.sessions.clone()));
            }
            self.persist = false;
        }
        Ok(self.outcome(LeftReason::Released, Vec::new()))
    }

    /// `session`'s connection closed: its hold goes (`None` if it held none).
    pub fn release_session(&mut self, session: u64) -> Option<Released<T>> {
        self.remove(session)?;
        Some(self.outcome(LeftReason::Disconnected, Vec::new()))
    }

    fn remove(&mut self, session: u64) -> Option<T> {
        let i = self
            .sessions
            .binary_search_by_key(&session, |(k, _)| *k)
            .ok()?;
        Some(self.sessions.remove(i).1)
    }

    fn outcome(&self, reason: LeftReason, others: Vec<(u64, T)>) -> Released<T> {
        Released {
            left: self.is_empty(),
            holders: self.holders(),
            reason,
            others,
        }
    }
}

impl Daemon {
    /// `leave` from `session`.
    pub(super) fn leave(
        &mut self,
        a: LeaveArgs,
        session: u64,
    ) -> ResponseActFuture<Self, Result<Value, DaemonError>> {
        self.leave_because(a, session, None)
    }

    /// `leave`, with `room:left` giving `reason` instead of the release's own (a reload).
    pub(super) fn leave_because(
        &mut self,
        a: LeaveArgs,
        session: u64,
        reason: Option<LeftReason>,
    ) -> ResponseActFuture<Self, Result<Value, DaemonError>> {
        let room = a.room;
        let released = match self.memberships.get_mut(&room) {
            None => Err(DaemonError::NotJoined(room.clone())),
            Some(m) => m.holds.release(session, a.all).map_err(|NotHeld(by)| {
                let names: Vec<String> = by
                    .iter()
                    .map(|(id, h)| format!("{:?} (session {id})", h.client))
                    .collect();
                DaemonError::NotHeld {
                    room: room.clone(),
                    by: names.join(", "),
                }
            }),
        };
        let mut released = match released {
            Ok(r) => r,
            Err(e) => return Box::pin(futures::future::ready(Err(e)).into_actor(self)),
        };
        if let Some(reason) = reason {
            released.reason = reason;
        }
        tracing::info!(room = %room, session, all = a.all, left = released.left, holders = released.holders, "leave");
        let result = LeaveResult {
            left: released.left,
            holders: released.holders,
        };
        let gone = released.left.then(|| self.forget_room(&room));
        let bus = self.bus.clone();
        Box::pin(
            async move {
                if let Some(actor) = gone {
                    if let Some(r) = actor {
                        r.send(Leave).await?;
                    }
                    bus.do_send(room_left(&room, released.reason, released.others));
                }
                peerix_ipc_proto::to_value(&result)
                    .map_err(|e| DaemonError::Internal(e.to_string()))
            }
            .into_actor(self),
        )
    }

    /// A session ended: its holds go, and rooms it was the last to hold are left.
    fn release_session(&mut self, session: u64, ctx: &mut Context<Self>) {
        let mut left = Vec::new();
        for (room, m) in &mut self.memberships {
            if let Some(r) = m.holds.release_session(session) {
                tracing::info!(room = %room, session, left = r.left, holders = r.holders, "client disconnected: hold released");
                if r.left {
                    left.push((room.clone(), r));
                }
            }
        }
        for (room, r) in left {
            let actor = self.forget_room(&room);
            let ev = room_left(&room, r.reason, r.others);
            let bus = self.bus.clone();
            ctx.spawn(
                async move {
                    if let Some(a) = actor {
                        let _ = a.send(Leave).await;
                    }
                    bus.do_send(ev);
                }
                .into_actor(self),
            );
        }
    }

    /// Forgets a room that is being left: no more sends reach it, no restart brings it back.
    /// Returns its actor, to be told to leave.
    pub(super) fn forget_room(&mut self, room: &str) -> Option<Addr<RoomActor>> {
        self.routes.remove(room);
        self.memberships.remove(room);
        self.room_restarts.remove(room);
        // A room waiting to be re-joined after a crash has no actor: forgetting it is leaving.
        self.rooms.remove(room).filter(|r| r.connected())
    }
}

/// `room:left` for the room's subscribers and, whatever they subscribed to, the connections
/// that held it and did not cause the leave.
fn room_left(room: &str, reason: LeftReason, others: Vec<(u64, Holder)>) -> EmitAlsoTo {
    let ev = EventRecord::new(
        ROOM_LEFT,
        Some(room),
        vec![
            ("reason", Value::from(reason.as_str())),
            ("holders", Value::from(0u64)),
        ],
    );
    EmitAlsoTo(others.into_iter().map(|(id, h)| (id, h.to)).collect(), ev)
}

impl Handler<SessionGone> for Daemon {
    type Result = ();
    fn handle(&mut self, SessionGone(session): SessionGone, ctx: &mut Self::Context) {
        self.verifier_gone(session);
        self.release_session(session, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_kept_in_session_order_with_room_for_what_they_hold() {
        let mut h = Holds::default();
        for s in [7, 3, 9, 3] {
            h.hold(Some((s, s * 10)), false);
        }
        assert_eq!(h.holders(), 3);
        assert_eq!(h.sessions, vec![(3, 30), (7, 70), (9, 90)]);
        // One slot per hold, not a tree node for eleven.
        assert_eq!(h.sessions.capacity(), 3);
        let Err(NotHeld(others)) = h.release(5, false) else {
            panic!("session 5 held nothing");
        };
        assert_eq!(others, vec![(3, 30), (7, 70), (9, 90)]);
        assert!(h.release_session(7).is_some());
        assert!(h.release_session(7).is_none());
        assert_eq!(h.sessions, vec![(3, 30), (9, 90)]);
    }

    fn holds(sessions: &[u64], persist: bool) -> Holds<()> {
        let mut h = Holds::default();
        for s in sessions {
            h.hold(Some((*s, ())), false);
        }
        h.hold(None, persist);
        h
    }

    #[test]
    fn the_last_release_leaves_and_earlier_ones_do_not() {
        let mut h = holds(&[1, 2], false);
        let r = h.release(1, false).expect("1 holds");
        assert!(!r.left);
        assert_eq!(r.holders, 1);
        let r = h.release(2, false).expect("2 holds");
        assert!(r.left);
        assert_eq!(r.reason, LeftReason::Released);
        assert!(r.others.is_empty());
    }

    #[test]
    fn joining_twice_from_one_connection_is_one_hold() {
        let mut h = holds(&[1, 1], false);
        assert_eq!(h.holders(), 1);
        assert!(h.release(1, false).expect("holds").left);
    }

    #[test]
    fn a_caller_without_a_hold_releases_the_persistent_one() {
        let mut h = holds(&[], true);
        let r = h.release(7, false).expect("persistent hold");
        assert!(r.left);
        let mut h = holds(&[1], true);
        let r = h.release(7, false).expect("persistent hold");
        assert!(!r.left);
        assert!(!h.persist());
        assert_eq!(h.holders(), 1);
    }

    #[test]
    fn a_caller_without_a_hold_of_a_room_others_hold_is_refused() {
        let mut h = holds(&[1, 2], false);
        let NotHeld(by) = h.release(7, false).expect_err("not held");
        assert_eq!(by.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(h.holders(), 2);
    }

    #[test]
    fn leave_all_releases_every_hold_and_names_the_others() {
        let mut h = holds(&[1, 2, 3], true);
        let r = h.release(2, true).expect("all");
        assert!(r.left);
        assert_eq!(r.reason, LeftReason::LeaveAll);
        assert_eq!(
            r.others.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [1, 3]
        );
        assert!(h.is_empty());
    }

    #[test]
    fn a_disconnect_releases_only_that_connection() {
        let mut h = holds(&[1, 2], false);
        assert!(h.release_session(9).is_none());
        assert!(!h.release_session(1).expect("held").left);
        let r = h.release_session(2).expect("held");
        assert!(r.left);
        assert_eq!(r.reason, LeftReason::Disconnected);
        let mut h = holds(&[1], true);
        assert!(!h.release_session(1).expect("held").left);
    }
}
