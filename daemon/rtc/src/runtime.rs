//! A thin [`Runtime`] wrapper over webrtc's `TokioRuntime` that tunes every UDP socket the
//! driver binds.
//!
//! Why: the driver never sets `SO_RCVBUF`, and at the kernel default (~208 KiB) a bulk
//! data-channel transfer overruns the socket while the single driver task is busy, which shows
//! up as `RcvbufErrors` in `/proc/net/snmp` and as SCTP retransmission stalls (1–6 MB/s
//! instead of 100+ MB/s). The driver hands every socket it binds (the mDNS one included)
//! through [`Runtime::wrap_udp_socket`], so this is the one place we can reach them without
//! forking the crate.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

/// Delegates everything to [`TokioRuntime`] except socket wrapping, where it first enlarges
/// the kernel buffers.
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
}

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
        }
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
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let sock_ref = socket2::SockRef::from(&socket);
        raise_buffer(&sock_ref, self.recv_buffer, Direction::Recv);
        raise_buffer(&sock_ref, self.send_buffer, Direction::Send);
        self.inner.wrap_udp_socket(socket)
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
        self.inner.sleep(self.expedited(duration))
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
