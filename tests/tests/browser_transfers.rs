//! Bulk transfers and aborts against the real Peerix 0.7.0 in headless Chromium (see
//! `browser_interop.rs` for the setup): 20 x 5 MiB each way, every message compared by SHA-256
//! and acknowledged (a send reported failed fails the test), and a streamed send whose client
//! process is killed mid-way, which the browser's receiver must see as an abort with no data.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use peerix_system_tests::browser::{Session, SessionOpts, T};
use peerix_system_tests::peerix_client::{MessageAssembler, MessageData, SendOptions};
use peerix_system_tests::{bin, field, is, sha256_hex};
use serde_json::json;

const ROUNDS: u32 = 20;
const SIZE: usize = 5 * 1024 * 1024;
/// One 5 MiB message must be through well within this (it takes about a second).
const BULK_TIMEOUT: Duration = Duration::from_secs(60);

fn test_bytes(size: usize, seed: u32) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32 ^ seed.wrapping_mul(0x85eb_ca6b) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// 20 x 5 MiB from the daemon (streamed `send_bytes`) to the browser.
#[tokio::test]
async fn daemon_to_browser_20x5mib() -> Result<()> {
    let mut s = Session::connect("bulk-d2b", SessionOpts::default()).await?;
    s.open_from_daemon("bulk").await?;
    let room = s.room.clone();
    let peer = s.peer.clone();
    let daemon = s.m.id.clone();
    let started = Instant::now();
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let data = test_bytes(SIZE, round);
        let sha = sha256_hex(&data);
        let mark = s.b.mark();
        let t = Instant::now();
        let res = tokio::time::timeout(
            BULK_TIMEOUT,
            s.m.client
                .send_bytes(&room, "bulk", data, SendOptions::to(peer.clone())),
        )
        .await
        .map_err(|_| anyhow!("round {round}: the daemon's send did not finish in {BULK_TIMEOUT:?}"))
        .and_then(|r| r.with_context(|| format!("round {round}: send_bytes")))
        .with_context(|| s.diagnostics())?;
        let peers = res.peers.clone().unwrap_or_default();
        if peers.len() != 1 || peers[0].id != peer || !peers[0].ok {
            bail!(
                "round {round}: 5 MiB send reported failed: {peers:?}\n{}",
                s.diagnostics()
            );
        }
        let ack = t.elapsed();
        let m =
            s.b.wait_from(mark, "the 5 MiB message", T, |v| {
                (v["ev"] == "message" || v["ev"] == "message:aborted")
                    && v["label"] == "bulk"
                    && v["peer"] == daemon.as_str()
            })
            .await?;
        if m["ev"] != "message" {
            bail!(
                "round {round}: the browser saw an abort: {m}\n{}",
                s.diagnostics()
            );
        }
        assert_eq!(m["type"], "bytes", "round {round}: {m}");
        assert_eq!(m["size"], SIZE, "round {round}: {m}");
        assert_eq!(m["sha256"], sha.as_str(), "round {round}: corrupted: {m}");
        times.push(ack.as_millis());
    }
    eprintln!(
        "[bulk-d2b] {ROUNDS} x 5 MiB in {:.1} s; acked after (ms) {times:?}",
        started.elapsed().as_secs_f64()
    );
    s.finish().await
}

/// 20 x 5 MiB from the browser (`peer.send` of a Uint8Array) to the daemon.
#[tokio::test]
async fn browser_to_daemon_20x5mib() -> Result<()> {
    let mut s = Session::connect("bulk-b2d", SessionOpts::default()).await?;
    s.open_from_daemon("bulk").await?;
    let peer = s.peer.clone();
    let daemon = s.m.id.clone();
    let started = Instant::now();
    let mut times = Vec::new();
    let mut asm = MessageAssembler::new();
    for round in 0..ROUNDS {
        let id = s.b.command(
            "send",
            json!({"label": "bulk", "to": daemon, "bytes": {"size": SIZE, "seed": round}, "info": {"round": round}}),
        )?;
        let msg = loop {
            let ev =
                s.m.wait_for("channel:message parts", BULK_TIMEOUT, |e| {
                    (is(e, "channel:message", &peer) || is(e, "channel:error", &peer))
                        && field(e, "label") == Some("bulk")
                })
                .await
                .with_context(|| format!("round {round}\n{}", s.diagnostics()))?;
            if ev.name == "channel:error" {
                bail!(
                    "round {round}: daemon channel:error {:?}\n{}",
                    ev.data,
                    s.diagnostics()
                );
            }
            if let Some(msg) = asm.push(&ev)? {
                break msg;
            }
        };
        // The browser's send resolves on the daemon's ack; a rejection is a test failure.
        let r = s.b.reply(id, BULK_TIMEOUT).await.with_context(|| {
            format!(
                "round {round}: the browser's 5 MiB send failed\ndaemon log:\n{}",
                s.d.log_tail()
            )
        })?;
        let MessageData::Bytes(bytes) = &msg.data else {
            bail!("round {round}: expected bytes, got {:?}", msg.kind)
        };
        assert_eq!(bytes.len(), SIZE, "round {round}");
        assert_eq!(
            sha256_hex(bytes),
            r["sha256"].as_str().unwrap_or(""),
            "round {round}: 5 MiB message corrupted"
        );
        let info = msg.info.as_ref().map(|v| v.to_string()).unwrap_or_default();
        assert!(info.contains("round"), "info lost: {info}");
        times.push(r["ack_ms"].as_u64().unwrap_or(0));
    }
    eprintln!(
        "[bulk-b2d] {ROUNDS} x 5 MiB in {:.1} s; browser sends acked after (ms) {times:?}",
        started.elapsed().as_secs_f64()
    );
    s.finish().await
}

/// A `peerix send --file` streaming a big message to the browser is killed mid-way (the file is
/// a FIFO that delivers 3 MiB and then nothing more). The daemon must abort the transfer and the
/// browser's receiver must see the abort and hold no data: once awaiting the message as a whole
/// (the promise rejects), once reading its chunks (the stream errors with Peerix's reason). The
/// channel keeps working afterwards.
#[tokio::test]
async fn transfer_aborted_when_sending_client_is_killed() -> Result<()> {
    let mut s = Session::connect("abort", SessionOpts::default()).await?;
    s.open_from_daemon("big").await?;
    for mode in ["await", "stream"] {
        s.b.call("receiveMode", json!({ "mode": mode }), T).await?;
        kill_sender_mid_transfer(&mut s, mode)
            .await
            .with_context(|| format!("receive mode {mode}"))?;
    }
    s.finish().await
}

async fn kill_sender_mid_transfer(s: &mut Session, mode: &str) -> Result<()> {
    let peer = s.peer.clone();
    let daemon = s.m.id.clone();
    let fifo = s.env.dir.path().join(format!("big-{mode}.fifo"));
    let st = Command::new("mkfifo").arg(&fifo).status()?;
    if !st.success() {
        bail!("mkfifo failed: {st}");
    }
    let cli_log = s.env.dir.path().join(format!("cli-{mode}.log"));
    let mark = s.b.mark();
    let mut cli = Command::new(bin("peerix")?)
        .arg("--socket")
        .arg(&s.d.socket)
        .args(["--json", "send", &s.room, "big", "--to", &peer, "--file"])
        .arg(&fifo)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&cli_log)?)
        .stderr(std::fs::File::create(
            s.env.dir.path().join(format!("cli-{mode}.err")),
        )?)
        .spawn()
        .context("starting peerix send")?;
    // Feed 3 MiB, then keep the FIFO open without writing: the CLI blocks mid-message.
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let fifo_w = fifo.clone();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo_w)?;
        let data = test_bytes(3 * 1024 * 1024, 99);
        f.write_all(&data)?;
        let _ = hold_rx.recv();
        Ok(())
    });
    let started =
        s.b.wait_from(mark, "the start of the big message", T, |v| {
            v["ev"] == "channel:message" && v["label"] == "big" && v["peer"] == daemon.as_str()
        })
        .await
        .with_context(|| format!("daemon log:\n{}", s.d.log_tail()))?;
    let mid = started["mid"].clone();
    // Let more of it flow, then kill the sending client.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(st) = cli.try_wait()? {
        bail!(
            "peerix send exited before it was killed ({st}): {}",
            std::fs::read_to_string(&cli_log).unwrap_or_default()
        );
    }
    cli.kill()?;
    cli.wait()?;
    let killed = Instant::now();
    drop(hold_tx);
    let _ = writer.join();
    let end =
        s.b.wait_from(
            mark,
            "the browser to see the abort",
            Duration::from_secs(20),
            |v| (v["ev"] == "message" || v["ev"] == "message:aborted") && v["mid"] == mid,
        )
        .await
        .with_context(|| format!("daemon log:\n{}", s.d.log_tail()))?;
    if end["ev"] != "message:aborted" {
        bail!(
            "the browser received the cut-off message as complete: {end}\n{}",
            s.diagnostics()
        );
    }
    eprintln!(
        "[abort/{mode}] browser saw the abort {} ms after the kill: {end}",
        killed.elapsed().as_millis()
    );
    if mode == "stream" {
        // Peerix's own reason: the daemon sent an abort frame (not a closed channel).
        assert_eq!(end["error"], "Aborted by sender", "{end}");
        assert!(
            end["bytes_before_abort"].as_u64().unwrap_or(0) > 0,
            "the transfer was not under way: {end}"
        );
    }
    // The page's own record of the message: aborted, no size, no hash.
    let stats = s.b.call("stats", json!({}), T).await?;
    let rec = stats["received"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["mid"] == mid).cloned())
        .ok_or_else(|| anyhow!("message {mid} missing from the page's record: {stats}"))?;
    assert_eq!(rec["aborted"], true, "{rec}");
    assert!(
        rec.get("size").is_none() && rec.get("sha256").is_none(),
        "partial data held: {rec}"
    );

    // The channel still works both ways.
    let mark = s.b.mark();
    let text = format!("after the abort ({mode})");
    let res =
        s.m.client
            .send_text(&s.room, "big", &text, SendOptions::to(peer.clone()))
            .await?;
    let peers = res.peers.unwrap_or_default();
    if peers.len() != 1 || !peers[0].ok {
        bail!(
            "send after the abort failed: {peers:?}\n{}",
            s.diagnostics()
        );
    }
    s.b.wait_from(mark, "the text after the abort", T, |v| {
        v["ev"] == "message" && v["mid"] != mid && v["label"] == "big"
    })
    .await?;
    s.b.call(
        "send",
        json!({"label": "big", "to": daemon, "text": "still here"}),
        T,
    )
    .await?;
    s.m.wait_for("the browser's text after the abort", T, |e| {
        is(e, "channel:message", &peer) && field(e, "data") == Some("still here")
    })
    .await?;
    Ok(())
}
