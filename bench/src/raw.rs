//! The in-process RAW baseline: two `peerix_rtc::RtcPeer`s in this process with the daemon's
//! settings, candidates and descriptions handed over directly (no signaling, no IPC, no Peerix
//! framing), one ordered data channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use peerix_rtc::loopback::LoopbackPair;
use peerix_rtc::{ChannelEvent, ChannelInit, RtcChannel, RtcConfig, RtcEvent};
use tokio::sync::{mpsc, Notify};

/// The daemon's chunk size for data-channel frames (`peerix_wire::transfer::Chunker`).
pub const CHUNK: usize = 16_320;
/// The daemon's send-buffer high-water mark (`daemon/src/actors/channel.rs`).
const HIGH_WATER: usize = 1 << 20;
/// The daemon's low-water threshold (`BufferedAmountLow`).
const LOW_WATER: usize = 256 << 10;
const STEP: Duration = Duration::from_secs(15);

/// The daemon's defaults (`config/peerixd.toml` `[webrtc]`).
fn config() -> RtcConfig {
    RtcConfig::default()
}

async fn wait_event<T>(
    rx: &mut mpsc::UnboundedReceiver<RtcEvent>,
    what: &str,
    mut pred: impl FnMut(RtcEvent) -> Option<T>,
) -> Result<T> {
    let fut = async {
        while let Some(ev) = rx.recv().await {
            if let Some(t) = pred(ev) {
                return Ok(t);
            }
        }
        Err(anyhow!("event stream ended while waiting for {what}"))
    };
    tokio::time::timeout(STEP, fut)
        .await
        .map_err(|_| anyhow!("timed out waiting for {what}"))?
}

/// Two connected peers.
pub struct RawPair {
    pair: LoopbackPair,
    /// `RtcPeer::new` (both) → control channel open on both sides.
    pub setup: Duration,
}

impl RawPair {
    /// Creates and connects two peers (offer/answer and candidates handed over in-process).
    pub async fn connect() -> Result<RawPair> {
        let pair = peerix_rtc::loopback::connect(&config(), STEP)
            .await
            .context("connecting the raw pair")?;
        Ok(RawPair {
            setup: pair.setup,
            pair,
        })
    }

    /// Opens one ordered channel from A; returns (A side, B side), both open.
    pub async fn channel(&mut self, label: &str) -> Result<(RawChannel, RawChannel)> {
        let a = self
            .pair
            .a
            .create_channel(label, ChannelInit::default())
            .await?;
        let b = wait_event(&mut self.pair.b_events, "raw remote channel", |e| match e {
            RtcEvent::RemoteChannel(c) => Some(c),
            _ => None,
        })
        .await?;
        let mut a = RawChannel::new(a)?;
        let mut b = RawChannel::new(b)?;
        a.wait_open().await?;
        b.wait_open().await?;
        Ok((a, b))
    }

    /// Closes both connections.
    pub async fn close(self) {
        self.pair.a.close().await;
        self.pair.b.close().await;
    }
}

/// One end of a raw channel with its event stream.
pub struct RawChannel {
    ch: RtcChannel,
    events: mpsc::Receiver<ChannelEvent>,
}

impl RawChannel {
    fn new(ch: RtcChannel) -> Result<RawChannel> {
        let events = ch
            .take_events()
            .ok_or_else(|| anyhow!("channel events already taken"))?;
        Ok(RawChannel { ch, events })
    }

    async fn wait_open(&mut self) -> Result<()> {
        let fut = async {
            while let Some(ev) = self.events.recv().await {
                if ev == ChannelEvent::Open {
                    return Ok(());
                }
            }
            Err(anyhow!("channel closed before open"))
        };
        tokio::time::timeout(STEP, fut)
            .await
            .map_err(|_| anyhow!("timed out waiting for raw channel open"))?
    }
}

/// Sender/receiver tasks for throughput: the sender paces like the daemon's `ChannelActor`
/// (16 320-byte frames, wait while buffered + frame > 1 MiB, woken by `BufferedAmountLow` at
/// 256 KiB or every 5 ms); the receiver counts bytes.
pub struct RawPipe {
    tx: RtcChannel,
    drained: Arc<Notify>,
    rx_total: mpsc::UnboundedSender<(usize, tokio::sync::oneshot::Sender<Instant>)>,
}

impl RawPipe {
    /// Starts the pump tasks on a connected channel pair.
    pub fn new(a: RawChannel, b: RawChannel) -> RawPipe {
        let drained = Arc::new(Notify::new());
        a.ch.set_buffered_amount_low_threshold(LOW_WATER);
        let notify = Arc::clone(&drained);
        let mut a_events = a.events;
        tokio::spawn(async move {
            while let Some(ev) = a_events.recv().await {
                if ev == ChannelEvent::BufferedAmountLow {
                    notify.notify_one();
                }
            }
        });
        let (rx_total, mut jobs) =
            mpsc::unbounded_channel::<(usize, tokio::sync::oneshot::Sender<Instant>)>();
        let mut b_events = b.events;
        tokio::spawn(async move {
            while let Some((want, done)) = jobs.recv().await {
                let mut got = 0usize;
                while got < want {
                    match b_events.recv().await {
                        Some(ChannelEvent::Message { data, .. }) => got += data.len(),
                        Some(_) => {}
                        None => return,
                    }
                }
                let _ = done.send(Instant::now());
            }
        });
        RawPipe {
            tx: a.ch,
            drained,
            rx_total,
        }
    }

    /// Sends `payload` in daemon-sized frames; returns the time until the receiver had it all.
    pub async fn transfer(&self, payload: &Bytes) -> Result<Duration> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.rx_total
            .send((payload.len(), done_tx))
            .map_err(|_| anyhow!("raw receiver gone"))?;
        let start = Instant::now();
        let mut off = 0;
        while off < payload.len() {
            let end = (off + CHUNK).min(payload.len());
            let frame = payload.slice(off..end);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.tx.buffered_amount().await + frame.len() > HIGH_WATER {
                if Instant::now() > deadline {
                    bail!("raw send buffer did not drain within 10 s");
                }
                let wait = self.drained.notified();
                tokio::select! { _ = wait => {}, _ = tokio::time::sleep(Duration::from_millis(5)) => {} }
            }
            self.tx.send(frame).await?;
            off = end;
        }
        let end = tokio::time::timeout(Duration::from_secs(120), done_rx)
            .await
            .map_err(|_| anyhow!("raw transfer did not complete in 120 s"))?
            .map_err(|_| anyhow!("raw receiver gone"))?;
        Ok(end.duration_since(start))
    }
}

/// Round trips of a 16-byte message: A sends, B's task echoes on receipt, A waits for the echo.
pub async fn rtt(a: RawChannel, b: RawChannel, warmup: usize, n: usize) -> Result<Vec<f64>> {
    let mut b_events = b.events;
    let b_ch = b.ch.clone();
    let echo = tokio::spawn(async move {
        while let Some(ev) = b_events.recv().await {
            if let ChannelEvent::Message { data, .. } = ev {
                if b_ch.send(data).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut a_events = a.events;
    let msg = Bytes::from_static(b"0123456789abcdef");
    let mut out = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let t0 = Instant::now();
        a.ch.send(msg.clone()).await?;
        let got = tokio::time::timeout(STEP, async {
            while let Some(ev) = a_events.recv().await {
                if matches!(ev, ChannelEvent::Message { .. }) {
                    return true;
                }
            }
            false
        })
        .await
        .map_err(|_| anyhow!("raw echo timed out"))?;
        if !got {
            bail!("raw channel closed during RTT");
        }
        if i >= warmup {
            out.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    echo.abort();
    Ok(out)
}
