//! `ServiceNotifier`: what systemd (and an operator starting peerixd by hand) is told about
//! the running daemon: `READY=1` once the socket listens, `STATUS=` with rooms and peers,
//! `WATCHDOG=1` keep-alives, and the one start-up line on stderr.
//!
//! Every keep-alive is earned by a round-trip through the actor system: a `status` request to
//! the `Daemon`, which asks each driver and room actor. A daemon whose actix thread is wedged
//! (a blocking call or an endless loop in a handler) or whose `Daemon` mailbox is stuck sends
//! none, and systemd restarts it after `WatchdogSec`. A separate thread would keep pinging a
//! daemon that no longer serves anyone.

use std::time::{Duration, Instant};

use actix::prelude::*;
use peerix_ipc_proto::StatusResult;
use sd_notify::NotifyState;

use super::daemon::{Daemon, Exec};

/// How often `STATUS=` may change (systemd shows it in `systemctl status`; more is noise).
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How often the start-up line checks whether the configured rooms have been joined.
const STARTUP_POLL: Duration = Duration::from_millis(50);
/// The start-up line is printed after this even when a configured room is not joined yet
/// (its driver may be down; the retries are logged).
const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// What the start-up line says besides what `status` tells.
pub struct StartupInfo {
    /// Where the socket is, and whether systemd handed it over.
    pub listen: String,
    /// Where the machine key came from.
    pub identity: String,
    /// Rooms from the configuration, waited for before the line is printed.
    pub configured_rooms: Vec<String>,
}

/// The notifier actor (one per daemon process; not used by in-process tests).
pub struct ServiceNotifier {
    daemon: Addr<Daemon>,
    /// Whether `$NOTIFY_SOCKET` is set: without it, nothing periodic runs.
    notify: bool,
    /// Keep-alive interval (half of `$WATCHDOG_USEC`), when systemd wants keep-alives.
    watchdog: Option<Duration>,
    last_watchdog: Option<Instant>,
    last_status: String,
    last_status_at: Option<Instant>,
    startup: Option<(StartupInfo, Instant)>,
    /// The fast poll for the start-up line, cancelled once it is printed.
    startup_poll: Option<SpawnHandle>,
    probing: bool,
}

impl ServiceNotifier {
    /// A notifier reading `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (`$WATCHDOG_PID` must be ours).
    pub fn new(daemon: Addr<Daemon>, startup: StartupInfo) -> Self {
        let notify = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let watchdog = sd_notify::watchdog_enabled()
            .filter(|d| !d.is_zero())
            .map(|d| d / 2);
        Self {
            daemon,
            notify,
            watchdog,
            last_watchdog: None,
            last_status: String::new(),
            last_status_at: None,
            startup: Some((startup, Instant::now() + STARTUP_WAIT)),
            startup_poll: None,
            probing: false,
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.notify {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "could not notify the service manager ($NOTIFY_SOCKET)");
        }
    }

    /// One round-trip through the actors; what it earns is sent when it comes back.
    fn probe(&mut self, ctx: &mut Context<Self>) {
        if self.probing {
            return;
        }
        self.probing = true;
        let timeout = self.watchdog.unwrap_or(STATUS_EVERY).max(STATUS_EVERY);
        let status = self.daemon.send(Exec::Status).timeout(timeout);
        ctx.spawn(status.into_actor(self).map(|res, act, ctx| {
            act.probing = false;
            let status = match res {
                Ok(Ok(v)) => peerix_ipc_proto::from_value::<StatusResult>(v).ok(),
                _ => None,
            };
            // No answer, no keep-alive: that is the point of the watchdog.
            let Some(status) = status else {
                return;
            };
            act.answered(&status, ctx);
        }));
    }

    fn answered(&mut self, status: &StatusResult, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let mut states = Vec::new();
        if let Some(every) = self.watchdog {
            // A little early rather than late: ticks are not exact.
            let due = self
                .last_watchdog
                .is_none_or(|t| now.duration_since(t) + every / 10 >= every);
            if due {
                states.push(NotifyState::Watchdog);
                self.last_watchdog = Some(now);
            }
        }
        let text = status_line(status);
        let status_due = self
            .last_status_at
            .is_none_or(|t| now.duration_since(t) >= STATUS_EVERY);
        let changed = text != self.last_status && status_due;
        if changed {
            self.last_status = text;
            self.last_status_at = Some(now);
            states.push(NotifyState::Status(&self.last_status));
        }
        if !states.is_empty() {
            self.send(&states);
        }
        if let Some((info, deadline)) = &self.startup {
            let joined = info
                .configured_rooms
                .iter()
                .all(|r| status.rooms.iter().any(|s| &s.room == r));
            if joined || now >= *deadline {
                tracing::info!("{}", startup_line(info, status));
                self.startup = None;
                if let Some(h) = self.startup_poll.take() {
                    ctx.cancel_future(h);
                }
                if !self.notify {
                    ctx.stop();
                }
            }
        }
    }
}

impl Actor for ServiceNotifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The socket listens and the configured rooms are joining (`run::start` returned).
        self.send(&[
            NotifyState::Ready,
            NotifyState::Status("started; joining configured rooms"),
        ]);
        if self.notify {
            let every = self.watchdog.map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY));
            ctx.run_interval(every, |act, ctx| act.probe(ctx));
        }
        self.probe(ctx);
        self.startup_poll = Some(ctx.run_interval(STARTUP_POLL, |act, ctx| act.probe(ctx)));
    }
}

/// `STATUS=`: one line for `systemctl status`.
fn status_line(s: &StatusResult) -> String {
    let peers: u64 = s.rooms.iter().map(|r| r.peers).sum();
    let rooms: Vec<String> = s
        .rooms
        .iter()
        .map(|r| format!("{} ({})", r.room, r.peers))
        .collect();
    let mut line = format!(
        "{} room{}, {} peer{}",
        s.rooms.len(),
        if s.rooms.len() == 1 { "" } else { "s" },
        peers,
        if peers == 1 { "" } else { "s" }
    );
    if !rooms.is_empty() {
        line.push_str(": ");
        line.push_str(&rooms.join(", "));
    }
    line
}

/// The line a newcomer reads after starting the daemon by hand.
fn startup_line(info: &StartupInfo, s: &StatusResult) -> String {
    let drivers: Vec<&str> = s
        .drivers
        .iter()
        .filter(|d| d.active)
        .map(|d| d.name.as_str())
        .collect();
    let rooms: Vec<String> = s
        .rooms
        .iter()
        .map(|r| format!("{} as {}", r.room, r.id))
        .collect();
    let missing: Vec<&str> = info
        .configured_rooms
        .iter()
        .filter(|r| !s.rooms.iter().any(|j| &j.room == *r))
        .map(String::as_str)
        .collect();
    let mut line = format!(
        "peerixd {} listening on {}; machine id {} ({}); drivers up: {}; rooms: {}",
        s.version,
        info.listen,
        s.id,
        info.identity,
        if drivers.is_empty() {
            "none yet (one starts with the first room that uses it)".to_string()
        } else {
            drivers.join(", ")
        },
        if rooms.is_empty() {
            "none (join one with `peerix join ROOM`)".to_string()
        } else {
            rooms.join(", ")
        }
    );
    if !missing.is_empty() {
        line.push_str(&format!("; still joining: {}", missing.join(", ")));
    }
    line
}

/// `RELOADING=1` (SIGHUP: the configuration is being read again), with the
/// `MONOTONIC_USEC=` systemd wants beside it; [`notify_reloaded`] follows.
pub fn notify_reloading() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    if let Err(e) = sd_notify::notify(&states) {
        tracing::warn!(error = %e, "could not notify the service manager ($NOTIFY_SOCKET)");
    }
}

/// `READY=1` after a reload.
pub fn notify_reloaded() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not notify the service manager ($NOTIFY_SOCKET)");
    }
}

/// `STOPPING=1` (shutdown has begun: rooms are being left).
pub fn notify_stopping() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: leaving rooms"),
    ]) {
        tracing::warn!(error = %e, "could not notify the service manager ($NOTIFY_SOCKET)");
    }
}
