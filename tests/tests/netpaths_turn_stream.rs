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
    let conf = env.dir.path().join("peerixd.toml");
    std::fs::write(&conf, config)?;
    let conf = conf.to_string_lossy().into_owned();
    let extra = ["--config", conf.as_str()];
    let da = lab.daemon(env, "a", Home::A, &extra).await?;
    let db = lab.daemon(env, "b", Home::B, &extra).await?;
    let opts = JoinOptions {
        ice_servers: Some(vec![IceServer {
            urls: vec![url],
            username: Some(netlab::TURN_USER.into()),
            credential: Some(netlab::TURN_PASSWORD.into()),
        }]),
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
