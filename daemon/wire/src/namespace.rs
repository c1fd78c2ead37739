//! The namespace function `E` of §2.2: hashing or escaping of room names and
//! peer IDs into NATS-safe subject tokens.

use sha2::{Digest, Sha256};

/// Computes `E(s)`.
///
/// With `hashing` on: base62 of the SHA-256 digest of the UTF-8 bytes of `s`
/// (leading zero bytes dropped, so the result is not fixed-length). With
/// `hashing` off: every code point outside `[A-Za-z0-9_-]` becomes `_`.
pub fn escape(s: &str, hashing: bool) -> String {
    if hashing {
        crate::base62::encode(&Sha256::digest(s.as_bytes()))
    } else {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn hashing_vectors() {
        assert_eq!(
            escape("default", true),
            "dcjHO465qAJI1IZONIXMIkFG0xWJrBMJqIdGY94W88L"
        );
        let r32 = escape("room-32", true);
        assert_eq!(r32, "CFPOOHmgBgdFmoTgEh4C7BvZgRYzLxB2w0oK7A7YM");
        assert_eq!(r32.len(), 41);
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("my room!", false), "my_room_");
        assert_eq!(escape("café", false), "caf_");
        assert_eq!(escape("a😀b", false), "a_b");
        assert_eq!(escape("x.y*z>", false), "x_y_z_");
        assert_eq!(escape("A-z_09", false), "A-z_09");
    }
}
