//! Connecting across real networks: two daemons in two homes behind NAT routers, coturn on a
//! public segment (`tests/src/netlab.rs`). Needs root for network namespaces; skipped with a
//! message otherwise. Tests check completion and integrity; the timings they print are
//! measured, not asserted (CI machines vary).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_client::SendOptions;
use peerix_ipc_proto::{IceServer, IceTransportPolicy, JoinOptions, PeerInfo};
use peerix_system_tests::netlab::{self, Home, Lab, Nat, TurnAuth};
use peerix_system_tests::*;

const T: Duration = Duration::from_secs(20);

/// Two daemons, one per home, joined to one room with `ice` servers and `policy`.
struct Pair {
    /// `bulk` is open between them.
    bulk_open: bool,
    a: Member,
    b: Member,
    // Dropped after the members (their clients talk to these processes).
    _da: DaemonProc,
    _db: DaemonProc,
    env: TestEnv,
}

fn servers(urls: &[String], user: Option<&str>, pass: Option<&str>) -> Vec<IceServer> {
    urls.iter()
        .map(|u| IceServer {
            urls: vec![u.clone()],
            username: user.map(str::to_string),
            credential: pass.map(str::to_string),
        })
        .collect()
}

async fn pair(
    lab: &Lab,
    ice: Vec<IceServer>,
    policy: Option<IceTransportPolicy>,
    config: Option<&str>,
) -> Result<Pair> {
    let env = TestEnv::new()?;
    let conf = env.dir.path().join("peerixd.toml");
    let conf = conf.to_string_lossy().into_owned();
    let mut extra = Vec::new();
    if let Some(text) = config {
        std::fs::write(&conf, text)?;
        extra = vec!["--config", conf.as_str()];
    }
    let da = lab.daemon(&env, "a", Home::A, &extra).await?;
    let db = lab.daemon(&env, "b", Home::B, &extra).await?;
    let opts = JoinOptions {
        ice_servers: Some(ice),
        ice_transport_policy: policy,
        ..Default::default()
    };
    let a = Member::join(&da, "net", |j| j.options = Some(opts.clone())).await?;
    let b = Member::join(&db, "net", |j| j.options = Some(opts.clone())).await?;
    Ok(Pair {
        bulk_open: false,
        a,
        b,
        _da: da,
        _db: db,
        env,
    })
}

/// Waits for `connection:connecting` then `connection:connected` (or `failed`) at `m` for
/// `peer`; the time between the two (ICE checking to a selected pair) and the final state.
async fn ice_outcome(m: &mut Member, peer: &str, limit: Duration) -> Result<(Duration, String)> {
    m.wait_for("connecting", limit, |e| {
        is(e, "connection:connecting", peer)
    })
    .await?;
    let start = Instant::now();
    let ev = m
        .wait_for("connected or failed", limit, |e| {
            is(e, "connection:connected", peer) || is(e, "connection:failed", peer)
        })
        .await?;
    Ok((start.elapsed(), ev.name.clone()))
}

/// The peer's entry in `peers`.
async fn peer_info(m: &Member, peer: &str) -> Result<PeerInfo> {
    m.client
        .peers(&m.room)
        .await?
        .into_iter()
        .find(|p| p.id == peer)
        .context("peer missing from `peers`")
}

/// The selected pair's candidate types at `m`, polled until the stats name them.
async fn path_types(m: &Member, peer: &str) -> Result<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = peer_info(m, peer).await?;
        if let Some(s) = &info.stats {
            if let (Some(l), Some(r)) = (&s.local_candidate, &s.remote_candidate) {
                // The pair's protocol and addresses are reported with its types.
                println!("netpaths: {} route {} rtt {:?}", s.path(), s.route(), s.rtt);
                assert_eq!(s.protocol.as_deref(), Some("udp"), "{s:?}");
                let local = s.local_address.as_deref().unwrap_or_default();
                let remote = s.remote_address.as_deref().unwrap_or_default();
                assert!(!local.is_empty() && !remote.is_empty(), "{s:?}");
                if l == "relay" {
                    assert!(local.starts_with(netlab::TURN_IP), "{s:?}");
                }
                return Ok((l.clone(), r.clone()));
            }
        }
        if Instant::now() > deadline {
            bail!("no selected pair in `peers` for {peer}: {info:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for ICE at a, asserts a connected to b (coturn's log in the failure message), prints
/// the time since checking started and the selected path, and returns its candidate types.
async fn connected_path(p: &mut Pair, lab: &Lab, what: &str) -> Result<(String, String)> {
    let b_id = p.b.id.clone();
    let (took, state) = ice_outcome(&mut p.a, &b_id, T).await?;
    println!("netpaths: {what}: {state} {took:?} after ICE checking started");
    assert_eq!(state, "connection:connected", "{}", lab.turn_log());
    let (local, remote) = path_types(&p.a, &b_id).await?;
    println!("netpaths: {what}: path {local} -> {remote}");
    Ok((local, remote))
}

/// Sends `size` bytes a→b on `label`; checks the bytes at b; the time to the delivery report.
async fn transfer(p: &mut Pair, size: usize) -> Result<Duration> {
    let b_id = p.b.id.clone();
    let a_id = p.a.id.clone();
    if !p.bulk_open {
        p.a.open("bulk").await?;
        p.a.wait_for("bulk open", T, |e| {
            is(e, "channel:open", &b_id) && field(e, "label") == Some("bulk")
        })
        .await?;
        p.b.wait_for("bulk open at b", T, |e| {
            is(e, "channel:open", &a_id) && field(e, "label") == Some("bulk")
        })
        .await?;
        p.bulk_open = true;
    }
    let data: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let start = Instant::now();
    let r =
        p.a.client
            .send_bytes(&p.a.room, "bulk", data.clone(), SendOptions::default())
            .await?;
    let took = start.elapsed();
    let peers = r.peers.unwrap_or_default();
    if peers.len() != 1 || !peers[0].ok {
        bail!("the send was not acknowledged: {peers:?}");
    }
    p.b.receive_bytes_intact(&a_id, "bulk", &data, T).await?;
    Ok(took)
}

/// No ICE server, both homes behind NAT: no pair can work, and the failure is reported when
/// the last pair failed, not at the 15 s connection timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ice_servers_behind_nat_fails_quickly() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    let lab = Lab::build(Nat::Cone)?;
    let mut p = pair(&lab, Vec::new(), None, None).await?;
    let b_id = p.b.id.clone();
    let (took, state) = ice_outcome(&mut p.a, &b_id, T).await?;
    println!("netpaths: no ICE servers: {state} after {took:?} of checking");
    assert_eq!(state, "connection:failed");
    assert!(
        took < Duration::from_secs(10),
        "the failure waited for the connection timeout ({took:?})"
    );
    drop(p.env);
    Ok(())
}

/// STUN: the homes reach each other through their NATs' mappings; the path is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_connects_through_nat() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    let mut lab = Lab::build(Nat::Cone)?;
    lab.start_turn(TurnAuth::Static)?;
    let mut p = pair(&lab, servers(&[lab.stun_url()], None, None), None, None).await?;
    let b_id = p.b.id.clone();
    let (local, remote) = connected_path(&mut p, &lab, "STUN").await?;
    assert!(
        [local.as_str(), remote.as_str()]
            .iter()
            .any(|t| *t == "srflx" || *t == "prflx"),
        "a path through two NATs uses a reflexive candidate: {local} -> {remote}"
    );
    assert!(local != "relay" && remote != "relay");
    // `peerix status` shows the route (protocol and addresses) in its human layout.
    let out = std::process::Command::new(bin("peerix")?)
        .arg("--socket")
        .arg(&p._da.socket)
        .arg("status")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = text
        .lines()
        .find(|l| l.contains(&b_id))
        .with_context(|| format!("no row for {b_id}: {text}"))?;
    println!("netpaths: STUN: peerix status row: {row}");
    assert!(
        text.contains("ROUTE") && row.contains("udp 10.1.0.2:"),
        "{text}"
    );
    let took = transfer(&mut p, 256 * 1024).await?;
    println!("netpaths: STUN: 256 KiB in {took:?}");
    let took = transfer(&mut p, 4 << 20).await?;
    println!(
        "netpaths: STUN: 4 MiB in {took:?} ({:.1} MB/s)",
        4.194304 / took.as_secs_f64()
    );
    Ok(())
}

/// TURN over UDP with direct UDP blocked: the relay carries the connection and a 256 KiB
/// message arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_udp_relays_when_direct_udp_is_blocked() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    let mut lab = Lab::build(Nat::Cone)?;
    lab.start_turn(TurnAuth::Static)?;
    lab.block_direct_udp()?;
    let ice = servers(
        &[lab.turn_url()],
        Some(netlab::TURN_USER),
        Some(netlab::TURN_PASSWORD),
    );
    let mut p = pair(&lab, ice, None, None).await?;
    let (local, remote) = connected_path(&mut p, &lab, "TURN/UDP").await?;
    assert!(local == "relay" || remote == "relay", "{local} -> {remote}");
    for i in 0..3 {
        let took = transfer(&mut p, 256 * 1024).await?;
        println!("netpaths: TURN/UDP: 256 KiB #{i} in {took:?}");
    }
    let took = transfer(&mut p, 4 << 20).await?;
    println!(
        "netpaths: TURN/UDP: 4 MiB in {took:?} ({:.1} MB/s)",
        4.194304 / took.as_secs_f64()
    );
    Ok(())
}

/// `iceTransportPolicy: "relay"` with direct paths open: only the relay is used (the routers
/// count no UDP to anyone but coturn).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_policy_sends_nothing_direct() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    let mut lab = Lab::build(Nat::Cone)?;
    lab.start_turn(TurnAuth::Static)?;
    let ice = servers(
        &[lab.turn_url()],
        Some(netlab::TURN_USER),
        Some(netlab::TURN_PASSWORD),
    );
    let mut p = pair(&lab, ice, Some(IceTransportPolicy::Relay), None).await?;
    let (local, remote) = connected_path(&mut p, &lab, "relay policy").await?;
    assert_eq!((local.as_str(), remote.as_str()), ("relay", "relay"));
    let took = transfer(&mut p, 256 * 1024).await?;
    println!("netpaths: relay policy: 256 KiB in {took:?}");
    assert_eq!(lab.direct_udp_packets()?, 0, "direct UDP left a home");
    Ok(())
}

/// Both NATs symmetric: STUN-learnt mappings are useless, TURN connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_nats_connect_through_turn() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    let mut lab = Lab::build(Nat::Symmetric)?;
    lab.start_turn(TurnAuth::Static)?;
    let mut ice = servers(&[lab.stun_url()], None, None);
    ice.extend(servers(
        &[lab.turn_url()],
        Some(netlab::TURN_USER),
        Some(netlab::TURN_PASSWORD),
    ));
    let mut p = pair(&lab, ice, None, None).await?;
    let (local, remote) = connected_path(&mut p, &lab, "symmetric NATs").await?;
    assert!(local == "relay" || remote == "relay", "{local} -> {remote}");
    transfer(&mut p, 64 * 1024).await?;
    Ok(())
}

/// `[turn_rest]`: the daemon computes time-limited credentials from coturn's shared secret
/// and relays with them; with a wrong secret it says so (`ICE_SERVER_ERROR`) and the
/// connection fails without waiting for the connection timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_rest_credentials_computed_by_the_daemon() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    let mut lab = Lab::build(Nat::Cone)?;
    lab.start_turn(TurnAuth::Rest)?;
    lab.block_direct_udp()?;
    let config = |secret: &str| {
        format!(
            "[turn_rest]\nurls = [\"{}\"]\nsecret = \"{secret}\"\nlifetime = 600\n",
            lab.turn_url()
        )
    };
    let mut p = pair(&lab, Vec::new(), None, Some(&config(netlab::TURN_SECRET))).await?;
    let (local, remote) = connected_path(&mut p, &lab, "TURN REST").await?;
    assert!(local == "relay" || remote == "relay", "{local} -> {remote}");
    transfer(&mut p, 64 * 1024).await?;
    drop(p);

    let mut p = pair(&lab, Vec::new(), None, Some(&config("not-the-secret"))).await?;
    let b_id = p.b.id.clone();
    let ev =
        p.a.wait_for("ICE_SERVER_ERROR", T, |e| {
            e.name == "error" && error_code(e) == Some("ICE_SERVER_ERROR")
        })
        .await?;
    println!(
        "netpaths: TURN REST, wrong secret: {:?}",
        value(&ev, "error")
    );
    let (took, state) = ice_outcome(&mut p.a, &b_id, T).await?;
    println!("netpaths: TURN REST, wrong secret: {state} after {took:?} of checking");
    assert_eq!(state, "connection:failed");
    Ok(())
}

/// The `code` of an `error` event.
fn error_code(e: &peerix_ipc_proto::Event) -> Option<&str> {
    match value(e, "error")? {
        rmpv::Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_str() == Some("code"))
            .and_then(|(_, v)| v.as_str()),
        _ => None,
    }
}

/// The lab itself: coturn answers STUN from both homes with the router's public address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_stun_answers_from_both_homes() -> Result<()> {
    if netlab::skip() {
        return Ok(());
    }
    let mut lab = Lab::build(Nat::Cone)?;
    lab.start_turn(TurnAuth::Static)?;
    for home in [Home::A, Home::B] {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.host_ns(home), "turnutils_stunclient"])
            .arg(netlab::TURN_IP)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains(&format!("reflexive addr: {}:", home.public_ip())),
            "{home:?}: {text}\n{}",
            lab.turn_log()
        );
    }
    Ok(())
}
