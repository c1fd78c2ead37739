//! Framing (length prefix) and MessagePack encoding / decoding.

use bytes::{Buf, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{FrameError, ProtoError};
use crate::message::{ClientMessage, DaemonMessage};

/// Length of the frame header (a big-endian `u32` payload length).
pub const FRAME_HEADER_LEN: usize = 4;

/// Maximum nesting depth accepted when decoding a frame body.
const MAX_DEPTH: usize = 128;

/// Encodes `msg` as one frame: 4-byte big-endian length, then the MessagePack
/// body (structs as maps with string keys).
///
/// Fails only if the value cannot be serialised or the body exceeds `u32::MAX`
/// bytes. Use [`encode_frame_limited`] to enforce a peer's `max_frame`.
pub fn encode_frame<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    encode_frame_limited(msg, u32::MAX as usize)
}

/// Like [`encode_frame`], but fails with [`FrameError::TooLarge`] if the body
/// is longer than `max` bytes.
pub fn encode_frame_limited<T: Serialize + ?Sized>(
    msg: &T,
    max: usize,
) -> Result<Vec<u8>, ProtoError> {
    encode_frame_sized(msg, max, 0)
}

/// Like [`encode_frame_limited`], with room for `size_hint` body bytes reserved up front.
///
/// Why: a frame carrying a megabyte of message data otherwise grows its buffer by doubling,
/// copying the data about once more on the way (measured at ~1.5 % of a receiving daemon's
/// CPU during bulk transfers).
pub fn encode_frame_sized<T: Serialize + ?Sized>(
    msg: &T,
    max: usize,
    size_hint: usize,
) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + size_hint);
    out.resize(FRAME_HEADER_LEN, 0);
    {
        let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
        msg.serialize(&mut ser)
            .map_err(|e| ProtoError::Encode(e.to_string()))?;
    }
    let len = out.len() - FRAME_HEADER_LEN;
    let max = max.min(u32::MAX as usize);
    if len > max {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: max as u64,
        }
        .into());
    }
    let len32 = u32::try_from(len).map_err(|_| ProtoError::Encode("frame too long".into()))?;
    out[..FRAME_HEADER_LEN].copy_from_slice(&len32.to_be_bytes());
    Ok(out)
}

/// Writes `msg`'s MessagePack body (structs as maps with string keys, as every frame has it) to
/// `w`, without a length prefix: for a caller that lays a frame out around a large value itself.
pub fn encode_body_into<T: Serialize + ?Sized, W: std::io::Write>(
    msg: &T,
    w: W,
) -> Result<(), ProtoError> {
    let mut ser = rmp_serde::Serializer::new(w).with_struct_map();
    msg.serialize(&mut ser)
        .map_err(|e| ProtoError::Encode(e.to_string()))
}

/// Incremental frame splitter for a byte stream.
///
/// Feed received bytes with [`FrameDecoder::push`] and drain complete frame
/// payloads with [`FrameDecoder::next_frame`]. Because every frame carries its
/// length, a payload that fails to decode does not desynchronise the stream.
/// A length prefix above the maximum is a fatal [`FrameError`]; after it the
/// decoder keeps returning that error.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// Creates a decoder that accepts payloads of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max,
            failed: None,
        }
    }

    /// The configured maximum payload length.
    pub fn max_frame(&self) -> usize {
        self.max
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The receive buffer, for reading from a socket straight into it (e.g. with tokio's
    /// `read_buf`), which saves the copy [`FrameDecoder::push`] makes. Bytes appended after a
    /// fatal error are never returned as frames.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Number of buffered bytes not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete frame payload (without the length prefix),
    /// `Ok(None)` if more bytes are needed, or an error if the announced
    /// length exceeds the maximum.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        Ok(self.next_frame_bytes()?.map(|b| b.to_vec()))
    }

    /// Like [`FrameDecoder::next_frame`], but the payload shares the decoder's buffer instead of
    /// being copied out of it.
    pub fn next_frame_bytes(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let mut hdr = [0u8; FRAME_HEADER_LEN];
        hdr.copy_from_slice(&self.buf[..FRAME_HEADER_LEN]);
        let len = u32::from_be_bytes(hdr) as u64;
        if len > self.max as u64 {
            let err = FrameError::TooLarge {
                len,
                max: self.max as u64,
            };
            self.failed = Some(err.clone());
            self.buf.clear();
            return Err(err);
        }
        let len = len as usize;
        if self.buf.len() < FRAME_HEADER_LEN + len {
            self.buf.reserve(FRAME_HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(crate::DEFAULT_MAX_FRAME)
    }
}

/// Frames shorter than this are written together with the small frames queued behind them.
pub const COALESCE_FRAME: usize = 16 * 1024;
/// At most this many bytes of small frames go out in one coalesced write.
pub const COALESCE_BYTES: usize = 64 * 1024;

/// `first` and the small frames queued right behind it (taken with `next_small(COALESCE_FRAME)`,
/// which returns the next frame only if it is shorter than that) as one buffer, for one write.
///
/// Both ends of the socket use it: a client sending many small messages gets a reply or an event
/// per message, and a write per frame cost a system call and a wake-up of the other side's reader
/// each, more than copying a few KiB. A large `first` is returned as it is, uncopied.
pub fn coalesce_frames(
    first: Vec<u8>,
    mut next_small: impl FnMut(usize) -> Option<Vec<u8>>,
) -> Vec<u8> {
    if first.len() >= COALESCE_FRAME {
        return first;
    }
    let Some(second) = next_small(COALESCE_FRAME) else {
        return first;
    };
    let mut out = Vec::with_capacity(COALESCE_BYTES.min(4 * (first.len() + second.len())));
    out.extend_from_slice(&first);
    out.extend_from_slice(&second);
    while out.len() < COALESCE_BYTES {
        match next_small(COALESCE_FRAME) {
            Some(f) => out.extend_from_slice(&f),
            None => break,
        }
    }
    out
}

/// Decodes exactly one MessagePack value of type `T` from `body`, rejecting
/// trailing bytes.
///
/// Why the borrowing deserializer: rmp_serde's `Read`-based one copies every str and bin into a
/// scratch buffer (grown by `read_to_end`) before the visitor copies it again, so each payload
/// byte was copied twice on its way into a `Value`, and each field paid a buffer refill. The
/// borrowing one hands the visitor slices of `body`; since it cannot say where it stopped, the
/// value's extent comes from [`crate::checks::value_len`], a scan that builds nothing.
fn decode_exact<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    decode_exact_with(body, || crate::checks::value_len(body))
}

/// [`decode_exact`], with the length of `body`'s first value from `len` (asked after the
/// value decoded, so that a value serde refuses is reported as serde words it).
fn decode_exact_with<T: DeserializeOwned>(
    body: &[u8],
    len: impl FnOnce() -> Result<usize, String>,
) -> Result<T, ProtoError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    de.set_max_depth(MAX_DEPTH);
    let value = T::deserialize(&mut de).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    let len = len().map_err(ProtoError::Malformed)?;
    let rest = body.len() - len;
    if rest != 0 {
        return Err(ProtoError::Malformed(format!(
            "{rest} trailing bytes after the message"
        )));
    }
    Ok(value)
}

/// Decodes a frame payload sent by a client (`hello` or `request`).
///
/// Errors are [`ProtoError::Malformed`] (wire code `MALFORMED_FRAME`), also for a message map
/// with a non-string key, or [`ProtoError::Hello`] for a `hello` whose fields are wrong (so that
/// the client learns what is wrong instead of `HANDSHAKE_REQUIRED`).
pub fn decode_client(body: &[u8]) -> Result<ClientMessage, ProtoError> {
    let ty = crate::checks::message_type(body, true).map_err(ProtoError::Malformed)?;
    let msg = match ty {
        Some("hello") => decode_exact(body).map(ClientMessage::Hello),
        Some("request") => decode_exact(body).map(ClientMessage::Request),
        other => Err(unknown_type(other, "`hello` or `request`")),
    };
    msg.map_err(|e| explain_hello(body).unwrap_or(e))
}

/// The error for a message map whose `type` is missing or not one of `expected`.
fn unknown_type(ty: Option<&str>, expected: &str) -> ProtoError {
    ProtoError::Malformed(match ty {
        Some(t) => format!("unknown message type `{t}`, expected {expected}"),
        None => format!("missing field `type` (a str: {expected})"),
    })
}

/// Why a frame that failed to decode is a bad `hello`, if it is one: `VERSION_MISMATCH` for a
/// missing or wrong-typed `version`, `BAD_REQUEST` for a wrong-typed optional field.
fn explain_hello(body: &[u8]) -> Option<ProtoError> {
    use crate::error::{ErrorBody, ErrorCode};
    use rmpv::Value;
    let v: Value = decode_exact(body).ok()?;
    let Value::Map(m) = v else { return None };
    let get = |k: &str| {
        m.iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|e| &e.1)
    };
    if get("type")?.as_str()? != "hello" {
        return None;
    }
    let speaks = crate::PROTOCOL_VERSION;
    let bad = |code, msg: String| Some(ProtoError::Hello(ErrorBody::new(code, msg)));
    match get("version") {
        None | Some(Value::Nil) => {
            return bad(
                ErrorCode::VersionMismatch,
                format!("hello: missing field `version` (this daemon speaks protocol {speaks})"),
            )
        }
        Some(v) if v.as_u64().is_none_or(|n| n > u64::from(u32::MAX)) => {
            return bad(
                ErrorCode::VersionMismatch,
                format!(
                    "hello: `version` must be an unsigned integer, got {v} (this daemon speaks \
                     protocol {speaks})"
                ),
            )
        }
        Some(_) => {}
    }
    match get("client") {
        None | Some(Value::Nil) => {}
        Some(v) if v.is_str() => {}
        Some(v) => {
            return bad(
                ErrorCode::BadRequest,
                format!("hello: `client` must be a str, got {v}"),
            )
        }
    }
    match get("capabilities") {
        None | Some(Value::Nil) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_str) => {}
        Some(v) => {
            return bad(
                ErrorCode::BadRequest,
                format!("hello: `capabilities` must be an array of str, got {v}"),
            )
        }
    }
    None
}

/// Decodes a frame payload sent by the daemon (`welcome`, `reply`, `event`,
/// `progress` or `error`).
///
/// Errors are [`ProtoError::Malformed`] (wire code `MALFORMED_FRAME`).
pub fn decode_daemon(body: &[u8]) -> Result<DaemonMessage, ProtoError> {
    let ty = crate::checks::message_type(body, false).map_err(ProtoError::Malformed)?;
    match ty {
        Some("event") => decode_exact(body).map(DaemonMessage::Event),
        Some("reply") => decode_exact(body).map(DaemonMessage::Reply),
        Some("progress") => decode_exact(body).map(DaemonMessage::Progress),
        Some("welcome") => decode_exact(body).map(DaemonMessage::Welcome),
        Some("error") => decode_exact(body).map(DaemonMessage::Error),
        other => Err(unknown_type(
            other,
            "`welcome`, `reply`, `event`, `progress` or `error`",
        )),
    }
}

/// The request id of a `reply` frame, read without decoding the frame; `None` for any other
/// message (and for a reply whose `type` or `id` is malformed: [`decode_daemon`] then says
/// what is wrong). A client routes a reply to its waiter with this, and the waiter decodes it
/// with [`decode_reply_as`] or [`decode_daemon`].
pub fn reply_id(body: &[u8]) -> Option<u64> {
    crate::checks::reply_id(body)
}

/// A `reply` frame's outcome with its result decoded straight into `T`: `Ok(Ok(result))`,
/// `Ok(Err(error))` for a failed request, [`ProtoError::Malformed`] for a frame that is no
/// reply, has a non-string key or whose result is not a `T` ([`ProtoError::BadRequest`], as
/// from [`from_value`], when the result is absent or nil and `T` cannot be nil).
///
/// Why: through [`decode_daemon`] the result became an [`rmpv::Value`] tree (an allocation
/// per field) that [`from_value`] then encoded and decoded again; for a small request (a
/// `send` of 1 KiB) that was a quarter of what the client's reader thread spent on it
/// (BENCHMARKS.md, session 19). Maps must still use string keys: the bytes are checked first.
pub fn decode_reply_as<T: DeserializeOwned>(
    body: &[u8],
) -> Result<Result<T, crate::ErrorBody>, ProtoError> {
    #[derive(serde::Deserialize)]
    struct TypedReply<T> {
        ok: bool,
        #[serde(default = "none")]
        result: Option<T>,
        #[serde(default)]
        error: Option<crate::ErrorBody>,
    }
    fn none<T>() -> Option<T> {
        None
    }
    if crate::checks::reply_id(body).is_none() {
        return Err(ProtoError::Malformed(
            "not a `reply` with an unsigned integer `id`".to_string(),
        ));
    }
    // One walk both checks the keys and finds where the value ends.
    let len = crate::checks::raw_string_keys(body).map_err(ProtoError::Malformed)?;
    let reply: TypedReply<T> = decode_exact_with(body, || Ok(len))?;
    if !reply.ok {
        return Ok(Err(reply.error.unwrap_or_else(|| {
            crate::ErrorBody::new(
                crate::ErrorCode::Internal,
                "request failed without an error body",
            )
        })));
    }
    match reply.result {
        Some(result) => Ok(Ok(result)),
        // An absent or nil result is what the Value route read as `Nil`.
        None => from_value(rmpv::Value::Nil).map(Ok),
    }
}

/// Serialises any value into an [`rmpv::Value`] (structs become maps with
/// string keys, byte buffers become `bin`).
pub fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<rmpv::Value, ProtoError> {
    let bytes = rmp_serde::to_vec_named(v).map_err(|e| ProtoError::Encode(e.to_string()))?;
    decode_exact::<rmpv::Value>(&bytes).map_err(|e| ProtoError::Encode(e.to_string()))
}

/// Deserialises a typed value from an [`rmpv::Value`]; failures are
/// [`ProtoError::BadRequest`].
pub fn from_value<T: DeserializeOwned>(v: rmpv::Value) -> Result<T, ProtoError> {
    // A struct would take an integer key as a field position (PROTOCOL.md §2: string keys).
    crate::checks::string_keys(&v, "").map_err(ProtoError::BadRequest)?;
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, &v).map_err(|e| ProtoError::Encode(e.to_string()))?;
    // Borrowing, for the reason given at `decode_exact`.
    let mut de = rmp_serde::Deserializer::from_read_ref(&buf[..]);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de).map_err(|e| ProtoError::BadRequest(e.to_string()))
}

/// `serde(default)` helper producing `Nil`.
pub(crate) fn nil() -> rmpv::Value {
    rmpv::Value::Nil
}
