//! A userspace UDP relay that adds a fixed one-way delay: the kernel here has no `netem`, so
//! the labs get latency from this instead (`lossy_link.rs` puts it between two VXLAN
//! endpoints, so every packet of the overlay crosses it).
//!
//! Two sockets, `x` and `y`: a datagram received on `x` is sent from `y` to `y_peer` once
//! `delay` has passed since it arrived, and the other way round. Per direction one thread
//! receives (stamping each datagram with its due time) and one sends; the queue between them
//! is bounded, and a datagram that finds it full is dropped and counted, as a router's queue
//! does. The delay is the same for every datagram, so first in is first due: the queue is a
//! FIFO and order is kept. Exact to the sleep precision of the host (tens of µs), cheap (two
//! blocking threads per direction, no polling while idle: the receivers block in `recv` with
//! a 100 ms timeout to notice [`DelayRelay`] being dropped).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

/// Largest datagram relayed (a VXLAN frame of a 1500-byte underlay fits).
const MAX_DATAGRAM: usize = 65_535;
/// How often a blocked receiver checks whether the relay is being dropped.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Counters of one direction.
#[derive(Debug, Default)]
pub struct DirStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams sent on after the delay.
    pub forwarded: AtomicU64,
    /// Datagrams dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// A running relay; its threads stop when it is dropped.
pub struct DelayRelay {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// `x` → `y` counters.
    pub x_to_y: Arc<DirStats>,
    /// `y` → `x` counters.
    pub y_to_x: Arc<DirStats>,
}

/// What the sender thread of one direction needs.
struct Leg {
    from: UdpSocket,
    to: UdpSocket,
    to_peer: SocketAddr,
    stats: Arc<DirStats>,
}

impl DelayRelay {
    /// Relays between bound sockets `x` and `y`: what arrives on `x` leaves `y` for `y_peer`
    /// after `delay`, what arrives on `y` leaves `x` for `x_peer`. At most `queue` datagrams
    /// wait per direction.
    pub fn start(
        x: UdpSocket,
        x_peer: SocketAddr,
        y: UdpSocket,
        y_peer: SocketAddr,
        delay: Duration,
        queue: usize,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (x_to_y, y_to_x) = (Arc::<DirStats>::default(), Arc::<DirStats>::default());
        let legs = [
            Leg {
                from: x.try_clone().context("cloning the relay socket")?,
                to: y.try_clone().context("cloning the relay socket")?,
                to_peer: y_peer,
                stats: Arc::clone(&x_to_y),
            },
            Leg {
                from: y,
                to: x,
                to_peer: x_peer,
                stats: Arc::clone(&y_to_x),
            },
        ];
        let mut threads = Vec::new();
        for (i, leg) in legs.into_iter().enumerate() {
            leg.from
                .set_read_timeout(Some(STOP_POLL))
                .context("setting the relay's read timeout")?;
            let (tx, rx) = sync_channel::<(Instant, Vec<u8>)>(queue.max(1));
            let (stop_rx, stats_rx) = (Arc::clone(&stop), Arc::clone(&leg.stats));
            let Leg {
                from,
                to,
                to_peer,
                stats,
            } = leg;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("delay-rx{i}"))
                    .spawn(move || receive(&from, &tx, delay, &stop_rx, &stats_rx))
                    .context("starting a relay thread")?,
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("delay-tx{i}"))
                    .spawn(move || forward(&to, to_peer, &rx, &stats))
                    .context("starting a relay thread")?,
            );
        }
        Ok(Self {
            stop,
            threads,
            x_to_y,
            y_to_x,
        })
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Receivers see the flag within STOP_POLL and drop their queue's sender, which ends
        // the forwarders.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn receive(
    from: &UdpSocket,
    queue: &SyncSender<(Instant, Vec<u8>)>,
    delay: Duration,
    stop: &AtomicBool,
    stats: &DirStats,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !stop.load(Ordering::Relaxed) {
        let n = match from.recv(&mut buf) {
            Ok(n) => n,
            // Timeout (to check `stop`), or an ICMP error from an earlier send: go on.
            Err(_) => continue,
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        let due = Instant::now() + delay;
        match queue.try_send((due, buf[..n].to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

fn forward(
    to: &UdpSocket,
    to_peer: SocketAddr,
    queue: &Receiver<(Instant, Vec<u8>)>,
    stats: &DirStats,
) {
    while let Ok((due, datagram)) = queue.recv() {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if to.send_to(&datagram, to_peer).is_ok() {
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").expect("bind")
    }

    /// Two endpoints, the relay's two addresses, the relay: `a` ↔ relay.x, relay.y ↔ `b`.
    type Setup = (UdpSocket, UdpSocket, SocketAddr, SocketAddr, DelayRelay);

    /// Two endpoints and a relay between them: `a` ↔ relay.x, relay.y ↔ `b`.
    fn setup(delay: Duration, queue: usize) -> Setup {
        let (a, b) = (bound(), bound());
        let (x, y) = (bound(), bound());
        let (xa, ya) = (x.local_addr().expect("addr"), y.local_addr().expect("addr"));
        let relay = DelayRelay::start(
            x,
            a.local_addr().expect("addr"),
            y,
            b.local_addr().expect("addr"),
            delay,
            queue,
        )
        .expect("relay");
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
        }
        (a, b, xa, ya, relay)
    }

    /// Each datagram arrives intact, in order, both ways, and never before its delay.
    #[test]
    fn adds_the_delay_both_ways_and_keeps_order() {
        let delay = Duration::from_millis(30);
        let (a, b, xa, ya, relay) = setup(delay, 64);
        let mut buf = [0u8; 2048];
        for (src, dst, relay_in) in [(&a, &b, xa), (&b, &a, ya)] {
            let t = Instant::now();
            for k in 0..20u8 {
                src.send_to(&[k; 1200], relay_in).expect("send");
            }
            for k in 0..20u8 {
                let n = dst.recv(&mut buf).expect("a relayed datagram");
                assert_eq!(
                    &buf[..n],
                    &[k; 1200][..],
                    "datagram {k} out of order or corrupted"
                );
                if k == 0 {
                    assert!(t.elapsed() >= delay, "arrived after {:?}", t.elapsed());
                }
            }
        }
        // The forwarder counts after `send_to` returns, so the receiver can see the last
        // datagram before its count lands (a loaded CI machine preempted it there).
        let deadline = Instant::now() + Duration::from_secs(2);
        let counts = || {
            (
                relay.x_to_y.forwarded.load(Ordering::Relaxed),
                relay.y_to_x.forwarded.load(Ordering::Relaxed),
            )
        };
        while counts() != (20, 20) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(counts(), (20, 20));
    }

    /// A burst larger than the queue loses the excess (counted), not the relay.
    #[test]
    fn a_full_queue_drops_and_counts() {
        let (a, b, xa, _, relay) = setup(Duration::from_millis(200), 4);
        for k in 0..50u8 {
            a.send_to(&[k; 100], xa).expect("send");
        }
        let mut buf = [0u8; 256];
        let mut got = 0;
        b.set_read_timeout(Some(Duration::from_millis(600)))
            .expect("timeout");
        while b.recv(&mut buf).is_ok() {
            got += 1;
        }
        let dropped = relay.x_to_y.dropped.load(Ordering::Relaxed);
        // The forwarder holds one datagram while it sleeps, so up to queue + 1 get through.
        assert!(
            (4..=5).contains(&got),
            "{got} datagrams got through a queue of 4"
        );
        assert_eq!(
            got + dropped,
            50,
            "every datagram is either relayed or counted as dropped"
        );
    }
}
