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

/// What one process did over a measured window.
#[derive(Debug, Clone, Copy)]
pub struct CpuWindow {
    /// CPU time in percent of one core, from the scheduler's nanosecond run time
    /// (`/proc/PID/task/*/schedstat`); falls back to utime+stime ticks where schedstat is
    /// missing.
    pub percent: f64,
    /// Same window from utime+stime (10 ms ticks, sampled: coarse for a nearly idle process).
    pub tick_percent: f64,
    /// Context switches per second over all threads (each is a wake-up of an idle thread).
    pub wakeups_per_s: f64,
}

/// Run time in ns and context switches, summed over the threads of `pid`.
pub fn sched_totals(pid: u32) -> Option<(u64, u64)> {
    let mut ns = 0u64;
    let mut switches = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let path = task.path();
        let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        let status = std::fs::read_to_string(path.join("status")).ok()?;
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Some((ns, switches))
}

/// CPU usage of each pid over `dur` (measured concurrently).
pub async fn cpu_percent(pids: &[u32], dur: Duration) -> Result<Vec<CpuWindow>> {
    let tck = clk_tck();
    let ticks0: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_>>()?;
    let sched0: Vec<Option<(u64, u64)>> = pids.iter().map(|p| sched_totals(*p)).collect();
    let t0 = std::time::Instant::now();
    tokio::time::sleep(dur).await;
    let secs = t0.elapsed().as_secs_f64();
    let ticks1: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_>>()?;
    let sched1: Vec<Option<(u64, u64)>> = pids.iter().map(|p| sched_totals(*p)).collect();
    Ok((0..pids.len())
        .map(|i| {
            let tick_percent = ticks1[i].saturating_sub(ticks0[i]) as f64 / tck / secs * 100.0;
            match (sched0[i], sched1[i]) {
                (Some((ns0, sw0)), Some((ns1, sw1))) => CpuWindow {
                    percent: ns1.saturating_sub(ns0) as f64 / 1e9 / secs * 100.0,
                    tick_percent,
                    wakeups_per_s: sw1.saturating_sub(sw0) as f64 / secs,
                },
                _ => CpuWindow {
                    percent: tick_percent,
                    tick_percent,
                    wakeups_per_s: f64::NAN,
                },
            }
        })
        .collect())
}
