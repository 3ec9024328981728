//! A process start as the sensor saw it, and the container facts attached to it.
//!
//! [`ProcessEvent::completeness`] is explicit: a field the sensor had to inherit from a parent
//! or could not read is listed in [`ProcessEvent::missing`], never presented as fact.

use crate::identity::WorkloadIdentity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// The executable path reported when the kernel no longer lets the sensor read it (the
/// process exited first). Learning holds it for review; it is never allowed by default.
pub const UNREADABLE_EXE: &str = "[unreadable]";

/// Runtime that created a container, as its cgroup path tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerRuntime {
    /// containerd.
    Containerd,
    /// CRI-O.
    CriO,
    /// Docker.
    Docker,
    /// Podman.
    Podman,
}

impl ContainerRuntime {
    /// Short lowercase name (`containerd`, `cri-o`, `docker`, `podman`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }
}

/// Kubernetes QoS class from the cgroup path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QosClass {
    /// No besteffort/burstable segment.
    Guaranteed,
    /// A burstable segment.
    Burstable,
    /// A besteffort segment.
    BestEffort,
}

/// What is known of a process's container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Full 64-hex container ID.
    pub container_id: String,
    /// Runtime, when the cgroup path names one.
    pub runtime: Option<ContainerRuntime>,
    /// Pod UID with dashes, when the path names a pod.
    pub pod_uid: Option<String>,
    /// Pod name, once metadata is known.
    pub pod_name: Option<String>,
    /// QoS class, for pods.
    pub qos: Option<QosClass>,
    /// Image reference, once metadata is known.
    pub image: Option<String>,
    /// Image digest, once metadata is known.
    pub image_digest: Option<String>,
    /// The pod's labels, once metadata is known (for baseline label selectors).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
}

/// How a process came to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecContext {
    /// The container's first process.
    Entrypoint,
    /// A kubelet exec probe.
    Probe,
    /// An interactive exec session.
    ExecSession,
    /// A descendant of the entrypoint.
    Descendant,
    /// A host process.
    Host,
}

/// Whether every field of an event is known as fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Completeness {
    /// Every field was read for this very process.
    Full,
    /// Some fields are missing or inherited; see [`ProcessEvent::missing`].
    Partial,
}

/// One ancestor, nearest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    /// Process ID.
    pub pid: u32,
    /// Executable path inside its container.
    pub exe_path: String,
}

/// A process start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEvent {
    /// PID in the node's PID namespace.
    pub pid: u32,
    /// Parent PID.
    pub ppid: u32,
    /// Up to five ancestors, nearest first.
    pub ancestors: Vec<Ancestor>,
    /// Start time, when known.
    pub start_time: Option<SystemTime>,
    /// Real UID.
    pub uid: u32,
    /// Real GID.
    pub gid: u32,
    /// Kernel command name.
    pub comm: String,
    /// Executable path inside the process's own mount namespace.
    pub exe_path: String,
    /// Bounded argv.
    pub argv: Vec<String>,
    /// True when argv was cut.
    pub argv_truncated: bool,
    /// The applet a multi-call binary ran (busybox `wget`), when the executable is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applet: Option<String>,
    /// What an interpreter or shell ran: the script path, `[inline]` for inline code or
    /// standard input, `-m MODULE`; for the dynamic loader run directly, the program it
    /// loads. See [`crate::element`].
    pub script_path: Option<String>,
    /// Hex sha256 of the executable.
    pub exe_sha256: Option<String>,
    /// Run from a memfd.
    pub exe_memfd: bool,
    /// Executable deleted from disk.
    pub exe_deleted: bool,
    /// Executable in a writable location.
    pub exe_writable_location: bool,
    /// Container facts; `None` for host processes.
    pub container: Option<ContainerInfo>,
    /// Owner.
    pub workload: WorkloadIdentity,
    /// How it came to run.
    pub context: ExecContext,
    /// For a process of an exec session (`kubectl exec`), the session it belongs to: the
    /// node, PID and start time of the session's first process, the one the runtime started
    /// into the container. Its descendants carry the same ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_session: Option<String>,
    /// Full or partial.
    pub completeness: Completeness,
    /// Names of missing or inherited fields.
    pub missing: Vec<String>,
    /// Node name.
    pub node_name: String,
    /// Set only on an event sent a second time under its workload identity: the sensor first
    /// sent it partial, under its pod UID and container ID only (`pod_metadata` missing),
    /// because the pod was not known within the hold; this many milliseconds after that first
    /// report the pod became known. See [`ProcessEvent::awaits_pod_metadata`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributed_late_ms: Option<u64>,
}

/// The `missing` entry of an event whose pod metadata was not known in time.
pub const MISSING_POD_METADATA: &str = "pod_metadata";

impl ProcessEvent {
    /// Whether this event's identity is provisional: it names a pod (by UID) whose metadata
    /// the sensor did not have in time, so its workload is not known. Such an event is never
    /// learned into, or matched against, a baseline of its own; the sensor sends it again
    /// under its workload identity once the pod is known (`attributed_late_ms`).
    pub fn awaits_pod_metadata(&self) -> bool {
        self.missing.iter().any(|m| m == MISSING_POD_METADATA)
            && self.container.as_ref().is_some_and(|c| c.pod_uid.is_some())
    }

    /// Whether the executable exists on no filesystem path any more (a memfd, or a file
    /// unlinked before or while it ran): nothing at a path is what ran, so no baseline element
    /// (a path) can allow it.
    pub fn fileless(&self) -> bool {
        self.exe_memfd || self.exe_deleted
    }

    /// Marks `field` as missing or inherited and the event as partial.
    pub fn mark_missing(&mut self, field: &str) {
        self.completeness = Completeness::Partial;
        if !self.missing.iter().any(|m| m == field) {
            self.missing.push(field.to_string());
        }
    }
}
