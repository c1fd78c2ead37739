//! Where the memory of a connection goes: a dhat heap profile of N connected pairs.
//!
//! `cargo run -p peerix-rtc --example rtc_heap [pairs]` connects `pairs` pairs (default 8),
//! lets them settle, and prints the live heap per connection plus the top allocation sites
//! still live at the end (from dhat's `dhat-heap.json`, also left in the working directory
//! for `dh_view.html`).

use std::time::Duration;

use peerix_rtc::loopback::{self, LoopbackPair};
use peerix_rtc::{RtcConfig, RtcPeer};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects two peers in this process and keeps draining their events.
async fn pair(cfg: &RtcConfig) -> Result<(RtcPeer, RtcPeer), BoxError> {
    let LoopbackPair {
        a,
        b,
        mut a_events,
        mut b_events,
        ..
    } = loopback::connect(cfg, Duration::from_secs(10)).await?;
    tokio::spawn(async move { while a_events.recv().await.is_some() {} });
    tokio::spawn(async move { while b_events.recv().await.is_some() {} });
    Ok((a, b))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let pairs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8);
    let profiler = dhat::Profiler::new_heap();
    let cfg = RtcConfig::default();
    // One pair first so one-time allocations (runtime, reactor threads, statics) are not
    // counted per connection.
    let warm = pair(&cfg).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = dhat::HeapStats::get();
    let mut keep = Vec::new();
    for _ in 0..pairs {
        keep.push(pair(&cfg).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = dhat::HeapStats::get();
    let per_conn = (now.curr_bytes.saturating_sub(base.curr_bytes)) / (2 * pairs);
    let blocks = (now.curr_blocks.saturating_sub(base.curr_blocks)) / (2 * pairs);
    println!(
        "live heap per connection: {per_conn} bytes in {blocks} blocks ({pairs} pairs beyond a warm-up pair)"
    );
    drop(profiler);
    drop(keep);
    drop(warm);
    Ok(())
}
