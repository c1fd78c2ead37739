//! A network lab built from Linux network namespaces, for the connectivity tests
//! (`tests/tests/netpaths.rs`): two homes behind NAT routers and a public segment with coturn.
//!
//! ```text
//!   home A                         public segment (203.0.113.0/24)                 home B
//!  ┌─────────┐  ┌──────────────┐   ┌───────────────────────────────┐  ┌──────────────┐  ┌─────────┐
//!  │ host a  │──│ router a     │───│ br0  coturn 203.0.113.1        │──│ router b     │──│ host b  │
//!  │10.1.0.2 │  │ NAT → .11    │   │      (STUN/TURN 3478, TLS 5349)│  │ NAT → .12    │  │10.2.0.2 │
//!  └─────────┘  └──────────────┘   └───────────────────────────────┘  └──────────────┘  └─────────┘
//! ```
//!
//! Everything lives in namespaces named after this process and a counter (tests run two at a
//! time); every veth is created inside a lab namespace, so the host's own interfaces are never
//! touched. [`Lab`]'s `Drop` kills whatever still runs in its namespaces (coturn, daemons) and
//! deletes them, also when a test fails.
//!
//! Routers masquerade with nftables. [`Nat::Cone`] is Linux's ordinary masquerade (the mapping
//! keeps the port for every destination; only replies get in), [`Nat::Symmetric`] maps every new
//! destination to a fresh random port (`fully-random`), so a STUN-learnt address is useless to
//! the other peer. The public namespace has a default route to an absent neighbour: coturn
//! closes an allocation when sending to a peer's private candidate fails with "no route", which
//! is not what a server on the internet sees.
//!
//! Daemons run in the hosts' namespaces (`ip netns exec`), signal through the test's shared
//! `--local-dir`, and are reached from the test's root namespace over their Unix sockets (a
//! filesystem socket does not belong to a network namespace).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::{bin, DaemonProc, TestEnv};

/// coturn's address on the public segment.
pub const TURN_IP: &str = "203.0.113.1";
/// coturn's realm.
pub const TURN_REALM: &str = "peerix.test";
/// The test-only static TURN user and password.
pub const TURN_USER: &str = "peerix";
/// Password of [`TURN_USER`].
pub const TURN_PASSWORD: &str = "lab-only-password";
/// The test-only REST secret (coturn `static-auth-secret`).
pub const TURN_SECRET: &str = "lab-only-rest-secret";

/// How a home router maps its hosts' flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Endpoint-independent mapping, address-and-port-dependent filtering (Linux masquerade).
    Cone,
    /// Endpoint-dependent mapping: a new random public port per destination.
    Symmetric,
}

/// How coturn authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnAuth {
    /// Long-term credentials: [`TURN_USER`] / [`TURN_PASSWORD`].
    Static,
    /// TURN REST credentials from [`TURN_SECRET`] (`use-auth-secret`).
    Rest,
}

/// One of the two homes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// 10.1.0.0/24 behind 203.0.113.11.
    A,
    /// 10.2.0.0/24 behind 203.0.113.12.
    B,
}

impl Home {
    fn tag(self) -> &'static str {
        match self {
            Home::A => "a",
            Home::B => "b",
        }
    }

    fn n(self) -> u8 {
        match self {
            Home::A => 1,
            Home::B => 2,
        }
    }

    /// The host's private address.
    pub fn host_ip(self) -> String {
        format!("10.{}.0.2", self.n())
    }

    /// The router's public address.
    pub fn public_ip(self) -> String {
        format!("203.0.113.1{}", self.n())
    }
}

/// Why the lab cannot be built here (not root, a tool missing), for a clear skip message.
pub fn unavailable() -> Option<String> {
    #[cfg(unix)]
    {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next().map(str::to_string))
            });
        if uid.as_deref() != Some("0") {
            return Some("network-namespace lab needs root (ip netns)".into());
        }
    }
    for tool in ["ip", "nft", "turnserver", "openssl"] {
        if which(tool).is_none() {
            return Some(format!(
                "`{tool}` is not installed (apt-get install -y iproute2 nftables coturn openssl; \
                 scripts/test-all.sh does it)"
            ));
        }
    }
    None
}

/// Skips the calling test (returns `true`) with a message when the lab cannot be built.
pub fn skip() -> bool {
    match unavailable() {
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
        None => false,
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

static LABS: AtomicUsize = AtomicUsize::new(0);

/// A built lab; torn down on drop.
pub struct Lab {
    prefix: String,
    /// Deleted on drop (`netns.rs`), after coturn and nats-server are stopped.
    namespaces: Vec<crate::netns::Netns>,
    dir: tempfile::TempDir,
    turn: Option<Child>,
    nats: Option<Child>,
    /// What the routers do.
    pub nat: Nat,
}

/// Runs a command, failing with its stderr.
fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Lab {
    /// Builds the namespaces, links, routes and NAT (coturn is started by [`Lab::start_turn`]).
    pub fn build(nat: Nat) -> Result<Self> {
        let prefix = format!(
            "pxl{}x{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Self {
            prefix,
            namespaces: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix("peerix-netlab-")
                .tempdir()?,
            turn: None,
            nats: None,
            nat,
        };
        lab.build_inner()?;
        Ok(lab)
    }

    fn add_ns(&mut self, suffix: &str) -> Result<String> {
        let ns = crate::netns::Netns::add(&format!("{}{suffix}", self.prefix))?;
        let name = ns.name().to_string();
        self.namespaces.push(ns);
        Ok(name)
    }

    fn build_inner(&mut self) -> Result<()> {
        let public = self.add_ns("pub")?;
        let p = public.as_str();
        run(&["ip", "-n", p, "link", "add", "br0", "type", "bridge"])?;
        run(&[
            "ip",
            "-n",
            p,
            "addr",
            "add",
            &format!("{TURN_IP}/24"),
            "dev",
            "br0",
        ])?;
        run(&["ip", "-n", p, "link", "set", "br0", "up"])?;
        // Traffic to anything off the segment (a peer's private candidate) leaves toward a
        // neighbour that never answers: dropped, as on the internet, instead of "no route".
        run(&[
            "ip",
            "-n",
            p,
            "route",
            "add",
            "default",
            "via",
            "203.0.113.254",
        ])?;
        for home in [Home::A, Home::B] {
            self.build_home(&public, home)?;
        }
        Ok(())
    }

    fn build_home(&mut self, public: &str, home: Home) -> Result<()> {
        let (t, n) = (home.tag(), home.n());
        let router = self.add_ns(&format!("r{t}"))?;
        let host = self.add_ns(&format!("h{t}"))?;
        let (r, h) = (router.as_str(), host.as_str());
        let port = format!("w{t}");
        run(&[
            "ip", "-n", public, "link", "add", &port, "type", "veth", "peer", "name", "wan",
            "netns", r,
        ])?;
        run(&["ip", "-n", public, "link", "set", &port, "master", "br0"])?;
        run(&["ip", "-n", public, "link", "set", &port, "up"])?;
        run(&[
            "ip",
            "-n",
            r,
            "addr",
            "add",
            &format!("{}/24", home.public_ip()),
            "dev",
            "wan",
        ])?;
        run(&["ip", "-n", r, "link", "set", "wan", "up"])?;
        run(&[
            "ip", "-n", r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", h,
        ])?;
        run(&[
            "ip",
            "-n",
            r,
            "addr",
            "add",
            &format!("10.{n}.0.1/24"),
            "dev",
            "lan",
        ])?;
        run(&["ip", "-n", r, "link", "set", "lan", "up"])?;
        // Off-segment destinations (the other home's private addresses) go to the public
        // namespace, which does not forward: silently lost.
        run(&["ip", "-n", r, "route", "add", "default", "via", TURN_IP])?;
        run(&[
            "ip",
            "netns",
            "exec",
            r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        run(&[
            "ip",
            "-n",
            h,
            "addr",
            "add",
            &format!("{}/24", home.host_ip()),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", h, "link", "set", "eth0", "up"])?;
        run(&[
            "ip",
            "-n",
            h,
            "route",
            "add",
            "default",
            "via",
            &format!("10.{n}.0.1"),
        ])?;
        let masquerade = match self.nat {
            Nat::Cone => "masquerade",
            Nat::Symmetric => "masquerade fully-random",
        };
        // `direct` counts UDP from the home to anyone but coturn: peer-to-peer traffic.
        // `inbound` drops unsolicited UDP for the router itself, as a home router's firewall
        // does. Without it the kernel accepts such a datagram (and answers "port
        // unreachable"), and the conntrack entry it leaves makes the NAT map the host's own
        // packet to that peer to another port: hole punching would never work.
        let rules = format!(
            "table ip peerixlab {{\n\
             \x20 counter direct {{ }}\n\
             \x20 chain post {{ type nat hook postrouting priority srcnat; oifname \"wan\" {masquerade}; }}\n\
             \x20 chain inbound {{ type filter hook input priority filter; policy accept;\n\
             \x20   iifname \"wan\" meta l4proto udp drop\n\
             \x20 }}\n\
             \x20 chain guard {{ type filter hook forward priority filter; policy accept;\n\
             \x20   iifname \"lan\" ip daddr != {TURN_IP} meta l4proto udp counter name \"direct\"\n\
             \x20 }}\n\
             }}\n"
        );
        self.nft(r, &rules)
    }

    /// Loads an nftables script in namespace `ns`.
    pub fn nft(&self, ns: &str, script: &str) -> Result<()> {
        let path = self.dir.path().join(format!("{ns}.nft"));
        std::fs::write(&path, script)?;
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "-f",
            &path.to_string_lossy(),
        ])?;
        Ok(())
    }

    /// The namespace of a home's host.
    pub fn host_ns(&self, home: Home) -> String {
        format!("{}h{}", self.prefix, home.tag())
    }

    /// The namespace of a home's router.
    pub fn router_ns(&self, home: Home) -> String {
        format!("{}r{}", self.prefix, home.tag())
    }

    /// Gives `home`'s router the public address `new_ip` instead of its own. Removing the
    /// address makes the kernel drop the conntrack entries masqueraded to it (the router's NAT
    /// state is flushed), and the home's flows get new mappings on the new address: a NAT
    /// rebinding, which the host behind it cannot see.
    pub fn rebind_nat(&self, home: Home, new_ip: &str) -> Result<()> {
        let r = self.router_ns(home);
        let old = format!("{}/24", home.public_ip());
        let new = format!("{new_ip}/24");
        run(&["ip", "-n", &r, "addr", "del", &old, "dev", "wan"])?;
        run(&["ip", "-n", &r, "addr", "add", &new, "dev", "wan"])?;
        run(&[
            "ip", "-n", &r, "route", "replace", "default", "via", TURN_IP,
        ])?;
        Ok(())
    }

    /// The public segment's namespace (coturn's).
    pub fn public_ns(&self) -> String {
        format!("{}pub", self.prefix)
    }

    /// A scratch directory removed with the lab.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Both routers drop UDP from their home to anyone but coturn (direct paths blocked).
    pub fn block_direct_udp(&self) -> Result<()> {
        self.add_fwd_rule(&format!(
            "iifname \"lan\" ip daddr != {TURN_IP} meta l4proto udp drop"
        ))
    }

    /// Both routers drop every UDP datagram from their home (only TCP leaves).
    pub fn block_all_udp(&self) -> Result<()> {
        self.add_fwd_rule("iifname \"lan\" meta l4proto udp drop")
    }

    fn add_fwd_rule(&self, rule: &str) -> Result<()> {
        for home in [Home::A, Home::B] {
            self.nft(
                &self.router_ns(home),
                &format!("add rule ip peerixlab guard {rule}\n"),
            )?;
        }
        Ok(())
    }

    /// UDP packets both homes sent to anyone but coturn (the routers' `direct` counters).
    pub fn direct_udp_packets(&self) -> Result<u64> {
        let mut total = 0;
        for home in [Home::A, Home::B] {
            let out = run(&[
                "ip",
                "netns",
                "exec",
                &self.router_ns(home),
                "nft",
                "list",
                "counter",
                "ip",
                "peerixlab",
                "direct",
            ])?;
            let packets = out
                .split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .with_context(|| format!("no packet count in {out:?}"))?;
            total += packets;
        }
        Ok(total)
    }

    /// Starts coturn on the public segment (UDP/TCP 3478, TLS 5349 with a throwaway
    /// self-signed certificate) and waits until it serves.
    pub fn start_turn(&mut self, auth: TurnAuth) -> Result<()> {
        let d = self.dir.path().to_path_buf();
        let (cert, key) = (d.join("turn-cert.pem"), d.join("turn-key.pem"));
        run(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=turn.peerix.test",
            // TURN over TLS: rustls checks the name in subjectAltName only, and takes this
            // self-signed certificate as a trust anchor (`turn_tls.ca_file`) but refuses a
            // CA certificate as the server's own.
            "-addext",
            &format!("subjectAltName=IP:{TURN_IP},DNS:turn.peerix.test"),
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            &key.to_string_lossy(),
            "-out",
            &cert.to_string_lossy(),
        ])?;
        let log = d.join("turn.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.public_ns(), "turnserver", "-n"])
            .arg(format!("--listening-ip={TURN_IP}"))
            .arg(format!("--relay-ip={TURN_IP}"))
            .args(["--listening-port=3478", "--tls-listening-port=5349"])
            .arg(format!("--realm={TURN_REALM}"))
            .args(["--fingerprint", "--no-cli", "--no-dtls", "--simple-log"])
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--pkey={}", key.display()))
            .arg(format!("--log-file={}", log.display()))
            .arg(format!("--pidfile={}", d.join("turn.pid").display()))
            .arg(format!("--userdb={}", d.join("turndb").display()));
        match auth {
            TurnAuth::Static => cmd
                .arg("--lt-cred-mech")
                .arg(format!("--user={TURN_USER}:{TURN_PASSWORD}")),
            TurnAuth::Rest => cmd
                .arg("--use-auth-secret")
                .arg(format!("--static-auth-secret={TURN_SECRET}")),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("turn.stderr"))?)
            .spawn()
            .context("starting turnserver")?;
        self.turn = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Total General servers") {
                return Ok(());
            }
            if let Some(status) = self.turn.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("turnserver exited with {status}: {}", self.turn_log());
            }
            if Instant::now() > deadline {
                bail!("turnserver did not start within 10 s: {}", self.turn_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The end of coturn's log (for failure messages).
    pub fn turn_log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("turn.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Starts nats-server on the public segment (client port 4222, websocket 8080), for a
    /// browser in one home and a daemon in the other; waits until it serves.
    pub fn start_nats(&mut self) -> Result<()> {
        let d = self.dir.path().to_path_buf();
        let conf = d.join("nats.conf");
        std::fs::write(
            &conf,
            format!("websocket {{\n  listen: \"{TURN_IP}:8080\"\n  no_tls: true\n}}\n"),
        )?;
        let log = d.join("nats.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.public_ns(), "nats-server"])
            .args(["-a", TURN_IP, "-p", "4222", "-c"])
            .arg(&conf)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server (apt-get install -y nats-server)")?;
        self.nats = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Server is ready")
            {
                return Ok(());
            }
            if let Some(status) = self.nats.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("nats-server exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("nats-server did not start within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://203.0.113.1:4222` (after [`Lab::start_nats`]).
    pub fn nats_url(&self) -> String {
        format!("nats://{TURN_IP}:4222")
    }

    /// `ws://203.0.113.1:8080`, the websocket port browsers use.
    pub fn nats_ws_url(&self) -> String {
        format!("ws://{TURN_IP}:8080")
    }

    /// `stun:203.0.113.1:3478`.
    pub fn stun_url(&self) -> String {
        format!("stun:{TURN_IP}:3478")
    }

    /// `turn:203.0.113.1:3478?transport=udp`.
    pub fn turn_url(&self) -> String {
        format!("turn:{TURN_IP}:3478?transport=udp")
    }

    /// `turn:203.0.113.1:3478?transport=tcp`.
    pub fn turn_tcp_url(&self) -> String {
        format!("turn:{TURN_IP}:3478?transport=tcp")
    }

    /// `turns:203.0.113.1:5349?transport=tcp` (TLS; the certificate is [`Lab::turn_cert`]).
    pub fn turns_url(&self) -> String {
        format!("turns:{TURN_IP}:5349?transport=tcp")
    }

    /// coturn's throwaway self-signed certificate (PEM), for `turn_tls.ca_file`.
    pub fn turn_cert(&self) -> std::path::PathBuf {
        self.dir.path().join("turn-cert.pem")
    }

    /// Starts `peerixd` in a home's host namespace, on the test's shared `--local-dir`.
    pub async fn daemon(
        &self,
        env: &TestEnv,
        name: &str,
        home: Home,
        extra: &[&str],
    ) -> Result<DaemonProc> {
        let socket = env.dir.path().join(format!("{name}.sock"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host_ns(home)])
            .arg(bin("peerixd")?)
            .arg("--socket")
            .arg(&socket)
            .arg("--local-dir")
            .arg(env.local_dir())
            .arg("--no-system-config")
            .args(extra)
            .env_remove("PEERIX_SOCKET");
        // NETLAB_LOG=rtc_ice=debug,... to see the stack's view of the lab's paths.
        if let Ok(filter) = std::env::var("NETLAB_LOG") {
            cmd.arg("--log").arg(filter);
        }
        DaemonProc::spawn_command(env, name, cmd, socket).await
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut c in [self.turn.take(), self.nats.take()].into_iter().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Each namespace kills what still runs in it (a daemon whose test failed first).
        while let Some(ns) = self.namespaces.pop() {
            drop(ns);
        }
    }
}
