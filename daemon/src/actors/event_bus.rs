//! `EventBus`: numbers every lifecycle event and fans it out to the subscribed client sessions,
//! keeps the recent ones for replay (resume after reconnect, slow clients catching up) and the
//! messages nobody subscribed to in their room's inbox. The decisions are `bus_core`'s.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use peerix_ipc_proto::EventFilter;
use rmpv::Value;

use super::bus_core::{BusCore, CatchUp};
pub use super::bus_core::{BusLimits, Lagged, SinceError};
pub use super::event_body::{Body, MessagePart};

/// One event as produced inside the daemon, before it is numbered.
///
/// Name and room are not owned strings of their own: a receiving daemon makes one record per
/// message part and frees it when the replay buffer lets it go, thousands of events later and
/// out of cache, so each allocation a record holds costs a cache miss then (BENCHMARKS.md,
/// session 20).
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Peerix event name, e.g. `connection:connected`.
    pub name: Cow<'static, str>,
    /// Room the event belongs to, if any.
    pub room: Option<Arc<str>>,
    /// Event payload (a map).
    pub data: Body,
}

impl EventRecord {
    /// Builds an event from `(key, value)` pairs.
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        room: Option<&str>,
        fields: Vec<(&str, Value)>,
    ) -> Self {
        Self {
            name: name.into(),
            room: room.map(Arc::from),
            data: Body::Map(obj(fields)),
        }
    }

    /// A `channel:message` part, kept typed ([`Body::Part`]), in `room` (shared by the
    /// channel's every part).
    pub fn part(room: &Arc<str>, part: MessagePart) -> Self {
        Self {
            name: Cow::Borrowed("channel:message"),
            room: Some(room.clone()),
            data: Body::Part(part),
        }
    }
}

/// Builds a MessagePack map with string keys.
pub fn obj(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// Publish an event.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Emit(pub EventRecord);

/// A numbered event delivered to a session.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Deliver {
    /// Per-daemon sequence number.
    pub seq: u64,
    /// The event.
    pub event: Arc<EventRecord>,
    /// For this session only (`verify`, `daemon:shutdown`): not kept for replay, so the
    /// session takes it even while it is paused for falling behind.
    pub direct: bool,
}

/// What a session gets to catch up (after `subscribe` with `since`, or when it drained its
/// queue after falling `ipc.lag_limit` behind): `lagged` first if anything is gone, then the
/// events in order. Sent through the session's mailbox like `Deliver`, so that live events
/// follow it without gap or duplicate.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Replay {
    /// What will never come, if anything.
    pub lagged: Option<Lagged>,
    /// The events, in `seq` order.
    pub events: Vec<Deliver>,
    /// The `subscribe` request this answers, and its result (or why it was refused).
    pub reply: Option<(u64, Result<(), SinceError>)>,
    /// Not a catch-up but the notice that the bus stopped sending live events (the client fell
    /// `ipc.lag_limit` behind): until the next catch-up, events for the session alone
    /// (`verify`) wait, so that they still go out in `seq` order.
    pub paused: bool,
}

/// Add to a session's subscription (an empty filter list unsubscribes).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// Session id.
    pub session: u64,
    /// Where to deliver.
    pub to: Recipient<Deliver>,
    /// Where catch-ups go (the same session).
    pub replay: Recipient<Replay>,
    /// Event patterns and room restriction, added to the session's earlier ones (subscriptions
    /// are additive); `None` removes them all.
    pub filter: Option<EventFilter>,
    /// `subscribe` with `since`: the request id, the client's last seq and whether its epoch
    /// is this run's. The answer comes as a [`Replay`].
    pub since: Option<(u64, u64, bool)>,
    /// The session's queue, whose length decides when it is paused (`ipc.lag_limit`).
    pub gauge: Option<Gauge>,
}

/// Number an event without publishing it: for a frame that goes to every session whatever it
/// subscribed to (`daemon:shutdown`), still within the daemon's one sequence.
#[derive(Message)]
#[rtype(result = "Deliver")]
pub struct Number(pub EventRecord);

/// Number an event and deliver it to one session only, whatever it subscribed to (a `verify`
/// request for the room's verifier). Delivered from here, after the events numbered before it,
/// so that the session still sees its events in `seq` order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EmitTo(pub Recipient<Deliver>, pub EventRecord);

impl Handler<EmitTo> for EventBus {
    type Result = ();
    fn handle(&mut self, EmitTo(to, ev): EmitTo, _: &mut Self::Context) {
        let seq = self.core.number();
        tracing::debug!(seq, name = %ev.name, room = ?ev.room, "event to one session");
        to.do_send(Deliver {
            seq,
            event: Arc::new(ev),
            direct: true,
        });
    }
}

/// Forget a session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe(pub u64);

/// How far behind a session's client is: the bytes queued for it and not yet written.
pub type Gauge = Arc<crate::ipc::client_queue::ClientQueue>;

/// Take the oldest events of a room's inbox (the `inbox` op).
#[derive(Message)]
#[rtype(result = "InboxTaken")]
pub struct TakeInbox {
    /// Room name.
    pub room: String,
    /// Most events.
    pub max: usize,
    /// Most bytes (size estimate) together.
    pub max_bytes: u64,
}

/// What [`TakeInbox`] took.
#[derive(Debug, Default)]
pub struct InboxTaken {
    /// The events, oldest first.
    pub events: Vec<Deliver>,
    /// Events evicted since the last take.
    pub dropped: u64,
    /// Whether more are kept.
    pub more: bool,
}

/// Events kept in each room's inbox (for `status`).
#[derive(Message)]
#[rtype(result = "Vec<(String, u64)>")]
pub struct InboxCounts;

struct Subscriber {
    to: Recipient<Deliver>,
    replay: Recipient<Replay>,
    /// `None`: never falls behind (an in-process subscriber).
    gauge: Option<Gauge>,
    /// A wait for its queue to drain is running.
    waiting: bool,
}

impl Subscriber {
    fn behind(&self, lag_limit: u64) -> bool {
        self.gauge.as_ref().is_some_and(|g| g.queued() >= lag_limit)
    }

    /// Bytes of catch-up it can take now (the core sends at least one event).
    fn room_left(&self, lag_limit: u64) -> u64 {
        self.gauge
            .as_ref()
            .map_or(u64::MAX, |g| lag_limit.saturating_sub(g.queued()))
    }
}

/// The event bus actor.
pub struct EventBus {
    core: BusCore,
    subscribers: HashMap<u64, Subscriber>,
    lag_limit: u64,
}

impl EventBus {
    /// A bus with these bounds.
    pub fn new(limits: BusLimits, lag_limit: u64) -> Self {
        Self {
            core: BusCore::new(limits),
            subscribers: HashMap::new(),
            lag_limit,
        }
    }

    /// Sends a catch-up; when more is due, waits for the session's queue to drain again.
    fn send_catch_up(
        &mut self,
        session: u64,
        c: CatchUp,
        reply: Option<(u64, Result<(), SinceError>)>,
        ctx: &mut Context<Self>,
    ) {
        let more = c.more;
        if let Some(sub) = self.subscribers.get(&session) {
            sub.replay.do_send(replay(c, reply));
        }
        if more {
            self.paused(session, ctx);
        }
    }

    /// The core paused `session`: tell it (events for it alone now wait for the catch-up) and
    /// wake up when its queue has drained to half the lag limit.
    fn paused(&mut self, session: u64, ctx: &mut Context<Self>) {
        let low = self.lag_limit / 2;
        let Some(sub) = self.subscribers.get_mut(&session) else {
            return;
        };
        sub.replay.do_send(Replay {
            lagged: None,
            events: Vec::new(),
            reply: None,
            paused: true,
        });
        if sub.waiting {
            return;
        }
        let Some(gauge) = sub.gauge.clone() else {
            return;
        };
        sub.waiting = true;
        ctx.spawn(
            async move { gauge.drained_to(low).await }
                .into_actor(self)
                .map(move |_, _, ctx| ctx.notify(Drained(session))),
        );
    }
}

fn replay(c: CatchUp, reply: Option<(u64, Result<(), SinceError>)>) -> Replay {
    Replay {
        lagged: c.lagged,
        events: c.events.into_iter().map(undirected).collect(),
        reply,
        paused: false,
    }
}

fn undirected(n: super::bus_core::Numbered) -> Deliver {
    Deliver {
        seq: n.seq,
        event: n.event,
        direct: false,
    }
}

impl Actor for EventBus {
    type Context = Context<Self>;
}

impl Handler<Emit> for EventBus {
    type Result = ();
    fn handle(&mut self, Emit(ev): Emit, ctx: &mut Self::Context) {
        self.publish(ev, ctx);
    }
}

impl EventBus {
    /// Numbers `ev`, keeps it for replay (or in its room's inbox) and delivers it to the
    /// matching subscribers that keep up. Returns its seq, the sessions it went to (or that
    /// were paused on it, and will get it when they catch up) and the event.
    fn publish(
        &mut self,
        ev: EventRecord,
        ctx: &mut Context<Self>,
    ) -> (u64, Vec<u64>, Arc<EventRecord>) {
        let room_left = ev.name == "room:left";
        let size = size_estimate(&ev);
        let ev = Arc::new(ev);
        let out = self.core.emit(ev.clone(), size);
        tracing::debug!(seq = out.seq, name = %ev.name, room = ?ev.room, kept = out.kept, "event");
        // `out.to` keeps the sessions it reached (those still subscribed) in its first `n`.
        let mut reached = out.to;
        let mut n = 0;
        for i in 0..reached.len() {
            let id = reached[i];
            let Some(sub) = self.subscribers.get(&id) else {
                continue;
            };
            reached[n] = id;
            n += 1;
            // A client that does not read must not make the daemon hold its events twice
            // (they are in the replay buffer) nor slow anyone: skip it until it drained.
            if sub.behind(self.lag_limit) {
                tracing::debug!(
                    session = id,
                    at = out.seq,
                    "subscriber fell ipc.lag_limit behind; pausing its events"
                );
                self.core.pause(id, out.seq);
                self.paused(id, ctx);
                continue;
            }
            sub.to.do_send(Deliver {
                seq: out.seq,
                event: ev.clone(),
                direct: false,
            });
        }
        reached.truncate(n);
        if room_left {
            if let Some(room) = &ev.room {
                self.core.drop_inbox(room);
            }
        }
        (out.seq, reached, ev)
    }
}

impl Handler<Subscribe> for EventBus {
    type Result = ();
    fn handle(&mut self, m: Subscribe, ctx: &mut Self::Context) {
        let Some(filter) = m.filter else {
            self.subscribers.remove(&m.session);
            self.core.unsubscribe(m.session);
            return;
        };
        self.subscribers
            .entry(m.session)
            .or_insert_with(|| Subscriber {
                to: m.to,
                replay: m.replay.clone(),
                gauge: m.gauge,
                waiting: false,
            });
        match m.since {
            None => self.core.subscribe(m.session, filter),
            Some((request, since, epoch_matches)) => {
                let room = self.subscribers[&m.session].room_left(self.lag_limit);
                match self
                    .core
                    .subscribe_since(m.session, filter, since, epoch_matches, room)
                {
                    Ok(c) => self.send_catch_up(m.session, c, Some((request, Ok(()))), ctx),
                    Err(e) => m
                        .replay
                        .do_send(replay(CatchUp::default(), Some((request, Err(e))))),
                }
            }
        }
    }
}

impl Handler<Number> for EventBus {
    type Result = MessageResult<Number>;
    fn handle(&mut self, Number(ev): Number, _: &mut Self::Context) -> Self::Result {
        MessageResult(Deliver {
            seq: self.core.number(),
            event: Arc::new(ev),
            direct: true,
        })
    }
}

impl Handler<Unsubscribe> for EventBus {
    type Result = ();
    fn handle(&mut self, m: Unsubscribe, _: &mut Self::Context) {
        self.subscribers.remove(&m.0);
        self.core.unsubscribe(m.0);
    }
}

/// A paused session's queue drained to half the lag limit: it catches up.
#[derive(Message)]
#[rtype(result = "()")]
struct Drained(u64);

impl Handler<Drained> for EventBus {
    type Result = ();
    fn handle(&mut self, Drained(session): Drained, ctx: &mut Self::Context) {
        let Some(sub) = self.subscribers.get_mut(&session) else {
            return;
        };
        sub.waiting = false;
        let room = sub.room_left(self.lag_limit);
        // Not paused any more (a `subscribe` with `since` caught it up meanwhile): nothing to do.
        let Some(c) = self.core.resume(session, room) else {
            return;
        };
        tracing::debug!(session, replayed = c.events.len(), lagged = ?c.lagged, more = c.more, "subscriber catching up");
        self.send_catch_up(session, c, None, ctx);
    }
}

impl Handler<TakeInbox> for EventBus {
    type Result = MessageResult<TakeInbox>;
    fn handle(&mut self, m: TakeInbox, _: &mut Self::Context) -> Self::Result {
        let (events, dropped, more) = self.core.take_inbox(&m.room, m.max, m.max_bytes);
        let events = events.into_iter().map(undirected).collect();
        MessageResult(InboxTaken {
            events,
            dropped,
            more,
        })
    }
}

impl Handler<InboxCounts> for EventBus {
    type Result = MessageResult<InboxCounts>;
    fn handle(&mut self, _: InboxCounts, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.inbox_counts())
    }
}

/// An event's encoded size, estimated from its strings and binaries (the bulk of a message)
/// plus a few bytes per other value, for the replay and inbox byte bounds.
pub fn size_estimate(ev: &EventRecord) -> u64 {
    64 + ev.name.len() as u64
        + ev.room.as_ref().map_or(0, |r| r.len() as u64)
        + ev.data.size_estimate()
}

impl BusLimits {
    /// The bounds configured under `[ipc]`.
    pub fn from_config(ipc: &crate::config::IpcConfig) -> Self {
        Self {
            replay_events: ipc.replay_events,
            replay_bytes: ipc.replay_bytes,
            inbox: super::inbox::InboxLimits {
                events: ipc.inbox_events,
                bytes: ipc.inbox_bytes,
            },
        }
    }
}

/// Number an event once and deliver it to every subscriber it matches and, whatever they
/// subscribed to, to these sessions, each at most once (`room:left`: the room's subscribers,
/// and the connections that held it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct EmitAlsoTo(pub Vec<(u64, Recipient<Deliver>)>, pub EventRecord);

impl Handler<EmitAlsoTo> for EventBus {
    type Result = ();
    fn handle(&mut self, EmitAlsoTo(to, ev): EmitAlsoTo, ctx: &mut Self::Context) {
        // One seq for everyone: subscribers get it as any event (kept for replay), the other
        // holders directly, whatever they subscribed to.
        let (seq, reached, event) = self.publish(ev, ctx);
        for (session, to) in to {
            if !reached.contains(&session) {
                to.do_send(Deliver {
                    seq,
                    event: event.clone(),
                    direct: true,
                });
            }
        }
    }
}
