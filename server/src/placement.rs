//! Where pods run, from the Kubernetes API: the check that a sensor reports only the pods
//! scheduled on its own node, as the workload and image the API names for them.
//!
//! With `--kube on` the server lists and watches every pod (`get/list/watch` on pods and
//! nothing else, see `deploy/`) into [`Placements`]: per pod UID its node, namespace, name,
//! workload (named as sensors name it, `procguard_runtime::kube::workload_of`),
//! containers and the image digests its status reports. Each event of a sensor stream that
//! names a pod is then [`Placements::screen`]ed before ingest:
//!
//! - the pod is known and everything the event says of it agrees with the API (node,
//!   namespace, workload, container, and an image digest the pod runs): `Verified`;
//! - the pod is known and something disagrees (another node's pod, another workload, an image
//!   the pod does not run): `Refused` — acknowledged, never applied, counted and audited;
//! - the pod is not known in time (the server's watch has not seen it yet: the event waits up
//!   to [`UNKNOWN_GRACE`] for it; or it was deleted longer than [`KEEP_DELETED`] ago, or the
//!   memory is full): `Unverified` — kept (a deviation is never lost), but its image digest is
//!   removed (`image_digest` in `missing`), so it cannot open a baseline's re-learning window.
//!
//! Without `--kube` nothing is checked (`Unchecked`): a sensor certificate is trusted for its
//! node's reports, as docs/deploy.md says.

use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::Pod;
use procguard_core::ingest::{IngestEvent, Placement};
use procguard_core::{ProcessEvent, WorkloadKind};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long an event whose pod the server does not know waits for the watch to bring it. A
/// sensor learns of a pod from the same API, so the server's watch is normally no further
/// behind than this.
pub const UNKNOWN_GRACE: Duration = Duration::from_secs(3);
/// How long a deleted pod is remembered: a sensor's spool may deliver its last events after a
/// network or server outage.
pub const KEEP_DELETED: Duration = Duration::from_secs(6 * 3600);
/// Most pods remembered, live and deleted (about 300 bytes each: 150 MB at most). Past it new
/// pods are not remembered (counted), and their events are `Unverified`: safe, never refused.
pub const MAX_PODS: usize = 500_000;

pub use procguard_runtime::kube::{client, Error};

/// What the API says of one pod.
#[derive(Debug, Clone)]
struct Place {
    node: String,
    namespace: String,
    name: String,
    kind: WorkloadKind,
    workload: String,
    containers: HashSet<String>,
    digests: HashSet<String>,
    /// When the watch saw it deleted.
    deleted: Option<Instant>,
}

impl Place {
    fn of(pod: &Pod) -> Option<(String, Self)> {
        let uid = pod.metadata.uid.clone()?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let (kind, workload) = procguard_runtime::kube::workload_of(pod);
        let spec = pod.spec.as_ref();
        let containers = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .map(|c| c.name.clone())
                    .chain(
                        s.ephemeral_containers
                            .iter()
                            .flatten()
                            .map(|c| c.name.clone()),
                    )
            })
            .collect();
        let digests = pod
            .status
            .iter()
            .flat_map(|st| {
                st.container_statuses
                    .iter()
                    .chain(st.init_container_statuses.iter())
                    .chain(st.ephemeral_container_statuses.iter())
                    .flatten()
            })
            .filter_map(|c| procguard_core::process::image_digest(&c.image_id))
            .collect();
        Some((
            uid,
            Self {
                node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name,
                kind,
                workload,
                containers,
                digests,
                deleted: None,
            },
        ))
    }

    /// Whether `ev`, reported by `node`, agrees with the API; `Err` says what does not.
    fn judge(&self, node: &str, ev: &ProcessEvent) -> Result<Judgement, String> {
        let pod = format!("pod {}/{}", self.namespace, self.name);
        if self.node != node {
            let on = if self.node.is_empty() {
                "not scheduled on any node".to_string()
            } else {
                format!("scheduled on node '{}'", self.node)
            };
            return Err(format!("{pod} is {on}, not on the reporting node '{node}'"));
        }
        // An event sent under its pod UID only (the sensor had no metadata in time) names no
        // workload yet; it is never learned, and comes again under its workload once known.
        if ev.awaits_pod_metadata() {
            return Ok(Judgement::Agrees);
        }
        let w = &ev.workload;
        if w.namespace != self.namespace || w.kind != self.kind || w.workload_name != self.workload
        {
            return Err(format!(
                "{pod} belongs to {} {}/{}, not to the reported workload {w}",
                self.kind, self.namespace, self.workload
            ));
        }
        if !self.containers.contains(&w.container_name) {
            return Err(format!("{pod} has no container '{}'", w.container_name));
        }
        let digest = ev
            .container
            .as_ref()
            .and_then(|c| c.image_digest.as_deref());
        match digest {
            None => Ok(Judgement::Agrees),
            Some(d) if self.digests.contains(d) => Ok(Judgement::Agrees),
            // The status does not list images yet (a pod still starting): nothing to agree or
            // disagree with.
            Some(_) if self.digests.is_empty() => Ok(Judgement::DigestUnknown),
            Some(d) => Err(format!("{pod} does not run an image with digest {d}")),
        }
    }
}

enum Judgement {
    Agrees,
    DigestUnknown,
}

/// What a batch's screening found, for the stream to count and audit.
#[derive(Debug, Default)]
pub struct Screening {
    /// Events whose pod agreed with the API.
    pub verified: usize,
    /// Events kept without their image digest (pod or its images unknown in time).
    pub unverified: usize,
    /// Refused events: (pod UID, why).
    pub refused: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Inner {
    pods: HashMap<String, Place>,
    /// Deletions in the order seen, for forgetting after [`KEEP_DELETED`].
    deletions: VecDeque<(Instant, String)>,
}

/// The pods the API knows, by UID, shared by the watch (writer) and every sensor stream
/// (readers). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Placements {
    inner: Arc<RwLock<Inner>>,
    /// Bumped on every change, so that a waiting event rechecks.
    version: Arc<watch::Sender<u64>>,
}

impl Default for Placements {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            version: Arc::new(watch::channel(0).0),
        }
    }
}

impl Placements {
    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Records a pod as the API has it now; `false` when memory is full and it is new.
    fn upsert(&self, uid: String, place: Place) -> bool {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.pods.len() >= MAX_PODS && !inner.pods.contains_key(&uid) {
            return false;
        }
        inner.pods.insert(uid, place);
        drop(inner);
        self.bump();
        true
    }

    /// Marks a pod deleted (remembered [`KEEP_DELETED`]) and forgets those deleted before.
    fn deleted(&self, uid: &str, now: Instant) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = inner.pods.get_mut(uid) {
            if p.deleted.is_none() {
                p.deleted = Some(now);
                inner.deletions.push_back((now, uid.to_string()));
            }
        }
        while let Some((at, _)) = inner.deletions.front() {
            if now.duration_since(*at) < KEEP_DELETED {
                break;
            }
            let (_, old) = inner.deletions.pop_front().expect("front exists");
            // Deleted, then seen again (a relist that still had it): keep it.
            if inner.pods.get(&old).is_some_and(|p| p.deleted.is_some()) {
                inner.pods.remove(&old);
            }
        }
    }

    /// Pods remembered (live and deleted).
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .pods
            .len()
    }

    /// Whether no pod is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `None` while the pod (or its images) is unknown, else the verdict.
    fn check(&self, node: &str, ev: &ProcessEvent) -> Option<Placement> {
        let uid = ev.container.as_ref()?.pod_uid.as_deref()?;
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        match inner.pods.get(uid)?.judge(node, ev) {
            Ok(Judgement::Agrees) => Some(Placement::Verified),
            Ok(Judgement::DigestUnknown) => None,
            Err(why) => Some(Placement::Refused(why)),
        }
    }

    /// Decides each event's placement (see the module documentation). An event whose pod is
    /// unknown waits at most [`UNKNOWN_GRACE`] (once per batch) for the watch to bring it.
    pub async fn screen(&self, node: &str, events: &mut [IngestEvent]) -> Screening {
        let names_pod = |e: &IngestEvent| {
            e.process
                .container
                .as_ref()
                .is_some_and(|c| c.pod_uid.is_some())
        };
        let mut out = Screening::default();
        let mut version = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + UNKNOWN_GRACE;
        let mut waited = false;
        for ev in events.iter_mut().filter(|e| names_pod(e)) {
            let mut verdict = self.check(node, &ev.process);
            while verdict.is_none() && !waited {
                // Wait for the next change of the pod table (or the deadline), then look again.
                match tokio::time::timeout_at(deadline, version.changed()).await {
                    Ok(Ok(())) => verdict = self.check(node, &ev.process),
                    _ => waited = true,
                }
            }
            ev.placement = match verdict {
                Some(p) => p,
                None => {
                    if let Some(c) = ev.process.container.as_mut() {
                        if c.image_digest.take().is_some() {
                            ev.process.mark_missing("image_digest");
                        }
                    }
                    Placement::Unverified
                }
            };
            match &ev.placement {
                Placement::Verified => out.verified += 1,
                Placement::Unverified => out.unverified += 1,
                Placement::Refused(why) => {
                    let uid = ev
                        .process
                        .container
                        .as_ref()
                        .and_then(|c| c.pod_uid.clone())
                        .unwrap_or_default();
                    out.refused.push((uid, why.clone()));
                }
                Placement::Unchecked => {}
            }
        }
        out
    }
}

/// Watches every pod into `placements` until shutdown. The watcher relists and rewatches on
/// its own after errors, with backoff; each error is logged and counted.
pub async fn watch(
    client: kube::Client,
    placements: Placements,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    use futures::StreamExt;
    use kube::runtime::watcher::{self, Event};
    use kube::runtime::WatchStreamExt;
    let api: kube::Api<Pod> = kube::Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relist: Option<HashSet<String>> = None;
    let mut full_logged = false;
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = stream.next() => ev,
        };
        match ev {
            None => return,
            Some(Ok(Event::Init)) => relist = Some(HashSet::new()),
            Some(Ok(Event::InitApply(pod))) | Some(Ok(Event::Apply(pod))) => {
                let Some((uid, place)) = Place::of(&pod) else {
                    continue;
                };
                if let Some(seen) = relist.as_mut() {
                    seen.insert(uid.clone());
                }
                if !placements.upsert(uid, place) {
                    metrics.placement.pods_ignored.inc();
                    if !full_logged {
                        full_logged = true;
                        tracing::warn!(message = "Pod memory full; new pods are not remembered and their events are kept unverified.", limit = MAX_PODS);
                    }
                }
            }
            Some(Ok(Event::InitDone)) => {
                // Pods the relist no longer has were deleted while the watch was down.
                if let Some(seen) = relist.take() {
                    let gone: Vec<String> = {
                        let inner = placements.inner.read().unwrap_or_else(|e| e.into_inner());
                        inner
                            .pods
                            .iter()
                            .filter(|(uid, p)| p.deleted.is_none() && !seen.contains(*uid))
                            .map(|(uid, _)| uid.clone())
                            .collect()
                    };
                    let now = Instant::now();
                    for uid in gone {
                        placements.deleted(&uid, now);
                    }
                }
                metrics.placement.pods_known.set(placements.len() as i64);
                tracing::info!(
                    message = "Pods listed for placement checks.",
                    pods = placements.len()
                );
            }
            Some(Ok(Event::Delete(pod))) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    placements.deleted(uid, Instant::now());
                }
            }
            Some(Err(error)) => {
                metrics.placement.watch_errors.inc();
                tracing::warn!(message = "Pod watch failed; retrying.", %error);
            }
        }
        metrics.placement.pods_known.set(placements.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procguard_core::{ContainerInfo, WorkloadIdentity};

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const UA_PROVISIONAL: &str = "a";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn pod(uid: &str, node: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-7d9f-x", "namespace": "shop", "uid": uid,
                "labels": {"pod-template-hash": "7d9f"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d9f", "uid": "r", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "web"}]},
            "status": {"containerStatuses": [{"name": "app", "image": "web", "ready": true,
                "restartCount": 0, "imageID": format!("docker-pullable://web@{D1}")}]}
        }))
        .unwrap()
    }

    fn event(uid: &str, digest: Option<&str>, container: &str) -> IngestEvent {
        let mut ev = crate::store::conformance::event("e", 1, "/app/server");
        ev.process.workload =
            WorkloadIdentity::new("c", "shop", WorkloadKind::Deployment, "web", container);
        ev.process.container = Some(ContainerInfo {
            container_id: "cid".into(),
            pod_uid: Some(uid.into()),
            image_digest: digest.map(str::to_string),
            ..Default::default()
        });
        ev
    }

    fn placements() -> Placements {
        let p = Placements::default();
        for (uid, node) in [("a", "node-a"), ("b", "node-b")] {
            let (uid, place) = Place::of(&pod(uid, node)).unwrap();
            assert!(p.upsert(uid, place));
        }
        p
    }

    #[tokio::test]
    async fn a_node_reports_only_its_own_pods_as_the_api_names_them() {
        let p = placements();
        let mut evs = vec![
            event("a", Some(D1), "app"),
            event("a", None, "app"),
            event("b", Some(D1), "app"),
            event("a", Some(D2), "app"),
            event("a", Some(D1), "sidecar"),
        ];
        let mut other_workload = event("a", Some(D1), "app");
        other_workload.process.workload.workload_name = "payments".into();
        evs.push(other_workload);
        // Sent under its pod UID only (metadata late): its node is checked, nothing else.
        let mut provisional = event("a", None, "");
        provisional.process.workload.workload_name = UA_PROVISIONAL.into();
        provisional
            .process
            .mark_missing(procguard_core::process::MISSING_POD_METADATA);
        evs.push(provisional.clone());
        let out = p.screen("node-a", &mut evs).await;
        assert_eq!(out.verified, 3);
        let elsewhere = p.screen("node-b", &mut [provisional]).await;
        assert_eq!(
            elsewhere.refused.len(),
            1,
            "another node's pod, even without metadata"
        );
        assert_eq!(out.refused.len(), 4, "{:?}", out.refused);
        let why: Vec<&str> = out.refused.iter().map(|(_, w)| w.as_str()).collect();
        assert!(why[0].contains("scheduled on node 'node-b', not on the reporting node 'node-a'"));
        assert!(why[1].contains(&format!("does not run an image with digest {D2}")));
        assert!(why[2].contains("no container 'sidecar'"));
        assert!(why[3].contains("not to the reported workload"));
        assert_eq!(evs[0].placement, Placement::Verified);
        assert!(matches!(evs[2].placement, Placement::Refused(_)));
    }

    #[tokio::test]
    async fn an_unknown_pod_waits_for_the_watch_then_is_kept_without_its_digest() {
        let p = placements();
        // Known within the grace: verified.
        let later = p.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (uid, place) = Place::of(&pod("c", "node-a")).unwrap();
            later.upsert(uid, place);
        });
        let mut evs = vec![event("c", Some(D1), "app")];
        let out = p.screen("node-a", &mut evs).await;
        assert_eq!((out.verified, out.unverified), (1, 0));
        // Never known: kept, its digest removed, so it cannot open a re-learning window.
        let mut evs = vec![event("z", Some(D2), "app"), event("y", Some(D2), "app")];
        let out = p.screen("node-a", &mut evs).await;
        assert_eq!(out.unverified, 2);
        for e in &evs {
            assert_eq!(e.placement, Placement::Unverified);
            assert_eq!(e.process.container.as_ref().unwrap().image_digest, None);
            assert!(e.process.missing.contains(&"image_digest".to_string()));
        }
        // Events that name no pod are not checked.
        let mut host = vec![event("a", None, "app")];
        host[0].process.container = None;
        let out = p.screen("node-a", &mut host).await;
        assert_eq!((out.verified, out.unverified, out.refused.len()), (0, 0, 0));
        assert_eq!(host[0].placement, Placement::Unchecked);
    }

    #[test]
    fn a_deleted_pod_is_remembered_for_its_late_events_then_forgotten() {
        let p = placements();
        let t0 = Instant::now();
        p.deleted("a", t0);
        let ev = event("a", Some(D1), "app");
        assert_eq!(p.check("node-a", &ev.process), Some(Placement::Verified));
        assert!(matches!(
            p.check("node-b", &ev.process),
            Some(Placement::Refused(_))
        ));
        p.deleted("b", t0 + KEEP_DELETED);
        assert_eq!(p.check("node-a", &ev.process), None, "forgotten");
        assert_eq!(p.len(), 1);
    }
}
