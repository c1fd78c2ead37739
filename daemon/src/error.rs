//! Typed daemon errors, each mapped to a stable IPC error code.

use peerix_ipc_proto::ErrorCode;

/// Everything a daemon operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Configuration is invalid; the message names the key.
    #[error("configuration: {0}")]
    Config(String),
    /// A request's arguments are invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The room is not joined.
    #[error("room {0:?} is not joined")]
    NotJoined(String),
    /// No such remote peer in the room.
    #[error("no peer {peer:?} in room {room:?}")]
    NoSuchPeer {
        /// Room name.
        room: String,
        /// Remote peer id.
        peer: String,
    },
    /// No open channel with that label (the message names the label and the room).
    #[error("no channel {0}")]
    NoSuchChannel(String),
    /// Unknown signaling driver.
    #[error("no driver {0:?} (configure it, e.g. [drivers.nats] or --nats URL)")]
    NoSuchDriver(String),
    /// A driver failed.
    #[error("driver {driver}: {message}")]
    Driver {
        /// Driver name.
        driver: String,
        /// What happened.
        message: String,
    },
    /// Sending failed.
    #[error("send failed: {0}")]
    SendFailed(String),
    /// Timed out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Not implemented yet.
    #[error("{0} is not supported yet")]
    NotSupported(String),
    /// A bug or an actor that went away.
    #[error("internal error: {0}")]
    Internal(String),
    /// Another client is the room's verifier.
    #[error("another client is already the verifier of room {0:?}; it must release it (or disconnect) first")]
    VerifierTaken(String),
    /// The client is not the room's verifier.
    #[error(
        "this client is not the verifier of room {0:?}; register with the `verifier` op first"
    )]
    NotVerifier(String),
    /// A configured bound was hit (the message names the `limits.*` key).
    #[error("{0}")]
    LimitExceeded(String),
    /// `forward` of a label (or kind) the peer does not share.
    #[error("{0}")]
    NoSuchStream(String),
    /// `leave` from a connection that does not hold the room, which others hold.
    #[error(
        "this client does not hold room {room:?}; it is held by {by}; `leave` with `all: true` \
         (peerix leave --all) releases every hold and leaves the room for all of them"
    )]
    NotHeld {
        /// Room name.
        room: String,
        /// The holding clients, e.g. `"app" (session 3)`.
        by: String,
    },
    /// I/O, e.g. the socket.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl DaemonError {
    /// The stable code sent to IPC clients.
    pub fn code(&self) -> ErrorCode {
        match self {
            DaemonError::Config(_) | DaemonError::BadRequest(_) => ErrorCode::BadRequest,
            DaemonError::NotJoined(_) => ErrorCode::NotJoined,
            DaemonError::NoSuchPeer { .. } => ErrorCode::NoSuchPeer,
            DaemonError::NoSuchChannel(_) => ErrorCode::NoSuchChannel,
            DaemonError::NoSuchDriver(_) => ErrorCode::NoSuchDriver,
            DaemonError::Driver { .. } => ErrorCode::DriverError,
            DaemonError::SendFailed(_) => ErrorCode::SendFailed,
            DaemonError::Timeout(_) => ErrorCode::Timeout,
            DaemonError::VerifierTaken(_) => ErrorCode::VerifierTaken,
            DaemonError::NotVerifier(_) => ErrorCode::NotVerifier,
            DaemonError::NotSupported(_) => ErrorCode::NotSupported,
            DaemonError::Internal(_) | DaemonError::Io { .. } => ErrorCode::Internal,
            DaemonError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            DaemonError::NoSuchStream(_) => ErrorCode::NoSuchStream,
            DaemonError::NotHeld { .. } => ErrorCode::NotHeld,
        }
    }
}

impl From<actix::MailboxError> for DaemonError {
    fn from(e: actix::MailboxError) -> Self {
        DaemonError::Internal(format!("actor unavailable: {e}"))
    }
}
