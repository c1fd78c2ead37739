//! An event's `data`: a MessagePack map built field by field, or a `channel:message` part kept
//! typed.
//!
//! Why the typed part: on a daemon receiving many small messages, `channel:message` is almost
//! every event, and as a map it cost a dozen owned strings (keys included) to build, a walk to
//! encode and a dozen frees when the replay buffer let it go: a third of the receiving daemon's
//! per-message work (BENCHMARKS.md, session 16). Clients see the same bytes either way; a unit
//! test keeps the two encodings identical.

use std::sync::Arc;

use rmpv::Value;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// The payload of an [`EventRecord`](super::event_bus::EventRecord).
#[derive(Debug, Clone)]
pub enum Body {
    /// Any event, as a map with string keys.
    Map(Value),
    /// A `channel:message` part, inline: a record is freed when the replay buffer evicts it,
    /// out of cache, and a box of its own was one more cold free per message.
    Part(MessagePart),
}

/// One `channel:message` event's fields (PROTOCOL.md, events), in their wire order.
#[derive(Debug, Clone)]
pub struct MessagePart {
    /// The remote peer (sent as both `peer` and `id`).
    pub peer: Arc<str>,
    /// Channel label.
    pub label: Arc<str>,
    /// `text`, `json`, `blob` or `bytes`.
    pub kind: &'static str,
    /// The part: a str, a bin, or a whole JSON message as a value.
    pub data: Value,
    /// The sender's `info` (nil when none).
    pub info: Value,
    /// Transfer id.
    pub transfer: u64,
    /// Offset of this part in the message.
    pub offset: u64,
    /// The message's size, when known.
    pub total: Option<u64>,
    /// Whether this is the message's last part.
    pub last: bool,
}

/// The keys of a part's map, in order.
const KEYS: [&str; 10] = [
    "peer", "id", "label", "type", "data", "info", "transfer", "offset", "total", "final",
];

/// Bytes of the keys' names.
fn keys_len() -> usize {
    KEYS.iter().map(|k| k.len()).sum()
}

impl MessagePart {
    /// The fields as values, under [`KEYS`] (copies: for the rare readers of a `Value`).
    fn fields(&self) -> impl Iterator<Item = (&'static str, Value)> {
        let values = [
            Value::from(&*self.peer),
            Value::from(&*self.peer),
            Value::from(&*self.label),
            Value::from(self.kind),
            self.data.clone(),
            self.info.clone(),
            Value::from(self.transfer),
            Value::from(self.offset),
            self.total.map(Value::from).unwrap_or(Value::Nil),
            Value::Boolean(self.last),
        ];
        KEYS.into_iter().zip(values)
    }
}

impl Body {
    /// The data as a map (a copy; for the rare readers that need a `Value`).
    pub fn to_value(&self) -> Value {
        match self {
            Body::Map(v) => v.clone(),
            Body::Part(p) => Value::Map(p.fields().map(|(k, v)| (Value::from(k), v)).collect()),
        }
    }

    /// The value of field `key`, if the data is a map that has it.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Body::Map(Value::Map(m)) => m
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v.clone()),
            Body::Map(_) => None,
            Body::Part(p) => p.fields().find(|(k, _)| *k == key).map(|(_, v)| v),
        }
    }

    /// Bytes of string and binary data, to size a frame buffer once.
    pub fn bulk_len(&self) -> usize {
        match self {
            Body::Map(v) => bulk_len(v),
            Body::Part(p) => {
                keys_len()
                    + 2 * p.peer.len()
                    + p.label.len()
                    + p.kind.len()
                    + bulk_len(&p.data)
                    + bulk_len(&p.info)
            }
        }
    }

    /// The encoded size, estimated from strings and binaries plus a few bytes per other value
    /// (for the replay and inbox byte bounds).
    pub fn size_estimate(&self) -> u64 {
        match self {
            Body::Map(v) => estimate(v),
            // The map's header, ten keys, and its values (as `estimate` would count them).
            Body::Part(p) => {
                let strs = (2 * p.peer.len() + p.label.len() + p.kind.len()) as u64 + 4 * 5;
                let keys = (keys_len() + 5 * KEYS.len()) as u64;
                5 + keys + strs + estimate(&p.data) + estimate(&p.info) + 4 * 9
            }
        }
    }
}

fn bulk_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.as_bytes().len(),
        Value::Binary(b) => b.len(),
        Value::Array(a) => a.iter().map(bulk_len).sum(),
        Value::Map(m) => m.iter().map(|(k, v)| bulk_len(k) + bulk_len(v)).sum(),
        _ => 0,
    }
}

fn estimate(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.as_bytes().len() as u64 + 5,
        Value::Binary(b) => b.len() as u64 + 5,
        Value::Array(a) => 5 + a.iter().map(estimate).sum::<u64>(),
        Value::Map(m) => {
            5 + m
                .iter()
                .map(|(k, v)| estimate(k) + estimate(v))
                .sum::<u64>()
        }
        Value::Ext(_, b) => b.len() as u64 + 6,
        _ => 9,
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Body::Map(v) => v.serialize(s),
            Body::Part(p) => {
                let mut m = s.serialize_map(Some(10))?;
                m.serialize_entry("peer", &*p.peer)?;
                m.serialize_entry("id", &*p.peer)?;
                m.serialize_entry("label", &*p.label)?;
                m.serialize_entry("type", p.kind)?;
                m.serialize_entry("data", &p.data)?;
                m.serialize_entry("info", &p.info)?;
                m.serialize_entry("transfer", &p.transfer)?;
                m.serialize_entry("offset", &p.offset)?;
                m.serialize_entry("total", &p.total)?;
                m.serialize_entry("final", &p.last)?;
                m.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(data: Value, info: Value, total: Option<u64>) -> Body {
        Body::Part(MessagePart {
            peer: "abc".into(),
            label: "chat".into(),
            kind: "bytes",
            data,
            info,
            transfer: 70_000,
            offset: 65_536,
            total,
            last: true,
        })
    }

    fn encode(v: &impl Serialize) -> Vec<u8> {
        peerix_ipc_proto::encode_frame(v).expect("encode")
    }

    #[test]
    fn a_typed_part_encodes_and_reads_like_its_map() {
        let info = Value::Map(vec![("k".into(), Value::from(1))]);
        for b in [
            part(Value::Binary(vec![7; 300]), info.clone(), Some(1 << 40)),
            part(Value::from("héllo"), Value::Nil, None),
            part(
                Value::Array(vec![Value::from(-1), Value::F64(0.5)]),
                info,
                Some(0),
            ),
        ] {
            let map = Body::Map(b.to_value());
            assert_eq!(encode(&b), encode(&map));
            assert_eq!(b.bulk_len(), map.bulk_len());
            assert_eq!(b.size_estimate(), map.size_estimate());
            for k in [
                "peer", "id", "label", "type", "data", "transfer", "total", "final",
            ] {
                assert_eq!(b.get(k), map.get(k), "{k}");
            }
            assert_eq!(b.get("nope"), None);
        }
    }
}
