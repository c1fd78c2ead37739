//! `IpcListener`: binds the local socket and owns a `ClientSession` per connection: it logs and
//! reports a session that crashed, and on shutdown closes every session with a final
//! `daemon:shutdown` event before the socket goes away.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use rmpv::Value;

use super::access::{client_creds, AccessPolicy, SocketPerms};
use super::client_queue::QueueBudget;
use super::session::{ClientSession, Farewell, SessionEnded, SessionSetup};
#[cfg(unix)]
use super::socket_path::claim;
use super::socket_path::SocketLock;
use crate::actors::daemon::{Daemon, VERSION};
use crate::actors::error_value;
use crate::actors::event_bus::{Emit, EventBus, EventRecord, Number};
use crate::actors::send_path::Routes;
use crate::config::DaemonConfig;
use crate::error::DaemonError;

/// Binds `path`: creates its directory (0700, plus search for whom the socket is opened to),
/// claims the path (see `socket_path`: a lock beside it; a running daemon's socket, a file or a
/// directory are never touched; a stale socket is removed), listens, and gives the socket its
/// `[access]` owner, group and mode. The lock is held as long as the returned listener.
pub fn bind(
    path: &Path,
    perms: SocketPerms,
) -> Result<(interprocess::local_socket::tokio::Listener, SocketLock), DaemonError> {
    let io = |context: String| move |source| DaemonError::Io { context, source };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(io(format!("creating socket directory {}", dir.display())))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = super::access::socket_dir_mode(perms.mode);
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                    .map_err(io(format!("setting mode of {}", dir.display())))?;
                if let Some(gid) = perms.gid.filter(|_| mode & 0o010 != 0) {
                    std::os::unix::fs::chown(dir, None, Some(gid)).map_err(io(format!(
                        "giving {} to access.socket_group",
                        dir.display()
                    )))?;
                }
            }
        }
    }
    #[cfg(unix)]
    let lock = claim(path)?;
    let name = socket_name(path).map_err(io(format!("invalid socket path {}", path.display())))?;
    #[allow(unused_mut)]
    let mut opts = ListenerOptions::new().name(name).reclaim_name(true);
    #[cfg(unix)]
    {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        // Owner-only until the socket has its group: widening first would let the wrong group
        // in for a moment.
        opts = opts.mode(0o600);
    }
    let listener = opts
        .create_tokio()
        .map_err(io(format!("listening on {}", path.display())))?;
    #[cfg(unix)]
    super::access::apply_socket_perms(path, perms)?;
    #[cfg(windows)]
    let _ = perms;
    #[cfg(unix)]
    return Ok((listener, lock));
    #[cfg(windows)]
    return Ok((listener, SocketLock::none()));
}

/// On Unix the path is a socket file.
#[cfg(unix)]
fn socket_name(path: &Path) -> std::io::Result<interprocess::local_socket::Name<'_>> {
    path.to_fs_name::<GenericFilePath>()
}

/// On Windows a plain name is a named pipe `\\.\pipe\NAME` (same rule as the clients).
#[cfg(windows)]
fn socket_name(path: &Path) -> std::io::Result<interprocess::local_socket::Name<'_>> {
    use interprocess::local_socket::GenericNamespaced;
    let s = path.to_string_lossy();
    if s.starts_with(r"\\.\pipe\") || s.starts_with(r"\\?\pipe\") {
        path.to_fs_name::<GenericFilePath>()
    } else {
        s.into_owned().to_ns_name::<GenericNamespaced>()
    }
}

/// The listener actor.
pub struct IpcListener {
    path: PathBuf,
    listener: Option<interprocess::local_socket::tokio::Listener>,
    cfg: Arc<DaemonConfig>,
    daemon: Addr<Daemon>,
    bus: Addr<EventBus>,
    daemon_id: String,
    routes: Routes,
    sessions: HashMap<u64, Addr<ClientSession>>,
    /// Who gets which tier (`[access]`).
    access: Arc<AccessPolicy>,
    /// Bytes queued for all clients (`ipc.client_queue_budget`).
    budget: Arc<QueueBudget>,
    /// This daemon run, told to clients in `welcome` and `status` (`subscribe` with `since`).
    epoch: u64,
    /// Released after the socket is gone (fields drop in order).
    _lock: Option<SocketLock>,
}

impl IpcListener {
    /// A listener over an already bound socket.
    // Everything it hands its sessions; one caller (`run::start`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: PathBuf,
        (listener, lock): (interprocess::local_socket::tokio::Listener, SocketLock),
        cfg: Arc<DaemonConfig>,
        daemon: Addr<Daemon>,
        bus: Addr<EventBus>,
        daemon_id: String,
        routes: Routes,
        access: AccessPolicy,
    ) -> Self {
        Self {
            path,
            listener: Some(listener),
            budget: QueueBudget::new(cfg.ipc.client_queue_budget),
            cfg,
            daemon,
            bus,
            daemon_id,
            routes,
            sessions: HashMap::new(),
            access: Arc::new(access),
            // Below 2^53, so that a JavaScript client reads it exactly.
            epoch: rand::Rng::gen_range(&mut rand::thread_rng(), 1..1u64 << 53),
            _lock: Some(lock),
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Accepted(interprocess::local_socket::tokio::Stream);

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

impl Actor for IpcListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(socket = %self.path.display(), "listening");
        let Some(listener) = self.listener.take() else {
            return;
        };
        let me = ctx.address();
        ctx.spawn(
            async move {
                loop {
                    match listener.accept().await {
                        Ok(stream) => me.do_send(Accepted(stream)),
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<Accepted> for IpcListener {
    type Result = ();
    fn handle(&mut self, Accepted(stream): Accepted, ctx: &mut Self::Context) {
        let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        // Read once, at accept: the credentials are those of whoever connected, and do not
        // change if the descriptor is passed on.
        let access = match client_creds(&stream) {
            Ok(c) => match self.access.decide(c.uid, &c.gids) {
                Some(a) => Ok(a),
                None => Err(format!(
                    "uid {} (groups {:?}) is in no access list; ask the administrator to add \
                         the user or one of its groups to access.full_users/full_groups or \
                         access.read_only_users/read_only_groups",
                    c.uid, c.gids
                )),
            },
            Err(e) => Err(format!(
                "the daemon could not read this client's credentials: {e}"
            )),
        };
        if let Err(why) = &access {
            tracing::info!(session = id, reason = %why, "refusing a client");
        }
        let addr = ClientSession::new(SessionSetup {
            id,
            stream,
            access,
            cfg: self.cfg.clone(),
            daemon: self.daemon.clone(),
            bus: self.bus.clone(),
            daemon_id: self.daemon_id.clone(),
            routes: self.routes.clone(),
            listener: ctx.address().recipient(),
            budget: self.budget.clone(),
            epoch: self.epoch,
        })
        .start();
        self.sessions.insert(id, addr);
    }
}

impl Handler<SessionEnded> for IpcListener {
    type Result = ();
    fn handle(&mut self, m: SessionEnded, _: &mut Self::Context) {
        self.sessions.remove(&m.id);
        // Rooms it verified for fall back to their `verify.fallback` (see `verifier.rs`).
        self.daemon
            .do_send(crate::actors::verifier::SessionGone(m.id));
        if !m.crashed {
            return;
        }
        // The session's own client got an `error` frame; everyone else learns it from an event,
        // since a crash is a daemon bug worth reporting.
        tracing::error!(session = m.id, client = %m.client, "client session crashed; closed its connection");
        let client = if m.client.is_empty() {
            "a client that had not said hello".to_string()
        } else {
            format!("client {:?}", m.client)
        };
        self.bus.do_send(Emit(EventRecord::new(
            "error",
            None,
            vec![(
                "error",
                error_value(
                    "INTERNAL",
                    &format!(
                        "the session of {client} (session {}) crashed and was closed; the \
                         daemon and other clients are unaffected",
                        m.id
                    ),
                ),
            )],
        )));
    }
}

/// Close every session with a final `daemon:shutdown` event, then stop listening (the socket
/// file is removed as the listener is dropped). Resolves when the sessions have flushed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSessions;

impl Handler<CloseSessions> for IpcListener {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: CloseSessions, _: &mut Self::Context) -> Self::Result {
        let sessions: Vec<Addr<ClientSession>> = self.sessions.drain().map(|(_, s)| s).collect();
        let bus = self.bus.clone();
        let event = EventRecord::new(
            "daemon:shutdown",
            None,
            vec![("daemon", Value::from(VERSION))],
        );
        Box::pin(
            async move {
                let Ok(last) = bus.send(Number(event)).await else {
                    return;
                };
                let farewells = sessions.iter().map(|s| s.send(Farewell(last.clone())));
                futures::future::join_all(farewells).await;
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
