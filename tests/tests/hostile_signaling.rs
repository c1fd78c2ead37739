//! Hostile signaling packets on the local driver: garbage, truncated envelopes, forged senders,
//! undecryptable payloads. Each is reported as a SIGNALING_ERROR event (or dropped), and the daemon
//! keeps working for real peers.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use anyhow::Result;
use peerix_system_tests::*;
use peerix_wire::identity::Identity;
use peerix_wire::namespace;
use peerix_wire::packet::{CodecOptions, Packet, SignalType, SignalingCodec};

fn datagram(ns: &str, payload: &[u8]) -> Vec<u8> {
    let mut d = (ns.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(ns.as_bytes());
    d.extend_from_slice(payload);
    d
}

fn blast(env: &TestEnv, packets: &[Vec<u8>]) -> Result<usize> {
    let sock = UnixDatagram::unbound()?;
    let mut sent = 0;
    for entry in std::fs::read_dir(env.local_dir())? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("sock") {
            continue;
        }
        for p in packets {
            if sock.send_to(p, &path).is_ok() {
                sent += 1;
            }
        }
    }
    Ok(sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_packets_are_reported_and_survived() -> Result<()> {
    let env = TestEnv::new()?;
    let mut d = env.daemon("victim", &[]).await?;
    let mut victim = Member::join(&d, "hostile", |_| {}).await?;
    let room_ns = namespace::escape("hostile", true);
    let own_ns = namespace::escape(&victim.id, true);

    let attacker = Identity::generate();
    let mut codec = SignalingCodec::new(attacker.clone(), CodecOptions::default());
    let offer_garbage_sdp = codec.seal(
        SignalType::Offer,
        Some(&[
            serde_json::json!({"type": "offer", "sdp": "this is not SDP"}),
            serde_json::Value::Null,
        ]),
        &victim.id,
    )?;
    let mut tampered = codec.seal(
        SignalType::Invoke,
        Some(&[serde_json::json!({"name": "x"})]),
        &victim.id,
    )?;
    let last = tampered.len() - 1;
    tampered[last] ^= 0x55; // breaks the GCM tag
    let plaintext = Packet {
        signal_type: SignalType::Invoke,
        flags: 0,
        sender: attacker.sender_bytes().to_vec(),
        payload: b"[1]".to_vec(),
    }
    .encode();
    let bad_sender = Packet {
        signal_type: SignalType::Announce,
        flags: 0,
        sender: vec![0x07; 33],
        payload: vec![],
    }
    .encode();
    let packets = vec![
        datagram(&room_ns, b"\xff\xff\xff\xff\xff\xff"), // not an envelope
        datagram(&room_ns, &[0x08]),                     // truncated
        datagram(&room_ns, &bad_sender),                 // sender not a P-256 point
        datagram(&own_ns, &tampered),                    // bad GCM tag
        datagram(&own_ns, &plaintext),                   // unencrypted payload
        datagram(&own_ns, &offer_garbage_sdp),           // valid packet, hostile SDP
        vec![0xff, 0xff],                                // not even a datagram header
        datagram("unrelated-namespace", b"whatever"),
    ];
    // The join reply can come before the driver routes the room's namespaces to it (the local
    // driver reads on a thread of its own): packets sent in between find no subscriber, as on
    // any pub/sub, so the blast is repeated until the first report shows they are heard.
    let mut first = None;
    for _ in 0..10 {
        assert!(blast(&env, &packets)? >= packets.len());
        if let Ok(ev) = victim
            .wait_for("a first error event", Duration::from_millis(500), |e| {
                e.name == "error"
            })
            .await
        {
            first = Some(ev);
            break;
        }
    }
    let first = first.ok_or_else(|| anyhow::anyhow!("no error event after 10 blasts"))?;
    let mut codes = vec![value(&first, "error")
        .map(|v| v.to_string())
        .unwrap_or_default()];
    for _ in 1..5 {
        let ev = victim
            .wait_for("an error event", Duration::from_secs(5), |e| {
                e.name == "error"
            })
            .await?;
        codes.push(
            value(&ev, "error")
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
    }
    assert!(
        codes
            .iter()
            .all(|c| c.contains("SIGNALING_ERROR") || c.contains("NEGOTIATION_ERROR")),
        "{codes:?}"
    );
    assert!(d.is_running(), "{}", d.log_tail());

    // A real peer still connects.
    let d2 = env.daemon("friend", &[]).await?;
    let friend = Member::join(&d2, "hostile", |_| {}).await?;
    victim
        .wait_for("friend connected", Duration::from_secs(10), |e| {
            is(e, "connection:connected", &friend.id)
        })
        .await?;
    assert!(d.is_running());
    Ok(())
}

/// A flood of validly sealed invokes from freshly generated ids (anyone can make a key pair)
/// may not make the daemon set up more connections at once than
/// `webrtc.max_connecting_peers`; the refusals are reported, and once the forged connections
/// time out a real peer connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_invokes_are_capped() -> Result<()> {
    const LIMIT: usize = 4;
    const FORGED: usize = 12;
    let env = TestEnv::new()?;
    let mut d = env
        .daemon_with_env(
            "victim",
            &[],
            &[("PEERIX_WEBRTC__MAX_CONNECTING_PEERS", "4")],
        )
        .await?;
    let mut victim = Member::join(&d, "capped", |args| {
        args.options = Some(peerix_ipc_proto::JoinOptions {
            connection_timeout: Some(1500),
            ..Default::default()
        });
    })
    .await?;
    let own_ns = namespace::escape(&victim.id, true);
    let mut packets = Vec::new();
    for _ in 0..FORGED {
        let mut codec = SignalingCodec::new(Identity::generate(), CodecOptions::default());
        let invoke = codec.seal(
            SignalType::Invoke,
            Some(&[serde_json::json!({"forged": true})]),
            &victim.id,
        )?;
        packets.push(datagram(&own_ns, &invoke));
    }
    assert!(blast(&env, &packets)? >= FORGED);

    let limit_error = victim
        .wait_for("PEER_LIMIT error", Duration::from_secs(5), |e| {
            e.name == "error"
                && value(e, "error").is_some_and(|v| v.to_string().contains("PEER_LIMIT"))
        })
        .await?;
    assert_eq!(limit_error.room.as_deref(), Some("capped"));
    // Only LIMIT connections were started for the forged ids.
    let mut started = 0;
    while victim
        .wait_for("connection:new", Duration::from_millis(500), |e| {
            e.name == "connection:new"
        })
        .await
        .is_ok()
    {
        started += 1;
    }
    assert_eq!(
        started, LIMIT,
        "connections set up for {FORGED} forged invokes"
    );
    assert!(d.is_running(), "{}", d.log_tail());

    // The forged connections time out (1.5 s); then a real peer gets in.
    let d2 = env.daemon("friend", &[]).await?;
    let friend = Member::join(&d2, "capped", |_| {}).await?;
    victim
        .wait_for("friend connected", Duration::from_secs(15), |e| {
            is(e, "connection:connected", &friend.id)
        })
        .await?;
    Ok(())
}

/// Every packet from an id we have not heard from costs an ECDH on the room's thread, and any
/// key pair is an id: a flood of validly sealed invokes from fresh ids is taken up at
/// `limits.new_senders_per_second` (the rest put off, the oldest dropped), reported as
/// `LIMIT_EXCEEDED`, and a real peer that joins after the flood still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sender_key_derivations_are_rate_limited() -> Result<()> {
    const FORGED: usize = 40;
    let env = TestEnv::new()?;
    let mut d = env
        .daemon_with_env(
            "victim",
            &[],
            &[
                ("PEERIX_LIMITS__NEW_SENDERS_PER_SECOND", "2"),
                ("PEERIX_LIMITS__NEW_SENDERS_BURST", "4"),
            ],
        )
        .await?;
    let mut victim = Member::join(&d, "flooded", |_| {}).await?;
    let own_ns = namespace::escape(&victim.id, true);
    let mut packets = Vec::new();
    for _ in 0..FORGED {
        let mut codec = SignalingCodec::new(Identity::generate(), CodecOptions::default());
        let invoke = codec.seal(
            SignalType::Invoke,
            Some(&[serde_json::json!({"forged": true})]),
            &victim.id,
        )?;
        packets.push(datagram(&own_ns, &invoke));
    }
    assert!(blast(&env, &packets)? >= FORGED);

    let limit_error = victim
        .wait_for("LIMIT_EXCEEDED error", Duration::from_secs(5), |e| {
            e.name == "error"
                && value(e, "error").is_some_and(|v| v.to_string().contains("LIMIT_EXCEEDED"))
        })
        .await?;
    assert_eq!(limit_error.room.as_deref(), Some("flooded"));
    let text = value(&limit_error, "error")
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(text.contains("limits.new_senders_per_second"), "{text}");
    // In 3 s, at most the burst plus 2 per second were taken up (each made a connection).
    let mut started = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Ok(_)) = tokio::time::timeout_at(
        until,
        victim.wait_for("connection:new", Duration::from_secs(3), |e| {
            e.name == "connection:new"
        }),
    )
    .await
    {
        started += 1;
    }
    assert!(
        (1..=4 + 2 * 4).contains(&started),
        "{started} of {FORGED} forged senders taken up in 3 s at 2/s with a burst of 4"
    );
    assert!(d.is_running(), "{}", d.log_tail());

    // A real peer joining after the flood gets in.
    let d2 = env.daemon("friend", &[]).await?;
    let friend = Member::join(&d2, "flooded", |_| {}).await?;
    victim
        .wait_for("friend connected", Duration::from_secs(20), |e| {
            is(e, "connection:connected", &friend.id)
        })
        .await?;
    Ok(())
}
