//! Single-port mode (`RtcConfig::udp_port`): every peer connection of the process shares one
//! UDP socket per local address, all on one port, so an operator opens one port in a
//! firewall instead of a range.
//!
//! webrtc 0.21 has no UDP mux: its driver binds a socket per connection and hands it to
//! [`Runtime::wrap_udp_socket`](webrtc::runtime::Runtime::wrap_udp_socket). In this mode our
//! runtime drops that socket and returns a [`VirtualSocket`] instead: its `local_addr` is the
//! shared socket's, its sends go out through the shared socket, and its receive queue is fed
//! by the mux's one receive task per shared socket, which routes each datagram with
//! [`Router`] (see `mux_route.rs` for the rules). The receive tasks run on one thread of
//! their own, so no connection's driver is needed to drain the shared socket. Sends use UDP
//! GSO like a connection's own socket (vendor patch 39), so the mode keeps bulk throughput.
//!
//! TURN: an allocation is keyed by its 5-tuple on the server, so connections cannot share
//! one; single-port mode is for host and server-reflexive candidates (the same choice as
//! Pion's `UDPMux`). Relay candidates gathered from the shared port work for one connection
//! per TURN server at a time; deployments that need TURN for many peers keep the default.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit, UdpSockRef, UdpSocketState};

use crate::mux_route::{parse_stun, ConnId, Router, StunClass};
use crate::runtime::{raise_buffer, Direction};

/// Datagrams routed to one connection's socket but not yet read by its driver. Past it,
/// datagrams are dropped and counted, as a full kernel socket buffer would.
const QUEUE_DATAGRAMS: usize = 1024;
/// Largest datagram read from a shared socket (the stack's own receive buffers are 2 KB; a
/// larger datagram is truncated there as it would be on a socket of its own).
const MAX_DATAGRAM: usize = 65_536;
/// Datagram buffers kept for reuse, and the size of each: a datagram's copy crosses from the
/// mux thread to a reactor thread, and without reuse every one is a cross-thread free that the
/// allocator holds on to (measured as RSS that grew with the number of peers).
const POOL_BUFFERS: usize = 1024;
const POOL_BUFFER_SIZE: usize = 2048;

/// Reads of the shared sockets and of the connections' virtual sockets, and the datagrams
/// they returned, process-wide (see [`mux_recv_counts`]).
static SOCKET_READS: AtomicU64 = AtomicU64::new(0);
static SOCKET_DATAGRAMS: AtomicU64 = AtomicU64::new(0);
static DRIVER_READS: AtomicU64 = AtomicU64::new(0);
static DRIVER_DATAGRAMS: AtomicU64 = AtomicU64::new(0);

/// How single-port mode's receive path batched datagrams since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MuxRecvCounts {
    /// Reads (`recvmmsg` calls that returned data) of the shared sockets.
    pub socket_reads: u64,
    /// Datagrams those reads returned.
    pub socket_datagrams: u64,
    /// Reads of the connections' virtual sockets by their drivers.
    pub driver_reads: u64,
    /// Datagrams those reads returned.
    pub driver_datagrams: u64,
}

/// The process's [`MuxRecvCounts`].
pub fn mux_recv_counts() -> MuxRecvCounts {
    MuxRecvCounts {
        socket_reads: SOCKET_READS.load(Ordering::Relaxed),
        socket_datagrams: SOCKET_DATAGRAMS.load(Ordering::Relaxed),
        driver_reads: DRIVER_READS.load(Ordering::Relaxed),
        driver_datagrams: DRIVER_DATAGRAMS.load(Ordering::Relaxed),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One datagram on its way to a connection.
#[derive(Debug)]
struct Datagram {
    from: SocketAddr,
    data: Vec<u8>,
}

/// The process-wide mux (see the module docs).
#[derive(Debug)]
pub(crate) struct UdpMux {
    router: Mutex<Router>,
    /// One shared socket per local IP, all on `port`.
    sockets: Mutex<HashMap<IpAddr, Arc<SharedSocket>>>,
    queues: Mutex<HashMap<(ConnId, SocketAddr), mpsc::Sender<Datagram>>>,
    /// The shared port: the configured one, or the first one the kernel chose for port 0.
    port: Mutex<u16>,
    recv_buffer: usize,
    send_buffer: usize,
    next_conn: AtomicU64,
    dropped: AtomicU64,
    handle: tokio::runtime::Handle,
    /// Buffers of datagrams already read by their connection (see [`POOL_BUFFERS`]).
    pool: Mutex<Vec<Vec<u8>>>,
    /// The router's clock (see `LIVE_MS` in `mux_route.rs`).
    epoch: std::time::Instant,
}

impl UdpMux {
    /// The process's mux; the first call fixes the port and buffer sizes.
    pub(crate) fn global(
        port: u16,
        recv_buffer: usize,
        send_buffer: usize,
    ) -> io::Result<Arc<Self>> {
        static MUX: OnceLock<Arc<UdpMux>> = OnceLock::new();
        if let Some(mux) = MUX.get() {
            return Ok(Arc::clone(mux));
        }
        let handle = spawn_thread()?;
        let mux = Arc::new(Self {
            router: Mutex::default(),
            sockets: Mutex::default(),
            queues: Mutex::default(),
            port: Mutex::new(port),
            recv_buffer,
            send_buffer,
            next_conn: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
            handle,
            pool: Mutex::default(),
            epoch: std::time::Instant::now(),
        });
        Ok(Arc::clone(MUX.get_or_init(|| mux)))
    }

    /// Registers a new connection.
    pub(crate) fn connect(self: &Arc<Self>) -> MuxConn {
        MuxConn {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            mux: Arc::clone(self),
        }
    }

    /// The shared socket on `ip`, bound on first use.
    fn shared_socket(self: &Arc<Self>, ip: IpAddr) -> io::Result<(SocketAddr, Arc<SharedSocket>)> {
        let mut sockets = lock(&self.sockets);
        if let Some(s) = sockets.get(&ip) {
            return Ok((s.io.local_addr()?, Arc::clone(s)));
        }
        let mut port = lock(&self.port);
        let std = std::net::UdpSocket::bind(SocketAddr::new(ip, *port)).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!(
                    "webrtc.udp_port: cannot bind {ip}:{}: {err}; free that port or set \
                     webrtc.udp_port = 0",
                    *port
                ),
            )
        })?;
        std.set_nonblocking(true)?;
        let sock_ref = socket2::SockRef::from(&std);
        raise_buffer(&sock_ref, self.recv_buffer, Direction::Recv);
        raise_buffer(&sock_ref, self.send_buffer, Direction::Send);
        let local = std.local_addr()?;
        *port = local.port();
        // quinn-udp probes UDP GSO (and turns GRO on, which the receive loop does not expect:
        // one read would return several datagrams as one).
        let batch = UdpSocketState::new(UdpSockRef::from(&std))?;
        #[cfg(target_os = "linux")]
        crate::runtime::disable_gro(std::os::fd::AsRawFd::as_raw_fd(&std));
        let socket = {
            let _enter = self.handle.enter();
            Arc::new(SharedSocket {
                io: tokio::net::UdpSocket::from_std(std)?,
                batch,
            })
        };
        tracing::info!("single-port mode: sharing UDP {local} among all peer connections");
        sockets.insert(ip, Arc::clone(&socket));
        self.handle
            .spawn(receive_loop(Arc::clone(self), local, Arc::clone(&socket)));
        Ok((local, socket))
    }

    fn deliver(&self, local: SocketAddr, from: SocketAddr, data: &[u8]) {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let conn = lock(&self.router).route(local, from, data, now_ms);
        let delivered = conn.is_some_and(|conn| {
            lock(&self.queues).get(&(conn, local)).is_some_and(|tx| {
                let mut buf = lock(&self.pool).pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(data);
                match tx.try_send(Datagram { from, data: buf }) {
                    Ok(()) => true,
                    Err(err) => {
                        self.recycle(err.into_inner().data);
                        false
                    }
                }
            })
        });
        if !delivered {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::debug!(
                    "single-port mode: {n} datagrams dropped (unroutable or queue full)"
                );
            }
        }
    }
}

impl UdpMux {
    /// Keeps `buf` for a later datagram (bounded, ordinary-sized buffers only).
    fn recycle(&self, mut buf: Vec<u8>) {
        if buf.capacity() > POOL_BUFFER_SIZE {
            return;
        }
        if buf.capacity() < POOL_BUFFER_SIZE {
            buf.reserve_exact(POOL_BUFFER_SIZE - buf.len());
        }
        let mut pool = lock(&self.pool);
        if pool.len() < POOL_BUFFERS {
            pool.push(buf);
        }
    }
}

/// The mux's thread: a current-thread runtime that owns the shared sockets and their
/// receive tasks for the life of the process.
fn spawn_thread() -> io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("peerix-udpmux".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// Datagrams one read of a shared socket may return (`recvmmsg`). Each has a slot of
/// [`MAX_DATAGRAM`] bytes; only the pages a datagram lands on are ever touched.
const RECV_BATCH: usize = 16;

async fn receive_loop(mux: Arc<UdpMux>, local: SocketAddr, socket: Arc<SharedSocket>) {
    // Why batches: one system call and one wake-up per burst instead of per datagram. It
    // halved the mux thread's wake-ups but not the mode's cost in throughput, which is the
    // per-datagram routing and the hop to the connection's thread (BENCHMARKS.md, session 16).
    let mut storage = vec![0u8; RECV_BATCH * MAX_DATAGRAM];
    let mut meta = [RecvMeta::default(); RECV_BATCH];
    loop {
        let got = {
            let mut bufs: Vec<io::IoSliceMut<'_>> = storage
                .chunks_mut(MAX_DATAGRAM)
                .map(io::IoSliceMut::new)
                .collect();
            socket
                .io
                .async_io(tokio::io::Interest::READABLE, || {
                    socket
                        .batch
                        .recv(UdpSockRef::from(&socket.io), &mut bufs, &mut meta)
                })
                .await
        };
        match got {
            Ok(n) => {
                SOCKET_READS.fetch_add(1, Ordering::Relaxed);
                SOCKET_DATAGRAMS.fetch_add(n as u64, Ordering::Relaxed);
                for (m, slot) in meta.iter().zip(storage.chunks(MAX_DATAGRAM)).take(n) {
                    let data = &slot[..m.len.min(slot.len())];
                    // GRO is off on shared sockets, so this is one datagram; split anyway.
                    for datagram in data.chunks(m.stride.max(1)) {
                        mux.deliver(local, m.addr, datagram);
                    }
                }
            }
            // ICMP errors (port unreachable from a peer that left) surface here on Linux;
            // they concern one remote, never the shared socket.
            Err(err) => tracing::trace!("single-port mode: receive on {local}: {err}"),
        }
    }
}

/// One connection's registration; dropping it forgets the connection's routes.
#[derive(Debug)]
pub(crate) struct MuxConn {
    id: ConnId,
    mux: Arc<UdpMux>,
}

impl MuxConn {
    /// The connection's local ICE ufrag is `ufrag` (checks for it are routed here).
    pub(crate) fn set_ufrag(&self, ufrag: &str) {
        lock(&self.mux.router).set_ufrag(self.id, ufrag);
    }

    /// Whether this connection was refused an address pair another live connection holds
    /// (two connections between the same two single-port daemons; see `mux_route.rs`).
    pub(crate) fn collided(&self) -> bool {
        lock(&self.mux.router).collided(self.id)
    }

    /// A virtual socket on the shared socket for `bound`'s local IP, replacing `bound` (the
    /// socket the driver bound for this connection, closed here).
    pub(crate) fn socket_for(
        &self,
        bound: std::net::UdpSocket,
    ) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let ip = bound.local_addr()?.ip();
        drop(bound);
        let (local, shared) = self.mux.shared_socket(ip)?;
        let (tx, rx) = mpsc::channel(QUEUE_DATAGRAMS);
        lock(&self.mux.queues).insert((self.id, local), tx.clone());
        Ok(Arc::new(VirtualSocket {
            conn: self.id,
            local,
            shared,
            tx,
            rx: Mutex::new(rx),
            held: Mutex::new(None),
            mux: Arc::clone(&self.mux),
        }))
    }
}

impl Drop for MuxConn {
    fn drop(&mut self) {
        lock(&self.mux.router).forget(self.id);
    }
}

/// One shared socket, and its UDP GSO state.
#[derive(Debug)]
pub(crate) struct SharedSocket {
    io: tokio::net::UdpSocket,
    batch: UdpSocketState,
}

impl SharedSocket {
    /// Sends one datagram, or a GSO batch of them, as webrtc's own tokio socket does.
    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        loop {
            match self.io.poll_send_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            // Through `try_io`, so that tokio learns when the socket stops being writable
            // (otherwise `poll_send_ready` keeps answering ready and this loop spins).
            match self.io.try_io(tokio::io::Interest::WRITABLE, || {
                self.batch
                    .try_send(UdpSockRef::from(&self.io), transmit)
                    .map(|()| transmit.contents.len())
            }) {
                Err(ref e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

/// A connection's view of a shared socket (see the module docs).
#[derive(Debug)]
struct VirtualSocket {
    conn: ConnId,
    local: SocketAddr,
    shared: Arc<SharedSocket>,
    /// Our entry in the mux's queue table, to recognise it on drop.
    tx: mpsc::Sender<Datagram>,
    rx: Mutex<mpsc::Receiver<Datagram>>,
    /// A datagram taken from `rx` that did not fit the previous read's batch.
    held: Mutex<Option<Datagram>>,
    mux: Arc<UdpMux>,
}

impl AsyncUdpSocket for VirtualSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        // Only requests are remembered; checking the class first keeps the router's lock
        // off the data path.
        for datagram in crate::runtime::datagrams(transmit) {
            if parse_stun(datagram).is_some_and(|i| i.class == StunClass::Request) {
                lock(&self.mux.router).on_send(self.conn, datagram);
            }
        }
        self.shared.poll_send(cx, transmit)
    }

    fn max_gso_segments(&self) -> usize {
        self.shared.batch.max_gso_segments()
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        let mut rx = lock(&self.rx);
        let mut held = lock(&self.held);
        let first = match held.take() {
            Some(d) => d,
            None => match rx.poll_recv(cx) {
                Poll::Ready(Some(d)) => d,
                // The sender lives in the mux's table until this socket is dropped.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            },
        };
        let stride = first.data.len().min(buf.len());
        buf[..stride].copy_from_slice(&first.data[..stride]);
        let (from, mut len, mut count) = (first.from, stride, 1);
        self.mux.recycle(first.data);
        // Datagrams of the same size from the same sender that are queued already join this
        // read as one GRO-style batch, which the driver splits by `stride`: one buffer and
        // one pass through the driver for a burst, as a socket of its own with GRO gives.
        while stride > 0 && len + stride <= buf.len() {
            let Ok(d) = rx.try_recv() else { break };
            if d.from != from || d.data.len() > stride {
                *held = Some(d);
                // Read at once on the next poll, which nothing else would wake.
                cx.waker().wake_by_ref();
                break;
            }
            let n = d.data.len();
            buf[len..len + n].copy_from_slice(&d.data);
            len += n;
            count += 1;
            self.mux.recycle(d.data);
            // Only the last datagram of a batch may be shorter.
            if n < stride {
                break;
            }
        }
        *m = RecvMeta::default();
        m.addr = from;
        m.len = len;
        m.stride = stride;
        m.dst_ip = Some(self.local.ip());
        DRIVER_READS.fetch_add(1, Ordering::Relaxed);
        DRIVER_DATAGRAMS.fetch_add(count, Ordering::Relaxed);
        Poll::Ready(Ok(1))
    }
}

impl Drop for VirtualSocket {
    fn drop(&mut self) {
        // An ICE restart rebinds the connection's sockets: the replacement for this local
        // address may already be registered, and its queue and routes must stay.
        let mut queues = lock(&self.mux.queues);
        let key = (self.conn, self.local);
        if queues.get(&key).is_some_and(|tx| tx.same_channel(&self.tx)) {
            queues.remove(&key);
            drop(queues);
            lock(&self.mux.router).forget_local(self.conn, self.local);
        }
    }
}
