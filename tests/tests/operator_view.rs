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
    // prflx when the remote's first check arrives before its signaled candidate.
    assert!(
        matches!(before.remote_candidate.as_deref(), Some("host" | "prflx")),
        "{before:?}"
    );
    assert!(before.path().starts_with("host/"), "{before:?}");
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

fn peerix(d: &DaemonProc, args: &[&str]) -> Result<std::process::Output> {
    Ok(std::process::Command::new(bin("peerix")?)
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()?)
}

/// `peerix status` lays out the daemon, its drivers, rooms and each peer's figures for a
/// human; `--json` keeps the machine output and adds the peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_status_shows_peers() -> Result<()> {
    let env = TestEnv::new()?;
    let (da, _db, a, b) = connected_pair(&env).await?;

    let out = peerix(&da, &["status"])?;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout)?;
    eprintln!("{text}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(text.contains(&format!("peerixd {version}")), "{text}");
    assert!(text.contains("up "), "uptime: {text}");
    let machine = a.client.status().await?.id;
    assert!(text.contains(&machine), "machine id: {text}");
    assert!(text.contains(&a.id), "room id: {text}");
    for head in [
        "PEER", "STATE", "PATH", "RTT", "IN", "OUT", "CHANNELS", "SHARES",
    ] {
        assert!(text.contains(head), "column {head}: {text}");
    }
    let row = text
        .lines()
        .find(|l| l.contains(&b.id))
        .with_context(|| format!("a row for peer {}: {text}", b.id))?;
    assert!(row.contains("connected"), "{row}");
    assert!(row.contains("host/"), "{row}");
    assert!(row.contains("msg"), "{row}");
    assert!(row.contains("chat"), "{row}");
    assert!(!text.trim_start().starts_with('{'), "not JSON: {text}");

    let out = peerix(&da, &["--json", "status"])?;
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["id"], machine.as_str());
    let member = &v["rooms"][0]["members"][0];
    assert_eq!(member["id"], b.id.as_str());
    assert_eq!(member["state"], "connected");
    assert_eq!(member["stats"]["localCandidate"], "host");
    assert!(member["stats"]["bytesOut"].as_u64().is_some(), "{v}");
    Ok(())
}

/// `peerix top --once` prints one frame as text: the peer's row with state, path, RTT and a
/// send rate measured over the interval while a transfer runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_top_once_shows_rates() -> Result<()> {
    let env = TestEnv::new()?;
    let (da, _db, a, b) = connected_pair(&env).await?;

    let top = tokio::process::Command::new(bin("peerix")?)
        .arg("--socket")
        .arg(&da.socket)
        .args(["top", "--once", "--interval", "1500"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // Traffic inside top's interval: its second sample sees the bytes, its first may not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let payload = "y".repeat(100_000);
    for _ in 0..5 {
        a.client
            .send_text("demo", "chat", &payload, SendOptions::default())
            .await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(10), top.wait_with_output())
        .await
        .context("top --once exits")??;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout)?;
    eprintln!("{text}");
    assert!(text.starts_with("peerixd "), "{text}");
    assert!(text.contains("OUT/s"), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains(&b.id[..12]))
        .with_context(|| format!("a row for {}: {text}", b.id))?;
    let cells: Vec<&str> = row
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    // ROOM PEER STATE PATH RTT IN/s OUT/s IN OUT
    assert_eq!(cells.len(), 9, "{cells:?}");
    assert_eq!(cells[0], "demo");
    assert_eq!(cells[2], "connected");
    // The remote candidate is prflx when its first check arrives before its signaled candidate.
    assert!(
        cells[3] == "host/host" || cells[3] == "host/prflx",
        "{cells:?}"
    );
    assert!(cells[6].ends_with("/s"), "{cells:?}");
    assert!(
        cells[6].contains("KiB/s") || cells[6].contains("MiB/s"),
        "500 kB sent within the interval: {cells:?}"
    );
    Ok(())
}

/// `[metrics] listen` serves the same figures in Prometheus' text format on loopback; a
/// non-loopback address is refused by the configuration check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_on_loopback() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::new()?;
    let port = free_port()?;
    let conf = env.dir.path().join("metrics.toml");
    std::fs::write(&conf, format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"))?;
    let conf = conf.to_string_lossy().to_string();
    let da = env.daemon("a", &["--config", &conf]).await?;
    let db = env.daemon("b", &[]).await?;
    let a = Member::join(&da, "demo", |_| {}).await?;
    let mut b = Member::join(&db, "demo", |_| {}).await?;
    let a_id = a.id.clone();
    b.wait_for("b sees a", CONNECT, |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .context("scrape answered")??;
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    assert!(body.contains("peerix_up 1"), "{body}");
    assert!(body.contains("peerix_uptime_seconds "), "{body}");
    let counter = |name: &str| -> Result<u64> {
        let line = body
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .with_context(|| format!("{name} in {body}"))?;
        Ok(line.rsplit(' ').next().unwrap_or("").parse()?)
    };
    let (calls, datagrams) = (
        counter("peerix_udp_send_calls_total")?,
        counter("peerix_udp_datagrams_sent_total")?,
    );
    assert!(
        calls > 0 && datagrams >= calls,
        "{calls} calls, {datagrams} datagrams"
    );
    assert!(body.contains("peerix_room_peers{room=\"demo\""), "{body}");
    let sent = body
        .lines()
        .find(|l| l.starts_with("peerix_peer_bytes_sent_total{") && l.contains(&b.id))
        .with_context(|| format!("bytes sent to b: {body}"))?;
    assert!(sent.contains("path=\"host/"), "{sent}");
    let value: u64 = sent.rsplit(' ').next().unwrap_or("").parse()?;
    assert!(value > 0, "{sent}");

    // Not on any other address: the endpoint has no access control.
    let bad = env.dir.path().join("bad.toml");
    std::fs::write(&bad, "[metrics]\nlisten = \"0.0.0.0:9464\"\n")?;
    let out = std::process::Command::new(bin("peerixd")?)
        .arg("--check-config")
        .arg(&bad)
        .output()?;
    assert!(!out.status.success());
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("loopback"), "{err}");
    Ok(())
}

type Screen = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

fn screen_text(screen: &Screen) -> String {
    screen
        .lock()
        .map(|s| String::from_utf8_lossy(&s).into_owned())
        .unwrap_or_default()
}

/// Waits up to 10 s until what the terminal received so far satisfies `cond`.
async fn until(screen: &Screen, what: &str, cond: impl Fn(&str) -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = screen_text(screen);
        if cond(&text) {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{what}: {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Live `peerix top` in a real pseudo-terminal (util-linux `script` makes one, 120×30): it
/// draws the peer's row on the alternate screen, refreshes it while a transfer runs (a rate
/// appears that the first frame could not have), and `q` restores the terminal and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_top_live_in_a_terminal() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let env = TestEnv::new()?;
    let (da, _db, a, b) = connected_pair(&env).await?;
    let inner = format!(
        "stty cols 120 rows 30; exec {} --socket {} top --interval 300",
        bin("peerix")?.display(),
        da.socket.display()
    );
    let mut top = tokio::process::Command::new("script")
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("util-linux `script` makes the pseudo-terminal; is it installed?")?;
    let mut stdin = top.stdin.take().context("stdin")?;
    let mut stdout = top.stdout.take().context("stdout")?;
    let screen = Screen::default();
    let reader = {
        let screen = screen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = screen.lock() {
                    s.extend_from_slice(&buf[..n]);
                }
            }
        })
    };
    let peer = &b.id[..12];
    // The alternate screen, the header and the peer's row.
    until(&screen, "top draws its first frame", |t| {
        t.contains("\x1b[?1049h") && t.contains("q: quit") && t.contains(peer)
    })
    .await?;
    let first = screen_text(&screen);
    anyhow::ensure!(
        !first.contains("KiB/s") && !first.contains("MiB/s"),
        "no traffic yet: {first:?}"
    );
    // A transfer while top runs: a later frame shows a send rate.
    let payload = "z".repeat(200_000);
    for _ in 0..10 {
        a.client
            .send_text("demo", "chat", &payload, SendOptions::default())
            .await?;
    }
    until(&screen, "a refreshed frame shows the send rate", |t| {
        t.contains("KiB/s") || t.contains("MiB/s")
    })
    .await?;
    stdin.write_all(b"q").await?;
    stdin.flush().await?;
    let status = tokio::time::timeout(Duration::from_secs(10), top.wait())
        .await
        .context("top exits on q")??;
    let _ = reader.await;
    assert!(status.success(), "{status:?}");
    until(&screen, "the terminal is restored", |t| {
        t.contains("\x1b[?1049l")
    })
    .await?;
    Ok(())
}

/// Logs read well in journald: no colour codes when stderr is not a terminal, and lines from
/// inside the WebRTC stack (here the ICE state changes, logged from the stack's own tasks)
/// carry the `peer{room, peer}` span of the connection they are about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_carry_room_and_peer_spans() -> Result<()> {
    let env = TestEnv::new()?;
    let log = ["--log", "info,peerix_rtc=trace,rtc=info"];
    let da = env.daemon("a", &log).await?;
    let db = env.daemon("b", &log).await?;
    let a = Member::join(&da, "demo", |_| {}).await?;
    let mut b = Member::join(&db, "demo", |_| {}).await?;
    let a_id = a.id.clone();
    b.wait_for("b sees a", CONNECT, |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    let text = std::fs::read_to_string(&da.log)?;
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log file:\n{text}"
    );
    let span = format!("peer{{room=demo peer={}}}", b.id);
    // One line logged from the stack's driver task, one from applying the remote offer.
    for what in ["ice state", "signaling state changed"] {
        let line = text
            .lines()
            .find(|l| l.contains(what))
            .with_context(|| format!("a line with {what:?}:\n{text}"))?;
        assert!(line.contains(&span), "{line:?} lacks {span}");
    }
    Ok(())
}
