//! `peerix forward`: a remote peer's shared track to a local player.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use peerix_client::Client;
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
