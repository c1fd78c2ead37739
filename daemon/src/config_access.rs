//! `[access]`: who may use the local socket, and how much. The socket file's owner, group and
//! mode decide who can connect at all; the client's credentials (SO_PEERCRED) decide its tier,
//! full control or read-only (`peerix_ipc_proto::Access`). Names are resolved when the daemon
//! starts (`ipc::access`), so a typo stops it with the key's name.

use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

/// The `[access]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Owner of the socket file: a user name or a numeric uid. Unset: the daemon's user.
    pub socket_owner: Option<String>,
    /// Group of the socket file: a group name or a numeric gid. Unset: the daemon's group.
    /// The systemd unit sets `peerix`.
    pub socket_group: Option<String>,
    /// Mode of the socket file, octal, e.g. `"0660"`. Unset: `0600` (only the daemon's user can
    /// connect). The systemd unit sets `"0660"`.
    pub socket_mode: Option<String>,
    /// Users (names or uids) with full control. Unset: the daemon's own user and root.
    pub full_users: Option<Vec<String>>,
    /// Groups (names or gids) whose members have full control. Unset: `socket_group` when it is
    /// set (whoever the socket is opened to may use it), else none.
    pub full_groups: Option<Vec<String>>,
    /// Users (names or uids) that may only observe: `status`, `peers`, `subscribe`.
    pub read_only_users: Vec<String>,
    /// Groups (names or gids) whose members may only observe.
    pub read_only_groups: Vec<String>,
}

impl AccessConfig {
    /// The socket mode, parsed; `0600` when unset.
    pub fn mode(&self) -> Result<u32, DaemonError> {
        let Some(text) = &self.socket_mode else {
            return Ok(0o600);
        };
        let digits = text.trim().trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(m),
            _ => Err(DaemonError::Config(format!(
                "access.socket_mode: {text:?} is not an octal file mode such as \"0660\" \
                 (owner and group may read and write) or \"0600\" (owner only)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_mode_is_octal_text_with_a_default_of_owner_only() {
        let mut a = AccessConfig::default();
        assert_eq!(a.mode().ok(), Some(0o600));
        a.socket_mode = Some("0660".into());
        assert_eq!(a.mode().ok(), Some(0o660));
        a.socket_mode = Some("0o666".into());
        assert_eq!(a.mode().ok(), Some(0o666));
        for bad in ["", "0999", "rw-rw----", "01777"] {
            a.socket_mode = Some(bad.into());
            let e = a.mode().expect_err(bad).to_string();
            assert!(e.contains("access.socket_mode"), "{e}");
        }
    }
}
