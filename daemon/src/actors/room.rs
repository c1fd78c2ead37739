//! `RoomActor`: one per joined room. Holds the room's identity and signaling codec, reacts to
//! announce/invoke/offer/answer/candidate as Peerix 0.7 does (§5.2), and supervises one `PeerActor`
//! per remote peer. A peer actor that dies unexpectedly is reported and the connection is
//! re-established by a fresh invoke, which is how Peerix recovers (§5.7).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use peerix_rtc::{IceCandidateInit, RtcConfig, SessionDescription};
use peerix_wire::control::ChannelOptions;
use peerix_wire::identity::Identity;
use peerix_wire::namespace;
use peerix_wire::packet::{CodecOptions, Opened, SignalType, SignalingCodec};
use rand::Rng;
use rmpv::Value;
use serde_json::Value as Json;

use super::driver::{DriverActive, DriverActor, Incoming, Publish, Sub, UnsubAll};
use super::error_value;
use super::event_bus::{Emit, EventBus, EventRecord};
#[cfg(feature = "fault-injection")]
use super::peer::InjectPanic;
use super::peer::{
    CloseLabel, FromSignaling, OpenLabel, PeerActor, PeerInfo, PeerSetup, PeerState,
    PeerStateChanged, Shutdown, SignalOut,
};
use super::send_path::{RoomDirectory, Slot};
use crate::config::{IceTransportPolicy, RoomOptions, WebrtcConfig};
use crate::error::DaemonError;

/// How often the room checks that its peer actors are alive.
///
/// A backstop only: a peer actor that panics reports itself from `stopped` (actix runs it while
/// the panic unwinds), so this catches only an actor that vanished without running it. Slow,
/// because every tick wakes the daemon's main thread, and an idle daemon should sleep.
const WATCHDOG: Duration = Duration::from_secs(30);

/// How many times we re-invoke a peer whose connection failed before giving up until it announces.
const MAX_RECOVERY_ATTEMPTS: u32 = 3;

/// Everything needed to start a room.
pub struct RoomSetup {
    /// Room id.
    pub room: String,
    /// Driver name.
    pub driver_name: String,
    /// Driver actor.
    pub driver: Addr<DriverActor>,
    /// Event bus.
    pub bus: Addr<EventBus>,
    /// Room options (Peerix names).
    pub options: RoomOptions,
    /// WebRTC tuning.
    pub webrtc: WebrtcConfig,
    /// This room's identity.
    pub identity: Identity,
    /// Join metadata.
    pub metadata: Json,
    /// Largest message reassembled from a peer.
    pub max_message_size: usize,
    /// Largest inline `channel:message` part.
    pub inline_limit: usize,
    /// The room's peers as the send path sees them (peer actors register themselves).
    pub directory: std::sync::Arc<RoomDirectory>,
}

struct PeerEntry {
    addr: Addr<PeerActor>,
    state: PeerState,
    metadata: Json,
}

/// The room actor.
pub struct RoomActor {
    s: RoomSetup,
    codec: SignalingCodec,
    me: String,
    room_ns: String,
    own_ns: String,
    labels: BTreeMap<String, ChannelOptions>,
    peers: HashMap<String, PeerEntry>,
    /// Candidates that arrived before their connection existed (§5.2), per remote id.
    queued: HashMap<String, VecDeque<IceCandidateInit>>,
    /// When a PEER_LIMIT refusal was last reported (they are rate-limited).
    last_limit_report: Option<std::time::Instant>,
    /// Ids refused while the room was at `webrtc.max_connecting_peers` (with the offer they
    /// sent, if any), newest last; at most that many.
    refused: VecDeque<(String, Option<(SessionDescription, Json)>)>,
    recovery: HashMap<String, u32>,
    leaving: bool,
}

impl RoomActor {
    /// A room for `s`.
    pub fn new(s: RoomSetup) -> Self {
        let codec = SignalingCodec::new(
            s.identity.clone(),
            CodecOptions {
                compression: s.options.signaling_compression,
                encryption: s.options.signaling_encryption,
            },
        );
        let me = s.identity.id().to_string();
        let room_ns = namespace::escape(&s.room, s.options.namespace_hashing);
        let own_ns = namespace::escape(&me, s.options.namespace_hashing);
        Self {
            s,
            codec,
            me,
            room_ns,
            own_ns,
            labels: BTreeMap::new(),
            peers: HashMap::new(),
            queued: HashMap::new(),
            last_limit_report: None,
            refused: VecDeque::new(),
            recovery: HashMap::new(),
            leaving: false,
        }
    }

    /// This room's peer id.
    pub fn id(&self) -> &str {
        &self.me
    }

    fn emit_error(&self, code: &str, message: &str, peer: Option<&str>) {
        let mut fields = vec![("error", error_value(code, message))];
        if let Some(p) = peer {
            fields.push(("peer", Value::from(p)));
        }
        self.s
            .bus
            .do_send(Emit(EventRecord::new("error", Some(&self.s.room), fields)));
    }

    fn publish(
        &mut self,
        to_ns: String,
        kind: SignalType,
        message: Option<&[Json]>,
        remote: &str,
        ctx: &mut Context<Self>,
    ) {
        match self.codec.seal(kind, message, remote) {
            Ok(bytes) => {
                let fut = self.s.driver.send(Publish {
                    namespace: to_ns,
                    payload: Bytes::from(bytes),
                });
                ctx.spawn(fut.into_actor(self).map(|res, act, _| {
                    let err = match res {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    };
                    act.emit_error("SIGNALING_ERROR", &format!("publishing: {err}"), None);
                }));
            }
            Err(e) => self.emit_error(e.code(), &e.to_string(), Some(remote)),
        }
    }

    fn announce(&mut self, ctx: &mut Context<Self>) {
        let ns = self.room_ns.clone();
        let me = self.me.clone();
        self.publish(ns, SignalType::Announce, None, &me, ctx);
    }

    fn invoke(&mut self, remote: &str, retry: bool, ctx: &mut Context<Self>) {
        let ns = namespace::escape(remote, self.s.options.namespace_hashing);
        let meta = self.s.metadata.clone();
        // Reply to an announce: empty payload without metadata (0.6+); the failure-retry path always
        // carries `[metadata]` (§4.6).
        if meta.is_null() && !retry {
            self.publish(ns, SignalType::Invoke, None, remote, ctx);
        } else {
            self.publish(ns, SignalType::Invoke, Some(&[meta]), remote, ctx);
        }
    }

    /// Re-creates a connection after a crash: the remote sees the old one close (its control
    /// channel resets), and our invoke makes it offer a fresh one (§5.2).
    fn schedule_reinvoke(&mut self, peer: String, ctx: &mut Context<Self>) {
        if self.leaving {
            return;
        }
        let jitter = Duration::from_millis(rand::thread_rng().gen_range(100..600));
        ctx.run_later(jitter, move |act, ctx| {
            if !act.is_live(&peer) && !act.leaving {
                act.invoke(&peer, true, ctx);
            }
        });
    }

    fn rtc_config(&self) -> RtcConfig {
        RtcConfig {
            ice_servers: self
                .s
                .options
                .ice_servers
                .iter()
                .map(|s| peerix_rtc::IceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone(),
                    credential: s.credential.clone(),
                })
                .collect(),
            relay_only: self.s.options.ice_transport_policy == IceTransportPolicy::Relay,
            mdns: self.s.webrtc.mdns,
            udp_recv_buffer: self.s.webrtc.udp_recv_buffer,
            max_message_size: self.s.webrtc.max_message_size,
            reactor_threads: self.s.webrtc.reactor_threads,
        }
    }

    fn is_live(&self, remote: &str) -> bool {
        self.peers
            .get(remote)
            .is_some_and(|p| p.state != PeerState::Closed && p.addr.connected())
    }

    fn connecting_peers(&self) -> usize {
        self.peers
            .values()
            .filter(|p| matches!(p.state, PeerState::New | PeerState::Connecting))
            .count()
    }

    /// Whether a connection to a new id may be set up now (see
    /// `webrtc.max_connecting_peers`); reports a refusal at most once a second. A refused id
    /// is remembered (with its offer, if it sent one) and taken up when a slot frees, so a
    /// real peer caught in a flood of forged ones gets in without waiting for its own timeout.
    fn admit_new_peer(&mut self, remote: &str, offer: Option<(SessionDescription, Json)>) -> bool {
        let limit = self.s.webrtc.max_connecting_peers;
        let connecting = self.connecting_peers();
        if limit == 0 || connecting < limit {
            return true;
        }
        self.refused.retain(|(r, _)| r != remote);
        if self.refused.len() >= limit {
            self.refused.pop_front();
        }
        self.refused.push_back((remote.to_string(), offer));
        let now = std::time::Instant::now();
        if self
            .last_limit_report
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_limit_report = Some(now);
            tracing::warn!(room = %self.s.room, peer = %remote, connecting, "too many connections being set up; ignoring a new peer");
            self.emit_error(
                "PEER_LIMIT",
                &format!(
                    "{connecting} connections are being set up in this room \
                     (webrtc.max_connecting_peers); ignoring new peers until some connect"
                ),
                Some(remote),
            );
        }
        false
    }

    /// Takes up the ids refused by [`Self::admit_new_peer`] once there is room again, newest
    /// first: a stored offer is answered while slots last (the remote still waits for that
    /// answer); an id that only invoked us is invited back, which allocates nothing here (only
    /// a remote that answers with an offer gets a connection).
    fn reinvite_refused(&mut self, ctx: &mut Context<Self>) {
        let limit = self.s.webrtc.max_connecting_peers;
        if self.leaving {
            return;
        }
        while self.connecting_peers() < limit {
            let Some((remote, offer)) = self.refused.pop_back() else {
                return;
            };
            if self.is_live(&remote) {
                continue;
            }
            match offer {
                Some((desc, meta)) => {
                    let addr = self.create_peer(&remote, meta, false, ctx);
                    addr.do_send(FromSignaling::Offer(desc));
                }
                None => self.invoke(&remote, true, ctx),
            }
        }
    }

    fn create_peer(
        &mut self,
        remote: &str,
        metadata: Json,
        initiator: bool,
        ctx: &mut Context<Self>,
    ) -> Addr<PeerActor> {
        let setup = PeerSetup {
            room: self.s.room.clone(),
            me: self.me.clone(),
            remote: remote.to_string(),
            remote_metadata: metadata.clone(),
            my_metadata: self.s.metadata.clone(),
            initiator,
            rtc: self.rtc_config(),
            debounce: Duration::from_millis(self.s.options.ice_candidate_debounce),
            timeout: self.s.options.connection_timeout(),
            labels: self.labels.clone(),
            bus: self.s.bus.clone(),
            max_message_size: self.s.max_message_size,
            inline_limit: self.s.inline_limit,
            directory: self.s.directory.clone(),
        };
        let addr =
            PeerActor::new(setup, ctx.address().recipient(), ctx.address().recipient()).start();
        if let Some(q) = self.queued.remove(remote) {
            addr.do_send(FromSignaling::Candidates(q.into()));
        }
        self.peers.insert(
            remote.to_string(),
            PeerEntry {
                addr: addr.clone(),
                state: PeerState::New,
                metadata,
            },
        );
        addr
    }

    fn on_signal(
        &mut self,
        kind: SignalType,
        from: String,
        msg: Vec<Json>,
        ctx: &mut Context<Self>,
    ) {
        match kind {
            SignalType::Announce => self.invoke(&from, false, ctx),
            SignalType::Invoke => {
                if !self.is_live(&from) && self.admit_new_peer(&from, None) {
                    let meta = msg.into_iter().next().unwrap_or(Json::Null);
                    self.create_peer(&from, meta, true, ctx);
                }
            }
            SignalType::Offer => {
                let mut it = msg.into_iter();
                let Some(desc) = it
                    .next()
                    .and_then(|d| serde_json::from_value::<SessionDescription>(d).ok())
                else {
                    return self.emit_error(
                        "SIGNALING_ERROR",
                        "Invalid signaling message: offer without description",
                        Some(&from),
                    );
                };
                let addr = match self.peers.get(&from) {
                    Some(p) if self.is_live(&from) => p.addr.clone(),
                    _ => {
                        let meta = it.next().unwrap_or(Json::Null);
                        if !self.admit_new_peer(&from, Some((desc.clone(), meta.clone()))) {
                            return;
                        }
                        self.create_peer(&from, meta, false, ctx)
                    }
                };
                addr.do_send(FromSignaling::Offer(desc));
            }
            SignalType::Answer => {
                let Some(desc) = msg
                    .into_iter()
                    .next()
                    .and_then(|d| serde_json::from_value::<SessionDescription>(d).ok())
                else {
                    return self.emit_error(
                        "SIGNALING_ERROR",
                        "Invalid signaling message: answer without description",
                        Some(&from),
                    );
                };
                if let Some(p) = self.peers.get(&from).filter(|_| self.is_live(&from)) {
                    p.addr.do_send(FromSignaling::Answer(desc));
                }
            }
            SignalType::Candidate => {
                let cands: Vec<IceCandidateInit> = msg
                    .into_iter()
                    .filter_map(|c| serde_json::from_value(c).ok())
                    .collect();
                if let Some(p) = self.peers.get(&from).filter(|_| self.is_live(&from)) {
                    p.addr.do_send(FromSignaling::Candidates(cands));
                } else {
                    // Candidates may outrun the offer; keep a few per sender, for a bounded
                    // number of senders (forged ids must not grow this map without limit).
                    let limit = self.s.webrtc.max_connecting_peers;
                    if limit != 0 && !self.queued.contains_key(&from) && self.queued.len() >= limit
                    {
                        return;
                    }
                    let q = self.queued.entry(from).or_default();
                    for c in cands {
                        if q.len() >= 100 {
                            q.pop_front();
                        }
                        q.push_back(c);
                    }
                }
            }
        }
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(room = %self.s.room, id = %self.me, driver = %self.s.driver_name, "joining");
        // Supervision: a peer actor that died without reporting (a panic) is replaced by a fresh
        // connection. Its Drop closed the old RTCPeerConnection, so the remote lets go too.
        ctx.run_interval(WATCHDOG, |act, ctx| {
            let dead: Vec<String> =
                act.peers.iter().filter(|(_, p)| !p.addr.connected()).map(|(id, _)| id.clone()).collect();
            for peer in dead {
                act.peers.remove(&peer);
                act.codec.forget_key(&peer);
                tracing::error!(room = %act.s.room, %peer, "peer actor crashed; re-establishing the connection");
                act.emit_error("INTERNAL", "the connection's actor crashed; re-establishing the connection", Some(&peer));
                act.s.bus.do_send(Emit(EventRecord::new(
                    "connection:closed",
                    Some(&act.s.room),
                    vec![("peer", Value::from(peer.as_str())), ("state", Value::from("closed")), ("metadata", Value::Nil)],
                )));
                act.schedule_reinvoke(peer, ctx);
            }
        });
        // Subscribe the room namespace, then our own, then announce (§5.1). The driver actor
        // processes messages in order, so the announce goes out after both subscriptions.
        let subs = [self.room_ns.clone(), self.own_ns.clone()];
        let driver = self.s.driver.clone();
        let owner = self.s.room.clone();
        let incoming = ctx.address().recipient::<Incoming>();
        let active = ctx.address().recipient::<DriverActive>();
        ctx.wait(
            async move {
                for ns in subs {
                    driver
                        .send(Sub {
                            owner: owner.clone(),
                            namespace: ns,
                            incoming: incoming.clone(),
                            active: active.clone(),
                        })
                        .await??;
                }
                Ok::<(), DaemonError>(())
            }
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok(()) => act.announce(ctx),
                Err(e) => act.emit_error("SIGNALING_ERROR", &format!("subscribing: {e}"), None),
            }),
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.s.driver.do_send(UnsubAll {
            owner: self.s.room.clone(),
        });
        for p in self.peers.values() {
            p.addr.do_send(Shutdown);
        }
        tracing::info!(room = %self.s.room, "left");
    }
}

impl Handler<Incoming> for RoomActor {
    type Result = ();
    fn handle(&mut self, m: Incoming, ctx: &mut Self::Context) {
        if self.leaving {
            return;
        }
        match self.codec.open(&m.payload) {
            Ok(Opened::Signal(sig)) => {
                // Packets addressed to the room namespace other than announces are ignored, as are
                // announces on our personal namespace: a hostile publisher cannot steer us through the
                // wrong namespace.
                let on_room = m.namespace == self.room_ns;
                if on_room != (sig.signal_type == SignalType::Announce) {
                    tracing::debug!(ns = %m.namespace, kind = ?sig.signal_type, "signal on unexpected namespace");
                    return;
                }
                self.on_signal(sig.signal_type, sig.sender_id, sig.message, ctx);
            }
            Ok(_) => {}
            Err(e) => {
                let hint = mismatch_hint(&e, self.s.options.signaling_encryption);
                self.emit_error(e.code(), &format!("{e}{hint}"), None)
            }
        }
    }
}

/// Names the room option that most likely differs between the peers (spec §2.4), so that a
/// mismatch reads as a configuration problem rather than line noise.
fn mismatch_hint(e: &peerix_wire::packet::SignalingError, encryption: bool) -> &'static str {
    use peerix_wire::packet::SignalingError as E;
    match e {
        E::NotEncrypted => " (the sender has signalingEncryption off; it must match room-wide)",
        E::KeyImport(_) => " (the sender's id is not a P-256 key: it has signalingEncryption off; it must match room-wide)",
        E::Json(_) | E::InvalidMessage(_) if !encryption => {
            " (the sender may have signalingEncryption on; it must match room-wide)"
        }
        E::Decrypt(_) => " (wrong key or tampered packet)",
        _ => "",
    }
}

impl Handler<DriverActive> for RoomActor {
    type Result = ();
    fn handle(&mut self, _: DriverActive, ctx: &mut Self::Context) {
        if !self.leaving {
            self.announce(ctx);
        }
    }
}

impl Handler<SignalOut> for RoomActor {
    type Result = ();
    fn handle(&mut self, m: SignalOut, ctx: &mut Self::Context) {
        if self.leaving {
            return;
        }
        let ns = namespace::escape(&m.to, self.s.options.namespace_hashing);
        self.publish(ns, m.kind, Some(&m.message), &m.to, ctx);
    }
}

impl Handler<PeerStateChanged> for RoomActor {
    type Result = ();
    fn handle(&mut self, m: PeerStateChanged, ctx: &mut Self::Context) {
        let Some(entry) = self.peers.get_mut(&m.peer) else {
            return;
        };
        if entry.addr != m.addr {
            return;
        }
        let was = entry.state;
        entry.state = m.state;
        if !self.refused.is_empty()
            && matches!(was, PeerState::New | PeerState::Connecting)
            && !matches!(m.state, PeerState::New | PeerState::Connecting)
        {
            // A connection slot freed up (see `admit_new_peer`); taken up after this
            // handler's bookkeeping, whichever way it returns.
            ctx.run_later(Duration::ZERO, |act, ctx| act.reinvite_refused(ctx));
        }
        match m.state {
            PeerState::Connected => {
                self.recovery.remove(&m.peer);
            }
            PeerState::Closed => {
                self.peers.remove(&m.peer);
                self.codec.forget_key(&m.peer);
                if m.crashed {
                    tracing::error!(room = %self.s.room, peer = %m.peer, "peer actor crashed; re-establishing the connection");
                    self.emit_error(
                        "INTERNAL",
                        "the connection's actor crashed; re-establishing the connection",
                        Some(&m.peer),
                    );
                    self.schedule_reinvoke(m.peer.clone(), ctx);
                    return;
                }
                // Recover from failures ourselves (Peerix's own retry rarely leaves a browser, §5.7).
                if was == PeerState::Failed && !self.leaving {
                    let n = self.recovery.entry(m.peer.clone()).or_default();
                    *n += 1;
                    if *n <= MAX_RECOVERY_ATTEMPTS {
                        let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..1000));
                        let peer = m.peer.clone();
                        ctx.run_later(jitter, move |act, ctx| {
                            if !act.is_live(&peer) && !act.leaving {
                                act.invoke(&peer, true, ctx);
                            }
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

/// Open a label room-wide or on one peer.
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct RoomOpen {
    /// Channel options with the label.
    pub options: ChannelOptions,
    /// Only this peer.
    pub to: Option<String>,
}

impl Handler<RoomOpen> for RoomActor {
    type Result = Result<(), DaemonError>;
    fn handle(&mut self, m: RoomOpen, _: &mut Self::Context) -> Self::Result {
        // Before the reply: a send right after `open` must wait for the channel, not fail.
        let label = m.options.label.clone();
        self.s
            .directory
            .each_lanes(m.to.as_deref(), |l| l.expect(&label))?;
        match m.to {
            Some(peer) => {
                let p = self.peers.get(&peer).ok_or(DaemonError::NoSuchPeer {
                    room: self.s.room.clone(),
                    peer,
                })?;
                p.addr.do_send(OpenLabel(m.options));
            }
            None => {
                self.labels
                    .insert(m.options.label.clone(), m.options.clone());
                for p in self.peers.values() {
                    p.addr.do_send(OpenLabel(m.options.clone()));
                }
            }
        }
        Ok(())
    }
}

/// Close a label room-wide or on one peer.
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct RoomClose {
    /// Label.
    pub label: String,
    /// Only this peer.
    pub to: Option<String>,
}

impl Handler<RoomClose> for RoomActor {
    type Result = Result<(), DaemonError>;
    fn handle(&mut self, m: RoomClose, _: &mut Self::Context) -> Self::Result {
        // Before the reply: a send after `close` fails instead of racing the channel's end.
        self.s
            .directory
            .each_lanes(m.to.as_deref(), |l| l.set(&m.label, Slot::Absent))?;
        match m.to {
            Some(peer) => {
                let p = self.peers.get(&peer).ok_or(DaemonError::NoSuchPeer {
                    room: self.s.room.clone(),
                    peer,
                })?;
                p.addr.do_send(CloseLabel(m.label));
            }
            None => {
                self.labels.remove(&m.label);
                for p in self.peers.values() {
                    p.addr.do_send(CloseLabel(m.label.clone()));
                }
            }
        }
        Ok(())
    }
}

/// One remote peer as listed by `peers`.
#[derive(Debug, Clone)]
pub struct PeerSummary {
    /// Remote id.
    pub id: String,
    /// Peerix state.
    pub state: PeerState,
    /// Remote metadata.
    pub metadata: Json,
    /// Open channel labels.
    pub channels: Vec<String>,
}

/// List the room's peers.
#[derive(Message)]
#[rtype(result = "Vec<PeerSummary>")]
pub struct RoomPeers;

impl Handler<RoomPeers> for RoomActor {
    type Result = ResponseFuture<Vec<PeerSummary>>;
    fn handle(&mut self, _: RoomPeers, _: &mut Self::Context) -> Self::Result {
        let entries: Vec<(String, Addr<PeerActor>, Json, PeerState)> = self
            .peers
            .iter()
            .map(|(id, p)| (id.clone(), p.addr.clone(), p.metadata.clone(), p.state))
            .collect();
        Box::pin(async move {
            let mut out = Vec::new();
            for (id, addr, metadata, state) in entries {
                let (state, channels) = addr.send(PeerInfo).await.unwrap_or((state, vec![]));
                out.push(PeerSummary {
                    id,
                    state,
                    metadata,
                    channels,
                });
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            out
        })
    }
}

/// `(room, id, metadata, driver, peer count, labels)`.
#[derive(Message)]
#[rtype(result = "RoomSummary")]
pub struct RoomInfo;

/// A room as listed by `status`.
#[derive(Debug, Clone, actix::MessageResponse)]
pub struct RoomSummary {
    /// Room name.
    pub room: String,
    /// Our id.
    pub id: String,
    /// Our metadata.
    pub metadata: Json,
    /// Driver name.
    pub driver: String,
    /// Connected peers.
    pub peers: usize,
    /// Labels opened room-wide.
    pub channels: Vec<String>,
}

impl Handler<RoomInfo> for RoomActor {
    type Result = RoomSummary;
    fn handle(&mut self, _: RoomInfo, _: &mut Self::Context) -> RoomSummary {
        RoomSummary {
            room: self.s.room.clone(),
            id: self.me.clone(),
            metadata: self.s.metadata.clone(),
            driver: self.s.driver_name.clone(),
            peers: self
                .peers
                .values()
                .filter(|p| p.state == PeerState::Connected)
                .count(),
            channels: self.labels.keys().cloned().collect(),
        }
    }
}

/// Fault injection: make a peer's actor panic (tests of supervision).
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct RoomPanicPeer(pub String);

#[cfg(feature = "fault-injection")]
impl Handler<RoomPanicPeer> for RoomActor {
    type Result = Result<(), DaemonError>;
    fn handle(&mut self, m: RoomPanicPeer, _: &mut Self::Context) -> Self::Result {
        let p = self
            .peers
            .get(&m.0)
            .ok_or_else(|| DaemonError::NoSuchPeer {
                room: self.s.room.clone(),
                peer: m.0.clone(),
            })?;
        p.addr.do_send(InjectPanic);
        Ok(())
    }
}

/// Leave the room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

impl Handler<Leave> for RoomActor {
    type Result = ();
    fn handle(&mut self, _: Leave, ctx: &mut Self::Context) {
        self.leaving = true;
        ctx.stop();
    }
}
