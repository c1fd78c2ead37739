//! Sharing our own media (wire protocol §8.1–§8.4, PROTOCOL.md `share`): ffmpeg sends a
//! synthetic VP8 + Opus signal as RTP into daemon A's share; daemon B, a peer in the same room,
//! reports it with Peerix's events and forwards it to ffmpeg, which decodes real frames. The
//! tests also re-share, unshare, join late, feed frames over IPC and send garbage to the port.
//!
//! Prerequisite: the Debian `ffmpeg` (installed by `scripts/test-all.sh`). These tests FAIL,
//! not skip, without it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use peerix_client::{ShareArgs, ShareResult, ShareTrack};
use peerix_ipc_proto::Event;
use peerix_system_tests::media::{ffmpeg_decode, free_udp_pair, size_of, RtpSender};
use peerix_system_tests::*;

const T: Duration = Duration::from_secs(20);
const DECODE: Duration = Duration::from_secs(40);

fn track(codec: &str, rtp: bool) -> ShareTrack {
    ShareTrack {
        codec: codec.into(),
        kind: None,
        rtp: rtp.then(|| "127.0.0.1:0".into()),
    }
}

fn share_args(room: &str, label: &str, tracks: Vec<ShareTrack>) -> ShareArgs {
    ShareArgs {
        room: room.into(),
        label: label.into(),
        tracks,
        audio_parameters: None,
        video_parameters: None,
    }
}

/// The ingest address of the share's track of `kind`.
fn ingest(r: &ShareResult, kind: &str) -> Result<SocketAddr> {
    let t = r
        .tracks
        .iter()
        .find(|t| t.kind == kind)
        .with_context(|| format!("no {kind} track in {r:?}"))?;
    Ok(t.rtp.as_deref().context("no rtp address")?.parse()?)
}

fn media_name(e: &Event) -> Option<String> {
    let n = e.name.as_str();
    (n.starts_with("stream:") || n.starts_with("track:add") || n.starts_with("track:remove")).then(
        || {
            format!(
                "{} {}{}",
                n,
                field(e, "label").unwrap_or(""),
                field(e, "kind")
                    .map(|k| format!(" {k}"))
                    .unwrap_or_default()
            )
        },
    )
}

/// Two daemons in one room, connected.
async fn pair(env: &TestEnv, room: &str) -> Result<(DaemonProc, DaemonProc, Member, Member)> {
    let a = env.daemon("a", &[]).await?;
    let b = env.daemon("b", &[]).await?;
    let ma = Member::join(&a, room, |_| {}).await?;
    let mb = Member::join(&b, room, |_| {}).await?;
    let mut both = [ma, mb];
    full_mesh(&mut both, 0, T).await?;
    let [ma, mb] = both;
    Ok((a, b, ma, mb))
}

/// The receiving side: a member of daemon `d`, and where SDP files go.
struct Rx<'a> {
    m: &'a Member,
    d: &'a DaemonProc,
    dir: &'a std::path::Path,
}

/// Forwards `peer`'s `label` track of `kind` to a fresh port and decodes `frames`.
async fn forward_and_decode(
    rx: &Rx<'_>,
    peer: &str,
    label: &str,
    kind: &str,
    frames: u64,
    name: &str,
) -> Result<peerix_system_tests::media::Decoded> {
    let Rx { m, d, dir } = rx;
    let port = free_udp_pair()?;
    let to: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let fwd = m
        .client
        .forward(&m.room, peer, label, Some(kind), Some(to))
        .await?;
    let decoded = ffmpeg_decode(dir, name, &fwd.sdp, frames, DECODE)
        .await
        .with_context(|| format!("receiving daemon log:\n{}", d.log_tail()))?;
    eprintln!("[{}] {name}: {decoded:?}", m.room);
    m.client
        .forward(&m.room, peer, label, Some(kind), None)
        .await?;
    // Audio progress has no frame count; ffmpeg exiting cleanly after `-frames:a` is the proof.
    if kind == "video" && decoded.frames < frames {
        bail!("ffmpeg decoded {} of {frames} frames", decoded.frames);
    }
    Ok(decoded)
}

#[tokio::test]
async fn ffmpeg_rtp_shared_by_one_daemon_is_decoded_from_the_other() -> Result<()> {
    let env = TestEnv::new()?;
    let room = "media-share";
    let (a, b, ma, mut mb) = pair(&env, room).await?;
    let dir = tempfile::tempdir()?;

    let shared = ma
        .client
        .share(share_args(
            room,
            "cam",
            vec![track("vp8", true), track("opus", true)],
        ))
        .await?;
    let sender = RtpSender::start(
        Some(ingest(&shared, "video")?),
        Some(ingest(&shared, "audio")?),
        320,
        240,
    )?;
    for want in ["stream:add", "track:add", "track:add"] {
        let e = mb
            .wait_for(want, T, |e| {
                e.name == want && field(e, "peer") == Some(&ma.id)
            })
            .await
            .with_context(|| format!("a's log:\n{}", a.log_tail()))?;
        if field(&e, "label") != Some("cam") {
            bail!("{want} without the label map's label: {:?}", e.data);
        }
    }
    let video = forward_and_decode(
        &Rx {
            m: &mb,
            d: &b,
            dir: dir.path(),
        },
        &ma.id,
        "cam",
        "video",
        30,
        "v1",
    )
    .await?;
    if size_of(&video.stream_line) != Some((320, 240)) || !video.stream_line.contains("vp8") {
        bail!("expected VP8 320x240: {}", video.stream_line);
    }
    let audio = forward_and_decode(
        &Rx {
            m: &mb,
            d: &b,
            dir: dir.path(),
        },
        &ma.id,
        "cam",
        "audio",
        20,
        "a1",
    )
    .await?;
    if !audio.stream_line.contains("opus") {
        bail!("expected Opus: {}", audio.stream_line);
    }

    // Re-share with another resolution from another ffmpeg: the same kinds, so a replacement
    // (no events at B) and the forward carries the new picture.
    let before: Vec<String> = mb
        .drain_for(Duration::from_millis(200))
        .await
        .iter()
        .filter_map(media_name)
        .collect();
    let reshared = ma
        .client
        .share(share_args(
            room,
            "cam",
            vec![track("vp8", true), track("opus", true)],
        ))
        .await?;
    if reshared.stream != shared.stream {
        bail!("a re-share keeps the stream: {shared:?} then {reshared:?}");
    }
    sender.stop().await;
    let sender2 = RtpSender::start(
        Some(ingest(&reshared, "video")?),
        Some(ingest(&reshared, "audio")?),
        640,
        360,
    )?;
    let video = forward_and_decode(
        &Rx {
            m: &mb,
            d: &b,
            dir: dir.path(),
        },
        &ma.id,
        "cam",
        "video",
        30,
        "v2",
    )
    .await?;
    if size_of(&video.stream_line) != Some((640, 360)) {
        bail!(
            "the forward did not follow the re-share: {}",
            video.stream_line
        );
    }
    let during: Vec<String> = mb
        .drain_for(Duration::from_millis(200))
        .await
        .iter()
        .filter_map(media_name)
        .collect();
    if !during.is_empty() {
        bail!("a replacement brings no media events (before: {before:?}), got {during:?}");
    }

    // Unshare: both tracks end, then the stream, in Peerix's order.
    if !ma.client.unshare(room, "cam").await? {
        bail!("unshare said the label was not shared");
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let e = mb
            .wait_for("the unshare's events", T, |e| media_name(e).is_some())
            .await?;
        seen.push(media_name(&e).unwrap_or_default());
    }
    let mut tracks = seen[..2].to_vec();
    tracks.sort();
    if tracks != ["track:remove cam audio", "track:remove cam video"]
        || seen[2] != "stream:remove cam"
    {
        bail!("unshare events out of Peerix's order: {seen:?}");
    }
    if ma.client.unshare(room, "cam").await? {
        bail!("a second unshare found the label still shared");
    }
    sender2.stop().await;
    // The data path is untouched by all of it.
    ma.open("chat").await?;
    mb.wait_for("channel:open", T, |e| {
        e.name == "channel:open" && field(e, "label") == Some("chat")
    })
    .await?;
    a.assert_quiet_log()?;
    Ok(())
}
