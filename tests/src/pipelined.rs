//! Pipelined text messages for the path-change tests: issued without waiting for replies (so
//! they are in flight while a path dies), then checked to arrive once each, in issue order,
//! every one reported delivered.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use peerix_client::proto::{Op, Payload, SendArgs, SendStart};
use peerix_client::{PendingReply, SendResult};

use crate::{field, is, Member};

/// Issues `n` texts `"{tag} {k}"` from `from` to peer `to` on `label`.
pub async fn issue_texts(
    from: &Member,
    label: &str,
    to: &str,
    tag: &str,
    n: usize,
) -> Result<Vec<PendingReply>> {
    let mut replies = Vec::with_capacity(n);
    for k in 0..n {
        let op = Op::Send(SendArgs::Start(SendStart {
            room: from.room.clone(),
            label: label.into(),
            to: Some(to.into()),
            payload: Payload::Text(format!("{tag} {k}")),
            info: None,
            more: false,
            progress: false,
        }));
        replies.push(from.client.issue(&op).await?);
    }
    Ok(replies)
}

/// Waits for `"{tag} 0"` … `"{tag} {n-1}"` from peer `from` at `at`, in that order, each once.
pub async fn expect_texts(
    at: &mut Member,
    label: &str,
    from: &str,
    tag: &str,
    n: usize,
    timeout: Duration,
) -> Result<()> {
    for k in 0..n {
        let ev = at
            .wait_for(&format!("{tag} {k}"), timeout, |e| {
                is(e, "channel:message", from) && field(e, "label") == Some(label)
            })
            .await?;
        let want = format!("{tag} {k}");
        ensure!(
            field(&ev, "data") == Some(want.as_str()),
            "expected {want:?} next, got {:?}",
            field(&ev, "data")
        );
    }
    Ok(())
}

/// Every reply reports the message delivered to `to`.
pub async fn all_delivered(replies: Vec<PendingReply>, to: &str) -> Result<()> {
    for (k, pending) in replies.into_iter().enumerate() {
        let r: SendResult = pending.typed().await.with_context(|| format!("send {k}"))?;
        let peers = r.peers.unwrap_or_default();
        ensure!(
            peers.len() == 1 && peers[0].id == to && peers[0].ok,
            "send {k} was not reported delivered: {peers:?}"
        );
    }
    Ok(())
}

/// `m`'s connection to `other` never failed or closed (events so far, then 200 ms more).
pub async fn never_failed(m: &mut Member, other: &str) -> Result<()> {
    let seen = m.drain_for(Duration::from_millis(200)).await;
    let gone = seen.iter().find(|e| {
        field(e, "peer") == Some(other)
            && matches!(e.name.as_str(), "connection:failed" | "connection:closed")
    });
    ensure!(gone.is_none(), "the connection did not survive: {gone:?}");
    Ok(())
}
