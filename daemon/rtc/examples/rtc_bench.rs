//! Reproducible numbers for peerix-rtc on this machine (two peers in one process).
//!
//! `cargo run -p peerix-rtc --example rtc_bench [setup_trials] [tput_trials] [MiB]`
//! (the dev profile builds dependencies at opt-level 2, close to release numbers)
//!
//! Prints connection setup time (RtcPeer::new → ControlOpen on both sides, and
//! offer → ControlOpen) as median/p95, and one-channel throughput (16 KiB messages paced by
//! `buffered_amount`) with the `Udp: RcvbufErrors` delta from /proc/net/snmp.
//! Runs on a current-thread runtime, like actix; `RTC_BENCH_BUSY_MS=20` also blocks that
//! thread for 20 ms every 50 ms (a busy actix thread). `RTC_BENCH_RCVBUF=0` keeps the
//! kernel default socket buffer; `RTC_BENCH_HIGHWATER` sets the sender pacing (bytes).

use std::time::{Duration, Instant};

use bytes::Bytes;
use peerix_rtc::loopback::{self, LoopbackPair};
use peerix_rtc::{ChannelEvent, ChannelInit, RtcConfig, RtcEvent};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn config() -> RtcConfig {
    RtcConfig {
        ice_servers: vec![],
        relay_only: false,
        mdns: true,
        // RTC_BENCH_RCVBUF=0 measures the kernel default socket buffer.
        udp_recv_buffer: std::env::var("RTC_BENCH_RCVBUF")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4 * 1024 * 1024),
        ..RtcConfig::default()
    }
}

/// Sum of `Udp:` and `Udp6:`-less `RcvbufErrors` from /proc/net/snmp (0 if unreadable).
fn rcvbuf_errors() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    if udp.len() < 2 {
        return 0;
    }
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let values: Vec<&str> = udp[1].split_whitespace().collect();
    names
        .iter()
        .position(|n| *n == "RcvbufErrors")
        .and_then(|i| values.get(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn connect() -> Result<LoopbackPair, BoxError> {
    Ok(loopback::connect(&config(), Duration::from_secs(10)).await?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn throughput(total: usize) -> Result<(f64, u64), BoxError> {
    const PIECE: usize = 16 * 1024;
    // RTC_BENCH_HIGHWATER: how far the sender may run ahead of acknowledgements (bytes).
    let high_water: usize = std::env::var("RTC_BENCH_HIGHWATER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024 * 1024);
    let mut pair = connect().await?;
    let a_chat = pair
        .a
        .create_channel("bench", ChannelInit::default())
        .await?;
    let b_chat = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = pair.b_events.recv().await {
            if let RtcEvent::RemoteChannel(c) = ev {
                return Some(c);
            }
        }
        None
    })
    .await?
    .ok_or("no remote channel")?;
    let mut a_ev = a_chat.take_events().ok_or("events taken")?;
    let mut b_ev = b_chat.take_events().ok_or("events taken")?;
    while let Some(ev) = a_ev.recv().await {
        if ev == ChannelEvent::Open {
            break;
        }
    }
    // Drain the sender's events (BufferedAmountLow) so they do not pile up.
    tokio::spawn(async move { while a_ev.recv().await.is_some() {} });

    let errors_before = rcvbuf_errors();
    let receiver = tokio::spawn(async move {
        let mut got = 0usize;
        while got < total {
            match b_ev.recv().await {
                Some(ChannelEvent::Message { data, .. }) => got += data.len(),
                Some(_) => {}
                None => break,
            }
        }
        got
    });
    let start = Instant::now();
    let piece = Bytes::from(vec![0x5au8; PIECE]);
    let mut sent = 0usize;
    while sent < total {
        while a_chat.buffered_amount().await >= high_water {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        a_chat.send(piece.clone()).await?;
        sent += PIECE;
    }
    let got = tokio::time::timeout(Duration::from_secs(120), receiver).await??;
    let secs = start.elapsed().as_secs_f64();
    let errors = rcvbuf_errors().saturating_sub(errors_before);
    pair.a.close().await;
    pair.b.close().await;
    Ok((got as f64 / secs / 1e6, errors))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let mut args = std::env::args().skip(1);
    let setup_trials: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let tput_trials: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);

    // RTC_BENCH_BUSY_MS=n: block the runtime thread for n ms every 50 ms, like an actix
    // thread busy with other actors, to show the drivers do not depend on it.
    if let Some(busy) = std::env::var("RTC_BENCH_BUSY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                std::thread::sleep(Duration::from_millis(busy));
            }
        });
    }

    // RTC_BENCH_IDLE_SECS=n: connect RTC_BENCH_IDLE_PAIRS pairs (default 4), then measure
    // the process CPU time over n idle seconds.
    if let Some(secs) = std::env::var("RTC_BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let pairs: usize = std::env::var("RTC_BENCH_IDLE_PAIRS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        let mut keep = Vec::new();
        for _ in 0..pairs {
            keep.push(connect().await?);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = cpu_ticks();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let ticks = cpu_ticks().saturating_sub(before);
        // USER_HZ is 100 on Linux.
        let pct = ticks as f64 / (secs as f64 * 100.0) * 100.0;
        println!(
            "idle: {pairs} pairs ({} connections) for {secs} s: {ticks} ticks = {pct:.2} % CPU",
            pairs * 2
        );
        return Ok(());
    }

    let mut new_to_open = Vec::new();
    let mut offer_to_open = Vec::new();
    for _ in 0..setup_trials {
        let pair = connect().await?;
        tracing::info!("trial done: offer->open {:?}", pair.offer_to_open);
        new_to_open.push(pair.setup);
        offer_to_open.push(pair.offer_to_open);
        pair.a.close().await;
        pair.b.close().await;
    }
    new_to_open.sort();
    offer_to_open.sort();
    println!(
        "setup new->ControlOpen(both): median {:?} p95 {:?} | offer->ControlOpen: median {:?} p95 {:?} (n={setup_trials})",
        percentile(&new_to_open, 0.5),
        percentile(&new_to_open, 0.95),
        percentile(&offer_to_open, 0.5),
        percentile(&offer_to_open, 0.95),
    );
    println!("  all offer->open: {offer_to_open:?}");

    for trial in 0..tput_trials {
        let (mbps, errors) = throughput(mib * 1024 * 1024).await?;
        println!(
            "throughput trial {trial}: {mib} MiB at {mbps:.1} MB/s, Udp RcvbufErrors +{errors}"
        );
    }
    Ok(())
}

/// utime + stime of this process in clock ticks, from /proc/self/stat (0 if unreadable).
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}
