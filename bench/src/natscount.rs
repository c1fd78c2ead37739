//! Counting signaling messages on a test nats-server: a `>` subscription (every subject, with
//! sizes) cross-checked against the server's monitoring `/varz` counters.

use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use futures::StreamExt as _;
use serde::Serialize;

/// One message seen on the server.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// Milliseconds since the counter started.
    pub at_ms: f64,
    /// Subject (prefix + Peerix namespace).
    pub subject: String,
    /// Payload size in bytes.
    pub bytes: usize,
}

/// A `>` subscriber recording every message.
pub struct Counter {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
    _client: async_nats::Client,
}

impl Counter {
    /// Connects to `url` and subscribes to `>`.
    pub async fn start(url: &str) -> Result<Counter> {
        let client = async_nats::connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let mut sub = client.subscribe(">").await.context("subscribing to >")?;
        client.flush().await.context("flushing the subscription")?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let t0 = Instant::now();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let s = Seen {
                    at_ms: t0.elapsed().as_secs_f64() * 1e3,
                    subject: msg.subject.to_string(),
                    bytes: msg.payload.len(),
                };
                if let Ok(mut v) = sink.lock() {
                    v.push(s);
                }
            }
        });
        Ok(Counter {
            seen,
            task,
            _client: client,
        })
    }

    /// Number of messages seen so far.
    pub fn count(&self) -> usize {
        self.seen.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Messages seen from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Seen> {
        self.seen
            .lock()
            .map(|v| v.get(from..).map(<[Seen]>::to_vec).unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `in_msgs` of the server's `/varz` (messages published by clients), via plain HTTP/1.0.
pub fn varz_in_msgs(monitor_port: u16) -> Result<u64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", monitor_port))
        .with_context(|| format!("connecting to the monitor port {monitor_port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let json = body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow!("no HTTP body from /varz"))?;
    let v: serde_json::Value = serde_json::from_str(json).context("parsing /varz")?;
    v.get("in_msgs")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| anyhow!("no in_msgs in /varz"))
}
