//! A connection's events can go to any [`EventSink`], not only a tokio channel: peerixd's
//! `PeerActor` posts them into its mailbox instead of keeping a channel whose first block
//! (32 events, ~3.3 KB) stays allocated for the connection's life.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use peerix_rtc::{EventSink, RtcEvent, RtcPeer};

/// Keeps the names of the events, and says when the connection dropped it.
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
    dropped: Arc<AtomicBool>,
}

impl EventSink for Recorder {
    fn emit(&self, event: RtcEvent) {
        let name = format!("{event:?}");
        let name = name
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or_default()
            .to_owned();
        self.seen.lock().expect("not poisoned").push(name);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::Release);
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_custom_sink_in_order_and_it_is_dropped_with_the_connection() {
    init_tracing();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dropped = Arc::new(AtomicBool::new(false));
    let sink = Recorder {
        seen: seen.clone(),
        dropped: dropped.clone(),
    };
    let peer = RtcPeer::new(&config(), sink).await.expect("peer");
    // The negotiated control channel asks for an offer at once.
    until("NegotiationNeeded", || {
        seen.lock()
            .expect("not poisoned")
            .first()
            .map(String::as_str)
            == Some("NegotiationNeeded")
    })
    .await;
    // Local candidates come with the first local description.
    peer.create_offer().await.expect("offer");
    until("a local candidate", || {
        seen.lock()
            .expect("not poisoned")
            .iter()
            .any(|e| e == "LocalCandidate")
    })
    .await;
    assert!(
        !dropped.load(Ordering::Acquire),
        "dropped while the connection lives"
    );
    peer.close().await;
    until("Closed", || {
        seen.lock()
            .expect("not poisoned")
            .last()
            .map(String::as_str)
            == Some("Closed")
    })
    .await;
    drop(peer);
    until("the sink to be dropped", || dropped.load(Ordering::Acquire)).await;
}
