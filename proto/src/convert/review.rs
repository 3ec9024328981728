//! The review API's answers beside baselines: a baseline's history, two versions compared,
//! a dry run and an import's changes ([`procguard_core::review`]) to protobuf, for the server,
//! and back, for `procguardctl`, which prints the domain values.
//!
//! Back into the domain, every required field (a time, a state, an element) is checked and a
//! missing or unknown one is an error naming the field, never a guess.

use super::content::{diff_from_pb, diff_to_pb, DiffPbRef};
use super::{
    element_key, element_ref, origins_from_pb, origins_to_pb, state_from_pb, state_to_pb,
    system_time, timestamp, ConvertError, Result,
};
use crate::v1 as pb;
use procguard_core::review::{
    DryRun, DryRunHit, ImportAction, ImportChange, VersionSummary, VersionsDiff,
};
use procguard_core::BaselineState;

fn state(v: i32, field: &'static str) -> Result<BaselineState> {
    state_from_pb(v).ok_or(ConvertError::BadEnum { field, value: v })
}

/// One version of a baseline's history as the protocol sends it.
pub fn version_to_pb(v: &VersionSummary) -> pb::BaselineVersion {
    pb::BaselineVersion {
        version: v.version,
        actor: v.actor.clone(),
        at: Some(timestamp(v.at)),
        action: v.action.clone(),
        reason: v.reason.clone(),
        state: state_to_pb(v.state) as i32,
        element_count: v.element_count,
    }
}

/// One version of a baseline's history back in the domain; `at` and `state` are required.
pub fn version_from_pb(v: &pb::BaselineVersion) -> Result<VersionSummary> {
    Ok(VersionSummary {
        version: v.version,
        actor: v.actor.clone(),
        at: v
            .at
            .as_ref()
            .map(system_time)
            .ok_or(ConvertError::Missing("versions.at"))?,
        action: v.action.clone(),
        reason: v.reason.clone(),
        state: state(v.state, "versions.state")?,
        element_count: v.element_count,
    })
}

/// A baseline's history, oldest first, as `GetHistory` answers.
pub fn history_to_pb(versions: &[VersionSummary]) -> pb::GetHistoryResponse {
    pb::GetHistoryResponse {
        versions: versions.iter().map(version_to_pb).collect(),
    }
}

/// A `GetHistory` answer back in the domain.
pub fn history_from_pb(h: &pb::GetHistoryResponse) -> Result<Vec<VersionSummary>> {
    h.versions.iter().map(version_from_pb).collect()
}

/// Two versions compared, as `DiffVersions` answers.
pub fn versions_diff_to_pb(d: &VersionsDiff) -> pb::DiffVersionsResponse {
    let e = diff_to_pb(&d.elements);
    pb::DiffVersionsResponse {
        added: e.added,
        removed: e.removed,
        changed: e.changed,
        state_before: state_to_pb(d.state_before) as i32,
        state_after: state_to_pb(d.state_after) as i32,
        content_changed: e.content_changed,
        origins: e.origins,
    }
}

/// A `DiffVersions` answer back in the domain; both states are required.
pub fn versions_diff_from_pb(d: &pb::DiffVersionsResponse) -> Result<VersionsDiff> {
    Ok(VersionsDiff {
        state_before: state(d.state_before, "state_before")?,
        state_after: state(d.state_after, "state_after")?,
        elements: diff_from_pb(DiffPbRef {
            added: &d.added,
            removed: &d.removed,
            changed: &d.changed,
            content_changed: &d.content_changed,
            origins: &d.origins,
        })?,
    })
}

/// A dry run as `DryRun` answers.
pub fn dry_run_to_pb(r: &DryRun) -> pb::DryRunResponse {
    pb::DryRunResponse {
        events_replayed: r.events_replayed,
        would_alert: r
            .would_alert
            .iter()
            .map(|h| pb::DryRunHit {
                element: Some(element_ref(&h.element)),
                count: h.count,
                last_seen: h.last_seen.map(timestamp),
                origins: origins_to_pb(&h.origins),
            })
            .collect(),
    }
}

/// A `DryRun` answer back in the domain; each hit's element is required.
pub fn dry_run_from_pb(r: &pb::DryRunResponse) -> Result<DryRun> {
    Ok(DryRun {
        events_replayed: r.events_replayed,
        would_alert: r
            .would_alert
            .iter()
            .map(|h| {
                Ok(DryRunHit {
                    element: element_key(
                        h.element
                            .as_ref()
                            .ok_or(ConvertError::Missing("would_alert.element"))?,
                    )?,
                    count: h.count,
                    last_seen: h.last_seen.as_ref().map(system_time),
                    origins: origins_from_pb(&h.origins),
                })
            })
            .collect::<Result<_>>()?,
    })
}

/// What an import does to one baseline, as the protocol sends it. The message has no field
/// for the origins of the elements added or removed; `procguardctl baselines diff` shows
/// them.
pub fn import_change_to_pb(c: &ImportChange) -> pb::ImportChange {
    let e = diff_to_pb(&c.elements);
    pb::ImportChange {
        workload: Some((&c.workload).into()),
        action: c.action.as_str().into(),
        added: e.added,
        removed: e.removed,
        changed: e.changed,
        content_changed: e.content_changed,
    }
}

/// What an import does to one baseline, back in the domain; the workload and a known action
/// are required.
pub fn import_change_from_pb(c: &pb::ImportChange) -> Result<ImportChange> {
    Ok(ImportChange {
        workload: super::identity(c.workload.as_ref())?,
        action: c
            .action
            .parse::<ImportAction>()
            .map_err(|reason| ConvertError::Invalid {
                field: "changes.action",
                reason,
            })?,
        elements: diff_from_pb(DiffPbRef {
            added: &c.added,
            removed: &c.removed,
            changed: &c.changed,
            content_changed: &c.content_changed,
            origins: &[],
        })?,
    })
}

/// An import's answer: what it does (or, in a dry run, would do) to each baseline.
pub fn import_to_pb(changes: &[ImportChange], dry_run: bool) -> pb::ImportBaselinesResponse {
    pb::ImportBaselinesResponse {
        changes: changes.iter().map(import_change_to_pb).collect(),
        dry_run,
    }
}

/// An `ImportBaselines` answer back in the domain: the changes, and whether it was a dry run.
pub fn import_from_pb(r: &pb::ImportBaselinesResponse) -> Result<(Vec<ImportChange>, bool)> {
    Ok((
        r.changes
            .iter()
            .map(import_change_from_pb)
            .collect::<Result<_>>()?,
        r.dry_run,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use procguard_core::baseline::{Element, Provenance};
    use procguard_core::{Baseline, ElementKey, ElementStatus, Origin, WorkloadIdentity};
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, UNIX_EPOCH};

    fn key(exe: &str) -> ElementKey {
        ElementKey {
            exe_path: exe.into(),
            applet: String::new(),
            script_path: String::new(),
        }
    }

    fn element(status: ElementStatus, sha: &[&str], origins: &[Origin]) -> Element {
        Element {
            status,
            review_reasons: vec![],
            provenance: Provenance::new(UNIX_EPOCH),
            manual: false,
            approved_sha256: sha.iter().map(|s| s.to_string()).collect(),
            origins: origins.iter().copied().collect(),
        }
    }

    fn baseline(elements: BTreeMap<ElementKey, Element>) -> Baseline {
        let mut b = Baseline::new(
            WorkloadIdentity::parse("c/shop/deployment/web/nginx").unwrap(),
            UNIX_EPOCH,
        );
        b.elements = elements;
        b
    }

    #[test]
    fn every_answer_reads_back_as_it_was_sent() {
        let a = "a".repeat(64);
        let before = baseline(BTreeMap::from([
            (key("/bin/a"), element(ElementStatus::Learned, &[&a], &[])),
            (
                key("/bin/b"),
                element(ElementStatus::Learned, &[], &[Origin::Volume]),
            ),
        ]));
        let mut after = baseline(BTreeMap::from([
            (key("/bin/a"), element(ElementStatus::Approved, &[], &[])),
            (
                key("/bin/c"),
                element(ElementStatus::Approved, &[], &[Origin::WritableLayer]),
            ),
        ]));
        after.state = BaselineState::Enforced;

        let d = VersionsDiff::of(&before, &after);
        assert!(!d.elements.origins.is_empty() && !d.elements.content.is_empty());
        assert_eq!(versions_diff_from_pb(&versions_diff_to_pb(&d)), Ok(d));

        let c = ImportChange::of(Some(&before), &after);
        assert_eq!(c.action, ImportAction::Update);
        // The message has no field for the origins of added and removed elements.
        let back = import_change_from_pb(&import_change_to_pb(&c)).unwrap();
        assert_eq!(back.elements.origins, vec![]);
        assert_eq!(
            (back.action, &back.elements.status, &back.elements.content),
            (c.action, &c.elements.status, &c.elements.content)
        );
        let (changes, dry) =
            import_from_pb(&import_to_pb(std::slice::from_ref(&back), true)).unwrap();
        assert_eq!((changes, dry), (vec![back], true));

        let v = VersionSummary::of(
            3,
            "alice",
            UNIX_EPOCH + Duration::from_secs(7),
            "approved",
            "ok",
            &after,
        );
        assert_eq!(v.element_count, 2);
        assert_eq!(
            history_from_pb(&history_to_pb(std::slice::from_ref(&v))),
            Ok(vec![v])
        );

        let r = DryRun {
            events_replayed: 9,
            would_alert: vec![DryRunHit {
                element: key("/tmp/x"),
                count: 4,
                last_seen: Some(UNIX_EPOCH + Duration::from_secs(5)),
                origins: BTreeSet::from([Origin::Unknown, Origin::WritableLayer]),
            }],
        };
        assert_eq!(dry_run_from_pb(&dry_run_to_pb(&r)), Ok(r));
    }

    #[test]
    fn what_cannot_be_read_names_its_field() {
        let e = version_from_pb(&pb::BaselineVersion::default()).unwrap_err();
        assert_eq!(e, ConvertError::Missing("versions.at"));
        let e = import_change_from_pb(&pb::ImportChange {
            workload: Some((&WorkloadIdentity::parse("c/n/deployment/w/c").unwrap()).into()),
            action: "explode".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("changes.action"), "{e}");
        let e = versions_diff_from_pb(&pb::DiffVersionsResponse::default()).unwrap_err();
        assert!(e.to_string().contains("state_before"), "{e}");
    }
}
