//! The host-wide timer grid of the connections' drivers (see [`crate::runtime`], which applies
//! it to every driver sleep): long sleeps end on instants shared by every connection and
//! every process on the host, quiet connections tick on a coarser grid, ICE keepalives leave
//! on slots of it, and a deadline keeps the wake-up chosen for it (issue 14, BENCHMARKS.md).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Set by [`crate::use_stock_timers`] (benchmarks): sleeps are passed through untouched.
pub(crate) static STOCK_TIMERS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Sleeps at least this long are "housekeeping" and get aligned to [`COALESCE_GRID`].
const COALESCE_MIN: Duration = Duration::from_millis(100);
/// The shared wake-up grid of housekeeping timers: six of tokio's 64 ms wheel slots (see
/// `reactor.rs`), about two ICE ticks.
const COALESCE_GRID: Duration = Duration::from_millis(384);
/// The grid of a connection that carried neither SCTP data nor media for
/// [`DATA_ACTIVE_WINDOW`]: its only timer is then the ICE tick, which checks consent and
/// sends keepalives on [`KEEPALIVE_SLOT`]s (multiples of this step), so the remote's last
/// keepalive answer is followed by the same disconnection check as on [`COALESCE_GRID`]
/// whenever the round trip is under 376 ms (see [`coalesced`]).
const IDLE_GRID: Duration = Duration::from_millis(768);
/// ICE keepalive period, and the period the grid's epoch is anchored to: the keepalives of
/// every connection on the host go out in the same tick (vendor patch 18,
/// [`keepalive_settings`]). The same 2.3 s the 384 ms grid already gave a 2 s interval.
pub(crate) const KEEPALIVE_SLOT: Duration = Duration::from_millis(2304);

/// The ICE keepalive interval and the anchor of its slots for a new connection (`None`s:
/// the stack's own 2 s after the previous keepalive, as with [`crate::use_stock_timers`]).
pub(crate) fn keepalive_settings() -> (Option<Duration>, Option<Instant>) {
    if STOCK_TIMERS.load(std::sync::atomic::Ordering::Relaxed) {
        return (None, None);
    }
    (Some(KEEPALIVE_SLOT), Some(grid_anchor(Instant::now())))
}

/// The origin of the host-wide grids in this process: every grid instant and keepalive slot
/// is a whole number of steps after it.
pub(crate) fn grid_anchor(now: Instant) -> Instant {
    epoch(now)
}

/// How long a driver whose core asked for `requested` sleeps, given what the connection
/// carried lately. While SCTP data moves, the long timers are its own (T3-rtx, delayed SACK):
/// they must fire when due, not up to a grid step later (see [`DataActivity`]). A connection
/// that carries nothing at all, media included, ticks on the coarser [`IDLE_GRID`].
fn driver_sleep(requested: Duration, now: Instant, activity: Activity) -> Duration {
    match activity {
        Activity::Data => requested,
        Activity::Media => coalesced(requested, now, COALESCE_GRID),
        Activity::Quiet => coalesced(requested, now, IDLE_GRID),
    }
}

/// Deadlines closer than this to the previous one are the same core deadline (the driver and
/// the runtime read the clock a few microseconds apart).
const SAME_DEADLINE: Duration = Duration::from_millis(1);
/// Longest single driver sleep; the driver asks again when it ends.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// The wake-up instant a driver chose for its core's deadline, kept while that deadline stands.
///
/// Why: the driver asks for a new sleep after every wake-up, with the time left until the
/// core's deadline. Decided afresh, a deadline first requested 200 ms ahead (an ICE tick, put
/// on the grid) would be requested again by a datagram arriving 110 ms later with 90 ms left:
/// shorter than [`COALESCE_MIN`], so exact, and the late keepalive answer from a 100 ms path
/// left a wake-up of its own behind, off the grid, 200 ms after the tick (plus the timer
/// wheel's cascade before it). The decision is made once per deadline instead.
#[derive(Debug, Default)]
pub(crate) struct SleepPlan {
    /// The core's deadline and the instant chosen for it.
    last: Option<(Instant, Instant)>,
}

impl SleepPlan {
    /// When a driver whose core asked to be woken `requested` after `now` wakes.
    pub(crate) fn wake(
        &mut self,
        requested: Duration,
        now: Instant,
        activity: Activity,
    ) -> Instant {
        // A driver with nothing due sleeps an hour at a time (the core asks for no less).
        let requested = requested.min(LONGEST_SLEEP);
        let deadline = now + requested;
        if let Some((planned, wake)) = self.last {
            let apart = if planned > deadline {
                planned - deadline
            } else {
                deadline - planned
            };
            if apart < SAME_DEADLINE && wake >= deadline && wake > now {
                return wake;
            }
        }
        let wake = now + driver_sleep(requested, now, activity);
        self.last = Some((deadline, wake));
        wake
    }
}

/// Aligns a long driver sleep so it ends on the host-wide `grid` ([`COALESCE_GRID`], or
/// [`IDLE_GRID`] for a quiet connection).
///
/// Why: an idle connection still wakes its driver every 200 ms (the ICE agent's tick, whose
/// floor is a hard-coded 200 ms in `rtc-ice` 0.21 whatever the configured check interval),
/// and each wake-up of a reactor thread costs a context switch and a full pass over the
/// connection's handlers (0.2–0.6 ms of CPU measured on a shared 2-core VM). With the
/// deadlines of all connections on one grid, the connections sharing a reactor thread wake
/// together, so an idle daemon costs a few wake-ups per second per thread instead of five
/// per connection. Only long timers are moved, never later than one grid step: the ICE tick
/// (keepalives are due every 2 s, disconnection is declared after 5 s), delayed SACKs
/// (200 ms) and retransmission timers (≥ 1 s). Handshake-time timers are shorter than
/// [`COALESCE_MIN`] and the expedite window caps sleeps at 1 ms, so setup latency is
/// untouched, and traffic wakes the driver through its sockets regardless of timers.
///
/// A quiet connection's ticks are [`IDLE_GRID`] apart: half the wake-ups. Its consent check
/// is not later for it: keepalives (and, from a peerixd, the remote's) leave on
/// [`KEEPALIVE_SLOT`]s, multiples of both grids, so the last packet from a remote that died
/// arrives one round trip after a slot, and the first check more than the 5 s disconnection
/// timeout after it is the slot + 5.376 s on both grids (round trip < 376 ms). A packet
/// arriving between ticks wakes the driver, which sleeps again until the same grid instant:
/// the deadline is recomputed from the core's, not from the wake-up.
fn coalesced(duration: Duration, now: Instant, grid: Duration) -> Duration {
    if duration < COALESCE_MIN {
        return duration;
    }
    match now.checked_add(duration) {
        Some(deadline) => next_multiple(deadline, grid).saturating_duration_since(now),
        None => duration,
    }
}

/// The grid's origin in this process (fixed by the first call).
fn epoch(now: Instant) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| grid_epoch(now))
}

/// The first instant at or after `t` that is a whole number of `step`s after the epoch.
fn next_multiple(t: Instant, step: Duration) -> Instant {
    let epoch = epoch(t);
    let step = step.as_nanos();
    let since = t.saturating_duration_since(epoch).as_nanos();
    let rounded = since.div_ceil(step) * step;
    epoch + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

/// The first instant at or after `now` that is a whole number of tokio timer-wheel slots
/// after the grid's epoch (see `reactor.rs`). The grid step is a multiple of the slot, so
/// every grid instant is such a boundary too.
pub(crate) fn next_slot_boundary(now: Instant) -> Instant {
    next_multiple(now, crate::reactor::WHEEL_SLOT)
}

/// An instant on the grid shared by every process on this host: the grid is anchored to whole
/// multiples of [`KEEPALIVE_SLOT`] (a multiple of both grids) since the Unix epoch, so daemons
/// on one host (and the connections between them, and hosts with synchronised clocks) tend to
/// wake at the same instants and send their keepalives together, and a keepalive that arrives
/// while its receiver is awake for its own timers costs no extra wake-up.
fn grid_epoch(now: Instant) -> Instant {
    let grid = KEEPALIVE_SLOT.as_nanos();
    let phase = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % grid)
        .unwrap_or(0);
    now.checked_sub(Duration::from_nanos(u64::try_from(phase).unwrap_or(0)))
        .unwrap_or(now)
}

/// How long after the last SCTP data a connection's timers stay off the grid: longer than
/// the longest T3-rtx interval (the RTO, backed off to at most 3 s by our rtc-sctp patch) and
/// the 200 ms delayed SACK, so every retransmission timer armed while data moves fires on time.
const DATA_ACTIVE_WINDOW: Duration = Duration::from_secs(4);

/// When a connection last sent or received SCTP data (DTLS application data, also inside a
/// TURN ChannelData message), as seen by its sockets.
///
/// Why: the grid ([`coalesced`]) may end a sleep up to 384 ms late. That is free for ICE
/// ticks and keepalives but not for SCTP's retransmission timer: on a lossy path a lost chunk
/// that fast retransmit cannot recover waits for T3-rtx with the link idle, and each grid
/// delay adds to that stall. The runtime only sees durations, not which timer asked, so it
/// keeps the grid for connections whose SCTP is quiet (idle connections, the case the grid is
/// for) and leaves timers exact for a few seconds after data moved.
#[derive(Debug)]
pub(crate) struct DataActivity {
    /// Nanoseconds since `base` of the last data packet; 0 = never.
    last: std::sync::atomic::AtomicU64,
    /// The same for media (RTP/RTCP).
    last_media: std::sync::atomic::AtomicU64,
    base: Instant,
}

/// What a connection carried within [`DATA_ACTIVE_WINDOW`], which decides its timers' grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity {
    /// SCTP data: exact timers.
    Data,
    /// Media but no data: [`COALESCE_GRID`] (RTCP reports and NACKs keep their pace).
    Media,
    /// Nothing but ICE: [`IDLE_GRID`].
    Quiet,
}

impl Default for DataActivity {
    fn default() -> Self {
        Self::since(Instant::now())
    }
}

impl DataActivity {
    /// Nothing seen yet; times are counted from `base` (no earlier than any `saw_at`).
    pub(crate) fn since(base: Instant) -> Self {
        Self {
            last: std::sync::atomic::AtomicU64::new(0),
            last_media: std::sync::atomic::AtomicU64::new(0),
            base,
        }
    }

    /// Records a datagram if it carries SCTP data or media.
    pub(crate) fn saw(&self, datagram: &[u8]) {
        self.saw_at(datagram, Instant::now());
    }

    /// Records a datagram sent or received at `now` if it carries SCTP data or media.
    pub(crate) fn saw_at(&self, datagram: &[u8], now: Instant) {
        let slot = match classify(datagram) {
            Some(Activity::Data) => &self.last,
            Some(Activity::Media) => &self.last_media,
            _ => return,
        };
        let since = now.saturating_duration_since(self.base);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX).max(1);
        slot.store(nanos, std::sync::atomic::Ordering::Relaxed);
    }

    /// What moved within [`DATA_ACTIVE_WINDOW`] before `now`.
    pub(crate) fn state(&self, now: Instant) -> Activity {
        let recent = |slot: &std::sync::atomic::AtomicU64| {
            let last = slot.load(std::sync::atomic::Ordering::Relaxed);
            last != 0
                && now.saturating_duration_since(self.base + Duration::from_nanos(last))
                    < DATA_ACTIVE_WINDOW
        };
        if recent(&self.last) {
            Activity::Data
        } else if recent(&self.last_media) {
            Activity::Media
        } else {
            Activity::Quiet
        }
    }
}

/// `Data` for DTLS application data (content type 23: SCTP), `Media` for SRTP/SRTCP (first
/// byte 128–191, RFC 7983), directly or as the payload of a TURN ChannelData message (channel
/// numbers 0x4000–0x4FFF, 4-byte header). STUN (ICE checks and keepalives) and DTLS
/// handshakes are neither.
fn classify(datagram: &[u8]) -> Option<Activity> {
    const DTLS_APPLICATION_DATA: u8 = 23;
    let first = match datagram.first() {
        Some(0x40..=0x4f) => datagram.get(4),
        other => other,
    };
    match first {
        Some(&DTLS_APPLICATION_DATA) => Some(Activity::Data),
        Some(128..=191) => Some(Activity::Media),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How far `t` is past the last instant of `grid`.
    fn off_grid(t: Instant, grid: Duration) -> Duration {
        let since = t.saturating_duration_since(grid_anchor(t)).as_nanos();
        Duration::from_nanos((since % grid.as_nanos()) as u64)
    }

    #[test]
    fn quiet_connections_tick_on_the_idle_grid_and_busy_ones_on_time() {
        let now = Instant::now();
        let tick = Duration::from_millis(200);
        let quiet = SleepPlan::default().wake(tick, now, Activity::Quiet);
        assert_eq!(off_grid(quiet, IDLE_GRID), Duration::ZERO);
        assert!(quiet >= now + tick && quiet < now + tick + IDLE_GRID);
        let media = SleepPlan::default().wake(tick, now, Activity::Media);
        assert_eq!(off_grid(media, COALESCE_GRID), Duration::ZERO);
        assert_eq!(
            SleepPlan::default().wake(tick, now, Activity::Data),
            now + tick
        );
        // Keepalive slots are instants of both grids.
        assert_eq!(KEEPALIVE_SLOT.as_nanos() % IDLE_GRID.as_nanos(), 0);
        assert_eq!(KEEPALIVE_SLOT.as_nanos() % COALESCE_GRID.as_nanos(), 0);
    }

    #[test]
    fn a_datagram_between_ticks_keeps_the_wake_up_chosen_for_the_deadline() {
        let mut plan = SleepPlan::default();
        let tick = grid_anchor(Instant::now()) + IDLE_GRID * 4;
        let deadline = tick + Duration::from_millis(200);
        let wake = plan.wake(deadline - tick, tick, Activity::Quiet);
        assert_eq!(wake, tick + IDLE_GRID);
        // An answer 110 ms after the tick: 90 ms left, shorter than what the grid takes, and
        // still the same deadline, so the same wake-up.
        let late = tick + Duration::from_millis(110);
        assert_eq!(plan.wake(deadline - late, late, Activity::Quiet), wake);
        // A new (earlier) deadline is decided afresh: exact, being short.
        let soon = Duration::from_millis(20);
        assert_eq!(plan.wake(soon, late, Activity::Quiet), late + soon);
    }

    #[test]
    fn short_sleeps_are_left_alone() {
        let now = Instant::now();
        for ms in [0, 1, 20, 99] {
            let d = Duration::from_millis(ms);
            assert_eq!(coalesced(d, now, COALESCE_GRID), d);
        }
    }

    #[test]
    fn long_sleeps_end_on_the_shared_grid_within_one_step() {
        let now = Instant::now();
        for ms in [100, 150, 199, 200, 201, 1000, 1999] {
            let d = Duration::from_millis(ms);
            let got = coalesced(d, now, COALESCE_GRID);
            assert!(got >= d, "{ms} ms shortened to {got:?}");
            assert!(got < d + COALESCE_GRID, "{ms} ms stretched to {got:?}");
        }
        // A sleep requested later, for a deadline just before the same grid point, ends at
        // that point too: this is what lets idle connections wake together.
        let point = now + coalesced(Duration::from_millis(150), now, COALESCE_GRID);
        let later = now + Duration::from_millis(30);
        let wanted = point - later - Duration::from_millis(5);
        let other = later + coalesced(wanted, later, COALESCE_GRID);
        let diff = if point > other {
            point - other
        } else {
            other - point
        };
        assert!(diff < Duration::from_micros(1), "{point:?} vs {other:?}");
    }
}
