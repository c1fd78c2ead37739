//! Conformance fixes found by a client written from PROTOCOL.md alone (issue 11, part 2): each
//! test drives a real daemon over the real socket and checks what the spec now says. Transfers
//! (progress, aborted messages) are in `conformance_transfers.rs`.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use peerix_client::SendOptions;
use peerix_ipc_proto::rmpv::Value;
use peerix_ipc_proto::{DaemonMessage, ErrorCode, OpenArgs, CAPABILITIES};
use peerix_system_tests::raw::*;
use peerix_system_tests::*;

/// `welcome.id` is the machine's id, not what peers see: each room has its own, in `join` and
/// `status.rooms[].id`. `welcome.capabilities` are the defined ones; `status.version` is the
/// bare version; `status.drivers` lists the configured drivers before any join, and a driver
/// that comes up is announced to `"*"` subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_status_and_driver_events() -> Result<()> {
    let env = TestEnv::new()?;
    let d = env.daemon("d", &[]).await?;
    let (_raw, welcome) = Raw::hello(&d).await?;
    assert_eq!(welcome.capabilities, CAPABILITIES.to_vec(), "{welcome:?}");
    assert_eq!(
        welcome.daemon,
        format!("peerixd/{}", env!("CARGO_PKG_VERSION"))
    );

    let c = d.client().await?;
    let st = c.status().await?;
    assert_eq!(st.version, env!("CARGO_PKG_VERSION"), "{st:?}");
    assert_eq!(st.id, welcome.id);
    let local = st
        .drivers
        .iter()
        .find(|x| x.name == "local")
        .with_context(|| format!("local driver listed before any join: {st:?}"))?;
    assert!(!local.active && local.state == "idle", "{local:?}");

    let mut events = c.subscribe(&["*"], None).await?;
    let joined = d.client().await?;
    let r = joined
        .join(peerix_ipc_proto::JoinArgs::new("lobby"))
        .await?;
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.recv().await {
            if e.name == "driver:active" {
                return Some(e);
            }
        }
        None
    })
    .await
    .context("driver:active within 10 s")?
    .context("event stream ended")?;
    assert_eq!(field(&ev, "driver"), Some("local"), "{ev:?}");
    assert!(ev.room.is_none());

    let st = c.status().await?;
    let local = st
        .drivers
        .iter()
        .find(|x| x.name == "local")
        .context("local")?;
    assert!(local.active && local.state == "active", "{local:?}");
    let room = st
        .rooms
        .iter()
        .find(|x| x.room == "lobby")
        .context("lobby")?;
    assert_eq!(room.id, r.id, "status.rooms[].id is the room's own id");
    assert_ne!(room.id, welcome.id, "a room's id is not the machine id");
    Ok(())
}

/// Optional `hello` fields may be absent or nil; a wrong-typed `version` is VERSION_MISMATCH;
/// integer map keys are MALFORMED_FRAME (message level) or BAD_REQUEST (in `args`).
#[tokio::test]
async fn malformed_hello_and_integer_keys() -> Result<()> {
    let env = TestEnv::new()?;
    let d = env.daemon("d", &[]).await?;

    let mut r = Raw::connect(&d).await?;
    r.body(&encode(&map(vec![
        ("type", "hello".into()),
        ("version", 1.into()),
        ("capabilities", Value::Nil),
    ])))
    .await?;
    match r.recv().await? {
        Some(DaemonMessage::Welcome(_)) => {}
        other => bail!("hello without client and with capabilities nil: {other:?}"),
    }

    let mut r = Raw::connect(&d).await?;
    r.body(&encode(&map(vec![
        ("type", "hello".into()),
        ("version", "1".into()),
        ("client", "c".into()),
    ])))
    .await?;
    let msg = r.expect_error_frame(ErrorCode::VersionMismatch).await?;
    assert!(msg.contains("version"), "{msg}");
    r.expect_eof().await?;

    // `{type: hello, 0: 1, 1: "c"}`: integer keys are not field positions.
    let mut r = Raw::connect(&d).await?;
    r.body(&encode(&Value::Map(vec![
        ("type".into(), "hello".into()),
        (0.into(), 1.into()),
        (1.into(), "c".into()),
    ])))
    .await?;
    let msg = r.expect_error_frame(ErrorCode::MalformedFrame).await?;
    assert!(msg.contains("string keys"), "{msg}");
    r.expect_eof().await?;

    let (mut r, _) = Raw::hello(&d).await?;
    r.body(&encode(&Value::Map(vec![
        ("type".into(), "request".into()),
        (0.into(), 5.into()),
        ("op".into(), "status".into()),
    ])))
    .await?;
    r.expect_error_frame(ErrorCode::MalformedFrame).await?;
    r.request(6, "join", Value::Map(vec![(0.into(), "lobby".into())]))
        .await?;
    let rep = r.reply(6, &mut vec![]).await?;
    assert_eq!(error_of(&rep), Some(&ErrorCode::BadRequest), "{rep:?}");
    r.request(7, "status", Value::Nil).await?;
    assert!(r.reply(7, &mut vec![]).await?.ok, "the connection goes on");
    Ok(())
}

/// `close` of a label that is not open is NO_SUCH_CHANNEL; a `send` on a label nobody opened
/// (also the default label) is NO_SUCH_CHANNEL at once, not a per-peer failure; a label the
/// remote opened can be sent on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_send_need_an_open_label() -> Result<()> {
    let env = TestEnv::new()?;
    let (_da, _db, mut a, mut b) = pair(&env, "labels").await?;
    let b_id = b.id.clone();

    let e = a
        .client
        .close("labels", "never", None)
        .await
        .expect_err("not open");
    assert!(format!("{e}").contains("NO_SUCH_CHANNEL"), "{e}");
    let e = a
        .client
        .close("labels", "never", Some(&b_id))
        .await
        .expect_err("not open to b");
    assert!(format!("{e}").contains("NO_SUCH_CHANNEL"), "{e}");

    let t = std::time::Instant::now();
    for label in ["never", "default"] {
        let e = a
            .client
            .send_text("labels", label, "hi", SendOptions::default())
            .await
            .expect_err("nobody opened it");
        assert!(format!("{e}").contains("NO_SUCH_CHANNEL"), "{label}: {e}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "at once: {:?}",
        t.elapsed()
    );

    // Opened by the remote only: usable here.
    open_both(&mut b, &mut a, "fromb").await?;
    let r = a
        .client
        .send_text("labels", "fromb", "hi", SendOptions::default())
        .await?;
    let peers = r.peers.clone().unwrap_or_default();
    assert!(!peers.is_empty() && peers.iter().all(|p| p.ok), "{r:?}");
    // Opened here: close works, then the label is gone.
    open_both(&mut a, &mut b, "chat").await?;
    a.client.close("labels", "chat", None).await?;
    let e = a
        .client
        .close("labels", "chat", None)
        .await
        .expect_err("closed");
    assert!(format!("{e}").contains("NO_SUCH_CHANNEL"), "{e}");
    Ok(())
}

/// A streamed chunk of another MessagePack type than the start's (including a str that is not
/// UTF-8, which decodes as bin) is BAD_REQUEST and aborts the transfer; nothing is corrupted.
#[tokio::test]
async fn streamed_chunks_must_match_the_start_type() -> Result<()> {
    let env = TestEnv::new()?;
    let d = env.daemon("d", &[]).await?;
    let c = d.client().await?;
    c.join(peerix_ipc_proto::JoinArgs::new("s")).await?;
    c.open(OpenArgs::new("s", "files")).await?;
    let (mut r, _) = Raw::hello(&d).await?;
    let start = |id: u64| {
        let m = map(vec![
            ("room", "s".into()),
            ("label", "files".into()),
            ("type", "text".into()),
            ("data", "abc".into()),
            ("more", true.into()),
        ]);
        (id, m)
    };
    for (n, bad_chunk) in [
        // bin in a text stream
        encode(&map(vec![
            ("transfer", 0.into()),
            ("data", Value::Binary(vec![0xff, 0xfe])),
            ("more", true.into()),
        ])),
        // a str whose bytes are not UTF-8
        {
            let mut m = vec![0x83, 0xa8];
            m.extend_from_slice(b"transfer");
            m.push(0x00);
            m.push(0xa4);
            m.extend_from_slice(b"data");
            m.extend_from_slice(&[0xa2, 0xff, 0xfe]);
            m.push(0xa4);
            m.extend_from_slice(b"more");
            m.push(0xc3);
            m
        },
    ]
    .into_iter()
    .enumerate()
    {
        let (id, args) = start(10 + 10 * n as u64);
        r.request(id, "send", args).await?;
        let rep = r.reply(id, &mut vec![]).await?;
        let transfer = rep
            .result
            .as_ref()
            .and_then(|v| value_of(v, "transfer"))
            .and_then(Value::as_u64)
            .with_context(|| format!("{rep:?}"))?;
        // The chunk's transfer field is the placeholder 0 at its fixed place: patch it.
        let chunk = patch_transfer(&bad_chunk, transfer);
        let chunk_req = {
            let mut m = vec![0x84, 0xa4];
            m.extend_from_slice(b"type");
            m.push(0xa7);
            m.extend_from_slice(b"request");
            m.push(0xa2);
            m.extend_from_slice(b"id");
            m.push((id + 1) as u8);
            m.push(0xa2);
            m.extend_from_slice(b"op");
            m.push(0xa4);
            m.extend_from_slice(b"send");
            m.push(0xa4);
            m.extend_from_slice(b"args");
            m.extend_from_slice(&chunk);
            m
        };
        r.body(&chunk_req).await?;
        let rep = r.reply(id + 1, &mut vec![]).await?;
        assert_eq!(
            error_of(&rep),
            Some(&ErrorCode::BadRequest),
            "case {n}: {rep:?}"
        );
        let msg = &rep.error.as_ref().context("error")?.message;
        assert!(msg.contains("aborted"), "case {n}: {msg}");
        // The transfer is gone.
        r.request(
            id + 2,
            "send",
            map(vec![
                ("transfer", transfer.into()),
                ("data", "more".into()),
                ("more", false.into()),
            ]),
        )
        .await?;
        let rep = r.reply(id + 2, &mut vec![]).await?;
        assert_eq!(
            error_of(&rep),
            Some(&ErrorCode::BadRequest),
            "case {n}: {rep:?}"
        );
    }
    Ok(())
}

/// Replaces the positive fixint 0 after the `transfer` key of an encoded chunk map.
fn patch_transfer(chunk: &[u8], transfer: u64) -> Vec<u8> {
    let key = b"transfer";
    let at = chunk
        .windows(key.len())
        .position(|w| w == key)
        .expect("transfer key")
        + key.len();
    let mut out = chunk[..at].to_vec();
    out.extend_from_slice(&encode(&Value::from(transfer)));
    out.extend_from_slice(&chunk[at + 1..]);
    out
}

/// A JSON message is never split: one whose event could not fit `max_frame` is refused at the
/// sender with LIMIT_EXCEEDED (it used to be accepted and replaced by an error at receivers).
#[tokio::test]
async fn json_too_large_for_one_event_is_refused_at_the_sender() -> Result<()> {
    let env = TestEnv::new()?;
    let d = env.daemon("d", &[]).await?;
    let c = d.client().await?;
    c.join(peerix_ipc_proto::JoinArgs::new("j")).await?;
    c.open(OpenArgs::new("j", "chat")).await?;
    // The request frame fits 16 MiB; the event (the same string plus the event's fields) not.
    let big = "x".repeat(peerix_ipc_proto::DEFAULT_MAX_FRAME - 200);
    let e = c
        .send_json(
            "j",
            "chat",
            Value::from(big.as_str()),
            SendOptions::default(),
        )
        .await
        .expect_err("too large for one event");
    let text = format!("{e}");
    assert!(
        text.contains("LIMIT_EXCEEDED") && text.contains("max_frame"),
        "{text}"
    );
    // Well below the limit: accepted.
    c.send_json("j", "chat", Value::from("small"), SendOptions::default())
        .await?;
    Ok(())
}
