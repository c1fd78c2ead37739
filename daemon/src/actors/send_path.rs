//! The data path from a client's `send` to the data channels, off the actor mailboxes.
//!
//! Ordering is the point (PROTOCOL.md, "Ordering"): every message for one (peer, label) goes
//! through one [`lane`](PeerLanes::enqueue), a FIFO drained by a single task that writes one
//! message at a time onto the label's current channel. A client session finds the lanes of a
//! send synchronously, in its own request handler, through [`Routes`] (rooms) and
//! [`RoomDirectory`] (peers), so requests enter the lanes in the order the session read them,
//! without a `Daemon`, `RoomActor` or `PeerActor` mailbox (and the futures between them) on the
//! way. The actors only keep the shared tables current: the daemon adds and removes rooms, the
//! room actor registers each connection its machine creates and follows its state, and the peer
//! actor (or the room, for `open`/`close`) tells the lanes which channel a label has.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use peerix_proto::ConnId;
use tokio::sync::{mpsc, watch};

use super::channel::ProgressTo;
use super::outcome::{Gather, OutcomeTo, Outcomes};
use super::outgoing::{ChannelSender, OutgoingMessage, OutgoingStream, SendOutcome};
use super::peer::PeerState;
use crate::error::DaemonError;

/// How long a send waits for the channel of a label that is open but not yet created here
/// (Peerix's own transfer steps time out after 10 s too).
const CHANNEL_WAIT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves the table consistent, so a panic elsewhere while it was
    // held does not make it unusable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The joined rooms' directories, by room name; shared by the daemon (which writes it on
/// join/leave) and every client session (which reads it per send).
#[derive(Clone, Default)]
pub struct Routes(Arc<RwLock<HashMap<String, Arc<RoomDirectory>>>>);

impl Routes {
    /// Makes `room` reachable.
    pub fn insert(&self, room: &str, dir: Arc<RoomDirectory>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.to_string(), dir);
    }

    /// Makes `room` unreachable.
    pub fn remove(&self, room: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(room);
    }

    /// The directory of `room`, or `NOT_JOINED`.
    fn directory(&self, room: &str) -> Result<Arc<RoomDirectory>, DaemonError> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(room)
            .cloned()
            .ok_or_else(|| DaemonError::NotJoined(room.to_string()))
    }

    /// The peers a send in `room` goes to: the one named by `to`, or every connected peer.
    pub fn targets(
        &self,
        room: &str,
        to: Option<&str>,
    ) -> Result<Vec<(String, Arc<PeerLanes>)>, DaemonError> {
        self.directory(room)?.targets(to)
    }

    /// Like [`Routes::targets`], for a send on `label`: `NO_SUCH_CHANNEL` when neither the room
    /// nor any target has the label open (or coming).
    pub fn send_targets(
        &self,
        room: &str,
        label: &str,
        to: Option<&str>,
    ) -> Result<Vec<(String, Arc<PeerLanes>)>, DaemonError> {
        let dir = self.directory(room)?;
        let targets = dir.targets(to)?;
        dir.check_label(label, &targets)?;
        Ok(targets)
    }

    /// Queues `message` on `label`'s lane of every target (see [`Routes::targets`]) before it
    /// returns, so messages sent one after another keep their order; `done` gets every
    /// target's outcome once the remotes acknowledged (or the sends failed), on the thread that
    /// learns the last one.
    pub fn send(
        &self,
        room: &str,
        label: &str,
        to: Option<&str>,
        message: OutgoingMessage,
        progress: Option<ProgressTo>,
        done: impl FnOnce(Vec<(String, SendOutcome)>) + Send + 'static,
    ) -> Result<(), DaemonError> {
        self.send_batch(room, label, to, vec![message], progress, move |peers| {
            done(
                peers
                    .into_iter()
                    .map(|(peer, mut r)| (peer, r.pop().unwrap_or_else(|| Err(lost()))))
                    .collect(),
            )
        })
    }

    /// Like [`Routes::send`] for several messages, queued one after the other on each target's
    /// lane (so nothing of another request comes between them); `done` gets each target's
    /// outcome of every message, in order.
    pub fn send_batch(
        &self,
        room: &str,
        label: &str,
        to: Option<&str>,
        messages: Vec<OutgoingMessage>,
        progress: Option<ProgressTo>,
        done: impl FnOnce(Outcomes) + Send + 'static,
    ) -> Result<(), DaemonError> {
        let targets = self.send_targets(room, label, to)?;
        let peers = targets.iter().map(|(peer, _)| peer.clone()).collect();
        let places = Gather::start(peers, messages.len(), done);
        for ((peer, lanes), places) in targets.into_iter().zip(places) {
            lanes.enqueue_all(&peer, label, &messages, &progress, places);
        }
        Ok(())
    }
}

/// Why a send failed whose outcome never came: its lane, or its peer's connection, went away.
pub(crate) fn lost() -> String {
    "peer connection closed".to_string()
}

/// One connection in a [`RoomDirectory`].
struct DirEntry {
    /// `None` while the peer is [held](RoomDirectory::hold): its connection failed and a new
    /// one is being made.
    conn: Option<ConnId>,
    state: PeerState,
    lanes: Arc<PeerLanes>,
    /// The hold's number, so an expired [`RoomDirectory::release`] of an earlier hold does not
    /// end a later one.
    hold: u64,
}

/// The peers of one room as the send path sees them. The room actor keeps it current from its
/// machine's actions: a connection is registered when the machine creates it, its state follows
/// the machine's `connection:*` events, and it is removed when the machine closes it or its
/// actor is gone.
pub struct RoomDirectory {
    room: String,
    peers: Mutex<HashMap<String, DirEntry>>,
    /// Labels opened room-wide (kept by the room actor with its machine's).
    labels: Mutex<std::collections::HashSet<String>>,
    /// Holds made so far (their numbers).
    holds: std::sync::atomic::AtomicU64,
}

impl RoomDirectory {
    /// An empty directory for `room`.
    pub fn new(room: &str) -> Arc<Self> {
        Arc::new(Self {
            room: room.to_string(),
            peers: Mutex::default(),
            labels: Mutex::default(),
            holds: Default::default(),
        })
    }

    /// Records that `label` was opened (or closed) room-wide.
    pub fn set_room_label(&self, label: &str, open: bool) {
        let mut l = lock(&self.labels);
        if open {
            l.insert(label.to_string());
        } else {
            l.remove(label);
        }
    }

    /// Whether `label` is open or being opened toward `to` (or any peer): room-wide, by a
    /// client's `open` to that peer, or by the remote (its channel exists or is coming).
    pub fn label_known(&self, label: &str, to: Option<&str>) -> bool {
        if lock(&self.labels).contains(label) {
            return true;
        }
        let peers = lock(&self.peers);
        match to {
            Some(p) => peers.get(p).is_some_and(|e| e.lanes.knows(label)),
            None => peers.values().any(|e| e.lanes.knows(label)),
        }
    }

    /// `NO_SUCH_CHANNEL` for a send on `label` that no target has, nor the room: it could
    /// only fail at every peer (PROTOCOL.md, `send`).
    fn check_label(
        &self,
        label: &str,
        targets: &[(String, Arc<PeerLanes>)],
    ) -> Result<(), DaemonError> {
        if lock(&self.labels).contains(label) || targets.iter().any(|(_, l)| l.knows(label)) {
            return Ok(());
        }
        Err(DaemonError::NoSuchChannel(format!(
            "{label:?} is open in room {:?}, by a client or a peer (open it first with \
             `open`); nothing was sent",
            self.room
        )))
    }

    /// Registers connection `conn` to `peer` (replacing an older one) and returns its lanes:
    /// the held lanes of the peer's failed connection, with the sends waiting on them, or
    /// `fresh` ones.
    pub fn register(
        &self,
        peer: &str,
        conn: ConnId,
        fresh: impl FnOnce() -> Arc<PeerLanes>,
    ) -> Arc<PeerLanes> {
        let mut peers = lock(&self.peers);
        let lanes = match peers.remove(peer) {
            Some(DirEntry {
                conn: None, lanes, ..
            }) if !lanes.is_closed() => lanes,
            _ => fresh(),
        };
        lanes.adopt(conn);
        let entry = DirEntry {
            conn: Some(conn),
            state: PeerState::New,
            lanes: lanes.clone(),
            hold: 0,
        };
        peers.insert(peer.to_string(), entry);
        lanes
    }

    /// The connection to `peer` failed and a new one will be tried (a browser re-invoked): its
    /// lanes stay, detached from the old connection, so sends to the peer wait for the new
    /// connection (until the hold ends) and then its channels (each up to `CHANNEL_WAIT`)
    /// instead of failing. Messages
    /// already written on the old channels fail with it. [`RoomDirectory::release`] ends the
    /// hold.
    /// Returns the hold's number for [`RoomDirectory::release`].
    pub fn hold(&self, peer: &str) -> Option<u64> {
        let mut peers = lock(&self.peers);
        let e = peers.get_mut(peer).filter(|e| e.conn.is_some())?;
        let hold = self
            .holds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        e.conn = None;
        e.state = PeerState::Failed;
        e.hold = hold;
        e.lanes.detach();
        Some(hold)
    }

    /// Ends hold number `hold` on `peer`'s lanes if no new connection adopted them: sends still
    /// waiting fail.
    pub fn release(&self, peer: &str, hold: u64) {
        let mut peers = lock(&self.peers);
        if peers
            .get(peer)
            .is_some_and(|e| e.conn.is_none() && e.hold == hold)
        {
            if let Some(e) = peers.remove(peer) {
                e.lanes.close();
            }
        }
    }

    /// Records the state of the current connection to `peer`.
    pub fn set_state(&self, peer: &str, state: PeerState) {
        if let Some(e) = lock(&self.peers).get_mut(peer) {
            e.state = state;
        }
    }

    /// Removes connection `conn`, if it is still the registered one of its peer; returns its
    /// lanes.
    pub fn unregister(&self, conn: ConnId) -> Option<Arc<PeerLanes>> {
        let mut peers = lock(&self.peers);
        let peer = peers.iter().find(|(_, e)| e.conn == Some(conn))?.0.clone();
        peers.remove(&peer).map(|e| e.lanes)
    }

    /// Removes every connection, closing its lanes (the room actor stopped).
    pub fn clear(&self) {
        for (_, e) in lock(&self.peers).drain() {
            e.lanes.close();
        }
    }

    /// Applies `f` to the lanes of `to`, or of every peer; `NO_SUCH_PEER` if `to` is unknown.
    /// Synchronous, so that an `open` has marked the label as coming before its reply goes out
    /// and a `send` right after it waits for the channel instead of failing.
    pub fn each_lanes(&self, to: Option<&str>, f: impl Fn(&PeerLanes)) -> Result<(), DaemonError> {
        let peers = lock(&self.peers);
        match to {
            Some(p) => f(&peers.get(p).ok_or_else(|| self.no_such_peer(p))?.lanes),
            None => peers.values().for_each(|e| f(&e.lanes)),
        }
        Ok(())
    }

    fn no_such_peer(&self, peer: &str) -> DaemonError {
        DaemonError::NoSuchPeer {
            room: self.room.clone(),
            peer: peer.to_string(),
        }
    }

    /// The peers a send goes to: the one named by `to`, or every connected peer. A peer that
    /// is being set up is waited for (its channel comes up with it); so is one that is
    /// disconnected (its path is being repaired, by an ICE restart between daemons, and the
    /// message waits on the channel; if the connection fails instead, the send fails with it);
    /// one whose connection failed or closed fails the send at once, unless the peer is
    /// [held](RoomDirectory::hold) for a new connection.
    pub fn targets(&self, to: Option<&str>) -> Result<Vec<(String, Arc<PeerLanes>)>, DaemonError> {
        let peers = lock(&self.peers);
        match to {
            Some(p) => {
                let e = peers.get(p).ok_or_else(|| self.no_such_peer(p))?;
                if e.conn.is_some() && matches!(e.state, PeerState::Failed | PeerState::Closed) {
                    return Err(DaemonError::SendFailed(format!(
                        "peer {p:?} is {} (its connection is lost); nothing was sent",
                        e.state.as_str()
                    )));
                }
                Ok(vec![(p.to_string(), e.lanes.clone())])
            }
            None => Ok(peers
                .iter()
                .filter(|(_, e)| matches!(e.state, PeerState::Connected | PeerState::Disconnected))
                .map(|(id, e)| (id.clone(), e.lanes.clone()))
                .collect()),
        }
    }
}

/// What a lane knows about its label's channel.
#[derive(Clone)]
pub enum Slot {
    /// The label is not open here: a send fails at once.
    Absent,
    /// The label is open but its channel does not exist yet (we create it, or on the polite
    /// side the remote does at our request, §6.4): a send waits up to `CHANNEL_WAIT`.
    Pending,
    /// The channel to write on.
    Ready(ChannelSender),
    /// The connection failed and a new one is coming (`RoomDirectory::hold`): a send waits
    /// for it, bounded by the hold rather than by `CHANNEL_WAIT`, then for its channel.
    Held,
    /// The connection is gone.
    Closed,
}

/// One item of a lane: a message, or a streamed message that holds the lane until its end.
pub enum LaneItem {
    /// A complete message.
    Message {
        /// The message.
        message: OutgoingMessage,
        /// Where progress goes.
        progress: Option<ProgressTo>,
        /// Resolved after the remote's ack (or the failure).
        result: OutcomeTo,
    },
    /// A streamed message.
    Stream {
        /// The message and its pieces.
        stream: OutgoingStream,
        /// Where progress goes.
        progress: Option<ProgressTo>,
        /// Resolved after the remote's ack (or the failure).
        result: OutcomeTo,
    },
}

impl LaneItem {
    fn fail(self, why: String) {
        let (LaneItem::Message { result, .. } | LaneItem::Stream { result, .. }) = self;
        result.send(Err(why));
    }
}

/// A queued item and when it was queued (its wait for a channel counts from then).
type Queued = (LaneItem, tokio::time::Instant);

struct Lane {
    slot: watch::Sender<Slot>,
    items: Option<mpsc::UnboundedSender<Queued>>,
}

/// The lanes of one connection, one per label, created when first used.
pub struct PeerLanes {
    lanes: Mutex<HashMap<String, Lane>>,
    closed: std::sync::atomic::AtomicBool,
    /// The connection whose actor sets the channels; `NO_OWNER` while held between two
    /// connections, so the old actor's last words (its stop closes "its" lanes) are ignored.
    owner: std::sync::atomic::AtomicU64,
}

/// [`PeerLanes::owner`] while no connection owns them.
const NO_OWNER: u64 = u64::MAX;

impl PeerLanes {
    /// Lanes for a new connection; `open` are the labels opened room-wide.
    pub fn new<'a>(open: impl IntoIterator<Item = &'a String>) -> Arc<Self> {
        let lanes = open
            .into_iter()
            .map(|l| {
                let lane = Lane {
                    slot: watch::Sender::new(Slot::Pending),
                    items: None,
                };
                (l.clone(), lane)
            })
            .collect();
        Arc::new(Self {
            lanes: Mutex::new(lanes),
            closed: Default::default(),
            owner: std::sync::atomic::AtomicU64::new(NO_OWNER),
        })
    }

    fn owned_by(&self, conn: ConnId) -> bool {
        self.owner.load(std::sync::atomic::Ordering::Acquire) == conn
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Connection `conn`'s actor sets the channels from now on; a label held for it waits for
    /// its channel (each send up to `CHANNEL_WAIT` from now).
    fn adopt(&self, conn: ConnId) {
        self.owner.store(conn, std::sync::atomic::Ordering::Release);
        for lane in lock(&self.lanes).values() {
            lane.slot.send_if_modified(|s| {
                let change = matches!(s, Slot::Held);
                if change {
                    *s = Slot::Pending;
                }
                change
            });
        }
    }

    /// No connection owns the lanes: every channel is gone, and a label that had (or expected)
    /// one waits for the next connection's.
    fn detach(&self) {
        self.owner
            .store(NO_OWNER, std::sync::atomic::Ordering::Release);
        for lane in lock(&self.lanes).values() {
            lane.slot.send_if_modified(|s| {
                let change = matches!(s, Slot::Ready(_) | Slot::Pending);
                if change {
                    *s = Slot::Held;
                }
                change
            });
        }
    }

    /// [`PeerLanes::set`] from connection `conn`'s actor: ignored once another owns the lanes.
    pub fn set_by(&self, conn: ConnId, label: &str, slot: Slot) {
        if self.owned_by(conn) {
            self.set(label, slot);
        }
    }

    /// [`PeerLanes::expect`] from connection `conn`'s actor.
    pub fn expect_by(&self, conn: ConnId, label: &str) {
        if self.owned_by(conn) {
            self.expect(label);
        }
    }

    /// [`PeerLanes::close`] from connection `conn`'s actor (it stops): ignored when the lanes
    /// were detached from it to wait for a new connection.
    pub fn close_by(&self, conn: ConnId) {
        if self.owned_by(conn) {
            self.close();
        }
    }

    fn with_lane<R>(&self, label: &str, f: impl FnOnce(&mut Lane) -> R) -> R {
        let mut lanes = lock(&self.lanes);
        let lane = lanes.entry(label.to_string()).or_insert_with(|| Lane {
            slot: watch::Sender::new(Slot::Absent),
            items: None,
        });
        f(lane)
    }

    /// Whether `label` has, or expects, a channel on this connection.
    pub fn knows(&self, label: &str) -> bool {
        lock(&self.lanes).get(label).is_some_and(|l| {
            matches!(
                *l.slot.borrow(),
                Slot::Pending | Slot::Ready(_) | Slot::Held
            )
        })
    }

    /// Sets what `label`'s lane writes to (see [`Slot`]).
    pub fn set(&self, label: &str, slot: Slot) {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        self.with_lane(label, |l| l.slot.send_replace(slot));
    }

    /// `label` was opened: its channel is coming, unless it is already here.
    pub fn expect(&self, label: &str) {
        self.with_lane(label, |l| {
            l.slot.send_if_modified(|s| {
                let change = matches!(s, Slot::Absent);
                if change {
                    *s = Slot::Pending;
                }
                change
            })
        });
    }

    /// `label`'s channel `gone` went away: later sends wait for a new one if the label is still
    /// `open`, else fail. A newer channel that replaced it stays.
    pub fn channel_gone(&self, label: &str, gone: &ChannelSender, open: bool) {
        self.with_lane(label, |l| {
            l.slot.send_if_modified(|s| {
                let change = matches!(s, Slot::Ready(c) if c.same_channel(gone));
                if change {
                    *s = if open { Slot::Pending } else { Slot::Absent };
                }
                change
            })
        });
    }

    /// The connection is gone: queued and later sends fail.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let mut lanes = lock(&self.lanes);
        for lane in lanes.values_mut() {
            lane.slot.send_replace(Slot::Closed);
            lane.items = None;
        }
    }

    /// Queues every message of `messages` on `label`'s lane, in order, behind everything queued
    /// there before; each one's outcome goes to its place in `places`.
    fn enqueue_all(
        &self,
        peer: &str,
        label: &str,
        messages: &[OutgoingMessage],
        progress: &Option<ProgressTo>,
        places: Vec<OutcomeTo>,
    ) {
        for (m, result) in messages.iter().zip(places) {
            let item = LaneItem::Message {
                message: m.clone(),
                progress: progress.clone(),
                result,
            };
            self.enqueue(peer, label, item);
        }
    }

    /// Queues `item` on `label`'s lane, behind everything queued there before.
    pub fn enqueue(&self, peer: &str, label: &str, item: LaneItem) {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return item.fail("peer connection closed".into());
        }
        let item = self.with_lane(label, |l| {
            let tx = l.items.get_or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                actix::spawn(run_lane(
                    peer.to_string(),
                    label.to_string(),
                    rx,
                    l.slot.subscribe(),
                ));
                tx
            });
            tx.send((item, tokio::time::Instant::now()))
                .err()
                .map(|e| e.0 .0)
        });
        if let Some(item) = item {
            item.fail("peer connection closed".into());
        }
    }
}

/// Small messages queued together go out together (`ChannelSender::send_messages`): at most
/// this many (the benchmark's raw pair batches the same way),
pub const BATCH_MESSAGES: usize = 64;
/// of at most this many bytes in all (a message above it goes alone). Well below the send
/// buffer's high-water mark, so a batch never waits for the buffer to empty.
pub const BATCH_BYTES: usize = 64 << 10;

/// A whole message that may share a batch, taken apart; anything else is handed back.
fn batchable(item: LaneItem) -> Result<BatchPart, LaneItem> {
    match item {
        LaneItem::Message {
            message,
            progress,
            result,
        } if message.data.len() <= BATCH_BYTES => Ok(((message, progress), result)),
        other => Err(other),
    }
}

type BatchPart = ((OutgoingMessage, Option<ProgressTo>), OutcomeTo);

/// Drains one lane: each item waits for the channel, then its frames go out before the next
/// item's; the acks are awaited beside the lane so they overlap with later messages. Small
/// messages already queued behind the first go out with it, in one write to the stack: a
/// client pipelining small messages otherwise made the daemon lock the connection and wake
/// its driver once per message.
async fn run_lane(
    peer: String,
    label: String,
    mut items: mpsc::UnboundedReceiver<Queued>,
    mut slot: watch::Receiver<Slot>,
) {
    // An item taken while filling a batch that could not join it goes next.
    let mut carried: Option<Queued> = None;
    loop {
        let (item, since) = match carried.take() {
            Some(q) => q,
            None => match items.recv().await {
                Some(q) => q,
                None => break,
            },
        };
        let ch = match channel(&mut slot, &label, since + CHANNEL_WAIT, CHANNEL_WAIT).await {
            Ok(ch) => ch,
            Err(e) => {
                item.fail(e);
                continue;
            }
        };
        let first = match batchable(item) {
            Ok(part) => part,
            Err(LaneItem::Stream {
                stream,
                progress,
                result,
            }) => {
                ch.send_stream(stream, progress, result).await;
                continue;
            }
            Err(LaneItem::Message {
                message,
                progress,
                result,
            }) => {
                ch.send_message(message, progress, result).await;
                continue;
            }
        };
        let mut bytes = first.0 .0.data.len();
        let mut batch = vec![first];
        while batch.len() < BATCH_MESSAGES {
            let Ok((next, at)) = items.try_recv() else {
                break;
            };
            match batchable(next) {
                Ok(part) if bytes + part.0 .0.data.len() <= BATCH_BYTES => {
                    bytes += part.0 .0.data.len();
                    batch.push(part);
                }
                Ok((message, result)) => {
                    let (message, progress) = message;
                    let item = LaneItem::Message {
                        message,
                        progress,
                        result,
                    };
                    carried = Some((item, at));
                    break;
                }
                Err(other) => {
                    carried = Some((other, at));
                    break;
                }
            }
        }
        ch.send_messages(batch).await;
    }
    tracing::trace!(%peer, %label, "lane closed");
}

/// The channel to write on: at once, once it exists (until `deadline`), or an error. While
/// the lanes are held for a new connection the deadline does not run: the hold's end closes
/// them, and a new connection gives the send `wait` again for its channel.
async fn channel(
    slot: &mut watch::Receiver<Slot>,
    label: &str,
    mut deadline: tokio::time::Instant,
    wait: Duration,
) -> Result<ChannelSender, String> {
    let missing = || format!("No channel found for label {label:?}");
    let closed = || "peer connection closed".to_string();
    loop {
        if matches!(*slot.borrow(), Slot::Held) {
            slot.wait_for(|s| !matches!(s, Slot::Held))
                .await
                .map_err(|_| closed())?;
            deadline = deadline.max(tokio::time::Instant::now() + wait);
        }
        let settled =
            tokio::time::timeout_at(deadline, slot.wait_for(|s| !matches!(s, Slot::Pending))).await;
        return match settled {
            Ok(Ok(s)) => match &*s {
                Slot::Ready(ch) => Ok(ch.clone()),
                Slot::Held => continue,
                Slot::Closed => Err(closed()),
                Slot::Absent | Slot::Pending => Err(missing()),
            },
            Ok(Err(_)) => Err(closed()),
            Err(_) => Err(missing()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(r: Result<ChannelSender, String>) -> String {
        match r {
            Ok(_) => "a channel".into(),
            Err(e) => e,
        }
    }

    /// A send on held lanes outlives its own wait: it waits for the new connection, then gets
    /// the wait again for that connection's channel.
    #[tokio::test]
    async fn a_held_send_waits_for_the_new_connection_then_for_its_channel() {
        let wait = Duration::from_millis(40);
        let (tx, mut rx) = watch::channel(Slot::Held);
        let start = tokio::time::Instant::now();
        let send = tokio::spawn(async move { channel(&mut rx, "chat", start + wait, wait).await });
        // The new connection comes long after the send's own deadline.
        tokio::time::sleep(wait * 3).await;
        assert!(!send.is_finished(), "a held send must not time out");
        tx.send_replace(Slot::Pending);
        let adopted = tokio::time::Instant::now();
        let e = err_of(send.await.expect("send task"));
        assert_eq!(e, "No channel found for label \"chat\"");
        assert!(
            adopted.elapsed() >= wait,
            "the new connection gets the whole wait"
        );
    }

    /// A hold that ends without a new connection fails its sends as closed, not as missing.
    #[tokio::test]
    async fn a_hold_that_ends_fails_its_sends_as_closed() {
        let wait = Duration::from_millis(40);
        let (tx, mut rx) = watch::channel(Slot::Held);
        let start = tokio::time::Instant::now();
        let send = tokio::spawn(async move { channel(&mut rx, "chat", start + wait, wait).await });
        tokio::time::sleep(wait * 2).await;
        tx.send_replace(Slot::Closed);
        assert_eq!(
            err_of(send.await.expect("send task")),
            "peer connection closed"
        );
    }
}
