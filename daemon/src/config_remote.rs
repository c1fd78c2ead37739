//! `[remote]`: what one remote peer may make this daemon hold or do (issue 10, hostile peers).
//! Its own file so that `config.rs` stays a list of sections.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

/// Bounds on a remote peer's connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteLimits {
    /// User channels a remote peer may have open (by opening them or asking us to) on one
    /// connection; further ones are closed at once with a rate-limited `error` event. Labels
    /// local clients opened do not count.
    pub max_channels_per_connection: usize,
    /// Largest message reassembled from a remote peer on one channel, in bytes: a transfer is
    /// cut with `channel:error` as soon as a frame would take it past this. Besides the total,
    /// it bounds what one channel buffers at once across its open transfers (all of a JSON
    /// message, which is delivered whole; up to `ipc.inline_message_limit` of others).
    pub max_message_size: u64,
    /// An incoming transfer that received no frame for this long, while its channel stays
    /// open, is cut with `channel:error` and its buffer released. 0 = never.
    pub transfer_idle_timeout_ms: u64,
}

impl Default for RemoteLimits {
    fn default() -> Self {
        Self {
            max_channels_per_connection: 64,
            max_message_size: 256 << 20,
            transfer_idle_timeout_ms: 30_000,
        }
    }
}

impl RemoteLimits {
    /// The idle timeout, `None` for never.
    pub fn transfer_idle_timeout(&self) -> Option<Duration> {
        (self.transfer_idle_timeout_ms > 0)
            .then(|| Duration::from_millis(self.transfer_idle_timeout_ms))
    }

    /// Refuses values that cannot work.
    pub fn validate(&self) -> Result<(), DaemonError> {
        if self.max_channels_per_connection == 0 {
            return Err(DaemonError::Config(
                "remote.max_channels_per_connection: must be at least 1 (a remote peer needs a \
                 channel for every label it shares with us)"
                    .into(),
            ));
        }
        if self.max_message_size < 16 * 1024 || self.max_message_size > usize::MAX as u64 {
            return Err(DaemonError::Config(format!(
                "remote.max_message_size: {} is outside 16384..={} bytes",
                self.max_message_size,
                usize::MAX
            )));
        }
        Ok(())
    }
}
