//! `RoomActor`: one per joined room. It owns the room's I/O — the signaling codec and driver
//! subscriptions, one `PeerActor` per connection object, the timer — and delegates every
//! protocol decision to a `peerix_proto::Room` machine: it feeds the machine decoded packets,
//! what the connections report and the time, and carries out the actions it returns
//! (publish, create a connection, run an operation, emit an event). Command handlers (open,
//! close, send, peers, info, leave) are in `room_commands.rs`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use peerix_proto::{Action, ConnEvent, ConnId, Event, NewSenderLimit, Room, RoomConfig, Target};
use peerix_rtc::RtcConfig;
use peerix_wire::identity::Identity;
use peerix_wire::namespace;
use peerix_wire::packet::{CodecOptions, SignalType, SignalingCodec};
use rand::Rng;
use rmpv::Value;
use serde_json::Value as Json;

use super::driver::{DriverActive, DriverActor, Incoming, Publish, Sub, UnsubAll};
use super::event_bus::{Emit, EventBus, EventRecord};
use super::peer::{PeerActor, PeerCmd, PeerInput, PeerSetup, Shutdown};
use super::send_path::{PeerLanes, RoomDirectory};
use super::{error_value, json_to_msgpack};
use crate::config::{IceTransportPolicy, RoomOptions, WebrtcConfig};
use crate::error::DaemonError;

pub use super::room_commands::*;

/// How often the room checks that its peer actors are alive.
///
/// A backstop only: a peer actor that panics reports itself from `stopped` (actix runs it while
/// the panic unwinds), so this catches only an actor that vanished without running it. Slow,
/// because every tick wakes the daemon's main thread, and an idle daemon should sleep.
const WATCHDOG: Duration = Duration::from_secs(30);

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
    /// Queue bounds.
    pub limits: crate::config_limits::LimitsConfig,
    /// TURN REST credentials computed for each connection (`[turn_rest]`).
    pub turn_rest: crate::config_turn::TurnRestConfig,
    /// ICE restarts toward other peerixd peers (`[ice_restart]`).
    pub ice_restart: Option<peerix_proto::RestartPolicy>,
    /// This room's identity.
    pub identity: Identity,
    /// Join metadata.
    pub metadata: Json,
    /// Largest message reassembled from a peer.
    pub max_message_size: usize,
    /// Largest inline `channel:message` part.
    pub inline_limit: usize,
    /// Bounds on each remote peer's connection.
    pub remote: crate::config_remote::RemoteLimits,
    /// Told when the room actor crashes, to re-join (see [`RoomDown`]).
    pub supervisor: Option<Recipient<RoomDown>>,
    /// The room's peers as the send path sees them; this actor keeps it current from the
    /// machine's actions (see `send_path`).
    pub directory: std::sync::Arc<RoomDirectory>,
    /// Where `verify` requests go: the session of the room's verifier, if one is registered.
    pub verifier: Option<Recipient<super::event_bus::Deliver>>,
}

/// The room actor.
pub struct RoomActor {
    pub(super) s: RoomSetup,
    pub(super) codec: SignalingCodec,
    pub(super) me: String,
    pub(super) room_ns: String,
    own_ns: String,
    /// The protocol decisions.
    pub(super) machine: Room,
    /// The actor carrying out each connection the machine created.
    pub(super) conns: HashMap<ConnId, Addr<PeerActor>>,
    timer: Option<(Instant, SpawnHandle)>,
    pub(super) leaving: bool,
    /// Key derivations for senders we do not know yet (forgeable: any key pair is an id).
    pub(super) new_senders: NewSenderLimit,
    /// Packets of new senders over that rate, newest last, taken up as it allows.
    pub(super) deferred: std::collections::VecDeque<Incoming>,
    pub(super) deferred_timer: Option<SpawnHandle>,
    pub(super) deferred_dropped: u64,
    /// What we share (sources by label; peers attach their senders to them).
    pub(super) shares: super::room_shares::LocalShares,
    /// Single-port mode: peers whose connection collided with another on the shared port
    /// (both ends single-port daemons in several shared rooms); their connections get a UDP
    /// port of their own.
    own_port: std::collections::HashSet<String>,
}

/// Bound of [`RoomActor::own_port`]: peers beyond it keep colliding and retrying, as before.
const OWN_PORT_PEERS: usize = 1024;

impl RoomActor {
    /// A room for `s`.
    pub fn new(s: RoomSetup) -> Self {
        let new_senders =
            NewSenderLimit::new(s.limits.new_senders_per_second, s.limits.new_senders_burst);
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
        let mut machine = Room::new(
            RoomConfig {
                me: me.clone(),
                metadata: s.metadata.clone(),
                max_connecting: s.webrtc.max_connecting_peers,
                connection_timeout: s.options.connection_timeout(),
                candidate_debounce: Duration::from_millis(s.options.ice_candidate_debounce),
            },
            rand::thread_rng().gen(),
        );
        machine.set_admission(Instant::now(), s.options.verify.admission());
        machine.set_ice_restart(s.ice_restart);
        // Fresh request numbers for every actor: a verdict meant for a crashed predecessor's
        // request must not settle one of ours.
        machine.number_requests_from(rand::thread_rng().gen_range(0..1u64 << 52));
        machine.set_verifier(Instant::now(), s.verifier.is_some());
        Self {
            s,
            codec,
            me,
            room_ns,
            own_ns,
            machine,
            conns: HashMap::new(),
            timer: None,
            leaving: false,
            new_senders,
            deferred: Default::default(),
            deferred_timer: None,
            deferred_dropped: 0,
            shares: Default::default(),
            own_port: Default::default(),
        }
    }

    /// This room's peer id.
    pub fn id(&self) -> &str {
        &self.me
    }

    pub(super) fn emit_error(&self, code: &str, message: &str, peer: Option<&str>) {
        let mut fields = vec![("error", error_value(code, message))];
        if let Some(p) = peer {
            fields.push(("peer", Value::from(p)));
        }
        self.s
            .bus
            .do_send(Emit(EventRecord::new("error", Some(&self.s.room), fields)));
    }

    /// Carries out what the machine asks for, then sets the timer for its next deadline.
    pub(super) fn drive(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.machine.poll_action() {
            self.act(action, ctx);
        }
        let next = self.machine.poll_timeout();
        if self.timer.as_ref().map(|(at, _)| *at) != next {
            if let Some((_, h)) = self.timer.take() {
                ctx.cancel_future(h);
            }
            if let Some(at) = next {
                let wait = at.saturating_duration_since(Instant::now());
                let h = ctx.run_later(wait, |act, ctx| {
                    act.timer = None;
                    act.machine.handle_timeout(Instant::now());
                    act.drive(ctx);
                });
                self.timer = Some((at, h));
            }
        }
    }

    fn conn_cmd(&self, conn: ConnId, cmd: PeerCmd) {
        if let Some(addr) = self.conns.get(&conn) {
            addr.do_send(cmd);
        }
    }

    fn act(&mut self, action: Action, ctx: &mut Context<Self>) {
        match action {
            Action::Publish { to, kind, message } => {
                let (ns, remote) = match &to {
                    Target::Room => (self.room_ns.clone(), self.me.clone()),
                    Target::Peer(p) => (
                        namespace::escape(p, self.s.options.namespace_hashing),
                        p.clone(),
                    ),
                };
                self.publish(ns, kind, message.as_deref(), &remote, ctx);
            }
            Action::Connect {
                conn,
                remote,
                metadata: _,
            } => {
                let labels: BTreeSet<String> = self.machine.labels().map(str::to_owned).collect();
                let rtc = self.rtc_config_for(&remote);
                // Sends to the peer queue on these lanes from now on (they wait for channels).
                let lanes = self
                    .s
                    .directory
                    .register(&remote, conn, || PeerLanes::new(&labels));
                let setup = PeerSetup {
                    room: self.s.room.clone(),
                    remote,
                    conn,
                    rtc,
                    labels,
                    bus: self.s.bus.clone(),
                    max_message_size: self.s.max_message_size,
                    inline_limit: self.s.inline_limit,
                    limits: self.s.remote.clone(),
                    lanes,
                    max_control_sends: self.s.limits.control_sends_in_flight,
                    sources: self.shares.sources.clone(),
                };
                let addr = PeerActor::new(setup, ctx.address().recipient()).start();
                self.conns.insert(conn, addr);
            }
            Action::Run { conn, op } => self.conn_cmd(conn, PeerCmd::Run(op)),
            Action::SendControl { conn, bytes } => self.conn_cmd(conn, PeerCmd::SendControl(bytes)),
            Action::CreateChannel { conn, options } => {
                self.conn_cmd(conn, PeerCmd::CreateChannel(options))
            }
            Action::CloseChannel { conn, label } => {
                self.conn_cmd(conn, PeerCmd::CloseChannel(label))
            }
            Action::Close { conn } => {
                // Closed by the machine: no longer a send target (its lanes close with its actor).
                self.s.directory.unregister(conn);
                self.conn_cmd(conn, PeerCmd::Close)
            }
            Action::HoldSends { remote, hold } => {
                if let Some(number) = self.s.directory.hold(&remote) {
                    // Sends wait for the new connection until the hold ends (the machine sized
                    // it for the browser to drop its old one and a new one to come up); then
                    // they fail, so a gone peer is not waited for forever.
                    ctx.run_later(hold, move |act, _| act.s.directory.release(&remote, number));
                }
            }
            Action::RemoteIsPeerixd { conn } => self.conn_cmd(conn, PeerCmd::PeerixdRemote),
            Action::Forget { remote } => self.codec.forget_key(&remote),
            Action::Verify {
                request,
                peer,
                metadata,
            } => self.ask_verifier(request, &peer, &metadata),
            Action::Emit(Event::Connection {
                peer,
                state,
                metadata,
            }) => {
                // The send path broadcasts to connected peers only; it learns the state here,
                // where the machine decides it.
                // (`closed` is followed by `Action::Close`, which removes the connection.)
                self.s.directory.set_state(&peer, state);
                self.s.bus.do_send(Emit(EventRecord::new(
                    format!("connection:{}", state.as_str()),
                    Some(&self.s.room),
                    vec![
                        ("peer", Value::from(peer.as_str())),
                        ("state", Value::from(state.as_str())),
                        ("metadata", json_to_msgpack(&metadata)),
                    ],
                )));
            }
            Action::Emit(Event::Media { peer, event }) => self.emit_media(&peer, event),
            Action::Emit(Event::Error {
                code,
                message,
                peer,
            }) => {
                tracing::warn!(room = %self.s.room, peer = ?peer, code, message, "room error");
                self.emit_error(code, &message, peer.as_deref());
            }
        }
    }

    fn publish(
        &mut self,
        to_ns: String,
        kind: SignalType,
        message: Option<&[Json]>,
        remote: &str,
        ctx: &mut Context<Self>,
    ) {
        tracing::debug!(room = %self.s.room, to = %remote, ?kind, "signal out");
        #[cfg(feature = "fault-injection")]
        if super::signal_faults::drop_outgoing(kind) {
            tracing::info!(room = %self.s.room, to = %remote, ?kind, "fault injection: signal lost");
            return;
        }
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

    /// [`Self::rtc_config`] for a connection to `remote`: without single-port mode for a peer
    /// whose last connection collided with another on the shared port (see `own_port`).
    fn rtc_config_for(&self, remote: &str) -> RtcConfig {
        let mut cfg = self.rtc_config();
        if self.own_port.contains(remote) {
            cfg.udp_port = None;
        }
        cfg
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
                .chain(self.s.turn_rest.ice_server())
                .collect(),
            relay_only: self.s.options.ice_transport_policy == IceTransportPolicy::Relay,
            mdns: self.s.webrtc.mdns,
            udp_recv_buffer: self.s.webrtc.udp_recv_buffer,
            max_message_size: self.s.webrtc.max_message_size,
            reactor_threads: self.s.webrtc.reactor_threads,
            inline_drivers: self.s.webrtc.inline_drivers,
            channel_event_queue: self.s.limits.channel_event_queue,
            control_event_queue: self.s.limits.control_event_queue,
            udp_port: self.s.webrtc.udp_port,
        }
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(room = %self.s.room, id = %self.me, driver = %self.s.driver_name, "joining");
        // Bounds what drivers may queue here (they `try_send` and drop when full).
        ctx.set_mailbox_capacity(self.s.limits.driver_event_queue);
        // Supervision backstop: a peer actor that died without reporting is reported to the
        // machine as crashed, which closes it and makes a fresh connection.
        ctx.run_interval(WATCHDOG, |act, ctx| {
            let dead: Vec<ConnId> = act
                .conns
                .iter()
                .filter(|(_, a)| !a.connected())
                .map(|(id, _)| *id)
                .collect();
            for conn in dead {
                act.conns.remove(&conn);
                if let Some(lanes) = act.s.directory.unregister(conn) {
                    lanes.close();
                }
                act.machine.handle_conn_event(
                    Instant::now(),
                    conn,
                    ConnEvent::Closed { crashed: true },
                );
            }
            act.drive(ctx);
        });
        // No message is handled before the subscriptions are in place.
        self.subscribe(ctx, true);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.report_crash(ctx);
        // Left or crashed: sends to this room's peers fail now (a re-joined room gets a fresh
        // directory).
        self.s.directory.clear();
        self.s.driver.do_send(UnsubAll {
            owner: self.s.room.clone(),
        });
        for p in self.conns.values() {
            p.do_send(Shutdown);
        }
        tracing::info!(room = %self.s.room, "left");
    }
}

impl Handler<DriverActive> for RoomActor {
    type Result = ();
    fn handle(&mut self, _: DriverActive, ctx: &mut Self::Context) {
        self.machine.announce();
        self.drive(ctx);
    }
}

impl Handler<PeerInput> for RoomActor {
    type Result = ();
    fn handle(&mut self, m: PeerInput, ctx: &mut Self::Context) {
        if let Some(remote) = m.own_port_for {
            // Bounded by the peers this room can have; one id each.
            if self.own_port.len() < OWN_PORT_PEERS {
                self.own_port.insert(remote);
            }
        }
        if matches!(m.event, ConnEvent::Closed { .. }) {
            self.conns.remove(&m.conn);
            if let Some(lanes) = self.s.directory.unregister(m.conn) {
                lanes.close();
            }
        }
        self.machine
            .handle_conn_event(Instant::now(), m.conn, m.event);
        self.drive(ctx);
    }
}

/// Sent to the supervisor (the `Daemon`) when a room actor crashed (actix runs `stopped` while
/// the panic unwinds), so that it re-joins the room with the same membership.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomDown {
    /// Room name.
    pub room: String,
    /// The actor that crashed (a newer one may already have replaced it).
    pub addr: Addr<RoomActor>,
}

impl RoomActor {
    fn report_crash(&self, ctx: &mut Context<Self>) {
        if !std::thread::panicking() {
            return;
        }
        tracing::error!(room = %self.s.room, "room actor crashed; re-joining the room");
        if let Some(sup) = &self.s.supervisor {
            sup.do_send(RoomDown {
                room: self.s.room.clone(),
                addr: ctx.address(),
            });
        }
    }

    /// Subscribes the room namespace, then our own, then announces (§5.1); at start (`wait`:
    /// nothing else is handled meanwhile) and on a driver restarted under a running room. The
    /// driver actor handles messages in order, so the announce follows both subscriptions.
    fn subscribe(&mut self, ctx: &mut Context<Self>, wait: bool) {
        let subs = [self.room_ns.clone(), self.own_ns.clone()];
        let driver = self.s.driver.clone();
        let owner = self.s.room.clone();
        let incoming = ctx.address().recipient::<Incoming>();
        let active = ctx.address().recipient::<DriverActive>();
        let fut = async move {
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
            Ok(()) => {
                act.machine.announce();
                act.drive(ctx);
            }
            Err(e) => act.emit_error("SIGNALING_ERROR", &format!("subscribing: {e}"), None),
        });
        if wait {
            ctx.wait(fut);
        } else {
            ctx.spawn(fut);
        }
    }
}

/// The room's signaling driver was restarted: use the new one. The room re-subscribes its
/// namespaces and announces, so that peers that joined meanwhile find it (established
/// connections never needed the driver).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UseDriver(pub Addr<DriverActor>);

impl Handler<UseDriver> for RoomActor {
    type Result = ();
    fn handle(&mut self, UseDriver(driver): UseDriver, ctx: &mut Self::Context) {
        if self.leaving || self.s.driver == driver {
            return;
        }
        tracing::info!(room = %self.s.room, driver = %self.s.driver_name, "re-subscribing on the restarted driver");
        self.s.driver = driver;
        self.subscribe(ctx, false);
    }
}

/// Fault injection: make the room actor panic (tests of supervision).
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectRoomPanic;

#[cfg(feature = "fault-injection")]
impl Handler<InjectRoomPanic> for RoomActor {
    type Result = ();
    fn handle(&mut self, _: InjectRoomPanic, _: &mut Self::Context) {
        panic!("injected fault in the actor of room {}", self.s.room);
    }
}

/// Fault injection: make the actor of one data channel panic (tests of supervision).
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct RoomPanicChannel {
    /// Remote peer id.
    pub peer: String,
    /// Channel label.
    pub label: String,
}

#[cfg(feature = "fault-injection")]
impl Handler<RoomPanicChannel> for RoomActor {
    type Result = ResponseFuture<Result<(), DaemonError>>;
    fn handle(&mut self, m: RoomPanicChannel, _: &mut Self::Context) -> Self::Result {
        let peer = self
            .machine
            .peer(&m.peer)
            .and_then(|(conn, _)| self.conns.get(&conn).cloned());
        let room = self.s.room.clone();
        Box::pin(async move {
            let peer = peer.ok_or_else(|| DaemonError::NoSuchPeer {
                room,
                peer: m.peer.clone(),
            })?;
            peer.send(super::peer::PeerPanicChannel(m.label)).await?
        })
    }
}
