//! Sensor counters, exposed on `/metrics` and reported to the server as health. Every loss has
//! a counter: a sensor that cannot see must say so.

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use prometheus_client::registry::Registry;

/// The sensor's metrics. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Process starts turned into events.
    pub events_seen: Counter,
    /// Events with partial completeness.
    pub events_partial: Counter,
    /// Kernel events dropped because the processing queue was full.
    pub queue_drops: Counter,
    /// Proc connector overruns (ENOBUFS).
    pub kernel_losses: Counter,
    /// Forward jumps in per-CPU sequence numbers (includes events the filter skips).
    pub sequence_gaps: Counter,
    /// Full /proc rescans after a loss.
    pub resyncs: Counter,
    /// Events dropped because the unacknowledged buffer was full.
    pub buffer_drops: Counter,
    /// Deviations detected locally.
    pub deviations: Counter,
    /// Events acknowledged by the server.
    pub events_acked: Counter,
    /// Capture stopped on an error.
    pub capture_failed: Counter,
    /// Events waiting for acknowledgement.
    pub pending: Gauge,
    /// 1 while connected to the server.
    pub connected: Gauge,
    /// Enforced baselines held.
    pub baselines: Gauge,
}

impl Metrics {
    /// Registers every metric under the `procguard_sensor` prefix.
    pub fn register(&self) -> Registry {
        let mut r = Registry::with_prefix("procguard_sensor");
        r.register(
            "events_seen",
            "Process starts turned into events",
            self.events_seen.clone(),
        );
        r.register(
            "events_partial",
            "Events with partial completeness",
            self.events_partial.clone(),
        );
        r.register(
            "queue_drops",
            "Kernel events dropped: processing queue full",
            self.queue_drops.clone(),
        );
        r.register(
            "kernel_losses",
            "Proc connector overruns (ENOBUFS)",
            self.kernel_losses.clone(),
        );
        r.register(
            "sequence_gaps",
            "Forward jumps in per-CPU proc connector sequence numbers",
            self.sequence_gaps.clone(),
        );
        r.register(
            "resyncs",
            "Full /proc rescans after a loss",
            self.resyncs.clone(),
        );
        r.register(
            "buffer_drops",
            "Events dropped: unacknowledged buffer full",
            self.buffer_drops.clone(),
        );
        r.register(
            "deviations",
            "Deviations detected on this node",
            self.deviations.clone(),
        );
        r.register(
            "events_acked",
            "Events acknowledged by the server",
            self.events_acked.clone(),
        );
        r.register(
            "capture_failed",
            "Capture stopped on an error",
            self.capture_failed.clone(),
        );
        r.register(
            "pending_events",
            "Events waiting for acknowledgement",
            self.pending.clone(),
        );
        r.register(
            "connected",
            "1 while connected to the server",
            self.connected.clone(),
        );
        r.register(
            "baselines",
            "Enforced baselines held for local matching",
            self.baselines.clone(),
        );
        r
    }
}
