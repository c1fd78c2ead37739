//! Streamed sends of a client session: a send whose data comes in several request frames
//! (`more: true`) is fed, chunk by chunk, to the lanes of its targets; replies wait for the
//! chunk to be taken (the client's back-pressure).

use super::*;

/// A streamed send in progress: its chunks go, in order, to the task feeding its lanes.
pub(super) struct ActiveStream {
    pub(super) feed: tokio::sync::mpsc::UnboundedSender<Feed>,
    pub(super) pushed: u64,
    /// The start's type: every chunk must match it.
    pub(super) kind: PayloadType,
    pub(super) label: String,
    /// The start request's id when it asked for progress.
    pub(super) progress: Option<u64>,
    /// The target peers.
    pub(super) peers: Vec<String>,
}

/// One chunk of a streamed send and where its reply's result goes: `None` once the targets took
/// a non-final chunk, every target's outcome after the final one.
pub(super) struct Feed {
    pub(super) data: Bytes,
    pub(super) more: bool,
    pub(super) done: tokio::sync::oneshot::Sender<Option<Vec<(String, SendOutcome)>>>,
}

/// One target of a streamed send: where its pieces go and where its outcome comes from.
pub(super) struct StreamTarget {
    pub(super) peer: String,
    pub(super) pieces: tokio::sync::mpsc::Sender<StreamPiece>,
    pub(super) result: tokio::sync::oneshot::Receiver<SendOutcome>,
}

/// Pieces in flight per peer of a streamed send: a few IPC chunks, so a slow peer slows the
/// client down instead of filling the daemon's memory.
const STREAM_PIECES_IN_FLIGHT: usize = 4;

pub(super) struct StreamedSend {
    pub(super) room: String,
    pub(super) label: String,
    pub(super) to: Option<String>,
    pub(super) kind: PayloadType,
    pub(super) info: Option<Vec<u8>>,
    pub(super) buf: Bytes,
    pub(super) progress: Option<u64>,
}

impl ClientSession {
    /// Starts a streamed send: one transfer per target peer, queued on the label's lane like any
    /// message (so it keeps its place in the client's order), fed chunk by chunk as they arrive.
    pub(super) fn open_stream(
        &mut self,
        id: u64,
        transfer: u64,
        p: StreamedSend,
        ctx: &mut Context<Self>,
    ) {
        let lanes = match self.routes.send_targets(&p.room, &p.label, p.to.as_deref()) {
            Ok(t) => t,
            Err(e) => return self.reply(id, Err(e), ctx),
        };
        let progress = p.progress.map(|request| ProgressTo {
            to: ctx.address().recipient(),
            request,
        });
        let peers = lanes.iter().map(|(p, _)| p.clone()).collect();
        let targets = lanes
            .into_iter()
            .map(|(peer, lanes)| {
                let (pieces, rx) = tokio::sync::mpsc::channel(STREAM_PIECES_IN_FLIGHT);
                let (result_tx, result) = tokio::sync::oneshot::channel();
                if !p.buf.is_empty() {
                    // A fresh channel has room: the first piece never waits.
                    let _ = pieces.try_send(StreamPiece::Data(p.buf.clone()));
                }
                let stream = OutgoingStream {
                    kind: p.kind,
                    info: p.info.clone(),
                    pieces: rx,
                };
                lanes.enqueue(
                    &peer,
                    &p.label,
                    LaneItem::Stream {
                        stream,
                        progress: progress.clone(),
                        result: result_tx,
                    },
                );
                StreamTarget {
                    peer,
                    pieces,
                    result,
                }
            })
            .collect();
        let (feed, rx) = tokio::sync::mpsc::unbounded_channel();
        actix::spawn(feed_stream(targets, rx));
        self.streams.insert(
            transfer,
            ActiveStream {
                feed,
                pushed: p.buf.len() as u64,
                kind: p.kind,
                label: p.label,
                progress: p.progress,
                peers,
            },
        );
        self.reply(id, Ok(obj(vec![("transfer", Value::from(transfer))])), ctx);
    }

    /// Sends a complete message: queued on the label's lane of every target peer before the
    /// next request is read; the reply waits for every peer's outcome.
    pub(super) fn finish_send(
        &mut self,
        id: u64,
        transfer: u64,
        p: StreamedSend,
        ctx: &mut Context<Self>,
    ) {
        let progress = p.progress.map(|request| ProgressTo {
            to: ctx.address().recipient(),
            request,
        });
        let total = p.buf.len() as u64;
        let progress_id = p.progress;
        let label = p.label.clone();
        let message = OutgoingMessage {
            kind: p.kind,
            info: p.info,
            data: p.buf,
        };
        let outcomes = match self
            .routes
            .send(&p.room, &p.label, p.to.as_deref(), message, progress)
        {
            Ok(f) => f,
            Err(e) => return self.reply(id, Err(e), ctx),
        };
        ctx.spawn(outcomes.into_actor(self).map(move |peers, act, ctx| {
            if let Some(request) = progress_id {
                act.progress_done(request, &label, total, &peers, ctx);
            }
            act.reply(id, Ok(delivery_report(transfer, peers)), ctx)
        }));
    }
}

fn lost() -> String {
    "peer connection closed".to_string()
}

impl ClientSession {
    /// Ends streamed transfer `transfer` early (a refused chunk): dropping its feed aborts it at
    /// every receiver; a client that asked for progress gets each target's last frame.
    pub(super) fn abort_stream(&mut self, transfer: u64, why: &str, ctx: &mut Context<Self>) {
        let Some(s) = self.streams.remove(&transfer) else {
            return;
        };
        if let Some(request) = s.progress {
            let peers: Vec<_> = s
                .peers
                .into_iter()
                .map(|p| (p, Err(format!("transfer {transfer} aborted: {why}"))))
                .collect();
            self.progress_done(request, &s.label, s.pushed, &peers, ctx);
        }
    }
}

/// `{transfer, peers: [{id, ok, error?}]}`, the result of a delivered (or failed) send.
pub(super) fn delivery_report(transfer: u64, peers: Vec<(String, SendOutcome)>) -> Value {
    let peers = peers
        .into_iter()
        .map(|(peer, r)| {
            let mut f = vec![
                ("id", Value::from(peer.as_str())),
                ("ok", Value::Boolean(r.is_ok())),
            ];
            if let Err(e) = r {
                f.push(("error", crate::actors::error_value("SEND_FAILED", &e)));
            }
            obj(f)
        })
        .collect();
    obj(vec![
        ("transfer", Value::from(transfer)),
        ("peers", Value::Array(peers)),
    ])
}

/// Feeds a streamed send's chunks to its targets, one chunk to every target before the next
/// (each target's lane takes a few ahead, see `STREAM_PIECES_IN_FLIGHT`). A non-final chunk is
/// answered once every target took it: that is the client's flow control. The final one is
/// answered with the delivery report. Ending early (the session dropped the feed) drops the piece
/// senders, which aborts the transfer at every receiver.
async fn feed_stream(
    targets: Vec<StreamTarget>,
    mut feed: tokio::sync::mpsc::UnboundedReceiver<Feed>,
) {
    while let Some(f) = feed.recv().await {
        if !f.data.is_empty() {
            for t in &targets {
                let _ = t.pieces.send(StreamPiece::Data(f.data.clone())).await;
            }
        }
        if f.more {
            let _ = f.done.send(None);
            continue;
        }
        let mut peers = Vec::with_capacity(targets.len());
        for t in &targets {
            let _ = t.pieces.send(StreamPiece::End).await;
        }
        for t in targets {
            peers.push((t.peer, t.result.await.unwrap_or_else(|_| Err(lost()))));
        }
        let _ = f.done.send(Some(peers));
        return;
    }
}

/// The payload's bytes, moved (not copied) out of the decoded request.
pub(super) fn payload_bytes(p: Payload) -> Result<(PayloadType, Bytes), DaemonError> {
    Ok(match p {
        Payload::Text(s) => (PayloadType::Text, Bytes::from(s.into_bytes())),
        Payload::Bytes(b) => (PayloadType::Bytes, Bytes::from(b)),
        Payload::Json(v) => {
            let bytes = serde_json::to_vec(&msgpack_to_json(&v))
                .map_err(|e| DaemonError::BadRequest(format!("send: data: {e}")))?;
            (PayloadType::Json, Bytes::from(bytes))
        }
    })
}
