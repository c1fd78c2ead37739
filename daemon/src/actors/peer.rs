//! `PeerActor`: one per remote peer, owning exactly one RTCPeerConnection. It runs Peerix's
//! connection flow (§5), the control channel (§6) with perfect negotiation, candidate batching, the
//! connection timer, and supervises the peer's `ChannelActor`s.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use peerix_proto::{Negotiation, RemoteAction};
use peerix_rtc::{
    ChannelInit, IceCandidateInit, IceState, RtcConfig, RtcEvent, RtcPeer, SessionDescription,
    SignalingState,
};
use peerix_wire::control::{ChannelOptions, ControlMessage};
use peerix_wire::packet::SignalType;
use rmpv::Value;
use serde_json::json;

use super::channel::{ChannelActor, ChannelContext, ChannelGone, CloseChannel};
use super::event_bus::{Emit, EventBus, EventRecord};
use super::send_path::{PeerLanes, RoomDirectory, Slot};
use super::{error_value, json_to_msgpack, ReceiverStream};

/// Peerix's peer states (§5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Created, ICE not started.
    New,
    /// ICE checking.
    Connecting,
    /// ICE connected.
    Connected,
    /// ICE disconnected (the connection timer runs).
    Disconnected,
    /// Failed (timeout or ICE failure); closes right after.
    Failed,
    /// Gone.
    Closed,
}

impl PeerState {
    /// Peerix's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::New => "new",
            PeerState::Connecting => "connecting",
            PeerState::Connected => "connected",
            PeerState::Disconnected => "disconnected",
            PeerState::Failed => "failed",
            PeerState::Closed => "closed",
        }
    }
}

/// Everything a peer needs from its room.
#[derive(Clone)]
pub struct PeerSetup {
    /// Room name.
    pub room: String,
    /// Our id in this room.
    pub me: String,
    /// Remote id.
    pub remote: String,
    /// Remote metadata (fixed at creation, §5.4).
    pub remote_metadata: serde_json::Value,
    /// Our metadata, sent with offers over signaling.
    pub my_metadata: serde_json::Value,
    /// Whether we offer first (we received an invoke).
    pub initiator: bool,
    /// WebRTC configuration.
    pub rtc: RtcConfig,
    /// Candidate debounce while the control channel is closed.
    pub debounce: Duration,
    /// Connection timeout; None disables it.
    pub timeout: Option<Duration>,
    /// Labels opened room-wide.
    pub labels: BTreeMap<String, ChannelOptions>,
    /// Event bus.
    pub bus: Addr<EventBus>,
    /// Channel limits.
    pub max_message_size: usize,
    /// Channel inline limit.
    pub inline_limit: usize,
    /// The room's peers as the send path sees them; this actor registers itself there.
    pub directory: std::sync::Arc<RoomDirectory>,
}

/// A packet the room must publish to this peer's namespace.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SignalOut {
    /// Remote id.
    pub to: String,
    /// Signal type.
    pub kind: SignalType,
    /// JSON array elements.
    pub message: Vec<serde_json::Value>,
}

/// A state change reported to the room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerStateChanged {
    /// Remote id.
    pub peer: String,
    /// New state.
    pub state: PeerState,
    /// The actor (a newer connection may exist).
    pub addr: Addr<PeerActor>,
    /// The actor is going away because it panicked (the supervisor restarts the connection).
    pub crashed: bool,
}

/// Signaling traffic for this peer, from the room.
#[derive(Message)]
#[rtype(result = "()")]
pub enum FromSignaling {
    /// An offer (the metadata element was consumed by the room).
    Offer(SessionDescription),
    /// An answer.
    Answer(SessionDescription),
    /// One or more candidates.
    Candidates(Vec<IceCandidateInit>),
}

/// Open a label on this peer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct OpenLabel(pub ChannelOptions);

/// Close a label on this peer.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CloseLabel(pub String);

/// Leave: close everything.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// `(state, open labels)`.
#[derive(Message)]
#[rtype(result = "(PeerState, Vec<String>)")]
pub struct PeerInfo;

enum Op {
    MakeOffer,
    Remote {
        desc: SessionDescription,
        via_control: bool,
    },
    Candidate(IceCandidateInit),
}

/// The peer actor.
pub struct PeerActor {
    s: PeerSetup,
    room: Recipient<SignalOut>,
    room_state: Recipient<PeerStateChanged>,
    rtc: Option<RtcPeer>,
    /// Perfect negotiation and the two candidate queues (the decisions; this actor applies them).
    neg: Negotiation<IceCandidateInit>,
    state: PeerState,
    ops: VecDeque<Op>,
    busy: bool,
    batch: Vec<IceCandidateInit>,
    batch_timer: Option<SpawnHandle>,
    conn_timer: Option<SpawnHandle>,
    control_open: bool,
    channels: HashMap<String, Addr<ChannelActor>>,
    creating: std::collections::HashSet<String>,
    /// Where client sends for this connection queue, per label (see `send_path`); this actor
    /// tells each lane which channel its label has.
    lanes: std::sync::Arc<PeerLanes>,
    closing: bool,
}

impl PeerActor {
    /// A new peer for `setup`.
    pub fn new(
        s: PeerSetup,
        room: Recipient<SignalOut>,
        room_state: Recipient<PeerStateChanged>,
    ) -> Self {
        let polite = peerix_wire::identity::is_polite(&s.me, &s.remote);
        let lanes = PeerLanes::new(s.labels.keys());
        s.directory.register(&s.remote, lanes.clone());
        Self {
            s,
            room,
            room_state,
            rtc: None,
            neg: Negotiation::new(polite),
            state: PeerState::New,
            ops: VecDeque::new(),
            busy: false,
            batch: Vec::new(),
            batch_timer: None,
            conn_timer: None,
            control_open: false,
            channels: HashMap::new(),
            creating: Default::default(),
            lanes,
            closing: false,
        }
    }

    fn emit(&self, name: &str, fields: Vec<(&str, Value)>) {
        self.s
            .bus
            .do_send(Emit(EventRecord::new(name, Some(&self.s.room), fields)));
    }

    fn error(&self, code: &str, message: &str) {
        tracing::warn!(room = %self.s.room, peer = %self.s.remote, code, message, "peer error");
        self.emit(
            "error",
            vec![
                ("peer", Value::from(self.s.remote.as_str())),
                ("error", error_value(code, message)),
            ],
        );
    }

    fn set_state(&mut self, state: PeerState, ctx: &mut Context<Self>) {
        if self.state == state || self.state == PeerState::Closed {
            return;
        }
        self.state = state;
        self.s
            .directory
            .set_state(&self.s.remote, &self.lanes, state);
        self.emit(
            &format!("connection:{}", state.as_str()),
            vec![
                ("peer", Value::from(self.s.remote.as_str())),
                ("state", Value::from(state.as_str())),
                ("metadata", json_to_msgpack(&self.s.remote_metadata)),
            ],
        );
        self.room_state.do_send(PeerStateChanged {
            peer: self.s.remote.clone(),
            state,
            addr: ctx.address(),
            crashed: false,
        });
    }

    fn start_conn_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.conn_timer.take() {
            ctx.cancel_future(h);
        }
        if let Some(t) = self.s.timeout {
            self.conn_timer = Some(ctx.run_later(t, |act, ctx| {
                act.conn_timer = None;
                tracing::info!(room = %act.s.room, peer = %act.s.remote, "connection timed out");
                act.fail(ctx);
            }));
        }
    }

    fn fail(&mut self, ctx: &mut Context<Self>) {
        self.set_state(PeerState::Failed, ctx);
        self.close(ctx);
    }

    fn close(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        for ch in self.channels.values() {
            ch.do_send(CloseChannel);
        }
        // `stopped` closes the connection: control channel first (stream reset), so the remote
        // learns we left (§5.8).
        ctx.stop();
    }

    fn signal(&self, kind: SignalType, message: Vec<serde_json::Value>) {
        self.room.do_send(SignalOut {
            to: self.s.remote.clone(),
            kind,
            message,
        });
    }

    fn send_control(&self, ctx: &mut Context<Self>, msg: ControlMessage) {
        let Some(rtc) = self.rtc.clone() else { return };
        let bytes = msg.encode();
        ctx.spawn(
            async move { rtc.send_control(Bytes::from(bytes)).await }
                .into_actor(self)
                .map(|res, act, _| {
                    if let Err(e) = res {
                        act.error(
                            "SIGNALING_ERROR",
                            &format!("control channel send failed: {e}"),
                        );
                    }
                }),
        );
    }

    /// Sends a description on the path currently available (§6.5).
    fn send_description(&self, ctx: &mut Context<Self>, desc: SessionDescription) {
        let is_offer = desc.r#type == "offer";
        let d = json!({"type": desc.r#type, "sdp": desc.sdp});
        if self.control_open {
            let msg = if is_offer {
                vec![d, json!({})]
            } else {
                vec![d]
            };
            self.send_control(ctx, ControlMessage::Signal(msg));
        } else if is_offer {
            self.signal(SignalType::Offer, vec![d, self.s.my_metadata.clone()]);
        } else {
            self.signal(SignalType::Answer, vec![d]);
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.closing {
            return;
        }
        let Some(rtc) = self.rtc.clone() else { return };
        let Some(op) = self.ops.pop_front() else {
            return;
        };
        self.busy = true;
        match op {
            Op::MakeOffer => {
                ctx.spawn(
                    async move { rtc.create_offer().await }
                        .into_actor(self)
                        .map(|res, act, ctx| {
                            act.busy = false;
                            match res {
                                Ok(desc) => act.send_description(ctx, desc),
                                Err(e) => {
                                    act.error("NEGOTIATION_ERROR", &format!("creating offer: {e}"))
                                }
                            }
                            act.pump(ctx);
                        }),
                );
            }
            Op::Remote { desc, via_control } => {
                let is_offer = desc.r#type == "offer";
                let stable = rtc.signaling_state() == SignalingState::Stable;
                let collision = match self.neg.remote_description(is_offer, stable) {
                    RemoteAction::Ignore => {
                        tracing::debug!(peer = %self.s.remote, "ignoring colliding offer (impolite)");
                        self.busy = false;
                        return self.pump(ctx);
                    }
                    RemoteAction::Apply { rollback } => rollback,
                };
                let ufrag = peerix_wire::packet::ufrag_of_sdp(&desc.sdp).map(str::to_owned);
                let fut = async move {
                    if collision {
                        rtc.rollback().await?;
                    }
                    rtc.set_remote_description(desc).await?;
                    if is_offer {
                        Ok(Some(rtc.create_answer().await?))
                    } else {
                        Ok(None)
                    }
                };
                ctx.spawn(fut.into_actor(self).map(
                    move |res: Result<Option<SessionDescription>, peerix_rtc::RtcError>,
                          act,
                          ctx| {
                        act.busy = false;
                        match res {
                            Ok(answer) => {
                                if let Some(a) = answer {
                                    act.send_description(ctx, a);
                                }
                                // Candidates that waited for a description go first, in order.
                                for c in act.neg.remote_applied(ufrag).into_iter().rev() {
                                    act.ops.push_front(Op::Candidate(c));
                                }
                            }
                            Err(e) => act.error(
                                "NEGOTIATION_ERROR",
                                &format!(
                                    "applying remote description (via {}): {e}",
                                    if via_control {
                                        "control channel"
                                    } else {
                                        "signaling"
                                    }
                                ),
                            ),
                        }
                        act.pump(ctx);
                    },
                ));
            }
            Op::Candidate(c) => {
                let Some(c) = self.neg.connection_candidate(c) else {
                    self.busy = false;
                    return self.pump(ctx);
                };
                ctx.spawn(
                    async move { rtc.add_ice_candidate(c).await }
                        .into_actor(self)
                        .map(|res, act, ctx| {
                            act.busy = false;
                            if let Err(e) = res {
                                act.error(
                                    "ICECANDIDATE_ERROR",
                                    &format!("adding remote candidate: {e}"),
                                );
                            }
                            act.pump(ctx);
                        }),
                );
            }
        }
    }

    fn queue(&mut self, op: Op, ctx: &mut Context<Self>) {
        self.ops.push_back(op);
        self.pump(ctx);
    }

    fn on_local_candidate(&mut self, c: IceCandidateInit, ctx: &mut Context<Self>) {
        if self.control_open {
            let v = serde_json::to_value(&c).unwrap_or(serde_json::Value::Null);
            self.send_control(ctx, ControlMessage::Signal(vec![v]));
            return;
        }
        self.batch.push(c);
        if let Some(h) = self.batch_timer.take() {
            ctx.cancel_future(h);
        }
        // Trailing-edge debounce: each candidate restarts the timer (§5.5).
        self.batch_timer = Some(ctx.run_later(self.s.debounce, |act, ctx| {
            act.batch_timer = None;
            act.flush_candidates(ctx);
        }));
    }

    /// Sends the batched candidates over signaling as one packet.
    fn flush_candidates(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.batch_timer.take() {
            ctx.cancel_future(h);
        }
        let batch = std::mem::take(&mut self.batch);
        if !batch.is_empty() && !self.closing {
            let msg = batch
                .iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect();
            self.signal(SignalType::Candidate, msg);
        }
    }

    fn create_channel(&mut self, opts: ChannelOptions, ctx: &mut Context<Self>) {
        let label = opts.label.clone();
        if self.channels.contains_key(&label) || self.creating.contains(&label) {
            return;
        }
        let Some(rtc) = self.rtc.clone() else { return };
        self.creating.insert(label.clone());
        let init = ChannelInit {
            ordered: opts.ordered.unwrap_or(true),
            protocol: opts.protocol.clone().unwrap_or_default(),
            max_retransmits: opts.max_retransmits.and_then(|v| u16::try_from(v).ok()),
            max_packet_life_time: opts
                .max_packet_life_time
                .and_then(|v| u16::try_from(v).ok()),
        };
        ctx.spawn(
            async move {
                let res = rtc.create_channel(&label, init).await;
                (label, res)
            }
            .into_actor(self)
            .map(|(label, res), act, ctx| match res {
                Ok(ch) => {
                    act.creating.remove(&label);
                    act.adopt_channel(ch, ctx);
                }
                Err(e) => {
                    act.creating.remove(&label);
                    // Sends waiting for it fail now rather than at their timeout.
                    act.lanes.set(&label, Slot::Absent);
                    act.error("DATACHANNEL_ERROR", &format!("creating data channel: {e}"))
                }
            }),
        );
    }

    fn adopt_channel(&mut self, ch: peerix_rtc::RtcChannel, ctx: &mut Context<Self>) {
        if self.closing {
            let c = ch.clone();
            actix::spawn(async move { c.close().await });
            return;
        }
        let label = ch.label().to_string();
        let cx = ChannelContext {
            room: self.s.room.clone(),
            peer: self.s.remote.clone(),
            bus: self.s.bus.clone(),
            max_message_size: self.s.max_message_size,
            inline_limit: self.s.inline_limit,
        };
        let actor = ChannelActor::new(cx, ch, ctx.address().recipient());
        self.lanes.set(&label, Slot::Ready(actor.sender()));
        let addr = actor.start();
        // A second channel with a known label replaces the older one (§7.1).
        if let Some(old) = self.channels.insert(label, addr) {
            old.do_send(CloseChannel);
        }
    }

    fn on_control(&mut self, data: &[u8], ctx: &mut Context<Self>) {
        let msg = match ControlMessage::decode(data) {
            Ok(m) => m,
            Err(e) => {
                // Peerix ignores undecodable envelopes but reports JSON errors (§6.2).
                tracing::debug!(peer = %self.s.remote, error = %e, "bad control message");
                if !e.is_silent() {
                    self.error("SIGNALING_ERROR", &format!("control message: {e}"));
                }
                return;
            }
        };
        match msg {
            ControlMessage::Signal(items) => {
                let Some(first) = items.first() else { return };
                if first.get("type").is_some() {
                    match serde_json::from_value::<SessionDescription>(first.clone()) {
                        Ok(desc) => self.queue(
                            Op::Remote {
                                desc,
                                via_control: true,
                            },
                            ctx,
                        ),
                        Err(e) => {
                            self.error("SIGNALING_ERROR", &format!("control description: {e}"))
                        }
                    }
                } else if first.get("candidate").is_some() {
                    match serde_json::from_value::<IceCandidateInit>(first.clone()) {
                        Ok(c) if !c.candidate.is_empty() => self.queue(Op::Candidate(c), ctx),
                        Ok(_) => {}
                        Err(e) => self.error("SIGNALING_ERROR", &format!("control candidate: {e}")),
                    }
                }
            }
            ControlMessage::ChannelRequest(opts) => {
                // Only the impolite side creates channels (§6.4).
                if !self.neg.polite() {
                    self.create_channel(opts, ctx);
                }
            }
        }
    }

    fn open_label(&mut self, opts: ChannelOptions, ctx: &mut Context<Self>) {
        if self.neg.polite() {
            self.send_control(ctx, ControlMessage::ChannelRequest(opts));
        } else {
            self.create_channel(opts, ctx);
        }
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let _span =
            tracing::info_span!("peer", room = %self.s.room, peer = %self.s.remote).entered();
        self.emit(
            "connection:new",
            vec![
                ("peer", Value::from(self.s.remote.as_str())),
                ("state", Value::from("new")),
                ("metadata", json_to_msgpack(&self.s.remote_metadata)),
            ],
        );
        self.start_conn_timer(ctx);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        ctx.add_stream(ReceiverStream::new(rx));
        let cfg = self.s.rtc.clone();
        ctx.wait(
            async move { RtcPeer::new(&cfg, tx).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(rtc) => {
                        act.rtc = Some(rtc);
                        if act.s.initiator {
                            act.ops.push_front(Op::MakeOffer);
                        }
                        act.pump(ctx);
                    }
                    Err(e) => {
                        act.error(
                            "NEGOTIATION_ERROR",
                            &format!("creating the peer connection: {e}"),
                        );
                        act.fail(ctx);
                    }
                }),
        );
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.lanes.close();
        self.s.directory.unregister(&self.s.remote, &self.lanes);
        if let Some(rtc) = self.rtc.take() {
            actix::spawn(async move { rtc.close().await });
        }
        if self.state != PeerState::Closed {
            self.state = PeerState::Closed;
            self.emit(
                "connection:closed",
                vec![
                    ("peer", Value::from(self.s.remote.as_str())),
                    ("state", Value::from("closed")),
                    ("metadata", json_to_msgpack(&self.s.remote_metadata)),
                ],
            );
        }
        // actix runs `stopped` while a panic unwinds the actor: tell the supervisor it crashed.
        let crashed = std::thread::panicking();
        self.room_state.do_send(PeerStateChanged {
            peer: self.s.remote.clone(),
            state: PeerState::Closed,
            addr: ctx.address(),
            crashed,
        });
    }
}

impl StreamHandler<RtcEvent> for PeerActor {
    fn handle(&mut self, ev: RtcEvent, ctx: &mut Self::Context) {
        match ev {
            RtcEvent::LocalCandidate(c) => self.on_local_candidate(c, ctx),
            // Peerix waits out the debounce after the last candidate; once gathering is complete no
            // further candidate can come, so the batch goes now. Same packet, ~50 ms sooner.
            RtcEvent::GatheringComplete => self.flush_candidates(ctx),
            RtcEvent::IceState(s) => match s {
                IceState::New => {}
                IceState::Checking => self.set_state(PeerState::Connecting, ctx),
                IceState::Connected => {
                    if let Some(h) = self.conn_timer.take() {
                        ctx.cancel_future(h);
                    }
                    self.set_state(PeerState::Connected, ctx);
                }
                IceState::Completed => {}
                IceState::Disconnected => {
                    self.set_state(PeerState::Disconnected, ctx);
                    self.start_conn_timer(ctx);
                }
                IceState::Failed => self.fail(ctx),
                IceState::Closed => self.close(ctx),
            },
            // Offers are made by Peerix's rules (the invoke receiver offers), not on every
            // negotiation-needed: the stack also fires it for the negotiated control channel.
            RtcEvent::NegotiationNeeded => {}
            RtcEvent::ControlOpen => {
                self.control_open = true;
                let labels: Vec<ChannelOptions> = self.s.labels.values().cloned().collect();
                for opts in labels {
                    self.open_label(opts, ctx);
                }
            }
            RtcEvent::ControlMessage(data) => self.on_control(&data, ctx),
            RtcEvent::ControlClosed | RtcEvent::Closed => {
                tracing::info!(room = %self.s.room, peer = %self.s.remote, "remote left (control channel closed)");
                self.close(ctx);
            }
            RtcEvent::RemoteChannel(ch) => self.adopt_channel(ch, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.close(ctx);
    }
}

impl Handler<FromSignaling> for PeerActor {
    type Result = ();
    fn handle(&mut self, m: FromSignaling, ctx: &mut Self::Context) {
        match m {
            FromSignaling::Offer(desc) | FromSignaling::Answer(desc) => self.queue(
                Op::Remote {
                    desc,
                    via_control: false,
                },
                ctx,
            ),
            FromSignaling::Candidates(cands) => {
                for c in cands {
                    if c.candidate.is_empty() {
                        continue;
                    }
                    // Over signaling, Peerix applies a candidate only when its ufrag matches the
                    // current remote description; others wait (§5.2, §5.6).
                    let ufrag = c.username_fragment.clone();
                    if let Some(c) = self.neg.signaling_candidate(ufrag.as_deref(), c) {
                        self.queue(Op::Candidate(c), ctx);
                    }
                }
            }
        }
    }
}

impl Handler<OpenLabel> for PeerActor {
    type Result = ();
    fn handle(&mut self, OpenLabel(opts): OpenLabel, ctx: &mut Self::Context) {
        self.s.labels.insert(opts.label.clone(), opts.clone());
        self.lanes.expect(&opts.label);
        if self.control_open {
            self.open_label(opts, ctx);
        }
    }
}

impl Handler<CloseLabel> for PeerActor {
    type Result = bool;
    fn handle(&mut self, CloseLabel(label): CloseLabel, _: &mut Self::Context) -> bool {
        self.s.labels.remove(&label);
        // Sends still waiting for this channel fail now rather than at their timeout.
        self.lanes.set(&label, Slot::Absent);
        match self.channels.remove(&label) {
            Some(ch) => {
                ch.do_send(CloseChannel);
                true
            }
            None => false,
        }
    }
}

impl Handler<Shutdown> for PeerActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.close(ctx);
    }
}

impl Handler<PeerInfo> for PeerActor {
    type Result = MessageResult<PeerInfo>;
    fn handle(&mut self, _: PeerInfo, _: &mut Self::Context) -> Self::Result {
        let mut labels: Vec<String> = self.channels.keys().cloned().collect();
        labels.sort();
        MessageResult((self.state, labels))
    }
}

impl Handler<ChannelGone> for PeerActor {
    type Result = ();
    fn handle(&mut self, m: ChannelGone, _: &mut Self::Context) {
        self.lanes
            .channel_gone(&m.label, &m.sender, self.s.labels.contains_key(&m.label));
        if self.channels.get(&m.label).is_some_and(|a| *a == m.addr) {
            self.channels.remove(&m.label);
        }
    }
}

/// Fault injection: panic inside the actor (tests of supervision).
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

#[cfg(feature = "fault-injection")]
impl Handler<InjectPanic> for PeerActor {
    type Result = ();
    fn handle(&mut self, _: InjectPanic, _: &mut Self::Context) {
        panic!("injected fault in the actor of peer {}", self.s.remote);
    }
}

impl Drop for PeerActor {
    fn drop(&mut self) {
        // Runs on a normal stop (rtc already taken) and when a panic unwinds the actor: the
        // connection must not outlive it, or the remote would keep a half-dead peer; nor may
        // its lanes, or sends to it would wait for a channel that cannot come.
        self.lanes.close();
        self.s.directory.unregister(&self.s.remote, &self.lanes);
        if let Some(rtc) = self.rtc.take() {
            tokio::spawn(async move { rtc.close().await });
        }
    }
}
