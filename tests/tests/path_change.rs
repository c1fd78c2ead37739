//! A NAT rebinding between two daemons behind NAT routers (issue 15, part 5; the namespace lab
//! of `tests/src/netlab.rs`): home B's router gets a new public address, which drops its
//! masquerade's conntrack entries, so B's flows leave through a new mapping and what a sends
//! to the old one goes nowhere. The daemons restart ICE (new credentials and candidates over
//! signaling, DTLS and SCTP kept) and every message sent meanwhile arrives, once, in order,
//! reported delivered. Needs root for the namespaces; skipped with a message otherwise.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use peerix_ipc_proto::{IceServer, JoinOptions};
use peerix_system_tests::netlab::{self, Home, Lab, Nat, TurnAuth};
use peerix_system_tests::pipelined::{all_delivered, expect_texts, issue_texts, never_failed};
use peerix_system_tests::*;

const T: Duration = Duration::from_secs(20);
const LABEL: &str = "chat";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_rebinding_recovers_without_loss() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    let mut lab = Lab::build(Nat::Cone)?;
    lab.start_turn(TurnAuth::Static)?;
    let env = TestEnv::new()?;
    let da = lab.daemon(&env, "a", Home::A, &[]).await?;
    let db = lab.daemon(&env, "b", Home::B, &[]).await?;
    let opts = JoinOptions {
        ice_servers: Some(vec![IceServer {
            urls: vec![lab.stun_url()],
            username: None,
            credential: None,
        }]),
        ..Default::default()
    };
    let mut a = Member::join(&da, "rebind", |j| j.options = Some(opts.clone())).await?;
    let mut b = Member::join(&db, "rebind", |j| j.options = Some(opts.clone())).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("a connected to b", T, |e| {
        is(e, "connection:connected", &b_id)
    })
    .await
    .with_context(|| da.log_tail())?;
    a.open(LABEL).await?;
    for (m, other) in [(&mut a, &b_id), (&mut b, &a_id)] {
        m.wait_for("channel open", T, |e| {
            is(e, "channel:open", other) && field(e, "label") == Some(LABEL)
        })
        .await?;
    }
    let replies = issue_texts(&a, LABEL, &b_id, "before", 3).await?;
    expect_texts(&mut b, LABEL, &a_id, "before", 3, T).await?;
    all_delivered(replies, &b_id).await?;

    lab.rebind_nat(Home::B, "203.0.113.32")?;
    let rebound = Instant::now();
    let replies = issue_texts(&a, LABEL, &b_id, "during", 30).await?;
    // a's consent checks go to b's old mapping: a notices the dead path. What a's client sends
    // then waits for the repair too (it is not refused).
    a.wait_for("a sees b disconnected", T, |e| {
        is(e, "connection:disconnected", &b_id)
    })
    .await?;
    let replies_down = issue_texts(&a, LABEL, &b_id, "down", 10).await?;
    expect_texts(&mut b, LABEL, &a_id, "during", 30, Duration::from_secs(30))
        .await
        .with_context(|| format!("{}\n{}", da.log_tail(), db.log_tail()))?;
    println!(
        "path_change: messages sent at a NAT rebinding arrived {:?} after it",
        rebound.elapsed()
    );
    expect_texts(&mut b, LABEL, &a_id, "down", 10, T).await?;
    all_delivered(replies, &b_id).await?;
    all_delivered(replies_down, &b_id).await?;
    let replies = issue_texts(&a, LABEL, &b_id, "after", 3).await?;
    expect_texts(&mut b, LABEL, &a_id, "after", 3, T).await?;
    all_delivered(replies, &b_id).await?;
    never_failed(&mut a, &b_id).await?;
    never_failed(&mut b, &a_id).await?;
    Ok(())
}
