//! Reassembly of multi-part `channel:message` events.

use std::collections::HashMap;

use peerix_ipc_proto::rmpv::Value;
use peerix_ipc_proto::{event_names, ChannelMessageData, Event, MessageType};

use crate::error::{ClientError, Result};

/// The data of a whole received message.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageData {
    /// A text message.
    Text(String),
    /// A `bytes` or `blob` message.
    Bytes(Vec<u8>),
    /// A json-type message.
    Json(Value),
}

/// A complete message assembled from one or more `channel:message` events.
#[derive(Debug, Clone, PartialEq)]
pub struct AssembledMessage {
    /// Sequence number of the final part's event.
    pub seq: u64,
    /// Room of the message.
    pub room: Option<String>,
    /// Sending peer id.
    pub peer: String,
    /// Channel label.
    pub label: String,
    /// Message type as reported by the daemon.
    pub kind: MessageType,
    /// Sender-provided metadata (from the first part that carried it).
    pub info: Option<Value>,
    /// Sender's transfer id.
    pub transfer: u32,
    /// Number of events the message was delivered in.
    pub parts: usize,
    /// The data.
    pub data: MessageData,
}

#[derive(Debug)]
struct Partial {
    kind: MessageType,
    info: Option<Value>,
    bytes: Vec<u8>,
    parts: usize,
}

type Key = (Option<String>, String, String, u32);

/// Joins multi-part `channel:message` events into whole messages.
///
/// Parts are keyed by room, peer, label and transfer id; offsets must be
/// consecutive. A size limit guards memory use.
#[derive(Debug)]
pub struct MessageAssembler {
    partial: HashMap<Key, Partial>,
    limit: u64,
}

impl Default for MessageAssembler {
    fn default() -> Self {
        MessageAssembler::new()
    }
}

impl MessageAssembler {
    /// Default maximum size of one assembled message (1 GiB).
    pub const DEFAULT_LIMIT: u64 = 1 << 30;

    /// Creates an assembler with [`MessageAssembler::DEFAULT_LIMIT`].
    pub fn new() -> Self {
        Self::with_limit(Self::DEFAULT_LIMIT)
    }

    /// Creates an assembler refusing messages larger than `limit` bytes.
    pub fn with_limit(limit: u64) -> Self {
        MessageAssembler {
            partial: HashMap::new(),
            limit,
        }
    }

    /// Number of messages currently incomplete.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Drops incomplete messages from `peer` (e.g. after `connection:closed`).
    pub fn forget_peer(&mut self, peer: &str) {
        self.partial.retain(|k, _| k.1 != peer);
    }

    /// Feeds an event. Returns `Ok(Some(message))` when a message completes,
    /// `Ok(None)` for non-final parts and for events that are not
    /// `channel:message`. Inconsistent parts (offset gap, type change,
    /// oversize, bad data) yield an error and discard that message.
    ///
    /// The part's bytes are copied once, into the message being assembled;
    /// [`push_owned`](Self::push_owned) saves that copy for a message's first part.
    pub fn push(&mut self, event: &Event) -> Result<Option<AssembledMessage>> {
        if event.name != event_names::CHANNEL_MESSAGE {
            return Ok(None);
        }
        let (msg, data) = part_of(event)?;
        self.feed(event, msg, PartData::Borrowed(data))
    }

    /// [`push`](Self::push) for an event the caller is done with: the first part's bytes
    /// become the message's buffer instead of being copied into one, so a message that
    /// arrives in one part (up to the daemon's `ipc.inline_message_limit`) is not copied at
    /// all.
    pub fn push_owned(&mut self, mut event: Event) -> Result<Option<AssembledMessage>> {
        if event.name != event_names::CHANNEL_MESSAGE {
            return Ok(None);
        }
        let data = match data_entry(&mut event.data) {
            Some(v) => std::mem::replace(v, Value::Nil),
            None => Value::Nil,
        };
        let (msg, _) = part_of(&event)?;
        self.feed(&event, msg, PartData::Owned(data))
    }

    fn feed(
        &mut self,
        event: &Event,
        mut msg: ChannelMessageData,
        data: PartData<'_>,
    ) -> Result<Option<AssembledMessage>> {
        let key: Key = (
            event.room.clone(),
            msg.peer.clone(),
            msg.label.clone(),
            msg.transfer,
        );
        if msg.kind == MessageType::Json {
            self.partial.remove(&key);
            msg.data = data.into_value();
            return Ok(Some(finish(event, msg, MessageData::Json, 1)));
        }
        let fits = matches!(
            (&msg.kind, data.value()),
            (MessageType::Text, Value::String(_))
                | (MessageType::Bytes | MessageType::Blob, Value::Binary(_))
        );
        if !fits {
            self.partial.remove(&key);
            return Err(ClientError::Assemble(format!(
                "{:?} part from {} has data of the wrong type",
                msg.kind, msg.peer
            )));
        }
        let mut p = match self.partial.remove(&key) {
            Some(p) => p,
            None => Partial {
                kind: msg.kind,
                info: None,
                bytes: Vec::new(),
                parts: 0,
            },
        };
        if p.kind != msg.kind {
            return Err(ClientError::Assemble(format!(
                "transfer {} from {} changed type",
                msg.transfer, msg.peer
            )));
        }
        if msg.offset != p.bytes.len() as u64 {
            return Err(ClientError::Assemble(format!(
                "transfer {} from {}: expected offset {}, got {}",
                msg.transfer,
                msg.peer,
                p.bytes.len(),
                msg.offset
            )));
        }
        let part_len = data.bytes().map_or(0, <[u8]>::len);
        if p.bytes.len() as u64 + part_len as u64 > self.limit {
            return Err(ClientError::Assemble(format!(
                "transfer {} from {} exceeds the limit of {} bytes",
                msg.transfer, msg.peer, self.limit
            )));
        }
        if p.parts == 0 {
            // The first part: its own bytes when they are ours to keep, with room for the
            // announced rest, so that a 32 MiB message is not assembled in buffers that
            // double (six of them, 63 MiB of fresh memory, each copied into the next).
            let room = first_capacity(msg.total, self.limit, msg.is_final);
            p.bytes = match data {
                PartData::Owned(v) => match v {
                    Value::Binary(b) => b,
                    Value::String(s) => s.into_bytes(),
                    _ => Vec::new(),
                },
                PartData::Borrowed(v) => {
                    let mut b = Vec::with_capacity(room.max(part_len));
                    b.extend_from_slice(bytes_of(v).unwrap_or_default());
                    b
                }
            };
            if room > p.bytes.len() {
                p.bytes.reserve_exact(room - p.bytes.len());
            }
        } else if let Some(part) = data.bytes() {
            p.bytes.extend_from_slice(part);
        }
        p.parts += 1;
        if p.info.is_none() {
            p.info = msg.info.clone();
        }
        if !msg.is_final {
            self.partial.insert(key, p);
            return Ok(None);
        }
        let data = match p.kind {
            MessageType::Text => match String::from_utf8(p.bytes) {
                Ok(s) => MessageData::Text(s),
                Err(_) => {
                    return Err(ClientError::Assemble(format!(
                        "text transfer {} from {} is not valid UTF-8",
                        msg.transfer, msg.peer
                    )))
                }
            },
            _ => MessageData::Bytes(p.bytes),
        };
        let info = p.info.take();
        let parts = p.parts;
        let mut out = finish(event, msg, |_| data, parts);
        out.info = info;
        Ok(Some(out))
    }
}

/// A part's `data`: borrowed from an event the caller keeps, or taken out of one.
enum PartData<'a> {
    Borrowed(&'a Value),
    Owned(Value),
}

impl PartData<'_> {
    fn value(&self) -> &Value {
        match self {
            PartData::Borrowed(v) => v,
            PartData::Owned(v) => v,
        }
    }

    /// The bytes of a text or bytes part.
    fn bytes(&self) -> Option<&[u8]> {
        bytes_of(self.value())
    }

    fn into_value(self) -> Value {
        match self {
            PartData::Borrowed(v) => v.clone(),
            PartData::Owned(v) => v,
        }
    }
}

/// The bytes of a text or bytes part's `data`.
fn bytes_of(data: &Value) -> Option<&[u8]> {
    match data {
        Value::Binary(b) => Some(b),
        Value::String(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The `data` entry of an event's map.
fn data_entry(data: &mut Value) -> Option<&mut Value> {
    match data {
        Value::Map(entries) => entries
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some("data"))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// A `channel:message` event's fields, with `data` left `Nil` (it is not copied: a part is up
/// to 64 KiB by default), and the `data` itself.
fn part_of(event: &Event) -> Result<(ChannelMessageData, &Value)> {
    static NIL: Value = Value::Nil;
    let Value::Map(entries) = &event.data else {
        return Err(ClientError::Assemble(
            "bad channel:message data: not a map".into(),
        ));
    };
    if let Some(found) = read_part(entries) {
        return Ok(found);
    }
    // Something is missing or of another type: serde says what.
    let mut data = &NIL;
    let rest = entries
        .iter()
        .map(|(k, v)| {
            if k.as_str() == Some("data") {
                data = v;
                (k.clone(), Value::Nil)
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let msg: ChannelMessageData = peerix_ipc_proto::from_value(Value::Map(rest))
        .map_err(|e| ClientError::Assemble(format!("bad channel:message data: {e}")))?;
    Ok((msg, data))
}

/// A part's fields read straight from its map, or `None` when one is missing, repeated or of
/// another type (then [`part_of`] lets serde name the problem).
///
/// Why: copying the map without `data` and converting it with serde (an encode and a decode)
/// was most of what assembling a small message cost a client (BENCHMARKS.md, session 16).
fn read_part(entries: &[(Value, Value)]) -> Option<(ChannelMessageData, &Value)> {
    fn set<T>(slot: &mut Option<T>, v: T) -> Option<()> {
        slot.replace(v).is_none().then_some(())
    }
    let (mut peer, mut id, mut label, mut kind, mut data) = (None, None, None, None, None);
    let (mut info, mut transfer, mut offset, mut total, mut last) = (None, None, None, None, None);
    for (k, v) in entries {
        match k.as_str()? {
            "peer" => set(&mut peer, v.as_str()?)?,
            "id" => set(&mut id, v.as_str()?)?,
            "label" => set(&mut label, v.as_str()?)?,
            "type" => set(
                &mut kind,
                match v.as_str()? {
                    "text" => MessageType::Text,
                    "json" => MessageType::Json,
                    "blob" => MessageType::Blob,
                    "bytes" => MessageType::Bytes,
                    _ => return None,
                },
            )?,
            "data" => set(&mut data, v)?,
            "info" => set(&mut info, (!v.is_nil()).then(|| v.clone()))?,
            "transfer" => set(&mut transfer, u32::try_from(v.as_u64()?).ok()?)?,
            "offset" => set(&mut offset, v.as_u64()?)?,
            "total" => set(
                &mut total,
                if v.is_nil() { None } else { Some(v.as_u64()?) },
            )?,
            "final" => set(&mut last, v.as_bool()?)?,
            _ => {}
        }
    }
    let msg = ChannelMessageData {
        peer: peer?.to_owned(),
        id: id?.to_owned(),
        label: label?.to_owned(),
        kind: kind?,
        data: Value::Nil,
        info: info.flatten(),
        transfer: transfer?,
        offset: offset?,
        total: total.flatten(),
        is_final: last?,
    };
    Some((msg, data?))
}

/// Room for a message whose first part just arrived: its announced `total` when it has more
/// parts, so that it is assembled in one buffer of its size instead of one that doubles (a
/// 32 MiB message went through six buffers, 63 MiB of fresh memory, each copied into the next).
/// Never more than the limit (a larger message is refused at the part that passes it), nor
/// than [`RESERVE_AT_MOST`]: the total is what the remote sender announced.
fn first_capacity(total: Option<u64>, limit: u64, is_final: bool) -> usize {
    match total {
        Some(t) if !is_final => usize::try_from(t.min(limit).min(RESERVE_AT_MOST)).unwrap_or(0),
        _ => 0,
    }
}

/// The most [`first_capacity`] reserves; a larger message grows from there as its parts come.
const RESERVE_AT_MOST: u64 = 64 << 20;

fn finish(
    event: &Event,
    msg: ChannelMessageData,
    data: impl FnOnce(Value) -> MessageData,
    parts: usize,
) -> AssembledMessage {
    AssembledMessage {
        seq: event.seq,
        room: event.room.clone(),
        peer: msg.peer,
        label: msg.label,
        kind: msg.kind,
        info: msg.info,
        transfer: msg.transfer,
        parts,
        data: data(msg.data),
    }
}

#[cfg(test)]
mod read_part_tests {
    use super::*;

    fn map(entries: Vec<(&str, Value)>) -> Vec<(Value, Value)> {
        entries.into_iter().map(|(k, v)| (k.into(), v)).collect()
    }

    /// What serde makes of the same map, `data` aside.
    fn by_serde(entries: &[(Value, Value)]) -> Option<ChannelMessageData> {
        let rest = entries
            .iter()
            .map(|(k, v)| match k.as_str() {
                Some("data") => (k.clone(), Value::Nil),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        peerix_ipc_proto::from_value(Value::Map(rest)).ok()
    }

    #[test]
    fn reading_a_part_directly_agrees_with_serde() {
        let full = || {
            vec![
                ("peer", Value::from("p")),
                ("id", Value::from("p")),
                ("label", Value::from("chat")),
                ("type", Value::from("bytes")),
                ("data", Value::Binary(vec![1, 2])),
                ("info", Value::Map(vec![("k".into(), Value::from(1))])),
                ("transfer", Value::from(9)),
                ("offset", Value::from(65_536)),
                ("total", Value::from(70_000)),
                ("final", Value::Boolean(false)),
                ("extra", Value::from("ignored")),
            ]
        };
        let mut cases = vec![full()];
        for (k, v) in [("info", Value::Nil), ("total", Value::Nil)] {
            let mut m = full();
            m.retain(|(key, _)| *key != k);
            cases.push(m.clone());
            m.push((k, v));
            cases.push(m);
        }
        for entries in cases {
            let entries = map(entries);
            let (msg, data) = read_part(&entries).expect("read directly");
            assert_eq!(Some(msg), by_serde(&entries));
            assert_eq!(data, &Value::Binary(vec![1, 2]));
        }
        // Anything missing, repeated or mistyped is left to serde (which refuses it).
        let mut bad = vec![];
        for k in [
            "peer", "id", "label", "type", "data", "transfer", "offset", "final",
        ] {
            let mut m = full();
            m.retain(|(key, _)| *key != k);
            bad.push(m);
        }
        for (k, v) in [
            ("type", Value::from("video")),
            ("transfer", Value::from(1u64 << 33)),
            ("offset", Value::from(-1)),
            ("final", Value::from(1)),
            ("peer", Value::from(1)),
        ] {
            let mut m = full();
            m.retain(|(key, _)| *key != k);
            m.push((k, v));
            bad.push(m);
        }
        let mut twice = full();
        twice.push(("label", Value::from("other")));
        bad.push(twice);
        for entries in bad {
            let entries = map(entries);
            assert!(read_part(&entries).is_none(), "{entries:?}");
        }
    }
}
