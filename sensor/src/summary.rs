//! Summaries: what the sensor sends of repeated executions. An execution the server has
//! nothing new to learn from (the same [`SummaryKey`] ran before in the interval) is counted
//! here instead of sent, and every interval each key's count goes out as one event that
//! stands for all of them (`SensorEvent.executions`), the first of them described in full.
//!
//! What goes out at once, on its own, as before:
//! - a **deviation** whose key is new in this interval (its incident is raised without delay;
//!   the repeats that follow in the interval are counted, then sent as one summary);
//! - an **observation for learning** (the workload has no baseline past learning here) whose
//!   key was not seen in this interval or the one before: a new element is never delayed, so
//!   learning ends on time;
//! - every process of an **exec session** (each is a person's command);
//! - everything, when the server does not accept summaries or `--summary-interval` is 0.
//!
//! What waits for the interval's end: executions the baselines held here allow (and probes),
//! and repeats of the above. Nothing is dropped: each held execution is counted in exactly one
//! event. The table is bounded (`--summary-max-entries`); a table that fills is sent early.
//! Executions held when the sensor is killed (`SIGKILL`, a crash) are lost with it: at most
//! one interval of repeats, never a deviation's first execution. A graceful stop sends them.

use procguard_core::ingest::SummaryKey;
use procguard_core::{ExecContext, ProcessEvent};
// A random key per process, as std's SipHash has, at a fraction of its cost per byte (the
// key's hash was 3 % of the sensor's CPU at an exec storm): keys are compared whole on a
// match, so a collision costs a comparison, never a merge.
use foldhash::quality::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::time::{Duration, Instant, SystemTime};

/// How the uplink judged an execution, as far as summaries care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// Outside the baseline held here.
    Deviation,
    /// For the server to learn from (no baseline past learning here, or coverage).
    Learning,
    /// Allowed by the baseline held here (or a probe).
    Allowed,
}

/// One event to send: `executions` executions described by `event` (the first of them).
#[derive(Debug)]
pub struct Outgoing {
    /// The first execution.
    pub event: ProcessEvent,
    /// Whether it is a deviation.
    pub deviation: bool,
    /// How many executions it stands for (1: a single execution).
    pub executions: u64,
    /// When the first was seen.
    pub first_at: SystemTime,
    /// When the last was seen.
    pub last_at: SystemTime,
}

/// One key's executions held in this interval.
#[derive(Debug)]
struct Entry {
    /// The first held execution (`None` while only the one sent at once was seen).
    first: Option<ProcessEvent>,
    deviation: bool,
    held: u64,
    first_at: SystemTime,
    last_at: SystemTime,
}

/// The summary table of one interval.
#[derive(Debug)]
pub struct Summaries {
    interval: Duration,
    max_entries: usize,
    hasher: RandomState,
    /// Per key hash, the entries with that hash (keys compared whole: a collision never
    /// merges two executions).
    table: HashMap<u64, Vec<(ProcessEvent, Entry)>, RandomState>,
    entries: usize,
    /// Executions held in the table.
    held: u64,
    /// Hashes of the keys of the interval before, for learning: a key seen then is no news.
    previous: HashSet<u64, RandomState>,
    started: Instant,
    /// Whether the server accepts summaries (its Welcome said so).
    accepted: bool,
}

impl Summaries {
    /// An empty table; `interval` zero turns summaries off.
    pub fn new(interval: Duration, max_entries: usize) -> Self {
        Self {
            interval,
            max_entries: max_entries.max(1),
            hasher: RandomState::default(),
            table: HashMap::default(),
            entries: 0,
            held: 0,
            previous: HashSet::default(),
            started: Instant::now(),
            accepted: false,
        }
    }

    /// Whether executions are summarised now.
    pub fn on(&self) -> bool {
        self.accepted && !self.interval.is_zero()
    }

    /// The server's Welcome said whether it accepts summaries.
    pub fn server_accepts(&mut self, accepts: bool) {
        self.accepted = accepts;
    }

    /// Executions held, not yet sent.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Keys in the table.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Offers one execution: `Some` to send at once (on its own), `None` when it is held for
    /// the interval's summary.
    pub fn offer(&mut self, ev: ProcessEvent, judged: Judged, now: SystemTime) -> Option<Outgoing> {
        let single = |ev| {
            Some(Outgoing {
                event: ev,
                deviation: judged == Judged::Deviation,
                executions: 1,
                first_at: now,
                last_at: now,
            })
        };
        if !self.on() || ev.context == ExecContext::ExecSession {
            return single(ev);
        }
        let deviation = judged == Judged::Deviation;
        let hash = self.hasher.hash_one(SummaryKey::of(&ev));
        let slot = self.table.entry(hash).or_default();
        let key = SummaryKey::of(&ev);
        if let Some((_, e)) = slot
            .iter_mut()
            .find(|(k, e)| e.deviation == deviation && SummaryKey::of(k) == key)
        {
            e.held += 1;
            self.held += 1;
            e.last_at = now;
            if e.first.is_none() {
                e.first_at = now;
                e.first = Some(ev);
            }
            return None;
        }
        // The key's first execution in this interval.
        let at_once = match judged {
            Judged::Deviation => true,
            Judged::Learning => !self.previous.contains(&hash),
            Judged::Allowed => false,
        };
        let entry = Entry {
            first: None,
            deviation,
            held: 0,
            first_at: now,
            last_at: now,
        };
        if at_once {
            slot.push((ev.clone(), entry));
            self.entries += 1;
            return single(ev);
        }
        slot.push((
            ev.clone(),
            Entry {
                first: Some(ev),
                held: 1,
                ..entry
            },
        ));
        self.entries += 1;
        self.held += 1;
        None
    }

    /// Whether the table must be sent now: the interval ended, or it is full.
    pub fn due(&self, now: Instant) -> bool {
        !self.table.is_empty()
            && (now.duration_since(self.started) >= self.interval
                || self.entries >= self.max_entries)
    }

    /// When the table must be sent ([`Summaries::due`] from then on), while it holds any
    /// key: the interval's end, or when it began once the table is full.
    pub fn due_at(&self) -> Option<Instant> {
        if self.table.is_empty() {
            None
        } else if self.full() {
            Some(self.started)
        } else {
            Some(self.started + self.interval)
        }
    }

    /// Whether the table is full (sent before the interval's end).
    pub fn full(&self) -> bool {
        self.entries >= self.max_entries
    }

    /// Ends the interval: one event per key with held executions, and an empty table.
    pub fn drain(&mut self, now: Instant) -> Vec<Outgoing> {
        self.started = now;
        self.entries = 0;
        self.held = 0;
        self.previous.clear();
        let mut out = Vec::new();
        for (hash, slot) in self.table.drain() {
            self.previous.insert(hash);
            for (_, e) in slot {
                if let Some(event) = e.first {
                    out.push(Outgoing {
                        event,
                        deviation: e.deviation,
                        executions: e.held,
                        first_at: e.first_at,
                        last_at: e.last_at,
                    });
                }
            }
        }
        // In the order they were first seen, as single events would have been.
        out.sort_by_key(|o| o.first_at);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procguard_core::{WorkloadIdentity, WorkloadKind};

    fn web(exe: &str, pid: u32) -> ProcessEvent {
        ProcessEvent::test(exe)
            .pid(pid)
            .argv(&[exe, &format!("--run={pid}")])
            .on_node("n1")
            .in_workload(&WorkloadIdentity::new(
                "shop",
                "web",
                WorkloadKind::Deployment,
                "web",
                "app",
            ))
    }

    fn on() -> Summaries {
        let mut s = Summaries::new(Duration::from_secs(30), 100);
        s.server_accepts(true);
        s
    }

    #[test]
    fn allowed_repeats_are_one_event_with_their_count_and_first_execution() {
        let mut s = on();
        let t = SystemTime::now();
        for pid in 1..=1000 {
            assert!(s
                .offer(web("/app/server", pid), Judged::Allowed, t)
                .is_none());
        }
        assert_eq!((s.held(), s.entries()), (1000, 1));
        let out = s.drain(Instant::now());
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].executions, out[0].event.pid, out[0].deviation),
            (1000, 1, false)
        );
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn a_deviation_goes_at_once_and_its_repeats_are_counted_exactly() {
        let mut s = on();
        let t = SystemTime::now();
        let first = s
            .offer(web("/tmp/miner", 1), Judged::Deviation, t)
            .expect("at once");
        assert!(first.deviation && first.executions == 1);
        for pid in 2..=10_000 {
            assert!(s
                .offer(web("/tmp/miner", pid), Judged::Deviation, t)
                .is_none());
        }
        let out = s.drain(Instant::now());
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].executions, out[0].event.pid), (9_999, 2));
        // The next interval: the first is at once again.
        assert!(s
            .offer(web("/tmp/miner", 1), Judged::Deviation, t)
            .is_some());
    }

    #[test]
    fn a_new_learning_key_goes_at_once_and_a_familiar_one_waits() {
        let mut s = on();
        let t = SystemTime::now();
        assert!(
            s.offer(web("/app/a", 1), Judged::Learning, t).is_some(),
            "new"
        );
        assert!(
            s.offer(web("/app/a", 2), Judged::Learning, t).is_none(),
            "a repeat"
        );
        assert_eq!(s.drain(Instant::now())[0].executions, 1);
        // Seen in the interval before: no news, held.
        assert!(s.offer(web("/app/a", 3), Judged::Learning, t).is_none());
        // A different element is news.
        assert!(s.offer(web("/app/b", 4), Judged::Learning, t).is_some());
    }

    #[test]
    fn what_the_server_reads_keeps_executions_apart() {
        let mut s = on();
        let t = SystemTime::now();
        let base = web("/app/server", 1);
        let mut hashed = base.clone();
        hashed.exe_sha256 = Some("a".repeat(64));
        let mut other_hash = base.clone();
        other_hash.exe_sha256 = Some("b".repeat(64));
        let mut deleted = base.clone();
        deleted.exe_deleted = true;
        let mut parent = base.clone();
        parent.ancestors = vec![procguard_core::process::Ancestor {
            pid: 9,
            exe_path: "/bin/sh".into(),
        }];
        for ev in [base, hashed, other_hash, deleted, parent] {
            s.offer(ev, Judged::Allowed, t);
        }
        assert_eq!(s.entries(), 5);
        // The same executable judged a deviation (a baseline changed meanwhile) is apart too.
        assert!(s
            .offer(web("/app/server", 2), Judged::Deviation, t)
            .is_some());
        assert_eq!(s.entries(), 6);
    }

    #[test]
    fn exec_sessions_and_a_server_without_summaries_get_every_execution() {
        let mut s = Summaries::new(Duration::from_secs(30), 100);
        let t = SystemTime::now();
        assert!(s.offer(web("/app/a", 1), Judged::Allowed, t).is_some());
        s.server_accepts(true);
        let mut session = web("/bin/sh", 2).context(ExecContext::ExecSession);
        session.exec_session = Some("n1/1/1".into());
        assert!(s.offer(session.clone(), Judged::Allowed, t).is_some());
        assert!(s.offer(session, Judged::Allowed, t).is_some());
        let mut off = Summaries::new(Duration::ZERO, 100);
        off.server_accepts(true);
        assert!(off.offer(web("/app/a", 1), Judged::Allowed, t).is_some());
    }

    #[test]
    fn a_full_table_is_due_before_its_interval() {
        let hour = Duration::from_secs(3600);
        let mut s = Summaries::new(hour, 3);
        s.server_accepts(true);
        assert_eq!(s.due_at(), None, "an empty table is never due");
        let t = SystemTime::now();
        for (i, exe) in ["/a", "/b"].iter().enumerate() {
            s.offer(web(exe, i as u32), Judged::Allowed, t);
        }
        assert!(!s.due(Instant::now()));
        let end = s.due_at().expect("due at the interval's end");
        assert!(end > Instant::now() + hour - Duration::from_secs(60));
        assert!(s.due(end) && !s.due(end - Duration::from_millis(1)));
        s.offer(web("/c", 3), Judged::Allowed, t);
        assert!(s.due(Instant::now()) && s.full());
        assert!(
            s.due_at().is_some_and(|at| at <= Instant::now()),
            "full: due now"
        );
        assert_eq!(s.drain(Instant::now()).len(), 3);
        assert!(!s.due(Instant::now()), "an empty table is never due");
        assert_eq!(s.due_at(), None);
    }
}
