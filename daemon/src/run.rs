//! Starting and stopping the actor system (used by `main` and by in-process tests).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use peerix_wire::identity::Identity;

use crate::actors::daemon::{Daemon, DaemonId, LeaveAll};
use crate::actors::event_bus::{BusLimits, EventBus};
use crate::config::DaemonConfig;
use crate::error::DaemonError;
use crate::ipc::listener::{bind, CloseSessions, IpcListener};

/// Handles to a running daemon inside an actix system.
pub struct Running {
    /// Root actor.
    pub daemon: Addr<Daemon>,
    /// Event bus.
    pub bus: Addr<EventBus>,
    /// The machine identity's id.
    pub id: String,
    /// Where sends go (in-process hosts send through it as a client session does).
    pub routes: crate::actors::send_path::Routes,
    /// The IPC listener, when listening.
    pub listener: Option<Addr<IpcListener>>,
    /// Where it listens: the configured path, or the one systemd handed over.
    pub socket: std::path::PathBuf,
    /// Whether the socket came from systemd (`LISTEN_FDS`) rather than being bound here.
    pub activated: bool,
    /// The Prometheus endpoint, when `[metrics] listen` is set (SIGHUP may move it).
    pub metrics: Option<crate::metrics::Endpoint>,
}

/// Starts the daemon's actors and, when `listen` is set, the IPC listener. Must be called inside a
/// running actix system.
pub async fn start(
    cfg: Arc<DaemonConfig>,
    identity: Identity,
    listen: bool,
) -> Result<Running, DaemonError> {
    // Before anything can open a connection: the first one would otherwise wait for them.
    if !cfg.webrtc.inline_drivers {
        peerix_rtc::start_reactors(cfg.webrtc.reactor_threads);
    }
    let bus = EventBus::new(BusLimits::from_config(&cfg.ipc), cfg.ipc.lag_limit).start();
    let id = identity.id().to_string();
    let daemon = Daemon::new(cfg.clone(), bus.clone(), identity);
    let routes = daemon.routes();
    let daemon = daemon.start();
    let mut ipc = None;
    let mut path = cfg.socket_path();
    let mut activated = false;
    if listen {
        let access = crate::ipc::access::resolve(&cfg.access)?;
        // A socket from systemd has the unit's owner and mode, and systemd removes it.
        #[cfg(unix)]
        let handed = crate::ipc::activation::take()?;
        #[cfg(not(unix))]
        let handed = None;
        let listener = match handed {
            Some((listener, at)) => {
                path = at;
                activated = true;
                (listener, crate::ipc::socket_path::SocketLock::none())
            }
            None => bind(&path, access.socket)?,
        };
        ipc = Some(
            IpcListener::new(
                path.clone(),
                listener,
                cfg.clone(),
                daemon.clone(),
                bus.clone(),
                id.clone(),
                routes.clone(),
                access.policy,
            )
            .start(),
        );
    }
    // Make sure the daemon actor is up before anyone talks to it.
    let _ = daemon.send(DaemonId).await?;
    let metrics = match cfg.metrics.listen {
        Some(addr) => Some(crate::metrics::spawn(addr, daemon.clone()).await?),
        None => None,
    };
    crate::alloc::release_free_memory();
    Ok(Running {
        daemon,
        bus,
        id,
        routes,
        listener: ipc,
        socket: path,
        activated,
        metrics,
    })
}

/// Leaves every room so that remote peers see `connection:closed` promptly, gives the WebRTC
/// stack a moment to send the stream resets (and clients the resulting events), then closes
/// every client session with a final `daemon:shutdown` event and removes the socket.
pub async fn shutdown(r: &Running) {
    let _ = r.daemon.send(LeaveAll).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(l) = &r.listener {
        let _ = l.send(CloseSessions).await;
    }
}
