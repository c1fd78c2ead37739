//! The groups compared with the raw baseline in two processes (`rawproc.rs`): throughput per
//! message size, pipelined small messages, round trips, setup; and two Chromium pages running
//! the real Peerix, in the same run.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use peerix_client::{MessageAssembler, SendOptions};
use peerix_ipc_proto::{JoinArgs, OpenArgs};
use peerix_system_tests::browser::{ws_url, Browser, BrowserOpts, T};
use peerix_system_tests::{field, DaemonProc, NatsServer, TestEnv};
use serde_json::{json, Value};

use crate::rawproc::{payload, RawProcs};
use crate::report::Row;
use crate::stats::Summary;
use crate::{full, mb_per_s, one, procfs, size_name, summary, Run};

/// Label of the setup trials' channel, opened room-wide by the first member before the second
/// joins, so the daemon creates it as soon as the connection's control channel is open; the raw
/// offerer creates it at the same point.
const SETUP_LABEL: &str = "setup";

/// Throughput through the full path and through the raw pair, per message size, and pipelined
/// 1 KiB messages.
pub async fn throughput(run: &mut Run) -> Result<()> {
    let sizes: [(usize, usize); 5] = [
        (16 << 10, run.pick(30, 10)),
        (256 << 10, run.pick(15, 5)),
        (1 << 20, run.pick(10, 4)),
        (4 << 20, run.pick(7, 3)),
        (32 << 20, run.pick(5, 2)),
    ];
    let mut pair = full::Pair::start(&["bench"]).await?;
    let mut raw = RawProcs::start().await?;
    raw.connect(0, &["bench"]).await?;
    let fairness = raw
        .check_fair(procfs::pid_of_socket(&pair._da.socket)?)
        .await
        .context("the raw baseline does not run like the daemon")?;
    run.details.insert("fairness".into(), fairness);
    run.details.insert(
        "clients_runtime".into(),
        json!(crate::fair::flavor_name(&tokio::runtime::Handle::current())),
    );
    let mut full_pts = Vec::new();
    let mut raw_pts = Vec::new();
    let mut detail = Vec::new();
    let ipc = daemon_ipc_config();
    for (i, (len, trials)) in sizes.into_iter().enumerate() {
        let data = payload(len);
        pair.transfer("bench", &data).await?;
        raw.transfer(0, "bench", len, 1).await?;
        if i == 0 {
            // The daemons' first messages, while their replay buffers fill: shown beside the
            // steady figure, not judged (see `steady_warmup`).
            let (f, r) = interleaved(&mut pair, &mut raw, &data, trials).await?;
            let (fs, rs) = (summary(&f)?, summary(&r)?);
            detail.push(json!({"bytes": len, "cold": true, "full_mb_s": f, "raw_mb_s": r}));
            run.add(
                Row::new(
                    "throughput",
                    &format!(
                        "full path, {} message, daemons' first messages (replay buffer filling)",
                        size_name(len)
                    ),
                    "MB/s",
                    fs,
                )
                .baseline("raw pair, 2 processes, same trials", Some(rs))
                .note(
                    "the trials right after the daemons started, before the warm-up of the next \
                     row: every part the receiving daemon keeps for replay is still new memory",
                ),
            );
        }
        let warmup = steady_warmup(len, &ipc);
        for _ in 1..warmup {
            pair.transfer("bench", &data).await?;
            raw.transfer(0, "bench", len, 1).await?;
        }
        let (f, r) = interleaved(&mut pair, &mut raw, &data, trials).await?;
        let fs = summary(&f)?;
        let rs = summary(&r)?;
        full_pts.push((len, fs.median));
        raw_pts.push((len, rs.median));
        detail.push(json!({"bytes": len, "warmup": warmup, "full_mb_s": f, "raw_mb_s": r}));
        let mut row = Row::new(
            "throughput",
            &format!("full path, {} message", size_name(len)),
            "MB/s",
            fs.clone(),
        )
        .baseline("raw pair, 2 processes", Some(rs.clone()));
        row = if len == 32 << 20 {
            let ok = fs.median >= 150.0 && fs.median >= 0.8 * rs.median;
            row.target("≥ 0.8× raw and ≥ 150 MB/s", ok).note(
                "client send_stream → IPC → daemon → WebRTC → daemon → IPC → client assembled",
            )
        } else {
            row.target("≥ 0.8× raw", fs.median >= 0.8 * rs.median)
        };
        run.add(row);
    }
    // Pipelined small messages: many in flight, as a chat or telemetry client sends them.
    // 20,000, not 2,000: 2 MB fit in the raw pair's SCTP buffers, so the raw side timed how
    // fast it could queue them (36.8 k msg/s), not a sustained rate (8.1 k msg/s at 20,000).
    // Two ways a client pipelines: one `send` per message with many unanswered, and `batch`
    // requests of several messages (BENCHMARKS.md, session 14, for the windows).
    let (n, trials) = (run.pick(20_000, 5_000), run.pick(5, 3));
    let ways = [(1, PIPE_WINDOW), (PIPE_BATCH, PIPE_WINDOW / PIPE_BATCH)];
    for (batch, window) in ways {
        pipelined(&mut pair, "bench", 1024, 100, batch, window).await?;
    }
    raw.transfer(0, "bench", 1024, 100).await?;
    let mut full: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    let mut r = Vec::new();
    for _ in 0..trials {
        for (i, (batch, window)) in ways.iter().enumerate() {
            let d = pipelined(&mut pair, "bench", 1024, n, *batch, *window).await?;
            full[i].push(n as f64 / d.as_secs_f64());
        }
        let d = raw.transfer(0, "bench", 1024, n).await?;
        r.push(n as f64 / d.as_secs_f64());
    }
    let rs = summary(&r)?;
    for ((batch, window), f) in ways.iter().zip(&full) {
        let fs = summary(f)?;
        let (what, how) = if *batch == 1 {
            (
                "pipelined".to_string(),
                format!("up to {window} send_bytes in flight"),
            )
        } else {
            (
                format!("in batches of {batch}"),
                format!("up to {window} send_batch requests of {batch} in flight"),
            )
        };
        run.add(
            Row::new(
                "throughput",
                &format!("full path, {n} × 1 KiB {what}"),
                "msg/s",
                fs.clone(),
            )
            .baseline("raw pair, 2 processes", Some(rs.clone()))
            .target("≥ 0.7× raw", fs.median >= 0.7 * rs.median)
            .note(format!(
                "client: {how}, each message acknowledged by the receiving Peerix; raw: the same \
                 messages sent back to back with the daemon's pacing"
            )),
        );
        detail.push(json!({"pipelined_1k": n, "batch": batch, "window": window,
            "full_msg_s": f, "raw_msg_s": r}));
    }
    run.details.insert("throughput".into(), json!(detail));
    run.tput_series = vec![
        (
            "full path (client → daemon → WebRTC → daemon → client)".into(),
            full_pts,
        ),
        (
            "raw pair in 2 processes (mimalloc, daemon's reactors)".into(),
            raw_pts,
        ),
    ];
    drop(raw);
    drop(pair);
    Ok(())
}

/// The IPC settings of the daemons the bench starts: the defaults and the `PEERIX_*` variables
/// they inherit from the bench.
pub(crate) fn daemon_ipc_config() -> peerixd::config::IpcConfig {
    peerixd::config::load(None, &Default::default(), true)
        .unwrap_or_default()
        .ipc
}

/// `trials` transfers of `data` on each path, full and raw interleaved so that background load
/// hits both alike; MB/s of each.
async fn interleaved(
    pair: &mut full::Pair,
    raw: &mut RawProcs,
    data: &[u8],
    trials: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut f, mut r) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        f.push(mb_per_s(data.len(), pair.transfer("bench", data).await?));
        r.push(mb_per_s(
            data.len(),
            raw.transfer(0, "bench", data.len(), 1).await?,
        ));
    }
    Ok((f, r))
}

/// Transfers of `len` bytes on each path before a size's timed trials (at least one): enough
/// for the receiving daemon's replay buffer (`ipc.replay_bytes`, `ipc.replay_events`) to be
/// full of parts of this size, so that the trials measure a daemon that has been running,
/// whose new parts take the memory of evicted ones. The raw pair gets as many.
///
/// Why: until then every part the daemon keeps is memory it has not touched before, and its
/// page faults lie on the message's path (~10 µs of daemon B's actor thread per 16 KiB
/// message). With one warm-up transfer, the 16 KiB, 256 KiB and 1 MiB rows all ran in that
/// phase; in 12 runs the 16 KiB row was 0.06 higher after this warm-up in every one, and no
/// higher when the replay buffer was 256 KiB (BENCHMARKS.md, session 24).
pub(crate) fn steady_warmup(len: usize, ipc: &peerixd::config::IpcConfig) -> usize {
    let len = len.max(1) as u64;
    let parts = len.div_ceil(ipc.inline_message_limit.max(1));
    let by_bytes = ipc.replay_bytes.div_ceil(len);
    let by_events = (ipc.replay_events as u64).div_ceil(parts);
    usize::try_from(by_bytes.min(by_events).max(1)).unwrap_or(1)
}

/// Messages in flight when a client pipelines one `send` per message; a `batch` client keeps
/// as many in flight, in requests of [`PIPE_BATCH`]. 256, not 64: with 64 unanswered the client
/// waited on acks (BENCHMARKS.md, session 14: 64 → 256 gained a third; more gained nothing).
pub(crate) const PIPE_WINDOW: usize = 256;
/// Messages per `send_batch` request in the batched row.
const PIPE_BATCH: usize = 32;

/// `n` messages of `size` bytes A→B, `batch` per request (`send_bytes` when 1, else
/// `send_batch`), with up to `window` requests in flight; the time until B's client had all of
/// them.
pub(crate) async fn pipelined(
    pair: &mut full::Pair,
    label: &str,
    size: usize,
    n: usize,
    batch: usize,
    window: usize,
) -> Result<Duration> {
    let data = payload(size);
    let a = std::sync::Arc::clone(&pair.a);
    let room = pair.room.clone();
    let b_id = pair.b_id.clone();
    let a_id = pair.a_id.clone();
    let start = Instant::now();
    let requests = (0..n).step_by(batch).map(|first| (n - first).min(batch));
    let send = futures::stream::iter(requests)
        .map(|k| {
            let (a, room, to, data) = (a.clone(), room.clone(), b_id.clone(), data.clone());
            async move {
                if k == 1 {
                    let r = a
                        .send_bytes(&room, label, data, SendOptions::to(to))
                        .await?;
                    return anyhow::Ok(r.peers.as_ref().is_some_and(|p| p.iter().all(|p| p.ok)));
                }
                let r = a
                    .send_batch(&room, label, vec![data; k], SendOptions::to(to))
                    .await?;
                anyhow::Ok(r.peers.iter().all(|p| p.ok && p.delivered == k as u64))
            }
        })
        .buffer_unordered(window)
        .try_collect::<Vec<bool>>();
    let events = &mut pair.b_events;
    let recv = async move {
        let mut asm = MessageAssembler::new();
        let mut got = 0;
        while got < n {
            let ev = full::next_event(events, "pipelined messages at b", |e| {
                e.name == "channel:message"
                    && field(e, "label") == Some(label)
                    && field(e, "peer") == Some(a_id.as_str())
            })
            .await?;
            if asm
                .push_owned(ev)
                .context("assembling a message")?
                .is_some()
            {
                got += 1;
            }
        }
        anyhow::Ok(Instant::now())
    };
    let (sent, got) = tokio::join!(send, recv);
    let end = got?;
    if !sent?.into_iter().all(|ok| ok) {
        bail!("a pipelined message was not acknowledged");
    }
    Ok(end.duration_since(start))
}

/// 16-byte round trips through the full path and the raw pair.
pub async fn rtt(run: &mut Run) -> Result<()> {
    let (warm, n) = (run.pick(50, 20), run.pick(1000, 200));
    let mut pair = full::Pair::start(&["rtt"]).await?;
    let mut raw = RawProcs::start().await?;
    raw.connect(0, &["rtt"]).await?;
    // Interleaved in blocks, so that background load hits both alike.
    let blocks = 4;
    let (mut f, mut r) = (Vec::new(), Vec::new());
    for _ in 0..blocks {
        f.extend(pair.rtt("rtt", warm, n / blocks).await?);
        r.extend(raw.rtt(0, "rtt", warm, n / blocks).await?);
    }
    drop(raw);
    let fs = summary(&f)?;
    let rs = summary(&r)?;
    run.add(
        Row::new(
            "rtt",
            "full path RTT, 16 B text (p50 / p95)",
            "ms",
            fs.clone(),
        )
        .baseline("raw pair, 2 processes", Some(rs.clone()))
        .target("p50 ≤ 0.3 ms", fs.median <= 0.3),
    );
    run.add(
        Row::new("rtt", "full path RTT p99", "ms", one(fs.p99))
            .baseline("raw p99", Some(one(rs.p99)))
            .target("p99 ≤ 1 ms", fs.p99 <= 1.0),
    );
    run.add(
        Row::new(
            "rtt",
            "added by IPC + daemons per round trip (p50 full − p50 raw)",
            "ms",
            one(fs.median - rs.median),
        )
        .note("two IPC hops and two daemon hops each way"),
    );
    run.details.insert(
        "rtt".into(),
        json!({"full_ms": fs, "raw_ms": rs, "n": n, "warmup_per_block": warm, "blocks": blocks}),
    );
    Ok(())
}

/// Times of one full-path setup trial, in ms from the second member's `join` request.
struct SetupTimes {
    connected_ms: f64,
    user_open_ms: f64,
    timeline: Vec<(char, String, f64)>,
}

/// One trial on two running daemons: A joins `room` and opens [`SETUP_LABEL`] room-wide; then
/// B's client sends `join`, and the clock runs until both clients saw `connection:connected`,
/// and until both saw `channel:open` of that label.
async fn setup_trial(da: &DaemonProc, db: &DaemonProc, room: &str) -> Result<SetupTimes> {
    let ac = da.client().await?;
    let mut aev = ac.subscribe(&["*"], Some(room)).await?;
    // Each room has its own Peerix id (not the daemon's `welcome` id).
    let a_id = ac.join(JoinArgs::new(room)).await?.id;
    ac.open(OpenArgs::new(room, SETUP_LABEL)).await?;
    let bc = db.client().await?;
    let mut bev = bc.subscribe(&["*"], Some(room)).await?;
    let t0 = Instant::now();
    let join = bc.join(JoinArgs::new(room));
    tokio::pin!(join);
    let mut b_id: Option<String> = None;
    let mut timeline = Vec::new();
    // [a connected, b connected, a open, b open], ms from t0.
    let mut at = [None::<f64>; 4];
    let deadline = tokio::time::Instant::now() + full::STEP;
    let waited: Result<()> = async {
        while at.iter().any(Option::is_none) || b_id.is_none() {
            let (side, ev) = tokio::select! {
                r = &mut join, if b_id.is_none() => {
                    b_id = Some(r?.id);
                    continue;
                }
                e = aev.recv() => ('a', e),
                e = bev.recv() => ('b', e),
                _ = tokio::time::sleep_until(deadline) => bail!("timed out after {:?} waiting for setup", full::STEP),
            };
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let ev = ev.ok_or_else(|| anyhow!("event stream of {side} ended"))?;
            let from_other = match side {
                'a' => field(&ev, "peer").is_some() && field(&ev, "peer") != Some(a_id.as_str()),
                _ => field(&ev, "peer") == Some(a_id.as_str()),
            };
            let base = if side == 'a' { 0 } else { 1 };
            if from_other && ev.name == "connection:connected" && at[base].is_none() {
                at[base] = Some(ms);
            }
            if from_other
                && ev.name == "channel:open"
                && field(&ev, "label") == Some(SETUP_LABEL)
                && at[2 + base].is_none()
            {
                at[2 + base] = Some(ms);
            }
            timeline.push((side, ev.name, ms));
        }
        Ok(())
    }
    .await;
    // Leave in any case so a failed trial does not linger into the next one.
    let _ = ac.leave(room).await;
    let _ = bc.leave(room).await;
    waited?;
    let t = |i: usize| at[i].unwrap_or(f64::NAN);
    Ok(SetupTimes {
        connected_ms: t(0).max(t(1)),
        user_open_ms: t(2).max(t(3)),
        timeline,
    })
}

/// join request → connected and → first user channel open, local and NATS drivers, beside
/// the raw pair's `new` → connected and → first user channel open (2 processes).
pub async fn setup(run: &mut Run) -> Result<()> {
    let trials = run.pick(15, 5);
    let mut raw = RawProcs::start().await?;
    // The first connection of a process pays one-off costs; the daemons are warm too.
    raw.connect(1000, &[SETUP_LABEL]).await?;
    raw.close(1000).await?;
    let (mut raw_conn, mut raw_open) = (Vec::new(), Vec::new());
    let mut detail = serde_json::Map::new();
    let mut full_rows = Vec::new();
    for driver in ["local", "nats"] {
        let env = TestEnv::new()?;
        let nats = if driver == "nats" {
            Some(NatsServer::start(&[])?)
        } else {
            None
        };
        let extra = nats.as_ref().map(full::nats_args).unwrap_or_default();
        let da = full::daemon(&env, "sa", &extra).await?;
        let db = full::daemon(&env, "sb", &extra).await?;
        let (mut c, mut o, mut tl, mut failed) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // One untimed warm-up (first room of a daemon pays one-off costs).
        if let Err(e) = setup_trial(&da, &db, &format!("warm-{driver}")).await {
            eprintln!("  setup {driver} warm-up failed: {e:#}");
            failed.push(json!({"trial": "warm-up", "error": format!("{e:#}"), "log_a": da.log_tail(), "log_b": db.log_tail()}));
        }
        for i in 0..trials {
            // Raw and full trials interleaved.
            let conn = raw_conn.len() as u32;
            let s = raw.connect(conn, &[SETUP_LABEL]).await?;
            raw.close(conn).await?;
            raw_conn.push(s.connected_ms);
            raw_open.push(s.user_open_ms);
            match setup_trial(&da, &db, &format!("setup-{driver}-{i}")).await {
                Ok(r) => {
                    c.push(r.connected_ms);
                    o.push(r.user_open_ms);
                    tl.push(r.timeline);
                }
                Err(e) => {
                    eprintln!("  setup {driver} trial {i} failed: {e:#}");
                    failed.push(json!({"trial": i, "error": format!("{e:#}"), "log_a": da.log_tail(), "log_b": db.log_tail()}));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        full_rows.push((driver, summary(&c)?, summary(&o)?, failed.len()));
        detail.insert(
            driver.into(),
            json!({"join_to_connected_ms": c, "join_to_user_open_ms": o, "event_timelines_ms": tl, "failed_trials": failed}),
        );
    }
    let rc = summary(&raw_conn)?;
    let ro = summary(&raw_open)?;
    for (driver, c, o, failed) in full_rows {
        let mut note =
            "from the second member's join request; both clients saw the event".to_string();
        if failed > 0 {
            note += &format!(
                "; {failed} of {trials} trials (+ 1 warm-up) did not finish within {} s (excluded)",
                full::STEP.as_secs()
            );
        }
        run.add(
            Row::new(
                "setup",
                &format!("join request → connection:connected, {driver} driver"),
                "ms",
                c,
            )
            .baseline("raw new → ICE connected", Some(rc.clone()))
            .note(note.clone()),
        );
        run.add(
            Row::new(
                "setup",
                &format!("join request → first user channel open, {driver} driver"),
                "ms",
                o.clone(),
            )
            .baseline("raw new → user channel open", Some(ro.clone()))
            .target(
                "≤ 15 ms median, ≤ 30 ms p95",
                o.median <= 15.0 && o.p95 <= 30.0 && failed == 0,
            )
            .note(note),
        );
    }
    detail.insert("raw_new_to_connected_ms".into(), json!(raw_conn));
    detail.insert("raw_new_to_user_open_ms".into(), json!(raw_open));
    run.details.insert("setup".into(), detail.into());
    Ok(())
}

/// A page's `send` until its Peerix ack, in ms.
pub(crate) async fn page_send(b: &mut Browser, label: &str, to: &str, what: Value) -> Result<f64> {
    let mut args = json!({ "label": label, "to": to });
    if let (Value::Object(a), Value::Object(w)) = (&mut args, what) {
        a.extend(w);
    }
    let r = b.call("send", args, Duration::from_secs(180)).await?;
    r["ack_ms_exact"]
        .as_f64()
        .or_else(|| r["ack_ms"].as_f64())
        .context("send reply without ack time")
}

fn row_median(run: &Run, group: &str, prefix: &str) -> Option<Summary> {
    run.rows
        .iter()
        .find(|r| r.group == group && r.figure.starts_with(prefix))
        .map(|r| r.value.clone())
}

/// Two headless Chromium pages running the real Peerix 0.7.0 (the system tests' harness,
/// `tests/src/browser.rs`), signaling over a local nats-server: 32 MiB and 16 B round trips.
pub async fn browser(run: &mut Run) -> Result<()> {
    const LABEL: &str = "bench";
    let env = TestEnv::new()?;
    let nats = NatsServer::start(&[])?;
    let ws = ws_url(&nats);
    let mut a = Browser::start(&env, "a", BrowserOpts::default()).await?;
    let mut b = Browser::start(&env, "b", BrowserOpts::default()).await?;
    let room = "bench-browsers";
    let a_id = a.join(&ws, room, None, Value::Null).await?;
    let b_id = b.join(&ws, room, None, Value::Null).await?;
    a.call("waitConnected", json!({}), T).await?;
    b.call("waitConnected", json!({}), T).await?;
    a.call("open", json!({ "label": LABEL }), T).await?;
    a.call("waitChannel", json!({ "label": LABEL, "peer": b_id }), T)
        .await?;
    b.call("waitChannel", json!({ "label": LABEL, "peer": a_id }), T)
        .await?;
    let len = 32usize << 20;
    let trials = run.pick(3, 2);
    page_send(
        &mut a,
        LABEL,
        &b_id,
        json!({ "bytes": { "size": 1 << 20, "seed": 99 } }),
    )
    .await?;
    let mut tput = Vec::new();
    for i in 0..trials {
        let ms = page_send(
            &mut a,
            LABEL,
            &b_id,
            json!({ "bytes": { "size": len, "seed": i } }),
        )
        .await?;
        tput.push(len as f64 / (ms / 1e3) / 1e6);
    }
    let n = run.pick(100, 30);
    let mut rtt = Vec::new();
    for i in 0..n + 10 {
        let ms = page_send(&mut a, LABEL, &b_id, json!({ "text": "0123456789abcdef" })).await?;
        if i >= 10 {
            rtt.push(ms);
        }
    }
    let ts = summary(&tput)?;
    let rs = summary(&rtt)?;
    run.add(
        Row::new(
            "browser",
            "two Chromium pages (real Peerix 0.7.0), 32 MiB message",
            "MB/s",
            ts.clone(),
        )
        .baseline(
            "full path 32 MiB, same run",
            row_median(run, "throughput", "full path, 32 MiB"),
        )
        .note("page send → receiving Peerix's ack (the harness hashes the message before acking)"),
    );
    run.add(
        Row::new(
            "browser",
            "two Chromium pages, 16 B text: send → Peerix ack (p50 / p95)",
            "ms",
            rs.clone(),
        )
        .baseline(
            "full path RTT p50, same run",
            row_median(run, "rtt", "full path RTT, 16 B"),
        )
        .note("one network round trip each, as the full path's echo"),
    );
    run.details.insert(
        "browser".into(),
        json!({"mb_s_32mib": tput, "rtt_ms": rtt, "chromium": a.ready["browser"], "peerix_sha256": a.ready["peerix_sha256"]}),
    );
    let _ = a.quit().await;
    let _ = b.quit().await;
    drop(nats);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::steady_warmup;

    /// The warm-up fills the replay buffer by its byte bound or its event bound, whichever
    /// comes first, and a size larger than the buffer still gets its one warm-up transfer.
    #[test]
    fn the_warm_up_fills_the_replay_buffer() {
        let ipc = peerixd::config::IpcConfig::default();
        assert_eq!(
            (
                ipc.replay_bytes,
                ipc.replay_events,
                ipc.inline_message_limit
            ),
            (16 << 20, 4096, 64 << 10),
            "the figures below assume the defaults"
        );
        assert_eq!(steady_warmup(16 << 10, &ipc), 1024);
        assert_eq!(steady_warmup(256 << 10, &ipc), 64);
        assert_eq!(steady_warmup(1 << 20, &ipc), 16);
        assert_eq!(steady_warmup(32 << 20, &ipc), 1);
        // 1 KiB messages: the 4,096 events fill it before 16 MiB do.
        assert_eq!(steady_warmup(1 << 10, &ipc), 4096);
        let none = peerixd::config::IpcConfig {
            replay_bytes: 0,
            replay_events: 0,
            ..ipc
        };
        assert_eq!(steady_warmup(16 << 10, &none), 1);
    }
}
