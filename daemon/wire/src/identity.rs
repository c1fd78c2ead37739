//! Peer identities (§1): P-256 key pairs, base62 peer IDs, raw ECDH shared
//! keys and ID-based politeness (§1.4).

use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use rand::rngs::OsRng;
use rand::RngCore;
use thiserror::Error;

use crate::base62;

/// Length of the sender field / compressed public key in bytes.
pub const SENDER_LEN: usize = 33;

/// Errors raised by identity and key operations.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    /// The secret scalar is zero, out of range or not 32 bytes long.
    #[error("invalid P-256 secret key")]
    InvalidSecretKey,
    /// The remote ID is not valid base62.
    #[error("invalid peer id: {0}")]
    InvalidId(#[from] base62::Base62Error),
    /// The remote public key is not 33 bytes long.
    #[error("invalid compressed public key length {0}")]
    InvalidKeyLength(usize),
    /// The remote public key prefix is not 0x02 or 0x03.
    #[error("Invalid compressed public key prefix")]
    InvalidKeyPrefix,
    /// The x coordinate is not on the curve (or not below p).
    #[error("x coordinate is not on the curve")]
    NotOnCurve,
}

/// Anything that identifies a remote peer's public key: its base62 ID text
/// (`&str`, `String`) or its 33 sender bytes (`[u8]`, `[u8; 33]`, `Vec<u8>`).
pub trait RemoteKey {
    /// Returns the compressed public key bytes.
    fn remote_key_bytes(&self) -> Result<Vec<u8>, IdentityError>;
}

impl RemoteKey for str {
    fn remote_key_bytes(&self) -> Result<Vec<u8>, IdentityError> {
        Ok(base62::decode_padded(self, SENDER_LEN)?)
    }
}
impl RemoteKey for String {
    fn remote_key_bytes(&self) -> Result<Vec<u8>, IdentityError> {
        self.as_str().remote_key_bytes()
    }
}
impl RemoteKey for [u8] {
    fn remote_key_bytes(&self) -> Result<Vec<u8>, IdentityError> {
        Ok(self.to_vec())
    }
}
impl RemoteKey for [u8; SENDER_LEN] {
    fn remote_key_bytes(&self) -> Result<Vec<u8>, IdentityError> {
        Ok(self.to_vec())
    }
}
impl RemoteKey for Vec<u8> {
    fn remote_key_bytes(&self) -> Result<Vec<u8>, IdentityError> {
        Ok(self.clone())
    }
}

/// Parses a 33-byte SEC1 compressed P-256 public key with the JS validation
/// rules (length, prefix, point on curve).
pub fn parse_public_key(bytes: &[u8]) -> Result<PublicKey, IdentityError> {
    if bytes.len() != SENDER_LEN {
        return Err(IdentityError::InvalidKeyLength(bytes.len()));
    }
    if bytes[0] != 0x02 && bytes[0] != 0x03 {
        return Err(IdentityError::InvalidKeyPrefix);
    }
    PublicKey::from_sec1_bytes(bytes).map_err(|_| IdentityError::NotOnCurve)
}

/// A local peer identity: a P-256 secret key and the derived peer ID.
#[derive(Clone)]
pub struct Identity {
    secret: SecretKey,
    sender: [u8; SENDER_LEN],
    id: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a fresh key pair from the operating system RNG.
    pub fn generate() -> Self {
        Self::from_secret(SecretKey::random(&mut OsRng))
    }

    /// Builds an identity from a 32-byte big-endian private scalar.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        if bytes.len() != 32 {
            return Err(IdentityError::InvalidSecretKey);
        }
        let secret = SecretKey::from_slice(bytes).map_err(|_| IdentityError::InvalidSecretKey)?;
        Ok(Self::from_secret(secret))
    }

    fn from_secret(secret: SecretKey) -> Self {
        let point = secret.public_key().to_encoded_point(true);
        let mut sender = [0u8; SENDER_LEN];
        sender.copy_from_slice(point.as_bytes());
        let id = base62::encode(&sender);
        Self { secret, sender, id }
    }

    /// The peer ID: base62 of the compressed public key (44 characters).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The 33-byte SEC1 compressed public key (the packet `sender` field).
    pub fn sender_bytes(&self) -> [u8; SENDER_LEN] {
        self.sender
    }

    /// The 32-byte private scalar.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes().into()
    }

    /// Derives the AES-256 key shared with a remote peer: the raw ECDH X
    /// coordinate, no KDF (§4.5). `remote` is an ID string or sender bytes.
    pub fn shared_key<R: RemoteKey + ?Sized>(&self, remote: &R) -> Result<[u8; 32], IdentityError> {
        let public = parse_public_key(&remote.remote_key_bytes()?)?;
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), public.as_affine());
        let mut key = [0u8; 32];
        key.copy_from_slice(shared.raw_secret_bytes());
        Ok(key)
    }
}

/// 33 random bytes: the ID bytes of a peer with encryption off (§1.2).
pub fn random_id_bytes() -> [u8; SENDER_LEN] {
    let mut bytes = [0u8; SENDER_LEN];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A random peer ID for the encryption-off case (base62 of 33 random bytes;
/// its length varies).
pub fn random_id() -> String {
    base62::encode(&random_id_bytes())
}

/// The role of the local peer towards one remote peer (§1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Politeness {
    /// Local ID is greater: yields on offer collisions, requests channels.
    Polite,
    /// Local ID is smaller: wins collisions, creates user data channels.
    Impolite,
}

impl Politeness {
    /// Politeness of `local_id` towards `remote_id`.
    pub fn of(local_id: &str, remote_id: &str) -> Self {
        if is_polite(local_id, remote_id) {
            Politeness::Polite
        } else {
            Politeness::Impolite
        }
    }
}

/// True when the local peer is polite: its ID is greater in byte-wise order.
pub fn is_polite(local_id: &str, remote_id: &str) -> bool {
    local_id > remote_id
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "8a9a88e37d72eb8d065a843b892c3707c8e62e36a15f9bf5069463c07101b876";
    const B: &str = "38ce0ccdafdff61023315d1ea4da83f968b59ffe5b794ae0f776c634fffa68a6";

    fn ident(h: &str) -> Identity {
        Identity::from_secret_bytes(&hex::decode(h).unwrap()).unwrap()
    }

    #[test]
    fn vector_identities() {
        let a = ident(A);
        let b = ident(B);
        assert_eq!(a.id(), "2FDZnerLHOX5D23sxBi26UB5SRCuhPDrOmIvJFrfNzTn");
        assert_eq!(b.id(), "2eHaB6KbFZOQcT3NchbZkKfOIoC5ji8mGK7zmTD0bdiU");
        assert_eq!(
            hex::encode(a.sender_bytes()),
            "02ba89dcacdf7b9b77f8da7a50b5ffd36b773e38baef40d34072c67583eb6c00bd"
        );
        assert_eq!(hex::encode(a.secret_bytes()), A);
        let k = "53ddb02cae67f8e09a80f6485335ad28c28fbe3ff99b8e0cc7ccc4bdff6ddf06";
        assert_eq!(hex::encode(a.shared_key(b.id()).unwrap()), k);
        assert_eq!(hex::encode(b.shared_key(&a.sender_bytes()).unwrap()), k);
        assert!(!is_polite(a.id(), b.id()));
        assert_eq!(Politeness::of(b.id(), a.id()), Politeness::Polite);
    }

    #[test]
    fn generated_ids() {
        let a = Identity::generate();
        assert_eq!(a.id().len(), 44);
        let b = Identity::generate();
        assert_eq!(a.shared_key(b.id()).unwrap(), b.shared_key(a.id()).unwrap());
        assert!(random_id().len() <= 45);
    }

    #[test]
    fn bad_keys() {
        let a = Identity::generate();
        assert_eq!(
            a.shared_key(&[2u8; 32][..]),
            Err(IdentityError::InvalidKeyLength(32))
        );
        assert_eq!(
            a.shared_key(&[4u8; 33]),
            Err(IdentityError::InvalidKeyPrefix)
        );
        assert_eq!(
            a.shared_key(&[0xffu8; 33][..]),
            Err(IdentityError::InvalidKeyPrefix)
        );
        let mut off = [0xffu8; 33];
        off[0] = 2;
        assert_eq!(a.shared_key(&off), Err(IdentityError::NotOnCurve));
        assert!(matches!(
            a.shared_key("bad-id"),
            Err(IdentityError::InvalidId(_))
        ));
        assert!(Identity::from_secret_bytes(&[0u8; 32]).is_err());
        assert!(Identity::from_secret_bytes(&[1u8; 31]).is_err());
    }
}
