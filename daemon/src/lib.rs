//! peerixd: a long-running daemon that makes this machine a peer in Peerix WebRTC rooms.
//!
//! The supervision tree is the architecture (see ARCHITECTURE.md at the repository root):
//! [`actors::daemon::Daemon`] owns one [`actors::driver::DriverActor`] per signaling driver and one
//! [`actors::room::RoomActor`] per joined room; a room owns one [`actors::peer::PeerActor`] per
//! remote peer (exactly one RTCPeerConnection), which owns one [`actors::channel::ChannelActor`]
//! per data channel. [`ipc::listener::IpcListener`] starts one [`ipc::session::ClientSession`] per
//! local client. Protocol logic lives in sans-IO crates: `peerix-wire` (Peerix packets, framing),
//! `peerix-ipc-proto` (the local protocol); transports in `peerix-signaling` and `peerix-rtc`.

pub mod actors;
pub mod admission;
pub mod alloc;
pub mod check_config;
pub mod config;
pub mod config_limits;
pub mod config_metrics;
pub mod config_remote;
pub mod config_restart;
pub mod config_service;
pub mod config_turn;
pub mod config_turn_tls;
pub mod error;
pub mod identity_store;
pub mod ipc;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod run;
