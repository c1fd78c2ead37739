//! A room's verifier: the client that answers Peerix's `verify(id, metadata)` for a room joined
//! with `verify.mode = "verifier"`. The decisions (what waits, the deadline, the fallback) are
//! the room machine's (`peerix_proto::Room::set_verifier`, `verdict`); this file carries them:
//! the `Daemon` keeps who is registered (in the room's `Membership`, so a re-joined room keeps
//! its verifier), the `RoomActor` hands the machine's requests to that session as `verify`
//! events and its answers back to the machine, and the `IpcListener` reports sessions that end.

use std::time::Instant;

use actix::prelude::*;
use peerix_ipc_proto::{VerifierArgs, VerifyArgs, VerifyMode};
use peerix_proto::VerdictError;
use rmpv::Value;
use serde_json::Value as Json;

use super::daemon::Daemon;
use super::event_bus::{obj, Deliver, EmitTo, EventRecord};
use super::json_to_msgpack;
use super::room::RoomActor;
use crate::error::DaemonError;

/// The session registered as a room's verifier.
#[derive(Clone)]
pub struct VerifierClient {
    /// Session number.
    pub session: u64,
    /// Where its `verify` events go.
    pub to: Recipient<Deliver>,
}

/// The room's verifier registered (`Some`) or went away (`None`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetVerifier(pub Option<Recipient<Deliver>>);

/// The verifier's answer to one request.
#[derive(Message)]
#[rtype(result = "Result<(), VerdictError>")]
pub struct RoomVerdict {
    /// The `verify` event's `request`.
    pub request: u64,
    /// Whether the peer may connect.
    pub accept: bool,
}

/// A client session ended (sent by the `IpcListener`): rooms it verified fall back, and its
/// holds are released (`holds.rs`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionGone(pub u64);

impl Daemon {
    /// `verifier`: registers `session` as the verifier of `a.room`, or releases it.
    pub(super) fn register_verifier(
        &mut self,
        a: VerifierArgs,
        session: u64,
        to: Recipient<Deliver>,
    ) -> Result<Value, DaemonError> {
        let room = a.room;
        let m = self
            .memberships
            .get_mut(&room)
            .ok_or_else(|| DaemonError::NotJoined(room.clone()))?;
        if m.options.verify.mode != VerifyMode::Verifier {
            return Err(DaemonError::BadRequest(format!(
                "verifier: room {room:?} does not delegate admission (join it with options \
                 verify.mode = \"verifier\", or set room_defaults.verify / rooms[].verify)"
            )));
        }
        let verifier = match (&m.verifier, a.release) {
            (Some(v), false) if v.session != session => {
                return Err(DaemonError::VerifierTaken(room))
            }
            (Some(_), false) => return Ok(obj(vec![])),
            (None, false) => {
                m.verifier = Some(VerifierClient {
                    session,
                    to: to.clone(),
                });
                Some(to)
            }
            (Some(v), true) if v.session == session => {
                m.verifier = None;
                None
            }
            (_, true) => return Err(DaemonError::NotVerifier(room)),
        };
        tracing::info!(room = %room, session, registered = verifier.is_some(), "room verifier");
        if let Some(r) = self.rooms.get(&room).filter(|r| r.connected()) {
            r.do_send(SetVerifier(verifier));
        }
        Ok(obj(vec![]))
    }

    /// `verify`: the verifier's answer, passed to its room's machine.
    pub(super) fn verdict(
        &mut self,
        a: VerifyArgs,
        session: u64,
    ) -> ResponseActFuture<Self, Result<Value, DaemonError>> {
        let room = a.room.clone();
        let checked = match self.memberships.get(&room) {
            None => Err(DaemonError::NotJoined(room.clone())),
            Some(m) if m.verifier.as_ref().map(|v| v.session) != Some(session) => {
                Err(DaemonError::NotVerifier(room.clone()))
            }
            Some(_) => self
                .rooms
                .get(&room)
                .filter(|r| r.connected())
                .cloned()
                .ok_or_else(|| {
                    // Crashed and not re-joined yet: its open requests went with it.
                    DaemonError::Timeout(format!(
                        "verify: room {room:?} is being re-joined; request {} is gone",
                        a.request
                    ))
                }),
        };
        Box::pin(
            async move {
                let r = checked?;
                r.send(RoomVerdict {
                    request: a.request,
                    accept: a.accept,
                })
                .await?
                .map_err(|e| match e {
                    VerdictError::Settled(_) => DaemonError::Timeout(format!("verify: {e}")),
                    VerdictError::Unknown(_) => DaemonError::BadRequest(format!("verify: {e}")),
                })?;
                Ok(obj(vec![]))
            }
            .into_actor(self),
        )
    }
}

impl Daemon {
    /// A session ended (see `SessionGone`, handled in `holds.rs`): rooms it verified fall back.
    pub(super) fn verifier_gone(&mut self, session: u64) {
        for (room, m) in &mut self.memberships {
            if m.verifier.as_ref().is_some_and(|v| v.session == session) {
                m.verifier = None;
                tracing::info!(room = %room, session, "room verifier disconnected; its open requests get the fallback");
                if let Some(r) = self.rooms.get(room).filter(|r| r.connected()) {
                    r.do_send(SetVerifier(None));
                }
            }
        }
    }
}

impl RoomActor {
    /// Hands one of the machine's requests to the verifier as a `verify` event.
    pub(super) fn ask_verifier(&self, request: u64, peer: &str, metadata: &Json) {
        let Some(to) = &self.s.verifier else {
            // The machine asks only while it knows of a verifier; one that just left is
            // reported to it right after, and the request falls back then.
            tracing::debug!(room = %self.s.room, request, peer, "verify request without a verifier");
            return;
        };
        tracing::debug!(room = %self.s.room, request, peer, "asking the room's verifier");
        let ev = EventRecord::new(
            "verify",
            Some(&self.s.room),
            vec![
                ("request", Value::from(request)),
                ("peer", Value::from(peer)),
                ("id", Value::from(peer)),
                ("metadata", json_to_msgpack(metadata)),
            ],
        );
        self.s.bus.do_send(EmitTo(to.clone(), ev));
    }
}

impl Handler<SetVerifier> for RoomActor {
    type Result = ();
    fn handle(&mut self, SetVerifier(to): SetVerifier, ctx: &mut Self::Context) {
        let present = to.is_some();
        self.s.verifier = to;
        self.machine.set_verifier(Instant::now(), present);
        self.drive(ctx);
    }
}

impl Handler<RoomVerdict> for RoomActor {
    type Result = Result<(), VerdictError>;
    fn handle(&mut self, m: RoomVerdict, ctx: &mut Self::Context) -> Self::Result {
        let res = self.machine.verdict(Instant::now(), m.request, m.accept);
        tracing::debug!(room = %self.s.room, request = m.request, accept = m.accept, ok = res.is_ok(), "verdict");
        self.drive(ctx);
        res
    }
}
