//! Room options and driver settings as the `Daemon` applies them: a join's Peerix option
//! overrides merged over the configured defaults, and the signaling crate's NATS settings.

use peerix_ipc_proto::{JoinOptions, OptionFlag};
use peerix_signaling::NatsConfig;

use crate::config::{NatsDriverConfig, RoomOptions};
use crate::error::DaemonError;

fn flag(f: &Option<OptionFlag>) -> Option<bool> {
    match f {
        None => None,
        Some(OptionFlag::Bool(b)) => Some(*b),
        // Peerix accepts an algorithm name where a flag is expected; any name means "on".
        Some(OptionFlag::Name(_)) => Some(true),
    }
}

/// Applies per-join overrides (Peerix option names) to the daemon's room defaults.
pub fn merge_options(
    defaults: &RoomOptions,
    o: Option<&JoinOptions>,
) -> Result<RoomOptions, DaemonError> {
    let mut out = defaults.clone();
    let Some(o) = o else { return Ok(out) };
    if let Some(v) = flag(&o.namespace_hashing) {
        out.namespace_hashing = v;
    }
    if let Some(v) = flag(&o.signaling_compression) {
        out.signaling_compression = v;
    }
    if let Some(v) = flag(&o.signaling_encryption) {
        out.signaling_encryption = v;
    }
    if let Some(v) = o.connection_timeout {
        out.connection_timeout = v;
    }
    if let Some(v) = o.ice_candidate_debounce {
        out.ice_candidate_debounce = v;
    }
    if let Some(servers) = &o.ice_servers {
        out.ice_servers = servers
            .iter()
            .map(|s| crate::config::IceServerConfig {
                urls: s.urls.clone(),
                username: s.username.clone(),
                credential: s.credential.clone(),
            })
            .collect();
    }
    if let Some(p) = o.ice_transport_policy {
        out.ice_transport_policy = match p {
            peerix_ipc_proto::IceTransportPolicy::All => crate::config::IceTransportPolicy::All,
            peerix_ipc_proto::IceTransportPolicy::Relay => crate::config::IceTransportPolicy::Relay,
        };
    }
    if let Some(v) = &o.verify {
        let v = crate::admission::VerifyConfig::from_options(v);
        v.validate()
            .map_err(|e| DaemonError::BadRequest(format!("join: options.verify.{e}")))?;
        out.verify = v;
    }
    Ok(out)
}

/// The signaling crate's NATS configuration from ours.
pub fn nats_config(n: &NatsDriverConfig) -> NatsConfig {
    NatsConfig {
        servers: n.servers.clone(),
        prefix: n.prefix.clone(),
        user: n.user.clone(),
        password: n.password.clone(),
        token: n.token.clone(),
        nkey_seed: n.nkey_seed.clone(),
        creds_file: n.creds_file.clone(),
        tls_ca_file: n.tls_ca_file.clone(),
        tls_client_cert: n.tls_client_cert.clone(),
        tls_client_key: n.tls_client_key.clone(),
        require_tls: n.require_tls,
        connect_timeout: std::time::Duration::from_millis(n.connect_timeout),
        ..NatsConfig::default()
    }
}

/// Which ICE settings a join set itself (Peerix's `iceServers` and `iceTransportPolicy`). A
/// reload's new defaults reach a joined room only where its join left them to the defaults:
/// an app that chose its own TURN server keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnIce {
    /// The join gave `iceServers`.
    pub servers: bool,
    /// The join gave `iceTransportPolicy`.
    pub policy: bool,
}

impl OwnIce {
    /// What `o` overrides.
    pub fn of(o: Option<&JoinOptions>) -> Self {
        Self {
            servers: o.is_some_and(|o| o.ice_servers.is_some()),
            policy: o.is_some_and(|o| o.ice_transport_policy.is_some()),
        }
    }
}

/// Applies reloaded defaults' ICE settings to a joined room's `options`, except those its join
/// set; returns whether anything changed.
pub fn reapply_ice(defaults: &RoomOptions, own: OwnIce, options: &mut RoomOptions) -> bool {
    let mut changed = false;
    if !own.servers && options.ice_servers != defaults.ice_servers {
        options.ice_servers.clone_from(&defaults.ice_servers);
        changed = true;
    }
    if !own.policy && options.ice_transport_policy != defaults.ice_transport_policy {
        options.ice_transport_policy = defaults.ice_transport_policy;
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IceServerConfig, IceTransportPolicy};

    fn stun(url: &str) -> Vec<IceServerConfig> {
        vec![IceServerConfig {
            urls: vec![url.into()],
            username: None,
            credential: None,
        }]
    }

    #[test]
    fn reload_reaches_only_what_the_join_left_to_the_defaults() {
        let defaults = RoomOptions {
            ice_servers: stun("stun:new.example:3478"),
            ice_transport_policy: IceTransportPolicy::Relay,
            ..Default::default()
        };

        let mut plain = RoomOptions::default();
        assert!(reapply_ice(&defaults, OwnIce::default(), &mut plain));
        assert_eq!(plain.ice_servers, defaults.ice_servers);
        assert_eq!(plain.ice_transport_policy, IceTransportPolicy::Relay);
        assert!(!reapply_ice(&defaults, OwnIce::default(), &mut plain));

        let mut own = RoomOptions {
            ice_servers: stun("stun:mine.example:3478"),
            ..Default::default()
        };
        let join = JoinOptions {
            ice_servers: Some(vec![]),
            ..Default::default()
        };
        assert!(reapply_ice(&defaults, OwnIce::of(Some(&join)), &mut own));
        assert_eq!(own.ice_servers, stun("stun:mine.example:3478"));
        assert_eq!(own.ice_transport_policy, IceTransportPolicy::Relay);
    }
}
