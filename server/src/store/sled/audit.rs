//! The audit log in sled: every baseline change and every denied or failed API call, each also
//! a record of the log (with its cursor) for the SIEM stream.
//!
//! Tree: `audit` (big-endian id → JSON [`AuditEntry`]). Ids come from sled's `generate_id`,
//! taken before the transaction (it can block on a transaction's own locks) and monotonic
//! across restarts, so an id never repeats.

use super::{dec, enc, tx_err, Store};
use crate::store::{AuditEntry, AuditQuery, AuditStore, Order, RecordBody, Result};
use sled::Transactional;

#[tonic::async_trait]
impl AuditStore for Store {
    /// Appends an audit record to both the audit tree and the record log, durably; returns its
    /// id.
    async fn audit(&self, mut entry: AuditEntry) -> Result<u64> {
        crate::store::bound_audit_entry(&mut entry);
        entry.id = self.db.generate_id()? + 1;
        let w = self.writer.lock().await;
        let value = enc(&entry);
        let bytes = (8 + value.len()) as u64;
        let mut appender = (&self.audit, &self.log.records)
            .transaction(|(audit, records)| {
                let mut log = self.log.appender(entry.at);
                audit.insert(&entry.id.to_be_bytes(), value.as_slice())?;
                log.push(records, RecordBody::Audit(entry.clone()), None, "")?;
                Ok(log)
            })
            .map_err(tx_err)?;
        self.audit_bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        let gen = self.log.committed(Some(&mut appender));
        drop(w);
        self.log.wait_durable(&self.db, gen).await?;
        Ok(entry.id)
    }

    /// Audit records between the query's ids, in its order, passing its time bounds.
    fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let low = query.after.saturating_add(1).to_be_bytes();
        let range = match query.before_id {
            Some(b) => self.audit.range(low..b.to_be_bytes()),
            None => self.audit.range(low..),
        };
        let range: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            match query.order {
                Order::OldestFirst => Box::new(range),
                Order::NewestFirst => Box::new(range.rev()),
            };
        let mut out = Vec::new();
        for kv in range {
            if out.len() == query.limit {
                break;
            }
            let entry: AuditEntry = dec("audit", &kv?.1)?;
            if query.matches(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }
}
