//! Bad input over the real socket gets a clear error and breaks nothing: malformed and oversized
//! frames, unknown ops, missing handshake, clients that vanish mid-transfer.

use std::time::Duration;

use anyhow::{bail, Result};
use peerix_client::SendOptions;
use peerix_ipc_proto::{
    decode_daemon, encode_frame, ClientMessage, DaemonMessage, ErrorCode, Hello, Request,
    PROTOCOL_VERSION,
};
use peerix_system_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

struct Raw {
    s: UnixStream,
}

impl Raw {
    async fn connect(d: &DaemonProc) -> Result<Self> {
        Ok(Self {
            s: UnixStream::connect(&d.socket).await?,
        })
    }
    async fn hello(d: &DaemonProc) -> Result<Self> {
        let mut r = Self::connect(d).await?;
        r.send(&ClientMessage::Hello(Hello {
            version: PROTOCOL_VERSION,
            client: "raw-test".into(),
            capabilities: vec![],
        }))
        .await?;
        match r.recv().await? {
            Some(DaemonMessage::Welcome(_)) => Ok(r),
            other => bail!("expected welcome, got {other:?}"),
        }
    }
    async fn send(&mut self, m: &ClientMessage) -> Result<()> {
        self.s.write_all(&encode_frame(m)?).await?;
        Ok(())
    }
    async fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.s.write_all(bytes).await?;
        Ok(())
    }
    async fn request(&mut self, id: u64, op: &str, args: rmpv::Value) -> Result<()> {
        self.send(&ClientMessage::Request(Request {
            id,
            op: op.into(),
            args,
        }))
        .await
    }
    /// The next frame, or None at EOF.
    async fn recv(&mut self) -> Result<Option<DaemonMessage>> {
        let mut len = [0u8; 4];
        match tokio::time::timeout(Duration::from_secs(10), self.s.read_exact(&mut len)).await? {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).await?;
        Ok(Some(decode_daemon(&body)?))
    }
    async fn expect_error(&mut self, code: ErrorCode) -> Result<String> {
        match self.recv().await? {
            Some(DaemonMessage::Error(e)) if e.code == code => Ok(e.message),
            Some(DaemonMessage::Reply(r))
                if !r.ok && r.error.as_ref().is_some_and(|e| e.code == code) =>
            {
                Ok(r.error.map(|e| e.message).unwrap_or_default())
            }
            other => bail!("expected {code:?}, got {other:?}"),
        }
    }
    async fn expect_eof(&mut self) -> Result<()> {
        match self.recv().await {
            Ok(None) => Ok(()),
            Err(_) => Ok(()),
            Ok(Some(m)) => bail!("expected the daemon to close, got {m:?}"),
        }
    }
}

fn map(fields: Vec<(&str, rmpv::Value)>) -> rmpv::Value {
    rmpv::Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (rmpv::Value::from(k), v))
            .collect(),
    )
}

async fn still_serves(d: &DaemonProc) -> Result<()> {
    let c = d.client().await?;
    let st = c.status().await?;
    assert_eq!(st.version, env!("CARGO_PKG_VERSION"), "{st:?}");
    Ok(())
}

#[tokio::test]
async fn protocol_errors_are_reported_and_survived() -> Result<()> {
    let env = TestEnv::new()?;
    let d = env.daemon("d", &[]).await?;

    // A request before hello: error, then the connection closes.
    let mut r = Raw::connect(&d).await?;
    r.request(1, "status", rmpv::Value::Nil).await?;
    r.expect_error(ErrorCode::HandshakeRequired).await?;
    r.expect_eof().await?;

    // Wrong protocol version.
    let mut r = Raw::connect(&d).await?;
    r.send(&ClientMessage::Hello(Hello {
        version: 999,
        client: "future".into(),
        capabilities: vec![],
    }))
    .await?;
    let msg = r.expect_error(ErrorCode::VersionMismatch).await?;
    assert!(msg.contains("999"), "{msg}");
    r.expect_eof().await?;

    // Malformed MessagePack inside a sane frame: an error, and the connection keeps working.
    let mut r = Raw::hello(&d).await?;
    r.raw(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]).await?;
    r.expect_error(ErrorCode::MalformedFrame).await?;
    r.raw(&[0, 0, 0, 2, 0x92, 0x01]).await?; // an array, not a message map
    r.expect_error(ErrorCode::MalformedFrame).await?;
    r.request(7, "status", rmpv::Value::Nil).await?;
    match r.recv().await? {
        Some(DaemonMessage::Reply(rep)) => assert!(rep.ok && rep.id == 7, "{rep:?}"),
        other => bail!("expected a status reply, got {other:?}"),
    }

    // Unknown op and bad arguments get typed error replies naming the problem.
    r.request(8, "teleport", rmpv::Value::Nil).await?;
    let msg = r.expect_error(ErrorCode::UnknownOp).await?;
    assert!(msg.contains("teleport"), "{msg}");
    r.request(9, "join", map(vec![])).await?;
    let msg = r.expect_error(ErrorCode::BadRequest).await?;
    assert!(msg.contains("room"), "{msg}");
    r.request(
        10,
        "leave",
        map(vec![("room", rmpv::Value::from("nowhere"))]),
    )
    .await?;
    r.expect_error(ErrorCode::NotJoined).await?;
    r.request(
        11,
        "send",
        map(vec![
            ("room", "nowhere".into()),
            ("type", "text".into()),
            ("data", "x".into()),
        ]),
    )
    .await?;
    r.expect_error(ErrorCode::NotJoined).await?;
    // An op whose arguments are incomplete: BAD_REQUEST naming the field.
    r.request(12, "share", map(vec![])).await?;
    r.expect_error(ErrorCode::BadRequest).await?;

    // An oversized frame: error frame, then the daemon closes this connection only.
    let mut big = Raw::hello(&d).await?;
    big.raw(&(64u32 << 20).to_be_bytes()).await?;
    big.expect_error(ErrorCode::FrameTooLarge).await?;
    big.expect_eof().await?;

    // Garbage that is not even a length prefix followed by EOF.
    let mut g = Raw::connect(&d).await?;
    g.raw(&[0xff, 0xff]).await?;
    drop(g);

    // The first raw connection and fresh clients are unaffected.
    r.request(13, "status", rmpv::Value::Nil).await?;
    assert!(matches!(r.recv().await?, Some(DaemonMessage::Reply(rep)) if rep.ok));
    still_serves(&d).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_transfer_leaves_daemon_healthy() -> Result<()> {
    let env = TestEnv::new()?;
    let mut da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let a = Member::join(&da, "r", |_| {}).await?;
    let mut b = Member::join(&db, "r", |_| {}).await?;
    let a_id = a.id.clone();
    b.wait_for("connected", Duration::from_secs(10), |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    a.open("f").await?;
    b.wait_for("channel open", Duration::from_secs(10), |e| {
        is(e, "channel:open", &a_id)
    })
    .await?;

    // 1. A streamed send abandoned after the first chunk.
    {
        let mut r = Raw::hello(&da).await?;
        let chunk = rmpv::Value::Binary(vec![7u8; 512 * 1024]);
        r.request(
            1,
            "send",
            map(vec![
                ("room", "r".into()),
                ("label", "f".into()),
                ("type", "bytes".into()),
                ("data", chunk),
                ("more", true.into()),
            ]),
        )
        .await?;
        let first = match r.recv().await? {
            Some(DaemonMessage::Reply(rep)) if rep.ok => rep.result.unwrap_or(rmpv::Value::Nil),
            other => bail!("expected the transfer reply, got {other:?}"),
        };
        let transfer = match &first {
            rmpv::Value::Map(m) => m
                .iter()
                .find(|(k, _)| k.as_str() == Some("transfer"))
                .and_then(|(_, v)| v.as_u64()),
            _ => None,
        }
        .expect("transfer id");
        // A second chunk makes the receiver pass a first part on to its client...
        r.request(
            2,
            "send",
            map(vec![
                ("transfer", transfer.into()),
                ("data", rmpv::Value::Binary(vec![8u8; 1024 * 1024])),
                ("more", true.into()),
            ]),
        )
        .await?;
        assert!(matches!(r.recv().await?, Some(DaemonMessage::Reply(rep)) if rep.ok));
        b.wait_for(
            "first part of the abandoned message",
            Duration::from_secs(10),
            |e| e.name == "channel:message",
        )
        .await?;
        // ...and when the client vanishes, the receiver learns that no final part will come.
        drop(r);
        let err = b
            .wait_for(
                "abort of the abandoned transfer",
                Duration::from_secs(10),
                |e| e.name == "channel:error",
            )
            .await?;
        assert!(
            value(&err, "error")
                .map(|v| v.to_string().to_lowercase())
                .unwrap_or_default()
                .contains("aborted by sender"),
            "{err:?}"
        );
    }
    // 2. A large send whose client disappears while the daemon is transmitting.
    {
        let c = da.client().await?;
        let payload = vec![1u8; 12 * 1024 * 1024];
        let fut = c.send_bytes("r", "f", payload, SendOptions::default());
        let _ = tokio::time::timeout(Duration::from_millis(150), fut).await;
        drop(c);
    }
    // 3. A client that disconnects in the middle of writing a frame.
    {
        let mut r = Raw::hello(&da).await?;
        let frame = encode_frame(&ClientMessage::Request(Request {
            id: 1,
            op: "send".into(),
            args: map(vec![
                ("room", "r".into()),
                ("label", "f".into()),
                ("type", "bytes".into()),
                ("data", rmpv::Value::Binary(vec![0; 100_000])),
            ]),
        }))?;
        r.raw(&frame[..frame.len() / 2]).await?;
        drop(r);
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(da.is_running(), "daemon died: {}", da.log_tail());
    // The abandoned large send may still complete at b (the daemon finishes what it started); what
    // matters is that a new client can still use the connection.
    let c = da.client().await?;
    let r = c
        .send_text("r", "f", "still alive", SendOptions::default())
        .await?;
    assert!(r.peers.expect("report").iter().all(|p| p.ok));
    b.wait_for("message after the chaos", Duration::from_secs(20), |e| {
        e.name == "channel:message" && field(e, "data") == Some("still alive")
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn cli_reports_missing_daemon_clearly() -> Result<()> {
    let env = TestEnv::new()?;
    let out = std::process::Command::new(bin("peerix")?)
        .arg("--socket")
        .arg(env.dir.path().join("nobody.sock"))
        .arg("status")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not running"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_join_send_events_json() -> Result<()> {
    let env = TestEnv::new()?;
    let da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let peerix = |d: &DaemonProc, args: &[&str]| -> Result<std::process::Output> {
        Ok(std::process::Command::new(bin("peerix")?)
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()?)
    };
    // Subscribe on b with the CLI, as a user would.
    let mut events = tokio::process::Command::new(bin("peerix")?)
        .arg("--socket")
        .arg(&db.socket)
        .args([
            "--json",
            "events",
            "--filter",
            "connection:connected,channel:message",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(peerix(&da, &["join", "cli", "--meta", r#"{"name":"a"}"#])?
        .status
        .success());
    assert!(peerix(&db, &["join", "cli"])?.status.success());
    let st = peerix(&da, &["--json", "status"])?;
    let st: serde_json::Value = serde_json::from_slice(&st.stdout)?;
    assert_eq!(st["rooms"][0]["room"], "cli", "{st}");
    // Wait until a sees a connected peer, then open and send.
    let mut ok = false;
    for _ in 0..100 {
        let p = peerix(&da, &["--json", "peers", "cli"])?;
        if String::from_utf8_lossy(&p.stdout).contains("\"connected\"") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "peer never connected: {}", da.log_tail());
    assert!(peerix(&da, &["open", "cli", "chat"])?.status.success());
    let mut sent = false;
    for _ in 0..50 {
        if peerix(&da, &["send", "cli", "chat", "hi via cli"])?
            .status
            .success()
        {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent);
    let stdout = events.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut saw_connected = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
        let v: serde_json::Value = serde_json::from_str(&line)?;
        if v["name"] == "connection:connected" {
            saw_connected = true;
        }
        if v["name"] == "channel:message" {
            assert_eq!(v["data"], "hi via cli", "{v}");
            assert!(saw_connected);
            return Ok(());
        }
    }
    bail!("no channel:message from `peerix events --json`")
}

/// Subscriptions are additive and each is matched against every event: a client may hold only
/// `limits.subscriptions_per_client` of them, each with at most
/// `limits.patterns_per_subscription` patterns; beyond that `subscribe` fails with
/// `LIMIT_EXCEEDED` and the client stays connected.
#[tokio::test]
async fn subscriptions_per_client_are_bounded() -> Result<()> {
    let env = TestEnv::new()?;
    let d = env
        .daemon_with_env(
            "d",
            &[],
            &[
                ("PEERIX_LIMITS__SUBSCRIPTIONS_PER_CLIENT", "4"),
                ("PEERIX_LIMITS__PATTERNS_PER_SUBSCRIPTION", "3"),
            ],
        )
        .await?;
    let mut r = Raw::hello(&d).await?;
    let sub = |events: &[&str]| {
        map(vec![(
            "events",
            rmpv::Value::Array(events.iter().map(|e| rmpv::Value::from(*e)).collect()),
        )])
    };
    for id in 1..=4 {
        r.request(id, "subscribe", sub(&["channel", "error", "driver"]))
            .await?;
        match r.recv().await? {
            Some(DaemonMessage::Reply(rep)) if rep.ok => {}
            other => bail!("subscribe {id}: {other:?}"),
        }
    }
    r.request(5, "subscribe", sub(&["connection"])).await?;
    let msg = r.expect_error(ErrorCode::LimitExceeded).await?;
    assert!(msg.contains("limits.subscriptions_per_client"), "{msg}");
    // Unsubscribing frees them; a pattern list over its bound is refused on its own.
    r.request(6, "unsubscribe", rmpv::Value::Nil).await?;
    match r.recv().await? {
        Some(DaemonMessage::Reply(rep)) if rep.ok => {}
        other => bail!("unsubscribe: {other:?}"),
    }
    r.request(
        7,
        "subscribe",
        sub(&["channel", "error", "driver", "connection"]),
    )
    .await?;
    let msg = r.expect_error(ErrorCode::LimitExceeded).await?;
    assert!(msg.contains("limits.patterns_per_subscription"), "{msg}");
    r.request(8, "subscribe", sub(&["connection"])).await?;
    match r.recv().await? {
        Some(DaemonMessage::Reply(rep)) if rep.ok => {}
        other => bail!("subscribe after unsubscribe: {other:?}"),
    }
    r.request(9, "status", rmpv::Value::Nil).await?;
    match r.recv().await? {
        Some(DaemonMessage::Reply(rep)) if rep.ok => {}
        other => bail!("status: {other:?}"),
    }
    still_serves(&d).await
}
