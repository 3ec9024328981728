//! Baselines: the set of executables a workload container runs, how it is learned, and how an
//! exec is matched against it.
//!
//! A baseline is keyed by [`WorkloadIdentity`] and holds [`Element`]s keyed by
//! [`ElementKey`] (executable path, plus script path for interpreters). While
//! [`BaselineState::Learning`], new executables join it; elements that look like drift
//! (memfd, deleted binary, writable location, exec session, a shell in a workload that never
//! started one) join as [`ElementStatus::NeedsReview`] so an attacker present during training
//! is not trusted by default. After learning, anything outside the allowed elements is a
//! deviation, whatever the state: a pending baseline still alerts (with low severity), so a
//! baseline can never end up silently never alerting.
//!
//! **Element limit.** A baseline holds at most the server's `--max-baseline-elements`. A
//! workload that runs endless distinct executables while learning (a build job, or an attacker
//! present during training) does not grow its baseline past it: the executable that would
//! exceed the limit is [`Observation::Refused`], learning ends at once with reason
//! `element-limit` and the baseline waits for review ([`BaselineState::PendingReview`], never
//! auto-enforced, whatever the policy), and [`LearningSummary::element_limit`] records when and
//! at which limit. A refused executable is a deviation, never silently allowed; so is every
//! later executable outside the baseline, and each is counted in
//! [`ElementLimit::refused`] until a person approves or resets the baseline. The limit also
//! closes an image change's re-learning window. Pending-review deviations usually have low
//! severity; a baseline cut off by the limit does not get that discount (see
//! [`crate::incident::severity`]), since flooding the learner is exactly what an attacker would
//! try.
//!
//! **Content identity.** An element is also the content it ran with: each keeps its approved
//! sha256 values ([`Element::approved_sha256`], at most [`APPROVED_SHA256_CAP`], the oldest
//! forgotten first). Past learning, an allowed element run with another content is a
//! deviation ("modified executable"), and one the sensor could not hash is too ("content
//! unverified"); the only content learned past learning is that of a file from the image
//! ([`from_image`]) inside a new image digest's re-learning window. [`content_of`] is the one
//! rule; [`Baseline::observe`] (server) and [`Matcher::check`] (sensor) both apply it.
//!
//! **Origin and drift.** Every exec carries its executable's [`Origin`]; in a container, an
//! executable that did not come from the image (writable layer, volume, fileless) is drift
//! ([`ProcessEvent::drift`]). Drift is never learned automatically: during training a new
//! element that is drift waits for review (`drift-<origin>`), an allowed element's content
//! or origin is never learned from a drift exec, and in an image change's re-learning window
//! drift is a deviation. Each element keeps the origins it may run from
//! ([`Element::origins`]): those it ran from while learning, but a drift origin only for an
//! element held for review (so approving it approves what a person saw), or added by a person
//! (import, allowing an incident). Past learning an allowed element run from a drift origin
//! it does not hold is a deviation ([`Element::allows_origin`]); a fileless one always is.
//! `unknown` is not drift. Both sides apply it: [`Baseline::observe`] and [`Matcher::check`].

use crate::identity::WorkloadIdentity;
use crate::process::{ExecContext, Origin, ProcessEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

/// How many distinct values each provenance set keeps; reviewers need a sample, not a log.
pub const PROVENANCE_CAP: usize = 16;

/// How many image digests a baseline remembers as images its workload runs (a new one while
/// enforced opens a re-learning window).
pub const IMAGE_DIGESTS_CAP: usize = 64;

/// Lifecycle of a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineState {
    /// New executables join the baseline.
    Learning,
    /// Learning ended; awaiting approval. Deviations are reported with low severity.
    PendingReview,
    /// Approved or auto-enforced.
    Enforced,
}

impl BaselineState {
    /// Lowercase name for tables and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Learning => "learning",
            Self::PendingReview => "pending-review",
            Self::Enforced => "enforced",
        }
    }
}

/// Review status of one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ElementStatus {
    /// Learned, not yet reviewed; allowed.
    Learned,
    /// Approved; allowed.
    Approved,
    /// Looks like drift; not allowed until approved.
    NeedsReview,
    /// Rejected; never allowed.
    Rejected,
}

impl ElementStatus {
    /// Lowercase name for tables (`learned`, `approved`, `needs-review`, `rejected`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Learned => "learned",
            Self::Approved => "approved",
            Self::NeedsReview => "needs-review",
            Self::Rejected => "rejected",
        }
    }

    /// Whether running this element is allowed (does not raise a deviation).
    pub fn allowed(self) -> bool {
        matches!(self, Self::Learned | Self::Approved)
    }
}

/// Names one element: what actually ran. The executable, the applet of a multi-call binary,
/// and the script (or inline code, or loaded program) of an interpreter, shell or loader
/// (see [`crate::element`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ElementKey {
    /// Executable path inside the container.
    pub exe_path: String,
    /// Applet of a multi-call binary, or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub applet: String,
    /// Script path, `[inline]`, `-m MODULE` or loaded program; or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub script_path: String,
}

impl ElementKey {
    /// Key of an executable with no script.
    pub fn exe(path: impl Into<String>) -> Self {
        Self {
            exe_path: path.into(),
            applet: String::new(),
            script_path: String::new(),
        }
    }

    /// The element a process event runs.
    pub fn of(ev: &ProcessEvent) -> Self {
        Self {
            exe_path: ev.exe_path.clone(),
            applet: ev.applet.clone().unwrap_or_default(),
            script_path: ev.script_path.clone().unwrap_or_default(),
        }
    }
}

/// Read back from [`ElementKey`]'s text form (`EXE`, `EXE (APPLET)`, `EXE SCRIPT`,
/// `EXE (APPLET) SCRIPT`): the executable is the first word, an applet in parentheses may
/// follow, and the rest is the script (which may contain spaces: `-m http.server`).
impl std::str::FromStr for ElementKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (exe, rest) = s.split_once(' ').unwrap_or((s, ""));
        if exe.is_empty() {
            return Err("an element names an executable: EXE [(APPLET)] [SCRIPT]".into());
        }
        let rest = rest.trim_start();
        let (applet, script) = match rest.strip_prefix('(') {
            Some(r) => {
                let (a, tail) = r.split_once(')').ok_or_else(|| {
                    format!(
                        "'{s}': an applet is written in parentheses, e.g. '/bin/busybox (wget)'"
                    )
                })?;
                (a.trim().to_string(), tail.trim().to_string())
            }
            None => (String::new(), rest.trim().to_string()),
        };
        Ok(Self {
            exe_path: exe.to_string(),
            applet,
            script_path: script,
        })
    }
}

/// Shown as `EXE`, `EXE (APPLET)`, `EXE SCRIPT` or `EXE (APPLET) SCRIPT`.
impl std::fmt::Display for ElementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.exe_path)?;
        if !self.applet.is_empty() {
            write!(f, " ({})", self.applet)?;
        }
        if !self.script_path.is_empty() {
            write!(f, " {}", self.script_path)?;
        }
        Ok(())
    }
}

/// Where an element was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// First sighting.
    pub first_seen: SystemTime,
    /// Last sighting.
    pub last_seen: SystemTime,
    /// Sightings.
    pub count: u64,
    /// Nodes (capped at [`PROVENANCE_CAP`]).
    pub nodes: BTreeSet<String>,
    /// Pods (capped).
    pub pods: BTreeSet<String>,
    /// Parent executables (capped).
    pub parents: BTreeSet<String>,
    /// One sample argv.
    pub sample_argv: Vec<String>,
    /// sha256 values (capped).
    pub sha256: BTreeSet<String>,
    /// Image digests (capped).
    pub image_digests: BTreeSet<String>,
    /// Contexts it ran in.
    pub contexts: BTreeSet<ExecContext>,
}

impl Provenance {
    /// Provenance of an element nobody has seen run yet (added by hand or imported).
    pub fn new(now: SystemTime) -> Self {
        Self {
            first_seen: now,
            last_seen: now,
            count: 0,
            nodes: BTreeSet::new(),
            pods: BTreeSet::new(),
            parents: BTreeSet::new(),
            sample_argv: Vec::new(),
            sha256: BTreeSet::new(),
            image_digests: BTreeSet::new(),
            contexts: BTreeSet::new(),
        }
    }

    /// The placeholder of a provenance kept apart from its element by a store: nothing seen,
    /// at the epoch (a real provenance is never at the epoch: it starts at the time it was
    /// created). Not serialised, so a definition without provenance stays small.
    pub fn apart() -> Self {
        Self::new(std::time::UNIX_EPOCH)
    }

    /// Whether this is [`Provenance::apart`].
    pub fn is_apart(&self) -> bool {
        self.count == 0
            && self.first_seen == std::time::UNIX_EPOCH
            && self.last_seen == std::time::UNIX_EPOCH
            && *self == Self::apart()
    }

    /// Records `times` sightings of `ev` at `now` (times > 1: a sensor's summary of repeats
    /// that differ only in what provenance does not keep, [`crate::ingest::SummaryKey`]).
    fn record(&mut self, ev: &ProcessEvent, now: SystemTime, times: u64) {
        fn add(set: &mut BTreeSet<String>, v: &str) {
            if !v.is_empty() && set.len() < PROVENANCE_CAP {
                set.insert(bounded(v, PROVENANCE_VALUE_BYTES));
            }
        }
        self.count += times;
        self.last_seen = self.last_seen.max(now);
        self.first_seen = self.first_seen.min(now);
        add(&mut self.nodes, &ev.node_name);
        if let Some(c) = &ev.container {
            add(
                &mut self.pods,
                c.pod_name.as_deref().unwrap_or(&c.container_id),
            );
            add(
                &mut self.image_digests,
                c.image_digest.as_deref().unwrap_or(""),
            );
        }
        if let Some(parent) = ev.ancestors.first() {
            add(&mut self.parents, &parent.exe_path);
        }
        if self.sample_argv.is_empty() {
            self.sample_argv = sample_argv(&ev.argv);
        }
        add(&mut self.sha256, ev.exe_sha256.as_deref().unwrap_or(""));
        self.contexts.insert(ev.context);
    }
}

/// Most bytes of one provenance value (a node, pod, parent path, hash or digest); longer ones
/// are cut, marked with a trailing `…`. Provenance says where an element was seen; it is no
/// place for a client to store megabytes.
pub const PROVENANCE_VALUE_BYTES: usize = 256;

/// Most bytes of an element's sample argv (all arguments together); arguments past it are
/// dropped and the last one kept is cut, marked with a trailing `…`.
pub const SAMPLE_ARGV_BYTES: usize = 2048;

use crate::text::bounded;

/// A sample argv within [`SAMPLE_ARGV_BYTES`].
fn sample_argv(argv: &[String]) -> Vec<String> {
    argv_within(argv, SAMPLE_ARGV_BYTES)
}

/// The first arguments of `argv` that fit in `max` bytes together, the last one kept cut and
/// marked `…`.
pub(crate) fn argv_within(argv: &[String], max: usize) -> Vec<String> {
    let mut left = max;
    let mut out = Vec::new();
    for a in argv {
        let kept = bounded(a, left);
        if kept.is_empty() && !a.is_empty() {
            break;
        }
        left = left.saturating_sub(kept.len().max(1));
        out.push(kept);
    }
    out
}

/// How many approved content hashes one element keeps ([`Element::approved_sha256`]).
pub const APPROVED_SHA256_CAP: usize = 16;

/// One element of a baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Element {
    /// Review status.
    pub status: ElementStatus,
    /// Why it needs review.
    pub review_reasons: Vec<String>,
    /// Where it was seen. Changes on every sighting, without a version: a store may keep it
    /// apart from the element's definition (the sled engine does, so that a batch of sightings
    /// writes only the provenance it changed), and then writes [`Provenance::apart`] in its
    /// place, which is not serialised.
    #[serde(
        default = "Provenance::apart",
        skip_serializing_if = "Provenance::is_apart"
    )]
    pub provenance: Provenance,
    /// Added by hand.
    pub manual: bool,
    /// The contents (lowercase hex sha256) this element may run with, oldest first, at most
    /// [`APPROVED_SHA256_CAP`]: learned while the baseline learned (files from the image, or
    /// the first content of a new element), learned in an image change's re-learning window
    /// (files from the image only), added by a person or by allowing an incident. Empty means
    /// the element is not pinned to any content (it was only ever seen unhashed, added by
    /// name, or stored before content identity existed) and is matched by name alone. See
    /// [`content_of`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_sha256: Vec<String>,
    /// The origins this element may run from: those it ran from while the baseline learned
    /// (a drift origin only while the element waits for review), and those a person approved
    /// (import, allowing an incident). Past learning an exec of it from a drift origin not in
    /// this set is a deviation; non-drift origins (`image`, `unknown`, `host`) are recorded
    /// for reviewers and never refuse an exec. Empty for elements stored before origins, added
    /// by name, or imported without them: such an element runs from no drift origin.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub origins: BTreeSet<Origin>,
}

impl Element {
    /// Whether an exec of this element from `origin` may be allowed by it: any non-drift
    /// origin, and a drift origin this element holds (a person approved it). A fileless exec
    /// never matches an element, whatever this says (see [`Matcher::check`]).
    pub fn allows_origin(&self, origin: Origin) -> bool {
        !origin.is_drift() || self.origins.contains(&origin)
    }

    /// Records the origin `ev` ran from, as learning does: a non-drift origin always, a drift
    /// one only while the element is not allowed (held for review: approving it then approves
    /// the origin a person saw). Returns whether the set changed.
    pub fn learn_origin(&mut self, ev: &ProcessEvent) -> bool {
        let origin = ev.drift().unwrap_or(ev.origin);
        if origin.is_drift() && self.status.allowed() {
            return false;
        }
        self.origins.insert(origin)
    }

    /// Whether `sha256` is an approved content of this element.
    pub fn approves(&self, sha256: &str) -> bool {
        self.approved_sha256.iter().any(|h| h == sha256)
    }

    /// Adds an approved content. Past [`APPROVED_SHA256_CAP`] the oldest one is forgotten: it
    /// becomes unapproved (running it again is a deviation), never the other way round, so the
    /// cap can only make the element stricter. Returns whether the set changed.
    pub fn approve_content(&mut self, sha256: &str) -> bool {
        if sha256.is_empty() || self.approves(sha256) {
            return false;
        }
        if self.approved_sha256.len() >= APPROVED_SHA256_CAP {
            self.approved_sha256.remove(0);
        }
        self.approved_sha256.push(sha256.to_string());
        true
    }
}

/// What an exec's content says about the allowed element it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// The content is one of the element's approved contents.
    Approved,
    /// The element is not pinned to any content: matched by name alone, its content is not
    /// judged (allowed, as [`Content::Approved`]).
    Unpinned,
    /// The element is pinned and this content is not one of its approved ones: the file at an
    /// allowed path was replaced ("modified executable").
    Modified,
    /// The element is pinned and the sensor could not hash the executable (`exe_sha256`
    /// missing): its content cannot be verified, so it is not allowed.
    Unverified,
}

/// Checks an exec's content (`sha256`, `None` when the sensor could not hash it) against an
/// element's approved contents (`pinned`: the element has any; `approves`: the set holds a
/// hash). The one rule [`Baseline::observe`] and [`Matcher::check`] both apply.
pub fn content_of(pinned: bool, sha256: Option<&str>, approves: impl Fn(&str) -> bool) -> Content {
    if !pinned {
        return Content::Unpinned;
    }
    match sha256 {
        Some(h) if approves(h) => Content::Approved,
        Some(_) => Content::Modified,
        None => Content::Unverified,
    }
}

/// Whether an exec's file may be taken as the container image's: not drift (writable layer,
/// volume, fileless), and not in a writable location either (an event of a sensor older than
/// origins says only that). An `unknown` origin is not drift, so it counts. Only such a
/// file's content is learned into an element that is already allowed.
pub fn from_image(ev: &ProcessEvent) -> bool {
    !ev.exe_writable_location && !ev.fileless() && ev.drift().is_none()
}

/// Learning progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearningSummary {
    /// When learning started.
    pub started_at: SystemTime,
    /// When learning ended.
    pub ended_at: Option<SystemTime>,
    /// When the last new element arrived.
    pub last_new_element_at: Option<SystemTime>,
    /// Distinct pods seen while learning (capped at [`PROVENANCE_CAP`] * 4).
    pub pods: BTreeSet<String>,
    /// Distinct nodes seen while learning (capped).
    pub nodes: BTreeSet<String>,
    /// Process starts seen while learning.
    pub events_observed: u64,
    /// Why learning ended.
    pub end_reason: Option<String>,
    /// Set once the baseline reached the element limit; see [`ElementLimit`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_limit: Option<ElementLimit>,
    /// The pod and node counts of a summary read from the wire, which carries the counts and
    /// not the sets ([`LearningSummary::pods`] and [`LearningSummary::nodes`] are then
    /// empty); `None` where the sets are held (the server's own baselines). Read them through
    /// [`LearningSummary::pods_observed`] and [`LearningSummary::nodes_observed`]. Never
    /// stored: the server's store holds the sets.
    #[serde(skip)]
    pub counted: Option<ObservedCounts>,
}

/// How many distinct pods and nodes a baseline's learning saw, as the server counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObservedCounts {
    /// Distinct pods.
    pub pods: u32,
    /// Distinct nodes.
    pub nodes: u32,
}

impl LearningSummary {
    /// Distinct pods seen while learning: the set's size, or the server's count for a summary
    /// read from the wire.
    pub fn pods_observed(&self) -> u32 {
        self.counted.map_or(self.pods.len() as u32, |c| c.pods)
    }

    /// Distinct nodes seen while learning (as [`LearningSummary::pods_observed`]).
    pub fn nodes_observed(&self) -> u32 {
        self.counted.map_or(self.nodes.len() as u32, |c| c.nodes)
    }
}

/// Reason learning ended when the baseline reached its element limit.
pub const ELEMENT_LIMIT_REASON: &str = "element-limit";

/// The default most elements a baseline learns from sensor events (`--max-baseline-elements`):
/// written once here, where the rule at the limit is, for the server's flag and its storage.
pub const DEFAULT_MAX_ELEMENTS: usize = 4_096;

/// A baseline reached the element limit: it stopped absorbing new executables and waits for a
/// person. Kept (as history) after approval; cleared by a reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementLimit {
    /// The limit in force when it was reached.
    pub limit: u64,
    /// When it was reached.
    pub reached_at: SystemTime,
    /// Executions of executables outside the baseline refused because of the limit: the one
    /// that reached it, and every later one while the baseline waits for review.
    pub refused: u64,
}

/// What the sensor could not see of a workload: the partial events it sent (a field it could
/// not read, see [`crate::process::ProcessEvent::missing`]) and, among them, the execs whose
/// applet or script could not be read. Coverage, shown with the baseline; never an incident.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// Partial events observed for the workload (probes aside).
    pub partial_events: u64,
    /// Of those, execs whose applet or script could not be read (the process was gone before
    /// its argv was).
    pub unread_invocations: u64,
    /// When the last partial event arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_partial_at: Option<SystemTime>,
}

/// Whether the sensor could not read what `ev` ran: its applet or script slot is
/// [`crate::element::UNREADABLE`] *and* the sensor listed that slot as missing. The slot alone
/// is not enough: argv is the process's to write, and `[unreadable]` could be an applet name
/// an attacker put in argv[0].
pub fn unread_invocation(ev: &ProcessEvent) -> bool {
    let unread = |slot: &Option<String>, field: &str| {
        slot.as_deref() == Some(crate::element::UNREADABLE) && ev.missing.iter().any(|m| m == field)
    };
    unread(&ev.applet, "applet") || unread(&ev.script_path, "script")
}

/// What one observed process did to a baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A new element joined the learning baseline (allowed or held for review).
    Learned {
        /// Status it joined with.
        status: ElementStatus,
    },
    /// A known, allowed element ran again.
    Known,
    /// The process is outside the baseline.
    Deviation,
    /// The process is outside the baseline and was not learned because the baseline reached
    /// its element limit: a deviation, and counted as a refusal.
    Refused,
    /// A probe: recorded nowhere, never a deviation.
    Probe,
    /// What the executable ran (the applet of a multi-call binary, the script of a shell or
    /// interpreter) could not be read, and everything that could be read is allowed: the
    /// file is an allowed element's, with approved content, from the image. Counted in
    /// [`Baseline::coverage`], never learned, never an incident (see [`unread_invocation`]).
    Partial,
}

/// When learning ends. Defaults: at least 1 h, at most 24 h, ended early by 30 min without a
/// new element once at least 2 pods (replicas or restarts) have been seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearningPolicy {
    /// Learning lasts at least this long.
    pub min_window: Duration,
    /// Learning ends after this long regardless.
    pub max_window: Duration,
    /// After the minimum, learning ends once no new element arrived for this long...
    pub quiet_period: Duration,
    /// ...and at least this many distinct pods (replicas or restarts) were observed.
    pub min_pods: usize,
    /// Enforce at the end of learning without waiting for a person.
    pub auto_enforce: bool,
    /// How long a new image digest reopens learning for new elements.
    #[serde(default = "default_relearn")]
    pub relearn_window: Duration,
    /// Whether an exec session into the workload, once its baseline is enforced, raises an
    /// "interactive session" incident (`exec_sessions: alert`, the default) or is only
    /// recorded (`record-only`).
    #[serde(default = "default_true")]
    pub exec_session_alerts: bool,
    /// Whether elements learned in a re-learning window wait for a person's review
    /// (`relearning: review`) instead of being allowed at once (`learn`, the default). They
    /// are held with the reason [`RELEARNED_REASON`]; once the window closes, running one is a
    /// deviation until it is approved.
    #[serde(default)]
    pub relearn_review: bool,
}

/// The review reason of an element learned in a re-learning window under `relearning: review`.
pub const RELEARNED_REASON: &str = "relearned";

fn default_true() -> bool {
    true
}

fn default_relearn() -> Duration {
    Duration::from_secs(15 * 60)
}

impl Default for LearningPolicy {
    fn default() -> Self {
        Self {
            min_window: Duration::from_secs(3600),
            max_window: Duration::from_secs(24 * 3600),
            quiet_period: Duration::from_secs(30 * 60),
            min_pods: 2,
            auto_enforce: false,
            relearn_window: default_relearn(),
            exec_session_alerts: true,
            relearn_review: false,
        }
    }
}

/// Executables that make a new shell element suspicious when the entrypoint never was one.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "ash", "zsh", "ksh", "csh", "tcsh", "fish", "busybox",
];

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether a path names a shell.
pub fn is_shell(path: &str) -> bool {
    SHELLS.contains(&basename(path))
}

/// What a sighting changes in a baseline besides its elements' provenance, without making a
/// version: the learning summary (events, pods and nodes seen while learning, refusals at the
/// element limit), the image digests seen while learning, and the coverage. A store may keep
/// it apart from the baseline's definition, as it may keep provenance
/// ([`Baseline::tally`], [`Baseline::set_tally`]); everything else of a baseline changes only
/// with a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// [`Baseline::learning`].
    pub learning: LearningSummary,
    /// [`Baseline::image_digests`].
    pub image_digests: BTreeSet<String>,
    /// [`Baseline::coverage`].
    #[serde(default)]
    pub coverage: Coverage,
}

/// The learned executables of one workload container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// Whose.
    pub workload: WorkloadIdentity,
    /// Lifecycle state.
    pub state: BaselineState,
    /// Bumped on every change.
    pub version: u64,
    /// Server-wide revision of the last change (set by the store).
    pub revision: u64,
    /// Elements. Serialised as a list, since JSON keys must be strings.
    #[serde(with = "element_list")]
    pub elements: BTreeMap<ElementKey, Element>,
    /// Workload labels, for selectors.
    pub labels: BTreeMap<String, String>,
    /// Learning progress.
    pub learning: LearningSummary,
    /// Image digests learned under.
    pub image_digests: BTreeSet<String>,
    /// Last change.
    pub updated_at: SystemTime,
    /// While set and in the future, a new image digest reopened learning for new elements
    /// only: approved elements stay, unknown executables join instead of deviating.
    #[serde(default)]
    pub relearn_until: Option<SystemTime>,
    /// What the sensors could not see of this workload.
    #[serde(default)]
    pub coverage: Coverage,
}

impl Baseline {
    /// A new, empty, learning baseline.
    pub fn new(workload: WorkloadIdentity, now: SystemTime) -> Self {
        Self {
            workload,
            state: BaselineState::Learning,
            version: 1,
            revision: 0,
            elements: BTreeMap::new(),
            labels: BTreeMap::new(),
            learning: LearningSummary {
                started_at: now,
                ended_at: None,
                last_new_element_at: None,
                pods: BTreeSet::new(),
                nodes: BTreeSet::new(),
                events_observed: 0,
                end_reason: None,
                element_limit: None,
                counted: None,
            },
            image_digests: BTreeSet::new(),
            updated_at: now,
            relearn_until: None,
            coverage: Coverage::default(),
        }
    }

    /// What a sighting changes besides provenance ([`Tally`]).
    pub fn tally(&self) -> Tally {
        Tally {
            learning: self.learning.clone(),
            image_digests: self.image_digests.clone(),
            coverage: self.coverage.clone(),
        }
    }

    /// Puts back a [`Tally`] kept apart.
    pub fn set_tally(&mut self, t: Tally) {
        self.learning = t.learning;
        self.image_digests = t.image_digests;
        self.coverage = t.coverage;
    }

    /// Whether an image change reopened learning for new elements at `now`.
    pub fn relearning(&self, now: SystemTime) -> bool {
        self.state != BaselineState::Learning && self.relearn_until.is_some_and(|t| now < t)
    }

    /// Why an observed process should wait for review rather than be learned.
    pub fn review_reasons(&self, ev: &ProcessEvent) -> Vec<String> {
        let mut reasons = Vec::new();
        if ev.exe_memfd {
            reasons.push("memfd".to_string());
        }
        if ev.exe_deleted {
            reasons.push("deleted".to_string());
        }
        match ev.drift() {
            Some(origin) => reasons.push(format!("drift-{origin}")),
            None if ev.exe_writable_location => reasons.push("writable-location".to_string()),
            None => {}
        }
        if ev.exe_path == crate::process::UNREADABLE_EXE {
            reasons.push("unreadable".to_string());
        }
        if ev.context == ExecContext::ExecSession {
            reasons.push("exec-session".to_string());
        }
        if ev.context != ExecContext::Entrypoint
            && ev.context != ExecContext::Host
            && is_shell(&ev.exe_path)
            && !self.elements.iter().any(|(k, e)| {
                is_shell(&k.exe_path) && e.provenance.contexts.contains(&ExecContext::Entrypoint)
            })
        {
            reasons.push("new-shell".to_string());
        }
        reasons
    }

    /// Whether the baseline waits for review because it reached its element limit: then every
    /// executable outside it is refused (and counted), not only deviating.
    pub fn held_at_element_limit(&self) -> bool {
        self.state == BaselineState::PendingReview && self.learning.element_limit.is_some()
    }

    /// Feeds one process start to the baseline. Returns what it meant. A learning baseline
    /// learns, up to `max_elements` elements (see the module documentation for what happens
    /// at the limit); a baseline past learning learns only inside the re-learning window a new
    /// image digest opens (`relearn_window`), and otherwise reports a deviation.
    pub fn observe(
        &mut self,
        ev: &ProcessEvent,
        now: SystemTime,
        relearn_window: Duration,
        max_elements: usize,
    ) -> Observation {
        self.observe_under(ev, now, relearn_window, false, max_elements, 1)
    }

    /// [`Baseline::observe`] under a workload's learning policy: its re-learning window, and
    /// whether what that window learns waits for review (`relearn_review`).
    pub fn observe_with(
        &mut self,
        ev: &ProcessEvent,
        now: SystemTime,
        policy: &LearningPolicy,
        max_elements: usize,
    ) -> Observation {
        self.observe_times(ev, now, policy, max_elements, 1).0
    }

    /// [`Baseline::observe_with`] for `times` executions that a sensor summarised into one
    /// event: they differ only in what the domain does not read ([`crate::ingest::SummaryKey`]).
    /// The baseline ends exactly as after `times` calls of [`Baseline::observe_with`] with that
    /// event at `now`, every counter included: the first execution is observed alone (it
    /// makes whatever change there is: a new element, origin, content or image, the element
    /// limit), and the rest together, which find it done and only count (an observation
    /// changes the baseline only by insert-once, set-once and counting steps, so the second
    /// execution's outcome holds for every later one). Returns the first execution's
    /// [`Observation`] and, when `times` > 1, the rest's with their number.
    pub fn observe_times(
        &mut self,
        ev: &ProcessEvent,
        now: SystemTime,
        policy: &LearningPolicy,
        max_elements: usize,
        times: u64,
    ) -> (Observation, Option<(Observation, u64)>) {
        let once = |b: &mut Self, n| {
            b.observe_under(
                ev,
                now,
                policy.relearn_window,
                policy.relearn_review,
                max_elements,
                n,
            )
        };
        let first = once(self, 1);
        let rest = (times > 1).then(|| (once(self, times - 1), times - 1));
        (first, rest)
    }

    /// Remembers an image digest the workload runs (cut to [`PROVENANCE_VALUE_BYTES`]);
    /// `true` if it was new. At most [`IMAGE_DIGESTS_CAP`] are kept: a new one past it makes
    /// room by forgetting another (the first in order), so a workload rolling through images
    /// costs a bounded record, and a forgotten image seen again is new again.
    fn remember_image(&mut self, digest: &str) -> bool {
        let d = bounded(digest, PROVENANCE_VALUE_BYTES);
        if self.image_digests.contains(&d) {
            return false;
        }
        if self.image_digests.len() >= IMAGE_DIGESTS_CAP {
            if let Some(first) = self.image_digests.iter().next().cloned() {
                self.image_digests.remove(&first);
            }
        }
        self.image_digests.insert(d);
        true
    }

    fn observe_under(
        &mut self,
        ev: &ProcessEvent,
        now: SystemTime,
        relearn_window: Duration,
        relearn_review: bool,
        max_elements: usize,
        times: u64,
    ) -> Observation {
        if ev.context == ExecContext::Probe {
            return Observation::Probe;
        }
        if self.state != BaselineState::Learning {
            if let Some(d) = ev.container.as_ref().and_then(|c| c.image_digest.as_ref()) {
                if self.remember_image(d) {
                    // A new image: keep what was approved, learn only what is new.
                    self.relearn_until = Some(now + relearn_window);
                    self.version += 1;
                    self.updated_at = now;
                }
            }
        }
        let key = ElementKey::of(ev);
        let learning = self.state == BaselineState::Learning || self.relearning(now);
        if learning {
            self.learning.events_observed += times;
            if self.learning.nodes.len() < PROVENANCE_CAP * 4 && !ev.node_name.is_empty() {
                self.learning
                    .nodes
                    .insert(bounded(&ev.node_name, PROVENANCE_VALUE_BYTES));
            }
            if let Some(c) = &ev.container {
                let pod = c.pod_uid.clone().unwrap_or_else(|| c.container_id.clone());
                if self.learning.pods.len() < PROVENANCE_CAP * 4 && !pod.is_empty() {
                    self.learning
                        .pods
                        .insert(bounded(&pod, PROVENANCE_VALUE_BYTES));
                }
                if let Some(d) = &c.image_digest {
                    self.remember_image(d);
                }
            }
        }
        let in_training = self.state == BaselineState::Learning;
        let drift = ev.drift();
        if ev.completeness == crate::process::Completeness::Partial {
            self.coverage.partial_events += times;
            self.coverage.last_partial_at = Some(now);
        }
        if unread_invocation(ev) && from_image(ev) {
            self.coverage.unread_invocations += times;
            // In training, an exec session's process is still held for review under its
            // `[unreadable]` name, so that a reviewer sees the session: never allowed by it.
            if !(in_training && ev.context == ExecContext::ExecSession) {
                return self.observe_unread(ev, learning);
            }
        }
        if let Some(el) = self.elements.get_mut(&key) {
            el.provenance.record(ev, now, times);
            // A fileless executable is not the file at the element's path, whatever the path
            // reads: past learning it is a deviation even where the path is allowed.
            if ev.fileless() && !in_training {
                return Observation::Deviation;
            }
            // Past training an allowed element runs from outside the image only where a person
            // approved that origin for it; a re-learning window never learns one.
            if !in_training && drift.is_some_and(|o| !el.status.allowed() || !el.allows_origin(o)) {
                return Observation::Deviation;
            }
            let hash = ev.exe_sha256.as_deref();
            if in_training {
                // Training learns the contents the element runs with: any file from the image,
                // and, for an element still held for review (whose approval will be a person's
                // look at what ran), whatever ran. A different file dropped at an allowed path
                // during training is not learned: after training it is a modified executable.
                let content = hash
                    .filter(|_| from_image(ev) || !el.status.allowed())
                    .is_some_and(|h| el.approve_content(h));
                if content | el.learn_origin(ev) {
                    self.version += 1;
                    self.updated_at = now;
                }
            } else if el.status.allowed() {
                match content_of(!el.approved_sha256.is_empty(), hash, |h| el.approves(h)) {
                    Content::Approved | Content::Unpinned => {}
                    // A new image may bring new contents at known paths: learned in its
                    // window, and only for files that come from the image.
                    Content::Modified if learning && from_image(ev) => {
                        el.approve_content(hash.unwrap_or_default());
                        self.version += 1;
                        self.updated_at = now;
                    }
                    Content::Modified | Content::Unverified => return Observation::Deviation,
                }
                if learning && from_image(ev) && el.learn_origin(ev) {
                    self.version += 1;
                    self.updated_at = now;
                }
            }
            return if el.status.allowed() {
                Observation::Known
            } else if learning && el.status == ElementStatus::NeedsReview {
                // Already waiting for review; seeing it again during learning is not news.
                Observation::Known
            } else {
                Observation::Deviation
            };
        }
        if !learning {
            if self.held_at_element_limit() {
                if let Some(l) = self.learning.element_limit.as_mut() {
                    l.refused += times;
                }
                return Observation::Refused;
            }
            return Observation::Deviation;
        }
        // An image change's re-learning window learns what the new image brought, never what
        // did not come from it: drift there is a deviation, as after the window.
        if drift.is_some() && !in_training {
            return Observation::Deviation;
        }
        if self.elements.len() >= max_elements {
            self.reach_element_limit(max_elements, now, times);
            return Observation::Refused;
        }
        let mut reasons = self.review_reasons(ev);
        if !in_training && relearn_review {
            reasons.push(RELEARNED_REASON.to_string());
        }
        let status = if reasons.is_empty() {
            ElementStatus::Learned
        } else {
            ElementStatus::NeedsReview
        };
        let mut provenance = Provenance::new(now);
        provenance.record(ev, now, times);
        let mut element = Element {
            status,
            review_reasons: reasons,
            provenance,
            manual: false,
            approved_sha256: Vec::new(),
            origins: BTreeSet::new(),
        };
        // A new element is pinned to the content and origin it ran with; one held for review
        // (drift) is pinned too, so that approving it approves what a person saw, nothing else.
        if !ev.fileless() {
            element.approve_content(ev.exe_sha256.as_deref().unwrap_or_default());
        }
        element.learn_origin(ev);
        self.elements.insert(key, element);
        self.learning.last_new_element_at = Some(now);
        self.version += 1;
        self.updated_at = now;
        Observation::Learned { status }
    }

    /// An exec of a file from the image whose applet or script could not be read. Nothing is
    /// learned from it (an `[unreadable]` element would allow every applet of the file). Past
    /// learning, it is coverage ([`Observation::Partial`]) when the file is allowed with this
    /// content under some element, any applet or script: all the sensor saw is allowed, and
    /// the workload's own sub-millisecond applets land here whenever the sensor loses the race
    /// for their argv. A file no element allows, or content no element approves, is a
    /// deviation, as it would be with argv read. [`Matcher::check`] decides the same.
    fn observe_unread(&self, ev: &ProcessEvent, learning: bool) -> Observation {
        if learning {
            return Observation::Partial;
        }
        let hash = ev.exe_sha256.as_deref();
        let lo = ElementKey::exe(ev.exe_path.clone());
        let allowed = self
            .elements
            .range(lo..)
            .take_while(|(k, _)| k.exe_path == ev.exe_path)
            .filter(|(_, e)| e.status.allowed())
            .any(|(_, e)| {
                content_of(!e.approved_sha256.is_empty(), hash, |h| e.approves(h))
                    == Content::Approved
            });
        if allowed {
            Observation::Partial
        } else {
            Observation::Deviation
        }
    }

    /// The baseline is full: it stops learning (and an image change's re-learning window
    /// closes), waits for review, and counts the executions that did not fit.
    fn reach_element_limit(&mut self, max_elements: usize, now: SystemTime, times: u64) {
        match self.learning.element_limit.as_mut() {
            Some(l) => l.refused += times,
            None => {
                self.learning.element_limit = Some(ElementLimit {
                    limit: max_elements as u64,
                    reached_at: now,
                    refused: times,
                })
            }
        }
        if self.state == BaselineState::Learning {
            self.state = BaselineState::PendingReview;
            self.learning.ended_at = Some(now);
            self.learning.end_reason = Some(ELEMENT_LIMIT_REASON.to_string());
        }
        self.relearn_until = None;
        self.version += 1;
        self.updated_at = now;
    }

    /// Ends learning when the policy's evidence says so. Returns the reason when it ended.
    /// A baseline that reached its element limit never ends as auto-enforced.
    pub fn evaluate_learning(
        &mut self,
        policy: &LearningPolicy,
        now: SystemTime,
    ) -> Option<&'static str> {
        if self.state != BaselineState::Learning {
            return None;
        }
        let age = now
            .duration_since(self.learning.started_at)
            .unwrap_or_default();
        let quiet_since = self
            .learning
            .last_new_element_at
            .unwrap_or(self.learning.started_at);
        let quiet = now.duration_since(quiet_since).unwrap_or_default();
        let reason = if age >= policy.max_window {
            "max-window"
        } else if age >= policy.min_window
            && quiet >= policy.quiet_period
            && self.learning.pods.len() >= policy.min_pods
            && !self.elements.is_empty()
        {
            "stable"
        } else {
            return None;
        };
        self.learning.ended_at = Some(now);
        self.learning.end_reason = Some(reason.to_string());
        self.state = if policy.auto_enforce && self.learning.element_limit.is_none() {
            BaselineState::Enforced
        } else {
            BaselineState::PendingReview
        };
        self.version += 1;
        self.updated_at = now;
        Some(reason)
    }

    /// Approves the given elements, or with `None` every element not rejected, and then
    /// enforces the baseline. Returns the number of elements whose status changed.
    pub fn approve(&mut self, only: Option<&[ElementKey]>, now: SystemTime) -> usize {
        let mut changed = 0;
        for (k, el) in self.elements.iter_mut() {
            let selected = only.is_none_or(|keys| keys.contains(k));
            let eligible = match only {
                None => el.status == ElementStatus::Learned,
                Some(_) => el.status != ElementStatus::Approved,
            };
            if selected && eligible {
                el.status = ElementStatus::Approved;
                changed += 1;
            }
        }
        if only.is_none() && self.state != BaselineState::Enforced {
            if self.learning.ended_at.is_none() {
                self.learning.ended_at = Some(now);
                self.learning.end_reason = Some("manual".to_string());
            }
            self.state = BaselineState::Enforced;
            changed += 1;
        }
        if changed > 0 {
            self.version += 1;
            self.updated_at = now;
        }
        changed
    }

    /// Sends the baseline back to learning, keeping approved elements.
    pub fn reset(&mut self, now: SystemTime) {
        self.state = BaselineState::Learning;
        self.relearn_until = None;
        self.elements
            .retain(|_, e| e.status == ElementStatus::Approved || e.manual);
        self.learning = Baseline::new(self.workload.clone(), now).learning;
        self.version += 1;
        self.updated_at = now;
    }

    #[cfg(test)]
    fn reject_for_test(&mut self, key: &ElementKey) {
        let mut p = Provenance::new(self.updated_at);
        p.count = 1;
        self.elements.insert(
            key.clone(),
            Element {
                status: ElementStatus::Rejected,
                review_reasons: vec![],
                provenance: p,
                manual: true,
                approved_sha256: Vec::new(),
                origins: BTreeSet::new(),
            },
        );
    }

    /// Whether running `key` is allowed.
    pub fn allows(&self, key: &ElementKey) -> bool {
        self.elements.get(key).is_some_and(|e| e.status.allowed())
    }
}

mod element_list {
    use super::{Element, ElementKey};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    struct Ref<'a> {
        #[serde(flatten)]
        key: &'a ElementKey,
        #[serde(flatten)]
        element: &'a Element,
    }

    #[derive(Deserialize)]
    struct Owned {
        #[serde(flatten)]
        key: ElementKey,
        #[serde(flatten)]
        element: Element,
    }

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<ElementKey, Element>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter().map(|(key, element)| Ref { key, element }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<ElementKey, Element>, D::Error> {
        let list = Vec::<Owned>::deserialize(d)?;
        Ok(list.into_iter().map(|o| (o.key, o.element)).collect())
    }
}

/// What the sensor decides about one exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The workload has no baseline past learning here; report as an observation.
    Learning,
    /// In the baseline.
    Allowed,
    /// Outside the baseline.
    Deviation,
    /// What the executable ran could not be read and all that was read is allowed: coverage,
    /// reported as an observation ([`Observation::Partial`] on the server).
    Partial,
}

/// O(1) exec matching against the baselines past learning, as the sensor holds them.
///
/// The index is keyed by identity, then by executable path, applet and script, and each
/// element holds its approved contents (at most [`APPROVED_SHA256_CAP`], compared in turn:
/// for one or two contents, the usual case, that is cheaper than hashing 64 hex digits, and
/// the cap bounds it). A lookup hashes at most five strings (identity, executable, applet,
/// script, image digest) and never allocates. It decides as [`Baseline::observe`] does, and
/// `matcher_and_observe_agree` holds the two to it.
#[derive(Debug, Default, Clone)]
pub struct Matcher {
    index: HashMap<WorkloadIdentity, Entry>,
}

/// What the matcher keeps of one allowed element: its approved contents (at most
/// [`APPROVED_SHA256_CAP`]; empty when the element is not pinned) and the drift origins a
/// person approved for it, one bit per origin.
#[derive(Debug, Clone)]
struct Allowed {
    contents: Box<[Box<str>]>,
    drift_origins: u8,
}

impl Allowed {
    fn bit(o: Origin) -> u8 {
        1 << (o as u8)
    }

    /// [`Element::allows_origin`], on the bits.
    fn allows_origin(&self, o: Origin) -> bool {
        !o.is_drift() || self.drift_origins & Self::bit(o) != 0
    }
}

#[derive(Debug, Default, Clone)]
struct Entry {
    by_exe: HashMap<String, HashMap<String, HashMap<String, Allowed>>>,
    image_digests: HashSet<String>,
    relearn_until: Option<SystemTime>,
}

impl Entry {
    /// Whether the server would learn at `now` for this event: inside the re-learning window,
    /// or opening one (an image digest the baseline has not seen).
    fn relearning(&self, ev: &ProcessEvent, now: SystemTime) -> bool {
        self.relearn_until.is_some_and(|t| now < t)
            || ev
                .container
                .as_ref()
                .and_then(|c| c.image_digest.as_deref())
                .is_some_and(|d| !self.image_digests.contains(d))
    }
}

impl Matcher {
    /// Builds the index from baselines; learning baselines are left out.
    pub fn new<'a>(baselines: impl IntoIterator<Item = &'a Baseline>) -> Self {
        let mut m = Matcher::default();
        for b in baselines {
            m.upsert(b);
        }
        m
    }

    /// Replaces (or removes, if it is learning) one baseline's entry.
    pub fn upsert(&mut self, b: &Baseline) {
        if b.state == BaselineState::Learning {
            self.index.remove(&b.workload);
            return;
        }
        let mut by_exe: HashMap<String, HashMap<String, HashMap<String, Allowed>>> = HashMap::new();
        for (k, e) in &b.elements {
            if e.status.allowed() {
                by_exe
                    .entry(k.exe_path.clone())
                    .or_default()
                    .entry(k.applet.clone())
                    .or_default()
                    .insert(
                        k.script_path.clone(),
                        Allowed {
                            contents: e
                                .approved_sha256
                                .iter()
                                .map(|h| h.as_str().into())
                                .collect(),
                            drift_origins: e
                                .origins
                                .iter()
                                .filter(|o| o.is_drift())
                                .fold(0, |bits, o| bits | Allowed::bit(*o)),
                        },
                    );
            }
        }
        self.index.insert(
            b.workload.clone(),
            Entry {
                by_exe,
                image_digests: b.image_digests.iter().cloned().collect(),
                relearn_until: b.relearn_until,
            },
        );
    }

    /// Forgets one baseline.
    pub fn remove(&mut self, workload: &WorkloadIdentity) {
        self.index.remove(workload);
    }

    /// Number of baselines indexed.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no baseline is indexed.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Matches one exec at `now`. A probe is allowed; a fileless executable never matches an
    /// element; drift matches only an element a person approved that origin for
    /// ([`Element::allows_origin`]); an allowed element's content must be approved
    /// ([`content_of`]). What the server would learn (an image change's re-learning window, or
    /// a new image digest that opens one) is [`Verdict::Learning`]: new elements that are not
    /// drift, and new contents of allowed elements for files from the image.
    pub fn check(&self, ev: &ProcessEvent, now: SystemTime) -> Verdict {
        if ev.context == ExecContext::Probe {
            return Verdict::Allowed;
        }
        let Some(e) = self.index.get(&ev.workload) else {
            return Verdict::Learning;
        };
        if unread_invocation(ev) && from_image(ev) {
            let allowed = e.by_exe.get(ev.exe_path.as_str()).is_some_and(|applets| {
                applets.values().flat_map(|s| s.values()).any(|a| {
                    content_of(!a.contents.is_empty(), ev.exe_sha256.as_deref(), |h| {
                        a.contents.iter().any(|c| &**c == h)
                    }) == Content::Approved
                })
            });
            return if allowed {
                Verdict::Partial
            } else if e.relearning(ev, now) {
                Verdict::Learning
            } else {
                Verdict::Deviation
            };
        }
        let element = e
            .by_exe
            .get(ev.exe_path.as_str())
            .and_then(|a| a.get(ev.applet.as_deref().unwrap_or("")))
            .and_then(|s| s.get(ev.script_path.as_deref().unwrap_or("")));
        let drift = ev.drift();
        match element {
            Some(_) if ev.fileless() => Verdict::Deviation,
            Some(a) if drift.is_some_and(|o| !a.allows_origin(o)) => Verdict::Deviation,
            Some(a) => {
                let contents = &a.contents;
                match content_of(!contents.is_empty(), ev.exe_sha256.as_deref(), |h| {
                    contents.iter().any(|c| &**c == h)
                }) {
                    Content::Approved | Content::Unpinned => Verdict::Allowed,
                    Content::Modified if from_image(ev) && e.relearning(ev, now) => {
                        Verdict::Learning
                    }
                    Content::Modified | Content::Unverified => Verdict::Deviation,
                }
            }
            None if drift.is_none() && e.relearning(ev, now) => Verdict::Learning,
            None => Verdict::Deviation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_keys_read_back_their_text() {
        for (exe, applet, script) in [
            ("/bin/busybox", "wget", ""),
            ("/bin/busybox", "sh", "/tmp/x.sh"),
            ("/usr/bin/python3.11", "", "-m http.server"),
            ("/usr/bin/id", "", ""),
            ("/bin/bash", "", crate::element::INLINE),
        ] {
            let k = ElementKey {
                exe_path: exe.into(),
                applet: applet.into(),
                script_path: script.into(),
            };
            assert_eq!(k.to_string().parse::<ElementKey>(), Ok(k.clone()), "{k}");
        }
        assert!("/bin/busybox (wget".parse::<ElementKey>().is_err());
    }

    #[test]
    fn applets_of_one_binary_are_separate_elements() {
        let mut b = Baseline::new(web(), t(0));
        let key = |a: &str| ElementKey {
            exe_path: "/bin/busybox".into(),
            applet: a.into(),
            script_path: String::new(),
        };
        b.elements.insert(
            key("sleep"),
            Element {
                status: ElementStatus::Approved,
                review_reasons: vec![],
                provenance: Provenance::new(t(0)),
                manual: false,
                approved_sha256: Vec::new(),
                origins: BTreeSet::new(),
            },
        );
        b.state = BaselineState::Enforced;
        let m = Matcher::new([&b]);
        assert_eq!(
            check(&m, "/bin/busybox", "sleep", "", t(1)),
            Verdict::Allowed
        );
        assert_eq!(
            check(&m, "/bin/busybox", "wget", "", t(1)),
            Verdict::Deviation
        );
        assert_eq!(check(&m, "/bin/busybox", "", "", t(1)), Verdict::Deviation);
    }
    use crate::identity::WorkloadKind;
    use crate::process::{Completeness, ContainerInfo};

    const RELEARN: Duration = Duration::from_secs(600);
    const CAP: usize = 4_096;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn web() -> WorkloadIdentity {
        WorkloadIdentity::new("c", "shop", WorkloadKind::Deployment, "web", "nginx")
    }

    /// The matcher's verdict on an exec of `exe` (with an applet and script, when not empty).
    fn check(m: &Matcher, exe: &str, applet: &str, script: &str, now: SystemTime) -> Verdict {
        let mut ev = exec(exe, ExecContext::Descendant, "p1");
        ev.applet = (!applet.is_empty()).then(|| applet.into());
        ev.script_path = (!script.is_empty()).then(|| script.into());
        m.check(&ev, now)
    }

    fn exec(path: &str, ctx: ExecContext, pod: &str) -> ProcessEvent {
        ProcessEvent {
            pid: 10,
            ppid: 1,
            ancestors: vec![],
            start_time: None,
            uid: 0,
            gid: 0,
            comm: basename(path).to_string(),
            exe_path: path.to_string(),
            argv: vec![path.to_string()],
            argv_truncated: false,
            applet: None,
            script_path: None,
            exe_sha256: None,
            exe_memfd: false,
            exe_deleted: false,
            exe_writable_location: false,
            origin: Origin::Image,
            container: Some(ContainerInfo {
                container_id: format!("{pod}-c"),
                pod_uid: Some(pod.to_string()),
                ..Default::default()
            }),
            workload: web(),
            context: ctx,
            exec_session: None,
            completeness: Completeness::Full,
            missing: vec![],
            node_name: "n1".into(),
            attributed_late_ms: None,
        }
    }

    #[test]
    fn learns_then_flags_everything_outside_once_enforced() {
        let mut b = Baseline::new(web(), t(0));
        let nginx = exec("/usr/sbin/nginx", ExecContext::Entrypoint, "p1");
        assert_eq!(
            b.observe(&nginx, t(1), RELEARN, CAP),
            Observation::Learned {
                status: ElementStatus::Learned
            }
        );
        assert_eq!(b.observe(&nginx, t(2), RELEARN, CAP), Observation::Known);
        assert_eq!(b.approve(None, t(3)), 2);
        assert_eq!(b.state, BaselineState::Enforced);
        let curl = exec("/usr/bin/curl", ExecContext::Descendant, "p1");
        assert_eq!(b.observe(&curl, t(4), RELEARN, CAP), Observation::Deviation);
        assert!(!b.elements.contains_key(&ElementKey::exe("/usr/bin/curl")));
    }

    /// `observe_times(n)` ends where `n` calls of `observe_with` end, with the same outcomes,
    /// where the first execution changes what the rest meet: a new element, a new image's
    /// re-learning window, the element limit in learning and inside a re-learning window
    /// (first refused, then deviations), drift, a fileless run, an unread applet.
    #[test]
    fn observing_n_times_at_once_is_observing_n_times() {
        let policy = LearningPolicy {
            relearn_window: RELEARN,
            ..LearningPolicy::default()
        };
        let digest = |mut e: ProcessEvent, d: &str| {
            e.container.as_mut().unwrap().image_digest = Some(d.into());
            e
        };
        let app = exec("/app/run", ExecContext::Entrypoint, "p1");
        let mut learning = Baseline::new(web(), t(0));
        learning.observe(&app, t(1), RELEARN, 2);
        let mut enforced = learning.clone();
        enforced.observe(
            &exec("/app/b", ExecContext::Descendant, "p1"),
            t(1),
            RELEARN,
            2,
        );
        enforced.approve(None, t(2));
        let mut drift = app.clone();
        drift.origin = Origin::WritableLayer;
        drift.exe_writable_location = true;
        let mut memfd = app.clone();
        memfd.exe_memfd = true;
        let mut unread = exec("/bin/busybox", ExecContext::Descendant, "p1");
        unread.applet = Some(crate::element::UNREADABLE.into());
        unread.completeness = Completeness::Partial;
        unread.missing = vec!["applet".into()];
        let cases: Vec<(&str, &Baseline, ProcessEvent, usize)> = vec![
            (
                "new element",
                &learning,
                exec("/app/new", ExecContext::Descendant, "p2"),
                CAP,
            ),
            ("known element", &learning, app.clone(), CAP),
            (
                "limit reached",
                &learning,
                exec("/app/c", ExecContext::Descendant, "p1"),
                1,
            ),
            (
                "new image at the limit",
                &enforced,
                digest(exec("/app/c", ExecContext::Descendant, "p1"), "sha256:new"),
                2,
            ),
            (
                "new image",
                &enforced,
                digest(exec("/app/c", ExecContext::Descendant, "p1"), "sha256:new"),
                CAP,
            ),
            (
                "deviation",
                &enforced,
                exec("/tmp/x", ExecContext::Descendant, "p1"),
                CAP,
            ),
            ("drift", &enforced, drift, CAP),
            ("fileless", &enforced, memfd, CAP),
            ("unread in learning", &learning, unread.clone(), CAP),
            ("unread enforced", &enforced, unread, CAP),
            (
                "probe",
                &enforced,
                exec("/tmp/x", ExecContext::Probe, "p1"),
                CAP,
            ),
        ];
        let mut split = Vec::new();
        for (what, base, ev, max) in cases {
            for n in [1u64, 2, 7] {
                let (mut each, mut once) = (base.clone(), base.clone());
                let outcomes: Vec<Observation> = (0..n)
                    .map(|_| each.observe_with(&ev, t(10), &policy, max))
                    .collect();
                let (first, rest) = once.observe_times(&ev, t(10), &policy, max, n);
                assert_eq!(each, once, "{what} x{n}: the baselines differ");
                assert_eq!(outcomes[0], first, "{what} x{n}");
                match rest {
                    None => assert_eq!(n, 1, "{what}"),
                    Some((o, k)) => {
                        assert_eq!(k, n - 1, "{what}");
                        assert!(
                            outcomes[1..].iter().all(|x| *x == o),
                            "{what} x{n}: {outcomes:?} vs {o:?}"
                        );
                        if o != first && n == 7 {
                            split.push((what, first, o));
                        }
                    }
                }
            }
        }
        // The cases where the first execution differs from the rest are covered.
        assert!(
            split.contains(&(
                "new element",
                Observation::Learned {
                    status: ElementStatus::Learned
                },
                Observation::Known
            )),
            "{split:?}"
        );
        assert!(
            split.contains(&(
                "new image at the limit",
                Observation::Refused,
                Observation::Deviation
            )),
            "{split:?}"
        );
    }

    #[test]
    fn a_fileless_executable_at_an_allowed_path_is_a_deviation() {
        let mut b = Baseline::new(web(), t(0));
        let app = exec("/app/run", ExecContext::Entrypoint, "p1");
        b.observe(&app, t(1), RELEARN, CAP);
        b.approve(None, t(2));
        assert_eq!(b.observe(&app, t(3), RELEARN, CAP), Observation::Known);
        // The same path, but the file ran deleted or from memory: not the approved file.
        let mut deleted = app.clone();
        deleted.exe_deleted = true;
        let mut memfd = app.clone();
        memfd.exe_memfd = true;
        for ev in [&deleted, &memfd] {
            assert_eq!(b.observe(ev, t(4), RELEARN, CAP), Observation::Deviation);
        }
        // Also inside the re-learning window a new image opens: a fileless file is no image's.
        let mut new_image = deleted.clone();
        new_image.container.as_mut().unwrap().image_digest = Some("sha256:new".into());
        assert_eq!(
            b.observe(&new_image, t(5), RELEARN, CAP),
            Observation::Deviation
        );
        assert!(b.relearning(t(5)));
    }

    /// A workload rolling through images keeps a bounded record of them: one version per new
    /// image, at most [`IMAGE_DIGESTS_CAP`] remembered, each cut to a provenance value's size.
    #[test]
    fn image_digests_a_baseline_remembers_are_bounded() {
        let mut b = Baseline::new(web(), t(0));
        let app = exec("/app", ExecContext::Descendant, "p1");
        b.observe(&app, t(1), RELEARN, CAP);
        b.approve(None, t(2));
        let v = b.version;
        for i in 0..(IMAGE_DIGESTS_CAP as u64 + 36) {
            let mut e = app.clone();
            e.container.as_mut().unwrap().image_digest =
                Some(format!("sha256:{i:064}{}", "x".repeat(1000)));
            b.observe(&e, t(10 + i), RELEARN, CAP);
            b.observe(&e, t(10 + i), RELEARN, CAP);
        }
        assert_eq!(
            b.version,
            v + IMAGE_DIGESTS_CAP as u64 + 36,
            "one version per image"
        );
        assert_eq!(b.image_digests.len(), IMAGE_DIGESTS_CAP);
        assert!(b
            .image_digests
            .iter()
            .all(|d| d.len() <= PROVENANCE_VALUE_BYTES + 3));
    }

    #[test]
    fn probes_never_learn_and_never_deviate() {
        let mut b = Baseline::new(web(), t(0));
        b.approve(None, t(1));
        let probe = exec("/bin/cat", ExecContext::Probe, "p1");
        assert_eq!(b.observe(&probe, t(2), RELEARN, CAP), Observation::Probe);
    }

    #[test]
    fn drift_seen_during_learning_waits_for_review() {
        let mut b = Baseline::new(web(), t(0));
        let mut memfd = exec("memfd:x", ExecContext::Descendant, "p1");
        memfd.exe_memfd = true;
        let shell = exec("/bin/sh", ExecContext::Descendant, "p1");
        let session = exec("/usr/bin/id", ExecContext::ExecSession, "p1");
        for ev in [&memfd, &shell, &session] {
            assert_eq!(
                b.observe(ev, t(1), RELEARN, CAP),
                Observation::Learned {
                    status: ElementStatus::NeedsReview
                }
            );
        }
        assert_eq!(
            b.elements[&ElementKey::exe("/bin/sh")].review_reasons,
            vec!["new-shell"]
        );
        // Whole-baseline approval does not sweep held elements in; they still deviate.
        b.approve(None, t(2));
        assert_eq!(
            b.observe(&shell, t(3), RELEARN, CAP),
            Observation::Deviation
        );
        // Explicit approval does.
        b.approve(Some(&[ElementKey::exe("/bin/sh")]), t(4));
        assert_eq!(b.observe(&shell, t(5), RELEARN, CAP), Observation::Known);
    }

    #[test]
    fn a_shell_entrypoint_makes_shells_ordinary() {
        let mut b = Baseline::new(web(), t(0));
        b.observe(
            &exec("/bin/sh", ExecContext::Entrypoint, "p1"),
            t(1),
            RELEARN,
            CAP,
        );
        let child = exec("/bin/bash", ExecContext::Descendant, "p1");
        assert!(b.review_reasons(&child).is_empty());
    }

    #[test]
    fn provenance_is_bounded_whatever_the_client_sends() {
        let mut ev = exec("/app", ExecContext::Entrypoint, &"p".repeat(10_000));
        ev.argv = (0..64).map(|i| format!("{i}{}", "é".repeat(600))).collect();
        ev.node_name = "n".repeat(5_000);
        let mut p = Provenance::new(t(0));
        p.record(&ev, t(1), 1);
        let argv_bytes: usize = p.sample_argv.iter().map(String::len).sum();
        assert!(argv_bytes <= SAMPLE_ARGV_BYTES, "{argv_bytes}");
        assert!(p.sample_argv.len() >= 2, "whole arguments are kept first");
        assert!(p.sample_argv.last().unwrap().ends_with('…'));
        for v in p.nodes.iter().chain(&p.pods) {
            assert!(v.len() <= PROVENANCE_VALUE_BYTES && v.ends_with('…'), "{v}");
        }
        // Short values are kept as they are.
        assert_eq!(bounded("web-1", 256), "web-1");
        assert_eq!(sample_argv(&["a".into(), "b".into()]), vec!["a", "b"]);
    }

    #[test]
    fn learning_ends_on_stability_not_before_min_window() {
        let policy = LearningPolicy {
            min_window: Duration::from_secs(100),
            max_window: Duration::from_secs(1000),
            quiet_period: Duration::from_secs(50),
            min_pods: 2,
            auto_enforce: false,
            relearn_window: RELEARN,
            exec_session_alerts: true,
            relearn_review: false,
        };
        let mut b = Baseline::new(web(), t(0));
        b.observe(
            &exec("/app", ExecContext::Entrypoint, "p1"),
            t(1),
            RELEARN,
            CAP,
        );
        assert_eq!(b.evaluate_learning(&policy, t(99)), None, "min window");
        assert_eq!(b.evaluate_learning(&policy, t(200)), None, "one pod only");
        b.observe(
            &exec("/app", ExecContext::Entrypoint, "p2"),
            t(201),
            RELEARN,
            CAP,
        );
        assert_eq!(b.evaluate_learning(&policy, t(202)), Some("stable"));
        assert_eq!(b.state, BaselineState::PendingReview);
        assert_eq!(b.learning.end_reason.as_deref(), Some("stable"));
    }

    #[test]
    fn learning_ends_at_max_window_even_if_noisy() {
        let policy = LearningPolicy {
            max_window: Duration::from_secs(10),
            auto_enforce: true,
            ..LearningPolicy::default()
        };
        let mut b = Baseline::new(web(), t(0));
        b.observe(
            &exec("/app", ExecContext::Entrypoint, "p1"),
            t(9),
            RELEARN,
            CAP,
        );
        assert_eq!(b.evaluate_learning(&policy, t(10)), Some("max-window"));
        assert_eq!(b.state, BaselineState::Enforced);
    }

    #[test]
    fn reset_keeps_approved_and_relearns() {
        let mut b = Baseline::new(web(), t(0));
        b.observe(
            &exec("/app", ExecContext::Entrypoint, "p1"),
            t(1),
            RELEARN,
            CAP,
        );
        b.approve(None, t(2));
        b.reset(t(3));
        assert_eq!(b.state, BaselineState::Learning);
        assert!(b.allows(&ElementKey::exe("/app")));
    }

    #[test]
    fn a_new_image_relearns_only_new_elements() {
        let with_digest = |path: &str, digest: &str| {
            let mut e = exec(path, ExecContext::Descendant, "p1");
            e.container.as_mut().unwrap().image_digest = Some(digest.into());
            e
        };
        let mut b = Baseline::new(web(), t(0));
        b.observe(&with_digest("/app", "sha256:a"), t(1), RELEARN, CAP);
        b.approve(None, t(2));
        b.reject_for_test(&ElementKey::exe("/bin/nc"));
        assert_eq!(
            b.observe(&with_digest("/app2", "sha256:a"), t(3), RELEARN, CAP),
            Observation::Deviation
        );
        // v2 of the image: the new executable is learned, the old one stays approved...
        let v = b.version;
        assert!(matches!(
            b.observe(&with_digest("/app2", "sha256:b"), t(4), RELEARN, CAP),
            Observation::Learned {
                status: ElementStatus::Learned
            }
        ));
        assert!(b.version > v);
        assert_eq!(b.state, BaselineState::Enforced);
        assert_eq!(
            b.elements[&ElementKey::exe("/app")].status,
            ElementStatus::Approved
        );
        // ...a rejected element stays rejected, drift still waits for review...
        assert_eq!(
            b.observe(&with_digest("/bin/nc", "sha256:b"), t(5), RELEARN, CAP),
            Observation::Deviation
        );
        let mut tmp = with_digest("/tmp/x", "sha256:b");
        tmp.exe_writable_location = true;
        assert!(matches!(
            b.observe(&tmp, t(6), RELEARN, CAP),
            Observation::Learned {
                status: ElementStatus::NeedsReview
            }
        ));
        // ...and once the window closes, anything new deviates again.
        assert_eq!(
            b.observe(&with_digest("/app3", "sha256:b"), t(4 + 601), RELEARN, CAP),
            Observation::Deviation
        );
    }

    #[test]
    fn baselines_round_trip_through_json() {
        let mut b = Baseline::new(web(), t(0));
        let mut py = exec("/usr/bin/python3", ExecContext::Entrypoint, "p1");
        py.script_path = Some("/app/main.py".into());
        b.observe(&py, t(1), RELEARN, CAP);
        b.observe(
            &exec("/bin/sh", ExecContext::Descendant, "p1"),
            t(2),
            RELEARN,
            CAP,
        );
        let text = serde_json::to_string(&b).unwrap();
        let back: Baseline = serde_json::from_str(&text).unwrap();
        assert_eq!(back, b);
    }

    fn many(n: usize, pod: &str) -> Vec<ProcessEvent> {
        (0..n)
            .map(|i| exec(&format!("/build/tool-{i}"), ExecContext::Descendant, pod))
            .collect()
    }

    #[test]
    fn learning_stops_at_the_element_limit_and_waits_for_review() {
        let policy = LearningPolicy {
            auto_enforce: true,
            ..LearningPolicy::default()
        };
        let mut b = Baseline::new(web(), t(0));
        let evs = many(5, "p1");
        for ev in &evs[..3] {
            assert!(matches!(
                b.observe(ev, t(1), RELEARN, 3),
                Observation::Learned { .. }
            ));
        }
        let v = b.version;
        // The fourth distinct executable does not fit: refused, and learning ends for review.
        assert_eq!(b.observe(&evs[3], t(2), RELEARN, 3), Observation::Refused);
        assert_eq!(b.elements.len(), 3);
        assert!(!b.elements.contains_key(&ElementKey::of(&evs[3])));
        assert_eq!(b.state, BaselineState::PendingReview);
        assert_eq!(b.learning.end_reason.as_deref(), Some(ELEMENT_LIMIT_REASON));
        assert_eq!(b.learning.ended_at, Some(t(2)));
        assert!(b.version > v, "reaching the limit is a new version");
        assert_eq!(
            b.learning.element_limit,
            Some(ElementLimit {
                limit: 3,
                reached_at: t(2),
                refused: 1
            })
        );
        // Known elements still run; anything new is refused and counted, never learned.
        assert_eq!(b.observe(&evs[0], t(3), RELEARN, 3), Observation::Known);
        assert_eq!(b.observe(&evs[4], t(3), RELEARN, 3), Observation::Refused);
        assert_eq!(b.observe(&evs[3], t(3), RELEARN, 3), Observation::Refused);
        assert_eq!(b.learning.element_limit.as_ref().unwrap().refused, 3);
        // Even an auto-enforce policy does not enforce it: it is past learning already.
        assert_eq!(b.evaluate_learning(&policy, t(100_000)), None);
        assert_eq!(b.state, BaselineState::PendingReview);
        // The sensor matches it (it is past learning), so the refused executable deviates there too.
        let m = Matcher::new([&b]);
        assert_eq!(
            check(&m, &evs[4].exe_path, "", "", t(4)),
            Verdict::Deviation
        );
        assert_eq!(check(&m, &evs[0].exe_path, "", "", t(4)), Verdict::Allowed);
        // A person approves: enforced, the record stays, later executables are plain deviations.
        b.approve(None, t(5));
        assert_eq!(b.state, BaselineState::Enforced);
        assert_eq!(b.observe(&evs[4], t(6), RELEARN, 3), Observation::Deviation);
        assert_eq!(b.learning.element_limit.as_ref().unwrap().refused, 3);
        // A reset clears it and learning starts over (the limit still holds).
        b.reset(t(7));
        assert_eq!(b.learning.element_limit, None);
        assert_eq!(b.observe(&evs[4], t(8), RELEARN, 3), Observation::Refused);
    }

    #[test]
    fn a_limit_reached_flag_never_auto_enforces() {
        let policy = LearningPolicy {
            max_window: Duration::from_secs(10),
            auto_enforce: true,
            ..LearningPolicy::default()
        };
        // As an import could leave it: still learning, but marked as having hit the limit.
        let mut b = Baseline::new(web(), t(0));
        b.learning.element_limit = Some(ElementLimit {
            limit: 1,
            reached_at: t(1),
            refused: 1,
        });
        assert_eq!(b.evaluate_learning(&policy, t(10)), Some("max-window"));
        assert_eq!(b.state, BaselineState::PendingReview);
    }

    #[test]
    fn the_element_limit_closes_a_relearning_window() {
        let with_digest = |path: &str, digest: &str| {
            let mut e = exec(path, ExecContext::Descendant, "p1");
            e.container.as_mut().unwrap().image_digest = Some(digest.into());
            e
        };
        let mut b = Baseline::new(web(), t(0));
        b.observe(&with_digest("/app", "sha256:a"), t(1), RELEARN, 2);
        b.approve(None, t(2));
        assert!(matches!(
            b.observe(&with_digest("/app2", "sha256:b"), t(3), RELEARN, 2),
            Observation::Learned { .. }
        ));
        assert!(b.relearning(t(4)));
        assert_eq!(
            b.observe(&with_digest("/app3", "sha256:b"), t(4), RELEARN, 2),
            Observation::Refused
        );
        assert!(!b.relearning(t(5)), "the window closed");
        assert_eq!(
            b.state,
            BaselineState::Enforced,
            "approved content stays enforced"
        );
        assert_eq!(
            b.observe(&with_digest("/app3", "sha256:b"), t(5), RELEARN, 2),
            Observation::Deviation
        );
    }

    #[test]
    fn baselines_without_the_limit_field_still_load() {
        let b = Baseline::new(web(), t(0));
        let mut v = serde_json::to_value(&b).unwrap();
        assert!(v["learning"].get("element_limit").is_none());
        v["learning"]
            .as_object_mut()
            .unwrap()
            .remove("element_limit");
        let back: Baseline = serde_json::from_value(v).unwrap();
        assert_eq!(back.learning.element_limit, None);
    }

    mod element_limit {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever a workload runs, in whatever order, the baseline never holds more than
            /// the limit; every execution outside it is a deviation or a refusal, never
            /// silently allowed; and refusals are counted one for one.
            #[test]
            fn never_grows_past_the_limit_and_never_allows_what_it_refused(
                limit in 1usize..12,
                runs in proptest::collection::vec((0usize..30, any::<bool>()), 0..200),
                auto in any::<bool>(),
            ) {
                // Learning may also end by its window (at 150 s) before the limit is reached.
                let policy = LearningPolicy {
                    max_window: Duration::from_secs(150),
                    auto_enforce: auto,
                    ..LearningPolicy::default()
                };
                let mut b = Baseline::new(web(), t(0));
                let mut refused = 0u64;
                for (i, (n, check)) in runs.iter().enumerate() {
                    let ev = exec(&format!("/bin/t{n}"), ExecContext::Descendant, "p1");
                    let known = b.allows(&ElementKey::of(&ev));
                    let o = b.observe(&ev, t(i as u64), RELEARN, limit);
                    prop_assert!(b.elements.len() <= limit);
                    match o {
                        Observation::Refused => {
                            refused += 1;
                            prop_assert!(!b.elements.contains_key(&ElementKey::of(&ev)));
                            prop_assert_eq!(b.state, BaselineState::PendingReview);
                        }
                        Observation::Known => prop_assert!(known),
                        Observation::Learned { .. } => {
                            prop_assert_eq!(b.state, BaselineState::Learning)
                        }
                        Observation::Deviation => {
                            prop_assert!(!known);
                            prop_assert_ne!(b.state, BaselineState::Learning);
                            prop_assert!(!b.held_at_element_limit());
                        }
                        Observation::Probe | Observation::Partial => {
                            prop_assert!(false, "no probes or unread execs were sent")
                        }
                    }
                    if b.learning.element_limit.is_some() {
                        prop_assert_ne!(b.state, BaselineState::Enforced, "never enforced unreviewed");
                    }
                    if *check {
                        b.evaluate_learning(&policy, t(i as u64));
                    }
                }
                let counted = b.learning.element_limit.as_ref().map_or(0, |l| l.refused);
                prop_assert_eq!(counted, refused);
                if refused > 0 {
                    prop_assert_eq!(b.state, BaselineState::PendingReview);
                    prop_assert_eq!(b.learning.end_reason.as_deref(), Some(ELEMENT_LIMIT_REASON));
                }
            }
        }
    }

    #[test]
    fn matcher_checks_exe_and_script() {
        let mut b = Baseline::new(web(), t(0));
        let mut py = exec("/usr/bin/python3", ExecContext::Entrypoint, "p1");
        py.script_path = Some("/app/main.py".into());
        b.observe(&py, t(1), RELEARN, CAP);
        let learning = Matcher::new([&b]);
        assert_eq!(
            check(&learning, "/usr/bin/python3", "", "/app/main.py", t(3)),
            Verdict::Learning
        );
        b.approve(None, t(2));
        let m = Matcher::new([&b]);
        assert_eq!(
            check(&m, "/usr/bin/python3", "", "/app/main.py", t(3)),
            Verdict::Allowed
        );
        assert_eq!(
            check(&m, "/usr/bin/python3", "", "/tmp/evil.py", t(3)),
            Verdict::Deviation
        );
        assert_eq!(check(&m, "/bin/sh", "", "", t(3)), Verdict::Deviation);
    }

    /// Content identity: the tests below try to slip a different file past an allowed element.
    mod content {
        use super::*;
        use crate::incident::{severity, Severity, CONTENT_UNVERIFIED, MODIFIED_EXECUTABLE};
        use proptest::prelude::*;

        const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

        /// An exec of `path` with content `sha` (`None`: unhashed) from image `digest`.
        fn run(path: &str, sha: Option<&str>, digest: &str) -> ProcessEvent {
            let mut e = exec(path, ExecContext::Descendant, "p1");
            e.exe_sha256 = sha.map(str::to_string);
            if sha.is_none() {
                e.mark_missing("exe_sha256");
            }
            e.container.as_mut().unwrap().image_digest = Some(digest.into());
            e
        }

        /// `ev` as the sensor reports a file written into the container's writable layer.
        fn written(mut ev: ProcessEvent) -> ProcessEvent {
            ev.origin = Origin::WritableLayer;
            ev.exe_writable_location = true;
            ev
        }

        /// `/bin/sleep` learned with content A under image `sha256:a`, then approved.
        fn approved() -> Baseline {
            let mut b = Baseline::new(web(), t(0));
            b.observe(&run("/bin/sleep", Some(A), "sha256:a"), t(1), RELEARN, CAP);
            b.approve(None, t(2));
            b
        }

        /// What the server decides and what the sensor decides for one exec; both must agree.
        fn decide(b: &mut Baseline, ev: &ProcessEvent, now: SystemTime) -> (Observation, Verdict) {
            let verdict = Matcher::new([&*b]).check(ev, now);
            (b.observe(ev, now, RELEARN, CAP), verdict)
        }

        /// `run`, but the sensor lost the race for argv: the applet is unread.
        fn unread(path: &str, sha: Option<&str>, digest: &str) -> ProcessEvent {
            let mut e = run(path, sha, digest);
            e.applet = Some(crate::element::UNREADABLE.into());
            e.mark_missing("argv");
            e.mark_missing("applet");
            e
        }

        #[test]
        fn an_unread_applet_of_an_allowed_file_is_coverage_and_nothing_else_is() {
            let mut b = approved();
            // The workload's own file, approved content: coverage, counted, not learned.
            let own = unread("/bin/sleep", Some(A), "sha256:a");
            assert_eq!(
                decide(&mut b, &own, t(5)),
                (Observation::Partial, Verdict::Partial)
            );
            assert_eq!(b.coverage.unread_invocations, 1);
            assert_eq!(b.coverage.partial_events, 1);
            assert_eq!(b.coverage.last_partial_at, Some(t(5)));
            assert!(!b
                .elements
                .keys()
                .any(|k| k.applet == crate::element::UNREADABLE));
            // Another content at the allowed path, no hash, a file no element allows, a
            // writable-layer or fileless file: what was read already deviates.
            let other = unread("/bin/sleep", Some(B), "sha256:a");
            let unhashed = unread("/bin/sleep", None, "sha256:a");
            let unknown = unread("/bin/busybox", Some(A), "sha256:a");
            let mut dropped = unread("/bin/sleep", Some(A), "sha256:a");
            dropped.exe_writable_location = true;
            let mut gone = unread("/bin/sleep", Some(A), "sha256:a");
            gone.exe_deleted = true;
            for ev in [other, unhashed, unknown, dropped, gone] {
                assert_eq!(
                    decide(&mut b, &ev, t(6)),
                    (Observation::Deviation, Verdict::Deviation),
                    "{ev:?}"
                );
            }
            // Unread from the image: counted (the first four); all six were partial.
            assert_eq!(b.coverage.unread_invocations, 4);
            assert_eq!(b.coverage.partial_events, 6);
        }

        #[test]
        fn an_applet_named_unreadable_in_argv_is_not_unread() {
            // argv[0] is the process's own: `[unreadable]` there, without the sensor saying
            // argv was missing, is just an applet no element allows.
            let mut b = approved();
            let mut forged = run("/bin/sleep", Some(A), "sha256:a");
            forged.applet = Some(crate::element::UNREADABLE.into());
            assert!(!unread_invocation(&forged));
            assert_eq!(
                decide(&mut b, &forged, t(5)),
                (Observation::Deviation, Verdict::Deviation)
            );
            assert_eq!(b.coverage, Coverage::default());
        }

        #[test]
        fn training_learns_nothing_from_an_unread_applet() {
            let mut b = Baseline::new(web(), t(0));
            let o = b.observe(
                &unread("/bin/busybox", Some(A), "sha256:a"),
                t(1),
                RELEARN,
                CAP,
            );
            assert_eq!(o, Observation::Partial);
            assert!(b.elements.is_empty());
            assert_eq!(b.coverage.unread_invocations, 1);
            // An exec session's unread applet is held for review (shown, never allowed).
            let mut session = unread("/usr/bin/id", Some(A), "sha256:a");
            session.context = ExecContext::ExecSession;
            let o = b.observe(&session, t(2), RELEARN, CAP);
            assert!(
                matches!(
                    o,
                    Observation::Learned {
                        status: ElementStatus::NeedsReview
                    }
                ),
                "{o:?}"
            );
            assert!(!b.allows(&ElementKey::of(&session)));
            assert_eq!(b.coverage.unread_invocations, 2);
        }

        #[test]
        fn training_pins_the_content_an_element_ran_with() {
            let b = approved();
            assert_eq!(
                b.elements[&ElementKey::exe("/bin/sleep")].approved_sha256,
                vec![A.to_string()]
            );
        }

        #[test]
        fn a_replaced_binary_at_an_allowed_path_is_a_modified_executable() {
            let mut b = approved();
            let same = run("/bin/sleep", Some(A), "sha256:a");
            assert_eq!(
                decide(&mut b, &same, t(3)),
                (Observation::Known, Verdict::Allowed)
            );
            let replaced = run("/bin/sleep", Some(B), "sha256:a");
            assert_eq!(
                decide(&mut b, &replaced, t(4)),
                (Observation::Deviation, Verdict::Deviation)
            );
            let (sev, reason) = severity(&replaced, &b);
            assert_eq!(sev, Severity::High);
            assert!(reason.starts_with(MODIFIED_EXECUTABLE), "{reason}");
            assert!(reason.contains(&B[..12]), "{reason}");
            // Running it again does not make it known, and the approved content is unchanged.
            assert_eq!(
                decide(&mut b, &replaced, t(5)),
                (Observation::Deviation, Verdict::Deviation)
            );
            assert_eq!(
                b.elements[&ElementKey::exe("/bin/sleep")].approved_sha256,
                vec![A.to_string()]
            );
            // In a baseline still pending review it is not discounted to low.
            let mut pending = Baseline::new(web(), t(0));
            pending.observe(&run("/bin/sleep", Some(A), "sha256:a"), t(1), RELEARN, CAP);
            pending.state = BaselineState::PendingReview;
            assert_eq!(
                decide(&mut pending, &replaced, t(3)),
                (Observation::Deviation, Verdict::Deviation)
            );
            assert_eq!(severity(&replaced, &pending).0, Severity::High);
        }

        #[test]
        fn a_new_image_relearns_the_content_of_files_from_the_image() {
            let mut b = approved();
            let v = b.version;
            let rebuilt = run("/bin/sleep", Some(B), "sha256:b");
            // The sensor does not know the new digest: the server will open the window.
            assert_eq!(
                decide(&mut b, &rebuilt, t(3)),
                (Observation::Known, Verdict::Learning)
            );
            assert!(b.version > v, "a learned content is a new version (pushed)");
            assert!(b.elements[&ElementKey::exe("/bin/sleep")].approves(B));
            // Inside the window, and long after it, both contents are allowed.
            assert_eq!(
                decide(&mut b, &rebuilt, t(4)),
                (Observation::Known, Verdict::Allowed)
            );
            let later = t(3 + RELEARN.as_secs() + 1);
            for sha in [A, B] {
                let ev = run("/bin/sleep", Some(sha), "sha256:b");
                assert_eq!(
                    decide(&mut b, &ev, later),
                    (Observation::Known, Verdict::Allowed)
                );
            }
            // Once the window closed, a third content is modified again.
            let third = run("/bin/sleep", Some(&"c".repeat(64)), "sha256:b");
            assert_eq!(
                decide(&mut b, &third, later),
                (Observation::Deviation, Verdict::Deviation)
            );
        }

        #[test]
        fn in_the_window_a_file_not_from_the_image_is_still_modified() {
            let mut b = approved();
            // The window opens with the new image's first exec.
            b.observe(&run("/bin/sleep", Some(A), "sha256:b"), t(3), RELEARN, CAP);
            assert!(b.relearning(t(4)));
            let copied = written(run("/bin/sleep", Some(B), "sha256:b"));
            assert_eq!(
                decide(&mut b, &copied, t(4)),
                (Observation::Deviation, Verdict::Deviation)
            );
            assert!(!b.elements[&ElementKey::exe("/bin/sleep")].approves(B));
            assert_eq!(severity(&copied, &b).0, Severity::High);
            // A copy-up with the image's content (a chmod) is the image's file: the sensor
            // classifies it `image`, and it is the approved file.
            let chmodded = run("/bin/sleep", Some(A), "sha256:b");
            assert_eq!(
                decide(&mut b, &chmodded, t(4)),
                (Observation::Known, Verdict::Allowed)
            );
            // A fileless one is never the file at the path.
            let mut deleted = run("/bin/sleep", Some(B), "sha256:b");
            deleted.exe_deleted = true;
            assert_eq!(
                decide(&mut b, &deleted, t(4)),
                (Observation::Deviation, Verdict::Deviation)
            );
            assert!(!b.elements[&ElementKey::exe("/bin/sleep")].approves(B));
        }

        #[test]
        fn training_does_not_learn_a_file_dropped_at_an_allowed_path() {
            let mut b = Baseline::new(web(), t(0));
            b.observe(&run("/bin/sleep", Some(A), "sha256:a"), t(1), RELEARN, CAP);
            let dropped = written(run("/bin/sleep", Some(B), "sha256:a"));
            assert_eq!(b.observe(&dropped, t(2), RELEARN, CAP), Observation::Known);
            assert!(
                !b.elements[&ElementKey::exe("/bin/sleep")]
                    .origins
                    .contains(&Origin::WritableLayer),
                "a drift origin is never learned for an allowed element"
            );
            b.approve(None, t(3));
            assert_eq!(
                decide(&mut b, &dropped, t(4)),
                (Observation::Deviation, Verdict::Deviation)
            );
            // A second content from the image during training is learned (two image builds).
            let mut b = Baseline::new(web(), t(0));
            b.observe(&run("/bin/sleep", Some(A), "sha256:a"), t(1), RELEARN, CAP);
            b.observe(&run("/bin/sleep", Some(B), "sha256:b"), t(2), RELEARN, CAP);
            b.approve(None, t(3));
            for sha in [A, B] {
                let ev = run("/bin/sleep", Some(sha), "sha256:a");
                assert_eq!(
                    decide(&mut b, &ev, t(4)),
                    (Observation::Known, Verdict::Allowed)
                );
            }
        }

        #[test]
        fn an_unhashed_exec_of_a_pinned_element_is_never_silently_allowed() {
            let mut b = approved();
            let unhashed = run("/bin/sleep", None, "sha256:a");
            assert_eq!(
                decide(&mut b, &unhashed, t(3)),
                (Observation::Deviation, Verdict::Deviation)
            );
            let (sev, reason) = severity(&unhashed, &b);
            assert_eq!(sev, Severity::Medium);
            assert!(reason.starts_with(CONTENT_UNVERIFIED), "{reason}");
            // Not in a re-learning window either: there is nothing to learn.
            let mut unhashed_new_image = run("/bin/sleep", None, "sha256:b");
            unhashed_new_image.exe_sha256 = None;
            assert_eq!(
                decide(&mut b, &unhashed_new_image, t(4)),
                (Observation::Deviation, Verdict::Deviation)
            );
            // An element never seen hashed is not pinned: matched by name, as before.
            let mut b = Baseline::new(web(), t(0));
            b.observe(&run("/bin/big", None, "sha256:a"), t(1), RELEARN, CAP);
            b.approve(None, t(2));
            assert!(b.elements[&ElementKey::exe("/bin/big")]
                .approved_sha256
                .is_empty());
            for sha in [None, Some(A)] {
                let ev = run("/bin/big", sha, "sha256:a");
                assert_eq!(
                    decide(&mut b, &ev, t(3)),
                    (Observation::Known, Verdict::Allowed)
                );
            }
        }

        #[test]
        fn past_the_cap_the_oldest_content_is_forgotten_never_a_new_one_allowed() {
            let mut b = approved();
            let shas: Vec<String> = (0..APPROVED_SHA256_CAP)
                .map(|i| format!("{i:064x}"))
                .collect();
            // Sixteen image rollouts, each with a new /bin/sleep.
            let mut at = 10;
            for (i, sha) in shas.iter().enumerate() {
                let ev = run("/bin/sleep", Some(sha), &format!("sha256:v{i}"));
                assert_eq!(b.observe(&ev, t(at), RELEARN, CAP), Observation::Known);
                at += RELEARN.as_secs() + 1;
            }
            let el = &b.elements[&ElementKey::exe("/bin/sleep")];
            assert_eq!(el.approved_sha256.len(), APPROVED_SHA256_CAP);
            assert!(!el.approves(A), "the oldest content was forgotten");
            assert_eq!(el.approved_sha256, shas);
            let old = run("/bin/sleep", Some(A), "sha256:a");
            assert_eq!(
                decide(&mut b, &old, t(at)),
                (Observation::Deviation, Verdict::Deviation)
            );
        }

        #[test]
        fn allowing_a_modified_executable_approves_exactly_that_content() {
            let mut b = approved();
            let replaced = run("/bin/sleep", Some(B), "sha256:a");
            assert_eq!(
                b.observe(&replaced, t(3), RELEARN, CAP),
                Observation::Deviation
            );
            let i = crate::incident::Incident::from_deviation("1".into(), "e", &replaced, &b, t(3));
            i.allow_in(&mut b, t(4)).unwrap();
            let el = &b.elements[&ElementKey::exe("/bin/sleep")];
            assert_eq!(el.approved_sha256, vec![A.to_string(), B.to_string()]);
            assert_eq!(
                decide(&mut b, &replaced, t(5)),
                (Observation::Known, Verdict::Allowed)
            );
            let third = run("/bin/sleep", Some(&"c".repeat(64)), "sha256:a");
            assert_eq!(
                decide(&mut b, &third, t(5)),
                (Observation::Deviation, Verdict::Deviation)
            );
        }

        #[test]
        fn drift_is_never_learned_even_during_training() {
            let mut b = Baseline::new(web(), t(0));
            for (origin, reason) in [
                (Origin::WritableLayer, "drift-writable-layer"),
                (Origin::Volume, "drift-volume"),
            ] {
                let mut ev = run(&format!("/mnt/{origin}"), Some(B), "sha256:a");
                ev.origin = origin;
                assert_eq!(
                    b.observe(&ev, t(1), RELEARN, CAP),
                    Observation::Learned {
                        status: ElementStatus::NeedsReview
                    }
                );
                let el = &b.elements[&ElementKey::of(&ev)];
                assert_eq!(el.review_reasons, vec![reason]);
                // Held with what a person will see: its content and its origin.
                assert!(el.approves(B) && el.origins.contains(&origin), "{el:?}");
            }
            let mut memfd = run("memfd:x", None, "sha256:a");
            memfd.exe_memfd = true;
            memfd.origin = Origin::Fileless;
            b.observe(&memfd, t(1), RELEARN, CAP);
            assert!(b.elements[&ElementKey::of(&memfd)]
                .review_reasons
                .contains(&"drift-fileless".to_string()));
            // Approving the whole baseline does not sweep drift in: it still deviates.
            b.approve(None, t(2));
            let mut tmp = run("/mnt/writable-layer", Some(B), "sha256:a");
            tmp.origin = Origin::WritableLayer;
            assert_eq!(
                decide(&mut b, &tmp, t(3)),
                (Observation::Deviation, Verdict::Deviation)
            );
            let (sev, reason) = severity(&tmp, &b);
            assert_eq!(sev, Severity::High);
            assert_eq!(
                reason,
                "drift: executable from the container's writable layer"
            );
            // A person approves exactly that element: that content from that origin runs.
            b.approve(Some(&[ElementKey::of(&tmp)]), t(4));
            assert_eq!(
                decide(&mut b, &tmp, t(5)),
                (Observation::Known, Verdict::Allowed)
            );
            // Another content at the same path is still a modified executable, and named drift.
            let other = written(run("/mnt/writable-layer", Some(A), "sha256:a"));
            assert_eq!(
                decide(&mut b, &other, t(5)),
                (Observation::Deviation, Verdict::Deviation)
            );
            let (sev, reason) = severity(&other, &b);
            assert_eq!(sev, Severity::High);
            assert!(
                reason.starts_with(MODIFIED_EXECUTABLE) && reason.contains("writable layer"),
                "{reason}"
            );
        }

        #[test]
        fn an_allowed_image_binary_run_from_outside_the_image_is_drift() {
            let mut b = approved();
            // Same path, same content, but the file the kernel ran is not the image's (a bind
            // mount over /bin, or the writable layer after the image changed the file).
            for origin in [Origin::WritableLayer, Origin::Volume] {
                let mut ev = run("/bin/sleep", Some(A), "sha256:a");
                ev.origin = origin;
                assert_eq!(
                    decide(&mut b, &ev, t(3)),
                    (Observation::Deviation, Verdict::Deviation),
                    "{origin}"
                );
                assert_eq!(severity(&ev, &b).1, origin.drift_reason());
            }
            // Unknown and image are not drift; a chmod's copy-up is classified image.
            for origin in [Origin::Unknown, Origin::Image] {
                let mut ev = run("/bin/sleep", Some(A), "sha256:a");
                ev.origin = origin;
                assert_eq!(
                    decide(&mut b, &ev, t(3)),
                    (Observation::Known, Verdict::Allowed),
                    "{origin}"
                );
            }
            // Nothing about the exec changed the element: drift is never learned.
            let el = &b.elements[&ElementKey::exe("/bin/sleep")];
            assert_eq!(el.approved_sha256, vec![A.to_string()]);
            assert!(el.origins.iter().all(|o| !o.is_drift()), "{el:?}");
        }

        #[test]
        fn a_relearning_window_never_learns_drift() {
            let mut b = approved();
            // The new image's first exec opens the window.
            b.observe(&run("/bin/sleep", Some(A), "sha256:b"), t(3), RELEARN, CAP);
            assert!(b.relearning(t(4)));
            // New elements from the image are learned, drift is a deviation...
            assert_eq!(
                decide(&mut b, &run("/bin/new", Some(B), "sha256:b"), t(4)),
                (
                    Observation::Learned {
                        status: ElementStatus::Learned
                    },
                    Verdict::Learning
                )
            );
            for origin in [Origin::WritableLayer, Origin::Volume] {
                let mut ev = run("/tmp/dropped", Some(B), "sha256:b");
                ev.origin = origin;
                assert_eq!(
                    decide(&mut b, &ev, t(4)),
                    (Observation::Deviation, Verdict::Deviation)
                );
                assert!(!b.elements.contains_key(&ElementKey::of(&ev)));
                // ...and so is a new content of an allowed element from outside the image.
                let mut replaced = run("/bin/sleep", Some(B), "sha256:b");
                replaced.origin = origin;
                assert_eq!(
                    decide(&mut b, &replaced, t(4)),
                    (Observation::Deviation, Verdict::Deviation)
                );
                assert!(!b.elements[&ElementKey::exe("/bin/sleep")].approves(B));
            }
        }

        #[test]
        fn host_processes_and_unknown_origins_are_not_drift() {
            let mut b = Baseline::new(web(), t(0));
            let mut host = run("/usr/local/bin/agent", Some(A), "sha256:a");
            host.container = None;
            host.origin = Origin::Host;
            let mut unknown = run("/bin/unknown", Some(A), "sha256:a");
            unknown.origin = Origin::Unknown;
            for ev in [&host, &unknown] {
                assert_eq!(
                    b.observe(ev, t(1), RELEARN, CAP),
                    Observation::Learned {
                        status: ElementStatus::Learned
                    }
                );
                assert_eq!(ev.drift(), None);
            }
            assert_eq!(
                b.elements[&ElementKey::of(&unknown)].origins,
                BTreeSet::from([Origin::Unknown]),
                "recorded as unknown, never as the image"
            );
        }

        fn arb_event() -> impl Strategy<Value = ProcessEvent> {
            (
                0usize..5,
                prop_oneof![Just(None), Just(Some(A)), Just(Some(B))],
                0usize..3,
                any::<bool>(),
                any::<bool>(),
                0usize..Origin::ALL.len(),
                0usize..3,
                any::<bool>(),
            )
                .prop_map(
                    |(exe, sha, digest, writable, deleted, origin, ctx, unread)| {
                        let mut e = run(
                            ["/bin/sleep", "/bin/big", "/bin/new", "/tmp/tool", "/bin/sh"][exe],
                            sha,
                            ["sha256:a", "sha256:b", "sha256:c"][digest],
                        );
                        e.origin = Origin::ALL[origin];
                        e.exe_writable_location = writable || e.origin.is_drift();
                        e.exe_deleted = deleted;
                        e.context = [
                            ExecContext::Descendant,
                            ExecContext::ExecSession,
                            ExecContext::Entrypoint,
                        ][ctx];
                        if e.origin == Origin::Host {
                            e.container = None;
                        }
                        if unread {
                            e.applet = Some(crate::element::UNREADABLE.into());
                            e.mark_missing("applet");
                        }
                        e
                    },
                )
        }

        proptest! {
            /// The sensor never allows what the server flags, and flags only what the server
            /// flags; "learning" defers to the server. Checked along random runs, with time
            /// passing through re-learning windows.
            #[test]
            fn matcher_and_observe_agree(
                runs in proptest::collection::vec((arb_event(), 0u64..400), 1..60),
            ) {
                let mut b = approved();
                b.observe(&run("/bin/big", None, "sha256:a"), t(2), RELEARN, CAP);
                // An element a person allowed from the writable layer (an incident allowed).
                let tool = written(run("/tmp/tool", Some(A), "sha256:a"));
                assert_eq!(b.observe(&tool, t(3), RELEARN, CAP), Observation::Deviation);
                let i = crate::incident::Incident::from_deviation("1".into(), "e", &tool, &b, t(3));
                i.allow_in(&mut b, t(4)).unwrap();
                let mut now = 10;
                for (ev, step) in runs {
                    now += step;
                    let (o, v) = decide(&mut b, &ev, t(now));
                    match v {
                        Verdict::Allowed => prop_assert_eq!(o, Observation::Known, "{:?}", ev),
                        Verdict::Deviation => prop_assert!(
                            matches!(o, Observation::Deviation | Observation::Refused),
                            "{:?} {:?}", o, ev
                        ),
                        Verdict::Learning => prop_assert!(b.relearning(t(now))),
                        Verdict::Partial => prop_assert_eq!(o, Observation::Partial, "{:?}", ev),
                    }
                }
            }
        }
    }
}
