//! Shared helpers: two real peers in one process, candidates routed through their events.
#![allow(dead_code)]

use std::time::Duration;

use peerix_rtc::{RtcConfig, RtcEvent, RtcPeer, SessionDescription};
use tokio::sync::{mpsc, watch};

pub const STEP: Duration = Duration::from_secs(10);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub fn config() -> RtcConfig {
    RtcConfig {
        ice_servers: vec![],
        relay_only: false,
        mdns: true,
        udp_recv_buffer: 4 * 1024 * 1024,
        max_message_size: 256 * 1024,
        ..RtcConfig::default()
    }
}

/// A peer plus the non-candidate events it reported.
pub struct Side {
    pub peer: RtcPeer,
    pub events: mpsc::UnboundedReceiver<RtcEvent>,
    /// Set to true once the *other* side's remote description is applied, so our candidates
    /// can be added there.
    pub remote_ready_of_other: Option<watch::Sender<bool>>,
}

/// First `a=ice-ufrag:` of an SDP.
pub fn sdp_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(|s| s.trim().to_owned())
}

/// Builds two peers whose local candidates are checked and delivered to each other once the
/// receiving side has a remote description.
pub async fn pair() -> (Side, Side, watch::Sender<bool>, watch::Sender<bool>) {
    pair_with(&config()).await
}

/// [`pair`] with the given settings on both sides.
pub async fn pair_with(cfg: &RtcConfig) -> (Side, Side, watch::Sender<bool>, watch::Sender<bool>) {
    pair_with_each(cfg, cfg).await
}

/// [`pair`] with settings of its own for each side.
pub async fn pair_with_each(
    a_cfg: &RtcConfig,
    b_cfg: &RtcConfig,
) -> (Side, Side, watch::Sender<bool>, watch::Sender<bool>) {
    let (atx, arx) = mpsc::unbounded_channel();
    let (btx, brx) = mpsc::unbounded_channel();
    let a = RtcPeer::new(a_cfg, atx).await.expect("peer a");
    let b = RtcPeer::new(b_cfg, btx).await.expect("peer b");
    let (a_ready_tx, a_ready_rx) = watch::channel(false);
    let (b_ready_tx, b_ready_rx) = watch::channel(false);
    let a_events = route(arx, a.clone(), b.clone(), b_ready_rx);
    let b_events = route(brx, b.clone(), a.clone(), a_ready_rx);
    (
        Side {
            peer: a,
            events: a_events,
            remote_ready_of_other: None,
        },
        Side {
            peer: b,
            events: b_events,
            remote_ready_of_other: None,
        },
        a_ready_tx,
        b_ready_tx,
    )
}

/// Forwards `from`'s candidates to `to` (after checking their ufrag) once `to_ready` is
/// true; every other event goes to the returned receiver.
fn route(
    mut rx: mpsc::UnboundedReceiver<RtcEvent>,
    from: RtcPeer,
    to: RtcPeer,
    mut to_ready: watch::Receiver<bool>,
) -> mpsc::UnboundedReceiver<RtcEvent> {
    let (tx, out) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut ready = false;
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        RtcEvent::LocalCandidate(c) => {
                            let ufrag = c.username_fragment.clone();
                            assert!(ufrag.is_some(), "candidate without ufrag: {c:?}");
                            assert_eq!(ufrag, from.local_ufrag(), "candidate ufrag mismatch");
                            assert_eq!(c.sdp_mid.as_deref(), Some("0"));
                            assert_eq!(c.sdp_m_line_index, Some(0));
                            let json = serde_json::to_string(&c).expect("json");
                            assert!(json.contains("\"usernameFragment\":\""), "{json}");
                            pending.push(c);
                        }
                        other => {
                            let _ = tx.send(other);
                        }
                    }
                }
                changed = to_ready.changed() => {
                    if changed.is_err() { break }
                    ready = *to_ready.borrow();
                }
            }
            if ready {
                for c in pending.drain(..) {
                    to.add_ice_candidate(c).await.expect("add candidate");
                }
            }
        }
    });
    out
}

/// Waits for the first event matching `pred`, skipping others.
pub async fn wait_for<T>(
    rx: &mut mpsc::UnboundedReceiver<RtcEvent>,
    what: &str,
    mut pred: impl FnMut(RtcEvent) -> Option<T>,
) -> T {
    let fut = async {
        loop {
            match rx.recv().await {
                Some(ev) => {
                    if let Some(t) = pred(ev) {
                        return t;
                    }
                }
                None => panic!("event stream ended while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Offer/answer A→B, then waits for ControlOpen on both.
pub async fn connect() -> (Side, Side) {
    let (a, b, _) = connect_with(&config()).await;
    (a, b)
}

/// [`connect`] with the given settings on both sides; also returns the offer's SDP.
pub async fn connect_with(cfg: &RtcConfig) -> (Side, Side, String) {
    connect_with_each(cfg, cfg).await
}

/// [`connect`] with settings of its own for each side; also returns the offer's SDP.
pub async fn connect_with_each(a_cfg: &RtcConfig, b_cfg: &RtcConfig) -> (Side, Side, String) {
    let (mut a, mut b, a_ready, b_ready) = pair_with_each(a_cfg, b_cfg).await;
    let offer = a.peer.create_offer().await.expect("offer");
    assert_eq!(offer.r#type, "offer");
    assert_eq!(sdp_ufrag(&offer.sdp), a.peer.local_ufrag());
    b.peer
        .set_remote_description(SessionDescription {
            r#type: offer.r#type.clone(),
            sdp: offer.sdp.clone(),
        })
        .await
        .expect("b srd");
    let _ = b_ready.send(true);
    let answer = b.peer.create_answer().await.expect("answer");
    assert_eq!(answer.r#type, "answer");
    assert_eq!(sdp_ufrag(&answer.sdp), b.peer.local_ufrag());
    a.peer.set_remote_description(answer).await.expect("a srd");
    let _ = a_ready.send(true);
    wait_for(&mut a.events, "a ControlOpen", |e| {
        matches!(e, RtcEvent::ControlOpen).then_some(())
    })
    .await;
    wait_for(&mut b.events, "b ControlOpen", |e| {
        matches!(e, RtcEvent::ControlOpen).then_some(())
    })
    .await;
    a.remote_ready_of_other = Some(a_ready);
    b.remote_ready_of_other = Some(b_ready);
    (a, b, offer.sdp)
}

/// Opens "chat" from `a`; returns `a`'s channel, open, and `b`'s event stream of it.
pub async fn open_chat(
    a: &Side,
    b: &mut Side,
) -> (
    peerix_rtc::RtcChannel,
    mpsc::Receiver<peerix_rtc::ChannelEvent>,
) {
    let a_chat = a
        .peer
        .create_channel("chat", peerix_rtc::ChannelInit::default())
        .await
        .expect("create chat");
    let b_chat = wait_for(&mut b.events, "RemoteChannel(chat)", |e| match e {
        RtcEvent::RemoteChannel(c) => Some(c),
        _ => None,
    })
    .await;
    let mut a_ev = a_chat.take_events().expect("a events");
    let b_ev = b_chat.take_events().expect("b events");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), a_ev.recv()).await {
            Ok(Some(peerix_rtc::ChannelEvent::Open)) => break,
            Ok(Some(_)) => continue,
            other => panic!("a chat did not open: {other:?}"),
        }
    }
    (a_chat, b_ev)
}
