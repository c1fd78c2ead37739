//! `RoomActor`'s own media (wire protocol §8.1): the local sources of each label it shares
//! (an RTP ingest port, or a track fed with `frame`), and what the machine is told to share.
//!
//! A source belongs to the room, not to a connection: one ingest fans out to every peer's
//! sender, and peers that connect later get the same sources (the machine adds them when
//! their control channel opens). The machine decides what each connection does (add, replace,
//! stop, offer); peers look the sources up here by id when they carry that out.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::prelude::*;
use peerix_ipc_proto::{FrameArgs, ShareArgs, ShareResult, SharedTrack};
use peerix_proto::{LocalTrack, Share};
use peerix_rtc::{spawn_rtp_ingest, LocalSource, SourceCodec, SourceReport};
use rmpv::Value;

use super::error_value;
use super::event_bus::{Emit, EventBus, EventRecord};
use super::room::RoomActor;
use crate::error::DaemonError;

/// The local sources of a room, by id: what its peers' senders attach to.
#[derive(Clone, Default)]
pub struct SourceMap(Arc<Mutex<HashMap<u64, Arc<LocalSource>>>>);

impl SourceMap {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<LocalSource>>> {
        // Inserts and removes only: a panic cannot leave the map half-changed.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The source with this id, if it is still shared.
    pub fn get(&self, id: u64) -> Option<Arc<LocalSource>> {
        self.lock().get(&id).cloned()
    }
}

/// One track of a label we share.
struct SharedEntry {
    track: String,
    source: Arc<LocalSource>,
    rtp: Option<SocketAddr>,
}

/// What a room shares, by label.
#[derive(Default)]
pub struct LocalShares {
    labels: BTreeMap<String, (String, Vec<SharedEntry>)>,
    /// Shared with the room's peers (see [`SourceMap`]).
    pub sources: SourceMap,
}

impl LocalShares {
    fn retire(&self, entry: &SharedEntry) {
        entry.source.close();
        self.sources.lock().remove(&entry.source.id());
    }

    /// Every source stops (the room is going away).
    pub fn close_all(&mut self) {
        for (_, (_, entries)) in std::mem::take(&mut self.labels) {
            for e in &entries {
                self.retire(e);
            }
        }
    }

    /// What `status` shows: each label, its stream and its tracks with their counters.
    pub fn describe(&self) -> Vec<peerix_ipc_proto::ShareStatus> {
        self.labels
            .iter()
            .map(|(label, (stream, entries))| peerix_ipc_proto::ShareStatus {
                label: label.clone(),
                stream: stream.clone(),
                tracks: entries
                    .iter()
                    .map(|e| {
                        let s = e.source.stats();
                        peerix_ipc_proto::ShareTrackStatus {
                            track: e.track.clone(),
                            kind: e.source.codec().kind.as_str().to_owned(),
                            codec: e.source.codec().mime.clone(),
                            rtp: e.rtp.map(|a| a.to_string()),
                            packets: s.packets,
                            bytes: s.bytes,
                            malformed: s.malformed,
                            dropped: s.dropped,
                            keyframe_requests: s.keyframe_requests,
                            senders: s.senders,
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}

impl Drop for LocalShares {
    fn drop(&mut self) {
        self.close_all();
    }
}

static NEXT_SOURCE: AtomicU64 = AtomicU64::new(1);

/// An id as browsers make them for streams and tracks (a v4 UUID).
fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        h(0..4),
        h(4..6),
        &h(6..8)[1..],
        8 | (b[8] & 3),
        &h(8..10)[1..],
        h(10..16)
    )
}

/// Tells the room's clients what a source reports.
fn reporter(
    bus: Addr<EventBus>,
    room: String,
    label: String,
    track: String,
    kind: &'static str,
    rtp: Option<SocketAddr>,
) -> impl Fn(SourceReport) + Send + Sync + 'static {
    move |r| {
        // An `error` event about this track, logged as a warning too.
        let error = |code: &str, message: String| {
            tracing::warn!(room = %room, label = %label, "{message}");
            EventRecord::new(
                "error",
                Some(&room),
                vec![
                    ("label", Value::from(label.as_str())),
                    ("track", Value::from(track.as_str())),
                    ("error", error_value(code, &message)),
                ],
            )
        };
        let record = match r {
            SourceReport::Keyframe => EventRecord::new(
                peerix_ipc_proto::event_names::TRACK_KEYFRAME,
                Some(&room),
                vec![
                    ("label", Value::from(label.as_str())),
                    ("track", Value::from(track.as_str())),
                    ("kind", Value::from(kind)),
                ],
            ),
            SourceReport::OverLimit(why) => {
                let message = format!("share {label:?}: {kind} arrives at {why}");
                error("LIMIT_EXCEEDED", message)
            }
            SourceReport::Malformed { count, why } => {
                let at = rtp.map(|a| a.to_string()).unwrap_or_default();
                let message = format!(
                    "RTP ingest {at} (label {label:?}): {count} datagram(s) so far were not \
                     RTP and were dropped; last: {why}"
                );
                error("MALFORMED_FRAME", message)
            }
        };
        bus.do_send(Emit(record));
    }
}

/// `share`.
#[derive(Message)]
#[rtype(result = "Result<ShareResult, DaemonError>")]
pub struct RoomShare(pub ShareArgs);

/// `unshare`: replies whether the label was shared.
#[derive(Message)]
#[rtype(result = "Result<bool, DaemonError>")]
pub struct RoomUnshare(pub String);

/// `frame`.
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct RoomFrame(pub FrameArgs);

impl Handler<RoomShare> for RoomActor {
    type Result = Result<ShareResult, DaemonError>;
    fn handle(&mut self, RoomShare(a): RoomShare, ctx: &mut Self::Context) -> Self::Result {
        let (stream, old) = match self.shares.labels.remove(&a.label) {
            Some((stream, old)) => (stream, old),
            None => (uuid(), Vec::new()),
        };
        let mut old: Vec<Option<SharedEntry>> = old.into_iter().map(Some).collect();
        let mut made: Vec<SharedEntry> = Vec::new();
        let mut reused: Vec<bool> = Vec::new();
        let mut failure = None;
        for t in &a.tracks {
            let codec = match SourceCodec::by_name(&t.codec) {
                Ok(c) => c,
                Err(e) => {
                    failure = Some(DaemonError::BadRequest(e.to_string()));
                    break;
                }
            };
            let want: Option<SocketAddr> = t.rtp.as_deref().and_then(|r| r.parse().ok());
            // The same port with the same codec is the same source (the sender keeps it);
            // another codec on that port needs the port freed first.
            let same_port = old.iter().position(|o| {
                o.as_ref()
                    .is_some_and(|o| want.is_some() && o.rtp.is_some_and(|p| Some(p) == want))
            });
            if let Some(i) = same_port {
                if let Some(o) = old[i].take() {
                    if *o.source.codec() == codec && want.is_some_and(|w| w.port() != 0) {
                        made.push(o);
                        reused.push(true);
                        continue;
                    }
                    self.shares.retire(&o);
                }
            }
            let id = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed);
            let track = uuid();
            let kind = codec.kind.as_str();
            let source = LocalSource::new(
                id,
                codec,
                reporter(
                    self.s.bus.clone(),
                    self.s.room.clone(),
                    a.label.clone(),
                    track.clone(),
                    kind,
                    want,
                ),
            );
            let rtp = match want {
                Some(addr) => match spawn_rtp_ingest(&source, addr) {
                    Ok(bound) => Some(bound),
                    Err(e) => {
                        failure = Some(DaemonError::BadRequest(format!(
                            "cannot listen for RTP on {addr}: {e} (is another share or program \
                             using that port?)"
                        )));
                        break;
                    }
                },
                None => None,
            };
            made.push(SharedEntry { track, source, rtp });
            reused.push(false);
        }
        if let Some(e) = failure {
            // What was shared stays shared; the sources made for this request go.
            let mut back: Vec<SharedEntry> = Vec::new();
            for (m, reused) in made.into_iter().zip(reused) {
                if reused {
                    back.push(m);
                } else {
                    m.source.close();
                }
            }
            back.extend(old.into_iter().flatten());
            if !back.is_empty() {
                self.shares.labels.insert(a.label.clone(), (stream, back));
            }
            return Err(e);
        }
        for o in old.into_iter().flatten() {
            self.shares.retire(&o);
        }
        for m in &made {
            let p = match m.source.codec().kind {
                peerix_rtc::MediaKind::Audio => a.audio_parameters,
                peerix_rtc::MediaKind::Video => a.video_parameters,
            }
            .unwrap_or_default();
            m.source.set_limits(p.max_bitrate, p.max_framerate);
        }
        {
            let mut map = self.shares.sources.lock();
            for m in &made {
                map.insert(m.source.id(), Arc::clone(&m.source));
            }
        }
        self.machine.share(
            &a.label,
            Share {
                stream: stream.clone(),
                tracks: made
                    .iter()
                    .map(|m| LocalTrack {
                        id: m.track.clone(),
                        kind: m.source.codec().kind.as_str().to_owned(),
                        source: m.source.id(),
                    })
                    .collect(),
            },
        );
        self.drive(ctx);
        tracing::info!(room = %self.s.room, label = %a.label, tracks = made.len(), "share");
        let result = ShareResult {
            stream: stream.clone(),
            tracks: made
                .iter()
                .map(|m| SharedTrack {
                    track: m.track.clone(),
                    kind: m.source.codec().kind.as_str().to_owned(),
                    codec: m.source.codec().mime.clone(),
                    rtp: m.rtp.map(|a| a.to_string()),
                })
                .collect(),
        };
        self.shares.labels.insert(a.label, (stream, made));
        Ok(result)
    }
}

impl Handler<RoomUnshare> for RoomActor {
    type Result = Result<bool, DaemonError>;
    fn handle(&mut self, RoomUnshare(label): RoomUnshare, ctx: &mut Self::Context) -> Self::Result {
        let Some((_, entries)) = self.shares.labels.remove(&label) else {
            return Ok(false);
        };
        for e in &entries {
            self.shares.retire(e);
        }
        self.machine.unshare(&label);
        self.drive(ctx);
        tracing::info!(room = %self.s.room, %label, "unshare");
        Ok(true)
    }
}

impl Handler<RoomFrame> for RoomActor {
    type Result = Result<(), DaemonError>;
    fn handle(&mut self, RoomFrame(a): RoomFrame, _: &mut Self::Context) -> Self::Result {
        let entry = self
            .shares
            .labels
            .values()
            .flat_map(|(_, e)| e.iter())
            .find(|e| e.track == a.track)
            .ok_or_else(|| {
                DaemonError::NoSuchStream(format!(
                    "no shared track {:?} in room {:?} (use a `track` from the share reply)",
                    a.track, self.s.room
                ))
            })?;
        if let Some(rtp) = entry.rtp {
            return Err(DaemonError::BadRequest(format!(
                "track {} is fed by RTP on {rtp}; `frame` feeds tracks shared without `rtp`",
                a.track
            )));
        }
        let duration = std::time::Duration::from_micros(a.duration);
        entry
            .source
            .push_frame(&bytes::Bytes::from(a.data), duration)
            .map_err(|e| DaemonError::BadRequest(format!("cannot packetize this frame: {e}")))
    }
}
