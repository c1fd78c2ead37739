//! The drivers `status` lists: every configured one, started or not (PROTOCOL.md, `status`).

use actix::prelude::*;
use peerix_ipc_proto::DriverInfo as DriverInfoOut;

use super::daemon::Daemon;
use super::driver::{DriverActor, DriverInfo};

impl Daemon {
    /// Every driver a `join` may name (`local` and `memory` always, `nats` when configured),
    /// with its actor when it runs.
    pub(super) fn configured_drivers(&self) -> Vec<(String, Option<Addr<DriverActor>>)> {
        let mut names = vec!["local".to_string(), "memory".to_string()];
        if self.cfg.drivers.nats.is_some() {
            names.push("nats".to_string());
        }
        for n in self.drivers.keys() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
            .into_iter()
            .map(|n| {
                let a = self.drivers.get(&n).cloned();
                (n, a)
            })
            .collect()
    }
}

/// One driver's line in `status`: a driver no room has used yet is `idle`; one whose actor is
/// gone (being restarted) is `inactive`.
pub(super) async fn driver_status(name: String, actor: Option<Addr<DriverActor>>) -> DriverInfoOut {
    let info = match actor {
        Some(a) if a.connected() => a.send(DriverInfo).await.ok(),
        Some(_) => Some((name.clone(), false)),
        None => None,
    };
    let (kind, active, state) = match info {
        Some((kind, true)) => (kind, true, "active"),
        Some((kind, false)) => (kind, false, "inactive"),
        None => (name.clone(), false, "idle"),
    };
    DriverInfoOut {
        name,
        kind,
        active,
        state: state.to_string(),
    }
}
