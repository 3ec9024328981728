//! The storage conformance suite: the durability contract of [`Storage`] as tests, written
//! against the trait only, so that any engine can be held to it. `engine_conformance!` runs
//! every check against one engine; it runs here against sled ([`Store`]).
//!
//! The crash check is a real crash: the test re-runs its own test binary as a child process
//! that writes through the engine, prints each write as the engine acknowledges it, and
//! aborts (no destructors, no final flush) while a last write is still unacknowledged. The
//! parent then reopens the directory and requires every acknowledged write.

use super::*;
use procguard_core::policy::Policies;
use procguard_core::{ProcessEvent, WorkloadIdentity, WorkloadKind};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// Opens (or reopens) an engine's storage in a directory.
type Open = fn(&Path) -> SharedStorage;

/// The workload the engine tests (and the record-log tests) write to.
pub(crate) fn web() -> WorkloadIdentity {
    procguard_core::testing::web()
}

/// A process event of [`web`] running `exe`, as a sensor's event `id` with sequence `seq`.
pub(crate) fn event(id: &str, seq: u64, exe: &str) -> IngestEvent {
    IngestEvent {
        event_id: id.to_string(),
        sequence: seq,
        process: ProcessEvent::test(exe).on_node("n1"),
        reported: SensorReport::default(),
        placement: Default::default(),
        executions: 1,
    }
}

fn audit_entry(action: &str) -> AuditEntry {
    AuditEntry {
        id: 0,
        at: SystemTime::now(),
        actor: "conformance".into(),
        role: "admin".into(),
        action: action.into(),
        target: String::new(),
        result: AuditOutcome::Ok,
        detail: String::new(),
        peer: String::new(),
    }
}

/// A batch of `n` events with sequences from `first`, each its own executable for learning
/// and, once the baseline is enforced, each a deviation.
fn batch(tag: &str, first: u64, n: u64) -> Vec<IngestEvent> {
    (first..first + n)
        .map(|s| event(&format!("{tag}-{s}"), s, &format!("/bin/{tag}-{s}")))
        .collect()
}

/// Approves the whole baseline as an API call would, with its audit record.
async fn approve(s: &dyn Storage) -> u64 {
    approve_at(s, SystemTime::now()).await
}

/// [`approve`] at `now`.
async fn approve_at(s: &dyn Storage, now: SystemTime) -> u64 {
    s.change(
        &web(),
        ChangeBy {
            actor: "t",
            action: "approved",
            reason: "",
            audit: Some(audit_entry("ApproveBaseline")),
        },
        false,
        &|b| {
            b.approve(None, now);
            Ok(())
        },
    )
    .await
    .unwrap()
    .version
}

fn all_audit(s: &dyn Storage) -> Vec<AuditEntry> {
    s.audit_log(&AuditQuery {
        limit: usize::MAX,
        ..Default::default()
    })
    .unwrap()
}

/// The audit record of a change is written in the change's own transaction: an API change, an
/// import and an incident action each leave exactly one, naming what they made, in the audit
/// log and in the record log; a refused change and a repeated action leave none.
async fn changes_carry_their_audit_record(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let p = Policies::default();
    s.ingest("n1", &batch("a", 1, 2), &p, SystemTime::now())
        .await
        .unwrap();
    assert!(
        all_audit(s.as_ref()).is_empty(),
        "learning is not an API call"
    );
    let version = approve(s.as_ref()).await;
    let log = all_audit(s.as_ref());
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].action, "ApproveBaseline");
    assert_eq!(log[0].detail, format!("version {version}"));
    let durable = *s.durable_cursor().borrow();
    let in_log = |id: u64| {
        s.read_log(0, durable.max(*s.durable_cursor().borrow()), usize::MAX)
            .unwrap()
            .unwrap()
            .iter()
            .any(|r| matches!(&r.body, RecordBody::Audit(a) if a.id == id))
    };
    assert!(
        in_log(log[0].id),
        "the change's audit record is in the record log"
    );

    let refused = s
        .change(
            &web(),
            ChangeBy {
                actor: "t",
                action: "rejected",
                reason: "",
                audit: Some(audit_entry("RejectElements")),
            },
            false,
            &|_| Err("no".into()),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Rejected(_))),
        "{refused:?}"
    );
    assert_eq!(
        all_audit(s.as_ref()).len(),
        1,
        "a refused change writes no record"
    );

    // An incident action that changes something carries its record; a repeat does not.
    s.ingest("n1", &batch("dev", 3, 1), &p, SystemTime::now())
        .await
        .unwrap();
    let (list, _) = s
        .incidents(&IncidentFilter::default(), None, 10, Order::OldestFirst)
        .unwrap();
    let n: u64 = list[0].id.parse().unwrap();
    let acked = s
        .incident_action(
            n,
            procguard_core::incident::Action::Acknowledge,
            "t",
            "",
            audit_entry("AcknowledgeIncident"),
        )
        .await
        .unwrap();
    assert!(acked.changed);
    assert_eq!(all_audit(s.as_ref()).len(), 2);
    let again = s
        .incident_action(
            n,
            procguard_core::incident::Action::Acknowledge,
            "t",
            "",
            audit_entry("AcknowledgeIncident"),
        )
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(
        all_audit(s.as_ref()).len(),
        2,
        "nothing changed, nothing written"
    );
    let allowed = s
        .incident_action(
            n,
            procguard_core::incident::Action::Allow,
            "t",
            "",
            audit_entry("AllowIncident"),
        )
        .await
        .unwrap();
    let b = allowed.baseline.expect("an allow makes a version");
    let log = all_audit(s.as_ref());
    let last = log.last().unwrap();
    assert_eq!(last.action, "AllowIncident");
    assert!(
        last.detail.contains("/bin/dev-3")
            && last.detail.ends_with(&format!("(version {})", b.version)),
        "the record names what was allowed: {}",
        last.detail
    );
    assert!(in_log(last.id));

    // An import that changes a baseline makes its version; one that leaves it as it is (a
    // round trip of an export) makes none, and is audited all the same.
    let mut current = s.baseline(&web(), 0).unwrap();
    current.labels.insert("team".into(), "web".into());
    let mut imported = s
        .import(
            vec![current.clone()],
            "t",
            "",
            audit_entry("ImportBaselines"),
        )
        .await
        .unwrap();
    let log = all_audit(s.as_ref());
    assert_eq!(log.len(), 4);
    assert_eq!(log[3].action, "ImportBaselines");
    assert!(in_log(log[3].id));
    assert!(log[3].detail.contains("1 changed"), "{}", log[3].detail);
    assert_eq!(imported.pop().unwrap().version, b.version + 1);
    let again = s
        .import(vec![current], "t", "", audit_entry("ImportBaselines"))
        .await
        .unwrap();
    assert!(
        again.is_empty(),
        "an unchanged baseline was written: {again:?}"
    );
    assert_eq!(s.baseline(&web(), 0).unwrap().version, b.version + 1);
    let log = all_audit(s.as_ref());
    assert_eq!(log.len(), 5);
    assert!(
        log[4].detail.contains("0 changed, 1 unchanged"),
        "{}",
        log[4].detail
    );
}

/// Ingest is idempotent by event ID and atomic per batch: a replayed batch changes nothing
/// and counts as duplicates; the sensor's sequence and the stored-event count move together.
async fn ingest_is_idempotent(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let p = Policies::default();
    let now = SystemTime::now();
    let first = batch("a", 1, 5);
    let out = s.ingest("n1", &first, &p, now).await.unwrap();
    assert_eq!((out.applied, out.duplicates, out.acked_sequence), (5, 0, 5));
    let again = s.ingest("n1", &first, &p, now).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 5));
    assert_eq!(s.events_ingested().unwrap(), 5);
    assert_eq!(s.sensor("n1").unwrap().acked_sequence, 5);
    assert_eq!(s.baseline(&web(), 0).unwrap().elements.len(), 5);
}

/// An event whose pod the sensor did not know in time (`pod_metadata` missing, identity by pod
/// UID only) is stored as ingested but never makes or feeds a baseline of its own; the same
/// exec sent again under its workload identity is learned there, and once that baseline is
/// enforced, matched (a deviation).
async fn provisional_identities_are_never_learned(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let p = Policies::default();
    let now = SystemTime::now();
    let provisional = |id: &str, seq: u64, exe: &str| {
        let mut e = event(id, seq, exe);
        e.process.workload =
            WorkloadIdentity::new("c", "", WorkloadKind::Pod, "pod-3f0c1e2a", "3b5e8c1d2f4a");
        if let Some(c) = e.process.container.as_mut() {
            c.pod_uid = Some("3f0c1e2a".into());
            c.pod_name = None;
        }
        e.process
            .mark_missing(procguard_core::process::MISSING_POD_METADATA);
        e
    };
    let late = |id: &str, seq: u64, exe: &str| {
        let mut e = event(id, seq, exe);
        e.process.attributed_late_ms = Some(4_000);
        e
    };
    let out = s
        .ingest("n1", &[provisional("p1", 1, "/bin/early")], &p, now)
        .await
        .unwrap();
    assert_eq!((out.applied, out.unattributed), (1, 1));
    assert!(out.changed.is_empty() && out.deviations.is_empty());
    let all = |s: &dyn Storage| {
        s.baselines(&Default::default(), None, 100)
            .unwrap()
            .0
            .into_iter()
            .map(|b| b.workload.to_string())
            .collect::<Vec<_>>()
    };
    assert!(all(s.as_ref()).is_empty(), "{:?}", all(s.as_ref()));
    let out = s
        .ingest("n1", &[late("l1", 2, "/bin/early")], &p, now)
        .await
        .unwrap();
    assert_eq!(out.unattributed, 0);
    assert_eq!(all(s.as_ref()), vec![web().to_string()]);
    assert!(s
        .baseline(&web(), 0)
        .unwrap()
        .allows(&procguard_core::ElementKey::exe("/bin/early")));
    approve(s.as_ref()).await;
    s.ingest("n1", &[provisional("p2", 3, "/tmp/dropper")], &p, now)
        .await
        .unwrap();
    let out = s
        .ingest("n1", &[late("l2", 4, "/tmp/dropper")], &p, now)
        .await
        .unwrap();
    assert_eq!(out.deviations.len(), 1);
    assert_eq!(out.deviations[0].process.attributed_late_ms, Some(4_000));
    assert_eq!(all(s.as_ref()), vec![web().to_string()]);
}

/// A refused change leaves storage untouched: no version, no history entry.
async fn a_refused_change_changes_nothing(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.ingest(
        "n1",
        &batch("a", 1, 1),
        &Policies::default(),
        SystemTime::now(),
    )
    .await
    .unwrap();
    let before = s.baseline(&web(), 0).unwrap();
    let history = s.history(&web()).unwrap().len();
    let refused = s
        .change(
            &web(),
            ChangeBy {
                actor: "t",
                action: "approved",
                reason: "",
                audit: None,
            },
            false,
            &|b| {
                b.approve(None, SystemTime::now());
                Err("no".into())
            },
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Rejected(_))),
        "{refused:?}"
    );
    assert_eq!(s.baseline(&web(), 0).unwrap(), before);
    assert_eq!(s.history(&web()).unwrap().len(), history);
    let missing = WorkloadIdentity::new("c", "x", WorkloadKind::Deployment, "y", "z");
    assert!(matches!(
        s.change(
            &missing,
            ChangeBy {
                actor: "t",
                action: "approved",
                reason: "",
                audit: None
            },
            false,
            &|_| Ok(())
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
}

/// Versions count per baseline, 1, 2, 3 …, each with its history record, whatever made it: a
/// batch that learns many elements is one version, a change with several edits is one, and a
/// baseline created by the API starts at 1 too.
async fn versions_count_per_baseline_with_a_history_record_each(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let p = Policies::default();
    let now = SystemTime::now();
    s.ingest("n1", &batch("a", 1, 5), &p, now).await.unwrap();
    s.ingest("n1", &batch("b", 6, 3), &p, now).await.unwrap();
    // Nothing new: no version.
    s.ingest("n1", &batch("b", 9, 0), &p, now).await.unwrap();
    let learned = s.baseline(&web(), 0).unwrap();
    assert_eq!(learned.elements.len(), 8);
    assert_eq!(learned.version, 2, "two batches that learned: two versions");
    let several = s
        .change(
            &web(),
            ChangeBy {
                actor: "t",
                action: "edited",
                reason: "",
                audit: None,
            },
            false,
            &|b| {
                b.approve(None, SystemTime::now());
                b.reset(SystemTime::now());
                Ok(())
            },
        )
        .await
        .unwrap();
    assert_eq!(several.version, 3, "one change, one version");
    s.ingest("n1", &batch("c", 10, 4), &p, now).await.unwrap();
    let history: Vec<u64> = s
        .history(&web())
        .unwrap()
        .iter()
        .map(|h| h.version)
        .collect();
    let current = s.baseline(&web(), 0).unwrap().version;
    assert_eq!(history, (1..=current).collect::<Vec<_>>());
    for v in 1..=current {
        assert_eq!(s.baseline(&web(), v).unwrap().version, v);
    }
    let other = WorkloadIdentity::new("c", "shop", WorkloadKind::Deployment, "api", "app");
    let created = s
        .change(
            &other,
            ChangeBy {
                actor: "t",
                action: "added",
                reason: "",
                audit: None,
            },
            true,
            &|_| Ok(()),
        )
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    let history: Vec<u64> = s
        .history(&other)
        .unwrap()
        .iter()
        .map(|h| h.version)
        .collect();
    assert_eq!(history, vec![1]);
}

/// A batch that only sights elements a baseline has makes no version (no history record, no
/// revision, the same definition), yet its evidence is kept: the sighted elements' count and
/// last sighting, seen through `baseline` and `baselines`; the others' provenance is as it was.
/// A batch that learns makes one version, as before, and reopening reads the same baseline.
async fn sightings_make_no_version_and_are_kept(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let p = Policies::default();
    let t0 = SystemTime::now();
    let t1 = t0 + std::time::Duration::from_secs(60);
    let key = |exe: &str| procguard_core::ElementKey::exe(exe);
    let after = {
        let s = open(dir.path());
        s.ingest("n1", &batch("a", 1, 5), &p, t0).await.unwrap();
        let learned = s.baseline(&web(), 0).unwrap();
        assert_eq!(learned.version, 1);
        for state in ["learning", "enforced"] {
            if state == "enforced" {
                approve(s.as_ref()).await;
            }
            let before = s.baseline(&web(), 0).unwrap();
            let (history, revision) = (s.history(&web()).unwrap().len(), before.revision);
            let seq = if state == "learning" { 10 } else { 20 };
            let sightings = vec![
                event(&format!("{state}-1"), seq, "/bin/a-1"),
                event(&format!("{state}-2"), seq + 1, "/bin/a-1"),
                event(&format!("{state}-3"), seq + 2, "/bin/a-2"),
            ];
            let out = s.ingest("n1", &sightings, &p, t1).await.unwrap();
            assert!(out.changed.is_empty(), "{state}: no version");
            let after = s.baseline(&web(), 0).unwrap();
            assert_eq!(after.version, before.version, "{state}");
            assert_eq!(after.revision, revision, "{state}: no revision");
            assert_eq!(s.history(&web()).unwrap().len(), history, "{state}");
            let (a1, b1) = (
                &after.elements[&key("/bin/a-1")].provenance,
                &before.elements[&key("/bin/a-1")].provenance,
            );
            assert_eq!((a1.count, a1.last_seen), (b1.count + 2, t1), "{state}");
            assert_eq!(
                after.elements[&key("/bin/a-2")].provenance.count,
                before.elements[&key("/bin/a-2")].provenance.count + 1
            );
            assert_eq!(
                after.elements[&key("/bin/a-3")],
                before.elements[&key("/bin/a-3")],
                "{state}: an element not sighted is as it was"
            );
            if state == "learning" {
                assert_eq!(
                    after.learning.events_observed,
                    before.learning.events_observed + 3,
                    "a sighting while learning counts"
                );
            }
            let (listed, _) = s.baselines(&BaselineFilter::default(), None, 10).unwrap();
            assert_eq!(listed, vec![after.clone()], "{state}: listed as read");
        }
        let before = s.baseline(&web(), 0).unwrap();
        // Past learning, a new executable deviates: no version either.
        let out = s.ingest("n1", &batch("x", 30, 1), &p, t1).await.unwrap();
        assert!(out.changed.is_empty() && out.deviations.len() == 1);
        assert_eq!(s.baseline(&web(), 0).unwrap().version, before.version);
        // A learning batch: one version, one history record.
        let other = other_workload();
        let learn = |id: &str, seq, exe: &str| {
            let mut e = event(id, seq, exe);
            e.process.workload = other.clone();
            e
        };
        s.ingest("n1", &[learn("o-1", 40, "/bin/o1")], &p, t0)
            .await
            .unwrap();
        let out = s
            .ingest(
                "n1",
                &[learn("o-2", 41, "/bin/o2"), learn("o-3", 42, "/bin/o3")],
                &p,
                t1,
            )
            .await
            .unwrap();
        assert_eq!(out.changed.len(), 1);
        let o = s.baseline(&other, 0).unwrap();
        assert_eq!((o.version, o.elements.len()), (2, 3));
        assert_eq!(s.history(&other).unwrap().len(), 2);
        assert_eq!(
            s.baseline(&other, 2).unwrap(),
            o,
            "the snapshot is the whole baseline"
        );
        let (_, enforcing) = s.enforcing().unwrap();
        assert_eq!(enforcing, vec![s.baseline(&web(), 0).unwrap()]);
        (s.baseline(&web(), 0).unwrap(), o)
    };
    let s = open(dir.path());
    assert_eq!(s.baseline(&web(), 0).unwrap(), after.0, "reopened");
    assert_eq!(s.baseline(&other_workload(), 0).unwrap(), after.1);
}

fn other_workload() -> WorkloadIdentity {
    WorkloadIdentity::new("c", "shop", WorkloadKind::Deployment, "api", "app")
}

/// Client-supplied ids and cursors at the edges of their range (u64::MAX, bounds that cross)
/// read nothing; they never overflow, panic or wrap around to the start.
async fn client_cursors_at_the_edges_read_nothing(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let p = Policies::default();
    s.ingest("n1", &batch("learn", 1, 1), &p, SystemTime::now())
        .await
        .unwrap();
    approve(s.as_ref()).await;
    s.ingest("n1", &batch("dev", 2, 2), &p, SystemTime::now())
        .await
        .unwrap();
    for _ in 0..3 {
        s.audit(audit_entry("A")).await.unwrap();
    }
    let audit = |after: u64, before_id: Option<u64>, order: Order| {
        s.audit_log(&AuditQuery {
            after,
            before_id,
            limit: usize::MAX,
            order,
            ..Default::default()
        })
        .unwrap()
        .len()
    };
    for order in [Order::OldestFirst, Order::NewestFirst] {
        assert_eq!(audit(u64::MAX, None, order), 0);
        assert_eq!(audit(u64::MAX, Some(1), order), 0);
        assert_eq!(audit(5, Some(3), order), 0);
        assert_eq!(audit(0, Some(0), order), 0);
        let (list, _) = s
            .incidents(&IncidentFilter::default(), Some(u64::MAX), 100, order)
            .unwrap();
        assert!(order == Order::NewestFirst || list.is_empty(), "{list:?}");
    }
    let durable = *s.durable_cursor().borrow();
    assert!(s.read_records(u64::MAX, durable, 10).unwrap().is_ok());
    assert!(s
        .read_log(u64::MAX, u64::MAX, 10)
        .unwrap()
        .unwrap()
        .is_empty());
}

/// What a re-learning window learns is attributed in the version's history (node, pod, image),
/// and a policy can hold it for review instead of allowing it.
async fn relearned_elements_are_attributed_and_can_wait_for_review(open: Open) {
    for review in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let policies = Policies::new(procguard_core::baseline::LearningPolicy {
            relearn_review: review,
            ..Default::default()
        });
        let now = SystemTime::now();
        s.ingest("n1", &batch("a", 1, 1), &policies, now)
            .await
            .unwrap();
        approve(s.as_ref()).await;
        let digest = format!("sha256:{}", "d".repeat(64));
        let mut new_image = event("new", 2, "/bin/newtool");
        let c = new_image.process.container.as_mut().unwrap();
        c.image_digest = Some(digest.clone());
        c.pod_uid = Some("pod-uid-7".into());
        s.ingest("n1", &[new_image], &policies, now).await.unwrap();
        let b = s.baseline(&web(), 0).unwrap();
        let el = &b.elements[&procguard_core::ElementKey::exe("/bin/newtool".to_string())];
        let last = s.history(&web()).unwrap().pop().unwrap();
        assert_eq!(last.action, "relearned");
        assert_eq!(last.actor, "sensor:n1");
        for part in ["/bin/newtool", "node n1", "pod pod-uid-7", digest.as_str()] {
            assert!(
                last.reason.contains(part),
                "{part} not in {:?}",
                last.reason
            );
        }
        if review {
            assert_eq!(
                el.status,
                procguard_core::baseline::ElementStatus::NeedsReview
            );
            assert!(el.review_reasons.contains(&"relearned".to_string()));
        } else {
            assert!(el.status.allowed(), "{el:?}");
        }
    }
}

/// A baseline's history keeps its newest versions only (bounded however often it changes);
/// an older one is named as no longer kept.
async fn history_keeps_the_newest_versions(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let id = web();
    for _ in 0..1005 {
        s.change(
            &id,
            ChangeBy {
                actor: "t",
                action: "edited",
                reason: "",
                audit: None,
            },
            true,
            &|_| Ok(()),
        )
        .await
        .unwrap();
    }
    let versions: Vec<u64> = s.history(&id).unwrap().iter().map(|h| h.version).collect();
    assert_eq!(versions, (6..=1005).collect::<Vec<_>>());
    assert_eq!(s.baseline(&id, 6).unwrap().version, 6);
    let gone = s.baseline(&id, 5).unwrap_err();
    assert!(
        matches!(gone, StoreError::NoVersion { version: 5, .. }),
        "{gone:?}"
    );
    assert!(gone.to_string().contains("newest 1000"), "{gone}");
}

/// Deviations and audit records get contiguous log cursors in commit order, readable up to
/// the durable cursor, which has moved past every acknowledged write.
async fn the_record_log_is_contiguous_and_durable(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let p = Policies::default();
    s.ingest("n1", &batch("learn", 1, 1), &p, SystemTime::now())
        .await
        .unwrap();
    approve(s.as_ref()).await;
    let out = s
        .ingest("n1", &batch("dev", 2, 4), &p, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(out.deviations.len(), 4);
    s.audit(audit_entry("A")).await.unwrap();
    let durable = *s.durable_cursor().borrow();
    let records = s.read_log(0, durable, usize::MAX).unwrap().unwrap();
    assert!(!records.is_empty());
    let cursors: Vec<u64> = records.iter().map(|r| r.cursor).collect();
    assert_eq!(cursors.first(), Some(&1));
    assert!(cursors.windows(2).all(|w| w[1] == w[0] + 1), "{cursors:?}");
    assert_eq!(cursors.last(), Some(&durable));
    assert!(s.check_cursor(0).unwrap().is_ok());
}

/// Everything acknowledged before a crash is there after reopening; the child side of it is
/// [`crash_child`].
fn acknowledged_writes_survive_a_crash(engine: &str, test: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_ENGINE, engine)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The child ends by aborting: SIGABRT, never a clean exit.
    assert!(
        !out.status.success() && stdout.contains("CRASHING"),
        "the child did not crash as planned: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut acked_seq = 0;
    let mut audits = BTreeSet::new();
    let mut version = 0;
    let mut cursor = 0;
    for l in stdout.lines() {
        let mut w = l.split_whitespace();
        match (w.next(), w.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("ACK"), Some(v)) => acked_seq = v,
            (Some("AUDIT"), Some(v)) => {
                audits.insert(v);
            }
            (Some("VERSION"), Some(v)) => version = v,
            (Some("CURSOR"), Some(v)) => cursor = v,
            _ => {}
        }
    }
    assert!(
        acked_seq > 0 && !audits.is_empty() && version > 0,
        "{stdout}"
    );
    let s = open_engine(engine, dir.path());
    assert!(s.sensor("n1").unwrap().acked_sequence >= acked_seq);
    assert!(s.events_ingested().unwrap() >= acked_seq);
    assert!(s.baseline(&web(), 0).unwrap().version >= version);
    assert!(s
        .history(&web())
        .unwrap()
        .iter()
        .any(|h| h.version == version));
    let stored: BTreeSet<u64> = s
        .audit_log(&AuditQuery {
            limit: usize::MAX,
            ..Default::default()
        })
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert!(
        audits.is_subset(&stored),
        "{audits:?} not all in {stored:?}"
    );
    // Every approval in history has its audit record naming that version, and no more.
    let log = all_audit(s.as_ref());
    let approvals: Vec<u64> = s
        .history(&web())
        .unwrap()
        .iter()
        .filter(|h| h.action == "approved")
        .map(|h| h.version)
        .collect();
    let audited: Vec<u64> = log
        .iter()
        .filter(|a| a.action == "ApproveBaseline")
        .map(|a| a.detail.trim_start_matches("version ").parse().unwrap())
        .collect();
    assert_eq!(
        approvals, audited,
        "a change on disk without its audit record, or the reverse"
    );
    // The log is whole up to every cursor that was durable before the crash.
    let durable = *s.durable_cursor().borrow();
    assert!(
        durable >= cursor,
        "durable cursor went back: {durable} < {cursor}"
    );
    let records = s.read_log(0, durable, usize::MAX).unwrap().unwrap();
    assert_eq!(records.len() as u64, durable, "a gap in the log");
    // Replaying every acknowledged batch after the crash stores nothing twice.
    let stored_events = s.events_ingested().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let replay = s
            .ingest(
                "n1",
                &crash_batches(acked_seq),
                &Policies::default(),
                SystemTime::now(),
            )
            .await
            .unwrap();
        assert_eq!(replay.applied as u64, 0);
    });
    assert_eq!(s.events_ingested().unwrap(), stored_events);
}

const CHILD_DIR: &str = "PROCGUARD_CONFORMANCE_CRASH_DIR";
const CHILD_ENGINE: &str = "PROCGUARD_CONFORMANCE_CRASH_ENGINE";
const CRASH_BATCH: u64 = 20;

/// The batches the crash child writes, up to sequence `upto`: learning for the first four
/// (the child approves the baseline after them), deviations with incidents after.
fn crash_batches(upto: u64) -> Vec<IngestEvent> {
    (1..=upto)
        .map(|s| {
            let exe = if s <= 4 * CRASH_BATCH {
                format!("/bin/c-{}", s % 50)
            } else {
                format!("/bin/d-{}", s % 7)
            };
            event(&format!("c-{s}"), s, &exe)
        })
        .collect()
}

/// In the child: writes through the engine, printing each acknowledged write, then starts one
/// more write and aborts without waiting for it. Returns (false) only when not the child.
fn crash_child() -> bool {
    let (Some(dir), Some(engine)) = (
        std::env::var_os(CHILD_DIR),
        std::env::var(CHILD_ENGINE).ok(),
    ) else {
        return false;
    };
    use std::io::Write;
    let s = open_engine(&engine, Path::new(&dir));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = Policies::default();
        let all = crash_batches(10 * CRASH_BATCH);
        let mut out = std::io::stdout();
        for (i, chunk) in all.chunks(CRASH_BATCH as usize).enumerate() {
            let o = s.ingest("n1", chunk, &p, SystemTime::now()).await.unwrap();
            writeln!(out, "ACK {}", o.acked_sequence).unwrap();
            let id = s.audit(audit_entry(&format!("a{i}"))).await.unwrap();
            writeln!(out, "AUDIT {id}").unwrap();
            if i == 3 {
                writeln!(out, "VERSION {}", approve(s.as_ref()).await).unwrap();
            }
            writeln!(out, "CURSOR {}", *s.durable_cursor().borrow()).unwrap();
            out.flush().unwrap();
        }
        // One more batch committed but never waited for, and an approval under way, then the
        // crash: whatever of the approval reached the disk, it did with its audit record.
        let last = batch("late", 10 * CRASH_BATCH + 1, CRASH_BATCH);
        let _uncommitted = s.ingest_commit("n1", &last, &p, SystemTime::now()).await;
        let pending = Arc::clone(&s);
        tokio::spawn(async move { approve(pending.as_ref()).await });
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        writeln!(out, "CRASHING").unwrap();
        out.flush().unwrap();
    });
    std::process::abort();
}

fn open_engine(engine: &str, dir: &Path) -> SharedStorage {
    match engine {
        "sled" => open_sled(dir),
        other => panic!("no engine '{other}' in the conformance suite"),
    }
}

/// Every test of the suite that reopens a directory does so after dropping the previous
/// instance in this process, whose background flush may hold sled's lock for a moment longer.
fn open_sled(dir: &Path) -> SharedStorage {
    Arc::new(Store::reopen_after_drop(dir, DEFAULT_TAIL_RECORDS))
}

/// A durable subscription is its first user's: another identity neither moves nor claims it,
/// and ownership survives reopening.
async fn durable_subscriptions_belong_to_their_owner(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        assert_eq!(
            s.claim_subscription("siem", "alice").await.unwrap(),
            Owned::Mine(0)
        );
        assert_eq!(
            s.ack_cursor("siem", "alice", 0).await.unwrap(),
            Owned::Mine(0)
        );
        assert_eq!(
            s.ack_cursor("siem", "mallory", 0).await.unwrap(),
            Owned::Other
        );
        assert_eq!(
            s.claim_subscription("siem", "mallory").await.unwrap(),
            Owned::Other
        );
        // Acknowledging a name nobody used makes it the caller's.
        assert_eq!(
            s.ack_cursor("elastic", "mallory", 0).await.unwrap(),
            Owned::Mine(0)
        );
    }
    let s = open(dir.path());
    let owner = |n: &str| s.get_subscription(n).unwrap().and_then(|x| x.owner);
    assert_eq!(owner("siem").as_deref(), Some("alice"));
    assert_eq!(owner("elastic").as_deref(), Some("mallory"));
    assert_eq!(s.get_subscription("nobody").unwrap(), None);
}

/// A sensor's summaries apply as the executions they stand for: the same replay, sent once an
/// event per execution and once summarised (each key's first execution of a phase alone, the
/// rest as one event counting them, as the sensor sends a deviation or a new element), leaves
/// the same baseline (elements, provenance and counters), the same daily activity and dry
/// run, and incidents with the same counts, through learning, enforcement, drift, fileless
/// runs, partial events, probes and a crash loop.
/// `process` as a sensor sent it: event `id`, sequence `seq`, standing for `executions`.
fn sent(id: String, seq: u64, process: &ProcessEvent, executions: u64) -> IngestEvent {
    IngestEvent {
        event_id: id,
        sequence: seq,
        process: process.clone(),
        reported: Default::default(),
        placement: Default::default(),
        executions,
    }
}

async fn summaries_apply_as_their_executions(open: Open) {
    use procguard_core::process::{Ancestor, Completeness};
    use procguard_core::{ExecContext, Origin};
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (each, summed) = (open(da.path()), open(db.path()));
    let p = Policies::default();
    let t = |s: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000 + s);
    let run = |exe: &str, pid: u32, pod: &str| {
        let mut e = ProcessEvent::test(exe)
            .pid(pid)
            .argv(&[exe, &format!("--job={pid}")])
            .on_node("n1");
        if let Some(c) = e.container.as_mut() {
            c.pod_name = Some(pod.into());
        }
        e
    };
    let with = |mut e: ProcessEvent, f: &dyn Fn(&mut ProcessEvent)| {
        f(&mut e);
        e
    };
    let learning: Vec<ProcessEvent> = (0..60u32)
        .map(|i| match i % 6 {
            0 | 1 => run("/app/server", 100 + i, "web-1"),
            2 => run("/app/server", 100 + i, "web-2"),
            3 => with(run("/bin/sh", 100 + i, "web-1"), &|e| {
                e.ancestors = vec![Ancestor {
                    pid: 1,
                    exe_path: "/app/server".into(),
                }]
            }),
            4 => run("/app/health", 100 + i, "web-1").context(ExecContext::Probe),
            _ => with(run("/bin/busybox", 100 + i, "web-2"), &|e| {
                e.applet = Some(procguard_core::element::UNREADABLE.into());
                e.completeness = Completeness::Partial;
                e.missing = vec!["applet".into()];
            }),
        })
        .collect();
    let enforced: Vec<ProcessEvent> = (0..700u32)
        .map(|i| match i % 7 {
            0 | 1 => run("/tmp/miner", 1000 + i, "web-1"),
            2 => run("/tmp/miner", 1000 + i, "web-2"),
            3 => run("/app/server", 1000 + i, "web-1"),
            4 => with(run("/app/server", 1000 + i, "web-1"), &|e| {
                e.origin = Origin::WritableLayer;
                e.exe_writable_location = true;
            }),
            5 if i % 2 == 0 => with(run("memfd:x", 1000 + i, "web-1"), &|e| e.exe_memfd = true),
            5 => run("/usr/bin/curl", 1000 + i, "web-2"),
            _ => run("/app/health", 1000 + i, "web-1").context(ExecContext::Probe),
        })
        .collect();
    // Sent one event per execution, in batches of 50.
    let mut seq = 0;
    let mut per_exec = |evs: &[ProcessEvent]| {
        evs.chunks(50)
            .map(|c| {
                c.iter()
                    .map(|e| {
                        seq += 1;
                        sent(format!("e{seq}"), seq, e, 1)
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let (each_learning, each_enforced) = (per_exec(&learning), per_exec(&enforced));
    // Summarised as the sensor does: per key, the first alone and the rest as one event.
    let mut seq = 0;
    let mut summarise = |evs: &[ProcessEvent]| {
        let mut keys: Vec<(&ProcessEvent, u64)> = Vec::new();
        let mut out = Vec::new();
        for e in evs {
            let k = procguard_core::ingest::SummaryKey::of(e);
            match keys
                .iter_mut()
                .find(|(f, _)| procguard_core::ingest::SummaryKey::of(f) == k)
            {
                Some((_, n)) => *n += 1,
                None => {
                    seq += 1;
                    out.push(sent(format!("s{seq}"), seq, e, 1));
                    keys.push((e, 0));
                }
            }
        }
        for (e, n) in keys.into_iter().filter(|(_, n)| *n > 0) {
            seq += 1;
            out.push(sent(format!("s{seq}"), seq, e, n));
        }
        out
    };
    let (sum_learning, sum_enforced) = (summarise(&learning), summarise(&enforced));
    assert!(
        sum_learning.len() < 15 && sum_enforced.len() < 20,
        "{}",
        sum_enforced.len()
    );
    for b in &each_learning {
        each.ingest("n1", b, &p, t(1)).await.unwrap();
    }
    summed.ingest("n1", &sum_learning, &p, t(1)).await.unwrap();
    let same = |what: &str| {
        let (mut a, mut b) = (
            each.baseline(&web(), 0).unwrap(),
            summed.baseline(&web(), 0).unwrap(),
        );
        // The approval stamps the engine's clock; everything else must be equal.
        (a.updated_at, b.updated_at) = (t(0), t(0));
        assert_eq!(a, b, "{what}: the baselines differ");
        a
    };
    let learned = same("after learning");
    assert_eq!(
        learned.learning.events_observed, 50,
        "probes are not learning"
    );
    assert_eq!(learned.coverage.partial_events, 10);
    assert_eq!(
        learned
            .elements
            .values()
            .map(|e| e.provenance.count)
            .sum::<u64>(),
        40
    );
    for s in [&each, &summed] {
        approve_at(s.as_ref(), t(2)).await;
    }
    let mut deviations = (0, 0);
    for b in &each_enforced {
        deviations.0 += each
            .ingest("n1", b, &p, t(3))
            .await
            .unwrap()
            .deviations
            .len();
    }
    let out = summed.ingest("n1", &sum_enforced, &p, t(3)).await.unwrap();
    deviations.1 = out.deviations.iter().map(|d| d.executions).sum::<u64>() as usize;
    assert_eq!(deviations.0, 500, "miner, drift, memfd and curl");
    assert_eq!(deviations.0, deviations.1, "every deviation counted");
    let enforced_baseline = same("after enforcement");
    let server = &enforced_baseline.elements[&procguard_core::ElementKey::exe("/app/server")];
    assert_eq!(
        server.provenance.count,
        30 + 200,
        "image runs and drift runs sighted"
    );
    let activity = |s: &SharedStorage| s.activity(&web(), 0).unwrap();
    assert_eq!(activity(&each), activity(&summed), "daily activity");
    let candidate = enforced_baseline
        .elements
        .iter()
        .map(|(k, e)| (k.clone(), e.origins.clone()))
        .collect();
    let dry = |s: &SharedStorage| {
        let a = activity(s);
        procguard_core::review::dry_run(&candidate, a.iter().map(|(_, k, r)| (k, r)))
    };
    let dry_each = dry(&each);
    assert_eq!(dry_each, dry(&summed), "dry run");
    assert!(dry_each
        .would_alert
        .iter()
        .any(|h| h.element.exe_path == "/tmp/miner" && h.count == 300));
    let incidents = |s: &SharedStorage| {
        let (list, _) = s
            .incidents(&Default::default(), None, 100, Order::OldestFirst)
            .unwrap();
        list.into_iter()
            .map(|i| (i.kind, i.exe_path, i.count, i.severity, i.state, i.pods))
            .collect::<Vec<_>>()
    };
    let incidents_each = incidents(&each);
    assert_eq!(
        incidents_each,
        incidents(&summed),
        "incidents and their counts"
    );
    assert!(incidents_each
        .iter()
        .any(|i| i.1 == "/tmp/miner" && i.2 == 300));
    assert!(
        summed.events_ingested().unwrap() * 20 < each.events_ingested().unwrap(),
        "summaries store far fewer events"
    );
    assert_eq!(
        summed.executions_ingested().unwrap(),
        each.executions_ingested().unwrap(),
        "and stand for every execution"
    );
    assert_eq!(each.executions_ingested().unwrap(), 760);
}

/// Runs every conformance check against one engine: `engine_conformance!(module, "name",
/// open_fn)`, where `name` is known to [`open_engine`] (the crash child reopens by name).
macro_rules! engine_conformance {
    ($module:ident, $name:literal, $open:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ingest_is_idempotent() {
                super::ingest_is_idempotent($open).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn provisional_identities_are_never_learned() {
                super::provisional_identities_are_never_learned($open).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_refused_change_changes_nothing() {
                super::a_refused_change_changes_nothing($open).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn versions_count_per_baseline_with_a_history_record_each() {
                super::versions_count_per_baseline_with_a_history_record_each($open).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn changes_carry_their_audit_record() {
                super::changes_carry_their_audit_record($open).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn client_cursors_at_the_edges_read_nothing() {
                super::client_cursors_at_the_edges_read_nothing($open).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn relearned_elements_are_attributed_and_can_wait_for_review() {
                super::relearned_elements_are_attributed_and_can_wait_for_review($open).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sightings_make_no_version_and_are_kept() {
                super::sightings_make_no_version_and_are_kept($open).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn history_keeps_the_newest_versions() {
                super::history_keeps_the_newest_versions($open).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_record_log_is_contiguous_and_durable() {
                super::the_record_log_is_contiguous_and_durable($open).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn summaries_apply_as_their_executions() {
                super::summaries_apply_as_their_executions($open).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn durable_subscriptions_belong_to_their_owner() {
                super::durable_subscriptions_belong_to_their_owner($open).await;
            }

            #[test]
            fn acknowledged_writes_survive_a_crash() {
                if crash_child() {
                    unreachable!("the crash child aborts");
                }
                super::acknowledged_writes_survive_a_crash(
                    $name,
                    concat!(
                        "store::conformance::",
                        stringify!($module),
                        "::acknowledged_writes_survive_a_crash"
                    ),
                );
            }
        }
    };
}

engine_conformance!(sled, "sled", open_sled);
