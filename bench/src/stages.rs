//! `--only stages`: where one message's time goes on the full path, per stage, as the clients
//! see it, and which thread of which process did the work. Not part of a default run (it
//! has no baseline and no target); it is the tool behind BENCHMARKS.md's throughput breakdown.
//!
//! Per transfer: when A's client had handed the last chunk to its daemon (a streamed send's
//! chunk replies), when daemon A had handed the first and last piece to the channel (its
//! `progress` frames), when B's client got the first and the last part, and when A's send
//! resolved (B's Peerix ack). Per size: each thread's run time, run-queue wait and
//! voluntary switches (`/proc/PID/task/*/schedstat`, `status`) over all its transfers,
//! divided by the transfers, for both daemons and this process (both clients); and the same
//! per message for pipelined 1 KiB messages.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_client::{MessageAssembler, SendOptions, SendProgress};
use serde_json::json;

use crate::full::{next_event, Pair};
use crate::rawproc::{payload, RawProcs};
use crate::{procfs, size_name, Run};

/// Client-visible instants of one transfer, in ms from the send call.
#[derive(Default, Debug, Clone)]
struct Timeline {
    /// A's client got the reply to its last non-final chunk: the daemon took all but the last
    /// chunk (streamed sends only; the final chunk's reply waits for the ack).
    uploaded: Option<f64>,
    /// Daemon A reported the first / last piece handed to the channel (streamed sends only).
    first_progress: Option<f64>,
    last_progress: Option<f64>,
    /// B's client got the first / last `channel:message` part.
    first_part: f64,
    last_part: f64,
    /// Parts B's client got.
    parts: usize,
    /// A's send resolved (B's Peerix ack reached A's client).
    acked: f64,
}

/// Per-thread counters of one process: thread name → (run ns, run-queue wait ns, voluntary
/// switches, involuntary switches), summed over threads of the same name.
type Threads = BTreeMap<String, [u64; 4]>;

fn threads(pid: u32) -> Threads {
    let mut out = Threads::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in dir.flatten() {
        let p = task.path();
        let name = std::fs::read_to_string(p.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let sched = std::fs::read_to_string(p.join("schedstat")).unwrap_or_default();
        let mut s = sched
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        let (run, wait) = (s.next().unwrap_or(0), s.next().unwrap_or(0));
        let status = std::fs::read_to_string(p.join("status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let e = out.entry(name).or_default();
        e[0] += run;
        e[1] += wait;
        e[2] += field("voluntary_ctxt_switches:");
        e[3] += field("nonvoluntary_ctxt_switches:");
    }
    out
}

fn delta(before: &Threads, after: &Threads) -> Threads {
    after
        .iter()
        .map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or_default();
            (
                k.clone(),
                std::array::from_fn(|i| a[i].saturating_sub(b[i])),
            )
        })
        .collect()
}

async fn timed_transfer(pair: &mut Pair, label: &str, data: &[u8]) -> Result<Timeline> {
    let opts = SendOptions::to(pair.b_id.clone());
    let a = std::sync::Arc::clone(&pair.a);
    let room = pair.room.clone();
    let label_s = label.to_string();
    let a_id = pair.a_id.clone();
    let start = Instant::now();
    let ms = move || start.elapsed().as_secs_f64() * 1e3;
    let send = async move {
        let mut tl = Timeline::default();
        // What `Pair::transfer` does: `send_bytes` up to 8 MiB, above that a streamed send
        // from a reader (whose progress is watched).
        let r = if data.len() > 8 * 1024 * 1024 {
            a.send_stream(
                &room,
                &label_s,
                data,
                Some(data.len() as u64),
                opts,
                |p| match p {
                    SendProgress::Buffered { sent, total } if Some(*sent) != *total => {
                        tl.uploaded = Some(ms())
                    }
                    SendProgress::Buffered { .. } => {}
                    SendProgress::Delivery(_) => {
                        let now = ms();
                        tl.first_progress.get_or_insert(now);
                        tl.last_progress = Some(now);
                    }
                },
            )
            .await?
        } else {
            a.send_bytes(&room, &label_s, data.to_vec(), opts).await?
        };
        tl.acked = ms();
        if !r.peers.as_ref().is_some_and(|p| p.iter().all(|p| p.ok)) {
            bail!("a peer did not acknowledge the transfer");
        }
        anyhow::Ok(tl)
    };
    let events = &mut pair.b_events;
    let recv = async move {
        let mut asm = MessageAssembler::new();
        let (mut first, mut parts) = (None, 0usize);
        loop {
            let ev = next_event(events, "message parts at b", |e| {
                e.name == "channel:message"
                    && peerix_system_tests::field(e, "label") == Some(label)
                    && peerix_system_tests::field(e, "peer") == Some(a_id.as_str())
            })
            .await?;
            first.get_or_insert(ms());
            parts += 1;
            if asm
                .push_owned(ev)
                .context("assembling the message")?
                .is_some()
            {
                return anyhow::Ok((first.unwrap_or_default(), ms(), parts));
            }
        }
    };
    let (sent, got) = tokio::join!(send, recv);
    let (first_part, last_part, parts) = got?;
    let mut tl = sent?;
    tl.first_part = first_part;
    tl.last_part = last_part;
    tl.parts = parts;
    Ok(tl)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The stages of one message per size (see the module docs).
pub async fn stages(run: &mut Run) -> Result<()> {
    let sizes: [(usize, usize); 5] = [
        (16 << 10, run.pick(30, 20)),
        (256 << 10, run.pick(15, 10)),
        (1 << 20, run.pick(10, 6)),
        (4 << 20, run.pick(7, 4)),
        (32 << 20, run.pick(5, 3)),
    ];
    let mut pair = Pair::start(&["bench"]).await?;
    let mut raw = RawProcs::start().await?;
    raw.connect(0, &["bench"]).await?;
    let (raw_a, raw_b) = raw.pids();
    let pids = [
        ("daemon A", procfs::pid_of_socket(&pair._da.socket)?),
        ("daemon B", procfs::pid_of_socket(&pair._db.socket)?),
        ("bench (both clients)", std::process::id()),
        ("raw A", raw_a),
        ("raw B", raw_b),
    ];
    let mut detail = Vec::new();
    let ipc = crate::groups::daemon_ipc_config();
    for (len, trials) in sizes {
        let data = payload(len);
        // Both paths warmed up as the throughput group warms them, so that the figures are
        // those of a daemon past its replay buffer's first fill.
        for _ in 0..crate::groups::steady_warmup(len, &ipc) {
            timed_transfer(&mut pair, "bench", &data).await?;
            raw.transfer(0, "bench", len, 1).await?;
        }
        let before: Vec<Threads> = pids.iter().map(|(_, p)| threads(*p)).collect();
        let t = Instant::now();
        let mut tls = Vec::new();
        for _ in 0..trials {
            tls.push(timed_transfer(&mut pair, "bench", &data).await?);
        }
        let wall_ms = t.elapsed().as_secs_f64() * 1e3 / trials as f64;
        let mid: Vec<Threads> = pids.iter().map(|(_, p)| threads(*p)).collect();
        // The raw pair's trials, after the full path's: its threads' work per message beside
        // the daemons'.
        let raw_before: Vec<Threads> = pids.iter().map(|(_, p)| threads(*p)).collect();
        let t = Instant::now();
        let mut raw_ms = Vec::new();
        for _ in 0..trials {
            raw_ms.push(raw.transfer(0, "bench", len, 1).await?.as_secs_f64() * 1e3);
        }
        let raw_wall_ms = t.elapsed().as_secs_f64() * 1e3 / trials as f64;
        let raw_after: Vec<Threads> = pids.iter().map(|(_, p)| threads(*p)).collect();
        let raw_med = median(raw_ms);
        let col = |f: fn(&Timeline) -> Option<f64>| median(tls.iter().filter_map(f).collect());
        let row = json!({
            "bytes": len,
            "trials": trials,
            "wall_ms_per_transfer": wall_ms,
            "uploaded_ms": col(|t| t.uploaded),
            "first_progress_ms": col(|t| t.first_progress),
            "last_progress_ms": col(|t| t.last_progress),
            "first_part_ms": col(|t| Some(t.first_part)),
            "last_part_ms": col(|t| Some(t.last_part)),
            "parts": col(|t| Some(t.parts as f64)),
            "acked_ms": col(|t| Some(t.acked)),
            "mb_s": len as f64 / 1e3 / col(|t| Some(t.last_part)),
            "raw_ms": raw_med,
            "raw_mb_s": len as f64 / 1e3 / raw_med,
        });
        eprintln!("  stages {}: {row}", size_name(len));
        let procs = per_thread(
            &pids,
            [
                (&before, &mid, wall_ms),
                (&raw_before, &raw_after, raw_wall_ms),
            ],
            trials,
            "transfer",
        );
        detail.push(json!({"timeline": row, "threads": procs}));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Pipelined 1 KiB messages, as the throughput group sends them: what one small message
    // costs each thread (BENCHMARKS.md, session 16, took this from a profile by hand).
    let n = run.pick(20_000, 5_000);
    crate::groups::pipelined(&mut pair, "bench", 1024, 100, 1, crate::groups::PIPE_WINDOW).await?;
    let before: Vec<Threads> = pids.iter().map(|(_, p)| threads(*p)).collect();
    let full = crate::groups::pipelined(&mut pair, "bench", 1024, n, 1, crate::groups::PIPE_WINDOW)
        .await?
        .as_secs_f64()
        * 1e3;
    let mid: Vec<Threads> = pids.iter().map(|(_, p)| threads(*p)).collect();
    let raw_ms = raw.transfer(0, "bench", 1024, n).await?.as_secs_f64() * 1e3;
    let raw_after: Vec<Threads> = pids.iter().map(|(_, p)| threads(*p)).collect();
    eprintln!(
        "  stages {n} × 1 KiB pipelined: full path {:.0} msg/s, raw pair {:.0} msg/s",
        n as f64 / full * 1e3,
        n as f64 / raw_ms * 1e3
    );
    let procs = per_thread(
        &pids,
        [(&before, &mid, full), (&mid, &raw_after, raw_ms)],
        n,
        "message",
    );
    detail.push(json!({"pipelined_1k": n, "full_ms": full, "raw_ms": raw_ms, "threads": procs}));
    run.details.insert("stages".into(), json!(detail));
    Ok(())
}

/// Prints and returns each process's threads' work between two snapshots, per `unit` (`n` of
/// them): the full path's processes over `full`'s snapshots, the raw pair's over `raw`'s, each
/// with its wall time in ms.
fn per_thread(
    pids: &[(&str, u32)],
    [full, raw]: [(&[Threads], &[Threads], f64); 2],
    n: usize,
    unit: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut procs = serde_json::Map::new();
    for (i, (name, _)) in pids.iter().enumerate() {
        let (before, after, wall_ms) = if name.starts_with("raw") { raw } else { full };
        let d = delta(&before[i], &after[i]);
        let per = |ns: u64| ns as f64 / 1e6 / n as f64;
        let mut th = serde_json::Map::new();
        for (tname, [run_ns, wait_ns, vol, invol]) in d {
            if run_ns == 0 {
                continue;
            }
            eprintln!(
                "    {name:<22} {tname:<16} run {:>9.4} ms  rq-wait {:>9.4} ms  wake-ups {:>7.2}  preempted {:>6.2}  (per {unit}; {:.0} % of the wall time)",
                per(run_ns),
                per(wait_ns),
                vol as f64 / n as f64,
                invol as f64 / n as f64,
                per(run_ns) * n as f64 / wall_ms * 100.0
            );
            th.insert(
                tname,
                json!({"run_ms": per(run_ns), "runqueue_wait_ms": per(wait_ns),
                       "wakeups": vol as f64 / n as f64,
                       "preempted": invol as f64 / n as f64}),
            );
        }
        procs.insert(name.to_string(), serde_json::Value::Object(th));
    }
    procs
}
