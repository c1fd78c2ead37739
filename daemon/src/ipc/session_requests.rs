//! `ClientSession::on_request`: one client request, after the access check, to the daemon,
//! the event bus or the send path (split from session.rs to keep each file readable).

use super::*;
use crate::actors::event_bus::{InboxCounts, TakeInbox};
use peerix_ipc_proto::{InboxArgs, DEFAULT_INBOX_MAX};

impl ClientSession {
    pub(super) fn on_request(&mut self, req: Request, ctx: &mut Context<Self>) {
        let id = req.id;
        let op = match req.into_op() {
            Ok(op) => op,
            Err(e) => {
                let r = Reply::err(id, e.code(), e.to_string());
                return self.write(&DaemonMessage::Reply(r), ctx);
            }
        };
        let have = self.access.as_ref().map_or(Access::ReadOnly, |a| *a);
        if op.access() > have {
            let r = Reply::err(
                id,
                ErrorCode::PermissionDenied,
                format!(
                    "{} needs {} access; this client has {} access (see [access] in the \
                     daemon's configuration)",
                    op.name(),
                    op.access().as_str(),
                    have.as_str()
                ),
            );
            return self.write(&DaemonMessage::Reply(r), ctx);
        }
        match op {
            Op::Status => {
                // The daemon knows rooms and drivers; the client queues are the listener's,
                // the inboxes the bus's.
                let (queued, budget) = (self.budget.total(), self.budget.limit());
                let epoch = self.epoch;
                let status = self.daemon.send(Exec::Status);
                let inboxes = self.bus.send(InboxCounts);
                let fut = async move { (status.await, inboxes.await.unwrap_or_default()) };
                ctx.spawn(fut.into_actor(self).map(move |(res, inboxes), act, ctx| {
                    let res = res.map_err(DaemonError::from).and_then(|r| r);
                    let res = res.map(|mut v| {
                        if let Value::Map(m) = &mut v {
                            let ipc = [("queued", queued), ("queue_budget", budget)];
                            m.push((
                                "ipc".into(),
                                obj(ipc.map(|(k, n)| (k, Value::from(n))).to_vec()),
                            ));
                            m.push(("epoch".into(), Value::from(epoch)));
                            add_inbox_counts(m, &inboxes);
                        }
                        v
                    });
                    act.reply(id, res, ctx);
                }));
            }
            Op::Join(a) => {
                let holder = crate::actors::holds::Holder {
                    session: self.id,
                    client: self.client.clone(),
                    to: ctx.address().recipient(),
                };
                self.exec(id, Exec::Join(Box::new(a), Some(holder)), ctx)
            }
            Op::Leave(a) => self.exec(id, Exec::Leave(a, self.id), ctx),
            Op::Peers(a) => self.exec(id, Exec::Peers(a.room), ctx),
            Op::Forward(a) => self.exec(id, Exec::Forward(a), ctx),
            Op::Open(a) => self.exec(id, Exec::Open(a), ctx),
            Op::Close(a) => self.exec(id, Exec::Close(a), ctx),
            Op::Verifier(a) => {
                let to = ctx.address().recipient();
                self.exec(id, Exec::Verifier(a, self.id, to), ctx)
            }
            Op::Verify(a) => self.exec(id, Exec::Verify(a, self.id), ctx),
            Op::Inbox(a) => self.take_inbox(id, a, ctx),
            Op::Subscribe(a) => match a.filter() {
                Ok(filter) => {
                    if let Err(e) = self.check_subscription(filter.patterns.len()) {
                        return self.reply(id, Err(e), ctx);
                    }
                    self.subscriptions += 1;
                    // With `since` the bus answers (a `Replay` carrying the reply, after the
                    // replayed events); without, nothing is replayed.
                    let since = a
                        .since
                        .map(|n| (id, n, a.epoch.is_none_or(|e| e == self.epoch)));
                    self.bus.do_send(Subscribe {
                        session: self.id,
                        to: ctx.address().recipient(),
                        replay: ctx.address().recipient(),
                        filter: Some(filter),
                        since,
                        gauge: Some(self.out.clone()),
                    });
                    if since.is_none() {
                        self.reply(id, Ok(obj(vec![])), ctx);
                    }
                }
                Err(e) => self.reply(id, Err(DaemonError::BadRequest(e.to_string())), ctx),
            },
            Op::Unsubscribe => {
                self.subscriptions = 0;
                self.bus.do_send(Unsubscribe(self.id));
                // No catch-up will come: what waited for one goes out now.
                self.paused = false;
                for d in std::mem::take(&mut self.held) {
                    self.write_event(&d, ctx);
                }
                self.reply(id, Ok(obj(vec![])), ctx);
            }
            #[cfg(not(feature = "fault-injection"))]
            Op::Debug(_) => self.reply(
                id,
                Err(DaemonError::NotSupported(
                    "debug in this build (fault injection is compiled only into test builds, \
                     with --features peerixd/fault-injection)"
                        .into(),
                )),
                ctx,
            ),
            #[cfg(feature = "fault-injection")]
            Op::Debug(args) => match crate::ipc::debug::parse(&args) {
                Ok(crate::ipc::debug::DebugAction::Exec(m)) => self.exec(id, *m, ctx),
                Ok(crate::ipc::debug::DebugAction::PanicSession) => {
                    panic!("injected fault in client session {}", self.id)
                }
                Ok(crate::ipc::debug::DebugAction::Wedge(d)) => {
                    tracing::warn!(
                        seconds = d.as_secs(),
                        "fault injection: wedging the actor loop"
                    );
                    std::thread::sleep(d);
                    self.reply(id, Ok(obj(vec![])), ctx);
                }
                Err(e) => self.reply(id, Err(e), ctx),
            },
            Op::Share(a) => self.exec(id, Exec::Share(a), ctx),
            Op::Unshare(a) => self.exec(id, Exec::Unshare(a), ctx),
            Op::Frame(a) => self.exec(id, Exec::Frame(a), ctx),
            Op::Send(SendArgs::Start(s)) => {
                if let Payload::Json(v) = &s.payload {
                    let (room, label, info) = (&s.room, &s.label, s.info.as_ref());
                    if let Err(e) = self.check_json_event(v, info, room, label) {
                        return self.reply(id, Err(e), ctx);
                    }
                }
                let (kind, bytes) = match payload_bytes(s.payload) {
                    Ok(v) => v,
                    Err(e) => return self.reply(id, Err(e), ctx),
                };
                let info = match send::info_json(s.info.as_ref()) {
                    Ok(i) => i,
                    Err(e) => return self.reply(id, Err(e), ctx),
                };
                let transfer = self.next_transfer;
                self.next_transfer += 1;
                let pending = StreamedSend {
                    room: s.room,
                    label: s.label,
                    to: s.to,
                    kind,
                    info,
                    buf: bytes,
                    progress: s.progress.then_some(id),
                };
                if s.more {
                    if kind == PayloadType::Json {
                        return self.reply(
                            id,
                            Err(DaemonError::BadRequest(
                                "send: json messages cannot be streamed".into(),
                            )),
                            ctx,
                        );
                    }
                    self.open_stream(id, transfer, pending, ctx);
                } else {
                    self.finish_send(id, transfer, pending, ctx);
                }
            }
            Op::Send(SendArgs::Batch(b)) => self.send_batch(id, b, ctx),
            Op::Send(SendArgs::Chunk(c)) => {
                let (kind, data) = match payload_bytes(c.data) {
                    Ok(v) => v,
                    Err(e) => return self.reply(id, Err(e), ctx),
                };
                let Some(active) = self.streams.get_mut(&c.transfer) else {
                    return self.reply(
                        id,
                        Err(DaemonError::BadRequest(format!(
                            "send: no streamed transfer {}",
                            c.transfer
                        ))),
                        ctx,
                    );
                };
                if kind != active.kind {
                    // Never deliver text that is not what the client meant: the receiver would
                    // see U+FFFD where the bytes were not UTF-8.
                    let (want, got) = (wire_type(active.kind), wire_type(kind));
                    let why = format!("a chunk was {got}, the transfer's type takes {want}");
                    self.abort_stream(c.transfer, &why, ctx);
                    return self.reply(
                        id,
                        Err(DaemonError::BadRequest(format!(
                            "send: every chunk of transfer {} must be {want} like its start, got \
                             {got} (a str that is not valid UTF-8 decodes as bin); transfer {} \
                             aborted",
                            c.transfer, c.transfer
                        ))),
                        ctx,
                    );
                }
                active.pushed += data.len() as u64;
                if active.pushed > self.cfg.ipc.max_message_size {
                    // Dropping the feed drops the piece senders: the transfer aborts at every
                    // receiver.
                    self.abort_stream(c.transfer, "ipc.max_message_size exceeded", ctx);
                    return self.reply(
                        id,
                        Err(DaemonError::BadRequest(format!(
                            "send: message exceeds ipc.max_message_size ({} bytes); transfer {} aborted",
                            self.cfg.ipc.max_message_size, c.transfer
                        ))),
                        ctx,
                    );
                }
                if self.pending_chunks >= self.cfg.limits.pending_chunks_per_client {
                    // Each unanswered chunk holds its data: a client that does not wait for
                    // replies must not make us hold unbounded memory.
                    let why = "limits.pending_chunks_per_client exceeded";
                    self.abort_stream(c.transfer, why, ctx);
                    return self.reply(
                        id,
                        Err(DaemonError::LimitExceeded(format!(
                            "send: {} chunks are unanswered (limits.pending_chunks_per_client); \
                             wait for each chunk's reply before sending the next; transfer {} aborted",
                            self.pending_chunks, c.transfer
                        ))),
                        ctx,
                    );
                }
                self.pending_chunks += 1;
                let (done, result) = tokio::sync::oneshot::channel();
                let feed = Feed {
                    data,
                    more: c.more,
                    done,
                };
                let progress = active
                    .progress
                    .map(|r| (r, active.label.clone(), active.pushed));
                if active.feed.send(feed).is_err() || !c.more {
                    self.streams.remove(&c.transfer);
                }
                let transfer = c.transfer;
                ctx.spawn(result.into_actor(self).map(move |r, act, ctx| {
                    act.pending_chunks -= 1;
                    let r = match r {
                        Ok(None) => Ok(obj(vec![("transfer", Value::from(transfer))])),
                        Ok(Some(peers)) => {
                            if let Some((request, label, total)) = &progress {
                                act.progress_done(*request, label, *total, &peers, ctx);
                            }
                            Ok(send::delivery_report(transfer, peers))
                        }
                        Err(_) => Err(DaemonError::Internal(format!(
                            "streamed transfer {transfer} was dropped"
                        ))),
                    };
                    act.reply(id, r, ctx)
                }));
            }
        }
    }
}

/// Adds `inbox` (events kept) to each entry of `status.rooms`.
fn add_inbox_counts(status: &mut [(Value, Value)], inboxes: &[(String, u64)]) {
    let Some((_, Value::Array(rooms))) =
        status.iter_mut().find(|(k, _)| k.as_str() == Some("rooms"))
    else {
        return;
    };
    for room in rooms {
        let Value::Map(fields) = room else { continue };
        let name = fields
            .iter()
            .find(|(k, _)| k.as_str() == Some("room"))
            .and_then(|(_, v)| v.as_str());
        let kept = inboxes
            .iter()
            .find(|(r, _)| Some(r.as_str()) == name)
            .map_or(0, |(_, n)| *n);
        fields.push(("inbox".into(), Value::from(kept)));
    }
}

/// Room left in an `inbox` reply for its framing and the fields around the events.
const INBOX_REPLY_MARGIN: u64 = 64 << 10;

impl ClientSession {
    /// `inbox`: the room must be joined (the daemon says so by listing its peers); then the bus
    /// hands over its oldest kept events, as many as fit one reply frame.
    fn take_inbox(&mut self, id: u64, a: InboxArgs, ctx: &mut Context<Self>) {
        let max = a.max.unwrap_or(DEFAULT_INBOX_MAX).clamp(1, 1 << 16) as usize;
        let max_bytes = self.cfg.ipc.max_frame.saturating_sub(INBOX_REPLY_MARGIN);
        let joined = self.daemon.send(Exec::Peers(a.room.clone()));
        let bus = self.bus.clone();
        let fut = async move {
            joined.await.map_err(DaemonError::from).and_then(|r| r)?;
            let taken = bus
                .send(TakeInbox {
                    room: a.room,
                    max,
                    max_bytes,
                })
                .await
                .map_err(DaemonError::from)?;
            let events = taken
                .events
                .iter()
                .map(|d| {
                    obj(vec![
                        ("seq", Value::from(d.seq)),
                        ("name", Value::from(&*d.event.name)),
                        (
                            "room",
                            d.event.room.as_deref().map_or(Value::Nil, Value::from),
                        ),
                        ("data", d.event.data.to_value()),
                    ])
                })
                .collect();
            Ok(obj(vec![
                ("events", Value::Array(events)),
                ("dropped", Value::from(taken.dropped)),
                ("more", Value::Boolean(taken.more)),
            ]))
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |res, act, ctx| act.reply(id, res, ctx)),
        );
    }
}

/// The MessagePack type a payload of type `kind` travels as.
fn wire_type(kind: PayloadType) -> &'static str {
    match kind {
        PayloadType::Text => "str",
        _ => "bin",
    }
}

/// Room for an event's fields around a JSON message's data: names, seq, two peer ids, transfer,
/// offset (the room, label and `info` are counted separately).
const EVENT_OVERHEAD: u64 = 512;

impl ClientSession {
    /// A JSON message is never split, so its `channel:message` event must fit one frame: one
    /// that would not fit this daemon's `ipc.max_frame` is refused here rather than accepted and
    /// replaced by an error at the receiver.
    pub(super) fn check_json_event(
        &self,
        v: &Value,
        info: Option<&Value>,
        room: &str,
        label: &str,
    ) -> Result<(), DaemonError> {
        let info = info.map_or(0, event_size);
        let need = event_size(v) + info + EVENT_OVERHEAD + (room.len() + label.len()) as u64;
        let max = self.cfg.ipc.max_frame;
        if need <= max {
            return Ok(());
        }
        Err(DaemonError::LimitExceeded(format!(
            "send: this JSON message's event would take about {need} bytes, more than one frame \
             holds (ipc.max_frame = {max}); JSON messages are never split: send it as `text` or \
             `bytes` (which are split), or raise ipc.max_frame on both daemons"
        )))
    }
}

/// Bytes of `v` in a receiver's event: its MessagePack size after JSON (every float becomes a
/// 64-bit float; `send` already refused what JSON cannot carry).
fn event_size(v: &Value) -> u64 {
    fn len_hdr(n: usize, small: usize) -> u64 {
        match n {
            n if n < small => 1,
            n if n < 256 && small == 32 => 2,
            n if n < 65_536 => 3,
            _ => 5,
        }
    }
    match v {
        Value::Nil | Value::Boolean(_) => 1,
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) if u < 128 => 1,
            (Some(u), _) if u < 256 => 2,
            (Some(u), _) if u < 65_536 => 3,
            (Some(u), _) if u < 1 << 32 => 5,
            (Some(_), _) => 9,
            (None, Some(n)) if n >= -32 => 1,
            (None, Some(n)) if n >= -128 => 2,
            (None, Some(n)) if n >= -32_768 => 3,
            (None, Some(n)) if n >= -(1 << 31) => 5,
            _ => 9,
        },
        Value::F32(_) | Value::F64(_) => 9,
        Value::String(s) => len_hdr(s.as_bytes().len(), 32) + s.as_bytes().len() as u64,
        Value::Binary(b) => 5 + b.len() as u64,
        Value::Array(a) => len_hdr(a.len(), 16) + a.iter().map(event_size).sum::<u64>(),
        Value::Map(m) => {
            len_hdr(m.len(), 16)
                + m.iter()
                    .map(|(k, v)| event_size(k) + event_size(v))
                    .sum::<u64>()
        }
        Value::Ext(_, d) => 6 + d.len() as u64,
    }
}
