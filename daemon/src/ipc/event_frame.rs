//! The `event` frame as written to clients, borrowing the shared event.

use super::*;

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
) -> Result<Vec<u8>, peerix_ipc_proto::ProtoError> {
    let frame = EventFrame {
        kind: "event",
        seq: d.seq,
        name: &d.event.name,
        room: d.event.room.as_deref(),
        data: &d.event.data,
    };
    // Event header and field names are a few hundred bytes; the bulk is message data.
    let hint = d.event.data.bulk_len() + 256;
    let bytes = encode_frame_sized(&frame, u32::MAX as usize, hint)?;
    let body = bytes.len().saturating_sub(4);
    if body <= usize::try_from(max_frame).unwrap_or(usize::MAX) {
        return Ok(bytes);
    }
    tracing::warn!(event = %d.event.name, size = body, max_frame, "event larger than ipc.max_frame replaced by an error event");
    let stand_in = oversized_event(d, body, max_frame);
    encode_frame(&EventFrame {
        kind: "event",
        seq: d.seq,
        name: &stand_in.name,
        room: stand_in.room.as_deref(),
        data: &stand_in.data,
    })
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
