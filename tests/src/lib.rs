//! Harness for the end-to-end tests: real `peerixd` processes, real clients over the real socket,
//! real WebRTC over loopback, and (for NATS tests) a real `nats-server` started on a free port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use peerix_client::Client;
use peerix_ipc_proto::{Event, JoinArgs, OpenArgs};
use tokio::sync::mpsc::Receiver;

pub mod browser;
pub mod delay_relay;
pub mod hostile_peer;
pub mod lossy_link;
pub mod media;
pub mod netlab;
pub mod netns;
pub mod pipelined;
pub mod raw;

pub use peerix_client;
pub use peerix_ipc_proto;

/// The directory holding the workspace's binaries (`peerixd`, `peerix`), next to this test binary.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PEERIX_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/debug/deps/<test-binary> -> target/debug
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("target dir")
}

/// Path of a workspace binary; fails with a hint when it was not built.
pub fn bin(name: &str) -> Result<PathBuf> {
    let p = bin_dir().join(name);
    if !p.exists() {
        bail!(
            "{} not found: build the binaries first (`cargo build --workspace --bins`)",
            p.display()
        );
    }
    Ok(p)
}

/// A scratch area shared by the daemons of one test (rendezvous directory, sockets, logs).
pub struct TestEnv {
    /// The temporary directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    /// A fresh environment.
    pub fn new() -> Result<Self> {
        let mut b = tempfile::Builder::new();
        b.prefix("peerix-test-");
        // PEERIX_KEEP_TEST_DIRS=1 keeps sockets and daemon logs for post-mortems.
        if std::env::var_os("PEERIX_KEEP_TEST_DIRS").is_some() {
            b.disable_cleanup(true);
        }
        Ok(Self { dir: b.tempdir()? })
    }

    /// The `local` driver's rendezvous directory for this test.
    pub fn local_dir(&self) -> PathBuf {
        self.dir.path().join("local")
    }

    /// Starts a daemon named `name` with extra arguments.
    pub async fn daemon(&self, name: &str, extra: &[&str]) -> Result<DaemonProc> {
        DaemonProc::spawn(self, name, extra, &[]).await
    }

    /// The command that starts `peerixd` on `socket` in this environment (its local driver's
    /// rendezvous directory, no system configuration, no inherited `PEERIX_SOCKET`); callers
    /// add arguments and standard I/O.
    pub fn peerixd_command(&self, socket: &Path) -> Result<Command> {
        let mut cmd = Command::new(bin("peerixd")?);
        cmd.arg("--socket")
            .arg(socket)
            .arg("--local-dir")
            .arg(self.local_dir())
            .arg("--no-system-config")
            .env_remove("PEERIX_SOCKET");
        Ok(cmd)
    }

    /// Starts a daemon with extra environment variables.
    pub async fn daemon_with_env(
        &self,
        name: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<DaemonProc> {
        DaemonProc::spawn(self, name, extra, envs).await
    }
}

/// A `peerixd` child process; killed on drop.
pub struct DaemonProc {
    /// Name used for the socket and log file.
    pub name: String,
    /// The IPC socket.
    pub socket: PathBuf,
    /// stderr log of the daemon.
    pub log: PathBuf,
    child: Option<Child>,
}

impl DaemonProc {
    /// Spawns the daemon and waits until its socket answers.
    pub async fn spawn(
        env: &TestEnv,
        name: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        let socket = env.dir.path().join(format!("{name}.sock"));
        let mut cmd = env.peerixd_command(&socket)?;
        cmd.args(extra).envs(envs.iter().copied());
        Self::spawn_command(env, name, cmd, socket).await
    }

    /// Spawns a prepared `peerixd` command (stdin and stdout null, stderr to the log) and waits
    /// until `socket` answers: for tests that start the daemon in their own way (a wrapper,
    /// inherited descriptors).
    pub async fn spawn_command(
        env: &TestEnv,
        name: &str,
        mut cmd: Command,
        socket: PathBuf,
    ) -> Result<Self> {
        let log = env.dir.path().join(format!("{name}.log"));
        let logf = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .context("spawning peerixd")?;
        let mut d = Self {
            name: name.to_string(),
            socket,
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(c) = Client::connect(&d.socket).await {
                drop(c);
                return Ok(d);
            }
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("peerixd {name} exited with {status}: {}", d.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "peerixd {name} did not open its socket in 20 s: {}",
                    d.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The daemon's process id (while it runs), e.g. to stop it with SIGSTOP.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A new client connection.
    pub async fn client(&self) -> Result<Client> {
        Client::connect(&self.socket)
            .await
            .with_context(|| format!("connecting to {}", self.name))
    }

    /// The last lines of the daemon's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// WARN and ERROR lines of the daemon's log so far. The harness runs daemons with the
    /// default log filter, under which a healthy connection logs nothing above INFO.
    pub fn loud_log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" WARN") || l.contains(" ERROR"))
            .map(str::to_string)
            .collect()
    }

    /// Fails when the daemon logged anything above INFO (see [`DaemonProc::loud_log_lines`]).
    pub fn assert_quiet_log(&self) -> Result<()> {
        let loud = self.loud_log_lines();
        if !loud.is_empty() {
            bail!(
                "daemon {} logged {} WARN/ERROR lines, e.g.:\n{}",
                self.name,
                loud.len(),
                loud.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// Resident memory of the process in KiB (Linux `/proc`), if it can be read.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit; its exit status, or an
    /// error (after SIGKILL) when it did not exit in time.
    pub fn terminate_within(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("daemon already stopped")?;
        #[cfg(unix)]
        unsafe_free_sigterm(c.id());
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = c.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
        bail!(
            "peerixd {} did not exit within {limit:?} of SIGTERM",
            self.name
        )
    }

    /// Kills the daemon with SIGKILL (no chance to tell anyone) and reaps it.
    pub fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the daemon with SIGTERM (graceful leave) and waits for it.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            #[cfg(unix)]
            unsafe_free_sigterm(c.id());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(unix)]
fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A client joined to a room with its event stream.
pub struct Member {
    /// The client.
    pub client: Client,
    /// Its events.
    pub events: Receiver<Event>,
    /// Our Peerix id in the room.
    pub id: String,
    /// Room name.
    pub room: String,
    /// Events received but not yet consumed by a `wait_for`.
    pub backlog: std::collections::VecDeque<Event>,
}

impl Member {
    /// Connects to `d`, subscribes to everything, joins `room` with `args` tweaks. The join is
    /// persistent (the daemon, not this connection, holds the room, as `peerix join` does), so
    /// the room stays when the member is dropped; `tweak` may set `persist = false` to make
    /// the room this connection's to hold.
    pub async fn join(
        d: &DaemonProc,
        room: &str,
        tweak: impl FnOnce(&mut JoinArgs),
    ) -> Result<Self> {
        let client = d.client().await?;
        let events = client.subscribe(&["*"], Some(room)).await?;
        let mut args = JoinArgs::new(room).persistent();
        tweak(&mut args);
        let res = client.join(args).await?;
        Ok(Self {
            client,
            events,
            id: res.id,
            room: room.to_string(),
            backlog: Default::default(),
        })
    }

    /// Leaves the room for good: releases every hold on it (this connection's and the
    /// persistent one [`Member::join`] took), as `peerix leave --all` does.
    pub async fn leave(&self) -> Result<peerix_client::LeaveResult> {
        Ok(self.client.leave_all(&self.room).await?)
    }

    /// Opens a label room-wide.
    pub async fn open(&self, label: &str) -> Result<()> {
        Ok(self
            .client
            .open(OpenArgs::new(self.room.clone(), label))
            .await?)
    }

    /// Waits for an event matching `pred` (the earliest one, including events that arrived while
    /// waiting for something else); others stay in the backlog.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Result<Event> {
        if let Some(pos) = self.backlog.iter().position(&mut pred) {
            return Ok(self.backlog.remove(pos).expect("position is valid"));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) if pred(&ev) => return Ok(ev),
                Ok(Some(ev)) => self.backlog.push_back(ev),
                Ok(None) => bail!("event stream ended while waiting for {what}"),
                Err(_) => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
    }

    /// Waits for the whole message on `label` from `from` (its pieces assembled) and checks
    /// that it is `data`, byte for byte.
    pub async fn receive_bytes_intact(
        &mut self,
        from: &str,
        label: &str,
        data: &[u8],
        timeout: Duration,
    ) -> Result<()> {
        let mut asm = peerix_client::MessageAssembler::new();
        let got = loop {
            let ev = self
                .wait_for("bytes", timeout, |e| {
                    is(e, "channel:message", from) && field(e, "label") == Some(label)
                })
                .await?;
            if let Some(msg) = asm.push_owned(ev)? {
                break msg;
            }
        };
        let peerix_client::MessageData::Bytes(bytes) = got.data else {
            bail!("expected bytes, got {:?}", got.kind)
        };
        if sha256_hex(&bytes) != sha256_hex(data) {
            bail!(
                "corrupted in transit: {} bytes arrived, {} sent",
                bytes.len(),
                data.len()
            );
        }
        Ok(())
    }

    /// The next `n` whole messages on `label` (from any peer, their pieces assembled), waiting
    /// up to `timeout` for each.
    pub async fn receive_messages(
        &mut self,
        label: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<peerix_client::AssembledMessage>> {
        let mut asm = peerix_client::MessageAssembler::new();
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let what = format!("message {} of {n} on {label:?}", got.len());
            let ev = self
                .wait_for(&what, timeout, |e| {
                    e.name == "channel:message" && field(e, "label") == Some(label)
                })
                .await?;
            if let Some(m) = asm.push_owned(ev)? {
                got.push(m);
            }
        }
        Ok(got)
    }

    /// Collects events for `dur` (after the backlog).
    pub async fn drain_for(&mut self, dur: Duration) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + dur;
        let mut out: Vec<Event> = self.backlog.drain(..).collect();
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            out.push(ev);
        }
        out
    }
}

/// Two daemons ("a", "b") of `env` in `room`, connected, with `label` opened by a and open at
/// both ends.
pub async fn pair_with_channel(
    env: &TestEnv,
    room: &str,
    label: &str,
) -> Result<(DaemonProc, DaemonProc, Member, Member)> {
    const CONNECT: Duration = Duration::from_secs(10);
    let da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let mut a = Member::join(&da, room, |_| {}).await?;
    let mut b = Member::join(&db, room, |_| {}).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("a sees b connected", CONNECT, |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;
    a.open(label).await?;
    for (m, peer) in [(&mut a, &b_id), (&mut b, &a_id)] {
        m.wait_for("the channel open", CONNECT, |e| {
            is(e, "channel:open", peer) && field(e, "label") == Some(label)
        })
        .await?;
    }
    Ok((da, db, a, b))
}

/// Waits until every member saw every other one connected, except pairs among the first
/// `known` members (already seen), each within `timeout`.
pub async fn full_mesh(members: &mut [Member], known: usize, timeout: Duration) -> Result<()> {
    let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    for (i, m) in members.iter_mut().enumerate() {
        for (j, other) in ids.iter().enumerate() {
            if i != j && (i >= known || j >= known) {
                m.wait_for(&format!("{i} connected to {j}"), timeout, |e| {
                    is(e, "connection:connected", other)
                })
                .await?;
            }
        }
    }
    Ok(())
}

/// A string field of an event's data.
pub fn field<'a>(ev: &'a Event, key: &str) -> Option<&'a str> {
    match &ev.data {
        rmpv::Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .and_then(|(_, v)| v.as_str()),
        _ => None,
    }
}

/// Any field of an event's data.
pub fn value<'a>(ev: &'a Event, key: &str) -> Option<&'a rmpv::Value> {
    match &ev.data {
        rmpv::Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Is this `name` from `peer`?
pub fn is(ev: &Event, name: &str, peer: &str) -> bool {
    ev.name == name && field(ev, "peer") == Some(peer)
}

/// A free loopback TCP port (bind to 0, release).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A real `nats-server` on free loopback ports (client and websocket); killed on drop.
pub struct NatsServer {
    /// Client port.
    pub port: u16,
    /// Websocket port.
    pub ws_port: u16,
    extra: Vec<String>,
    /// More `nats.conf` text (e.g. a `tls { }` block).
    conf: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts nats-server with websocket enabled; `extra` are more command-line flags.
    pub fn start(extra: &[&str]) -> Result<Self> {
        Self::start_with_conf(extra, "")
    }

    /// [`NatsServer::start`] with more `nats.conf` text (e.g. a `tls { }` block).
    pub fn start_with_conf(extra: &[&str], conf: &str) -> Result<Self> {
        let port = free_port()?;
        let mut ws_port = free_port()?;
        while ws_port == port {
            ws_port = free_port()?;
        }
        let dir = tempfile::tempdir()?;
        let mut s = Self {
            port,
            ws_port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            conf: conf.to_string(),
            dir,
            child: None,
        };
        s.restart()?;
        Ok(s)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (an outage).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the server on the same ports.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let conf = self.dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "websocket {{\n  listen: \"127.0.0.1:{}\"\n  no_tls: true\n}}\n{}\n",
                self.ws_port, self.conf
            ),
        )?;
        let bin = which("nats-server").ok_or_else(|| {
            anyhow!("nats-server is not installed (apt-get install -y nats-server; scripts/test-all.sh does it)")
        })?;
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-c"])
            .arg(&conf)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("nats-server did not listen on {} within 10 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// SHA-256 hex of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Sends a `debug` request (fault injection) with string arguments, e.g.
/// `[("action", "panic-room"), ("room", "r")]`. The daemon must run with
/// `PEERIXD_FAULT_INJECTION=1` and be built with `--features peerixd/fault-injection`.
pub async fn debug(client: &Client, args: &[(&str, &str)]) -> Result<rmpv::Value> {
    let args = rmpv::Value::Map(
        args.iter()
            .map(|(k, v)| (rmpv::Value::from(*k), rmpv::Value::from(*v)))
            .collect(),
    );
    Ok(client.request_raw("debug", args).await?)
}

/// A steady stream of acknowledged messages on one label of one room, from its own client
/// connection: the witness that what a fault did not involve keeps working throughout. The
/// stream stops at its first failure, which [`Steady::advance`] and [`Steady::finish`] report.
pub struct Steady {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Why the stream stopped, once it has (read by `advance` without consuming the task).
    why: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<Result<usize>>,
}

impl Steady {
    /// Starts sending `tick N` every 20 ms to every connected peer of `room` on `label`, and
    /// waits for the first few to be acknowledged.
    pub async fn start(d: &DaemonProc, room: &str, label: &str) -> Result<Self> {
        Self::start_to(d, room, label, None).await
    }

    /// [`Steady::start`] to one peer only (`to`), or to every connected peer (`None`).
    pub async fn start_to(
        d: &DaemonProc,
        room: &str,
        label: &str,
        to: Option<&str>,
    ) -> Result<Self> {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        let to = to.map(str::to_string);
        let client = d.client().await?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let acked = std::sync::Arc::new(AtomicUsize::new(0));
        let why = std::sync::Arc::new(std::sync::Mutex::new(None));
        let reason = why.clone();
        let (room, label, flag, count) = (
            room.to_string(),
            label.to_string(),
            stop.clone(),
            acked.clone(),
        );
        let task = tokio::spawn(async move {
            let r = Self::run(client, room, label, to, flag, count).await;
            if let (Err(e), Ok(mut w)) = (&r, reason.lock()) {
                *w = Some(format!("{e:#}"));
            }
            r
        });
        let s = Self {
            stop,
            acked,
            why,
            task,
        };
        s.advance(3).await?;
        Ok(s)
    }

    /// The stream itself: one acknowledged send every 20 ms until `flag` is set.
    async fn run(
        client: Client,
        room: String,
        label: String,
        to: Option<String>,
        flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
        count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> Result<usize> {
        use std::sync::atomic::Ordering;
        let mut n = 0usize;
        while !flag.load(Ordering::Relaxed) {
            let text = format!("tick {n}");
            let r = client
                .send_text(
                    &room,
                    &label,
                    &text,
                    peerix_client::SendOptions {
                        to: to.clone(),
                        info: None,
                    },
                )
                .await
                .with_context(|| format!("steady send {n} on {room}/{label}"))?;
            let peers = r.peers.unwrap_or_default();
            if peers.is_empty() || !peers.iter().all(|p| p.ok) {
                bail!("steady send {n} on {room}/{label} was not delivered: {peers:?}");
            }
            n += 1;
            count.store(n, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(n)
    }

    /// Waits until `n` more messages were acknowledged (at most 20 s); fails if the stream failed.
    pub async fn advance(&self, n: usize) -> Result<()> {
        use std::sync::atomic::Ordering;
        let target = self.acked.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.acked.load(Ordering::Relaxed) < target {
            if self.task.is_finished() {
                let why = self.why.lock().ok().and_then(|w| w.clone());
                bail!(
                    "the steady stream stopped early: {}",
                    why.unwrap_or_else(|| "no reason recorded".into())
                );
            }
            if Instant::now() > deadline {
                bail!("the steady stream stalled");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Stops the stream; the number of messages acknowledged, or the first failure.
    pub async fn finish(self) -> Result<usize> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await?
    }
}
