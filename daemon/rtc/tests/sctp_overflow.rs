//! SCTP over a receiver that cannot keep up, on webrtc's sans-IO SCTP (`rtc::sctp`) with a
//! simulated clock: the receiver's socket buffer holds `RCVBUF` datagrams and the receiver takes
//! `READ_PER_MS` of them per millisecond, dropping what does not fit. That is Chromium receiving
//! from a daemon on the same host (its UDP socket dropped up to 2,133 datagrams per 5 MiB), and
//! with rtc-sctp 0.21.1 it stalled about one transfer in three: a burst of ~800 datagrams, one
//! fast retransmission, then T3 expiries 1, 2, 4, 8, 16 s apart (see `vendor/README.md`).
//!
//! Each run is the same run: time only moves when the test moves it, and nothing is random but
//! the stack's own tags.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::sctp::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event,
    Payload, PayloadProtocolIdentifier, ServerConfig, TransportConfig,
};
use rtc::shared::TransportProtocol;

/// Datagrams the receiver's socket buffer holds (Chromium's, with 1.2 KB datagrams).
const RCVBUF: usize = 64;
/// Datagrams the receiver reads per simulated millisecond (~23 MB/s: a busy browser tab).
const READ_PER_MS: usize = 20;
/// What the sending application keeps buffered, as `peerixd`'s channel actor does.
const HIGH_WATER: usize = 1 << 20;
const MESSAGE: usize = 16 * 1024;
const TOTAL: usize = 5 * 1024 * 1024;
const STREAM: u16 = 1;

struct Node {
    endpoint: Endpoint,
    addr: SocketAddr,
    conn: Option<(AssociationHandle, Association)>,
    /// Datagrams that arrived and wait to be read, with the capacity of the socket buffer.
    inbox: VecDeque<Bytes>,
    capacity: usize,
    reads_per_ms: usize,
    dropped: usize,
}

impl Node {
    fn new(port: u16, server: bool, capacity: usize, reads_per_ms: usize) -> Node {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let server_config = server.then(|| Arc::new(ServerConfig::new(TransportConfig::default())));
        Node {
            endpoint: Endpoint::new(
                addr,
                TransportProtocol::UDP,
                Arc::new(EndpointConfig::default()),
                server_config,
            ),
            addr,
            conn: None,
            inbox: VecDeque::new(),
            capacity,
            reads_per_ms,
            dropped: 0,
        }
    }

    fn arrive(&mut self, d: Bytes) {
        if self.inbox.len() >= self.capacity {
            self.dropped += 1;
        } else {
            self.inbox.push_back(d);
        }
    }

    /// Reads what the socket lets through this millisecond, fires due timers, returns the
    /// datagrams to send.
    fn step(&mut self, now: Instant, from: SocketAddr) -> Vec<Bytes> {
        for _ in 0..self.reads_per_ms {
            let Some(d) = self.inbox.pop_front() else {
                break;
            };
            match self.endpoint.handle(now, from, None, d) {
                Some((ch, DatagramEvent::NewAssociation(conn))) => self.conn = Some((ch, conn)),
                Some((_, DatagramEvent::AssociationEvent(ev))) => {
                    if let Some((_, conn)) = self.conn.as_mut() {
                        conn.handle_event(ev);
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        if let Some((ch, conn)) = self.conn.as_mut() {
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
            while let Some(ev) = conn.poll_endpoint_event() {
                self.endpoint.handle_event(*ch, ev);
            }
            while let Some(t) = conn.poll_transmit(now) {
                if let Payload::RawEncode(datagrams) = t.message {
                    out.extend(datagrams);
                }
            }
        }
        out
    }

    fn conn(&mut self) -> &mut Association {
        &mut self.conn.as_mut().expect("association").1
    }
}

#[derive(Debug)]
struct Outcome {
    simulated: Duration,
    longest_gap: Duration,
    t3_timeouts: u64,
    fast_retransmits: u64,
    dropped: usize,
}

fn transfer() -> Outcome {
    let start = Instant::now();
    let mut now = start;
    let mut sender = Node::new(20_001, false, usize::MAX, usize::MAX);
    let mut receiver = Node::new(20_002, true, RCVBUF, READ_PER_MS);
    let (ch, conn) = sender
        .endpoint
        .connect(
            now,
            ClientConfig::new(TransportConfig::default()),
            receiver.addr,
        )
        .expect("connect");
    sender.conn = Some((ch, conn));

    let (mut sent, mut received) = (0usize, 0usize);
    let mut opened = false;
    let mut last_progress = now;
    let mut longest_gap = Duration::ZERO;
    while received < TOTAL {
        assert!(
            now - start < Duration::from_secs(120),
            "transfer stuck at {received} of {TOTAL} bytes"
        );
        for d in sender.step(now, receiver.addr) {
            receiver.arrive(d);
        }
        for d in receiver.step(now, sender.addr) {
            sender.arrive(d);
        }
        let connected = sender
            .conn
            .as_mut()
            .map(|(_, c)| {
                let mut up = false;
                while let Some(ev) = c.poll() {
                    up |= matches!(ev, Event::Connected);
                }
                up
            })
            .unwrap_or(false);
        if connected && !opened {
            sender
                .conn()
                .open_stream(STREAM, PayloadProtocolIdentifier::Binary)
                .expect("open stream");
            opened = true;
        }
        if opened {
            let mut stream = sender.conn().stream(STREAM).expect("stream");
            while sent < TOTAL && stream.buffered_amount().expect("buffered") < HIGH_WATER {
                let msg = Bytes::from(vec![(sent / MESSAGE) as u8; MESSAGE]);
                stream
                    .write_sctp(now, &msg, PayloadProtocolIdentifier::Binary)
                    .expect("write");
                sent += MESSAGE;
            }
        }
        if let Some((_, conn)) = receiver.conn.as_mut() {
            while conn.poll().is_some() {}
            if let Ok(mut stream) = conn.stream(STREAM) {
                while let Ok(Some(chunks)) = stream.read_sctp() {
                    let payload = chunks.to_payload(1 << 20).expect("payload");
                    assert_eq!(payload.len(), MESSAGE, "messages arrive whole");
                    assert!(
                        payload.iter().all(|b| *b == (received / MESSAGE) as u8),
                        "messages arrive in order"
                    );
                    received += payload.len();
                    longest_gap = longest_gap.max(now - last_progress);
                    last_progress = now;
                }
            }
        }
        now += Duration::from_millis(1);
    }
    let mut stats = sender.conn().stats();
    Outcome {
        simulated: now - start,
        longest_gap,
        t3_timeouts: stats.get_num_t3timeouts(),
        fast_retransmits: stats.get_num_fast_retrans(),
        dropped: receiver.dropped,
    }
}

#[test]
fn sctp_recovers_from_receive_buffer_overflow() {
    let o = transfer();
    eprintln!("{o:?}");
    // The receiver must overflow, or this tests nothing.
    assert!(o.dropped > 0, "no datagram was dropped: {o:?}");
    assert!(
        o.fast_retransmits > 0,
        "losses were not repaired by fast retransmit: {o:?}"
    );
    // 5 MiB at the receiver's ~23 MB/s is ~0.25 s; the old stack needed 15-30 s.
    assert!(
        o.longest_gap < Duration::from_millis(800),
        "the transfer stalled: {o:?}"
    );
    assert!(o.simulated < Duration::from_secs(2), "too slow: {o:?}");
    assert!(o.t3_timeouts <= 1, "recovery waited on T3-rtx: {o:?}");
}
