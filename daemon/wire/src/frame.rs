//! User data-channel frames (§7.3). Every field except `id` has explicit
//! presence (`Option`); encoding emits present fields in ascending order,
//! which reproduces Peerix's byte layouts exactly.

use crate::proto::{self, DecodeError, Reader};

/// One data-channel frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// Field 1: transfer id (1..=65535); always emitted, 0 when absent on input.
    pub id: u32,
    /// Field 2: frame travels from receiver back to sender (ack/abort).
    pub ask: Option<bool>,
    /// Field 3: chunk index (present as 0 on first chunks).
    pub index: Option<u32>,
    /// Field 4: payload type code, first chunk only (the spec's `type`).
    pub payload_type: Option<u32>,
    /// Field 5: transfer aborted.
    pub abort: Option<bool>,
    /// Field 6: last chunk (data) / delivery confirmed (ask).
    pub done: Option<bool>,
    /// Field 7: info JSON bytes, first chunk only.
    pub info: Option<Vec<u8>>,
    /// Field 8: chunk bytes.
    pub chunk: Option<Vec<u8>>,
}

impl Frame {
    /// First data frame: `08 id 18 00 20 type 30 done [3a info] 42 chunk`.
    pub fn data_first(
        id: u32,
        payload_type: u32,
        info: Option<&[u8]>,
        chunk: &[u8],
        done: bool,
    ) -> Self {
        Self {
            id,
            index: Some(0),
            payload_type: Some(payload_type),
            done: Some(done),
            info: info.map(<[u8]>::to_vec),
            chunk: Some(chunk.to_vec()),
            ..Self::default()
        }
    }

    /// Later data frame: `08 id 18 index 30 done 42 chunk`.
    pub fn data(id: u32, index: u32, chunk: &[u8], done: bool) -> Self {
        Self {
            id,
            index: Some(index),
            done: Some(done),
            chunk: Some(chunk.to_vec()),
            ..Self::default()
        }
    }

    /// Acknowledgement: `08 id 10 01 30 01`.
    pub fn ack(id: u32) -> Self {
        Self {
            id,
            ask: Some(true),
            done: Some(true),
            ..Self::default()
        }
    }

    /// Receiver-side abort (what Peerix sends for every abort): `08 id 10 01 28 01`.
    pub fn ask_abort(id: u32) -> Self {
        Self {
            id,
            ask: Some(true),
            abort: Some(true),
            ..Self::default()
        }
    }

    /// Sender-side abort understood by Peerix receivers: `08 id 28 01`.
    pub fn sender_abort(id: u32) -> Self {
        Self {
            id,
            abort: Some(true),
            ..Self::default()
        }
    }

    /// True when `ask` is set.
    pub fn is_ask(&self) -> bool {
        self.ask == Some(true)
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        let extra =
            self.info.as_ref().map_or(0, Vec::len) + self.chunk.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(extra + 24);
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        proto::put_uint32(1, self.id, out);
        if let Some(v) = self.ask {
            proto::put_bool(2, v, out);
        }
        if let Some(v) = self.index {
            proto::put_uint32(3, v, out);
        }
        if let Some(v) = self.payload_type {
            proto::put_uint32(4, v, out);
        }
        if let Some(v) = self.abort {
            proto::put_bool(5, v, out);
        }
        if let Some(v) = self.done {
            proto::put_bool(6, v, out);
        }
        if let Some(v) = &self.info {
            proto::put_bytes(7, v, out);
        }
        if let Some(v) = &self.chunk {
            proto::put_bytes(8, v, out);
        }
    }

    /// Decodes a frame (unknown fields skipped, last duplicate wins).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        FrameRef::decode(bytes).map(FrameRef::to_owned)
    }
}

/// A decoded [`Frame`] whose `info` and `chunk` still point into the received bytes.
///
/// Why: a message's frames after its first are appended to its buffer, so copying their chunk
/// out first only to append it was one copy of every such byte more (BENCHMARKS.md, session 23).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// Field 1: transfer id (0 when absent).
    pub id: u32,
    /// Field 2: frame travels from receiver back to sender (ack/abort).
    pub ask: Option<bool>,
    /// Field 3: chunk index.
    pub index: Option<u32>,
    /// Field 4: payload type code.
    pub payload_type: Option<u32>,
    /// Field 5: transfer aborted.
    pub abort: Option<bool>,
    /// Field 6: last chunk (data) / delivery confirmed (ask).
    pub done: Option<bool>,
    /// Field 7: info JSON bytes.
    pub info: Option<&'a [u8]>,
    /// Field 8: chunk bytes.
    pub chunk: Option<&'a [u8]>,
}

impl<'a> FrameRef<'a> {
    /// Decodes a frame like [`Frame::decode`], borrowing `info` and `chunk` from `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let mut f = FrameRef::default();
        while let Some(field) = reader.next_field()? {
            match field.number {
                1 => f.id = field.as_u32()?,
                2 => f.ask = Some(field.as_bool()?),
                3 => f.index = Some(field.as_u32()?),
                4 => f.payload_type = Some(field.as_u32()?),
                5 => f.abort = Some(field.as_bool()?),
                6 => f.done = Some(field.as_bool()?),
                7 => f.info = Some(field.as_bytes()?),
                8 => f.chunk = Some(field.as_bytes()?),
                _ => {}
            }
        }
        Ok(f)
    }

    /// The frame with its own copies of `info` and `chunk`.
    pub fn to_owned(self) -> Frame {
        Frame {
            id: self.id,
            ask: self.ask,
            index: self.index,
            payload_type: self.payload_type,
            abort: self.abort,
            done: self.done,
            info: self.info.map(<[u8]>::to_vec),
            chunk: self.chunk.map(<[u8]>::to_vec),
        }
    }
}

/// The transfer id of a frame that may not decode as a whole (e.g. a chunk whose length
/// prefix claims more bytes than the message holds): `Some` when the frame starts with a
/// well-formed field 1, as every frame Peerix sends does (§7.3).
pub fn peek_id(bytes: &[u8]) -> Option<u32> {
    let mut reader = Reader::new(bytes);
    match reader.next_field() {
        Ok(Some(field)) if field.number == 1 => field.as_u32().ok(),
        _ => None,
    }
}

/// Encodes a data frame directly from borrowed parts (no intermediate
/// [`Frame`]); identical to `Frame::data_first`/`Frame::data` + `encode`.
/// `payload_type` and `info` are only emitted when `Some`.
pub fn encode_data(
    id: u32,
    index: u32,
    payload_type: Option<u32>,
    info: Option<&[u8]>,
    chunk: &[u8],
    done: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + info.map_or(0, <[u8]>::len) + 24);
    proto::put_uint32(1, id, &mut out);
    proto::put_uint32(3, index, &mut out);
    if let Some(t) = payload_type {
        proto::put_uint32(4, t, &mut out);
    }
    proto::put_bool(6, done, &mut out);
    if let Some(i) = info {
        proto::put_bytes(7, i, &mut out);
    }
    proto::put_bytes(8, chunk, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn vectors() {
        let hello = Frame::data_first(1, 1, None, b"Hello", true);
        assert_eq!(
            hello.encode(),
            h("08 01 18 00 20 01 30 01 42 05 48656c6c6f")
        );
        assert_eq!(Frame::decode(&hello.encode()).unwrap(), hello);
        assert_eq!(Frame::ack(1).encode(), h("08 01 10 01 30 01"));
        let json = Frame::data_first(2, 2, Some(br#"{"name":"x"}"#), br#"{"a":1}"#, true);
        assert_eq!(
            json.encode(),
            h("08 02 18 00 20 02 30 01 3a 0c 7b226e616d65223a2278227d 42 07 7b2261223a317d")
        );
        assert_eq!(Frame::ask_abort(5).encode(), h("08 05 10 01 28 01"));
        assert_eq!(Frame::sender_abort(3).encode(), h("08 03 28 01"));
        let empty = Frame::decode(&h("08 06 18 00 20 01 30 01")).unwrap();
        assert_eq!(
            empty,
            Frame {
                id: 6,
                index: Some(0),
                payload_type: Some(1),
                done: Some(true),
                ..Frame::default()
            }
        );
        assert_eq!(
            Frame::data(3, 1, &[], false).encode(),
            h("08 03 18 01 30 00 42 00")
        );
        assert_eq!(
            encode_data(2, 0, Some(2), Some(br#"{"name":"x"}"#), br#"{"a":1}"#, true),
            json.encode()
        );
        assert_eq!(
            encode_data(3, 1, None, None, &[], false),
            Frame::data(3, 1, &[], false).encode()
        );
    }

    #[test]
    fn negative() {
        assert_eq!(
            Frame::decode(&h("08 01 10 02")),
            Err(DecodeError::InvalidBool { field: 2, value: 2 })
        );
        assert!(matches!(
            Frame::decode(&h("08 01 42 01")),
            Err(DecodeError::Truncated)
        ));
        assert!(matches!(
            Frame::decode(&h("0a 00")),
            Err(DecodeError::WrongWireType { field: 1, .. })
        ));
        assert_eq!(Frame::decode(&h("00 01")), Err(DecodeError::FieldZero));
        assert_eq!(
            Frame::decode(&h("08 80 80 80 80 80 01")),
            Err(DecodeError::VarintOverflow)
        );
        assert_eq!(Frame::decode(&h("08 01 08 02")).unwrap().id, 2);
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            any::<u32>(),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        )
            .prop_map(
                |(id, ask, index, payload_type, abort, done, info, chunk)| Frame {
                    id,
                    ask,
                    index,
                    payload_type,
                    abort,
                    done,
                    info,
                    chunk,
                },
            )
    }

    proptest! {
        #[test]
        fn roundtrip(f in arb_frame()) {
            prop_assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Frame::decode(&bytes);
        }
    }
}
