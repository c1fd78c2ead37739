//! The test vectors of §11 of the Peerix wire protocol specification.

use peerix_wire::base62;
use peerix_wire::control::{self, ChannelOptions, ControlMessage};
use peerix_wire::frame::Frame;
use peerix_wire::identity::{is_polite, Identity};
use peerix_wire::namespace::escape;
use peerix_wire::packet::crypto;
use peerix_wire::packet::{
    CodecOptions, IceCandidateInit, Opened, Packet, SessionDescription, SignalType, SignalingCodec,
    SignalingError,
};
use peerix_wire::proto;
use peerix_wire::transfer::{Chunker, Outcome, PayloadType, Reassembler};
use serde_json::json;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

const A_SECRET: &str = "8a9a88e37d72eb8d065a843b892c3707c8e62e36a15f9bf5069463c07101b876";
const B_SECRET: &str = "38ce0ccdafdff61023315d1ea4da83f968b59ffe5b794ae0f776c634fffa68a6";
const A_ID: &str = "2FDZnerLHOX5D23sxBi26UB5SRCuhPDrOmIvJFrfNzTn";
const B_ID: &str = "2eHaB6KbFZOQcT3NchbZkKfOIoC5ji8mGK7zmTD0bdiU";
const SHARED: &str = "53ddb02cae67f8e09a80f6485335ad28c28fbe3ff99b8e0cc7ccc4bdff6ddf06";
const PACKET_D: &str = "080510031a2102ba89dcacdf7b9b77f8da7a50b5ffd36b773e38baef40d34072c67583eb6c00bd22c201a0a1a2a3a4a5a6a7a8a9aaabc3f2085299e79f0eae049fbc175d7e4293db4b3072a9b747fb4dc42d01681f33a52943d955752d1679f89aca4c5c9a803a43fe5b6785745796d9890eb79e156051397355dc4441bd47f44049d2337b3ae4f75908a1135f8d288b1ec0b0eee2cfdffde6b17f8ee4a112832523c482f500848daac1270d649ab4932bae5a398f721fb2fcfcdc96e81af823c1c18cb5c7ee49092d45e5a661adc73fd5371ebf1a07260e7f72b3803b44f0eb249ee8246a5c392f3dfbac9a";

fn a() -> Identity {
    Identity::from_secret_bytes(&h(A_SECRET)).unwrap()
}
fn b() -> Identity {
    Identity::from_secret_bytes(&h(B_SECRET)).unwrap()
}

fn candidates_d() -> Vec<serde_json::Value> {
    (1..=3)
        .map(|i| {
            json!({
                "candidate": format!("candidate:{i} 1 udp 2122260223 192.0.2.{i} 5000{i} typ host generation 0 ufrag AbCd network-id 1"),
                "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "AbCd"
            })
        })
        .collect()
}

#[test]
fn s11_1_identities_and_s11_3_shared_key() {
    let (a, b) = (a(), b());
    assert_eq!(a.id(), A_ID);
    assert_eq!(b.id(), B_ID);
    assert_eq!(
        a.sender_bytes().to_vec(),
        h("02ba89dcacdf7b9b77f8da7a50b5ffd36b773e38baef40d34072c67583eb6c00bd")
    );
    assert_eq!(
        b.sender_bytes().to_vec(),
        h("0248e4c814f75118e2c392e32fc5fc066c41ff370c5728e164265a306badbdbf50")
    );
    assert_eq!(a.shared_key(B_ID).unwrap().to_vec(), h(SHARED));
    assert_eq!(b.shared_key(A_ID).unwrap().to_vec(), h(SHARED));
    assert_eq!(b.shared_key(&a.sender_bytes()).unwrap().to_vec(), h(SHARED));
    // A is impolite, B polite, although A's key is numerically larger.
    assert!(!is_polite(A_ID, B_ID));
    assert!(is_polite(B_ID, A_ID));
}

#[test]
fn s11_2_namespaces() {
    let table = [
        ("default", "dcjHO465qAJI1IZONIXMIkFG0xWJrBMJqIdGY94W88L"),
        ("my-room", "kt5sJF8R3JgTW2WOGWtOHhnzkniNtCjhEywWtylBd43"),
        ("sandbox", "HyrkEDccxy8Y3GsWTEMRFjGEtR9GTwe7Dr64v6cnkv2"),
        ("Default", "7Zl06Y3NdVcvjjl8HJRRtftYV6hlPqhsJxWigH7tWtn"),
        ("my room!", "xwqmVdKRMagIS78ExN1yG3fh4tUlS6TyBBAWZyxLxLG"),
        ("", "RZwTDmWjELXeEmMEb0eIIegKayGGUPNsuJweEPhlXi5"),
        ("room-32", "CFPOOHmgBgdFmoTgEh4C7BvZgRYzLxB2w0oK7A7YM"),
        ("room-91", "hkF4JO7N2LZw6MCAt6qBv658B81WIvUPaVDiHmI081"),
        (A_ID, "T7n7wLS3qHXrycjxGpCmqW3Faj0LcfKdBGAdbku9lbm"),
        (B_ID, "6COZAvdPED7xEVB4nyeJL7EWxeqwqvhrsJifLznSfLJ"),
    ];
    for (input, out) in table {
        assert_eq!(escape(input, true), out, "{input:?}");
    }
    assert_eq!(escape("room-32", true).len(), 41);
    assert_eq!(escape("room-91", true).len(), 42);
    assert_eq!(escape("my room!", false), "my_room_");
    assert_eq!(escape("a😀b", false), "a_b");
    assert_eq!(escape(A_ID, false), A_ID);
}

#[test]
fn s11_4_packets() {
    let mut ca = SignalingCodec::new(a(), CodecOptions::default());
    let mut cb = SignalingCodec::new(b(), CodecOptions::default());
    // (a) announce
    let ann = ca.seal(SignalType::Announce, None, "").unwrap();
    assert_eq!(ann, h("08 01 10 00 1a 21 02ba89dcacdf7b9b77f8da7a50b5ffd36b773e38baef40d34072c67583eb6c00bd 22 00"));
    assert!(
        matches!(cb.open(&ann).unwrap(), Opened::Signal(s) if s.signal_type == SignalType::Announce && s.message.is_empty() && s.sender_id == A_ID)
    );
    // (b) invoke B → A, encrypted, not compressed (zlib not shorter)
    let iv: [u8; 12] = h("000102030405060708090a0b").try_into().unwrap();
    let inv = cb
        .seal_with_iv(
            SignalType::Invoke,
            Some(&[json!({"name": "Alice"})]),
            A_ID,
            iv,
        )
        .unwrap();
    assert_eq!(inv, h("080210021a210248e4c814f75118e2c392e32fc5fc066c41ff370c5728e164265a306badbdbf50222e000102030405060708090a0bb485a5726c53e6c5b218476d16115c9440b6a39f8d6a6253f9b701eed588f47c1a10"));
    // (c) same, plain
    let mut plain = SignalingCodec::new(
        b(),
        CodecOptions {
            compression: false,
            encryption: false,
        },
    );
    let inv_c = plain
        .seal(SignalType::Invoke, Some(&[json!({"name": "Alice"})]), A_ID)
        .unwrap();
    assert_eq!(inv_c, h("080210001a210248e4c814f75118e2c392e32fc5fc066c41ff370c5728e164265a306badbdbf5022125b7b226e616d65223a22416c696365227d5d"));
    // (d) foreign zlib output: decrypt + inflate
    let d = h(PACKET_D);
    let p = Packet::decode(&d).unwrap();
    assert_eq!(
        (p.signal_type, p.flags, p.payload.len()),
        (SignalType::Candidate, 3, 194)
    );
    let decrypted = crypto::open_payload(&h(SHARED).try_into().unwrap(), &p.payload).unwrap();
    assert_eq!(decrypted, h("789cc5cec10ac2300c06e057093dcf91a628b89b0882a04f201eaa89b3c8b2d175a888efee1c82a75df5961f92fcdfee618e5e39b04f628aef5c58b0d0710364896886440eec9c72cc29b73045440be9dec0b96e1394a2127d0ab50242778abe84c561c9a092ae75bc4c0283359969b9d906ee5bf013364165ad2c37536066ba56a2fa4a56fd7d259afac5f717f3ccc68c346ea4c148ff37ba71a31b8cee67c6fd0bb5049840"));
    let inflated = crypto::zlib_decompress(&decrypted, 1 << 20).unwrap();
    assert_eq!(inflated.len(), 493);
    let Opened::Signal(sig) = cb.open(&d).unwrap() else {
        panic!()
    };
    assert_eq!(sig.message, candidates_d());
    let cands: Vec<IceCandidateInit> = sig
        .message
        .iter()
        .filter_map(IceCandidateInit::from_value)
        .collect();
    assert_eq!(cands.len(), 3);
    assert_eq!(cands[2].username_fragment.as_deref(), Some("AbCd"));
    assert_eq!(ca.open(&d).unwrap(), Opened::Own);
    // our own (d): compressed + encrypted, opens on the other side
    let ours = ca
        .seal_with_iv(
            SignalType::Candidate,
            Some(&candidates_d()),
            B_ID,
            h("a0a1a2a3a4a5a6a7a8a9aaab").try_into().unwrap(),
        )
        .unwrap();
    assert_eq!(Packet::decode(&ours).unwrap().flags, 3);
    assert!(matches!(cb.open(&ours).unwrap(), Opened::Signal(s) if s.message == candidates_d()));
}

fn raw(fields: &[(u32, Result<u32, &[u8]>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        match v {
            Ok(x) => proto::put_uint32(*n, *x, &mut out),
            Err(b) => proto::put_bytes(*n, b, &mut out),
        }
    }
    out
}

#[test]
fn s11_5_decoder_acceptance() {
    let bs = b().sender_bytes();
    let mut enc = SignalingCodec::new(a(), CodecOptions::default());
    let mut plain = SignalingCodec::new(
        a(),
        CodecOptions {
            compression: true,
            encryption: false,
        },
    );
    let sig = |o: Result<Opened, SignalingError>| match o {
        Ok(Opened::Signal(s)) => s,
        other => panic!("expected signal, got {other:?}"),
    };
    // field 4 missing → rejected
    assert!(matches!(
        enc.open(&raw(&[(1, Ok(1)), (2, Ok(0)), (3, Err(&bs))])),
        Err(SignalingError::InvalidPacket(_))
    ));
    // field 2 missing → accepted
    let s = sig(enc.open(&raw(&[(1, Ok(1)), (3, Err(&bs)), (4, Err(b""))])));
    assert_eq!(s.sender_id, B_ID);
    // reverse order + unknown field 9
    let s = sig(plain.open(&raw(&[
        (9, Ok(7)),
        (4, Err(b"[1]")),
        (3, Err(&bs)),
        (2, Ok(0)),
        (1, Ok(4)),
    ])));
    assert_eq!(
        (s.signal_type, s.message),
        (SignalType::Answer, vec![json!(1)])
    );
    // type 6
    let e = enc
        .open(&raw(&[
            (1, Ok(6)),
            (2, Ok(0)),
            (3, Err(&bs)),
            (4, Err(b"")),
        ]))
        .unwrap_err();
    assert!(matches!(e, SignalingError::InvalidMessage(_)));
    assert_eq!(e.code(), "SIGNALING_ERROR");
    // object, not array
    assert!(matches!(
        plain.open(&raw(&[
            (1, Ok(2)),
            (2, Ok(0)),
            (3, Err(&bs)),
            (4, Err(b"{}"))
        ])),
        Err(SignalingError::InvalidMessage(_))
    ));
    // not encrypted
    assert_eq!(
        enc.open(&raw(&[
            (1, Ok(2)),
            (2, Ok(0)),
            (3, Err(&bs)),
            (4, Err(b"[]"))
        ])),
        Err(SignalingError::NotEncrypted)
    );
    // invalid point
    let mut bad = bs;
    bad[0] = 0x05;
    assert!(matches!(
        enc.open(&raw(&[
            (1, Ok(1)),
            (2, Ok(0)),
            (3, Err(&bad)),
            (4, Err(b""))
        ])),
        Err(SignalingError::KeyImport(_))
    ));
    // encryption off, bit 0 on plain JSON
    let s = sig(plain.open(&raw(&[
        (1, Ok(2)),
        (2, Ok(1)),
        (3, Err(&bs)),
        (4, Err(b"[null]")),
    ])));
    assert_eq!(s.message, vec![json!(null)]);
    // encryption off, 32-byte sender
    let s = sig(plain.open(&raw(&[
        (1, Ok(2)),
        (2, Ok(0)),
        (3, Err(&bs[1..])),
        (4, Err(b"[]")),
    ])));
    assert_eq!(s.sender_id, base62::encode(&bs[1..]));
    // empty sender
    assert_eq!(
        enc.open(&raw(&[
            (1, Ok(1)),
            (2, Ok(0)),
            (3, Err(b"")),
            (4, Err(b""))
        ])),
        Ok(Opened::EmptySender)
    );
    // non-minimal 5-byte type
    let mut p = vec![0x08, 0x81, 0x80, 0x80, 0x80, 0x00];
    p.extend(raw(&[(2, Ok(0)), (3, Err(&bs)), (4, Err(b""))]));
    assert_eq!(sig(enc.open(&p)).signal_type, SignalType::Announce);
}

#[test]
fn s11_6_control_frames() {
    let answer =
        h("08 01 12 23 5b7b2274797065223a22616e73776572222c22736470223a22763d305c725c6e227d5d");
    let ControlMessage::Signal(v) = ControlMessage::decode(&answer).unwrap() else {
        panic!()
    };
    let d = SessionDescription::from_value(&v[0]).unwrap();
    assert_eq!((d.kind.as_str(), d.sdp.as_str()), ("answer", "v=0\r\n"));
    assert_eq!(
        control::encode_raw(1, &serde_json::to_vec(&[&d]).unwrap()),
        answer
    );

    let chat = h("080212107b226c6162656c223a2263686174227d");
    let req = ControlMessage::ChannelRequest(ChannelOptions {
        label: "chat".into(),
        ..Default::default()
    });
    assert_eq!(req.encode(), chat);
    assert_eq!(ControlMessage::decode(&chat).unwrap(), req);

    let cand = h("080112735b7b2263616e646964617465223a2263616e6469646174653a312031207564702031203139322e302e322e3120392074797020686f7374222c227364704d6964223a2230222c227364704d4c696e65496e646578223a302c22757365726e616d65467261676d656e74223a2241624364227d5d");
    let ControlMessage::Signal(v) = ControlMessage::decode(&cand).unwrap() else {
        panic!()
    };
    let c = IceCandidateInit::from_value(&v[0]).unwrap();
    assert_eq!(c.candidate, "candidate:1 1 udp 1 192.0.2.1 9 typ host");
    assert_eq!(
        control::encode_raw(1, &serde_json::to_vec(&[&c]).unwrap()),
        cand
    );
}

#[test]
fn s11_6_data_frames() {
    let hello = h("08 01 18 00 20 01 30 01 42 05 48656c6c6f");
    assert_eq!(
        Chunker::new(1, PayloadType::Text, None, b"Hello".to_vec())
            .unwrap()
            .collect::<Vec<_>>(),
        vec![hello.clone()]
    );
    let mut r = Reassembler::default();
    let o = r.feed_bytes(&hello);
    assert!(
        matches!(o.last(), Some(Outcome::Completed { data, send_ack: Some(ack), payload_type: PayloadType::Text, .. }) if data == b"Hello" && ack == &h("08 01 10 01 30 01"))
    );
    let json_frame =
        h("08 02 18 00 20 02 30 01 3a 0c 7b226e616d65223a2278227d 42 07 7b2261223a317d");
    assert_eq!(
        Chunker::new(
            2,
            PayloadType::Json,
            Some(br#"{"name":"x"}"#.to_vec()),
            br#"{"a":1}"#.to_vec()
        )
        .unwrap()
        .collect::<Vec<_>>(),
        vec![json_frame.clone()]
    );
    assert_eq!(Frame::decode(&json_frame).unwrap().encode(), json_frame);
    assert_eq!(Frame::ask_abort(5).encode(), h("08 05 10 01 28 01"));
    assert_eq!(Frame::sender_abort(3).encode(), h("08 03 28 01"));
    let o = r.feed_bytes(&h("08 06 18 00 20 01 30 01"));
    assert!(
        matches!(o.last(), Some(Outcome::Completed { data, send_ack: Some(ack), .. }) if data.is_empty() && ack == &h("08 06 10 01 30 01"))
    );
    // first frame without index: dropped, never acked
    assert!(r
        .feed_bytes(&h("08 01 20 01 30 01 42 05 48656c6c6f"))
        .is_empty());

    // 40 000-byte message
    let data: Vec<u8> = (0..40_000u32).map(|i| (i % 256) as u8).collect();
    let frames: Vec<_> = Chunker::new(
        3,
        PayloadType::Bytes,
        Some(br#"{"n":"f"}"#.to_vec()),
        data.clone(),
    )
    .unwrap()
    .collect();
    let sizes: Vec<_> = frames.iter().map(Vec::len).collect();
    assert_eq!(sizes, [16_333, 16_329, 7_378]);
    let headers = [
        h("08 03 18 00 20 04 30 00 3a 09 7b226e223a2266227d 42 b7 7f"),
        h("08 03 18 01 30 00 42 c0 7f"),
        h("08 03 18 02 30 01 42 c9 39"),
    ];
    let mut offset = 0;
    for (f, hd) in frames.iter().zip(headers) {
        assert_eq!(&f[..hd.len()], &hd[..]);
        let body = &f[hd.len()..];
        assert_eq!(body, &data[offset..offset + body.len()]);
        offset += body.len();
    }
    assert_eq!(offset, 40_000);
}

#[test]
fn s11_7_base62() {
    assert_eq!(base62::encode(&[]), "");
    assert_eq!(base62::encode(&[0, 0, 0]), "0");
    assert_eq!(base62::encode(&[0x24]), "A");
    assert_eq!(base62::encode(&[0, 0, 1]), "1");
    assert_eq!(base62::encode(&[0x3e]), "10");
    let mut v = vec![0u8];
    v.extend([0xff; 32]);
    let t = base62::encode(&v);
    assert_eq!(t, "YHJSKWDa6oz1al1yMhwzwM8llg7hJNUca2J5RoW8xP1");
    assert_eq!(base62::decode_padded(&t, 33).unwrap(), v);
    assert_eq!(
        base62::encode(&[0xff; 33]),
        "42EBs5Q5HIpqAOGOrBmmuHkKs7My5f842dtgccuY3hEIf"
    );
    assert_eq!(
        base62::decode("42EBs5Q5HIpqAOGOrBmmuHkKs7My5f842dtgccuY3hEIf").unwrap(),
        vec![0xff; 33]
    );
    let mut a = vec![0u8; 32];
    a.push(0x24);
    assert_eq!(base62::decode_padded("A", 33).unwrap(), a);
}

#[test]
fn s11_8_negative_vectors() {
    // truncated varints, 6-byte varints, wrong wire type, bool 2, field 0
    assert!(Packet::decode(&[0x08, 0x80]).is_err());
    assert!(Packet::decode(&[0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x22, 0x00]).is_err());
    assert!(Packet::decode(&[0x0a, 0x00, 0x22, 0x00]).is_err());
    assert!(Frame::decode(&[0x08, 0x01, 0x10, 0x02]).is_err());
    assert!(Frame::decode(&[0x00, 0x00]).is_err());
    assert!(ControlMessage::decode(&[0x08, 0x01, 0x12]).is_err());
    // bad GCM tag
    let mut ca = SignalingCodec::new(a(), CodecOptions::default());
    let mut cb = SignalingCodec::new(b(), CodecOptions::default());
    let mut p = ca
        .seal(SignalType::Offer, Some(&candidates_d()), B_ID)
        .unwrap();
    let n = p.len();
    p[n - 5] ^= 0x40;
    assert!(matches!(cb.open(&p), Err(SignalingError::Decrypt(_))));
    // zlib with bad Adler-32: no inflate error, bytes used as-is → JSON error
    let json = serde_json::to_vec(&candidates_d()).unwrap();
    let mut z = crypto::zlib_compress(&json);
    let zn = z.len();
    z[zn - 2] ^= 0x01;
    let key: [u8; 32] = h(SHARED).try_into().unwrap();
    let payload = crypto::seal_payload(&key, &[3; 12], &z).unwrap();
    let pkt = Packet {
        signal_type: SignalType::Candidate,
        flags: 3,
        sender: a().sender_bytes().to_vec(),
        payload,
    }
    .encode();
    assert!(matches!(cb.open(&pkt), Err(SignalingError::Json(_))));
    // non-array JSON
    let payload = crypto::seal_payload(&key, &[3; 12], b"\"str\"").unwrap();
    let pkt = Packet {
        signal_type: SignalType::Candidate,
        flags: 2,
        sender: a().sender_bytes().to_vec(),
        payload,
    }
    .encode();
    assert!(matches!(
        cb.open(&pkt),
        Err(SignalingError::InvalidMessage(_))
    ));
}
