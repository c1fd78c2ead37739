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
    assert!(blast(&env, &packets)? >= packets.len());

    let mut codes = Vec::new();
    for _ in 0..5 {
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
