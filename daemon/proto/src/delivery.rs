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

use peerix_wire::frame::Frame;
use peerix_wire::transfer::{Outcome, PayloadType, Reassembler};
use serde_json::Value as Json;

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
        }
    }

    /// A whole message on a channel without Peerix framing (or text on a framed one, which
    /// Peerix passes through, §7.2).
    pub fn unframed(&mut self, data: Vec<u8>, text: bool) -> Vec<Delivered> {
        let kind = if text { Kind::Text } else { Kind::Bytes };
        let mut out = Vec::new();
        self.whole(0, kind, data, None, &mut out);
        out
    }

    /// A binary message on a framed channel.
    pub fn frame(&mut self, data: &[u8]) -> Vec<Delivered> {
        let frame = match Frame::decode(data) {
            Ok(f) => f,
            Err(e) => return vec![Delivered::Error(format!("Failed to decode message: {e}"))],
        };
        let mut out = Vec::new();
        for outcome in self.reassembler.feed(frame) {
            self.outcome(outcome, &mut out);
        }
        out
    }

    /// The channel is gone: every partly delivered message fails.
    pub fn closed(&mut self, why: &str) -> Vec<Delivered> {
        let mut ids: Vec<u32> = self.streaming.drain().map(|(id, _)| id).collect();
        ids.sort_unstable();
        self.started.clear();
        self.text_carry.clear();
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
                if let Some(f) = send_abort {
                    out.push(Delivered::Reply(f));
                }
                self.started.remove(&id);
                self.text_carry.remove(&id);
                if self.streaming.remove(&id).is_some() {
                    // Clients holding earlier parts must learn that no final part will come.
                    out.push(Delivered::Failed {
                        transfer: id,
                        reason: format!("transfer {id} aborted: {reason:?}"),
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
    fn garbage_is_an_error_not_a_panic() {
        let mut d = Delivery::new(1 << 20, 1 << 10);
        let out = d.frame(&[0xff, 0xff, 0xff]);
        assert!(matches!(&out[..], [Delivered::Error(_)]), "{out:?}");
    }
}
