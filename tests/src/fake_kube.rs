//! A fake Kubernetes API server on loopback for the sensor's pod metadata: it speaks the real
//! list and watch protocol (`GET /api/v1/pods?fieldSelector=...` returning a `PodList` with a
//! `resourceVersion`, and `watch=true` returning chunked JSON watch events from that version
//! on), so the sensor's real `kube` client and watcher run unchanged against it.
//!
//! Plain HTTP with a bearer token: TLS is not what these tests are about. The pods it serves
//! are built with [`PodBuilder`] and name real Docker containers the test started.
//!
//! [`FakeKube::delay_answers`] makes it a slow API server: every list is answered, and every
//! change reaches the watches, only that long after it happened (late pod metadata).

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// One change: resourceVersion, watch event type, the pod, and when it was applied.
type Change = (u64, &'static str, Value, Instant);

/// The token the fake expects; anything else is answered 401, as a real API server would.
pub const TOKEN: &str = "procguard-fake-token";

#[derive(Debug, Default)]
struct Pods {
    rv: u64,
    /// Current pods by UID.
    pods: HashMap<String, Value>,
    /// Every change, for watches that start at an older resourceVersion.
    history: Vec<Change>,
    /// How late lists are answered and changes reach watches ([`FakeKube::delay_answers`]).
    delay: Duration,
    /// Request lines seen, for assertions on what the client asked.
    requests: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    pods: Arc<Mutex<Pods>>,
    /// Watch events to live watches. 1,024: a test applies a handful of pods; a lagging
    /// watcher gets an error event and relists, as against a real server.
    tx: broadcast::Sender<Change>,
}

/// A running fake API server; stops when dropped.
#[derive(Debug)]
pub struct FakeKube {
    /// Loopback port.
    pub port: u16,
    pods: Arc<Mutex<Pods>>,
    tx: broadcast::Sender<Change>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or("")
}

/// Applies a `fieldSelector` of the form `spec.nodeName=<node>` (the only one the sensor
/// uses); an unsupported selector is an error, as the real server answers 400.
fn selects(selector: Option<&String>, pod: &Value) -> Result<bool, String> {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return Ok(true);
    };
    match sel.split_once('=') {
        Some(("spec.nodeName", node)) => Ok(node_of(pod) == node.trim_start_matches('=')),
        _ => Err(format!("field label not supported: {sel}")),
    }
}

async fn pods_handler(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    uri: axum::http::Uri,
) -> Response {
    s.pods.lock().unwrap().requests.push(uri.to_string());
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {TOKEN}") {
        return json_response(StatusCode::UNAUTHORIZED, &status_json(401, "Unauthorized"));
    }
    let selector = q.get("fieldSelector");
    if let Err(e) = selects(selector, &json!({})) {
        return json_response(StatusCode::BAD_REQUEST, &status_json(400, &e));
    }
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watch {
        let (body, delay) = {
            let p = s.pods.lock().unwrap();
            let items: Vec<&Value> = p
                .pods
                .values()
                .filter(|pod| selects(selector, pod).unwrap_or(false))
                .collect();
            let body = json!({
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": p.rv.to_string()},
                "items": items,
            });
            (body, p.delay)
        };
        // A slow API server: the answer, as of the request, arrives `delay` later.
        tokio::time::sleep(delay).await;
        return json_response(StatusCode::OK, &body);
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let (backlog, rx, rv) = {
        let p = s.pods.lock().unwrap();
        let backlog: Vec<_> = p
            .history
            .iter()
            .filter(|(rv, _, _, _)| *rv > from)
            .cloned()
            .collect();
        (backlog, s.tx.subscribe(), p.rv)
    };
    let selector = selector.cloned();
    let filter = move |(_, kind, obj, at): &Change| {
        selects(selector.as_ref(), obj)
            .unwrap_or(false)
            .then(|| (json!({"type": kind, "object": obj}), *at))
    };
    let mut lines: Vec<(Value, Instant)> = backlog.iter().filter_map(&filter).collect();
    if bookmarks {
        lines.push((
            json!({"type": "BOOKMARK", "object": {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"resourceVersion": rv.to_string()}}}),
            Instant::now(),
        ));
    }
    let first = futures::stream::iter(lines);
    let live = futures::stream::unfold((rx, filter), |(mut rx, filter)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if let Some(v) = filter(&ev) {
                        return Some((v, (rx, filter)));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let gone = json!({"type": "ERROR", "object": status_json(410, "too old resource version")});
                    return Some(((gone, Instant::now()), (rx, filter)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures::StreamExt;
    // Each change reaches the watch `delay` after it was applied (in order: changes are applied
    // in order and share one delay).
    let pods = s.pods.clone();
    let body = first.chain(live).then(move |(v, at)| {
        let delay = pods.lock().unwrap().delay;
        async move {
            tokio::time::sleep_until((at + delay).into()).await;
            let mut line = serde_json::to_vec(&v).unwrap_or_default();
            line.push(b'\n');
            Ok::<_, std::io::Error>(line)
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(body))
        .unwrap()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .unwrap()
}

fn status_json(code: u16, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
           "message": message, "code": code})
}

impl FakeKube {
    /// Starts the server on a free loopback port.
    pub fn start() -> Self {
        let pods = Arc::new(Mutex::new(Pods::default()));
        let (tx, _) = broadcast::channel(1_024);
        let shared = Shared {
            pods: pods.clone(),
            tx: tx.clone(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake API");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new()
                    .route("/api/v1/pods", axum::routing::get(pods_handler))
                    .with_state(shared);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self {
            port,
            pods,
            tx,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Writes a kubeconfig for this server into `dir` and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: {TOKEN}\n",
            self.port
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Adds or updates a pod (an `ADDED` or `MODIFIED` watch event).
    pub fn apply(&self, mut pod: Value) {
        let mut p = self.pods.lock().unwrap();
        p.rv += 1;
        let rv = p.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = if p.pods.contains_key(&uid) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        p.pods.insert(uid, pod.clone());
        let at = Instant::now();
        p.history.push((rv, kind, pod.clone(), at));
        let _ = self.tx.send((rv, kind, pod, at));
    }

    /// Removes a pod (a `DELETED` watch event carrying its last state), as the API server does
    /// once the kubelet has reported its containers gone. An unknown UID changes nothing.
    pub fn delete(&self, uid: &str) {
        let mut p = self.pods.lock().unwrap();
        let Some(mut pod) = p.pods.remove(uid) else {
            return;
        };
        p.rv += 1;
        let rv = p.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let at = Instant::now();
        p.history.push((rv, "DELETED", pod.clone(), at));
        let _ = self.tx.send((rv, "DELETED", pod, at));
    }

    /// Makes this a slow API server from now on: lists are answered `delay` after they are
    /// asked, and each change reaches the watches `delay` after it was applied.
    pub fn delay_answers(&self, delay: Duration) {
        self.pods.lock().unwrap().delay = delay;
    }

    /// Request URIs received so far.
    pub fn requests(&self) -> Vec<String> {
        self.pods.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // Live watches end when the broadcast sender is gone; the server thread is detached
        // rather than joined so a stuck connection cannot hang a test.
        drop(self.thread.take());
    }
}

/// Builds pod JSON as the API server returns it.
#[derive(Debug, Clone)]
pub struct PodBuilder(Value);

impl PodBuilder {
    /// A pod `namespace/name` with `uid`, bound to `node`.
    pub fn new(namespace: &str, name: &str, uid: &str, node: &str) -> Self {
        Self(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": {}},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running", "containerStatuses": []},
        }))
    }

    /// Adds an owner reference (the pod's controller).
    pub fn owned_by(mut self, kind: &str, name: &str) -> Self {
        let api = match kind {
            "Job" => "batch/v1",
            _ => "apps/v1",
        };
        self.0["metadata"]["ownerReferences"] = json!([{
            "apiVersion": api, "kind": kind, "name": name,
            "uid": uuid::Uuid::new_v4().to_string(), "controller": true}]);
        self
    }

    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0["metadata"]["labels"][k] = json!(v);
        self
    }

    /// Adds a container to the spec, running as Docker container `docker_id` (`None`: not yet
    /// in the status), with an exec liveness probe when `probe` is given.
    pub fn container(
        mut self,
        name: &str,
        image: &str,
        docker_id: Option<&str>,
        probe: Option<&[&str]>,
    ) -> Self {
        let mut c = json!({"name": name, "image": image});
        if let Some(cmd) = probe {
            c["livenessProbe"] = json!({"exec": {"command": cmd}, "periodSeconds": 10});
        }
        self.0["spec"]["containers"].as_array_mut().unwrap().push(c);
        if let Some(id) = docker_id {
            self.0["status"]["containerStatuses"]
                .as_array_mut()
                .unwrap()
                .push(json!({
                    "name": name, "image": image, "ready": true, "restartCount": 0,
                    "imageID": format!("docker-pullable://{image}@{}", image_digest(image)),
                    "containerID": format!("docker://{id}"),
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }));
        }
        self
    }

    /// The pod JSON.
    pub fn build(self) -> Value {
        self.0
    }
}

/// The `sha256:` digest of a local Docker image (its ID, standing in for the registry digest
/// of an image that was never pushed).
pub fn image_digest(image: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .expect("docker image inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
