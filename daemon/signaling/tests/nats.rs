//! NATS driver against a real `nats-server` process on a free loopback port.
//!
//! Requires `nats-server` on PATH (or `NATS_SERVER_BIN`); the tests fail loudly
//! when it is missing rather than silently passing.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use peerix_signaling::{Driver, DriverError, DriverEvent, NatsConfig, NatsDriver};
use tokio::sync::mpsc::{channel, Receiver};

/// Whether what listens on `port` greets as a NATS server does.
fn greets_as_nats(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut hello = [0u8; 4];
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .is_ok()
        && stream.read_exact(&mut hello).is_ok()
        && &hello == b"INFO"
}

/// A running nats-server, killed on drop.
struct NatsServer {
    child: Child,
    port: u16,
}

/// A loopback port that is free now and never handed out twice in this
/// process: the restart test frees and re-binds its port, and a parallel test
/// must not grab it in between.
fn free_port() -> u16 {
    static USED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
}

impl NatsServer {
    /// On a fresh port; another one if the server could not keep its port.
    fn start(extra: &[&str]) -> Self {
        for _ in 0..3 {
            if let Some(server) = Self::try_start_on(free_port(), extra) {
                return server;
            }
        }
        panic!("nats-server exited three times instead of listening on a free port");
    }

    fn start_on(port: u16, extra: &[&str]) -> Self {
        Self::try_start_on(port, extra)
            .unwrap_or_else(|| panic!("nats-server exited instead of listening on port {port}"))
    }

    /// `None` if the server exited before greeting on `port` (it lost the port to another
    /// socket between `free_port` and its bind).
    fn try_start_on(port: u16, extra: &[&str]) -> Option<Self> {
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let port_s = port.to_string();
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &port_s])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{bin}` ({e}); install nats-server (e.g. `apt-get install -y nats-server`) \
                     or set NATS_SERVER_BIN — the NATS driver tests need a real server"
                )
            });
        let mut server = NatsServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Listening is not enough: a connection to a port nothing listens on can meet itself
        // (a TCP self-connect when the kernel picks that port as the source), and a server that
        // lost its port to another socket exits. Only nats-server greets with `INFO`.
        while !greets_as_nats(port) {
            if let Ok(Some(_)) = server.child.try_wait() {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not greet on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(server: &NatsServer, prefix: &str) -> NatsConfig {
    NatsConfig {
        servers: vec![server.url()],
        prefix: prefix.into(),
        connect_timeout: Duration::from_secs(2),
        ..NatsConfig::default()
    }
}

async fn connect(cfg: NatsConfig) -> (NatsDriver, Receiver<DriverEvent>) {
    let (tx, rx) = channel(1024);
    (NatsDriver::connect(cfg, tx).await.expect("connect"), rx)
}

async fn next_msg(rx: &mut Receiver<DriverEvent>, wait: Duration) -> Option<(String, Bytes)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(DriverEvent::Message { namespace, payload })) => {
                return Some((namespace, payload))
            }
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

async fn wait_active(rx: &mut Receiver<DriverEvent>, want: bool, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(DriverEvent::Active(a))) if a == want => return,
            Ok(Some(_)) => continue,
            _ => panic!("no Active({want}) event within {wait:?}"),
        }
    }
}

/// Make sure SUBs reached the server before publishing from another connection.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn two_drivers_exchange_with_prefix() {
    let server = NatsServer::start(&[]);
    let (a, mut rx_a) = connect(config(&server, "peerix.")).await;
    let (b, mut rx_b) = connect(config(&server, "peerix.")).await;
    assert_eq!(a.kind(), "nats");
    assert!(a.is_active());
    a.subscribe("room").await.unwrap();
    b.subscribe("room").await.unwrap();
    b.subscribe("room").await.unwrap();
    settle().await;
    a.publish("room", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut rx_b, Duration::from_secs(3)).await,
        Some(("room".into(), Bytes::from_static(b"hello")))
    );
    // Refcounted: one NATS subscription, one delivery.
    assert_eq!(next_msg(&mut rx_b, Duration::from_millis(300)).await, None);
    // no_echo: the publisher does not get its own message back.
    assert_eq!(next_msg(&mut rx_a, Duration::from_millis(300)).await, None);

    // Different prefix = different subject space.
    let (c, mut rx_c) = connect(config(&server, "other.")).await;
    c.subscribe("room").await.unwrap();
    settle().await;
    a.publish("room", Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(next_msg(&mut rx_c, Duration::from_millis(400)).await, None);

    b.unsubscribe("room").await.unwrap();
    a.publish("room", Bytes::from_static(b"still"))
        .await
        .unwrap();
    assert!(next_msg(&mut rx_b, Duration::from_secs(3)).await.is_some());
    b.unsubscribe("room").await.unwrap();
    settle().await;
    a.publish("room", Bytes::from_static(b"gone"))
        .await
        .unwrap();
    assert_eq!(next_msg(&mut rx_b, Duration::from_millis(400)).await, None);

    a.close().await;
    a.close().await;
    assert!(!a.is_active());
    a.publish("room", Bytes::from_static(b"after close"))
        .await
        .unwrap();
    assert!(matches!(
        a.subscribe("room").await,
        Err(DriverError::Closed(_))
    ));
}

#[tokio::test]
async fn raw_wire_format_matches_peerix() {
    let server = NatsServer::start(&[]);
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut raw_sub = raw
        .subscribe("peerix.kt5sJF8R3JgTW2WOGWtOHhnzkniNtCjhEywWtylBd43")
        .await
        .unwrap();
    raw.flush().await.unwrap();
    let (d, mut rx) = connect(config(&server, "peerix.")).await;
    d.subscribe("T7n7wLS3qHXrycjxGpCmqW3Faj0LcfKdBGAdbku9lbm")
        .await
        .unwrap();
    settle().await;

    let payload = Bytes::from_static(b"\x00\x01\x02\xffpacket");
    d.publish(
        "kt5sJF8R3JgTW2WOGWtOHhnzkniNtCjhEywWtylBd43",
        payload.clone(),
    )
    .await
    .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(3), raw_sub.next())
        .await
        .expect("raw subscriber timed out")
        .expect("raw subscription ended");
    assert_eq!(
        msg.subject.as_str(),
        "peerix.kt5sJF8R3JgTW2WOGWtOHhnzkniNtCjhEywWtylBd43"
    );
    assert_eq!(msg.payload, payload);
    assert!(msg.headers.is_none(), "no headers expected");
    assert!(msg.reply.is_none(), "no reply subject expected");

    // And the other direction: raw PUB is delivered verbatim.
    raw.publish(
        "peerix.T7n7wLS3qHXrycjxGpCmqW3Faj0LcfKdBGAdbku9lbm",
        Bytes::from_static(b"raw!"),
    )
    .await
    .unwrap();
    raw.flush().await.unwrap();
    assert_eq!(
        next_msg(&mut rx, Duration::from_secs(3)).await,
        Some((
            "T7n7wLS3qHXrycjxGpCmqW3Faj0LcfKdBGAdbku9lbm".into(),
            Bytes::from_static(b"raw!")
        ))
    );
}

#[tokio::test]
async fn reconnect_after_server_restart() {
    let mut server = NatsServer::start(&[]);
    let port = server.port;
    let (d, mut rx) = connect(config(&server, "p.")).await;
    d.subscribe("ns").await.unwrap();
    settle().await;

    server.kill();
    wait_active(&mut rx, false, Duration::from_secs(5)).await;
    assert!(!d.is_active());
    // Dropped, not queued, while disconnected.
    d.publish("ns", Bytes::from_static(b"stale")).await.unwrap();

    let server = NatsServer::start_on(port, &[]);
    wait_active(&mut rx, true, Duration::from_secs(10)).await;
    assert!(d.is_active());

    // The subscription was re-established by async-nats: a fresh client's
    // publish reaches us (retry briefly in case SUB is still in flight).
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut got = None;
    for _ in 0..30 {
        raw.publish("p.ns", Bytes::from_static(b"after"))
            .await
            .unwrap();
        raw.flush().await.unwrap();
        if let Some(m) = next_msg(&mut rx, Duration::from_millis(200)).await {
            got = Some(m);
            break;
        }
    }
    let (ns, payload) = got.expect("subscription not restored after reconnect");
    assert_eq!(ns, "ns");
    // The message published while disconnected must not have been queued.
    assert_eq!(payload, Bytes::from_static(b"after"));

    // Publishing works again after reconnect. `flush` only writes the SUB
    // out, it does not wait for the server to process it, so retry briefly.
    let mut raw_sub = raw.subscribe("p.ns2").await.unwrap();
    raw.flush().await.unwrap();
    let mut back = None;
    for _ in 0..30 {
        d.publish("ns2", Bytes::from_static(b"back")).await.unwrap();
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), raw_sub.next()).await {
            back = m;
            break;
        }
    }
    let msg = back.expect("publish after reconnect did not arrive");
    assert_eq!(msg.payload, Bytes::from_static(b"back"));
    d.close().await;
}

#[tokio::test]
async fn wrong_credentials_give_clear_error() {
    let server = NatsServer::start(&["--user", "u", "--pass", "p"]);
    let (tx, _rx) = channel(1024);
    let cfg = NatsConfig {
        user: Some("u".into()),
        password: Some("wrong".into()),
        ..config(&server, "")
    };
    let err = NatsDriver::connect(cfg, tx.clone()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("authorization"), "{text}");
    assert!(text.contains(&server.url()), "{text}");
    assert!(text.starts_with("nats: "), "{text}");

    // No credentials at all: same clear error.
    let err = NatsDriver::connect(config(&server, ""), tx.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("authorization"), "{err}");

    // Correct credentials work.
    let cfg = NatsConfig {
        user: Some("u".into()),
        password: Some("p".into()),
        ..config(&server, "")
    };
    let d = NatsDriver::connect(cfg, tx).await.unwrap();
    assert!(d.is_active());
    d.close().await;
}

#[tokio::test]
async fn token_auth_works() {
    let server = NatsServer::start(&["--auth", "s3cret"]);
    let cfg = NatsConfig {
        token: Some("s3cret".into()),
        ..config(&server, "t.")
    };
    let (a, _rx_a) = connect(cfg.clone()).await;
    let (b, mut rx_b) = connect(cfg).await;
    b.subscribe("n").await.unwrap();
    settle().await;
    a.publish("n", Bytes::from_static(b"tok")).await.unwrap();
    assert_eq!(
        next_msg(&mut rx_b, Duration::from_secs(3)).await,
        Some(("n".into(), Bytes::from_static(b"tok")))
    );
    let (tx, _rx) = channel(1024);
    let bad = NatsConfig {
        token: Some("nope".into()),
        ..config(&server, "")
    };
    let err = NatsDriver::connect(bad, tx).await.unwrap_err();
    assert!(err.to_string().contains("authorization"), "{err}");
}

#[tokio::test]
async fn connection_refused_is_explained() {
    // Bound but never listening: connects are refused, and no server started by
    // a test running beside this one can take the port while we hold it.
    let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
    reserved
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind 127.0.0.1:0");
    let port = reserved.local_addr().expect("local_addr").port();
    let (tx, _rx) = channel(1024);
    let cfg = NatsConfig {
        servers: vec![format!("nats://127.0.0.1:{port}")],
        connect_timeout: Duration::from_secs(2),
        ..NatsConfig::default()
    };
    let err = NatsDriver::connect(cfg, tx).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("connection refused"), "{text}");
    assert!(text.contains("is nats-server running?"), "{text}");
    assert!(text.contains(&port.to_string()), "{text}");
    drop(reserved);
}
