//! Ingest in sled: one sensor batch in one transaction (baselines, history, activity, event
//! IDs, incidents and their log records, the sensor's acknowledged sequence, the stored-event
//! count), under the writer lock, then group commit (see [`super::log`]). The domain steps of
//! each event are `procguard_core::ingest::apply`'s; this file supplies its reads and writes
//! ([`ingest::BatchStore`]) and writes what it returns. Of a baseline it writes only what the
//! batch changed (see [`super::baselines`]): its definition and a history record for a new
//! version, the provenance of the elements it sighted, its tally if that moved.
//!
//! `meta` key `events_ingested`: big-endian u64, events stored over the database's lifetime;
//! `executions_ingested`: the executions they stood for (absent in a database from before
//! summaries, whose events were one execution each).

use super::baselines::{
    activity_key, put_definition, put_provenance, put_tally, read, record_version,
};
use super::log::Appender;
use super::writer::Class;
use super::{abort, be, dec, enc, tx_err, Store, TxError};
use crate::store::{
    ActivityRecord, Commit, DeviationRecord, IngestEvent, IngestOutcome, IngestStore, Result,
    SensorRecord, VersionRecord,
};
use procguard_core::ingest::{self, EventKind};
use procguard_core::policy::Policies;
use procguard_core::{Baseline, ElementKey, ExecContext, ProcessEvent, WorkloadIdentity};
use sled::transaction::TransactionalTree;
use sled::Transactional;
use std::collections::HashSet;
use std::time::SystemTime;

#[tonic::async_trait]
impl IngestStore for Store {
    /// Events stored over the database's lifetime (replays not counted twice).
    fn events_ingested(&self) -> Result<u64> {
        Ok(self
            .meta
            .get("events_ingested")?
            .map(|v| be(&v))
            .unwrap_or(0))
    }

    /// Executions those events stood for (a summary stands for several). A database from
    /// before summaries has no such count: its events were one execution each.
    fn executions_ingested(&self) -> Result<u64> {
        match self.meta.get("executions_ingested")? {
            Some(v) => Ok(be(&v)),
            None => self.events_ingested(),
        }
    }

    /// Applies a batch from `node` without waiting for the disk: nothing of it may be
    /// acknowledged before [`IngestStore::wait_durable`] returns for the returned commit. Lets one
    /// sensor stream commit its next batch while the previous one is being flushed.
    async fn ingest_commit(
        &self,
        node: &str,
        events: &[IngestEvent],
        policies: &Policies,
        now: SystemTime,
    ) -> Result<(IngestOutcome, Commit)> {
        // A first deviation or an exec session is what people wait for: it does not queue
        // behind bookkeeping (the sensor's mark orders the queue, nothing more).
        let urgent = events.iter().any(|e| {
            (e.reported.kind == EventKind::Deviation && e.executions <= 1)
                || e.process.context == ExecContext::ExecSession
        });
        let w = self
            .writer
            .lock_as(if urgent { Class::Urgent } else { Class::Bulk })
            .await;
        // Under the writer lock, which retention's rotation also takes: both stay valid. The
        // previous generation is frozen, so it is read here: a plain read inside a sled
        // transaction would wait for the transaction's own lock.
        let (ids, previous_ids) = self.event_ids.trees();
        let mut remembered = HashSet::new();
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
            &self.meta,
            &self.activity,
            &self.log.incidents,
            &self.log.incident_keys,
            &self.log.records,
        );
        let (outcome, mut appender, (id_bytes, written)) = trees
            .transaction(
                |(
                    baselines,
                    history,
                    event_ids,
                    sensors,
                    meta,
                    activity,
                    incidents,
                    incident_keys,
                    records,
                )| {
                    let mut log = self.log.appender(now);
                    let mut sensor: SensorRecord = match sensors.get(node)? {
                        Some(v) => dec("sensors", &v).map_err(abort)?,
                        None => SensorRecord::default(),
                    };
                    // The domain steps of every event; this engine only reads and writes.
                    let mut batch = Batch {
                        event_ids,
                        remembered: &remembered,
                        id_bytes: 0,
                        baselines,
                        activity,
                        incidents: (incidents, incident_keys, records, meta),
                        max_active_incidents: self.max_active_incidents,
                        log: &mut log,
                    };
                    let applied =
                        ingest::apply(&mut batch, events, policies, now, self.max_elements)?;
                    let id_bytes = batch.id_bytes;
                    let mut out = applied.outcome;
                    let mut revision = meta.get("revision")?.map(|v| be(&v)).unwrap_or(0);
                    // Only what changed: a definition per new version, the provenance of the
                    // elements sighted, the tally if it moved.
                    let mut written = 0u64;
                    for t in applied.baselines {
                        let mut b = t.baseline;
                        if t.changed {
                            revision += 1;
                            b.revision = revision;
                            // What a re-learning window learned is named with its node, pod
                            // and image, so that `history` shows who brought it.
                            let relearned = applied.relearned.get(&b.workload.to_string());
                            let rec = VersionRecord {
                                version: b.version,
                                actor: format!("sensor:{node}"),
                                at: now,
                                action: if relearned.is_some() {
                                    "relearned"
                                } else {
                                    "learned"
                                }
                                .into(),
                                reason: relearned.cloned().unwrap_or_default(),
                                snapshot: b.clone(),
                            };
                            written += record_version(history, &rec, self.history_bytes)?;
                            written += put_definition(baselines, &b)?;
                            out.changed.push(b.clone());
                        }
                        for el in &t.sighted {
                            written += put_provenance(baselines, &b, el)?;
                        }
                        if t.tallied {
                            written += put_tally(baselines, &b)?;
                        }
                    }
                    meta.insert("revision", &revision.to_be_bytes())?;
                    for (workload, element, rec) in &applied.activity {
                        activity.insert(activity_key(workload, now, element), enc(rec))?;
                    }
                    // A lifetime count, so that stored events can be proven across restarts.
                    let stored = meta.get("events_ingested")?.map(|v| be(&v)).unwrap_or(0);
                    meta.insert(
                        "events_ingested",
                        &(stored + out.applied as u64).to_be_bytes(),
                    )?;
                    let executions = match meta.get("executions_ingested")? {
                        Some(v) => be(&v),
                        None => stored,
                    };
                    meta.insert(
                        "executions_ingested",
                        &executions.saturating_add(out.executions).to_be_bytes(),
                    )?;
                    sensor.acked_sequence = sensor.acked_sequence.max(applied.highest_sequence);
                    sensor.last_seen = Some(now);
                    sensors.insert(node, enc(&sensor))?;
                    out.acked_sequence = sensor.acked_sequence;
                    out.incidents = log.finish(incidents, records)?;
                    Ok::<_, TxError>((out, log, (id_bytes, written)))
                },
            )
            .map_err(tx_err)?;
        // Group commit: the lock is released before waiting, so batches of other sensors
        // commit meanwhile and share the next flush.
        let gen = self.log.committed(Some(&mut appender));
        self.event_ids.added(outcome.applied as u64, id_bytes);
        self.baseline_bytes
            .fetch_add(written, std::sync::atomic::Ordering::Relaxed);
        drop(w);
        Ok((outcome, Commit(gen)))
    }

    /// Returns once `commit` is on disk (sharing a flush with concurrent writers).
    async fn wait_durable(&self, commit: Commit) -> Result<()> {
        self.log.wait_durable(&self.db, commit.0).await
    }
}

/// The sled side of one batch inside its transaction: what [`ingest::apply`] reads and writes.
struct Batch<'a> {
    event_ids: &'a TransactionalTree,
    /// IDs of this batch found in the frozen previous generation (read before the transaction).
    remembered: &'a HashSet<&'a str>,
    /// Bytes of new event IDs, for the index's size.
    id_bytes: u64,
    baselines: &'a TransactionalTree,
    activity: &'a TransactionalTree,
    /// `incidents`, `incident_keys`, `records`, `meta` (active counts).
    incidents: (
        &'a TransactionalTree,
        &'a TransactionalTree,
        &'a TransactionalTree,
        &'a TransactionalTree,
    ),
    /// Active deviation incidents a workload container may have before its overflow incident.
    max_active_incidents: u64,
    log: &'a mut Appender,
}

impl ingest::BatchStore for Batch<'_> {
    type Error = TxError;

    fn first_time(&mut self, event_id: &str) -> std::result::Result<bool, TxError> {
        let id = event_id.as_bytes();
        if self.remembered.contains(event_id) || self.event_ids.get(id)?.is_some() {
            return Ok(false);
        }
        self.event_ids.insert(id, &[])?;
        self.id_bytes += id.len() as u64;
        Ok(true)
    }

    fn baseline(
        &mut self,
        workload: &WorkloadIdentity,
    ) -> std::result::Result<Option<Baseline>, TxError> {
        read(self.baselines, workload)
    }

    fn activity(
        &mut self,
        workload: &WorkloadIdentity,
        element: &ElementKey,
        now: SystemTime,
    ) -> std::result::Result<Option<ActivityRecord>, TxError> {
        match self.activity.get(activity_key(workload, now, element))? {
            Some(v) => Ok(Some(dec("activity", &v).map_err(abort)?)),
            None => Ok(None),
        }
    }

    fn deviation(
        &mut self,
        deviation: &DeviationRecord,
        baseline: &Baseline,
    ) -> std::result::Result<(), TxError> {
        // Stored once: in its log record, grouped into its incident.
        self.log.deviation(
            self.incidents,
            deviation,
            baseline,
            self.max_active_incidents,
        )?;
        Ok(())
    }

    fn exec_session(
        &mut self,
        event_id: &str,
        process: &ProcessEvent,
        baseline: &Baseline,
        session: &str,
        executions: u64,
    ) -> std::result::Result<(), TxError> {
        let (incidents, keys, _, _) = self.incidents;
        self.log.exec_session(
            (incidents, keys),
            event_id,
            process,
            baseline,
            session,
            executions,
        )
    }
}
