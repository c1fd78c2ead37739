//! `Reconfigure`: SIGHUP's new configuration reaches the `Daemon`. Rooms added to the file are
//! joined, rooms removed from it lose the configuration's (persistent) hold, and what the daemon
//! reads when it starts a room or a driver (`room_defaults`, `default_driver`, `drivers`) applies
//! from then on; the ICE servers and policy of `room_defaults` also reach the rooms already
//! joined, for their new connections. Keys read only at start are reported as needing a restart.

use std::sync::Arc;

use actix::prelude::*;
use peerix_ipc_proto::LeaveArgs;
use rmpv::Value;

use super::backoff::Backoff;
use super::daemon::Daemon;
use super::event_bus::{Emit, EventRecord};
use super::room_commands::{SetIce, SetTurnRest};
use crate::config::DaemonConfig;

/// Top-level keys the daemon reads only at start (or hands its sessions and rooms once).
const RESTART_KEYS: &[&str] = &[
    "socket", "ipc", "webrtc", "limits", "remote", "access", "service",
];

/// The session number of the configuration's own leave: no client session has number 0, so
/// `leave` releases the persistent hold (PROTOCOL.md §11).
const CONFIG_SESSION: u64 = 0;

/// Apply a reloaded configuration (already validated), with what the reload could not apply
/// before it reached the `Daemon` (e.g. a metrics address that cannot be bound).
#[derive(Message)]
#[rtype(result = "ReloadReport")]
pub struct Reconfigure(pub Arc<DaemonConfig>, pub Vec<String>);

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq, MessageResponse)]
pub struct ReloadReport {
    /// Applied now, e.g. `rooms: joined "lab"`, `log`.
    pub changes: Vec<String>,
    /// Changed keys that take effect at the next restart.
    pub restart: Vec<String>,
    /// Changes that could not be applied, with why (the running setting stays).
    pub refused: Vec<String>,
}

/// What differs between two configurations, key by key (pure; unit tested).
pub fn diff(old: &DaemonConfig, new: &DaemonConfig) -> (Vec<String>, Vec<String>, ReloadReport) {
    let mut report = ReloadReport::default();
    let join: Vec<String> = new
        .rooms
        .iter()
        .filter(|r| !old.rooms.iter().any(|o| o.id == r.id))
        .map(|r| r.id.clone())
        .collect();
    let leave: Vec<String> = old
        .rooms
        .iter()
        .filter(|r| !new.rooms.iter().any(|n| n.id == r.id))
        .map(|r| r.id.clone())
        .collect();
    for r in &join {
        report.changes.push(format!("rooms: joined {r:?}"));
    }
    for r in &leave {
        report.changes.push(format!("rooms: left {r:?}"));
    }
    let as_json = |c: &DaemonConfig| serde_json::to_value(c).unwrap_or_default();
    let (o, n) = (as_json(old), as_json(new));
    if let (Some(o), Some(n)) = (o.as_object(), n.as_object()) {
        for (key, nv) in n {
            if key == "rooms" || o.get(key) == Some(nv) {
                continue;
            }
            if RESTART_KEYS.contains(&key.as_str()) {
                report.restart.push(key.clone());
            } else {
                report.changes.push(key.clone());
            }
        }
    }
    // A room whose entry changed but stayed: its new settings apply when it is next joined.
    for r in &new.rooms {
        let before = old.rooms.iter().find(|o| o.id == r.id);
        if before.is_some_and(|b| serde_json::to_value(b).ok() != serde_json::to_value(r).ok()) {
            report
                .restart
                .push(format!("rooms[{}] (leave and join it to apply)", r.id));
        }
    }
    (join, leave, report)
}

impl Handler<Reconfigure> for Daemon {
    type Result = ReloadReport;

    fn handle(
        &mut self,
        Reconfigure(cfg, refused): Reconfigure,
        ctx: &mut Self::Context,
    ) -> ReloadReport {
        if self.shutting_down {
            return ReloadReport::default();
        }
        let (join, leave, mut report) = diff(&self.cfg, &cfg);
        report.refused = refused;
        // Restart-only keys keep their running values, so that what this run does matches
        // what it reported.
        let mut merged = (*cfg).clone();
        let old = &self.cfg;
        merged.socket.clone_from(&old.socket);
        merged.ipc = old.ipc.clone();
        merged.webrtc = old.webrtc.clone();
        merged.limits = old.limits.clone();
        merged.remote = old.remote.clone();
        merged.access = old.access.clone();
        merged.service = old.service.clone();
        let old_turn_rest = old.turn_rest.clone();
        let cfg = Arc::new(merged);
        self.cfg = cfg.clone();
        if old_turn_rest != cfg.turn_rest {
            for addr in self.rooms.values() {
                addr.do_send(SetTurnRest(cfg.turn_rest.clone()));
            }
        }
        let ice = self.reapply_ice(&cfg.room_defaults);
        if !ice.is_empty() {
            report.changes.push(format!(
                "room_defaults ICE settings: new connections in {}",
                ice.join(", ")
            ));
        }
        for id in leave {
            let fut = self
                .leave_because(
                    LeaveArgs::new(id.clone()),
                    CONFIG_SESSION,
                    Some(super::holds::LeftReason::Config),
                )
                .map(move |res, _, _| {
                    if let Err(e) = res {
                        tracing::info!(room = %id, error = %e, "reload: room removed from the configuration stays joined");
                    }
                });
            ctx.spawn(fut);
        }
        for r in cfg.rooms.iter().filter(|r| join.contains(&r.id)) {
            self.join_configured(r.clone(), Backoff::default(), ctx);
        }
        let strs = |v: &[String]| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect());
        self.bus.do_send(Emit(EventRecord::new(
            "config:reload",
            None,
            vec![
                ("ok", Value::from(true)),
                ("changes", strs(&report.changes)),
                ("restart", strs(&report.restart)),
                ("refused", strs(&report.refused)),
            ],
        )));
        report
    }
}

impl Daemon {
    /// Gives joined rooms the reloaded ICE servers and policy, where their join did not choose
    /// its own; returns the rooms that changed. Their membership records change too, so a
    /// room re-joined after a crash keeps the new settings.
    fn reapply_ice(&mut self, defaults: &crate::config::RoomOptions) -> Vec<String> {
        let mut changed = Vec::new();
        for (room, m) in &mut self.memberships {
            if !super::options::reapply_ice(defaults, m.own_ice, &mut m.options) {
                continue;
            }
            if let Some(addr) = self.rooms.get(room) {
                addr.do_send(SetIce {
                    servers: m.options.ice_servers.clone(),
                    policy: m.options.ice_transport_policy,
                });
            }
            changed.push(format!("{room:?}"));
        }
        changed
    }
}

/// Reports a reload that was refused (the running configuration stays).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadRefused(pub String);

impl Handler<ReloadRefused> for Daemon {
    type Result = ();
    fn handle(&mut self, ReloadRefused(why): ReloadRefused, _: &mut Self::Context) {
        self.bus.do_send(Emit(EventRecord::new(
            "config:reload",
            None,
            vec![("ok", Value::from(false)), ("error", Value::from(why))],
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoomConfig;

    fn room(id: &str) -> RoomConfig {
        RoomConfig {
            id: id.into(),
            metadata: None,
            driver: None,
            channels: vec![],
            verify: None,
        }
    }

    #[test]
    fn rooms_log_and_restart_keys() {
        let old = DaemonConfig {
            rooms: vec![room("a"), room("b")],
            ..Default::default()
        };
        let mut new = DaemonConfig {
            rooms: vec![room("b"), room("c")],
            log: "debug".into(),
            ..Default::default()
        };
        new.ipc.max_frame *= 2;
        let (join, leave, r) = diff(&old, &new);
        assert_eq!(join, vec!["c".to_string()]);
        assert_eq!(leave, vec!["a".to_string()]);
        assert!(r.changes.contains(&"log".to_string()), "{r:?}");
        assert_eq!(r.restart, vec!["ipc".to_string()]);
        assert_eq!(diff(&new, &new).2, ReloadReport::default());
    }
}
