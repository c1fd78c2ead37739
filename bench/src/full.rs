//! Figures through real `peerixd` processes (spawned with the `peerix-system-tests` harness) and
//! real clients over the real socket.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use peerix_client::{Client, MessageAssembler, SendOptions};
use peerix_ipc_proto::{Event, JoinArgs};
use peerix_system_tests::{field, is, DaemonProc, Member, NatsServer, TestEnv};
use tokio::sync::mpsc::Receiver;

/// Generous per-step timeout (the machine is shared and noisy).
pub const STEP: Duration = Duration::from_secs(30);

/// Extra daemon arguments for the NATS driver.
pub fn nats_args(nats: &NatsServer) -> Vec<String> {
    vec![
        "--nats".into(),
        nats.url(),
        "--driver".into(),
        "nats".into(),
    ]
}

/// Starts a daemon with owned extra arguments.
pub async fn daemon(env: &TestEnv, name: &str, extra: &[String]) -> Result<DaemonProc> {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    env.daemon(name, &extra).await
}

/// Waits on a bare event receiver for the first event matching `pred` (others are dropped).
pub async fn next_event(
    events: &mut Receiver<Event>,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Result<Event> {
    let fut = async {
        while let Some(ev) = events.recv().await {
            if pred(&ev) {
                return Ok(ev);
            }
        }
        Err(anyhow!("event stream ended while waiting for {what}"))
    };
    tokio::time::timeout(STEP, fut)
        .await
        .map_err(|_| anyhow!("timed out after {STEP:?} waiting for {what}"))?
}

/// Outcome of one full-mesh trial.
pub struct MeshOutcome {
    /// Seconds from issuing all `join`s at once until every daemon saw `connection:connected`
    /// for every other one; `None` if the mesh was not complete by the deadline.
    pub secs: Option<f64>,
    /// Pairs (i, j), i < j, where at least one side had not seen the other by the deadline.
    pub missing: Vec<(usize, usize)>,
    /// Pairs in the room.
    pub pairs: usize,
    /// Log tails of daemons with missing pairs, taken at the deadline.
    pub log_tails: Vec<String>,
}

/// Joins every daemon to `room` at once and waits (up to `deadline`) for the full mesh.
pub async fn mesh_trial(
    daemons: &[DaemonProc],
    room: &str,
    limit: Duration,
) -> Result<MeshOutcome> {
    let mut clients = Vec::new();
    for d in daemons {
        let c = d.client().await?;
        let ev = c.subscribe(&["connection:connected"], Some(room)).await?;
        clients.push((c, ev));
    }
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let joins = clients.iter().map(|(c, _)| c.join(JoinArgs::new(room)));
    let ids: Vec<String> = futures::future::try_join_all(joins)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let n = daemons.len();
    let mut seen: Vec<HashSet<usize>> = vec![HashSet::new(); n];
    // Sequential waits with one deadline: the loop ends when the last event arrived.
    for (i, (_, ev)) in clients.iter_mut().enumerate() {
        while seen[i].len() < n - 1 {
            match tokio::time::timeout_at(deadline, ev.recv()).await {
                Ok(Some(e)) if e.name == "connection:connected" => {
                    if let Some(j) = field(&e, "peer").and_then(|p| ids.iter().position(|x| x == p))
                    {
                        seen[i].insert(j);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("event stream of mesh member {i} ended"),
                Err(_) => break,
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let mut missing = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            if !seen[i].contains(&j) || !seen[j].contains(&i) {
                missing.push((i, j));
            }
        }
    }
    // Logs of the first members of missing pairs, before `leave` adds its noise.
    let log_tails = missing
        .iter()
        .take(2)
        .map(|(i, _)| format!("m{i}:\n{}", daemons[*i].log_tail()))
        .collect();
    for (c, _) in &clients {
        c.leave(room).await?;
    }
    Ok(MeshOutcome {
        secs: missing.is_empty().then_some(elapsed),
        missing,
        pairs: n * (n - 1) / 2,
        log_tails,
    })
}

/// Two connected daemons with one open channel, for throughput, RTT and IPC figures.
pub struct Pair {
    /// Keeps the daemons' directory alive.
    pub _env: TestEnv,
    /// Daemon A (sender), killed on drop.
    pub _da: DaemonProc,
    /// Daemon B (receiver), killed on drop.
    pub _db: DaemonProc,
    /// Client of A.
    pub a: Arc<Client>,
    /// A's events.
    pub a_events: Receiver<Event>,
    /// Client of B.
    pub b: Arc<Client>,
    /// B's events.
    pub b_events: Receiver<Event>,
    /// A's Peerix id.
    pub a_id: String,
    /// B's Peerix id.
    pub b_id: String,
    /// The room.
    pub room: String,
}

impl Pair {
    /// Starts two daemons on the `local` driver, connects them and opens `labels`.
    pub async fn start(labels: &[&str]) -> Result<Pair> {
        let env = TestEnv::new()?;
        let da = env.daemon("a", &[]).await?;
        let db = env.daemon("b", &[]).await?;
        Self::with_daemons(env, da, db, labels).await
    }

    /// Connects two running daemons (started anywhere, e.g. in a lab's namespaces) and opens
    /// `labels`.
    pub async fn with_daemons(
        env: TestEnv,
        da: DaemonProc,
        db: DaemonProc,
        labels: &[&str],
    ) -> Result<Pair> {
        let room = "bench".to_string();
        let mut a = Member::join(&da, &room, |_| {}).await?;
        let mut b = Member::join(&db, &room, |_| {}).await?;
        let (a_id, b_id) = (a.id.clone(), b.id.clone());
        a.wait_for("a sees b", STEP, |e| is(e, "connection:connected", &b_id))
            .await?;
        b.wait_for("b sees a", STEP, |e| is(e, "connection:connected", &a_id))
            .await?;
        for label in labels {
            a.open(label).await?;
            a.wait_for("channel open at a", STEP, |e| {
                is(e, "channel:open", &b_id) && field(e, "label") == Some(label)
            })
            .await?;
            b.wait_for("channel open at b", STEP, |e| {
                is(e, "channel:open", &a_id) && field(e, "label") == Some(label)
            })
            .await?;
        }
        Ok(Pair {
            _env: env,
            _da: da,
            _db: db,
            a: Arc::new(a.client),
            a_events: a.events,
            b: Arc::new(b.client),
            b_events: b.events,
            a_id,
            b_id,
            room,
        })
    }

    /// Sends `payload` A→B on `label`; returns the time until B's client assembled all bytes.
    pub async fn transfer(&mut self, label: &str, payload: &[u8]) -> Result<Duration> {
        let opts = SendOptions::to(self.b_id.clone());
        // `send_bytes` as an application would call it (it streams anything over 1 MiB by
        // itself); above 8 MiB the bench streams from a reader, as a client with a file would.
        let inline = (payload.len() <= 8 * 1024 * 1024).then(|| payload.to_vec());
        let a = Arc::clone(&self.a);
        let room = self.room.clone();
        let label_s = label.to_string();
        let a_id = self.a_id.clone();
        let start = Instant::now();
        let send = async move {
            let r = match inline {
                Some(bytes) => a.send_bytes(&room, &label_s, bytes, opts).await?,
                None => {
                    a.send_stream(
                        &room,
                        &label_s,
                        payload,
                        Some(payload.len() as u64),
                        opts,
                        |_| {},
                    )
                    .await?
                }
            };
            let ok = r.peers.as_ref().is_some_and(|p| p.iter().all(|p| p.ok));
            anyhow::Ok(ok)
        };
        let events = &mut self.b_events;
        let recv = async move {
            let mut asm = MessageAssembler::new();
            loop {
                let ev = next_event(events, "message parts at b", |e| {
                    e.name == "channel:message"
                        && field(e, "label") == Some(label)
                        && field(e, "peer") == Some(a_id.as_str())
                })
                .await?;
                if let Some(msg) = asm.push_owned(ev).context("assembling the message")? {
                    return anyhow::Ok((Instant::now(), msg));
                }
            }
        };
        let (sent, got) = tokio::join!(send, recv);
        let (end, msg) = got?;
        if !sent? {
            bail!("a peer did not acknowledge the transfer");
        }
        let len = match msg.data {
            peerix_client::MessageData::Bytes(b) => b.len(),
            other => bail!("expected bytes, got {other:?}"),
        };
        if len != payload.len() {
            bail!("received {len} bytes of {}", payload.len());
        }
        Ok(end.duration_since(start))
    }

    /// Full-path round trips (ms) of a 16-byte text: A sends to B, B's client echoes on
    /// receipt, A's client gets the echo.
    pub async fn rtt(&mut self, label: &str, warmup: usize, n: usize) -> Result<Vec<f64>> {
        // Lend B's events to the echo task (a closed receiver stands in meanwhile).
        let (_closed, stand_in) = tokio::sync::mpsc::channel(1);
        let b_events_taken = std::mem::replace(&mut self.b_events, stand_in);
        let b = Arc::clone(&self.b);
        let room = self.room.clone();
        let a_id = self.a_id.clone();
        let label_s = label.to_string();
        let echo = tokio::spawn(async move {
            let mut evs = b_events_taken;
            while let Some(ev) = evs.recv().await {
                if ev.name == "channel:message" && field(&ev, "label") == Some(label_s.as_str()) {
                    let text = field(&ev, "data").unwrap_or("").to_string();
                    let b = Arc::clone(&b);
                    let room = room.clone();
                    let label = label_s.clone();
                    let to = a_id.clone();
                    tokio::spawn(async move {
                        let _ = b.send_text(&room, &label, &text, SendOptions::to(to)).await;
                    });
                }
            }
        });
        let mut out = Vec::with_capacity(n);
        let b_id = self.b_id.clone();
        for i in 0..warmup + n {
            let text = format!("{i:016}");
            let t0 = Instant::now();
            let send = self
                .a
                .send_text(&self.room, label, &text, SendOptions::to(b_id.clone()));
            let wait = next_event(&mut self.a_events, "echo at a", |e| {
                e.name == "channel:message"
                    && field(e, "label") == Some(label)
                    && field(e, "data") == Some(text.as_str())
            });
            let (sent, got) = tokio::join!(send, wait);
            got?;
            let dt = t0.elapsed();
            sent?;
            if i >= warmup {
                out.push(dt.as_secs_f64() * 1e3);
            }
        }
        echo.abort();
        // The receiver went with the aborted task; resubscribe B for later figures.
        let _ = echo.await;
        self.b_events = self.b.subscribe(&["*"], Some(&self.room)).await?;
        Ok(out)
    }
}

/// IPC alone: `status` round trips on a fresh connection (no subscription).
pub struct IpcFigures {
    /// Sequential round-trip latencies (ms).
    pub seq_ms: Vec<f64>,
    /// Sequential requests per second.
    pub seq_rps: f64,
    /// Requests per second with `concurrency` requests in flight.
    pub conc_rps: f64,
    /// Requests in flight in the concurrent run.
    pub concurrency: usize,
}

/// Measures `status` requests over the socket of `d`.
pub async fn ipc(d: &DaemonProc, n: usize, concurrency: usize) -> Result<IpcFigures> {
    let c = Arc::new(d.client().await?);
    for _ in 0..50 {
        c.status().await?;
    }
    let mut seq_ms = Vec::with_capacity(n);
    let t = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        c.status().await?;
        seq_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let seq_rps = n as f64 / t.elapsed().as_secs_f64();
    let per = (n / concurrency).max(1);
    let t = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                for _ in 0..per {
                    c.status().await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await.context("IPC task")??;
    }
    let conc_rps = (per * concurrency) as f64 / t.elapsed().as_secs_f64();
    Ok(IpcFigures {
        seq_ms,
        seq_rps,
        conc_rps,
        concurrency,
    })
}
