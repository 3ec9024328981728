//! One sensor batch, applied: the per-event domain steps of ingest, as one pure function over
//! a storage engine's view of its atomic update.
//!
//! [`apply`] decides, for every event of a batch in order, everything the domain says about it:
//! a replayed event ID is a duplicate; an event whose pod was not known in time is stored but
//! never learned or matched; every other event counts towards its element's daily activity (a
//! probe does not), is observed by its workload's baseline (learned, known, coverage, or a
//! deviation, refused at the element limit), and a deviation is grouped into its incident; an
//! exec session into an enforced workload is one incident. The engine supplies only reads and
//! writes inside its atomic update ([`BatchStore`]) and, after [`apply`], writes what it
//! returns ([`Applied`]): for every touched baseline, a new version and revision if it changed,
//! and otherwise only what a sighting changes (the provenance of the elements it sighted, and
//! its [`crate::baseline::Tally`] if that changed), the activity, the counters. So a second
//! engine writes no domain rule again, and need not rewrite a whole baseline per batch.
//!
//! No I/O, no clock: the caller passes the time in.

use crate::baseline::{Observation, Tally};
use crate::policy::Policies;
use crate::{Baseline, BaselineState, ElementKey, ExecContext, ProcessEvent, WorkloadIdentity};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

/// What [`apply`] reads and writes inside the engine's atomic update. Every method runs inside
/// that update: a failure aborts the whole batch.
pub trait BatchStore {
    /// The engine's failure.
    type Error;

    /// Whether `event_id` is new; a new one is remembered from now on (in the same update).
    fn first_time(&mut self, event_id: &str) -> Result<bool, Self::Error>;

    /// The stored baseline of `workload`, if there is one.
    fn baseline(&mut self, workload: &WorkloadIdentity) -> Result<Option<Baseline>, Self::Error>;

    /// The stored activity of `element` of `workload` on the day of `now`, if any.
    fn activity(
        &mut self,
        workload: &WorkloadIdentity,
        element: &ElementKey,
        now: SystemTime,
    ) -> Result<Option<ActivityRecord>, Self::Error>;

    /// Groups `deviation` into its incident (`Incident::from_deviation` or
    /// `record_deviation`) and appends its record, stored once.
    fn deviation(
        &mut self,
        deviation: &DeviationRecord,
        baseline: &Baseline,
    ) -> Result<(), Self::Error>;

    /// Raises or extends the "interactive session" incident of exec session `session`, one of
    /// whose processes is `process`, counted `executions` times (a sensor's summary).
    fn exec_session(
        &mut self,
        event_id: &str,
        process: &ProcessEvent,
        baseline: &Baseline,
        session: &str,
        executions: u64,
    ) -> Result<(), Self::Error>;
}

/// What [`apply`] leaves for the engine to write in the same atomic update.
#[derive(Debug, Default)]
pub struct Applied {
    /// The counters and deviations of the batch (`acked_sequence` and `incidents` are the
    /// engine's to fill; `changed` lists the baselines below that changed).
    pub outcome: IngestOutcome,
    /// The highest sequence in the batch, duplicates included (0 for an empty batch).
    pub highest_sequence: u64,
    /// Every baseline the batch touched, in workload order, with what of it changed.
    pub baselines: Vec<Touched>,
    /// Today's activity of every element that ran, to be written back.
    pub activity: Vec<(WorkloadIdentity, ElementKey, ActivityRecord)>,
    /// Per workload (text form), what its re-learning window learned in this batch, each
    /// element with the node, pod and image digest that brought it: the reason of the version's
    /// history record.
    pub relearned: BTreeMap<String, String>,
}

/// One baseline a batch touched, and what of it changed: what the engine must write.
#[derive(Debug)]
pub struct Touched {
    /// The baseline after the batch.
    pub baseline: Baseline,
    /// Whether it changed (its elements' definitions or its state): a new version, for which
    /// the engine writes the baseline's definition, a history record and a revision.
    pub changed: bool,
    /// The elements the batch sighted: their provenance changed (new elements included).
    /// Only these elements' provenance needs writing; the others' is as it was read.
    pub sighted: BTreeSet<ElementKey>,
    /// Whether the baseline's [`Tally`] (learning summary, image digests, coverage) changed.
    pub tallied: bool,
}

/// Most elements named in one version's re-learning note (then "and more").
const RELEARNED_NOTES: usize = 16;

/// One element a re-learning window learned, with what brought it.
fn relearned_note(ev: &ProcessEvent) -> String {
    let c = ev.container.as_ref();
    let or_unknown = |v: Option<&str>| v.filter(|v| !v.is_empty()).unwrap_or("unknown").to_string();
    format!(
        "relearned {} from node {} pod {} image {}",
        ElementKey::of(ev),
        or_unknown(Some(&ev.node_name)),
        or_unknown(c.and_then(|c| c.pod_uid.as_deref().or(c.pod_name.as_deref()))),
        or_unknown(c.and_then(|c| c.image_digest.as_deref()))
    )
}

/// Applies one batch through `store`; see the module documentation. `max_elements` is
/// `--max-baseline-elements`.
pub fn apply<S: BatchStore>(
    store: &mut S,
    events: &[IngestEvent],
    policies: &Policies,
    now: SystemTime,
    max_elements: usize,
) -> Result<Applied, S::Error> {
    let mut out = IngestOutcome::default();
    let mut highest_sequence = 0;
    // Each touched baseline with whether it changed and the version it had before the batch
    // (0 for one the batch creates): a batch makes at most one new version of a baseline, so
    // versions count 1, 2, 3 … and each has its history record.
    let mut touched: BTreeMap<String, (Baseline, bool, u64)> = BTreeMap::new();
    // Per touched baseline, what a sighting changes: the elements sighted, and the tally as read.
    let mut sightings: BTreeMap<String, (BTreeSet<ElementKey>, Tally)> = BTreeMap::new();
    // What re-learning windows learned, per workload: attributed in the version's history.
    let mut relearned: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen: BTreeMap<(String, ElementKey), (WorkloadIdentity, ActivityRecord)> =
        BTreeMap::new();
    for ev in events {
        highest_sequence = highest_sequence.max(ev.sequence);
        if !store.first_time(&ev.event_id)? {
            out.duplicates += 1;
            continue;
        }
        if let Placement::Refused(_) = ev.placement {
            // Another node's pod, or an image its pod does not run: it teaches nothing and
            // accuses no one. Acknowledged (so the sensor does not send it forever) and
            // counted; the server audits it.
            out.misplaced += 1;
            continue;
        }
        out.applied += 1;
        // A sensor's summary stands for `executions` executions (0 and 1 both mean one).
        let times = ev.executions.max(1);
        let counted = usize::try_from(times).unwrap_or(usize::MAX);
        out.executions = out.executions.saturating_add(times);
        if ev.process.awaits_pod_metadata() {
            // A provisional identity (pod UID only; the sensor did not have the pod's
            // metadata in time): never a baseline of its own, which would learn in silence.
            // The sensor sends the event again under its workload identity once the pod is
            // known, and that one is learned or matched. Stored as ingested (idempotent) and
            // counted.
            out.unattributed = out.unattributed.saturating_add(counted);
            continue;
        }
        let workload = &ev.process.workload;
        let key = workload.to_string();
        if !touched.contains_key(&key) {
            let b = match store.baseline(workload)? {
                Some(b) => b,
                None => Baseline::new(workload.clone(), now),
            };
            let is_new = b.elements.is_empty() && b.version == 1;
            let base = if is_new { 0 } else { b.version };
            sightings.insert(key.clone(), (BTreeSet::new(), b.tally()));
            touched.insert(key.clone(), (b, is_new, base));
        }
        let (b, changed, base) = touched.get_mut(&key).expect("inserted above");
        let before = b.version;
        let policy = policies.for_baseline(b);
        if ev.process.context != ExecContext::Probe {
            let element = ElementKey::of(&ev.process);
            let slot = (key.clone(), element.clone());
            let rec = match seen.remove(&slot) {
                Some((_, r)) => r,
                None => store.activity(workload, &element, now)?.unwrap_or_default(),
            };
            seen.insert(slot, (workload.clone(), rec.add(now, &ev.process, times)));
        }
        if ev.process.completeness == crate::Completeness::Partial {
            out.partial = out.partial.saturating_add(counted);
        }
        // A sighting records provenance, which counts every sighting: a count that moved
        // names an element whose provenance the engine must write.
        let element = ElementKey::of(&ev.process);
        let count = |b: &Baseline| b.elements.get(&element).map(|e| e.provenance.count);
        let sighted_before = count(b);
        let (observation, rest) = b.observe_times(&ev.process, now, policy, max_elements, times);
        if count(b) != sighted_before {
            if let Some((sighted, _)) = sightings.get_mut(&key) {
                sighted.insert(element);
            }
        }
        if matches!(observation, Observation::Learned { .. }) && b.state != BaselineState::Learning
        {
            let notes = relearned.entry(key.clone()).or_default();
            if notes.len() < RELEARNED_NOTES {
                notes.push(relearned_note(&ev.process));
            } else if notes.len() == RELEARNED_NOTES {
                notes.push("and more".into());
            }
        }
        // Every change within the batch belongs to the one version the batch makes.
        b.version = b.version.min(*base + 1);
        // The first execution and the rest of a summary: one part when they mean the same
        // (always, but where the first changed what the rest meet, say the element limit).
        let parts = match rest {
            Some((o, _)) if o == observation => vec![(observation, times, ev.event_id.clone())],
            Some((o, n)) => vec![
                (observation, 1, ev.event_id.clone()),
                (o, n, format!("{}+{n}", ev.event_id)),
            ],
            None => vec![(observation, 1, ev.event_id.clone())],
        };
        for (observation, n, event_id) in parts {
            match observation {
                o @ (Observation::Deviation | Observation::Refused) => {
                    if o == Observation::Refused {
                        out.refused = out
                            .refused
                            .saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
                    }
                    let rec = DeviationRecord {
                        event_id,
                        at: now,
                        baseline_version: b.version,
                        baseline_state: b.state,
                        process: ev.process.clone(),
                        content: Some(b.judge_content(&ev.process)),
                        reported: ev.reported,
                        executions: n,
                    };
                    store.deviation(&rec, b)?;
                    out.deviations.push(rec);
                }
                Observation::Partial => {
                    out.unread = out
                        .unread
                        .saturating_add(usize::try_from(n).unwrap_or(usize::MAX))
                }
                Observation::Learned { .. } | Observation::Known | Observation::Probe => {}
            }
        }
        // Someone started processes into a container whose baseline is enforced: one
        // incident per session, whatever it runs (unless the policy records such sessions
        // only).
        if let (ExecContext::ExecSession, Some(session)) =
            (ev.process.context, ev.process.exec_session.as_deref())
        {
            if b.state == BaselineState::Enforced && policy.exec_session_alerts {
                store.exec_session(&ev.event_id, &ev.process, b, session, times)?;
            }
        }
        // Provenance changes on every sighting and is saved (the sighted elements' only), but
        // only a change of elements or state makes a version and a push to sensors.
        *changed |= b.version != before;
    }
    Ok(Applied {
        relearned: relearned
            .into_iter()
            .map(|(k, notes)| (k, notes.join("; ")))
            .collect(),
        outcome: out,
        highest_sequence,
        baselines: touched
            .into_iter()
            .map(|(key, (baseline, changed, _))| {
                let (sighted, tally) = sightings.remove(&key).expect("recorded with its baseline");
                Touched {
                    tallied: baseline.tally() != tally,
                    baseline,
                    changed,
                    sighted,
                }
            })
            .collect(),
        activity: seen
            .into_iter()
            .map(|((_, element), (workload, rec))| (workload, element, rec))
            .collect(),
    })
}

/// A deviation as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviationRecord {
    /// Sensor event ID.
    pub event_id: String,
    /// When the server stored it.
    pub at: SystemTime,
    /// Baseline version it violated.
    pub baseline_version: u64,
    /// State of the baseline at the time.
    pub baseline_state: BaselineState,
    /// The process.
    pub process: ProcessEvent,
    /// Its content verdict against the baseline it deviated from (`None` in records stored
    /// before verdicts existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<crate::ContentCheck>,
    /// The sensor's report: when it saw the exec, what it called it, and the revision it
    /// matched against (records stored before keep the defaults: `at` stands in for the time).
    #[serde(default, skip_serializing_if = "SensorReport::is_unknown")]
    pub reported: SensorReport,
    /// How many executions this record stands for: 1, or more for repeats a sensor summarised
    /// ([`SummaryKey`]); `process` is the first of them, in full.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub executions: u64,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// What a sensor said of one event, kept as it said it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorReport {
    /// When the sensor saw the exec (the first one, for a summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<SystemTime>,
    /// For a summary of several executions: when the sensor saw the last of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_observed_at: Option<SystemTime>,
    /// Whether the sensor itself found it outside the baseline it holds.
    #[serde(default)]
    pub kind: EventKind,
    /// For a deviation the sensor found: the server-wide baseline revision it matched
    /// against (a revision counts every baseline change; a version one baseline's).
    #[serde(default)]
    pub baseline_revision: u64,
}

impl SensorReport {
    fn is_unknown(&self) -> bool {
        *self == Self::default()
    }
}

/// What a sensor called an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// Not said (records stored before the sensor's report was kept).
    #[default]
    Unknown,
    /// A process start, for learning or for the server to judge.
    Observation,
    /// A process start the sensor found outside the baseline it holds.
    Deviation,
}

/// One event of an ingest batch.
#[derive(Debug, Clone)]
pub struct IngestEvent {
    /// Sensor-assigned unique ID.
    pub event_id: String,
    /// Sensor-assigned sequence.
    pub sequence: u64,
    /// The process.
    pub process: ProcessEvent,
    /// What the sensor said of it.
    pub reported: SensorReport,
    /// Whether the server could place the event's pod on the reporting node.
    pub placement: Placement,
    /// How many executions the event stands for: 1, or more for a sensor's summary of
    /// repeats ([`SummaryKey`]: `process` is the first of them, the others differ from it only
    /// in what the domain does not read). 0 counts as 1.
    pub executions: u64,
}

/// Whether the server, with Kubernetes access, found an event's pod where the reporting node
/// said it was (see the server's `placement` module). Decided before [`apply`]; `apply` only
/// keeps a refused event from doing anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Placement {
    /// Not checked: the server has no Kubernetes access, or the event names no pod.
    #[default]
    Unchecked,
    /// The pod is scheduled on the reporting node and runs the reported image.
    Verified,
    /// The pod was not known to the server in time (deleted before the server's watch saw it,
    /// or past its memory): the event is kept, with its image digest removed (it cannot open
    /// a re-learning window).
    Unverified,
    /// The report contradicts the API (another node's pod, an image the pod does not run):
    /// recorded as seen (idempotent), counted and audited, never applied.
    Refused(String),
}

/// What an ingest batch did.
#[derive(Debug, Default)]
pub struct IngestOutcome {
    /// Highest sequence now durable for the sensor.
    pub acked_sequence: u64,
    /// Events applied (not duplicates).
    pub applied: usize,
    /// Executions those events stand for (a summary stands for several).
    pub executions: u64,
    /// Duplicates skipped.
    pub duplicates: usize,
    /// Baselines whose element set or state changed.
    pub changed: Vec<Baseline>,
    /// Deviations recorded.
    pub deviations: Vec<DeviationRecord>,
    /// Incidents opened or changed by these deviations.
    pub incidents: Vec<crate::incident::Incident>,
    /// Of the deviations' executions, those refused because their baseline reached its element limit.
    pub refused: usize,
    /// Executions whose pod the sensor did not know in time (`pod_metadata` missing): stored as
    /// ingested, never learned into or matched against a baseline (see
    /// [`crate::ProcessEvent::awaits_pod_metadata`]).
    pub unattributed: usize,
    /// Executions the sensor sent partial (a field it could not read): coverage, counted in each
    /// baseline's [`crate::baseline::Coverage`], never an incident of their own.
    pub partial: usize,
    /// Of those, execs whose applet or script could not be read while everything read was
    /// allowed ([`crate::baseline::Observation::Partial`]).
    pub unread: usize,
    /// Events refused for their placement ([`Placement::Refused`]): not applied.
    pub misplaced: usize,
}

/// How often one element ran in one workload on one day.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActivityRecord {
    /// Runs.
    pub count: u64,
    /// Last run.
    pub last_seen: Option<SystemTime>,
    /// Runs per origin, so that a dry run sees what ran from outside the image (records
    /// written before origins have none: their runs are of unknown origin).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub origins: BTreeMap<crate::Origin, u64>,
}

impl ActivityRecord {
    /// `self` with `times` more runs of `ev` at `now`.
    pub fn add(mut self, now: SystemTime, ev: &ProcessEvent, times: u64) -> Self {
        self.count = self.count.saturating_add(times);
        self.last_seen = Some(self.last_seen.map_or(now, |t| t.max(now)));
        let origin = self
            .origins
            .entry(ev.drift().unwrap_or(ev.origin))
            .or_default();
        *origin = origin.saturating_add(times);
        self
    }
}

/// The pod facts of a [`SummaryKey`]: pod UID, pod name, the container ID (only where one
/// of the two is unknown: provenance and learning then fall back to it), image digest.
type PodKey<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

/// What makes two executions the same to the server: everything of a [`ProcessEvent`] that
/// learning, matching, provenance, daily activity and incidents read. Two executions with the
/// same key differ only in what none of them reads (PIDs, start times, argv past the first
/// execution's sample, comm, ancestors past the parent's path, the container ID where the pod
/// is named, pod labels, timings), so a sensor may send them as one event that stands for both
/// (`executions`), and [`apply`] ends exactly where it ends after each on its own.
///
/// Borrowed from the event; a sensor hashes it to find an execution's summary and compares
/// keys whole on a hash match, so a hash collision never merges two executions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SummaryKey<'a> {
    workload: &'a WorkloadIdentity,
    exe_path: &'a str,
    applet: Option<&'a str>,
    script_path: Option<&'a str>,
    exe_sha256: Option<&'a str>,
    fileless: (bool, bool),
    exe_writable_location: bool,
    origin: crate::Origin,
    context: ExecContext,
    exec_session: Option<&'a str>,
    completeness: crate::Completeness,
    missing: &'a [String],
    node_name: &'a str,
    uid: u32,
    parent: Option<&'a str>,
    /// Pod UID, pod name, the container ID only where one of them is unknown (provenance and
    /// learning fall back to it), image digest.
    container: Option<PodKey<'a>>,
}

impl<'a> SummaryKey<'a> {
    /// The key of `ev`.
    pub fn of(ev: &'a ProcessEvent) -> Self {
        Self {
            workload: &ev.workload,
            exe_path: &ev.exe_path,
            applet: ev.applet.as_deref(),
            script_path: ev.script_path.as_deref(),
            exe_sha256: ev.exe_sha256.as_deref(),
            fileless: (ev.exe_memfd, ev.exe_deleted),
            exe_writable_location: ev.exe_writable_location,
            origin: ev.origin,
            context: ev.context,
            exec_session: ev.exec_session.as_deref(),
            completeness: ev.completeness,
            missing: &ev.missing,
            node_name: &ev.node_name,
            uid: ev.uid,
            parent: ev.ancestors.first().map(|a| a.exe_path.as_str()),
            container: ev.container.as_ref().map(|c| {
                let named = c.pod_uid.is_some() && c.pod_name.is_some();
                (
                    c.pod_uid.as_deref(),
                    c.pod_name.as_deref(),
                    (!named).then_some(c.container_id.as_str()),
                    c.image_digest.as_deref(),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkloadKind;
    use std::collections::{HashMap, HashSet};
    use std::convert::Infallible;
    use std::time::{Duration, UNIX_EPOCH};

    /// An engine in memory: what `apply` read and wrote, without a disk.
    #[derive(Default)]
    struct Memory {
        ids: HashSet<String>,
        baselines: HashMap<String, Baseline>,
        deviations: Vec<String>,
        sessions: Vec<String>,
    }

    impl BatchStore for Memory {
        type Error = Infallible;
        fn first_time(&mut self, id: &str) -> Result<bool, Infallible> {
            Ok(self.ids.insert(id.to_string()))
        }
        fn baseline(&mut self, w: &WorkloadIdentity) -> Result<Option<Baseline>, Infallible> {
            Ok(self.baselines.get(&w.to_string()).cloned())
        }
        fn activity(
            &mut self,
            _: &WorkloadIdentity,
            _: &ElementKey,
            _: SystemTime,
        ) -> Result<Option<ActivityRecord>, Infallible> {
            Ok(None)
        }
        fn deviation(&mut self, d: &DeviationRecord, _: &Baseline) -> Result<(), Infallible> {
            self.deviations.push(d.event_id.clone());
            Ok(())
        }
        fn exec_session(
            &mut self,
            id: &str,
            _: &ProcessEvent,
            _: &Baseline,
            session: &str,
            _: u64,
        ) -> Result<(), Infallible> {
            self.sessions.push(format!("{id}@{session}"));
            Ok(())
        }
    }

    fn event(id: &str, seq: u64, exe: &str, context: ExecContext) -> IngestEvent {
        IngestEvent {
            event_id: id.into(),
            sequence: seq,
            process: ProcessEvent {
                exec_session: (context == ExecContext::ExecSession).then(|| "n1/1/1".into()),
                ..ProcessEvent::test(exe)
                    .in_workload(&WorkloadIdentity::new(
                        "c",
                        "shop",
                        WorkloadKind::Deployment,
                        "web",
                        "x",
                    ))
                    .context(context)
                    .on_node("n1")
            },
            reported: SensorReport::default(),
            placement: Default::default(),
            executions: 1,
        }
    }

    #[test]
    fn a_batch_learns_counts_replays_and_deviates_once_enforced() {
        let now = UNIX_EPOCH + Duration::from_secs(86_400 * 20_000);
        let policies = Policies::default();
        let mut m = Memory::default();
        let app = event("a", 1, "/app", ExecContext::Entrypoint);
        let applied = apply(&mut m, &[app.clone(), app], &policies, now, 10).unwrap();
        assert_eq!(
            (applied.outcome.applied, applied.outcome.duplicates),
            (1, 1)
        );
        assert_eq!(applied.highest_sequence, 1);
        assert_eq!(applied.activity.len(), 1, "one element ran");
        let t = applied.baselines.into_iter().next().unwrap();
        assert!(t.changed, "a new baseline is a change");
        assert_eq!(t.sighted, BTreeSet::from([ElementKey::exe("/app")]));
        let mut b = t.baseline;
        assert!(m.deviations.is_empty(), "learning does not deviate");
        // Enforced: outside the baseline is a deviation, grouped by the engine; an exec
        // session is one incident.
        b.approve(None, now);
        m.baselines.insert(b.workload.to_string(), b);
        let batch = [
            event("b", 2, "/bin/sh", ExecContext::Descendant),
            event("c", 3, "/app", ExecContext::ExecSession),
            event("d", 4, "/app", ExecContext::Probe),
        ];
        let applied = apply(&mut m, &batch, &policies, now, 10).unwrap();
        assert_eq!(applied.outcome.deviations.len(), 1);
        assert_eq!(m.deviations, vec!["b".to_string()]);
        assert_eq!(m.sessions, vec!["c@n1/1/1".to_string()]);
        assert_eq!(applied.activity.len(), 2, "a probe is not activity");
        assert_eq!(applied.highest_sequence, 4);
    }

    /// `b` without what a sighting changes: its definition.
    fn definition(b: &Baseline) -> Baseline {
        let mut d = b.clone();
        for e in d.elements.values_mut() {
            e.provenance = crate::baseline::Provenance::apart();
        }
        d.set_tally(Baseline::new(b.workload.clone(), UNIX_EPOCH).tally());
        d
    }

    #[test]
    fn sightings_of_known_elements_change_only_their_provenance() {
        let now = UNIX_EPOCH + Duration::from_secs(86_400 * 20_000);
        let policies = Policies::default();
        let mut m = Memory::default();
        let batch = [
            event("a", 1, "/app", ExecContext::Entrypoint),
            event("b", 2, "/bin/date", ExecContext::Descendant),
        ];
        let learned = apply(&mut m, &batch, &policies, now, 10).unwrap();
        let mut b = learned.baselines.into_iter().next().unwrap().baseline;
        b.approve(None, now);
        m.baselines.insert(b.workload.to_string(), b.clone());
        // Enforced: /app runs twice more, a probe once; /bin/date does not run.
        let later = now + Duration::from_secs(60);
        let batch = [
            event("c", 3, "/app", ExecContext::Descendant),
            event("d", 4, "/app", ExecContext::Descendant),
            event("e", 5, "/app", ExecContext::Probe),
        ];
        let t = apply(&mut m, &batch, &policies, later, 10)
            .unwrap()
            .baselines
            .into_iter()
            .next()
            .unwrap();
        assert!(!t.changed && !t.tallied, "no version, no tally");
        assert_eq!(t.sighted, BTreeSet::from([ElementKey::exe("/app")]));
        assert_eq!(t.baseline.version, b.version);
        assert_eq!(
            definition(&t.baseline),
            definition(&b),
            "the definition is as read"
        );
        let app = &t.baseline.elements[&ElementKey::exe("/app")].provenance;
        assert_eq!((app.count, app.last_seen), (3, later));
        assert_eq!(
            t.baseline.elements[&ElementKey::exe("/bin/date")],
            b.elements[&ElementKey::exe("/bin/date")]
        );
        // While learning, a sighting of a known element also counts in the tally.
        let mut m = Memory::default();
        let first = apply(&mut m, &batch[..1], &policies, now, 10).unwrap();
        let b = first.baselines.into_iter().next().unwrap().baseline;
        m.baselines.insert(b.workload.to_string(), b.clone());
        let t = apply(&mut m, &batch[1..2], &policies, later, 10)
            .unwrap()
            .baselines
            .into_iter()
            .next()
            .unwrap();
        assert!(!t.changed && t.tallied);
        assert_eq!(t.baseline.learning.events_observed, 2);
        assert_eq!(definition(&t.baseline), definition(&b));
    }

    #[test]
    fn provenance_kept_apart_is_not_serialised() {
        let now = UNIX_EPOCH + Duration::from_secs(86_400 * 20_000);
        let mut m = Memory::default();
        let applied = apply(
            &mut m,
            &[event("a", 1, "/app", ExecContext::Entrypoint)],
            &Policies::default(),
            now,
            10,
        )
        .unwrap();
        let b = applied.baselines.into_iter().next().unwrap().baseline;
        let whole = serde_json::to_string(&b).unwrap();
        assert!(whole.contains("\"provenance\""));
        let d = definition(&b);
        let text = serde_json::to_string(&d).unwrap();
        assert!(!text.contains("\"provenance\""), "{text}");
        assert_eq!(serde_json::from_str::<Baseline>(&text).unwrap(), d);
    }

    #[test]
    fn a_misplaced_event_is_acknowledged_and_does_nothing() {
        let now = UNIX_EPOCH + Duration::from_secs(86_400 * 20_000);
        let policies = Policies::default();
        let mut m = Memory::default();
        let learned = apply(
            &mut m,
            &[event("a", 1, "/app", ExecContext::Entrypoint)],
            &policies,
            now,
            10,
        )
        .unwrap();
        let mut b = learned.baselines.into_iter().next().unwrap().baseline;
        b.approve(None, now);
        m.baselines.insert(b.workload.to_string(), b.clone());
        // Another node's pod with a new image digest and a new executable: neither a
        // re-learning window, nor a deviation, nor activity.
        let mut foreign = event("f", 2, "/tmp/miner", ExecContext::Descendant);
        foreign.process.container.as_mut().unwrap().image_digest =
            Some(format!("sha256:{}", "e".repeat(64)));
        foreign.placement = Placement::Refused("pod on node n2".into());
        let applied = apply(&mut m, &[foreign.clone()], &policies, now, 10).unwrap();
        assert_eq!(applied.outcome.misplaced, 1);
        assert_eq!(applied.outcome.applied, 0);
        assert_eq!(applied.highest_sequence, 2, "acknowledged");
        assert!(applied.outcome.deviations.is_empty() && m.deviations.is_empty());
        assert!(applied.activity.is_empty());
        assert!(applied.baselines.is_empty(), "no baseline touched");
        assert_eq!(m.baselines[&b.workload.to_string()], b);
        // Sent again: a duplicate, still nothing.
        let again = apply(&mut m, &[foreign], &policies, now, 10).unwrap();
        assert_eq!(again.outcome.duplicates, 1);
    }
}
