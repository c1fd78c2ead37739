//! Memory and idle CPU per connected peer: one daemon with 1..=32 (RSS) and up to 64 (CPU)
//! connected peers, beside the raw stack in its own process with the daemon's allocator.

use std::time::Duration;

use anyhow::{Context as _, Result};
use peerix_system_tests::{is, Member, TestEnv};
use serde_json::json;

use crate::rawproc::RawProcs;
use crate::report::Row;
use crate::stats::fit_line;
use crate::{full, one, procfs, Run};

/// Peers of the RSS fit.
const RSS_PEERS: usize = 32;
/// Peer counts at which idle CPU is measured.
const CPU_AT: [usize; 2] = [8, 64];

/// RSS of one daemon over 0..=32 connected peers (one two-member room per peer, partners
/// spread over 8 daemons), RSS per empty room on another daemon, the raw stack's RSS per
/// connection in a raw peer process, and idle CPU with 8 and 64 peers.
pub async fn rss_cpu(run: &mut Run, do_rss: bool, do_cpu: bool) -> Result<()> {
    let max_peers = if do_cpu { CPU_AT[1] } else { RSS_PEERS };
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
    let mut cpu = Vec::new();
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
        if k <= RSS_PEERS {
            tokio::time::sleep(settle).await;
            points.push((k as f64, procfs::rss_kib(pid0)? as f64 / 1024.0));
        }
        if do_cpu && CPU_AT.contains(&k) {
            let secs = if run.quick { 5 } else { 30 };
            tokio::time::sleep(Duration::from_secs(2)).await;
            eprintln!("  cpu: measuring idle daemons with {k} peers for {secs} s");
            let v = procfs::cpu_percent(&[pid0, pid_idle], Duration::from_secs(secs)).await?;
            cpu.push((k, v[0], v[1], secs));
        }
    }
    let mut cpu_detail = Vec::new();
    for (k, busy, idle0, secs) in &cpu {
        let limit = if *k <= 8 { 0.1 } else { 0.5 };
        run.add(
            Row::new(
                "cpu",
                &format!("idle daemon CPU, {k} connected peers (same-host partners), {secs} s"),
                "%",
                one(busy.percent),
            )
            .baseline(
                "idle daemon, 0 peers, same window",
                Some(one(idle0.percent)),
            )
            .target(&format!("< {limit} %"), busy.percent < limit)
            .note(format!(
                "scheduler run time (schedstat, ns) of all threads over the window, % of one core; \
                 utime+stime ticks gave {:.2} %",
                busy.tick_percent
            )),
        );
        run.add(
            Row::new(
                "cpu",
                &format!("idle daemon wake-ups/s, {k} connected peers"),
                "/s",
                one(busy.wakeups_per_s),
            )
            .baseline("idle daemon, 0 peers", Some(one(idle0.wakeups_per_s)))
            .note("context switches of all threads per second"),
        );
        cpu_detail.push(json!({
            "peers": k, "pct": busy.percent, "peers0_pct": idle0.percent,
            "tick_pct": busy.tick_percent, "peers0_tick_pct": idle0.tick_percent,
            "wakeups_per_s": busy.wakeups_per_s, "peers0_wakeups_per_s": idle0.wakeups_per_s,
            "secs": secs
        }));
    }
    if !cpu.is_empty() {
        run.details.insert("cpu".into(), json!(cpu_detail));
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
    let raw_pts = raw_rss(pid0).await?;
    // The 0-peer point stays in both fits: the first connection's one-off cost (crypto
    // tables, the allocator's first pages for the reactor thread) is part of what a peer costs.
    let fit = fit_line(&points).context("fitting RSS")?;
    let fit1 = fit_line(&points[1..]).context("fitting RSS from 1 peer")?;
    let room_fit = fit_line(&room_pts).context("fitting room RSS")?;
    let raw_fit = fit_line(&raw_pts).context("fitting raw RSS")?;
    let raw_fit1 = fit_line(&raw_pts[1..]).context("fitting raw RSS from 1 peer")?;
    run.add(
        Row::new(
            "rss",
            "daemon RSS per connected peer (slope over 0..32, incl. its room)",
            "KiB",
            one(fit.slope * 1024.0),
        )
        .baseline(
            "raw peer process per connection, 0..32",
            Some(one(raw_fit.slope * 1024.0)),
        )
        .target("≤ 128 KiB/peer", fit.slope * 1024.0 <= 128.0)
        .note(format!(
            "R² {:.2}; one two-member room per peer; both mimalloc; over 1..32: daemon {:.0} KiB, raw {:.0} KiB",
            fit.r2,
            fit1.slope * 1024.0,
            raw_fit1.slope * 1024.0
        )),
    );
    run.add(Row::new(
        "rss",
        "daemon RSS per empty joined room (no peers)",
        "KiB",
        one(room_fit.slope * 1024.0),
    ));
    run.add(
        Row::new("rss", "daemon RSS with 0 peers", "MiB", one(points[0].1))
            .baseline("raw peer process, 0 connections", Some(one(raw_pts[0].1))),
    );
    run.details.insert(
        "rss".into(),
        json!({
            "peers_mib": points, "fit": fit, "fit_from_1": fit1,
            "empty_rooms_mib": room_pts, "room_fit": room_fit,
            "raw_a_mib": raw_pts, "raw_fit": raw_fit, "raw_fit_from_1": raw_fit1,
        }),
    );
    run.rss_points = points;
    drop(members);
    Ok(())
}

/// RSS of a fresh raw peer process (the offerer side) over 0..=32 connections to a second
/// one, after the same settling time as the daemon's points.
async fn raw_rss(daemon_pid: u32) -> Result<Vec<(f64, f64)>> {
    let settle = Duration::from_millis(300);
    let mut raw = RawProcs::start().await?;
    let (pid_a, _) = raw.pids();
    // Let it start its reactor threads, as the daemon had before its 0-peer point.
    raw.check_fair(daemon_pid)
        .await
        .context("the raw baseline does not run like the daemon")?;
    tokio::time::sleep(settle).await;
    let mut pts = vec![(0.0, procfs::rss_kib(pid_a)? as f64 / 1024.0)];
    for k in 1..=RSS_PEERS {
        raw.connect(k as u32, &[]).await?;
        tokio::time::sleep(settle).await;
        pts.push((k as f64, procfs::rss_kib(pid_a)? as f64 / 1024.0));
    }
    Ok(pts)
}
