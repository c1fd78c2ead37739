//! Two daemons that both have a label open before they connect (what the sample config makes
//! every daemon do): at control-channel open the impolite side creates the channel and the polite
//! side asks for it (§6.6), and the first control message travels with the end of the SCTP
//! handshake. A tester lost the channel about once in 3,000 connections ("channel closed", then
//! "No channel found"), with "there already exists a stream with identifier" on a quarter of all
//! connections; see `vendor/README.md`. Every cycle here must end with the channel open on both
//! sides and one acknowledged message each way.
//!
//! `PEERIX_CHANNEL_RACE_CYCLES` overrides the number of cycles (default 2,000).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_client::SendOptions;
use peerix_system_tests::*;

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_open_the_label_at_connect_time_and_never_lose_the_channel() -> Result<()> {
    let cycles: usize = std::env::var("PEERIX_CHANNEL_RACE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let env = TestEnv::new()?;
    let da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    // A room's Peerix id is derived from the daemon's key and the room name, so a new room every
    // cycle gives both politeness roles. Each side joins and opens "chat" at once.
    let started = Instant::now();
    let (mut a_polite, mut a_impolite) = (0usize, 0usize);
    for cycle in 0..cycles {
        let room = format!("race-{cycle}");
        let mut a = Member::join(&da, &room, |_| {}).await?;
        a.open("chat").await?;
        let mut b = Member::join(&db, &room, |_| {}).await?;
        b.open("chat").await?;
        let (a_id, b_id) = (a.id.clone(), b.id.clone());
        if a_id > b_id {
            a_polite += 1;
        } else {
            a_impolite += 1;
        }
        let ctx = |side: &str| {
            format!(
                "cycle {cycle}: {side} (a polite: {})\n--- a log ---\n{}\n--- b log ---\n{}",
                a_id > b_id,
                da.log_tail(),
                db.log_tail()
            )
        };
        a.wait_for("chat open at a", T, |e| {
            is(e, "channel:open", &b_id) && field(e, "label") == Some("chat")
        })
        .await
        .with_context(|| ctx("a"))?;
        b.wait_for("chat open at b", T, |e| {
            is(e, "channel:open", &a_id) && field(e, "label") == Some("chat")
        })
        .await
        .with_context(|| ctx("b"))?;
        for (from, to, text) in [(&a, &b_id, "a to b"), (&b, &a_id, "b to a")] {
            let r = from
                .client
                .send_text(&from.room, "chat", text, SendOptions::to(to.clone()))
                .await
                .with_context(|| ctx(text))?;
            let peers = r.peers.unwrap_or_default();
            if peers.len() != 1 || !peers[0].ok {
                bail!("{text} not acknowledged: {peers:?}\n{}", ctx(text));
            }
        }
        b.leave().await?;
        a.wait_for("b gone at a", T, |e| is(e, "connection:closed", &b_id))
            .await
            .with_context(|| ctx("leave"))?;
        a.leave().await?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{cycles} cycles in {secs:.1} s ({:.1} ms each); a polite in {a_polite}, impolite in {a_impolite}",
        secs * 1000.0 / cycles.max(1) as f64
    );
    // The daemons run with the default log filter: a healthy connection logs nothing above INFO
    // (this also catches "there already exists a stream with identifier").
    da.assert_quiet_log()?;
    db.assert_quiet_log()?;
    Ok(())
}
