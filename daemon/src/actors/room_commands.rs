//! The commands a `RoomActor` takes from the daemon on behalf of clients: open and close
//! labels, list peers, describe the room, leave. Protocol effects (channel requests, which side
//! creates a channel) are the machine's. Sends do not come here: client sessions queue them on
//! the connections' lanes directly (`send_path`).

use actix::prelude::*;
use peerix_wire::control::ChannelOptions;
use serde_json::Value as Json;

#[cfg(feature = "fault-injection")]
use super::peer::InjectPanic;
use super::peer::{LabelOpen, PeerActor, PeerInfo, PeerState};
use super::room::RoomActor;
use super::send_path::Slot;
use crate::config::IceTransportPolicy;
use crate::error::DaemonError;

impl RoomActor {
    fn no_such_peer(&self, peer: String) -> DaemonError {
        DaemonError::NoSuchPeer {
            room: self.s.room.clone(),
            peer,
        }
    }

    /// Tells the connection actors concerned that a label opened or closed (their sends wait
    /// for, or stop waiting for, its channel).
    fn label_changed(&self, label: &str, open: bool, to: Option<&str>) {
        // Their lanes first, synchronously, before the reply: a send right after `open` must
        // wait for the channel, not fail; one after `close` must fail, not race the channel's
        // end. (A peer the machine knows but the directory not yet is told by `LabelOpen`.)
        if to.is_none() {
            self.s.directory.set_room_label(label, open);
        }
        let _ = self.s.directory.each_lanes(to, |l| {
            if open {
                l.expect(label)
            } else {
                l.set(label, Slot::Absent)
            }
        });
        let conns: Vec<_> = match to {
            Some(p) => self.machine.peer(p).map(|(c, _)| c).into_iter().collect(),
            None => self.machine.peers().map(|(_, c, _, _)| c).collect(),
        };
        for c in conns {
            if let Some(a) = self.conns.get(&c) {
                a.do_send(LabelOpen(label.to_string(), open));
            }
        }
    }
}

/// Open a label room-wide or on one peer.
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct RoomOpen {
    /// Channel options with the label.
    pub options: ChannelOptions,
    /// Only this peer.
    pub to: Option<String>,
}

impl Handler<RoomOpen> for RoomActor {
    type Result = Result<(), DaemonError>;
    fn handle(&mut self, m: RoomOpen, ctx: &mut Self::Context) -> Self::Result {
        let label = m.options.label.clone();
        self.machine
            .open(m.options, m.to.as_deref())
            .map_err(|e| self.no_such_peer(e.0))?;
        self.label_changed(&label, true, m.to.as_deref());
        self.drive(ctx);
        Ok(())
    }
}

/// Close a label room-wide or on one peer.
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct RoomClose {
    /// Label.
    pub label: String,
    /// Only this peer.
    pub to: Option<String>,
}

impl Handler<RoomClose> for RoomActor {
    type Result = Result<(), DaemonError>;
    fn handle(&mut self, m: RoomClose, ctx: &mut Self::Context) -> Self::Result {
        if let Some(p) = m.to.as_deref() {
            if self.machine.peer(p).is_none() {
                return Err(self.no_such_peer(p.to_string()));
            }
        }
        let open = self.machine.labels().any(|l| l == m.label)
            || self.s.directory.label_known(&m.label, m.to.as_deref());
        if !open {
            let whom =
                m.to.as_deref()
                    .map(|p| format!(" to peer {p:?}"))
                    .unwrap_or_default();
            return Err(DaemonError::NoSuchChannel(format!(
                "{:?} is open in room {:?}{whom}; nothing to close",
                m.label, self.s.room
            )));
        }
        self.machine
            .close(&m.label, m.to.as_deref())
            .map_err(|e| self.no_such_peer(e.0))?;
        self.label_changed(&m.label, false, m.to.as_deref());
        self.drive(ctx);
        Ok(())
    }
}

/// One remote peer as listed by `peers`.
#[derive(Debug, Clone)]
pub struct PeerSummary {
    /// Remote id.
    pub id: String,
    /// Peerix state.
    pub state: PeerState,
    /// Remote metadata.
    pub metadata: Json,
    /// Open channel labels.
    pub channels: Vec<String>,
    /// The tracks it shares with us.
    pub tracks: Vec<peerix_ipc_proto::RemoteTrack>,
    /// The connection's figures, when it has a connection.
    pub stats: Option<peerix_rtc::PeerStats>,
}

/// List the room's peers.
#[derive(Message)]
#[rtype(result = "Vec<PeerSummary>")]
pub struct RoomPeers;

impl Handler<RoomPeers> for RoomActor {
    type Result = ResponseFuture<Vec<PeerSummary>>;
    fn handle(&mut self, _: RoomPeers, _: &mut Self::Context) -> Self::Result {
        type Entry = (String, Option<Addr<PeerActor>>, Json, PeerState);
        let entries: Vec<(Entry, Vec<peerix_ipc_proto::RemoteTrack>)> = self
            .machine
            .peers()
            .map(|(id, conn, state, meta)| {
                let entry = (
                    id.to_string(),
                    self.conns.get(&conn).cloned(),
                    meta.clone(),
                    state,
                );
                (entry, remote_tracks(&self.machine, id))
            })
            .collect();
        Box::pin(async move {
            let mut out = Vec::new();
            for ((id, addr, metadata, state), tracks) in entries {
                let details = match addr {
                    Some(a) => a.send(PeerInfo).await.unwrap_or_default(),
                    None => Default::default(),
                };
                out.push(PeerSummary {
                    id,
                    state,
                    metadata,
                    channels: details.channels,
                    tracks,
                    stats: details.stats,
                });
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            out
        })
    }
}

/// The tracks `peer` shares with us, as `peers` lists them.
fn remote_tracks(machine: &peerix_proto::Room, peer: &str) -> Vec<peerix_ipc_proto::RemoteTrack> {
    machine
        .remote_tracks(peer)
        .into_iter()
        .map(|(label, t)| peerix_ipc_proto::RemoteTrack {
            label,
            stream: t.stream,
            track: t.track,
            kind: t.kind,
            codec: t.codec,
        })
        .collect()
}

/// `(room, id, metadata, driver, peer count, labels)`.
#[derive(Message)]
#[rtype(result = "RoomSummary")]
pub struct RoomInfo;

/// A room as listed by `status`.
#[derive(Debug, Clone, actix::MessageResponse)]
pub struct RoomSummary {
    /// Room name.
    pub room: String,
    /// Our id.
    pub id: String,
    /// Our metadata.
    pub metadata: Json,
    /// Driver name.
    pub driver: String,
    /// Connected peers.
    pub peers: usize,
    /// Labels opened room-wide.
    pub channels: Vec<String>,
    /// What we share.
    pub shares: Vec<peerix_ipc_proto::ShareStatus>,
    /// The URLs of the ICE servers new connections use.
    pub ice_servers: Vec<String>,
    /// `all` or `relay`.
    pub ice_transport_policy: String,
}

impl Handler<RoomInfo> for RoomActor {
    type Result = RoomSummary;
    fn handle(&mut self, _: RoomInfo, _: &mut Self::Context) -> RoomSummary {
        RoomSummary {
            room: self.s.room.clone(),
            id: self.me.clone(),
            metadata: self.s.metadata.clone(),
            driver: self.s.driver_name.clone(),
            peers: self
                .machine
                .peers()
                .filter(|(_, _, state, _)| *state == PeerState::Connected)
                .count(),
            channels: self.machine.labels().map(str::to_owned).collect(),
            shares: self.shares.describe(),
            ice_servers: self
                .s
                .options
                .ice_servers
                .iter()
                .flat_map(|s| s.urls.iter().cloned())
                .chain(self.s.turn_rest.urls.iter().cloned())
                .collect(),
            ice_transport_policy: match self.s.options.ice_transport_policy {
                IceTransportPolicy::All => "all",
                IceTransportPolicy::Relay => "relay",
            }
            .to_string(),
        }
    }
}

/// A reload's ICE settings (`reconfigure.rs`): connections made from now on use them; the ones
/// already up keep the path they have.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetIce {
    /// STUN and TURN servers.
    pub servers: Vec<crate::config::IceServerConfig>,
    /// `all` or `relay`.
    pub policy: IceTransportPolicy,
}

/// A reload's `[turn_rest]`: new connections compute their TURN credentials from it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetTurnRest(pub crate::config_turn::TurnRestConfig);

impl Handler<SetTurnRest> for RoomActor {
    type Result = ();
    fn handle(&mut self, SetTurnRest(t): SetTurnRest, _: &mut Self::Context) {
        self.s.turn_rest = t;
    }
}

impl Handler<SetIce> for RoomActor {
    type Result = ();
    fn handle(&mut self, m: SetIce, _: &mut Self::Context) {
        tracing::info!(room = %self.s.room, servers = m.servers.len(), policy = ?m.policy, "new ICE settings for new connections");
        self.s.options.ice_servers = m.servers;
        self.s.options.ice_transport_policy = m.policy;
    }
}

/// Fault injection: make a peer's actor panic (tests of supervision).
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct RoomPanicPeer(pub String);

#[cfg(feature = "fault-injection")]
impl Handler<RoomPanicPeer> for RoomActor {
    type Result = Result<(), DaemonError>;
    fn handle(&mut self, m: RoomPanicPeer, _: &mut Self::Context) -> Self::Result {
        let addr = self
            .machine
            .peer(&m.0)
            .and_then(|(conn, _)| self.conns.get(&conn))
            .ok_or_else(|| self.no_such_peer(m.0.clone()))?;
        addr.do_send(InjectPanic);
        Ok(())
    }
}

/// Leave the room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

impl Handler<Leave> for RoomActor {
    type Result = ();
    fn handle(&mut self, _: Leave, ctx: &mut Self::Context) {
        self.machine.leave(std::time::Instant::now());
        self.drive(ctx);
        self.leaving = true;
        ctx.stop();
    }
}
