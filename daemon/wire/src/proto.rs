//! The minimal protobuf-compatible codec used by Peerix (§4.1).
//!
//! Differences from stock protobuf that matter: varints are unsigned 32-bit
//! and at most 5 bytes long, bools must be 0 or 1, and presence is explicit
//! (encoders emit zero values and empty byte strings when present).

use thiserror::Error;

/// Wire type 0: varint.
pub const WIRE_VARINT: u8 = 0;
/// Wire type 1: 64-bit fixed (skipped only).
pub const WIRE_FIXED64: u8 = 1;
/// Wire type 2: length-delimited bytes.
pub const WIRE_LEN: u8 = 2;
/// Wire type 5: 32-bit fixed.
pub const WIRE_FIXED32: u8 = 5;

/// Decoding failures. Any of them makes the whole message invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Input ended in the middle of a value.
    #[error("truncated input")]
    Truncated,
    /// A varint was longer than 5 bytes or exceeded 32 bits.
    #[error("varint too long or out of 32-bit range")]
    VarintOverflow,
    /// A tag carried field number 0.
    #[error("field number 0")]
    FieldZero,
    /// Wire type 3, 4, 6 or 7.
    #[error("unsupported wire type {0}")]
    UnsupportedWireType(u8),
    /// A known field arrived with an unexpected wire type.
    #[error("field {field} has wire type {found}, expected {expected}")]
    WrongWireType {
        /// Field number.
        field: u32,
        /// Expected wire type.
        expected: u8,
        /// Wire type found.
        found: u8,
    },
    /// A bool field held a value other than 0 or 1.
    #[error("field {field} is a bool but holds {value}")]
    InvalidBool {
        /// Field number.
        field: u32,
        /// The value found.
        value: u32,
    },
    /// A required field is absent.
    #[error("missing field {0}")]
    MissingField(u32),
    /// A field holds a value outside its allowed range.
    #[error("field {field} holds invalid value {value}")]
    InvalidValue {
        /// Field number.
        field: u32,
        /// The value found.
        value: u32,
    },
}

/// Appends `value` as an unsigned LEB128 varint.
pub fn encode_varint(value: u32, out: &mut Vec<u8>) {
    let mut v = value;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Number of bytes [`encode_varint`] writes for `value`.
pub fn varint_len(value: u32) -> usize {
    match value {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5,
    }
}

/// Decodes a varint at the start of `buf`; returns the value and its length.
///
/// At most 5 bytes; the 5th byte must be `<= 0x0f` (no continuation bit,
/// only the low 4 data bits). Non-minimal encodings are accepted.
pub fn decode_varint(buf: &[u8]) -> Result<(u32, usize), DecodeError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let b = *buf.get(i).ok_or(DecodeError::Truncated)?;
        if i == 4 {
            if b > 0x0f {
                return Err(DecodeError::VarintOverflow);
            }
            value |= u32::from(b) << 28;
            return Ok((value, 5));
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(DecodeError::VarintOverflow)
}

/// Appends a tag for `field` with `wire_type`.
pub fn encode_tag(field: u32, wire_type: u8, out: &mut Vec<u8>) {
    encode_varint((field << 3) | u32::from(wire_type), out);
}

/// Appends a varint (uint32) field.
pub fn put_uint32(field: u32, value: u32, out: &mut Vec<u8>) {
    encode_tag(field, WIRE_VARINT, out);
    encode_varint(value, out);
}

/// Appends a bool field (`0` or `1`).
pub fn put_bool(field: u32, value: bool, out: &mut Vec<u8>) {
    put_uint32(field, u32::from(value), out);
}

/// Appends a length-delimited field. Panics never; lengths above `u32::MAX`
/// are not representable and are truncated by the caller's contract
/// (Peerix frames and packets are far smaller).
pub fn put_bytes(field: u32, value: &[u8], out: &mut Vec<u8>) {
    encode_tag(field, WIRE_LEN, out);
    encode_varint(u32::try_from(value.len()).unwrap_or(u32::MAX), out);
    out.extend_from_slice(value);
}

/// The value of one decoded field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// Wire type 0.
    Varint(u32),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

impl FieldValue<'_> {
    /// The wire type number of this value.
    pub fn wire_type(&self) -> u8 {
        match self {
            FieldValue::Varint(_) => WIRE_VARINT,
            FieldValue::Fixed64(_) => WIRE_FIXED64,
            FieldValue::Bytes(_) => WIRE_LEN,
            FieldValue::Fixed32(_) => WIRE_FIXED32,
        }
    }
}

/// One decoded field: number and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// Field number (never 0).
    pub number: u32,
    /// Field value.
    pub value: FieldValue<'a>,
}

impl<'a> Field<'a> {
    fn wrong(&self, expected: u8) -> DecodeError {
        DecodeError::WrongWireType {
            field: self.number,
            expected,
            found: self.value.wire_type(),
        }
    }

    /// The value as uint32; wire type must be 0.
    pub fn as_u32(&self) -> Result<u32, DecodeError> {
        match self.value {
            FieldValue::Varint(v) => Ok(v),
            _ => Err(self.wrong(WIRE_VARINT)),
        }
    }

    /// The value as bool; wire type must be 0 and the value 0 or 1.
    pub fn as_bool(&self) -> Result<bool, DecodeError> {
        match self.as_u32()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidBool {
                field: self.number,
                value,
            }),
        }
    }

    /// The value as bytes; wire type must be 2.
    pub fn as_bytes(&self) -> Result<&'a [u8], DecodeError> {
        match self.value {
            FieldValue::Bytes(b) => Ok(b),
            _ => Err(self.wrong(WIRE_LEN)),
        }
    }
}

/// A forward-only reader of fields.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u32, DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let (v, n) = decode_varint(rest)?;
        self.pos += n;
        Ok(v)
    }

    /// Reads the next field, `Ok(None)` at the end of input.
    pub fn next_field(&mut self) -> Result<Option<Field<'a>>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = tag >> 3;
        let wire_type = (tag & 7) as u8;
        if number == 0 {
            return Err(DecodeError::FieldZero);
        }
        let value = match wire_type {
            WIRE_VARINT => FieldValue::Varint(self.varint()?),
            WIRE_FIXED64 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                FieldValue::Fixed64(u64::from_le_bytes(a))
            }
            WIRE_LEN => {
                let len = self.varint()? as usize;
                FieldValue::Bytes(self.take(len)?)
            }
            WIRE_FIXED32 => {
                let b = self.take(4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                FieldValue::Fixed32(u32::from_le_bytes(a))
            }
            other => return Err(DecodeError::UnsupportedWireType(other)),
        };
        Ok(Some(Field { number, value }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varints() {
        assert_eq!(decode_varint(&[0x00]), Ok((0, 1)));
        assert_eq!(decode_varint(&[0x82, 0x80, 0x80, 0x80, 0x00]), Ok((2, 5)));
        assert_eq!(
            decode_varint(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Ok((u32::MAX, 5))
        );
        assert_eq!(
            decode_varint(&[0xff, 0xff, 0xff, 0xff, 0x10]),
            Err(DecodeError::VarintOverflow)
        );
        assert_eq!(
            decode_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(DecodeError::VarintOverflow)
        );
        assert_eq!(decode_varint(&[0x80, 0x80]), Err(DecodeError::Truncated));
        assert_eq!(decode_varint(&[]), Err(DecodeError::Truncated));
        let mut out = Vec::new();
        encode_varint(300, &mut out);
        assert_eq!(out, [0xac, 0x02]);
    }

    #[test]
    fn reader_rules() {
        // field 0
        assert_eq!(
            Reader::new(&[0x00, 0x01]).next_field(),
            Err(DecodeError::FieldZero)
        );
        // wire types 3,4,6,7 rejected
        for wt in [3u8, 4, 6, 7] {
            assert_eq!(
                Reader::new(&[0x08 | wt]).next_field(),
                Err(DecodeError::UnsupportedWireType(wt))
            );
        }
        // fixed64/fixed32 skip
        let mut r = Reader::new(&[0x09, 1, 2, 3, 4, 5, 6, 7, 8, 0x0d, 1, 0, 0, 0]);
        assert!(matches!(
            r.next_field().unwrap().unwrap().value,
            FieldValue::Fixed64(_)
        ));
        assert_eq!(
            r.next_field().unwrap().unwrap().value,
            FieldValue::Fixed32(1)
        );
        assert_eq!(r.next_field(), Ok(None));
        // truncated length-delimited
        assert_eq!(
            Reader::new(&[0x12, 0x05, 1, 2]).next_field(),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0x09, 1]).next_field(),
            Err(DecodeError::Truncated)
        );
        // bool 2
        let f = Reader::new(&[0x10, 0x02]).next_field().unwrap().unwrap();
        assert_eq!(
            f.as_bool(),
            Err(DecodeError::InvalidBool { field: 2, value: 2 })
        );
        // wrong wire type
        assert!(matches!(
            f.as_bytes(),
            Err(DecodeError::WrongWireType { field: 2, .. })
        ));
    }

    proptest! {
        #[test]
        fn varint_roundtrip(v in any::<u32>()) {
            let mut out = Vec::new();
            encode_varint(v, &mut out);
            prop_assert_eq!(out.len(), varint_len(v));
            prop_assert_eq!(decode_varint(&out), Ok((v, out.len())));
        }

        #[test]
        fn fields_roundtrip(fields in proptest::collection::vec((1u32..1000, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..40), any::<bool>()), 0..10)) {
            let mut out = Vec::new();
            for (n, v, b, is_bytes) in &fields {
                if *is_bytes { put_bytes(*n, b, &mut out) } else { put_uint32(*n, *v, &mut out) }
            }
            let mut r = Reader::new(&out);
            for (n, v, b, is_bytes) in &fields {
                let f = r.next_field().unwrap().unwrap();
                prop_assert_eq!(f.number, *n);
                if *is_bytes { prop_assert_eq!(f.as_bytes().unwrap(), &b[..]) } else { prop_assert_eq!(f.as_u32().unwrap(), *v) }
            }
            prop_assert_eq!(r.next_field(), Ok(None));
        }

        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            while let Ok(Some(_)) = r.next_field() {}
        }
    }
}
