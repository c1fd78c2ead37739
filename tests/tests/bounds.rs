//! Bounds on what a remote peer or a local client can make the daemon hold, between two real
//! daemons: an event too large for a client's frame limit does not cut the client, and a client
//! that does not wait for its chunk replies is refused instead of buffered without end.

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

const CONNECT: Duration = Duration::from_secs(15);

/// Two daemons joined to `room`, connected, with `label` open on both.
async fn pair(
    env: &TestEnv,
    room: &str,
    label: &str,
    a_env: &[(&str, &str)],
    b_env: &[(&str, &str)],
) -> Result<(DaemonProc, DaemonProc, Member, Member)> {
    let da = env.daemon_with_env("a", &[], a_env).await?;
    let db = env.daemon_with_env("b", &[], b_env).await?;
    let mut a = Member::join(&da, room, |_| {}).await?;
    let mut b = Member::join(&db, room, |_| {}).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.open(label).await?;
    a.wait_for("channel open at a", CONNECT, |e| {
        is(e, "channel:open", &b_id) && field(e, "label") == Some(label)
    })
    .await?;
    b.wait_for("channel open at b", CONNECT, |e| {
        is(e, "channel:open", &a_id) && field(e, "label") == Some(label)
    })
    .await?;
    Ok((da, db, a, b))
}

/// JSON messages are never split, so one from a remote peer can make an event frame larger
/// than a client's frame limit, and a client that gets such a frame must drop the connection.
/// The daemon sends a `channel:error` naming the transfer instead; the client stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_message_larger_than_max_frame_does_not_cut_the_client() -> Result<()> {
    let env = TestEnv::new()?;
    // The sender's daemon takes frames of 64 MiB; the receiver's keeps the default 16 MiB.
    let (_da, _db, a, mut b) = pair(
        &env,
        "big",
        "chat",
        &[("PEERIX_IPC__MAX_FRAME", "67108864")],
        &[],
    )
    .await?;
    let big = "x".repeat(17 << 20);
    let r = a
        .client
        .send_json(
            "big",
            "chat",
            rmpv::Value::Map(vec![(rmpv::Value::from("blob"), rmpv::Value::from(big))]),
            SendOptions::default(),
        )
        .await?;
    assert!(r.peers.expect("report").iter().all(|p| p.ok));
    let ev = b
        .wait_for("channel:error for the oversized json", CONNECT, |e| {
            e.name == "channel:error" || e.name == "channel:message"
        })
        .await?;
    assert_eq!(ev.name, "channel:error", "{ev:?}");
    let err = value(&ev, "error")
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("LIMIT_EXCEEDED") && err.contains("ipc.max_frame"),
        "{err}"
    );
    assert!(value(&ev, "transfer").is_some(), "{ev:?}");
    // The same client connection still gets what follows.
    a.client
        .send_text("big", "chat", "after", SendOptions::default())
        .await?;
    let m = b
        .wait_for("the next message", CONNECT, |e| e.name == "channel:message")
        .await?;
    assert_eq!(field(&m, "data"), Some("after"));
    Ok(())
}

async fn write(s: &mut UnixStream, m: &ClientMessage) -> Result<()> {
    s.write_all(&encode_frame(m)?).await?;
    Ok(())
}

async fn read(s: &mut UnixStream) -> Result<DaemonMessage> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await?;
    Ok(decode_daemon(&body)?)
}

fn map(fields: Vec<(&str, rmpv::Value)>) -> rmpv::Value {
    rmpv::Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (rmpv::Value::from(k), v))
            .collect(),
    )
}

/// Each unanswered chunk of a streamed send holds its data until the targets take it. A client
/// that pipelines chunks without waiting for their replies, to a peer that stopped reading, is
/// refused with `LIMIT_EXCEEDED` once `limits.pending_chunks_per_client` are unanswered, and its
/// transfer is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_streamed_chunks_are_bounded() -> Result<()> {
    let env = TestEnv::new()?;
    let (da, db, _a, _b) = pair(
        &env,
        "chunks",
        "files",
        &[("PEERIX_LIMITS__PENDING_CHUNKS_PER_CLIENT", "8")],
        &[],
    )
    .await?;
    let mut s = UnixStream::connect(&da.socket).await?;
    write(
        &mut s,
        &ClientMessage::Hello(Hello {
            version: PROTOCOL_VERSION,
            client: "pipeliner".into(),
            capabilities: vec![],
        }),
    )
    .await?;
    read(&mut s).await?;
    // The receiving daemon stops: its SCTP acknowledges nothing, the lane's buffer fills and
    // the chunks' replies stop coming.
    let pid = db.pid().expect("b runs").to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()?;
    let request = |id: u64, args: rmpv::Value| {
        ClientMessage::Request(Request {
            id,
            op: "send".into(),
            args,
        })
    };
    write(
        &mut s,
        &request(
            1,
            map(vec![
                ("room", rmpv::Value::from("chunks")),
                ("label", rmpv::Value::from("files")),
                ("type", rmpv::Value::from("bytes")),
                ("data", rmpv::Value::Binary(vec![])),
                ("more", rmpv::Value::Boolean(true)),
            ]),
        ),
    )
    .await?;
    let transfer = match read(&mut s).await? {
        DaemonMessage::Reply(r) if r.ok => r
            .result
            .as_ref()
            .and_then(|v| v.as_map())
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("transfer")))
            .and_then(|(_, v)| v.as_u64())
            .expect("transfer id"),
        other => bail!("send start: {other:?}"),
    };
    // 200 chunks of 64 KiB (12.5 MiB), none waiting for its reply.
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        for i in 0..200u64 {
            let frame = encode_frame(&request(
                2 + i,
                map(vec![
                    ("transfer", rmpv::Value::from(transfer)),
                    ("data", rmpv::Value::Binary(vec![0x5a; 64 * 1024])),
                    ("more", rmpv::Value::Boolean(true)),
                ]),
            ))?;
            wr.write_all(&frame).await?;
        }
        anyhow::Ok(wr)
    });
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let mut len = [0u8; 4];
            rd.read_exact(&mut len).await?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            rd.read_exact(&mut body).await?;
            if let DaemonMessage::Reply(r) = decode_daemon(&body)? {
                if let Some(e) = r.error.filter(|e| e.code == ErrorCode::LimitExceeded) {
                    return anyhow::Ok(e.message);
                }
            }
        }
    })
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    let msg = match found {
        Ok(r) => r?,
        Err(_) => bail!("200 pipelined chunks to a stopped peer were all taken: no LIMIT_EXCEEDED"),
    };
    assert!(msg.contains("limits.pending_chunks_per_client"), "{msg}");
    let _ = writer.await;
    // The daemon still serves.
    let c = da.client().await?;
    c.status().await?;
    Ok(())
}
