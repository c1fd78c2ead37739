//! SCTP to a receiving application slower than the link, on webrtc's sans-IO SCTP with a
//! simulated clock (`sim`): the receive buffer fills, the advertised window closes, and the
//! transfer must go on at the reader's pace as soon as the reader takes data, not when the
//! sender's retransmission timer happens to fire.

mod sim;

use std::time::Duration;

use sim::{transfer_read_by, Link, TOTAL};

#[test]
fn a_window_opened_by_the_reader_is_announced_at_once() {
    // 16 KiB every 2 ms: 8 MiB/s, far below what the simulated link carries.
    let o = transfer_read_by(Link::PERFECT, Link::PERFECT, TOTAL, 1, 2);
    eprintln!("{o:?}");
    let ideal = Duration::from_millis(2 * (TOTAL / (16 * 1024)) as u64);
    assert!(
        o.simulated < ideal + ideal / 10,
        "5 MiB to a reader taking 8 MiB/s took {:?} (ideal {ideal:?}): {o:?}",
        o.simulated
    );
    assert_eq!(o.stalls, 0, "{o:?}");
}
