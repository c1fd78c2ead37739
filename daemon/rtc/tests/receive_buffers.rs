//! A connection's driver keeps one receive buffer per UDP socket and no other (vendor patch
//! 34): the burst of datagrams read after a wake-up goes into the buffer of the socket it
//! drains. Before, every connection also kept a second buffer of the same size for bursts,
//! 2 KB of every idle connection's memory.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::sync::atomic::{AtomicIsize, Ordering};

use bytes::Bytes;
use common::*;
use peerix_rtc::RtcEvent;

/// The stack's receive buffer for a socket without GRO (`UDP_RECV_BUF_LEN`; our sockets
/// report one segment, `runtime.rs`).
const RECV_BUF: usize = 2000;

/// Counts the live allocations of exactly `RECV_BUF` bytes, on every thread.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() == RECV_BUF {
            LIVE.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() == RECV_BUF {
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
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
async fn each_socket_has_one_receive_buffer_and_bursts_need_no_other() {
    init_tracing();
    let (mut a, mut b) = connect().await;
    // Traffic both ways, so every driver has received (and drained bursts) by now.
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
    for side in [&mut a, &mut b] {
        for _ in 0..20 {
            wait_for(&mut side.events, "a control message", |e| match e {
                RtcEvent::ControlMessage(m) => Some(m),
                _ => None,
            })
            .await;
        }
    }
    let sockets = udp_sockets();
    let buffers = LIVE.load(Ordering::Relaxed);
    assert!(sockets >= 2, "{sockets} UDP sockets for two connections");
    assert_eq!(
        buffers, sockets as isize,
        "{buffers} receive buffers of {RECV_BUF} bytes for {sockets} UDP sockets"
    );
}
