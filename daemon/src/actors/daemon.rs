//! `Daemon`: the root of the supervision tree. Starts drivers on demand, joins and leaves rooms, and
//! executes the IPC operations that sessions hand it.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use peerix_ipc_proto::{
    CloseArgs, JoinArgs, JoinResult, LeaveArgs, OpenArgs, PeerInfo as PeerInfoOut, PeersResult,
    RoomInfo as RoomInfoOut, StatusResult, VerifierArgs, VerifyArgs,
};
use peerix_signaling::{connect_driver, DriverConfig, LocalConfig};
use peerix_wire::control::ChannelOptions;
use peerix_wire::identity::Identity;
use rmpv::Value;
use sha2::{Digest, Sha256};

use super::backoff::Backoff;
use super::driver::DriverActor;
use super::driver_status::driver_status;
use super::event_bus::{Deliver, Emit, EventBus, EventRecord};
use super::holds::{Holder, Holds};
pub use super::options::{merge_options, nats_config};
use super::room::{Leave, RoomActor, RoomClose, RoomInfo, RoomOpen, RoomPeers};
use super::send_path::Routes;
use super::supervision::Membership;
use super::{error_value, msgpack_to_json};
use crate::config::DaemonConfig;
use crate::error::DaemonError;

/// The daemon's version string.
pub const VERSION: &str = concat!("peerixd/", env!("CARGO_PKG_VERSION"));

/// The root actor.
pub struct Daemon {
    pub(super) cfg: Arc<DaemonConfig>,
    pub(super) bus: Addr<EventBus>,
    master: Identity,
    pub(super) drivers: HashMap<String, Addr<DriverActor>>,
    pub(super) rooms: HashMap<String, Addr<RoomActor>>,
    /// What each joined room was joined with, to re-join it after a crash.
    pub(super) memberships: HashMap<String, Membership>,
    /// Restart schedules of drivers and rooms, by name.
    pub(super) driver_restarts: HashMap<String, Backoff>,
    pub(super) room_restarts: HashMap<String, Backoff>,
    /// Set by `LeaveAll`: actors stopping now are not restarted.
    pub(super) shutting_down: bool,
    /// The rooms as client sessions reach them to send (see `send_path`); a room (re)started
    /// by `start_room` gets a fresh directory there.
    pub(super) routes: Routes,
}

impl Daemon {
    /// A daemon with this configuration and machine identity.
    pub fn new(cfg: Arc<DaemonConfig>, bus: Addr<EventBus>, master: Identity) -> Self {
        Self {
            cfg,
            bus,
            master,
            drivers: HashMap::new(),
            rooms: HashMap::new(),
            memberships: HashMap::new(),
            driver_restarts: HashMap::new(),
            room_restarts: HashMap::new(),
            shutting_down: false,
            routes: Routes::default(),
        }
    }

    /// Where client sessions send: kept current by this daemon as rooms are joined and left.
    pub fn routes(&self) -> Routes {
        self.routes.clone()
    }

    /// Derives this room's identity from the machine identity. One identity per machine, but a
    /// distinct Peerix id per room: personal namespaces of two rooms on one driver would otherwise
    /// collide, and packets carry no room.
    pub(super) fn room_identity(&self, room: &str, driver: &str) -> Identity {
        let secret = self.master.secret_bytes();
        for counter in 0u32.. {
            let mut h = Sha256::new();
            h.update(b"peerixd room identity v1\0");
            h.update(secret);
            h.update(driver.as_bytes());
            h.update([0]);
            h.update(room.as_bytes());
            h.update(counter.to_be_bytes());
            if let Ok(id) = Identity::from_secret_bytes(&h.finalize()) {
                return id;
            }
        }
        Identity::generate()
    }

    fn driver_config(&self, name: &str) -> Result<DriverConfig, DaemonError> {
        match name {
            "local" => Ok(DriverConfig::Local(LocalConfig {
                dir: self.cfg.drivers.local.dir.clone(),
            })),
            "memory" => Ok(DriverConfig::Memory),
            "nats" => {
                let n = self
                    .cfg
                    .drivers
                    .nats
                    .as_ref()
                    .ok_or_else(|| DaemonError::NoSuchDriver("nats".into()))?;
                Ok(DriverConfig::Nats(nats_config(n)))
            }
            other => Err(DaemonError::NoSuchDriver(other.to_string())),
        }
    }

    /// Returns the running driver actor, starting the driver if needed.
    pub(super) fn driver(
        &mut self,
        name: &str,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Addr<DriverActor>, DaemonError>> {
        if let Some(d) = self.drivers.get(name).filter(|d| d.connected()) {
            let d = d.clone();
            return Box::pin(async move { Ok(d) }.into_actor(self));
        }
        let cfg = match self.driver_config(name) {
            Ok(c) => c,
            Err(e) => return Box::pin(async move { Err(e) }.into_actor(self)),
        };
        let _ = ctx;
        let name = name.to_string();
        let bus = self.bus.clone();
        let queue = self.cfg.limits.driver_event_queue;
        Box::pin(
            async move {
                let (tx, rx) = tokio::sync::mpsc::channel(queue);
                let driver = connect_driver(cfg, tx)
                    .await
                    .map_err(|e| DaemonError::Driver {
                        driver: name.clone(),
                        message: e.to_string(),
                    })?;
                Ok::<_, DaemonError>((name, driver, rx, bus))
            }
            .into_actor(self)
            .map(|res, act, ctx| {
                let (name, driver, rx, bus) = res?;
                // Two joins may race to start the same driver; keep the first.
                if let Some(d) = act.drivers.get(&name).filter(|d| d.connected()) {
                    let d = d.clone();
                    actix::spawn(async move { driver.close().await });
                    return Ok(d);
                }
                tracing::info!(driver = %name, kind = driver.kind(), "driver started");
                let addr =
                    DriverActor::new(name.clone(), driver, rx, bus, ctx.address().recipient())
                        .start();
                act.drivers.insert(name.clone(), addr.clone());
                act.driver_started(&name, &addr);
                // Clients learn of every driver that comes up, the first start included.
                act.bus
                    .do_send(super::event_bus::Emit(super::event_bus::EventRecord::new(
                        "driver:active",
                        None,
                        vec![("driver", Value::from(name.as_str()))],
                    )));
                Ok(addr)
            }),
        )
    }

    /// `join` (from a client: `holder` is its connection; from the configuration: `None`, with
    /// `persist`). A room joined already gets one more hold.
    fn join(
        &mut self,
        args: JoinArgs,
        holder: Option<Holder>,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Value, DaemonError>> {
        if self.memberships.contains_key(&args.room) {
            // Joining twice returns the existing membership (Peerix: a second join is a no-op);
            // also while a crashed room waits to be re-joined.
            let res = self.hold(&args.room, holder, args.persist);
            return Box::pin(futures::future::ready(res).into_actor(self));
        }
        let driver_name = args
            .driver
            .clone()
            .unwrap_or_else(|| self.cfg.default_driver.clone());
        let options = match merge_options(&self.cfg.room_defaults, args.options.as_ref()) {
            Ok(o) => o,
            Err(e) => return Box::pin(async move { Err(e) }.into_actor(self)),
        };
        let own_ice = super::options::OwnIce::of(args.options.as_ref());
        let metadata = args
            .metadata
            .as_ref()
            .map(msgpack_to_json)
            .unwrap_or(serde_json::Value::Null);
        let room = args.room.clone();
        let persist = args.persist;
        Box::pin(self.driver(&driver_name, ctx).map(move |res, act, ctx| {
            let driver = res?;
            if act.memberships.contains_key(&room) {
                // A concurrent join won the race: this one holds the room it joined.
                return act.hold(&room, holder, persist);
            }
            // A client that closed its connection while the driver was starting holds nothing.
            let holder = holder.filter(|h| h.to.connected());
            let mut holds = Holds::default();
            holds.hold(holder.map(|h| (h.session, h)), persist);
            if holds.is_empty() {
                return Err(DaemonError::BadRequest(format!(
                    "join {room:?}: nothing would hold the room (its client disconnected, or a \
                     join from inside the daemon without `persist`)"
                )));
            }
            let membership = Membership {
                driver_name,
                options,
                own_ice,
                metadata: metadata.clone(),
                labels: Default::default(),
                verifier: None,
                holds,
            };
            let id = act.start_room(&room, &membership, driver, ctx);
            let res = join_result(&room, &id, &metadata, &membership.holds);
            act.memberships.insert(room.clone(), membership);
            Ok(res)
        }))
    }

    /// Adds a hold on a joined room; the `join` result.
    fn hold(
        &mut self,
        room: &str,
        holder: Option<Holder>,
        persist: bool,
    ) -> Result<Value, DaemonError> {
        let m = self
            .memberships
            .get_mut(room)
            .ok_or_else(|| DaemonError::NotJoined(room.to_string()))?;
        // A session that ended meanwhile has had its holds released already.
        let holder = holder.filter(|h| h.to.connected());
        m.holds.hold(holder.map(|h| (h.session, h)), persist);
        let driver = m.driver_name.clone();
        let id = self.room_identity(room, &driver).id().to_string();
        let m = &self.memberships[room];
        Ok(join_result(room, &id, &m.metadata, &m.holds))
    }

    fn room(&self, name: &str) -> Result<Addr<RoomActor>, DaemonError> {
        self.rooms
            .get(name)
            .filter(|r| r.connected())
            .cloned()
            .ok_or_else(|| DaemonError::NotJoined(name.to_string()))
    }
}

fn join_result(room: &str, id: &str, metadata: &serde_json::Value, holds: &Holds<Holder>) -> Value {
    let r = JoinResult {
        room: room.to_string(),
        id: id.to_string(),
        metadata: super::json_to_msgpack(metadata),
        holders: holds.holders(),
        persist: holds.persist(),
    };
    peerix_ipc_proto::to_value(&r).unwrap_or(Value::Nil)
}

impl Actor for Daemon {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(id = %self.master.id(), "daemon started");
        super::operator::start_instant();
        // Rooms from the configuration are joined at start; failures are events, not a dead
        // daemon, and a driver that is not up yet is waited for.
        for r in self.cfg.rooms.clone() {
            self.join_configured(r, Backoff::default(), ctx);
        }
    }
}

impl Daemon {
    /// Joins a room from the configuration, and opens its channels. While its driver cannot
    /// connect (e.g. nats-server not up yet) the join is retried with backoff, for as long as
    /// it takes: the operator asked for this room. The first failure is reported as an `error`
    /// event; the retries are logged.
    pub(super) fn join_configured(
        &mut self,
        r: crate::config::RoomConfig,
        mut backoff: Backoff,
        ctx: &mut Context<Self>,
    ) {
        if self.shutting_down {
            return;
        }
        let args = JoinArgs {
            room: r.id.clone(),
            metadata: r.metadata.as_ref().map(super::json_to_msgpack),
            driver: r.driver.clone(),
            options: r.verify.as_ref().map(|v| peerix_ipc_proto::JoinOptions {
                verify: Some(v.to_options()),
                ..Default::default()
            }),
            persist: true,
        };
        let fut = self.join(args, None, ctx).map(move |res, act, ctx| match res {
            Ok(_) => {
                if let Ok(room) = act.room(&r.id) {
                    for label in r.channels.clone() {
                        let options = ChannelOptions {
                            label,
                            ..Default::default()
                        };
                        act.record_label(&r.id, Some(&options), &options.label);
                        room.do_send(RoomOpen { options, to: None });
                    }
                }
            }
            Err(e) => {
                let first = backoff.attempts() == 0;
                let delay = backoff.failed();
                let retry = matches!(e, DaemonError::Driver { .. });
                if first {
                    tracing::error!(room = %r.id, error = %e, "joining configured room failed");
                    let what = if retry {
                        format!("{e}; retrying until the driver connects")
                    } else {
                        e.to_string()
                    };
                    act.bus.do_send(Emit(EventRecord::new(
                        "error",
                        Some(&r.id),
                        vec![("error", error_value(e.code().as_str(), &what))],
                    )));
                } else {
                    tracing::info!(room = %r.id, error = %e, ?delay, "configured room: driver still down, retrying");
                }
                if retry {
                    ctx.run_later(delay, move |act, ctx| act.join_configured(r, backoff, ctx));
                }
            }
        });
        ctx.spawn(fut);
    }
}

/// An operation for the daemon (everything except the session-local ones).
#[derive(Message)]
#[rtype(result = "Result<Value, DaemonError>")]
pub enum Exec {
    /// `status`.
    Status,
    /// `join`, from this client connection (which then holds the room), or from inside the
    /// daemon (`None`: then only `persist` holds it).
    Join(Box<JoinArgs>, Option<Holder>),
    /// `leave`, from this session.
    Leave(LeaveArgs, u64),
    /// `peers`.
    Peers(String),
    /// `forward`.
    Forward(peerix_ipc_proto::ForwardArgs),
    /// `share`.
    Share(peerix_ipc_proto::ShareArgs),
    /// `unshare`.
    Unshare(peerix_ipc_proto::UnshareArgs),
    /// `frame`.
    Frame(peerix_ipc_proto::FrameArgs),
    /// `open`.
    Open(OpenArgs),
    /// `close`.
    Close(CloseArgs),
    /// `verifier`, from this session, which gets the `verify` events there.
    Verifier(VerifierArgs, u64, Recipient<Deliver>),
    /// `verify`, from this session.
    Verify(VerifyArgs, u64),
    /// Fault injection: make a peer actor panic.
    #[cfg(feature = "fault-injection")]
    PanicPeer {
        /// Room.
        room: String,
        /// Remote peer id.
        peer: String,
    },
    /// Fault injection: make a room actor panic.
    #[cfg(feature = "fault-injection")]
    PanicRoom(String),
    /// Fault injection: make a driver actor panic.
    #[cfg(feature = "fault-injection")]
    PanicDriver(String),
    /// Fault injection: make a channel actor panic.
    #[cfg(feature = "fault-injection")]
    PanicChannel {
        /// Room.
        room: String,
        /// Remote peer id.
        peer: String,
        /// Channel label.
        label: String,
    },
}

impl Handler<Exec> for Daemon {
    type Result = ResponseActFuture<Self, Result<Value, DaemonError>>;

    fn handle(&mut self, m: Exec, ctx: &mut Self::Context) -> Self::Result {
        fn done(
            v: Result<Value, DaemonError>,
        ) -> futures::future::Ready<Result<Value, DaemonError>> {
            futures::future::ready(v)
        }
        match m {
            Exec::Join(args, holder) => self.join(*args, holder, ctx),
            Exec::Leave(args, session) => self.leave(args, session),
            Exec::Verifier(a, session, to) => {
                Box::pin(done(self.register_verifier(a, session, to)).into_actor(self))
            }
            Exec::Verify(a, session) => self.verdict(a, session),
            Exec::Status => {
                let drivers = self.configured_drivers();
                let rooms: Vec<(Addr<RoomActor>, u64, bool)> = self
                    .rooms
                    .iter()
                    .map(|(name, r)| {
                        let h = self.memberships.get(name).map(|m| &m.holds);
                        let holders = h.map_or(0, Holds::holders);
                        (r.clone(), holders, h.is_some_and(Holds::persist))
                    })
                    .collect();
                let id = self.master.id().to_string();
                let uptime = super::operator::start_instant().elapsed().as_secs();
                Box::pin(
                    async move {
                        let mut out = StatusResult {
                            version: env!("CARGO_PKG_VERSION").to_string(),
                            id,
                            drivers: vec![],
                            rooms: vec![],
                            uptime,
                        };
                        for (name, d) in drivers {
                            out.drivers.push(driver_status(name, d).await);
                        }
                        for (r, holders, persist) in rooms {
                            if let Ok(info) = r.send(RoomInfo).await {
                                out.rooms.push(RoomInfoOut {
                                    room: info.room,
                                    id: info.id,
                                    holders,
                                    persist,
                                    driver: info.driver,
                                    peers: info.peers as u64,
                                    channels: info.channels,
                                    shares: info.shares,
                                    ice_servers: info.ice_servers,
                                    ice_transport_policy: info.ice_transport_policy,
                                });
                            }
                        }
                        out.rooms.sort_by(|a, b| a.room.cmp(&b.room));
                        out.drivers.sort_by(|a, b| a.name.cmp(&b.name));
                        peerix_ipc_proto::to_value(&out)
                            .map_err(|e| DaemonError::Internal(e.to_string()))
                    }
                    .into_actor(self),
                )
            }
            Exec::Peers(room) => {
                let r = self.room(&room);
                Box::pin(
                    async move {
                        let peers = r?.send(RoomPeers).await?;
                        let out = PeersResult {
                            peers: peers
                                .into_iter()
                                .map(|p| PeerInfoOut {
                                    id: p.id,
                                    state: p.state.as_str().to_string(),
                                    metadata: super::json_to_msgpack(&p.metadata),
                                    channels: p.channels,
                                    tracks: p.tracks,
                                    stats: p.stats.map(super::operator::stats_out),
                                })
                                .collect(),
                        };
                        peerix_ipc_proto::to_value(&out)
                            .map_err(|e| DaemonError::Internal(e.to_string()))
                    }
                    .into_actor(self),
                )
            }
            Exec::Forward(a) => {
                let r = self.room(&a.room);
                // Checked when the op was parsed; a stop has no target.
                let to =
                    a.to.as_deref()
                        .and_then(|t| t.parse().ok())
                        .filter(|_| !a.stop);
                Box::pin(
                    async move {
                        let out = r?
                            .send(super::room_media::RoomForward {
                                peer: a.peer,
                                label: a.label,
                                kind: a.kind,
                                to,
                                deliver: a.deliver,
                            })
                            .await??;
                        peerix_ipc_proto::to_value(&out)
                            .map_err(|e| DaemonError::Internal(e.to_string()))
                    }
                    .into_actor(self),
                )
            }
            Exec::Share(a) => {
                let r = self.room(&a.room);
                Box::pin(
                    async move {
                        let out = r?.send(super::room_shares::RoomShare(a)).await??;
                        peerix_ipc_proto::to_value(&out)
                            .map_err(|e| DaemonError::Internal(e.to_string()))
                    }
                    .into_actor(self),
                )
            }
            Exec::Unshare(a) => {
                let r = self.room(&a.room);
                Box::pin(
                    async move {
                        let unshared = r?.send(super::room_shares::RoomUnshare(a.label)).await??;
                        Ok(super::event_bus::obj(vec![(
                            "unshared",
                            Value::Boolean(unshared),
                        )]))
                    }
                    .into_actor(self),
                )
            }
            Exec::Frame(a) => {
                let r = self.room(&a.room);
                Box::pin(
                    async move {
                        r?.send(super::room_shares::RoomFrame(a)).await??;
                        Ok(super::event_bus::obj(vec![]))
                    }
                    .into_actor(self),
                )
            }
            Exec::Open(a) => {
                let r = self.room(&a.room);
                let options = ChannelOptions {
                    label: a.label,
                    protocol: a.protocol,
                    ordered: a.ordered,
                    max_packet_life_time: a.max_packet_life_time.map(u32::from),
                    max_retransmits: a.max_retransmits.map(u32::from),
                };
                if options.label.is_empty() {
                    return Box::pin(done(Err(DaemonError::BadRequest("open: `label` must not be empty (the empty label is Peerix's control channel)".into()))).into_actor(self));
                }
                if r.is_ok() && a.to.is_none() {
                    self.record_label(&a.room, Some(&options), &options.label);
                }
                Box::pin(
                    async move {
                        r?.send(RoomOpen { options, to: a.to }).await??;
                        Ok(super::event_bus::obj(vec![]))
                    }
                    .into_actor(self),
                )
            }
            Exec::Close(a) => {
                let r = self.room(&a.room);
                if r.is_ok() && a.to.is_none() {
                    self.record_label(&a.room, None, &a.label);
                }
                Box::pin(
                    async move {
                        r?.send(RoomClose {
                            label: a.label,
                            to: a.to,
                        })
                        .await??;
                        Ok(super::event_bus::obj(vec![]))
                    }
                    .into_actor(self),
                )
            }
            #[cfg(feature = "fault-injection")]
            Exec::PanicRoom(room) => {
                let r = self.room(&room);
                Box::pin(
                    done(r.map(|r| {
                        r.do_send(super::room::InjectRoomPanic);
                        super::event_bus::obj(vec![])
                    }))
                    .into_actor(self),
                )
            }
            #[cfg(feature = "fault-injection")]
            Exec::PanicDriver(driver) => {
                let d = self
                    .drivers
                    .get(&driver)
                    .filter(|d| d.connected())
                    .cloned()
                    .ok_or_else(|| DaemonError::NoSuchDriver(driver.clone()));
                Box::pin(
                    done(d.map(|d| {
                        d.do_send(super::driver::InjectDriverPanic);
                        super::event_bus::obj(vec![])
                    }))
                    .into_actor(self),
                )
            }
            #[cfg(feature = "fault-injection")]
            Exec::PanicChannel { room, peer, label } => {
                let r = self.room(&room);
                Box::pin(
                    async move {
                        r?.send(super::room::RoomPanicChannel { peer, label })
                            .await??;
                        Ok(super::event_bus::obj(vec![]))
                    }
                    .into_actor(self),
                )
            }
            #[cfg(feature = "fault-injection")]
            Exec::PanicPeer { room, peer } => {
                let r = self.room(&room);
                Box::pin(
                    async move {
                        r?.send(super::room::RoomPanicPeer(peer)).await??;
                        Ok(super::event_bus::obj(vec![]))
                    }
                    .into_actor(self),
                )
            }
        }
    }
}

/// The machine identity's id (for the handshake).
#[derive(Message)]
#[rtype(result = "String")]
pub struct DaemonId;

impl Handler<DaemonId> for Daemon {
    type Result = String;
    fn handle(&mut self, _: DaemonId, _: &mut Self::Context) -> String {
        self.master.id().to_string()
    }
}

/// Leave every room (daemon shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaveAll;

impl Handler<LeaveAll> for Daemon {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: LeaveAll, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        self.memberships.clear();
        for room in self.rooms.keys() {
            self.routes.remove(room);
        }
        let rooms: Vec<Addr<RoomActor>> = self.rooms.drain().map(|(_, r)| r).collect();
        Box::pin(async move {
            for r in rooms {
                let _ = r.send(Leave).await;
            }
        })
    }
}
