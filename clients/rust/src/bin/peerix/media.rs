//! `peerix share`/`unshare`: our own media from a local RTP sender (ffmpeg, GStreamer, OBS);
//! `peerix forward`: a remote peer's shared track to a local player.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use peerix_client::{Client, ShareArgs, ShareTrack};
use serde_json::json;

/// Arguments of `peerix forward`.
#[derive(Debug, Args)]
pub struct ForwardCmd {
    /// Room name.
    pub room: String,
    /// The peer that shares (its id, as in `peerix peers` or a `stream:add` event).
    pub peer: String,
    /// The label it shares under (`stream:add`'s label).
    pub label: String,
    /// Where to send the RTP, e.g. 127.0.0.1:6000.
    #[arg(long, value_name = "IP:PORT", required_unless_present = "stop")]
    pub to: Option<SocketAddr>,
    /// `audio` or `video`, when the label has both.
    #[arg(long, value_parser = ["audio", "video"])]
    pub kind: Option<String>,
    /// Write the SDP a player opens to this file (else it is printed).
    #[arg(long, value_name = "FILE")]
    pub sdp: Option<PathBuf>,
    /// Stop forwarding the track.
    #[arg(long, conflicts_with_all = ["to", "sdp"])]
    pub stop: bool,
}

/// Runs `peerix forward`.
pub async fn forward(client: &Client, a: ForwardCmd, json: bool) -> Result<ExitCode> {
    let to = if a.stop { None } else { a.to };
    let res = client
        .forward(&a.room, &a.peer, &a.label, a.kind.as_deref(), to)
        .await
        .context("forward failed")?;
    if let Some(path) = &a.sdp {
        std::fs::write(path, &res.sdp)
            .with_context(|| format!("cannot write the SDP to {}", path.display()))?;
    }
    if json {
        crate::print_json(&json!({
            "track": res.track, "kind": res.kind, "codec": res.codec, "sdp": res.sdp,
        }));
    } else if a.stop {
        println!("stopped forwarding {} ({})", res.track, res.kind);
    } else {
        let target = to.map(|t| t.to_string()).unwrap_or_default();
        println!(
            "forwarding {} {} ({}) to {target}",
            res.kind, res.track, res.codec
        );
        match &a.sdp {
            Some(path) => println!(
                "play it: ffplay -protocol_whitelist file,udp,rtp -i {}",
                path.display()
            ),
            None => print!("{}", res.sdp),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `peerix share`.
#[derive(Debug, Args)]
pub struct ShareCmd {
    /// Room name.
    pub room: String,
    /// The label peers see (Peerix's `share({label})`).
    pub label: String,
    /// Listen for the video's RTP here (e.g. 127.0.0.1:5004; port 0 picks one).
    #[arg(long, value_name = "IP:PORT", required_unless_present = "audio_rtp")]
    pub video_rtp: Option<SocketAddr>,
    /// The video's codec: vp8, vp9, h264 or av1.
    #[arg(long, default_value = "vp8")]
    pub video_codec: String,
    /// Listen for the audio's RTP here (e.g. 127.0.0.1:5006).
    #[arg(long, value_name = "IP:PORT")]
    pub audio_rtp: Option<SocketAddr>,
    /// The audio's codec.
    #[arg(long, default_value = "opus")]
    pub audio_codec: String,
}

/// Runs `peerix share`.
pub async fn share(client: &Client, a: ShareCmd, json: bool) -> Result<ExitCode> {
    let mut tracks = Vec::new();
    if let Some(v) = a.video_rtp {
        tracks.push(ShareTrack {
            codec: a.video_codec.clone(),
            kind: Some("video".into()),
            rtp: Some(v.to_string()),
        });
    }
    if let Some(au) = a.audio_rtp {
        tracks.push(ShareTrack {
            codec: a.audio_codec.clone(),
            kind: Some("audio".into()),
            rtp: Some(au.to_string()),
        });
    }
    let res = client
        .share(ShareArgs {
            room: a.room.clone(),
            label: a.label.clone(),
            tracks,
            audio_parameters: None,
            video_parameters: None,
        })
        .await
        .context("share failed")?;
    if json {
        crate::print_json(&serde_json::to_value(&res).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "sharing {:?} in {} as stream {}",
        a.label, a.room, res.stream
    );
    for t in &res.tracks {
        let at = t.rtp.as_deref().unwrap_or("-");
        println!("  {} {} ({}): send RTP to {at}", t.kind, t.track, t.codec);
        if let Some(rtp) = &t.rtp {
            let hint = if t.kind == "video" {
                format!("ffmpeg -re -i in.mp4 -an -c:v libvpx -deadline realtime -b:v 1M -g 30 -f rtp 'rtp://{rtp}?pkt_size=1200'")
            } else {
                format!("ffmpeg -re -i in.mp4 -vn -c:a libopus -f rtp 'rtp://{rtp}?pkt_size=1200'")
            };
            println!("    e.g. {hint}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `peerix unshare`.
pub async fn unshare(client: &Client, room: &str, label: &str, json: bool) -> Result<ExitCode> {
    let unshared = client
        .unshare(room, label)
        .await
        .context("unshare failed")?;
    if json {
        crate::print_json(&json!({ "unshared": unshared }));
    } else if unshared {
        println!("stopped sharing {label:?} in {room}");
    } else {
        println!("{label:?} was not shared in {room}");
    }
    Ok(ExitCode::SUCCESS)
}
