//! Incidents in sled: grouping deviations, exec sessions and sensor findings into incidents,
//! and the lifecycle actions people take on them.
//!
//! Trees: `incidents` (big-endian incident number → JSON [`Incident`]), `incident_keys`
//! (grouping key → big-endian number of the latest incident for it); `meta` keys
//! `active_incidents`, NUL, workload text form → big-endian count of that workload container's
//! active (open or acknowledged) deviation incidents, kept in the transactions that open and
//! close them and recounted at open ([`recount_active`]): past `--max-active-incidents-per-workload`
//! further executables group into the container's overflow incident. Numbers are handed out
//! under the writer lock from the log's counter (sled's `generate_id` cannot be used inside a
//! transaction), and an incident keeps its number as a `u64` all through a transaction; its
//! text form is made once, when it is opened.

use super::baselines::{read, write_version};
use super::log::Appender;
use super::{abort, be, dec, enc, tx_err, Store, TxError};
use crate::store::{
    ActionOutcome, AuditEntry, DeviationRecord, IncidentStore, Order, RecordBody, Result,
    StoreError,
};
use procguard_core::incident::{self, Action, Applied, Incident, IncidentFilter};
use procguard_core::Baseline;
use sled::transaction::TransactionalTree;
use sled::Transactional;
use std::time::SystemTime;

/// Key of a workload container's count of active deviation incidents in `meta`.
fn active_key(workload: &procguard_core::WorkloadIdentity) -> Vec<u8> {
    let mut k = ACTIVE_PREFIX.to_vec();
    k.extend_from_slice(workload.to_string().as_bytes());
    k
}

const ACTIVE_PREFIX: &[u8] = b"active_incidents\0";

/// Counts every workload container's active deviation incidents afresh (at open, before any
/// writer): the counts are then exact whatever wrote the database before, a server without
/// them included. Reads each incident once, as retention does.
pub(super) fn recount_active(incidents: &sled::Tree, meta: &sled::Tree) -> Result<()> {
    /// What the count needs of an incident (the rest is not decoded).
    #[derive(serde::Deserialize)]
    struct Head {
        kind: incident::IncidentKind,
        state: incident::IncidentState,
        workload: Option<procguard_core::WorkloadIdentity>,
    }
    let mut counts: std::collections::HashMap<Vec<u8>, u64> = std::collections::HashMap::new();
    for kv in incidents.iter() {
        let (_, v) = kv?;
        let h: Head = dec("incidents", &v)?;
        if let (incident::IncidentKind::Deviation, true, Some(w)) =
            (h.kind, h.state.is_active(), &h.workload)
        {
            *counts.entry(active_key(w)).or_default() += 1;
        }
    }
    let mut batch = sled::Batch::default();
    for kv in meta.scan_prefix(ACTIVE_PREFIX) {
        let (k, _) = kv?;
        if !counts.contains_key(k.as_ref()) {
            batch.remove(k);
        }
    }
    for (k, n) in counts {
        batch.insert(k, &n.to_be_bytes());
    }
    meta.apply_batch(batch)?;
    Ok(())
}

impl Appender {
    /// The active incident `key` points to, with its number, *taken out* of this transaction's
    /// pending copies (the caller puts it back into `self.incidents`) or read from the tree.
    /// Taking avoids cloning an incident and its samples for every deviation of a batch.
    fn take_active(
        &mut self,
        (incidents, keys): (&TransactionalTree, &TransactionalTree),
        key: &str,
    ) -> std::result::Result<Option<(u64, Incident)>, TxError> {
        let Some(v) = keys.get(key.as_bytes())? else {
            return Ok(None);
        };
        let n = be(&v);
        if let Some(pending) = self.incidents.get(&n) {
            return Ok(if pending.state.is_active() {
                self.incidents.remove(&n).map(|i| (n, i))
            } else {
                None
            });
        }
        Ok(match incidents.get(n.to_be_bytes())? {
            Some(v) => Some(dec::<Incident>("incidents", &v).map_err(abort)?)
                .filter(|i| i.state.is_active())
                .map(|i| (n, i)),
            None => None,
        })
    }

    /// Reads an incident, preferring this transaction's pending copy.
    fn incident(
        &self,
        incidents: &TransactionalTree,
        n: u64,
    ) -> std::result::Result<Option<Incident>, TxError> {
        if let Some(i) = self.incidents.get(&n) {
            return Ok(Some(i.clone()));
        }
        match incidents.get(n.to_be_bytes())? {
            Some(v) => Ok(Some(dec("incidents", &v).map_err(abort)?)),
            None => Ok(None),
        }
    }

    /// Groups one deviation into its incident and appends the deviation record. An executable
    /// without an active incident of its own opens one, unless its workload container already
    /// has `cap` active deviation incidents: it then joins the container's overflow incident
    /// (opened for it if there is none active), counted there and recorded in the log all
    /// the same.
    pub(super) fn deviation(
        &mut self,
        (incidents, keys, records, meta): (
            &TransactionalTree,
            &TransactionalTree,
            &TransactionalTree,
            &TransactionalTree,
        ),
        rec: &DeviationRecord,
        baseline: &Baseline,
        cap: u64,
    ) -> std::result::Result<u64, TxError> {
        let p = &rec.process;
        let key = incident::group_key(&p.workload, &procguard_core::ElementKey::of(p));
        let (n, incident) = match self.take_active((incidents, keys), &key)? {
            Some((n, mut i)) => {
                i.record_deviation(&rec.event_id, p, baseline, rec.at);
                (n, i)
            }
            None => {
                let counter = active_key(&p.workload);
                let active = meta.get(&counter)?.map(|v| be(&v)).unwrap_or(0);
                if active < cap {
                    meta.insert(counter, &(active + 1).to_be_bytes())?;
                    let n = self.open_number(keys, &key)?;
                    let i =
                        Incident::from_deviation(n.to_string(), &rec.event_id, p, baseline, rec.at);
                    (n, i)
                } else {
                    let key = incident::overflow_key(&p.workload);
                    match self.take_active((incidents, keys), &key)? {
                        Some((n, mut i)) => {
                            i.record_deviation(&rec.event_id, p, baseline, rec.at);
                            (n, i)
                        }
                        None => {
                            let n = self.open_number(keys, &key)?;
                            let i = Incident::overflow(
                                n.to_string(),
                                &rec.event_id,
                                p,
                                baseline,
                                rec.at,
                                cap,
                            );
                            (n, i)
                        }
                    }
                }
            }
        };
        let cursor = self.push(
            records,
            RecordBody::Deviation {
                incident_id: incident.id.clone(),
                deviation: rec.clone(),
            },
            Some(incident.severity),
            &p.workload.namespace,
        )?;
        let mut incident = incident;
        incident.add_repeats(rec.executions);
        self.incidents.insert(n, incident);
        Ok(cursor)
    }

    /// Hands out the next incident number and points grouping key `key` at it.
    fn open_number(
        &mut self,
        keys: &TransactionalTree,
        key: &str,
    ) -> std::result::Result<u64, TxError> {
        let n = self.next_incident;
        self.next_incident += 1;
        keys.insert(key.as_bytes(), &n.to_be_bytes())?;
        Ok(n)
    }

    /// Raises or extends the "interactive session" incident of exec session `session`, one
    /// of whose processes is `p` (allowed or not: its deviations are incidents of their own).
    pub(super) fn exec_session(
        &mut self,
        (incidents, keys): (&TransactionalTree, &TransactionalTree),
        event_id: &str,
        p: &procguard_core::ProcessEvent,
        baseline: &Baseline,
        session: &str,
        executions: u64,
    ) -> std::result::Result<(), TxError> {
        let key = incident::session_key(&p.workload, session);
        let current = self.take_active((incidents, keys), &key)?;
        let (n, incident) = match current {
            Some((n, mut i)) => {
                i.record_session_event(event_id, p, baseline, self.at);
                (n, i)
            }
            None => {
                let n = self.open_number(keys, &key)?;
                (
                    n,
                    Incident::exec_session(n.to_string(), event_id, p, baseline, self.at),
                )
            }
        };
        let mut incident = incident;
        incident.add_repeats(executions);
        self.incidents.insert(n, incident);
        Ok(())
    }

    /// Raises or extends the sensor-blind incident of `node`.
    pub(super) fn blind(
        &mut self,
        (incidents, keys): (&TransactionalTree, &TransactionalTree),
        node: &str,
        reason: String,
    ) -> std::result::Result<(), TxError> {
        let key = incident::sensor_key(node);
        let current = self.take_active((incidents, keys), &key)?;
        let (n, incident) = match current {
            Some((n, mut i)) => {
                i.record_blind(reason, self.at);
                (n, i)
            }
            None => {
                let n = self.open_number(keys, &key)?;
                (
                    n,
                    Incident::sensor_blind(n.to_string(), node, reason, self.at),
                )
            }
        };
        self.incidents.insert(n, incident);
        Ok(())
    }

    /// Writes every incident changed in this transaction and appends one incident record
    /// each (a batch of a thousand identical deviations is one incident change, not a
    /// thousand). Returns the changed incidents.
    pub(super) fn finish(
        &mut self,
        incidents: &TransactionalTree,
        records: &TransactionalTree,
    ) -> std::result::Result<Vec<Incident>, TxError> {
        let mut out = Vec::new();
        for (n, mut i) in std::mem::take(&mut self.incidents) {
            incidents.insert(&n.to_be_bytes(), enc(&i))?;
            // The record goes without samples; clone the incident without them.
            let samples = std::mem::take(&mut i.samples);
            let slim = i.clone();
            i.samples = samples;
            let ns = i.namespace().to_string();
            self.push(records, RecordBody::Incident(slim), Some(i.severity), &ns)?;
            out.push(i);
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl IncidentStore for Store {
    /// One incident, with samples.
    fn incident(&self, id: u64) -> Result<Incident> {
        match self.log.incidents.get(id.to_be_bytes())? {
            Some(v) => dec("incidents", &v),
            None => Err(StoreError::NotFound(format!("incident '{id}'"))),
        }
    }

    /// Incidents passing `filter` in ID order, after the incident numbered `after`.
    fn incidents(
        &self,
        filter: &IncidentFilter,
        cursor: Option<u64>,
        limit: usize,
        order: Order,
    ) -> Result<(Vec<Incident>, Option<u64>)> {
        let tree = &self.log.incidents;
        let range: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match order {
            Order::OldestFirst => {
                let start = cursor.map_or(0, |a| a.saturating_add(1));
                Box::new(tree.range(start.to_be_bytes()..))
            }
            Order::NewestFirst => match cursor {
                Some(c) => Box::new(tree.range(..c.to_be_bytes()).rev()),
                None => Box::new(tree.iter().rev()),
            },
        };
        let mut out: Vec<Incident> = Vec::new();
        let mut last = 0;
        for kv in range {
            let (k, v) = kv?;
            let i: Incident = dec("incidents", &v)?;
            if filter.matches(&i) {
                if out.len() == limit {
                    return Ok((out, Some(last)));
                }
                out.push(i);
                last = be(&k);
            }
        }
        Ok((out, None))
    }

    /// Applies a person's action to an incident, appends its record, and makes it durable.
    ///
    /// The check and the change happen in one transaction under the writer lock, so of
    /// concurrent actions on one incident exactly one order wins and every caller sees the
    /// outcome of that order. Repeating the action that led to the current state is a success
    /// that changes nothing and appends no record. `Allow` adds the executable to the
    /// workload's baseline as a new version in the *same* transaction as the incident change,
    /// so a baseline is never changed for an incident that another action closed meanwhile,
    /// and a doubled allow makes one version, not two.
    async fn incident_action(
        &self,
        id: u64,
        action: Action,
        actor: &str,
        reason: &str,
        audit: AuditEntry,
    ) -> Result<ActionOutcome> {
        let n = id;
        let now = SystemTime::now();
        let pending = self.pending_audit(audit)?;
        let w = self.writer.lock().await;
        let trees = (
            &self.log.incidents,
            &self.log.records,
            &self.baselines,
            &self.history,
            &self.meta,
            &self.audit,
        );
        let (outcome, mut appender, pending) = trees
            .transaction(|(incidents, records, baselines, history, meta, audit)| {
                let mut log = self.log.appender(now);
                let mut i = log
                    .incident(incidents, n)?
                    .ok_or_else(|| abort(StoreError::NotFound(format!("incident '{id}'"))))?;
                let applied = i
                    .apply(action, actor, reason, now)
                    .map_err(|e| abort(StoreError::Rejected(e.to_string())))?;
                // A deviation incident closed (an action changes only an active one) frees its
                // place under its workload container's cap.
                if applied == Applied::Changed
                    && i.kind == incident::IncidentKind::Deviation
                    && !i.state.is_active()
                {
                    if let Some(w) = &i.workload {
                        let counter = active_key(w);
                        let active = meta.get(&counter)?.map(|v| be(&v)).unwrap_or(0);
                        match active.saturating_sub(1) {
                            0 => meta.remove(counter)?,
                            n => meta.insert(counter, &n.to_be_bytes())?,
                        };
                    }
                }
                if applied == Applied::Unchanged {
                    let outcome = ActionOutcome {
                        incident: i,
                        changed: false,
                        baseline: None,
                        allowed: None,
                    };
                    return Ok((outcome, log, None));
                }
                let mut allowed = None;
                let baseline = if action == Action::Allow {
                    let workload = i.workload.clone().ok_or_else(|| {
                        abort(StoreError::Rejected(format!(
                            "incident {id} has no workload to allow in"
                        )))
                    })?;
                    let mut b: Baseline = match read(baselines, &workload)? {
                        Some(b) => b,
                        None => {
                            return Err(abort(StoreError::NotFound(format!(
                                "baseline of incident {id}'s workload {workload}"
                            ))))
                        }
                    };
                    allowed = Some(
                        i.allow_in(&mut b, now)
                            .map_err(|e| abort(StoreError::Rejected(e)))?,
                    );
                    // Every change is a new version (as in `Store::change`).
                    b.version += 1;
                    let reason = format!("incident {id}: {reason}");
                    Some(write_version(
                        (baselines, history, meta),
                        b,
                        actor,
                        "allowed",
                        &reason,
                        now,
                        self.history_bytes,
                    )?)
                } else {
                    None
                };
                log.incidents.insert(n, i);
                let mut changed = log.finish(incidents, records)?;
                // The audit record says exactly what was allowed: element and contents.
                let mut pending = pending.clone();
                if let (Some(a), Some(b)) = (&allowed, &baseline) {
                    pending.set_detail(format!("{a} in {} (version {})", b.workload, b.version));
                }
                pending.write(audit, records, &mut log)?;
                let outcome = ActionOutcome {
                    incident: changed.pop().expect("one incident"),
                    changed: true,
                    baseline,
                    allowed,
                };
                Ok((outcome, log, Some(pending)))
            })
            .map_err(tx_err)?;
        if let Some(p) = &pending {
            self.audit_committed(p);
        }
        // Also for an unchanged incident: the state it reports may come from a concurrent
        // action that is committed but not yet on disk.
        let gen = self.log.committed(Some(&mut appender));
        drop(w);
        self.log.wait_durable(&self.db, gen).await?;
        Ok(outcome)
    }
}
