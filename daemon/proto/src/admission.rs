//! Who gets a connection and who is asked again: the admission cap with its refusal queue
//! (forged ids must not make us allocate connections without bound), invites that expect an
//! offer, and recovery re-invokes after failures. Every map here is fed by ids anyone can
//! forge, so each is bounded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use peerix_wire::packet::{SessionDescription, SignalType};
use serde_json::Value as Json;

use crate::room::{Room, BROWSER_NOTICE_SLACK};
use crate::types::{Action, Target};

/// How many invokes we send to a peer that announced itself but never offered, before
/// reporting it unreachable.
pub const MAX_INVITES: u32 = 3;

/// How long after an invoke an offer is expected before we invoke again (doubling). An
/// invoke is answered in milliseconds by a live peer; only a lost packet or a peer that left
/// leaves it unanswered.
const INVITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after a peer's own connection to us has surely ended we invoke it again.
const AFTER_HOLD: Duration = Duration::from_millis(500);

/// How often a peer is invoked while it may still hold its old connection a little longer
/// than we estimated ([`BROWSER_NOTICE_SLACK`]).
const SLACK_CADENCE: Duration = Duration::from_secs(1);

/// Peers whose invites or recovery we track at most; the oldest entry goes first.
const MAX_TRACKED: usize = 256;

/// A peer we expect to hear from: how often we asked, when to ask again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tracked {
    pub(crate) attempts: u32,
    pub(crate) due: Option<Instant>,
    pub(crate) since: Instant,
    /// Until when the peer may still hold its own connection to us, ignoring invokes (a
    /// browser whose path we saw die before it could, see `Room::close_conn`).
    pub(crate) holds_until: Option<Instant>,
}

impl Room {
    pub(crate) fn connecting(&self) -> usize {
        self.by_peer
            .values()
            .filter_map(|id| self.conns.get(id))
            .filter(|c| c.state.is_setting_up())
            .count()
    }

    /// Publishes an invoke. A reply to an announce has an empty payload without metadata
    /// (0.6+); retries always carry `[metadata]` (§4.6).
    pub(crate) fn invoke(&mut self, now: Instant, peer: &str, retry: bool) {
        let message = if self.cfg.metadata.is_null() && !retry {
            None
        } else {
            Some(vec![self.cfg.metadata.clone()])
        };
        self.out.push_back(Action::Publish {
            to: Target::Peer(peer.to_string()),
            kind: SignalType::Invoke,
            message,
        });
        // Expect an offer; an invoke lost on the way would otherwise leave both sides silent.
        // A peer that still holds its old connection ignores this one: ask again right after
        // it has dropped that, not at the next doubling (which could be 10 s later).
        let asked = self.invites.get(peer).map_or(0, |t| t.attempts);
        let (attempts, due) = match self.recovery.get(peer).and_then(|t| t.holds_until) {
            Some(held) if held > now => (asked + 1, held + AFTER_HOLD),
            // Our estimate of its drop is only an estimate (Chromium's consent check took 6 s
            // instead of 5 in one run, and the doubling then cost 10 s): ask every second
            // while it may still be late. These asks do not count toward `MAX_INVITES`.
            Some(held) if now < held + BROWSER_NOTICE_SLACK => (asked.max(1), now + SLACK_CADENCE),
            _ => (asked + 1, now + INVITE_TIMEOUT * 2u32.pow(asked)),
        };
        track(
            &mut self.invites,
            peer,
            Tracked {
                attempts,
                due: Some(due),
                since: now,
                holds_until: None,
            },
        );
    }

    /// Whether a connection to a new id may be set up now; a refused id is remembered (with
    /// its offer) and taken up when a slot frees, so a real peer caught in a flood of forged
    /// ones gets in without waiting for its own timeout. Refusals are reported once a second.
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        peer: &str,
        offer: Option<(SessionDescription, Json)>,
    ) -> bool {
        let limit = self.cfg.max_connecting;
        let connecting = self.connecting();
        if limit == 0 || connecting < limit {
            return true;
        }
        self.refused.retain(|(r, _)| r != peer);
        if self.refused.len() >= limit {
            self.refused.pop_front();
        }
        self.refused.push_back((peer.to_string(), offer));
        if self
            .last_limit_report
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_limit_report = Some(now);
            self.error(
                "PEER_LIMIT",
                format!(
                    "{connecting} connections are being set up in this room \
                     (webrtc.max_connecting_peers); ignoring new peers until some connect"
                ),
                Some(peer),
            );
        }
        false
    }

    /// Takes up refused ids once there is room, newest first: a stored offer is answered (the
    /// remote still waits for that answer); an id that only invoked us is invited back, which
    /// allocates nothing here.
    pub(crate) fn take_up_refused(&mut self, now: Instant) {
        let limit = self.cfg.max_connecting;
        while !self.leaving && self.connecting() < limit {
            let Some((peer, offer)) = self.refused.pop_back() else {
                return;
            };
            if self.is_live(&peer) {
                continue;
            }
            match offer {
                Some((desc, meta)) => {
                    let id = self.connect(now, &peer, meta, false);
                    self.signaled_description(id, desc);
                }
                None => self.invoke(now, &peer, true),
            }
        }
    }

    /// Creates the connection to `peer`. The receiver of an invoke offers (§5.2).
    /// Re-invokes and invite give-ups that are due.
    pub(crate) fn tracked_due(&mut self, now: Instant) {
        let due = |m: &BTreeMap<String, Tracked>| -> Vec<String> {
            m.iter()
                .filter(|(_, t)| t.due.is_some_and(|d| d <= now))
                .map(|(p, _)| p.clone())
                .collect()
        };
        for peer in due(&self.recovery) {
            if let Some(t) = self.recovery.get_mut(&peer) {
                t.due = None;
            }
            if !self.is_live(&peer) && !self.leaving {
                self.invoke(now, &peer, true);
            }
        }
        for peer in due(&self.invites) {
            let Some(t) = self.invites.get(&peer).copied() else {
                continue;
            };
            if self.is_live(&peer) {
                self.invites.remove(&peer);
            } else if t.attempts < MAX_INVITES {
                self.invoke(now, &peer, true);
            } else {
                self.invites.remove(&peer);
                self.error(
                    "PEER_UNREACHABLE",
                    format!(
                        "invited {MAX_INVITES} times since it announced itself, but it never offered a \
                         connection; it has probably left the room (or signaling to it is lossy)"
                    ),
                    Some(&peer),
                );
            }
        }
    }
}

/// Inserts into a bounded map, evicting the longest-tracked entry when full.
pub(crate) fn track(map: &mut BTreeMap<String, Tracked>, peer: &str, t: Tracked) {
    if !map.contains_key(peer) && map.len() >= MAX_TRACKED {
        if let Some(oldest) = map
            .iter()
            .min_by_key(|(_, t)| t.since)
            .map(|(p, _)| p.clone())
        {
            map.remove(&oldest);
        }
    }
    map.insert(peer.to_string(), t);
}
