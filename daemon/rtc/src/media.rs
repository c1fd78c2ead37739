//! Media the remote peer sends us: one reader task per remote track, and an optional forward
//! of its RTP, unchanged, to a local UDP address (for ffplay, ffmpeg, VLC, GStreamer).
//!
//! The reader never waits: a forward target that is slow or gone loses packets (RTP is lossy
//! by design and the sender repairs with NACK and keyframes), it never holds the connection's
//! driver back. The stack's track queue is bounded (256 events) and drops media, not
//! lifecycle, when the reader falls behind.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::shared::marshal::{Marshal, MarshalSize};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

/// `audio` or `video`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An audio track.
    Audio,
    /// A video track.
    Video,
}

impl MediaKind {
    /// `"audio"` or `"video"`, as in SDP and Peerix's events.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// A remote track that started: reported when its first RTP packet arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrackInfo {
    /// The `a=msid` stream id (the key of the sender's label map).
    pub stream: String,
    /// The `a=msid` track id.
    pub track: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The SSRC the stream arrived with.
    pub ssrc: u32,
    /// The payload type of its first packet (look the codec up in the remote SDP).
    pub payload_type: u8,
}

/// Counters of one track's forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// RTP packets received from the peer.
    pub received: u64,
    /// Packets written to the forward target.
    pub forwarded: u64,
    /// Packets the target's socket refused (nothing listening, buffer full).
    pub dropped: u64,
}

/// One live remote track.
pub(crate) struct TrackEntry {
    remote: Arc<dyn TrackRemote>,
    kind: MediaKind,
    ssrc: AtomicU64,
    /// The target's socket and when the forward to it started.
    sink: Mutex<Option<(UdpSocket, std::time::Instant)>>,
    /// Bumped by every `forward`: keyframe requests of an older forward stop.
    generation: AtomicU64,
    /// The current target's first refusal was reported (once per `forward`).
    refused: AtomicBool,
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    /// Frames reassembled for the owner (`forward {deliver}`), when asked.
    deliver: Mutex<Option<crate::deliver::Deliverer>>,
}

impl TrackEntry {
    fn deliverer(&self) -> MutexGuard<'_, Option<crate::deliver::Deliverer>> {
        // A poisoned deliverer is still a valid `Option`.
        self.deliver.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sink(&self) -> MutexGuard<'_, Option<(UdpSocket, std::time::Instant)>> {
        // A poisoned sink is still a valid `Option`: the panicking holder was a writer.
        self.sink.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes one packet to the target, if any. When the target still refuses (nothing listens
    /// there: the kernel reports the ICMP port-unreachable on a later send) [`REFUSED_GRACE`]
    /// after the forward started, it returns why, once per `forward`. Packets go on being
    /// sent, so a player started late still gets them; refusals within the grace are the usual
    /// `forward`, then start the player from the SDP file.
    fn forward(&self, packet: &[u8]) -> Option<String> {
        self.received.fetch_add(1, Ordering::Relaxed);
        let sink = self.sink();
        let (sock, since) = sink.as_ref()?;
        // Non-blocking: a full buffer or a closed port drops the packet, never waits.
        match sock.send(packet) {
            Ok(_) => {
                self.forwarded.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                let refused = e.kind() == std::io::ErrorKind::ConnectionRefused
                    && since.elapsed() >= REFUSED_GRACE;
                (refused && !self.refused.swap(true, Ordering::Relaxed)).then(|| {
                    let to = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                    format!("nothing receives the forwarded RTP at {to} (connection refused); still sending")
                })
            }
        }
    }

    pub(crate) fn stats(&self) -> ForwardStats {
        ForwardStats {
            received: self.received.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The remote tracks of one connection, by track id.
#[derive(Default)]
pub(crate) struct Tracks {
    map: Mutex<HashMap<String, Arc<TrackEntry>>>,
}

/// Why a forward could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No live remote track has this id.
    #[error("no remote track {0} on this connection (it ended, or never started)")]
    NoSuchTrack(String),
    /// The local UDP socket could not be made.
    #[error("cannot send RTP to {to}: {source}")]
    Socket {
        /// The target.
        to: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl Tracks {
    /// Starts (`Some(deliverer)`) or stops reassembling `track`'s frames for the owner.
    pub(crate) fn deliver(
        &self,
        track: &str,
        deliverer: Option<crate::deliver::Deliverer>,
    ) -> Result<(), ForwardError> {
        let entry = self
            .get(track)
            .ok_or_else(|| ForwardError::NoSuchTrack(track.to_owned()))?;
        let video = entry.kind == MediaKind::Video;
        let on = deliverer.is_some();
        *entry.deliverer() = deliverer;
        if on && video {
            // The first frame a client can use is a keyframe: ask for one now.
            let entry = Arc::clone(&entry);
            tokio::spawn(async move { request_keyframe(&entry).await });
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<TrackEntry>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, track: &str) -> Option<Arc<TrackEntry>> {
        self.lock().get(track).cloned()
    }

    /// Starts (or moves) the forward of `track` to `to`, or stops it (`None`). A video track
    /// gets a keyframe request at once, so the new receiver can decode without waiting for
    /// the sender's next periodic keyframe.
    pub(crate) async fn forward(
        &self,
        track: &str,
        to: Option<SocketAddr>,
    ) -> Result<(), ForwardError> {
        let entry = self
            .get(track)
            .ok_or_else(|| ForwardError::NoSuchTrack(track.to_owned()))?;
        let generation = entry.generation.fetch_add(1, Ordering::Relaxed) + 1;
        entry.refused.store(false, Ordering::Relaxed);
        let Some(to) = to else {
            *entry.sink() = None;
            return Ok(());
        };
        let sock = (|| {
            let bind: SocketAddr = if to.is_ipv6() {
                "[::]:0".parse().expect("literal")
            } else {
                "0.0.0.0:0".parse().expect("literal")
            };
            let sock = UdpSocket::bind(bind)?;
            sock.connect(to)?;
            sock.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(sock)
        })()
        .map_err(|source| ForwardError::Socket { to, source })?;
        *entry.sink() = Some((sock, std::time::Instant::now()));
        if entry.kind == MediaKind::Video {
            request_keyframe(&entry).await;
            // The reader (ffplay, VLC) usually starts after the forward, from its SDP file:
            // ask again while it is likely to be starting, so it does not wait for the
            // sender's next periodic keyframe (Chrome: minutes).
            let entry = Arc::clone(&entry);
            tokio::spawn(async move {
                for ms in KEYFRAME_REPEATS_MS {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    if entry.generation.load(Ordering::Relaxed) != generation {
                        return;
                    }
                    request_keyframe(&entry).await;
                }
            });
        }
        Ok(())
    }
}

/// How long a forward target may refuse before it is reported: a player is usually started
/// from the SDP file after the `forward` reply.
pub(crate) const REFUSED_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Delays between the keyframe requests that follow a forward's start (0.5, 1.5, 3.5, 7.5 s).
const KEYFRAME_REPEATS_MS: [u64; 4] = [500, 1000, 2000, 4000];

/// Asks the sender of a video track for a keyframe (RTCP PLI).
pub(crate) async fn request_keyframe(entry: &TrackEntry) {
    let media_ssrc = u32::try_from(entry.ssrc.load(Ordering::Relaxed)).unwrap_or(0);
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    if let Err(err) = entry.remote.write_rtcp(vec![Box::new(pli)]).await {
        tracing::debug!("keyframe request not sent: {err}");
    }
}

/// What a track's reader reports to its connection's owner.
pub(crate) enum TrackReport {
    /// The first packet arrived.
    Started(RemoteTrackInfo),
    /// The forward target refuses (track id, why): once per `forward`.
    Refused(String, String),
    /// The track ended (only if it had started).
    Ended(String),
    /// A reassembled frame (`forward {deliver}`).
    Frame(crate::deliver::Frame),
}

/// Reads one remote track until it ends: reports it at its first packet, forwards its packets
/// while a target is set, and reports its end.
pub(crate) fn spawn_reader(
    tracks: Arc<Tracks>,
    remote: Arc<dyn TrackRemote>,
    report: impl Fn(TrackReport) + Send + 'static,
) {
    tokio::spawn(async move {
        let kind = match remote.kind().await {
            RtpCodecKind::Audio => MediaKind::Audio,
            RtpCodecKind::Video => MediaKind::Video,
            _ => return,
        };
        let stream = remote.stream_id().await.to_string();
        let track = remote.track_id().await.to_string();
        let entry = Arc::new(TrackEntry {
            remote: Arc::clone(&remote),
            kind,
            ssrc: AtomicU64::new(0),
            sink: Mutex::new(None),
            generation: AtomicU64::new(0),
            refused: AtomicBool::new(false),
            received: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            deliver: Mutex::new(None),
        });
        let mut announced = false;
        let mut buf = vec![0u8; 1500];
        while let Some(event) = remote.poll().await {
            match event {
                TrackRemoteEvent::OnRtpPacket(packet) => {
                    if !announced {
                        announced = true;
                        entry
                            .ssrc
                            .store(u64::from(packet.header.ssrc), Ordering::Relaxed);
                        tracks.lock().insert(track.clone(), Arc::clone(&entry));
                        report(TrackReport::Started(RemoteTrackInfo {
                            stream: stream.clone(),
                            track: track.clone(),
                            kind,
                            ssrc: packet.header.ssrc,
                            payload_type: packet.header.payload_type,
                        }));
                    }
                    let size = packet.marshal_size();
                    if buf.len() < size {
                        buf.resize(size, 0);
                    }
                    if let Ok(n) = packet.marshal_to(&mut buf) {
                        if let Some(why) = entry.forward(&buf[..n]) {
                            report(TrackReport::Refused(track.clone(), why));
                        }
                    }
                    if let Some(d) = entry.deliverer().as_mut() {
                        for f in d.push(&track, packet) {
                            report(TrackReport::Frame(f));
                        }
                    }
                }
                TrackRemoteEvent::OnEnded => break,
                _ => {}
            }
        }
        tracks.lock().remove(&track);
        if announced {
            report(TrackReport::Ended(track));
        }
    });
}
