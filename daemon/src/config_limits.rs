//! `[limits]`: the bounds on every queue and table fed by remote peers or local clients.
//!
//! Each key is one row of the "Bounds" table in ARCHITECTURE.md (what fills it, and what
//! happens when it is full). Defaults are sized so that a healthy daemon never reaches them.

use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

/// Bounds on queues and tables that remote peers or local clients can fill.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Events (messages) of one data channel read from SCTP but not yet taken by its channel
    /// actor. When full, the channel's reader stops reading, so the remote's SCTP window
    /// closes: back-pressure, nothing is dropped.
    pub channel_event_queue: usize,
    /// Control-channel messages of one connection read but not yet taken by its peer actor.
    /// When full, the control channel is not read until the actor catches up (back-pressure).
    pub control_event_queue: usize,
    /// Control-channel sends of one connection in flight at once. Beyond it a send is dropped
    /// and reported as an `error` event (`LIMIT_EXCEEDED`).
    pub control_sends_in_flight: usize,
    /// Signaling packets received by a driver but not yet routed by its actor. When full, the
    /// driver stops reading its transport (datagrams are then dropped by the kernel, NATS
    /// reports a slow consumer); signaling is lossy by design and invites are retried.
    pub driver_event_queue: usize,
    /// Frames read from one client's socket but not yet handled by its session. When full,
    /// the session stops reading the socket, so the client's writes block.
    pub session_inbound_queue: usize,
    /// Chunks of streamed sends (`send` with `more`) one client may have unanswered. Beyond it
    /// the chunk is refused with `LIMIT_EXCEEDED` and its transfer aborted.
    pub pending_chunks_per_client: usize,
    /// `subscribe` calls one client may have in effect (they are additive). Beyond it
    /// `subscribe` fails with `LIMIT_EXCEEDED`; `unsubscribe` clears them.
    pub subscriptions_per_client: usize,
    /// Event patterns in one `subscribe` call. Beyond it `subscribe` fails with
    /// `LIMIT_EXCEEDED`.
    pub patterns_per_subscription: usize,
    /// New sender ids whose signaling key (ECDH) a room derives per second, sustained. Packets
    /// from further new ids are dropped and counted (an `error` event `LIMIT_EXCEEDED` once a
    /// second); peers the room already knows are never limited. 0 turns the limit off.
    pub new_senders_per_second: u32,
    /// New sender ids a room accepts in a burst above `new_senders_per_second`.
    pub new_senders_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            channel_event_queue: 64,
            control_event_queue: 64,
            control_sends_in_flight: 256,
            driver_event_queue: 1024,
            session_inbound_queue: 64,
            pending_chunks_per_client: 256,
            subscriptions_per_client: 64,
            patterns_per_subscription: 64,
            new_senders_per_second: 50,
            new_senders_burst: 100,
        }
    }
}

impl LimitsConfig {
    /// Checks that every queue can hold at least one item, naming the key at fault.
    pub fn validate(&self) -> Result<(), DaemonError> {
        let sizes = [
            ("channel_event_queue", self.channel_event_queue),
            ("control_event_queue", self.control_event_queue),
            ("control_sends_in_flight", self.control_sends_in_flight),
            ("driver_event_queue", self.driver_event_queue),
            ("session_inbound_queue", self.session_inbound_queue),
            ("pending_chunks_per_client", self.pending_chunks_per_client),
            ("subscriptions_per_client", self.subscriptions_per_client),
            ("patterns_per_subscription", self.patterns_per_subscription),
        ];
        for (key, v) in sizes {
            if v == 0 {
                return Err(DaemonError::Config(format!(
                    "limits.{key}: must be at least 1 (a queue of 0 would stall everything)"
                )));
            }
        }
        if self.new_senders_per_second > 0 && self.new_senders_burst == 0 {
            return Err(DaemonError::Config(
                "limits.new_senders_burst: must be at least 1 when limits.new_senders_per_second \
                 is set (0 there turns the limit off)"
                    .into(),
            ));
        }
        Ok(())
    }
}
