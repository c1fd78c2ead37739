//! `send` with `batch` (PROTOCOL.md, `send`): several whole messages in one request. Real
//! daemons, a real client pipelining requests, real WebRTC.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use peerix_client::proto::{ErrorCode, Op, Payload, SendArgs, SendBatch, SendStart};
use peerix_client::{BatchResult, ClientError, MessageData, SendOptions};
use peerix_system_tests::*;

const ROOM: &str = "batch";
const LABEL: &str = "b";

/// Two daemons in `ROOM` with `LABEL` open between them.
async fn pair(env: &TestEnv) -> Result<(DaemonProc, DaemonProc, Member, Member)> {
    pair_with_channel(env, ROOM, LABEL).await
}

/// The next `n` messages on `LABEL` at `m`, whole.
async fn receive(m: &mut Member, n: usize) -> Result<Vec<MessageData>> {
    let got = m
        .receive_messages(LABEL, n, Duration::from_secs(30))
        .await?;
    Ok(got.into_iter().map(|m| m.data).collect())
}

fn single(text: &str) -> Op {
    Op::Send(SendArgs::Start(SendStart {
        room: ROOM.into(),
        label: LABEL.into(),
        to: None,
        payload: Payload::Text(text.into()),
        info: None,
        more: false,
        progress: false,
    }))
}

fn batch(payloads: Vec<Payload>) -> Op {
    Op::Send(SendArgs::Batch(SendBatch {
        room: ROOM.into(),
        label: LABEL.into(),
        to: None,
        payloads,
        info: None,
    }))
}

/// Single sends and batches written back to back, none waiting for a reply: the receiver gets
/// every message of every batch as a message of its own, in the order of the requests, and
/// each batch's reply counts them all delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_their_place_among_single_sends() -> Result<()> {
    let env = TestEnv::new()?;
    let (da, db, a, mut b) = pair(&env).await?;
    let bytes: Vec<Payload> = (0..300u32)
        .map(|k| Payload::Bytes(k.to_be_bytes().repeat(1 + k as usize % 50)))
        .collect();
    let texts: Vec<Payload> = (0..200).map(|k| Payload::Text(format!("t{k}"))).collect();
    let mut expect = vec![MessageData::Text("first".into())];
    expect.extend(bytes.iter().map(|p| match p {
        Payload::Bytes(b) => MessageData::Bytes(b.clone()),
        _ => unreachable!(),
    }));
    expect.push(MessageData::Text("middle".into()));
    expect.extend((0..200).map(|k| MessageData::Text(format!("t{k}"))));
    expect.push(MessageData::Text("last".into()));

    let ops = [
        single("first"),
        batch(bytes),
        single("middle"),
        batch(texts),
        single("last"),
    ];
    let mut replies = Vec::new();
    for op in &ops {
        replies.push(a.client.issue(op).await?);
    }
    let got = receive(&mut b, expect.len()).await?;
    ensure!(got.len() == expect.len());
    for (k, (g, e)) in got.iter().zip(&expect).enumerate() {
        ensure!(g == e, "message {k}: got {g:?}, sent {e:?}");
    }
    let mut replies = replies.into_iter();
    for (op, reply) in ops.iter().zip(replies.by_ref()) {
        let Op::Send(SendArgs::Batch(sent)) = op else {
            reply.result().await?;
            continue;
        };
        let r: BatchResult = reply.typed().await?;
        let n = sent.payloads.len() as u64;
        ensure!(r.count == n, "{r:?}");
        ensure!(r.peers.len() == 1, "{r:?}");
        let p = &r.peers[0];
        ensure!(
            p.id == b.id && p.ok && p.delivered == n && p.failed.is_empty(),
            "{r:?}"
        );
    }
    // The client's typed call gives the same.
    let r = a
        .client
        .send_batch(ROOM, LABEL, vec![vec![7]; 3], SendOptions::to(b.id.clone()))
        .await?;
    ensure!(
        r.count == 3 && r.peers.iter().all(|p| p.ok && p.delivered == 3),
        "{r:?}"
    );
    ensure!(receive(&mut b, 3).await? == vec![MessageData::Bytes(vec![7]); 3]);
    da.assert_quiet_log()?;
    db.assert_quiet_log()?;
    Ok(())
}

/// A batch that breaks a rule is refused whole with `BAD_REQUEST` naming the rule, and none of
/// its messages is sent: the receiver's next message is the one sent after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_batch_is_refused_whole() -> Result<()> {
    let env = TestEnv::new()?;
    let (da, db, a, mut b) = pair(&env).await?;
    let refused = |why: &str, r: Result<BatchResult, ClientError>| -> Result<()> {
        match r {
            Err(ClientError::Daemon(e)) if e.code == ErrorCode::BadRequest => {
                ensure!(e.message.contains(why), "{why}: {}", e.message);
                Ok(())
            }
            other => anyhow::bail!("{why}: expected BAD_REQUEST, got {other:?}"),
        }
    };
    let to = || SendOptions::to(b.id.clone());
    refused("1 to", a.client.send_batch(ROOM, LABEL, vec![], to()).await)?;
    let too_many = vec![vec![1]; peerix_client::MAX_BATCH + 1];
    refused(
        "1 to",
        a.client.send_batch(ROOM, LABEL, too_many, to()).await,
    )?;
    // A str that is not UTF-8 in a text batch: sent as raw MessagePack.
    let mut args = batch(vec![Payload::Text("ok".into()), Payload::Text("ok".into())])
        .to_args()
        .context("args")?;
    if let peerix_client::proto::rmpv::Value::Map(m) = &mut args {
        for (k, v) in m.iter_mut() {
            if k.as_str() == Some("batch") {
                *v = peerix_client::proto::rmpv::Value::Array(vec![
                    "ok".into(),
                    peerix_client::proto::rmpv::Value::Binary(vec![0xff]),
                ]);
            }
        }
    }
    let r = a.client.request_raw("send", args).await;
    match r {
        Err(ClientError::Daemon(e)) if e.code == ErrorCode::BadRequest => {
            ensure!(e.message.contains("`batch[1]`"), "{}", e.message)
        }
        other => anyhow::bail!("a bin in a text batch: expected BAD_REQUEST, got {other:?}"),
    }
    let info =
        peerix_client::proto::rmpv::Value::Map(vec![("big".into(), "x".repeat(20_000).into())]);
    let opts = SendOptions {
        to: Some(b.id.clone()),
        info: Some(info),
    };
    refused(
        "16320",
        a.client.send_batch(ROOM, LABEL, vec![vec![1]], opts).await,
    )?;
    a.client
        .send_text(ROOM, LABEL, "after", SendOptions::default())
        .await?;
    let got = receive(&mut b, 1).await?;
    ensure!(got == vec![MessageData::Text("after".into())], "{got:?}");
    da.assert_quiet_log()?;
    db.assert_quiet_log()?;
    Ok(())
}

/// The receiver leaves while a large batch is on its way: the reply says which messages did
/// not reach it (by index, `SEND_FAILED`), and that every other one did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_short_says_what_did_not_arrive() -> Result<()> {
    let env = TestEnv::new()?;
    let (_da, _db, a, mut b) = pair(&env).await?;
    // 9.4 MiB in one request (under the 16 MiB max_frame), a few hundred ms on loopback.
    const N: usize = 200;
    let big = Op::Send(SendArgs::Batch(SendBatch {
        room: ROOM.into(),
        label: LABEL.into(),
        to: Some(b.id.clone()),
        payloads: vec![Payload::Bytes(vec![5u8; 48 << 10]); N],
        info: None,
    }));
    let sending = a.client.issue(&big).await?;
    receive(&mut b, 1).await?;
    b.leave().await?;
    let r: BatchResult = sending.typed().await?;
    ensure!(r.count == N as u64 && r.peers.len() == 1, "{r:?}");
    let p = &r.peers[0];
    ensure!(!p.ok && !p.failed.is_empty(), "nothing failed: {p:?}");
    ensure!(p.delivered as usize + p.failed.len() == N, "{p:?}");
    let mut last = None;
    for f in &p.failed {
        ensure!(f.error.code == ErrorCode::SendFailed, "{f:?}");
        ensure!(
            (f.index as usize) < N && last.is_none_or(|l| l < f.index),
            "{p:?}"
        );
        last = Some(f.index);
    }
    // What failed is the tail: a message after a delivered one never fails before it.
    ensure!(
        p.failed.first().is_some_and(|f| f.index >= p.delivered),
        "failures before delivered messages: {p:?}"
    );
    Ok(())
}

/// `peerix send --lines`: every line of standard input arrives as a text message of its own, in
/// order, and the CLI says how many went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_standard_input_line_by_line() -> Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let env = TestEnv::new()?;
    let (da, db, a, mut b) = pair(&env).await?;
    const LINES: usize = 3000;
    let mut cli = tokio::process::Command::new(bin("peerix")?)
        .arg("--socket")
        .arg(&da.socket)
        .args(["send", ROOM, LABEL, "--lines", "--to", &b.id])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting peerix send --lines")?;
    let mut stdin = cli.stdin.take().context("stdin")?;
    let feed = tokio::spawn(async move {
        // In pieces, with pauses: batches are what has arrived, not a fixed size.
        for chunk in (0..LINES).collect::<Vec<_>>().chunks(700) {
            let text: String = chunk.iter().map(|k| format!("line {k}\n")).collect();
            stdin.write_all(text.as_bytes()).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    });
    let got = receive(&mut b, LINES).await?;
    feed.await??;
    let out = cli.wait_with_output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.contains(&format!("{LINES} lines sent, 0 not delivered")),
        "{stdout}"
    );
    for (k, m) in got.iter().enumerate() {
        ensure!(
            *m == MessageData::Text(format!("line {k}")),
            "message {k}: {m:?}"
        );
    }
    drop(a);
    da.assert_quiet_log()?;
    db.assert_quiet_log()?;
    Ok(())
}
