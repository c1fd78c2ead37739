//! Several clients on one daemon (PROTOCOL.md §11): each connection that joins a room holds it,
//! the room stays while any hold remains, and whoever did not cause a leave is told with
//! `room:left`. Daemon `a` is shared by the clients under test; daemon `b` is the remote peer,
//! over the default `local` driver.

use std::time::Duration;

use anyhow::{bail, Result};
use peerix_client::{Client, ClientError, JoinResult, SendOptions};
use peerix_ipc_proto::{ErrorCode, Event, JoinArgs};
use peerix_system_tests::*;

const T: Duration = Duration::from_secs(15);

/// A client of `d` that subscribes to `events` (in `room`) and holds `room` (persist as given).
async fn holder(
    d: &DaemonProc,
    room: &str,
    events: &[&str],
    persist: bool,
) -> Result<(Member, JoinResult)> {
    let client = d.client().await?;
    let events = client.subscribe(events, Some(room)).await?;
    let mut args = JoinArgs::new(room);
    args.persist = persist;
    let res = client.join(args).await?;
    let m = Member {
        client,
        events,
        id: res.id.clone(),
        room: room.to_string(),
        backlog: Default::default(),
    };
    Ok((m, res))
}

/// A client of `d` subscribed to `events` in `room` that does not hold it.
async fn watcher(d: &DaemonProc, room: &str, events: &[&str]) -> Result<Member> {
    let client = d.client().await?;
    let events = client.subscribe(events, Some(room)).await?;
    Ok(Member {
        client,
        events,
        id: String::new(),
        room: room.to_string(),
        backlog: Default::default(),
    })
}

/// The room as `status` reports it, if joined.
async fn room_status(c: &Client, room: &str) -> Result<Option<peerix_client::RoomInfo>> {
    Ok(c.status().await?.rooms.into_iter().find(|r| r.room == room))
}

fn is_room_left(e: &Event, room: &str, reason: &str) -> bool {
    e.name == "room:left" && e.room.as_deref() == Some(room) && field(e, "reason") == Some(reason)
}

/// Fails if an event matching `pred` arrives within `dur`.
async fn never(
    m: &mut Member,
    what: &str,
    dur: Duration,
    pred: impl Fn(&Event) -> bool,
) -> Result<()> {
    let seen = m.drain_for(dur).await;
    if let Some(e) = seen.iter().find(|e| pred(e)) {
        bail!("{what}: {e:?}");
    }
    Ok(())
}

/// The remote sends `text` on `label`; every member in `at` receives it exactly once.
async fn remote_sends(
    remote: &Member,
    label: &str,
    text: &str,
    at: &mut [&mut Member],
) -> Result<()> {
    let r = remote
        .client
        .send_text(&remote.room, label, text, SendOptions::default())
        .await?;
    let peers = r.peers.unwrap_or_default();
    if peers.len() != 1 || !peers[0].ok {
        bail!("{text:?} from the remote: {peers:?} (the shared daemon must be one peer)");
    }
    for (i, m) in at.iter_mut().enumerate() {
        m.wait_for(&format!("{text:?} at client {i}"), T, |e| {
            e.name == "channel:message" && field(e, "data") == Some(text)
        })
        .await?;
    }
    Ok(())
}

/// The remote sees daemon `a` leave: `connection:closed` (or, when the leave came right after
/// the connection came up, `connection:failed` once ICE consent is lost).
async fn remote_loses(remote: &mut Member, a_id: &str) -> Result<()> {
    remote
        .wait_for(
            "the remote sees daemon a leave",
            Duration::from_secs(25),
            |e| is(e, "connection:closed", a_id) || is(e, "connection:failed", a_id),
        )
        .await?;
    Ok(())
}

/// Three clients hold one room on daemon `a`: the remote sees one peer, everything it sends
/// reaches all three, what any of them sends reaches it once. One leaving (and one
/// disconnecting) changes nothing for the others; the last leave leaves the room and a
/// subscriber that never held it is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_share_a_room_until_the_last_hold_goes() -> Result<()> {
    let env = TestEnv::new()?;
    let da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let room = "shared";
    let mut remote = Member::join(&db, room, |_| {}).await?;
    let (mut c1, r1) = holder(&da, room, &["*"], false).await?;
    let (mut c2, r2) = holder(&da, room, &["*"], false).await?;
    let (mut c3, r3) = holder(&da, room, &["channel:message"], false).await?;
    assert_eq!((r1.holders, r2.holders, r3.holders), (1, 2, 3));
    assert!(!r3.persist);
    assert!(r1.id == r2.id && r2.id == r3.id, "one peer id in the room");
    // Joining again from the same connection is one hold.
    assert_eq!(c1.client.join(JoinArgs::new(room)).await?.holders, 3);
    let st = room_status(&c1.client, room).await?.expect("joined");
    assert_eq!(
        (st.holders, st.persist, st.id.as_str()),
        (3, false, r1.id.as_str())
    );

    let a_id = r1.id.clone();
    remote
        .wait_for("remote sees a", T, |e| is(e, "connection:connected", &a_id))
        .await?;
    c1.open("chat").await?;
    remote
        .wait_for("chat open at the remote", T, |e| {
            is(e, "channel:open", &a_id) && field(e, "label") == Some("chat")
        })
        .await?;
    c1.wait_for("chat open at a", T, |e| is(e, "channel:open", &remote.id))
        .await?;
    let peers = remote.client.peers(room).await?;
    assert_eq!(
        peers.len(),
        1,
        "the remote sees exactly one peer for daemon a: {peers:?}"
    );
    assert_eq!(peers[0].id, a_id);

    for k in 0..5 {
        remote_sends(
            &remote,
            "chat",
            &format!("to all {k}"),
            &mut [&mut c1, &mut c2, &mut c3],
        )
        .await?;
    }
    for (i, c) in [&c1, &c2, &c3].iter().enumerate() {
        let text = format!("from client {i}");
        let r = c
            .client
            .send_text(room, "chat", &text, SendOptions::default())
            .await?;
        assert_eq!(r.peers.unwrap_or_default().len(), 1);
        remote
            .wait_for(&text, T, |e| {
                e.name == "channel:message" && field(e, "data") == Some(text.as_str())
            })
            .await?;
    }

    // One leaves: the room stays, the others keep receiving, the remote stays connected.
    let l = c1.client.leave(room).await?;
    assert!(!l.left && l.holders == 2, "{l:?}");
    remote_sends(&remote, "chat", "after c1 left", &mut [&mut c2, &mut c3]).await?;
    // One disconnects: the same.
    drop(c2);
    let deadline = tokio::time::Instant::now() + T;
    while room_status(&c3.client, room).await?.map(|r| r.holders) != Some(1) {
        if tokio::time::Instant::now() > deadline {
            bail!("the closed connection's hold was not released");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    remote_sends(&remote, "chat", "after c2 left", &mut [&mut c3]).await?;
    // c1 gave up its hold but not its subscription.
    c1.wait_for("c1 still subscribed", T, |e| {
        field(e, "data") == Some("after c2 left")
    })
    .await?;
    never(
        &mut remote,
        "the remote lost daemon a",
        Duration::from_millis(500),
        |e| is(e, "connection:closed", &a_id) || is(e, "connection:disconnected", &a_id),
    )
    .await?;
    assert_eq!(remote.client.peers(room).await?.len(), 1);

    // The last hold goes: the room is left, and c1 (subscribed, not holding) is told.
    let l = c3.client.leave(room).await?;
    assert!(l.left && l.holders == 0, "{l:?}");
    let ev = c1
        .wait_for("room:left at c1", T, |e| is_room_left(e, room, "released"))
        .await?;
    assert_eq!(value(&ev, "holders").and_then(|v| v.as_u64()), Some(0));
    remote_loses(&mut remote, &a_id).await?;
    assert!(room_status(&c1.client, room).await?.is_none());
    // The leave's own caller is not told a second time (it did not subscribe to `room`).
    never(
        &mut c3,
        "room:left at the caller",
        Duration::from_millis(300),
        |e| e.name == "room:left",
    )
    .await?;
    Ok(())
}

/// The last holder's connection closes, or its session crashes: the room is left and its
/// subscribers get `room:left` `disconnected`; the remote sees the daemon go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_holder_disconnecting_leaves_the_room() -> Result<()> {
    let env = TestEnv::new()?;
    let da = env
        .daemon_with_env("a", &[], &[("PEERIXD_FAULT_INJECTION", "1")])
        .await?;
    let db = env.daemon("b", &[]).await?;
    for (room, crash) in [("closed", false), ("crashed", true)] {
        let mut remote = Member::join(&db, room, |_| {}).await?;
        let mut w = watcher(&da, room, &["room"]).await?;
        let (c, r) = holder(&da, room, &["channel"], false).await?;
        remote
            .wait_for("remote sees a", T, |e| is(e, "connection:connected", &r.id))
            .await?;
        if crash {
            let err = debug(&c.client, &[("action", "panic-session")])
                .await
                .expect_err("the session crashed");
            assert!(err.to_string().contains("INTERNAL"), "{err}");
        } else {
            drop(c);
        }
        let ev = w
            .wait_for(&format!("room:left in {room}"), T, |e| {
                e.name == "room:left"
            })
            .await?;
        assert!(is_room_left(&ev, room, "disconnected"), "{ev:?}");
        remote_loses(&mut remote, &r.id).await?;
        assert!(room_status(&w.client, room).await?.is_none());
    }
    Ok(())
}

/// A persistent hold outlives the client that set it; a `leave` from another connection
/// releases it. A persistent hold beside a client's leaves the room to that client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_hold_outlives_its_client() -> Result<()> {
    let env = TestEnv::new()?;
    let da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let room = "kept";
    let mut remote = Member::join(&db, room, |_| {}).await?;
    let (c, r) = holder(&da, room, &["channel"], true).await?;
    assert!(r.persist && r.holders == 1, "{r:?}");
    remote
        .wait_for("remote sees a", T, |e| is(e, "connection:connected", &r.id))
        .await?;
    drop(c);
    let mut w = watcher(&da, room, &["room", "connection"]).await?;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let st = room_status(&w.client, room)
            .await?
            .expect("the room stays joined");
        assert!(st.persist);
        if st.holders == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the closed connection's hold was not released: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    never(
        &mut remote,
        "the remote lost daemon a",
        Duration::from_millis(500),
        |e| is(e, "connection:closed", &r.id),
    )
    .await?;

    // Another client holds it too; a leave from a third (holding nothing) releases the
    // persistent hold only.
    let (mut c2, _) = holder(&da, room, &["channel"], false).await?;
    let l = w.client.leave(room).await?;
    assert!(!l.left && l.holders == 1, "{l:?}");
    let st = room_status(&w.client, room).await?.expect("c2 holds it");
    assert!(!st.persist && st.holders == 1, "{st:?}");
    // Without the persistent hold, c2's leave is the last.
    let l = c2.client.leave(room).await?;
    assert!(l.left, "{l:?}");
    w.wait_for("room:left", T, |e| is_room_left(e, room, "released"))
        .await?;
    never(
        &mut c2,
        "room:left at the caller",
        Duration::from_millis(300),
        |e| e.name == "room:left",
    )
    .await?;
    remote_loses(&mut remote, &r.id).await?;

    // `peerix join` semantics: persistent, and `leave` from any other connection undoes it.
    let (c3, _) = holder(&da, room, &["channel"], true).await?;
    c3.client.leave(room).await?;
    let st = room_status(&w.client, room).await?.expect("persistent");
    assert!(st.persist && st.holders == 0, "{st:?}");
    assert!(w.client.leave(room).await?.left);
    Ok(())
}

/// A `leave` from a connection that holds nothing, of a room others hold, is refused with
/// `NOT_HELD` naming them; with `all` it leaves the room and every other holder is told,
/// whatever it subscribed to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_all_tells_every_holder_and_not_held_refuses() -> Result<()> {
    let env = TestEnv::new()?;
    let da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let room = "contested";
    let mut remote = Member::join(&db, room, |_| {}).await?;
    let (mut c1, r) = holder(&da, room, &["channel:message"], false).await?;
    let c2 = Client::connect_as(&da.socket, "second-app").await?;
    c2.join(JoinArgs::new(room)).await?;
    // c2 subscribed to nothing: it gets room:left all the same.
    let mut c2_events = c2.events();
    remote
        .wait_for("remote sees a", T, |e| is(e, "connection:connected", &r.id))
        .await?;

    let other = da.client().await?;
    match other.leave(room).await {
        Err(ClientError::Daemon(body)) => {
            assert_eq!(body.code, ErrorCode::NotHeld, "{body:?}");
            assert!(
                body.message.contains("second-app"),
                "names the holders: {}",
                body.message
            );
            assert!(
                body.message.contains("all"),
                "says how to leave anyway: {}",
                body.message
            );
        }
        other => bail!("leave by a non-holder: {other:?}"),
    }
    assert_eq!(room_status(&other, room).await?.map(|r| r.holders), Some(2));

    let l = other.leave_all(room).await?;
    assert!(l.left && l.holders == 0, "{l:?}");
    c1.wait_for("room:left at c1", T, |e| is_room_left(e, room, "leave-all"))
        .await?;
    let ev = tokio::time::timeout(T, c2_events.recv())
        .await?
        .expect("an event");
    assert!(is_room_left(&ev, room, "leave-all"), "{ev:?}");
    remote_loses(&mut remote, &r.id).await?;
    assert!(room_status(&other, room).await?.is_none());
    // Nothing left to leave.
    match other.leave(room).await {
        Err(ClientError::Daemon(body)) => assert_eq!(body.code, ErrorCode::NotJoined),
        other => bail!("leave of a left room: {other:?}"),
    }
    Ok(())
}

/// Two clients send on the same channel at once while two subscribers on the other daemon
/// each see every `channel:message`, each sender's messages in order. (The delivery held
/// before holds existed too; this pins it for clients that share a room by holding it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_on_one_channel_reach_every_subscriber() -> Result<()> {
    const N: usize = 100;
    let env = TestEnv::new()?;
    let da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let room = "busy";
    let (mut s1, r) = holder(&da, room, &["connection", "channel"], false).await?;
    let (s2, r2) = holder(&da, room, &["channel"], false).await?;
    assert_eq!(r2.holders, 2, "both senders hold the one membership");
    let (mut sub1, rb) = holder(&db, room, &["connection", "channel"], false).await?;
    let mut sub2 = watcher(&db, room, &["channel:message"]).await?;
    sub1.wait_for("b sees a", T, |e| is(e, "connection:connected", &r.id))
        .await?;
    s1.open("chat").await?;
    s1.wait_for("chat open at a", T, |e| is(e, "channel:open", &rb.id))
        .await?;
    sub1.wait_for("chat open at b", T, |e| is(e, "channel:open", &r.id))
        .await?;

    let send_all = |c: Client, who: &'static str| async move {
        for k in 0..N {
            let r = c
                .send_text(room, "chat", &format!("{who} {k}"), SendOptions::default())
                .await?;
            if !r.peers.unwrap_or_default().iter().all(|p| p.ok) {
                bail!("{who} {k} not acknowledged");
            }
        }
        Ok::<_, anyhow::Error>(c)
    };
    let (a, b) = tokio::join!(
        tokio::spawn(send_all(s1.client, "one")),
        tokio::spawn(send_all(s2.client, "two"))
    );
    let _clients = (a??, b??);

    for (name, sub) in [("sub1", &mut sub1), ("sub2", &mut sub2)] {
        let mut next = [0usize; 2];
        while next != [N, N] {
            let ev = sub
                .wait_for(&format!("{name}: message {next:?}"), T, |e| {
                    e.name == "channel:message"
                })
                .await?;
            let text = field(&ev, "data").unwrap_or_default().to_string();
            let (who, k) = text.split_once(' ').unwrap_or_default();
            let i = match who {
                "one" => 0,
                "two" => 1,
                _ => bail!("{name}: unexpected {text:?}"),
            };
            assert_eq!(
                k.parse::<usize>()?,
                next[i],
                "{name}: {who}'s messages in order"
            );
            next[i] += 1;
        }
    }
    Ok(())
}

/// The holds belong to the room's membership: a room whose actor crashes is re-joined with its
/// holders, and still leaves when the last of them goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_survive_a_crash_of_the_room() -> Result<()> {
    let env = TestEnv::new()?;
    let da = env
        .daemon_with_env("a", &[], &[("PEERIXD_FAULT_INJECTION", "1")])
        .await?;
    let room = "fragile";
    let mut w = watcher(&da, room, &["room", "error"]).await?;
    let (c1, _) = holder(&da, room, &["channel"], false).await?;
    let (c2, _) = holder(&da, room, &["channel"], false).await?;
    debug(&w.client, &[("action", "panic-room"), ("room", room)]).await?;
    w.wait_for("the crash reported", T, |e| e.name == "error")
        .await?;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(st) = room_status(&w.client, room).await? {
            assert_eq!((st.holders, st.persist), (2, false), "{st:?}");
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the room was not re-joined");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!c1.client.leave(room).await?.left);
    drop(c2);
    w.wait_for("room:left", T, |e| is_room_left(e, room, "disconnected"))
        .await?;
    Ok(())
}
