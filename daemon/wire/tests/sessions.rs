//! Checks the crate against the real Chromium captures in
//! `shared/peerix-vectors/*.json` (see that directory's README).

use std::path::PathBuf;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use peerix_wire::base62;
use peerix_wire::control::{self, ControlMessage};
use peerix_wire::frame::Frame;
use peerix_wire::identity::Identity;
use peerix_wire::namespace::escape;
use peerix_wire::packet::crypto;
use peerix_wire::packet::{
    CodecOptions, Opened, Packet, SignalingCodec, FLAG_COMPRESSED, FLAG_ENCRYPTED,
};
use peerix_wire::transfer::{Outcome, PayloadType, Reassembler};
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peerix-vectors");
    assert!(
        dir.is_dir(),
        "peerix test vectors missing: expected directory {}",
        dir.display()
    );
    dir
}

fn sessions() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(vectors_dir()).expect("read vectors dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let text = std::fs::read_to_string(&path).expect("read session");
            let v: Value = serde_json::from_str(&text).expect("session JSON");
            assert_eq!(v["format"], "peerix-nats-capture/1");
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(out.len(), 8, "expected 8 session files");
    out
}

fn b64(v: &Value) -> Vec<u8> {
    STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("valid base64")
}

fn key32(v: &[u8]) -> [u8; 32] {
    v.try_into().expect("32-byte key")
}

fn identity_of(peer: &Value) -> Option<Identity> {
    let d = peer["keyPair"]["privateJwk"]["d"].as_str()?;
    let secret = URL_SAFE_NO_PAD.decode(d).expect("jwk d");
    Some(Identity::from_secret_bytes(&secret).expect("valid scalar"))
}

fn options(s: &Value) -> (bool, CodecOptions) {
    let o = &s["room_options"];
    (
        o["namespaceHashing"].as_bool().unwrap(),
        CodecOptions {
            compression: o["signalingCompression"].as_bool().unwrap(),
            encryption: o["signalingEncryption"].as_bool().unwrap(),
        },
    )
}

#[test]
fn identities_keys_and_subjects() {
    for (name, s) in sessions() {
        let (hashing, opts) = options(&s);
        let room = s["room_id"].as_str().unwrap();
        for p in ["A", "B"] {
            let peer = &s["peers"][p];
            let id = peer["id"].as_str().unwrap();
            if !peer["id_bytes_b64"].is_null() {
                assert_eq!(
                    base62::encode(&b64(&peer["id_bytes_b64"])),
                    id,
                    "{name} {p}"
                );
                assert_eq!(
                    base62::decode_padded(id, 33).unwrap(),
                    b64(&peer["id_bytes_b64"])
                );
            } else {
                assert!(
                    !opts.encryption,
                    "{name}: id bytes missing with encryption on"
                );
                assert_eq!(base62::encode(&base62::decode_padded(id, 33).unwrap()), id);
            }
            assert_eq!(
                peer["room_subject"].as_str().unwrap(),
                escape(room, hashing),
                "{name}"
            );
            assert_eq!(
                peer["peer_subject"].as_str().unwrap(),
                escape(id, hashing),
                "{name}"
            );
            if opts.encryption {
                let ident = identity_of(peer).expect("private key present");
                assert_eq!(ident.id(), id, "{name} {p}");
                for dk in peer["derived_keys"].as_array().unwrap() {
                    let remote = b64(&dk["remotePublicRaw_b64"]);
                    // uncompressed point → compressed sender bytes
                    let mut compressed = vec![if remote[64] & 1 == 0 { 2 } else { 3 }];
                    compressed.extend_from_slice(&remote[1..33]);
                    assert_eq!(
                        ident.shared_key(&compressed).unwrap().to_vec(),
                        b64(&dk["aesKeyRaw_b64"]),
                        "{name}"
                    );
                }
            }
        }
        if opts.encryption {
            let a = identity_of(&s["peers"]["A"]).unwrap();
            let b = identity_of(&s["peers"]["B"]).unwrap();
            let key = b64(&s["ecdh_shared_aes_key_b64"]);
            assert_eq!(
                a.shared_key(s["peers"]["B"]["id"].as_str().unwrap())
                    .unwrap()
                    .to_vec(),
                key
            );
            assert_eq!(b.shared_key(a.id()).unwrap().to_vec(), key);
        } else {
            assert!(s["ecdh_shared_aes_key_b64"].is_null());
        }
    }
}

#[test]
fn nats_messages_decode() {
    let mut total = 0;
    for (name, s) in sessions() {
        let (_, opts) = options(&s);
        let key = if opts.encryption {
            Some(key32(&b64(&s["ecdh_shared_aes_key_b64"])))
        } else {
            None
        };
        let a_id = s["peers"]["A"]["id"].as_str().unwrap();
        let b_id = s["peers"]["B"]["id"].as_str().unwrap();
        let mut codecs: Vec<(String, SignalingCodec)> = Vec::new();
        for p in ["A", "B"] {
            let peer = &s["peers"][p];
            let codec = match identity_of(peer) {
                Some(ident) => SignalingCodec::new(ident, opts),
                None => SignalingCodec::without_encryption(
                    peer["id"].as_str().unwrap(),
                    opts.compression,
                )
                .unwrap(),
            };
            codecs.push((peer["id"].as_str().unwrap().to_owned(), codec));
        }
        for m in s["nats_messages"].as_array().unwrap() {
            total += 1;
            let bytes = b64(&m["payload_b64"]);
            let d = &m["decoded"];
            let p =
                Packet::decode(&bytes).unwrap_or_else(|e| panic!("{name} seq {}: {e}", m["seq"]));
            assert_eq!(p.encode(), bytes, "{name}: re-encoding is byte-exact");
            assert_eq!(
                u64::from(p.signal_type.as_u32()),
                d["type"].as_u64().unwrap()
            );
            assert_eq!(u64::from(p.flags), d["flags"].as_u64().unwrap());
            assert_eq!(p.sender, b64(&d["sender_b64"]));
            let sender_id = base62::encode(&p.sender);
            assert_eq!(sender_id, d["sender_id"].as_str().unwrap());
            assert_eq!(p.payload.len() as u64, d["payload_len"].as_u64().unwrap());
            let expected_subject = match m["subject_role"].as_str().unwrap() {
                "room" => s["peers"]["A"]["room_subject"].as_str().unwrap(),
                "peer:A" => s["peers"]["A"]["peer_subject"].as_str().unwrap(),
                "peer:B" => s["peers"]["B"]["peer_subject"].as_str().unwrap(),
                other => panic!("unknown role {other}"),
            };
            assert_eq!(m["subject"].as_str().unwrap(), expected_subject);

            // manual pipeline
            let mut data = p.payload.clone();
            if p.flags & FLAG_ENCRYPTED != 0 {
                assert_eq!(data[..12], b64(&d["aes_iv_b64"])[..]);
                data = crypto::open_payload(&key.expect("key for encrypted packet"), &data)
                    .expect("decrypts");
                assert_eq!(data.len() as u64, d["decrypted_len"].as_u64().unwrap());
            }
            if p.flags & FLAG_COMPRESSED != 0 {
                data = crypto::zlib_decompress(&data, 1 << 24).expect("inflates");
                assert_eq!(data.len() as u64, d["inflated_len"].as_u64().unwrap());
            }
            let expected = &d["plaintext_json"];
            if data.is_empty() {
                assert!(expected.is_null());
            } else {
                let v: Value = serde_json::from_slice(&data).unwrap();
                assert_eq!(&v, expected, "{name} seq {}", m["seq"]);
            }

            // codec pipeline from both peers' point of view
            for (own_id, codec) in codecs.iter_mut() {
                let opened = codec
                    .open(&bytes)
                    .unwrap_or_else(|e| panic!("{name} seq {}: {e}", m["seq"]));
                if *own_id == sender_id {
                    assert_eq!(opened, Opened::Own);
                } else {
                    let Opened::Signal(sig) = opened else {
                        panic!("expected signal")
                    };
                    assert_eq!(sig.sender_id, sender_id);
                    assert!(sig.sender_id == a_id || sig.sender_id == b_id);
                    let want = expected.as_array().cloned().unwrap_or_default();
                    assert_eq!(sig.message, want);
                }
            }
        }
    }
    assert!(total > 50, "only {total} messages");
}

#[test]
fn aes_operations_known_answers() {
    let mut n = 0;
    for (name, s) in sessions() {
        for p in ["A", "B"] {
            for op in s["aes_operations"][p].as_array().unwrap() {
                let key = key32(&b64(&op["key_b64"]));
                let iv: [u8; 12] = b64(&op["iv_b64"]).try_into().unwrap();
                let pt = b64(&op["plaintext_b64"]);
                let ct = b64(&op["ciphertext_b64"]);
                assert_eq!(
                    crypto::aes_gcm_encrypt(&key, &iv, &pt).unwrap(),
                    ct,
                    "{name} {p}"
                );
                assert_eq!(
                    crypto::aes_gcm_decrypt(&key, &iv, &ct).unwrap(),
                    pt,
                    "{name} {p}"
                );
                let mut bad = ct.clone();
                bad[0] ^= 1;
                assert!(crypto::aes_gcm_decrypt(&key, &iv, &bad).is_err());
                n += 1;
            }
        }
    }
    assert!(n > 20, "only {n} AES operations");
}

#[test]
fn datachannel_frames() {
    let mut checked = 0;
    for (name, s) in sessions() {
        for p in ["A", "B"] {
            let mut reassembler = Reassembler::default();
            let mut completions = Vec::new();
            for f in s["datachannel_frames"][p].as_array().unwrap() {
                let bytes = b64(&f["data_b64"]);
                let label = f["label"].as_str().unwrap();
                if f["truncated"].as_bool().unwrap() {
                    // Only a prefix is stored: decoding must fail cleanly.
                    assert!(bytes.len() < f["len"].as_u64().unwrap() as usize);
                    if label.is_empty() {
                        assert!(ControlMessage::decode(&bytes).is_err());
                    } else {
                        assert!(Frame::decode(&bytes).is_err());
                    }
                    continue;
                }
                assert_eq!(bytes.len() as u64, f["len"].as_u64().unwrap());
                checked += 1;
                if label.is_empty() {
                    let msg =
                        ControlMessage::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                    let (event, json) = control::decode_raw(&bytes).unwrap();
                    assert_eq!(control::encode_raw(event, json), bytes);
                    if let ControlMessage::ChannelRequest(o) = &msg {
                        assert_eq!(msg.encode(), bytes, "{name}: channel request byte-exact");
                        assert_eq!(o.label, "chat");
                    }
                } else {
                    assert_eq!(label, "chat");
                    let frame = Frame::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(frame.encode(), bytes, "{name}: frame byte-exact");
                    for o in reassembler.feed(frame) {
                        if let Outcome::Completed {
                            payload_type,
                            data,
                            send_ack,
                            ..
                        } = o
                        {
                            assert!(send_ack.is_some());
                            completions.push((payload_type, data));
                        }
                    }
                }
            }
            // Messages p sent are what the other peer received.
            let other = if p == "A" { "B" } else { "A" };
            let received = s["received_messages"][other].as_array().unwrap();
            assert!(
                !completions.is_empty(),
                "{name}: no completed messages from {p}"
            );
            for (payload_type, data) in completions {
                let found =
                    received
                        .iter()
                        .any(|r| match (payload_type, r["type"].as_str().unwrap()) {
                            (PayloadType::Text, "text") => {
                                r["value"].as_str() == std::str::from_utf8(&data).ok()
                            }
                            (PayloadType::Bytes, "bytes") => b64(&r["value"]) == data,
                            (PayloadType::Json, "json") => {
                                serde_json::from_slice::<Value>(&data).ok().as_ref()
                                    == Some(&r["value"])
                            }
                            _ => false,
                        });
                assert!(
                    found,
                    "{name}: message from {p} not in received_messages: {payload_type:?}"
                );
            }
        }
    }
    assert!(checked > 50);
}
