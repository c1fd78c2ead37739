//! Media figures (issue 12): RTP into daemon A's share, out of daemon B's `forward`.
//!
//! The source is this process: synthetic RTP at 2 Mbit/s (1,200-byte payloads, 208 packets/s)
//! whose payload carries a sequence number, so each packet's arrival is matched to its send
//! time on one clock. Baselines come from the same run: the same packets sent straight to the
//! receiving socket (latency), the same daemons connected but idle (CPU), and the share with
//! no peer (fan-out).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_system_tests::{is, media, DaemonProc, Member, TestEnv};
use tokio::net::UdpSocket;

use crate::report::Row;
use crate::{one, procfs, summary, Run};

/// Payload bytes per packet and packets per second: 2 Mbit/s of RTP payload.
const PAYLOAD: usize = 1200;
const PPS: u64 = 208;
const MBIT_PER_S: f64 = (PAYLOAD as u64 * 8 * PPS) as f64 / 1e6;

/// Sends `secs` seconds of RTP to `to`, recording each packet's send time by sequence number.
async fn stream(
    to: SocketAddr,
    dur: Duration,
    sent: Arc<Mutex<HashMap<u64, Instant>>>,
) -> Result<u64> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / PPS));
    let end = Instant::now() + dur;
    let mut n: u64 = 0;
    let mut packet = vec![0u8; 12 + PAYLOAD];
    packet[0] = 0x80;
    packet[1] = 96;
    packet[8..12].copy_from_slice(&0x5eed_u32.to_be_bytes());
    while Instant::now() < end {
        tick.tick().await;
        packet[2..4].copy_from_slice(&(n as u16).to_be_bytes());
        packet[4..8].copy_from_slice(&((n * 90_000 / PPS) as u32).to_be_bytes());
        packet[12..20].copy_from_slice(&n.to_be_bytes());
        if let Ok(mut s) = sent.lock() {
            s.insert(n, Instant::now());
        }
        sock.send_to(&packet, to).await?;
        n += 1;
    }
    Ok(n)
}

/// The payload offset of an RTP packet (after CSRCs and the extension block).
fn payload_at(p: &[u8]) -> Option<usize> {
    let mut at = 12 + 4 * usize::from(p.first()? & 0x0f);
    if p.first()? & 0x10 != 0 {
        let words = u16::from_be_bytes([*p.get(at + 2)?, *p.get(at + 3)?]);
        at += 4 + 4 * usize::from(words);
    }
    (at + 8 <= p.len()).then_some(at)
}

/// Receives on `sock` until 1 s passes without a packet; returns each packet's latency (ms).
async fn receive(sock: UdpSocket, sent: Arc<Mutex<HashMap<u64, Instant>>>) -> Vec<f64> {
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
        let now = Instant::now();
        let Some(at) = payload_at(&buf[..n]) else {
            continue;
        };
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&buf[at..at + 8]);
        let seq = u64::from_be_bytes(seq);
        if let Some(t) = sent.lock().ok().and_then(|s| s.get(&seq).copied()) {
            out.push(now.duration_since(t).as_secs_f64() * 1000.0);
        }
    }
    out
}

/// One trial: streams `dur` to `to` while `rx` receives; latencies (ms) and packets sent.
async fn trial(to: SocketAddr, rx: UdpSocket, dur: Duration) -> Result<(Vec<f64>, u64)> {
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let r = tokio::spawn(receive(rx, Arc::clone(&sent)));
    let n = stream(to, dur, sent).await?;
    Ok((r.await?, n))
}

async fn share(m: &Member) -> Result<SocketAddr> {
    let tracks = vec![media::share_track("vp8", true)];
    let res = m
        .client
        .share(media::share_args(&m.room, "bench", tracks))
        .await?;
    media::ingest(&res, "video")
}

fn pid(d: &DaemonProc) -> Result<u32> {
    d.pid().context("daemon pid")
}

/// CPU % (of one core) of `pids` together over `dur`.
async fn cpu(pids: &[u32], dur: Duration) -> Result<f64> {
    Ok(procfs::cpu_percent(pids, dur)
        .await?
        .iter()
        .map(|w| w.percent)
        .sum())
}

pub async fn media(run: &mut Run) -> Result<()> {
    let env = TestEnv::new()?;
    let room = "bench-media";
    let a = env.daemon("media-a", &[]).await?;
    let b = env.daemon("media-b", &[]).await?;
    let ma = Member::join(&a, room, |_| {}).await?;
    let mut mb = Member::join(&b, room, |_| {}).await?;
    let ingest = share(&ma).await?;
    let a_id = ma.id.clone();
    mb.wait_for("b connected to a", Duration::from_secs(20), |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    // The track starts at its first packet.
    let warm = tokio::spawn(stream(ingest, Duration::from_secs(2), Arc::default()));
    mb.wait_for("track:add at b", Duration::from_secs(20), |e| {
        e.name == "track:add"
    })
    .await?;
    warm.await??;

    let trials = run.pick(5, 3);
    let dur = Duration::from_secs(if run.quick { 3 } else { 6 });
    let (mut full, mut direct, mut lost) = (Vec::new(), Vec::new(), Vec::new());
    let (mut busy, mut idle) = (Vec::new(), Vec::new());
    let pids = [pid(&a)?, pid(&b)?];
    for _ in 0..trials {
        // Interleaved: straight to a socket, then through both daemons, then idle daemons.
        let rx = UdpSocket::bind("127.0.0.1:0").await?;
        let to = rx.local_addr()?;
        let (lat, _) = trial(to, rx, dur).await?;
        direct.extend(lat);

        let rx = UdpSocket::bind("127.0.0.1:0").await?;
        let to = rx.local_addr()?;
        mb.client
            .forward(room, &a_id, "bench", Some("video"), Some(to))
            .await?;
        let cpu_task = tokio::spawn(async move { cpu(&pids, dur).await });
        let (lat, n) = trial(ingest, rx, dur).await?;
        busy.push(cpu_task.await??);
        mb.client
            .forward(room, &a_id, "bench", Some("video"), None)
            .await?;
        lost.push(100.0 * (n.saturating_sub(lat.len() as u64)) as f64 / n.max(1) as f64);
        full.extend(lat);
        idle.push(cpu(&pids, dur).await?);
    }
    if full.is_empty() {
        bail!("no forwarded packet arrived");
    }
    let fs = summary(&full)?;
    let ds = summary(&direct)?;
    run.add(
        Row::new(
            "media",
            "ingest at A → forward at B, per RTP packet (p50)",
            "ms",
            fs.clone(),
        )
        .baseline("same packets straight to the socket", Some(ds.clone()))
        .target("p50 ≤ 5 ms", fs.median <= 5.0)
        .note(format!(
            "2 Mbit/s of 1,200-byte packets, {trials} interleaved trials of {dur:?}"
        )),
    );
    run.add(
        Row::new(
            "media",
            "ingest at A → forward at B (p99)",
            "ms",
            one(fs.p99),
        )
        .baseline("direct p99", Some(one(ds.p99)))
        .target("p99 ≤ 20 ms", fs.p99 <= 20.0),
    );
    run.add(Row::new(
        "media",
        "packets lost on the way",
        "%",
        summary(&lost)?,
    ));
    let bs = summary(&busy)?;
    let is_ = summary(&idle)?;
    let per_mbit = (bs.median - is_.median) / MBIT_PER_S;
    run.add(
        Row::new(
            "media",
            "CPU of A + B while forwarding 2 Mbit/s",
            "% of a core",
            bs,
        )
        .baseline("same daemons, connected, idle", Some(is_))
        .note(format!(
            "{per_mbit:.2} % of a core per forwarded Mbit/s above idle"
        )),
    );
    run.add(
        Row::new(
            "media",
            "CPU per forwarded Mbit/s (A + B, above idle)",
            "%/(Mbit/s)",
            one(per_mbit),
        )
        .target("≤ 5 %/(Mbit/s)", per_mbit <= 5.0),
    );

    // Fan-out: one 2 Mbit/s share to 0 (baseline), 1, 4 and 8 receiving daemons.
    ma.client.leave_all(room).await?;
    mb.client.leave_all(room).await?;
    let fan_room = "bench-fanout";
    let fa = env.daemon("fan-a", &[]).await?;
    let mfa = Member::join(&fa, fan_room, |_| {}).await?;
    let ingest = share(&mfa).await?;
    let fa_pid = pid(&fa)?;
    let window = Duration::from_secs(if run.quick { 3 } else { 5 });
    let mut receivers: Vec<(DaemonProc, Member)> = Vec::new();
    let mut base: Option<(f64, f64)> = None;
    let mut points: Vec<(usize, f64, f64)> = Vec::new();
    for n in [0usize, 1, 4, 8] {
        while receivers.len() < n {
            let d = env.daemon(&format!("fan-{}", receivers.len()), &[]).await?;
            let m = Member::join(&d, fan_room, |_| {}).await?;
            receivers.push((d, m));
        }
        // Time for the new daemons to connect and negotiate the share.
        tokio::time::sleep(Duration::from_secs(if n == 0 { 1 } else { 3 })).await;
        let sender = tokio::spawn(stream(
            ingest,
            window + Duration::from_secs(1),
            Arc::default(),
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let c = cpu(&[fa_pid], window).await?;
        let rss = procfs::rss_kib(fa_pid)? as f64 / 1024.0;
        sender.await??;
        points.push((n, c, rss));
        match base {
            None => {
                base = Some((c, rss));
                run.add(Row::new(
                    "media",
                    "fan-out: A's CPU, share with no peer",
                    "% of a core",
                    one(c),
                ));
            }
            Some((bc, brss)) => {
                run.add(
                    Row::new(
                        "media",
                        &format!("fan-out to {n}: A's CPU"),
                        "% of a core",
                        one(c),
                    )
                    .baseline("no peer", Some(one(bc)))
                    .target("≤ 2 % more per peer", (c - bc) / n as f64 <= 2.0),
                );
                run.add(
                    Row::new(
                        "media",
                        &format!("fan-out to {n}: A's RSS"),
                        "MiB",
                        one(rss),
                    )
                    .baseline("no peer", Some(one(brss)))
                    .target("≤ 1 MiB more per peer", (rss - brss) / n as f64 <= 1.0),
                );
            }
        }
    }
    // The first peer carries one-time costs (its connection, the first sender's buffers); what
    // each further peer adds is the slope from 1 to 8.
    if let (Some(&(_, c1, r1)), Some(&(n8, c8, r8))) = (points.get(1), points.last()) {
        let k = (n8 - 1) as f64;
        run.add(
            Row::new(
                "media",
                "fan-out: A's CPU per further peer (1 → 8)",
                "% of a core",
                one((c8 - c1) / k),
            )
            .target("≤ 2 %", (c8 - c1) / k <= 2.0),
        );
        run.add(
            Row::new(
                "media",
                "fan-out: A's RSS per further peer (1 → 8)",
                "KiB",
                one((r8 - r1) / k * 1024.0),
            )
            .target("≤ 1024 KiB", (r8 - r1) / k <= 1.0),
        );
    }
    Ok(())
}
