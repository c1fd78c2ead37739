//! The threads that drive the connections, with their timer wheels aligned to the wake-up
//! grid of [`crate::runtime`].
//!
//! webrtc's own pool (`TokioRuntime::spawn_reactor`) is the same thing: one OS thread per
//! slot, each parked in a current-thread tokio runtime that connection drivers are spawned
//! onto. Ours differs in one respect, measured on an idle daemon: tokio's timer wheel keeps
//! timers more than 64 ms away in 64 ms slots (counted in whole milliseconds from the
//! runtime's creation) and wakes the thread at the start of the slot to move them to the
//! 1 ms level. A 384 ms grid sleep therefore cost two wake-ups, the second tens of
//! milliseconds after the first. Creating each runtime on a 64 ms boundary of the grid's
//! epoch puts every grid instant on a slot boundary too, so the move and the expiry happen
//! in the same wake-up.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

/// tokio's level-1 timer slot.
pub(crate) const WHEEL_SLOT: Duration = Duration::from_millis(64);
/// The runtime is created this long after a slot boundary, so that tokio's millisecond
/// ticks (rounded up from the runtime's start) put grid instants exactly on slot boundaries.
const ALIGN_OFFSET: Duration = Duration::from_micros(100);
/// A runtime created later than this after a slot boundary has its ticks off by one.
const ALIGN_TOLERANCE: Duration = Duration::from_micros(900);
/// Attempts at creating an aligned runtime before settling for an unaligned one (which only
/// costs the extra wake-ups).
const ALIGN_ATTEMPTS: usize = 4;

struct Pool {
    slots: Box<[OnceLock<Option<Handle>>]>,
    next: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Reactor threads for `requested` (0 = automatic, see `RtcConfig::reactor_threads`).
pub(crate) fn pool_size(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism()
        .map(|n| (n.get() / 2).clamp(1, 4))
        .unwrap_or(1)
}

fn pool(size: usize) -> &'static Pool {
    POOL.get_or_init(|| Pool {
        slots: (0..size.max(1)).map(|_| OnceLock::new()).collect(),
        next: AtomicUsize::new(0),
    })
}

/// Starts every reactor thread now, in parallel (see [`crate::start_reactors`]).
pub(crate) fn start_all(size: usize) {
    let pool = pool(size);
    std::thread::scope(|scope| {
        for (idx, slot) in pool.slots.iter().enumerate() {
            scope.spawn(move || {
                slot.get_or_init(|| start_thread(idx));
            });
        }
    });
}

/// Spawns `future` on one of `size` reactor threads (round robin; the first call fixes the
/// size). Falls back to the calling runtime if a thread cannot be started.
pub(crate) fn spawn(
    size: usize,
    future: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> tokio::task::JoinHandle<()> {
    let pool = pool(size);
    let idx = pool.next.fetch_add(1, Ordering::Relaxed) % pool.slots.len();
    match pool.slots[idx].get_or_init(|| start_thread(idx)) {
        Some(handle) => handle.spawn(future),
        None => tokio::spawn(future),
    }
}

fn start_thread(idx: usize) -> Option<Handle> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Handle>(0);
    let spawned = std::thread::Builder::new()
        // ≤ 15 bytes, Linux's `comm` limit; the same name webrtc's own pool uses.
        .name(format!("webrtc-rx{idx}"))
        .spawn(move || {
            let Some(rt) = aligned_runtime() else {
                return;
            };
            let _ = tx.send(rt.handle().clone());
            // Parked forever: the runtime's I/O and timer drivers keep running the driver
            // tasks spawned onto its handle.
            rt.block_on(std::future::pending::<()>());
        });
    match spawned {
        Ok(_) => rx.recv().ok(),
        Err(err) => {
            tracing::error!("cannot start a WebRTC reactor thread: {err}");
            None
        }
    }
}

/// A current-thread runtime created within [`ALIGN_TOLERANCE`] after a [`WHEEL_SLOT`]
/// boundary of the wake-up grid (unaligned after [`ALIGN_ATTEMPTS`] misses); `None` only if
/// tokio cannot build one at all. Also the actor thread's runtime (`crate::aligned_runtime`),
/// which drives the connections with `RtcConfig::inline_drivers`.
pub(crate) fn aligned_runtime() -> Option<tokio::runtime::Runtime> {
    let build = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    for _ in 0..ALIGN_ATTEMPTS {
        let boundary = crate::runtime::next_slot_boundary(Instant::now());
        std::thread::sleep((boundary + ALIGN_OFFSET).saturating_duration_since(Instant::now()));
        match build() {
            Ok(rt) if Instant::now().saturating_duration_since(boundary) < ALIGN_TOLERANCE => {
                return Some(rt)
            }
            Ok(_) => continue,
            Err(err) => {
                tracing::error!("cannot build a WebRTC reactor runtime: {err}");
                return None;
            }
        }
    }
    tracing::debug!("reactor runtime not aligned to the timer grid (busy machine)");
    build().ok()
}

/// A driver task on a reactor thread.
pub(crate) struct ReactorJoinHandle(pub(crate) tokio::task::JoinHandle<()>);

impl webrtc::runtime::JoinHandle for ReactorJoinHandle {
    fn detach(&self) {
        // tokio detaches on drop; holding the handle does not cancel the task.
    }

    fn abort(&self) {
        self.0.abort();
    }

    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}
