//! peerixd as a system service: sd_notify (READY, STATUS, WATCHDOG from the actor loop,
//! STOPPING), socket activation (LISTEN_FDS), and the persistent identity.

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_system_tests::{bin, debug, DaemonProc, TestEnv};

/// A test-owned `$NOTIFY_SOCKET`: every datagram with the time it arrived.
struct NotifySocket {
    path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Result<Self> {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path)?;
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().expect("lock").push((Instant::now(), text));
            }
        });
        Ok(Self { path, got })
    }

    /// Lines (`KEY=value`) received in `[from, to)`.
    fn lines_between(&self, from: Instant, to: Instant) -> Vec<String> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .flat_map(|(_, m)| m.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    fn all(&self) -> Vec<String> {
        self.lines_between(Instant::now() - Duration::from_secs(3600), Instant::now())
    }

    async fn wait_for(&self, pred: impl Fn(&str) -> bool, within: Duration) -> Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((t, _)) = self
                .got
                .lock()
                .expect("lock")
                .iter()
                .find(|(_, m)| m.lines().any(&pred))
            {
                return Ok(*t);
            }
            if Instant::now() > deadline {
                bail!("not received in {within:?}; got {:?}", self.all());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn watchdogs(lines: &[String]) -> usize {
    lines.iter().filter(|l| *l == "WATCHDOG=1").count()
}

#[tokio::test]
async fn notify_ready_status_watchdog_stopping_and_a_wedged_loop_goes_silent() -> Result<()> {
    let env = TestEnv::new()?;
    let notify = NotifySocket::bind(env.dir.path())?;
    let notify_path = notify.path.display().to_string();
    // 400 ms: keep-alives every 200 ms.
    let mut d = env
        .daemon_with_env(
            "svc",
            &["--join", "lobby"],
            &[
                ("NOTIFY_SOCKET", notify_path.as_str()),
                ("WATCHDOG_USEC", "400000"),
                ("PEERIXD_FAULT_INJECTION", "1"),
            ],
        )
        .await?;
    notify
        .wait_for(|l| l == "READY=1", Duration::from_secs(5))
        .await?;
    notify
        .wait_for(
            |l| l.starts_with("STATUS=") && l.contains("1 room") && l.contains("lobby"),
            Duration::from_secs(5),
        )
        .await
        .context("STATUS= with the joined room")?;
    // Periodic keep-alives.
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = watchdogs(&notify.lines_between(t0, Instant::now()));
    assert!(
        (4..=12).contains(&n),
        "expected a WATCHDOG=1 about every 200 ms, got {n} in 1.5 s"
    );
    // STATUS= at most once a second.
    let statuses: Vec<Instant> = notify
        .got
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l.starts_with("STATUS=")))
        .map(|(t, _)| *t)
        .collect();
    for w in statuses.windows(2).skip(1) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(900),
            "STATUS= updates closer than 1 s apart: {statuses:?}"
        );
    }

    // Wedge the actor loop for 3 s: the keep-alives stop, and come back after.
    let client = d.client().await?;
    let wedged_at = Instant::now();
    let wedge = tokio::spawn(async move {
        let r = debug(&client, &[("action", "wedge"), ("seconds", "3")]).await;
        (r, client)
    });
    tokio::time::sleep(Duration::from_millis(2800)).await;
    let during = notify.lines_between(wedged_at + Duration::from_millis(400), Instant::now());
    assert_eq!(
        watchdogs(&during),
        0,
        "a wedged daemon kept sending WATCHDOG=1: {during:?}"
    );
    let (r, _client) = wedge.await?;
    r.context("the wedge request")?;
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = notify.lines_between(back, Instant::now());
    assert!(
        watchdogs(&after) >= 2,
        "keep-alives did not resume after the wedge: {after:?}"
    );

    // SIGHUP: RELOADING=1 (with MONOTONIC_USEC=), then READY=1 again.
    let hup_at = Instant::now();
    let pid = d.pid().context("pid")?;
    Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()?;
    let reloading = notify
        .wait_for(|l| l == "RELOADING=1", Duration::from_secs(5))
        .await?;
    assert!(reloading >= hup_at);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !notify
        .lines_between(reloading, Instant::now())
        .iter()
        .any(|l| l == "READY=1")
    {
        if Instant::now() > deadline {
            bail!("no READY=1 after the reload: {:?}", notify.all());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        notify
            .all()
            .iter()
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 without MONOTONIC_USEC="
    );

    let status = d.terminate_within(Duration::from_secs(5))?;
    assert!(status.success(), "peerixd exited with {status}");
    notify
        .wait_for(|l| l == "STOPPING=1", Duration::from_secs(1))
        .await?;
    Ok(())
}

/// Hands `listener` to the daemon as fd 3 with LISTEN_FDS=1 and LISTEN_PID = the daemon's own
/// pid: `sh` sets LISTEN_PID to `$$` and `exec`s peerixd, which keeps that pid.
fn activated_command(listener: &UnixListener, args: &[&str]) -> Result<Command> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(bin("peerixd")?)
        .args(args)
        .env_remove("PEERIX_SOCKET");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 clears close-on-exec on the copy; the original at 3 still has it.
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

#[tokio::test]
async fn socket_activation_serves_clients_on_the_handed_over_socket() -> Result<()> {
    let env = TestEnv::new()?;
    let activated = env.dir.path().join("activated.sock");
    let listener = UnixListener::bind(&activated)?;
    // A different --socket: a daemon that ignored LISTEN_FDS would listen there instead.
    let elsewhere = env.dir.path().join("elsewhere.sock");
    let local = env.local_dir();
    let cmd = activated_command(
        &listener,
        &[
            "--no-system-config",
            "--socket",
            &elsewhere.display().to_string(),
            "--local-dir",
            &local.display().to_string(),
        ],
    )?;
    let mut d = DaemonProc::spawn_command(&env, "act", cmd, activated.clone()).await?;
    drop(listener);
    let client = tokio::time::timeout(Duration::from_secs(5), d.client())
        .await
        .context("no welcome on the handed-over socket")??;
    let st = client.status().await?;
    assert!(!st.id.is_empty());
    assert!(
        !elsewhere.exists(),
        "the daemon bound --socket as well as taking the handed-over socket"
    );
    let log = std::fs::read_to_string(&d.log)?;
    assert!(
        log.contains("(from systemd)"),
        "the start-up line does not say the socket came from systemd:\n{log}"
    );
    let status = d.terminate_within(Duration::from_secs(5))?;
    assert!(status.success(), "exit {status}");
    // The socket is systemd's: it stays for the next activation.
    assert!(
        activated.exists(),
        "the daemon removed the activated socket"
    );
    Ok(())
}

/// (machine id, room id of `lobby`) of a daemon started with these variables.
async fn ids(env: &TestEnv, name: &str, envs: &[(&str, &str)]) -> Result<(String, String)> {
    let mut d = env
        .daemon_with_env(name, &["--join", "lobby"], envs)
        .await?;
    let c = d.client().await?;
    let machine = c.welcome().id.clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    let room = loop {
        if let Some(r) = c
            .status()
            .await?
            .rooms
            .into_iter()
            .find(|r| r.room == "lobby")
        {
            break r.id;
        }
        if Instant::now() > deadline {
            bail!("lobby not joined");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(c);
    let status = d.terminate_within(Duration::from_secs(5))?;
    assert!(status.success(), "exit {status}");
    Ok((machine, room))
}

#[tokio::test]
async fn identity_persists_in_the_state_directory_and_ephemeral_differs() -> Result<()> {
    let env = TestEnv::new()?;
    let state = env.dir.path().join("state");
    let state_s = state.display().to_string();
    // First run: from systemd's $STATE_DIRECTORY; the key file is created, 0600.
    let first = ids(&env, "p1", &[("STATE_DIRECTORY", state_s.as_str())]).await?;
    let key = state.join("identity.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "identity.key has mode {mode:o}");
    }
    // While one daemon runs on the key, a second one on the same state directory is refused.
    let holder = env
        .daemon_with_env("holder", &[], &[("STATE_DIRECTORY", state_s.as_str())])
        .await?;
    match env
        .daemon_with_env("twin", &[], &[("STATE_DIRECTORY", state_s.as_str())])
        .await
    {
        Ok(_) => bail!("a second daemon started on the same identity file"),
        Err(e) => assert!(format!("{e:#}").contains("exited with"), "{e:#}"),
    }
    let log = std::fs::read_to_string(env.dir.path().join("twin.log"))?;
    assert!(log.contains("in use by another running peerixd"), "{log}");
    drop(holder);
    // Restart, now with the config key: the same machine id and room id.
    let second = ids(
        &env,
        "p2",
        &[("PEERIX_SERVICE__STATE_DIR", state_s.as_str())],
    )
    .await?;
    assert_eq!(first, second, "ids changed across a restart");

    // Ephemeral: a new key every run, even with a state directory.
    let eph = [
        ("STATE_DIRECTORY", state_s.as_str()),
        ("PEERIX_SERVICE__IDENTITY", "ephemeral"),
    ];
    let e1 = ids(&env, "e1", &eph).await?;
    let e2 = ids(&env, "e2", &eph).await?;
    assert_ne!(e1.0, e2.0);
    assert_ne!(e1.1, e2.1);
    assert_ne!(e1.0, first.0);

    // A corrupt key file: a clear error naming it, and a non-zero exit.
    std::fs::write(&key, "garbage\n")?;
    let err = match env
        .daemon_with_env("bad", &[], &[("STATE_DIRECTORY", state_s.as_str())])
        .await
    {
        Ok(_) => bail!("peerixd started with a corrupt identity file"),
        Err(e) => format!("{e:#}"),
    };
    // The whole log: with RUST_BACKTRACE set, a backtrace follows the error and fills the tail.
    let log = std::fs::read_to_string(env.dir.path().join("bad.log"))?;
    assert!(err.contains("exited with exit status: 1"), "{err}");
    assert!(
        log.contains(&key.display().to_string()) && log.contains("corrupt"),
        "{log}"
    );
    Ok(())
}
