//! A thin [`Runtime`] wrapper over webrtc's `TokioRuntime`: the one place, short of forking
//! the crate, where we reach the driver's sockets, timers and threads.
//!
//! * Sockets: larger kernel buffers, activity and send counts (see [`ConnSocket`]).
//! * Timers: handshakes are expedited ([`TunedRuntime::expedite`]); housekeeping sleeps are
//!   aligned to a host-wide grid ([`coalesced`]) so that idle connections wake together.
//! * Threads: drivers run on our own reactor threads (`reactor.rs`).
//!
//! Why the buffers: the driver never sets `SO_RCVBUF`, and at the kernel default (~208 KiB) a bulk
//! data-channel transfer overruns the socket while the single driver task is busy, which shows
//! up as `RcvbufErrors` in `/proc/net/snmp` and as SCTP retransmission stalls (1–6 MB/s
//! instead of 100+ MB/s). The driver hands every socket it binds (the mDNS one included)
//! through [`Runtime::wrap_udp_socket`], so this is the one place we can reach them without
//! forking the crate.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

// The timer grid lives in `timer_grid.rs`; these names are the ones the rest of the crate
// reaches through this module.
pub(crate) use crate::timer_grid::{next_slot_boundary, STOCK_TIMERS};
use crate::timer_grid::{DataActivity, SleepPlan};

/// Delegates to [`TokioRuntime`] except for socket wrapping, sleeps and reactor threads
/// (see the module docs).
///
/// It also owns the "expedite" window (see [`TunedRuntime::expedite`]), so there is one
/// `TunedRuntime` per connection.
#[derive(Debug)]
pub(crate) struct TunedRuntime {
    inner: TokioRuntime,
    recv_buffer: usize,
    send_buffer: usize,
    /// Until this instant every driver sleep is capped at [`EXPEDITED_TICK`].
    expedite_until: Mutex<Option<Instant>>,
    /// When this connection last sent or received SCTP data (see [`DataActivity`]).
    activity: Arc<DataActivity>,
    /// The wake-up chosen for the core's current deadline (see [`SleepPlan`]).
    plan: Mutex<SleepPlan>,
    /// Single-port mode: this connection's registration with the process's UDP mux.
    mux: Option<crate::udp_mux::MuxConn>,
    /// TURN servers reached over TCP or TLS (`turn_stream.rs`).
    turn_streams: Arc<crate::turn_stream::TurnStreams>,
}

/// The mDNS socket's port, left out of single-port mode.
const MDNS_PORT: u16 = 5353;

/// Longest driver sleep inside an expedite window (tokio's timer resolution is 1 ms).
const EXPEDITED_TICK: Duration = Duration::from_millis(1);

impl TunedRuntime {
    /// `recv_buffer`/`send_buffer` of 0 leave the kernel default in place.
    pub(crate) fn new(recv_buffer: usize, send_buffer: usize) -> Self {
        Self {
            inner: TokioRuntime,
            recv_buffer,
            send_buffer,
            expedite_until: Mutex::new(None),
            activity: Arc::new(DataActivity::default()),
            plan: Mutex::new(SleepPlan::default()),
            mux: None,
            turn_streams: Arc::default(),
        }
    }

    /// This connection's TURN servers reached over TCP or TLS.
    pub(crate) fn turn_streams(&self) -> &crate::turn_stream::TurnStreams {
        &self.turn_streams
    }

    /// Single-port mode: the connection's UDP sockets become virtual sockets on `mux`.
    pub(crate) fn with_mux(mut self, mux: crate::udp_mux::MuxConn) -> Self {
        self.mux = Some(mux);
        self
    }

    /// Single-port mode: checks carrying `ufrag` are routed to this connection.
    pub(crate) fn set_local_ufrag(&self, ufrag: &str) {
        if let Some(mux) = &self.mux {
            mux.set_ufrag(ufrag);
        }
    }

    /// Single-port mode: whether this connection was refused an address pair that another
    /// live connection holds (see `mux_route.rs`).
    pub(crate) fn single_port_collided(&self) -> bool {
        self.mux.as_ref().is_some_and(|m| m.collided())
    }

    /// Caps the driver's timer sleeps at 1 ms for the next `window`.
    ///
    /// Why: the driver only calls the core's `handle_timeout` when its sleep ends, and some
    /// packets are only released there. In particular the DTLS client's first ClientHello is
    /// queued inside the DTLS endpoint when ICE selects a pair, and only `handle_timeout`
    /// drains that queue; the core's next deadline is then the ICE check/keepalive tick, so
    /// the handshake started up to 200 ms late. Every handler's `handle_timeout` checks its
    /// own deadlines, so waking early is harmless; the window keeps the extra wakeups
    /// (1 kHz) to the few milliseconds a handshake takes.
    pub(crate) fn expedite(&self, window: Duration) {
        let until = Instant::now() + window;
        let mut guard = match self.expedite_until.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Some(guard.map_or(until, |cur| cur.max(until)));
    }

    /// Ends any expedite window early (the handshakes it was for are done).
    pub(crate) fn end_expedite(&self) {
        let mut guard = match self.expedite_until.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = None;
    }

    fn expedited(&self, duration: Duration) -> Duration {
        let guard = match self.expedite_until.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match *guard {
            Some(until) if Instant::now() < until => duration.min(EXPEDITED_TICK),
            _ => duration,
        }
    }
}

impl Runtime for TunedRuntime {
    // The stack's tasks run in the span that was current when they were spawned (the daemon's
    // `peer{room, peer}` span around the connection's creation), so its log lines say which
    // connection they are about.
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner
            .spawn(Box::pin(tracing::Instrument::in_current_span(future)))
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        Box::new(crate::reactor::ReactorJoinHandle(crate::reactor::spawn(
            reactor_pool_size,
            Box::pin(tracing::Instrument::in_current_span(future)),
        )))
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        if let Some(mux) = &self.mux {
            // The mDNS socket (fixed port 5353, multicast) is not an ICE socket.
            if socket.local_addr()?.port() != MDNS_PORT {
                // Wrapped like any other socket, so SCTP data activity is still noted.
                return Ok(Arc::new(ConnSocket(
                    self.turn_stream_socket(mux.socket_for(socket)?)?,
                    Arc::clone(&self.activity),
                )));
            }
        }
        let sock_ref = socket2::SockRef::from(&socket);
        raise_buffer(&sock_ref, self.recv_buffer, Direction::Recv);
        raise_buffer(&sock_ref, self.send_buffer, Direction::Send);
        let mdns = socket.local_addr()?.port() == MDNS_PORT;
        let plain = self.inner.wrap_udp_socket(socket)?;
        // The mDNS socket only sends and answers multicast queries: it never talks to a TURN
        // server, so it gets no stream wrapper (and none of its per-connection state).
        let wrapped = if mdns {
            plain
        } else {
            self.turn_stream_socket(plain)?
        };
        Ok(Arc::new(ConnSocket(wrapped, Arc::clone(&self.activity))))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        if STOCK_TIMERS.load(std::sync::atomic::Ordering::Relaxed) {
            return self.inner.sleep(duration);
        }
        let now = Instant::now();
        let requested = self.expedited(duration);
        let activity = self.activity.state(now);
        let wake = match self.plan.lock() {
            Ok(mut plan) => plan.wake(requested, now, activity),
            Err(poisoned) => poisoned.into_inner().wake(requested, now, activity),
        };
        tracing::trace!(target: "peerix_rtc::timer", requested = ?duration, sleep = ?wake.saturating_duration_since(now), "driver sleep");
        // An absolute deadline, so a grid instant stays exactly on the grid (see reactor.rs).
        Box::pin(tokio::time::sleep_until(wake.into()))
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "peerix-tuned-tokio"
    }

    fn register_turn_stream(
        &self,
        server: SocketAddr,
        tls_server_name: Option<&str>,
        url: &str,
    ) -> bool {
        use crate::turn_stream::StreamKind;
        let kind = tls_server_name.map_or(StreamKind::Tcp, |n| StreamKind::Tls(n.to_owned()));
        self.turn_streams.register(server, kind, url);
        true
    }

    fn turn_allocation_failed(&self, url: &str, error: Option<&str>) {
        self.turn_streams.allocation_failed(url, error);
    }
}

impl TunedRuntime {
    /// `socket` with TURN over TCP/TLS for the servers the relayer registers later.
    fn turn_stream_socket(
        &self,
        socket: Arc<dyn AsyncUdpSocket>,
    ) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Ok(Arc::new(crate::turn_stream::StreamTurnSocket::new(
            socket,
            Arc::clone(&self.turn_streams),
        )?))
    }
}

/// A connection's socket: notes SCTP data going through it ([`DataActivity`]) and counts its
/// sends ([`udp_send_counts`]). UDP GRO stays on (quinn-udp turns it on): the driver reads
/// every socket into one buffer per thread (vendor patch 40), so GRO no longer costs a 96 KB
/// buffer per socket, and a sender's GSO batch arrives in one read instead of being split by
/// the receiving kernel.
#[derive(Debug)]
struct ConnSocket(Arc<dyn AsyncUdpSocket>, Arc<DataActivity>);

impl AsyncUdpSocket for ConnSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn poll_send(
        &self,
        cx: &mut std::task::Context<'_>,
        transmit: &webrtc::runtime::Transmit<'_>,
    ) -> std::task::Poll<io::Result<usize>> {
        let sent = self.0.poll_send(cx, transmit);
        if matches!(sent, std::task::Poll::Ready(Ok(_))) {
            self.1.saw(transmit.contents);
            UDP_SENDS.count(transmit);
        }
        sent
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [webrtc::runtime::RecvMeta],
    ) -> std::task::Poll<io::Result<usize>> {
        let got = self.0.poll_recv(cx, bufs, meta);
        if let std::task::Poll::Ready(Ok(n)) = got {
            for (buf, m) in bufs.iter().zip(meta.iter()).take(n) {
                self.1.saw(&buf[..m.len.min(buf.len())]);
            }
        }
        got
    }

    fn max_gso_segments(&self) -> usize {
        self.0.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.0.max_gro_segments()
    }
}

/// Datagrams the connections of this process sent on their own UDP sockets, and the
/// `sendmsg` calls that carried them (see [`udp_send_counts`]).
static UDP_SENDS: SendCounter = SendCounter {
    calls: AtomicU64::new(0),
    datagrams: AtomicU64::new(0),
};

struct SendCounter {
    calls: AtomicU64,
    datagrams: AtomicU64,
}

/// The datagrams of `transmit`: one, or the segments of a UDP GSO batch (vendor patch 39).
/// Empty contents have none.
pub(crate) fn datagrams<'a>(
    transmit: &webrtc::runtime::Transmit<'a>,
) -> std::slice::Chunks<'a, u8> {
    let contents = transmit.contents;
    match transmit.segment_size {
        Some(seg) if seg > 0 => contents.chunks(seg),
        _ => contents.chunks(contents.len().max(1)),
    }
}

impl SendCounter {
    fn count(&self, transmit: &webrtc::runtime::Transmit<'_>) {
        // An empty datagram is still one sent.
        let datagrams = datagrams(transmit).len().max(1);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.datagrams
            .fetch_add(datagrams as u64, Ordering::Relaxed);
    }
}

/// UDP sends of this process's connections so far, on their own sockets or single-port mode's
/// shared one (datagrams framed onto a TURN server's TCP or TLS stream are not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpSendCounts {
    /// `sendmsg` calls.
    pub calls: u64,
    /// Datagrams they carried: more than `calls` when runs of datagrams to one address went
    /// out as one UDP GSO call (vendor patch 39).
    pub datagrams: u64,
}

/// How many datagrams this process's connections sent, and in how many calls.
pub fn udp_send_counts() -> UdpSendCounts {
    UdpSendCounts {
        calls: UDP_SENDS.calls.load(Ordering::Relaxed),
        datagrams: UDP_SENDS.datagrams.load(Ordering::Relaxed),
    }
}

/// Turns UDP GRO back off on a socket quinn-udp enabled it on, for a reader that takes one
/// datagram per read (single-port mode's receive loop): with GRO on, one read may return
/// several datagrams as one.
#[cfg(target_os = "linux")]
pub(crate) fn disable_gro(fd: std::os::fd::RawFd) {
    let off: libc::c_int = 0;
    // SAFETY: `fd` is the live socket just wrapped (the wrapper owns it and outlives this
    // call), and `off` is a c_int whose address and exact size are passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_GRO,
            std::ptr::addr_of!(off).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!("turning UDP_GRO off failed: {}", io::Error::last_os_error());
    }
}

/// Which kernel socket buffer to raise.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    Recv,
    Send,
}

/// Raises a socket buffer to `size` bytes and returns the size the kernel reports afterwards
/// (Linux reports double the requested value, the bookkeeping overhead it reserves).
///
/// Best effort: a failure only costs throughput, never correctness, so it never fails the
/// connection. The plain option is capped by `net.core.{r,w}mem_max` (often 208 KiB); a
/// privileged daemon (root or CAP_NET_ADMIN) then gets the full size through the `…FORCE`
/// variant.
pub(crate) fn raise_buffer(sock: &socket2::Socket, size: usize, direction: Direction) -> usize {
    let current = || match direction {
        Direction::Recv => sock.recv_buffer_size(),
        Direction::Send => sock.send_buffer_size(),
    };
    if size == 0 {
        return current().unwrap_or(0);
    }
    let set = match direction {
        Direction::Recv => sock.set_recv_buffer_size(size),
        Direction::Send => sock.set_send_buffer_size(size),
    };
    if let Err(err) = set {
        tracing::debug!("setting {direction:?} buffer to {size} failed: {err}");
    }
    let effective = current().unwrap_or(0);
    if effective < size {
        #[cfg(target_os = "linux")]
        force_buffer(sock, size, direction);
        return current().unwrap_or(effective);
    }
    effective
}

#[cfg(target_os = "linux")]
fn force_buffer(sock: &socket2::Socket, size: usize, direction: Direction) {
    use std::os::fd::AsRawFd;

    let Ok(value) = libc::c_int::try_from(size) else {
        return;
    };
    let option = match direction {
        Direction::Recv => libc::SO_RCVBUFFORCE,
        Direction::Send => libc::SO_SNDBUFFORCE,
    };
    // SAFETY: `sock` is a live socket for the duration of the call, and `value` is a c_int
    // whose address and exact size are passed, as setsockopt(2) requires.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(
            "{direction:?} buffer capped by the kernel (no CAP_NET_ADMIN for the FORCE option): {}",
            io::Error::last_os_error()
        );
    }
}

/// The receive buffer a UDP socket actually gets for a request of `requested` bytes in this
/// process (same limits and privileges as the driver's sockets), measured on a throwaway
/// socket. 0 if it cannot be measured.
pub(crate) fn probe_recv_buffer(requested: usize) -> usize {
    match socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None) {
        Ok(sock) => raise_buffer(&sock, requested, Direction::Recv),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GRO stays on: the driver reads into one buffer per thread (vendor patch 40), so it
    /// costs no buffer per socket, and a sender's GSO batch arrives in one read.
    #[test]
    fn wrapped_sockets_keep_gro_on() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let tuned = TunedRuntime::new(0, 0);
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            socket.set_nonblocking(true).expect("nonblocking");
            #[cfg(target_os = "linux")]
            let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
            let wrapped = tuned.wrap_udp_socket(socket).expect("wrap");
            assert!(wrapped.max_gro_segments() > 1, "GRO not reported");
            #[cfg(target_os = "linux")]
            {
                let mut value: libc::c_int = -1;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: `fd` belongs to `wrapped`, alive here; value/len describe a c_int.
                let rc = unsafe {
                    libc::getsockopt(
                        fd,
                        libc::SOL_UDP,
                        libc::UDP_GRO,
                        std::ptr::addr_of_mut!(value).cast(),
                        &mut len,
                    )
                };
                assert_eq!(rc, 0, "getsockopt: {}", io::Error::last_os_error());
                assert_eq!(value, 1, "UDP_GRO is off");
            }
        });
    }
}
