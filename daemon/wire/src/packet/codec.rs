//! The signaling payload pipeline (§4.3): JSON → zlib → AES-GCM on send and
//! the reverse on receive, with a per-remote key cache.

use std::collections::HashMap;

use rand::rngs::OsRng;
use rand::RngCore;
use serde_json::Value;
use thiserror::Error;

use super::crypto::{self, CryptoError, IV_LEN};
use super::{Packet, SignalType, FLAG_COMPRESSED, FLAG_ENCRYPTED};
use crate::base62;
use crate::identity::{self, Identity, IdentityError, SENDER_LEN};
use crate::proto::DecodeError;

/// Default limit for an inflated payload (zip-bomb protection).
pub const DEFAULT_MAX_PAYLOAD_LEN: usize = 8 * 1024 * 1024;
const MAX_CACHED_KEYS: usize = 4096;

/// Room options that shape the signaling payload (§2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodecOptions {
    /// `signalingCompression`: zlib when strictly shorter.
    pub compression: bool,
    /// `signalingEncryption`: AES-256-GCM with the ECDH key.
    pub encryption: bool,
}

impl Default for CodecOptions {
    /// Peerix defaults: both on.
    fn default() -> Self {
        Self {
            compression: true,
            encryption: true,
        }
    }
}

/// Receive- or send-side signaling failures. All map to the Peerix error
/// code `SIGNALING_ERROR` (see [`SignalingError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignalingError {
    /// The envelope could not be decoded.
    #[error("Invalid packet: {0}")]
    InvalidPacket(DecodeError),
    /// Type outside 1..=5 or message not a JSON array.
    #[error("Invalid signaling message: {0}")]
    InvalidMessage(String),
    /// Encryption is on but the payload was not flagged encrypted.
    #[error("Payload is not encrypted")]
    NotEncrypted,
    /// The sender field is not a valid compressed P-256 public key.
    #[error("Failed to import public key: {0}")]
    KeyImport(IdentityError),
    /// AES-GCM authentication failed or the payload is malformed.
    #[error("Failed to decrypt payload: {0}")]
    Decrypt(CryptoError),
    /// The payload is not valid JSON.
    #[error("Failed to parse message: {0}")]
    Json(String),
    /// The inflated payload exceeds the configured limit.
    #[error("Payload exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// Sending: no key can be derived for the remote ID.
    #[error("Encryption key not found: {0}")]
    EncryptionKey(IdentityError),
    /// Sending: encryption or serialization failed.
    #[error("Failed to encode message: {0}")]
    Encode(String),
    /// The local ID given to [`SignalingCodec::without_encryption`] is invalid.
    #[error("Invalid local id: {0}")]
    InvalidLocalId(String),
}

impl SignalingError {
    /// The Peerix error code for this error: always `"SIGNALING_ERROR"`.
    pub fn code(&self) -> &'static str {
        "SIGNALING_ERROR"
    }
}

/// A successfully opened signaling message.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// The signal type.
    pub signal_type: SignalType,
    /// The sender's ID (base62 of the sender field, leading zeros stripped).
    pub sender_id: String,
    /// The JSON array (empty for an empty payload).
    pub message: Vec<Value>,
}

/// Outcome of [`SignalingCodec::open`] for packets that did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened {
    /// A message from another peer.
    Signal(Signal),
    /// Our own packet (echo); silently dropped.
    Own,
    /// Empty sender field; silently dropped.
    EmptySender,
}

/// Seals and opens signaling packets for one local peer.
#[derive(Debug, Clone)]
pub struct SignalingCodec {
    options: CodecOptions,
    identity: Option<Identity>,
    local_id: String,
    sender: Vec<u8>,
    keys: HashMap<String, [u8; 32]>,
    max_payload_len: usize,
}

impl SignalingCodec {
    /// A codec for a peer with a P-256 identity. With `options.encryption`
    /// off the identity's ID is still used as the peer ID.
    pub fn new(identity: Identity, options: CodecOptions) -> Self {
        Self {
            options,
            local_id: identity.id().to_owned(),
            sender: identity.sender_bytes().to_vec(),
            identity: Some(identity),
            keys: HashMap::new(),
            max_payload_len: DEFAULT_MAX_PAYLOAD_LEN,
        }
    }

    /// A codec with encryption off and the given (random) base62 ID.
    pub fn without_encryption(local_id: &str, compression: bool) -> Result<Self, SignalingError> {
        let sender = base62::decode_padded(local_id, SENDER_LEN)
            .map_err(|e| SignalingError::InvalidLocalId(e.to_string()))?;
        if base62::encode(&sender) != local_id {
            return Err(SignalingError::InvalidLocalId(format!(
                "{local_id:?} does not round-trip through 33 bytes"
            )));
        }
        Ok(Self {
            options: CodecOptions {
                compression,
                encryption: false,
            },
            identity: None,
            local_id: local_id.to_owned(),
            sender,
            keys: HashMap::new(),
            max_payload_len: DEFAULT_MAX_PAYLOAD_LEN,
        })
    }

    /// A codec with encryption off and a fresh random 33-byte ID (§1.2).
    pub fn with_random_id(compression: bool) -> Self {
        let sender = identity::random_id_bytes();
        Self {
            options: CodecOptions {
                compression,
                encryption: false,
            },
            identity: None,
            local_id: base62::encode(&sender),
            sender: sender.to_vec(),
            keys: HashMap::new(),
            max_payload_len: DEFAULT_MAX_PAYLOAD_LEN,
        }
    }

    /// The effective options.
    pub fn options(&self) -> CodecOptions {
        self.options
    }

    /// The local peer ID.
    pub fn local_id(&self) -> &str {
        &self.local_id
    }

    /// The local 33-byte sender field.
    pub fn sender_bytes(&self) -> &[u8] {
        &self.sender
    }

    /// The local identity, if any.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Sets the maximum inflated payload size accepted by [`open`](Self::open).
    pub fn set_max_payload_len(&mut self, limit: usize) {
        self.max_payload_len = limit;
    }

    /// Drops the cached key of a remote peer (on connection close).
    pub fn forget_key(&mut self, remote_id: &str) {
        self.keys.remove(remote_id);
    }

    /// Drops all cached keys (on leave).
    pub fn clear_keys(&mut self) {
        self.keys.clear();
    }

    /// The sender id of `bytes` when opening it would derive a new key (ECDH): encryption on
    /// and the sender neither us nor cached. Lets the caller rate-limit that work before
    /// [`open`](Self::open) does it; `None` for anything that costs no derivation (an
    /// undecodable packet fails in `open` as usual).
    pub fn new_sender(&self, bytes: &[u8]) -> Option<String> {
        if !self.options.encryption || self.identity.is_none() {
            return None;
        }
        let packet = Packet::decode(bytes).ok()?;
        let sender_id = base62::encode(&packet.sender);
        if sender_id.is_empty() || sender_id == self.local_id || self.keys.contains_key(&sender_id)
        {
            return None;
        }
        Some(sender_id)
    }

    fn key_for(
        &mut self,
        remote_id: &str,
        sender: Option<&[u8]>,
    ) -> Result<Option<[u8; 32]>, IdentityError> {
        if !self.options.encryption {
            return Ok(None);
        }
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        if let Some(k) = self.keys.get(remote_id) {
            return Ok(Some(*k));
        }
        let key = match sender {
            Some(bytes) => identity.shared_key(bytes)?,
            None => identity.shared_key(remote_id)?,
        };
        if self.keys.len() >= MAX_CACHED_KEYS {
            self.keys.clear();
        }
        self.keys.insert(remote_id.to_owned(), key);
        Ok(Some(key))
    }

    /// Builds the encoded packet for `message` addressed to `remote_id`,
    /// with a random IV. `None` gives an empty payload (announce, invoke
    /// without metadata); `remote_id` is only used when a payload must be
    /// encrypted (it may be empty for an announce).
    pub fn seal(
        &mut self,
        signal_type: SignalType,
        message: Option<&[Value]>,
        remote_id: &str,
    ) -> Result<Vec<u8>, SignalingError> {
        let mut iv = [0u8; IV_LEN];
        OsRng.fill_bytes(&mut iv);
        self.seal_with_iv(signal_type, message, remote_id, iv)
    }

    /// Like [`seal`](Self::seal) with a caller-chosen IV (tests only: real
    /// packets must use a fresh random IV).
    pub fn seal_with_iv(
        &mut self,
        signal_type: SignalType,
        message: Option<&[Value]>,
        remote_id: &str,
        iv: [u8; IV_LEN],
    ) -> Result<Vec<u8>, SignalingError> {
        let json = match message {
            Some(values) => Some(
                serde_json::to_vec(values).map_err(|e| SignalingError::Encode(e.to_string()))?,
            ),
            None => None,
        };
        self.seal_json_with_iv(signal_type, json.as_deref(), remote_id, iv)
    }

    /// Seals pre-serialized compact JSON bytes (must be a JSON array; this is
    /// not checked). Lets callers control member order byte-exactly.
    pub fn seal_json_with_iv(
        &mut self,
        signal_type: SignalType,
        json: Option<&[u8]>,
        remote_id: &str,
        iv: [u8; IV_LEN],
    ) -> Result<Vec<u8>, SignalingError> {
        let mut flags = 0;
        let payload = match json {
            None => Vec::new(),
            Some(bytes) => {
                let mut data = bytes.to_vec();
                if self.options.compression {
                    let z = crypto::zlib_compress(&data);
                    if z.len() < data.len() {
                        data = z;
                        flags |= FLAG_COMPRESSED;
                    }
                }
                if let Some(key) = self
                    .key_for(remote_id, None)
                    .map_err(SignalingError::EncryptionKey)?
                {
                    data = crypto::seal_payload(&key, &iv, &data)
                        .map_err(|e| SignalingError::Encode(e.to_string()))?;
                    flags |= FLAG_ENCRYPTED;
                }
                data
            }
        };
        Ok(Packet {
            signal_type,
            flags,
            sender: self.sender.clone(),
            payload,
        }
        .encode())
    }

    /// Opens a received packet following the JS receive steps of §4.3.
    pub fn open(&mut self, bytes: &[u8]) -> Result<Opened, SignalingError> {
        let packet = Packet::decode(bytes).map_err(|e| match e {
            DecodeError::MissingField(1) | DecodeError::InvalidValue { field: 1, .. } => {
                SignalingError::InvalidMessage(e.to_string())
            }
            other => SignalingError::InvalidPacket(other),
        })?;
        let sender_id = base62::encode(&packet.sender);
        if sender_id.is_empty() {
            return Ok(Opened::EmptySender);
        }
        if sender_id == self.local_id {
            return Ok(Opened::Own);
        }
        let key = self
            .key_for(&sender_id, Some(&packet.sender))
            .map_err(SignalingError::KeyImport)?;
        let message = if packet.payload.is_empty() {
            Vec::new()
        } else {
            let mut data = packet.payload;
            if let Some(key) = key {
                if packet.flags & FLAG_ENCRYPTED == 0 {
                    return Err(SignalingError::NotEncrypted);
                }
                data = crypto::open_payload(&key, &data).map_err(SignalingError::Decrypt)?;
            }
            if packet.flags & FLAG_COMPRESSED != 0 {
                match crypto::zlib_decompress(&data, self.max_payload_len) {
                    Ok(inflated) => data = inflated,
                    Err(CryptoError::InflateLimit(n)) => {
                        return Err(SignalingError::PayloadTooLarge(n))
                    }
                    Err(_) => {} // Peerix silently uses the bytes as they are.
                }
            }
            if data.len() > self.max_payload_len {
                return Err(SignalingError::PayloadTooLarge(self.max_payload_len));
            }
            let text = String::from_utf8_lossy(&data);
            let value: Value =
                serde_json::from_str(&text).map_err(|e| SignalingError::Json(e.to_string()))?;
            match value {
                Value::Array(items) => items,
                _ => {
                    return Err(SignalingError::InvalidMessage(
                        "message is not an array".into(),
                    ))
                }
            }
        };
        Ok(Opened::Signal(Signal {
            signal_type: packet.signal_type,
            sender_id,
            message,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "8a9a88e37d72eb8d065a843b892c3707c8e62e36a15f9bf5069463c07101b876";
    const B: &str = "38ce0ccdafdff61023315d1ea4da83f968b59ffe5b794ae0f776c634fffa68a6";

    fn ident(h: &str) -> Identity {
        Identity::from_secret_bytes(&hex::decode(h).unwrap()).unwrap()
    }

    fn pair(options: CodecOptions) -> (SignalingCodec, SignalingCodec) {
        (
            SignalingCodec::new(ident(A), options),
            SignalingCodec::new(ident(B), options),
        )
    }

    #[test]
    fn vector_b_and_c() {
        let (mut a, mut b) = pair(CodecOptions::default());
        let msg = [json!({"name": "Alice"})];
        let iv = hex::decode("000102030405060708090a0b")
            .unwrap()
            .try_into()
            .unwrap();
        let bytes = b
            .seal_with_iv(SignalType::Invoke, Some(&msg), a.local_id(), iv)
            .unwrap();
        assert_eq!(hex::encode(&bytes), "080210021a210248e4c814f75118e2c392e32fc5fc066c41ff370c5728e164265a306badbdbf50222e000102030405060708090a0bb485a5726c53e6c5b218476d16115c9440b6a39f8d6a6253f9b701eed588f47c1a10");
        let Opened::Signal(sig) = a.open(&bytes).unwrap() else {
            panic!("not a signal")
        };
        assert_eq!(sig.message, msg);
        assert_eq!(sig.sender_id, b.local_id());
        assert_eq!(b.open(&bytes).unwrap(), Opened::Own);

        let (_, mut b) = pair(CodecOptions {
            compression: false,
            encryption: false,
        });
        let bytes = b
            .seal_with_iv(SignalType::Invoke, Some(&msg), "", iv)
            .unwrap();
        assert_eq!(hex::encode(bytes), "080210001a210248e4c814f75118e2c392e32fc5fc066c41ff370c5728e164265a306badbdbf5022125b7b226e616d65223a22416c696365227d5d");
    }

    #[test]
    fn announce_is_never_transformed() {
        let (mut a, mut b) = pair(CodecOptions::default());
        let bytes = a.seal(SignalType::Announce, None, "").unwrap();
        assert_eq!(
            hex::encode(&bytes),
            "080110001a2102ba89dcacdf7b9b77f8da7a50b5ffd36b773e38baef40d34072c67583eb6c00bd2200"
        );
        let Opened::Signal(sig) = b.open(&bytes).unwrap() else {
            panic!()
        };
        assert!(sig.message.is_empty());
        assert_eq!(sig.signal_type, SignalType::Announce);
    }

    #[test]
    fn roundtrips_all_options() {
        let big = json!({"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 50001 typ host generation 0 ufrag AbCd network-id 1", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "AbCd"});
        for compression in [false, true] {
            for encryption in [false, true] {
                let o = CodecOptions {
                    compression,
                    encryption,
                };
                let (mut a, mut b) = pair(o);
                for msg in [
                    vec![],
                    vec![json!(null)],
                    vec![big.clone(), big.clone(), big.clone()],
                ] {
                    for t in [
                        SignalType::Invoke,
                        SignalType::Offer,
                        SignalType::Answer,
                        SignalType::Candidate,
                    ] {
                        let bytes = a.seal(t, Some(&msg), b.local_id()).unwrap();
                        let p = Packet::decode(&bytes).unwrap();
                        assert_eq!(p.flags & FLAG_ENCRYPTED != 0, encryption);
                        let Opened::Signal(sig) = b.open(&bytes).unwrap() else {
                            panic!()
                        };
                        assert_eq!(sig.message, msg);
                        assert_eq!(sig.signal_type, t);
                        assert_eq!(sig.sender_id, a.local_id());
                    }
                }
                let bytes = a
                    .seal(
                        SignalType::Candidate,
                        Some(&[big.clone(), big.clone()]),
                        b.local_id(),
                    )
                    .unwrap();
                assert_eq!(
                    Packet::decode(&bytes).unwrap().flags & FLAG_COMPRESSED != 0,
                    compression
                );
            }
            let mut r1 = SignalingCodec::with_random_id(compression);
            let mut r2 = SignalingCodec::without_encryption(&identity::random_id(), compression)
                .unwrap_or_else(|_| SignalingCodec::with_random_id(compression));
            let bytes = r1
                .seal(
                    SignalType::Offer,
                    Some(std::slice::from_ref(&big)),
                    r2.local_id(),
                )
                .unwrap();
            let Opened::Signal(sig) = r2.open(&bytes).unwrap() else {
                panic!()
            };
            assert_eq!(sig.sender_id, r1.local_id());
        }
    }

    fn raw(t: u32, flags: u32, sender: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::proto::put_uint32(1, t, &mut out);
        crate::proto::put_uint32(2, flags, &mut out);
        crate::proto::put_bytes(3, sender, &mut out);
        crate::proto::put_bytes(4, payload, &mut out);
        out
    }

    #[test]
    fn receive_errors() {
        let (mut a, mut b) = pair(CodecOptions::default());
        let bs = b.sender_bytes().to_vec();
        let err = a.open(&raw(2, 0, &bs, b"[1]")).unwrap_err();
        assert_eq!(err, SignalingError::NotEncrypted);
        assert_eq!(err.code(), "SIGNALING_ERROR");
        assert_eq!(err.to_string(), "Payload is not encrypted");
        assert!(matches!(
            a.open(&raw(6, 0, &bs, b"")),
            Err(SignalingError::InvalidMessage(_))
        ));
        assert!(matches!(
            a.open(&raw(1, 0, &[5u8; 33], b"")),
            Err(SignalingError::KeyImport(_))
        ));
        assert_eq!(a.open(&raw(1, 0, &[], b"")).unwrap(), Opened::EmptySender);
        assert!(matches!(
            a.open(&[0x08]),
            Err(SignalingError::InvalidPacket(_))
        ));
        // bad tag
        let mut sealed = b
            .seal(SignalType::Answer, Some(&[json!(1)]), a.local_id())
            .unwrap();
        let n = sealed.len();
        sealed[n - 1] ^= 1;
        assert!(matches!(
            a.open(&sealed),
            Err(SignalingError::Decrypt(CryptoError::Decrypt))
        ));
        // non-array JSON, encrypted
        let key = b.identity().unwrap().shared_key(a.local_id()).unwrap();
        let ct = crypto::seal_payload(&key, &[9; 12], br#"{"a":1}"#).unwrap();
        assert!(matches!(
            a.open(&raw(3, 2, &bs, &ct)),
            Err(SignalingError::InvalidMessage(_))
        ));
        // zlib with bad Adler-32: not an inflate error, but JSON error afterwards
        let mut z = crypto::zlib_compress(b"[1,2,3,4,5,6,7,8,9,1,2,3,4,5,6,7,8,9]");
        let zn = z.len();
        z[zn - 1] ^= 0xff;
        let ct = crypto::seal_payload(&key, &[9; 12], &z).unwrap();
        assert!(matches!(
            a.open(&raw(3, 3, &bs, &ct)),
            Err(SignalingError::Json(_))
        ));
    }

    #[test]
    fn plain_receiver_quirks() {
        let o = CodecOptions {
            compression: false,
            encryption: false,
        };
        let mut a = SignalingCodec::new(ident(A), o);
        // flag bit 0 on plain JSON: accepted
        let Opened::Signal(sig) = a.open(&raw(2, 1, &[7u8; 33], br#"[{"x":1}]"#)).unwrap() else {
            panic!()
        };
        assert_eq!(sig.message, vec![json!({"x": 1})]);
        // 32-byte sender accepted
        assert!(matches!(
            a.open(&raw(2, 0, &[7u8; 32], b"[]")).unwrap(),
            Opened::Signal(_)
        ));
        // non-array JSON
        assert!(matches!(
            a.open(&raw(2, 0, &[7u8; 32], b"{}")),
            Err(SignalingError::InvalidMessage(_))
        ));
        assert!(matches!(
            a.open(&raw(2, 0, &[7u8; 32], b"nope")),
            Err(SignalingError::Json(_))
        ));
        // zip bomb limit
        a.set_max_payload_len(100);
        let z = crypto::zlib_compress(&[b' '; 10_000]);
        assert_eq!(
            a.open(&raw(2, 1, &[7u8; 33], &z)),
            Err(SignalingError::PayloadTooLarge(100))
        );
    }

    #[test]
    fn new_sender_names_only_senders_that_cost_a_derivation() {
        let (mut a, mut b) = pair(CodecOptions::default());
        let packet = a
            .seal(SignalType::Invoke, Some(&[json!({"x": 1})]), b.local_id())
            .expect("seal");
        assert_eq!(b.new_sender(&packet).as_deref(), Some(a.local_id()));
        b.open(&packet).expect("open");
        assert_eq!(b.new_sender(&packet), None, "the key is cached now");
        let own = b.seal(SignalType::Announce, None, "").expect("seal own");
        assert_eq!(b.new_sender(&own), None);
        assert_eq!(b.new_sender(b"garbage"), None);
        let (mut plain_a, plain_b) = pair(CodecOptions {
            encryption: false,
            ..CodecOptions::default()
        });
        let p = plain_a
            .seal(SignalType::Invoke, Some(&[json!(1)]), plain_b.local_id())
            .expect("seal");
        assert_eq!(plain_b.new_sender(&p), None, "no encryption, no derivation");
    }

    #[test]
    fn seal_to_invalid_id() {
        let (mut a, _) = pair(CodecOptions::default());
        assert!(matches!(
            a.seal(SignalType::Offer, Some(&[json!(1)]), "!!"),
            Err(SignalingError::EncryptionKey(_))
        ));
        assert!(a.seal(SignalType::Announce, None, "").is_ok());
        assert!(SignalingCodec::without_encryption("*", true).is_err());
    }
}
