//! Delivery of received messages to local clients, for one data channel (§7.5): which parts
//! go out and when, so that no event frame exceeds the IPC limit and a client overlaps with a
//! long transfer, and what a client holding parts is told when the message will not complete.
//!
//! Rules (PROTOCOL.md, `channel:message`): a message up to the inline limit, and any JSON
//! value, goes out whole; a larger one goes out in parts of about the inline limit, while it
//! arrives (the first part carries `info`, the last has `final`); text parts are strings cut
//! at character boundaries (an incomplete UTF-8 sequence waits for the next part); `offset`
//! counts bytes. A transfer of which parts went out and that ends otherwise (aborted by the
//! sender, cut by the reassembly limit, or its channel closed) is reported as failed, naming
//! the transfer, exactly once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use peerix_wire::frame::{self, Frame, FrameRef};
use peerix_wire::transfer::{Outcome, PayloadType, Reassembler};
use serde_json::Value as Json;

use crate::limits::ReportLimiter;

/// The payload type of a message, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// UTF-8 text.
    Text,
    /// A JSON value (always delivered whole).
    Json,
    /// A Blob on the sending side.
    Blob,
    /// Bytes.
    Bytes,
}

impl Kind {
    /// The `type` field of `channel:message`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Json => "json",
            Kind::Blob => "blob",
            Kind::Bytes => "bytes",
        }
    }

    fn of(t: PayloadType) -> Self {
        match t {
            PayloadType::Text => Kind::Text,
            PayloadType::Json => Kind::Json,
            PayloadType::Blob => Kind::Blob,
            _ => Kind::Bytes,
        }
    }
}

/// One `channel:message` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Transfer id (0 on channels without Peerix framing).
    pub transfer: u32,
    /// Payload type.
    pub kind: Kind,
    /// The bytes of this part (UTF-8 for text: never a cut character).
    pub data: Vec<u8>,
    /// The sender's `info` (first part only).
    pub info: Option<Json>,
    /// Byte offset of this part in the message.
    pub offset: u64,
    /// The message's length, when known at this part.
    pub total: Option<u64>,
    /// The last part.
    pub last: bool,
}

/// What the channel's owner must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivered {
    /// Emit `channel:message`.
    Part(Part),
    /// Emit `channel:error` naming `transfer`: parts of it went out and no final part will.
    Failed {
        /// Transfer id.
        transfer: u32,
        /// Why, for the client.
        reason: String,
    },
    /// Emit `channel:error` without a transfer (an undecodable frame).
    Error(String),
    /// Write this frame back on the channel (an ack or an abort).
    Reply(Vec<u8>),
    /// The remote acknowledged our outgoing transfer.
    Acked(u32),
    /// The remote aborted our outgoing transfer.
    RejectedByReceiver(u32),
}

/// The delivery state of one channel's incoming side.
#[derive(Debug)]
pub struct Delivery {
    reassembler: Reassembler,
    inline_limit: usize,
    /// Type and info of transfers that started, for parts delivered before they complete.
    started: HashMap<u32, (Kind, Option<Json>)>,
    /// Transfers already partly delivered: the offset of the next part.
    streaming: HashMap<u32, u64>,
    /// An incomplete UTF-8 sequence held back from the last text part.
    text_carry: HashMap<u32, Vec<u8>>,
    /// An open incoming transfer with no frame for this long is cut.
    idle_timeout: Option<Duration>,
    /// When each open incoming transfer last received a frame.
    last_frame: HashMap<u32, Instant>,
    /// Acks and aborts for transfers we are not sending.
    stray_replies: ReportLimiter,
}

impl Delivery {
    /// Messages up to `max_message_size` are reassembled; parts are about `inline_limit`.
    pub fn new(max_message_size: usize, inline_limit: usize) -> Self {
        Delivery {
            reassembler: Reassembler::new(max_message_size),
            inline_limit: inline_limit.max(1),
            started: HashMap::new(),
            streaming: HashMap::new(),
            text_carry: HashMap::new(),
            idle_timeout: None,
            last_frame: HashMap::new(),
            stray_replies: ReportLimiter::default(),
        }
    }

    /// Cuts an incoming transfer that received no frame for `timeout` (see
    /// [`Delivery::handle_timeout`]): a sender that goes silent while its channel stays open
    /// must not hold the reassembly buffer forever.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// A whole message on a channel without Peerix framing (or text on a framed one, which
    /// Peerix passes through, §7.2).
    pub fn unframed(&mut self, data: Vec<u8>, text: bool) -> Vec<Delivered> {
        let kind = if text { Kind::Text } else { Kind::Bytes };
        let mut out = Vec::new();
        self.whole(0, kind, data, None, &mut out);
        out
    }

    /// A binary message on a framed channel (without idle tracking; see [`Delivery::frame_at`]).
    pub fn frame(&mut self, data: &[u8]) -> Vec<Delivered> {
        let mut outcomes = match self.feed(data) {
            Ok(o) => o,
            Err(undecodable) => return undecodable,
        };
        let mut out = Vec::new();
        if let Some((id, kind, data, info, ack)) = Self::whole_in_one(&mut outcomes) {
            // Started and completed by this frame: what `outcome` would do for the three
            // outcomes, without recording the start only to remove it again.
            if !self.started.is_empty() {
                self.started.remove(&id);
            }
            out.extend(ack.map(Delivered::Reply));
            self.whole(id, kind, data, info, &mut out);
            return out;
        }
        for outcome in outcomes {
            self.outcome(outcome, &mut out);
        }
        out
    }

    /// [`Delivery::frame`] without the one-frame shortcut: every outcome one by one.
    #[cfg(test)]
    fn frame_each(&mut self, data: &[u8]) -> Vec<Delivered> {
        let outcomes = match self.feed(data) {
            Ok(o) => o,
            Err(undecodable) => return undecodable,
        };
        let mut out = Vec::new();
        for outcome in outcomes {
            self.outcome(outcome, &mut out);
        }
        out
    }

    /// Decodes `data` and feeds it to the reassembler; what to deliver instead when it does not
    /// decode.
    fn feed(&mut self, data: &[u8]) -> Result<Vec<Outcome>, Vec<Delivered>> {
        match FrameRef::decode(data) {
            Ok(frame) => Ok(self.reassembler.feed_ref(frame)),
            Err(e) => Err(self.undecodable(data, &e.to_string())),
        }
    }

    /// The message of `outcomes` when they are exactly a start, its data and its completion
    /// under one id (a message in one frame, with no earlier transfer closed by it): its id,
    /// kind, bytes, info and ack. No part of such a message went out before (a transfer with
    /// parts out is open, and reusing its id would have closed it first), so it goes out whole.
    #[allow(clippy::type_complexity)]
    fn whole_in_one(
        outcomes: &mut Vec<Outcome>,
    ) -> Option<(u32, Kind, Vec<u8>, Option<Json>, Option<Vec<u8>>)> {
        let one = match outcomes.as_slice() {
            [Outcome::Started { id, .. }, Outcome::Completed {
                id: done,
                truncated: false,
                ..
            }] => id == done,
            [Outcome::Started { id, .. }, Outcome::Data { id: data, .. }, Outcome::Completed {
                id: done,
                truncated: false,
                ..
            }] => id == data && id == done,
            _ => false,
        };
        if !one {
            return None;
        }
        match outcomes.pop() {
            Some(Outcome::Completed {
                id,
                payload_type,
                info,
                data,
                send_ack,
                ..
            }) => Some((id, Kind::of(payload_type), data, info, send_ack)),
            _ => None,
        }
    }

    /// A binary message on a framed channel at `now`: also restarts the idle timer of the
    /// transfer it belongs to.
    pub fn frame_at(&mut self, now: Instant, data: &[u8]) -> Vec<Delivered> {
        let out = self.frame(data);
        if self.idle_timeout.is_some() {
            if let Some(id) = frame::peek_id(data) {
                if self.reassembler.progress(id).is_some() {
                    self.last_frame.insert(id, now);
                }
            }
            let open = &self.reassembler;
            self.last_frame.retain(|id, _| open.progress(*id).is_some());
        }
        out
    }

    /// When [`Delivery::handle_timeout`] is due next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.idle_timeout?;
        self.last_frame.values().min().map(|t| *t + timeout)
    }

    /// Cuts every incoming transfer idle for the timeout at `now`: its buffer is released, the
    /// sender is told (`ask` + `abort`, §7.5) and clients get a failure naming it, whether or
    /// not parts of it went out.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Delivered> {
        let Some(timeout) = self.idle_timeout else {
            return Vec::new();
        };
        let mut idle: Vec<u32> = self
            .last_frame
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        idle.sort_unstable();
        let mut out = Vec::new();
        for id in idle {
            self.last_frame.remove(&id);
            let why = format!(
                "no frame for {} ms while the channel stayed open (remote.transfer_idle_timeout_ms)",
                timeout.as_millis()
            );
            self.cut(id, &why, &mut out);
        }
        out
    }

    /// An acknowledgement for transfer `id` that we are not sending (the channel's owner knows
    /// its outgoing transfers): dropped, and reported at a bounded rate. (Not for aborts:
    /// browsers send their own sender-side aborts with `ask` set, §7.5, so those are normal.)
    pub fn stray_reply(&mut self, now: Instant, id: u32) -> Vec<Delivered> {
        match self.stray_replies.offence(now) {
            Some(suppressed) => vec![Delivered::Error(ReportLimiter::annotate(
                format!("dropped an ack for transfer {id}, which is not being sent"),
                suppressed,
            ))],
            None => Vec::new(),
        }
    }

    /// A frame that does not decode. When it names an open transfer (e.g. a chunk whose length
    /// prefix claims more bytes than any message may hold), that transfer is cut at once:
    /// nothing of the claim is allocated, and the sender is told.
    fn undecodable(&mut self, data: &[u8], error: &str) -> Vec<Delivered> {
        let mut out = Vec::new();
        match frame::peek_id(data) {
            Some(id) if self.reassembler.progress(id).is_some() => {
                let why = format!("an undecodable frame ({error})");
                self.cut(id, &why, &mut out);
            }
            _ => out.push(Delivered::Error(format!(
                "Failed to decode message: {error}"
            ))),
        }
        out
    }

    /// Drops incoming transfer `id`, tells the sender and reports it failed.
    fn cut(&mut self, id: u32, why: &str, out: &mut Vec<Delivered>) {
        if self.reassembler.cut(id).is_none() {
            return;
        }
        self.started.remove(&id);
        self.text_carry.remove(&id);
        self.streaming.remove(&id);
        self.last_frame.remove(&id);
        out.push(Delivered::Reply(Frame::ask_abort(id).encode()));
        out.push(Delivered::Failed {
            transfer: id,
            reason: format!("transfer {id} cut: {why}"),
        });
    }

    /// The channel is gone: every partly delivered message fails.
    pub fn closed(&mut self, why: &str) -> Vec<Delivered> {
        let mut ids: Vec<u32> = self.streaming.drain().map(|(id, _)| id).collect();
        ids.sort_unstable();
        self.started.clear();
        self.text_carry.clear();
        self.last_frame.clear();
        ids.into_iter()
            .map(|transfer| Delivered::Failed {
                transfer,
                reason: format!("transfer {transfer} did not complete: {why}"),
            })
            .collect()
    }

    /// Transfers of which parts went out and that have not ended.
    pub fn partly_delivered(&self) -> usize {
        self.streaming.len()
    }

    fn outcome(&mut self, outcome: Outcome, out: &mut Vec<Delivered>) {
        match outcome {
            Outcome::Started {
                id,
                payload_type,
                info,
            } => {
                self.started.insert(id, (Kind::of(payload_type), info));
            }
            Outcome::Data { id, .. } => self.maybe_part(id, out),
            Outcome::Completed {
                id,
                payload_type,
                info,
                data,
                send_ack,
                ..
            } => {
                if let Some(ack) = send_ack {
                    out.push(Delivered::Reply(ack));
                }
                let kind = Kind::of(payload_type);
                self.started.remove(&id);
                match self.streaming.remove(&id) {
                    // Parts already went out while it arrived: this is the last one.
                    Some(offset) => {
                        let mut rest = self.text_carry.remove(&id).unwrap_or_default();
                        rest.extend_from_slice(&data);
                        out.push(Delivered::Part(Part {
                            transfer: id,
                            kind,
                            data: rest,
                            info: None,
                            offset,
                            total: None,
                            last: true,
                        }));
                    }
                    None => self.whole(id, kind, data, info, out),
                }
            }
            Outcome::Aborted {
                id,
                reason,
                send_abort,
            } => {
                // We refused it (size, order, too many open): clients learn of it even when no
                // part went out, since nothing else would tell them the peer's message was lost.
                let refused = send_abort.is_some();
                if let Some(f) = send_abort {
                    out.push(Delivered::Reply(f));
                }
                self.started.remove(&id);
                self.text_carry.remove(&id);
                self.last_frame.remove(&id);
                if self.streaming.remove(&id).is_some() || refused {
                    // Clients holding earlier parts must learn that no final part will come.
                    out.push(Delivered::Failed {
                        transfer: id,
                        reason: format!("transfer {id} ended: {reason}"),
                    });
                }
            }
            Outcome::OutgoingAcked(id) => out.push(Delivered::Acked(id)),
            Outcome::OutgoingAborted(id) => out.push(Delivered::RejectedByReceiver(id)),
            Outcome::Error(e) => out.push(Delivered::Error(e.to_string())),
        }
    }

    /// Passes on what has arrived of a large message once an inline limit's worth is there,
    /// so the client overlaps with the transfer. JSON waits (a value cannot be parsed in parts).
    fn maybe_part(&mut self, id: u32, out: &mut Vec<Delivered>) {
        let (kind, info) = self
            .started
            .get(&id)
            .cloned()
            .unwrap_or((Kind::Bytes, None));
        if kind == Kind::Json || self.reassembler.buffered_len(id).unwrap_or(0) < self.inline_limit
        {
            return;
        }
        let Some((_, mut part)) = self.reassembler.take_buffered(id) else {
            return;
        };
        let offset = self.streaming.get(&id).copied().unwrap_or(0);
        let mut carry = self.text_carry.remove(&id).unwrap_or_default();
        if !carry.is_empty() {
            carry.append(&mut part);
            part = carry;
        }
        if kind == Kind::Text {
            // Keep an incomplete UTF-8 sequence for the next part.
            if let Err(e) = std::str::from_utf8(&part) {
                if e.error_len().is_none() {
                    self.text_carry.insert(id, part.split_off(e.valid_up_to()));
                }
            }
        }
        self.streaming.insert(id, offset + part.len() as u64);
        out.push(Delivered::Part(Part {
            transfer: id,
            kind,
            data: part,
            info: if offset == 0 { info } else { None },
            offset,
            total: None,
            last: false,
        }));
    }

    /// A message that arrived whole: one part, or parts of the inline limit when larger.
    fn whole(
        &self,
        id: u32,
        kind: Kind,
        data: Vec<u8>,
        info: Option<Json>,
        out: &mut Vec<Delivered>,
    ) {
        let total = data.len() as u64;
        if data.len() <= self.inline_limit || kind == Kind::Json {
            out.push(Delivered::Part(Part {
                transfer: id,
                kind,
                data,
                info,
                offset: 0,
                total: Some(total),
                last: true,
            }));
            return;
        }
        let mut offset = 0usize;
        while offset < data.len() {
            let mut end = (offset + self.inline_limit).min(data.len());
            if kind == Kind::Text {
                // Never cut a character in two.
                while end < data.len() && end > offset + 1 && (data[end] & 0xC0) == 0x80 {
                    end -= 1;
                }
            }
            out.push(Delivered::Part(Part {
                transfer: id,
                kind,
                data: data[offset..end].to_vec(),
                info: if offset == 0 { info.clone() } else { None },
                offset: offset as u64,
                total: Some(total),
                last: end == data.len(),
            }));
            offset = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerix_wire::transfer::Chunker;

    /// The frames a Peerix sender produces for `data`.
    fn frames(id: u32, kind: PayloadType, data: &[u8]) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(id, kind, None, data.to_vec()).expect("valid transfer");
        std::iter::from_fn(|| c.next_frame()).collect()
    }

    fn parts(out: &[Delivered]) -> Vec<&Part> {
        out.iter()
            .filter_map(|d| match d {
                Delivered::Part(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn small_messages_go_out_whole_and_are_acked() {
        let mut d = Delivery::new(1 << 20, 1 << 10);
        let mut out = Vec::new();
        for f in frames(7, PayloadType::Text, b"hello") {
            out.extend(d.frame(&f));
        }
        let p = parts(&out);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].data.as_slice(), p[0].last, p[0].total),
            (&b"hello"[..], true, Some(5))
        );
        assert!(
            out.iter().any(|d| matches!(d, Delivered::Reply(_))),
            "the ack goes back"
        );
    }

    #[test]
    fn large_text_goes_out_while_it_arrives_never_cutting_a_character() {
        let text = "é".repeat(40_000); // 80,000 bytes of two-byte characters
        let mut d = Delivery::new(1 << 20, 10_001);
        let mut got = Vec::new();
        let mut last_seen = false;
        for f in frames(1, PayloadType::Text, text.as_bytes()) {
            for p in parts(&d.frame(&f)) {
                assert!(std::str::from_utf8(&p.data).is_ok(), "a part is a string");
                assert_eq!(p.offset as usize, got.len());
                got.extend_from_slice(&p.data);
                last_seen = p.last;
            }
        }
        assert!(last_seen);
        assert_eq!(got, text.as_bytes());
        assert_eq!(d.partly_delivered(), 0);
    }

    #[test]
    fn json_is_never_split() {
        let v = format!("[{}]", vec!["1"; 20_000].join(","));
        let mut d = Delivery::new(1 << 20, 1_000);
        let out: Vec<Delivered> = frames(2, PayloadType::Json, v.as_bytes())
            .iter()
            .flat_map(|f| d.frame(f))
            .collect();
        let p = parts(&out);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].data, v.as_bytes());
    }

    #[test]
    fn a_partly_delivered_message_fails_once_when_its_channel_closes() {
        let data = vec![7u8; 100_000];
        let mut d = Delivery::new(1 << 20, 20_000);
        let fs = frames(9, PayloadType::Bytes, &data);
        let mut delivered = 0;
        for f in &fs[..fs.len() / 2] {
            delivered += parts(&d.frame(f)).len();
        }
        assert!(delivered > 0, "parts went out before the end");
        assert_eq!(d.partly_delivered(), 1);
        let out = d.closed("the remote peer left");
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0], Delivered::Failed { transfer: 9, reason } if reason.contains("remote peer left"))
        );
        assert!(d.closed("again").is_empty(), "exactly once");
    }

    #[test]
    fn a_message_that_never_surfaced_needs_no_error() {
        let data = vec![1u8; 100_000];
        let mut d = Delivery::new(1 << 20, 1 << 20);
        let fs = frames(3, PayloadType::Bytes, &data);
        for f in &fs[..2] {
            assert!(parts(&d.frame(f)).is_empty());
        }
        assert!(d.closed("gone").is_empty());
    }

    #[test]
    fn an_idle_transfer_is_cut_and_released() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let idle = Duration::from_secs(5);
        let mut d = Delivery::new(1 << 20, 1 << 20).with_idle_timeout(idle);
        let fs = frames(4, PayloadType::Bytes, &[1u8; 100_000]);
        for f in &fs[..3] {
            assert!(parts(&d.frame_at(t0, f)).is_empty());
        }
        assert_eq!(d.poll_timeout(), Some(t0 + idle));
        assert!(d.handle_timeout(t0 + idle / 2).is_empty());
        let out = d.handle_timeout(t0 + idle);
        assert!(
            matches!(&out[..], [Delivered::Reply(_), Delivered::Failed { transfer: 4, reason }] if reason.contains("no frame")),
            "{out:?}"
        );
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(
            d.reassembler.buffered_len(4),
            None,
            "the buffer is released"
        );
        // A late frame of the cut transfer starts nothing.
        assert!(d.frame_at(t0 + idle * 2, &fs[3]).is_empty());
    }

    #[test]
    fn a_frame_claiming_more_than_it_holds_cuts_its_transfer_at_once() {
        let mut d = Delivery::new(1 << 20, 1 << 20);
        let fs = frames(6, PayloadType::Bytes, &[1u8; 100_000]);
        assert!(d.frame(&fs[0]).is_empty());
        // index 1, done false, then a chunk whose length prefix claims 100 GiB.
        let mut claim = vec![0x08, 0x06, 0x18, 0x01, 0x30, 0x00, 0x42];
        let mut len = 100u64 << 30;
        while len >= 0x80 {
            claim.push((len as u8) | 0x80);
            len >>= 7;
        }
        claim.push(len as u8);
        claim.extend_from_slice(b"only a few bytes");
        let out = d.frame(&claim);
        assert!(
            matches!(
                &out[..],
                [Delivered::Reply(_), Delivered::Failed { transfer: 6, .. }]
            ),
            "{out:?}"
        );
        assert_eq!(d.reassembler.buffered_len(6), None);
    }

    #[test]
    fn a_refused_message_is_reported_even_before_any_part() {
        let mut d = Delivery::new(20_000, 1 << 20);
        let out: Vec<Delivered> = frames(8, PayloadType::Json, &[b' '; 50_000])
            .iter()
            .flat_map(|f| d.frame(f))
            .collect();
        assert!(
            out.iter()
                .any(|o| matches!(o, Delivered::Failed { transfer: 8, reason } if reason.contains("exceeds"))),
            "{out:?}"
        );
    }

    #[test]
    fn stray_acks_are_reported_at_a_bounded_rate() {
        use std::time::Instant;
        let now = Instant::now();
        let mut d = Delivery::new(1 << 20, 1 << 10);
        let reports: usize = (0..1000u32).map(|i| d.stray_reply(now, i).len()).sum();
        assert_eq!(reports, crate::ReportLimiter::BURST as usize);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = Delivery::new(1 << 20, 1 << 10);
        let out = d.frame(&[0xff, 0xff, 0xff]);
        assert!(matches!(&out[..], [Delivered::Error(_)]), "{out:?}");
    }

    /// The one-frame shortcut delivers what the outcome-by-outcome route delivers, on any
    /// sequence of frames: whole messages, first/middle/last frames, reused ids, aborts, acks,
    /// texts cut inside a character, with parts (inline limit 30) and the size limit in reach.
    #[test]
    fn whole_in_one_delivers_what_each_outcome_delivers() {
        use proptest::prelude::*;
        let frame = (
            1u32..4,
            proptest::option::of(any::<bool>()),
            prop_oneof![Just(Some(0u32)), proptest::option::of(0u32..3)],
            prop_oneof![
                Just(Some(1u32)),
                Just(Some(2u32)),
                proptest::option::of(0u32..5)
            ],
            proptest::option::of(any::<bool>()),
            prop_oneof![Just(Some(true)), proptest::option::of(any::<bool>())],
            prop_oneof![Just(None), Just(Some(br#"{"a":1}"#.to_vec()))],
            proptest::option::of(proptest::collection::vec(
                prop_oneof![Just(b'a'), Just(0xC3u8), Just(0xA9u8), Just(b'1')],
                0..80,
            )),
        )
            .prop_map(|(id, ask, index, payload_type, abort, done, info, chunk)| {
                Frame {
                    id,
                    ask,
                    index,
                    payload_type,
                    abort,
                    done,
                    info,
                    chunk,
                }
                .encode()
            });
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(2048));
        runner
            .run(&proptest::collection::vec(frame, 0..40), |frames| {
                let mut fast = Delivery::new(200, 30);
                let mut each = Delivery::new(200, 30);
                for f in &frames {
                    prop_assert_eq!(fast.frame(f), each.frame_each(f));
                }
                prop_assert_eq!(fast.closed("end"), each.closed("end"));
                Ok(())
            })
            .expect("the two routes agree");
    }
}
