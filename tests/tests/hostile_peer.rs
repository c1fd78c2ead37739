//! A deliberately hostile remote peer (`peerix_system_tests::hostile_peer`) on a real WebRTC
//! connection to a real peerixd, signaling over a real nats-server. One test per kind of
//! misbehaviour: each checks that the offending input is dropped or cut with an error event to
//! local clients naming the room, the peer and (for channels) the label, and that the daemon
//! and its other peers carry on: an honest second daemon keeps exchanging acknowledged
//! messages with the victim in the same room throughout.

use std::time::Duration;

use anyhow::{bail, Result};
use peerix_rtc::{ChannelEvent, RtcChannel};
use peerix_system_tests::hostile_peer::HostilePeer;
use peerix_system_tests::*;
use peerix_wire::control::encode_raw;
use peerix_wire::frame::Frame;
use peerix_wire::transfer::{Chunker, PayloadType};

const T: Duration = Duration::from_secs(20);

/// The victim daemon and its client, an honest friend daemon exchanging acked messages with
/// it, and the hostile peer connected to the victim.
struct Scene {
    victim: DaemonProc,
    v: Member,
    steady: Steady,
    hostile: HostilePeer,
    _friend: DaemonProc,
    _f: Member,
    _nats: NatsServer,
    _env: TestEnv,
}

async fn scene(room: &str, envs: &[(&str, &str)]) -> Result<Scene> {
    let env = TestEnv::new()?;
    let nats = NatsServer::start(&[])?;
    let url = nats.url();
    let args = ["--nats", url.as_str(), "--driver", "nats"];
    let victim = env.daemon_with_env("victim", &args, envs).await?;
    let friend = env.daemon("friend", &args).await?;
    let mut v = Member::join(&victim, room, |_| {}).await?;
    let f = Member::join(&friend, room, |_| {}).await?;
    v.wait_for("the friend connected", T, |e| {
        is(e, "connection:connected", &f.id)
    })
    .await?;
    v.open("steady").await?;
    let steady = Steady::start_to(&victim, room, "steady", Some(&f.id)).await?;
    let hostile = HostilePeer::join(&url, room, &v.id, T).await?;
    v.wait_for("the hostile peer connected", T, |e| {
        is(e, "connection:connected", &hostile.id)
    })
    .await?;
    Ok(Scene {
        victim,
        v,
        steady,
        hostile,
        _friend: friend,
        _f: f,
        _nats: nats,
        _env: env,
    })
}

impl Scene {
    /// The daemon and the honest peer carried on: more acked messages, the process is up.
    async fn carried_on(mut self) -> Result<()> {
        self.steady.advance(20).await?;
        assert!(self.victim.is_running(), "{}", self.victim.log_tail());
        let acked = self.steady.finish().await?;
        assert!(acked > 20, "only {acked} steady messages acknowledged");
        self.hostile.close().await;
        Ok(())
    }
}

fn code(ev: &peerix_ipc_proto::Event) -> String {
    value(ev, "error")
        .map(|v| v.to_string())
        .unwrap_or_default()
}

fn from_hostile(ev: &peerix_ipc_proto::Event, name: &str, hostile: &str) -> bool {
    ev.name == name && field(ev, "peer") == Some(hostile)
}

/// Frames the daemon wrote back on a hostile channel, as decoded frames.
async fn replies(
    events: &mut tokio::sync::mpsc::Receiver<ChannelEvent>,
    within: Duration,
) -> Vec<Frame> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if let ChannelEvent::Message { data, .. } = ev {
            if let Ok(f) = Frame::decode(&data) {
                out.push(f);
            }
        }
    }
    out
}

async fn send_all(ch: &RtcChannel, frames: &[Vec<u8>]) -> Result<()> {
    for f in frames {
        ch.send(bytes::Bytes::from(f.clone())).await?;
    }
    Ok(())
}

/// Garbage on the control channel: not protobuf, not JSON, wrong shapes, unknown events, a
/// message as large as the connection allows, and a flood. Bad JSON is reported as
/// SIGNALING_ERROR naming the peer, at a bounded rate (not one event per message); the rest is
/// ignored as Peerix does (§6.2); the connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_channel_garbage_is_reported_at_a_bounded_rate() -> Result<()> {
    let mut s = scene("garbage", &[]).await?;
    let mut msgs: Vec<Vec<u8>> = vec![
        b"\xff\xff\xff not protobuf".to_vec(),
        encode_raw(1, b"this is not JSON"),
        encode_raw(1, br#"{"an": "object, not an array"}"#),
        encode_raw(1, br#"[{"type": "offer"}]"#),
        encode_raw(1, br#"[{"candidate": 42}]"#),
        encode_raw(2, b"[1, 2, 3]"),
        encode_raw(2, br#"{"label": ""}"#),
        encode_raw(77, br#"{"unknown": "event"}"#),
        encode_raw(1, &[b'x'; 60_000]),
    ];
    for i in 0..500 {
        msgs.push(encode_raw(1, format!("garbage {i}").as_bytes()));
    }
    for m in &msgs {
        s.hostile.send_control(m.clone()).await?;
    }
    let first =
        s.v.wait_for("a SIGNALING_ERROR about the hostile peer", T, |e| {
            from_hostile(e, "error", &s.hostile.id)
        })
        .await?;
    assert!(code(&first).contains("SIGNALING_ERROR"), "{first:?}");
    assert_eq!(first.room.as_deref(), Some("garbage"));
    let more =
        s.v.drain_for(Duration::from_secs(3))
            .await
            .into_iter()
            .filter(|e| from_hostile(e, "error", &s.hostile.id))
            .count();
    assert!(
        more < 10,
        "{} error events for {} bad control messages: reports must be rate limited",
        more + 1,
        msgs.len()
    );
    let closed = s.v.backlog.iter().any(|e| {
        from_hostile(e, "connection:closed", &s.hostile.id)
            || from_hostile(e, "connection:failed", &s.hostile.id)
    });
    assert!(!closed, "garbage is dropped, the connection stays");
    s.carried_on().await
}

/// Hundreds of data channels from one remote: at most `remote.max_channels_per_connection`
/// are kept, every further one is closed at once, and the refusal is reported (rate limited)
/// with the label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_flood_is_capped_per_connection() -> Result<()> {
    const CAP: usize = 16;
    const FLOOD: usize = 300;
    let mut s = scene(
        "flood",
        &[("PEERIX_REMOTE__MAX_CHANNELS_PER_CONNECTION", "16")],
    )
    .await?;
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut channels = Vec::new();
    for i in 0..FLOOD {
        let ch = s.hostile.create_channel(&format!("flood-{i}")).await?;
        if let Some(mut events) = ch.take_events() {
            let closed = closed.clone();
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    if ev == ChannelEvent::Closed {
                        closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                }
            });
        }
        channels.push(ch);
    }
    let refused =
        s.v.wait_for("a CHANNEL_LIMIT error", T, |e| {
            from_hostile(e, "error", &s.hostile.id) && code(e).contains("CHANNEL_LIMIT")
        })
        .await?;
    assert_eq!(refused.room.as_deref(), Some("flood"));
    assert!(
        field(&refused, "label").is_some_and(|l| l.starts_with("flood-")),
        "{refused:?}"
    );
    // The excess is closed (the hostile side sees its channels close).
    let deadline = std::time::Instant::now() + T;
    while closed.load(std::sync::atomic::Ordering::Relaxed) < FLOOD - CAP {
        if std::time::Instant::now() > deadline {
            bail!(
                "only {} of the {} channels over the cap were closed",
                closed.load(std::sync::atomic::Ordering::Relaxed),
                FLOOD - CAP
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peers = s.v.client.peers("flood").await?;
    let kept = peers
        .iter()
        .find(|p| p.id == s.hostile.id)
        .map(|p| {
            p.channels
                .iter()
                .filter(|l| l.starts_with("flood-"))
                .count()
        })
        .unwrap_or_default();
    assert!(kept <= CAP, "{kept} hostile channels kept, cap {CAP}");
    let reports =
        s.v.drain_for(Duration::from_secs(1))
            .await
            .into_iter()
            .filter(|e| from_hostile(e, "error", &s.hostile.id))
            .count();
    assert!(reports < 10, "{reports} more refusal reports: rate limited");
    drop(channels);
    s.carried_on().await
}

/// A transfer whose frames claim more than the reassembly limit allows: a chunk whose length
/// prefix claims 100 GiB (the only size a Peerix frame can state about itself), and a JSON
/// message (held whole until complete) past `remote.max_message_size`. Each is cut at once
/// with `channel:error` naming the transfer, the sender gets an abort, and nothing of the claim
/// is allocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_claiming_a_huge_total_is_cut_at_once() -> Result<()> {
    let mut s = scene("claims", &[("PEERIX_REMOTE__MAX_MESSAGE_SIZE", "1048576")]).await?;
    let (ch, mut back) = s.hostile.open_channel("evil").await?;
    let rss_before = s.victim.rss_kib();

    // Transfer 7: one honest chunk, then a chunk claiming 100 GiB.
    let mut first = Chunker::new(7, PayloadType::Bytes, None, vec![1u8; 40_000])?;
    let f0 = first.next_frame().expect("a first frame");
    let mut claim = vec![0x08, 0x07, 0x18, 0x01, 0x30, 0x00, 0x42];
    let mut len = 100u64 << 30;
    while len >= 0x80 {
        claim.push((len as u8) | 0x80);
        len >>= 7;
    }
    claim.push(len as u8);
    claim.extend_from_slice(&[0u8; 1000]);
    send_all(&ch, &[f0, claim]).await?;
    let cut =
        s.v.wait_for("channel:error for transfer 7", T, |e| {
            from_hostile(e, "channel:error", &s.hostile.id)
                && value(e, "transfer").and_then(|v| v.as_u64()) == Some(7)
        })
        .await?;
    assert_eq!(field(&cut, "label"), Some("evil"));
    assert_eq!(cut.room.as_deref(), Some("claims"));

    // Transfer 8: JSON, 2 MiB, past the 1 MiB limit; never streamed, so only the cut tells.
    let json = format!("\"{}\"", "j".repeat(2 << 20));
    let frames: Vec<Vec<u8>> =
        Chunker::new(8, PayloadType::Json, None, json.into_bytes())?.collect();
    send_all(&ch, &frames).await?;
    let cut =
        s.v.wait_for("channel:error for transfer 8", T, |e| {
            from_hostile(e, "channel:error", &s.hostile.id)
                && value(e, "transfer").and_then(|v| v.as_u64()) == Some(8)
        })
        .await?;
    assert!(code(&cut).contains("1048576"), "{cut:?}");

    let aborts: Vec<u32> = replies(&mut back, Duration::from_secs(2))
        .await
        .into_iter()
        .filter(|f| f.is_ask() && f.abort == Some(true))
        .map(|f| f.id)
        .collect();
    assert!(
        aborts.contains(&7) && aborts.contains(&8),
        "the sender is told: {aborts:?}"
    );
    if let (Some(before), Some(after)) = (rss_before, s.victim.rss_kib()) {
        assert!(
            after < before + 64 * 1024,
            "RSS grew from {before} KiB to {after} KiB"
        );
    }
    s.carried_on().await
}

/// Thousands of acks for transfers the daemon never sent (unknown and repeated ids): dropped,
/// and reported with a bounded number of `channel:error` events naming the label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_flood_is_dropped_and_reported_at_a_bounded_rate() -> Result<()> {
    let mut s = scene("acks", &[]).await?;
    let (ch, _back) = s.hostile.open_channel("evil").await?;
    let mut frames = Vec::new();
    for i in 0..5000u32 {
        frames.push(Frame::ack(i % 1000 + 1).encode());
    }
    send_all(&ch, &frames).await?;
    let first =
        s.v.wait_for("a channel:error about stray acks", T, |e| {
            from_hostile(e, "channel:error", &s.hostile.id)
        })
        .await?;
    assert_eq!(field(&first, "label"), Some("evil"));
    assert!(code(&first).contains("ack"), "{first:?}");
    let more =
        s.v.drain_for(Duration::from_secs(3))
            .await
            .into_iter()
            .filter(|e| from_hostile(e, "channel:error", &s.hostile.id))
            .count();
    assert!(more < 10, "{} reports for 5000 stray acks", more + 1);
    s.carried_on().await
}

/// A transfer that starts and then goes silent while its channel stays open is cut after
/// `remote.transfer_idle_timeout_ms`, with `channel:error` naming it and an abort to the
/// sender; the channel itself stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_never_finishes_is_cut_when_idle() -> Result<()> {
    let mut s = scene(
        "idle",
        &[("PEERIX_REMOTE__TRANSFER_IDLE_TIMEOUT_MS", "2000")],
    )
    .await?;
    let (ch, mut back) = s.hostile.open_channel("evil").await?;
    let frames: Vec<Vec<u8>> =
        Chunker::new(9, PayloadType::Bytes, None, vec![3u8; 200_000])?.collect();
    send_all(&ch, &frames[..3]).await?;
    let started = std::time::Instant::now();
    let cut =
        s.v.wait_for("channel:error for the idle transfer", T, |e| {
            from_hostile(e, "channel:error", &s.hostile.id)
                && value(e, "transfer").and_then(|v| v.as_u64()) == Some(9)
        })
        .await?;
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "cut after {after:?}, before the idle timeout"
    );
    assert_eq!(field(&cut, "label"), Some("evil"));
    assert!(code(&cut).contains("no frame"), "{cut:?}");
    let aborts: Vec<u32> = replies(&mut back, Duration::from_secs(1))
        .await
        .into_iter()
        .filter(|f| f.is_ask() && f.abort == Some(true))
        .map(|f| f.id)
        .collect();
    assert_eq!(aborts, vec![9], "the sender is told");
    let closed = s.v.backlog.iter().any(|e| {
        from_hostile(e, "channel:close", &s.hostile.id) && field(e, "label") == Some("evil")
    });
    assert!(!closed, "the channel stays open");
    s.carried_on().await
}

/// A remote that takes our messages and never acknowledges them (the wait is one watch per
/// channel, `peerix_proto::AckWatch`): each such send fails once its data was taken and no ack
/// came for 10 s ("Transfer timed out"), the remote is told to drop it (a sender abort, §7.5),
/// a message beside them that the remote does acknowledge succeeds, and the daemon and its
/// other peer carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_remote_never_acknowledges_fail_after_the_ack_timeout() -> Result<()> {
    let mut s = scene("silent", &[]).await?;
    let (ch, mut back) = s.hostile.open_channel("evil").await?;
    let hostile = s.hostile.id.clone();
    s.v.wait_for("the hostile channel open", T, |e| {
        from_hostile(e, "channel:open", &hostile) && field(e, "label") == Some("evil")
    })
    .await?;
    let started = std::time::Instant::now();
    let client = &s.v.client;
    let to = || peerix_client::SendOptions::to(hostile.clone());
    let sends = async {
        tokio::join!(
            client.send_text("silent", "evil", "m0", to()),
            client.send_text("silent", "evil", "m1", to()),
            client.send_text("silent", "evil", "m2", to()),
        )
    };
    // The remote acks only "m1", and collects the aborts of the others.
    let remote = async {
        let (mut acked, mut aborts) = (None, Vec::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while aborts.len() < 2 {
            let Ok(Some(ev)) = tokio::time::timeout_at(deadline, back.recv()).await else {
                bail!("the remote saw {aborts:?} aborted and {acked:?} acked by 30 s");
            };
            let ChannelEvent::Message { data, .. } = ev else {
                continue;
            };
            let f = Frame::decode(&data)?;
            if f.abort == Some(true) {
                aborts.push(f.id);
            } else if f.chunk.as_deref() == Some(b"m1".as_slice()) {
                ch.send(bytes::Bytes::from(Frame::ack(f.id).encode()))
                    .await?;
                acked = Some(f.id);
            }
        }
        anyhow::Ok((acked, aborts))
    };
    let both = tokio::time::timeout(Duration::from_secs(40), async {
        tokio::join!(sends, remote)
    });
    let Ok(((m0, m1, m2), remote)) = both.await else {
        bail!("the sends did not end within 40 s");
    };
    let (acked, mut aborts) = remote?;
    let took = started.elapsed();
    let outcome = |r: peerix_client::Result<peerix_client::SendResult>| -> Result<(bool, String)> {
        let peers = r?.peers.unwrap_or_default();
        let [p] = peers.as_slice() else {
            bail!("one peer expected, got {peers:?}");
        };
        Ok((
            p.ok,
            p.error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
        ))
    };
    let (m0, m1, m2) = (outcome(m0)?, outcome(m1)?, outcome(m2)?);
    assert_eq!(
        m1,
        (true, String::new()),
        "the acknowledged message succeeds"
    );
    for (ok, why) in [&m0, &m2] {
        assert!(!ok && why.starts_with("Transfer timed out"), "{why}");
    }
    assert!(
        took >= Duration::from_secs(10),
        "given up after {took:?}, before the ack timeout"
    );
    aborts.sort_unstable();
    let acked = acked.expect("m1 was acked");
    assert_eq!(aborts.len(), 2);
    assert!(!aborts.contains(&acked), "{aborts:?} vs acked {acked}");
    s.carried_on().await
}
