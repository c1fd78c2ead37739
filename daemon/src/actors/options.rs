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
