//! `peerix status`: the operator's one-shot view of the daemon (version, uptime, identity,
//! drivers, rooms, and every peer's connection figures), shared with `peerix top`.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use peerix_client::{Client, PeerInfo, StatusResult};
use serde_json::{json, Value as Json};

/// Everything the operator's views show, read in one pass: `status`, then `peers` per room.
pub(crate) struct Snapshot {
    /// The daemon's `status`.
    pub status: StatusResult,
    /// The peers of each room of `status.rooms`, in the same order.
    pub peers: Vec<Vec<PeerInfo>>,
}

impl Snapshot {
    /// Reads a snapshot. A room left between `status` and its `peers` shows no peers.
    pub async fn read(client: &Client) -> Result<Self> {
        let status = client.status().await.context("status failed")?;
        let mut peers = Vec::with_capacity(status.rooms.len());
        for r in &status.rooms {
            peers.push(client.peers(&r.room).await.unwrap_or_default());
        }
        Ok(Self { status, peers })
    }

    /// Machine output: the `status` result, each room with its peers under `members`.
    pub fn to_json(&self) -> Result<Json> {
        let mut v = serde_json::to_value(&self.status)?;
        if let Some(rooms) = v.get_mut("rooms").and_then(Json::as_array_mut) {
            for (room, peers) in rooms.iter_mut().zip(&self.peers) {
                let members: Vec<Json> = peers.iter().map(peer_json).collect();
                if let Some(o) = room.as_object_mut() {
                    o.insert("members".into(), Json::Array(members));
                }
            }
        }
        Ok(v)
    }
}

fn peer_json(p: &PeerInfo) -> Json {
    json!({
        "id": p.id,
        "state": p.state,
        "channels": p.channels,
        "tracks": p.tracks.iter().map(|t| json!({"label": t.label, "kind": t.kind, "codec": t.codec})).collect::<Vec<_>>(),
        "stats": p.stats.as_ref().map(|s| serde_json::to_value(s).unwrap_or(Json::Null)),
    })
}

/// The human layout of `peerix status`.
pub(crate) fn render(s: &Snapshot) -> String {
    let st = &s.status;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "peerixd {}   up {}   machine id {}",
        st.version,
        fmt_uptime(st.uptime),
        st.id
    );
    out.push_str("\nDrivers\n");
    let drivers: Vec<Vec<String>> = st
        .drivers
        .iter()
        .map(|d| vec![d.name.clone(), d.kind.clone(), driver_state(d).to_string()])
        .collect();
    table(&mut out, &["NAME", "KIND", "STATE"], &drivers);
    if st.rooms.is_empty() {
        out.push_str("\nNo rooms joined (peerix join ROOM).\n");
    }
    for (r, peers) in st.rooms.iter().zip(&s.peers) {
        let persist = if r.persist { ", persistent" } else { "" };
        let _ = writeln!(
            out,
            "\nRoom {}   via {}   as {}\n  {} peer(s), held by {} client(s){persist}, channels: {}",
            r.room,
            r.driver,
            r.id,
            r.peers,
            r.holders,
            if r.channels.is_empty() {
                "-".to_string()
            } else {
                r.channels.join(", ")
            }
        );
        if peers.is_empty() {
            continue;
        }
        let rows: Vec<Vec<String>> = peers.iter().map(peer_row).collect();
        table(
            &mut out,
            &[
                "PEER", "STATE", "PATH", "ROUTE", "RTT", "IN", "OUT", "CHANNELS", "SHARES",
            ],
            &rows,
        );
    }
    out
}

fn peer_row(p: &PeerInfo) -> Vec<String> {
    let shares = if p.tracks.is_empty() {
        "-".to_string()
    } else {
        p.tracks
            .iter()
            .map(|t| format!("{}:{}", t.label, t.kind))
            .collect::<Vec<_>>()
            .join(",")
    };
    let channels = if p.channels.is_empty() {
        "-".to_string()
    } else {
        p.channels.join(",")
    };
    match &p.stats {
        Some(st) => vec![
            p.id.clone(),
            p.state.clone(),
            st.path(),
            st.route(),
            fmt_rtt(st.rtt),
            format!("{} / {} msg", fmt_bytes(st.bytes_in), st.messages_in),
            format!("{} / {} msg", fmt_bytes(st.bytes_out), st.messages_out),
            format!("{} ({} open)", channels, st.channels_open),
            shares,
        ],
        None => vec![
            p.id.clone(),
            p.state.clone(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            channels,
            shares,
        ],
    }
}

/// The driver's state, also from a daemon that only reports `active`.
pub(crate) fn driver_state(d: &peerix_client::DriverInfo) -> &str {
    match (d.state.as_str(), d.active) {
        ("", true) => "active",
        ("", false) => "inactive",
        (s, _) => s,
    }
}

/// Appends an indented table with columns as wide as their widest cell.
pub(crate) fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::from(" ");
        for (cell, w) in cells.iter().zip(&widths) {
            let _ = write!(l, " {cell:<w$} ");
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(head.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// `1d 02h 03m`, `2h 03m 04s`, `5m 06s` or `7s`.
pub(crate) fn fmt_uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// A round-trip time in milliseconds, or `-` before the first measurement.
pub(crate) fn fmt_rtt(rtt: Option<f64>) -> String {
    match rtt {
        Some(ms) if ms < 10.0 => format!("{ms:.2} ms"),
        Some(ms) => format!("{ms:.0} ms"),
        None => "-".into(),
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub(crate) fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// A rate from a byte difference over an interval: `fmt_bytes` per second.
pub(crate) fn fmt_rate(bytes: u64, over: Duration) -> String {
    let secs = over.as_secs_f64();
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{}/s", fmt_bytes((bytes as f64 / secs).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_well() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(5 << 20), "5.0 MiB");
        assert_eq!(fmt_uptime(7), "7s");
        assert_eq!(fmt_uptime(3723), "1h 02m 03s");
        assert_eq!(fmt_uptime(90_061), "1d 01h 01m");
        assert_eq!(fmt_rtt(Some(0.5)), "0.50 ms");
        assert_eq!(fmt_rtt(None), "-");
        assert_eq!(fmt_rate(2048, Duration::from_secs(2)), "1.0 KiB/s");
    }
}
