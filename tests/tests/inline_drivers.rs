//! `webrtc.inline_drivers`: the connections are driven on the daemon's actor thread, with no
//! reactor thread (BENCHMARKS.md, "Issue 14, part 2"). Real daemons, real clients, real
//! WebRTC: messages still flow both ways, in order, acknowledged, and a message larger than
//! the send buffer's high-water mark still gets through its back-pressure.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use peerix_client::proto::{Op, Payload, SendArgs, SendStart};
use peerix_client::{MessageAssembler, MessageData, PendingReply, SendOptions, SendResult};
use peerix_system_tests::*;

const CONNECT: Duration = Duration::from_secs(10);
const ROOM: &str = "inline";
const LABEL: &str = "seq";
const INLINE: (&str, &str) = ("PEERIX_WEBRTC__INLINE_DRIVERS", "true");
/// Small messages each way, issued without waiting for replies.
const SMALL: usize = 300;

/// Names of the threads of process `pid`.
fn threads(pid: u32) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        out.push(
            std::fs::read_to_string(t?.path().join("comm"))?
                .trim()
                .to_string(),
        );
    }
    Ok(out)
}

fn reactor_threads(d: &DaemonProc) -> Result<usize> {
    let pid = d.pid().context("daemon has no pid")?;
    Ok(threads(pid)?
        .iter()
        .filter(|n| n.starts_with("webrtc-rx"))
        .count())
}

/// Message `k` of a direction: its index, then 12 bytes derived from it.
fn content(k: usize) -> Vec<u8> {
    let mut v = (k as u32).to_be_bytes().to_vec();
    v.extend((0..12u32).map(|i| (i ^ k as u32).wrapping_mul(31) as u8));
    v
}

async fn issue_all(from: &Member, to: &str) -> Result<Vec<PendingReply>> {
    let mut replies = Vec::with_capacity(SMALL);
    for k in 0..SMALL {
        let op = Op::Send(SendArgs::Start(SendStart {
            room: ROOM.into(),
            label: LABEL.into(),
            to: Some(to.to_string()),
            payload: Payload::Bytes(content(k)),
            info: None,
            more: false,
            progress: false,
        }));
        replies.push(from.client.issue(&op).await?);
    }
    Ok(replies)
}

async fn all_acked(replies: Vec<PendingReply>) -> Result<()> {
    for (k, pending) in replies.into_iter().enumerate() {
        let r: SendResult = pending.typed().await.with_context(|| format!("send {k}"))?;
        let peers = r.peers.unwrap_or_default();
        ensure!(
            peers.len() == 1 && peers.iter().all(|p| p.ok),
            "send {k} not acknowledged: {peers:?}"
        );
    }
    Ok(())
}

async fn receive_in_order(m: &mut Member, from: &str) -> Result<()> {
    let mut asm = MessageAssembler::new();
    let mut next = 0;
    while next < SMALL {
        let ev = m
            .wait_for(&format!("message {next} from {from}"), CONNECT, |e| {
                is(e, "channel:message", from) && field(e, "label") == Some(LABEL)
            })
            .await?;
        if let Some(msg) = asm.push(&ev)? {
            let MessageData::Bytes(bytes) = msg.data else {
                anyhow::bail!("message {next}: expected bytes, got {:?}", msg.kind)
            };
            ensure!(
                bytes == content(next),
                "message {next} from {from} is not the {next}th sent (out of order or corrupted)"
            );
            next += 1;
        }
    }
    Ok(())
}

/// Two daemons with `inline_drivers` run no `webrtc-rx` thread, and pipelined small messages
/// cross both ways at once, each direction intact, in issue order and acknowledged; then a
/// 5 MiB message (five times the send buffer's 1 MiB high-water mark) arrives intact. A
/// default daemon beside them still has its reactor thread, so the check tells the two apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_driven_on_the_actor_thread_carry_messages_both_ways() -> Result<()> {
    let env = TestEnv::new()?;
    let da = env.daemon_with_env("a", &[], &[INLINE]).await?;
    let db = env.daemon_with_env("b", &[], &[INLINE]).await?;
    let dc = env.daemon("c", &[]).await?;
    let mut a = Member::join(&da, ROOM, |_| {}).await?;
    let mut b = Member::join(&db, ROOM, |_| {}).await?;
    let mut c = Member::join(&dc, ROOM, |_| {}).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    for (m, other) in [(&mut a, &b_id), (&mut b, &a_id), (&mut c, &a_id)] {
        m.wait_for("connected", CONNECT, |e| {
            is(e, "connection:connected", other)
        })
        .await?;
    }
    ensure!(
        reactor_threads(&da)? == 0 && reactor_threads(&db)? == 0,
        "a daemon with inline_drivers runs reactor threads: {:?}",
        threads(da.pid().unwrap_or(0))?
    );
    ensure!(
        reactor_threads(&dc)? >= 1,
        "a default daemon runs no reactor thread"
    );

    a.open(LABEL).await?;
    for (m, other) in [(&mut a, &b_id), (&mut b, &a_id)] {
        m.wait_for("channel open", CONNECT, |e| {
            is(e, "channel:open", other) && field(e, "label") == Some(LABEL)
        })
        .await?;
    }
    let a_replies = issue_all(&a, &b_id).await?;
    let b_replies = issue_all(&b, &a_id).await?;
    receive_in_order(&mut b, &a_id).await?;
    receive_in_order(&mut a, &b_id).await?;
    all_acked(a_replies).await?;
    all_acked(b_replies).await?;

    let big: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sent = a
        .client
        .send_bytes(ROOM, LABEL, big.clone(), SendOptions::to(b_id.clone()));
    let got = b.receive_bytes_intact(&a_id, LABEL, &big, Duration::from_secs(60));
    let (sent, got) = tokio::join!(sent, got);
    got?;
    let ok = sent?.peers.is_some_and(|p| p.iter().all(|p| p.ok));
    ensure!(ok, "the 5 MiB message was not acknowledged");

    da.assert_quiet_log()?;
    db.assert_quiet_log()?;
    Ok(())
}
