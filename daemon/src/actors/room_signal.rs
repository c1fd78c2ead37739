//! Signaling packets arriving at a `RoomActor`: opened with the room's codec (a new sender's
//! key costs an ECDH on this thread, so new senders are taken up at
//! `limits.new_senders_per_second`) and handed to the room's machine.

use std::time::Instant;

use actix::prelude::*;
use peerix_wire::packet::Opened;

use super::driver::Incoming;
use super::room::RoomActor;

impl Handler<Incoming> for RoomActor {
    type Result = ();
    fn handle(&mut self, m: Incoming, ctx: &mut Self::Context) {
        if self.leaving {
            return;
        }
        if self
            .codec
            .new_sender(&m.payload)
            .is_some_and(|id| self.machine.peer(&id).is_none())
            && (!self.deferred.is_empty() || !self.new_senders.try_take(Instant::now()))
        {
            self.new_senders.refuse();
            return self.defer(m, ctx);
        }
        self.open_signal(m, ctx);
    }
}

impl RoomActor {
    /// Puts off a packet from a new sender over `limits.new_senders_per_second`: at most
    /// `limits.new_senders_burst` wait, the oldest goes first (as with the admission cap, a
    /// real peer caught in a flood of forged ids is among the newest once the flood ends).
    fn defer(&mut self, m: Incoming, ctx: &mut Context<Self>) {
        let cap = (self.s.limits.new_senders_burst as usize).max(1);
        if self.deferred.len() >= cap {
            self.deferred.pop_front();
            self.deferred_dropped += 1;
        }
        self.deferred.push_back(m);
        let now = Instant::now();
        if let Some(total) = self.new_senders.report_due(now) {
            tracing::warn!(room = %self.s.room, put_off = total, dropped = self.deferred_dropped, "new signaling senders rate-limited");
            self.emit_error(
                "LIMIT_EXCEEDED",
                &format!(
                    "signaling from new sender ids is over limits.new_senders_per_second: {total} \
                     packets put off and {} dropped so far (a flood of forged ids?)",
                    self.deferred_dropped
                ),
                None,
            );
        }
        self.schedule_deferred(ctx);
    }

    fn schedule_deferred(&mut self, ctx: &mut Context<Self>) {
        if self.deferred_timer.is_some() || self.deferred.is_empty() {
            return;
        }
        let wait = self.new_senders.next_token_in(Instant::now());
        self.deferred_timer = Some(ctx.run_later(wait, |act, ctx| {
            act.deferred_timer = None;
            while !act.leaving
                && !act.deferred.is_empty()
                && act.new_senders.try_take(Instant::now())
            {
                if let Some(m) = act.deferred.pop_front() {
                    act.open_signal(m, ctx);
                }
            }
            act.schedule_deferred(ctx);
        }));
    }

    /// Opens a packet (its key derived if need be) and hands it to the machine.
    fn open_signal(&mut self, m: Incoming, ctx: &mut Context<Self>) {
        match self.codec.open(&m.payload) {
            Ok(Opened::Signal(sig)) => {
                let on_room = m.namespace == self.room_ns;
                tracing::debug!(room = %self.s.room, from = %sig.sender_id, kind = ?sig.signal_type, "signal in");
                self.machine.handle_signal(
                    Instant::now(),
                    on_room,
                    &sig.sender_id,
                    sig.signal_type,
                    sig.message,
                );
                self.drive(ctx);
            }
            Ok(_) => {}
            Err(e) => {
                let hint = mismatch_hint(&e, self.s.options.signaling_encryption);
                self.emit_error(e.code(), &format!("{e}{hint}"), None)
            }
        }
    }
}

/// Names the room option that most likely differs between the peers (spec §2.4), so that a
/// mismatch reads as a configuration problem rather than line noise.
fn mismatch_hint(e: &peerix_wire::packet::SignalingError, encryption: bool) -> &'static str {
    use peerix_wire::packet::SignalingError as E;
    match e {
        E::NotEncrypted => " (the sender has signalingEncryption off; it must match room-wide)",
        E::KeyImport(_) => " (the sender's id is not a P-256 key: it has signalingEncryption off; it must match room-wide)",
        E::Json(_) | E::InvalidMessage(_) if !encryption => {
            " (the sender may have signalingEncryption on; it must match room-wide)"
        }
        E::Decrypt(_) => " (wrong key or tampered packet)",
        _ => "",
    }
}
