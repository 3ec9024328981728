//! A kubelet stand-in for one node, running the pods of one Deployment as real Docker
//! containers in kubelet-shaped cgroups and telling a [`FakeKube`] about them the way a
//! kubelet's status updates reach the API server:
//!
//! - a new pod is first bound to the node with its spec (probes included) and no container
//!   ID; its container starts; [`STATUS_LAG`] later the status names the container ID and the
//!   image digest (`imageID`), as after the kubelet's next relist;
//! - exec probes (liveness and readiness) run on their periods as the kubelet runs them:
//!   `docker exec <id> <the spec's command>`, standing in for the CRI's `ExecSync`; a pod is
//!   marked ready once its readiness probe passed;
//! - a container that dies is replaced by a new one in the same pod (new container ID,
//!   `restartCount` + 1, the old one in `lastState`); the dead one is kept until the pod goes,
//!   as the kubelet keeps it for garbage collection;
//! - a deleted pod is marked terminating, its container stopped (SIGTERM, then SIGKILL after
//!   the grace period), then removed from the API.
//!
//! Pods belong to ReplicaSets named `<deployment>-<pod-template-hash>` and carry that label,
//! so the sensor resolves every replica of every ReplicaSet to the one Deployment. Everything
//! is removed when the kubelet is dropped: the prober stops, then each pod's containers and
//! its pod cgroup.

use crate::fake_kube::FakeKube;
use crate::{cgroups, wait_for, Container};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long after a container starts its ID and image digest reach the API: the kubelet
/// notices a new container at its next relist (every second) and then reports it.
pub const STATUS_LAG: Duration = Duration::from_secs(1);
/// The first run of a container's probes, after it starts (the kubelet's probe workers
/// start with a random delay of up to one period; `initialDelaySeconds` is 0 here).
const FIRST_PROBE_AFTER: Duration = Duration::from_secs(2);
/// The grace period of a deleted pod: SIGTERM, then SIGKILL this much later.
const GRACE_SECS: &str = "10";
/// Timestamps in pod statuses. The sensor does not read them; they only need to parse.
const STARTED_AT: &str = "2026-01-01T00:00:00Z";

/// An exec probe as a pod spec declares it.
#[derive(Debug, Clone)]
pub struct ExecProbe {
    /// `exec.command`.
    pub command: Vec<String>,
    /// `periodSeconds`.
    pub period: Duration,
}

impl ExecProbe {
    /// A probe running `command` every `period`.
    pub fn new(command: &[&str], period: Duration) -> Self {
        Self {
            command: command.iter().map(|s| s.to_string()).collect(),
            period,
        }
    }

    fn json(&self) -> Value {
        json!({"exec": {"command": self.command},
               "periodSeconds": self.period.as_secs().max(1),
               "timeoutSeconds": 1, "failureThreshold": 3})
    }
}

/// The Deployment whose pods this kubelet runs: one container per pod.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Namespace.
    pub namespace: String,
    /// Deployment name.
    pub name: String,
    /// The container's name in the pod spec.
    pub container: String,
    /// Its liveness probe.
    pub liveness: ExecProbe,
    /// Its readiness probe.
    pub readiness: ExecProbe,
}

impl Deployment {
    /// The workload identity the sensor gives its container (cluster `default`).
    pub fn workload(&self) -> String {
        format!(
            "default/{}/deployment/{}/{}",
            self.namespace, self.name, self.container
        )
    }
}

/// One ReplicaSet of the Deployment: a pod template (here, its image) and the hash the
/// Deployment controller names it after.
#[derive(Debug, Clone)]
pub struct ReplicaSet {
    /// `<deployment>-<hash>`.
    pub name: String,
    /// The `pod-template-hash` label.
    pub hash: String,
    /// Its object UID.
    pub uid: String,
    /// Image reference.
    pub image: String,
    /// Image digest (`sha256:...`).
    pub digest: String,
}

/// What is known of one pod, for the test's assertions and measurements.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// Pod UID.
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Its ReplicaSet's name.
    pub replica_set: String,
    /// The image digest its status reports.
    pub digest: String,
    /// Every container it ran, oldest first.
    pub container_ids: Vec<String>,
}

/// Runs and failures of one probe.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeCounts {
    /// Runs (`docker exec` calls made).
    pub runs: u64,
    /// Runs that exited non-zero or could not be made.
    pub failed: u64,
}

/// One container's probes, for the prober thread.
struct Target {
    container_id: String,
    /// Kind (`liveness`, `readiness`), probe and when it is next due.
    probes: Vec<(&'static str, ExecProbe, Instant)>,
    ready: bool,
}

/// What the prober thread shares with the kubelet: targets by pod UID, and counts by kind.
#[derive(Default)]
struct Shared {
    targets: Mutex<HashMap<String, Target>>,
    counts: Mutex<HashMap<&'static str, ProbeCounts>>,
}

struct Pod {
    info: PodInfo,
    rs: ReplicaSet,
    /// Every container the pod ran, the current one last.
    containers: Vec<Container>,
    restarts: u32,
    /// The container the last restart replaced.
    last_terminated: Option<String>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Containers first (`docker rm -f`), then the pod cgroup Docker made for
        // `--cgroup-parent` and leaves behind.
        self.containers.clear();
        cgroups::remove_empty(&format!("kubepods/besteffort/pod{}", self.info.uid));
    }
}

/// The container's state in a status.
enum State<'a> {
    /// Being created: no container ID yet.
    Creating,
    /// Running; ready once its readiness probe passed.
    Running { ready: bool },
    /// Exited (killed).
    Terminated { id: &'a str },
}

/// See the module docs.
pub struct Kubelet<'a> {
    api: &'a FakeKube,
    node: String,
    deployment: Deployment,
    pods: Vec<Pod>,
    /// Every pod ever run, deleted ones included.
    history: Vec<PodInfo>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    prober: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Kubelet<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("node", &self.node)
            .field("pods", &self.pods.len())
            .finish()
    }
}

impl<'a> Kubelet<'a> {
    /// A kubelet for `node` running `deployment`'s pods, reporting to `api`; its prober starts
    /// now.
    pub fn start(api: &'a FakeKube, node: &str, deployment: Deployment) -> Self {
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let prober = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::spawn(move || probe_loop(&shared, &stop))
        };
        Self {
            api,
            node: node.to_string(),
            deployment,
            pods: Vec::new(),
            history: Vec::new(),
            shared,
            stop,
            prober: Some(prober),
        }
    }

    /// The ReplicaSet the Deployment controller makes for a pod template running `image`
    /// (digest `digest`).
    pub fn replica_set(&self, image: &str, digest: &str) -> ReplicaSet {
        let hex = digest.trim_start_matches("sha256:");
        let hash = hex[..10.min(hex.len())].to_string();
        ReplicaSet {
            name: format!("{}-{hash}", self.deployment.name),
            hash,
            uid: uuid::Uuid::new_v4().to_string(),
            image: image.to_string(),
            digest: digest.to_string(),
        }
    }

    /// Creates a pod of `rs`, as the ReplicaSet controller, scheduler and kubelet do between
    /// them, and returns its name: bound with no container ID, container started, then (after
    /// [`STATUS_LAG`]) running with its ID and image digest. Its probes start.
    pub fn create_pod(&mut self, rs: &ReplicaSet) -> String {
        let uid = crate::pod_uid();
        let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
        let mut pod = Pod {
            info: PodInfo {
                uid: uid.clone(),
                name: format!("{}-{suffix}", rs.name),
                replica_set: rs.name.clone(),
                digest: rs.digest.clone(),
                container_ids: Vec::new(),
            },
            rs: rs.clone(),
            containers: Vec::new(),
            restarts: 0,
            last_terminated: None,
        };
        self.api.apply(self.pod_json(&pod, State::Creating, false));
        self.start_container(&mut pod);
        let name = pod.info.name.clone();
        self.pods.push(pod);
        name
    }

    /// Starts the pod's next container, publishes it running after [`STATUS_LAG`], and
    /// probes it.
    fn start_container(&mut self, pod: &mut Pod) {
        let c = Container::run_image_in_pod(&pod.rs.image, &pod.info.uid, &[]);
        let id = c.id.clone();
        pod.info.container_ids.push(id.clone());
        pod.containers.push(c);
        std::thread::sleep(STATUS_LAG);
        self.api
            .apply(self.pod_json(pod, State::Running { ready: false }, false));
        let first = Instant::now() + FIRST_PROBE_AFTER;
        let d = &self.deployment;
        self.shared.targets.lock().unwrap().insert(
            pod.info.uid.clone(),
            Target {
                container_id: id,
                probes: vec![
                    ("liveness", d.liveness.clone(), first),
                    ("readiness", d.readiness.clone(), first),
                ],
                ready: false,
            },
        );
        self.record(pod);
    }

    fn record(&mut self, pod: &Pod) {
        match self.history.iter_mut().find(|p| p.uid == pod.info.uid) {
            Some(p) => *p = pod.info.clone(),
            None => self.history.push(pod.info.clone()),
        }
    }

    fn index(&self, name: &str) -> usize {
        self.pods
            .iter()
            .position(|p| p.info.name == name)
            .unwrap_or_else(|| panic!("no pod {name} on this kubelet"))
    }

    /// Waits up to `timeout` for pod `name`'s readiness probe to pass, then reports it ready.
    /// Returns whether it did.
    pub fn wait_ready(&mut self, name: &str, timeout: Duration) -> bool {
        let i = self.index(name);
        let uid = self.pods[i].info.uid.clone();
        let ready = wait_for(timeout, || {
            let t = self.shared.targets.lock().unwrap();
            t.get(&uid).is_some_and(|t| t.ready).then_some(())
        })
        .is_some();
        if ready {
            self.api
                .apply(self.pod_json(&self.pods[i], State::Running { ready: true }, false));
        }
        ready
    }

    /// The container of pod `name` dies (SIGKILL) and the kubelet starts a new one in the same
    /// pod: new container ID, same pod UID and cgroup parent, `restartCount` + 1.
    pub fn restart_container(&mut self, name: &str) {
        let i = self.index(name);
        let mut pod = self.pods.remove(i);
        self.shared.targets.lock().unwrap().remove(&pod.info.uid);
        let old = pod
            .containers
            .last()
            .expect("a running container")
            .id
            .clone();
        docker(&["kill", &old]);
        docker(&["wait", &old]);
        self.api
            .apply(self.pod_json(&pod, State::Terminated { id: &old }, false));
        pod.restarts += 1;
        pod.last_terminated = Some(old);
        self.start_container(&mut pod);
        self.pods.insert(i, pod);
    }

    /// Deletes pod `name` as a rollout or scale-in does: marked terminating, its container
    /// stopped (SIGTERM, SIGKILL after the grace period), removed from the API, its
    /// containers and cgroup removed.
    pub fn delete_pod(&mut self, name: &str) {
        let i = self.index(name);
        let pod = self.pods.remove(i);
        self.api
            .apply(self.pod_json(&pod, State::Running { ready: false }, true));
        self.shared.targets.lock().unwrap().remove(&pod.info.uid);
        if let Some(c) = pod.containers.last() {
            docker(&["stop", "-t", GRACE_SECS, &c.id]);
        }
        self.api.delete(&pod.info.uid);
        drop(pod);
    }

    /// The pods running now.
    pub fn pods(&self) -> Vec<PodInfo> {
        self.pods.iter().map(|p| p.info.clone()).collect()
    }

    /// Every pod ever run here, deleted ones included.
    pub fn every_pod(&self) -> Vec<PodInfo> {
        self.history.clone()
    }

    /// Probe runs and failures so far, by kind (`liveness`, `readiness`).
    pub fn probe_counts(&self) -> HashMap<&'static str, ProbeCounts> {
        self.shared.counts.lock().unwrap().clone()
    }

    /// The pod as the API serves it.
    fn pod_json(&self, pod: &Pod, state: State<'_>, terminating: bool) -> Value {
        let d = &self.deployment;
        let rs = &pod.rs;
        let mut status = json!({"phase": "Pending", "conditions": [], "containerStatuses": []});
        let image_id = format!("docker-pullable://{}@{}", rs.image, rs.digest);
        let base = json!({"name": d.container, "image": rs.image, "restartCount": pod.restarts});
        let last_state = match &pod.last_terminated {
            Some(id) => json!({"terminated": {"exitCode": 137, "reason": "Error",
                "containerID": format!("docker://{id}"),
                "startedAt": STARTED_AT, "finishedAt": STARTED_AT}}),
            None => json!({}),
        };
        let mut c = base;
        match state {
            State::Creating => {
                c["ready"] = json!(false);
                c["imageID"] = json!("");
                c["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
            }
            State::Running { ready } => {
                let id = &pod.containers.last().expect("a container").id;
                status["phase"] = json!("Running");
                status["conditions"] = json!([{"type": "Ready",
                    "status": if ready { "True" } else { "False" }}]);
                c["ready"] = json!(ready);
                c["started"] = json!(true);
                c["imageID"] = json!(image_id);
                c["containerID"] = json!(format!("docker://{id}"));
                c["state"] = json!({"running": {"startedAt": STARTED_AT}});
                c["lastState"] = last_state;
            }
            State::Terminated { id } => {
                status["phase"] = json!("Running");
                c["ready"] = json!(false);
                c["started"] = json!(false);
                c["imageID"] = json!(image_id);
                c["containerID"] = json!(format!("docker://{id}"));
                c["state"] = json!({"terminated": {"exitCode": 137, "reason": "Error",
                    "startedAt": STARTED_AT, "finishedAt": STARTED_AT}});
                c["lastState"] = last_state;
            }
        }
        status["containerStatuses"] = json!([c]);
        let mut metadata = json!({
            "name": pod.info.name, "namespace": d.namespace, "uid": pod.info.uid,
            "labels": {"app": d.name, "pod-template-hash": rs.hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": rs.name, "uid": rs.uid, "controller": true,
                "blockOwnerDeletion": true}],
        });
        if terminating {
            metadata["deletionTimestamp"] = json!(STARTED_AT);
            metadata["deletionGracePeriodSeconds"] = json!(GRACE_SECS.parse::<u64>().unwrap());
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {
                "nodeName": self.node,
                "restartPolicy": "Always",
                "containers": [{
                    "name": d.container,
                    "image": rs.image,
                    "livenessProbe": d.liveness.json(),
                    "readinessProbe": d.readiness.json(),
                }],
            },
            "status": status,
        })
    }
}

impl Drop for Kubelet<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.prober.take() {
            let _ = t.join();
        }
        // Each pod removes its containers and cgroup.
        self.pods.clear();
    }
}

/// Runs `docker ARGS`, output discarded; whether it succeeded.
fn docker(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The prober: every due probe of every target, one at a time (a kubelet runs them
/// concurrently, but these are short and few), until `stop`.
fn probe_loop(shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let due: Vec<(String, String, &'static str, Vec<String>)> = {
            let mut targets = shared.targets.lock().unwrap();
            let mut due = Vec::new();
            for (uid, t) in targets.iter_mut() {
                for (kind, probe, next) in t.probes.iter_mut() {
                    if *next <= now {
                        *next = now + probe.period;
                        due.push((
                            uid.clone(),
                            t.container_id.clone(),
                            *kind,
                            probe.command.clone(),
                        ));
                    }
                }
            }
            due
        };
        for (uid, id, kind, cmd) in due {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let mut args = vec!["exec", id.as_str()];
            args.extend(cmd.iter().map(String::as_str));
            let ok = docker(&args);
            {
                let mut counts = shared.counts.lock().unwrap();
                let c = counts.entry(kind).or_default();
                c.runs += 1;
                c.failed += u64::from(!ok);
            }
            if ok && kind == "readiness" {
                if let Some(t) = shared.targets.lock().unwrap().get_mut(&uid) {
                    if t.container_id == id {
                        t.ready = true;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
