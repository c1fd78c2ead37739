//! Read-only figures of one connection, taken from the stack's `getStats` report, for the
//! operator's view (`peers`, `peerix status`, `peerix top`).

use std::time::Instant;

use webrtc::peer_connection::{RTCStatsReport, StatsSelector};

use crate::RtcPeer;

/// A snapshot of one connection's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerStats {
    /// Type of the local candidate of the selected pair (`host`, `srflx`, `prflx`, `relay`);
    /// `None` before ICE selected a pair.
    pub local_candidate: Option<String>,
    /// Type of the remote candidate of the selected pair.
    pub remote_candidate: Option<String>,
    /// Transport protocol of the selected pair (`udp`, `tcp`).
    pub protocol: Option<String>,
    /// Address (`ip:port`) of our side of the selected pair: for a relay candidate, the
    /// address the TURN server relays from.
    pub local_address: Option<String>,
    /// Address (`ip:port`) of the remote side of the selected pair.
    pub remote_address: Option<String>,
    /// For a `relay` local candidate, how we reach the TURN server: `udp`, `tcp` or `tls`.
    pub relay_protocol: Option<String>,
    /// Current round-trip time of the selected pair, in milliseconds (from ICE consent
    /// checks); `None` before the first measurement.
    pub rtt_ms: Option<f64>,
    /// Payload bytes received on data channels (the control channel included).
    pub bytes_in: u64,
    /// Payload bytes sent on data channels.
    pub bytes_out: u64,
    /// Data-channel messages received.
    pub messages_in: u64,
    /// Data-channel messages sent.
    pub messages_out: u64,
    /// Data channels open now (the control channel included).
    pub channels_open: u32,
}

impl RtcPeer {
    /// Takes a snapshot of the connection's figures. Cheap: the stack keeps accumulators and
    /// this copies them under its lock.
    pub async fn stats(&self) -> PeerStats {
        let pc = self.connection();
        let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
        let mut out = summarize(&report);
        // The stack's report has no candidate entries, so the types come from the ICE
        // transport, reached through the SCTP transport (the graph the spec exposes).
        if let Some(sctp) = pc.sctp().await {
            let ice = sctp.transport().ice_transport();
            if let Ok(Some(pair)) = ice.get_selected_candidate_pair().await {
                let (local, remote) = (pair.local(), pair.remote());
                out.local_candidate = Some(local.typ.to_string());
                out.remote_candidate = Some(remote.typ.to_string());
                out.protocol = Some(local.protocol.to_string());
                out.local_address = Some(socket_text(&local.address, local.port));
                out.remote_address = Some(socket_text(&remote.address, remote.port));
                if local.typ.to_string() == "relay" {
                    out.relay_protocol = Some(self.relay_protocol(local.url.as_deref()));
                }
            }
        }
        out
    }
}

impl RtcPeer {
    /// When the selected pair's local candidate is a relay candidate: the URL of its TURN
    /// server (`Some("")` when the stack did not keep it); `None` for any other pair or none.
    pub async fn selected_relay_url(&self) -> Option<String> {
        let sctp = self.connection().sctp().await?;
        let ice = sctp.transport().ice_transport();
        let pair = ice.get_selected_candidate_pair().await.ok()??;
        let local = pair.local();
        (local.typ.to_string() == "relay").then(|| local.url.clone().unwrap_or_default())
    }

    /// `udp`, `tcp` or `tls` for a relay candidate gathered from `url` (when the stack kept
    /// it), else from the connection's stream-transport servers (`turn_stream.rs`).
    fn relay_protocol(&self, url: Option<&str>) -> String {
        let from_url = url.map(|u| {
            if u.starts_with("turns:") {
                "tls"
            } else if u.contains("transport=tcp") {
                "tcp"
            } else {
                "udp"
            }
        });
        from_url
            .or_else(|| self.turn_stream_transport())
            .unwrap_or("udp")
            .to_owned()
    }
}

/// `ip:port`, with brackets around an IPv6 address.
fn socket_text(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// Reduces a full report to the figures an operator reads.
fn summarize(report: &RTCStatsReport) -> PeerStats {
    let mut out = PeerStats::default();
    // The transport names the selected pair (the one whose RTT the stack updates); if it
    // leaves the id empty, the nominated pair is the one in use.
    let selected = report
        .transport()
        .map(|t| t.selected_candidate_pair_id.as_str())
        .filter(|id| !id.is_empty())
        .and_then(|id| report.candidate_pairs().find(|p| p.stats.id == id))
        .or_else(|| report.candidate_pairs().find(|p| p.nominated));
    if let Some(pair) = selected {
        if pair.total_round_trip_time > 0.0 || pair.current_round_trip_time > 0.0 {
            out.rtt_ms = Some(pair.current_round_trip_time * 1000.0);
        }
    }
    for dc in report.data_channels() {
        out.bytes_in += dc.bytes_received;
        out.bytes_out += dc.bytes_sent;
        out.messages_in += u64::from(dc.messages_received);
        out.messages_out += u64::from(dc.messages_sent);
    }
    if let Some(pc) = report.peer_connection() {
        out.channels_open = pc
            .data_channels_opened
            .saturating_sub(pc.data_channels_closed);
    }
    out
}
