//! `EventBus`: numbers every lifecycle event and fans it out to the subscribed client sessions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use peerix_ipc_proto::EventFilter;
use rmpv::Value;

/// One event as produced inside the daemon, before it is numbered.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Peerix event name, e.g. `connection:connected`.
    pub name: String,
    /// Room the event belongs to, if any.
    pub room: Option<String>,
    /// Event payload (a map).
    pub data: Value,
}

impl EventRecord {
    /// Builds an event from `(key, value)` pairs.
    pub fn new(name: impl Into<String>, room: Option<&str>, fields: Vec<(&str, Value)>) -> Self {
        Self {
            name: name.into(),
            room: room.map(str::to_owned),
            data: obj(fields),
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
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Deliver {
    /// Per-daemon sequence number.
    pub seq: u64,
    /// The event.
    pub event: Arc<EventRecord>,
}

/// Replace a session's subscription (an empty filter list unsubscribes).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// Session id.
    pub session: u64,
    /// Where to deliver.
    pub to: Recipient<Deliver>,
    /// Event patterns and room restriction, added to the session's earlier ones (subscriptions
    /// are additive); `None` removes them all.
    pub filter: Option<EventFilter>,
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
        self.seq += 1;
        tracing::debug!(seq = self.seq, name = %ev.name, room = ?ev.room, "event to one session");
        to.do_send(Deliver {
            seq: self.seq,
            event: Arc::new(ev),
        });
    }
}

/// Forget a session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe(pub u64);

struct Subscriber {
    to: Recipient<Deliver>,
    filters: Vec<EventFilter>,
}

/// The event bus actor.
#[derive(Default)]
pub struct EventBus {
    seq: u64,
    subscribers: HashMap<u64, Subscriber>,
}

impl Actor for EventBus {
    type Context = Context<Self>;
}

impl Handler<Emit> for EventBus {
    type Result = ();
    fn handle(&mut self, Emit(ev): Emit, _: &mut Self::Context) {
        self.seq += 1;
        tracing::debug!(seq = self.seq, name = %ev.name, room = ?ev.room, "event");
        let ev = Arc::new(ev);
        for sub in self.subscribers.values() {
            if sub
                .filters
                .iter()
                .any(|f| f.matches(&ev.name, ev.room.as_deref()))
            {
                sub.to.do_send(Deliver {
                    seq: self.seq,
                    event: ev.clone(),
                });
            }
        }
    }
}

impl Handler<Subscribe> for EventBus {
    type Result = ();
    fn handle(&mut self, m: Subscribe, _: &mut Self::Context) {
        match m.filter {
            None => {
                self.subscribers.remove(&m.session);
            }
            Some(filter) => {
                self.subscribers
                    .entry(m.session)
                    .or_insert_with(|| Subscriber {
                        to: m.to,
                        filters: Vec::new(),
                    })
                    .filters
                    .push(filter);
            }
        }
    }
}

impl Handler<Number> for EventBus {
    type Result = MessageResult<Number>;
    fn handle(&mut self, Number(ev): Number, _: &mut Self::Context) -> Self::Result {
        self.seq += 1;
        MessageResult(Deliver {
            seq: self.seq,
            event: Arc::new(ev),
        })
    }
}

impl Handler<Unsubscribe> for EventBus {
    type Result = ();
    fn handle(&mut self, m: Unsubscribe, _: &mut Self::Context) {
        self.subscribers.remove(&m.0);
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
        let subscribed: HashSet<u64> = self
            .subscribers
            .iter()
            .filter(|(_, s)| {
                s.filters
                    .iter()
                    .any(|f| f.matches(&ev.name, ev.room.as_deref()))
            })
            .map(|(id, _)| *id)
            .collect();
        let event = Arc::new(ev.clone());
        <Self as Handler<Emit>>::handle(self, Emit(ev), ctx);
        for (session, to) in to {
            if !subscribed.contains(&session) {
                to.do_send(Deliver {
                    seq: self.seq,
                    event: event.clone(),
                });
            }
        }
    }
}
