//! The senders of one connection: one `sendonly` transceiver per shared track (wire protocol
//! §8.1), each fed by a [`LocalSource`] through its own queue and writer task.
//!
//! The writer rewrites each packet for its sender ([`Rewriter`]) and passes the receiver's
//! keyframe requests (RTCP PLI/FIR, delivered to us by [`KeyframeRequests`]) back to whichever
//! source feeds the sender at the time. A re-share moves the sender to another source without
//! touching the transceiver, which is what `replaceTrack` does in a browser.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet as IPacket, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::rtp_transceiver::{RtpSender, RtpTransceiver};

use crate::local_media::{LocalSource, Outgoing, SourceCodec};
use crate::media::MediaKind;
use crate::peer::RtcPeer;
use crate::rewrite::Rewriter;
use crate::RtcError;

/// One sender of this connection.
pub(crate) struct SenderEntry {
    transceiver: Arc<dyn RtpTransceiver>,
    sink: u64,
    /// The source feeding it now (shared with its writer, which asks it for keyframes).
    source: Arc<Mutex<Arc<LocalSource>>>,
}

/// The senders of one connection, by `msid` track id.
#[derive(Default)]
pub(crate) struct Senders {
    map: Mutex<HashMap<String, SenderEntry>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing held under these locks is left half-done by a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Senders {
    /// Detaches every sender from its source (the connection is closing).
    pub(crate) fn detach_all(&self) {
        for (_, e) in lock(&self.map).drain() {
            let _ = lock(&e.source).take_sink(e.sink);
        }
    }
}

impl RtcPeer {
    /// Adds a `sendonly` transceiver for `track` of `stream` (its `a=msid`), fed by `source`.
    /// The next offer carries it; packets flow once the remote has answered.
    pub async fn add_sender(
        &self,
        stream: &str,
        track: &str,
        source: &Arc<LocalSource>,
    ) -> Result<(), RtcError> {
        let codec = source.codec();
        let kind = match codec.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let ssrc: u32 = rand::random();
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream.to_owned(),
            track.to_owned(),
            track.to_owned(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                // No codec: the transceiver then offers every codec of its kind. Naming one
                // makes it the only one offered and answered, and the stack narrows the
                // connection's codecs to what was negotiated, so a later share (or re-share)
                // of another codec could not be offered. The writer picks the payload type
                // of its source's codec among those negotiated.
                active: true,
                ..Default::default()
            }],
        )));
        let transceiver = self
            .pc()
            .add_transceiver_from_track(
                Arc::clone(&local) as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![stream.to_owned()],
                    send_encodings: vec![],
                }),
            )
            .await?;
        let sender = transceiver.sender().await?;
        let (sink, rx) = source.add_sink();
        let current = Arc::new(Mutex::new(Arc::clone(source)));
        let rewriter = Rewriter::new(ssrc, rand::random(), rand::random());
        tokio::spawn(write_loop(
            local,
            sender,
            rx,
            rewriter,
            Arc::clone(&current),
        ));
        // A new receiver decodes only from a keyframe: ask for one now.
        source.request_keyframe();
        lock(&self.senders().map).insert(
            track.to_owned(),
            SenderEntry {
                transceiver,
                sink,
                source: current,
            },
        );
        Ok(())
    }

    /// Feeds the sender of `track` from `source` instead (a re-share of the same kind: no
    /// renegotiation, the remote keeps its track).
    pub fn set_sender_source(
        &self,
        track: &str,
        source: &Arc<LocalSource>,
    ) -> Result<(), RtcError> {
        let map = lock(&self.senders().map);
        let entry = map
            .get(track)
            .ok_or_else(|| RtcError::NoSuchSender(track.to_owned()))?;
        let mut current = lock(&entry.source);
        if Arc::ptr_eq(&current, source) {
            return Ok(());
        }
        if let Some(port) = current.take_sink(entry.sink) {
            source.adopt_sink(port);
        }
        *current = Arc::clone(source);
        drop(current);
        source.request_keyframe();
        Ok(())
    }

    /// Stops the transceiver of `track`: the next offer rejects its section (§8.4).
    pub async fn stop_sender(&self, track: &str) -> Result<(), RtcError> {
        let entry = lock(&self.senders().map).remove(track);
        let Some(entry) = entry else {
            return Err(RtcError::NoSuchSender(track.to_owned()));
        };
        let _ = lock(&entry.source).take_sink(entry.sink);
        entry.transceiver.stop().await?;
        Ok(())
    }
}

/// The payload type `codec` was negotiated with on this sender, preferring the exact `fmtp`
/// (H.264 has several profiles and packetization modes).
async fn payload_type(sender: &Arc<dyn RtpSender>, codec: &SourceCodec) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    let same = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
        c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime)
    };
    let codecs = &params.rtp_parameters.codecs;
    codecs
        .iter()
        .filter(same)
        .find(|c| c.rtp_codec.sdp_fmtp_line == codec.fmtp)
        .or_else(|| codecs.iter().find(same))
        .map(|c| c.payload_type)
}

fn is_keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Writes one sender's packets and reads its RTCP feedback until the connection or the sender
/// is gone.
async fn write_loop(
    local: Arc<TrackLocalStaticRTP>,
    sender: Option<Arc<dyn RtpSender>>,
    mut rx: mpsc::Receiver<Outgoing>,
    mut rewriter: Rewriter,
    current: Arc<Mutex<Arc<LocalSource>>>,
) {
    // Payload type per source id, looked up once found (a re-share may change codec). Before
    // the remote has answered there is none yet: packets are dropped and the lookup is tried
    // again, at most every 100 ms.
    let mut pt: Option<(u64, u8)> = None;
    // While it is missing: (source, first miss, last try, reported).
    let mut missing: Option<(u64, Instant, Instant, bool)> = None;
    let mut feedback = true;
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(Outgoing { source, codec, mut packet }) = out else { break };
                if pt.is_none_or(|(s, _)| s != source) {
                    let now = Instant::now();
                    let (first, said) = match missing {
                        Some((s, first, last, said)) if s == source => {
                            if now.duration_since(last) < std::time::Duration::from_millis(100) {
                                continue;
                            }
                            (first, said)
                        }
                        _ => (now, false),
                    };
                    let found = match &sender {
                        Some(s) => payload_type(s, &codec).await,
                        None => None,
                    };
                    let Some(p) = found else {
                        // Said once per source, once negotiation has had time.
                        let say = !said && now.duration_since(first) > std::time::Duration::from_secs(5);
                        if say {
                            tracing::warn!(
                                "the peer did not accept {} on this sender; its packets are \
                                 dropped",
                                codec.mime
                            );
                        }
                        missing = Some((source, first, now, said || say));
                        continue;
                    };
                    pt = Some((source, p));
                    if missing.take().is_some() {
                        // What came before the answer is lost: start from a keyframe.
                        let source = Arc::clone(&lock(&current));
                        source.request_keyframe();
                    }
                }
                let Some((_, payload_type)) = pt else { continue };
                rewriter.rewrite(
                    Instant::now(),
                    &mut packet.header,
                    source,
                    codec.clock_rate,
                    payload_type,
                );
                if local.write_rtp(packet).await.is_err() {
                    // Not negotiated yet, or the connection is gone: media is lossy.
                    continue;
                }
            }
            event = local.poll(), if feedback => match event {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                    if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                        let source = Arc::clone(&lock(&current));
                        source.request_keyframe();
                    }
                }
                Some(_) => {}
                // The connection ended its event streams.
                None => feedback = false,
            },
        }
    }
}

/// Delivers keyframe requests (PLI, FIR) about our senders to the application: the default
/// chain consumes all inbound RTCP, and without this a receiver's request never reaches the
/// source.
#[derive(Default)]
pub(crate) struct KeyframeRequests {
    read: std::collections::VecDeque<TaggedPacket>,
    write: std::collections::VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let IPacket::Rtcp(packets) = &msg.message.packet {
            if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}
