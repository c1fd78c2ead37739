//! The room machine: one joined room, its connections and everything Peerix decides at room
//! level (§5.1, §5.2, §5.7): announce, answering announces with invokes, who gets a
//! connection (the admission cap and the refusal queue), the room-level candidate queue,
//! recovery after failures and crashes (re-invoke with jitter, at most three times), and what
//! replaces a connection when its remote came back as a new incarnation.
//!
//! Drive it like quinn-proto's `Endpoint`: feed inputs with the current time (`handle_*`),
//! then take [`Room::poll_action`] until `None`, and call [`Room::handle_timeout`] at
//! [`Room::poll_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use peerix_wire::control::ChannelOptions;
use peerix_wire::packet::{ufrag_of_sdp, IceCandidateInit, SessionDescription, SignalType};
use serde_json::Value as Json;

use crate::admission::{track, Tracked};
use crate::conn::{Conn, Pending};
use crate::local_media::Share;
use crate::rng::Jitter;
use crate::types::{Action, ConnEvent, ConnId, Event, IceState, PeerState, Target};
use crate::verify::Verification;

/// How many times a peer whose connection failed is re-invoked before we wait for it to
/// announce again.
pub const MAX_RECOVERY_ATTEMPTS: u32 = 3;

/// How long a connection to another peerixd may stay ICE-disconnected before it fails (see
/// [`crate::ConnEvent`]; browsers get Peerix's `connectionTimeout`).
pub const PEERIXD_DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// How long a browser may take to notice a dead path that we noticed at once (a lost TURN
/// allocation, every pair failed): Chromium's ICE consent check gives up after about 5 s
/// without an answer. Only then does its `connectionTimeout` start.
pub const BROWSER_NOTICE: Duration = Duration::from_secs(5);

/// How much later than [`BROWSER_NOTICE`] plus its `connectionTimeout` a browser may still
/// drop its connection (the consent check's timing varies with the path and the load); it is
/// invoked every second meanwhile, and sends to it are held that much longer.
pub const BROWSER_NOTICE_SLACK: Duration = Duration::from_secs(5);

/// Peerix's default `connectionTimeout` (§2.3), assumed for a browser when ours is disabled.
const PEERIX_CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Candidates kept per sender that has no connection yet (Peerix: 100, oldest dropped).
const QUEUED_PER_SENDER: usize = 100;

/// What the room machine needs to know.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Our peer id in this room.
    pub me: String,
    /// Our metadata (sent in invokes and offers, §5.4).
    pub metadata: Json,
    /// At most this many connections being set up at once (0: no cap).
    pub max_connecting: usize,
    /// Peerix's `connectionTimeout` (`None`: disabled).
    pub connection_timeout: Option<Duration>,
    /// Peerix's `iceCandidateDebounce`.
    pub candidate_debounce: Duration,
}

/// The room has no such peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSuchPeer(pub String);

impl std::fmt::Display for NoSuchPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no peer {:?} in this room", self.0)
    }
}

impl std::error::Error for NoSuchPeer {}

/// One joined room.
#[derive(Debug)]
pub struct Room {
    pub(crate) cfg: RoomConfig,
    pub(crate) jitter: Jitter,
    pub(crate) out: VecDeque<Action>,
    /// Boxed: a `Conn` is ~600 bytes, and a B-tree leaf has room for 11 values, so a room
    /// with one peer (the common case) held ~6.8 KB for it; boxed, ~0.2 KB plus the one `Conn`.
    pub(crate) conns: BTreeMap<ConnId, Box<Conn>>,
    /// The live connection of each remote id (at most one).
    pub(crate) by_peer: BTreeMap<String, ConnId>,
    pub(crate) next_conn: ConnId,
    pub(crate) labels: BTreeMap<String, ChannelOptions>,
    /// Candidates that arrived before their connection existed (§5.2), per sender.
    pub(crate) queued: BTreeMap<String, VecDeque<IceCandidateInit>>,
    /// Ids refused at the cap (with their offer, if they sent one), newest last.
    pub(crate) refused: VecDeque<(String, Option<(SessionDescription, Json)>)>,
    pub(crate) last_limit_report: Option<Instant>,
    /// Peers we invoked and expect an offer from.
    pub(crate) invites: BTreeMap<String, Tracked>,
    /// Peers whose connection failed or crashed and that we re-invoke.
    pub(crate) recovery: BTreeMap<String, Tracked>,
    /// Who may connect (Peerix's `verify`) and the requests its verifier has open.
    pub(crate) verify: Verification,
    pub(crate) leaving: bool,
    /// What we share, by label: sent to every connection once its control channel is open.
    pub(crate) shares: BTreeMap<String, Share>,
    /// ICE restarts toward other peerixd peers (`restart.rs`).
    pub(crate) restart_policy: Option<crate::restart::RestartPolicy>,
}

impl Room {
    /// A room for `cfg`; `seed` seeds the re-invoke jitter.
    pub fn new(cfg: RoomConfig, seed: u64) -> Self {
        Room {
            cfg,
            jitter: Jitter::new(seed),
            out: VecDeque::new(),
            conns: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            next_conn: 1,
            labels: BTreeMap::new(),
            queued: BTreeMap::new(),
            refused: VecDeque::new(),
            last_limit_report: None,
            invites: BTreeMap::new(),
            recovery: BTreeMap::new(),
            verify: Verification::default(),
            leaving: false,
            shares: BTreeMap::new(),
            restart_policy: Some(crate::restart::RestartPolicy::default()),
        }
    }

    /// Our id.
    pub fn me(&self) -> &str {
        &self.cfg.me
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        let next = self.out.pop_front();
        if next.is_none() && self.out.capacity() > 0 {
            // Drained: hand the buffer back. Actions come in bursts (a join, a negotiation)
            // and a room is idle between them, but a `VecDeque` keeps the capacity of its
            // busiest moment (4 actions of ~180 bytes) for the room's life.
            self.out = VecDeque::new();
        }
        next
    }

    /// When [`Room::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.conns.values().filter_map(|c| c.deadline());
        let tracked = self
            .invites
            .values()
            .chain(self.recovery.values())
            .filter_map(|t| t.due);
        conns.chain(tracked).chain(self.verify.deadline()).min()
    }

    // ---- inputs -------------------------------------------------------------------------

    /// Our namespaces are subscribed (or the driver is active again): announce (§5.1).
    pub fn announce(&mut self) {
        if !self.leaving {
            self.out.push_back(Action::Publish {
                to: Target::Room,
                kind: SignalType::Announce,
                message: None,
            });
        }
    }

    /// A decoded signaling packet from `from`. `on_room_namespace`: it came through the room
    /// namespace rather than ours; only announces belong there, and announces only there, so
    /// a hostile publisher cannot steer us through the wrong one.
    pub fn handle_signal(
        &mut self,
        now: Instant,
        on_room_namespace: bool,
        from: &str,
        kind: SignalType,
        message: Vec<Json>,
    ) {
        if self.leaving
            || from == self.cfg.me
            || on_room_namespace != (kind == SignalType::Announce)
        {
            return;
        }
        match kind {
            SignalType::Announce => {
                // A fresh start for a peer we had given up on.
                self.recovery.remove(from);
                self.invoke(now, from, false);
            }
            SignalType::Invoke => {
                if !self.is_live(from) {
                    let meta = message.into_iter().next().unwrap_or(Json::Null);
                    self.request_admission(now, from, meta, None);
                } else if let Some(c) = self.by_peer.get(from).and_then(|id| self.conns.get_mut(id))
                {
                    // It invokes us again, so it holds no connection to us: our offer (if one
                    // is unanswered) never reached it (`resend.rs`).
                    self.out.extend(c.resend.offer_due(now, true, from));
                }
            }
            SignalType::Offer => {
                let mut it = message.into_iter();
                let Some(desc) = it.next().as_ref().and_then(SessionDescription::from_value) else {
                    return self.error(
                        "SIGNALING_ERROR",
                        "Invalid signaling message: offer without description".into(),
                        Some(from),
                    );
                };
                let meta = it.next().unwrap_or(Json::Null);
                match self.by_peer.get(from).copied() {
                    Some(id) if self.is_ice_restart(id, &desc) => {
                        self.restart_offered(now, id);
                        self.signaled_description(id, desc)
                    }
                    Some(id) if !self.is_new_incarnation(id, &desc) => {
                        self.signaled_description(id, desc)
                    }
                    existing => {
                        if let Some(old) = existing {
                            // Peerix never restarts ICE (§5.7): an offer over signaling with
                            // other ICE credentials than the connection already applied comes
                            // from a new connection object, i.e. the remote left without our
                            // noticing and came back with the same id. The old connection is
                            // dead; replace it now rather than after its timers, keeping the
                            // candidates that waited for the new description (the new
                            // connection takes them up when it is made).
                            if let Some(c) = self.conns.get_mut(&old) {
                                let waiting = c.neg.take_signaling_queue();
                                self.queued
                                    .entry(from.to_string())
                                    .or_default()
                                    .extend(waiting);
                            }
                            self.close_conn(now, old, false);
                        }
                        self.request_admission(now, from, meta, Some(desc));
                    }
                }
            }
            SignalType::Answer => {
                let Some(desc) = message.first().and_then(SessionDescription::from_value) else {
                    return self.error(
                        "SIGNALING_ERROR",
                        "Invalid signaling message: answer without description".into(),
                        Some(from),
                    );
                };
                let live = self
                    .by_peer
                    .get(from)
                    .copied()
                    .filter(|id| self.conns.get(id).is_some_and(|c| c.live()));
                if let Some(id) = live {
                    self.signaled_description(id, desc);
                }
            }
            SignalType::Candidate => {
                let cands = message.iter().filter_map(IceCandidateInit::from_value);
                if let Some(id) = self.by_peer.get(from).copied() {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.signaling_candidates(cands, &mut self.out);
                    }
                    return;
                }
                // Candidates may outrun the offer; keep a few per sender, for a bounded number
                // of senders (forged ids must not grow this map without limit).
                let limit = self.cfg.max_connecting.max(1);
                if !self.queued.contains_key(from) && self.queued.len() >= limit {
                    return;
                }
                let q = self.queued.entry(from.to_string()).or_default();
                for c in cands {
                    if q.len() >= QUEUED_PER_SENDER {
                        q.pop_front();
                    }
                    q.push_back(c);
                }
            }
        }
    }

    /// Something happened to connection `conn`.
    pub fn handle_conn_event(&mut self, now: Instant, conn: ConnId, ev: ConnEvent) {
        let live = self.conns.get(&conn).is_some_and(|c| !c.closing);
        match ev {
            ConnEvent::Closed { crashed } => return self.conn_gone(now, conn, crashed),
            _ if !live => return,
            ConnEvent::Ice(state) => return self.ice(now, conn, state),
            ConnEvent::ControlClosed => return self.close_conn(now, conn, false),
            ConnEvent::ChannelCrashed(label) => return self.reopen_channel(conn, &label),
            _ => {}
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let out = &mut self.out;
        match ev {
            ConnEvent::LocalCandidate(cand) => {
                c.local_candidate(now, cand, self.cfg.candidate_debounce, out)
            }
            // Peerix waits out the debounce after the last candidate; once gathering is
            // complete no further candidate can come, so the batch goes now.
            ConnEvent::GatheringComplete => c.flush_candidates(out),
            ConnEvent::ControlOpen => {
                c.control_opened(out);
                for (label, share) in &self.shares {
                    c.share(label, share, out);
                }
            }
            ConnEvent::ControlMessage(bytes) => c.control_message(now, &bytes, out),
            ConnEvent::Track(info) => {
                let events = c.media.track_added(info);
                c.emit_media(events, out)
            }
            ConnEvent::TrackEnded(track) => {
                let events = c.media.track_ended(&track);
                c.emit_media(events, out)
            }
            ConnEvent::OpDone { stable, result } => {
                c.op_done(now, stable, result, &self.cfg.metadata, out)
            }
            ConnEvent::Ice(_)
            | ConnEvent::ControlClosed
            | ConnEvent::ChannelCrashed(_)
            | ConnEvent::Closed { .. } => {}
        }
    }

    /// Time has come for the deadlines that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<ConnId> = self
            .conns
            .values()
            .filter(|c| c.deadline().is_some_and(|d| d <= now))
            .map(|c| c.id)
            .collect();
        for id in due {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            if c.batch_due(now) {
                c.flush_candidates(&mut self.out);
            }
            self.restart_due(now, id);
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            self.out.extend(c.resend.offer_due(now, false, &c.remote));
            if c.timer.is_some_and(|t| t <= now) {
                c.timer = None;
                if !c.closing {
                    self.close_conn(now, id, true);
                }
            }
        }
        self.tracked_due(now);
        self.verifications_due(now);
    }

    /// Open `label` on every connection (now and later), or on one peer's.
    pub fn open(&mut self, options: ChannelOptions, to: Option<&str>) -> Result<(), NoSuchPeer> {
        let targets = self.targets(to)?;
        if to.is_none() {
            self.labels.insert(options.label.clone(), options.clone());
        }
        for id in targets {
            if let Some(c) = self.conns.get_mut(&id) {
                c.labels.insert(options.label.clone(), options.clone());
                if c.control_open {
                    c.open_label(options.clone(), &mut self.out);
                }
            }
        }
        Ok(())
    }

    /// Close `label` everywhere, or on one peer's connection.
    pub fn close(&mut self, label: &str, to: Option<&str>) -> Result<(), NoSuchPeer> {
        let targets = self.targets(to)?;
        if to.is_none() {
            self.labels.remove(label);
        }
        for id in targets {
            if let Some(c) = self.conns.get_mut(&id) {
                c.labels.remove(label);
                self.out.push_back(Action::CloseChannel {
                    conn: id,
                    label: label.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Shares `label` with every peer, now and later (§8.1); sharing it again replaces its
    /// tracks (§8.4).
    pub fn share(&mut self, label: &str, share: Share) {
        for c in self.conns.values_mut() {
            c.share(label, &share, &mut self.out);
        }
        self.shares.insert(label.to_owned(), share);
    }

    /// Stops sharing `label`; returns whether it was shared.
    pub fn unshare(&mut self, label: &str) -> bool {
        if self.shares.remove(label).is_none() {
            return false;
        }
        for c in self.conns.values_mut() {
            c.unshare(label, &mut self.out);
        }
        true
    }

    /// What we share, by label.
    pub fn shares(&self) -> &BTreeMap<String, Share> {
        &self.shares
    }

    /// The channel of `label` on connection `conn` died on our side (its actor crashed): open
    /// the label again, as at control-channel open, if it is still wanted.
    pub fn reopen_channel(&mut self, conn: ConnId, label: &str) {
        let Some(c) = self.conns.get(&conn).filter(|c| c.live() && c.control_open) else {
            return;
        };
        if let Some(opts) = c.labels.get(label).cloned() {
            c.open_label(opts, &mut self.out);
        }
    }

    /// Leave: every connection closes (the remotes learn it from their control channels).
    pub fn leave(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close_conn(now, id, false);
        }
        self.leaving = true;
        self.invites.clear();
        self.recovery.clear();
        self.refused.clear();
        self.queued.clear();
        self.verify.clear();
    }

    // ---- queries ------------------------------------------------------------------------

    /// Labels opened room-wide.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.labels.keys().map(String::as_str)
    }

    /// The live connection to `peer`: its id and state.
    pub fn peer(&self, peer: &str) -> Option<(ConnId, PeerState)> {
        let id = *self.by_peer.get(peer)?;
        self.conns.get(&id).map(|c| (id, c.state))
    }

    /// Every live connection: `(peer, conn, state, metadata)`.
    pub fn peers(&self) -> impl Iterator<Item = (&str, ConnId, PeerState, &Json)> {
        self.by_peer.iter().filter_map(|(p, id)| {
            let c = self.conns.get(id)?;
            Some((p.as_str(), *id, c.state, &c.metadata))
        })
    }

    /// What `peer` shares with us: its live remote tracks, with their labels (§8.3).
    pub fn remote_tracks(&self, peer: &str) -> Vec<(String, crate::media::TrackInfo)> {
        self.by_peer
            .get(peer)
            .and_then(|id| self.conns.get(id))
            .map(|c| {
                c.media
                    .all()
                    .map(|(l, t)| (l.to_owned(), t.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Connections whose objects still exist (live or closing).
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    // ---- internals ----------------------------------------------------------------------

    pub(crate) fn error(&mut self, code: &'static str, message: String, peer: Option<&str>) {
        self.out.push_back(Action::Emit(Event::Error {
            code,
            message,
            peer: peer.map(str::to_owned),
        }));
    }

    pub(crate) fn is_live(&self, peer: &str) -> bool {
        self.by_peer
            .get(peer)
            .and_then(|id| self.conns.get(id))
            .is_some_and(|c| c.live())
    }

    fn is_new_incarnation(&self, id: ConnId, offer: &SessionDescription) -> bool {
        let Some(c) = self.conns.get(&id) else {
            return false;
        };
        match (c.neg.remote_ufrag(), ufrag_of_sdp(&offer.sdp)) {
            (Some(current), Some(new)) => current != new,
            _ => false,
        }
    }

    fn targets(&self, to: Option<&str>) -> Result<Vec<ConnId>, NoSuchPeer> {
        match to {
            Some(p) => self
                .by_peer
                .get(p)
                .map(|id| vec![*id])
                .ok_or_else(|| NoSuchPeer(p.to_string())),
            None => Ok(self.by_peer.values().copied().collect()),
        }
    }

    /// A description that came over signaling, queued on connection `id` (if it still exists).
    pub(crate) fn signaled_description(&mut self, id: ConnId, desc: SessionDescription) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.queue(
                Pending::Remote {
                    desc,
                    via_control: false,
                },
                &mut self.out,
            );
        }
    }

    pub(crate) fn connect(
        &mut self,
        now: Instant,
        peer: &str,
        metadata: Json,
        offerer: bool,
    ) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        // Politeness by JavaScript string order (§1.4): the greater id is polite. Ids are
        // base62 ASCII, where UTF-16 and byte order agree.
        let polite = self.cfg.me.as_str() > peer;
        let mut c = Conn::new(
            id,
            peer.to_string(),
            metadata.clone(),
            polite,
            self.labels.clone(),
        );
        c.start_timer(now, self.cfg.connection_timeout);
        self.invites.remove(peer);
        self.out.push_back(Action::Connect {
            conn: id,
            remote: peer.to_string(),
            metadata: metadata.clone(),
        });
        self.out.push_back(Action::Emit(Event::Connection {
            peer: peer.to_string(),
            state: PeerState::New,
            metadata,
        }));
        if offerer {
            c.queue(Pending::MakeOffer, &mut self.out);
        }
        if let Some(q) = self.queued.remove(peer) {
            c.signaling_candidates(q, &mut self.out);
        }
        self.conns.insert(id, Box::new(c));
        self.by_peer.insert(peer.to_string(), id);
        id
    }

    fn ice(&mut self, now: Instant, id: ConnId, state: IceState) {
        let timeout = self.cfg.connection_timeout;
        // Between two peerixd peers a dead path is restarted, not failed (`restart.rs`).
        if self.restart_ice_state(now, id, state) {
            return;
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let was = match state {
            IceState::New | IceState::Completed => None,
            IceState::Checking => {
                // ICE gets the whole timeout once it can start: an offer that waited for its
                // answer (a copy sent again by `resend.rs` after a first one landed on the
                // browser's dying connection) must not leave checking only a fraction of it.
                // The browser's own timer starts when our offer creates its connection, so
                // this keeps ours from running out first.
                if c.state == PeerState::New && c.timer.is_some() {
                    c.start_timer(now, timeout);
                }
                c.set_state(PeerState::Connecting, &mut self.out)
            }
            IceState::Connected => {
                c.timer = None;
                let peer = c.remote.clone();
                let was = c.set_state(PeerState::Connected, &mut self.out);
                self.recovery.remove(&peer);
                was
            }
            IceState::Disconnected => {
                // Toward browsers, Peerix's timing: `connectionTimeout` after disconnected. A
                // peerixd peer that stops answering ICE consent checks (about 4.5 s) is dead
                // or unreachable; waiting 15 s more would only block sends to it.
                let grace = if c.peerixd {
                    Some(PEERIXD_DISCONNECT_GRACE)
                } else {
                    timeout
                };
                c.start_timer(now, grace);
                c.set_state(PeerState::Disconnected, &mut self.out)
            }
            IceState::Failed => return self.close_conn(now, id, true),
            IceState::Closed => return self.close_conn(now, id, false),
        };
        if was.is_some_and(PeerState::is_setting_up) && !self.refused.is_empty() {
            self.take_up_refused(now);
        }
    }

    /// Ends a connection: `failed` first when it failed, then `closed`; the owner is asked to
    /// close it. The id is free for a new connection at once.
    fn close_conn(&mut self, now: Instant, id: ConnId, failed: bool) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.closing {
            return;
        }
        let was = c.state;
        // ICE can now report a connection failed (every pair failed) long before the
        // connection timer; the failure is reported at once, but the remote is re-invoked when
        // the timer would have fired, as before: a browser ignores an invoke while it still
        // holds its own connection, which Peerix keeps for `connectionTimeout` (§5.7).
        let retry_from = c
            .timer
            .filter(|t| failed && was.is_setting_up() && *t > now)
            .unwrap_or(now);
        // A browser's dead path is repaired by a new connection, not an ICE restart (Peerix
        // never restarts): sends to it wait for that one. A peerixd that failed after its
        // restarts is most likely gone, so sends to it keep failing at once.
        let retried =
            self.recovery.get(&c.remote).map_or(0, |t| t.attempts) < MAX_RECOVERY_ATTEMPTS;
        let was_up = matches!(was, PeerState::Connected | PeerState::Disconnected);
        let timeout = self
            .cfg
            .connection_timeout
            .unwrap_or(PEERIX_CONNECTION_TIMEOUT);
        if failed && retried && !self.leaving && !c.peerixd && was_up {
            // Long enough for the browser to drop its old connection and for a new one to
            // come up within its own timeout.
            self.out.push_back(Action::HoldSends {
                remote: c.remote.clone(),
                hold: BROWSER_NOTICE + BROWSER_NOTICE_SLACK + timeout * 2,
            });
        }
        // A browser whose path we saw die while it was connected still has its connection up:
        // it notices the dead path only by ICE consent, then waits its `connectionTimeout`
        // (taken as ours; §2.4 asks rooms to agree on it) and ignores invokes until then.
        let holds_until = (failed && !c.peerixd && was == PeerState::Connected)
            .then(|| now + BROWSER_NOTICE + timeout);
        if failed {
            c.set_state(PeerState::Failed, &mut self.out);
        }
        c.flush_candidates(&mut self.out);
        // Its tracks end with it, before `connection:closed` (clients stop forwarding them).
        let media = c.media.closed();
        c.emit_media(media, &mut self.out);
        c.closing = true;
        c.timer = None;
        c.set_state(PeerState::Closed, &mut self.out);
        let peer = c.remote.clone();
        self.out.push_back(Action::Close { conn: id });
        if self.by_peer.get(&peer) == Some(&id) {
            self.by_peer.remove(&peer);
            self.out.push_back(Action::Forget {
                remote: peer.clone(),
            });
        }
        if failed && !self.leaving {
            // Recover from failures ourselves (Peerix's own retry rarely leaves a browser, §5.7).
            let attempts = self.recovery.get(&peer).map_or(0, |t| t.attempts) + 1;
            let due = (attempts <= MAX_RECOVERY_ATTEMPTS)
                .then(|| retry_from + Duration::from_millis(self.jitter.millis(0, 1000)));
            if due.is_none() {
                // Never a silent missing pair: say whom we stopped trying to reach.
                self.error(
                    "PEER_UNREACHABLE",
                    format!(
                        "the connection failed {attempts} times in a row (every attempt a new \
                         connection); not trying again until the peer announces itself \
                         (check the network path or ICE servers between the two)"
                    ),
                    Some(&peer),
                );
            }
            track(
                &mut self.recovery,
                &peer,
                Tracked {
                    attempts,
                    due,
                    since: now,
                    holds_until,
                },
            );
        }
        if was.is_setting_up() && !self.refused.is_empty() {
            self.take_up_refused(now);
        }
    }

    /// The connection object is gone (we closed it, or its owner crashed).
    fn conn_gone(&mut self, now: Instant, id: ConnId, crashed: bool) {
        let Some(c) = self.conns.get(&id) else { return };
        let peer = c.remote.clone();
        if !c.closing {
            // It died on its own: report it and make a new connection (the remote sees the old
            // one's control channel reset and our invoke makes it offer again, §5.2).
            self.close_conn(now, id, false);
            if crashed && !self.leaving {
                self.error(
                    "INTERNAL",
                    "the connection's actor crashed; re-establishing the connection".into(),
                    Some(&peer),
                );
                let due = Some(now + Duration::from_millis(self.jitter.millis(100, 600)));
                track(
                    &mut self.recovery,
                    &peer,
                    Tracked {
                        attempts: 0,
                        due,
                        since: now,
                        holds_until: None,
                    },
                );
            }
        }
        self.conns.remove(&id);
    }
}
