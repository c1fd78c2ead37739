//! `[turn_rest]`: time-limited TURN credentials the daemon computes from a secret it shares
//! with the TURN server (the "TURN REST API" scheme; coturn's `use-auth-secret` with
//! `static-auth-secret`), so operators never hand out a long-lived TURN password.
//!
//! The username is `<expiry>:<user>` (expiry in Unix seconds) and the password
//! base64(HMAC-SHA1(secret, username)). Fresh credentials are computed for every new
//! connection, so a long-running daemon never uses expired ones.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

/// The `[turn_rest]` section. Off unless `urls` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnRestConfig {
    /// TURN URLs the credentials are for (`turn:203.0.113.1:3478?transport=udp`), added to
    /// every connection's ICE servers (after the room's `iceServers`).
    pub urls: Vec<String>,
    /// The secret shared with the server (coturn `static-auth-secret`).
    pub secret: String,
    /// Seconds the credentials stay valid after the connection is created.
    pub lifetime: u64,
    /// The user part of the username; the server logs it and may use it for quotas.
    pub user: String,
}

impl Default for TurnRestConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: String::new(),
            lifetime: 86_400,
            user: "peerixd".into(),
        }
    }
}

impl TurnRestConfig {
    /// Checks the section; the error says what to change.
    pub fn validate(&self) -> Result<(), DaemonError> {
        if self.urls.is_empty() {
            return Ok(());
        }
        if self.secret.is_empty() {
            return Err(DaemonError::Config(
                "turn_rest.secret: empty; set it to the TURN server's shared secret (coturn \
                 `static-auth-secret`) or remove turn_rest.urls"
                    .into(),
            ));
        }
        if self.lifetime == 0 {
            return Err(DaemonError::Config(
                "turn_rest.lifetime: must be at least 1 second (86400 is usual)".into(),
            ));
        }
        if self.user.contains(':') {
            return Err(DaemonError::Config(format!(
                "turn_rest.user = \"{}\": must not contain ':' (the username is expiry:user)",
                self.user
            )));
        }
        if let Some(u) = self
            .urls
            .iter()
            .find(|u| !(u.starts_with("turn:") || u.starts_with("turns:")))
        {
            return Err(DaemonError::Config(format!(
                "turn_rest.urls: \"{u}\" is not a turn: or turns: URL"
            )));
        }
        Ok(())
    }

    /// `(username, password)` valid until `now_unix + lifetime`.
    pub fn credentials(&self, now_unix: u64) -> (String, String) {
        let username = format!("{}:{}", now_unix.saturating_add(self.lifetime), self.user);
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(self.secret.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(username.as_bytes());
        let password =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        (username, password)
    }

    /// The ICE server to add to a new connection, with credentials computed now; `None` when
    /// the section is off.
    pub fn ice_server(&self) -> Option<peerix_rtc::IceServer> {
        if self.urls.is_empty() {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (username, credential) = self.credentials(now);
        Some(peerix_rtc::IceServer {
            urls: self.urls.clone(),
            username: Some(username),
            credential: Some(credential),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The password is what an independent HMAC-SHA1 (openssl) gives for the same secret and
    /// username, which is what coturn computes.
    #[test]
    fn credentials_follow_the_rest_scheme() {
        let cfg = TurnRestConfig {
            urls: vec!["turn:192.0.2.1:3478".into()],
            secret: "north".into(),
            lifetime: 3600,
            user: "alice".into(),
        };
        let (user, pass) = cfg.credentials(1_700_000_000);
        assert_eq!(user, "1700003600:alice");
        // printf '1700003600:alice' | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(pass, "wjwSXO2ch1B6VaLTLMy2Avn5O9o=");
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn validation_says_what_to_change() {
        let mut cfg = TurnRestConfig {
            urls: vec!["turn:192.0.2.1:3478".into()],
            ..Default::default()
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("secret"));
        cfg.secret = "s".into();
        cfg.user = "a:b".into();
        assert!(cfg.validate().is_err());
        cfg.user = "a".into();
        cfg.urls = vec!["stun:192.0.2.1".into()];
        assert!(cfg.validate().is_err());
        assert!(TurnRestConfig::default().validate().is_ok());
    }
}
