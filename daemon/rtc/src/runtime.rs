//! A thin [`Runtime`] wrapper over webrtc's `TokioRuntime`: the one place, short of forking
//! the crate, where we reach the driver's sockets, timers and threads.
//!
//! * Sockets: larger kernel buffers, and UDP GRO off (see [`NoGro`]).
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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

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
                return Ok(Arc::new(NoGro(
                    self.turn_stream_socket(mux.socket_for(socket)?)?,
                    Arc::clone(&self.activity),
                )));
            }
        }
        let sock_ref = socket2::SockRef::from(&socket);
        raise_buffer(&sock_ref, self.recv_buffer, Direction::Recv);
        raise_buffer(&sock_ref, self.send_buffer, Direction::Send);
        #[cfg(target_os = "linux")]
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let wrapped = self.turn_stream_socket(self.inner.wrap_udp_socket(socket)?)?;
        #[cfg(target_os = "linux")]
        disable_gro(fd);
        Ok(Arc::new(NoGro(wrapped, Arc::clone(&self.activity))))
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
        let d = self.expedited(duration);
        // While SCTP data moves, the long timers are its own (T3-rtx, delayed SACK): they must
        // fire when due, not up to a grid step later (see [`DataActivity`]).
        let d = if self.activity.recent(now) {
            d
        } else {
            coalesced(d, now)
        };
        tracing::trace!(target: "peerix_rtc::timer", requested = ?duration, sleep = ?d, "driver sleep");
        // An absolute deadline, so a grid instant stays exactly on the grid (see reactor.rs).
        match now.checked_add(d) {
            Some(deadline) => Box::pin(tokio::time::sleep_until(deadline.into())),
            None => self.inner.sleep(d),
        }
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

/// Set by [`crate::use_stock_timers`] (benchmarks): sleeps are passed through untouched.
pub(crate) static STOCK_TIMERS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Sleeps at least this long are "housekeeping" and get aligned to [`COALESCE_GRID`].
const COALESCE_MIN: Duration = Duration::from_millis(100);
/// The shared wake-up grid of housekeeping timers: six of tokio's 64 ms wheel slots (see
/// `reactor.rs`), about two ICE ticks.
const COALESCE_GRID: Duration = Duration::from_millis(384);

/// Aligns a long driver sleep so it ends on the host-wide [`COALESCE_GRID`].
///
/// Why: an idle connection still wakes its driver every 200 ms (the ICE agent's tick, whose
/// floor is a hard-coded 200 ms in `rtc-ice` 0.21 whatever the configured check interval),
/// and each wake-up of a reactor thread costs a context switch and a full pass over the
/// connection's handlers (0.2–0.6 ms of CPU measured on a shared 2-core VM). With the
/// deadlines of all connections on one grid, the connections sharing a reactor thread wake
/// together, so an idle daemon costs a few wake-ups per second per thread instead of five
/// per connection. Only long timers are moved, never later than one grid step: the ICE tick
/// (keepalives are due every 2 s, disconnection is declared after 5 s), delayed SACKs
/// (200 ms) and retransmission timers (≥ 1 s). Handshake-time timers are shorter than
/// [`COALESCE_MIN`] and the expedite window caps sleeps at 1 ms, so setup latency is
/// untouched, and traffic wakes the driver through its sockets regardless of timers.
fn coalesced(duration: Duration, now: Instant) -> Duration {
    if duration < COALESCE_MIN {
        return duration;
    }
    match now.checked_add(duration) {
        Some(deadline) => next_multiple(deadline, COALESCE_GRID).saturating_duration_since(now),
        None => duration,
    }
}

/// The grid's origin in this process (fixed by the first call).
fn epoch(now: Instant) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| grid_epoch(now))
}

/// The first instant at or after `t` that is a whole number of `step`s after the epoch.
fn next_multiple(t: Instant, step: Duration) -> Instant {
    let epoch = epoch(t);
    let step = step.as_nanos();
    let since = t.saturating_duration_since(epoch).as_nanos();
    let rounded = since.div_ceil(step) * step;
    epoch + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

/// The first instant at or after `now` that is a whole number of tokio timer-wheel slots
/// after the grid's epoch (see `reactor.rs`). The grid step is a multiple of the slot, so
/// every grid instant is such a boundary too.
pub(crate) fn next_slot_boundary(now: Instant) -> Instant {
    next_multiple(now, crate::reactor::WHEEL_SLOT)
}

/// An instant on the grid shared by every process on this host: the grid is anchored to whole
/// multiples of [`COALESCE_GRID`] since the Unix epoch, so daemons on one host (and the
/// connections between them) tend to wake at the same instants, and a keepalive that arrives
/// while its receiver is awake for its own timers costs no extra wake-up.
fn grid_epoch(now: Instant) -> Instant {
    let grid = COALESCE_GRID.as_nanos();
    let phase = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % grid)
        .unwrap_or(0);
    now.checked_sub(Duration::from_nanos(u64::try_from(phase).unwrap_or(0)))
        .unwrap_or(now)
}

/// How long after the last SCTP data a connection's timers stay off the grid: longer than
/// the longest T3-rtx interval (the RTO, backed off to at most 3 s by our rtc-sctp patch) and
/// the 200 ms delayed SACK, so every retransmission timer armed while data moves fires on time.
const DATA_ACTIVE_WINDOW: Duration = Duration::from_secs(4);

/// When a connection last sent or received SCTP data (DTLS application data, also inside a
/// TURN ChannelData message), as seen by its sockets.
///
/// Why: the grid ([`coalesced`]) may end a sleep up to 384 ms late. That is free for ICE
/// ticks and keepalives but not for SCTP's retransmission timer: on a lossy path a lost chunk
/// that fast retransmit cannot recover waits for T3-rtx with the link idle, and each grid
/// delay adds to that stall. The runtime only sees durations, not which timer asked, so it
/// keeps the grid for connections whose SCTP is quiet (idle connections, the case the grid is
/// for) and leaves timers exact for a few seconds after data moved.
#[derive(Debug)]
struct DataActivity {
    /// Nanoseconds since `base` of the last data packet; 0 = never.
    last: std::sync::atomic::AtomicU64,
    base: Instant,
}

impl Default for DataActivity {
    fn default() -> Self {
        Self {
            last: std::sync::atomic::AtomicU64::new(0),
            base: Instant::now(),
        }
    }
}

impl DataActivity {
    /// Records a datagram if it carries SCTP data.
    fn saw(&self, datagram: &[u8]) {
        if carries_data(datagram) {
            let since = Instant::now().saturating_duration_since(self.base);
            let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX).max(1);
            self.last.store(nanos, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Did data move within [`DATA_ACTIVE_WINDOW`] before `now`?
    fn recent(&self, now: Instant) -> bool {
        let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
        last != 0
            && now.saturating_duration_since(self.base + Duration::from_nanos(last))
                < DATA_ACTIVE_WINDOW
    }
}

/// DTLS application data (content type 23: SCTP), directly or as the payload of a TURN
/// ChannelData message (channel numbers 0x4000–0x4FFF, 4-byte header). STUN (ICE checks and
/// keepalives), DTLS handshakes and RTP/RTCP are not data.
fn carries_data(datagram: &[u8]) -> bool {
    const DTLS_APPLICATION_DATA: u8 = 23;
    match datagram.first() {
        Some(&DTLS_APPLICATION_DATA) => true,
        Some(0x40..=0x4f) => datagram.get(4) == Some(&DTLS_APPLICATION_DATA),
        _ => false,
    }
}

/// A socket that reports no UDP GRO, so the driver gives it 2 KB receive buffers instead of
/// three 96 KB ones per connection (see [`disable_gro`]), and that notes SCTP data going
/// through it ([`DataActivity`]).
#[derive(Debug)]
struct NoGro(Arc<dyn AsyncUdpSocket>, Arc<DataActivity>);

impl AsyncUdpSocket for NoGro {
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
}

/// Turns UDP GRO back off on a socket quinn-udp enabled it on: with GRO on, the kernel may
/// coalesce datagrams into one read larger than the 2 KB buffer a [`NoGro`] socket gets, and
/// silently drop the tail.
#[cfg(target_os = "linux")]
fn disable_gro(fd: std::os::fd::RawFd) {
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

    #[test]
    fn short_sleeps_are_left_alone() {
        let now = Instant::now();
        for ms in [0, 1, 20, 99] {
            let d = Duration::from_millis(ms);
            assert_eq!(coalesced(d, now), d);
        }
    }

    #[test]
    fn long_sleeps_end_on_the_shared_grid_within_one_step() {
        let now = Instant::now();
        for ms in [100, 150, 199, 200, 201, 1000, 1999] {
            let d = Duration::from_millis(ms);
            let got = coalesced(d, now);
            assert!(got >= d, "{ms} ms shortened to {got:?}");
            assert!(got < d + COALESCE_GRID, "{ms} ms stretched to {got:?}");
        }
        // A sleep requested later, for a deadline just before the same grid point, ends at
        // that point too: this is what lets idle connections wake together.
        let point = now + coalesced(Duration::from_millis(150), now);
        let later = now + Duration::from_millis(30);
        let wanted = point - later - Duration::from_millis(5);
        let other = later + coalesced(wanted, later);
        let diff = if point > other {
            point - other
        } else {
            other - point
        };
        assert!(diff < Duration::from_micros(1), "{point:?} vs {other:?}");
    }

    #[test]
    fn wrapped_sockets_report_and_use_no_gro() {
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
            assert_eq!(wrapped.max_gro_segments(), 1);
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
                assert_eq!(value, 0, "UDP_GRO is still on");
            }
        });
    }
}
