//! The browser peer of the interop tests: headless Debian Chromium (`/usr/bin/chromium`) running
//! the REAL Peerix 0.7.0 library (`../shared/peerix-0.7.0/peerix.esm.js`, served as is by
//! `tests/browser/run-interop.mjs`) over the real NATS client (`@nats-io/nats-core`) and a real
//! `nats-server` websocket port.
//!
//! The runner is command-driven: [`Browser::call`] writes `{"id", "cmd", ...}` on its stdin and
//! waits for the `{"reply": id, "ok", ...}` line; every Peerix event of the page arrives as an
//! `{"ev": name, "peer", "label", ...}` line and is kept in [`Browser::seen`]. The commands
//! (`join`, `leave`, `open`, `close`, `send`, `share`, `unshare`, `state`, `stats`, `errors`,
//! `waitConnected`, `waitChannel`, `receiveMode`) are documented in `tests/browser/page/app.js`.
//!
//! Prerequisites (installed by `scripts/test-all.sh`): `chromium` (apt), `node`, `npm install` in
//! `tests/browser`, and the Peerix build in `shared/`. Tests FAIL, not skip, when one is missing.

use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use peerix_client::Client;
use peerix_ipc_proto::{Event, JoinArgs};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::{is, DaemonProc, Member, NatsServer, TestEnv};

/// The default timeout of a browser or daemon step.
pub const T: Duration = Duration::from_secs(30);

/// `tests/browser`.
pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Debian's Chromium, or `$CHROMIUM_PATH`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// The real Peerix build: `$PEERIX_LIB_DIR`, else `shared/peerix-0.7.0` next to the repository.
pub fn peerix_dir() -> PathBuf {
    std::env::var_os("PEERIX_LIB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("..")
                .join("shared")
                .join("peerix-0.7.0")
        })
}

fn in_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Fails (never skips) with an actionable message when the browser toolchain is missing.
pub fn check_prerequisites() -> Result<()> {
    let hint = "install with scripts/test-all.sh, or: apt-get install -y chromium nodejs npm && \
                (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install)";
    if !in_path("node") {
        bail!("node is not installed; {hint}");
    }
    if !chromium_path().exists() {
        bail!(
            "chromium not found at {} (set CHROMIUM_PATH); {hint}",
            chromium_path().display()
        );
    }
    let nm = browser_dir().join("node_modules");
    for dep in ["playwright-core", "esbuild", "@nats-io/nats-core"] {
        if !nm.join(dep).join("package.json").exists() {
            bail!("{} is missing ({dep}); {hint}", nm.display());
        }
    }
    let lib = peerix_dir().join("peerix.esm.js");
    if !lib.exists() {
        bail!(
            "the real Peerix library is missing: {} (shared/peerix-0.7.0 next to the repository, \
             or set PEERIX_LIB_DIR)",
            lib.display()
        );
    }
    Ok(())
}

/// How to start Chromium.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrowserOpts {
    /// Turn Chromium's mDNS host-candidate hiding off (real IPs in candidates).
    pub no_mdns: bool,
    /// Fake camera for `getUserMedia` (`--use-fake-device-for-media-stream` and
    /// `--use-fake-ui-for-media-stream`; the latter also turns mDNS hiding off).
    pub media: bool,
}

/// The node runner and its Chromium as a child process; killed on drop.
pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Every line the runner printed so far (events and replies).
    pub seen: Vec<Value>,
    next_id: u64,
    stderr: PathBuf,
    /// The runner's `ready` line (browser version, Peerix path and hash, mDNS hiding).
    pub ready: Value,
    /// Our Peerix id in the room, once joined.
    pub id: Option<String>,
}

impl Browser {
    /// Starts the runner and waits until the page has loaded Peerix.
    pub async fn start(env: &TestEnv, name: &str, opts: BrowserOpts) -> Result<Browser> {
        Self::start_in(env, name, opts, None).await
    }

    /// [`Browser::start`] with the runner, its page server and Chromium inside network
    /// namespace `netns` (`ip netns exec`; the netlab's homes), so the page is reachable from
    /// the browser on the namespace's own loopback.
    pub async fn start_in(
        env: &TestEnv,
        name: &str,
        opts: BrowserOpts,
        netns: Option<&str>,
    ) -> Result<Browser> {
        check_prerequisites()?;
        let stderr = env.dir.path().join(format!("{name}.browser.log"));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "node"]);
                c
            }
            None => Command::new("node"),
        };
        cmd.current_dir(browser_dir())
            .arg("run-interop.mjs")
            .arg("--chromium")
            .arg(chromium_path())
            .arg("--peerix")
            .arg(peerix_dir());
        if opts.no_mdns {
            cmd.arg("--no-mdns");
        }
        if opts.media {
            cmd.arg("--media");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .context("starting node run-interop.mjs")?;
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "raw": line }));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut b = Browser {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            next_id: 0,
            stderr,
            ready: Value::Null,
            id: None,
        };
        b.ready = b
            .wait_for("the page to load Peerix", Duration::from_secs(60), |v| {
                v["ev"] == "ready"
            })
            .await?;
        Ok(b)
    }

    /// The index of the next line (for [`Browser::wait_from`]).
    pub fn mark(&self) -> usize {
        self.seen.len()
    }

    /// Writes one command; returns its id (see [`Browser::reply`]).
    pub fn command(&mut self, cmd: &str, args: Value) -> Result<u64> {
        self.next_id += 1;
        let id = self.next_id;
        let mut line = match args {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            other => bail!("command arguments must be an object: {other}"),
        };
        line.insert("id".into(), json!(id));
        line.insert("cmd".into(), json!(cmd));
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("the runner's stdin is closed"))?;
        writeln!(stdin, "{}", Value::Object(line))
            .and_then(|_| stdin.flush())
            .with_context(|| format!("writing command {cmd}\n{}", self.diagnostics()))?;
        Ok(id)
    }

    /// Waits for the reply to command `id`; an `ok: false` reply is an error.
    pub async fn reply(&mut self, id: u64, timeout: Duration) -> Result<Value> {
        let v = self
            .wait_for(&format!("the reply to command {id}"), timeout, |v| {
                v["reply"] == id
            })
            .await?;
        if v["ok"] != true {
            bail!(
                "browser command {id} failed: {}\n{}",
                v["error"],
                self.diagnostics()
            );
        }
        Ok(v)
    }

    /// [`Browser::command`] then [`Browser::reply`].
    pub async fn call(&mut self, cmd: &str, args: Value, timeout: Duration) -> Result<Value> {
        let id = self.command(cmd, args)?;
        self.reply(id, timeout)
            .await
            .with_context(|| format!("browser command {cmd}"))
    }

    /// Waits for a line matching `pred`, among all lines seen so far and new ones.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        self.wait_from(0, what, timeout, pred).await
    }

    /// Waits for a line matching `pred` at index `from` or later.
    pub async fn wait_from(
        &mut self,
        from: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        if let Some(v) = self.seen.iter().skip(from).find(|v| pred(v)) {
            return Ok(v.clone());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(v)) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return Ok(v);
                    }
                    if v["ev"] == "setup-error" {
                        bail!(
                            "browser setup failed: {}\n{}",
                            v["error"],
                            self.diagnostics()
                        );
                    }
                }
                Ok(None) => bail!(
                    "browser runner exited while waiting for {what}\n{}",
                    self.diagnostics()
                ),
                Err(_) => bail!(
                    "timed out after {timeout:?} waiting for browser {what}\n{}",
                    self.diagnostics()
                ),
            }
        }
    }

    /// Takes every line printed so far into [`Browser::seen`] without waiting.
    pub fn poll(&mut self) {
        while let Ok(v) = self.lines.try_recv() {
            self.seen.push(v);
        }
    }

    /// `join` with the defaults (Peerix's room options, all on). `polite_against`: `(other id,
    /// "polite" | "impolite")` makes the page pick an id with that role against `other id`.
    /// Returns the page's Peerix id.
    pub async fn join(
        &mut self,
        ws: &str,
        room: &str,
        polite_against: Option<(&str, &str)>,
        extra: Value,
    ) -> Result<String> {
        let mut args = json!({ "ws": ws, "room": room });
        if let Some((id, role)) = polite_against {
            args["politeAgainst"] = json!({ "id": id, "role": role });
        }
        if let Value::Object(m) = extra {
            for (k, v) in m {
                args[k] = v;
            }
        }
        let r = self.call("join", args, T).await?;
        let id = r["id"]
            .as_str()
            .ok_or_else(|| anyhow!("join reply without id: {r}"))?
            .to_string();
        if let Some((other, role)) = polite_against {
            assert_eq!(
                id.as_str() > other,
                role == "polite",
                "role selection failed: {id} vs {other}"
            );
        }
        self.id = Some(id.clone());
        Ok(id)
    }

    /// Peerix `error` events and `channel:error` events the page saw so far.
    pub fn errors(&mut self) -> Vec<Value> {
        self.poll();
        self.seen
            .iter()
            .filter(|v| (v["ev"] == "error" || v["ev"] == "channel:error") && v["teardown"] != true)
            .cloned()
            .collect()
    }

    /// `channel:error` events that came after the page's connection closed (its own leave):
    /// not counted by [`Browser::errors`], reported by the tests.
    pub fn teardown_errors(&mut self) -> Vec<Value> {
        self.poll();
        self.seen
            .iter()
            .filter(|v| v["teardown"] == true)
            .cloned()
            .collect()
    }

    /// Fails when the page saw any Peerix error event.
    pub fn assert_no_errors(&mut self) -> Result<()> {
        let errs = self.errors();
        if !errs.is_empty() {
            bail!(
                "the page reported Peerix error events: {errs:#?}\n{}",
                self.diagnostics()
            );
        }
        Ok(())
    }

    /// Leaves the room, closes Chromium, and waits for a clean exit.
    pub async fn quit(&mut self) -> Result<()> {
        if self.stdin.is_some() {
            let id = self.command("quit", Value::Null)?;
            let _ = self.reply(id, Duration::from_secs(20)).await;
        }
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait()? {
                if !st.success() {
                    bail!("browser runner exited with {st}\n{}", self.diagnostics());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("browser runner did not exit\n{}", self.diagnostics());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of the runner's stdout and stderr (page console), for failure messages.
    pub fn diagnostics(&self) -> String {
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail: Vec<&str> = err.lines().collect();
        let events: Vec<String> = self.seen.iter().map(|v| v.to_string()).collect();
        format!(
            "--- browser stdout ({} lines, last 50) ---\n{}\n--- browser stderr (tail) ---\n{}",
            events.len(),
            events[events.len().saturating_sub(50)..].join("\n"),
            tail[tail.len().saturating_sub(20)..].join("\n")
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A second client of the daemon that collects its `error` events (Member::wait_for skips them).
pub struct ErrorWatch {
    _client: Client,
    events: mpsc::Receiver<Event>,
    seen: Vec<String>,
}

impl ErrorWatch {
    /// Subscribes to the daemon's `error` events.
    pub async fn new(d: &DaemonProc) -> Result<ErrorWatch> {
        let client = d.client().await?;
        let events = client.subscribe(&["error"], None).await?;
        Ok(ErrorWatch {
            _client: client,
            events,
            seen: Vec::new(),
        })
    }

    /// Every error event so far.
    pub fn take(&mut self) -> Vec<String> {
        while let Ok(ev) = self.events.try_recv() {
            self.seen.push(format!("{} {:?}", ev.name, ev.data));
        }
        self.seen.clone()
    }

    /// Forgets the error events so far that `expected` accepts (a test that provokes one on
    /// purpose); returns how many.
    pub fn forget(&mut self, expected: impl Fn(&str) -> bool) -> usize {
        self.take();
        let before = self.seen.len();
        self.seen.retain(|e| !expected(e));
        before - self.seen.len()
    }

    /// Fails when the daemon reported any `error` event.
    pub fn assert_none(&mut self, d: &DaemonProc) -> Result<()> {
        let errs = self.take();
        if !errs.is_empty() {
            bail!(
                "daemon error events: {errs:#?}\ndaemon log:\n{}",
                d.log_tail()
            );
        }
        Ok(())
    }
}

/// `ws://127.0.0.1:PORT` of the server's websocket listener.
pub fn ws_url(nats: &NatsServer) -> String {
    format!("ws://127.0.0.1:{}", nats.ws_port)
}

/// A daemon on the NATS driver of `nats`; `extra` are more flags.
pub async fn nats_daemon(
    env: &TestEnv,
    nats: &NatsServer,
    name: &str,
    extra: &[&str],
) -> Result<DaemonProc> {
    let mut args = vec![
        "--nats".to_string(),
        nats.url(),
        "--driver".into(),
        "nats".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.daemon(name, &args).await
}

/// A daemon whose WebRTC stack does not resolve `.local` candidates (only the peer-reflexive
/// path is left against a browser that hides its host IPs behind mDNS).
pub async fn nats_daemon_without_mdns(
    env: &TestEnv,
    nats: &NatsServer,
    name: &str,
) -> Result<DaemonProc> {
    let conf = env.dir.path().join(format!("{name}-no-mdns.toml"));
    std::fs::write(&conf, "[webrtc]\nmdns = false\n")?;
    let conf = conf.display().to_string();
    nats_daemon(env, nats, name, &["--config", &conf]).await
}

/// Joins `room` on the NATS driver.
pub async fn join_nats(d: &DaemonProc, room: &str) -> Result<Member> {
    Member::join(d, room, |a: &mut JoinArgs| a.driver = Some("nats".into())).await
}

/// The daemon's Peerix id in `room` (derived from its key and the room, so stable for the
/// daemon's lifetime): joins and leaves again.
pub async fn daemon_id_in(d: &DaemonProc, room: &str) -> Result<String> {
    let m = join_nats(d, room).await?;
    let id = m.id.clone();
    m.leave().await?;
    Ok(id)
}

/// A fresh room name.
pub fn room_name(tag: &str) -> String {
    format!("interop-{tag}-{}", rand::random::<u32>())
}

/// The share of random Peerix ids that are greater than `id` (polite against it), estimated
/// from fresh identities.
pub fn polite_share(id: &str) -> f64 {
    const N: usize = 300;
    let greater = (0..N)
        .filter(|_| peerix_wire::identity::Identity::generate().id() > id)
        .count();
    greater as f64 / N as f64
}

/// A fresh room in which the daemon's id lies in the middle of the id range, so that the
/// browser finds an id of either role in a few joins (the id depends on the room name; an
/// extreme one can make one role nearly impossible). Returns the room and the daemon's id in it.
pub async fn balanced_room(d: &DaemonProc, tag: &str) -> Result<(String, String)> {
    for _ in 0..50 {
        let room = room_name(tag);
        let id = daemon_id_in(d, &room).await?;
        let share = polite_share(&id);
        if (0.2..=0.8).contains(&share) {
            return Ok((room, id));
        }
    }
    bail!("no room with a balanced daemon id in 50 tries")
}

/// Waits for the daemon's `connection:connected` with `peer`.
pub async fn daemon_connected(m: &mut Member, d: &DaemonProc, peer: &str) -> Result<()> {
    m.wait_for("connection:connected to the browser", T, |e| {
        is(e, "connection:connected", peer)
    })
    .await
    .map(drop)
    .with_context(|| format!("daemon log:\n{}", d.log_tail()))
}

/// Who joins the room first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The daemon joins, then the browser.
    DaemonFirst,
    /// The browser joins, then the daemon.
    BrowserFirst,
}

/// One daemon and one browser in one room over one nats-server, connected.
///
/// Fields drop in order: the browser and daemon die before the scratch directory goes.
pub struct Session {
    /// The browser.
    pub b: Browser,
    /// The daemon's member client (subscribed to every event of the room).
    pub m: Member,
    /// The daemon's error events.
    pub errors: ErrorWatch,
    /// The daemon.
    pub d: DaemonProc,
    /// The NATS server.
    pub nats: NatsServer,
    /// Room name.
    pub room: String,
    /// The browser's Peerix id.
    pub peer: String,
    /// When setup started.
    pub started: Instant,
    /// Scratch directory (logs).
    pub env: TestEnv,
}

/// How to set up a [`Session`].
#[derive(Debug, Clone, Copy)]
pub struct SessionOpts {
    /// Join order.
    pub order: Order,
    /// The browser's role: `Some("polite" | "impolite")`, or whatever its random id gives.
    pub role: Option<&'static str>,
    /// Chromium flags.
    pub browser: BrowserOpts,
    /// The daemon resolves `.local` candidates (its default).
    pub daemon_mdns: bool,
}

impl Default for SessionOpts {
    fn default() -> Self {
        SessionOpts {
            order: Order::DaemonFirst,
            role: None,
            browser: BrowserOpts::default(),
            daemon_mdns: true,
        }
    }
}

impl Session {
    /// Starts everything and waits until both sides report the connection.
    pub async fn connect(tag: &str, o: SessionOpts) -> Result<Session> {
        let started = Instant::now();
        check_prerequisites()?;
        let env = TestEnv::new()?;
        let nats = NatsServer::start(&[])?;
        let ws = ws_url(&nats);
        // Start Chromium while the daemon starts.
        let b = Browser::start(&env, "b", o.browser);
        let d = async {
            if o.daemon_mdns {
                nats_daemon(&env, &nats, "d", &[]).await
            } else {
                nats_daemon_without_mdns(&env, &nats, "d").await
            }
        };
        let (b, d) = tokio::join!(b, d);
        let (mut b, d) = (b?, d?);
        let errors = ErrorWatch::new(&d).await?;
        let room = match o.role {
            Some(_) => balanced_room(&d, tag).await?.0,
            None => room_name(tag),
        };
        let (m, peer) = match o.order {
            Order::DaemonFirst => {
                let m = join_nats(&d, &room).await?;
                let against = o.role.map(|r| (m.id.as_str(), r));
                let peer = b.join(&ws, &room, against, Value::Null).await?;
                (m, peer)
            }
            Order::BrowserFirst => {
                let daemon_id = daemon_id_in(&d, &room).await?;
                let against = o.role.map(|r| (daemon_id.as_str(), r));
                let peer = b.join(&ws, &room, against, Value::Null).await?;
                // Let the browser's announce pass: the daemon must find it through its own.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let m = join_nats(&d, &room).await?;
                assert_eq!(m.id, daemon_id, "the daemon's id in a room must be stable");
                (m, peer)
            }
        };
        let mut s = Session {
            b,
            m,
            errors,
            d,
            nats,
            room,
            peer,
            started,
            env,
        };
        s.wait_connected().await?;
        Ok(s)
    }

    /// Waits for `connection:connected` on both sides.
    pub async fn wait_connected(&mut self) -> Result<()> {
        let peer = self.peer.clone();
        daemon_connected(&mut self.m, &self.d, &peer)
            .await
            .with_context(|| self.b.diagnostics())?;
        let daemon = self.m.id.clone();
        let r = self
            .b
            .call("waitConnected", json!({ "peer": daemon }), T)
            .await
            .with_context(|| format!("daemon log:\n{}", self.d.log_tail()))?;
        eprintln!(
            "[{}] connected after {:.1} s (browser polite: {})",
            self.room,
            self.started.elapsed().as_secs_f64(),
            r["polite"]
        );
        Ok(())
    }

    /// The browser leaves and joins again with a new id (the daemon must see the old connection
    /// closed), in `order` (for `BrowserFirst` the daemon leaves too and joins after the browser)
    /// and with `role`; then waits for the new connection on both sides.
    pub async fn rejoin(&mut self, order: Order, role: Option<&str>) -> Result<()> {
        self.browser_leaves().await?;
        let ws = ws_url(&self.nats);
        let daemon_id = self.m.id.clone();
        let against = role.map(|r| (daemon_id.as_str(), r));
        self.peer = match order {
            Order::DaemonFirst => self.b.join(&ws, &self.room, against, Value::Null).await?,
            Order::BrowserFirst => {
                self.m.leave().await?;
                let peer = self.b.join(&ws, &self.room, against, Value::Null).await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut args = JoinArgs::new(self.room.clone());
                args.driver = Some("nats".into());
                let res = self.m.client.join(args).await?;
                assert_eq!(
                    res.id, daemon_id,
                    "the daemon's id in a room must be stable"
                );
                peer
            }
        };
        self.wait_connected().await
    }

    /// The daemon's log tail and the browser's diagnostics.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- daemon log (tail) ---\n{}\n{}",
            self.d.log_tail(),
            self.b.diagnostics()
        )
    }

    /// Opens `label` on the daemon side and waits until it is open on both sides.
    pub async fn open_from_daemon(&mut self, label: &str) -> Result<()> {
        self.m.open(label).await?;
        self.wait_channel(label).await
    }

    /// Waits until `label` is open on both sides.
    pub async fn wait_channel(&mut self, label: &str) -> Result<()> {
        let peer = self.peer.clone();
        let daemon = self.m.id.clone();
        self.m
            .wait_for(&format!("channel:open {label} at the daemon"), T, |e| {
                is(e, "channel:open", &peer) && crate::field(e, "label") == Some(label)
            })
            .await
            .with_context(|| self.diagnostics())?;
        self.b
            .call("waitChannel", json!({ "label": label, "peer": daemon }), T)
            .await
            .with_context(|| format!("daemon log:\n{}", self.d.log_tail()))?;
        Ok(())
    }

    /// The browser leaves; the daemon must notice (`connection:closed`, §5.8).
    pub async fn browser_leaves(&mut self) -> Result<()> {
        self.b.call("leave", Value::Null, T).await?;
        let peer = self.peer.clone();
        self.m
            .wait_for(
                "connection:closed after the browser left",
                Duration::from_secs(20),
                |e| is(e, "connection:closed", &peer),
            )
            .await
            .with_context(|| self.diagnostics())
            .map(drop)
    }

    /// No error events on either side, then the browser leaves (the daemon must see it) and quits.
    pub async fn finish(mut self) -> Result<()> {
        self.errors.assert_none(&self.d)?;
        self.b.assert_no_errors()?;
        self.browser_leaves().await?;
        self.b.quit().await?;
        self.errors.assert_none(&self.d)?;
        // Steady-state logs are quiet: a healthy connection with a browser, its channels, its
        // transfers and its end log nothing above INFO at the daemon's default level.
        self.d.assert_quiet_log()?;
        eprintln!(
            "[{}] done in {:.1} s",
            self.room,
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
