//! The daemon's life as a service: SIGTERM leaves every room at once (remotes see
//! `connection:closed`, not a timeout) and exits 0 also with a transfer in flight; SIGHUP
//! reloads the configuration (rooms, log filter) and refuses a bad edit; `--check-config`
//! names every bad key.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_client::SendOptions;
use peerix_system_tests::*;

const CONNECT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_transfer_in_flight_closes_at_once_and_exits_zero() -> Result<()> {
    let env = TestEnv::new()?;
    let mut da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let a = Member::join(&da, "demo", |_| {}).await?;
    let mut b = Member::join(&db, "demo", |_| {}).await?;
    let a_id = a.id.clone();
    b.wait_for("b sees a", CONNECT, |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    a.open("bulk").await?;
    b.wait_for("bulk open at b", CONNECT, |e| {
        is(e, "channel:open", &a_id) && field(e, "label") == Some("bulk")
    })
    .await?;
    // 200 MiB from a to b: under way when a is told to stop.
    let sender = da.client().await?;
    let send = tokio::spawn(async move {
        sender
            .send_bytes("demo", "bulk", vec![7; 200 << 20], SendOptions::default())
            .await
    });
    b.wait_for("a first part at b", CONNECT, |e| {
        e.name == "channel:message"
    })
    .await?;
    let socket = da.socket.clone();
    let t = Instant::now();
    let pid = da.pid().context("pid")?;
    // SIGTERM from another thread: `terminate_within` blocks while it waits for the exit.
    let exit = tokio::task::spawn_blocking(move || {
        let r = da.terminate_within(Duration::from_secs(5));
        (r, t.elapsed())
    });
    b.wait_for("connection:closed at b", Duration::from_secs(2), |e| {
        is(e, "connection:closed", &a_id)
    })
    .await
    .with_context(|| format!("after SIGTERM to {pid}"))?;
    let closed_after = t.elapsed();
    let (status, exited_after) = exit.await?;
    let status = status?;
    eprintln!("SIGTERM: connection:closed at the remote after {closed_after:?}, exit after {exited_after:?}");
    assert!(status.success(), "exit {status}");
    assert!(
        closed_after < Duration::from_secs(1),
        "the remote saw connection:closed only after {closed_after:?}"
    );
    assert!(!socket.exists(), "the socket file is left behind");
    // The interrupted send ended with an error, it did not hang.
    let r = tokio::time::timeout(Duration::from_secs(5), send).await??;
    // An error reply, or (when the leave reached the lane first) a report with the peer failed.
    let failed = match &r {
        Err(_) => true,
        Ok(s) => s
            .peers
            .as_ref()
            .is_some_and(|p| !p.is_empty() && p.iter().all(|d| !d.ok)),
    };
    assert!(failed, "the send of a stopped daemon succeeded: {r:?}");
    Ok(())
}

fn hup(d: &DaemonProc) -> Result<()> {
    let pid = d.pid().context("pid")?;
    let ok = Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()?
        .success();
    if !ok {
        bail!("kill -HUP {pid} failed");
    }
    Ok(())
}

async fn rooms(d: &DaemonProc) -> Result<Vec<String>> {
    let c = d.client().await?;
    Ok(c.status()
        .await?
        .rooms
        .into_iter()
        .map(|r| r.room)
        .collect())
}

async fn reload_event(
    rx: &mut tokio::sync::mpsc::Receiver<peerix_ipc_proto::Event>,
) -> Result<peerix_ipc_proto::Event> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(e)) if e.name == "config:reload" => return Ok(e),
            Ok(Some(_)) => {}
            _ => bail!("no config:reload event within 5 s"),
        }
    }
}

#[tokio::test]
async fn sighup_joins_and_leaves_rooms_and_refuses_a_bad_edit() -> Result<()> {
    let env = TestEnv::new()?;
    let conf = env.dir.path().join("peerixd.toml");
    std::fs::write(&conf, "[[rooms]]\nid = \"alpha\"\n")?;
    let conf_s = conf.display().to_string();
    let d = env.daemon("hup", &["--config", &conf_s]).await?;
    let watcher = d.client().await?;
    let mut events = watcher.subscribe(&["config:reload"], None).await?;
    let alpha_watcher = d.client().await?;
    let mut alpha_events = alpha_watcher
        .subscribe(&["room:left"], Some("alpha"))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while rooms(&d).await? != vec!["alpha".to_string()] {
        if Instant::now() > deadline {
            bail!("alpha not joined: {:?}", rooms(&d).await?);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Add beta, drop alpha, turn the log up.
    std::fs::write(
        &conf,
        "log = \"debug,webrtc=warn,rtc=warn\"\n[[rooms]]\nid = \"beta\"\n",
    )?;
    hup(&d)?;
    let ev = reload_event(&mut events).await?;
    assert_eq!(
        value(&ev, "ok").and_then(|v| v.as_bool()),
        Some(true),
        "{ev:?}"
    );
    let changes = format!("{:?}", value(&ev, "changes"));
    assert!(
        changes.contains("joined \\\"beta\\\"")
            && changes.contains("left \\\"alpha\\\"")
            && changes.contains("log"),
        "{changes}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while rooms(&d).await? != vec!["beta".to_string()] {
        if Instant::now() > deadline {
            bail!("after SIGHUP: {:?}", rooms(&d).await?);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = tokio::time::timeout(Duration::from_secs(5), alpha_events.recv())
        .await?
        .context("room:left for alpha")?;
    assert_eq!(field(&left, "reason"), Some("config"), "{left:?}");
    let log = std::fs::read_to_string(&d.log)?;
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(
        log.contains("DEBUG"),
        "the new log filter was not applied:\n{log}"
    );

    // A bad edit: refused, the rooms stay as they were, the daemon runs on.
    std::fs::write(&conf, "bogus_key = 1\n[[rooms]]\nid = \"gamma\"\n")?;
    hup(&d)?;
    let ev = reload_event(&mut events).await?;
    assert_eq!(
        value(&ev, "ok").and_then(|v| v.as_bool()),
        Some(false),
        "{ev:?}"
    );
    assert!(
        field(&ev, "error").is_some_and(|e| e.contains("bogus_key")),
        "{ev:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rooms(&d).await?, vec!["beta".to_string()]);
    Ok(())
}

/// `GET /metrics` on `port`: whether it answers with the exposition text.
async fn scrape(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut body = String::new();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.is_ok()
        && tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
            .await
            .is_ok()
        && body.contains("peerix_up 1")
}

/// SIGHUP's ICE settings reach rooms already joined: their next connections use them (a room
/// whose join chose its own servers keeps them), and `status` shows what a room uses. The
/// metrics endpoint moves to a new address, and a busy one is refused with the old one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_ice_settings_and_moves_metrics() -> Result<()> {
    let env = TestEnv::new()?;
    let conf = env.dir.path().join("peerixd.toml");
    let (p1, p2) = (free_port()?, free_port()?);
    let write = |policy: &str, servers: &str, port: u16| {
        // TURN REST credentials come with the opened-up path.
        let turn = if policy == "all" {
            "[turn_rest]\nurls = [\"turn:127.0.0.1:5\"]\nsecret = \"s3cret\"\n"
        } else {
            ""
        };
        std::fs::write(
            &conf,
            format!(
                "{turn}[metrics]\nlisten = \"127.0.0.1:{port}\"\n[room_defaults]\n\
                 iceTransportPolicy = \"{policy}\"\niceServers = {servers}\n\
                 [[rooms]]\nid = \"ice\"\n"
            ),
        )
    };
    // Relay only, and no TURN server: no peer can reach this daemon.
    write("relay", "[]", p1)?;
    let conf_s = conf.display().to_string();
    let da = env.daemon("a", &["--config", &conf_s]).await?;
    let watcher = da.client().await?;
    let mut events = watcher.subscribe(&["config:reload"], None).await?;
    // A room whose join names its own servers and policy.
    let own = da.client().await?;
    let mut args = peerix_ipc_proto::JoinArgs::new("own");
    args.options = Some(peerix_ipc_proto::JoinOptions {
        ice_servers: Some(vec![peerix_ipc_proto::IceServer {
            urls: vec!["stun:127.0.0.1:9".into()],
            username: None,
            credential: None,
        }]),
        ice_transport_policy: Some(peerix_ipc_proto::IceTransportPolicy::Relay),
        ..Default::default()
    });
    own.join(args).await?;
    let room = |name: &'static str| {
        let c = &watcher;
        async move {
            let st = c.status().await?;
            st.rooms
                .into_iter()
                .find(|r| r.room == name)
                .with_context(|| format!("room {name} in status"))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while room("ice").await.is_err() {
        if Instant::now() > deadline {
            bail!("the configured room was not joined");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(room("ice").await?.ice_transport_policy, "relay");
    assert!(scrape(p1).await, "metrics on the first port");

    // The operator opens the path up and moves the metrics.
    write("all", "[{ urls = [\"stun:127.0.0.1:7\"] }]", p2)?;
    hup(&da)?;
    let ev = reload_event(&mut events).await?;
    let changes = format!("{:?}", value(&ev, "changes"));
    assert!(
        changes.contains("ICE settings")
            && changes.contains("\\\"ice\\\"")
            && changes.contains("metrics"),
        "{ev:?}"
    );
    assert!(!changes.contains("\\\"own\\\""), "{ev:?}");
    let ice = room("ice").await?;
    assert_eq!(ice.ice_transport_policy, "all", "{ice:?}");
    assert_eq!(ice.ice_servers, ["stun:127.0.0.1:7", "turn:127.0.0.1:5"]);
    // The join's own servers stay; the daemon's TURN REST server is added to every room.
    let own_room = room("own").await?;
    assert_eq!(own_room.ice_transport_policy, "relay", "{own_room:?}");
    assert_eq!(
        own_room.ice_servers,
        ["stun:127.0.0.1:9", "turn:127.0.0.1:5"]
    );
    assert!(scrape(p2).await, "metrics on the new port");
    assert!(!scrape(p1).await, "the old port is closed");

    // A peer arriving now connects: a's new connection may use host candidates.
    let db = env.daemon("b", &[]).await?;
    let mut b = Member::join(&db, "ice", |_| {}).await?;
    let a_id = da.client().await?.status().await?;
    let a_id = a_id
        .rooms
        .iter()
        .find(|r| r.room == "ice")
        .map(|r| r.id.clone())
        .context("a's id in ice")?;
    b.wait_for("b connects to a after the reload", CONNECT, |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;

    // A busy address: refused, the endpoint stays where it was.
    let busy = std::net::TcpListener::bind("127.0.0.1:0")?;
    let p3 = busy.local_addr()?.port();
    write("all", "[{ urls = [\"stun:127.0.0.1:7\"] }]", p3)?;
    hup(&da)?;
    let ev = reload_event(&mut events).await?;
    let refused = format!("{:?}", value(&ev, "refused"));
    assert!(refused.contains("metrics"), "{ev:?}");
    assert!(scrape(p2).await, "metrics still on the second port");
    Ok(())
}

#[test]
fn check_config_names_every_bad_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        "lgo = \"info\"\n[ipc]\nmax_frame = \"huge\"\n[[rooms]]\nid = \"r\"\ndriverr = \"local\"\n\
         [webrtc]\nmax_message_size = 5\n",
    )?;
    let out = Command::new(bin("peerixd")?)
        .args(["--no-system-config", "--check-config"])
        .arg(&f)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for needle in [
        "bad.toml:1: lgo:",
        "bad.toml:3: ipc.max_frame:",
        "bad.toml:6: rooms.driverr:",
        "webrtc.max_message_size",
    ] {
        assert!(err.contains(needle), "{needle:?} missing in:\n{err}");
    }
    std::fs::write(&f, "log = \"info\"\n[[rooms]]\nid = \"r\"\n")?;
    let out = Command::new(bin("peerixd")?)
        .args(["--no-system-config", "--check-config"])
        .arg(&f)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
