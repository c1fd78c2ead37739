//! A simulated link for webrtc's sans-IO SCTP (`rtc::sctp`): two associations, a clock that
//! moves only when the test moves it (1 ms per step), and per direction a socket buffer, a read
//! rate and seeded loss. Every run with the same links is the same run.
// Each test file uses a part of it.
#![allow(dead_code)]

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

/// What the sending application keeps buffered, as `peerixd`'s channel actor does.
const HIGH_WATER: usize = 1 << 20;
const MESSAGE: usize = 16 * 1024;
/// Bytes each transfer moves.
pub const TOTAL: usize = 5 * 1024 * 1024;
const STREAM: u16 = 1;

/// What a node's path does to the datagrams that reach it.
#[derive(Clone, Copy)]
pub struct Link {
    /// Datagrams its socket buffer holds; more are dropped.
    pub capacity: usize,
    /// Datagrams it reads per simulated millisecond.
    pub reads_per_ms: usize,
    /// Per cent of arriving datagrams lost (seeded xorshift64), and the seed.
    pub loss: Option<(u64, u64)>,
    /// Arriving DATA datagrams (larger than `DATA_DATAGRAM`, counted from 0, retransmissions
    /// included) to lose, for losses at a chosen place.
    pub drop_data: &'static [usize],
    /// The same for the other arriving datagrams (handshake chunks and SACKs).
    pub drop_other: &'static [usize],
}

/// Datagrams longer than this carry a DATA chunk of a 16 KiB message (all but its last
/// fragment): SACKs and handshake chunks are shorter.
pub const DATA_DATAGRAM: usize = 1000;

impl Link {
    /// Takes everything, reads everything, loses nothing.
    pub const PERFECT: Link = Link {
        capacity: usize::MAX,
        reads_per_ms: usize::MAX,
        loss: None,
        drop_data: &[],
        drop_other: &[],
    };
}

struct Node {
    endpoint: Endpoint,
    addr: SocketAddr,
    conn: Option<(AssociationHandle, Association)>,
    /// Datagrams that arrived and wait to be read (from the next millisecond on).
    inbox: VecDeque<Bytes>,
    link: Link,
    /// State of the loss generator.
    rng: u64,
    dropped: usize,
    /// DATA datagrams that arrived (see `Link::drop_data`).
    data_arrived: usize,
    /// Other datagrams that arrived (see `Link::drop_other`).
    other_arrived: usize,
}

impl Node {
    fn new(port: u16, server: bool, link: Link) -> Node {
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
            rng: link.loss.map_or(1, |(_, seed)| seed | 1),
            link,
            dropped: 0,
            data_arrived: 0,
            other_arrived: 0,
        }
    }

    fn arrive(&mut self, d: Bytes) {
        let (arrived, drop) = if d.len() > DATA_DATAGRAM {
            (&mut self.data_arrived, self.link.drop_data)
        } else {
            (&mut self.other_arrived, self.link.drop_other)
        };
        *arrived += 1;
        if drop.contains(&(*arrived - 1)) {
            self.dropped += 1;
            return;
        }
        if let Some((percent, _)) = self.link.loss {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            if self.rng % 100 < percent {
                self.dropped += 1;
                return;
            }
        }
        if self.inbox.len() >= self.link.capacity {
            self.dropped += 1;
        } else {
            self.inbox.push_back(d);
        }
    }

    /// Reads what the socket lets through this millisecond, fires due timers, returns the
    /// datagrams to send.
    fn step(&mut self, now: Instant, from: SocketAddr) -> Vec<Bytes> {
        for _ in 0..self.link.reads_per_ms {
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

/// What one transfer took.
#[derive(Debug)]
pub struct Outcome {
    /// Simulated time from connect to the last byte read.
    pub simulated: Duration,
    /// The longest time the receiver's application got nothing.
    pub longest_gap: Duration,
    /// The sender's T3-rtx expiries.
    pub t3_timeouts: u64,
    /// The sender's fast retransmissions.
    pub fast_retransmits: u64,
    /// The sender's tail-loss probes.
    pub probes: u64,
    /// Times the receiver's application got nothing for 100 ms or more.
    pub stalls: usize,
    /// Datagrams the links dropped, both ways.
    pub dropped: usize,
}

/// Moves `TOTAL` bytes of 16 KiB messages on one ordered stream from a sender behind `to_sender`
/// (what reaches the sender: SACKs) to a receiver behind `to_receiver`, checking that every
/// message arrives whole and in order.
pub fn transfer(to_sender: Link, to_receiver: Link) -> Outcome {
    transfer_bytes(to_sender, to_receiver, TOTAL)
}

/// `transfer` of `total` bytes (a multiple of 16 KiB).
pub fn transfer_bytes(to_sender: Link, to_receiver: Link, total: usize) -> Outcome {
    transfer_read_by(to_sender, to_receiver, total, usize::MAX, 1)
}

/// `transfer_bytes` to a receiving application that takes at most `messages` messages out of
/// the stream every `every_ms` simulated milliseconds (a reader slower than the link).
pub fn transfer_read_by(
    to_sender: Link,
    to_receiver: Link,
    total: usize,
    messages: usize,
    every_ms: u64,
) -> Outcome {
    let start = Instant::now();
    let mut now = start;
    let mut sender = Node::new(20_001, false, to_sender);
    let mut receiver = Node::new(20_002, true, to_receiver);
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
    let mut stalls = 0;
    while received < total {
        assert!(
            now - start < Duration::from_secs(120),
            "transfer stuck at {received} of {total} bytes"
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
            while sent < total && stream.buffered_amount().expect("buffered") < HIGH_WATER {
                let msg = Bytes::from(vec![(sent / MESSAGE) as u8; MESSAGE]);
                stream
                    .write_sctp(now, &msg, PayloadProtocolIdentifier::Binary)
                    .expect("write");
                sent += MESSAGE;
            }
        }
        let reading = (now - start)
            .as_millis()
            .is_multiple_of(u128::from(every_ms.max(1)));
        if let Some((_, conn)) = receiver.conn.as_mut().filter(|_| reading) {
            while conn.poll().is_some() {}
            if let Ok(mut stream) = conn.stream(STREAM) {
                let mut taken = 0;
                while taken < messages {
                    let Ok(Some(chunks)) = stream.read_sctp() else {
                        break;
                    };
                    taken += 1;
                    let payload = chunks.to_payload(1 << 20).expect("payload");
                    assert_eq!(payload.len(), MESSAGE, "messages arrive whole");
                    assert!(
                        payload.iter().all(|b| *b == (received / MESSAGE) as u8),
                        "messages arrive in order"
                    );
                    received += payload.len();
                    longest_gap = longest_gap.max(now - last_progress);
                    if now - last_progress >= Duration::from_millis(100) {
                        stalls += 1;
                    }
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
        probes: stats.get_num_probes(),
        stalls,
        dropped: receiver.dropped + sender.dropped,
    }
}
