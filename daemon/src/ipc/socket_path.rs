//! Claiming the socket path before binding it: an exclusive lock beside it, so two daemons
//! started at the same instant cannot both pass the "is anyone listening?" check and then
//! remove each other's sockets; and only ever removing a socket that no daemon answers on,
//! never an ordinary file or a directory that a mistyped `--socket` names.

use std::fs::File;
#[cfg(unix)]
use std::fs::OpenOptions;
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;

use crate::error::DaemonError;

/// The lock on a socket path, held for the listener's life (`<socket>.lock`, `flock`).
#[derive(Debug)]
pub struct SocketLock {
    _file: Option<File>,
    /// The lock file.
    pub path: PathBuf,
}

#[cfg(unix)]
fn in_use(context: String) -> DaemonError {
    DaemonError::Io {
        context,
        source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    }
}

/// Takes the lock for `path`, then makes sure `path` is free: absent, or a stale socket (which
/// is removed). Anything else is refused with what to do.
#[cfg(unix)]
pub fn claim(path: &Path) -> Result<SocketLock, DaemonError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileTypeExt;

    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| DaemonError::Io {
            context: format!("creating the lock file {}", lock_path.display()),
            source,
        })?;
    // SAFETY: flock on a descriptor this function owns for as long as the call runs; the lock
    // is released when the file is closed (SocketLock dropped, or the process exits).
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Err(in_use(format!(
                "another peerixd is starting or running on {} (it holds {})",
                path.display(),
                lock_path.display()
            )));
        }
        return Err(DaemonError::Io {
            context: format!("locking {}", lock_path.display()),
            source: e,
        });
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DaemonError::Io {
                context: format!("checking the socket path {}", path.display()),
                source,
            })
        }
        Ok(m) if m.is_dir() => {
            return Err(DaemonError::Config(format!(
                "socket: {} is a directory; name the socket file to create, e.g. {}",
                path.display(),
                path.join("peerixd.sock").display()
            )))
        }
        Ok(m) if !m.file_type().is_socket() => {
            return Err(DaemonError::Config(format!(
                "socket: {} exists and is not a socket; refusing to replace it (remove it \
                 yourself, or choose another path)",
                path.display()
            )))
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(in_use(format!(
                    "another peerixd is already listening on {}",
                    path.display()
                )))
            }
            Err(_) => {
                tracing::info!(path = %path.display(), "removing a stale socket that no daemon answers on");
                std::fs::remove_file(path).map_err(|source| DaemonError::Io {
                    context: format!("removing the stale socket {}", path.display()),
                    source,
                })?;
            }
        },
    }
    Ok(SocketLock {
        _file: Some(file),
        path: lock_path,
    })
}

impl SocketLock {
    /// No lock: named pipes are not files, and the pipe server's first-instance flag does the
    /// same job on Windows; a socket systemd handed over is systemd's to guard.
    pub fn none() -> Self {
        SocketLock {
            _file: None,
            path: PathBuf::new(),
        }
    }
}
