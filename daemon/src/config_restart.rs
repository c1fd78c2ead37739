//! `[ice_restart]`: when a connection to another peerixd whose path died (a NAT rebinding, an
//! address change, a long cut) restarts ICE instead of being replaced. The decisions are
//! `peerix_proto::RestartPolicy`'s; browsers are never offered a restart (Peerix recovers with
//! a new connection, wire spec §5.7).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

/// The `[ice_restart]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IceRestartConfig {
    /// Restart ICE toward other peerixd peers (`false`: such a connection fails 2 s after ICE
    /// reports `disconnected` and is replaced by a new one, as before).
    pub enabled: bool,
    /// Milliseconds of ICE `disconnected` before the impolite side offers a restart (the
    /// polite side waits twice as long, so the two rarely offer at once).
    pub after_ms: u64,
    /// Milliseconds an attempt may take to connect before the next one.
    pub attempt_timeout_ms: u64,
    /// Attempts before the connection fails and is replaced.
    pub max_attempts: u32,
}

impl Default for IceRestartConfig {
    fn default() -> Self {
        let p = peerix_proto::RestartPolicy::default();
        Self {
            enabled: true,
            after_ms: p.after.as_millis() as u64,
            attempt_timeout_ms: p.attempt_timeout.as_millis() as u64,
            max_attempts: p.max_attempts,
        }
    }
}

impl IceRestartConfig {
    /// Checks the section; the error says what to change.
    pub fn validate(&self) -> Result<(), DaemonError> {
        if self.enabled && (self.attempt_timeout_ms == 0 || self.max_attempts == 0) {
            return Err(DaemonError::Config(
                "ice_restart: attempt_timeout_ms and max_attempts must be at least 1 (1500 and \
                 2 are usual), or set enabled = false"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The room machine's policy (`None`: disabled).
    pub fn policy(&self) -> Option<peerix_proto::RestartPolicy> {
        self.enabled.then(|| peerix_proto::RestartPolicy {
            after: Duration::from_millis(self.after_ms),
            attempt_timeout: Duration::from_millis(self.attempt_timeout_ms),
            max_attempts: self.max_attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_machines_and_a_restart_that_can_never_run_is_refused() {
        let c = IceRestartConfig::default();
        assert_eq!(c.policy(), Some(peerix_proto::RestartPolicy::default()));
        c.validate().expect("defaults are valid");
        let off = IceRestartConfig {
            enabled: false,
            max_attempts: 0,
            ..c.clone()
        };
        assert_eq!(off.policy(), None);
        off.validate().expect("disabled needs no attempts");
        let never = IceRestartConfig {
            max_attempts: 0,
            ..c
        };
        let e = never.validate().expect_err("no attempts");
        assert!(e.to_string().contains("ice_restart"), "{e}");
    }
}
