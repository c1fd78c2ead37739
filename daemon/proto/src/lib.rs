//! Peerix's protocol state as sans-IO machines: decisions only, no sockets, clocks, tasks or
//! WebRTC. The actors feed them what happened and carry out what they return.
//!
//! So far: [`Negotiation`], the per-peer rules for applying remote descriptions and candidates
//! (wire protocol §5.2, §5.6, §6.5). The room machine (announce, invoke, admission, re-invoke)
//! is still in `peerixd`'s `RoomActor`.

mod negotiation;

pub use negotiation::{Negotiation, RemoteAction, MAX_QUEUED_SIGNALING_CANDIDATES};
