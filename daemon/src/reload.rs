//! SIGHUP: read the configuration again and apply what can change while running (rooms, log
//! filter, ICE servers, the metrics endpoint, and what the daemon reads when it starts a room
//! or driver). A configuration that
//! does not load is refused as a whole: the running one stays, and the reason is logged and
//! sent to clients as a `config:reload` event with `ok: false`.

use std::sync::Arc;

use actix::Addr;

use crate::actors::daemon::Daemon;
use crate::actors::reconfigure::{Reconfigure, ReloadRefused};
use crate::config::DaemonConfig;
use crate::error::DaemonError;

/// Loads the configuration again, applies it and returns it (or keeps `current` on failure).
/// `set_log` installs a new log filter; `metrics` is the running Prometheus endpoint.
pub async fn on_sighup(
    current: Arc<DaemonConfig>,
    load: impl FnOnce() -> Result<DaemonConfig, DaemonError>,
    daemon: &Addr<Daemon>,
    set_log: impl FnOnce(&str) -> Result<(), String>,
    metrics: &mut Option<crate::metrics::Endpoint>,
) -> Arc<DaemonConfig> {
    tracing::info!("SIGHUP: reloading the configuration");
    let mut new = match load() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
            daemon.do_send(ReloadRefused(e.to_string()));
            return current;
        }
    };
    if new.log != current.log {
        if let Err(e) = set_log(&new.log) {
            // `validate` checked the filter; kept as an error, not a panic.
            tracing::error!(error = %e, "could not apply the new log filter");
        }
    }
    let mut refused = Vec::new();
    if new.metrics != current.metrics {
        if let Err(e) = crate::metrics::reload(metrics, new.metrics.listen, daemon).await {
            tracing::error!(error = %e, "the metrics endpoint stays where it was");
            refused.push(format!("metrics: {e}"));
            new.metrics = current.metrics.clone();
        }
    }
    let new = Arc::new(new);
    match daemon.send(Reconfigure(new.clone(), refused)).await {
        Ok(r) if r.changes.is_empty() && r.restart.is_empty() && r.refused.is_empty() => {
            tracing::info!("configuration reloaded: nothing changed");
        }
        Ok(r) => tracing::info!(
            changed = %r.changes.join("; "),
            needs_restart = %r.restart.join(", "),
            refused = %r.refused.join("; "),
            "configuration reloaded"
        ),
        Err(e) => tracing::error!(error = %e, "configuration reload: the daemon did not answer"),
    }
    new
}
