//! Interop with a real browser: headless Chromium (Debian's `/usr/bin/chromium`) runs the REAL
//! Peerix 0.7.0 library (`shared/peerix-0.7.0/peerix.esm.js`) and signals through a real
//! nats-server over websocket with `@nats-io/nats-core`; the daemon uses the same server over the
//! client port. Every Peerix default is on (namespace hashing, compression, encryption) and
//! Chromium keeps its default mDNS host-candidate hiding except where a test says otherwise.
//! The page is driven command by command (`peerix_system_tests::browser`).
//!
//! Here: connecting in both join orders and both politeness roles of the browser, with text, JSON
//! and bytes both ways; mDNS hiding off; a daemon that cannot resolve mDNS names (prflx path); and
//! a fake camera shared by the browser (renegotiation) in both join orders. Bulk transfers and
//! aborts are in `browser_transfers.rs`, channels opened at connection time in
//! `browser_channels.rs`.
//!
//! Prerequisites (installed by `scripts/test-all.sh`): `chromium` (apt), `node`, and
//! `npm install` in `tests/browser`. These tests FAIL, not skip, when one is missing.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_system_tests::browser::{BrowserOpts, Order, Session, SessionOpts, T};
use peerix_system_tests::peerix_client::{MessageAssembler, MessageData, SendOptions};
use peerix_system_tests::peerix_ipc_proto::{rmpv, SendResult};
use peerix_system_tests::{field, is, sha256_hex, value};
use serde_json::{json, Value};

/// Fails unless the daemon's send was acknowledged by exactly the browser.
fn delivered(res: &SendResult, s: &Session, what: &str) -> Result<()> {
    let peers = res.peers.clone().unwrap_or_default();
    if peers.len() != 1 || peers[0].id != s.peer || !peers[0].ok {
        bail!(
            "{what}: the browser did not acknowledge: {peers:?}\n{}",
            s.diagnostics()
        );
    }
    Ok(())
}

/// Deterministic test bytes.
fn test_bytes(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// Text, JSON and bytes from the daemon to the browser and back on `label`, every message
/// acknowledged by its receiver and compared.
async fn exchange_all_types(s: &mut Session, label: &str) -> Result<()> {
    let peer = s.peer.clone();
    let to = || SendOptions::to(peer.clone());
    let daemon = s.m.id.clone();
    let room = s.room.clone();

    // Daemon -> browser.
    let mark = s.b.mark();
    let t = Instant::now();
    let res =
        s.m.client
            .send_text(&room, label, "hello from peerixd ✓", to())
            .await?;
    delivered(&res, s, "text")?;
    let text_ms = t.elapsed().as_millis();
    let obj =
        json!({"kind": "greeting", "n": 42, "list": [1, "two", null], "nested": {"ok": true}});
    let res =
        s.m.client
            .send_json(&room, label, rmpv::ext::to_value(&obj)?, to())
            .await?;
    delivered(&res, s, "json")?;
    let bytes = test_bytes(200_000, 7);
    let res =
        s.m.client
            .send_bytes(&room, label, bytes.clone(), to())
            .await?;
    delivered(&res, s, "bytes")?;
    let from_daemon = |v: &Value, ty: &str| {
        v["ev"] == "message"
            && v["label"] == label
            && v["peer"] == daemon.as_str()
            && v["type"] == ty
    };
    let m =
        s.b.wait_from(mark, "the daemon's text", T, |v| from_daemon(v, "text"))
            .await?;
    assert_eq!(m["text"], "hello from peerixd ✓", "{m}");
    let m =
        s.b.wait_from(mark, "the daemon's JSON", T, |v| from_daemon(v, "json"))
            .await?;
    assert_eq!(m["json"], obj, "{m}");
    let m =
        s.b.wait_from(mark, "the daemon's bytes", T, |v| from_daemon(v, "bytes"))
            .await?;
    assert_eq!(m["size"], bytes.len(), "{m}");
    assert_eq!(m["sha256"], sha256_hex(&bytes), "bytes corrupted: {m}");

    // Browser -> daemon.
    let r =
        s.b.call(
            "send",
            json!({"label": label, "to": daemon, "text": "hello from chromium ✓"}),
            T,
        )
        .await?;
    let browser_text_ms = r["ack_ms"].clone();
    let ev =
        s.m.wait_for("the browser's text", T, |e| {
            is(e, "channel:message", &peer) && field(e, "label") == Some(label)
        })
        .await
        .with_context(|| s.diagnostics())?;
    assert_eq!(field(&ev, "type"), Some("text"), "{ev:?}");
    assert_eq!(field(&ev, "data"), Some("hello from chromium ✓"), "{ev:?}");
    let obj2 = json!({"from": "chromium", "values": [1.5, -2, "x"], "deep": {"a": {"b": [true]}}});
    s.b.call(
        "send",
        json!({"label": label, "to": daemon, "json": obj2}),
        T,
    )
    .await?;
    let ev =
        s.m.wait_for("the browser's JSON", T, |e| {
            is(e, "channel:message", &peer) && field(e, "label") == Some(label)
        })
        .await
        .with_context(|| s.diagnostics())?;
    assert_eq!(field(&ev, "type"), Some("json"), "{ev:?}");
    let got: Value =
        rmpv::ext::from_value(value(&ev, "data").cloned().unwrap_or(rmpv::Value::Nil))?;
    assert_eq!(got, obj2);
    let r = s
        .b
        .call(
            "send",
            json!({"label": label, "to": daemon, "bytes": {"size": 300_000, "seed": 11}, "info": {"name": "x.bin"}}),
            T,
        )
        .await?;
    let mut asm = MessageAssembler::new();
    let msg = loop {
        let ev =
            s.m.wait_for("the browser's bytes", T, |e| {
                is(e, "channel:message", &peer) && field(e, "label") == Some(label)
            })
            .await
            .with_context(|| s.diagnostics())?;
        if let Some(msg) = asm.push(&ev)? {
            break msg;
        }
    };
    let MessageData::Bytes(got) = &msg.data else {
        bail!("expected bytes, got {:?}", msg.kind)
    };
    assert_eq!(got.len(), 300_000);
    assert_eq!(
        sha256_hex(got),
        r["sha256"].as_str().unwrap_or(""),
        "bytes corrupted"
    );
    let info = msg.info.as_ref().map(|v| v.to_string()).unwrap_or_default();
    assert!(info.contains("x.bin"), "info lost: {info}");
    eprintln!(
        "[{}] daemon text acked in {text_ms} ms; browser text acked in {browser_text_ms} ms",
        s.room
    );
    Ok(())
}

/// The browser's local candidates as Chromium gathered them (mDNS names or IPs).
async fn local_candidates(s: &mut Session) -> Result<String> {
    let st = s.b.call("state", json!({ "peer": s.m.id }), T).await?;
    eprintln!(
        "[{}] selected pair {}; browser local candidates {}",
        s.room, st["selected_pair"], st["local_candidates"]
    );
    Ok(st["local_candidates"].to_string())
}

async fn connect_and_exchange(tag: &str, order: Order, role: &'static str) -> Result<()> {
    let mut s = Session::connect(
        tag,
        SessionOpts {
            order,
            role: Some(role),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(s.b.ready["mdns_hiding"], true);
    let st = s.b.call("state", json!({ "peer": s.m.id }), T).await?;
    assert_eq!(st["polite"], role == "polite", "{st}");
    let locals = local_candidates(&mut s).await?;
    assert!(
        locals.contains(".local "),
        "Chromium did not hide host IPs behind mDNS: {locals}"
    );
    s.open_from_daemon("chat").await?;
    exchange_all_types(&mut s, "chat").await?;
    // A channel opened by the browser this time.
    s.b.call("open", json!({ "label": "notes" }), T).await?;
    s.wait_channel("notes").await?;
    exchange_all_types(&mut s, "notes").await?;
    s.finish().await
}

/// Daemon first; the browser is impolite (it creates channels itself).
#[tokio::test]
async fn daemon_first_browser_impolite() -> Result<()> {
    connect_and_exchange("df-impolite", Order::DaemonFirst, "impolite").await
}

/// Daemon first; the browser is polite (it asks the daemon for channels, control event 2).
#[tokio::test]
async fn daemon_first_browser_polite() -> Result<()> {
    connect_and_exchange("df-polite", Order::DaemonFirst, "polite").await
}

/// Browser first; the browser is impolite.
#[tokio::test]
async fn browser_first_browser_impolite() -> Result<()> {
    connect_and_exchange("bf-impolite", Order::BrowserFirst, "impolite").await
}

/// Browser first; the browser is polite.
#[tokio::test]
async fn browser_first_browser_polite() -> Result<()> {
    connect_and_exchange("bf-polite", Order::BrowserFirst, "polite").await
}

/// Chromium with mDNS host-candidate hiding disabled (real IPs in candidates).
#[tokio::test]
async fn chat_without_mdns_hiding() -> Result<()> {
    let mut s = Session::connect(
        "nomdns",
        SessionOpts {
            role: Some("polite"),
            browser: BrowserOpts {
                no_mdns: true,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(s.b.ready["mdns_hiding"], false);
    let locals = local_candidates(&mut s).await?;
    assert!(
        !locals.contains(".local "),
        "mDNS names despite --disable-features: {locals}"
    );
    s.open_from_daemon("chat").await?;
    exchange_all_types(&mut s, "chat").await?;
    s.finish().await
}

/// mDNS hiding on in Chromium and mDNS resolution off in the daemon: the browser's `.local`
/// candidates are unusable, so the connection must come up through the peer-reflexive candidate
/// learnt from Chromium's connectivity checks.
#[tokio::test]
async fn chat_with_mdns_unresolved_by_daemon() -> Result<()> {
    let mut s = Session::connect(
        "prflx",
        SessionOpts {
            role: Some("impolite"),
            daemon_mdns: false,
            ..Default::default()
        },
    )
    .await?;
    let locals = local_candidates(&mut s).await?;
    assert!(locals.contains(".local "), "{locals}");
    s.open_from_daemon("chat").await?;
    exchange_all_types(&mut s, "chat").await?;
    s.finish().await
}

/// The browser shares a fake camera: the renegotiation (browser offer over the control channel,
/// daemon answer) must complete, with no error on either side, and the data channels keep
/// working after it and after unshare.
async fn share_camera(tag: &str, order: Order) -> Result<()> {
    let mut s = Session::connect(
        tag,
        SessionOpts {
            order,
            role: Some("polite"),
            browser: BrowserOpts {
                media: true,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await?;
    share_and_unshare(&mut s).await?;
    // Again with the browser impolite (same order, a new connection).
    s.m.client.close(&s.room, "chat", None).await?;
    s.rejoin(order, Some("impolite")).await?;
    share_and_unshare(&mut s).await?;
    s.finish().await
}

async fn share_and_unshare(s: &mut Session) -> Result<()> {
    s.open_from_daemon("chat").await?;
    exchange_all_types(s, "chat").await?;
    let daemon = s.m.id.clone();
    let t = Instant::now();
    let r =
        s.b.call(
            "share",
            json!({ "label": "camera" }),
            Duration::from_secs(40),
        )
        .await
        .with_context(|| format!("daemon log:\n{}", s.d.log_tail()))?;
    eprintln!("[{}] share: {r} ({} ms)", s.room, t.elapsed().as_millis());
    let st = s.b.call("state", json!({ "peer": daemon }), T).await?;
    eprintln!("[{}] after share: {st}", s.room);
    if st["signalingState"] != "stable" || st["connectionState"] != "connected" {
        bail!("renegotiation did not settle: {st}\n{}", s.diagnostics());
    }
    s.b.assert_no_errors()
        .with_context(|| format!("daemon log:\n{}", s.d.log_tail()))?;
    s.errors.assert_none(&s.d)?;
    exchange_all_types(s, "chat").await?;
    // A new channel after the renegotiation.
    s.b.call("open", json!({ "label": "after-share" }), T)
        .await?;
    s.wait_channel("after-share").await?;
    let r =
        s.b.call(
            "unshare",
            json!({ "label": "camera" }),
            Duration::from_secs(40),
        )
        .await
        .with_context(|| format!("daemon log:\n{}", s.d.log_tail()))?;
    eprintln!("[{}] unshare: {r}", s.room);
    let st = s.b.call("state", json!({ "peer": daemon }), T).await?;
    if st["signalingState"] != "stable" || st["connectionState"] != "connected" {
        bail!(
            "renegotiation after unshare did not settle: {st}\n{}",
            s.diagnostics()
        );
    }
    exchange_all_types(s, "after-share").await?;
    s.b.call("close", json!({ "label": "after-share" }), T)
        .await?;
    s.errors.assert_none(&s.d)?;
    s.b.assert_no_errors()
}

/// Fake camera, daemon joined first.
#[tokio::test]
async fn share_camera_daemon_first() -> Result<()> {
    share_camera("share-df", Order::DaemonFirst).await
}

/// Fake camera, browser joined first (the daemon answered the first offer: DTLS roles differ).
#[tokio::test]
async fn share_camera_browser_first() -> Result<()> {
    share_camera("share-bf", Order::BrowserFirst).await
}
