//! Socket activation: the listening socket systemd hands over (`LISTEN_FDS`, `LISTEN_PID`, the
//! descriptors from 3 on), from a `peerixd.socket` unit.
//!
//! Read with the `sd-notify` crate, which the daemon uses for `READY=1` anyway: it checks that
//! `LISTEN_PID` is this process (the variables are inherited by children that must not take
//! the socket) and marks the descriptor close-on-exec. `listenfd` would add a dependency for
//! the same few lines, with a Windows emulation we have no use for.

use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::PathBuf;

use crate::error::DaemonError;

/// The handed-over listener and the path it is bound to, when the daemon was socket-activated.
pub fn take() -> Result<Option<(interprocess::local_socket::tokio::Listener, PathBuf)>, DaemonError>
{
    let bad = |m: String| DaemonError::Config(format!("socket activation: {m}"));
    let fds: Vec<i32> = sd_notify::listen_fds()
        .map_err(|e| bad(format!("LISTEN_FDS/LISTEN_PID: {e}")))?
        .collect();
    let fd = match fds.as_slice() {
        [] => return Ok(None),
        [fd] => *fd,
        more => {
            return Err(bad(format!(
                "systemd passed {} sockets; peerixd listens on one: give peerixd.socket a \
                 single ListenStream=",
                more.len()
            )))
        }
    };
    // SAFETY: systemd passed this descriptor to this process (LISTEN_PID is ours) for it to
    // own, and nothing else in the process has taken it: this runs once, at start.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let std_listener = std::os::unix::net::UnixListener::from(owned);
    let path = std_listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(PathBuf::from))
        .ok_or_else(|| {
            bad(format!(
                "descriptor {fd} is not a Unix stream socket bound to a path; peerixd.socket \
                 needs ListenStream=/run/peerix/peerixd.sock (an absolute path)"
            ))
        })?;
    let uds = interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(OwnedFd::from(
        std_listener,
    ))
    .map_err(|e| bad(format!("descriptor {fd} ({}): {e}", path.display())))?;
    Ok(Some((uds.into(), path)))
}
