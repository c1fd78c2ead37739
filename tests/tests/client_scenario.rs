//! The client conformance scenario (`clients/conformance/SCENARIO.md`) with the Rust client,
//! against two real daemons on the `local` driver. The Python and Node clients run the same
//! scenario (`clients/python/tests/test_conformance.py`, `clients/node/test/conformance.test.js`).

use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use peerix_system_tests::peerix_client::{Client, Event, SendOptions};
use peerix_system_tests::peerix_ipc_proto::{rmpv::Value, JoinArgs, OpenArgs, SendResult};
use peerix_system_tests::{field, value, TestEnv};
use tokio::sync::mpsc::Receiver;

const T: Duration = Duration::from_secs(20);

/// The next event called `name` that matches `pred`, skipping others.
async fn next(
    rx: &mut Receiver<Event>,
    name: &str,
    pred: impl Fn(&Event) -> bool,
) -> Result<Event> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if ev.name == name && pred(&ev) => return Ok(ev),
            Ok(Some(_)) => {}
            Ok(None) => bail!("event stream ended before {name}"),
            Err(_) => bail!("timed out waiting for {name}"),
        }
    }
}

/// One whole `channel:message` of type `kind`: its data, parts joined by offset.
async fn message(rx: &mut Receiver<Event>, kind: &str) -> Result<Value> {
    let first = next(rx, "channel:message", |_| true).await?;
    ensure!(
        field(&first, "type") == Some(kind),
        "type: {:?}",
        first.data
    );
    let data = value(&first, "data").cloned().context("data")?;
    if value(&first, "final") == Some(&Value::Boolean(true)) {
        return Ok(data);
    }
    let mut bytes = data.as_slice().context("parts of bytes")?.to_vec();
    loop {
        let p = next(rx, "channel:message", |_| true).await?;
        ensure!(
            value(&p, "offset").and_then(Value::as_u64) == Some(bytes.len() as u64),
            "offset"
        );
        bytes.extend_from_slice(
            value(&p, "data")
                .and_then(Value::as_slice)
                .context("part")?,
        );
        if value(&p, "final") == Some(&Value::Boolean(true)) {
            return Ok(Value::Binary(bytes));
        }
    }
}

fn all_ok(r: &SendResult) -> bool {
    r.peers
        .as_ref()
        .is_some_and(|p| !p.is_empty() && p.iter().all(|p| p.ok))
}

async fn expect_code<T: std::fmt::Debug>(
    code: &str,
    r: peerix_system_tests::peerix_client::Result<T>,
) -> Result<()> {
    match r {
        Err(e) if e.to_string().contains(code) => Ok(()),
        other => bail!("expected {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn conformance_scenario() -> Result<()> {
    let env = TestEnv::new()?;
    let (a, b) = tokio::try_join!(env.daemon("a", &[]), env.daemon("b", &[]))?;
    let room = format!("conf-{}", std::process::id());

    // 1. Handshake.
    let h: Client = a.client().await?;
    let w = h.welcome().clone();
    ensure!(w.version == 1);
    for cap in [
        "events",
        "progress",
        "streamed-send",
        "holds",
        "resume",
        "inbox",
    ] {
        ensure!(
            w.capabilities.iter().any(|c| c == cap),
            "capabilities {:?}",
            w.capabilities
        );
    }
    ensure!(w.epoch != 0 && w.max_frame > 0);

    // 2. Subscribe by group (B) and by name (A).
    let bc = b.client().await?;
    let mut b_ev = bc
        .subscribe(&["connection", "channel"], Some(&room))
        .await?;
    let e1 = a.client().await?;
    let mut e1_ev = e1
        .subscribe(&["channel:message", "connection:connected"], Some(&room))
        .await?;

    // 3. Join.
    let mut args = JoinArgs::new(room.clone());
    args.metadata = Some(Value::Map(vec![("name".into(), "conformance".into())]));
    let joined = h.join(args).await?;
    ensure!(joined.id != w.id, "the room id must not be the machine id");
    let st = h.status().await?;
    let entry = st
        .rooms
        .iter()
        .find(|r| r.room == room)
        .context("room in status")?;
    ensure!(entry.id == joined.id && entry.holders == 1, "{entry:?}");
    bc.join(JoinArgs::new(room.clone())).await?;
    let ev = next(&mut b_ev, "connection:connected", |_| true).await?;
    ensure!(field(&ev, "peer") == Some(joined.id.as_str()));
    ensure!(bc.peers(&room).await?.len() == 1);
    next(&mut e1_ev, "connection:connected", |_| true).await?;

    // 4. Open.
    h.open(OpenArgs::new(room.clone(), "chat")).await?;
    next(&mut b_ev, "channel:open", |e| {
        field(e, "label") == Some("chat")
    })
    .await?;

    // 5. Each type, A -> B.
    let all = SendOptions::default;
    ensure!(all_ok(&h.send_text(&room, "chat", "héllo", all()).await?));
    ensure!(message(&mut b_ev, "text").await?.as_str() == Some("héllo"));
    ensure!(all_ok(
        &h.send_json(
            &room,
            "chat",
            peerix_system_tests::peerix_ipc_proto::rmpv::ext::to_value(
                serde_json::json!({"n": 1, "list": [1, "two", null]}),
            )?,
            all()
        )
        .await?
    ));
    let j = message(&mut b_ev, "json").await?;
    let j: serde_json::Value = peerix_system_tests::peerix_ipc_proto::rmpv::ext::from_value(j)?;
    ensure!(
        j == serde_json::json!({"n": 1, "list": [1, "two", null]}),
        "{j}"
    );
    let small: Vec<u8> = (0..16).collect();
    ensure!(all_ok(
        &h.send_bytes(&room, "chat", small.clone(), all()).await?
    ));
    ensure!(message(&mut b_ev, "bytes").await?.as_slice() == Some(&small[..]));
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let res = h
        .send_stream(
            &room,
            "chat",
            &big[..],
            Some(big.len() as u64),
            all(),
            |_| {},
        )
        .await?;
    ensure!(all_ok(&res));
    ensure!(message(&mut b_ev, "bytes").await?.as_slice() == Some(&big[..]));

    // 6. B -> A, received by a subscription by name.
    ensure!(all_ok(&bc.send_text(&room, "chat", "back", all()).await?));
    ensure!(message(&mut e1_ev, "text").await?.as_str() == Some("back"));

    // 7. Resume after reconnect.
    let (epoch, since) = (e1.epoch(), e1.last_seq());
    ensure!(epoch == w.epoch && since > 0);
    drop(e1_ev);
    drop(e1);
    for t in ["r1", "r2", "r3"] {
        ensure!(all_ok(&bc.send_text(&room, "chat", t, all()).await?));
    }
    let e2 = a.client().await?;
    let (mut e2_ev, res) = e2
        .subscribe_since(&["channel:message"], Some(&room), since, Some(epoch))
        .await?;
    ensure!(res.complete, "{res:?}");
    let mut seqs = vec![];
    for t in ["r1", "r2", "r3"] {
        let ev = next(&mut e2_ev, "channel:message", |_| true).await?;
        ensure!(field(&ev, "data") == Some(t), "{:?}", ev.data);
        seqs.push(ev.seq);
    }
    ensure!(
        seqs[0] > since && seqs.windows(2).all(|w| w[0] < w[1]),
        "{seqs:?}"
    );
    bc.send_text(&room, "chat", "r4", all()).await?;
    let r4 = next(&mut e2_ev, "channel:message", |_| true).await?;
    ensure!(field(&r4, "data") == Some("r4") && r4.seq > seqs[2]);
    let e3 = a.client().await?;
    let (mut e3_ev, res) = e3
        .subscribe_since(&["channel:message"], Some(&room), since, Some(epoch + 1))
        .await?;
    ensure!(!res.complete);
    let first = tokio::time::timeout(T, e3_ev.recv())
        .await?
        .context("lagged")?;
    ensure!(first.name == "lagged", "{}", first.name);

    // 8. Documented errors; the connection stays usable after each.
    expect_code(
        "UNKNOWN_OP",
        h.request_raw("no-such-op", Value::Map(vec![])).await,
    )
    .await?;
    expect_code("NOT_JOINED", h.leave("never-joined").await).await?;
    expect_code(
        "NOT_JOINED",
        h.send_text("never-joined", "default", "x", all()).await,
    )
    .await?;
    expect_code(
        "NO_SUCH_PEER",
        h.send_text(&room, "chat", "x", SendOptions::to("nobody"))
            .await,
    )
    .await?;
    expect_code(
        "NO_SUCH_CHANNEL",
        h.close(&room, "never-opened", None).await,
    )
    .await?;
    let no_type = Value::Map(vec![
        ("room".into(), room.as_str().into()),
        ("label".into(), "chat".into()),
        ("data".into(), "x".into()),
    ]);
    expect_code("BAD_REQUEST", h.request_raw("send", no_type).await).await?;
    let bad = Value::Map(vec![(
        "events".into(),
        Value::Array(vec!["Bad Pattern!".into()]),
    )]);
    expect_code("BAD_REQUEST", h.request_raw("subscribe", bad).await).await?;
    ensure!(!h.status().await?.rooms.is_empty());

    // 9. Leave.
    let (mut e2_room, _) = e2
        .subscribe_since(&["room"], None, e2.last_seq(), Some(epoch))
        .await?;
    let left = h.leave(&room).await?;
    ensure!(left.left, "{left:?}");
    let gone = next(&mut b_ev, "connection:closed", |_| true).await?;
    ensure!(field(&gone, "peer") == Some(joined.id.as_str()));
    let ev = next(&mut e2_room, "room:left", |_| true).await?;
    ensure!(ev.room.as_deref() == Some(room.as_str()));
    ensure!(h.status().await?.rooms.iter().all(|r| r.room != room));
    Ok(())
}
