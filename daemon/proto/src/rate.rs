//! A token bucket for work that ids anyone can forge make us do: deriving the signaling key
//! (ECDH) of a sender we have not heard from. Time comes in with every call, so the limit is a
//! function of its inputs and tested on a simulated clock.

use std::time::{Duration, Instant};

/// Allows `rate` new senders per second on average and `burst` at once; counts what it
/// refused and says so at most once per `REPORT_EVERY`.
#[derive(Debug, Clone)]
pub struct NewSenderLimit {
    rate: u32,
    burst: u32,
    tokens: f64,
    last: Option<Instant>,
    dropped: u64,
    reported: u64,
    last_report: Option<Instant>,
}

/// How often refusals are reported at most.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

impl NewSenderLimit {
    /// `rate` per second sustained (0: no limit), `burst` at once (at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = burst.max(1);
        Self {
            rate,
            burst,
            tokens: f64::from(burst),
            last: None,
            dropped: 0,
            reported: 0,
            last_report: None,
        }
    }

    /// Whether one more new sender may be taken up at `now`; a refusal is counted.
    pub fn allow(&mut self, now: Instant) -> bool {
        let ok = self.try_take(now);
        if !ok {
            self.dropped += 1;
        }
        ok
    }

    /// Like [`allow`](Self::allow) without counting a refusal (for work that was put off and
    /// is retried).
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(f64::from(self.burst));
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token is there, from `now` (zero if one is there already or no limit).
    pub fn next_token_in(&self, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let elapsed = self
            .last
            .map_or(0.0, |l| now.saturating_duration_since(l).as_secs_f64());
        let tokens = self.tokens + elapsed * f64::from(self.rate);
        if tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - tokens) / f64::from(self.rate))
        }
    }

    /// Counts a refusal decided by the caller (e.g. work queued behind earlier refusals).
    pub fn refuse(&mut self) {
        self.dropped += 1;
    }

    /// Refusals so far, in all.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// `Some(total refused)` when there are refusals not yet reported and the last report is
    /// at least [`REPORT_EVERY`] old; the caller reports it.
    pub fn report_due(&mut self, now: Instant) -> Option<u64> {
        if self.dropped == self.reported {
            return None;
        }
        if self
            .last_report
            .is_some_and(|t| now.saturating_duration_since(t) < REPORT_EVERY)
        {
            return None;
        }
        self.last_report = Some(now);
        self.reported = self.dropped;
        Some(self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gets_the_burst_then_the_rate_and_is_reported_once_a_second() {
        let t0 = Instant::now();
        let mut l = NewSenderLimit::new(10, 20);
        // 1000 new ids in the same instant: the burst passes, the rest is refused.
        let passed = (0..1000).filter(|_| l.allow(t0)).count();
        assert_eq!(passed, 20);
        assert_eq!(l.dropped(), 980);
        assert_eq!(l.report_due(t0), Some(980));
        // Nothing new to say, and not again within a second.
        assert_eq!(l.report_due(t0), None);
        assert!(!l.allow(t0 + Duration::from_millis(50)));
        assert_eq!(l.report_due(t0 + Duration::from_millis(500)), None);
        assert_eq!(l.report_due(t0 + Duration::from_secs(1)), Some(981));
        // Over the next 10 s of flood, 10 per second get through (plus the ~10 saved up
        // during the second before).
        let mut passed = 0;
        for ms in 1000..11_000 {
            if l.allow(t0 + Duration::from_millis(ms)) {
                passed += 1;
            }
        }
        assert!(
            (105..=111).contains(&passed),
            "{passed} passed in 10 s at 10/s"
        );
    }

    #[test]
    fn quiet_time_refills_only_up_to_the_burst() {
        let t0 = Instant::now();
        let mut l = NewSenderLimit::new(5, 3);
        assert_eq!((0..10).filter(|_| l.allow(t0)).count(), 3);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| l.allow(later)).count(), 3);
    }

    #[test]
    fn the_next_token_comes_after_one_over_rate() {
        let t0 = Instant::now();
        let mut l = NewSenderLimit::new(4, 1);
        assert_eq!(l.next_token_in(t0), Duration::ZERO);
        assert!(l.try_take(t0));
        assert!(!l.try_take(t0));
        assert_eq!(l.dropped(), 0, "try_take does not count");
        let wait = l.next_token_in(t0);
        assert!(wait > Duration::from_millis(240) && wait <= Duration::from_millis(250));
        assert!(l.try_take(t0 + wait));
    }

    #[test]
    fn rate_zero_is_no_limit() {
        let t0 = Instant::now();
        let mut l = NewSenderLimit::new(0, 0);
        assert!((0..10_000).all(|_| l.allow(t0)));
        assert_eq!(l.report_due(t0), None);
    }
}
