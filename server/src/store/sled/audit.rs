//! The audit log in sled: every baseline change and every denied or failed API call, each also
//! a record of the log (with its cursor) for the SIEM stream.
//!
//! Tree: `audit` (big-endian id → JSON [`AuditEntry`]). Ids come from sled's `generate_id`,
//! taken before the transaction (it can block on a transaction's own locks) and monotonic
//! across restarts, so an id never repeats.

use super::log::Appender;
use super::{dec, enc, tx_err, Store, TxError};
use crate::store::{AuditEntry, AuditQuery, AuditStore, Order, RecordBody, Result};
use sled::transaction::TransactionalTree;
use sled::Transactional;

/// An audit record made ready for a transaction: bounded, numbered and encoded. Written with
/// [`Pending::write`] inside the transaction of the change it records, so that a change and its
/// audit record are on disk together or not at all.
#[derive(Clone)]
pub(super) struct Pending {
    entry: AuditEntry,
    value: Vec<u8>,
}

impl Store {
    /// Bounds and numbers `entry` outside any transaction (sled's `generate_id` can block on a
    /// transaction's own locks).
    pub(super) fn pending_audit(&self, mut entry: AuditEntry) -> Result<Pending> {
        crate::store::bound_audit_entry(&mut entry);
        entry.id = self.db.generate_id()? + 1;
        let value = enc(&entry);
        Ok(Pending { entry, value })
    }

    /// Counts a committed audit record's bytes for retention.
    pub(super) fn audit_committed(&self, pending: &Pending) {
        self.audit_bytes.fetch_add(
            (8 + pending.value.len()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl Pending {
    /// Writes the record into the audit tree and the record log, inside the caller's
    /// transaction.
    pub(super) fn write(
        &self,
        audit: &TransactionalTree,
        records: &TransactionalTree,
        log: &mut Appender,
    ) -> std::result::Result<(), TxError> {
        audit.insert(&self.entry.id.to_be_bytes(), self.value.as_slice())?;
        log.push(records, RecordBody::Audit(self.entry.clone()), None, "")?;
        Ok(())
    }

    /// Names the baseline version a change made in the record's detail.
    pub(super) fn set_version(&mut self, version: u64) {
        let detail = match self.entry.detail.as_str() {
            "" => format!("version {version}"),
            d => format!("{d} (version {version})"),
        };
        self.set_detail(detail);
    }

    /// Fills in what the change found out (written with the record).
    pub(super) fn set_detail(&mut self, detail: String) {
        self.entry.detail = detail;
        crate::store::bound_audit_entry(&mut self.entry);
        self.value = enc(&self.entry);
    }
}

#[tonic::async_trait]
impl AuditStore for Store {
    /// Appends an audit record to both the audit tree and the record log, durably; returns its
    /// id.
    async fn audit(&self, entry: AuditEntry) -> Result<u64> {
        let pending = self.pending_audit(entry)?;
        let w = self.writer.lock().await;
        let mut appender = (&self.audit, &self.log.records)
            .transaction(|(audit, records)| {
                let mut log = self.log.appender(pending.entry.at);
                pending.write(audit, records, &mut log)?;
                Ok(log)
            })
            .map_err(tx_err)?;
        self.audit_committed(&pending);
        let gen = self.log.committed(Some(&mut appender));
        drop(w);
        self.log.wait_durable(&self.db, gen).await?;
        Ok(pending.entry.id)
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
