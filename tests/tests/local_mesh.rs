//! Real `peerixd` processes on the default `local` driver, driven by real clients over the socket.

use std::time::Duration;

use anyhow::Result;
use peerix_client::{MessageAssembler, MessageData, SendOptions};
use peerix_system_tests::*;

const CONNECT: Duration = Duration::from_secs(10);

/// Two daemons: connect, open a channel, text both ways, a 20 MiB file intact, leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_talk_and_leave() -> Result<()> {
    let env = TestEnv::new()?;
    let da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let mut a = Member::join(&da, "demo", |j| {
        j.metadata = Some(rmpv::Value::from("alice"))
    })
    .await?;
    let mut b = Member::join(&db, "demo", |_| {}).await?;

    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("a sees b connected", CONNECT, |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;
    let ev = b
        .wait_for("b sees a connected", CONNECT, |e| {
            is(e, "connection:connected", &a_id)
        })
        .await?;
    assert_eq!(
        value(&ev, "metadata").and_then(|v| v.as_str()),
        Some("alice"),
        "metadata travels with the offer/invoke"
    );

    // `peers` lists the other side as connected.
    let peers = a.client.peers("demo").await?;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].id, b_id);
    assert_eq!(peers[0].state, "connected");

    a.open("chat").await?;
    a.wait_for("chat open at a", CONNECT, |e| {
        is(e, "channel:open", &b_id) && field(e, "label") == Some("chat")
    })
    .await?;
    b.wait_for("chat open at b", CONNECT, |e| {
        is(e, "channel:open", &a_id) && field(e, "label") == Some("chat")
    })
    .await?;

    // Text both ways; the send resolves after the remote acknowledged.
    let r = a
        .client
        .send_text("demo", "chat", "hello from a", SendOptions::default())
        .await?;
    let peers = r.peers.expect("delivery report");
    assert_eq!(peers.len(), 1);
    assert!(peers[0].ok, "{peers:?}");
    let m = b
        .wait_for("text at b", CONNECT, |e| e.name == "channel:message")
        .await?;
    assert_eq!(field(&m, "data"), Some("hello from a"));
    assert_eq!(field(&m, "type"), Some("text"));
    assert_eq!(field(&m, "peer"), Some(a_id.as_str()));

    b.client
        .send_text(
            "demo",
            "chat",
            "hello from b",
            SendOptions::to(a_id.clone()),
        )
        .await?;
    let m = a
        .wait_for("text at a", CONNECT, |e| e.name == "channel:message")
        .await?;
    assert_eq!(field(&m, "data"), Some("hello from b"));

    // JSON with info.
    let info = rmpv::Value::Map(vec![(rmpv::Value::from("name"), rmpv::Value::from("x"))]);
    let json = rmpv::Value::Map(vec![(rmpv::Value::from("a"), rmpv::Value::from(1))]);
    a.client
        .send_json(
            "demo",
            "chat",
            json,
            SendOptions {
                info: Some(info),
                ..Default::default()
            },
        )
        .await?;
    let m = b
        .wait_for("json at b", CONNECT, |e| e.name == "channel:message")
        .await?;
    assert_eq!(field(&m, "type"), Some("json"));
    assert_eq!(
        value(&m, "data").map(|v| v.to_string()),
        Some(r#"{"a": 1}"#.to_string())
    );
    assert_eq!(
        value(&m, "info").map(|v| v.to_string()),
        Some(r#"{"name": "x"}"#.to_string())
    );

    // A 20 MiB file, streamed over IPC, arrives intact.
    let file: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let want = sha256_hex(&file);
    let mut progress_frames = 0usize;
    let mut done_frames = 0usize;
    let r = a
        .client
        .send_stream(
            "demo",
            "chat",
            &file[..],
            Some(file.len() as u64),
            SendOptions::default(),
            |p| {
                if let peerix_client::SendProgress::Delivery(p) = p {
                    progress_frames += 1;
                    done_frames += usize::from(p.done);
                }
            },
        )
        .await?;
    assert!(r.peers.expect("report").iter().all(|p| p.ok));
    // Paced to about 10 a second (PROTOCOL.md, `send`), and one `done` for the one peer.
    assert!(
        progress_frames >= 1 && done_frames == 1,
        "progress frames for a 20 MiB send: {progress_frames}, done: {done_frames}"
    );
    let mut asm = MessageAssembler::new();
    let got = loop {
        let ev = b
            .wait_for("file parts at b", Duration::from_secs(60), |e| {
                e.name == "channel:message"
            })
            .await?;
        if let Some(msg) = asm.push(&ev)? {
            break msg;
        }
    };
    let MessageData::Bytes(bytes) = got.data else {
        panic!("expected bytes, got {:?}", got.kind)
    };
    assert_eq!(bytes.len(), file.len());
    assert_eq!(sha256_hex(&bytes), want, "file corrupted in transit");
    assert!(
        got.parts > 1,
        "a 20 MiB message arrives in several IPC parts"
    );

    // A large text with multi-byte characters arrives in string parts that reassemble exactly.
    let text: String = "héllo wörld €uro 😀 ".repeat(150_000);
    let r = a
        .client
        .send_text("demo", "chat", &text, SendOptions::default())
        .await;
    let r = r?;
    assert!(r.peers.expect("report").iter().all(|p| p.ok));
    let mut asm = MessageAssembler::new();
    let got = loop {
        let ev = b
            .wait_for("text parts at b", Duration::from_secs(60), |e| {
                e.name == "channel:message"
            })
            .await?;
        if let Some(msg) = asm.push(&ev)? {
            break msg;
        }
    };
    assert!(got.parts > 1, "a {} byte text arrives in parts", text.len());
    assert_eq!(got.data, MessageData::Text(text));

    // Close: the channel goes away on both sides (SCTP stream reset; no control message, §7.6).
    a.client.close("demo", "chat", None).await?;
    a.wait_for("chat closed at a", CONNECT, |e| {
        is(e, "channel:close", &b_id) && field(e, "label") == Some("chat")
    })
    .await?;
    b.wait_for("chat closed at b", CONNECT, |e| {
        is(e, "channel:close", &a_id) && field(e, "label") == Some("chat")
    })
    .await?;
    // A closed label is open nowhere: the send fails as a whole, at once.
    let err = a
        .client
        .send_text("demo", "chat", "nobody listens", SendOptions::default())
        .await
        .expect_err("a send on a closed label fails");
    assert!(format!("{err}").contains("NO_SUCH_CHANNEL"), "{err}");

    // The socket is private to the user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&da.socket)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "socket mode {mode:o}");
    }

    // Leave: the other side sees connection:closed promptly (control channel reset).
    a.leave().await?;
    b.wait_for("b sees a closed", CONNECT, |e| {
        is(e, "connection:closed", &a_id)
    })
    .await?;
    assert!(b.client.peers("demo").await?.is_empty());
    Ok(())
}

/// Five daemons form a full mesh; one broadcast reaches each of the four others exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_daemons_full_mesh_broadcast() -> Result<()> {
    let env = TestEnv::new()?;
    let mut daemons = Vec::new();
    for i in 0..5 {
        daemons.push(env.daemon(&format!("d{i}"), &[]).await?);
    }
    let mut members = Vec::new();
    for d in &daemons {
        members.push(Member::join(d, "mesh", |_| {}).await?);
    }
    let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    for (i, m) in members.iter_mut().enumerate() {
        for (j, other) in ids.iter().enumerate() {
            if i != j {
                m.wait_for(
                    &format!("d{i} connected to d{j}"),
                    Duration::from_secs(20),
                    |e| is(e, "connection:connected", other),
                )
                .await?;
            }
        }
    }
    for m in &members {
        let peers = m.client.peers("mesh").await?;
        assert_eq!(
            peers.iter().filter(|p| p.state == "connected").count(),
            4,
            "{peers:?}"
        );
    }
    // Every daemon opens the label (Peerix: open on either or both sides yields one channel).
    for m in &members {
        m.open("all").await?;
    }
    for (i, m) in members.iter_mut().enumerate() {
        for (j, other) in ids.iter().enumerate() {
            if i != j {
                m.wait_for(
                    &format!("d{i} channel to d{j}"),
                    Duration::from_secs(20),
                    |e| is(e, "channel:open", other) && field(e, "label") == Some("all"),
                )
                .await?;
            }
        }
    }
    let r = members[0]
        .client
        .send_text("mesh", "all", "to everyone", SendOptions::default())
        .await?;
    let report = r.peers.expect("report");
    assert_eq!(report.len(), 4, "{report:?}");
    assert!(report.iter().all(|p| p.ok), "{report:?}");
    let sender = ids[0].clone();
    for m in members.iter_mut().skip(1) {
        let got: Vec<_> = m
            .drain_for(Duration::from_secs(2))
            .await
            .into_iter()
            .filter(|e| e.name == "channel:message")
            .collect();
        assert_eq!(got.len(), 1, "exactly one copy: {got:?}");
        assert_eq!(field(&got[0], "data"), Some("to everyone"));
        assert_eq!(field(&got[0], "peer"), Some(sender.as_str()));
    }
    Ok(())
}

/// A send issued right after `open` (before the channel exists at either side) waits for the
/// channel instead of failing with "No channel found"; a send on a label never opened still
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_right_after_open_waits_for_the_channel() -> Result<()> {
    let env = TestEnv::new()?;
    let da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let mut a = Member::join(&da, "eager", |_| {}).await?;
    let mut b = Member::join(&db, "eager", |_| {}).await?;
    let b_id = b.id.clone();
    a.wait_for("a sees b connected", CONNECT, |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;

    for round in 0..5 {
        let label = format!("eager-{round}");
        a.open(&label).await?;
        let r = a
            .client
            .send_text("eager", &label, "right away", SendOptions::default())
            .await?;
        let peers = r.peers.expect("delivery report");
        assert!(peers.len() == 1 && peers[0].ok, "round {round}: {peers:?}");
        let m = b
            .wait_for("text at b", CONNECT, |e| {
                e.name == "channel:message" && field(e, "label") == Some(label.as_str())
            })
            .await?;
        assert_eq!(field(&m, "data"), Some("right away"));
    }

    // A label nobody opened fails as a whole, at once (PROTOCOL.md, `send`).
    let e = a
        .client
        .send_text("eager", "never-opened", "x", SendOptions::default())
        .await
        .expect_err("nobody opened it");
    assert!(format!("{e}").contains("NO_SUCH_CHANNEL"), "{e}");
    Ok(())
}
