//! Server metrics, exposed on the admin port's `/metrics`. Every dropped, rejected or denied
//! thing has a counter so that an operator sees it without reading logs; latencies are
//! histograms ([`Timings`]), observed where the work happens; gauges of stored state
//! ([`StateGauges`]) are set where a report arrives or by [`crate::gauges`] on a bounded
//! timer, never on a scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

/// A sensor's node name as a label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// Node name.
    pub node: String,
}
use prometheus_client::registry::Registry;

/// An API call's method and gRPC status code as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiCallLabels {
    /// gRPC method name, as audited (`ApproveBaseline`).
    pub method: String,
    /// gRPC status code name (`Ok`, `PermissionDenied`).
    pub code: String,
}

/// An incident's severity and kind as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IncidentLabels {
    /// Severity (`low` … `critical`).
    pub severity: String,
    /// Kind (`deviation`, `sensor_blind`, `exec_session`).
    pub kind: String,
}

/// A baseline state as a label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// State (`learning`, `pending_review`, `enforced`).
    pub state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn api_histogram() -> Histogram {
    // 1 ms … about 16 s: reads take milliseconds, an import or a dry run over many
    // baselines seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Latency histograms, in seconds.
#[derive(Debug, Clone)]
pub struct Timings {
    /// API calls from the gate's first look to the audit of their outcome, by method and code.
    pub api_call: HistogramFamily<ApiCallLabels>,
    /// From a deviation's `observed_at` on the sensor to its durable storage here.
    pub deviation_delay: Histogram,
    /// A sensor batch's ingest: its commit and the flush that makes it durable.
    pub ingest_commit: Histogram,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            api_call: Family::new_with_constructor(api_histogram),
            // 10 ms … about 11 min: a connected sensor's deviations take well under a second;
            // one that spooled while the server was away delivers them minutes late.
            deviation_delay: Histogram::new(exponential_buckets(0.01, 2.0, 17)),
            // 0.5 ms … about 8 s: one transaction and one flush (shared with other batches).
            ingest_commit: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
        }
    }
}

impl Timings {
    /// Observes one API call of `method` that ended with `code` after `took`.
    pub fn api_call(&self, method: &str, code: tonic::Code, took: Duration) {
        self.api_call
            .get_or_create(&ApiCallLabels {
                method: method.to_string(),
                code: format!("{code:?}"),
            })
            .observe(took.as_secs_f64());
    }

    /// Observes the delay of a deviation the sensor observed at `observed_at`, stored `now`.
    /// A sensor clock ahead of the server's would make it negative: it counts as 0.
    pub fn deviation_stored(&self, observed_at: SystemTime, now: SystemTime) {
        let delay = now.duration_since(observed_at).unwrap_or_default();
        self.deviation_delay.observe(delay.as_secs_f64());
    }
}

/// How long a node's last-report gauge outlives its last report: a node gone for a day (scaled
/// down, replaced) stops being a series, so the family is bounded by the nodes seen in a day.
pub const SENSOR_FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Each sensor's last health report, as a Unix timestamp per node.
#[derive(Debug, Clone, Default)]
pub struct SensorReports {
    /// The exported gauge family.
    pub family: Family<NodeLabel, Gauge<f64, AtomicU64>>,
    /// When each node last reported; the family is pruned by it.
    seen: Arc<Mutex<HashMap<String, SystemTime>>>,
}

impl SensorReports {
    /// Records a report from `node` at `at`.
    pub fn report(&self, node: &str, at: SystemTime) {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(node.to_string(), at);
        self.family
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .set(secs);
    }

    /// Drops the series of nodes that have not reported for `forget_after`; returns them, so
    /// that other per-node series set with the report can go too.
    pub fn forget_older(&self, now: SystemTime, forget_after: Duration) -> Vec<NodeLabel> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut forgotten = Vec::new();
        seen.retain(|node, at| {
            let keep = now.duration_since(*at).unwrap_or_default() < forget_after;
            if !keep {
                let label = NodeLabel { node: node.clone() };
                self.family.remove(&label);
                forgotten.push(label);
            }
            keep
        });
        forgotten
    }
}

/// The positions of the SIEM subscriptions connected now, for their lag. Each stream holds
/// its position; a stream that ends drops it, and it is forgotten at the next look. The list
/// is bounded by the streams the subscription limit lets connect, plus those that ended since
/// the last look (every few seconds).
#[derive(Debug, Clone, Default)]
pub struct SubscriberPositions {
    streams: Arc<Mutex<Vec<Weak<AtomicU64>>>>,
}

impl SubscriberPositions {
    /// A new stream's position, starting after cursor `after`; the stream stores into it the
    /// last cursor it has read.
    pub fn track(&self, after: u64) -> Arc<AtomicU64> {
        let position = Arc::new(AtomicU64::new(after));
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.push(Arc::downgrade(&position));
        position
    }

    /// Records behind `head` (the newest durable cursor) of the subscriber furthest behind, 0
    /// without subscribers. Forgets the streams that ended.
    pub fn max_lag(&self, head: u64) -> u64 {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.retain(|w| w.strong_count() > 0);
        streams
            .iter()
            .filter_map(Weak::upgrade)
            .map(|p| head.saturating_sub(p.load(Ordering::Relaxed)))
            .max()
            .unwrap_or(0)
    }
}

/// Gauges of the server's state; see [`crate::gauges`] for how each is kept current.
#[derive(Debug, Clone, Default)]
pub struct StateGauges {
    /// Incidents not closed (open or acknowledged), by severity and kind.
    pub incidents_open: Family<IncidentLabels, Gauge>,
    /// Baselines by state.
    pub baselines: Family<StateLabel, Gauge>,
    /// Each sensor's last health report.
    pub sensor_reports: SensorReports,
    /// Where each connected subscription is.
    pub subscriber_positions: SubscriberPositions,
    /// Records behind the log head of the subscriber furthest behind.
    pub subscriber_lag: Gauge,
    /// The database's size on disk.
    pub database_bytes: Gauge,
}

/// The server's metrics. Cheap to clone (counters are shared).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Events stored.
    pub events_ingested: Counter,
    /// Executions the stored events stand for (a sensor's summary stands for several).
    pub executions_ingested: Counter,
    /// Replayed events skipped by ID.
    pub events_duplicate: Counter,
    /// Deviations stored.
    pub deviations: Counter,
    /// Events stored whose pod the sensor did not know in time: never learned into a baseline
    /// of their own; the sensor sends them again under their workload identity.
    pub events_unattributed: Counter,
    /// Partial events stored (a field the sensor could not read): coverage, never an incident.
    pub events_partial: Counter,
    /// Execs whose applet or script could not be read while all that was read is allowed:
    /// counted as coverage in their baseline, not deviations.
    pub execs_unread: Counter,
    /// Sensor batches refused as malformed or oversized.
    pub batches_rejected: Counter,
    /// Sensor streams refused (no certificate, wrong node).
    pub sensor_rejected: Counter,
    /// Sensor streams whose stored acknowledged mark was beyond the sensor's own last
    /// sequence (acknowledged only up to the sensor's).
    pub sensor_acked_beyond_last: Counter,
    /// API calls denied.
    pub api_denied: Counter,
    /// Sensors connected now.
    pub sensors_connected: Gauge,
    /// Events each sensor last reported as dropped on its side (spool or queue full); set with
    /// each health report and forgotten with its node ([`SensorReports::forget_older`]).
    pub sensor_reported_drops: Family<NodeLabel, Gauge>,
    /// SIEM subscribers connected now.
    pub subscribers: Gauge,
    /// Records sent to subscribers.
    pub records_streamed: Counter,
    /// Incident changes written (opened, grown, acted on).
    pub incident_changes: Counter,
    /// Records removed from the log by retention.
    pub retention_removed: Counter,
    /// Stored deviations removed by retention.
    pub retention_deviations_removed: Counter,
    /// Event IDs forgotten by retention (idempotency index generations dropped).
    pub retention_event_ids_removed: Counter,
    /// Audit entries removed by audit retention (`--audit-retention-age`, `-bytes`).
    pub retention_audit_removed: Counter,
    /// Closed incidents removed by retention (`--incident-retention-age`,
    /// `--max-closed-incidents`).
    pub retention_incidents_removed: Counter,
    /// Records of long-silent sensors removed by retention (`--sensor-retention-age`).
    pub retention_sensors_removed: Counter,
    /// Records sent to subscribers that were read from sled because the subscriber was
    /// behind the shared tail (the rest came from memory).
    pub records_streamed_from_storage: Counter,
    /// Latency histograms.
    pub timings: Timings,
    /// Gauges of stored state.
    pub state: StateGauges,
    /// Placement checks of sensor reports against the Kubernetes API (`--kube on`).
    pub placement: PlacementMetrics,
}

/// Placement checks ([`crate::placement`]).
#[derive(Debug, Clone, Default)]
pub struct PlacementMetrics {
    /// Pods remembered (live, and deleted ones kept for late events).
    pub pods_known: Gauge,
    /// New pods not remembered because the memory was full.
    pub pods_ignored: Counter,
    /// Pod watch errors (each followed by a retry).
    pub watch_errors: Counter,
    /// Events whose pod agreed with the API.
    pub verified: Counter,
    /// Events whose pod (or its images) the server did not know in time: kept without their
    /// image digest.
    pub unverified: Counter,
    /// Events refused: their pod is another node's, another workload's, or runs another image.
    pub refused: Counter,
}

impl Metrics {
    /// Registers every metric under the `procguard_server` prefix.
    pub fn register(&self) -> Registry {
        let mut r = Registry::with_prefix("procguard_server");
        r.register(
            "events_ingested",
            "Sensor events stored",
            self.events_ingested.clone(),
        );
        r.register(
            "executions_ingested",
            "Executions the stored sensor events stand for (a summary event stands for several)",
            self.executions_ingested.clone(),
        );
        r.register(
            "events_duplicate",
            "Replayed sensor events skipped by event ID",
            self.events_duplicate.clone(),
        );
        r.register("deviations", "Deviations stored", self.deviations.clone());
        r.register(
            "events_unattributed",
            "Sensor events stored under a pod UID only (pod metadata late); not learned, awaiting their workload identity",
            self.events_unattributed.clone(),
        );
        r.register(
            "events_partial",
            "Partial sensor events stored (a field the sensor could not read); coverage, never an incident",
            self.events_partial.clone(),
        );
        r.register(
            "execs_unread",
            "Execs whose applet or script could not be read while all that was read is allowed; counted as coverage in their baseline",
            self.execs_unread.clone(),
        );
        r.register(
            "batches_rejected",
            "Sensor batches refused as malformed or oversized",
            self.batches_rejected.clone(),
        );
        r.register(
            "sensor_streams_rejected",
            "Sensor streams refused (certificate or node mismatch)",
            self.sensor_rejected.clone(),
        );
        r.register(
            "sensor_acked_beyond_last",
            "Sensor streams whose stored acknowledged mark was beyond the sensor's own last sequence (acknowledged only up to the sensor's)",
            self.sensor_acked_beyond_last.clone(),
        );
        r.register(
            "api_denied",
            "API calls denied (unauthenticated or wrong role)",
            self.api_denied.clone(),
        );
        for (name, help, c) in [
            (
                "reports_verified",
                "Sensor events whose pod agreed with the Kubernetes API (--kube on)",
                &self.placement.verified,
            ),
            (
                "reports_unverified",
                "Sensor events whose pod the server did not know in time: kept without their image digest",
                &self.placement.unverified,
            ),
            (
                "reports_refused",
                "Sensor events refused: another node's pod, another workload's, or an image the pod does not run",
                &self.placement.refused,
            ),
            (
                "placement_pods_ignored",
                "New pods not remembered for placement checks: memory full",
                &self.placement.pods_ignored,
            ),
            (
                "placement_watch_errors",
                "Pod watch errors of the placement check, each followed by a retry",
                &self.placement.watch_errors,
            ),
        ] {
            r.register(name, help, c.clone());
        }
        r.register(
            "placement_pods_known",
            "Pods remembered for placement checks (live, and deleted ones kept for late events)",
            self.placement.pods_known.clone(),
        );
        r.register(
            "retention_audit_removed",
            "Audit entries removed by audit retention (--audit-retention-age, --audit-retention-bytes)",
            self.retention_audit_removed.clone(),
        );
        r.register(
            "retention_incidents_removed",
            "Closed incidents removed by retention (--incident-retention-age, --max-closed-incidents)",
            self.retention_incidents_removed.clone(),
        );
        r.register(
            "retention_sensors_removed",
            "Records of sensors silent for --sensor-retention-age removed by retention",
            self.retention_sensors_removed.clone(),
        );
        r.register(
            "sensors_connected",
            "Sensor streams open now",
            self.sensors_connected.clone(),
        );
        r.register(
            "sensor_reported_drops",
            "Events a sensor last reported as dropped on its side, by node",
            self.sensor_reported_drops.clone(),
        );
        r.register(
            "subscribers",
            "SIEM subscription streams open now",
            self.subscribers.clone(),
        );
        r.register(
            "records_streamed",
            "Records sent to SIEM subscribers",
            self.records_streamed.clone(),
        );
        r.register(
            "incident_changes",
            "Incident changes written (opened, grown, or acted on)",
            self.incident_changes.clone(),
        );
        r.register(
            "retention_removed",
            "Records removed from the record log by retention",
            self.retention_removed.clone(),
        );
        r.register(
            "retention_deviations_removed",
            "Stored deviations removed by retention (with their log records)",
            self.retention_deviations_removed.clone(),
        );
        r.register(
            "retention_event_ids_removed",
            "Event IDs forgotten by retention (the idempotency index's oldest generation)",
            self.retention_event_ids_removed.clone(),
        );
        r.register(
            "records_streamed_from_storage",
            "Records read from sled for subscribers behind the shared in-memory tail",
            self.records_streamed_from_storage.clone(),
        );
        r.register(
            "api_call_duration_seconds",
            "API calls from authentication to the audit of their outcome (denied calls until refused; streams until set up), by method and gRPC code",
            self.timings.api_call.clone(),
        );
        r.register(
            "deviation_delay_seconds",
            "From a deviation's observed_at on the sensor to its durable storage on the server; a sensor clock ahead of the server's counts as 0",
            self.timings.deviation_delay.clone(),
        );
        r.register(
            "ingest_commit_duration_seconds",
            "A sensor batch's ingest, from its commit to the flush that makes it durable",
            self.timings.ingest_commit.clone(),
        );
        r.register(
            "incidents_open",
            "Incidents not closed (open or acknowledged), by severity and kind; recomputed every few seconds",
            self.state.incidents_open.clone(),
        );
        r.register(
            "baselines",
            "Baselines by state; recomputed every few seconds",
            self.state.baselines.clone(),
        );
        r.register(
            "sensor_last_report_timestamp_seconds",
            "When each sensor last sent a health report (Unix time), by node; a node silent for a day is dropped",
            self.state.sensor_reports.family.clone(),
        );
        r.register(
            "subscriber_lag_records",
            "Records between the log head and the SIEM subscription furthest behind (0 without subscribers)",
            self.state.subscriber_lag.clone(),
        );
        r.register(
            "database_bytes",
            "Size of the database on disk",
            self.state.database_bytes.clone(),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sensor_clock_ahead_of_the_servers_counts_as_no_delay() {
        let t = Timings::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        t.deviation_stored(now + Duration::from_secs(5), now);
        t.deviation_stored(now - Duration::from_secs(2), now);
        let mut out = String::new();
        let mut r = Registry::default();
        r.register("d", "", t.deviation_delay.clone());
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(out.contains("d_sum 2.0\n"), "{out}");
        assert!(out.contains("d_count 2\n"), "{out}");
    }

    #[test]
    fn nodes_silent_past_the_limit_are_forgotten_and_others_kept() {
        let r = SensorReports::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        r.report("old", t0);
        r.report("new", t0 + Duration::from_secs(3_600));
        let later = t0 + SENSOR_FORGET_AFTER + Duration::from_secs(1);
        assert_eq!(
            r.forget_older(later, SENSOR_FORGET_AFTER),
            [NodeLabel { node: "old".into() }]
        );
        let mut out = String::new();
        let mut reg = Registry::default();
        reg.register("last", "", r.family.clone());
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("node=\"new\""), "{out}");
        assert!(!out.contains("node=\"old\""), "{out}");
    }

    #[test]
    fn lag_is_the_furthest_subscriber_behind_and_ended_streams_are_forgotten() {
        let p = SubscriberPositions::default();
        assert_eq!(p.max_lag(10), 0);
        let a = p.track(3);
        let b = p.track(8);
        assert_eq!(p.max_lag(10), 7);
        a.store(9, Ordering::Relaxed);
        assert_eq!(p.max_lag(10), 2);
        drop(b);
        assert_eq!(p.max_lag(10), 1);
        drop(a);
        assert_eq!(p.max_lag(10), 0);
        assert!(p.streams.lock().unwrap().is_empty());
    }
}
