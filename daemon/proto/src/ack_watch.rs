//! The wait for the receiver's acks of one data channel's outgoing messages (§7.4), for all of
//! them at once: which transfers are given up, and when to look again.
//!
//! Peerix fails a send whose ack has not come 10 s after its last frame was queued. Ours are
//! more patient, so that a message still crossing a slow or lossy path is not reported lost
//! while the receiver gets it intact: a message waits while the channel's send buffer drains
//! (failing only when it made no progress for [`BUFFER_WAIT`]), and from the moment the buffer is
//! empty it waits [`ACK_TIMEOUT`], again whenever anything else of the remote's arrives on the
//! channel (the ack travels in order behind the remote's own messages). A transfer given up is
//! aborted at the receiver by the owner.
//!
//! One watch per channel instead of one timer per message: a client pipelining small messages
//! kept hundreds in flight, each with a task and a timer of its own; one watch instead cut the
//! sending daemon's actor thread by 15-20 % (BENCHMARKS.md, session 20). The channel's buffered amount
//! and received-message count are the same for every message anyway. The owner looks at
//! [`AckWatch::poll_timeout`] (no timer at all while nothing waits) and reports what it sees
//! with [`AckWatch::handle_timeout`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long to wait for the ack once the send buffer is empty (Peerix's 10 s, §7.4).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the send buffer may make no progress before a waiting transfer fails (§7.4).
pub const BUFFER_WAIT: Duration = Duration::from_secs(10);
/// How often the watch looks at the channel while transfers wait.
pub const ACK_CHECK: Duration = Duration::from_millis(500);

/// One outgoing transfer waiting for its ack, with what its owner resolves (`T`).
#[derive(Debug)]
struct Waiting<T> {
    value: T,
    /// When its last frame was queued; `None` while frames are still being written.
    since: Option<Instant>,
    /// When the watch first saw the send buffer empty while it waited, and the remote's
    /// message count then.
    drained: Option<(Instant, u64)>,
}

/// A transfer the watch gave up on: abort it at the receiver and fail it with `reason`.
#[derive(Debug, PartialEq)]
pub struct GivenUp<T> {
    /// Transfer id.
    pub id: u32,
    /// What the owner registered with it.
    pub value: T,
    /// For the client.
    pub reason: String,
}

/// The outgoing transfers of one channel that wait for their acks.
#[derive(Debug)]
pub struct AckWatch<T> {
    waiting: HashMap<u32, Waiting<T>>,
    /// How many of `waiting` have all their frames queued (only those are timed).
    timed: usize,
    /// The send buffer at the previous look, and when it stops being allowed to stay there.
    last_buffered: Option<(usize, Instant)>,
    next_check: Option<Instant>,
}

impl<T> Default for AckWatch<T> {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
            timed: 0,
            last_buffered: None,
            next_check: None,
        }
    }
}

impl<T> AckWatch<T> {
    /// Registers transfer `id` before its frames are written, so that its ack is recognised
    /// whenever it comes. Returns what was registered under the same id before (a transfer
    /// whose id came round again while it still waited: the owner fails it).
    pub fn begin(&mut self, id: u32, value: T) -> Option<T> {
        let old = self.waiting.insert(
            id,
            Waiting {
                value,
                since: None,
                drained: None,
            },
        );
        old.map(|w| {
            if w.since.is_some() {
                self.timed -= 1;
            }
            w.value
        })
    }

    /// All frames of transfer `id` are queued at `now`: its wait starts. Returns true when the
    /// watch had nothing to time before, so the owner must look at [`AckWatch::poll_timeout`]
    /// again.
    pub fn sent(&mut self, id: u32, now: Instant) -> bool {
        let Some(w) = self.waiting.get_mut(&id) else {
            return false;
        };
        if w.since.is_some() {
            return false;
        }
        w.since = Some(now);
        self.timed += 1;
        if self.timed == 1 {
            self.next_check = Some(now + ACK_CHECK);
            self.last_buffered = None;
            return true;
        }
        false
    }

    /// The receiver acknowledged transfer `id` (or aborted it): stop waiting. `None` when it was
    /// not waiting (a stray ack).
    pub fn acked(&mut self, id: u32) -> Option<T> {
        self.forget(id)
    }

    /// Stops waiting for transfer `id` (its send failed, or it was acked).
    pub fn forget(&mut self, id: u32) -> Option<T> {
        let w = self.waiting.remove(&id)?;
        if w.since.is_some() {
            self.timed -= 1;
        }
        Some(w.value)
    }

    /// The channel is gone: everything that waited, for the owner to fail.
    pub fn drain(&mut self) -> Vec<T> {
        self.timed = 0;
        self.next_check = None;
        self.waiting.drain().map(|(_, w)| w.value).collect()
    }

    /// Transfers registered and not yet acked, failed or given up.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// When to call [`AckWatch::handle_timeout`] next; `None` while no transfer is timed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.timed == 0 {
            return None;
        }
        self.next_check
    }

    /// A look at the channel at `now`: `buffered` bytes not yet acknowledged by the remote's
    /// SCTP, `received` messages received from the remote so far. Returns the transfers given
    /// up, in id order.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        buffered: usize,
        received: u64,
    ) -> Vec<GivenUp<T>> {
        self.next_check = Some(now + ACK_CHECK);
        let mut stalled = None;
        if buffered > 0 {
            let deadline = match self.last_buffered {
                Some((last, deadline)) if buffered >= last => deadline,
                // The first look, or the buffer fell: it may stay for another `BUFFER_WAIT`.
                _ => now + BUFFER_WAIT,
            };
            self.last_buffered = Some((buffered, deadline));
            if now >= deadline {
                stalled = Some(buffered);
            }
        } else {
            self.last_buffered = None;
        }
        let mut out = Vec::new();
        for (id, w) in &mut self.waiting {
            let Some(since) = w.since else { continue };
            match w.drained {
                None if buffered == 0 => w.drained = Some((now, received)),
                None => {
                    // Each transfer gets the whole `BUFFER_WAIT` after its last frame.
                    if let Some(b) = stalled.filter(|_| now >= since + BUFFER_WAIT) {
                        out.push((*id, no_progress(b)));
                    }
                }
                Some((at, heard)) if now >= at + ACK_TIMEOUT => {
                    if received == heard {
                        out.push((*id, no_ack()));
                    } else {
                        w.drained = Some((now, received));
                    }
                }
                Some(_) => {}
            }
        }
        out.sort_unstable_by_key(|(id, _)| *id);
        out.into_iter()
            .filter_map(|(id, reason)| self.forget(id).map(|value| GivenUp { id, value, reason }))
            .collect()
    }
}

/// The reason a send fails with when the send buffer made no progress for [`BUFFER_WAIT`]
/// (also while a frame waits for room to be written).
pub fn no_progress(buffered: usize) -> String {
    format!(
        "send buffer made no progress for {} s ({buffered} bytes unacknowledged by the remote); \
         is the peer still reachable?",
        BUFFER_WAIT.as_secs()
    )
}

fn no_ack() -> String {
    format!(
        "Transfer timed out (the remote received every frame but sent no acknowledgement, nor \
         anything else on the channel, within {} s)",
        ACK_TIMEOUT.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Looks every `ACK_CHECK` from `from` to `to` ms with the buffer and count `see` gives.
    fn run(
        w: &mut AckWatch<&'static str>,
        t0: Instant,
        from: u64,
        to: u64,
        mut see: impl FnMut(u64) -> (usize, u64),
    ) -> Vec<(u64, GivenUp<&'static str>)> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= to {
            let (b, r) = see(t);
            out.extend(
                w.handle_timeout(at(t0, t), b, r)
                    .into_iter()
                    .map(|g| (t, g)),
            );
            t += ACK_CHECK.as_millis() as u64;
        }
        out
    }

    #[test]
    fn an_acked_transfer_leaves_no_timer() {
        let t0 = Instant::now();
        let mut w = AckWatch::default();
        assert_eq!(w.poll_timeout(), None);
        assert!(w.begin(1, "a").is_none());
        assert_eq!(
            w.poll_timeout(),
            None,
            "not timed while its frames are written"
        );
        assert!(w.sent(1, t0));
        assert_eq!(w.poll_timeout(), Some(at(t0, 500)));
        assert!(w.begin(2, "b").is_none());
        assert!(!w.sent(2, at(t0, 10)), "already armed");
        assert_eq!(w.acked(1), Some("a"));
        assert_eq!(w.acked(1), None, "a second ack is stray");
        assert_eq!(w.acked(2), Some("b"));
        assert_eq!(w.poll_timeout(), None);
        assert!(w.is_empty());
    }

    #[test]
    fn a_stuck_send_buffer_gives_up_after_buffer_wait() {
        let t0 = Instant::now();
        let mut w = AckWatch::default();
        w.begin(3, "a");
        w.sent(3, t0);
        let out = run(&mut w, t0, 500, 20_000, |_| (4096, 0));
        assert_eq!(out.len(), 1);
        let (t, g) = &out[0];
        assert_eq!((g.id, g.value), (3, "a"));
        assert!(
            g.reason.contains("no progress for 10 s (4096 bytes"),
            "{}",
            g.reason
        );
        // First look at 500 ms, then 10 s without a fall.
        assert_eq!(*t, 10_500);
        assert_eq!(w.poll_timeout(), None);
    }

    #[test]
    fn a_draining_buffer_never_gives_up() {
        let t0 = Instant::now();
        let mut w = AckWatch::default();
        w.begin(1, "a");
        w.sent(1, t0);
        // A slow path: the buffer falls by a little every look, for a minute.
        let out = run(&mut w, t0, 500, 60_000, |t| (1_000_000 - t as usize, 0));
        assert!(out.is_empty());
    }

    #[test]
    fn with_the_buffer_empty_the_ack_may_take_ack_timeout() {
        let t0 = Instant::now();
        let mut w = AckWatch::default();
        w.begin(5, "a");
        w.sent(5, t0);
        let out = run(&mut w, t0, 500, 12_000, |_| (0, 7));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].0, 10_500,
            "10 s after the buffer was first seen empty"
        );
        assert!(out[0].1.reason.starts_with("Transfer timed out"));
    }

    #[test]
    fn the_remotes_other_messages_restart_the_ack_wait() {
        let t0 = Instant::now();
        let mut w = AckWatch::default();
        w.begin(5, "a");
        w.sent(5, t0);
        // The remote keeps sending (its messages go before the ack) until 30 s, then stops.
        let out = run(&mut w, t0, 500, 50_000, |t| (0, t.min(30_000) / 1000));
        assert_eq!(out.len(), 1);
        let t = out[0].0;
        assert!((40_000..=41_000).contains(&t), "given up at {t} ms");
    }

    #[test]
    fn a_transfer_sent_during_a_stall_gets_its_own_buffer_wait() {
        let t0 = Instant::now();
        let mut w = AckWatch::default();
        w.begin(1, "early");
        w.sent(1, t0);
        w.begin(2, "late");
        w.sent(2, at(t0, 8_000));
        let out = run(&mut w, t0, 500, 30_000, |_| (100, 0));
        let ids: Vec<(u64, u32)> = out.iter().map(|(t, g)| (*t, g.id)).collect();
        assert_eq!(ids, vec![(10_500, 1), (18_000, 2)]);
    }

    #[test]
    fn frames_still_being_written_are_not_timed() {
        let t0 = Instant::now();
        let mut w = AckWatch::default();
        w.begin(1, "writing");
        w.begin(2, "sent");
        w.sent(2, t0);
        let out = run(&mut w, t0, 500, 30_000, |_| (0, 0));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.id, 2);
        assert_eq!(w.len(), 1, "transfer 1 still waits for its frames");
        assert_eq!(w.poll_timeout(), None);
        assert_eq!(w.drain(), vec!["writing"]);
    }

    #[test]
    fn an_id_that_comes_round_again_hands_back_the_old_transfer() {
        let t0 = Instant::now();
        let mut w = AckWatch::default();
        w.begin(9, "old");
        w.sent(9, t0);
        assert_eq!(w.begin(9, "new"), Some("old"));
        assert_eq!(w.poll_timeout(), None, "the old one was the only one timed");
        assert!(w.sent(9, at(t0, 1)));
        assert_eq!(w.acked(9), Some("new"));
    }
}
