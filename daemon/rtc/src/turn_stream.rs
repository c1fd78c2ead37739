//! TURN over TCP and TLS (`turn:…?transport=tcp`, `turns:`) for a stack whose TURN client
//! only speaks UDP.
//!
//! RFC 8656 §3.1: the transport between client and server is independent of the allocation,
//! which stays UDP, so the relay candidate and the TURN client are the same as with
//! `?transport=udp`; only the client-to-server leg is a stream. The relayer (vendor patch
//! 15) registers each resolved server address with the connection's runtime
//! ([`TurnStreams::register`]); every ICE UDP socket of the connection (not the mDNS one) is
//! a [`StreamTurnSocket`], which sends the TURN messages it is asked to send to such an address
//! over one stream per (socket, server) instead, framed as RFC 8656 §12.5 says
//! (`turn_frame.rs`), and delivers what arrives on the stream as datagrams from the server's
//! address. Everything else passes through untouched.
//!
//! The server keeps the allocation for as long as the stream lives: when it drops, the
//! allocation is gone. What happens to each server (a stream that cannot be opened, one that
//! broke before or after carrying an allocation, and through [`TurnStreams::allocation_failed`]
//! the relayer's verdicts for every server, UDP too) goes to the connection's owner as a
//! [`TurnOutcome`], which decides what to report and whether to gather again (peerixd's
//! `TurnWatch`). The next message opens a new stream, at most once per [`RETRY_AFTER`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit};

use crate::turn_frame::{belongs_on_stream, encode, Deframer, MAX_FRAME};

/// Messages waiting to be written to one stream; past it they are dropped, as a full
/// kernel buffer drops datagrams (the stack retransmits what matters).
const OUT_QUEUE: usize = 256;
/// Messages read from a socket's streams and not yet taken by the driver; past it, dropped.
const IN_QUEUE: usize = 256;
/// Connecting and the TLS handshake each get this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A failed or dropped stream is reopened at most this often per (socket, server).
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// STUN message type of an Allocate success response (RFC 8656 §7.3): a stream that carried
/// one holds an allocation.
const ALLOCATE_SUCCESS: [u8; 2] = [0x01, 0x03];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// How a registered server is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Tcp,
    /// TLS, verifying the certificate for this name (the URL's host).
    Tls(String),
}

impl StreamKind {
    /// `tcp` or `tls`, as `peers --json` reports it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls(_) => "tls",
        }
    }
}

/// What became of one of the connection's TURN servers (any transport), for its owner:
/// what to tell the operator (`ICE_SERVER_ERROR`) and whether the relayed path is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnOutcome {
    /// It gave a relay candidate.
    Relayed,
    /// Its TCP/TLS stream could not be opened, or broke before an allocation: why, and what
    /// to do.
    StreamFailed(String),
    /// Its TCP/TLS stream broke after carrying an allocation, which the server dropped with it.
    StreamLost(String),
    /// It refused the allocation: the server's error.
    Refused(String),
    /// The relayer gave up waiting for its answer.
    NoAnswer,
}

/// Where [`TurnOutcome`]s go: `(url, outcome)`, the URL as the stack names the server.
pub(crate) type TurnSink = Box<dyn Fn(&str, TurnOutcome) + Send + Sync>;

/// One connection's stream-transport TURN servers, shared by its runtime and its sockets.
#[derive(Default)]
pub(crate) struct TurnStreams {
    /// Server address → how it is reached and its URL.
    servers: Mutex<HashMap<SocketAddr, (StreamKind, String)>>,
    /// Keeps the lock off the data path of connections without such servers.
    any: AtomicBool,
    dropped: AtomicU64,
    sink: std::sync::OnceLock<TurnSink>,
}

impl std::fmt::Debug for TurnStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnStreams")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl TurnStreams {
    /// From now on TURN traffic to `server` (named `url`) goes over `kind`.
    pub(crate) fn register(&self, server: SocketAddr, kind: StreamKind, url: &str) {
        tracing::debug!("TURN server {server} is reached over {}", kind.name());
        lock(&self.servers).insert(server, (kind, url.to_owned()));
        self.any.store(true, Ordering::Release);
    }

    fn kind(&self, server: SocketAddr) -> Option<StreamKind> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.servers).get(&server).map(|(k, _)| k.clone())
    }

    /// The transport of the first registered server (`tcp`/`tls`), if any.
    pub(crate) fn transport(&self) -> Option<&'static str> {
        lock(&self.servers).values().next().map(|(k, _)| k.name())
    }

    /// Where outcomes go from now on (once; later calls are ignored).
    pub(crate) fn set_sink(&self, sink: TurnSink) {
        let _ = self.sink.set(sink);
    }

    /// Hands `outcome` for the server `url` to the owner.
    pub(crate) fn tell(&self, url: &str, outcome: TurnOutcome) {
        if let Some(sink) = self.sink.get() {
            sink(url, outcome);
        }
    }

    /// The relayer's verdict on an allocation (`error`: the server's refusal; `None`: no
    /// answer).
    pub(crate) fn allocation_failed(&self, url: &str, error: Option<&str>) {
        let outcome = match error {
            Some(e) => TurnOutcome::Refused(e.to_owned()),
            None => TurnOutcome::NoAnswer,
        };
        self.tell(url, outcome);
    }

    /// A stream to `server` failed (`allocated`: after carrying an allocation).
    fn fail(&self, server: SocketAddr, allocated: bool, message: String) {
        tracing::warn!("{message}");
        let url = lock(&self.servers).get(&server).map(|(_, u)| u.clone());
        if let Some(url) = url {
            let outcome = if allocated {
                TurnOutcome::StreamLost(message)
            } else {
                TurnOutcome::StreamFailed(message)
            };
            self.tell(&url, outcome);
        }
    }

    fn drop_one(&self, why: &str) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::debug!("TURN stream: {n} messages dropped ({why})");
        }
    }
}

/// A stream being written, and when it was opened.
#[derive(Debug)]
struct Link {
    tx: mpsc::Sender<Vec<u8>>,
    task: tokio::task::AbortHandle,
    opened: Instant,
}

/// A connection's UDP socket that carries TURN traffic for registered servers over streams
/// (see the module docs).
#[derive(Debug)]
pub(crate) struct StreamTurnSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    local: SocketAddr,
    streams: Arc<TurnStreams>,
    links: Mutex<HashMap<SocketAddr, Link>>,
    inbound: Mutex<Inbound>,
}

/// What the socket's streams delivered and the driver has not read yet.
///
/// The queue is made when the first stream opens: most connections never reach a TURN server
/// over a stream, and a tokio channel holds a block of 32 slots from the start (2.3 KB, two
/// sockets per connection). Until then the reader's waker is kept, so that a queue made
/// between two reads wakes it to read from the queue too.
#[derive(Debug, Default)]
struct Inbound {
    queue: Option<(mpsc::Sender<Delivered>, mpsc::Receiver<Delivered>)>,
    reader: Option<Waker>,
}

/// A message a stream delivered, with the server it came from.
type Delivered = (SocketAddr, Vec<u8>);

impl Inbound {
    /// The queue's sending side, made (and the waiting reader woken) on first use.
    fn sender(&mut self) -> mpsc::Sender<Delivered> {
        if let Some((tx, _)) = &self.queue {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(IN_QUEUE);
        self.queue = Some((tx.clone(), rx));
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        tx
    }

    /// A datagram from the queue, or (no queue yet) the reader's waker kept for [`Self::sender`].
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivered>> {
        match &mut self.queue {
            Some((_, rx)) => rx.poll_recv(cx),
            None => {
                if !self
                    .reader
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    self.reader = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl StreamTurnSocket {
    /// Wraps `inner`, a socket of the connection whose servers `streams` lists.
    pub(crate) fn new(
        inner: Arc<dyn AsyncUdpSocket>,
        streams: Arc<TurnStreams>,
    ) -> io::Result<Self> {
        Ok(Self {
            local: inner.local_addr()?,
            inner,
            streams,
            links: Mutex::default(),
            inbound: Mutex::default(),
        })
    }

    /// Queues `datagram` on the stream to `server`, opening it if needed.
    fn send_on_stream(&self, server: SocketAddr, kind: StreamKind, datagram: &[u8]) {
        if datagram.len() > MAX_FRAME {
            self.streams.drop_one("too large");
            return;
        }
        let mut links = lock(&self.links);
        let open = links.get(&server).is_some_and(|l| !l.tx.is_closed());
        if !open {
            if links
                .get(&server)
                .is_some_and(|l| l.opened.elapsed() < RETRY_AFTER)
            {
                self.streams.drop_one("stream down");
                return;
            }
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                self.streams.drop_one("no runtime");
                return;
            };
            let (tx, rx) = mpsc::channel(OUT_QUEUE);
            let task = handle.spawn(run_link(
                self.local,
                server,
                kind,
                rx,
                lock(&self.inbound).sender(),
                Arc::clone(&self.streams),
            ));
            if let Some(old) = links.insert(
                server,
                Link {
                    tx,
                    task: task.abort_handle(),
                    opened: Instant::now(),
                },
            ) {
                old.task.abort();
            }
        }
        let Some(link) = links.get(&server) else {
            return;
        };
        if link.tx.try_send(datagram.to_vec()).is_err() {
            self.streams.drop_one("write queue full");
        }
    }
}

impl Drop for StreamTurnSocket {
    fn drop(&mut self) {
        for link in lock(&self.links).values() {
            link.task.abort();
        }
    }
}

impl AsyncUdpSocket for StreamTurnSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        if let Some(kind) = self.streams.kind(transmit.destination) {
            if belongs_on_stream(transmit.contents) {
                // A GSO batch (vendor patch 39) is several datagrams: each is framed on its own.
                for datagram in crate::runtime::datagrams(transmit) {
                    self.send_on_stream(transmit.destination, kind.clone(), datagram);
                }
                return Poll::Ready(Ok(transmit.contents.len()));
            }
        }
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        if let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) {
            if let Poll::Ready(Some((from, data))) = lock(&self.inbound).poll_next(cx) {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                *m = RecvMeta::default();
                m.addr = from;
                m.len = n;
                m.stride = n.max(1);
                m.dst_ip = Some(self.local.ip());
                return Poll::Ready(Ok(1));
            }
        }
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

/// A byte stream to a TURN server, TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens the stream from `local`'s address to `server`.
async fn connect(
    local: SocketAddr,
    server: SocketAddr,
    kind: &StreamKind,
) -> Result<Box<dyn Stream>, String> {
    let socket = if server.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| format!("cannot open a TCP socket: {e}"))?;
    // From the same interface as the UDP socket the TURN client believes it uses.
    if !local.ip().is_unspecified() && local.is_ipv4() == server.is_ipv4() {
        let _ = socket.bind(SocketAddr::new(local.ip(), 0));
    }
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(server))
        .await
        .map_err(|_| {
            format!(
                "no TCP connection within {CONNECT_TIMEOUT:?}: is the TURN server running, \
                 and reachable from this host on TCP port {}?",
                server.port()
            )
        })?
        .map_err(|e| {
            format!(
                "TCP connection refused or unreachable ({e}): is the TURN server running and \
                 listening on TCP port {}, and reachable from this host?",
                server.port()
            )
        })?;
    let _ = tcp.set_nodelay(true);
    let StreamKind::Tls(name) = kind else {
        return Ok(Box::new(tcp));
    };
    let config = crate::turn_tls::tls_config()
        .await
        .map_err(|e| e.to_string())?;
    let server_name = rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|e| format!("{name:?} is not a valid TLS server name: {e}"))?;
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .map_err(|_| format!("no TLS handshake within {CONNECT_TIMEOUT:?}"))?
    .map_err(|e| {
        let cert = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
        if cert {
            format!(
                "TLS certificate not trusted: {e}. The certificate must name {name} (subjectAltName) \
                 and chain to the system's roots or to turn_tls.ca_file (set it to the server's CA \
                 or self-signed certificate, PEM)"
            )
        } else {
            format!("TLS handshake failed: {e}")
        }
    })?;
    Ok(Box::new(tls))
}

/// One stream's life: connect, then write what the socket queues and deliver what arrives.
async fn run_link(
    local: SocketAddr,
    server: SocketAddr,
    kind: StreamKind,
    mut out: mpsc::Receiver<Vec<u8>>,
    deliver: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    streams: Arc<TurnStreams>,
) {
    let what = format!("TURN over {} to {server}", kind.name());
    let mut stream = match connect(local, server, &kind).await {
        Ok(s) => s,
        Err(e) => {
            streams.fail(server, false, format!("{what}: {e}"));
            return;
        }
    };
    // Whether the server granted an allocation on this stream (it dies with the stream).
    let mut allocated = false;
    tracing::debug!("{what}: connected");
    let mut deframer = Deframer::default();
    let mut read_buf = vec![0u8; 16 * 1024];
    let mut write_buf = Vec::new();
    let end = loop {
        tokio::select! {
            queued = out.recv() => {
                // The socket (and with it the connection) is gone.
                let Some(first) = queued else { return };
                write_buf.clear();
                encode(&first, &mut write_buf);
                // Whatever else is queued goes in the same write (one TLS record, one segment).
                while write_buf.len() < 64 * 1024 {
                    match out.try_recv() {
                        Ok(next) => encode(&next, &mut write_buf),
                        Err(_) => break,
                    }
                }
                if let Err(e) = stream.write_all(&write_buf).await {
                    break format!("write failed: {e}");
                }
                if let Err(e) = stream.flush().await {
                    break format!("write failed: {e}");
                }
            }
            read = stream.read(&mut read_buf) => {
                let n = match read {
                    Ok(0) => break "the server closed the connection".to_owned(),
                    Ok(n) => n,
                    Err(e) => break format!("read failed: {e}"),
                };
                deframer.push(&read_buf[..n]);
                let mut bad = None;
                loop {
                    match deframer.next_frame() {
                        Ok(Some(frame)) => {
                            allocated |= frame.starts_with(&ALLOCATE_SUCCESS);
                            match deliver.try_send((server, frame.to_vec())) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => streams.drop_one("receive queue full"),
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            bad = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = bad {
                    break format!("closed: {e}");
                }
            }
        }
    };
    let message = if allocated {
        format!("{what}: {end}; its allocation is lost with it (the connection gathers again)")
    } else {
        format!("{what}: {end}")
    };
    streams.fail(server, allocated, message);
}

#[cfg(test)]
#[path = "turn_stream_tests.rs"]
mod tests;
