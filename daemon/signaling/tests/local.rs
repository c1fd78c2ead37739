//! Local (Unix datagram) driver, real sockets in a temp directory.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram as StdUnixDatagram;
use std::time::Duration;

use bytes::Bytes;
use peerix_signaling::{
    connect_driver, Driver, DriverConfig, DriverError, DriverEvent, LocalConfig, LocalDriver,
    MAX_LOCAL_DATAGRAM,
};
use tokio::sync::mpsc::{channel, Receiver};

async fn next_msg(rx: &mut Receiver<DriverEvent>) -> Option<(String, Bytes)> {
    loop {
        match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(DriverEvent::Message { namespace, payload })) => {
                return Some((namespace, payload))
            }
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

async fn start(dir: &std::path::Path) -> (LocalDriver, Receiver<DriverEvent>) {
    let (tx, rx) = channel(1024);
    let cfg = LocalConfig {
        dir: Some(dir.to_path_buf()),
    };
    (LocalDriver::start(cfg, tx).await.unwrap(), rx)
}

fn sock_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().ends_with(".sock"))
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test]
async fn two_drivers_exchange_and_self_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rv");
    let (a, mut rx_a) = start(&dir).await;
    let (b, mut rx_b) = start(&dir).await;
    assert_eq!(a.kind(), "local");
    assert!(a.is_active());
    // Directory 0700, socket 0600.
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let mode = std::fs::metadata(a.socket_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    a.subscribe("room").await.unwrap();
    b.subscribe("room").await.unwrap();
    a.publish("room", Bytes::from_static(b"from-a"))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut rx_b).await,
        Some(("room".into(), Bytes::from_static(b"from-a")))
    );
    // Own message delivered in-process, exactly once.
    assert_eq!(
        next_msg(&mut rx_a).await,
        Some(("room".into(), Bytes::from_static(b"from-a")))
    );
    assert_eq!(next_msg(&mut rx_a).await, None);

    // Empty payload and a binary payload round-trip.
    let bin: Vec<u8> = (0..=255u8).collect();
    b.publish("room", Bytes::from(bin.clone())).await.unwrap();
    assert_eq!(
        next_msg(&mut rx_a).await,
        Some(("room".into(), Bytes::from(bin)))
    );
    b.publish("room", Bytes::new()).await.unwrap();
    let _ = next_msg(&mut rx_b).await; // own copies
    let _ = next_msg(&mut rx_b).await;
    assert_eq!(
        next_msg(&mut rx_a).await,
        Some(("room".into(), Bytes::new()))
    );

    // Not subscribed → nothing.
    a.publish("elsewhere", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(next_msg(&mut rx_b).await, None);

    // Close unlinks the socket and is idempotent; publish after close is Ok.
    let path = a.socket_path().to_path_buf();
    a.close().await;
    a.close().await;
    assert!(!path.exists());
    assert!(!a.is_active());
    a.publish("room", Bytes::from_static(b"late"))
        .await
        .unwrap();
    assert!(matches!(
        a.subscribe("room").await,
        Err(DriverError::Closed(_))
    ));
    // Drop also unlinks.
    let bpath = b.socket_path().to_path_buf();
    drop(b);
    assert!(!bpath.exists());
}

#[tokio::test]
async fn five_drivers_full_mesh() {
    let tmp = tempfile::tempdir().unwrap();
    let mut drivers = Vec::new();
    for _ in 0..5 {
        let (d, rx) = start(tmp.path()).await;
        d.subscribe("room").await.unwrap();
        drivers.push((d, rx));
    }
    for (i, (d, _)) in drivers.iter().enumerate() {
        let payload = Bytes::from(format!("msg-{i}"));
        d.publish("room", payload).await.unwrap();
    }
    for (_, rx) in drivers.iter_mut() {
        let mut got = Vec::new();
        while let Some((ns, p)) = next_msg(rx).await {
            assert_eq!(ns, "room");
            got.push(String::from_utf8(p.to_vec()).unwrap());
        }
        got.sort();
        assert_eq!(got, vec!["msg-0", "msg-1", "msg-2", "msg-3", "msg-4"]);
    }
}

#[tokio::test]
async fn stale_socket_is_removed_and_delivery_continues() {
    let tmp = tempfile::tempdir().unwrap();
    // A socket nobody listens on any more: bind, then drop without unlinking.
    let stale = tmp.path().join("deadbeefdeadbeef.sock");
    drop(StdUnixDatagram::bind(&stale).unwrap());
    // A non-socket file with a .sock name must be left alone.
    let regular = tmp.path().join("notasocket.sock");
    std::fs::write(&regular, b"x").unwrap();
    assert!(stale.exists());

    let (a, _rx_a) = start(tmp.path()).await;
    let (b, mut rx_b) = start(tmp.path()).await;
    b.subscribe("n").await.unwrap();
    a.publish("n", Bytes::from_static(b"p")).await.unwrap();
    assert_eq!(
        next_msg(&mut rx_b).await,
        Some(("n".into(), Bytes::from_static(b"p")))
    );
    assert!(!stale.exists(), "stale socket should have been unlinked");
    assert!(regular.exists());
    assert_eq!(sock_count(tmp.path()), 3);
}

#[tokio::test]
async fn malformed_datagrams_do_not_break_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, mut rx_a) = start(tmp.path()).await;
    let (b, _rx_b) = start(tmp.path()).await;
    a.subscribe("n").await.unwrap();
    let raw = StdUnixDatagram::unbound().unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        b"\xff\xff",
        b"\x00\x10short",
        b"\x00\x02\xff\xfepayload",
    ] {
        raw.send_to(junk, a.socket_path()).unwrap();
    }
    // A well-formed raw datagram is accepted (framing is the whole protocol).
    raw.send_to(b"\x00\x01nraw", a.socket_path()).unwrap();
    assert_eq!(
        next_msg(&mut rx_a).await,
        Some(("n".into(), Bytes::from_static(b"raw")))
    );
    b.publish("n", Bytes::from_static(b"ok")).await.unwrap();
    assert_eq!(
        next_msg(&mut rx_a).await,
        Some(("n".into(), Bytes::from_static(b"ok")))
    );
    assert_eq!(next_msg(&mut rx_a).await, None);
}

#[tokio::test]
async fn oversize_publish_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _rx) = start(tmp.path()).await;
    let ok = Bytes::from(vec![7u8; MAX_LOCAL_DATAGRAM - 2 - 1]);
    let (b, mut rx_b) = start(tmp.path()).await;
    b.subscribe("n").await.unwrap();
    a.publish("n", ok.clone()).await.unwrap();
    assert_eq!(next_msg(&mut rx_b).await, Some(("n".into(), ok)));
    let too_big = Bytes::from(vec![7u8; MAX_LOCAL_DATAGRAM]);
    let err = a.publish("n", too_big).await.unwrap_err();
    assert!(matches!(err, DriverError::PayloadTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("too large"), "{err}");
}

#[tokio::test]
async fn unsubscribe_refcount_stops_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _rx_a) = start(tmp.path()).await;
    let (b, mut rx_b) = start(tmp.path()).await;
    b.subscribe("n").await.unwrap();
    b.subscribe("n").await.unwrap();
    b.unsubscribe("n").await.unwrap();
    a.publish("n", Bytes::from_static(b"1")).await.unwrap();
    assert!(next_msg(&mut rx_b).await.is_some());
    assert_eq!(next_msg(&mut rx_b).await, None);
    b.unsubscribe("n").await.unwrap();
    a.publish("n", Bytes::from_static(b"2")).await.unwrap();
    assert_eq!(next_msg(&mut rx_b).await, None);
    b.publish("n", Bytes::from_static(b"3")).await.unwrap();
    assert_eq!(next_msg(&mut rx_b).await, None);
}

#[test]
fn works_in_current_thread_runtime_with_localset_via_factory() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let tmp = tempfile::tempdir().unwrap();
        let cfg: DriverConfig = serde_json::from_value(serde_json::json!({
            "kind": "local",
            "dir": tmp.path(),
        }))
        .unwrap();
        let (tx1, _rx1) = channel(1024);
        let (tx2, mut rx2) = channel(1024);
        let a = connect_driver(cfg.clone(), tx1).await.unwrap();
        let b = connect_driver(cfg, tx2).await.unwrap();
        b.subscribe("n").await.unwrap();
        a.publish("n", Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(
            next_msg(&mut rx2).await,
            Some(("n".into(), Bytes::from_static(b"hello")))
        );
        a.close().await;
        b.close().await;
    });
}

#[test]
fn driver_config_serde() {
    let c: DriverConfig = serde_json::from_str(r#"{"kind":"memory"}"#).unwrap();
    assert_eq!(c, DriverConfig::Memory);
    let c: DriverConfig = serde_json::from_str(r#"{"kind":"local"}"#).unwrap();
    assert_eq!(c, DriverConfig::Local(LocalConfig::default()));
    let c: DriverConfig = serde_json::from_str(
        r#"{"kind":"nats","servers":["nats://h:1"],"prefix":"peerix.","connect_timeout_ms":1500}"#,
    )
    .unwrap();
    let DriverConfig::Nats(n) = c else {
        panic!("not nats")
    };
    assert_eq!(n.servers, vec!["nats://h:1"]);
    assert_eq!(n.prefix, "peerix.");
    assert_eq!(n.connect_timeout, Duration::from_millis(1500));
    assert_eq!(n.name, "peerixd");
    assert!(serde_json::from_str::<DriverConfig>(r#"{"kind":"mqtt"}"#).is_err());
}

/// The driver's event queue is bounded: while its owner does not read, the driver stops
/// reading its socket (the kernel holds or drops what comes), instead of queueing every
/// datagram in memory.
#[tokio::test]
async fn a_full_event_queue_stops_reading_the_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rv");
    let (tx, mut rx) = channel(4);
    let cfg = LocalConfig {
        dir: Some(dir.clone()),
    };
    let d = LocalDriver::start(cfg, tx).await.unwrap();
    d.subscribe("ns").await.unwrap();
    let sender = StdUnixDatagram::unbound().unwrap();
    sender.set_nonblocking(true).unwrap();
    let mut datagram = 2u16.to_be_bytes().to_vec();
    datagram.extend_from_slice(b"ns");
    datagram.extend_from_slice(b"packet");
    let mut sent = 0;
    for _ in 0..1000 {
        if sender.send_to(&datagram, d.socket_path()).is_ok() {
            sent += 1;
        }
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sent > 4, "only {sent} datagrams could be sent");
    assert!(
        rx.len() <= 4,
        "{} events queued for an owner that reads nothing (bound 4)",
        rx.len()
    );
    // Reading again resumes delivery.
    let mut got = 0;
    while next_msg(&mut rx).await.is_some() {
        got += 1;
    }
    assert!(got >= 4, "{got}");
    d.close().await;
}

#[tokio::test]
async fn datagrams_go_only_to_subscribers_and_to_older_drivers() {
    // Issue 14: every datagram went to every driver in the directory, so a room of N daemons
    // cost N× the datagrams and overflowed the receive queues (10 datagrams each).
    let tmp = tempfile::tempdir().unwrap();
    let (a, _rx_a) = start(tmp.path()).await;
    let (b, mut rx_b) = start(tmp.path()).await;
    b.subscribe("n").await.unwrap();
    // An older driver (a plain `<hex>.sock`, no namespace links) still gets everything.
    let legacy = StdUnixDatagram::bind(tmp.path().join("0123456789abcdef.sock")).unwrap();
    legacy.set_nonblocking(true).unwrap();
    // A driver of this version subscribed to nothing gets nothing.
    let idle = StdUnixDatagram::bind(tmp.path().join("fedcba9876543210-t.sock")).unwrap();
    idle.set_nonblocking(true).unwrap();
    a.publish("n", Bytes::from_static(b"p")).await.unwrap();
    a.publish("other", Bytes::from_static(b"q")).await.unwrap();
    assert_eq!(
        next_msg(&mut rx_b).await,
        Some(("n".into(), Bytes::from_static(b"p")))
    );
    let mut buf = [0u8; 64];
    let n = legacy.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"\x00\x01np");
    let n = legacy.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"\x00\x05otherq");
    assert!(idle.recv(&mut buf).is_err(), "nothing for a non-subscriber");
    // Its link goes with the subscription, and everything with the driver.
    let links = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".ns")
            })
            .count()
    };
    assert_eq!(links(tmp.path()), 1);
    b.unsubscribe("n").await.unwrap();
    assert_eq!(links(tmp.path()), 0);
    b.subscribe("m").await.unwrap();
    assert_eq!(links(tmp.path()), 1);
    drop(b);
    assert_eq!(links(tmp.path()), 0);
    assert!(a.socket_path().exists());
}
