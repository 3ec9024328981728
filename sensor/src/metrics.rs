//! Sensor counters, exposed on `/metrics` and reported to the server as health. Every loss has
//! a counter: a sensor that cannot see must say so.

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
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
    /// Execs of processes gone before `/proc` was read whose fork arrived after the exec
    /// (the parent was descheduled between starting the child and reporting the fork); they
    /// waited for it and took their parent and container from it.
    pub late_forks: Counter,
    /// Kernel-side losses: proc connector overruns (ENOBUFS), or eBPF records the ring buffer
    /// had no room for (one per record).
    pub kernel_losses: Counter,
    /// Proc connector events never delivered: per-CPU sequence numbers skipped and not filled
    /// by a late arrival (both subscriptions together receive every event kind, so a number
    /// that never arrives is a lost event). Reported to the server with `kernel_losses`.
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
    /// Spool records found damaged on disk (checksum failed) and counted as lost (also in
    /// `buffer_drops`).
    pub spool_corrupt_records: Counter,
    /// Messages from the server that broke the protocol (an acknowledgement beyond the last
    /// sequence this sensor assigned): refused, the spool kept, the stream reopened.
    pub server_protocol_errors: Counter,
    /// Events shrunk to fit the server's message limit (argv and labels cut, `argv_truncated`).
    pub events_shrunk: Counter,
    /// Batches the server refused as too large, sent again in smaller batches.
    pub batches_split: Counter,
    /// Events whose pod labels were cut to the per-event cap.
    pub pod_labels_capped: Counter,
    /// Bytes held in the spool.
    pub spool_bytes: Gauge,
    /// The spool's limit in bytes (`--spool-bytes`; 0 without a server, when nothing spools):
    /// `spool_bytes / spool_capacity_bytes` is how full it is.
    pub spool_capacity_bytes: Gauge,
    /// Deviations detected locally.
    pub deviations: Counter,
    /// Events acknowledged by the server.
    pub events_acked: Counter,
    /// Server sessions that ended in an error: the connection refused or lost, the stream
    /// refused or closed, a protocol error, no Welcome in time. Each is followed by a
    /// reconnect with backoff; the log says why once a minute.
    pub sessions_failed: Counter,
    /// Of those, sessions given up because the server did not complete the connection, answer
    /// the stream or send its Welcome within `--welcome-timeout`.
    pub welcome_timeouts: Counter,
    /// Capture stopped on an error.
    pub capture_failed: Counter,
    /// Why capture stopped, once it has (the first reason; capture does not restart): sent in
    /// every health report so that the server opens a sensor-blind incident.
    pub capture_stopped: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Events waiting for acknowledgement.
    pub pending: Gauge,
    /// 1 while connected to the server.
    pub connected: Gauge,
    /// Enforced baselines held.
    pub baselines: Gauge,
    /// Summary events appended (each stands for several executions).
    pub summaries_sent: Counter,
    /// Executions sent inside summary events (`summaries_sent` of them are the summaries'
    /// first executions): what did not cross the network one event each.
    pub executions_summarised: Counter,
    /// Executions held for the interval's summary, not yet appended.
    pub summary_held: Gauge,
    /// Summary tables sent before their interval ended because they were full.
    pub summary_tables_full: Counter,
    /// Pods on this node known from the API.
    pub pods_known: Gauge,
    /// Pods ignored because the pod cache was full.
    pub pods_ignored: Counter,
    /// Pod watch errors (each followed by a retry).
    pub pod_watch_errors: Counter,
    /// Events held waiting for their pod's metadata.
    pub pod_events_held: Gauge,
    /// Events sent without pod metadata (partial) after waiting for it.
    pub pod_metadata_missing: Counter,
    /// Held events released early because the hold was full.
    pub pod_hold_overflow: Counter,
    /// Events released without pod metadata and sent again under their workload identity once
    /// the pod became known.
    pub pod_metadata_late: Counter,
    /// Events released without pod metadata whose pod never became known while they were
    /// kept (or that a full keep displaced): never evaluated against a workload baseline.
    pub pod_metadata_unresolved: Counter,
    /// Events released without pod metadata and kept for their late attribution.
    pub pod_events_late: Gauge,
    /// fanotify exec events received.
    pub fanotify_events: Counter,
    /// fanotify queue overflows (events lost by the kernel).
    pub fanotify_overflows: Counter,
    /// Executables named by fanotify for processes already gone from /proc.
    pub fanotify_rescues: Counter,
    /// Execs whose process exec'd again before `/proc` was read (`sh -c cmd` running `cmd` in
    /// place): named by fanotify, their argv unread, rather than as the later program.
    pub execs_superseded: Counter,
    /// 1 for the way cgroup paths are read (`mode`: host, entered, resolved, blind).
    pub cgroup_view: Family<Vec<(String, String)>, Gauge>,
    /// Execs recognised as the container runtime's own init (the runtime re-executing its own
    /// binary, or its memfd clone, for a process its host-side parent starts into a container);
    /// not reported as the container's processes.
    pub runtime_init_execs: Counter,
    /// 1 while fanotify exec identities are on; 0 when they were turned off or the kernel or
    /// privileges refused them (the log says why and what to grant).
    pub fanotify_enabled: Gauge,
    /// 1 for the capture backend in use (`backend`: ebpf, netlink).
    pub capture_backend: Family<Vec<(String, String)>, Gauge>,
    /// eBPF records the ring buffer had no room for (each one event; also in
    /// `kernel_losses`, which the health report carries).
    pub ebpf_ring_losses: Counter,
    /// How long hashing takes, in seconds.
    pub hashing: Hashing,
}

/// Latency of the hashing thread, in seconds (histograms; cheap to clone).
#[derive(Debug, Clone)]
pub struct Hashing {
    /// Reading and hashing one executable the cache did not know (up to the hash size limit).
    pub file: Histogram,
    /// How long an event waited on the hashing thread, from being handed over to being sent
    /// on: its own file's hash, or earlier events' it must not overtake.
    pub event_delay: Histogram,
}

impl Default for Hashing {
    fn default() -> Self {
        Self {
            // 50 µs … ~1.6 s: a small binary from the page cache up to a large one from disk.
            file: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            event_delay: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        }
    }
}

impl Metrics {
    /// Records that capture stopped on an error: counted, and the reason kept for the health
    /// report (the first one; later ones are the same stop seen by another thread).
    pub fn stop_capture(&self, why: String) {
        self.capture_failed.inc();
        let mut stopped = self
            .capture_stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        stopped.get_or_insert(why);
    }

    /// Why capture stopped, if it has.
    pub fn capture_stopped(&self) -> Option<String> {
        self.capture_stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records how cgroup paths are read.
    pub fn set_cgroup_view(&self, mode: &str) {
        self.cgroup_view
            .get_or_create(&vec![("mode".to_string(), mode.to_string())])
            .set(1);
    }

    /// Records the capture backend in use.
    pub fn set_capture_backend(&self, backend: &str) {
        self.capture_backend
            .get_or_create(&vec![("backend".to_string(), backend.to_string())])
            .set(1);
    }

    /// Registers every metric under the `procguard_sensor` prefix.
    pub fn register(&self) -> Registry {
        let mut r = Registry::with_prefix("procguard_sensor");
        r.register(
            "cgroup_view",
            "How cgroup paths are read (1 for the mode in use): host, entered (the host's cgroup namespace), resolved (against the sensor's own cgroup), blind",
            self.cgroup_view.clone(),
        );

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
            "late_forks",
            "Execs completed by a fork event that arrived after them (the parent reported the fork late)",
            self.late_forks.clone(),
        );
        r.register(
            "kernel_losses",
            "Kernel-side losses: proc connector overruns (ENOBUFS), or eBPF records with no room in the ring buffer",
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
            "spool_corrupt_records",
            "Spool records found damaged on disk (checksum failed) and counted as lost",
            self.spool_corrupt_records.clone(),
        );
        r.register(
            "server_protocol_errors",
            "Server messages refused as protocol errors (an ack beyond the sensor's last sequence); the spool is kept",
            self.server_protocol_errors.clone(),
        );
        r.register(
            "events_shrunk",
            "Events shrunk (argv and labels cut, argv_truncated) to fit the server's message limit",
            self.events_shrunk.clone(),
        );
        r.register(
            "batches_split",
            "Batches the server refused as too large, sent again in smaller batches",
            self.batches_split.clone(),
        );
        r.register(
            "pod_labels_capped",
            "Events whose pod labels were cut to the per-event cap",
            self.pod_labels_capped.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes held in the spool",
            self.spool_bytes.clone(),
        );
        r.register(
            "spool_capacity_bytes",
            "The spool's limit in bytes (--spool-bytes; 0 when nothing spools)",
            self.spool_capacity_bytes.clone(),
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
            "sessions_failed",
            "Server sessions that ended in an error and were reconnected (the log says why once a minute)",
            self.sessions_failed.clone(),
        );
        r.register(
            "welcome_timeouts",
            "Sessions given up because the server did not connect, answer or send its Welcome within --welcome-timeout",
            self.welcome_timeouts.clone(),
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
        r.register(
            "summaries_sent",
            "Summary events appended to the spool, each standing for several executions",
            self.summaries_sent.clone(),
        );
        r.register(
            "executions_summarised",
            "Executions sent inside summary events",
            self.executions_summarised.clone(),
        );
        r.register(
            "summary_held_executions",
            "Executions held for the interval's summary, not yet appended to the spool",
            self.summary_held.clone(),
        );
        r.register(
            "summary_tables_full",
            "Summary tables sent before their interval ended because they were full (--summary-max-entries)",
            self.summary_tables_full.clone(),
        );
        for (name, help, c) in [
            (
                "pods_ignored",
                "Pods ignored: pod cache full",
                &self.pods_ignored,
            ),
            (
                "pod_watch_errors",
                "Pod watch errors, each followed by a retry",
                &self.pod_watch_errors,
            ),
            (
                "pod_metadata_missing",
                "Events sent without pod metadata after waiting for it",
                &self.pod_metadata_missing,
            ),
            (
                "pod_hold_overflow",
                "Held events released early: hold full",
                &self.pod_hold_overflow,
            ),
            (
                "pod_metadata_late",
                "Events sent again under their workload identity once their pod became known",
                &self.pod_metadata_late,
            ),
            (
                "pod_metadata_unresolved",
                "Events whose pod never became known while kept: not evaluated against a workload baseline",
                &self.pod_metadata_unresolved,
            ),
            (
                "fanotify_events",
                "fanotify exec events received",
                &self.fanotify_events,
            ),
            (
                "fanotify_overflows",
                "fanotify queue overflows: events lost by the kernel",
                &self.fanotify_overflows,
            ),
            (
                "fanotify_rescues",
                "Executables named by fanotify for processes gone from /proc",
                &self.fanotify_rescues,
            ),
            (
                "execs_superseded",
                "Execs whose process exec'd again before /proc was read: named by fanotify, argv unread",
                &self.execs_superseded,
            ),
            (
                "runtime_init_execs",
                "Execs recognised as the container runtime's own init, not reported",
                &self.runtime_init_execs,
            ),
        ] {
            r.register(name, help, c.clone());
        }
        r.register(
            "capture_backend",
            "The capture backend in use (1): ebpf (kernel tracepoints) or netlink (proc connector)",
            self.capture_backend.clone(),
        );
        r.register(
            "ebpf_ring_losses",
            "eBPF records lost for want of room in the ring buffer (each also counted in kernel_losses)",
            self.ebpf_ring_losses.clone(),
        );
        r.register(
            "fanotify_enabled",
            "1 while fanotify exec identities are on (see the log when 0)",
            self.fanotify_enabled.clone(),
        );
        r.register(
            "hash_duration_seconds",
            "Time to read and sha256 one executable not in the hash cache",
            self.hashing.file.clone(),
        );
        r.register(
            "hash_event_delay_seconds",
            "Time an event waited on the hashing thread before being sent on",
            self.hashing.event_delay.clone(),
        );
        r.register(
            "pods_known",
            "Pods on this node known from the API",
            self.pods_known.clone(),
        );
        r.register(
            "pod_events_held",
            "Events waiting for their pod's metadata",
            self.pod_events_held.clone(),
        );
        r.register(
            "pod_events_late",
            "Events sent without pod metadata and kept until their pod is known",
            self.pod_events_late.clone(),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_stop_is_counted_and_its_first_reason_kept() {
        let m = Metrics::default();
        assert_eq!(m.capture_stopped(), None);
        m.stop_capture("eBPF ring buffer wait failed: EBADF".into());
        // Another thread seeing the same stop does not replace the cause.
        m.clone().stop_capture("proc connector read failed".into());
        assert_eq!(m.capture_failed.get(), 2);
        assert_eq!(
            m.capture_stopped().as_deref(),
            Some("eBPF ring buffer wait failed: EBADF")
        );
    }
}
