//! Retention in sled: the oldest records of the log go by age and by total size, in small
//! batches without the writer lock, after the new floor (the highest removed cursor) is
//! recorded in `meta` key `log_floor`. A pass also rotates the event-ID index (see
//! [`super::event_ids`]), trims the audit log, removes closed incidents past their age or
//! count (open and acknowledged ones stay), and the records of sensors silent past theirs.
//! Incidents and sensor records go by compare-and-swap, so a concurrent change to one keeps it.

use super::{be, dec, Store};
use crate::store::{
    AuditEntry, LogRecord, LogStore, RecordBody, Result, Retention, RetentionOutcome,
    RetentionStore, SensorRecord,
};
use procguard_core::incident::IncidentState;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

/// Records removed per retention step; small enough that a step never holds sled busy for
/// long, so ingest does not notice retention running.
const RETENTION_STEP: usize = 512;

/// How often retention reads every incident to find the closed ones past their age or count:
/// incident ages count in days, and a read of every incident is not free.
pub(super) const INCIDENT_SCAN_EVERY: Duration = Duration::from_secs(600);

/// What retention reads of an incident: whether it is closed, and since when.
#[derive(serde::Deserialize)]
struct Closing {
    state: IncidentState,
    updated_at: SystemTime,
}

impl Store {
    /// Removes the oldest audit entries past `retention`'s audit age or size, a step at a
    /// time; returns how many went. The audit log is append-only in id order, so the oldest
    /// are at the front.
    async fn enforce_audit_retention(&self, retention: &Retention, now: SystemTime) -> Result<u64> {
        let mut removed = 0u64;
        loop {
            let mut batch = sled::Batch::default();
            let mut freed = 0u64;
            let mut n = 0;
            for kv in self.audit.iter() {
                let (k, v) = kv?;
                if n == RETENTION_STEP {
                    break;
                }
                let entry: AuditEntry = dec("audit", &v)?;
                let old =
                    now.duration_since(entry.at).unwrap_or_default() > retention.audit_max_age;
                let over = self
                    .audit_bytes
                    .load(Ordering::Relaxed)
                    .saturating_sub(freed)
                    > retention.audit_max_bytes;
                if !(old || over) {
                    break;
                }
                freed += (k.len() + v.len()) as u64;
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.audit.apply_batch(batch)?;
            self.audit_bytes.fetch_sub(
                freed.min(self.audit_bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            removed += n as u64;
            if n < RETENTION_STEP {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(removed)
    }

    /// Bytes of audit entries held (keys plus values).
    pub fn audit_bytes(&self) -> u64 {
        self.audit_bytes.load(Ordering::Relaxed)
    }

    /// Removes closed incidents (resolved, allowed) last changed more than `retention`'s
    /// incident age ago, then the longest closed past its count, with the grouping keys that
    /// still point at them; returns how many went. At most every [`INCIDENT_SCAN_EVERY`].
    async fn enforce_incident_retention(
        &self,
        retention: &Retention,
        now: SystemTime,
    ) -> Result<u64> {
        {
            let mut last = self.incidents_scanned.lock().expect("incident scan time");
            if last.is_some_and(|t| now.duration_since(t).unwrap_or_default() < INCIDENT_SCAN_EVERY)
            {
                return Ok(0);
            }
            *last = Some(now);
        }
        let incidents = &self.log.incidents;
        // (closed since, number) of every closed incident.
        let mut closed = Vec::new();
        for (i, kv) in incidents.iter().enumerate() {
            let (k, v) = kv?;
            let c: Closing =
                serde_json::from_slice(&v).map_err(|source| crate::store::StoreError::Corrupt {
                    tree: "incidents",
                    source,
                })?;
            if !c.state.is_active() {
                closed.push((c.updated_at, be(&k)));
            }
            if i % RETENTION_STEP == RETENTION_STEP - 1 {
                tokio::task::yield_now().await;
            }
        }
        closed.sort_unstable();
        let over = (closed.len() as u64).saturating_sub(retention.incident_max_closed) as usize;
        let doomed: Vec<u64> = closed
            .iter()
            .enumerate()
            .filter(|(i, (at, _))| {
                *i < over
                    || now.duration_since(*at).unwrap_or_default() > retention.incident_max_age
            })
            .map(|(_, (_, n))| *n)
            .collect();
        let mut removed = HashSet::new();
        for (i, n) in doomed.into_iter().enumerate() {
            let key = n.to_be_bytes();
            let Some(v) = incidents.get(key)? else {
                continue;
            };
            // Still closed, as read: an incident changed meanwhile is left for the next scan.
            let c: Closing = dec("incidents", &v)?;
            if c.state.is_active() {
                continue;
            }
            if incidents
                .compare_and_swap(key, Some(&v), None as Option<&[u8]>)?
                .is_ok()
            {
                removed.insert(n);
            }
            if i % RETENTION_STEP == RETENTION_STEP - 1 {
                tokio::task::yield_now().await;
            }
        }
        if !removed.is_empty() {
            for kv in self.log.incident_keys.iter() {
                let (k, v) = kv?;
                if removed.contains(&be(&v)) {
                    // Only if it still points there: a new incident for the key keeps it.
                    let _ = self.log.incident_keys.compare_and_swap(
                        &k,
                        Some(&v),
                        None as Option<&[u8]>,
                    )?;
                }
            }
        }
        Ok(removed.len() as u64)
    }

    /// Removes the records (and health records) of sensors not heard from for `retention`'s
    /// sensor age; recounts the records kept. Returns how many went.
    fn enforce_sensor_retention(&self, retention: &Retention, now: SystemTime) -> Result<u64> {
        let mut removed = 0;
        let mut kept = 0;
        for kv in self.sensors.iter() {
            let (k, v) = kv?;
            let rec: SensorRecord = dec("sensors", &v)?;
            let silent = rec.last_seen.is_none_or(|at| {
                now.duration_since(at).unwrap_or_default() > retention.sensor_max_age
            });
            if silent
                && self
                    .sensors
                    .compare_and_swap(&k, Some(&v), None as Option<&[u8]>)?
                    .is_ok()
            {
                self.log.health.remove(&k)?;
                removed += 1;
            } else {
                kept += 1;
            }
        }
        self.sensor_count.store(kept, Ordering::Relaxed);
        Ok(removed)
    }
}

#[tonic::async_trait]
impl RetentionStore for Store {
    /// Applies `retention`: removes the oldest records past its age or size, a few hundred at a time without the writer lock, and
    /// rotates the event-ID index (see `event_ids.rs`). Returns what it removed.
    async fn enforce_retention(
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
            let mut deviations = 0;
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
                    deviations += 1;
                }
                batch.remove(k);
                last = Some(cursor);
                n += 1;
            }
            let Some(floor) = last else { break };
            // The floor is written first: a crash between the writes only makes a few stored
            // records look expired, never hides a gap.
            self.meta.insert("log_floor", &floor.to_be_bytes())?;
            self.log.state.floor.fetch_max(floor, Ordering::SeqCst);
            self.log.records.apply_batch(batch)?;
            out.deviations_removed += deviations;
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
        out.audit_removed = self.enforce_audit_retention(&retention, now).await?;
        out.incidents_removed = self.enforce_incident_retention(&retention, now).await?;
        out.sensors_removed = self.enforce_sensor_retention(&retention, now)?;
        if out.removed > 0
            || out.event_ids_rotated
            || out.audit_removed > 0
            || out.incidents_removed > 0
            || out.sensors_removed > 0
        {
            self.db.flush_async().await?;
        }
        Ok(out)
    }

    /// Approximate bytes held by the record log.
    fn log_bytes(&self) -> u64 {
        self.log.state.bytes.load(Ordering::Relaxed)
    }

    /// Event IDs remembered for ingest idempotency (both generations).
    fn event_ids_remembered(&self) -> u64 {
        self.event_ids.len()
    }

    /// sled's own figure: the size of its file and blob directory.
    fn database_bytes(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}
