//! Sans-IO message types and codec of the `peerixd` local IPC protocol.
//!
//! The protocol is documented normatively in `PROTOCOL.md` next to this
//! crate's `Cargo.toml`. In short: a byte stream carries frames made of a
//! 4-byte big-endian payload length followed by exactly one MessagePack value
//! (a map with string keys, tagged by its `"type"` key).
//!
//! This crate performs no I/O. Use [`encode_frame`] to produce frames,
//! [`FrameDecoder`] to split an incoming byte stream into frame payloads and
//! [`decode_client`] / [`decode_daemon`] to turn payloads into messages.
//! Request arguments are parsed with [`Op::parse`], event data with
//! [`Event::typed`], and subscriptions are matched with [`EventFilter`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod access;
mod checks;
mod codec;
mod delivery;
mod error;
mod events;
mod media;
mod message;
mod ops;

pub use access::Access;
pub use checks::json_compatible;
pub use codec::{
    coalesce_frames, decode_client, decode_daemon, decode_reply_as, encode_body_into, encode_frame,
    encode_frame_limited, encode_frame_sized, from_value, reply_id, to_value, FrameDecoder,
    COALESCE_BYTES, COALESCE_FRAME, FRAME_HEADER_LEN,
};
pub use delivery::{
    InboxArgs, InboxEvent, InboxResult, LaggedData, SubscribeResult, DEFAULT_INBOX_MAX,
};
pub use error::{ErrorBody, ErrorCode, FrameError, ProtoError};
pub use events::RoomLeftData;
pub use events::{
    event_names, ChannelErrorData, ChannelEventData, ChannelMessageData, ConnectionEventData,
    DriverEventData, ErrorEventData, EventData, EventFilter, EventPattern, MessageType,
    VerifyEventData,
};
pub use media::{
    EncodingParameters, ForwardArgs, ForwardResult, FrameArgs, RemoteTrack, ShareArgs, ShareResult,
    ShareStatus, ShareTrack, ShareTrackStatus, SharedTrack, UnshareArgs, MAX_FRAME_BYTES,
    MAX_SHARE_TRACKS, SHARE_CODECS,
};
pub use message::{ClientMessage, DaemonMessage, Event, Hello, Progress, Reply, Request, Welcome};
pub use ops::LeaveResult;
pub use ops::{
    op_names, BatchFailure, BatchPeerReport, BatchResult, CloseArgs, DeliveryReport, DriverInfo,
    IceServer, IceTransportPolicy, JoinArgs, JoinOptions, JoinResult, LeaveArgs, Op, OpenArgs,
    OptionFlag, Payload, PayloadType, PeerInfo, PeerStats, PeersArgs, PeersResult, RoomInfo,
    SendArgs, SendBatch, SendChunk, SendChunkRequest, SendResult, SendStart, SendStartRequest,
    StatusResult, SubscribeArgs, VerifierArgs, VerifyArgs, VerifyFallback, VerifyMode,
    VerifyOptions, DEFAULT_LABEL, MAX_BATCH,
};

/// Re-export of the `rmpv` crate whose [`rmpv::Value`] is used for free-form data.
pub use rmpv;

/// The protocol version implemented by this crate (sent in `hello` / `welcome`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The capabilities the daemon announces in `welcome.capabilities`, each defined in
/// PROTOCOL.md §4.
pub const CAPABILITIES: [&str; 7] = [
    "events",
    "progress",
    "streamed-send",
    "holds",
    "resume",
    "inbox",
    "batch",
];

/// Default maximum frame payload length in bytes (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
