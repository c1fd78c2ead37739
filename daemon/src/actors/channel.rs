//! `ChannelActor`: one per user data channel (one label on one peer connection). Feeds what
//! arrives to `peerix_proto::Delivery` (Peerix's framing, §7: reassembly, acks, aborts, and
//! which parts go to clients when) and turns its decisions into `channel:*` events. Outgoing messages do not pass through it: the label's lane writes them
//! with the channel's [`ChannelSender`] (`outgoing.rs`), whose acks this actor resolves.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use peerix_proto::{Delivered, Delivery, Kind, Part};
use peerix_rtc::{ChannelEvent, RtcChannel};
use rmpv::Value;
use tokio::sync::Notify;

use super::event_bus::{Emit, EventBus, EventRecord, MessagePart};
use super::outgoing::{watch_acks, AckMap, ChannelSender, RemoteOpenGrace, LOW_WATER};
use super::{error_value, json_to_msgpack, BoundedStream};

/// Limits and identity shared by every channel of a room.
#[derive(Clone)]
pub struct ChannelContext {
    /// Room name.
    pub room: String,
    /// Remote peer id.
    pub peer: String,
    /// Event bus.
    pub bus: Addr<EventBus>,
    /// Largest incoming message we reassemble.
    pub max_message_size: usize,
    /// Largest `data` part in one `channel:message` event.
    pub inline_limit: usize,
    /// An incoming transfer idle this long is cut (`None`: never).
    pub idle_timeout: Option<std::time::Duration>,
}

/// Where progress of one send request goes.
#[derive(Clone)]
pub struct ProgressTo {
    /// The session.
    pub to: Recipient<SendProgress>,
    /// The request id it reports for.
    pub request: u64,
}

/// A progress report for a send (current bytes of total). Never the last one: the session
/// sends that (`done`) with the peer's outcome.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct SendProgress {
    /// The request id.
    pub request: u64,
    /// Remote peer.
    pub peer: String,
    /// Channel label.
    pub label: String,
    /// Bytes handed to the channel so far.
    pub current: u64,
    /// Total bytes, when known (not for a streamed send before its end).
    pub total: Option<u64>,
}

/// Close the channel (SCTP stream reset; no control message, §7.6).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseChannel;

/// Sent to the owning peer when the channel is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChannelGone {
    /// Label.
    pub label: String,
    /// The actor that went away (a newer channel may have replaced it).
    pub addr: Addr<ChannelActor>,
    /// Its sender, which the label's lane must stop using.
    pub sender: ChannelSender,
    /// Whether it died by a panic: the peer then opens the label again.
    pub crashed: bool,
}

/// The channel actor.
pub struct ChannelActor {
    cx: ChannelContext,
    channel: RtcChannel,
    framed: bool,
    owner: Recipient<ChannelGone>,
    sender: ChannelSender,
    drained: Arc<Notify>,
    acks: AckMap,
    /// Which parts of received messages go to clients, and when (the decisions).
    delivery: Delivery,
    open: bool,
    /// The timer following `Delivery::poll_timeout`, and when it fires.
    idle_timer: Option<(Instant, SpawnHandle)>,
    /// Acks and aborts on their way out, in order, written by one task (`write_replies`).
    replies: tokio::sync::mpsc::Sender<Vec<u8>>,
    /// The writer's end of `replies`, until the actor starts and hands it to the writer.
    replies_rx: Option<tokio::sync::mpsc::Receiver<Vec<u8>>>,
    /// The room, the remote peer's id and the label, shared by every `channel:message` event.
    room: Arc<str>,
    peer: Arc<str>,
    label: Arc<str>,
}

/// Acks and aborts queued for the channel's reply writer before a reply waits for room. A
/// remote pipelining small messages gets an ack for each; written by one task, those queued
/// while it wrote go out together (one wake of the connection's driver, often one packet).
const REPLIES_QUEUED: usize = 1024;

/// How many queued replies the writer hands the stack at once.
const REPLIES_PER_WRITE: usize = 64;

/// Writes `rx`'s frames on `ch`, in order, until the actor drops its end. Those queued while it
/// wrote go to the stack together, with one lock of the connection and one wake of its driver:
/// each taken alone cost a pipelining remote's receiver more than the message it acknowledges.
async fn write_replies(ch: RtcChannel, mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let mut frames = Vec::with_capacity(REPLIES_PER_WRITE);
    while next_replies(&mut rx, &mut frames).await > 0 {
        if let Err(e) = ch.send_many(frames.drain(..).map(Bytes::from)).await {
            tracing::debug!(error = %e, "sending acks or aborts failed");
        }
    }
}

/// Waits for replies, then lets the delivery of the received message go first: its ack is
/// queued (`Delivery` puts it before the message) while the `channel:message` event still has
/// three tasks of this thread to pass, the event bus, the client's session and the session's
/// writer. Writing the ack wakes the connection's driver thread, which on a busy machine took
/// the actor thread's core for 30-40 µs, so the client got its message after the ack was sent
/// (BENCHMARKS.md, session 21). Sending itself to the back of the thread's queue of ready tasks
/// once per task of that chain puts the ack behind the event, and whatever other acks those
/// turns queued go out with it. `yield_now` would do it too, but waits for the I/O driver's
/// next poll: one more `epoll_wait` per ack write. 0 when the actor is gone.
async fn next_replies(
    rx: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    out: &mut Vec<Vec<u8>>,
) -> usize {
    if rx.recv_many(out, REPLIES_PER_WRITE).await == 0 {
        return 0;
    }
    to_the_back(DELIVERY_HOPS).await;
    while out.len() < REPLIES_PER_WRITE {
        match rx.try_recv() {
            Ok(f) => out.push(f),
            Err(_) => break,
        }
    }
    out.len()
}

/// The tasks a received message's event passes on the actor thread after the channel actor:
/// the event bus, the client's session, the session's writer.
const DELIVERY_HOPS: usize = 3;

/// Returns after going to the back of the thread's ready tasks `times` times (a wake of its
/// own task each time: no system call, no wait for I/O).
async fn to_the_back(times: usize) {
    let mut left = times;
    std::future::poll_fn(|cx| {
        if left == 0 {
            return std::task::Poll::Ready(());
        }
        left -= 1;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

impl ChannelActor {
    /// Wraps an RTC channel. `grace` is for a channel the remote created (see
    /// [`RemoteOpenGrace`]).
    pub fn new(
        cx: ChannelContext,
        channel: RtcChannel,
        owner: Recipient<ChannelGone>,
        grace: Option<RemoteOpenGrace>,
    ) -> Self {
        // Framing is used only on ordered channels without a sub-protocol (§7.2).
        let framed = channel.ordered() && channel.protocol().is_empty();
        let mut delivery = Delivery::new(cx.max_message_size, cx.inline_limit);
        if let Some(t) = cx.idle_timeout {
            delivery = delivery.with_idle_timeout(t);
        }
        let drained = Arc::new(Notify::new());
        let acks = AckMap::default();
        let sender = ChannelSender::new(
            channel.clone(),
            framed,
            acks.clone(),
            drained.clone(),
            &cx.peer,
        )
        .with_grace(grace);
        let (replies, replies_rx) = tokio::sync::mpsc::channel(REPLIES_QUEUED);
        let (room, peer, label) = (
            Arc::from(cx.room.as_str()),
            Arc::from(cx.peer.as_str()),
            Arc::from(channel.label()),
        );
        Self {
            cx,
            channel,
            framed,
            owner,
            sender,
            drained,
            acks,
            delivery,
            open: false,
            idle_timer: None,
            replies,
            replies_rx: Some(replies_rx),
            room,
            peer,
            label,
        }
    }

    /// The handle the label's lane writes outgoing messages with.
    pub fn sender(&self) -> ChannelSender {
        self.sender.clone()
    }

    fn emit(&self, name: &'static str, mut fields: Vec<(&str, Value)>) {
        let mut base = vec![
            ("peer", Value::from(self.cx.peer.as_str())),
            ("id", Value::from(self.cx.peer.as_str())),
            ("label", Value::from(self.channel.label())),
        ];
        base.append(&mut fields);
        self.cx
            .bus
            .do_send(Emit(EventRecord::new(name, Some(&self.cx.room), base)));
    }

    /// One `channel:message` event. Text and bytes move into the event; JSON is parsed.
    fn emit_part(&self, p: Part) {
        let kind = p.kind.as_str();
        let value = match p.kind {
            Kind::Json => match serde_json::from_slice::<serde_json::Value>(&p.data) {
                Ok(v) => json_to_msgpack(&v),
                Err(_) => Value::from(String::from_utf8_lossy(&p.data).as_ref()),
            },
            // Only invalid UTF-8 is copied.
            Kind::Text => Value::from(
                String::from_utf8(p.data)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
            Kind::Blob | Kind::Bytes => Value::Binary(p.data),
        };
        let part = MessagePart {
            peer: self.peer.clone(),
            label: self.label.clone(),
            kind,
            data: value,
            info: p.info.as_ref().map(json_to_msgpack).unwrap_or(Value::Nil),
            transfer: u64::from(p.transfer),
            offset: p.offset,
            total: p.total,
            last: p.last,
        };
        self.cx
            .bus
            .do_send(Emit(EventRecord::part(&self.room, part)));
    }

    /// Carries out what the delivery machine decided.
    fn deliver(&mut self, out: Vec<Delivered>, ctx: &mut Context<Self>) {
        for d in out {
            match d {
                Delivered::Part(p) => self.emit_part(p),
                Delivered::Failed { transfer, reason } => {
                    tracing::debug!(label = self.channel.label(), transfer, %reason, "incoming transfer failed");
                    // SEND_FAILED: the message was not delivered (PROTOCOL.md §7).
                    self.emit(
                        "channel:error",
                        vec![
                            ("transfer", Value::from(transfer)),
                            ("error", error_value("SEND_FAILED", &reason)),
                        ],
                    );
                }
                Delivered::Error(e) => self.emit(
                    "channel:error",
                    vec![("error", error_value("DATACHANNEL_ERROR", &e))],
                ),
                Delivered::Reply(frame) => self.send_raw(ctx, frame),
                Delivered::Acked(id) => {
                    if !self.acks.resolve(id, Ok(())) {
                        let stray = self.delivery.stray_reply(Instant::now(), id);
                        self.deliver(stray, ctx);
                    }
                }
                Delivered::RejectedByReceiver(id) => {
                    self.acks.resolve(id, Err("Aborted by receiver".into()));
                }
            }
        }
    }

    /// Keeps one timer on or before the delivery machine's next deadline (idle transfers).
    /// Every frame moves a deadline later, so a running timer is left alone (it fires early,
    /// cuts nothing yet and is set again) instead of being replaced on every frame.
    fn arm_idle_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.delivery.poll_timeout() else {
            return;
        };
        if self.idle_timer.as_ref().is_some_and(|(t, _)| *t <= at) {
            return;
        }
        if let Some((_, h)) = self.idle_timer.take() {
            ctx.cancel_future(h);
        }
        let h = ctx.run_later(at.saturating_duration_since(Instant::now()), |act, ctx| {
            act.idle_timer = None;
            let out = act.delivery.handle_timeout(Instant::now());
            act.deliver(out, ctx);
            act.arm_idle_timer(ctx);
        });
        self.idle_timer = Some((at, h));
    }

    /// Queues an ack or abort for the reply writer. Not a future of this actor's context per
    /// frame: actix polls all of a context's futures whenever the actor wakes, and with one per
    /// ack of a pipelining remote that cost more than the messages.
    fn send_raw(&self, ctx: &mut Context<Self>, frame: Vec<u8>) {
        use tokio::sync::mpsc::error::TrySendError;
        let frame = match self.replies.try_send(frame) {
            Ok(()) => return,
            Err(TrySendError::Full(f) | TrySendError::Closed(f)) => f,
        };
        // The writer is behind: this one waits for room, in order behind it (or, should the
        // writer be gone, goes out directly).
        let (tx, ch) = (self.replies.clone(), self.channel.clone());
        ctx.spawn(
            async move {
                if let Err(e) = tx.send(frame).await {
                    let frame = e.0;
                    if let Err(e) = ch.send(Bytes::from(frame)).await {
                        tracing::debug!(error = %e, "sending an ack or abort failed");
                    }
                }
            }
            .into_actor(self),
        );
    }

    fn fail_pending(&mut self, why: &str) {
        self.acks.close(why);
    }
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.channel.set_buffered_amount_low_threshold(LOW_WATER);
        if let Some(rx) = self.replies_rx.take() {
            actix::spawn(write_replies(self.channel.clone(), rx));
        }
        actix::spawn(watch_acks(self.channel.clone(), self.acks.clone()));
        if let Some(rx) = self.channel.take_events() {
            ctx.add_stream(BoundedStream::new(rx));
        }
        self.emit("channel:new", vec![]);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        // actix runs `stopped` while a panic unwinds the actor: report it, and the owning peer
        // opens the label again (`ChannelGone::crashed`).
        let crashed = std::thread::panicking();
        if crashed {
            tracing::error!(room = %self.cx.room, peer = %self.cx.peer, label = %self.channel.label(), "channel actor crashed; re-opening the channel");
            self.emit(
                "channel:error",
                vec![(
                    "error",
                    error_value(
                        "INTERNAL",
                        "the channel's actor crashed; its pending sends failed and the channel is re-opened",
                    ),
                )],
            );
        }
        self.fail_pending("channel closed");
        // Clients holding parts of a message that will not complete are told, whatever ended
        // the channel (the remote left, died, closed it, or we crashed).
        let why = if crashed {
            "the channel's actor crashed"
        } else {
            "the channel closed before the message was complete (the sending peer left or closed it)"
        };
        let failed = self.delivery.closed(why);
        self.deliver(failed, ctx);
        self.emit("channel:close", vec![]);
        let ch = self.channel.clone();
        actix::spawn(async move { ch.close().await });
        self.owner.do_send(ChannelGone {
            label: self.channel.label().to_string(),
            addr: ctx.address(),
            sender: self.sender.clone(),
            crashed,
        });
    }
}

impl StreamHandler<ChannelEvent> for ChannelActor {
    fn handle(&mut self, ev: ChannelEvent, ctx: &mut Self::Context) {
        match ev {
            ChannelEvent::Open => {
                if !self.open {
                    self.open = true;
                    self.emit("channel:open", vec![]);
                }
            }
            ChannelEvent::Message { binary, data } => {
                if !self.open {
                    // Some stacks deliver data before the open callback; the channel is open then.
                    self.open = true;
                    self.emit("channel:open", vec![]);
                }
                // Peerix passes text messages on framed channels through unchanged (§7.2).
                let out = if self.framed && binary {
                    self.delivery.frame_at(Instant::now(), &data)
                } else {
                    self.delivery.unframed(data.to_vec(), !binary)
                };
                self.deliver(out, ctx);
                self.arm_idle_timer(ctx);
            }
            ChannelEvent::BufferedAmountLow => self.drained.notify_waiters(),
            // `stopped` reports the transfers the close cut, then `channel:close` (in that
            // order, PROTOCOL.md §7).
            ChannelEvent::Closed => ctx.stop(),
            ChannelEvent::Error(e) => {
                self.emit(
                    "channel:error",
                    vec![("error", error_value("DATACHANNEL_ERROR", &e))],
                );
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<CloseChannel> for ChannelActor {
    type Result = ();
    fn handle(&mut self, _: CloseChannel, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Fault injection: panic inside the channel actor (tests of supervision).
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectChannelPanic;

#[cfg(feature = "fault-injection")]
impl Handler<InjectChannelPanic> for ChannelActor {
    type Result = ();
    fn handle(&mut self, _: InjectChannelPanic, _: &mut Self::Context) {
        panic!(
            "injected fault in the actor of channel {:?} to {}",
            self.channel.label(),
            self.cx.peer
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, rc::Rc};

    use tokio::sync::oneshot;

    use super::{next_replies, DELIVERY_HOPS};

    /// As on the actor thread: the channel actor queues an ack and then hands the message to a
    /// chain of tasks (event bus, session, session's writer), each waking the next. The ack is
    /// written after the last of them ran, together with an ack one of them queued; taken at
    /// once, the first ack went out alone, before the message reached the client.
    #[test]
    fn an_ack_waits_for_the_delivery_chain_and_takes_what_it_queued() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        let batches = Rc::new(RefCell::new(Vec::new()));
        let order = Rc::new(RefCell::new(Vec::new()));
        local.block_on(&rt, async {
            let (tx, mut rx) = tokio::sync::mpsc::channel(16);
            let (b, o) = (batches.clone(), order.clone());
            let writer = tokio::task::spawn_local(async move {
                let mut frames = Vec::new();
                while next_replies(&mut rx, &mut frames).await > 0 {
                    o.borrow_mut().push("ack written".to_string());
                    b.borrow_mut().push(std::mem::take(&mut frames));
                }
            });
            // The chain: each task waits for its wake, then wakes the next; the last one
            // "writes to the client" and queues one more ack.
            let (first_wake, mut woken) = oneshot::channel::<()>();
            let mut chain = Vec::new();
            for hop in 0..DELIVERY_HOPS {
                let (next, next_woken) = oneshot::channel::<()>();
                let (o, tx) = (order.clone(), tx.clone());
                let last = hop + 1 == DELIVERY_HOPS;
                let wait = std::mem::replace(&mut woken, next_woken);
                chain.push(tokio::task::spawn_local(async move {
                    let _ = wait.await;
                    o.borrow_mut().push(format!("hop {hop}"));
                    if last {
                        let _ = tx.try_send(vec![2]);
                    }
                    let _ = next.send(());
                }));
            }
            drop(woken);
            // Every task now waits: the writer for a reply, the chain for its wakes.
            tokio::task::yield_now().await;
            let _ = tx.try_send(vec![1]);
            let _ = first_wake.send(());
            drop(tx);
            for t in chain {
                let _ = t.await;
            }
            let _ = writer.await;
        });
        let mut want: Vec<String> = (0..DELIVERY_HOPS).map(|h| format!("hop {h}")).collect();
        want.push("ack written".into());
        assert_eq!(*order.borrow(), want);
        assert_eq!(*batches.borrow(), [vec![vec![1u8], vec![2u8]]]);
    }
}
