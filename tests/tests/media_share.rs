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
use peerix_client::ShareResult;
use peerix_ipc_proto::Event;
use peerix_system_tests::media::{
    ffmpeg_decode, free_udp_pair, ingest, share_args, share_track as track, size_of, RtpSender,
};
use peerix_system_tests::*;

const T: Duration = Duration::from_secs(20);
const DECODE: Duration = Duration::from_secs(40);

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

    // `status` shows the share and its counters.
    let status = ma.client.status().await?;
    let share = status
        .rooms
        .iter()
        .find(|r| r.room == room)
        .and_then(|r| r.shares.iter().find(|s| s.label == "cam"))
        .with_context(|| format!("no share in status: {status:?}"))?;
    let v = share
        .tracks
        .iter()
        .find(|t| t.kind == "video")
        .context("no video track in status")?;
    if share.stream != shared.stream || v.packets == 0 || v.senders != 1 || v.malformed != 0 {
        bail!("status should show the share sending to one peer: {share:?}");
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

#[tokio::test]
async fn a_daemon_that_joins_after_the_share_receives_it() -> Result<()> {
    let env = TestEnv::new()?;
    let room = "media-late-join";
    let a = env.daemon("a", &[]).await?;
    let ma = Member::join(&a, room, |_| {}).await?;
    // Through the CLI, as the README shows: `peerix share ROOM LABEL --video-rtp IP:PORT`.
    let out = tokio::process::Command::new(bin_dir().join("peerix"))
        .arg("--socket")
        .arg(&a.socket)
        .args(["--json", "share", room, "cam", "--video-rtp", "127.0.0.1:0"])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "peerix share failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let shared: ShareResult = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "peerix share --json said {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let sender = RtpSender::start(Some(ingest(&shared, "video")?), None, 320, 240)?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let b = env.daemon("b", &[]).await?;
    let mut mb = Member::join(&b, room, |_| {}).await?;
    let added = mb
        .wait_for("stream:add at the late daemon", T, |e| {
            e.name == "stream:add" && field(e, "peer") == Some(&ma.id)
        })
        .await
        .with_context(|| format!("a's log:\n{}", a.log_tail()))?;
    if field(&added, "label") != Some("cam") || field(&added, "stream") != Some(&shared.stream) {
        bail!(
            "stream:add should name label cam and stream {}: {:?}",
            shared.stream,
            added.data
        );
    }
    let dir = tempfile::tempdir()?;
    let rx = Rx {
        m: &mb,
        d: &b,
        dir: dir.path(),
    };
    let video = forward_and_decode(&rx, &ma.id, "cam", "video", 10, "late").await?;
    if size_of(&video.stream_line) != Some((320, 240)) {
        bail!("expected 320x240: {}", video.stream_line);
    }
    sender.stop().await;
    let out = tokio::process::Command::new(bin_dir().join("peerix"))
        .arg("--socket")
        .arg(&a.socket)
        .args(["unshare", room, "cam"])
        .output()
        .await?;
    if !String::from_utf8_lossy(&out.stdout).contains("stopped sharing") {
        bail!("peerix unshare: {}", String::from_utf8_lossy(&out.stdout));
    }
    mb.wait_for("stream:remove at the late daemon", T, |e| {
        e.name == "stream:remove"
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn bad_input_is_refused_or_reported_and_disturbs_nothing() -> Result<()> {
    let env = TestEnv::new()?;
    let room = "media-bad-input";
    let (a, b, mut ma, mut mb) = pair(&env, room).await?;

    // Requests that cannot be served are refused with a reason and change nothing.
    let err = ma
        .client
        .share(share_args(room, "cam", vec![track("mp3", true)]))
        .await
        .expect_err("an unknown codec");
    let text = err.to_string();
    if !text.contains("BAD_REQUEST") || !text.contains("vp8") {
        bail!("an unknown codec should be a BAD_REQUEST naming the codecs: {text}");
    }
    let mut bad_addr = track("vp8", true);
    bad_addr.rtp = Some("localhost:5004".into());
    let err = ma
        .client
        .share(share_args(room, "cam", vec![bad_addr]))
        .await
        .expect_err("a host name");
    if !err.to_string().contains("ip:port") {
        bail!("expected an ip:port error: {err}");
    }
    // A limit the source does not keep (ffmpeg sends 800 kbit/s): the daemon cannot re-encode,
    // so it tells the client, and sends on.
    let mut limited = share_args(room, "cam", vec![track("vp8", true)]);
    limited.video_parameters = Some(peerix_client::EncodingParameters {
        max_bitrate: Some(200_000),
        max_framerate: None,
    });
    let shared = ma.client.share(limited).await?;
    let port = ingest(&shared, "video")?;
    let mut taken = track("vp8", true);
    taken.rtp = Some(port.to_string());
    let err = ma
        .client
        .share(share_args(room, "other", vec![taken]))
        .await
        .expect_err("a port another share listens on");
    if !err.to_string().contains("cannot listen") {
        bail!("expected `cannot listen`: {err}");
    }
    let err = ma
        .client
        .frame(room, &shared.tracks[0].track, vec![1, 2, 3], 33_333)
        .await
        .expect_err("frame on an RTP-fed track");
    if !err.to_string().contains("RTP") {
        bail!("expected a hint that the track is fed by RTP: {err}");
    }
    let err = ma
        .client
        .frame(room, "no-such-track", vec![1], 33_333)
        .await
        .expect_err("frame on no track");
    if !err.to_string().contains("NO_SUCH_STREAM") {
        bail!("expected NO_SUCH_STREAM: {err}");
    }

    // Garbage on the ingest port is dropped and reported; the real stream goes on.
    let sender = RtpSender::start(Some(port), None, 320, 240)?;
    let junk = std::net::UdpSocket::bind("127.0.0.1:0")?;
    for datagram in [vec![0u8; 5], vec![0x40; 40], vec![0x80; 1600]] {
        junk.send_to(&datagram, port)?;
    }
    let e = ma
        .wait_for("an error about the ingest", T, |e| {
            e.name == "error"
                && value(e, "error")
                    .and_then(|v| v.as_map())
                    .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("code")))
                    .and_then(|(_, v)| v.as_str())
                    == Some("MALFORMED_FRAME")
        })
        .await?;
    eprintln!("[{room}] reported: {:?}", e.data);
    let over = ma
        .wait_for("LIMIT_EXCEEDED about the share", T, |e| {
            e.name == "error" && format!("{:?}", e.data).contains("LIMIT_EXCEEDED")
        })
        .await?;
    if !format!("{:?}", over.data).contains("maxBitrate") {
        bail!("the limit event should name maxBitrate: {:?}", over.data);
    }
    mb.wait_for("track:add", T, |e| e.name == "track:add")
        .await?;
    let dir = tempfile::tempdir()?;
    let rx = Rx {
        m: &mb,
        d: &b,
        dir: dir.path(),
    };
    forward_and_decode(&rx, &ma.id, "cam", "video", 30, "after-junk").await?;
    sender.stop().await;
    drop(a);
    Ok(())
}

/// The frames of an IVF file (what `ffmpeg -f ivf` writes: a 32-byte header, then a 12-byte
/// header before each frame).
fn ivf_frames(data: &[u8]) -> Result<Vec<Vec<u8>>> {
    if data.len() < 32 || &data[..4] != b"DKIF" {
        bail!("not an IVF file");
    }
    let mut out = Vec::new();
    let mut at = 32;
    while at + 12 <= data.len() {
        let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        at += 12;
        if at + len > data.len() {
            break;
        }
        out.push(data[at..at + len].to_vec());
        at += len;
    }
    Ok(out)
}

#[tokio::test]
async fn frames_over_ipc_reach_the_peer_and_keyframe_requests_reach_the_client() -> Result<()> {
    let env = TestEnv::new()?;
    let room = "media-frames";
    let (a, b, mut ma, mut mb) = pair(&env, room).await?;
    let dir = tempfile::tempdir()?;
    // Encoded VP8 frames, as an application holding an encoder would have them.
    let ivf = dir.path().join("clip.ivf");
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("testsrc=size=320x240:rate=30:duration=3")
        .args(["-c:v", "libvpx", "-g", "30", "-f", "ivf", "-y"])
        .arg(&ivf)
        .status()
        .await
        .context("ffmpeg not found: install the Debian package `ffmpeg`")?;
    if !status.success() {
        bail!("ffmpeg could not make the VP8 clip");
    }
    let frames = ivf_frames(&std::fs::read(&ivf)?)?;
    let shared = ma
        .client
        .share(share_args(room, "screen", vec![track("vp8", false)]))
        .await?;
    let t = shared.tracks[0].track.clone();
    let feeder = {
        // Its own connection, as a separate encoder process would have.
        let client = a.client().await?;
        let (room, t) = (room.to_owned(), t.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(33_333));
            for f in frames.iter().cycle().take(30 * 20) {
                tick.tick().await;
                client.frame(&room, &t, f.clone(), 33_333).await?;
            }
            anyhow::Ok(())
        })
    };
    mb.wait_for("track:add", T, |e| {
        e.name == "track:add" && field(e, "label") == Some("screen")
    })
    .await
    .with_context(|| format!("a's log:\n{}\nb's log:\n{}", a.log_tail(), b.log_tail()))?;
    let rx = Rx {
        m: &mb,
        d: &b,
        dir: dir.path(),
    };
    let video = forward_and_decode(&rx, &ma.id, "screen", "video", 20, "frames").await?;
    if size_of(&video.stream_line) != Some((320, 240)) {
        bail!("expected 320x240: {}", video.stream_line);
    }
    // The forward asked for a keyframe (RTCP PLI from B); it reached the client that feeds
    // the track, as an event.
    let k = ma
        .wait_for("track:keyframe", T, |e| e.name == "track:keyframe")
        .await?;
    if field(&k, "track") != Some(&t) || field(&k, "label") != Some("screen") {
        bail!("track:keyframe names the wrong track: {:?}", k.data);
    }
    feeder.abort();
    Ok(())
}

#[tokio::test]
async fn frames_of_a_remote_track_are_delivered_over_ipc() -> Result<()> {
    let env = TestEnv::new()?;
    let room = "media-deliver";
    let (_a, _b, ma, mut mb) = pair(&env, room).await?;
    let shared = ma
        .client
        .share(share_args(room, "cam", vec![track("vp8", true)]))
        .await?;
    let sender = RtpSender::start(Some(ingest(&shared, "video")?), None, 320, 240)?;
    mb.wait_for("track:add", T, |e| e.name == "track:add")
        .await?;
    let res = mb.client.deliver(room, &ma.id, "cam", None).await?;
    if res.codec != "video/VP8" || !res.sdp.is_empty() {
        bail!("deliver answers the track without an SDP: {res:?}");
    }
    // Whole VP8 frames, the first usable one a keyframe (the daemon asked for one) whose
    // header says 320x240.
    let mut frames = 0;
    let mut keyframe_size = None;
    while frames < 30 {
        let e = mb
            .wait_for("track:frame", T, |e| e.name == "track:frame")
            .await?;
        let Some(rmpv::Value::Binary(data)) = value(&e, "data") else {
            bail!("track:frame without binary data: {:?}", e.data);
        };
        if field(&e, "track") != Some(&res.track) || field(&e, "codec") != Some("video/VP8") {
            bail!("track:frame names the wrong track: {:?}", e.data);
        }
        if data.len() >= 10 && data[0] & 1 == 0 && data[3..6] == [0x9d, 0x01, 0x2a] {
            let w = u16::from_le_bytes([data[6], data[7]]) & 0x3fff;
            let h = u16::from_le_bytes([data[8], data[9]]) & 0x3fff;
            keyframe_size.get_or_insert((w, h));
        }
        frames += 1;
    }
    if keyframe_size != Some((320, 240)) {
        bail!("no 320x240 VP8 keyframe among 30 frames: {keyframe_size:?}");
    }
    // `stop` ends the delivery.
    mb.client.forward(room, &ma.id, "cam", None, None).await?;
    // What was already on its way is not counted.
    mb.drain_for(Duration::from_millis(300)).await;
    let late = mb
        .drain_for(Duration::from_millis(700))
        .await
        .into_iter()
        .filter(|e| e.name == "track:frame")
        .count();
    if late > 0 {
        bail!("{late} frames after stop");
    }
    sender.stop().await;
    Ok(())
}

#[tokio::test]
async fn h264_and_vp9_shares_are_decoded_from_the_other_daemon() -> Result<()> {
    let env = TestEnv::new()?;
    let room = "media-codecs";
    let (a, b, ma, mut mb) = pair(&env, room).await?;
    let dir = tempfile::tempdir()?;
    for (codec, mime, name) in [("h264", "video/H264", "h264"), ("vp9", "video/VP9", "vp9")] {
        let label = format!("cam-{codec}");
        let shared = ma
            .client
            .share(share_args(room, &label, vec![track(codec, true)]))
            .await?;
        let sender =
            RtpSender::start_codec(Some(ingest(&shared, "video")?), None, 320, 240, codec)?;
        let added = mb
            .wait_for("track:add", T, |e| {
                e.name == "track:add" && field(e, "label") == Some(&label)
            })
            .await
            .with_context(|| format!("a's log:\n{}\nb's log:\n{}", a.log_tail(), b.log_tail()))?;
        if field(&added, "codec") != Some(mime) {
            bail!("expected {mime} at B: {:?}", added.data);
        }
        let rx = Rx {
            m: &mb,
            d: &b,
            dir: dir.path(),
        };
        let video = forward_and_decode(&rx, &ma.id, &label, "video", 20, name).await?;
        if size_of(&video.stream_line) != Some((320, 240)) || !video.stream_line.contains(name) {
            bail!("expected {name} 320x240: {}", video.stream_line);
        }
        sender.stop().await;
        ma.client.unshare(room, &label).await?;
    }
    Ok(())
}
