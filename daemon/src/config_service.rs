//! `[service]`: what peerixd needs to run as a system service: where its state lives and
//! whether its identity survives a restart.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Whether the machine key is kept across runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    /// Persistent when a state directory is known (`service.state_dir`, or systemd's
    /// `$STATE_DIRECTORY`), ephemeral otherwise. A daemon started by hand without a state
    /// directory behaves like a browser tab; under systemd it keeps its ids.
    #[default]
    Auto,
    /// Kept in `<state_dir>/identity.key`; a state directory is required.
    Persistent,
    /// A fresh key every run, like a browser: every room id changes on restart.
    Ephemeral,
}

/// The `[service]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// `auto`, `persistent` or `ephemeral` (see [`IdentityMode`]).
    pub identity: IdentityMode,
    /// Where the machine key lives. Default: the first entry of `$STATE_DIRECTORY`, which
    /// systemd sets from `StateDirectory=`.
    pub state_dir: Option<PathBuf>,
}

impl ServiceConfig {
    /// The state directory: configured, or systemd's `$STATE_DIRECTORY`.
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.state_dir_with(std::env::var_os("STATE_DIRECTORY"))
    }

    /// [`ServiceConfig::state_dir`] with `$STATE_DIRECTORY` given (tests).
    pub fn state_dir_with(&self, env: Option<std::ffi::OsString>) -> Option<PathBuf> {
        if let Some(d) = self
            .state_dir
            .as_ref()
            .filter(|d| !d.as_os_str().is_empty())
        {
            return Some(d.clone());
        }
        // systemd joins several StateDirectory= entries with ':'; ours is the first.
        let env = env?;
        let first = env.to_string_lossy().split(':').next()?.to_string();
        (!first.is_empty()).then(|| PathBuf::from(first))
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), crate::error::DaemonError> {
        if self.identity == IdentityMode::Persistent && self.state_dir().is_none() {
            return Err(crate::error::DaemonError::Config(
                "service.identity: \"persistent\" needs a state directory: set service.state_dir \
                 or run under systemd with StateDirectory="
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_prefers_config_then_first_systemd_entry() {
        let mut c = ServiceConfig::default();
        assert_eq!(c.state_dir_with(None), None);
        assert_eq!(
            c.state_dir_with(Some("/var/lib/peerix:/var/lib/other".into())),
            Some(PathBuf::from("/var/lib/peerix"))
        );
        c.state_dir = Some("/srv/p".into());
        assert_eq!(
            c.state_dir_with(Some("/var/lib/peerix".into())),
            Some(PathBuf::from("/srv/p"))
        );
    }
}
