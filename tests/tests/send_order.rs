//! Ordering of a pipelining client's messages on one label (PROTOCOL.md, "Ordering"): real
//! daemons, a real client writing requests without waiting for their replies, real WebRTC.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use peerix_client::proto::{Op, Payload, SendArgs, SendChunk, SendStart};
use peerix_client::{MessageData, PendingReply, SendResult, STREAM_CHUNK};
use peerix_system_tests::*;

const ROOM: &str = "order";
const LABEL: &str = "seq";

/// Small messages issued back to back.
const SMALL: usize = 1000;
/// Where the streamed messages go in the sequence, and their sizes (1 to 4 MiB, several IPC
/// chunks each, none a multiple of the chunk size).
const STREAMS: [(usize, usize); 3] = [
    (100, 1024 * 1024 + 4321),
    (500, 5 * 1024 * 1024 / 2),
    (900, 4 * 1024 * 1024 - 17),
];

/// The content of message `k` of `len` bytes: its index first, then bytes derived from both.
fn content(k: usize, len: usize) -> Vec<u8> {
    let mut v = (k as u32).to_be_bytes().to_vec();
    v.extend((4..len).map(|i| ((i as u32 ^ (k as u32).wrapping_mul(0x9E37_79B9)) >> 3) as u8));
    v
}

/// The plan: message `k` is streamed with `len` bytes, or small.
fn stream_len(k: usize) -> Option<usize> {
    STREAMS.iter().find(|(at, _)| *at == k).map(|(_, len)| *len)
}

fn small_len(k: usize) -> usize {
    8 + (k * 37) % 200
}

fn send(op: SendArgs) -> Op {
    Op::Send(op)
}

/// 1,000 small sends written without waiting for a reply, with three multi-megabyte streamed
/// sends among them on the same label: the remote client receives all 1,003 intact and in the
/// order they were issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_and_streams_arrive_in_issue_order() -> Result<()> {
    let env = TestEnv::new()?;
    let (da, db, a, mut b) = pair_with_channel(&env, ROOM, LABEL).await?;
    let a_id = a.id.clone();

    let total = SMALL + STREAMS.len();
    // The receiver drains its events while the sender is busy (a full event queue would stall
    // b's daemon towards its client).
    let receiver = tokio::spawn(async move {
        b.receive_messages(LABEL, total, Duration::from_secs(60))
            .await
    });

    let mut replies: Vec<(usize, PendingReply)> = Vec::with_capacity(total);
    for k in 0..total {
        let Some(len) = stream_len(k) else {
            let op = send(SendArgs::Start(SendStart {
                room: ROOM.into(),
                label: LABEL.into(),
                to: None,
                payload: Payload::Bytes(content(k, small_len(k))),
                info: None,
                more: false,
                progress: false,
            }));
            replies.push((k, a.client.issue(&op).await?));
            continue;
        };
        // A streamed send: the start's reply carries the transfer id the chunks need, so it is
        // the one reply waited for here; the small sends before it are still unanswered.
        let start = send(SendArgs::Start(SendStart {
            room: ROOM.into(),
            label: LABEL.into(),
            to: None,
            payload: Payload::Bytes(Vec::new()),
            info: None,
            more: true,
            progress: false,
        }));
        let started: SendResult = a.client.issue(&start).await?.typed().await?;
        let data = content(k, len);
        let chunks: Vec<&[u8]> = data.chunks(STREAM_CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let more = i + 1 < chunks.len();
            let op = send(SendArgs::Chunk(SendChunk {
                transfer: started.transfer,
                data: Payload::Bytes(chunk.to_vec()),
                more,
            }));
            let pending = a.client.issue(&op).await?;
            if more {
                // Chunk replies are the flow control of a streamed send (PROTOCOL.md).
                pending
                    .result()
                    .await
                    .with_context(|| format!("chunk {i} of {k}"))?;
            } else {
                replies.push((k, pending));
            }
        }
    }

    for (k, pending) in replies {
        let r: SendResult = pending.typed().await.with_context(|| format!("send {k}"))?;
        let peers = r.peers.unwrap_or_default();
        ensure!(
            peers.len() == 1 && peers.iter().all(|p| p.ok),
            "send {k} not delivered: {peers:?}"
        );
    }

    let got = tokio::time::timeout(Duration::from_secs(120), receiver)
        .await
        .context("receiver timed out")???;
    let mut out_of_order = Vec::new();
    for (pos, m) in got.iter().enumerate() {
        let MessageData::Bytes(bytes) = &m.data else {
            bail!("message {pos}: expected bytes, got {:?}", m.kind)
        };
        ensure!(bytes.len() >= 4, "message {pos}: {} bytes", bytes.len());
        let k = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        ensure!(k < total, "message {pos}: index {k} out of range");
        let want = content(k, stream_len(k).unwrap_or_else(|| small_len(k)));
        ensure!(
            sha256_hex(bytes) == sha256_hex(&want),
            "message {pos} (index {k}, {} bytes) is corrupted",
            bytes.len()
        );
        if k != pos {
            out_of_order.push((pos, k));
        }
    }
    ensure!(
        out_of_order.is_empty(),
        "{} of {total} messages out of issue order, (position, index) e.g. {:?}",
        out_of_order.len(),
        &out_of_order[..out_of_order.len().min(20)]
    );
    let a_peer = got.iter().all(|m| m.peer == a_id);
    ensure!(a_peer, "every message comes from a");
    da.assert_quiet_log()?;
    db.assert_quiet_log()?;
    Ok(())
}
