//! The `verify` room option (Peerix's `verify`): who may connect to a room. The same shape comes
//! from the configuration (`room_defaults.verify`, `rooms[].verify`) and from a `join`'s
//! options; it is checked here and turned into the room machine's [`Admission`].

use std::collections::BTreeSet;
use std::time::Duration;

use peerix_ipc_proto::{VerifyFallback, VerifyMode, VerifyOptions};
use peerix_proto::{Admission, Fallback, VerifierPolicy};
use serde::{Deserialize, Serialize};

use crate::config::DaemonConfig;
use crate::error::DaemonError;

/// Default milliseconds a request waits for the verifier. Well below Peerix's 15 s
/// `connectionTimeout`: the remote's connection waits for our answer meanwhile.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default requests open at once.
pub const DEFAULT_MAX_PENDING: u64 = 64;

/// `verify`: everyone (default), an allow-list of peer ids, or a verifier client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// `all`, `allow` or `verifier`.
    pub mode: VerifyMode,
    /// Admitted peer ids (mode `allow`).
    pub allow: Vec<String>,
    /// Milliseconds a request may wait for the verifier's answer (mode `verifier`).
    pub timeout: u64,
    /// The answer when the verifier gives none in time or disconnects (mode `verifier`).
    pub fallback: VerifyFallback,
    /// Requests open at once (mode `verifier`).
    #[serde(rename = "maxPending", alias = "maxpending")]
    pub max_pending: u64,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            mode: VerifyMode::All,
            allow: Vec::new(),
            timeout: DEFAULT_TIMEOUT_MS,
            fallback: VerifyFallback::Reject,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

impl VerifyConfig {
    /// A join's `verify` option; absent fields take the built-in defaults.
    pub fn from_options(o: &VerifyOptions) -> Self {
        let d = Self::default();
        Self {
            mode: o.mode,
            allow: o.allow.clone().unwrap_or_default(),
            timeout: o.timeout.unwrap_or(d.timeout),
            fallback: o.fallback.unwrap_or(d.fallback),
            max_pending: o.max_pending.unwrap_or(d.max_pending),
        }
    }

    /// The value as the room option it came from would spell it (for `join` replies and
    /// error messages).
    pub fn to_options(&self) -> VerifyOptions {
        VerifyOptions {
            mode: self.mode,
            allow: Some(self.allow.clone()),
            timeout: Some(self.timeout),
            fallback: Some(self.fallback),
            max_pending: Some(self.max_pending),
        }
    }

    /// Checks the values; the error names the field (relative to `verify`).
    pub fn validate(&self) -> Result<(), String> {
        match self.mode {
            VerifyMode::All => {}
            VerifyMode::Allow => {
                if let Some(bad) = self.allow.iter().find(|id| id.trim().is_empty()) {
                    return Err(format!("allow: {bad:?} is not a peer id"));
                }
            }
            VerifyMode::Verifier => {
                if !(1..=60_000).contains(&self.timeout) {
                    return Err(format!(
                        "timeout: {} ms is outside 1..=60000 (a remote peer's connection waits \
                         for the answer; Peerix's default connectionTimeout is 15000)",
                        self.timeout
                    ));
                }
                if !(1..=10_000).contains(&self.max_pending) {
                    return Err(format!(
                        "maxPending: {} is outside 1..=10000",
                        self.max_pending
                    ));
                }
            }
        }
        if self.mode != VerifyMode::Allow && !self.allow.is_empty() {
            return Err("allow: only used with mode = \"allow\"".into());
        }
        Ok(())
    }

    /// The room machine's policy.
    pub fn admission(&self) -> Admission {
        match self.mode {
            VerifyMode::All => Admission::AcceptAll,
            VerifyMode::Allow => {
                Admission::AllowList(self.allow.iter().cloned().collect::<BTreeSet<_>>())
            }
            VerifyMode::Verifier => Admission::Verifier(VerifierPolicy {
                timeout: Duration::from_millis(self.timeout),
                fallback: match self.fallback {
                    VerifyFallback::Accept => Fallback::Accept,
                    VerifyFallback::Reject => Fallback::Reject,
                },
                max_pending: usize::try_from(self.max_pending).unwrap_or(usize::MAX),
            }),
        }
    }
}

/// Checks every `verify` of the configuration, naming the key at fault.
pub fn validate_config(cfg: &DaemonConfig) -> Result<(), DaemonError> {
    cfg.room_defaults
        .verify
        .validate()
        .map_err(|e| DaemonError::Config(format!("room_defaults.verify.{e}")))?;
    for r in &cfg.rooms {
        if let Some(v) = &r.verify {
            v.validate()
                .map_err(|e| DaemonError::Config(format!("rooms[{}].verify.{e}", r.id)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::config::{load, FlagOverrides};

    fn load_text(text: &str) -> Result<DaemonConfig, DaemonError> {
        let mut f = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("tempfile");
        f.write_all(text.as_bytes()).expect("write");
        load(Some(f.path()), &FlagOverrides::default(), true)
    }

    #[test]
    fn verify_is_read_from_defaults_and_rooms() {
        let c = load_text(
            "[room_defaults.verify]\nmode = \"verifier\"\ntimeout = 2500\nfallback = \"accept\"\n\
             [[rooms]]\nid = \"demo\"\nverify = { mode = \"allow\", allow = [\"abc\"] }\n",
        )
        .expect("load");
        assert_eq!(
            c.room_defaults.verify.admission(),
            Admission::Verifier(VerifierPolicy {
                timeout: Duration::from_millis(2500),
                fallback: Fallback::Accept,
                max_pending: 64,
            })
        );
        let room = c.rooms[0].verify.as_ref().expect("room verify");
        assert_eq!(
            room.admission(),
            Admission::AllowList(["abc".to_string()].into_iter().collect())
        );
        assert_eq!(
            load_text("")
                .expect("defaults")
                .room_defaults
                .verify
                .admission(),
            Admission::AcceptAll
        );
    }

    #[test]
    fn bad_verify_values_are_named() {
        for (text, key) in [
            (
                "[room_defaults.verify]\nmode = \"verifier\"\ntimeout = 0\n",
                "room_defaults.verify.timeout",
            ),
            (
                "[[rooms]]\nid = \"d\"\nverify = { mode = \"verifier\", maxPending = 0 }\n",
                "rooms[d].verify.maxPending",
            ),
            (
                "[room_defaults.verify]\nallow = [\"x\"]\n",
                "room_defaults.verify.allow",
            ),
            ("[room_defaults.verify]\nmode = \"maybe\"\n", "mode"),
        ] {
            let e = load_text(text).expect_err(text);
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }
}
