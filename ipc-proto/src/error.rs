//! Error codes, error bodies and the crate's error types.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A stable, machine-readable error code.
///
/// Serialised as a SCREAMING_SNAKE_CASE string. Unknown codes decode into
/// [`ErrorCode::Other`] so that older clients keep working with newer daemons.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request arguments are invalid (missing field, wrong type, bad value).
    BadRequest,
    /// The `op` of a request is not known.
    UnknownOp,
    /// The first frame of a connection was not `hello`.
    HandshakeRequired,
    /// The client's protocol version is not supported.
    VersionMismatch,
    /// A frame body was not valid MessagePack or not a known message.
    MalformedFrame,
    /// A frame length exceeded the maximum frame size.
    FrameTooLarge,
    /// The room is not joined.
    NotJoined,
    /// The room is already joined (only used where joining twice is an error).
    AlreadyJoined,
    /// The given peer is not connected in the room.
    NoSuchPeer,
    /// The given channel does not exist.
    NoSuchChannel,
    /// The given signaling driver does not exist.
    NoSuchDriver,
    /// Sending data to a peer failed.
    SendFailed,
    /// An operation timed out.
    Timeout,
    /// The operation is not supported (yet).
    NotSupported,
    /// The signaling driver reported an error.
    DriverError,
    /// An internal daemon error.
    Internal,
    /// Another client is already the room's verifier.
    VerifierTaken,
    /// The client is not the room's verifier.
    NotVerifier,
    /// A configured bound (a `limits.*` key) was hit; the message names the key.
    LimitExceeded,
    /// The client's credentials do not allow this: a request that needs full control from a
    /// read-only client, or (connection-level, fatal) a client in no access list.
    PermissionDenied,
    /// The client fell behind by more than its share of undelivered frames (connection-level,
    /// fatal): its queued frames were dropped and the connection is closed.
    ClientTooSlow,
    /// `forward`: the peer shares no track under that label (of that kind).
    NoSuchStream,
    /// `leave`: this connection holds no hold on the room, it has no persistent hold, and other
    /// connections hold it (release them all with `all: true`).
    NotHeld,
    /// A code not known to this version of the protocol crate.
    Other(String),
}

impl ErrorCode {
    /// All codes known to this crate (excluding [`ErrorCode::Other`]).
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownOp,
        ErrorCode::HandshakeRequired,
        ErrorCode::VersionMismatch,
        ErrorCode::MalformedFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::NoSuchPeer,
        ErrorCode::NoSuchChannel,
        ErrorCode::NoSuchDriver,
        ErrorCode::SendFailed,
        ErrorCode::Timeout,
        ErrorCode::NotSupported,
        ErrorCode::DriverError,
        ErrorCode::Internal,
        ErrorCode::VerifierTaken,
        ErrorCode::NotVerifier,
        ErrorCode::LimitExceeded,
        ErrorCode::PermissionDenied,
        ErrorCode::ClientTooSlow,
        ErrorCode::NoSuchStream,
        ErrorCode::NotHeld,
    ];

    /// The wire string of this code, e.g. `"BAD_REQUEST"`.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::UnknownOp => "UNKNOWN_OP",
            ErrorCode::HandshakeRequired => "HANDSHAKE_REQUIRED",
            ErrorCode::VersionMismatch => "VERSION_MISMATCH",
            ErrorCode::MalformedFrame => "MALFORMED_FRAME",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::NotJoined => "NOT_JOINED",
            ErrorCode::AlreadyJoined => "ALREADY_JOINED",
            ErrorCode::NoSuchPeer => "NO_SUCH_PEER",
            ErrorCode::NoSuchChannel => "NO_SUCH_CHANNEL",
            ErrorCode::NoSuchDriver => "NO_SUCH_DRIVER",
            ErrorCode::SendFailed => "SEND_FAILED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::NotSupported => "NOT_SUPPORTED",
            ErrorCode::DriverError => "DRIVER_ERROR",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::VerifierTaken => "VERIFIER_TAKEN",
            ErrorCode::NotVerifier => "NOT_VERIFIER",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::ClientTooSlow => "CLIENT_TOO_SLOW",
            ErrorCode::NoSuchStream => "NO_SUCH_STREAM",
            ErrorCode::NotHeld => "NOT_HELD",
            ErrorCode::Other(s) => s,
        }
    }

    /// Parses a wire string; unknown strings become [`ErrorCode::Other`].
    pub fn from_wire(s: &str) -> ErrorCode {
        ErrorCode::ALL
            .iter()
            .find(|c| c.as_str() == s)
            .cloned()
            .unwrap_or_else(|| ErrorCode::Other(s.to_owned()))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ErrorCode::from_wire(&s))
    }
}

/// An error as carried on the wire: `{code, message}`.
///
/// Used in failed replies, in connection-level `error` messages and inside
/// some event data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The machine-readable error code.
    pub code: ErrorCode,
    /// A human-readable description.
    pub message: String,
}

impl ErrorBody {
    /// Creates an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorBody {}

/// A framing error reported by [`crate::FrameDecoder`]. Framing errors are
/// fatal for the connection: the peer should send an `error` frame and close.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length prefix announced a payload larger than the configured maximum.
    #[error("frame too large: {len} bytes (max {max})")]
    TooLarge {
        /// The announced payload length.
        len: u64,
        /// The configured maximum payload length.
        max: u64,
    },
}

impl FrameError {
    /// The wire error code for this error (`FRAME_TOO_LARGE`).
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        }
    }

    /// Converts into an [`ErrorBody`] suitable for an `error` frame.
    pub fn to_error_body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}

/// Errors produced while encoding, decoding or interpreting messages.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ProtoError {
    /// A request named an op that is not known (`UNKNOWN_OP`).
    #[error("unknown op `{0}`")]
    UnknownOp(String),
    /// Request arguments were invalid (`BAD_REQUEST`); the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// A frame body was not a valid message (`MALFORMED_FRAME`).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame was (or would be) larger than allowed (`FRAME_TOO_LARGE`).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A value could not be serialised (`INTERNAL`).
    #[error("encode error: {0}")]
    Encode(String),
    /// A `hello` with a missing or wrong-typed field (`VERSION_MISMATCH` for `version`,
    /// `BAD_REQUEST` for the others).
    #[error("{}", .0.message)]
    Hello(ErrorBody),
}

impl ProtoError {
    /// The wire error code corresponding to this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::UnknownOp(_) => ErrorCode::UnknownOp,
            ProtoError::BadRequest(_) => ErrorCode::BadRequest,
            ProtoError::Malformed(_) => ErrorCode::MalformedFrame,
            ProtoError::Frame(e) => e.code(),
            ProtoError::Encode(_) => ErrorCode::Internal,
            ProtoError::Hello(b) => b.code.clone(),
        }
    }

    /// Converts into an [`ErrorBody`] for a reply or an `error` frame.
    pub fn to_error_body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}
