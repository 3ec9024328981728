//! Server counters, exposed on the admin port's `/metrics`. Every dropped, rejected or denied
//! thing has a counter so that an operator sees it without reading logs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

/// A sensor's node name as a label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// Node name.
    pub node: String,
}
use prometheus_client::registry::Registry;

/// The server's metrics. Cheap to clone (counters are shared).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Events stored.
    pub events_ingested: Counter,
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
    /// API calls denied.
    pub api_denied: Counter,
    /// Sensors connected now.
    pub sensors_connected: Gauge,
    /// Events each sensor last reported as dropped on its side (spool or queue full).
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
    /// Records sent to subscribers that were read from sled because the subscriber was
    /// behind the shared tail (the rest came from memory).
    pub records_streamed_from_storage: Counter,
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
            "api_denied",
            "API calls denied (unauthenticated or wrong role)",
            self.api_denied.clone(),
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
        r
    }
}
