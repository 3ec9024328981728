//! Baselines in sled: the current version of each, its history, the server-wide revision, and
//! per-day activity per element for dry runs.
//!
//! Trees: `baselines` (workload text form → JSON [`Baseline`], the current version),
//! `history` (workload text form, NUL, big-endian version → JSON [`VersionRecord`]),
//! `activity` (workload text form, NUL, big-endian day number, NUL, element → JSON
//! [`ActivityRecord`]: how often each element ran per day); `meta` key `revision` (big-endian
//! u64, bumped by every baseline change, in the same transaction).

use super::{be, dec, enc, tx_err, Store, TxError};
use crate::store::{
    day_of, ActivityRecord, AuditEntry, BaselineChange, BaselineFilter, BaselineStore, ChangeBy,
    Result, StoreError, VersionRecord,
};
use procguard_core::policy::Policies;
use procguard_core::{Baseline, BaselineState, ElementKey, WorkloadIdentity};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;
use std::time::SystemTime;

fn activity_prefix(id: &WorkloadIdentity) -> Vec<u8> {
    let mut k = id.to_string().into_bytes();
    k.push(0);
    k
}

pub(super) fn activity_key(id: &WorkloadIdentity, now: SystemTime, el: &ElementKey) -> Vec<u8> {
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

/// Versions of one baseline kept in its history: the newest ones. An older version is
/// forgotten when a newer one is written (`get --version` then says it is no longer kept).
pub const HISTORY_VERSIONS: u64 = 1000;

/// Writes a version's history record, and forgets the version [`HISTORY_VERSIONS`] before it.
pub(super) fn record_version(
    history: &TransactionalTree,
    rec: &VersionRecord,
) -> std::result::Result<(), sled::transaction::UnabortableTransactionError> {
    let id = &rec.snapshot.workload;
    history.insert(history_key(id, rec.version), enc(rec))?;
    if rec.version > HISTORY_VERSIONS {
        history.remove(history_key(id, rec.version - HISTORY_VERSIONS))?;
    }
    Ok(())
}

pub(super) fn history_key(id: &WorkloadIdentity, version: u64) -> Vec<u8> {
    let mut k = id.to_string().into_bytes();
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// Writes `b` (its version already bumped) as the current baseline and a history entry, with
/// the next server-wide revision, inside a transaction.
pub(super) fn write_version(
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
    record_version(history, &rec)?;
    Ok(b)
}

impl Store {
    /// The server-wide baseline revision.
    pub fn revision(&self) -> Result<u64> {
        Ok(self.meta.get("revision")?.map(|v| be(&v)).unwrap_or(0))
    }

    /// Keys of elements (for tests and diagnostics).
    pub fn element_keys(b: &Baseline) -> Vec<ElementKey> {
        b.elements.keys().cloned().collect()
    }
}

#[tonic::async_trait]
impl BaselineStore for Store {
    fn baseline(&self, id: &WorkloadIdentity, version: u64) -> Result<Baseline> {
        if version == 0 {
            return match self.baselines.get(id.to_string())? {
                Some(v) => dec("baselines", &v),
                None => Err(StoreError::NotFound(id.to_string())),
            };
        }
        match self.history.get(history_key(id, version))? {
            Some(v) => Ok(dec::<VersionRecord>("history", &v)?.snapshot),
            // A version above the current one, or one never recorded, of a baseline that
            // exists; a baseline that does not exist is NotFound whatever the version.
            None => Err(match self.baselines.get(id.to_string())? {
                Some(_) => StoreError::NoVersion {
                    workload: id.to_string(),
                    version,
                },
                None => StoreError::NotFound(id.to_string()),
            }),
        }
    }

    /// Lists baselines passing `filter`, in key order, starting after `after` (a workload text form).
    fn baselines(
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
    fn enforcing(&self) -> Result<(u64, Vec<Baseline>)> {
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
    async fn change(
        &self,
        id: &WorkloadIdentity,
        by: ChangeBy<'_>,
        create: bool,
        change: BaselineChange<'_>,
    ) -> Result<Baseline> {
        let ChangeBy {
            actor,
            action,
            reason,
            audit,
        } = by;
        let pending = audit.map(|a| self.pending_audit(a)).transpose()?;
        let w = self.writer.lock().await;
        let now = SystemTime::now();
        // The version before the change: 0 for a baseline this change creates (its first is 1).
        let (mut b, before) = match self.baselines.get(id.to_string())? {
            Some(v) => {
                let b: Baseline = dec("baselines", &v)?;
                let v = b.version;
                (b, v)
            }
            None if create => (Baseline::new(id.clone(), now), 0),
            None => return Err(StoreError::NotFound(id.to_string())),
        };
        change(&mut b).map_err(StoreError::Rejected)?;
        // Every API change is one version, even one that only restates the current content or
        // makes several edits: versions count 1, 2, 3 … per baseline, each with its history.
        b.version = before + 1;
        b.updated_at = now;
        let trees = (
            &self.baselines,
            &self.history,
            &self.meta,
            &self.audit,
            &self.log.records,
        );
        let (b, mut appender, pending) = trees
            .transaction(|(baselines, history, meta, audit, records)| {
                let mut log = self.log.appender(now);
                let b = write_version(
                    (baselines, history, meta),
                    b.clone(),
                    actor,
                    action,
                    reason,
                    now,
                )?;
                let pending = pending.clone().map(|mut p| {
                    p.set_version(b.version);
                    p
                });
                if let Some(p) = &pending {
                    p.write(audit, records, &mut log)?;
                }
                Ok((b, log, pending))
            })
            .map_err(tx_err)?;
        if let Some(p) = &pending {
            self.audit_committed(p);
        }
        let gen = self.log.committed(Some(&mut appender));
        drop(w);
        self.log.wait_durable(&self.db, gen).await?;
        Ok(b)
    }

    /// Ends learning for baselines whose evidence says so; returns the ones that changed.
    async fn evaluate_learning(
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
                .change(
                    &id,
                    ChangeBy {
                        actor: "policy",
                        action: "learning-ended",
                        reason: "",
                        audit: None,
                    },
                    false,
                    &|b| {
                        let policy = policies.for_baseline(b).clone();
                        match b.evaluate_learning(&policy, now) {
                            Some(_) => Ok(()),
                            None => Err("no longer due".into()),
                        }
                    },
                )
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
    fn history(&self, id: &WorkloadIdentity) -> Result<Vec<VersionRecord>> {
        let mut prefix = id.to_string().into_bytes();
        prefix.push(0);
        self.history
            .scan_prefix(prefix)
            .map(|kv| dec("history", &kv?.1))
            .collect()
    }

    /// Activity of one workload from day `from_day` on: (day, element, record).
    fn activity(
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
    fn prune_activity(&self, before_day: u32) -> Result<usize> {
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
    async fn import(
        &self,
        items: Vec<Baseline>,
        actor: &str,
        reason: &str,
        audit: AuditEntry,
    ) -> Result<Vec<Baseline>> {
        let pending = self.pending_audit(audit)?;
        let w = self.writer.lock().await;
        let now = SystemTime::now();
        let trees = (
            &self.baselines,
            &self.history,
            &self.meta,
            &self.audit,
            &self.log.records,
        );
        let (out, mut appender) = trees
            .transaction(|(baselines, history, meta, audit, records)| {
                let mut log = self.log.appender(now);
                pending.write(audit, records, &mut log)?;
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
                    record_version(history, &rec)?;
                    out.push(b);
                }
                meta.insert("revision", &revision.to_be_bytes())?;
                Ok::<_, TxError>((out, log))
            })
            .map_err(tx_err)?;
        self.audit_committed(&pending);
        let gen = self.log.committed(Some(&mut appender));
        drop(w);
        self.log.wait_durable(&self.db, gen).await?;
        Ok(out)
    }
}
