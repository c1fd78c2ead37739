//! In-process driver (Peerix `MemoryDriver`, §3.3).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::Sender;

use crate::{Driver, DriverError, DriverEvent, RefCounts};

type Subscribers = HashMap<String, HashMap<u64, Subscriber>>;

#[derive(Clone)]
struct Subscriber {
    events: Sender<DriverEvent>,
    delay: Option<Duration>,
}

/// Shared in-process map namespace → subscribed drivers. Cloning yields another
/// handle to the same hub; drivers on the same hub see each other's messages.
#[derive(Clone, Default)]
pub struct MemoryHub {
    subs: Arc<Mutex<Subscribers>>,
}

impl std::fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHub").finish_non_exhaustive()
    }
}

impl MemoryHub {
    /// A new, empty hub (isolated from every other hub).
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide hub, used by `DriverConfig::Memory` (like Peerix's shared
    /// default driver, so two rooms in one process find each other).
    pub fn global() -> MemoryHub {
        static GLOBAL: OnceLock<MemoryHub> = OnceLock::new();
        GLOBAL.get_or_init(MemoryHub::new).clone()
    }

    fn lock(&self) -> MutexGuard<'_, Subscribers> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every mutation is a single insert/remove), so poisoning is ignored.
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// In-process driver: delivery goes through the event channel (hence always
/// asynchronous), including to the publisher itself when it is subscribed.
pub struct MemoryDriver {
    hub: MemoryHub,
    id: u64,
    me: Subscriber,
    refs: Mutex<RefCounts>,
    closed: AtomicBool,
}

impl std::fmt::Debug for MemoryDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDriver")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MemoryDriver {
    /// A driver attached to `hub`, delivering to `events`.
    pub fn new(hub: &MemoryHub, events: Sender<DriverEvent>) -> Self {
        Self::build(hub, events, None)
    }

    /// Like [`MemoryDriver::new`], but every message delivered *to this driver*
    /// arrives after `delay` (Peerix's `delay` option, for latency tests).
    /// Needs a Tokio runtime when messages are delivered.
    pub fn with_delay(hub: &MemoryHub, events: Sender<DriverEvent>, delay: Duration) -> Self {
        Self::build(hub, events, Some(delay))
    }

    fn build(hub: &MemoryHub, events: Sender<DriverEvent>, delay: Option<Duration>) -> Self {
        MemoryDriver {
            hub: hub.clone(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            me: Subscriber { events, delay },
            refs: Mutex::new(RefCounts::default()),
            closed: AtomicBool::new(false),
        }
    }

    fn refs(&self) -> MutexGuard<'_, RefCounts> {
        self.refs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn detach_all(&self) {
        let namespaces = self.refs().drain();
        let mut hub = self.hub.lock();
        for ns in namespaces {
            if let Some(map) = hub.get_mut(&ns) {
                map.remove(&self.id);
                if map.is_empty() {
                    hub.remove(&ns);
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Driver for MemoryDriver {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn is_active(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    async fn subscribe(&self, namespace: &str) -> Result<(), DriverError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(DriverError::Closed("memory"));
        }
        if self.refs().add(namespace) {
            self.hub
                .lock()
                .entry(namespace.to_owned())
                .or_default()
                .insert(self.id, self.me.clone());
        }
        Ok(())
    }

    async fn unsubscribe(&self, namespace: &str) -> Result<(), DriverError> {
        if self.refs().remove(namespace) {
            let mut hub = self.hub.lock();
            if let Some(map) = hub.get_mut(namespace) {
                map.remove(&self.id);
                if map.is_empty() {
                    hub.remove(namespace);
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, namespace: &str, payload: Bytes) -> Result<(), DriverError> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        // Snapshot the subscribers so no lock is held while sending.
        let targets: Vec<Subscriber> = self
            .hub
            .lock()
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for target in targets {
            let event = DriverEvent::Message {
                namespace: namespace.to_owned(),
                payload: payload.clone(),
            };
            match target.delay {
                // A dropped receiver only means that owner is gone: at-most-once.
                None => {
                    let _ = target.events.try_send(event);
                }
                Some(delay) => {
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = target.events.try_send(event);
                    });
                }
            }
        }
        Ok(())
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.detach_all();
    }
}

impl Drop for MemoryDriver {
    fn drop(&mut self) {
        // Don't leave dead senders in a shared (possibly global) hub.
        self.detach_all();
    }
}
