//! The frames a client session has produced and its writer has not yet written, bounded per
//! client (`ipc.client_queue_limit`) and across all clients (`ipc.client_queue_budget`).
//!
//! A client that stops reading (a stalled `peerix events`) would otherwise make the daemon hold
//! everything it is sent. When a frame does not fit, the client that is furthest behind is cut:
//! its queued frames are dropped at once (the memory is given back before the new frame is
//! queued), it is sent one `error` frame `CLIENT_TOO_SLOW` after the frame in flight, and its
//! connection is closed within [`CUT_GRACE`]. Bytes count from when a frame is queued until it
//! is written or dropped, including the frame being written.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use peerix_ipc_proto::{coalesce_frames, encode_frame, DaemonMessage, ErrorBody, ErrorCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a cut client has to take the frame in flight and its `error` frame before the
/// connection is closed under it.
pub const CUT_GRACE: Duration = Duration::from_secs(1);

/// Bytes shared with something that outlives the write (a message part inside its event record),
/// written from where they are instead of being copied into a frame.
pub trait SharedBytes: Send + Sync + std::fmt::Debug {
    /// The bytes.
    fn bytes(&self) -> &[u8];
}

/// A frame on its way to a client: one buffer, or a header, shared bytes and a tail written
/// together with one vectored write (an `event` frame carrying a large message part: the part
/// is not copied into the frame, `event_frame.rs`).
#[derive(Debug)]
pub struct OutFrame {
    head: Vec<u8>,
    shared: Option<(Arc<dyn SharedBytes>, Vec<u8>)>,
}

impl OutFrame {
    /// A frame of `head`, then `shared`'s bytes, then `tail`.
    pub fn split(head: Vec<u8>, shared: Arc<dyn SharedBytes>, tail: Vec<u8>) -> Self {
        Self {
            head,
            shared: Some((shared, tail)),
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.head.len()
            + self
                .shared
                .as_ref()
                .map_or(0, |(s, tail)| s.bytes().len() + tail.len())
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one buffer, when it is one.
    pub(crate) fn into_whole(self) -> Result<Vec<u8>, Self> {
        match self.shared {
            None => Ok(self.head),
            Some(_) => Err(self),
        }
    }

    /// Its bytes from `pos` on, as head, shared bytes and tail (empty where there are none or
    /// where `pos` is past them): no allocation per write.
    pub(crate) fn slices_from(&self, pos: usize) -> [std::io::IoSlice<'_>; 3] {
        let (shared, tail): (&[u8], &[u8]) = match &self.shared {
            Some((s, tail)) => (s.bytes(), tail),
            None => (&[], &[]),
        };
        let mut skip = pos;
        [&self.head[..], shared, tail].map(|p| {
            let from = skip.min(p.len());
            skip -= from;
            std::io::IoSlice::new(&p[from..])
        })
    }
}

impl From<Vec<u8>> for OutFrame {
    fn from(head: Vec<u8>) -> Self {
        Self { head, shared: None }
    }
}

/// The bytes queued for all clients, against the global budget.
#[derive(Debug)]
pub struct QueueBudget {
    limit: u64,
    total: AtomicU64,
    queues: Mutex<HashMap<u64, Arc<ClientQueue>>>,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// The queue is closed (the session is ending or was cut).
    Closed,
    /// This client would hold more than `ipc.client_queue_limit`.
    ClientLimit {
        /// Bytes it would hold.
        queued: u64,
        /// The limit.
        limit: u64,
    },
    /// All clients together would hold more than `ipc.client_queue_budget`, and this client is
    /// the furthest behind.
    Budget {
        /// Bytes all clients would hold.
        total: u64,
        /// The budget.
        limit: u64,
    },
}

impl QueueBudget {
    /// A budget of `limit` bytes for all clients together.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            total: AtomicU64::new(0),
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// Bytes queued for all clients now.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The budget.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// A new queue for session `id`, counted in this budget until it is finished.
    pub fn queue(self: &Arc<Self>, id: u64, client_limit: u64) -> Arc<ClientQueue> {
        let q = Arc::new(ClientQueue {
            id,
            client_limit,
            budget: self.clone(),
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            cut: Notify::new(),
            drained: Notify::new(),
        });
        self.table().insert(id, q.clone());
        q
    }

    fn table(&self) -> MutexGuard<'_, HashMap<u64, Arc<ClientQueue>>> {
        // A poisoned table is still a valid map: the panicking thread was a session, whose
        // entry is removed by its writer.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `n` bytes from the budget if they fit.
    fn try_take(&self, n: u64) -> bool {
        self.total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t + n <= self.limit).then_some(t + n)
            })
            .is_ok()
    }

    fn give_back(&self, n: u64) {
        self.total.fetch_sub(n, Ordering::Relaxed);
    }

    /// Cuts clients that are further behind than `mine` bytes, the furthest first, until `n`
    /// more bytes fit. Whether they now fit.
    fn make_room(&self, me: u64, mine: u64, n: u64) -> bool {
        let mut others: Vec<(u64, Arc<ClientQueue>)> = self
            .table()
            .values()
            .filter(|q| q.id != me)
            .map(|q| (q.queued(), q.clone()))
            .filter(|(queued, _)| *queued > mine)
            .collect();
        others.sort_by_key(|(queued, _)| std::cmp::Reverse(*queued));
        for (_, q) in others {
            if self.try_take(n) {
                return true;
            }
            q.cut(PushError::Budget {
                total: self.total() + n,
                limit: self.limit,
            });
        }
        self.try_take(n)
    }
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<OutFrame>,
    /// Bytes of `frames` plus the frame being written.
    bytes: u64,
    closed: bool,
    /// Set when the client was cut: why, for its `error` frame.
    cut: Option<PushError>,
    finished: bool,
}

/// One client's frames on their way to its socket.
#[derive(Debug)]
pub struct ClientQueue {
    id: u64,
    client_limit: u64,
    budget: Arc<QueueBudget>,
    state: Mutex<State>,
    ready: Notify,
    cut: Notify,
    /// Woken as frames are written (a paused client waits to drain, `session_lag.rs`).
    drained: Notify,
}

impl ClientQueue {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes queued for this client, the frame being written included.
    pub fn queued(&self) -> u64 {
        self.state().bytes
    }

    /// Queues a frame, or says why not. On `ClientLimit`/`Budget` the caller cuts this client.
    pub fn push(&self, frame: impl Into<OutFrame>) -> Result<(), PushError> {
        let frame = frame.into();
        let n = frame.len() as u64;
        let mine = {
            let s = self.state();
            if s.closed {
                return Err(PushError::Closed);
            }
            if s.bytes + n > self.client_limit {
                return Err(PushError::ClientLimit {
                    queued: s.bytes + n,
                    limit: self.client_limit,
                });
            }
            s.bytes
        };
        if !self.budget.try_take(n) && !self.budget.make_room(self.id, mine, n) {
            return Err(PushError::Budget {
                total: self.budget.total() + n,
                limit: self.budget.limit,
            });
        }
        let mut s = self.state();
        if s.closed {
            drop(s);
            self.budget.give_back(n);
            return Err(PushError::Closed);
        }
        s.bytes += n;
        s.frames.push_back(frame);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// No more frames: the writer writes what is queued and ends.
    pub fn close(&self) {
        self.state().closed = true;
        self.ready.notify_one();
    }

    /// Drops every queued frame now (the frame being written stays counted until the writer is
    /// done with it) and makes the writer send `why` as an `error` frame and end.
    pub fn cut(&self, why: PushError) {
        let dropped: u64 = {
            let mut s = self.state();
            if s.cut.is_some() || s.finished {
                return;
            }
            let dropped = s.frames.drain(..).map(|f| f.len() as u64).sum();
            s.bytes -= dropped;
            s.closed = true;
            tracing::warn!(session = self.id, reason = ?why, dropped, "client is not reading; dropping its queued frames and disconnecting it");
            s.cut = Some(why);
            dropped
        };
        self.budget.give_back(dropped);
        give_memory_back(dropped);
        self.ready.notify_one();
        self.cut.notify_one();
        self.drained.notify_waiters();
    }

    /// Why the client was cut, if it was.
    pub fn cut_reason(&self) -> Option<PushError> {
        self.state().cut.clone()
    }

    /// The next frame to write; `None` once the queue is closed and empty.
    pub async fn next(&self) -> Option<OutFrame> {
        loop {
            {
                let mut s = self.state();
                if let Some(f) = s.frames.pop_front() {
                    return Some(f);
                }
                if s.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// The next frame if one is queued and shorter than `max_len` bytes, without waiting.
    fn try_next_small(&self, max_len: usize) -> Option<Vec<u8>> {
        let mut s = self.state();
        let f = s
            .frames
            .pop_front_if(|f| f.shared.is_none() && f.len() < max_len)?;
        f.into_whole().ok()
    }

    /// Resolves when the client is cut (at once if it already was).
    pub async fn cut_signal(&self) {
        loop {
            if self.state().cut.is_some() {
                return;
            }
            self.cut.notified().await;
        }
    }

    /// A frame of `n` bytes was written (or abandoned).
    pub fn written(&self, n: u64) {
        self.state().bytes -= n;
        self.budget.give_back(n);
        self.drained.notify_waiters();
    }

    /// Resolves once at most `n` bytes are queued (or the queue is closed).
    pub async fn drained_to(&self, n: u64) {
        loop {
            let woken = self.drained.notified();
            tokio::pin!(woken);
            // Registered before looking, so that a write in between still wakes us.
            woken.as_mut().enable();
            {
                let s = self.state();
                if s.bytes <= n || s.closed {
                    return;
                }
            }
            woken.await;
        }
    }

    /// The writer is gone: drop whatever is left, give its bytes back and leave the budget.
    pub fn finish(&self) {
        let left = {
            let mut s = self.state();
            s.frames.clear();
            s.closed = true;
            s.finished = true;
            std::mem::take(&mut s.bytes)
        };
        self.budget.give_back(left);
        self.budget.table().remove(&self.id);
        give_memory_back(left);
        self.drained.notify_waiters();
    }
}

/// Below this, freed queue memory is left to the allocator's own pace.
const GIVE_BACK_AT: u64 = 8 << 20;

// The daemon's global allocator (main.rs); linked through the `mimalloc` crate.
extern crate mimalloc as _;
extern "C" {
    fn mi_collect(force: bool);
}

/// mimalloc keeps freed pages for reuse and purges them only as it allocates again, so the
/// hundreds of MiB a cut or departed slow client held would stay in the daemon's RSS while it is
/// idle (measured: 592 MB of 594 MB still held 8 s after five stalled clients left). A large
/// release asks it to hand free pages back now.
fn give_memory_back(freed: u64) {
    if freed >= GIVE_BACK_AT {
        // SAFETY: mi_collect takes no pointers and may be called at any time from any thread;
        // when mimalloc is not the global allocator (in-process tests) it has nothing to do.
        unsafe { mi_collect(true) }
    }
}

impl PushError {
    /// The `error` frame a cut client gets, saying which bound it hit and what to do.
    pub fn error_frame(&self) -> Vec<u8> {
        let what = match self {
            PushError::Closed => "the connection was closing".to_string(),
            PushError::ClientLimit { queued, limit } => format!(
                "this client fell {queued} bytes behind, more than ipc.client_queue_limit \
                 ({limit})"
            ),
            PushError::Budget { total, limit } => format!(
                "all clients together fell {total} bytes behind, more than \
                 ipc.client_queue_budget ({limit}), and this client was the furthest behind"
            ),
        };
        let body = ErrorBody::new(
            ErrorCode::ClientTooSlow,
            format!(
                "{what}; its undelivered frames were dropped and the connection is closed. Read \
                 events as they come (or subscribe to fewer), then reconnect"
            ),
        );
        encode_frame(&DaemonMessage::Error(body)).unwrap_or_default()
    }
}

/// Writes the queue's frames to the client until the queue is closed and empty, or the client
/// is cut: then the write in flight (one frame, or small frames coalesced, see
/// [`coalesce_frames`]) is finished and the `error` frame written within [`CUT_GRACE`], or
/// abandoned. Gives every byte back to the budget when it ends.
pub async fn write_frames<W: AsyncWrite + Unpin>(mut w: W, q: &ClientQueue) {
    let mut deadline: Option<Instant> = None;
    'frames: while let Some(first) = q.next().await {
        let frame = match first.into_whole() {
            Ok(first) => OutFrame::from(coalesce_frames(first, |max| q.try_next_small(max))),
            Err(split) => split,
        };
        let len = frame.len();
        let mut pos = 0;
        while pos < len {
            let bufs = frame.slices_from(pos);
            let step = match deadline {
                None => tokio::select! {
                    r = w.write_vectored(&bufs) => r,
                    // A write cancelled here wrote nothing; the rest of the frame goes out below.
                    _ = q.cut_signal() => {
                        deadline = Some(Instant::now() + CUT_GRACE);
                        continue;
                    }
                },
                Some(d) => match tokio::time::timeout_at(d, w.write_vectored(&bufs)).await {
                    Ok(r) => r,
                    Err(_) => break 'frames,
                },
            };
            match step {
                Ok(0) | Err(_) => break 'frames,
                Ok(k) => pos += k,
            }
        }
        q.written(len as u64);
    }
    if let Some(why) = q.cut_reason() {
        let d = deadline.unwrap_or_else(|| Instant::now() + CUT_GRACE);
        let _ = tokio::time::timeout_at(d, w.write_all(&why.error_frame())).await;
    }
    let _ = w.flush().await;
    q.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerix_ipc_proto::{COALESCE_BYTES, COALESCE_FRAME};

    /// Records each `write` call, so that a test can count the system calls a writer makes.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.push(buf.to_vec());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Takes at most 1,000 bytes per write, across buffers: partial writes that end inside
    /// any of a split frame's three parts.
    #[derive(Default)]
    struct Dribble(Vec<u8>);

    impl AsyncWrite for Dribble {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(1000);
            self.0.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut left = 1000;
            for b in bufs {
                let n = b.len().min(left);
                self.0.extend_from_slice(&b[..n]);
                left -= n;
            }
            std::task::Poll::Ready(Ok(1000 - left))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[derive(Debug)]
    struct Shared(Vec<u8>);

    impl SharedBytes for Shared {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
    }

    /// Split frames go out whole and in queue order among one-buffer frames, however the
    /// writes cut them, and their bytes count against the queue until written.
    #[tokio::test]
    async fn split_frames_are_written_whole_and_in_order() {
        let q = QueueBudget::new(1 << 20).queue(1, 1 << 20);
        let part: Vec<u8> = (0..20_000).map(|i| (i % 241) as u8).collect();
        let mut want = Vec::new();
        for k in 0..3u8 {
            let small = vec![k; 300];
            want.extend_from_slice(&small);
            q.push(small).expect("fits");
            // Tails longer than a write, so that a write can end in any of the three parts.
            let (head, tail) = (vec![0xf0 + k; 1234], vec![0xe0 + k; 9_000 + usize::from(k)]);
            want.extend_from_slice(&head);
            want.extend_from_slice(&part);
            want.extend_from_slice(&tail);
            let frame = OutFrame::split(head, Arc::new(Shared(part.clone())), tail);
            assert_eq!(frame.len(), 1234 + part.len() + 9_000 + usize::from(k));
            q.push(frame).expect("fits");
        }
        assert_eq!(q.queued(), want.len() as u64);
        q.close();
        let mut w = Dribble::default();
        write_frames(&mut w, &q).await;
        assert_eq!(w.0.len(), want.len());
        assert!(w.0 == want, "bytes out of order or lost");
        assert_eq!(q.queued(), 0);
    }

    #[tokio::test]
    async fn small_queued_frames_go_out_in_one_write_and_large_ones_alone() {
        let b = QueueBudget::new(1 << 20);
        let q = b.queue(1, 1 << 20);
        for k in 0..10u8 {
            q.push(vec![k; 1000]).expect("fits");
        }
        q.push(vec![0xaa; 20_000]).expect("fits");
        q.push(vec![0xbb; 100]).expect("fits");
        q.close();
        let mut w = Writes::default();
        write_frames(&mut w, &q).await;
        let sizes: Vec<usize> = w.0.iter().map(Vec::len).collect();
        // Ten replies in one write; the large frame alone; the small one after it alone.
        assert_eq!(sizes, vec![10_000, 20_000, 100]);
        // In order, byte for byte.
        let all: Vec<u8> = w.0.concat();
        let want: Vec<u8> = (0..10u8)
            .flat_map(|k| vec![k; 1000])
            .chain(vec![0xaa; 20_000])
            .chain(vec![0xbb; 100])
            .collect();
        assert!(all == want, "frames reordered or corrupted");
        assert_eq!(b.total(), 0, "every written byte is given back");
    }

    #[tokio::test]
    async fn a_coalesced_write_stops_at_its_byte_limit() {
        let b = QueueBudget::new(1 << 20);
        let q = b.queue(1, 1 << 20);
        for _ in 0..100 {
            q.push(vec![7; 10_000]).expect("fits");
        }
        q.close();
        let mut w = Writes::default();
        write_frames(&mut w, &q).await;
        assert!(w
            .0
            .iter()
            .all(|f| f.len() <= COALESCE_BYTES + COALESCE_FRAME));
        assert_eq!(w.0.iter().map(Vec::len).sum::<usize>(), 1_000_000);
        assert!(w.0.len() < 20, "{} writes for 100 frames", w.0.len());
    }

    #[test]
    fn the_client_furthest_behind_is_cut_to_make_room() {
        let b = QueueBudget::new(100);
        let slow = b.queue(1, 80);
        let fast = b.queue(2, 80);
        slow.push(vec![0; 60]).expect("fits");
        fast.push(vec![0; 30]).expect("fits");
        assert_eq!(b.total(), 90);
        // 30 more do not fit: the slow client (60 > 30 behind) is cut, its bytes freed.
        fast.push(vec![0; 30]).expect("room made");
        assert_eq!(b.total(), 60);
        assert!(matches!(slow.cut_reason(), Some(PushError::Budget { .. })));
        assert_eq!(slow.push(vec![0; 1]), Err(PushError::Closed));
        // Per client.
        assert!(matches!(
            fast.push(vec![0; 30]),
            Err(PushError::ClientLimit { .. })
        ));
    }

    #[test]
    fn a_client_that_is_itself_furthest_behind_is_refused() {
        let b = QueueBudget::new(100);
        let slow = b.queue(1, 100);
        let fast = b.queue(2, 100);
        fast.push(vec![0; 20]).expect("fits");
        slow.push(vec![0; 70]).expect("fits");
        assert!(matches!(
            slow.push(vec![0; 20]),
            Err(PushError::Budget { .. })
        ));
        assert!(fast.cut_reason().is_none());
        assert_eq!(b.total(), 90);
    }

    #[test]
    fn finishing_gives_everything_back() {
        let b = QueueBudget::new(100);
        let q = b.queue(1, 100);
        q.push(vec![0; 40]).expect("fits");
        q.push(vec![0; 40]).expect("fits");
        q.finish();
        assert_eq!(b.total(), 0);
        assert!(b.table().is_empty());
    }
}
