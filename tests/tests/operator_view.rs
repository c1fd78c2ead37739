//! The operator's view: per-peer transport figures in `peers` and `status`, and the CLI's
//! `status` and `top` layouts, against real daemons over real WebRTC.

use std::time::Duration;

use anyhow::{Context, Result};
use peerix_client::SendOptions;
use peerix_system_tests::*;

const CONNECT: Duration = Duration::from_secs(10);

/// Two daemons joined to `demo` with a `chat` channel open both ways.
async fn connected_pair(env: &TestEnv) -> Result<(DaemonProc, DaemonProc, Member, Member)> {
    let da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let mut a = Member::join(&da, "demo", |_| {}).await?;
    let mut b = Member::join(&db, "demo", |_| {}).await?;
    let b_id = b.id.clone();
    let a_id = a.id.clone();
    a.wait_for("a sees b", CONNECT, |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;
    b.wait_for("b sees a", CONNECT, |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    a.open("chat").await?;
    a.wait_for("chat open at a", CONNECT, |e| {
        is(e, "channel:open", &b_id) && field(e, "label") == Some("chat")
    })
    .await?;
    Ok((da, db, a, b))
}

/// `peers` carries the selected pair's candidate types, the RTT, and data-channel counters
/// that grow with a send; `status` carries the uptime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_report_transport_figures() -> Result<()> {
    let env = TestEnv::new()?;
    let (_da, _db, a, b) = connected_pair(&env).await?;

    let peers = a.client.peers("demo").await?;
    assert_eq!(peers.len(), 1, "{peers:?}");
    let p = &peers[0];
    assert_eq!(p.id, b.id);
    assert_eq!(p.state, "connected");
    let before = p.stats.clone().context("peers[0].stats is present")?;
    assert_eq!(
        before.local_candidate.as_deref(),
        Some("host"),
        "loopback pairs host candidates: {before:?}"
    );
    assert_eq!(
        before.remote_candidate.as_deref(),
        Some("host"),
        "{before:?}"
    );
    assert_eq!(before.path(), "host/host");
    if let Some(rtt) = before.rtt {
        assert!((0.0..1000.0).contains(&rtt), "loopback RTT in ms: {rtt}");
    }
    // The control channel and `chat`.
    assert!(before.channels_open >= 2, "{before:?}");
    assert!(
        before.messages_out > 0 && before.bytes_out > 0,
        "{before:?}"
    );

    let payload = "x".repeat(10_000);
    let r = a
        .client
        .send_text("demo", "chat", &payload, SendOptions::default())
        .await?;
    assert!(r.peers.expect("report").iter().all(|p| p.ok));
    let after = a.client.peers("demo").await?[0]
        .stats
        .clone()
        .context("stats after the send")?;
    assert!(
        after.bytes_out >= before.bytes_out + 10_000,
        "bytes out grow by the message: {before:?} -> {after:?}"
    );
    assert!(after.messages_out > before.messages_out, "{after:?}");
    // The acknowledgement comes back on the control channel.
    assert!(after.bytes_in > before.bytes_in, "{before:?} -> {after:?}");

    let at_b = b.client.peers("demo").await?[0]
        .stats
        .clone()
        .context("stats at b")?;
    assert!(at_b.bytes_in >= 10_000, "b received the message: {at_b:?}");

    // A peer's figures are a stack snapshot: RTT, once measured, is a plausible number.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rtt = a.client.peers("demo").await?[0]
        .stats
        .as_ref()
        .and_then(|s| s.rtt);
    if let Some(rtt) = rtt {
        assert!(rtt >= 0.0, "{rtt}");
    }

    let status = a.client.status().await?;
    assert!(status.uptime < 600, "uptime in seconds: {}", status.uptime);
    assert_eq!(status.rooms.len(), 1);
    assert_eq!(status.rooms[0].peers, 1);
    Ok(())
}
