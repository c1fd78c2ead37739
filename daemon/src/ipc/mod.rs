//! The local IPC endpoint: a listener on the Unix socket (named pipe on Windows) and one session
//! actor per connected client.

pub mod access;
#[cfg(unix)]
pub mod activation;
pub mod client_queue;
#[cfg(feature = "fault-injection")]
pub mod debug;
pub mod listener;
pub mod session;
pub mod socket_path;
