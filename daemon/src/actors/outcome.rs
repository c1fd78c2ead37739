//! Where the outcome of a message sent to one peer goes (`Ok` once the remote acknowledged it,
//! or why it failed): to a task that waits for it, or straight into the request that sent it,
//! gathered with its other messages' and targets' outcomes, whose last one hands them all to the
//! request's `done` on the spot.
//!
//! Why gathered on the spot: a reply used to wait in a task of its own per request, woken
//! through a oneshot per message and target. With a client pipelining small messages those
//! tasks, their wakes and their polls were a noticeable part of the sending daemon's actor
//! thread (BENCHMARKS.md, session 20); now the channel actor that reads the ack (or the lane
//! that fails the send) calls `done` itself.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::outgoing::SendOutcome;
use super::send_path::lost;

/// Every target's outcomes of one request, in target order, each in message order.
pub type Outcomes = Vec<(String, Vec<SendOutcome>)>;

/// Where one outcome goes. Dropped without an outcome (its lane or channel went away), it
/// counts as lost ("peer connection closed").
pub struct OutcomeTo(Option<To>);

enum To {
    Task(oneshot::Sender<SendOutcome>),
    Gathered {
        gather: Arc<Gather>,
        /// Index into the gather's flat outcome list.
        slot: usize,
    },
}

impl OutcomeTo {
    /// The outcome goes to `tx` (a streamed send's feeder task waits for it).
    pub fn task(tx: oneshot::Sender<SendOutcome>) -> Self {
        Self(Some(To::Task(tx)))
    }

    /// Resolves it with `outcome`.
    pub fn send(mut self, outcome: SendOutcome) {
        if let Some(to) = self.0.take() {
            to.resolve(outcome);
        }
    }
}

impl Drop for OutcomeTo {
    fn drop(&mut self) {
        if let Some(to) = self.0.take() {
            to.resolve(Err(lost()));
        }
    }
}

impl To {
    fn resolve(self, outcome: SendOutcome) {
        match self {
            To::Task(tx) => {
                let _ = tx.send(outcome);
            }
            To::Gathered { gather, slot } => gather.put(slot, outcome),
        }
    }
}

type Done = Box<dyn FnOnce(Outcomes) + Send>;

/// The outcomes of one request: `messages` messages to each of its targets.
pub struct Gather {
    state: Mutex<State>,
}

struct State {
    peers: Vec<String>,
    messages: usize,
    /// Target-major: target `p`'s message `m` is at `p * messages + m`.
    outcomes: Vec<Option<SendOutcome>>,
    left: usize,
    done: Option<Done>,
}

impl Gather {
    /// Places for `messages` outcomes at each of `peers`, in target order (each in message
    /// order); `done` gets them all once the last is in (at once when there are none).
    pub fn start(
        peers: Vec<String>,
        messages: usize,
        done: impl FnOnce(Outcomes) + Send + 'static,
    ) -> Vec<Vec<OutcomeTo>> {
        let total = peers.len() * messages;
        let targets = peers.len();
        let gather = Arc::new(Gather {
            state: Mutex::new(State {
                peers,
                messages,
                outcomes: std::iter::repeat_with(|| None).take(total).collect(),
                left: total,
                done: Some(Box::new(done)),
            }),
        });
        if total == 0 {
            gather.update(|_| {});
        }
        (0..targets)
            .map(|p| {
                (0..messages)
                    .map(|m| {
                        OutcomeTo(Some(To::Gathered {
                            gather: gather.clone(),
                            slot: p * messages + m,
                        }))
                    })
                    .collect()
            })
            .collect()
    }

    fn put(&self, slot: usize, outcome: SendOutcome) {
        self.update(|s| {
            if let Some(place @ None) = s.outcomes.get_mut(slot) {
                *place = Some(outcome);
                s.left -= 1;
            }
        });
    }

    /// Applies `change` and, once every outcome is in, calls `done` with them all: one lock
    /// per outcome, and `done` outside it (it may send to an actor).
    fn update(&self, change: impl FnOnce(&mut State)) {
        let ready = match self.state.lock() {
            Ok(mut s) => {
                change(&mut s);
                s.take_if_done()
            }
            Err(_) => None,
        };
        if let Some((done, all)) = ready {
            done(all);
        }
    }
}

impl State {
    /// `done` and every target's outcomes, once all are in (and only once).
    fn take_if_done(&mut self) -> Option<(Done, Outcomes)> {
        if self.left != 0 {
            return None;
        }
        let done = self.done.take()?;
        let messages = self.messages.max(1);
        let mut outcomes = std::mem::take(&mut self.outcomes).into_iter();
        let all = std::mem::take(&mut self.peers)
            .into_iter()
            .map(|peer| {
                let mine = outcomes
                    .by_ref()
                    .take(messages)
                    .map(|o| o.unwrap_or_else(|| Err(lost())))
                    .collect();
                (peer, mine)
            })
            .collect();
        Some((done, all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect() -> (
        Arc<Mutex<Vec<Outcomes>>>,
        impl FnOnce(Outcomes) + Send + 'static,
    ) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        (got, move |o| g.lock().expect("lock").push(o))
    }

    #[test]
    fn done_gets_every_outcome_in_place_once_the_last_is_in() {
        let (got, done) = collect();
        let mut places = Gather::start(vec!["a".into(), "b".into()], 2, done);
        let b = places.pop().expect("b");
        let a = places.pop().expect("a");
        let mut b = b.into_iter();
        let mut a = a.into_iter();
        let (a0, a1, b0, b1) = (a.next(), a.next(), b.next(), b.next());
        b1.expect("b1").send(Err("no".into()));
        a0.expect("a0").send(Ok(()));
        b0.expect("b0").send(Ok(()));
        assert!(got.lock().expect("lock").is_empty(), "one is still out");
        a1.expect("a1").send(Ok(()));
        let got = got.lock().expect("lock");
        assert_eq!(
            *got,
            vec![vec![
                ("a".to_string(), vec![Ok(()), Ok(())]),
                ("b".to_string(), vec![Ok(()), Err("no".to_string())]),
            ]]
        );
    }

    #[test]
    fn a_place_dropped_unresolved_counts_as_lost() {
        let (got, done) = collect();
        let places = Gather::start(vec!["a".into()], 1, done);
        drop(places);
        assert_eq!(
            *got.lock().expect("lock"),
            vec![vec![("a".to_string(), vec![Err(lost())])]]
        );
    }

    #[test]
    fn no_targets_is_done_at_once() {
        let (got, done) = collect();
        assert!(Gather::start(Vec::new(), 3, done).is_empty());
        assert_eq!(*got.lock().expect("lock"), vec![Vec::new()]);
    }

    #[test]
    fn a_task_gets_its_outcome_or_lost() {
        let (tx, mut rx) = oneshot::channel();
        OutcomeTo::task(tx).send(Ok(()));
        assert_eq!(rx.try_recv().expect("sent"), Ok(()));
        let (tx, mut rx) = oneshot::channel();
        drop(OutcomeTo::task(tx));
        assert_eq!(rx.try_recv().expect("sent"), Err(lost()));
    }
}
