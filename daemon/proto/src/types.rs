//! What goes into the machines and what comes out of them.

use peerix_wire::control::ChannelOptions;
use peerix_wire::packet::{IceCandidateInit, SessionDescription, SignalType};
use serde_json::Value as Json;

/// Names one connection object (one RTCPeerConnection) for its whole life. A remote id may
/// have several over time (a failed connection is replaced by a new one), never two at once;
/// inputs naming a connection that is gone are ignored, so late events of an old connection
/// cannot touch its successor.
pub type ConnId = u64;

/// Peerix's connection states (§5.7), derived from `iceConnectionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Created, ICE not started.
    New,
    /// ICE checking.
    Connecting,
    /// ICE connected.
    Connected,
    /// ICE disconnected (the connection timer runs).
    Disconnected,
    /// Failed (timeout or ICE failure); closed right after.
    Failed,
    /// Gone.
    Closed,
}

impl PeerState {
    /// Peerix's spelling, as in `connection:<state>` events.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::New => "new",
            PeerState::Connecting => "connecting",
            PeerState::Connected => "connected",
            PeerState::Disconnected => "disconnected",
            PeerState::Failed => "failed",
            PeerState::Closed => "closed",
        }
    }

    /// Still being set up: counts against the admission cap.
    pub fn is_setting_up(self) -> bool {
        matches!(self, PeerState::New | PeerState::Connecting)
    }
}

/// `iceConnectionState` as reported by the WebRTC stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IceState {
    /// Gathering or waiting for the remote side.
    New,
    /// Connectivity checks running.
    Checking,
    /// A pair works.
    Connected,
    /// Checks finished.
    Completed,
    /// Consent lost for a while.
    Disconnected,
    /// No pair works.
    Failed,
    /// Closed locally.
    Closed,
}

/// What happened to a connection, reported by whoever owns it.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnEvent {
    /// A local candidate was gathered (carries our ufrag).
    LocalCandidate(IceCandidateInit),
    /// Every local candidate has been reported.
    GatheringComplete,
    /// `iceConnectionState` changed.
    Ice(IceState),
    /// The negotiated control channel (id 0) opened.
    ControlOpen,
    /// A binary message arrived on the control channel (undecoded).
    ControlMessage(Vec<u8>),
    /// The user channel of this label died on our side (its owner crashed): open it again if
    /// this side opened it.
    ChannelCrashed(String),
    /// The control channel closed: the remote left (§5.8).
    ControlClosed,
    /// The stack started receiving a remote track (§8.3).
    Track(crate::media::TrackInfo),
    /// A remote track ended (its transceiver stopped or its section was rejected).
    TrackEnded(String),
    /// The connection object is gone. `crashed`: its owner died unexpectedly (a panic), not
    /// because the machine asked for [`Action::Close`].
    Closed {
        /// The owner died instead of closing.
        crashed: bool,
    },
    /// The [`Op`] last handed out for this connection finished. `stable`: the signaling state
    /// is `stable` afterwards. The result carries the description the op produced (an offer
    /// or an answer), or the stack's error text.
    OpDone {
        /// Signaling state after the op.
        stable: bool,
        /// What the op produced.
        result: Result<Option<SessionDescription>, String>,
    },
}

/// One operation on a connection. At most one per connection is outstanding at a time
/// (Peerix serializes them, §5.9); the next is handed out after [`ConnEvent::OpDone`].
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create an offer and set it as the local description; report it.
    CreateOffer,
    /// Create an offer with new ICE credentials (an ICE restart: the agent gathers and checks
    /// anew while DTLS and SCTP carry on), set it as the local description and report it.
    /// Only ever asked for a connection to another peerixd.
    RestartIce,
    /// Set a remote description; when `rollback`, roll the local offer back first; when
    /// `answer`, then create an answer, set it locally and report it.
    ApplyRemote {
        /// The description.
        desc: SessionDescription,
        /// Roll back the local offer first (polite side of a collision).
        rollback: bool,
        /// It is an offer: answer it.
        answer: bool,
    },
    /// Add a remote candidate.
    AddCandidate(IceCandidateInit),
    /// Change our senders in order; then, when `offer`, create an offer and set it as the
    /// local description and report it (as [`Op::CreateOffer`]).
    Media {
        /// The changes.
        changes: Vec<crate::local_media::MediaOp>,
        /// Renegotiate afterwards.
        offer: bool,
    },
}

/// Where a signaling packet goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The room namespace (announces).
    Room,
    /// A peer's personal namespace.
    Peer(String),
}

/// Something the owner must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Seal and publish a signaling packet. `message: None` is an empty payload.
    Publish {
        /// Namespace.
        to: Target,
        /// Signal type.
        kind: SignalType,
        /// JSON array elements, or none.
        message: Option<Vec<Json>>,
    },
    /// Create a connection object (with its negotiated control channel) for `remote`.
    Connect {
        /// Its id from now on.
        conn: ConnId,
        /// Remote peer id.
        remote: String,
        /// The remote's metadata for the connection's life (§5.4).
        metadata: Json,
    },
    /// Run an operation on a connection, then report [`ConnEvent::OpDone`].
    Run {
        /// Connection.
        conn: ConnId,
        /// Operation.
        op: Op,
    },
    /// Send bytes on the connection's control channel.
    SendControl {
        /// Connection.
        conn: ConnId,
        /// An encoded control message.
        bytes: Vec<u8>,
    },
    /// Create a user data channel (this side is the impolite one, §6.4).
    CreateChannel {
        /// Connection.
        conn: ConnId,
        /// Its options.
        options: ChannelOptions,
    },
    /// Close the user data channel with this label.
    CloseChannel {
        /// Connection.
        conn: ConnId,
        /// Label.
        label: String,
    },
    /// Close the connection: control channel first, then user channels, then the connection
    /// (§5.8). Its `connection:closed` event has already been emitted; report
    /// [`ConnEvent::Closed`] when it is gone.
    Close {
        /// Connection.
        conn: ConnId,
    },
    /// The connection to `remote` (a browser, once connected) failed and a new one will be
    /// made (re-invoke): sends to it should wait for the new connection's channels instead of
    /// failing. Emitted before the connection's `failed` event.
    HoldSends {
        /// Remote id.
        remote: String,
        /// How long to hold them at most: the new connection should be up by then.
        hold: std::time::Duration,
    },
    /// The remote of `conn` said it is a peerixd (its hello on the control channel), once per
    /// connection. Its channels need no grace before our first write (a browser's do: see
    /// `PeerCmd::PeerixdRemote` in the daemon).
    RemoteIsPeerixd {
        /// Connection.
        conn: ConnId,
    },
    /// No connection to `remote` remains: forget what was cached for it (its ECDH key).
    Forget {
        /// Remote id.
        remote: String,
    },
    /// Ask the room's verifier whether `peer` may connect (Peerix's `verify(id, metadata)`);
    /// answer with [`crate::Room::verdict`]. Unanswered by its deadline, the policy's fallback
    /// applies.
    Verify {
        /// Names the request in the verdict.
        request: u64,
        /// Remote id.
        peer: String,
        /// The metadata its invoke or offer carried.
        metadata: Json,
    },
    /// Tell the room's clients.
    Emit(Event),
}

/// An event for the room's clients (Peerix's names).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `connection:<state>`.
    Connection {
        /// Remote id.
        peer: String,
        /// New state.
        state: PeerState,
        /// The remote's metadata.
        metadata: Json,
    },
    /// `stream:*` and `track:*` of one remote peer (§8.3).
    Media {
        /// Remote id.
        peer: String,
        /// What happened.
        event: crate::media::MediaEvent,
    },
    /// `error`.
    Error {
        /// Peerix-style code (`NEGOTIATION_ERROR`, `PEER_LIMIT`, …).
        code: &'static str,
        /// What happened and what to do.
        message: String,
        /// The peer concerned, if one.
        peer: Option<String>,
    },
}
