//! Bounds on what a remote peer can make the daemon do: how many of its offences are reported
//! to local clients ([`ReportLimiter`]), and how many user channels it may have open on one
//! connection ([`ChannelCap`]). Decisions only; the owner passes the time in.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Reports of one kind of remote misbehaviour, rate limited: a hostile peer must not be able to
/// turn each of its messages into an event for every local client. The first [`BURST`] reports
/// go out at once; after that at most one per [`INTERVAL`], which carries how many were
/// suppressed since the last one.
///
/// [`BURST`]: ReportLimiter::BURST
/// [`INTERVAL`]: ReportLimiter::INTERVAL
#[derive(Debug, Clone, Default)]
pub struct ReportLimiter {
    /// Reports allowed so far in the current burst.
    sent: u32,
    /// When the last report went out.
    last: Option<Instant>,
    /// Offences dropped without a report since the last one.
    suppressed: u64,
}

impl ReportLimiter {
    /// Reports that go out before the rate limit applies.
    pub const BURST: u32 = 5;
    /// At most one report per this interval after the burst.
    pub const INTERVAL: Duration = Duration::from_secs(10);

    /// An offence at `now`: `Some(n)` when it is to be reported, `n` being how many earlier
    /// ones were suppressed; `None` when it is only counted.
    pub fn offence(&mut self, now: Instant) -> Option<u64> {
        let quiet_long_enough = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::INTERVAL);
        if quiet_long_enough {
            // A quiet interval starts a new burst.
            self.sent = 0;
        }
        if self.sent < Self::BURST {
            self.sent += 1;
            self.last = Some(now);
            return Some(std::mem::take(&mut self.suppressed));
        }
        self.suppressed += 1;
        None
    }

    /// `message`, with the number of suppressed earlier reports appended when there were any.
    pub fn annotate(message: String, suppressed: u64) -> String {
        if suppressed == 0 {
            message
        } else {
            format!("{message} ({suppressed} similar reports suppressed)")
        }
    }
}

/// The user channels a remote peer has open, or asked us to open, on one connection, under a
/// cap. Labels the local side opened (room-wide or for this peer) never count and are never
/// refused: a remote filling its quota must not keep local clients from their labels.
#[derive(Debug, Clone)]
pub struct ChannelCap {
    max: usize,
    remote: BTreeSet<String>,
    refusals: ReportLimiter,
}

/// What to do with a channel the remote opened or asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Keep it.
    Accept,
    /// Close it; report `Some(message)` to local clients (rate limited), nothing on `None`.
    Refuse(Option<String>),
}

impl ChannelCap {
    /// At most `max` remote channels per connection.
    pub fn new(max: usize) -> Self {
        ChannelCap {
            max,
            remote: BTreeSet::new(),
            refusals: ReportLimiter::default(),
        }
    }

    /// A channel with `label` appeared (or was asked for); `local` when a local client opened
    /// that label. A label already counted is accepted again (a second channel with a known
    /// label replaces the first, §7.1).
    pub fn admit(&mut self, now: Instant, label: &str, local: bool) -> Admit {
        if local || self.remote.contains(label) {
            return Admit::Accept;
        }
        if self.remote.len() < self.max {
            self.remote.insert(label.to_string());
            return Admit::Accept;
        }
        Admit::Refuse(self.refusals.offence(now).map(|suppressed| {
            ReportLimiter::annotate(
                format!(
                    "channel {label:?} refused and closed: the remote peer already has {} \
                     channels open on this connection (remote.max_channels_per_connection)",
                    self.max
                ),
                suppressed,
            )
        }))
    }

    /// The channel of `label` is gone; its slot is free again.
    pub fn gone(&mut self, label: &str) {
        self.remote.remove(label);
    }

    /// Remote channels counted now.
    pub fn len(&self) -> usize {
        self.remote.len()
    }

    /// Whether no remote channel is counted.
    pub fn is_empty(&self) -> bool {
        self.remote.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_burst_then_one_per_interval_with_the_count() {
        let t0 = Instant::now();
        let mut l = ReportLimiter::default();
        let burst: Vec<_> = (0..ReportLimiter::BURST).map(|_| l.offence(t0)).collect();
        assert!(burst.iter().all(|r| *r == Some(0)));
        for _ in 0..100 {
            assert_eq!(l.offence(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(l.offence(t0 + ReportLimiter::INTERVAL), Some(100));
    }

    #[test]
    fn the_cap_counts_only_remote_labels() {
        let now = Instant::now();
        let mut cap = ChannelCap::new(2);
        assert_eq!(cap.admit(now, "a", false), Admit::Accept);
        assert_eq!(cap.admit(now, "b", false), Admit::Accept);
        assert_eq!(cap.admit(now, "a", false), Admit::Accept, "a known label");
        assert_eq!(cap.admit(now, "mine", true), Admit::Accept, "local labels");
        assert!(
            matches!(cap.admit(now, "c", false), Admit::Refuse(Some(m)) if m.contains("\"c\""))
        );
        cap.gone("a");
        assert_eq!(cap.admit(now, "c", false), Admit::Accept);
        assert_eq!(cap.len(), 2);
    }
}
