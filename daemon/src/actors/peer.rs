//! `PeerActor`: one per connection object, owning exactly one RTCPeerConnection and its
//! `ChannelActor`s. It decides nothing about the protocol: it carries out what the room's
//! `peerix_proto::Room` machine asks for this connection ([`PeerCmd`]: run an operation, send
//! on the control channel, create or close a channel, close) and reports everything the
//! WebRTC stack says back to it ([`PeerInput`]). It keeps what only the I/O side can hold:
//! the connection and its channels, and it tells the connection's send lanes (`send_path`)
//! which channel each label has.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use peerix_proto::{Admit, ChannelCap, ConnEvent, ConnId, Op};
use peerix_rtc::{ChannelInit, RtcConfig, RtcPeer, SignalingState};
use peerix_wire::control::ChannelOptions;
use rmpv::Value;

use super::channel::{ChannelActor, ChannelContext, ChannelGone, CloseChannel};
use super::error_value;
use super::event_bus::{Emit, EventBus, EventRecord};
use super::outgoing::RemoteOpenGrace;
use super::send_path::{PeerLanes, Slot};

pub use peerix_proto::PeerState;

/// Everything a connection's actor needs from its room.
#[derive(Clone)]
pub struct PeerSetup {
    /// Room name.
    pub room: String,
    /// Remote id.
    pub remote: String,
    /// The machine's name for this connection.
    pub conn: ConnId,
    /// WebRTC configuration.
    pub rtc: RtcConfig,
    /// Labels opened room-wide or for this peer (sends on them wait for their channel).
    pub labels: BTreeSet<String>,
    /// Event bus.
    pub bus: Addr<EventBus>,
    /// Channel limits.
    pub max_message_size: usize,
    /// Channel inline limit.
    pub inline_limit: usize,
    /// Bounds on what the remote may make us hold (channels, idle transfers).
    pub limits: crate::config_remote::RemoteLimits,
    /// Where client sends to this connection queue, per label (see `send_path`); this actor
    /// tells each lane which channel its label has, and closes them when it stops.
    pub lanes: std::sync::Arc<PeerLanes>,
    /// Control-channel sends in flight at most (`limits.control_sends_in_flight`).
    pub max_control_sends: usize,
    /// The room's local media sources, which our senders attach to.
    pub sources: super::room_shares::SourceMap,
}

/// What the WebRTC stack reported about a connection, for the room's machine.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerInput {
    /// Connection.
    pub conn: ConnId,
    /// What happened.
    pub event: ConnEvent,
    /// Single-port mode: set (to the remote's id) on a failure caused by another live
    /// connection holding the same address pair (both ends single-port daemons sharing
    /// several rooms); the room makes the next connection to that peer with a port of its own.
    pub own_port_for: Option<String>,
}

/// What the room's machine asks of a connection.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum PeerCmd {
    /// Run an operation and report `OpDone`.
    Run(Op),
    /// Send an encoded control message.
    SendControl(Vec<u8>),
    /// Create a user channel.
    CreateChannel(ChannelOptions),
    /// Close the channel of a label.
    CloseChannel(String),
    /// The remote said it is a peerixd: its channels need no grace before our first write.
    PeerixdRemote,
    /// Close the connection.
    Close,
}

/// A label was opened (sends on it wait for its channel) or closed (they fail now).
#[derive(Message)]
#[rtype(result = "()")]
pub struct LabelOpen(pub String, pub bool);

/// Leave: close everything.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Open channel labels and the connection's figures.
#[derive(Message)]
#[rtype(result = "PeerDetails")]
pub struct PeerInfo;

/// What [`PeerInfo`] answers.
#[derive(Debug, Clone, Default)]
pub struct PeerDetails {
    /// Open channel labels, sorted.
    pub channels: Vec<String>,
    /// The stack's figures; `None` without a connection or when the stack did not answer in
    /// time.
    pub stats: Option<peerix_rtc::PeerStats>,
}

/// How long `peers` waits for one connection's figures: a connection whose stack is busy
/// must not hold up the listing of the others.
const STATS_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The peer actor.
pub struct PeerActor {
    pub(super) s: PeerSetup,
    room: Recipient<PeerInput>,
    pub(super) rtc: Option<RtcPeer>,
    channels: HashMap<String, Addr<ChannelActor>>,
    creating: std::collections::HashSet<String>,
    /// The remote's channels under their cap (the decision; this actor closes what it refuses).
    cap: ChannelCap,
    closing: bool,
    /// Control-channel sends not yet handed to the stack, and how many were dropped.
    control_sends: usize,
    control_dropped: u64,
    /// The formats of the remote tracks being received, by track id (`peer_media.rs`).
    pub(super) media: HashMap<String, peerix_proto::RtpFormat>,
    /// What became of the connection's TURN servers, and its deadline (`peer_ice.rs`).
    pub(super) turn: peerix_proto::TurnWatch,
    pub(super) turn_timer: Option<SpawnHandle>,
    /// Set once the remote said it is a peerixd (shared with the remote's channels' senders).
    remote_peerixd: Arc<AtomicBool>,
}

fn to_rtc_desc(d: peerix_proto::SessionDescription) -> peerix_rtc::SessionDescription {
    peerix_rtc::SessionDescription {
        r#type: d.kind,
        sdp: d.sdp,
    }
}

fn from_rtc_desc(d: peerix_rtc::SessionDescription) -> peerix_proto::SessionDescription {
    peerix_proto::SessionDescription {
        kind: d.r#type,
        sdp: d.sdp,
    }
}

fn to_rtc_cand(c: peerix_proto::IceCandidateInit) -> peerix_rtc::IceCandidateInit {
    peerix_rtc::IceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_m_line_index: c.sdp_m_line_index,
        username_fragment: c.username_fragment,
    }
}

impl PeerActor {
    /// A new connection actor for `setup`, reporting to `room`.
    pub fn new(s: PeerSetup, room: Recipient<PeerInput>) -> Self {
        Self {
            room,
            rtc: None,
            channels: HashMap::new(),
            creating: Default::default(),
            cap: ChannelCap::new(s.limits.max_channels_per_connection),
            closing: false,
            control_sends: 0,
            control_dropped: 0,
            media: HashMap::new(),
            turn: Self::new_turn_watch(&s.rtc.ice_servers),
            turn_timer: None,
            remote_peerixd: Default::default(),
            s,
        }
    }

    /// Whether a channel with `label` may be created (ours) or kept (the remote's) under the
    /// remote's channel cap; a refusal is reported (rate limited) as an `error` event.
    fn admit_channel(&mut self, label: &str) -> bool {
        let local = self.s.labels.contains(label);
        match self.cap.admit(std::time::Instant::now(), label, local) {
            Admit::Accept => true,
            Admit::Refuse(report) => {
                if let Some(message) = report {
                    tracing::warn!(room = %self.s.room, peer = %self.s.remote, %label, "{message}");
                    self.error_on("CHANNEL_LIMIT", label, &message);
                }
                false
            }
        }
    }

    pub(super) fn report(&self, event: ConnEvent) {
        let failed = matches!(event, ConnEvent::Ice(peerix_proto::IceState::Failed));
        let own_port_for = (failed && self.rtc.as_ref().is_some_and(|r| r.single_port_collided()))
            .then(|| {
                tracing::warn!(
                    room = %self.s.room, peer = %self.s.remote,
                    "single-port mode: another connection (another room shared with the same \
                     single-port daemon) holds this address pair; the next connection to this \
                     peer uses a UDP port of its own"
                );
                self.s.remote.clone()
            });
        self.room.do_send(PeerInput {
            conn: self.s.conn,
            event,
            own_port_for,
        });
    }

    pub(super) fn error(&self, code: &str, message: &str) {
        tracing::warn!(room = %self.s.room, peer = %self.s.remote, code, message, "peer error");
        self.s.bus.do_send(Emit(EventRecord::new(
            "error",
            Some(&self.s.room),
            vec![
                ("peer", Value::from(self.s.remote.as_str())),
                ("error", error_value(code, message)),
            ],
        )));
    }

    /// An `error` event about one channel label of this connection.
    fn error_on(&self, code: &str, label: &str, message: &str) {
        self.s.bus.do_send(Emit(EventRecord::new(
            "error",
            Some(&self.s.room),
            vec![
                ("peer", Value::from(self.s.remote.as_str())),
                ("label", Value::from(label)),
                ("error", error_value(code, message)),
            ],
        )));
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

    /// Runs one operation; the machine hands out the next after our report.
    fn run(&mut self, op: Op, ctx: &mut Context<Self>) {
        let Some(rtc) = self.rtc.clone() else {
            return self.report(ConnEvent::OpDone {
                stable: true,
                result: Err("the connection does not exist".into()),
            });
        };
        let sources = self.s.sources.clone();
        let fut = async move {
            let produced = match op {
                Op::CreateOffer => rtc.create_offer().await.map(Some),
                Op::RestartIce => rtc.create_restart_offer().await.map(Some),
                Op::ApplyRemote {
                    desc,
                    rollback,
                    answer,
                } => {
                    async {
                        if rollback {
                            rtc.rollback().await?;
                        }
                        rtc.set_remote_description(to_rtc_desc(desc)).await?;
                        if answer {
                            Ok(Some(rtc.create_answer().await?))
                        } else {
                            Ok(None)
                        }
                    }
                    .await
                }
                Op::AddCandidate(c) => rtc.add_ice_candidate(to_rtc_cand(c)).await.map(|()| None),
                Op::Media { changes, offer } => {
                    super::peer_media::change_senders(&rtc, &sources, changes, offer).await
                }
            };
            let stable = rtc.signaling_state() == SignalingState::Stable;
            (stable, produced)
        };
        ctx.spawn(fut.into_actor(self).map(|(stable, produced), act, _| {
            act.report(ConnEvent::OpDone {
                stable,
                result: produced
                    .map(|d| d.map(from_rtc_desc))
                    .map_err(|e| e.to_string()),
            });
        }));
    }

    fn send_control(&mut self, bytes: Vec<u8>, ctx: &mut Context<Self>) {
        let Some(rtc) = self.rtc.clone() else { return };
        // Replies a remote provokes (answers, candidates) must not pile up without bound
        // behind a control channel that does not drain.
        if self.control_sends >= self.s.max_control_sends {
            self.control_dropped += 1;
            if self.control_dropped.is_power_of_two() {
                self.error(
                    "LIMIT_EXCEEDED",
                    &format!(
                        "{} control-channel messages dropped: {} sends are in flight \
                         (limits.control_sends_in_flight)",
                        self.control_dropped, self.control_sends
                    ),
                );
            }
            return;
        }
        self.control_sends += 1;
        ctx.spawn(
            async move { rtc.send_control(Bytes::from(bytes)).await }
                .into_actor(self)
                .map(|res, act, _| {
                    act.control_sends -= 1;
                    if let Err(e) = res {
                        act.error(
                            "SIGNALING_ERROR",
                            &format!("control channel send failed: {e}"),
                        );
                    }
                }),
        );
    }

    fn create_channel(&mut self, opts: ChannelOptions, ctx: &mut Context<Self>) {
        let label = opts.label.clone();
        if self.channels.contains_key(&label) || self.creating.contains(&label) {
            return;
        }
        // Asked for by the remote (a channel request, §6.4) unless a local client opened it.
        if !self.admit_channel(&label) {
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
                    act.adopt_channel(ch, false, ctx);
                }
                Err(e) => {
                    act.creating.remove(&label);
                    act.cap.gone(&label);
                    // Sends waiting for it fail now rather than at their timeout.
                    act.s.lanes.set_by(act.s.conn, &label, Slot::Absent);
                    act.error("DATACHANNEL_ERROR", &format!("creating data channel: {e}"))
                }
            }),
        );
    }

    /// Starts the actor of a channel we created or the remote did (`remote`).
    pub(super) fn adopt_channel(
        &mut self,
        ch: peerix_rtc::RtcChannel,
        remote: bool,
        ctx: &mut Context<Self>,
    ) {
        if self.closing {
            let c = ch.clone();
            actix::spawn(async move { c.close().await });
            return;
        }
        let label = ch.label().to_string();
        if !self.admit_channel(&label) {
            let c = ch.clone();
            actix::spawn(async move { c.close().await });
            return;
        }
        let cx = ChannelContext {
            room: self.s.room.clone(),
            peer: self.s.remote.clone(),
            bus: self.s.bus.clone(),
            max_message_size: self.s.max_message_size,
            inline_limit: self.s.inline_limit,
            idle_timeout: self.s.limits.transfer_idle_timeout(),
        };
        let grace = remote.then(|| RemoteOpenGrace::starting_now(self.remote_peerixd.clone()));
        let actor = ChannelActor::new(cx, ch, ctx.address().recipient(), grace);
        self.s
            .lanes
            .set_by(self.s.conn, &label, Slot::Ready(actor.sender()));
        let addr = actor.start();
        // A second channel with a known label replaces the older one (§7.1).
        if let Some(old) = self.channels.insert(label, addr) {
            old.do_send(CloseChannel);
        }
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let tx = super::peer_events::ToPeerActor(ctx.address());
        let cfg = self.s.rtc.clone();
        // The stack's tasks inherit this span (`TunedRuntime::spawn`): journald lines from
        // deep inside WebRTC carry the room and the peer.
        let span = tracing::info_span!("peer", room = %self.s.room, peer = %self.s.remote);
        // `wait`: no command is handled before the connection exists.
        ctx.wait(
            tracing::Instrument::instrument(async move { RtcPeer::new(&cfg, tx).await }, span)
                .into_actor(self)
                .map(|res, act, _| match res {
                    Ok(rtc) => act.rtc = Some(rtc),
                    Err(e) => {
                        act.error(
                            "NEGOTIATION_ERROR",
                            &format!("creating the peer connection: {e}"),
                        );
                        // The machine fails the connection (and recovers as from any failure).
                        act.report(ConnEvent::Ice(peerix_proto::IceState::Failed));
                    }
                }),
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.s.lanes.close_by(self.s.conn);
        if let Some(rtc) = self.rtc.take() {
            actix::spawn(async move { rtc.close().await });
        }
        // actix runs `stopped` while a panic unwinds the actor: tell the machine it crashed.
        let crashed = std::thread::panicking();
        self.report(ConnEvent::Closed { crashed });
    }
}

impl Handler<PeerCmd> for PeerActor {
    type Result = ();
    fn handle(&mut self, cmd: PeerCmd, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        match cmd {
            PeerCmd::Run(op) => self.run(op, ctx),
            PeerCmd::SendControl(bytes) => self.send_control(bytes, ctx),
            PeerCmd::CreateChannel(opts) => self.create_channel(opts, ctx),
            PeerCmd::CloseChannel(label) => {
                if let Some(ch) = self.channels.remove(&label) {
                    ch.do_send(CloseChannel);
                }
            }
            PeerCmd::PeerixdRemote => self.remote_peerixd.store(true, Ordering::Release),
            PeerCmd::Close => self.close(ctx),
        }
    }
}

impl Handler<LabelOpen> for PeerActor {
    type Result = ();
    fn handle(&mut self, LabelOpen(label, open): LabelOpen, _: &mut Self::Context) {
        // The room already told the lanes (before its reply to the client); this is for a
        // connection created since.
        if open {
            self.s.lanes.expect_by(self.s.conn, &label);
            self.s.labels.insert(label);
        } else {
            self.s.labels.remove(&label);
            // Sends still waiting for this channel fail now rather than at their timeout.
            self.s.lanes.set_by(self.s.conn, &label, Slot::Absent);
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
    type Result = ResponseFuture<PeerDetails>;
    fn handle(&mut self, _: PeerInfo, _: &mut Self::Context) -> Self::Result {
        let mut channels: Vec<String> = self.channels.keys().cloned().collect();
        channels.sort();
        let rtc = self.rtc.clone();
        Box::pin(async move {
            let stats = match rtc {
                Some(rtc) => tokio::time::timeout(STATS_WAIT, rtc.stats()).await.ok(),
                None => None,
            };
            PeerDetails { channels, stats }
        })
    }
}

impl Handler<ChannelGone> for PeerActor {
    type Result = ();
    fn handle(&mut self, m: ChannelGone, ctx: &mut Self::Context) {
        // A crashed channel's label is still open: its sends wait for the re-opened channel.
        self.s
            .lanes
            .channel_gone(&m.label, &m.sender, self.s.labels.contains(&m.label));
        if self.channels.get(&m.label).is_some_and(|a| *a == m.addr) {
            self.channels.remove(&m.label);
            if m.crashed {
                self.reopen_crashed_channel(m.label, ctx);
            } else {
                self.cap.gone(&m.label);
            }
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
        self.s.lanes.close_by(self.s.conn);
        if let Some(rtc) = self.rtc.take() {
            tokio::spawn(async move { rtc.close().await });
        }
    }
}

/// How long a crashed channel's label waits before it is opened again: the old channel's
/// stream reset must reach the remote first, or the remote would take the request for a
/// channel it still has and ignore it.
const CHANNEL_REOPEN_DELAY: Duration = Duration::from_millis(300);

impl PeerActor {
    /// Supervision of channels: a channel actor that panicked is replaced by a fresh channel
    /// of the same label (the crashed one reported itself with a `channel:error`).
    fn reopen_crashed_channel(&mut self, label: String, ctx: &mut Context<Self>) {
        ctx.run_later(CHANNEL_REOPEN_DELAY, move |act, _| {
            if act.closing || act.channels.contains_key(&label) {
                return;
            }
            tracing::info!(room = %act.s.room, peer = %act.s.remote, %label, "re-opening a crashed channel");
            // Whether and how (create it, or ask the impolite side) is the machine's call.
            act.report(ConnEvent::ChannelCrashed(label));
        });
    }
}

/// Fault injection: make the actor of one of this peer's channels panic.
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "Result<(), crate::error::DaemonError>")]
pub struct PeerPanicChannel(pub String);

#[cfg(feature = "fault-injection")]
impl Handler<PeerPanicChannel> for PeerActor {
    type Result = Result<(), crate::error::DaemonError>;
    fn handle(
        &mut self,
        PeerPanicChannel(label): PeerPanicChannel,
        _: &mut Self::Context,
    ) -> Self::Result {
        let ch = self.channels.get(&label).ok_or_else(|| {
            crate::error::DaemonError::BadRequest(format!(
                "debug: no channel {label:?} on this peer; open it first"
            ))
        })?;
        ch.do_send(super::channel::InjectChannelPanic);
        Ok(())
    }
}
