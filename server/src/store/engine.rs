//! The storage interface: everything the server's domain code (`api`, `ingest`, `incident`,
//! `stream`, `watchdog`, `lib`) asks of storage, and nothing about how it is stored.
//!
//! The domain code holds a [`SharedStorage`] (`Arc<dyn Storage>`); [`Store`] (sled) is the one
//! engine today. Another engine implements [`Storage`] and passes the conformance suite in
//! `store/conformance.rs`, which states the durability contract as tests; the contract in words
//! is in `docs/ARCHITECTURE.md` ("Storage engines").
//!
//! No engine type appears here: arguments and results are domain types (`procguard-core`), the
//! records of [`crate::store`], and [`StoreError`], whose engine failures are boxed. A trait
//! object rather than a type parameter, so that the tonic services keep one concrete type
//! each; the price, one boxed future per storage call, is small beside the fsync behind every
//! write.
//!
//! Every write method returns only once its change is durable (it survives a crash of the
//! process or the machine), except [`Storage::ingest_commit`], whose change is durable once
//! [`Storage::wait_durable`] returns for its [`Commit`]; nothing of it may be acknowledged
//! before.

use super::{
    ActionOutcome, ActivityRecord, AuditEntry, BaselineFilter, Commit, HealthReport, IngestEvent,
    IngestOutcome, LogRecord, OutOfRange, ReadSource, Result, Retention, RetentionOutcome,
    SensorRecord, SharedRecord, Store, VersionRecord,
};
use procguard_core::incident::{Action, Incident, IncidentFilter};
use procguard_core::policy::Policies;
use procguard_core::{Baseline, ElementKey, WorkloadIdentity};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// The storage the domain code holds; cheap to clone.
pub type SharedStorage = Arc<dyn Storage>;

/// A refusal or change applied to one baseline by [`Storage::change`]: `Err` refuses with a
/// message for the caller, and the storage is then untouched.
pub type BaselineChange<'a> =
    &'a (dyn Fn(&mut Baseline) -> std::result::Result<(), String> + Send + Sync);

/// What the server needs from a storage engine. See the module documentation for the
/// durability rule every write follows.
#[tonic::async_trait]
pub trait Storage: std::fmt::Debug + Send + Sync + 'static {
    // Baselines.

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

    /// Applies `change` to one baseline as a new version recorded with actor, action and
    /// reason (creating it first if `create`), atomically, durably.
    async fn change(
        &self,
        id: &WorkloadIdentity,
        actor: &str,
        action: &str,
        reason: &str,
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

    /// Replaces or creates many baselines, all or nothing, each as a new version.
    async fn import(
        &self,
        items: Vec<Baseline>,
        actor: &str,
        reason: &str,
    ) -> Result<Vec<Baseline>>;

    /// Per-day activity of one workload from `from_day` on, for dry runs.
    fn activity(
        &self,
        id: &WorkloadIdentity,
        from_day: u32,
    ) -> Result<Vec<(u32, ElementKey, ActivityRecord)>>;

    /// Deletes activity older than `before_day`; returns how many records went.
    fn prune_activity(&self, before_day: u32) -> Result<usize>;

    // Sensors and ingest.

    /// What is stored about a sensor (its acknowledged sequence above all).
    fn sensor(&self, node: &str) -> Result<SensorRecord>;

    /// Records a sensor's hello, durably.
    async fn sensor_hello(&self, node: &str, boot_id: &str, version: &str) -> Result<SensorRecord>;

    /// Applies a batch from `node` atomically (baselines, history, deviations, incidents and
    /// their log records, event IDs, the sensor's sequence), skipping event IDs already
    /// ingested. Not yet durable: see [`Storage::wait_durable`].
    async fn ingest_commit(
        &self,
        node: &str,
        events: &[IngestEvent],
        policies: &Policies,
        now: SystemTime,
    ) -> Result<(IngestOutcome, Commit)>;

    /// Returns once `commit`, and everything committed before it, is durable.
    async fn wait_durable(&self, commit: Commit) -> Result<()>;

    /// [`Storage::ingest_commit`], then [`Storage::wait_durable`].
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

    // Audit.

    /// Appends an audit record (and its log record), durably; returns its id.
    async fn audit(&self, entry: AuditEntry) -> Result<u64>;

    /// Audit records with id above `after`, oldest first, at most `limit`.
    fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>>;

    // Incidents.

    /// One incident by ID.
    fn incident(&self, id: &str) -> Result<Incident>;

    /// Incidents passing `filter`, after the ID `after`, at most `limit`, with the next page.
    fn incidents(
        &self,
        filter: &IncidentFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Incident>, Option<String>)>;

    /// Applies a lifecycle action to an incident, durably, with its log record.
    async fn incident_action(
        &self,
        id: &str,
        action: Action,
        actor: &str,
        reason: &str,
    ) -> Result<ActionOutcome>;

    // The record log.

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

    /// Event IDs the idempotency index remembers now (both generations).
    fn event_ids_remembered(&self) -> u64;

    /// Durably records that subscription `name` has processed up to `cursor`.
    async fn ack_cursor(&self, name: &str, cursor: u64) -> Result<u64>;

    /// The cursor subscription `name` acknowledged last.
    fn get_cursor(&self, name: &str) -> Result<Option<u64>>;

    /// Removes the oldest records by age and size.
    async fn enforce_retention(
        &self,
        retention: Retention,
        now: SystemTime,
    ) -> Result<RetentionOutcome>;

    /// Approximate size of the record log, in bytes.
    fn log_bytes(&self) -> u64;

    // Lifecycle.

    /// Makes everything written so far durable (at shutdown).
    async fn flush(&self) -> Result<()>;
}

/// The sled engine. Each method is the inherent one of the same name on [`Store`].
#[tonic::async_trait]
impl Storage for Store {
    fn baseline(&self, id: &WorkloadIdentity, version: u64) -> Result<Baseline> {
        Store::baseline(self, id, version)
    }

    fn baselines(
        &self,
        filter: &BaselineFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Baseline>, Option<String>)> {
        Store::baselines(self, filter, after, limit)
    }

    fn enforcing(&self) -> Result<(u64, Vec<Baseline>)> {
        Store::enforcing(self)
    }

    async fn change(
        &self,
        id: &WorkloadIdentity,
        actor: &str,
        action: &str,
        reason: &str,
        create: bool,
        change: BaselineChange<'_>,
    ) -> Result<Baseline> {
        Store::change(self, id, actor, action, reason, create, change).await
    }

    async fn evaluate_learning(
        &self,
        policies: &Policies,
        now: SystemTime,
    ) -> Result<Vec<Baseline>> {
        Store::evaluate_learning(self, policies, now).await
    }

    fn history(&self, id: &WorkloadIdentity) -> Result<Vec<VersionRecord>> {
        Store::history(self, id)
    }

    async fn import(
        &self,
        items: Vec<Baseline>,
        actor: &str,
        reason: &str,
    ) -> Result<Vec<Baseline>> {
        Store::import(self, items, actor, reason).await
    }

    fn activity(
        &self,
        id: &WorkloadIdentity,
        from_day: u32,
    ) -> Result<Vec<(u32, ElementKey, ActivityRecord)>> {
        Store::activity(self, id, from_day)
    }

    fn prune_activity(&self, before_day: u32) -> Result<usize> {
        Store::prune_activity(self, before_day)
    }

    fn sensor(&self, node: &str) -> Result<SensorRecord> {
        Store::sensor(self, node)
    }

    async fn sensor_hello(&self, node: &str, boot_id: &str, version: &str) -> Result<SensorRecord> {
        Store::sensor_hello(self, node, boot_id, version).await
    }

    async fn ingest_commit(
        &self,
        node: &str,
        events: &[IngestEvent],
        policies: &Policies,
        now: SystemTime,
    ) -> Result<(IngestOutcome, Commit)> {
        Store::ingest_commit(self, node, events, policies, now).await
    }

    async fn wait_durable(&self, commit: Commit) -> Result<()> {
        Store::wait_durable(self, commit).await
    }

    fn events_ingested(&self) -> Result<u64> {
        Store::events_ingested(self)
    }

    async fn sensor_health(
        &self,
        node: &str,
        report: HealthReport,
        now: SystemTime,
    ) -> Result<Option<Incident>> {
        Store::sensor_health(self, node, report, now).await
    }

    async fn silent_sensors(
        &self,
        silence: Duration,
        since: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<Incident>> {
        Store::silent_sensors(self, silence, since, now).await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<u64> {
        Store::audit(self, entry).await
    }

    fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        Store::audit_log(self, after, limit)
    }

    fn incident(&self, id: &str) -> Result<Incident> {
        Store::incident(self, id)
    }

    fn incidents(
        &self,
        filter: &IncidentFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Incident>, Option<String>)> {
        Store::incidents(self, filter, after, limit)
    }

    async fn incident_action(
        &self,
        id: &str,
        action: Action,
        actor: &str,
        reason: &str,
    ) -> Result<ActionOutcome> {
        Store::incident_action(self, id, action, actor, reason).await
    }

    fn durable_cursor(&self) -> watch::Receiver<u64> {
        Store::durable_cursor(self)
    }

    fn log_floor(&self) -> Result<u64> {
        Store::log_floor(self)
    }

    fn check_cursor(&self, after: u64) -> Result<std::result::Result<(), OutOfRange>> {
        Store::check_cursor(self, after)
    }

    fn read_log(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<std::result::Result<Vec<LogRecord>, OutOfRange>> {
        Store::read_log(self, after, upto, limit)
    }

    fn read_records(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<std::result::Result<(Vec<Arc<SharedRecord>>, ReadSource), OutOfRange>> {
        Store::read_records(self, after, upto, limit)
    }

    fn event_ids_remembered(&self) -> u64 {
        Store::event_ids_remembered(self)
    }

    async fn ack_cursor(&self, name: &str, cursor: u64) -> Result<u64> {
        Store::ack_cursor(self, name, cursor).await
    }

    fn get_cursor(&self, name: &str) -> Result<Option<u64>> {
        Store::get_cursor(self, name)
    }

    async fn enforce_retention(
        &self,
        retention: Retention,
        now: SystemTime,
    ) -> Result<RetentionOutcome> {
        Store::enforce_retention(self, retention, now).await
    }

    fn log_bytes(&self) -> u64 {
        Store::log_bytes(self)
    }

    async fn flush(&self) -> Result<()> {
        Store::flush(self).await
    }
}
