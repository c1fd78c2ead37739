//! NATS driver, wire-compatible with Peerix's `NatsDriver` (§3.2): subject =
//! `prefix ‖ namespace` (no separator), raw payload, no headers, no reply
//! subject, one core-NATS subscription per subject.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::{Driver, DriverError, DriverEvent};

/// Configuration of the [`NatsDriver`].
///
/// Serialized with `connect_timeout` as `connect_timeout_ms` (integer milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs, e.g. `nats://127.0.0.1:4222` (tried in order at connect).
    pub servers: Vec<String>,
    /// Subject prefix; the subject is `prefix + namespace` with nothing in between.
    pub prefix: String,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password (with `user`).
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// NKey seed (`SU…`).
    pub nkey_seed: Option<String>,
    /// `.creds` file (JWT + NKey seed).
    pub creds_file: Option<PathBuf>,
    /// Extra CA certificate(s) (PEM) to trust.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM), together with `tls_client_key`.
    pub tls_client_cert: Option<PathBuf>,
    /// Client private key (PEM), together with `tls_client_cert`.
    pub tls_client_key: Option<PathBuf>,
    /// Refuse to talk to servers that do not use TLS.
    pub require_tls: bool,
    /// Per-server timeout of the initial connect (and of each reconnect attempt).
    #[serde(rename = "connect_timeout_ms", with = "duration_ms")]
    pub connect_timeout: Duration,
    /// Connection name shown by the server (`nats-server` monitoring).
    pub name: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".to_owned()],
            prefix: String::new(),
            user: None,
            password: None,
            token: None,
            nkey_seed: None,
            creds_file: None,
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
            require_tls: false,
            connect_timeout: Duration::from_secs(5),
            name: "peerixd".to_owned(),
        }
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Liveness/error state shared with async-nats' event callback.
struct Shared {
    events: Sender<DriverEvent>,
    /// Set from the event callback; gates publishing. Using our own flag rather
    /// than `Client::connection_state` guarantees that once the owner sees
    /// `Active(true)` its re-announce is not dropped by a lagging state watch.
    active: AtomicBool,
    closed: AtomicBool,
    /// Last error reported while disconnected, so a server that stays down
    /// yields one error, not one per reconnect attempt.
    last_error: Mutex<Option<String>>,
    /// The configured server URLs, named in every error.
    servers: String,
}

/// One sentence for an error of a running client: async-nats' own text already starts with
/// "nats: ", and it does not say which server.
fn client_error_text(servers: &str, error: &str) -> String {
    let error = error.strip_prefix("nats: ").unwrap_or(error);
    format!("nats: {servers}: {error}")
}

impl Shared {
    /// State changes are never dropped: when the queue is full they wait in a task of their own.
    fn emit(&self, event: DriverEvent) {
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(event)) =
            self.events.try_send(event)
        {
            let events = self.events.clone();
            tokio::spawn(async move {
                let _ = events.send(event).await;
            });
        }
    }

    fn on_event(&self, event: Event) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        match event {
            Event::Connected => {
                *lock(&self.last_error) = None;
                // The initial connect also reports Connected; `active` starts
                // true so only real reconnects become Active(true).
                if !self.active.swap(true, Ordering::AcqRel) {
                    self.emit(DriverEvent::Active(true));
                }
            }
            Event::Disconnected | Event::Closed => {
                if self.active.swap(false, Ordering::AcqRel) {
                    self.emit(DriverEvent::Active(false));
                }
            }
            Event::ServerError(e) => {
                self.error(format!("nats: {}: server error: {e}", self.servers))
            }
            Event::ClientError(e) => self.error(client_error_text(&self.servers, &e.to_string())),
            Event::SlowConsumer(sid) => self.error(format!(
                "nats: slow consumer on subscription {sid}; messages were dropped"
            )),
            Event::LameDuckMode => debug!("nats: server entered lame duck mode"),
            Event::Draining => debug!("nats: draining"),
        }
    }

    fn error(&self, message: String) {
        let mut last = lock(&self.last_error);
        if last.as_deref() == Some(message.as_str()) {
            return;
        }
        *last = Some(message.clone());
        self.emit(DriverEvent::Error(message));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Guarded values are replaced in single steps, so poisoning is harmless.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Subscription {
    refs: usize,
    /// Owns the async-nats `Subscriber`; aborting it drops the subscriber,
    /// which sends UNSUB.
    task: JoinHandle<()>,
}

/// NATS driver (see module docs).
pub struct NatsDriver {
    client: Mutex<Option<Client>>,
    prefix: String,
    shared: Arc<Shared>,
    /// tokio mutex: held across `Client::subscribe` so concurrent
    /// subscribe/unsubscribe of one namespace cannot race the refcount.
    subs: tokio::sync::Mutex<HashMap<String, Subscription>>,
}

impl std::fmt::Debug for NatsDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsDriver")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Turn an initial-connect failure into one actionable sentence.
fn describe_connect_error(err: &async_nats::ConnectError, servers: &str) -> String {
    match err.kind() {
        ConnectErrorKind::AuthorizationViolation => format!(
            "nats: authorization failed at {servers} (check user/password/token/creds)"
        ),
        ConnectErrorKind::Authentication => format!(
            "nats: authentication failed at {servers} (cannot sign the server nonce; check nkey/creds): {err}"
        ),
        ConnectErrorKind::TimedOut => format!("nats: connection to {servers} timed out"),
        ConnectErrorKind::Tls => format!("nats: TLS error connecting to {servers}: {err}"),
        ConnectErrorKind::Dns => format!("nats: cannot resolve {servers}: {err}"),
        ConnectErrorKind::ServerParse => format!("nats: invalid server address {servers}: {err}"),
        _ => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
            while let Some(e) = source {
                if let Some(io) = e.downcast_ref::<std::io::Error>() {
                    match io.kind() {
                        std::io::ErrorKind::ConnectionRefused => {
                            return format!(
                                "nats: connection refused at {servers}; is nats-server running?"
                            );
                        }
                        std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::UnexpectedEof => {
                            return format!(
                                "nats: {servers} closed the connection during the handshake ({io}); \
                                 is it a nats-server, and does it accept plain TCP clients?"
                            );
                        }
                        _ => {}
                    }
                }
                source = e.source();
            }
            format!("nats: cannot connect to {servers}: {err}")
        }
    }
}

/// Checks a server URL as the driver will parse it, so that configuration that can never
/// work is refused when the daemon starts rather than when a room first needs the driver.
pub fn check_server_url(url: &str) -> Result<(), String> {
    url.parse::<async_nats::ServerAddr>()
        .map(|_| ())
        .map_err(|e| format!("{url:?} is not a NATS server URL ({e}); e.g. nats://127.0.0.1:4222"))
}

impl NatsDriver {
    /// Connect (no retry on the initial attempt: a failure is returned with the
    /// server URL and the reason); afterwards reconnects forever with
    /// async-nats' default backoff, reporting liveness through `events`.
    pub async fn connect(
        config: NatsConfig,
        events: Sender<DriverEvent>,
    ) -> Result<Self, DriverError> {
        if config.servers.is_empty() {
            return Err(DriverError::Config("nats: no servers configured".into()));
        }
        let servers_text = config.servers.join(", ");
        let mut addrs = Vec::with_capacity(config.servers.len());
        for s in &config.servers {
            let addr: async_nats::ServerAddr = s.parse().map_err(|e| {
                DriverError::Config(format!("nats: invalid server address {s:?}: {e}"))
            })?;
            addrs.push(addr);
        }

        let shared = Arc::new(Shared {
            events,
            active: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            last_error: Mutex::new(None),
            servers: servers_text.clone(),
        });

        let mut opts = ConnectOptions::new()
            .name(&config.name)
            .no_echo()
            .connection_timeout(config.connect_timeout)
            .require_tls(config.require_tls);
        if let Some(path) = &config.creds_file {
            opts = opts.credentials_file(path).await.map_err(|e| {
                DriverError::Config(format!(
                    "nats: cannot read creds file {}: {e}",
                    path.display()
                ))
            })?;
        }
        match (&config.user, &config.password) {
            (Some(u), Some(p)) => opts = opts.user_and_password(u.clone(), p.clone()),
            (None, None) => {}
            _ => {
                return Err(DriverError::Config(
                    "nats: user and password must be given together".into(),
                ))
            }
        }
        if let Some(token) = &config.token {
            opts = opts.token(token.clone());
        }
        if let Some(seed) = &config.nkey_seed {
            opts = opts.nkey(seed.clone());
        }
        if let Some(ca) = &config.tls_ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        match (&config.tls_client_cert, &config.tls_client_key) {
            (Some(cert), Some(key)) => {
                opts = opts.add_client_certificate(cert.clone(), key.clone())
            }
            (None, None) => {}
            _ => {
                return Err(DriverError::Config(
                    "nats: tls_client_cert and tls_client_key must be given together".into(),
                ))
            }
        }
        let cb_shared = shared.clone();
        opts = opts.event_callback(move |event| {
            cb_shared.on_event(event);
            futures::future::ready(())
        });
        let delay_shared = shared.clone();
        opts = opts.reconnect_delay_callback(move |attempts| {
            if delay_shared.closed.load(Ordering::Acquire) {
                // async-nats cannot be told to stop reconnecting; after close
                // park its reconnect loop instead of dialing every few seconds.
                Duration::from_secs(24 * 3600)
            } else {
                default_reconnect_delay(attempts)
            }
        });

        let client = opts
            .connect(addrs)
            .await
            .map_err(|e| DriverError::NatsConnect(describe_connect_error(&e, &servers_text)))?;
        debug!(servers = %servers_text, "nats: connected");
        Ok(NatsDriver {
            client: Mutex::new(Some(client)),
            prefix: config.prefix,
            shared,
            subs: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    fn client(&self) -> Option<Client> {
        lock(&self.client).clone()
    }

    fn subject(&self, namespace: &str) -> String {
        format!("{}{}", self.prefix, namespace)
    }
}

/// async-nats' default: 0 ms, then 2^(n-1) ms capped at 4 s.
fn default_reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        Duration::ZERO
    } else {
        let exp = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(12);
        Duration::from_millis(1u64 << exp).min(Duration::from_secs(4))
    }
}

fn invalid(namespace: &str, reason: impl std::fmt::Display) -> DriverError {
    DriverError::InvalidNamespace {
        driver: "nats",
        namespace: namespace.to_owned(),
        reason: reason.to_string(),
    }
}

#[async_trait::async_trait]
impl Driver for NatsDriver {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn is_active(&self) -> bool {
        !self.shared.closed.load(Ordering::Acquire) && self.shared.active.load(Ordering::Acquire)
    }

    async fn subscribe(&self, namespace: &str) -> Result<(), DriverError> {
        let mut subs = self.subs.lock().await;
        let Some(client) = self.client() else {
            return Err(DriverError::Closed("nats"));
        };
        if let Some(sub) = subs.get_mut(namespace) {
            sub.refs += 1;
            return Ok(());
        }
        // Works while disconnected too: async-nats records the subscription
        // and (re)sends SUB for all live subscriptions on every reconnect.
        let mut subscriber = client
            .subscribe(self.subject(namespace))
            .await
            .map_err(|e| invalid(namespace, e))?;
        let events = self.shared.events.clone();
        let ns = namespace.to_owned();
        let task = tokio::spawn(async move {
            while let Some(msg) = subscriber.next().await {
                let event = DriverEvent::Message {
                    namespace: ns.clone(),
                    payload: msg.payload,
                };
                // Waiting (queue full) leaves messages with async-nats, which drops them and
                // reports a slow consumer once its own buffer is full.
                if events.send(event).await.is_err() {
                    return;
                }
            }
        });
        subs.insert(namespace.to_owned(), Subscription { refs: 1, task });
        Ok(())
    }

    async fn unsubscribe(&self, namespace: &str) -> Result<(), DriverError> {
        let mut subs = self.subs.lock().await;
        if let Some(sub) = subs.get_mut(namespace) {
            sub.refs -= 1;
            if sub.refs == 0 {
                if let Some(sub) = subs.remove(namespace) {
                    sub.task.abort();
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, namespace: &str, payload: Bytes) -> Result<(), DriverError> {
        if !self.is_active() {
            // Peerix drops while inactive; queued offers would be stale on reconnect.
            return Ok(());
        }
        let Some(client) = self.client() else {
            return Ok(());
        };
        client
            .publish(self.subject(namespace), payload)
            .await
            .map_err(|e| match e.kind() {
                async_nats::client::PublishErrorKind::InvalidSubject => invalid(namespace, e),
                _ => DriverError::Nats(format!("nats: publish failed: {e}")),
            })
    }

    async fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.active.store(false, Ordering::Release);
        for (_, sub) in self.subs.lock().await.drain() {
            sub.task.abort();
        }
        let client = lock(&self.client).take();
        if let Some(client) = client {
            // Drain flushes pending publishes and closes the connection; bounded
            // so close() never hangs on a dead server.
            let _ = tokio::time::timeout(Duration::from_secs(2), client.drain()).await;
        }
    }
}

impl Drop for NatsDriver {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        for (_, sub) in self.subs.get_mut().drain() {
            sub.task.abort();
        }
    }
}

#[cfg(test)]
mod error_text_tests {
    use super::client_error_text;

    #[test]
    fn server_urls_are_checked_as_the_driver_parses_them() {
        assert!(super::check_server_url("nats://127.0.0.1:4222").is_ok());
        assert!(super::check_server_url("tls://demo.nats.io").is_ok());
        assert!(super::check_server_url("nats://host:notaport").is_err());
        assert!(super::check_server_url("http://[::1").is_err());
    }

    #[test]
    fn client_errors_say_nats_once_and_name_the_server() {
        assert_eq!(
            client_error_text("nats://10.0.0.1:4222", "nats: IO error: connection reset"),
            "nats: nats://10.0.0.1:4222: IO error: connection reset"
        );
        assert_eq!(
            client_error_text("nats://a:1", "timed out"),
            "nats: nats://a:1: timed out"
        );
    }
}
