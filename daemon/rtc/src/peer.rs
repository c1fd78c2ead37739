//! One peer connection plus its negotiated control channel.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use rtc::data_channel::RTCDataChannelInit;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Slot;
use rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize;
use rtc::peer_connection::configuration::RTCOfferOptions;
use tokio::sync::mpsc::UnboundedSender;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceConnectionState, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};
use webrtc::runtime::Runtime;

use crate::channel::{to_bytes_mut, RtcChannel};
use crate::media::{spawn_reader, ForwardStats, TrackReport, Tracks};
use crate::runtime::TunedRuntime;
use crate::senders::{KeyframeRequests, Senders};
use crate::{
    ChannelInit, IceCandidateInit, IceState, RtcConfig, RtcError, RtcEvent, SessionDescription,
    SignalingState,
};

/// Largest message size the stack can advertise (`SctpMaxMessageSize::MAX_MESSAGE_SIZE`).
const STACK_MAX_MESSAGE_SIZE: usize = 256 * 1024;
/// Smallest `a=max-message-size` a Peerix peer must accept (wire spec §12): one frame.
const MIN_MESSAGE_SIZE: usize = 16 * 1024;
/// Bytes of (kernel-reported) socket receive buffer per byte of SCTP receive window.
///
/// Why: the window (a_rwnd) is how much the remote may send before we acknowledge, so it
/// is what can land in the socket at once while the driver is busy. Each ~1.2 KB datagram
/// costs 2–4× its size in kernel accounting (skb truesize; loopback is the worst), and one
/// overrun stalls SCTP for a whole 1 s RTO: measured on a 416 KiB buffer, a 96 KiB window
/// ran at 90+ MB/s while 128 KiB already stalled at ~4 MB/s.
const RCVBUF_PER_RWND: usize = 4;
/// Window bounds. The stack needs the window to hold one whole message (a smaller one
/// stalls a maximum-size message forever), so the advertised maximum message size is
/// lowered to the window when the buffer is small. The 2 MiB top covers a 100 ms path at
/// ~20 MB/s without letting one connection pin much memory.
const MIN_SCTP_RWND: usize = 64 * 1024;
const MAX_SCTP_RWND: usize = 2 * 1024 * 1024;
/// Window used when the socket buffer cannot be measured (the stack's default).
const DEFAULT_SCTP_RWND: usize = 1024 * 1024;
/// Send buffer for each UDP socket; bursts of DATA chunks leave in GSO batches.
const UDP_SEND_BUFFER: usize = 1024 * 1024;

/// ICE check tick while connecting. The controlling agent nominates a pair that has
/// succeeded only on its next tick (or when the remote's next check arrives), so with the
/// default 200 ms the nomination, and with it `connected`, often slipped by a full tick.
/// Only pairs still in progress are pinged each tick; succeeded pairs are not.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
/// Checks per pair before it is declared failed: 75 × 20 ms keeps about the default
/// budget (7 × 200 ms) for slow paths.
const ICE_MAX_BINDING_REQUESTS: u16 = 75;

/// How long after ICE starts a validated pair with a server-reflexive (resp. relay) candidate
/// may be selected. The agent nominates the best valid pair on its first check tick past the
/// wait, so a pair that validated earlier is selected at most this plus one tick
/// ([`ICE_CHECK_INTERVAL`]) after it validated, and a better pair validating within the
/// window is preferred. Relay waits a little longer: a direct path that validates together
/// with it is worth a few tens of milliseconds.
const SRFLX_MIN_WAIT: Duration = Duration::from_millis(50);
const RELAY_MIN_WAIT: Duration = Duration::from_millis(80);

/// How long driver timers are expedited after ICE connects: enough for DTLS and SCTP
/// handshakes on a slow path; ended early when the control channel opens.
const EXPEDITE_WINDOW: Duration = Duration::from_secs(1);

const SIG_STABLE: u8 = 0;
const SIG_LOCAL_OFFER: u8 = 1;
const SIG_REMOTE_OFFER: u8 = 2;
const SIG_CLOSED: u8 = 3;
const SIG_OTHER: u8 = 4;

/// A peer connection to one remote Peerix peer. Cheap to clone (one `Arc`).
///
/// Dropping the last clone without [`close`](Self::close) closes the connection in the
/// background (when inside a tokio runtime); call `close` to control the order.
#[derive(Clone)]
pub struct RtcPeer {
    inner: Arc<PeerInner>,
}

impl RtcPeer {
    /// Runs `f` in the span that was current when the connection was created (the daemon's
    /// `peer{room, peer}`): what the stack logs while applying descriptions and candidates
    /// then says which connection it is about.
    fn in_span<F: std::future::Future>(&self, f: F) -> tracing::instrument::Instrumented<F> {
        tracing::Instrument::instrument(f, self.inner.span.clone())
    }
}

/// Where a connection's events go, in order ([`RtcPeer::new`]); called on the connection's
/// driver thread. Dropped when the connection is gone, after its last event.
///
/// A tokio channel is one; an owner that has a mailbox already (peerixd's `PeerActor`) can
/// post into it instead: a tokio unbounded channel allocates a block of 32 events (~3.3 KB
/// with its state) when it is made and keeps it for the connection's life, though it is
/// empty nearly all of that time.
pub trait EventSink: Send + Sync + 'static {
    /// One event. An owner that is gone discards it.
    fn emit(&self, event: RtcEvent);
}

impl EventSink for UnboundedSender<RtcEvent> {
    fn emit(&self, event: RtcEvent) {
        // A dropped receiver means the owner is gone; nothing to do but discard.
        let _ = self.send(event);
    }
}

struct PeerInner {
    pc: Arc<dyn PeerConnection>,
    control: Arc<dyn DataChannel>,
    shared: Arc<Shared>,
    /// Our media senders. Here and not in [`Shared`]: a transceiver holds the connection,
    /// which holds the handler, which holds `Shared` (no `Arc` cycle).
    senders: Senders,
    /// The span current at creation (see [`RtcPeer::in_span`]).
    span: tracing::Span,
}

/// State shared with the event handler. Holds no strong reference to the connection or its
/// channels, so the handler (owned by the connection) forms no `Arc` cycle (notes §9).
struct Shared {
    events: Box<dyn EventSink>,
    /// Our ICE ufrag and first mid, read from the local SDP: the stack's `to_json` leaves
    /// them null/"" and Peerix drops such candidates (§5.6).
    local_ufrag: Mutex<Option<String>>,
    local_mid: Mutex<Option<String>>,
    /// Tracked here because the stack has no synchronous getter; only our own calls change it.
    signaling: AtomicU8,
    closing: AtomicBool,
    control_closed_sent: AtomicBool,
    closed_sent: AtomicBool,
    /// Used only to wake the driver (see [`Shared::wake_driver`]).
    control: OnceLock<Weak<dyn DataChannel>>,
    /// This connection's runtime, to expedite the driver's timers during handshakes.
    runtime: OnceLock<Arc<TunedRuntime>>,
    /// Capacity of each data channel's event queue (`RtcConfig::channel_event_queue`).
    channel_queue: usize,
    /// Slots for control messages not yet consumed (`RtcConfig::control_event_queue`).
    control_slots: Arc<tokio::sync::Semaphore>,
    /// The remote tracks being received.
    tracks: Arc<Tracks>,
    /// Slots of reassembled frames in flight to the owner, and frames dropped for want of one.
    frame_slots: Arc<tokio::sync::Semaphore>,
    frames_dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Reports ICE failure once every candidate pair failed (`ice_watch.rs`).
    ice_watch: Arc<crate::ice_watch::IceWatch>,
}

impl Shared {
    fn emit(&self, event: RtcEvent) {
        self.events.emit(event);
    }

    fn emit_control_closed(&self) {
        if !self.control_closed_sent.swap(true, Ordering::AcqRel) {
            self.emit(RtcEvent::ControlClosed);
        }
    }

    fn emit_closed(&self) {
        self.emit_control_closed();
        if !self.closed_sent.swap(true, Ordering::AcqRel) {
            self.signaling.store(SIG_CLOSED, Ordering::Release);
            self.emit(RtcEvent::Closed);
        }
    }

    fn expedite(&self, window: Duration) {
        if let Some(rt) = self.runtime.get() {
            rt.expedite(window);
        }
    }

    fn end_expedite(&self) {
        if let Some(rt) = self.runtime.get() {
            rt.end_expedite();
        }
    }

    fn lock<'a>(m: &'a Mutex<Option<String>>) -> std::sync::MutexGuard<'a, Option<String>> {
        match m.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Makes the connection's driver run one more loop iteration now.
    ///
    /// Why: the driver flushes the core's outgoing packets once per iteration, *before* it
    /// pumps events, and it is not woken by `add_ice_candidate`. Packets produced while events
    /// are pumped (the DTLS ClientHello after ICE connects, the SCTP INIT after DTLS
    /// completes) or checks made possible by a new remote candidate therefore wait for the
    /// next timer, which is what made setup advance in ~200 ms steps. Every data-channel
    /// setter ends in the driver's coalescing write wake; setting the high threshold to its
    /// existing value (`u32::MAX`, never used by us) is a no-op apart from that wake.
    async fn wake_driver(&self) {
        if let Some(dc) = self.control.get().and_then(Weak::upgrade) {
            let _ = dc.set_buffered_amount_high_threshold(u32::MAX).await;
        }
    }
}

/// Forwards connection events into the owner's channel; does no other work on the driver.
struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_negotiation_needed(&self) {
        self.shared.emit(RtcEvent::NegotiationNeeded);
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let init = match event.candidate.to_json() {
            Ok(init) => init,
            Err(err) => {
                tracing::warn!("dropping unserializable local candidate: {err}");
                return;
            }
        };
        let ufrag = Shared::lock(&self.shared.local_ufrag).clone();
        let mid = Shared::lock(&self.shared.local_mid)
            .clone()
            .unwrap_or_else(|| "0".to_owned());
        self.shared.emit(RtcEvent::LocalCandidate(IceCandidateInit {
            candidate: init.candidate,
            sdp_mid: Some(mid),
            sdp_m_line_index: Some(0),
            username_fragment: ufrag,
        }));
        // Which TURN server relays (for the owner's `ICE_SERVER_ERROR` bookkeeping); the
        // candidate itself does not keep the URL, the event does.
        if event.candidate.typ == rtc::peer_connection::transport::RTCIceCandidateType::Relay
            && !event.url.is_empty()
        {
            self.shared.emit(RtcEvent::TurnServer {
                url: event.url,
                outcome: crate::TurnOutcome::Relayed,
            });
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.shared.ice_watch.gathered();
            self.shared.emit(RtcEvent::GatheringComplete);
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        let state = match state {
            RTCIceConnectionState::New => IceState::New,
            RTCIceConnectionState::Checking => IceState::Checking,
            RTCIceConnectionState::Connected => IceState::Connected,
            RTCIceConnectionState::Completed => IceState::Completed,
            RTCIceConnectionState::Disconnected => IceState::Disconnected,
            RTCIceConnectionState::Failed => IceState::Failed,
            RTCIceConnectionState::Closed => IceState::Closed,
            _ => return,
        };
        tracing::trace!("ice state {state:?}");
        if matches!(
            state,
            IceState::Connected | IceState::Completed | IceState::Failed | IceState::Closed
        ) {
            self.shared.ice_watch.settled();
        }
        if state == IceState::Failed && self.shared.ice_watch.reported() {
            return;
        }
        self.shared.emit(RtcEvent::IceState(state));
        if state == IceState::Connected {
            // The DTLS client's ClientHello is queued while this event is pumped but only
            // released by the core's handle_timeout; make the driver's next sleep short.
            self.shared.expedite(EXPEDITE_WINDOW);
            self.shared.wake_driver().await;
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Read on a task of its own: handlers run on the connection's driver.
        let shared = Arc::clone(&self.shared);
        spawn_reader(Arc::clone(&self.shared.tracks), track, move |r| {
            shared.emit(match r {
                TrackReport::Started(info) => RtcEvent::Track(info),
                TrackReport::Refused(track, error) => RtcEvent::ForwardRefused { track, error },
                TrackReport::Ended(track) => RtcEvent::TrackEnded(track),
                TrackReport::Frame(f) => RtcEvent::TrackFrame(f),
            })
        });
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if matches!(
            state,
            RTCPeerConnectionState::Connecting | RTCPeerConnectionState::Connected
        ) {
            // DTLS completion queues the SCTP INIT while events are pumped; flush it now.
            self.shared.wake_driver().await;
        }
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        // Reading label/options takes the core lock; do it off the driver task.
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let label = data_channel.label().await.unwrap_or_default();
            let ordered = data_channel.ordered().await.unwrap_or(true);
            let protocol = data_channel.protocol().await.unwrap_or_default();
            let channel =
                RtcChannel::start(data_channel, label, ordered, protocol, shared.channel_queue);
            shared.emit(RtcEvent::RemoteChannel(channel));
        });
    }
}

/// First value of `a=<attr>:` in an SDP, which is what Peerix compares (§5.2).
fn sdp_attr(sdp: &str, attr: &str) -> Option<String> {
    sdp.lines().find_map(|line| {
        line.trim()
            .strip_prefix("a=")
            .and_then(|rest| rest.strip_prefix(attr))
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    })
}

fn to_public(desc: &RTCSessionDescription) -> SessionDescription {
    SessionDescription {
        r#type: desc.sdp_type.to_string(),
        sdp: desc.sdp.clone(),
    }
}

/// Threads for the connection drivers (process-wide; the first value set wins).
///
/// Why a pool at all: on the ambient runtime the drivers share the actix thread, so any
/// slow actor message delays UDP draining and the ICE/DTLS/SCTP timers; at 100 MB/s a 20 ms
/// stall is 2 MB, more than a socket buffer holds, and every overrun costs a 1 s SCTP RTO.
/// Two threads at most: the machines we target have few cores and the daemon's own work
/// (crypto, IPC) needs one.
/// SCTP receive window and advertised maximum message size for this process's sockets.
fn receive_limits(cfg: &RtcConfig) -> (u32, u32) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let effective = crate::runtime::probe_recv_buffer(cfg.udp_recv_buffer);
    let rwnd = if effective == 0 {
        DEFAULT_SCTP_RWND
    } else {
        (effective / RCVBUF_PER_RWND).clamp(MIN_SCTP_RWND, MAX_SCTP_RWND)
    };
    let wanted = cfg
        .max_message_size
        .clamp(MIN_MESSAGE_SIZE, STACK_MAX_MESSAGE_SIZE);
    let max_message = wanted.min(rwnd);
    if max_message < wanted && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "UDP receive buffer is only {effective} bytes (net.core.rmem_max); advertising a \
             {max_message}-byte max message size instead of {wanted}. Raise \
             net.core.rmem_max to at least 4194304 or run with CAP_NET_ADMIN for full size \
             and throughput"
        );
    }
    (
        u32::try_from(rwnd).unwrap_or(u32::MAX),
        u32::try_from(max_message).unwrap_or(u32::MAX),
    )
}

async fn build_pc(
    cfg: &RtcConfig,
    mdns: bool,
    shared: &Arc<Shared>,
) -> Result<Arc<dyn PeerConnection>, RtcError> {
    let ice_servers = cfg
        .ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect();
    let mut configuration = RTCConfigurationBuilder::default().with_ice_servers(ice_servers);
    if cfg.relay_only {
        configuration = configuration.with_ice_transport_policy(RTCIceTransportPolicy::Relay);
    }
    let (rwnd, max_message) = receive_limits(cfg);
    let (keepalive_interval, keepalive_anchor) = crate::timer_grid::keepalive_settings();
    let setting_engine = SettingEngineBuilder::new()
        .with_multicast_dns_mode(if mdns {
            MulticastDnsMode::QueryOnly
        } else {
            MulticastDnsMode::Disabled
        })
        // Browsers without camera permission only send mDNS candidates; the first check
        // from them arrives as prflx, which the default 1 s wait would hold back.
        .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS))
        // The agent holds a validated srflx pair until 0.5 s and a relay pair until 2 s after
        // ICE started, in case a better one validates; these shorter windows still let a
        // host or srflx pair that validates alongside win (see the constants).
        .with_srflx_acceptance_min_wait(Some(SRFLX_MIN_WAIT))
        .with_relay_acceptance_min_wait(Some(RELAY_MIN_WAIT))
        .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(max_message))
        .with_sctp_max_receive_buffer_size(rwnd)
        // An ICE restart (after a NAT rebinding or an address change) rebinds the sockets and
        // gathers again: the old host and srflx candidates may name addresses that are gone.
        .with_discard_local_candidates_during_ice_restart(true)
        // Keepalives of every connection on the host in the same tick, so their answers wake
        // the reactor once for all (vendor patch 18, `runtime::KEEPALIVE_SLOT`); disconnected
        // and failed timeouts stay the stack's 5 s and 25 s.
        .with_ice_timeouts(None, None, keepalive_interval)
        .with_ice_keepalive_anchor(keepalive_anchor)
        .build();
    let mut tuned = TunedRuntime::new(cfg.udp_recv_buffer, UDP_SEND_BUFFER);
    // Single-port mode (`udp_mux.rs`): the connection's sockets become views of the shared one.
    if let Some(port) = cfg.udp_port {
        let mux = crate::udp_mux::UdpMux::global(port, cfg.udp_recv_buffer, UDP_SEND_BUFFER)
            .map_err(RtcError::UdpPort)?;
        tuned = tuned.with_mux(mux.connect());
    }
    let tuned = Arc::new(tuned);
    // TURN servers' fates reach the owner as events (`turn_stream.rs`, `TurnOutcome`).
    let weak = Arc::downgrade(shared);
    tuned.turn_streams().set_sink(Box::new(move |url, outcome| {
        if let Some(shared) = weak.upgrade() {
            if !shared.closed_sent.load(Ordering::Acquire) {
                shared.emit(RtcEvent::TurnServer {
                    url: url.to_owned(),
                    outcome,
                });
            }
        }
    }));
    // A retry after an mDNS failure builds a second runtime; the first one set wins, so
    // remember the runtime only once the build succeeded.
    let runtime: Arc<dyn Runtime> = tuned.clone();
    // Every codec browsers send (Opus, VP8, VP9, H.264, AV1, …) and the interceptors that
    // answer and send NACKs and RTCP reports: a remote share is then received, not refused.
    // The codec tables are shared by all connections (`codecs.rs`).
    let (media, interceptors) = crate::codecs::engine_and_interceptors()?;
    // Our senders' keyframe requests reach their sources (see `KeyframeRequests`); slot
    // 14 000 is past every default interceptor, at the application end of the chain.
    let interceptors = interceptors.with(Slot::from(14_000), KeyframeRequests::default());
    let pc = PeerConnectionBuilder::new()
        .with_configuration(configuration.build())
        .with_media_engine(media)
        .with_interceptor_registry(interceptors)
        .with_setting_engine(setting_engine)
        .with_runtime(runtime)
        .with_handler(Arc::new(Handler {
            shared: Arc::clone(shared),
        }))
        .with_udp_addrs(vec!["0.0.0.0:0"])
        // 0 = no pool: the driver is spawned on the caller's runtime (`inline_drivers`).
        .with_dedicated_reactor_pool_size(if cfg.inline_drivers {
            0
        } else {
            crate::reactor::pool_size(cfg.reactor_threads)
        })
        .build()
        .await?;
    let _ = shared.runtime.set(tuned);
    Ok(Arc::new(pc))
}

impl RtcPeer {
    /// Creates the connection and, immediately, the negotiated control channel (id 0)
    /// before any SDP (spec §12.12). Events start flowing into `events` at once
    /// (`NegotiationNeeded` first).
    pub async fn new(cfg: &RtcConfig, events: impl EventSink) -> Result<Self, RtcError> {
        let shared = Arc::new(Shared {
            events: Box::new(events),
            local_ufrag: Mutex::new(None),
            local_mid: Mutex::new(None),
            signaling: AtomicU8::new(SIG_STABLE),
            closing: AtomicBool::new(false),
            control_closed_sent: AtomicBool::new(false),
            closed_sent: AtomicBool::new(false),
            control: OnceLock::new(),
            runtime: OnceLock::new(),
            channel_queue: cfg.channel_event_queue.max(1),
            control_slots: Arc::new(tokio::sync::Semaphore::new(cfg.control_event_queue.max(1))),
            tracks: Arc::default(),
            frame_slots: Arc::new(tokio::sync::Semaphore::new(crate::deliver::FRAME_SLOTS)),
            frames_dropped: Arc::default(),
            ice_watch: Arc::default(),
        });
        let pc = match build_pc(cfg, cfg.mdns, &shared).await {
            Ok(pc) => pc,
            // Joining the mDNS multicast group fails where there is no multicast route (e.g.
            // a namespace with only `lo`); resolving .local candidates is optional.
            Err(err) if cfg.mdns => {
                tracing::warn!("peer connection with mDNS failed ({err}); retrying without");
                build_pc(cfg, false, &shared).await?
            }
            Err(err) => return Err(err),
        };
        let control = match pc
            .create_data_channel(
                "",
                Some(RTCDataChannelInit {
                    ordered: true,
                    max_packet_life_time: None,
                    max_retransmits: None,
                    protocol: String::new(),
                    negotiated: Some(0),
                }),
            )
            .await
        {
            Ok(dc) => dc,
            Err(err) => {
                let _ = pc.close().await;
                return Err(err.into());
            }
        };
        let _ = shared.control.set(Arc::downgrade(&control));
        let on_fail = Arc::clone(&shared);
        shared.ice_watch.spawn(Arc::downgrade(&pc), move || {
            on_fail.emit(RtcEvent::IceState(IceState::Failed))
        });
        spawn_control_reader(Arc::clone(&control), Arc::clone(&shared));
        Ok(Self {
            inner: Arc::new(PeerInner {
                pc,
                control,
                shared,
                senders: Senders::default(),
                span: tracing::Span::current(),
            }),
        })
    }

    /// Creates an offer and sets it as the local description.
    pub async fn create_offer(&self) -> Result<SessionDescription, RtcError> {
        self.offer(None).await
    }

    /// Creates an offer with new ICE credentials (an ICE restart) and sets it as the local
    /// description: the agent drops its pairs, rebinds its sockets and gathers again (so a new
    /// local address is found), while DTLS, SCTP and the data channels carry on over the new
    /// pair once it is selected. The remote restarts when it applies the offer.
    pub async fn create_restart_offer(&self) -> Result<SessionDescription, RtcError> {
        self.offer(Some(RTCOfferOptions { ice_restart: true }))
            .await
    }

    async fn offer(
        &self,
        options: Option<RTCOfferOptions>,
    ) -> Result<SessionDescription, RtcError> {
        self.in_span(async {
            let offer = self.inner.pc.create_offer(options).await?;
            self.remember_local(&offer.sdp);
            self.inner.pc.set_local_description(offer.clone()).await?;
            self.set_signaling(SIG_LOCAL_OFFER);
            Ok(to_public(&offer))
        })
        .await
    }

    /// Creates an answer to the applied remote offer and sets it as the local description.
    pub async fn create_answer(&self) -> Result<SessionDescription, RtcError> {
        self.in_span(async {
            let answer = self.inner.pc.create_answer(None).await?;
            self.remember_local(&answer.sdp);
            self.inner.pc.set_local_description(answer.clone()).await?;
            self.set_signaling(SIG_STABLE);
            Ok(to_public(&answer))
        })
        .await
    }

    /// Applies a remote offer or answer (or `pranswer`/`rollback`). Fails on an offer while
    /// our own offer is pending: roll back first if we are the polite side (§6.5).
    pub async fn set_remote_description(&self, d: SessionDescription) -> Result<(), RtcError> {
        self.in_span(async {
            let (desc, next) = match d.r#type.as_str() {
                "offer" => (RTCSessionDescription::offer(d.sdp)?, SIG_REMOTE_OFFER),
                "answer" => (RTCSessionDescription::answer(d.sdp)?, SIG_STABLE),
                "pranswer" => (RTCSessionDescription::pranswer(d.sdp)?, SIG_OTHER),
                "rollback" => (RTCSessionDescription::rollback(None)?, SIG_STABLE),
                _ => return Err(RtcError::InvalidSdpType(d.r#type)),
            };
            self.inner.pc.set_remote_description(desc).await?;
            self.set_signaling(next);
            Ok(())
        })
        .await
    }

    /// Forwards a remote track's RTP, unchanged, to `to` (a local UDP address), or stops
    /// (`None`). A video track's sender is asked for a keyframe at once.
    pub async fn forward(&self, track: &str, to: Option<SocketAddr>) -> Result<(), RtcError> {
        Ok(self.inner.shared.tracks.forward(track, to).await?)
    }

    /// Starts (`Some((mime, clock_rate))` of the track's codec) or stops delivering a remote
    /// track's reassembled frames as [`RtcEvent::TrackFrame`]. A video track's sender is asked
    /// for a keyframe at once.
    pub fn deliver(&self, track: &str, codec: Option<(&str, u32)>) -> Result<(), RtcError> {
        let shared = &self.inner.shared;
        let deliverer = match codec {
            Some((mime, clock_rate)) => Some(
                crate::deliver::Deliverer::new(
                    mime,
                    clock_rate,
                    Arc::clone(&shared.frame_slots),
                    Arc::clone(&shared.frames_dropped),
                )
                .ok_or_else(|| RtcError::NoDepacketizer(mime.to_owned()))?,
            ),
            None => None,
        };
        Ok(shared.tracks.deliver(track, deliverer)?)
    }

    /// Frames dropped because the owner had [`crate::deliver::FRAME_SLOTS`] in flight.
    pub fn frames_dropped(&self) -> u64 {
        self.inner
            .shared
            .frames_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Single-port mode: whether this connection's checks were refused because another live
    /// connection of this process holds the same address pair (both ends are single-port
    /// daemons sharing more than one room). Its owner should make the next connection to this
    /// peer with [`RtcConfig::udp_port`] unset.
    pub fn single_port_collided(&self) -> bool {
        self.inner
            .shared
            .runtime
            .get()
            .is_some_and(|rt| rt.single_port_collided())
    }

    /// Packets received and forwarded for a live remote track.
    pub fn forward_stats(&self, track: &str) -> Option<ForwardStats> {
        self.inner.shared.tracks.get(track).map(|t| t.stats())
    }

    /// The remote description applied last (its SDP names the codecs of the remote tracks).
    pub async fn remote_sdp(&self) -> Option<String> {
        self.inner.pc.remote_description().await.map(|d| d.sdp)
    }

    /// Discards a pending local (or remote) offer, returning to `Stable`.
    pub async fn rollback(&self) -> Result<(), RtcError> {
        self.in_span(async {
            let desc = RTCSessionDescription::rollback(None)?;
            if self.signaling_state() == SignalingState::HaveRemoteOffer {
                self.inner.pc.set_remote_description(desc).await?;
            } else {
                self.inner.pc.set_local_description(desc).await?;
            }
            self.set_signaling(SIG_STABLE);
            Ok(())
        })
        .await
    }

    /// Current signaling state (tracked from our own successful calls).
    pub fn signaling_state(&self) -> SignalingState {
        match self.inner.shared.signaling.load(Ordering::Acquire) {
            SIG_STABLE => SignalingState::Stable,
            SIG_LOCAL_OFFER => SignalingState::HaveLocalOffer,
            SIG_REMOTE_OFFER => SignalingState::HaveRemoteOffer,
            SIG_CLOSED => SignalingState::Closed,
            _ => SignalingState::Other,
        }
    }

    /// The stack's connection, for the read-only figures in `stats.rs`.
    pub(crate) fn connection(&self) -> &Arc<dyn PeerConnection> {
        &self.inner.pc
    }

    /// `tcp` or `tls` when the connection reaches a TURN server over a stream.
    pub(crate) fn turn_stream_transport(&self) -> Option<&'static str> {
        self.inner
            .shared
            .runtime
            .get()
            .and_then(|rt| rt.turn_streams().transport())
    }

    /// Our ICE ufrag, known once the first offer or answer was created.
    pub fn local_ufrag(&self) -> Option<String> {
        Shared::lock(&self.inner.shared.local_ufrag).clone()
    }

    /// Adds a remote candidate. An empty `candidate` (end-of-candidates) is ignored. Fails
    /// before a remote description is set: queue candidates until then (§5.2).
    pub async fn add_ice_candidate(&self, c: IceCandidateInit) -> Result<(), RtcError> {
        self.in_span(async {
            if c.candidate.trim().is_empty() {
                return Ok(());
            }
            self.inner
                .pc
                .add_ice_candidate(webrtc::peer_connection::RTCIceCandidateInit {
                    candidate: c.candidate,
                    sdp_mid: c.sdp_mid,
                    sdp_mline_index: c.sdp_m_line_index,
                    username_fragment: c.username_fragment,
                    url: None,
                })
                .await?;
            // The driver is not woken by a new remote candidate; without this the first check
            // waits for the next ICE tick (up to 200 ms).
            self.inner.shared.wake_driver().await;
            Ok(())
        })
        .await
    }

    /// Sends one binary message on the control channel (fails until `ControlOpen`).
    pub async fn send_control(&self, data: Bytes) -> Result<(), RtcError> {
        self.inner.control.send(to_bytes_mut(data)).await?;
        Ok(())
    }

    /// Creates an in-band (DCEP) data channel. Peerix: only the impolite side does (§7.1).
    pub async fn create_channel(
        &self,
        label: &str,
        init: ChannelInit,
    ) -> Result<RtcChannel, RtcError> {
        self.in_span(async {
            if init.max_retransmits.is_some() && init.max_packet_life_time.is_some() {
                return Err(RtcError::InvalidChannelInit(
                    "max_retransmits and max_packet_life_time are exclusive",
                ));
            }
            let dc = self
                .inner
                .pc
                .create_data_channel(
                    label,
                    Some(RTCDataChannelInit {
                        ordered: init.ordered,
                        max_packet_life_time: init.max_packet_life_time,
                        max_retransmits: init.max_retransmits,
                        protocol: init.protocol.clone(),
                        negotiated: None,
                    }),
                )
                .await?;
            Ok(RtcChannel::start(
                dc,
                label.to_owned(),
                init.ordered,
                init.protocol,
                self.inner.shared.channel_queue,
            ))
        })
        .await
    }

    /// Closes the control channel (SCTP stream reset, so the remote learns we left, §5.8),
    /// then the connection. Idempotent. `ControlClosed` and `Closed` follow on the event
    /// channel (if not sent before).
    pub async fn close(&self) {
        self.inner.senders.detach_all();
        self.in_span(close_inner(
            &self.inner.pc,
            &self.inner.control,
            &self.inner.shared,
        ))
        .await;
    }

    pub(crate) fn pc(&self) -> &Arc<dyn PeerConnection> {
        &self.inner.pc
    }

    pub(crate) fn senders(&self) -> &Senders {
        &self.inner.senders
    }

    fn remember_local(&self, sdp: &str) {
        if let Some(ufrag) = sdp_attr(sdp, "ice-ufrag") {
            if let Some(rt) = self.inner.shared.runtime.get() {
                rt.set_local_ufrag(&ufrag);
            }
            let previous = Shared::lock(&self.inner.shared.local_ufrag).replace(ufrag.clone());
            // New ICE credentials: the stack gathers (again).
            if previous.as_deref() != Some(ufrag.as_str()) {
                self.inner.shared.emit(RtcEvent::GatheringStarted);
            }
        }
        if let Some(mid) = sdp_attr(sdp, "mid") {
            let mut guard = Shared::lock(&self.inner.shared.local_mid);
            if guard.is_none() {
                *guard = Some(mid);
            }
        }
    }

    fn set_signaling(&self, state: u8) {
        // Never leave Closed: a call racing close() must not resurrect the state.
        let _ =
            self.inner
                .shared
                .signaling
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                    (cur != SIG_CLOSED).then_some(state)
                });
    }
}

async fn close_inner(
    pc: &Arc<dyn PeerConnection>,
    control: &Arc<dyn DataChannel>,
    shared: &Shared,
) {
    if shared.closing.swap(true, Ordering::AcqRel) {
        return;
    }
    shared.signaling.store(SIG_CLOSED, Ordering::Release);
    // The stream reset of channel 0 is what a browser peer reacts to (§5.8); give the driver
    // one turn to put it on the wire before the association is aborted.
    let _ = control.close().await;
    tokio::task::yield_now().await;
    if let Err(err) = pc.close().await {
        tracing::debug!("peer connection close: {err}");
    }
    // close() ended the event streams; the control reader emits ControlClosed/Closed. Emit
    // here too in case the reader is already gone (both are deduplicated).
    shared.emit_closed();
}

impl Drop for PeerInner {
    fn drop(&mut self) {
        self.senders.detach_all();
        if self.shared.closing.load(Ordering::Acquire) {
            return;
        }
        // Without close() the driver (on the ambient runtime) and its sockets live forever.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let pc = Arc::clone(&self.pc);
            let control = Arc::clone(&self.control);
            let shared = Arc::clone(&self.shared);
            handle.spawn(async move { close_inner(&pc, &control, &shared).await });
        }
    }
}

fn spawn_control_reader(control: Arc<dyn DataChannel>, shared: Arc<Shared>) {
    tokio::spawn(async move {
        while let Some(event) = control.poll().await {
            match event {
                DataChannelEvent::OnOpen => {
                    shared.end_expedite();
                    shared.emit(RtcEvent::ControlOpen);
                }
                // Peerix ignores text on the control channel (§6.2).
                DataChannelEvent::OnMessage(msg) if !msg.is_string => {
                    // Wait for a free slot before reading on: a remote flooding the control
                    // channel then meets SCTP back-pressure instead of growing our queue.
                    let Ok(slot) = Arc::clone(&shared.control_slots).acquire_owned().await else {
                        break;
                    };
                    shared.emit(RtcEvent::ControlMessage(crate::ControlData::new(
                        msg.data.freeze(),
                        slot,
                    )));
                }
                DataChannelEvent::OnClose => shared.emit_control_closed(),
                _ => {}
            }
        }
        // The stream ends only when the connection is closed or its driver stopped.
        shared.emit_closed();
    });
}

impl std::fmt::Debug for RtcPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcPeer")
            .field("signaling", &self.signaling_state())
            .field("local_ufrag", &self.local_ufrag())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_attr_takes_first() {
        let sdp = "v=0\r\na=ice-ufrag:abcd\r\nm=application 9\r\na=mid:0\r\na=ice-ufrag:zzz\r\n";
        assert_eq!(sdp_attr(sdp, "ice-ufrag").as_deref(), Some("abcd"));
        assert_eq!(sdp_attr(sdp, "mid").as_deref(), Some("0"));
        assert_eq!(sdp_attr(sdp, "ice-pwd"), None);
        assert_eq!(sdp_attr("a=ice-ufragX:1", "ice-ufrag"), None);
    }

    #[test]
    fn json_shapes() {
        let c = IceCandidateInit {
            candidate: "candidate:1 1 udp 1 1.2.3.4 5 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("uf".into()),
        };
        let json = serde_json::to_string(&c).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"uf"}"#
        );
        let d = SessionDescription {
            r#type: "offer".into(),
            sdp: "v=0".into(),
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap_or_default(),
            r#"{"type":"offer","sdp":"v=0"}"#
        );
        let parsed: IceCandidateInit =
            serde_json::from_str(r#"{"candidate":"x","sdpMid":null}"#).unwrap_or_default();
        assert_eq!(parsed.candidate, "x");
        assert_eq!(parsed.username_fragment, None);
    }
}
