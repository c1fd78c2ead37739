//! Throughput of the signaling codec and of data-channel chunking/reassembly.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use peerix_wire::identity::Identity;
use peerix_wire::packet::{CodecOptions, SignalType, SignalingCodec};
use peerix_wire::transfer::{Chunker, Outcome, PayloadType, Reassembler};
use serde_json::json;

fn signaling(c: &mut Criterion) {
    let mut a = SignalingCodec::new(Identity::generate(), CodecOptions::default());
    let mut b = SignalingCodec::new(Identity::generate(), CodecOptions::default());
    let b_id = b.local_id().to_owned();
    let cand = [json!({
        "candidate": "candidate:1 1 udp 2122260223 192.0.2.1 50001 typ host generation 0 ufrag AbCd network-id 1",
        "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "AbCd"
    })];
    let packet = a
        .seal(SignalType::Candidate, Some(&cand), &b_id)
        .expect("seal");
    b.open(&packet).expect("open");
    c.bench_function("seal candidate (zlib+aes)", |bench| {
        bench.iter(|| {
            a.seal(SignalType::Candidate, Some(black_box(&cand)), &b_id)
                .expect("seal")
        })
    });
    c.bench_function("open candidate (zlib+aes)", |bench| {
        bench.iter(|| b.open(black_box(&packet)).expect("open"))
    });
}

fn transfer(c: &mut Criterion) {
    let data = vec![0x5au8; 1 << 20];
    let mut g = c.benchmark_group("transfer 1 MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("chunk", |bench| {
        bench.iter(|| {
            Chunker::new(1, PayloadType::Bytes, None, black_box(data.clone()))
                .expect("chunker")
                .map(|f| f.len())
                .sum::<usize>()
        })
    });
    let frames: Vec<Vec<u8>> = Chunker::new(1, PayloadType::Bytes, None, data.clone())
        .expect("chunker")
        .collect();
    g.bench_function("reassemble", |bench| {
        bench.iter(|| assert_eq!(reassemble(&frames), 1 << 20))
    });
    g.finish();
    // The usual message of a bulk sender: 16 KiB, one full frame and a short one.
    let small = vec![0x5au8; 16 << 10];
    let frames: Vec<Vec<u8>> = Chunker::new(1, PayloadType::Bytes, None, small.clone())
        .expect("chunker")
        .collect();
    let mut g = c.benchmark_group("transfer 16 KiB");
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function("reassemble", |bench| {
        bench.iter(|| assert_eq!(reassemble(&frames), 16 << 10))
    });
    g.finish();
}

/// Feeds `frames` to a new reassembler; the bytes of the messages completed.
fn reassemble(frames: &[Vec<u8>]) -> usize {
    let mut r = Reassembler::default();
    let mut n = 0;
    for f in frames {
        for o in r.feed_bytes(black_box(f)) {
            if let Outcome::Completed { data, .. } = o {
                n += data.len();
            }
        }
    }
    n
}

criterion_group!(benches, signaling, transfer);
criterion_main!(benches);
