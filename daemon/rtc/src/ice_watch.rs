//! Reports ICE failure when the last candidate pair failed, not 30 s later.
//!
//! Why: webrtc 0.21's agent marks each pair failed after its checks went unanswered (75 × 20 ms
//! here) but moves the connection to `failed` only after its disconnected + failed timeouts
//! (5 s + 25 s) of `checking`; before that Peerix's 15 s connection timer fired first. Behind
//! two NATs without a usable server the only pairs fail after ~1.6 s, and the owner should know
//! then. Browsers report `failed` the same way (every pair failed, gathering complete).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use webrtc::peer_connection::PeerConnection;

/// How often the checklist is read while ICE is checking (one lock of the core each).
const POLL: Duration = Duration::from_millis(100);

/// What the watch knows of the connection, shared with the event handler.
#[derive(Default)]
pub(crate) struct IceWatch {
    /// Local gathering completed: no local candidate (a late relay) is still to come.
    gathered: AtomicBool,
    /// ICE connected, failed or closed: nothing more to watch.
    settled: AtomicBool,
    /// The watch reported the failure (the stack's own later `failed` is a duplicate).
    reported: AtomicBool,
}

impl IceWatch {
    /// Local gathering completed.
    pub(crate) fn gathered(&self) {
        self.gathered.store(true, Ordering::Release);
    }

    /// ICE reached a state that ends the watch.
    pub(crate) fn settled(&self) {
        self.settled.store(true, Ordering::Release);
    }

    /// Whether the watch already reported the failure.
    pub(crate) fn reported(&self) -> bool {
        self.reported.load(Ordering::Acquire)
    }

    /// Watches `pc` until ICE settles; calls `fail` once when every pair has failed after
    /// gathering completed. Holds the connection only weakly.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        pc: Weak<dyn PeerConnection>,
        fail: impl FnOnce() + Send + 'static,
    ) {
        let watch = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if watch.settled.load(Ordering::Acquire) {
                    return;
                }
                let Some(pc) = pc.upgrade() else { return };
                if !watch.gathered.load(Ordering::Acquire) {
                    continue;
                }
                let Some(sctp) = pc.sctp().await else {
                    continue;
                };
                let ice = sctp.transport().ice_transport();
                let Ok((pairs, failed)) = ice.candidate_pair_counts().await else {
                    continue;
                };
                if pairs > 0 && failed == pairs && !watch.settled.swap(true, Ordering::AcqRel) {
                    tracing::debug!("all {pairs} ICE candidate pairs failed");
                    watch.reported.store(true, Ordering::Release);
                    fail();
                    return;
                }
            }
        });
    }
}
