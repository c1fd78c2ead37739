//! `PeerActor`'s media side: the remote tracks of its connection (wire protocol §8.3).
//!
//! The stack reports a remote track at its first RTP packet; the actor looks its codec and
//! `a=mid` up in the remote SDP (`peerix_proto::track_format`) and tells the room's machine,
//! which names it by the label map and emits Peerix's `stream:*`/`track:*` events. `forward`
//! sends a track's RTP, unchanged, to a local UDP address with an SDP file to read it by.

use std::net::SocketAddr;

use actix::prelude::*;
use peerix_proto::{forward_sdp, track_format, ConnEvent, MediaOp, RtpFormat, TrackInfo};
use peerix_rtc::RemoteTrackInfo;

use rmpv::Value;

use super::error_value;
use super::event_bus::{Emit, EventRecord};
use super::peer::PeerActor;

/// Carries out the machine's changes to our senders (§8.4), then makes the offer they need.
/// A source unshared meanwhile is skipped: the machine's next change removes its sender.
pub(super) async fn change_senders(
    rtc: &peerix_rtc::RtcPeer,
    sources: &super::room_shares::SourceMap,
    changes: Vec<MediaOp>,
    offer: bool,
) -> Result<Option<peerix_rtc::SessionDescription>, peerix_rtc::RtcError> {
    for change in changes {
        match change {
            MediaOp::AddSender {
                stream,
                track,
                source,
            } => {
                if let Some(src) = sources.get(source) {
                    rtc.add_sender(&stream, &track, &src).await?;
                }
            }
            MediaOp::SetSource { track, source } => {
                if let Some(src) = sources.get(source) {
                    rtc.set_sender_source(&track, &src)?;
                }
            }
            MediaOp::StopSender { track } => match rtc.stop_sender(&track).await {
                Ok(()) | Err(peerix_rtc::RtcError::NoSuchSender(_)) => {}
                Err(e) => return Err(e),
            },
        }
    }
    if offer {
        Ok(Some(rtc.create_offer().await?))
    } else {
        Ok(None)
    }
}

/// Forward a remote track's RTP to `to`, or stop (`None`); or deliver its frames as events.
#[derive(Message)]
#[rtype(result = "Result<String, String>")]
pub struct PeerForward {
    /// The track id.
    pub track: String,
    /// The target, or `None` to stop.
    pub to: Option<SocketAddr>,
    /// Deliver reassembled frames as `track:frame` events (instead of, or beside, RTP).
    pub deliver: bool,
    /// The SDP's session name.
    pub name: String,
}

impl PeerActor {
    /// A remote track started: find its format, remember it, tell the machine.
    pub(super) fn remote_track(&mut self, info: RemoteTrackInfo, ctx: &mut Context<Self>) {
        let Some(rtc) = self.rtc.clone() else { return };
        ctx.spawn(async move { rtc.remote_sdp().await }.into_actor(self).map(
            move |sdp, act, _| {
                let kind = info.kind.as_str();
                let found = sdp.as_deref().and_then(|sdp| {
                    track_format(sdp, kind, &info.stream, &info.track, info.payload_type)
                });
                let (mid, format) = found.unwrap_or_else(|| {
                    // Not in the SDP (cannot happen with a stack that checks payload
                    // types): still report the track, without a codec to forward it by.
                    (
                        String::new(),
                        RtpFormat {
                            payload_type: info.payload_type,
                            mime: format!("{kind}/unknown"),
                            clock_rate: 0,
                            channels: 0,
                            fmtp: String::new(),
                        },
                    )
                });
                let track = TrackInfo {
                    stream: info.stream,
                    track: info.track.clone(),
                    kind: kind.to_owned(),
                    codec: format.mime.clone(),
                    mid,
                };
                act.media.insert(info.track, format);
                act.report(ConnEvent::Track(track));
            },
        ));
    }

    /// Nothing receives a track's forward: the client is told (an `error` event `SEND_FAILED`
    /// with `peer`), at INFO in the log, since a player that quit is the client's business.
    pub(super) fn forward_refused(&self, track: &str, why: &str) {
        let message = format!("forward of track {track}: {why}");
        tracing::info!(room = %self.s.room, peer = %self.s.remote, "{message}");
        self.s.bus.do_send(Emit(EventRecord::new(
            "error",
            Some(&self.s.room),
            vec![
                ("peer", Value::from(self.s.remote.as_str())),
                ("error", error_value("SEND_FAILED", &message)),
            ],
        )));
    }

    /// A reassembled frame of a delivered track: a `track:frame` event for the room's clients.
    /// The frame's slot is freed when the event is handed to the bus.
    pub(super) fn remote_frame(&self, f: peerix_rtc::Frame) {
        let Some(format) = self.media.get(&f.track) else {
            return;
        };
        let kind = format.mime.split('/').next().unwrap_or("video");
        self.s.bus.do_send(Emit(EventRecord::new(
            peerix_ipc_proto::event_names::TRACK_FRAME,
            Some(&self.s.room),
            vec![
                ("peer", Value::from(self.s.remote.as_str())),
                ("track", Value::from(f.track.as_str())),
                ("kind", Value::from(kind)),
                ("codec", Value::from(format.mime.as_str())),
                ("timestamp", Value::from(f.rtp_timestamp)),
                ("duration", Value::from(f.duration_us)),
                ("data", Value::Binary(f.data.to_vec())),
            ],
        )));
    }

    /// A remote track ended.
    pub(super) fn remote_track_ended(&mut self, track: String) {
        self.media.remove(&track);
        self.report(ConnEvent::TrackEnded(track));
    }
}

impl Handler<PeerForward> for PeerActor {
    type Result = ResponseFuture<Result<String, String>>;
    fn handle(&mut self, m: PeerForward, _: &mut Self::Context) -> Self::Result {
        let rtc = self.rtc.clone();
        let format = self.media.get(&m.track).cloned();
        Box::pin(async move {
            let rtc = rtc.ok_or("the connection is closing")?;
            let format = format.ok_or_else(|| format!("no remote track {}", m.track))?;
            if format.clock_rate == 0 {
                return Err(format!(
                    "the codec of track {} is not in the remote description",
                    m.track
                ));
            }
            if m.deliver {
                rtc.deliver(&m.track, Some((&format.mime, format.clock_rate)))
                    .map_err(|e| e.to_string())?;
            } else {
                if m.to.is_none() {
                    // `stop` ends both.
                    rtc.deliver(&m.track, None).map_err(|e| e.to_string())?;
                }
                rtc.forward(&m.track, m.to)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(match m.to.filter(|_| !m.deliver) {
                Some(to) => {
                    let kind = format.mime.split('/').next().unwrap_or("video");
                    forward_sdp(&m.name, kind, to.ip(), to.port(), &format)
                }
                None => String::new(),
            })
        })
    }
}
