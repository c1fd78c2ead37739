//! The local IPC endpoint: a listener on the Unix socket (named pipe on Windows) and one session
//! actor per connected client.

pub mod listener;
pub mod session;
