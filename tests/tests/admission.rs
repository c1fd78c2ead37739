//! Remote admission (Peerix's `verify`) between real daemons over a real nats-server: an
//! allow-list, and a verifier client that is shown each new peer's metadata, with its timeout
//! and fallback. A refused peer must never become connected on either side, and get what
//! Peerix gives it: no reaction.

use std::time::{Duration, Instant};

use anyhow::Result;
use peerix_ipc_proto::{ErrorCode, JoinOptions, VerifyFallback, VerifyMode, VerifyOptions};
use peerix_system_tests::*;

const T: Duration = Duration::from_secs(20);

async fn nats_daemon(env: &TestEnv, name: &str, nats: &NatsServer) -> Result<DaemonProc> {
    let url = nats.url();
    env.daemon(name, &["--nats", url.as_str(), "--driver", "nats"])
        .await
}

fn meta(name: &str) -> rmpv::Value {
    rmpv::Value::Map(vec![(rmpv::Value::from("name"), rmpv::Value::from(name))])
}

fn verify_options(v: VerifyOptions) -> Option<JoinOptions> {
    Some(JoinOptions {
        verify: Some(v),
        ..Default::default()
    })
}

/// Nothing in `events` is about `peer`.
fn nothing_about(events: &[peerix_client::Event], peer: &str) -> bool {
    !events.iter().any(|e| field(e, "peer") == Some(peer))
}

fn peer_ids(peers: &[peerix_client::PeerInfo]) -> Vec<&str> {
    peers.iter().map(|p| p.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_admits_the_listed_peer_and_ignores_the_other() -> Result<()> {
    let nats = NatsServer::start(&[])?;
    let env = TestEnv::new()?;
    let (da, dr, dv) = (
        nats_daemon(&env, "a", &nats).await?,
        nats_daemon(&env, "r", &nats).await?,
        nats_daemon(&env, "v", &nats).await?,
    );
    let room = "adm-allow";
    let mut a = Member::join(&da, room, |j| j.metadata = Some(meta("alice"))).await?;
    let mut r = Member::join(&dr, room, |j| j.metadata = Some(meta("mallory"))).await?;
    a.wait_for("a and r meet", T, |e| is(e, "connection:connected", &r.id))
        .await?;
    // v joins last, admitting only a: both invoke it; it offers to a and stays silent to r.
    let allow = vec![a.id.clone()];
    let mut v = Member::join(&dv, room, |j| {
        j.options = verify_options(VerifyOptions {
            mode: VerifyMode::Allow,
            allow: Some(allow),
            ..Default::default()
        })
    })
    .await?;
    v.wait_for("v connects to a", T, |e| {
        is(e, "connection:connected", &a.id)
    })
    .await?;
    a.wait_for("a connects to v", T, |e| {
        is(e, "connection:connected", &v.id)
    })
    .await?;
    // Long enough for r's re-invokes (5 and 10 s after its first) to be ignored too.
    let at_v = v.drain_for(Duration::from_secs(12)).await;
    assert!(nothing_about(&at_v, &r.id), "v reacted to r: {at_v:?}");
    let at_r = r.drain_for(Duration::from_millis(100)).await;
    assert!(
        !at_r
            .iter()
            .any(|e| e.name.starts_with("connection:") && field(e, "peer") == Some(v.id.as_str())),
        "r never gets a connection to v: {at_r:?}"
    );
    assert_eq!(peer_ids(&v.client.peers(room).await?), [a.id.as_str()]);
    assert!(!peer_ids(&r.client.peers(room).await?).contains(&v.id.as_str()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_client_is_shown_the_metadata_and_decides() -> Result<()> {
    let nats = NatsServer::start(&[])?;
    let env = TestEnv::new()?;
    let (da, dr, dv) = (
        nats_daemon(&env, "a", &nats).await?,
        nats_daemon(&env, "r", &nats).await?,
        nats_daemon(&env, "v", &nats).await?,
    );
    let room = "adm-verifier";
    let mut v = Member::join(&dv, room, |j| {
        j.options = verify_options(VerifyOptions {
            mode: VerifyMode::Verifier,
            timeout: Some(10_000),
            fallback: Some(VerifyFallback::Accept),
            ..Default::default()
        })
    })
    .await?;
    let verifier = dv.client().await?;
    let mut requests = verifier.verifier(room).await?;
    // One verifier per room; only it may answer.
    let other = dv.client().await?;
    let taken = other.verifier(room).await.expect_err("a second verifier");
    assert_eq!(
        taken.daemon_error().map(|e| &e.code),
        Some(&ErrorCode::VerifierTaken)
    );
    let not_it = other
        .verify(room, 0, true)
        .await
        .expect_err("not the verifier");
    assert_eq!(
        not_it.daemon_error().map(|e| &e.code),
        Some(&ErrorCode::NotVerifier)
    );

    // a and r join after v: v invokes them, they offer with their metadata, and v asks.
    let mut a = Member::join(&da, room, |j| j.metadata = Some(meta("alice"))).await?;
    let mut r = Member::join(&dr, room, |j| {
        j.metadata = Some(meta("mallory"));
        // Peerix's connection timer, shortened: r's unanswered offer fails sooner.
        j.options = Some(JoinOptions {
            connection_timeout: Some(3_000),
            ..Default::default()
        });
    })
    .await?;
    let mut seen = Vec::new();
    let deadline = Instant::now() + T;
    while seen.len() < 2 {
        let req = tokio::time::timeout_at(deadline.into(), requests.recv())
            .await?
            .expect("requests");
        assert_eq!(req.room, room);
        let name = req
            .metadata
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("name")))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or_default()
            .to_string();
        let accept = name == "alice";
        let want = if accept { &a.id } else { &r.id };
        assert_eq!(&req.peer, want, "{req:?}");
        verifier.verify(room, req.request, accept).await?;
        // A verdict is given once.
        let again = verifier
            .verify(room, req.request, accept)
            .await
            .expect_err("answered twice");
        assert_eq!(
            again.daemon_error().map(|e| &e.code),
            Some(&ErrorCode::Timeout)
        );
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen.sort();
    assert_eq!(seen, ["alice", "mallory"]);
    v.wait_for("v connects to a", T, |e| {
        is(e, "connection:connected", &a.id)
    })
    .await?;
    a.wait_for("a connects to v", T, |e| {
        is(e, "connection:connected", &v.id)
    })
    .await?;
    // r offered and got no answer: as with Peerix, its connection fails at its timeout.
    r.wait_for("r's offer to v times out", T, |e| {
        is(e, "connection:failed", &v.id)
    })
    .await?;
    // r re-invokes v: asked again, refused again.
    let again = tokio::time::timeout(T, requests.recv())
        .await?
        .expect("requests");
    assert_eq!(again.peer, r.id);
    verifier.verify(room, again.request, false).await?;
    let at_v = v.drain_for(Duration::from_secs(3)).await;
    assert!(nothing_about(&at_v, &r.id), "v reacted to r: {at_v:?}");
    assert!(
        !at_v.iter().any(|e| e.name == "verify"),
        "verify events go to the verifier only"
    );
    let at_r = r.drain_for(Duration::from_millis(100)).await;
    assert!(
        !at_r.iter().any(|e| is(e, "connection:connected", &v.id)),
        "{at_r:?}"
    );
    assert_eq!(peer_ids(&v.client.peers(room).await?), [a.id.as_str()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_that_is_absent_or_leaves_gives_way_to_the_fallback() -> Result<()> {
    let nats = NatsServer::start(&[])?;
    let env = TestEnv::new()?;
    let (da, dv) = (
        nats_daemon(&env, "a", &nats).await?,
        nats_daemon(&env, "v", &nats).await?,
    );
    // No verifier ever registers: each request waits its 1.5 s, then the fallback admits.
    let room = "adm-timeout";
    let mut v = Member::join(&dv, room, |j| {
        j.options = verify_options(VerifyOptions {
            mode: VerifyMode::Verifier,
            timeout: Some(1_500),
            fallback: Some(VerifyFallback::Accept),
            ..Default::default()
        })
    })
    .await?;
    let start = Instant::now();
    let a = Member::join(&da, room, |_| {}).await?;
    v.wait_for("fallback admits a", T, |e| {
        is(e, "connection:connected", &a.id)
    })
    .await?;
    assert!(
        start.elapsed() >= Duration::from_millis(1_400),
        "admitted after the timeout, not before: {:?}",
        start.elapsed()
    );

    // A verifier that holds a request and disconnects: the fallback applies at once, long
    // before the 60 s timeout.
    let room = "adm-departed";
    let mut v = Member::join(&dv, room, |j| {
        j.options = verify_options(VerifyOptions {
            mode: VerifyMode::Verifier,
            timeout: Some(60_000),
            fallback: Some(VerifyFallback::Accept),
            ..Default::default()
        })
    })
    .await?;
    let verifier = dv.client().await?;
    let mut requests = verifier.verifier(room).await?;
    let a = Member::join(&da, room, |_| {}).await?;
    let req = tokio::time::timeout(T, requests.recv())
        .await?
        .expect("a request");
    assert_eq!(req.peer, a.id);
    drop(requests);
    drop(verifier);
    let left = Instant::now();
    v.wait_for("fallback admits a", T, |e| {
        is(e, "connection:connected", &a.id)
    })
    .await?;
    assert!(
        left.elapsed() < Duration::from_secs(15),
        "{:?}",
        left.elapsed()
    );
    // The room has no verifier now: another client may take the role.
    let next = dv.client().await?;
    next.verifier(room).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_crashes_keeps_its_verifier() -> Result<()> {
    let nats = NatsServer::start(&[])?;
    let env = TestEnv::new()?;
    let url = nats.url();
    let dv = env
        .daemon_with_env(
            "v",
            &["--nats", url.as_str(), "--driver", "nats"],
            &[("PEERIXD_FAULT_INJECTION", "1")],
        )
        .await?;
    let da = nats_daemon(&env, "a", &nats).await?;
    let room = "adm-crash";
    let mut v = Member::join(&dv, room, |j| {
        j.options = verify_options(VerifyOptions {
            mode: VerifyMode::Verifier,
            timeout: Some(30_000),
            fallback: Some(VerifyFallback::Reject),
            ..Default::default()
        })
    })
    .await?;
    let verifier = dv.client().await?;
    let mut requests = verifier.verifier(room).await?;
    debug(&v.client, &[("action", "panic-room"), ("room", room)]).await?;
    v.wait_for("the room's crash", T, |e| {
        e.name == "error" && e.room.as_deref() == Some(room)
    })
    .await?;
    // The re-joined room (same id, same options) still asks the same client.
    let a = Member::join(&da, room, |_| {}).await?;
    let req = tokio::time::timeout(T, requests.recv())
        .await?
        .expect("a request after the crash");
    assert_eq!(req.peer, a.id);
    verifier.verify(room, req.request, true).await?;
    v.wait_for("v admits a", T, |e| is(e, "connection:connected", &a.id))
        .await?;
    Ok(())
}
