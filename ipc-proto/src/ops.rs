//! Typed operations (`request.op` + `request.args`) and their results.

use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::codec::to_value;
use crate::error::{ErrorBody, ProtoError};
use crate::events::EventFilter;

/// The channel label used by `send` when none is given.
pub const DEFAULT_LABEL: &str = "default";

/// Names of all operations.
pub mod op_names {
    /// `status`: daemon and room overview.
    pub const STATUS: &str = "status";
    /// `join`: join a room.
    pub const JOIN: &str = "join";
    /// `leave`: leave a room.
    pub const LEAVE: &str = "leave";
    /// `peers`: list the peers of a room.
    pub const PEERS: &str = "peers";
    /// `open`: open a data channel.
    pub const OPEN: &str = "open";
    /// `close`: close a data channel.
    pub const CLOSE: &str = "close";
    /// `send`: send a message (possibly streamed).
    pub const SEND: &str = "send";
    /// `subscribe`: receive events.
    pub const SUBSCRIBE: &str = "subscribe";
    /// `unsubscribe`: stop receiving events.
    pub const UNSUBSCRIBE: &str = "unsubscribe";
    /// `share`: share a labelled stream of media tracks with a room.
    pub const SHARE: &str = "share";
    /// `forward`: send a remote track's RTP to a local UDP address.
    pub const FORWARD: &str = "forward";
    /// `unshare`: stop sharing a label.
    pub const UNSHARE: &str = "unshare";
    /// `frame`: one encoded frame for a shared track fed over IPC.
    pub const FRAME: &str = "frame";
    /// `debug`: fault injection for tests; refused unless the daemon enables it.
    pub const DEBUG: &str = "debug";
    /// `verifier`: become (or stop being) the verifier of a room.
    pub const VERIFIER: &str = "verifier";
    /// `verify`: a verifier's answer to a `verify` event.
    pub const VERIFY: &str = "verify";
    /// `inbox`: take the messages kept for a room while no client subscribed to them.
    pub const INBOX: &str = "inbox";
    /// Every op name.
    pub const ALL: [&str; 17] = [
        STATUS,
        JOIN,
        LEAVE,
        PEERS,
        OPEN,
        CLOSE,
        SEND,
        SUBSCRIBE,
        UNSUBSCRIBE,
        SHARE,
        UNSHARE,
        DEBUG,
        VERIFIER,
        VERIFY,
        INBOX,
        FORWARD,
        FRAME,
    ];
}

/// A parsed operation with typed arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `status` (no arguments).
    Status,
    /// `join`.
    Join(JoinArgs),
    /// `leave`.
    Leave(LeaveArgs),
    /// `peers`.
    Peers(PeersArgs),
    /// `open`.
    Open(OpenArgs),
    /// `close`.
    Close(CloseArgs),
    /// `send` (first request of a message, or a chunk of a streamed one).
    Send(SendArgs),
    /// `subscribe`.
    Subscribe(SubscribeArgs),
    /// `unsubscribe` (no arguments).
    Unsubscribe,
    /// `share`.
    Share(crate::media::ShareArgs),
    /// `unshare`.
    Unshare(crate::media::UnshareArgs),
    /// `frame`.
    Frame(crate::media::FrameArgs),
    /// `forward`.
    Forward(crate::media::ForwardArgs),
    /// `debug` (fault injection for tests; raw arguments).
    Debug(Value),
    /// `verifier`.
    Verifier(VerifierArgs),
    /// `verify`.
    Verify(VerifyArgs),
    /// `inbox`.
    Inbox(crate::delivery::InboxArgs),
}

/// A "flag or name" option value (Peerix accepts `true`/`false` or an
/// algorithm name for some options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OptionFlag {
    /// Enabled / disabled.
    Bool(bool),
    /// A named variant (e.g. an algorithm).
    Name(String),
}

/// ICE transport policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    /// Use all candidates.
    All,
    /// Only use relay (TURN) candidates.
    Relay,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// An ICE (STUN/TURN) server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// Server URLs (a single string is accepted on input).
    #[serde(deserialize_with = "one_or_many")]
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Room options of `join` (Peerix names, camelCase). Unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinOptions {
    /// Hash the room namespace before using it for signaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_hashing: Option<OptionFlag>,
    /// Compress signaling messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signaling_compression: Option<OptionFlag>,
    /// Encrypt signaling messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signaling_encryption: Option<OptionFlag>,
    /// Connection timeout in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_timeout: Option<u64>,
    /// ICE candidate debounce in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice_candidate_debounce: Option<u64>,
    /// ICE servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice_servers: Option<Vec<IceServer>>,
    /// ICE transport policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice_transport_policy: Option<IceTransportPolicy>,
    /// Who may connect (Peerix's `verify`); replaces the daemon's default as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyOptions>,
}

/// How a room admits new peers (`join` option `verify`, Peerix's `verify` callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Everyone (Peerix without `verify`).
    #[default]
    All,
    /// Only the ids in `allow`.
    Allow,
    /// Ask the client registered with the `verifier` op.
    Verifier,
}

/// The answer given in the verifier's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyFallback {
    /// Let the peer connect.
    Accept,
    /// Ignore the peer (as a rejection does).
    Reject,
}

/// The `verify` room option. Absent fields take the daemon's built-in defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyOptions {
    /// The policy.
    #[serde(default)]
    pub mode: VerifyMode,
    /// Admitted peer ids (mode `allow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Milliseconds a request may wait for the verifier's answer (mode `verifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// The answer when the verifier gives none in time or is gone (mode `verifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<VerifyFallback>,
    /// Requests open at once (mode `verifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u64>,
}

/// Arguments of `verifier`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifierArgs {
    /// Room name.
    pub room: String,
    /// Stop being the room's verifier instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub release: bool,
}

/// Arguments of `verify`: the answer to one `verify` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyArgs {
    /// Room name.
    pub room: String,
    /// The event's `request`.
    pub request: u64,
    /// Whether the peer may connect.
    pub accept: bool,
}

/// Arguments of `join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinArgs {
    /// Room name.
    pub room: String,
    /// Local peer metadata announced to the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Signaling driver name (daemon default if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Room options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<JoinOptions>,
    /// Also give the room the persistent hold, owned by no connection: the room then stays
    /// joined after this connection closes, until a `leave` releases that hold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persist: bool,
}

impl JoinArgs {
    /// Arguments joining `room` with no metadata, the default driver and default options,
    /// held by this connection only.
    pub fn new(room: impl Into<String>) -> JoinArgs {
        JoinArgs {
            room: room.into(),
            metadata: None,
            driver: None,
            options: None,
            persist: false,
        }
    }

    /// The same arguments, also asking for the persistent hold.
    pub fn persistent(mut self) -> JoinArgs {
        self.persist = true;
        self
    }
}

/// Arguments of `leave`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveArgs {
    /// Room name.
    pub room: String,
    /// Release every hold (every connection's and the persistent one), not only the caller's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

impl LeaveArgs {
    /// Releases the caller's hold on `room` (or, if it holds none, the persistent hold).
    pub fn new(room: impl Into<String>) -> LeaveArgs {
        LeaveArgs {
            room: room.into(),
            all: false,
        }
    }
}

/// Result of `leave`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveResult {
    /// Whether the room was left (no hold remained).
    #[serde(default)]
    pub left: bool,
    /// Connections still holding the room.
    #[serde(default)]
    pub holders: u64,
}

/// Arguments of `peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersArgs {
    /// Room name.
    pub room: String,
}

/// Arguments of `open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenArgs {
    /// Room name.
    pub room: String,
    /// Channel label.
    pub label: String,
    /// Ordered delivery (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered: Option<bool>,
    /// Sub-protocol name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Maximum retransmits (partial reliability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retransmits: Option<u16>,
    /// Maximum packet life time in ms (partial reliability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packet_life_time: Option<u16>,
    /// Only open towards this peer (all peers if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl OpenArgs {
    /// Arguments opening `label` in `room` towards all peers with default settings.
    pub fn new(room: impl Into<String>, label: impl Into<String>) -> OpenArgs {
        OpenArgs {
            room: room.into(),
            label: label.into(),
            ordered: None,
            protocol: None,
            max_retransmits: None,
            max_packet_life_time: None,
            to: None,
        }
    }
}

/// Arguments of `close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseArgs {
    /// Room name.
    pub room: String,
    /// Channel label.
    pub label: String,
    /// Only close towards this peer (all peers if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Arguments of `subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeArgs {
    /// Event patterns: `"*"`, a group (`"connection"`) or a name (`"channel:message"`).
    pub events: Vec<String>,
    /// Only events of this room (events without a room always pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Resume: also deliver the kept events after this seq (the last one received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// The `welcome.epoch` that `since` was seen under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl SubscribeArgs {
    /// Builds the [`EventFilter`] described by these arguments.
    pub fn filter(&self) -> Result<EventFilter, ProtoError> {
        EventFilter::parse(&self.events, self.room.clone())
    }
}

/// The `type` of a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadType {
    /// UTF-8 text (`data` is a MessagePack str).
    Text,
    /// Raw bytes (`data` is a MessagePack bin).
    Bytes,
    /// Any JSON-compatible value (`data` is any MessagePack value).
    Json,
}

impl PayloadType {
    /// The wire name (`"text"`, `"bytes"`, `"json"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadType::Text => "text",
            PayloadType::Bytes => "bytes",
            PayloadType::Json => "json",
        }
    }
}

/// The data of a `send` request (or chunk).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Text (str on the wire).
    Text(String),
    /// Bytes (bin on the wire).
    Bytes(Vec<u8>),
    /// A structured value (json type; never chunked).
    Json(Value),
}

impl Payload {
    /// The payload type.
    pub fn kind(&self) -> PayloadType {
        match self {
            Payload::Text(_) => PayloadType::Text,
            Payload::Bytes(_) => PayloadType::Bytes,
            Payload::Json(_) => PayloadType::Json,
        }
    }

    /// Length in bytes for text/bytes payloads (0 for json).
    pub fn len(&self) -> usize {
        match self {
            Payload::Text(s) => s.len(),
            Payload::Bytes(b) => b.len(),
            Payload::Json(_) => 0,
        }
    }

    /// Whether [`Payload::len`] is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wire value of `data`.
    pub fn to_value(&self) -> Value {
        self.clone().into_value()
    }

    /// Like [`Payload::to_value`], moving the data instead of copying it.
    pub fn into_value(self) -> Value {
        match self {
            Payload::Text(s) => Value::from(s),
            Payload::Bytes(b) => Value::Binary(b),
            Payload::Json(v) => v,
        }
    }
}

/// First (or only) request of a `send`.
#[derive(Debug, Clone, PartialEq)]
pub struct SendStart {
    /// Room name.
    pub room: String,
    /// Channel label (default [`DEFAULT_LABEL`]).
    pub label: String,
    /// Only send to this peer (all connected peers if absent).
    pub to: Option<String>,
    /// The data (for a streamed send: the first chunk, possibly empty).
    pub payload: Payload,
    /// Optional metadata map delivered with the message.
    pub info: Option<Value>,
    /// More chunks follow (streamed send).
    pub more: bool,
    /// Push `progress` frames for this request.
    pub progress: bool,
}

/// A follow-up chunk of a streamed `send`.
#[derive(Debug, Clone, PartialEq)]
pub struct SendChunk {
    /// The transfer id returned by the first reply.
    pub transfer: u64,
    /// The chunk ([`Payload::Text`] or [`Payload::Bytes`], same type as the start).
    pub data: Payload,
    /// More chunks follow.
    pub more: bool,
}

/// Several whole messages in one `send` request (`batch` instead of `data`): each is its own
/// Peerix message (own transfer, ack and `channel:message` at the receiver), sent in order,
/// one after the other, at the request's place in the client's order.
#[derive(Debug, Clone, PartialEq)]
pub struct SendBatch {
    /// Room name.
    pub room: String,
    /// Channel label (default [`DEFAULT_LABEL`]).
    pub label: String,
    /// Only send to this peer (all connected peers if absent).
    pub to: Option<String>,
    /// The messages, all of one type.
    pub payloads: Vec<Payload>,
    /// Optional metadata map delivered with every message.
    pub info: Option<Value>,
}

/// Most messages one `batch` may carry: a reply reports every failed one, and a batch holds
/// its label until its last message is out.
pub const MAX_BATCH: usize = 4096;

/// Arguments of `send`: a start request, a chunk of a streamed transfer (distinguished by the
/// presence of `transfer`), or a batch of whole messages (`batch`).
#[derive(Debug, Clone, PartialEq)]
pub enum SendArgs {
    /// First (or only) request.
    Start(SendStart),
    /// Follow-up chunk.
    Chunk(SendChunk),
    /// Several whole messages.
    Batch(SendBatch),
}

/// Result of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResult {
    /// Daemon software version, e.g. `"0.1.0"`.
    pub version: String,
    /// The daemon's peer id.
    pub id: String,
    /// Configured signaling drivers.
    #[serde(default)]
    pub drivers: Vec<DriverInfo>,
    /// Joined rooms.
    #[serde(default)]
    pub rooms: Vec<RoomInfo>,
    /// Seconds since the daemon started (0 from a daemon that predates the field).
    #[serde(default)]
    pub uptime: u64,
}

/// A signaling driver in [`StatusResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverInfo {
    /// Driver name (as used in `join.driver`).
    pub name: String,
    /// Driver kind, e.g. `"nats"`.
    pub kind: String,
    /// Whether the driver is connected.
    pub active: bool,
    /// `"idle"` (not started: no room uses it yet), `"active"` or `"inactive"` (started, not
    /// connected, or being restarted).
    #[serde(default)]
    pub state: String,
}

/// A joined room in [`StatusResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// Room name.
    pub room: String,
    /// This daemon's peer id in the room (what the room's other peers see).
    #[serde(default)]
    pub id: String,
    /// Connections holding the room.
    #[serde(default)]
    pub holders: u64,
    /// Whether the room has the persistent hold (config file, or `join` with `persist`).
    #[serde(default)]
    pub persist: bool,
    /// Driver used by the room.
    pub driver: String,
    /// Number of known peers.
    pub peers: u64,
    /// Open channel labels.
    #[serde(default)]
    pub channels: Vec<String>,
    /// What this daemon shares in the room (`share`), with each track's counters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<crate::media::ShareStatus>,
    /// The URLs of the STUN and TURN servers the room's new connections use (credentials are
    /// never listed).
    #[serde(default, rename = "iceServers")]
    pub ice_servers: Vec<String>,
    /// `all`, or `relay` (TURN only).
    #[serde(default, rename = "iceTransportPolicy")]
    pub ice_transport_policy: String,
}

/// Result of `join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinResult {
    /// Room name.
    pub room: String,
    /// Local peer id in the room.
    pub id: String,
    /// Local metadata.
    #[serde(default = "crate::codec::nil")]
    pub metadata: Value,
    /// Connections holding the room now (the caller included).
    #[serde(default)]
    pub holders: u64,
    /// Whether the room has the persistent hold.
    #[serde(default)]
    pub persist: bool,
}

/// Result of `peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeersResult {
    /// Known peers.
    pub peers: Vec<PeerInfo>,
}

/// A remote peer in [`PeersResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Peer id.
    pub id: String,
    /// Connection state (`new`, `connecting`, `connected`, `disconnected`, `failed`, `closed`).
    pub state: String,
    /// Remote metadata.
    #[serde(default = "crate::codec::nil")]
    pub metadata: Value,
    /// Open channel labels.
    #[serde(default)]
    pub channels: Vec<String>,
    /// The tracks this peer shares with us (what `forward` can send on).
    #[serde(default)]
    pub tracks: Vec<crate::media::RemoteTrack>,
    /// Transport figures of the connection; absent when the peer has no connection (yet) or
    /// from a daemon that predates them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<PeerStats>,
}

/// Transport figures of one peer connection in [`PeerInfo`], from the WebRTC stack's
/// statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStats {
    /// Candidate type of our side of the selected ICE pair: `host`, `srflx`, `prflx` or
    /// `relay`; absent before ICE selected a pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_candidate: Option<String>,
    /// Candidate type of the remote side of the selected pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_candidate: Option<String>,
    /// Transport protocol of the selected pair (`udp`, `tcp`); absent before ICE selected one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Our address (`ip:port`) on the selected pair (for a relay candidate, the TURN server's
    /// relayed address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_address: Option<String>,
    /// The remote's address (`ip:port`) on the selected pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    /// How our side reaches its TURN server when the local candidate is `relay`: `udp`,
    /// `tcp` or `tls` (the W3C stats' `relayProtocol`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_protocol: Option<String>,
    /// Current round-trip time of the selected pair in milliseconds; absent before the first
    /// measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt: Option<f64>,
    /// Data-channel payload bytes received (the control channel included).
    #[serde(default)]
    pub bytes_in: u64,
    /// Data-channel payload bytes sent.
    #[serde(default)]
    pub bytes_out: u64,
    /// Data-channel messages received.
    #[serde(default)]
    pub messages_in: u64,
    /// Data-channel messages sent.
    #[serde(default)]
    pub messages_out: u64,
    /// Data channels open now (the control channel included).
    #[serde(default)]
    pub channels_open: u64,
}

impl PeerStats {
    /// The selected path as `local/remote` candidate types (e.g. `host/host`), or `-`.
    pub fn path(&self) -> String {
        match (&self.local_candidate, &self.remote_candidate) {
            (Some(l), Some(r)) => format!("{l}/{r}"),
            _ => "-".to_string(),
        }
    }

    /// The selected pair's protocol and addresses (`udp 10.0.0.2:5000 -> 203.0.113.7:6000`),
    /// or `-`.
    pub fn route(&self) -> String {
        match (&self.protocol, &self.local_address, &self.remote_address) {
            (Some(p), Some(l), Some(r)) => format!("{p} {l} -> {r}"),
            _ => "-".to_string(),
        }
    }
}

/// Result of `send`. `peers` is absent in the intermediate replies of a
/// streamed send and present in the final one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResult {
    /// Transfer id.
    pub transfer: u64,
    /// Per-peer delivery results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<DeliveryReport>>,
}

/// Result of a `send` with `batch`: what reached each target peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    /// The first message's transfer id; the batch's messages have `transfer .. transfer + count`.
    pub transfer: u64,
    /// Messages in the batch.
    pub count: u64,
    /// Per-peer results.
    pub peers: Vec<BatchPeerReport>,
}

/// What of a batch reached one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPeerReport {
    /// Peer id.
    pub id: String,
    /// Whether the peer acknowledged every message of the batch.
    pub ok: bool,
    /// How many messages the peer acknowledged.
    pub delivered: u64,
    /// The messages that did not reach it, by index in the batch, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<BatchFailure>,
}

/// One message of a batch that did not reach a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchFailure {
    /// Its index in the batch.
    pub index: u64,
    /// Why (`SEND_FAILED`, as for a single message).
    pub error: ErrorBody,
}

/// Delivery result for one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// Peer id.
    pub id: String,
    /// Whether the peer acknowledged the message.
    pub ok: bool,
    /// Failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Field-by-field access to an args map that names the field in errors.
pub(crate) struct Fields {
    op: &'static str,
    map: Vec<(Value, Value)>,
}

impl Fields {
    pub(crate) fn new(op: &'static str, args: Value) -> Result<Fields, ProtoError> {
        match args {
            Value::Nil => Ok(Fields {
                op,
                map: Vec::new(),
            }),
            Value::Map(map) => match map.iter().find(|(k, _)| !k.is_str()) {
                // An integer key is not a field position (PROTOCOL.md §2: string keys).
                Some((k, _)) => Err(ProtoError::BadRequest(format!(
                    "{op}: `args` has a non-string key ({k}); maps use string keys"
                ))),
                None => Ok(Fields { op, map }),
            },
            _ => Err(ProtoError::BadRequest(format!(
                "{op}: `args` must be a map"
            ))),
        }
    }

    pub(crate) fn bad(&self, msg: String) -> ProtoError {
        ProtoError::BadRequest(format!("{}: {msg}", self.op))
    }

    /// Removes and returns the raw value of `key` (a nil value is returned as is).
    fn take(&mut self, key: &str) -> Option<Value> {
        let pos = self.map.iter().position(|(k, _)| k.as_str() == Some(key))?;
        Some(self.map.swap_remove(pos).1)
    }

    fn conv<T: DeserializeOwned>(&self, key: &str, v: Value) -> Result<T, ProtoError> {
        crate::codec::from_value(v).map_err(|e| self.bad(format!("invalid field `{key}`: {e}")))
    }

    pub(crate) fn opt<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, ProtoError> {
        match self.take(key) {
            None | Some(Value::Nil) => Ok(None),
            Some(v) => self.conv(key, v).map(Some),
        }
    }

    /// Like [`Fields::opt`], taking the value as it is when `fast` reads it; anything else goes
    /// through serde, so errors read the same. Why: `opt` converts through an encode and a
    /// decode, which for a `send`'s half-dozen scalar fields cost about as much as decoding the
    /// whole request.
    fn opt_fast<T: DeserializeOwned>(
        &mut self,
        key: &str,
        fast: impl FnOnce(&mut Value) -> Option<T>,
    ) -> Result<Option<T>, ProtoError> {
        match self.take(key) {
            None | Some(Value::Nil) => Ok(None),
            Some(mut v) => match fast(&mut v) {
                Some(t) => Ok(Some(t)),
                None => self.conv(key, v).map(Some),
            },
        }
    }

    pub(crate) fn req<T: DeserializeOwned>(&mut self, key: &str) -> Result<T, ProtoError> {
        match self.take(key) {
            None | Some(Value::Nil) => Err(self.bad(format!("missing field `{key}`"))),
            Some(v) => self.conv(key, v),
        }
    }

    /// An optional value that is sent on as JSON (`metadata`, `info`): refused if JSON would
    /// change it.
    fn opt_json(&mut self, key: &str) -> Result<Option<Value>, ProtoError> {
        let v = self.opt::<Value>(key)?;
        if let Some(v) = &v {
            crate::checks::json_compatible(v, key).map_err(|e| self.bad(e))?;
        }
        Ok(v)
    }

    fn opt_map(&mut self, key: &str) -> Result<Option<Value>, ProtoError> {
        match self.take(key) {
            None | Some(Value::Nil) => Ok(None),
            Some(v @ Value::Map(_)) => Ok(Some(v)),
            Some(_) => Err(self.bad(format!("invalid field `{key}`: expected a map"))),
        }
    }
}

impl Op {
    /// Parses an op name and its arguments.
    ///
    /// Unknown op names yield [`ProtoError::UnknownOp`]; invalid arguments yield
    /// [`ProtoError::BadRequest`] whose message names the offending field.
    /// Unknown argument keys are ignored.
    pub fn parse(op: &str, args: Value) -> Result<Op, ProtoError> {
        use op_names::*;
        match op {
            STATUS => {
                Fields::new(STATUS, args)?;
                Ok(Op::Status)
            }
            JOIN => {
                let mut f = Fields::new(JOIN, args)?;
                Ok(Op::Join(JoinArgs {
                    room: f.req("room")?,
                    metadata: f.opt_json("metadata")?,
                    driver: f.opt("driver")?,
                    options: f.opt("options")?,
                    persist: f.opt("persist")?.unwrap_or(false),
                }))
            }
            LEAVE => {
                let mut f = Fields::new(LEAVE, args)?;
                Ok(Op::Leave(LeaveArgs {
                    room: f.req("room")?,
                    all: f.opt("all")?.unwrap_or(false),
                }))
            }
            PEERS => {
                let mut f = Fields::new(PEERS, args)?;
                Ok(Op::Peers(PeersArgs {
                    room: f.req("room")?,
                }))
            }
            OPEN => {
                let mut f = Fields::new(OPEN, args)?;
                Ok(Op::Open(OpenArgs {
                    room: f.req("room")?,
                    label: f.req("label")?,
                    ordered: f.opt("ordered")?,
                    protocol: f.opt("protocol")?,
                    max_retransmits: f.opt("maxRetransmits")?,
                    max_packet_life_time: f.opt("maxPacketLifeTime")?,
                    to: f.opt("to")?,
                }))
            }
            CLOSE => {
                let mut f = Fields::new(CLOSE, args)?;
                Ok(Op::Close(CloseArgs {
                    room: f.req("room")?,
                    label: f.req("label")?,
                    to: f.opt("to")?,
                }))
            }
            SEND => parse_send(Fields::new(SEND, args)?).map(Op::Send),
            SUBSCRIBE => {
                let mut f = Fields::new(SUBSCRIBE, args)?;
                let sub = SubscribeArgs {
                    events: f.req("events")?,
                    room: f.opt("room")?,
                    since: f.opt("since")?,
                    epoch: f.opt("epoch")?,
                };
                sub.filter()
                    .map_err(|e| f.bad(format!("invalid field `events`: {e}")))?;
                Ok(Op::Subscribe(sub))
            }
            UNSUBSCRIBE => {
                Fields::new(UNSUBSCRIBE, args)?;
                Ok(Op::Unsubscribe)
            }
            SHARE => crate::media::ShareArgs::parse(Fields::new(SHARE, args)?).map(Op::Share),
            FRAME => crate::media::FrameArgs::parse(Fields::new(FRAME, args)?).map(Op::Frame),
            FORWARD => {
                crate::media::ForwardArgs::parse(Fields::new(FORWARD, args)?).map(Op::Forward)
            }
            UNSHARE => {
                let mut f = Fields::new(UNSHARE, args)?;
                Ok(Op::Unshare(crate::media::UnshareArgs {
                    room: f.req("room")?,
                    label: f.req("label")?,
                }))
            }
            DEBUG => Ok(Op::Debug(args)),
            VERIFIER => {
                let mut f = Fields::new(VERIFIER, args)?;
                Ok(Op::Verifier(VerifierArgs {
                    room: f.req("room")?,
                    release: f.opt("release")?.unwrap_or(false),
                }))
            }
            VERIFY => {
                let mut f = Fields::new(VERIFY, args)?;
                Ok(Op::Verify(VerifyArgs {
                    room: f.req("room")?,
                    request: f.req("request")?,
                    accept: f.req("accept")?,
                }))
            }
            INBOX => {
                let mut f = Fields::new(INBOX, args)?;
                Ok(Op::Inbox(crate::delivery::InboxArgs {
                    room: f.req("room")?,
                    max: f.opt("max")?,
                }))
            }
            other => Err(ProtoError::UnknownOp(other.to_owned())),
        }
    }

    /// The wire name of this op.
    pub fn name(&self) -> &'static str {
        use op_names::*;
        match self {
            Op::Status => STATUS,
            Op::Join(_) => JOIN,
            Op::Leave(_) => LEAVE,
            Op::Peers(_) => PEERS,
            Op::Open(_) => OPEN,
            Op::Close(_) => CLOSE,
            Op::Send(_) => SEND,
            Op::Subscribe(_) => SUBSCRIBE,
            Op::Unsubscribe => UNSUBSCRIBE,
            Op::Share(_) => SHARE,
            Op::Unshare(_) => UNSHARE,
            Op::Frame(_) => FRAME,
            Op::Forward(_) => FORWARD,
            Op::Debug(_) => DEBUG,
            Op::Verifier(_) => VERIFIER,
            Op::Verify(_) => VERIFY,
            Op::Inbox(_) => INBOX,
        }
    }

    /// Like [`Op::to_args`], consuming the op: a `send`'s data moves into the map instead of
    /// being copied (a client sending a 256 KiB chunk copied it once here and once more into
    /// the frame).
    pub fn into_args(self) -> Result<Value, ProtoError> {
        match self {
            Op::Send(a) => Ok(send_into_value(a)),
            op => op.to_args(),
        }
    }

    /// Serialises the arguments into the wire `args` map.
    pub fn to_args(&self) -> Result<Value, ProtoError> {
        match self {
            Op::Status | Op::Unsubscribe => Ok(Value::Map(Vec::new())),
            Op::Join(a) => to_value(a),
            Op::Leave(a) => to_value(a),
            Op::Peers(a) => to_value(a),
            Op::Open(a) => to_value(a),
            Op::Close(a) => to_value(a),
            Op::Subscribe(a) => to_value(a),
            Op::Send(a) => Ok(send_into_value(a.clone())),
            Op::Debug(v) => Ok(v.clone()),
            Op::Share(a) => to_value(a),
            Op::Unshare(a) => to_value(a),
            Op::Frame(a) => to_value(a),
            Op::Verifier(a) => to_value(a),
            Op::Verify(a) => to_value(a),
            Op::Inbox(a) => to_value(a),
            Op::Forward(a) => to_value(a),
        }
    }
}

/// A `send` request of one whole message (or a stream's start), serialised straight from its
/// [`SendStart`] into exactly the bytes the `Value` route gives (`Request::from_op`, whose args
/// are [`Op::into_args`]), without building that `Value`.
///
/// Why: a client pipelining small messages writes one such request per message, and the
/// `Value` (a map, a key string per field, the data moved in) and its serialisation were about
/// 5 % of the Rust client's thread (BENCHMARKS.md, session 19).
#[derive(Debug, Clone, Copy)]
pub struct SendStartRequest<'a> {
    /// The request id.
    pub id: u64,
    /// The send.
    pub args: &'a SendStart,
}

impl Serialize for SendStartRequest<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_send(s, self.id, &StartArgs(self.args))
    }
}

/// A streamed `send`'s follow-up chunk of bytes, serialised from a borrowed slice into exactly
/// the bytes the `Value` route gives for [`SendChunk`] with [`Payload::Bytes`].
///
/// Why: a client streaming a large message copied every 256 KiB chunk into a `Value` and then
/// serialised it into a frame that grew by doubling on the way (BENCHMARKS.md, session 23).
#[derive(Debug, Clone, Copy)]
pub struct SendChunkRequest<'a> {
    /// The request id.
    pub id: u64,
    /// The transfer id returned by the start's reply.
    pub transfer: u64,
    /// The chunk's bytes.
    pub data: &'a [u8],
    /// More chunks follow.
    pub more: bool,
}

impl Serialize for SendChunkRequest<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_send(s, self.id, &ChunkArgs(self))
    }
}

/// A `send` request with `args`, laid out as `Request::from_op` lays it out.
fn serialize_send<S: serde::Serializer, A: Serialize>(
    s: S,
    id: u64,
    args: &A,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut m = s.serialize_struct("Request", 4)?;
    m.serialize_field("type", "request")?;
    m.serialize_field("id", &id)?;
    m.serialize_field("op", op_names::SEND)?;
    m.serialize_field("args", args)?;
    m.end()
}

/// The args map of a [`SendChunkRequest`], in the order [`send_into_value`] builds it.
struct ChunkArgs<'a, 'b>(&'b SendChunkRequest<'a>);

impl Serialize for ChunkArgs<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("transfer", &self.0.transfer)?;
        m.serialize_entry("data", &Bin(self.0.data))?;
        m.serialize_entry("more", &self.0.more)?;
        m.end()
    }
}

/// A `bin` (a `&[u8]` alone would be an array of integers).
struct Bin<'a>(&'a [u8]);

impl Serialize for Bin<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// The args map of a [`SendStartRequest`], in the order [`send_into_value`] builds it.
struct StartArgs<'a>(&'a SendStart);

impl Serialize for StartArgs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let a = self.0;
        let optional = [a.to.is_some(), a.info.is_some(), a.more, a.progress];
        let len = 4 + optional.iter().filter(|b| **b).count();
        let mut m = s.serialize_map(Some(len))?;
        m.serialize_entry("room", &a.room)?;
        m.serialize_entry("label", &a.label)?;
        if let Some(to) = &a.to {
            m.serialize_entry("to", to)?;
        }
        m.serialize_entry("type", a.payload.kind().as_str())?;
        match &a.payload {
            Payload::Text(t) => m.serialize_entry("data", t)?,
            Payload::Bytes(b) => m.serialize_entry("data", &Bin(b))?,
            Payload::Json(v) => m.serialize_entry("data", v)?,
        }
        if let Some(info) = &a.info {
            m.serialize_entry("info", info)?;
        }
        if a.more {
            m.serialize_entry("more", &true)?;
        }
        if a.progress {
            m.serialize_entry("progress", &true)?;
        }
        m.end()
    }
}

fn send_into_value(a: SendArgs) -> Value {
    let mut m: Vec<(Value, Value)> = Vec::new();
    let mut put = |k: &str, v: Value| m.push((Value::from(k), v));
    match a {
        SendArgs::Start(s) => {
            put("room", Value::from(s.room));
            put("label", Value::from(s.label));
            if let Some(to) = s.to {
                put("to", Value::from(to));
            }
            put("type", Value::from(s.payload.kind().as_str()));
            put("data", s.payload.into_value());
            if let Some(info) = s.info {
                put("info", info);
            }
            if s.more {
                put("more", Value::Boolean(true));
            }
            if s.progress {
                put("progress", Value::Boolean(true));
            }
        }
        SendArgs::Chunk(c) => {
            put("transfer", Value::from(c.transfer));
            put("data", c.data.into_value());
            put("more", Value::Boolean(c.more));
        }
        SendArgs::Batch(b) => {
            put("room", Value::from(b.room));
            put("label", Value::from(b.label));
            if let Some(to) = b.to {
                put("to", Value::from(to));
            }
            let kind = b.payloads.first().map_or(PayloadType::Bytes, Payload::kind);
            put("type", Value::from(kind.as_str()));
            put(
                "batch",
                Value::Array(b.payloads.into_iter().map(Payload::into_value).collect()),
            );
            if let Some(info) = b.info {
                put("info", info);
            }
        }
    }
    Value::Map(m)
}

/// A str field's string, moved out of the value (`None` leaves anything else as it is).
fn fast_string(v: &mut Value) -> Option<String> {
    match v {
        Value::String(s) if s.is_str() => match std::mem::replace(v, Value::Nil) {
            Value::String(s) => s.into_str(),
            _ => None,
        },
        _ => None,
    }
}

/// One message of a `batch`, checked like a `send`'s `data`.
fn batch_payload(f: &Fields, kind: PayloadType, i: usize, v: Value) -> Result<Payload, ProtoError> {
    // Formatted only when needed: a batch of small messages paid a `format!` per message.
    let path = || format!("batch[{i}]");
    Ok(match (kind, v) {
        (PayloadType::Json, v) => {
            crate::checks::json_compatible(&v, &path()).map_err(|e| f.bad(e))?;
            Payload::Json(v)
        }
        (PayloadType::Text, Value::String(s)) => match s.into_str() {
            Some(s) => Payload::Text(s),
            None => return Err(f.bad(format!("invalid field `{}`: invalid UTF-8", path()))),
        },
        (PayloadType::Bytes, Value::Binary(b)) => Payload::Bytes(b),
        (PayloadType::Text, _) => {
            return Err(f.bad(format!(
                "invalid field `{}`: expected str for type `text`",
                path()
            )))
        }
        (PayloadType::Bytes, _) => {
            return Err(f.bad(format!(
                "invalid field `{}`: expected bin for type `bytes`",
                path()
            )))
        }
    })
}

fn parse_batch(
    mut f: Fields,
    room: String,
    label: String,
    to: Option<String>,
    kind: PayloadType,
    batch: Value,
) -> Result<SendArgs, ProtoError> {
    let Value::Array(items) = batch else {
        return Err(f.bad("invalid field `batch`: expected an array of messages".into()));
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(f.bad(format!(
            "invalid field `batch`: {} messages; a batch carries 1 to {MAX_BATCH}",
            items.len()
        )));
    }
    if f.take("data").is_some_and(|v| !v.is_nil()) {
        return Err(f.bad("`data` cannot go with `batch` (put every message in `batch`)".into()));
    }
    if f.take("progress")
        .is_some_and(|v| v != Value::Boolean(false) && !v.is_nil())
    {
        return Err(f.bad(
            "`progress` cannot go with `batch` (its reply says what reached each peer)".into(),
        ));
    }
    let payloads = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| batch_payload(&f, kind, i, v))
        .collect::<Result<Vec<_>, _>>()?;
    let info = f.opt_map("info")?;
    if let Some(i) = &info {
        crate::checks::json_compatible(i, "info").map_err(|e| f.bad(e))?;
    }
    Ok(SendArgs::Batch(SendBatch {
        room,
        label,
        to,
        payloads,
        info,
    }))
}

fn parse_send(mut f: Fields) -> Result<SendArgs, ProtoError> {
    let transfer: Option<u64> = f.opt_fast("transfer", |v| v.as_u64())?;
    let more: bool = f.opt_fast("more", |v| v.as_bool())?.unwrap_or(false);
    if let Some(transfer) = transfer {
        let data = match f.take("data") {
            Some(Value::String(s)) => match s.into_str() {
                Some(s) => Payload::Text(s),
                None => return Err(f.bad("invalid field `data`: invalid UTF-8".into())),
            },
            Some(Value::Binary(b)) => Payload::Bytes(b),
            None | Some(Value::Nil) => return Err(f.bad("missing field `data`".into())),
            Some(_) => return Err(f.bad("invalid field `data`: a chunk must be str or bin".into())),
        };
        return Ok(SendArgs::Chunk(SendChunk {
            transfer,
            data,
            more,
        }));
    }
    let room: String = f
        .opt_fast("room", fast_string)?
        .ok_or_else(|| f.bad("missing field `room`".into()))?;
    let label: String = f
        .opt_fast("label", fast_string)?
        .unwrap_or_else(|| DEFAULT_LABEL.to_owned());
    let to: Option<String> = f.opt_fast("to", fast_string)?;
    let kind: PayloadType = f
        .opt_fast("type", |v| match v.as_str() {
            Some("text") => Some(PayloadType::Text),
            Some("bytes") => Some(PayloadType::Bytes),
            Some("json") => Some(PayloadType::Json),
            _ => None,
        })?
        .ok_or_else(|| f.bad("missing field `type`".into()))?;
    if let Some(batch) = f.take("batch").filter(|b| !b.is_nil()) {
        if more {
            return Err(f.bad(
                "`more` cannot go with `batch` (a batch is whole messages; stream one message \
                 at a time)"
                    .into(),
            ));
        }
        return parse_batch(f, room, label, to, kind, batch);
    }
    let data = f.take("data");
    let payload = match (kind, data) {
        (PayloadType::Json, _) if more => {
            return Err(f.bad("invalid field `more`: json messages cannot be streamed".into()))
        }
        (PayloadType::Json, None) => return Err(f.bad("missing field `data`".into())),
        (PayloadType::Json, Some(v)) => {
            // JSON is what goes on the wire: a value JSON would rewrite (bin, integer keys,
            // NaN) is refused rather than delivered changed.
            crate::checks::json_compatible(&v, "data").map_err(|e| f.bad(e))?;
            Payload::Json(v)
        }
        (PayloadType::Text, None | Some(Value::Nil)) if more => Payload::Text(String::new()),
        (PayloadType::Bytes, None | Some(Value::Nil)) if more => Payload::Bytes(Vec::new()),
        (_, None | Some(Value::Nil)) => return Err(f.bad("missing field `data`".into())),
        (PayloadType::Text, Some(Value::String(s))) => match s.into_str() {
            Some(s) => Payload::Text(s),
            None => return Err(f.bad("invalid field `data`: invalid UTF-8".into())),
        },
        (PayloadType::Text, Some(_)) => {
            return Err(f.bad("invalid field `data`: expected str for type `text`".into()))
        }
        (PayloadType::Bytes, Some(Value::Binary(b))) => Payload::Bytes(b),
        (PayloadType::Bytes, Some(_)) => {
            return Err(f.bad("invalid field `data`: expected bin for type `bytes`".into()))
        }
    };
    let info = f.opt_map("info")?;
    if let Some(i) = &info {
        crate::checks::json_compatible(i, "info").map_err(|e| f.bad(e))?;
    }
    let progress: bool = f.opt_fast("progress", |v| v.as_bool())?.unwrap_or(false);
    Ok(SendArgs::Start(SendStart {
        room,
        label,
        to,
        payload,
        info,
        more,
        progress,
    }))
}
