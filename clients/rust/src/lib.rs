//! Async Rust client for `peerixd`, the Peerix peer daemon.
//!
//! [`Client::connect`] opens the daemon's local socket (see
//! [`default_socket_path`]) and performs the handshake. Requests may be in
//! flight concurrently: a background task dispatches replies by request id,
//! events to the subscriber and progress frames to streamed sends.
//!
//! ```no_run
//! # async fn demo() -> peerix_client::Result<()> {
//! use peerix_client::{default_socket_path, Client, SendOptions};
//! let client = Client::connect(default_socket_path()).await?;
//! client.join(peerix_client::JoinArgs::new("lobby")).await?;
//! let mut events = client.subscribe(&["channel:message"], Some("lobby")).await?;
//! client.send_text("lobby", "default", "hello", SendOptions::default()).await?;
//! while let Some(event) = events.recv().await {
//!     println!("{} {:?}", event.name, event.data);
//! }
//! # Ok(()) }
//! ```
//!
//! **Latency and the runtime.** The background task that reads the socket hands every reply
//! and event to the task awaiting it. On a current-thread runtime that is a task switch; on
//! a multi-thread runtime it is often a wake-up of another thread, and always one when the
//! awaiting code runs in `block_on` (what `#[tokio::main]` does with `main`), which runs on
//! the calling thread, not on a worker. A program that waits for one message at a time
//! (request/response, chat, control) gets lower latency from a current-thread runtime
//! (`#[tokio::main(flavor = "current_thread")]`): on a 2-core VM a 16 B round trip through
//! two daemons took 0.287 ms instead of 0.341 ms (medians of seven runs; `BENCHMARKS.md`,
//! session 17).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod assembler;
mod delivery;
mod error;
mod media;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use peerix_ipc_proto::rmpv::Value;
use peerix_ipc_proto::{
    decode_daemon, encode_frame_limited, encode_frame_sized, ClientMessage, CloseArgs,
    DaemonMessage, EventData, ForwardArgs, ForwardResult, FrameDecoder, Hello, LeaveArgs, Op,
    OpenArgs, Payload, PeersArgs, Progress, Request, SendArgs, SendBatch, SendChunkRequest,
    SendStart, SendStartRequest, SubscribeArgs, VerifierArgs, VerifyArgs, Welcome,
    DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use assembler::{AssembledMessage, MessageAssembler, MessageData};
pub use delivery::lagged;
pub use error::{ClientError, Result};
pub use peerix_ipc_proto as proto;
pub use peerix_ipc_proto::{
    BatchFailure, BatchPeerReport, BatchResult, DeliveryReport, DriverInfo, Event, JoinArgs,
    JoinOptions, JoinResult, LeaveResult, PeerInfo, RoomInfo, RoomLeftData, SendResult,
    StatusResult, VerifyFallback, VerifyMode, VerifyOptions, MAX_BATCH,
};
pub use peerix_ipc_proto::{EncodingParameters, ShareArgs, ShareResult, ShareTrack, SharedTrack};

/// Environment variable overriding the socket path.
pub const SOCKET_ENV: &str = "PEERIX_SOCKET";

/// Size of the chunks of a streamed send (1 MiB).
pub const STREAM_CHUNK: usize = 1024 * 1024;

/// Chunk size of [`Client::send_bytes`] for messages larger than it, which it streams: the
/// daemon starts transmitting after the first 256 KiB instead of after the whole request
/// (a 1 MiB request took ~2–4 ms to upload before its first frame left), and the reply to each
/// chunk comes back while the next one is written (see [`STREAM_WINDOW`]).
pub const BYTES_STREAM_CHUNK: usize = 256 * 1024;

/// Chunks of one streamed send written ahead of their replies: two, so the daemon reads the
/// next chunk while its reply to the previous one travels back (one chunk at a time left the
/// socket idle for a round trip per chunk); the daemon answers a chunk once its peers' lanes
/// took it, so this bounds what one send queues in the daemon.
pub const STREAM_WINDOW: usize = 2;

/// Send buffer asked for on the connection (the kernel doubles it, within
/// `net.core.wmem_max`): a 1 MiB request then leaves in one write instead of five fills of
/// the default ~208 KiB, each a sleep here and a wake-up of the daemon's reader. (Not the
/// daemon's side: a client it cuts as too slow must still get its `error` frame within the
/// second's grace, so what the kernel holds for a client stays small.)
#[cfg(unix)]
const SEND_BUFFER: usize = 1 << 20;

/// Capacity of the event channel returned by [`Client::subscribe`].
pub const EVENT_QUEUE: usize = 1024;

/// How long [`Client::connect`] waits for the daemon's `welcome`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves the daemon socket path exactly like `peerixd` does:
/// `PEERIX_SOCKET`, else `$XDG_RUNTIME_DIR/peerix/peerixd.sock`, else
/// `/run/peerix/peerixd.sock`. (On Windows the fallback is the named pipe
/// name `peerixd.sock`.)
pub fn default_socket_path() -> PathBuf {
    socket_path_from(
        std::env::var_os(SOCKET_ENV),
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

fn socket_path_from(
    explicit: Option<std::ffi::OsString>,
    runtime_dir: Option<std::ffi::OsString>,
) -> PathBuf {
    if let Some(p) = explicit.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if cfg!(windows) {
        return PathBuf::from("peerixd.sock");
    }
    match runtime_dir.filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("peerix").join("peerixd.sock"),
        None => PathBuf::from("/run/peerix/peerixd.sock"),
    }
}

/// Options common to the `send_*` methods.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Send to this peer only (all connected peers when `None`).
    pub to: Option<String>,
    /// Metadata map delivered with the message.
    pub info: Option<Value>,
}

impl SendOptions {
    /// Options sending to one peer.
    pub fn to(peer: impl Into<String>) -> Self {
        SendOptions {
            to: Some(peer.into()),
            info: None,
        }
    }
}

/// A new peer asks to connect to a room this client verifies (a `verify` event): Peerix's
/// `verify({id, metadata})`. Answer with [`Client::verify`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyRequest {
    /// The room.
    pub room: String,
    /// Names the request in the answer.
    pub request: u64,
    /// The peer's id.
    pub peer: String,
    /// The metadata its invoke or offer carried.
    pub metadata: Value,
}

/// Progress of [`Client::send_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendProgress {
    /// Bytes handed to (and buffered by) the daemon so far.
    Buffered {
        /// Bytes sent so far.
        sent: u64,
        /// Total bytes, if known.
        total: Option<u64>,
    },
    /// A `progress` frame from the daemon (bytes going out to a peer).
    Delivery(Progress),
}

type BoxedWriter = Box<dyn AsyncWrite + Send + Unpin>;

#[derive(Default)]
struct State {
    /// Each waiting request's reply, as the frame's bytes: the waiter decodes it into the
    /// type it expects (see [`typed_reply`]).
    pending: HashMap<u64, oneshot::Sender<Vec<u8>>>,
    progress: HashMap<u64, mpsc::UnboundedSender<Progress>>,
    events: Option<mpsc::Sender<Event>>,
    /// Where each verified room's `verify` events go (see [`Client::verifier`]).
    verify: HashMap<String, mpsc::UnboundedSender<VerifyRequest>>,
    /// Why the connection is closed, once it is.
    closed: Option<String>,
}

struct Inner {
    /// The `seq` of the last event received (0: none yet), for resuming after a reconnect.
    last_seq: AtomicU64,
    writer: tokio::sync::Mutex<BoxedWriter>,
    /// Encoded frames waiting for the writer, in request order (see [`Inner::write`]).
    outbox: Mutex<Outbox>,
    state: Mutex<State>,
    next_id: AtomicU64,
    max_frame: usize,
}

/// Frames encoded by requests and not yet taken by a writer; each gets a ticket in order.
#[derive(Default)]
struct Outbox {
    frames: std::collections::VecDeque<Vec<u8>>,
    /// Frames with a ticket below this were taken by a writer.
    taken: u64,
    /// Frames with a ticket below this are on the socket.
    written: u64,
}

impl Outbox {
    /// The next bytes to write: the first frame, with the small frames behind it when it is
    /// small itself. `None` when empty.
    fn take(&mut self) -> Option<Vec<u8>> {
        let first = self.frames.pop_front()?;
        self.taken += 1;
        let (frames, taken) = (&mut self.frames, &mut self.taken);
        Some(peerix_ipc_proto::coalesce_frames(first, |max| {
            let f = frames.pop_front_if(|f| f.len() < max)?;
            *taken += 1;
            Some(f)
        }))
    }
}

impl Inner {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked while holding
        // it; the state itself stays consistent, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shutdown(&self, reason: String) {
        let mut st = self.state();
        if st.closed.is_none() {
            st.closed = Some(reason);
        }
        st.pending.clear();
        st.progress.clear();
        st.events = None;
        st.verify.clear();
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed(
            self.state()
                .closed
                .clone()
                .unwrap_or_else(|| "connection lost".into()),
        )
    }

    /// Puts an encoded `frame` on the socket, after those queued before it. Whoever holds the
    /// writer writes the frames queued before its own as well, small ones together: a client
    /// with many requests in flight then makes one write system call (and wakes the daemon's
    /// reader once) for many of them instead of one each. Returns once this frame was written,
    /// by this call or an earlier one.
    async fn write_frame(&self, frame: Vec<u8>) -> Result<()> {
        let ticket = {
            let mut o = self.outbox();
            o.frames.push_back(frame);
            // Tickets are consecutive: those below `taken` were taken, the rest are queued.
            o.taken + o.frames.len() as u64 - 1
        };
        let mut w = self.writer.lock().await;
        loop {
            let (bytes, upto) = {
                let mut o = self.outbox();
                if o.taken > ticket {
                    break;
                }
                let bytes = o.take();
                (bytes, o.taken)
            };
            let Some(bytes) = bytes else { break };
            let res = async {
                w.write_all(&bytes).await?;
                w.flush().await
            }
            .await;
            if let Err(e) = res {
                self.shutdown(format!("write failed: {e}"));
                return Err(ClientError::Io(e));
            }
            self.outbox().written = upto;
        }
        if self.outbox().written > ticket {
            return Ok(());
        }
        // The earlier holder that took this frame failed to write it (and closed the client).
        Err(self.closed_error())
    }

    async fn dispatch(&self, body: &[u8]) {
        if let Some(id) = peerix_ipc_proto::reply_id(body) {
            let tx = self.state().pending.remove(&id);
            if let Some(tx) = tx {
                let _ = tx.send(body.to_vec());
            }
            return;
        }
        let Ok(msg) = decode_daemon(body) else {
            // Malformed frames from the daemon are skipped; the stream stays
            // in sync thanks to the length prefix.
            return;
        };
        if let DaemonMessage::Event(e) = &msg {
            self.last_seq.fetch_max(e.seq, Ordering::Relaxed);
        }
        match msg {
            // Routed above by `reply_id`; one that gets here has a malformed `id` (nobody
            // waits for it).
            DaemonMessage::Reply(_) => {}
            DaemonMessage::Event(event) if event.name == peerix_ipc_proto::event_names::VERIFY => {
                let Ok(EventData::Verify(d)) = event.typed() else {
                    return;
                };
                let room = event.room.unwrap_or_default();
                let tx = self.state().verify.get(&room).cloned();
                if let Some(tx) = tx {
                    let _ = tx.send(VerifyRequest {
                        room,
                        request: d.request,
                        peer: d.peer,
                        metadata: d.metadata,
                    });
                }
            }
            DaemonMessage::Event(event) => {
                let tx = self.state().events.clone();
                if let Some(tx) = tx {
                    if tx.send(event).await.is_err() {
                        let mut st = self.state();
                        if st.events.as_ref().is_some_and(|e| e.same_channel(&tx)) {
                            st.events = None;
                        }
                    }
                }
            }
            DaemonMessage::Progress(p) => {
                if let Some(tx) = self.state().progress.get(&p.id) {
                    let _ = tx.send(p);
                }
            }
            DaemonMessage::Error(e) => {
                self.state().closed = Some(format!("peerixd reported {e}"));
            }
            DaemonMessage::Welcome(_) => {}
        }
    }
}

/// A connection to `peerixd`.
///
/// All methods take `&self`; several requests can be awaited concurrently.
/// Dropping the client closes the connection, which releases its holds on rooms: a room it
/// joined stays joined only while another connection holds it, or if it was joined with
/// `persist` (see [`JoinArgs::persistent`]).
pub struct Client {
    inner: Arc<Inner>,
    welcome: Welcome,
    reader: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("welcome", &self.welcome)
            .finish_non_exhaustive()
    }
}

fn client_name() -> String {
    format!("peerix-client/{}", env!("CARGO_PKG_VERSION"))
}

impl Client {
    /// Connects to the daemon socket at `path` and performs the handshake.
    ///
    /// A missing socket or a refused connection yields
    /// [`ClientError::NotRunning`].
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client> {
        Self::connect_as(path, &client_name()).await
    }

    /// Like [`Client::connect`] with a custom client name for `hello`
    /// (e.g. `"peerix-cli/0.1.0"`).
    pub async fn connect_as(path: impl AsRef<Path>, client: &str) -> Result<Client> {
        let path = path.as_ref();
        let stream = open_local_socket(path).await.map_err(|source| {
            use std::io::ErrorKind::*;
            match source.kind() {
                NotFound | ConnectionRefused | AddrNotAvailable => ClientError::NotRunning {
                    path: path.to_owned(),
                    source,
                },
                _ => ClientError::Connect {
                    path: path.to_owned(),
                    source,
                },
            }
        })?;
        Self::handshake(stream, client).await
    }

    /// Performs the handshake over an already connected byte stream (any
    /// `AsyncRead + AsyncWrite`, e.g. for tests or custom transports).
    pub async fn handshake<S>(stream: S, client: &str) -> Result<Client>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, wr) = tokio::io::split(stream);
        let mut writer: BoxedWriter = Box::new(wr);
        let hello = ClientMessage::Hello(Hello {
            version: PROTOCOL_VERSION,
            client: client.to_owned(),
            capabilities: Vec::new(),
        });
        let frame = encode_frame_limited(&hello, DEFAULT_MAX_FRAME)?;
        writer.write_all(&frame).await?;
        writer.flush().await?;

        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut rd, &mut dec))
            .await
            .map_err(|_| ClientError::Timeout("waiting for the daemon's welcome".into()))??;
        let welcome = match decode_daemon(&first)? {
            DaemonMessage::Welcome(w) => w,
            DaemonMessage::Error(e) => return Err(ClientError::Rejected(e)),
            other => {
                return Err(ClientError::Handshake(format!(
                    "expected welcome, got {other:?}"
                )))
            }
        };
        if welcome.version != PROTOCOL_VERSION {
            return Err(ClientError::VersionMismatch {
                client: PROTOCOL_VERSION,
                daemon: welcome.version,
            });
        }
        let max_frame = usize::try_from(welcome.max_frame)
            .unwrap_or(usize::MAX)
            .clamp(1024, u32::MAX as usize);
        let inner = Arc::new(Inner {
            last_seq: AtomicU64::new(0),
            writer: tokio::sync::Mutex::new(writer),
            outbox: Mutex::new(Outbox::default()),
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            max_frame,
        });
        let reader = tokio::spawn(reader_loop(rd, dec, Arc::clone(&inner)));
        Ok(Client {
            inner,
            welcome,
            reader,
        })
    }

    /// The daemon's `welcome` (peer id, version, limits).
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The daemon's Peerix peer id.
    pub fn peer_id(&self) -> &str {
        &self.welcome.id
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a pending reply for `id`, sends the request and returns the
    /// receiver of the reply.
    async fn start_request(
        &self,
        id: u64,
        op: &str,
        args: Value,
    ) -> Result<oneshot::Receiver<Vec<u8>>> {
        let msg = ClientMessage::Request(Request {
            id,
            op: op.to_owned(),
            args,
        });
        let frame = encode_frame_limited(&msg, self.inner.max_frame)?;
        self.start_request_frame(id, frame).await
    }

    /// Like [`Client::start_request`], with request `id` already encoded in `frame`.
    async fn start_request_frame(
        &self,
        id: u64,
        frame: Vec<u8>,
    ) -> Result<oneshot::Receiver<Vec<u8>>> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.inner.state();
            if let Some(reason) = &st.closed {
                return Err(ClientError::Closed(reason.clone()));
            }
            st.pending.insert(id, tx);
        }
        if let Err(e) = self.inner.write_frame(frame).await {
            self.inner.state().pending.remove(&id);
            return Err(e);
        }
        Ok(rx)
    }

    async fn finish(&self, rx: oneshot::Receiver<Vec<u8>>) -> Result<Value> {
        let reply = rx.await.map_err(|_| self.inner.closed_error())?;
        reply_value(&reply)
    }

    /// Like [`Client::finish`], decoding the result straight into `T` (see [`typed_reply`]).
    async fn finish_typed<T: DeserializeOwned>(&self, rx: oneshot::Receiver<Vec<u8>>) -> Result<T> {
        let reply = rx.await.map_err(|_| self.inner.closed_error())?;
        typed_reply(&reply)
    }

    /// Writes a request and returns at once, without waiting for its reply: the returned
    /// [`PendingReply`] resolves to the result later.
    ///
    /// This is how a client pipelines: requests issued one after another are on the socket in
    /// that order when this returns, so e.g. sends on one label reach each peer in the order
    /// they were issued (PROTOCOL.md, "Ordering"), while their replies are awaited together.
    pub async fn issue(&self, op: &Op) -> Result<PendingReply> {
        let rx = self
            .start_request(self.next_id(), op.name(), op.to_args()?)
            .await?;
        Ok(PendingReply {
            rx,
            inner: Arc::clone(&self.inner),
        })
    }

    /// Sends a raw request and returns the raw result.
    pub async fn request_raw(&self, op: &str, args: Value) -> Result<Value> {
        let rx = self.start_request(self.next_id(), op, args).await?;
        self.finish(rx).await
    }

    /// Sends a typed request and returns the raw result.
    pub async fn request(&self, op: &Op) -> Result<Value> {
        self.request_raw(op.name(), op.to_args()?).await
    }

    /// Takes the op by value so that its data moves into the request's args (`Op::into_args`);
    /// a `send` of one message is serialised from the op instead (`SendStartRequest`).
    async fn request_typed<T: DeserializeOwned>(&self, op: Op) -> Result<T> {
        let id = self.next_id();
        let rx = match &op {
            // One per message for a client sending many small ones: written straight from
            // the op, the same bytes without the args `Value` (`SendStartRequest`).
            Op::Send(SendArgs::Start(args)) => {
                let req = SendStartRequest { id, args };
                // Room for the data up front, so the buffer is not grown by doubling.
                let hint = args.payload.len() + 256;
                let frame = encode_frame_sized(&req, self.inner.max_frame, hint)?;
                self.start_request_frame(id, frame).await?
            }
            _ => self.start_request(id, op.name(), op.into_args()?).await?,
        };
        self.finish_typed(rx).await
    }

    /// `status`: daemon version, drivers and rooms.
    pub async fn status(&self) -> Result<StatusResult> {
        self.request_typed(Op::Status).await
    }

    /// `join`: joins a room, or holds one that is joined already (one hold per connection,
    /// so joining twice is a no-op). The room stays joined while this connection is open, or
    /// for good with `args.persist` (until a `leave` releases that persistent hold).
    pub async fn join(&self, args: JoinArgs) -> Result<JoinResult> {
        self.request_typed(Op::Join(args)).await
    }

    /// `leave`: releases this connection's hold on a room (or, if it holds none, the
    /// persistent hold); the room is left when no hold remains (`left` in the result).
    /// Fails with `NOT_HELD` when only other connections hold it.
    pub async fn leave(&self, room: &str) -> Result<LeaveResult> {
        self.request_typed(Op::Leave(LeaveArgs::new(room))).await
    }

    /// `leave` with `all`: releases every hold on a room and leaves it; the other holding
    /// connections get `room:left`.
    pub async fn leave_all(&self, room: &str) -> Result<LeaveResult> {
        self.request_typed(Op::Leave(LeaveArgs {
            room: room.into(),
            all: true,
        }))
        .await
    }

    /// `peers`: lists the peers of a room.
    pub async fn peers(&self, room: &str) -> Result<Vec<PeerInfo>> {
        let r: peerix_ipc_proto::PeersResult = self
            .request_typed(Op::Peers(PeersArgs { room: room.into() }))
            .await?;
        Ok(r.peers)
    }

    /// `open`: opens a data channel.
    pub async fn open(&self, args: OpenArgs) -> Result<()> {
        self.request(&Op::Open(args)).await.map(drop)
    }

    /// `close`: closes a data channel (towards one peer if `to` is set).
    pub async fn close(&self, room: &str, label: &str, to: Option<&str>) -> Result<()> {
        self.request(&Op::Close(CloseArgs {
            room: room.into(),
            label: label.into(),
            to: to.map(Into::into),
        }))
        .await
        .map(drop)
    }

    async fn send_payload(
        &self,
        room: &str,
        label: &str,
        payload: Payload,
        opts: SendOptions,
    ) -> Result<SendResult> {
        self.request_typed(Op::Send(SendArgs::Start(SendStart {
            room: room.into(),
            label: label.into(),
            to: opts.to,
            payload,
            info: opts.info,
            more: false,
            progress: false,
        })))
        .await
    }

    /// Sends several binary messages in one request (`batch`, PROTOCOL.md `send`): each is its
    /// own message at the receiver, in order; resolves after every target peer acknowledged
    /// every one (or failed), saying which did not arrive. For many small messages this costs
    /// the daemon one request instead of one per message. At most [`MAX_BATCH`] messages, and
    /// the request must fit the daemon's `max_frame`.
    pub async fn send_batch(
        &self,
        room: &str,
        label: &str,
        messages: Vec<Vec<u8>>,
        opts: SendOptions,
    ) -> Result<BatchResult> {
        self.send_batch_of(
            room,
            label,
            messages.into_iter().map(Payload::Bytes).collect(),
            opts,
        )
        .await
    }

    /// Like [`Client::send_batch`] for text messages.
    pub async fn send_batch_text(
        &self,
        room: &str,
        label: &str,
        messages: Vec<String>,
        opts: SendOptions,
    ) -> Result<BatchResult> {
        self.send_batch_of(
            room,
            label,
            messages.into_iter().map(Payload::Text).collect(),
            opts,
        )
        .await
    }

    async fn send_batch_of(
        &self,
        room: &str,
        label: &str,
        payloads: Vec<Payload>,
        opts: SendOptions,
    ) -> Result<BatchResult> {
        self.request_typed(Op::Send(SendArgs::Batch(SendBatch {
            room: room.into(),
            label: label.into(),
            to: opts.to,
            payloads,
            info: opts.info,
        })))
        .await
    }

    /// Sends a text message; resolves after every target peer acknowledged.
    pub async fn send_text(
        &self,
        room: &str,
        label: &str,
        text: &str,
        opts: SendOptions,
    ) -> Result<SendResult> {
        self.send_payload(room, label, Payload::Text(text.into()), opts)
            .await
    }

    /// Sends a binary message; resolves after every target peer acknowledged.
    ///
    /// Messages larger than [`BYTES_STREAM_CHUNK`] go as a streamed send in chunks of that size (see
    /// [`Client::send_stream`]): the daemon starts transmitting the first chunk while the
    /// rest is still being uploaded, instead of waiting for one large request to arrive
    /// whole. The peer receives the same message either way.
    pub async fn send_bytes(
        &self,
        room: &str,
        label: &str,
        bytes: Vec<u8>,
        opts: SendOptions,
    ) -> Result<SendResult> {
        if bytes.len() > BYTES_STREAM_CHUNK {
            let total = bytes.len() as u64;
            // Chunks are encoded straight from `bytes`, not read into buffers of their own.
            let source = ChunkSource::<tokio::io::Empty>::Slice(&bytes);
            return self
                .send_stream_in(
                    room,
                    label,
                    source,
                    Some(total),
                    opts,
                    |_| {},
                    BYTES_STREAM_CHUNK,
                )
                .await;
        }
        self.send_payload(room, label, Payload::Bytes(bytes), opts)
            .await
    }

    /// Sends a structured (json-type) message.
    pub async fn send_json(
        &self,
        room: &str,
        label: &str,
        value: Value,
        opts: SendOptions,
    ) -> Result<SendResult> {
        self.send_payload(room, label, Payload::Json(value), opts)
            .await
    }

    /// Streams bytes from `reader` as one message, in chunks of
    /// [`STREAM_CHUNK`] bytes (smaller if the daemon's frame limit requires).
    ///
    /// `total` is only used for progress reporting. `on_progress` is called
    /// after each chunk is buffered by the daemon and for each `progress`
    /// frame. Returns the final delivery result. The first chunk goes with
    /// the start request, and [`STREAM_WINDOW`] chunks are written ahead of
    /// their replies.
    pub async fn send_stream<R, F>(
        &self,
        room: &str,
        label: &str,
        reader: R,
        total: Option<u64>,
        opts: SendOptions,
        on_progress: F,
    ) -> Result<SendResult>
    where
        R: AsyncRead + Unpin,
        F: FnMut(&SendProgress),
    {
        let source = ChunkSource::Reader(reader);
        self.send_stream_in(room, label, source, total, opts, on_progress, STREAM_CHUNK)
            .await
    }

    /// [`Client::send_stream`] in chunks of `chunk` bytes. The first chunk rides in the start
    /// request (the daemon starts transmitting it before the start's reply is back), and up to
    /// [`STREAM_WINDOW`] chunks are written ahead of their replies.
    #[allow(clippy::too_many_arguments)]
    async fn send_stream_in<'a, R, F>(
        &self,
        room: &str,
        label: &str,
        mut source: ChunkSource<'a, R>,
        total: Option<u64>,
        opts: SendOptions,
        mut on_progress: F,
        chunk: usize,
    ) -> Result<SendResult>
    where
        R: AsyncRead + Unpin,
        F: FnMut(&SendProgress),
    {
        let chunk_size = chunk.min(self.inner.max_frame.saturating_sub(512).max(1));
        let start_id = self.next_id();
        let (ptx, mut prx) = mpsc::unbounded_channel();
        self.inner.state().progress.insert(start_id, ptx);
        let result = async {
            let first = source.next(chunk_size).await?;
            let first_len = first.len() as u64;
            let first_full = first.len() == chunk_size;
            let start = SendStart {
                room: room.into(),
                label: label.into(),
                to: opts.to,
                payload: Payload::Bytes(first.into_owned()),
                info: opts.info,
                more: true,
                progress: true,
            };
            // Room for the data up front, so the frame is not grown by doubling.
            let hint = start.payload.len()
                + start.room.len()
                + start.label.len()
                + start.to.as_ref().map_or(0, String::len)
                + 256;
            let frame = encode_frame_sized(
                &SendStartRequest {
                    id: start_id,
                    args: &start,
                },
                self.inner.max_frame,
                hint,
            )?;
            drop(start);
            let rx = self.start_request_frame(start_id, frame).await?;
            // The next chunk is read while the start travels.
            let mut current = if first_full {
                source.next(chunk_size).await?
            } else {
                Cow::Borrowed(&[][..])
            };
            let first: SendResult = self.finish_typed(rx).await?;
            let transfer = first.transfer;
            let mut sent = first_len;
            on_progress(&SendProgress::Buffered { sent, total });
            // Chunks written whose replies are still awaited, oldest first, with their lengths:
            // the next chunk is on the socket while the daemon answers the previous one.
            let mut unanswered: VecDeque<(oneshot::Receiver<Vec<u8>>, u64)> = VecDeque::new();
            loop {
                let next = if current.len() == chunk_size {
                    source.next(chunk_size).await?
                } else {
                    Cow::Borrowed(&[][..])
                };
                let more = !next.is_empty();
                let len = current.len() as u64;
                let id = self.next_id();
                let frame = chunk_frame(id, transfer, &current, more, self.inner.max_frame)?;
                current = next;
                let rx = self.start_request_frame(id, frame).await?;
                unanswered.push_back((rx, len));
                // At most `STREAM_WINDOW` chunks unanswered; after the final one, all of them.
                while unanswered.len() >= STREAM_WINDOW || (!more && !unanswered.is_empty()) {
                    let Some((rx, len)) = unanswered.pop_front() else {
                        break;
                    };
                    let fut = self.finish(rx);
                    tokio::pin!(fut);
                    let value = loop {
                        tokio::select! {
                            v = &mut fut => break v?,
                            Some(p) = prx.recv() => on_progress(&SendProgress::Delivery(p)),
                        }
                    };
                    sent += len;
                    on_progress(&SendProgress::Buffered { sent, total });
                    if !more && unanswered.is_empty() {
                        while let Ok(p) = prx.try_recv() {
                            on_progress(&SendProgress::Delivery(p));
                        }
                        return decode_result::<SendResult>(value);
                    }
                }
            }
        }
        .await;
        self.inner.state().progress.remove(&start_id);
        result
    }

    /// `subscribe`: adds an event filter and returns the event receiver.
    ///
    /// All events of this connection go to the receiver returned by the most
    /// recent `subscribe` call (earlier receivers are closed). The receiver
    /// must be drained: when it is full, reading from the daemon pauses.
    pub async fn subscribe(
        &self,
        events: &[&str],
        room: Option<&str>,
    ) -> Result<mpsc::Receiver<Event>> {
        let args = SubscribeArgs {
            events: events.iter().map(|s| s.to_string()).collect(),
            room: room.map(Into::into),
            since: None,
            epoch: None,
        };
        self.subscribe_with(args).await.map(|(rx, _)| rx)
    }

    /// `subscribe` with any arguments (see also [`Client::subscribe_since`]): the event
    /// receiver and the reply.
    pub async fn subscribe_with(
        &self,
        args: SubscribeArgs,
    ) -> Result<(mpsc::Receiver<Event>, Value)> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        args.filter()?;
        // Install the sender first so that no event before or after the reply (a resume
        // replays events before it) is lost.
        let previous = self.inner.state().events.replace(tx);
        match self.request(&Op::Subscribe(args)).await {
            Ok(v) => Ok((rx, v)),
            Err(e) => {
                self.inner.state().events = previous;
                Err(e)
            }
        }
    }

    /// Returns an event receiver without subscribing to anything: it gets the events the
    /// daemon sends a connection whatever it subscribed to, such as `room:left` for a room this
    /// connection held (PROTOCOL.md §11). Like [`Client::subscribe`], it replaces the earlier
    /// receiver; events of later subscriptions come here too.
    pub fn events(&self) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        self.inner.state().events = Some(tx);
        rx
    }

    /// `verifier`: makes this connection the verifier of `room` (joined with `verify.mode =
    /// "verifier"`) and returns the room's requests. Answer each with [`Client::verify`]
    /// before the room's `verify.timeout`, or its fallback applies. The requests come whether
    /// or not this client subscribed to events. Disconnecting ends the registration (the
    /// room's open requests then get the fallback).
    pub async fn verifier(&self, room: &str) -> Result<mpsc::UnboundedReceiver<VerifyRequest>> {
        let (tx, rx) = mpsc::unbounded_channel();
        // Installed first: the daemon hands over waiting requests right after registering.
        let previous = self.inner.state().verify.insert(room.to_string(), tx);
        let args = VerifierArgs {
            room: room.into(),
            release: false,
        };
        match self.request(&Op::Verifier(args)).await {
            Ok(_) => Ok(rx),
            Err(e) => {
                let mut st = self.inner.state();
                match previous {
                    Some(p) => st.verify.insert(room.to_string(), p),
                    None => st.verify.remove(room),
                };
                Err(e)
            }
        }
    }

    /// `verifier` with `release`: stops being the verifier of `room`.
    pub async fn release_verifier(&self, room: &str) -> Result<()> {
        let args = VerifierArgs {
            room: room.into(),
            release: true,
        };
        self.request(&Op::Verifier(args)).await?;
        self.inner.state().verify.remove(room);
        Ok(())
    }

    /// `verify`: the answer to `request` (from [`Client::verifier`]).
    pub async fn verify(&self, room: &str, request: u64, accept: bool) -> Result<()> {
        self.request(&Op::Verify(VerifyArgs {
            room: room.into(),
            request,
            accept,
        }))
        .await
        .map(drop)
    }

    /// Forwards the RTP of a track `peer` shares under `label` to `to` (a local UDP address;
    /// `None` stops). `kind` (`audio`/`video`) picks the track when the label has both. The
    /// result carries an SDP file that ffplay, VLC and GStreamer open as is.
    pub async fn forward(
        &self,
        room: &str,
        peer: &str,
        label: &str,
        kind: Option<&str>,
        to: Option<std::net::SocketAddr>,
    ) -> Result<ForwardResult> {
        let op = Op::Forward(ForwardArgs {
            room: room.into(),
            peer: peer.into(),
            label: label.into(),
            kind: kind.map(str::to_owned),
            to: to.map(|t| t.to_string()),
            stop: to.is_none(),
            deliver: false,
        });
        self.issue(&op).await?.typed().await
    }

    /// `unsubscribe`: removes all event filters and closes the event receiver.
    pub async fn unsubscribe(&self) -> Result<()> {
        self.request(&Op::Unsubscribe).await?;
        self.inner.state().events = None;
        Ok(())
    }
}

/// The reply of a request written by [`Client::issue`], still to come.
#[must_use = "a pending reply does nothing unless awaited (dropping it ignores the reply)"]
pub struct PendingReply {
    rx: oneshot::Receiver<Vec<u8>>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PendingReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingReply").finish_non_exhaustive()
    }
}

impl PendingReply {
    /// Waits for the reply and returns its raw result.
    pub async fn result(self) -> Result<Value> {
        let reply = self.rx.await.map_err(|_| self.inner.closed_error())?;
        reply_value(&reply)
    }

    /// Waits for the reply and decodes its result as `T` (e.g. [`SendResult`]).
    pub async fn typed<T: DeserializeOwned>(self) -> Result<T> {
        let reply = self.rx.await.map_err(|_| self.inner.closed_error())?;
        typed_reply(&reply)
    }
}

/// A reply frame's result as a MessagePack value (or the daemon's error).
fn reply_value(body: &[u8]) -> Result<Value> {
    match decode_daemon(body) {
        Ok(DaemonMessage::Reply(reply)) => reply.into_result().map_err(ClientError::Daemon),
        Ok(_) => Err(ClientError::UnexpectedResult(
            "a frame routed as a reply is not one".into(),
        )),
        Err(e) => Err(ClientError::UnexpectedResult(e.to_string())),
    }
}

/// A result converted into `T`.
fn decode_result<T: DeserializeOwned>(v: Value) -> Result<T> {
    peerix_ipc_proto::from_value(v).map_err(|e| ClientError::UnexpectedResult(e.to_string()))
}

/// A reply frame's result decoded straight into `T` (or the daemon's error), without the
/// `Value` tree that [`reply_value`] builds: for small requests that tree, encoded and decoded
/// again into `T`, was most of what a reply cost the reader (BENCHMARKS.md, session 19).
fn typed_reply<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    match peerix_ipc_proto::decode_reply_as(body) {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(error)) => Err(ClientError::Daemon(error)),
        Err(e) => Err(ClientError::UnexpectedResult(e.to_string())),
    }
}

/// The request frame of a streamed send's chunk, with room for all of it reserved up front (the
/// header is under 100 bytes), so the chunk is copied into it once.
fn chunk_frame(id: u64, transfer: u64, data: &[u8], more: bool, max: usize) -> Result<Vec<u8>> {
    let req = SendChunkRequest {
        id,
        transfer,
        data,
        more,
    };
    Ok(encode_frame_sized(
        &req,
        max,
        data.len() + CHUNK_HEADER_ROOM,
    )?)
}

/// Bytes reserved for a chunk request's fields besides its data.
const CHUNK_HEADER_ROOM: usize = 128;

/// Where a streamed send's chunks come from: a reader, whose chunks are read into buffers of
/// their own, or bytes the caller already holds, whose chunks are borrowed.
enum ChunkSource<'a, R> {
    Reader(R),
    Slice(&'a [u8]),
}

impl<'a, R: AsyncRead + Unpin> ChunkSource<'a, R> {
    /// The next chunk of at most `size` bytes; empty at the end.
    async fn next(&mut self, size: usize) -> Result<Cow<'a, [u8]>> {
        match self {
            ChunkSource::Reader(r) => Ok(Cow::Owned(read_chunk(r, size).await?)),
            ChunkSource::Slice(s) => {
                let (chunk, rest) = s.split_at(size.min(s.len()));
                *s = rest;
                Ok(Cow::Borrowed(chunk))
            }
        }
    }
}

/// Reads until `size` bytes or EOF.
async fn read_chunk<R: AsyncRead + Unpin>(reader: &mut R, size: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let mut filled = 0;
    while filled < size {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R, dec: &mut FrameDecoder) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 8192];
    loop {
        if let Some(f) = dec
            .next_frame()
            .map_err(peerix_ipc_proto::ProtoError::from)?
        {
            return Ok(f);
        }
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            return Err(ClientError::Closed(
                "peerixd closed the connection during the handshake".into(),
            ));
        }
        dec.push(&buf[..n]);
    }
}

/// Room the reader keeps in its buffer for one `read`: small frames arrive many per read, and
/// a large frame's length prefix reserves its whole size (`FrameDecoder::next_frame_bytes`).
const READ_RESERVE: usize = 64 * 1024;

async fn reader_loop<R: AsyncRead + Unpin>(mut rd: R, mut dec: FrameDecoder, inner: Arc<Inner>) {
    let reason = 'outer: loop {
        loop {
            // The frame shares the decoder's buffer: a message part of a megabyte is not
            // copied on its way to the decoder.
            match dec.next_frame_bytes() {
                Ok(Some(frame)) => inner.dispatch(&frame).await,
                Ok(None) => break,
                Err(e) => break 'outer format!("{e}"),
            }
        }
        // Read straight into the decoder's buffer (no staging buffer to copy from).
        let buf = dec.buffer_mut();
        buf.reserve(READ_RESERVE);
        match rd.read_buf(buf).await {
            Ok(0) => break "peerixd closed the connection".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
    };
    inner.shutdown(reason);
}

#[cfg(unix)]
async fn open_local_socket(path: &Path) -> std::io::Result<peerix_ipc_socket::QuietStream> {
    use interprocess::local_socket::tokio::prelude::*;
    use interprocess::local_socket::GenericFilePath;
    let name = path.to_fs_name::<GenericFilePath>()?;
    let stream = interprocess::local_socket::tokio::Stream::connect(name).await?;
    // The only kind of local socket on Unix. A refusal only costs speed.
    let interprocess::local_socket::tokio::Stream::UdSocket(s) = &stream;
    let _ = socket2::SockRef::from(s).set_send_buffer_size(SEND_BUFFER);
    // Registered for reads only: the daemon reading a request does not wake this client.
    peerix_ipc_socket::QuietStream::from_local_socket(stream)
}

#[cfg(windows)]
async fn open_local_socket(
    path: &Path,
) -> std::io::Result<interprocess::local_socket::tokio::Stream> {
    use interprocess::local_socket::tokio::prelude::*;
    use interprocess::local_socket::{GenericFilePath, GenericNamespaced};
    let s = path.to_string_lossy();
    let name = if s.starts_with(r"\\.\pipe\") || s.starts_with(r"\\?\pipe\") {
        path.to_fs_name::<GenericFilePath>()?
    } else {
        s.into_owned().to_ns_name::<GenericNamespaced>()?
    };
    interprocess::local_socket::tokio::Stream::connect(name).await
}

#[cfg(test)]
mod tests;
