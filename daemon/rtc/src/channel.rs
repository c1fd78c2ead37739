//! User data channels (wire spec §7).

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};

use crate::RtcError;

/// Options for [`crate::RtcPeer::create_channel`], as in Peerix's event-2 request (§6.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInit {
    /// In-order delivery (Peerix framing requires it).
    pub ordered: bool,
    /// Sub-protocol; Peerix framing requires it to be empty.
    pub protocol: String,
    /// Partial reliability by retransmit count. Exclusive with `max_packet_life_time`.
    pub max_retransmits: Option<u16>,
    /// Partial reliability by lifetime in ms. Exclusive with `max_retransmits`.
    pub max_packet_life_time: Option<u16>,
}

impl Default for ChannelInit {
    fn default() -> Self {
        Self {
            ordered: true,
            protocol: String::new(),
            max_retransmits: None,
            max_packet_life_time: None,
        }
    }
}

/// What happens on a data channel, in order. `Closed` (or the end of the stream) is last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The channel is open; sends succeed from now on.
    Open,
    /// A message; `binary` is false for text (UTF-8) messages.
    Message {
        /// Whether the remote sent it as binary.
        binary: bool,
        /// The payload.
        data: Bytes,
    },
    /// The buffered amount fell to the low threshold.
    BufferedAmountLow,
    /// The channel is closed (by either side, or with the connection).
    Closed,
    /// The stack reported an error on the channel.
    Error(String),
}

/// A user data channel. Cheap to clone; all clones share one event stream.
#[derive(Clone)]
pub struct RtcChannel {
    inner: Arc<ChannelInner>,
}

struct ChannelInner {
    dc: Arc<dyn DataChannel>,
    label: String,
    ordered: bool,
    protocol: String,
    events: Mutex<Option<mpsc::Receiver<ChannelEvent>>>,
    /// Messages the reader has taken from the stack (see [`RtcChannel::messages_received`]).
    received: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for RtcChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcChannel")
            .field("label", &self.inner.label)
            .field("ordered", &self.inner.ordered)
            .field("protocol", &self.inner.protocol)
            .finish()
    }
}

impl RtcChannel {
    /// Wraps `dc` and starts its reader task at once, so no event is lost before the owner
    /// calls [`take_events`](Self::take_events): up to `queue` of them wait in the queue, and
    /// then the reader waits too. Not reading the channel is what makes the stack stop
    /// reading its SCTP stream, which closes the remote's window (real back-pressure).
    pub(crate) fn start(
        dc: Arc<dyn DataChannel>,
        label: String,
        ordered: bool,
        protocol: String,
        queue: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        // The reader owns a strong handle only until the stack ends the stream (channel
        // dropped by the stack, connection closed or driver gone), so it cannot leak.
        let reader_dc = Arc::clone(&dc);
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = Arc::clone(&received);
        tokio::spawn(async move {
            let mut closed = false;
            while let Some(event) = reader_dc.poll().await {
                let event = match event {
                    DataChannelEvent::OnOpen => ChannelEvent::Open,
                    DataChannelEvent::OnMessage(msg) => {
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        ChannelEvent::Message {
                            binary: !msg.is_string,
                            data: msg.data.freeze(),
                        }
                    }
                    DataChannelEvent::OnBufferedAmountLow => ChannelEvent::BufferedAmountLow,
                    DataChannelEvent::OnClose => {
                        closed = true;
                        ChannelEvent::Closed
                    }
                    DataChannelEvent::OnError => ChannelEvent::Error("data channel error".into()),
                    _ => continue,
                };
                let last = closed;
                if tx.send(event).await.is_err() || last {
                    // Nobody listens any more, or the channel is finished: stop holding the
                    // connection's internals alive.
                    return;
                }
            }
            if !closed {
                let _ = tx.send(ChannelEvent::Closed).await;
            }
        });
        Self {
            inner: Arc::new(ChannelInner {
                dc,
                label,
                ordered,
                protocol,
                events: Mutex::new(Some(rx)),
                received,
            }),
        }
    }

    /// How many messages have arrived on this channel so far (taken from the stack by the
    /// reader, whether or not the owner has read them yet): a sender waiting for a reply that
    /// travels in order behind the remote's other messages can tell a slow path from a dead one.
    pub fn messages_received(&self) -> u64 {
        self.inner
            .received
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The label (Peerix's channel name).
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// Whether delivery is ordered.
    pub fn ordered(&self) -> bool {
        self.inner.ordered
    }

    /// The sub-protocol (empty for Peerix-framed channels).
    pub fn protocol(&self) -> &str {
        &self.inner.protocol
    }

    /// The event stream; `Some` only on the first call across all clones.
    pub fn take_events(&self) -> Option<mpsc::Receiver<ChannelEvent>> {
        match self.inner.events.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }

    /// Sends one binary message. Never waits for the peer: pace with
    /// [`buffered_amount`](Self::buffered_amount).
    pub async fn send(&self, data: Bytes) -> Result<(), RtcError> {
        self.inner.dc.send(to_bytes_mut(data)).await?;
        Ok(())
    }

    /// Sends several binary messages in order with one lock of the connection and one wake of
    /// its driver (what [`send`](Self::send) takes for each). For many small messages that are
    /// ready at once, such as a receiver's acks. Messages after a failing one are not sent.
    pub async fn send_many(&self, data: impl IntoIterator<Item = Bytes>) -> Result<(), RtcError> {
        let messages = data.into_iter().map(to_bytes_mut).collect();
        self.inner.dc.send_many(messages).await?;
        Ok(())
    }

    /// Sends one text (string) message, as a browser's `send(string)` does.
    pub async fn send_text(&self, text: &str) -> Result<(), RtcError> {
        self.inner.dc.send_text(text).await?;
        Ok(())
    }

    /// Bytes handed to `send` that SCTP has not yet had acknowledged.
    pub async fn buffered_amount(&self) -> usize {
        self.inner.dc.outstanding_bytes().await.unwrap_or(0)
    }

    /// Threshold for [`ChannelEvent::BufferedAmountLow`] (default 0). Applied asynchronously
    /// (the stack's setter is async); must be called inside a tokio runtime, else ignored.
    pub fn set_buffered_amount_low_threshold(&self, n: usize) {
        let threshold = u32::try_from(n).unwrap_or(u32::MAX);
        let dc = Arc::clone(&self.inner.dc);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = dc.set_buffered_amount_low_threshold(threshold).await;
            });
        }
    }

    /// Closes the channel (SCTP stream reset); `Closed` follows on both sides. Idempotent.
    pub async fn close(&self) {
        let _ = self.inner.dc.close().await;
    }
}

/// Moves `data` into the `BytesMut` the stack wants, copying only when it is shared.
pub(crate) fn to_bytes_mut(data: Bytes) -> BytesMut {
    data.try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]))
}
