//! The peer machine: one connection object to one remote peer (§5, §6).
//!
//! It decides who offers, serializes the operations on the connection (Peerix applies
//! descriptions and candidates strictly in arrival order, §5.9), applies perfect negotiation
//! through [`Negotiation`], batches local candidates while the control channel is closed
//! (§5.5), picks the path of each description (signaling before the control channel opens, the
//! control channel after, §6.6), dispatches control messages and channel requests (§6.4) and
//! owns the connection timer (§5.7). What a state change means for the room (admission,
//! recovery) is the room's business: these functions report the outcome and the room decides.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use peerix_wire::control::{ChannelOptions, ControlMessage};
use peerix_wire::packet::{ufrag_of_sdp, IceCandidateInit, SessionDescription, SignalType};
use serde_json::{json, Value as Json};

use crate::limits::ReportLimiter;
use crate::local_media::{LocalMedia, Share};
use crate::media::{MediaEvent, RemoteMedia};
use crate::negotiation::{Negotiation, RemoteAction};
use crate::resend::Resend;
use crate::types::{Action, ConnId, Event, Op, PeerState, Target};

/// An operation waiting for its turn.
#[derive(Debug)]
pub(crate) enum Pending {
    MakeOffer,
    /// An offer with new ICE credentials (`restart.rs`).
    RestartOffer,
    Remote {
        desc: SessionDescription,
        via_control: bool,
    },
    Candidate(IceCandidateInit),
    /// Our senders' changes (and the offer they need) are due: see [`LocalMedia`].
    Media,
}

/// The operation handed out and not yet reported done.
#[derive(Debug)]
enum Busy {
    Offer,
    Remote {
        sdp: String,
        offer: bool,
        via_control: bool,
        rollback: bool,
    },
    Candidate,
    /// Sender changes without an offer.
    Media,
}

/// The last remote description a connection applied, as far as [`Conn::redundant_offer`] needs it.
#[derive(Debug)]
struct AppliedRemote {
    digest: u64,
    ufrag: Option<String>,
    /// It was an answer (to our offer).
    was_answer: bool,
    /// Its DTLS fingerprint: the same in an ICE restart, new in a new connection object.
    fingerprint: Option<String>,
}

/// Identifies an SDP text for duplicate detection. SipHash with fixed keys: deterministic across
/// runs (the simulation repeats exactly); a remote gains nothing by a collision but the drop of
/// its own offer.
fn sdp_digest(sdp: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    sdp.hash(&mut h);
    h.finish()
}

/// Operations one connection may have waiting. Descriptions and candidates from the remote's
/// control channel feed the queue while one operation at a time runs; a healthy peer has a few
/// dozen at most (a candidate batch), a flooding one is cut off here and reported.
pub(crate) const MAX_QUEUED_OPS: usize = 256;

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    pub(crate) remote: String,
    pub(crate) metadata: Json,
    pub(crate) state: PeerState,
    /// Asked to close (or closed by the remote): no longer live, waiting for the owner's
    /// [`crate::ConnEvent::Closed`].
    pub(crate) closing: bool,
    /// Labels to open once the control channel is open (room-wide ones and this peer's own).
    pub(crate) labels: BTreeMap<String, ChannelOptions>,
    pub(crate) neg: Negotiation<IceCandidateInit>,
    pub(crate) control_open: bool,
    /// The remote said it is a peerixd (its hello on the control channel).
    pub(crate) peerixd: bool,
    /// What is kept of the last remote description applied (not the SDP itself: a few KiB
    /// per connection, for as long as it lives).
    remote_sdp: Option<AppliedRemote>,
    ops: VecDeque<Pending>,
    busy: Option<Busy>,
    stable: bool,
    batch: Vec<IceCandidateInit>,
    batch_deadline: Option<Instant>,
    /// The connection timer (§5.7): runs from creation until ICE connects (started again when
    /// ICE starts checking, `Room::ice`), and again while disconnected.
    pub(crate) timer: Option<Instant>,
    /// Reports of the remote's bad control messages (a hostile peer may send thousands).
    control_errors: ReportLimiter,
    /// Our ICE restart in progress (`restart.rs`).
    pub(crate) restart: Option<crate::restart::Restart>,
    /// An ICE restart runs: descriptions and local candidates go over signaling, since the
    /// control channel rides the dead path.
    pub(crate) via_signaling: bool,
    /// What the remote shares with us: its label map and live tracks (§8).
    pub(crate) media: RemoteMedia,
    /// What we share with the remote (§8.1).
    pub(crate) local: LocalMedia,
    /// Our descriptions over signaling, to send again if they were lost (`resend.rs`).
    pub(crate) resend: Resend,
}

impl Conn {
    pub(crate) fn new(
        id: ConnId,
        remote: String,
        metadata: Json,
        polite: bool,
        labels: BTreeMap<String, ChannelOptions>,
    ) -> Self {
        Conn {
            id,
            remote,
            metadata,
            state: PeerState::New,
            closing: false,
            labels,
            neg: Negotiation::new(polite),
            control_open: false,
            peerixd: false,
            remote_sdp: None,
            ops: VecDeque::new(),
            busy: None,
            stable: true,
            batch: Vec::new(),
            batch_deadline: None,
            timer: None,
            control_errors: ReportLimiter::default(),
            restart: None,
            via_signaling: false,
            media: RemoteMedia::default(),
            local: LocalMedia::default(),
            resend: Resend::default(),
        }
    }

    pub(crate) fn live(&self) -> bool {
        !self.closing && self.state != PeerState::Closed
    }

    pub(crate) fn polite(&self) -> bool {
        self.neg.polite()
    }

    /// The earliest of this connection's deadlines.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let restart = self.restart.as_ref().and_then(|r| r.next);
        [
            self.timer,
            self.batch_deadline,
            restart,
            self.resend.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The DTLS fingerprint of the remote description in force.
    pub(crate) fn remote_fingerprint(&self) -> Option<&str> {
        self.remote_sdp.as_ref()?.fingerprint.as_deref()
    }

    /// Descriptions and candidates go over the control channel (open, and not restarting).
    fn in_band(&self) -> bool {
        self.control_open && !self.via_signaling
    }

    pub(crate) fn start_timer(&mut self, now: Instant, timeout: Option<Duration>) {
        self.timer = timeout.map(|t| now + t);
    }

    /// Sets the state; returns the previous one when it changed. `closed` is terminal.
    pub(crate) fn set_state(
        &mut self,
        state: PeerState,
        out: &mut VecDeque<Action>,
    ) -> Option<PeerState> {
        if self.state == state || self.state == PeerState::Closed {
            return None;
        }
        let was = self.state;
        self.state = state;
        out.push_back(Action::Emit(Event::Connection {
            peer: self.remote.clone(),
            state,
            metadata: self.metadata.clone(),
        }));
        Some(was)
    }

    pub(crate) fn error(&self, code: &'static str, message: String, out: &mut VecDeque<Action>) {
        out.push_back(Action::Emit(Event::Error {
            code,
            message,
            peer: Some(self.remote.clone()),
        }));
    }

    /// Operations waiting behind the outstanding one.
    #[cfg(test)]
    pub(crate) fn queued_ops(&self) -> usize {
        self.ops.len()
    }

    pub(crate) fn queue(&mut self, op: Pending, out: &mut VecDeque<Action>) {
        self.ops.push_back(op);
        self.pump(out);
    }

    /// Hands out the next operation unless one is outstanding.
    fn pump(&mut self, out: &mut VecDeque<Action>) {
        while self.busy.is_none() && !self.closing {
            let Some(op) = self.ops.pop_front() else {
                return;
            };
            match op {
                Pending::MakeOffer => {
                    self.busy = Some(Busy::Offer);
                    out.push_back(Action::Run {
                        conn: self.id,
                        op: Op::CreateOffer,
                    });
                }
                Pending::RestartOffer => {
                    self.busy = Some(Busy::Offer);
                    out.push_back(Action::Run {
                        conn: self.id,
                        op: Op::RestartIce,
                    });
                }
                Pending::Remote { desc, via_control } => {
                    let is_offer = desc.kind == "offer";
                    if is_offer && !via_control && self.redundant_offer(&desc) {
                        // A copy of the offer we answered: our answer was lost (`resend.rs`).
                        let again = self.resend.answer_for(sdp_digest(&desc.sdp), &self.remote);
                        out.extend(again);
                        continue;
                    }
                    if !is_offer && !via_control && self.stable {
                        // No offer of ours is waiting: a copy of an answer already applied.
                        continue;
                    }
                    match self.neg.remote_description(is_offer, self.stable) {
                        // Impolite side of a collision: our offer stands (§6.5).
                        RemoteAction::Ignore => continue,
                        RemoteAction::Apply { rollback } => {
                            self.busy = Some(Busy::Remote {
                                sdp: desc.sdp.clone(),
                                offer: is_offer,
                                via_control,
                                rollback,
                            });
                            out.push_back(Action::Run {
                                conn: self.id,
                                op: Op::ApplyRemote {
                                    desc,
                                    rollback,
                                    answer: is_offer,
                                },
                            });
                        }
                    }
                }
                Pending::Media => {
                    self.local.queued = false;
                    if self.local.needs_offer && !self.stable {
                        // Our offer waits for the exchange in progress to end (§6.5).
                        self.local.deferred = true;
                        continue;
                    }
                    let changes = std::mem::take(&mut self.local.changes);
                    let offer = std::mem::take(&mut self.local.needs_offer);
                    if changes.is_empty() && !offer {
                        continue;
                    }
                    self.busy = Some(if offer { Busy::Offer } else { Busy::Media });
                    out.push_back(Action::Run {
                        conn: self.id,
                        op: Op::Media { changes, offer },
                    });
                }
                Pending::Candidate(c) => {
                    if let Some(c) = self.neg.connection_candidate(c) {
                        self.busy = Some(Busy::Candidate);
                        out.push_back(Action::Run {
                            conn: self.id,
                            op: Op::AddCandidate(c),
                        });
                    }
                }
            }
        }
    }

    /// Whether an offer that came over signaling is one to drop: an exact copy of the remote
    /// description in force (a duplicated packet or a retry), or, on the impolite side before
    /// the control channel opens, an offer from the connection object whose answer we already
    /// applied: the remote sent it in a glare, rolled it back and answered ours, and the
    /// packets crossed. Peerix renegotiates only over the control channel (§6.6), and one
    /// connection object keeps its ICE credentials, so such an offer can only be stale;
    /// applying it would turn our answered offer into a second, conflicting exchange.
    fn redundant_offer(&self, desc: &SessionDescription) -> bool {
        let Some(applied) = &self.remote_sdp else {
            return false;
        };
        if applied.digest == sdp_digest(&desc.sdp) {
            return true;
        }
        applied.was_answer
            && !self.polite()
            && !self.control_open
            && applied.ufrag.is_some()
            && applied.ufrag.as_deref() == ufrag_of_sdp(&desc.sdp)
    }

    /// The outstanding operation finished.
    pub(crate) fn op_done(
        &mut self,
        now: Instant,
        stable: bool,
        result: Result<Option<SessionDescription>, String>,
        my_metadata: &Json,
        out: &mut VecDeque<Action>,
    ) {
        self.stable = stable;
        let Some(busy) = self.busy.take() else {
            return;
        };
        match (busy, result) {
            (Busy::Offer, Ok(Some(desc))) => {
                self.send_description(now, desc, None, my_metadata, out)
            }
            (Busy::Offer, Ok(None)) => {}
            (Busy::Offer, Err(e)) => {
                self.error("NEGOTIATION_ERROR", format!("creating offer: {e}"), out)
            }
            (Busy::Media, Ok(_)) => {}
            (Busy::Media, Err(e)) => {
                self.error("NEGOTIATION_ERROR", format!("changing senders: {e}"), out)
            }
            (
                Busy::Remote {
                    sdp,
                    offer,
                    rollback,
                    ..
                },
                Ok(answer),
            ) => {
                if rollback && self.control_open && !self.local.is_empty() {
                    // Our offer was rolled back in a collision: what it carried is offered
                    // again once this exchange is done.
                    self.local.needs_offer = true;
                    self.local.deferred = true;
                }
                let ufrag = ufrag_of_sdp(&sdp).map(str::to_owned);
                let digest = sdp_digest(&sdp);
                self.resend.exchange_done();
                self.remote_sdp = Some(AppliedRemote {
                    digest,
                    ufrag: ufrag.clone(),
                    was_answer: !offer,
                    fingerprint: crate::restart::fingerprint_of_sdp(&sdp).map(str::to_owned),
                });
                // Tracks the remote stopped sending in this description end now (the stack
                // does not end a track whose transceiver the remote stopped).
                let ended = self.media.reconcile(&sdp);
                self.emit_media(ended, out);
                if let Some(a) = answer {
                    self.send_description(now, a, Some(digest), my_metadata, out);
                }
                // Candidates that waited for a description go first, in order.
                for c in self.neg.remote_applied(ufrag).into_iter().rev() {
                    self.ops.push_front(Pending::Candidate(c));
                }
            }
            (Busy::Remote { via_control, .. }, Err(e)) => {
                self.neg.remote_failed();
                let path = if via_control {
                    "control channel"
                } else {
                    "signaling"
                };
                self.error(
                    "NEGOTIATION_ERROR",
                    format!("applying remote description (via {path}): {e}"),
                    out,
                )
            }
            (Busy::Candidate, Ok(_)) => {}
            (Busy::Candidate, Err(e)) => self.error(
                "ICECANDIDATE_ERROR",
                format!("adding remote candidate: {e}"),
                out,
            ),
        }
        if self.local.deferred && self.stable {
            self.local.deferred = false;
            self.queue_media();
        }
        self.pump(out);
    }

    /// Puts the media marker in the operation queue (once).
    fn queue_media(&mut self) {
        if !self.local.queued {
            self.local.queued = true;
            self.ops.push_back(Pending::Media);
        }
    }

    /// Shares `label` with this peer (again). Before the control channel is open nothing
    /// happens: shares are added when it opens (§8.1).
    pub(crate) fn share(&mut self, label: &str, share: &Share, out: &mut VecDeque<Action>) {
        if !self.control_open || self.closing {
            return;
        }
        self.local.share(label, share);
        self.queue_media();
        self.pump(out);
    }

    /// Stops sharing `label` with this peer.
    pub(crate) fn unshare(&mut self, label: &str, out: &mut VecDeque<Action>) {
        if !self.control_open || self.closing {
            return;
        }
        self.local.unshare(label);
        self.queue_media();
        self.pump(out);
    }

    /// Sends a description on the path available now (§6.5, §6.6); `answers`: the digest of
    /// the offer an answer answers. What goes over signaling is kept to be sent again.
    fn send_description(
        &mut self,
        now: Instant,
        desc: SessionDescription,
        answers: Option<u64>,
        my_metadata: &Json,
        out: &mut VecDeque<Action>,
    ) {
        let is_offer = desc.kind == "offer";
        let d = desc.to_value();
        if self.in_band() {
            // Over the control channel an offer carries the label map of its media (§8.2);
            // data-only offers carry an empty one.
            let msg = if is_offer {
                vec![d, self.local.label_map()]
            } else {
                vec![d]
            };
            self.send_control(ControlMessage::Signal(msg), out);
        } else if is_offer {
            let message = vec![d, my_metadata.clone()];
            // An ICE restart's offers have their own attempts (`restart.rs`): a resent copy of
            // an older one would arrive after its successor and restart ICE again.
            if !self.via_signaling {
                self.resend.offer_sent(now, message.clone());
            }
            out.push_back(self.publish(SignalType::Offer, message));
        } else {
            if let Some(offer) = answers {
                self.resend.answer_sent(offer, vec![d.clone()]);
            }
            out.push_back(self.publish(SignalType::Answer, vec![d]));
        }
    }

    fn publish(&self, kind: SignalType, message: Vec<Json>) -> Action {
        Action::Publish {
            to: Target::Peer(self.remote.clone()),
            kind,
            message: Some(message),
        }
    }

    pub(crate) fn send_control(&self, msg: ControlMessage, out: &mut VecDeque<Action>) {
        out.push_back(Action::SendControl {
            conn: self.id,
            bytes: msg.encode(),
        });
    }

    /// A local candidate: straight over the control channel when it is open, otherwise into
    /// the batch with a trailing-edge debounce (§5.5).
    pub(crate) fn local_candidate(
        &mut self,
        now: Instant,
        c: IceCandidateInit,
        debounce: Duration,
        out: &mut VecDeque<Action>,
    ) {
        if self.in_band() {
            self.send_control(ControlMessage::Signal(vec![c.to_value()]), out);
            return;
        }
        self.batch.push(c);
        self.batch_deadline = Some(now + debounce);
    }

    /// Sends the batched candidates over signaling as one packet.
    pub(crate) fn flush_candidates(&mut self, out: &mut VecDeque<Action>) {
        self.batch_deadline = None;
        let batch = std::mem::take(&mut self.batch);
        if !batch.is_empty() && !self.closing {
            let values: Vec<Json> = batch.iter().map(IceCandidateInit::to_value).collect();
            self.resend.candidates_sent(&values);
            out.push_back(self.publish(SignalType::Candidate, values));
        }
    }

    /// The batch's debounce ran out.
    pub(crate) fn batch_due(&self, now: Instant) -> bool {
        self.batch_deadline.is_some_and(|d| d <= now)
    }

    /// The control channel opened: open the labels this side is responsible for.
    pub(crate) fn control_opened(&mut self, out: &mut VecDeque<Action>) {
        self.control_open = true;
        self.resend.clear();
        // Tells another peerixd that we are one; Peerix ignores it (§6.2).
        self.send_control(ControlMessage::PeerixdHello(json!({ "peerixd": 1 })), out);
        let labels: Vec<ChannelOptions> = self.labels.values().cloned().collect();
        for opts in labels {
            self.open_label(opts, out);
        }
    }

    /// Only the impolite side creates user channels; the polite one asks it to (§6.4).
    pub(crate) fn open_label(&self, opts: ChannelOptions, out: &mut VecDeque<Action>) {
        if self.polite() {
            self.send_control(ControlMessage::ChannelRequest(opts), out);
        } else {
            out.push_back(Action::CreateChannel {
                conn: self.id,
                options: opts,
            });
        }
    }

    /// A bad control message from the remote: reported, at a bounded rate.
    fn control_error(&mut self, now: Instant, message: String, out: &mut VecDeque<Action>) {
        if let Some(suppressed) = self.control_errors.offence(now) {
            self.error(
                "SIGNALING_ERROR",
                ReportLimiter::annotate(message, suppressed),
                out,
            );
        }
    }

    /// A message on the control channel (§6.2–§6.4).
    pub(crate) fn control_message(
        &mut self,
        now: Instant,
        data: &[u8],
        out: &mut VecDeque<Action>,
    ) {
        let msg = match ControlMessage::decode(data) {
            Ok(m) => m,
            Err(e) => {
                // Peerix ignores undecodable envelopes but reports JSON errors (§6.2).
                if !e.is_silent() {
                    self.control_error(now, format!("control message: {e}"), out);
                }
                return;
            }
        };
        match msg {
            ControlMessage::Signal(_) if self.ops.len() >= MAX_QUEUED_OPS => self.control_error(
                now,
                format!(
                    "control channel: {MAX_QUEUED_OPS} descriptions and candidates already wait                      for the connection; this one was dropped"
                ),
                out,
            ),
            ControlMessage::Signal(items) => {
                let Some(first) = items.first() else { return };
                if first.get("type").is_some() {
                    match SessionDescription::from_value(first) {
                        Some(desc) => {
                            // An offer's second element replaces the label map (§6.3): the
                            // tracks this offer brings are named by it.
                            if desc.kind == "offer" {
                                if let Some(map) = items.get(1) {
                                    self.media.set_label_map(map);
                                }
                            }
                            self.queue(
                            Pending::Remote {
                                desc,
                                via_control: true,
                            },
                            out,
                        )
                        }
                        None => self.control_error(
                            now,
                            "control channel: malformed description".into(),
                            out,
                        ),
                    }
                } else if first.get("candidate").is_some() {
                    match IceCandidateInit::from_value(first) {
                        Some(c) if !c.candidate.is_empty() => {
                            self.queue(Pending::Candidate(c), out)
                        }
                        Some(_) => {}
                        None => self.control_error(
                            now,
                            "control channel: malformed candidate".into(),
                            out,
                        ),
                    }
                }
            }
            ControlMessage::PeerixdHello(_) => {
                if !self.peerixd {
                    out.push_back(Action::RemoteIsPeerixd { conn: self.id });
                }
                self.peerixd = true;
            }
            ControlMessage::ChannelRequest(opts) if opts.label.is_empty() => self.control_error(
                now,
                "control channel: channel request without a label (the empty label is the \
                 control channel's)"
                    .into(),
                out,
            ),
            ControlMessage::ChannelRequest(opts) => {
                if !self.polite() {
                    out.push_back(Action::CreateChannel {
                        conn: self.id,
                        options: opts,
                    });
                }
            }
        }
    }

    /// Media events of this connection, as the room's events.
    pub(crate) fn emit_media(&self, events: Vec<MediaEvent>, out: &mut VecDeque<Action>) {
        for event in events {
            out.push_back(Action::Emit(Event::Media {
                peer: self.remote.clone(),
                event,
            }));
        }
    }

    /// Candidates from signaling for this connection: through the ufrag gate (§5.2, §5.6).
    pub(crate) fn signaling_candidates(
        &mut self,
        cands: impl IntoIterator<Item = IceCandidateInit>,
        out: &mut VecDeque<Action>,
    ) {
        for c in cands {
            if c.candidate.is_empty() {
                continue;
            }
            let ufrag = c.username_fragment.clone();
            if let Some(c) = self.neg.signaling_candidate(ufrag.as_deref(), c) {
                self.queue(Pending::Candidate(c), out);
            }
        }
    }
}
