//! Who may connect at all: Peerix's `verify(id, metadata)` (spec §2.3, §5.2). Peerix asks it
//! when an invoke or an offer comes from an id that has no live connection, with the metadata
//! that packet carried, and a rejected peer simply gets no reaction: no connection object, no
//! answer, no event. The remote's own timers then play out (a Peerix offerer fails its
//! connection after `connectionTimeout`; an invoker never hears back).
//!
//! The room decides here with one of three policies ([`Admission`]): everyone (Peerix without
//! `verify`), an allow-list of ids, or a verifier outside the machine. A verifier is asked
//! with [`Action::Verify`] and answers with [`Room::verdict`]; a request still open at its
//! deadline, or held by a verifier that went away ([`Room::set_verifier`]), gets the policy's
//! fallback. Only then does the admission cap (`admission.rs`) decide *when* an accepted peer
//! gets its connection.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use peerix_wire::packet::SessionDescription;
use serde_json::Value as Json;

use crate::room::Room;
use crate::types::Action;

/// What the room does with a new remote id (Peerix's `verify` option).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Admission {
    /// Everyone may connect (Peerix without `verify`).
    #[default]
    AcceptAll,
    /// Only these ids; others get no reaction.
    AllowList(BTreeSet<String>),
    /// Ask the verifier ([`Action::Verify`]) and wait for [`Room::verdict`].
    Verifier(VerifierPolicy),
}

/// How a room with a verifier waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierPolicy {
    /// How long a request may stay unanswered, from the packet that raised it. Includes time
    /// spent waiting for a verifier to register.
    pub timeout: Duration,
    /// The answer when the verifier does not give one in time, or goes away.
    pub fallback: Fallback,
    /// Requests open at once; further new ids are ignored (a rate-limited `PEER_LIMIT`
    /// error) until some are settled: forged ids cost nothing to make.
    pub max_pending: usize,
}

/// The answer given in the verifier's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Let the peer connect.
    Accept,
    /// Ignore the peer, as a rejection would.
    Reject,
}

/// A verdict the room could not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictError {
    /// No such request was ever made in this room.
    Unknown(u64),
    /// The request is settled already: answered before, timed out (the fallback applied), its
    /// verifier went away, or the peer got a connection by other means.
    Settled(u64),
}

impl std::fmt::Display for VerdictError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerdictError::Unknown(r) => write!(f, "no verify request {r} was made in this room"),
            VerdictError::Settled(r) => write!(
                f,
                "verify request {r} is no longer open: it was answered already, or it timed out \
                 (or its verifier went away) and the fallback applied"
            ),
        }
    }
}

impl std::error::Error for VerdictError {}

/// One open request: who asked, with what, until when.
#[derive(Debug, Clone)]
struct Open {
    request: u64,
    deadline: Instant,
    metadata: Json,
    /// The offer to answer once accepted; `None` when only an invoke came (we then offer).
    offer: Option<SessionDescription>,
    /// Handed to the present verifier (a request raised without one waits for it).
    asked: bool,
}

/// The room's admission state.
#[derive(Debug, Default)]
pub(crate) struct Verification {
    admission: Admission,
    verifier: bool,
    open: BTreeMap<String, Open>,
    first_request: u64,
    next_request: u64,
    last_limit_report: Option<Instant>,
}

impl Verification {
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.open.values().map(|o| o.deadline).min()
    }

    pub(crate) fn clear(&mut self) {
        self.open.clear();
    }
}

impl Room {
    /// Sets the admission policy. Requests still open are decided again under it (a room that
    /// stops delegating settles them now).
    pub fn set_admission(&mut self, now: Instant, admission: Admission) {
        self.verify.admission = admission;
        if matches!(self.verify.admission, Admission::Verifier(_)) {
            return;
        }
        let open = std::mem::take(&mut self.verify.open);
        for (peer, o) in open {
            self.request_admission(now, &peer, o.metadata, o.offer);
        }
    }

    /// Numbers this room's verify requests from `first` on. A room that is re-created (its
    /// owner crashed) must not reuse the numbers of its predecessor, whose requests a verifier
    /// may still answer: the owner picks a fresh range, e.g. at random.
    pub fn number_requests_from(&mut self, first: u64) {
        self.verify.first_request = first;
        self.verify.next_request = self.verify.next_request.max(first);
    }

    /// A verifier is now there (`true`) or gone (`false`). Requests that waited for one are
    /// handed to it; those a departed verifier held get the fallback now, since nobody can
    /// answer them any more.
    pub fn set_verifier(&mut self, now: Instant, present: bool) {
        self.verify.verifier = present;
        let peers: Vec<String> = self
            .verify
            .open
            .iter()
            .filter(|(_, o)| o.asked != present)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in peers {
            if present {
                if let Some(o) = self.verify.open.get_mut(&peer) {
                    o.asked = true;
                    self.out.push_back(Action::Verify {
                        request: o.request,
                        peer: peer.clone(),
                        metadata: o.metadata.clone(),
                    });
                }
            } else {
                self.fall_back(now, &peer);
            }
        }
    }

    /// The verifier's answer to request `request`.
    pub fn verdict(
        &mut self,
        now: Instant,
        request: u64,
        accept: bool,
    ) -> Result<(), VerdictError> {
        let peer = self
            .verify
            .open
            .iter()
            .find(|(_, o)| o.request == request)
            .map(|(p, _)| p.clone());
        let Some(peer) = peer else {
            return Err(
                if (self.verify.first_request..self.verify.next_request).contains(&request) {
                    VerdictError::Settled(request)
                } else {
                    VerdictError::Unknown(request)
                },
            );
        };
        self.settle(now, &peer, accept);
        Ok(())
    }

    /// Verify requests still open.
    pub fn open_verifications(&self) -> usize {
        self.verify.open.len()
    }

    /// A remote with no live connection asked for one: by invoke (`offer: None`, we will
    /// offer) or by offer. Decides, or asks the verifier, per the admission policy.
    pub(crate) fn request_admission(
        &mut self,
        now: Instant,
        peer: &str,
        metadata: Json,
        offer: Option<SessionDescription>,
    ) {
        let policy = match &self.verify.admission {
            Admission::AcceptAll => return self.admitted(now, peer, metadata, offer),
            Admission::AllowList(ids) => {
                return if ids.contains(peer) {
                    self.admitted(now, peer, metadata, offer)
                } else {
                    self.rejected(peer)
                };
            }
            Admission::Verifier(p) => *p,
        };
        // It answered our invoke (if we sent one): no re-invoke while the verifier thinks.
        self.invites.remove(peer);
        if let Some(o) = self.verify.open.get_mut(peer) {
            // A repeated invoke or offer: one request per id. The newest offer is the one the
            // remote's connection waits on; the metadata stays what the verifier was shown.
            if offer.is_some() {
                o.offer = offer;
            }
            return;
        }
        if self.verify.open.len() >= policy.max_pending.max(1) {
            if self
                .verify
                .last_limit_report
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                self.verify.last_limit_report = Some(now);
                let n = self.verify.open.len();
                self.error(
                    "PEER_LIMIT",
                    format!(
                        "{n} peers are waiting for this room's verifier (verify.maxPending); \
                         ignoring new peers until it answers or they time out"
                    ),
                    Some(peer),
                );
            }
            return;
        }
        let request = self.verify.next_request;
        self.verify.next_request += 1;
        let asked = self.verify.verifier;
        if asked {
            self.out.push_back(Action::Verify {
                request,
                peer: peer.to_string(),
                metadata: metadata.clone(),
            });
        }
        self.verify.open.insert(
            peer.to_string(),
            Open {
                request,
                deadline: now + policy.timeout,
                metadata,
                offer,
                asked,
            },
        );
    }

    /// Requests whose deadline passed get the fallback.
    pub(crate) fn verifications_due(&mut self, now: Instant) {
        let due: Vec<String> = self
            .verify
            .open
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in due {
            self.fall_back(now, &peer);
        }
    }

    fn fall_back(&mut self, now: Instant, peer: &str) {
        let accept = match &self.verify.admission {
            Admission::Verifier(p) => p.fallback == Fallback::Accept,
            _ => true,
        };
        self.settle(now, peer, accept);
    }

    fn settle(&mut self, now: Instant, peer: &str, accept: bool) {
        let Some(o) = self.verify.open.remove(peer) else {
            return;
        };
        if accept {
            self.admitted(now, peer, o.metadata, o.offer);
        } else {
            self.rejected(peer);
        }
    }

    /// Verified: the admission cap decides when the connection is made.
    fn admitted(
        &mut self,
        now: Instant,
        peer: &str,
        metadata: Json,
        offer: Option<SessionDescription>,
    ) {
        if self.leaving || self.is_live(peer) {
            return;
        }
        match offer {
            None => {
                if self.admit(now, peer, None) {
                    self.connect(now, peer, metadata, true);
                }
            }
            Some(desc) => {
                if !self.admit(now, peer, Some((desc.clone(), metadata.clone()))) {
                    return;
                }
                let id = self.connect(now, peer, metadata, false);
                self.signaled_description(id, desc);
            }
        }
    }

    /// Refused, as Peerix refuses: no reaction. We also stop expecting anything from it (no
    /// re-invokes, no kept candidates); if it asks again, it is judged again.
    fn rejected(&mut self, peer: &str) {
        self.invites.remove(peer);
        self.recovery.remove(peer);
        self.queued.remove(peer);
    }
}
