//! Memory driver: fan-out, self-delivery, refcounted subscriptions.

use std::time::Duration;

use bytes::Bytes;
use peerix_signaling::{Driver, DriverEvent, MemoryDriver, MemoryHub};
use tokio::sync::mpsc::{channel, Receiver};

async fn next_msg(rx: &mut Receiver<DriverEvent>) -> Option<(String, Bytes)> {
    loop {
        match tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            Ok(Some(DriverEvent::Message { namespace, payload })) => {
                return Some((namespace, payload))
            }
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn fan_out_self_delivery_and_refcount() {
    let hub = MemoryHub::new();
    let (tx_a, mut rx_a) = channel(1024);
    let (tx_b, mut rx_b) = channel(1024);
    let (tx_c, mut rx_c) = channel(1024);
    let a = MemoryDriver::new(&hub, tx_a);
    let b = MemoryDriver::new(&hub, tx_b);
    let c = MemoryDriver::new(&hub, tx_c);
    assert_eq!(a.kind(), "memory");
    assert!(a.is_active());

    a.subscribe("room").await.unwrap();
    b.subscribe("room").await.unwrap();
    b.subscribe("room").await.unwrap(); // second reference (two rooms)
    c.subscribe("other").await.unwrap();

    a.publish("room", Bytes::from_static(b"hi")).await.unwrap();
    assert_eq!(
        next_msg(&mut rx_a).await,
        Some(("room".into(), Bytes::from_static(b"hi")))
    );
    assert_eq!(
        next_msg(&mut rx_b).await,
        Some(("room".into(), Bytes::from_static(b"hi")))
    );
    // Delivered once per driver even with two references.
    assert_eq!(next_msg(&mut rx_b).await, None);
    assert_eq!(next_msg(&mut rx_c).await, None);

    // One unsubscribe of two references keeps delivery.
    b.unsubscribe("room").await.unwrap();
    c.publish("room", Bytes::from_static(b"x")).await.unwrap();
    assert!(next_msg(&mut rx_b).await.is_some());
    assert!(next_msg(&mut rx_a).await.is_some());
    // The last one stops it.
    b.unsubscribe("room").await.unwrap();
    c.publish("room", Bytes::from_static(b"y")).await.unwrap();
    assert_eq!(next_msg(&mut rx_b).await, None);
    assert!(next_msg(&mut rx_a).await.is_some());

    // Unsubscribing an unknown namespace is a no-op.
    b.unsubscribe("nope").await.unwrap();

    a.close().await;
    a.close().await;
    assert!(!a.is_active());
    c.publish("room", Bytes::from_static(b"z")).await.unwrap();
    assert_eq!(next_msg(&mut rx_a).await, None);
    assert!(a.subscribe("room").await.is_err());
}

#[tokio::test]
async fn delivery_is_asynchronous_and_hubs_are_isolated() {
    let hub = MemoryHub::new();
    let (tx, mut rx) = channel(1024);
    let a = MemoryDriver::new(&hub, tx);
    a.subscribe("n").await.unwrap();
    a.publish("n", Bytes::from_static(b"1")).await.unwrap();
    // Other hub: no cross-talk.
    let (tx2, mut rx2) = channel(1024);
    let other = MemoryDriver::new(&MemoryHub::new(), tx2);
    other.subscribe("n").await.unwrap();
    assert!(next_msg(&mut rx).await.is_some());
    assert_eq!(next_msg(&mut rx2).await, None);

    // Dropping a driver detaches it from the hub.
    let (tx3, _rx3) = channel(1024);
    let d = MemoryDriver::with_delay(&hub, tx3, Duration::from_millis(10));
    d.subscribe("n").await.unwrap();
    drop(d);
    a.publish("n", Bytes::from_static(b"2")).await.unwrap();
    assert!(next_msg(&mut rx).await.is_some());
}

#[tokio::test]
async fn delayed_delivery() {
    let hub = MemoryHub::new();
    let (tx, mut rx) = channel(1024);
    let a = MemoryDriver::with_delay(&hub, tx, Duration::from_millis(100));
    a.subscribe("n").await.unwrap();
    let start = std::time::Instant::now();
    a.publish("n", Bytes::from_static(b"1")).await.unwrap();
    assert!(next_msg(&mut rx).await.is_some());
    assert!(start.elapsed() >= Duration::from_millis(100));
}
