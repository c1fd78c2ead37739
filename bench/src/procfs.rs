//! Reading RSS and CPU time of processes from /proc (Linux).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};

/// The pid of the `peerixd` whose command line names `socket` (the harness does not expose the
/// child's pid, but every daemon gets its own `--socket`).
pub fn pid_of_socket(socket: &Path) -> Result<u32> {
    let want = socket.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let is_daemon = args.next().is_some_and(|a0| a0.ends_with(b"peerixd"));
        if is_daemon && cmdline.split(|b| *b == 0).any(|a| a == want) {
            return Ok(pid);
        }
    }
    Err(anyhow!(
        "no peerixd process with socket {}",
        socket.display()
    ))
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// utime + stime of `pid` in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after it start at "state".
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f
        .get(11)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no utime in /proc/{pid}/stat"))?;
    let stime: u64 = f
        .get(12)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no stime in /proc/{pid}/stat"))?;
    Ok(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 if that fails, which is Linux's value).
pub fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU usage in percent of one core of each pid over `dur` (measured concurrently).
pub async fn cpu_percent(pids: &[u32], dur: Duration) -> Result<Vec<f64>> {
    let tck = clk_tck();
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_>>()?;
    let t0 = std::time::Instant::now();
    tokio::time::sleep(dur).await;
    let secs = t0.elapsed().as_secs_f64();
    let after: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_>>()?;
    Ok(before
        .iter()
        .zip(after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / tck / secs * 100.0)
        .collect())
}

/// VmRSS of this process in KiB.
pub fn self_rss_kib() -> Result<u64> {
    rss_kib(std::process::id())
}
