//! ICE restart between two peerixd peers (issue 15, part 5): when the selected path dies (a
//! NAT rebinding, an address change, a cut longer than ICE's consent timeout), the connection
//! gets new ICE credentials and new candidates while DTLS, SCTP, the data channels and every
//! message queued on them carry on; nothing is reported failed.
//!
//! Peerix never restarts ICE (§5.7) and a browser would take an offer with new credentials
//! over signaling for a new connection or answer it over its dead control channel, so a
//! restart is only ever offered to, and only ever recognised from, a remote that said it is a
//! peerixd (its hello on the control channel, `Conn::peerixd`). Browsers keep Peerix's
//! recovery: a new connection through the jittered re-invoke.
//!
//! While a restart runs, the control channel rides the dead path, so descriptions and local
//! candidates travel over signaling (an offer `[description, metadata]`, an answer, candidate
//! batches), as before the control channel opened. A restart offer is told from a new
//! incarnation of the remote (which also brings new ICE credentials) by its DTLS fingerprint:
//! an ICE restart keeps the association and its certificate, a new connection object has a new
//! one.
//!
//! Who offers: the impolite side after [`RestartPolicy::after`] of ICE `disconnected`, the
//! polite side after twice that, so they rarely cross; when they do, perfect negotiation
//! resolves it like any glare (§6.5). An attempt that has not connected within
//! [`RestartPolicy::attempt_timeout`] is followed by another (new credentials again), up to
//! [`RestartPolicy::max_attempts`]; then the connection fails and is replaced as before
//! (`connection:failed`, re-invoke).

use std::time::{Duration, Instant};

use peerix_wire::packet::{ufrag_of_sdp, SessionDescription};

use crate::conn::Pending;
use crate::room::Room;
use crate::types::{ConnId, IceState, PeerState};

/// When and how often a connection between two peerixd peers restarts ICE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// ICE `disconnected` this long before the impolite side offers a restart (the polite side
    /// waits twice as long). ICE reports `disconnected` after ~4.5 s without consent, so a
    /// shorter cut never gets here.
    pub after: Duration,
    /// An attempt that has not connected within this is followed by the next one.
    pub attempt_timeout: Duration,
    /// Attempts before the connection fails and is replaced (0: never restart).
    pub max_attempts: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            after: Duration::from_millis(250),
            attempt_timeout: Duration::from_millis(1500),
            max_attempts: 2,
        }
    }
}

impl RestartPolicy {
    /// How long a connection may stay disconnected in all before it fails: the wait, then
    /// every attempt.
    fn bound(&self, polite: bool) -> Duration {
        self.first_wait(polite) + self.attempt_timeout * self.max_attempts
    }

    fn first_wait(&self, polite: bool) -> Duration {
        if polite {
            self.after * 2
        } else {
            self.after
        }
    }
}

/// A connection's ICE restart in progress.
#[derive(Debug, Default)]
pub(crate) struct Restart {
    /// Restart offers made so far.
    pub(crate) attempts: u32,
    /// When our next attempt starts.
    pub(crate) next: Option<Instant>,
}

/// The first `a=fingerprint:` line of an SDP (the DTLS certificate's digest).
pub(crate) fn fingerprint_of_sdp(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=fingerprint:"))
}

impl Room {
    /// Restarts ICE on connections to other peerixd peers after their path died (`None`:
    /// never; they fail after a short grace and are replaced, as toward browsers). A restart
    /// offered by the remote is taken up either way.
    pub fn set_ice_restart(&mut self, policy: Option<RestartPolicy>) {
        self.restart_policy = policy.filter(|p| p.max_attempts > 0);
    }

    /// Whether connection `id` restarts ICE instead of failing when its path dies.
    pub(crate) fn restarts(&self, id: ConnId) -> bool {
        self.restart_policy.is_some()
            && self
                .conns
                .get(&id)
                .is_some_and(|c| c.live() && c.peerixd && c.control_open)
    }

    /// The path of connection `id` died (ICE `disconnected`, or `failed` once it had
    /// connected): schedule our first restart offer and the bound after which it fails.
    pub(crate) fn path_lost(&mut self, now: Instant, id: ConnId, failed: bool) {
        let Some(p) = self.restart_policy else { return };
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let polite = c.polite();
        let r = c.restart.get_or_insert_with(Restart::default);
        if r.attempts == 0 {
            let wait = if failed {
                Duration::ZERO
            } else {
                p.first_wait(polite)
            };
            let first = now + wait;
            r.next = Some(r.next.map_or(first, |n| n.min(first)));
        }
        if c.timer.is_none() {
            c.timer = Some(now + p.bound(polite));
        }
        c.set_state(PeerState::Disconnected, &mut self.out);
    }

    /// What an `iceConnectionState` change means for a restart; `true` when it is handled here
    /// (the room's usual handling must not run).
    pub(crate) fn restart_ice_state(&mut self, now: Instant, id: ConnId, state: IceState) -> bool {
        let restarting = self
            .conns
            .get(&id)
            .is_some_and(|c| c.restart.is_some() || c.via_signaling);
        match state {
            IceState::Disconnected if self.restarts(id) => self.path_lost(now, id, false),
            IceState::Failed if self.restarts(id) => self.path_lost(now, id, true),
            // The restarted agent checks again; the connection stays `disconnected` until a
            // pair works (Peerix's states know no way back to `connecting`).
            IceState::Checking if restarting => {}
            IceState::Connected => {
                self.path_restored(id);
                return false;
            }
            _ => return false,
        }
        true
    }

    /// Starts our next restart attempt on connection `id` if it is due at `now`.
    pub(crate) fn restart_due(&mut self, now: Instant, id: ConnId) {
        let Some(p) = self.restart_policy else { return };
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(r) = c.restart.as_mut() else { return };
        if r.next.is_none_or(|t| t > now) {
            return;
        }
        r.next = None;
        if c.closing || r.attempts >= p.max_attempts {
            // The connection timer fails it.
            return;
        }
        r.attempts += 1;
        r.next = Some(now + p.attempt_timeout);
        c.via_signaling = true;
        c.queue(Pending::RestartOffer, &mut self.out);
    }

    /// Whether an offer that came over signaling for live connection `id` restarts its ICE:
    /// the remote is a peerixd, the credentials are new and the DTLS certificate is the one in
    /// force (a new connection object of the remote would have a new one).
    pub(crate) fn is_ice_restart(&self, id: ConnId, offer: &SessionDescription) -> bool {
        let Some(c) = self.conns.get(&id) else {
            return false;
        };
        c.live()
            && c.peerixd
            && c.control_open
            && c.neg.remote_ufrag().is_some()
            && c.neg.remote_ufrag() != ufrag_of_sdp(&offer.sdp)
            && c.remote_fingerprint().is_some()
            && c.remote_fingerprint() == fingerprint_of_sdp(&offer.sdp)
    }

    /// The remote offered an ICE restart on connection `id`: the exchange and our new
    /// candidates go over signaling, and our own next attempt waits for this one.
    pub(crate) fn restart_offered(&mut self, now: Instant, id: ConnId) {
        let policy = self.restart_policy;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.via_signaling = true;
        if let (Some(p), Some(r)) = (policy, c.restart.as_mut()) {
            if r.next.is_some() {
                r.next = Some(now + p.attempt_timeout);
            }
        }
    }

    /// ICE connected again on connection `id`: the restart (if any) is over and the control
    /// channel carries the signaling again.
    pub(crate) fn path_restored(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.restart = None;
        if c.via_signaling {
            c.flush_candidates(&mut self.out);
            c.via_signaling = false;
        }
    }
}
