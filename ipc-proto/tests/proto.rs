//! Round trips, error classification and robustness of the codec.

use peerix_ipc_proto::rmpv::Value;
use peerix_ipc_proto::*;
use proptest::prelude::*;

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn roundtrip_client(m: ClientMessage) {
    let frame = encode_frame(&m).expect("encode");
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(len, frame.len() - 4);
    assert_eq!(decode_client(&frame[4..]).expect("decode"), m);
}

fn roundtrip_daemon(m: DaemonMessage) {
    let frame = encode_frame(&m).expect("encode");
    assert_eq!(decode_daemon(&frame[4..]).expect("decode"), m);
}

fn bad_request(op: &str, args: Value) -> String {
    match Op::parse(op, args) {
        Err(ProtoError::BadRequest(m)) => m,
        other => panic!("expected BAD_REQUEST, got {other:?}"),
    }
}

#[test]
fn client_messages_roundtrip() {
    roundtrip_client(ClientMessage::Hello(Hello {
        version: 1,
        client: "x/1".into(),
        capabilities: vec!["a".into()],
    }));
    roundtrip_client(ClientMessage::Request(Request {
        id: u64::MAX,
        op: "status".into(),
        args: map(vec![]),
    }));
}

#[test]
fn daemon_messages_roundtrip() {
    roundtrip_daemon(DaemonMessage::Welcome(Welcome {
        version: 1,
        daemon: "peerixd/0.1.0".into(),
        id: "me".into(),
        capabilities: vec![],
        max_frame: 1024,
        epoch: 9,
    }));
    roundtrip_daemon(DaemonMessage::Reply(Reply::ok(
        1,
        Value::Binary(vec![0, 255]),
    )));
    roundtrip_daemon(DaemonMessage::Reply(Reply::err(
        2,
        ErrorCode::Other("NEW_CODE".into()),
        "m",
    )));
    roundtrip_daemon(DaemonMessage::Event(Event {
        seq: 1,
        name: "driver:active".into(),
        room: None,
        data: map(vec![("driver", Value::from("nats"))]),
    }));
    roundtrip_daemon(DaemonMessage::Progress(Progress {
        id: 3,
        peer: None,
        label: "l".into(),
        current: 1,
        total: Some(2),
        done: false,
        error: None,
    }));
    roundtrip_daemon(DaemonMessage::Error(ErrorBody::new(
        ErrorCode::Internal,
        "x",
    )));
}

#[test]
fn error_codes_roundtrip_and_tolerate_unknown() {
    for c in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_wire(c.as_str()), c);
        let v = to_value(&c).expect("value");
        assert_eq!(v.as_str(), Some(c.as_str()));
    }
    assert_eq!(ErrorCode::from_wire("FOO"), ErrorCode::Other("FOO".into()));
    let body: ErrorBody = from_value(map(vec![
        ("code", Value::from("FUTURE")),
        ("message", Value::from("m")),
    ]))
    .expect("decode");
    assert_eq!(body.code, ErrorCode::Other("FUTURE".into()));
}

#[test]
fn request_args_default_to_empty_map() {
    let v = map(vec![
        ("type", Value::from("request")),
        ("id", Value::from(1)),
        ("op", Value::from("status")),
    ]);
    let bytes = rmp_serde_encode(&v);
    match decode_client(&bytes).expect("decode") {
        ClientMessage::Request(r) => {
            assert_eq!(r.args, map(vec![]));
            assert_eq!(r.parse_op().expect("op"), Op::Status);
        }
        other => panic!("{other:?}"),
    }
}

fn rmp_serde_encode(v: &Value) -> Vec<u8> {
    let frame = encode_frame(v).expect("encode");
    frame[4..].to_vec()
}

#[test]
fn ops_roundtrip_through_args() {
    let ops = vec![
        Op::Status,
        Op::Unsubscribe,
        Op::Join(JoinArgs {
            room: "r".into(),
            metadata: Some(Value::from(3)),
            driver: Some("nats".into()),
            options: Some(JoinOptions {
                namespace_hashing: Some(OptionFlag::Bool(true)),
                signaling_compression: Some(OptionFlag::Name("gzip".into())),
                signaling_encryption: None,
                connection_timeout: Some(5000),
                ice_candidate_debounce: Some(50),
                ice_servers: Some(vec![IceServer {
                    urls: vec!["stun:x".into()],
                    username: None,
                    credential: Some("c".into()),
                }]),
                ice_transport_policy: Some(IceTransportPolicy::Relay),
                verify: None,
            }),
            persist: true,
        }),
        Op::Leave(LeaveArgs::new("r")),
        Op::Leave(LeaveArgs {
            room: "r".into(),
            all: true,
        }),
        Op::Peers(PeersArgs { room: "r".into() }),
        Op::Open(OpenArgs {
            room: "r".into(),
            label: "l".into(),
            ordered: Some(false),
            protocol: None,
            max_retransmits: Some(3),
            max_packet_life_time: None,
            to: Some("p".into()),
        }),
        Op::Close(CloseArgs {
            room: "r".into(),
            label: "l".into(),
            to: None,
        }),
        Op::Subscribe(SubscribeArgs {
            events: vec!["*".into(), "connection".into()],
            room: None,
            since: None,
            epoch: None,
        }),
        Op::Subscribe(SubscribeArgs {
            events: vec!["*".into()],
            room: None,
            since: Some(41),
            epoch: Some(7),
        }),
        Op::Inbox(peerix_ipc_proto::InboxArgs {
            room: "r".into(),
            max: Some(3),
        }),
        Op::Send(SendArgs::Start(SendStart {
            room: "r".into(),
            label: "l".into(),
            to: Some("p".into()),
            payload: Payload::Json(map(vec![("a", Value::from(1))])),
            info: Some(map(vec![])),
            more: false,
            progress: false,
        })),
        Op::Send(SendArgs::Start(SendStart {
            room: "r".into(),
            label: "l".into(),
            to: None,
            payload: Payload::Bytes(vec![9; 10]),
            info: None,
            more: true,
            progress: true,
        })),
        Op::Send(SendArgs::Chunk(SendChunk {
            transfer: 7,
            data: Payload::Text("tail".into()),
            more: false,
        })),
        Op::Share(peerix_ipc_proto::ShareArgs {
            room: "r".into(),
            label: "cam".into(),
            tracks: vec![
                peerix_ipc_proto::ShareTrack {
                    codec: "vp8".into(),
                    kind: None,
                    rtp: Some("127.0.0.1:5004".into()),
                },
                peerix_ipc_proto::ShareTrack {
                    codec: "opus".into(),
                    kind: Some("audio".into()),
                    rtp: None,
                },
            ],
            audio_parameters: None,
            video_parameters: Some(peerix_ipc_proto::EncodingParameters {
                max_bitrate: Some(2_000_000),
                max_framerate: Some(30.0),
            }),
        }),
        Op::Unshare(peerix_ipc_proto::UnshareArgs {
            room: "r".into(),
            label: "cam".into(),
        }),
        Op::Frame(peerix_ipc_proto::FrameArgs {
            room: "r".into(),
            track: "t".into(),
            data: vec![1, 2, 3],
            duration: 33_333,
        }),
        Op::Verifier(peerix_ipc_proto::VerifierArgs {
            room: "r".into(),
            release: false,
        }),
        Op::Verifier(peerix_ipc_proto::VerifierArgs {
            room: "r".into(),
            release: true,
        }),
        Op::Verify(peerix_ipc_proto::VerifyArgs {
            room: "r".into(),
            request: 3,
            accept: true,
        }),
        Op::Join(JoinArgs {
            room: "r".into(),
            metadata: None,
            driver: None,
            options: Some(peerix_ipc_proto::JoinOptions {
                verify: Some(peerix_ipc_proto::VerifyOptions {
                    mode: peerix_ipc_proto::VerifyMode::Verifier,
                    allow: None,
                    timeout: Some(2500),
                    fallback: Some(peerix_ipc_proto::VerifyFallback::Accept),
                    max_pending: Some(8),
                }),
                ..Default::default()
            }),
            persist: false,
        }),
    ];
    for op in ops {
        let req = Request::from_op(9, &op).expect("request");
        let frame = encode_frame(&ClientMessage::Request(req)).expect("frame");
        match decode_client(&frame[4..]).expect("decode") {
            ClientMessage::Request(r) => assert_eq!(r.parse_op().expect("parse"), op),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn ice_server_urls_accepts_single_string() {
    let op = Op::parse(
        "join",
        map(vec![
            ("room", Value::from("r")),
            (
                "options",
                map(vec![(
                    "iceServers",
                    Value::Array(vec![map(vec![("urls", Value::from("stun:a"))])]),
                )]),
            ),
        ]),
    )
    .expect("parse");
    match op {
        Op::Join(j) => {
            let servers = j.options.and_then(|o| o.ice_servers).expect("servers");
            assert_eq!(servers[0].urls, vec!["stun:a".to_string()]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_op_vs_bad_request() {
    let e = Op::parse("frobnicate", map(vec![])).expect_err("unknown");
    assert_eq!(e.code(), ErrorCode::UnknownOp);
    assert!(e.to_string().contains("frobnicate"));
    let e = Op::parse("join", map(vec![])).expect_err("bad");
    assert_eq!(e.code(), ErrorCode::BadRequest);
    assert!(Op::parse("status", Value::from(1)).is_err());
    assert_eq!(
        Op::parse("status", Value::Nil).expect("nil args"),
        Op::Status
    );
}

#[test]
fn bad_request_names_the_field() {
    assert!(bad_request("join", map(vec![])).contains("`room`"));
    assert!(bad_request("join", map(vec![("room", Value::from(5))])).contains("`room`"));
    assert!(bad_request(
        "join",
        map(vec![
            ("room", Value::from("r")),
            (
                "options",
                map(vec![("connectionTimeout", Value::from("x"))])
            )
        ])
    )
    .contains("`options`"));
    assert!(bad_request("leave", map(vec![])).contains("`room`"));
    assert!(bad_request("peers", map(vec![])).contains("`room`"));
    assert!(bad_request("open", map(vec![("room", Value::from("r"))])).contains("`label`"));
    assert!(bad_request(
        "open",
        map(vec![
            ("room", Value::from("r")),
            ("label", Value::from("l")),
            ("maxRetransmits", Value::from(-1))
        ])
    )
    .contains("`maxRetransmits`"));
    assert!(bad_request("close", map(vec![("label", Value::from("l"))])).contains("`room`"));
    assert!(bad_request("subscribe", map(vec![])).contains("`events`"));
    assert!(bad_request(
        "subscribe",
        map(vec![(
            "events",
            Value::Array(vec![Value::from("Bad Name")])
        )])
    )
    .contains("`events`"));
    assert!(bad_request("send", map(vec![("room", Value::from("r"))])).contains("`type`"));
    assert!(bad_request(
        "send",
        map(vec![
            ("room", Value::from("r")),
            ("type", Value::from("text"))
        ])
    )
    .contains("`data`"));
    assert!(bad_request(
        "send",
        map(vec![
            ("room", Value::from("r")),
            ("type", Value::from("bytes")),
            ("data", Value::from("not bin"))
        ])
    )
    .contains("`data`"));
    assert!(bad_request(
        "send",
        map(vec![
            ("room", Value::from("r")),
            ("type", Value::from("text")),
            ("data", Value::from("x")),
            ("info", Value::from(1))
        ])
    )
    .contains("`info`"));
    assert!(bad_request(
        "send",
        map(vec![
            ("room", Value::from("r")),
            ("type", Value::from("json")),
            ("data", Value::from(1)),
            ("more", Value::Boolean(true))
        ])
    )
    .contains("`more`"));
    assert!(bad_request("send", map(vec![("transfer", Value::from(1))])).contains("`data`"));
    assert!(bad_request(
        "send",
        map(vec![
            ("transfer", Value::from("x")),
            ("data", Value::from("d"))
        ])
    )
    .contains("`transfer`"));
}

#[test]
fn send_defaults() {
    let op = Op::parse(
        "send",
        map(vec![
            ("room", Value::from("r")),
            ("type", Value::from("json")),
            ("data", Value::Nil),
        ]),
    )
    .expect("parse");
    match op {
        Op::Send(SendArgs::Start(s)) => {
            assert_eq!(s.label, DEFAULT_LABEL);
            assert_eq!(s.payload, Payload::Json(Value::Nil));
            assert!(!s.more && !s.progress);
        }
        other => panic!("{other:?}"),
    }
    let op = Op::parse(
        "send",
        map(vec![
            ("room", Value::from("r")),
            ("type", Value::from("bytes")),
            ("more", Value::Boolean(true)),
        ]),
    )
    .expect("parse");
    match op {
        Op::Send(SendArgs::Start(s)) => assert_eq!(s.payload, Payload::Bytes(vec![])),
        other => panic!("{other:?}"),
    }
}

#[test]
fn send_fields_of_the_wrong_type_are_named() {
    let base = || {
        vec![
            ("room", Value::from("r")),
            ("label", Value::from("l")),
            ("to", Value::from("p")),
            ("type", Value::from("text")),
            ("data", Value::from("hi")),
            ("more", Value::Boolean(false)),
            ("progress", Value::Boolean(true)),
        ]
    };
    match Op::parse("send", map(base())).expect("parse") {
        Op::Send(SendArgs::Start(s)) => {
            assert_eq!((s.room.as_str(), s.label.as_str()), ("r", "l"));
            assert_eq!(s.to.as_deref(), Some("p"));
            assert!(s.progress && !s.more);
        }
        other => panic!("{other:?}"),
    }
    for (key, bad) in [
        ("room", Value::from(1)),
        ("label", Value::Boolean(true)),
        ("to", Value::Array(vec![])),
        ("type", Value::from("video")),
        ("more", Value::from("yes")),
        ("progress", Value::from(1)),
        ("transfer", Value::from(-1)),
    ] {
        let mut m = base();
        m.retain(|(k, _)| *k != key);
        m.push((key, bad));
        match Op::parse("send", map(m)) {
            Err(ProtoError::BadRequest(e)) => {
                assert!(e.contains(&format!("invalid field `{key}`")), "{key}: {e}")
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    let mut m = base();
    m.retain(|(k, _)| *k != "room");
    match Op::parse("send", map(m)) {
        Err(ProtoError::BadRequest(e)) => assert!(e.contains("missing field `room`"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn into_args_writes_the_same_map_as_to_args() {
    let start = SendStart {
        room: "r".into(),
        label: "l".into(),
        to: Some("p".into()),
        payload: Payload::Text("hi".into()),
        info: Some(map(vec![("k", Value::from(1))])),
        more: true,
        progress: true,
    };
    let ops = [
        Op::Send(SendArgs::Start(start.clone())),
        Op::Send(SendArgs::Start(SendStart {
            to: None,
            info: None,
            more: false,
            progress: false,
            payload: Payload::Bytes(vec![1, 2, 3]),
            ..start
        })),
        Op::Send(SendArgs::Chunk(SendChunk {
            transfer: 7,
            data: Payload::Bytes(vec![9; 10]),
            more: false,
        })),
        Op::Send(SendArgs::Batch(SendBatch {
            room: "r".into(),
            label: "l".into(),
            to: None,
            payloads: vec![Payload::Text("a".into()), Payload::Text("b".into())],
            info: None,
        })),
        Op::Leave(LeaveArgs::new("r")),
    ];
    for op in ops {
        let by_ref = op.to_args().expect("to_args");
        assert_eq!(op.clone().into_args().expect("into_args"), by_ref, "{op:?}");
        assert_eq!(Op::parse(op.name(), by_ref).expect("parse"), op);
    }
}

#[test]
fn a_batch_round_trips_and_keeps_its_order() {
    let batch = SendBatch {
        room: "r".into(),
        label: "l".into(),
        to: Some("p".into()),
        payloads: (0..5u8)
            .map(|i| Payload::Bytes(vec![i; i as usize]))
            .collect(),
        info: Some(map(vec![("k", Value::from(1))])),
    };
    let op = Op::Send(SendArgs::Batch(batch.clone()));
    let back = Op::parse("send", op.to_args().expect("args")).expect("parse");
    assert_eq!(back, op);
    let text = Op::parse(
        "send",
        map(vec![
            ("room", Value::from("r")),
            ("type", Value::from("text")),
            ("batch", Value::Array(vec!["a".into(), "b".into()])),
        ]),
    )
    .expect("parse");
    match text {
        Op::Send(SendArgs::Batch(b)) => {
            assert_eq!(b.label, DEFAULT_LABEL);
            assert_eq!(
                b.payloads,
                vec![Payload::Text("a".into()), Payload::Text("b".into())]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bad_batch_is_refused_naming_what_is_wrong() {
    let with = |kind: &str, batch: Value, extra: Vec<(&str, Value)>| {
        let mut e = vec![
            ("room", Value::from("r")),
            ("type", Value::from(kind)),
            ("batch", batch),
        ];
        e.extend(extra);
        bad_request("send", map(e))
    };
    let bins = |n: usize| Value::Array(vec![Value::Binary(vec![1]); n]);
    assert!(with("bytes", bins(0), vec![]).contains("1 to"));
    assert!(with("bytes", bins(MAX_BATCH + 1), vec![]).contains("1 to"));
    assert!(with("bytes", Value::from("x"), vec![]).contains("array"));
    let mixed = Value::Array(vec![
        Value::Binary(vec![1]),
        Value::Binary(vec![]),
        "s".into(),
    ]);
    assert!(with("bytes", mixed, vec![]).contains("`batch[2]`"));
    assert!(with("text", bins(1), vec![]).contains("`batch[0]`"));
    let nan = Value::Array(vec![Value::from(1), Value::F64(f64::NAN)]);
    assert!(with("json", nan, vec![]).contains("batch[1]"));
    assert!(with("bytes", bins(2), vec![("more", Value::Boolean(true))]).contains("`more`"));
    assert!(
        with("bytes", bins(2), vec![("progress", Value::Boolean(true))]).contains("`progress`")
    );
    assert!(with("bytes", bins(2), vec![("data", Value::Binary(vec![]))]).contains("`data`"));
    assert!(with("bytes", bins(2), vec![("info", Value::from(3))]).contains("`info`"));
}

#[test]
fn frame_decoder_splits_and_resyncs() {
    let a = encode_frame(&DaemonMessage::Error(ErrorBody::new(
        ErrorCode::Timeout,
        "a",
    )))
    .expect("a");
    let garbage: Vec<u8> = {
        let mut g = 3u32.to_be_bytes().to_vec();
        g.extend_from_slice(&[0xc1, 0xc1, 0xc1]); // 0xc1 is never valid MessagePack
        g
    };
    let b = encode_frame(&DaemonMessage::Error(ErrorBody::new(
        ErrorCode::Internal,
        "b",
    )))
    .expect("b");
    let mut stream = a.clone();
    stream.extend_from_slice(&garbage);
    stream.extend_from_slice(&b);
    // Feed byte by byte.
    let mut dec = FrameDecoder::new(64);
    let mut frames = Vec::new();
    for byte in &stream {
        dec.push(std::slice::from_ref(byte));
        while let Some(f) = dec.next_frame().expect("frame") {
            frames.push(f);
        }
    }
    assert_eq!(frames.len(), 3);
    assert!(decode_daemon(&frames[0]).is_ok());
    let e = decode_daemon(&frames[1]).expect_err("garbage");
    assert_eq!(e.code(), ErrorCode::MalformedFrame);
    assert!(decode_daemon(&frames[2]).is_ok());
    assert_eq!(dec.buffered(), 0);
}

#[test]
fn zero_length_frame_is_malformed_not_fatal() {
    let mut dec = FrameDecoder::new(16);
    dec.push(&[0, 0, 0, 0]);
    let f = dec.next_frame().expect("ok").expect("frame");
    assert!(f.is_empty());
    assert_eq!(
        decode_client(&f).expect_err("empty").code(),
        ErrorCode::MalformedFrame
    );
}

#[test]
fn oversized_length_is_fatal() {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    dec.push(&((DEFAULT_MAX_FRAME as u32) + 1).to_be_bytes());
    let e = dec.next_frame().expect_err("too large");
    assert_eq!(e.code(), ErrorCode::FrameTooLarge);
    assert_eq!(
        e,
        FrameError::TooLarge {
            len: DEFAULT_MAX_FRAME as u64 + 1,
            max: DEFAULT_MAX_FRAME as u64
        }
    );
    // Sticky.
    dec.push(&[0; 8]);
    assert!(dec.next_frame().is_err());
    // Exactly max is fine.
    let mut dec = FrameDecoder::new(4);
    dec.push(&[0, 0, 0, 4, 1, 2, 3]);
    assert_eq!(dec.next_frame().expect("ok"), None);
    dec.push(&[4]);
    assert_eq!(dec.next_frame().expect("ok"), Some(vec![1, 2, 3, 4]));
}

#[test]
fn encode_limited_rejects_large() {
    let m = DaemonMessage::Reply(Reply::ok(1, Value::Binary(vec![0; 100])));
    let e = encode_frame_limited(&m, 50).expect_err("too large");
    assert_eq!(e.code(), ErrorCode::FrameTooLarge);
    assert!(encode_frame_limited(&m, 200).is_ok());
}

#[test]
fn sized_encoding_is_the_same_frame_with_room_reserved() {
    let m = DaemonMessage::Reply(Reply::ok(1, Value::Binary(vec![7; 1000])));
    let plain = encode_frame_limited(&m, 5000).expect("plain");
    let sized = encode_frame_sized(&m, 5000, 1000).expect("sized");
    assert_eq!(plain, sized);
    assert!(sized.capacity() >= 1004);
    let e = encode_frame_sized(&m, 50, 1000).expect_err("too large");
    assert_eq!(e.code(), ErrorCode::FrameTooLarge);
}

#[test]
fn malformed_bodies() {
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xc1],
        vec![0x90],                               // empty array
        vec![0x81, 0xa4, b't', b'y', b'p', b'e'], // truncated map
        rmp_serde_encode(&map(vec![("type", Value::from("bogus"))])),
        rmp_serde_encode(&map(vec![("id", Value::from(1))])), // no type
        {
            let mut v = rmp_serde_encode(&map(vec![
                ("type", Value::from("request")),
                ("id", Value::from(1)),
                ("op", Value::from("status")),
            ]));
            v.push(0xc0); // trailing nil
            v
        },
        vec![0xc6, 0xff, 0xff, 0xff, 0xff], // bin32 claiming 4 GiB
        vec![0xdd, 0xff, 0xff, 0xff, 0xff], // array32 claiming 4G elements
    ];
    for body in cases {
        let e = decode_client(&body).expect_err("malformed");
        assert_eq!(e.code(), ErrorCode::MalformedFrame, "{body:?}");
        assert!(decode_daemon(&body).is_err());
    }
    // Client messages are not daemon messages and vice versa.
    let hello = encode_frame(&ClientMessage::Hello(Hello {
        version: 1,
        client: "c".into(),
        capabilities: vec![],
    }))
    .expect("hello");
    assert!(decode_daemon(&hello[4..]).is_err());
}

/// PROTOCOL.md §2/§4: optional `hello` fields may be absent or nil; a bad `version` is
/// `VERSION_MISMATCH` and a wrong-typed optional field `BAD_REQUEST`, each saying what is wrong
/// (not `HANDSHAKE_REQUIRED`).
#[test]
fn hello_optional_fields_and_bad_fields() {
    let hello = |fields: Vec<(&str, Value)>| {
        let mut f = vec![("type", Value::from("hello"))];
        f.extend(fields);
        decode_client(&rmp_serde_encode(&map(f)))
    };
    for ok in [
        vec![("version", Value::from(1))],
        vec![
            ("version", Value::from(1)),
            ("client", Value::Nil),
            ("capabilities", Value::Nil),
        ],
    ] {
        match hello(ok) {
            Ok(ClientMessage::Hello(h)) => {
                assert_eq!((h.version, h.client.as_str()), (1, ""));
                assert!(h.capabilities.is_empty());
            }
            other => panic!("expected a hello, got {other:?}"),
        }
    }
    let cases = [
        (
            vec![],
            ErrorCode::VersionMismatch,
            "missing field `version`",
        ),
        (
            vec![("version", Value::from("1"))],
            ErrorCode::VersionMismatch,
            "must be an unsigned integer",
        ),
        (
            vec![("version", Value::from(-1))],
            ErrorCode::VersionMismatch,
            "must be an unsigned integer",
        ),
        (
            vec![("version", Value::from(1)), ("client", Value::from(5))],
            ErrorCode::BadRequest,
            "`client` must be a str",
        ),
        (
            vec![
                ("version", Value::from(1)),
                ("capabilities", Value::from("events")),
            ],
            ErrorCode::BadRequest,
            "`capabilities` must be an array of str",
        ),
    ];
    for (fields, code, says) in cases {
        let e = hello(fields).expect_err("bad hello");
        assert_eq!(e.code(), code, "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
}

/// PROTOCOL.md §2: maps use string keys. Integer keys were taken as struct field positions.
#[test]
fn integer_map_keys_are_refused() {
    // `{type: hello, 0: 1, 1: "c"}`: positions of `version` and `client` in `Hello`.
    let positional = Value::Map(vec![
        (Value::from("type"), Value::from("hello")),
        (Value::from(0), Value::from(1)),
        (Value::from(1), Value::from("c")),
    ]);
    let e = decode_client(&rmp_serde_encode(&positional)).expect_err("integer keys");
    assert_eq!(e.code(), ErrorCode::MalformedFrame, "{e}");
    assert!(e.to_string().contains("string keys"), "{e}");
    // In `args`, the request can still be answered: BAD_REQUEST naming the map.
    let args = Value::Map(vec![(Value::from(0), Value::from("lobby"))]);
    let e = Op::parse("join", args).expect_err("integer key in args");
    assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
    let options = map(vec![
        ("room", Value::from("lobby")),
        (
            "options",
            Value::Map(vec![(Value::from(0), Value::Boolean(true))]),
        ),
    ]);
    let e = Op::parse("join", options).expect_err("integer key in options");
    assert!(e.to_string().contains("non-string key"), "{e}");
}

/// A `json` send is JSON on the wire: values JSON would rewrite are refused, not changed.
#[test]
fn json_sends_refuse_values_json_would_rewrite() {
    let send = |data: Value| {
        Op::parse(
            "send",
            map(vec![
                ("room", Value::from("r")),
                ("type", Value::from("json")),
                ("data", data),
            ]),
        )
    };
    let bad = [
        (Value::Binary(vec![1, 2]), "bin"),
        (
            Value::Map(vec![(Value::from(1), Value::from("x"))]),
            "non-string key",
        ),
        (Value::Array(vec![Value::F64(f64::NAN)]), "NaN"),
        (map(vec![("a", Value::F32(f32::INFINITY))]), "`data.a`"),
    ];
    for (v, says) in bad {
        let e = send(v).expect_err("refused");
        assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
    assert!(send(map(vec![("a", Value::from(1.5)), ("b", Value::Nil)])).is_ok());
}

#[test]
fn deeply_nested_body_is_rejected_without_overflow() {
    let mut body = vec![0x91u8; 100_000];
    body.push(0xc0);
    assert!(decode_client(&body).is_err());
    assert!(decode_daemon(&body).is_err());
}

#[test]
fn event_filter_matching() {
    let f = EventFilter::parse(&["connection", "channel:message"], Some("r".into())).expect("f");
    assert!(f.matches("connection:new", Some("r")));
    assert!(!f.matches("connection:new", Some("other")));
    assert!(f.matches("channel:message", Some("r")));
    assert!(!f.matches("channel:open", Some("r")));
    assert!(!f.matches("connectionx:new", Some("r")));
    assert!(f.matches("connection:closed", None));
    let all = EventFilter::parse(&["*"], None).expect("all");
    assert!(all.matches("driver:active", None));
    assert_eq!(all, EventFilter::all());
    let g = EventFilter::parse(&["channel:*", "error"], None).expect("g");
    assert!(g.matches("channel:close", None));
    assert!(g.matches("error", Some("r")));
    assert!(!g.matches("driver:active", None));
    for bad in ["", "Bad", "a:b:c", ":x", "x:", "*:*"] {
        assert!(EventPattern::parse(bad).is_err(), "{bad}");
    }
    assert!(EventFilter::parse::<&str>(&[], None).is_err());
}

#[test]
fn typed_event_data() {
    let ev = Event::new(
        1,
        event_names::CONNECTION_CONNECTED,
        Some("r".into()),
        &ConnectionEventData {
            peer: "p".into(),
            state: "connected".into(),
            metadata: Value::Nil,
        },
    )
    .expect("event");
    assert!(matches!(ev.typed().expect("typed"), EventData::Connection(c) if c.peer == "p"));
    let ev = Event::new(
        2,
        event_names::CHANNEL_ERROR,
        None,
        &ChannelErrorData {
            peer: "p".into(),
            id: "p".into(),
            label: "l".into(),
            error: ErrorBody::new(ErrorCode::SendFailed, "x"),
        },
    )
    .expect("event");
    assert!(matches!(
        ev.typed().expect("typed"),
        EventData::ChannelError(_)
    ));
    let ev = Event::new(3, "stream:add", None, &map(vec![])).expect("event");
    assert!(matches!(ev.typed().expect("typed"), EventData::Other(_)));
    let ev = Event::new(4, "channel:message", None, &map(vec![])).expect("event");
    assert_eq!(ev.typed().expect_err("bad").code(), ErrorCode::BadRequest);
    let msg = ChannelMessageData {
        peer: "p".into(),
        id: "p".into(),
        label: "l".into(),
        kind: MessageType::Text,
        data: Value::from("héllo"),
        info: None,
        transfer: 1,
        offset: 0,
        total: None,
        is_final: true,
    };
    let ev = Event::new(5, "channel:message", None, &msg).expect("event");
    let v = ev.data.as_map().expect("map");
    assert!(v.iter().any(|(k, _)| k.as_str() == Some("final")));
    assert!(v
        .iter()
        .any(|(k, v)| k.as_str() == Some("type") && v.as_str() == Some("text")));
    assert_eq!(ev.data_as::<ChannelMessageData>().expect("data"), msg);
    assert_eq!(msg.text(), Some("héllo"));
}

#[test]
fn reply_into_result() {
    assert_eq!(Reply::ok_empty(1).into_result(), Ok(map(vec![])));
    let e = Reply::err(1, ErrorCode::Timeout, "t")
        .into_result()
        .expect_err("err");
    assert_eq!(e.code, ErrorCode::Timeout);
    let r = Reply {
        id: 1,
        ok: false,
        result: None,
        error: None,
    };
    assert_eq!(r.into_result().expect_err("err").code, ErrorCode::Internal);
}

#[test]
fn bytes_are_bin_and_text_is_str() {
    let op = Op::Send(SendArgs::Start(SendStart {
        room: "r".into(),
        label: "l".into(),
        to: None,
        payload: Payload::Bytes(vec![0xde, 0xad]),
        info: None,
        more: false,
        progress: false,
    }));
    let frame = encode_frame(&ClientMessage::Request(
        Request::from_op(1, &op).expect("req"),
    ))
    .expect("frame");
    // bin8 marker, length 2, payload
    assert!(frame.windows(4).any(|w| w == [0xc4, 0x02, 0xde, 0xad]));
    // "r" as fixstr
    assert!(frame.windows(2).any(|w| w == [0xa1, b'r']));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..256) {
        let mut dec = FrameDecoder::new(max);
        dec.push(&data);
        while let Ok(Some(f)) = dec.next_frame() {
            let _ = decode_client(&f);
            let _ = decode_daemon(&f);
        }
        let _ = decode_client(&data);
        let _ = decode_daemon(&data);
    }

    #[test]
    fn arbitrary_requests_never_panic(op in "[a-z]{0,12}", body in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(v) = peerix_ipc_proto::rmpv::decode::read_value(&mut &body[..]) {
            let _ = Op::parse(&op, v.clone());
            for name in op_names::ALL {
                let _ = Op::parse(name, v.clone());
            }
            let _ = EventData::parse("channel:message", &v);
        }
    }

    #[test]
    fn text_and_bytes_roundtrip(text in ".{0,64}", bytes in proptest::collection::vec(any::<u8>(), 0..128), id in any::<u64>()) {
        for payload in [Payload::Text(text.clone()), Payload::Bytes(bytes.clone())] {
            let op = Op::Send(SendArgs::Start(SendStart {
                room: text.clone(), label: "l".into(), to: None, payload, info: None, more: false, progress: false,
            }));
            let frame = encode_frame(&ClientMessage::Request(Request::from_op(id, &op).expect("req"))).expect("frame");
            match decode_client(&frame[4..]).expect("decode") {
                ClientMessage::Request(r) => { prop_assert_eq!(r.id, id); prop_assert_eq!(r.parse_op().expect("op"), op); }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}

fn reply_frame(entries: Vec<(Value, Value)>) -> Vec<u8> {
    let mut all = vec![(Value::from("type"), Value::from("reply"))];
    all.extend(entries);
    rmp_serde_encode(&Value::Map(all))
}

#[test]
fn typed_replies_decode_as_the_value_route_does() {
    let result = Value::Map(vec![
        ("transfer".into(), 9.into()),
        (
            "peers".into(),
            Value::Array(vec![Value::Map(vec![
                ("id".into(), "p1".into()),
                ("ok".into(), true.into()),
            ])]),
        ),
    ]);
    let body = reply_frame(vec![
        ("id".into(), 4.into()),
        ("ok".into(), true.into()),
        ("result".into(), result.clone()),
    ]);
    assert_eq!(reply_id(&body), Some(4));
    let typed: SendResult = decode_reply_as(&body).expect("decodes").expect("ok");
    let via_value: SendResult = from_value(result).expect("decodes");
    assert_eq!(typed, via_value);

    // A failed request: the daemon's error body.
    let err = ErrorBody::new(ErrorCode::NotJoined, "not joined");
    let body = reply_frame(vec![
        ("id".into(), 5.into()),
        ("ok".into(), false.into()),
        ("error".into(), to_value(&err).expect("encodes")),
    ]);
    let failed = decode_reply_as::<SendResult>(&body).expect("decodes");
    assert_eq!(failed.expect_err("failed").code, ErrorCode::NotJoined);

    // No result: read as nil, as `Reply::into_result` does.
    let body = reply_frame(vec![("id".into(), 6.into()), ("ok".into(), true.into())]);
    assert_eq!(
        decode_reply_as::<Option<u64>>(&body).expect("decodes"),
        Ok(None)
    );
    assert!(decode_reply_as::<SendResult>(&body).is_err());
}

#[test]
fn typed_replies_refuse_what_the_value_route_refuses() {
    // An integer key would be taken as a field position by a struct (PROTOCOL.md §2).
    let body = reply_frame(vec![
        ("id".into(), 4.into()),
        ("ok".into(), true.into()),
        (
            "result".into(),
            Value::Map(vec![(Value::from(0), 9.into())]),
        ),
    ]);
    assert!(decode_reply_as::<SendResult>(&body).is_err());
    assert!(from_value::<SendResult>(Value::Map(vec![(Value::from(0), 9.into())])).is_err());
    // A result of the wrong shape, an event, trailing bytes, truncation.
    let body = reply_frame(vec![
        ("id".into(), 4.into()),
        ("ok".into(), true.into()),
        ("result".into(), "nine".into()),
    ]);
    assert!(decode_reply_as::<SendResult>(&body).is_err());
    let event = rmp_serde_encode(&map(vec![
        ("type", "event".into()),
        ("seq", 1.into()),
        ("name", "x".into()),
    ]));
    assert!(decode_reply_as::<Value>(&event).is_err());
    let mut body = reply_frame(vec![("id".into(), 4.into()), ("ok".into(), true.into())]);
    body.push(0xc0);
    assert!(decode_reply_as::<Option<u64>>(&body).is_err());
    body.pop();
    for cut in 0..body.len() {
        assert!(
            decode_reply_as::<Option<u64>>(&body[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

proptest! {
    /// Whatever the result, the typed route and the `Value` route agree on whether it is a
    /// `SendResult` and on its value.
    #[test]
    fn typed_and_value_routes_agree(transfer in any::<i64>(), peers in proptest::option::of(
        proptest::collection::vec(("[a-z]{1,8}", any::<bool>()), 0..4)),
        extra in proptest::option::of(any::<i64>())) {
        let mut result = vec![(Value::from("transfer"), Value::from(transfer))];
        if let Some(peers) = peers {
            let list = peers.into_iter().map(|(p, ok)| Value::Map(vec![
                ("id".into(), p.into()), ("ok".into(), ok.into())])).collect();
            result.push(("peers".into(), Value::Array(list)));
        }
        if let Some(x) = extra {
            result.push(("extra".into(), x.into()));
        }
        let result = Value::Map(result);
        let body = reply_frame(vec![
            ("id".into(), 1.into()), ("ok".into(), true.into()), ("result".into(), result.clone())]);
        let typed = decode_reply_as::<SendResult>(&body).ok().and_then(Result::ok);
        let via_value = from_value::<SendResult>(result).ok();
        prop_assert_eq!(typed, via_value);
    }
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        ".{0,40}".prop_map(Payload::Text),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Payload::Bytes),
        any::<i64>().prop_map(|n| Payload::Json(Value::from(n))),
    ]
}

proptest! {
    /// The direct serialisation of a `send` writes exactly the bytes of the `Value` route, so a
    /// daemon cannot tell them apart.
    #[test]
    fn send_start_requests_encode_as_the_value_route(
        id in any::<u64>(),
        room in "[a-z]{0,12}",
        label in ".{0,12}",
        to in proptest::option::of("[a-z0-9-]{1,20}"),
        payload in payload(),
        info in proptest::option::of(proptest::collection::vec(("[a-z]{1,6}", any::<i32>()), 0..4)),
        more in any::<bool>(),
        progress in any::<bool>(),
        big in any::<bool>(),
    ) {
        let payload = match payload {
            // Sizes across the str and bin length markers (8, 16 and 32 bits).
            Payload::Bytes(b) if big => Payload::Bytes(b.repeat(300)),
            p => p,
        };
        let start = SendStart {
            room,
            label,
            to,
            payload,
            info: info.map(|kv| Value::Map(
                kv.into_iter().map(|(k, v)| (Value::from(k), Value::from(v))).collect())),
            more,
            progress,
        };
        let via_value = encode_frame(&ClientMessage::Request(
            Request::from_op(id, &Op::Send(SendArgs::Start(start.clone()))).expect("args"),
        )).expect("encode");
        let direct = encode_frame(&SendStartRequest { id, args: &start }).expect("encode");
        prop_assert_eq!(direct, via_value);
    }

    /// A chunk serialised from a borrowed slice is byte for byte the `Value` route's chunk, at
    /// every bin length marker.
    #[test]
    fn send_chunk_requests_encode_as_the_value_route(
        id in any::<u64>(),
        transfer in any::<u64>(),
        data in proptest::collection::vec(any::<u8>(), 0..64),
        repeat in prop_oneof![Just(1usize), Just(5), Just(1100), Just(70_000)],
        more in any::<bool>(),
    ) {
        let data = data.repeat(repeat);
        let chunk = SendChunk { transfer, data: Payload::Bytes(data.clone()), more };
        let via_value = encode_frame(&ClientMessage::Request(
            Request::from_op(id, &Op::Send(SendArgs::Chunk(chunk))).expect("args"),
        )).expect("encode");
        let direct = encode_frame(&SendChunkRequest { id, transfer, data: &data, more })
            .expect("encode");
        prop_assert_eq!(direct, via_value);
    }
}
