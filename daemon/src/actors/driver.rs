//! `DriverActor`: one per signaling driver. Owns the transport, routes incoming packets to the rooms
//! that subscribed their namespace, and reports liveness so rooms can re-announce.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use peerix_signaling::{Driver, DriverEvent};
use rmpv::Value;
use tokio::sync::mpsc::Receiver;
use tokio_stream_shim::BoundedStream;

use super::event_bus::{Emit, EventBus, EventRecord};
use crate::error::DaemonError;

/// A signaling packet for a room.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Incoming {
    /// Namespace it arrived on.
    pub namespace: String,
    /// Raw packet.
    pub payload: Bytes,
}

/// The driver became active again: rooms re-announce (spec §3.1).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct DriverActive;

/// Subscribe a room to a namespace.
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct Sub {
    /// Room actor identity (its room name), to unsubscribe later.
    pub owner: String,
    /// Namespace.
    pub namespace: String,
    /// Where packets go.
    pub incoming: Recipient<Incoming>,
    /// Where liveness goes.
    pub active: Recipient<DriverActive>,
}

/// Drop all subscriptions of a room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnsubAll {
    /// Room name.
    pub owner: String,
}

/// Publish a packet.
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct Publish {
    /// Namespace.
    pub namespace: String,
    /// Raw packet.
    pub payload: Bytes,
}

/// Sent to the supervisor (the `Daemon`) when a driver actor stops, so that it can start a new
/// driver and hand it to the driver's rooms.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DriverDown {
    /// Driver name.
    pub name: String,
    /// The actor that stopped (a newer one may already have replaced it).
    pub addr: Addr<DriverActor>,
    /// Whether it died by a panic (otherwise its transport ended).
    pub crashed: bool,
}

/// Ask for `(kind, active)`.
#[derive(Message)]
#[rtype(result = "(String, bool)")]
pub struct DriverInfo;

struct Subscription {
    owner: String,
    incoming: Recipient<Incoming>,
    active: Recipient<DriverActive>,
}

/// The driver actor.
pub struct DriverActor {
    name: String,
    driver: Arc<dyn Driver>,
    events: Option<Receiver<DriverEvent>>,
    subs: HashMap<String, Vec<Subscription>>,
    bus: Addr<EventBus>,
    supervisor: Recipient<DriverDown>,
    /// Packets dropped because their room's mailbox was full, and when that was last said.
    dropped: u64,
    last_drop_report: Option<std::time::Instant>,
}

impl DriverActor {
    /// Wraps a started driver and the receiver of its events; `supervisor` learns when the actor
    /// stops.
    pub fn new(
        name: String,
        driver: Arc<dyn Driver>,
        events: Receiver<DriverEvent>,
        bus: Addr<EventBus>,
        supervisor: Recipient<DriverDown>,
    ) -> Self {
        Self {
            name,
            driver,
            events: Some(events),
            subs: HashMap::new(),
            bus,
            supervisor,
            dropped: 0,
            last_drop_report: None,
        }
    }
}

impl DriverActor {
    /// Counts packets dropped for busy rooms, reported at most once a second.
    fn report_dropped(&mut self, n: u64) {
        self.dropped += n;
        let now = std::time::Instant::now();
        if self
            .last_drop_report
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1))
        {
            return;
        }
        self.last_drop_report = Some(now);
        let message = format!(
            "{} signaling packets dropped so far because their room was behind \
             (limits.driver_event_queue); peers are invited again",
            self.dropped
        );
        tracing::warn!(driver = %self.name, dropped = self.dropped, "signaling packets dropped");
        self.bus.do_send(Emit(EventRecord::new(
            "error",
            None,
            vec![
                ("driver", Value::from(self.name.as_str())),
                ("error", super::error_value("LIMIT_EXCEEDED", &message)),
            ],
        )));
    }
}

impl Actor for DriverActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(rx) = self.events.take() {
            ctx.add_stream(BoundedStream::new(rx));
        }
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let d = self.driver.clone();
        actix::spawn(async move { d.close().await });
        // actix runs `stopped` while a panic unwinds the actor too: either way the supervisor
        // must replace us, or the rooms would publish into a dead mailbox forever.
        self.supervisor.do_send(DriverDown {
            name: self.name.clone(),
            addr: ctx.address(),
            crashed: std::thread::panicking(),
        });
    }
}

impl StreamHandler<DriverEvent> for DriverActor {
    fn handle(&mut self, ev: DriverEvent, _: &mut Self::Context) {
        match ev {
            DriverEvent::Message { namespace, payload } => {
                let Some(subs) = self.subs.get(&namespace) else {
                    return;
                };
                // A room that is behind (its mailbox holds `limits.driver_event_queue`
                // messages) loses the packet: signaling is lossy by design and invites are
                // retried, while waiting here could deadlock with a room awaiting a `Sub`.
                let mut full = 0;
                for s in subs {
                    let m = Incoming {
                        namespace: namespace.clone(),
                        payload: payload.clone(),
                    };
                    if let Err(SendError::Full(_)) = s.incoming.try_send(m) {
                        full += 1;
                    }
                }
                if full > 0 {
                    self.report_dropped(full);
                }
            }
            DriverEvent::Active(active) => {
                tracing::info!(driver = %self.name, active, "driver liveness changed");
                let name = if active {
                    "driver:active"
                } else {
                    "driver:inactive"
                };
                self.bus.do_send(Emit(EventRecord::new(
                    name,
                    None,
                    vec![("driver", Value::from(self.name.as_str()))],
                )));
                if active {
                    let mut seen = std::collections::HashSet::new();
                    for s in self.subs.values().flatten() {
                        if seen.insert(s.owner.clone()) {
                            s.active.do_send(DriverActive);
                        }
                    }
                }
            }
            DriverEvent::Error(message) => {
                tracing::warn!(driver = %self.name, %message, "driver error");
                self.bus.do_send(Emit(EventRecord::new(
                    "error",
                    None,
                    vec![
                        ("driver", Value::from(self.name.as_str())),
                        ("error", super::error_value("DRIVER_ERROR", &message)),
                    ],
                )));
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The driver's event channel closed: the transport is gone for good (async-nats gave
        // up, the local socket broke). Stopping hands the problem to the supervisor.
        tracing::warn!(driver = %self.name, "driver event stream ended; restarting the driver");
        ctx.stop();
    }
}

impl Handler<Sub> for DriverActor {
    type Result = ResponseFuture<Result<(), DaemonError>>;
    fn handle(&mut self, m: Sub, _: &mut Self::Context) -> Self::Result {
        let first = !self.subs.contains_key(&m.namespace);
        self.subs
            .entry(m.namespace.clone())
            // One subscriber per namespace is the rule (a room's two namespaces are its own):
            // a `Vec`'s first allocation would have room for four (~480 bytes per room).
            .or_insert_with(|| Vec::with_capacity(1))
            .push(Subscription {
                owner: m.owner,
                incoming: m.incoming,
                active: m.active,
            });
        let driver = self.driver.clone();
        let name = self.name.clone();
        Box::pin(async move {
            if first {
                driver
                    .subscribe(&m.namespace)
                    .await
                    .map_err(|e| DaemonError::Driver {
                        driver: name,
                        message: e.to_string(),
                    })?;
            }
            Ok(())
        })
    }
}

impl Handler<UnsubAll> for DriverActor {
    type Result = ();
    fn handle(&mut self, m: UnsubAll, _: &mut Self::Context) {
        let mut emptied = Vec::new();
        for (ns, subs) in self.subs.iter_mut() {
            subs.retain(|s| s.owner != m.owner);
            if subs.is_empty() {
                emptied.push(ns.clone());
            }
        }
        for ns in &emptied {
            self.subs.remove(ns);
        }
        let driver = self.driver.clone();
        actix::spawn(async move {
            for ns in emptied {
                if let Err(e) = driver.unsubscribe(&ns).await {
                    tracing::debug!(%ns, error = %e, "unsubscribe failed");
                }
            }
        });
    }
}

impl Handler<Publish> for DriverActor {
    type Result = ResponseFuture<Result<(), DaemonError>>;
    fn handle(&mut self, m: Publish, _: &mut Self::Context) -> Self::Result {
        let driver = self.driver.clone();
        let name = self.name.clone();
        Box::pin(async move {
            driver
                .publish(&m.namespace, m.payload)
                .await
                .map_err(|e| DaemonError::Driver {
                    driver: name,
                    message: e.to_string(),
                })
        })
    }
}

impl Handler<DriverInfo> for DriverActor {
    type Result = MessageResult<DriverInfo>;
    fn handle(&mut self, _: DriverInfo, _: &mut Self::Context) -> Self::Result {
        MessageResult((self.driver.kind().to_string(), self.driver.is_active()))
    }
}

/// Fault injection: panic inside the driver actor (tests of supervision).
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectDriverPanic;

#[cfg(feature = "fault-injection")]
impl Handler<InjectDriverPanic> for DriverActor {
    type Result = ();
    fn handle(&mut self, _: InjectDriverPanic, _: &mut Self::Context) {
        panic!("injected fault in the actor of driver {}", self.name);
    }
}

/// A tiny adapter from a tokio bounded receiver to a `Stream`, so actors can `add_stream` it without
/// pulling in tokio-stream.
pub(crate) mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Wraps a bounded receiver as a stream: its sender waits while the actor is behind.
    pub struct BoundedStream<T>(tokio::sync::mpsc::Receiver<T>);
    impl<T> BoundedStream<T> {
        /// Wraps `rx`.
        pub fn new(rx: tokio::sync::mpsc::Receiver<T>) -> Self {
            Self(rx)
        }
    }
    impl<T> futures::Stream for BoundedStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}
