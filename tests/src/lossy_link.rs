//! A two-namespace link for tests of data over a lossy or changing path: namespaces `A` and `B`
//! joined by one veth pair (`10.177.0.1/24` ↔ `10.177.0.2/24`), loss from nftables
//! (`numgen random mod 100 < N drop` on a side's egress), a link cut (drop everything both
//! ways) and an address change. The kernel here has no `netem`, so nothing else shapes the link.
//!
//! Everything is built by the test and torn down by [`Drop`] (also when the test fails): the
//! namespaces, and with them the veth pair and the rules. Nothing touches the host's
//! interfaces. Daemons run inside the namespaces ([`LossyLink::daemon`]) and signal through the
//! test's shared `--local-dir` (filesystem Unix sockets reach across network namespaces), so
//! clients stay in the root namespace and talk to them over their IPC sockets.
//!
//! Needs root (CAP_NET_ADMIN), `ip` and `nft`; [`LossyLink::new`] returns `None` with a message
//! saying what is missing, and the test skips.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context as _, Result};

use crate::{bin, DaemonProc, TestEnv};

/// One end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first namespace (`10.177.0.1`).
    A,
    /// The second namespace (`10.177.0.2`).
    B,
}

/// The link (see the module docs); removed on drop.
#[derive(Debug)]
pub struct LossyLink {
    ns: [String; 2],
    veth: [String; 2],
    addr: [Ipv4Addr; 2],
}

/// The nftables table of this module in each namespace (loss and cut rules live there).
const TABLE: &str = "peerix_lossy";
/// Netmask of the link's subnet.
const PREFIX: u8 = 24;

impl LossyLink {
    /// Builds the link, or returns `None` (after printing why) where it cannot be built: not
    /// root, or `ip`/`nft` missing. Any other failure is an error.
    pub fn new() -> Result<Option<Self>> {
        if let Some(why) = missing_prerequisite() {
            eprintln!("SKIPPED: the lossy-link tests need {why}");
            return Ok(None);
        }
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        // Interface names are at most 15 bytes: keep the tag short but unique per process and test.
        let tag = format!(
            "{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let link = Self {
            ns: [format!("plxa{tag}"), format!("plxb{tag}")],
            veth: [format!("pla{tag}"), format!("plb{tag}")],
            addr: [Ipv4Addr::new(10, 177, 0, 1), Ipv4Addr::new(10, 177, 0, 2)],
        };
        // From here on, Drop removes whatever was made.
        for ns in &link.ns {
            run(Command::new("ip").args(["netns", "add", ns]))?;
        }
        run(Command::new("ip").args([
            "link",
            "add",
            &link.veth[0],
            "netns",
            &link.ns[0],
            "type",
            "veth",
            "peer",
            "name",
            &link.veth[1],
            "netns",
            &link.ns[1],
        ]))?;
        for side in [Side::A, Side::B] {
            let i = side as usize;
            link.ip(side, &["link", "set", "lo", "up"])?;
            link.ip(
                side,
                &[
                    "addr",
                    "add",
                    &format!("{}/{PREFIX}", link.addr[i]),
                    "dev",
                    &link.veth[i],
                ],
            )?;
            // One datagram per packet on the wire: with UDP GSO the stack hands the kernel
            // batches of up to 64 datagrams as one packet, which a filter would drop (or
            // pass) whole. Real links lose single datagrams; capping GSO at one segment makes
            // the kernel split batches before they cross the veth.
            link.ip(side, &["link", "set", &link.veth[i], "gso_max_segs", "1"])?;
            link.ip(side, &["link", "set", &link.veth[i], "up"])?;
            // Loss and cuts act on arrival (input), so they are silent as on a real path: a
            // drop on output would fail the sender's sendmsg with EPERM instead.
            link.nft(
                side,
                &format!(
                    "table ip {TABLE} {{\n\
                     chain loss {{ type filter hook input priority 0; policy accept; }}\n\
                     chain cut {{ type filter hook input priority 10; policy accept; }}\n\
                     }}\n"
                ),
            )?;
        }
        Ok(Some(link))
    }

    /// The namespace of `side` (for `ip netns exec`).
    pub fn netns(&self, side: Side) -> &str {
        &self.ns[side as usize]
    }

    /// The current address of `side`.
    pub fn addr(&self, side: Side) -> Ipv4Addr {
        self.addr[side as usize]
    }

    /// Loses `percent` % of the UDP datagrams `side` sends, each independently (0 removes
    /// the loss). They are dropped on arrival at the other side.
    pub fn set_loss(&self, side: Side, percent: u32) -> Result<()> {
        let other = match side {
            Side::A => Side::B,
            Side::B => Side::A,
        };
        let mut script = format!("flush chain ip {TABLE} loss\n");
        if percent > 0 {
            script.push_str(&format!(
                "add rule ip {TABLE} loss meta l4proto udp numgen random mod 100 < {percent} drop\n"
            ));
        }
        self.nft(other, &script)
    }

    /// Cuts the link both ways (every packet dropped on both sides' input) until
    /// [`LossyLink::restore`]. Loss rules stay as they are.
    pub fn cut(&self) -> Result<()> {
        for side in [Side::A, Side::B] {
            self.nft(
                side,
                &format!(
                    "flush chain ip {TABLE} cut\nadd rule ip {TABLE} cut iifname != \"lo\" drop\n"
                ),
            )?;
        }
        Ok(())
    }

    /// Ends a [`LossyLink::cut`].
    pub fn restore(&self) -> Result<()> {
        for side in [Side::A, Side::B] {
            self.nft(side, &format!("flush chain ip {TABLE} cut\n"))?;
        }
        Ok(())
    }

    /// Moves `side` to a new address in the same subnet: the old one is removed, then the new
    /// one added (sockets bound to the old address lose it, as on a network change). In this
    /// order because removing a primary address also removes the secondaries of its subnet.
    pub fn change_address(&mut self, side: Side, new: Ipv4Addr) -> Result<()> {
        let i = side as usize;
        let dev = self.veth[i].clone();
        self.ip(
            side,
            &[
                "addr",
                "del",
                &format!("{}/{PREFIX}", self.addr[i]),
                "dev",
                &dev,
            ],
        )?;
        self.ip(
            side,
            &["addr", "add", &format!("{new}/{PREFIX}"), "dev", &dev],
        )?;
        self.addr[i] = new;
        Ok(())
    }

    /// Starts a `peerixd` named `name` inside `side`'s namespace, with the usual test
    /// arguments (socket and log in `env`, the shared `--local-dir`), and waits for its socket.
    pub async fn daemon(
        &self,
        env: &TestEnv,
        side: Side,
        name: &str,
        extra: &[&str],
    ) -> Result<DaemonProc> {
        let socket = env.dir.path().join(format!("{name}.sock"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.netns(side)])
            .arg(bin("peerixd")?)
            .arg("--socket")
            .arg(&socket)
            .arg("--local-dir")
            .arg(env.local_dir())
            .arg("--no-system-config")
            .args(extra)
            .env_remove("PEERIX_SOCKET");
        DaemonProc::spawn_command(env, name, cmd, socket).await
    }

    /// Runs `ip ARGS` inside `side`'s namespace.
    fn ip(&self, side: Side, args: &[&str]) -> Result<()> {
        run(Command::new("ip").args(["-n", self.netns(side)]).args(args))
    }

    /// Feeds an nftables script to `nft -f -` inside `side`'s namespace.
    fn nft(&self, side: Side, script: &str) -> Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.netns(side), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nft")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {} failed ({}): {}\n{script}",
                self.netns(side),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth pair, which removes the pair, and
        // its nftables tables. Processes still inside keep it alive until they exit.
        for ns in &self.ns {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Why the link cannot be built here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // `id -u` rather than geteuid(2): the library has no libc dependency.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        return Some("root (network namespaces); run as root, as CI does".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "`{tool}` (apt-get install iproute2 nftables; scripts/test-all.sh does it)"
            ));
        }
    }
    None
}

/// Runs a command, failing with its stderr.
fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
