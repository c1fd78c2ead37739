//! Writing messages onto one data channel: Peerix framing (§7.3), the send-buffer back-pressure
//! and the wait for the receiver's ack (§7.4). No actor: a [`ChannelSender`] is a handle on the
//! channel that the label's lane (`send_path`) drives directly, one message at a time, so no
//! mailbox sits between a client's request and the frames it becomes. Each message's outcome
//! sender waits in the channel's [`Acks`]: the `ChannelActor` of the same channel resolves it when
//! the ack arrives, and the channel's [`watch_acks`] task gives up on those never acknowledged
//! (the decisions are `peerix_proto::AckWatch`'s).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerix_proto::{no_progress, AckWatch, BUFFER_WAIT};
use peerix_rtc::RtcChannel;
use peerix_wire::frame::Frame;
use peerix_wire::transfer::{Chunker, PayloadType, StreamChunker, TransferIds};
use tokio::sync::Notify;

use super::channel::{ProgressTo, SendProgress};
use super::outcome::OutcomeTo;

/// Send-buffer high-water mark. Peerix uses 256 KiB; loopback and LAN links profit from more
/// in flight, and the browser side does not observe the difference.
const HIGH_WATER: usize = 1 << 20;
/// Low-water mark that wakes a waiting sender.
pub const LOW_WATER: usize = 256 << 10;
/// How long after the remote announced a channel our first write on it may wait (see
/// [`RemoteOpenGrace`]). Chromium showed its page `open` 3–9 ms after creating the channel on
/// an idle machine; the rest is margin for a loaded one.
const REMOTE_OPEN_GRACE: Duration = Duration::from_millis(100);
/// How often a write waiting out the grace looks whether it may go earlier.
const GRACE_POLL: Duration = Duration::from_millis(5);

/// A channel the remote created, whose first write waits until the remote surely has it open.
///
/// Chromium announces a channel its page created (DCEP open) at once but tells the page it is
/// `open` a few ms later. A message of ours that lands in between reaches the page, but
/// Peerix's ack for it is dropped (its frame writer refuses a channel that is not `open` yet),
/// so the send would fail 10 s later although the receiver has it. So the first write waits up
/// to [`REMOTE_OPEN_GRACE`] after the announcement, less if the remote sends anything on the
/// channel (it has it open) or turns out to be a peerixd (its hello), which has no such gap.
#[derive(Clone)]
pub struct RemoteOpenGrace {
    until: tokio::time::Instant,
    peerixd: Arc<AtomicBool>,
}

impl RemoteOpenGrace {
    /// A grace starting now; `peerixd` is set once the remote said it is a peerixd.
    pub fn starting_now(peerixd: Arc<AtomicBool>) -> Self {
        Self {
            until: tokio::time::Instant::now() + REMOTE_OPEN_GRACE,
            peerixd,
        }
    }
}

/// A channel's outgoing transfers waiting for their acks, shared by its sender (which registers
/// them), its actor (which resolves them when the acks arrive) and its ack watch task
/// ([`watch_acks`], which gives up on those the remote does not acknowledge).
#[derive(Default)]
pub struct Acks {
    /// The decisions: which transfer waits for what, and when to give up.
    watch: std::sync::Mutex<AckWatch<OutcomeTo>>,
    /// Wakes the watch task when it has something to time again.
    armed: Notify,
    /// The channel is gone: the watch task ends.
    closed: AtomicBool,
}

/// Shared handle on a channel's [`Acks`].
pub type AckMap = Arc<Acks>;

impl Acks {
    /// The receiver acknowledged (`Ok`) or refused (`Err`) transfer `id`. False when no such
    /// transfer waits (a stray ack).
    pub fn resolve(&self, id: u32, outcome: SendOutcome) -> bool {
        let waiting = self.watch.lock().ok().and_then(|mut w| w.acked(id));
        match waiting {
            Some(tx) => {
                tx.send(outcome);
                true
            }
            None => false,
        }
    }

    /// The channel is gone: every waiting send fails with `why`, and the watch task ends.
    pub fn close(&self, why: &str) {
        self.closed.store(true, Ordering::Release);
        let waiting = self.watch.lock().map(|mut w| w.drain()).unwrap_or_default();
        for tx in waiting {
            tx.send(Err(why.to_string()));
        }
        self.armed.notify_one();
    }

    fn forget(&self, id: u32) -> Option<OutcomeTo> {
        self.watch.lock().ok().and_then(|mut w| w.forget(id))
    }
}

/// Gives up on the channel's transfers the remote does not acknowledge (the decisions are
/// [`AckWatch`]'s): looks at the channel every `ACK_CHECK` while any wait, and sleeps on
/// [`Acks::armed`] otherwise, so an idle channel has no timer. Ends when the channel closes.
pub async fn watch_acks(ch: RtcChannel, acks: AckMap) {
    loop {
        if acks.closed.load(Ordering::Acquire) {
            return;
        }
        let next = match acks.watch.lock() {
            Ok(w) => w.poll_timeout(),
            Err(_) => return,
        };
        match next {
            // `notify_one` keeps a permit when nobody waits, so an arm between the look above
            // and this wait is not lost.
            None => {
                acks.armed.notified().await;
                continue;
            }
            Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        }
        let buffered = ch.buffered_amount().await;
        let received = ch.messages_received();
        let given_up = match acks.watch.lock() {
            Ok(mut w) => w.handle_timeout(Instant::now(), buffered, received),
            Err(_) => return,
        };
        for g in given_up {
            abort_at_receiver(&ch, g.id).await;
            g.value.send(Err(g.reason));
        }
    }
}

/// Tells the receiver to drop what it has of transfer `id` (a sender abort, §7.5).
async fn abort_at_receiver(ch: &RtcChannel, id: u32) {
    let _ = ch.send(Bytes::from(Frame::sender_abort(id).encode())).await;
}

/// The outcome of one send to one peer: `Ok` once the remote acknowledged the whole message.
pub type SendOutcome = Result<(), String>;

/// One outgoing application message.
#[derive(Clone)]
pub struct OutgoingMessage {
    /// Peerix payload type.
    pub kind: PayloadType,
    /// Optional `info` JSON bytes.
    pub info: Option<Vec<u8>>,
    /// Payload bytes, shared by every peer the message goes to.
    pub data: Bytes,
}

/// A piece of a streamed outgoing message.
#[derive(Debug, Clone)]
pub enum StreamPiece {
    /// More bytes.
    Data(Bytes),
    /// The message is complete.
    End,
}

/// A message whose bytes arrive while it is being sent (a client's streamed send). Dropping the
/// piece sender before `End` aborts the transfer at the receiver (sender-side abort).
pub struct OutgoingStream {
    /// Peerix payload type.
    pub kind: PayloadType,
    /// Optional `info` JSON bytes.
    pub info: Option<Vec<u8>>,
    /// The pieces, in order.
    pub pieces: tokio::sync::mpsc::Receiver<StreamPiece>,
}

/// A handle for writing messages onto one data channel (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct ChannelSender {
    ch: RtcChannel,
    framed: bool,
    ids: Arc<std::sync::Mutex<TransferIds>>,
    acks: AckMap,
    drained: Arc<Notify>,
    peer: Arc<str>,
    grace: Option<RemoteOpenGrace>,
}

impl ChannelSender {
    /// A sender on `ch`, sharing the acks and drain notification with the channel's actor.
    pub fn new(
        ch: RtcChannel,
        framed: bool,
        acks: AckMap,
        drained: Arc<Notify>,
        peer: &str,
    ) -> Self {
        Self {
            ch,
            framed,
            ids: Arc::new(std::sync::Mutex::new(TransferIds::default())),
            acks,
            drained,
            peer: Arc::from(peer),
            grace: None,
        }
    }

    /// The same sender, whose first write waits out `grace` (a channel the remote created).
    pub fn with_grace(mut self, grace: Option<RemoteOpenGrace>) -> Self {
        self.grace = grace;
        self
    }

    /// Waits until the remote surely has the channel open (see [`RemoteOpenGrace`]).
    async fn remote_open(&self) {
        let Some(g) = &self.grace else { return };
        loop {
            let now = tokio::time::Instant::now();
            if now >= g.until
                || g.peerixd.load(Ordering::Acquire)
                || self.ch.messages_received() > 0
            {
                return;
            }
            tokio::time::sleep((g.until - now).min(GRACE_POLL)).await;
        }
    }

    /// Whether `self` and `other` write onto the same channel.
    pub fn same_channel(&self, other: &ChannelSender) -> bool {
        Arc::ptr_eq(&self.acks, &other.acks)
    }

    /// Allocates a transfer id and registers `to` for its ack (`None`: `to` got the failure).
    fn begin_transfer(&self, to: OutcomeTo) -> Option<u32> {
        self.begin_transfers(vec![to]).pop().flatten()
    }

    /// [`ChannelSender::begin_transfer`] for several messages, in order, under one lock of the
    /// id counter and one of the acks (a batch of small messages took both once per message).
    fn begin_transfers(&self, tos: Vec<OutcomeTo>) -> Vec<Option<u32>> {
        let n = tos.len();
        let fail_all = |tos: Vec<OutcomeTo>, why: &str| {
            for to in tos {
                to.send(Err(why.to_string()));
            }
            vec![None; n]
        };
        let ids: Vec<u32> = match self.ids.lock() {
            Ok(mut ids) => (0..n).map(|_| ids.next_id()).collect(),
            Err(_) => return fail_all(tos, "transfer id counter poisoned"),
        };
        let replaced: Vec<(u32, OutcomeTo)> = match self.acks.watch.lock() {
            // Checked under the lock that `Acks::close` drains under: a transfer registered
            // after the close would wait for a watch that is gone.
            Ok(_) if self.acks.closed.load(Ordering::Acquire) => {
                return fail_all(tos, "channel closed")
            }
            Ok(mut w) => ids
                .iter()
                .zip(tos)
                .filter_map(|(&id, to)| w.begin(id, to).map(|old| (id, old)))
                .collect(),
            Err(_) => return fail_all(tos, "ack registry poisoned"),
        };
        for (id, old) in replaced {
            old.send(Err(format!(
                "no acknowledgement before transfer id {id} came round again"
            )));
        }
        ids.into_iter().map(Some).collect()
    }

    /// All frames of transfer `id` are queued: its ack wait starts (and the watch task wakes
    /// if it had nothing to time).
    fn sent(&self, id: u32) {
        self.sent_all(&[id]);
    }

    /// [`ChannelSender::sent`] for several transfers, under one lock.
    fn sent_all(&self, ids: &[u32]) {
        let now = Instant::now();
        let arm = self
            .acks
            .watch
            .lock()
            .map(|mut w| {
                // Every id is marked: no short circuit.
                let mut arm = false;
                for &id in ids {
                    arm |= w.sent(id, now);
                }
                arm
            })
            .unwrap_or(false);
        if arm {
            self.acks.armed.notify_one();
        }
    }

    /// Fails transfer `id` with `why` (unless it was already resolved) and tells the receiver
    /// to drop what it has (§7.5).
    async fn give_up(&self, id: u32, why: String) {
        let to = self.acks.forget(id);
        abort_at_receiver(&self.ch, id).await;
        if let Some(to) = to {
            to.send(Err(why));
        }
    }

    /// Fails transfer `id`, which sent nothing yet, with `why`.
    fn fail_unsent(&self, id: u32, why: String) {
        if let Some(to) = self.acks.forget(id) {
            to.send(Err(why));
        }
    }

    fn report(&self, p: &Option<ProgressTo>, current: u64, total: Option<u64>) {
        if let Some(p) = p {
            p.to.do_send(SendProgress {
                request: p.request,
                peer: self.peer.to_string(),
                label: self.ch.label().to_string(),
                current,
                total,
            });
        }
    }

    /// Writes every frame of `m` (waiting for buffer room as needed); its outcome goes to `to`
    /// when the remote acknowledges it or the send fails. The caller sends the next message as
    /// soon as this returns: acks overlap with later messages, frames never do.
    pub async fn send_message(
        &self,
        m: OutgoingMessage,
        progress: Option<ProgressTo>,
        to: OutcomeTo,
    ) {
        if !self.framed {
            // Unframed channels carry raw messages (unordered/partially reliable or with a
            // protocol); there is no Peerix ack to wait for.
            // Text and JSON go as string messages (what a browser's `send(string)` does), so a
            // receiver can tell them from bytes (PROTOCOL.md, "Raw channels").
            let sent = match (m.kind, std::str::from_utf8(&m.data)) {
                (PayloadType::Text | PayloadType::Json, Ok(text)) => self.ch.send_text(text).await,
                _ => self.ch.send(m.data).await,
            };
            to.send(sent.map_err(|e| e.to_string()));
            return;
        }
        self.remote_open().await;
        let Some(id) = self.begin_transfer(to) else {
            return;
        };
        let total = m.data.len() as u64;
        let mut chunker = match Chunker::new(id, m.kind, m.info, m.data) {
            Ok(c) => c,
            Err(e) => return self.fail_unsent(id, format!("cannot send: {e}")),
        };
        while let Some(frame) = chunker.next_frame() {
            if let Err(e) = send_paced(&self.ch, &self.drained, frame).await {
                return self.give_up(id, e).await;
            }
            let sent = chunker.bytes_sent() as u64;
            self.report(&progress, sent, Some(total));
        }
        self.sent(id);
    }

    /// Writes several whole messages, in order, with one wait for buffer room and one
    /// `send_many` for all their frames (one lock of the connection and one wake of its driver
    /// instead of one each); each message's outcome goes to its own sender. For small messages
    /// that are queued together: their frames must fit the send buffer at once.
    pub async fn send_messages(
        &self,
        batch: Vec<((OutgoingMessage, Option<ProgressTo>), OutcomeTo)>,
    ) {
        if !self.framed || batch.len() == 1 {
            for ((m, p), to) in batch {
                self.send_message(m, p, to).await;
            }
            return;
        }
        self.remote_open().await;
        let (messages, tos): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let ids = self.begin_transfers(tos);
        let mut frames = Vec::new();
        let mut started = Vec::with_capacity(messages.len());
        for ((m, progress), id) in messages.into_iter().zip(ids) {
            let Some(id) = id else {
                continue;
            };
            let total = m.data.len() as u64;
            let mut chunker = match Chunker::new(id, m.kind, m.info, m.data) {
                Ok(c) => c,
                Err(e) => {
                    self.fail_unsent(id, format!("cannot send: {e}"));
                    continue;
                }
            };
            while let Some(frame) = chunker.next_frame() {
                frames.push(Bytes::from(frame));
            }
            started.push((id, total, progress));
        }
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        let sent = match wait_for_buffer(
            &self.ch,
            &self.drained,
            HIGH_WATER - bytes.min(HIGH_WATER),
        )
        .await
        {
            Ok(()) => self
                .ch
                .send_many(frames)
                .await
                .map_err(|e| format!("channel send failed: {e}")),
            Err(e) => Err(e),
        };
        match sent {
            Err(e) => {
                for (id, _, _) in started {
                    self.give_up(id, e.clone()).await;
                }
            }
            Ok(()) => {
                for (_, total, progress) in &started {
                    self.report(progress, *total, Some(*total));
                }
                let ids: Vec<u32> = started.iter().map(|(id, _, _)| *id).collect();
                self.sent_all(&ids);
            }
        }
    }

    /// Writes a streamed message as its pieces arrive; its outcome goes to `to` once the remote
    /// acknowledged it, or when it fails.
    pub async fn send_stream(
        &self,
        mut m: OutgoingStream,
        progress: Option<ProgressTo>,
        to: OutcomeTo,
    ) {
        if !self.framed {
            to.send(Err(
                "streamed sends need an ordered channel without a sub-protocol".into(),
            ));
            return;
        }
        self.remote_open().await;
        let Some(id) = self.begin_transfer(to) else {
            return;
        };
        let mut chunker = match StreamChunker::new(id, m.kind, m.info.take(), None) {
            Ok(c) => c,
            Err(e) => return self.fail_unsent(id, format!("cannot send: {e}")),
        };
        loop {
            let (frames, end) = match m.pieces.recv().await {
                Some(StreamPiece::Data(b)) => (chunker.push(&b), false),
                Some(StreamPiece::End) => (chunker.finish(), true),
                None => {
                    return self
                        .give_up(
                            id,
                            "the sending client went away before the message was complete".into(),
                        )
                        .await
                }
            };
            let frames = match frames {
                Ok(f) => f,
                Err(e) => return self.give_up(id, e.to_string()).await,
            };
            for frame in frames {
                if let Err(e) = send_paced(&self.ch, &self.drained, frame).await {
                    return self.give_up(id, e).await;
                }
            }
            // The total of a streamed message is known only at its end (the `done` frame).
            self.report(&progress, chunker.bytes_sent(), None);
            if end {
                break;
            }
        }
        self.sent(id);
    }
}

/// Waits until the send buffer has room for `frame` (Peerix's back-pressure, §7.4), then sends it.
/// Fails only when the buffer made no progress for `BUFFER_WAIT`: on a slow path (a browser that
/// reads slowly, a lossy link) draining 1 MiB can take longer than that while data keeps moving.
async fn send_paced(ch: &RtcChannel, drained: &Notify, frame: Vec<u8>) -> Result<(), String> {
    wait_for_buffer(ch, drained, HIGH_WATER - frame.len().min(HIGH_WATER)).await?;
    ch.send(Bytes::from(frame))
        .await
        .map_err(|e| format!("channel send failed: {e}"))
}

/// Waits until the channel's unacknowledged bytes are at most `limit`, failing after
/// `BUFFER_WAIT` without any decrease.
async fn wait_for_buffer(ch: &RtcChannel, drained: &Notify, limit: usize) -> Result<(), String> {
    let mut last = ch.buffered_amount().await;
    let mut deadline = tokio::time::Instant::now() + BUFFER_WAIT;
    while last > limit {
        let wait = drained.notified();
        tokio::select! { _ = wait => {}, _ = tokio::time::sleep(Duration::from_millis(5)) => {} }
        let now = ch.buffered_amount().await;
        if now < last {
            deadline = tokio::time::Instant::now() + BUFFER_WAIT;
        } else if tokio::time::Instant::now() >= deadline {
            return Err(no_progress(now));
        }
        last = now;
    }
    Ok(())
}
