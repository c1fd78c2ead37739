//! No connection keeps a receive buffer of its own (vendor patch 40): every driver on a thread
//! reads into that thread's one buffer, sized for a UDP GRO read, and copies out what arrived.
//! Before, each UDP socket kept a buffer for its pending receive (2 KB without GRO, which is
//! why GRO was off: 96 KB with it), and before patch 34 a second one for bursts.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::sync::atomic::{AtomicIsize, Ordering};

use bytes::Bytes;
use common::*;
use peerix_rtc::RtcEvent;

/// The stack's receive buffer for a socket without GRO (`UDP_RECV_BUF_LEN`).
const RECV_BUF: usize = 2000;
/// The thread's receive buffer: 64 GRO segments of 1,500 bytes.
const THREAD_BUF: usize = 64 * 1500;

/// Counts the live allocations of exactly `RECV_BUF` and `THREAD_BUF` bytes, on every thread.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static LIVE_THREAD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match layout.size() {
            RECV_BUF => LIVE.fetch_add(1, Ordering::Relaxed),
            THREAD_BUF => LIVE_THREAD.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match layout.size() {
            RECV_BUF => LIVE.fetch_sub(1, Ordering::Relaxed),
            THREAD_BUF => LIVE_THREAD.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The UDP sockets this process has open (inodes of our descriptors that `/proc/net/udp*`
/// lists).
fn udp_sockets() -> usize {
    let mut udp = HashSet::new();
    for table in ["/proc/self/net/udp", "/proc/self/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9) {
                udp.insert(inode.to_owned());
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .filter(|inode| udp.contains(inode))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_share_their_threads_receive_buffer() {
    init_tracing();
    let mut pairs = Vec::new();
    for _ in 0..3 {
        pairs.push(connect().await);
    }
    // Traffic both ways, so every driver has received (and drained bursts) by now.
    for (a, b) in &mut pairs {
        for i in 0..20u8 {
            a.peer
                .send_control(Bytes::from(vec![i; 600]))
                .await
                .expect("a sends");
            b.peer
                .send_control(Bytes::from(vec![i; 600]))
                .await
                .expect("b sends");
        }
        for side in [a, b] {
            for _ in 0..20 {
                wait_for(&mut side.events, "a control message", |e| match e {
                    RtcEvent::ControlMessage(m) => Some(m),
                    _ => None,
                })
                .await;
            }
        }
    }
    let sockets = udp_sockets();
    let per_socket = LIVE.load(Ordering::Relaxed);
    let per_thread = LIVE_THREAD.load(Ordering::Relaxed);
    assert!(sockets >= 6, "{sockets} UDP sockets for six connections");
    assert_eq!(
        per_socket, 0,
        "{per_socket} receive buffers of {RECV_BUF} bytes for {sockets} UDP sockets"
    );
    // The reactor threads that drive connections (one per two cores by default), not one
    // per socket.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        (1..=threads as isize).contains(&per_thread),
        "{per_thread} buffers of {THREAD_BUF} bytes for {sockets} UDP sockets"
    );
}
