//! Channels opened at the very moment `connection:connected` fires, against the real Peerix 0.7.0
//! in headless Chromium (see `browser_interop.rs` for the setup). One daemon and one browser
//! serve every round: the browser leaves and joins again with a new id each round.
//!
//! The race case: the daemon joined first and the browser is polite, so when the browser opens
//! a channel at `connection:connected` it must ask the daemon over the control channel (control
//! event 2), possibly before the daemon's side of the control channel is ready for it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_system_tests::browser::{
    balanced_room, check_prerequisites, daemon_connected, join_nats, nats_daemon, ws_url, Browser,
    BrowserOpts, ErrorWatch, T,
};
use peerix_system_tests::peerix_client::SendOptions;
use peerix_system_tests::{field, is, DaemonProc, Member, NatsServer, TestEnv};
use serde_json::json;

const ROUNDS: usize = 20;
/// How long a round's channel may take to open (it normally takes well under a second).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

struct Rig {
    b: Browser,
    m: Member,
    errors: ErrorWatch,
    d: DaemonProc,
    _nats: NatsServer,
    ws: String,
    room: String,
    _env: TestEnv,
}

async fn rig(tag: &str) -> Result<Rig> {
    check_prerequisites()?;
    let env = TestEnv::new()?;
    let nats = NatsServer::start(&[])?;
    let (b, d) = tokio::join!(
        Browser::start(&env, "b", BrowserOpts::default()),
        nats_daemon(&env, &nats, "d", &[])
    );
    let (b, d) = (b?, d?);
    let errors = ErrorWatch::new(&d).await?;
    // Every round picks a new browser id of a given role against the daemon's.
    let (room, _) = balanced_room(&d, tag).await?;
    let m = join_nats(&d, &room).await?;
    Ok(Rig {
        b,
        m,
        errors,
        d,
        ws: ws_url(&nats),
        _nats: nats,
        room,
        _env: env,
    })
}

impl Rig {
    fn diagnostics(&self) -> String {
        format!(
            "--- daemon log (tail) ---\n{}\n{}",
            self.d.log_tail(),
            self.b.diagnostics()
        )
    }

    /// Both sides see `label` open with `peer`, then a text goes each way, acknowledged.
    async fn check_channel(&mut self, peer: &str, label: &str, round: usize) -> Result<()> {
        let daemon = self.m.id.clone();
        self.m
            .wait_for(&format!("channel:open {label}"), OPEN_TIMEOUT, |e| {
                is(e, "channel:open", peer) && field(e, "label") == Some(label)
            })
            .await
            .context("the daemon's channel did not open")?;
        self.b
            .call(
                "waitChannel",
                json!({"label": label, "peer": daemon, "timeoutMs": OPEN_TIMEOUT.as_millis() as u64}),
                OPEN_TIMEOUT + Duration::from_secs(2),
            )
            .await
            .context("the browser's channel did not open")?;
        let mark = self.b.mark();
        let res = self
            .m
            .client
            .send_text(
                &self.room,
                label,
                &format!("round {round} from peerixd"),
                SendOptions::to(peer),
            )
            .await?;
        let peers = res.peers.unwrap_or_default();
        if peers.len() != 1 || !peers[0].ok {
            bail!("daemon send not acknowledged: {peers:?}");
        }
        let text = format!("round {round} from peerixd");
        self.b
            .wait_from(mark, "the daemon's text", T, |v| {
                v["ev"] == "message" && v["label"] == label && v["text"] == text.as_str()
            })
            .await?;
        self.b
            .call(
                "send",
                json!({"label": label, "to": daemon, "text": format!("round {round} from chromium")}),
                T,
            )
            .await
            .context("browser send")?;
        let ev = self
            .m
            .wait_for("the browser's text", T, |e| {
                is(e, "channel:message", peer) && field(e, "label") == Some(label)
            })
            .await?;
        assert_eq!(
            field(&ev, "data"),
            Some(format!("round {round} from chromium").as_str())
        );
        Ok(())
    }

    /// The browser leaves; the daemon must see the connection closed.
    async fn leave(&mut self, peer: &str) -> Result<()> {
        self.b.call("leave", json!({}), T).await?;
        self.m
            .wait_for("connection:closed", Duration::from_secs(20), |e| {
                is(e, "connection:closed", peer)
            })
            .await
            .map(drop)
    }
}

/// Channel errors the page saw after its own leave (not counted as failures): printed so that a
/// change in how the daemon tears connections down shows in the test output.
fn report_teardown(b: &mut Browser) {
    let t = b.teardown_errors();
    if !t.is_empty() {
        eprintln!(
            "note: {} channel:error events at the browser after its own leave (teardown), e.g. {}",
            t.len(),
            t[0]
        );
    }
}

/// Summarises rounds; fails with the first failure's diagnostics when any round failed.
fn verdict(
    name: &str,
    failures: Vec<(usize, String)>,
    rounds: usize,
    started: Instant,
) -> Result<()> {
    eprintln!(
        "[{name}] {} of {rounds} rounds passed in {:.1} s",
        rounds - failures.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some((round, first)) = failures.first() {
        let list: Vec<String> = failures
            .iter()
            .map(|(r, e)| format!("round {r}: {}", e.lines().next().unwrap_or("")))
            .collect();
        bail!(
            "{name}: {} of {rounds} rounds failed:\n{}\n\n--- first failure (round {round}) ---\n{first}",
            failures.len(),
            list.join("\n")
        );
    }
    Ok(())
}

/// Daemon joined first, browser polite, the browser opens "race" in its `connection:connected`
/// handler: the channel must open on both sides and carry a message each way, every round.
#[tokio::test]
async fn polite_browser_opens_channel_at_connect() -> Result<()> {
    let started = Instant::now();
    let mut r = rig("race-b").await?;
    let daemon = r.m.id.clone();
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let ws = r.ws.clone();
        let room = r.room.clone();
        let peer =
            r.b.join(
                &ws,
                &room,
                Some((&daemon, "polite")),
                json!({ "openOnConnected": ["race"] }),
            )
            .await?;
        let res = async {
            daemon_connected(&mut r.m, &r.d, &peer).await?;
            r.check_channel(&peer, "race", round).await
        }
        .await;
        if let Err(e) = res {
            failures.push((round, format!("{e:#}\n{}", r.diagnostics())));
        }
        r.leave(&peer).await?;
    }
    verdict("polite browser opens at connect", failures, ROUNDS, started)?;
    report_teardown(&mut r.b);
    r.b.assert_no_errors()?;
    r.errors.assert_none(&r.d)?;
    r.b.quit().await
}

/// The daemon opens "race" the moment it reports `connection:connected`, against a browser that
/// is polite and impolite on alternate rounds (the daemon creates the channel, or asks for it).
#[tokio::test]
async fn daemon_opens_channel_at_connect() -> Result<()> {
    let started = Instant::now();
    let mut r = rig("race-d").await?;
    let daemon = r.m.id.clone();
    let rounds = 10;
    let mut failures = Vec::new();
    for round in 0..rounds {
        let role = if round % 2 == 0 { "polite" } else { "impolite" };
        let ws = r.ws.clone();
        let room = r.room.clone();
        let peer =
            r.b.join(&ws, &room, Some((&daemon, role)), json!({}))
                .await?;
        let res = async {
            daemon_connected(&mut r.m, &r.d, &peer).await?;
            r.m.open("race").await?;
            r.check_channel(&peer, "race", round).await
        }
        .await
        .with_context(|| format!("browser {role}"));
        if let Err(e) = res {
            failures.push((round, format!("{e:#}\n{}", r.diagnostics())));
        }
        // Room-wide labels stay open for later peers: close it so the next round opens it at
        // connect time again.
        r.m.client.close(&r.room, "race", None).await?;
        r.leave(&peer).await?;
    }
    verdict("daemon opens at connect", failures, rounds, started)?;
    report_teardown(&mut r.b);
    r.b.assert_no_errors()?;
    r.errors.assert_none(&r.d)?;
    r.b.quit().await
}

/// A send that waits for its channel, which the browser creates (the daemon is polite, so it
/// asks for the channel, §6.4): the daemon writes the moment the browser's DCEP open arrives.
/// Chromium reports a channel it created as `open` to the page a few ms after it announced it,
/// and Peerix drops the ack of a message that arrives before that (its frame writer refuses a
/// channel that is not open), so the send must be reported ok and the text reach the page in
/// every round, not fail 10 s later with "sent no acknowledgement".
#[tokio::test]
async fn a_send_waiting_for_a_browser_created_channel_is_acknowledged() -> Result<()> {
    let started = Instant::now();
    let mut r = rig("early-send").await?;
    let daemon = r.m.id.clone();
    let (ws, room) = (r.ws.clone(), r.room.clone());
    let peer =
        r.b.join(&ws, &room, Some((&daemon, "impolite")), json!({}))
            .await?;
    daemon_connected(&mut r.m, &r.d, &peer).await?;
    let rounds = 8;
    let mut failures = Vec::new();
    for round in 0..rounds {
        let label = format!("early{round}");
        let text = format!("round {round}, sent before the channel existed");
        let mark = r.b.mark();
        r.m.open(&label).await?;
        let res =
            r.m.client
                .send_text(&room, &label, &text, SendOptions::to(peer.clone()))
                .await?;
        let peers = res.peers.unwrap_or_default();
        let res = async {
            if peers.len() != 1 || !peers[0].ok {
                bail!("send not acknowledged: {peers:?}");
            }
            r.b.wait_from(mark, "the text at the browser", T, |v| {
                v["ev"] == "message" && v["label"] == label.as_str() && v["text"] == text.as_str()
            })
            .await
            .map(drop)
        }
        .await;
        if let Err(e) = res {
            failures.push((round, format!("{e:#}\n{}", r.diagnostics())));
        }
    }
    verdict(
        "send before a browser-created channel",
        failures,
        rounds,
        started,
    )?;
    r.errors.assert_none(&r.d)?;
    r.b.quit().await
}
