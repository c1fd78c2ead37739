//! SCTP over a receiver that cannot keep up, on webrtc's sans-IO SCTP (`rtc::sctp`) with a
//! simulated clock: the receiver's socket buffer holds `RCVBUF` datagrams and the receiver takes
//! `READ_PER_MS` of them per millisecond, dropping what does not fit. That is Chromium receiving
//! from a daemon on the same host (its UDP socket dropped up to 2,133 datagrams per 5 MiB), and
//! with rtc-sctp 0.21.1 it stalled about one transfer in three: a burst of ~800 datagrams, one
//! fast retransmission, then T3 expiries 1, 2, 4, 8, 16 s apart (see `vendor/README.md`).
//!
//! Each run is the same run: time only moves when the test moves it, and nothing is random but
//! the stack's own tags.

mod sim;

use std::time::Duration;

use sim::{transfer, Link};

/// Datagrams the receiver's socket buffer holds (Chromium's, with 1.2 KB datagrams).
const RCVBUF: usize = 64;
/// Datagrams the receiver reads per simulated millisecond (~23 MB/s: a busy browser tab).
const READ_PER_MS: usize = 20;

#[test]
fn sctp_recovers_from_receive_buffer_overflow() {
    let o = transfer(
        Link::PERFECT,
        Link {
            capacity: RCVBUF,
            reads_per_ms: READ_PER_MS,
            ..Link::PERFECT
        },
    );
    eprintln!("{o:?}");
    // The receiver must overflow, or this tests nothing.
    assert!(o.dropped > 0, "no datagram was dropped: {o:?}");
    assert!(
        o.fast_retransmits > 0,
        "losses were not repaired by fast retransmit: {o:?}"
    );
    // 5 MiB at the receiver's ~23 MB/s is ~0.25 s; the old stack needed 15-30 s.
    assert!(
        o.longest_gap < Duration::from_millis(800),
        "the transfer stalled: {o:?}"
    );
    assert!(o.simulated < Duration::from_secs(2), "too slow: {o:?}");
    assert!(o.t3_timeouts <= 1, "recovery waited on T3-rtx: {o:?}");
}
