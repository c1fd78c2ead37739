//! A NAT rebinding between a daemon and a browser (real Peerix in headless Chromium), in the
//! namespace lab of `tests/src/netlab.rs` (issue 15, part 5). Peerix never restarts ICE, so the
//! daemon recovers the Peerix way: the dead connection fails at `connectionTimeout` and the
//! daemon invokes the browser again until it offers a new connection. No client acts; a text
//! sent after the recovery reaches the page. Both sides use a 3 s `connectionTimeout` so the
//! test takes seconds, not Peerix's 15 s twice.
//!
//! The daemon usually notices the dead path before Chromium does, so its new offer can land on
//! the page's still-open old connection, which answers over its dead control channel. The copy
//! of the offer sent 2 s later (`resend.rs`) then makes the page's new connection, and must
//! carry our candidates with it; and the connection timer restarts when ICE starts checking,
//! so the late answer still gets the whole timeout. The rebinding also cuts the daemon's NATS
//! connection (re-announced on reconnect).
//!
//! The same repair after the daemon's TURN stream is reset (all UDP blocked, both sides
//! relayed over TCP): the daemon fails the connection at once, but the page keeps it until ICE
//! consent and its timeout run out and ignores invokes until then, so the daemon invokes again
//! right after that. Needs root for the namespaces (skipped with a message otherwise) and the
//! browser toolchain of `tests/src/browser.rs`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_system_tests::browser::{Browser, BrowserOpts, T};
use peerix_system_tests::netlab::{self, Home, Lab, Nat, TurnAuth};
use peerix_system_tests::peerix_client::SendOptions;
use peerix_system_tests::peerix_ipc_proto::{IceServer, JoinOptions};
use peerix_system_tests::*;
use serde_json::json;

/// The `connectionTimeout` on both sides, in ms. The daemon's IPC takes milliseconds, but
/// Peerix takes **seconds** (`s * 1e3` in its `Peer`): passing it 3000 gave the page a 50-minute
/// timer, so its dead connection stayed open and swallowed the daemon's new offer.
const TIMEOUT_MS: u64 = 3000;

/// The page is impolite: it creates `chat` on the new connection, and the held message goes
/// out the moment its announcement arrives (Chromium still calls the channel "connecting" to
/// the page then; see `RemoteOpenGrace` in the daemon).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_rebinding_toward_an_impolite_browser_recovers_by_reinvoke() -> Result<()> {
    repair("impolite", Cut::Rebinding).await
}

/// The page is polite: the daemon creates `chat` on the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_rebinding_toward_a_polite_browser_recovers_by_reinvoke() -> Result<()> {
    repair("polite", Cut::Rebinding).await
}

/// All UDP is blocked, so both sides talk through coturn over TCP; the daemon's TURN stream is
/// reset. Its relayed path is gone at once (the daemon notices the dropped stream, not only
/// ICE consent 5 s later); toward a browser that means a failed connection and a re-invoke,
/// whose new connection allocates again over a new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_turn_stream_toward_a_browser_recovers_by_reinvoke() -> Result<()> {
    repair("impolite", Cut::TurnStream).await
}

/// What breaks the connected path.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// The daemon's home gets a new public address (STUN path).
    Rebinding,
    /// The daemon's TCP stream to coturn is reset (relayed path, all UDP blocked).
    TurnStream,
}

/// The daemon is connected to a page of `role` when `cut` breaks the path; a message sent
/// during the repair and one after it must both be acknowledged by the page.
async fn repair(role: &str, cut: Cut) -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    let mut lab = Lab::build(Nat::Cone)?;
    lab.start_turn(TurnAuth::Static)?;
    if matches!(cut, Cut::TurnStream) {
        lab.block_all_udp()?;
    }
    lab.start_nats()?;
    let env = TestEnv::new()?;
    let nats = lab.nats_url();
    let d = lab
        .daemon(&env, "d", Home::A, &["--nats", &nats, "--driver", "nats"])
        .await?;
    // The page must find an id of `role` against the daemon's (the id depends on the room):
    // a room where the daemon's id is extreme can make that nearly impossible in 100 joins.
    let (room, _) = browser::balanced_room(&d, "repair").await?;
    let ice = match cut {
        Cut::Rebinding => IceServer {
            urls: vec![lab.stun_url()],
            username: None,
            credential: None,
        },
        Cut::TurnStream => IceServer {
            urls: vec![lab.turn_tcp_url()],
            username: Some(netlab::TURN_USER.into()),
            credential: Some(netlab::TURN_PASSWORD.into()),
        },
    };
    let page_ice =
        json!([{"urls": ice.urls, "username": ice.username, "credential": ice.credential}]);
    let opts = JoinOptions {
        ice_servers: Some(vec![ice]),
        connection_timeout: Some(TIMEOUT_MS),
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
    // The page's role decides which side creates `chat` on the new connection (§7.1); the
    // page traces its channels so a failure shows what the browser saw.
    let bid = b
        .join(
            &lab.nats_ws_url(),
            &room,
            Some((m.id.as_str(), role)),
            json!({"options": {"iceServers": page_ice, "connectionTimeout": TIMEOUT_MS / 1000}, "dcTrace": true}),
        )
        .await?;
    m.wait_for("the browser connected", T, |e| {
        is(e, "connection:connected", &bid)
    })
    .await?;
    m.open("chat").await?;
    if matches!(cut, Cut::TurnStream) {
        let path = path_to(&m, &room, &bid).await?;
        assert_eq!(
            path, "relay/relay",
            "UDP is blocked: only coturn over TCP can carry it"
        );
    }
    match cut {
        // Its NAT state is gone: what the browser sends to the old mapping goes nowhere.
        Cut::Rebinding => lab.rebind_nat(Home::A, "203.0.113.31")?,
        Cut::TurnStream => {
            let out = Command::new("ip")
                .args(["netns", "exec", &lab.host_ns(Home::A), "ss", "-K", "-t"])
                .args(["dst", &format!("{}:3478", netlab::TURN_IP)])
                .output()
                .context("running ss")?;
            if !out.status.success() {
                bail!("ss -K: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
    let cut_at = Instant::now();

    m.wait_for("the old connection failed", Duration::from_secs(20), |e| {
        is(e, "connection:failed", &bid)
    })
    .await?;
    // Sent between the failure and the new connection: it waits for the new connection
    // (`RoomDirectory::hold`) instead of failing at once because the peer is `failed`.
    let sender = d.client().await?;
    let (held_room, held_to) = (room.clone(), bid.clone());
    let mark = b.mark();
    let held = tokio::spawn(async move {
        sender
            .send_text(
                &held_room,
                "chat",
                "held while reconnecting",
                SendOptions::to(held_to),
            )
            .await
    });
    m.wait_for("a new connection", Duration::from_secs(30), |e| {
        is(e, "connection:connected", &bid)
    })
    .await
    .with_context(|| format!("{}\n{}", d.log_tail(), b.diagnostics()))?;
    println!(
        "path_change_browser: {cut:?}: connected again {:?} after the cut",
        cut_at.elapsed()
    );
    m.wait_for("chat open again", T, |e| {
        is(e, "channel:open", &bid) && field(e, "label") == Some("chat")
    })
    .await?;
    let daemon_id = m.id.clone();
    b.call(
        "waitChannel",
        json!({ "label": "chat", "peer": daemon_id }),
        T,
    )
    .await?;
    // It must reach the page and be reported ok: never a failure for a message the page got.
    let res = held.await??;
    let peers = res.peers.unwrap_or_default();
    if peers.len() != 1 || !peers[0].ok {
        bail!(
            "the message sent while reconnecting was not acknowledged: {peers:?}\n{}\n{}",
            d.log_tail(),
            b.diagnostics()
        );
    }
    b.wait_from(
        mark,
        "the held text at the browser",
        Duration::from_secs(10),
        |v| {
            v["ev"] == "message"
                && v["peer"] == daemon_id.as_str()
                && v["text"] == "held while reconnecting"
        },
    )
    .await?;
    let mark = b.mark();
    let res = m
        .client
        .send_text(
            &room,
            "chat",
            "after the move",
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
            v["ev"] == "message" && v["peer"] == daemon_id.as_str() && v["text"] == "after the move"
        },
    )
    .await?;
    b.quit().await?;
    Ok(())
}

/// The selected pair's candidate types at the daemon ("local/remote").
async fn path_to(m: &Member, room: &str, peer: &str) -> Result<String> {
    let stats = m
        .client
        .peers(room)
        .await?
        .into_iter()
        .find(|p| p.id == peer)
        .and_then(|p| p.stats);
    match stats {
        Some(s) => Ok(s.path()),
        None => bail!("no stats for the browser in `peers`"),
    }
}
