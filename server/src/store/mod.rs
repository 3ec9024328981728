//! The storage adapter: the only module that touches sled.
//!
//! **Interface.** The domain code sees storage only through the [`Storage`] trait
//! ([`engine`]), as a [`SharedStorage`]; [`Store`] is its sled engine, and the conformance
//! suite (`conformance.rs`) is what any other engine must pass.
//!
//! **Durability.** Every write path ends in `Db::flush_async`, which returns once sled has
//! written and fsynced its log, before the caller acknowledges anything to a sensor or an API
//! client. Multi-tree updates go through one sled transaction, so a crash leaves either all or
//! none of an ingest batch (baseline changes, history, event IDs, the sensor's acked sequence).
//!
//! **Layout.** Trees and keys:
//! - `baselines`: workload text form → JSON [`Baseline`] (current version).
//! - `history`: workload text form, NUL, big-endian version → JSON [`VersionRecord`].
//! - `event_ids`, `event_ids.<n>`: sensor event ID → empty (ingest idempotency), in two
//!   generations that retention rotates; see [`event_ids`].
//! - `sensors`: node name → JSON [`SensorRecord`].
//! - `deviations`: big-endian record-log cursor → JSON [`DeviationRecord`]; retention removes
//!   an entry together with the log record of the same cursor.
//! - `audit`: big-endian id → JSON [`AuditEntry`].
//! - `meta`: `revision` → big-endian u64, the server-wide baseline revision;
//!   `events_ingested` → big-endian u64, events stored over the database's lifetime.
//! - `activity`: workload text form, NUL, big-endian day number, NUL, element → JSON
//!   [`ActivityRecord`]: how often each executable ran per day, for dry runs.
//! - the record log, incidents, subscriptions and sensor health: see [`records`], which also
//!   owns group commit (writers wait for a shared flush after releasing the writer lock).
//!
//! Values are JSON so that an operator can read a database with nothing but sled and jq.

use procguard_core::baseline::Observation;
use procguard_core::policy::{LabelSelector, Policies};
use procguard_core::{Baseline, BaselineState, ElementKey, ProcessEvent, WorkloadIdentity};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Mutex;

#[cfg(test)]
mod conformance;
mod engine;
mod event_ids;
mod records;
pub use engine::{BaselineChange, SharedStorage, Storage};
pub use records::{
    ActionOutcome, HealthRecord, HealthReport, LogRecord, OutOfRange, ReadSource, RecordBody,
    Retention, RetentionOutcome, SharedRecord, DEFAULT_TAIL_RECORDS,
};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (I/O, or its own consistency checks).
    #[error("storage: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored value did not decode.
    #[error("stored value in '{tree}' is corrupt: {source}")]
    Corrupt {
        /// Tree.
        tree: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The addressed baseline does not exist.
    #[error("no baseline for workload '{0}'")]
    NotFound(String),
    /// The change was refused by domain rules.
    #[error("{0}")]
    Rejected(String),
    /// The caller's expected version is stale.
    #[error("baseline '{id}' is at version {actual}, not {expected}; review it again")]
    Conflict {
        /// Workload.
        id: String,
        /// Version the caller expected.
        expected: u64,
        /// Current version.
        actual: u64,
    },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self::Engine(Box::new(e))
    }
}

/// Result alias for this module.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One entry of a baseline's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Version number.
    pub version: u64,
    /// Who.
    pub actor: String,
    /// When.
    pub at: SystemTime,
    /// What.
    pub action: String,
    /// Why.
    pub reason: String,
    /// The baseline after the change.
    pub snapshot: Baseline,
}

/// What the server knows of a sensor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SensorRecord {
    /// Highest sequence number durably ingested.
    pub acked_sequence: u64,
    /// Sensor process ID of the last stream.
    pub boot_id: String,
    /// Version of the last stream.
    pub version: String,
    /// Last time anything arrived.
    pub last_seen: Option<SystemTime>,
}

/// A deviation as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviationRecord {
    /// Sensor event ID.
    pub event_id: String,
    /// When the server stored it.
    pub at: SystemTime,
    /// Baseline version it violated.
    pub baseline_version: u64,
    /// State of the baseline at the time.
    pub baseline_state: BaselineState,
    /// The process.
    pub process: ProcessEvent,
    /// Its content verdict against the baseline it deviated from (`None` in records stored
    /// before verdicts existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<procguard_core::ContentCheck>,
}

/// Outcome of an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditOutcome {
    /// Allowed and succeeded.
    Ok,
    /// Refused.
    Denied,
    /// Allowed but failed.
    Failed,
}

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log (set on append).
    pub id: u64,
    /// When.
    pub at: SystemTime,
    /// Who.
    pub actor: String,
    /// Role held.
    pub role: String,
    /// Method or internal action.
    pub action: String,
    /// What it addressed.
    pub target: String,
    /// Outcome.
    pub result: AuditOutcome,
    /// Detail.
    pub detail: String,
    /// Peer address.
    pub peer: String,
}

/// One event of an ingest batch.
#[derive(Debug, Clone)]
pub struct IngestEvent {
    /// Sensor-assigned unique ID.
    pub event_id: String,
    /// Sensor-assigned sequence.
    pub sequence: u64,
    /// The process.
    pub process: ProcessEvent,
}

/// A committed, not necessarily durable, write; see [`Store::wait_durable`].
#[derive(Debug, Clone, Copy)]
pub struct Commit(u64);

/// What an ingest batch did.
#[derive(Debug, Default)]
pub struct IngestOutcome {
    /// Highest sequence now durable for the sensor.
    pub acked_sequence: u64,
    /// Events applied (not duplicates).
    pub applied: usize,
    /// Duplicates skipped.
    pub duplicates: usize,
    /// Baselines whose element set or state changed.
    pub changed: Vec<Baseline>,
    /// Deviations recorded.
    pub deviations: Vec<DeviationRecord>,
    /// Incidents opened or changed by these deviations.
    pub incidents: Vec<procguard_core::incident::Incident>,
    /// Of the deviations, those refused because their baseline reached its element limit.
    pub refused: usize,
    /// Events whose pod the sensor did not know in time (`pod_metadata` missing): stored as
    /// ingested, never learned into or matched against a baseline (see
    /// [`procguard_core::ProcessEvent::awaits_pod_metadata`]).
    pub unattributed: usize,
    /// Events the sensor sent partial (a field it could not read): coverage, counted in each
    /// baseline's [`procguard_core::baseline::Coverage`], never an incident of their own.
    pub partial: usize,
    /// Of those, execs whose applet or script could not be read while everything read was
    /// allowed ([`procguard_core::baseline::Observation::Partial`]).
    pub unread: usize,
}

/// Filters for listing baselines.
#[derive(Debug, Clone, Default)]
pub struct BaselineFilter {
    /// Cluster.
    pub cluster: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Workload name.
    pub workload_name: Option<String>,
    /// Kind.
    pub kind: Option<procguard_core::WorkloadKind>,
    /// State.
    pub state: Option<BaselineState>,
    /// Label selector.
    pub labels: LabelSelector,
}

impl BaselineFilter {
    /// Whether `b` passes the filter.
    pub fn matches(&self, b: &Baseline) -> bool {
        let w = &b.workload;
        self.cluster.as_ref().is_none_or(|c| *c == w.cluster)
            && self.namespace.as_ref().is_none_or(|n| *n == w.namespace)
            && self
                .workload_name
                .as_ref()
                .is_none_or(|n| *n == w.workload_name)
            && self.kind.is_none_or(|k| k == w.kind)
            && self.state.is_none_or(|s| s == b.state)
            && self.labels.matches(&b.labels)
    }
}

/// The sled engine behind [`Storage`]. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    baselines: sled::Tree,
    history: sled::Tree,
    event_ids: event_ids::EventIds,
    sensors: sled::Tree,
    deviations: sled::Tree,
    audit: sled::Tree,
    meta: sled::Tree,
    activity: sled::Tree,
    /// Record log, incidents, subscriptions, sensor health ([`records`]).
    log: records::Log,
    /// Serialises writers: ingest and API changes read-modify-write baselines.
    writer: Arc<Mutex<()>>,
    /// Most elements a baseline learns from sensor events (`--max-baseline-elements`).
    max_elements: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("domain types always serialise")
}

fn dec<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { tree, source })
}

/// How often one element ran in one workload on one day.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActivityRecord {
    /// Runs.
    pub count: u64,
    /// Last run.
    pub last_seen: Option<SystemTime>,
    /// Runs per origin, so that a dry run sees what ran from outside the image (records
    /// written before origins have none: their runs are of unknown origin).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub origins: BTreeMap<procguard_core::Origin, u64>,
}

impl ActivityRecord {
    fn add(mut self, now: SystemTime, ev: &ProcessEvent) -> Self {
        self.count += 1;
        self.last_seen = Some(self.last_seen.map_or(now, |t| t.max(now)));
        *self
            .origins
            .entry(ev.drift().unwrap_or(ev.origin))
            .or_default() += 1;
        self
    }
}

/// Days since the epoch.
pub fn day_of(t: SystemTime) -> u32 {
    (t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 86_400) as u32
}

fn activity_prefix(id: &WorkloadIdentity) -> Vec<u8> {
    let mut k = id.to_string().into_bytes();
    k.push(0);
    k
}

fn activity_key(id: &WorkloadIdentity, now: SystemTime, el: &ElementKey) -> Vec<u8> {
    let mut k = activity_prefix(id);
    k.extend_from_slice(&day_of(now).to_be_bytes());
    k.push(0);
    k.extend_from_slice(el.exe_path.as_bytes());
    k.push(0);
    k.extend_from_slice(el.script_path.as_bytes());
    // Keys written before applets existed end here; an applet-less element still does.
    if !el.applet.is_empty() {
        k.push(0);
        k.extend_from_slice(el.applet.as_bytes());
    }
    k
}

fn history_key(id: &WorkloadIdentity, version: u64) -> Vec<u8> {
    let mut k = id.to_string().into_bytes();
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn be(bytes: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = bytes.len().min(8);
    a[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(a)
}

type TxError = ConflictableTransactionError<StoreError>;

/// Writes `b` (its version already bumped) as the current baseline and a history entry, with
/// the next server-wide revision, inside a transaction.
fn write_version(
    (baselines, history, meta): (&TransactionalTree, &TransactionalTree, &TransactionalTree),
    mut b: Baseline,
    actor: &str,
    action: &str,
    reason: &str,
    now: SystemTime,
) -> std::result::Result<Baseline, TxError> {
    let revision = meta.get("revision")?.map(|v| be(&v)).unwrap_or(0) + 1;
    b.revision = revision;
    b.updated_at = now;
    meta.insert("revision", &revision.to_be_bytes())?;
    baselines.insert(b.workload.to_string().as_bytes(), enc(&b))?;
    let rec = VersionRecord {
        version: b.version,
        actor: actor.to_string(),
        at: now,
        action: action.to_string(),
        reason: reason.to_string(),
        snapshot: b.clone(),
    };
    history.insert(history_key(&b.workload, b.version), enc(&rec))?;
    Ok(b)
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

impl Store {
    /// Opens (or creates) the database in `dir`, with the default shared tail.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_tail(dir, DEFAULT_TAIL_RECORDS)
    }

    /// Opens (or creates) the database in `dir`; the shared tail of the record log holds
    /// `tail_records` records (0: subscribers always read sled).
    pub fn open_with_tail(dir: &Path, tail_records: usize) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let meta = db.open_tree("meta")?;
        let deviations = db.open_tree("deviations")?;
        let log = records::Log::open(&db, &meta, &deviations, tail_records)?;
        Ok(Self {
            log,
            baselines: db.open_tree("baselines")?,
            history: db.open_tree("history")?,
            event_ids: event_ids::EventIds::open(&db, &meta, SystemTime::now())?,
            sensors: db.open_tree("sensors")?,
            deviations,
            audit: db.open_tree("audit")?,
            meta,
            activity: db.open_tree("activity")?,
            writer: Arc::new(Mutex::new(())),
            max_elements: crate::limits::LimitSettings::default().max_baseline_elements,
            db,
        })
    }

    /// Caps learning from sensor events at `n` elements per baseline (`--max-baseline-elements`;
    /// what happens at the cap is decided in `procguard_core::baseline`).
    pub fn with_max_baseline_elements(mut self, n: usize) -> Self {
        self.max_elements = n;
        self
    }

    /// The server-wide baseline revision.
    pub fn revision(&self) -> Result<u64> {
        Ok(self.meta.get("revision")?.map(|v| be(&v)).unwrap_or(0))
    }

    /// Events stored over the database's lifetime (replays not counted twice).
    pub fn events_ingested(&self) -> Result<u64> {
        Ok(self
            .meta
            .get("events_ingested")?
            .map(|v| be(&v))
            .unwrap_or(0))
    }

    /// What the server knows of a sensor.
    pub fn sensor(&self, node: &str) -> Result<SensorRecord> {
        match self.sensors.get(node)? {
            Some(v) => dec("sensors", &v),
            None => Ok(SensorRecord::default()),
        }
    }

    /// Records a sensor's hello.
    pub async fn sensor_hello(
        &self,
        node: &str,
        boot_id: &str,
        version: &str,
    ) -> Result<SensorRecord> {
        let _w = self.writer.lock().await;
        let mut rec = self.sensor(node)?;
        rec.boot_id = boot_id.to_string();
        rec.version = version.to_string();
        rec.last_seen = Some(SystemTime::now());
        self.sensors.insert(node, enc(&rec))?;
        self.db.flush_async().await?;
        Ok(rec)
    }

    /// Applies a batch from `node` and makes it durable. Events whose ID was already ingested
    /// are skipped, so a replay never counts twice.
    pub async fn ingest(
        &self,
        node: &str,
        events: &[IngestEvent],
        policies: &Policies,
        now: SystemTime,
    ) -> Result<IngestOutcome> {
        let (outcome, commit) = self.ingest_commit(node, events, policies, now).await?;
        self.wait_durable(commit).await?;
        Ok(outcome)
    }

    /// Applies a batch from `node` without waiting for the disk: nothing of it may be
    /// acknowledged before [`Store::wait_durable`] returns for the returned commit. Lets one
    /// sensor stream commit its next batch while the previous one is being flushed.
    pub async fn ingest_commit(
        &self,
        node: &str,
        events: &[IngestEvent],
        policies: &Policies,
        now: SystemTime,
    ) -> Result<(IngestOutcome, Commit)> {
        let w = self.writer.lock().await;
        // Under the writer lock, which retention's rotation also takes: both stay valid. The
        // previous generation is frozen, so it is read here: a plain read inside a sled
        // transaction would wait for the transaction's own lock.
        let (ids, previous_ids) = self.event_ids.trees();
        let mut remembered = std::collections::HashSet::new();
        if let Some(p) = &previous_ids {
            for ev in events {
                if p.contains_key(ev.event_id.as_bytes())? {
                    remembered.insert(ev.event_id.as_str());
                }
            }
        }
        let trees = (
            &self.baselines,
            &self.history,
            &ids,
            &self.sensors,
            &self.deviations,
            &self.meta,
            &self.activity,
            &self.log.incidents,
            &self.log.incident_keys,
            &self.log.records,
        );
        let (outcome, mut appender, id_bytes) = trees
            .transaction(
                |(
                    baselines,
                    history,
                    event_ids,
                    sensors,
                    deviations,
                    meta,
                    activity,
                    incidents,
                    incident_keys,
                    records,
                )| {
                    let mut out = IngestOutcome::default();
                    let mut id_bytes = 0u64;
                    let mut seen: BTreeMap<Vec<u8>, ActivityRecord> = BTreeMap::new();
                    let mut log = self.log.appender(now);
                    let mut touched: BTreeMap<String, (Baseline, bool)> = BTreeMap::new();
                    let mut sensor: SensorRecord = match sensors.get(node)? {
                        Some(v) => {
                            dec("sensors", &v).map_err(ConflictableTransactionError::Abort)?
                        }
                        None => SensorRecord::default(),
                    };
                    for ev in events {
                        sensor.acked_sequence = sensor.acked_sequence.max(ev.sequence);
                        let id = ev.event_id.as_bytes();
                        if remembered.contains(ev.event_id.as_str()) || event_ids.get(id)?.is_some()
                        {
                            out.duplicates += 1;
                            continue;
                        }
                        event_ids.insert(id, &[])?;
                        id_bytes += id.len() as u64;
                        out.applied += 1;
                        if ev.process.awaits_pod_metadata() {
                            // A provisional identity (pod UID only; the sensor did not have
                            // the pod's metadata in time): never a baseline of its own, which
                            // would learn in silence. The sensor sends the event again under
                            // its workload identity once the pod is known, and that one is
                            // learned or matched. Stored as ingested (idempotent) and counted.
                            out.unattributed += 1;
                            continue;
                        }
                        let key = ev.process.workload.to_string();
                        if !touched.contains_key(&key) {
                            let b = match baselines.get(key.as_bytes())? {
                                Some(v) => dec("baselines", &v)
                                    .map_err(ConflictableTransactionError::Abort)?,
                                None => Baseline::new(ev.process.workload.clone(), now),
                            };
                            let is_new = b.elements.is_empty() && b.version == 1;
                            touched.insert(key.clone(), (b, is_new));
                        }
                        let (b, changed) = touched.get_mut(&key).expect("inserted above");
                        let before = b.version;
                        let policy = policies.for_baseline(b);
                        let relearn_window = policy.relearn_window;
                        if ev.process.context != procguard_core::ExecContext::Probe {
                            let k = activity_key(
                                &ev.process.workload,
                                now,
                                &ElementKey::of(&ev.process),
                            );
                            let rec = match seen.remove(&k) {
                                Some(r) => r,
                                None => match activity.get(&k)? {
                                    Some(v) => dec("activity", &v)
                                        .map_err(ConflictableTransactionError::Abort)?,
                                    None => ActivityRecord::default(),
                                },
                            };
                            seen.insert(k, rec.add(now, &ev.process));
                        }
                        if ev.process.completeness == procguard_core::Completeness::Partial {
                            out.partial += 1;
                        }
                        match b.observe(&ev.process, now, relearn_window, self.max_elements) {
                            o @ (Observation::Deviation | Observation::Refused) => {
                                if o == Observation::Refused {
                                    out.refused += 1;
                                }
                                let rec = DeviationRecord {
                                    event_id: ev.event_id.clone(),
                                    at: now,
                                    baseline_version: b.version,
                                    baseline_state: b.state,
                                    process: ev.process.clone(),
                                    content: Some(b.judge_content(&ev.process)),
                                };
                                // Keyed by the record-log cursor: unique and increasing. (sled's
                                // `generate_id` deadlocks inside a transaction.)
                                let seq =
                                    log.deviation((incidents, incident_keys, records), &rec, b)?;
                                let value = enc(&rec);
                                log.count_bytes(value.len() as u64 + 8);
                                deviations.insert(&seq.to_be_bytes(), value)?;
                                out.deviations.push(rec);
                            }
                            Observation::Partial => out.unread += 1,
                            Observation::Learned { .. }
                            | Observation::Known
                            | Observation::Probe => {}
                        }
                        // Someone started processes into a container whose baseline is
                        // enforced: one incident per session, whatever it runs (unless the
                        // policy records such sessions only).
                        if let (procguard_core::ExecContext::ExecSession, Some(session)) =
                            (ev.process.context, ev.process.exec_session.as_deref())
                        {
                            if b.state == BaselineState::Enforced && policy.exec_session_alerts {
                                log.exec_session(
                                    (incidents, incident_keys),
                                    &ev.event_id,
                                    &ev.process,
                                    b,
                                    session,
                                )?;
                            }
                        }
                        // Provenance changes on every sighting and is saved, but only a change of
                        // elements or state makes a version and a push to sensors.
                        *changed |= b.version != before;
                    }
                    let mut revision = meta.get("revision")?.map(|v| be(&v)).unwrap_or(0);
                    for (key, (mut b, changed)) in touched {
                        if changed {
                            revision += 1;
                            b.revision = revision;
                            let rec = VersionRecord {
                                version: b.version,
                                actor: format!("sensor:{node}"),
                                at: now,
                                action: "learned".into(),
                                reason: String::new(),
                                snapshot: b.clone(),
                            };
                            history.insert(history_key(&b.workload, b.version), enc(&rec))?;
                            out.changed.push(b.clone());
                        }
                        baselines.insert(key.as_bytes(), enc(&b))?;
                    }
                    meta.insert("revision", &revision.to_be_bytes())?;
                    for (k, rec) in seen {
                        activity.insert(k, enc(&rec))?;
                    }
                    // A lifetime count, so that stored events can be proven across restarts.
                    let stored = meta.get("events_ingested")?.map(|v| be(&v)).unwrap_or(0);
                    meta.insert(
                        "events_ingested",
                        &(stored + out.applied as u64).to_be_bytes(),
                    )?;
                    sensor.last_seen = Some(now);
                    sensors.insert(node, enc(&sensor))?;
                    out.acked_sequence = sensor.acked_sequence;
                    out.incidents = log.finish(incidents, records)?;
                    Ok::<_, TxError>((out, log, id_bytes))
                },
            )
            .map_err(tx_err)?;
        // Group commit: the lock is released before waiting, so batches of other sensors
        // commit meanwhile and share the next flush.
        let gen = self.log.committed(Some(&mut appender));
        self.event_ids.added(outcome.applied as u64, id_bytes);
        drop(w);
        Ok((outcome, Commit(gen)))
    }

    /// Returns once `commit` is on disk (sharing a flush with concurrent writers).
    pub async fn wait_durable(&self, commit: Commit) -> Result<()> {
        self.log.wait_durable(&self.db, commit.0).await
    }

    /// Reads one baseline; `version` 0 means current.
    pub fn baseline(&self, id: &WorkloadIdentity, version: u64) -> Result<Baseline> {
        if version == 0 {
            return match self.baselines.get(id.to_string())? {
                Some(v) => dec("baselines", &v),
                None => Err(StoreError::NotFound(id.to_string())),
            };
        }
        match self.history.get(history_key(id, version))? {
            Some(v) => Ok(dec::<VersionRecord>("history", &v)?.snapshot),
            None => Err(StoreError::NotFound(format!("{id} version {version}"))),
        }
    }

    /// Lists baselines passing `filter`, in key order, starting after `after` (a workload text form).
    pub fn baselines(
        &self,
        filter: &BaselineFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Baseline>, Option<String>)> {
        let mut out = Vec::new();
        let iter = match after {
            Some(a) => self.baselines.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => self.baselines.iter(),
        };
        for kv in iter {
            let (_, v) = kv?;
            let b: Baseline = dec("baselines", &v)?;
            if filter.matches(&b) {
                if out.len() == limit {
                    let next = out.last().map(|b: &Baseline| b.workload.to_string());
                    return Ok((out, next));
                }
                out.push(b);
            }
        }
        Ok((out, None))
    }

    /// Every baseline past learning, with the current revision: what sensors match against.
    pub fn enforcing(&self) -> Result<(u64, Vec<Baseline>)> {
        let rev = self.revision()?;
        let mut out = Vec::new();
        for kv in self.baselines.iter() {
            let b: Baseline = dec("baselines", &kv?.1)?;
            if b.state != BaselineState::Learning {
                out.push(b);
            }
        }
        Ok((rev, out))
    }

    /// Applies a change to one baseline as a new version, recording who, what and why.
    /// `change` returns an error to refuse; the store is then untouched.
    pub async fn change(
        &self,
        id: &WorkloadIdentity,
        actor: &str,
        action: &str,
        reason: &str,
        create: bool,
        change: impl Fn(&mut Baseline) -> std::result::Result<(), String>,
    ) -> Result<Baseline> {
        let w = self.writer.lock().await;
        let now = SystemTime::now();
        let mut b = match self.baselines.get(id.to_string())? {
            Some(v) => dec("baselines", &v)?,
            None if create => Baseline::new(id.clone(), now),
            None => return Err(StoreError::NotFound(id.to_string())),
        };
        let before = b.version;
        change(&mut b).map_err(StoreError::Rejected)?;
        if b.version == before {
            // Every API change is a version, even one that only restates the current content.
            b.version += 1;
        }
        b.updated_at = now;
        let trees = (&self.baselines, &self.history, &self.meta);
        let b = trees
            .transaction(|(baselines, history, meta)| {
                write_version(
                    (baselines, history, meta),
                    b.clone(),
                    actor,
                    action,
                    reason,
                    now,
                )
            })
            .map_err(tx_err)?;
        let gen = self.log.committed(None);
        drop(w);
        self.log.wait_durable(&self.db, gen).await?;
        Ok(b)
    }

    /// Ends learning for baselines whose evidence says so; returns the ones that changed.
    pub async fn evaluate_learning(
        &self,
        policies: &Policies,
        now: SystemTime,
    ) -> Result<Vec<Baseline>> {
        let mut due = Vec::new();
        for kv in self.baselines.iter() {
            let mut b: Baseline = dec("baselines", &kv?.1)?;
            let policy = policies.for_baseline(&b).clone();
            if b.evaluate_learning(&policy, now).is_some() {
                due.push(b.workload);
            }
        }
        let mut changed = Vec::new();
        for id in due {
            let b = self
                .change(&id, "policy", "learning-ended", "", false, |b| {
                    let policy = policies.for_baseline(b).clone();
                    match b.evaluate_learning(&policy, now) {
                        Some(_) => Ok(()),
                        None => Err("no longer due".into()),
                    }
                })
                .await;
            match b {
                Ok(b) => changed.push(b),
                Err(StoreError::Rejected(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    /// History of one baseline, oldest first.
    pub fn history(&self, id: &WorkloadIdentity) -> Result<Vec<VersionRecord>> {
        let mut prefix = id.to_string().into_bytes();
        prefix.push(0);
        self.history
            .scan_prefix(prefix)
            .map(|kv| dec("history", &kv?.1))
            .collect()
    }

    /// Stored deviations, oldest first (at most `limit`).
    pub fn deviations(&self, limit: usize) -> Result<Vec<DeviationRecord>> {
        self.deviations
            .iter()
            .take(limit)
            .map(|kv| dec("deviations", &kv?.1))
            .collect()
    }

    /// Appends an audit record and makes it durable; returns its id.
    pub async fn audit(&self, entry: AuditEntry) -> Result<u64> {
        // Every audit record also lands in the record log, with its cursor.
        self.append_audit(entry).await
    }

    /// Audit records with id greater than `after`, oldest first.
    pub fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.audit
            .range((after + 1).to_be_bytes()..)
            .take(limit)
            .map(|kv| dec("audit", &kv?.1))
            .collect()
    }

    /// Activity of one workload from day `from_day` on: (day, element, record).
    pub fn activity(
        &self,
        id: &WorkloadIdentity,
        from_day: u32,
    ) -> Result<Vec<(u32, ElementKey, ActivityRecord)>> {
        let prefix = activity_prefix(id);
        let mut start = prefix.clone();
        start.extend_from_slice(&from_day.to_be_bytes());
        let mut out = Vec::new();
        for kv in self.activity.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            let rest = &k[prefix.len()..];
            if rest.len() < 5 {
                continue;
            }
            let day = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let mut parts = rest[5..].splitn(3, |b| *b == 0);
            let mut text =
                || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let (exe, script, applet) = (text(), text(), text());
            out.push((
                day,
                ElementKey {
                    exe_path: exe,
                    applet,
                    script_path: script,
                },
                dec("activity", &v)?,
            ));
        }
        Ok(out)
    }

    /// Deletes activity older than `before_day`; returns how many records went.
    pub fn prune_activity(&self, before_day: u32) -> Result<usize> {
        let mut n = 0;
        for kv in self.activity.iter() {
            let (k, _) = kv?;
            let Some(nul) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let Some(day) = k.get(nul + 1..nul + 5) else {
                continue;
            };
            if u32::from_be_bytes([day[0], day[1], day[2], day[3]]) < before_day {
                self.activity.remove(&k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Replaces or creates many baselines at once, all or nothing, each as a new version.
    pub async fn import(
        &self,
        items: Vec<Baseline>,
        actor: &str,
        reason: &str,
    ) -> Result<Vec<Baseline>> {
        let _w = self.writer.lock().await;
        let now = SystemTime::now();
        let trees = (&self.baselines, &self.history, &self.meta);
        let out = trees
            .transaction(|(baselines, history, meta)| {
                let mut revision = meta.get("revision")?.map(|v| be(&v)).unwrap_or(0);
                let mut out = Vec::new();
                for item in &items {
                    let key = item.workload.to_string();
                    let mut b = item.clone();
                    b.version = match baselines.get(key.as_bytes())? {
                        Some(v) => {
                            let old: Baseline = dec("baselines", &v)
                                .map_err(ConflictableTransactionError::Abort)?;
                            // Keep what the import does not carry: provenance and learning history.
                            for (k, e) in b.elements.iter_mut() {
                                if let Some(o) = old.elements.get(k) {
                                    e.provenance = o.provenance.clone();
                                }
                            }
                            b.learning = old.learning.clone();
                            old.version + 1
                        }
                        None => 1,
                    };
                    revision += 1;
                    b.revision = revision;
                    b.updated_at = now;
                    baselines.insert(key.as_bytes(), enc(&b))?;
                    let rec = VersionRecord {
                        version: b.version,
                        actor: actor.to_string(),
                        at: now,
                        action: "import".into(),
                        reason: reason.to_string(),
                        snapshot: b.clone(),
                    };
                    history.insert(history_key(&b.workload, b.version), enc(&rec))?;
                    out.push(b);
                }
                meta.insert("revision", &revision.to_be_bytes())?;
                Ok::<_, TxError>(out)
            })
            .map_err(tx_err)?;
        self.db.flush_async().await?;
        Ok(out)
    }

    /// Keys of elements (for tests and diagnostics).
    pub fn element_keys(b: &Baseline) -> Vec<ElementKey> {
        b.elements.keys().cloned().collect()
    }
}

impl Store {
    /// Flushes everything to disk (used at shutdown).
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }
}
