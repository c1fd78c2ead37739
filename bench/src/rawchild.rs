//! The child side of the raw baseline (`rawproc.rs`): one raw peer process, run as
//! `peerix-bench --raw-peer` like the daemon (current-thread runtime on the main thread,
//! reactor threads for the connections, the daemon's allocator and settings from `fair.rs`),
//! commanded with JSON lines on stdin, answering with JSON lines on stdout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use peerix_rtc::{
    ChannelEvent, ChannelInit, IceCandidateInit, IceState, RtcChannel, RtcConfig, RtcEvent, RtcPeer,
};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{mpsc, Notify};

use crate::fair;
use crate::rawproc::{
    now_ms, payload, ChildInfo, Cmd, Ev, Mark, Sig, BATCH_BYTES, BATCH_MESSAGES, CHUNK, HIGH_WATER,
    LOW_WATER, STEP,
};

struct Chan {
    ch: RtcChannel,
    low: Notify,
    open: AtomicBool,
    opened: Notify,
    lens: tokio::sync::Mutex<mpsc::UnboundedReceiver<usize>>,
}

type Chans = Arc<Mutex<HashMap<String, Arc<Chan>>>>;

struct Conn {
    peer: RtcPeer,
    offerer: bool,
    remote_set: bool,
    pending: Vec<IceCandidateInit>,
    chans: Chans,
}

type Out = mpsc::UnboundedSender<Ev>;

/// `peerix-bench --raw-peer`: runs like the daemon (current-thread runtime on the main
/// thread, reactor threads for the connections unless the daemon's configuration drives them
/// inline) until stdin closes.
pub fn child_main() -> Result<()> {
    let settings = fair::raw_settings();
    if settings.runtime != fair::RUNTIME_CURRENT_THREAD {
        bail!("unsupported runtime {}", settings.runtime);
    }
    // The daemon's actor thread runtime (`main.rs`): current-thread, aligned to the timer grid;
    // with `inline_drivers` the connections are driven on it.
    let rt = peerix_rtc::aligned_runtime().context("building the raw peer's runtime")?;
    rt.block_on(child())
}

async fn child() -> Result<()> {
    let cfg = fair::raw_rtc_config();
    if std::env::var_os(crate::rawproc::STOCK_TIMERS_ENV).is_some() {
        peerix_rtc::use_stock_timers();
    }
    // As the daemon does at start (`run.rs`), before any connection.
    if !cfg.inline_drivers {
        peerix_rtc::start_reactors(cfg.reactor_threads);
    }
    let (out, mut out_rx) = mpsc::unbounded_channel::<Ev>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(ev) = out_rx.recv().await {
            let Ok(mut line) = serde_json::to_vec(&ev) else {
                continue;
            };
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut conns: HashMap<u32, Conn> = HashMap::new();
    while let Some(line) = lines.next_line().await? {
        let cmd: Cmd = serde_json::from_str(&line).context("parsing a raw peer command")?;
        let conn = match &cmd {
            Cmd::New { conn, .. }
            | Cmd::Remote { conn, .. }
            | Cmd::Expect { conn, .. }
            | Cmd::Send { conn, .. }
            | Cmd::Rtt { conn, .. }
            | Cmd::Close { conn } => Some(*conn),
            Cmd::Info => None,
        };
        if let Err(e) = handle(cmd, &mut conns, &out, &cfg).await {
            let _ = out.send(Ev::Error {
                conn,
                error: format!("{e:#}"),
            });
        }
    }
    for (_, c) in conns.drain() {
        c.peer.close().await;
    }
    drop(out);
    let _ = writer.await;
    Ok(())
}

fn mark(out: &Out, conn: u32, mark: Mark) {
    let _ = out.send(Ev::Mark {
        conn,
        mark,
        t_ms: now_ms(),
    });
}

async fn handle(
    cmd: Cmd,
    conns: &mut HashMap<u32, Conn>,
    out: &Out,
    cfg: &RtcConfig,
) -> Result<()> {
    match cmd {
        Cmd::New {
            conn,
            offer,
            labels,
        } => {
            mark(out, conn, Mark::New);
            let (tx, rx) = mpsc::unbounded_channel();
            let peer = RtcPeer::new(cfg, tx).await?;
            let chans: Chans = Arc::default();
            let first_open = Arc::new(AtomicBool::new(false));
            // The offerer opens the labels when its control channel opens, as the daemon's
            // impolite side does (`peerix_proto` `control_opened`).
            let opener = offer.then(|| (peer.clone(), labels));
            tokio::spawn(peer_events(
                conn,
                rx,
                out.clone(),
                Arc::clone(&chans),
                first_open,
                opener,
            ));
            if offer {
                let d = peer.create_offer().await?;
                let _ = out.send(Ev::Sig {
                    conn,
                    sig: Sig::Description(d),
                });
            }
            conns.insert(
                conn,
                Conn {
                    peer,
                    offerer: offer,
                    remote_set: false,
                    pending: Vec::new(),
                    chans,
                },
            );
        }
        Cmd::Remote { conn, sig } => {
            let c = conns
                .get_mut(&conn)
                .ok_or_else(|| anyhow!("no connection {conn}"))?;
            match sig {
                Sig::Description(d) => {
                    c.peer.set_remote_description(d).await?;
                    c.remote_set = true;
                    for cand in std::mem::take(&mut c.pending) {
                        // A refused candidate only means that pair is not used.
                        let _ = c.peer.add_ice_candidate(cand).await;
                    }
                    if !c.offerer {
                        let d = c.peer.create_answer().await?;
                        let _ = out.send(Ev::Sig {
                            conn,
                            sig: Sig::Description(d),
                        });
                    }
                }
                Sig::Candidate(cand) if c.remote_set => {
                    let _ = c.peer.add_ice_candidate(cand).await;
                }
                Sig::Candidate(cand) => c.pending.push(cand),
            }
        }
        Cmd::Expect { conn, label, bytes } => {
            let chans = chans_of(conns, conn)?;
            let out = out.clone();
            tokio::spawn(async move {
                let r = async {
                    let chan = find_chan(&chans, &label).await?;
                    let mut lens = chan.lens.lock().await;
                    let _ = out.send(Ev::Armed { conn });
                    let mut got = 0usize;
                    while got < bytes {
                        got += tokio::time::timeout(Duration::from_secs(120), lens.recv())
                            .await
                            .map_err(|_| anyhow!("raw transfer did not complete in 120 s"))?
                            .ok_or_else(|| anyhow!("channel {label} closed"))?;
                    }
                    let _ = out.send(Ev::Received {
                        conn,
                        t_end_ms: now_ms(),
                    });
                    anyhow::Ok(())
                };
                if let Err(e) = r.await {
                    let _ = out.send(Ev::Error {
                        conn: Some(conn),
                        error: format!("{e:#}"),
                    });
                }
            });
        }
        Cmd::Send {
            conn,
            label,
            size,
            count,
        } => {
            let chans = chans_of(conns, conn)?;
            let out = out.clone();
            tokio::spawn(async move {
                let r = async {
                    let chan = find_chan(&chans, &label).await?;
                    let data = Bytes::from(payload(size));
                    let t_start_ms = now_ms();
                    send_all_paced(&chan, &data, count).await?;
                    let _ = out.send(Ev::Sent { conn, t_start_ms });
                    anyhow::Ok(())
                };
                if let Err(e) = r.await {
                    let _ = out.send(Ev::Error {
                        conn: Some(conn),
                        error: format!("{e:#}"),
                    });
                }
            });
        }
        Cmd::Rtt {
            conn,
            label,
            warmup,
            n,
        } => {
            let chans = chans_of(conns, conn)?;
            let out = out.clone();
            tokio::spawn(async move {
                let r = async {
                    let chan = find_chan(&chans, &label).await?;
                    let mut lens = chan.lens.lock().await;
                    let msg = Bytes::from_static(b"0123456789abcdef");
                    let mut ms = Vec::with_capacity(n);
                    for i in 0..warmup + n {
                        let t0 = Instant::now();
                        chan.ch.send(msg.clone()).await?;
                        tokio::time::timeout(STEP, lens.recv())
                            .await
                            .map_err(|_| anyhow!("raw echo timed out"))?
                            .ok_or_else(|| anyhow!("channel closed during RTT"))?;
                        if i >= warmup {
                            ms.push(t0.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    let _ = out.send(Ev::Rtt { conn, ms });
                    anyhow::Ok(())
                };
                if let Err(e) = r.await {
                    let _ = out.send(Ev::Error {
                        conn: Some(conn),
                        error: format!("{e:#}"),
                    });
                }
            });
        }
        Cmd::Close { conn } => {
            if let Some(c) = conns.remove(&conn) {
                c.peer.close().await;
            }
            let _ = out.send(Ev::Closed { conn });
        }
        Cmd::Info => {
            let flavor = fair::flavor_name(&tokio::runtime::Handle::current()).to_string();
            let _ = out.send(Ev::Info(ChildInfo {
                settings: fair::raw_settings(),
                heap_mimalloc: fair::heap_is_mimalloc(),
                reactor_threads: fair::reactor_threads(std::process::id()),
                runtime_flavor: flavor,
            }));
        }
    }
    Ok(())
}

fn chans_of(conns: &HashMap<u32, Conn>, conn: u32) -> Result<Chans> {
    conns
        .get(&conn)
        .map(|c| Arc::clone(&c.chans))
        .ok_or_else(|| anyhow!("no connection {conn}"))
}

/// The channel `label`, once it exists and is open (the answerer learns of it in-band).
async fn find_chan(chans: &Chans, label: &str) -> Result<Arc<Chan>> {
    let deadline = Instant::now() + STEP;
    let chan = loop {
        let found = chans.lock().ok().and_then(|m| m.get(label).cloned());
        if let Some(c) = found {
            break c;
        }
        if Instant::now() > deadline {
            bail!("channel {label} did not appear");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    {
        let wait = chan.opened.notified();
        if !chan.open.load(Ordering::Acquire) {
            tokio::time::timeout(STEP, wait)
                .await
                .map_err(|_| anyhow!("channel {label} did not open"))?;
        }
    }
    Ok(chan)
}

/// Sends `count` copies of `data` as the daemon's lane sends messages queued together: small
/// ones in batches (`BATCH_MESSAGES`, `BATCH_BYTES`), each batch after one wait for buffer
/// room and in one `send_many`; larger ones one by one (`send_paced`).
async fn send_all_paced(chan: &Chan, data: &Bytes, count: usize) -> Result<()> {
    if data.len() > BATCH_BYTES {
        for _ in 0..count {
            send_paced(chan, data).await?;
        }
        return Ok(());
    }
    let per_batch = (BATCH_BYTES / data.len().max(1)).clamp(1, BATCH_MESSAGES);
    let mut left = count;
    while left > 0 {
        let n = per_batch.min(left);
        wait_for_room(chan, n * data.len()).await?;
        chan.ch
            .send_many(std::iter::repeat_n(data.clone(), n))
            .await?;
        left -= n;
    }
    Ok(())
}

/// Sends one message as the daemon's `ChannelActor` does: 16 320-byte frames, waiting while
/// buffered + frame > 1 MiB, woken by `BufferedAmountLow` at 256 KiB or every 5 ms.
async fn send_paced(chan: &Chan, data: &Bytes) -> Result<()> {
    let mut off = 0;
    while off < data.len() {
        let end = (off + CHUNK).min(data.len());
        let frame = data.slice(off..end);
        wait_for_room(chan, frame.len()).await?;
        chan.ch.send(frame).await?;
        off = end;
    }
    Ok(())
}

/// Waits while buffered + `bytes` > 1 MiB, woken by `BufferedAmountLow` or every 5 ms.
async fn wait_for_room(chan: &Chan, bytes: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while chan.ch.buffered_amount().await + bytes > HIGH_WATER {
        if Instant::now() > deadline {
            bail!("raw send buffer did not drain within 10 s");
        }
        let wait = chan.low.notified();
        tokio::select! { _ = wait => {}, _ = tokio::time::sleep(Duration::from_millis(5)) => {} }
    }
    Ok(())
}

fn add_chan(
    conn: u32,
    ch: RtcChannel,
    echo: bool,
    out: &Out,
    chans: &Chans,
    first_open: &Arc<AtomicBool>,
) -> Result<()> {
    let mut events = ch
        .take_events()
        .ok_or_else(|| anyhow!("channel events already taken"))?;
    let (len_tx, len_rx) = mpsc::unbounded_channel();
    ch.set_buffered_amount_low_threshold(LOW_WATER);
    let chan = Arc::new(Chan {
        ch: ch.clone(),
        low: Notify::new(),
        open: AtomicBool::new(false),
        opened: Notify::new(),
        lens: tokio::sync::Mutex::new(len_rx),
    });
    if let Ok(mut m) = chans.lock() {
        m.insert(ch.label().to_string(), Arc::clone(&chan));
    }
    let out = out.clone();
    let first_open = Arc::clone(first_open);
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                ChannelEvent::Open => {
                    chan.open.store(true, Ordering::Release);
                    chan.opened.notify_waiters();
                    if !first_open.swap(true, Ordering::AcqRel) {
                        mark(&out, conn, Mark::UserOpen);
                    }
                }
                ChannelEvent::Message { data, .. } if echo => {
                    if chan.ch.send(data).await.is_err() {
                        return;
                    }
                }
                ChannelEvent::Message { data, .. } => {
                    let _ = len_tx.send(data.len());
                }
                ChannelEvent::BufferedAmountLow => chan.low.notify_one(),
                ChannelEvent::Closed | ChannelEvent::Error(_) => return,
            }
        }
    });
    Ok(())
}

async fn peer_events(
    conn: u32,
    mut rx: mpsc::UnboundedReceiver<RtcEvent>,
    out: Out,
    chans: Chans,
    first_open: Arc<AtomicBool>,
    opener: Option<(RtcPeer, Vec<String>)>,
) {
    let mut connected = false;
    while let Some(ev) = rx.recv().await {
        match ev {
            RtcEvent::LocalCandidate(c) => {
                let _ = out.send(Ev::Sig {
                    conn,
                    sig: Sig::Candidate(c),
                });
            }
            RtcEvent::IceState(IceState::Connected) if !connected => {
                connected = true;
                mark(&out, conn, Mark::Connected);
            }
            RtcEvent::ControlOpen => {
                mark(&out, conn, Mark::Control);
                for label in opener.iter().flat_map(|(_, l)| l) {
                    let Some((peer, _)) = &opener else { break };
                    let made = match peer.create_channel(label, ChannelInit::default()).await {
                        Ok(ch) => add_chan(conn, ch, false, &out, &chans, &first_open),
                        Err(e) => Err(e.into()),
                    };
                    if let Err(e) = made {
                        let _ = out.send(Ev::Error {
                            conn: Some(conn),
                            error: format!("{e:#}"),
                        });
                    }
                }
            }
            RtcEvent::RemoteChannel(ch) => {
                let echo = ch.label().starts_with("rtt");
                if let Err(e) = add_chan(conn, ch, echo, &out, &chans, &first_open) {
                    let _ = out.send(Ev::Error {
                        conn: Some(conn),
                        error: format!("{e:#}"),
                    });
                }
            }
            RtcEvent::Closed => return,
            _ => {}
        }
    }
}
