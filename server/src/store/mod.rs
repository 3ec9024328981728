//! Storage: what the server's domain code asks of it, and nothing about how it is stored.
//!
//! **Interface.** The domain code (`grpc`, `learning`, `watchdog`, `lib`) holds a
//! [`SharedStorage`] (`Arc<dyn Storage>`) and never names an engine. [`Storage`] is the sum of
//! one trait per concept ([`BaselineStore`], [`IngestStore`], [`SensorStore`], [`AuditStore`],
//! [`IncidentStore`], [`LogStore`], [`RetentionStore`]), so that an engine implements each
//! concept in its own file, directly, with no forwarding layer. A trait object rather than a
//! type parameter, so that the tonic services keep one concrete type each; the price, one boxed
//! future per storage call, is small beside the fsync behind every write.
//!
//! **Engines.** [`Store`] (sled, in `store/sled/`) is the one engine today. Another engine
//! implements the seven traits and passes the conformance suite (`conformance.rs`), which
//! states the durability contract as tests; the contract in words is in
//! `docs/ARCHITECTURE.md` ("Storage engines").
//!
//! **Durability.** Every write method returns only once its change is durable (it survives a
//! crash of the process or the machine), except [`IngestStore::ingest_commit`], whose change is
//! durable once [`IngestStore::wait_durable`] returns for its [`Commit`]; nothing of it may be
//! acknowledged before.
//!
//! Arguments and results are domain types (`procguard-core`) and the records below; engine
//! failures are boxed in [`StoreError::Engine`]. This file is one concept, the storage
//! interface, and is longer than most for that reason: the seven traits and every type they
//! take or return, with no engine code.

#[cfg(test)]
pub(crate) mod conformance;
mod sled;

pub use self::sled::Store;
pub use procguard_core::audit::{AuditEntry, AuditOutcome};
pub use procguard_core::ingest::{
    ActivityRecord, DeviationRecord, EventKind, IngestEvent, IngestOutcome, SensorReport,
};
pub use procguard_core::record::{LogRecord, RecordBody, RecordKind};

use procguard_core::incident::{self, Action, Incident, IncidentFilter};
use procguard_core::policy::{LabelSelector, Policies};
use procguard_core::{Baseline, BaselineState, ElementKey, WorkloadIdentity};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// The storage the domain code holds; cheap to clone.
pub type SharedStorage = Arc<dyn Storage>;

/// A refusal or change applied to one baseline by [`BaselineStore::change`]: `Err` refuses
/// with a message for the caller, and the storage is then untouched.
pub type BaselineChange<'a> =
    &'a (dyn Fn(&mut Baseline) -> std::result::Result<(), String> + Send + Sync);

/// Everything the server needs from a storage engine: one trait per concept. See the module
/// documentation for the durability rule every write follows.
pub trait Storage:
    BaselineStore
    + IngestStore
    + SensorStore
    + AuditStore
    + IncidentStore
    + LogStore
    + RetentionStore
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<T> Storage for T where
    T: BaselineStore
        + IngestStore
        + SensorStore
        + AuditStore
        + IncidentStore
        + LogStore
        + RetentionStore
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Baselines, their versions, and per-day activity for dry runs.
#[tonic::async_trait]
pub trait BaselineStore: Send + Sync {
    /// One baseline; `version` 0 means the current one. `NotFound` if there is none.
    fn baseline(&self, id: &WorkloadIdentity, version: u64) -> Result<Baseline>;

    /// Baselines passing `filter` in workload order, after the workload text form `after`, at
    /// most `limit`, with the token for the next page.
    fn baselines(
        &self,
        filter: &BaselineFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Baseline>, Option<String>)>;

    /// Every baseline past learning, with the server-wide revision: what sensors match against.
    fn enforcing(&self) -> Result<(u64, Vec<Baseline>)>;

    /// Applies `change` to one baseline as a new version recorded with `by`'s actor, action and
    /// reason (creating it first if `create`), atomically, durably. Every change is a new
    /// version, even one that only restates the current content. `by.audit`, the record of the
    /// call that asked for the change, is written in the same transaction, its detail naming
    /// the version made: a change is never on disk without its audit record (`None` for the
    /// server's own changes, which history names).
    async fn change(
        &self,
        id: &WorkloadIdentity,
        by: ChangeBy<'_>,
        create: bool,
        change: BaselineChange<'_>,
    ) -> Result<Baseline>;

    /// Ends learning where the policies' evidence says so; returns the baselines that changed.
    async fn evaluate_learning(
        &self,
        policies: &Policies,
        now: SystemTime,
    ) -> Result<Vec<Baseline>>;

    /// Versions of one baseline, oldest first.
    fn history(&self, id: &WorkloadIdentity) -> Result<Vec<VersionRecord>>;

    /// Replaces or creates many baselines, all or nothing, each as a new version, with the
    /// call's `audit` record in the same transaction.
    async fn import(
        &self,
        items: Vec<Baseline>,
        actor: &str,
        reason: &str,
        audit: AuditEntry,
    ) -> Result<Vec<Baseline>>;

    /// Per-day activity of one workload from `from_day` on, for dry runs.
    fn activity(
        &self,
        id: &WorkloadIdentity,
        from_day: u32,
    ) -> Result<Vec<(u32, ElementKey, ActivityRecord)>>;

    /// Deletes activity older than `before_day`; returns how many records went.
    fn prune_activity(&self, before_day: u32) -> Result<usize>;
}

/// Sensor batches: learning, matching, deviations and their incidents, in one atomic write.
#[tonic::async_trait]
pub trait IngestStore: Send + Sync {
    /// Applies a batch from `node` atomically (baselines, history, deviations, incidents and
    /// their log records, event IDs, the sensor's sequence), skipping event IDs already
    /// ingested. Not yet durable: see [`IngestStore::wait_durable`].
    async fn ingest_commit(
        &self,
        node: &str,
        events: &[IngestEvent],
        policies: &Policies,
        now: SystemTime,
    ) -> Result<(IngestOutcome, Commit)>;

    /// Returns once `commit`, and everything committed before it, is durable.
    async fn wait_durable(&self, commit: Commit) -> Result<()>;

    /// [`IngestStore::ingest_commit`], then [`IngestStore::wait_durable`].
    async fn ingest(
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

    /// Events stored over the storage's lifetime (replays not counted twice).
    fn events_ingested(&self) -> Result<u64>;

    /// Executions the stored events stood for over the storage's lifetime (a sensor's summary
    /// stands for several; replays not counted twice).
    fn executions_ingested(&self) -> Result<u64>;
}

/// What is known of each sensor: its sequence, its health, its silence.
#[tonic::async_trait]
pub trait SensorStore: Send + Sync {
    /// What is stored about a sensor (its acknowledged sequence above all).
    fn sensor(&self, node: &str) -> Result<SensorRecord>;

    /// Whether a record of `node` is kept.
    fn sensor_known(&self, node: &str) -> Result<bool>;

    /// How many sensor records are kept (bounded by `--max-sensors`, which the sensor service
    /// checks before a new node's hello).
    fn sensors_known(&self) -> u64;

    /// Records a sensor's hello, durably.
    async fn sensor_hello(&self, node: &str, boot_id: &str, version: &str) -> Result<SensorRecord>;

    /// Records a sensor's health report; returns the sensor-blind incident it opened or
    /// changed, if any.
    async fn sensor_health(
        &self,
        node: &str,
        report: HealthReport,
        now: SystemTime,
    ) -> Result<Option<Incident>>;

    /// Opens sensor-blind incidents for sensors silent for `silence` (counting from `since`
    /// for sensors not seen since then).
    async fn silent_sensors(
        &self,
        silence: Duration,
        since: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<Incident>>;
}

/// The audit log.
#[tonic::async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an audit record (and its log record), durably; returns its id.
    async fn audit(&self, entry: AuditEntry) -> Result<u64>;

    /// Audit records passing `query`, at most `query.limit`, in its order.
    fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>>;
}

/// Which way a listing runs: by number, oldest (lowest) or newest (highest) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Lowest number first; a page continues above the last number returned.
    #[default]
    OldestFirst,
    /// Highest number first; a page continues below the last number returned.
    NewestFirst,
}

/// What part of the audit log to list.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only ids above this.
    pub after: u64,
    /// Only ids below this.
    pub before_id: Option<u64>,
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
    /// Only records before this time.
    pub before: Option<SystemTime>,
    /// At most this many.
    pub limit: usize,
    /// Which end first.
    pub order: Order,
}

impl AuditQuery {
    /// Whether `e` passes the time bounds (the id bounds are the range read).
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.since.is_none_or(|t| e.at >= t) && self.before.is_none_or(|t| e.at < t)
    }
}

/// Incidents and the lifecycle actions people take on them.
#[tonic::async_trait]
pub trait IncidentStore: Send + Sync {
    /// One incident by number (`Incident::id` is its text form).
    fn incident(&self, id: u64) -> Result<Incident>;

    /// Incidents passing `filter`, numbered beyond `cursor` in `order` (above it oldest
    /// first, below it newest first), at most `limit`, with the cursor of the next page.
    fn incidents(
        &self,
        filter: &IncidentFilter,
        cursor: Option<u64>,
        limit: usize,
        order: Order,
    ) -> Result<(Vec<Incident>, Option<u64>)>;

    /// Applies a lifecycle action to an incident, durably, with its log record and, when it
    /// changes anything, the call's `audit` record in the same transaction (its detail names
    /// what an allow added to the baseline). An action that changes nothing writes nothing:
    /// the caller audits it ([`ActionOutcome::changed`]).
    async fn incident_action(
        &self,
        id: u64,
        action: Action,
        actor: &str,
        reason: &str,
        audit: AuditEntry,
    ) -> Result<ActionOutcome>;
}

/// The record log that SIEM subscriptions read, and their durable cursors.
#[tonic::async_trait]
pub trait LogStore: Send + Sync {
    /// The newest durable cursor, and every later one as it becomes durable.
    fn durable_cursor(&self) -> watch::Receiver<u64>;

    /// The highest cursor removed by retention (0 if none).
    fn log_floor(&self) -> Result<u64>;

    /// Whether reading after `after` would skip records removed by retention.
    fn check_cursor(&self, after: u64) -> Result<std::result::Result<(), OutOfRange>>;

    /// Records after `after` up to `upto` (durable ones only), at most `limit`, in cursor
    /// order; `OutOfRange` if retention removed the next one.
    fn read_log(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<std::result::Result<Vec<LogRecord>, OutOfRange>>;

    /// Records after `after` up to `upto` (at most `limit`), shared and already encoded, from
    /// the in-memory tail when it still holds them, else from storage (which says which).
    #[allow(clippy::type_complexity)]
    fn read_records(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<std::result::Result<(Vec<Arc<SharedRecord>>, ReadSource), OutOfRange>>;

    /// Durably records that subscription `name`, owned by `owner`, has processed up to
    /// `cursor` (it never moves back), and returns the stored cursor. A subscription that does
    /// not exist yet, or has no owner, becomes `owner`'s; one that another identity owns is
    /// left alone ([`Owned::Other`]).
    async fn ack_cursor(&self, name: &str, owner: &str, cursor: u64) -> Result<Owned<u64>>;

    /// Makes subscription `name` `owner`'s if it does not exist yet or has no owner (durably),
    /// and returns its acknowledged cursor (0: none yet); [`Owned::Other`] if another identity
    /// owns it.
    async fn claim_subscription(&self, name: &str, owner: &str) -> Result<Owned<u64>>;

    /// Subscription `name` as stored, if it exists.
    fn get_subscription(&self, name: &str) -> Result<Option<DurableSubscription>>;

    /// Makes everything written so far durable (at shutdown).
    async fn flush(&self) -> Result<()>;
}

/// Retention of the record log and of the event-ID index.
#[tonic::async_trait]
pub trait RetentionStore: Send + Sync {
    /// Removes the oldest records by age and size, and rotates the event-ID index.
    async fn enforce_retention(
        &self,
        retention: Retention,
        now: SystemTime,
    ) -> Result<RetentionOutcome>;

    /// Approximate size of the record log, in bytes.
    fn log_bytes(&self) -> u64;

    /// Event IDs the idempotency index remembers now (both generations).
    fn event_ids_remembered(&self) -> u64;

    /// The database's size on disk, in bytes: a file-system look, no scan of the data.
    fn database_bytes(&self) -> Result<u64>;
}

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
    /// The baseline exists, but not at the version asked for.
    #[error("baseline '{workload}' has no version {version} (never made, or older than the newest 1000, which are all its history keeps)")]
    NoVersion {
        /// Workload.
        workload: String,
        /// The version asked for.
        version: u64,
    },
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

/// A committed, not necessarily durable, write; see [`IngestStore::wait_durable`].
#[derive(Debug, Clone, Copy)]
pub struct Commit(u64);

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

/// Longest dry-run window, in days; the store keeps per-day activity this long.
pub const MAX_DRY_RUN_DAYS: u32 = 30;

/// Days since the epoch.
pub fn day_of(t: SystemTime) -> u32 {
    (t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 86_400) as u32
}

/// Default number of records the shared tail holds (`--stream-tail-records`): about a second
/// of deviations at full ingest speed, a few MiB of memory.
pub const DEFAULT_TAIL_RECORDS: usize = 8_192;

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
    /// The capture stop already raised, so that each health report of a stopped sensor does
    /// not append the same finding again.
    #[serde(default)]
    pub capture_stopped: Option<String>,
}

/// Health counters as a sensor reports them (cumulative since it started).
#[derive(Debug, Clone, Default)]
pub struct HealthReport {
    /// Events dropped.
    pub dropped: u64,
    /// Partial events.
    pub partial: u64,
    /// Kernel-side losses.
    pub kernel_losses: u64,
    /// Why the sensor's capture stopped, once it has.
    pub capture_stopped: Option<String>,
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

/// Who changes a baseline, and why: what its version's history record and audit record say.
#[derive(Debug, Clone)]
pub struct ChangeBy<'a> {
    /// Who (a token's name, `policy` for the server's own changes).
    pub actor: &'a str,
    /// What kind of change (`approved`, `added`, `learning-ended` …), as history shows it.
    pub action: &'a str,
    /// Why, as the person gave it.
    pub reason: &'a str,
    /// The audit record of the API call that asked for the change, written in the change's
    /// transaction; `None` for the server's own changes.
    pub audit: Option<AuditEntry>,
}

/// A durable subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSubscription {
    /// The cursor acknowledged last (0: none yet).
    pub cursor: u64,
    /// The identity (API token or certificate name) that owns it; `None` for one stored
    /// before subscriptions had owners, which the next identity to use it claims.
    pub owner: Option<String>,
}

/// The outcome of an operation on something only its owner may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned<T> {
    /// The caller owns it (now, or already): the result.
    Mine(T),
    /// Another identity owns it; nothing was read or changed.
    Other,
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
    /// Audit entries older than this are removed (`--audit-retention-age`).
    pub audit_max_age: Duration,
    /// Past this many bytes of audit entries, the oldest are removed
    /// (`--audit-retention-bytes`).
    pub audit_max_bytes: u64,
    /// Closed incidents (resolved or allowed) last changed longer ago than this are removed
    /// (`--incident-retention-age`); open and acknowledged ones are kept, whatever their age.
    pub incident_max_age: Duration,
    /// Past this many closed incidents, the longest closed are removed
    /// (`--max-closed-incidents`).
    pub incident_max_closed: u64,
    /// Records of sensors not heard from for this long are removed, with their health record
    /// (`--sensor-retention-age`).
    pub sensor_max_age: Duration,
}

impl Retention {
    /// Default age of closed incidents kept: 180 days.
    pub const INCIDENT_AGE: Duration = Duration::from_secs(180 * 86_400);
    /// Default most closed incidents kept.
    pub const INCIDENTS_CLOSED: u64 = 100_000;
    /// Default age of a silent sensor's record: 30 days.
    pub const SENSOR_AGE: Duration = Duration::from_secs(30 * 86_400);

    /// Default audit retention: a year, 256 MiB (about a million entries).
    pub const AUDIT_AGE: Duration = Duration::from_secs(365 * 86_400);
    /// See [`Retention::AUDIT_AGE`].
    pub const AUDIT_BYTES: u64 = 256 << 20;
}

/// Most bytes kept of each field of an audit entry. A target or detail comes from the request
/// (before it is authenticated, for a denied call) or from an error; cut here, whatever wrote
/// the entry, so that no caller can make the audit log grow faster than its number of calls.
pub const AUDIT_FIELD_BYTES: [(&str, usize); 6] = [
    ("actor", 256),
    ("role", 32),
    ("action", 128),
    ("target", 512),
    ("detail", 2048),
    ("peer", 128),
];

/// Cuts an audit entry's fields to [`AUDIT_FIELD_BYTES`] (each cut marked with `…`).
pub fn bound_audit_entry(e: &mut AuditEntry) {
    use procguard_core::text::bounded;
    for (field, max) in AUDIT_FIELD_BYTES {
        let v = match field {
            "actor" => &mut e.actor,
            "role" => &mut e.role,
            "action" => &mut e.action,
            "target" => &mut e.target,
            "detail" => &mut e.detail,
            _ => &mut e.peer,
        };
        if v.len() > max {
            *v = bounded(v, max);
        }
    }
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
    /// Audit entries removed (past their age or size).
    pub audit_removed: u64,
    /// Closed incidents removed (past their age, or the longest closed past the count).
    pub incidents_removed: u64,
    /// Records of sensors silent past their age removed.
    pub sensors_removed: u64,
}

/// Where [`LogStore::read_records`] found its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    /// The shared in-memory tail.
    Tail,
    /// sled (the reader was behind the tail).
    Storage,
}
