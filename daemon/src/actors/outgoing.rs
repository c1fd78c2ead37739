//! Writing messages onto one data channel: Peerix framing (§7.3), the send-buffer back-pressure
//! and the wait for the receiver's ack (§7.4). No actor: a [`ChannelSender`] is a handle on the
//! channel that the label's lane (`send_path`) drives directly, one message at a time, so no
//! mailbox sits between a client's request and the frames it becomes. The `ChannelActor` of the
//! same channel reads the acks and buffer-low events and resolves them through the shared maps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use peerix_rtc::RtcChannel;
use peerix_wire::frame::Frame;
use peerix_wire::transfer::{Chunker, PayloadType, StreamChunker, TransferIds};
use tokio::sync::{oneshot, Notify};

use super::channel::{ProgressTo, SendProgress};

/// How long Peerix waits for the receiver's ack after the last frame (§7.4).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a frame may wait for room in the send buffer before the transfer fails (§7.4).
const BUFFER_WAIT: Duration = Duration::from_secs(10);
/// How often a message waiting for its ack looks whether the send buffer still moves.
const ACK_CHECK: Duration = Duration::from_millis(500);
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

/// Outstanding acks of a channel's outgoing transfers, by transfer id.
pub type AckMap = Arc<std::sync::Mutex<HashMap<u32, oneshot::Sender<Result<(), String>>>>>;

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
    peer: String,
    grace: Option<RemoteOpenGrace>,
}

/// Waits for the remote's ack of a message whose frames are all out; resolves to its outcome.
pub type AckWait = std::pin::Pin<Box<dyn std::future::Future<Output = SendOutcome>>>;

fn done(r: SendOutcome) -> AckWait {
    Box::pin(std::future::ready(r))
}

impl ChannelSender {
    /// A sender on `ch`, sharing the ack map and drain notification with the channel's actor.
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
            peer: peer.to_string(),
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

    /// Allocates a transfer id and registers for its ack.
    fn begin_transfer(&self) -> Result<(u32, oneshot::Receiver<SendOutcome>), String> {
        let id = self
            .ids
            .lock()
            .map_err(|_| "transfer id counter poisoned".to_string())?
            .next_id();
        let (tx, ack) = oneshot::channel();
        if let Ok(mut acks) = self.acks.lock() {
            acks.insert(id, tx);
        }
        Ok((id, ack))
    }

    fn forget(&self, id: u32) {
        if let Ok(mut a) = self.acks.lock() {
            a.remove(&id);
        }
    }

    fn report(&self, p: &Option<ProgressTo>, current: u64, total: Option<u64>) {
        if let Some(p) = p {
            p.to.do_send(SendProgress {
                request: p.request,
                peer: self.peer.clone(),
                label: self.ch.label().to_string(),
                current,
                total,
            });
        }
    }

    /// Writes every frame of `m` (waiting for buffer room as needed) and returns the wait for
    /// its ack. The caller sends the next message as soon as this returns: acks overlap with
    /// later messages, frames never do.
    pub async fn send_message(&self, m: OutgoingMessage, progress: Option<ProgressTo>) -> AckWait {
        if !self.framed {
            // Unframed channels carry raw messages (unordered/partially reliable or with a
            // protocol); there is no Peerix ack to wait for.
            // Text and JSON go as string messages (what a browser's `send(string)` does), so a
            // receiver can tell them from bytes (PROTOCOL.md, "Raw channels").
            let sent = match (m.kind, std::str::from_utf8(&m.data)) {
                (PayloadType::Text | PayloadType::Json, Ok(text)) => self.ch.send_text(text).await,
                _ => self.ch.send(m.data).await,
            };
            return done(sent.map_err(|e| e.to_string()));
        }
        self.remote_open().await;
        let (id, ack) = match self.begin_transfer() {
            Ok(t) => t,
            Err(e) => return done(Err(e)),
        };
        let total = m.data.len() as u64;
        let chunker = match Chunker::new(id, m.kind, m.info, m.data) {
            Ok(c) => c,
            Err(e) => {
                self.forget(id);
                return done(Err(format!("cannot send: {e}")));
            }
        };
        let mut chunker = chunker;
        while let Some(frame) = chunker.next_frame() {
            if let Err(e) = send_paced(&self.ch, &self.drained, frame).await {
                return done(self.give_up(id, e).await);
            }
            let sent = chunker.bytes_sent() as u64;
            self.report(&progress, sent, Some(total));
        }
        let me = self.clone();
        Box::pin(async move { me.await_ack(id, ack).await })
    }

    /// Writes several whole messages, in order, with one wait for buffer room and one
    /// `send_many` for all their frames (one lock of the connection and one wake of its driver
    /// instead of one each); returns each message's ack wait, in order. For small messages
    /// that are queued together: their frames must fit the send buffer at once.
    pub async fn send_messages(
        &self,
        batch: Vec<(OutgoingMessage, Option<ProgressTo>)>,
    ) -> Vec<AckWait> {
        if !self.framed || batch.len() == 1 {
            let mut out = Vec::with_capacity(batch.len());
            for (m, p) in batch {
                out.push(self.send_message(m, p).await);
            }
            return out;
        }
        self.remote_open().await;
        let mut frames = Vec::new();
        let mut started = Vec::with_capacity(batch.len());
        for (m, progress) in batch {
            let (id, ack) = match self.begin_transfer() {
                Ok(t) => t,
                Err(e) => {
                    started.push(Err(e));
                    continue;
                }
            };
            let total = m.data.len() as u64;
            let mut chunker = match Chunker::new(id, m.kind, m.info, m.data) {
                Ok(c) => c,
                Err(e) => {
                    self.forget(id);
                    started.push(Err(format!("cannot send: {e}")));
                    continue;
                }
            };
            while let Some(frame) = chunker.next_frame() {
                frames.push(Bytes::from(frame));
            }
            started.push(Ok((id, ack, total, progress)));
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
        let mut out = Vec::with_capacity(started.len());
        for s in started {
            out.push(match (s, &sent) {
                (Err(e), _) => done(Err(e)),
                (Ok((id, _, _, _)), Err(e)) => done(self.give_up(id, e.clone()).await),
                (Ok((id, ack, total, progress)), Ok(())) => {
                    self.report(&progress, total, Some(total));
                    let me = self.clone();
                    Box::pin(async move { me.await_ack(id, ack).await })
                }
            });
        }
        out
    }

    /// Writes a streamed message as its pieces arrive; returns the wait for its ack once the
    /// last frame is out (or the failure).
    pub async fn send_stream(
        &self,
        mut m: OutgoingStream,
        progress: Option<ProgressTo>,
    ) -> AckWait {
        if !self.framed {
            return done(Err(
                "streamed sends need an ordered channel without a sub-protocol".into(),
            ));
        }
        self.remote_open().await;
        let (id, ack) = match self.begin_transfer() {
            Ok(t) => t,
            Err(e) => return done(Err(e)),
        };
        let mut chunker = match StreamChunker::new(id, m.kind, m.info.take(), None) {
            Ok(c) => c,
            Err(e) => {
                self.forget(id);
                return done(Err(format!("cannot send: {e}")));
            }
        };
        loop {
            let (frames, end) = match m.pieces.recv().await {
                Some(StreamPiece::Data(b)) => (chunker.push(&b), false),
                Some(StreamPiece::End) => (chunker.finish(), true),
                None => {
                    return done(
                        self.give_up(
                            id,
                            "the sending client went away before the message was complete".into(),
                        )
                        .await,
                    )
                }
            };
            let frames = match frames {
                Ok(f) => f,
                Err(e) => return done(self.give_up(id, e.to_string()).await),
            };
            for frame in frames {
                if let Err(e) = send_paced(&self.ch, &self.drained, frame).await {
                    return done(self.give_up(id, e).await);
                }
            }
            // The total of a streamed message is known only at its end (the `done` frame).
            self.report(&progress, chunker.bytes_sent(), None);
            if end {
                break;
            }
        }
        let me = self.clone();
        Box::pin(async move { me.await_ack(id, ack).await })
    }

    /// Stops waiting for transfer `id` and tells the receiver to drop what it has (§7.5).
    async fn give_up(&self, id: u32, why: String) -> SendOutcome {
        self.forget(id);
        let _ = self
            .ch
            .send(Bytes::from(Frame::sender_abort(id).encode()))
            .await;
        Err(why)
    }

    /// Waits for the receiver's ack of transfer `id` (§7.4). Peerix's 10 s start when the last
    /// frame is queued; ours start when the remote's SCTP has acknowledged every byte of the
    /// channel, and start again whenever a message of the remote's arrives on the channel
    /// (the ack travels in order behind the remote's own messages, so on a slow or lossy path
    /// it may be queued behind them). So a message still crossing a slow path is never
    /// reported lost while the receiver gets it intact. If the remote never takes the data,
    /// or goes silent without acking it, the transfer is aborted at the receiver.
    ///
    /// Until the buffer is empty it is looked at every [`ACK_CHECK`], not at every drain of the
    /// buffer: each message in flight has one of these waits, and with hundreds pipelined, each
    /// waking to read the buffered amount (a lock shared with the connection's driver) on every
    /// drain and every 5 ms cost more than sending the messages (a client keeping 4,096 in flight
    /// got fewer through than one keeping 256). The ack usually comes first.
    async fn await_ack(&self, id: u32, rx: oneshot::Receiver<SendOutcome>) -> SendOutcome {
        tokio::pin!(rx);
        let mut last = None;
        let mut deadline = tokio::time::Instant::now() + BUFFER_WAIT;
        loop {
            if let Ok(r) = tokio::time::timeout(ACK_CHECK, &mut rx).await {
                return ack_result(r);
            }
            let now = self.ch.buffered_amount().await;
            if now == 0 {
                break;
            }
            if last.is_none_or(|l| now < l) {
                deadline = tokio::time::Instant::now() + BUFFER_WAIT;
            } else if tokio::time::Instant::now() >= deadline {
                return self.give_up(id, no_progress(now)).await;
            }
            last = Some(now);
        }
        let mut heard = self.ch.messages_received();
        loop {
            if let Ok(r) = tokio::time::timeout(ACK_TIMEOUT, &mut rx).await {
                return ack_result(r);
            }
            let now = self.ch.messages_received();
            if now == heard {
                break;
            }
            heard = now;
        }
        self.give_up(
            id,
            format!(
                "Transfer timed out (the remote received every frame but sent no \
                 acknowledgement, nor anything else on the channel, within {} s)",
                ACK_TIMEOUT.as_secs()
            ),
        )
        .await
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

fn no_progress(buffered: usize) -> String {
    format!(
        "send buffer made no progress for {} s ({buffered} bytes unacknowledged by the remote); \
         is the peer still reachable?",
        BUFFER_WAIT.as_secs()
    )
}

fn ack_result(r: Result<SendOutcome, oneshot::error::RecvError>) -> SendOutcome {
    r.unwrap_or_else(|_| Err("channel closed before the remote acknowledged".to_string()))
}
