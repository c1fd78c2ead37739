//! Events on their way to a client that may fall behind. The bus decides (`event_bus.rs`):
//! past `ipc.lag_limit` bytes of undelivered frames it sends the session no more events
//! (replies and progress still go out) and, once the queue has drained to half the limit,
//! catches it up from its replay buffer: every event it missed in order, or first a `lagged`
//! event for what is gone. A slow client therefore never holds up the bus or the other
//! sessions, and is never left with a silent gap. Here the session only keeps events for it
//! alone (`verify`) in `seq` order with the catch-up.

use super::*;
use crate::actors::event_bus::{EventRecord, Lagged, Replay};

/// Direct events (`verify`, ...) held while paused, beyond which they go out at once.
const HELD_DIRECT: usize = 256;

impl ClientSession {
    /// An event from the bus: written, or held (for this session only, while paused).
    pub(super) fn take_event(&mut self, d: Deliver, ctx: &mut Context<Self>) {
        if self.paused && d.direct && self.held.len() < HELD_DIRECT {
            self.held.push(d);
            return;
        }
        self.write_event(&d, ctx);
    }

    /// Writes one event frame (subject only to the hard `ipc.client_queue_limit`).
    pub(super) fn write_event(&mut self, d: &Deliver, ctx: &mut Context<Self>) {
        match encode_event(d, self.cfg.ipc.max_frame) {
            Ok(bytes) => self.write_frame(bytes, ctx),
            Err(e) => tracing::error!(session = self.id, error = %e, "encoding an event failed"),
        }
    }

    fn lagged_event(l: &Lagged) -> Deliver {
        Deliver {
            seq: l.to,
            event: Arc::new(EventRecord::new(
                peerix_ipc_proto::event_names::LAGGED,
                None,
                vec![
                    ("from", Value::from(l.from)),
                    ("to", Value::from(l.to)),
                    ("count", Value::from(l.count)),
                    ("reason", Value::from(l.reason)),
                ],
            )),
            direct: true,
        }
    }
}

impl Handler<Replay> for ClientSession {
    type Result = ();
    fn handle(&mut self, r: Replay, ctx: &mut Self::Context) {
        if r.paused {
            tracing::debug!(session = self.id, client = %self.client, queued = self.out.queued(), "client fell ipc.lag_limit behind; its events pause");
            self.paused = true;
            return;
        }
        self.paused = false;
        let replayed = r.events.len() as u64;
        let complete = r.lagged.is_none();
        let mut all: Vec<Deliver> = std::mem::take(&mut self.held);
        all.extend(r.lagged.as_ref().map(Self::lagged_event));
        all.extend(r.events);
        // Held events for this session only interleave by seq; `lagged` (seq = the last
        // missing one) precedes every replayed event.
        all.sort_by_key(|d| d.seq);
        for d in &all {
            self.write_event(d, ctx);
        }
        if let Some((request, res)) = r.reply {
            if res.is_err() {
                self.subscriptions = self.subscriptions.saturating_sub(1);
            }
            let res = res
                .map(|()| {
                    obj(vec![
                        ("replayed", Value::from(replayed)),
                        ("complete", Value::Boolean(complete)),
                    ])
                })
                .map_err(|e| DaemonError::BadRequest(e.to_string()));
            self.reply(request, res, ctx);
        }
    }
}
