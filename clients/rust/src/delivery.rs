//! Resuming after a reconnect, the `lagged` event, and the per-room inbox (PROTOCOL.md,
//! "Delivery").

use std::sync::atomic::Ordering;

use peerix_ipc_proto::{
    from_value, InboxArgs, InboxResult, LaggedData, Op, SubscribeArgs, SubscribeResult,
};
use tokio::sync::mpsc;

use crate::{Client, Event, Result};

impl Client {
    /// This daemon run (`welcome.epoch`): seqs are comparable only within one epoch.
    pub fn epoch(&self) -> u64 {
        self.welcome.epoch
    }

    /// The `seq` of the newest event this connection received (0: none yet). With
    /// [`Client::epoch`], what a new connection passes to [`Client::subscribe_since`].
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Relaxed)
    }

    /// `subscribe` with `since`: like [`Client::subscribe`], and first every kept event after
    /// `since` that matches this connection's filters, in order. When some are gone (or
    /// `epoch` is not this daemon run's) a `lagged` event (see [`lagged`]) comes first and
    /// the result says `complete: false`.
    pub async fn subscribe_since(
        &self,
        events: &[&str],
        room: Option<&str>,
        since: u64,
        epoch: Option<u64>,
    ) -> Result<(mpsc::Receiver<Event>, SubscribeResult)> {
        let args = SubscribeArgs {
            events: events.iter().map(|s| s.to_string()).collect(),
            room: room.map(Into::into),
            since: Some(since),
            epoch,
        };
        let (rx, v) = self.subscribe_with(args).await?;
        Ok((rx, from_value(v)?))
    }

    /// `inbox`: takes up to `max` (default 256) of the oldest messages kept for `room` while
    /// no client subscribed to them.
    pub async fn inbox(&self, room: &str, max: Option<u64>) -> Result<InboxResult> {
        let v = self
            .request(&Op::Inbox(InboxArgs {
                room: room.into(),
                max,
            }))
            .await?;
        Ok(from_value(v)?)
    }
}

/// The data of a `lagged` event (the seq range this client will never get), or `None` for
/// any other event.
pub fn lagged(ev: &Event) -> Option<LaggedData> {
    (ev.name == peerix_ipc_proto::event_names::LAGGED)
        .then(|| ev.data_as().ok())
        .flatten()
}
