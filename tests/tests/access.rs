//! Local access control (`[access]`): the socket file gets the configured group and mode, a
//! read-only client can observe but every operation that changes something is denied with
//! `PERMISSION_DENIED`, and a client in no list is refused at its `hello` and disconnected.
//!
//! The tests run as one user, so they make that user read-only or unlisted by configuring lists
//! that do not contain it (`full_users = [an unused uid]`): nobody is full by virtue of owning
//! the daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_client::{Client, ClientError, SendOptions};
use peerix_ipc_proto::{
    decode_daemon, encode_frame, ClientMessage, DaemonMessage, ErrorCode, FrameDecoder, Hello,
    JoinArgs, OpenArgs, PROTOCOL_VERSION,
};
use peerix_system_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A uid no test user has.
const NOBODY_UID: &str = "4242424";

fn ids() -> (u32, u32) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // "Uid:\treal\teffective\t...": the effective id is what SO_PEERCRED reports.
    (field("Uid:"), field("Gid:"))
}

fn write_config(env: &TestEnv, name: &str, access: &str) -> Result<PathBuf> {
    let path = env.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, format!("[access]\n{access}\n"))?;
    Ok(path)
}

/// A daemon that may refuse this test's clients: ready when its socket accepts a connection
/// (the harness's own readiness check says hello, which an unlisted client cannot).
struct Restricted {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Restricted {
    async fn start(env: &TestEnv, name: &str, config: &Path, extra: &[&str]) -> Result<Self> {
        let socket = env.dir.path().join(format!("{name}.sock"));
        let log = env.dir.path().join(format!("{name}.log"));
        let child = Command::new(bin("peerixd")?)
            .arg("--socket")
            .arg(&socket)
            .arg("--local-dir")
            .arg(env.local_dir())
            .arg("--no-system-config")
            .arg("--config")
            .arg(config)
            .args(extra)
            .env_remove("PEERIX_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning peerixd")?;
        let mut d = Self { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::UnixStream::connect(&d.socket).await.is_err() {
            if let Some(status) = d.child.try_wait()? {
                bail!("peerixd exited with {status}: {}", d.log_text());
            }
            if Instant::now() > deadline {
                bail!("peerixd did not listen in 20 s: {}", d.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(d)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Restricted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn denied<T: std::fmt::Debug>(what: &str, r: Result<T, ClientError>) {
    match r {
        Err(e) => {
            let body = e.daemon_error().unwrap_or_else(|| panic!("{what}: {e}"));
            assert_eq!(body.code, ErrorCode::PermissionDenied, "{what}: {body:?}");
            assert!(
                body.message.contains("needs full access")
                    && body.message.contains("read-only access"),
                "{what}: the message says which tier is needed: {}",
                body.message
            );
        }
        Ok(v) => panic!("{what} was allowed to a read-only client: {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_client_observes_but_cannot_change_anything() -> Result<()> {
    let env = TestEnv::new()?;
    let (uid, _) = ids();
    let cfg = write_config(
        &env,
        "ro",
        &format!("full_users = [\"{NOBODY_UID}\"]\nread_only_users = [\"{uid}\"]"),
    )?;
    let ro = Restricted::start(&env, "ro", &cfg, &["--join", "demo"]).await?;
    let client = Client::connect(&ro.socket).await?;

    // Observing works: status, peers, subscribe, and the events do arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client
        .status()
        .await?
        .rooms
        .iter()
        .any(|r| r.room == "demo")
    {
        if Instant::now() > deadline {
            bail!("the room given by --join never showed in status");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut events = client.subscribe(&["connection"], Some("demo")).await?;
    let other = env.daemon("full", &[]).await?;
    let full = other.client().await?;
    full.join(JoinArgs::new("demo")).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(ev)) if ev.name == "connection:connected" => break,
            Ok(Some(_)) => continue,
            _ => bail!("no connection:connected reached the read-only subscriber"),
        }
    }
    let peers = client.peers("demo").await?;
    assert_eq!(peers.len(), 1, "{peers:?}");

    // Everything that changes something is denied, each with PERMISSION_DENIED.
    denied("join", client.join(JoinArgs::new("other")).await);
    denied("leave", client.leave("demo").await);
    denied("open", client.open(OpenArgs::new("demo", "chat")).await);
    denied("close", client.close("demo", "chat", None).await);
    denied(
        "send",
        client
            .send_text("demo", "chat", "hello", SendOptions::default())
            .await,
    );
    // Well-formed requests, so that only the access tier can refuse them.
    let share = rmpv::Value::Map(vec![
        ("room".into(), "demo".into()),
        ("label".into(), "cam".into()),
        (
            "tracks".into(),
            rmpv::Value::Array(vec![rmpv::Value::Map(vec![("codec".into(), "vp8".into())])]),
        ),
    ]);
    let unshare = rmpv::Value::Map(vec![
        ("room".into(), "demo".into()),
        ("label".into(), "cam".into()),
    ]);
    for (op, args) in [
        ("share", share),
        ("unshare", unshare),
        ("debug", rmpv::Value::Map(vec![])),
    ] {
        let r = client.request_raw(op, args).await;
        denied(op, r);
    }
    // Denials leave the session usable, and the room joined.
    let status = client.status().await?;
    assert!(status.rooms.iter().any(|r| r.room == "demo"), "{status:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_in_the_read_only_list_grants_read_only() -> Result<()> {
    let env = TestEnv::new()?;
    let (_, gid) = ids();
    let cfg = write_config(
        &env,
        "grp",
        &format!("full_users = [\"{NOBODY_UID}\"]\nread_only_groups = [\"{gid}\"]"),
    )?;
    let d = Restricted::start(&env, "grp", &cfg, &[]).await?;
    let client = Client::connect(&d.socket).await?;
    client.status().await?;
    denied("join", client.join(JoinArgs::new("demo")).await);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_in_no_list_is_refused_at_the_handshake() -> Result<()> {
    let env = TestEnv::new()?;
    let cfg = write_config(&env, "none", &format!("full_users = [\"{NOBODY_UID}\"]"))?;
    let d = Restricted::start(&env, "none", &cfg, &[]).await?;

    match Client::connect(&d.socket).await {
        Err(ClientError::Rejected(body)) => {
            assert_eq!(body.code, ErrorCode::PermissionDenied, "{body:?}");
            assert!(body.message.contains("no access list"), "{}", body.message);
        }
        Err(e) => bail!("expected a refusal at the handshake, got {e}"),
        Ok(_) => bail!("a client in no access list was welcomed"),
    }

    // On the wire: exactly one `error` frame, then the daemon closes the connection.
    let mut s = tokio::net::UnixStream::connect(&d.socket).await?;
    let hello = ClientMessage::Hello(Hello {
        version: PROTOCOL_VERSION,
        client: "access-test".into(),
        capabilities: vec![],
    });
    s.write_all(&encode_frame(&hello)?).await?;
    let mut dec = FrameDecoder::new(1 << 20);
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(left, s.read(&mut buf))
            .await
            .context("the daemon kept the refused connection open")??;
        if n == 0 {
            break;
        }
        dec.buffer_mut().extend_from_slice(&buf[..n]);
        while let Some(f) = dec.next_frame_bytes()? {
            frames.push(decode_daemon(&f)?);
        }
    }
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(
        matches!(&frames[0], DaemonMessage::Error(e) if e.code == ErrorCode::PermissionDenied),
        "{frames:?}"
    );
    assert!(
        d.log_text().contains("refusing a client"),
        "{}",
        d.log_text()
    );
    Ok(())
}

/// A group to give the socket to: one the test user is in, not its primary group when it is
/// root (root may give a file to any group, so the check is not satisfied by the default).
fn a_group_of_mine() -> (String, u32) {
    let (uid, gid) = ids();
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    if uid == 0 {
        for line in groups.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if let (Some(name), Some(Ok(g))) = (f.first(), f.get(2).map(|g| g.parse::<u32>())) {
                if g != gid && !name.is_empty() {
                    return (name.to_string(), g);
                }
            }
        }
    }
    for line in groups.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(gid) {
            return (f[0].to_string(), gid);
        }
    }
    (gid.to_string(), gid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_gets_the_configured_group_and_mode() -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = TestEnv::new()?;

    // Today's behaviour without [access]: owner only.
    let plain = env.daemon("plain", &[]).await?;
    let m = std::fs::metadata(&plain.socket)?;
    assert_eq!(m.permissions().mode() & 0o777, 0o600);

    let (group, gid) = a_group_of_mine();
    let cfg = write_config(
        &env,
        "shared",
        &format!("socket_group = \"{group}\"\nsocket_mode = \"0660\""),
    )?;
    let d = Restricted::start(&env, "shared", &cfg, &[]).await?;
    let m = std::fs::metadata(&d.socket)?;
    assert_eq!(m.permissions().mode() & 0o777, 0o660, "socket mode");
    assert_eq!(m.gid(), gid, "socket group {group}");
    // The daemon's own user (and root) stay full by default.
    let client = Client::connect(&d.socket).await?;
    client.join(JoinArgs::new("demo")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_does_not_exist_stops_the_daemon_naming_the_key() -> Result<()> {
    let env = TestEnv::new()?;
    let cfg = write_config(&env, "bad", "socket_group = \"no-such-group-peerix\"")?;
    match Restricted::start(&env, "bad", &cfg, &[]).await {
        Ok(_) => bail!("the daemon started with a group that does not exist"),
        Err(e) => {
            let text = format!("{e:#}");
            assert!(
                text.contains("access.socket_group") && text.contains("does not exist"),
                "{text}"
            );
        }
    }
    Ok(())
}
