//! The `event` frame as written to clients, borrowing the shared event.

use super::*;
use crate::ipc::client_queue::{OutFrame, SharedBytes};

/// The wire form of an `event` frame, borrowing the shared event instead of cloning its data
/// (a message part can be a megabyte, and every subscriber would copy it). Field order and names
/// are those of `DaemonMessage::Event`; a unit test keeps the two identical.
#[derive(serde::Serialize)]
pub(super) struct EventFrame<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) seq: u64,
    pub(super) name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) room: Option<&'a str>,
    pub(super) data: &'a crate::actors::event_bus::Body,
}

/// The `event` frame of `d` for a client, or a stand-in when it would exceed `max_frame` (a
/// larger frame makes the client drop the connection: a remote peer's JSON message, which is
/// never split, must not cut every local client).
pub(super) fn encode_event(
    d: &crate::actors::event_bus::Deliver,
    max_frame: u64,
) -> Result<OutFrame, peerix_ipc_proto::ProtoError> {
    let frame = EventFrame {
        kind: "event",
        seq: d.seq,
        name: &d.event.name,
        room: d.event.room.as_deref(),
        data: &d.event.data,
    };
    let body = match PartBytes::of(&d.event) {
        Some(part) => {
            let split = encode_split(&frame, part)?;
            if split.len().saturating_sub(4) <= usize::try_from(max_frame).unwrap_or(usize::MAX) {
                return Ok(split);
            }
            split.len().saturating_sub(4)
        }
        None => {
            // Event header and field names are a few hundred bytes; the bulk is message data.
            let hint = d.event.data.bulk_len() + 256;
            let bytes = encode_frame_sized(&frame, u32::MAX as usize, hint)?;
            let body = bytes.len().saturating_sub(4);
            if body <= usize::try_from(max_frame).unwrap_or(usize::MAX) {
                return Ok(bytes.into());
            }
            body
        }
    };
    tracing::warn!(event = %d.event.name, size = body, max_frame, "event larger than ipc.max_frame replaced by an error event");
    let stand_in = oversized_event(d, body, max_frame);
    encode_frame(&EventFrame {
        kind: "event",
        seq: d.seq,
        name: &stand_in.name,
        room: stand_in.room.as_deref(),
        data: &stand_in.data,
    })
    .map(OutFrame::from)
}

/// Message parts from this size on are written from their event record instead of being copied
/// into the frame (below it, one copy costs less than the vectored write's bookkeeping, and
/// small frames can share a write with others).
const SHARE_PARTS_FROM: usize = 16 << 10;

/// The bytes of an event's message part, kept alive by the event record while a frame that
/// points at them waits to be written.
#[derive(Debug)]
struct PartBytes(Arc<crate::actors::event_bus::EventRecord>);

impl PartBytes {
    /// The part of `event` when it is a `channel:message` with a large text or bytes part.
    fn of(event: &Arc<crate::actors::event_bus::EventRecord>) -> Option<Arc<Self>> {
        (part_bytes(&event.data).len() >= SHARE_PARTS_FROM)
            .then(|| Arc::new(Self(Arc::clone(event))))
    }
}

impl SharedBytes for PartBytes {
    fn bytes(&self) -> &[u8] {
        part_bytes(&self.0.data)
    }
}

/// The text or bytes of a `channel:message` part; empty for anything else.
fn part_bytes(body: &crate::actors::event_bus::Body) -> &[u8] {
    match body {
        crate::actors::event_bus::Body::Part(p) => match &p.data {
            Value::Binary(b) => b,
            Value::String(s) => s.as_bytes(),
            _ => &[],
        },
        crate::actors::event_bus::Body::Map(_) => &[],
    }
}

/// `frame` encoded around its part: the bytes before it, the part itself (not copied) and the
/// bytes after it, with the length prefix counting all three.
fn encode_split(
    frame: &EventFrame<'_>,
    part: Arc<PartBytes>,
) -> Result<OutFrame, peerix_ipc_proto::ProtoError> {
    let mut w = SplitWriter {
        part: part.bytes(),
        head: vec![0; 4],
        tail: Vec::new(),
        passed: false,
    };
    peerix_ipc_proto::encode_body_into(frame, &mut w)?;
    let SplitWriter {
        mut head,
        tail,
        passed,
        ..
    } = w;
    if !passed {
        // The serializer wrote the part in pieces, so it is in `head` already: one buffer.
        head.extend_from_slice(&tail);
        return finish_length(head).map(OutFrame::from);
    }
    let body = head.len() - 4 + part.bytes().len() + tail.len();
    let len = u32::try_from(body)
        .map_err(|_| peerix_ipc_proto::ProtoError::Encode("frame too long".into()))?;
    head[..4].copy_from_slice(&len.to_be_bytes());
    Ok(OutFrame::split(head, part, tail))
}

/// Writes the length prefix of a frame built with four placeholder bytes in front.
fn finish_length(mut frame: Vec<u8>) -> Result<Vec<u8>, peerix_ipc_proto::ProtoError> {
    let len = u32::try_from(frame.len() - 4)
        .map_err(|_| peerix_ipc_proto::ProtoError::Encode("frame too long".into()))?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

/// A `Write` that keeps what comes before and after one given slice and skips the slice itself
/// when the serializer writes it whole (recognised by its address and length, so equal bytes
/// elsewhere are never mistaken for it).
struct SplitWriter<'a> {
    part: &'a [u8],
    head: Vec<u8>,
    tail: Vec<u8>,
    passed: bool,
}

impl std::io::Write for SplitWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.passed && std::ptr::eq(buf, self.part) {
            self.passed = true;
        } else if self.passed {
            self.tail.extend_from_slice(buf);
        } else {
            self.head.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a client gets instead of an event whose frame would exceed its `max_frame`: for a
/// `channel:message` (a JSON message, which is never split) a `channel:error` naming the
/// transfer, for anything else an `error` event; both say how large it was.
pub(super) fn oversized_event(
    d: &crate::actors::event_bus::Deliver,
    size: usize,
    max_frame: u64,
) -> crate::actors::event_bus::EventRecord {
    use crate::actors::event_bus::EventRecord;
    let field = |k: &str| d.event.data.get(k);
    let message = format!(
        "{} event of {size} bytes does not fit one frame (ipc.max_frame = {max_frame}); it was \
         dropped for this client (raise ipc.max_frame, or send large JSON as text or bytes, \
         which are delivered in parts)",
        d.event.name
    );
    let error = crate::actors::error_value("LIMIT_EXCEEDED", &message);
    let room = d.event.room.as_deref();
    if d.event.name == "channel:message" {
        let mut fields = Vec::new();
        for k in ["peer", "id", "label", "transfer"] {
            if let Some(v) = field(k) {
                fields.push((k, v));
            }
        }
        fields.push(("error", error));
        EventRecord::new("channel:error", room, fields)
    } else {
        EventRecord::new(
            "error",
            room,
            vec![("event", Value::from(&*d.event.name)), ("error", error)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerix_ipc_proto::Event;

    /// A `channel:message` event of `len` bytes of part.
    fn part_event(len: usize) -> crate::actors::event_bus::Deliver {
        use crate::actors::event_bus::{Body, Deliver, EventRecord, MessagePart};
        let part = MessagePart {
            peer: "peer-a".into(),
            label: "bulk".into(),
            kind: "bytes",
            data: Value::Binary((0..len).map(|i| (i % 251) as u8).collect()),
            info: Value::Nil,
            transfer: 3,
            offset: 65_536,
            total: None,
            last: false,
        };
        Deliver {
            seq: 42,
            event: Arc::new(EventRecord {
                name: "channel:message".into(),
                room: Some("r".into()),
                data: Body::Part(part),
            }),
            direct: false,
        }
    }

    /// A frame's bytes, whichever way it is laid out.
    fn flat(f: &OutFrame) -> Vec<u8> {
        f.slices_from(0).iter().flat_map(|s| s.to_vec()).collect()
    }

    /// A large part is written from its event record: the frame around it holds only the
    /// fields, and its bytes are exactly the event's one-buffer encoding. A small part is one
    /// buffer, as before.
    #[test]
    fn a_large_part_is_not_copied_into_its_frame() {
        for (len, shared) in [
            (100, false),
            (SHARE_PARTS_FROM - 1, false),
            (SHARE_PARTS_FROM, true),
            (80_000, true),
        ] {
            let d = part_event(len);
            let whole = encode_frame(&EventFrame {
                kind: "event",
                seq: d.seq,
                name: &d.event.name,
                room: d.event.room.as_deref(),
                data: &d.event.data,
            })
            .expect("encode");
            let frame = encode_event(&d, u64::MAX).expect("encode");
            assert_eq!(frame.len(), whole.len());
            assert_eq!(flat(&frame), whole, "{len} bytes");
            let copied = frame
                .into_whole()
                .map(|v| v.len())
                .unwrap_or_else(|f| f.slices_from(0)[0].len());
            if shared {
                assert!(
                    copied < 512,
                    "{len} bytes: {copied} in the frame's own buffer"
                );
            } else {
                assert_eq!(copied, whole.len());
            }
        }
    }

    /// A split frame too large for the client's `max_frame` is replaced like any other.
    #[test]
    fn a_large_part_over_max_frame_gets_the_stand_in() {
        let d = part_event(80_000);
        let frame = encode_event(&d, 70_000).expect("encode");
        let bytes = frame.into_whole().expect("the stand-in is one buffer");
        let body = peerix_ipc_proto::decode_daemon(&bytes[4..]).expect("decode");
        assert!(matches!(body, DaemonMessage::Event(e) if e.name == "channel:error"));
    }

    #[test]
    fn borrowed_event_frame_matches_the_protocol_type() {
        let data = Value::Map(vec![
            (Value::from("peer"), Value::from("x")),
            (Value::from("data"), Value::Binary(vec![1, 2, 3])),
        ]);
        for room in [Some("r"), None] {
            let borrowed = encode_frame(&EventFrame {
                kind: "event",
                seq: 7,
                name: "channel:message",
                room,
                data: &crate::actors::event_bus::Body::Map(data.clone()),
            })
            .expect("encode");
            let owned = encode_frame(&DaemonMessage::Event(Event {
                seq: 7,
                name: "channel:message".into(),
                room: room.map(Into::into),
                data: data.clone(),
            }))
            .expect("encode");
            assert_eq!(borrowed, owned);
        }
    }
}
