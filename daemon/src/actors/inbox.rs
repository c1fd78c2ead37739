//! One room's inbox: messages that arrived while no client subscribed to them, kept (bounded)
//! until a client takes them with the `inbox` op. No I/O; part of the bus's decisions.

use std::collections::VecDeque;
use std::sync::Arc;

use super::bus_core::Numbered;
use super::event_bus::EventRecord;

/// Bounds of one room's inbox (`ipc.inbox_events`, `ipc.inbox_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    /// Most events kept.
    pub events: usize,
    /// Most bytes (encoded size estimate) kept.
    pub bytes: u64,
}

/// The kept events of one room, oldest first.
#[derive(Debug)]
pub struct Inbox {
    limits: InboxLimits,
    kept: VecDeque<Numbered>,
    bytes: u64,
    /// Evicted since the last take.
    dropped: u64,
}

impl Inbox {
    /// An empty inbox.
    pub fn new(limits: InboxLimits) -> Self {
        Self {
            limits,
            kept: VecDeque::new(),
            bytes: 0,
            dropped: 0,
        }
    }

    /// Whether an event that matched nobody is kept: a message (or part of one), or the error
    /// that ends a transfer, which the reader of its parts needs.
    pub fn keeps(ev: &EventRecord) -> bool {
        match &*ev.name {
            "channel:message" => true,
            "channel:error" => ev.data.get("transfer").is_some(),
            _ => false,
        }
    }

    /// Keeps an event, evicting the oldest ones (counted) beyond the bounds.
    pub fn push(&mut self, seq: u64, event: Arc<EventRecord>, size: u64) {
        self.kept.push_back(Numbered { seq, event, size });
        self.bytes += size;
        while self.kept.len() > self.limits.events || self.bytes > self.limits.bytes {
            let Some(old) = self.kept.pop_front() else {
                break;
            };
            self.bytes -= old.size;
            self.dropped += 1;
        }
    }

    /// Events kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Removes and returns the oldest events, at most `max` of them and `max_bytes` together
    /// (but at least one, so that a large event does not block the inbox), the count of
    /// events evicted since the last take (then reset), and whether more are kept.
    pub fn take(&mut self, max: usize, max_bytes: u64) -> (Vec<Numbered>, u64, bool) {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < max {
            let Some(next) = self.kept.front() else {
                break;
            };
            if !out.is_empty() && bytes + next.size > max_bytes {
                break;
            }
            bytes += next.size;
            self.bytes -= next.size;
            out.extend(self.kept.pop_front());
        }
        (
            out,
            std::mem::take(&mut self.dropped),
            !self.kept.is_empty(),
        )
    }
}
