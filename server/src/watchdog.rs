//! Background duties of the record log: retention by age and size (the log, the deviations
//! under its cursors, and the event-ID index), and the "sensor blind" finding for sensors
//! that went silent.
//!
//! Both run on their own timers, outside any request, and take the store's writer lock only
//! for the short transactions they make: retention deletes in small batches without it, so
//! ingest never waits for a retention pass.

use crate::metrics::Metrics;
use crate::store::{Retention, SharedStorage};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Watchdog settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Retention limits.
    pub retention: Retention,
    /// Retention period.
    pub retention_interval: Duration,
    /// Silence that raises a sensor-blind incident.
    pub sensor_silence: Duration,
}

/// How often silence is checked: a quarter of the limit, between 1 s and 30 s, so a silent
/// sensor is flagged at most 25% late.
fn silence_tick(silence: Duration) -> Duration {
    (silence / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Runs until `shutdown` is cancelled.
pub async fn run(store: SharedStorage, metrics: Metrics, s: Settings, shutdown: CancellationToken) {
    let started = SystemTime::now();
    let mut retention = tokio::time::interval(s.retention_interval);
    let mut silence = tokio::time::interval(silence_tick(s.sensor_silence));
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    silence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = retention.tick() => match store.enforce_retention(s.retention, SystemTime::now()).await {
                Ok(o) => {
                    metrics.retention_removed.inc_by(o.removed);
                    metrics.retention_deviations_removed.inc_by(o.deviations_removed);
                    metrics.retention_event_ids_removed.inc_by(o.event_ids_removed);
                    metrics.retention_audit_removed.inc_by(o.audit_removed);
                    metrics.retention_incidents_removed.inc_by(o.incidents_removed);
                    metrics.retention_sensors_removed.inc_by(o.sensors_removed);
                    if o.incidents_removed > 0 || o.sensors_removed > 0 {
                        tracing::info!(message = "Retention removed closed incidents and records of long-silent sensors.", incidents = o.incidents_removed, sensors = o.sensors_removed);
                    }
                    if o.audit_removed > 0 {
                        tracing::info!(message = "Audit retention removed old entries.", removed = o.audit_removed);
                    }
                    if o.removed > 0 || o.deviations_removed > 0 {
                        tracing::info!(message = "Retention removed old records.", removed = o.removed, deviations = o.deviations_removed, oldest_available = o.floor + 1, bytes = store.log_bytes());
                    }
                    if o.event_ids_rotated {
                        tracing::info!(message = "Retention started a new event-ID generation.", forgotten = o.event_ids_removed, remembered = store.event_ids_remembered());
                    }
                }
                Err(e) => tracing::error!(message = "Retention failed.", error = %e),
            },
            _ = silence.tick() => match store.silent_sensors(s.sensor_silence, started, SystemTime::now()).await {
                Ok(found) => for i in found {
                    metrics.incident_changes.inc();
                    tracing::warn!(message = "Sensor blind.", node = %i.sensor_node, incident = %i.id, reason = %i.severity_reason);
                },
                Err(e) => tracing::error!(message = "Checking for silent sensors failed.", error = %e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::silence_tick;
    use std::time::Duration;

    #[test]
    fn silence_is_checked_often_enough_but_not_constantly() {
        for (limit, tick) in [(2, 1), (120, 30), (60, 15), (3600, 30)] {
            assert_eq!(
                silence_tick(Duration::from_secs(limit)),
                Duration::from_secs(tick),
                "{limit}"
            );
        }
    }
}
