//! Ingest in sled: one sensor batch in one transaction (baselines, history, activity, event
//! IDs, incidents and their log records, the sensor's acknowledged sequence, the stored-event
//! count), under the writer lock, then group commit (see [`super::log`]).
//!
//! `meta` key `events_ingested`: big-endian u64, events stored over the database's lifetime.

use super::baselines::{activity_key, history_key};
use super::{be, dec, enc, tx_err, Store, TxError};
use crate::store::{
    ActivityRecord, Commit, DeviationRecord, IngestEvent, IngestOutcome, IngestStore, Result,
    SensorRecord, VersionRecord,
};
use procguard_core::baseline::Observation;
use procguard_core::policy::Policies;
use procguard_core::{Baseline, BaselineState, ElementKey};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use std::collections::BTreeMap;
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

    /// Applies a batch from `node` without waiting for the disk: nothing of it may be
    /// acknowledged before [`Store::wait_durable`] returns for the returned commit. Lets one
    /// sensor stream commit its next batch while the previous one is being flushed.
    async fn ingest_commit(
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
                                    reported: ev.reported,
                                };
                                // Stored once: in its log record, grouped into its incident.
                                log.deviation((incidents, incident_keys, records), &rec, b)?;
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
    async fn wait_durable(&self, commit: Commit) -> Result<()> {
        self.log.wait_durable(&self.db, commit.0).await
    }
}
