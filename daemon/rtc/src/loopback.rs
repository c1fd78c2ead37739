//! Two connected peers in one process, with candidates and descriptions handed over directly:
//! the harness of the examples and the benchmark's raw baseline (the stack with nothing of the
//! daemon around it).

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::{RtcConfig, RtcError, RtcEvent, RtcPeer};

/// Why a loopback pair could not be connected.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    /// The stack refused a step.
    #[error(transparent)]
    Rtc(#[from] RtcError),
    /// A peer's event stream ended before its control channel opened.
    #[error("the event stream of peer {0} ended before its control channel opened")]
    Ended(&'static str),
    /// A control channel did not open in time.
    #[error("peer {0}'s control channel did not open within the timeout")]
    Timeout(&'static str),
}

/// Two connected peers; `a` made the offer. Every event except local candidates (which were
/// handed to the other side) arrives on `a_events`/`b_events`.
pub struct LoopbackPair {
    /// The offerer.
    pub a: RtcPeer,
    /// The answerer.
    pub b: RtcPeer,
    /// `a`'s events.
    pub a_events: mpsc::UnboundedReceiver<RtcEvent>,
    /// `b`'s events.
    pub b_events: mpsc::UnboundedReceiver<RtcEvent>,
    /// From `RtcPeer::new` (both) to the control channel open on both sides.
    pub setup: Duration,
    /// From `create_offer` to the control channel open on both sides.
    pub offer_to_open: Duration,
    _ready: (watch::Sender<bool>, watch::Sender<bool>),
}

/// Creates and connects two peers with `cfg`, waiting at most `timeout` for each control
/// channel to open.
pub async fn connect(cfg: &RtcConfig, timeout: Duration) -> Result<LoopbackPair, LoopbackError> {
    let t0 = Instant::now();
    let (atx, arx) = mpsc::unbounded_channel();
    let (btx, brx) = mpsc::unbounded_channel();
    let a = RtcPeer::new(cfg, atx).await?;
    let b = RtcPeer::new(cfg, btx).await?;
    let (a_ready_tx, a_ready_rx) = watch::channel(false);
    let (b_ready_tx, b_ready_rx) = watch::channel(false);
    let mut a_events = route(arx, b.clone(), b_ready_rx);
    let mut b_events = route(brx, a.clone(), a_ready_rx);
    let t1 = Instant::now();
    let offer = a.create_offer().await?;
    b.set_remote_description(offer).await?;
    let _ = b_ready_tx.send(true);
    let answer = b.create_answer().await?;
    a.set_remote_description(answer).await?;
    let _ = a_ready_tx.send(true);
    wait_control_open(&mut a_events, "a", timeout).await?;
    wait_control_open(&mut b_events, "b", timeout).await?;
    Ok(LoopbackPair {
        a,
        b,
        a_events,
        b_events,
        setup: t0.elapsed(),
        offer_to_open: t1.elapsed(),
        _ready: (a_ready_tx, b_ready_tx),
    })
}

/// Forwards the local candidates on `rx` to `to` once `ready` turns true (a candidate needs
/// the remote description first); every other event goes to the returned receiver.
pub fn route(
    mut rx: mpsc::UnboundedReceiver<RtcEvent>,
    to: RtcPeer,
    mut ready: watch::Receiver<bool>,
) -> mpsc::UnboundedReceiver<RtcEvent> {
    let (tx, out) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut is_ready = false;
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(RtcEvent::LocalCandidate(c)) => pending.push(c),
                    Some(other) => { let _ = tx.send(other); }
                    None => break,
                },
                changed = ready.changed() => {
                    if changed.is_err() { break }
                    is_ready = *ready.borrow();
                }
            }
            if is_ready {
                for c in pending.drain(..) {
                    // A refused candidate only means that pair is not used.
                    let _ = to.add_ice_candidate(c).await;
                }
            }
        }
    });
    out
}

async fn wait_control_open(
    rx: &mut mpsc::UnboundedReceiver<RtcEvent>,
    who: &'static str,
    timeout: Duration,
) -> Result<(), LoopbackError> {
    let wait = async {
        while let Some(ev) = rx.recv().await {
            if matches!(ev, RtcEvent::ControlOpen) {
                return Ok(());
            }
        }
        Err(LoopbackError::Ended(who))
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| LoopbackError::Timeout(who))?
}
