//! TURN over TCP and over TLS (`turns:`) when every UDP datagram from both homes is dropped
//! (`tests/src/netlab.rs`): the daemons reach coturn only over TCP, coturn relays between the
//! two allocations, and the path is relay/relay. Needs root for network namespaces; skipped
//! with a message otherwise. Timings are printed, not asserted.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_client::SendOptions;
use peerix_ipc_proto::{IceServer, JoinOptions, PeerStats};
use peerix_system_tests::netlab::{self, Home, Lab, Nat, TurnAuth};
use peerix_system_tests::*;

const T: Duration = Duration::from_secs(20);

/// Two daemons, one per home, in one room with `url` as their only ICE server.
async fn connect(
    lab: &Lab,
    env: &TestEnv,
    url: String,
    config: &str,
) -> Result<(Member, Member, DaemonProc, DaemonProc)> {
    let server = IceServer {
        urls: vec![url],
        username: Some(netlab::TURN_USER.into()),
        credential: Some(netlab::TURN_PASSWORD.into()),
    };
    connect_with(lab, env, vec![server], config).await
}

/// Two daemons, one per home, in one room with `ice_servers`.
async fn connect_with(
    lab: &Lab,
    env: &TestEnv,
    ice_servers: Vec<IceServer>,
    config: &str,
) -> Result<(Member, Member, DaemonProc, DaemonProc)> {
    let conf = env.dir.path().join("peerixd.toml");
    std::fs::write(&conf, config)?;
    let conf = conf.to_string_lossy().into_owned();
    let extra = ["--config", conf.as_str()];
    let da = lab.daemon(env, "a", Home::A, &extra).await?;
    let db = lab.daemon(env, "b", Home::B, &extra).await?;
    let opts = JoinOptions {
        ice_servers: Some(ice_servers),
        ..Default::default()
    };
    let a = Member::join(&da, "net", |j| j.options = Some(opts.clone())).await?;
    let b = Member::join(&db, "net", |j| j.options = Some(opts.clone())).await?;
    Ok((a, b, da, db))
}

/// The selected pair's figures at `m` for `peer`, polled until they name the pair.
async fn selected(m: &Member, peer: &str) -> Result<PeerStats> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = m
            .client
            .peers(&m.room)
            .await?
            .into_iter()
            .find(|p| p.id == peer)
            .context("peer missing from `peers`")?;
        if let Some(s) = info.stats.filter(|s| s.local_candidate.is_some()) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("no selected pair in `peers` for {peer}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `size` bytes from `from` to `to` on `bulk` and checks them at `to`.
async fn send_and_check(from: &mut Member, to: &mut Member, size: usize) -> Result<Duration> {
    let from_id = from.id.clone();
    let data: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ from_id.len() as u8)
        .collect();
    let start = Instant::now();
    let r = from
        .client
        .send_bytes(&from.room, "bulk", data.clone(), SendOptions::default())
        .await?;
    let took = start.elapsed();
    let peers = r.peers.unwrap_or_default();
    if peers.len() != 1 || !peers[0].ok {
        bail!("the send was not acknowledged: {peers:?}");
    }
    to.receive_bytes_intact(&from_id, "bulk", &data, T).await?;
    Ok(took)
}

/// The whole scenario for one stream transport: all UDP blocked, relay/relay over `url`,
/// 256 KiB each way intact, `relayProtocol` reported as `transport`.
async fn relays_over_stream(url: impl Fn(&Lab) -> String, transport: &str) -> Result<()> {
    let mut lab = Lab::build(Nat::Cone)?;
    lab.start_turn(TurnAuth::Static)?;
    lab.block_all_udp()?;
    let env = TestEnv::new()?;
    // TLS: coturn's throwaway certificate is trusted through the CA file.
    let config = if transport == "tls" {
        format!("[turn_tls]\nca_file = {:?}\n", lab.turn_cert())
    } else {
        String::new()
    };
    let (mut a, mut b, da, _db) = connect(&lab, &env, url(&lab), &config).await?;
    let b_id = b.id.clone();
    a.wait_for("connecting", T, |e| is(e, "connection:connecting", &b_id))
        .await?;
    let start = Instant::now();
    let ev = a
        .wait_for("connected or failed", T, |e| {
            is(e, "connection:connected", &b_id) || is(e, "connection:failed", &b_id)
        })
        .await?;
    println!(
        "netpaths: TURN/{transport}: {} {:?} after ICE checking started",
        ev.name,
        start.elapsed()
    );
    assert_eq!(
        ev.name,
        "connection:connected",
        "{}\n{}",
        da.log_tail(),
        lab.turn_log()
    );
    let s = selected(&a, &b_id).await?;
    println!(
        "netpaths: TURN/{transport}: {} route {}",
        s.path(),
        s.route()
    );
    assert_eq!(s.path(), "relay/relay", "{s:?}");
    assert_eq!(s.relay_protocol.as_deref(), Some(transport), "{s:?}");

    let a_id = a.id.clone();
    a.open("bulk").await?;
    for (m, peer) in [(&mut a, &b_id), (&mut b, &a_id)] {
        m.wait_for("bulk open", T, |e| {
            is(e, "channel:open", peer) && field(e, "label") == Some("bulk")
        })
        .await?;
    }
    let there = send_and_check(&mut a, &mut b, 256 * 1024).await?;
    let back = send_and_check(&mut b, &mut a, 256 * 1024).await?;
    println!("netpaths: TURN/{transport}: 256 KiB a->b in {there:?}, b->a in {back:?}");
    Ok(())
}

/// `turn:…?transport=tcp` with every UDP datagram from the homes dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_tcp_relays_when_all_udp_is_blocked() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    relays_over_stream(Lab::turn_tcp_url, "tcp").await
}

/// `turns:` (TLS, coturn's throwaway certificate trusted through `turn_tls.ca_file`) with
/// every UDP datagram from the homes dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_tls_relays_when_all_udp_is_blocked() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    relays_over_stream(Lab::turns_url, "tls").await
}

/// The code and message of an `error` event.
fn error_of(e: &peerix_ipc_proto::Event) -> Option<(&str, &str)> {
    let rmpv::Value::Map(m) = value(e, "error")? else {
        return None;
    };
    let get = |key: &str| {
        m.iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .and_then(|(_, v)| v.as_str())
    };
    Some((get("code")?, get("message")?))
}

/// Four TURN servers that fail differently, next to a STUN server that works: `turns:` with
/// a certificate nobody trusts (no `turn_tls.ca_file`), TURN over TCP on a port that refuses
/// connections, TURN over UDP on a port that drops everything, and coturn with a wrong
/// password. Each reaches the client as one
/// `ICE_SERVER_ERROR` naming its URL and saying what to do, well before the connection
/// timeout, and the connection goes on over the server-reflexive path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_turn_servers_are_reported_once_each_and_the_connection_goes_on() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    let mut lab = Lab::build(Nat::Cone)?;
    lab.start_turn(TurnAuth::Static)?;
    // Nothing listens on 3479: TCP is refused; UDP is dropped (no ICMP either).
    lab.nft(
        &lab.public_ns(),
        "table ip silent {\n chain input {\n  type filter hook input priority 0;\n  udp dport 3479 drop\n }\n}\n",
    )?;
    let env = TestEnv::new()?;
    let untrusted = lab.turns_url();
    let refused = format!("turn:{}:3479?transport=tcp", netlab::TURN_IP);
    let silent = format!("turn:{}:3479?transport=udp", netlab::TURN_IP);
    let wrong_password = lab.turn_url();
    let turn = |url: &str| IceServer {
        urls: vec![url.to_owned()],
        username: Some(netlab::TURN_USER.into()),
        credential: Some(netlab::TURN_PASSWORD.into()),
    };
    let servers = vec![
        IceServer {
            urls: vec![lab.stun_url()],
            username: None,
            credential: None,
        },
        turn(&untrusted),
        turn(&refused),
        turn(&silent),
        IceServer {
            credential: Some("not-the-password".into()),
            ..turn(&wrong_password)
        },
    ];
    let start = Instant::now();
    let (mut a, b, da, _db) = connect_with(&lab, &env, servers, "").await?;
    let b_id = b.id.clone();
    // What each failure must say: the URL and what to do about it.
    let expected = [
        (untrusted.as_str(), "ca_file"),
        (refused.as_str(), "refused"),
        (silent.as_str(), "no answer"),
        // The server's own error (vendor patch 20 hands it over), and what to check.
        (wrong_password.as_str(), "401"),
    ];
    let mut seen: Vec<(String, String)> = Vec::new();
    while seen.len() < expected.len() {
        let ev = a
            .wait_for("ICE_SERVER_ERROR", Duration::from_secs(10), |e| {
                e.name == "error" && error_of(e).is_some_and(|(c, _)| c == "ICE_SERVER_ERROR")
            })
            .await
            .with_context(|| format!("errors so far: {seen:#?}\n{}", da.log_tail()))?;
        let (_, message) = error_of(&ev).context("an error")?;
        println!("netpaths: {:?}: {message}", start.elapsed());
        assert_eq!(field(&ev, "peer"), Some(b_id.as_str()), "{ev:?}");
        let url = field(&ev, "url").context("ICE_SERVER_ERROR without url")?;
        seen.push((url.to_owned(), message.to_owned()));
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "reported only after {:?}",
        start.elapsed()
    );
    for (url, hint) in expected {
        let got: Vec<_> = seen.iter().filter(|(u, _)| u == url).collect();
        assert_eq!(got.len(), 1, "{url}: {seen:#?}");
        assert!(
            got[0].1.contains(url) && got[0].1.contains(hint),
            "{url} should say {hint:?}: {}",
            got[0].1
        );
    }
    let ev = a
        .wait_for("connected or failed", T, |e| {
            is(e, "connection:connected", &b_id) || is(e, "connection:failed", &b_id)
        })
        .await?;
    assert_eq!(ev.name, "connection:connected", "{}", da.log_tail());
    let s = selected(&a, &b_id).await?;
    println!("netpaths: failing TURN servers, path {}", s.path());
    // Once per server: nothing more within the servers' own retry periods.
    let more: Vec<_> = a
        .drain_for(Duration::from_secs(6))
        .await
        .into_iter()
        .filter(|e| e.name == "error")
        .collect();
    assert!(more.is_empty(), "reported again: {more:#?}");
    Ok(())
}

/// TURN over TCP with all UDP blocked (the relay is the only path), then the stream to coturn
/// is reset mid-session (`ss -K`: coturn drops the allocation with it). The daemon notices at
/// once and restarts ICE (a new stream and allocation), the relayed path comes back on the
/// same connection, and messages sent at the reset, both ways, arrive once each, in order,
/// reported delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_turn_stream_recovers_without_loss() -> Result<()> {
    use peerix_system_tests::pipelined::{all_delivered, expect_texts, issue_texts, never_failed};
    if netlab::skip() {
        return Ok(());
    }
    let mut lab = Lab::build(Nat::Cone)?;
    lab.start_turn(TurnAuth::Static)?;
    lab.block_all_udp()?;
    let env = TestEnv::new()?;
    let (mut a, mut b, da, db) = connect(&lab, &env, lab.turn_tcp_url(), "").await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("connected", T, |e| is(e, "connection:connected", &b_id))
        .await
        .with_context(|| da.log_tail())?;
    a.open("chat").await?;
    for (m, other) in [(&mut a, &b_id), (&mut b, &a_id)] {
        m.wait_for("chat open", T, |e| {
            is(e, "channel:open", other) && field(e, "label") == Some("chat")
        })
        .await?;
    }
    let replies = issue_texts(&a, "chat", &b_id, "before", 5).await?;
    expect_texts(&mut b, "chat", &a_id, "before", 5, T).await?;
    all_delivered(replies, &b_id).await?;

    // Reset a's streams to coturn (both directions see the connection die).
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.host_ns(Home::A), "ss", "-K", "-t"])
        .args(["dst", netlab::TURN_IP])
        .output()?;
    assert!(out.status.success(), "ss -K: {out:?}");
    let reset = Instant::now();
    let during = issue_texts(&a, "chat", &b_id, "during", 20).await?;
    let during_b = issue_texts(&b, "chat", &a_id, "back", 20).await?;
    expect_texts(&mut b, "chat", &a_id, "during", 20, Duration::from_secs(30))
        .await
        .with_context(|| format!("{}\n{}\n{}", da.log_tail(), db.log_tail(), lab.turn_log()))?;
    let took = reset.elapsed();
    println!("netpaths: TURN/tcp stream reset: messages sent then arrived {took:?} after it");
    // Not a tight timing: the bound is ICE's own consent timeout (~4.5 s without an answer),
    // after which a daemon that waited for ICE to notice would only start its restart (it
    // took 5.8 s so). With the loss acted on at once it took 0.5 s.
    assert!(
        took < Duration::from_secs(4),
        "the relayed path came back only after {took:?}: was the lost allocation noticed?\n{}",
        da.log_tail()
    );
    expect_texts(&mut a, "chat", &b_id, "back", 20, T).await?;
    all_delivered(during, &b_id).await?;
    all_delivered(during_b, &a_id).await?;
    let s = selected(&a, &b_id).await?;
    assert_eq!(s.path(), "relay/relay", "{s:?}");
    never_failed(&mut a, &b_id).await?;
    never_failed(&mut b, &a_id).await?;
    Ok(())
}
