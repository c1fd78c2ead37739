//! Depacketized frames of a remote track, for a client that wants frames instead of RTP
//! (`forward {deliver: true}`): the RTP of one track is reassembled into whole frames (VP8,
//! VP9, AV1, H.264 Annex B access units, Opus packets) as they complete, in order, with lost
//! ones skipped.
//!
//! Frames leave through the connection's event channel, which the owner drains; each holds a
//! slot of a small per-connection pool, so a client that does not keep up loses frames here
//! (counted) instead of growing a queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::rtp::codec::{
    av1::Av1Depacketizer, h264::H264Packet, opus::OpusPacket, vp8::Vp8Packet, vp9::Vp9Packet,
};
use rtc::rtp::Packet;

/// Frames of one connection in flight to the owner at most.
pub(crate) const FRAME_SLOTS: usize = 64;
/// Packets a frame may wait for a late one before it is given up (≈ 0.25 s of video).
const MAX_LATE: u16 = 64;

/// One frame for the owner, holding a slot of its connection's pool until dropped.
#[derive(Debug)]
pub struct Frame {
    /// The track id.
    pub track: String,
    /// The frame's bytes, in the codec's bitstream format.
    pub data: Bytes,
    /// Its RTP timestamp (in the codec's clock).
    pub rtp_timestamp: u32,
    /// How long it lasts, in microseconds (from the timestamps of consecutive frames).
    pub duration_us: u64,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

enum Builder {
    Vp8(Box<SampleBuilder<Vp8Packet>>),
    Vp9(Box<SampleBuilder<Vp9Packet>>),
    Av1(Box<SampleBuilder<Av1Depacketizer>>),
    H264(Box<SampleBuilder<H264Packet>>),
    Opus(Box<SampleBuilder<OpusPacket>>),
}

/// Reassembles one track's frames.
pub(crate) struct Deliverer {
    builder: Builder,
    slots: Arc<tokio::sync::Semaphore>,
    dropped: Arc<AtomicU64>,
}

impl Deliverer {
    /// A deliverer for codec `mime` (e.g. `video/VP8`) at `clock_rate`, or `None` when the codec
    /// has no depacketizer here.
    pub(crate) fn new(
        mime: &str,
        clock_rate: u32,
        slots: Arc<tokio::sync::Semaphore>,
        dropped: Arc<AtomicU64>,
    ) -> Option<Self> {
        let m = mime.to_ascii_lowercase();
        let builder = match m.rsplit('/').next().unwrap_or("") {
            "vp8" => Builder::Vp8(Box::new(SampleBuilder::new(
                MAX_LATE,
                Vp8Packet::default(),
                clock_rate,
            ))),
            "vp9" => Builder::Vp9(Box::new(SampleBuilder::new(
                MAX_LATE,
                Vp9Packet::default(),
                clock_rate,
            ))),
            "av1" => Builder::Av1(Box::new(SampleBuilder::new(
                MAX_LATE,
                Av1Depacketizer::default(),
                clock_rate,
            ))),
            "h264" => Builder::H264(Box::new(SampleBuilder::new(
                MAX_LATE,
                H264Packet::default(),
                clock_rate,
            ))),
            "opus" => Builder::Opus(Box::new(SampleBuilder::new(
                MAX_LATE, OpusPacket, clock_rate,
            ))),
            _ => return None,
        };
        Some(Deliverer {
            builder,
            slots,
            dropped,
        })
    }

    /// Takes one packet; returns the frames it completed (those without a free slot are
    /// dropped and counted).
    pub(crate) fn push(&mut self, track: &str, packet: Packet) -> Vec<Frame> {
        let now = Instant::now();
        macro_rules! run {
            ($b:expr) => {{
                $b.push(now, packet);
                let mut out = Vec::new();
                while let Some(s) = $b.pop(now) {
                    out.push((s.data, s.packet_timestamp, s.duration.as_micros() as u64));
                }
                out
            }};
        }
        let samples = match &mut self.builder {
            Builder::Vp8(b) => run!(b),
            Builder::Vp9(b) => run!(b),
            Builder::Av1(b) => run!(b),
            Builder::H264(b) => run!(b),
            Builder::Opus(b) => run!(b),
        };
        samples
            .into_iter()
            .filter_map(|(data, rtp_timestamp, duration_us)| {
                match Arc::clone(&self.slots).try_acquire_owned() {
                    Ok(slot) => Some(Frame {
                        track: track.to_owned(),
                        data,
                        rtp_timestamp,
                        duration_us,
                        _slot: slot,
                    }),
                    Err(_) => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            })
            .collect()
    }
}
