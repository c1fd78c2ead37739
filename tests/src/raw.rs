//! A client speaking raw frames over the real socket, and a connected pair of daemons: what the
//! conformance tests use to see exactly what the daemon writes.

use std::time::Duration;

use anyhow::{bail, Result};
use peerix_ipc_proto::rmpv::Value;
use peerix_ipc_proto::{
    decode_daemon, encode_frame, ClientMessage, DaemonMessage, ErrorCode, Hello, Progress, Reply,
    Request, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::{field, is, DaemonProc, Member, TestEnv};

/// How long the pair's connections and channels may take to come up.
pub const CONNECT: Duration = Duration::from_secs(15);

/// A client speaking raw frames, to see exactly what the daemon writes.
pub struct Raw {
    /// The connection.
    pub s: UnixStream,
}

impl Raw {
    /// Connects without a handshake.
    pub async fn connect(d: &DaemonProc) -> Result<Self> {
        Ok(Self {
            s: UnixStream::connect(&d.socket).await?,
        })
    }

    /// Connects and completes the handshake; returns the `welcome` too.
    pub async fn hello(d: &DaemonProc) -> Result<(Self, peerix_ipc_proto::Welcome)> {
        let mut r = Self::connect(d).await?;
        r.send(&ClientMessage::Hello(Hello {
            version: PROTOCOL_VERSION,
            client: "conformance".into(),
            capabilities: vec![],
        }))
        .await?;
        match r.recv().await? {
            Some(DaemonMessage::Welcome(w)) => Ok((r, w)),
            other => bail!("expected welcome, got {other:?}"),
        }
    }

    /// Writes one message.
    pub async fn send(&mut self, m: &ClientMessage) -> Result<()> {
        self.s.write_all(&encode_frame(m)?).await?;
        Ok(())
    }

    /// One frame whose body is `body` (any MessagePack bytes).
    pub async fn body(&mut self, body: &[u8]) -> Result<()> {
        self.s.write_all(&(body.len() as u32).to_be_bytes()).await?;
        self.s.write_all(body).await?;
        Ok(())
    }

    /// Writes a request.
    pub async fn request(&mut self, id: u64, op: &str, args: Value) -> Result<()> {
        self.send(&ClientMessage::Request(Request {
            id,
            op: op.into(),
            args,
        }))
        .await
    }

    /// The next frame (20 s at most), or `None` at EOF.
    pub async fn recv(&mut self) -> Result<Option<DaemonMessage>> {
        self.recv_within(Duration::from_secs(20)).await
    }

    /// The next frame within `t`, or `None` at EOF.
    pub async fn recv_within(&mut self, t: Duration) -> Result<Option<DaemonMessage>> {
        let mut len = [0u8; 4];
        match tokio::time::timeout(t, self.s.read_exact(&mut len)).await? {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).await?;
        Ok(Some(decode_daemon(&body)?))
    }

    /// The reply to request `id`, collecting the progress frames that came before it.
    pub async fn reply(
        &mut self,
        id: u64,
        progress: &mut Vec<(std::time::Instant, Progress)>,
    ) -> Result<Reply> {
        loop {
            match self.recv().await? {
                Some(DaemonMessage::Reply(r)) if r.id == id => return Ok(r),
                Some(DaemonMessage::Progress(p)) => progress.push((std::time::Instant::now(), p)),
                Some(DaemonMessage::Reply(_) | DaemonMessage::Event(_)) => {}
                other => bail!("waiting for reply {id}: got {other:?}"),
            }
        }
    }

    /// The next frame must be an `error` frame with `code`; returns its message.
    pub async fn expect_error_frame(&mut self, code: ErrorCode) -> Result<String> {
        match self.recv().await? {
            Some(DaemonMessage::Error(e)) if e.code == code => Ok(e.message),
            other => bail!("expected an error frame {code:?}, got {other:?}"),
        }
    }

    /// The daemon must close the connection.
    pub async fn expect_eof(&mut self) -> Result<()> {
        match self.recv().await {
            Ok(None) | Err(_) => Ok(()),
            Ok(Some(m)) => bail!("expected the daemon to close, got {m:?}"),
        }
    }
}

/// A map with string keys.
pub fn map(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// The MessagePack bytes of `v`.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut b = Vec::new();
    peerix_ipc_proto::rmpv::encode::write_value(&mut b, v).expect("encode");
    b
}

/// The error code of a failed reply.
pub fn error_of(r: &Reply) -> Option<&ErrorCode> {
    r.error.as_ref().map(|e| &e.code)
}

/// Two daemons in `room`, connected; returns the daemons and one member on each.
pub async fn pair(env: &TestEnv, room: &str) -> Result<(DaemonProc, DaemonProc, Member, Member)> {
    let da = env.daemon("a", &[]).await?;
    let db = env.daemon("b", &[]).await?;
    let mut a = Member::join(&da, room, |_| {}).await?;
    let mut b = Member::join(&db, room, |_| {}).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("a sees b", CONNECT, |e| {
        is(e, "connection:connected", &b_id)
    })
    .await?;
    b.wait_for("b sees a", CONNECT, |e| {
        is(e, "connection:connected", &a_id)
    })
    .await?;
    Ok((da, db, a, b))
}

/// `a` opens `label` and both sides see it open.
pub async fn open_both(a: &mut Member, b: &mut Member, label: &str) -> Result<()> {
    a.open(label).await?;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.wait_for("channel open at a", CONNECT, |e| {
        is(e, "channel:open", &b_id) && field(e, "label") == Some(label)
    })
    .await?;
    b.wait_for("channel open at b", CONNECT, |e| {
        is(e, "channel:open", &a_id) && field(e, "label") == Some(label)
    })
    .await?;
    Ok(())
}

/// The value of `key` in a map.
pub fn value_of<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}
