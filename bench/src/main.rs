//! `peerix-bench`: one run measures peerixd's performance figures as median/p95 over repeated
//! trials, beside in-run baselines (two raw `peerix_rtc::RtcPeer` processes with the daemon's
//! allocator and threading, see `fair.rs`), prints a table
//! with ratios and targets, writes JSON and two PNG plots.
//!
//! ```text
//! cargo build --release -p peerix-bench -p peerixd -p peerix-client
//! target/release/peerix-bench [--quick] [--json out.json] [--only NAME[,NAME…]]
//! ```
//!
//! Everything runs on loopback: daemons and nats-server are child processes on free ports and
//! temporary directories, killed when the run ends. Targets are informational, never asserted.

mod fair;
mod fanout;
mod footprint;
mod full;
mod groups;
mod lossy;
mod media;
mod natscount;
mod plot;
mod procfs;
mod rawchild;
mod rawproc;
mod report;
mod stages;
mod startup;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use peerix_system_tests::{is, Member, NatsServer, TestEnv};
use serde_json::json;

use report::Row;
use stats::{fit_line, Summary};

/// Benchmark groups, in the order they run.
const GROUPS: &[&str] = &[
    "throughput",
    "fanout",
    "rtt",
    "browser",
    "setup",
    "ipc",
    "mesh",
    "nats",
    "rss",
    "cpu",
    "media",
    "lossy",
    "cpu50",
    "stages",
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
    /// Run only these groups (comma-separated): throughput, fanout, rtt, browser, setup, ipc, mesh, nats,
    /// rss, cpu, media, lossy, cpu50 (these two need root: network namespaces), and `stages`
    /// (a diagnostic, only when named: where a message's time goes, `stages.rs`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Directory for the PNG plots.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/plots"))]
    plots: PathBuf,
    /// Directory holding `peerixd` (default: PEERIX_BIN_DIR, else this binary's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Internal: run as one raw baseline peer process (`rawproc.rs`), commanded on stdin.
    #[arg(long, hide = true)]
    raw_peer: bool,
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

fn size_name(len: usize) -> String {
    if len >= 1 << 20 {
        format!("{} MiB", len >> 20)
    } else {
        format!("{} KiB", len >> 10)
    }
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
    for n in [2usize, 4, 8, 16, 32] {
        let trials = if n >= 16 {
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
        if n == 32 {
            row = row.target("≤ 4 s", s.median <= 4.0 && incomplete == 0);
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
        // `stages` is a diagnostic without a baseline: only when asked for by name.
        if !selected(g) || *g == "cpu" || (*g == "stages" && args.only.is_empty()) {
            continue;
        }
        eprintln!("[{:>6.1} s] {g}", start.elapsed().as_secs_f64());
        let res = match *g {
            "throughput" => groups::throughput(&mut run).await,
            "fanout" => fanout::fanout(&mut run).await,
            "rtt" => groups::rtt(&mut run).await,
            "browser" => groups::browser(&mut run).await,
            "setup" => match groups::setup(&mut run).await {
                Ok(()) => startup::startup(&mut run).await,
                Err(e) => Err(e),
            },
            "ipc" => ipc(&mut run).await,
            "mesh" => mesh(&mut run).await,
            "nats" => nats(&mut run).await,
            "media" => media::media(&mut run).await,
            "lossy" => lossy::lossy(&mut run).await,
            "cpu50" => lossy::cpu50(&mut run).await,
            "stages" => stages::stages(&mut run).await,
            _ => footprint::rss_cpu(&mut run, true, selected("cpu")).await,
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
        if let Err(e) = footprint::rss_cpu(&mut run, false, true).await {
            eprintln!("  group cpu FAILED: {e:#}");
            run.errors
                .push(json!({"group": "cpu", "error": format!("{e:#}")}));
        }
    }
    eprintln!("[{:>6.1} s] done", start.elapsed().as_secs_f64());
    Ok(run)
}

fn main() -> Result<()> {
    // The daemon's allocator options, here too: this process is the full path's client and,
    // re-executed, the raw baseline's peers (`fair.rs` checks they match the daemon's).
    peerixd::alloc::configure();
    let args = Args::parse();
    if args.raw_peer {
        return rawchild::child_main();
    }
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

    // Both clients on one current-thread runtime, like each raw peer's application.
    let rt = fair::clients_runtime().context("building the tokio runtime")?;
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
            fit_line(&run.rss_points),
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
