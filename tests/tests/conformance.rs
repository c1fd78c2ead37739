//! Conformance fixes found by a client written from PROTOCOL.md alone (issue 11, part 2): each
//! test drives a real daemon over the real socket and checks what the spec now says.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use peerix_client::SendOptions;
use peerix_ipc_proto::rmpv::Value;
use peerix_ipc_proto::{
    decode_daemon, encode_frame, ClientMessage, DaemonMessage, ErrorCode, Hello, OpenArgs,
    Progress, Reply, Request, CAPABILITIES, PROTOCOL_VERSION,
};
use peerix_system_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const CONNECT: Duration = Duration::from_secs(15);

/// A client speaking raw frames, to see exactly what the daemon writes.
struct Raw {
    s: UnixStream,
}

impl Raw {
    async fn connect(d: &DaemonProc) -> Result<Self> {
        Ok(Self {
            s: UnixStream::connect(&d.socket).await?,
        })
    }

    async fn hello(d: &DaemonProc) -> Result<(Self, peerix_ipc_proto::Welcome)> {
        let mut r = Self::connect(d).await?;
        r.send(&ClientMessage::Hello(Hello {
            version: PROTOCOL_VERSION,
            client: "conformance".into(),
            capabilities: vec![],
        }))
        .await?;
        match r.recv().await? {
            Some(DaemonMessage::Welcome(w)) => Ok((r, w)),
            other => bail!("expected welcome, got {other:?}"),
        }
    }

    async fn send(&mut self, m: &ClientMessage) -> Result<()> {
        self.s.write_all(&encode_frame(m)?).await?;
        Ok(())
    }

    /// One frame whose body is `body` (any MessagePack bytes).
    async fn body(&mut self, body: &[u8]) -> Result<()> {
        self.s.write_all(&(body.len() as u32).to_be_bytes()).await?;
        self.s.write_all(body).await?;
        Ok(())
    }

    async fn request(&mut self, id: u64, op: &str, args: Value) -> Result<()> {
        self.send(&ClientMessage::Request(Request {
            id,
            op: op.into(),
            args,
        }))
        .await
    }

    async fn recv(&mut self) -> Result<Option<DaemonMessage>> {
        self.recv_within(Duration::from_secs(20)).await
    }

    async fn recv_within(&mut self, t: Duration) -> Result<Option<DaemonMessage>> {
        let mut len = [0u8; 4];
        match tokio::time::timeout(t, self.s.read_exact(&mut len)).await? {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).await?;
        Ok(Some(decode_daemon(&body)?))
    }

    /// The reply to request `id`, collecting the progress frames that came before it.
    async fn reply(
        &mut self,
        id: u64,
        progress: &mut Vec<(std::time::Instant, Progress)>,
    ) -> Result<Reply> {
        loop {
            match self.recv().await? {
                Some(DaemonMessage::Reply(r)) if r.id == id => return Ok(r),
                Some(DaemonMessage::Progress(p)) => progress.push((std::time::Instant::now(), p)),
                Some(DaemonMessage::Reply(_) | DaemonMessage::Event(_)) => {}
                other => bail!("waiting for reply {id}: got {other:?}"),
            }
        }
    }

    async fn expect_error_frame(&mut self, code: ErrorCode) -> Result<String> {
        match self.recv().await? {
            Some(DaemonMessage::Error(e)) if e.code == code => Ok(e.message),
            other => bail!("expected an error frame {code:?}, got {other:?}"),
        }
    }

    async fn expect_eof(&mut self) -> Result<()> {
        match self.recv().await {
            Ok(None) | Err(_) => Ok(()),
            Ok(Some(m)) => bail!("expected the daemon to close, got {m:?}"),
        }
    }
}

fn map(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn encode(v: &Value) -> Vec<u8> {
    let mut b = Vec::new();
    peerix_ipc_proto::rmpv::encode::write_value(&mut b, v).expect("encode");
    b
}

fn error_of(r: &Reply) -> Option<&ErrorCode> {
    r.error.as_ref().map(|e| &e.code)
}

/// Two daemons in `room`, connected; returns the daemons and one member on each.
async fn pair(env: &TestEnv, room: &str) -> Result<(DaemonProc, DaemonProc, Member, Member)> {
    let da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let mut a = Member::join(&da, room, |_| {}).await?;
    let mut b = Member::join(&db, room, |_| {}).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("a sees b", CONNECT, |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;
    b.wait_for("b sees a", CONNECT, |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    Ok((da, db, a, b))
}

/// `a` opens `label` and both sides see it open.
async fn open_both(a: &mut Member, b: &mut Member, label: &str) -> Result<()> {
    a.open(label).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("channel open at a", CONNECT, |e| {
        is(e, "channel:open", &b_id) && field(e, "label") == Some(label)
    })
    .await?;
    b.wait_for("channel open at b", CONNECT, |e| {
        is(e, "channel:open", &a_id) && field(e, "label") == Some(label)
    })
    .await?;
    Ok(())
}

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

fn value_of<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
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
    b.client.leave("p").await?;
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
        Cut::SenderLeaves => a.client.leave("cut").await?,
        Cut::ReceiverLeaves => b.client.leave("cut").await?,
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
