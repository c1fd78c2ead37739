//! Peerix's protocol state as sans-IO machines: decisions only, no sockets, clocks, tasks or
//! WebRTC. The owner feeds them what happened, with the current time, and carries out what
//! they return (quinn-proto's and str0m's shape).
//!
//! - [`Room`]: one joined room and its connections: announce, invoke, offer admission under a
//!   cap with a refusal queue, recovery by re-invoke with injected jitter (three attempts),
//!   invites that expect an offer, new incarnations of a known id. Per connection (the peer
//!   machine in `conn.rs`): who offers, politeness by string order, perfect negotiation
//!   ([`Negotiation`]), queued candidates and ufrag gating, the connection timer, Peerix's state
//!   transitions, control-channel dispatch and channel requests.
//! - Who may connect at all (Peerix's `verify`, `verify.rs`): everyone, an allow-list, or a
//!   verifier asked with [`Action::Verify`] that answers with [`Room::verdict`], with a
//!   deadline and a fallback ([`Admission`]).
//! - Inputs: [`Room::handle_signal`] (a decoded packet), [`Room::handle_conn_event`] (what the
//!   WebRTC stack reported, [`ConnEvent`]), commands ([`Room::open`], [`Room::close`],
//!   [`Room::leave`], [`Room::announce`], [`Room::set_admission`], [`Room::set_verifier`],
//!   [`Room::verdict`]) and [`Room::handle_timeout`].
//! - Outputs: [`Room::poll_action`] ([`Action`]: publish, connect, run an [`Op`], send on the
//!   control channel, create/close a channel, close, emit an [`Event`]) and
//!   [`Room::poll_timeout`].
//! - [`Delivery`]: per data channel, which parts of received messages go to clients and when,
//!   and which partly delivered transfers must be reported failed.
//! - [`AckWatch`]: per data channel, the wait for the receiver's acks of outgoing messages:
//!   which are given up, and when to look again.
//!
//! `tests/` drives several rooms on a simulated clock over a lossy simulated bus; reading
//! `tests/scenarios.rs` is the shortest way to learn how Peerix negotiation works.

mod ack_watch;
mod admission;
#[cfg(test)]
mod bounds_tests;
mod conn;
mod delivery;
#[cfg(test)]
mod early_failure_tests;
mod limits;
mod local_media;
mod media;
mod negotiation;
mod rate;
mod resend;
#[cfg(test)]
mod resend_tests;
mod restart;
#[cfg(test)]
mod restart_tests;
mod rng;
mod room;
#[cfg(test)]
mod sim_room;
mod types;
mod verify;
// TURN server failures for ICE_SERVER_ERROR (issue 15 part 3).
mod turn_watch;

pub use ack_watch::{no_progress, AckWatch, GivenUp, ACK_CHECK, ACK_TIMEOUT, BUFFER_WAIT};
pub use admission::MAX_INVITES;
pub use delivery::{Delivered, Delivery, Kind, Part};
pub use limits::{Admit, ChannelCap, ReportLimiter};
pub use local_media::{LocalTrack, MediaOp, Share};
pub use media::{
    forward_sdp, track_format, MediaEvent, RemoteMedia, RtpFormat, TrackInfo, MAX_MEDIA_ENTRIES,
};
pub use negotiation::{Negotiation, RemoteAction, MAX_QUEUED_SIGNALING_CANDIDATES};
/// Re-exported wire types that appear in this crate's API.
pub use peerix_wire::{
    control::ChannelOptions,
    packet::{ufrag_of_sdp, IceCandidateInit, SessionDescription, SignalType},
};
pub use rate::NewSenderLimit;
pub use resend::{MAX_OFFER_RESENDS, OFFER_RESEND};
pub use restart::RestartPolicy;
pub use room::{NoSuchPeer, Room, RoomConfig, MAX_RECOVERY_ATTEMPTS, PEERIXD_DISCONNECT_GRACE};
pub use turn_watch::{TurnAction, TurnNews, TurnWatch};
pub use types::{Action, ConnEvent, ConnId, Event, IceState, Op, PeerState, Target};
pub use verify::{Admission, Fallback, VerdictError, VerifierPolicy};
