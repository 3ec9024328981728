//! A process start as the sensor saw it, and the container facts attached to it.
//!
//! [`ProcessEvent::completeness`] is explicit: a field the sensor had to inherit from a parent
//! or could not read is listed in [`ProcessEvent::missing`], never presented as fact.

use crate::identity::WorkloadIdentity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// The `missing` entry of an event whose executable's origin could not be established.
pub const MISSING_ORIGIN: &str = "origin";

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Completeness {
    /// Every field was read for this very process.
    Full,
    /// Some fields are missing or inherited; see [`ProcessEvent::missing`].
    Partial,
}

/// Where an executed file came from, as the sensor established it from kernel facts (see
/// [`classify`] for the rule and `docs/sensor-events.md` for how the sensor gathers the facts).
///
/// Drift ([`Origin::is_drift`]) is any executable of a container that did not come from its
/// image: the writable layer, a volume or host path, or no file at all. `Unknown` is never
/// drift and never presented as the image: it says the sensor could not tell.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Could not be classified (facts unreadable, the process gone with no kernel identity, a
    /// root filesystem without layers, a file no longer where the kernel named it). Also what
    /// an event from a sensor older than origins carries.
    #[default]
    Unknown,
    /// The container's image: a lower layer of its root overlay, or a copy of one in the
    /// writable layer with the image's content (the copy-up a `chmod`, `chown` or `touch`
    /// makes).
    Image,
    /// The container's writable layer (the root overlay's upper directory), with content the
    /// image does not have at that path.
    WritableLayer,
    /// A mount of the container other than its root filesystem: a volume, a host path, a
    /// tmpfs (`/dev/shm`).
    Volume,
    /// No file: a memfd, or a file deleted while it ran.
    Fileless,
    /// A process of the node itself, in no container.
    Host,
}

impl Origin {
    /// Every origin, in the order of [`Origin::as_str`]'s documentation.
    pub const ALL: [Origin; 6] = [
        Origin::Image,
        Origin::WritableLayer,
        Origin::Volume,
        Origin::Fileless,
        Origin::Host,
        Origin::Unknown,
    ];

    /// Lowercase name: `image`, `writable-layer`, `volume`, `fileless`, `host`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Image => "image",
            Self::WritableLayer => "writable-layer",
            Self::Volume => "volume",
            Self::Fileless => "fileless",
            Self::Host => "host",
        }
    }

    /// Whether an executable of this origin in a container did not come from its image.
    pub fn is_drift(self) -> bool {
        matches!(self, Self::WritableLayer | Self::Volume | Self::Fileless)
    }

    /// The reason people read for a drift deviation of this origin (empty for others).
    pub fn drift_reason(self) -> &'static str {
        match self {
            Self::WritableLayer => "drift: executable from the container's writable layer",
            Self::Volume => {
                "drift: executable from a volume or host path mounted into the container"
            }
            Self::Fileless => "drift: fileless executable (memfd or deleted)",
            _ => "",
        }
    }

    /// How telling an origin is when an incident's events disagree: drift outranks the image,
    /// and the unknown outranks a known image (it may hide drift).
    pub fn rank(self) -> u8 {
        match self {
            Self::Host => 0,
            Self::Image => 1,
            Self::Unknown => 2,
            Self::WritableLayer => 3,
            Self::Volume => 4,
            Self::Fileless => 5,
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Read back from [`Origin::as_str`]; the error names the allowed values.
impl std::str::FromStr for Origin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Origin::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown origin '{s}'; allowed: {}",
                    Origin::ALL.map(Origin::as_str).join(", ")
                )
            })
    }
}

/// Where the sensor found an executed file, from kernel facts (mount and device of the file it
/// executed, the container's mounts, the layers of its root overlay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilePlace {
    /// Not established: no mount facts, the container's mounts unreadable, deletion unknown.
    Unknown,
    /// A mount of the container other than its root filesystem.
    OtherMount,
    /// The container's root filesystem, which is not an overlay: nothing tells its image from
    /// what was written into it.
    UnlayeredRoot,
    /// The root overlay, in a lower (image) layer and not in the upper (writable) one.
    LowerLayer,
    /// The root overlay's upper (writable) layer. `image_content`: a lower layer has a file at
    /// the same path with the same content (proven by its sha256); false when it has none,
    /// has another, or the comparison could not be made.
    UpperLayer {
        /// The file is a copy of the image's file at that path.
        image_content: bool,
    },
    /// The root overlay, but no layer has a file at the path the kernel named (moved or
    /// removed since the exec).
    NotFound,
}

/// What the sensor knows of an executed file, from which its [`Origin`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginFacts {
    /// The process runs in a container.
    pub in_container: bool,
    /// The kernel's facts say the file is a memfd or was deleted.
    pub fileless: bool,
    /// Where the file was found.
    pub place: FilePlace,
}

/// The origin of an exec, from the facts the sensor established. The one rule: a host process
/// is `host`; a fileless one `fileless`; then the file's place decides, and only positive
/// evidence makes `image` (a lower layer, or a copy proven to hold the image's content); a
/// file in the upper layer without that proof is `writable-layer`; anything that cannot be
/// told is `unknown`.
pub fn classify(f: OriginFacts) -> Origin {
    if !f.in_container {
        return Origin::Host;
    }
    if f.fileless {
        return Origin::Fileless;
    }
    match f.place {
        FilePlace::OtherMount => Origin::Volume,
        FilePlace::LowerLayer => Origin::Image,
        FilePlace::UpperLayer {
            image_content: true,
        } => Origin::Image,
        FilePlace::UpperLayer {
            image_content: false,
        } => Origin::WritableLayer,
        FilePlace::Unknown | FilePlace::UnlayeredRoot | FilePlace::NotFound => Origin::Unknown,
    }
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
    /// Start time, when known; RFC 3339 in UTC in JSON.
    #[serde(with = "crate::rfc3339::option", default)]
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
    /// Executable in a writable location: kept for consumers older than [`ProcessEvent::origin`]
    /// and derived from it: the container's writable layer or a volume, a memfd; where no image
    /// says otherwise (a host process, an unknown origin) an executable under `/tmp`,
    /// `/dev/shm`, `/var/tmp` or `/run/shm`; and a script under those.
    pub exe_writable_location: bool,
    /// Where the executable came from ([`Origin`]). Events from sensors older than origins
    /// read as `unknown`.
    #[serde(default)]
    pub origin: Origin,
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

    /// The drift this exec is, if any: an executable of a container whose origin is not its
    /// image (writable layer, volume, fileless). A fileless executable is drift whatever the
    /// origin field says (an event of an older sensor). Host processes and unknown origins are
    /// never drift.
    pub fn drift(&self) -> Option<Origin> {
        self.container.as_ref()?;
        if self.fileless() {
            return Some(Origin::Fileless);
        }
        self.origin.is_drift().then_some(self.origin)
    }

    /// Marks `field` as missing or inherited and the event as partial.
    pub fn mark_missing(&mut self, field: &str) {
        self.completeness = Completeness::Partial;
        if !self.missing.iter().any(|m| m == field) {
            self.missing.push(field.to_string());
        }
    }
}

/// The `sha256:...` digest inside a pod status `imageID` (`docker-pullable://repo@sha256:...`,
/// `repo@sha256:...`, or `sha256:...`), as sensors report it and the server checks it.
pub fn image_digest(image_id: &str) -> Option<String> {
    let idx = image_id.find("sha256:")?;
    let digest = &image_id[idx..];
    (digest.len() == 7 + 64).then(|| digest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(in_container: bool, fileless: bool, place: FilePlace) -> OriginFacts {
        OriginFacts {
            in_container,
            fileless,
            place,
        }
    }

    /// Every place, in and out of a container, fileless or not: the one rule, case by case.
    #[test]
    fn every_case_has_one_origin() {
        use FilePlace::*;
        let upper = |image_content| UpperLayer { image_content };
        for (place, want) in [
            (Unknown, Origin::Unknown),
            (OtherMount, Origin::Volume),
            (UnlayeredRoot, Origin::Unknown),
            (LowerLayer, Origin::Image),
            (upper(true), Origin::Image),
            (upper(false), Origin::WritableLayer),
            (NotFound, Origin::Unknown),
        ] {
            assert_eq!(classify(facts(true, false, place)), want, "{place:?}");
            // Fileless wins over any place (a deleted file's path may still name a layer).
            assert_eq!(
                classify(facts(true, true, place)),
                Origin::Fileless,
                "{place:?}"
            );
            // Outside a container nothing is drift: the node has no image.
            assert_eq!(
                classify(facts(false, false, place)),
                Origin::Host,
                "{place:?}"
            );
            assert_eq!(
                classify(facts(false, true, place)),
                Origin::Host,
                "{place:?}"
            );
        }
    }

    #[test]
    fn only_files_not_from_the_image_are_drift() {
        let drift: Vec<_> = Origin::ALL.into_iter().filter(|o| o.is_drift()).collect();
        assert_eq!(
            drift,
            [Origin::WritableLayer, Origin::Volume, Origin::Fileless]
        );
        for o in Origin::ALL {
            assert_eq!(o.is_drift(), !o.drift_reason().is_empty(), "{o}");
        }
    }

    #[test]
    fn origins_read_back_their_names_and_refuse_others() {
        for o in Origin::ALL {
            assert_eq!(o.as_str().parse::<Origin>(), Ok(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        let err = "layer".parse::<Origin>().unwrap_err();
        assert!(
            err.contains("'layer'") && err.contains("writable-layer"),
            "{err}"
        );
        // An event from a sensor older than origins reads as unknown.
        assert_eq!(Origin::default(), Origin::Unknown);
    }
}
