//! The optional Prometheus endpoint: `GET /metrics` on a loopback address (`[metrics]
//! listen`), the same figures as `status` and `peers` in the text exposition format.
//!
//! Hand-written rather than a metrics crate: every figure is already computed on demand by
//! the actors (a scrape is one `status` plus one `peers` per room), so a registry of
//! counters kept in step on the data path would add work and a dependency for nothing; the
//! text format is a few lines of `format!`. (The exception is the process's UDP send counts,
//! two relaxed atomic adds per `sendmsg` in `peerix-rtc`: no actor sees the sockets.) Scrapes
//! are served one at a time, so the endpoint's cost is bounded whatever scrapes it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use actix::Addr;
use peerix_ipc_proto::{PeersResult, StatusResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::actors::daemon::{Daemon, Exec};
use crate::error::DaemonError;

/// How long one scrape may take: reading the request, asking the actors, writing.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// A serving endpoint. Dropping it stops serving and closes its port (a reload that removes or
/// moves `[metrics] listen`).
pub struct Endpoint {
    /// The address it listens on.
    pub bound: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves scrapes on the current actix system until it stops or the returned
/// [`Endpoint`] is dropped.
pub async fn spawn(addr: SocketAddr, daemon: Addr<Daemon>) -> Result<Endpoint, DaemonError> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        DaemonError::Config(format!(
            "metrics.listen {addr}: {e} (choose a free port, or remove [metrics] listen)"
        ))
    })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(%bound, "metrics on http://{bound}/metrics");
    let task = actix::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let scrape = async {
                // The request itself does not matter: every path answers the metrics.
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let body = render(&daemon).await;
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            };
            let _ = tokio::time::timeout(SCRAPE_TIMEOUT, scrape).await;
        }
    });
    Ok(Endpoint { bound, task })
}

/// Applies a reloaded `[metrics] listen` to the running endpoint: stops it, or starts one on
/// the new address and then stops the old. Err (the running endpoint stays) when the new
/// address cannot be bound.
pub async fn reload(
    running: &mut Option<Endpoint>,
    listen: Option<SocketAddr>,
    daemon: &Addr<Daemon>,
) -> Result<(), DaemonError> {
    match listen {
        None => *running = None,
        // Already served there (e.g. the old setting asked for port 0 and got this one).
        Some(addr) if running.as_ref().is_some_and(|e| e.bound == addr) => {}
        Some(addr) => *running = Some(spawn(addr, daemon.clone()).await?),
    }
    Ok(())
}

/// The exposition text; figures the actors did not give are left out.
async fn render(daemon: &Addr<Daemon>) -> String {
    let mut out = String::new();
    let status = match daemon.send(Exec::Status).await {
        Ok(Ok(v)) => peerix_ipc_proto::from_value::<StatusResult>(v).ok(),
        _ => None,
    };
    let Some(st) = status else {
        out.push_str("# peerixd did not answer\npeerix_up 0\n");
        return out;
    };
    let _ = writeln!(
        out,
        "# HELP peerix_up Whether the daemon's actors answered this scrape.\n# TYPE peerix_up gauge\npeerix_up 1"
    );
    let _ = writeln!(
        out,
        "# HELP peerix_info Daemon version and machine id.\n# TYPE peerix_info gauge\npeerix_info{{version=\"{}\",id=\"{}\"}} 1",
        esc(&st.version),
        esc(&st.id)
    );
    let _ = writeln!(
        out,
        "# HELP peerix_uptime_seconds Seconds since the daemon started.\n# TYPE peerix_uptime_seconds gauge\npeerix_uptime_seconds {}",
        st.uptime
    );
    // Process-wide, not per peer: single-port mode's shared socket and TURN over TCP/TLS are
    // not in it. Datagrams per call says how well bulk sends are batched (UDP GSO).
    let udp = peerix_rtc::udp_send_counts();
    let _ = writeln!(
        out,
        "# HELP peerix_udp_send_calls_total UDP sendmsg calls of the peer connections' own sockets.\n# TYPE peerix_udp_send_calls_total counter\npeerix_udp_send_calls_total {}",
        udp.calls
    );
    let _ = writeln!(
        out,
        "# HELP peerix_udp_datagrams_sent_total Datagrams those calls carried (several per call with UDP GSO).\n# TYPE peerix_udp_datagrams_sent_total counter\npeerix_udp_datagrams_sent_total {}",
        udp.datagrams
    );
    out.push_str("# HELP peerix_driver_up Whether a signaling driver is connected.\n# TYPE peerix_driver_up gauge\n");
    for d in &st.drivers {
        let _ = writeln!(
            out,
            "peerix_driver_up{{driver=\"{}\",kind=\"{}\",state=\"{}\"}} {}",
            esc(&d.name),
            esc(&d.kind),
            esc(&d.state),
            u8::from(d.active)
        );
    }
    out.push_str(
        "# HELP peerix_room_peers Known peers of a joined room.\n# TYPE peerix_room_peers gauge\n",
    );
    for r in &st.rooms {
        let _ = writeln!(
            out,
            "peerix_room_peers{{room=\"{}\",id=\"{}\"}} {}",
            esc(&r.room),
            esc(&r.id),
            r.peers
        );
    }
    let mut peers = String::new();
    let series: [(&str, &str, &str); 7] = [
        (
            "peerix_peer_connected",
            "gauge",
            "Whether the peer's state is connected.",
        ),
        (
            "peerix_peer_rtt_seconds",
            "gauge",
            "Current RTT of the selected ICE pair.",
        ),
        (
            "peerix_peer_bytes_received_total",
            "counter",
            "Data-channel payload bytes received.",
        ),
        (
            "peerix_peer_bytes_sent_total",
            "counter",
            "Data-channel payload bytes sent.",
        ),
        (
            "peerix_peer_messages_received_total",
            "counter",
            "Data-channel messages received.",
        ),
        (
            "peerix_peer_messages_sent_total",
            "counter",
            "Data-channel messages sent.",
        ),
        ("peerix_peer_channels_open", "gauge", "Data channels open."),
    ];
    let mut lines: Vec<Vec<String>> = vec![Vec::new(); series.len()];
    for r in &st.rooms {
        let res = daemon.send(Exec::Peers(r.room.clone())).await;
        let Ok(Ok(v)) = res else { continue };
        let Ok(list) = peerix_ipc_proto::from_value::<PeersResult>(v) else {
            continue;
        };
        for p in list.peers {
            let path = p
                .stats
                .as_ref()
                .map(|s| s.path())
                .unwrap_or_else(|| "-".into());
            let labels = format!(
                "room=\"{}\",peer=\"{}\",state=\"{}\",path=\"{}\"",
                esc(&r.room),
                esc(&p.id),
                esc(&p.state),
                esc(&path)
            );
            lines[0].push(format!("{{{labels}}} {}", u8::from(p.state == "connected")));
            let Some(s) = p.stats else { continue };
            if let Some(rtt) = s.rtt {
                lines[1].push(format!("{{{labels}}} {}", rtt / 1000.0));
            }
            lines[2].push(format!("{{{labels}}} {}", s.bytes_in));
            lines[3].push(format!("{{{labels}}} {}", s.bytes_out));
            lines[4].push(format!("{{{labels}}} {}", s.messages_in));
            lines[5].push(format!("{{{labels}}} {}", s.messages_out));
            lines[6].push(format!("{{{labels}}} {}", s.channels_open));
        }
    }
    for ((name, kind, help), values) in series.iter().zip(lines) {
        let _ = writeln!(peers, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for v in values {
            let _ = writeln!(peers, "{name}{v}");
        }
    }
    out.push_str(&peers);
    out
}

/// Escapes a label value (backslash, double quote, newline).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
