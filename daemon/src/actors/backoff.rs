//! Restart pacing for supervised actors (drivers, rooms): exponential backoff that forgets past
//! failures once the restarted actor has stayed up for a while.

use std::time::{Duration, Instant};

/// First restart delay. Long enough for the remote side of a crashed room to notice its old
/// connections closing before the fresh announce reaches it.
pub const MIN_DELAY: Duration = Duration::from_millis(250);
/// Longest restart delay: a transport that keeps failing is retried twice a minute.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// An actor that stayed up this long is considered healthy again: its next failure restarts it
/// after [`MIN_DELAY`] instead of continuing the doubling.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// The restart schedule of one supervised actor.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    up_since: Option<Instant>,
    attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: MIN_DELAY,
            up_since: None,
            attempts: 0,
        }
    }
}

impl Backoff {
    /// Notes that the actor (re)started now.
    pub fn started(&mut self) {
        self.up_since = Some(Instant::now());
    }

    /// Notes a failure and returns how long to wait before the next restart.
    pub fn failed(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        self.failed_at(Instant::now())
    }

    /// Failures noted so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    fn failed_at(&mut self, now: Instant) -> Duration {
        if self
            .up_since
            .take()
            .is_some_and(|t| now.saturating_duration_since(t) >= STABLE_AFTER)
        {
            self.next = MIN_DELAY;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_DELAY);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_after_a_stable_run() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        let delays: Vec<Duration> = (0..10).map(|_| b.failed_at(t0)).collect();
        assert_eq!(delays[0], MIN_DELAY);
        assert_eq!(delays[1], MIN_DELAY * 2);
        assert_eq!(delays[2], MIN_DELAY * 4);
        assert_eq!(*delays.last().expect("ten delays"), MAX_DELAY);
        // A restart that failed again quickly keeps the long delay...
        b.started();
        assert_eq!(b.failed_at(Instant::now()), MAX_DELAY);
        // ...one that stayed up starts over.
        b.started();
        assert_eq!(b.failed_at(Instant::now() + STABLE_AFTER), MIN_DELAY);
    }
}
