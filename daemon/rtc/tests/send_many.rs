//! `RtcChannel::send_many` (vendor patch 42): several messages under one lock of the core and
//! one wake of the driver arrive as the same messages sent one by one would, in order and whole.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use peerix_rtc::ChannelEvent;

async fn next_message(rx: &mut tokio::sync::mpsc::Receiver<ChannelEvent>) -> Bytes {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(ChannelEvent::Message { binary: true, data })) => return data,
            Ok(Some(ChannelEvent::Open | ChannelEvent::BufferedAmountLow)) => continue,
            other => panic!("waiting for a binary message, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn messages_sent_together_arrive_in_order_and_whole() {
    init_tracing();
    let (a, mut b) = connect().await;
    let (chat, mut at_b) = open_chat(&a, &mut b).await;

    // Mixed sizes: a few bytes (what an ack is) up to more than one SCTP packet.
    let batch: Vec<Bytes> = (0..200u32)
        .map(|i| {
            let len = [3usize, 17, 1200, 5000][i as usize % 4];
            Bytes::from(
                (0..len)
                    .map(|j| (i as usize * 31 + j) as u8)
                    .collect::<Vec<u8>>(),
            )
        })
        .collect();
    // Two batches back to back, then a lone send: order holds across them.
    chat.send_many(batch[..150].iter().cloned())
        .await
        .expect("first batch");
    chat.send_many(batch[150..].iter().cloned())
        .await
        .expect("second batch");
    chat.send(Bytes::from_static(b"after"))
        .await
        .expect("lone send");

    for (i, want) in batch.iter().enumerate() {
        let got = next_message(&mut at_b).await;
        assert_eq!(&got, want, "message {i} of the batches");
    }
    assert_eq!(next_message(&mut at_b).await, Bytes::from_static(b"after"));

    // An empty batch is no message at all.
    chat.send_many(Vec::new()).await.expect("empty batch");
    chat.send(Bytes::from_static(b"last"))
        .await
        .expect("last send");
    assert_eq!(next_message(&mut at_b).await, Bytes::from_static(b"last"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_on_a_closed_connection_fails() {
    init_tracing();
    let (a, mut b) = connect().await;
    let (chat, _at_b) = open_chat(&a, &mut b).await;
    a.peer.close().await;
    let sent = chat
        .send_many([Bytes::from_static(b"x"), Bytes::from_static(b"y")])
        .await;
    assert!(sent.is_err(), "a batch after close was accepted");
}
