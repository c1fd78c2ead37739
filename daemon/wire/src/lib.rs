//! Sans-IO implementation of the Peerix 0.7 wire protocol.
//!
//! This crate contains no sockets, no async runtime and no timers: every type
//! turns bytes into values and values into bytes, so it can be driven by any
//! transport (NATS, WebRTC data channels, tests).
//!
//! Module map:
//!
//! * [`base62`] – the Peerix flavour of base62 (`0-9a-zA-Z`).
//! * [`namespace`] – the namespace escaping/hashing function `E` (§2.2).
//! * [`identity`] – P-256 identities, peer IDs, ECDH shared keys, politeness.
//! * [`proto`] – the minimal protobuf-compatible codec shared by all envelopes (§4.1).
//! * [`packet`] – signaling packets (§4.2) and the payload pipeline (§4.3–§4.5).
//! * [`control`] – the control data-channel envelope (§6.2).
//! * [`frame`] – user data-channel frames (§7.3).
//! * [`transfer`] – chunking and reassembly of data-channel messages (§7.4, §7.5).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod base62;
pub mod control;
pub mod frame;
pub mod identity;
pub mod namespace;
pub mod packet;
pub mod proto;
pub mod transfer;
