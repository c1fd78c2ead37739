//! A two-namespace link for tests of data over a lossy or changing path: namespaces `A` and `B`
//! joined by one veth pair (`10.177.0.1/24` ↔ `10.177.0.2/24`), loss from nftables
//! (`numgen random mod 100 < N drop` on a side's egress), a link cut (drop everything both
//! ways) and an address change. The kernel here has no `netem`: [`LossyLink::delayed`] adds
//! latency with a userspace relay (`delay_relay.rs`) that every packet of the link crosses.
//!
//! Everything is built by the test and torn down by [`Drop`] (also when the test fails): the
//! namespaces, and with them the veth pair and the rules. Nothing touches the host's
//! interfaces. Daemons run inside the namespaces ([`LossyLink::daemon`]) and signal through the
//! test's shared `--local-dir` (filesystem Unix sockets reach across network namespaces), so
//! clients stay in the root namespace and talk to them over their IPC sockets.
//!
//! Needs root (CAP_NET_ADMIN), `ip` and `nft`; [`LossyLink::new`] returns `None` with a message
//! saying what is missing, and the test skips.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::delay_relay::DelayRelay;
use crate::netns::Netns;
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
pub struct LossyLink {
    // Declared first so it stops before its namespace goes.
    relay: Option<DelayRelay>,
    /// The device carrying `addr` on each side (the veth, or the VXLAN device when delayed).
    dev: [String; 2],
    addr: [Ipv4Addr; 2],
    ns: [Netns; 2],
    /// The relay's namespace, when delayed.
    middle: Option<Netns>,
}

impl std::fmt::Debug for LossyLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossyLink")
            .field("ns", &self.ns)
            .field("addr", &self.addr)
            .field("delayed", &self.relay.is_some())
            .finish()
    }
}

/// The nftables table of this module in each namespace (loss and cut rules live there).
const TABLE: &str = "peerix_lossy";
/// Netmask of the link's subnet.
const PREFIX: u8 = 24;
/// The VXLAN port (IANA's).
const VXLAN_PORT: u16 = 4789;
/// Datagrams queued per direction in the delay relay: a router-sized queue, far more than
/// the stack keeps in flight at 40 ms RTT (so the relay itself never drops in the labs).
const RELAY_QUEUE: usize = 4096;

/// Interface names are at most 15 bytes: a short tag unique per process and link.
fn tag() -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

impl LossyLink {
    /// Builds the link, or returns `None` (after printing why) where it cannot be built: not
    /// root, or `ip`/`nft` missing. Any other failure is an error.
    pub fn new() -> Result<Option<Self>> {
        if let Some(why) = crate::netns::missing(&["ip", "nft"]) {
            eprintln!("SKIPPED: the lossy-link tests need {why}");
            return Ok(None);
        }
        let tag = tag();
        let ns = [
            Netns::add(&format!("plxa{tag}"))?,
            Netns::add(&format!("plxb{tag}"))?,
        ];
        let dev = [format!("pla{tag}"), format!("plb{tag}")];
        // From here on, Drop removes whatever was made.
        let link = Self {
            relay: None,
            dev,
            addr: [Ipv4Addr::new(10, 177, 0, 1), Ipv4Addr::new(10, 177, 0, 2)],
            ns,
            middle: None,
        };
        veth(&link.ns[0], &link.dev[0], &link.ns[1], &link.dev[1])?;
        for side in [Side::A, Side::B] {
            link.finish_side(side)?;
        }
        Ok(Some(link))
    }

    /// The same link with `one_way` delay each way (RTT = 2 × `one_way`), from the userspace
    /// [`DelayRelay`]: each side's `10.177.0.x` lives on a VXLAN device whose underlay goes
    /// to a third namespace, where the relay passes every VXLAN datagram on after the delay.
    ///
    /// ```text
    ///  A: vxlan 10.177.0.1 ─ veth 10.178.1.1 ── 10.178.1.2  R  10.178.2.2 ── 10.178.2.1 veth ─ vxlan 10.177.0.2 :B
    ///                                              (relay: +one_way each way)
    /// ```
    /// The underlay addresses are not routed between A and B (R does not forward), so the
    /// only working path between the sides is the delayed one. Loss and cuts act on the VXLAN
    /// device's input as on the veth of [`LossyLink::new`].
    pub fn delayed(one_way: Duration) -> Result<Option<Self>> {
        if let Some(why) = crate::netns::missing(&["ip", "nft"]) {
            eprintln!("SKIPPED: the lossy-link tests need {why}");
            return Ok(None);
        }
        let tag = tag();
        let ns = [
            Netns::add(&format!("plxa{tag}"))?,
            Netns::add(&format!("plxb{tag}"))?,
        ];
        let middle = Netns::add(&format!("plxr{tag}"))?;
        let mut link = Self {
            relay: None,
            dev: [format!("plva{tag}"), format!("plvb{tag}")],
            addr: [Ipv4Addr::new(10, 177, 0, 1), Ipv4Addr::new(10, 177, 0, 2)],
            ns,
            middle: None,
        };
        let mut relay_ends = Vec::new();
        for side in [Side::A, Side::B] {
            let i = side as usize;
            let (under, router) = (
                Ipv4Addr::new(10, 178, i as u8 + 1, 1),
                Ipv4Addr::new(10, 178, i as u8 + 1, 2),
            );
            let (u, r) = (format!("plu{}{tag}", i), format!("plr{}{tag}", i));
            veth(&link.ns[i], &u, &middle, &r)?;
            link.ns[i].ip(&["addr", "add", &format!("{under}/{PREFIX}"), "dev", &u])?;
            link.ns[i].ip(&["link", "set", &u, "gso_max_segs", "1"])?;
            link.ns[i].ip(&["link", "set", &u, "up"])?;
            middle.ip(&["addr", "add", &format!("{router}/{PREFIX}"), "dev", &r])?;
            middle.ip(&["link", "set", &r, "up"])?;
            link.ns[i].ip(&[
                "link",
                "add",
                &link.dev[i],
                "type",
                "vxlan",
                "id",
                "177",
                "local",
                &under.to_string(),
                "remote",
                &router.to_string(),
                "dstport",
                &VXLAN_PORT.to_string(),
                "dev",
                &u,
            ])?;
            link.ns[i].tx_checksum_off(&link.dev[i])?;
            link.finish_side(side)?;
            relay_ends.push((
                SocketAddr::from((router, VXLAN_PORT)),
                SocketAddr::from((under, VXLAN_PORT)),
            ));
        }
        let binds: Vec<SocketAddr> = relay_ends.iter().map(|(r, _)| *r).collect();
        let (x, y) = middle.enter(move || {
            let x = UdpSocket::bind(binds[0]).context("binding the relay (A side)")?;
            let y = UdpSocket::bind(binds[1]).context("binding the relay (B side)")?;
            for s in [&x, &y] {
                // A burst of the stack (a full cwnd) must not overflow the relay's socket.
                let r = socket2::SockRef::from(s);
                let _ = r.set_recv_buffer_size(4 << 20);
                let _ = r.set_send_buffer_size(4 << 20);
            }
            Ok((x, y))
        })?;
        // A default route over the link: Chromium takes its "default" local address from the
        // route to a public address and gathers nothing useful without one.
        link.ns[0].ip(&["route", "add", "default", "via", "10.177.0.2"])?;
        link.ns[1].ip(&["route", "add", "default", "via", "10.177.0.1"])?;
        link.relay = Some(DelayRelay::start(
            x,
            relay_ends[0].1,
            y,
            relay_ends[1].1,
            one_way,
            RELAY_QUEUE,
        )?);
        link.middle = Some(middle);
        Ok(Some(link))
    }

    /// Address, GSO cap, and the (empty) loss and cut chains on `side`'s link device.
    fn finish_side(&self, side: Side) -> Result<()> {
        let i = side as usize;
        let ns = &self.ns[i];
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/{PREFIX}", self.addr[i]),
            "dev",
            &self.dev[i],
        ])?;
        // One datagram per packet on the wire: with UDP GSO the stack hands the kernel
        // batches of up to 64 datagrams as one packet, which a filter would drop (or
        // pass) whole. Real links lose single datagrams; capping GSO at one segment makes
        // the kernel split batches before they cross the link.
        ns.ip(&["link", "set", &self.dev[i], "gso_max_segs", "1"])?;
        ns.ip(&["link", "set", &self.dev[i], "up"])?;
        // Loss and cuts act on arrival (input), so they are silent as on a real path: a
        // drop on output would fail the sender's sendmsg with EPERM instead.
        ns.nft(&format!(
            "table ip {TABLE} {{\n\
             chain loss {{ type filter hook input priority 0; policy accept; }}\n\
             chain cut {{ type filter hook input priority 10; policy accept; }}\n\
             }}\n"
        ))
    }

    /// The namespace of `side`.
    pub fn ns(&self, side: Side) -> &Netns {
        &self.ns[side as usize]
    }

    /// The relay's namespace (only for [`LossyLink::delayed`]) and its address as seen from
    /// each side (`[from A, from B]`), not delayed and never lossy: for servers both sides
    /// reach directly (a signaling server for browsers).
    pub fn middle(&self) -> Option<(&Netns, [Ipv4Addr; 2])> {
        self.middle.as_ref().map(|m| {
            (
                m,
                [Ipv4Addr::new(10, 178, 1, 2), Ipv4Addr::new(10, 178, 2, 2)],
            )
        })
    }

    /// Datagrams the delay relay dropped because its queue was full (0 without a relay).
    pub fn relay_drops(&self) -> u64 {
        self.relay.as_ref().map_or(0, |r| {
            r.x_to_y.dropped.load(Ordering::Relaxed) + r.y_to_x.dropped.load(Ordering::Relaxed)
        })
    }

    /// The namespace of `side` (for `ip netns exec`).
    pub fn netns(&self, side: Side) -> &str {
        self.ns[side as usize].name()
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
            // Only the link device: on a delayed link the underlay's VXLAN datagrams also
            // arrive as UDP, and losing those too would double the loss.
            script.push_str(&format!(
                "add rule ip {TABLE} loss iifname \"{}\" meta l4proto udp numgen random mod 100 < {percent} drop\n",
                self.dev[other as usize]
            ));
        }
        self.ns(other).nft(&script)
    }

    /// Cuts the link both ways (every packet dropped on both sides' input) until
    /// [`LossyLink::restore`]. Loss rules stay as they are.
    pub fn cut(&self) -> Result<()> {
        for side in [Side::A, Side::B] {
            self.ns(side).nft(&format!(
                "flush chain ip {TABLE} cut\nadd rule ip {TABLE} cut iifname != \"lo\" drop\n"
            ))?;
        }
        Ok(())
    }

    /// Ends a [`LossyLink::cut`].
    pub fn restore(&self) -> Result<()> {
        for side in [Side::A, Side::B] {
            self.ns(side)
                .nft(&format!("flush chain ip {TABLE} cut\n"))?;
        }
        Ok(())
    }

    /// Moves `side` to a new address in the same subnet: the old one is removed, then the new
    /// one added (sockets bound to the old address lose it, as on a network change). In this
    /// order because removing a primary address also removes the secondaries of its subnet.
    pub fn change_address(&mut self, side: Side, new: Ipv4Addr) -> Result<()> {
        let i = side as usize;
        let dev = self.dev[i].clone();
        self.ns[i].ip(&[
            "addr",
            "del",
            &format!("{}/{PREFIX}", self.addr[i]),
            "dev",
            &dev,
        ])?;
        self.ns[i].ip(&["addr", "add", &format!("{new}/{PREFIX}"), "dev", &dev])?;
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
}

/// A veth pair `a_dev` in `a` ↔ `b_dev` in `b`, created inside the namespaces.
fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> Result<()> {
    crate::netns::run(Command::new("ip").args([
        "link",
        "add",
        a_dev,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
    ]))
}
