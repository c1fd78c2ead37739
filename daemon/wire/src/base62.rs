//! Peerix-flavoured base62 (§1.3): alphabet `0-9a-zA-Z`, big-endian integer
//! semantics, leading zero bytes dropped on encoding.

use thiserror::Error;

/// The Peerix base62 alphabet: digits, then lower case, then upper case.
pub const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Errors returned by [`decode`] and [`decode_padded`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Base62Error {
    /// A character outside the Peerix base62 alphabet was found.
    #[error("invalid base62 character {character:?} at position {position}")]
    InvalidCharacter {
        /// The offending character.
        character: char,
        /// Its character position in the input.
        position: usize,
    },
}

fn digit_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'z' => Some(c - b'a' + 10),
        b'A'..=b'Z' => Some(c - b'A' + 36),
        _ => None,
    }
}

/// Encodes bytes as a big-endian base62 number.
///
/// Empty input gives an empty string, leading zero bytes are dropped and an
/// input made only of zero bytes gives `"0"`.
pub fn encode(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let mut num: Vec<u8> = bytes[start..].to_vec();
    if num.is_empty() {
        return "0".to_owned();
    }
    let mut digits: Vec<u8> = Vec::with_capacity(num.len() * 138 / 100 + 1);
    while !num.is_empty() {
        let mut rem: u32 = 0;
        let mut next: Vec<u8> = Vec::with_capacity(num.len());
        for &b in &num {
            let acc = (rem << 8) | u32::from(b);
            let q = acc / 62;
            rem = acc % 62;
            if !(next.is_empty() && q == 0) {
                next.push(q as u8);
            }
        }
        digits.push(ALPHABET[rem as usize]);
        num = next;
    }
    digits.reverse();
    digits.into_iter().map(char::from).collect()
}

/// Decodes a base62 string into its minimal big-endian byte representation.
///
/// An empty string gives empty output; `"0"` (or any all-zero text) gives `[0]`.
pub fn decode(text: &str) -> Result<Vec<u8>, Base62Error> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    // Little-endian accumulator while decoding.
    let mut acc: Vec<u8> = Vec::with_capacity(text.len());
    for (position, ch) in text.chars().enumerate() {
        let d =
            u8::try_from(ch)
                .ok()
                .and_then(digit_value)
                .ok_or(Base62Error::InvalidCharacter {
                    character: ch,
                    position,
                })?;
        let mut carry = u32::from(d);
        for byte in acc.iter_mut() {
            let v = u32::from(*byte) * 62 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            acc.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    while acc.len() > 1 && acc.last() == Some(&0) {
        acc.pop();
    }
    if acc.is_empty() {
        acc.push(0);
    }
    acc.reverse();
    Ok(acc)
}

/// Decodes a base62 string to exactly `len` bytes.
///
/// The minimal representation is left-padded with zero bytes; if it is longer
/// than `len` only its low-order `len` bytes are kept.
pub fn decode_padded(text: &str, len: usize) -> Result<Vec<u8>, Base62Error> {
    let minimal = decode(text)?;
    if minimal.len() >= len {
        return Ok(minimal[minimal.len() - len..].to_vec());
    }
    let mut out = vec![0u8; len - minimal.len()];
    out.extend_from_slice(&minimal);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edge_cases() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0, 0, 0]), "0");
        assert_eq!(encode(&[0x24]), "A");
        assert_eq!(encode(&[0, 0, 1]), "1");
        assert_eq!(encode(&[0x3e]), "10");
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
        assert_eq!(decode("0").unwrap(), vec![0]);
        assert_eq!(decode("000").unwrap(), vec![0]);
        assert_eq!(decode("10").unwrap(), vec![0x3e]);
        let mut a = vec![0u8; 32];
        a.push(0x24);
        assert_eq!(decode_padded("A", 33).unwrap(), a);
        assert_eq!(decode_padded("10", 0).unwrap(), Vec::<u8>::new());
        assert_eq!(
            decode_padded(&encode(&[1, 0xff, 0xfe]), 2).unwrap(),
            vec![0xff, 0xfe]
        );
    }

    #[test]
    fn rejects_foreign_characters() {
        assert!(matches!(
            decode("ab-c"),
            Err(Base62Error::InvalidCharacter {
                character: '-',
                position: 2
            })
        ));
        assert!(decode("é").is_err());
    }

    proptest! {
        #[test]
        fn roundtrip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = encode(&bytes);
            let back = decode_padded(&text, bytes.len()).unwrap();
            prop_assert_eq!(back, bytes);
        }

        #[test]
        fn decode_never_panics(s in ".{0,80}") {
            let _ = decode(&s);
        }
    }
}
