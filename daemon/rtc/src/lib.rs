//! `peerix-rtc`: one WebRTC peer connection as Peerix needs it.
//!
//! A thin, tuned wrapper over `webrtc` 0.21.1:
//! * the negotiated control channel (stream id 0, label `""`, ordered, reliable) is created
//!   together with the connection, before any SDP (wire spec §6.1, §12.12);
//! * local candidates carry the real ICE ufrag and `sdpMid` so Peerix does not queue them
//!   forever (wire spec §5.6, §12.10);
//! * sockets get large kernel buffers and the ICE/SCTP timers are tuned for fast setup;
//! * every event is forwarded into one `tokio::sync::mpsc` channel, so callers (an actix
//!   actor) never run code on the connection's driver task.
//!
//! All futures are `Send`; the crate works inside `actix_rt::System` (current-thread tokio
//! plus `LocalSet`) and on any tokio runtime. The connection drivers run on webrtc's
//! dedicated reactor threads (`webrtc-rx*`, see [`RtcConfig::reactor_threads`]), so a busy
//! actix thread does not delay ICE, DTLS or SCTP, nor the draining of the UDP sockets; or,
//! with [`RtcConfig::inline_drivers`], on the thread that creates the connection.
//!
//! An idle connection costs little: long driver timers are aligned to a host-wide grid so
//! idle connections wake together, UDP GRO is off (small receive buffers), and the default
//! maximum message size is 64 KiB (see [`RtcConfig::max_message_size`]).
//!
//! Throughput needs a large UDP receive buffer: the kernel caps `SO_RCVBUF` at
//! `net.core.rmem_max` (often 208 KiB) unless the process has CAP_NET_ADMIN, in which case
//! the cap is bypassed. With a small buffer the SCTP window and the advertised maximum
//! message size are lowered to what the buffer can absorb (a warning is logged once).

#![warn(missing_docs)]

mod channel;
mod codecs;
mod deliver;
mod ice_watch;
#[cfg(test)]
mod idle_sim;
mod local_media;
pub mod loopback;
mod media;
mod mux_route;
mod peer;
mod reactor;
mod rewrite;
mod runtime;
mod senders;
mod stats;
mod timer_grid;
mod turn_frame;
mod turn_stream;
mod turn_tls;
mod udp_mux;
pub use runtime::{udp_send_counts, UdpSendCounts};
pub use stats::PeerStats;
pub use turn_stream::TurnOutcome;
pub use turn_tls::{configure_tls as configure_turn_tls, TurnTlsError};
pub use udp_mux::{mux_recv_counts, MuxRecvCounts};

use serde::{Deserialize, Serialize};

pub use channel::{ChannelEvent, ChannelInit, RtcChannel};
pub use deliver::Frame;
pub use local_media::{
    spawn_rtp_ingest, LocalSource, SourceCodec, SourceReport, SourceStats, UnknownCodec,
};
pub use media::{ForwardError, ForwardStats, MediaKind, RemoteTrackInfo};
pub use peer::{EventSink, RtcPeer};

/// Starts the threads that drive the connections now instead of at the first connection
/// (`threads` as [`RtcConfig::reactor_threads`]; the first call of this or of
/// [`RtcPeer::new`] in the process fixes the count).
///
/// Why: each thread is created on a boundary of the timer grid (`reactor.rs`), which can
/// take up to 64 ms, and the first connection would otherwise wait for it on the caller's
/// thread, an actix thread in the daemon. Blocks until the threads run.
pub fn start_reactors(threads: usize) {
    reactor::start_all(reactor::pool_size(threads));
}

/// Like [`start_reactors`], but returns at once: the threads wait for their grid boundary
/// while the caller goes on (a daemon builds its own aligned runtime meanwhile, so that the
/// two waits overlap instead of adding up). A later [`start_reactors`] or connection waits
/// for the threads still starting.
pub fn start_reactors_in_background(threads: usize) {
    let size = reactor::pool_size(threads);
    let started = std::thread::Builder::new()
        .name("webrtc-start".into())
        .spawn(move || reactor::start_all(size));
    if let Err(err) = started {
        // Not fatal: the threads then start at `start_reactors` or the first connection.
        tracing::warn!("cannot start the WebRTC reactor threads early: {err}");
    }
}

/// A current-thread tokio runtime (I/O and time enabled) created on a boundary of the timer
/// grid like the reactor threads' (see `reactor.rs`), for the thread that creates the
/// connections (the daemon's actor thread). With [`RtcConfig::inline_drivers`] the drivers
/// run on it, and an unaligned timer wheel would wake an idle daemon twice per grid sleep.
/// Takes up to 4 × 64 ms; falls back to an unaligned runtime on a busy machine.
pub fn aligned_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    match reactor::aligned_runtime() {
        Some(rt) => Ok(rt),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
}

/// Benchmarks only: every connection's driver sleeps exactly as webrtc's stock `TokioRuntime`
/// would (no 384 ms grid, no 1 ms handshake expedite) from now on in this process. The bench's
/// "stock timers" raw baseline on lossy paths uses it to show what the grid costs; the daemon
/// never calls it.
pub fn use_stock_timers() {
    runtime::STOCK_TIMERS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Settings for every connection created with [`RtcPeer::new`].
#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// STUN/TURN servers. Only `stun:` and `turn:` over UDP are used by the stack; prefer IP
    /// literals, because host names are resolved on the connection's driver task.
    pub ice_servers: Vec<IceServer>,
    /// Only relay candidates are gathered and used (`iceTransportPolicy: "relay"`).
    pub relay_only: bool,
    /// Resolve remote `<uuid>.local` (mDNS) host candidates, as browsers send them.
    pub mdns: bool,
    /// Requested `SO_RCVBUF`/`SO_SNDBUF` for every UDP socket (capped by the kernel's
    /// `net.core.rmem_max`/`wmem_max`); 0 keeps the kernel default.
    pub udp_recv_buffer: usize,
    /// Largest message we accept on any data channel, advertised as `a=max-message-size`;
    /// clamped to 16 KiB..=256 KiB (the spec's floor and the stack's cap). It is lowered (with
    /// a warning) when the socket receive buffer is too small to hold that much safely (see
    /// the crate docs on `net.core.rmem_max`).
    ///
    /// The default is 64 KiB, not the 256 KiB browsers advertise, because the stack keeps a
    /// zero-filled receive buffer of the negotiated size in every connection: 256 KiB of
    /// resident memory per peer. Peerix frames are under 16 KiB (wire spec §8) and control
    /// messages (SDP) a few KiB, so 64 KiB leaves 4× headroom; a browser reads the value
    /// from our SDP and never sends more.
    pub max_message_size: usize,
    /// Threads that drive the connections (webrtc's dedicated reactors, `webrtc-rx*`); 0 picks
    /// half the cores, at least 1 and at most 4. The first connection of the process fixes it.
    ///
    /// Why not more: every reactor thread wakes on its own for its connections' timers, and
    /// an idle daemon's CPU is almost all such wake-ups (see `runtime.rs`). One thread per
    /// two cores leaves the other core to the daemon's actor thread during a transfer.
    pub reactor_threads: usize,
    /// Drive each connection on the thread that creates it (the daemon's actor thread)
    /// instead of a reactor thread; `reactor_threads` then starts none.
    ///
    /// What it buys: a message no longer crosses from the actor thread to a reactor thread to
    /// be sent, nor back on arrival: per 16 B round trip each daemon wakes 3.5 times instead
    /// of ~10 and spends 168 µs of CPU instead of ~300 µs, and the RTT falls by ~20 %. What
    /// it costs: SCTP/DTLS share the actor thread's core, so bulk transfers are slower
    /// (32 MiB: 60–73 vs 106–118 MB/s in the same interleaved runs on 2 busy cores), and
    /// ICE/SCTP timers wait while an actor handler runs (all are non-blocking; the shortest
    /// timers are the 20 ms ICE check and the 200 ms delayed SACK). BENCHMARKS.md, "Issue
    /// 14, part 2". Off by default.
    pub inline_drivers: bool,
    /// Messages of one data channel read from SCTP but not yet taken from its event stream.
    /// When the queue is full the channel is not read, so the stack stops reading the stream
    /// and the remote's SCTP window closes: back-pressure instead of memory. At least 1.
    pub channel_event_queue: usize,
    /// Control-channel messages read but not yet consumed (each [`ControlData`] holds a slot
    /// until it is dropped). When all are taken the control channel is not read. At least 1.
    pub control_event_queue: usize,
    /// Single-port mode: `Some(port)` makes every connection of the process share one UDP
    /// socket per local address on `port` (0: a free port, chosen once), demultiplexed by
    /// ICE ufrag and remote address (`udp_mux.rs`). The first connection of the process
    /// fixes the port. `None` (default): one socket per connection.
    pub udp_port: Option<u16>,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            relay_only: false,
            mdns: true,
            udp_recv_buffer: 4 * 1024 * 1024,
            max_message_size: 64 * 1024,
            reactor_threads: 0,
            inline_drivers: false,
            channel_event_queue: 64,
            control_event_queue: 64,
            udp_port: None,
        }
    }
}

/// One STUN or TURN server, like the browser's `RTCIceServer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:host:port` / `turn:host:port` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default)]
    pub credential: Option<String>,
}

/// An SDP offer or answer in the browser's JSON shape (`{"type":"offer","sdp":"…"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// `"offer"`, `"answer"` (also accepted: `"pranswer"`, `"rollback"`).
    #[serde(rename = "type")]
    pub r#type: String,
    /// The SDP text.
    pub sdp: String,
}

/// An ICE candidate in the browser's JSON shape (`RTCIceCandidateInit`, camelCase).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidateInit {
    /// `candidate:…` attribute text; empty means end-of-candidates and is ignored.
    #[serde(default)]
    pub candidate: String,
    /// The `a=mid` of the media section (always `"0"` for ours).
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// Index of the media section (always 0 for ours).
    #[serde(default)]
    pub sdp_m_line_index: Option<u16>,
    /// ICE ufrag of the sender's description; Peerix drops candidates without it.
    #[serde(default)]
    pub username_fragment: Option<String>,
}

/// `iceConnectionState`, which Peerix derives its connection state from (wire spec §5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IceState {
    /// Gathering or waiting for the remote side.
    New,
    /// Connectivity checks running.
    Checking,
    /// A candidate pair works.
    Connected,
    /// Checks finished (the stack rarely reports this).
    Completed,
    /// Consent lost; may recover.
    Disconnected,
    /// Gave up; Peerix closes the connection.
    Failed,
    /// The connection was closed.
    Closed,
}

/// Signaling state, as far as Peerix's perfect negotiation needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalingState {
    /// No negotiation in progress.
    Stable,
    /// Our offer is applied, waiting for the answer.
    HaveLocalOffer,
    /// The remote offer is applied, our answer is due.
    HaveRemoteOffer,
    /// The connection is closed.
    Closed,
    /// Provisional answers, which Peerix never uses.
    Other,
}

/// Everything a connection reports, in order, through the channel given to [`RtcPeer::new`].
#[derive(Debug)]
pub enum RtcEvent {
    /// A local candidate to send to the remote peer; carries our ufrag, mid `"0"`, index 0.
    LocalCandidate(IceCandidateInit),
    /// ICE connection state changed.
    IceState(IceState),
    /// Every local candidate has been reported (there is no null candidate event).
    GatheringComplete,
    /// Local gathering started: the first local description, or one with new ICE credentials
    /// (an ICE restart).
    GatheringStarted,
    /// What became of one of the connection's TURN servers (`url` as the stack names it).
    TurnServer {
        /// The server's URL.
        url: String,
        /// What happened.
        outcome: TurnOutcome,
    },
    /// The stack wants an offer (fires on both sides when the control channel is created).
    NegotiationNeeded,
    /// The control channel (stream 0) is open.
    ControlOpen,
    /// A binary message on the control channel (text messages are dropped, wire spec §6.1).
    /// It holds one of the connection's `control_event_queue` slots until dropped.
    ControlMessage(ControlData),
    /// The control channel closed (remote reset it or the association is gone): the remote
    /// left (wire spec §5.8).
    ControlClosed,
    /// A data channel the remote opened in-band (DCEP). Its `Open` is the first event on it.
    RemoteChannel(RtcChannel),
    /// A remote media track started (its first RTP packet arrived).
    Track(RemoteTrackInfo),
    /// A remote media track ended (by its track id).
    TrackEnded(String),
    /// A remote track's reassembled frame (`RtcPeer::deliver`); holds one of the connection's
    /// frame slots until dropped.
    TrackFrame(Frame),
    /// Nothing receives a track's forward (reported once per `forward`; packets still go).
    ForwardRefused {
        /// The track id.
        track: String,
        /// What to tell the client.
        error: String,
    },
    /// The connection is gone: closed locally or its driver stopped. Always the last event.
    Closed,
}

/// The bytes of one control-channel message, holding a slot of the connection's control
/// queue ([`RtcConfig::control_event_queue`]) until dropped: a remote that floods the control
/// channel fills the slots, and the channel is then not read until the owner catches up.
#[derive(Debug)]
pub struct ControlData {
    data: bytes::Bytes,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl ControlData {
    pub(crate) fn new(data: bytes::Bytes, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        Self { data, _slot: slot }
    }

    /// The message bytes (the slot is freed when `self` is dropped).
    pub fn into_bytes(self) -> bytes::Bytes {
        self.data
    }
}

impl std::ops::Deref for ControlData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    /// The WebRTC stack refused (bad SDP or candidate, wrong signaling state, channel not
    /// open, message too large, …).
    #[error("webrtc: {0}")]
    Webrtc(#[from] webrtc::error::Error),
    /// A session description with a `type` other than offer/answer/pranswer/rollback.
    #[error("unsupported session description type {0:?}")]
    InvalidSdpType(String),
    /// Channel options the stack cannot honour.
    #[error("invalid channel options: {0}")]
    InvalidChannelInit(&'static str),
    /// A remote track could not be forwarded.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// Frames of this codec cannot be reassembled here.
    #[error("no depacketizer for {0}: deliver works for VP8, VP9, AV1, H.264 and Opus")]
    NoDepacketizer(String),
    /// No sender of ours carries this track id.
    #[error("no local track {0} is sent on this connection")]
    NoSuchSender(String),
    /// Single-port mode could not set up its shared socket (`webrtc.udp_port`).
    #[error("webrtc.udp_port: {0}")]
    UdpPort(std::io::Error),
}
