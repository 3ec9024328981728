//! The uplink: stamps events with sequence numbers and IDs, matches them against enforced
//! baselines, and streams them to the server, keeping every unacknowledged event until the
//! server says it is durable.
//!
//! On reconnect the server's `Welcome` names the last durable sequence; everything after it
//! is sent again (the server skips IDs it already has). While the server is unreachable,
//! matching goes on against the last baselines received, so deviations are still detected.

use crate::config::Uplink as UplinkConfig;
use crate::metrics::Metrics;
use procguard_core::baseline::{Matcher, Verdict};
use procguard_core::{ExecContext, ProcessEvent};
use procguard_proto::convert::{baseline_from_pb, timestamp};
use procguard_proto::v1 as pb;
use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// Events per batch.
const BATCH: usize = 500;
/// How long an event may wait for its batch to fill.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Unacknowledged events in flight before sending pauses for acks.
const IN_FLIGHT: usize = 8 * BATCH;
/// Outbound stream messages buffered towards the server.
const OUTBOUND: usize = 16;
/// Health report period.
const HEALTH_EVERY: Duration = Duration::from_secs(10);

/// What the uplink task owns.
pub struct Uplink {
    config: Option<UplinkConfig>,
    node: String,
    cluster: String,
    boot_id: String,
    next_seq: u64,
    pending: VecDeque<pb::SensorEvent>,
    max_pending: usize,
    acked: u64,
    matcher: Matcher,
    metrics: Metrics,
    jsonl: Option<Box<dyn Write + Send>>,
    /// Optional capabilities enabled by flags (pod metadata, fanotify), announced in `Hello`.
    extra_capabilities: Vec<pb::SensorCapability>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("node", &self.node)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Uplink {
    /// Creates the uplink. Sequence numbers start at the current time in microseconds, so they
    /// keep increasing across sensor restarts without any state on disk.
    pub fn new(
        config: Option<UplinkConfig>,
        node: &str,
        cluster: &str,
        max_pending: usize,
        metrics: Metrics,
        jsonl: Option<Box<dyn Write + Send>>,
    ) -> Self {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        Self {
            config,
            node: node.to_string(),
            cluster: cluster.to_string(),
            boot_id: uuid::Uuid::new_v4().to_string(),
            next_seq: now_us,
            pending: VecDeque::new(),
            max_pending,
            acked: 0,
            matcher: Matcher::default(),
            metrics,
            jsonl,
            extra_capabilities: Vec::new(),
        }
    }

    /// Announces optional capabilities in `Hello`.
    pub fn with_capabilities(mut self, caps: Vec<pb::SensorCapability>) -> Self {
        self.extra_capabilities = caps;
        self
    }

    fn accept(&mut self, ev: ProcessEvent) {
        if let Some(out) = self.jsonl.as_mut() {
            if let Ok(line) = serde_json::to_string(&ev) {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
        let script = ev.script_path.as_deref().unwrap_or("");
        let verdict = if ev.context == ExecContext::Probe {
            Verdict::Allowed
        } else {
            self.matcher.check(&ev.workload, &ev.exe_path, script)
        };
        let kind = if verdict == Verdict::Deviation {
            self.metrics.deviations.inc();
            tracing::warn!(message = "Deviation.", workload = %ev.workload, exe = %ev.exe_path, pid = ev.pid);
            pb::EventKind::Deviation
        } else {
            pb::EventKind::Observation
        };
        if self.config.is_none() {
            return;
        }
        self.next_seq += 1;
        let event = pb::SensorEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            sequence: self.next_seq,
            kind: kind as i32,
            observed_at: Some(timestamp(SystemTime::now())),
            process: Some((&ev).into()),
            baseline_revision: 0,
        };
        if self.pending.len() >= self.max_pending {
            // Drop the oldest observation; deviations go last.
            let victim = self
                .pending
                .iter()
                .position(|e| e.kind == pb::EventKind::Observation as i32)
                .unwrap_or(0);
            self.pending.remove(victim);
            self.metrics.buffer_drops.inc();
        }
        self.pending.push_back(event);
        self.metrics.pending.set(self.pending.len() as i64);
    }

    fn ack(&mut self, seq: u64) {
        self.acked = self.acked.max(seq);
        let before = self.pending.len();
        while self
            .pending
            .front()
            .is_some_and(|e| e.sequence <= self.acked)
        {
            self.pending.pop_front();
        }
        self.metrics
            .events_acked
            .inc_by((before - self.pending.len()) as u64);
        self.metrics.pending.set(self.pending.len() as i64);
    }

    fn apply(&mut self, msg: pb::ServerMessage) {
        match msg.body {
            Some(pb::server_message::Body::Ack(a)) => self.ack(a.sequence),
            Some(pb::server_message::Body::Welcome(w)) => self.ack(w.acked_sequence),
            Some(pb::server_message::Body::Snapshot(s)) => {
                let list: Vec<_> = s
                    .baselines
                    .iter()
                    .filter_map(|b| match baseline_from_pb(b) {
                        Ok(b) => Some(b),
                        Err(e) => {
                            tracing::warn!(message = "Ignored a malformed baseline from the server.", error = %e);
                            None
                        }
                    })
                    .collect();
                self.matcher = Matcher::new(list.iter());
                self.metrics.baselines.set(self.matcher.len() as i64);
                tracing::info!(
                    message = "Baselines received.",
                    revision = s.revision,
                    count = self.matcher.len()
                );
            }
            Some(pb::server_message::Body::Update(u)) => {
                if let Some(b) = u.baseline.as_ref().and_then(|b| baseline_from_pb(b).ok()) {
                    if u.removed {
                        self.matcher.remove(&b.workload);
                    } else {
                        self.matcher.upsert(&b);
                    }
                    self.metrics.baselines.set(self.matcher.len() as i64);
                    tracing::info!(message = "Baseline updated.", workload = %b.workload, state = b.state.as_str(), revision = u.revision);
                }
            }
            None => {}
        }
    }

    fn health(&self) -> pb::SensorMessage {
        let m = &self.metrics;
        pb::SensorMessage {
            body: Some(pb::sensor_message::Body::Health(pb::SensorHealth {
                events_seen: m.events_seen.get(),
                events_dropped: m.queue_drops.get() + m.buffer_drops.get(),
                events_partial: m.events_partial.get(),
                kernel_losses: m.kernel_losses.get(),
                resyncs: m.resyncs.get(),
                lag_ms: 0,
                spooled: self.pending.len() as u64,
                at: Some(timestamp(SystemTime::now())),
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
                    ev = rx.recv() => match ev { Some(ev) => self.accept(ev), None => return },
                }
            }
        };
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.session(&config, &mut rx, &shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.connected.set(0);
                    tracing::warn!(message = "Server stream down; retrying.", error = %e, retry_in_ms = backoff.as_millis() as u64, pending = self.pending.len());
                }
            }
            let until = tokio::time::sleep(backoff);
            tokio::pin!(until);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut until => break,
                    // Keep draining capture while disconnected so the kernel queue never backs up.
                    ev = rx.recv() => match ev { Some(ev) => self.accept(ev), None => return },
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    async fn session(
        &mut self,
        config: &UplinkConfig,
        rx: &mut mpsc::Receiver<ProcessEvent>,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let endpoint = tonic::transport::Endpoint::from_shared(config.url.clone())
            .map_err(|e| e.to_string())?
            .tls_config(config.tls.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20));
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let mut client = pb::sensor_service_client::SensorServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024);
        let (tx, out_rx) = mpsc::channel::<pb::SensorMessage>(OUTBOUND);
        let hello = pb::SensorMessage {
            body: Some(pb::sensor_message::Body::Hello(pb::Hello {
                node_name: self.node.clone(),
                sensor_version: env!("CARGO_PKG_VERSION").into(),
                capabilities: [
                    pb::SensorCapability::ProcConnector,
                    pb::SensorCapability::LocalEnforcement,
                ]
                .iter()
                .chain(&self.extra_capabilities)
                .map(|c| *c as i32)
                .collect(),
                boot_id: self.boot_id.clone(),
                last_sequence: self.next_seq,
                baseline_revision: 0,
                cluster: self.cluster.clone(),
            })),
        };
        tx.send(hello).await.map_err(|e| e.to_string())?;
        let mut inbound = client
            .session(tokio_stream::wrappers::ReceiverStream::new(out_rx))
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?
            .into_inner();
        // Resend everything the server has not acknowledged.
        let mut sent_upto = self.acked;
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut health = tokio::time::interval(HEALTH_EVERY);
        let mut welcomed = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // One last flush of what is ready; unacknowledged events are lost with the
                    // process until the spool keeps them across restarts.
                    return Ok(());
                }
                msg = inbound.next() => match msg {
                    Some(Ok(m)) => {
                        if let Some(pb::server_message::Body::Welcome(w)) = &m.body {
                            welcomed = true;
                            sent_upto = w.acked_sequence.max(self.acked);
                            self.metrics.connected.set(1);
                            tracing::info!(message = "Connected to server.", url = %config.url, acked = w.acked_sequence, pending = self.pending.len());
                        }
                        self.apply(m);
                    }
                    Some(Err(s)) => return Err(format!("{}: {}", s.code(), s.message())),
                    None => return Err("server closed the stream".into()),
                },
                ev = rx.recv() => match ev {
                    Some(ev) => self.accept(ev),
                    None => return Ok(()),
                },
                _ = health.tick() => {
                    if welcomed && tx.send(self.health()).await.is_err() {
                        return Err("stream closed".into());
                    }
                }
                _ = flush.tick() => {
                    if !welcomed { continue; }
                    loop {
                        let in_flight = self.pending.iter().take_while(|e| e.sequence <= sent_upto).count();
                        if in_flight >= IN_FLIGHT { break; }
                        let batch: Vec<pb::SensorEvent> = self.pending.iter()
                            .filter(|e| e.sequence > sent_upto)
                            .take(BATCH)
                            .cloned()
                            .collect();
                        let Some(last) = batch.last().map(|e| e.sequence) else { break };
                        let msg = pb::SensorMessage { body: Some(pb::sensor_message::Body::Batch(pb::EventBatch { events: batch })) };
                        if tx.send(msg).await.is_err() {
                            return Err("stream closed".into());
                        }
                        sent_upto = last;
                    }
                }
            }
        }
    }
}
