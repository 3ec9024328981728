//! The uplink: stamps events with sequence numbers and IDs, matches them against enforced
//! baselines, and streams them to the server, keeping every unacknowledged event in the
//! durable [`Spool`] until the server says it is durable.
//!
//! On reconnect the server's `Welcome` names the last durable sequence; everything after it
//! is sent again from the spool (the server skips IDs it already has). Spooled events are
//! sent as the spool holds them, already encoded (`procguard_proto::encoded_client`): they
//! are never decoded to be encoded again, except an event too large for a batch alone, which
//! is shrunk first.
//!
//! **Repeats travel as summaries.** Once a server's `Welcome` says it accepts them, an
//! execution judged here goes through [`Summaries`]: a deviation new in the interval and an
//! element new to learning are stamped and spooled at once, as before; repeats, and what the
//! baselines held here allow, are counted and spooled as one event per key at the interval's
//! end (`SensorEvent.executions`), and at a graceful stop.
//!
//! **Acknowledgements are checked.** An `Ack` or `Welcome` beyond the last sequence this
//! sensor ever assigned cannot be true (it would acknowledge events that do not exist yet): it
//! is a protocol error, counted in `procguard_sensor_server_protocol_errors_total` and
//! logged; nothing is deleted from the spool on its word, and the stream is opened again
//! after the usual backoff.
//!
//! **Batches fit the server.** A batch is at most [`BATCH`] events and at most the byte
//! budget: `--max-batch-bytes`, lowered to 1 KiB under the limit the server announces in its
//! `Welcome`. A batch the server still refuses as too large (`OUT_OF_RANGE`: an older server
//! that does not announce its limit, or a proxy with a lower one) halves the budget for the
//! rest of the sensor's life; an event larger than the budget alone is shrunk (its pod labels
//! left out, then argv cut from the end, `argv_truncated`), counted in
//! `procguard_sensor_events_shrunk_total`, and never retried as it was. While the server is
//! unreachable, matching goes on against the last baselines received, which are saved in the
//! spool directory, so deviations are still detected after a sensor restart with the server
//! down.

use crate::config::Uplink as UplinkConfig;
use crate::metrics::Metrics;
use crate::spool::{Class, Spool};
use crate::summary::{Judged, Outgoing, Summaries};
use procguard_core::baseline::{Matcher, Verdict};
use procguard_core::ProcessEvent;
use procguard_proto::convert::{baseline_from_pb, timestamp};
use procguard_proto::v1 as pb;
use procguard_proto::Encoded;
use procguard_runtime::repeated::Repeated;
use prost::Message;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Write;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// Events per batch.
const BATCH: usize = 500;
/// Smallest byte budget a batch is ever given (`--max-batch-bytes` may not be lower, and
/// halving after refusals stops here): room for one event with its argv cut.
pub const MIN_BATCH_BYTES: usize = 16 * 1024;
/// How far under the server's announced message limit a batch stays.
const SERVER_MARGIN: usize = 1024;
/// How long an event may wait for its batch to fill.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Unacknowledged events in flight before sending pauses for acks; the rest wait in the spool.
const IN_FLIGHT: usize = 8 * BATCH;
/// The last baseline snapshot, under the spool directory.
const BASELINES_FILE: &str = "baselines.pb";
/// The last health report taken while disconnected, under the spool directory.
const HEALTH_FILE: &str = "health.pb";
/// Whether the last server's Welcome accepted summaries ("1" or "0"), under the spool
/// directory: a sensor restarted while its server is down summarises as that server asked.
const SUMMARIES_FILE: &str = "summaries-accepted";
/// Outbound stream messages buffered towards the server.
const OUTBOUND: usize = 16;
/// How long shutdown waits for the server to acknowledge what is left: well inside
/// Kubernetes' default 30 s termination grace, and long enough for a server that has just
/// restarted (3 s was not, on a loaded machine).
const DRAIN: Duration = Duration::from_secs(10);
/// Health report period.
const HEALTH_EVERY: Duration = Duration::from_secs(10);
/// The first wait before reconnecting; it doubles after each failed attempt, up to 10 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// A session that lasted this long resets the backoff: reconnecting after it is not a retry.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// Events taken from capture's queue per wake-up before their JSON lines are written out.
const TAKE_AT_ONCE: usize = 256;

/// The JSON-lines output: one object per line, written once per batch of events.
struct JsonLines {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    /// Writes are failing: logged once per streak, not once per batch.
    failing: bool,
}

impl JsonLines {
    fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(64 * 1024),
            failing: false,
        }
    }

    fn push(&mut self, ev: &ProcessEvent) {
        let start = self.buf.len();
        if serde_json::to_writer(&mut self.buf, ev).is_ok() {
            self.buf.push(b'\n');
        } else {
            self.buf.truncate(start);
        }
    }

    /// Writes the buffered lines. A failed write (a closed pipe, a full disk) is logged and
    /// the lines are dropped: this output is for debugging and never holds capture back.
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush())
        {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!(message = "JSON lines are written again.");
            }
            Ok(()) => {}
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::warn!(message = "Cannot write JSON lines; dropping them until writes succeed.", lines = bytecount(&self.buf), %error);
            }
            Err(_) => {}
        }
        self.buf.clear();
    }
}

fn bytecount(buf: &[u8]) -> usize {
    buf.iter().filter(|&&b| b == b'\n').count()
}

/// What the uplink task owns.
pub struct Uplink {
    config: Option<UplinkConfig>,
    node: String,
    cluster: String,
    boot_id: String,
    spool: Option<Spool>,
    /// Sent and not yet acknowledged: (last sequence of a batch, events in it, its bytes).
    in_flight: VecDeque<(u64, usize, usize)>,
    /// The message limit the server announced in its last Welcome (0: it did not say).
    server_limit: usize,
    /// The byte budget learned from batches the server refused as too large.
    learned_cap: usize,
    /// Sequences of events given up in this run (too large even shrunk), counted once.
    given_up: HashSet<u64>,
    matcher: Matcher,
    /// The enforced baselines as the server sent them, saved for a restart.
    baselines: BTreeMap<String, pb::Baseline>,
    baseline_revision: u64,
    metrics: Metrics,
    jsonl: Option<JsonLines>,
    /// Optional capabilities enabled by flags (pod metadata, fanotify), announced in `Hello`.
    extra_capabilities: Vec<pb::SensorCapability>,
    /// Repeated executions held for the interval's summary events.
    summaries: Summaries,
    /// Something was spooled or acknowledged since the last flush: the next one is due
    /// [`FLUSH_EVERY`] after it (otherwise no flush is due, and the uplink sleeps).
    flush_soon: bool,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("node", &self.node)
            .field("spool", &self.spool)
            .finish()
    }
}

impl Uplink {
    /// Creates the uplink. With a server, `spool` holds every event until it is acknowledged
    /// and the baselines last pushed, which are loaded here so that local matching works at
    /// once, even when the server is down.
    pub fn new(
        config: Option<UplinkConfig>,
        node: &str,
        cluster: &str,
        spool: Option<Spool>,
        metrics: Metrics,
        jsonl: Option<Box<dyn Write + Send>>,
    ) -> Self {
        let mut up = Self {
            config,
            node: node.to_string(),
            cluster: cluster.to_string(),
            boot_id: uuid::Uuid::new_v4().to_string(),
            spool,
            in_flight: VecDeque::new(),
            server_limit: 0,
            learned_cap: usize::MAX,
            given_up: HashSet::new(),
            matcher: Matcher::default(),
            baselines: BTreeMap::new(),
            baseline_revision: 0,
            metrics,
            jsonl: jsonl.map(JsonLines::new),
            extra_capabilities: Vec::new(),
            summaries: Summaries::new(Duration::ZERO, 1),
            flush_soon: false,
        };
        let saved = up.spool.as_ref().and_then(|s| s.load_file(BASELINES_FILE));
        if let Some(bytes) = saved {
            match pb::BaselineSnapshot::decode(bytes.as_slice()) {
                Ok(snap) => {
                    up.apply_snapshot(snap, false);
                    tracing::info!(
                        message = "Loaded the saved baselines; local matching is on.",
                        count = up.matcher.len(),
                        revision = up.baseline_revision
                    );
                }
                Err(error) => {
                    tracing::warn!(message = "Saved baselines are corrupt; waiting for the server.", %error)
                }
            }
        }
        up
    }

    fn apply_snapshot(&mut self, snap: pb::BaselineSnapshot, save: bool) {
        self.baselines.clear();
        for b in snap.baselines {
            match baseline_from_pb(&b) {
                Ok(d) => {
                    self.baselines.insert(d.workload.to_string(), b);
                }
                Err(e) => {
                    tracing::warn!(message = "Ignored a malformed baseline from the server.", error = %e)
                }
            }
        }
        self.baseline_revision = snap.revision;
        self.rebuild_matcher(save);
    }

    fn rebuild_matcher(&mut self, save: bool) {
        let list: Vec<_> = self
            .baselines
            .values()
            .filter_map(|b| baseline_from_pb(b).ok())
            .collect();
        self.matcher = Matcher::new(list.iter());
        self.metrics.baselines.set(self.matcher.len() as i64);
        if save {
            if let Some(spool) = &self.spool {
                let snap = pb::BaselineSnapshot {
                    revision: self.baseline_revision,
                    baselines: self.baselines.values().cloned().collect(),
                };
                spool.save_file(BASELINES_FILE, &snap.encode_to_vec());
            }
        }
    }

    /// Summarises repeated executions over `interval` (zero: never), holding at most
    /// `max_entries` keys; only once a server's Welcome says it accepts summaries.
    pub fn with_summaries(mut self, interval: Duration, max_entries: usize) -> Self {
        self.summaries = Summaries::new(interval, max_entries);
        let saved = self
            .spool
            .as_ref()
            .and_then(|s| s.load_file(SUMMARIES_FILE));
        self.summaries
            .server_accepts(saved.as_deref() == Some(b"1".as_slice()));
        self
    }

    /// Announces optional capabilities in `Hello`.
    pub fn with_capabilities(mut self, caps: Vec<pb::SensorCapability>) -> Self {
        self.extra_capabilities = caps;
        self
    }

    /// Takes `first` and whatever else capture has queued (at most [`TAKE_AT_ONCE`]), then
    /// writes their JSON lines out in one go: one write per wake-up, not two per event.
    fn take(&mut self, first: ProcessEvent, rx: &mut mpsc::Receiver<ProcessEvent>) {
        self.accept(first);
        for _ in 1..TAKE_AT_ONCE {
            match rx.try_recv() {
                Ok(ev) => self.accept(ev),
                Err(_) => break,
            }
        }
        if let Some(out) = self.jsonl.as_mut() {
            out.flush();
        }
        self.send_summaries(false);
    }

    /// Appends the summary table's events when its interval ended or it is full (or now,
    /// with `force`: at shutdown, so that a graceful stop loses no held execution).
    fn send_summaries(&mut self, force: bool) {
        let now = std::time::Instant::now();
        if !(self.summaries.due(now) || force && self.summaries.entries() > 0) {
            return;
        }
        if self.summaries.full() {
            self.metrics.summary_tables_full.inc();
        }
        for out in self.summaries.drain(now) {
            self.append(out);
        }
        self.metrics.summary_held.set(0);
    }

    fn accept(&mut self, ev: ProcessEvent) {
        if let Some(out) = self.jsonl.as_mut() {
            out.push(&ev);
        }
        // The one rule `Baseline::observe` applies on the server: probes are allowed, a
        // fileless executable is never the allowed file at its path, and an allowed element's
        // content must be approved. Capture sends an event only once its hash is known (or
        // marked missing), so the content is decided here, not later.
        let now = SystemTime::now();
        let verdict = self.matcher.check(&ev, now);
        let judged = match verdict {
            Verdict::Deviation => {
                // Every execution counted; logged when it is sent (its repeats in the
                // interval once, with their number).
                self.metrics.deviations.inc();
                Judged::Deviation
            }
            Verdict::Learning | Verdict::Partial => Judged::Learning,
            Verdict::Allowed => Judged::Allowed,
        };
        if self.spool.is_none() {
            // JSON lines only: nothing is sent, every deviation is logged.
            if judged == Judged::Deviation {
                tracing::warn!(message = "Deviation.", workload = %ev.workload, exe = %ev.exe_path, sha256 = ev.exe_sha256.as_deref().unwrap_or(""), pid = ev.pid);
            }
            return;
        }
        match self.summaries.offer(ev, judged, now) {
            Some(out) => self.append(out),
            None => {
                let held = i64::try_from(self.summaries.held()).unwrap_or(i64::MAX);
                self.metrics.summary_held.set(held);
            }
        }
    }

    /// Stamps one event (a single execution, or a summary of several) and appends it to the
    /// spool.
    fn append(&mut self, out: Outgoing) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        self.flush_soon = true;
        let kind = if out.deviation {
            pb::EventKind::Deviation
        } else {
            pb::EventKind::Observation
        };
        let summary = out.executions > 1;
        let sequence = spool.next_sequence();
        let event = pb::SensorEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            sequence,
            kind: kind as i32,
            observed_at: Some(timestamp(out.first_at)),
            process: Some((&out.event).into()),
            baseline_revision: if out.deviation {
                self.baseline_revision
            } else {
                0
            },
            executions: if summary { out.executions } else { 0 },
            last_observed_at: summary.then(|| timestamp(out.last_at)),
            // The content verdict is the server's to decide and send (incident samples, SIEM
            // records); the server ignores a sensor's.
            ..Default::default()
        };
        if out.deviation {
            let ev = &out.event;
            if summary {
                tracing::warn!(message = "Deviation repeated.", workload = %ev.workload, exe = %ev.exe_path, sha256 = ev.exe_sha256.as_deref().unwrap_or(""), executions = out.executions);
            } else {
                tracing::warn!(message = "Deviation.", workload = %ev.workload, exe = %ev.exe_path, sha256 = ev.exe_sha256.as_deref().unwrap_or(""), pid = ev.pid);
            }
        }
        if summary {
            self.metrics.summaries_sent.inc();
            self.metrics.executions_summarised.inc_by(out.executions);
        }
        let class = if out.deviation {
            Class::Deviation
        } else {
            Class::Observation
        };
        // A drop inside is counted there.
        spool.append(class, sequence, &event.encode_to_vec());
    }

    /// Refuses an acknowledgement of `seq` when this sensor never assigned it: the server (or
    /// whoever speaks for it) claims to hold events that do not exist, and believing it would
    /// delete the spool. Counted and logged; the caller ends the stream and keeps the spool.
    fn check_ack(&self, what: &str, seq: u64) -> Result<(), String> {
        let last = self.spool.as_ref().map(|s| s.last_sequence()).unwrap_or(0);
        if seq <= last {
            return Ok(());
        }
        self.metrics.server_protocol_errors.inc();
        tracing::error!(
            message = "The server acknowledged events this sensor never sent; refusing it, keeping the spool, and reconnecting later.",
            what,
            acknowledged = seq,
            last_sequence = last,
            spooled = self.spool.as_ref().map(|s| s.records()).unwrap_or(0)
        );
        Err(format!(
            "protocol error: {what} acknowledges sequence {seq}, beyond this sensor's last sequence {last}; the spool is kept"
        ))
    }

    fn ack(&mut self, seq: u64) {
        while self
            .in_flight
            .front()
            .is_some_and(|(last, _, _)| *last <= seq)
        {
            if let Some((_, n, _)) = self.in_flight.pop_front() {
                self.metrics.events_acked.inc_by(n as u64);
                // Room in flight: what waits in the spool goes at the next flush.
                self.flush_soon = true;
            }
        }
        if let Some(spool) = self.spool.as_mut() {
            spool.ack(seq);
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.iter().map(|(_, n, _)| n).sum()
    }

    /// When the session's next flush is due, given the last one at `last`: [`FLUSH_EVERY`]
    /// after it while anything was spooled or acknowledged since, or while events await
    /// their ack; and when the summary table is due. `None`: nothing to do until an event, a
    /// message or a tick wakes the session. (An interval ticking every [`FLUSH_EVERY`] cost the
    /// uplink 20 wake-ups a second for nothing while capture's events were all held for
    /// summaries: docs/BENCHMARKS.md.)
    fn next_flush(&self, last: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let spool_work = self.spool.is_some() && (self.flush_soon || !self.in_flight.is_empty());
        let soon = spool_work.then(|| last + FLUSH_EVERY);
        let summaries = self.summaries.due_at().map(tokio::time::Instant::from_std);
        match (soon, summaries) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The byte budget of the next batch.
    fn batch_budget(&self, config: &UplinkConfig) -> usize {
        let mut cap = config.max_batch_bytes.min(self.learned_cap);
        if self.server_limit > 0 {
            cap = cap.min(self.server_limit.saturating_sub(SERVER_MARGIN));
        }
        cap.max(1)
    }

    /// The server refused a batch as too large: the next ones get half the largest that was
    /// in flight (never under [`MIN_BATCH_BYTES`]).
    fn split_after_refusal(&mut self, why: &str) {
        let largest = self.in_flight.iter().map(|(_, _, b)| *b).max().unwrap_or(0);
        if largest == 0 {
            return;
        }
        self.learned_cap = (largest / 2).max(MIN_BATCH_BYTES).min(self.learned_cap);
        self.metrics.batches_split.inc();
        tracing::warn!(message = "The server refused a batch as too large; sending smaller batches.", largest_batch_bytes = largest, budget_bytes = self.learned_cap, error = %why);
    }

    fn apply(&mut self, msg: pb::ServerMessage) -> Result<(), String> {
        match msg.body {
            Some(pb::server_message::Body::Ack(a)) => {
                self.check_ack("an Ack", a.sequence)?;
                self.ack(a.sequence)
            }
            Some(pb::server_message::Body::Welcome(w)) => {
                self.check_ack("the Welcome", w.acked_sequence)?;
                self.ack(w.acked_sequence)
            }
            Some(pb::server_message::Body::Snapshot(s)) => {
                let revision = s.revision;
                self.apply_snapshot(s, true);
                tracing::info!(
                    message = "Baselines received.",
                    revision,
                    count = self.matcher.len()
                );
            }
            Some(pb::server_message::Body::Update(u)) => {
                if let Some(b) = u.baseline {
                    let (key, state) = match baseline_from_pb(&b) {
                        Ok(d) => (d.workload.to_string(), d.state),
                        Err(e) => {
                            tracing::warn!(message = "Ignored a malformed baseline update from the server.", error = %e);
                            return Ok(());
                        }
                    };
                    if u.removed {
                        self.baselines.remove(&key);
                    } else {
                        self.baselines.insert(key.clone(), b);
                    }
                    self.baseline_revision = self.baseline_revision.max(u.revision);
                    self.rebuild_matcher(true);
                    // A learning baseline changes with every new element and is not matched
                    // here: its updates are routine. One this sensor enforces is news.
                    if u.removed || state == procguard_core::BaselineState::Learning {
                        tracing::debug!(message = "Baseline updated.", workload = %key, removed = u.removed, revision = u.revision);
                    } else {
                        tracing::info!(message = "Baseline updated.", workload = %key, state = %state.as_str(), revision = u.revision);
                    }
                }
            }
            None => {}
        }
        Ok(())
    }

    fn health(&self) -> pb::SensorMessage {
        let m = &self.metrics;
        pb::SensorMessage {
            body: Some(pb::sensor_message::Body::Health(pb::SensorHealth {
                events_seen: m.events_seen.get(),
                // Execs the sensor saw but could make no event of (queue or spool full, or the
                // process gone before anything of it could be read).
                events_dropped: m.queue_drops.get() + m.buffer_drops.get() + m.exec_lost.get(),
                events_partial: m.events_partial.get(),
                // Events the kernel never delivered: overruns and full ring buffers, and the
                // proc connector's sequence numbers that never arrived (one per event).
                kernel_losses: m.kernel_losses.get() + m.sequence_gaps.get(),
                resyncs: m.resyncs.get(),
                lag_ms: 0,
                spooled: self.spool.as_ref().map(|s| s.records()).unwrap_or(0),
                at: Some(timestamp(SystemTime::now())),
                capture_stopped: m.capture_stopped().unwrap_or_default(),
            })),
        }
    }

    /// Runs until shutdown, reconnecting with backoff.
    pub async fn run(mut self, mut rx: mpsc::Receiver<ProcessEvent>, shutdown: CancellationToken) {
        let Some(config) = self.config.clone() else {
            // JSON-lines only: no server.
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ev = rx.recv() => match ev { Some(ev) => self.take(ev, &mut rx), None => return },
                }
            }
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = tokio::time::Instant::now();
            match self.session(&config, &mut rx, &shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    // A session that ran a while was healthy: what ended it (a certificate
                    // rotation, a server restart) is news, not a run of failures.
                    if started.elapsed() >= HEALTHY_SESSION {
                        backoff = FIRST_BACKOFF;
                    }
                    self.metrics.connected.set(0);
                    // In this order, so that the failures never read fewer than the timeouts.
                    self.metrics.sessions_failed.inc();
                    if e.timed_out {
                        self.metrics.welcome_timeouts.inc();
                    }
                    if e.code == Some(tonic::Code::OutOfRange) {
                        self.split_after_refusal(&e.why);
                    }
                    // Once per episode and then once a minute: the server may stay down for
                    // hours (`procguard_sensor_connected` shows it all along). A reason that
                    // changes within the minute (down, then refusing the certificate) is
                    // logged too.
                    static DOWN: Repeated = Repeated::new(Duration::from_secs(60));
                    if let Some(held_back) = DOWN.admit_reason(e.reason()) {
                        tracing::warn!(message = "Server stream down; retrying.", error = %e.why, retry_in_ms = backoff.as_millis() as u64, spooled = self.spool.as_ref().map(|s| s.records()).unwrap_or(0), held_back);
                    }
                }
            }
            self.in_flight.clear();
            let until = tokio::time::sleep(backoff);
            tokio::pin!(until);
            let mut sync = tokio::time::interval(FLUSH_EVERY);
            let mut health = tokio::time::interval(HEALTH_EVERY);
            let stop = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break true,
                    _ = &mut until => break false,
                    // Keep draining capture while disconnected so the kernel queue never backs up.
                    ev = rx.recv() => match ev { Some(ev) => self.take(ev, &mut rx), None => break true },
                    _ = sync.tick() => {
                        self.send_summaries(false);
                        if let Some(s) = self.spool.as_mut() { s.sync() }
                    },
                    // The latest report replaces the previous one: its counters are cumulative.
                    _ = health.tick() => if let Some(s) = &self.spool {
                        s.save_file(HEALTH_FILE, &self.health().encode_to_vec());
                    },
                }
            };
            if stop {
                break;
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        // Events capture queued before it stopped are spooled, not lost (the queue is
        // bounded, and capture stops on the same token, so this ends quickly).
        let until = tokio::time::Instant::now() + DRAIN;
        while let Ok(Some(ev)) = tokio::time::timeout_at(until, rx.recv()).await {
            self.take(ev, &mut rx);
        }
        self.send_summaries(true);
        if let Some(s) = self.spool.as_mut() {
            s.close();
        }
    }

    async fn session(
        &mut self,
        config: &UplinkConfig,
        rx: &mut mpsc::Receiver<ProcessEvent>,
        shutdown: &CancellationToken,
    ) -> Result<(), Down> {
        // The certificate in use now; a later change ends this session to reconnect with it.
        let mut tls = config.tls.clone();
        let endpoint = tonic::transport::Endpoint::from_shared(config.url.clone())
            .map_err(|e| e.to_string())?
            .tls_config((*tls.take_current()).clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20));
        // Connecting, the stream's answer and its Welcome share one deadline: a server that
        // accepted the connection and then says nothing (overloaded, or a half-open peer) is
        // left and dialled again, rather than awaited until TCP gives up. Capture's events go
        // to the spool meanwhile.
        let deadline = (
            tokio::time::Instant::now() + config.welcome_timeout,
            config.welcome_timeout,
        );
        let Some(channel) = self
            .while_draining(
                endpoint.connect(),
                rx,
                shutdown,
                deadline,
                "complete the connection",
            )
            .await?
        else {
            return Ok(());
        };
        let channel = channel.map_err(|e| format!("connect: {e:?}"))?;
        let mut client =
            procguard_proto::encoded_client::sensor_service_client::SensorServiceClient::new(
                channel,
            )
            .max_decoding_message_size(64 * 1024 * 1024);
        let (tx, out_rx) = mpsc::channel::<Encoded>(OUTBOUND);
        let hello = pb::SensorMessage {
            body: Some(pb::sensor_message::Body::Hello(pb::Hello {
                node_name: self.node.clone(),
                sensor_version: env!("CARGO_PKG_VERSION").into(),
                capabilities: [
                    pb::SensorCapability::LocalEnforcement,
                    pb::SensorCapability::Spool,
                ]
                .iter()
                .chain(&self.extra_capabilities)
                .map(|c| *c as i32)
                .collect(),
                boot_id: self.boot_id.clone(),
                last_sequence: self.spool.as_ref().map(|s| s.last_sequence()).unwrap_or(0),
                baseline_revision: self.baseline_revision,
                cluster: self.cluster.clone(),
            })),
        };
        tx.send(Encoded::of(&hello)).await.map_err(Down::other)?;
        let call = client.session(tokio_stream::wrappers::ReceiverStream::new(out_rx));
        let Some(answer) = self
            .while_draining(call, rx, shutdown, deadline, "answer the session")
            .await?
        else {
            return Ok(());
        };
        let mut inbound = answer.map_err(Down::status)?.into_inner();
        // Armed only while a flush is due (`next_flush`), and reset only when that changes.
        let flush = tokio::time::sleep(FLUSH_EVERY);
        tokio::pin!(flush);
        let mut armed = None;
        let mut last_flush = tokio::time::Instant::now();
        let mut health = tokio::time::interval(HEALTH_EVERY);
        let mut welcomed = false;
        loop {
            let due = self.next_flush(last_flush);
            if due != armed {
                if let Some(at) = due {
                    flush.as_mut().reset(at);
                }
                armed = due;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if welcomed {
                        self.drain_on_shutdown(config, &tx, &mut inbound, rx).await;
                    }
                    // Whatever is still unacknowledged stays in the spool for the next run.
                    return Ok(());
                }
                msg = inbound.next() => match msg {
                    Some(Ok(m)) => {
                        if let Some(pb::server_message::Body::Welcome(w)) = &m.body {
                            // Checked before anything is settled on its word.
                            self.check_ack("the Welcome", w.acked_sequence).map_err(Down::other)?;
                            self.server_limit = usize::try_from(w.max_message_bytes).unwrap_or(usize::MAX);
                            if let Some(s) = &self.spool {
                                s.save_file(SUMMARIES_FILE, if w.accepts_summaries { b"1" } else { b"0" });
                            }
                            self.summaries.server_accepts(w.accepts_summaries);
                            welcomed = true;
                            self.metrics.connected.set(1);
                            // Replay everything after the server's durable mark.
                            self.in_flight.clear();
                            if let Some(s) = self.spool.as_mut() {
                                s.settle(w.acked_sequence);
                                let from = s.acked().max(w.acked_sequence);
                                s.rewind(from);
                            }
                            self.flush_soon = true;
                            tracing::info!(message = "Connected to server.", url = %config.url, acked = w.acked_sequence, spooled = self.spool.as_ref().map(|s| s.records()).unwrap_or(0));
                            // What was counted while away, first the report saved while
                            // disconnected, then the current one.
                            if let Some(saved) = self.spool.as_ref().and_then(|s| s.load_file(HEALTH_FILE)) {
                                if pb::SensorMessage::decode(saved.as_slice()).is_ok() {
                                    tx.send(Encoded(saved.into())).await.map_err(Down::other)?;
                                }
                                if let Some(s) = &self.spool { s.remove_file(HEALTH_FILE) }
                            }
                            tx.send(Encoded::of(&self.health())).await.map_err(Down::other)?;
                        }
                        self.apply(m).map_err(Down::other)?;
                    }
                    Some(Err(s)) => return Err(Down::status(s)),
                    None => return Err(Down::other("server closed the stream")),
                },
                ev = rx.recv() => match ev {
                    Some(ev) => self.take(ev, rx),
                    // Capture has stopped (on the shutdown token, like this task; this branch
                    // can be taken before the token's): what it produced is spooled, and is
                    // delivered as a shutdown delivers it, not left for the next start.
                    None => {
                        if welcomed {
                            self.drain_on_shutdown(config, &tx, &mut inbound, rx).await;
                        }
                        return Ok(());
                    }
                },
                () = tokio::time::sleep_until(deadline.0), if !welcomed => {
                    return Err(Down::timed_out(no_answer("send its Welcome", config.welcome_timeout)));
                }
                // Unacknowledged events stay spooled and are replayed on the new connection.
                () = tls.changed() => {
                    tracing::info!(message = "TLS certificate changed; reconnecting with it.");
                    return Err(Down::other("TLS certificate changed; reconnecting with it"));
                }
                _ = health.tick() => {
                    if welcomed && tx.send(Encoded::of(&self.health())).await.is_err() {
                        return Err(Down::other("stream closed"));
                    }
                }
                () = &mut flush, if armed.is_some() => {
                    armed = None;
                    last_flush = tokio::time::Instant::now();
                    self.flush_soon = false;
                    self.send_summaries(false);
                    let Some(spool) = self.spool.as_mut() else { continue };
                    spool.sync();
                    if welcomed {
                        self.send_ready(config, &tx).await.map_err(Down::other)?;
                    }
                }
            }
        }
    }

    /// Awaits `step` of a new session while capture's events keep going to the spool, until
    /// `deadline` (its instant, and the timeout it ends; then the session is given up and
    /// [`no_answer`] names `what` was awaited).
    /// `None` on shutdown or when capture has stopped.
    async fn while_draining<F: std::future::Future>(
        &mut self,
        step: F,
        rx: &mut mpsc::Receiver<ProcessEvent>,
        shutdown: &CancellationToken,
        deadline: (tokio::time::Instant, Duration),
        what: &str,
    ) -> Result<Option<F::Output>, Down> {
        tokio::pin!(step);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                out = &mut step => return Ok(Some(out)),
                () = tokio::time::sleep_until(deadline.0) => {
                    return Err(Down::timed_out(no_answer(what, deadline.1)));
                }
                ev = rx.recv() => match ev {
                    Some(ev) => self.take(ev, rx),
                    None => return Ok(None),
                },
            }
        }
    }

    /// Sends spooled events after the read position while fewer than [`IN_FLIGHT`] wait for
    /// their ack: each batch as the spool holds its events, within the byte budget.
    async fn send_ready(
        &mut self,
        config: &UplinkConfig,
        tx: &mpsc::Sender<Encoded>,
    ) -> Result<(), String> {
        while self.in_flight() < IN_FLIGHT {
            let budget = self.batch_budget(config);
            let Some(spool) = self.spool.as_mut() else {
                break;
            };
            // The message is `Encoded::event_batch_len` of the events' costs; the framing
            // around the costs is at most 11 bytes.
            let records = spool.next_batch(BATCH, budget.saturating_sub(11), |len| {
                Encoded::event_batch_cost(len)
            });
            let Some(last) = records.last().map(|(s, _)| *s) else {
                break;
            };
            let mut events: Vec<Cow<'_, [u8]>> = Vec::with_capacity(records.len());
            for (seq, bytes) in &records {
                let cost = Encoded::event_batch_len(Encoded::event_batch_cost(bytes.len()));
                if cost <= budget {
                    events.push(Cow::Borrowed(bytes.as_slice()));
                    continue;
                }
                // Alone, and still over the budget: shrunk, or given up (counted) when even
                // that does not fit.
                match shrink(bytes, budget.saturating_sub(32)) {
                    Some(small) => {
                        self.metrics.events_shrunk.inc();
                        // Counted in procguard_sensor_events_shrunk_total; logged once a minute.
                        static SHRUNK: Repeated = Repeated::new(Duration::from_secs(60));
                        if let Some(held_back) = SHRUNK.admit() {
                            tracing::warn!(message = "Event too large for a batch; sent shrunk (pod labels left out, argv cut, argv_truncated).", sequence = seq, bytes = bytes.len(), shrunk_to = small.len(), budget_bytes = budget, held_back);
                        }
                        events.push(Cow::Owned(small));
                    }
                    None => {
                        if self.given_up.insert(*seq) {
                            let class = match pb::SensorEvent::decode(bytes.as_slice()) {
                                Ok(e) if e.kind == pb::EventKind::Deviation as i32 => {
                                    Class::Deviation
                                }
                                _ => Class::Observation,
                            };
                            let executions = crate::spool::executions_of(bytes);
                            if let Some(s) = self.spool.as_mut() {
                                s.count_lost(class, 1, executions);
                            }
                            tracing::error!(message = "Event too large for the server even shrunk; dropped and counted.", sequence = seq, bytes = bytes.len(), budget_bytes = budget);
                        }
                    }
                }
            }
            let n = events.len();
            if n == 0 {
                continue;
            }
            let msg = Encoded::event_batch(events.iter().map(|e| e.as_ref()));
            let bytes = msg.0.len();
            if tx.send(msg).await.is_err() {
                return Err("stream closed".into());
            }
            self.in_flight.push_back((last, n, bytes));
        }
        Ok(())
    }

    /// On shutdown while connected: spool what capture already queued, send everything, and
    /// wait (at most [`DRAIN`]) for the acks, so that a restart or a decommissioned node leaves
    /// as little as possible behind.
    async fn drain_on_shutdown(
        &mut self,
        config: &UplinkConfig,
        tx: &mpsc::Sender<Encoded>,
        inbound: &mut tonic::Streaming<pb::ServerMessage>,
        rx: &mut mpsc::Receiver<ProcessEvent>,
    ) {
        let deadline = tokio::time::Instant::now() + DRAIN;
        let mut capture_open = true;
        loop {
            if let Ok(ev) = rx.try_recv() {
                self.take(ev, rx);
            }
            if self.send_ready(config, tx).await.is_err() {
                return;
            }
            if self.in_flight.is_empty() && !capture_open {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(message = "Shutdown drain timed out; the rest stays spooled.", in_flight = self.in_flight());
                    return;
                }
                ev = rx.recv(), if capture_open => match ev {
                    Some(ev) => self.take(ev, rx),
                    // Capture has stopped: every event it produced is in the spool now, and
                    // the executions held for summaries go too.
                    None => {
                        capture_open = false;
                        self.send_summaries(true);
                    }
                },
                msg = inbound.next() => match msg {
                    Some(Ok(m)) => if self.apply(m).is_err() { return },
                    _ => return,
                },
            }
        }
    }
}

/// Why a stream ended: the server's status, when it sent one.
#[derive(Debug)]
struct Down {
    code: Option<tonic::Code>,
    why: String,
    /// The server did not answer within `--welcome-timeout`.
    timed_out: bool,
}

impl From<String> for Down {
    fn from(why: String) -> Self {
        Self::other(why)
    }
}

impl Down {
    /// What kind of failure this is, for the log's rate limit: the status, whether it timed
    /// out, and the message without its numbers (ports, sizes, durations of the moment).
    fn reason(&self) -> (Option<i32>, bool, String) {
        let words = self.why.chars().filter(|c| !c.is_ascii_digit()).collect();
        (self.code.map(|c| c as i32), self.timed_out, words)
    }

    fn status(s: tonic::Status) -> Self {
        Self {
            code: Some(s.code()),
            why: format!("{}: {}", s.code(), s.message()),
            timed_out: false,
        }
    }

    fn other(why: impl ToString) -> Self {
        Self {
            code: None,
            why: why.to_string(),
            timed_out: false,
        }
    }

    fn timed_out(why: String) -> Self {
        Self {
            timed_out: true,
            ..Self::other(why)
        }
    }
}

/// Why a session was given up: the server did not do `what` within `timeout`
/// (`--welcome-timeout`).
fn no_answer(what: &str, timeout: Duration) -> String {
    format!(
        "the server did not {what} within {} (--welcome-timeout); reconnecting",
        humantime::format_duration(timeout)
    )
}

/// An encoded event shrunk to at most `budget` bytes: its pod labels left out (`pod_labels`
/// in `missing`), then argv cut from the end (`argv_truncated`). `None` when it is still too
/// large with no argv and no labels (or does not decode).
fn shrink(bytes: &[u8], budget: usize) -> Option<Vec<u8>> {
    let mut ev = pb::SensorEvent::decode(bytes).ok()?;
    let p = ev.process.as_mut()?;
    if let Some(c) = p.container.as_mut().filter(|c| !c.pod_labels.is_empty()) {
        c.pod_labels.clear();
        if !p.missing.iter().any(|m| m == "pod_labels") {
            p.missing.push("pod_labels".into());
        }
        p.completeness = pb::Completeness::Partial as i32;
    }
    // Cut argv by what is over, then entry by entry until it fits.
    let mut len = ev.encoded_len();
    while len > budget {
        let p = ev.process.as_mut()?;
        let over = len - budget;
        let last = p.argv.last_mut()?;
        p.argv_truncated = true;
        if last.len() > over + 16 {
            let mut keep = last.len() - over - 16;
            while !last.is_char_boundary(keep) {
                keep -= 1;
            }
            last.truncate(keep);
        } else {
            p.argv.pop();
        }
        len = ev.encoded_len();
    }
    Some(ev.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use procguard_core::ExecContext;
    use std::sync::{Arc, Mutex};

    /// A writer that records each `write` call, or fails every one.
    #[derive(Clone, Default)]
    struct Calls {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        fail: bool,
    }

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.fail {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "closed",
                ));
            }
            self.writes.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn event(pid: u32) -> ProcessEvent {
        crate::pods::tests::event(pid, 1, &["true"], ExecContext::Descendant)
    }

    /// A sensor restarted while its server is down summarises as the last server asked: the
    /// answer of its last Welcome is kept in the spool directory. Without one it sends every
    /// execution on its own; a graceful stop sends what it held.
    #[test]
    fn the_last_servers_answer_on_summaries_survives_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let up = |accepted: Option<&[u8]>| {
            let spool = Spool::open(d.path(), 1 << 20, Metrics::default()).unwrap();
            if let Some(a) = accepted {
                spool.save_file(SUMMARIES_FILE, a);
            }
            Uplink::new(None, "n", "c", Some(spool), Metrics::default(), None)
                .with_summaries(Duration::from_secs(30), 100)
        };
        let appended = |up: &Uplink| up.spool.as_ref().unwrap().state().appended;
        for (saved, summarised) in [(None, false), (Some(&b"0"[..]), false), (Some(b"1"), true)] {
            let mut u = up(saved);
            let before = appended(&u);
            for pid in 1..=50 {
                u.accept(event(pid));
            }
            let sent = appended(&u) - before;
            if summarised {
                // The first is news for learning; the rest wait for the interval.
                assert_eq!(sent, 1, "{saved:?}");
                u.send_summaries(true);
                assert_eq!(appended(&u) - before, 2, "the held 49 in one event");
            } else {
                assert_eq!(sent, 50, "{saved:?}");
            }
        }
    }

    /// The session's flush is due only while there is work: something spooled or
    /// acknowledged since the last flush, events awaiting their ack, or the summary table at
    /// its interval's end. A storm whose executions are all held arms nothing before that.
    #[test]
    fn a_flush_is_due_only_while_there_is_work() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path(), 1 << 20, Metrics::default()).unwrap();
        spool.save_file(SUMMARIES_FILE, b"1");
        let interval = Duration::from_secs(30);
        let mut u = Uplink::new(None, "n", "c", Some(spool), Metrics::default(), None)
            .with_summaries(interval, 100);
        let last = tokio::time::Instant::now();
        assert_eq!(u.next_flush(last), None, "nothing spooled, nothing held");
        // The first execution is news for learning: spooled at once, so a flush is due
        // FLUSH_EVERY after the last.
        u.accept(event(1));
        assert_eq!(u.next_flush(last), Some(last + FLUSH_EVERY));
        // The flush took it (and nothing awaits an ack here): the rest of the storm is held,
        // and the next flush is the summary table's, at its interval's end.
        u.flush_soon = false;
        for pid in 2..=50 {
            u.accept(event(pid));
        }
        let due = u.next_flush(last).expect("the held executions are due");
        assert!(due > last + interval - Duration::from_secs(1), "{due:?}");
        assert!(due <= tokio::time::Instant::now() + interval);
        // Events in flight keep the flush due until their ack; the ack makes it due once more
        // (for what waited behind them), then nothing is.
        u.in_flight.push_back((1, 1, 100));
        assert_eq!(u.next_flush(last), Some(last + FLUSH_EVERY));
        u.ack(1);
        assert!(u.in_flight.is_empty() && u.flush_soon);
        assert_eq!(u.next_flush(last), Some(last + FLUSH_EVERY));
        u.flush_soon = false;
        u.send_summaries(true);
        assert_eq!(
            u.next_flush(last),
            Some(last + FLUSH_EVERY),
            "the summary spooled"
        );
        u.flush_soon = false;
        assert_eq!(u.next_flush(last), None, "all sent, nothing held");
    }

    #[test]
    fn json_lines_are_written_once_per_batch_one_object_per_line() {
        let calls = Calls::default();
        let mut out = JsonLines::new(Box::new(calls.clone()));
        for pid in 1..=3 {
            out.push(&event(pid));
        }
        out.flush();
        out.flush();
        let writes = calls.writes.lock().unwrap();
        assert_eq!(writes.len(), 1, "one write for the batch");
        let text = String::from_utf8(writes[0].clone()).unwrap();
        let pids: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["pid"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(pids, vec![1, 2, 3]);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn a_failing_output_drops_lines_and_recovers() {
        let mut calls = Calls {
            fail: true,
            ..Calls::default()
        };
        let mut out = JsonLines::new(Box::new(calls.clone()));
        out.push(&event(1));
        out.flush();
        assert!(out.failing && out.buf.is_empty(), "dropped, never piled up");
        calls.fail = false;
        out.out = Box::new(calls.clone());
        out.push(&event(2));
        out.flush();
        assert!(!out.failing);
        assert_eq!(calls.writes.lock().unwrap().len(), 1);
    }

    /// The sensor decides on content from the baseline as the server pushes it: a replaced
    /// binary at an allowed path is a deviation, the approved content is not, and an exec the
    /// sensor could not hash is not silently allowed.
    #[test]
    fn a_pushed_baseline_pins_content() {
        use procguard_core::{Baseline, ElementKey};
        let now = SystemTime::now();
        let approved = "a".repeat(64);
        let run = |sha: Option<&str>| {
            let mut ev = event(7);
            ev.exe_sha256 = sha.map(str::to_string);
            ev
        };
        let mut b = Baseline::new(event(1).workload, now);
        b.observe(&run(Some(&approved)), now, Duration::from_secs(600), 100);
        b.approve(None, now);
        assert_eq!(
            b.elements[&ElementKey::exe("/bin/true")].approved_sha256,
            vec![approved.clone()]
        );
        let metrics = Metrics::default();
        let mut up = Uplink::new(None, "n", "c", None, metrics.clone(), None);
        up.apply(pb::ServerMessage {
            body: Some(pb::server_message::Body::Snapshot(pb::BaselineSnapshot {
                revision: 1,
                baselines: vec![procguard_proto::convert::baseline_to_pb(&b, false)],
            })),
        })
        .unwrap();
        up.accept(run(Some(&approved)));
        assert_eq!(metrics.deviations.get(), 0, "the approved content");
        up.accept(run(Some(&"b".repeat(64))));
        assert_eq!(metrics.deviations.get(), 1, "a modified executable");
        up.accept(run(None));
        assert_eq!(metrics.deviations.get(), 2, "content unverified");
    }

    #[test]
    fn an_event_too_large_is_shrunk_to_the_budget_and_says_so() {
        let mut ev = event(9);
        ev.argv = (0..64)
            .map(|i| format!("{i}{}", "a".repeat(1023)))
            .collect();
        let container = ev.container.as_mut().unwrap();
        container.pod_labels = (0..100)
            .map(|i| (format!("k{i}"), "v".repeat(500)))
            .collect();
        let big = pb::SensorEvent {
            event_id: "e".into(),
            sequence: 1,
            kind: pb::EventKind::Observation as i32,
            process: Some((&ev).into()),
            ..Default::default()
        }
        .encode_to_vec();
        assert!(big.len() > 100_000);
        for budget in [60_000, 20_000, 4_000] {
            let small = shrink(&big, budget).expect("fits once cut");
            assert!(small.len() <= budget, "{} > {budget}", small.len());
            let got = pb::SensorEvent::decode(small.as_slice()).unwrap();
            let p = got.process.unwrap();
            assert!(p.argv_truncated);
            assert!(p.missing.contains(&"pod_labels".to_string()));
            assert!(p.container.unwrap().pod_labels.is_empty());
            assert_eq!(p.exe_path, ev.exe_path, "the executable is never cut");
        }
        assert_eq!(shrink(&big, 100), None, "too large even with no argv");
    }

    /// An acknowledgement of events this sensor never numbered is a protocol error: refused,
    /// counted, and the spool keeps everything; an honest one still deletes what it covers.
    #[test]
    fn an_ack_beyond_the_last_sequence_is_refused_and_the_spool_kept() {
        let d = tempfile::tempdir().unwrap();
        let metrics = Metrics::default();
        let spool = Spool::open(d.path(), crate::spool::MIN_SPOOL_BYTES, metrics.clone()).unwrap();
        let mut up = Uplink::new(None, "n", "c", Some(spool), metrics.clone(), None);
        for pid in 1..=3 {
            up.accept(event(pid));
        }
        let last = up.spool.as_ref().unwrap().last_sequence();
        let ack = |seq| pb::ServerMessage {
            body: Some(pb::server_message::Body::Ack(pb::Ack { sequence: seq })),
        };
        let welcome = |seq| pb::ServerMessage {
            body: Some(pb::server_message::Body::Welcome(pb::Welcome {
                acked_sequence: seq,
                ..Default::default()
            })),
        };
        for msg in [ack(u64::MAX), welcome(last + 1)] {
            let err = up.apply(msg).unwrap_err();
            assert!(err.contains("beyond this sensor's last sequence"), "{err}");
        }
        assert_eq!(metrics.server_protocol_errors.get(), 2);
        assert_eq!(up.spool.as_ref().unwrap().records(), 3, "nothing deleted");
        assert_eq!(up.spool.as_ref().unwrap().acked(), 0);
        up.apply(ack(last)).unwrap();
        assert_eq!(up.spool.as_ref().unwrap().acked(), last);
    }

    /// The health report carries every loss the server's sensor-blind incident counts: execs
    /// without an event (queue, spool, gone before their read) as dropped, and the kernel's
    /// losses with the proc connector's sequence numbers that never arrived.
    #[test]
    fn the_health_report_counts_every_kind_of_loss() {
        let m = Metrics::default();
        m.queue_drops.inc_by(1);
        m.buffer_drops.inc_by(2);
        m.exec_lost.inc_by(4);
        m.kernel_losses.inc_by(8);
        m.sequence_gaps.inc_by(16);
        m.events_partial.inc_by(32);
        let up = Uplink::new(None, "n1", "c", None, m, None);
        let Some(pb::sensor_message::Body::Health(h)) = up.health().body else {
            panic!("not a health report");
        };
        assert_eq!(
            (h.events_dropped, h.kernel_losses, h.events_partial),
            (7, 24, 32)
        );
    }
}
