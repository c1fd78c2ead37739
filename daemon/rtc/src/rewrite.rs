//! Puts one local source's RTP onto one outgoing sender (sans-IO: no sockets, the caller
//! passes the time).
//!
//! A sender has its own SSRC and the payload type its connection negotiated, and the receiver
//! expects one unbroken sequence-number and timestamp line for as long as the sender lives.
//! The source behind a sender changes (a re-share is a track replacement, §8.4; an ffmpeg
//! that restarts starts a new SSRC with random numbers), so numbers are rebased at each
//! change: the next sequence number follows the last one sent, and the timestamp advances by
//! the wall time since the last packet, as a browser's `replaceTrack` does.

use std::time::Instant;

use rtc::rtp::header::Header;

/// How far back an input packet may arrive and still be reordering, not a restart.
const MAX_REORDER: i16 = 100;
/// How far forward input numbers may jump (a loss burst) and still be the same run.
const MAX_GAP: i16 = 3000;

/// The rewriting state of one sender.
#[derive(Debug, Clone)]
pub(crate) struct Rewriter {
    ssrc: u32,
    /// The source epoch (which source, which input SSRC) the deltas belong to.
    epoch: Option<(u64, u32)>,
    seq_delta: u16,
    ts_delta: u32,
    /// The newest packet sent: sequence number, timestamp, when.
    last: Option<(u16, u32, Instant)>,
    /// The newest input sequence number of the current epoch.
    last_in: Option<u16>,
    /// Where the first epoch starts (random, as RFC 3550 asks).
    first_seq: u16,
    first_ts: u32,
}

impl Rewriter {
    /// A sender with `ssrc`, starting at `first_seq`/`first_ts`.
    pub(crate) fn new(ssrc: u32, first_seq: u16, first_ts: u32) -> Self {
        Rewriter {
            ssrc,
            epoch: None,
            seq_delta: 0,
            ts_delta: 0,
            last: None,
            last_in: None,
            first_seq,
            first_ts,
        }
    }

    /// Rewrites `header` (a packet of source `source`, whose clock runs at `clock_rate`) for
    /// this sender: its SSRC, `payload_type`, and continuous numbers. Header extensions are
    /// dropped: their ids were negotiated by whoever produced the packet, not by this sender.
    pub(crate) fn rewrite(
        &mut self,
        now: Instant,
        header: &mut Header,
        source: u64,
        clock_rate: u32,
        payload_type: u8,
    ) {
        let epoch = (source, header.ssrc);
        // A sender that restarts with the same SSRC (a fixed `ssrc` in a GStreamer pipeline, a
        // test tool) starts its numbers again: continuing them would send old sequence numbers,
        // which the receiver's SRTP replay check drops. A jump beyond reordering is a restart.
        let restarted = self.last_in.is_some_and(|last| {
            let d = header.sequence_number.wrapping_sub(last) as i16;
            !(-MAX_REORDER..=MAX_GAP).contains(&d)
        });
        if self.epoch != Some(epoch) || restarted {
            self.last_in = None;
            let (seq, ts) = match self.last {
                Some((seq, ts, at)) => {
                    let elapsed = now.saturating_duration_since(at).as_secs_f64();
                    let ticks = (elapsed * f64::from(clock_rate)).clamp(1.0, f64::from(u32::MAX));
                    (seq.wrapping_add(1), ts.wrapping_add(ticks as u32))
                }
                None => (self.first_seq, self.first_ts),
            };
            self.seq_delta = seq.wrapping_sub(header.sequence_number);
            self.ts_delta = ts.wrapping_sub(header.timestamp);
            self.epoch = Some(epoch);
        }
        self.note_input(header.sequence_number);
        header.ssrc = self.ssrc;
        header.payload_type = payload_type;
        header.sequence_number = header.sequence_number.wrapping_add(self.seq_delta);
        header.timestamp = header.timestamp.wrapping_add(self.ts_delta);
        header.extension = false;
        header.extensions.clear();
        header.extensions_padding = 0;
        // Reordered packets keep their place; only a newer one moves the line forward.
        let newer = match self.last {
            Some((seq, _, _)) => {
                let ahead = header.sequence_number.wrapping_sub(seq);
                ahead != 0 && ahead < 0x8000
            }
            None => true,
        };
        if newer {
            self.last = Some((header.sequence_number, header.timestamp, now));
        }
    }

    fn note_input(&mut self, seq: u16) {
        let newer = self
            .last_in
            .is_none_or(|last| (seq.wrapping_sub(last) as i16) > 0);
        if newer {
            self.last_in = Some(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn header(ssrc: u32, seq: u16, ts: u32) -> Header {
        Header {
            version: 2,
            ssrc,
            sequence_number: seq,
            timestamp: ts,
            payload_type: 96,
            ..Default::default()
        }
    }

    #[test]
    fn numbers_continue_across_a_source_switch() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(7, 1000, 5000);
        let mut out = Vec::new();
        for i in 0..3u16 {
            let mut h = header(0xAAAA, 40000 + i, 90_000 + u32::from(i) * 3000);
            r.rewrite(t0, &mut h, 1, 90_000, 100);
            out.push(h);
        }
        assert_eq!(
            out.iter()
                .map(|h| (h.ssrc, h.payload_type, h.sequence_number, h.timestamp))
                .collect::<Vec<_>>(),
            vec![
                (7, 100, 1000, 5000),
                (7, 100, 1001, 8000),
                (7, 100, 1002, 11000)
            ]
        );
        // A re-share 100 ms later: another source with its own random numbers.
        let mut h = header(0xBBBB, 3, 77);
        r.rewrite(t0 + Duration::from_millis(100), &mut h, 2, 90_000, 100);
        assert_eq!(h.sequence_number, 1003, "the line goes on");
        assert_eq!(h.timestamp, 11000 + 9000, "advanced by 100 ms of 90 kHz");
        // The same source restarting (a new input SSRC) is a switch too.
        let mut h = header(0xCCCC, 9, 9);
        r.rewrite(t0 + Duration::from_millis(100), &mut h, 2, 90_000, 100);
        assert_eq!((h.sequence_number, h.timestamp), (1004, 20001));
    }

    #[test]
    fn wrapping_and_reordering_keep_their_place() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(1, 65534, u32::MAX - 10);
        let mut a = header(5, 10, 100);
        r.rewrite(t0, &mut a, 1, 48_000, 111);
        let mut c = header(5, 12, 1060);
        r.rewrite(t0, &mut c, 1, 48_000, 111);
        let mut b = header(5, 11, 580);
        r.rewrite(t0, &mut b, 1, 48_000, 111);
        assert_eq!(
            (a.sequence_number, b.sequence_number, c.sequence_number),
            (65534, 65535, 0)
        );
        assert_eq!(c.timestamp, (u32::MAX - 10).wrapping_add(960));
        // The late packet did not move the line back: a switch continues after `c`.
        let mut d = header(6, 500, 0);
        r.rewrite(t0, &mut d, 2, 48_000, 111);
        assert_eq!(d.sequence_number, 1);
    }

    #[test]
    fn a_sender_that_restarts_with_the_same_ssrc_is_followed() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(9, 500, 0);
        for i in 0..50u16 {
            let mut h = header(0x5eed, 7000 + i, u32::from(i) * 3000);
            r.rewrite(t0, &mut h, 1, 90_000, 96);
        }
        // Same SSRC, numbers from 0 again.
        let mut h = header(0x5eed, 0, 0);
        r.rewrite(t0 + Duration::from_millis(40), &mut h, 1, 90_000, 96);
        assert_eq!(h.sequence_number, 550, "the line goes on instead of going back");
        // Ordinary reordering and loss are not restarts.
        let mut late = header(0x5eed, 65530, 0);
        r.rewrite(t0, &mut late, 1, 90_000, 96);
        assert_eq!(late.sequence_number, 544);
        let mut gap = header(0x5eed, 2000, 0);
        r.rewrite(t0, &mut gap, 1, 90_000, 96);
        assert_eq!(gap.sequence_number, 2550);
    }

    #[test]
    fn foreign_header_extensions_are_dropped() {
        let mut r = Rewriter::new(1, 0, 0);
        let mut h = header(5, 1, 1);
        h.extension = true;
        h.extension_profile = 0xBEDE;
        h.extensions.push(rtc::rtp::header::Extension {
            id: 3,
            payload: bytes::Bytes::from_static(&[1, 2]),
        });
        r.rewrite(Instant::now(), &mut h, 1, 90_000, 96);
        assert!(!h.extension && h.extensions.is_empty());
        assert_eq!(h.ssrc, 1);
    }
}
