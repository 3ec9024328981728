//! Retention in sled: the oldest records of the log go by age and by total size, in small
//! batches without the writer lock, after the new floor (the highest removed cursor) is
//! recorded in `meta` key `log_floor`; incidents themselves are kept. A pass also rotates the
//! event-ID index (see [`super::event_ids`]).

use super::{be, dec, Store};
use crate::store::{
    AuditEntry, LogRecord, LogStore, RecordBody, Result, Retention, RetentionOutcome,
    RetentionStore,
};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// Records removed per retention step; small enough that a step never holds sled busy for
/// long, so ingest does not notice retention running.
const RETENTION_STEP: usize = 512;

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
        if out.removed > 0 || out.event_ids_rotated || out.audit_removed > 0 {
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
