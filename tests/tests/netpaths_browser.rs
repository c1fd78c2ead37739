//! A headless Chromium running the real Peerix in one home and a daemon in the other, behind
//! their NAT routers (`tests/src/netlab.rs`), signalling through nats-server on the public
//! segment: through STUN, and through TURN with direct UDP blocked. Needs root for network
//! namespaces (skipped with a message otherwise) and the browser toolchain of
//! `tests/src/browser.rs` (fails when it is missing, like the other browser tests).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use peerix_system_tests::browser::{Browser, BrowserOpts, T};
use peerix_system_tests::netlab::{self, Home, Lab, Nat, TurnAuth};
use peerix_system_tests::peerix_client::SendOptions;
use peerix_system_tests::peerix_ipc_proto::{IceServer, JoinOptions};
use peerix_system_tests::*;
use serde_json::{json, Value};

/// Connects the daemon (home A) and Chromium (home B) with `ice`; returns the selected pair's
/// candidate types at the daemon after a text message reached the browser.
async fn daemon_and_browser(lab: &mut Lab, ice: Vec<IceServer>) -> Result<(String, String)> {
    lab.start_nats()?;
    let env = TestEnv::new()?;
    let nats = lab.nats_url();
    let d = lab
        .daemon(&env, "d", Home::A, &["--nats", &nats, "--driver", "nats"])
        .await?;
    let room = browser::room_name("netlab");
    let opts = JoinOptions {
        ice_servers: Some(ice.clone()),
        ..Default::default()
    };
    let mut m = Member::join(&d, &room, |j| {
        j.driver = Some("nats".into());
        j.options = Some(opts);
    })
    .await?;
    let mut b = Browser::start_in(
        &env,
        "chromium",
        BrowserOpts::default(),
        Some(&lab.host_ns(Home::B)),
    )
    .await?;
    let page_ice: Vec<Value> = ice
        .iter()
        .map(|s| json!({"urls": s.urls, "username": s.username, "credential": s.credential}))
        .collect();
    let start = Instant::now();
    let bid = b
        .join(
            &lab.nats_ws_url(),
            &room,
            None,
            json!({"options": {"iceServers": page_ice}}),
        )
        .await?;
    m.wait_for("the browser connected", T, |e| {
        is(e, "connection:connected", &bid)
    })
    .await?;
    println!(
        "netpaths_browser: connected {:?} after the browser joined",
        start.elapsed()
    );
    m.open("chat").await?;
    m.wait_for("chat open", T, |e| {
        is(e, "channel:open", &bid) && field(e, "label") == Some("chat")
    })
    .await?;
    // Peerix in the page acknowledges only on a channel it has set up: wait for it there too
    // (as `Session::wait_channel` does).
    let daemon_id = m.id.clone();
    b.call(
        "waitChannel",
        json!({ "label": "chat", "peer": daemon_id }),
        T,
    )
    .await?;
    let mark = b.mark();
    let res = m
        .client
        .send_text(
            &room,
            "chat",
            "across the NATs",
            SendOptions::to(bid.clone()),
        )
        .await?;
    let peers = res.peers.unwrap_or_default();
    if peers.len() != 1 || !peers[0].ok {
        bail!(
            "the browser did not acknowledge: {peers:?}\n{}",
            b.diagnostics()
        );
    }
    b.wait_from(
        mark,
        "the text at the browser",
        Duration::from_secs(10),
        |v| {
            v["ev"] == "message"
                && v["peer"] == daemon_id.as_str()
                && v["text"] == "across the NATs"
        },
    )
    .await?;
    let info = m
        .client
        .peers(&room)
        .await?
        .into_iter()
        .find(|p| p.id == bid)
        .and_then(|p| p.stats);
    let Some(stats) = info else {
        bail!("no stats for the browser in `peers`")
    };
    println!(
        "netpaths_browser: path {} route {} rtt {:?}",
        stats.path(),
        stats.route(),
        stats.rtt
    );
    assert_eq!(stats.protocol.as_deref(), Some("udp"), "{stats:?}");
    assert!(stats.local_address.is_some() && stats.remote_address.is_some());
    b.quit().await?;
    Ok((
        stats.local_candidate.unwrap_or_default(),
        stats.remote_candidate.unwrap_or_default(),
    ))
}

/// STUN: Chromium and the daemon punch through both NATs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_and_daemon_connect_through_stun() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    let mut lab = Lab::build(Nat::Cone)?;
    lab.start_turn(TurnAuth::Static)?;
    let ice = vec![IceServer {
        urls: vec![lab.stun_url()],
        username: None,
        credential: None,
    }];
    let (local, remote) = daemon_and_browser(&mut lab, ice).await?;
    assert!(local != "relay" && remote != "relay", "{local} -> {remote}");
    Ok(())
}

/// TURN: with direct UDP blocked, Chromium and the daemon talk through coturn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_and_daemon_connect_through_turn() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    let mut lab = Lab::build(Nat::Cone)?;
    lab.start_turn(TurnAuth::Static)?;
    lab.block_direct_udp()?;
    let ice = vec![IceServer {
        urls: vec![lab.turn_url()],
        username: Some(netlab::TURN_USER.into()),
        credential: Some(netlab::TURN_PASSWORD.into()),
    }];
    let (local, remote) = daemon_and_browser(&mut lab, ice).await?;
    assert!(local == "relay" || remote == "relay", "{local} -> {remote}");
    Ok(())
}
