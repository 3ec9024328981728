//! The sled engine: the only module that touches sled. [`Store`] implements each storage
//! trait of [`crate::store`] directly, one file per concept:
//!
//! - [`baselines`], baselines, their versions (history), the server-wide revision, activity;
//! - [`ingest`], a sensor batch in one transaction (the domain steps are
//!   `procguard_core::ingest::apply`'s), the stored-event count;
//! - [`log`], the record log with its cursors, group commit, the shared tail, and durable
//!   subscription cursors;
//! - [`incidents`], incidents, their grouping keys and the actions people take;
//! - [`sensors`], sensor records, health reports and silence;
//! - [`audit`], the audit log;
//! - [`retention`], retention of the log and rotation of the event-ID index;
//! - [`event_ids`], the event-ID idempotency index in two generations.
//!
//! **Durability.** Every write path ends in `Db::flush_async` (directly, or through the group
//! commit of [`log`]), which returns once sled has written and fsynced its log, before the
//! caller acknowledges anything to a sensor or an API client. Multi-tree updates go through one
//! sled transaction, so a crash leaves either all or none of an ingest batch.
//!
//! **Layout.** Trees and keys (each file documents its own):
//! - `baselines` (each baseline's definition, its elements' provenance and its tally, kept
//!   apart so that ingest writes only what changed), `history`, `activity`, `meta` keys
//!   `revision` and `baseline_layout`: see [`baselines`];
//! - `event_ids`, `event_ids.<n>`: see [`event_ids`];
//! - `sensors`, `sensor_health`: see [`sensors`];
//! - `audit`: see [`audit`];
//! - `records`, `subscriptions`, `meta` key `log_floor`: see [`log`] and [`retention`];
//! - `incidents`, `incident_keys`, `meta` keys `active_incidents\0…`: see [`incidents`];
//! - `meta` keys `events_ingested` and `executions_ingested`: see [`ingest`];
//! - `deviations`: no longer written; each deviation is stored once, in its log record (a
//!   database from before has the tree dropped at open).
//!
//! Values are JSON so that an operator can read a database with nothing but sled and jq.

mod audit;
mod baselines;
pub(super) mod event_ids;
mod incidents;
mod ingest;
mod log;
mod retention;
mod sensors;
#[cfg(test)]
mod tests;
mod writer;

use super::{Result, StoreError, DEFAULT_TAIL_RECORDS};
use serde::{de::DeserializeOwned, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// The sled engine behind [`crate::store::Storage`]. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    baselines: sled::Tree,
    history: sled::Tree,
    event_ids: event_ids::EventIds,
    sensors: sled::Tree,
    audit: sled::Tree,
    meta: sled::Tree,
    activity: sled::Tree,
    /// Record log, incidents, subscriptions, sensor health ([`log`]).
    log: log::Log,
    /// Serialises writers: ingest and API changes read-modify-write baselines. Bookkeeping
    /// batches give way to the rest ([`writer`]).
    writer: Arc<writer::Writer>,
    /// Most elements a baseline learns from sensor events (`--max-baseline-elements`).
    max_elements: usize,
    /// Bytes (keys plus values) in `audit`, for its retention by size.
    audit_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// Most bytes of history records one baseline keeps (see [`baselines::HISTORY_BYTES`]).
    history_bytes: u64,
    /// Sensor records kept (counted at open, kept by hellos and retention).
    sensor_count: Arc<std::sync::atomic::AtomicU64>,
    /// When retention last scanned the incidents (they are scanned at most every
    /// [`retention::INCIDENT_SCAN_EVERY`]).
    incidents_scanned: Arc<std::sync::Mutex<Option<SystemTime>>>,
    /// Bytes (keys plus values) ingest wrote to `baselines` and `history` since open.
    baseline_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// Active deviation incidents a workload container may have before further executables
    /// join its overflow incident (`--max-active-incidents-per-workload`).
    max_active_incidents: u64,
    /// Events lost since a sensor's previous health report that raise its sensor-blind
    /// incident (`--sensor-blind-losses`).
    blind_losses: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self::Engine(Box::new(e))
    }
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("domain types always serialise")
}

fn dec<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { tree, source })
}

fn be(bytes: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = bytes.len().min(8);
    a[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(a)
}

type TxError = ConflictableTransactionError<StoreError>;

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

fn abort(e: StoreError) -> TxError {
    ConflictableTransactionError::Abort(e)
}

impl Store {
    /// Opens (or creates) the database in `dir`, with the default shared tail.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_tail(dir, DEFAULT_TAIL_RECORDS)
    }

    /// Tests only: opens the store in `dir` again after a previous instance in this process was
    /// dropped. sled's flusher thread, and a flush task the log spawned, can hold the old
    /// instance's file lock for a moment after the drop; only that error is waited out, at
    /// most 5 s.
    #[cfg(test)]
    pub(crate) fn reopen_after_drop(dir: &Path, tail_records: usize) -> Self {
        for _ in 0..100 {
            match Self::open_with_tail(dir, tail_records) {
                Ok(s) => return s,
                Err(StoreError::Engine(e)) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("reopening the store: {e}"),
            }
        }
        panic!("the previous store instance never released its lock")
    }

    /// Opens (or creates) the database in `dir`; the shared tail of the record log holds
    /// `tail_records` records (0: subscribers always read sled).
    pub fn open_with_tail(dir: &Path, tail_records: usize) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let meta = db.open_tree("meta")?;
        // Each deviation is stored once, in its log record. Databases written before kept a
        // second copy in a `deviations` tree that nothing reads; it goes, whole, at open.
        if db.drop_tree("deviations")? {
            tracing::info!(
                message =
                    "Dropped the obsolete 'deviations' tree (deviations live in the record log)."
            );
        }
        let log = log::Log::open(&db, &meta, tail_records)?;
        incidents::recount_active(&log.incidents, &meta)?;
        let audit = db.open_tree("audit")?;
        let mut audit_bytes = 0u64;
        for kv in audit.iter() {
            let (k, v) = kv?;
            audit_bytes += (k.len() + v.len()) as u64;
        }
        let sensors = db.open_tree("sensors")?;
        let baselines = db.open_tree("baselines")?;
        // Whole baselines written before become definition and evidence, once.
        baselines::split_whole(&db, &baselines, &meta)?;
        Ok(Self {
            log,
            baselines,
            history: db.open_tree("history")?,
            event_ids: event_ids::EventIds::open(&db, &meta, SystemTime::now())?,
            history_bytes: baselines::HISTORY_BYTES,
            sensor_count: Arc::new(std::sync::atomic::AtomicU64::new(sensors.len() as u64)),
            sensors,
            incidents_scanned: Arc::default(),
            audit,
            audit_bytes: Arc::new(std::sync::atomic::AtomicU64::new(audit_bytes)),
            baseline_bytes: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            meta,
            activity: db.open_tree("activity")?,
            writer: Arc::default(),
            max_elements: procguard_core::baseline::DEFAULT_MAX_ELEMENTS,
            max_active_incidents: procguard_core::incident::DEFAULT_MAX_ACTIVE_PER_WORKLOAD,
            blind_losses: 1,
            db,
        })
    }

    /// Bytes (keys plus values) ingest wrote to `baselines` and `history` since open: what a
    /// batch costs the disk before sled's own overhead (for tests and diagnostics).
    pub fn ingest_baseline_bytes(&self) -> u64 {
        self.baseline_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Caps each baseline's history at `bytes` of records (default
    /// [`baselines::HISTORY_BYTES`]): its oldest versions go first.
    pub fn with_history_bytes(mut self, bytes: u64) -> Self {
        self.history_bytes = bytes;
        self
    }

    /// Caps learning from sensor events at `n` elements per baseline (`--max-baseline-elements`;
    /// what happens at the cap is decided in `procguard_core::baseline`).
    pub fn with_max_baseline_elements(mut self, n: usize) -> Self {
        self.max_elements = n;
        self
    }

    /// Caps each workload container's active deviation incidents at `n`
    /// (`--max-active-incidents-per-workload`): past it, executables without an incident of
    /// their own join the container's overflow incident.
    pub fn with_max_active_incidents(mut self, n: u64) -> Self {
        self.max_active_incidents = n;
        self
    }

    /// Raises a sensor's sensor-blind incident only for a health report that shows at least
    /// `n` events lost since its previous one (`--sensor-blind-losses`; default 1).
    pub fn with_blind_losses(mut self, n: u64) -> Self {
        self.blind_losses = n.max(1);
        self
    }
}
