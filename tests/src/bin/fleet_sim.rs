//! A simulated Kubernetes fleet for the fleet-scale benchmark (issue 18): `--nodes` nodes, each
//! a real mTLS sensor session with the fleet certificate, each running pods of a few
//! Deployments and every DaemonSet, executing their executables at `--execs-per-node` per
//! second, and sending what a sensor would send.
//!
//! Every node judges each execution with the real `procguard_core::baseline::Matcher` over
//! the baselines the server pushed to its own session (snapshot and updates), and offers it to
//! the real `procguard_sensor::summary::Summaries` table, as `sensor/src/uplink.rs` does.
//! `--mode per-exec` is a sensor talking to a server without summaries (one event per
//! execution); `--mode summaries` is a sensor talking to one that accepts them. Events are
//! stamped like the real uplink's (`append`): a UUID, the node's next sequence, the kind, the
//! count (`executions`) and the last time of a summary; sent in batches of at most 500 every
//! `--flush-ms`, with at most 4,000 events unacknowledged.
//!
//! What happens on the nodes:
//! - `--deployments` Deployments of 2 to 10 executables each; every node runs
//!   `--pods-per-node` of their pods (each with its own UID and name) and one pod of each of
//!   `--daemonsets` DaemonSets; an execution is one of its pod's executables;
//! - pods are replaced now and then (`--pod-churn-per-hour` per node: a new UID and name);
//! - deviations: `--deviations-per-node-hour` executions of a tool no baseline holds;
//! - every `--crashloop-every`-th node has a pod that runs a bad binary from its writable
//!   layer `--crashloop-rate` times a second (besides its `--execs-per-node`);
//! - `--new-workload-after` seconds into the measured phase, a new Deployment starts on
//!   `--new-workload-nodes` nodes: its executables are a learning baseline's new elements.
//!
//! Phases: the first `--warmup-nodes` nodes run pods of every workload until the server has
//! ended learning for all of them (run the server with `--auto-enforce` and short learning
//! flags) and pushed them; the other nodes connect then (`--connect-rate` a second); after
//! `--settle` seconds the measured phase lasts `--seconds`; then every node sends what it
//! holds and waits for its acks. Prints one JSON line: the measured phase's events, bytes and
//! executions, the deviation latency (from the deviation's send to its ack), the latency of a
//! new learning element (from its first execution to its ack), and, with `--server-pid` and
//! `--data-dir`, the server's CPU and the growth of its database over the measured phase.

use clap::{Parser, ValueEnum};
use procguard_core::baseline::{Matcher, Verdict};
use procguard_core::identity::WorkloadKind;
use procguard_core::process::Ancestor;
use procguard_core::{ContainerInfo, ExecContext, Origin, ProcessEvent, WorkloadIdentity};
use procguard_proto::convert::{baseline_from_pb, timestamp};
use procguard_proto::v1 as pb;
use procguard_sensor::summary::{Judged, Outgoing, Summaries};
use prost::Message;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_stream::StreamExt;

// As the server's: with glibc's allocator, malloc and free were more than half of the
// simulator's CPU at 10,000 nodes.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events in one batch, as the real uplink (`BATCH`).
const BATCH: usize = 500;
/// Events sent and not yet acknowledged, at most, as the real uplink (`IN_FLIGHT`).
const IN_FLIGHT: usize = 8 * BATCH;
/// The health report's period, as the real sensor's (`HEALTH_EVERY`).
const HEALTH_EVERY: Duration = Duration::from_secs(10);
/// The cluster every node reports.
const CLUSTER: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One event per execution: a sensor talking to a server without summaries.
    PerExec,
    /// The real summary table, as with a server whose Welcome accepts summaries.
    Summaries,
}

#[derive(Debug, Parser)]
#[command(about = "A simulated fleet of sensors for the fleet-scale benchmark")]
struct Args {
    /// The server's gRPC URL.
    #[arg(long)]
    server: String,
    /// The CA certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// The fleet client certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// The fleet client key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// The name the server's certificate is checked against.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Simulated nodes, each its own TCP and TLS session.
    #[arg(long, default_value_t = 500)]
    nodes: usize,
    /// Executions per second per node.
    #[arg(long, default_value_t = 20.0)]
    execs_per_node: f64,
    #[arg(long, value_enum, default_value_t = Mode::Summaries)]
    mode: Mode,
    /// The summary interval in seconds (the sensor's `--summary-interval`).
    #[arg(long, default_value_t = 30.0)]
    summary_interval: f64,
    /// The summary table's bound (the sensor's `--summary-max-entries`).
    #[arg(long, default_value_t = 10_000)]
    summary_max_entries: usize,
    /// Deployments in the cluster.
    #[arg(long, default_value_t = 100)]
    deployments: usize,
    /// DaemonSets in the cluster (a pod of each on every node).
    #[arg(long, default_value_t = 3)]
    daemonsets: usize,
    /// Deployment pods per node.
    #[arg(long, default_value_t = 4)]
    pods_per_node: usize,
    /// Pods replaced per node per hour.
    #[arg(long, default_value_t = 6.0)]
    pod_churn_per_hour: f64,
    /// Deviations per node per hour.
    #[arg(long, default_value_t = 6.0)]
    deviations_per_node_hour: f64,
    /// Every this many nodes, one crash-loops a bad binary (0: none).
    #[arg(long, default_value_t = 100)]
    crashloop_every: usize,
    /// Executions of the bad binary per second on a crash-looping node.
    #[arg(long, default_value_t = 5.0)]
    crashloop_rate: f64,
    /// Nodes that run every workload first, until learning ends (0: ceil(2 x deployments /
    /// pods-per-node), so that each Deployment has two pods while it learns).
    #[arg(long, default_value_t = 0)]
    warmup_nodes: usize,
    /// Longest wait for the server to enforce every workload's baseline (0: no warm-up, all
    /// nodes at once, baselines as they are).
    #[arg(long, default_value_t = 120.0)]
    warmup_timeout: f64,
    /// New sessions per second.
    #[arg(long, default_value_t = 500.0)]
    connect_rate: f64,
    /// Seconds between every node being connected and the measured phase.
    #[arg(long, default_value_t = 35.0)]
    settle: f64,
    /// Seconds of the measured phase.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Seconds into the measured phase when a new Deployment starts learning (negative: never).
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    new_workload_after: f64,
    /// Nodes the new Deployment runs on.
    #[arg(long, default_value_t = 5)]
    new_workload_nodes: usize,
    /// How often a node executes and sends, in milliseconds (the real uplink flushes every 50).
    #[arg(long, default_value_t = 50)]
    flush_ms: u64,
    /// The server's PID: its CPU time over the measured phase is reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's --data-dir: its growth over the measured phase is reported.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Report the executions sent per workload and executable (for tests that compare them
    /// with what the server stored).
    #[arg(long)]
    count_by_element: bool,
    /// Seed of the simulation's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A small deterministic generator (xorshift64*): the simulation needs cheap choices, not
/// cryptography.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A workload of the cluster and its stable executables.
struct Workload {
    id: WorkloadIdentity,
    /// (path, sha256) of each executable; the first is the entrypoint.
    exes: Vec<(String, String)>,
}

fn sha_of(s: &str) -> String {
    // Stable and distinct per path: 64 hex digits from two rounds of the generator.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let mut r = Rng::new(h);
    (0..4).map(|_| format!("{:016x}", r.next())).collect()
}

fn workload(kind: WorkloadKind, ns: &str, name: &str, exes: usize) -> Workload {
    let mut list = vec![(format!("/app/{name}"), String::new())];
    for k in 1..exes {
        list.push((format!("/usr/bin/{name}-tool-{k}"), String::new()));
    }
    for e in &mut list {
        e.1 = sha_of(&e.0);
    }
    Workload {
        id: WorkloadIdentity::new(CLUSTER, ns, kind, name, "app"),
        exes: list,
    }
}

/// The cluster's workloads: the Deployments, then the DaemonSets, then the late Deployment.
struct Cluster {
    workloads: Vec<Workload>,
    deployments: usize,
    daemonsets: usize,
}

impl Cluster {
    fn new(deployments: usize, daemonsets: usize, run: &str) -> Self {
        let mut workloads = Vec::new();
        for d in 0..deployments {
            // 2 to 10 executables.
            workloads.push(workload(
                WorkloadKind::Deployment,
                &format!("team-{}", d % 10),
                &format!("svc-{d:03}"),
                2 + (d * 7) % 9,
            ));
        }
        for s in 0..daemonsets {
            workloads.push(workload(
                WorkloadKind::DaemonSet,
                "kube-system",
                &format!("agent-{s}"),
                2 + (s * 5) % 9,
            ));
        }
        workloads.push(workload(
            WorkloadKind::Deployment,
            "team-late",
            &format!("late-{run}"),
            6,
        ));
        Self {
            workloads,
            deployments,
            daemonsets,
        }
    }

    fn late(&self) -> usize {
        self.deployments + self.daemonsets
    }
}

/// One pod on a node: its workload and one prepared event per executable (an execution is a
/// copy with its own PID and start time).
struct Pod {
    workload: usize,
    templates: Vec<ProcessEvent>,
}

fn pod(cluster: &Cluster, w: usize, node: &str, rng: &mut Rng) -> Pod {
    let wl = &cluster.workloads[w];
    let uid = uuid::Uuid::from_u64_pair(rng.next(), rng.next()).to_string();
    let name = format!("{}-{:05x}", wl.id.workload_name, rng.next() & 0xfffff);
    let entry = wl.exes[0].0.clone();
    let templates = wl
        .exes
        .iter()
        .enumerate()
        .map(|(k, (path, sha))| {
            let mut ev = ProcessEvent::test(path)
                .argv(&[path, "--serve"])
                .on_node(node)
                .in_workload(&wl.id)
                .sha256(sha)
                .context(if k == 0 {
                    ExecContext::Entrypoint
                } else {
                    ExecContext::Descendant
                });
            if k > 0 {
                ev.ancestors = vec![Ancestor {
                    pid: 1,
                    exe_path: entry.clone(),
                }];
            }
            ev.container = Some(ContainerInfo {
                container_id: format!("{:016x}{:016x}", rng.next(), rng.next()),
                pod_uid: Some(uid.clone()),
                pod_name: Some(name.clone()),
                ..Default::default()
            });
            ev
        })
        .collect();
    Pod {
        workload: w,
        templates,
    }
}

/// Counters over the whole run; the measured phase is the difference of two readings.
#[derive(Default)]
struct Counters {
    welcomed: AtomicU64,
    failed: AtomicU64,
    /// Executions the nodes generated.
    generated: AtomicU64,
    /// Executions the events sent stand for.
    represented: AtomicU64,
    events: AtomicU64,
    summary_events: AtomicU64,
    deviation_events: AtomicU64,
    batches: AtomicU64,
    /// Encoded bytes of the batches (`SensorMessage`, gRPC framing aside).
    bytes: AtomicU64,
    /// Encoded bytes of the health reports.
    health_bytes: AtomicU64,
    acked: AtomicU64,
    /// Events waiting to be sent at the last tick, over every node.
    backlog: AtomicU64,
    /// Events not acknowledged 30 s after the end, over every node.
    unacked_at_end: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    at_s: f64,
    generated: u64,
    represented: u64,
    events: u64,
    summary_events: u64,
    deviation_events: u64,
    batches: u64,
    bytes: u64,
    health_bytes: u64,
    acked: u64,
    server_cpu_s: f64,
    data_dir_bytes: u64,
    /// Bytes the server caused to be written to storage (`write_bytes` of `/proc/<pid>/io`).
    server_written: u64,
}

/// Phases every node reads: in the warm-up only the workloads' own executables run (no
/// deviation, no crash loop: a learning baseline would learn them).
const WARMUP: u8 = 0;
const RUNNING: u8 = 1;
const STOPPING: u8 = 2;

struct Ctx {
    args: Args,
    cluster: Cluster,
    endpoint: tonic::transport::Endpoint,
    counters: Counters,
    phase: AtomicU8,
    /// Whether the late Deployment runs.
    late: AtomicBool,
    /// Whether latencies are recorded (the measured phase).
    measuring: AtomicBool,
    /// Baselines past learning that node 0 holds.
    enforced_at_node0: AtomicU64,
    deviation_latency_ms: Mutex<Vec<f64>>,
    learning_latency_ms: Mutex<Vec<f64>>,
    /// With `--count-by-element`: executions sent per "workload exe", over the run.
    by_element: Mutex<BTreeMap<String, u64>>,
    started: Instant,
}

/// What a node sent and waits to hear about.
struct Sent {
    last_sequence: u64,
    events: usize,
    /// Deviations sent in it on their own (their latency is measured), with when.
    deviations: usize,
    /// New learning elements in it: when they first ran.
    learning: Vec<Instant>,
    at: Instant,
}

/// One outgoing event waiting for its batch.
struct Queued {
    event: pb::SensorEvent,
    single_deviation: bool,
    new_learning: Option<Instant>,
}

async fn node(i: usize, ctx: Arc<Ctx>) -> Result<(), String> {
    let args = &ctx.args;
    let name = format!("sim-{i:05}");
    let mut rng = Rng::new(args.seed ^ (i as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1));
    let cluster = &ctx.cluster;
    // Which pods this node runs: warm-up nodes cover the Deployments in turn (each twice),
    // every node its share of Deployments, and one pod of every DaemonSet.
    let mut pods: Vec<Pod> = Vec::new();
    for j in 0..args.pods_per_node.max(1) {
        let d = (i * args.pods_per_node + j) % cluster.deployments.max(1);
        if cluster.deployments > 0 {
            pods.push(pod(cluster, d, &name, &mut rng));
        }
    }
    for s in 0..cluster.daemonsets {
        pods.push(pod(cluster, cluster.deployments + s, &name, &mut rng));
    }
    let regular_pods = pods.len();
    let crashloop =
        args.crashloop_every > 0 && i % args.crashloop_every == args.crashloop_every - 1;
    let bad = crashloop.then(|| {
        let mut ev = pods[0].templates[0].clone();
        ev.exe_path = "/tmp/bad".into();
        ev.argv = vec!["/tmp/bad".into(), "--start".into()];
        ev.comm = "bad".into();
        ev.exe_sha256 = Some(sha_of("/tmp/bad"));
        ev.origin = Origin::WritableLayer;
        ev.exe_writable_location = true;
        ev.context = ExecContext::Entrypoint;
        ev.ancestors.clear();
        ev
    });
    let runs_late = i < args.new_workload_nodes;
    let mut late_seen: HashSet<usize> = HashSet::new();

    let channel = ctx
        .endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = pb::sensor_service_client::SensorServiceClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024);
    // Bounded like the real sensor's outbound queue.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::SensorMessage>(16);
    let hello = pb::SensorMessage {
        body: Some(pb::sensor_message::Body::Hello(pb::Hello {
            node_name: name.clone(),
            sensor_version: "fleet-sim".into(),
            capabilities: vec![
                pb::SensorCapability::LocalEnforcement as i32,
                pb::SensorCapability::Spool as i32,
            ],
            boot_id: uuid::Uuid::new_v4().to_string(),
            last_sequence: 0,
            baseline_revision: 0,
            cluster: CLUSTER.into(),
        })),
    };
    tx.send(hello).await.map_err(|e| e.to_string())?;
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("session: {}: {}", s.code(), s.message()))?
        .into_inner();

    let mut matcher = Matcher::default();
    let mut revision = 0u64;
    // Real sensors start at different times, so their intervals end at different times: the
    // first interval here is a random part of one (its table is then replaced by one with the
    // whole interval, which forgets the keys of that first interval: a learning key seen only
    // then goes at once once more).
    let interval = Duration::from_secs_f64(args.summary_interval);
    let mut summaries = Summaries::new(
        interval.mul_f64(0.05 + 0.95 * (rng.next() % 1000) as f64 / 1000.0),
        args.summary_max_entries,
    );
    let mut first_interval = !interval.is_zero();
    let mut accepts = false;
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut in_flight: VecDeque<Sent> = VecDeque::new();
    let mut in_flight_events = 0usize;
    let mut seq = 0u64;
    let mut welcomed = false;
    let mut tick = tokio::time::interval(Duration::from_millis(args.flush_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health = tokio::time::interval(HEALTH_EVERY);
    let mut last_tick = Instant::now();
    let mut carry = 0.0f64;
    let mut crash_carry = 0.0f64;
    let mut stop_deadline: Option<Instant> = None;
    let mut last_backlog = 0u64;
    let mut by_element: BTreeMap<String, u64> = BTreeMap::new();
    let c = &ctx.counters;

    loop {
        tokio::select! {
            m = inbound.next() => match m {
                Some(Ok(pb::ServerMessage { body: Some(body) })) => match body {
                    pb::server_message::Body::Welcome(w) => {
                        welcomed = true;
                        accepts = args.mode == Mode::Summaries && w.accepts_summaries;
                        summaries.server_accepts(accepts);
                        c.welcomed.fetch_add(1, Ordering::Relaxed);
                    }
                    pb::server_message::Body::Ack(a) => {
                        let now = Instant::now();
                        let measuring = ctx.measuring.load(Ordering::Relaxed);
                        while in_flight.front().is_some_and(|s| s.last_sequence <= a.sequence) {
                            let s = in_flight.pop_front().expect("front");
                            in_flight_events -= s.events;
                            c.acked.fetch_add(s.events as u64, Ordering::Relaxed);
                            if measuring && s.deviations > 0 {
                                let ms = now.duration_since(s.at).as_secs_f64() * 1e3;
                                ctx.deviation_latency_ms.lock().expect("lock")
                                    .extend(std::iter::repeat_n(ms, s.deviations));
                            }
                            if !s.learning.is_empty() {
                                let mut l = ctx.learning_latency_ms.lock().expect("lock");
                                l.extend(s.learning.iter().map(|t| now.duration_since(*t).as_secs_f64() * 1e3));
                            }
                        }
                    }
                    pb::server_message::Body::Snapshot(s) => {
                        let list: Vec<_> = s.baselines.iter().filter_map(|b| baseline_from_pb(b).ok()).collect();
                        matcher = Matcher::new(list.iter());
                        revision = s.revision;
                        if i == 0 { ctx.enforced_at_node0.store(matcher.len() as u64, Ordering::Relaxed); }
                    }
                    pb::server_message::Body::Update(u) => {
                        if let Some(b) = u.baseline.as_ref().and_then(|b| baseline_from_pb(b).ok()) {
                            if u.removed { matcher.remove(&b.workload) } else { matcher.upsert(&b) }
                        }
                        revision = revision.max(u.revision);
                        if i == 0 { ctx.enforced_at_node0.store(matcher.len() as u64, Ordering::Relaxed); }
                    }
                },
                Some(Ok(_)) => {}
                Some(Err(s)) => return Err(format!("stream: {}: {}", s.code(), s.message())),
                None => return Err("server closed the stream".into()),
            },
            _ = health.tick() => {
                if welcomed {
                    let m = pb::SensorMessage { body: Some(pb::sensor_message::Body::Health(pb::SensorHealth {
                        events_seen: c.generated.load(Ordering::Relaxed),
                        at: Some(timestamp(SystemTime::now())),
                        ..Default::default()
                    }))};
                    c.health_bytes.fetch_add(m.encoded_len() as u64, Ordering::Relaxed);
                    tx.send(m).await.map_err(|e| e.to_string())?;
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let dt = now.duration_since(last_tick).as_secs_f64();
                last_tick = now;
                if !welcomed { continue; }
                let phase = ctx.phase.load(Ordering::Relaxed);
                let wall = SystemTime::now();
                let mut offered: Vec<(ProcessEvent, Judged, Option<Instant>)> = Vec::new();
                if phase == WARMUP || phase == RUNNING {
                    // The node's executions in this tick.
                    carry += args.execs_per_node * dt;
                    let running = phase == RUNNING;
                    let late_on = runs_late && ctx.late.load(Ordering::Relaxed);
                    if late_on && pods.len() == regular_pods {
                        pods.push(pod(cluster, cluster.late(), &name, &mut rng));
                    }
                    while carry >= 1.0 {
                        carry -= 1.0;
                        let p = &pods[rng.below(pods.len())];
                        let k = rng.below(p.templates.len());
                        let mut ev = p.templates[k].clone();
                        ev.pid = 1000 + (rng.next() % 4_000_000) as u32;
                        ev.start_time = Some(wall);
                        let first_late = (p.workload == cluster.late() && late_seen.insert(k)).then_some(now);
                        offered.push((ev, Judged::Allowed, first_late));
                    }
                    if let Some(bad) = bad.as_ref().filter(|_| running) {
                        crash_carry += args.crashloop_rate * dt;
                        while crash_carry >= 1.0 {
                            crash_carry -= 1.0;
                            let mut ev = bad.clone();
                            ev.pid = 1000 + (rng.next() % 4_000_000) as u32;
                            ev.start_time = Some(wall);
                            offered.push((ev, Judged::Allowed, None));
                        }
                    }
                    if running && rng.chance(args.deviations_per_node_hour / 3600.0 * dt) {
                        let p = &pods[rng.below(regular_pods)];
                        let mut ev = p.templates[0].clone();
                        let tool = format!("/usr/bin/dev-tool-{}", rng.below(5));
                        ev.argv = vec![tool.clone(), format!("--x={}", rng.next())];
                        ev.exe_sha256 = Some(sha_of(&tool));
                        ev.exe_path = tool;
                        ev.comm = "dev-tool".into();
                        ev.context = ExecContext::Descendant;
                        ev.pid = 1000 + (rng.next() % 4_000_000) as u32;
                        ev.start_time = Some(wall);
                        offered.push((ev, Judged::Allowed, None));
                    }
                    if rng.chance(args.pod_churn_per_hour / 3600.0 * dt) {
                        let j = rng.below(regular_pods);
                        let w = pods[j].workload;
                        pods[j] = pod(cluster, w, &name, &mut rng);
                    }
                }
                c.generated.fetch_add(offered.len() as u64, Ordering::Relaxed);
                for (ev, _, first_late) in offered {
                    // The judge: the real matcher over the baselines this session holds, read
                    // as the real uplink reads its verdicts.
                    let judged = match matcher.check(&ev, wall) {
                        Verdict::Deviation => Judged::Deviation,
                        Verdict::Learning | Verdict::Partial => Judged::Learning,
                        Verdict::Allowed => Judged::Allowed,
                    };
                    if let Some(out) = summaries.offer(ev, judged, wall) {
                        let learning = (judged == Judged::Learning).then_some(first_late).flatten();
                        queue.push_back(stamp(&mut seq, out, revision, learning));
                    }
                }
                if phase == STOPPING && stop_deadline.is_none() {
                    // A graceful stop: what the table holds goes now.
                    for out in summaries.drain(now) {
                        queue.push_back(stamp(&mut seq, out, revision, None));
                    }
                    stop_deadline = Some(now + Duration::from_secs(30));
                } else if summaries.due(now) {
                    for out in summaries.drain(now) {
                        queue.push_back(stamp(&mut seq, out, revision, None));
                    }
                    if first_interval {
                        first_interval = false;
                        summaries = Summaries::new(interval, args.summary_max_entries);
                        summaries.server_accepts(accepts);
                    }
                }
                // Send while fewer than IN_FLIGHT wait for their ack.
                while in_flight_events < IN_FLIGHT && !queue.is_empty() {
                    let n = queue.len().min(BATCH).min(IN_FLIGHT - in_flight_events);
                    let mut events = Vec::with_capacity(n);
                    let mut deviations = 0;
                    let mut learning = Vec::new();
                    for q in queue.drain(..n) {
                        deviations += usize::from(q.single_deviation);
                        learning.extend(q.new_learning);
                        c.represented.fetch_add(q.event.executions.max(1), Ordering::Relaxed);
                        c.summary_events.fetch_add(u64::from(q.event.executions > 1), Ordering::Relaxed);
                        c.deviation_events.fetch_add(u64::from(q.event.kind == pb::EventKind::Deviation as i32), Ordering::Relaxed);
                        if args.count_by_element {
                            if let Some(p) = &q.event.process {
                                let w = p.workload.as_ref().map(|w| w.workload_name.as_str()).unwrap_or("");
                                *by_element.entry(format!("{w} {}", p.exe_path)).or_default() += q.event.executions.max(1);
                            }
                        }
                        events.push(q.event);
                    }
                    let last_sequence = events.last().map(|e| e.sequence).unwrap_or(0);
                    let m = pb::SensorMessage { body: Some(pb::sensor_message::Body::Batch(pb::EventBatch { events })) };
                    c.bytes.fetch_add(m.encoded_len() as u64, Ordering::Relaxed);
                    c.events.fetch_add(n as u64, Ordering::Relaxed);
                    c.batches.fetch_add(1, Ordering::Relaxed);
                    tx.send(m).await.map_err(|e| e.to_string())?;
                    in_flight.push_back(Sent { last_sequence, events: n, deviations, learning, at: Instant::now() });
                    in_flight_events += n;
                }
                let backlog = (queue.len() + in_flight_events) as u64;
                if backlog != last_backlog {
                    // Kept as a sum over nodes: add this node's change.
                    c.backlog.fetch_add(backlog.wrapping_sub(last_backlog), Ordering::Relaxed);
                    last_backlog = backlog;
                }
                if let Some(deadline) = stop_deadline {
                    if (queue.is_empty() && in_flight.is_empty()) || now >= deadline {
                        let mut all = ctx.by_element.lock().expect("lock");
                        for (k, v) in std::mem::take(&mut by_element) {
                            *all.entry(k).or_default() += v;
                        }
                        let left = (queue.len() + in_flight_events) as u64;
                        c.unacked_at_end.fetch_add(left, Ordering::Relaxed);
                        return if left == 0 {
                            Ok(())
                        } else {
                            Err("events unacknowledged 30 s after the end".into())
                        };
                    }
                }
            }
        }
    }
}

/// Stamps one outgoing event as the real uplink does (`Uplink::append`).
fn stamp(seq: &mut u64, out: Outgoing, revision: u64, learning: Option<Instant>) -> Queued {
    *seq += 1;
    let summary = out.executions > 1;
    let kind = if out.deviation {
        pb::EventKind::Deviation
    } else {
        pb::EventKind::Observation
    };
    Queued {
        event: pb::SensorEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            sequence: *seq,
            kind: kind as i32,
            observed_at: Some(timestamp(out.first_at)),
            process: Some((&out.event).into()),
            baseline_revision: if out.deviation { revision } else { 0 },
            executions: if summary { out.executions } else { 0 },
            last_observed_at: summary.then(|| timestamp(out.last_at)),
            ..Default::default()
        },
        single_deviation: out.deviation && !summary,
        new_learning: learning,
    }
}

/// CPU time (user + system) of a process in seconds (clock ticks of 10 ms).
fn cpu_seconds(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Bytes a process caused to be written to storage so far.
fn written_bytes(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A process's resident memory (VmRSS, VmHWM) in KiB.
fn memory_kib(pid: &str) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Bytes of the files under `dir` (their lengths).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn read(ctx: &Ctx) -> Reading {
    let c = &ctx.counters;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Reading {
        at_s: ctx.started.elapsed().as_secs_f64(),
        generated: l(&c.generated),
        represented: l(&c.represented),
        events: l(&c.events),
        summary_events: l(&c.summary_events),
        deviation_events: l(&c.deviation_events),
        batches: l(&c.batches),
        bytes: l(&c.bytes),
        health_bytes: l(&c.health_bytes),
        acked: l(&c.acked),
        server_cpu_s: ctx
            .args
            .server_pid
            .map(|p| cpu_seconds(&p.to_string()))
            .unwrap_or(0.0),
        data_dir_bytes: ctx.args.data_dir.as_deref().map(dir_bytes).unwrap_or(0),
        server_written: ctx
            .args
            .server_pid
            .map(|p| written_bytes(&p.to_string()))
            .unwrap_or(0),
    }
}

/// (p50, p99, max) of `v`.
fn percentiles(v: &mut [f64]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::json!(null);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    serde_json::json!({
        "count": v.len(),
        "p50_ms": (at(0.50) * 10.0).round() / 10.0,
        "p99_ms": (at(0.99) * 10.0).round() / 10.0,
        "max_ms": (v[v.len() - 1] * 10.0).round() / 10.0,
    })
}

fn log(ctx: &Ctx, what: &str) {
    let c = &ctx.counters;
    eprintln!(
        "[{:7.1}s] {what}: welcomed={} failed={} generated={} events={} acked={} backlog={}",
        ctx.started.elapsed().as_secs_f64(),
        c.welcomed.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
        c.generated.load(Ordering::Relaxed),
        c.events.load(Ordering::Relaxed),
        c.acked.load(Ordering::Relaxed),
        c.backlog.load(Ordering::Relaxed),
    );
}

async fn sleep_logging(ctx: &Ctx, secs: f64, what: &str) {
    let until = Instant::now() + Duration::from_secs_f64(secs.max(0.0));
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(5).min(until - Instant::now())).await;
        log(ctx, what);
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let read_file =
        |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read_file(
            &args.ca,
        )?))
        .identity(tonic::transport::Identity::from_pem(
            read_file(&args.cert)?,
            read_file(&args.key)?,
        ))
        .domain_name(args.server_name.clone());
    let endpoint = tonic::transport::Endpoint::from_shared(args.server.clone())
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(30))
        .http2_keep_alive_interval(Duration::from_secs(20));
    let run = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    );
    let cluster = Cluster::new(args.deployments, args.daemonsets, &run);
    let warmup_nodes = if args.warmup_timeout <= 0.0 {
        0
    } else if args.warmup_nodes > 0 {
        args.warmup_nodes
    } else {
        (2 * args.deployments)
            .div_ceil(args.pods_per_node.max(1))
            .max(2)
    }
    .min(args.nodes);
    let ctx = Arc::new(Ctx {
        args,
        cluster,
        endpoint,
        counters: Counters::default(),
        phase: AtomicU8::new(WARMUP),
        late: AtomicBool::new(false),
        measuring: AtomicBool::new(false),
        enforced_at_node0: AtomicU64::new(0),
        deviation_latency_ms: Mutex::new(Vec::new()),
        learning_latency_ms: Mutex::new(Vec::new()),
        by_element: Mutex::new(BTreeMap::new()),
        started: Instant::now(),
    });
    let args = &ctx.args;
    let n = args.nodes;
    let mut tasks = Vec::with_capacity(n);
    let spawn_paced = |from: usize, to: usize, tasks: &mut Vec<_>| {
        let ctx = ctx.clone();
        let gap = Duration::from_secs_f64(1.0 / ctx.args.connect_rate.max(1.0));
        let mut handles = Vec::new();
        let start = Instant::now();
        for i in from..to {
            let ctx = ctx.clone();
            let at = start + gap * (i - from) as u32;
            handles.push(tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                node(i, ctx).await
            }));
        }
        tasks.extend(handles);
    };

    // Warm-up: the first nodes run every workload until each is enforced and pushed.
    let workloads = (ctx.cluster.deployments + ctx.cluster.daemonsets) as u64;
    let mut warmup_s = 0.0;
    if warmup_nodes > 0 {
        spawn_paced(0, warmup_nodes, &mut tasks);
        let t = Instant::now();
        while ctx.enforced_at_node0.load(Ordering::Relaxed) < workloads
            && t.elapsed().as_secs_f64() < args.warmup_timeout
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if t.elapsed().as_millis() % 5000 < 500 {
                log(&ctx, "warm-up");
            }
        }
        warmup_s = t.elapsed().as_secs_f64();
        eprintln!(
            "warm-up: {} of {workloads} baselines enforced at node 0 after {warmup_s:.1} s",
            ctx.enforced_at_node0.load(Ordering::Relaxed)
        );
    }
    // Everyone else; the nodes run as soon as they are welcomed.
    ctx.phase.store(RUNNING, Ordering::Relaxed);
    let t = Instant::now();
    spawn_paced(warmup_nodes, n, &mut tasks);
    while (ctx.counters.welcomed.load(Ordering::Relaxed)
        + ctx.counters.failed.load(Ordering::Relaxed))
        < n as u64
        && t.elapsed() < Duration::from_secs(600)
        && !tasks.iter().all(|t| t.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if t.elapsed().as_millis() % 5000 < 200 {
            log(&ctx, "connecting");
        }
    }
    let connect_s = t.elapsed().as_secs_f64();
    log(&ctx, "connected");
    sleep_logging(&ctx, args.settle, "settling").await;

    // The measured phase.
    let pid = args.server_pid.map(|p| p.to_string());
    let r0 = read(&ctx);
    let sim_cpu0 = cpu_seconds("self");
    ctx.measuring.store(true, Ordering::Relaxed);
    if args.new_workload_after >= 0.0 && args.new_workload_after < args.seconds {
        sleep_logging(&ctx, args.new_workload_after, "measuring").await;
        ctx.late.store(true, Ordering::Relaxed);
        sleep_logging(&ctx, args.seconds - args.new_workload_after, "measuring").await;
    } else {
        sleep_logging(&ctx, args.seconds, "measuring").await;
    }
    let r1 = read(&ctx);
    let sim_cpu1 = cpu_seconds("self");
    let backlog_end = ctx.counters.backlog.load(Ordering::Relaxed);
    ctx.measuring.store(false, Ordering::Relaxed);
    let server_mem = pid.as_deref().map(memory_kib).unwrap_or((0, 0));

    // The end: every node sends what it holds and waits for its acks.
    ctx.phase.store(STOPPING, Ordering::Relaxed);
    let mut errors = std::collections::BTreeMap::<String, u64>::new();
    for t in tasks {
        let e = match t.await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.chars().take(160).collect(),
            Err(e) => e.to_string(),
        };
        ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
        *errors.entry(e).or_default() += 1;
    }
    let end = read(&ctx);
    let secs = r1.at_s - r0.at_s;
    let per_node_min = |v: u64| (v as f64 / n as f64 / (secs / 60.0) * 10.0).round() / 10.0;
    let d = |f: fn(&Reading) -> u64| f(&r1) - f(&r0);
    let cpu = r1.server_cpu_s - r0.server_cpu_s;
    let disk = r1.data_dir_bytes as i64 - r0.data_dir_bytes as i64;
    let mut dev = ctx.deviation_latency_ms.lock().expect("lock").clone();
    let mut learn = ctx.learning_latency_ms.lock().expect("lock").clone();
    println!(
        "{}",
        serde_json::json!({
            "mode": format!("{:?}", args.mode),
            "nodes": n,
            "execs_per_node": args.execs_per_node,
            "summary_interval_s": args.summary_interval,
            "welcomed": ctx.counters.welcomed.load(Ordering::Relaxed),
            "failed": ctx.counters.failed.load(Ordering::Relaxed),
            "errors": errors,
            "warmup_nodes": warmup_nodes,
            "warmup_s": warmup_s,
            "enforced_at_node0": ctx.enforced_at_node0.load(Ordering::Relaxed),
            "connect_s": connect_s,
            "measured_s": secs,
            "measured": {
                "executions_generated": d(|r| r.generated),
                "executions_sent": d(|r| r.represented),
                "events": d(|r| r.events),
                "summary_events": d(|r| r.summary_events),
                "deviation_events": d(|r| r.deviation_events),
                "batches": d(|r| r.batches),
                "bytes": d(|r| r.bytes),
                "health_bytes": d(|r| r.health_bytes),
                "acked": d(|r| r.acked),
                "backlog_at_end": backlog_end,
                "events_per_node_min": per_node_min(d(|r| r.events)),
                "bytes_per_node_min": per_node_min(d(|r| r.bytes)),
                "health_bytes_per_node_min": per_node_min(d(|r| r.health_bytes)),
                "executions_per_node_min": per_node_min(d(|r| r.generated)),
                "server_cpu_s": cpu,
                "server_cores": cpu / secs,
                "server_cores_per_1000_nodes": cpu / secs / (n as f64 / 1000.0),
                "data_dir_growth_bytes": disk,
                "data_dir_growth_mib_per_hour_extrapolated": disk as f64 / secs * 3600.0 / 1048576.0,
                "server_written_mib_per_hour_extrapolated": (r1.server_written - r0.server_written) as f64 / secs * 3600.0 / 1048576.0,
                "server_rss_kib": server_mem.0,
                "server_hwm_kib": server_mem.1,
                "simulator_cores": (sim_cpu1 - sim_cpu0) / secs,
            },
            "deviation_send_to_ack": percentiles(&mut dev),
            "new_learning_element_exec_to_ack": percentiles(&mut learn),
            "total": {
                "executions_generated": end.generated,
                "executions_sent": end.represented,
                "events": end.events,
                "acked": end.acked,
                "unacked_at_end": ctx.counters.unacked_at_end.load(Ordering::Relaxed),
                "executions_by_element": *ctx.by_element.lock().expect("lock"),
            },
            "seconds": ctx.started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
