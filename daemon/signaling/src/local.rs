//! Same-host driver without a server: Unix datagram sockets in a shared directory.
//!
//! Every driver instance binds `<dir>/<random-hex>.sock`. Publishing sends one
//! datagram `[u16 BE namespace length][namespace][payload]` to every other
//! `*.sock` in the directory; each instance filters incoming datagrams by its own
//! subscription set. See the crate README for the full design.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest datagram (framing + namespace + payload) the local driver sends.
/// Signaling packets are ≤ ~4 KB; this stays well below Linux's default
/// `net.core.wmem_default`-derived limit for Unix datagrams.
pub const MAX_LOCAL_DATAGRAM: usize = 60 * 1024;

/// Configuration of the [`LocalDriver`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// Rendezvous directory shared by all peers on this host (same user).
    /// `None` = [`default_local_dir`].
    pub dir: Option<PathBuf>,
}

/// Default rendezvous directory: `$XDG_RUNTIME_DIR/peerix/local`, or
/// `/tmp/peerix-local-<uid>` when `XDG_RUNTIME_DIR` is unset or empty.
pub fn default_local_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("peerix").join("local"),
        _ => std::env::temp_dir().join(format!("peerix-local-{}", current_uid())),
    }
}

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(not(unix))]
fn current_uid() -> u32 {
    0
}

#[cfg(unix)]
pub use imp::LocalDriver;

#[cfg(not(unix))]
pub use unsupported::LocalDriver;

#[cfg(not(unix))]
mod unsupported {
    use tokio::sync::mpsc::Sender;

    use super::LocalConfig;
    use crate::{DriverError, DriverEvent};

    /// The local driver needs Unix datagram sockets; on this platform
    /// [`LocalDriver::start`] always fails with [`DriverError::NotSupported`].
    #[derive(Debug)]
    pub struct LocalDriver {
        _private: (),
    }

    impl LocalDriver {
        /// Always fails: not supported on this platform (use `nats` instead).
        pub async fn start(
            _config: LocalConfig,
            _events: Sender<DriverEvent>,
        ) -> Result<Self, DriverError> {
            Err(DriverError::NotSupported("local"))
        }
    }
}

#[cfg(unix)]
mod imp {
    use std::ffi::OsString;
    use std::fs::{self, DirBuilder};
    use std::io;
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
    use std::os::unix::net::UnixDatagram as StdUnixDatagram;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Duration;

    use bytes::Bytes;
    use rand::RngCore;
    use tokio::net::UnixDatagram;
    use tokio::sync::mpsc::Sender;
    use tokio::task::JoinHandle;
    use tracing::debug;

    use super::{current_uid, default_local_dir, LocalConfig, MAX_LOCAL_DATAGRAM};
    use crate::{Driver, DriverError, DriverEvent, RefCounts};

    /// How long a datagram may wait for room in a peer's receive queue (WouldBlock/ENOBUFS).
    /// Linux allows only `net.unix.max_dgram_qlen` (often 10) queued datagrams per socket, so a
    /// burst — sixteen daemons joining at once, each invoking every other — overflows it for a
    /// moment; giving up after a few milliseconds lost invokes and left pairs unconnected.
    /// Peers are sent to concurrently, so one slow peer does not delay the others.
    const SEND_BUDGET: Duration = Duration::from_secs(2);

    /// Same-host driver over Unix datagram sockets (see module docs / README).
    pub struct LocalDriver {
        dir: PathBuf,
        own_path: PathBuf,
        own_name: OsString,
        /// Bound socket, shared with the receive task; taken on close.
        recv_socket: Mutex<Option<Arc<UnixDatagram>>>,
        /// Separate unbound, non-blocking std socket for sending. Sending through
        /// the tokio socket would tie retries to tokio's write-readiness, which
        /// never re-arms for "peer queue full" on unconnected datagram sockets.
        send_socket: Mutex<Option<Arc<StdUnixDatagram>>>,
        subs: Arc<Mutex<RefCounts>>,
        events: Sender<DriverEvent>,
        closed: AtomicBool,
        recv_task: Mutex<Option<JoinHandle<()>>>,
    }

    impl std::fmt::Debug for LocalDriver {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("LocalDriver")
                .field("socket", &self.own_path)
                .finish_non_exhaustive()
        }
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        // All guarded values stay consistent across a panic (single-step
        // updates), so a poisoned lock is still usable.
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> DriverError {
        let context = context.into();
        move |source| DriverError::Io { context, source }
    }

    /// Create the rendezvous directory (0700) and make sure nobody else can
    /// plant sockets in it: it must be a real directory owned by us.
    fn prepare_dir(dir: &Path) -> Result<(), DriverError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(format!("cannot create directory {}", dir.display())))?;
        let meta = fs::symlink_metadata(dir)
            .map_err(io_err(format!("cannot stat directory {}", dir.display())))?;
        if !meta.is_dir() {
            return Err(DriverError::Config(format!(
                "local: {} is not a directory (symlinks are refused)",
                dir.display()
            )));
        }
        if meta.uid() != current_uid() {
            return Err(DriverError::Config(format!(
                "local: directory {} is owned by uid {}, not by us (uid {}); refusing to use it",
                dir.display(),
                meta.uid(),
                current_uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err(format!("cannot chmod 0700 {}", dir.display())))?;
        }
        Ok(())
    }

    fn random_name() -> String {
        let mut bytes = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut bytes);
        let mut name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        name.push_str(".sock");
        name
    }

    /// Parse `[u16 BE len][namespace][payload]`; `None` for malformed input.
    pub(super) fn parse_datagram(data: &[u8]) -> Option<(&str, &[u8])> {
        let (len_bytes, rest) = data.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len_bytes));
        if rest.len() < len {
            return None;
        }
        let (ns, payload) = rest.split_at(len);
        Some((std::str::from_utf8(ns).ok()?, payload))
    }

    fn is_retryable(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
    }

    async fn receive_loop(
        socket: Arc<UnixDatagram>,
        subs: Arc<Mutex<RefCounts>>,
        events: Sender<DriverEvent>,
    ) {
        // One byte more than the largest valid datagram so oversize (truncated)
        // datagrams can be recognised and dropped instead of misparsed.
        let mut buf = vec![0u8; MAX_LOCAL_DATAGRAM + 1];
        loop {
            let n = match socket.recv(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    debug!(error = %e, "local: receive failed");
                    // Avoid a hot loop if the error is persistent.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let data = buf.get(..n).unwrap_or_default();
            if n > MAX_LOCAL_DATAGRAM {
                debug!(len = n, "local: dropping oversize datagram");
                continue;
            }
            let Some((namespace, payload)) = parse_datagram(data) else {
                debug!(len = n, "local: dropping malformed datagram");
                continue;
            };
            if !lock(&subs).contains(namespace) {
                continue;
            }
            let event = DriverEvent::Message {
                namespace: namespace.to_owned(),
                payload: Bytes::copy_from_slice(payload),
            };
            // Waiting here (queue full) stops reading the socket: back-pressure goes to the
            // kernel, which drops datagrams beyond its queue (signaling is lossy by design).
            if events.send(event).await.is_err() {
                // Owner is gone; nothing more to deliver to.
                return;
            }
        }
    }

    impl LocalDriver {
        /// Create/validate the directory, bind `<dir>/<random>.sock` (mode 0600)
        /// and start the receive task. Must be called within a Tokio runtime.
        pub async fn start(
            config: LocalConfig,
            events: Sender<DriverEvent>,
        ) -> Result<Self, DriverError> {
            let dir = config.dir.unwrap_or_else(default_local_dir);
            prepare_dir(&dir)?;
            let name = random_name();
            let own_path = dir.join(&name);
            let socket = UnixDatagram::bind(&own_path)
                .map_err(io_err(format!("cannot bind {}", own_path.display())))?;
            if let Err(e) = fs::set_permissions(&own_path, fs::Permissions::from_mode(0o600)) {
                let _ = fs::remove_file(&own_path);
                return Err(io_err(format!("cannot chmod 0600 {}", own_path.display()))(
                    e,
                ));
            }
            let send_socket = StdUnixDatagram::unbound()
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .map_err(io_err("cannot create sending socket"));
            let send_socket = match send_socket {
                Ok(s) => s,
                Err(e) => {
                    let _ = fs::remove_file(&own_path);
                    return Err(e);
                }
            };
            let socket = Arc::new(socket);
            let subs = Arc::new(Mutex::new(RefCounts::default()));
            let task = tokio::spawn(receive_loop(socket.clone(), subs.clone(), events.clone()));
            debug!(path = %own_path.display(), "local: driver started");
            Ok(LocalDriver {
                dir,
                own_path,
                own_name: OsString::from(name),
                recv_socket: Mutex::new(Some(socket)),
                send_socket: Mutex::new(Some(Arc::new(send_socket))),
                subs,
                events,
                closed: AtomicBool::new(false),
                recv_task: Mutex::new(Some(task)),
            })
        }

        /// Path of this driver's own socket.
        pub fn socket_path(&self) -> &Path {
            &self.own_path
        }

        /// The rendezvous directory.
        pub fn dir(&self) -> &Path {
            &self.dir
        }

        /// Sockets of the other peers, re-listed on every publish: a readdir of
        /// a tmpfs directory is cheap compared with keeping a cache coherent.
        fn peers(&self) -> Vec<PathBuf> {
            let entries = match fs::read_dir(&self.dir) {
                Ok(e) => e,
                Err(e) => {
                    debug!(error = %e, dir = %self.dir.display(), "local: cannot list directory");
                    return Vec::new();
                }
            };
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    name != self.own_name
                        && name.as_encoded_bytes().ends_with(b".sock")
                        && e.file_type().map(|t| t.is_socket()).unwrap_or(false)
                })
                .map(|e| e.path())
                .collect()
        }

        async fn send_to_peer(socket: &StdUnixDatagram, frame: &[u8], peer: &Path) {
            let deadline = tokio::time::Instant::now() + SEND_BUDGET;
            let mut attempt = 0u32;
            loop {
                match socket.send_to(frame, peer) {
                    Ok(_) => return,
                    Err(e) if is_retryable(&e) && tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis((1u64 << attempt.min(6)).min(20)))
                            .await;
                        attempt += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        // Nobody is bound to it: a crashed peer left it behind.
                        let still_socket = fs::symlink_metadata(peer)
                            .map(|m| m.file_type().is_socket())
                            .unwrap_or(false);
                        if still_socket {
                            debug!(peer = %peer.display(), "local: removing stale socket");
                            let _ = fs::remove_file(peer);
                        }
                        return;
                    }
                    Err(e) => {
                        // ENOENT (peer closed meanwhile), persistent queue-full, …:
                        // at-most-once delivery, so just drop it for this peer.
                        debug!(peer = %peer.display(), error = %e, "local: send failed");
                        return;
                    }
                }
            }
        }

        fn shutdown(&self) {
            if self.closed.swap(true, Ordering::AcqRel) {
                return;
            }
            if let Some(task) = lock(&self.recv_task).take() {
                task.abort();
            }
            lock(&self.recv_socket).take();
            lock(&self.send_socket).take();
            lock(&self.subs).drain();
            if let Err(e) = fs::remove_file(&self.own_path) {
                debug!(error = %e, path = %self.own_path.display(), "local: cannot unlink own socket");
            }
        }
    }

    #[async_trait::async_trait]
    impl Driver for LocalDriver {
        fn kind(&self) -> &'static str {
            "local"
        }

        fn is_active(&self) -> bool {
            !self.closed.load(Ordering::Acquire)
        }

        async fn subscribe(&self, namespace: &str) -> Result<(), DriverError> {
            if self.closed.load(Ordering::Acquire) {
                return Err(DriverError::Closed("local"));
            }
            lock(&self.subs).add(namespace);
            Ok(())
        }

        async fn unsubscribe(&self, namespace: &str) -> Result<(), DriverError> {
            lock(&self.subs).remove(namespace);
            Ok(())
        }

        async fn publish(&self, namespace: &str, payload: Bytes) -> Result<(), DriverError> {
            let Ok(ns_len) = u16::try_from(namespace.len()) else {
                return Err(DriverError::InvalidNamespace {
                    driver: "local",
                    namespace: namespace.chars().take(64).collect(),
                    reason: "longer than 65535 bytes".into(),
                });
            };
            let size = 2 + namespace.len() + payload.len();
            if size > MAX_LOCAL_DATAGRAM {
                return Err(DriverError::PayloadTooLarge {
                    driver: "local",
                    size,
                    max: MAX_LOCAL_DATAGRAM,
                });
            }
            let Some(socket) = lock(&self.send_socket).clone() else {
                // Closed = inactive: dropped silently, like Peerix.
                return Ok(());
            };
            if lock(&self.subs).contains(namespace) {
                // Self-delivery happens in-process; the channel makes it asynchronous.
                // Dropped when our queue is full, like any datagram to a busy socket.
                let _ = self.events.try_send(DriverEvent::Message {
                    namespace: namespace.to_owned(),
                    payload: payload.clone(),
                });
            }
            let mut frame = Vec::with_capacity(size);
            frame.extend_from_slice(&ns_len.to_be_bytes());
            frame.extend_from_slice(namespace.as_bytes());
            frame.extend_from_slice(&payload);
            let peers = self.peers();
            futures::future::join_all(
                peers
                    .iter()
                    .map(|peer| Self::send_to_peer(&socket, &frame, peer)),
            )
            .await;
            Ok(())
        }

        async fn close(&self) {
            self.shutdown();
        }
    }

    impl Drop for LocalDriver {
        fn drop(&mut self) {
            // Leaving our socket behind would make every peer try it once more.
            self.shutdown();
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::imp::parse_datagram;

    #[test]
    fn parse_valid_and_malformed() {
        assert_eq!(parse_datagram(b"\x00\x02abxyz"), Some(("ab", &b"xyz"[..])));
        assert_eq!(parse_datagram(b"\x00\x00"), Some(("", &b""[..])));
        assert_eq!(parse_datagram(b""), None);
        assert_eq!(parse_datagram(b"\x00"), None);
        assert_eq!(parse_datagram(b"\x00\x05ab"), None);
        assert_eq!(parse_datagram(b"\x00\x02\xff\xfe"), None);
    }
}
