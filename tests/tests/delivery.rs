//! Delivery to local clients (issue 11, PROTOCOL.md "Delivery"): a stalled subscriber never
//! slows a fast one and, when it reads again, gets every event in order or a `lagged` event for
//! exactly what it will never get; a client that reconnects resumes with `subscribe since`
//! without losing or repeating an event; a message that arrives while nobody subscribes is
//! acknowledged and kept in the room's inbox.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use peerix_client::{lagged, Client, SendOptions};
use peerix_ipc_proto::{
    decode_daemon, encode_frame, ClientMessage, DaemonMessage, ErrorCode, Event, FrameDecoder,
    Hello, Request, PROTOCOL_VERSION,
};
use peerix_system_tests::*;
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const CONNECT: Duration = Duration::from_secs(10);
const ROOM: &str = "demo";
const LABEL: &str = "feed";

/// A receiving and a sending daemon in one room, the sender's label open at the receiver. The
/// receiver's member stops listening (it would be one more subscriber).
async fn pair(
    env: &TestEnv,
    receiver_env: &[(&str, &str)],
) -> Result<(DaemonProc, DaemonProc, Member)> {
    let receiver = env.daemon_with_env("receiver", &[], receiver_env).await?;
    let sender = env.daemon("sender", &[]).await?;
    let mut r = Member::join(&receiver, ROOM, |_| {}).await?;
    let mut s = Member::join(&sender, ROOM, |_| {}).await?;
    let (r_id, s_id) = (r.id.clone(), s.id.clone());
    r.wait_for("r sees s", CONNECT, |e| {
        is(e, "connection:connected", &s_id)
    })
    .await?;
    s.wait_for("s sees r", CONNECT, |e| {
        is(e, "connection:connected", &r_id)
    })
    .await?;
    s.open(LABEL).await?;
    r.wait_for("feed open at r", CONNECT, |e| {
        is(e, "channel:open", &s_id) && field(e, "label") == Some(LABEL)
    })
    .await?;
    r.client.unsubscribe().await?;
    Ok((receiver, sender, s))
}

/// Message `i`: its number in the first 8 characters, padded to `size` bytes.
fn message(i: usize, size: usize) -> String {
    let mut m = format!("{i:08}");
    m.extend(std::iter::repeat_n('.', size.saturating_sub(8)));
    m
}

/// The number a message event carries.
fn counter(ev: &Event) -> Option<usize> {
    value(ev, "data")?.as_str()?.get(..8)?.parse().ok()
}

/// Sends messages `range` one after the other, each acknowledged by the receiver.
async fn send_range(s: &Client, range: std::ops::Range<usize>, size: usize) -> Result<()> {
    for i in range {
        let r = s
            .send_text(ROOM, LABEL, &message(i, size), SendOptions::default())
            .await
            .with_context(|| format!("sending message {i}"))?;
        let peers = r.peers.unwrap_or_default();
        ensure!(
            !peers.is_empty() && peers.iter().all(|p| p.ok),
            "message {i} was not acknowledged: {peers:?}"
        );
    }
    Ok(())
}

/// A raw connection subscribed to `channel:message`, which reads nothing until told.
async fn raw_subscriber(d: &DaemonProc) -> Result<(UnixStream, FrameDecoder)> {
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
    let mut dec = FrameDecoder::new(64 << 20);
    let mut seen = 0;
    while seen < 2 {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(CONNECT, s.read(&mut buf)).await??;
        ensure!(n > 0, "the daemon closed a new subscriber");
        dec.buffer_mut().extend_from_slice(&buf[..n]);
        while dec.next_frame_bytes()?.is_some() {
            seen += 1;
        }
    }
    Ok((s, dec))
}

/// Everything a fast subscriber receives: (seq, counter, when).
fn collect(
    mut rx: tokio::sync::mpsc::Receiver<Event>,
) -> tokio::task::JoinHandle<Vec<(u64, usize, Instant)>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(ev) = rx.recv().await {
            if let Some(c) = counter(&ev) {
                got.push((ev.seq, c, Instant::now()));
            }
        }
        got
    })
}

/// Messages per second between the first and the last of `got[from..]`.
fn rate(got: &[(u64, usize, Instant)]) -> f64 {
    match (got.first(), got.last()) {
        (Some(a), Some(b)) if got.len() > 1 => {
            (got.len() - 1) as f64 / b.2.duration_since(a.2).as_secs_f64().max(1e-6)
        }
        _ => 0.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_gets_everything_or_lagged_and_never_slows_a_fast_one() -> Result<()> {
    const SIZE: usize = 64 << 10;
    const BASELINE: usize = 120;
    const STALLED: usize = 640; // 40 MiB, well past the lag limit and the replay buffer
    let env = TestEnv::new()?;
    // The hard per-client limit a client that stops reading would have hit before this change.
    let (receiver, _sender, s) =
        pair(&env, &[("PEERIX_IPC__CLIENT_QUEUE_LIMIT", "20971520")]).await?;
    let fast_client = receiver.client().await?;
    let fast = collect(fast_client.subscribe(&["channel:message"], None).await?);

    // Baseline: the fast subscriber alone.
    let t0 = Instant::now();
    send_range(&s.client, 0..BASELINE, SIZE).await?;
    let baseline_send = BASELINE as f64 / t0.elapsed().as_secs_f64();

    // Now with a subscriber that stops reading.
    let (mut stalled, mut dec) = raw_subscriber(&receiver).await?;
    let t1 = Instant::now();
    send_range(&s.client, BASELINE..BASELINE + STALLED, SIZE).await?;
    let sent_at = Instant::now();
    let with_stalled_send = STALLED as f64 / sent_at.duration_since(t1).as_secs_f64();

    // The fast one has everything, promptly (its events end when it disconnects).
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(fast_client);
    let got = fast.await?;
    let counters: Vec<usize> = got.iter().map(|g| g.1).collect();
    ensure!(
        counters == (0..BASELINE + STALLED).collect::<Vec<_>>(),
        "the fast subscriber missed or reordered messages: got {} of {}",
        counters.len(),
        BASELINE + STALLED
    );
    let fast_base = rate(&got[..BASELINE]);
    let fast_with = rate(&got[BASELINE..]);
    let last_at = got.last().map(|g| g.2).context("no events")?;
    let behind = last_at.saturating_duration_since(sent_at);
    println!(
        "fast subscriber: {fast_base:.0} msg/s alone, {fast_with:.0} msg/s beside the stalled one \
         (sender {baseline_send:.0} and {with_stalled_send:.0} msg/s, 64 KiB messages); last \
         message {behind:?} after the last ack"
    );
    ensure!(
        behind < Duration::from_secs(2),
        "the fast subscriber fell behind"
    );
    ensure!(
        fast_with > fast_base / 3.0,
        "the fast subscriber slowed down beside the stalled one"
    );

    // The stalled one reads again: every message in order, or `lagged` for exactly the gap.
    let truth: Vec<u64> = got.iter().map(|g| g.0).collect();
    let t2 = Instant::now();
    // Where its subscription began: at the latest the first message sent after it.
    let mut idx = usize::MAX;
    let mut lagged_seen = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    while idx == usize::MAX || idx < truth.len() {
        let n = tokio::time::timeout(Duration::from_secs(20), stalled.read(&mut buf))
            .await
            .context("the stalled subscriber got nothing more")??;
        if n == 0 {
            bail!(
                "the daemon closed the stalled subscriber without an error frame, at message {}",
                idx
            );
        }
        dec.buffer_mut().extend_from_slice(&buf[..n]);
        while let Some(f) = dec.next_frame_bytes()? {
            match decode_daemon(&f)? {
                DaemonMessage::Event(ev) if ev.name == "lagged" => {
                    let l = lagged(&ev).context("lagged data")?;
                    if idx == usize::MAX {
                        idx = truth.partition_point(|&s| s < l.from);
                    }
                    ensure!(ev.seq == l.to, "lagged seq {} is not its `to`", ev.seq);
                    ensure!(
                        idx < truth.len() && truth[idx] >= l.from,
                        "lagged {l:?} skips a message the client had not got yet"
                    );
                    let k = truth[idx..].partition_point(|&s| s <= l.to);
                    ensure!(
                        l.count == k as u64,
                        "lagged {l:?} counts {} but {k} messages are in its range",
                        l.count
                    );
                    idx += k;
                    lagged_seen.push(l);
                }
                DaemonMessage::Event(ev) => {
                    if idx == usize::MAX {
                        idx = truth.partition_point(|&s| s < ev.seq);
                        ensure!(
                            idx <= BASELINE,
                            "the stalled subscriber's first message is {idx}"
                        );
                    }
                    ensure!(
                        idx < truth.len() && ev.seq == truth[idx],
                        "the stalled subscriber got seq {} where {:?} was due (a gap without \
                         lagged, or a duplicate)",
                        ev.seq,
                        truth.get(idx)
                    );
                    idx += 1;
                }
                DaemonMessage::Error(e) => bail!("the stalled subscriber was cut: {e:?}"),
                other => bail!("unexpected frame {other:?}"),
            }
        }
    }
    println!(
        "stalled subscriber caught up in {:?}; lagged: {:?}",
        t2.elapsed(),
        lagged_seen
    );
    ensure!(
        !lagged_seen.is_empty(),
        "40 MiB past a 16 MiB replay buffer: a lagged event was due"
    );
    // And it is still connected: a request on it is answered.
    let status = ClientMessage::Request(Request {
        id: 9,
        op: "status".into(),
        args: Value::Map(vec![]),
    });
    stalled.write_all(&encode_frame(&status)?).await?;
    loop {
        let n = tokio::time::timeout(CONNECT, stalled.read(&mut buf)).await??;
        ensure!(n > 0, "the stalled subscriber was disconnected");
        dec.buffer_mut().extend_from_slice(&buf[..n]);
        if let Some(f) = dec.next_frame_bytes()? {
            match decode_daemon(&f)? {
                DaemonMessage::Reply(r) if r.id == 9 && r.ok => break,
                DaemonMessage::Error(e) => bail!("cut after catching up: {e:?}"),
                _ => {}
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_resumes_without_loss_or_duplicates() -> Result<()> {
    let env = TestEnv::new()?;
    let (receiver, _sender, s) = pair(&env, &[("PEERIX_IPC__REPLAY_EVENTS", "100")]).await?;
    let sender = std::sync::Arc::new(s.client);

    // A reads ten messages of a stream and goes away in the middle of it.
    let a = receiver.client().await?;
    let epoch = a.epoch();
    ensure!(epoch != 0, "welcome.epoch is never 0");
    let mut rx = a.subscribe(&["channel:message"], Some(ROOM)).await?;
    let streaming = {
        let sender = sender.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                send_range(&sender, i..i + 1, 100).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(())
        })
    };
    let mut last = 0;
    for want in 0..10 {
        let ev = tokio::time::timeout(CONNECT, rx.recv())
            .await?
            .context("events ended")?;
        ensure!(counter(&ev) == Some(want), "A got {:?}", counter(&ev));
        last = ev.seq;
    }
    drop(rx);
    drop(a);
    streaming.await??;

    // B resumes after the last one A saw: the rest in order, then live ones, nothing twice.
    let b = receiver.client().await?;
    ensure!(b.epoch() == epoch, "one daemon run, one epoch");
    let (mut rx, res) = b
        .subscribe_since(&["channel:message"], Some(ROOM), last, Some(epoch))
        .await?;
    ensure!(res.complete, "nothing was missing: {res:?}");
    ensure!(
        res.replayed == 20,
        "20 messages came after seq {last}: {res:?}"
    );
    send_range(&sender, 30..35, 100).await?;
    let mut prev = last;
    for want in 10..35 {
        let ev = tokio::time::timeout(CONNECT, rx.recv())
            .await?
            .context("events ended")?;
        ensure!(
            counter(&ev) == Some(want) && ev.seq > prev,
            "B got message {:?} (seq {}) where {want} was due",
            counter(&ev),
            ev.seq
        );
        prev = ev.seq;
    }
    ensure!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "B got a message twice"
    );
    let status = b.request_raw("status", Value::Map(vec![])).await?;
    let st_epoch = status
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("epoch")))
        .and_then(|(_, v)| v.as_u64());
    ensure!(st_epoch == Some(epoch), "status.epoch {st_epoch:?}");

    // Too late: 150 more messages pushed A's position out of a 100-event buffer.
    send_range(&sender, 35..185, 10).await?;
    let c = receiver.client().await?;
    let (mut rx, res) = c
        .subscribe_since(&["channel:message"], Some(ROOM), last, Some(epoch))
        .await?;
    ensure!(!res.complete, "{res:?}");
    let first = tokio::time::timeout(CONNECT, rx.recv())
        .await?
        .context("events ended")?;
    let l = lagged(&first).with_context(|| format!("lagged first, got {first:?}"))?;
    ensure!(l.from == last + 1 && l.reason == "evicted", "{l:?}");
    let next = tokio::time::timeout(CONNECT, rx.recv())
        .await?
        .context("events ended")?;
    ensure!(
        next.seq == l.to + 1 || next.seq > l.to,
        "{next:?} after {l:?}"
    );
    ensure!(counter(&next).is_some(), "{next:?}");

    // Another run's seq: lagged first, then what this run still has.
    let d = receiver.client().await?;
    let (mut rx, res) = d
        .subscribe_since(&["channel:message"], Some(ROOM), 5, Some(epoch + 1))
        .await?;
    ensure!(!res.complete, "{res:?}");
    let first = tokio::time::timeout(CONNECT, rx.recv())
        .await?
        .context("events ended")?;
    let l = lagged(&first).with_context(|| format!("lagged first, got {first:?}"))?;
    ensure!(l.reason == "epoch", "{l:?}");

    // A seq this run never reached is a mistake.
    let e = receiver.client().await?;
    let err = e
        .subscribe_since(&["*"], None, u64::MAX >> 12, Some(epoch))
        .await
        .expect_err("since in the future");
    ensure!(
        err.daemon_error().map(|b| b.code.clone()) == Some(ErrorCode::BadRequest),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_nobody_subscribed_to_is_acked_and_kept_in_the_inbox() -> Result<()> {
    let env = TestEnv::new()?;
    let (receiver, _sender, s) = pair(&env, &[("PEERIX_IPC__INBOX_EVENTS", "5")]).await?;
    let c = receiver.client().await?;

    // Acknowledged to the sender although no client of the receiver subscribes.
    send_range(&s.client, 0..1, 20).await?;
    let status = c.request_raw("status", Value::Map(vec![])).await?;
    let kept = status
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("rooms")))
        .and_then(|(_, v)| v.as_array())
        .and_then(|rooms| rooms.first())
        .and_then(|r| r.as_map())
        .and_then(|r| r.iter().find(|(k, _)| k.as_str() == Some("inbox")))
        .and_then(|(_, v)| v.as_u64());
    ensure!(kept == Some(1), "status.rooms[0].inbox: {kept:?}");
    let got = c.inbox(ROOM, None).await?;
    ensure!(
        got.events.len() == 1 && !got.more && got.dropped == 0,
        "{got:?}"
    );
    let ev = &got.events[0];
    ensure!(
        ev.name == "channel:message"
            && ev.room == ROOM
            && ev
                .data
                .as_map()
                .is_some_and(|m| m.iter().any(|(k, v)| k.as_str() == Some("data")
                    && v.as_str().is_some_and(|t| t.starts_with("00000000")))),
        "{ev:?}"
    );
    ensure!(c.inbox(ROOM, None).await?.events.is_empty(), "taken once");

    // Bounded: of 8 messages the oldest 3 are evicted, and counted.
    send_range(&s.client, 1..9, 20).await?;
    let got = c.inbox(ROOM, Some(2)).await?;
    let nums = |r: &peerix_ipc_proto::InboxResult| -> Vec<String> {
        r.events
            .iter()
            .filter_map(|e| {
                e.data
                    .as_map()?
                    .iter()
                    .find(|(k, _)| k.as_str() == Some("data"))?
                    .1
                    .as_str()
                    .map(|t| t[..8].to_string())
            })
            .collect()
    };
    ensure!(
        nums(&got) == ["00000004", "00000005"] && got.dropped == 3 && got.more,
        "{:?} dropped {} more {}",
        nums(&got),
        got.dropped,
        got.more
    );
    let got = c.inbox(ROOM, None).await?;
    ensure!(
        nums(&got) == ["00000006", "00000007", "00000008"] && got.dropped == 0 && !got.more,
        "{:?}",
        nums(&got)
    );
    // A subscriber takes the messages instead.
    let mut rx = c.subscribe(&["channel:message"], Some(ROOM)).await?;
    send_range(&s.client, 9..10, 20).await?;
    let ev = tokio::time::timeout(CONNECT, rx.recv())
        .await?
        .context("events ended")?;
    ensure!(counter(&ev) == Some(9), "{ev:?}");
    ensure!(
        c.inbox(ROOM, None).await?.events.is_empty(),
        "not kept twice"
    );

    let err = c.inbox("nope", None).await.expect_err("not joined");
    ensure!(
        err.daemon_error().map(|b| b.code.clone()) == Some(ErrorCode::NotJoined),
        "{err}"
    );
    Ok(())
}
