//! What the WebRTC stack says about a connection, into its `PeerActor`: the connection's
//! [`EventSink`] posts each event into the actor's mailbox, and the actor turns it into a
//! `ConnEvent` for the room's machine or handles it itself (channels, tracks, TURN news).

use actix::prelude::*;
use peerix_proto::ConnEvent;
use peerix_rtc::{EventSink, IceState, RtcEvent};

use super::peer::PeerActor;

/// One event of the connection, posted by its driver thread into this actor's mailbox.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct FromRtc(RtcEvent);

/// The connection dropped its sink: no event follows.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct RtcEnded;

/// The connection's [`EventSink`]: the actor's mailbox. An own queue (a tokio unbounded
/// channel held a 32-event block, ~3.3 KB, for the connection's life) would sit beside a
/// mailbox that holds nothing when idle. `do_send`, like the channel it replaces, never
/// waits: the events of a connection are few (states, candidates, channels, tracks) and
/// frames and control messages each hold a slot of a bounded pool until handled.
pub(super) struct ToPeerActor(pub(super) Addr<PeerActor>);

impl EventSink for ToPeerActor {
    fn emit(&self, event: RtcEvent) {
        self.0.do_send(FromRtc(event));
    }
}

impl Drop for ToPeerActor {
    fn drop(&mut self) {
        self.0.do_send(RtcEnded);
    }
}

impl Handler<FromRtc> for PeerActor {
    type Result = ();
    fn handle(&mut self, FromRtc(ev): FromRtc, ctx: &mut Self::Context) {
        let event = match ev {
            RtcEvent::LocalCandidate(c) => ConnEvent::LocalCandidate(from_rtc_cand(c)),
            RtcEvent::GatheringComplete => {
                self.turn_gathering_complete(ctx);
                ConnEvent::GatheringComplete
            }
            RtcEvent::GatheringStarted => return self.turn_gathering_started(ctx),
            RtcEvent::TurnServer { url, outcome } => return self.turn_news(&url, outcome, ctx),
            RtcEvent::IceState(s) => ConnEvent::Ice(ice_state(s)),
            // Offers are made by Peerix's rules (the invoke receiver offers), not on every
            // negotiation-needed: the stack also fires it for the negotiated control channel.
            RtcEvent::NegotiationNeeded => return,
            RtcEvent::ControlOpen => ConnEvent::ControlOpen,
            RtcEvent::ControlMessage(data) => ConnEvent::ControlMessage(data.to_vec()),
            RtcEvent::ControlClosed | RtcEvent::Closed => {
                tracing::info!(room = %self.s.room, peer = %self.s.remote, "remote left (control channel closed)");
                ConnEvent::ControlClosed
            }
            RtcEvent::RemoteChannel(ch) => return self.adopt_channel(ch, true, ctx),
            RtcEvent::Track(info) => return self.remote_track(info, ctx),
            RtcEvent::TrackEnded(track) => return self.remote_track_ended(track),
            RtcEvent::TrackFrame(frame) => return self.remote_frame(frame),
            RtcEvent::ForwardRefused { track, error } => {
                return self.forward_refused(&track, &error)
            }
        };
        self.report(event);
    }
}

impl Handler<RtcEnded> for PeerActor {
    type Result = ();
    fn handle(&mut self, _: RtcEnded, _: &mut Self::Context) {
        self.report(ConnEvent::ControlClosed);
    }
}

fn from_rtc_cand(c: peerix_rtc::IceCandidateInit) -> peerix_proto::IceCandidateInit {
    peerix_proto::IceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_m_line_index: c.sdp_m_line_index,
        username_fragment: c.username_fragment,
    }
}

fn ice_state(s: IceState) -> peerix_proto::IceState {
    use peerix_proto::IceState as P;
    match s {
        IceState::New => P::New,
        IceState::Checking => P::Checking,
        IceState::Connected => P::Connected,
        IceState::Completed => P::Completed,
        IceState::Disconnected => P::Disconnected,
        IceState::Failed => P::Failed,
        IceState::Closed => P::Closed,
    }
}
