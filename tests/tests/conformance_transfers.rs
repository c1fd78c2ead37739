//! Conformance of transfers (issue 11, part 2): progress frames and messages aborted midway,
//! between two real daemons over the real socket.

use std::time::Duration;

use anyhow::{Context as _, Result};
use peerix_client::SendOptions;
use peerix_ipc_proto::rmpv::Value;
use peerix_ipc_proto::{OpenArgs, Progress};
use peerix_system_tests::raw::*;
use peerix_system_tests::*;

/// Progress: a real total, at most about 10 frames a second per peer, and always a final
/// `done` (also when the message went to nobody, or the peer failed, with `error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_paced_and_always_ends_with_done() -> Result<()> {
    let env = TestEnv::new()?;
    let (da, _db, mut a, mut b) = pair(&env, "p").await?;
    let b_id = b.id.clone();
    open_both(&mut a, &mut b, "bulk").await?;
    let (mut r, _) = Raw::hello(&da).await?;

    // One 3 MB message.
    let size = 3_000_000u64;
    let t = std::time::Instant::now();
    r.request(
        1,
        "send",
        map(vec![
            ("room", "p".into()),
            ("label", "bulk".into()),
            ("type", "bytes".into()),
            ("data", Value::Binary(vec![7; size as usize])),
            ("progress", true.into()),
        ]),
    )
    .await?;
    let mut frames = vec![];
    let rep = r.reply(1, &mut frames).await?;
    let took = t.elapsed();
    assert!(rep.ok, "{rep:?}");
    let (last_at, last) = frames.last().cloned().context("progress frames")?;
    let _ = last_at;
    assert!(last.done && last.error.is_none(), "{last:?}");
    assert_eq!((last.current, last.total), (size, Some(size)), "{last:?}");
    assert_eq!(last.peer.as_deref(), Some(b_id.as_str()));
    assert!(
        frames.iter().all(|(_, p)| p.total == Some(size)),
        "real total: {frames:?}"
    );
    assert_eq!(frames.iter().filter(|(_, p)| p.done).count(), 1);
    let allowed = 2 + (took.as_secs_f64() * 10.0).ceil() as usize;
    eprintln!("3 MB: {} progress frames in {took:?}", frames.len());
    assert!(
        frames.len() <= allowed,
        "{} frames in {took:?}",
        frames.len()
    );

    // A streamed message: no total until the end, then the real one.
    r.request(
        2,
        "send",
        map(vec![
            ("room", "p".into()),
            ("label", "bulk".into()),
            ("type", "bytes".into()),
            ("more", true.into()),
            ("progress", true.into()),
        ]),
    )
    .await?;
    let mut frames = vec![];
    let rep = r.reply(2, &mut frames).await?;
    let transfer = rep
        .result
        .as_ref()
        .and_then(|v| value_of(v, "transfer"))
        .and_then(Value::as_u64)
        .context("transfer")?;
    for (i, more) in [(3u64, true), (4, false)] {
        r.request(
            i,
            "send",
            map(vec![
                ("transfer", transfer.into()),
                ("data", Value::Binary(vec![1; 1 << 20])),
                ("more", more.into()),
            ]),
        )
        .await?;
        let rep = r.reply(i, &mut frames).await?;
        assert!(rep.ok, "{rep:?}");
    }
    let stream: Vec<&Progress> = frames
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p.id == 2)
        .collect();
    let last = stream.last().context("stream progress")?;
    assert!(
        last.done && last.total == Some(2 << 20) && last.current == 2 << 20,
        "{last:?}"
    );
    assert!(
        stream.iter().filter(|p| !p.done).all(|p| p.total.is_none()),
        "no made-up total before the end: {stream:?}"
    );

    // A peer that fails: a raw channel takes no message over 64 KiB.
    a.client
        .open(OpenArgs {
            ordered: Some(false),
            ..OpenArgs::new("p", "raw")
        })
        .await?;
    b.wait_for("raw open at b", CONNECT, |e| {
        e.name == "channel:open" && field(e, "label") == Some("raw")
    })
    .await?;
    r.request(
        5,
        "send",
        map(vec![
            ("room", "p".into()),
            ("label", "raw".into()),
            ("type", "bytes".into()),
            ("data", Value::Binary(vec![0; 100_000])),
            ("progress", true.into()),
        ]),
    )
    .await?;
    let mut frames = vec![];
    let rep = r.reply(5, &mut frames).await?;
    assert!(rep.ok, "{rep:?}");
    let last = &frames.last().context("a done frame for a failing peer")?.1;
    assert!(last.done && last.error.is_some(), "{last:?}");
    assert_eq!(last.peer.as_deref(), Some(b_id.as_str()));

    // Nobody to send to: b leaves; a done frame without peer, with error.
    b.leave().await?;
    a.wait_for("b gone", CONNECT, |e| is(e, "connection:closed", &b_id))
        .await?;
    r.request(
        6,
        "send",
        map(vec![
            ("room", "p".into()),
            ("label", "bulk".into()),
            ("type", "text".into()),
            ("data", "anyone?".into()),
            ("progress", true.into()),
        ]),
    )
    .await?;
    let mut frames = vec![];
    let rep = r.reply(6, &mut frames).await?;
    assert!(rep.ok, "{rep:?}");
    let last = &frames
        .last()
        .context("a done frame when nobody is there")?
        .1;
    assert!(
        last.done && last.peer.is_none() && last.error.is_some(),
        "{last:?}"
    );
    Ok(())
}

/// How a message is cut in the middle.
enum Cut {
    SenderCloses,
    SenderLeaves,
    ReceiverLeaves,
}

/// Every message aborted after parts went out ends with `channel:error` naming its transfer at
/// the receiver, and no final part follows.
async fn aborted_message_ends_with_channel_error(cut: Cut) -> Result<()> {
    let env = TestEnv::new()?;
    let (da, db, mut a, mut b) = pair(&env, "cut").await?;
    open_both(&mut a, &mut b, "bulk").await?;
    let sender = da.client().await?;
    let send = tokio::spawn(async move {
        sender
            .send_bytes("cut", "bulk", vec![0x5a; 200 << 20], SendOptions::default())
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
        .context("transfer")?;
    match cut {
        Cut::SenderCloses => a.client.close("cut", "bulk", None).await?,
        Cut::SenderLeaves => drop(a.leave().await?),
        Cut::ReceiverLeaves => drop(b.leave().await?),
    }
    let err = b
        .wait_for(
            "channel:error naming the transfer",
            Duration::from_secs(10),
            |e| {
                e.name == "channel:error"
                    && value(e, "transfer").and_then(|v| v.as_u64()) == Some(transfer)
            },
        )
        .await?;
    // Before that channel's `channel:close` (PROTOCOL.md §7): what arrived first is in the
    // backlog.
    assert!(
        !b.backlog
            .iter()
            .any(|e| e.name == "channel:close" && field(e, "label") == Some("bulk")),
        "channel:close came before the channel:error: {:?}",
        b.backlog
    );
    let code = value(&err, "error")
        .and_then(|e| value_of(e, "code"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    assert_eq!(code.as_deref(), Some("SEND_FAILED"), "{err:?}");
    let events = b.drain_for(Duration::from_millis(300)).await;
    assert!(
        !events.iter().any(|e| e.name == "channel:message"
            && value(e, "transfer").and_then(|v| v.as_u64()) == Some(transfer)
            && value(e, "final").and_then(|v| v.as_bool()) == Some(true)),
        "no final part after the error"
    );
    send.abort();
    drop(db);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_when_the_sender_closes_the_channel() -> Result<()> {
    aborted_message_ends_with_channel_error(Cut::SenderCloses).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_when_the_sender_leaves() -> Result<()> {
    aborted_message_ends_with_channel_error(Cut::SenderLeaves).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_when_the_receiver_leaves() -> Result<()> {
    aborted_message_ends_with_channel_error(Cut::ReceiverLeaves).await
}

/// Raw channels carry only the data, as WebRTC does: text and JSON go as string messages and
/// arrive as `text`, bytes arrive as `bytes` (they all arrived as `bytes` before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_channels_keep_text_apart_from_bytes() -> Result<()> {
    let env = TestEnv::new()?;
    let (_da, _db, a, mut b) = pair(&env, "raw").await?;
    a.client
        .open(OpenArgs {
            ordered: Some(false),
            ..OpenArgs::new("raw", "fast")
        })
        .await?;
    b.wait_for("fast open at b", CONNECT, |e| {
        e.name == "channel:open" && field(e, "label") == Some("fast")
    })
    .await?;
    let opts = SendOptions::default;
    a.client.send_text("raw", "fast", "hé", opts()).await?;
    a.client
        .send_json("raw", "fast", map(vec![("k", 1.into())]), opts())
        .await?;
    a.client
        .send_bytes("raw", "fast", vec![1, 2], opts())
        .await?;
    let mut got = vec![];
    while got.len() < 3 {
        let m = b
            .wait_for("a raw message", CONNECT, |e| {
                e.name == "channel:message" && field(e, "label") == Some("fast")
            })
            .await?;
        got.push((
            field(&m, "type").map(str::to_owned),
            value(&m, "data").cloned(),
        ));
    }
    // Unordered: compare as a set.
    for want in [
        (Some("text".to_string()), Some(Value::from("hé"))),
        (Some("text".to_string()), Some(Value::from(r#"{"k":1}"#))),
        (Some("bytes".to_string()), Some(Value::Binary(vec![1, 2]))),
    ] {
        assert!(got.contains(&want), "{want:?} in {got:?}");
    }
    Ok(())
}
