//! Errors of the client library.

use std::path::PathBuf;

use peerix_ipc_proto::{ErrorBody, ProtoError};
use thiserror::Error;

/// Errors returned by [`crate::Client`].
#[derive(Debug, Error)]
pub enum ClientError {
    /// Nothing listens at the socket path.
    #[error("peerixd is not running (no socket at {}); start it with `peerixd`", path.display())]
    NotRunning {
        /// The socket path that was tried.
        path: PathBuf,
        /// The underlying connect error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting failed for another reason (e.g. permissions).
    #[error("cannot connect to peerixd at {}: {source}", path.display())]
    Connect {
        /// The socket path that was tried.
        path: PathBuf,
        /// The underlying connect error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error on the established connection.
    #[error("I/O error talking to peerixd: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon refused the handshake or reported a connection-level error.
    #[error("peerixd rejected the connection: {0}")]
    Rejected(ErrorBody),
    /// The daemon speaks another protocol version.
    #[error("protocol version mismatch: client speaks {client}, peerixd speaks {daemon}")]
    VersionMismatch {
        /// Our version.
        client: u32,
        /// The daemon's version.
        daemon: u32,
    },
    /// The daemon answered something unexpected during the handshake.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// A request failed; carries the daemon's error code and message.
    #[error("{0}")]
    Daemon(ErrorBody),
    /// Encoding or decoding failed.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// A reply's result did not have the expected shape.
    #[error("unexpected result from peerixd: {0}")]
    UnexpectedResult(String),
    /// The connection is closed.
    #[error("connection to peerixd closed: {0}")]
    Closed(String),
    /// A timeout elapsed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Multi-part message reassembly failed.
    #[error("message reassembly failed: {0}")]
    Assemble(String),
}

impl ClientError {
    /// The daemon error body, if this is a failed request.
    pub fn daemon_error(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Daemon(e) | ClientError::Rejected(e) => Some(e),
            _ => None,
        }
    }
}

/// Result alias of the client library.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
