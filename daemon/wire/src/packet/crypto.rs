//! Payload transforms of §4.4 and §4.5: zlib (RFC 1950) and AES-256-GCM with
//! a 12-byte IV prefix and a 16-byte tag suffix, no AAD.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use thiserror::Error;

/// Length of the GCM IV prepended to encrypted payloads.
pub const IV_LEN: usize = 12;
/// Length of the GCM tag appended to encrypted payloads.
pub const TAG_LEN: usize = 16;

/// Failures of the payload transforms.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CryptoError {
    /// The payload is shorter than IV + tag.
    #[error("encrypted payload too short ({0} bytes)")]
    TooShort(usize),
    /// Authentication failed (wrong key, tampered data or bad tag).
    #[error("decryption failed")]
    Decrypt,
    /// Encryption failed (input too large for GCM).
    #[error("encryption failed")]
    Encrypt,
    /// The zlib stream is invalid (bad header, data, Adler-32 or trailing bytes).
    #[error("invalid zlib stream")]
    Inflate,
    /// Inflation would exceed the configured size limit.
    #[error("inflated payload exceeds {0} bytes")]
    InflateLimit(usize),
}

/// AES-256-GCM encrypts `plaintext` with `iv`; returns `ciphertext ‖ tag`.
pub fn aes_gcm_encrypt(
    key: &[u8; 32],
    iv: &[u8; IV_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .encrypt(&Nonce::from(*iv), plaintext)
        .map_err(|_| CryptoError::Encrypt)
}

/// AES-256-GCM decrypts `ciphertext ‖ tag` with `iv`.
pub fn aes_gcm_decrypt(
    key: &[u8; 32],
    iv: &[u8; IV_LEN],
    ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if ciphertext.len() < TAG_LEN {
        return Err(CryptoError::TooShort(ciphertext.len()));
    }
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(&Nonce::from(*iv), ciphertext)
        .map_err(|_| CryptoError::Decrypt)
}

/// Encrypts into the Peerix payload layout `IV ‖ ciphertext ‖ tag`.
pub fn seal_payload(
    key: &[u8; 32],
    iv: &[u8; IV_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let ct = aes_gcm_encrypt(key, iv, plaintext)?;
    let mut out = Vec::with_capacity(IV_LEN + ct.len());
    out.extend_from_slice(iv);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts a Peerix payload `IV ‖ ciphertext ‖ tag`.
pub fn open_payload(key: &[u8; 32], payload: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if payload.len() < IV_LEN + TAG_LEN {
        return Err(CryptoError::TooShort(payload.len()));
    }
    let (iv, rest) = payload.split_at(IV_LEN);
    let mut nonce = [0u8; IV_LEN];
    nonce.copy_from_slice(iv);
    aes_gcm_decrypt(key, &nonce, rest)
}

/// zlib-compresses (RFC 1950, default level).
pub fn zlib_compress(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), true);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let consumed = c.total_in() as usize;
        let input = data.get(consumed..).unwrap_or_default();
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        match c.compress_vec(input, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => return out,
            Ok(_) => {}
            // Compression of in-memory data cannot fail; fall back to
            // returning what we have would corrupt data, so retry growth.
            Err(_) => out.reserve(out.capacity().max(256)),
        }
    }
}

/// Inflates a complete zlib stream, verifying the Adler-32 checksum and
/// rejecting trailing bytes; output is limited to `limit` bytes.
pub fn zlib_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CryptoError> {
    let mut d = Decompress::new(true);
    let mut out: Vec<u8> = Vec::with_capacity((data.len() * 4).min(limit).max(64));
    loop {
        let consumed = d.total_in() as usize;
        let input = data.get(consumed..).unwrap_or_default();
        if out.len() == out.capacity() {
            if out.len() >= limit {
                return Err(CryptoError::InflateLimit(limit));
            }
            let grow = out.capacity().min(limit - out.len()).max(1);
            out.reserve_exact(grow);
        }
        let before_in = d.total_in();
        let before_out = d.total_out();
        let status = d
            .decompress_vec(input, &mut out, FlushDecompress::None)
            .map_err(|_| CryptoError::Inflate)?;
        match status {
            Status::StreamEnd => {
                return if d.total_in() as usize == data.len() {
                    Ok(out)
                } else {
                    Err(CryptoError::Inflate)
                };
            }
            Status::Ok | Status::BufError => {
                let progressed = d.total_in() != before_in || d.total_out() != before_out;
                if !progressed && out.len() < out.capacity() {
                    // No progress with output space left: input exhausted.
                    return Err(CryptoError::Inflate);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zlib_roundtrip_and_checks() {
        let data = b"hello hello hello hello hello hello".repeat(10);
        let z = zlib_compress(&data);
        assert_eq!(&z[..2], &[0x78, 0x9c]);
        assert_eq!(zlib_decompress(&z, 1 << 20).unwrap(), data);
        // bad adler
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(zlib_decompress(&bad, 1 << 20), Err(CryptoError::Inflate));
        // trailing bytes
        let mut trailing = z.clone();
        trailing.push(0);
        assert_eq!(
            zlib_decompress(&trailing, 1 << 20),
            Err(CryptoError::Inflate)
        );
        // truncated
        assert_eq!(
            zlib_decompress(&z[..z.len() - 3], 1 << 20),
            Err(CryptoError::Inflate)
        );
        // plain JSON is not zlib
        assert_eq!(
            zlib_decompress(b"[1,2]", 1 << 20),
            Err(CryptoError::Inflate)
        );
        assert_eq!(zlib_decompress(b"", 1 << 20), Err(CryptoError::Inflate));
        // limit
        assert_eq!(zlib_decompress(&z, 10), Err(CryptoError::InflateLimit(10)));
        assert_eq!(zlib_decompress(&z, data.len()).unwrap(), data);
        assert!(zlib_compress(b"").len() > 2);
    }

    #[test]
    fn gcm_layout() {
        let key = [7u8; 32];
        let iv = [1u8; 12];
        let p = seal_payload(&key, &iv, b"abc").unwrap();
        assert_eq!(p.len(), 3 + 28);
        assert_eq!(&p[..12], &iv);
        assert_eq!(open_payload(&key, &p).unwrap(), b"abc");
        let mut bad = p.clone();
        bad[20] ^= 0x80;
        assert_eq!(open_payload(&key, &bad), Err(CryptoError::Decrypt));
        assert_eq!(open_payload(&key, &p[..27]), Err(CryptoError::TooShort(27)));
    }
}
