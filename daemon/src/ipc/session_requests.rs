//! `ClientSession::on_request`: one client request, after the access check, to the daemon,
//! the event bus or the send path (split from session.rs to keep each file readable).

use super::*;

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
                // The daemon knows rooms and drivers; the client queues are the listener's.
                let (queued, budget) = (self.budget.total(), self.budget.limit());
                let fut = self.daemon.send(Exec::Status);
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                    let res = res.map_err(DaemonError::from).and_then(|r| r);
                    let res = res.map(|mut v| {
                        if let Value::Map(m) = &mut v {
                            let ipc = [("queued", queued), ("queue_budget", budget)];
                            m.push((
                                "ipc".into(),
                                obj(ipc.map(|(k, n)| (k, Value::from(n))).to_vec()),
                            ));
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
            Op::Open(a) => self.exec(id, Exec::Open(a), ctx),
            Op::Close(a) => self.exec(id, Exec::Close(a), ctx),
            Op::Verifier(a) => {
                let to = ctx.address().recipient();
                self.exec(id, Exec::Verifier(a, self.id, to), ctx)
            }
            Op::Verify(a) => self.exec(id, Exec::Verify(a, self.id), ctx),
            Op::Subscribe(a) => match a.filter() {
                Ok(filter) => {
                    if let Err(e) = self.check_subscription(filter.patterns.len()) {
                        return self.reply(id, Err(e), ctx);
                    }
                    self.subscriptions += 1;
                    self.bus.do_send(Subscribe {
                        session: self.id,
                        to: ctx.address().recipient(),
                        filter: Some(filter),
                    });
                    self.reply(id, Ok(obj(vec![])), ctx);
                }
                Err(e) => self.reply(id, Err(DaemonError::BadRequest(e.to_string())), ctx),
            },
            Op::Unsubscribe => {
                self.subscriptions = 0;
                self.bus.do_send(Unsubscribe(self.id));
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
                Err(e) => self.reply(id, Err(e), ctx),
            },
            Op::Share(_) | Op::Unshare(_) => self.reply(
                id,
                Err(DaemonError::NotSupported(
                    "media sharing (share/unshare)".into(),
                )),
                ctx,
            ),
            Op::Send(SendArgs::Start(s)) => {
                let (kind, bytes) = match payload_bytes(s.payload) {
                    Ok(v) => v,
                    Err(e) => return self.reply(id, Err(e), ctx),
                };
                let info = match s
                    .info
                    .as_ref()
                    .map(|i| serde_json::to_vec(&msgpack_to_json(i)))
                    .transpose()
                {
                    Ok(i) => i,
                    Err(e) => {
                        return self.reply(
                            id,
                            Err(DaemonError::BadRequest(format!("send: info: {e}"))),
                            ctx,
                        )
                    }
                };
                if info.as_ref().is_some_and(|i| i.len() >= 16_320) {
                    return self.reply(
                        id,
                        Err(DaemonError::BadRequest(
                            "send: `info` must be shorter than 16320 bytes of JSON".into(),
                        )),
                        ctx,
                    );
                }
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
            Op::Send(SendArgs::Chunk(c)) => {
                let data = match payload_bytes(c.data) {
                    Ok((_, b)) => b,
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
                active.pushed += data.len() as u64;
                if active.pushed > self.cfg.ipc.max_message_size {
                    // Dropping the feed drops the piece senders: the transfer aborts at every
                    // receiver.
                    self.streams.remove(&c.transfer);
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
                    self.streams.remove(&c.transfer);
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
                if active.feed.send(feed).is_err() || !c.more {
                    self.streams.remove(&c.transfer);
                }
                let transfer = c.transfer;
                ctx.spawn(result.into_actor(self).map(move |r, act, ctx| {
                    act.pending_chunks -= 1;
                    let r = r.map_err(|_| {
                        DaemonError::Internal(format!("streamed transfer {transfer} was dropped"))
                    });
                    act.reply(id, r, ctx)
                }));
            }
        }
    }
}
