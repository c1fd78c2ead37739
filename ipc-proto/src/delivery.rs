//! Delivery: resuming a subscription (`subscribe` with `since`), the `lagged` event, and the
//! per-room inbox of messages no subscriber matched (the `inbox` op). PROTOCOL.md, "Delivery".

use rmpv::Value;
use serde::{Deserialize, Serialize};

/// How many events `inbox` returns when `max` is not given.
pub const DEFAULT_INBOX_MAX: u64 = 256;

/// Arguments of `inbox`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxArgs {
    /// Room name.
    pub room: String,
    /// Most events to take (default [`DEFAULT_INBOX_MAX`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

/// One event taken from an inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxEvent {
    /// Its seq (numbered when it arrived).
    pub seq: u64,
    /// `channel:message`, or `channel:error` ending a transfer.
    pub name: String,
    /// The room.
    pub room: String,
    /// The event's data, as a subscriber would have got it.
    pub data: Value,
}

/// Result of `inbox`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxResult {
    /// The oldest kept events, removed from the inbox.
    pub events: Vec<InboxEvent>,
    /// Events evicted (the inbox was full) since the last `inbox` of this room.
    pub dropped: u64,
    /// Whether more events are kept.
    pub more: bool,
}

/// Result of `subscribe` (fields set only with `since`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeResult {
    /// Events replayed before the reply.
    #[serde(default)]
    pub replayed: u64,
    /// Whether nothing was missing (no `lagged` event came first).
    #[serde(default = "yes")]
    pub complete: bool,
}

fn yes() -> bool {
    true
}

/// Data of the `lagged` event: the seq range of events this client will never get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaggedData {
    /// First missing seq.
    pub from: u64,
    /// Last missing seq (`from > to`: none of this daemon run, only of the run the client's
    /// `epoch` named).
    pub to: u64,
    /// How many of them matched the client's subscription (an upper bound after a resume by
    /// `since`, see PROTOCOL.md).
    pub count: u64,
    /// `"evicted"` (no longer in the replay buffer) or `"epoch"` (the client's seqs are of
    /// another daemon run).
    #[serde(default)]
    pub reason: String,
}
