//! A simulated world for room machines: a virtual clock, a signaling bus that can drop,
//! duplicate, delay and reorder packets, and a fake WebRTC stack that connects two connection
//! objects when (and only when) each has applied the other's description and at least one of
//! its candidates, as ICE would. In the spirit of quinn-proto's `Pair`: everything runs in one
//! thread, in virtual time, from a seed, so a failing run repeats exactly.
//!
//! The fake stack keeps the properties the machines depend on: an offer can only be applied
//! in `stable` (or after a rollback), an answer only in `have-local-offer`, candidates only
//! after a remote description; a connection's ICE credentials (ufrag) never change; closing
//! one side resets the control channel at the other; a vanished peer makes its partner
//! `disconnected` after 5 s and `failed` after 30 s, and checks without a working pair fail
//! after 30 s (after Peerix's 15 s connection timer, as in browsers).

//!
//! Over 600 lines on purpose: the clock, the bus and the fake ICE share one task queue and one
//! view of every connection object; split, one simulation step would span files.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use peerix_proto::{
    Action, Admission, ChannelOptions, ConnEvent, ConnId, Event, IceCandidateInit, IceState,
    LocalTrack, MediaOp, Op, PeerState, Room, RoomConfig, SessionDescription, Share, SignalType,
    Target,
};
use serde_json::{json, Value as Json};

/// Deterministic randomness for the world (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
    /// Milliseconds in `lo..=hi`.
    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

/// What the signaling bus does to each delivery.
#[derive(Debug, Clone, Copy)]
pub struct Net {
    /// Probability that a delivery is lost (announces excepted when `keep_announces`).
    pub drop: f64,
    /// Probability that a delivery arrives twice.
    pub dup: f64,
    /// Delay range in ms; different delays reorder packets.
    pub delay: (u64, u64),
    /// Which signal types `drop` applies to (None: all).
    pub drop_only: Option<SignalType>,
    /// Announces are never lost (see the property test for why).
    pub keep_announces: bool,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            drop: 0.0,
            dup: 0.0,
            delay: (1, 3),
            drop_only: None,
            keep_announces: true,
        }
    }
}

/// One daemon or browser in the room.
pub struct Node {
    pub id: String,
    pub room: Option<Room>,
    /// Bumped on every (re)join, so events of an earlier life are not delivered to this one.
    pub life: u32,
    pub events: Vec<(Duration, Event)>,
    /// Channels this node's machine asked to create, as `(remote, label)`.
    pub channels: Vec<(String, String)>,
    /// Packets published, by type.
    pub published: BTreeMap<&'static str, usize>,
    /// Behaves as a browser running Peerix: never says the peerixd hello.
    pub browser: bool,
    /// The admission policy its room gets at every join.
    pub admission: Admission,
    /// Its verifier, if one is registered (see [`Verifier`]).
    pub verifier: Option<Verifier>,
    /// Every `Verify` its machine asked: `(request, peer, metadata)`.
    pub verify_requests: Vec<(u64, String, Json)>,
    /// Offers sent over control channels, with their label maps (§8.2).
    pub control_offers: Vec<Json>,
}

/// A verifier client as the simulation plays it: answers each request after `delay`, accepting
/// the ids in `accept` (or never answers, when `silent`).
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    pub delay: Duration,
    pub accept: Vec<String>,
    pub silent: bool,
}

struct FakeConn {
    remote: String,
    ufrag: String,
    remote_ufrag: Option<String>,
    have_local_offer: bool,
    has_local: bool,
    gathering: bool,
    remote_cands: usize,
    ice: IceState,
    control_open: bool,
    closed: bool,
    partner: Option<(usize, u32, ConnId)>,
    /// Our sendonly transceivers: (mid, stream, track, stopped, negotiated).
    senders: Vec<(String, String, String, bool, bool)>,
    /// Remote tracks the fake stack has reported (it reports each once, like `ontrack`).
    seen_remote: Vec<String>,
}

enum Task {
    Signal {
        to: usize,
        from: String,
        on_room: bool,
        kind: SignalType,
        message: Option<Vec<Json>>,
    },
    Conn {
        node: usize,
        life: u32,
        conn: ConnId,
        ev: ConnEvent,
    },
    /// A connection that has been checking this long without a partner fails.
    CheckTimeout {
        node: usize,
        life: u32,
        conn: ConnId,
    },
    /// A verifier's answer reaches the node's machine.
    Verdict {
        node: usize,
        life: u32,
        request: u64,
        accept: bool,
    },
    /// A partner that vanished: first `disconnected`, later `failed`.
    Consent {
        node: usize,
        life: u32,
        conn: ConnId,
        state: IceState,
    },
}

/// The world.
pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub net: Net,
    pub rng: Rng,
    pub cfg: RoomConfig,
    fakes: BTreeMap<(usize, u32, ConnId), FakeConn>,
    tasks: BinaryHeap<Reverse<(Instant, u64)>>,
    task_data: BTreeMap<u64, Task>,
    seq: u64,
    /// Every connected partnership ever made: `(a, b)` node indexes, at the time it formed.
    pub pairings: Vec<(usize, usize, Duration)>,
    pub trace: Vec<String>,
}

/// A room configuration like Peerix's defaults.
pub fn default_config() -> RoomConfig {
    RoomConfig {
        me: String::new(),
        metadata: Json::Null,
        max_connecting: 64,
        connection_timeout: Some(Duration::from_secs(15)),
        candidate_debounce: Duration::from_millis(50),
    }
}

impl Sim {
    /// A world with nodes named `ids` (not joined yet).
    pub fn new(seed: u64, ids: &[&str], net: Net) -> Self {
        let start = Instant::now();
        Sim {
            start,
            now: start,
            nodes: ids
                .iter()
                .map(|id| Node {
                    id: id.to_string(),
                    room: None,
                    life: 0,
                    events: Vec::new(),
                    channels: Vec::new(),
                    published: BTreeMap::new(),
                    browser: false,
                    admission: Admission::AcceptAll,
                    verifier: None,
                    verify_requests: Vec::new(),
                    control_offers: Vec::new(),
                })
                .collect(),
            net,
            rng: Rng::new(seed),
            cfg: default_config(),
            fakes: BTreeMap::new(),
            tasks: BinaryHeap::new(),
            task_data: BTreeMap::new(),
            seq: 0,
            pairings: Vec::new(),
            trace: Vec::new(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn idx(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("known node")
    }

    fn schedule(&mut self, at: Instant, task: Task) {
        self.seq += 1;
        self.tasks.push(Reverse((at, self.seq)));
        self.task_data.insert(self.seq, task);
    }

    /// The node joins (again): subscribes and announces (§5.1).
    pub fn join(&mut self, i: usize) {
        let mut cfg = self.cfg.clone();
        cfg.me = self.nodes[i].id.clone();
        cfg.metadata = json!({ "name": self.nodes[i].id });
        let seed = self.rng.next();
        let n = &mut self.nodes[i];
        n.life += 1;
        let mut room = Room::new(cfg, seed);
        room.set_admission(self.now, n.admission.clone());
        room.set_verifier(self.now, n.verifier.is_some());
        room.announce();
        n.room = Some(room);
        self.log(format!("{} joins", self.nodes[i].id));
        self.drain(i);
    }

    /// The node leaves properly: closes every connection (remotes see their control channels
    /// reset) and unsubscribes.
    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        if let Some(r) = self.nodes[i].room.as_mut() {
            r.leave(now);
        }
        self.drain(i);
        self.nodes[i].room = None;
        self.log(format!("{} leaves", self.nodes[i].id));
    }

    /// The node vanishes without a word (killed, network gone): its connections go silent.
    pub fn vanish(&mut self, i: usize) {
        self.nodes[i].room = None;
        let life = self.nodes[i].life;
        let dead: Vec<(usize, u32, ConnId)> = self
            .fakes
            .iter()
            .filter(|((n, l, _), f)| *n == i && *l == life && !f.closed)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            if let Some(f) = self.fakes.get_mut(&k) {
                f.closed = true;
                if let Some((pn, pl, pc)) = f.partner {
                    let t5 = self.now + Duration::from_secs(5);
                    let t30 = self.now + Duration::from_secs(30);
                    self.schedule(
                        t5,
                        Task::Consent {
                            node: pn,
                            life: pl,
                            conn: pc,
                            state: IceState::Disconnected,
                        },
                    );
                    self.schedule(
                        t30,
                        Task::Consent {
                            node: pn,
                            life: pl,
                            conn: pc,
                            state: IceState::Failed,
                        },
                    );
                }
            }
        }
        self.log(format!("{} vanishes", self.nodes[i].id));
    }

    /// Runs the world until `t` after its start.
    pub fn run_until(&mut self, t: Duration) {
        let end = self.start + t;
        loop {
            let next_task = self.tasks.peek().map(|Reverse((at, _))| *at);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.room.as_ref()?.poll_timeout().map(|d| (d, i)))
                .min();
            let timer_first = match (next_task, next_timer) {
                (Some(a), Some((b, _))) => b < a,
                (None, Some(_)) => true,
                _ => false,
            };
            if timer_first {
                let (at, i) = next_timer.expect("timer");
                if at > end {
                    break;
                }
                self.now = self.now.max(at);
                let now = self.now;
                if let Some(r) = self.nodes[i].room.as_mut() {
                    r.handle_timeout(now);
                }
                self.drain(i);
            } else {
                let Some(Reverse((at, seq))) = self.tasks.peek().copied() else {
                    break;
                };
                if at > end {
                    break;
                }
                self.tasks.pop();
                self.now = self.now.max(at);
                if let Some(task) = self.task_data.remove(&seq) {
                    self.run_task(task);
                }
            }
        }
        self.now = self.now.max(end);
    }

    fn run_task(&mut self, task: Task) {
        let now = self.now;
        match task {
            Task::Signal {
                to,
                from,
                on_room,
                kind,
                message,
            } => {
                let Some(r) = self.nodes[to].room.as_mut() else {
                    return;
                };
                r.handle_signal(now, on_room, &from, kind, message.unwrap_or_default());
                self.drain(to);
            }
            Task::Conn {
                node,
                life,
                conn,
                ev,
            } => {
                if self.nodes[node].life != life {
                    return;
                }
                let closed = matches!(ev, ConnEvent::Closed { .. });
                if !closed && self.fakes.get(&(node, life, conn)).is_none_or(|f| f.closed) {
                    return;
                }
                let Some(r) = self.nodes[node].room.as_mut() else {
                    return;
                };
                r.handle_conn_event(now, conn, ev);
                self.drain(node);
            }
            Task::Verdict {
                node,
                life,
                request,
                accept,
            } => {
                if self.nodes[node].life != life {
                    return;
                }
                let Some(r) = self.nodes[node].room.as_mut() else {
                    return;
                };
                let res = r.verdict(now, request, accept);
                self.log(format!("verdict {request} {accept}: {res:?}"));
                self.drain(node);
            }
            Task::CheckTimeout { node, life, conn } => {
                let key = (node, life, conn);
                if self
                    .fakes
                    .get(&key)
                    .is_some_and(|f| !f.closed && f.ice == IceState::Checking)
                {
                    self.set_ice(key, IceState::Failed);
                }
            }
            Task::Consent {
                node,
                life,
                conn,
                state,
            } => {
                let key = (node, life, conn);
                let partner_dead = self
                    .fakes
                    .get(&key)
                    .and_then(|f| f.partner)
                    .is_some_and(|p| self.fakes.get(&p).is_none_or(|f| f.closed));
                if partner_dead && self.fakes.get(&key).is_some_and(|f| !f.closed) {
                    self.set_ice(key, state);
                }
            }
        }
    }

    fn set_ice(&mut self, key: (usize, u32, ConnId), state: IceState) {
        if let Some(f) = self.fakes.get_mut(&key) {
            if f.ice == state {
                return;
            }
            f.ice = state;
            self.report_in(1, key, ConnEvent::Ice(state));
        }
    }

    fn log(&mut self, s: String) {
        let t = self.elapsed().as_millis();
        self.trace.push(format!("{t:>7} ms  {s}"));
    }

    /// Carries out everything node `i`'s machine asks for.
    fn drain(&mut self, i: usize) {
        let life = self.nodes[i].life;
        while let Some(action) = self.nodes[i].room.as_mut().and_then(Room::poll_action) {
            self.act(i, life, action);
        }
        self.ice_progress();
    }

    fn act(&mut self, i: usize, life: u32, action: Action) {
        let me = self.nodes[i].id.clone();
        match action {
            Action::Publish { to, kind, message } => {
                *self.nodes[i].published.entry(kind_name(kind)).or_default() += 1;
                let recipients: Vec<(usize, bool)> = match &to {
                    Target::Room => (0..self.nodes.len())
                        .filter(|j| *j != i)
                        .map(|j| (j, true))
                        .collect(),
                    Target::Peer(p) => self
                        .nodes
                        .iter()
                        .position(|n| &n.id == p)
                        .map(|j| vec![(j, false)])
                        .unwrap_or_default(),
                };
                self.log(format!("{me} publishes {} to {to:?}", kind_name(kind)));
                for (j, on_room) in recipients {
                    let droppable = !(self.net.keep_announces && kind == SignalType::Announce)
                        && self.net.drop_only.is_none_or(|k| k == kind);
                    if droppable && self.rng.chance(self.net.drop) {
                        self.log(format!("  lost on the way to {}", self.nodes[j].id));
                        continue;
                    }
                    let copies = if self.rng.chance(self.net.dup) { 2 } else { 1 };
                    for _ in 0..copies {
                        let at = self.now + self.rng.ms(self.net.delay.0, self.net.delay.1);
                        self.schedule(
                            at,
                            Task::Signal {
                                to: j,
                                from: me.clone(),
                                on_room,
                                kind,
                                message: message.clone(),
                            },
                        );
                    }
                }
            }
            Action::Connect { conn, remote, .. } => {
                self.log(format!("{me} creates connection {conn} to {remote}"));
                self.fakes.insert(
                    (i, life, conn),
                    FakeConn {
                        remote,
                        ufrag: format!("{me}.{life}.{conn}"),
                        remote_ufrag: None,
                        have_local_offer: false,
                        has_local: false,
                        gathering: false,
                        remote_cands: 0,
                        ice: IceState::New,
                        control_open: false,
                        closed: false,
                        partner: None,
                        senders: Vec::new(),
                        seen_remote: Vec::new(),
                    },
                );
            }
            Action::Run { conn, op } => {
                let key = (i, life, conn);
                let (stable, result) = self.run_op(key, op);
                self.report_in(1, (i, life, conn), ConnEvent::OpDone { stable, result });
            }
            Action::SendControl { conn, bytes } => {
                if let Ok(peerix_wire::control::ControlMessage::Signal(items)) =
                    peerix_wire::control::ControlMessage::decode(&bytes)
                {
                    if items.first().and_then(|d| d.get("type")) == Some(&json!("offer")) {
                        let map = items.get(1).cloned().unwrap_or(Json::Null);
                        self.nodes[i].control_offers.push(map);
                    }
                }
                if self.nodes[i].browser
                    && matches!(
                        peerix_wire::control::ControlMessage::decode(&bytes),
                        Ok(peerix_wire::control::ControlMessage::PeerixdHello(_))
                    )
                {
                    return;
                }
                let partner = self
                    .fakes
                    .get(&(i, life, conn))
                    .filter(|f| f.control_open)
                    .and_then(|f| f.partner);
                if let Some((pn, pl, pc)) = partner {
                    self.report_in(1, (pn, pl, pc), ConnEvent::ControlMessage(bytes));
                }
            }
            Action::CreateChannel { conn, options } => {
                let remote = self
                    .fakes
                    .get(&(i, life, conn))
                    .map(|f| f.remote.clone())
                    .unwrap_or_default();
                self.nodes[i].channels.push((remote, options.label));
            }
            Action::CloseChannel { .. }
            | Action::Forget { .. }
            | Action::HoldSends { .. }
            | Action::RemoteIsPeerixd { .. } => {}
            Action::Close { conn } => self.close_fake(i, life, conn, false),
            Action::Verify {
                request,
                peer,
                metadata,
            } => {
                self.log(format!("{me} asks its verifier about {peer} ({request})"));
                self.nodes[i]
                    .verify_requests
                    .push((request, peer.clone(), metadata));
                if let Some(v) = self.nodes[i].verifier.clone().filter(|v| !v.silent) {
                    let at = self.now + v.delay;
                    let accept = v.accept.contains(&peer);
                    self.schedule(
                        at,
                        Task::Verdict {
                            node: i,
                            life,
                            request,
                            accept,
                        },
                    );
                }
            }
            Action::Emit(ev) => {
                self.log(format!("{me} event {}", describe(&ev)));
                let t = self.elapsed();
                self.nodes[i].events.push((t, ev));
            }
        }
    }

    fn run_op(
        &mut self,
        key: (usize, u32, ConnId),
        op: Op,
    ) -> (bool, Result<Option<SessionDescription>, String>) {
        let Some(f) = self.fakes.get_mut(&key) else {
            return (true, Err("connection closed".into()));
        };
        if f.closed {
            return (!f.have_local_offer, Err("connection closed".into()));
        }
        // An offer brings all our senders; an answer only those an earlier exchange
        // negotiated: it cannot add sections (§8.5). Mids are unique across the pair.
        let section = |(mid, stream, track, stopped, _): &(String, String, String, bool, bool)| {
            if *stopped {
                format!("m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\na=inactive\r\n")
            } else {
                format!(
                    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\na=sendonly\r\n\
                     a=msid:{stream} {track}\r\n"
                )
            }
        };
        let answer_media: String = f.senders.iter().filter(|s| s.4).map(section).collect();
        let sdp = |kind: &str, ufrag: &str| SessionDescription {
            kind: kind.into(),
            sdp: format!("v=0\r\na=ice-ufrag:{ufrag}\r\na=fake:{kind}\r\n{answer_media}"),
        };
        let mut started = Vec::new();
        let result = match op {
            Op::Media { changes, offer } => {
                for change in changes {
                    match change {
                        MediaOp::AddSender { stream, track, .. } => {
                            let mid = format!("{}{}", f.ufrag, f.senders.len() + 1);
                            f.senders.push((mid, stream, track, false, false));
                        }
                        MediaOp::SetSource { .. } => {}
                        MediaOp::StopSender { track } => {
                            for s in f.senders.iter_mut().filter(|s| s.2 == track) {
                                s.3 = true;
                            }
                        }
                    }
                }
                if offer {
                    f.have_local_offer = true;
                    f.has_local = true;
                    let media: String = f.senders.iter().map(section).collect();
                    Ok(Some(SessionDescription {
                        kind: "offer".into(),
                        sdp: format!("v=0\r\na=ice-ufrag:{}\r\na=fake:offer\r\n{media}", f.ufrag),
                    }))
                } else {
                    Ok(None)
                }
            }
            Op::RestartIce => {
                // New ICE credentials (this fake has no DTLS fingerprint, so a remote takes
                // the offer for a new connection object).
                f.ufrag.push('r');
                f.have_local_offer = true;
                f.has_local = true;
                Ok(Some(sdp("offer", &f.ufrag)))
            }
            Op::CreateOffer => {
                f.have_local_offer = true;
                f.has_local = true;
                Ok(Some(sdp("offer", &f.ufrag)))
            }
            Op::ApplyRemote {
                desc,
                rollback,
                answer,
            } => {
                if rollback {
                    f.have_local_offer = false;
                }
                let ufrag = peerix_proto::ufrag_of_sdp(&desc.sdp).map(str::to_owned);
                // Live sections with an msid are remote tracks: the stack reports each
                // once, at its first packet.
                for section in desc.sdp.split("\nm=").skip(1) {
                    if section.split_whitespace().nth(1) == Some("0") {
                        continue;
                    }
                    let mid = section
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("a=mid:"));
                    let msid = section
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("a=msid:"));
                    if let (Some(mid), Some(msid)) = (mid, msid) {
                        let mut it = msid.split(' ');
                        let (stream, track) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                        if !f.seen_remote.iter().any(|t| t == track) {
                            f.seen_remote.push(track.to_owned());
                            started.push(peerix_proto::TrackInfo {
                                stream: stream.into(),
                                track: track.into(),
                                kind: "video".into(),
                                codec: "video/VP8".into(),
                                mid: mid.into(),
                            });
                        }
                    }
                }
                if answer {
                    if f.have_local_offer {
                        Err("InvalidStateError: called in wrong state: have-local-offer".into())
                    } else {
                        f.remote_ufrag = ufrag;
                        f.has_local = true;
                        Ok(Some(sdp("answer", &f.ufrag)))
                    }
                } else if !f.have_local_offer {
                    Err("InvalidStateError: called in wrong state: stable".into())
                } else {
                    f.have_local_offer = false;
                    f.remote_ufrag = ufrag;
                    // Our offer was answered: its senders have their sections now.
                    for s in &mut f.senders {
                        s.4 = true;
                    }
                    Ok(None)
                }
            }
            Op::AddCandidate(c) => {
                if f.remote_ufrag.is_none() {
                    Err("no remote description".into())
                } else {
                    if c.username_fragment == f.remote_ufrag {
                        f.remote_cands += 1;
                    }
                    Ok(None)
                }
            }
        };
        let stable = !f.have_local_offer;
        if result.is_ok() {
            for t in started {
                self.report_in(1, key, ConnEvent::Track(t));
            }
        }
        let Some(f) = self.fakes.get_mut(&key) else {
            return (stable, result);
        };
        // Gathering starts with the first local description.
        if f.has_local && !f.gathering {
            f.gathering = true;
            let ufrag = f.ufrag.clone();
            for (n, ms) in [(1, 2), (2, 4)] {
                let c = IceCandidateInit {
                    candidate: format!("candidate:{n} 1 udp 1 127.0.0.1 {n} typ host"),
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0),
                    username_fragment: Some(ufrag.clone()),
                };
                self.report_in(ms, key, ConnEvent::LocalCandidate(c));
            }
            self.report_in(5, key, ConnEvent::GatheringComplete);
        }
        (stable, result)
    }

    /// ICE: a connection with both descriptions starts checking; two connections that applied
    /// each other's descriptions and at least one candidate each connect, then open their
    /// control channels.
    fn ice_progress(&mut self) {
        let keys: Vec<(usize, u32, ConnId)> = self.fakes.keys().copied().collect();
        for key in keys {
            let Some(f) = self.fakes.get(&key) else {
                continue;
            };
            if f.closed || self.nodes[key.0].life != key.1 {
                continue;
            }
            if f.ice == IceState::New && f.has_local && f.remote_ufrag.is_some() {
                self.set_ice(key, IceState::Checking);
                let at = self.now + Duration::from_secs(30);
                self.schedule(
                    at,
                    Task::CheckTimeout {
                        node: key.0,
                        life: key.1,
                        conn: key.2,
                    },
                );
                continue;
            }
            if f.ice != IceState::Checking || f.remote_cands == 0 {
                continue;
            }
            let (ufrag, remote_ufrag) = (f.ufrag.clone(), f.remote_ufrag.clone());
            let partner = self.fakes.iter().find(|(k, p)| {
                **k != key
                    && !p.closed
                    && self.nodes[k.0].life == k.1
                    && Some(&p.ufrag) == remote_ufrag.as_ref()
                    && p.remote_ufrag.as_ref() == Some(&ufrag)
                    && p.remote_cands > 0
                    && matches!(p.ice, IceState::Checking)
            });
            let Some((pk, _)) = partner.map(|(k, p)| (*k, p.ufrag.clone())) else {
                continue;
            };
            for (a, b) in [(key, pk), (pk, key)] {
                if let Some(f) = self.fakes.get_mut(&a) {
                    f.partner = Some(b);
                    f.control_open = true;
                }
                self.set_ice(a, IceState::Connected);
                self.report_in(3, a, ConnEvent::ControlOpen);
            }
            let t = self.elapsed();
            self.pairings.push((key.0, pk.0, t));
            self.log(format!(
                "ICE connects {} and {}",
                self.nodes[key.0].id, self.nodes[pk.0].id
            ));
        }
    }

    /// Delivers `ev` to connection `key` (node, life, conn) `ms` milliseconds from now.
    fn report_in(&mut self, ms: u64, key: (usize, u32, ConnId), ev: ConnEvent) {
        let at = self.now + Duration::from_millis(ms);
        let (node, life, conn) = key;
        self.schedule(
            at,
            Task::Conn {
                node,
                life,
                conn,
                ev,
            },
        );
    }

    /// Injects a crash of the owner of `peer`'s connection at node `i`.
    pub fn crash_conn(&mut self, i: usize, peer: &str) {
        let life = self.nodes[i].life;
        let Some((conn, _)) = self.nodes[i].room.as_ref().and_then(|r| r.peer(peer)) else {
            return;
        };
        self.close_fake(i, life, conn, true);
    }

    /// Closes a fake connection: its partner's control channel resets (if it was open) and the
    /// owner hears `Closed` (`crashed`: its actor died rather than closing it).
    fn close_fake(&mut self, i: usize, life: u32, conn: ConnId, crashed: bool) {
        if let Some(f) = self.fakes.get_mut(&(i, life, conn)) {
            f.closed = true;
            if let (true, Some((pn, pl, pc))) = (f.control_open, f.partner) {
                self.report_in(2, (pn, pl, pc), ConnEvent::ControlClosed);
            }
        }
        self.report_in(1, (i, life, conn), ConnEvent::Closed { crashed });
    }

    /// A forged id: node `f` (which runs no machine) publishes an invoke at node `to`.
    pub fn forge_invoke(&mut self, f: usize, to: usize) {
        let from = self.nodes[f].id.clone();
        let at = self.now + Duration::from_millis(1);
        self.schedule(
            at,
            Task::Signal {
                to,
                from,
                on_room: false,
                kind: SignalType::Invoke,
                message: Some(vec![Json::Null]),
            },
        );
    }

    // ---- what tests look at --------------------------------------------------------------

    /// Node `i`'s state for `peer`, as its machine sees it.
    pub fn state(&self, i: usize, peer: &str) -> Option<PeerState> {
        self.nodes[i].room.as_ref()?.peer(peer).map(|(_, s)| s)
    }

    /// Whether `a` and `b` are connected through ONE pair of connection objects that are each
    /// other's ICE partners, both machines saying `connected`.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        let (Some(ra), Some(rb)) = (self.nodes[a].room.as_ref(), self.nodes[b].room.as_ref())
        else {
            return false;
        };
        let (Some((ca, sa)), Some((cb, sb))) =
            (ra.peer(&self.nodes[b].id), rb.peer(&self.nodes[a].id))
        else {
            return false;
        };
        let ka = (a, self.nodes[a].life, ca);
        let kb = (b, self.nodes[b].life, cb);
        sa == PeerState::Connected
            && sb == PeerState::Connected
            && self.fakes.get(&ka).and_then(|f| f.partner) == Some(kb)
            && self.fakes.get(&kb).and_then(|f| f.partner) == Some(ka)
    }

    /// Live (not closed) ICE partnerships between `a` and `b` right now.
    pub fn live_pairings(&self, a: usize, b: usize) -> usize {
        self.fakes
            .iter()
            .filter(|((n, l, _), f)| {
                *n == a
                    && self.nodes[a].life == *l
                    && !f.closed
                    && f.partner.is_some_and(|(pn, pl, _)| {
                        pn == b
                            && self.nodes[b].life == pl
                            && self
                                .fakes
                                .get(&f.partner.expect("partner"))
                                .is_some_and(|p| !p.closed)
                    })
            })
            .count()
    }

    /// Events node `i` emitted about `peer`.
    pub fn events_about(&self, i: usize, peer: &str) -> Vec<String> {
        self.nodes[i]
            .events
            .iter()
            .filter(|(_, e)| match e {
                Event::Connection { peer: p, .. } | Event::Media { peer: p, .. } => p == peer,
                Event::Error { peer: p, .. } => p.as_deref() == Some(peer),
            })
            .map(|(_, e)| describe(e))
            .collect()
    }

    /// Whether node `i` reported a failure about `peer` (a failed connection or an error).
    pub fn reported_failure(&self, i: usize, peer: &str) -> bool {
        self.nodes[i].events.iter().any(|(_, e)| match e {
            Event::Connection { peer: p, state, .. } => p == peer && *state == PeerState::Failed,
            Event::Error { peer: p, code, .. } => {
                p.as_deref() == Some(peer) && *code != "NEGOTIATION_ERROR"
            }
            Event::Media { .. } => false,
        })
    }

    /// Live connection objects node `i` holds (the machine's view), including closing ones.
    pub fn conn_objects(&self, i: usize) -> usize {
        self.nodes[i].room.as_ref().map_or(0, Room::conn_count)
    }

    pub fn dump(&self) -> String {
        self.trace.join("\n")
    }

    /// Node `i`'s channel of `label` to `peer` crashed locally.
    pub fn channel_crashed(&mut self, i: usize, peer: &str, label: &str) {
        if let Some(r) = self.nodes[i].room.as_mut() {
            if let Some((conn, _)) = r.peer(peer) {
                r.reopen_channel(conn, label);
            }
        }
        self.drain(i);
    }

    /// Node `i`'s verifier registers (`Some`) or goes away (`None`).
    pub fn set_verifier(&mut self, i: usize, v: Option<Verifier>) {
        let now = self.now;
        let present = v.is_some();
        self.nodes[i].verifier = v;
        if let Some(r) = self.nodes[i].room.as_mut() {
            r.set_verifier(now, present);
        }
        self.drain(i);
    }

    /// Opens a label room-wide at node `i`.
    /// Node `i` shares `label` as stream `stream` with video tracks `tracks` (id, source).
    pub fn share(&mut self, i: usize, label: &str, stream: &str, tracks: &[(&str, u64)]) {
        if let Some(r) = self.nodes[i].room.as_mut() {
            r.share(
                label,
                Share {
                    stream: stream.into(),
                    tracks: tracks
                        .iter()
                        .map(|(id, source)| LocalTrack {
                            id: (*id).into(),
                            kind: "video".into(),
                            source: *source,
                        })
                        .collect(),
                },
            );
        }
        self.drain(i);
    }

    /// Node `i` stops sharing `label`.
    pub fn unshare(&mut self, i: usize, label: &str) {
        if let Some(r) = self.nodes[i].room.as_mut() {
            r.unshare(label);
        }
        self.drain(i);
    }

    pub fn open(&mut self, i: usize, label: &str) {
        if let Some(r) = self.nodes[i].room.as_mut() {
            let _ = r.open(
                ChannelOptions {
                    label: label.into(),
                    ..Default::default()
                },
                None,
            );
        }
        self.drain(i);
    }
}

pub fn kind_name(k: SignalType) -> &'static str {
    match k {
        SignalType::Announce => "announce",
        SignalType::Invoke => "invoke",
        SignalType::Offer => "offer",
        SignalType::Answer => "answer",
        SignalType::Candidate => "candidate",
    }
}

pub fn describe(e: &Event) -> String {
    match e {
        Event::Connection { peer, state, .. } => format!("connection:{} {peer}", state.as_str()),
        Event::Error {
            code,
            message,
            peer,
        } => format!("error {code} {peer:?}: {message}"),
        Event::Media { peer, event } => format!("media {peer}: {event:?}"),
    }
}
