//! How long a daemon takes from `exec` until a client is welcomed on its socket: what a
//! systemd start, a socket-activated first request or a test that starts daemons waits for.
//!
//! Each trial starts a fresh `peerixd` (no peers, no rooms) and retries `Client::connect`
//! every millisecond (tokio's timer granularity) until the handshake succeeds. The daemon's runtimes are created on 64 ms
//! boundaries of its timer grid, so the trials start at phases spread evenly over one slot:
//! trials started back to back would all land at the same phase, the one a previous daemon's
//! readiness left them at.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_system_tests::TestEnv;
use serde_json::json;

use crate::report::Row;
use crate::{summary, Run};

/// One slot of the daemon's timer grid (`peerix_rtc`'s `WHEEL_SLOT`).
const SLOT_MS: u64 = 64;

/// Adds the startup row to the `setup` group.
pub async fn startup(run: &mut Run) -> Result<()> {
    let trials = run.pick(20, 8) as u64;
    let env = TestEnv::new()?;
    let mut ms = Vec::new();
    for i in 0..trials {
        // Phases i·SLOT/trials of the slot (in a shuffled order).
        let phase = (i * 7 % trials) * SLOT_MS / trials;
        tokio::time::sleep(Duration::from_millis(phase)).await;
        let socket = env.dir.path().join(format!("start{i}.sock"));
        let start = Instant::now();
        let mut child = tokio::process::Command::from(env.peerixd_command(&socket)?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting peerixd")?;
        let welcomed = loop {
            if let Ok(client) = peerix_client::Client::connect(&socket).await {
                drop(client);
                break start.elapsed();
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("peerixd did not welcome a client within 10 s of its start");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        ms.push(welcomed.as_secs_f64() * 1000.0);
        let _ = child.kill().await;
    }
    run.add(
        Row::new(
            "setup",
            "daemon exec → first client welcomed (no rooms)",
            "ms",
            summary(&ms)?,
        )
        .note(format!(
            "{trials} starts at phases spread over one {SLOT_MS} ms grid slot"
        )),
    );
    run.details
        .insert("startup".into(), json!({ "exec_to_welcome_ms": ms }));
    Ok(())
}
