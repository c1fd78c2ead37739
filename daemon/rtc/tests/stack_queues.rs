//! The WebRTC stack's internal event queues (`webrtc::runtime::channel`, vendor patch 16):
//! still bounded, and their memory follows what they hold instead of their capacity. Every
//! connection has one application → driver queue and one per data channel, each of 256
//! events; preallocated, they were ~74 KB of an idle connection's memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use webrtc::runtime::{channel, TrySendError};

/// Counts the bytes allocated by the current thread (tests run on several threads).
struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: the thread-local may be gone while a thread exits.
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated() -> usize {
    ALLOCATED.with(Cell::get)
}

/// About the size of the stack's application → driver event.
type Event = [u8; 240];

#[test]
fn an_empty_queue_allocates_far_less_than_its_capacity() {
    let before = allocated();
    let (tx, mut rx) = channel::<Event>(256);
    let empty = allocated() - before;
    assert!(
        empty < 4 * 1024,
        "an empty queue of 256 events allocated {empty} bytes"
    );
    // Holding a few events costs about what they take, not the capacity.
    for _ in 0..3 {
        tx.try_send([0; 240]).expect("room");
    }
    let few = allocated() - before;
    assert!(
        few < 256 * std::mem::size_of::<Event>() / 4,
        "a queue holding 3 events allocated {few} bytes"
    );
    for _ in 0..3 {
        rx.try_recv().expect("queued");
    }
}

#[test]
fn the_bound_holds_and_room_comes_back() {
    let (tx, mut rx) = channel::<u32>(2);
    tx.try_send(1).expect("room");
    tx.try_send(2).expect("room");
    assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
    assert_eq!(rx.try_recv().ok(), Some(1));
    tx.try_send(3).expect("room again");
    assert!(matches!(tx.try_send(4), Err(TrySendError::Full(4))));
    assert_eq!(rx.try_recv().ok(), Some(2));
    assert_eq!(rx.try_recv().ok(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_holds_the_sender_until_the_receiver_takes_one() {
    let (tx, mut rx) = channel::<u32>(1);
    tx.send(1).await.expect("room");
    let sender = tokio::spawn(async move {
        tx.send(2).await.expect("room after a receive");
        tx
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!sender.is_finished(), "the send did not wait for room");
    assert_eq!(rx.recv().await, Some(1));
    let tx = tokio::time::timeout(Duration::from_secs(5), sender)
        .await
        .expect("the waiting send completes once there is room")
        .expect("task");
    assert_eq!(rx.recv().await, Some(2));
    drop(tx);
    assert_eq!(rx.recv().await, None);
}

/// The waiting sender runs on the other worker while the receiver is dropped, many times: a
/// sender that re-checked between the receiver's wake-up and the inner channel's closing used
/// to listen again and never wake (vendor patch 28; about one run in a loaded full suite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_waiting_for_room_sees_the_receiver_go() {
    for round in 0..300u32 {
        let (tx, rx) = channel::<u32>(1);
        tx.send(1).await.expect("room");
        let sender = tokio::spawn(async move { tx.send(2).await.is_err() });
        if round % 2 == 0 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_micros(u64::from(round % 7) * 100)).await;
        }
        drop(rx);
        let failed = tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the waiting send never ended"))
            .expect("task");
        assert!(failed, "a send into a closed queue reports it");
    }
}
