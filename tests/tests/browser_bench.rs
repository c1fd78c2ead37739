//! Browser figures for BENCHMARKS.md: real Peerix 0.7.0 in headless Chromium against peerixd,
//! beside two Chromium pages running the same Peerix, in one run on one machine, trials
//! interleaved. A measurement, not a test: it asserts nothing about speed and is `#[ignore]`d;
//! run it with
//!
//! ```sh
//! cargo build --release --bins
//! PEERIX_BIN_DIR=target/release cargo test --release -p peerix-system-tests --test browser_bench \
//!     -- --ignored --nocapture
//! ```
//!
//! Same start and end points on both sides of each comparison:
//! - join→connected: a joining page's `join` command until its Peerix reports the connection
//!   (`waitConnected`), against a page already in the room or against the daemon already in it.
//! - 50 MiB: one binary message, from the send call until the receiver's Peerix ack (the page's
//!   `room.send` promise; for the daemon, the client's `send_bytes` reply, which also includes
//!   streaming the 50 MiB to the daemon over its socket).
//! - RTT: a 16-byte text message and its ack, measured by the sender.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_system_tests::browser::{join_nats, nats_daemon, ws_url, Browser, BrowserOpts, T};
use peerix_system_tests::peerix_client::SendOptions;
use peerix_system_tests::{field, is, Member, NatsServer, TestEnv};
use serde_json::{json, Value};

const CONNECT_TRIALS: usize = 10;
const BULK_TRIALS: usize = 3;
const RTT_TRIALS: usize = 50;
const BULK: usize = 50 * 1024 * 1024;
const LABEL: &str = "bench";

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95))
}

fn mib_s(ms: f64) -> f64 {
    (BULK as f64 / 1048576.0) / (ms / 1000.0)
}

/// The joining page enters `room` and waits for its connection; returns the elapsed ms.
async fn join_and_connect(j: &mut Browser, ws: &str, room: &str) -> Result<f64> {
    let t = Instant::now();
    j.join(ws, room, None, Value::Null).await?;
    j.call("waitConnected", json!({}), T).await?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

async fn open_both(j: &mut Browser, other: &mut Browser, other_id: &str, j_id: &str) -> Result<()> {
    j.call("open", json!({ "label": LABEL }), T).await?;
    other.call("open", json!({ "label": LABEL }), T).await?;
    j.call(
        "waitChannel",
        json!({ "label": LABEL, "peer": other_id }),
        T,
    )
    .await?;
    other
        .call("waitChannel", json!({ "label": LABEL, "peer": j_id }), T)
        .await?;
    Ok(())
}

async fn page_send(b: &mut Browser, to: &str, what: Value) -> Result<f64> {
    let mut args = json!({ "label": LABEL, "to": to });
    if let (Value::Object(a), Value::Object(w)) = (&mut args, what) {
        a.extend(w);
    }
    let r = b.call("send", args, Duration::from_secs(120)).await?;
    r["ack_ms_exact"]
        .as_f64()
        .or_else(|| r["ack_ms"].as_f64())
        .context("send reply without ack time")
}

async fn daemon_send(m: &Member, to: &str, data: Vec<u8>, text: bool) -> Result<f64> {
    let t = Instant::now();
    let r = if text {
        let s = String::from_utf8(data).context("text")?;
        m.client
            .send_text(&m.room, LABEL, &s, SendOptions::to(to.to_string()))
            .await?
    } else {
        m.client
            .send_bytes(&m.room, LABEL, data, SendOptions::to(to.to_string()))
            .await?
    };
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let peers = r.peers.unwrap_or_default();
    if peers.len() != 1 || !peers[0].ok {
        bail!("daemon send failed: {peers:?}");
    }
    Ok(ms)
}

#[derive(Default)]
struct Figures {
    connect_bb: Vec<f64>,
    connect_bd: Vec<f64>,
    bulk_b_to_b: Vec<f64>,
    bulk_b_to_d: Vec<f64>,
    bulk_d_to_b: Vec<f64>,
    rtt_b_to_b: Vec<f64>,
    rtt_b_to_d: Vec<f64>,
    rtt_d_to_b: Vec<f64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand, see the module docs"]
async fn browser_and_daemon_beside_two_browsers() -> Result<()> {
    let env = TestEnv::new()?;
    let nats = NatsServer::start(&[])?;
    let ws = ws_url(&nats);
    let d = nats_daemon(&env, &nats, "d", &[]).await?;
    let mut anchor = Browser::start(&env, "anchor", BrowserOpts::default()).await?;
    let mut j = Browser::start(&env, "joiner", BrowserOpts::default()).await?;
    let room_bb = "bench-bb".to_string();
    let room_bd = "bench-bd".to_string();
    let anchor_id = anchor.join(&ws, &room_bb, None, Value::Null).await?;
    let mut m = join_nats(&d, &room_bd).await?;
    m.open(LABEL).await?;
    let daemon_id = m.id.clone();
    let mut f = Figures::default();

    // join→connected, interleaved: the joiner alternates between the two rooms.
    for _ in 0..CONNECT_TRIALS {
        f.connect_bb
            .push(join_and_connect(&mut j, &ws, &room_bb).await?);
        j.call("leave", Value::Null, T).await?;
        f.connect_bd
            .push(join_and_connect(&mut j, &ws, &room_bd).await?);
        let jid = j.id.clone().unwrap_or_default();
        j.call("leave", Value::Null, T).await?;
        m.wait_for("the joiner gone", T, |e| is(e, "connection:closed", &jid))
            .await?;
        m.backlog.clear();
    }

    // Throughput and round trips, alternating rooms per round.
    for round in 0..BULK_TRIALS {
        // Browser ↔ browser.
        join_and_connect(&mut j, &ws, &room_bb).await?;
        let jid = j.id.clone().unwrap_or_default();
        open_both(&mut j, &mut anchor, &anchor_id, &jid).await?;
        f.bulk_b_to_b.push(
            page_send(
                &mut j,
                &anchor_id,
                json!({ "bytes": { "size": BULK, "seed": round } }),
            )
            .await?,
        );
        f.bulk_b_to_b.push(
            page_send(
                &mut anchor,
                &jid,
                json!({ "bytes": { "size": BULK, "seed": round } }),
            )
            .await?,
        );
        for _ in 0..RTT_TRIALS / BULK_TRIALS {
            f.rtt_b_to_b
                .push(page_send(&mut j, &anchor_id, json!({ "text": "0123456789abcdef" })).await?);
        }
        j.call("leave", Value::Null, T).await?;
        // Browser ↔ daemon.
        join_and_connect(&mut j, &ws, &room_bd).await?;
        let jid = j.id.clone().unwrap_or_default();
        j.call("open", json!({ "label": LABEL }), T).await?;
        j.call(
            "waitChannel",
            json!({ "label": LABEL, "peer": daemon_id }),
            T,
        )
        .await?;
        m.wait_for("bench open at the daemon", T, |e| {
            is(e, "channel:open", &jid) && field(e, "label") == Some(LABEL)
        })
        .await?;
        f.bulk_b_to_d.push(
            page_send(
                &mut j,
                &daemon_id,
                json!({ "bytes": { "size": BULK, "seed": round } }),
            )
            .await?,
        );
        let data: Vec<u8> = (0..BULK).map(|i| (i * 7 + round) as u8).collect();
        f.bulk_d_to_b
            .push(daemon_send(&m, &jid, data, false).await?);
        for _ in 0..RTT_TRIALS / BULK_TRIALS {
            f.rtt_b_to_d
                .push(page_send(&mut j, &daemon_id, json!({ "text": "0123456789abcdef" })).await?);
            f.rtt_d_to_b
                .push(daemon_send(&m, &jid, b"0123456789abcdef".to_vec(), true).await?);
        }
        j.call("leave", Value::Null, T).await?;
        m.wait_for("the joiner gone", T, |e| is(e, "connection:closed", &jid))
            .await?;
        m.backlog.clear();
        while m.events.try_recv().is_ok() {}
    }

    let row = |name: &str, v: &[f64], unit: &str| {
        let (p50, p95) = stats(v.to_vec());
        println!(
            "| {name} | {p50:.2} {unit} | {p95:.2} {unit} | {} |",
            v.len()
        );
    };
    println!("| figure | median | p95 | trials |\n|---|---|---|---|");
    row(
        "join→connected, browser joins a browser",
        &f.connect_bb,
        "ms",
    );
    row("join→connected, browser joins peerixd", &f.connect_bd, "ms");
    let tp = |v: &[f64]| v.iter().map(|ms| mib_s(*ms)).collect::<Vec<_>>();
    row("50 MiB browser→browser", &tp(&f.bulk_b_to_b), "MiB/s");
    row("50 MiB browser→peerixd", &tp(&f.bulk_b_to_d), "MiB/s");
    row("50 MiB peerixd→browser", &tp(&f.bulk_d_to_b), "MiB/s");
    row("16 B RTT browser→browser", &f.rtt_b_to_b, "ms");
    row("16 B RTT browser→peerixd", &f.rtt_b_to_d, "ms");
    row("16 B RTT peerixd→browser", &f.rtt_d_to_b, "ms");
    println!(
        "chromium {}; peerix {}",
        anchor.ready["browser"], anchor.ready["peerix_sha256"]
    );
    Ok(())
}
