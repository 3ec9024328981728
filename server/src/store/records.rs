//! The record log, incidents, durable subscriptions, sensor health, and group commit.
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
//! fallen behind the ring ([`Store::read_records`]); the ring drops its oldest records when full
//! and never waits for a reader, so a slow subscriber costs ingest nothing and loses nothing.
//!
//! **Retention.** [`Store::enforce_retention`] removes the oldest records by age and by total
//! size (the log plus the deviations stored under its cursors), in small batches without the
//! writer lock, after recording the new floor (the highest removed cursor) in `meta`; the
//! deviations at or under the floor go with them. It also rotates the event-ID index (see
//! [`super::event_ids`]). Incidents themselves are kept.
//!
//! Trees: `incidents` (big-endian incident number → JSON [`Incident`]), `incident_keys`
//! (grouping key → incident number of the latest incident for it), `records` (big-endian cursor
//! → JSON [`LogRecord`]), `subscriptions` (durable name → big-endian acked cursor),
//! `sensor_health` (node → JSON [`HealthRecord`]); `meta` key `log_floor`.

use super::{
    be, dec, enc, tx_err, AuditEntry, DeviationRecord, Result, SensorRecord, Store, StoreError,
    TxError,
};
use procguard_core::incident::{self, Action, Applied, Incident, IncidentFilter, Severity};
use procguard_core::Baseline;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Default number of records the shared tail holds (`--stream-tail-records`): about a second
/// of deviations at full ingest speed, a few MiB of memory.
pub const DEFAULT_TAIL_RECORDS: usize = 8_192;

/// Records removed per retention step; small enough that a step never holds sled busy for
/// long, so ingest does not notice retention running.
const RETENTION_STEP: usize = 512;

/// What a log record carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordBody {
    /// An incident after a change (without its samples: the deviation records carry them).
    Incident(Incident),
    /// A deviation as ingested, and the incident it was grouped into.
    Deviation {
        /// Incident number.
        incident_id: String,
        /// The deviation.
        deviation: DeviationRecord,
    },
    /// An audit record.
    Audit(AuditEntry),
}

/// One record of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogRecord {
    /// Position; contiguous and increasing.
    pub cursor: u64,
    /// When it was written.
    pub at: SystemTime,
    /// Severity of the incident (for deviations: of their incident); none for audit.
    pub severity: Option<Severity>,
    /// Namespace of the workload; empty for audit records and sensor findings.
    pub namespace: String,
    /// The record.
    pub body: RecordBody,
}

/// A durable record as subscriptions share it: the record, and a slot for its wire form that
/// the first subscription to send it fills (the store does not know the format), so a record
/// sent to ten subscribers is encoded once.
#[derive(Debug)]
pub struct SharedRecord {
    record: LogRecord,
    wire: std::sync::OnceLock<bytes::Bytes>,
}

impl SharedRecord {
    fn new(record: LogRecord) -> Self {
        Self {
            record,
            wire: std::sync::OnceLock::new(),
        }
    }

    /// The record's wire form, made by `encode` the first time it is asked for.
    pub fn wire(&self, encode: impl FnOnce(&LogRecord) -> bytes::Bytes) -> bytes::Bytes {
        self.wire.get_or_init(|| encode(&self.record)).clone()
    }
}

impl std::ops::Deref for SharedRecord {
    type Target = LogRecord;

    fn deref(&self) -> &LogRecord {
        &self.record
    }
}

/// Health counters last reported by a sensor, to turn cumulative counters into news.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HealthRecord {
    /// Events dropped since the sensor started.
    pub dropped: u64,
    /// Partial events since the sensor started.
    pub partial: u64,
    /// Kernel-side losses since the sensor started.
    pub kernel_losses: u64,
    /// The `last_seen` for which a silence incident was already raised.
    pub silence_flagged: Option<SystemTime>,
}

/// Health counters as a sensor reports them (cumulative since it started).
#[derive(Debug, Clone, Copy, Default)]
pub struct HealthReport {
    /// Events dropped.
    pub dropped: u64,
    /// Partial events.
    pub partial: u64,
    /// Kernel-side losses.
    pub kernel_losses: u64,
}

/// What a person's action on an incident did.
#[derive(Debug, Clone)]
pub struct ActionOutcome {
    /// The incident after the action.
    pub incident: Incident,
    /// Whether anything changed (false for a repeated action).
    pub changed: bool,
    /// For an allow that changed something: the baseline's new version.
    pub baseline: Option<Baseline>,
    /// For an allow that changed something: what it allowed (element and contents).
    pub allowed: Option<incident::Allowed>,
}

/// Why a subscription cannot start where it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfRange {
    /// The cursor asked for (records after it).
    pub after: u64,
    /// The oldest cursor still stored.
    pub oldest: u64,
}

/// Sizes of retention.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Records older than this are removed.
    pub max_age: Duration,
    /// Past this many bytes (keys plus values), the oldest records are removed.
    pub max_bytes: u64,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionOutcome {
    /// Records removed from the log.
    pub removed: u64,
    /// New floor (highest removed cursor).
    pub floor: u64,
    /// Stored deviations removed (with their log records).
    pub deviations_removed: u64,
    /// Whether the event-ID index started a new generation.
    pub event_ids_rotated: bool,
    /// Event IDs forgotten by that rotation.
    pub event_ids_removed: u64,
}

struct LogState {
    /// Next cursor to assign. Written only under the store's writer lock.
    next_cursor: AtomicU64,
    /// (commit generation, last cursor committed) — read by the flush leader.
    committed: std::sync::Mutex<(u64, u64)>,
    /// Highest commit generation known durable.
    flushed_gen: AtomicU64,
    /// Held by the flush leader.
    flush_lock: tokio::sync::Mutex<()>,
    /// Highest cursor known durable.
    durable: watch::Sender<u64>,
    /// Approximate bytes in `records`.
    bytes: AtomicU64,
    /// Next incident number. Written only under the store's writer lock. (sled's
    /// `generate_id` cannot be used: it deadlocks inside a transaction.)
    next_incident: AtomicU64,
    /// Highest cursor removed by retention (mirrors `meta` key `log_floor`).
    floor: AtomicU64,
    /// Records committed but not yet known durable, in cursor order. Pushed under the writer
    /// lock, drained by the flush leader. Bounded by what writers commit between two flushes:
    /// every writer that appends records waits for a flush before committing again.
    unflushed: std::sync::Mutex<VecDeque<Arc<SharedRecord>>>,
    /// The shared tail: the newest durable records, contiguous, at most `tail_capacity`;
    /// when full, the oldest record is dropped (its reader goes to sled).
    tail: RwLock<VecDeque<Arc<SharedRecord>>>,
    /// Capacity of `tail` in records (0 disables it: every read goes to sled).
    tail_capacity: usize,
}

/// The record-log side of the store.
#[derive(Clone)]
pub(crate) struct Log {
    pub(super) incidents: sled::Tree,
    pub(super) incident_keys: sled::Tree,
    pub(super) records: sled::Tree,
    subscriptions: sled::Tree,
    health: sled::Tree,
    state: Arc<LogState>,
}

/// Appends records inside one transaction; created per attempt, so a retried transaction
/// assigns the same cursors again.
pub(crate) struct Appender {
    next: u64,
    next_incident: u64,
    at: SystemTime,
    bytes: u64,
    /// Incidents changed in this transaction, written once at [`Appender::finish`].
    incidents: BTreeMap<u64, Incident>,
    /// Records appended, for the shared tail once durable.
    records: Vec<Arc<SharedRecord>>,
}

fn incident_number(id: &str) -> Result<u64> {
    id.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| StoreError::NotFound(format!("incident '{id}' (IDs are positive numbers)")))
}

fn abort(e: StoreError) -> TxError {
    ConflictableTransactionError::Abort(e)
}

impl Appender {
    fn push(
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

    /// Counts bytes written under this transaction's cursors outside `records` (deviations),
    /// towards the retention size.
    pub(super) fn count_bytes(&mut self, n: u64) {
        self.bytes += n;
    }

    /// The active incident `key` points to, *taken out* of this transaction's pending copies
    /// (the caller puts it back into `self.incidents`) or read from the tree. Taking avoids
    /// cloning an incident and its samples for every deviation of a batch.
    fn take_active(
        &mut self,
        (incidents, keys): (&TransactionalTree, &TransactionalTree),
        key: &str,
    ) -> std::result::Result<Option<Incident>, TxError> {
        let Some(v) = keys.get(key.as_bytes())? else {
            return Ok(None);
        };
        let n = be(&v);
        if let Some(pending) = self.incidents.get(&n) {
            return Ok(if pending.state.is_active() {
                self.incidents.remove(&n)
            } else {
                None
            });
        }
        Ok(match incidents.get(n.to_be_bytes())? {
            Some(v) => Some(dec::<Incident>("incidents", &v).map_err(abort)?)
                .filter(|i| i.state.is_active()),
            None => None,
        })
    }

    /// Reads an incident, preferring this transaction's pending copy.
    fn incident(
        &self,
        incidents: &TransactionalTree,
        n: u64,
    ) -> std::result::Result<Option<Incident>, TxError> {
        if let Some(i) = self.incidents.get(&n) {
            return Ok(Some(i.clone()));
        }
        match incidents.get(n.to_be_bytes())? {
            Some(v) => Ok(Some(dec("incidents", &v).map_err(abort)?)),
            None => Ok(None),
        }
    }

    /// Groups one deviation into its incident and appends the deviation record.
    pub(super) fn deviation(
        &mut self,
        (incidents, keys, records): (&TransactionalTree, &TransactionalTree, &TransactionalTree),
        rec: &DeviationRecord,
        baseline: &Baseline,
    ) -> std::result::Result<u64, TxError> {
        let p = &rec.process;
        let key = incident::group_key(&p.workload, &procguard_core::ElementKey::of(p));
        let current = self.take_active((incidents, keys), &key)?;
        let incident = match current {
            Some(mut i) => {
                i.record_deviation(&rec.event_id, p, baseline, rec.at);
                i
            }
            None => {
                let n = self.next_incident;
                self.next_incident += 1;
                keys.insert(key.as_bytes(), &n.to_be_bytes())?;
                Incident::from_deviation(n.to_string(), &rec.event_id, p, baseline, rec.at)
            }
        };
        let cursor = self.push(
            records,
            RecordBody::Deviation {
                incident_id: incident.id.clone(),
                deviation: rec.clone(),
            },
            Some(incident.severity),
            &p.workload.namespace,
        )?;
        self.incidents
            .insert(incident.id.parse().unwrap_or_default(), incident);
        Ok(cursor)
    }

    /// Raises or extends the "interactive session" incident of exec session `session`, one
    /// of whose processes is `p` (allowed or not: its deviations are incidents of their own).
    pub(super) fn exec_session(
        &mut self,
        (incidents, keys): (&TransactionalTree, &TransactionalTree),
        event_id: &str,
        p: &procguard_core::ProcessEvent,
        baseline: &Baseline,
        session: &str,
    ) -> std::result::Result<(), TxError> {
        let key = incident::session_key(&p.workload, session);
        let current = self.take_active((incidents, keys), &key)?;
        let incident = match current {
            Some(mut i) => {
                i.record_session_event(event_id, p, baseline, self.at);
                i
            }
            None => {
                let n = self.next_incident;
                self.next_incident += 1;
                keys.insert(key.as_bytes(), &n.to_be_bytes())?;
                Incident::exec_session(n.to_string(), event_id, p, baseline, self.at)
            }
        };
        self.incidents
            .insert(incident.id.parse().unwrap_or_default(), incident);
        Ok(())
    }

    /// Raises or extends the sensor-blind incident of `node`.
    fn blind(
        &mut self,
        (incidents, keys): (&TransactionalTree, &TransactionalTree),
        node: &str,
        reason: String,
    ) -> std::result::Result<(), TxError> {
        let key = incident::sensor_key(node);
        let current = self.take_active((incidents, keys), &key)?;
        let incident = match current {
            Some(mut i) => {
                i.record_blind(reason, self.at);
                i
            }
            None => {
                let n = self.next_incident;
                self.next_incident += 1;
                keys.insert(key.as_bytes(), &n.to_be_bytes())?;
                Incident::sensor_blind(n.to_string(), node, reason, self.at)
            }
        };
        self.incidents
            .insert(incident.id.parse().unwrap_or_default(), incident);
        Ok(())
    }

    /// Writes every incident changed in this transaction and appends one incident record
    /// each (a batch of a thousand identical deviations is one incident change, not a
    /// thousand). Returns the changed incidents.
    pub(super) fn finish(
        &mut self,
        incidents: &TransactionalTree,
        records: &TransactionalTree,
    ) -> std::result::Result<Vec<Incident>, TxError> {
        let mut out = Vec::new();
        for (n, mut i) in std::mem::take(&mut self.incidents) {
            incidents.insert(&n.to_be_bytes(), enc(&i))?;
            // The record goes without samples; clone the incident without them.
            let samples = std::mem::take(&mut i.samples);
            let slim = i.clone();
            i.samples = samples;
            let ns = i.namespace().to_string();
            self.push(records, RecordBody::Incident(slim), Some(i.severity), &ns)?;
            out.push(i);
        }
        Ok(out)
    }
}

impl Log {
    pub(super) fn open(
        db: &sled::Db,
        meta: &sled::Tree,
        deviations: &sled::Tree,
        tail_capacity: usize,
    ) -> Result<Self> {
        let records = db.open_tree("records")?;
        let incidents = db.open_tree("incidents")?;
        let next_incident = incidents.last()?.map(|(k, _)| be(&k)).unwrap_or(0) + 1;
        let floor = meta.get("log_floor")?.map(|v| be(&v)).unwrap_or(0);
        let last = records.last()?.map(|(k, _)| be(&k)).unwrap_or(floor);
        // The size budget covers the log and the deviations stored under its cursors.
        let mut bytes = 0u64;
        for kv in records.iter().chain(deviations.iter()) {
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
    pub(super) async fn wait_durable(&self, db: &sled::Db, gen: u64) -> Result<()> {
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

/// Where [`Store::read_records`] found its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    /// The shared in-memory tail.
    Tail,
    /// sled (the reader was behind the tail).
    Storage,
}

impl Store {
    /// Up to `limit` records with `after < cursor <= upto`, in cursor order: from the shared
    /// tail when it holds `after + 1`, otherwise from sled. A range removed by retention is
    /// [`OutOfRange`], never skipped, wherever the records would have come from.
    #[allow(clippy::type_complexity)]
    pub fn read_records(
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

    /// Records the shared tail holds now (for metrics and tests).
    pub fn tail_len(&self) -> usize {
        self.log.state.tail.read().expect("shared tail").len()
    }

    /// Highest cursor durable on disk; subscribers read up to it. The receiver wakes when it
    /// moves.
    pub fn durable_cursor(&self) -> watch::Receiver<u64> {
        self.log.state.durable.subscribe()
    }

    /// The highest cursor removed by retention (0 when none was).
    pub fn log_floor(&self) -> Result<u64> {
        Ok(self.log.state.floor.load(Ordering::SeqCst))
    }

    /// Checks that records after `after` are all still stored.
    pub fn check_cursor(&self, after: u64) -> Result<std::result::Result<(), OutOfRange>> {
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
    pub fn read_log(
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

    /// One incident, with samples.
    pub fn incident(&self, id: &str) -> Result<Incident> {
        let n = incident_number(id)?;
        match self.log.incidents.get(n.to_be_bytes())? {
            Some(v) => dec("incidents", &v),
            None => Err(StoreError::NotFound(format!("incident '{id}'"))),
        }
    }

    /// Incidents passing `filter` in ID order, after the incident numbered `after`.
    pub fn incidents(
        &self,
        filter: &IncidentFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Incident>, Option<String>)> {
        let start = match after {
            Some(a) => incident_number(a)? + 1,
            None => 0,
        };
        let mut out: Vec<Incident> = Vec::new();
        for kv in self.log.incidents.range(start.to_be_bytes()..) {
            let i: Incident = dec("incidents", &kv?.1)?;
            if filter.matches(&i) {
                if out.len() == limit {
                    let next = out.last().map(|i| i.id.clone());
                    return Ok((out, next));
                }
                out.push(i);
            }
        }
        Ok((out, None))
    }

    /// Applies a person's action to an incident, appends its record, and makes it durable.
    ///
    /// The check and the change happen in one transaction under the writer lock, so of
    /// concurrent actions on one incident exactly one order wins and every caller sees the
    /// outcome of that order. Repeating the action that led to the current state is a success
    /// that changes nothing and appends no record. `Allow` adds the executable to the
    /// workload's baseline as a new version in the *same* transaction as the incident change,
    /// so a baseline is never changed for an incident that another action closed meanwhile,
    /// and a doubled allow makes one version, not two.
    pub async fn incident_action(
        &self,
        id: &str,
        action: Action,
        actor: &str,
        reason: &str,
    ) -> Result<ActionOutcome> {
        let n = incident_number(id)?;
        let now = SystemTime::now();
        let w = self.writer.lock().await;
        let trees = (
            &self.log.incidents,
            &self.log.records,
            &self.baselines,
            &self.history,
            &self.meta,
        );
        let (outcome, mut appender) = trees
            .transaction(|(incidents, records, baselines, history, meta)| {
                let mut log = self.log.appender(now);
                let mut i = log
                    .incident(incidents, n)?
                    .ok_or_else(|| abort(StoreError::NotFound(format!("incident '{id}'"))))?;
                let applied = i
                    .apply(action, actor, reason, now)
                    .map_err(|e| abort(StoreError::Rejected(e.to_string())))?;
                if applied == Applied::Unchanged {
                    let outcome = ActionOutcome {
                        incident: i,
                        changed: false,
                        baseline: None,
                        allowed: None,
                    };
                    return Ok((outcome, log));
                }
                let mut allowed = None;
                let baseline = if action == Action::Allow {
                    let workload = i.workload.clone().ok_or_else(|| {
                        abort(StoreError::Rejected(format!(
                            "incident {id} has no workload to allow in"
                        )))
                    })?;
                    let mut b: Baseline = match baselines.get(workload.to_string().as_bytes())? {
                        Some(v) => dec("baselines", &v).map_err(abort)?,
                        None => {
                            return Err(abort(StoreError::NotFound(format!(
                                "baseline of incident {id}'s workload {workload}"
                            ))))
                        }
                    };
                    allowed = Some(
                        i.allow_in(&mut b, now)
                            .map_err(|e| abort(StoreError::Rejected(e)))?,
                    );
                    // Every change is a new version (as in `Store::change`).
                    b.version += 1;
                    let reason = format!("incident {id}: {reason}");
                    Some(super::write_version(
                        (baselines, history, meta),
                        b,
                        actor,
                        "allowed",
                        &reason,
                        now,
                    )?)
                } else {
                    None
                };
                log.incidents.insert(n, i);
                let mut changed = log.finish(incidents, records)?;
                let outcome = ActionOutcome {
                    incident: changed.pop().expect("one incident"),
                    changed: true,
                    baseline,
                    allowed,
                };
                Ok((outcome, log))
            })
            .map_err(tx_err)?;
        // Also for an unchanged incident: the state it reports may come from a concurrent
        // action that is committed but not yet on disk.
        let gen = self.log.committed(Some(&mut appender));
        drop(w);
        self.log.wait_durable(&self.db, gen).await?;
        Ok(outcome)
    }

    /// Appends an audit record to both the audit tree and the record log, durably.
    pub(super) async fn append_audit(&self, mut entry: AuditEntry) -> Result<u64> {
        entry.id = self.db.generate_id()? + 1;
        let w = self.writer.lock().await;
        let mut appender = (&self.audit, &self.log.records)
            .transaction(|(audit, records)| {
                let mut log = self.log.appender(entry.at);
                audit.insert(&entry.id.to_be_bytes(), enc(&entry))?;
                log.push(records, RecordBody::Audit(entry.clone()), None, "")?;
                Ok(log)
            })
            .map_err(tx_err)?;
        let gen = self.log.committed(Some(&mut appender));
        drop(w);
        self.log.wait_durable(&self.db, gen).await?;
        Ok(entry.id)
    }

    /// Records a sensor's health report. Events dropped (queue or spool full) or lost in the
    /// kernel since its previous report raise (or extend: one incident per episode, until a
    /// person resolves it) its sensor-blind incident, which is returned. Partial events are
    /// not blindness: the sensor saw the exec and said what it could not read; they are
    /// coverage (counted per baseline and in metrics), never this incident.
    pub async fn sensor_health(
        &self,
        node: &str,
        report: HealthReport,
        now: SystemTime,
    ) -> Result<Option<Incident>> {
        let w = self.writer.lock().await;
        let trees = (
            &self.log.health,
            &self.sensors,
            &self.log.incidents,
            &self.log.incident_keys,
            &self.log.records,
        );
        let (changed, mut appender) = trees
            .transaction(|(health, sensors, incidents, keys, records)| {
                let mut log = self.log.appender(now);
                let mut h: HealthRecord = match health.get(node)? {
                    Some(v) => dec("sensor_health", &v).map_err(abort)?,
                    None => HealthRecord::default(),
                };
                // Counters are cumulative since the sensor started; a smaller value means it
                // restarted, and the whole value is new.
                let delta = |new: u64, old: u64| if new >= old { new - old } else { new };
                let (d, k) = (
                    delta(report.dropped, h.dropped),
                    delta(report.kernel_losses, h.kernel_losses),
                );
                h.dropped = report.dropped;
                h.partial = report.partial;
                h.kernel_losses = report.kernel_losses;
                health.insert(node, enc(&h))?;
                let mut s: SensorRecord = match sensors.get(node)? {
                    Some(v) => dec("sensors", &v).map_err(abort)?,
                    None => SensorRecord::default(),
                };
                s.last_seen = Some(now);
                sensors.insert(node, enc(&s))?;
                if d + k > 0 {
                    let reason = format!(
                        "sensor on {node} lost events since its previous report: {d} dropped (queue or spool full), {k} lost in the kernel"
                    );
                    log.blind((incidents, keys), node, reason)?;
                }
                let changed = log.finish(incidents, records)?;
                Ok((changed, log))
            })
            .map_err(tx_err)?;
        let gen = self.log.committed(Some(&mut appender));
        drop(w);
        if !changed.is_empty() {
            self.log.wait_durable(&self.db, gen).await?;
        }
        Ok(changed.into_iter().next())
    }

    /// Raises a sensor-blind incident for every sensor silent for longer than `silence`
    /// (counting from `since` at the earliest, the server's start, so a server restart does
    /// not flag every sensor). Each silence is flagged once. Returns the incidents.
    pub async fn silent_sensors(
        &self,
        silence: Duration,
        since: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<Incident>> {
        let mut silent = Vec::new();
        for kv in self.sensors.iter() {
            let (k, v) = kv?;
            let rec: SensorRecord = dec("sensors", &v)?;
            let Some(last) = rec.last_seen else { continue };
            let from = last.max(since);
            if now.duration_since(from).unwrap_or_default() > silence {
                silent.push((String::from_utf8_lossy(&k).into_owned(), last));
            }
        }
        let mut out = Vec::new();
        for (node, last) in silent {
            let w = self.writer.lock().await;
            let trees = (
                &self.log.health,
                &self.sensors,
                &self.log.incidents,
                &self.log.incident_keys,
                &self.log.records,
            );
            let (changed, mut appender) = trees
                .transaction(|(health, sensors, incidents, keys, records)| {
                    let mut log = self.log.appender(now);
                    let mut h: HealthRecord = match health.get(&node)? {
                        Some(v) => dec("sensor_health", &v).map_err(abort)?,
                        None => HealthRecord::default(),
                    };
                    let current: Option<SensorRecord> = match sensors.get(&node)? {
                        Some(v) => Some(dec("sensors", &v).map_err(abort)?),
                        None => None,
                    };
                    // Re-checked inside the transaction: the sensor may have reported since.
                    if h.silence_flagged == Some(last)
                        || current.and_then(|c| c.last_seen) != Some(last)
                    {
                        return Ok((vec![], log));
                    }
                    h.silence_flagged = Some(last);
                    health.insert(node.as_str(), enc(&h))?;
                    let secs = now.duration_since(last).unwrap_or_default().as_secs();
                    let reason = format!(
                        "sensor on {node} has not reported for {secs}s (limit {}s)",
                        silence.as_secs()
                    );
                    log.blind((incidents, keys), &node, reason)?;
                    let changed = log.finish(incidents, records)?;
                    Ok((changed, log))
                })
                .map_err(tx_err)?;
            let gen = self.log.committed(Some(&mut appender));
            drop(w);
            if !changed.is_empty() {
                self.log.wait_durable(&self.db, gen).await?;
            }
            out.extend(changed);
        }
        Ok(out)
    }

    /// Stores the acknowledged cursor of a durable subscription; it never moves backwards,
    /// and cannot pass the newest durable record. Returns the stored cursor.
    pub async fn ack_cursor(&self, name: &str, cursor: u64) -> Result<u64> {
        let durable = *self.log.state.durable.borrow();
        if cursor > durable {
            return Err(StoreError::Rejected(format!(
                "cursor {cursor} is past the newest record ({durable}); acknowledge only cursors you received"
            )));
        }
        let stored = self
            .log
            .subscriptions
            .update_and_fetch(name, |old| {
                let old = old.map(be).unwrap_or(0);
                Some(old.max(cursor).to_be_bytes().to_vec())
            })?
            .map(|v| be(&v))
            .unwrap_or(cursor);
        let gen = {
            let _w = self.writer.lock().await;
            self.log.committed(None)
        };
        self.log.wait_durable(&self.db, gen).await?;
        Ok(stored)
    }

    /// The acknowledged cursor of a durable subscription, if it exists.
    pub fn get_cursor(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.log.subscriptions.get(name)?.map(|v| be(&v)))
    }

    /// Applies `retention`: removes the oldest records (and the deviations stored under their
    /// cursors) past its age or size, a few hundred at a time without the writer lock, and
    /// rotates the event-ID index (see [`super::event_ids`]). Returns what it removed.
    pub async fn enforce_retention(
        &self,
        retention: Retention,
        now: SystemTime,
    ) -> Result<RetentionOutcome> {
        let mut out = RetentionOutcome {
            floor: self.log_floor()?,
            ..RetentionOutcome::default()
        };
        let durable = *self.log.state.durable.borrow();
        loop {
            let mut batch = sled::Batch::default();
            let mut last = None;
            let mut freed = 0u64;
            let mut n = 0;
            for kv in self.log.records.iter() {
                let (k, v) = kv?;
                let cursor = be(&k);
                // Never remove what subscribers may not have been able to see yet.
                if cursor > durable || n == RETENTION_STEP {
                    break;
                }
                let rec: LogRecord = dec("records", &v)?;
                let old = now.duration_since(rec.at).unwrap_or_default() > retention.max_age;
                let over = self
                    .log
                    .state
                    .bytes
                    .load(Ordering::Relaxed)
                    .saturating_sub(freed)
                    > retention.max_bytes;
                if !(old || over) {
                    break;
                }
                freed += (k.len() + v.len()) as u64;
                if matches!(rec.body, RecordBody::Deviation { .. }) {
                    if let Some(d) = self.deviations.get(&k)? {
                        freed += (k.len() + d.len()) as u64;
                    }
                }
                batch.remove(k);
                last = Some(cursor);
                n += 1;
            }
            let Some(floor) = last else { break };
            // The floor is written first: a crash between the writes only makes a few stored
            // records look expired, never hides a gap. Deviations go last, and any left over
            // by a crash are removed by the next pass (everything at or under the floor goes).
            self.meta.insert("log_floor", &floor.to_be_bytes())?;
            self.log.state.floor.fetch_max(floor, Ordering::SeqCst);
            self.log.records.apply_batch(batch)?;
            out.deviations_removed += self.remove_deviations_upto(floor)?;
            self.log.state.bytes.fetch_sub(
                freed.min(self.log.state.bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            out.removed += n as u64;
            out.floor = floor;
            if n < RETENTION_STEP {
                break;
            }
            tokio::task::yield_now().await;
        }
        if out.removed == 0 {
            // Leftovers of an interrupted pass.
            out.deviations_removed += self.remove_deviations_upto(out.floor)?;
        }
        let rotation = {
            let _w = self.writer.lock().await;
            self.event_ids
                .rotate_if_due(retention.max_age, retention.max_bytes, now)?
        };
        if let Some(r) = rotation {
            if let Some(name) = &r.drop {
                self.event_ids.drop_generation(name)?;
            }
            if r.by_size {
                tracing::warn!(message = "The event-ID index reached half of --retention-bytes before --retention-age; replayed events are now recognised for a shorter time.", forgotten = r.removed);
            }
            out.event_ids_removed = r.removed;
            out.event_ids_rotated = true;
        }
        if out.removed > 0 || out.deviations_removed > 0 || out.event_ids_rotated {
            self.db.flush_async().await?;
        }
        Ok(out)
    }

    /// Removes every stored deviation whose cursor is at most `floor`; returns how many.
    fn remove_deviations_upto(&self, floor: u64) -> Result<u64> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for k in self.deviations.range(..=floor.to_be_bytes()).keys() {
            batch.remove(k?);
            n += 1;
        }
        if n > 0 {
            self.deviations.apply_batch(batch)?;
        }
        Ok(n)
    }

    /// Event IDs remembered for ingest idempotency (both generations).
    pub fn event_ids_remembered(&self) -> u64 {
        self.event_ids.len()
    }

    /// Approximate bytes held by the record log.
    pub fn log_bytes(&self) -> u64 {
        self.log.state.bytes.load(Ordering::Relaxed)
    }

    /// The newest cursor assigned so far (durable or not).
    pub fn last_cursor(&self) -> u64 {
        self.log.state.next_cursor.load(Ordering::SeqCst) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{event, web};

    /// Ingests event `id` again and returns how many of it were recognised as duplicates.
    async fn replay(s: &Store, id: &str) -> usize {
        s.ingest(
            "n1",
            &[event(id, 5, "/app")],
            &policies(),
            SystemTime::now(),
        )
        .await
        .unwrap()
        .duplicates
    }

    async fn enforced_store(dir: &std::path::Path) -> Store {
        enforced(Store::open(dir).unwrap()).await
    }

    /// `s` with web's baseline learned (one executable) and approved: enforcing.
    async fn enforced(s: Store) -> Store {
        s.ingest(
            "n1",
            &[event("learn", 1, "/app")],
            &procguard_core::policy::Policies::default(),
            SystemTime::now(),
        )
        .await
        .unwrap();
        s.change(&web(), "t", "approved", "", false, |b| {
            b.approve(None, SystemTime::now());
            Ok(())
        })
        .await
        .unwrap();
        s
    }

    /// Opens the store in `dir` again after the previous instance was dropped. sled's
    /// background threads can hold the old instance's file lock for a moment after the drop;
    /// only that error is waited out, at most 5 s.
    fn reopen(dir: &std::path::Path, tail: usize) -> Store {
        for _ in 0..100 {
            match Store::open_with_tail(dir, tail) {
                Ok(s) => return s,
                Err(StoreError::Engine(e)) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("reopening the store: {e}"),
            }
        }
        panic!("the previous store instance never released its lock")
    }

    fn all(s: &Store) -> Vec<LogRecord> {
        let upto = *s.durable_cursor().borrow();
        s.read_log(0, upto, usize::MAX).unwrap().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_batches_get_contiguous_cursors_and_one_incident_per_group() {
        let dir = tempfile::tempdir().unwrap();
        let s = enforced_store(dir.path()).await;
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for b in 0..10u64 {
                    let evs: Vec<_> = (0..5u64)
                        .map(|i| event(&format!("{t}-{b}-{i}"), 100 + b * 5 + i, "/bin/sh"))
                        .collect();
                    s.ingest(
                        &format!("node{t}"),
                        &evs,
                        &procguard_core::policy::Policies::default(),
                        SystemTime::now(),
                    )
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let recs = all(&s);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.cursor, i as u64 + 1, "cursors are contiguous");
        }
        let deviations = recs
            .iter()
            .filter(|r| matches!(r.body, RecordBody::Deviation { .. }))
            .count();
        assert_eq!(deviations, 200);
        let (incidents, _) = s.incidents(&IncidentFilter::default(), None, 10).unwrap();
        assert_eq!(incidents.len(), 1, "one executable in one container");
        assert_eq!(incidents[0].count, 200);
        assert_eq!(incidents[0].severity, Severity::High);
        assert_eq!(s.last_cursor(), recs.last().unwrap().cursor);
        // A replayed batch adds nothing.
        s.ingest(
            "node0",
            &[event("0-0-0", 100, "/bin/sh")],
            &procguard_core::policy::Policies::default(),
            SystemTime::now(),
        )
        .await
        .unwrap();
        assert_eq!(all(&s).len(), recs.len());
    }

    #[tokio::test]
    async fn cursors_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let last = {
            let s = enforced_store(dir.path()).await;
            s.ingest(
                "n1",
                &[event("d1", 2, "/bin/sh")],
                &procguard_core::policy::Policies::default(),
                SystemTime::now(),
            )
            .await
            .unwrap();
            s.last_cursor()
        };
        let s = reopen(dir.path(), DEFAULT_TAIL_RECORDS);
        assert_eq!(*s.durable_cursor().borrow(), last);
        s.ingest(
            "n1",
            &[event("d2", 3, "/bin/sh")],
            &procguard_core::policy::Policies::default(),
            SystemTime::now(),
        )
        .await
        .unwrap();
        let recs = all(&s);
        assert_eq!(recs[recs.len() - 2].cursor, last + 1);
    }

    #[tokio::test]
    async fn retention_makes_old_cursors_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let s = enforced_store(dir.path()).await;
        for i in 0..20u64 {
            s.ingest(
                "n1",
                &[event(&format!("d{i}"), 2 + i, "/bin/sh")],
                &procguard_core::policy::Policies::default(),
                SystemTime::now(),
            )
            .await
            .unwrap();
        }
        let total = all(&s).len() as u64;
        let keep = Retention {
            max_age: Duration::from_secs(3600),
            max_bytes: s.log_bytes() / 2,
        };
        let out = s.enforce_retention(keep, SystemTime::now()).await.unwrap();
        assert!(out.removed > 0 && out.removed < total, "{out:?}");
        assert!(s.log_bytes() <= keep.max_bytes);
        assert_eq!(
            s.check_cursor(0).unwrap(),
            Err(OutOfRange {
                after: 0,
                oldest: out.floor + 1
            })
        );
        assert_eq!(s.check_cursor(out.floor).unwrap(), Ok(()));
        let upto = *s.durable_cursor().borrow();
        assert!(s.read_log(0, upto, 10).unwrap().is_err());
        let rest = s.read_log(out.floor, upto, usize::MAX).unwrap().unwrap();
        assert_eq!(rest.len() as u64, total - out.removed);
        // By age: everything older than "now + 2h minus 1h" goes.
        let later = SystemTime::now() + Duration::from_secs(7200);
        s.enforce_retention(keep, later).await.unwrap();
        assert!(s.read_log(out.floor, upto, 10).unwrap().is_err());
    }

    #[tokio::test]
    async fn health_counters_raise_one_blind_incident_and_silence_is_flagged_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let t0 = SystemTime::now();
        let r = |dropped, partial| HealthReport {
            dropped,
            partial,
            kernel_losses: 0,
        };
        assert!(s.sensor_health("n1", r(0, 0), t0).await.unwrap().is_none());
        // Partial events are coverage, not blindness: no incident, however many.
        assert!(s.sensor_health("n1", r(0, 40), t0).await.unwrap().is_none());
        let i = s.sensor_health("n1", r(3, 40), t0).await.unwrap().unwrap();
        assert!(
            i.severity_reason.contains("3 dropped"),
            "{}",
            i.severity_reason
        );
        assert!(s.sensor_health("n1", r(3, 90), t0).await.unwrap().is_none());
        // A restarted sensor starts counting again from zero.
        let again = s.sensor_health("n1", r(1, 2), t0).await.unwrap().unwrap();
        assert_eq!(again.id, i.id);
        assert_eq!(again.count, 2);
        let later = t0 + Duration::from_secs(300);
        let silent = s
            .silent_sensors(Duration::from_secs(60), t0, later)
            .await
            .unwrap();
        assert_eq!(silent.len(), 1);
        assert!(silent[0].severity_reason.contains("has not reported"));
        assert!(s
            .silent_sensors(Duration::from_secs(60), t0, later)
            .await
            .unwrap()
            .is_empty());
        // A server that just started does not flag sensors it could not have heard from.
        assert!(s
            .silent_sensors(Duration::from_secs(60), later, later)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn actions_follow_the_lifecycle_and_land_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let s = enforced_store(dir.path()).await;
        s.ingest(
            "n1",
            &[event("d1", 2, "/usr/bin/id")],
            &procguard_core::policy::Policies::default(),
            SystemTime::now(),
        )
        .await
        .unwrap();
        let (list, _) = s.incidents(&IncidentFilter::default(), None, 10).unwrap();
        let id = list[0].id.clone();
        let i = s
            .incident_action(&id, Action::Acknowledge, "alice", "looking")
            .await
            .unwrap();
        assert!(i.changed);
        assert_eq!(
            i.incident.state,
            procguard_core::incident::IncidentState::Acknowledged
        );
        // A repeat succeeds, changes nothing and appends nothing.
        let cursor = s.last_cursor();
        let again = s
            .incident_action(&id, Action::Acknowledge, "bob", "")
            .await
            .unwrap();
        assert!(!again.changed);
        assert_eq!(again.incident, i.incident);
        assert_eq!(s.last_cursor(), cursor);
        s.incident_action(&id, Action::Resolve, "alice", "fine")
            .await
            .unwrap();
        let err = s
            .incident_action(&id, Action::Allow, "alice", "")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already resolved"), "{err}");
        assert!(matches!(
            s.incident_action("999", Action::Resolve, "a", "").await,
            Err(StoreError::NotFound(_))
        ));
        // The same executable again after resolution opens a new incident.
        s.ingest(
            "n1",
            &[event("d2", 3, "/usr/bin/id")],
            &procguard_core::policy::Policies::default(),
            SystemTime::now(),
        )
        .await
        .unwrap();
        let (list, _) = s.incidents(&IncidentFilter::default(), None, 10).unwrap();
        assert_eq!(list.len(), 2);
        let states: Vec<_> = all(&s)
            .into_iter()
            .filter_map(|r| match r.body {
                RecordBody::Incident(i) => Some((i.id, i.state.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            states,
            vec![
                (id.clone(), "open"),
                (id.clone(), "acknowledged"),
                (id, "resolved"),
                (list[1].id.clone(), "open")
            ]
        );
    }

    fn policies() -> procguard_core::policy::Policies {
        procguard_core::policy::Policies::default()
    }

    #[tokio::test]
    async fn an_exec_session_into_an_enforced_workload_is_one_incident_unless_recorded_only() {
        use procguard_core::incident::{IncidentFilter, IncidentKind};
        use procguard_core::policy::{Policies, PolicyFile};
        use procguard_core::ExecContext;
        let session = |id: &str, seq: u64, exe: &str, session: &str| {
            let mut e = event(id, seq, exe);
            e.process.context = ExecContext::ExecSession;
            e.process.exec_session = Some(session.into());
            e
        };
        let sessions = |s: &Store| -> Vec<Incident> {
            s.incidents(&IncidentFilter::default(), None, 100)
                .unwrap()
                .0
                .into_iter()
                .filter(|i| i.kind == IncidentKind::ExecSession)
                .collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let s = enforced(Store::open(dir.path()).unwrap()).await;
        // Two processes of one session (the second allowed: `/app` is in the baseline), then
        // another session: two incidents, the first counting both processes.
        let alert = policies();
        s.ingest(
            "n1",
            &[
                session("s1", 10, "/bin/sh", "n1/100/1"),
                session("s2", 11, "/app", "n1/100/1"),
                session("s3", 12, "/app", "n1/200/1"),
            ],
            &alert,
            SystemTime::now(),
        )
        .await
        .unwrap();
        let got = sessions(&s);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(got[0].count, 2);
        assert_eq!(got[0].exe_path, "/bin/sh");
        assert_eq!(got[1].count, 1);
        // The same workload under a record-only rule: no new incident.
        let file: PolicyFile = serde_yaml::from_str(
            "rules:\n- namespace: shop\n  mode: require-approval\n  exec_sessions: record-only\n",
        )
        .unwrap();
        let quiet = Policies::compile(Default::default(), &file).unwrap();
        assert_eq!(
            web().namespace,
            "shop",
            "the rule must match the test workload"
        );
        s.ingest(
            "n1",
            &[session("s4", 13, "/app", "n1/300/1")],
            &quiet,
            SystemTime::now(),
        )
        .await
        .unwrap();
        assert_eq!(sessions(&s).len(), 2);
    }

    /// Ingests `n` single-deviation batches; returns the last cursor.
    async fn deviations(s: &Store, from: u64, n: u64) -> u64 {
        for i in from..from + n {
            s.ingest(
                "n1",
                &[event(&format!("d{i}"), 10 + i, "/bin/sh")],
                &policies(),
                SystemTime::now(),
            )
            .await
            .unwrap();
        }
        s.last_cursor()
    }

    fn cursors(v: &[Arc<SharedRecord>]) -> Vec<u64> {
        v.iter().map(|r| r.cursor).collect()
    }

    #[tokio::test]
    async fn live_readers_take_the_shared_tail_and_laggards_read_sled_with_the_same_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = enforced(Store::open_with_tail(dir.path(), 16).unwrap()).await;
        let last = deviations(&s, 0, 30).await;
        assert_eq!(s.tail_len(), 16, "the tail is bounded");
        let upto = *s.durable_cursor().borrow();
        assert_eq!(upto, last);
        // At the live edge: from memory, contiguous, capped by `limit` and `upto`.
        let (recent, source) = s.read_records(last - 5, upto, 100).unwrap().unwrap();
        assert_eq!(source, ReadSource::Tail);
        assert_eq!(cursors(&recent), ((last - 4)..=last).collect::<Vec<_>>());
        let (two, _) = s.read_records(last - 5, last - 3, 100).unwrap().unwrap();
        assert_eq!(cursors(&two), vec![last - 4, last - 3]);
        // Behind the tail: from sled, and a reader walking forward switches to the tail.
        let mut after = 0;
        let mut sources = Vec::new();
        let mut seen = Vec::new();
        while after < upto {
            let (batch, source) = s.read_records(after, upto, 7).unwrap().unwrap();
            sources.push(source);
            seen.extend(cursors(&batch));
            after = batch.last().unwrap().cursor;
        }
        assert_eq!(seen, (1..=upto).collect::<Vec<_>>(), "no gap, no duplicate");
        assert_eq!(sources.first(), Some(&ReadSource::Storage));
        assert_eq!(sources.last(), Some(&ReadSource::Tail));
        // The tail holds what sled holds.
        let from_sled = s.read_log(last - 3, upto, 10).unwrap().unwrap();
        let (from_tail, _) = s.read_records(last - 3, upto, 10).unwrap().unwrap();
        assert_eq!(
            serde_json::to_string(&from_sled).unwrap(),
            serde_json::to_string(&from_tail.iter().map(|r| &r.record).collect::<Vec<_>>())
                .unwrap()
        );
        // Nothing past the durable cursor, even when asked.
        let (none, _) = s.read_records(upto, upto + 10, 10).unwrap().unwrap();
        assert!(none.is_empty());
        // A store without a tail reads everything from sled.
        drop(s);
        let s = reopen(dir.path(), 0);
        deviations(&s, 100, 2).await;
        let upto = *s.durable_cursor().borrow();
        let (b, source) = s.read_records(upto - 1, upto, 10).unwrap().unwrap();
        assert_eq!((b.len(), source), (1, ReadSource::Storage));
    }

    #[tokio::test]
    async fn retention_applies_to_the_tail_too_and_takes_deviations_with_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = enforced_store(dir.path()).await;
        let last = deviations(&s, 0, 20).await;
        assert_eq!(s.deviations(usize::MAX).unwrap().len(), 20);
        let keep = Retention {
            max_age: Duration::from_secs(3600),
            max_bytes: s.log_bytes() / 2,
        };
        let out = s.enforce_retention(keep, SystemTime::now()).await.unwrap();
        assert!(out.removed > 0, "{out:?}");
        assert!(out.deviations_removed > 0, "{out:?}");
        assert!(s.log_bytes() <= keep.max_bytes);
        // Every stored deviation left is still in the log.
        let left = s.deviations(usize::MAX).unwrap();
        assert_eq!(left.len() as u64, 20 - out.deviations_removed);
        let upto = *s.durable_cursor().borrow();
        let logged: Vec<String> = s
            .read_log(out.floor, upto, usize::MAX)
            .unwrap()
            .unwrap()
            .into_iter()
            .filter_map(|r| match r.body {
                RecordBody::Deviation { deviation, .. } => Some(deviation.event_id),
                _ => None,
            })
            .collect();
        assert_eq!(
            left.iter().map(|d| d.event_id.clone()).collect::<Vec<_>>(),
            logged
        );
        // The tail still holds records under the floor; a reader there is told, not served.
        assert!(s.tail_len() as u64 > last - out.floor);
        assert_eq!(
            s.read_records(out.floor - 1, upto, 10)
                .unwrap()
                .unwrap_err(),
            OutOfRange {
                after: out.floor - 1,
                oldest: out.floor + 1
            }
        );
        assert!(s.read_records(out.floor, upto, 10).unwrap().is_ok());
    }

    #[tokio::test]
    async fn event_ids_are_remembered_for_at_least_the_retention_age_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let s = enforced_store(dir.path()).await;
        let keep = Retention {
            max_age: Duration::from_secs(3600),
            max_bytes: 1 << 30,
        };
        let t0 = SystemTime::now();
        assert_eq!(replay(&s, "old").await, 0);
        // Younger than the age: nothing rotates.
        let out = s
            .enforce_retention(keep, t0 + Duration::from_secs(1800))
            .await
            .unwrap();
        assert!(!out.event_ids_rotated);
        // Past the age: a new generation; the old IDs are still recognised.
        let out = s
            .enforce_retention(keep, t0 + Duration::from_secs(3700))
            .await
            .unwrap();
        assert!(out.event_ids_rotated);
        assert_eq!(out.event_ids_removed, 0);
        assert_eq!(
            replay(&s, "old").await,
            1,
            "one age after: still a duplicate"
        );
        assert_eq!(replay(&s, "newer").await, 0);
        // Survives a restart: generations live in sled.
        let remembered = s.event_ids_remembered();
        drop(s);
        let s = reopen(dir.path(), DEFAULT_TAIL_RECORDS);
        assert_eq!(s.event_ids_remembered(), remembered);
        assert_eq!(replay(&s, "old").await, 1);
        // Another age later, the first generation is dropped and counted.
        let out = s
            .enforce_retention(keep, t0 + Duration::from_secs(7400))
            .await
            .unwrap();
        assert!(out.event_ids_rotated);
        assert!(out.event_ids_removed >= 2, "{out:?}");
        assert_eq!(
            replay(&s, "newer").await,
            1,
            "the younger generation is kept"
        );
        assert_eq!(
            replay(&s, "old").await,
            0,
            "past twice the age, an ID is forgotten"
        );
    }

    #[tokio::test]
    async fn event_ids_rotate_by_size_too() {
        let dir = tempfile::tempdir().unwrap();
        let s = enforced_store(dir.path()).await;
        for i in 0..40u64 {
            s.ingest(
                "n1",
                &[event(&format!("id-{i:04}"), 10 + i, "/app")],
                &policies(),
                SystemTime::now(),
            )
            .await
            .unwrap();
        }
        // 41 IDs of 7 bytes; half of 400 bytes is passed.
        let keep = Retention {
            max_age: Duration::from_secs(3600),
            max_bytes: 400,
        };
        let out = s.enforce_retention(keep, SystemTime::now()).await.unwrap();
        assert!(out.event_ids_rotated);
        let out = s.enforce_retention(keep, SystemTime::now()).await.unwrap();
        assert!(!out.event_ids_rotated, "the new generation is empty");
        assert_eq!(s.event_ids_remembered(), 41);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_actions_on_one_incident_have_one_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let s = enforced_store(dir.path()).await;
        deviations(&s, 0, 1).await;
        let (list, _) = s.incidents(&IncidentFilter::default(), None, 10).unwrap();
        let id = list[0].id.clone();
        let version = s.baseline(&web(), 0).unwrap().version;
        let before = s.last_cursor();
        let mut tasks = Vec::new();
        for (n, action) in [
            Action::Resolve,
            Action::Allow,
            Action::Resolve,
            Action::Allow,
        ]
        .into_iter()
        .enumerate()
        {
            let (s, id) = (s.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                (
                    action,
                    s.incident_action(&id, action, &format!("p{n}"), "").await,
                )
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let end = s.incident(&id).unwrap();
        let winner = if end.state == procguard_core::incident::IncidentState::Allowed {
            Action::Allow
        } else {
            Action::Resolve
        };
        for (action, r) in &results {
            match r {
                Ok(o) => {
                    assert_eq!(*action, winner, "only the winning action succeeds");
                    assert_eq!(o.incident.state, end.state);
                }
                Err(e) => {
                    assert_ne!(*action, winner);
                    assert!(e.to_string().contains("already"), "{e}");
                }
            }
        }
        let changed = results
            .iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(|o| o.changed))
            .count();
        assert_eq!(changed, 1, "one action changed the incident");
        assert_eq!(s.last_cursor(), before + 1, "one incident record");
        let b = s.baseline(&web(), 0).unwrap();
        let allowed = b.elements.contains_key(&end.element_key());
        assert_eq!(allowed, winner == Action::Allow);
        assert_eq!(
            b.version,
            version + u64::from(allowed),
            "at most one new version"
        );
    }
}
