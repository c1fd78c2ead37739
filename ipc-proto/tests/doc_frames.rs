//! The example frames of PROTOCOL.md, produced by the real encoder.
//!
//! `cargo test -p peerix-ipc-proto --test doc_frames -- --ignored --nocapture print_examples`
//! prints the Markdown blocks; `protocol_md_matches_encoder` keeps the
//! document in sync with the encoder.

use peerix_ipc_proto::rmpv::Value;
use peerix_ipc_proto::*;

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// (name, frame bytes) of every documented example.
fn examples() -> Vec<(&'static str, Vec<u8>)> {
    let enc_c = |m: ClientMessage| encode_frame(&m).expect("encode");
    let enc_d = |m: DaemonMessage| encode_frame(&m).expect("encode");
    let req = |id: u64, op: Op| ClientMessage::Request(Request::from_op(id, &op).expect("request"));
    vec![
        (
            "hello",
            enc_c(ClientMessage::Hello(Hello {
                version: PROTOCOL_VERSION,
                client: "peerix-cli/0.1.0".into(),
                capabilities: vec![],
            })),
        ),
        (
            "welcome",
            enc_d(DaemonMessage::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                daemon: "peerixd/0.1.0".into(),
                id: "machineA".into(),
                capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
                max_frame: DEFAULT_MAX_FRAME as u64,
                epoch: 7,
            })),
        ),
        ("request-status", enc_c(req(1, Op::Status))),
        (
            "request-join",
            enc_c(req(
                2,
                Op::Join(JoinArgs {
                    room: "lobby".into(),
                    metadata: Some(map(vec![("name", Value::from("bot"))])),
                    driver: None,
                    options: None,
                    persist: false,
                }),
            )),
        ),
        (
            "reply-join",
            enc_d(DaemonMessage::Reply(Reply::ok(
                2,
                map(vec![
                    ("room", Value::from("lobby")),
                    ("id", Value::from("peerA")),
                    ("metadata", map(vec![("name", Value::from("bot"))])),
                    ("holders", Value::from(1)),
                    ("persist", Value::from(false)),
                ]),
            ))),
        ),
        (
            "reply-error",
            enc_d(DaemonMessage::Reply(Reply::err(
                3,
                ErrorCode::NotJoined,
                "room lobby2 is not joined",
            ))),
        ),
        (
            "request-subscribe",
            enc_c(req(
                4,
                Op::Subscribe(SubscribeArgs {
                    events: vec!["channel:message".into()],
                    room: Some("lobby".into()),
                    since: None,
                    epoch: None,
                }),
            )),
        ),
        (
            "request-send-text",
            enc_c(req(
                5,
                Op::Send(SendArgs::Start(SendStart {
                    room: "lobby".into(),
                    label: DEFAULT_LABEL.into(),
                    to: None,
                    payload: Payload::Text("hi".into()),
                    info: None,
                    more: false,
                    progress: false,
                })),
            )),
        ),
        (
            "reply-send",
            enc_d(DaemonMessage::Reply(
                Reply::ok_with(
                    5,
                    &SendResult {
                        transfer: 1,
                        peers: Some(vec![DeliveryReport {
                            id: "peerB".into(),
                            ok: true,
                            error: None,
                        }]),
                    },
                )
                .expect("reply"),
            )),
        ),
        (
            "request-send-batch",
            enc_c(req(
                7,
                Op::Send(SendArgs::Batch(SendBatch {
                    room: "lobby".into(),
                    label: DEFAULT_LABEL.into(),
                    to: None,
                    payloads: vec![Payload::Text("a".into()), Payload::Text("b".into())],
                    info: None,
                })),
            )),
        ),
        (
            "reply-send-batch",
            enc_d(DaemonMessage::Reply(
                Reply::ok_with(
                    7,
                    &BatchResult {
                        transfer: 3,
                        count: 2,
                        peers: vec![BatchPeerReport {
                            id: "peerB".into(),
                            ok: false,
                            delivered: 1,
                            failed: vec![BatchFailure {
                                index: 1,
                                error: ErrorBody::new(
                                    ErrorCode::SendFailed,
                                    "peer connection closed",
                                ),
                            }],
                        }],
                    },
                )
                .expect("reply"),
            )),
        ),
        (
            "request-send-stream-start",
            enc_c(req(
                6,
                Op::Send(SendArgs::Start(SendStart {
                    room: "lobby".into(),
                    label: "files".into(),
                    to: Some("peerB".into()),
                    payload: Payload::Bytes(vec![]),
                    info: Some(map(vec![("name", Value::from("a.bin"))])),
                    more: true,
                    progress: true,
                })),
            )),
        ),
        (
            "reply-send-stream-start",
            enc_d(DaemonMessage::Reply(
                Reply::ok_with(
                    6,
                    &SendResult {
                        transfer: 2,
                        peers: None,
                    },
                )
                .expect("reply"),
            )),
        ),
        (
            "request-send-chunk",
            enc_c(req(
                7,
                Op::Send(SendArgs::Chunk(SendChunk {
                    transfer: 2,
                    data: Payload::Bytes(vec![1, 2, 3]),
                    more: false,
                })),
            )),
        ),
        (
            "progress",
            enc_d(DaemonMessage::Progress(Progress {
                id: 6,
                peer: Some("peerB".into()),
                label: "files".into(),
                current: 3,
                total: Some(3),
                done: true,
                error: None,
            })),
        ),
        (
            "event-message",
            enc_d(DaemonMessage::Event(
                Event::new(
                    42,
                    event_names::CHANNEL_MESSAGE,
                    Some("lobby".into()),
                    &ChannelMessageData {
                        peer: "peerB".into(),
                        id: "peerB".into(),
                        label: "default".into(),
                        kind: MessageType::Bytes,
                        data: Value::Binary(vec![1, 2, 3]),
                        info: None,
                        transfer: 9,
                        offset: 0,
                        total: Some(3),
                        is_final: true,
                    },
                )
                .expect("event"),
            )),
        ),
        (
            "error",
            enc_d(DaemonMessage::Error(ErrorBody::new(
                ErrorCode::HandshakeRequired,
                "first frame must be hello",
            ))),
        ),
    ]
}

fn hex_block(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Extracts the hex block following `<!-- frame:NAME -->` in PROTOCOL.md.
fn doc_hex(doc: &str, name: &str) -> Option<String> {
    let marker = format!("<!-- frame:{name} -->");
    let start = doc.find(&marker)? + marker.len();
    let rest = &doc[start..];
    let open = rest.find("```")?;
    let rest = &rest[open + 3..];
    let nl = rest.find('\n')?;
    let rest = &rest[nl + 1..];
    let close = rest.find("```")?;
    Some(
        rest[..close]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(""),
    )
}

#[test]
fn protocol_md_matches_encoder() {
    let doc = include_str!("../PROTOCOL.md");
    for (name, frame) in examples() {
        let got = doc_hex(doc, name).unwrap_or_else(|| panic!("PROTOCOL.md lacks frame:{name}"));
        assert_eq!(
            got,
            hex::encode(&frame),
            "frame `{name}` in PROTOCOL.md is stale"
        );
    }
}

#[test]
fn examples_decode() {
    for (name, frame) in examples() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        dec.push(&frame);
        let body = dec.next_frame().expect("frame").expect("complete");
        let client = decode_client(&body);
        let daemon = decode_daemon(&body);
        assert!(client.is_ok() != daemon.is_ok(), "{name}");
        if let Ok(ClientMessage::Request(r)) = client {
            r.parse_op().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        if let Ok(DaemonMessage::Event(e)) = daemon {
            e.typed().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

#[test]
#[ignore = "prints the Markdown blocks for PROTOCOL.md"]
fn print_examples() {
    for (name, frame) in examples() {
        let value = peerix_ipc_proto::rmpv::decode::read_value(&mut &frame[4..]).expect("value");
        println!(
            "<!-- frame:{name} -->\n`{name}`: `{value}`\n\n```text\n{}\n```\n",
            hex_block(&frame)
        );
    }
}
