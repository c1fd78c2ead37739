//! Media requests: sharing our own (`share`, `unshare`, `frame`).

use peerix_ipc_proto::{
    ForwardArgs, ForwardResult, FrameArgs, Op, ShareArgs, ShareResult, UnshareArgs,
};

use crate::{Client, Result};

impl Client {
    /// Shares a labelled stream with every peer of `room`, now and later (Peerix's `share`).
    /// Each track is fed either by RTP sent to the address it listens on (`rtp`), or by
    /// [`Client::frame`]. Sharing a label again with tracks of the same kinds replaces them
    /// without renegotiation, as Peerix's `replaceTrack`.
    pub async fn share(&self, args: ShareArgs) -> Result<ShareResult> {
        self.issue(&Op::Share(args)).await?.typed().await
    }

    /// Delivers the reassembled frames of a track `peer` shares under `label` as `track:frame`
    /// events (subscribe to `track:frame` in `room`), instead of forwarding RTP; stop with
    /// [`Client::forward`] and no target.
    pub async fn deliver(
        &self,
        room: &str,
        peer: &str,
        label: &str,
        kind: Option<&str>,
    ) -> Result<ForwardResult> {
        let op = Op::Forward(ForwardArgs {
            room: room.into(),
            peer: peer.into(),
            label: label.into(),
            kind: kind.map(str::to_owned),
            to: None,
            stop: false,
            deliver: true,
        });
        self.issue(&op).await?.typed().await
    }

    /// Stops sharing `label` in `room`; returns whether it was shared.
    pub async fn unshare(&self, room: &str, label: &str) -> Result<bool> {
        let op = Op::Unshare(UnshareArgs {
            room: room.into(),
            label: label.into(),
        });
        let v = self.request(&op).await?;
        Ok(v.as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("unshared")))
            .and_then(|(_, v)| v.as_bool())
            .unwrap_or(false))
    }

    /// Pushes one encoded frame (or audio packet) lasting `duration_us` microseconds into a
    /// track shared without `rtp`; the daemon packetizes it once for every peer.
    pub async fn frame(
        &self,
        room: &str,
        track: &str,
        data: Vec<u8>,
        duration_us: u64,
    ) -> Result<()> {
        let op = Op::Frame(FrameArgs {
            room: room.into(),
            track: track.into(),
            data,
            duration: duration_us,
        });
        self.request(&op).await?;
        Ok(())
    }
}
