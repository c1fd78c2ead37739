use super::*;
use rmpv::Value;

fn limits(replay_events: usize, inbox_events: usize) -> BusLimits {
    BusLimits {
        replay_events,
        replay_bytes: 1 << 30,
        inbox: InboxLimits {
            events: inbox_events,
            bytes: 1 << 30,
        },
    }
}

fn msg(room: &str) -> Arc<EventRecord> {
    Arc::new(EventRecord::new(
        "channel:message",
        Some(room),
        vec![("data", Value::from("x"))],
    ))
}

fn other(room: &str) -> Arc<EventRecord> {
    Arc::new(EventRecord::new("connection:connected", Some(room), vec![]))
}

fn filter(events: &[&str]) -> EventFilter {
    EventFilter::parse(events, None).expect("valid filter")
}

fn seqs(c: &CatchUp) -> Vec<u64> {
    c.events.iter().map(|n| n.seq).collect()
}

#[test]
fn live_events_go_to_matching_unpaused_subscribers() {
    let mut b = BusCore::new(limits(16, 16));
    b.subscribe(1, filter(&["channel:message"]));
    b.subscribe(2, filter(&["connection"]));
    assert_eq!(b.emit(msg("r"), 10).to, vec![1]);
    assert_eq!(b.emit(other("r"), 10).to, vec![2]);
    b.pause(1, 3);
    let f = b.emit(msg("r"), 10);
    assert_eq!((f.seq, f.to.clone(), f.kept), (3, vec![], false));
}

#[test]
fn a_paused_subscriber_catches_up_in_order_when_nothing_was_evicted() {
    let mut b = BusCore::new(limits(16, 16));
    b.subscribe(1, filter(&["channel:message"]));
    b.emit(msg("r"), 1); // 1, taken
    b.pause(1, 2);
    b.emit(msg("r"), 1); // 2
    b.emit(other("r"), 1); // 3, not matched
    b.emit(msg("r"), 1); // 4
    let c = b.resume(1, u64::MAX).expect("paused");
    assert_eq!(c.lagged, None);
    assert_eq!(seqs(&c), vec![2, 4]);
    assert_eq!(b.paused_at(1), None);
    assert_eq!(b.emit(msg("r"), 1).to, vec![1]);
    assert!(b.resume(1, u64::MAX).is_none(), "not paused any more");
}

#[test]
fn a_paused_subscriber_is_told_exactly_what_was_evicted() {
    let mut b = BusCore::new(limits(3, 16));
    b.subscribe(1, filter(&["channel:message"]));
    b.emit(msg("r"), 1); // 1
    b.pause(1, 2);
    for i in 0..6 {
        // 2..=7: messages at even seqs, others at odd ones.
        if i % 2 == 0 {
            b.emit(msg("r"), 1);
        } else {
            b.emit(other("r"), 1);
        }
    }
    // Buffer holds 5, 6, 7; evicted 1..=4, of which 2 and 4 matched and were unseen.
    let c = b.resume(1, u64::MAX).expect("paused");
    assert_eq!(
        c.lagged,
        Some(Lagged {
            from: 2,
            to: 4,
            count: 2,
            reason: "evicted"
        })
    );
    assert_eq!(seqs(&c), vec![6]);
}

#[test]
fn replay_bytes_bound_the_buffer() {
    let mut b = BusCore::new(BusLimits {
        replay_events: 100,
        replay_bytes: 25,
        inbox: InboxLimits {
            events: 1,
            bytes: 1,
        },
    });
    for _ in 0..5 {
        b.emit(other("r"), 10);
    }
    assert_eq!(b.buffered(), (2, 20));
}

#[test]
fn subscribe_since_replays_after_the_given_seq_across_all_filters() {
    let mut b = BusCore::new(limits(16, 16));
    b.emit(msg("r"), 1); // 1
    b.emit(other("r"), 1); // 2
    b.emit(msg("r"), 1); // 3
    b.subscribe(7, filter(&["connection"]));
    let c = b
        .subscribe_since(7, filter(&["channel:message"]), 1, true, u64::MAX)
        .expect("valid");
    assert_eq!(c.lagged, None);
    assert_eq!(seqs(&c), vec![2, 3]);
    // Live from here on.
    assert_eq!(b.emit(msg("r"), 1).to, vec![7]);
}

#[test]
fn subscribe_since_too_old_or_from_another_run_says_lagged_first() {
    let mut b = BusCore::new(limits(2, 16));
    for _ in 0..5 {
        b.emit(msg("r"), 1);
    }
    let c = b
        .subscribe_since(1, filter(&["*"]), 1, true, u64::MAX)
        .expect("valid");
    assert_eq!(
        c.lagged,
        Some(Lagged {
            from: 2,
            to: 3,
            count: 2,
            reason: "evicted"
        })
    );
    assert_eq!(seqs(&c), vec![4, 5]);
    let c = b
        .subscribe_since(2, filter(&["*"]), 99, false, u64::MAX)
        .expect("another run's seq is not refused");
    assert_eq!(
        c.lagged.map(|l| (l.from, l.to, l.reason)),
        Some((1, 3, "epoch"))
    );
    assert_eq!(seqs(&c), vec![4, 5]);
}

#[test]
fn subscribe_since_after_the_newest_seq_is_refused_and_subscribes_nothing() {
    let mut b = BusCore::new(limits(2, 16));
    b.emit(msg("r"), 1);
    assert!(matches!(
        b.subscribe_since(1, filter(&["*"]), 5, true, u64::MAX),
        Err(SinceError::InTheFuture {
            since: 5,
            newest: 1
        })
    ));
    assert!(b.emit(msg("r"), 1).to.is_empty());
}

#[test]
fn unmatched_messages_go_to_the_inbox_which_evicts_and_counts() {
    let mut b = BusCore::new(limits(16, 2));
    b.subscribe(1, filter(&["connection"]));
    assert!(b.emit(msg("r"), 1).kept);
    assert!(!b.emit(other("r"), 1).kept, "only messages are kept");
    assert!(b.emit(msg("r"), 1).kept);
    assert!(b.emit(msg("r"), 1).kept); // evicts seq 1
    assert_eq!(b.inbox_counts(), vec![("r".to_string(), 2)]);
    let (got, dropped, more) = b.take_inbox("r", 1, u64::MAX);
    assert_eq!(
        (got.iter().map(|n| n.seq).collect::<Vec<_>>(), dropped, more),
        (vec![3], 1, true)
    );
    let (got, dropped, more) = b.take_inbox("r", 10, u64::MAX);
    assert_eq!((got.len(), dropped, more), (1, 0, false));
    // A matching subscriber, even a paused one, means the message is not kept.
    b.subscribe(2, filter(&["channel:message"]));
    b.pause(2, 99);
    assert!(!b.emit(msg("r"), 1).kept);
    b.drop_inbox("r");
    assert!(b.inbox_counts().is_empty());
}

#[test]
fn inbox_takes_at_least_one_event_and_stays_under_the_byte_cap() {
    let mut i = Inbox::new(InboxLimits {
        events: 10,
        bytes: 1000,
    });
    for seq in 1..=3 {
        i.push(seq, msg("r"), 300);
    }
    let (got, _, more) = i.take(10, 100);
    assert_eq!((got.len(), more), (1, true));
    let (got, _, more) = i.take(10, 600);
    assert_eq!((got.len(), more), (2, false));
}

#[test]
fn transfer_errors_are_kept_but_other_channel_errors_are_not() {
    let with = EventRecord::new("channel:error", Some("r"), vec![("transfer", 3.into())]);
    let without = EventRecord::new("channel:error", Some("r"), vec![]);
    assert!(Inbox::keeps(&with));
    assert!(!Inbox::keeps(&without));
}

#[test]
fn a_catch_up_larger_than_the_room_left_comes_in_steps() {
    let mut b = BusCore::new(limits(16, 16));
    b.subscribe(1, filter(&["*"]));
    b.pause(1, 1);
    for _ in 0..5 {
        b.emit(msg("r"), 10);
    }
    let c = b.resume(1, 25).expect("paused");
    assert_eq!((seqs(&c), c.more), (vec![1, 2], true));
    assert_eq!(b.paused_at(1), Some(3));
    assert!(b.emit(msg("r"), 10).to.is_empty(), "still paused");
    let c = b.resume(1, 0).expect("paused");
    assert_eq!((seqs(&c), c.more), (vec![3], true), "at least one");
    let c = b.resume(1, u64::MAX).expect("paused");
    assert_eq!((seqs(&c), c.more, c.lagged), (vec![4, 5, 6], false, None));
    assert_eq!(b.paused_at(1), None);
}
