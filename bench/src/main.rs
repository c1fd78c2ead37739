//! `peerix-bench`: one run measures peerixd's performance figures as median/p95 over repeated
//! trials, beside in-run baselines (two `peerix_rtc::RtcPeer`s in this process), prints a table
//! with ratios and targets, writes JSON and two PNG plots.
//!
//! ```text
//! cargo build --release -p peerix-bench -p peerixd -p peerix-client
//! target/release/peerix-bench [--quick] [--json out.json] [--only NAME[,NAME…]]
//! ```
//!
//! Everything runs on loopback: daemons and nats-server are child processes on free ports and
//! temporary directories, killed when the run ends. Targets are informational, never asserted.

mod full;
mod media;
mod natscount;
mod plot;
mod procfs;
mod raw;
mod report;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use clap::Parser;
use peerix_system_tests::{is, Member, NatsServer, TestEnv};
use serde_json::json;

use report::Row;
use stats::{fit_line, Summary};

/// Benchmark groups, in the order they run.
const GROUPS: &[&str] = &[
    "throughput",
    "rtt",
    "setup",
    "ipc",
    "mesh",
    "nats",
    "rss",
    "cpu",
    "media",
];

#[derive(Parser, Debug)]
#[command(about = "peerixd benchmark: full path vs in-process raw WebRTC, one run")]
struct Args {
    /// Fewer trials, 5 s instead of 30 s for idle CPU, 3 s silence window.
    #[arg(long)]
    quick: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only these groups (comma-separated): throughput, rtt, setup, ipc, mesh, nats, rss, cpu, media.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Directory for the PNG plots.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/plots"))]
    plots: PathBuf,
    /// Directory holding `peerixd` (default: PEERIX_BIN_DIR, else this binary's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Internal: print the raw stack's RSS points as JSON and exit (run in a child process).
    #[arg(long, hide = true)]
    raw_rss_probe: bool,
}

/// Everything the run produced.
struct Run {
    quick: bool,
    rows: Vec<Row>,
    details: serde_json::Map<String, serde_json::Value>,
    tput_series: Vec<(String, Vec<(usize, f64)>)>,
    rss_points: Vec<(f64, f64)>,
    /// Groups that failed, with their error.
    errors: Vec<serde_json::Value>,
}

impl Run {
    fn add(&mut self, row: Row) {
        eprintln!(
            "  {} / {}: median {} {}, p95 {} {}{}",
            row.group,
            row.figure,
            report::num(row.value.median),
            row.unit,
            report::num(row.value.p95),
            row.unit,
            row.ratio
                .map(|r| format!(", {r:.2}× baseline"))
                .unwrap_or_default()
        );
        self.rows.push(row);
    }

    fn pick(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

fn summary(samples: &[f64]) -> Result<Summary> {
    Summary::of(samples).context("no samples")
}

fn one(v: f64) -> Summary {
    Summary {
        n: 1,
        median: v,
        p95: v,
        p99: v,
        min: v,
        max: v,
        mean: v,
    }
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn payload(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn size_name(len: usize) -> String {
    if len >= 1 << 20 {
        format!("{} MiB", len >> 20)
    } else {
        format!("{} KiB", len >> 10)
    }
}

/// Throughput through the full path and through the raw pair, per message size.
async fn throughput(run: &mut Run) -> Result<()> {
    let sizes: [(usize, usize); 4] = [
        (16 << 10, run.pick(30, 10)),
        (256 << 10, run.pick(15, 5)),
        (4 << 20, run.pick(7, 3)),
        (32 << 20, run.pick(5, 2)),
    ];
    let mut pair = full::Pair::start(&["bench"]).await?;
    let mut raw = raw::RawPair::connect().await?;
    let (ra, rb) = raw.channel("bench").await?;
    let pipe = raw::RawPipe::new(ra, rb);
    let mut full_pts = Vec::new();
    let mut raw_pts = Vec::new();
    let mut detail = Vec::new();
    for (len, trials) in sizes {
        let data = payload(len);
        let bytes = Bytes::from(data.clone());
        // One warm-up transfer each.
        pair.transfer("bench", &data).await?;
        pipe.transfer(&bytes).await?;
        let (mut f, mut r) = (Vec::new(), Vec::new());
        // Interleave full and raw trials so that background load hits both alike.
        for _ in 0..trials {
            f.push(mb_per_s(len, pair.transfer("bench", &data).await?));
            r.push(mb_per_s(len, pipe.transfer(&bytes).await?));
        }
        let fs = summary(&f)?;
        let rs = summary(&r)?;
        full_pts.push((len, fs.median));
        raw_pts.push((len, rs.median));
        detail.push(json!({"bytes": len, "full_mb_s": f, "raw_mb_s": r}));
        let mut row = Row::new(
            "throughput",
            &format!("full path, {} message", size_name(len)),
            "MB/s",
            fs.clone(),
        )
        .baseline("raw RtcPeer pair", Some(rs.clone()));
        if len == 32 << 20 {
            let ok = fs.median >= 80.0 && fs.median >= 0.8 * rs.median;
            row = row.target("≥ 0.8× raw and ≥ 80 MB/s", ok).note(
                "client send_stream → IPC → daemon → WebRTC → daemon → IPC → client assembled",
            );
        }
        run.add(row);
    }
    drop(pipe);
    raw.close().await;
    run.details.insert("throughput".into(), json!(detail));
    run.tput_series = vec![
        (
            "full path (client → daemon → WebRTC → daemon → client)".into(),
            full_pts,
        ),
        ("raw RtcPeer pair in one process".into(), raw_pts),
    ];
    drop(pair);
    Ok(())
}

/// 16-byte round trips through the full path and the raw pair.
async fn rtt(run: &mut Run) -> Result<()> {
    let (warm, n) = (run.pick(50, 20), run.pick(1000, 200));
    let mut pair = full::Pair::start(&["rtt"]).await?;
    let f = pair.rtt("rtt", warm, n).await?;
    let mut raw = raw::RawPair::connect().await?;
    let (ra, rb) = raw.channel("rtt").await?;
    let r = raw::rtt(ra, rb, warm, n).await?;
    raw.close().await;
    let fs = summary(&f)?;
    let rs = summary(&r)?;
    run.add(
        Row::new(
            "rtt",
            "full path RTT, 16 B text (p50 / p95)",
            "ms",
            fs.clone(),
        )
        .baseline("raw RtcPeer pair", Some(rs.clone()))
        .target("p50 ≤ 0.5 ms", fs.median <= 0.5),
    );
    run.add(
        Row::new("rtt", "full path RTT p99", "ms", one(fs.p99))
            .baseline("raw p99", Some(one(rs.p99)))
            .target("p99 ≤ 2 ms", fs.p99 <= 2.0),
    );
    run.add(
        Row::new(
            "rtt",
            "added by IPC + daemons per round trip (p50 full − p50 raw)",
            "ms",
            one(fs.median - rs.median),
        )
        .note("two IPC hops and two daemon hops each way"),
    );
    run.details.insert(
        "rtt".into(),
        json!({"full_ms": fs, "raw_ms": rs, "n": n, "warmup": warm}),
    );
    Ok(())
}

/// join→connected on the local and NATS drivers, raw setup as baseline.
async fn setup(run: &mut Run) -> Result<()> {
    let trials = run.pick(15, 5);
    let mut raw = Vec::new();
    for _ in 0..trials {
        let p = raw::RawPair::connect().await?;
        raw.push(p.setup.as_secs_f64() * 1e3);
        p.close().await;
    }
    let rs = summary(&raw)?;
    let mut detail = serde_json::Map::new();
    for driver in ["local", "nats"] {
        let env = TestEnv::new()?;
        let nats = if driver == "nats" {
            Some(NatsServer::start(&[])?)
        } else {
            None
        };
        let extra = nats.as_ref().map(full::nats_args).unwrap_or_default();
        let da = full::daemon(&env, "sa", &extra).await?;
        let db = full::daemon(&env, "sb", &extra).await?;
        let (mut t, mut j, mut tl, mut failed) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // One untimed warm-up (first room of a daemon pays one-off costs).
        if let Err(e) = full::setup_trial(&da, &db, &format!("warm-{driver}")).await {
            eprintln!("  setup {driver} warm-up failed: {e:#}");
            failed.push(json!({"trial": "warm-up", "error": format!("{e:#}"), "log_a": da.log_tail(), "log_b": db.log_tail()}));
        }
        for i in 0..trials {
            let r = match full::setup_trial(&da, &db, &format!("setup-{driver}-{i}")).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("  setup {driver} trial {i} failed: {e:#}");
                    failed.push(json!({"trial": i, "error": format!("{e:#}"), "log_a": da.log_tail(), "log_b": db.log_tail()}));
                    continue;
                }
            };
            t.push(r.join_to_connected_ms);
            j.push(r.join_request_ms);
            tl.push(r.timeline);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ts = summary(&t)?;
        let target = if driver == "local" { 25.0 } else { 40.0 };
        let mut note = "from the second join reply to connection:connected at both".to_string();
        if !failed.is_empty() {
            note += &format!(
                "; {} of {trials} trials (+ 1 warm-up) did not connect within {} s (excluded)",
                failed.len(),
                full::STEP.as_secs()
            );
        }
        run.add(
            Row::new(
                "setup",
                &format!("join→connected, 2 daemons, {driver} driver"),
                "ms",
                ts.clone(),
            )
            .baseline("raw RtcPeer new→control open", Some(rs.clone()))
            .target(
                &format!("≤ {target} ms"),
                ts.median <= target && failed.is_empty(),
            )
            .note(note),
        );
        detail.insert(
            driver.into(),
            json!({"join_to_connected_ms": t, "second_join_request_ms": j, "event_timelines_ms": tl, "failed_trials": failed}),
        );
    }
    detail.insert("raw_setup_ms".into(), json!(raw));
    run.details.insert("setup".into(), detail.into());
    Ok(())
}

/// IPC alone: `status` round trips, sequential and concurrent.
async fn ipc(run: &mut Run) -> Result<()> {
    let env = TestEnv::new()?;
    let d = env.daemon("ipc", &[]).await?;
    let n = run.pick(5000, 1000);
    let f = full::ipc(&d, n, 16).await?;
    let s = summary(&f.seq_ms)?;
    run.add(
        Row::new("ipc", "status round trip (sequential)", "ms", s.clone())
            .note("one request + reply over the Unix socket, MessagePack both ways"),
    );
    run.add(Row::new(
        "ipc",
        "status requests/s, sequential",
        "req/s",
        one(f.seq_rps),
    ));
    run.add(
        Row::new(
            "ipc",
            &format!("status requests/s, {} in flight", f.concurrency),
            "req/s",
            one(f.conc_rps),
        )
        .baseline("sequential", Some(one(f.seq_rps))),
    );
    run.details.insert(
        "ipc".into(),
        json!({"seq_ms": s, "seq_rps": f.seq_rps, "conc_rps": f.conc_rps, "concurrency": f.concurrency}),
    );
    Ok(())
}

/// Time to full mesh for 2, 4, 8, 16 daemons on the local driver.
async fn mesh(run: &mut Run) -> Result<()> {
    let mut detail = serde_json::Map::new();
    let mut two = None;
    for n in [2usize, 4, 8, 16] {
        let trials = if n == 16 {
            run.pick(2, 1)
        } else {
            run.pick(3, 1)
        };
        let env = TestEnv::new()?;
        let mut daemons = Vec::new();
        for i in 0..n {
            daemons.push(env.daemon(&format!("m{i}"), &[]).await?);
        }
        let limit = Duration::from_secs(30);
        let (mut t, mut failures) = (Vec::new(), Vec::new());
        for k in 0..trials {
            let o = full::mesh_trial(&daemons, &format!("mesh{n}-{k}"), limit).await?;
            match o.secs {
                Some(s) => t.push(s),
                None => {
                    eprintln!(
                        "  mesh {n}: {} of {} pairs not connected after {limit:?}: {:?}",
                        o.missing.len(),
                        o.pairs,
                        o.missing
                    );
                    failures.push(json!({"trial": k, "missing_pairs": o.missing, "pairs": o.pairs, "log_tails": o.log_tails}));
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let incomplete = failures.len();
        // An incomplete mesh counts as the deadline, so the figure never looks better than it is.
        let mut all = t.clone();
        all.extend(std::iter::repeat_n(limit.as_secs_f64(), incomplete));
        let s = summary(&all)?;
        let mut row = Row::new(
            "mesh",
            &format!("full mesh, {n} daemons ({} pairs)", n * (n - 1) / 2),
            "s",
            s.clone(),
        );
        if n == 2 {
            two = Some(s.clone());
        } else {
            row = row.baseline("2 daemons", two.clone());
        }
        if n == 16 {
            row = row.target("≤ 3 s", s.median <= 3.0 && incomplete == 0);
        }
        if incomplete > 0 {
            row = row.note(format!(
                "{incomplete} of {trials} trials incomplete after {} s (counted as {} s)",
                limit.as_secs(),
                limit.as_secs()
            ));
        }
        run.add(row);
        detail.insert(
            n.to_string(),
            json!({"complete_s": t, "incomplete": failures}),
        );
    }
    run.details.insert("mesh_s".into(), detail.into());
    Ok(())
}

/// Signaling messages on nats-server per connected pair, then silence.
async fn nats(run: &mut Run) -> Result<()> {
    let mon = peerix_system_tests::free_port()?;
    let nats = NatsServer::start(&["-m", &mon.to_string()])?;
    let env = TestEnv::new()?;
    let extra = full::nats_args(&nats);
    let da = full::daemon(&env, "na", &extra).await?;
    let db = full::daemon(&env, "nb", &extra).await?;
    let counter = natscount::Counter::start(&nats.url()).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let trials = run.pick(3, 2);
    let silence = Duration::from_secs(if run.quick { 3 } else { 5 });
    let (mut counts, mut varz, mut quiet) = (Vec::new(), Vec::new(), Vec::new());
    let mut detail = Vec::new();
    for i in 0..trials {
        let room = format!("natscount-{i}");
        let c0 = counter.count();
        let v0 = natscount::varz_in_msgs(mon)?;
        let mut a = Member::join(&da, &room, |_| {}).await?;
        let mut b = Member::join(&db, &room, |_| {}).await?;
        let (a_id, b_id) = (a.id.clone(), b.id.clone());
        a.wait_for("a sees b", full::STEP, |e| {
            is(e, "connection:connected", &b_id)
        })
        .await?;
        b.wait_for("b sees a", full::STEP, |e| {
            is(e, "connection:connected", &a_id)
        })
        .await?;
        // Let trailing candidates (debounced 50 ms) land before counting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let c1 = counter.count();
        let v1 = natscount::varz_in_msgs(mon)?;
        tokio::time::sleep(silence).await;
        let c2 = counter.count();
        counts.push((c1 - c0) as f64);
        // The /varz GET itself is not a message; our `>` subscriber publishes nothing.
        varz.push(v1.saturating_sub(v0) as f64);
        quiet.push((c2 - c1) as f64);
        detail.push(json!({"setup": counter.since(c0).get(..c1 - c0), "after": counter.since(c1)}));
        a.leave().await?;
        b.leave().await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cs = summary(&counts)?;
    run.add(
        Row::new(
            "nats",
            "NATS messages per connected pair (both joins → connected + 0.5 s)",
            "msgs",
            cs.clone(),
        )
        .baseline("nats-server /varz in_msgs", Summary::of(&varz))
        .target("≤ 7", cs.median <= 7.0),
    );
    let qs = summary(&quiet)?;
    run.add(
        Row::new(
            "nats",
            &format!(
                "NATS messages in the {} s after connecting",
                silence.as_secs()
            ),
            "msgs",
            qs.clone(),
        )
        .target("0 (silence)", qs.max == 0.0),
    );
    run.details.insert("nats".into(), json!(detail));
    Ok(())
}

/// RSS of one daemon over 1..=32 connected peers (one two-member room per peer, partners
/// spread over 8 daemons), RSS per empty room on another daemon, the raw stack's RSS per
/// connection in this process, and idle CPU with 8 peers.
async fn rss_cpu(run: &mut Run, do_rss: bool, do_cpu: bool) -> Result<()> {
    let max_peers = if do_rss { 32 } else { 8 };
    let env = TestEnv::new()?;
    let d0 = env.daemon("r0", &[]).await?;
    let idle = env.daemon("idle", &[]).await?;
    let mut partners = Vec::new();
    for i in 0..8 {
        partners.push(env.daemon(&format!("p{i}"), &[]).await?);
    }
    let pid0 = procfs::pid_of_socket(&d0.socket)?;
    let pid_idle = procfs::pid_of_socket(&idle.socket)?;
    let c0 = d0.client().await?;
    let mut ev0 = c0.subscribe(&["connection:connected"], None).await?;
    let settle = Duration::from_millis(300);
    tokio::time::sleep(settle).await;
    let mut points = vec![(0.0, procfs::rss_kib(pid0)? as f64 / 1024.0)];
    let mut members = Vec::new();
    let mut cpu = None;
    for k in 1..=max_peers {
        let room = format!("rss-{k}");
        let m = Member::join(&partners[(k - 1) % partners.len()], &room, |_| {}).await?;
        let pid = m.id.clone();
        members.push(m);
        c0.join(peerix_ipc_proto::JoinArgs::new(room.clone()))
            .await?;
        full::next_event(&mut ev0, "d0 connected", |e| {
            is(e, "connection:connected", &pid) && e.room.as_deref() == Some(room.as_str())
        })
        .await?;
        tokio::time::sleep(settle).await;
        points.push((k as f64, procfs::rss_kib(pid0)? as f64 / 1024.0));
        if k == 8 && do_cpu {
            let secs = if run.quick { 5 } else { 30 };
            tokio::time::sleep(Duration::from_secs(2)).await;
            eprintln!("  cpu: measuring idle daemons for {secs} s");
            let v = procfs::cpu_percent(&[pid0, pid_idle], Duration::from_secs(secs)).await?;
            cpu = Some((v[0], v[1], secs));
        }
    }
    if let Some((busy, idle0, secs)) = cpu {
        run.add(
            Row::new(
                "cpu",
                &format!("idle daemon CPU, 8 connected peers, {secs} s"),
                "%",
                one(busy.percent),
            )
            .baseline(
                "idle daemon, 0 peers, same window",
                Some(one(idle0.percent)),
            )
            .target("< 0.5 %", busy.percent < 0.5)
            .note(format!(
                "scheduler run time (schedstat, ns) of all threads over the window, % of one core; \
                 utime+stime ticks gave {:.2} %",
                busy.tick_percent
            )),
        );
        run.add(
            Row::new(
                "cpu",
                "idle daemon wake-ups/s, 8 connected peers",
                "/s",
                one(busy.wakeups_per_s),
            )
            .baseline("idle daemon, 0 peers", Some(one(idle0.wakeups_per_s)))
            .note("context switches of all threads per second"),
        );
        run.details.insert(
            "cpu".into(),
            json!({
                "peers8_pct": busy.percent, "peers0_pct": idle0.percent,
                "peers8_tick_pct": busy.tick_percent, "peers0_tick_pct": idle0.tick_percent,
                "peers8_wakeups_per_s": busy.wakeups_per_s, "peers0_wakeups_per_s": idle0.wakeups_per_s,
                "secs": secs
            }),
        );
    }
    if !do_rss {
        return Ok(());
    }
    // Per-room cost without peers, on the idle daemon.
    let ci = idle.client().await?;
    let mut room_pts = vec![(0.0, procfs::rss_kib(pid_idle)? as f64 / 1024.0)];
    for k in 1..=32 {
        ci.join(peerix_ipc_proto::JoinArgs::new(format!("empty-{k}")))
            .await?;
        if k % 4 == 0 {
            tokio::time::sleep(settle).await;
            room_pts.push((k as f64, procfs::rss_kib(pid_idle)? as f64 / 1024.0));
        }
    }
    // The raw stack: RtcPeer pairs in a fresh process (this one has freed buffers that new
    // connections would reuse without growing RSS).
    let raw_pts = raw_rss_child().await?;
    let fit = fit_line(&points[1..]).context("fitting RSS")?;
    let room_fit = fit_line(&room_pts).context("fitting room RSS")?;
    let raw_fit = fit_line(&raw_pts[1..]).context("fitting raw RSS")?;
    run.add(
        Row::new(
            "rss",
            "daemon RSS per connected peer (slope over 1..32, incl. its room)",
            "KiB",
            one(fit.slope * 1024.0),
        )
        .baseline(
            "raw RtcPeer per connection",
            Some(one(raw_fit.slope * 1024.0)),
        )
        .target("≤ 300 KB/peer", fit.slope * 1024.0 * 1024.0 <= 300_000.0)
        .note(format!("R² {:.2}; one two-member room per peer", fit.r2)),
    );
    run.add(Row::new(
        "rss",
        "daemon RSS per empty joined room (no peers)",
        "KiB",
        one(room_fit.slope * 1024.0),
    ));
    run.add(Row::new(
        "rss",
        "daemon RSS with 0 peers",
        "MiB",
        one(points[0].1),
    ));
    run.details.insert(
        "rss".into(),
        json!({
            "peers_mib": points, "fit": fit,
            "empty_rooms_mib": room_pts, "room_fit": room_fit,
            "raw_self_mib": raw_pts, "raw_fit": raw_fit,
        }),
    );
    run.rss_points = points;
    drop(members);
    Ok(())
}

/// Runs `peerix-bench --raw-rss-probe` and reads its (peer connections, MiB) points.
async fn raw_rss_child() -> Result<Vec<(f64, f64)>> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let out = tokio::process::Command::new(exe)
        .arg("--raw-rss-probe")
        .kill_on_drop(true)
        .output()
        .await
        .context("running the raw RSS probe")?;
    if !out.status.success() {
        bail!(
            "raw RSS probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the raw RSS probe's output")
}

/// The probe itself: 16 connected `RtcPeer` pairs, RSS after every second pair, as JSON.
async fn raw_rss_probe() -> Result<()> {
    let settle = Duration::from_millis(300);
    let mut pts = vec![(0.0, procfs::self_rss_kib()? as f64 / 1024.0)];
    let mut pairs = Vec::new();
    for k in 1..=16 {
        pairs.push(raw::RawPair::connect().await?);
        if k % 2 == 0 {
            tokio::time::sleep(settle).await;
            pts.push(((2 * k) as f64, procfs::self_rss_kib()? as f64 / 1024.0));
        }
    }
    for p in pairs {
        p.close().await;
    }
    println!("{}", serde_json::to_string(&pts)?);
    Ok(())
}

fn machine() -> serde_json::Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "kernel": read("/proc/sys/kernel/osrelease"),
        "loadavg": read("/proc/loadavg"),
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    })
}

async fn run_all(args: &Args) -> Result<Run> {
    let selected = |g: &str| args.only.is_empty() || args.only.iter().any(|o| o == g);
    for o in &args.only {
        if !GROUPS.contains(&o.as_str()) {
            bail!("unknown group {o:?}; known: {}", GROUPS.join(", "));
        }
    }
    let mut run = Run {
        quick: args.quick,
        rows: Vec::new(),
        details: serde_json::Map::new(),
        tput_series: Vec::new(),
        rss_points: Vec::new(),
        errors: Vec::new(),
    };
    let start = Instant::now();
    for g in GROUPS {
        if !selected(g) || *g == "cpu" {
            continue;
        }
        eprintln!("[{:>6.1} s] {g}", start.elapsed().as_secs_f64());
        let res = match *g {
            "throughput" => throughput(&mut run).await,
            "rtt" => rtt(&mut run).await,
            "setup" => setup(&mut run).await,
            "ipc" => ipc(&mut run).await,
            "mesh" => mesh(&mut run).await,
            "nats" => nats(&mut run).await,
            "media" => media::media(&mut run).await,
            _ => rss_cpu(&mut run, true, selected("cpu")).await,
        };
        if let Err(e) = res {
            // One broken group must not lose the others' figures; it is reported instead.
            eprintln!("  group {g} FAILED: {e:#}");
            run.errors
                .push(json!({"group": g, "error": format!("{e:#}")}));
        }
    }
    if selected("cpu") && !selected("rss") {
        eprintln!("[{:>6.1} s] cpu", start.elapsed().as_secs_f64());
        if let Err(e) = rss_cpu(&mut run, false, true).await {
            eprintln!("  group cpu FAILED: {e:#}");
            run.errors
                .push(json!({"group": "cpu", "error": format!("{e:#}")}));
        }
    }
    eprintln!("[{:>6.1} s] done", start.elapsed().as_secs_f64());
    Ok(run)
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The harness looks for `peerixd` in PEERIX_BIN_DIR, else two levels above the running
    // binary (right for test binaries in target/<profile>/deps). This binary sits directly in
    // target/<profile>, next to `peerixd`. Set before any thread exists.
    let dir = match (&args.bin_dir, std::env::var_os("PEERIX_BIN_DIR")) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(_)) => None,
        (None, None) => std::env::current_exe()
            .context("locating this binary")?
            .parent()
            .map(PathBuf::from),
    };
    if let Some(d) = dir {
        std::env::set_var("PEERIX_BIN_DIR", &d);
    }
    peerix_system_tests::bin("peerixd")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    if args.raw_rss_probe {
        return rt.block_on(raw_rss_probe());
    }
    let before = machine();
    let run = rt.block_on(run_all(&args))?;
    let after = machine();

    let table = report::markdown(&run.rows);
    println!("\n{table}");
    for e in &run.errors {
        println!("FAILED: {e}");
    }

    std::fs::create_dir_all(&args.plots)
        .with_context(|| format!("creating {}", args.plots.display()))?;
    let mut plots = Vec::new();
    if !run.tput_series.is_empty() {
        let p = args.plots.join("throughput_vs_size.png");
        plot::throughput(&p, &run.tput_series)?;
        plots.push(p);
    }
    if !run.rss_points.is_empty() {
        let p = args.plots.join("rss_vs_peers.png");
        plot::rss(
            &p,
            &run.rss_points,
            fit_line(&run.rss_points[1..]),
            "peerixd RSS vs connected peers",
        )?;
        plots.push(p);
    }
    for p in &plots {
        eprintln!("wrote {}", p.display());
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "quick": run.quick,
            "machine_before": before,
            "machine_after": after,
            "rows": run.rows,
            "details": run.details,
            "errors": run.errors,
            "plots": plots,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
