//! The supervision tree. `Daemon` owns the drivers and rooms; a room owns its peers; a peer owns its
//! data channels. IPC sessions live beside it under the `IpcListener`. Outgoing messages take a
//! shorter way, from the session straight to a per-label lane (`send_path`, `outgoing`).

pub mod backoff;
pub mod bus_core;
pub mod channel;
pub mod daemon;
pub mod driver;
mod driver_status;
pub mod event_body;
pub mod event_bus;
pub mod holds;
pub mod inbox;
mod operator;
pub mod options;
pub mod outcome;
pub mod outgoing;
pub mod peer;
mod peer_events;
pub mod peer_ice;
pub mod peer_media;
pub mod reconfigure;
pub mod room;
mod room_commands;
pub mod room_media;
pub mod room_shares;
mod room_signal;
pub mod send_path;
#[cfg(unix)]
pub mod service;
#[cfg(feature = "fault-injection")]
mod signal_faults;
pub mod supervision;
pub mod verifier;

use rmpv::Value;

pub(crate) use driver::tokio_stream_shim::BoundedStream;

/// `{code, message}` as used in `error` and `channel:error` events.
pub fn error_value(code: &str, message: &str) -> Value {
    event_bus::obj(vec![
        ("code", Value::from(code)),
        ("message", Value::from(message)),
    ])
}

/// Converts a JSON value into MessagePack (for metadata and JSON messages).
pub fn json_to_msgpack(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(json_to_msgpack).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::from(k.as_str()), json_to_msgpack(v)))
                .collect(),
        ),
    }
}

/// Converts MessagePack into JSON (for JSON messages sent by clients). Binary becomes an array of
/// numbers, as JavaScript's JSON.stringify would render a typed array's values.
pub fn msgpack_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => i
            .as_i64()
            .map(J::from)
            .or_else(|| i.as_u64().map(J::from))
            .unwrap_or(J::Null),
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f))
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::F64(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::String(s) => J::String(
            s.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(s.as_bytes()).into_owned()),
        ),
        Value::Binary(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
        Value::Array(a) => J::Array(a.iter().map(msgpack_to_json).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => s.as_str().unwrap_or_default().to_owned(),
                        other => other.to_string(),
                    };
                    (key, msgpack_to_json(v))
                })
                .collect(),
        ),
        Value::Ext(_, _) => J::Null,
    }
}
