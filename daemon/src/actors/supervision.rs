//! How `Daemon` supervises its children: a driver actor that stops (crash, or its transport
//! ended) is restarted with backoff and handed to its rooms; a room actor that crashes is
//! reported and re-joined with the same membership. See ARCHITECTURE.md, "Supervision tree".

use std::collections::BTreeMap;

use actix::prelude::*;
use peerix_wire::control::ChannelOptions;
use rmpv::Value;
use serde_json::Value as Json;

use super::daemon::Daemon;
use super::driver::{DriverActor, DriverDown};
use super::error_value;
use super::event_bus::{Emit, EventRecord};
use super::room::{RoomActor, RoomDown, RoomOpen, RoomSetup, UseDriver};
use super::send_path::RoomDirectory;
use crate::config::RoomOptions;

/// What a room was joined with: enough to join it again, identically, after its actor crashed.
/// The room's id is derived from the machine identity, the driver and the room name, so it is
/// the same too.
pub struct Membership {
    /// Driver name.
    pub driver_name: String,
    /// Room options after merging the join's overrides.
    pub options: RoomOptions,
    /// The ICE settings the join chose itself, which a reload leaves alone.
    pub own_ice: super::options::OwnIce,
    /// Our metadata.
    pub metadata: Json,
    /// Labels opened room-wide (not the per-peer ones: those peers reconnect anyway).
    pub labels: BTreeMap<String, ChannelOptions>,
    /// The client registered as the room's verifier: the room's, so that a re-joined room
    /// keeps it.
    pub verifier: Option<super::verifier::VerifierClient>,
    /// The connections holding the room, and the persistent hold (`holds.rs`).
    pub holds: super::holds::Holds<super::holds::Holder>,
}

impl Daemon {
    /// Starts the actor of `room` on `driver`; returns our id in the room.
    pub(super) fn start_room(
        &mut self,
        room: &str,
        m: &Membership,
        driver: Addr<DriverActor>,
        ctx: &mut Context<Self>,
    ) -> String {
        let identity = self.room_identity(room, &m.driver_name);
        let id = identity.id().to_string();
        // A fresh directory for every actor: a re-joined room must not inherit the crashed
        // one's connections.
        let directory = RoomDirectory::new(room);
        self.routes.insert(room, directory.clone());
        let setup = RoomSetup {
            room: room.to_string(),
            driver_name: m.driver_name.clone(),
            driver,
            bus: self.bus.clone(),
            options: m.options.clone(),
            webrtc: self.cfg.webrtc.clone(),
            limits: self.cfg.limits.clone(),
            turn_rest: self.cfg.turn_rest.clone(),
            ice_restart: self.cfg.ice_restart.policy(),
            identity,
            metadata: m.metadata.clone(),
            max_message_size: self.cfg.remote.max_message_size as usize,
            remote: self.cfg.remote.clone(),
            inline_limit: self.cfg.ipc.inline_message_limit as usize,
            supervisor: Some(ctx.address().recipient()),
            directory,
            verifier: m.verifier.as_ref().map(|v| v.to.clone()),
        };
        let addr = RoomActor::new(setup).start();
        self.rooms.insert(room.to_string(), addr);
        self.room_restarts
            .entry(room.to_string())
            .or_default()
            .started();
        id
    }

    /// Keeps the room-wide labels of a membership: `Some` for `open`, `None` for `close`.
    pub(super) fn record_label(&mut self, room: &str, open: Option<&ChannelOptions>, label: &str) {
        let Some(m) = self.memberships.get_mut(room) else {
            return;
        };
        match open {
            Some(o) => {
                m.labels.insert(label.to_string(), o.clone());
            }
            None => {
                m.labels.remove(label);
            }
        }
    }

    /// A driver actor was (re)started: rooms still holding a dead one switch to it.
    pub(super) fn driver_started(&mut self, name: &str, addr: &Addr<DriverActor>) {
        self.driver_restarts
            .entry(name.to_string())
            .or_default()
            .started();
        for (room, m) in &self.memberships {
            if m.driver_name != name {
                continue;
            }
            if let Some(r) = self.rooms.get(room).filter(|r| r.connected()) {
                r.do_send(UseDriver(addr.clone()));
            }
        }
    }

    fn emit_error(
        &self,
        room: Option<&str>,
        mut fields: Vec<(&str, Value)>,
        code: &str,
        msg: &str,
    ) {
        fields.push(("error", error_value(code, msg)));
        self.bus
            .do_send(Emit(EventRecord::new("error", room, fields)));
    }

    fn restart_driver(&mut self, name: String, ctx: &mut Context<Self>) {
        if self.shutting_down
            || self.drivers.get(&name).is_some_and(|d| d.connected())
            || !self.memberships.values().any(|m| m.driver_name == name)
        {
            // Already replaced (a join started it), or nobody needs it until the next join.
            return;
        }
        let fut = self.driver(&name, ctx).map(move |res, act, ctx| match res {
            // `driver` emitted `driver:active`.
            Ok(_) => tracing::info!(driver = %name, "driver restarted"),
            Err(e) => {
                let delay = act.driver_restarts.entry(name.clone()).or_default().failed();
                tracing::warn!(driver = %name, error = %e, ?delay, "restarting the driver failed; trying again");
                act.emit_error(
                    None,
                    vec![("driver", Value::from(name.as_str()))],
                    "DRIVER_ERROR",
                    &format!("restarting signaling driver {name:?} failed: {e}; retrying in {delay:?}"),
                );
                ctx.run_later(delay, move |act, ctx| act.restart_driver(name, ctx));
            }
        });
        ctx.spawn(fut);
    }

    fn rejoin(&mut self, room: String, ctx: &mut Context<Self>) {
        if self.shutting_down
            || self.rooms.get(&room).is_some_and(|r| r.connected())
            || !self.memberships.contains_key(&room)
        {
            // Left meanwhile, or joined again by a client.
            return;
        }
        let Some(driver_name) = self.memberships.get(&room).map(|m| m.driver_name.clone()) else {
            return;
        };
        let fut = self.driver(&driver_name, ctx).map(move |res, act, ctx| {
            if act.rooms.get(&room).is_some_and(|r| r.connected()) {
                return;
            }
            let driver = match res {
                Ok(d) => d,
                Err(e) => {
                    let delay = act.room_restarts.entry(room.clone()).or_default().failed();
                    tracing::warn!(%room, error = %e, ?delay, "re-joining the room failed; trying again");
                    ctx.run_later(delay, move |act, ctx| act.rejoin(room, ctx));
                    return;
                }
            };
            let Some(m) = act.memberships.remove(&room) else {
                return;
            };
            act.start_room(&room, &m, driver, ctx);
            if let Some(r) = act.rooms.get(&room) {
                for options in m.labels.values() {
                    r.do_send(RoomOpen {
                        options: options.clone(),
                        to: None,
                    });
                }
            }
            tracing::info!(%room, "room re-joined");
            act.memberships.insert(room, m);
        });
        ctx.spawn(fut);
    }
}

impl Handler<DriverDown> for Daemon {
    type Result = ();
    fn handle(&mut self, m: DriverDown, ctx: &mut Self::Context) {
        if self.shutting_down || self.drivers.get(&m.name) != Some(&m.addr) {
            return;
        }
        self.drivers.remove(&m.name);
        let delay = self
            .driver_restarts
            .entry(m.name.clone())
            .or_default()
            .failed();
        let (code, what) = if m.crashed {
            ("INTERNAL", "the actor of signaling driver")
        } else {
            ("DRIVER_ERROR", "the transport of signaling driver")
        };
        tracing::error!(driver = %m.name, crashed = m.crashed, ?delay, "driver stopped; restarting it");
        let driver = Value::from(m.name.as_str());
        self.bus.do_send(Emit(EventRecord::new(
            "driver:inactive",
            None,
            vec![("driver", driver.clone())],
        )));
        self.emit_error(
            None,
            vec![("driver", driver)],
            code,
            &format!(
                "{what} {:?} stopped; restarting it in {delay:?} (established connections are not affected)",
                m.name
            ),
        );
        let name = m.name;
        ctx.run_later(delay, move |act, ctx| act.restart_driver(name, ctx));
    }
}

impl Handler<RoomDown> for Daemon {
    type Result = ();
    fn handle(&mut self, m: RoomDown, ctx: &mut Self::Context) {
        if self.shutting_down || self.rooms.get(&m.room) != Some(&m.addr) {
            return;
        }
        self.rooms.remove(&m.room);
        if !self.memberships.contains_key(&m.room) {
            return;
        }
        let delay = self
            .room_restarts
            .entry(m.room.clone())
            .or_default()
            .failed();
        self.emit_error(
            Some(&m.room),
            vec![],
            "INTERNAL",
            &format!(
                "the room's actor crashed; re-joining it in {delay:?} with the same id, metadata, \
                 options and channels (its connections are re-established)"
            ),
        );
        let room = m.room;
        ctx.run_later(delay, move |act, ctx| act.rejoin(room, ctx));
    }
}
