//! One 32 MiB message to 8 peers at once: the full path (one daemon, 8 partner daemons, one
//! `send_stream` to the whole room) beside 8 raw connections between the two raw peer
//! processes sending at once; aggregate rate and CPU-seconds per GB delivered.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_client::{MessageAssembler, SendOptions};
use peerix_system_tests::{field, is, Member, TestEnv};
use serde_json::json;

use crate::rawproc::{payload, RawProcs};
use crate::report::Row;
use crate::{full, procfs, summary, Run};

const PEERS: usize = 8;
const LEN: usize = 32 << 20;
const LABEL: &str = "fan";

/// CPU nanoseconds of all threads of `pids`, summed.
fn cpu_ns(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| procfs::sched_totals(*p))
        .map(|(ns, _)| ns)
        .sum()
}

/// The group.
pub async fn fanout(run: &mut Run) -> Result<()> {
    let trials = run.pick(3, 2);
    let env = TestEnv::new()?;
    let da = env.daemon("fa", &[]).await?;
    let mut partners = Vec::new();
    for i in 0..PEERS {
        partners.push(env.daemon(&format!("f{i}"), &[]).await?);
    }
    let mut pids = vec![procfs::pid_of_socket(&da.socket)?];
    for p in &partners {
        pids.push(procfs::pid_of_socket(&p.socket)?);
    }
    let room = "fanout";
    let mut a = Member::join(&da, room, |_| {}).await?;
    let mut bs = Vec::new();
    for p in &partners {
        bs.push(Member::join(p, room, |_| {}).await?);
    }
    for b in &bs {
        let id = b.id.clone();
        a.wait_for("a sees a partner", full::STEP, |e| {
            is(e, "connection:connected", &id)
        })
        .await?;
    }
    a.open(LABEL).await?;
    let a_id = a.id.clone();
    for b in &mut bs {
        b.wait_for("fan channel open", full::STEP, |e| {
            is(e, "channel:open", &a_id) && field(e, "label") == Some(LABEL)
        })
        .await?;
    }
    let mut raw = RawProcs::start().await?;
    for k in 0..PEERS as u32 {
        raw.connect(k, &[LABEL]).await?;
    }
    let (ra, rb) = raw.pids();
    let conns: Vec<u32> = (0..PEERS as u32).collect();
    let data = payload(LEN);
    let (mut f_rate, mut f_cpu, mut r_rate, mut r_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let gb = (LEN * PEERS) as f64 / 1e9;
    // One warm-up each, then interleaved trials.
    for i in 0..=trials {
        let c0 = cpu_ns(&pids);
        let d = send_all(&a, &mut bs, &data).await?;
        let cpu = (cpu_ns(&pids) - c0) as f64 / 1e9;
        let c0r = cpu_ns(&[ra, rb]);
        let dr = raw.transfer_all(&conns, LABEL, LEN).await?;
        let cpur = (cpu_ns(&[ra, rb]) - c0r) as f64 / 1e9;
        if i > 0 {
            f_rate.push(gb * 1e3 / d.as_secs_f64());
            f_cpu.push(cpu / gb);
            r_rate.push(gb * 1e3 / dr.as_secs_f64());
            r_cpu.push(cpur / gb);
        }
    }
    let (fr, fc, rr, rc) = (
        summary(&f_rate)?,
        summary(&f_cpu)?,
        summary(&r_rate)?,
        summary(&r_cpu)?,
    );
    run.add(
        Row::new(
            "fanout",
            "one 32 MiB message to 8 peers at once, aggregate",
            "MB/s",
            fr,
        )
        .baseline("8 raw connections sending at once", Some(rr))
        .note("full path: one send_stream to the room, until all 8 receiving clients assembled it"),
    );
    run.add(
        Row::new(
            "fanout",
            "CPU-seconds per GB delivered (all 9 daemons)",
            "s/GB",
            fc,
        )
        .baseline("both raw processes", Some(rc))
        .note(
            "scheduler run time of every thread over the transfer; the bench's clients not counted",
        ),
    );
    run.details.insert(
        "fanout".into(),
        json!({"full_mb_s": f_rate, "full_cpu_s_per_gb": f_cpu, "raw_mb_s": r_rate, "raw_cpu_s_per_gb": r_cpu}),
    );
    Ok(())
}

/// A streams `data` to the whole room; the time until every partner's client assembled it.
async fn send_all(a: &Member, bs: &mut [Member], data: &[u8]) -> Result<Duration> {
    let a_id = a.id.clone();
    let start = Instant::now();
    let send = async {
        let r = a
            .client
            .send_stream(
                &a.room,
                LABEL,
                data,
                Some(data.len() as u64),
                SendOptions::default(),
                |_| {},
            )
            .await?;
        let peers = r.peers.unwrap_or_default();
        if peers.len() != PEERS || !peers.iter().all(|p| p.ok) {
            bail!("fan-out not acknowledged by all peers: {peers:?}");
        }
        anyhow::Ok(())
    };
    let recvs = bs.iter_mut().map(|b| {
        let a_id = a_id.clone();
        async move {
            let mut asm = MessageAssembler::new();
            loop {
                let ev = full::next_event(&mut b.events, "fan-out parts", |e| {
                    e.name == "channel:message"
                        && field(e, "label") == Some(LABEL)
                        && field(e, "peer") == Some(a_id.as_str())
                })
                .await?;
                if let Some(msg) = asm.push_owned(ev).context("assembling")? {
                    let len = match msg.data {
                        peerix_client::MessageData::Bytes(b) => b.len(),
                        other => bail!("expected bytes, got {other:?}"),
                    };
                    if len != LEN {
                        bail!("received {len} bytes of {LEN}");
                    }
                    return anyhow::Ok(Instant::now());
                }
            }
        }
    });
    let (sent, ends) = tokio::join!(send, futures::future::try_join_all(recvs));
    sent?;
    let last = ends?.into_iter().max().context("no receivers")?;
    Ok(last.duration_since(start))
}
