//! What a person reviewing baselines is shown beside the baselines themselves: a version of a
//! baseline's history ([`VersionSummary`]), two versions compared ([`VersionsDiff`]), a dry
//! run of activity against a candidate element set ([`DryRun`], decided by [`dry_run`]), and
//! what an import does to one baseline ([`ImportChange`], decided by [`ImportChange::of`]).
//!
//! These are the domain shapes of the review API's answers: the server builds them here and
//! `procguard_proto::convert::review` turns them into protobuf and back, so `procguardctl`
//! prints the same values the server decided, with nothing rebuilt by hand on either side.

use crate::baseline::{Baseline, BaselineState, ElementKey, ElementStatus};
use crate::content::{diff, ElementsDiff};
use crate::identity::WorkloadIdentity;
use crate::ingest::ActivityRecord;
use crate::process::Origin;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;

/// One version of a baseline's history as the review API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSummary {
    /// Version number.
    pub version: u64,
    /// Who made the change (token name or certificate subject; `sensor:<node>` for learning).
    pub actor: String,
    /// When.
    pub at: SystemTime,
    /// What happened (`learned`, `approved`, `reset`, `import`, ...).
    pub action: String,
    /// Why, as the actor gave it.
    pub reason: String,
    /// The baseline's state after the change.
    pub state: BaselineState,
    /// How many elements the baseline held after the change.
    pub element_count: u32,
}

impl VersionSummary {
    /// The summary of a version: who, when, what and why, and the baseline it left.
    pub fn of(
        version: u64,
        actor: &str,
        at: SystemTime,
        action: &str,
        reason: &str,
        snapshot: &Baseline,
    ) -> Self {
        Self {
            version,
            actor: actor.to_string(),
            at,
            action: action.to_string(),
            reason: reason.to_string(),
            state: snapshot.state,
            element_count: snapshot.elements.len() as u32,
        }
    }
}

/// Two versions of a baseline compared: their states and their element sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionsDiff {
    /// The older version's state.
    pub state_before: BaselineState,
    /// The newer version's state.
    pub state_after: BaselineState,
    /// The element sets compared ([`diff`]).
    pub elements: ElementsDiff,
}

impl VersionsDiff {
    /// `before` and `after` compared.
    pub fn of(before: &Baseline, after: &Baseline) -> Self {
        Self {
            state_before: before.state,
            state_after: after.state,
            elements: diff(&before.elements, &after.elements),
        }
    }
}

/// An element that would have alerted in a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRunHit {
    /// The element.
    pub element: ElementKey,
    /// How many of its runs would have alerted.
    pub count: u64,
    /// When it last ran (`None` for activity recorded without a time).
    pub last_seen: Option<SystemTime>,
    /// The origins of the runs that would have alerted.
    pub origins: BTreeSet<Origin>,
}

/// Stored activity replayed against a candidate element set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DryRun {
    /// Runs replayed.
    pub events_replayed: u64,
    /// The elements that would have alerted, in element order.
    pub would_alert: Vec<DryRunHit>,
}

/// Replays `activity` (per-day records of each element's runs) against `candidate` (each
/// allowed element with the origins it may run from). Outside the candidate every run alerts;
/// inside it, the runs from a drift origin the element does not hold, and any fileless run,
/// as the matcher decides. Records from before origins count as runs of unknown origin.
pub fn dry_run<'a>(
    candidate: &HashMap<ElementKey, BTreeSet<Origin>>,
    activity: impl IntoIterator<Item = (&'a ElementKey, &'a ActivityRecord)>,
) -> DryRun {
    let mut replayed = 0;
    let mut hits: BTreeMap<ElementKey, DryRunHit> = BTreeMap::new();
    for (key, rec) in activity {
        replayed += rec.count;
        let runs: Vec<(Origin, u64)> = if rec.origins.is_empty() {
            vec![(Origin::Unknown, rec.count)]
        } else {
            rec.origins.iter().map(|(o, n)| (*o, *n)).collect()
        };
        let allowed = candidate.get(key);
        for (o, n) in runs {
            let alerts = match allowed {
                None => true,
                Some(origins) => o == Origin::Fileless || (o.is_drift() && !origins.contains(&o)),
            };
            if alerts {
                let h = hits.entry(key.clone()).or_insert_with(|| DryRunHit {
                    element: key.clone(),
                    count: 0,
                    last_seen: None,
                    origins: BTreeSet::new(),
                });
                h.count += n;
                h.last_seen = h.last_seen.max(rec.last_seen);
                h.origins.insert(o);
            }
        }
    }
    DryRun {
        events_replayed: replayed,
        would_alert: hits.into_values().collect(),
    }
}

/// What an import does to one baseline as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportAction {
    /// No baseline for the workload yet: the import creates it.
    Create,
    /// The document changes the baseline's elements, state or labels.
    Update,
    /// The document is what is stored.
    Unchanged,
}

impl ImportAction {
    /// The action's name (`create`, `update`, `unchanged`), as the API and every output
    /// write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportAction::Create => "create",
            ImportAction::Update => "update",
            ImportAction::Unchanged => "unchanged",
        }
    }
}

impl std::str::FromStr for ImportAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "create" => Ok(ImportAction::Create),
            "update" => Ok(ImportAction::Update),
            "unchanged" => Ok(ImportAction::Unchanged),
            o => Err(format!(
                "unknown import action '{o}'; expected create, update or unchanged"
            )),
        }
    }
}

impl std::fmt::Display for ImportAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an import does to one baseline: the action, and what changes element by element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportChange {
    /// Whose baseline.
    pub workload: WorkloadIdentity,
    /// Create, update or unchanged.
    pub action: ImportAction,
    /// The stored elements (none when created) against the document's.
    pub elements: ElementsDiff,
}

impl ImportChange {
    /// What importing `new` does to `old` (the stored baseline, if any). An element is its
    /// status, its approved contents and its origins: a document that changes only the
    /// contents (or drops them, which unpins the element) is an update.
    pub fn of(old: Option<&Baseline>, new: &Baseline) -> Self {
        type Facts<'a> = (ElementStatus, &'a [String], &'a BTreeSet<Origin>);
        fn facts_of(b: &Baseline) -> BTreeMap<&ElementKey, Facts<'_>> {
            b.elements
                .iter()
                .map(|(k, e)| (k, (e.status, e.approved_sha256.as_slice(), &e.origins)))
                .collect()
        }
        let action = match old {
            None => ImportAction::Create,
            Some(o)
                if facts_of(o) == facts_of(new)
                    && o.state == new.state
                    && o.labels == new.labels =>
            {
                ImportAction::Unchanged
            }
            Some(_) => ImportAction::Update,
        };
        let empty = BTreeMap::new();
        Self {
            workload: new.workload.clone(),
            action,
            elements: diff(old.map_or(&empty, |o| &o.elements), &new.elements),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{Element, Provenance};
    use std::time::{Duration, UNIX_EPOCH};

    fn key(exe: &str) -> ElementKey {
        ElementKey {
            exe_path: exe.into(),
            applet: String::new(),
            script_path: String::new(),
        }
    }

    fn runs(count: u64, secs: u64, origins: &[(Origin, u64)]) -> ActivityRecord {
        ActivityRecord {
            count,
            last_seen: Some(UNIX_EPOCH + Duration::from_secs(secs)),
            origins: origins.iter().copied().collect(),
        }
    }

    #[test]
    fn a_dry_run_alerts_outside_the_candidate_and_on_drift_it_does_not_hold() {
        let candidate = HashMap::from([
            (key("/bin/sh"), BTreeSet::new()),
            (key("/data/tool"), BTreeSet::from([Origin::Volume])),
        ]);
        let (sh, tool, x) = (key("/bin/sh"), key("/data/tool"), key("/tmp/x"));
        let days = [
            (
                &sh,
                runs(5, 10, &[(Origin::Image, 4), (Origin::Fileless, 1)]),
            ),
            (
                &tool,
                runs(3, 20, &[(Origin::Volume, 2), (Origin::WritableLayer, 1)]),
            ),
            (&x, runs(2, 30, &[])),
            (&x, runs(1, 25, &[(Origin::Image, 1)])),
        ];
        let r = dry_run(&candidate, days.iter().map(|(k, r)| (*k, r)));
        assert_eq!(r.events_replayed, 11);
        let hits: Vec<(&str, u64, u64, Vec<Origin>)> = r
            .would_alert
            .iter()
            .map(|h| {
                let secs = h.last_seen.unwrap().duration_since(UNIX_EPOCH).unwrap();
                let origins = h.origins.iter().copied().collect();
                (
                    h.element.exe_path.as_str(),
                    h.count,
                    secs.as_secs(),
                    origins,
                )
            })
            .collect();
        assert_eq!(
            hits,
            vec![
                ("/bin/sh", 1, 10, vec![Origin::Fileless]),
                ("/data/tool", 1, 20, vec![Origin::WritableLayer]),
                ("/tmp/x", 3, 30, vec![Origin::Unknown, Origin::Image]),
            ]
        );
    }

    #[test]
    fn an_import_that_changes_only_contents_is_an_update() {
        let id = WorkloadIdentity::parse("c/shop/deployment/web/nginx").unwrap();
        let element = |sha: &[&str]| Element {
            status: ElementStatus::Approved,
            review_reasons: vec![],
            provenance: Provenance::new(UNIX_EPOCH),
            manual: true,
            approved_sha256: sha.iter().map(|s| s.to_string()).collect(),
            origins: BTreeSet::new(),
        };
        let mut old = Baseline::new(id.clone(), UNIX_EPOCH);
        old.elements.insert(key("/bin/sh"), element(&["a"]));
        assert_eq!(ImportChange::of(None, &old).action, ImportAction::Create);
        let same = old.clone();
        assert_eq!(
            ImportChange::of(Some(&old), &same).action,
            ImportAction::Unchanged
        );
        let mut unpinned = old.clone();
        unpinned.elements.insert(key("/bin/sh"), element(&[]));
        let c = ImportChange::of(Some(&old), &unpinned);
        assert_eq!(c.action, ImportAction::Update);
        assert_eq!(c.elements.content.len(), 1);
        assert_eq!("update".parse::<ImportAction>(), Ok(ImportAction::Update));
    }
}
