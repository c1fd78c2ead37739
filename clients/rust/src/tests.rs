//! Client unit tests against a FAKE in-test daemon.
//!
//! `fake_daemon` below is NOT peerixd: it speaks just enough of the protocol
//! (handshake + scripted replies) to exercise the client's framing and
//! dispatch. End-to-end tests against the real daemon live elsewhere.

use super::*;
use peerix_ipc_proto::{
    decode_client, encode_frame, ChannelMessageData, DeliveryReport, ErrorBody, ErrorCode,
    MessageType, Reply,
};
use tokio::io::{AsyncRead, AsyncWrite};

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn welcome() -> DaemonMessage {
    DaemonMessage::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        daemon: "fake-peerixd/0".into(),
        id: "fake-peer".into(),
        capabilities: vec![],
        max_frame: DEFAULT_MAX_FRAME as u64,
        epoch: 5,
    })
}

/// FAKE daemon (test only): answers `hello` with `first`, then calls
/// `handler` for each request and writes the messages it returns.
async fn fake_daemon<S, F>(stream: S, first: DaemonMessage, mut handler: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request) -> Vec<DaemonMessage>,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut buf = vec![0u8; 64 * 1024];
    let mut handshaken = false;
    loop {
        while let Ok(Some(frame)) = dec.next_frame() {
            let out = match decode_client(&frame).expect("fake daemon: client sent garbage") {
                ClientMessage::Hello(h) if !handshaken => {
                    assert_eq!(h.version, PROTOCOL_VERSION);
                    handshaken = true;
                    vec![first.clone()]
                }
                ClientMessage::Request(r) => handler(r),
                ClientMessage::Hello(_) => panic!("fake daemon: second hello"),
            };
            for m in out {
                let f = encode_frame(&m).expect("encode");
                if wr.write_all(&f).await.is_err() {
                    return;
                }
            }
        }
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => dec.push(&buf[..n]),
        }
    }
}

async fn client_with<F>(handler: F) -> Client
where
    F: FnMut(Request) -> Vec<DaemonMessage> + Send + 'static,
{
    let (a, b) = tokio::io::duplex(256 * 1024);
    tokio::spawn(fake_daemon(b, welcome(), handler));
    Client::handshake(a, "test").await.expect("handshake")
}

fn reply(id: u64, v: Value) -> DaemonMessage {
    DaemonMessage::Reply(Reply::ok(id, v))
}

#[tokio::test]
async fn handshake_and_status() {
    let client = client_with(|r| {
        assert_eq!(r.op, "status");
        vec![reply(
            r.id,
            map(vec![
                ("version", Value::from("0.1.0")),
                ("id", Value::from("fake-peer")),
                (
                    "drivers",
                    Value::Array(vec![map(vec![
                        ("name", Value::from("nats")),
                        ("kind", Value::from("nats")),
                        ("active", Value::Boolean(true)),
                    ])]),
                ),
                ("rooms", Value::Array(vec![])),
            ]),
        )]
    })
    .await;
    assert_eq!(client.peer_id(), "fake-peer");
    let st = client.status().await.expect("status");
    assert_eq!(st.drivers[0].name, "nats");
    assert!(st.rooms.is_empty());
}

#[tokio::test]
async fn a_reply_that_is_no_result_of_its_type_fails_that_request_only() {
    let mut n = 0;
    let client = client_with(move |r| {
        n += 1;
        let result = match n {
            // An integer key, which a struct would take as a field position (PROTOCOL.md §2).
            1 => Value::Map(vec![(Value::from(0), Value::from("0.1.0"))]),
            // A result of the wrong shape.
            2 => Value::from("status"),
            _ => map(vec![
                ("version", Value::from("0.1.0")),
                ("id", Value::from("fake-peer")),
            ]),
        };
        vec![reply(r.id, result)]
    })
    .await;
    for _ in 0..2 {
        match client.status().await {
            Err(ClientError::UnexpectedResult(_)) => {}
            other => panic!("expected UnexpectedResult, got {other:?}"),
        }
    }
    // The connection is fine: the next reply is read as usual.
    assert_eq!(client.status().await.expect("status").id, "fake-peer");
}

#[tokio::test]
async fn concurrent_requests_are_dispatched_by_id() {
    let mut held: Vec<Request> = Vec::new();
    let client = client_with(move |r| {
        held.push(r);
        if held.len() < 3 {
            return vec![];
        }
        // Answer in reverse order.
        held.drain(..)
            .rev()
            .map(|r| {
                let room = r.parse_op().map(|op| match op {
                    Op::Leave(a) => a.room,
                    _ => String::new(),
                });
                match room {
                    Ok(room) if room == "bad" => DaemonMessage::Reply(Reply::err(
                        r.id,
                        ErrorCode::NotJoined,
                        "room bad is not joined",
                    )),
                    _ => reply(r.id, map(vec![])),
                }
            })
            .collect()
    })
    .await;
    let (a, b, c) = tokio::join!(client.leave("a"), client.leave("bad"), client.leave("c"));
    a.expect("a");
    c.expect("c");
    let e = b.expect_err("bad");
    assert_eq!(
        e.daemon_error().map(|e| e.code.clone()),
        Some(ErrorCode::NotJoined)
    );
    assert_eq!(e.to_string(), "NOT_JOINED: room bad is not joined");
}

fn message_event(
    seq: u64,
    data: Value,
    kind: MessageType,
    offset: u64,
    fin: bool,
) -> DaemonMessage {
    message_event_of(seq, data, kind, offset, None, fin)
}

/// Part `seq` (1000 bytes of `seq`) at `offset` of a 3000-byte message.
fn thousand_byte_part(seq: u64, offset: u64, fin: bool) -> Event {
    match message_event_of(
        seq,
        Value::Binary(vec![seq as u8; 1000]),
        MessageType::Bytes,
        offset,
        Some(3000),
        fin,
    ) {
        DaemonMessage::Event(e) => e,
        _ => unreachable!(),
    }
}

fn message_event_of(
    seq: u64,
    data: Value,
    kind: MessageType,
    offset: u64,
    total: Option<u64>,
    fin: bool,
) -> DaemonMessage {
    DaemonMessage::Event(
        Event::new(
            seq,
            "channel:message",
            Some("lobby".into()),
            &ChannelMessageData {
                peer: "p".into(),
                id: "p".into(),
                label: "default".into(),
                kind,
                data,
                info: None,
                transfer: 5,
                offset,
                total,
                is_final: fin,
            },
        )
        .expect("event"),
    )
}

#[tokio::test]
async fn subscribe_delivers_events_and_assembler_joins_parts() {
    let client = client_with(|r| match r.op.as_str() {
        "subscribe" => vec![
            reply(r.id, map(vec![])),
            message_event(1, Value::Binary(vec![1, 2]), MessageType::Bytes, 0, false),
            message_event(2, Value::Binary(vec![3]), MessageType::Bytes, 2, true),
            message_event(3, Value::from("hé"), MessageType::Text, 0, true),
        ],
        _ => vec![reply(r.id, map(vec![]))],
    })
    .await;
    let mut rx = client
        .subscribe(&["channel:message"], Some("lobby"))
        .await
        .expect("subscribe");
    let mut asm = MessageAssembler::new();
    let mut out = Vec::new();
    while out.len() < 2 {
        let ev = rx.recv().await.expect("event");
        if let Some(m) = asm.push(&ev).expect("assemble") {
            out.push(m);
        }
    }
    assert_eq!(out[0].data, MessageData::Bytes(vec![1, 2, 3]));
    assert_eq!(out[0].parts, 2);
    assert_eq!(out[0].seq, 2);
    assert_eq!(out[1].data, MessageData::Text("hé".into()));
    assert_eq!(asm.pending(), 0);
    assert!(client.subscribe(&["Bad Pattern"], None).await.is_err());
}

#[test]
fn assembler_rejects_gaps() {
    let mut asm = MessageAssembler::new();
    let ev = |m: DaemonMessage| match m {
        DaemonMessage::Event(e) => e,
        _ => unreachable!(),
    };
    assert!(asm
        .push(&ev(message_event(
            1,
            Value::Binary(vec![1]),
            MessageType::Blob,
            0,
            false
        )))
        .expect("first")
        .is_none());
    assert!(asm
        .push(&ev(message_event(
            2,
            Value::Binary(vec![2]),
            MessageType::Blob,
            5,
            true
        )))
        .is_err());
    assert_eq!(asm.pending(), 0);
    let mut small = MessageAssembler::with_limit(1);
    assert!(small
        .push(&ev(message_event(
            1,
            Value::Binary(vec![1, 2]),
            MessageType::Bytes,
            0,
            true
        )))
        .is_err());
}

/// A message whose parts announce its total is assembled in one buffer of that size (not
/// one that doubles as parts arrive), and the limit still holds whatever the total says.
#[test]
fn assembler_sizes_the_buffer_from_the_total_and_keeps_the_limit() {
    let ev = |m: DaemonMessage| match m {
        DaemonMessage::Event(e) => e,
        _ => unreachable!(),
    };
    let part = thousand_byte_part;
    let mut asm = MessageAssembler::new();
    assert!(asm.push(&part(1, 0, false)).expect("part 1").is_none());
    assert!(asm.push(&part(2, 1000, false)).expect("part 2").is_none());
    let msg = asm
        .push(&part(3, 2000, true))
        .expect("part 3")
        .expect("whole");
    let MessageData::Bytes(bytes) = msg.data else {
        panic!("bytes expected")
    };
    assert_eq!(bytes.len(), 3000);
    assert_eq!(
        bytes.capacity(),
        3000,
        "assembled in a buffer of the total's size"
    );
    assert!(bytes[..1000].iter().all(|b| *b == 1) && bytes[2000..].iter().all(|b| *b == 3));

    // A total above the limit reserves no more than the limit, and the part that passes the
    // limit is refused as before.
    let mut small = MessageAssembler::with_limit(1500);
    let big = |seq, offset, fin| {
        ev(message_event_of(
            seq,
            Value::Binary(vec![0; 1000]),
            MessageType::Bytes,
            offset,
            Some(1 << 40),
            fin,
        ))
    };
    assert!(small.push(&big(1, 0, false)).expect("part 1").is_none());
    assert!(small.push(&big(2, 1000, true)).is_err());
    assert_eq!(small.pending(), 0);
}

/// `push_owned` assembles what `push` does, and keeps a first part's own buffer: a message
/// in one part is not copied at all, and a longer one grows from its first part's buffer.
#[test]
fn push_owned_keeps_the_first_parts_buffer() {
    let ev = |m: DaemonMessage| match m {
        DaemonMessage::Event(e) => e,
        _ => unreachable!(),
    };
    let whole = ev(message_event_of(
        1,
        Value::Binary(vec![9; 4096]),
        MessageType::Bytes,
        0,
        None,
        true,
    ));
    let sent_at = match &whole.data {
        Value::Map(m) => m
            .iter()
            .find_map(|(k, v)| match (k.as_str(), v) {
                (Some("data"), Value::Binary(b)) => Some(b.as_ptr()),
                _ => None,
            })
            .expect("data"),
        _ => panic!("map expected"),
    };
    let by_ref = MessageAssembler::new()
        .push(&whole)
        .expect("push")
        .expect("whole");
    let owned = MessageAssembler::new()
        .push_owned(whole)
        .expect("push_owned")
        .expect("whole");
    assert_eq!(by_ref, owned);
    let MessageData::Bytes(bytes) = owned.data else {
        panic!("bytes expected")
    };
    assert_eq!(
        bytes.as_ptr(),
        sent_at,
        "the part's buffer became the message's"
    );

    let part = thousand_byte_part;
    let (mut a, mut b) = (MessageAssembler::new(), MessageAssembler::new());
    for (seq, offset, fin) in [(1, 0, false), (2, 1000, false)] {
        assert!(a.push(&part(seq, offset, fin)).expect("push").is_none());
        assert!(b
            .push_owned(part(seq, offset, fin))
            .expect("owned")
            .is_none());
    }
    let by_ref = a.push(&part(3, 2000, true)).expect("push").expect("whole");
    let owned = b
        .push_owned(part(3, 2000, true))
        .expect("owned")
        .expect("whole");
    assert_eq!(by_ref, owned);
    assert_eq!(by_ref.parts, 3);
    let MessageData::Bytes(bytes) = owned.data else {
        panic!("bytes expected")
    };
    assert_eq!(bytes.capacity(), 3000, "room for the announced total");

    // Wrong data for the type is refused either way, and text arrives as text.
    let wrong = || {
        ev(message_event(
            1,
            Value::from("x"),
            MessageType::Bytes,
            0,
            true,
        ))
    };
    assert!(MessageAssembler::new().push(&wrong()).is_err());
    assert!(MessageAssembler::new().push_owned(wrong()).is_err());
    let text = ev(message_event(
        1,
        Value::from("hé"),
        MessageType::Text,
        0,
        true,
    ));
    let got = MessageAssembler::new()
        .push_owned(text)
        .expect("text")
        .expect("whole");
    assert_eq!(got.data, MessageData::Text("hé".into()));
}

#[tokio::test]
async fn send_stream_chunks_and_reports_progress() {
    let total_len = 2 * STREAM_CHUNK + 10;
    let mut received = 0usize;
    let mut chunks = Vec::new();
    let mut start_id = 0;
    let client = client_with(move |r| match r.parse_op().expect("op") {
        Op::Send(SendArgs::Start(s)) => {
            assert!(s.more && s.progress);
            assert_eq!(s.to.as_deref(), Some("peerB"));
            // The first chunk rides in the start request.
            assert_eq!(s.payload.len(), STREAM_CHUNK);
            received += s.payload.len();
            start_id = r.id;
            vec![reply(r.id, map(vec![("transfer", Value::from(77))]))]
        }
        Op::Send(SendArgs::Chunk(c)) => {
            assert_eq!(c.transfer, 77);
            received += c.data.len();
            chunks.push((c.data.len(), c.more));
            let mut out = vec![DaemonMessage::Progress(Progress {
                id: start_id,
                peer: Some("peerB".into()),
                label: "files".into(),
                current: received as u64,
                total: None,
                done: !c.more,
                error: None,
            })];
            if c.more {
                out.push(reply(r.id, map(vec![("transfer", Value::from(77))])));
            } else {
                assert_eq!(chunks, vec![(STREAM_CHUNK, true), (10, false)]);
                out.push(DaemonMessage::Reply(
                    Reply::ok_with(
                        r.id,
                        &SendResult {
                            transfer: 77,
                            peers: Some(vec![DeliveryReport {
                                id: "peerB".into(),
                                ok: true,
                                error: None,
                            }]),
                        },
                    )
                    .expect("reply"),
                ));
            }
            out
        }
        other => panic!("unexpected {other:?}"),
    })
    .await;
    let data = vec![7u8; total_len];
    let mut buffered = Vec::new();
    let mut delivered = 0;
    let res = client
        .send_stream(
            "lobby",
            "files",
            &data[..],
            Some(total_len as u64),
            SendOptions::to("peerB"),
            |p| match p {
                SendProgress::Buffered { sent, .. } => buffered.push(*sent),
                SendProgress::Delivery(_) => delivered += 1,
            },
        )
        .await
        .expect("send");
    assert_eq!(res.transfer, 77);
    assert!(res.peers.expect("peers")[0].ok);
    assert_eq!(
        buffered,
        vec![
            STREAM_CHUNK as u64,
            2 * STREAM_CHUNK as u64,
            total_len as u64
        ]
    );
    assert_eq!(delivered, 2);
}

/// A streamed send writes the next chunk before the reply to the previous one is back (up to
/// `STREAM_WINDOW` unanswered), so the daemon's socket is not idle for a round trip per chunk.
/// The fake daemon answers a chunk only once the next one arrived: a client that waited for
/// each reply would never finish.
#[tokio::test]
async fn streamed_chunks_are_written_ahead_of_their_replies() {
    let mut held: Option<u64> = None;
    let mut chunks = Vec::new();
    let client = client_with(move |r| match r.parse_op().expect("op") {
        Op::Send(SendArgs::Start(_)) => vec![reply(r.id, map(vec![("transfer", Value::from(9))]))],
        Op::Send(SendArgs::Chunk(c)) => {
            chunks.push(c.data.len());
            let mut out: Vec<DaemonMessage> = held
                .take()
                .map(|id| reply(id, map(vec![("transfer", Value::from(9))])))
                .into_iter()
                .collect();
            if c.more {
                held = Some(r.id);
            } else {
                assert_eq!(chunks, vec![BYTES_STREAM_CHUNK; 3]);
                out.push(DaemonMessage::Reply(
                    Reply::ok_with(
                        r.id,
                        &SendResult {
                            transfer: 9,
                            peers: Some(vec![]),
                        },
                    )
                    .expect("reply"),
                ));
            }
            out
        }
        other => panic!("unexpected {other:?}"),
    })
    .await;
    let send = client.send_bytes(
        "lobby",
        "files",
        vec![3u8; 4 * BYTES_STREAM_CHUNK],
        SendOptions::default(),
    );
    let res = tokio::time::timeout(Duration::from_secs(5), send)
        .await
        .expect("the client waited for each chunk's reply before writing the next")
        .expect("send");
    assert_eq!(res.transfer, 9);
}

/// A large `send_bytes` is streamed (the daemon can transmit while the rest uploads); a
/// small one stays a single request.
#[tokio::test]
async fn large_send_bytes_is_streamed_small_is_one_request() {
    let mut chunks = Vec::new();
    let client = client_with(move |r| match r.parse_op().expect("op") {
        Op::Send(SendArgs::Start(s)) if s.more => {
            assert_eq!(s.payload.len(), BYTES_STREAM_CHUNK);
            vec![reply(r.id, map(vec![("transfer", Value::from(5))]))]
        }
        Op::Send(SendArgs::Start(s)) => {
            assert_eq!(s.payload.len(), BYTES_STREAM_CHUNK);
            vec![DaemonMessage::Reply(
                Reply::ok_with(
                    r.id,
                    &SendResult {
                        transfer: 6,
                        peers: Some(vec![]),
                    },
                )
                .expect("reply"),
            )]
        }
        Op::Send(SendArgs::Chunk(c)) => {
            chunks.push(c.data.len());
            if c.more {
                vec![reply(r.id, map(vec![("transfer", Value::from(5))]))]
            } else {
                assert_eq!(chunks, vec![1]);
                vec![DaemonMessage::Reply(
                    Reply::ok_with(
                        r.id,
                        &SendResult {
                            transfer: 5,
                            peers: Some(vec![]),
                        },
                    )
                    .expect("reply"),
                )]
            }
        }
        other => panic!("unexpected {other:?}"),
    })
    .await;
    let big = client
        .send_bytes(
            "lobby",
            "files",
            vec![1u8; BYTES_STREAM_CHUNK + 1],
            SendOptions::default(),
        )
        .await
        .expect("big send");
    assert_eq!(
        big.transfer, 5,
        "a message over BYTES_STREAM_CHUNK must be streamed"
    );
    let small = client
        .send_bytes(
            "lobby",
            "files",
            vec![1u8; BYTES_STREAM_CHUNK],
            SendOptions::default(),
        )
        .await
        .expect("small send");
    assert_eq!(
        small.transfer, 6,
        "a message of BYTES_STREAM_CHUNK bytes goes in one request"
    );
}

#[tokio::test]
async fn empty_stream_sends_one_final_chunk() {
    let client = client_with(|r| match r.parse_op().expect("op") {
        Op::Send(SendArgs::Start(_)) => vec![reply(r.id, map(vec![("transfer", Value::from(1))]))],
        Op::Send(SendArgs::Chunk(c)) => {
            assert!(!c.more && c.data.is_empty());
            vec![reply(
                r.id,
                map(vec![
                    ("transfer", Value::from(1)),
                    ("peers", Value::Array(vec![])),
                ]),
            )]
        }
        other => panic!("unexpected {other:?}"),
    })
    .await;
    let res = client
        .send_stream("r", "l", &[][..], Some(0), SendOptions::default(), |_| {})
        .await
        .expect("send");
    assert_eq!(res.peers, Some(vec![]));
}

#[tokio::test]
async fn closed_connection_fails_pending_requests() {
    let (a, b) = tokio::io::duplex(1024);
    let srv = tokio::spawn(async move {
        let (mut rd, mut wr) = tokio::io::split(b);
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut buf = [0u8; 1024];
        let mut seen = 0;
        while seen < 2 {
            let n = rd.read(&mut buf).await.expect("read");
            dec.push(&buf[..n]);
            while let Ok(Some(_)) = dec.next_frame() {
                seen += 1;
                if seen == 1 {
                    wr.write_all(&encode_frame(&welcome()).expect("w"))
                        .await
                        .expect("write");
                }
            }
        }
        // Drop both halves: the connection closes with a request pending.
    });
    let c2 = Client::handshake(a, "test").await.expect("handshake");
    let e = c2.status().await.expect_err("closed");
    assert!(matches!(e, ClientError::Closed(_)), "{e:?}");
    srv.await.expect("server");
    assert!(matches!(c2.status().await, Err(ClientError::Closed(_))));
}

#[tokio::test]
async fn handshake_rejection_is_reported() {
    let (a, b) = tokio::io::duplex(1024);
    tokio::spawn(fake_daemon(
        b,
        DaemonMessage::Error(ErrorBody::new(ErrorCode::VersionMismatch, "want 2")),
        |_| vec![],
    ));
    let e = Client::handshake(a, "test").await.expect_err("rejected");
    assert!(matches!(e, ClientError::Rejected(ref b) if b.code == ErrorCode::VersionMismatch));
}

#[tokio::test]
async fn missing_socket_says_not_running() {
    let dir = std::env::temp_dir().join(format!("peerix-client-test-{}", std::process::id()));
    let path = dir.join("nope.sock");
    let e = Client::connect(&path).await.expect_err("not running");
    assert!(matches!(e, ClientError::NotRunning { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "peerixd is not running (no socket at {}); start it with `peerixd`",
            path.display()
        )
    );
}

#[cfg(unix)]
#[tokio::test]
async fn connect_over_unix_socket() {
    let dir = std::env::temp_dir().join(format!("peerix-client-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("fake.sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    tokio::spawn(async move {
        if let Ok((s, _)) = listener.accept().await {
            fake_daemon(s, welcome(), |r| vec![reply(r.id, map(vec![]))]).await;
        }
    });
    let client = Client::connect(&path).await.expect("connect");
    client.unsubscribe().await.expect("unsubscribe");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn socket_path_resolution() {
    use std::ffi::OsString;
    assert_eq!(
        socket_path_from(
            Some(OsString::from("/x/y.sock")),
            Some(OsString::from("/run/user/1"))
        ),
        PathBuf::from("/x/y.sock")
    );
    if cfg!(unix) {
        assert_eq!(
            socket_path_from(Some(OsString::new()), Some(OsString::from("/run/user/1"))),
            PathBuf::from("/run/user/1/peerix/peerixd.sock")
        );
        assert_eq!(
            socket_path_from(None, None),
            PathBuf::from("/run/peerix/peerixd.sock")
        );
    }
}

#[tokio::test]
async fn subscribe_since_sends_the_position_and_surfaces_lagged_before_the_reply() {
    let client = client_with(|r| {
        assert_eq!(r.op, "subscribe");
        let arg = |k: &str| {
            r.args
                .as_map()
                .and_then(|m| m.iter().find(|(key, _)| key.as_str() == Some(k)))
                .and_then(|(_, v)| v.as_u64())
        };
        assert_eq!((arg("since"), arg("epoch")), (Some(41), Some(5)));
        let lagged = map(vec![
            ("from", Value::from(42)),
            ("to", Value::from(60)),
            ("count", Value::from(3)),
            ("reason", Value::from("evicted")),
        ]);
        vec![
            DaemonMessage::Event(Event {
                seq: 60,
                name: "lagged".into(),
                room: None,
                data: lagged,
            }),
            reply(
                r.id,
                map(vec![
                    ("replayed", Value::from(0)),
                    ("complete", Value::Boolean(false)),
                ]),
            ),
        ]
    })
    .await;
    assert_eq!(client.epoch(), 5);
    let (mut rx, res) = client
        .subscribe_since(&["*"], None, 41, Some(client.epoch()))
        .await
        .expect("subscribe");
    assert!(!res.complete);
    let ev = rx.recv().await.expect("lagged event");
    let l = crate::lagged(&ev).expect("lagged data");
    assert_eq!((l.from, l.to, l.count), (42, 60, 3));
    assert_eq!(client.last_seq(), 60);
}

/// A stream whose every write first yields once (as a socket write that would block does), and
/// which counts the writes that went through.
struct Stutter {
    inner: tokio::io::DuplexStream,
    writes: Arc<AtomicU64>,
    yielded: bool,
}

impl AsyncRead for Stutter {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stutter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        self.yielded = false;
        self.writes.fetch_add(1, Ordering::Relaxed);
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Requests issued together while a write is in progress go out in one write, in order, and
/// each still gets its own reply.
#[tokio::test]
async fn requests_queued_behind_a_write_share_the_next_write() {
    let (a, b) = tokio::io::duplex(256 * 1024);
    tokio::spawn(fake_daemon(b, welcome(), |r| {
        vec![reply(r.id, Value::from(r.args["n"].as_u64().unwrap_or(0)))]
    }));
    let writes = Arc::new(AtomicU64::new(0));
    let stream = Stutter {
        inner: a,
        writes: writes.clone(),
        yielded: false,
    };
    let client = Client::handshake(stream, "test").await.expect("handshake");
    let after_hello = writes.load(Ordering::Relaxed);
    let client = std::rc::Rc::new(client);
    let local = tokio::task::LocalSet::new();
    let got = local
        .run_until(async {
            let tasks: Vec<_> = (0..50u64)
                .map(|n| {
                    let client = client.clone();
                    tokio::task::spawn_local(async move {
                        let id = client.next_id();
                        let rx = client
                            .start_request(id, "echo", map(vec![("n", Value::from(n))]))
                            .await?;
                        client.finish(rx).await
                    })
                })
                .collect();
            let mut got = Vec::new();
            for t in tasks {
                got.push(t.await.expect("task").expect("reply"));
            }
            got
        })
        .await;
    assert_eq!(got, (0..50u64).map(Value::from).collect::<Vec<_>>());
    let used = writes.load(Ordering::Relaxed) - after_hello;
    // The first request's write, then the 49 queued behind it together (one frame at a time
    // took 50 writes).
    assert!(used <= 3, "{used} writes for 50 requests");
}

/// A chunk's request frame is allocated once, at its final size: the room reserved for the
/// fields besides the data covers them at their largest (ids of 9 bytes, a 32-bit bin length),
/// so the frame never grows by doubling and copies the chunk a second time.
#[test]
fn a_chunk_frame_is_allocated_once() {
    let data = vec![7u8; BYTES_STREAM_CHUNK];
    for more in [false, true] {
        let frame = chunk_frame(u64::MAX, u64::MAX, &data, more, usize::MAX).expect("frame");
        assert!(
            frame.capacity() <= data.len() + CHUNK_HEADER_ROOM + 4,
            "frame of {} bytes grew to a capacity of {}",
            frame.len(),
            frame.capacity()
        );
        assert!(frame.len() > data.len());
    }
}
