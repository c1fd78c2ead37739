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
}

impl Default for IpcConfig {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            inline_message_limit: 1 << 20,
            max_message_size: 1 << 30,
            client_queue_limit: 256 << 20,
            client_queue_budget: 256 << 20,
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
    /// Connections still being set up in one room (not yet connected). Invokes and offers from
    /// further new ids are ignored, with a rate-limited `error` event, until some connect or
    /// time out: every one costs a peer connection with its own UDP socket, and signaling
    /// packets are cheap to forge (any key pair makes a valid sender id). 0 = no limit.
    pub max_connecting_peers: usize,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        let rtc = peerix_rtc::RtcConfig::default();
        Self {
            mdns: true,
            udp_recv_buffer: 4 << 20,
            max_message_size: rtc.max_message_size,
            reactor_threads: 0,
            max_connecting_peers: 64,
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

/// Where the user-level config file lives.
pub fn user_config_file() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("peerix").join("peerixd.toml"))
}

/// The system-wide config file.
pub const SYSTEM_CONFIG_FILE: &str = "/etc/peerix/peerixd.toml";

/// Loads the layered configuration. `skip_system` leaves out the system and user files (tests).
pub fn load(
    file: Option<&Path>,
    flags: &FlagOverrides,
    skip_system: bool,
) -> Result<DaemonConfig, DaemonError> {
    load_with_env(file, flags, skip_system, daemon_env())
}

/// [`load`] with the daemon's `PEERIX_*` variables given (tests pass their own).
fn load_with_env(
    file: Option<&Path>,
    flags: &FlagOverrides,
    skip_system: bool,
    env: config::Map<String, String>,
) -> Result<DaemonConfig, DaemonError> {
    // Every error names where the configuration came from.
    let mut files: Vec<PathBuf> = Vec::new();
    let defaults = toml::to_string(&DaemonConfig::default())
        .map_err(|e| DaemonError::Config(format!("serialising defaults: {e}")))?;
    let mut b = Config::builder().add_source(File::from_str(&defaults, FileFormat::Toml));
    if !skip_system {
        b = b.add_source(File::new(SYSTEM_CONFIG_FILE, FileFormat::Toml).required(false));
        if Path::new(SYSTEM_CONFIG_FILE).exists() {
            files.push(PathBuf::from(SYSTEM_CONFIG_FILE));
        }
        if let Some(user) = user_config_file() {
            if user.exists() {
                files.push(user.clone());
            }
            b = b.add_source(File::from(user).format(FileFormat::Toml).required(false));
        }
    }
    if let Some(f) = file {
        let text = read_config_file(f)?;
        // From the text we read, so the file is read once and its errors are ours to word;
        // the name goes into every error below.
        b = b.add_source(File::from_str(&text, FileFormat::Toml));
        files.push(f.to_path_buf());
    }
    let cfg_err = |e: config::ConfigError| describe_config_error(e, &files, &env);
    // `PEERIX_SOCKET`, `PEERIX_LOG`, `PEERIX_IPC__MAX_FRAME`, `PEERIX_ROOM_DEFAULTS__SIGNALINGENCRYPTION`...
    // Only variables that look like our keys are taken, so unrelated PEERIX_* variables (used by
    // clients and tests) do not trip the unknown-key check.
    b = b.add_source(
        Environment::with_prefix("PEERIX")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(env.clone())),
    );
    let set = |b: config::ConfigBuilder<config::builder::DefaultState>,
               k: &str,
               v: Option<String>| { b.set_override_option(k, v) };
    let mut b = set(
        b,
        "socket",
        flags.socket.as_ref().map(|p| p.display().to_string()),
    )
    .map_err(cfg_err)?;
    b = set(b, "log", flags.log.clone()).map_err(cfg_err)?;
    b = set(b, "default_driver", flags.default_driver.clone()).map_err(cfg_err)?;
    b = set(
        b,
        "drivers.local.dir",
        flags.local_dir.as_ref().map(|p| p.display().to_string()),
    )
    .map_err(cfg_err)?;
    let cfg = b.build().map_err(cfg_err)?;
    // `log` must be a string; the lenient loader would turn `log = 5` into "5".
    if let Ok(v) = cfg.get::<config::Value>("log") {
        if !matches!(v.kind, config::ValueKind::String(_)) {
            return Err(DaemonError::Config(format!(
                "log: must be a string filter such as \"info,webrtc=warn\", not {}{}",
                v.kind,
                sources_text(&files)
            )));
        }
    }
    let mut out: DaemonConfig = cfg.try_deserialize().map_err(cfg_err)?;
    if !flags.nats.is_empty() {
        let mut nats = out.drivers.nats.take().unwrap_or_default();
        nats.servers = flags.nats.clone();
        out.drivers.nats = Some(nats);
    }
    for room in &flags.join {
        if !out.rooms.iter().any(|r| &r.id == room) {
            out.rooms.push(RoomConfig {
                id: room.clone(),
                metadata: None,
                driver: None,
                channels: vec![],
                verify: None,
            });
        }
    }
    // A message part plus its event envelope must fit one frame; shrinking max_frame alone should
    // not force users to tune the inline limit too.
    out.ipc.inline_message_limit = out.ipc.inline_message_limit.min(out.ipc.max_frame / 2);
    out.validate().map_err(|e| match e {
        DaemonError::Config(m) => DaemonError::Config(format!("{m}{}", sources_text(&files))),
        other => other,
    })?;
    Ok(out)
}

/// Reads the file named by `--config`, saying what is wrong in words an operator acts on.
fn read_config_file(f: &Path) -> Result<String, DaemonError> {
    use std::io::ErrorKind;
    if f.is_dir() {
        return Err(DaemonError::Config(format!(
            "config file {} is a directory; name the .toml file inside it",
            f.display()
        )));
    }
    std::fs::read_to_string(f).map_err(|e| {
        DaemonError::Config(match e.kind() {
            ErrorKind::NotFound => format!("config file {} does not exist", f.display()),
            ErrorKind::PermissionDenied => format!(
                "config file {}: permission denied; make it readable by the user peerixd runs as",
                f.display()
            ),
            ErrorKind::InvalidData => format!("config file {} is not UTF-8 text", f.display()),
            _ => format!("config file {}: {e}", f.display()),
        })
    })
}

/// " (in FILE, FILE)" for error messages, or nothing when only defaults and flags were used.
fn sources_text(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    format!(" (in {})", names.join(", "))
}

/// A loader error with its source: an unknown key set through the environment is named as
/// the variable (the file list would send the operator looking in the wrong place).
fn describe_config_error(
    e: config::ConfigError,
    files: &[PathBuf],
    env: &config::Map<String, String>,
) -> DaemonError {
    let text = e.to_string();
    let unknown = text
        .split("unknown field `")
        .nth(1)
        .and_then(|rest| rest.split('`').next());
    if let Some(field) = unknown {
        let suffix = format!("_{}", field.to_ascii_uppercase());
        if let Some(var) = env
            .keys()
            .find(|k| k.to_ascii_uppercase().ends_with(&suffix))
        {
            return DaemonError::Config(format!(
                "environment variable {var}: unknown key `{field}` (peerixd reads PEERIX_* \
                 variables as configuration; see config/peerixd.toml for the keys)"
            ));
        }
    }
    DaemonError::Config(format!("{text}{}", sources_text(files)))
}

/// The environment variables that belong to the daemon's configuration.
fn daemon_env() -> config::Map<String, String> {
    const TOP: &[&str] = &[
        "SOCKET",
        "LOG",
        "DEFAULT_DRIVER",
        "IPC__",
        "DRIVERS__",
        "ROOM_DEFAULTS__",
        "WEBRTC__",
        "LIMITS__",
        "REMOTE__",
        "ACCESS__",
    ];
    std::env::vars()
        .filter(|(k, _)| {
            k.strip_prefix("PEERIX_").is_some_and(|rest| {
                TOP.iter().any(|t| {
                    if t.ends_with("__") {
                        rest.starts_with(t)
                    } else {
                        rest == *t
                    }
                })
            })
        })
        .collect()
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
