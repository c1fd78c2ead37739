//! The machine key on disk: `<state_dir>/identity.key`, so that this machine's id and every
//! room id (derived from it, see `Daemon::room_identity`) stay the same across restarts.
//!
//! The file is 64 hex digits (the P-256 secret) and a newline, mode 0600. It is created
//! atomically (a temporary file in the same directory, synced, then renamed over the name),
//! so a crash while creating it leaves either no key or a whole one, never half of one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use peerix_wire::identity::Identity;

use crate::config_service::{IdentityMode, ServiceConfig};

/// The key file's name inside the state directory.
pub const KEY_FILE: &str = "identity.key";

/// Why the stored identity cannot be used; each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum IdentityStoreError {
    /// The key file exists but does not hold a key.
    #[error("{0}")]
    Corrupt(String),
    /// `persistent` without a state directory (`validate` refuses this configuration).
    #[error("service.identity: \"persistent\" needs service.state_dir")]
    NoStateDir,
    /// Another running peerixd uses the same key file: both would have the same ids.
    #[error(
        "identity file {0} is in use by another running peerixd; two daemons with one key \
         would have the same id in every room: give each its own service.state_dir"
    )]
    InUse(PathBuf),
    /// Reading or writing the file or its directory.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where this run's identity came from (for the start-up line and the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// Read from this file.
    Loaded(PathBuf),
    /// Created now, in this file.
    Created(PathBuf),
    /// Generated for this run only.
    Ephemeral,
}

impl std::fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Loaded(p) => write!(f, "from {}", p.display()),
            Self::Created(p) => write!(f, "new, saved in {}", p.display()),
            Self::Ephemeral => f.write_str("ephemeral, a new key every run"),
        }
    }
}

/// Held while the daemon runs: a second daemon cannot take the same key file.
#[derive(Debug)]
pub struct KeyLock {
    _file: Option<std::fs::File>,
}

/// The identity `[service]` asks for: the stored one, a new stored one, or an ephemeral one;
/// with the lock on its file (keep it for the life of the daemon).
pub fn load_or_create(
    cfg: &ServiceConfig,
) -> Result<(Identity, IdentitySource, KeyLock), IdentityStoreError> {
    let (identity, source) = load_or_create_unlocked(cfg)?;
    let lock = match &source {
        IdentitySource::Loaded(p) | IdentitySource::Created(p) => lock(p)?,
        IdentitySource::Ephemeral => KeyLock { _file: None },
    };
    Ok((identity, source, lock))
}

/// Takes an exclusive `flock` on the key file, refusing when another daemon holds it.
fn lock(path: &Path) -> Result<KeyLock, IdentityStoreError> {
    let file = std::fs::File::open(path).map_err(|source| IdentityStoreError::Io {
        context: format!("opening the identity file {}", path.display()),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor owned by `file`; released when it is closed.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Err(IdentityStoreError::InUse(path.to_path_buf()));
            }
            return Err(IdentityStoreError::Io {
                context: format!("locking the identity file {}", path.display()),
                source: e,
            });
        }
    }
    Ok(KeyLock { _file: Some(file) })
}

fn load_or_create_unlocked(
    cfg: &ServiceConfig,
) -> Result<(Identity, IdentitySource), IdentityStoreError> {
    let dir = match (cfg.identity, cfg.state_dir()) {
        (IdentityMode::Ephemeral, _) | (IdentityMode::Auto, None) => {
            return Ok((Identity::generate(), IdentitySource::Ephemeral))
        }
        (IdentityMode::Persistent, None) => {
            // `validate` refuses this configuration; kept as an error, not a panic.
            return Err(IdentityStoreError::NoStateDir);
        }
        (_, Some(dir)) => dir,
    };
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok((parse(&path, &bytes)?, IdentitySource::Loaded(path))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Identity::generate();
            write_atomically(&dir, &path, &id)?;
            Ok((id, IdentitySource::Created(path)))
        }
        Err(e) => Err(IdentityStoreError::Io {
            context: format!(
                "reading the identity file {} (make it readable by the user peerixd runs as)",
                path.display()
            ),
            source: e,
        }),
    }
}

/// Parses the key file's contents; the error names the file and what to do about it.
fn parse(path: &Path, bytes: &[u8]) -> Result<Identity, IdentityStoreError> {
    let corrupt = |why: &str| {
        IdentityStoreError::Corrupt(format!(
            "identity file {} is corrupt ({why}); restore it from a backup, or move it away to \
             start with a new identity (this machine's id and every room id will change)",
            path.display()
        ))
    };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not text"))?;
    let hex = text.trim();
    if hex.len() != 64 {
        return Err(corrupt(&format!(
            "expected 64 hex digits, found {} characters",
            hex.len()
        )));
    }
    let mut secret = [0u8; 32];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| corrupt("not hex digits"))?;
    }
    Identity::from_secret_bytes(&secret).map_err(|_| corrupt("not a valid P-256 secret key"))
}

/// Writes the key to a temporary file beside `path` (0600 from its creation, so the key is
/// never readable by others, not even for a moment), syncs it, renames it over `path` and syncs
/// the directory so the rename survives a power cut.
fn write_atomically(dir: &Path, path: &Path, id: &Identity) -> Result<(), IdentityStoreError> {
    let io = |context: String| move |source| IdentityStoreError::Io { context, source };
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(io(format!(
            "creating the state directory {}",
            dir.display()
        )))?;
    }
    let tmp = dir.join(format!(".{KEY_FILE}.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let text: String = id
        .secret_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .chain(std::iter::once("\n".to_string()))
        .collect();
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io(format!(
        "creating the identity file {} (the state directory must be writable by the user \
         peerixd runs as)",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn persistent(dir: &Path) -> ServiceConfig {
        ServiceConfig {
            identity: IdentityMode::Persistent,
            state_dir: Some(dir.to_path_buf()),
        }
    }

    #[test]
    fn created_once_then_loaded_with_mode_0600() {
        let d = tempfile::tempdir().expect("tempdir");
        let (a, src, lock) = load_or_create(&persistent(d.path())).expect("create");
        assert!(matches!(src, IdentitySource::Created(_)));
        // A second daemon on the same key is refused while the first runs.
        let second = load_or_create(&persistent(d.path()));
        assert!(
            matches!(second, Err(IdentityStoreError::InUse(_))),
            "{second:?}"
        );
        drop(lock);
        let (b, src, _lock) = load_or_create(&persistent(d.path())).expect("load");
        assert!(matches!(src, IdentitySource::Loaded(_)));
        assert_eq!(a.id(), b.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path().join(KEY_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(d.path()).expect("dir").count(), 1);
    }

    #[test]
    fn corrupt_file_is_named() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join(KEY_FILE), "not a key").expect("write");
        let Err(e) = load_or_create(&persistent(d.path())) else {
            panic!("a corrupt key file was accepted");
        };
        let e = e.to_string();
        assert!(e.contains(KEY_FILE) && e.contains("corrupt"), "{e}");
    }

    #[test]
    fn ephemeral_and_auto_without_dir_do_not_touch_disk() {
        let cfg = ServiceConfig {
            identity: IdentityMode::Ephemeral,
            state_dir: Some("/nonexistent/peerix".into()),
        };
        let (a, src, _) = load_or_create(&cfg).expect("ephemeral");
        let (b, _, _) = load_or_create(&cfg).expect("ephemeral");
        assert_eq!(src, IdentitySource::Ephemeral);
        assert_ne!(a.id(), b.id());
    }
}
