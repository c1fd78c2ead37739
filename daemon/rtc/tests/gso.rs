//! A bulk transfer sends its datagrams in UDP GSO batches (vendor patch 39).
//!
//! The sender is ack-clocked: each SACK licenses about the datagrams it acknowledged, 11-15
//! at a time on loopback. The stack used GSO only for runs of 16 or more, so a transfer went
//! out one `sendmsg` per datagram; now runs of two or more go out in one call, also through
//! single-port mode's shared socket. Its own test binary, because the counts are per process
//! (and the tests take turns for the same reason).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use peerix_rtc::{mux_recv_counts, udp_send_counts, ChannelEvent, RtcConfig};

/// The counts are the process's: one transfer at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_transfer_goes_out_in_gso_batches() {
    let _turn = TURN.lock().await;
    bulk_transfer_is_batched(&config(), &config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_port_mode_batches_too() {
    let _turn = TURN.lock().await;
    // The sender on the shared socket; two ends on one shared socket would route to each
    // other's connection, which single-port mode leaves to separate processes.
    let one_port = RtcConfig {
        udp_port: Some(0),
        ..config()
    };
    bulk_transfer_is_batched(&one_port, &config()).await;
}

/// The receiving side in single-port mode reads the shared socket with `recvmmsg`, and its
/// connection's driver takes what is queued for it in GRO-style batches: before, both read
/// one datagram at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_port_mode_receives_in_batches() {
    let _turn = TURN.lock().await;
    let one_port = RtcConfig {
        udp_port: Some(0),
        ..config()
    };
    let before = mux_recv_counts();
    bulk_transfer_is_batched(&config(), &one_port).await;
    let after = mux_recv_counts();
    let reads = after.socket_reads - before.socket_reads;
    let datagrams = after.socket_datagrams - before.socket_datagrams;
    let driver_reads = after.driver_reads - before.driver_reads;
    let driver_datagrams = after.driver_datagrams - before.driver_datagrams;
    eprintln!(
        "shared socket: {datagrams} datagrams in {reads} reads; driver: {driver_datagrams} in \
         {driver_reads} reads"
    );
    assert!(
        datagrams > 7_000,
        "only {datagrams} datagrams came through the mux"
    );
    // A sender's GSO batch (about 11 datagrams) lands at once; one read per datagram is 1.0.
    assert!(
        datagrams >= 2 * reads,
        "{datagrams} datagrams took {reads} reads of the shared socket"
    );
    assert!(
        driver_datagrams >= 2 * driver_reads,
        "{driver_datagrams} datagrams took {driver_reads} reads by the connection's driver"
    );
}

async fn bulk_transfer_is_batched(a_cfg: &RtcConfig, b_cfg: &RtcConfig) {
    init_tracing();
    let (a, mut b, _) = connect_with_each(a_cfg, b_cfg).await;
    let (a_chat, mut b_ev) = open_chat(&a, &mut b).await;

    // 512 × 16 KiB = 8 MiB: about 7,300 datagrams of data.
    const N: usize = 512;
    let chunk = Bytes::from(vec![3u8; 16 * 1024]);
    let before = udp_send_counts();
    let sender = tokio::spawn(async move {
        for _ in 0..N {
            a_chat.send(chunk.clone()).await.expect("send");
        }
        a_chat
    });
    let mut got = 0;
    while got < N {
        match tokio::time::timeout(Duration::from_secs(20), b_ev.recv()).await {
            Ok(Some(ChannelEvent::Message { data, .. })) => {
                assert_eq!(data.len(), 16 * 1024);
                got += 1;
            }
            Ok(Some(_)) => {}
            other => panic!("after {got} of {N} messages: {other:?}"),
        }
    }
    let _a_chat = sender.await.expect("sender task");
    let after = udp_send_counts();
    let calls = after.calls - before.calls;
    let datagrams = after.datagrams - before.datagrams;
    eprintln!("{datagrams} datagrams in {calls} sendmsg calls");
    assert!(
        datagrams > 7_000,
        "8 MiB went out in only {datagrams} datagrams: the counter misses sends"
    );
    // Both directions are counted: B's SACKs (about one per 11 datagrams) go one per call.
    // One call per datagram is about 1.0; batches of ~11 with the SACKs about 5.
    assert!(
        datagrams >= 3 * calls,
        "{datagrams} datagrams took {calls} sendmsg calls: the transfer was not batched \
         with UDP GSO"
    );
    a.peer.close().await;
    b.peer.close().await;
}
