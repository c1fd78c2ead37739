//! Daemon configuration: layered with the `config` crate.
//!
//! Precedence, lowest first: built-in defaults < `/etc/peerix/peerixd.toml` < the user's config dir
//! (`~/.config/peerix/peerixd.toml`) < `--config FILE` < `PEERIX_*` environment < command-line flags.
//! Every struct denies unknown keys so that a typo is reported with the key's name instead of being
//! silently ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use crate::error::DaemonError;

#[path = "config_load.rs"]
mod load;
pub use load::{load, user_config_file, SYSTEM_CONFIG_FILE};

/// The default maximum IPC frame (16 MiB), mirrored from the protocol crate.
pub const DEFAULT_MAX_FRAME: u64 = peerix_ipc_proto::DEFAULT_MAX_FRAME as u64;

/// Top-level daemon configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Path of the IPC socket. Empty means the platform default.
    pub socket: Option<PathBuf>,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax.
    pub log: String,
    /// Name of the driver rooms use unless `join --driver` names another.
    pub default_driver: String,
    /// Local IPC limits.
    pub ipc: IpcConfig,
    /// Signaling drivers.
    pub drivers: DriversConfig,
    /// Defaults for every room, with Peerix's option names.
    pub room_defaults: RoomOptions,
    /// Rooms joined at start.
    pub rooms: Vec<RoomConfig>,
    /// WebRTC stack tuning.
    pub webrtc: WebrtcConfig,
    /// Bounds on queues fed by remote peers and clients (`config_limits.rs`).
    pub limits: crate::config_limits::LimitsConfig,
    /// What one remote peer may make the daemon hold or do.
    pub remote: crate::config_remote::RemoteLimits,
    /// Who may use the local socket, and how much (`[access]`).
    pub access: access::AccessConfig,
    /// Running as a service: state directory, persistent identity (`[service]`).
    pub service: crate::config_service::ServiceConfig,
    /// Optional Prometheus endpoint (`[metrics]`, `metrics.rs`).
    pub metrics: crate::config_metrics::MetricsConfig,
    /// Time-limited TURN credentials from a shared secret (`[turn_rest]`, `config_turn.rs`).
    pub turn_rest: crate::config_turn::TurnRestConfig,
    /// ICE restarts toward other peerixd peers (`[ice_restart]`, `config_restart.rs`).
    pub ice_restart: crate::config_restart::IceRestartConfig,
    /// Certificate checks of `turns:` servers (`[turn_tls]`, `config_turn_tls.rs`).
    pub turn_tls: crate::config_turn_tls::TurnTlsConfig,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            socket: None,
            log: "info,webrtc=warn,rtc=warn,rtc_ice=warn,rtc_sctp=warn,rtc_dtls=warn,rtc_mdns=warn"
                .into(),
            default_driver: "local".into(),
            ipc: IpcConfig::default(),
            drivers: DriversConfig::default(),
            room_defaults: RoomOptions::default(),
            rooms: Vec::new(),
            webrtc: WebrtcConfig::default(),
            limits: Default::default(),
            remote: Default::default(),
            access: access::AccessConfig::default(),
            service: Default::default(),
            metrics: Default::default(),
            turn_rest: Default::default(),
            ice_restart: Default::default(),
            turn_tls: Default::default(),
        }
    }
}

/// Limits of the local IPC protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpcConfig {
    /// Largest frame accepted from or sent to a client, in bytes.
    pub max_frame: u64,
    /// A received message larger than this is delivered as several `channel:message` parts.
    pub inline_message_limit: u64,
    /// Largest message accepted from a remote peer or a client, in bytes.
    pub max_message_size: u64,
    /// Bytes of undelivered events a client may fall behind before it is disconnected.
    pub client_queue_limit: u64,
    /// Bytes of undelivered frames all clients together may fall behind; past it, the client
    /// furthest behind is disconnected.
    pub client_queue_budget: u64,
    // Issue 11 (delivery): replay buffer, slow clients, per-room inbox.
    /// Most recent events kept for replay (`subscribe` with `since`, slow clients catching up).
    pub replay_events: usize,
    /// Bytes (encoded size estimate) of the events kept for replay.
    pub replay_bytes: u64,
    /// Bytes of undelivered frames past which a client is sent no more events until its
    /// queue drains below half of it; it then catches up from the replay buffer.
    pub lag_limit: u64,
    /// Messages kept per room when no client subscribed to them (the `inbox` op takes them).
    pub inbox_events: usize,
    /// Bytes (encoded size estimate) of the messages kept per room.
    pub inbox_bytes: u64,
}

impl Default for IpcConfig {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            // Parts of 256 KiB: a 1 MiB message then reaches the client while it arrives, and
            // only its last quarter is left to deliver after the last frame (BENCHMARKS.md,
            // "Issue 14, part 2: one message's throughput").
            // 64 KiB, not 256: a part goes to the client while the rest of the message is
            // still on the wire, so the last part after the final frame is small (BENCHMARKS.md,
            // session 15: 256 KiB messages 0.56–0.69× → 0.66–0.77× of the raw pair).
            inline_message_limit: 64 << 10,
            max_message_size: 1 << 30,
            client_queue_limit: 256 << 20,
            client_queue_budget: 256 << 20,
            replay_events: 4096,
            replay_bytes: 16 << 20,
            lag_limit: 8 << 20,
            inbox_events: 1024,
            inbox_bytes: 16 << 20,
        }
    }
}

/// Configured signaling drivers. `local` and `memory` always exist.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriversConfig {
    /// Same-host discovery through datagram sockets in a shared directory.
    pub local: LocalDriverConfig,
    /// NATS; present only when configured.
    pub nats: Option<NatsDriverConfig>,
}

/// The `local` driver.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalDriverConfig {
    /// Rendezvous directory shared by all daemons of this host (default under `$XDG_RUNTIME_DIR`).
    pub dir: Option<PathBuf>,
}

/// The `nats` driver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsDriverConfig {
    /// Server URLs, e.g. `nats://127.0.0.1:4222`.
    pub servers: Vec<String>,
    /// Subject prefix, concatenated without separator (Peerix's NatsDriver default is empty).
    pub prefix: String,
    /// User name for user/password authentication.
    pub user: Option<String>,
    /// Password for user/password authentication.
    pub password: Option<String>,
    /// Token authentication.
    pub token: Option<String>,
    /// NKey seed (`SU...`).
    pub nkey_seed: Option<String>,
    /// A `.creds` file (JWT + NKey).
    pub creds_file: Option<PathBuf>,
    /// CA bundle to verify the server.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    pub tls_client_cert: Option<PathBuf>,
    /// Client key for mutual TLS.
    pub tls_client_key: Option<PathBuf>,
    /// Refuse plain-text connections.
    pub require_tls: bool,
    /// Initial connection timeout in milliseconds.
    pub connect_timeout: u64,
}

impl Default for NatsDriverConfig {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".into()],
            prefix: String::new(),
            user: None,
            password: None,
            token: None,
            nkey_seed: None,
            creds_file: None,
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
            require_tls: false,
            connect_timeout: 5000,
        }
    }
}

/// One ICE server, as in `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:` or `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default)]
    pub credential: Option<String>,
}

/// Room options with Peerix's names and defaults (spec §2.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomOptions {
    /// Hash namespaces with SHA-256 + base62.
    #[serde(rename = "namespaceHashing", alias = "namespacehashing")]
    pub namespace_hashing: bool,
    /// zlib-compress signaling payloads when it makes them shorter.
    #[serde(rename = "signalingCompression", alias = "signalingcompression")]
    pub signaling_compression: bool,
    /// AES-256-GCM-encrypt signaling payloads (must match room-wide).
    #[serde(rename = "signalingEncryption", alias = "signalingencryption")]
    pub signaling_encryption: bool,
    /// Milliseconds a connection may take to reach ICE connected (or stay disconnected).
    #[serde(rename = "connectionTimeout", alias = "connectiontimeout")]
    pub connection_timeout: u64,
    /// Milliseconds of trailing-edge debounce for candidates sent over signaling.
    #[serde(rename = "iceCandidateDebounce", alias = "icecandidatedebounce")]
    pub ice_candidate_debounce: u64,
    /// STUN and TURN servers. None are used unless configured.
    #[serde(rename = "iceServers", alias = "iceservers")]
    pub ice_servers: Vec<IceServerConfig>,
    /// `all` or `relay`.
    #[serde(rename = "iceTransportPolicy", alias = "icetransportpolicy")]
    pub ice_transport_policy: IceTransportPolicy,
    /// Who may connect (Peerix's `verify`): everyone, an allow-list, or a verifier client.
    pub verify: crate::admission::VerifyConfig,
}

impl Default for RoomOptions {
    fn default() -> Self {
        Self {
            namespace_hashing: true,
            signaling_compression: true,
            signaling_encryption: true,
            connection_timeout: 15_000,
            ice_candidate_debounce: 50,
            ice_servers: Vec::new(),
            ice_transport_policy: IceTransportPolicy::All,
            verify: Default::default(),
        }
    }
}

impl RoomOptions {
    /// The connection timeout as a duration. Peerix's `0` kills every connection at once (a bug,
    /// spec §5.7); we treat 0 as "disabled" as Peerix documents.
    pub fn connection_timeout(&self) -> Option<Duration> {
        (self.connection_timeout > 0).then(|| Duration::from_millis(self.connection_timeout))
    }
}

/// `iceTransportPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    /// Every candidate type.
    All,
    /// TURN relays only.
    Relay,
}

/// A room joined at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomConfig {
    /// The Peerix room id.
    pub id: String,
    /// Join metadata (any JSON value).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// Driver name; the daemon default when absent.
    #[serde(default)]
    pub driver: Option<String>,
    /// Labels opened as soon as the room is joined.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Who may connect, instead of `room_defaults.verify`.
    #[serde(default)]
    pub verify: Option<crate::admission::VerifyConfig>,
}

/// WebRTC stack tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    /// Resolve remote mDNS (`.local`) candidates, as browsers hide host addresses behind them.
    pub mdns: bool,
    /// SO_RCVBUF for ICE sockets, in bytes (capped by the kernel's `rmem_max`).
    pub udp_recv_buffer: usize,
    /// Largest single data-channel message we accept (`a=max-message-size`), 16 KiB–256 KiB.
    /// Peerix frames are under 16 KiB; the stack keeps a buffer this large in every
    /// connection, so a larger value costs memory per peer (see `peerix_rtc::RtcConfig`).
    pub max_message_size: usize,
    /// Threads that drive the WebRTC connections; 0 picks half the cores (at least 1, at
    /// most 4). Fixed when the first connection is created.
    pub reactor_threads: usize,
    /// Drive the connections on the actor thread instead of reactor threads (no
    /// `webrtc-rx*` thread): lower latency and CPU per small message, lower bulk
    /// throughput (see `peerix_rtc::RtcConfig::inline_drivers`). Off by default.
    pub inline_drivers: bool,
    /// Connections still being set up in one room (not yet connected). Invokes and offers from
    /// further new ids are ignored, with a rate-limited `error` event, until some connect or
    /// time out: every one costs a peer connection with its own UDP socket, and signaling
    /// packets are cheap to forge (any key pair makes a valid sender id). 0 = no limit.
    pub max_connecting_peers: usize,
    /// Single-port mode: every peer connection shares one UDP port (0: a free port chosen
    /// once); unset: one socket per connection. Fixed by the first connection.
    pub udp_port: Option<u16>,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        let rtc = peerix_rtc::RtcConfig::default();
        Self {
            mdns: true,
            udp_recv_buffer: 4 << 20,
            max_message_size: rtc.max_message_size,
            reactor_threads: 0,
            inline_drivers: false,
            max_connecting_peers: 64,
            udp_port: None,
        }
    }
}

/// Overrides that come from command-line flags (highest precedence).
#[derive(Debug, Default, Clone)]
pub struct FlagOverrides {
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--log`.
    pub log: Option<String>,
    /// `--driver`.
    pub default_driver: Option<String>,
    /// `--local-dir`.
    pub local_dir: Option<PathBuf>,
    /// `--nats URL` (repeatable).
    pub nats: Vec<String>,
    /// `--join ROOM` (repeatable).
    pub join: Vec<String>,
}

impl DaemonConfig {
    /// Checks values the type system cannot, naming the key at fault.
    pub fn validate(&self) -> Result<(), DaemonError> {
        self.limits.validate()?;
        if self.ipc.max_frame < 1024 {
            return Err(DaemonError::Config(format!(
                "ipc.max_frame: {} is below the minimum of 1024",
                self.ipc.max_frame
            )));
        }
        if self.ipc.max_frame > u32::MAX as u64 {
            return Err(DaemonError::Config(
                "ipc.max_frame: must fit the 4-byte length prefix".into(),
            ));
        }
        if self.ipc.inline_message_limit == 0
            || self.ipc.inline_message_limit + 4096 > self.ipc.max_frame
        {
            return Err(DaemonError::Config(
                "ipc.inline_message_limit: must be > 0 and at least 4 KiB below ipc.max_frame"
                    .into(),
            ));
        }
        if !(16 * 1024..=256 * 1024).contains(&self.webrtc.max_message_size) {
            return Err(DaemonError::Config(format!(
                "webrtc.max_message_size: {} is outside 16384..=262144 (Peerix frames are under \
                 16 KiB; every connection keeps a buffer this large)",
                self.webrtc.max_message_size
            )));
        }
        self.remote.validate()?;
        self.service.validate()?;
        self.metrics.validate()?;
        self.turn_rest.validate()?;
        self.ice_restart.validate()?;
        self.turn_tls.validate()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(DaemonError::Config(format!(
                "log: {:?} is not a valid filter: {e}",
                self.log
            )));
        }
        self.access.mode()?;
        if self.ipc.client_queue_budget < self.ipc.max_frame {
            return Err(DaemonError::Config(format!(
                "ipc.client_queue_budget: {} is below ipc.max_frame ({}); one frame must fit",
                self.ipc.client_queue_budget, self.ipc.max_frame
            )));
        }
        if self.ipc.lag_limit == 0 || self.ipc.lag_limit >= self.ipc.client_queue_limit {
            return Err(DaemonError::Config(format!(
                "ipc.lag_limit: {} must be above 0 and below ipc.client_queue_limit ({}): a \
                 client paused for lagging still gets its replies, and is cut only at the hard limit",
                self.ipc.lag_limit, self.ipc.client_queue_limit
            )));
        }
        let known = ["local", "memory", "nats"];
        if !known.contains(&self.default_driver.as_str()) {
            return Err(DaemonError::Config(format!(
                "default_driver: unknown driver {:?} (known: local, memory, nats)",
                self.default_driver
            )));
        }
        if self.default_driver == "nats" && self.drivers.nats.is_none() {
            return Err(DaemonError::Config(
                "default_driver: \"nats\" needs a [drivers.nats] section or --nats URL".into(),
            ));
        }
        if let Some(n) = &self.drivers.nats {
            if n.servers.is_empty() {
                return Err(DaemonError::Config(
                    "drivers.nats.servers: at least one server URL is needed".into(),
                ));
            }
            for (i, url) in n.servers.iter().enumerate() {
                peerix_signaling::check_server_url(url)
                    .map_err(|e| DaemonError::Config(format!("drivers.nats.servers[{i}]: {e}")))?;
            }
        }
        for (i, s) in self.room_defaults.ice_servers.iter().enumerate() {
            for u in &s.urls {
                if !(u.starts_with("stun:")
                    || u.starts_with("turn:")
                    || u.starts_with("turns:")
                    || u.starts_with("stuns:"))
                {
                    return Err(DaemonError::Config(format!(
                        "room_defaults.iceServers[{i}].urls: {u:?} is not a stun:/turn: URL"
                    )));
                }
            }
        }
        crate::admission::validate_config(self)?;
        for r in &self.rooms {
            if let Some(d) = &r.driver {
                if !known.contains(&d.as_str()) {
                    return Err(DaemonError::Config(format!(
                        "rooms[{}].driver: unknown driver {d:?}",
                        r.id
                    )));
                }
                // A configured room must be joinable: its driver needs its section.
                if d == "nats" && self.drivers.nats.is_none() {
                    return Err(DaemonError::Config(format!(
                        "rooms[{}].driver: \"nats\" needs a [drivers.nats] section or --nats URL",
                        r.id
                    )));
                }
            }
        }
        Ok(())
    }

    /// The socket path: configured, or the platform default.
    pub fn socket_path(&self) -> PathBuf {
        match &self.socket {
            Some(p) if !p.as_os_str().is_empty() => p.clone(),
            _ => default_socket_path(),
        }
    }
}

/// `$XDG_RUNTIME_DIR/peerix/peerixd.sock`, or `/run/peerix/peerixd.sock` for a system service.
pub fn default_socket_path() -> PathBuf {
    if cfg!(windows) {
        // A named pipe name; the clients resolve it the same way.
        return PathBuf::from("peerixd.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("peerix").join("peerixd.sock"),
        _ => PathBuf::from("/run/peerix/peerixd.sock"),
    }
}

#[path = "config_access.rs"]
pub mod access;

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
