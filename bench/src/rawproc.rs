//! The raw baseline in two processes, as the full path has two daemons: this binary
//! re-executed as `peerix-bench --raw-peer`, once per side, each with the daemon's allocator,
//! runtime flavour, reactor threads and connection settings (`fair.rs`). The parent relays
//! descriptions and candidates between them (no signaling server, no IPC, no Peerix framing)
//! and sends commands; each child answers with timestamped events on stdout (JSON lines).
//!
//! Times that span both processes (setup, transfer) are taken from the wall clock in each
//! child (one host, one clock); round trips are timed inside the sending child.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use peerix_rtc::{IceCandidateInit, SessionDescription};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;

use crate::fair;

/// The daemon's chunk size for data-channel frames (`peerix_wire::transfer::Chunker`).
pub(crate) const CHUNK: usize = 16_320;
/// The daemon's send-buffer high-water mark (`daemon/src/actors/channel.rs`).
pub(crate) const HIGH_WATER: usize = 1 << 20;
/// The daemon's batches of small messages queued together (`run_lane`): at most so many
/// messages of at most so many bytes in all, per wait for buffer room and `send_many`.
pub(crate) use peerixd::actors::send_path::{BATCH_BYTES, BATCH_MESSAGES};
/// The daemon's low-water threshold (`BufferedAmountLow`).
pub(crate) const LOW_WATER: usize = 256 << 10;
/// Per-step timeout (generous: the machine is shared).
pub(crate) const STEP: Duration = Duration::from_secs(30);

/// Parent → child.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Cmd {
    /// Create connection `conn`; the offerer creates `labels` once its control channel is open.
    New {
        conn: u32,
        offer: bool,
        labels: Vec<String>,
    },
    /// A description or candidate from the other process.
    Remote { conn: u32, sig: Sig },
    /// Get ready to count `bytes` on `label` (answers `Armed`, then `Received`).
    Expect {
        conn: u32,
        label: String,
        bytes: usize,
    },
    /// Send `count` messages of `size` bytes in daemon-sized frames with the daemon's pacing.
    Send {
        conn: u32,
        label: String,
        size: usize,
        count: usize,
    },
    /// 16-byte round trips (the other side echoes on labels starting with `rtt`).
    Rtt {
        conn: u32,
        label: String,
        warmup: usize,
        n: usize,
    },
    /// Close connection `conn`.
    Close { conn: u32 },
    /// Report how this process runs.
    Info,
}

/// Signaling between the two processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Sig {
    Description(SessionDescription),
    Candidate(IceCandidateInit),
}

/// Setup points, each reported once per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mark {
    /// Just before `RtcPeer::new`.
    New,
    /// ICE connected.
    Connected,
    /// Control channel open.
    Control,
    /// First user channel open.
    UserOpen,
}

/// Child → parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub(crate) enum Ev {
    Sig { conn: u32, sig: Sig },
    Mark { conn: u32, mark: Mark, t_ms: f64 },
    Armed { conn: u32 },
    Sent { conn: u32, t_start_ms: f64 },
    Received { conn: u32, t_end_ms: f64 },
    Rtt { conn: u32, ms: Vec<f64> },
    Closed { conn: u32 },
    Info(ChildInfo),
    Error { conn: Option<u32>, error: String },
}

/// How a raw peer process actually runs (reported by the child itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildInfo {
    /// Its settings (`fair::raw_settings` in the child).
    pub settings: fair::Settings,
    /// Whether its heap is served by mimalloc.
    pub heap_mimalloc: bool,
    /// `webrtc-rx*` threads running in it.
    pub reactor_threads: usize,
    /// Its tokio runtime flavour, named by [`crate::fair::flavor_name`].
    pub runtime_flavor: String,
}

pub(crate) fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

/// Deterministic payload bytes (also used for the full path).
pub fn payload(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

// The parent side; the child side is `rawchild.rs`.

struct Proc {
    _child: tokio::process::Child,
    pid: u32,
    cmds: mpsc::UnboundedSender<Cmd>,
    events: mpsc::UnboundedReceiver<Ev>,
}

/// Setup of one raw connection across the two processes, in ms from the earlier `new`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Setup {
    /// `new` → ICE connected on both sides.
    pub connected_ms: f64,
    /// `new` → control channel open on both sides.
    pub control_ms: f64,
    /// `new` → first user channel open on both sides (NaN without labels).
    pub user_open_ms: f64,
}

/// Two raw peer processes; connection `k` has its offerer in A and its answerer in B.
pub struct RawProcs {
    a: Proc,
    b: Proc,
}

/// Where and how the two raw processes run (the default: the host's namespace, the daemon's
/// timers).
#[derive(Debug, Clone, Default)]
pub struct RawOpts {
    /// Network namespaces of A and B (`ip netns exec`), for the lossy-path rows.
    pub netns: [Option<String>; 2],
    /// The stack's stock timers (`peerix_rtc::use_stock_timers`) instead of the daemon's.
    pub stock_timers: bool,
}

/// Set in a raw peer's environment when it should use the stack's stock timers.
pub(crate) const STOCK_TIMERS_ENV: &str = "PEERIX_BENCH_STOCK_TIMERS";

impl RawProcs {
    /// Starts both processes.
    pub async fn start() -> Result<RawProcs> {
        Self::start_with(&RawOpts::default()).await
    }

    /// Starts both processes as `opts` says.
    pub async fn start_with(opts: &RawOpts) -> Result<RawProcs> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let (a_cmds, a_cmd_rx) = mpsc::unbounded_channel();
        let (b_cmds, b_cmd_rx) = mpsc::unbounded_channel();
        let a = spawn_proc(&exe, opts, 0, a_cmds.clone(), a_cmd_rx, b_cmds.clone())?;
        let b = spawn_proc(&exe, opts, 1, b_cmds, b_cmd_rx, a_cmds)?;
        Ok(RawProcs { a, b })
    }

    /// Pids of A (offerers) and B (answerers).
    pub fn pids(&self) -> (u32, u32) {
        (self.a.pid, self.b.pid)
    }

    /// Connects connection `conn` (A offers and opens `labels` when its control channel opens,
    /// as the daemon does) and waits until
    /// the first user channel (or, without labels, the control channel) is open on both
    /// sides; returns when each point was reached.
    pub async fn connect(&mut self, conn: u32, labels: &[&str]) -> Result<Setup> {
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        let last = if labels.is_empty() {
            Mark::Control
        } else {
            Mark::UserOpen
        };
        send(
            &self.b,
            Cmd::New {
                conn,
                offer: false,
                labels: Vec::new(),
            },
        )?;
        send(
            &self.a,
            Cmd::New {
                conn,
                offer: true,
                labels,
            },
        )?;
        let ma = marks(&mut self.a, conn, last).await?;
        let mb = marks(&mut self.b, conn, last).await?;
        let t0 = ma[&Mark::New].min(mb[&Mark::New]);
        let both = |m: Mark| match (ma.get(&m), mb.get(&m)) {
            (Some(a), Some(b)) => a.max(*b) - t0,
            _ => f64::NAN,
        };
        Ok(Setup {
            connected_ms: both(Mark::Connected),
            control_ms: both(Mark::Control),
            user_open_ms: both(Mark::UserOpen),
        })
    }

    /// Sends `count` messages of `size` bytes A→B on `label`; the time from A's first send
    /// until B had every byte.
    pub async fn transfer(
        &mut self,
        conn: u32,
        label: &str,
        size: usize,
        count: usize,
    ) -> Result<Duration> {
        send(
            &self.b,
            Cmd::Expect {
                conn,
                label: label.into(),
                bytes: size * count,
            },
        )?;
        wait(&mut self.b, "armed", |e| {
            matches!(e, Ev::Armed { conn: c } if *c == conn).then_some(())
        })
        .await?;
        send(
            &self.a,
            Cmd::Send {
                conn,
                label: label.into(),
                size,
                count,
            },
        )?;
        let t0 = wait(&mut self.a, "sent", |e| match e {
            Ev::Sent {
                conn: c,
                t_start_ms,
            } if *c == conn => Some(*t_start_ms),
            _ => None,
        })
        .await?;
        let t1 = wait(&mut self.b, "received", |e| match e {
            Ev::Received { conn: c, t_end_ms } if *c == conn => Some(*t_end_ms),
            _ => None,
        })
        .await?;
        Ok(Duration::from_secs_f64(((t1 - t0) / 1e3).max(0.0)))
    }

    /// The same transfer on several connections at once; the time from the first send until
    /// the last byte arrived on any of them.
    pub async fn transfer_all(
        &mut self,
        conns: &[u32],
        label: &str,
        size: usize,
    ) -> Result<Duration> {
        for &conn in conns {
            send(
                &self.b,
                Cmd::Expect {
                    conn,
                    label: label.into(),
                    bytes: size,
                },
            )?;
        }
        for _ in conns {
            wait(&mut self.b, "armed", |e| {
                matches!(e, Ev::Armed { .. }).then_some(())
            })
            .await?;
        }
        for &conn in conns {
            send(
                &self.a,
                Cmd::Send {
                    conn,
                    label: label.into(),
                    size,
                    count: 1,
                },
            )?;
        }
        let mut t0 = f64::MAX;
        for _ in conns {
            let t = wait(&mut self.a, "sent", |e| match e {
                Ev::Sent { t_start_ms, .. } => Some(*t_start_ms),
                _ => None,
            })
            .await?;
            t0 = t0.min(t);
        }
        let mut t1 = f64::MIN;
        for _ in conns {
            let t = wait(&mut self.b, "received", |e| match e {
                Ev::Received { t_end_ms, .. } => Some(*t_end_ms),
                _ => None,
            })
            .await?;
            t1 = t1.max(t);
        }
        Ok(Duration::from_secs_f64(((t1 - t0) / 1e3).max(0.0)))
    }

    /// 16-byte round trips on `label` (its name starts with `rtt`), timed in A.
    pub async fn rtt(
        &mut self,
        conn: u32,
        label: &str,
        warmup: usize,
        n: usize,
    ) -> Result<Vec<f64>> {
        send(
            &self.a,
            Cmd::Rtt {
                conn,
                label: label.into(),
                warmup,
                n,
            },
        )?;
        wait(&mut self.a, "rtt samples", |e| match e {
            Ev::Rtt { conn: c, ms } if *c == conn => Some(ms.clone()),
            _ => None,
        })
        .await
    }

    /// Closes connection `conn` on both sides.
    pub async fn close(&mut self, conn: u32) -> Result<()> {
        send(&self.a, Cmd::Close { conn })?;
        send(&self.b, Cmd::Close { conn })?;
        for p in [&mut self.a, &mut self.b] {
            wait(p, "closed", |e| {
                matches!(e, Ev::Closed { conn: c } if *c == conn).then_some(())
            })
            .await?;
        }
        Ok(())
    }

    /// How both processes run, as they report it.
    pub async fn info(&mut self) -> Result<[ChildInfo; 2]> {
        let mut out = Vec::new();
        for p in [&mut self.a, &mut self.b] {
            send(p, Cmd::Info)?;
            out.push(
                wait(p, "info", |e| match e {
                    Ev::Info(i) => Some(i.clone()),
                    _ => None,
                })
                .await?,
            );
        }
        out.try_into()
            .map_err(|_| anyhow!("expected two info reports"))
    }

    /// Checks that both processes run like the daemon with pid `daemon_pid`: the same
    /// settings, the daemon's allocator serving their heap, as many reactor threads.
    /// Returns the reports for the JSON.
    pub async fn check_fair(&mut self, daemon_pid: u32) -> Result<serde_json::Value> {
        let want = fair::daemon_settings();
        let daemon_threads = fair::reactor_threads(daemon_pid);
        let infos = self.info().await?;
        for (side, i) in ["A", "B"].iter().zip(&infos) {
            if i.settings != want {
                bail!(
                    "raw peer {side} runs with {:?}, the daemon with {want:?}",
                    i.settings
                );
            }
            if i.heap_mimalloc != (want.allocator == "mimalloc") {
                bail!("raw peer {side}'s heap is not served by {}", want.allocator);
            }
            if i.reactor_threads != daemon_threads {
                bail!(
                    "raw peer {side} has {} reactor threads, the daemon {daemon_threads}",
                    i.reactor_threads
                );
            }
            if i.runtime_flavor != crate::fair::RUNTIME_CURRENT_THREAD {
                bail!("raw peer {side} runs a {} runtime", i.runtime_flavor);
            }
        }
        Ok(serde_json::json!({
            "daemon": {"settings": want, "reactor_threads": daemon_threads},
            "raw_a": infos[0], "raw_b": infos[1],
        }))
    }
}

fn spawn_proc(
    exe: &std::path::Path,
    opts: &RawOpts,
    side: usize,
    cmds: mpsc::UnboundedSender<Cmd>,
    mut cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    other: mpsc::UnboundedSender<Cmd>,
) -> Result<Proc> {
    let mut cmd = match &opts.netns[side] {
        Some(ns) => {
            // `ip netns exec` execs the binary in place: the pid stays the raw peer's.
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns]).arg(exe);
            c
        }
        None => tokio::process::Command::new(exe),
    };
    if opts.stock_timers {
        cmd.env(STOCK_TIMERS_ENV, "1");
    }
    let mut child = cmd
        .arg("--raw-peer")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting a raw peer process")?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("raw peer exited at once"))?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    tokio::spawn(async move {
        while let Some(cmd) = cmd_rx.recv().await {
            let Ok(mut line) = serde_json::to_vec(&cmd) else {
                continue;
            };
            line.push(b'\n');
            if stdin.write_all(&line).await.is_err() {
                return;
            }
        }
    });
    let (ev_tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let ev: Ev = match serde_json::from_str(&line) {
                Ok(ev) => ev,
                Err(e) => Ev::Error {
                    conn: None,
                    error: format!("unparsable line from a raw peer ({e}): {line}"),
                },
            };
            // Signaling goes straight to the other process.
            let forwarded = match ev {
                Ev::Sig { conn, sig } => other.send(Cmd::Remote { conn, sig }).is_ok(),
                ev => ev_tx.send(ev).is_ok(),
            };
            if !forwarded {
                return;
            }
        }
    });
    Ok(Proc {
        _child: child,
        pid,
        cmds,
        events,
    })
}

fn send(p: &Proc, cmd: Cmd) -> Result<()> {
    p.cmds
        .send(cmd)
        .map_err(|_| anyhow!("raw peer process {} is gone", p.pid))
}

async fn wait<T>(p: &mut Proc, what: &str, mut pred: impl FnMut(&Ev) -> Option<T>) -> Result<T> {
    let fut = async {
        while let Some(ev) = p.events.recv().await {
            if let Ev::Error { conn, error } = &ev {
                bail!("raw peer {} (connection {conn:?}): {error}", p.pid);
            }
            if let Some(t) = pred(&ev) {
                return Ok(t);
            }
        }
        Err(anyhow!("raw peer {} ended while waiting for {what}", p.pid))
    };
    tokio::time::timeout(STEP, fut)
        .await
        .map_err(|_| anyhow!("timed out waiting for {what} from raw peer {}", p.pid))?
}

/// Marks of connection `conn` from one process until `last`; other events are dropped.
async fn marks(p: &mut Proc, conn: u32, last: Mark) -> Result<HashMap<Mark, f64>> {
    let mut got = HashMap::new();
    while !got.contains_key(&last) {
        let (m, t) = wait(p, "setup marks", |e| match e {
            Ev::Mark {
                conn: c,
                mark,
                t_ms,
            } if *c == conn => Some((*mark, *t_ms)),
            _ => None,
        })
        .await?;
        got.insert(m, t);
    }
    Ok(got)
}
