//! Media from a real browser: headless Chromium runs the REAL Peerix 0.7.0 library and shares
//! its fake camera and microphone (`getUserMedia` with `--use-fake-device-for-media-stream`).
//! The daemon must answer the renegotiation with receiving sections, report the share with
//! Peerix's events in Peerix's order (`stream:add`, `track:add` per track, named by the label
//! map; `track:remove`s and `stream:remove` on unshare), and forward each track's RTP to a
//! local UDP port with an SDP file that ffmpeg decodes real frames from.
//!
//! Prerequisites (installed by `scripts/test-all.sh`): `chromium` and `ffmpeg` (apt), `node`,
//! and `npm install` in `tests/browser`. These tests FAIL, not skip, when one is missing.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use peerix_system_tests::browser::{BrowserOpts, Order, Session, SessionOpts, T};
use peerix_system_tests::field;
use peerix_system_tests::media::{ffmpeg_decode, free_udp_pair, size_of};
use peerix_system_tests::peerix_client::Event;
use serde_json::json;

/// A connected session whose browser has a fake camera and microphone.
async fn media_session(tag: &str, order: Order) -> Result<Session> {
    Session::connect(
        tag,
        SessionOpts {
            order,
            browser: BrowserOpts {
                media: true,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
}

fn media_event(e: &Event, name: &str, peer: &str) -> bool {
    e.name == name && field(e, "peer") == Some(peer)
}

/// The browser shares camera and microphone under one label: Peerix's events arrive in
/// Peerix's order, each track is forwarded to ffmpeg, which decodes real frames, and the
/// data channel keeps working; unshare ends the tracks with events.
async fn share_forward_unshare(order: Order) -> Result<()> {
    let mut s = media_session("media", order).await?;
    s.open_from_daemon("chat").await?;
    let peer = s.peer.clone();
    let room = s.room.clone();
    let r =
        s.b.call(
            "share",
            json!({ "label": "camera", "audio": true }),
            Duration::from_secs(40),
        )
        .await
        .with_context(|| format!("daemon log:\n{}", s.d.log_tail()))?;
    eprintln!("[{room}] share: {r}");

    // stream:add first, then one track:add per track, both named by the label map.
    let added =
        s.m.wait_for("stream:add camera", T, |e| {
            media_event(e, "stream:add", &peer)
        })
        .await
        .with_context(|| s.diagnostics())?;
    if field(&added, "label") != Some("camera") {
        bail!("stream:add without the label map's label: {:?}", added.data);
    }
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let t =
            s.m.wait_for("track:add", T, |e| media_event(e, "track:add", &peer))
                .await
                .with_context(|| s.diagnostics())?;
        if t.seq < added.seq || field(&t, "label") != Some("camera") {
            bail!("track:add out of order or unlabelled: {:?}", t.data);
        }
        kinds.push((
            field(&t, "kind").unwrap_or_default().to_owned(),
            field(&t, "codec").unwrap_or_default().to_owned(),
        ));
    }
    kinds.sort();
    eprintln!("[{room}] tracks: {kinds:?}");
    // `peers` lists them too, so a client that joins later finds what it can forward.
    let listed = s.m.client.peers(&room).await?;
    let mut listed: Vec<(String, String)> = listed
        .iter()
        .find(|p| p.id == peer)
        .context("the browser in peers")?
        .tracks
        .iter()
        .filter(|t| t.label == "camera")
        .map(|t| (t.kind.clone(), t.codec.clone()))
        .collect();
    listed.sort();
    if listed != kinds {
        bail!("peers lists {listed:?}, the events said {kinds:?}");
    }
    if kinds.iter().map(|k| k.0.as_str()).collect::<Vec<_>>() != ["audio", "video"] {
        bail!("expected an audio and a video track, got {kinds:?}");
    }

    // A forward to a port nothing listens on: one clear `error` event, and nothing else is
    // disturbed (the data channel still works, and the next forward goes to ffmpeg).
    let closed = free_udp_pair()?;
    s.m.client
        .forward(
            &room,
            &peer,
            "camera",
            Some("video"),
            Some(format!("127.0.0.1:{closed}").parse()?),
        )
        .await?;
    let refused =
        s.m.wait_for("error for a forward nobody receives", T, |e| {
            e.name == "error" && format!("{:?}", e.data).contains("connection refused")
        })
        .await?;
    eprintln!("[{room}] {:?}", refused.data);
    // That error was the point; the watch for unexpected ones must not count it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if s.errors.forget(|e| e.contains("connection refused")) == 0 {
        bail!("the error watch did not see the refused forward's error");
    }
    let res =
        s.m.client
            .send_text(
                &room,
                "chat",
                "still here",
                peerix_system_tests::peerix_client::SendOptions::to(peer.clone()),
            )
            .await?;
    if !res.peers.unwrap_or_default().iter().all(|p| p.ok) {
        bail!("the data channel failed beside a refused forward");
    }

    // Forward each track; ffmpeg decodes real frames from the SDP we got.
    let dir = tempfile::tempdir()?;
    for (kind, frames) in [("video", 30u64), ("audio", 50)] {
        let port = free_udp_pair()?;
        let to = format!("127.0.0.1:{port}").parse()?;
        let fwd =
            s.m.client
                .forward(&room, &peer, "camera", Some(kind), Some(to))
                .await
                .with_context(|| format!("forward {kind}"))?;
        eprintln!(
            "[{room}] forward {kind}: {} {}\n{}",
            fwd.track, fwd.codec, fwd.sdp
        );
        let decoded = ffmpeg_decode(dir.path(), kind, &fwd.sdp, frames, Duration::from_secs(40))
            .await
            .with_context(|| format!("daemon log:\n{}", s.d.log_tail()))?;
        eprintln!("[{room}] ffmpeg {kind}: {decoded:?}");
        if !decoded
            .stream_line
            .to_lowercase()
            .contains(if kind == "video" { "vp8" } else { "opus" })
            && !decoded
                .stream_line
                .to_lowercase()
                .contains(&fwd.codec.split('/').nth(1).unwrap_or("?").to_lowercase())
        {
            bail!(
                "ffmpeg saw {:?}, not the negotiated {}",
                decoded.stream_line,
                fwd.codec
            );
        }
        if kind == "video" && decoded.frames < frames {
            bail!("ffmpeg decoded {} of {frames} video frames", decoded.frames);
        }
        s.m.client
            .forward(&room, &peer, "camera", Some(kind), None)
            .await?;
    }

    // A label that is not shared, and an ambiguous one, are clear errors.
    let err =
        s.m.client
            .forward(&room, &peer, "screen", None, Some("127.0.0.1:9".parse()?))
            .await
            .expect_err("forward of a label not shared");
    if !err.to_string().contains("NO_SUCH_STREAM") {
        bail!("expected NO_SUCH_STREAM, got {err}");
    }
    let err =
        s.m.client
            .forward(&room, &peer, "camera", None, Some("127.0.0.1:9".parse()?))
            .await
            .expect_err("forward of a label with two tracks and no kind");
    if !err.to_string().contains("kind") {
        bail!("expected a request for `kind`, got {err}");
    }

    // Unshare: two track:remove, then stream:remove; the data channel still works.
    let r =
        s.b.call(
            "unshare",
            json!({ "label": "camera" }),
            Duration::from_secs(40),
        )
        .await?;
    eprintln!("[{room}] unshare: {r}");
    let mut last_track = 0;
    for _ in 0..2 {
        let t =
            s.m.wait_for("track:remove", T, |e| media_event(e, "track:remove", &peer))
                .await
                .with_context(|| s.diagnostics())?;
        last_track = last_track.max(t.seq);
    }
    let gone =
        s.m.wait_for("stream:remove", T, |e| {
            media_event(e, "stream:remove", &peer)
        })
        .await
        .with_context(|| s.diagnostics())?;
    if gone.seq < last_track || field(&gone, "label") != Some("camera") {
        bail!(
            "stream:remove before its tracks' removal or unlabelled: {:?}",
            gone.data
        );
    }
    let res =
        s.m.client
            .send_text(
                &room,
                "chat",
                "after unshare",
                peerix_system_tests::peerix_client::SendOptions::to(peer.clone()),
            )
            .await?;
    if !res.peers.unwrap_or_default().iter().all(|p| p.ok) {
        bail!("the data channel failed after unshare");
    }
    s.errors.assert_none(&s.d)?;
    s.b.assert_no_errors()?;
    s.finish().await
}

#[tokio::test]
async fn browser_camera_forwarded_to_ffmpeg_daemon_first() -> Result<()> {
    share_forward_unshare(Order::DaemonFirst).await
}

#[tokio::test]
async fn browser_camera_forwarded_to_ffmpeg_browser_first() -> Result<()> {
    share_forward_unshare(Order::BrowserFirst).await
}

/// A daemon that joins after the browser shared receives the share: Peerix adds its streams to
/// a new connection when that connection's control channel opens (wire spec §6.6), and the
/// late daemon reports and forwards them like the first one.
#[tokio::test]
async fn a_daemon_that_joins_after_the_share_receives_it() -> Result<()> {
    let mut s = media_session("media-late", Order::DaemonFirst).await?;
    let peer = s.peer.clone();
    let room = s.room.clone();
    s.b.call(
        "share",
        json!({ "label": "camera" }),
        Duration::from_secs(40),
    )
    .await?;
    s.m.wait_for("track:add at the first daemon", T, |e| {
        media_event(e, "track:add", &peer)
    })
    .await?;

    let late = peerix_system_tests::browser::nats_daemon(&s.env, &s.nats, "late", &[]).await?;
    let mut m2 = peerix_system_tests::browser::join_nats(&late, &room).await?;
    let added = m2
        .wait_for("stream:add at the late daemon", T, |e| {
            media_event(e, "stream:add", &peer)
        })
        .await
        .with_context(|| format!("late daemon log:\n{}", late.log_tail()))?;
    if field(&added, "label") != Some("camera") {
        bail!("the late daemon got no label map: {:?}", added.data);
    }
    let t = m2
        .wait_for("track:add at the late daemon", T, |e| {
            media_event(e, "track:add", &peer)
        })
        .await?;
    if field(&t, "kind") != Some("video") {
        bail!("expected the video track: {:?}", t.data);
    }
    // Through the CLI this time: `peerix forward ... --to ... --sdp FILE`, as the README shows.
    let port = free_udp_pair()?;
    let dir = tempfile::tempdir()?;
    let sdp_file = dir.path().join("camera.sdp");
    let out = tokio::process::Command::new(peerix_system_tests::bin_dir().join("peerix"))
        .arg("--socket")
        .arg(&late.socket)
        .args([
            "forward",
            &room,
            &peer,
            "camera",
            "--to",
            &format!("127.0.0.1:{port}"),
            "--sdp",
        ])
        .arg(&sdp_file)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "peerix forward failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "[{room}] peerix forward: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let sdp = std::fs::read_to_string(&sdp_file)?;
    let decoded = ffmpeg_decode(dir.path(), "late", &sdp, 10, Duration::from_secs(40))
        .await
        .with_context(|| format!("late daemon log:\n{}", late.log_tail()))?;
    eprintln!("[{room}] late daemon, ffmpeg: {decoded:?}");
    if decoded.frames < 10 {
        bail!(
            "ffmpeg decoded {} of 10 frames at the late daemon",
            decoded.frames
        );
    }
    m2.leave().await?;
    s.finish().await
}

/// Forwards the video of `label` to a fresh port and returns the size ffmpeg decodes.
async fn decoded_size(
    s: &mut Session,
    label: &str,
    name: &str,
    dir: &std::path::Path,
) -> Result<(u32, u32)> {
    let (room, peer) = (s.room.clone(), s.peer.clone());
    let port = free_udp_pair()?;
    let fwd =
        s.m.client
            .forward(
                &room,
                &peer,
                label,
                Some("video"),
                Some(format!("127.0.0.1:{port}").parse()?),
            )
            .await?;
    let d = ffmpeg_decode(dir, name, &fwd.sdp, 10, Duration::from_secs(40))
        .await
        .with_context(|| format!("daemon log:\n{}", s.d.log_tail()))?;
    eprintln!("[{room}] {name}: {d:?}");
    // ffmpeg has quit: stop, or the daemon rightly reports that nothing receives the forward.
    s.m.client
        .forward(&room, &peer, label, Some("video"), None)
        .await?;
    size_of(&d.stream_line).with_context(|| format!("no size in {:?}", d.stream_line))
}

/// Re-sharing the same kinds under a label is a track replacement (Peerix's replaceTrack, wire
/// spec §8.4): no renegotiation and no new events at the daemon, and the forward carries the
/// new track (here: the camera's 4:3 picture becomes 16:9). Unshare then ends it in order.
#[tokio::test]
async fn reshare_replaces_the_track_and_forwarding_follows() -> Result<()> {
    let mut s = media_session("media-reshare", Order::DaemonFirst).await?;
    let peer = s.peer.clone();
    let dir = tempfile::tempdir()?;
    s.b.call(
        "share",
        json!({ "label": "camera", "width": 640, "height": 480 }),
        Duration::from_secs(40),
    )
    .await?;
    let track =
        s.m.wait_for("track:add", T, |e| media_event(e, "track:add", &peer))
            .await?;
    let (w, h) = decoded_size(&mut s, "camera", "before", dir.path()).await?;
    if w * 3 != h * 4 {
        bail!("expected a 4:3 picture before the re-share, got {w}x{h}");
    }

    let r =
        s.b.call(
            "share",
            json!({ "label": "camera", "width": 640, "height": 360, "renegotiates": false }),
            Duration::from_secs(40),
        )
        .await?;
    if r["renegotiated"] != json!(false) {
        bail!("a re-share of the same kinds renegotiated: {r}");
    }
    if let Ok(e) =
        s.m.wait_for("no new track", Duration::from_secs(1), |e| {
            media_event(e, "track:add", &peer) || media_event(e, "track:remove", &peer)
        })
        .await
    {
        bail!("a track replacement produced {} {:?}", e.name, e.data);
    }
    let (w, h) = decoded_size(&mut s, "camera", "after", dir.path()).await?;
    if w * 9 != h * 16 {
        bail!("expected the replaced 16:9 track after the re-share, got {w}x{h}");
    }

    s.b.call(
        "unshare",
        json!({ "label": "camera" }),
        Duration::from_secs(40),
    )
    .await?;
    let removed =
        s.m.wait_for("track:remove", T, |e| media_event(e, "track:remove", &peer))
            .await?;
    if field(&removed, "track") != field(&track, "track") {
        bail!("removed {:?}, added {:?}", removed.data, track.data);
    }
    s.m.wait_for("stream:remove", T, |e| {
        media_event(e, "stream:remove", &peer)
    })
    .await?;
    s.errors.assert_none(&s.d)?;
    s.b.assert_no_errors()?;
    s.finish().await
}

/// The other direction: the daemon shares ffmpeg's VP8 + Opus (RTP ingest) and the page, real
/// Peerix 0.7 in Chromium, shows Peerix's events with the label from our label map and decodes
/// real frames (`getStats`). A re-share at another size is a replacement the page follows
/// without renegotiation; unshare ends the stream at the page; the data channel keeps working
/// through every renegotiation.
#[tokio::test]
async fn the_browser_decodes_the_daemons_share() -> Result<()> {
    use peerix_system_tests::media::{ingest, share_args, share_track, RtpSender};
    let mut s = Session::connect("media-rx", SessionOpts::default()).await?;
    s.open_from_daemon("chat").await?;
    let (room, me) = (s.room.clone(), s.m.id.clone());
    let args = || {
        let tracks = vec![share_track("vp8", true), share_track("opus", true)];
        share_args(&room, "daemon-cam", tracks)
    };
    let shared = s.m.client.share(args()).await?;
    let sender = RtpSender::start(
        Some(ingest(&shared, "video")?),
        Some(ingest(&shared, "audio")?),
        320,
        240,
    )?;
    let is_ev = |v: &serde_json::Value, name: &str| {
        v["ev"] == name && v["peer"] == me.as_str() && v["label"] == "daemon-cam"
    };
    s.b.wait_for("stream:add at the page", T, |v| is_ev(v, "stream:add"))
        .await
        .with_context(|| s.diagnostics())?;
    let got =
        s.b.call(
            "received",
            json!({ "peer": me, "kind": "video", "minFrames": 20 }),
            Duration::from_secs(40),
        )
        .await
        .with_context(|| format!("daemon log:\n{}", s.d.log_tail()))?;
    eprintln!("[{room}] page decodes: {got}");
    if got["codec"] != "video/VP8" || got["frameWidth"] != 320 || got["frameHeight"] != 240 {
        bail!("expected 320x240 VP8 at the page: {got}");
    }
    let audio =
        s.b.call(
            "received",
            json!({ "peer": me, "kind": "audio", "minPackets": 50 }),
            T,
        )
        .await?;
    eprintln!("[{room}] page audio: {audio}");

    // Re-share at 640x360: the same transceivers, no renegotiation; the page's decoder follows.
    let before = s.b.call("state", json!({ "peer": me }), T).await?;
    let reshared = s.m.client.share(args()).await?;
    sender.stop().await;
    let sender = RtpSender::start(
        Some(ingest(&reshared, "video")?),
        Some(ingest(&reshared, "audio")?),
        640,
        360,
    )?;
    let wide =
        s.b.call(
            "received",
            json!({ "peer": me, "kind": "video", "minFrames": 1, "timeoutMs": 30000 }),
            Duration::from_secs(40),
        )
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now =
            s.b.call("received", json!({ "peer": me, "kind": "video" }), T)
                .await?;
        if now["frameWidth"] == 640 && now["frameHeight"] == 360 {
            eprintln!("[{room}] after the re-share: {now}");
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("the page still decodes {wide} after the re-share");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = s.b.call("state", json!({ "peer": me }), T).await?;
    if before["signaling_history"] != after["signaling_history"] {
        bail!(
            "a replacement renegotiated: {} -> {}",
            before["signaling_history"],
            after["signaling_history"]
        );
    }

    // Unshare: the page's tracks end and the stream goes, in Peerix's events.
    s.m.client.unshare(&room, "daemon-cam").await?;
    s.b.wait_for("stream:remove at the page", T, |v| {
        is_ev(v, "stream:remove")
    })
    .await
    .with_context(|| s.diagnostics())?;
    sender.stop().await;
    let res =
        s.m.client
            .send_text(
                &room,
                "chat",
                "still here",
                peerix_system_tests::peerix_client::SendOptions::to(s.peer.clone()),
            )
            .await?;
    if !res.peers.unwrap_or_default().iter().all(|p| p.ok) {
        bail!("the data channel failed after the share's renegotiations");
    }
    s.finish().await
}
