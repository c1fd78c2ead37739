//! [`QuietStream`]: reads through the reactor, writes straight to the socket.

use std::io;
use std::mem::MaybeUninit;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A peer that closed its end makes a write fail with `EPIPE` instead of raising `SIGPIPE`
/// (a client library may live in a program that did not ignore it).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// A connected Unix stream socket; `&QuietStream` reads and writes, so a reader task and a
/// writer task can share one (as with tokio's own `&UnixStream`). One writer at a time: a
/// write that goes through ends the writability registration another one might wait on.
#[derive(Debug)]
pub struct QuietStream {
    /// Registered for reads only.
    read: AsyncFd<UnixStream>,
    /// A duplicate descriptor registered for writability from a write that found the buffer full
    /// until the next write that goes through.
    waiting: Mutex<Option<AsyncFd<UnixStream>>>,
}

impl QuietStream {
    /// Takes a connected socket (made non-blocking here). Must be called inside a tokio runtime.
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            read: register(stream, Interest::READABLE)?,
            waiting: Mutex::new(None),
        })
    }

    /// Takes over a socket `interprocess` connected or accepted (it leaves tokio's reactor
    /// first, and is registered again here for reads only).
    pub fn from_local_socket(
        stream: interprocess::local_socket::tokio::Stream,
    ) -> io::Result<Self> {
        let interprocess::local_socket::tokio::Stream::UdSocket(s) = stream;
        Self::new(UnixStream::from(std::os::fd::OwnedFd::try_from(s)?))
    }

    /// The socket itself (for credentials and the like).
    pub fn get_ref(&self) -> &UnixStream {
        self.read.get_ref()
    }

    fn poll_read_into(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.read.poll_read_ready(cx))?;
            // SAFETY: `recv` only writes into the slice (it is never read here), and exactly the
            // `n` bytes it reports are then marked initialised and filled.
            let unfilled: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
            let room = unfilled.len();
            match guard.try_io(|fd| socket2::SockRef::from(fd.get_ref()).recv(unfilled)) {
                Ok(Ok(n)) => {
                    if n > 0 && n < room {
                        // Less than asked for: the socket is empty now. Forgetting the
                        // readiness saves the next read's system call, which could only fail
                        // (tokio's own streams do the same).
                        guard.clear_ready();
                    }
                    // SAFETY: `recv` initialised the first `n` bytes of the unfilled part.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_write_from(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_send(cx, |s| s.send_with_flags(data, SEND_FLAGS))
    }

    /// One `sendmsg` for several buffers: a frame's header, a shared message part and the
    /// frame's tail go out without being copied into one buffer first.
    fn poll_write_vectored_from(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, |s| s.send_vectored_with_flags(bufs, SEND_FLAGS))
    }

    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        send: impl Fn(&socket2::SockRef<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            match send(&socket2::SockRef::from(self.read.get_ref())) {
                Ok(n) => {
                    // The buffer has room again: a writability registration (and the wake-up
                    // at every read of the peer that comes with it) can go.
                    self.lock_waiting().take();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
            let mut waiting = self.lock_waiting();
            if waiting.is_none() {
                // epoll reports a descriptor that is already writable when it is added, so room
                // made between the failed write and this registration is not missed.
                let dup = self.read.get_ref().try_clone()?;
                *waiting = Some(register(dup, Interest::WRITABLE)?);
            }
            let Some(fd) = waiting.as_ref() else {
                continue;
            };
            let mut guard = ready!(fd.poll_write_ready(cx))?;
            guard.clear_ready();
        }
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Option<AsyncFd<UnixStream>>> {
        // Only a panic inside `poll_write_from` could poison it, and the state stays valid.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Registers an owned socket with the current runtime's reactor.
fn register(s: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: a `UnixStream` owns its descriptor: it stays open, and `as_raw_fd` returns the
    // same one, until the `AsyncFd` drops the stream.
    Ok(unsafe { AsyncFd::register_with_interest(s, interest) }?)
}

/// The same reads and writes for the stream and for a shared reference to it (a reader task and
/// a writer task each hold a `&QuietStream`; `tokio::io::split` takes the stream itself).
macro_rules! reads_and_writes {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                self.poll_read_into(cx, buf)
            }
        }

        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.poll_write_from(cx, buf)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.poll_write_vectored_from(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(QuietStream::get_ref(&self).shutdown(std::net::Shutdown::Write))
            }
        }
    };
}

reads_and_writes!(&QuietStream);
reads_and_writes!(QuietStream);

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::QuietStream;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Several buffers go out in one write, in order, as one stream of bytes.
    #[test]
    fn a_vectored_write_sends_its_buffers_in_order() {
        rt().block_on(async {
            let (a, b) = UnixStream::pair().expect("pair");
            let q = QuietStream::new(a).expect("quiet");
            let b = QuietStream::new(b).expect("quiet");
            let part: Vec<u8> = (0..40_000).map(|i| (i % 253) as u8).collect();
            let bufs = [
                std::io::IoSlice::new(b"head"),
                std::io::IoSlice::new(&part),
                std::io::IoSlice::new(b"tail"),
            ];
            assert!(tokio::io::AsyncWrite::is_write_vectored(&&q));
            let n = (&q).write_vectored(&bufs).await.expect("write");
            assert_eq!(n, 8 + part.len(), "one write takes all three buffers");
            let mut got = vec![0u8; n];
            (&b).read_exact(&mut got).await.expect("read");
            assert_eq!(&got[..4], b"head");
            assert_eq!(&got[4..4 + part.len()], &part[..]);
            assert_eq!(&got[4 + part.len()..], b"tail");
        });
    }

    /// Frames both ways, and a write far larger than the socket's buffer that must wait for
    /// the reader several times (the path that registers for writability) and then goes on
    /// without it.
    #[test]
    fn reads_writes_and_waits_for_room() {
        rt().block_on(async {
            let (a, b) = UnixStream::pair().expect("pair");
            let q = QuietStream::new(a).expect("quiet");
            let b = QuietStream::new(b).expect("quiet");
            (&q).write_all(b"hello").await.expect("write");
            let mut got = [0u8; 5];
            (&b).read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"hello");

            let big: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
            let reader = async {
                let mut all = Vec::new();
                let mut buf = vec![0u8; 7000];
                while all.len() < big.len() {
                    let n = (&b).read(&mut buf).await.expect("read");
                    assert!(n > 0, "early end of stream");
                    all.extend_from_slice(&buf[..n]);
                    // A slow reader: the writer finds the buffer full again and again.
                    if all.len() % 5 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                all
            };
            // Fill the socket until a write has to wait: it registers for writability.
            let mut off = 0;
            while let Ok(n) =
                tokio::time::timeout(Duration::from_millis(20), (&q).write(&big[off..])).await
            {
                off += n.expect("write");
            }
            assert!(off < big.len(), "8 MiB fit in the socket's buffer");
            assert!(
                q.lock_waiting().is_some(),
                "a write waiting for room is not registered"
            );
            let writer = async { (&q).write_all(&big[off..]).await.expect("big write") };
            let (all, ()) = tokio::join!(reader, writer);
            assert!(all == big, "the big write arrived changed");
            (&q).write_all(b"x").await.expect("write");
            assert!(
                q.lock_waiting().is_none(),
                "the writability registration outlived the wait"
            );
            (&q).shutdown().await.expect("shutdown");
            let mut rest = Vec::new();
            (&b).read_to_end(&mut rest).await.expect("read to end");
            assert_eq!(rest, b"x");
        });
    }

    /// The thread's voluntary context switches: each is the thread going to sleep after a wake.
    #[cfg(target_os = "linux")]
    fn sleeps(tid: i32) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).expect("status");
        s.lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("voluntary_ctxt_switches")
    }

    /// How often an idle runtime thread holding `a` wakes while its peer reads 20 writes made on
    /// `a`'s descriptor.
    #[cfg(target_os = "linux")]
    fn wakes_while_the_peer_reads(quiet: bool) -> u64 {
        let (a, mut b) = UnixStream::pair().expect("pair");
        let mut raw = a.try_clone().expect("dup");
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt().block_on(async move {
                // Held, idle, registered as the daemon's or client's socket would be.
                let _q = quiet.then(|| QuietStream::new(a.try_clone().expect("dup")));
                let _t = (!quiet).then(|| {
                    a.set_nonblocking(true).expect("nonblocking");
                    tokio::net::UnixStream::from_std(a).expect("tokio stream")
                });
                // SAFETY: gettid has no preconditions.
                let _ = tid_tx.send(unsafe { libc::gettid() });
                let _ = stopped.await;
            });
        });
        let tid = tid_rx.recv().expect("tid");
        std::thread::sleep(Duration::from_millis(50));
        let before = sleeps(tid);
        let mut byte = [0u8; 1];
        for _ in 0..20 {
            raw.write_all(b"x").expect("write");
            b.read_exact(&mut byte).expect("read");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        let woke = sleeps(tid) - before;
        let _ = stop.send(());
        thread.join().expect("runtime thread");
        woke
    }

    /// The point of the type: the other end's reads do not wake the thread. Tokio's own stream,
    /// registered for both directions, is the control: it wakes on (nearly) every read, so the
    /// measurement can see a wake-up when there is one.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_peers_reads_do_not_wake_the_thread() {
        let tokio_wakes = wakes_while_the_peer_reads(false);
        let quiet_wakes = wakes_while_the_peer_reads(true);
        assert!(
            tokio_wakes >= 10,
            "control: tokio's stream woke {tokio_wakes} times in 20 reads"
        );
        assert_eq!(quiet_wakes, 0, "the quiet stream's thread woke");
    }
}
