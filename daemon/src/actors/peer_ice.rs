//! What the operator is told about a connection's TURN servers, and what a lost relayed path
//! does. The decisions are `peerix_proto::TurnWatch`'s; this owns its timer and events.

use std::time::Instant;

use actix::prelude::*;
use peerix_proto::{ConnEvent, TurnAction, TurnNews, TurnWatch};
use peerix_rtc::TurnOutcome;
use rmpv::Value;

use super::error_value;
use super::event_bus::{Emit, EventRecord};
use super::peer::PeerActor;

impl PeerActor {
    /// The watch over this connection's `turn:`/`turns:` servers (from `iceServers` and the
    /// daemon's `[turn_rest]`).
    pub(super) fn new_turn_watch(ice_servers: &[peerix_rtc::IceServer]) -> TurnWatch {
        TurnWatch::new(
            ice_servers
                .iter()
                .flat_map(|s| s.urls.iter())
                .map(String::as_str),
        )
    }

    /// The stack started gathering (first description, or an ICE restart).
    pub(super) fn turn_gathering_started(&mut self, ctx: &mut Context<Self>) {
        self.turn.gathering_started(Instant::now());
        self.arm_turn_timer(ctx);
    }

    /// The stack reported every local candidate.
    pub(super) fn turn_gathering_complete(&mut self, ctx: &mut Context<Self>) {
        let actions = self.turn.gathering_complete();
        self.turn_actions(actions, ctx);
        self.arm_turn_timer(ctx);
    }

    /// What happened to one TURN server.
    pub(super) fn turn_news(&mut self, url: &str, outcome: TurnOutcome, ctx: &mut Context<Self>) {
        let news = match &outcome {
            TurnOutcome::Relayed => TurnNews::Relayed,
            TurnOutcome::StreamFailed(why) => TurnNews::StreamFailed(why),
            TurnOutcome::StreamLost(why) => TurnNews::StreamLost(why),
            TurnOutcome::Refused(why) => TurnNews::Refused(why),
            TurnOutcome::NoAnswer => TurnNews::NoAnswer,
        };
        let action = self.turn.news(url, news);
        self.turn_actions(action.into_iter().collect(), ctx);
    }

    /// One timer at the watch's deadline (replacing any earlier one).
    fn arm_turn_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.turn_timer.take() {
            ctx.cancel_future(h);
        }
        let Some(at) = self.turn.poll_timeout() else {
            return;
        };
        let wait = at.saturating_duration_since(Instant::now());
        self.turn_timer = Some(ctx.run_later(wait, |act, ctx| {
            act.turn_timer = None;
            let actions = act.turn.handle_timeout(Instant::now());
            act.turn_actions(actions, ctx);
            act.arm_turn_timer(ctx);
        }));
    }

    fn turn_actions(&mut self, actions: Vec<TurnAction>, ctx: &mut Context<Self>) {
        for action in actions {
            match action {
                TurnAction::Report { url, message } => self.turn_error(&url, &message),
                TurnAction::RelayLost { url, only_relay } => self.relay_lost(url, only_relay, ctx),
            }
        }
    }

    /// `ICE_SERVER_ERROR` with the server's URL (the connection goes on with its other
    /// candidates).
    fn turn_error(&self, url: &str, message: &str) {
        tracing::warn!(room = %self.s.room, peer = %self.s.remote, url, message, "TURN server error");
        self.s.bus.do_send(Emit(EventRecord::new(
            "error",
            Some(&self.s.room),
            vec![
                ("peer", Value::from(self.s.remote.as_str())),
                ("url", Value::from(url)),
                ("error", error_value("ICE_SERVER_ERROR", message)),
            ],
        )));
    }

    /// The TURN server at `url` dropped an allocation of ours with its stream. When the
    /// selected pair relays through it, the path is dead now, although ICE would say so only
    /// after its consent timeout: the machine is told the path failed, which restarts ICE at
    /// once toward a peerixd (new sockets, streams and allocations; DTLS and SCTP carry on)
    /// and fails the connection toward a browser (which Peerix replaces).
    /// `only_relay`: no other server relays for this connection, so a selected relay pair
    /// whose URL the stack did not keep goes through `url`.
    fn relay_lost(&mut self, url: String, only_relay: bool, ctx: &mut Context<Self>) {
        let Some(rtc) = self.rtc.clone() else { return };
        ctx.spawn(
            async move { rtc.selected_relay_url().await }
                .into_actor(self)
                .map(move |selected, act, _| {
                    let Some(selected) = selected else { return };
                    let through_it = if selected.is_empty() {
                        only_relay
                    } else {
                        TurnWatch::same_server(&selected, &url)
                    };
                    if !through_it {
                        return;
                    }
                    tracing::info!(
                        room = %act.s.room, peer = %act.s.remote, %url,
                        "the relayed path's allocation was lost with its TURN stream"
                    );
                    act.report(ConnEvent::Ice(peerix_proto::IceState::Failed));
                }),
        );
    }
}
