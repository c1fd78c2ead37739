//! Supervision: one fault-injection test per actor kind (driver, room, peer, channel, session).
//! Each asserts that the fault is reported, that the tree recovers, and that what the fault did
//! not involve (another room, another label, another client) keeps exchanging acknowledged
//! messages throughout (`Steady`). Shutdown closes every session with a final event.

use std::time::Duration;

use anyhow::Result;
use peerix_client::SendOptions;
use peerix_ipc_proto::ErrorCode;
use peerix_system_tests::*;

const FI: &[(&str, &str)] = &[("PEERIXD_FAULT_INJECTION", "1")];

/// The `code` of an event's `error` map.
fn error_code(ev: &peerix_ipc_proto::Event) -> Option<String> {
    match value(ev, "error")? {
        rmpv::Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_str() == Some("code"))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned),
        _ => None,
    }
}

/// Joins `room` on both daemons and waits until they are connected with `labels` open.
async fn pair(
    da: &DaemonProc,
    db: &DaemonProc,
    room: &str,
    labels: &[&str],
) -> Result<(Member, Member)> {
    let mut a = Member::join(da, room, |_| {}).await?;
    let mut b = Member::join(db, room, |_| {}).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("a connected", Duration::from_secs(15), |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;
    b.wait_for("b connected", Duration::from_secs(15), |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    for label in labels {
        a.open(label).await?;
        a.wait_for("a: channel open", Duration::from_secs(10), |e| {
            is(e, "channel:open", &b_id) && field(e, "label") == Some(label)
        })
        .await?;
        b.wait_for("b: channel open", Duration::from_secs(10), |e| {
            is(e, "channel:open", &a_id) && field(e, "label") == Some(label)
        })
        .await?;
    }
    // Only what happens from here on counts.
    a.drain_for(Duration::from_millis(200)).await;
    b.drain_for(Duration::from_millis(200)).await;
    Ok((a, b))
}

/// `from` sends `text` on `label` (acknowledged by every peer) and `to` receives it.
async fn exchange(from: &Member, to: &mut Member, label: &str, text: &str) -> Result<()> {
    let r = from
        .client
        .send_text(&from.room, label, text, SendOptions::default())
        .await?;
    let peers = r.peers.unwrap_or_default();
    assert!(!peers.is_empty() && peers.iter().all(|p| p.ok), "{peers:?}");
    to.wait_for(text, Duration::from_secs(10), |e| {
        e.name == "channel:message" && field(e, "data") == Some(text)
    })
    .await?;
    Ok(())
}

fn map(fields: Vec<(&str, &str)>) -> rmpv::Value {
    rmpv::Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (rmpv::Value::from(k), rmpv::Value::from(v)))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_peer_actor_is_restarted_and_reported() -> Result<()> {
    let env = TestEnv::new()?;
    let mut da = env
        .daemon_with_env("a", &[], &[("PEERIXD_FAULT_INJECTION", "1")])
        .await?;
    let db = env.daemon("b", &[]).await?;
    let mut a = Member::join(&da, "sup", |_| {}).await?;
    let mut b = Member::join(&db, "sup", |_| {}).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("connected", Duration::from_secs(10), |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;
    a.open("chat").await?;
    a.wait_for("chat open", Duration::from_secs(10), |e| {
        is(e, "channel:open", &b_id)
    })
    .await?;

    a.client
        .request_raw(
            "debug",
            map(vec![
                ("action", "panic-peer"),
                ("room", "sup"),
                ("peer", &b_id),
            ]),
        )
        .await?;
    let err = a
        .wait_for("error event", Duration::from_secs(5), |e| {
            e.name == "error" && field(e, "peer") == Some(b_id.as_str())
        })
        .await?;
    assert!(value(&err, "error")
        .map(|v| v.to_string())
        .unwrap_or_default()
        .contains("crashed"));
    a.wait_for("closed after crash", Duration::from_secs(5), |e| {
        is(e, "connection:closed", &b_id)
    })
    .await?;
    // The remote side saw the old connection go away, and both reconnect with a fresh one.
    b.wait_for(
        "b sees the old connection close",
        Duration::from_secs(10),
        |e| is(e, "connection:closed", &a_id),
    )
    .await?;
    a.wait_for("reconnected", Duration::from_secs(15), |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;
    b.wait_for("b reconnected", Duration::from_secs(15), |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    // The room's labels are re-opened on the new connection and messages flow again.
    a.wait_for("chat reopened", Duration::from_secs(10), |e| {
        is(e, "channel:open", &b_id)
    })
    .await?;
    let r = a
        .client
        .send_text("sup", "chat", "after restart", SendOptions::default())
        .await?;
    assert!(r.peers.expect("report").iter().all(|p| p.ok));
    b.wait_for("message", Duration::from_secs(10), |e| {
        e.name == "channel:message" && field(e, "data") == Some("after restart")
    })
    .await?;
    assert!(da.is_running());
    Ok(())
}

#[tokio::test]
async fn fault_injection_is_refused_by_default() -> Result<()> {
    let env = TestEnv::new()?;
    let d = env.daemon("plain", &[]).await?;
    let c = d.client().await?;
    let err = c
        .request_raw(
            "debug",
            map(vec![("action", "panic-peer"), ("room", "x"), ("peer", "y")]),
        )
        .await
        .expect_err("refused");
    assert_eq!(
        err.daemon_error().map(|e| e.code.clone()),
        Some(ErrorCode::NotSupported)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_driver_is_restarted_and_its_rooms_resubscribe() -> Result<()> {
    let env = TestEnv::new()?;
    let mut da = env.daemon_with_env("a", &[], FI).await?;
    let db = env.daemon("b", &[]).await?;
    let (_a1, _b1) = pair(&da, &db, "steady", &["chat"]).await?;
    // A room on the same driver with nobody in it yet: only signaling can bring a peer.
    let mut a2 = Member::join(&da, "late", |_| {}).await?;
    let steady = Steady::start(&da, "steady", "chat").await?;

    debug(
        &a2.client,
        &[("action", "panic-driver"), ("driver", "local")],
    )
    .await?;
    let err = a2
        .wait_for("driver error event", Duration::from_secs(5), |e| {
            e.name == "error" && field(e, "driver") == Some("local")
        })
        .await?;
    assert_eq!(err.room, None, "driver errors are daemon-level");
    assert_eq!(error_code(&err).as_deref(), Some("INTERNAL"));
    a2.wait_for("driver active again", Duration::from_secs(10), |e| {
        e.name == "driver:active" && field(e, "driver") == Some("local")
    })
    .await?;

    // A new peer finds the room through the restarted driver: the room re-subscribed its
    // namespaces on it and announced.
    let mut b2 = Member::join(&db, "late", |_| {}).await?;
    let (a2_id, b2_id) = (a2.id.clone(), b2.id.clone());
    a2.wait_for("new peer connected", Duration::from_secs(15), |e| {
        is(e, "connection:connected", &b2_id)
    })
    .await?;
    b2.wait_for("new peer sees us", Duration::from_secs(15), |e| {
        is(e, "connection:connected", &a2_id)
    })
    .await?;
    a2.open("chat").await?;
    b2.wait_for("chat open", Duration::from_secs(10), |e| {
        is(e, "channel:open", &a2_id)
    })
    .await?;
    exchange(&a2, &mut b2, "chat", "through the new driver").await?;

    // Messages flowed after the recovery too, and none failed in between.
    steady.advance(5).await?;
    steady.finish().await?;
    assert!(da.is_running());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_room_is_rejoined_with_the_same_membership() -> Result<()> {
    let env = TestEnv::new()?;
    let mut da = env.daemon_with_env("a", &[], FI).await?;
    let db = env.daemon("b", &[]).await?;
    let (mut a, mut b) = pair(&da, &db, "crash", &["chat"]).await?;
    let (_a2, _b2) = pair(&da, &db, "steady", &["chat"]).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    let steady = Steady::start(&da, "steady", "chat").await?;

    debug(&a.client, &[("action", "panic-room"), ("room", "crash")]).await?;
    let err = a
        .wait_for("room error event", Duration::from_secs(5), |e| {
            e.name == "error" && e.room.as_deref() == Some("crash")
        })
        .await?;
    assert_eq!(error_code(&err).as_deref(), Some("INTERNAL"));
    // The remote sees the old connection go and the same id come back.
    b.wait_for("old connection closed", Duration::from_secs(10), |e| {
        is(e, "connection:closed", &a_id)
    })
    .await?;
    b.wait_for("reconnected", Duration::from_secs(15), |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    a.wait_for("reconnected", Duration::from_secs(15), |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;
    // The label opened room-wide before the crash is open again without asking.
    a.wait_for("chat reopened", Duration::from_secs(10), |e| {
        is(e, "channel:open", &b_id) && field(e, "label") == Some("chat")
    })
    .await?;
    exchange(&a, &mut b, "chat", "after the room crash").await?;
    let status = a.client.status().await?;
    let room = status
        .rooms
        .iter()
        .find(|r| r.room == "crash")
        .expect("room re-joined");
    assert_eq!(room.channels, vec!["chat".to_string()]);
    assert_eq!(
        a.client
            .join(peerix_ipc_proto::JoinArgs::new("crash"))
            .await?
            .id,
        a_id
    );

    // Messages flowed after the recovery too, and none failed in between.
    steady.advance(5).await?;
    steady.finish().await?;
    assert!(da.is_running());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_channel_is_reported_and_reopened() -> Result<()> {
    let env = TestEnv::new()?;
    let mut da = env.daemon_with_env("a", &[], FI).await?;
    let db = env.daemon("b", &[]).await?;
    let (mut a, mut b) = pair(&da, &db, "chan", &["chat", "steady"]).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    let steady = Steady::start(&da, "chan", "steady").await?;

    debug(
        &a.client,
        &[
            ("action", "panic-channel"),
            ("room", "chan"),
            ("peer", &b_id),
            ("label", "chat"),
        ],
    )
    .await?;
    let err = a
        .wait_for("channel error event", Duration::from_secs(5), |e| {
            is(e, "channel:error", &b_id) && field(e, "label") == Some("chat")
        })
        .await?;
    assert_eq!(error_code(&err).as_deref(), Some("INTERNAL"));
    b.wait_for("remote channel closed", Duration::from_secs(10), |e| {
        is(e, "channel:close", &a_id) && field(e, "label") == Some("chat")
    })
    .await?;
    a.wait_for("chat reopened", Duration::from_secs(10), |e| {
        is(e, "channel:open", &b_id) && field(e, "label") == Some("chat")
    })
    .await?;
    b.wait_for("remote chat reopened", Duration::from_secs(10), |e| {
        is(e, "channel:open", &a_id) && field(e, "label") == Some("chat")
    })
    .await?;
    exchange(&a, &mut b, "chat", "after the channel crash").await?;
    // The connection itself was never touched.
    let closed = a
        .drain_for(Duration::from_millis(100))
        .await
        .into_iter()
        .any(|e| is(&e, "connection:closed", &b_id));
    assert!(!closed, "the channel crash closed the connection");

    // Messages flowed after the recovery too, and none failed in between.
    steady.advance(5).await?;
    steady.finish().await?;
    assert!(da.is_running());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_session_is_reported_and_others_keep_working() -> Result<()> {
    let env = TestEnv::new()?;
    let mut da = env.daemon_with_env("a", &[], FI).await?;
    let db = env.daemon("b", &[]).await?;
    let (_a, _b) = pair(&da, &db, "sess", &["chat"]).await?;
    let watcher = da.client().await?;
    let mut errors = watcher.subscribe(&["error"], None).await?;
    let steady = Steady::start(&da, "sess", "chat").await?;

    let victim = da.client().await?;
    let err = debug(&victim, &[("action", "panic-session")])
        .await
        .expect_err("the session died");
    // The crashed session's own client got an `error` frame before the connection closed.
    assert!(err.to_string().contains("INTERNAL"), "{err}");
    let ev = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await?
        .expect("error event");
    assert_eq!(error_code(&ev).as_deref(), Some("INTERNAL"));
    assert!(value(&ev, "error").is_some_and(|v| v.to_string().contains("session")));

    // The listener is still there for new clients, and old ones keep working.
    let fresh = da.client().await?;
    fresh.status().await?;
    watcher.status().await?;
    // Messages flowed after the recovery too, and none failed in between.
    steady.advance(5).await?;
    steady.finish().await?;
    assert!(da.is_running());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_session_with_a_final_event() -> Result<()> {
    let env = TestEnv::new()?;
    let d = env.daemon("a", &[]).await?;
    let c = d.client().await?;
    // Subscribed to something else: the last frame goes to every client regardless.
    let mut events = c.subscribe(&["channel"], None).await?;
    let socket = d.socket.clone();
    let mut d = d;
    tokio::task::spawn_blocking(move || {
        d.terminate();
        d
    })
    .await?;
    let last = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await?
        .expect("a final event before the connection closed");
    assert_eq!(last.name, "daemon:shutdown");
    assert_eq!(last.room, None);
    let end = tokio::time::timeout(Duration::from_secs(5), events.recv()).await?;
    assert!(end.is_none(), "nothing follows daemon:shutdown: {end:?}");
    assert!(!socket.exists(), "the socket was removed");
    Ok(())
}
