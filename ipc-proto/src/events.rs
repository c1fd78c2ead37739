//! Event names, typed event data and subscription filters.

use rmpv::Value;
use serde::{Deserialize, Serialize};

use crate::codec::from_value;
use crate::error::{ErrorBody, ProtoError};

/// Names of all events and event groups.
pub mod event_names {
    /// A peer appeared (connection state `new`).
    pub const CONNECTION_NEW: &str = "connection:new";
    /// Connecting to a peer.
    pub const CONNECTION_CONNECTING: &str = "connection:connecting";
    /// Connected to a peer.
    pub const CONNECTION_CONNECTED: &str = "connection:connected";
    /// A peer connection was interrupted.
    pub const CONNECTION_DISCONNECTED: &str = "connection:disconnected";
    /// A peer connection failed.
    pub const CONNECTION_FAILED: &str = "connection:failed";
    /// A peer connection was closed.
    pub const CONNECTION_CLOSED: &str = "connection:closed";
    /// A data channel was created.
    pub const CHANNEL_NEW: &str = "channel:new";
    /// A data channel opened.
    pub const CHANNEL_OPEN: &str = "channel:open";
    /// A data channel closed.
    pub const CHANNEL_CLOSE: &str = "channel:close";
    /// A message (or a part of one) was received.
    pub const CHANNEL_MESSAGE: &str = "channel:message";
    /// A data channel error.
    pub const CHANNEL_ERROR: &str = "channel:error";
    /// A peer started sharing a label with us (its first track arrived).
    pub const STREAM_ADD: &str = "stream:add";
    /// The last track of a peer's label ended.
    pub const STREAM_REMOVE: &str = "stream:remove";
    /// A peer's shared track started.
    pub const TRACK_ADD: &str = "track:add";
    /// A peer's shared track ended.
    pub const TRACK_REMOVE: &str = "track:remove";
    /// A peer receiving one of our shared tracks asked for a keyframe.
    pub const TRACK_KEYFRAME: &str = "track:keyframe";
    /// A reassembled frame of a remote track whose frames a client asked for
    /// (`forward {deliver}`).
    pub const TRACK_FRAME: &str = "track:frame";
    /// A room- or daemon-level error.
    pub const ERROR: &str = "error";
    /// A signaling driver became active.
    pub const DRIVER_ACTIVE: &str = "driver:active";
    /// A signaling driver became inactive.
    pub const DRIVER_INACTIVE: &str = "driver:inactive";
    /// A new peer asks to connect: only the room's verifier receives it, and answers with the
    /// `verify` op.
    pub const VERIFY: &str = "verify";
    /// This client will never get the events of a seq range (it fell behind, or resumed too
    /// late); sent whatever it subscribed to.
    pub const LAGGED: &str = "lagged";
    /// The room was left because its last hold was released: sent to every connection that
    /// held it (except the one whose `leave` caused it), whatever it subscribed to, and to
    /// subscribers of group `room`.
    pub const ROOM_LEFT: &str = "room:left";
    /// Event groups usable in subscriptions.
    pub const GROUPS: [&str; 7] = [
        "connection",
        "channel",
        "stream",
        "track",
        "error",
        "driver",
        "room",
    ];
}

/// Data of `connection:*` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionEventData {
    /// Remote peer id.
    pub peer: String,
    /// New connection state.
    pub state: String,
    /// Remote peer metadata.
    #[serde(default = "crate::codec::nil")]
    pub metadata: Value,
}

/// Data of `channel:new`, `channel:open` and `channel:close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEventData {
    /// Remote peer id.
    pub peer: String,
    /// Same as `peer` (Peerix naming).
    pub id: String,
    /// Channel label.
    pub label: String,
}

/// Type of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// Text; `data` is a str.
    Text,
    /// A structured value; `data` is any value (never split into parts).
    Json,
    /// A blob; `data` is bin.
    Blob,
    /// Bytes; `data` is bin.
    Bytes,
}

/// Data of `channel:message`. A large message arrives as several parts with
/// the same `peer`, `label` and `transfer`, consecutive `offset`s and
/// `final: true` on the last part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelMessageData {
    /// Remote peer id.
    pub peer: String,
    /// Same as `peer`.
    pub id: String,
    /// Channel label.
    pub label: String,
    /// Message type.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// This part's data (str, bin or any value for json).
    pub data: Value,
    /// Sender-provided metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    /// Transfer id (per sender).
    pub transfer: u32,
    /// Byte offset of this part within the message.
    pub offset: u64,
    /// Total message size in bytes, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Whether this is the last part.
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl ChannelMessageData {
    /// The part's bytes for `bytes`/`blob` messages (also the UTF-8 of text).
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.data {
            Value::Binary(b) => Some(b),
            Value::String(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The part's text for `text` messages.
    pub fn text(&self) -> Option<&str> {
        self.data.as_str()
    }
}

/// Data of `channel:error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelErrorData {
    /// Remote peer id.
    pub peer: String,
    /// Same as `peer`.
    pub id: String,
    /// Channel label.
    pub label: String,
    /// The error.
    pub error: ErrorBody,
}

/// Data of the `error` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEventData {
    /// The error.
    pub error: ErrorBody,
    /// The peer concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// Data of `driver:active` / `driver:inactive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverEventData {
    /// Driver name.
    pub driver: String,
}

/// Data of `verify` (Peerix's `verify({id, metadata})`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyEventData {
    /// Names the request in the `verify` op's answer.
    pub request: u64,
    /// Remote peer id.
    pub peer: String,
    /// Same as `peer` (Peerix naming).
    pub id: String,
    /// The metadata the peer's invoke or offer carried.
    #[serde(default = "crate::codec::nil")]
    pub metadata: Value,
}

/// Data of `room:left`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLeftData {
    /// Why: `"released"` (a `leave` released the last hold), `"leave-all"` (a `leave` with
    /// `all`), `"disconnected"` (the last holder's connection closed), `"config"` (reserved:
    /// the room was removed from the configuration).
    pub reason: String,
    /// Connections still holding the room (always 0: the room is gone).
    #[serde(default)]
    pub holders: u64,
}

/// Event data interpreted by event name.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    /// `connection:*`.
    Connection(ConnectionEventData),
    /// `channel:new|open|close`.
    Channel(ChannelEventData),
    /// `channel:message`.
    ChannelMessage(ChannelMessageData),
    /// `channel:error`.
    ChannelError(ChannelErrorData),
    /// `error`.
    Error(ErrorEventData),
    /// `driver:*`.
    Driver(DriverEventData),
    /// `verify`.
    Verify(VerifyEventData),
    /// `room:left`.
    RoomLeft(RoomLeftData),
    /// Any other (reserved or future) event; raw data.
    Other(Value),
}

impl EventData {
    /// Interprets `data` according to `name`.
    pub fn parse(name: &str, data: &Value) -> Result<EventData, ProtoError> {
        use event_names::*;
        let d = data.clone();
        Ok(match name {
            CHANNEL_MESSAGE => EventData::ChannelMessage(from_value(d)?),
            CHANNEL_ERROR => EventData::ChannelError(from_value(d)?),
            CHANNEL_NEW | CHANNEL_OPEN | CHANNEL_CLOSE => EventData::Channel(from_value(d)?),
            ERROR => EventData::Error(from_value(d)?),
            VERIFY => EventData::Verify(from_value(d)?),
            ROOM_LEFT => EventData::RoomLeft(from_value(d)?),
            n if n.starts_with("connection:") => EventData::Connection(from_value(d)?),
            n if n.starts_with("driver:") => EventData::Driver(from_value(d)?),
            _ => EventData::Other(d),
        })
    }
}

/// One subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventPattern {
    /// `"*"`: every event.
    All,
    /// A group such as `"connection"` (also written `"connection:*"`):
    /// the event named exactly so and every `group:...` event.
    Group(String),
    /// An exact event name such as `"channel:message"`.
    Name(String),
}

impl EventPattern {
    /// Parses a pattern. Names consist of `a-z`, `0-9`, `_`, `-` and at most one `:`.
    pub fn parse(s: &str) -> Result<EventPattern, ProtoError> {
        let s = s.trim();
        if s == "*" {
            return Ok(EventPattern::All);
        }
        let valid_part = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        };
        match s.split_once(':') {
            None if valid_part(s) => Ok(EventPattern::Group(s.to_owned())),
            Some((g, "*")) if valid_part(g) => Ok(EventPattern::Group(g.to_owned())),
            Some((g, n)) if valid_part(g) && valid_part(n) => Ok(EventPattern::Name(s.to_owned())),
            _ => Err(ProtoError::BadRequest(format!(
                "invalid event pattern `{s}` (expected `*`, a group like `connection` or a name like `channel:message`)"
            ))),
        }
    }

    /// Whether an event name matches this pattern.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            EventPattern::All => true,
            EventPattern::Name(n) => n == name,
            EventPattern::Group(g) => {
                name == g
                    || (name.len() > g.len()
                        && name.starts_with(g.as_str())
                        && name.as_bytes()[g.len()] == b':')
            }
        }
    }
}

/// A subscription: a set of patterns and an optional room restriction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// Patterns (an event matches if any pattern matches).
    pub patterns: Vec<EventPattern>,
    /// If set, only events of this room (plus events without a room) match.
    pub room: Option<String>,
}

impl EventFilter {
    /// A filter matching every event.
    pub fn all() -> EventFilter {
        EventFilter {
            patterns: vec![EventPattern::All],
            room: None,
        }
    }

    /// Parses a list of patterns (must not be empty).
    pub fn parse<S: AsRef<str>>(
        events: &[S],
        room: Option<String>,
    ) -> Result<EventFilter, ProtoError> {
        if events.is_empty() {
            return Err(ProtoError::BadRequest(
                "at least one event pattern is required".into(),
            ));
        }
        let patterns = events
            .iter()
            .map(|e| EventPattern::parse(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EventFilter { patterns, room })
    }

    /// Whether an event with this name and room matches. Events without a
    /// room (daemon-level events) pass any room restriction.
    pub fn matches(&self, name: &str, room: Option<&str>) -> bool {
        let room_ok = match (&self.room, room) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        room_ok && self.patterns.iter().any(|p| p.matches(name))
    }
}
