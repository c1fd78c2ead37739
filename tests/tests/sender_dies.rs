//! A sending daemon that dies in the middle of a message, by SIGTERM or SIGKILL: the receiving
//! client, which already holds parts of that message, is told by a `channel:error` naming the
//! transfer (PROTOCOL.md), and never left with parts that no final part will follow.

use std::time::Duration;

use anyhow::{Context as _, Result};
use peerix_client::SendOptions;
use peerix_system_tests::*;

const CONNECT: Duration = Duration::from_secs(10);

async fn sender_dies(how: &str, within: Duration) -> Result<()> {
    let env = TestEnv::new()?;
    let mut da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let mut a = Member::join(&da, "demo", |_| {}).await?;
    let mut b = Member::join(&db, "demo", |_| {}).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("a sees b", CONNECT, |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;
    b.wait_for("b sees a", CONNECT, |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    a.open("bulk").await?;
    b.wait_for("bulk open at b", CONNECT, |e| {
        is(e, "channel:open", &a_id) && field(e, "label") == Some("bulk")
    })
    .await?;

    // 200 MiB: long enough on loopback that the sender dies while it is under way.
    let sender = da.client().await?;
    let send = tokio::spawn(async move {
        sender
            .send_bytes(
                "demo",
                "bulk",
                vec![0x5a; 200 << 20],
                SendOptions::default(),
            )
            .await
    });
    let part = b
        .wait_for("a first part at b", CONNECT, |e| {
            e.name == "channel:message"
                && value(e, "final").and_then(|v| v.as_bool()) == Some(false)
        })
        .await?;
    let transfer = value(&part, "transfer")
        .and_then(|v| v.as_u64())
        .context("transfer id")?;
    let died = std::time::Instant::now();
    match how {
        "kill" => da.kill_now(),
        _ => da.terminate(),
    }
    if how == "kill" {
        // While the dead peer is only disconnected, a send to it waits (between daemons the
        // path may yet be repaired by an ICE restart) and fails when the connection does: it
        // is reported, never lost.
        b.wait_for("a disconnected at b", within, |e| {
            is(e, "connection:disconnected", &a_id)
        })
        .await?;
        let r = b
            .client
            .send_text("demo", "bulk", "anyone?", SendOptions::to(a_id.clone()))
            .await;
        let failed = match &r {
            Err(_) => true,
            Ok(res) => res
                .peers
                .as_deref()
                .is_some_and(|p| p.len() == 1 && !p[0].ok),
        };
        assert!(
            failed,
            "a send to a peer that died is reported failed: {r:?}"
        );
    }
    let err = b
        .wait_for("channel:error naming the transfer", within, |e| {
            e.name == "channel:error"
                && value(e, "transfer").and_then(|v| v.as_u64()) == Some(transfer)
        })
        .await
        .with_context(|| format!("after {how}"))?;
    let events = b.drain_for(Duration::from_millis(200)).await;
    assert!(
        !events.iter().any(|e| e.name == "channel:message"
            && value(e, "transfer").and_then(|v| v.as_u64()) == Some(transfer)
            && value(e, "final").and_then(|v| v.as_bool()) == Some(true)),
        "no final part after the error: {err:?}"
    );
    if !events.iter().any(|e| is(e, "connection:closed", &a_id)) {
        b.wait_for("the sender's connection closed", within, |e| {
            is(e, "connection:closed", &a_id)
        })
        .await?;
    }
    eprintln!(
        "{how}: channel:error and connection:closed {:?} after the sender died",
        died.elapsed()
    );
    send.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_terminated_mid_message() -> Result<()> {
    // SIGTERM: the sender leaves, its control channel resets, the receiver closes at once.
    sender_dies("term", Duration::from_secs(5)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_killed_mid_message() -> Result<()> {
    // SIGKILL: nothing is said. ICE consent fails after about 4.5 s; the sender said it is a
    // peerixd (its hello on the control channel), so the receiver restarts ICE (twice, 1.5 s
    // each, unanswered) and then fails the connection instead of waiting for Peerix's 15 s
    // connection timer, and the channel's end reports the transfer. 12 s leaves room for a
    // loaded CI machine; before the hello it took about 20 s.
    sender_dies("kill", Duration::from_secs(12)).await
}
