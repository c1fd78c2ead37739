//! Signaling packets: the envelope of §4.2, the payload pipeline of
//! §4.3–§4.5 ([`SignalingCodec`]) and typed helpers for the JSON shapes (§4.6).

mod codec;
pub mod crypto;
mod messages;

pub use codec::{CodecOptions, Opened, Signal, SignalingCodec, SignalingError};
pub use messages::{ufrag_of_sdp, IceCandidateInit, SessionDescription};

use crate::proto::{self, DecodeError, Reader};

/// Flag bit 0: the payload is zlib-compressed.
pub const FLAG_COMPRESSED: u32 = 0x01;
/// Flag bit 1: the payload is AES-GCM encrypted.
pub const FLAG_ENCRYPTED: u32 = 0x02;

/// Signaling message types (§4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum SignalType {
    /// Broadcast discovery, empty payload.
    Announce = 1,
    /// Request to connect, `[metadata]` or empty.
    Invoke = 2,
    /// `[description, metadata]`.
    Offer = 3,
    /// `[description]`.
    Answer = 4,
    /// `[cand, …]`.
    Candidate = 5,
}

impl SignalType {
    /// Maps a wire number to a type; `None` outside 1..=5.
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::Announce,
            2 => Self::Invoke,
            3 => Self::Offer,
            4 => Self::Answer,
            5 => Self::Candidate,
            _ => return None,
        })
    }

    /// The wire number.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
}

/// A decoded signaling envelope (§4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Field 1: the signal type.
    pub signal_type: SignalType,
    /// Field 2: flag bits ([`FLAG_COMPRESSED`], [`FLAG_ENCRYPTED`]).
    pub flags: u32,
    /// Field 3: the sender ID bytes (33 bytes when produced by Peerix).
    pub sender: Vec<u8>,
    /// Field 4: the (possibly compressed and/or encrypted) payload.
    pub payload: Vec<u8>,
}

impl Packet {
    /// Encodes all four fields in ascending order, as Peerix does.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.sender.len() + self.payload.len());
        proto::put_uint32(1, self.signal_type.as_u32(), &mut out);
        proto::put_uint32(2, self.flags, &mut out);
        proto::put_bytes(3, &self.sender, &mut out);
        proto::put_bytes(4, &self.payload, &mut out);
        out
    }

    /// Decodes an envelope. A missing `flags` field means 0 and a missing
    /// `sender` means empty; a missing `payload` or a missing or invalid
    /// `type` is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let mut signal_type = None;
        let mut flags = 0;
        let mut sender: &[u8] = &[];
        let mut payload = None;
        while let Some(field) = reader.next_field()? {
            match field.number {
                1 => signal_type = Some(field.as_u32()?),
                2 => flags = field.as_u32()?,
                3 => sender = field.as_bytes()?,
                4 => payload = Some(field.as_bytes()?),
                _ => {}
            }
        }
        let raw_type = signal_type.ok_or(DecodeError::MissingField(1))?;
        let signal_type = SignalType::from_u32(raw_type).ok_or(DecodeError::InvalidValue {
            field: 1,
            value: raw_type,
        })?;
        let payload = payload.ok_or(DecodeError::MissingField(4))?;
        Ok(Self {
            signal_type,
            flags,
            sender: sender.to_vec(),
            payload: payload.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sender() -> Vec<u8> {
        hex::decode("02ba89dcacdf7b9b77f8da7a50b5ffd36b773e38baef40d34072c67583eb6c00bd").unwrap()
    }

    #[test]
    fn announce_layout() {
        let p = Packet {
            signal_type: SignalType::Announce,
            flags: 0,
            sender: sender(),
            payload: vec![],
        };
        let bytes = p.encode();
        assert_eq!(
            hex::encode(&bytes),
            "080110001a2102ba89dcacdf7b9b77f8da7a50b5ffd36b773e38baef40d34072c67583eb6c00bd2200"
        );
        assert_eq!(Packet::decode(&bytes).unwrap(), p);
    }

    #[test]
    fn acceptance_table() {
        let s = sender();
        // payload missing
        let mut b = vec![0x08, 0x01, 0x10, 0x00];
        proto::put_bytes(3, &s, &mut b);
        assert_eq!(Packet::decode(&b), Err(DecodeError::MissingField(4)));
        // flags missing
        let mut b = vec![0x08, 0x02];
        proto::put_bytes(3, &s, &mut b);
        proto::put_bytes(4, b"[]", &mut b);
        assert_eq!(Packet::decode(&b).unwrap().flags, 0);
        // reverse order + unknown field 9
        let mut b = Vec::new();
        proto::put_bytes(9, b"zz", &mut b);
        proto::put_bytes(4, b"[1]", &mut b);
        proto::put_bytes(3, &s, &mut b);
        proto::put_uint32(2, 0, &mut b);
        proto::put_uint32(1, 5, &mut b);
        let p = Packet::decode(&b).unwrap();
        assert_eq!(p.signal_type, SignalType::Candidate);
        assert_eq!(p.payload, b"[1]");
        // type 6
        let mut b = vec![0x08, 0x06];
        proto::put_bytes(4, b"", &mut b);
        assert!(matches!(
            Packet::decode(&b),
            Err(DecodeError::InvalidValue { field: 1, value: 6 })
        ));
        // non-minimal 5-byte type
        let mut b = vec![0x08, 0x82, 0x80, 0x80, 0x80, 0x00];
        proto::put_bytes(4, b"", &mut b);
        assert_eq!(Packet::decode(&b).unwrap().signal_type, SignalType::Invoke);
        // 6-byte varint
        let mut b = vec![0x08, 0x82, 0x80, 0x80, 0x80, 0x80, 0x00];
        proto::put_bytes(4, b"", &mut b);
        assert_eq!(Packet::decode(&b), Err(DecodeError::VarintOverflow));
        // wrong wire type for sender
        let b = [0x08, 0x01, 0x18, 0x01, 0x22, 0x00];
        assert!(matches!(
            Packet::decode(&b),
            Err(DecodeError::WrongWireType { field: 3, .. })
        ));
        // truncated
        let full = Packet {
            signal_type: SignalType::Offer,
            flags: 3,
            sender: s,
            payload: vec![1; 200],
        }
        .encode();
        for cut in 1..full.len() {
            assert!(Packet::decode(&full[..cut]).is_err(), "cut {cut}");
        }
    }

    fn arb_type() -> impl Strategy<Value = SignalType> {
        (1u32..=5).prop_map(|v| SignalType::from_u32(v).unwrap_or(SignalType::Announce))
    }

    proptest! {
        #[test]
        fn roundtrip(t in arb_type(), flags in any::<u32>(), sender in proptest::collection::vec(any::<u8>(), 0..40), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let p = Packet { signal_type: t, flags, sender, payload };
            prop_assert_eq!(Packet::decode(&p.encode()).unwrap(), p);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Packet::decode(&bytes);
        }
    }
}
