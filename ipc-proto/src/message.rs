//! Top-level messages exchanged between clients and the daemon.

use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{from_value, to_value};
use crate::error::{ErrorBody, ErrorCode, ProtoError};
use crate::events::EventData;

fn empty_map() -> Value {
    Value::Map(Vec::new())
}

/// A message sent by a client to the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The handshake; must be the first frame of a connection.
    Hello(Hello),
    /// An operation request; answered by exactly one `reply`.
    Request(Request),
}

/// A message sent by the daemon to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DaemonMessage {
    /// The handshake answer.
    Welcome(Welcome),
    /// The answer to a request.
    Reply(Reply),
    /// An event the client subscribed to.
    Event(Event),
    /// Progress of a request (streamed sends with `progress: true`).
    Progress(Progress),
    /// A connection-level error (framing errors, handshake errors).
    Error(ErrorBody),
}

/// `hello`: the client's handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version spoken by the client ([`crate::PROTOCOL_VERSION`]).
    pub version: u32,
    /// Client name and version, e.g. `"peerix-cli/0.1.0"` (optional: absent or nil is `""`).
    #[serde(default, deserialize_with = "nil_as_default")]
    pub client: String,
    /// Optional features supported by the client (absent or nil is empty).
    #[serde(default, deserialize_with = "nil_as_default")]
    pub capabilities: Vec<String>,
}

/// Optional fields: absent and `nil` both mean the default (PROTOCOL.md §2).
fn nil_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `welcome`: the daemon's handshake answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version spoken by the daemon.
    pub version: u32,
    /// Daemon name and version, e.g. `"peerixd/0.1.0"`.
    pub daemon: String,
    /// The daemon's Peerix peer id.
    pub id: String,
    /// Optional features supported by the daemon.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Largest frame payload (bytes) the daemon accepts.
    pub max_frame: u64,
    /// This daemon run (random, never 0): `seq`s of one epoch are comparable; pass it with
    /// `subscribe`'s `since` when resuming.
    #[serde(default)]
    pub epoch: u64,
}

/// `request`: an operation invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Client-chosen id, echoed in the reply (and in progress frames).
    pub id: u64,
    /// The operation name (see [`crate::op_names`]).
    pub op: String,
    /// Operation arguments (a map; absent means empty map).
    #[serde(default = "empty_map")]
    pub args: Value,
}

impl Request {
    /// Creates a request from a typed [`crate::Op`].
    pub fn from_op(id: u64, op: &crate::Op) -> Result<Request, ProtoError> {
        Ok(Request {
            id,
            op: op.name().to_owned(),
            args: op.to_args()?,
        })
    }

    /// Parses the op and its arguments (see [`crate::Op::parse`]).
    pub fn parse_op(&self) -> Result<crate::Op, ProtoError> {
        crate::Op::parse(&self.op, self.args.clone())
    }

    /// Like [`Request::parse_op`], consuming the request: a `send`'s data moves into the op
    /// instead of being copied.
    pub fn into_op(self) -> Result<crate::Op, ProtoError> {
        crate::Op::parse(&self.op, self.args)
    }
}

/// `reply`: the single answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The id of the request being answered.
    pub id: u64,
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result (present when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error (present when not `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    /// A successful reply carrying `result`.
    pub fn ok(id: u64, result: Value) -> Reply {
        Reply {
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A successful reply whose result is serialised from a typed value.
    pub fn ok_with<T: Serialize + ?Sized>(id: u64, result: &T) -> Result<Reply, ProtoError> {
        Ok(Reply::ok(id, to_value(result)?))
    }

    /// A successful reply with an empty map as result.
    pub fn ok_empty(id: u64) -> Reply {
        Reply::ok(id, empty_map())
    }

    /// A failed reply.
    pub fn err(id: u64, code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply {
            id,
            ok: false,
            result: None,
            error: Some(ErrorBody::new(code, message)),
        }
    }

    /// Converts into `Ok(result)` or `Err(error)`. A successful reply without a
    /// result yields `Nil`; a failed reply without an error body yields an
    /// `INTERNAL` error.
    pub fn into_result(self) -> Result<Value, ErrorBody> {
        if self.ok {
            Ok(self.result.unwrap_or(Value::Nil))
        } else {
            Err(self.error.unwrap_or_else(|| {
                ErrorBody::new(ErrorCode::Internal, "request failed without an error body")
            }))
        }
    }
}

/// `event`: an event pushed to subscribed clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Per-daemon sequence number, strictly increasing.
    pub seq: u64,
    /// Event name, e.g. `"channel:message"` (see [`crate::event_names`]).
    pub name: String,
    /// The room the event belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Event data (a map).
    #[serde(default = "empty_map")]
    pub data: Value,
}

impl Event {
    /// Creates an event whose data is serialised from a typed value.
    pub fn new<T: Serialize + ?Sized>(
        seq: u64,
        name: impl Into<String>,
        room: Option<String>,
        data: &T,
    ) -> Result<Event, ProtoError> {
        Ok(Event {
            seq,
            name: name.into(),
            room,
            data: to_value(data)?,
        })
    }

    /// Deserialises the data into a typed value.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, ProtoError> {
        from_value(self.data.clone())
    }

    /// Interprets the data according to the event name.
    pub fn typed(&self) -> Result<EventData, ProtoError> {
        EventData::parse(&self.name, &self.data)
    }
}

/// `progress`: progress of a request, identified by the request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The request id this progress belongs to.
    pub id: u64,
    /// The peer the progress concerns, if it is per peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The channel label.
    pub label: String,
    /// Bytes processed so far.
    pub current: u64,
    /// Total bytes, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Whether this is the last progress frame for this peer/request.
    pub done: bool,
    /// On the last frame (`done`), why the message did not reach this peer (or, without
    /// `peer`, why it went nowhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}
