//! Perfect negotiation and Peerix's two candidate queues, for one remote peer.
//!
//! Peerix keeps two queues (§5.2, §5.6): candidates that arrive **over signaling** wait at room
//! level until a remote description with *their* ufrag has been applied (a candidate without a
//! ufrag never matches; at most 100 wait, the oldest is dropped), and candidates that reach the
//! connection before **any** remote description wait there, whatever their ufrag. Collisions
//! follow §6.5: the impolite side ignores a colliding offer, discards the candidates waiting at
//! the connection and drops new ones until a description is applied again; the polite side rolls
//! its own offer back and takes the remote one.
//!
//! The caller serializes: it asks [`Negotiation::remote_description`] when a description's turn
//! comes, applies it, then reports [`Negotiation::remote_applied`] (or
//! [`Negotiation::remote_failed`]); it asks [`Negotiation::connection_candidate`] when a
//! candidate's turn comes.

use std::collections::VecDeque;

/// How many candidates wait in each queue (Peerix: 100 over signaling; the connection-level
/// queue, unbounded in Peerix, gets the same bound here).
pub const MAX_QUEUED_SIGNALING_CANDIDATES: usize = 100;

/// What to do with a remote description whose turn has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteAction {
    /// Ignore it (impolite side, colliding offer).
    Ignore,
    /// Apply it; roll the local offer back first when `rollback` (polite side, colliding offer).
    Apply {
        /// Whether the local offer must be rolled back before applying.
        rollback: bool,
    },
}

/// The negotiation state of one peer connection.
#[derive(Debug)]
pub struct Negotiation<C> {
    polite: bool,
    ignoring_offer: bool,
    remote_ufrag: Option<String>,
    has_remote: bool,
    /// Reached the connection before any remote description (the connection-level queue).
    early: Vec<C>,
    /// Arrived over signaling and wait for a description with their ufrag (the room-level
    /// queue), each with the ufrag it names.
    signaling: VecDeque<(Option<String>, C)>,
}

impl<C> Negotiation<C> {
    /// A new connection; `polite` is Peerix's politeness of this side (the greater id, §1.4).
    pub fn new(polite: bool) -> Self {
        Negotiation {
            polite,
            ignoring_offer: false,
            remote_ufrag: None,
            has_remote: false,
            early: Vec::new(),
            signaling: VecDeque::new(),
        }
    }

    /// Whether this side is polite.
    pub fn polite(&self) -> bool {
        self.polite
    }

    /// The ufrag of the last applied remote description.
    pub fn remote_ufrag(&self) -> Option<&str> {
        self.remote_ufrag.as_deref()
    }

    /// A remote description's turn has come. `stable`: the local signaling state is `stable`.
    pub fn remote_description(&mut self, is_offer: bool, stable: bool) -> RemoteAction {
        let collision = is_offer && !stable;
        if collision && !self.polite {
            self.ignoring_offer = true;
            self.early.clear();
            return RemoteAction::Ignore;
        }
        RemoteAction::Apply {
            rollback: collision,
        }
    }

    /// The description (with `ufrag`, its first `a=ice-ufrag`) was applied. Returns the
    /// candidates to hand to the connection now, in order: those that waited for any
    /// description, in arrival order, then those from signaling whose ufrag matches.
    pub fn remote_applied(&mut self, ufrag: Option<String>) -> Vec<C> {
        self.ignoring_offer = false;
        self.has_remote = true;
        self.remote_ufrag = ufrag;
        let mut ready = std::mem::take(&mut self.early);
        let mut rest = VecDeque::with_capacity(self.signaling.len());
        for (ufrag, c) in self.signaling.drain(..) {
            if ufrag.is_some() && ufrag == self.remote_ufrag {
                ready.push(c);
            } else {
                // Peerix 0.7 keeps candidates that do not match (they may belong to a later
                // description).
                rest.push_back((ufrag, c));
            }
        }
        self.signaling = rest;
        ready
    }

    /// Applying the description failed; nothing changes (the caller reports the error).
    pub fn remote_failed(&mut self) {}

    /// A candidate arrived over signaling naming `ufrag` (its `usernameFragment`). Returns it
    /// when it may go to the connection now (a description with that ufrag is applied);
    /// otherwise it waits for one.
    pub fn signaling_candidate(&mut self, ufrag: Option<&str>, c: C) -> Option<C> {
        if self.has_remote && ufrag.is_some() && ufrag == self.remote_ufrag.as_deref() {
            return Some(c);
        }
        if self.signaling.len() >= MAX_QUEUED_SIGNALING_CANDIDATES {
            self.signaling.pop_front();
        }
        self.signaling.push_back((ufrag.map(str::to_owned), c));
        None
    }

    /// A candidate's turn has come at the connection (from the control channel, or released by
    /// the signaling gate). Returns it when it is to be added to the connection now; it waits
    /// when there is no remote description yet, and is dropped while a colliding offer is being
    /// ignored.
    pub fn connection_candidate(&mut self, c: C) -> Option<C> {
        if self.ignoring_offer {
            return None;
        }
        if !self.has_remote {
            // Bounded like the signaling queue: fed from the network, kept newest first.
            if self.early.len() >= MAX_QUEUED_SIGNALING_CANDIDATES {
                self.early.remove(0);
            }
            self.early.push(c);
            return None;
        }
        Some(c)
    }

    /// Takes the candidates waiting for a description with their ufrag (e.g. to hand them to
    /// the connection that replaces this one).
    pub fn take_signaling_queue(&mut self) -> Vec<C> {
        self.signaling.drain(..).map(|(_, c)| c).collect()
    }

    /// How many candidates wait (connection-level, signaling-level).
    pub fn waiting(&self) -> (usize, usize) {
        (self.early.len(), self.signaling.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct C(&'static str, Option<&'static str>);

    /// A candidate arriving over signaling, naming its own ufrag.
    fn sig(n: &mut Negotiation<C>, c: C) -> Option<C> {
        let ufrag = c.1;
        n.signaling_candidate(ufrag, c)
    }

    #[test]
    fn impolite_ignores_a_colliding_offer_and_its_candidates_until_the_next_description() {
        let mut n = Negotiation::new(false);
        assert_eq!(n.connection_candidate(C("early", None)), None);
        assert_eq!(n.remote_description(true, false), RemoteAction::Ignore);
        assert_eq!(
            n.waiting(),
            (0, 0),
            "queued connection candidates are discarded"
        );
        assert_eq!(n.connection_candidate(C("during", Some("r1"))), None);
        assert_eq!(n.waiting(), (0, 0), "and new ones are dropped");
        // Our own offer is answered: back to stable.
        assert_eq!(
            n.remote_description(false, false),
            RemoteAction::Apply { rollback: false }
        );
        assert!(n.remote_applied(Some("r1".into())).is_empty());
        assert_eq!(
            n.connection_candidate(C("after", Some("r1"))),
            Some(C("after", Some("r1")))
        );
    }

    #[test]
    fn polite_rolls_back_and_takes_a_colliding_offer() {
        let mut n: Negotiation<C> = Negotiation::new(true);
        assert_eq!(
            n.remote_description(true, false),
            RemoteAction::Apply { rollback: true }
        );
        assert_eq!(
            n.remote_description(true, true),
            RemoteAction::Apply { rollback: false },
            "no collision in stable"
        );
    }

    #[test]
    fn signaling_candidates_wait_for_a_description_with_their_ufrag() {
        let mut n = Negotiation::new(true);
        assert_eq!(sig(&mut n, C("a", Some("r1"))), None);
        assert_eq!(sig(&mut n, C("none", None)), None);
        assert_eq!(sig(&mut n, C("later", Some("r2"))), None);
        assert_eq!(n.connection_candidate(C("control", None)), None);
        let ready = n.remote_applied(Some("r1".into()));
        assert_eq!(
            ready,
            vec![C("control", None), C("a", Some("r1"))],
            "connection-level first, then the matching signaling ones"
        );
        assert_eq!(
            n.waiting(),
            (0, 2),
            "a missing or other ufrag keeps waiting"
        );
        assert_eq!(sig(&mut n, C("b", Some("r1"))), Some(C("b", Some("r1"))));
        // A later description (e.g. a new connection attempt's) releases its own.
        assert_eq!(
            n.remote_applied(Some("r2".into())),
            vec![C("later", Some("r2"))]
        );
    }

    #[test]
    fn the_connection_queue_is_bounded_too() {
        let mut n = Negotiation::new(true);
        for _ in 0..MAX_QUEUED_SIGNALING_CANDIDATES + 5 {
            assert_eq!(n.connection_candidate(C("x", None)), None);
        }
        assert_eq!(n.waiting(), (MAX_QUEUED_SIGNALING_CANDIDATES, 0));
    }

    #[test]
    fn the_signaling_queue_keeps_the_newest_hundred() {
        let mut n = Negotiation::new(false);
        static NAMES: [&str; 2] = ["old", "new"];
        assert_eq!(sig(&mut n, C(NAMES[0], Some("x"))), None);
        for _ in 0..MAX_QUEUED_SIGNALING_CANDIDATES {
            assert_eq!(sig(&mut n, C(NAMES[1], Some("x"))), None);
        }
        assert_eq!(n.waiting(), (0, MAX_QUEUED_SIGNALING_CANDIDATES));
        let ready = n.remote_applied(Some("x".into()));
        assert_eq!(ready.len(), MAX_QUEUED_SIGNALING_CANDIDATES);
        assert!(ready.iter().all(|c| c.0 == "new"), "the oldest was dropped");
    }
}
