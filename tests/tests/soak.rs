//! Soak (issue 10): thousands of join/leave cycles with messages and client churns against one
//! daemon, printing its RSS and open descriptors at start, along the way and at the end.
//! Ignored by default (it runs for minutes); `scripts/soak.sh` runs it on release builds with the
//! fuzz targets. Counts: `SOAK_CYCLES` (default 10,000), `SOAK_CHURNS` (default 1,000).
//! Not a pass/fail judgement on memory (figures are read, not asserted): a cycle that fails to
//! connect or deliver, or a daemon that dies, fails it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use peerix_client::SendOptions;
use peerix_system_tests::*;

const T: Duration = Duration::from_secs(15);

fn figures(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.trim_start_matches("VmRSS:").trim().to_string())
        .unwrap_or_else(|| "?".into());
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count().to_string())
        .unwrap_or_else(|_| "?".into());
    let threads = status
        .lines()
        .find(|l| l.starts_with("Threads:"))
        .map(|l| l.trim_start_matches("Threads:").trim().to_string())
        .unwrap_or_else(|| "?".into());
    format!("RSS {rss}, fds {fds}, threads {threads}")
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long; run by scripts/soak.sh"]
async fn soak() -> Result<()> {
    let cycles = count("SOAK_CYCLES", 10_000);
    let churns = count("SOAK_CHURNS", 1_000);
    let nats = NatsServer::start(&[])?;
    let env = TestEnv::new()?;
    let url = nats.url();
    let args = ["--nats", url.as_str(), "--driver", "nats"];
    let mut da = env.daemon("soaked", &args).await?;
    let db = env.daemon("partner", &args).await?;
    let pid = da.pid().context("daemon pid")?;
    let ca = da.client().await?;
    let cb = db.client().await?;
    let mut ev = ca
        .subscribe(&["connection:connected", "channel:open"], None)
        .await?;
    let started = Instant::now();
    let mut first = String::new();
    for k in 0..cycles {
        let room = format!("soak-{k}");
        let b = cb
            .join(peerix_ipc_proto::JoinArgs::new(room.clone()))
            .await?;
        ca.join(peerix_ipc_proto::JoinArgs::new(room.clone()))
            .await?;
        loop {
            let e = tokio::time::timeout(T, ev.recv())
                .await
                .with_context(|| format!("cycle {k}: no connection"))?
                .context("event stream ended")?;
            if e.room.as_deref() == Some(room.as_str()) && is(&e, "connection:connected", &b.id) {
                break;
            }
        }
        ca.open(peerix_ipc_proto::OpenArgs::new(room.clone(), "m"))
            .await?;
        loop {
            let e = tokio::time::timeout(T, ev.recv())
                .await
                .with_context(|| format!("cycle {k}: channel did not open"))?
                .context("event stream ended")?;
            if e.room.as_deref() == Some(room.as_str()) && is(&e, "channel:open", &b.id) {
                break;
            }
        }
        let r = ca
            .send_text(&room, "m", &format!("cycle {k}"), SendOptions::default())
            .await?;
        let peers = r.peers.unwrap_or_default();
        anyhow::ensure!(
            peers.len() == 1 && peers[0].ok,
            "cycle {k}: not delivered: {peers:?}"
        );
        ca.leave(&room).await?;
        cb.leave(&room).await?;
        if k == 49 {
            // After a warm-up, so that one-time allocations (threads, pools) are not counted.
            first = figures(pid);
            eprintln!("after 50 warm-up cycles: {first}");
        }
        if (k + 1) % 1000 == 0 {
            eprintln!(
                "{} cycles in {:.0?}: {}",
                k + 1,
                started.elapsed(),
                figures(pid)
            );
        }
    }
    let before_churn = figures(pid);
    for k in 0..churns {
        let c = da.client().await?;
        let _sub = c.subscribe(&["*"], None).await?;
        c.status()
            .await
            .with_context(|| format!("churn {k}: status"))?;
        drop(c);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("soak: {cycles} join/leave cycles with a message each, {churns} client churns");
    eprintln!("  start (after warm-up): {first}");
    eprintln!("  after the cycles:      {before_churn}");
    eprintln!("  after the churns:      {}", figures(pid));
    eprintln!("  took {:.0?}", started.elapsed());
    anyhow::ensure!(da.is_running(), "the daemon died");
    Ok(())
}
