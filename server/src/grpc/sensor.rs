//! The sensor stream: the gRPC adapter for `SensorService.Session`.
//!
//! One stream per sensor. The first message must be a `Hello` whose node name the client
//! certificate vouches for. Each batch is converted at this edge (bad input becomes
//! `INVALID_ARGUMENT`), committed to the store, and acknowledged only once the store says it
//! is durable. Up to [`PIPELINE`] committed batches of one stream wait for their flush at a
//! time, acknowledged in order, so a stream's next batch commits while the previous one is
//! being written. Baseline changes reach every connected sensor through the [`Hub`]; a sensor
//! that falls behind the hub's buffer gets a full snapshot instead of missing an update.
//!
//! After the Hello, a stream is a `Session` with one method per event (a batch, its flush, a
//! health report, a baseline change, the summary tick, shutdown). This file is one concept, the
//! sensor stream, and a little over 600 lines for it: the Hello checks, the batch conversion at
//! the edge, the session, and the deviation log summary with its test.

use crate::auth::sensor::{check_node, sensor_mark, RefusalAudit};
use crate::auth::PeerCert;
use crate::hub::Hub;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::placement::{Placements, Screening};
use crate::store::{
    AuditEntry, AuditOutcome, HealthReport, IngestEvent, IngestOutcome, SharedStorage, Storage,
};
use futures::stream::FuturesOrdered;
use procguard_core::policy::Policies;
use procguard_core::Baseline;
use procguard_proto::convert::record::sensor_report;
use procguard_proto::convert::{snapshot_to_pb, update_to_pb};
use procguard_proto::v1 as pb;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Batches of one stream committed but not yet acknowledged (waiting for their flush). While
/// this many are pending, the stream reads no further message: backpressure to the sensor.
/// Longest capture-stop reason kept from a sensor's health report (it is the sensor's text).
const CAPTURE_STOPPED_MAX: usize = 512;
const PIPELINE: usize = 8;
/// A committed batch on its way to disk, with what it did.
type Durable =
    Pin<Box<dyn std::future::Future<Output = (crate::store::Result<()>, IngestOutcome)> + Send>>;
/// How long a new stream may take to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound messages buffered per sensor stream. Acks and pushes are small; when a sensor
/// stops reading, the stream's task waits here rather than buffering without bound.
const OUTBOUND_BUFFER: usize = 64;
/// Health reports of one stream waiting to be recorded. Reports carry cumulative counters, so
/// when one is still being recorded the next is skipped, not queued: nothing is lost.
const HEALTH_BUFFER: usize = 1;
/// At most one "Deviations stored." line per stream (per node) this often. Every deviation is
/// already stored, streamed to SIEMs and counted in `procguard_server_deviations`; a log line
/// per deviation (at debug) would flood the logs and cost ingest CPU at thousands per second.
const DEVIATION_SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// A count of events logged as a summary at most once per `every`: the first event after a
/// quiet period is logged at once, later ones are added up until `every` has passed since the
/// last line. Callers pass the time in.
#[derive(Debug)]
struct Summary<T> {
    every: Duration,
    last_line: Option<Instant>,
    count: u64,
    /// The newest event counted, named in the line as an example.
    example: Option<T>,
}

impl<T> Summary<T> {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last_line: None,
            count: 0,
            example: None,
        }
    }

    /// Counts `n` more events; returns the line to log now, if one is due.
    fn add(&mut self, n: u64, example: T, now: Instant) -> Option<(u64, T)> {
        if n == 0 {
            return None;
        }
        self.count += n;
        self.example = Some(example);
        self.due(now)
    }

    /// The line to log at `now`, if events were counted and `every` has passed since the last.
    fn due(&mut self, now: Instant) -> Option<(u64, T)> {
        if self
            .last_line
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            return None;
        }
        let line = self.take()?;
        self.last_line = Some(now);
        Some(line)
    }

    /// Whatever was counted and not logged yet (when the stream ends).
    fn take(&mut self) -> Option<(u64, T)> {
        let example = self.example.take()?;
        Some((std::mem::take(&mut self.count), example))
    }
}

/// `SensorService` implementation.
#[derive(Debug, Clone)]
pub struct SensorApi {
    store: SharedStorage,
    hub: Hub,
    metrics: Metrics,
    fleet_names: Vec<String>,
    policies: Arc<Policies>,
    shutdown: CancellationToken,
    limits: Limits,
    /// With `--kube on`: where pods run, to check each report against.
    placements: Option<Placements>,
    refusals: Arc<RefusalAudit>,
    snapshots: Arc<SnapshotCache>,
}

impl SensorApi {
    /// Builds the service. A certificate named in `fleet_names` may report for any node.
    pub fn new(
        store: SharedStorage,
        hub: Hub,
        metrics: Metrics,
        fleet_names: Vec<String>,
        policies: Arc<Policies>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            hub,
            metrics,
            fleet_names,
            policies,
            shutdown,
            limits: Limits::default(),
            placements: None,
            refusals: Arc::default(),
            snapshots: Arc::default(),
        }
    }

    /// Counts, logs and (for a certificate the CA signed, at most once a minute per
    /// certificate) audits a refused stream, and returns its status.
    async fn refuse(
        &self,
        status: Status,
        certificate: Option<String>,
        node: &str,
        peer: Option<std::net::SocketAddr>,
    ) -> Status {
        self.metrics.sensor_rejected.inc();
        // Counted in procguard_server_sensor_rejected_total; a misconfigured fleet retries
        // every few seconds per node, so the log gets the first refusal and then one every
        // 10 s with how many it held back.
        static REFUSED: procguard_runtime::repeated::Repeated =
            procguard_runtime::repeated::Repeated::new(std::time::Duration::from_secs(10));
        if let Some(held_back) = REFUSED.admit() {
            tracing::warn!(
                message = "Sensor stream refused.",
                certificate = certificate.as_deref().unwrap_or("none"),
                node,
                error = %status.message(),
                held_back
            );
        }
        if let Some(cert) = certificate {
            if self.refusals.due(&cert, Instant::now()) {
                let entry = crate::store::AuditEntry {
                    id: 0,
                    at: SystemTime::now(),
                    actor: format!("certificate:{cert}"),
                    role: String::new(),
                    action: "SensorSession".into(),
                    target: node.to_string(),
                    result: crate::store::AuditOutcome::Denied,
                    detail: status.message().to_string(),
                    peer: peer.map(|p| p.to_string()).unwrap_or_default(),
                };
                if let Err(e) = self.store.audit(entry).await {
                    tracing::error!(message = "Audit write failed.", error = %e, action = "SensorSession");
                }
            }
        }
        status
    }

    /// Applies the server's limits (the defaults otherwise).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Checks every report that names a pod against where the API says it runs
    /// ([`crate::placement`]).
    pub fn with_placements(mut self, placements: Placements) -> Self {
        self.placements = Some(placements);
        self
    }
}

fn snapshot(store: &dyn Storage) -> Result<pb::ServerMessage, Status> {
    let (revision, baselines) = store
        .enforcing()
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(snapshot_to_pb(revision, &baselines))
}

/// The snapshot a connecting sensor gets, built once per change of the baselines: the hub's
/// generation moves with every change pushed to the sensors, and a snapshot carries no
/// provenance, so every sensor that connects between two changes gets the same one. Building
/// it reads and parses every baseline past learning with its elements' provenance; 10,000
/// sensors connecting did that 10,000 times and connected at about 60 a second (issue 18).
#[derive(Debug, Default)]
struct SnapshotCache(std::sync::Mutex<Option<(u64, pb::ServerMessage)>>);

impl SnapshotCache {
    fn get(&self, store: &dyn Storage, hub: &Hub) -> Result<pb::ServerMessage, Status> {
        let generation = hub.generation();
        if let Some((g, m)) = self.0.lock().expect("snapshot cache").as_ref() {
            if *g == generation {
                return Ok(m.clone());
            }
        }
        let m = snapshot(store)?;
        // Kept only if no change was pushed while it was built (it may predate that change).
        if hub.generation() == generation {
            *self.0.lock().expect("snapshot cache") = Some((generation, m.clone()));
        }
        Ok(m)
    }
}

/// The server's clock in microseconds since the epoch: the floor of a node's sequence mark.
fn clock_us(now: SystemTime) -> u64 {
    now.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Converts a batch at the edge. `sequence_mark`: the node's mark for
/// [`Limits::check_sequence`].
fn convert_batch(
    batch: &pb::EventBatch,
    node: &str,
    limits: &Limits,
    sequence_mark: u64,
) -> Result<Vec<IngestEvent>, Status> {
    let max = limits.settings.max_batch_events;
    if batch.events.len() > max {
        limits.violated("batch_events");
        return Err(Status::invalid_argument(format!(
            "batch has {} events; at most {max} are accepted (--max-batch-events), split it",
            batch.events.len()
        )));
    }
    batch
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let bad = |what: String| Status::invalid_argument(format!("event {i}: {what}"));
            if e.event_id.is_empty() || e.event_id.len() > 64 {
                return Err(bad("event_id must be 1..=64 characters".into()));
            }
            if e.sequence == 0 {
                return Err(bad("sequence must be greater than 0".into()));
            }
            limits
                .check_sequence(e.sequence, sequence_mark, node)
                .map_err(bad)?;
            let p = e
                .process
                .as_ref()
                .ok_or_else(|| bad("process is required".into()))?;
            // Re-validated here: the sensor bounds argv, but the server trusts no sensor.
            limits.check_argv(&p.argv).map_err(bad)?;
            let mut process =
                procguard_core::ProcessEvent::try_from(p).map_err(|c| bad(c.to_string()))?;
            if process.node_name.is_empty() {
                process.node_name = node.to_string();
            } else if process.node_name != node {
                return Err(Status::permission_denied(format!(
                    "event {i}: node_name '{}' differs from this stream's node '{node}'",
                    process.node_name
                )));
            }
            if e.executions > MAX_EXECUTIONS {
                limits.violated("executions");
                return Err(bad(format!(
                    "executions is {}; one event stands for at most {MAX_EXECUTIONS} \
                     executions, send the rest as another event",
                    e.executions
                )));
            }
            Ok(IngestEvent {
                event_id: e.event_id.clone(),
                sequence: e.sequence,
                process,
                reported: sensor_report(e),
                placement: Default::default(),
                executions: e.executions.max(1),
            })
        })
        .collect()
}

/// Most executions one summary event may stand for (`SensorEvent.executions`): far above what
/// a sensor's interval gathers, and low enough that counters summed over a lifetime of them
/// stay far from overflow.
pub const MAX_EXECUTIONS: u64 = 1_000_000_000;

type Out = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::sensor_service_server::SensorService for SensorApi {
    type SessionStream = Out;

    async fn session(
        &self,
        request: Request<Streaming<pb::SensorMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let permit = self.limits.sensor_stream()?;
        let peer = request.remote_addr();
        let cert = PeerCert::of_request(&request);
        let mark = match sensor_mark(cert.as_ref()) {
            Ok(m) => m,
            Err(r) => return Err(self.refuse(r.status, r.certificate, "", peer).await),
        };
        let certificate = cert.as_ref().map(PeerCert::describe);
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.next()).await {
            Ok(Some(Ok(pb::SensorMessage {
                body: Some(pb::sensor_message::Body::Hello(h)),
            }))) => h,
            Ok(Some(Err(e))) => return Err(e),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10s")),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on a sensor stream must be a Hello",
                ))
            }
        };
        let node = hello.node_name.clone();
        if node.is_empty() || node.len() > 253 || node.chars().any(|c| c.is_control() || c == '/') {
            return Err(Status::invalid_argument(
                "Hello.node_name must be a node name (1..=253 characters, no '/' or control characters)",
            ));
        }
        if let Err(status) = check_node(&mark, &node, &self.fleet_names) {
            return Err(self.refuse(status, certificate, &node, peer).await);
        }
        if let procguard_runtime::pki::SensorMark::Fleet(name) = &mark {
            tracing::info!(
                message = "Sensor uses a fleet certificate; its node name is taken on trust.",
                node = %node,
                fleet = %name,
                certificate = certificate.as_deref().unwrap_or_default()
            );
        }
        // A node the server has no record of is a new record (and metric series): bounded.
        let known = self
            .store
            .sensor_known(&node)
            .map_err(|e| Status::internal(e.to_string()))?;
        if !known {
            if let Err(status) = self.limits.new_sensor(&node, self.store.sensors_known()) {
                return Err(self.refuse(status, certificate, &node, peer).await);
            }
        }
        let record = self
            .store
            .sensor_hello(&node, &hello.boot_id, &hello.sensor_version)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(
            message = "Sensor connected.",
            node = %node,
            version = %hello.sensor_version,
            acked = record.acked_sequence,
            certificate_serial = cert.as_ref().map(|c| c.serial.as_str()).unwrap_or_default()
        );

        // What this stream acknowledges never passes the sensor's own last sequence (when it
        // names one): a mark raised by anyone else speaking for this node (a stolen
        // certificate, a bug) must not have the real sensor delete events it still holds.
        let acked = match hello.last_sequence {
            0 => record.acked_sequence,
            last => record.acked_sequence.min(last),
        };
        if acked < record.acked_sequence {
            self.metrics.sensor_acked_beyond_last.inc();
            tracing::warn!(
                message = "The server holds an acknowledged mark beyond the sensor's last sequence; acknowledging only up to the sensor's own.",
                node = %node,
                stored_mark = record.acked_sequence,
                sensor_last_sequence = hello.last_sequence
            );
        }
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let welcome = pb::ServerMessage {
            body: Some(pb::server_message::Body::Welcome(pb::Welcome {
                acked_sequence: acked,
                server_version: env!("CARGO_PKG_VERSION").into(),
                max_message_bytes: self.limits.settings.max_message_bytes as u64,
                accepts_summaries: true,
            })),
        };
        tx.send(Ok(welcome))
            .await
            .map_err(|_| Status::cancelled("stream closed"))?;
        tx.send(self.snapshots.get(self.store.as_ref(), &self.hub))
            .await
            .map_err(|_| Status::cancelled("stream closed"))?;

        let updates = self.hub.subscribe();
        self.metrics.sensors_connected.inc();
        let health_tx = spawn_health_recorder(&self.store, &self.metrics, &node);
        let session = Session {
            node,
            store: self.store.clone(),
            hub: self.hub.clone(),
            policies: self.policies.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            placements: self.placements.clone(),
            tx,
            health_tx,
            pending: FuturesOrdered::new(),
            summary: Summary::new(DEVIATION_SUMMARY_EVERY),
            logged_losses: (0, 0),
            logged_capture_stop: false,
            node_acked: record.acked_sequence,
            stream_acked: acked,
        };
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // Held until the stream's task ends.
            let _permit = permit;
            session.run(inbound, updates, shutdown).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Health reports are recorded by a task of their own. Recording one waits for a flush, and
/// the flush leader may be one of this stream's pending batches, which only the stream's loop
/// polls: awaiting it inline would have the loop wait on itself. Returns the task's queue
/// ([`HEALTH_BUFFER`]); the task ends when the session drops it.
fn spawn_health_recorder(
    store: &SharedStorage,
    metrics: &Metrics,
    node: &str,
) -> mpsc::Sender<HealthReport> {
    let (health_tx, mut health_rx) = mpsc::channel::<HealthReport>(HEALTH_BUFFER);
    let (store, metrics, node) = (store.clone(), metrics.clone(), node.to_string());
    tokio::spawn(async move {
        while let Some(report) = health_rx.recv().await {
            match store.sensor_health(&node, report, SystemTime::now()).await {
                Ok(Some(i)) => {
                    metrics.incident_changes.inc();
                    tracing::warn!(message = "Sensor blind.", node = %node, incident = %i.id, reason = %i.severity_reason);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(message = "Recording sensor health failed.", node = %node, error = %e)
                }
            }
        }
    });
    health_tx
}

/// One sensor stream after its Hello: what every event of the stream needs, and one method per
/// event ([`Session::run`] waits for the next one). A method returns `Break` when the stream
/// ends (it has told the sensor why, if the sensor is still there).
struct Session {
    node: String,
    store: SharedStorage,
    hub: Hub,
    policies: Arc<Policies>,
    metrics: Metrics,
    limits: Limits,
    placements: Option<Placements>,
    /// To the sensor; bounded by [`OUTBOUND_BUFFER`].
    tx: mpsc::Sender<Result<pb::ServerMessage, Status>>,
    /// To the health recorder; bounded by [`HEALTH_BUFFER`].
    health_tx: mpsc::Sender<HealthReport>,
    /// Committed batches waiting for their flush, acknowledged in order; at most [`PIPELINE`].
    pending: FuturesOrdered<Durable>,
    summary: Summary<(String, String)>,
    /// The loss counters last logged: they are cumulative, so a change is news, not a report.
    logged_losses: (u64, u64),
    /// Whether this stream already logged that the sensor's capture stopped.
    logged_capture_stop: bool,
    /// The node's acknowledged mark as stored, as last seen (Hello, then each durable batch).
    node_acked: u64,
    /// The highest sequence this stream may acknowledge: its Welcome's mark, then the highest
    /// sequence committed on this stream. Acks never go past it, whatever the node's stored
    /// mark says (see the Welcome).
    stream_acked: u64,
}

impl Session {
    /// Serves the stream until the sensor leaves, an error ends it, or `shutdown`.
    async fn run(
        mut self,
        mut inbound: Streaming<pb::SensorMessage>,
        mut updates: broadcast::Receiver<Baseline>,
        shutdown: CancellationToken,
    ) {
        let mut summary_tick = tokio::time::interval(DEVIATION_SUMMARY_EVERY);
        summary_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let flow = tokio::select! {
                _ = shutdown.cancelled() => self.on_shutdown().await,
                _ = summary_tick.tick() => self.on_summary_tick(),
                update = updates.recv() => self.on_update(update).await,
                Some((durable, out)) = self.pending.next(), if !self.pending.is_empty() => {
                    self.on_durable(durable, out).await
                }
                msg = inbound.next(), if self.pending.len() < PIPELINE => self.on_message(msg).await,
            };
            if flow.is_break() {
                break;
            }
        }
        if let Some(line) = self.summary.take() {
            self.log_summary(line);
        }
        self.metrics.sensors_connected.dec();
    }

    /// Sends `msg` to the sensor; `Break` if it is gone.
    async fn send(&mut self, msg: Result<pb::ServerMessage, Status>) -> ControlFlow<()> {
        match self.tx.send(msg).await {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }

    /// Sends a last error to the sensor and ends the stream.
    async fn end(&mut self, status: Status) -> ControlFlow<()> {
        let _ = self.tx.send(Err(status)).await;
        ControlFlow::Break(())
    }

    async fn on_shutdown(&mut self) -> ControlFlow<()> {
        self.end(Status::unavailable("server shutting down; reconnect"))
            .await
    }

    fn on_summary_tick(&mut self) -> ControlFlow<()> {
        if let Some(line) = self.summary.due(Instant::now()) {
            self.log_summary(line);
        }
        ControlFlow::Continue(())
    }

    fn log_summary(&self, (count, (workload, exe)): (u64, (String, String))) {
        tracing::info!(message = "Deviations stored.", node = %self.node, count, last_workload = %workload, last_exe = %exe);
    }

    /// A baseline changed: pushed to the sensor (a reset one leaves the sensor's matching
    /// set); a stream that lagged behind the hub gets a full snapshot instead.
    async fn on_update(
        &mut self,
        update: Result<Baseline, broadcast::error::RecvError>,
    ) -> ControlFlow<()> {
        let msg = match update {
            Ok(b) => update_to_pb(&b),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(message = "Sensor stream lagged behind baseline updates; sending a snapshot.", node = %self.node, skipped = n);
                match snapshot(self.store.as_ref()) {
                    Ok(m) => m,
                    Err(e) => return self.end(e).await,
                }
            }
            Err(broadcast::error::RecvError::Closed) => return ControlFlow::Break(()),
        };
        self.send(Ok(msg)).await
    }

    /// A committed batch is durable (or its flush failed): counted, logged, its changed
    /// baselines pushed, and acknowledged.
    async fn on_durable(
        &mut self,
        durable: crate::store::Result<()>,
        out: IngestOutcome,
    ) -> ControlFlow<()> {
        if let Err(e) = durable {
            tracing::error!(message = "Ingest flush failed; the sensor will replay.", node = %self.node, error = %e);
            return self
                .end(Status::unavailable(format!("ingest failed: {e}; retry")))
                .await;
        }
        let metrics = &self.metrics;
        let now = SystemTime::now();
        for d in &out.deviations {
            // Deviations without the sensor's time (an old sensor) are not observed.
            if let Some(observed_at) = d.reported.observed_at {
                metrics.timings.deviation_stored(observed_at, now);
            }
        }
        metrics.events_ingested.inc_by(out.applied as u64);
        metrics.executions_ingested.inc_by(out.executions);
        metrics.events_duplicate.inc_by(out.duplicates as u64);
        metrics.deviations.inc_by(out.deviations.len() as u64);
        metrics.events_unattributed.inc_by(out.unattributed as u64);
        metrics.events_partial.inc_by(out.partial as u64);
        metrics.execs_unread.inc_by(out.unread as u64);
        metrics.incident_changes.inc_by(out.incidents.len() as u64);
        if out.refused > 0 {
            // Executables a full baseline refused to learn (recorded as deviations).
            self.limits
                .violated_by("baseline_elements", out.refused as u64);
        }
        for b in out.changed.iter().filter(|b| {
            b.learning
                .element_limit
                .as_ref()
                .is_some_and(|l| l.reached_at == b.updated_at)
        }) {
            tracing::warn!(message = "Baseline reached its element limit; learning ended, it waits for review.", workload = %b.workload, limit = self.limits.settings.max_baseline_elements);
        }
        for d in &out.deviations {
            tracing::debug!(message = "Deviation.", workload = %d.process.workload, exe = %d.process.exe_path, node = %self.node, pid = d.process.pid);
        }
        if let Some(d) = out.deviations.last() {
            let example = (d.process.workload.to_string(), d.process.exe_path.clone());
            if let Some(line) =
                self.summary
                    .add(out.deviations.len() as u64, example, Instant::now())
            {
                self.log_summary(line);
            }
        }
        for b in out.changed {
            self.hub.publish(b);
        }
        let ack = pb::ServerMessage {
            body: Some(pb::server_message::Body::Ack(pb::Ack {
                sequence: out.acked_sequence,
            })),
        };
        self.send(Ok(ack)).await
    }

    /// The next message from the sensor, or the end of its stream.
    async fn on_message(
        &mut self,
        msg: Option<Result<pb::SensorMessage, Status>>,
    ) -> ControlFlow<()> {
        let msg = match msg {
            None => return ControlFlow::Break(()),
            Some(Err(e)) => return self.on_stream_error(e).await,
            Some(Ok(m)) => m,
        };
        match msg.body {
            Some(pb::sensor_message::Body::Batch(batch)) => self.on_batch(&batch).await,
            Some(pb::sensor_message::Body::Health(h)) => self.on_health(&h),
            Some(pb::sensor_message::Body::BaselineAck(_)) => ControlFlow::Continue(()),
            Some(pb::sensor_message::Body::Hello(_)) | None => {
                self.end(Status::invalid_argument(
                    "Hello may only be the first message; send batches, health or baseline acks",
                ))
                .await
            }
        }
    }

    async fn on_stream_error(&mut self, e: Status) -> ControlFlow<()> {
        if e.code() == tonic::Code::OutOfRange || e.code() == tonic::Code::ResourceExhausted {
            // tonic refuses a message over --max-message-bytes itself.
            self.limits.violated("message_bytes");
            self.metrics.batches_rejected.inc();
            tracing::warn!(message = "Sensor sent a message over the size limit.", node = %self.node, error = %e);
            return self.end(self.limits.message_status(&e)).await;
        } else if e.code() == tonic::Code::Internal {
            // Undecodable bytes: malformed protobuf.
            self.metrics.batches_rejected.inc();
            tracing::warn!(message = "Sensor sent a malformed message.", node = %self.node, error = %e);
        } else {
            tracing::info!(message = "Sensor stream ended.", node = %self.node, error = %e);
        }
        self.end(e).await
    }

    /// A batch: converted at this edge and committed; acknowledged in order once durable
    /// ([`Session::on_durable`]), while the next batch may commit meanwhile.
    async fn on_batch(&mut self, batch: &pb::EventBatch) -> ControlFlow<()> {
        let mark = self.node_acked.max(clock_us(SystemTime::now()));
        let mut events = match convert_batch(batch, &self.node, &self.limits, mark) {
            Ok(ev) => ev,
            Err(status) => {
                self.metrics.batches_rejected.inc();
                tracing::warn!(message = "Rejected a sensor batch.", node = %self.node, error = %status.message());
                return self.end(status).await;
            }
        };
        if let Some(placements) = &self.placements {
            let screened = placements.screen(&self.node, &mut events).await;
            self.on_screened(screened);
        }
        let started = Instant::now();
        match self
            .store
            .ingest_commit(&self.node, &events, &self.policies, SystemTime::now())
            .await
        {
            Ok((mut out, commit)) => {
                self.node_acked = self.node_acked.max(out.acked_sequence);
                let high = events.iter().map(|e| e.sequence).max().unwrap_or(0);
                self.stream_acked = self.stream_acked.max(high);
                out.acked_sequence = out.acked_sequence.min(self.stream_acked);
                let (store, timings) = (self.store.clone(), self.metrics.timings.clone());
                self.pending.push_back(Box::pin(async move {
                    let durable = store.wait_durable(commit).await;
                    if durable.is_ok() {
                        timings
                            .ingest_commit
                            .observe(started.elapsed().as_secs_f64());
                    }
                    (durable, out)
                }));
                ControlFlow::Continue(())
            }
            Err(e) => {
                tracing::error!(message = "Ingest failed; the sensor will replay.", node = %self.node, error = %e);
                self.end(Status::unavailable(format!("ingest failed: {e}; retry")))
                    .await
            }
        }
    }

    /// A batch's placement checks: counted; refused reports logged and audited (one record
    /// per batch, naming the first pod and reason, so that a hostile node's flood costs one
    /// record per batch it sends, never one per event).
    fn on_screened(&self, s: Screening) {
        let m = &self.metrics.placement;
        m.verified.inc_by(s.verified as u64);
        m.unverified.inc_by(s.unverified as u64);
        m.refused.inc_by(s.refused.len() as u64);
        let Some((pod, why)) = s.refused.first() else {
            return;
        };
        tracing::warn!(message = "Sensor reports refused: they contradict the Kubernetes API.", node = %self.node, refused = s.refused.len(), first_pod = %pod, reason = %why);
        let entry = AuditEntry {
            id: 0,
            at: SystemTime::now(),
            actor: format!("sensor:{}", self.node),
            role: "sensor".into(),
            action: "SensorReport".into(),
            target: format!("pod/{pod}"),
            result: AuditOutcome::Denied,
            detail: format!("{} event(s) refused; first: {why}", s.refused.len()),
            peer: String::new(),
        };
        // Written by a task of its own: the audit waits for a flush that this stream's own
        // pending batches may lead (see `spawn_health_recorder`).
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.audit(entry).await {
                tracing::error!(message = "Auditing refused sensor reports failed.", error = %e);
            }
        });
    }

    /// A health report: its losses logged when they change, and handed to the recorder.
    fn on_health(&mut self, h: &pb::SensorHealth) -> ControlFlow<()> {
        self.metrics
            .sensor_reported_drops
            .get_or_create(&crate::metrics::NodeLabel {
                node: self.node.clone(),
            })
            .set(h.events_dropped as i64);
        self.metrics
            .state
            .sensor_reports
            .report(&self.node, SystemTime::now());
        let losses = (h.events_dropped, h.kernel_losses);
        if losses != self.logged_losses && losses != (0, 0) {
            tracing::warn!(message = "Sensor reports losses.", node = %self.node, seen = h.events_seen, dropped = h.events_dropped, kernel_losses = h.kernel_losses, spooled = h.spooled);
            self.logged_losses = losses;
        } else {
            tracing::debug!(message = "Sensor health.", node = %self.node, seen = h.events_seen, spooled = h.spooled);
        }
        let capture_stopped = (!h.capture_stopped.is_empty()).then(|| {
            let why: String = h
                .capture_stopped
                .chars()
                .take(CAPTURE_STOPPED_MAX)
                .collect();
            why
        });
        if capture_stopped.is_some() && !self.logged_capture_stop {
            tracing::error!(message = "Sensor capture stopped.", node = %self.node, reason = %h.capture_stopped);
            self.logged_capture_stop = true;
        }
        let report = HealthReport {
            dropped: h.events_dropped,
            partial: h.events_partial,
            kernel_losses: h.kernel_losses,
            capture_stopped,
        };
        if self.health_tx.try_send(report).is_err() {
            // The counters are cumulative: the next report carries what this one had.
            tracing::debug!(message = "Health report skipped; the previous one is still being recorded.", node = %self.node);
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_logs_the_first_deviation_at_once_then_at_most_once_per_period() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = Summary::new(Duration::from_secs(10));
        assert_eq!(s.due(at(0)), None, "nothing counted, nothing to say");
        assert_eq!(
            s.add(3, "a", at(0)),
            Some((3, "a")),
            "first after quiet: at once"
        );
        assert_eq!(s.add(5, "b", at(1)), None);
        assert_eq!(
            s.add(0, "x", at(2)),
            None,
            "an empty batch is not an example"
        );
        assert_eq!(s.add(2, "c", at(9)), None);
        assert_eq!(s.due(at(9)), None, "still within the period");
        // The periodic check, with no new deviation, reports what was held back.
        assert_eq!(s.due(at(10)), Some((7, "c")));
        assert_eq!(s.due(at(30)), None, "and then nothing until more arrive");
        assert_eq!(
            s.add(1, "d", at(31)),
            Some((1, "d")),
            "quiet for 21 s: at once"
        );
        assert_eq!(s.add(4, "e", at(32)), None);
        assert_eq!(
            s.take(),
            Some((4, "e")),
            "the stream's end reports the rest"
        );
        assert_eq!(s.take(), None);
    }
}
