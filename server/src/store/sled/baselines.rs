//! Baselines in sled: the current version of each, its history, the server-wide revision, and
//! per-day activity per element for dry runs.
//!
//! Trees: `baselines`, each baseline as three kinds of key, so that a batch of sightings
//! writes only what it changed (issue 13):
//! - workload text form → JSON [`Baseline`], its *definition* as of its current version, with
//!   every element's provenance kept apart ([`Provenance::apart`], not serialised);
//! - workload, NUL, element (executable path, NUL, script path, and NUL and applet if it has
//!   one) → JSON [`Provenance`] of that element, its *sets* (nodes, pods, parents, contents,
//!   images, contexts, a sample argv) with its counters left at zero and its times at the
//!   epoch. Rewritten only when a set changed: once every set is full or holds what runs, a
//!   sighting leaves it alone;
//! - workload, NUL, 0xFF, element → the element's *counters* ([`Counters`], 32 bytes): first
//!   and last sighting and sightings, which every sighting moves. 0xFF is in no UTF-8 text, so
//!   this key is no element's. Provenance written before counters were apart has none: its
//!   own counters stand;
//! - workload, NUL → JSON [`Tally`](procguard_core::baseline::Tally) (learning summary, image
//!   digests, coverage: what a sighting changes besides provenance), which stands for the
//!   definition's own copy.
//!
//! A workload's keys are contiguous (no workload text holds a NUL), so a range read returns
//! each definition followed by its evidence, and every transaction that writes a baseline
//! already holds the tree. Reads join the three ([`join`]); an element whose provenance is not
//! apart in its definition (a database written before, not yet split) keeps it. Databases
//! written before (whole baselines) are split at open ([`split_whole`]; `meta` key
//! `baseline_layout` = 2 once done); a server from before cannot read a split database. The
//! provenance of an element a reset or an import dropped stays until the element returns (it
//! is then overwritten) and is never read.
//!
//! `history` (workload text form, NUL, big-endian version → JSON [`VersionRecord`], whose
//! snapshot is the whole baseline of that version, provenance included: `get --version` shows
//! it as it was), `activity` (workload text form, NUL, big-endian day number, NUL, element →
//! JSON [`ActivityRecord`]: how often each element ran per day); `meta` key `revision`
//! (big-endian u64, bumped by every baseline change, in the same transaction).

use super::{be, dec, enc, tx_err, Store, TxError};
use crate::store::{
    day_of, ActivityRecord, AuditEntry, BaselineChange, BaselineFilter, BaselineStore, ChangeBy,
    Result, StoreError, VersionRecord,
};
use procguard_core::baseline::Provenance;
use procguard_core::policy::Policies;
use procguard_core::review::{ImportAction, ImportChange};
use procguard_core::{Baseline, BaselineState, ElementKey, WorkloadIdentity};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::{IVec, Transactional};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Key of the [`Tally`](procguard_core::baseline::Tally) of the baseline `workload` (its text
/// form) in `baselines`.
fn tally_key(workload: &str) -> Vec<u8> {
    let mut k = workload.as_bytes().to_vec();
    k.push(0);
    k
}

/// Key of the provenance of `el` of the baseline `workload` in `baselines`: longer than the
/// tally's key (the element adds at least one NUL), so the two never meet.
pub(super) fn provenance_key(workload: &str, el: &ElementKey) -> Vec<u8> {
    let mut k = tally_key(workload);
    push_element(&mut k, el);
    k
}

/// Key of the counters of `el` of the baseline `workload` in `baselines` (see the module
/// documentation).
pub(super) fn counters_key(workload: &str, el: &ElementKey) -> Vec<u8> {
    let mut k = tally_key(workload);
    k.push(0xFF);
    push_element(&mut k, el);
    k
}

/// The counters of an element's provenance, which every sighting moves, stored apart from its
/// sets, which few sightings change: seconds and nanoseconds of the first and the last
/// sighting since the epoch, then sightings, each big-endian (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    first_seen: SystemTime,
    last_seen: SystemTime,
    count: u64,
}

impl Counters {
    const LEN: usize = 32;

    fn of(p: &Provenance) -> Self {
        Self {
            first_seen: p.first_seen,
            last_seen: p.last_seen,
            count: p.count,
        }
    }

    /// Sets `p`'s counters to these.
    fn apply(self, p: &mut Provenance) {
        p.first_seen = self.first_seen;
        p.last_seen = self.last_seen;
        p.count = self.count;
    }

    fn encode(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        for (i, t) in [self.first_seen, self.last_seen].into_iter().enumerate() {
            // A time before the epoch is stored as the epoch (JSON cannot hold one either).
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            out[i * 12..i * 12 + 8].copy_from_slice(&d.as_secs().to_be_bytes());
            out[i * 12 + 8..i * 12 + 12].copy_from_slice(&d.subsec_nanos().to_be_bytes());
        }
        out[24..].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    fn decode(v: &[u8]) -> Result<Self> {
        let bad = || StoreError::Corrupt {
            tree: "baselines",
            source: serde::de::Error::custom(format!(
                "element counters of {} bytes, not {} or out of range",
                v.len(),
                Self::LEN
            )),
        };
        let v: &[u8; Self::LEN] = v.try_into().map_err(|_| bad())?;
        let time = |at: usize| {
            let secs = u64::from_be_bytes(v[at..at + 8].try_into().expect("8 bytes"));
            let nanos = u32::from_be_bytes(v[at + 8..at + 12].try_into().expect("4 bytes"));
            (nanos < 1_000_000_000)
                .then(|| UNIX_EPOCH.checked_add(Duration::new(secs, nanos)))
                .flatten()
                .ok_or_else(bad)
        };
        Ok(Self {
            first_seen: time(0)?,
            last_seen: time(12)?,
            count: u64::from_be_bytes(v[24..].try_into().expect("8 bytes")),
        })
    }
}

/// An element's provenance as its sets record stores it: counters at zero, times at the epoch.
fn sets_of(p: &Provenance) -> Vec<u8> {
    let mut sets = p.clone();
    Counters {
        first_seen: UNIX_EPOCH,
        last_seen: UNIX_EPOCH,
        count: 0,
    }
    .apply(&mut sets);
    enc(&sets)
}

fn push_element(k: &mut Vec<u8>, el: &ElementKey) {
    k.extend_from_slice(el.exe_path.as_bytes());
    k.push(0);
    k.extend_from_slice(el.script_path.as_bytes());
    // Keys written before applets existed end here; an applet-less element still does.
    if !el.applet.is_empty() {
        k.push(0);
        k.extend_from_slice(el.applet.as_bytes());
    }
}

/// Whether a key of `baselines` is a definition (the workload's text form alone).
fn is_definition(key: &[u8]) -> bool {
    !key.contains(&0)
}

/// A baseline from its definition and its evidence, as [`Baseline`] was stored whole before:
/// `evidence` reads a key of `baselines` (inside a transaction, or a map a range read filled).
pub(super) fn join<E>(
    definition: &[u8],
    mut evidence: impl FnMut(&[u8]) -> std::result::Result<Option<IVec>, E>,
    fail: impl Fn(StoreError) -> E,
) -> std::result::Result<Baseline, E> {
    let mut b: Baseline = dec("baselines", definition).map_err(&fail)?;
    let id = b.workload.to_string();
    for (k, e) in b.elements.iter_mut() {
        if e.provenance.is_apart() {
            if let Some(v) = evidence(&provenance_key(&id, k))? {
                e.provenance = dec("baselines", &v).map_err(&fail)?;
                if let Some(c) = evidence(&counters_key(&id, k))? {
                    Counters::decode(&c)
                        .map_err(&fail)?
                        .apply(&mut e.provenance);
                }
            }
        }
    }
    if let Some(v) = evidence(&tally_key(&id))? {
        b.set_tally(dec("baselines", &v).map_err(&fail)?);
    }
    Ok(b)
}

/// The current baseline of `workload` inside a transaction, joined.
pub(super) fn read(
    baselines: &TransactionalTree,
    workload: &WorkloadIdentity,
) -> std::result::Result<Option<Baseline>, TxError> {
    match baselines.get(workload.to_string().as_bytes())? {
        Some(d) => Ok(Some(join(
            &d,
            |k| Ok(baselines.get(k)?),
            ConflictableTransactionError::Abort,
        )?)),
        None => Ok(None),
    }
}

/// Writes `b`'s definition (every provenance apart). Returns the bytes written.
pub(super) fn put_definition(
    baselines: &TransactionalTree,
    b: &Baseline,
) -> std::result::Result<u64, sled::transaction::UnabortableTransactionError> {
    let mut d = b.clone();
    for e in d.elements.values_mut() {
        e.provenance = Provenance::apart();
    }
    let (k, v) = (b.workload.to_string(), enc(&d));
    baselines.insert(k.as_bytes(), v.as_slice())?;
    Ok((k.len() + v.len()) as u64)
}

/// Writes the provenance of `b`'s element `el` (none if it is apart: it is stored already):
/// its counters always, its sets only if they differ from those stored. Returns the bytes
/// written.
pub(super) fn put_provenance(
    baselines: &TransactionalTree,
    b: &Baseline,
    el: &ElementKey,
) -> std::result::Result<u64, sled::transaction::UnabortableTransactionError> {
    match b.elements.get(el) {
        Some(e) if !e.provenance.is_apart() => {
            let id = b.workload.to_string();
            let mut written = 0;
            let (k, v) = (provenance_key(&id, el), sets_of(&e.provenance));
            if baselines.get(k.as_slice())?.as_deref() != Some(v.as_slice()) {
                baselines.insert(k.as_slice(), v.as_slice())?;
                written += k.len() + v.len();
            }
            let (k, v) = (counters_key(&id, el), Counters::of(&e.provenance).encode());
            baselines.insert(k.as_slice(), &v[..])?;
            written += k.len() + v.len();
            Ok(written as u64)
        }
        _ => Ok(0),
    }
}

/// Writes `b`'s [`Tally`](procguard_core::baseline::Tally). Returns the bytes written.
pub(super) fn put_tally(
    baselines: &TransactionalTree,
    b: &Baseline,
) -> std::result::Result<u64, sled::transaction::UnabortableTransactionError> {
    let (k, v) = (tally_key(&b.workload.to_string()), enc(&b.tally()));
    baselines.insert(k.as_slice(), v.as_slice())?;
    Ok((k.len() + v.len()) as u64)
}

/// Writes all of `b`, which was read joined: definition, every provenance, tally (a change
/// through the API, which is rare, and the split of a database written before). An element
/// whose provenance is apart even joined has none stored: any left from an element of that
/// key that a reset dropped goes, so that it is not joined to the new one.
pub(super) fn put_whole(
    baselines: &TransactionalTree,
    b: &Baseline,
) -> std::result::Result<(), sled::transaction::UnabortableTransactionError> {
    put_definition(baselines, b)?;
    let id = b.workload.to_string();
    for (el, e) in &b.elements {
        if e.provenance.is_apart() {
            baselines.remove(provenance_key(&id, el))?;
            baselines.remove(counters_key(&id, el))?;
        } else {
            put_provenance(baselines, b, el)?;
        }
    }
    put_tally(baselines, b)?;
    Ok(())
}

/// Splits the whole baselines of a database written before into definition and evidence, one
/// baseline per transaction (a crash in between leaves some whole, which read the same and
/// are split at the next open), then marks the layout in `meta` and flushes.
pub(super) fn split_whole(db: &sled::Db, baselines: &sled::Tree, meta: &sled::Tree) -> Result<()> {
    if meta.get("baseline_layout")?.map(|v| be(&v)).unwrap_or(0) >= 2 {
        return Ok(());
    }
    let mut split = 0u64;
    for kv in baselines.iter() {
        let (k, v) = kv?;
        if !is_definition(&k) {
            continue;
        }
        let b: Baseline = dec("baselines", &v)?;
        if b.elements.values().all(|e| e.provenance.is_apart())
            && baselines.get(tally_key(&b.workload.to_string()))?.is_some()
        {
            continue;
        }
        baselines
            .transaction(|t| {
                put_whole(t, &b)?;
                Ok::<_, TxError>(())
            })
            .map_err(tx_err)?;
        split += 1;
    }
    meta.insert("baseline_layout", &2u64.to_be_bytes())?;
    db.flush()?;
    if split > 0 {
        tracing::info!(
            message = "Split baselines into definition and evidence.",
            baselines = split
        );
    }
    Ok(())
}

/// Reads a range of `baselines` as whole baselines, each definition joined with the evidence
/// that follows it; evidence without its definition (where a range starts) is skipped.
///
/// sled's iterators are not snapshots: a commit between reading a definition and its evidence
/// could pair a definition with the tally of the next version. So the definition is read
/// again after its evidence, and both again if it changed (a version and its tally are one
/// commit); a commit that leaves the definition alone only moves provenance and tally,
/// which any moment's definition goes with.
pub(super) struct Joined {
    tree: sled::Tree,
    iter: std::iter::Peekable<sled::Iter>,
}

impl Joined {
    /// `iter` is a range of `tree`, the `baselines` tree.
    pub(super) fn new(tree: &sled::Tree, iter: sled::Iter) -> Self {
        Self {
            tree: tree.clone(),
            iter: iter.peekable(),
        }
    }

    /// The definition at `key` and its evidence read afresh, until the definition holds still
    /// across the read (a few tries; the last read is taken).
    fn reread(&self, key: &[u8], prefix: &[u8]) -> Result<Option<Baseline>> {
        let mut definition = self.tree.get(key)?;
        for _ in 0..8 {
            let Some(d) = definition.clone() else {
                return Ok(None);
            };
            let evidence: HashMap<IVec, IVec> = self
                .tree
                .scan_prefix(prefix)
                .collect::<std::result::Result<_, _>>()?;
            let again = self.tree.get(key)?;
            if again.as_ref() == Some(&d) {
                return join(&d, |k| Ok(evidence.get(k).cloned()), |e| e).map(Some);
            }
            definition = again;
        }
        match definition {
            Some(d) => self
                .tree
                .transaction(|t| join(&d, |k| Ok(t.get(k)?), ConflictableTransactionError::Abort))
                .map_err(tx_err)
                .map(Some),
            None => Ok(None),
        }
    }
}

impl Iterator for Joined {
    type Item = Result<Baseline>;

    fn next(&mut self) -> Option<Result<Baseline>> {
        loop {
            let (k, v) = match self.iter.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            if !is_definition(&k) {
                continue;
            }
            let prefix = tally_key(std::str::from_utf8(&k).unwrap_or_default());
            let mut evidence: HashMap<IVec, IVec> = HashMap::new();
            while let Some(Ok((ek, _))) = self.iter.peek() {
                if !ek.starts_with(&prefix) {
                    break;
                }
                match self.iter.next() {
                    Some(Ok((ek, ev))) => {
                        evidence.insert(ek, ev);
                    }
                    _ => break,
                }
            }
            return match self.tree.get(&k) {
                Ok(Some(again)) if again == v => {
                    Some(join(&v, |k| Ok(evidence.get(k).cloned()), |e| e))
                }
                Ok(_) => match self.reread(&k, &prefix) {
                    // Removed meanwhile: read on.
                    Ok(None) => continue,
                    r => r.transpose(),
                },
                Err(e) => Some(Err(e.into())),
            };
        }
    }
}

fn activity_prefix(id: &WorkloadIdentity) -> Vec<u8> {
    let mut k = id.to_string().into_bytes();
    k.push(0);
    k
}

pub(super) fn activity_key(id: &WorkloadIdentity, now: SystemTime, el: &ElementKey) -> Vec<u8> {
    let mut k = activity_prefix(id);
    k.extend_from_slice(&day_of(now).to_be_bytes());
    k.push(0);
    push_element(&mut k, el);
    k
}

/// Versions of one baseline kept in its history: the newest ones. An older version is
/// forgotten when a newer one is written (`get --version` then says it is no longer kept).
pub const HISTORY_VERSIONS: u64 = 1000;

/// Bytes of history records one baseline keeps by default (`Store::with_history_bytes`): past
/// it, its oldest versions are forgotten, however few are kept. A version's record holds the
/// whole baseline with its evidence, so a big baseline (thousands of elements, each with
/// bounded provenance) would otherwise keep gigabytes in 1000 versions.
pub const HISTORY_BYTES: u64 = 64 << 20;

/// Where a baseline's history tally is kept in the `history` tree: a key no workload's
/// records can have (theirs start with the workload's name, never with NUL).
fn history_tally_key(id: &WorkloadIdentity) -> Vec<u8> {
    let mut k = b"\0tally\0".to_vec();
    k.extend_from_slice(id.to_string().as_bytes());
    k
}

/// Writes a version's history record, then forgets what the bounds say: every version
/// [`HISTORY_VERSIONS`] or more before it, and the oldest while the baseline's records pass
/// `max_bytes` (never the new one). The baseline's tally (bytes held, oldest version kept) sits
/// beside its records; history written before the tally existed is counted from its first
/// version written after. Returns the bytes written.
pub(super) fn record_version(
    history: &TransactionalTree,
    rec: &VersionRecord,
    max_bytes: u64,
) -> std::result::Result<u64, sled::transaction::UnabortableTransactionError> {
    let id = &rec.snapshot.workload;
    let (k, v) = (history_key(id, rec.version), enc(rec));
    let written = (k.len() + v.len()) as u64;
    history.insert(k.as_slice(), v.as_slice())?;
    let tally_key = history_tally_key(id);
    let (mut held, mut oldest) = match history.get(&tally_key)? {
        Some(t) if t.len() == 16 => (be(&t[..8]), be(&t[8..])),
        // No tally yet: the older bound already forgot everything before the newest 1000.
        _ => (0, rec.version.saturating_sub(HISTORY_VERSIONS - 1).max(1)),
    };
    held += written;
    let forget = |oldest: &mut u64,
                  held: &mut u64|
     -> std::result::Result<(), sled::transaction::UnabortableTransactionError> {
        let key = history_key(id, *oldest);
        if let Some(old) = history.remove(key.as_slice())? {
            *held = held.saturating_sub((key.len() + old.len()) as u64);
        }
        *oldest += 1;
        Ok(())
    };
    while oldest + HISTORY_VERSIONS <= rec.version {
        forget(&mut oldest, &mut held)?;
    }
    while held > max_bytes && oldest < rec.version {
        forget(&mut oldest, &mut held)?;
    }
    let mut tally = held.to_be_bytes().to_vec();
    tally.extend_from_slice(&oldest.to_be_bytes());
    history.insert(tally_key, tally)?;
    Ok(written)
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
    history_bytes: u64,
) -> std::result::Result<Baseline, TxError> {
    let revision = meta.get("revision")?.map(|v| be(&v)).unwrap_or(0) + 1;
    b.revision = revision;
    b.updated_at = now;
    meta.insert("revision", &revision.to_be_bytes())?;
    put_whole(baselines, &b)?;
    let rec = VersionRecord {
        version: b.version,
        actor: actor.to_string(),
        at: now,
        action: action.to_string(),
        reason: reason.to_string(),
        snapshot: b.clone(),
    };
    record_version(history, &rec, history_bytes)?;
    Ok(b)
}

impl Store {
    /// The server-wide baseline revision.
    pub fn revision(&self) -> Result<u64> {
        Ok(self.meta.get("revision")?.map(|v| be(&v)).unwrap_or(0))
    }

    /// The current baseline of `id`, joined (see the module documentation).
    pub(super) fn current(&self, id: &WorkloadIdentity) -> Result<Option<Baseline>> {
        // In a transaction, so that the definition and its evidence are of one moment.
        self.baselines.transaction(|t| read(t, id)).map_err(tx_err)
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
            return self
                .current(id)?
                .ok_or_else(|| StoreError::NotFound(id.to_string()));
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
        for b in Joined::new(&self.baselines, iter) {
            let b = b?;
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
        for b in Joined::new(&self.baselines, self.baselines.iter()) {
            let b = b?;
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
        let (mut b, before) = match self.current(id)? {
            Some(b) => {
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
                    self.history_bytes,
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
        for b in Joined::new(&self.baselines, self.baselines.iter()) {
            let mut b = b?;
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

    /// Replaces or creates many baselines at once, all or nothing, each as a new version;
    /// a baseline the file leaves as it is ([`ImportAction::Unchanged`], decided inside the
    /// transaction) makes no version and is not returned. The audit record says how many
    /// changed.
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
        let (out, mut appender, pending) = trees
            .transaction(|(baselines, history, meta, audit, records)| {
                let mut log = self.log.appender(now);
                let mut revision = meta.get("revision")?.map(|v| be(&v)).unwrap_or(0);
                let mut out = Vec::new();
                for item in &items {
                    let mut b = item.clone();
                    let old = read(baselines, &item.workload)?;
                    if ImportChange::of(old.as_ref(), item).action == ImportAction::Unchanged {
                        continue;
                    }
                    b.version = match old {
                        Some(old) => {
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
                    put_whole(baselines, &b)?;
                    let rec = VersionRecord {
                        version: b.version,
                        actor: actor.to_string(),
                        at: now,
                        action: "import".into(),
                        reason: reason.to_string(),
                        snapshot: b.clone(),
                    };
                    record_version(history, &rec, self.history_bytes)?;
                    out.push(b);
                }
                meta.insert("revision", &revision.to_be_bytes())?;
                let mut pending = pending.clone();
                pending.set_detail(format!(
                    "imported {} baselines: {} changed, {} unchanged",
                    items.len(),
                    out.len(),
                    items.len() - out.len()
                ));
                pending.write(audit, records, &mut log)?;
                Ok::<_, TxError>((out, log, pending))
            })
            .map_err(tx_err)?;
        self.audit_committed(&pending);
        let gen = self.log.committed(Some(&mut appender));
        drop(w);
        self.log.wait_durable(&self.db, gen).await?;
        Ok(out)
    }
}
