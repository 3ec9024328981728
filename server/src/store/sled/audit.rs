//! The audit log in sled: every baseline change and every denied or failed API call, each also
//! a record of the log (with its cursor) for the SIEM stream.
//!
//! Tree: `audit` (big-endian id → JSON [`AuditEntry`]). Ids come from sled's `generate_id`,
//! taken before the transaction (it can block on a transaction's own locks) and monotonic
//! across restarts, so an id never repeats.

use super::{dec, enc, tx_err, Store};
use crate::store::{AuditEntry, AuditStore, RecordBody, Result};
use sled::Transactional;

#[tonic::async_trait]
impl AuditStore for Store {
    /// Appends an audit record to both the audit tree and the record log, durably; returns its
    /// id.
    async fn audit(&self, mut entry: AuditEntry) -> Result<u64> {
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

    /// Audit records with id greater than `after`, oldest first.
    fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.audit
            .range((after + 1).to_be_bytes()..)
            .take(limit)
            .map(|kv| dec("audit", &kv?.1))
            .collect()
    }
}
