//! Loading the layered configuration: files, `PEERIX_*` variables and flags, and the errors
//! that name the file or variable at fault (split from config.rs to keep each file readable).

use super::*;

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
pub(super) fn load_with_env(
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
pub(super) fn read_config_file(f: &Path) -> Result<String, DaemonError> {
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
pub(super) fn sources_text(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    format!(" (in {})", names.join(", "))
}

/// A loader error with its source: an unknown key set through the environment is named as
/// the variable (the file list would send the operator looking in the wrong place).
pub(super) fn describe_config_error(
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
pub(super) fn daemon_env() -> config::Map<String, String> {
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
        "SERVICE__",
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
