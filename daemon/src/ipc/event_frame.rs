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
    pub(super) data: &'a Value,
}

/// Bytes of string and binary data in an event, to size the frame buffer once.
pub(super) fn bulk_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.as_bytes().len(),
        Value::Binary(b) => b.len(),
        Value::Array(a) => a.iter().map(bulk_len).sum(),
        Value::Map(m) => m.iter().map(|(k, v)| bulk_len(k) + bulk_len(v)).sum(),
        _ => 0,
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
                data: &data,
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
