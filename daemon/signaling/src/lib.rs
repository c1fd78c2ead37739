//! Signaling transports ("drivers") for peerixd.
//!
//! A driver is a fan-out pub/sub of opaque byte messages on string namespaces:
//! at-most-once, no history, and the publisher may receive its own messages
//! (the signaling layer drops packets whose sender is itself). See
//! `peerix-wire-protocol.md` §3 and this crate's `README.md`.
//!
//! Three drivers are provided:
//! * [`MemoryDriver`] — in-process, for tests and for several rooms in one process;
//! * [`LocalDriver`] — same-host discovery over Unix datagram sockets in a shared
//!   directory, no server needed (the daemon's default; Unix only);
//! * [`NatsDriver`] — wire-compatible with Peerix's `NatsDriver`.
//!
//! Drivers never call back into the caller: everything they observe is sent
//! through the [`DriverEvent`] channel handed to their constructor, which keeps
//! them usable from an actix (current-thread + `LocalSet`) runtime.

#![warn(missing_docs)]

mod config;
mod error;
mod local;
mod memory;
mod nats;

pub use config::{connect_driver, DriverConfig};
pub use error::DriverError;
pub use local::{default_local_dir, LocalConfig, LocalDriver, MAX_LOCAL_DATAGRAM};
pub use memory::{MemoryDriver, MemoryHub};
pub use nats::{check_server_url, NatsConfig, NatsDriver};

/// A signaling namespace (room or personal subject suffix), e.g. a 43-character hash.
pub type Namespace = String;

/// Something a driver reports to its owner.
#[derive(Debug, Clone)]
pub enum DriverEvent {
    /// A message published on a namespace this driver is subscribed to.
    Message {
        /// The namespace the message was published on.
        namespace: String,
        /// The opaque message bytes, exactly as published.
        payload: bytes::Bytes,
    },
    /// Liveness changed (true = can publish; on a transition to true the room re-announces).
    Active(bool),
    /// A non-fatal error worth reporting to users (e.g. "nats: connection refused at 127.0.0.1:4222; is nats-server running?").
    Error(String),
}

/// A signaling transport. Drivers are active when their constructor returns and
/// report later liveness transitions through [`DriverEvent::Active`].
#[async_trait::async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Short kind name: "memory", "local", "nats".
    fn kind(&self) -> &'static str;
    /// Whether a publish now would be sent (false while disconnected or after close).
    fn is_active(&self) -> bool;
    /// Start delivering messages of `namespace`. Reference-counted: N subscribes
    /// need N unsubscribes, and a message is still delivered once per driver.
    async fn subscribe(&self, namespace: &str) -> Result<(), DriverError>;
    /// Drop one reference to `namespace`; delivery stops when the count reaches zero.
    /// Unsubscribing a namespace that is not subscribed is a no-op.
    async fn unsubscribe(&self, namespace: &str) -> Result<(), DriverError>;
    /// While inactive, publishes are dropped silently (Ok), as Peerix does.
    async fn publish(&self, namespace: &str, payload: bytes::Bytes) -> Result<(), DriverError>;
    /// Stop background tasks and release sockets; idempotent.
    async fn close(&self);
}

/// Reference-counted subscription set shared by the drivers.
///
/// Returns whether the call changed the effective subscription (first
/// subscribe / last unsubscribe), which is when a driver must act.
#[derive(Debug, Default)]
pub(crate) struct RefCounts {
    counts: std::collections::HashMap<String, usize>,
}

impl RefCounts {
    /// Add a reference; true if this is the first one.
    pub(crate) fn add(&mut self, namespace: &str) -> bool {
        let count = self.counts.entry(namespace.to_owned()).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Remove a reference; true if this was the last one.
    pub(crate) fn remove(&mut self, namespace: &str) -> bool {
        match self.counts.get_mut(namespace) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                self.counts.remove(namespace);
                true
            }
            None => false,
        }
    }

    pub(crate) fn contains(&self, namespace: &str) -> bool {
        self.counts.contains_key(namespace)
    }

    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &String> {
        self.counts.keys()
    }

    pub(crate) fn drain(&mut self) -> Vec<String> {
        self.counts.drain().map(|(k, _)| k).collect()
    }
}
