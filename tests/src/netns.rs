//! One network namespace owned by a test or the bench: created on [`Netns::add`], deleted on
//! drop together with whatever still runs inside it. The labs (`lossy_link.rs`, `netlab.rs`)
//! build their topologies from these.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

/// A network namespace; deleted (its processes killed first) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up.
    pub fn add(name: &str) -> Result<Self> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip ARGS` inside it.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// A command that runs `program` inside it (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// The same as [`Netns::command`] for tokio.
    pub fn tokio_command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Sets a sysctl inside it (`sysctl -w key=value`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        run(self
            .command("sysctl")
            .args(["-q", "-w", &format!("{key}={value}")]))
    }

    /// Feeds an nftables script to `nft -f -` inside it.
    pub fn nft(&self, script: &str) -> Result<()> {
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
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
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Turns transmit checksum offload off on `dev` (`ethtool -K DEV tx off`, without needing
    /// ethtool). Why: a tunnel device (VXLAN) leaves the inner UDP checksum to "hardware",
    /// which a veth never computes; a userspace relay that copies the outer payload would then
    /// pass on a packet whose inner checksum the far end rejects.
    pub fn tx_checksum_off(&self, dev: &str) -> Result<()> {
        #[repr(C)]
        struct EthtoolValue {
            cmd: u32,
            data: u32,
        }
        #[repr(C)]
        struct IfReq {
            name: [u8; 16],
            data: *mut EthtoolValue,
            _pad: [u8; 16],
        }
        const SIOCETHTOOL: libc::c_ulong = 0x8946;
        const ETHTOOL_STXCSUM: u32 = 0x17;
        let dev = dev.to_string();
        self.enter(move || {
            let mut value = EthtoolValue {
                cmd: ETHTOOL_STXCSUM,
                data: 0,
            };
            let mut req = IfReq {
                name: [0; 16],
                data: &mut value,
                _pad: [0; 16],
            };
            let n = dev.len().min(15);
            req.name[..n].copy_from_slice(&dev.as_bytes()[..n]);
            // SAFETY: a plain socket, closed below; the ioctl reads `req` and `value`, both
            // alive for the call.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                if fd < 0 {
                    bail!("socket: {}", std::io::Error::last_os_error());
                }
                let rc = libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReq);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if rc != 0 {
                    bail!("turning tx checksum offload off on {dev}: {err}");
                }
            }
            Ok(())
        })
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result: for
    /// sockets that must belong to the namespace (they stay in it wherever they are used).
    pub fn enter<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns(2) on a valid descriptor; it moves only this (fresh) thread.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns({path}): {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Whatever still runs inside (a daemon whose test failed first) would keep it alive.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        // Deleting a namespace removes its interfaces (and so veth pairs) and nftables tables.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Why namespaces cannot be built here (not root, `tool` missing), if they cannot.
pub fn missing(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("root (network namespaces); run as root, as CI does".into());
    }
    for tool in tools {
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
pub fn run(cmd: &mut Command) -> Result<()> {
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
