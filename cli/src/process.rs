//! A process event as every output prints it (`-o json`, `incidents get`, and each `watch`
//! format): one view, built from the domain event, so no output can leave out what the sensor
//! could not see.
//!
//! The view is made from `procguard_core::ProcessEvent` (converted from protobuf in
//! `procguard_proto::convert`, the one conversion seam), and its context and completeness are
//! the domain's own enums, serialised by serde under their domain names (`exec-session`,
//! `partial`). A record that does not convert (an older or foreign server) is still printed,
//! as `partial` with its context unknown, never as fact.

use procguard_core::process::Ancestor;
use procguard_core::{Completeness, ExecContext, Origin, ProcessEvent};
use procguard_proto::v1 as pb;
use serde::Serialize;

/// A process event as printed.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessView {
    /// PID on the node.
    pub pid: u32,
    /// Parent PID.
    pub ppid: u32,
    /// Executable path inside the process's container.
    pub exe_path: String,
    /// Applet of a multi-call binary; empty when none.
    pub applet: String,
    /// What an interpreter, shell or loader ran (`[inline]` for inline code); empty when none.
    pub script_path: String,
    /// argv, bounded by the sensor.
    pub argv: Vec<String>,
    /// argv was cut.
    pub argv_truncated: bool,
    /// Kernel command name.
    pub comm: String,
    /// Real UID.
    pub uid: u32,
    /// Real GID.
    pub gid: u32,
    /// Ancestors, nearest first.
    pub ancestors: Vec<Ancestor>,
    /// sha256 of the executable; empty when it could not be read.
    pub exe_sha256: String,
    /// Run from a memfd.
    pub exe_memfd: bool,
    /// Executable deleted.
    pub exe_deleted: bool,
    /// Executable in a writable location (kept for older consumers; `origin` says more).
    pub exe_writable_location: bool,
    /// Where the executable came from: `image`, `writable-layer`, `volume`, `fileless`,
    /// `host`, or `unknown` when the sensor could not tell (or the record did not say).
    pub origin: Origin,
    /// Whether it is drift: an executable of a container that did not come from its image.
    pub drift: bool,
    /// Workload identity as text.
    pub workload: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Container ID.
    pub container_id: String,
    /// Pod name.
    pub pod: String,
    /// Image.
    pub image: String,
    /// Image digest, as the runtime reported it; empty when not known.
    pub image_digest: String,
    /// Node.
    pub node: String,
    /// How it came to run; `null` when the record did not say.
    pub context: Option<ExecContext>,
    /// `full` only when every field is fact.
    pub completeness: Completeness,
    /// Fields missing or inherited (`completeness` is then `partial`).
    pub missing: Vec<String>,
    /// Non-zero on an event sent again under its workload identity: milliseconds between its
    /// first, partial report under its pod UID only and its pod becoming known.
    pub attributed_late_ms: u64,
}

impl From<&ProcessEvent> for ProcessView {
    fn from(e: &ProcessEvent) -> Self {
        let c = e.container.clone().unwrap_or_default();
        Self {
            pid: e.pid,
            ppid: e.ppid,
            exe_path: e.exe_path.clone(),
            applet: e.applet.clone().unwrap_or_default(),
            script_path: e.script_path.clone().unwrap_or_default(),
            argv: e.argv.clone(),
            argv_truncated: e.argv_truncated,
            comm: e.comm.clone(),
            uid: e.uid,
            gid: e.gid,
            ancestors: e.ancestors.clone(),
            exe_sha256: e.exe_sha256.clone().unwrap_or_default(),
            exe_memfd: e.exe_memfd,
            exe_deleted: e.exe_deleted,
            exe_writable_location: e.exe_writable_location,
            origin: e.drift().unwrap_or(e.origin),
            drift: e.drift().is_some(),
            workload: e.workload.to_string(),
            namespace: e.workload.namespace.clone(),
            container_id: c.container_id,
            pod: c.pod_name.unwrap_or_default(),
            image: c.image.unwrap_or_default(),
            image_digest: c.image_digest.unwrap_or_default(),
            node: e.node_name.clone(),
            context: Some(e.context),
            completeness: e.completeness,
            missing: e.missing.clone(),
            attributed_late_ms: e.attributed_late_ms.unwrap_or_default(),
        }
    }
}

impl ProcessView {
    /// The view of a protobuf process event, through the domain type. A record that does not
    /// convert keeps what it says, is `partial`, and names why in `missing`.
    pub fn of(p: &pb::ProcessEvent) -> Self {
        match ProcessEvent::try_from(p) {
            Ok(e) => Self::from(&e),
            Err(error) => {
                let mut missing = p.missing.clone();
                missing.push(format!("unreadable record: {error}"));
                let c = p.container.clone().unwrap_or_default();
                Self {
                    pid: p.pid,
                    ppid: p.ppid,
                    exe_path: p.exe_path.clone(),
                    applet: p.applet.clone(),
                    script_path: p.script_path.clone(),
                    argv: p.argv.clone(),
                    argv_truncated: p.argv_truncated,
                    comm: p.comm.clone(),
                    uid: p.uid,
                    gid: p.gid,
                    ancestors: p
                        .ancestors
                        .iter()
                        .map(|a| Ancestor {
                            pid: a.pid,
                            exe_path: a.exe_path.clone(),
                        })
                        .collect(),
                    exe_sha256: p.exe_sha256.clone(),
                    exe_memfd: p.exe_memfd,
                    exe_deleted: p.exe_deleted,
                    exe_writable_location: p.exe_writable_location,
                    // As the record says (unknown when it did not), and drift by the domain's
                    // rule: a container's executable from a drift origin, or fileless.
                    origin: procguard_proto::convert::origin_from_pb(p.origin),
                    drift: p.container.is_some()
                        && (p.exe_memfd
                            || p.exe_deleted
                            || procguard_proto::convert::origin_from_pb(p.origin).is_drift()),
                    workload: p
                        .workload
                        .as_ref()
                        .and_then(|w| procguard_core::WorkloadIdentity::try_from(w).ok())
                        .map(|w| w.to_string())
                        .unwrap_or_default(),
                    namespace: p
                        .workload
                        .as_ref()
                        .map(|w| w.namespace.clone())
                        .unwrap_or_default(),
                    container_id: c.container_id,
                    pod: c.pod_name,
                    image: c.image,
                    image_digest: c.image_digest,
                    node: p.node_name.clone(),
                    context: None,
                    completeness: Completeness::Partial,
                    missing,
                    attributed_late_ms: p.attributed_late_ms,
                }
            }
        }
    }

    /// The context's name as the domain serialises it (`exec-session`), or `unknown`.
    pub fn context_name(&self) -> String {
        self.context
            .and_then(|c| serde_json::to_value(c).ok())
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_else(|| "unknown".into())
    }

    /// The completeness's name as the domain serialises it (`full`, `partial`).
    pub fn completeness_name(&self) -> String {
        serde_json::to_value(self.completeness)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_else(|| "partial".into())
    }

    /// The drift, named for a SIEM's message field (` (drift: executable from the container's
    /// writable layer)`), empty when it is not drift.
    pub fn drift_note(&self) -> String {
        if self.drift {
            format!(" ({})", self.origin.drift_reason())
        } else {
            String::new()
        }
    }

    /// Whether anything is missing: a sentence for a SIEM's message field, empty when full.
    pub fn partial_note(&self) -> String {
        if self.completeness == Completeness::Full {
            String::new()
        } else if self.missing.is_empty() {
            " (partial event)".into()
        } else {
            format!(" (partial event; not known: {})", self.missing.join(", "))
        }
    }

    /// As JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}
