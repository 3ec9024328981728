//! The store's writer lock: one writer at a time (ingest and API changes read, modify and
//! write baselines), handed on in two queues. A sensor batch of bulk bookkeeping (summaries
//! of allowed repeats, learning sightings) waits behind every *urgent* writer: a batch that
//! holds a deviation or an exec session, and every other writer (an API change, a sensor's
//! hello, retention). So when a fleet's summaries queue up, a deviation waits for the batch
//! being written, not for the queue (5,000 simulated nodes: deviation ack p99 13.6 s before,
//! issue 18).
//!
//! Bulk is not starved: after [`URGENT_RUN`] urgent writers in a row while bulk waits, the
//! oldest bulk writer goes next. A sensor that marks every batch urgent (a compromised node)
//! then gets at most that share ahead of the others' bulk, and the server judges every event
//! itself whatever its mark: the mark only orders the queue.
//!
//! Each queue is FIFO. A waiter that gives up (its future dropped) is skipped at hand-off.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Urgent writers handed the lock in a row, while bulk waits, before one bulk writer.
pub const URGENT_RUN: u32 = 16;

/// Which queue a writer waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// API changes, hellos, retention, and sensor batches with a deviation or exec session.
    Urgent,
    /// Sensor batches of bookkeeping only.
    Bulk,
}

/// The writer lock (see the module documentation).
#[derive(Debug, Default)]
pub struct Writer {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    held: bool,
    urgent: VecDeque<oneshot::Sender<()>>,
    bulk: VecDeque<oneshot::Sender<()>>,
    /// Urgent writers handed the lock in a row while bulk waited.
    run: u32,
}

/// Holds the writer lock until dropped.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct Guard {
    state: Arc<Mutex<State>>,
}

impl Writer {
    /// Waits for the lock as an urgent writer.
    pub async fn lock(&self) -> Guard {
        self.lock_as(Class::Urgent).await
    }

    /// Waits for the lock in `class`'s queue.
    pub async fn lock_as(&self, class: Class) -> Guard {
        let rx = {
            let mut s = self.state.lock().expect("writer state");
            if !s.held {
                s.held = true;
                return self.guard();
            }
            let (tx, rx) = oneshot::channel();
            match class {
                Class::Urgent => s.urgent.push_back(tx),
                Class::Bulk => s.bulk.push_back(tx),
            }
            rx
        };
        // Handed over by the last holder's drop: `held` stayed true for us. The sender is
        // only dropped unsent with the state, which outlives every waiter (it is in `self`).
        let mut rx = HandOff(Some(rx), self.state.clone());
        rx.wait().await;
        self.guard()
    }

    fn guard(&self) -> Guard {
        Guard {
            state: self.state.clone(),
        }
    }
}

/// A waiter's end of its hand-off. Dropped after the lock was handed to it but before it
/// noticed (its future cancelled in between), it hands the lock on, so it is never lost.
struct HandOff(Option<oneshot::Receiver<()>>, Arc<Mutex<State>>);

impl HandOff {
    async fn wait(&mut self) {
        if let Some(rx) = self.0.as_mut() {
            let _ = rx.await;
            self.0 = None;
        }
    }
}

impl Drop for HandOff {
    fn drop(&mut self) {
        if let Some(mut rx) = self.0.take() {
            // Cancelled. Hand-offs are sent under the state's mutex: under it, either the lock
            // was sent (it is ours to pass on) or no later one can reach this receiver.
            let handed = {
                let _s = self.1.lock().expect("writer state");
                let handed = rx.try_recv().is_ok();
                drop(rx);
                handed
            };
            if handed {
                release(&self.1);
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        release(&self.state);
    }
}

/// Hands the lock to the next live waiter (urgent first, but bulk after [`URGENT_RUN`] urgent
/// in a row), or frees it.
fn release(state: &Mutex<State>) {
    let mut s = state.lock().expect("writer state");
    loop {
        let bulk_turn = s.bulk.iter().any(|t| !t.is_closed())
            && (s.run >= URGENT_RUN || s.urgent.iter().all(|t| t.is_closed()));
        let next = if bulk_turn {
            s.run = 0;
            s.bulk.pop_front()
        } else if let Some(t) = s.urgent.pop_front() {
            if !s.bulk.is_empty() {
                s.run += 1;
            }
            Some(t)
        } else {
            None
        };
        match next {
            // Still `held`: ownership moves to the waiter.
            Some(t) => {
                if t.send(()).is_ok() {
                    return;
                }
            }
            None => {
                s.held = false;
                s.run = 0;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Who got the lock, in order, when `waiters` queue behind a holder that then lets go.
    async fn order(waiters: &[(Class, &'static str)]) -> Vec<&'static str> {
        let w = Arc::new(Writer::default());
        let held = w.lock().await;
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for &(class, name) in waiters {
            let (w, got) = (w.clone(), got.clone());
            tasks.push(tokio::spawn(async move {
                let _g = w.lock_as(class).await;
                got.lock().unwrap().push(name);
            }));
            // Queued in this order.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(got).unwrap().into_inner().unwrap()
    }

    #[tokio::test]
    async fn urgent_writers_go_before_bulk_queued_earlier() {
        use Class::*;
        assert_eq!(
            order(&[(Bulk, "b1"), (Bulk, "b2"), (Urgent, "u1"), (Urgent, "u2")]).await,
            ["u1", "u2", "b1", "b2"]
        );
    }

    #[tokio::test]
    async fn bulk_is_not_starved_by_a_run_of_urgent_writers() {
        let mut waiters = vec![(Class::Bulk, "b")];
        let names: Vec<&'static str> = (0..40)
            .map(|i| &*Box::leak(format!("u{i}").into_boxed_str()))
            .collect();
        waiters.extend(names.iter().map(|n| (Class::Urgent, *n)));
        let got = order(&waiters).await;
        let b = got.iter().position(|n| *n == "b").unwrap();
        assert_eq!(b, URGENT_RUN as usize, "{got:?}");
    }

    /// A waiter cancelled in the queue, or after the lock was handed to it, loses nobody the
    /// lock: the next waiter gets it.
    #[tokio::test]
    async fn a_cancelled_waiter_never_keeps_the_lock() {
        let w = Arc::new(Writer::default());
        let held = w.lock().await;
        let cancelled = {
            let w = w.clone();
            tokio::spawn(async move {
                let _g = w.lock_as(Class::Urgent).await;
                unreachable!("aborted before it could hold the lock");
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let next = {
            let w = w.clone();
            tokio::spawn(async move {
                let _g = w.lock_as(Class::Bulk).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        cancelled.abort();
        let _ = cancelled.await;
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the bulk waiter got the lock")
            .unwrap();
        // Free again.
        let _g = tokio::time::timeout(Duration::from_secs(5), w.lock())
            .await
            .expect("free");
    }
}
