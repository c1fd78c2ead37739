//! Errors returned by signaling drivers.

/// Error returned by driver constructors and operations.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The driver was closed; it cannot subscribe any more.
    #[error("signaling driver ({0}) is closed")]
    Closed(&'static str),
    /// The message does not fit the transport (local datagrams are capped).
    #[error("{driver}: message too large ({size} bytes, limit {max} bytes)")]
    PayloadTooLarge {
        /// Driver kind.
        driver: &'static str,
        /// Size that was attempted (namespace framing included for `local`).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The namespace cannot be used with this transport.
    #[error("{driver}: invalid namespace {namespace:?}: {reason}")]
    InvalidNamespace {
        /// Driver kind.
        driver: &'static str,
        /// The offending namespace.
        namespace: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An I/O error in the local driver, with what was being done.
    #[error("local: {context}: {source}")]
    Io {
        /// What the driver was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Invalid driver configuration.
    #[error("{0}")]
    Config(String),
    /// Could not connect to NATS (message is user-facing, starts with "nats: ").
    #[error("{0}")]
    NatsConnect(String),
    /// Another NATS error (message is user-facing, starts with "nats: ").
    #[error("{0}")]
    Nats(String),
    /// The driver does not exist on this platform.
    #[error("the {0} signaling driver is not supported on this platform")]
    NotSupported(&'static str),
}
