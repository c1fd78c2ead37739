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
                        result: OutcomeTo::task(result_tx),
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
        let session = ctx.address();
        let sent = self.routes.send(
            &p.room,
            &p.label,
            p.to.as_deref(),
            message,
            progress,
            move |peers| {
                session.do_send(SendDone {
                    id,
                    transfer,
                    label,
                    total,
                    progress: progress_id,
                    peers,
                })
            },
        );
        if let Err(e) = sent {
            self.reply(id, Err(e), ctx);
        }
    }
}

/// A whole-message send's outcome at every target, for its reply (and last progress frames).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct SendDone {
    id: u64,
    transfer: u64,
    label: String,
    total: u64,
    progress: Option<u64>,
    peers: Vec<(String, SendOutcome)>,
}

impl Handler<SendDone> for ClientSession {
    type Result = ();

    fn handle(&mut self, d: SendDone, ctx: &mut Context<Self>) {
        if let Some(request) = d.progress {
            self.progress_done(request, &d.label, d.total, &d.peers, ctx);
        }
        self.reply(d.id, Ok(delivery_report(d.transfer, d.peers)), ctx)
    }
}

/// `info` as the JSON that goes on the wire, refused if Peerix would refuse it.
pub(super) fn info_json(info: Option<&Value>) -> Result<Option<Vec<u8>>, DaemonError> {
    let Some(i) = info else { return Ok(None) };
    let json = serde_json::to_vec(&msgpack_to_json(i))
        .map_err(|e| DaemonError::BadRequest(format!("send: info: {e}")))?;
    if json.len() >= 16_320 {
        return Err(DaemonError::BadRequest(
            "send: `info` must be shorter than 16320 bytes of JSON".into(),
        ));
    }
    Ok(Some(json))
}

impl ClientSession {
    /// Sends a batch of whole messages: queued one after the other on every target's lane
    /// before the next request is read; one reply once every target's outcome of every
    /// message is known.
    pub(super) fn send_batch(&mut self, id: u64, b: SendBatch, ctx: &mut Context<Self>) {
        let info = match info_json(b.info.as_ref()) {
            Ok(i) => i,
            Err(e) => return self.reply(id, Err(e), ctx),
        };
        let mut messages = Vec::with_capacity(b.payloads.len());
        for p in b.payloads {
            if let Payload::Json(v) = &p {
                if let Err(e) = self.check_json_event(v, b.info.as_ref(), &b.room, &b.label) {
                    return self.reply(id, Err(e), ctx);
                }
            }
            let (kind, data) = match payload_bytes(p) {
                Ok(v) => v,
                Err(e) => return self.reply(id, Err(e), ctx),
            };
            messages.push(OutgoingMessage {
                kind,
                info: info.clone(),
                data,
            });
        }
        let count = messages.len() as u64;
        let transfer = self.next_transfer;
        let session = ctx.address();
        let sent = self.routes.send_batch(
            &b.room,
            &b.label,
            b.to.as_deref(),
            messages,
            None,
            move |peers| {
                session.do_send(BatchDone {
                    id,
                    transfer,
                    count,
                    peers,
                })
            },
        );
        match sent {
            Ok(()) => self.next_transfer += count,
            Err(e) => self.reply(id, Err(e), ctx),
        }
    }
}

/// A batch's outcome at every target, for its reply.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct BatchDone {
    id: u64,
    transfer: u64,
    count: u64,
    peers: Vec<(String, Vec<SendOutcome>)>,
}

impl Handler<BatchDone> for ClientSession {
    type Result = ();

    fn handle(&mut self, d: BatchDone, ctx: &mut Context<Self>) {
        let report = batch_report(d.transfer, d.count, d.peers);
        self.reply(d.id, Ok(report), ctx)
    }
}

/// `{transfer, count, peers: [{id, ok, delivered, failed?: [{index, error}]}]}`.
fn batch_report(transfer: u64, count: u64, peers: Vec<(String, Vec<SendOutcome>)>) -> Value {
    let peers = peers
        .into_iter()
        .map(|(peer, outcomes)| {
            let failed: Vec<Value> = outcomes
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let e = r.as_ref().err()?;
                    Some(obj(vec![
                        ("index", Value::from(i as u64)),
                        ("error", crate::actors::error_value("SEND_FAILED", e)),
                    ]))
                })
                .collect();
            let delivered = (outcomes.len() - failed.len()) as u64;
            let mut f = vec![
                ("id", Value::from(peer.as_str())),
                ("ok", Value::Boolean(failed.is_empty())),
                ("delivered", Value::from(delivered)),
            ];
            if !failed.is_empty() {
                f.push(("failed", Value::Array(failed)));
            }
            obj(f)
        })
        .collect();
    obj(vec![
        ("transfer", Value::from(transfer)),
        ("count", Value::from(count)),
        ("peers", Value::Array(peers)),
    ])
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
