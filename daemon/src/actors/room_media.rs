//! `RoomActor`'s media side: Peerix's `stream:*`/`track:*` events from the machine's
//! decisions, and `forward` requests routed to the connection that receives the track.

use std::net::SocketAddr;

use actix::prelude::*;
use peerix_ipc_proto::ForwardResult;
use peerix_proto::MediaEvent;
use rmpv::Value;

use super::event_bus::{Emit, EventRecord};
use super::peer_media::PeerForward;
use super::room::RoomActor;
use crate::error::DaemonError;

impl RoomActor {
    /// One of the machine's media events, as the event clients see (§8.3).
    pub(super) fn emit_media(&self, peer: &str, event: MediaEvent) {
        let (name, label, stream, track) = match &event {
            MediaEvent::StreamAdd { label, stream } => ("stream:add", label, stream, None),
            MediaEvent::StreamRemove { label, stream } => ("stream:remove", label, stream, None),
            MediaEvent::TrackAdd { label, info } => ("track:add", label, &info.stream, Some(info)),
            MediaEvent::TrackRemove { label, info } => {
                ("track:remove", label, &info.stream, Some(info))
            }
        };
        let mut fields = vec![
            ("peer", Value::from(peer)),
            ("id", Value::from(peer)),
            ("label", Value::from(label.as_str())),
            ("stream", Value::from(stream.as_str())),
        ];
        if let Some(t) = track {
            fields.push(("track", Value::from(t.track.as_str())));
            fields.push(("kind", Value::from(t.kind.as_str())));
            fields.push(("codec", Value::from(t.codec.as_str())));
            fields.push(("mid", Value::from(t.mid.as_str())));
        }
        tracing::info!(room = %self.s.room, peer, label = %label, "{name}");
        self.s
            .bus
            .do_send(Emit(EventRecord::new(name, Some(&self.s.room), fields)));
    }
}

/// `forward`: a remote track's RTP to a local UDP address (or stop).
#[derive(Message)]
#[rtype(result = "Result<ForwardResult, DaemonError>")]
pub struct RoomForward {
    /// The sharing peer.
    pub peer: String,
    /// Its label.
    pub label: String,
    /// `audio`/`video`, when the label has both.
    pub kind: Option<String>,
    /// The target, or `None` to stop.
    pub to: Option<SocketAddr>,
    /// Deliver frames as events instead.
    pub deliver: bool,
}

impl Handler<RoomForward> for RoomActor {
    type Result = ResponseFuture<Result<ForwardResult, DaemonError>>;
    fn handle(&mut self, m: RoomForward, _: &mut Self::Context) -> Self::Result {
        let room = self.s.room.clone();
        let found =
            (|| {
                let (conn, _) =
                    self.machine
                        .peer(&m.peer)
                        .ok_or_else(|| DaemonError::NoSuchPeer {
                            room: room.clone(),
                            peer: m.peer.clone(),
                        })?;
                let tracks: Vec<_> = self
                    .machine
                    .remote_tracks(&m.peer)
                    .into_iter()
                    .filter(|(l, t)| *l == m.label && m.kind.as_ref().is_none_or(|k| *k == t.kind))
                    .map(|(_, t)| t)
                    .collect();
                let track =
                    match tracks.as_slice() {
                        [one] => one.clone(),
                        [] => {
                            return Err(DaemonError::NoSuchStream(format!(
                        "peer {} shares no {}track under label {:?} in room {room:?} (see its \
                         stream:add/track:add events)",
                        m.peer,
                        m.kind.as_deref().map(|k| format!("{k} ")).unwrap_or_default(),
                        m.label
                    )))
                        }
                        _ => {
                            return Err(DaemonError::BadRequest(format!(
                        "label {:?} of peer {} has {} tracks: say which with `kind` (\"audio\" \
                         or \"video\")",
                        m.label,
                        m.peer,
                        tracks.len()
                    )))
                        }
                    };
                let addr = self.conns.get(&conn).cloned().ok_or_else(|| {
                    DaemonError::Internal("the connection's actor is gone".into())
                })?;
                Ok((addr, track))
            })();
        let name = format!("peerix {room} {} {}", m.peer, m.label);
        Box::pin(async move {
            let (addr, track) = found?;
            let sdp = addr
                .send(PeerForward {
                    track: track.track.clone(),
                    to: m.to,
                    deliver: m.deliver,
                    name,
                })
                .await?
                .map_err(DaemonError::BadRequest)?;
            Ok(ForwardResult {
                track: track.track,
                kind: track.kind,
                codec: track.codec,
                sdp,
            })
        })
    }
}
