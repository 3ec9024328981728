//! Unit tests of the sled engine beyond the conformance suite: cursors, the shared tail,
//! incidents, health, retention and the event-ID index.

use super::Store;
use crate::store::conformance::{event, web};
use crate::store::*;
use procguard_core::incident::{Action, Incident, IncidentFilter, Severity};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Ingests event `id` again and returns how many of it were recognised as duplicates.
/// The audit record of an API call, as the gate makes it.
fn call(action: &str) -> AuditEntry {
    AuditEntry {
        id: 0,
        at: SystemTime::now(),
        actor: "tests".into(),
        role: "approver".into(),
        action: action.into(),
        target: String::new(),
        result: AuditOutcome::Ok,
        detail: String::new(),
        peer: String::new(),
    }
}

/// Changes web's baseline as the server would on its own (no audit record), as `action`.
async fn edit<T>(
    s: &Store,
    action: &str,
    f: impl Fn(&mut Baseline) -> T + Send + Sync,
) -> Baseline {
    s.change(
        &web(),
        ChangeBy {
            actor: "t",
            action,
            reason: "",
            audit: None,
        },
        false,
        &|b| {
            f(b);
            Ok(())
        },
    )
    .await
    .unwrap()
}

async fn replay(s: &Store, id: &str) -> usize {
    s.ingest(
        "n1",
        &[event(id, 5, "/app")],
        &policies(),
        SystemTime::now(),
    )
    .await
    .unwrap()
    .duplicates
}

async fn enforced_store(dir: &std::path::Path) -> Store {
    enforced(Store::open(dir).unwrap()).await
}

/// `s` with web's baseline learned (one executable) and approved: enforcing.
async fn enforced(s: Store) -> Store {
    s.ingest(
        "n1",
        &[event("learn", 1, "/app")],
        &procguard_core::policy::Policies::default(),
        SystemTime::now(),
    )
    .await
    .unwrap();
    edit(&s, "approved", |b| b.approve(None, SystemTime::now())).await;
    s
}

fn reopen(dir: &std::path::Path, tail: usize) -> Store {
    Store::reopen_after_drop(dir, tail)
}

fn all(s: &Store) -> Vec<LogRecord> {
    let upto = *s.durable_cursor().borrow();
    s.read_log(0, upto, usize::MAX).unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_get_contiguous_cursors_and_one_incident_per_group() {
    let dir = tempfile::tempdir().unwrap();
    let s = enforced_store(dir.path()).await;
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..10u64 {
                let evs: Vec<_> = (0..5u64)
                    .map(|i| event(&format!("{t}-{b}-{i}"), 100 + b * 5 + i, "/bin/sh"))
                    .collect();
                s.ingest(
                    &format!("node{t}"),
                    &evs,
                    &procguard_core::policy::Policies::default(),
                    SystemTime::now(),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let recs = all(&s);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.cursor, i as u64 + 1, "cursors are contiguous");
    }
    let deviations = recs
        .iter()
        .filter(|r| matches!(r.body, RecordBody::Deviation { .. }))
        .count();
    assert_eq!(deviations, 200);
    let (incidents, _) = s
        .incidents(&IncidentFilter::default(), None, 10, Order::OldestFirst)
        .unwrap();
    assert_eq!(incidents.len(), 1, "one executable in one container");
    assert_eq!(incidents[0].count, 200);
    assert_eq!(incidents[0].severity, Severity::High);
    assert_eq!(s.last_cursor(), recs.last().unwrap().cursor);
    // A replayed batch adds nothing.
    s.ingest(
        "node0",
        &[event("0-0-0", 100, "/bin/sh")],
        &procguard_core::policy::Policies::default(),
        SystemTime::now(),
    )
    .await
    .unwrap();
    assert_eq!(all(&s).len(), recs.len());
}

#[tokio::test]
async fn cursors_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let s = enforced_store(dir.path()).await;
        s.ingest(
            "n1",
            &[event("d1", 2, "/bin/sh")],
            &procguard_core::policy::Policies::default(),
            SystemTime::now(),
        )
        .await
        .unwrap();
        s.last_cursor()
    };
    let s = reopen(dir.path(), DEFAULT_TAIL_RECORDS);
    assert_eq!(*s.durable_cursor().borrow(), last);
    s.ingest(
        "n1",
        &[event("d2", 3, "/bin/sh")],
        &procguard_core::policy::Policies::default(),
        SystemTime::now(),
    )
    .await
    .unwrap();
    let recs = all(&s);
    assert_eq!(recs[recs.len() - 2].cursor, last + 1);
}

#[tokio::test]
async fn retention_makes_old_cursors_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let s = enforced_store(dir.path()).await;
    for i in 0..20u64 {
        s.ingest(
            "n1",
            &[event(&format!("d{i}"), 2 + i, "/bin/sh")],
            &procguard_core::policy::Policies::default(),
            SystemTime::now(),
        )
        .await
        .unwrap();
    }
    let total = all(&s).len() as u64;
    let keep = Retention {
        max_age: Duration::from_secs(3600),
        max_bytes: s.log_bytes() / 2,
        audit_max_age: Retention::AUDIT_AGE,
        audit_max_bytes: Retention::AUDIT_BYTES,
        incident_max_age: Retention::INCIDENT_AGE,
        incident_max_closed: Retention::INCIDENTS_CLOSED,
        sensor_max_age: Retention::SENSOR_AGE,
    };
    let out = s.enforce_retention(keep, SystemTime::now()).await.unwrap();
    assert!(out.removed > 0 && out.removed < total, "{out:?}");
    assert!(s.log_bytes() <= keep.max_bytes);
    assert_eq!(
        s.check_cursor(0).unwrap(),
        Err(OutOfRange {
            after: 0,
            oldest: out.floor + 1
        })
    );
    assert_eq!(s.check_cursor(out.floor).unwrap(), Ok(()));
    let upto = *s.durable_cursor().borrow();
    assert!(s.read_log(0, upto, 10).unwrap().is_err());
    let rest = s.read_log(out.floor, upto, usize::MAX).unwrap().unwrap();
    assert_eq!(rest.len() as u64, total - out.removed);
    // By age: everything older than "now + 2h minus 1h" goes.
    let later = SystemTime::now() + Duration::from_secs(7200);
    s.enforce_retention(keep, later).await.unwrap();
    assert!(s.read_log(out.floor, upto, 10).unwrap().is_err());
}

#[tokio::test]
async fn health_counters_raise_one_blind_incident_and_silence_is_flagged_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let t0 = SystemTime::now();
    let r = |dropped, partial| HealthReport {
        dropped,
        partial,
        kernel_losses: 0,
        capture_stopped: None,
    };
    assert!(s.sensor_health("n1", r(0, 0), t0).await.unwrap().is_none());
    // Partial events are coverage, not blindness: no incident, however many.
    assert!(s.sensor_health("n1", r(0, 40), t0).await.unwrap().is_none());
    let i = s.sensor_health("n1", r(3, 40), t0).await.unwrap().unwrap();
    assert!(
        i.severity_reason.contains("3 execs without an event"),
        "{}",
        i.severity_reason
    );
    assert!(s.sensor_health("n1", r(3, 90), t0).await.unwrap().is_none());
    // A restarted sensor starts counting again from zero.
    let again = s.sensor_health("n1", r(1, 2), t0).await.unwrap().unwrap();
    assert_eq!(again.id, i.id);
    assert_eq!(again.count, 2);
    let later = t0 + Duration::from_secs(300);
    let silent = s
        .silent_sensors(Duration::from_secs(60), t0, later)
        .await
        .unwrap();
    assert_eq!(silent.len(), 1);
    assert!(silent[0].severity_reason.contains("has not reported"));
    assert!(s
        .silent_sensors(Duration::from_secs(60), t0, later)
        .await
        .unwrap()
        .is_empty());
    // A server that just started does not flag sensors it could not have heard from.
    assert!(s
        .silent_sensors(Duration::from_secs(60), later, later)
        .await
        .unwrap()
        .is_empty());
}

/// `--sensor-blind-losses`: a report whose new losses (execs without an event and kernel
/// losses together) stay below the threshold raises nothing, one that reaches it does; the
/// counters still move, so losses below it are not carried into the next report.
#[tokio::test]
async fn the_blind_threshold_counts_both_kinds_of_loss_per_report() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap().with_blind_losses(10);
    let t0 = SystemTime::now();
    let r = |dropped, kernel_losses| HealthReport {
        dropped,
        partial: 0,
        kernel_losses,
        capture_stopped: None,
    };
    assert!(s.sensor_health("n1", r(4, 5), t0).await.unwrap().is_none());
    assert!(s.sensor_health("n1", r(8, 10), t0).await.unwrap().is_none());
    let i = s.sensor_health("n1", r(12, 16), t0).await.unwrap().unwrap();
    assert!(
        i.severity_reason.contains("4 execs without an event")
            && i.severity_reason
                .contains("6 never delivered by the kernel"),
        "{}",
        i.severity_reason
    );
    // A stopped capture is blindness whatever the threshold.
    let stopped = HealthReport {
        capture_stopped: Some("proc connector read failed".into()),
        ..r(12, 16)
    };
    let j = s.sensor_health("n1", stopped, t0).await.unwrap().unwrap();
    assert_eq!(j.id, i.id);
    assert!(j.severity_reason.contains("stopped capturing"));
}

#[tokio::test]
async fn a_missing_version_is_named_as_such_not_as_a_missing_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let s = enforced_store(dir.path()).await;
    let current = s.baseline(&web(), 0).unwrap().version;
    match s.baseline(&web(), current + 100) {
        Err(StoreError::NoVersion { workload, version }) => {
            assert_eq!(workload, web().to_string());
            assert_eq!(version, current + 100);
        }
        other => panic!("{other:?}"),
    }
    let nobody = procguard_core::WorkloadIdentity::new(
        "c",
        "ns",
        procguard_core::WorkloadKind::Deployment,
        "nobody",
        "app",
    );
    assert!(matches!(
        s.baseline(&nobody, 3),
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_stopped_capture_is_a_blind_sensor_once_per_stop() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let t0 = SystemTime::now();
    let r = |stopped: Option<&str>| HealthReport {
        capture_stopped: stopped.map(str::to_string),
        ..Default::default()
    };
    assert!(s.sensor_health("n1", r(None), t0).await.unwrap().is_none());
    // No loss counter moves (nothing is seen any more), yet the sensor is blind.
    let i = s
        .sensor_health("n1", r(Some("eBPF ring buffer wait failed: EBADF")), t0)
        .await
        .unwrap()
        .expect("a stopped capture opens a sensor-blind incident");
    assert!(
        i.severity_reason
            .contains("stopped capturing (eBPF ring buffer wait failed: EBADF)"),
        "{}",
        i.severity_reason
    );
    // Every later report says the same: not appended again.
    for _ in 0..3 {
        let same = s.sensor_health("n1", r(Some("eBPF ring buffer wait failed: EBADF")), t0);
        assert!(same.await.unwrap().is_none());
    }
    // Restarted and capturing, then stopped again: a new stop, the same open episode.
    assert!(s.sensor_health("n1", r(None), t0).await.unwrap().is_none());
    let again = s
        .sensor_health("n1", r(Some("proc connector read failed: ENOBUFS")), t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, i.id);
    assert_eq!(again.count, 2);
}

#[tokio::test]
async fn actions_follow_the_lifecycle_and_land_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = enforced_store(dir.path()).await;
    s.ingest(
        "n1",
        &[event("d1", 2, "/usr/bin/id")],
        &procguard_core::policy::Policies::default(),
        SystemTime::now(),
    )
    .await
    .unwrap();
    let (list, _) = s
        .incidents(&IncidentFilter::default(), None, 10, Order::OldestFirst)
        .unwrap();
    let id = list[0].id.clone();
    let n: u64 = id.parse().unwrap();
    let i = s
        .incident_action(
            n,
            Action::Acknowledge,
            "alice",
            "looking",
            call("IncidentAction"),
        )
        .await
        .unwrap();
    assert!(i.changed);
    assert_eq!(
        i.incident.state,
        procguard_core::incident::IncidentState::Acknowledged
    );
    // A repeat succeeds, changes nothing and appends nothing.
    let cursor = s.last_cursor();
    let again = s
        .incident_action(n, Action::Acknowledge, "bob", "", call("IncidentAction"))
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(again.incident, i.incident);
    assert_eq!(s.last_cursor(), cursor);
    s.incident_action(n, Action::Resolve, "alice", "fine", call("IncidentAction"))
        .await
        .unwrap();
    let err = s
        .incident_action(n, Action::Allow, "alice", "", call("IncidentAction"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already resolved"), "{err}");
    assert!(matches!(
        s.incident_action(999, Action::Resolve, "a", "", call("IncidentAction"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    // The same executable again after resolution opens a new incident.
    s.ingest(
        "n1",
        &[event("d2", 3, "/usr/bin/id")],
        &procguard_core::policy::Policies::default(),
        SystemTime::now(),
    )
    .await
    .unwrap();
    let (list, _) = s
        .incidents(&IncidentFilter::default(), None, 10, Order::OldestFirst)
        .unwrap();
    assert_eq!(list.len(), 2);
    let states: Vec<_> = all(&s)
        .into_iter()
        .filter_map(|r| match r.body {
            RecordBody::Incident(i) => Some((i.id, i.state.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (id.clone(), "open"),
            (id.clone(), "acknowledged"),
            (id, "resolved"),
            (list[1].id.clone(), "open")
        ]
    );
}

fn policies() -> procguard_core::policy::Policies {
    procguard_core::policy::Policies::default()
}

#[tokio::test]
async fn an_exec_session_into_an_enforced_workload_is_one_incident_unless_recorded_only() {
    use procguard_core::incident::{IncidentFilter, IncidentKind};
    use procguard_core::policy::{Policies, PolicyFile};
    use procguard_core::ExecContext;
    let session = |id: &str, seq: u64, exe: &str, session: &str| {
        let mut e = event(id, seq, exe);
        e.process.context = ExecContext::ExecSession;
        e.process.exec_session = Some(session.into());
        e
    };
    let sessions = |s: &Store| -> Vec<Incident> {
        s.incidents(&IncidentFilter::default(), None, 100, Order::OldestFirst)
            .unwrap()
            .0
            .into_iter()
            .filter(|i| i.kind == IncidentKind::ExecSession)
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let s = enforced(Store::open(dir.path()).unwrap()).await;
    // Two processes of one session (the second allowed: `/app` is in the baseline), then
    // another session: two incidents, the first counting both processes.
    let alert = policies();
    s.ingest(
        "n1",
        &[
            session("s1", 10, "/bin/sh", "n1/100/1"),
            session("s2", 11, "/app", "n1/100/1"),
            session("s3", 12, "/app", "n1/200/1"),
        ],
        &alert,
        SystemTime::now(),
    )
    .await
    .unwrap();
    let got = sessions(&s);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].count, 2);
    assert_eq!(got[0].exe_path, "/bin/sh");
    assert_eq!(got[1].count, 1);
    // The same workload under a record-only rule: no new incident.
    let file: PolicyFile = serde_yaml::from_str(
        "rules:\n- namespace: shop\n  mode: require-approval\n  exec_sessions: record-only\n",
    )
    .unwrap();
    let quiet = Policies::compile(Default::default(), &file).unwrap();
    assert_eq!(
        web().namespace,
        "shop",
        "the rule must match the test workload"
    );
    s.ingest(
        "n1",
        &[session("s4", 13, "/app", "n1/300/1")],
        &quiet,
        SystemTime::now(),
    )
    .await
    .unwrap();
    assert_eq!(sessions(&s).len(), 2);
}

/// Ingests `n` single-deviation batches; returns the last cursor.
async fn deviations(s: &Store, from: u64, n: u64) -> u64 {
    for i in from..from + n {
        s.ingest(
            "n1",
            &[event(&format!("d{i}"), 10 + i, "/bin/sh")],
            &policies(),
            SystemTime::now(),
        )
        .await
        .unwrap();
    }
    s.last_cursor()
}

fn cursors(v: &[Arc<SharedRecord>]) -> Vec<u64> {
    v.iter().map(|r| r.cursor).collect()
}

#[tokio::test]
async fn live_readers_take_the_shared_tail_and_laggards_read_sled_with_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = enforced(Store::open_with_tail(dir.path(), 16).unwrap()).await;
    let last = deviations(&s, 0, 30).await;
    assert_eq!(s.tail_len(), 16, "the tail is bounded");
    let upto = *s.durable_cursor().borrow();
    assert_eq!(upto, last);
    // At the live edge: from memory, contiguous, capped by `limit` and `upto`.
    let (recent, source) = s.read_records(last - 5, upto, 100).unwrap().unwrap();
    assert_eq!(source, ReadSource::Tail);
    assert_eq!(cursors(&recent), ((last - 4)..=last).collect::<Vec<_>>());
    let (two, _) = s.read_records(last - 5, last - 3, 100).unwrap().unwrap();
    assert_eq!(cursors(&two), vec![last - 4, last - 3]);
    // Behind the tail: from sled, and a reader walking forward switches to the tail.
    let mut after = 0;
    let mut sources = Vec::new();
    let mut seen = Vec::new();
    while after < upto {
        let (batch, source) = s.read_records(after, upto, 7).unwrap().unwrap();
        sources.push(source);
        seen.extend(cursors(&batch));
        after = batch.last().unwrap().cursor;
    }
    assert_eq!(seen, (1..=upto).collect::<Vec<_>>(), "no gap, no duplicate");
    assert_eq!(sources.first(), Some(&ReadSource::Storage));
    assert_eq!(sources.last(), Some(&ReadSource::Tail));
    // The tail holds what sled holds.
    let from_sled = s.read_log(last - 3, upto, 10).unwrap().unwrap();
    let (from_tail, _) = s.read_records(last - 3, upto, 10).unwrap().unwrap();
    assert_eq!(
        serde_json::to_string(&from_sled).unwrap(),
        serde_json::to_string(&from_tail.iter().map(|r| &r.record).collect::<Vec<_>>()).unwrap()
    );
    // Nothing past the durable cursor, even when asked.
    let (none, _) = s.read_records(upto, upto + 10, 10).unwrap().unwrap();
    assert!(none.is_empty());
    // A store without a tail reads everything from sled.
    drop(s);
    let s = reopen(dir.path(), 0);
    deviations(&s, 100, 2).await;
    let upto = *s.durable_cursor().borrow();
    let (b, source) = s.read_records(upto - 1, upto, 10).unwrap().unwrap();
    assert_eq!((b.len(), source), (1, ReadSource::Storage));
}

#[tokio::test]
async fn retention_applies_to_the_tail_too_and_takes_deviations_with_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = enforced_store(dir.path()).await;
    let last = deviations(&s, 0, 20).await;
    // Each deviation is stored once, in its log record.
    let logged = |s: &Store, after: u64| -> Vec<String> {
        let upto = *s.durable_cursor().borrow();
        s.read_log(after, upto, usize::MAX)
            .unwrap()
            .unwrap()
            .into_iter()
            .filter_map(|r| match r.body {
                RecordBody::Deviation { deviation, .. } => Some(deviation.event_id),
                _ => None,
            })
            .collect()
    };
    assert_eq!(logged(&s, 0).len(), 20);
    let keep = Retention {
        max_age: Duration::from_secs(3600),
        max_bytes: s.log_bytes() / 2,
        audit_max_age: Retention::AUDIT_AGE,
        audit_max_bytes: Retention::AUDIT_BYTES,
        incident_max_age: Retention::INCIDENT_AGE,
        incident_max_closed: Retention::INCIDENTS_CLOSED,
        sensor_max_age: Retention::SENSOR_AGE,
    };
    let out = s.enforce_retention(keep, SystemTime::now()).await.unwrap();
    assert!(out.removed > 0, "{out:?}");
    assert!(out.deviations_removed > 0, "{out:?}");
    assert!(s.log_bytes() <= keep.max_bytes);
    // The deviations retention did not count as removed are all still in the log.
    let left = logged(&s, out.floor);
    assert_eq!(left.len() as u64, 20 - out.deviations_removed);
    let upto = *s.durable_cursor().borrow();
    // The tail still holds records under the floor; a reader there is told, not served.
    assert!(s.tail_len() as u64 > last - out.floor);
    assert_eq!(
        s.read_records(out.floor - 1, upto, 10)
            .unwrap()
            .unwrap_err(),
        OutOfRange {
            after: out.floor - 1,
            oldest: out.floor + 1
        }
    );
    assert!(s.read_records(out.floor, upto, 10).unwrap().is_ok());
}

#[tokio::test]
async fn event_ids_are_remembered_for_at_least_the_retention_age_then_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let s = enforced_store(dir.path()).await;
    let keep = Retention {
        max_age: Duration::from_secs(3600),
        max_bytes: 1 << 30,
        audit_max_age: Retention::AUDIT_AGE,
        audit_max_bytes: Retention::AUDIT_BYTES,
        incident_max_age: Retention::INCIDENT_AGE,
        incident_max_closed: Retention::INCIDENTS_CLOSED,
        sensor_max_age: Retention::SENSOR_AGE,
    };
    let t0 = SystemTime::now();
    assert_eq!(replay(&s, "old").await, 0);
    // Younger than the age: nothing rotates.
    let out = s
        .enforce_retention(keep, t0 + Duration::from_secs(1800))
        .await
        .unwrap();
    assert!(!out.event_ids_rotated);
    // Past the age: a new generation; the old IDs are still recognised.
    let out = s
        .enforce_retention(keep, t0 + Duration::from_secs(3700))
        .await
        .unwrap();
    assert!(out.event_ids_rotated);
    assert_eq!(out.event_ids_removed, 0);
    assert_eq!(
        replay(&s, "old").await,
        1,
        "one age after: still a duplicate"
    );
    assert_eq!(replay(&s, "newer").await, 0);
    // Survives a restart: generations live in sled.
    let remembered = s.event_ids_remembered();
    drop(s);
    let s = reopen(dir.path(), DEFAULT_TAIL_RECORDS);
    assert_eq!(s.event_ids_remembered(), remembered);
    assert_eq!(replay(&s, "old").await, 1);
    // Another age later, the first generation is dropped and counted.
    let out = s
        .enforce_retention(keep, t0 + Duration::from_secs(7400))
        .await
        .unwrap();
    assert!(out.event_ids_rotated);
    assert!(out.event_ids_removed >= 2, "{out:?}");
    assert_eq!(
        replay(&s, "newer").await,
        1,
        "the younger generation is kept"
    );
    assert_eq!(
        replay(&s, "old").await,
        0,
        "past twice the age, an ID is forgotten"
    );
}

#[tokio::test]
async fn event_ids_rotate_by_size_too() {
    let dir = tempfile::tempdir().unwrap();
    let s = enforced_store(dir.path()).await;
    for i in 0..40u64 {
        s.ingest(
            "n1",
            &[event(&format!("id-{i:04}"), 10 + i, "/app")],
            &policies(),
            SystemTime::now(),
        )
        .await
        .unwrap();
    }
    // 41 IDs of 7 bytes; half of 400 bytes is passed.
    let keep = Retention {
        max_age: Duration::from_secs(3600),
        max_bytes: 400,
        audit_max_age: Retention::AUDIT_AGE,
        audit_max_bytes: Retention::AUDIT_BYTES,
        incident_max_age: Retention::INCIDENT_AGE,
        incident_max_closed: Retention::INCIDENTS_CLOSED,
        sensor_max_age: Retention::SENSOR_AGE,
    };
    let out = s.enforce_retention(keep, SystemTime::now()).await.unwrap();
    assert!(out.event_ids_rotated);
    let out = s.enforce_retention(keep, SystemTime::now()).await.unwrap();
    assert!(!out.event_ids_rotated, "the new generation is empty");
    assert_eq!(s.event_ids_remembered(), 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_actions_on_one_incident_have_one_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let s = enforced_store(dir.path()).await;
    deviations(&s, 0, 1).await;
    let (list, _) = s
        .incidents(&IncidentFilter::default(), None, 10, Order::OldestFirst)
        .unwrap();
    let n: u64 = list[0].id.parse().unwrap();
    let version = s.baseline(&web(), 0).unwrap().version;
    let before = s.last_cursor();
    let mut tasks = Vec::new();
    for (p, action) in [
        Action::Resolve,
        Action::Allow,
        Action::Resolve,
        Action::Allow,
    ]
    .into_iter()
    .enumerate()
    {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            (
                action,
                s.incident_action(n, action, &format!("p{p}"), "", call("IncidentAction"))
                    .await,
            )
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let end = s.incident(n).unwrap();
    let winner = if end.state == procguard_core::incident::IncidentState::Allowed {
        Action::Allow
    } else {
        Action::Resolve
    };
    for (action, r) in &results {
        match r {
            Ok(o) => {
                assert_eq!(*action, winner, "only the winning action succeeds");
                assert_eq!(o.incident.state, end.state);
            }
            Err(e) => {
                assert_ne!(*action, winner);
                assert!(e.to_string().contains("already"), "{e}");
            }
        }
    }
    let changed = results
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|o| o.changed))
        .count();
    assert_eq!(changed, 1, "one action changed the incident");
    assert_eq!(
        s.last_cursor(),
        before + 2,
        "one incident record and the winning call's audit record"
    );
    let b = s.baseline(&web(), 0).unwrap();
    let allowed = b.elements.contains_key(&end.element_key());
    assert_eq!(allowed, winner == Action::Allow);
    assert_eq!(
        b.version,
        version + u64::from(allowed),
        "at most one new version"
    );
}

/// The audit log has its own retention, by age and by size, and every entry is bounded first.
#[tokio::test]
async fn the_audit_log_is_bounded_by_entry_age_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let entry = |detail: String, at: SystemTime| AuditEntry {
        id: 0,
        at,
        actor: "a".repeat(10_000),
        role: "viewer".into(),
        action: "ListBaselines".into(),
        target: "t".repeat(1 << 20),
        result: AuditOutcome::Denied,
        detail,
        peer: String::new(),
    };
    let now = SystemTime::now();
    let old = now - Duration::from_secs(400 * 86_400);
    for i in 0..10 {
        s.audit(entry(format!("old {i}"), old)).await.unwrap();
    }
    for i in 0..40 {
        s.audit(entry(format!("{i}{}", "d".repeat(5_000)), now))
            .await
            .unwrap();
    }
    // Every field was cut before it was stored: 50 entries of a megabyte each fit in 200 KiB.
    assert!(s.audit_bytes() < 50 * 4096, "{}", s.audit_bytes());
    let stored = s
        .audit_log(&AuditQuery {
            limit: usize::MAX,
            ..Default::default()
        })
        .unwrap();
    assert!(stored
        .iter()
        .all(|e| e.target.len() <= 512 && e.actor.len() <= 256 && e.detail.len() <= 2048));
    // By age: the year-old ones go.
    let keep = Retention {
        max_age: Duration::from_secs(3600),
        max_bytes: u64::MAX,
        audit_max_age: Retention::AUDIT_AGE,
        audit_max_bytes: u64::MAX,
        incident_max_age: Retention::INCIDENT_AGE,
        incident_max_closed: Retention::INCIDENTS_CLOSED,
        sensor_max_age: Retention::SENSOR_AGE,
    };
    let out = s.enforce_retention(keep, now).await.unwrap();
    assert_eq!(out.audit_removed, 10);
    // By size: the oldest go until it fits.
    let half = s.audit_bytes() / 2;
    let out = s
        .enforce_retention(
            Retention {
                audit_max_bytes: half,
                ..keep
            },
            now,
        )
        .await
        .unwrap();
    assert!(out.audit_removed > 0 && out.audit_removed < 40, "{out:?}");
    assert!(s.audit_bytes() <= half);
    let left = s
        .audit_log(&AuditQuery {
            limit: usize::MAX,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(left.len() as u64, 40 - out.audit_removed);
    assert!(
        left.last().unwrap().detail.starts_with("39"),
        "the newest stay"
    );
    // Reopened, the size is counted again from disk.
    let bytes = s.audit_bytes();
    drop(s);
    assert_eq!(
        reopen(dir.path(), DEFAULT_TAIL_RECORDS).audit_bytes(),
        bytes
    );
}

#[tokio::test]
async fn durable_subscriptions_belong_to_their_first_user_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = enforced_store(dir.path()).await;
        s.ingest(
            "n1",
            &[event("o1", 2, "/bin/sh")],
            &procguard_core::policy::Policies::default(),
            SystemTime::now(),
        )
        .await
        .unwrap();
        let last = s.last_cursor();
        assert_eq!(
            s.claim_subscription("siem", "alice").await.unwrap(),
            Owned::Mine(0)
        );
        assert_eq!(
            s.ack_cursor("siem", "alice", last).await.unwrap(),
            Owned::Mine(last)
        );
        // Another identity neither moves nor claims it, and nothing changes.
        assert_eq!(
            s.ack_cursor("siem", "mallory", last).await.unwrap(),
            Owned::Other
        );
        assert_eq!(
            s.claim_subscription("siem", "mallory").await.unwrap(),
            Owned::Other
        );
        // A subscription stored before owners existed (the cursor alone) is claimed by the
        // next identity to use it, keeping its cursor.
        s.log
            .subscriptions
            .insert("legacy", &3u64.to_be_bytes())
            .unwrap();
        assert_eq!(
            s.get_subscription("legacy").unwrap(),
            Some(DurableSubscription {
                cursor: 3,
                owner: None
            })
        );
        assert_eq!(
            s.claim_subscription("legacy", "bob").await.unwrap(),
            Owned::Mine(3)
        );
        s.flush().await.unwrap();
    }
    let s = reopen(dir.path(), DEFAULT_TAIL_RECORDS);
    let alice = s.get_subscription("siem").unwrap().unwrap();
    assert_eq!(alice.owner.as_deref(), Some("alice"));
    assert_eq!(
        s.ack_cursor("legacy", "alice", 1).await.unwrap(),
        Owned::Other
    );
    assert_eq!(
        s.get_subscription("legacy")
            .unwrap()
            .unwrap()
            .owner
            .as_deref(),
        Some("bob")
    );
}

/// Closed incidents go after their age, and past the count the longest closed go first; open
/// and acknowledged ones stay whatever their age; a removed incident's grouping key is
/// forgotten, so its executable again opens a new incident. Scans are spaced out.
#[tokio::test]
async fn closed_incidents_go_by_age_and_count_and_active_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let s = enforced_store(dir.path()).await;
    let exes = ["/bin/a", "/bin/b", "/bin/c", "/bin/d"];
    for (i, exe) in exes.iter().enumerate() {
        s.ingest(
            "n1",
            &[event(&format!("d{i}"), 10 + i as u64, exe)],
            &policies(),
            SystemTime::now(),
        )
        .await
        .unwrap();
    }
    let numbers = |s: &Store| -> Vec<(String, &'static str)> {
        s.incidents(&IncidentFilter::default(), None, 100, Order::OldestFirst)
            .unwrap()
            .0
            .into_iter()
            .map(|i| (i.exe_path, i.state.as_str()))
            .collect()
    };
    let (list, _) = s
        .incidents(&IncidentFilter::default(), None, 10, Order::OldestFirst)
        .unwrap();
    let n = |i: usize| -> u64 { list[i].id.parse().unwrap() };
    // a: resolved first, b: resolved second, c: acknowledged, d: open.
    for (i, action) in [
        (0, Action::Resolve),
        (1, Action::Resolve),
        (2, Action::Acknowledge),
    ] {
        s.incident_action(n(i), action, "t", "", call("IncidentAction"))
            .await
            .unwrap();
    }
    let keep = Retention {
        max_age: Duration::from_secs(365 * 86_400),
        max_bytes: u64::MAX,
        audit_max_age: Retention::AUDIT_AGE,
        audit_max_bytes: Retention::AUDIT_BYTES,
        incident_max_age: Duration::from_secs(86_400),
        incident_max_closed: 1,
        sensor_max_age: Retention::SENSOR_AGE,
    };
    // By count: of the two closed, the longest closed (a) goes.
    let now = SystemTime::now();
    let out = s.enforce_retention(keep, now).await.unwrap();
    assert_eq!(out.incidents_removed, 1, "{out:?}");
    assert_eq!(
        numbers(&s),
        vec![
            ("/bin/b".into(), "resolved"),
            ("/bin/c".into(), "acknowledged"),
            ("/bin/d".into(), "open")
        ]
    );
    assert!(matches!(s.incident(n(0)), Err(StoreError::NotFound(_))));
    // A second pass within the scan interval reads nothing.
    let out = s
        .enforce_retention(keep, now + Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(out.incidents_removed, 0);
    // By age, two days on: b goes; c and d stay, however old.
    let later = now + Duration::from_secs(2 * 86_400);
    let out = s.enforce_retention(keep, later).await.unwrap();
    assert_eq!(out.incidents_removed, 1, "{out:?}");
    assert_eq!(
        numbers(&s),
        vec![("/bin/c".into(), "acknowledged"), ("/bin/d".into(), "open")]
    );
    // a's key is forgotten: a new incident opens for it; d's active incident still groups.
    s.ingest(
        "n1",
        &[
            event("again-a", 20, "/bin/a"),
            event("again-d", 21, "/bin/d"),
        ],
        &policies(),
        SystemTime::now(),
    )
    .await
    .unwrap();
    let after = s
        .incidents(&IncidentFilter::default(), None, 100, Order::OldestFirst)
        .unwrap()
        .0;
    let d = after.iter().find(|i| i.exe_path == "/bin/d").unwrap();
    assert_eq!(d.count, 2, "the open incident kept grouping");
    assert!(after
        .iter()
        .any(|i| i.exe_path == "/bin/a" && i.state.as_str() == "open"));
}

/// A sensor's record goes once it has been silent past the sensor age; the count that
/// `--max-sensors` is checked against follows.
#[tokio::test]
async fn records_of_long_silent_sensors_go() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for node in ["n1", "n2"] {
        s.sensor_hello(node, "boot", "v").await.unwrap();
    }
    assert_eq!(s.sensors_known(), 2);
    s.sensor_hello("n1", "boot2", "v").await.unwrap();
    assert_eq!(s.sensors_known(), 2, "a known node is not a new record");
    let keep = Retention {
        max_age: Duration::from_secs(365 * 86_400),
        max_bytes: u64::MAX,
        audit_max_age: Retention::AUDIT_AGE,
        audit_max_bytes: Retention::AUDIT_BYTES,
        incident_max_age: Retention::INCIDENT_AGE,
        incident_max_closed: Retention::INCIDENTS_CLOSED,
        sensor_max_age: Duration::from_secs(86_400),
    };
    let out = s.enforce_retention(keep, SystemTime::now()).await.unwrap();
    assert_eq!(out.sensors_removed, 0);
    let out = s
        .enforce_retention(keep, SystemTime::now() + Duration::from_secs(2 * 86_400))
        .await
        .unwrap();
    assert_eq!(out.sensors_removed, 2);
    assert_eq!(s.sensors_known(), 0);
    assert!(!s.sensor_known("n1").unwrap());
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.sensors_known(), 0, "counted again at open");
}

/// `n` events of web from sequence `first`, each running one of `exes` in turn, each with a
/// sample argv at its bound (2 KiB), as a busy workload's provenance holds.
fn sightings(tag: &str, first: u64, n: u64, exes: &[String]) -> Vec<IngestEvent> {
    (first..first + n)
        .map(|s| {
            let exe = &exes[(s - first) as usize % exes.len()];
            let mut e = event(&format!("{tag}-{s}"), s, exe);
            e.process.argv = vec![exe.clone(), "a".repeat(4096)];
            e
        })
        .collect()
}

/// A batch of sightings in a big baseline writes only the sighted elements' provenance: no
/// definition, no history record; a learning batch writes one version as before. Measured in
/// bytes of keys and values the engine inserted.
#[tokio::test]
async fn a_batch_of_sightings_writes_only_their_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let p = policies();
    let now = SystemTime::now();
    let exes: Vec<String> = (0..300).map(|i| format!("/usr/bin/tool-{i}")).collect();
    s.ingest("n1", &sightings("learn", 1, 300, &exes), &p, now)
        .await
        .unwrap();
    let b = s.baseline(&web(), 0).unwrap();
    assert_eq!((b.elements.len(), b.version), (300, 1));
    let whole = serde_json::to_vec(&b).unwrap().len() as u64;
    // 500 sightings of 5 elements, while learning (the tally moves) and once enforced.
    let five = &exes[..5];
    for (round, first) in [("learning", 1_000), ("enforced", 2_000)] {
        if round == "enforced" {
            edit(&s, "approved", |b| b.approve(None, now)).await;
        }
        let before = s.baseline(&web(), 0).unwrap();
        let written = s.ingest_baseline_bytes();
        let out = s
            .ingest("n1", &sightings(round, first, 500, five), &p, now)
            .await
            .unwrap();
        assert!(out.changed.is_empty(), "{round}");
        let bytes = s.ingest_baseline_bytes() - written;
        eprintln!(
            "{round}: 500 sightings of 5 of 300 elements wrote {bytes} bytes \
             (whole baseline {whole} bytes)"
        );
        assert!(
            bytes < 5 * 4096,
            "{round}: {bytes} bytes for 5 elements' provenance"
        );
        let after = s.baseline(&web(), 0).unwrap();
        assert_eq!(after.version, before.version);
        for exe in five {
            let k = procguard_core::ElementKey::exe(exe.as_str());
            assert_eq!(
                after.elements[&k].provenance.count,
                before.elements[&k].provenance.count + 100
            );
        }
    }
    // Back to learning, one new element: one version, whose history record is the whole
    // baseline (as before) and whose definition leaves provenance out.
    edit(&s, "reset", |b| b.reset(now)).await;
    let before = s.baseline(&web(), 0).unwrap();
    let written = s.ingest_baseline_bytes();
    let new = vec!["/usr/bin/new".to_string()];
    let out = s
        .ingest("n1", &sightings("new", 3_000, 1, &new), &p, now)
        .await
        .unwrap();
    assert_eq!(out.changed.len(), 1);
    let bytes = s.ingest_baseline_bytes() - written;
    eprintln!("learning one element: {bytes} bytes (whole baseline {whole} bytes)");
    assert_eq!(s.baseline(&web(), 0).unwrap().version, before.version + 1);
    assert!(
        bytes < 2 * whole,
        "{bytes}: one history record, one definition"
    );
}

/// Sightings that add nothing to an element's sets (the same node, pod, parent, contents)
/// write only its 32-byte counters; a sighting from a new node writes its sets again. Counts
/// and times read back exact either way, and provenance written before counters were kept
/// apart (a whole JSON provenance, no counters key) reads with its own counters.
#[tokio::test]
async fn a_sighting_that_changes_no_set_writes_only_the_counters() {
    use super::baselines::{counters_key, provenance_key};
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let p = policies();
    let t0 = SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 123_456_789);
    let exes: Vec<String> = (0..20).map(|i| format!("/usr/bin/tool-{i}")).collect();
    s.ingest("n1", &sightings("learn", 1, 20, &exes), &p, t0)
        .await
        .unwrap();
    edit(&s, "approved", |b| b.approve(None, t0)).await;
    let five = &exes[..5];
    let id = web().to_string();
    let keys: Vec<_> = five
        .iter()
        .map(|e| procguard_core::ElementKey::exe(e.as_str()))
        .collect();
    let counters_bytes: u64 = keys
        .iter()
        .map(|k| counters_key(&id, k).len() as u64 + 32)
        .sum();
    let t1 = t0 + Duration::new(60, 7);
    let written = s.ingest_baseline_bytes();
    s.ingest("n1", &sightings("again", 100, 50, five), &p, t1)
        .await
        .unwrap();
    assert_eq!(s.ingest_baseline_bytes() - written, counters_bytes);
    let b = s.baseline(&web(), 0).unwrap();
    for k in &keys {
        let pr = &b.elements[k].provenance;
        assert_eq!((pr.count, pr.first_seen, pr.last_seen), (11, t0, t1), "{k}");
    }
    // A new node: that element's sets change and are written; the others' are not.
    let mut from_n2 = event("n2-1", 1, &exes[0]);
    from_n2.process.node_name = "n2".into();
    let written = s.ingest_baseline_bytes();
    s.ingest("n2", &[from_n2], &p, t1).await.unwrap();
    let bytes = s.ingest_baseline_bytes() - written;
    assert!(
        bytes > counters_key(&id, &keys[0]).len() as u64 + 32,
        "{bytes}"
    );
    let pr = &s.baseline(&web(), 0).unwrap().elements[&keys[0]].provenance;
    assert_eq!(pr.count, 12);
    assert!(pr.nodes.contains("n2") && pr.nodes.contains("n1"));
    // As a server before the counters were apart wrote it: whole, with its counters.
    let tree = s.db.open_tree("baselines").unwrap();
    let mut old = pr.clone();
    old.count = 99;
    tree.insert(
        provenance_key(&id, &keys[0]),
        serde_json::to_vec(&old).unwrap(),
    )
    .unwrap();
    tree.remove(counters_key(&id, &keys[0])).unwrap();
    let read = &s.baseline(&web(), 0).unwrap().elements[&keys[0]].provenance;
    assert_eq!(read, &old);
    // Counters that do not decode are an error naming the tree, not a wrong count.
    tree.insert(counters_key(&id, &keys[1]), &[1u8, 2, 3][..])
        .unwrap();
    let err = s.baseline(&web(), 0).unwrap_err().to_string();
    assert!(
        err.contains("baselines") && err.contains("counters"),
        "{err}"
    );
}

/// A database written by the server before evidence was kept apart (each baseline one whole
/// value) opens and reads the same; it is split at open, and ingest goes on from it.
#[tokio::test]
async fn a_database_of_whole_baselines_opens_and_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let exes: Vec<String> = (0..20).map(|i| format!("/usr/bin/tool-{i}")).collect();
    let (whole, history) = {
        let s = Store::open(dir.path()).unwrap();
        let now = SystemTime::now();
        s.ingest("n1", &sightings("learn", 1, 40, &exes), &policies(), now)
            .await
            .unwrap();
        let s = enforced(s).await;
        (s.baseline(&web(), 0).unwrap(), s.history(&web()).unwrap())
    };
    {
        // The layout of before, as its ingest and API wrote it: the workload's text form → the
        // whole baseline, provenance and all; no layout mark.
        let db = ::sled::Config::new().path(dir.path()).open().unwrap();
        let baselines = db.open_tree("baselines").unwrap();
        baselines.clear().unwrap();
        baselines
            .insert(
                whole.workload.to_string().as_bytes(),
                serde_json::to_vec(&whole).unwrap(),
            )
            .unwrap();
        db.open_tree("meta")
            .unwrap()
            .remove("baseline_layout")
            .unwrap();
        db.flush().unwrap();
        let text = String::from_utf8(
            baselines
                .get(whole.workload.to_string())
                .unwrap()
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        assert!(text.contains("\"provenance\""));
    }
    let s = reopen(dir.path(), crate::store::DEFAULT_TAIL_RECORDS);
    assert_eq!(s.baseline(&web(), 0).unwrap(), whole);
    assert_eq!(s.history(&web()).unwrap().len(), history.len());
    let (listed, _) = s.baselines(&BaselineFilter::default(), None, 10).unwrap();
    assert_eq!(listed, vec![whole.clone()]);
    let (_, enforcing) = s.enforcing().unwrap();
    assert_eq!(enforcing, vec![whole.clone()]);
    // Split: the definition holds no provenance any more.
    let text = String::from_utf8(
        s.baselines
            .get(whole.workload.to_string())
            .unwrap()
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(!text.contains("\"provenance\""), "{text}");
    // Ingest goes on: a sighting counts, and the element not sighted keeps its provenance.
    let later = SystemTime::now() + Duration::from_secs(60);
    s.ingest("n1", &sightings("again", 100, 1, &exes), &policies(), later)
        .await
        .unwrap();
    let after = s.baseline(&web(), 0).unwrap();
    let k = |i: usize| procguard_core::ElementKey::exe(exes[i].as_str());
    assert_eq!(
        after.elements[&k(0)].provenance.count,
        whole.elements[&k(0)].provenance.count + 1
    );
    assert_eq!(after.elements[&k(1)], whole.elements[&k(1)]);
    assert_eq!(after.version, whole.version);
}

/// Pages of baselines skip the evidence keys that follow each definition: each baseline once,
/// whole, in order, wherever a page starts.
#[tokio::test]
async fn pages_of_baselines_are_whole_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let exes: Vec<String> = (0..5).map(|i| format!("/usr/bin/tool-{i}")).collect();
    let mut all = Vec::new();
    for (n, name) in ["a", "a-b", "b"].iter().enumerate() {
        let w = procguard_core::WorkloadIdentity::new(
            "c",
            "shop",
            procguard_core::WorkloadKind::Deployment,
            *name,
            "app",
        );
        let mut evs = sightings(name, 100 * n as u64 + 1, 10, &exes);
        for e in &mut evs {
            e.process.workload = w.clone();
        }
        s.ingest("n1", &evs, &policies(), SystemTime::now())
            .await
            .unwrap();
        all.push(s.baseline(&w, 0).unwrap());
    }
    all.sort_by_key(|b| b.workload.to_string());
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = s
            .baselines(&BaselineFilter::default(), after.as_deref(), 1)
            .unwrap();
        paged.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(paged, all);
    assert!(paged
        .iter()
        .all(|b| b.elements.len() == 5 && b.elements.values().all(|e| e.provenance.count == 2)));
}

/// A baseline's history is bounded by bytes as well as by versions: past the bound its
/// oldest versions go (never the newest), `baseline(id, v)` of one gone says so, and what is
/// kept stays under the bound.
#[tokio::test]
async fn history_is_bounded_by_bytes_too() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path())
        .unwrap()
        .with_history_bytes(256 << 10);
    // A baseline whose every version is about 20 KiB: 8 elements with 2 KiB argv each.
    let exes: Vec<String> = (0..8).map(|i| format!("/bin/big-{i}")).collect();
    s.ingest(
        "n1",
        &sightings("big", 1, 8, &exes),
        &policies(),
        SystemTime::now(),
    )
    .await
    .unwrap();
    for i in 0..40 {
        s.change(
            &web(),
            ChangeBy {
                actor: "t",
                action: "edited",
                reason: &format!("edit {i}"),
                audit: None,
            },
            false,
            &|_| Ok(()),
        )
        .await
        .unwrap();
    }
    let current = s.baseline(&web(), 0).unwrap().version;
    let kept: Vec<u64> = s
        .history(&web())
        .unwrap()
        .iter()
        .map(|h| h.version)
        .collect();
    assert_eq!(kept.last(), Some(&current), "the newest version is kept");
    assert!(kept.len() < 30, "older versions were forgotten: {kept:?}");
    assert!(
        kept.windows(2).all(|w| w[1] == w[0] + 1),
        "the newest are kept, contiguous: {kept:?}"
    );
    let bytes: usize = s
        .history(&web())
        .unwrap()
        .iter()
        .map(|h| serde_json::to_vec(h).unwrap().len())
        .sum();
    assert!(bytes <= 256 << 10, "history holds {bytes} bytes");
    assert!(matches!(
        s.baseline(&web(), 1),
        Err(StoreError::NoVersion { version: 1, .. })
    ));
}

/// A workload container's active deviation incidents are capped: past the cap, executables
/// without an incident of their own are counted in one overflow incident (every deviation
/// still has its record in the log), while executables that have one keep grouping there.
/// Closing an incident makes room again; acknowledging does not. The counts are exact across
/// reopening, also for a database written without them, and an overflow that was resolved
/// is followed by a new one.
#[tokio::test]
async fn active_incidents_per_workload_are_capped_and_the_rest_overflow_counted() {
    use procguard_core::incident::IncidentKind;
    let dir = tempfile::tempdir().unwrap();
    let s = enforced(
        Store::open(dir.path())
            .unwrap()
            .with_max_active_incidents(3),
    )
    .await;
    let run = |s: &Store, tag: &str, exes: &[&str]| {
        let s = s.clone();
        let events: Vec<IngestEvent> = exes
            .iter()
            .enumerate()
            .map(|(i, exe)| event(&format!("{tag}-{i}"), 100 + i as u64, exe))
            .collect();
        async move {
            let before = s.last_cursor();
            s.ingest("n1", &events, &policies(), SystemTime::now())
                .await
                .unwrap();
            let deviations = all(&s)
                .into_iter()
                .filter(|r| r.cursor > before && matches!(r.body, RecordBody::Deviation { .. }))
                .count();
            assert_eq!(deviations, events.len(), "every deviation is recorded");
        }
    };
    let list = |s: &Store| -> Vec<Incident> {
        s.incidents(&IncidentFilter::default(), None, 100, Order::OldestFirst)
            .unwrap()
            .0
    };
    // Six new executables in one batch: three incidents, three counted in the overflow.
    run(
        &s,
        "a",
        &["/tmp/1", "/tmp/2", "/tmp/3", "/tmp/4", "/tmp/5", "/tmp/6"],
    )
    .await;
    // A capped executable runs again, and so does one that has an incident.
    run(&s, "b", &["/tmp/5", "/tmp/1"]).await;
    let l = list(&s);
    let summary: Vec<(IncidentKind, &str, u64)> = l
        .iter()
        .map(|i| (i.kind, i.exe_path.as_str(), i.count))
        .collect();
    assert_eq!(
        summary,
        vec![
            (IncidentKind::Deviation, "/tmp/1", 2),
            (IncidentKind::Deviation, "/tmp/2", 1),
            (IncidentKind::Deviation, "/tmp/3", 1),
            (IncidentKind::DeviationOverflow, "", 4),
        ]
    );
    let overflow = s.incident(l[3].id.parse().unwrap()).unwrap();
    let ran: Vec<&str> = overflow
        .samples
        .iter()
        .map(|x| x.process.exe_path.as_str())
        .collect();
    assert_eq!(ran, ["/tmp/4", "/tmp/5", "/tmp/6", "/tmp/5"]);
    let n = |i: &Incident| -> u64 { i.id.parse().unwrap() };
    // Acknowledging keeps an incident active: still no room.
    s.incident_action(
        n(&l[1]),
        Action::Acknowledge,
        "t",
        "",
        call("IncidentAction"),
    )
    .await
    .unwrap();
    run(&s, "c", &["/tmp/7"]).await;
    assert_eq!(list(&s).len(), 4);
    // Resolving one makes room for one, after a reopening (the count is kept on disk).
    s.incident_action(n(&l[1]), Action::Resolve, "t", "", call("IncidentAction"))
        .await
        .unwrap();
    drop(s);
    let s = reopen(dir.path(), 0).with_max_active_incidents(3);
    run(&s, "d", &["/tmp/8", "/tmp/9"]).await;
    let l = list(&s);
    assert_eq!(
        l.iter()
            .filter(|i| i.kind == IncidentKind::Deviation && i.state.is_active())
            .map(|i| i.exe_path.as_str())
            .collect::<Vec<_>>(),
        ["/tmp/1", "/tmp/3", "/tmp/8"]
    );
    let overflow = l
        .iter()
        .find(|i| i.kind == IncidentKind::DeviationOverflow)
        .unwrap();
    assert_eq!(overflow.count, 6, "/tmp/7 and /tmp/9 joined it");
    // An overflow is resolved like any finding, never allowed; the next one opens anew.
    assert!(s
        .incident_action(n(overflow), Action::Allow, "t", "", call("IncidentAction"))
        .await
        .is_err());
    s.incident_action(
        n(overflow),
        Action::Resolve,
        "t",
        "",
        call("IncidentAction"),
    )
    .await
    .unwrap();
    run(&s, "e", &["/tmp/10"]).await;
    let l = list(&s);
    let open: Vec<(IncidentKind, u64)> = l
        .iter()
        .filter(|i| i.kind == IncidentKind::DeviationOverflow && i.state.is_active())
        .map(|i| (i.kind, i.count))
        .collect();
    assert_eq!(open, [(IncidentKind::DeviationOverflow, 1)]);
    // A database whose counts were lost (written by a server without them) is recounted at
    // open: the cap holds exactly.
    let active_keys: Vec<_> = s
        .meta
        .scan_prefix(b"active_incidents\0")
        .keys()
        .map(|k| k.unwrap())
        .collect();
    assert_eq!(active_keys.len(), 1);
    for k in active_keys {
        s.meta.remove(k).unwrap();
    }
    drop(s);
    let s = reopen(dir.path(), 0).with_max_active_incidents(3);
    run(&s, "f", &["/tmp/11"]).await;
    let l = list(&s);
    assert!(
        !l.iter().any(|i| i.exe_path == "/tmp/11"),
        "still three active: /tmp/11 joins the overflow"
    );
    assert_eq!(
        l.iter()
            .find(|i| i.kind == IncidentKind::DeviationOverflow && i.state.is_active())
            .unwrap()
            .count,
        2
    );
}
