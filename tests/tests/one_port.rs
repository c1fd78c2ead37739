//! Single-port mode (`webrtc.udp_port`): every peer connection of a daemon shares one UDP port.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use peerix_client::SendOptions;
use peerix_system_tests::browser::{
    check_prerequisites, daemon_connected, join_nats, nats_daemon, room_name, ws_url, Browser,
    BrowserOpts, T,
};
use peerix_system_tests::*;
use serde_json::{json, Value};

const DAEMONS: usize = 8;
const CONNECT: Duration = Duration::from_secs(20);

/// The local UDP ports of `pid`'s sockets: its fds' socket inodes matched against the
/// process's view of `/proc/net/udp{,6}`.
fn udp_ports(pid: u32) -> Result<BTreeSet<u16>> {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(fd?.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
            inodes.insert(inode.to_string());
        }
    }
    let mut ports = BTreeSet::new();
    for table in ["udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .with_context(|| format!("reading /proc/{pid}/net/{table}"))?;
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (cols.get(1), cols.get(9)) else {
                continue;
            };
            if !inodes.contains(*inode) {
                continue;
            }
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                .context("port in /proc/net/udp")?;
            ports.insert(port);
        }
    }
    Ok(ports)
}

/// Eight daemons in a full mesh, each with `webrtc.udp_port = 0`: each daemon's seven
/// connections use one UDP port, and messages flow both ways between every pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_daemons_each_use_one_udp_port() -> Result<()> {
    let env = TestEnv::new()?;
    let config = env.dir.path().join("one-port.toml");
    // mDNS off: its query socket (port 5353, multicast) is not an ICE socket and not muxed.
    std::fs::write(&config, "[webrtc]\nudp_port = 0\nmdns = false\n")?;
    let config = config.to_string_lossy().into_owned();
    let mut daemons = Vec::new();
    for i in 0..DAEMONS {
        daemons.push(env.daemon(&format!("d{i}"), &["--config", &config]).await?);
    }
    let mut members = Vec::new();
    for d in &daemons {
        members.push(Member::join(d, "one", |_| {}).await?);
    }
    full_mesh(&mut members, 0, CONNECT).await?;
    let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();

    // Each member opens a label of its own and sends on it to everyone: i→j and j→i.
    for (i, m) in members.iter_mut().enumerate() {
        let label = format!("c{i}");
        m.open(&label).await?;
        for (j, other) in ids.iter().enumerate() {
            if i != j {
                m.wait_for(&format!("{label} open to {j}"), CONNECT, |e| {
                    is(e, "channel:open", other) && field(e, "label") == Some(label.as_str())
                })
                .await?;
            }
        }
        let r = m
            .client
            .send_text("one", &label, &format!("from {i}"), SendOptions::default())
            .await?;
        let peers = r.peers.context("delivery report")?;
        assert_eq!(peers.len(), DAEMONS - 1, "{peers:?}");
        assert!(peers.iter().all(|p| p.ok), "{i}: {peers:?}");
    }
    for (j, m) in members.iter_mut().enumerate() {
        for (i, other) in ids.iter().enumerate() {
            if i != j {
                let want = format!("from {i}");
                m.wait_for(&format!("{j} got {want}"), CONNECT, |e| {
                    e.name == "channel:message"
                        && field(e, "peer") == Some(other.as_str())
                        && field(e, "data") == Some(want.as_str())
                })
                .await?;
            }
        }
    }

    for d in &daemons {
        let pid = d.pid().context("daemon pid")?;
        let ports = udp_ports(pid)?;
        if ports.len() != 1 {
            bail!(
                "{} uses UDP ports {ports:?} for {} peers, not one",
                d.name,
                DAEMONS - 1
            );
        }
    }
    Ok(())
}

/// Two single-port daemons sharing two rooms: both rooms' connections run between the same
/// two ports, which the mux cannot tell apart. The second room must not take the first one's
/// address pair (that broke the first room's connection); its connection gets a port of its
/// own instead, and both rooms carry messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_between_two_single_port_daemons() -> Result<()> {
    let env = TestEnv::new()?;
    let config = env.dir.path().join("one-port.toml");
    std::fs::write(&config, "[webrtc]\nudp_port = 0\nmdns = false\n")?;
    let config = config.to_string_lossy().into_owned();
    let a = env.daemon("a", &["--config", &config]).await?;
    let b = env.daemon("b", &["--config", &config]).await?;

    /// Opens `label` in the room of `m[0]`, sends on it both ways and checks the reports.
    async fn exchange(m: &mut [Member; 2], label: &str, text: &str) -> Result<()> {
        let ids = [m[0].id.clone(), m[1].id.clone()];
        m[0].open(label).await?;
        for (i, other) in [(0, &ids[1]), (1, &ids[0])] {
            m[i].wait_for(&format!("{label} open at {i}"), CONNECT, |e| {
                is(e, "channel:open", other) && field(e, "label") == Some(label)
            })
            .await?;
        }
        for (i, j) in [(0usize, 1usize), (1, 0)] {
            let room = m[i].room.clone();
            let r = m[i]
                .client
                .send_text(&room, label, text, SendOptions::to(ids[j].as_str()))
                .await?;
            let peers = r.peers.context("delivery report")?;
            if !peers.iter().all(|p| p.ok) {
                bail!("{room}: send {i}→{j} failed: {peers:?}");
            }
            m[j].wait_for(&format!("{room}: {j} got {text}"), CONNECT, |e| {
                e.name == "channel:message"
                    && field(e, "peer") == Some(ids[i].as_str())
                    && field(e, "data") == Some(text)
            })
            .await?;
        }
        Ok(())
    }

    let mut one = [
        Member::join(&a, "one", |_| {}).await?,
        Member::join(&b, "one", |_| {}).await?,
    ];
    full_mesh(&mut one, 0, CONNECT).await?;
    exchange(&mut one, "x", "one, before").await?;

    let mut two = [
        Member::join(&a, "two", |_| {}).await?,
        Member::join(&b, "two", |_| {}).await?,
    ];
    full_mesh(&mut two, 0, CONNECT).await?;
    exchange(&mut two, "y", "two").await?;
    // The first room's connection survived the second one's checks.
    exchange(&mut one, "z", "one, after").await?;
    // And the two connections do not share an address pair, whose traffic the mux could
    // only give to one of them.
    let (p1, p2) = (
        selected_pair(&one[0], &one[1].id).await?,
        selected_pair(&two[0], &two[1].id).await?,
    );
    println!("one_port: room one {p1:?}, room two {p2:?}");
    if p1 == p2 {
        bail!("both rooms' connections use the address pair {p1:?}");
    }
    Ok(())
}

/// The selected pair's (local, remote) addresses of `m`'s connection to `peer`.
async fn selected_pair(m: &Member, peer: &str) -> Result<(String, String)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let info = m
            .client
            .peers(&m.room)
            .await?
            .into_iter()
            .find(|p| p.id == peer);
        if let Some(s) = info.as_ref().and_then(|i| i.stats.as_ref()) {
            if let (Some(l), Some(r)) = (&s.local_address, &s.remote_address) {
                return Ok((l.clone(), r.clone()));
            }
        }
        if std::time::Instant::now() > deadline {
            bail!("no selected pair for {peer} in {}: {info:?}", m.room);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Real Peerix in Chromium among two single-port daemons (NATS signaling): the browser hides
/// its host addresses behind mDNS and the daemons do not resolve them, so the daemons first
/// learn the browser's address from its checks, routed by ufrag. Messages flow both ways, and
/// each daemon still uses one UDP port for its two peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_among_single_port_daemons() -> Result<()> {
    check_prerequisites()?;
    let env = TestEnv::new()?;
    let nats = NatsServer::start(&[])?;
    let config = env.dir.path().join("one-port.toml");
    std::fs::write(&config, "[webrtc]\nudp_port = 0\nmdns = false\n")?;
    let config = config.to_string_lossy().into_owned();
    let mut b = Browser::start(&env, "b", BrowserOpts::default()).await?;
    let d0 = nats_daemon(&env, &nats, "d0", &["--config", &config]).await?;
    let d1 = nats_daemon(&env, &nats, "d1", &["--config", &config]).await?;
    let room = room_name("one-port");
    let mut m0 = join_nats(&d0, &room).await?;
    let mut m1 = join_nats(&d1, &room).await?;
    let peer = b.join(&ws_url(&nats), &room, None, Value::Null).await?;
    let id1 = m1.id.clone();
    m0.wait_for("d0 connected to d1", T, |e| {
        is(e, "connection:connected", &id1)
    })
    .await?;
    for (i, (m, d)) in [(&mut m0, &d0), (&mut m1, &d1)].into_iter().enumerate() {
        daemon_connected(m, d, &peer).await?;
        let label = format!("chat{i}");
        m.open(&label).await?;
        m.wait_for(&format!("{label} open to the browser"), T, |e| {
            is(e, "channel:open", &peer) && field(e, "label") == Some(label.as_str())
        })
        .await?;
        b.call("waitChannel", json!({ "label": label, "peer": m.id }), T)
            .await?;
        let mark = b.mark();
        let r = m
            .client
            .send_text(&room, &label, "to chromium", SendOptions::to(peer.clone()))
            .await?;
        let peers = r.peers.context("delivery report")?;
        assert!(peers.iter().all(|p| p.ok), "{peers:?}");
        let from = m.id.clone();
        b.wait_from(mark, "the daemon's text", T, |v| {
            v["ev"] == "message" && v["label"] == label.as_str() && v["peer"] == from.as_str()
        })
        .await?;
        b.call(
            "send",
            json!({"label": label, "to": from, "text": "to peerixd"}),
            T,
        )
        .await?;
        m.wait_for("the browser's text", T, |e| {
            is(e, "channel:message", &peer) && field(e, "data") == Some("to peerixd")
        })
        .await?;
    }
    for d in [&d0, &d1] {
        let ports = udp_ports(d.pid().context("daemon pid")?)?;
        if ports.len() != 1 {
            bail!("{} uses UDP ports {ports:?} for 2 peers, not one", d.name);
        }
    }
    b.quit().await
}
