//! Real WebRTC between two in-process peers over the machine's own interfaces.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use peerix_rtc::{
    ChannelEvent, ChannelInit, RtcChannel, RtcConfig, RtcEvent, SessionDescription, SignalingState,
};
use tokio::sync::mpsc::Receiver;

async fn next_channel_event(rx: &mut Receiver<ChannelEvent>, what: &str) -> ChannelEvent {
    tokio::time::timeout(STEP, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("channel events ended waiting for {what}"))
}

/// Next message, skipping `BufferedAmountLow`.
async fn next_message(rx: &mut Receiver<ChannelEvent>, what: &str) -> (bool, Bytes) {
    loop {
        match next_channel_event(rx, what).await {
            ChannelEvent::Message { binary, data } => return (binary, data),
            ChannelEvent::BufferedAmountLow => continue,
            other => panic!("unexpected {other:?} waiting for {what}"),
        }
    }
}

async fn wait_open(rx: &mut Receiver<ChannelEvent>, what: &str) {
    loop {
        match next_channel_event(rx, what).await {
            ChannelEvent::Open => return,
            ChannelEvent::BufferedAmountLow => continue,
            other => panic!("unexpected {other:?} waiting for {what}"),
        }
    }
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

async fn open_chat(a: &mut Side, b: &mut Side) -> (RtcChannel, RtcChannel) {
    let a_chat = a
        .peer
        .create_channel("chat", ChannelInit::default())
        .await
        .expect("create chat");
    assert_eq!(a_chat.label(), "chat");
    assert!(a_chat.ordered());
    assert_eq!(a_chat.protocol(), "");
    let b_chat = wait_for(&mut b.events, "RemoteChannel(chat)", |e| match e {
        RtcEvent::RemoteChannel(c) => Some(c),
        _ => None,
    })
    .await;
    assert_eq!(b_chat.label(), "chat");
    assert!(b_chat.ordered());
    (a_chat, b_chat)
}

#[tokio::test(flavor = "current_thread")]
async fn full_session_over_loopback() {
    init_tracing();
    let started = Instant::now();
    let (mut a, mut b) = connect().await;
    eprintln!("connected in {:?}", started.elapsed());
    assert_eq!(a.peer.signaling_state(), SignalingState::Stable);
    assert_eq!(b.peer.signaling_state(), SignalingState::Stable);

    // Control channel, both ways.
    a.peer
        .send_control(Bytes::from_static(b"\x08\x01\x12\x02[]"))
        .await
        .expect("a send control");
    let got = wait_for(&mut b.events, "control message at b", |e| match e {
        RtcEvent::ControlMessage(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(&got[..], b"\x08\x01\x12\x02[]");
    b.peer
        .send_control(Bytes::from_static(b"pong"))
        .await
        .expect("b send control");
    let got = wait_for(&mut a.events, "control message at a", |e| match e {
        RtcEvent::ControlMessage(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(&got[..], b"pong");

    // A user channel created by A appears at B.
    let (a_chat, b_chat) = open_chat(&mut a, &mut b).await;
    let mut a_ev = a_chat.take_events().expect("a events");
    assert!(a_chat.take_events().is_none(), "events are taken once");
    let mut b_ev = b_chat.take_events().expect("b events");
    wait_open(&mut b_ev, "b chat open").await;
    wait_open(&mut a_ev, "a chat open").await;

    a_chat
        .send(Bytes::from_static(b"hi"))
        .await
        .expect("send hi");
    assert_eq!(
        next_message(&mut b_ev, "hi").await,
        (true, Bytes::from_static(b"hi"))
    );
    b_chat
        .send(Bytes::from_static(b"ho"))
        .await
        .expect("send ho");
    assert_eq!(
        next_message(&mut a_ev, "ho").await,
        (true, Bytes::from_static(b"ho"))
    );

    // 256 KiB in one message, both ways.
    let big = pattern(256 * 1024, 7);
    a_chat.send(big.clone()).await.expect("send 256k a");
    assert_eq!(next_message(&mut b_ev, "256k at b").await.1, big);
    b_chat.send(big.clone()).await.expect("send 256k b");
    assert_eq!(next_message(&mut a_ev, "256k at a").await.1, big);

    // 20 MiB in 16 KiB pieces, paced by buffered_amount.
    const PIECE: usize = 16 * 1024;
    const TOTAL: usize = 20 * 1024 * 1024;
    let receiver = tokio::spawn(async move {
        let mut got = 0usize;
        let mut index = 0u32;
        while got < TOTAL {
            let (binary, data) = next_message(&mut b_ev, "stream piece").await;
            assert!(binary);
            assert_eq!(data.len(), PIECE);
            assert_eq!(&data[..4], &index.to_be_bytes());
            index += 1;
            got += data.len();
        }
        (got, b_ev)
    });
    let t = Instant::now();
    let mut max_buffered = 0;
    for i in 0..(TOTAL / PIECE) as u32 {
        loop {
            let buffered = a_chat.buffered_amount().await;
            max_buffered = max_buffered.max(buffered);
            if buffered < 1024 * 1024 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut piece = vec![0u8; PIECE];
        piece[..4].copy_from_slice(&i.to_be_bytes());
        a_chat.send(Bytes::from(piece)).await.expect("send piece");
    }
    let (got, mut b_ev) = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .expect("stream timed out")
        .expect("receiver task");
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "20 MiB in {secs:.2}s = {:.1} MB/s, max buffered {max_buffered}",
        got as f64 / secs / 1e6
    );
    assert_eq!(got, TOTAL);
    assert!(
        max_buffered < 2 * 1024 * 1024,
        "pacing failed: {max_buffered}"
    );

    // Closing A: B learns through its control channel.
    let t = Instant::now();
    a.peer.close().await;
    a.peer.close().await; // idempotent
    assert_eq!(a.peer.signaling_state(), SignalingState::Closed);
    wait_for(&mut a.events, "a Closed", |e| {
        matches!(e, RtcEvent::Closed).then_some(())
    })
    .await;
    wait_for(&mut b.events, "b ControlClosed", |e| {
        matches!(e, RtcEvent::ControlClosed).then_some(())
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // B's user channel closes too.
    loop {
        match next_channel_event(&mut b_ev, "b chat Closed").await {
            ChannelEvent::Closed => break,
            ChannelEvent::BufferedAmountLow => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    b.peer.close().await;
    wait_for(&mut b.events, "b Closed", |e| {
        matches!(e, RtcEvent::Closed).then_some(())
    })
    .await;
    assert!(a_chat.send(Bytes::from_static(b"x")).await.is_err());
}

/// The default advertises 64 KiB (the stack keeps a buffer of the negotiated size per
/// connection): a message of exactly that size crosses, one byte more is refused at send.
#[tokio::test(flavor = "current_thread")]
async fn default_max_message_size_is_64k_and_enforced() {
    init_tracing();
    let cfg = RtcConfig::default();
    assert_eq!(cfg.max_message_size, 64 * 1024);
    let (mut a, mut b, offer_sdp) = connect_with(&cfg).await;
    assert!(
        offer_sdp.contains("a=max-message-size:65536"),
        "offer does not advertise 64 KiB: {offer_sdp}"
    );
    let (a_chat, b_chat) = open_chat(&mut a, &mut b).await;
    let mut a_ev = a_chat.take_events().expect("a events");
    let mut b_ev = b_chat.take_events().expect("b events");
    wait_open(&mut b_ev, "b chat open").await;
    wait_open(&mut a_ev, "a chat open").await;
    let max = pattern(64 * 1024, 3);
    a_chat.send(max.clone()).await.expect("send 64 KiB");
    assert_eq!(next_message(&mut b_ev, "64 KiB at b").await.1, max);
    let over = pattern(64 * 1024 + 1, 4);
    assert!(
        a_chat.send(over).await.is_err(),
        "a message over the negotiated maximum must be refused"
    );
    // The channel survives the refusal.
    a_chat
        .send(Bytes::from_static(b"after"))
        .await
        .expect("send after");
    assert_eq!(
        next_message(&mut b_ev, "after").await.1,
        Bytes::from_static(b"after")
    );
    a.peer.close().await;
    b.peer.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn glare_polite_side_rolls_back() {
    init_tracing();
    let (mut a, mut b, a_ready, b_ready) = pair().await;
    // Both offer at once.
    let offer_a = a.peer.create_offer().await.expect("offer a");
    let offer_b = b.peer.create_offer().await.expect("offer b");
    assert_eq!(a.peer.signaling_state(), SignalingState::HaveLocalOffer);
    assert_eq!(b.peer.signaling_state(), SignalingState::HaveLocalOffer);

    // Impolite A ignores B's offer; applying it without rollback would fail anyway.
    assert!(a.peer.set_remote_description(offer_b).await.is_err());
    assert_eq!(a.peer.signaling_state(), SignalingState::HaveLocalOffer);

    // Polite B rolls back, applies A's offer and answers.
    let ufrag_before = b.peer.local_ufrag();
    b.peer.rollback().await.expect("rollback");
    assert_eq!(b.peer.signaling_state(), SignalingState::Stable);
    b.peer
        .set_remote_description(offer_a)
        .await
        .expect("b applies a's offer");
    assert_eq!(b.peer.signaling_state(), SignalingState::HaveRemoteOffer);
    let _ = b_ready.send(true);
    let answer = b.peer.create_answer().await.expect("answer");
    assert_eq!(b.peer.local_ufrag(), ufrag_before);
    assert_eq!(b.peer.signaling_state(), SignalingState::Stable);
    a.peer
        .set_remote_description(SessionDescription {
            r#type: "answer".into(),
            sdp: answer.sdp,
        })
        .await
        .expect("a applies answer");
    assert_eq!(a.peer.signaling_state(), SignalingState::Stable);
    let _ = a_ready.send(true);

    wait_for(&mut a.events, "a ControlOpen", |e| {
        matches!(e, RtcEvent::ControlOpen).then_some(())
    })
    .await;
    wait_for(&mut b.events, "b ControlOpen", |e| {
        matches!(e, RtcEvent::ControlOpen).then_some(())
    })
    .await;
    b.peer
        .send_control(Bytes::from_static(b"after glare"))
        .await
        .expect("send");
    let got = wait_for(&mut a.events, "control at a", |e| match e {
        RtcEvent::ControlMessage(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(&got[..], b"after glare");

    // Unknown description types are rejected, not panicked on.
    assert!(a
        .peer
        .set_remote_description(SessionDescription {
            r#type: "bogus".into(),
            sdp: String::new(),
        })
        .await
        .is_err());
    // Garbage SDP and candidates are errors too.
    assert!(b
        .peer
        .set_remote_description(SessionDescription {
            r#type: "offer".into(),
            sdp: "not sdp".into(),
        })
        .await
        .is_err());
    assert!(a
        .peer
        .add_ice_candidate(peerix_rtc::IceCandidateInit {
            candidate: "candidate:garbage".into(),
            ..Default::default()
        })
        .await
        .is_err());

    a.peer.close().await;
    b.peer.close().await;
}

#[test]
fn works_inside_actix_system() {
    init_tracing();
    actix_rt::System::new().block_on(async {
        let (mut a, mut b) = connect().await;
        a.peer
            .send_control(Bytes::from_static(b"actix"))
            .await
            .expect("send");
        let got = wait_for(&mut b.events, "control at b", |e| match e {
            RtcEvent::ControlMessage(m) => Some(m),
            _ => None,
        })
        .await;
        assert_eq!(&got[..], b"actix");
        let (a_chat, b_chat) = open_chat(&mut a, &mut b).await;
        let mut b_ev = b_chat.take_events().expect("events");
        wait_open(&mut b_ev, "b open").await;
        a_chat.set_buffered_amount_low_threshold(1024);
        a_chat
            .send(Bytes::from_static(b"from actix"))
            .await
            .expect("send");
        assert_eq!(next_message(&mut b_ev, "msg").await.1, &b"from actix"[..]);
        b.peer.close().await;
        wait_for(&mut a.events, "a ControlClosed", |e| {
            matches!(e, RtcEvent::ControlClosed).then_some(())
        })
        .await;
        a.peer.close().await;
    });
}
