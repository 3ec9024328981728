//! The record log in sled: cursors, group commit, the shared tail, and durable subscription
//! cursors.
//!
//! **Record log.** Every incident change, deviation event and audit record is appended to the
//! `records` tree under a big-endian cursor. Cursors are assigned while the store's writer lock
//! is held, inside the same sled transaction as the change they describe, so they are
//! contiguous and increase in commit order: an acknowledged event always has its deviation
//! record and its incident. A subscriber that reads cursor `n` next expects `n + 1`; anything
//! else means retention removed records under it, and it is told so instead of skipping.
//!
//! **Durability and group commit.** Writers commit under the writer lock, release it, and then
//! wait in [`Log::wait_durable`] until a flush that *started after* their commit has finished.
//! One waiter at a time runs `flush_async` (the leader); every writer that committed before the
//! leader started is covered by it and returns without flushing again. Concurrent sensor batches
//! therefore share fsyncs instead of queueing one fsync each. After each flush the durable
//! cursor (a `watch` channel) moves forward; subscribers read only up to it, so no subscriber
//! ever sees a record that a crash could take back.
//!
//! **Shared tail.** A committed transaction hands the records it appended (already built, so
//! never decoded again) to the log's `unflushed` queue, in cursor order because commits are
//! serialised by the writer lock. The flush leader, once its flush has returned, moves every
//! record its flush covered into the tail: a bounded ring of the newest durable records
//! (`Arc<SharedRecord>`, contiguous cursors), and only then moves the durable cursor. Every
//! subscription reads from the ring while its cursor is inside it, and from sled when it has
//! fallen behind the ring (`read_records`); the ring drops its oldest records when full and
//! never waits for a reader, so a slow subscriber costs ingest nothing and loses nothing.
//!
//! Trees: `records` (big-endian cursor → JSON [`LogRecord`]), `subscriptions` (durable name →
//! big-endian acked cursor followed by the owner's name in UTF-8; a value of the cursor alone
//! was stored before subscriptions had owners and is claimed by the next identity to use it); `meta` key `log_floor` (see [`super::retention`]). The log also
//! holds the incident trees ([`super::incidents`]) and `sensor_health` ([`super::sensors`]),
//! which are written in the same transactions as their records.

use super::{be, dec, enc, Store, TxError};
use crate::store::{
    DurableSubscription, LogRecord, LogStore, OutOfRange, Owned, ReadSource, RecordBody, Result,
    SharedRecord, StoreError,
};
use procguard_core::incident::{Incident, Severity};
use sled::transaction::TransactionalTree;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use tokio::sync::watch;

/// The log's shared state: cursor and commit bookkeeping, the durable cursor, the tail.
pub(super) struct LogState {
    /// Next cursor to assign. Written only under the store's writer lock.
    pub(super) next_cursor: AtomicU64,
    /// (commit generation, last cursor committed) — read by the flush leader.
    pub(super) committed: std::sync::Mutex<(u64, u64)>,
    /// Highest commit generation known durable.
    pub(super) flushed_gen: AtomicU64,
    /// Held by the flush leader.
    pub(super) flush_lock: tokio::sync::Mutex<()>,
    /// Highest cursor known durable.
    pub(super) durable: watch::Sender<u64>,
    /// Approximate bytes in `records`.
    pub(super) bytes: AtomicU64,
    /// Next incident number. Written only under the store's writer lock. (sled's
    /// `generate_id` cannot be used: it deadlocks inside a transaction.)
    pub(super) next_incident: AtomicU64,
    /// Highest cursor removed by retention (mirrors `meta` key `log_floor`).
    pub(super) floor: AtomicU64,
    /// Records committed but not yet known durable, in cursor order. Pushed under the writer
    /// lock, drained by the flush leader. Bounded by what writers commit between two flushes:
    /// every writer that appends records waits for a flush before committing again.
    pub(super) unflushed: std::sync::Mutex<VecDeque<Arc<SharedRecord>>>,
    /// The shared tail: the newest durable records, contiguous, at most `tail_capacity`;
    /// when full, the oldest record is dropped (its reader goes to sled).
    pub(super) tail: RwLock<VecDeque<Arc<SharedRecord>>>,
    /// Capacity of `tail` in records (0 disables it: every read goes to sled).
    pub(super) tail_capacity: usize,
}

/// The record-log side of the store.
#[derive(Clone)]
pub(super) struct Log {
    pub(super) incidents: sled::Tree,
    pub(super) incident_keys: sled::Tree,
    pub(super) records: sled::Tree,
    pub(super) subscriptions: sled::Tree,
    pub(super) health: sled::Tree,
    pub(super) state: Arc<LogState>,
}

/// Appends records inside one transaction; created per attempt, so a retried transaction
/// assigns the same cursors again.
pub(super) struct Appender {
    pub(super) next: u64,
    pub(super) next_incident: u64,
    pub(super) at: SystemTime,
    pub(super) bytes: u64,
    /// Incidents changed in this transaction, written once at [`Appender::finish`].
    pub(super) incidents: BTreeMap<u64, Incident>,
    /// Records appended, for the shared tail once durable.
    pub(super) records: Vec<Arc<SharedRecord>>,
}

impl Appender {
    pub(super) fn push(
        &mut self,
        records: &TransactionalTree,
        body: RecordBody,
        severity: Option<Severity>,
        namespace: &str,
    ) -> std::result::Result<u64, TxError> {
        let cursor = self.next;
        self.next += 1;
        let rec = LogRecord {
            cursor,
            at: self.at,
            severity,
            namespace: namespace.to_string(),
            body,
        };
        let value = enc(&rec);
        self.bytes += value.len() as u64 + 8;
        records.insert(&cursor.to_be_bytes(), value)?;
        self.records.push(Arc::new(SharedRecord::new(rec)));
        Ok(cursor)
    }
}

impl Log {
    pub(super) fn open(db: &sled::Db, meta: &sled::Tree, tail_capacity: usize) -> Result<Self> {
        let records = db.open_tree("records")?;
        let incidents = db.open_tree("incidents")?;
        let next_incident = incidents.last()?.map(|(k, _)| be(&k)).unwrap_or(0) + 1;
        let floor = meta.get("log_floor")?.map(|v| be(&v)).unwrap_or(0);
        let last = records.last()?.map(|(k, _)| be(&k)).unwrap_or(floor);
        // The size budget covers the log (deviations included: each is stored once, there).
        let mut bytes = 0u64;
        for kv in records.iter() {
            let (k, v) = kv?;
            bytes += (k.len() + v.len()) as u64;
        }
        Ok(Self {
            incidents,
            incident_keys: db.open_tree("incident_keys")?,
            subscriptions: db.open_tree("subscriptions")?,
            health: db.open_tree("sensor_health")?,
            records,
            state: Arc::new(LogState {
                next_cursor: AtomicU64::new(last.max(floor) + 1),
                committed: std::sync::Mutex::new((0, last.max(floor))),
                flushed_gen: AtomicU64::new(0),
                flush_lock: tokio::sync::Mutex::new(()),
                durable: watch::channel(last.max(floor)).0,
                bytes: AtomicU64::new(bytes),
                next_incident: AtomicU64::new(next_incident),
                floor: AtomicU64::new(floor),
                unflushed: std::sync::Mutex::new(VecDeque::new()),
                tail: RwLock::new(VecDeque::with_capacity(tail_capacity.min(1 << 16))),
                tail_capacity,
            }),
        })
    }

    /// An appender for one transaction attempt. Call only under the writer lock.
    pub(super) fn appender(&self, at: SystemTime) -> Appender {
        Appender {
            next: self.state.next_cursor.load(Ordering::SeqCst),
            next_incident: self.state.next_incident.load(Ordering::SeqCst),
            at,
            bytes: 0,
            incidents: BTreeMap::new(),
            records: Vec::new(),
        }
    }

    /// Records a committed transaction (under the writer lock); returns its commit
    /// generation, to wait on with [`Log::wait_durable`].
    pub(super) fn committed(&self, appender: Option<&mut Appender>) -> u64 {
        if let Some(a) = appender {
            self.state.next_cursor.store(a.next, Ordering::SeqCst);
            self.state
                .next_incident
                .store(a.next_incident, Ordering::SeqCst);
            self.state.bytes.fetch_add(a.bytes, Ordering::Relaxed);
            if !a.records.is_empty() {
                self.state
                    .unflushed
                    .lock()
                    .expect("unflushed records")
                    .extend(a.records.drain(..));
            }
        }
        let mut c = self.state.committed.lock().expect("commit bookkeeping");
        c.0 += 1;
        c.1 = self.state.next_cursor.load(Ordering::SeqCst) - 1;
        c.0
    }

    /// Returns once commit generation `gen` is on disk, flushing if nobody else is.
    ///
    /// The wait runs in a task of its own. The flush leader holds `flush_lock` across the
    /// flush, and the caller's future is polled only when its caller polls it: a sensor
    /// stream's loop polls its pending batches only between its other awaits, and one stream
    /// waiting to send to a sensor that does not read would otherwise hold the lock, and with it
    /// every other stream's acknowledgements (seen with 10,000 simulated sensors, issue 18).
    pub(super) async fn wait_durable(&self, db: &sled::Db, gen: u64) -> Result<()> {
        if self.state.flushed_gen.load(Ordering::SeqCst) >= gen {
            return Ok(());
        }
        let (log, db) = (self.clone(), db.clone());
        tokio::spawn(async move { log.flush_until(&db, gen).await })
            .await
            .map_err(|e| StoreError::Engine(Box::new(e)))?
    }

    /// [`Log::wait_durable`]'s wait, in the task that cannot be left unpolled.
    async fn flush_until(&self, db: &sled::Db, gen: u64) -> Result<()> {
        loop {
            if self.state.flushed_gen.load(Ordering::SeqCst) >= gen {
                return Ok(());
            }
            let _leader = self.state.flush_lock.lock().await;
            if self.state.flushed_gen.load(Ordering::SeqCst) >= gen {
                return Ok(());
            }
            // Everything committed up to here is covered by the flush that starts now.
            let (target_gen, target_cursor) =
                *self.state.committed.lock().expect("commit bookkeeping");
            db.flush_async().await?;
            // The records are durable: into the shared tail first, then the durable cursor
            // moves, so a subscriber woken by it finds them in the tail (or, if the tail
            // already dropped them, in sled).
            self.publish(target_cursor);
            self.state
                .flushed_gen
                .fetch_max(target_gen, Ordering::SeqCst);
            self.state.durable.send_if_modified(|d| {
                let moved = target_cursor > *d;
                *d = (*d).max(target_cursor);
                moved
            });
        }
    }
}

impl Log {
    /// Moves every unflushed record up to `upto` (now durable) into the shared tail.
    fn publish(&self, upto: u64) {
        let mut ready = Vec::new();
        {
            let mut q = self.state.unflushed.lock().expect("unflushed records");
            while q.front().is_some_and(|r| r.cursor <= upto) {
                ready.extend(q.pop_front());
            }
        }
        let cap = self.state.tail_capacity;
        if ready.is_empty() || cap == 0 {
            return;
        }
        let mut tail = self.state.tail.write().expect("shared tail");
        for r in ready {
            if tail.back().is_some_and(|b| b.cursor + 1 != r.cursor) {
                // Cannot happen (cursors are contiguous in commit order); if it did, a tail
                // with a hole would hand out a gap, so start it afresh and let readers use sled.
                tracing::error!(
                    message = "Shared tail saw a cursor out of order; cleared it.",
                    last = tail.back().map(|b| b.cursor),
                    next = r.cursor
                );
                tail.clear();
            }
            if tail.len() == cap {
                tail.pop_front();
            }
            tail.push_back(r);
        }
    }

    /// Up to `limit` records with `after < cursor <= upto` from the shared tail, or `None`
    /// when the tail does not hold `after + 1`.
    fn read_tail(&self, after: u64, upto: u64, limit: usize) -> Option<Vec<Arc<SharedRecord>>> {
        let tail = self.state.tail.read().expect("shared tail");
        let first = tail.front()?.cursor;
        let last = tail.back()?.cursor;
        if after + 1 < first || after + 1 > last {
            return None;
        }
        let start = (after + 1 - first) as usize;
        let n = (upto.min(last) - after).min(limit as u64) as usize;
        Some(tail.range(start..start + n).cloned().collect())
    }
}

#[tonic::async_trait]
impl LogStore for Store {
    /// Up to `limit` records with `after < cursor <= upto`, in cursor order: from the shared
    /// tail when it holds `after + 1`, otherwise from sled. A range removed by retention is
    /// [`OutOfRange`], never skipped, wherever the records would have come from.
    fn read_records(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<std::result::Result<(Vec<Arc<SharedRecord>>, ReadSource), OutOfRange>> {
        let floor = self.log.state.floor.load(Ordering::SeqCst);
        if after < floor {
            return Ok(Err(OutOfRange {
                after,
                oldest: floor + 1,
            }));
        }
        if after >= upto {
            return Ok(Ok((vec![], ReadSource::Tail)));
        }
        if let Some(recs) = self.log.read_tail(after, upto, limit) {
            return Ok(Ok((recs, ReadSource::Tail)));
        }
        Ok(self.read_log(after, upto, limit)?.map(|v| {
            let shared = v
                .into_iter()
                .map(|r| Arc::new(SharedRecord::new(r)))
                .collect();
            (shared, ReadSource::Storage)
        }))
    }

    /// Highest cursor durable on disk; subscribers read up to it. The receiver wakes when it
    /// moves.
    fn durable_cursor(&self) -> watch::Receiver<u64> {
        self.log.state.durable.subscribe()
    }

    /// The highest cursor removed by retention (0 when none was).
    fn log_floor(&self) -> Result<u64> {
        Ok(self.log.state.floor.load(Ordering::SeqCst))
    }

    /// Checks that records after `after` are all still stored.
    fn check_cursor(&self, after: u64) -> Result<std::result::Result<(), OutOfRange>> {
        let floor = self.log_floor()?;
        Ok(if after < floor {
            Err(OutOfRange {
                after,
                oldest: floor + 1,
            })
        } else {
            Ok(())
        })
    }

    /// Up to `limit` records with `after < cursor <= upto`, in cursor order. A record missing
    /// at the start of the range (removed by retention while the reader was behind) is
    /// reported as [`OutOfRange`], never skipped.
    fn read_log(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<std::result::Result<Vec<LogRecord>, OutOfRange>> {
        if after >= upto {
            return Ok(Ok(vec![]));
        }
        let mut out = Vec::new();
        let range = self
            .log
            .records
            .range((after + 1).to_be_bytes()..=upto.to_be_bytes())
            .take(limit);
        for (expect, kv) in (after + 1..).zip(range) {
            let (k, v) = kv?;
            if be(&k) != expect {
                return Ok(Err(OutOfRange {
                    after,
                    oldest: be(&k),
                }));
            }
            out.push(dec("records", &v)?);
        }
        if out.is_empty() {
            // Everything up to `upto` was removed while the reader was behind.
            let floor = self.log_floor()?;
            if floor > after {
                return Ok(Err(OutOfRange {
                    after,
                    oldest: floor + 1,
                }));
            }
        }
        Ok(Ok(out))
    }

    /// and cannot pass the newest durable record. Returns the stored cursor.
    async fn ack_cursor(&self, name: &str, owner: &str, cursor: u64) -> Result<Owned<u64>> {
        let durable = *self.log.state.durable.borrow();
        if cursor > durable {
            return Err(StoreError::Rejected(format!(
                "cursor {cursor} is past the newest record ({durable}); acknowledge only cursors you received"
            )));
        }
        let Some(stored) = self.update_subscription(name, owner, |old| old.max(cursor))? else {
            return Ok(Owned::Other);
        };
        self.wait_subscription_durable().await?;
        Ok(Owned::Mine(stored))
    }

    async fn claim_subscription(&self, name: &str, owner: &str) -> Result<Owned<u64>> {
        if let Some(s) = self.get_subscription(name)? {
            match s.owner.as_deref() {
                Some(o) if o == owner => return Ok(Owned::Mine(s.cursor)),
                Some(_) => return Ok(Owned::Other),
                None => {}
            }
        }
        let Some(stored) = self.update_subscription(name, owner, |old| old)? else {
            return Ok(Owned::Other);
        };
        self.wait_subscription_durable().await?;
        Ok(Owned::Mine(stored))
    }

    fn get_subscription(&self, name: &str) -> Result<Option<DurableSubscription>> {
        Ok(self.log.subscriptions.get(name)?.map(|v| subscription(&v)))
    }

    /// Flushes everything to disk (used at shutdown).
    async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }
}

fn encode_subscription(cursor: u64, owner: Option<&str>) -> Vec<u8> {
    let mut v = cursor.to_be_bytes().to_vec();
    v.extend_from_slice(owner.unwrap_or_default().as_bytes());
    v
}

/// A stored subscription value: the big-endian cursor, then the owner (absent in values
/// stored before subscriptions had owners).
fn subscription(v: &[u8]) -> DurableSubscription {
    let owner = v.get(8..).filter(|o| !o.is_empty());
    DurableSubscription {
        cursor: be(v),
        owner: owner.map(|o| String::from_utf8_lossy(o).into_owned()),
    }
}

impl Store {
    /// Sets subscription `name`'s cursor to `next(old)` if `owner` owns it, or makes it
    /// `owner`'s if it does not exist or has no owner, atomically; returns the stored cursor,
    /// or `None` (and changes nothing) if another identity owns it.
    fn update_subscription(
        &self,
        name: &str,
        owner: &str,
        next: impl Fn(u64) -> u64,
    ) -> Result<Option<u64>> {
        let mut mine = true;
        let stored = self.log.subscriptions.update_and_fetch(name, |old| {
            let old = old.map(subscription).unwrap_or(DurableSubscription {
                cursor: 0,
                owner: None,
            });
            mine = old.owner.as_deref().is_none_or(|o| o == owner);
            if !mine {
                return Some(encode_subscription(old.cursor, old.owner.as_deref()));
            }
            Some(encode_subscription(next(old.cursor), Some(owner)))
        })?;
        Ok(mine.then(|| stored.map(|v| be(&v)).unwrap_or(0)))
    }

    /// Waits until a subscription write is durable (a flush that started after it).
    async fn wait_subscription_durable(&self) -> Result<()> {
        let gen = {
            let _w = self.writer.lock().await;
            self.log.committed(None)
        };
        self.log.wait_durable(&self.db, gen).await
    }

    /// Records the shared tail holds now (for metrics and tests).
    pub fn tail_len(&self) -> usize {
        self.log.state.tail.read().expect("shared tail").len()
    }

    /// The newest cursor assigned so far (durable or not).
    pub fn last_cursor(&self) -> u64 {
        self.log.state.next_cursor.load(Ordering::SeqCst) - 1
    }
}
