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
    /// Execs whose process was gone before `/proc` could be read, with nothing to report.
    pub exec_lost: Counter,
    /// Proc connector overruns (ENOBUFS).
    pub kernel_losses: Counter,
    /// Forward jumps in per-CPU sequence numbers (includes events the filter skips).
    pub sequence_gaps: Counter,
    /// Full /proc rescans after a loss.
    pub resyncs: Counter,
    /// Events dropped by the spool (full, or the disk failed), over the spool's lifetime.
    pub buffer_drops: Counter,
    /// Of those, deviations.
    pub spool_dropped_deviations: Counter,
    /// Events appended to the spool, over the spool's lifetime.
    pub spool_appended: Counter,
    /// Spool writes, fsyncs or reads that failed.
    pub spool_write_errors: Counter,
    /// Bytes held in the spool.
    pub spool_bytes: Gauge,
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
            "exec_lost",
            "Execs whose process was gone before /proc could be read (no event possible)",
            self.exec_lost.clone(),
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
            "Events dropped by the spool (full or disk failure), over the spool's lifetime",
            self.buffer_drops.clone(),
        );
        r.register(
            "spool_dropped_deviations",
            "Deviations dropped by the spool, over the spool's lifetime",
            self.spool_dropped_deviations.clone(),
        );
        r.register(
            "spool_appended",
            "Events appended to the spool, over the spool's lifetime",
            self.spool_appended.clone(),
        );
        r.register(
            "spool_io_errors",
            "Spool writes, fsyncs or reads that failed",
            self.spool_write_errors.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes held in the spool",
            self.spool_bytes.clone(),
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
