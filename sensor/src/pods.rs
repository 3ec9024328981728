//! Pod metadata: the only module that talks to the Kubernetes API (through `kube`).
//!
//! A watcher lists and watches only the pods bound to this node (field selector
//! `spec.nodeName=<node>`), so the sensor needs `get/list/watch` on pods and nothing else. Each
//! pod becomes a [`PodMeta`]: namespace, labels, the workload that owns it, and per container
//! its name, image, image digest and exec probe commands, keyed by the container ID the
//! runtime reports in `status.containerStatuses[].containerID`.
//!
//! Workloads are resolved without reading any other kind of object (the sensor's ClusterRole
//! grants pods only):
//! - a ReplicaSet owner whose name ends in `-<pod-template-hash>` (the pod's own label) is a
//!   Deployment named by the rest; otherwise it stays a ReplicaSet;
//! - a Job owner named `<cronjob>-<digits>` with at least 8 digits is a CronJob: the CronJob
//!   controller names every Job after its scheduled time in minutes since the epoch (8 digits
//!   from 1989 until 2160), and people rarely name their own Jobs that way. A Job with a
//!   shorter numeric suffix (`backup-1`) stays a Job;
//! - StatefulSet and DaemonSet owners are taken as they are;
//! - a pod without a controller (or owned by a node, a static pod) is a bare pod named by
//!   itself.
//!
//! The [`Enricher`] sits between capture and the uplink. An event whose pod or container is
//! not yet known is held (at most [`HOLD_FOR`] and [`HOLD_MAX`] events) until the watcher
//! brings its pod; if it does not, the event goes on under its pod UID and container ID,
//! marked partial with `pod_metadata` missing (the server never learns such an event into a
//! baseline), and a copy is kept (at most [`LATE_FOR`], [`LATE_MAX`] events and [`LATE_BYTES`];
//! repeats once). When the pod becomes known, the copy is sent again under the workload
//! identity with `attributed_late_ms`, so it is learned into, or matched against, the
//! workload's baseline like any other event. A copy given up (its pod never came, the keep
//! was full, the sensor stopped) is logged and counted. Nothing is dropped silently.

use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::{Container, Pod};
use procguard_core::baseline::from_image;
use procguard_core::process::MISSING_POD_METADATA;
use procguard_core::{ContainerRuntime, ExecContext, ProcessEvent, WorkloadIdentity, WorkloadKind};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest an event waits for its pod's metadata. The kubelet reports a new container's ID in
/// the pod status within about a second of starting it; two seconds covers that without
/// delaying an alert noticeably.
pub const HOLD_FOR: Duration = Duration::from_secs(2);
/// Most events held at once. A new container typically execs a handful of processes before
/// its pod status names it; 4,096 covers many containers starting together. When full, the
/// oldest held event is released at once without pod metadata (partial), and counted.
pub const HOLD_MAX: usize = 4_096;
/// How long an event released without its pod's metadata is kept, so that it can be sent
/// again under its workload identity once the pod is known. A pod the API names ten minutes
/// after its container started is an API outage or a partitioned node, not a slow kubelet;
/// past it the event is given up (logged and counted in
/// `procguard_sensor_pod_metadata_unresolved_total`).
pub const LATE_FOR: Duration = Duration::from_secs(600);
/// Most events kept for late attribution. Repeats (same container, executable, script, argv
/// and context) are kept once. When full, the oldest is given up (logged and counted).
pub const LATE_MAX: usize = 4_096;
/// Most bytes (argv and paths, estimated) kept for late attribution: with the sensor's argv
/// bound (64 x 1 KiB) 4,096 events could otherwise take 256 MiB.
pub const LATE_BYTES: usize = 16 << 20;
/// Most pods remembered. The kubelet's own limit is 110 pods per node by default and at most a
/// few hundred; past this bound new pods are ignored (and counted) rather than grow memory.
pub const MAX_PODS: usize = 4_096;
/// How long a deleted pod's metadata is kept for its last processes' events.
pub const KEEP_DELETED: Duration = Duration::from_secs(30);
/// Most probe sessions remembered (so that their processes are told from exec sessions).
/// Probes are short and few; when full the set is cleared, and a probe's late child is then an
/// exec session, which raises an incident: never hidden.
const MAX_PROBE_PIDS: usize = 8_192;

pub use procguard_runtime::kube::Error;

/// What is known of one container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMeta {
    /// Container name in the pod spec.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Image digest (`sha256:...`), when the runtime reported one.
    pub image_digest: Option<String>,
    /// Runtime named by the status `containerID` scheme.
    pub runtime: Option<ContainerRuntime>,
}

/// What is known of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    /// Pod UID.
    pub uid: String,
    /// For a mirror pod (the API's copy of a static pod), the static pod's own UID, which is
    /// the one its cgroup paths carry (`kubernetes.io/config.mirror` annotation).
    pub mirror_of: Option<String>,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Owning workload kind.
    pub kind: WorkloadKind,
    /// Owning workload name.
    pub workload: String,
    /// Pod labels, at most [`MAX_POD_LABELS`] of them and [`MAX_POD_LABEL_BYTES`] in all (the
    /// first in key order); each event carries them.
    pub labels: BTreeMap<String, String>,
    /// Whether the pod has more labels than `labels` holds: its events carry `pod_labels` in
    /// `missing` (partial), so a cut label set is never taken for the whole one.
    pub labels_capped: bool,
    /// Containers by runtime container ID (64 hex, without the `runtime://` prefix).
    pub containers: HashMap<String, ContainerMeta>,
    /// Exec probe commands (liveness, readiness, startup) per container name.
    pub probes: HashMap<String, Vec<Vec<String>>>,
    /// The only container the pod can have, when the spec has exactly one and no init or
    /// ephemeral containers: then a container ID the status does not name yet is still known
    /// to be this one.
    pub sole_container: Option<ContainerMeta>,
}

pub use procguard_runtime::kube::workload_of as resolve_workload;

pub use procguard_core::identity::cronjob_of;

/// The bare ID of a status `containerID` (`containerd://<id>`, `docker://<id>`,
/// `cri-o://<id>`).
pub fn container_id(status_id: &str) -> &str {
    status_id
        .split_once("://")
        .map(|(_, id)| id)
        .unwrap_or(status_id)
}

/// The runtime a status `containerID` scheme names.
pub fn runtime_of(status_id: &str) -> Option<ContainerRuntime> {
    match status_id.split_once("://")?.0 {
        "containerd" => Some(ContainerRuntime::Containerd),
        "docker" => Some(ContainerRuntime::Docker),
        "cri-o" => Some(ContainerRuntime::CriO),
        "podman" => Some(ContainerRuntime::Podman),
        _ => None,
    }
}

pub use procguard_core::process::image_digest;

fn probes_of(c: &Container) -> Vec<Vec<String>> {
    [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
        .into_iter()
        .flatten()
        .filter_map(|p| p.exec.as_ref()?.command.clone())
        .filter(|cmd| !cmd.is_empty())
        .collect()
}

impl PodMeta {
    /// Reads what the sensor needs from a pod; `None` for a pod without UID or namespace.
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let uid = pod.metadata.uid.clone()?;
        let namespace = pod.metadata.namespace.clone()?;
        let (kind, workload) = resolve_workload(pod);
        let spec = pod.spec.as_ref();
        let mut containers = HashMap::new();
        let mut images: HashMap<String, String> = HashMap::new();
        let mut probes = HashMap::new();
        if let Some(spec) = spec {
            for c in spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
            {
                images.insert(c.name.clone(), c.image.clone().unwrap_or_default());
                let p = probes_of(c);
                if !p.is_empty() {
                    probes.insert(c.name.clone(), p);
                }
            }
        }
        if let Some(status) = &pod.status {
            for s in status
                .container_statuses
                .iter()
                .chain(status.init_container_statuses.iter())
                .chain(status.ephemeral_container_statuses.iter())
                .flatten()
            {
                if let Some(full) = s.container_id.as_deref() {
                    let id = container_id(full);
                    if !id.is_empty() {
                        containers.insert(
                            id.to_string(),
                            ContainerMeta {
                                name: s.name.clone(),
                                image: if s.image.is_empty() {
                                    images.get(&s.name).cloned().unwrap_or_default()
                                } else {
                                    s.image.clone()
                                },
                                image_digest: image_digest(&s.image_id),
                                runtime: runtime_of(full),
                            },
                        );
                    }
                }
            }
        }
        let sole_container = spec.and_then(|s| {
            let only = s.containers.len() == 1
                && s.init_containers.as_ref().is_none_or(|v| v.is_empty())
                && s.ephemeral_containers.as_ref().is_none_or(|v| v.is_empty());
            only.then(|| ContainerMeta {
                name: s.containers[0].name.clone(),
                image: s.containers[0].image.clone().unwrap_or_default(),
                image_digest: None,
                runtime: None,
            })
        });
        let mirror_of = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/config.mirror"))
            .cloned()
            .filter(|h| !h.is_empty() && *h != uid);
        let (labels, labels_capped) = cap_labels(pod.metadata.labels.as_ref());
        Some(Self {
            uid,
            mirror_of,
            namespace,
            name: pod.metadata.name.clone().unwrap_or_default(),
            kind,
            workload,
            labels,
            labels_capped,
            containers,
            probes,
            sole_container,
        })
    }
}

/// Most labels of a pod each event carries. Every label travels with every event of the pod
/// (for the policy's label selectors), so a pod with thousands of labels (the API server
/// allows about 1.5 MB of them) would make every event, and every batch, that large.
pub const MAX_POD_LABELS: usize = 64;
/// Most bytes of labels (keys and values) each event carries.
pub const MAX_POD_LABEL_BYTES: usize = 16 * 1024;

/// The labels an event carries: the first in key order, within [`MAX_POD_LABELS`] and
/// [`MAX_POD_LABEL_BYTES`]; and whether some were left out.
fn cap_labels(labels: Option<&BTreeMap<String, String>>) -> (BTreeMap<String, String>, bool) {
    let Some(all) = labels else {
        return (BTreeMap::new(), false);
    };
    let mut kept = BTreeMap::new();
    let mut bytes = 0usize;
    for (k, v) in all {
        bytes = bytes.saturating_add(k.len() + v.len());
        if kept.len() == MAX_POD_LABELS || bytes > MAX_POD_LABEL_BYTES {
            return (kept, true);
        }
        kept.insert(k.clone(), v.clone());
    }
    (kept, false)
}

/// Pods on this node by UID, shared by the watcher (writer) and the enricher (reader). Every
/// change bumps a version the enricher waits on, so held events are retried at once.
#[derive(Debug, Clone)]
pub struct PodCache {
    pods: Arc<RwLock<HashMap<String, Arc<PodMeta>>>>,
    version: Arc<watch::Sender<u64>>,
}

impl Default for PodCache {
    fn default() -> Self {
        Self {
            pods: Arc::default(),
            version: Arc::new(watch::channel(0).0),
        }
    }
}

impl PodCache {
    /// The pod with `uid`, if known.
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.pods.read().ok()?.get(uid).cloned()
    }

    /// Adds or replaces a pod. Returns false (and keeps memory bounded) when the cache is full.
    pub fn upsert(&self, meta: PodMeta) -> bool {
        let Ok(mut pods) = self.pods.write() else {
            return false;
        };
        if pods.len() >= MAX_PODS && !pods.contains_key(&meta.uid) {
            return false;
        }
        let meta = Arc::new(meta);
        if let Some(m) = &meta.mirror_of {
            pods.insert(m.clone(), meta.clone());
        }
        pods.insert(meta.uid.clone(), meta);
        drop(pods);
        self.version.send_modify(|v| *v += 1);
        true
    }

    /// Forgets a pod.
    pub fn remove(&self, uid: &str) {
        if let Ok(mut pods) = self.pods.write() {
            pods.retain(|_, p| p.uid != uid);
        }
    }

    /// Keeps only the pods in `uids` (after a relist).
    pub fn retain(&self, uids: &HashSet<String>) {
        if let Ok(mut pods) = self.pods.write() {
            pods.retain(|_, p| uids.contains(&p.uid));
        }
    }

    /// Pods known now.
    pub fn len(&self) -> usize {
        self.pods
            .read()
            .map(|p| p.iter().filter(|(k, v)| **k == v.uid).count())
            .unwrap_or(0)
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver that changes whenever a pod is added or updated.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

pub use procguard_runtime::kube::client;

/// Watches the pods on `node` into `cache` until shutdown. The watcher relists and rewatches
/// on its own after errors, with backoff; each error is logged and counted.
pub async fn watch_pods(
    client: kube::Client,
    node: String,
    cache: PodCache,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    use futures::StreamExt;
    use kube::runtime::watcher::{self, Event};
    use kube::runtime::WatchStreamExt;
    let api: kube::Api<Pod> = kube::Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut relist: Option<HashSet<String>> = None;
    let add = |pod: &Pod, relist: &mut Option<HashSet<String>>| {
        let Some(meta) = PodMeta::from_pod(pod) else {
            return;
        };
        if let Some(seen) = relist.as_mut() {
            seen.insert(meta.uid.clone());
        }
        if !cache.upsert(meta) {
            metrics.pods_ignored.inc();
            // Counted in procguard_sensor_pods_ignored_total; logged once a minute.
            static FULL: procguard_runtime::repeated::Repeated =
                procguard_runtime::repeated::Repeated::new(std::time::Duration::from_secs(60));
            if let Some(held_back) = FULL.admit() {
                tracing::warn!(
                    message = "Pod cache full; pod ignored.",
                    limit = MAX_PODS,
                    held_back
                );
            }
        }
        metrics.pods_known.set(cache.len() as i64);
    };
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = stream.next() => ev,
        };
        match ev {
            None => return,
            Some(Ok(Event::Init)) => relist = Some(HashSet::new()),
            Some(Ok(Event::InitApply(pod))) | Some(Ok(Event::Apply(pod))) => add(&pod, &mut relist),
            Some(Ok(Event::InitDone)) => {
                if let Some(seen) = relist.take() {
                    cache.retain(&seen);
                }
                metrics.pods_known.set(cache.len() as i64);
                tracing::info!(message = "Pods on this node listed.", node = %node, pods = cache.len());
            }
            Some(Ok(Event::Delete(pod))) => {
                // Keep a deleted pod a little longer: its last processes may still report.
                if let Some(uid) = pod.metadata.uid.clone() {
                    let cache = cache.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(KEEP_DELETED).await;
                        cache.remove(&uid);
                    });
                }
            }
            Some(Err(error)) => {
                metrics.pod_watch_errors.inc();
                tracing::warn!(message = "Pod watch failed; retrying.", %error);
            }
        }
    }
}

struct Held {
    until: Instant,
    event: ProcessEvent,
}

/// An event sent without its pod's metadata, kept as it was before it was marked partial.
struct Late {
    /// When it was released partial.
    released: Instant,
    event: ProcessEvent,
    /// Its repeat key (see [`late_key`]).
    key: u64,
    /// Estimated size, for [`LATE_BYTES`].
    bytes: usize,
}

/// What makes a kept event a repeat of another: the same container, executable, script,
/// argv (a probe is recognised by it) and context. One is enough to evaluate them all. Hashed
/// with the sensor's own random keys: a process that could predict the hash could craft an
/// exec that passes for the repeat of an innocent one, and so is never sent again.
fn late_key(keys: &std::collections::hash_map::RandomState, ev: &ProcessEvent) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = keys.build_hasher();
    ev.container.as_ref().map(|c| &c.container_id).hash(&mut h);
    ev.exe_path.hash(&mut h);
    ev.script_path.hash(&mut h);
    ev.argv.hash(&mut h);
    ev.context.hash(&mut h);
    h.finish()
}

fn late_bytes(ev: &ProcessEvent) -> usize {
    256 + ev.exe_path.len()
        + ev.script_path.as_ref().map_or(0, String::len)
        + ev.argv.iter().map(|a| a.len() + 24).sum::<usize>()
        + ev.ancestors
            .iter()
            .map(|a| a.exe_path.len() + 32)
            .sum::<usize>()
}

/// Attaches pod metadata to events, holding those whose pod is not known yet, and classifies
/// exec probes.
pub struct Enricher {
    cluster: String,
    cache: PodCache,
    metrics: Metrics,
    held: VecDeque<Held>,
    probe_sessions: HashSet<String>,
    /// Events sent without pod metadata, oldest first, until their pod is known.
    late: VecDeque<Late>,
    late_keys: HashSet<u64>,
    /// Random keys of [`late_key`].
    late_hasher: std::collections::hash_map::RandomState,
    late_bytes: usize,
    last_unresolved_log: Option<Instant>,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("held", &self.held.len())
            .finish()
    }
}

/// Whether `argv` runs the probe command `cmd`: the same words, with the first compared by
/// its base name (the kubelet passes the command as written; the runtime may resolve it
/// through `$PATH`).
pub fn is_probe_command(argv: &[String], cmd: &[String]) -> bool {
    argv.len() == cmd.len()
        && !argv.is_empty()
        && base(&argv[0]) == base(&cmd[0])
        && argv[1..] == cmd[1..]
}

/// Whether `ev` is a run of the probe command `cmd`: the same words (the first compared by
/// base name, see [`is_probe_command`]), and the file that ran is that program as the image
/// ships it: its own name, or the applet a multi-call binary ran, is the command's (a
/// versioned name such as `python3.11` for `python3` counts), and it comes from the image
/// ([`from_image`]: not drift, neither from the writable layer, a volume, a memfd or a deleted
/// file, nor in a writable directory). A copy of a shell dropped in `/tmp/sh` and run with the
/// probe's words is an exec session, not a probe.
pub fn is_probe_run(ev: &ProcessEvent, cmd: &[String]) -> bool {
    let program = ev.applet.clone().unwrap_or_else(|| base(&ev.exe_path));
    is_probe_command(&ev.argv, cmd) && runs_program_of(ev, &program, cmd)
}

/// Whether `ev`, whose argv the sensor could not read (the process exited, or exec'd its
/// command in place as `sh -c 'cmd'` does, within microseconds), ran the probe command
/// `cmd`'s program as the image ships it: the file's own name is the command's, and it comes
/// from the image ([`from_image`]). argv cannot be checked, so
/// this is weaker than [`is_probe_run`]: the event stays partial (`argv` missing) and only the
/// first process of an exec session is judged by it. What it gives up is said in
/// docs/ARCHITECTURE.md: a session whose first process runs a probe's program and is gone
/// before the sensor reads it raises no "interactive session" incident; everything it starts
/// is still evaluated as the workload's.
pub fn is_unread_probe_run(ev: &ProcessEvent, cmd: &[String]) -> bool {
    ev.argv.is_empty()
        && ev.missing.iter().any(|m| m == "argv")
        && runs_program_of(ev, &base(&ev.exe_path), cmd)
}

fn base(s: &str) -> String {
    s.rsplit('/').next().unwrap_or(s).to_string()
}

/// Whether `program` (the applet or file name that ran in `ev`) is the program of `cmd`, from
/// the image: the same name, or a versioned one (`python3.11` for `python3`).
fn runs_program_of(ev: &ProcessEvent, program: &str, cmd: &[String]) -> bool {
    let Some(first) = cmd.first() else {
        return false;
    };
    let want = base(first);
    let same_program = program == want
        || program
            .strip_prefix(want.as_str())
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    same_program && from_image(ev)
}

enum Outcome {
    Done(ProcessEvent),
    Wait(ProcessEvent),
}

impl Enricher {
    /// An enricher reading `cache`.
    pub fn new(cluster: &str, cache: PodCache, metrics: Metrics) -> Self {
        Self {
            cluster: cluster.to_string(),
            cache,
            metrics,
            held: VecDeque::new(),
            probe_sessions: HashSet::new(),
            late: VecDeque::new(),
            late_keys: HashSet::new(),
            late_hasher: Default::default(),
            late_bytes: 0,
            last_unresolved_log: None,
        }
    }

    /// Attaches what is known. `Wait` when the pod or its container is not known yet.
    fn try_enrich(&mut self, mut ev: ProcessEvent) -> Outcome {
        let Some(c) = ev.container.as_ref() else {
            return Outcome::Done(ev);
        };
        let Some(uid) = c.pod_uid.clone() else {
            // A container outside any pod (standalone runtime): its cgroup identity is final.
            return Outcome::Done(ev);
        };
        let Some(pod) = self.cache.get(&uid) else {
            return Outcome::Wait(ev);
        };
        let Some(meta) = pod
            .containers
            .get(&c.container_id)
            .or(pod.sole_container.as_ref())
            .cloned()
        else {
            return Outcome::Wait(ev);
        };
        if let Some(c) = ev.container.as_mut() {
            c.pod_name = Some(pod.name.clone());
            c.image = (!meta.image.is_empty()).then(|| meta.image.clone());
            c.image_digest = meta.image_digest.clone();
            c.pod_labels = pod.labels.clone();
            // Kubelet-shaped cgroupfs paths do not name the runtime; the pod status does.
            c.runtime = c.runtime.or(meta.runtime);
        }
        if meta.image_digest.is_none() {
            ev.mark_missing("image_digest");
        }
        if pod.labels_capped {
            ev.mark_missing("pod_labels");
            self.metrics.pod_labels_capped.inc();
        }
        ev.workload = WorkloadIdentity::new(
            &self.cluster,
            &pod.namespace,
            pod.kind,
            &pod.workload,
            &meta.name,
        );
        // A kubelet exec probe reaches the container the way an exec session does; what tells
        // them apart is that it runs one of the pod's probe commands, checked on the kernel's
        // facts as well as argv (`is_probe_run`). Only the probe's own process is exempt: its
        // children are the workload's processes like any other (learned in training, matched
        // after), so a probe script the container can write is no free pass.
        // A probe run into a container none of whose processes the sensor holds (its main
        // process just exited, or was not seen yet after a restart) looks like the container's
        // first process. It is a probe by the same facts; an entrypoint that happens to run a
        // probe's command is then recorded as a probe, not learned: never an alert either way.
        if ev.context == ExecContext::Entrypoint
            && pod.probes.get(&meta.name).is_some_and(|cmds| {
                cmds.iter()
                    .any(|cmd| is_probe_run(&ev, cmd) || is_unread_probe_run(&ev, cmd))
            })
        {
            ev.context = ExecContext::Probe;
        }
        if ev.context == ExecContext::ExecSession {
            // The tracker names each session after its first process (node, pid, start time)
            // and its descendants inherit the name, so a probe's tree is known by it, with no
            // pid that could be reused.
            let session = ev.exec_session.clone().unwrap_or_default();
            let first_of_session = session
                .rsplit('/')
                .nth(1)
                .is_some_and(|p| p == ev.pid.to_string());
            if self.probe_sessions.contains(&session) {
                // Of the probe's tree, not an exec session: evaluated as the workload's.
                ev.context = ExecContext::Descendant;
                ev.exec_session = None;
            } else if first_of_session
                && pod.probes.get(&meta.name).is_some_and(|cmds| {
                    cmds.iter()
                        .any(|cmd| is_probe_run(&ev, cmd) || is_unread_probe_run(&ev, cmd))
                })
            {
                ev.context = ExecContext::Probe;
                ev.exec_session = None;
                if self.probe_sessions.len() >= MAX_PROBE_PIDS {
                    self.probe_sessions.clear();
                }
                self.probe_sessions.insert(session);
            }
        }
        Outcome::Done(ev)
    }

    /// Sends `ev` on without pod metadata (partial, under its pod UID and container ID) and
    /// keeps it, so that it is sent again under its workload identity once the pod is known.
    fn release_partial(&mut self, ev: ProcessEvent, now: Instant) -> ProcessEvent {
        self.keep_late(ev.clone(), now);
        let mut ev = ev;
        ev.mark_missing(MISSING_POD_METADATA);
        self.metrics.pod_metadata_missing.inc();
        ev
    }

    fn keep_late(&mut self, event: ProcessEvent, now: Instant) {
        if event.container.as_ref().is_none_or(|c| c.pod_uid.is_none()) {
            return;
        }
        let key = late_key(&self.late_hasher, &event);
        if !self.late_keys.insert(key) {
            return;
        }
        let bytes = late_bytes(&event);
        while !self.late.is_empty()
            && (self.late.len() >= LATE_MAX || self.late_bytes + bytes > LATE_BYTES)
        {
            if let Some(old) = self.late.pop_front() {
                self.forget_late(&old, "the keep is full");
            }
        }
        self.late_bytes += bytes;
        self.late.push_back(Late {
            released: now,
            event,
            key,
            bytes,
        });
        self.metrics.pod_events_late.set(self.late.len() as i64);
    }

    /// Gives up a kept event: it was reported, partial, under its pod UID only, and will
    /// never be evaluated against its workload's baseline.
    fn forget_late(&mut self, old: &Late, why: &'static str) {
        self.late_keys.remove(&old.key);
        self.late_bytes = self.late_bytes.saturating_sub(old.bytes);
        self.metrics.pod_metadata_unresolved.inc();
        // One line per event, at most one a second (a flood is counted, not logged line by line).
        let now = Instant::now();
        if self
            .last_unresolved_log
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_unresolved_log = Some(now);
        let c = old.event.container.as_ref();
        tracing::warn!(
            message = "Pod metadata never arrived; an event stays attributed to its pod UID only.",
            reason = why,
            pod_uid = c.and_then(|c| c.pod_uid.as_deref()).unwrap_or(""),
            container_id = c.map(|c| c.container_id.as_str()).unwrap_or(""),
            exe = %old.event.exe_path,
            pid = old.event.pid
        );
    }

    /// Kept events whose pod is now known, enriched, stamped with how late their workload
    /// became known; expired ones are given up.
    fn retry_late(&mut self, now: Instant) -> Vec<ProcessEvent> {
        let mut out = Vec::new();
        if self.late.is_empty() {
            return out;
        }
        let late = std::mem::take(&mut self.late);
        for l in late {
            let Late {
                released,
                event,
                key,
                bytes,
            } = l;
            match self.try_enrich(event) {
                Outcome::Done(mut ev) => {
                    self.late_keys.remove(&key);
                    self.late_bytes = self.late_bytes.saturating_sub(bytes);
                    let ms = now.saturating_duration_since(released).as_millis();
                    ev.attributed_late_ms = Some(u64::try_from(ms).unwrap_or(u64::MAX).max(1));
                    self.metrics.pod_metadata_late.inc();
                    out.push(ev);
                }
                Outcome::Wait(event) => {
                    let l = Late {
                        released,
                        event,
                        key,
                        bytes,
                    };
                    if now.saturating_duration_since(released) >= LATE_FOR {
                        self.forget_late(&l, "kept for its whole time");
                    } else {
                        self.late.push_back(l);
                    }
                }
            }
        }
        self.metrics.pod_events_late.set(self.late.len() as i64);
        out
    }

    /// Takes one event; returns those ready to go on, in order.
    pub fn push(&mut self, ev: ProcessEvent, now: Instant) -> Vec<ProcessEvent> {
        let mut out = Vec::new();
        match self.try_enrich(ev) {
            Outcome::Done(ev) => out.push(ev),
            Outcome::Wait(ev) => {
                if self.held.len() >= HOLD_MAX {
                    if let Some(old) = self.held.pop_front() {
                        self.metrics.pod_hold_overflow.inc();
                        out.push(self.release_partial(old.event, now));
                    }
                }
                self.held.push_back(Held {
                    until: now + HOLD_FOR,
                    event: ev,
                });
            }
        }
        self.metrics.pod_events_held.set(self.held.len() as i64);
        out
    }

    /// Retries every held event (the cache changed) and releases the expired ones.
    pub fn retry(&mut self, now: Instant) -> Vec<ProcessEvent> {
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.held);
        for h in held {
            match self.try_enrich(h.event) {
                Outcome::Done(ev) => out.push(ev),
                Outcome::Wait(ev) if h.until <= now => out.push(self.release_partial(ev, now)),
                Outcome::Wait(ev) => self.held.push_back(Held {
                    until: h.until,
                    event: ev,
                }),
            }
        }
        self.metrics.pod_events_held.set(self.held.len() as i64);
        // Those released now were just kept: their pod is still unknown.
        out.extend(self.retry_late(now));
        out
    }

    /// When the next held event expires, or the oldest kept one is given up.
    pub fn next_deadline(&self) -> Option<Instant> {
        let late = self.late.front().map(|l| l.released + LATE_FOR);
        self.held.iter().map(|h| h.until).chain(late).min()
    }

    /// Runs between capture (`rx`) and the uplink (`tx`) until `rx` closes or shutdown; held
    /// events are released (partial) on the way out rather than lost.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<ProcessEvent>,
        tx: mpsc::Sender<ProcessEvent>,
        shutdown: CancellationToken,
    ) {
        let mut changed = self.cache.subscribe();
        loop {
            let deadline = self
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let ready = tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = rx.recv() => match ev {
                    Some(ev) => self.push(ev, Instant::now()),
                    None => break,
                },
                r = changed.changed() => {
                    if r.is_err() { break; }
                    self.retry(Instant::now())
                }
                _ = tokio::time::sleep_until(deadline) => self.retry(Instant::now()),
            };
            for ev in ready {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        }
        let rest: Vec<_> = std::mem::take(&mut self.held).into_iter().collect();
        for h in rest {
            let ev = self.release_partial(h.event, Instant::now());
            if tx.send(ev).await.is_err() {
                break;
            }
        }
        // Kept events live in memory only: a stopping sensor gives them up, counted.
        let given_up = self.late.len();
        if given_up > 0 {
            self.metrics.pod_metadata_unresolved.inc_by(given_up as u64);
            tracing::warn!(
                message = "Stopping with events whose pod metadata never arrived; they stay attributed to their pod UID only.",
                count = given_up
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, ExecAction, PodSpec, PodStatus, Probe};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use procguard_core::{Completeness, ContainerInfo};

    const ID: &str = "3b5e8c1d2f4a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// Builder-style fixture: `pod("web-7d4b9c-x2x").owned_by("ReplicaSet", "web-7d4b9c")`.
    struct PodFixture(Pod);

    fn pod(name: &str) -> PodFixture {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some("3f0c1e2a-1b2c-4d5e-8f90-123456789abc".into());
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox:1".into()),
                liveness_probe: Some(Probe {
                    exec: Some(ExecAction {
                        command: Some(vec!["cat".into(), "/tmp/healthy".into()]),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        PodFixture(p)
    }

    impl PodFixture {
        fn owned_by(mut self, kind: &str, name: &str) -> Self {
            self.0.metadata.owner_references = Some(vec![OwnerReference {
                kind: kind.into(),
                name: name.into(),
                controller: Some(true),
                ..Default::default()
            }]);
            self
        }
        fn label(mut self, k: &str, v: &str) -> Self {
            self.0
                .metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(k.into(), v.into());
            self
        }
        fn running(mut self, id: &str) -> Self {
            self.0.status = Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "app".into(),
                    container_id: Some(id.into()),
                    image: "busybox:1".into(),
                    image_id: format!("docker-pullable://busybox@{DIGEST}"),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            self
        }
        fn second_container(mut self) -> Self {
            if let Some(s) = self.0.spec.as_mut() {
                s.containers.push(Container {
                    name: "sidecar".into(),
                    ..Default::default()
                });
            }
            self
        }
    }

    fn check(p: PodFixture, kind: WorkloadKind, name: &str) {
        assert_eq!(resolve_workload(&p.0), (kind, name.to_string()));
    }

    #[test]
    fn workloads_resolve_without_reading_other_objects() {
        check(
            pod("web-7d4b9c-x2x")
                .owned_by("ReplicaSet", "web-7d4b9c")
                .label("pod-template-hash", "7d4b9c"),
            WorkloadKind::Deployment,
            "web",
        );
        // Without the hash label the ReplicaSet cannot be tied to a Deployment: not guessed.
        check(
            pod("rs-abc-x").owned_by("ReplicaSet", "rs-abc"),
            WorkloadKind::ReplicaSet,
            "rs-abc",
        );
        check(
            pod("backup-28391234-q").owned_by("Job", "backup-28391234"),
            WorkloadKind::CronJob,
            "backup",
        );
        check(
            pod("migrate-1-q").owned_by("Job", "migrate-1"),
            WorkloadKind::Job,
            "migrate-1",
        );
        check(
            pod("db-0").owned_by("StatefulSet", "db"),
            WorkloadKind::StatefulSet,
            "db",
        );
        check(
            pod("agent-x").owned_by("DaemonSet", "agent"),
            WorkloadKind::DaemonSet,
            "agent",
        );
        check(pod("lonely"), WorkloadKind::Pod, "lonely");
        check(
            pod("etcd-node1").owned_by("Node", "node1"),
            WorkloadKind::Pod,
            "etcd-node1",
        );
    }

    #[test]
    fn status_ids_and_digests_are_read_for_every_runtime() {
        for prefix in ["containerd://", "docker://", "cri-o://", ""] {
            assert_eq!(container_id(&format!("{prefix}{ID}")), ID);
        }
        assert_eq!(
            runtime_of(&format!("cri-o://{ID}")),
            Some(ContainerRuntime::CriO)
        );
        assert_eq!(runtime_of(ID), None);
        assert_eq!(
            image_digest(&format!("docker-pullable://busybox@{DIGEST}")).as_deref(),
            Some(DIGEST)
        );
        assert_eq!(image_digest(DIGEST).as_deref(), Some(DIGEST));
        assert_eq!(image_digest("docker://sha256:short"), None);
        assert_eq!(image_digest(""), None);
    }

    /// A process event in a pod's container, for tests.
    pub(crate) fn event(pid: u32, ppid: u32, argv: &[&str], context: ExecContext) -> ProcessEvent {
        ProcessEvent {
            pid,
            ppid,
            ancestors: vec![],
            start_time: None,
            uid: 0,
            gid: 0,
            comm: "x".into(),
            exe_path: format!("/bin/{}", argv[0]),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            argv_truncated: false,
            applet: None,
            script_path: None,
            exe_sha256: None,
            exe_memfd: false,
            exe_deleted: false,
            exe_writable_location: false,
            origin: procguard_core::Origin::Image,
            container: Some(ContainerInfo {
                container_id: ID.into(),
                pod_uid: Some("3f0c1e2a-1b2c-4d5e-8f90-123456789abc".into()),
                ..Default::default()
            }),
            workload: WorkloadIdentity::new("c", "", WorkloadKind::Pod, "pod-x", "x"),
            context,
            exec_session: None,
            completeness: Completeness::Full,
            missing: vec![],
            node_name: "n".into(),
            attributed_late_ms: None,
        }
    }

    /// `ev` as a process of the exec session whose first process is `first`.
    fn session(mut ev: ProcessEvent, first: u32) -> ProcessEvent {
        ev.exec_session = Some(format!("node-1/{first}/1000"));
        ev
    }

    #[tokio::test]
    async fn events_wait_for_their_pod_and_probes_are_recognised() {
        let cache = PodCache::default();
        let mut e = Enricher::new("c", cache.clone(), Metrics::default());
        let t0 = Instant::now();
        assert!(e
            .push(event(10, 1, &["sleep", "1"], ExecContext::Entrypoint), t0)
            .is_empty());
        assert!(e
            .push(
                session(
                    event(11, 2, &["cat", "/tmp/healthy"], ExecContext::ExecSession),
                    11
                ),
                t0
            )
            .is_empty());
        assert!(e.retry(t0 + Duration::from_millis(100)).is_empty());
        cache.upsert(
            PodMeta::from_pod(
                &pod("web-7d4b9c-x2x")
                    .owned_by("ReplicaSet", "web-7d4b9c")
                    .label("pod-template-hash", "7d4b9c")
                    .label("app", "web")
                    .running(&format!("docker://{ID}"))
                    .0,
            )
            .unwrap(),
        );
        let out = e.retry(t0 + Duration::from_millis(200));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].workload.to_string(), "c/shop/deployment/web/app");
        assert_eq!(out[0].completeness, Completeness::Full);
        let c = out[0].container.as_ref().unwrap();
        assert_eq!(c.image_digest.as_deref(), Some(DIGEST));
        assert_eq!(c.pod_labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(out[0].context, ExecContext::Entrypoint);
        assert_eq!(out[1].context, ExecContext::Probe);
        // The probe's child is the workload's, evaluated like any other (never exempt);
        // another exec is an exec session.
        let child = e.push(
            session(event(12, 11, &["true"], ExecContext::ExecSession), 11),
            t0,
        );
        assert_eq!(child[0].context, ExecContext::Descendant);
        let grandchild = e.push(
            session(event(17, 12, &["id"], ExecContext::ExecSession), 11),
            t0,
        );
        assert_eq!(grandchild[0].context, ExecContext::Descendant);
        let sess = e.push(
            session(event(13, 3, &["sh"], ExecContext::ExecSession), 13),
            t0,
        );
        assert_eq!(sess[0].context, ExecContext::ExecSession);
        // The probe's words run inside someone's session are that session's, not a probe.
        let inside = e.push(
            session(
                event(18, 13, &["cat", "/tmp/healthy"], ExecContext::ExecSession),
                13,
            ),
            t0,
        );
        assert_eq!(inside[0].context, ExecContext::ExecSession);
        // The probe's words from a file dropped into the container, or renamed, are not the
        // probe.
        let mut dropped = session(
            event(14, 4, &["cat", "/tmp/healthy"], ExecContext::ExecSession),
            14,
        );
        dropped.exe_path = "/tmp/cat".into();
        dropped.exe_writable_location = true;
        assert_eq!(e.push(dropped, t0)[0].context, ExecContext::ExecSession);
        // The probe's own program at its own path, but from a volume mounted over it.
        let mut mounted = session(
            event(19, 4, &["cat", "/tmp/healthy"], ExecContext::ExecSession),
            19,
        );
        mounted.origin = procguard_core::Origin::Volume;
        assert_eq!(e.push(mounted, t0)[0].context, ExecContext::ExecSession);
        let mut renamed = session(
            event(15, 4, &["cat", "/tmp/healthy"], ExecContext::ExecSession),
            15,
        );
        renamed.exe_path = "/bin/sh".into();
        assert_eq!(e.push(renamed, t0)[0].context, ExecContext::ExecSession);
        let mut applet = session(
            event(16, 4, &["cat", "/tmp/healthy"], ExecContext::ExecSession),
            16,
        );
        applet.exe_path = "/bin/busybox".into();
        applet.applet = Some("cat".into());
        assert_eq!(e.push(applet, t0)[0].context, ExecContext::Probe);
        // A probe gone (or exec'd again) before its argv was read is known by the file that
        // ran, the probe's program from the image; it stays partial. The next program the
        // same process runs is of the probe's tree.
        let unread = |pid: u32, exe: &str| {
            let mut u = session(event(pid, 4, &["x"], ExecContext::ExecSession), pid);
            u.exe_path = exe.into();
            u.argv.clear();
            u.mark_missing("argv");
            u
        };
        let gone = e.push(unread(19, "/bin/cat"), t0);
        assert_eq!(gone[0].context, ExecContext::Probe);
        assert!(gone[0].missing.contains(&"argv".to_string()));
        let next = e.push(
            session(event(19, 4, &["sleep", "1"], ExecContext::ExecSession), 19),
            t0,
        );
        assert_eq!(next[0].context, ExecContext::Descendant);
        // Another program, or the probe's program written into the container, unread: an
        // exec session.
        assert_eq!(
            e.push(unread(20, "/bin/sh"), t0)[0].context,
            ExecContext::ExecSession
        );
        let mut written = unread(21, "/tmp/cat");
        written.exe_writable_location = true;
        assert_eq!(e.push(written, t0)[0].context, ExecContext::ExecSession);
        // A probe run into a container with no process held (its main process just exited)
        // reads as the container's first process: still a probe; the real entrypoint is not.
        let mut first = unread(22, "/bin/cat");
        first.context = ExecContext::Entrypoint;
        first.exec_session = None;
        assert_eq!(e.push(first, t0)[0].context, ExecContext::Probe);
        let main = event(23, 4, &["sleep", "3600"], ExecContext::Entrypoint);
        assert_eq!(e.push(main, t0)[0].context, ExecContext::Entrypoint);
    }

    #[tokio::test]
    async fn unknown_pods_are_released_partial_not_dropped() {
        let cache = PodCache::default();
        let mut e = Enricher::new("c", cache.clone(), Metrics::default());
        let t0 = Instant::now();
        assert!(e
            .push(event(10, 1, &["sleep"], ExecContext::Entrypoint), t0)
            .is_empty());
        assert_eq!(e.next_deadline(), Some(t0 + HOLD_FOR));
        let out = e.retry(t0 + HOLD_FOR);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].completeness, Completeness::Partial);
        assert!(out[0].missing.contains(&"pod_metadata".to_string()));
        assert_eq!(out[0].workload.workload_name, "pod-x");
        // A pod whose status has not named the container yet: with two containers the
        // container is not guessed; with one it is known.
        cache.upsert(PodMeta::from_pod(&pod("two").second_container().0).unwrap());
        assert!(e
            .push(event(11, 1, &["sleep"], ExecContext::Entrypoint), t0)
            .is_empty());
        cache.upsert(PodMeta::from_pod(&pod("one").0).unwrap());
        let out = e.retry(t0);
        assert_eq!(out[0].workload.to_string(), "c/shop/pod/one/app");
        assert!(out[0].missing.contains(&"image_digest".to_string()));
    }

    #[tokio::test]
    async fn events_released_without_their_pod_are_sent_again_under_their_workload() {
        let cache = PodCache::default();
        let metrics = Metrics::default();
        let mut e = Enricher::new("c", cache.clone(), metrics.clone());
        let t0 = Instant::now();
        assert!(e
            .push(event(10, 1, &["sleep"], ExecContext::Entrypoint), t0)
            .is_empty());
        // A repeat of the same exec is kept once.
        assert!(e
            .push(event(11, 1, &["sleep"], ExecContext::Entrypoint), t0)
            .is_empty());
        let first = e.retry(t0 + HOLD_FOR);
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|ev| ev.awaits_pod_metadata()));
        assert!(first.iter().all(|ev| ev.attributed_late_ms.is_none()));
        assert_eq!(metrics.pod_events_late.get(), 1);
        // Nothing changes until the pod is known.
        assert!(e.retry(t0 + HOLD_FOR * 2).is_empty());
        cache.upsert(
            PodMeta::from_pod(
                &pod("web-7d4b9c-x2x")
                    .owned_by("ReplicaSet", "web-7d4b9c")
                    .label("pod-template-hash", "7d4b9c")
                    .running(&format!("docker://{ID}"))
                    .0,
            )
            .unwrap(),
        );
        let again = e.retry(t0 + HOLD_FOR + Duration::from_secs(5));
        assert_eq!(again.len(), 1, "{again:?}");
        let ev = &again[0];
        assert_eq!(ev.workload.to_string(), "c/shop/deployment/web/app");
        assert_eq!(ev.pid, 10);
        assert_eq!(ev.completeness, Completeness::Full, "{:?}", ev.missing);
        assert!(!ev.awaits_pod_metadata());
        assert_eq!(ev.attributed_late_ms, Some(5_000));
        assert_eq!(metrics.pod_metadata_late.get(), 1);
        assert_eq!(metrics.pod_events_late.get(), 0);
        assert_eq!(e.next_deadline(), None);
    }

    #[tokio::test]
    async fn kept_events_are_given_up_after_their_time_and_when_the_keep_is_full() {
        let metrics = Metrics::default();
        let mut e = Enricher::new("c", PodCache::default(), metrics.clone());
        let t0 = Instant::now();
        e.push(event(10, 1, &["a"], ExecContext::Entrypoint), t0);
        assert_eq!(e.retry(t0 + HOLD_FOR).len(), 1);
        assert_eq!(e.next_deadline(), Some(t0 + HOLD_FOR + LATE_FOR));
        assert!(e.retry(t0 + HOLD_FOR + LATE_FOR).is_empty());
        assert_eq!(metrics.pod_metadata_unresolved.get(), 1);
        assert_eq!(metrics.pod_events_late.get(), 0);
        // Distinct execs past the bound: the oldest go first, counted.
        for i in 0..=LATE_MAX as u32 {
            let arg = i.to_string();
            e.push(event(i, 1, &["x", &arg], ExecContext::Descendant), t0);
        }
        e.retry(t0 + HOLD_FOR);
        assert_eq!(metrics.pod_events_late.get(), LATE_MAX as i64);
        assert_eq!(metrics.pod_metadata_unresolved.get(), 2);
        // A huge argv is bounded by bytes, not only by count.
        let big = "y".repeat(1024);
        let argv: Vec<&str> = std::iter::once("z")
            .chain((0..64).map(|_| big.as_str()))
            .collect();
        let mut e = Enricher::new("c", PodCache::default(), Metrics::default());
        for i in 0..1_000u32 {
            let mut ev = event(i, 1, &argv, ExecContext::Descendant);
            ev.exe_path = format!("/bin/z{i}");
            e.push(ev, t0);
        }
        e.retry(t0 + HOLD_FOR);
        assert!(e.late_bytes <= LATE_BYTES);
        assert!(e.late.len() < 1_000);
    }

    #[tokio::test]
    async fn a_full_hold_releases_the_oldest() {
        let mut e = Enricher::new("c", PodCache::default(), Metrics::default());
        let t0 = Instant::now();
        for i in 0..HOLD_MAX as u32 {
            assert!(e
                .push(event(i, 1, &["x"], ExecContext::Descendant), t0)
                .is_empty());
        }
        let out = e.push(event(99_999, 1, &["x"], ExecContext::Descendant), t0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].pid, 0);
        assert_eq!(out[0].completeness, Completeness::Partial);
    }

    #[test]
    fn static_pods_are_found_by_their_mirror_hash() {
        let cache = PodCache::default();
        let mut p = pod("etcd-node1").owned_by("Node", "node1").0;
        let hash = "7c2b6c0b8a7b4f1c9c8e0d1f2a3b4c5d";
        p.metadata.annotations = Some(
            [("kubernetes.io/config.mirror".to_string(), hash.to_string())]
                .into_iter()
                .collect(),
        );
        cache.upsert(PodMeta::from_pod(&p).unwrap());
        assert_eq!(cache.get(hash).unwrap().name, "etcd-node1");
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache
                .get("3f0c1e2a-1b2c-4d5e-8f90-123456789abc")
                .unwrap()
                .name,
            "etcd-node1"
        );
        cache.remove("3f0c1e2a-1b2c-4d5e-8f90-123456789abc");
        assert!(cache.get(hash).is_none());
    }

    #[test]
    fn probe_commands_match_by_words() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(is_probe_command(
            &s(&["/bin/cat", "/tmp/healthy"]),
            &s(&["cat", "/tmp/healthy"])
        ));
        assert!(!is_probe_command(
            &s(&["cat", "/etc/passwd"]),
            &s(&["cat", "/tmp/healthy"])
        ));
        assert!(!is_probe_command(
            &s(&["cat"]),
            &s(&["cat", "/tmp/healthy"])
        ));
    }

    #[test]
    fn pod_labels_are_capped_in_key_order_and_the_cut_is_said() {
        let few: BTreeMap<String, String> = [("app".into(), "web".into())].into();
        assert_eq!(cap_labels(Some(&few)), (few.clone(), false));
        let many: BTreeMap<String, String> = (0..2000)
            .map(|i| (format!("k{i:04}"), "v".repeat(500)))
            .collect();
        let (kept, cut) = cap_labels(Some(&many));
        assert!(cut);
        assert!(kept.len() <= MAX_POD_LABELS);
        assert!(kept.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() <= MAX_POD_LABEL_BYTES);
        assert_eq!(kept.keys().next().map(String::as_str), Some("k0000"));
        assert_eq!(cap_labels(None), (BTreeMap::new(), false));
    }
}
