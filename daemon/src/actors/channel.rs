//! `ChannelActor`: one per user data channel (one label on one peer connection). Receives Peerix's
//! framing (§7): reassembly, acknowledgements and aborts, and turns channel traffic into
//! `channel:*` events. Outgoing messages do not pass through it: the label's lane writes them
//! with the channel's [`ChannelSender`] (`outgoing.rs`), whose acks this actor resolves.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use peerix_rtc::{ChannelEvent, RtcChannel};
use peerix_wire::frame::Frame;
use peerix_wire::transfer::{Outcome, PayloadType, Reassembler};
use rmpv::Value;
use tokio::sync::Notify;

use super::event_bus::{Emit, EventBus, EventRecord};
use super::outgoing::{AckMap, ChannelSender, LOW_WATER};
use super::{error_value, json_to_msgpack, ReceiverStream};

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
}

/// Where progress of one send request goes.
#[derive(Clone)]
pub struct ProgressTo {
    /// The session.
    pub to: Recipient<SendProgress>,
    /// The request id it reports for.
    pub request: u64,
}

/// A progress report for a send (current bytes of total).
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
    /// Total bytes.
    pub total: u64,
    /// Last frame sent.
    pub done: bool,
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
    reassembler: Reassembler,
    /// Type and info of incoming transfers, for parts delivered before they complete.
    started: HashMap<u32, (&'static str, Option<serde_json::Value>)>,
    /// Incoming transfers already partly delivered: the offset of the next part.
    streaming: HashMap<u32, usize>,
    /// An incomplete UTF-8 sequence held back from the last text part.
    text_carry: HashMap<u32, Vec<u8>>,
    open: bool,
    closed: bool,
}

impl ChannelActor {
    /// Wraps an RTC channel. `open` tells whether it is already open (remote channels arrive open).
    pub fn new(cx: ChannelContext, channel: RtcChannel, owner: Recipient<ChannelGone>) -> Self {
        // Framing is used only on ordered channels without a sub-protocol (§7.2).
        let framed = channel.ordered() && channel.protocol().is_empty();
        let reassembler = Reassembler::new(cx.max_message_size);
        let drained = Arc::new(Notify::new());
        let acks = AckMap::default();
        let sender = ChannelSender::new(
            channel.clone(),
            framed,
            acks.clone(),
            drained.clone(),
            &cx.peer,
        );
        Self {
            cx,
            channel,
            framed,
            owner,
            sender,
            drained,
            acks,
            reassembler,
            started: HashMap::new(),
            streaming: HashMap::new(),
            text_carry: HashMap::new(),
            open: false,
            closed: false,
        }
    }

    /// The handle the label's lane writes outgoing messages with.
    pub fn sender(&self) -> ChannelSender {
        self.sender.clone()
    }

    fn emit(&self, name: &str, mut fields: Vec<(&str, Value)>) {
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

    fn emit_message(
        &self,
        kind: &str,
        transfer: u32,
        data: Vec<u8>,
        info: Option<&serde_json::Value>,
        text: bool,
    ) {
        let info_v = info.map(json_to_msgpack).unwrap_or(Value::Nil);
        let total = data.len() as u64;
        // Small messages and JSON values arrive whole; anything else bigger than the inline limit
        // is split into parts so that no event frame exceeds the IPC limit.
        if data.len() <= self.cx.inline_limit || kind == "json" {
            let value = match kind {
                "json" => match serde_json::from_slice::<serde_json::Value>(&data) {
                    Ok(v) => json_to_msgpack(&v),
                    Err(_) => Value::from(String::from_utf8_lossy(&data).as_ref()),
                },
                // The reassembled bytes move into the event; only invalid UTF-8 is copied.
                _ if text => Value::from(
                    String::from_utf8(data)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                ),
                _ => Value::Binary(data),
            };
            self.emit(
                "channel:message",
                vec![
                    ("type", Value::from(kind)),
                    ("data", value),
                    ("info", info_v),
                    ("transfer", Value::from(transfer)),
                    ("offset", Value::from(0u64)),
                    ("total", Value::from(total)),
                    ("final", Value::Boolean(true)),
                ],
            );
            return;
        }
        let mut offset = 0usize;
        while offset < data.len() {
            let mut end = (offset + self.cx.inline_limit).min(data.len());
            if text {
                // Never cut a character in two (PROTOCOL.md: text parts are strings).
                while end < data.len() && end > offset + 1 && (data[end] & 0xC0) == 0x80 {
                    end -= 1;
                }
            }
            let last = end == data.len();
            let mut fields = vec![
                ("type", Value::from(kind)),
                (
                    "data",
                    if text {
                        Value::from(String::from_utf8_lossy(&data[offset..end]).as_ref())
                    } else {
                        Value::Binary(data[offset..end].to_vec())
                    },
                ),
            ];
            fields.push((
                "info",
                if offset == 0 {
                    info_v.clone()
                } else {
                    Value::Nil
                },
            ));
            fields.push(("transfer", Value::from(transfer)));
            fields.push(("offset", Value::from(offset as u64)));
            fields.push(("total", Value::from(total)));
            fields.push(("final", Value::Boolean(last)));
            self.emit("channel:message", fields);
            offset = end;
        }
    }

    /// Text parts are strings cut at character boundaries (PROTOCOL.md); `offset` counts bytes.
    fn emit_part(
        &self,
        kind: &str,
        transfer: u32,
        data: Vec<u8>,
        info: Option<&serde_json::Value>,
        offset: usize,
        last: bool,
    ) {
        let value = if kind == "text" {
            Value::from(
                String::from_utf8(data)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            )
        } else {
            Value::Binary(data)
        };
        self.emit(
            "channel:message",
            vec![
                ("type", Value::from(kind)),
                ("data", value),
                ("info", info.map(json_to_msgpack).unwrap_or(Value::Nil)),
                ("transfer", Value::from(transfer)),
                ("offset", Value::from(offset as u64)),
                ("total", Value::Nil),
                ("final", Value::Boolean(last)),
            ],
        );
    }

    fn send_raw(&self, ctx: &mut Context<Self>, frame: Vec<u8>) {
        let ch = self.channel.clone();
        ctx.spawn(
            async move {
                if let Err(e) = ch.send(Bytes::from(frame)).await {
                    tracing::debug!(error = %e, "sending control frame failed");
                }
            }
            .into_actor(self),
        );
    }

    fn on_frame(&mut self, ctx: &mut Context<Self>, data: &[u8]) {
        let frame = match Frame::decode(data) {
            Ok(f) => f,
            Err(e) => {
                self.emit(
                    "channel:error",
                    vec![(
                        "error",
                        error_value(
                            "DATACHANNEL_ERROR",
                            &format!("Failed to decode message: {e}"),
                        ),
                    )],
                );
                return;
            }
        };
        for outcome in self.reassembler.feed(frame) {
            match outcome {
                Outcome::Completed {
                    id,
                    payload_type,
                    info,
                    data,
                    send_ack,
                    ..
                } => {
                    let (name, text) = match payload_type {
                        PayloadType::Text => ("text", true),
                        PayloadType::Json => ("json", false),
                        PayloadType::Blob => ("blob", false),
                        _ => ("bytes", false),
                    };
                    if let Some(ack) = send_ack {
                        self.send_raw(ctx, ack);
                    }
                    self.started.remove(&id);
                    match self.streaming.remove(&id) {
                        // Parts already went out while it arrived: this is the last one.
                        Some(offset) => {
                            let mut rest = self.text_carry.remove(&id).unwrap_or_default();
                            rest.extend_from_slice(&data);
                            self.emit_part(name, id, rest, None, offset, true)
                        }
                        None => self.emit_message(name, id, data, info.as_ref(), text),
                    }
                }
                Outcome::Data { id, .. } => {
                    // Large messages are passed on while they arrive instead of after the last
                    // chunk, so the receiving client overlaps with the transfer.
                    // JSON is delivered whole (a value cannot be parsed in parts).
                    let (name, info) = self.started.get(&id).cloned().unwrap_or(("bytes", None));
                    if name != "json"
                        && self.reassembler.buffered_len(id).unwrap_or(0) >= self.cx.inline_limit
                    {
                        if let Some((_, mut part)) = self.reassembler.take_buffered(id) {
                            let offset = self.streaming.get(&id).copied().unwrap_or(0);
                            let mut carry = self.text_carry.remove(&id).unwrap_or_default();
                            if !carry.is_empty() {
                                carry.append(&mut part);
                                part = carry;
                            }
                            if name == "text" {
                                // Keep an incomplete UTF-8 sequence for the next part.
                                if let Err(e) = std::str::from_utf8(&part) {
                                    if e.error_len().is_none() {
                                        self.text_carry.insert(id, part.split_off(e.valid_up_to()));
                                    }
                                }
                            }
                            self.streaming.insert(id, offset + part.len());
                            self.emit_part(
                                name,
                                id,
                                part,
                                if offset == 0 { info.as_ref() } else { None },
                                offset,
                                false,
                            );
                        }
                    }
                }
                Outcome::Started {
                    id,
                    payload_type,
                    info,
                } => {
                    let name = match payload_type {
                        PayloadType::Text => "text",
                        PayloadType::Json => "json",
                        PayloadType::Blob => "blob",
                        _ => "bytes",
                    };
                    self.started.insert(id, (name, info));
                }
                Outcome::OutgoingAcked(id) => {
                    if let Some(tx) = self.acks.lock().ok().and_then(|mut m| m.remove(&id)) {
                        let _ = tx.send(Ok(()));
                    }
                }
                Outcome::OutgoingAborted(id) => {
                    if let Some(tx) = self.acks.lock().ok().and_then(|mut m| m.remove(&id)) {
                        let _ = tx.send(Err("Aborted by receiver".into()));
                    }
                }
                Outcome::Aborted {
                    id,
                    reason,
                    send_abort,
                } => {
                    tracing::debug!(
                        label = self.channel.label(),
                        id,
                        ?reason,
                        "incoming transfer aborted"
                    );
                    if let Some(f) = send_abort {
                        self.send_raw(ctx, f);
                    }
                    self.started.remove(&id);
                    self.text_carry.remove(&id);
                    if self.streaming.remove(&id).is_some() {
                        // Clients holding earlier parts must learn that no final part will come.
                        self.emit(
                            "channel:error",
                            vec![
                                ("transfer", Value::from(id)),
                                (
                                    "error",
                                    error_value(
                                        "DATACHANNEL_ERROR",
                                        &format!("transfer {id} aborted: {reason:?}"),
                                    ),
                                ),
                            ],
                        );
                    }
                }
                Outcome::Error(e) => {
                    self.emit(
                        "channel:error",
                        vec![("error", error_value("DATACHANNEL_ERROR", &e.to_string()))],
                    );
                }
            }
        }
    }

    fn fail_pending(&mut self, why: &str) {
        if let Ok(mut m) = self.acks.lock() {
            for (_, tx) in m.drain() {
                let _ = tx.send(Err(why.to_string()));
            }
        }
    }
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.channel.set_buffered_amount_low_threshold(LOW_WATER);
        if let Some(rx) = self.channel.take_events() {
            ctx.add_stream(ReceiverStream::new(rx));
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
        if !self.closed {
            self.emit("channel:close", vec![]);
        }
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
                if !self.framed {
                    let kind = if binary { "bytes" } else { "text" };
                    self.emit_message(kind, 0, data.to_vec(), None, !binary);
                } else if !binary {
                    // Peerix passes text messages on framed channels through unchanged (§7.2).
                    self.emit_message("text", 0, data.to_vec(), None, true);
                } else {
                    self.on_frame(ctx, &data);
                }
            }
            ChannelEvent::BufferedAmountLow => self.drained.notify_waiters(),
            ChannelEvent::Closed => {
                self.emit("channel:close", vec![]);
                self.closed = true;
                ctx.stop();
            }
            ChannelEvent::Error(e) => {
                self.emit(
                    "channel:error",
                    vec![("error", error_value("DATACHANNEL_ERROR", &e))],
                );
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if !self.closed {
            self.emit("channel:close", vec![]);
            self.closed = true;
        }
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
