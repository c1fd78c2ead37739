//! Media helpers for the system tests: ffmpeg as the sender and the receiver of RTP, as users
//! run it (the Debian package; `scripts/test-all.sh` installs it).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use peerix_client::{ShareArgs, ShareResult, ShareTrack};

/// What ffmpeg made of a forwarded track.
#[derive(Debug)]
pub struct Decoded {
    /// Frames decoded.
    pub frames: u64,
    /// ffmpeg's `Stream #0:0` line (codec, size).
    pub stream_line: String,
}

/// A track of `codec` for `share`: an RTP ingest on a loopback port the daemon picks when
/// `rtp`, else fed with `frame`.
pub fn share_track(codec: &str, rtp: bool) -> ShareTrack {
    ShareTrack {
        codec: codec.into(),
        kind: None,
        rtp: rtp.then(|| "127.0.0.1:0".into()),
    }
}

/// `share` of `tracks` under `label`, without limits.
pub fn share_args(room: &str, label: &str, tracks: Vec<ShareTrack>) -> ShareArgs {
    ShareArgs {
        room: room.into(),
        label: label.into(),
        tracks,
        audio_parameters: None,
        video_parameters: None,
    }
}

/// The ingest address of the share's track of `kind`.
pub fn ingest(r: &ShareResult, kind: &str) -> Result<std::net::SocketAddr> {
    let t = r
        .tracks
        .iter()
        .find(|t| t.kind == kind)
        .with_context(|| format!("no {kind} track in {r:?}"))?;
    Ok(t.rtp.as_deref().context("no rtp address")?.parse()?)
}

/// A loopback UDP port nobody uses now (ffmpeg binds it and the one above, for RTCP).
pub fn free_udp_pair() -> Result<u16> {
    for _ in 0..50 {
        let a = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = a.local_addr()?.port();
        if port % 2 == 0
            && port < 65534
            && std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return Ok(port);
        }
    }
    bail!("no free pair of loopback UDP ports")
}

/// Runs ffmpeg on `sdp` until it decoded `frames` frames of the first stream (or `wait`
/// passed), and returns what it decoded.
pub async fn ffmpeg_decode(
    dir: &std::path::Path,
    name: &str,
    sdp: &str,
    frames: u64,
    wait: Duration,
) -> Result<Decoded> {
    let path = dir.join(format!("{name}.sdp"));
    std::fs::write(&path, sdp)?;
    let limit = if sdp.contains("m=video") {
        "-frames:v"
    } else {
        "-frames:a"
    };
    let child = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "info",
            "-protocol_whitelist",
            "file,udp,rtp",
            "-i",
        ])
        .arg(&path)
        .args([limit, &frames.to_string(), "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context(
            "ffmpeg not found: install the Debian package `ffmpeg` (scripts/test-all.sh does)",
        )?;
    let out = match tokio::time::timeout(wait, child.wait_with_output()).await {
        Ok(out) => out?,
        Err(_) => bail!("ffmpeg did not decode {frames} frames from {name} within {wait:?}"),
    };
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    let stream_line = log
        .lines()
        .find(|l| l.contains("Stream #0:0") && (l.contains("Video:") || l.contains("Audio:")))
        .unwrap_or_default()
        .trim()
        .to_owned();
    // The last progress line, e.g. "frame=   30 fps=…" (video) or "size=N/A time=…" (audio).
    let frames_done = log
        .rsplit("frame=")
        .next()
        .filter(|_| log.contains("frame="))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !out.status.success() {
        bail!("ffmpeg failed on {name}:\n{log}");
    }
    Ok(Decoded {
        frames: frames_done,
        stream_line,
    })
}

/// `WxH` of ffmpeg's stream line.
pub fn size_of(stream_line: &str) -> Option<(u32, u32)> {
    stream_line.split([',', ' ']).find_map(|p| {
        let (w, h) = p.split_once('x')?;
        Some((w.parse().ok()?, h.parse().ok()?))
    })
}

/// An ffmpeg sending a synthetic test signal as RTP, as a user would feed a share: the test
/// pattern as VP8 to `video` and a sine as Opus to `audio` (either may be absent). Killed on
/// drop.
pub struct RtpSender {
    child: tokio::process::Child,
}

impl RtpSender {
    /// Starts sending `width`×`height` VP8 at 30 fps (a keyframe every second, packets within
    /// a 1200-byte MTU).
    pub fn start(
        video: Option<std::net::SocketAddr>,
        audio: Option<std::net::SocketAddr>,
        width: u32,
        height: u32,
    ) -> Result<Self> {
        Self::start_codec(video, audio, width, height, "vp8")
    }

    /// As [`RtpSender::start`], with video codec `vp8`, `vp9` or `h264` (constrained
    /// baseline, packetization-mode 1, as browsers take it).
    pub fn start_codec(
        video: Option<std::net::SocketAddr>,
        audio: Option<std::net::SocketAddr>,
        width: u32,
        height: u32,
        codec: &str,
    ) -> Result<Self> {
        let mut cmd = tokio::process::Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"]);
        cmd.args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc=size={width}x{height}:rate=30"),
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
        ]);
        if let Some(v) = video {
            cmd.args(["-map", "0:v", "-g", "30", "-pix_fmt", "yuv420p"]);
            let encoder: &[&str] = match codec {
                "h264" => &[
                    "-c:v",
                    "libx264",
                    "-profile:v",
                    "baseline",
                    "-preset",
                    "ultrafast",
                    "-tune",
                    "zerolatency",
                ],
                "vp9" => &[
                    "-c:v",
                    "libvpx-vp9",
                    "-deadline",
                    "realtime",
                    "-b:v",
                    "800k",
                    "-strict",
                    "experimental",
                ],
                _ => &["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "800k"],
            };
            cmd.args(encoder);
            cmd.args(["-f", "rtp"]);
            cmd.arg(format!("rtp://{v}?pkt_size=1200"));
        }
        if let Some(a) = audio {
            cmd.args(["-map", "1:a", "-c:a", "libopus", "-f", "rtp"]);
            cmd.arg(format!("rtp://{a}?pkt_size=1200"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context(
                "ffmpeg not found: install the Debian package `ffmpeg` (scripts/test-all.sh does)",
            )?;
        Ok(Self { child })
    }

    /// Stops it now.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
