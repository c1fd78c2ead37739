//! Media we send: a local source (an RTP ingest port, or encoded frames a client pushes) fanned
//! out to one sender per connection.
//!
//! A source never waits for a connection: each sender has a bounded queue, and a sender that
//! falls behind loses packets (counted) while the others go on. Rewriting (SSRC, payload type,
//! numbers) is per sender, because each connection negotiated its own. A source is packetized
//! once, however many peers receive it: there is no per-peer transcoding or packetizing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::packetizer::{new_packetizer, Packetizer};
use rtc::rtp::sequence::new_random_sequencer;
use rtc::rtp::Packet;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::shared::marshal::{Marshal, Unmarshal};
use tokio::sync::{mpsc, Notify};

use crate::media::MediaKind;

/// Packets queued per sender before it loses them (about 1 s of 2 Mbit/s video).
pub(crate) const SINK_QUEUE: usize = 256;
/// A source forwards at most one keyframe request per this interval: every receiver of a
/// share asks when it starts or loses a frame, and an encoder needs only one.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);
/// Largest RTP packet an ingest accepts (Ethernet MTU plus room for tunnels).
const MAX_INGEST_PACKET: usize = 1500;
/// Payload size the frame packetizer aims for (leaves room for SRTP and the headers a
/// connection adds on a 1280-byte IPv6 minimum path).
const PACKETIZER_MTU: usize = 1200;

/// The codec of a local source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCodec {
    /// Audio or video.
    pub kind: MediaKind,
    /// e.g. `video/VP8`, as negotiated in SDP.
    pub mime: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Audio channels (0 for video).
    pub channels: u16,
    /// The `a=fmtp` line this codec is offered with.
    pub fmtp: String,
}

/// A codec name that is not one we can send.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown codec {0:?}: use opus (audio), or vp8, vp9, h264 (constrained baseline, \
     packetization-mode 1) or av1 (video)"
)]
pub struct UnknownCodec(pub String);

impl SourceCodec {
    /// The codec named `name` (`opus`, `vp8`, `vp9`, `h264`, `av1`, or a MIME type such as
    /// `video/VP8`; any case).
    pub fn by_name(name: &str) -> Result<SourceCodec, UnknownCodec> {
        let short = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
        let (kind, mime, clock_rate, channels, fmtp) = match short.as_str() {
            "opus" => (
                MediaKind::Audio,
                MIME_TYPE_OPUS,
                48_000,
                2,
                "minptime=10;useinbandfec=1",
            ),
            "vp8" => (MediaKind::Video, MIME_TYPE_VP8, 90_000, 0, ""),
            "vp9" => (MediaKind::Video, MIME_TYPE_VP9, 90_000, 0, "profile-id=0"),
            "h264" => (
                MediaKind::Video,
                MIME_TYPE_H264,
                90_000,
                0,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            ),
            "av1" => (MediaKind::Video, MIME_TYPE_AV1, 90_000, 0, "profile-id=0"),
            _ => return Err(UnknownCodec(name.to_owned())),
        };
        Ok(SourceCodec {
            kind,
            mime: mime.to_owned(),
            clock_rate,
            channels,
            fmtp: fmtp.to_owned(),
        })
    }

    /// As the stack describes codecs.
    pub(crate) fn to_rtc(&self) -> RTCRtpCodec {
        RTCRtpCodec {
            mime_type: self.mime.clone(),
            clock_rate: self.clock_rate,
            channels: self.channels,
            sdp_fmtp_line: self.fmtp.clone(),
            rtcp_feedback: vec![],
        }
    }
}

/// Counters of one local source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// RTP packets that entered (received on the ingest port, or made from frames).
    pub packets: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Datagrams on the ingest port that were not RTP (dropped).
    pub malformed: u64,
    /// Packets a sender's full queue lost (summed over senders).
    pub dropped: u64,
    /// Keyframe requests passed on to the source.
    pub keyframe_requests: u64,
    /// Connections it is sent on now.
    pub senders: u64,
}

/// One packet on its way to a sender, with what rewriting needs to know about its source.
pub(crate) struct Outgoing {
    pub(crate) source: u64,
    pub(crate) codec: Arc<SourceCodec>,
    pub(crate) packet: Packet,
}

/// The source side of one sender: where the source puts packets for it.
pub(crate) struct SinkPort {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<Outgoing>,
}

/// How long a rate is measured over before it is compared with the share's limits.
const RATE_WINDOW: Duration = Duration::from_secs(2);
/// A source over its limits is reported at most this often.
const OVER_LIMIT_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// A source's bitrate and frame rate, measured over [`RATE_WINDOW`], against the share's
/// `maxBitrate`/`maxFramerate` (sans-IO: the caller passes the time).
#[derive(Debug, Default)]
pub(crate) struct RateWatch {
    max_bitrate: Option<u64>,
    max_framerate: Option<f64>,
    window: Option<(Instant, u64, u64)>,
    last_report: Option<Instant>,
}

impl RateWatch {
    pub(crate) fn set_limits(&mut self, max_bitrate: Option<u64>, max_framerate: Option<f64>) {
        self.max_bitrate = max_bitrate.filter(|b| *b > 0);
        self.max_framerate = max_framerate.filter(|f| *f > 0.0);
        self.window = None;
    }

    /// A packet of `bytes` payload arrived (`frame_end`: the last of a frame). Returns what to
    /// tell the source when a finished window was over a limit by more than 10 %.
    pub(crate) fn packet(&mut self, now: Instant, bytes: usize, frame_end: bool) -> Option<String> {
        if self.max_bitrate.is_none() && self.max_framerate.is_none() {
            return None;
        }
        let (start, b, f) = self.window.get_or_insert((now, 0, 0));
        *b += bytes as u64;
        *f += u64::from(frame_end);
        let elapsed = now.saturating_duration_since(*start);
        if elapsed < RATE_WINDOW {
            return None;
        }
        let secs = elapsed.as_secs_f64();
        let (bitrate, framerate) = (*b as f64 * 8.0 / secs, *f as f64 / secs);
        self.window = None;
        let mut over = Vec::new();
        if let Some(max) = self.max_bitrate {
            if bitrate > max as f64 * 1.1 {
                over.push(format!(
                    "{:.2} Mbit/s, over its maxBitrate of {:.2} Mbit/s (lower the encoder's \
                     bitrate, e.g. ffmpeg -b:v)",
                    bitrate / 1e6,
                    max as f64 / 1e6
                ));
            }
        }
        if let Some(max) = self.max_framerate {
            if framerate > max * 1.1 {
                over.push(format!(
                    "{framerate:.1} frames/s, over its maxFramerate of {max} (lower the \
                     encoder's frame rate, e.g. ffmpeg -r)"
                ));
            }
        }
        if over.is_empty()
            || self
                .last_report
                .is_some_and(|t| now.saturating_duration_since(t) < OVER_LIMIT_REPORT_INTERVAL)
        {
            return None;
        }
        self.last_report = Some(now);
        Some(over.join("; "))
    }
}

/// What a source tells its owner.
pub enum SourceReport {
    /// The source is over the share's `maxBitrate`/`maxFramerate` (at most every 10 s): the
    /// daemon does not re-encode, so the encoder must lower it.
    OverLimit(String),
    /// A receiver asked for a keyframe (already rate limited).
    Keyframe,
    /// Datagrams that are not RTP arrived on the ingest port: the total so far and the last
    /// reason. Reported at the 1st, 2nd, 4th, 8th, … one.
    Malformed {
        /// How many so far.
        count: u64,
        /// Why the last one was refused.
        why: String,
    },
}

type Reporter = Box<dyn Fn(SourceReport) + Send + Sync>;

/// A local media source, shared by the senders of every connection it is sent on.
pub struct LocalSource {
    id: u64,
    codec: Arc<SourceCodec>,
    sinks: Mutex<Vec<SinkPort>>,
    report: Reporter,
    last_keyframe_request: Mutex<Option<Instant>>,
    /// Frames pushed over IPC are packetized here, once for every sender.
    packetizer: Mutex<Option<Box<dyn Packetizer>>>,
    /// Where an ingest's packets come from (keyframe requests go back there).
    ingest_peer: Mutex<Option<(SocketAddr, u32)>>,
    /// Its rates against the share's limits.
    rates: Mutex<RateWatch>,
    closed: AtomicBool,
    close: Notify,
    packets: AtomicU64,
    bytes: AtomicU64,
    malformed: AtomicU64,
    dropped: AtomicU64,
    keyframe_requests: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing held under these locks can be left half-done by a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static NEXT_SINK: AtomicU64 = AtomicU64::new(1);

impl LocalSource {
    /// A source with id `id` (unique in the process) sending `codec`; `report` is called for
    /// keyframe requests and bad input (from any thread; it must not block).
    pub fn new(
        id: u64,
        codec: SourceCodec,
        report: impl Fn(SourceReport) + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(LocalSource {
            id,
            codec: Arc::new(codec),
            sinks: Mutex::new(Vec::new()),
            report: Box::new(report),
            last_keyframe_request: Mutex::new(None),
            packetizer: Mutex::new(None),
            ingest_peer: Mutex::new(None),
            rates: Mutex::new(RateWatch::default()),
            closed: AtomicBool::new(false),
            close: Notify::new(),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            keyframe_requests: AtomicU64::new(0),
        })
    }

    /// Its id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its codec.
    pub fn codec(&self) -> &SourceCodec {
        &self.codec
    }

    /// Its counters.
    pub fn stats(&self) -> SourceStats {
        SourceStats {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
            senders: lock(&self.sinks).len() as u64,
        }
    }

    /// Sends one RTP packet (any SSRC, payload type and numbering: each sender rewrites them)
    /// to every sender. Never waits.
    pub fn push_rtp(&self, packet: Packet) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
        let frame_end = packet.header.marker || self.codec.kind == MediaKind::Audio;
        let over = lock(&self.rates).packet(Instant::now(), packet.payload.len(), frame_end);
        if let Some(why) = over {
            (self.report)(SourceReport::OverLimit(why));
        }
        let sinks = lock(&self.sinks);
        for sink in sinks.iter() {
            let out = Outgoing {
                source: self.id,
                codec: Arc::clone(&self.codec),
                packet: packet.clone(),
            };
            if sink.tx.try_send(out).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Packetizes one encoded frame (or audio packet) lasting `duration` and sends it. The
    /// payload is what the codec's RTP payload format carries: a VP8/VP9/AV1 frame, H.264
    /// Annex B NAL units, one Opus packet.
    pub fn push_frame(&self, data: &Bytes, duration: Duration) -> Result<(), String> {
        let samples = (duration.as_secs_f64() * f64::from(self.codec.clock_rate)).round();
        let samples = samples.clamp(0.0, f64::from(u32::MAX)) as u32;
        let packets = {
            let mut guard = lock(&self.packetizer);
            if guard.is_none() {
                let payloader = self.codec.to_rtc().payloader().map_err(|e| e.to_string())?;
                *guard = Some(Box::new(new_packetizer(
                    Instant::now(),
                    PACKETIZER_MTU,
                    0,
                    0,
                    payloader,
                    Box::new(new_random_sequencer()),
                    self.codec.clock_rate,
                )));
            }
            let Some(p) = guard.as_mut() else {
                return Ok(());
            };
            p.packetize(Instant::now(), data, samples)
                .map_err(|e| e.to_string())?
        };
        for packet in packets {
            self.push_rtp(packet);
        }
        Ok(())
    }

    /// A receiver wants a keyframe: the owner is told (at most every 300 ms), and an ingest's
    /// sender gets an RTCP PLI at the address its packets come from.
    pub fn request_keyframe(&self) {
        if self.codec.kind != MediaKind::Video {
            return;
        }
        let now = Instant::now();
        {
            let mut last = lock(&self.last_keyframe_request);
            if last.is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        (self.report)(SourceReport::Keyframe);
        if let Some((addr, ssrc)) = *lock(&self.ingest_peer) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            if let Ok(bytes) = pli.marshal() {
                if let Ok(sock) = std::net::UdpSocket::bind(if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                }) {
                    // Best effort: most RTP senders (ffmpeg) do not listen for RTCP.
                    let _ = sock.set_nonblocking(true);
                    let _ = sock.send_to(&bytes, addr);
                }
            }
        }
    }

    /// The share's `maxBitrate` (bit/s) and `maxFramerate`: the source is measured against
    /// them and reported when over (see [`SourceReport::OverLimit`]).
    pub fn set_limits(&self, max_bitrate: Option<u64>, max_framerate: Option<f64>) {
        lock(&self.rates).set_limits(max_bitrate, max_framerate);
    }

    /// Stops the source: its ingest ends and nothing more is sent. Its senders stay attached
    /// until they move to another source (a re-share) or stop.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.close.notify_waiters();
        self.close.notify_one();
    }

    pub(crate) fn add_sink(&self) -> (u64, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(SINK_QUEUE);
        let id = NEXT_SINK.fetch_add(1, Ordering::Relaxed);
        if !self.closed.load(Ordering::Relaxed) {
            lock(&self.sinks).push(SinkPort { id, tx });
        }
        (id, rx)
    }

    /// Moves an existing sender's port onto this source (a re-share: same sender, new source).
    pub(crate) fn adopt_sink(&self, port: SinkPort) {
        if !self.closed.load(Ordering::Relaxed) {
            lock(&self.sinks).push(port);
        }
    }

    pub(crate) fn take_sink(&self, id: u64) -> Option<SinkPort> {
        let mut sinks = lock(&self.sinks);
        let at = sinks.iter().position(|s| s.id == id)?;
        Some(sinks.swap_remove(at))
    }

    fn malformed(&self, why: String) {
        let count = self.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_power_of_two() {
            (self.report)(SourceReport::Malformed { count, why });
        }
    }
}

impl std::fmt::Debug for LocalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSource")
            .field("id", &self.id)
            .field("codec", &self.codec.mime)
            .finish()
    }
}

/// Why a datagram on an ingest port is not an RTP packet we can send on.
pub(crate) fn check_rtp(data: &[u8]) -> Result<Option<Packet>, String> {
    if data.len() < 12 {
        return Err(format!(
            "{} bytes is shorter than an RTP header",
            data.len()
        ));
    }
    if data[0] >> 6 != 2 {
        return Err(format!("RTP version {} (expected 2)", data[0] >> 6));
    }
    // RTCP multiplexed on the same port (payload types 72–76 with the marker bit: packet
    // types 200–204) is the sender's reports, not media.
    if (200..=204).contains(&data[1]) {
        return Ok(None);
    }
    let mut buf = BytesMut::from(data);
    let packet = Packet::unmarshal(&mut buf).map_err(|e| format!("not an RTP packet: {e}"))?;
    Ok(Some(packet))
}

/// Listens for RTP on `bind` and sends what arrives on `source` until the source is closed.
/// Returns the address it listens on (the port chosen when `bind` has port 0).
pub fn spawn_rtp_ingest(
    source: &Arc<LocalSource>,
    bind: SocketAddr,
) -> std::io::Result<SocketAddr> {
    let std_sock = std::net::UdpSocket::bind(bind)?;
    std_sock.set_nonblocking(true)?;
    let sock = tokio::net::UdpSocket::from_std(std_sock)?;
    let local = sock.local_addr()?;
    let source = Arc::clone(source);
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_INGEST_PACKET + 1];
        loop {
            let received = tokio::select! {
                r = sock.recv_from(&mut buf) => r,
                () = source.close.notified() => break,
            };
            if source.closed.load(Ordering::Relaxed) {
                break;
            }
            let (n, from) = match received {
                Ok(r) => r,
                // ICMP errors from earlier PLIs and the like: keep listening.
                Err(_) => continue,
            };
            if n > MAX_INGEST_PACKET {
                source.malformed(format!(
                    "a datagram larger than {MAX_INGEST_PACKET} bytes (keep RTP packets \
                     within the MTU, e.g. ffmpeg's -pkt_size 1200)"
                ));
                continue;
            }
            match check_rtp(&buf[..n]) {
                Ok(Some(packet)) => {
                    *lock(&source.ingest_peer) = Some((from, packet.header.ssrc));
                    source.push_rtp(packet);
                }
                Ok(None) => {}
                Err(why) => source.malformed(why),
            }
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_by_name() {
        assert_eq!(
            SourceCodec::by_name("VP8").map(|c| c.mime).ok().as_deref(),
            Some("video/VP8")
        );
        let h264 = SourceCodec::by_name("video/H264").ok();
        assert!(h264.is_some_and(|c| c.fmtp.contains("packetization-mode=1")));
        assert!(SourceCodec::by_name("opus").is_ok_and(|c| c.kind == MediaKind::Audio));
        let err = SourceCodec::by_name("mp3").map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("opus"), "{err}");
    }

    #[test]
    fn ingest_check_refuses_what_is_not_rtp() {
        assert!(check_rtp(&[0x80; 4]).is_err());
        assert!(check_rtp(&[0x40; 20]).unwrap_err().contains("version 1"));
        let mut rtcp = [0u8; 12];
        rtcp[0] = 0x80;
        rtcp[1] = 201;
        assert!(matches!(check_rtp(&rtcp), Ok(None)));
        let mut rtp = [0u8; 16];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert!(matches!(check_rtp(&rtp), Ok(Some(p)) if p.payload.len() == 4));
    }

    #[test]
    fn a_full_sender_queue_loses_packets_without_blocking_the_source() {
        let source = LocalSource::new(1, SourceCodec::by_name("vp8").unwrap(), |_| {});
        let (_id, mut rx) = source.add_sink();
        for _ in 0..SINK_QUEUE + 10 {
            source.push_rtp(Packet::default());
        }
        let s = source.stats();
        assert_eq!(
            (s.packets, s.dropped, s.senders),
            (SINK_QUEUE as u64 + 10, 10, 1)
        );
        assert!(rx.try_recv().is_ok());
        source.close();
        source.push_rtp(Packet::default());
        assert_eq!(
            source.stats().packets,
            SINK_QUEUE as u64 + 10,
            "closed: nothing enters"
        );
    }

    #[test]
    fn frames_are_packetized_once_within_the_mtu() {
        let source = LocalSource::new(2, SourceCodec::by_name("vp8").unwrap(), |_| {});
        let (_a, mut rx_a) = source.add_sink();
        let (_b, mut rx_b) = source.add_sink();
        source
            .push_frame(&Bytes::from(vec![0u8; 3000]), Duration::from_millis(33))
            .unwrap();
        let mut a = Vec::new();
        while let Ok(o) = rx_a.try_recv() {
            a.push(o.packet);
        }
        assert!(a.len() >= 3, "3000 bytes over a 1200-byte MTU");
        assert!(a.iter().all(|p| p.payload.len() <= PACKETIZER_MTU));
        assert!(
            a.last().is_some_and(|p| p.header.marker),
            "marker on the last"
        );
        let mut b = 0;
        while rx_b.try_recv().is_ok() {
            b += 1;
        }
        assert_eq!(b, a.len(), "every sender gets the same packets");
    }

    #[test]
    fn a_source_over_the_shares_limits_is_reported_now_and_then() {
        let t0 = Instant::now();
        let mut w = RateWatch::default();
        assert_eq!(
            w.packet(t0, 10_000, true),
            None,
            "no limits: nothing measured"
        );
        w.set_limits(Some(1_000_000), Some(30.0));
        // 2 s of 3 Mbit/s at 30 frames/s: over the bitrate only.
        let mut said = Vec::new();
        for i in 0..=60u32 {
            let at = t0 + Duration::from_millis(u64::from(i) * 2000 / 60);
            said.extend(w.packet(at, 12_500, true));
        }
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("maxBitrate") && !said[0].contains("maxFramerate"),
            "{said:?}"
        );
        // Still over 4 s later: not said again within 10 s; said again after.
        let mut again = Vec::new();
        for i in 0..=600u32 {
            let at = t0 + Duration::from_millis(2000 + u64::from(i) * 20);
            again.extend(w.packet(at, 12_500, i % 2 == 0));
        }
        assert_eq!(again.len(), 1, "once per 10 s: {again:?}");
        let mut calm = RateWatch::default();
        calm.set_limits(Some(10_000_000), Some(60.0));
        for i in 0..=100u32 {
            assert_eq!(
                calm.packet(t0 + Duration::from_millis(u64::from(i) * 30), 1000, true),
                None
            );
        }
    }

    #[test]
    fn keyframe_requests_are_rate_limited() {
        let seen = Arc::new(AtomicU64::new(0));
        let s2 = Arc::clone(&seen);
        let source = LocalSource::new(3, SourceCodec::by_name("vp8").unwrap(), move |r| {
            if matches!(r, SourceReport::Keyframe) {
                s2.fetch_add(1, Ordering::Relaxed);
            }
        });
        for _ in 0..10 {
            source.request_keyframe();
        }
        assert_eq!(seen.load(Ordering::Relaxed), 1);
        let audio = LocalSource::new(4, SourceCodec::by_name("opus").unwrap(), |_| {});
        audio.request_keyframe();
        assert_eq!(audio.stats().keyframe_requests, 0, "audio has no keyframes");
    }
}
