//! A deliberately hostile remote peer: it joins a room over a real NATS server as a Peerix peer
//! would (announce, answer the invoke with an offer, candidates; wire spec §5.2–§5.3) and gets
//! a real WebRTC connection to one peerixd, on which a test then misbehaves through the raw
//! [`RtcPeer`] (control channel) and [`RtcChannel`]s (user channels), bypassing every check the
//! daemon's own sending side makes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use peerix_rtc::{ChannelEvent, ChannelInit, RtcChannel, RtcConfig, RtcEvent, RtcPeer};
use peerix_signaling::{connect_driver, Driver, DriverConfig, DriverEvent, NatsConfig};
use peerix_wire::identity::Identity;
use peerix_wire::namespace;
use peerix_wire::packet::{CodecOptions, Opened, SignalType, SignalingCodec};
use serde_json::Value as Json;
use tokio::sync::mpsc::unbounded_channel;

/// One hostile peer connected to one daemon of a room.
pub struct HostilePeer {
    /// Our Peerix id.
    pub id: String,
    /// The connection (control channel: [`RtcPeer::send_control`]).
    pub rtc: RtcPeer,
    /// Channels the daemon opened to us, by label (kept so they stay open).
    pub remote_channels: Arc<Mutex<HashMap<String, RtcChannel>>>,
    driver: Arc<dyn Driver>,
    pump: tokio::task::JoinHandle<()>,
}

impl HostilePeer {
    /// Joins `room` on the NATS server at `nats_url` and connects to the peer `target` (a
    /// daemon's id in that room; invokes from anyone else are ignored). Returns once the
    /// control channel is open on our side.
    pub async fn join(nats_url: &str, room: &str, target: &str, timeout: Duration) -> Result<Self> {
        tokio::time::timeout(timeout, Self::join_inner(nats_url, room, target))
            .await
            .map_err(|_| {
                anyhow!("the hostile peer did not connect to {target} within {timeout:?}")
            })?
    }

    async fn join_inner(nats_url: &str, room: &str, target: &str) -> Result<Self> {
        let mut codec = SignalingCodec::new(Identity::generate(), CodecOptions::default());
        let id = codec.local_id().to_string();
        let (dtx, mut drx) = tokio::sync::mpsc::channel(1024);
        let driver = connect_driver(
            DriverConfig::Nats(NatsConfig {
                servers: vec![nats_url.to_string()],
                name: "hostile-peer".into(),
                ..Default::default()
            }),
            dtx,
        )
        .await
        .context("the hostile peer connecting to NATS")?;
        let room_ns = namespace::escape(room, true);
        let own_ns = namespace::escape(&id, true);
        let target_ns = namespace::escape(target, true);
        driver.subscribe(&room_ns).await?;
        driver.subscribe(&own_ns).await?;
        let announce = codec.seal(SignalType::Announce, None, "")?;
        driver.publish(&room_ns, Bytes::from(announce)).await?;

        let (rtx, mut rrx) = unbounded_channel();
        let mut rtc: Option<RtcPeer> = None;
        let mut have_remote = false;
        let mut queued: Vec<peerix_rtc::IceCandidateInit> = Vec::new();
        let remote_channels: Arc<Mutex<HashMap<String, RtcChannel>>> = Default::default();
        loop {
            tokio::select! {
                ev = drx.recv() => {
                    let payload = match ev {
                        Some(DriverEvent::Message { payload, .. }) => payload,
                        Some(_) => continue,
                        None => bail!("the NATS driver stopped"),
                    };
                    let Ok(Opened::Signal(sig)) = codec.open(&payload) else { continue };
                    if sig.sender_id != target {
                        continue;
                    }
                    match sig.signal_type {
                        SignalType::Invoke if rtc.is_none() => {
                            let peer = RtcPeer::new(&RtcConfig::default(), rtx.clone()).await?;
                            let offer = peer.create_offer().await?;
                            let msg = [serde_json::to_value(&offer)?, Json::Null];
                            let packet = codec.seal(SignalType::Offer, Some(&msg), target)?;
                            driver.publish(&target_ns, Bytes::from(packet)).await?;
                            rtc = Some(peer);
                        }
                        SignalType::Answer => {
                            let (Some(peer), Some(desc)) = (&rtc, sig.message.first()) else { continue };
                            peer.set_remote_description(serde_json::from_value(desc.clone())?).await?;
                            have_remote = true;
                            for c in queued.drain(..) {
                                let _ = peer.add_ice_candidate(c).await;
                            }
                        }
                        SignalType::Candidate => {
                            for c in &sig.message {
                                let Ok(c) = serde_json::from_value::<peerix_rtc::IceCandidateInit>(c.clone()) else { continue };
                                match (&rtc, have_remote) {
                                    (Some(peer), true) => { let _ = peer.add_ice_candidate(c).await; }
                                    _ => queued.push(c),
                                }
                            }
                        }
                        _ => {}
                    }
                }
                ev = rrx.recv() => match ev {
                    Some(RtcEvent::LocalCandidate(c)) => {
                        let msg = [serde_json::to_value(&c)?];
                        let packet = codec.seal(SignalType::Candidate, Some(&msg), target)?;
                        driver.publish(&target_ns, Bytes::from(packet)).await?;
                    }
                    Some(RtcEvent::ControlOpen) => break,
                    Some(RtcEvent::RemoteChannel(ch)) => keep(&remote_channels, ch),
                    Some(RtcEvent::Closed) | None => bail!("the hostile peer's connection closed before its control channel opened"),
                    Some(_) => {}
                }
            }
        }
        let rtc = rtc.ok_or_else(|| anyhow!("control channel open without a connection"))?;
        // From here on the connection needs nothing from signaling; keep adopting the channels
        // the daemon opens to us and draining the events.
        let channels = remote_channels.clone();
        let pump = tokio::spawn(async move {
            while let Some(ev) = rrx.recv().await {
                if let RtcEvent::RemoteChannel(ch) = ev {
                    keep(&channels, ch);
                }
            }
        });
        Ok(Self {
            id,
            rtc,
            remote_channels,
            driver,
            pump,
        })
    }

    /// Sends raw bytes on the control channel (stream 0).
    pub async fn send_control(&self, data: impl Into<Bytes>) -> Result<()> {
        Ok(self.rtc.send_control(data.into()).await?)
    }

    /// Creates a framed (ordered, no sub-protocol) channel with `label` and waits until it is
    /// open; returns it with its remaining events (what the daemon writes back, e.g. aborts).
    pub async fn open_channel(
        &self,
        label: &str,
    ) -> Result<(RtcChannel, tokio::sync::mpsc::Receiver<ChannelEvent>)> {
        let ch = self
            .rtc
            .create_channel(label, ChannelInit::default())
            .await?;
        let mut events = ch
            .take_events()
            .ok_or_else(|| anyhow!("channel {label} has no event stream"))?;
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(ev) = events.recv().await {
                match ev {
                    ChannelEvent::Open => return Ok(()),
                    ChannelEvent::Closed => bail!("channel {label} closed before it opened"),
                    _ => {}
                }
            }
            bail!("channel {label}'s events ended before it opened")
        })
        .await
        .map_err(|_| anyhow!("channel {label} did not open within 10 s"))??;
        Ok((ch, events))
    }

    /// Creates a channel without waiting for it to open (for floods).
    pub async fn create_channel(&self, label: &str) -> Result<RtcChannel> {
        Ok(self
            .rtc
            .create_channel(label, ChannelInit::default())
            .await?)
    }

    /// Closes the connection and leaves signaling.
    pub async fn close(self) {
        self.rtc.close().await;
        self.pump.abort();
        self.driver.close().await;
    }
}

fn keep(channels: &Mutex<HashMap<String, RtcChannel>>, ch: RtcChannel) {
    if let Ok(mut m) = channels.lock() {
        m.insert(ch.label().to_string(), ch);
    }
}
