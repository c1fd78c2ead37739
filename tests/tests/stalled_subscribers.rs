//! Subscribers that stop reading cannot make the daemon hold more than `ipc.client_queue_budget`
//! for all clients together: the client furthest behind is cut (told `CLIENT_TOO_SLOW` if it
//! reads again, then disconnected), the others and the daemon carry on, and once the slow
//! clients are gone nothing stays queued. The figure is the daemon's own (`status` →
//! `ipc.queued`), sampled while two large messages reach five stalled subscribers.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use peerix_client::SendOptions;
use peerix_ipc_proto::{
    decode_daemon, encode_frame, ClientMessage, DaemonMessage, ErrorCode, FrameDecoder, Hello,
    Request, PROTOCOL_VERSION,
};
use peerix_system_tests::*;
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const CONNECT: Duration = Duration::from_secs(10);
const BUDGET: u64 = 24 << 20;
const PER_CLIENT: u64 = 20 << 20;

/// A subscriber to every message of the room that reads nothing after its `subscribe`.
async fn stalled_subscriber(d: &DaemonProc) -> Result<UnixStream> {
    let mut s = UnixStream::connect(&d.socket).await?;
    let hello = ClientMessage::Hello(Hello {
        version: PROTOCOL_VERSION,
        client: "stalled".into(),
        capabilities: vec![],
    });
    let args = Value::Map(vec![(
        Value::from("events"),
        Value::Array(vec![Value::from("channel:message")]),
    )]);
    let sub = ClientMessage::Request(Request {
        id: 1,
        op: "subscribe".into(),
        args,
    });
    s.write_all(&encode_frame(&hello)?).await?;
    s.write_all(&encode_frame(&sub)?).await?;
    // welcome and the subscribe reply, so the subscription is in place.
    let mut dec = FrameDecoder::new(64 << 20);
    let mut seen = 0;
    while seen < 2 {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(CONNECT, s.read(&mut buf)).await??;
        if n == 0 {
            bail!("the daemon closed a new subscriber");
        }
        dec.buffer_mut().extend_from_slice(&buf[..n]);
        while dec.next_frame_bytes()?.is_some() {
            seen += 1;
        }
    }
    Ok(s)
}

/// Reads everything left on a subscriber's connection, `chunk` bytes every `pause`; the last
/// frame, once the daemon closed it.
async fn last_frame(
    mut s: UnixStream,
    chunk: usize,
    pause: Duration,
) -> Result<Option<DaemonMessage>> {
    let mut dec = FrameDecoder::new(64 << 20);
    let mut last = None;
    let mut buf = vec![0u8; chunk];
    loop {
        tokio::time::sleep(pause).await;
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .context("the daemon kept a cut subscriber's connection open")??;
        if n == 0 {
            return Ok(last);
        }
        dec.buffer_mut().extend_from_slice(&buf[..n]);
        while let Some(f) = dec.next_frame_bytes()? {
            last = Some(decode_daemon(&f)?);
        }
    }
}

async fn queued(c: &peerix_client::Client) -> Result<(u64, u64)> {
    let status = c.request_raw("status", Value::Map(vec![])).await?;
    let ipc = status
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("ipc")))
        .map(|(_, v)| v.clone())
        .context("status has no `ipc` section")?;
    let get = |key: &str| {
        ipc.as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
            .and_then(|(_, v)| v.as_u64())
    };
    Ok((
        get("queued").context("ipc.queued")?,
        get("queue_budget").context("ipc.queue_budget")?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_never_hold_more_than_the_budget() -> Result<()> {
    let env = TestEnv::new()?;
    let budget = BUDGET.to_string();
    let per_client = PER_CLIENT.to_string();
    // This test is about the hard limits: events pause only a byte below them, so the
    // subscribers run into the limits as if they did not (delivery.rs tests the pause).
    let lag_limit = (PER_CLIENT - 1).to_string();
    let receiver = env
        .daemon_with_env(
            "receiver",
            &[],
            &[
                ("PEERIX_IPC__CLIENT_QUEUE_BUDGET", &budget),
                ("PEERIX_IPC__CLIENT_QUEUE_LIMIT", &per_client),
                ("PEERIX_IPC__LAG_LIMIT", &lag_limit),
                // Smaller parts, so a slow reader finishes the one in flight quickly.
                ("PEERIX_IPC__INLINE_MESSAGE_LIMIT", "262144"),
            ],
        )
        .await?;
    let sender = env.daemon("sender", &[]).await?;
    let mut r = Member::join(&receiver, "demo", |_| {}).await?;
    let mut s = Member::join(&sender, "demo", |_| {}).await?;
    let (r_id, s_id) = (r.id.clone(), s.id.clone());
    r.wait_for("r sees s", CONNECT, |e| {
        is(e, "connection:connected", &s_id)
    })
    .await?;
    s.wait_for("s sees r", CONNECT, |e| {
        is(e, "connection:connected", &r_id)
    })
    .await?;
    s.open("bulk").await?;
    r.wait_for("bulk open at r", CONNECT, |e| {
        is(e, "channel:open", &s_id) && field(e, "label") == Some("bulk")
    })
    .await?;
    // The member subscribed to everything would be one more slow reader; it stops listening.
    r.client.unsubscribe().await?;

    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stalled_subscriber(&receiver).await?);
    }
    // And one that reads, but at 1.25 MiB/s, far slower than the messages come.
    let slow = stalled_subscriber(&receiver).await?;
    let slow = tokio::spawn(last_frame(slow, 64 << 10, Duration::from_millis(50)));
    let control = receiver.client().await?;
    let (before, limit) = queued(&control).await?;
    assert_eq!(limit, BUDGET);

    // Two 16 MiB messages: 32 MiB for each of five subscribers, 160 MiB without a budget.
    let sending = tokio::spawn(async move {
        for i in 0..2u8 {
            s.client
                .send_bytes("demo", "bulk", vec![i; 16 << 20], SendOptions::default())
                .await?;
        }
        anyhow::Ok(s)
    });
    let mut peak = before;
    while !sending.is_finished() {
        peak = peak.max(queued(&control).await?.0);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = sending.await??;
    for _ in 0..50 {
        peak = peak.max(queued(&control).await?.0);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("peak queued {peak} bytes, budget {BUDGET}");
    assert!(peak <= BUDGET, "queued {peak} > budget {BUDGET}");
    assert!(
        peak > PER_CLIENT / 2,
        "the subscribers did fall behind: {peak}"
    );

    // The slow reader was cut and told why, after the frame it was reading.
    match slow.await?? {
        Some(DaemonMessage::Error(e)) => {
            assert_eq!(e.code, ErrorCode::ClientTooSlow, "{e:?}");
            assert!(e.message.contains("ipc.client_queue"), "{}", e.message);
        }
        other => bail!("the slow reader's last frame: {other:?}"),
    }
    // The stalled ones were disconnected: they find the end of the connection when they read
    // again (and CLIENT_TOO_SLOW only if they had read within the grace period).
    let mut told = 0;
    for sub in stalled {
        let last = last_frame(sub, 1 << 20, Duration::ZERO).await?;
        if let Some(DaemonMessage::Error(e)) = last {
            assert_eq!(e.code, ErrorCode::ClientTooSlow, "{e:?}");
            told += 1;
        }
    }
    println!("{told} of 4 stalled subscribers read a CLIENT_TOO_SLOW");

    // Nothing stays queued once they are gone, and the daemon carries on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (now, _) = queued(&control).await?;
        if now < 64 << 10 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{now} bytes still queued after the slow clients left");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh_client = receiver.client().await?;
    let mut fresh = fresh_client.subscribe(&["channel:message"], None).await?;
    s.client
        .send_text("demo", "bulk", "still here", SendOptions::default())
        .await?;
    let ev = tokio::time::timeout(CONNECT, fresh.recv())
        .await?
        .context("events ended")?;
    assert_eq!(ev.name, "channel:message");
    Ok(())
}
