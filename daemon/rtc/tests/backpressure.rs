//! The queues between the stack and the owner of a connection are bounded: a receiver that
//! does not take its events stops the stack from reading, so the sender meets SCTP
//! back-pressure (its buffer stays full) instead of the receiver growing a queue; nothing is
//! lost once the receiver reads again.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use peerix_rtc::{ChannelEvent, RtcConfig, RtcEvent};

const QUEUE: usize = 4;

fn bounded_config() -> RtcConfig {
    RtcConfig {
        channel_event_queue: QUEUE,
        control_event_queue: QUEUE,
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_not_read_holds_the_sender_back_and_loses_nothing() {
    init_tracing();
    holds_back_and_loses_nothing(&bounded_config()).await;
}

/// The same with the drivers on the one thread that also owns the channels
/// (`inline_drivers`, as the daemon's actor thread runs them): the reader and the driver share
/// the thread, and a reader that stops still stops the stack from reading.
#[tokio::test(flavor = "current_thread")]
async fn with_inline_drivers_a_channel_not_read_still_holds_the_sender_back() {
    init_tracing();
    let cfg = RtcConfig {
        inline_drivers: true,
        ..bounded_config()
    };
    holds_back_and_loses_nothing(&cfg).await;
}

async fn holds_back_and_loses_nothing(cfg: &RtcConfig) {
    let (a, mut b, _) = connect_with(cfg).await;
    let (a_chat, mut b_ev) = open_chat(&a, &mut b).await;

    // 2000 × 16 KiB = 32 MiB, far more than the SCTP window and the stack's own buffers.
    const N: usize = 2000;
    let chunk = Bytes::from(vec![7u8; 16 * 1024]);
    for _ in 0..N {
        a_chat.send(chunk.clone()).await.expect("send");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let queued = b_ev.len();
    let outstanding = a_chat.buffered_amount().await;
    assert!(
        queued <= QUEUE,
        "the receiver's queue holds {queued} events, more than its bound of {QUEUE}"
    );
    assert!(
        outstanding > 16 << 20,
        "the sender's buffer drained to {outstanding} bytes although the receiver reads \
         nothing: back-pressure is lost"
    );

    // Reading again releases the sender; every message arrives.
    let mut got = 0;
    while got < N {
        match tokio::time::timeout(Duration::from_secs(20), b_ev.recv()).await {
            Ok(Some(ChannelEvent::Message { data, .. })) => {
                assert_eq!(data.len(), chunk.len());
                got += 1;
            }
            Ok(Some(_)) => {}
            other => panic!("after {got} of {N} messages: {other:?}"),
        }
    }
    a.peer.close().await;
    b.peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_messages_not_consumed_stop_the_control_reader() {
    init_tracing();
    let (a, mut b, _) = connect_with(&bounded_config()).await;
    const N: usize = 5000;
    for i in 0..N {
        a.peer
            .send_control(Bytes::from(format!("flood {i}")))
            .await
            .expect("send control");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Held events keep their slots: the reader waits for one to be dropped.
    let mut held = Vec::new();
    while let Ok(ev) = b.events.try_recv() {
        if let RtcEvent::ControlMessage(m) = ev {
            held.push(m);
        }
    }
    assert!(
        held.len() <= QUEUE,
        "{} control messages were read while none was consumed (bound {QUEUE})",
        held.len()
    );
    let mut got = held.len();
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got < N {
        let ev = tokio::time::timeout_at(deadline, b.events.recv())
            .await
            .unwrap_or_else(|_| panic!("only {got} of {N} control messages arrived"));
        if let Some(RtcEvent::ControlMessage(_)) = ev {
            got += 1;
        }
    }
    a.peer.close().await;
    b.peer.close().await;
}

/// A receiver that fell behind and caught up gets the sender going again at once (vendor
/// patch 38). Back-pressure parks data in SCTP's reassembly queue and closes the window; the
/// stack resumed those parked streams only when a datagram or a timer next pumped its
/// pipeline, and the stopped sender sends nothing until its retransmission timer, so a burst
/// of small messages stalled for 0.2-2.4 s in about half the bursts on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_caught_up_is_not_left_waiting_for_a_retransmission() {
    init_tracing();
    let (a, mut b, _) = connect_with(&config()).await;
    let (a_chat, mut b_ev) = open_chat(&a, &mut b).await;
    // 20,000 × 1 KiB per burst, paced like the daemon's lanes (1 MiB in flight): far more
    // messages than the stack's 256-message queues, so the receiver falls behind in each.
    const N: usize = 20_000;
    let msg = Bytes::from(vec![1u8; 1024]);
    for burst in 0..6 {
        let sender = {
            let a_chat = a_chat.clone();
            let msg = msg.clone();
            tokio::spawn(async move {
                for _ in 0..N {
                    while a_chat.buffered_amount().await + msg.len() > 1 << 20 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    a_chat.send(msg.clone()).await.expect("send");
                }
            })
        };
        let (mut got, mut last) = (0, std::time::Instant::now());
        let mut longest = Duration::ZERO;
        while got < N {
            match tokio::time::timeout(Duration::from_secs(20), b_ev.recv()).await {
                Ok(Some(ChannelEvent::Message { .. })) => {
                    got += 1;
                    longest = longest.max(last.elapsed());
                    last = std::time::Instant::now();
                }
                Ok(Some(_)) => {}
                other => panic!("burst {burst}: after {got} of {N} messages: {other:?}"),
            }
        }
        sender.await.expect("sender");
        // Healthy bursts' longest gap is 5-25 ms here, the stalls were 0.3-2.4 s; the
        // margin is for a loaded machine.
        assert!(
            longest < Duration::from_millis(300),
            "burst {burst}: the receiver got nothing for {longest:?}"
        );
    }
    a.peer.close().await;
    b.peer.close().await;
}
