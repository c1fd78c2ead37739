//! Same-host driver without a server: Unix datagram sockets in a shared directory.
//!
//! Every driver instance binds `<dir>/<random-hex>-t.sock` and, per subscribed namespace, a
//! symlink `<random-hex>-t.<hash of namespace>.ns` to that socket. Publishing sends one
//! datagram `[u16 BE namespace length][namespace][payload]` through each other driver's link
//! for that namespace (and to every `*.sock` of an older driver that makes no links); each
//! instance filters incoming datagrams by its own subscription set. See the crate README.

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
    use tokio::sync::mpsc::Sender;
    use tracing::debug;

    use super::{current_uid, default_local_dir, LocalConfig, MAX_LOCAL_DATAGRAM};
    use crate::{Driver, DriverError, DriverEvent, RefCounts};

    /// How long a datagram may wait for room in a peer's receive queue (WouldBlock/ENOBUFS).
    /// Linux allows only `net.unix.max_dgram_qlen` (often 10) queued datagrams per socket, so a
    /// burst — sixteen daemons joining at once, each invoking every other — overflows it for a
    /// moment; giving up after a few milliseconds lost invokes and left pairs unconnected.
    /// Peers are sent to concurrently, so one slow peer does not delay the others.
    const SEND_BUDGET: Duration = Duration::from_secs(2);

    /// Ends the name of a socket whose driver links it per subscribed namespace (so it gets
    /// only datagrams of its namespaces). Older drivers bind plain `<hex>.sock` and get every
    /// datagram, as before: both kinds work together in one directory.
    const TARGETED_SUFFIX: &str = "-t.sock";

    /// Name of the link by which `owner` (a socket name without `.sock`) receives `namespace`.
    /// A 64-bit FNV-1a hash keeps the name short whatever the namespace; a collision only sends
    /// a datagram to a driver that then drops it (it filters by its subscriptions).
    fn link_name(owner: &str, namespace: &str) -> String {
        format!("{owner}.{:016x}.ns", fnv1a(namespace.as_bytes()))
    }

    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Same-host driver over Unix datagram sockets (see module docs / README).
    pub struct LocalDriver {
        dir: PathBuf,
        own_path: PathBuf,
        own_name: OsString,
        /// `own_name` without `.sock`: the prefix of our namespace links.
        own_stem: String,
        /// A clone of the bound socket (read by the receiving thread), shut down on close to
        /// wake that thread.
        recv_waker: Mutex<Option<StdUnixDatagram>>,
        /// Tells the receiving thread to end.
        stop: Arc<AtomicBool>,
        /// Separate unbound, non-blocking std socket for sending. Sending through
        /// the tokio socket would tie retries to tokio's write-readiness, which
        /// never re-arms for "peer queue full" on unconnected datagram sockets.
        send_socket: Mutex<Option<Arc<StdUnixDatagram>>>,
        subs: Arc<Mutex<RefCounts>>,
        events: Sender<DriverEvent>,
        closed: AtomicBool,
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

    /// A fresh socket name stem, `<16 hex>-t` (the socket is `<stem>.sock`).
    fn random_stem() -> String {
        let mut bytes = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut bytes);
        let mut name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        name.push_str(TARGETED_SUFFIX.trim_end_matches(".sock"));
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

    /// Reads the socket on a thread of its own: on the daemon's (busy) actix thread, a burst
    /// of connection set-ups left the 10-datagram kernel queue unread for seconds, and the
    /// senders gave up (issue 14: 15 000 datagrams lost in one 32-daemon mesh, among them
    /// announces, which nobody repeats). Ends when `stop` is set and the socket shut down.
    fn receive_loop(
        socket: StdUnixDatagram,
        subs: Arc<Mutex<RefCounts>>,
        events: Sender<DriverEvent>,
        stop: Arc<AtomicBool>,
    ) {
        // One byte more than the largest valid datagram so oversize (truncated)
        // datagrams can be recognised and dropped instead of misparsed.
        let mut buf = vec![0u8; MAX_LOCAL_DATAGRAM + 1];
        loop {
            let received = socket.recv(&mut buf);
            if stop.load(Ordering::Acquire) {
                return;
            }
            let n = match received {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(error = %e, "local: receive failed");
                    // Avoid a hot loop if the error is persistent.
                    std::thread::sleep(Duration::from_millis(50));
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
            if events.blocking_send(event).is_err() {
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
            let own_stem = random_stem();
            let name = format!("{own_stem}.sock");
            let own_path = dir.join(&name);
            let socket = StdUnixDatagram::bind(&own_path)
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
            let subs = Arc::new(Mutex::new(RefCounts::default()));
            let stop = Arc::new(AtomicBool::new(false));
            let spawned = socket.try_clone().and_then(|waker| {
                let (subs, events, stop) = (subs.clone(), events.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("peerix-local-rx".into())
                    .spawn(move || receive_loop(socket, subs, events, stop))
                    .map(|_| waker)
            });
            let recv_waker = match spawned {
                Ok(w) => w,
                Err(e) => {
                    let _ = fs::remove_file(&own_path);
                    return Err(io_err("cannot start the receiving thread")(e));
                }
            };
            debug!(path = %own_path.display(), "local: driver started");
            Ok(LocalDriver {
                dir,
                own_path,
                own_name: OsString::from(name),
                own_stem,
                recv_waker: Mutex::new(Some(recv_waker)),
                stop,
                send_socket: Mutex::new(Some(Arc::new(send_socket))),
                subs,
                events,
                closed: AtomicBool::new(false),
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

        /// Where a datagram of `namespace` goes, re-listed on every publish (a readdir of a
        /// tmpfs directory is cheap compared with keeping a cache coherent): the other drivers'
        /// links for that namespace, and every socket of an older driver, which makes none.
        /// Sending each datagram to every driver in the directory made a room of N daemons
        /// cost N× the datagrams, and the receive queues of 10 overflowed (issue 14).
        fn peers(&self, namespace: &str) -> Vec<PathBuf> {
            let entries = match fs::read_dir(&self.dir) {
                Ok(e) => e,
                Err(e) => {
                    debug!(error = %e, dir = %self.dir.display(), "local: cannot list directory");
                    return Vec::new();
                }
            };
            let link_suffix = link_name("", namespace);
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let bytes = name.as_encoded_bytes();
                    if bytes.starts_with(self.own_stem.as_bytes()) {
                        return false;
                    }
                    if bytes.ends_with(link_suffix.as_bytes()) {
                        return e.file_type().map(|t| t.is_symlink()).unwrap_or(false);
                    }
                    bytes.ends_with(b".sock")
                        && !bytes.ends_with(TARGETED_SUFFIX.as_bytes())
                        && e.file_type().map(|t| t.is_socket()).unwrap_or(false)
                })
                .map(|e| e.path())
                .collect()
        }

        /// Links `namespace` to our socket, so that publishers send it to us.
        fn link(&self, namespace: &str) -> Result<(), DriverError> {
            let link = self.dir.join(link_name(&self.own_stem, namespace));
            match std::os::unix::fs::symlink(&self.own_name, &link) {
                Ok(()) => Ok(()),
                // Another namespace of ours with the same hash made it already.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(io_err(format!("cannot create link {}", link.display()))(e)),
            }
        }

        /// Removes the link of `namespace` unless another subscribed namespace shares it.
        fn unlink(&self, namespace: &str, subs: &RefCounts) {
            let name = link_name(&self.own_stem, namespace);
            if subs.keys().any(|ns| link_name(&self.own_stem, ns) == name) {
                return;
            }
            let link = self.dir.join(name);
            if let Err(e) = fs::remove_file(&link) {
                debug!(error = %e, link = %link.display(), "local: cannot remove link");
            }
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
                        // Nobody is bound to it: a crashed peer left it (or a link to it)
                        // behind.
                        let stale = fs::symlink_metadata(peer)
                            .map(|m| m.file_type().is_socket() || m.file_type().is_symlink())
                            .unwrap_or(false);
                        if stale {
                            debug!(peer = %peer.display(), "local: removing stale socket");
                            if let Ok(target) = fs::read_link(peer) {
                                // Its links lead here too; each goes when next refused.
                                let _ = fs::remove_file(peer.with_file_name(target));
                            }
                            let _ = fs::remove_file(peer);
                        }
                        return;
                    }
                    Err(e)
                        if e.kind() == io::ErrorKind::NotFound
                            && fs::symlink_metadata(peer).is_ok_and(|m| m.is_symlink()) =>
                    {
                        // A link whose socket is gone: its driver crashed.
                        debug!(peer = %peer.display(), "local: removing dangling link");
                        let _ = fs::remove_file(peer);
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
            self.stop.store(true, Ordering::Release);
            if let Some(waker) = lock(&self.recv_waker).take() {
                // Wakes the thread's blocking `recv`; it sees `stop` and ends.
                let _ = waker.shutdown(std::net::Shutdown::Both);
            }
            lock(&self.send_socket).take();
            let subs = lock(&self.subs).drain();
            for ns in subs {
                let _ = fs::remove_file(self.dir.join(link_name(&self.own_stem, &ns)));
            }
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
            let mut subs = lock(&self.subs);
            if subs.add(namespace) {
                if let Err(e) = self.link(namespace) {
                    subs.remove(namespace);
                    return Err(e);
                }
            }
            Ok(())
        }

        async fn unsubscribe(&self, namespace: &str) -> Result<(), DriverError> {
            let mut subs = lock(&self.subs);
            if subs.remove(namespace) && !self.closed.load(Ordering::Acquire) {
                self.unlink(namespace, &subs);
            }
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
            let peers = self.peers(namespace);
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
