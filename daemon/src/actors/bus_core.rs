//! The event bus's decisions, without I/O: numbering, the bounded replay buffer, which session
//! takes which event, paused (slow) subscribers and what they missed, and the per-room inbox of
//! messages no subscriber matched. The `EventBus` actor (`event_bus.rs`) carries them out.
//!
//! Invariant: every event a subscriber matched reaches it once, in `seq` order, or it is told
//! exactly which range it will never get (a `lagged` event) before anything after the gap.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use peerix_ipc_proto::EventFilter;

use super::event_bus::EventRecord;
use super::inbox::{Inbox, InboxLimits};

/// Bounds of the replay buffer and of each room's inbox (`[ipc]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusLimits {
    /// Most events kept for replay.
    pub replay_events: usize,
    /// Most bytes (encoded size estimate) kept for replay.
    pub replay_bytes: u64,
    /// Per-room inbox bounds.
    pub inbox: InboxLimits,
}

/// A numbered event kept for replay.
#[derive(Debug, Clone)]
pub struct Numbered {
    /// Its sequence number.
    pub seq: u64,
    /// The event.
    pub event: Arc<EventRecord>,
    /// Its encoded size estimate, against `replay_bytes`.
    pub size: u64,
}

/// A range of events a subscriber will never get (the `lagged` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged {
    /// First missing seq.
    pub from: u64,
    /// Last missing seq (`from > to` when no event of this daemon run is missing, only those
    /// of the run the client's `epoch` named).
    pub to: u64,
    /// How many of them matched the subscriber's filters: exact for a paused subscriber; for a
    /// resume by `since`, the bus does not know what the old connection matched, so it is the
    /// number of seqs in the range (an upper bound).
    pub count: u64,
    /// Why: `"evicted"` (no longer buffered) or `"epoch"` (the client's seqs are from another
    /// daemon run).
    pub reason: &'static str,
}

/// What a subscriber gets to catch up: `lagged` first if anything is missing, then the buffered
/// events it matches, in order.
#[derive(Debug, Clone, Default)]
pub struct CatchUp {
    /// The range it will never get.
    pub lagged: Option<Lagged>,
    /// The buffered events after its position that match its filters (as many as fit).
    pub events: Vec<Numbered>,
    /// Whether more are due: the subscriber is paused at the first of them.
    pub more: bool,
}

/// Why `subscribe` with `since` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinceError {
    /// `since` is after the newest seq.
    #[error(
        "subscribe: since {since} is after the newest event ({newest}) of this daemon run; pass \
         the seq of the last event you received (and the welcome's epoch)"
    )]
    InTheFuture {
        /// What the client asked for.
        since: u64,
        /// The newest seq.
        newest: u64,
    },
}

/// Where an emitted event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout {
    /// Its seq.
    pub seq: u64,
    /// Sessions to deliver it to now (subscribed, matching, not paused).
    pub to: Vec<u64>,
    /// Whether it was kept in its room's inbox (it matched nobody).
    pub kept: bool,
}

#[derive(Debug, Default)]
struct Sub {
    filters: Vec<EventFilter>,
    /// The first seq this session did not take (it fell `ipc.lag_limit` behind).
    paused_at: Option<u64>,
    /// Events with seq >= `paused_at` matching its filters that were evicted unseen.
    missed: u64,
}

impl Sub {
    fn matches(&self, ev: &EventRecord) -> bool {
        self.filters
            .iter()
            .any(|f| f.matches(&ev.name, ev.room.as_deref()))
    }
}

/// The bus state.
#[derive(Debug)]
pub struct BusCore {
    limits: BusLimits,
    seq: u64,
    buffer: VecDeque<Numbered>,
    bytes: u64,
    /// Every seq up to here is no longer (or was never) available for replay.
    evicted_upto: u64,
    subs: BTreeMap<u64, Sub>,
    inboxes: HashMap<Arc<str>, Inbox>,
}

impl BusCore {
    /// An empty bus.
    pub fn new(limits: BusLimits) -> Self {
        Self {
            limits,
            seq: 0,
            buffer: VecDeque::new(),
            bytes: 0,
            evicted_upto: 0,
            subs: BTreeMap::new(),
            inboxes: HashMap::new(),
        }
    }

    /// The newest seq handed out.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// A seq for an event that goes to one session only and is not kept (`verify`,
    /// `daemon:shutdown`).
    pub fn number(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Numbers `ev`, keeps it for replay and says who gets it now. A message (or a transfer's
    /// error) that matches no subscriber at all, paused ones included, goes to its room's inbox.
    pub fn emit(&mut self, ev: Arc<EventRecord>, size: u64) -> Fanout {
        let seq = self.number();
        let mut to = Vec::new();
        let mut matched = false;
        for (id, sub) in &self.subs {
            if sub.matches(&ev) {
                matched = true;
                if sub.paused_at.is_none() {
                    to.push(*id);
                }
            }
        }
        let mut kept = false;
        if !matched && Inbox::keeps(&ev) {
            if let Some(room) = &ev.room {
                self.inboxes
                    .entry(room.clone())
                    .or_insert_with(|| Inbox::new(self.limits.inbox))
                    .push(seq, ev.clone(), size);
                kept = true;
            }
        }
        self.buffer.push_back(Numbered {
            seq,
            event: ev,
            size,
        });
        self.bytes += size;
        self.evict();
        Fanout { seq, to, kept }
    }

    fn evict(&mut self) {
        while self.buffer.len() > self.limits.replay_events || self.bytes > self.limits.replay_bytes
        {
            let Some(old) = self.buffer.pop_front() else {
                break;
            };
            self.bytes -= old.size;
            self.evicted_upto = old.seq;
            for sub in self.subs.values_mut() {
                if sub.paused_at.is_some_and(|at| at <= old.seq) && sub.matches(&old.event) {
                    sub.missed += 1;
                }
            }
        }
    }

    /// Adds a filter to a session's subscription (subscriptions are additive).
    pub fn subscribe(&mut self, session: u64, filter: EventFilter) {
        self.subs.entry(session).or_default().filters.push(filter);
    }

    /// Adds a filter and returns what the session missed after `since` (the seq of the last
    /// event it received, maybe on an earlier connection; `epoch` the run it came from), as one
    /// step: live events after this call follow the returned ones without gap or duplicate.
    pub fn subscribe_since(
        &mut self,
        session: u64,
        filter: EventFilter,
        since: u64,
        epoch_matches: bool,
        max_bytes: u64,
    ) -> Result<CatchUp, SinceError> {
        if epoch_matches && since > self.seq {
            return Err(SinceError::InTheFuture {
                since,
                newest: self.seq,
            });
        }
        self.subscribe(session, filter);
        if !epoch_matches {
            // The client's seqs name another run: all of this run that is still buffered, and
            // a `lagged` saying the rest (and the other run's tail) is gone.
            let mut c = self.catch_up(session, 0, max_bytes);
            c.lagged = Some(Lagged {
                from: 1,
                to: self.evicted_upto,
                count: self.evicted_upto,
                reason: "epoch",
            });
            return Ok(c);
        }
        Ok(self.catch_up(session, since, max_bytes))
    }

    /// Removes a session's subscription.
    pub fn unsubscribe(&mut self, session: u64) {
        self.subs.remove(&session);
    }

    /// The session took events up to `at - 1` and drops the rest until it resumes: stop
    /// sending it live events, and count what is evicted before it catches up.
    pub fn pause(&mut self, session: u64, at: u64) {
        let evicted_upto = self.evicted_upto;
        if let Some(sub) = self.subs.get_mut(&session) {
            if sub.paused_at.is_some() {
                return;
            }
            sub.paused_at = Some(at);
            // Already gone when the pause reached us (a replay buffer smaller than the lag
            // limit): not known whether they matched, counted as if they did.
            sub.missed = evicted_upto.saturating_sub(at.saturating_sub(1));
        }
    }

    /// Whether a session is paused (and from which seq).
    pub fn paused_at(&self, session: u64) -> Option<u64> {
        self.subs.get(&session).and_then(|s| s.paused_at)
    }

    /// A paused session drained its queue: what it missed, as much as fits `max_bytes` (at
    /// least one event), and it is live again unless more is due (`CatchUp::more`). `None` when
    /// it is not paused (or not subscribed).
    pub fn resume(&mut self, session: u64, max_bytes: u64) -> Option<CatchUp> {
        let at = self.subs.get(&session)?.paused_at?;
        Some(self.catch_up(session, at.saturating_sub(1), max_bytes))
    }

    /// Everything after `after` for `session`: `lagged` for what was evicted, then the buffered
    /// events it matches, up to `max_bytes` (at least one). Unpauses it, or pauses it at the
    /// first event that did not fit.
    fn catch_up(&mut self, session: u64, after: u64, max_bytes: u64) -> CatchUp {
        let evicted_upto = self.evicted_upto;
        let Some(sub) = self.subs.get_mut(&session) else {
            return CatchUp::default();
        };
        // A paused session missed from its pause on, whatever `since` says.
        let (after, exact) = match sub.paused_at.take() {
            Some(at) => (after.min(at.saturating_sub(1)), Some(sub.missed)),
            None => (after, None),
        };
        let sub = self.subs.get_mut(&session).expect("looked up above");
        let lagged = (after < evicted_upto).then(|| {
            let (from, to) = (after + 1, evicted_upto);
            Lagged {
                from,
                to,
                count: exact.unwrap_or(to - from + 1),
                reason: "evicted",
            }
        });
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut rest = None;
        for n in self.buffer.iter().filter(|n| n.seq > after) {
            if !sub.matches(&n.event) {
                continue;
            }
            if !events.is_empty() && bytes + n.size > max_bytes {
                rest = Some(n.seq);
                break;
            }
            bytes += n.size;
            events.push(n.clone());
        }
        // What did not fit the client's room comes when it has read these: paused again at the
        // first event left (anything evicted before then is counted as for any pause).
        sub.paused_at = rest;
        sub.missed = 0;
        CatchUp {
            lagged,
            events,
            more: rest.is_some(),
        }
    }

    /// Takes the oldest events of `room`'s inbox, at most `max` and `max_bytes` (at least one
    /// if any), and how many were evicted since the last take; `None` if it has none.
    pub fn take_inbox(
        &mut self,
        room: &str,
        max: usize,
        max_bytes: u64,
    ) -> (Vec<Numbered>, u64, bool) {
        match self.inboxes.get_mut(room) {
            Some(i) => i.take(max, max_bytes),
            None => (Vec::new(), 0, false),
        }
    }

    /// Events kept in each room's inbox.
    pub fn inbox_counts(&self) -> Vec<(String, u64)> {
        self.inboxes
            .iter()
            .map(|(r, i)| (r.to_string(), i.len() as u64))
            .collect()
    }

    /// The room was left: its inbox goes with it.
    pub fn drop_inbox(&mut self, room: &str) {
        self.inboxes.remove(room);
    }

    /// Events and bytes in the replay buffer.
    pub fn buffered(&self) -> (usize, u64) {
        (self.buffer.len(), self.bytes)
    }
}

#[cfg(test)]
#[path = "bus_core_tests.rs"]
mod tests;
