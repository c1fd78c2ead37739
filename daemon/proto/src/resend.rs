//! Descriptions sent again when signaling lost them (issue 14).
//!
//! Signaling is at-most-once (§3): a lost `offer` or `answer` used to leave a connection
//! waiting for its connection timer (15 s) and the re-invoke after it, and a big room on one
//! busy host lost enough of them that pairs stayed unconnected for good. Each side now keeps
//! the last description it sent over signaling until the exchange is known to be done:
//!
//! - the offerer sends its offer again when no answer came within [`OFFER_RESEND`] (doubling
//!   each time, at most [`MAX_OFFER_RESENDS`] times), and at once when the remote invokes us
//!   again (an invoke means the remote holds no connection to us, so it never got the offer);
//! - the answerer, given a copy of the offer it already answered, sends its answer again
//!   instead of dropping the copy (the answer was lost; the offerer is still waiting);
//! - either way the local candidates sent since that description go again right after it: a
//!   copy that reaches a remote which lost (or never had) the first one creates a fresh
//!   connection there, and without our candidates that connection cannot reach us behind a
//!   NAT (a browser whose dying connection swallowed our first offer answered the copy, then
//!   checked nothing for its whole timeout).
//!
//! Both are ordinary Peerix messages: a browser that gets an offer it already answered
//! applies it as a renegotiation and answers again, and a copy of an answer that arrives once
//! the exchange is done is dropped ([`crate::conn`]). Everything goes once the control channel
//! is open (descriptions then travel on it, reliably).

use std::time::{Duration, Instant};

use peerix_wire::packet::SignalType;
use serde_json::Value as Json;

use crate::types::{Action, Target};

/// How long an offer over signaling waits for its answer before it is sent again (doubling).
/// A live peer answers in milliseconds; 32 daemons joining one room at once on two cores
/// answer within a second.
pub const OFFER_RESEND: Duration = Duration::from_secs(2);

/// How many times an unanswered offer is sent again; the connection timer (Peerix's
/// `connectionTimeout`) ends the attempt after that.
pub const MAX_OFFER_RESENDS: u32 = 3;

/// How many local candidates are kept to go again with a description. A connection gathers
/// a handful (host, srflx and relay per interface); the rest are not repeated.
pub const MAX_RESENT_CANDIDATES: usize = 32;

/// An offer waiting for its answer.
#[derive(Debug)]
struct Unanswered {
    message: Vec<Json>,
    due: Instant,
    sent: u32,
}

/// What one connection may have to send again.
#[derive(Debug, Default)]
pub(crate) struct Resend {
    offer: Option<Unanswered>,
    /// Our answer over signaling and the digest of the offer it answers.
    answer: Option<(u64, Vec<Json>)>,
    /// Our local candidates sent over signaling since that description (bounded).
    candidates: Vec<Json>,
}

impl Resend {
    /// We sent `message` (an offer) over signaling.
    pub(crate) fn offer_sent(&mut self, now: Instant, message: Vec<Json>) {
        self.offer = Some(Unanswered {
            message,
            due: now + OFFER_RESEND,
            sent: 0,
        });
        self.candidates.clear();
    }

    /// We answered the offer with digest `offer` over signaling with `message`.
    pub(crate) fn answer_sent(&mut self, offer: u64, message: Vec<Json>) {
        self.answer = Some((offer, message));
        self.candidates.clear();
    }

    /// We sent these local candidates over signaling: they go again with a description sent
    /// again.
    pub(crate) fn candidates_sent(&mut self, batch: &[Json]) {
        if self.offer.is_none() && self.answer.is_none() {
            return;
        }
        let room = MAX_RESENT_CANDIDATES.saturating_sub(self.candidates.len());
        self.candidates.extend(batch.iter().take(room).cloned());
    }

    /// A remote description was applied, or our offer rolled back: ours is no longer waiting.
    pub(crate) fn exchange_done(&mut self) {
        self.offer = None;
    }

    /// The control channel opened: nothing more goes over signaling.
    pub(crate) fn clear(&mut self) {
        self.offer = None;
        self.answer = None;
        self.candidates.clear();
    }

    /// When the unanswered offer is due again.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.offer.as_ref().map(|o| o.due)
    }

    /// The offer again, followed by our candidates, if it is due at `now` (or `now`
    /// regardless, when `force`); empty when nothing is waiting or it was sent often enough.
    pub(crate) fn offer_due(&mut self, now: Instant, force: bool, remote: &str) -> Vec<Action> {
        let Some(o) = self.offer.as_mut() else {
            return Vec::new();
        };
        if !force && o.due > now {
            return Vec::new();
        }
        if o.sent >= MAX_OFFER_RESENDS {
            self.offer = None;
            return Vec::new();
        }
        o.sent += 1;
        o.due = now + OFFER_RESEND * 2u32.pow(o.sent);
        let offer = publish(remote, SignalType::Offer, o.message.clone());
        self.with_candidates(offer, remote)
    }

    /// Our answer again, followed by our candidates, if `offer` (a digest) is the offer it
    /// answered.
    pub(crate) fn answer_for(&self, offer: u64, remote: &str) -> Vec<Action> {
        match &self.answer {
            Some((digest, message)) if *digest == offer => {
                let answer = publish(remote, SignalType::Answer, message.clone());
                self.with_candidates(answer, remote)
            }
            _ => Vec::new(),
        }
    }

    fn with_candidates(&self, description: Action, remote: &str) -> Vec<Action> {
        let mut out = vec![description];
        if !self.candidates.is_empty() {
            out.push(publish(
                remote,
                SignalType::Candidate,
                self.candidates.clone(),
            ));
        }
        out
    }
}

fn publish(remote: &str, kind: SignalType, message: Vec<Json>) -> Action {
    Action::Publish {
        to: Target::Peer(remote.to_owned()),
        kind,
        message: Some(message),
    }
}
