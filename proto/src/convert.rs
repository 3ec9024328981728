//! The one place where protobuf messages become `procguard-core` domain types and back.
//!
//! Conversions *into* the domain are fallible ([`ConvertError`]): they are where untrusted bytes
//! from the network meet the pure core, so every required field and every enum value is checked
//! here, and the gRPC adapters turn a [`ConvertError`] into `INVALID_ARGUMENT`.

use crate::v1 as pb;
use procguard_core::baseline::{
    Coverage, ElementLimit, LearningSummary, ObservedCounts, Provenance,
};
use procguard_core::process::Ancestor;
use procguard_core::{
    Baseline, BaselineState, Completeness, ContainerInfo, ContainerRuntime, Element, ElementKey,
    ElementStatus, ExecContext, Origin, ProcessEvent, QosClass, WorkloadIdentity, WorkloadKind,
};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A protobuf message that does not describe a valid domain value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    /// A required field is absent.
    #[error("field '{0}' is required")]
    Missing(&'static str),
    /// An enum holds UNSPECIFIED or a value this build does not know.
    #[error(
        "field '{field}' has invalid value {value}; send one of the documented non-zero values"
    )]
    BadEnum {
        /// Field name.
        field: &'static str,
        /// Value received.
        value: i32,
    },
    /// A field is malformed.
    #[error("field '{field}' is invalid: {reason}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

type Result<T> = std::result::Result<T, ConvertError>;

pub mod audit;
pub mod content;
pub mod incident;
pub mod record;
pub mod review;

/// Converts a time to a protobuf timestamp.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Converts a protobuf timestamp to a time; negative or absurd values clamp to the epoch.
pub fn system_time(t: &prost_types::Timestamp) -> SystemTime {
    if t.seconds < 0 || t.nanos < 0 {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos.min(999_999_999) as u32)
}

fn opt_time(t: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    t.map(system_time)
}

fn opt_string(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Domain kind to protobuf.
pub fn kind_to_pb(k: WorkloadKind) -> pb::WorkloadKind {
    match k {
        WorkloadKind::Deployment => pb::WorkloadKind::Deployment,
        WorkloadKind::StatefulSet => pb::WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet => pb::WorkloadKind::DaemonSet,
        WorkloadKind::Job => pb::WorkloadKind::Job,
        WorkloadKind::CronJob => pb::WorkloadKind::CronJob,
        WorkloadKind::Pod => pb::WorkloadKind::Pod,
        WorkloadKind::ReplicaSet => pb::WorkloadKind::ReplicaSet,
        WorkloadKind::Container => pb::WorkloadKind::Container,
        WorkloadKind::Host => pb::WorkloadKind::Host,
    }
}

/// Protobuf kind to domain.
pub fn kind_from_pb(v: i32) -> Result<WorkloadKind> {
    Ok(
        match pb::WorkloadKind::try_from(v).unwrap_or(pb::WorkloadKind::Unspecified) {
            pb::WorkloadKind::Deployment => WorkloadKind::Deployment,
            pb::WorkloadKind::StatefulSet => WorkloadKind::StatefulSet,
            pb::WorkloadKind::DaemonSet => WorkloadKind::DaemonSet,
            pb::WorkloadKind::Job => WorkloadKind::Job,
            pb::WorkloadKind::CronJob => WorkloadKind::CronJob,
            pb::WorkloadKind::Pod => WorkloadKind::Pod,
            pb::WorkloadKind::ReplicaSet => WorkloadKind::ReplicaSet,
            pb::WorkloadKind::Container => WorkloadKind::Container,
            pb::WorkloadKind::Host => WorkloadKind::Host,
            pb::WorkloadKind::Unspecified => {
                return Err(ConvertError::BadEnum {
                    field: "workload.kind",
                    value: v,
                })
            }
        },
    )
}

impl From<&WorkloadIdentity> for pb::WorkloadIdentity {
    fn from(id: &WorkloadIdentity) -> Self {
        pb::WorkloadIdentity {
            cluster: id.cluster.clone(),
            namespace: id.namespace.clone(),
            kind: kind_to_pb(id.kind) as i32,
            workload_name: id.workload_name.clone(),
            container_name: id.container_name.clone(),
        }
    }
}

impl TryFrom<&pb::WorkloadIdentity> for WorkloadIdentity {
    type Error = ConvertError;
    fn try_from(p: &pb::WorkloadIdentity) -> Result<Self> {
        let id = WorkloadIdentity::new(
            p.cluster.clone(),
            p.namespace.clone(),
            kind_from_pb(p.kind)?,
            p.workload_name.clone(),
            p.container_name.clone(),
        );
        id.validate().map_err(|e| ConvertError::Invalid {
            field: "workload",
            reason: e.to_string(),
        })?;
        Ok(id)
    }
}

/// Reads a required identity field.
pub fn identity(p: Option<&pb::WorkloadIdentity>) -> Result<WorkloadIdentity> {
    WorkloadIdentity::try_from(p.ok_or(ConvertError::Missing("workload"))?)
}

fn runtime_to_pb(r: Option<ContainerRuntime>) -> pb::ContainerRuntime {
    match r {
        None => pb::ContainerRuntime::Unspecified,
        Some(ContainerRuntime::Containerd) => pb::ContainerRuntime::Containerd,
        Some(ContainerRuntime::CriO) => pb::ContainerRuntime::Crio,
        Some(ContainerRuntime::Docker) => pb::ContainerRuntime::Docker,
        Some(ContainerRuntime::Podman) => pb::ContainerRuntime::Podman,
    }
}

fn runtime_from_pb(v: i32) -> Option<ContainerRuntime> {
    match pb::ContainerRuntime::try_from(v).ok()? {
        pb::ContainerRuntime::Unspecified => None,
        pb::ContainerRuntime::Containerd => Some(ContainerRuntime::Containerd),
        pb::ContainerRuntime::Crio => Some(ContainerRuntime::CriO),
        pb::ContainerRuntime::Docker => Some(ContainerRuntime::Docker),
        pb::ContainerRuntime::Podman => Some(ContainerRuntime::Podman),
    }
}

fn qos_to_pb(q: Option<QosClass>) -> pb::QosClass {
    match q {
        None => pb::QosClass::Unspecified,
        Some(QosClass::Guaranteed) => pb::QosClass::Guaranteed,
        Some(QosClass::Burstable) => pb::QosClass::Burstable,
        Some(QosClass::BestEffort) => pb::QosClass::BestEffort,
    }
}

fn qos_from_pb(v: i32) -> Option<QosClass> {
    match pb::QosClass::try_from(v).ok()? {
        pb::QosClass::Unspecified => None,
        pb::QosClass::Guaranteed => Some(QosClass::Guaranteed),
        pb::QosClass::Burstable => Some(QosClass::Burstable),
        pb::QosClass::BestEffort => Some(QosClass::BestEffort),
    }
}

/// Domain context to protobuf.
pub fn context_to_pb(c: ExecContext) -> pb::ExecContext {
    match c {
        ExecContext::Entrypoint => pb::ExecContext::Entrypoint,
        ExecContext::Probe => pb::ExecContext::Probe,
        ExecContext::ExecSession => pb::ExecContext::ExecSession,
        ExecContext::Descendant => pb::ExecContext::Descendant,
        ExecContext::Host => pb::ExecContext::Host,
    }
}

fn context_from_pb(v: i32) -> Result<ExecContext> {
    Ok(
        match pb::ExecContext::try_from(v).unwrap_or(pb::ExecContext::Unspecified) {
            pb::ExecContext::Entrypoint => ExecContext::Entrypoint,
            pb::ExecContext::Probe => ExecContext::Probe,
            pb::ExecContext::ExecSession => ExecContext::ExecSession,
            pb::ExecContext::Descendant => ExecContext::Descendant,
            pb::ExecContext::Host => ExecContext::Host,
            pb::ExecContext::Unspecified => {
                return Err(ConvertError::BadEnum {
                    field: "process.context",
                    value: v,
                })
            }
        },
    )
}

/// Domain origin to protobuf.
pub fn origin_to_pb(o: Origin) -> pb::Origin {
    match o {
        Origin::Unknown => pb::Origin::Unknown,
        Origin::Image => pb::Origin::Image,
        Origin::WritableLayer => pb::Origin::WritableLayer,
        Origin::Volume => pb::Origin::Volume,
        Origin::Fileless => pb::Origin::Fileless,
        Origin::Host => pb::Origin::Host,
    }
}

/// Protobuf origin to domain. UNSPECIFIED (a sender older than origins) and any value this
/// build does not know read as [`Origin::Unknown`]: what cannot be told is said to be unknown,
/// never guessed, and never drift.
pub fn origin_from_pb(v: i32) -> Origin {
    match pb::Origin::try_from(v).unwrap_or(pb::Origin::Unspecified) {
        pb::Origin::Image => Origin::Image,
        pb::Origin::WritableLayer => Origin::WritableLayer,
        pb::Origin::Volume => Origin::Volume,
        pb::Origin::Fileless => Origin::Fileless,
        pb::Origin::Host => Origin::Host,
        pb::Origin::Unknown | pb::Origin::Unspecified => Origin::Unknown,
    }
}

/// A set of origins to protobuf.
pub fn origins_to_pb(set: &BTreeSet<Origin>) -> Vec<i32> {
    set.iter().map(|o| origin_to_pb(*o) as i32).collect()
}

/// A set of origins (an element's) to domain. UNSPECIFIED and values this build does not
/// know are left out: an element is never allowed from an origin nobody can name.
pub fn origins_from_pb(values: &[i32]) -> BTreeSet<Origin> {
    values
        .iter()
        .filter(|v| {
            !matches!(
                pb::Origin::try_from(**v),
                Ok(pb::Origin::Unspecified) | Err(_)
            )
        })
        .map(|v| origin_from_pb(*v))
        .collect()
}

impl From<&ContainerInfo> for pb::ContainerInfo {
    fn from(c: &ContainerInfo) -> Self {
        pb::ContainerInfo {
            container_id: c.container_id.clone(),
            runtime: runtime_to_pb(c.runtime) as i32,
            pod_uid: c.pod_uid.clone().unwrap_or_default(),
            pod_name: c.pod_name.clone().unwrap_or_default(),
            qos: qos_to_pb(c.qos) as i32,
            image: c.image.clone().unwrap_or_default(),
            image_digest: c.image_digest.clone().unwrap_or_default(),
            pod_labels: c.pod_labels.clone().into_iter().collect(),
        }
    }
}

impl From<&pb::ContainerInfo> for ContainerInfo {
    fn from(c: &pb::ContainerInfo) -> Self {
        ContainerInfo {
            container_id: c.container_id.clone(),
            runtime: runtime_from_pb(c.runtime),
            pod_uid: opt_string(&c.pod_uid),
            pod_name: opt_string(&c.pod_name),
            qos: qos_from_pb(c.qos),
            image: opt_string(&c.image),
            image_digest: opt_string(&c.image_digest),
            pod_labels: c.pod_labels.clone().into_iter().collect(),
        }
    }
}

impl From<&ProcessEvent> for pb::ProcessEvent {
    fn from(e: &ProcessEvent) -> Self {
        pb::ProcessEvent {
            pid: e.pid,
            ppid: e.ppid,
            ancestors: e
                .ancestors
                .iter()
                .map(|a| pb::Ancestor {
                    pid: a.pid,
                    exe_path: a.exe_path.clone(),
                })
                .collect(),
            start_time: e.start_time.map(timestamp),
            uid: e.uid,
            gid: e.gid,
            comm: e.comm.clone(),
            exe_path: e.exe_path.clone(),
            argv: e.argv.clone(),
            argv_truncated: e.argv_truncated,
            script_path: e.script_path.clone().unwrap_or_default(),
            applet: e.applet.clone().unwrap_or_default(),
            exec_session: e.exec_session.clone().unwrap_or_default(),
            exe_sha256: e.exe_sha256.clone().unwrap_or_default(),
            exe_memfd: e.exe_memfd,
            exe_deleted: e.exe_deleted,
            exe_writable_location: e.exe_writable_location,
            container: e.container.as_ref().map(Into::into),
            workload: Some((&e.workload).into()),
            context: context_to_pb(e.context) as i32,
            completeness: match e.completeness {
                Completeness::Full => pb::Completeness::Full,
                Completeness::Partial => pb::Completeness::Partial,
            } as i32,
            missing: e.missing.clone(),
            node_name: e.node_name.clone(),
            attributed_late_ms: e.attributed_late_ms.unwrap_or(0),
            origin: origin_to_pb(e.origin) as i32,
        }
    }
}

impl TryFrom<&pb::ProcessEvent> for ProcessEvent {
    type Error = ConvertError;
    fn try_from(p: &pb::ProcessEvent) -> Result<Self> {
        if p.exe_path.is_empty() {
            return Err(ConvertError::Missing("process.exe_path"));
        }
        Ok(ProcessEvent {
            pid: p.pid,
            ppid: p.ppid,
            ancestors: p
                .ancestors
                .iter()
                .map(|a| Ancestor {
                    pid: a.pid,
                    exe_path: a.exe_path.clone(),
                })
                .collect(),
            start_time: opt_time(p.start_time.as_ref()),
            uid: p.uid,
            gid: p.gid,
            comm: p.comm.clone(),
            exe_path: p.exe_path.clone(),
            argv: p.argv.clone(),
            argv_truncated: p.argv_truncated,
            applet: opt_string(&p.applet),
            exec_session: opt_string(&p.exec_session),
            script_path: opt_string(&p.script_path),
            exe_sha256: opt_string(&p.exe_sha256),
            exe_memfd: p.exe_memfd,
            exe_deleted: p.exe_deleted,
            exe_writable_location: p.exe_writable_location,
            container: p.container.as_ref().map(Into::into),
            workload: identity(p.workload.as_ref())?,
            context: context_from_pb(p.context)?,
            // Anything but an explicit FULL is treated as partial: never present a guess as fact.
            completeness: if p.completeness == pb::Completeness::Full as i32 {
                Completeness::Full
            } else {
                Completeness::Partial
            },
            missing: p.missing.clone(),
            node_name: p.node_name.clone(),
            attributed_late_ms: (p.attributed_late_ms > 0).then_some(p.attributed_late_ms),
            origin: origin_from_pb(p.origin),
        })
    }
}

/// Domain state to protobuf.
pub fn state_to_pb(s: BaselineState) -> pb::BaselineState {
    match s {
        BaselineState::Learning => pb::BaselineState::Learning,
        BaselineState::PendingReview => pb::BaselineState::PendingReview,
        BaselineState::Enforced => pb::BaselineState::Enforced,
    }
}

/// Protobuf state to domain; UNSPECIFIED means "any" in filters and is `None`.
pub fn state_from_pb(v: i32) -> Option<BaselineState> {
    match pb::BaselineState::try_from(v).ok()? {
        pb::BaselineState::Learning => Some(BaselineState::Learning),
        pb::BaselineState::PendingReview => Some(BaselineState::PendingReview),
        pb::BaselineState::Enforced => Some(BaselineState::Enforced),
        pb::BaselineState::Unspecified => None,
    }
}

/// Domain element status to protobuf.
pub fn status_to_pb(s: ElementStatus) -> pb::ElementStatus {
    match s {
        ElementStatus::Learned => pb::ElementStatus::Learned,
        ElementStatus::Approved => pb::ElementStatus::Approved,
        ElementStatus::NeedsReview => pb::ElementStatus::NeedsReview,
        ElementStatus::Rejected => pb::ElementStatus::Rejected,
    }
}

/// Protobuf element status to domain; UNSPECIFIED or an unknown value is an error.
pub fn status_from_pb(v: i32) -> Result<ElementStatus> {
    Ok(
        match pb::ElementStatus::try_from(v).unwrap_or(pb::ElementStatus::Unspecified) {
            pb::ElementStatus::Learned => ElementStatus::Learned,
            pb::ElementStatus::Approved => ElementStatus::Approved,
            pb::ElementStatus::NeedsReview => ElementStatus::NeedsReview,
            pb::ElementStatus::Rejected => ElementStatus::Rejected,
            pb::ElementStatus::Unspecified => {
                return Err(ConvertError::BadEnum {
                    field: "element.status",
                    value: v,
                })
            }
        },
    )
}

/// Element reference to domain key. A content (`sha256`) is refused here: only AddElements
/// approves one ([`element_content`]).
pub fn element_key(r: &pb::ElementRef) -> Result<ElementKey> {
    if !r.sha256.is_empty() {
        return Err(ConvertError::Invalid {
            field: "element.sha256",
            reason: "only AddElements approves a content ('procguardctl baselines add --sha256'); leave it empty here".into(),
        });
    }
    key_of(r)
}

fn key_of(r: &pb::ElementRef) -> Result<ElementKey> {
    if r.exe_path.is_empty() {
        return Err(ConvertError::Missing("element.exe_path"));
    }
    Ok(ElementKey {
        exe_path: r.exe_path.clone(),
        applet: r.applet.clone(),
        script_path: r.script_path.clone(),
    })
}

/// An element reference of AddElements: the element, and the content to approve for it
/// (`None` when `sha256` is empty), which must be 64 lowercase hex digits.
pub fn element_content(r: &pb::ElementRef) -> Result<(ElementKey, Option<String>)> {
    let key = key_of(r)?;
    if r.sha256.is_empty() {
        return Ok((key, None));
    }
    if !procguard_core::content::is_sha256(&r.sha256) {
        return Err(ConvertError::Invalid {
            field: "element.sha256",
            reason: format!(
                "'{}' for '{key}' is not a sha256: give 64 lowercase hex digits (as 'sha256sum' prints them)",
                r.sha256
            ),
        });
    }
    Ok((key, Some(r.sha256.clone())))
}

/// Domain key to element reference.
pub fn element_ref(k: &ElementKey) -> pb::ElementRef {
    pb::ElementRef {
        exe_path: k.exe_path.clone(),
        script_path: k.script_path.clone(),
        applet: k.applet.clone(),
        sha256: String::new(),
    }
}

/// Converts a baseline; `with_provenance` false leaves element provenance out (for lists).
pub fn baseline_to_pb(b: &Baseline, with_provenance: bool) -> pb::Baseline {
    pb::Baseline {
        workload: Some((&b.workload).into()),
        state: state_to_pb(b.state) as i32,
        version: b.version,
        elements: b
            .elements
            .iter()
            .map(|(k, e)| pb::BaselineElement {
                exe_path: k.exe_path.clone(),
                script_path: k.script_path.clone(),
                applet: k.applet.clone(),
                status: status_to_pb(e.status) as i32,
                review_reasons: e.review_reasons.clone(),
                provenance: with_provenance.then(|| provenance_to_pb(&e.provenance)),
                manual: e.manual,
                approved_sha256: e.approved_sha256.clone(),
                origins: origins_to_pb(&e.origins),
            })
            .collect(),
        labels: b.labels.clone().into_iter().collect(),
        learning: Some(pb::LearningSummary {
            started_at: Some(timestamp(b.learning.started_at)),
            ended_at: b.learning.ended_at.map(timestamp),
            last_new_element_at: b.learning.last_new_element_at.map(timestamp),
            pods_observed: b.learning.pods_observed(),
            nodes_observed: b.learning.nodes_observed(),
            events_observed: b.learning.events_observed,
            end_reason: b.learning.end_reason.clone().unwrap_or_default(),
            element_limit: b.learning.element_limit.as_ref().map(|l| pb::ElementLimit {
                limit: l.limit,
                reached_at: Some(timestamp(l.reached_at)),
                refused: l.refused,
            }),
        }),
        image_digests: b.image_digests.iter().cloned().collect(),
        updated_at: Some(timestamp(b.updated_at)),
        revision: b.revision,
        relearn_until: b.relearn_until.map(timestamp),
        coverage: Some(pb::Coverage {
            partial_events: b.coverage.partial_events,
            unread_invocations: b.coverage.unread_invocations,
            last_partial_at: b.coverage.last_partial_at.map(timestamp),
        }),
    }
}

/// A page of baselines as `ListBaselines` answers (without provenance), and the token of the
/// next page (`None` on the last).
pub fn baselines_page_to_pb(list: &[Baseline], next: Option<String>) -> pb::ListBaselinesResponse {
    pb::ListBaselinesResponse {
        baselines: list.iter().map(|b| baseline_to_pb(b, false)).collect(),
        next_page_token: next.unwrap_or_default(),
    }
}

/// The workloads whose baselines a bulk change changed, as `BulkApprove` and `BulkReset`
/// answer.
pub fn bulk_to_pb<'a>(changed: impl IntoIterator<Item = &'a WorkloadIdentity>) -> pb::BulkResponse {
    pb::BulkResponse {
        changed: changed.into_iter().map(Into::into).collect(),
    }
}

/// A `BulkApprove` or `BulkReset` answer back in the domain: the workloads changed.
pub fn bulk_from_pb(r: &pb::BulkResponse) -> Result<Vec<WorkloadIdentity>> {
    r.changed.iter().map(|w| identity(Some(w))).collect()
}

/// A page of baselines back in the domain, with the next page's token (empty on the last).
/// The learning summary's pod and node counts are kept as the server counted them
/// ([`baseline_from_pb`]).
pub fn baselines_page_from_pb(r: &pb::ListBaselinesResponse) -> Result<(Vec<Baseline>, String)> {
    Ok((
        r.baselines
            .iter()
            .map(baseline_from_pb)
            .collect::<Result<_>>()?,
        r.next_page_token.clone(),
    ))
}

/// The sensor stream's full set of enforced baselines at `revision` (sent on connect and to a
/// stream that lagged behind the hub).
pub fn snapshot_to_pb(revision: u64, baselines: &[Baseline]) -> pb::ServerMessage {
    pb::ServerMessage {
        body: Some(pb::server_message::Body::Snapshot(pb::BaselineSnapshot {
            revision,
            baselines: baselines.iter().map(|b| baseline_to_pb(b, false)).collect(),
        })),
    }
}

/// One changed baseline for the sensor stream; a baseline back in learning is removed from
/// the sensor's set.
pub fn update_to_pb(b: &Baseline) -> pb::ServerMessage {
    pb::ServerMessage {
        body: Some(pb::server_message::Body::Update(pb::BaselineUpdate {
            revision: b.revision,
            baseline: Some(baseline_to_pb(b, false)),
            removed: b.state == BaselineState::Learning,
        })),
    }
}

fn provenance_to_pb(p: &Provenance) -> pb::Provenance {
    pb::Provenance {
        first_seen: Some(timestamp(p.first_seen)),
        last_seen: Some(timestamp(p.last_seen)),
        count: p.count,
        nodes: p.nodes.iter().cloned().collect(),
        pods: p.pods.iter().cloned().collect(),
        parents: p.parents.iter().cloned().collect(),
        sample_argv: p.sample_argv.clone(),
        sha256: p.sha256.iter().cloned().collect(),
        image_digests: p.image_digests.iter().cloned().collect(),
        contexts: p
            .contexts
            .iter()
            .map(|c| context_to_pb(*c) as i32)
            .collect(),
    }
}

fn provenance_from_pb(p: Option<&pb::Provenance>, now: SystemTime) -> Provenance {
    let Some(p) = p else {
        return Provenance::new(now);
    };
    Provenance {
        first_seen: opt_time(p.first_seen.as_ref()).unwrap_or(now),
        last_seen: opt_time(p.last_seen.as_ref()).unwrap_or(now),
        count: p.count,
        nodes: p.nodes.iter().cloned().collect(),
        pods: p.pods.iter().cloned().collect(),
        parents: p.parents.iter().cloned().collect(),
        sample_argv: p.sample_argv.clone(),
        sha256: p.sha256.iter().cloned().collect(),
        image_digests: p.image_digests.iter().cloned().collect(),
        contexts: p
            .contexts
            .iter()
            .filter_map(|c| context_from_pb(*c).ok())
            .collect(),
    }
}

/// Reads a baseline the server sent: the sensor keeps it as its local copy, and `procguardctl`
/// prints it. An element without provenance (listings and pushes leave it out) reads as one
/// first seen at the baseline's update; the learning summary keeps the server's pod and
/// node counts ([`LearningSummary::counted`]).
pub fn baseline_from_pb(p: &pb::Baseline) -> Result<Baseline> {
    let now = opt_time(p.updated_at.as_ref()).unwrap_or(UNIX_EPOCH);
    let mut b = Baseline::new(identity(p.workload.as_ref())?, now);
    b.state = state_from_pb(p.state).ok_or(ConvertError::BadEnum {
        field: "baseline.state",
        value: p.state,
    })?;
    b.version = p.version;
    b.revision = p.revision;
    b.labels = p.labels.clone().into_iter().collect();
    b.image_digests = p.image_digests.iter().cloned().collect();
    b.relearn_until = opt_time(p.relearn_until.as_ref());
    if let Some(c) = &p.coverage {
        b.coverage = Coverage {
            partial_events: c.partial_events,
            unread_invocations: c.unread_invocations,
            last_partial_at: opt_time(c.last_partial_at.as_ref()),
        };
    }
    for e in &p.elements {
        let key = element_key(&pb::ElementRef {
            exe_path: e.exe_path.clone(),
            script_path: e.script_path.clone(),
            applet: e.applet.clone(),
            ..Default::default()
        })?;
        b.elements.insert(
            key,
            Element {
                status: status_from_pb(e.status)?,
                review_reasons: e.review_reasons.clone(),
                provenance: provenance_from_pb(e.provenance.as_ref(), now),
                manual: e.manual,
                approved_sha256: e.approved_sha256.clone(),
                origins: origins_from_pb(&e.origins),
            },
        );
    }
    if let Some(l) = &p.learning {
        b.learning = LearningSummary {
            started_at: opt_time(l.started_at.as_ref()).unwrap_or(now),
            ended_at: opt_time(l.ended_at.as_ref()),
            last_new_element_at: opt_time(l.last_new_element_at.as_ref()),
            pods: Default::default(),
            nodes: Default::default(),
            events_observed: l.events_observed,
            end_reason: opt_string(&l.end_reason),
            element_limit: l.element_limit.as_ref().map(|e| ElementLimit {
                limit: e.limit,
                reached_at: opt_time(e.reached_at.as_ref()).unwrap_or(now),
                refused: e.refused,
            }),
            // The wire carries the counts, not the sets.
            counted: Some(ObservedCounts {
                pods: l.pods_observed,
                nodes: l.nodes_observed,
            }),
        };
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_kind_is_rejected_with_the_field_name() {
        let p = pb::WorkloadIdentity {
            workload_name: "web".into(),
            ..Default::default()
        };
        let err = WorkloadIdentity::try_from(&p).unwrap_err();
        assert_eq!(
            err,
            ConvertError::BadEnum {
                field: "workload.kind",
                value: 0
            }
        );
    }

    #[test]
    fn baseline_round_trips() {
        let id = WorkloadIdentity::new("c", "ns", WorkloadKind::StatefulSet, "db", "pg");
        let mut b = Baseline::new(id, UNIX_EPOCH + Duration::from_secs(1000));
        b.elements.insert(
            ElementKey::exe("/usr/bin/postgres"),
            Element {
                status: ElementStatus::Approved,
                review_reasons: vec![],
                provenance: provenance_from_pb(None, UNIX_EPOCH + Duration::from_secs(1000)),
                manual: true,
                approved_sha256: vec!["ab".repeat(32), "cd".repeat(32)],
                origins: [Origin::Image, Origin::WritableLayer].into(),
            },
        );
        b.state = BaselineState::Enforced;
        let back = baseline_from_pb(&baseline_to_pb(&b, true)).unwrap();
        assert_eq!(back.workload, b.workload);
        assert_eq!(back.elements, b.elements);
        assert_eq!(back.state, b.state);
    }

    #[test]
    fn every_origin_round_trips_and_unnamed_values_are_unknown() {
        for o in Origin::ALL {
            assert_eq!(origin_from_pb(origin_to_pb(o) as i32), o);
        }
        // A sensor older than origins, or one newer than this build: unknown, never drift.
        assert_eq!(origin_from_pb(0), Origin::Unknown);
        assert_eq!(origin_from_pb(99), Origin::Unknown);
        // An element is never allowed from an origin nobody can name.
        assert_eq!(
            origins_from_pb(&[0, 99, pb::Origin::Volume as i32]),
            BTreeSet::from([Origin::Volume])
        );
    }
}
