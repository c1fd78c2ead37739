//! A Unix stream socket for the IPC that wakes its reactor only when there is something to read.
//!
//! Tokio registers every socket for both readiness kinds, edge-triggered. A Unix stream socket
//! reports "writable" again each time the *other* end reads what was written to it, so every
//! frame one side reads woke the other side's thread once more, for nothing: measured on the
//! bench's 16 KiB transfers, the receiving daemon's thread was woken about once per message by
//! its client's reads although that client wrote nothing (BENCHMARKS.md, session 21). On a
//! machine with two cores, those wake-ups take CPU from the threads that carry messages.
//!
//! [`QuietStream`] registers the socket for reads only and writes to it directly. Only a write
//! that finds the socket's buffer full registers a second descriptor of the same socket for
//! writability, until the next write goes through.

#[cfg(unix)]
mod quiet;
#[cfg(unix)]
pub use quiet::QuietStream;
