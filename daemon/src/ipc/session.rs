//! `ClientSession`: one per connected client. Decodes frames, enforces the handshake, dispatches
//! requests to the daemon, assembles streamed sends, and pushes subscribed events and progress.
//! A client that misbehaves gets an error and, for framing errors, a closed connection; nothing it
//! does can take the daemon or other clients down.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use interprocess::local_socket::tokio::Stream;
use peerix_ipc_proto::{
    decode_client, encode_frame, encode_frame_sized, Access, ClientMessage, DaemonMessage,
    ErrorBody, ErrorCode, FrameDecoder, Op, Payload, Progress, ProtoError, Reply, Request,
    SendArgs, SendBatch, Welcome, CAPABILITIES, PROTOCOL_VERSION,
};
use peerix_wire::transfer::PayloadType;
use rmpv::Value;
use tokio::io::AsyncReadExt;

use super::client_queue::{write_frames, ClientQueue, OutFrame, PushError, QueueBudget};
use crate::actors::channel::{ProgressTo, SendProgress};
use crate::actors::daemon::{Daemon, Exec, VERSION};
use crate::actors::event_bus::{obj, Deliver, EventBus, Subscribe, Unsubscribe};
use crate::actors::outcome::OutcomeTo;
use crate::actors::outgoing::{OutgoingMessage, OutgoingStream, SendOutcome, StreamPiece};
use crate::actors::send_path::{lost, LaneItem, Routes};
use crate::actors::{msgpack_to_json, BoundedStream};
use crate::config::DaemonConfig;
use crate::error::DaemonError;

/// The socket a session reads and writes: on Unix registered for reads only, so that the
/// client's reads do not wake the daemon (`peerix_ipc_socket`).
#[cfg(unix)]
type SessionStream = peerix_ipc_socket::QuietStream;
#[cfg(not(unix))]
type SessionStream = Stream;

#[cfg(unix)]
fn session_stream(s: Stream) -> std::io::Result<SessionStream> {
    SessionStream::from_local_socket(s)
}

#[cfg(not(unix))]
fn session_stream(s: Stream) -> std::io::Result<SessionStream> {
    Ok(s)
}

/// What a session needs.
pub struct SessionSetup {
    /// Session number (for logs and the event bus).
    pub id: u64,
    /// The accepted connection.
    pub stream: Stream,
    /// The client's tier from its credentials, or why it is refused (told at its `hello`).
    pub access: Result<Access, String>,
    /// Configuration.
    pub cfg: Arc<DaemonConfig>,
    /// Root actor.
    pub daemon: Addr<Daemon>,
    /// Event bus.
    pub bus: Addr<EventBus>,
    /// Machine identity id for the welcome.
    pub daemon_id: String,
    /// Where sends go (see `send_path`).
    pub routes: Routes,
    /// The listener, told when the session ends.
    pub listener: Recipient<SessionEnded>,
    /// Bytes queued for all clients, against `ipc.client_queue_budget`.
    pub budget: Arc<QueueBudget>,
    /// This daemon run (`welcome.epoch`).
    pub epoch: u64,
}

/// Sent to the listener when a session ends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionEnded {
    /// Session number.
    pub id: u64,
    /// The client's name from its `hello`.
    pub client: String,
    /// Whether the session died by a panic.
    pub crashed: bool,
}

/// Write this event as the session's last frame and close the connection (daemon shutdown).
/// Resolves once the frame is out (or after a second, for a client that does not read).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Farewell(pub Deliver);

/// How long a farewell waits for a client to take its last frame.
const FAREWELL_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

enum Inbound {
    Frame(Bytes),
    /// Framing is broken (oversized length); close after telling the client.
    FramingError(ErrorBody),
}

/// The session actor.
pub struct ClientSession {
    id: u64,
    stream: Option<Stream>,
    access: Result<Access, String>,
    cfg: Arc<DaemonConfig>,
    daemon: Addr<Daemon>,
    bus: Addr<EventBus>,
    daemon_id: String,
    routes: Routes,
    out: Arc<ClientQueue>,
    budget: Arc<QueueBudget>,
    greeted: bool,
    client: String,
    streams: HashMap<u64, ActiveStream>,
    next_transfer: u64,
    closing: bool,
    reader: Option<tokio::task::JoinHandle<()>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    listener: Recipient<SessionEnded>,
    /// `subscribe` calls in effect, and chunk requests not yet answered (both bounded).
    subscriptions: usize,
    pending_chunks: usize,
    /// This daemon run (`welcome.epoch`).
    epoch: u64,
    /// Set while the bus sends no events because the client is more than `ipc.lag_limit`
    /// behind (see `session_lag.rs`).
    paused: bool,
    /// Events for this session only that came while it was paused, to go out in seq order
    /// with what it catches up on.
    held: Vec<Deliver>,
    /// Progress of sends with `progress: true`, per (request, peer): when a frame last went out
    /// and the bytes last reported (bounded by the sends in flight).
    progress: HashMap<(u64, String), (Option<std::time::Instant>, u64)>,
}

impl ClientSession {
    /// A session over an accepted connection.
    pub fn new(s: SessionSetup) -> Self {
        let out = s.budget.queue(s.id, s.cfg.ipc.client_queue_limit);
        Self {
            id: s.id,
            stream: Some(s.stream),
            access: s.access,
            cfg: s.cfg,
            daemon: s.daemon,
            bus: s.bus,
            daemon_id: s.daemon_id,
            routes: s.routes,
            out,
            budget: s.budget,
            greeted: false,
            client: String::new(),
            streams: HashMap::new(),
            next_transfer: 1,
            closing: false,
            reader: None,
            writer: None,
            listener: s.listener,
            subscriptions: 0,
            pending_chunks: 0,
            epoch: s.epoch,
            paused: false,
            held: Vec::new(),
            progress: HashMap::new(),
        }
    }

    fn write(&mut self, msg: &DaemonMessage, ctx: &mut Context<Self>) {
        match encode_frame(msg) {
            Ok(f) => self.write_frame(f, ctx),
            Err(e) => tracing::error!(session = self.id, error = %e, "encoding a frame failed"),
        }
    }

    fn write_frame(&mut self, frame: impl Into<OutFrame>, ctx: &mut Context<Self>) {
        match self.out.push(frame) {
            Ok(()) => {}
            Err(PushError::Closed) => ctx.stop(),
            Err(why) => {
                // A client that stops reading must not make the daemon buffer without bound
                // (client_queue.rs says what the client is told).
                tracing::debug!(session = self.id, client = %self.client, "cutting a slow client");
                self.out.cut(why);
                ctx.stop();
            }
        }
    }

    fn reply(&mut self, id: u64, res: Result<Value, DaemonError>, ctx: &mut Context<Self>) {
        let r = match res {
            Ok(v) => Reply::ok(id, v),
            Err(e) => Reply::err(id, e.code(), e.to_string()),
        };
        self.write(&DaemonMessage::Reply(r), ctx);
    }

    fn fatal(&mut self, body: ErrorBody, ctx: &mut Context<Self>) {
        tracing::info!(session = self.id, code = body.code.as_str(), message = %body.message, "closing client after protocol error");
        self.write(&DaemonMessage::Error(body), ctx);
        self.closing = true;
        // The writer flushes what is queued (the error) and then shuts down; the reader is
        // aborted in `stopped`, so the socket closes once the error is out.
        self.out.close();
        ctx.stop();
    }

    /// Subscriptions are additive and each is matched against every event: bounded per client.
    fn check_subscription(&self, patterns: usize) -> Result<(), DaemonError> {
        let l = &self.cfg.limits;
        if patterns > l.patterns_per_subscription {
            return Err(DaemonError::LimitExceeded(format!(
                "subscribe: {patterns} patterns, more than limits.patterns_per_subscription ({})",
                l.patterns_per_subscription
            )));
        }
        if self.subscriptions >= l.subscriptions_per_client {
            return Err(DaemonError::LimitExceeded(format!(
                "subscribe: this client already has {} subscriptions \
                 (limits.subscriptions_per_client); unsubscribe first, or use one pattern list",
                self.subscriptions
            )));
        }
        Ok(())
    }

    fn exec(&mut self, id: u64, m: Exec, ctx: &mut Context<Self>) {
        let fut = self.daemon.send(m);
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let res = res.map_err(DaemonError::from).and_then(|r| r);
            act.reply(id, res, ctx);
        }));
    }

    fn on_frame(&mut self, body: &[u8], ctx: &mut Context<Self>) {
        let msg = match decode_client(body) {
            Ok(m) => m,
            Err(e) => {
                // The length prefix was sane, so the stream is still in sync: report and go on.
                // Before the handshake (where every error is fatal): a `hello` with a bad field
                // is told what is wrong, bytes that are no message at all are malformed.
                let code = match &e {
                    _ if self.greeted => ErrorCode::MalformedFrame,
                    ProtoError::Hello(b) => b.code.clone(),
                    ProtoError::Malformed(_) => ErrorCode::MalformedFrame,
                    _ => ErrorCode::HandshakeRequired,
                };
                let body = ErrorBody::new(code, e.to_string());
                if self.greeted {
                    self.write(&DaemonMessage::Error(body), ctx);
                } else {
                    self.fatal(body, ctx);
                }
                return;
            }
        };
        match msg {
            ClientMessage::Hello(h) => {
                if self.greeted {
                    self.write(
                        &DaemonMessage::Error(ErrorBody::new(
                            ErrorCode::BadRequest,
                            "hello was already received",
                        )),
                        ctx,
                    );
                    return;
                }
                if h.version != PROTOCOL_VERSION {
                    return self.fatal(
                        ErrorBody::new(
                            ErrorCode::VersionMismatch,
                            format!(
                                "client speaks protocol {}, this daemon speaks {}",
                                h.version, PROTOCOL_VERSION
                            ),
                        ),
                        ctx,
                    );
                }
                if let Err(why) = &self.access {
                    let why = why.clone();
                    self.client = h.client;
                    return self.fatal(ErrorBody::new(ErrorCode::PermissionDenied, why), ctx);
                }
                self.greeted = true;
                self.client = h.client;
                tracing::debug!(session = self.id, client = %self.client, "client connected");
                let w = Welcome {
                    version: PROTOCOL_VERSION,
                    daemon: VERSION.to_string(),
                    id: self.daemon_id.clone(),
                    capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
                    max_frame: self.cfg.ipc.max_frame,
                    epoch: self.epoch,
                };
                self.write(&DaemonMessage::Welcome(w), ctx);
            }
            ClientMessage::Request(req) => {
                if !self.greeted {
                    return self.fatal(
                        ErrorBody::new(
                            ErrorCode::HandshakeRequired,
                            "the first frame must be hello",
                        ),
                        ctx,
                    );
                }
                self.on_request(req, ctx);
            }
        }
    }
}

impl Actor for ClientSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        // `&SessionStream` is both AsyncRead and AsyncWrite; the socket closes when both tasks
        // let go.
        let stream = match session_stream(stream) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(session = self.id, error = %e, "taking over a client's socket failed; closing it");
                ctx.stop();
                return;
            }
        };
        let write_side = stream.clone();
        let queue = self.out.clone();
        let me = ctx.address();
        // Writer: drains the queue to the socket. It ends when the session closes the queue, the
        // client is cut (also by another session making room in the budget) or stops taking
        // bytes; the session then ends too.
        self.writer = Some(actix::spawn(async move {
            let tx_half: &SessionStream = &write_side;
            write_frames(tx_half, &queue).await;
            me.do_send(WriterDone);
        }));
        // Reader: splits the byte stream into frames; a broken length ends the session.
        // Bounded: when the session is behind, the reader stops reading and the client's writes
        // block (`limits.session_inbound_queue`).
        let (in_tx, in_rx) =
            tokio::sync::mpsc::channel::<Inbound>(self.cfg.limits.session_inbound_queue);
        let max = self.cfg.ipc.max_frame as usize;
        self.reader = Some(actix::spawn(async move {
            let mut rx_half: &SessionStream = &stream;
            let mut dec = FrameDecoder::new(max);
            loop {
                // Straight into the decoder's buffer, whose frames are then handed on without
                // another copy (ARCHITECTURE.md counts the copies of the data path).
                let buf = dec.buffer_mut();
                buf.reserve(64 * 1024);
                match rx_half.read_buf(buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                loop {
                    match dec.next_frame_bytes() {
                        Ok(Some(f)) => {
                            if in_tx.send(Inbound::Frame(f)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = in_tx.send(Inbound::FramingError(e.to_error_body())).await;
                            return;
                        }
                    }
                }
            }
        }));
        ctx.add_stream(BoundedStream::new(in_rx));
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
        // actix runs `stopped` while a panic unwinds the actor: the client learns why its
        // connection closes (the writer outlives us and flushes this), the listener logs it.
        let crashed = std::thread::panicking();
        if crashed {
            self.write(
                &DaemonMessage::Error(ErrorBody::new(
                    ErrorCode::Internal,
                    "this client session crashed inside peerixd and is closed; reconnect \
                     (its holds on rooms were released: join again)",
                )),
                ctx,
            );
        }
        self.listener.do_send(SessionEnded {
            id: self.id,
            client: self.client.clone(),
            crashed,
        });
        self.out.close();
        self.bus.do_send(Unsubscribe(self.id));
        if !self.streams.is_empty() {
            tracing::info!(
                session = self.id,
                dropped = self.streams.len(),
                "client left with unfinished streamed sends"
            );
        }
        tracing::debug!(session = self.id, client = %self.client, "client disconnected");
    }
}

impl StreamHandler<Inbound> for ClientSession {
    fn handle(&mut self, item: Inbound, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        match item {
            Inbound::Frame(f) => self.on_frame(&f, ctx),
            Inbound::FramingError(body) => self.fatal(body, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The client closed its end. Replies still in flight are dropped with the session.
        ctx.stop();
    }
}

impl Handler<Deliver> for ClientSession {
    type Result = ();
    fn handle(&mut self, d: Deliver, ctx: &mut Self::Context) {
        self.take_event(d, ctx);
    }
}

impl Handler<Farewell> for ClientSession {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, Farewell(d): Farewell, ctx: &mut Self::Context) -> Self::Result {
        self.write_event(&d, ctx);
        self.closing = true;
        // The writer flushes what is queued and ends.
        self.out.close();
        let writer = self.writer.take();
        Box::pin(
            async move {
                if let Some(w) = writer {
                    let _ = tokio::time::timeout(FAREWELL_FLUSH, w).await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}

/// At most one non-final `progress` frame per (request, peer) in this interval (~10 per second).
const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl Handler<SendProgress> for ClientSession {
    type Result = ();
    fn handle(&mut self, p: SendProgress, ctx: &mut Self::Context) {
        let now = std::time::Instant::now();
        let (last, current) = self
            .progress
            .entry((p.request, p.peer.clone()))
            .or_insert((None, 0));
        *current = p.current;
        if last.is_some_and(|t| now.duration_since(t) < PROGRESS_INTERVAL) {
            return;
        }
        *last = Some(now);
        let msg = Progress {
            id: p.request,
            peer: Some(p.peer),
            label: p.label,
            current: p.current,
            total: p.total,
            done: false,
            error: None,
        };
        self.write(&DaemonMessage::Progress(msg), ctx);
    }
}

impl ClientSession {
    /// The last `progress` frame of request `request`, one per target with its outcome (or one
    /// without `peer` when the message went nowhere). `total` is the message's size; a peer
    /// that failed reports the bytes it had been handed.
    fn progress_done(
        &mut self,
        request: u64,
        label: &str,
        total: u64,
        peers: &[(String, Result<(), String>)],
        ctx: &mut Context<Self>,
    ) {
        let mut frames = Vec::with_capacity(peers.len().max(1));
        for (peer, outcome) in peers {
            let sent = self
                .progress
                .remove(&(request, peer.clone()))
                .map_or(0, |(_, c)| c);
            frames.push(Progress {
                id: request,
                peer: Some(peer.clone()),
                label: label.to_string(),
                current: if outcome.is_ok() { total } else { sent },
                total: Some(total),
                done: true,
                error: outcome
                    .as_ref()
                    .err()
                    .map(|e| ErrorBody::new(ErrorCode::SendFailed, e.clone())),
            });
        }
        if peers.is_empty() {
            frames.push(Progress {
                id: request,
                peer: None,
                label: label.to_string(),
                current: 0,
                total: Some(total),
                done: true,
                error: Some(ErrorBody::new(
                    ErrorCode::SendFailed,
                    "no peer was connected: the message went to nobody",
                )),
            });
        }
        for f in frames {
            self.write(&DaemonMessage::Progress(f), ctx);
        }
    }
}

/// The session's writer ended (see `started`).
#[derive(Message)]
#[rtype(result = "()")]
struct WriterDone;

impl Handler<WriterDone> for ClientSession {
    type Result = ();
    fn handle(&mut self, _: WriterDone, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[path = "event_frame.rs"]
mod event_frame;
#[path = "session_lag.rs"]
mod lag;
#[path = "session_requests.rs"]
mod requests;
#[path = "session_send.rs"]
mod send;
use event_frame::encode_event;
use send::{payload_bytes, ActiveStream, Feed, StreamedSend};
