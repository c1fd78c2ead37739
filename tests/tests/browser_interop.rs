//! Interop with a real browser: headless Chromium (Debian's `/usr/bin/chromium`) runs
//! `tests/browser/page/peerix-lite.js`, a minimal Peerix 0.7 wire implementation on Chromium's own
//! RTCPeerConnection and WebCrypto, validated against the real Peerix captures by
//! `tests/browser/test/codec.test.mjs`. It signals through a real nats-server over websocket;
//! the daemon uses the same server over the client port. Every Peerix default is on (namespace
//! hashing, compression, encryption) and Chromium keeps its default mDNS host-candidate hiding
//! except in `chat_without_mdns_hiding`.
//!
//! Prerequisites (installed by `scripts/test-all.sh`): `chromium` (apt), `node`, and
//! `npm install` in `tests/browser`. These tests FAIL, not skip, when one is missing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use peerix_system_tests::peerix_client::{MessageAssembler, MessageData, SendOptions};
use peerix_system_tests::peerix_ipc_proto::JoinArgs;
use peerix_system_tests::{field, is, sha256_hex, DaemonProc, Member, NatsServer, TestEnv};
use serde_json::Value;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(30);

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn in_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Fails (never skips) with an actionable message when the browser toolchain is missing.
fn check_prerequisites() -> Result<()> {
    let hint = "install with scripts/test-all.sh, or: apt-get install -y chromium nodejs npm && (cd tests/browser && npm install)";
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
    for dep in ["playwright-core", "nats.ws"] {
        if !nm.join(dep).join("package.json").exists() {
            bail!("{} is missing ({dep}); {hint}", nm.display());
        }
    }
    Ok(())
}

/// Options of one runner invocation.
struct BrowserOpts<'a> {
    ws: String,
    room: &'a str,
    steps: &'a str,
    no_mdns: bool,
    /// `Some(("polite" | "impolite", other_id))`: the page picks an id with that role.
    role: Option<(&'a str, &'a str)>,
}

/// The node runner (and its Chromium) as a child process; killed on drop.
struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
    stderr: PathBuf,
}

impl Browser {
    fn spawn(env: &TestEnv, name: &str, o: BrowserOpts<'_>) -> Result<Browser> {
        check_prerequisites()?;
        let stderr = env.dir.path().join(format!("{name}.browser.log"));
        let mut cmd = Command::new("node");
        cmd.current_dir(browser_dir())
            .arg("run-interop.mjs")
            .args([
                "--ws",
                &o.ws,
                "--room",
                o.room,
                "--steps",
                o.steps,
                "--wait-stdin",
                "--timeout-ms",
                "30000",
            ])
            .arg("--chromium")
            .arg(chromium_path());
        if o.no_mdns {
            cmd.arg("--no-mdns");
        }
        if let Some((role, against)) = o.role {
            cmd.args(["--role", role, "--against", against]);
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
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(Browser {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            stderr,
        })
    }

    /// Waits for a stdout line matching `pred`; a `result: error` line fails immediately.
    async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
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
                    if v["result"] == "error" {
                        bail!(
                            "browser failed while waiting for {what}: {v}\n{}",
                            self.diagnostics()
                        );
                    }
                }
                Ok(None) => bail!(
                    "browser exited while waiting for {what}\n{}",
                    self.diagnostics()
                ),
                Err(_) => bail!(
                    "timed out after {timeout:?} waiting for browser {what}\n{}",
                    self.diagnostics()
                ),
            }
        }
    }

    async fn joined(&mut self) -> Result<String> {
        let v = self.wait_for("join", T, |v| v["ev"] == "joined").await?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("joined line without id: {v}"))
    }

    async fn result(&mut self) -> Result<Value> {
        let v = self
            .wait_for("the scenario result", Duration::from_secs(60), |v| {
                v.get("result").is_some()
            })
            .await?;
        if v["result"] != "ok" {
            bail!("browser scenario failed: {v}\n{}", self.diagnostics());
        }
        assert_eq!(
            v["errors"],
            serde_json::json!([]),
            "the page reported Peerix error events: {v}"
        );
        Ok(v)
    }

    /// Closes stdin (the runner then leaves the room) and waits for a clean exit.
    async fn finish(&mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait()? {
                if !st.success() {
                    bail!("browser runner exited with {st}\n{}", self.diagnostics());
                }
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!("browser runner did not exit\n{}", self.diagnostics());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn diagnostics(&self) -> String {
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail: Vec<&str> = err.lines().collect();
        let events: Vec<String> = self.seen.iter().map(|v| v.to_string()).collect();
        format!(
            "--- browser stdout ({} lines) ---\n{}\n--- browser stderr (tail) ---\n{}",
            events.len(),
            events[events.len().saturating_sub(40)..].join("\n"),
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
struct ErrorWatch {
    _client: peerix_system_tests::peerix_client::Client,
    events: mpsc::Receiver<peerix_system_tests::peerix_ipc_proto::Event>,
}

impl ErrorWatch {
    async fn new(d: &DaemonProc) -> Result<ErrorWatch> {
        let client = d.client().await?;
        let events = client.subscribe(&["error"], None).await?;
        Ok(ErrorWatch {
            _client: client,
            events,
        })
    }

    fn assert_none(&mut self, d: &DaemonProc) {
        let mut errs = Vec::new();
        while let Ok(ev) = self.events.try_recv() {
            errs.push(format!("{} {:?}", ev.name, ev.data));
        }
        assert!(
            errs.is_empty(),
            "daemon error events: {errs:#?}\ndaemon log:\n{}",
            d.log_tail()
        );
    }
}

fn ws_url(nats: &NatsServer) -> String {
    format!("ws://127.0.0.1:{}", nats.ws_port)
}

async fn nats_daemon(env: &TestEnv, nats: &NatsServer, name: &str) -> Result<DaemonProc> {
    env.daemon(name, &["--nats", &nats.url(), "--driver", "nats"])
        .await
}

async fn join_nats(d: &DaemonProc, room: &str) -> Result<Member> {
    Member::join(d, room, |a: &mut JoinArgs| a.driver = Some("nats".into())).await
}

async fn wait_connected(m: &mut Member, d: &DaemonProc, peer: &str) -> Result<()> {
    m.wait_for("connection:connected to the browser", T, |e| {
        is(e, "connection:connected", peer)
    })
    .await
    .map(drop)
    .with_context(|| format!("daemon log:\n{}", d.log_tail()))
}

fn room_name(tag: &str) -> String {
    format!("interop-{tag}-{}", rand::random::<u32>())
}

/// Text both ways on "chat" with Peerix framing and acks; returns the browser's result.
async fn chat_both_ways(
    m: &mut Member,
    d: &DaemonProc,
    b: &mut Browser,
    peer: &str,
) -> Result<Value> {
    m.open("chat").await?;
    m.wait_for("channel:open chat", T, |e| {
        is(e, "channel:open", peer) && field(e, "label") == Some("chat")
    })
    .await
    .with_context(|| format!("daemon log:\n{}\n{}", d.log_tail(), b.diagnostics()))?;
    let t = Instant::now();
    let sent = m
        .client
        .send_text(&m.room, "chat", "hello from peerixd", SendOptions::to(peer))
        .await?;
    let ack_ms = t.elapsed().as_millis();
    let peers = sent
        .peers
        .ok_or_else(|| anyhow!("send reply without delivery reports"))?;
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].id, peer);
    if !peers[0].ok {
        // Collect what the page saw meanwhile (its result line comes when its own send failed).
        let _ = b
            .wait_for("more browser output", Duration::from_secs(12), |v| {
                v.get("result").is_some()
            })
            .await;
        bail!(
            "the browser did not acknowledge: {peers:?}\n{}\ndaemon log:\n{}",
            b.diagnostics(),
            d.log_tail()
        );
    }
    let msg = m
        .wait_for("the browser's text", T, |e| {
            is(e, "channel:message", peer) && field(e, "label") == Some("chat")
        })
        .await?;
    assert_eq!(field(&msg, "type"), Some("text"));
    assert_eq!(field(&msg, "data"), Some("hello from chromium"));
    let r = b.result().await?;
    assert_eq!(r["text_received"], "hello from peerixd", "{r}");
    assert_eq!(r["text_from"], m.id.as_str(), "{r}");
    assert!(
        r["text_ack_ms"].is_number(),
        "browser send did not resolve on the daemon's ack: {r}"
    );
    let early = b
        .seen
        .iter()
        .filter(|v| v["ev"] == "harness:deferred-ack")
        .count();
    eprintln!(
        "daemon send acked by the browser in {ack_ms} ms; browser send acked in {} ms; \
         acks deferred because Chromium delivered a message before `open`: {early}",
        r["text_ack_ms"]
    );
    Ok(r)
}

fn report(name: &str, r: &Value, started: Instant) {
    eprintln!(
        "[{name}] connect {} ms (page), channel open {} ms, total {:.1} s; selected pair {}; remote candidates {}",
        r["connect_ms"],
        r["channel_open_ms"],
        started.elapsed().as_secs_f64(),
        r["selected_pair"],
        r["remote_candidates"]
    );
}

/// After the browser leaves, the daemon must notice (control channel closes, §5.8).
async fn expect_closed(m: &mut Member, peer: &str) -> Result<()> {
    m.wait_for(
        "connection:closed after the browser left",
        Duration::from_secs(20),
        |e| is(e, "connection:closed", peer),
    )
    .await
    .map(drop)
}

/// (a) + (c): daemon joins first, the browser later; text each way with acks. `role` fixes the
/// browser's politeness (so both channel-creation paths of §6.6 run: the impolite side creates
/// "chat", the polite side asks for it with control event 2).
async fn daemon_first_chat(tag: &str, role: &str, no_mdns: bool, daemon_mdns: bool) -> Result<()> {
    let started = Instant::now();
    check_prerequisites()?;
    let env = TestEnv::new()?;
    let nats = NatsServer::start(&[])?;
    let d = if daemon_mdns {
        nats_daemon(&env, &nats, "d").await?
    } else {
        // The daemon does not resolve .local names: only the peer-reflexive path is left.
        let conf = env.dir.path().join("no-mdns.toml");
        std::fs::write(&conf, "[webrtc]\nmdns = false\n")?;
        let conf = conf.display().to_string();
        env.daemon(
            "d",
            &["--config", &conf, "--nats", &nats.url(), "--driver", "nats"],
        )
        .await?
    };
    let mut errors = ErrorWatch::new(&d).await?;
    let room = room_name(tag);
    let mut m = join_nats(&d, &room).await?;
    let daemon_id = m.id.clone();
    let opts = BrowserOpts {
        ws: ws_url(&nats),
        room: &room,
        steps: "chat",
        no_mdns,
        role: Some((role, &daemon_id)),
    };
    let mut b = Browser::spawn(&env, "b", opts)?;
    let peer = b.joined().await?;
    assert_eq!(
        peer.as_str() > daemon_id.as_str(),
        role == "polite",
        "role selection failed"
    );
    wait_connected(&mut m, &d, &peer).await?;
    b.wait_for("connected", T, |v| {
        v["ev"] == "harness:connected" && v["peer"] == daemon_id.as_str()
    })
    .await?;
    let r = chat_both_ways(&mut m, &d, &mut b, &peer).await?;
    assert_eq!(r["polite"], role == "polite", "{r}");
    assert_eq!(r["mdns_hiding"], !no_mdns);
    let locals = r["local_candidates"].to_string();
    if no_mdns {
        assert!(
            !locals.contains(".local "),
            "mDNS names despite --disable-features: {locals}"
        );
    } else {
        assert!(
            locals.contains(".local "),
            "Chromium did not hide host IPs behind mDNS: {locals}"
        );
    }
    errors.assert_none(&d);
    report(tag, &r, started);
    b.finish().await?;
    expect_closed(&mut m, &peer).await?;
    Ok(())
}

/// (a) + (c) + (e): the browser is impolite (it creates "chat" itself), mDNS hiding on.
#[tokio::test]
async fn daemon_first_then_browser_text_both_ways() -> Result<()> {
    daemon_first_chat("a-impolite", "impolite", false, true).await
}

/// (a) + (c) + (e): the browser is polite (it asks the daemon for "chat" with control event 2).
#[tokio::test]
async fn daemon_first_polite_browser_text_both_ways() -> Result<()> {
    daemon_first_chat("a-polite", "polite", false, true).await
}

/// (e) contrast: Chromium with mDNS host-candidate hiding disabled (real IPs in candidates).
#[tokio::test]
async fn chat_without_mdns_hiding() -> Result<()> {
    daemon_first_chat("e-nomdns", "polite", true, true).await
}

/// (e): mDNS hiding on in Chromium and mDNS resolution off in the daemon: the browser's `.local`
/// candidates are unusable, so the connection must come up through the peer-reflexive candidate
/// learnt from Chromium's connectivity checks.
#[tokio::test]
async fn chat_with_mdns_unresolved_by_daemon() -> Result<()> {
    daemon_first_chat("e-prflx", "impolite", false, false).await
}

/// (b): the browser joins first, the daemon later.
#[tokio::test]
async fn browser_first_then_daemon() -> Result<()> {
    let started = Instant::now();
    check_prerequisites()?;
    let env = TestEnv::new()?;
    let nats = NatsServer::start(&[])?;
    let room = room_name("b");
    let mut b = Browser::spawn(
        &env,
        "b",
        BrowserOpts {
            ws: ws_url(&nats),
            room: &room,
            steps: "chat",
            no_mdns: false,
            role: None,
        },
    )?;
    let peer = b.joined().await?;
    // Give the browser's announce time to be gone: the daemon must find it through its own announce.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = nats_daemon(&env, &nats, "d").await?;
    let mut errors = ErrorWatch::new(&d).await?;
    let mut m = join_nats(&d, &room).await?;
    wait_connected(&mut m, &d, &peer).await?;
    b.wait_for("connected", T, |v| {
        v["ev"] == "harness:connected" && v["peer"] == m.id.as_str()
    })
    .await?;
    let r = chat_both_ways(&mut m, &d, &mut b, &peer).await?;
    errors.assert_none(&d);
    report("browser-first", &r, started);
    b.finish().await?;
    expect_closed(&mut m, &peer).await?;
    Ok(())
}

/// (d): a 5 MiB binary message from the browser, reassembled intact from `channel:message` parts.
#[tokio::test]
async fn browser_sends_5mib_binary() -> Result<()> {
    let started = Instant::now();
    check_prerequisites()?;
    let env = TestEnv::new()?;
    let nats = NatsServer::start(&[])?;
    let d = nats_daemon(&env, &nats, "d").await?;
    let mut errors = ErrorWatch::new(&d).await?;
    let room = room_name("d");
    let mut m = join_nats(&d, &room).await?;
    m.open("chat").await?;
    let mut b = Browser::spawn(
        &env,
        "b",
        BrowserOpts {
            ws: ws_url(&nats),
            room: &room,
            steps: "big",
            no_mdns: false,
            role: None,
        },
    )?;
    let peer = b.joined().await?;
    wait_connected(&mut m, &d, &peer).await?;
    let mut asm = MessageAssembler::new();
    let t = Instant::now();
    let msg = loop {
        let ev = m
            .wait_for("channel:message parts", Duration::from_secs(60), |e| {
                is(e, "channel:message", &peer)
            })
            .await
            .with_context(|| format!("daemon log:\n{}\n{}", d.log_tail(), b.diagnostics()))?;
        if let Some(msg) = asm.push(&ev)? {
            break msg;
        }
    };
    let secs = t.elapsed().as_secs_f64();
    let MessageData::Bytes(bytes) = &msg.data else {
        bail!("expected bytes, got {:?}", msg.kind)
    };
    let r = b.result().await?;
    assert_eq!(bytes.len() as u64, r["big_size"].as_u64().unwrap_or(0));
    assert_eq!(bytes.len(), 5 * 1024 * 1024);
    assert_eq!(
        sha256_hex(bytes),
        r["big_sha256"].as_str().unwrap_or(""),
        "5 MiB message corrupted"
    );
    assert_eq!(msg.label, "chat");
    let info = msg.info.as_ref().map(|v| v.to_string()).unwrap_or_default();
    assert!(info.contains("big.bin"), "info lost: {info}");
    eprintln!(
        "[5mib] {} parts, daemon received in {secs:.2} s; browser send acked in {} ms ({} MiB/s)",
        msg.parts, r["big_ms"], r["big_mib_per_s"]
    );
    errors.assert_none(&d);
    report("5mib", &r, started);
    b.finish().await?;
    Ok(())
}
