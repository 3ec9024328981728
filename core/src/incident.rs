//! Incidents: deviations grouped into findings people act on, their severity, and their
//! lifecycle.
//!
//! A deviation is grouped by [`group_key`]: workload container identity, executable path and
//! script path. A crash-looping pod that runs the same bad binary a thousand times is one
//! incident with a count of a thousand, not a thousand alerts. A sensor that cannot see
//! everything (it dropped events, sent partial ones, or went silent) is a finding too: a
//! [`IncidentKind::SensorBlind`] incident grouped by node.
//!
//! **Severity rules** ([`severity`]), first match wins:
//! 1. memfd or deleted executable → critical (never lowered, whatever the baseline state);
//! 2. an allowed element whose content was never approved ("modified executable": the file
//!    at an allowed path was replaced) → high (never lowered: it is evidence of tampering,
//!    whatever the state of the element list's review); when it is drift too, the reason
//!    names the origin;
//! 3. drift: an executable of a container that did not come from its image (writable layer,
//!    volume or host path) → high, with a reason that names the origin ("drift: executable
//!    from the container's writable layer"); never lowered, like rule 2;
//! 4. the baseline is still pending review → low (its content is not a reviewed statement yet),
//!    unless learning ended because the baseline reached its element limit: flooding the
//!    learner must not buy an attacker low severity, so rules 5–8 apply then;
//! 5. an allowed, content-pinned element that ran without a hash (the sensor could not read
//!    its content) → medium, "content unverified": a gap in what the sensor saw, not evidence
//!    of a change, but never silently allowed;
//! 6. executable (or script) in a writable location → high;
//! 7. a shell, interpreter or network tool in a workload whose baseline allows none of that
//!    class → high;
//! 8. any other executable → medium.
//!
//! An incident's severity is the highest of its events'. **Lifecycle** ([`Incident::apply`]):
//! open → acknowledged → resolved, or open/acknowledged → allowed. Resolved and allowed are
//! final: the same executable running again afterwards opens a new incident.

use crate::baseline::{is_shell, Baseline, BaselineState, Element, ElementKey, ElementStatus};
use crate::content::{verdict_of, ContentCheck, ContentVerdict};
use crate::identity::WorkloadIdentity;
use crate::process::{ExecContext, Origin, ProcessEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::SystemTime;

/// How many distinct nodes and pods an incident keeps; a sample, not a log.
pub const PLACES_CAP: usize = 16;
/// How many sample events an incident keeps (the first ones, then the latest one).
pub const SAMPLES_CAP: usize = 5;

/// Most bytes of argv, all arguments together, one incident sample keeps; a longer argv is cut
/// (`argv_truncated`). The deviation's record in the SIEM stream keeps the whole of it: an
/// incident is for a person, and a stream of distinct deviations with maximum argv must not
/// cost the store 5 × 64 KiB per incident.
pub const SAMPLE_ARGV_BYTES: usize = 8192;

/// How bad an incident is. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// A deviation against a baseline still pending review.
    Low,
    /// A new executable.
    Medium,
    /// Drift, a modified executable, a writable location, or a shell, interpreter or network
    /// tool new to the workload.
    High,
    /// A memfd or deleted executable.
    Critical,
}

impl Severity {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// Lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentState {
    /// Nobody has looked.
    Open,
    /// A person has seen it.
    Acknowledged,
    /// Closed without a baseline change.
    Resolved,
    /// Closed by adding the executable to the baseline.
    Allowed,
}

impl IncidentState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
            Self::Allowed => "allowed",
        }
    }

    /// Whether new events still join this incident.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Open | Self::Acknowledged)
    }
}

/// What kind of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentKind {
    /// A process outside the baseline.
    Deviation,
    /// A sensor that dropped events, sent partial events, or went silent.
    SensorBlind,
    /// An exec session (`kubectl exec`) into a workload whose baseline is enforced, whatever
    /// it runs: one incident per session.
    ExecSession,
    /// Deviations of a workload container past its cap on active deviation incidents
    /// ([`DEFAULT_MAX_ACTIVE_PER_WORKLOAD`]): every further executable without an active incident
    /// of its own is counted here, one incident per workload container, so that a container
    /// running ever new executables cannot grow the store without bound. Nothing is dropped:
    /// each deviation keeps its own record in the SIEM stream, and the samples show the first
    /// executables and the latest.
    DeviationOverflow,
}

/// Active (open or acknowledged) deviation incidents one workload container may have before
/// further executables are counted in its [`IncidentKind::DeviationOverflow`] incident.
pub const DEFAULT_MAX_ACTIVE_PER_WORKLOAD: u64 = 1000;

impl IncidentKind {
    /// Lowercase name (`deviation`, `sensor-blind`, `exec-session`, `deviation-overflow`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deviation => "deviation",
            Self::SensorBlind => "sensor-blind",
            Self::ExecSession => "exec-session",
            Self::DeviationOverflow => "deviation-overflow",
        }
    }
}

/// A person's action on an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Seen.
    Acknowledge,
    /// Closed, no baseline change.
    Resolve,
    /// Closed, executable added to the baseline.
    Allow,
}

impl Action {
    fn target(self) -> IncidentState {
        match self {
            Self::Acknowledge => IncidentState::Acknowledged,
            Self::Resolve => IncidentState::Resolved,
            Self::Allow => IncidentState::Allowed,
        }
    }

    /// Verb for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::Resolve => "resolve",
            Self::Allow => "allow",
        }
    }
}

/// What an accepted action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The incident moved to the action's state.
    Changed,
    /// The incident was already there (the action was a repeat); nothing changed.
    Unchanged,
}

/// A refused lifecycle change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The incident is already closed.
    #[error("incident {id} is already {state}; a closed incident cannot be changed (a new occurrence opens a new incident)")]
    Closed {
        /// Incident.
        id: String,
        /// Its final state.
        state: &'static str,
    },
    /// Allow on a finding with no single executable.
    #[error(
        "incident {id} is a sensor finding, an exec session or an overflow of deviations: it has no single executable to allow; resolve it instead (an overflow's executables are in its samples and the SIEM stream's deviation records, each can be added with `procguardctl baselines add`)"
    )]
    NothingToAllow {
        /// Incident.
        id: String,
    },
}

/// One sample event of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Sensor event ID.
    pub event_id: String,
    /// When the server received it.
    pub at: SystemTime,
    /// The process, with ancestry and argv.
    pub process: ProcessEvent,
    /// Its content verdict against the baseline it deviated from (`None` in samples stored
    /// before verdicts existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentCheck>,
}

/// A group of deviations of one executable in one workload container, or a sensor finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable ID.
    pub id: String,
    /// Deviation or sensor finding.
    pub kind: IncidentKind,
    /// Workload container (deviations only).
    pub workload: Option<WorkloadIdentity>,
    /// Executable (deviations only).
    pub exe_path: String,
    /// Applet of a multi-call binary (deviations only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub applet: String,
    /// Script, for interpreters (deviations only).
    pub script_path: String,
    /// Highest severity of its events.
    pub severity: Severity,
    /// Why that severity.
    pub severity_reason: String,
    /// The most serious content verdict of its events ([`ContentVerdict::concern`], the first
    /// of equals); of its first process for an exec session; `None` for sensor findings (and
    /// incidents stored before verdicts existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentCheck>,
    /// Lifecycle state.
    pub state: IncidentState,
    /// First event.
    pub first_seen: SystemTime,
    /// Last event.
    pub last_seen: SystemTime,
    /// Events grouped.
    pub count: u64,
    /// Nodes (capped at [`PLACES_CAP`]).
    pub nodes: BTreeSet<String>,
    /// Pods (capped).
    pub pods: BTreeSet<String>,
    /// Samples (capped at [`SAMPLES_CAP`]).
    pub samples: Vec<Sample>,
    /// Baseline version violated (latest event's).
    pub baseline_version: u64,
    /// Where its executable came from: the most telling origin among its events
    /// ([`Origin::rank`]: drift before the image), `unknown` for findings without one.
    #[serde(default)]
    pub origin: Origin,
    /// Node (sensor findings only).
    pub sensor_node: String,
    /// Who last changed the state.
    pub state_actor: String,
    /// Why.
    pub state_reason: String,
    /// Last change of any kind.
    pub updated_at: SystemTime,
}

/// What allowing an incident changed in its baseline: the element, and the contents approved
/// for it. Its text is what the audit log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The element allowed.
    pub element: ElementKey,
    /// Whether the element was new to the baseline.
    pub new_element: bool,
    /// The contents (sha256) newly approved for it, from the incident's samples.
    pub approved_sha256: Vec<String>,
    /// Whether the element is pinned to any content afterwards (otherwise it is matched by
    /// name alone: its samples all ran unhashed).
    pub pinned: bool,
    /// The drift origins newly approved for it (its samples ran from there).
    pub approved_origins: Vec<Origin>,
}

/// `allowed EXE (APPLET) SCRIPT (new element): content sha256 H1, H2`.
impl std::fmt::Display for Allowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "allowed {}", self.element)?;
        if self.new_element {
            f.write_str(" (new element)")?;
        }
        if !self.approved_sha256.is_empty() {
            write!(f, ": content sha256 {}", self.approved_sha256.join(", "))?;
        } else if self.pinned {
            f.write_str(": no new content")?;
        } else {
            f.write_str(": by name alone (no sample was hashed)")?;
        }
        if !self.approved_origins.is_empty() {
            let names: Vec<&str> = self.approved_origins.iter().map(|o| o.as_str()).collect();
            write!(f, "; from origin {}", names.join(", "))?;
        }
        Ok(())
    }
}

/// The grouping key of a deviation: workload container and element (executable, applet,
/// script). Without an applet it is the key deviations had before applets existed.
pub fn group_key(workload: &WorkloadIdentity, key: &crate::ElementKey) -> String {
    if key.applet.is_empty() {
        format!("dev\0{workload}\0{}\0{}", key.exe_path, key.script_path)
    } else {
        format!(
            "dev\0{workload}\0{}\0{}\0{}",
            key.exe_path, key.script_path, key.applet
        )
    }
}

/// The grouping key of an exec session: workload container and session ID.
pub fn session_key(workload: &WorkloadIdentity, session: &str) -> String {
    format!("session\0{workload}\0{session}")
}

/// The grouping key of a workload container's [`IncidentKind::DeviationOverflow`] incident.
pub fn overflow_key(workload: &WorkloadIdentity) -> String {
    format!("overflow\0{workload}")
}

/// The grouping key of a sensor finding: the node.
pub fn sensor_key(node: &str) -> String {
    format!("blind\0{node}")
}

/// Interpreters whose appearance in a workload that never ran one is suspicious.
const INTERPRETERS: &[&str] = &[
    "python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua", "tclsh",
    "wish", "java", "jshell", "pwsh", "irb", "deno", "bun", "awk", "gawk", "mawk",
];

/// Network tools whose appearance in a workload that never ran one is suspicious.
const NETWORK_TOOLS: &[&str] = &[
    "curl", "wget", "nc", "ncat", "netcat", "socat", "ssh", "scp", "sftp", "telnet", "ftp", "tftp",
    "nmap", "rsync", "dig", "nslookup", "openssl", "ping",
];

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Strips a version suffix so `python3.11` counts as `python3`.
fn stem(path: &str) -> &str {
    let b = basename(path);
    let end = b
        .find(|c: char| c.is_ascii_digit() || c == '.')
        .filter(|&i| i > 0)
        .unwrap_or(b.len());
    if INTERPRETERS.contains(&b) || NETWORK_TOOLS.contains(&b) {
        b
    } else {
        &b[..end]
    }
}

/// The tool class of an executable: "shell", "interpreter", "network tool", or none.
pub fn tool_class(path: &str) -> Option<&'static str> {
    if is_shell(path) {
        Some("shell")
    } else if INTERPRETERS.contains(&stem(path)) {
        Some("interpreter")
    } else if NETWORK_TOOLS.contains(&stem(path)) {
        Some("network tool")
    } else {
        None
    }
}

/// The reason (prefix) of a deviation whose allowed element ran with content never approved.
pub const MODIFIED_EXECUTABLE: &str = "modified executable";
/// The reason (prefix) of a deviation whose allowed, content-pinned element ran unhashed.
pub const CONTENT_UNVERIFIED: &str = "content unverified";

/// Severity of one deviation against `baseline`, with a reason for people; see the module
/// documentation for the rules.
pub fn severity(ev: &ProcessEvent, baseline: &Baseline) -> (Severity, String) {
    // A fileless executable in a container is drift too; its reason says so.
    let drift = ev.drift();
    let fileless = if drift.is_some() {
        format!(" ({})", Origin::Fileless.drift_reason())
    } else {
        String::new()
    };
    if ev.exe_memfd {
        return (
            Severity::Critical,
            format!("executable runs from memory (memfd){fileless}"),
        );
    }
    if ev.exe_deleted {
        return (
            Severity::Critical,
            format!("executable was deleted from disk{fileless}"),
        );
    }
    let content = verdict_of(baseline.elements.get(&ElementKey::of(ev)), ev);
    if content == ContentVerdict::Modified {
        let sha = ev.exe_sha256.as_deref().unwrap_or_default();
        let origin = drift
            .map(|o| format!(" ({})", o.drift_reason()))
            .unwrap_or_default();
        return (
            Severity::High,
            format!(
                "{MODIFIED_EXECUTABLE}: content sha256 {} was never approved for this element{origin}",
                &sha[..sha.len().min(12)]
            ),
        );
    }
    if let Some(o) = drift {
        return (Severity::High, o.drift_reason().to_string());
    }
    if baseline.state == BaselineState::PendingReview && baseline.learning.element_limit.is_none() {
        return (
            Severity::Low,
            "baseline is still pending review".to_string(),
        );
    }
    if content == ContentVerdict::Unverified {
        return (
            Severity::Medium,
            format!("{CONTENT_UNVERIFIED}: the sensor could not hash the executable"),
        );
    }
    if ev.exe_writable_location {
        return (
            Severity::High,
            "executable is in a writable location".to_string(),
        );
    }
    // What ran: a multi-call binary's applet (busybox `wget` is a network tool, whatever the
    // file is called).
    let program = |exe: &str, applet: &str| -> String {
        if applet.is_empty() {
            exe.to_string()
        } else {
            applet.to_string()
        }
    };
    if let Some(class) = tool_class(&program(&ev.exe_path, ev.applet.as_deref().unwrap_or(""))) {
        let workload_has_one = baseline.elements.iter().any(|(k, e)| {
            e.status.allowed() && tool_class(&program(&k.exe_path, &k.applet)) == Some(class)
        });
        if !workload_has_one {
            return (
                Severity::High,
                format!("a {class} in a workload that never ran one"),
            );
        }
        return (
            Severity::Medium,
            format!("new executable (the workload already runs a {class})"),
        );
    }
    (Severity::Medium, "new executable".to_string())
}

fn add_capped(set: &mut BTreeSet<String>, v: &str) {
    if !v.is_empty() && set.len() < PLACES_CAP {
        set.insert(v.to_string());
    }
}

fn pod_of(ev: &ProcessEvent) -> Option<&str> {
    ev.container
        .as_ref()
        .map(|c| c.pod_name.as_deref().unwrap_or(&c.container_id))
}

impl Incident {
    /// An open incident of `kind` about what `ev` ran in its workload, with no event yet
    /// (low severity until the caller sets it and records the first event).
    fn about(
        id: String,
        kind: IncidentKind,
        ev: &ProcessEvent,
        baseline: &Baseline,
        now: SystemTime,
    ) -> Self {
        Self {
            id,
            kind,
            workload: Some(ev.workload.clone()),
            exe_path: ev.exe_path.clone(),
            applet: ev.applet.clone().unwrap_or_default(),
            script_path: ev.script_path.clone().unwrap_or_default(),
            severity: Severity::Low,
            severity_reason: String::new(),
            content: None,
            state: IncidentState::Open,
            first_seen: now,
            last_seen: now,
            count: 0,
            nodes: BTreeSet::new(),
            pods: BTreeSet::new(),
            samples: Vec::new(),
            baseline_version: baseline.version,
            origin: Origin::Unknown,
            sensor_node: String::new(),
            state_actor: String::new(),
            state_reason: String::new(),
            updated_at: now,
        }
    }

    /// A new deviation incident from its first event.
    pub fn from_deviation(
        id: String,
        event_id: &str,
        ev: &ProcessEvent,
        baseline: &Baseline,
        now: SystemTime,
    ) -> Self {
        let (severity, severity_reason) = severity(ev, baseline);
        let mut i = Self::about(id, IncidentKind::Deviation, ev, baseline, now);
        (i.severity, i.severity_reason) = (severity, severity_reason);
        i.record_deviation(event_id, ev, baseline, now);
        i
    }

    /// Adds one more deviation event. Severity only rises.
    pub fn record_deviation(
        &mut self,
        event_id: &str,
        ev: &ProcessEvent,
        baseline: &Baseline,
        now: SystemTime,
    ) {
        let (severity, reason) = severity(ev, baseline);
        let content = baseline.judge_content(ev);
        if self
            .content
            .as_ref()
            .is_none_or(|c| content.verdict.concern() > c.verdict.concern())
        {
            self.content = Some(content.clone());
        }
        if severity > self.severity {
            self.severity = severity;
            self.severity_reason = reason;
        }
        let origin = ev.drift().unwrap_or(ev.origin);
        if self.count == 0 || origin.rank() > self.origin.rank() {
            self.origin = origin;
        }
        self.count += 1;
        self.first_seen = self.first_seen.min(now);
        self.last_seen = self.last_seen.max(now);
        self.updated_at = now;
        self.baseline_version = baseline.version;
        add_capped(&mut self.nodes, &ev.node_name);
        if let Some(p) = pod_of(ev) {
            add_capped(&mut self.pods, p);
        }
        let mut process = ev.clone();
        if process.argv.iter().map(String::len).sum::<usize>() > SAMPLE_ARGV_BYTES {
            process.argv = crate::baseline::argv_within(&process.argv, SAMPLE_ARGV_BYTES);
            process.argv_truncated = true;
        }
        let sample = Sample {
            event_id: event_id.to_string(),
            at: now,
            process,
            content: Some(content),
        };
        if self.samples.len() < SAMPLES_CAP {
            self.samples.push(sample);
        } else {
            // Keep the first few (how it started) and the latest (what it does now).
            self.samples[SAMPLES_CAP - 1] = sample;
        }
    }

    /// Counts the executions of a sensor's summary past its first: [`Incident::record_deviation`]
    /// (or [`Incident::record_session_event`]) recorded the summary's event, which stands for
    /// `executions` executions (its first as the sample), so the count stays exact.
    pub fn add_repeats(&mut self, executions: u64) {
        self.count = self.count.saturating_add(executions.saturating_sub(1));
    }

    /// A new overflow incident of `ev`'s workload container, which has `cap` active deviation
    /// incidents already: `ev` is the first deviation counted here. It names no executable of
    /// its own (each sample names its own); its severity is at least high, since a container
    /// that runs that many executables outside its baseline is itself a finding, and rises
    /// with its events as a deviation incident's does.
    pub fn overflow(
        id: String,
        event_id: &str,
        ev: &ProcessEvent,
        baseline: &Baseline,
        now: SystemTime,
        cap: u64,
    ) -> Self {
        let mut i = Self::about(id, IncidentKind::DeviationOverflow, ev, baseline, now);
        (i.exe_path, i.applet, i.script_path) = (String::new(), String::new(), String::new());
        i.severity = Severity::High;
        i.severity_reason = format!(
            "{cap} deviation incidents of this workload container are active (the cap): every \
             further executable without an incident of its own is counted here"
        );
        i.record_deviation(event_id, ev, baseline, now);
        i
    }

    /// A new exec-session incident: `ev` is the first process of the session seen (its
    /// command is the subject), into a workload whose baseline is enforced.
    pub fn exec_session(
        id: String,
        event_id: &str,
        ev: &ProcessEvent,
        baseline: &Baseline,
        now: SystemTime,
    ) -> Self {
        let mut i = Self::about(id, IncidentKind::ExecSession, ev, baseline, now);
        i.severity = Severity::Medium;
        i.severity_reason = "interactive session: a process was started into the container from \
                             outside it (kubectl exec), not by the workload or a probe"
            .into();
        i.record_session_event(event_id, ev, baseline, now);
        i
    }

    /// Adds one more process of the session; the severity stays what the session is (its
    /// deviations, if any, are incidents of their own).
    pub fn record_session_event(
        &mut self,
        event_id: &str,
        ev: &ProcessEvent,
        baseline: &Baseline,
        now: SystemTime,
    ) {
        let (severity, reason) = (self.severity, self.severity_reason.clone());
        let content = self.content.clone();
        self.record_deviation(event_id, ev, baseline, now);
        self.severity = severity;
        self.severity_reason = reason;
        // The session's verdict stays its first process's (set by the first event).
        if content.is_some() {
            self.content = content;
        }
    }

    /// A new sensor-blind incident for `node`.
    pub fn sensor_blind(id: String, node: &str, reason: String, now: SystemTime) -> Self {
        let mut nodes = BTreeSet::new();
        nodes.insert(node.to_string());
        Self {
            id,
            kind: IncidentKind::SensorBlind,
            workload: None,
            exe_path: String::new(),
            applet: String::new(),
            script_path: String::new(),
            severity: Severity::High,
            severity_reason: reason,
            content: None,
            state: IncidentState::Open,
            first_seen: now,
            last_seen: now,
            count: 1,
            nodes,
            pods: BTreeSet::new(),
            samples: Vec::new(),
            baseline_version: 0,
            origin: Origin::Unknown,
            sensor_node: node.to_string(),
            state_actor: String::new(),
            state_reason: String::new(),
            updated_at: now,
        }
    }

    /// Adds one more sensor finding; the reason is the latest one.
    pub fn record_blind(&mut self, reason: String, now: SystemTime) {
        self.count += 1;
        self.last_seen = self.last_seen.max(now);
        self.updated_at = now;
        self.severity_reason = reason;
    }

    /// Whether `action` is allowed now, and whether it would change anything; the incident is
    /// untouched. Repeating the action that led to the current state (acknowledging an
    /// acknowledged incident, resolving a resolved one, allowing an allowed one) is allowed
    /// and changes nothing: a retried or doubled request gets the same answer as the first.
    /// Any other action on a closed incident is refused.
    pub fn check(&self, action: Action) -> Result<Applied, TransitionError> {
        if self.state == action.target() {
            return Ok(Applied::Unchanged);
        }
        if !self.state.is_active() {
            return Err(TransitionError::Closed {
                id: self.id.clone(),
                state: self.state.as_str(),
            });
        }
        match action {
            Action::Allow if self.kind != IncidentKind::Deviation => {
                Err(TransitionError::NothingToAllow {
                    id: self.id.clone(),
                })
            }
            _ => Ok(Applied::Changed),
        }
    }

    /// Applies a person's action, recording who and why. A repeated action changes nothing
    /// (the first actor and reason stay) and returns [`Applied::Unchanged`].
    pub fn apply(
        &mut self,
        action: Action,
        actor: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<Applied, TransitionError> {
        if self.check(action)? == Applied::Unchanged {
            return Ok(Applied::Unchanged);
        }
        self.state = action.target();
        self.state_actor = actor.to_string();
        self.state_reason = reason.to_string();
        self.updated_at = now;
        Ok(Applied::Changed)
    }

    /// The baseline element this incident is about.
    pub fn element_key(&self) -> ElementKey {
        ElementKey {
            exe_path: self.exe_path.clone(),
            applet: self.applet.clone(),
            script_path: self.script_path.clone(),
        }
    }

    /// Adds this incident's element (executable, applet, script) to `baseline` as an
    /// approved element, with the incident's sightings as its provenance, and approves for it
    /// exactly the contents its samples ran with (nothing else: no other applet or script of
    /// the file, no future content), and from exactly the drift origins its samples ran from
    /// (a binary allowed from the writable layer is not allowed from a volume). Refused when
    /// that would change nothing: the element is already allowed and the samples bring no
    /// content and no origin to approve (they ran fileless, or unhashed), so what deviated
    /// cannot be allowed.
    pub fn allow_in(&self, baseline: &mut Baseline, now: SystemTime) -> Result<Allowed, String> {
        if self.kind != IncidentKind::Deviation {
            return Err(format!("incident {} has no executable to allow", self.id));
        }
        if self.workload.as_ref() != Some(&baseline.workload) {
            return Err(format!(
                "incident {} belongs to another workload than baseline {}",
                self.id, baseline.workload
            ));
        }
        let key = self.element_key();
        // An unidentified executable (the sensor could not read which file, applet or script
        // ran) names no element: allowing it would allow every exec left unidentified alike,
        // whatever it was.
        let unidentified = key.exe_path == crate::process::UNREADABLE_EXE
            || key.applet == crate::element::UNREADABLE
            || key.script_path == crate::element::UNREADABLE;
        if unidentified {
            return Err(format!(
                "incident {}: '{key}' is not an identified executable (the sensor could not \
                 read what ran); allowing it would allow every exec that goes unidentified the \
                 same way. Investigate the samples' process and pod, then resolve the incident; \
                 if the workload legitimately runs it, add the real element with 'procguardctl \
                 baselines add WORKLOAD --element PATH'",
                self.id
            ));
        }
        // What ran: the content of each sample that ran a file (a fileless sample has no file
        // at the path to pin).
        let ran: Vec<&str> = self
            .samples
            .iter()
            .map(|s| &s.process)
            .filter(|p| !p.fileless())
            .filter_map(|p| p.exe_sha256.as_deref())
            .collect();
        // Where it ran from: the drift origin of each sample that ran a file.
        let drift: BTreeSet<Origin> = self
            .samples
            .iter()
            .map(|s| &s.process)
            .filter(|p| !p.fileless())
            .filter_map(|p| p.drift())
            .collect();
        let existing = baseline.elements.get(&key);
        let new_origin = |e: &Element| drift.iter().any(|o| !e.origins.contains(o));
        if let Some(e) = existing.filter(|e| e.status.allowed() && !new_origin(e)) {
            if e.approved_sha256.is_empty() {
                return Err(format!(
                    "incident {}: '{key}' is already allowed by name alone (not pinned to any \
                     content); allowing would change nothing: resolve the incident, or pin the \
                     element to the contents you approve with 'procguardctl baselines add \
                     WORKLOAD --element \"{key}\" --sha256 HASH'",
                    self.id
                ));
            }
            if ran.iter().all(|h| e.approves(h)) {
                return Err(format!(
                    "incident {}: '{key}' is already allowed and its samples bring no content to \
                     approve (they ran from a memfd or a deleted file, or the sensor could not \
                     hash them: content unverified); allowing would change nothing: resolve \
                     the incident, or approve a content you know with 'procguardctl baselines \
                     add WORKLOAD --element \"{key}\" --sha256 HASH'",
                    self.id
                ));
            }
        }
        let new_element = existing.is_none();
        let sample = self.samples.first().map(|s| &s.process);
        let el = baseline
            .elements
            .entry(self.element_key())
            .or_insert_with(|| Element {
                status: ElementStatus::Approved,
                review_reasons: vec![],
                provenance: crate::baseline::Provenance {
                    first_seen: self.first_seen,
                    last_seen: self.last_seen,
                    count: self.count,
                    nodes: self.nodes.clone(),
                    pods: self.pods.clone(),
                    parents: sample
                        .and_then(|p| p.ancestors.first())
                        .map(|a| a.exe_path.clone())
                        .into_iter()
                        .collect(),
                    sample_argv: sample.map(|p| p.argv.clone()).unwrap_or_default(),
                    sha256: sample
                        .and_then(|p| p.exe_sha256.clone())
                        .into_iter()
                        .collect(),
                    image_digests: BTreeSet::new(),
                    contexts: sample
                        .map(|p| p.context)
                        .into_iter()
                        .collect::<BTreeSet<ExecContext>>(),
                },
                manual: true,
                approved_sha256: Vec::new(),
                origins: BTreeSet::new(),
            });
        el.status = ElementStatus::Approved;
        el.review_reasons.clear();
        // Exactly what ran is allowed: the contents and drift origins of the incident's
        // samples, never the element by name alone (a sample without a hash adds nothing, so an
        // element already pinned stays pinned). Their other origins (image, unknown) are
        // recorded for reviewers.
        for p in self.samples.iter().map(|s| &s.process) {
            if !p.fileless() && !p.origin.is_drift() {
                el.origins.insert(p.origin);
            }
        }
        let mut approved_origins = Vec::new();
        for o in &drift {
            if el.origins.insert(*o) {
                approved_origins.push(*o);
            }
        }
        let mut approved = Vec::new();
        for h in ran {
            if el.approve_content(h) {
                approved.push(h.to_string());
            }
        }
        baseline.updated_at = now;
        Ok(Allowed {
            element: key,
            new_element,
            approved_sha256: approved,
            pinned: !el.approved_sha256.is_empty(),
            approved_origins,
        })
    }

    /// Namespace of the workload; empty for sensor findings.
    pub fn namespace(&self) -> &str {
        self.workload
            .as_ref()
            .map(|w| w.namespace.as_str())
            .unwrap_or("")
    }
}

/// Filters for listing incidents.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// At least this severity.
    pub min_severity: Option<Severity>,
    /// Only this state.
    pub state: Option<IncidentState>,
    /// Only incidents last seen at or after this time.
    pub since: Option<SystemTime>,
    /// Only incidents last seen before this time.
    pub before: Option<SystemTime>,
}

impl IncidentFilter {
    /// Whether `i` passes.
    pub fn matches(&self, i: &Incident) -> bool {
        self.namespace.as_ref().is_none_or(|n| n == i.namespace())
            && self.min_severity.is_none_or(|s| i.severity >= s)
            && self.state.is_none_or(|s| s == i.state)
            && self.since.is_none_or(|t| i.last_seen >= t)
            && self.before.is_none_or(|t| i.last_seen < t)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::WorkloadKind;
    use crate::Matcher;
    use std::time::Duration;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn web() -> WorkloadIdentity {
        WorkloadIdentity::new("c", "shop", WorkloadKind::Deployment, "web", "nginx")
    }

    /// A full exec of `path` in the `web` Deployment's container (shared with other tests).
    pub(crate) fn exec(path: &str) -> ProcessEvent {
        ProcessEvent::test(path)
            .in_workload(&web())
            .context(ExecContext::Descendant)
            .on_node("n1")
    }

    /// A baseline in `state` whose allowed elements are `allowed`.
    fn baseline(state: BaselineState, allowed: &[&str]) -> Baseline {
        let mut b = Baseline::new(web(), t(0));
        for p in allowed {
            let mut ev = exec(p);
            ev.context = ExecContext::Entrypoint;
            b.observe(&ev, t(1), std::time::Duration::from_secs(600), 4_096);
        }
        b.state = state;
        b
    }

    /// One severity case: the event's path and flags, the baseline, and the expected outcome.
    fn check(ev: ProcessEvent, b: &Baseline, expected: Severity, reason_has: &str) {
        let (got, reason) = severity(&ev, b);
        assert_eq!(got, expected, "{} → {reason}", ev.exe_path);
        assert!(
            reason.contains(reason_has),
            "{}: reason '{reason}' lacks '{reason_has}'",
            ev.exe_path
        );
    }

    fn with(path: &str, f: impl FnOnce(&mut ProcessEvent)) -> ProcessEvent {
        let mut ev = exec(path);
        f(&mut ev);
        ev
    }

    #[test]
    fn severity_rules() {
        let enforced = baseline(BaselineState::Enforced, &["/usr/sbin/nginx"]);
        let pending = baseline(BaselineState::PendingReview, &["/usr/sbin/nginx"]);
        let shelly = baseline(BaselineState::Enforced, &["/bin/sh", "/usr/bin/python3"]);
        let memfd = with("memfd:x", |e| e.exe_memfd = true);
        let deleted = with("/app/old", |e| e.exe_deleted = true);
        // A script under /tmp run by the image's shell: a writable location, not drift.
        let tmp = with("/bin/sh", |e| {
            e.script_path = Some("/tmp/x.sh".into());
            e.exe_writable_location = true
        });
        let drift = |origin| {
            with("/tmp/x", |e| {
                e.origin = origin;
                e.exe_writable_location = true
            })
        };

        check(memfd.clone(), &enforced, Severity::Critical, "memfd");
        check(
            memfd.clone(),
            &enforced,
            Severity::Critical,
            "drift: fileless",
        );
        check(memfd, &pending, Severity::Critical, "memfd");
        check(deleted, &enforced, Severity::Critical, "deleted");
        check(tmp.clone(), &enforced, Severity::High, "writable");
        check(tmp, &pending, Severity::Low, "pending review");
        // Drift is high and names its origin, also while the baseline is pending review.
        for b in [&enforced, &pending] {
            check(
                drift(Origin::WritableLayer),
                b,
                Severity::High,
                "drift: executable from the container's writable layer",
            );
            check(
                drift(Origin::Volume),
                b,
                Severity::High,
                "drift: executable from a volume or host path",
            );
        }
        // Not drift: the unknown is a shell's ordinary rules, a host process's path too.
        let unknown = with("/usr/bin/id", |e| e.origin = Origin::Unknown);
        check(unknown, &enforced, Severity::Medium, "new executable");
        let host = with("/usr/bin/id", |e| {
            e.origin = Origin::Host;
            e.container = None
        });
        check(host, &enforced, Severity::Medium, "new executable");
        check(exec("/bin/sh"), &enforced, Severity::High, "shell");
        // An applet is classed by what it runs, not by the file.
        check(
            with("/bin/sleep", |e| e.applet = Some("wget".into())),
            &enforced,
            Severity::High,
            "network tool",
        );
        check(
            exec("/bin/bash"),
            &shelly,
            Severity::Medium,
            "already runs a shell",
        );
        check(
            exec("/usr/bin/python3.11"),
            &enforced,
            Severity::High,
            "interpreter",
        );
        check(
            exec("/usr/bin/perl"),
            &shelly,
            Severity::Medium,
            "interpreter",
        );
        check(
            exec("/usr/bin/curl"),
            &enforced,
            Severity::High,
            "network tool",
        );
        check(
            exec("/usr/bin/wget"),
            &shelly,
            Severity::High,
            "network tool",
        );
        check(
            exec("/usr/bin/id"),
            &enforced,
            Severity::Medium,
            "new executable",
        );
        check(
            exec("/usr/bin/curl"),
            &pending,
            Severity::Low,
            "pending review",
        );
        check(
            exec("/usr/bin/id"),
            &pending,
            Severity::Low,
            "pending review",
        );
        // A baseline cut off by the element limit gets no pending-review discount.
        let mut full = baseline(BaselineState::PendingReview, &["/usr/sbin/nginx"]);
        full.learning.element_limit = Some(crate::baseline::ElementLimit {
            limit: 1,
            reached_at: t(2),
            refused: 1,
        });
        check(exec("/usr/bin/curl"), &full, Severity::High, "network tool");
        check(
            exec("/usr/bin/id"),
            &full,
            Severity::Medium,
            "new executable",
        );
    }

    #[test]
    fn an_incident_carries_its_most_telling_origin_and_allowing_it_approves_that_origin() {
        let mut b = baseline(BaselineState::Enforced, &["/usr/sbin/nginx"]);
        let image = exec("/app/tool");
        let mut dropped = exec("/app/tool");
        dropped.origin = Origin::WritableLayer;
        dropped.exe_sha256 = Some("b".repeat(64));
        let mut i = Incident::from_deviation("1".into(), "e1", &image, &b, t(2));
        assert_eq!(i.origin, Origin::Image);
        i.record_deviation("e2", &dropped, &b, t(3));
        assert_eq!(i.origin, Origin::WritableLayer, "drift is never hidden");
        assert_eq!(i.severity, Severity::High);
        i.record_deviation("e3", &image, &b, t(4));
        assert_eq!(i.origin, Origin::WritableLayer);
        i.allow_in(&mut b, t(5)).unwrap();
        let el = &b.elements[&ElementKey::exe("/app/tool")];
        assert!(el.origins.contains(&Origin::WritableLayer), "{el:?}");
        assert!(el.approves(&"b".repeat(64)));
        assert_eq!(
            b.observe(&dropped, t(6), std::time::Duration::from_secs(600), 4_096),
            crate::baseline::Observation::Known
        );
        // Another origin of the same element is still drift nobody approved.
        let mut volume = dropped.clone();
        volume.origin = Origin::Volume;
        assert_eq!(
            b.observe(&volume, t(7), std::time::Duration::from_secs(600), 4_096),
            crate::baseline::Observation::Deviation
        );
    }

    #[test]
    fn a_rejected_tool_does_not_count_as_the_workload_running_one() {
        let mut b = baseline(BaselineState::Enforced, &["/usr/sbin/nginx", "/bin/sh"]);
        b.elements
            .get_mut(&ElementKey::exe("/bin/sh"))
            .unwrap()
            .status = ElementStatus::Rejected;
        check(exec("/bin/bash"), &b, Severity::High, "shell");
    }

    #[test]
    fn tool_classes() {
        for (path, class) in [
            ("/bin/sh", Some("shell")),
            ("/usr/bin/python3.12", Some("interpreter")),
            ("/usr/local/bin/node", Some("interpreter")),
            ("/usr/bin/nc", Some("network tool")),
            ("/usr/bin/nc.openbsd", Some("network tool")),
            ("/usr/sbin/nginx", None),
            ("/app/server2", None),
        ] {
            assert_eq!(tool_class(path), class, "{path}");
        }
    }

    /// A sample keeps at most [`SAMPLE_ARGV_BYTES`] of argv, marked truncated; a short argv
    /// is kept whole and unmarked.
    #[test]
    fn samples_keep_a_bounded_argv() {
        let b = baseline(BaselineState::Enforced, &["/usr/sbin/nginx"]);
        let mut long = exec("/usr/bin/id");
        long.argv = vec!["/usr/bin/id".into(), "x".repeat(40_000), "y".repeat(20_000)];
        let i = Incident::from_deviation("1".into(), "e0", &long, &b, t(10));
        let kept = &i.samples[0].process;
        assert!(kept.argv_truncated);
        assert!(kept.argv.iter().map(String::len).sum::<usize>() <= SAMPLE_ARGV_BYTES + 3);
        assert_eq!(kept.argv[0], "/usr/bin/id");
        let short = exec("/usr/bin/id");
        let i = Incident::from_deviation("2".into(), "e1", &short, &b, t(10));
        assert_eq!(i.samples[0].process.argv, short.argv);
        assert!(!i.samples[0].process.argv_truncated);
    }

    #[test]
    fn grouping_counts_and_caps() {
        let b = baseline(BaselineState::Enforced, &["/usr/sbin/nginx"]);
        let ev = exec("/usr/bin/id");
        let mut i = Incident::from_deviation("1".into(), "e0", &ev, &b, t(10));
        for n in 1..1000u64 {
            let mut ev = ev.clone();
            ev.node_name = format!("n{}", n % 40);
            ev.container.as_mut().unwrap().pod_name = Some(format!("web-{n}"));
            i.record_deviation(&format!("e{n}"), &ev, &b, t(10 + n));
        }
        assert_eq!(i.count, 1000);
        assert_eq!(i.first_seen, t(10));
        assert_eq!(i.last_seen, t(1009));
        assert_eq!(i.nodes.len(), PLACES_CAP);
        assert_eq!(i.pods.len(), PLACES_CAP);
        assert_eq!(i.samples.len(), SAMPLES_CAP);
        assert_eq!(i.samples[0].event_id, "e0");
        assert_eq!(i.samples[SAMPLES_CAP - 1].event_id, "e999");
        let key = |exe: &str, applet: &str, script: &str| ElementKey {
            exe_path: exe.into(),
            applet: applet.into(),
            script_path: script.into(),
        };
        assert_eq!(
            group_key(&web(), &key("/usr/bin/id", "", "")),
            group_key(&ev.workload, &ElementKey::of(&ev))
        );
        assert_ne!(
            group_key(&web(), &key("/usr/bin/python3", "", "/a.py")),
            group_key(&web(), &key("/usr/bin/python3", "", "/b.py"))
        );
        // Applets of one multi-call binary are separate incidents.
        assert_ne!(
            group_key(&web(), &key("/bin/busybox", "wget", "")),
            group_key(&web(), &key("/bin/busybox", "id", ""))
        );
    }

    #[test]
    fn severity_only_rises() {
        let b = baseline(BaselineState::Enforced, &["/usr/sbin/nginx"]);
        let mut i = Incident::from_deviation("1".into(), "e0", &exec("/app/x"), &b, t(1));
        assert_eq!(i.severity, Severity::Medium);
        i.record_deviation("e1", &with("/app/x", |e| e.exe_deleted = true), &b, t(2));
        assert_eq!(i.severity, Severity::Critical);
        i.record_deviation("e2", &exec("/app/x"), &b, t(3));
        assert_eq!(i.severity, Severity::Critical);
        assert!(i.severity_reason.contains("deleted"));
    }

    /// One lifecycle case: actions applied in order, and the expected end state or error.
    fn lifecycle(kind: IncidentKind, actions: &[Action], expected: Result<IncidentState, &str>) {
        let b = baseline(BaselineState::Enforced, &["/usr/sbin/nginx"]);
        let mut i = match kind {
            IncidentKind::Deviation => {
                Incident::from_deviation("7".into(), "e", &exec("/usr/bin/id"), &b, t(1))
            }
            IncidentKind::SensorBlind => Incident::sensor_blind("7".into(), "n1", "x".into(), t(1)),
            IncidentKind::ExecSession => {
                Incident::exec_session("7".into(), "e", &exec("/bin/sh"), &b, t(1))
            }
            IncidentKind::DeviationOverflow => {
                Incident::overflow("7".into(), "e", &exec("/tmp/x"), &b, t(1), 1000)
            }
        };
        let mut result = Ok(Applied::Changed);
        for a in actions {
            result = i.apply(*a, "alice", "because", t(2));
            if result.is_err() {
                break;
            }
        }
        let result = result.map(|_| ());
        match expected {
            Ok(state) => {
                assert_eq!(result, Ok(()), "{actions:?}");
                assert_eq!(i.state, state, "{actions:?}");
                assert_eq!(i.state_actor, "alice");
            }
            Err(text) => {
                let e = result.expect_err("should be refused").to_string();
                assert!(e.contains(text), "{actions:?}: '{e}' lacks '{text}'");
            }
        }
    }

    #[test]
    fn lifecycle_rules() {
        use Action::*;
        use IncidentKind::*;
        use IncidentState as S;
        lifecycle(Deviation, &[Acknowledge], Ok(S::Acknowledged));
        lifecycle(Deviation, &[Acknowledge, Resolve], Ok(S::Resolved));
        lifecycle(Deviation, &[Resolve], Ok(S::Resolved));
        lifecycle(Deviation, &[Acknowledge, Allow], Ok(S::Allowed));
        lifecycle(Deviation, &[Allow], Ok(S::Allowed));
        // Repeating the action that led to the state is a success that changes nothing.
        lifecycle(Deviation, &[Acknowledge, Acknowledge], Ok(S::Acknowledged));
        lifecycle(Deviation, &[Resolve, Resolve], Ok(S::Resolved));
        lifecycle(Deviation, &[Allow, Allow], Ok(S::Allowed));
        lifecycle(Deviation, &[Resolve, Acknowledge], Err("already resolved"));
        lifecycle(Deviation, &[Allow, Resolve], Err("already allowed"));
        lifecycle(Deviation, &[Resolve, Allow], Err("already resolved"));
        lifecycle(SensorBlind, &[Allow], Err("resolve it instead"));
        lifecycle(SensorBlind, &[Acknowledge, Resolve], Ok(S::Resolved));
        // A session is acknowledged or resolved; there is nothing to allow.
        lifecycle(ExecSession, &[Acknowledge, Resolve], Ok(S::Resolved));
        lifecycle(ExecSession, &[Allow], Err("resolve it instead"));
        // An overflow counts many executables: none of them is allowed through it.
        lifecycle(DeviationOverflow, &[Allow], Err("no single executable"));
        lifecycle(DeviationOverflow, &[Acknowledge, Resolve], Ok(S::Resolved));
    }

    /// An overflow incident names no executable of its own: each of its samples names what
    /// ran. Its severity is at least high and rises with its events; allowing it is refused,
    /// in the domain as at the lifecycle check, so no baseline gains an empty element.
    #[test]
    fn an_overflow_counts_any_executable_names_none_and_allows_nothing() {
        let mut b = baseline(BaselineState::Enforced, &["/usr/sbin/nginx"]);
        let mut i = Incident::overflow("9".into(), "e0", &exec("/tmp/a"), &b, t(1), 3);
        assert_eq!(
            (i.kind, i.severity, i.count, i.exe_path.as_str()),
            (IncidentKind::DeviationOverflow, Severity::High, 1, "")
        );
        assert!(
            i.severity_reason.contains("3 deviation incidents"),
            "{}",
            i.severity_reason
        );
        i.record_deviation("e1", &exec("/tmp/b"), &b, t(2));
        i.record_deviation("e2", &with("memfd:c", |e| e.exe_memfd = true), &b, t(3));
        assert_eq!((i.count, i.severity), (3, Severity::Critical));
        let ran: Vec<&str> = i
            .samples
            .iter()
            .map(|s| s.process.exe_path.as_str())
            .collect();
        assert_eq!(ran, ["/tmp/a", "/tmp/b", "memfd:c"]);
        let before = b.clone();
        assert!(i.allow_in(&mut b, t(4)).is_err());
        assert_eq!(b, before);
        assert_ne!(
            overflow_key(&web()),
            group_key(&web(), &ElementKey::of(&exec("")))
        );
    }

    #[test]
    fn an_exec_session_is_one_medium_incident_whatever_it_runs() {
        let b = baseline(BaselineState::Enforced, &["/bin/sh", "/usr/bin/id"]);
        let mut i = Incident::exec_session("9".into(), "e0", &exec("/bin/sh"), &b, t(1));
        assert_eq!(
            (i.kind, i.severity, i.count),
            (IncidentKind::ExecSession, Severity::Medium, 1)
        );
        assert!(i.severity_reason.contains("interactive session"));
        // A memfd run in the session is its own (critical) deviation; the session stays medium.
        i.record_session_event("e1", &with("memfd:x", |e| e.exe_memfd = true), &b, t(2));
        assert_eq!((i.severity, i.count), (Severity::Medium, 2));
        assert_ne!(
            session_key(&web(), "n1/10/1"),
            session_key(&web(), "n1/11/1")
        );
    }

    #[test]
    fn a_repeated_action_keeps_the_first_actor_and_reports_no_change() {
        let b = baseline(BaselineState::Enforced, &["/usr/sbin/nginx"]);
        let mut i = Incident::from_deviation("7".into(), "e", &exec("/usr/bin/id"), &b, t(1));
        assert_eq!(
            i.apply(Action::Resolve, "alice", "first", t(2)),
            Ok(Applied::Changed)
        );
        let before = i.clone();
        assert_eq!(
            i.apply(Action::Resolve, "bob", "second", t(3)),
            Ok(Applied::Unchanged)
        );
        assert_eq!(i, before);
        assert_eq!(i.check(Action::Resolve), Ok(Applied::Unchanged));
    }

    #[test]
    fn allowing_adds_an_approved_element_with_provenance() {
        let mut b = baseline(BaselineState::Enforced, &["/usr/sbin/nginx"]);
        let i = Incident::from_deviation("1".into(), "e", &exec("/usr/bin/id"), &b, t(5));
        i.allow_in(&mut b, t(6)).unwrap();
        assert!(b.allows(&ElementKey::exe("/usr/bin/id")));
        let el = &b.elements[&ElementKey::exe("/usr/bin/id")];
        assert!(el.manual);
        assert!(el.provenance.nodes.contains("n1"));
        let other = Baseline::new(
            WorkloadIdentity::new("c", "shop", WorkloadKind::Deployment, "db", "pg"),
            t(0),
        );
        let mut other = other;
        assert!(i.allow_in(&mut other, t(6)).is_err());
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    /// `/bin/toybox` run as applet `applet` with content `sha`.
    fn applet(applet: &str, sha: Option<&str>) -> ProcessEvent {
        with("/bin/toybox", |e| {
            e.applet = (!applet.is_empty()).then(|| applet.to_string());
            e.exe_sha256 = sha.map(str::to_string);
        })
    }

    /// An enforced baseline that allows `/bin/toybox (sleep)` with content A.
    fn pinned_sleep() -> Baseline {
        let mut b = Baseline::new(web(), t(0));
        b.observe(
            &applet("sleep", Some(A)),
            t(1),
            Duration::from_secs(600),
            4_096,
        );
        b.approve(None, t(2));
        b
    }

    #[test]
    fn an_incident_and_each_sample_carry_their_content_verdict() {
        let b = pinned_sleep();
        let mut i = Incident::from_deviation("1".into(), "e0", &applet("sleep", None), &b, t(3));
        let first = i.content.clone().unwrap();
        assert_eq!(first.verdict, ContentVerdict::Unverified);
        assert_eq!(
            (first.sha256, first.approved_sha256),
            (None, vec![A.to_string()])
        );
        // A modified content raises the severity, and the incident's verdict with it.
        i.record_deviation("e1", &applet("sleep", Some(B)), &b, t(4));
        let modified = i.content.clone().unwrap();
        assert_eq!(i.severity, Severity::High);
        assert_eq!(modified.verdict, ContentVerdict::Modified);
        assert_eq!(modified.sha256.as_deref(), Some(B));
        // A later, lower one does not replace it; its sample keeps its own.
        i.record_deviation("e2", &applet("sleep", None), &b, t(5));
        assert_eq!(i.content, Some(modified.clone()));
        // Nor does one of higher severity that says less against the content: the allowed
        // binary run deleted (critical) is `approved`; the incident stays `modified`.
        let mut deleted = applet("sleep", Some(A));
        deleted.exe_deleted = true;
        i.record_deviation("e3", &deleted, &b, t(6));
        assert_eq!(i.severity, Severity::Critical);
        assert_eq!(i.content, Some(modified));
        // The other way round: the incident that starts with the deleted run ends `modified`.
        let mut j = Incident::from_deviation("5".into(), "e", &deleted, &b, t(3));
        assert_eq!(
            j.content.as_ref().unwrap().verdict,
            ContentVerdict::Approved
        );
        j.record_deviation("e1", &applet("sleep", Some(B)), &b, t(4));
        assert_eq!(
            j.content.as_ref().unwrap().verdict,
            ContentVerdict::Modified
        );
        let verdicts: Vec<ContentVerdict> = i
            .samples
            .iter()
            .map(|s| s.content.as_ref().unwrap().verdict)
            .collect();
        use ContentVerdict::*;
        assert_eq!(verdicts, vec![Unverified, Modified, Unverified, Approved]);
        // Another applet of the allowed file is a new element.
        let other = Incident::from_deviation("2".into(), "e", &applet("wget", Some(A)), &b, t(3));
        assert_eq!(other.content.unwrap().verdict, NewElement);
        // A sensor finding has none; a session keeps its first process's.
        assert_eq!(
            Incident::sensor_blind("3".into(), "n1", "x".into(), t(1)).content,
            None
        );
        let mut s = Incident::exec_session("4".into(), "e", &applet("sleep", Some(A)), &b, t(1));
        s.record_session_event("e1", &applet("sleep", Some(B)), &b, t(2));
        assert_eq!(s.content.unwrap().verdict, Approved);
        assert_eq!(s.samples[1].content.as_ref().unwrap().verdict, Modified);
    }

    #[test]
    fn allowing_approves_exactly_the_identity_that_ran() {
        // A modified applet: exactly its content, for exactly that applet.
        let mut b = pinned_sleep();
        let i = Incident::from_deviation("1".into(), "e", &applet("sleep", Some(B)), &b, t(3));
        let allowed = i.allow_in(&mut b, t(4)).unwrap();
        assert_eq!(allowed.approved_sha256, vec![B.to_string()]);
        assert!(!allowed.new_element);
        assert_eq!(
            allowed.to_string(),
            format!("allowed /bin/toybox (sleep): content sha256 {B}")
        );
        let m = Matcher::new([&b]);
        let verdict = |ev: &ProcessEvent| m.check(ev, t(5));
        use crate::baseline::Verdict;
        assert_eq!(verdict(&applet("sleep", Some(B))), Verdict::Allowed);
        assert_eq!(verdict(&applet("sleep", Some(C))), Verdict::Deviation);
        // A new applet: that applet, pinned to what ran; the file's other applets still deviate.
        let i = Incident::from_deviation("2".into(), "e", &applet("wget", Some(A)), &b, t(3));
        let allowed = i.allow_in(&mut b, t(4)).unwrap();
        assert!(allowed.new_element, "{allowed}");
        let m = Matcher::new([&b]);
        assert_eq!(m.check(&applet("wget", Some(A)), t(5)), Verdict::Allowed);
        assert_eq!(m.check(&applet("wget", Some(C)), t(5)), Verdict::Deviation);
        assert_eq!(m.check(&applet("nc", Some(A)), t(5)), Verdict::Deviation);
        assert_eq!(m.check(&applet("", Some(A)), t(5)), Verdict::Deviation);
    }

    #[test]
    fn allowing_what_cannot_be_allowed_is_refused_and_changes_nothing() {
        // Unhashed, and fileless, runs of an allowed element: no content to approve.
        let mut b = pinned_sleep();
        let before = b.clone();
        for ev in [
            applet("sleep", None),
            with("/bin/toybox", |e| {
                e.applet = Some("sleep".into());
                e.exe_sha256 = Some(B.into());
                e.exe_deleted = true;
            }),
        ] {
            let i = Incident::from_deviation("1".into(), "e", &ev, &b, t(3));
            let e = i.allow_in(&mut b, t(4)).unwrap_err();
            assert!(e.contains("allowing would change nothing"), "{e}");
            assert!(e.contains("--sha256"), "{e}");
            assert_eq!(b, before);
        }
        // An element allowed by name alone meanwhile: nothing to allow either.
        let mut by_name = pinned_sleep();
        by_name
            .elements
            .get_mut(&ElementKey::of(&applet("sleep", None)))
            .unwrap()
            .approved_sha256
            .clear();
        let i = Incident::from_deviation("1".into(), "e", &applet("sleep", Some(B)), &b, t(3));
        let e = i.allow_in(&mut by_name, t(4)).unwrap_err();
        assert!(e.contains("already allowed by name alone"), "{e}");
        // A new element seen only unhashed is allowed by name alone, and says so.
        let i = Incident::from_deviation("2".into(), "e", &applet("id", None), &b, t(3));
        let allowed = i.allow_in(&mut b, t(4)).unwrap();
        assert!(!allowed.pinned);
        assert!(allowed
            .to_string()
            .ends_with("by name alone (no sample was hashed)"));
    }

    #[test]
    fn an_unidentified_executable_is_never_allowed() {
        let mut b = pinned_sleep();
        let before = b.clone();
        let unreadable_exe = with(crate::process::UNREADABLE_EXE, |_| {});
        let unread_applet = with("/bin/toybox", |e| {
            e.applet = Some(crate::element::UNREADABLE.into());
            e.missing = vec!["applet".into()];
        });
        let unread_script = with("/bin/sh", |e| {
            e.script_path = Some(crate::element::UNREADABLE.into());
            e.missing = vec!["script".into()];
        });
        for ev in [unreadable_exe, unread_applet, unread_script] {
            let i = Incident::from_deviation("7".into(), "e", &ev, &b, t(3));
            let e = i.allow_in(&mut b, t(4)).unwrap_err();
            assert!(e.contains("not an identified executable"), "{e}");
            assert!(e.contains("baselines add"), "{e}");
            assert_eq!(b, before);
        }
    }

    #[test]
    fn filters() {
        let b = baseline(BaselineState::Enforced, &["/usr/sbin/nginx"]);
        let i = Incident::from_deviation("1".into(), "e", &exec("/bin/sh"), &b, t(1));
        let f = |ns: Option<&str>, sev: Option<Severity>, st: Option<IncidentState>| {
            IncidentFilter {
                namespace: ns.map(str::to_string),
                min_severity: sev,
                state: st,
                ..Default::default()
            }
            .matches(&i)
        };
        // Last seen at t(1): since is inclusive, before exclusive.
        let when = |since: Option<u64>, before: Option<u64>| {
            IncidentFilter {
                since: since.map(t),
                before: before.map(t),
                ..Default::default()
            }
            .matches(&i)
        };
        assert!(when(Some(1), None) && !when(Some(2), None));
        assert!(when(None, Some(2)) && !when(None, Some(1)));
        assert!(when(Some(0), Some(5)));
        assert!(f(None, None, None));
        assert!(f(
            Some("shop"),
            Some(Severity::High),
            Some(IncidentState::Open)
        ));
        assert!(!f(Some("other"), None, None));
        assert!(!f(None, Some(Severity::Critical), None));
        assert!(!f(None, None, Some(IncidentState::Resolved)));
    }
}
