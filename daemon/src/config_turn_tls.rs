//! `[turn_tls]`: how the certificates of `turns:` servers are verified.
//!
//! TURN over TLS (`turn_stream.rs` in peerix-rtc) checks the server's certificate against the
//! system's roots and, for a server with a private CA or a self-signed certificate, the CA
//! file configured here; the name checked is the URL's host.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

/// The `[turn_tls]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnTlsConfig {
    /// A PEM file of CA certificates trusted for `turns:` servers besides the system's
    /// roots (the server's own certificate when it is self-signed).
    pub ca_file: Option<PathBuf>,
}

impl TurnTlsConfig {
    /// Reads the CA file and installs it for connections made from now on (a reload
    /// replaces it); the error says what to change.
    pub fn validate(&self) -> Result<(), DaemonError> {
        peerix_rtc::configure_turn_tls(self.ca_file.as_deref())
            .map_err(|e| DaemonError::Config(format!("turn_tls.ca_file: {e}")))
    }
}
