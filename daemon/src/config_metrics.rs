//! `[metrics]`: the optional Prometheus endpoint (`metrics.rs`). Off unless `listen` is set.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The `[metrics]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Loopback address to serve `GET /metrics` on, e.g. `"127.0.0.1:9464"`. Absent: no
    /// endpoint. Only loopback addresses are accepted: the figures name rooms and peers, and
    /// the endpoint has no access control (put a proxy in front to export them).
    pub listen: Option<SocketAddr>,
}

impl MetricsConfig {
    /// Checks the section; the error says what to change.
    pub fn validate(&self) -> Result<(), crate::error::DaemonError> {
        match self.listen {
            Some(a) if !a.ip().is_loopback() => Err(crate::error::DaemonError::Config(format!(
                "metrics.listen = \"{a}\" is not a loopback address: use 127.0.0.1 or [::1] (the endpoint has no access control)"
            ))),
            _ => Ok(()),
        }
    }
}
