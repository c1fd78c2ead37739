//! Tests of `turn_stream.rs` (a fake TURN server on loopback TCP).

use super::*;
use tokio::net::TcpListener;
use webrtc::runtime::Runtime as _;

async fn send(sock: &StreamTurnSocket, to: SocketAddr, contents: &[u8]) {
    let t = Transmit {
        destination: to,
        ecn: None,
        contents,
        segment_size: None,
        src_ip: None,
    };
    let n = std::future::poll_fn(|cx| sock.poll_send(cx, &t))
        .await
        .expect("send");
    assert_eq!(n, contents.len());
}

async fn recv(sock: &StreamTurnSocket) -> (SocketAddr, Vec<u8>) {
    let mut buf = vec![0u8; 2048];
    let mut meta = [RecvMeta::default()];
    let fut = std::future::poll_fn(|cx| {
        let mut bufs = [io::IoSliceMut::new(&mut buf)];
        sock.poll_recv(cx, &mut bufs, &mut meta)
    });
    let n = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("a datagram within 5 s")
        .expect("recv");
    assert_eq!(n, 1);
    (meta[0].addr, buf[..meta[0].len].to_vec())
}

/// A fake TURN server on loopback TCP: what the socket writes arrives framed, what the
/// server writes (split and merged) comes out as datagrams from its address, and a
/// 64 KiB length header closes the stream with the reason recorded.
#[test]
fn datagrams_cross_a_tcp_stream_and_a_hostile_length_closes_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let server = listener.local_addr().expect("addr");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        udp.set_nonblocking(true).expect("nonblocking");
        let inner = webrtc::runtime::TokioRuntime
            .wrap_udp_socket(udp)
            .expect("wrap");
        let streams = Arc::new(TurnStreams::default());
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&told);
        streams.set_sink(Box::new(move |url, outcome| {
            lock(&sink).push((url.to_owned(), outcome));
        }));
        let sock = StreamTurnSocket::new(inner, Arc::clone(&streams)).expect("socket");
        streams.register(server, StreamKind::Tcp, "turn:test?transport=tcp");

        // ChannelData of 5 bytes goes out padded to 12.
        send(&sock, server, &[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5]).await;
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut got = [0u8; 12];
        conn.read_exact(&mut got).await.expect("read");
        assert_eq!(got, [0x40, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0]);

        // A STUN success response split over two writes, then padded ChannelData.
        let mut response = vec![0x01, 0x03, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42];
        response.extend_from_slice(&[9; 12]);
        response.extend_from_slice(&[0, 0, 0, 0]);
        conn.write_all(&response[..7]).await.expect("write");
        conn.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(20)).await;
        conn.write_all(&response[7..]).await.expect("write");
        conn.write_all(&[0x40, 0x01, 0x00, 0x01, 7, 0, 0, 0])
            .await
            .expect("write");
        assert_eq!(recv(&sock).await, (server, response));
        assert_eq!(recv(&sock).await, (server, vec![0x40, 0x01, 0x00, 0x01, 7]));

        // A hostile length: the stream is closed, and the reason goes to the owner; the
        // stream carried an Allocate success (0x0103 above), so the allocation is lost.
        conn.write_all(&[0x40, 0x00, 0xff, 0xff])
            .await
            .expect("write");
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
        // The task reports right after closing; give it a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let told = lock(&told).clone();
        assert!(
            matches!(told.as_slice(), [(url, TurnOutcome::StreamLost(e))]
                if url == "turn:test?transport=tcp" && e.contains("65540-byte")),
            "{told:?}"
        );
    });
}

/// A server that refuses the connection: the owner hears it at once, with what to do.
#[test]
fn a_refused_stream_is_told_to_the_owner() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // A port nobody listens on any more.
        let server = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen")
            .local_addr()
            .expect("addr");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        udp.set_nonblocking(true).expect("nonblocking");
        let inner = webrtc::runtime::TokioRuntime
            .wrap_udp_socket(udp)
            .expect("wrap");
        let streams = Arc::new(TurnStreams::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        streams.set_sink(Box::new(move |url, outcome| {
            let _ = tx.send((url.to_owned(), outcome));
        }));
        let sock = StreamTurnSocket::new(inner, Arc::clone(&streams)).expect("socket");
        streams.register(server, StreamKind::Tcp, "turn:refused?transport=tcp");
        send(&sock, server, &[0x40, 0x00, 0x00, 0x01, 1]).await;
        let (url, outcome) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("told within 5 s")
            .expect("an outcome");
        assert_eq!(url, "turn:refused?transport=tcp");
        assert!(
            matches!(&outcome, TurnOutcome::StreamFailed(e) if e.contains("refused") && e.contains("running")),
            "{outcome:?}"
        );
    });
}

/// A socket makes its receive queue only when its first stream opens (a connection that never
/// reaches a TURN server over a stream holds none), and a reader that was already waiting
/// then still gets what the stream delivers: the queue's creation wakes it.
#[test]
fn the_receive_queue_is_made_by_the_first_stream_and_wakes_a_waiting_reader() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let server = listener.local_addr().expect("addr");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        udp.set_nonblocking(true).expect("nonblocking");
        let inner = webrtc::runtime::TokioRuntime
            .wrap_udp_socket(udp)
            .expect("wrap");
        let streams = Arc::new(TurnStreams::default());
        let sock = Arc::new(StreamTurnSocket::new(inner, Arc::clone(&streams)).expect("socket"));
        assert!(
            lock(&sock.inbound).queue.is_none(),
            "a queue before any stream"
        );

        // The reader waits (nothing on the UDP socket, no queue) before the stream exists; it
        // runs in its own task so that nothing else polls it again by chance.
        let reader = tokio::spawn({
            let sock = Arc::clone(&sock);
            async move { recv(&sock).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!reader.is_finished());
        assert!(
            lock(&sock.inbound).queue.is_none(),
            "a queue before any stream"
        );

        streams.register(server, StreamKind::Tcp, "turn:test?transport=tcp");
        send(&sock, server, &[0x40, 0x00, 0x00, 0x01, 1]).await;
        assert!(
            lock(&sock.inbound).queue.is_some(),
            "no queue once a stream opened"
        );
        let (mut conn, _) = listener.accept().await.expect("accept");
        conn.write_all(&[0x40, 0x01, 0x00, 0x01, 7, 0, 0, 0])
            .await
            .expect("write");
        // Well inside `recv`'s own 5 s: a reader that nothing woke would only look again
        // when that timer fires (and then find the datagram).
        let got = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .expect("the waiting reader was woken for the stream's datagram")
            .expect("reader task");
        assert_eq!(got, (server, vec![0x40, 0x01, 0x00, 0x01, 7]));
    });
}
