//! The control data-channel envelope (§6.2): field 1 event number, field 2
//! UTF-8 JSON payload.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::proto::{self, DecodeError, Reader};

/// Event number of a signal message.
pub const EVENT_SIGNAL: u32 = 1;
/// Event number of a channel request.
pub const EVENT_CHANNEL: u32 = 2;
/// Event number of peerixd's hello, an extension: Peerix ignores events it does not know when
/// their payload is JSON (§6.2), so browsers never see it; two peerixd peers learn from it that
/// the other side is a daemon (and detect its death faster than Peerix's timers allow).
pub const EVENT_PEERIXD_HELLO: u32 = 1000;

/// Failures decoding a control message. Per §6.2 JS ignores envelope errors
/// and unknown events silently and reports JSON errors as `SIGNALING_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    /// The envelope could not be decoded (ignore silently).
    #[error("invalid control envelope: {0}")]
    Envelope(#[from] DecodeError),
    /// An event number other than 1 or 2 (ignore silently).
    #[error("unknown control event {0}")]
    UnknownEvent(u32),
    /// The payload is not valid JSON of the expected shape (`SIGNALING_ERROR`).
    #[error("invalid control message JSON: {0}")]
    Json(String),
}

impl ControlError {
    /// Whether JS Peerix would silently ignore this (no error event).
    pub fn is_silent(&self) -> bool {
        !matches!(self, ControlError::Json(_))
    }
}

/// Options of a requested user data channel (§6.4). Unknown members are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelOptions {
    /// Channel label.
    #[serde(default)]
    pub label: String,
    /// Sub-protocol (non-empty disables Peerix framing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Ordered delivery (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered: Option<bool>,
    /// Partial reliability: lifetime in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packet_life_time: Option<u32>,
    /// Partial reliability: retransmit count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retransmits: Option<u32>,
}

/// A decoded control-channel message.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlMessage {
    /// Event 1: `[description, labels]`, `[description]` or `[candidate]`.
    Signal(Vec<Value>),
    /// Event 2: request to create a channel.
    ChannelRequest(ChannelOptions),
    /// Event 1000 (peerixd extension): the sender is a peerixd; the payload is a JSON object
    /// (`{"peerixd": version}`), ignored by Peerix.
    PeerixdHello(Value),
}

/// Encodes an envelope from an event number and raw JSON bytes.
pub fn encode_raw(event: u32, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 8);
    proto::put_uint32(1, event, &mut out);
    proto::put_bytes(2, json, &mut out);
    out
}

/// Decodes an envelope into `(event, payload bytes)`; both fields required.
pub fn decode_raw(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    let mut reader = Reader::new(bytes);
    let mut event = None;
    let mut payload = None;
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => event = Some(field.as_u32()?),
            2 => payload = Some(field.as_bytes()?),
            _ => {}
        }
    }
    Ok((
        event.ok_or(DecodeError::MissingField(1))?,
        payload.ok_or(DecodeError::MissingField(2))?,
    ))
}

impl ControlMessage {
    /// Encodes as `08 <event> 12 <len> <compact JSON>`.
    pub fn encode(&self) -> Vec<u8> {
        let (event, json) = match self {
            ControlMessage::Signal(values) => (EVENT_SIGNAL, serde_json::to_vec(values)),
            ControlMessage::ChannelRequest(options) => (EVENT_CHANNEL, serde_json::to_vec(options)),
            ControlMessage::PeerixdHello(v) => (EVENT_PEERIXD_HELLO, serde_json::to_vec(v)),
        };
        // Serializing Values and plain structs cannot fail.
        encode_raw(event, &json.unwrap_or_default())
    }

    /// Decodes a control message (binary channel messages only).
    pub fn decode(bytes: &[u8]) -> Result<Self, ControlError> {
        let (event, payload) = decode_raw(bytes)?;
        match event {
            EVENT_SIGNAL => {
                let text = String::from_utf8_lossy(payload);
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Array(items)) => Ok(ControlMessage::Signal(items)),
                    Ok(_) => Err(ControlError::Json("signal payload is not an array".into())),
                    Err(e) => Err(ControlError::Json(e.to_string())),
                }
            }
            EVENT_CHANNEL => {
                let text = String::from_utf8_lossy(payload);
                match serde_json::from_str::<Value>(&text) {
                    Ok(value @ Value::Object(_)) => serde_json::from_value::<ChannelOptions>(value)
                        .map(ControlMessage::ChannelRequest)
                        .map_err(|e| ControlError::Json(e.to_string())),
                    Ok(_) => Err(ControlError::Json(
                        "channel request is not an object".into(),
                    )),
                    Err(e) => Err(ControlError::Json(e.to_string())),
                }
            }
            EVENT_PEERIXD_HELLO => match serde_json::from_slice::<Value>(payload) {
                Ok(v) => Ok(ControlMessage::PeerixdHello(v)),
                Err(e) => Err(ControlError::Json(e.to_string())),
            },
            other => Err(ControlError::UnknownEvent(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn peerixd_hello_round_trips_and_is_json() {
        let m = ControlMessage::PeerixdHello(json!({"peerixd": 1}));
        let bytes = m.encode();
        assert_eq!(ControlMessage::decode(&bytes), Ok(m));
        // What Peerix does with it: decode the envelope and parse the payload as JSON (§6.2),
        // then ignore the unknown event; both must succeed or a browser reports an error.
        let (event, payload) = decode_raw(&bytes).expect("envelope");
        assert_eq!(event, EVENT_PEERIXD_HELLO);
        assert!(serde_json::from_slice::<Value>(payload).is_ok());
    }

    #[test]
    fn vectors() {
        let answer = hex::decode(
            "080112235b7b2274797065223a22616e73776572222c22736470223a22763d305c725c6e227d5d",
        )
        .unwrap();
        assert_eq!(
            ControlMessage::decode(&answer).unwrap(),
            ControlMessage::Signal(vec![json!({"type": "answer", "sdp": "v=0\r\n"})])
        );
        assert_eq!(
            encode_raw(1, br#"[{"type":"answer","sdp":"v=0\r\n"}]"#),
            answer
        );
        let chat = hex::decode("080212107b226c6162656c223a2263686174227d").unwrap();
        let req = ControlMessage::ChannelRequest(ChannelOptions {
            label: "chat".into(),
            ..Default::default()
        });
        assert_eq!(ControlMessage::decode(&chat).unwrap(), req);
        assert_eq!(req.encode(), chat);
    }

    #[test]
    fn channel_options_members() {
        let m = ControlMessage::decode(&encode_raw(
            2,
            br#"{"ordered":false,"maxRetransmits":0,"label":"telemetry","foo":[1]}"#,
        ))
        .unwrap();
        assert_eq!(
            m,
            ControlMessage::ChannelRequest(ChannelOptions {
                label: "telemetry".into(),
                ordered: Some(false),
                max_retransmits: Some(0),
                ..Default::default()
            })
        );
        let o = ChannelOptions {
            label: "x".into(),
            protocol: Some("p".into()),
            ordered: Some(true),
            max_packet_life_time: Some(5),
            max_retransmits: None,
        };
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"label":"x","protocol":"p","ordered":true,"maxPacketLifeTime":5}"#
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(
            ControlMessage::decode(&encode_raw(3, b"[]")),
            Err(ControlError::UnknownEvent(3))
        ));
        assert!(ControlMessage::decode(&encode_raw(3, b"[]"))
            .unwrap_err()
            .is_silent());
        assert!(matches!(
            ControlMessage::decode(&encode_raw(1, b"{}")),
            Err(ControlError::Json(_))
        ));
        assert!(matches!(
            ControlMessage::decode(&encode_raw(1, b"[")),
            Err(ControlError::Json(_))
        ));
        assert!(matches!(
            ControlMessage::decode(&encode_raw(2, b"[]")),
            Err(ControlError::Json(_))
        ));
        assert!(matches!(
            ControlMessage::decode(&[0x08, 0x01]),
            Err(ControlError::Envelope(DecodeError::MissingField(2)))
        ));
        assert!(matches!(
            ControlMessage::decode(&[0x12, 0x00]),
            Err(ControlError::Envelope(DecodeError::MissingField(1)))
        ));
        assert!(ControlMessage::decode(&[0x08, 0x01, 0x12, 0x05, b'[']).is_err());
    }

    proptest! {
        #[test]
        fn signal_roundtrip(items in proptest::collection::vec(any::<i32>(), 0..10), label in "[a-z]{0,10}") {
            let m = ControlMessage::Signal(items.iter().map(|i| json!(i)).collect());
            prop_assert_eq!(ControlMessage::decode(&m.encode()).unwrap(), m);
            let r = ControlMessage::ChannelRequest(ChannelOptions { label, ..Default::default() });
            prop_assert_eq!(ControlMessage::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ControlMessage::decode(&bytes);
        }
    }
}
