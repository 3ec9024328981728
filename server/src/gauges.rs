//! Keeps the gauges of stored state current ([`crate::metrics::StateGauges`]) without
//! touching the database on a scrape.
//!
//! Every [`TICK`] the cheap ones are set: the lag of the SIEM subscriber furthest behind
//! (from the positions the streams publish), the database size (sled's file and blob
//! directory sizes), and the forgetting of nodes silent for [`SENSOR_FORGET_AFTER`] (their
//! last-report and reported-drops series). The
//! per-node last-report timestamp itself is set where the report arrives
//! ([`crate::grpc::sensor`]).
//!
//! Open incidents by severity and kind, and baselines by state, are recounted from the store
//! on a bounded timer rather than updated where they change: incidents and baselines change
//! on many paths (ingest, people's actions, learning windows, imports, silent sensors,
//! retention), and a count kept beside each of them would drift the first time one path was
//! missed, while a recount is right by construction. The recount is a read of the two trees,
//! outside the writer lock, at most once per [`TICK`] and only when the record log moved
//! since the last one (every incident change and every API call that changes a baseline
//! appends a record), and at least once per [`RECOUNT_AT_LEAST`] for the changes that append
//! none (a learning window ending).

use crate::metrics::{IncidentLabels, Metrics, StateLabel, SENSOR_FORGET_AFTER};
use crate::store::{BaselineFilter, Order, SharedStorage, Storage};
use procguard_core::baseline::BaselineState;
use procguard_core::incident::{IncidentFilter, IncidentKind, Severity};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often the gauges are looked at: a scrape (15–60 s apart) sees values at most this old.
pub const TICK: Duration = Duration::from_secs(5);
/// Longest time between two recounts when the log does not move.
pub const RECOUNT_AT_LEAST: Duration = Duration::from_secs(60);
/// Page size of a recount: bounds the memory one page of incidents or baselines takes.
const PAGE: usize = 500;

const SEVERITIES: [Severity; 4] = [
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Critical,
];
const KINDS: [IncidentKind; 4] = [
    IncidentKind::Deviation,
    IncidentKind::SensorBlind,
    IncidentKind::ExecSession,
    IncidentKind::DeviationOverflow,
];
const STATES: [BaselineState; 3] = [
    BaselineState::Learning,
    BaselineState::PendingReview,
    BaselineState::Enforced,
];

/// Not-closed incidents by (severity, kind) and baselines by state, every combination present
/// (0 when there are none) so that a query sees a series drop to 0 rather than vanish.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    incidents: HashMap<(Severity, IncidentKind), i64>,
    baselines: HashMap<BaselineState, i64>,
}

fn count(store: &dyn Storage) -> crate::store::Result<Counts> {
    let mut c = Counts::default();
    let mut after = None;
    loop {
        let (page, next) =
            store.incidents(&IncidentFilter::default(), after, PAGE, Order::OldestFirst)?;
        for i in page.iter().filter(|i| i.state.is_active()) {
            *c.incidents.entry((i.severity, i.kind)).or_default() += 1;
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut after: Option<String> = None;
    loop {
        let (page, next) = store.baselines(&BaselineFilter::default(), after.as_deref(), PAGE)?;
        for b in &page {
            *c.baselines.entry(b.state).or_default() += 1;
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok(c)
}

fn publish(metrics: &Metrics, c: &Counts) {
    for severity in SEVERITIES {
        for kind in KINDS {
            let labels = IncidentLabels {
                severity: severity.as_str().to_string(),
                kind: IncidentKind::as_str(kind).to_string(),
            };
            let n = c.incidents.get(&(severity, kind)).copied().unwrap_or(0);
            metrics.state.incidents_open.get_or_create(&labels).set(n);
        }
    }
    for state in STATES {
        let labels = StateLabel {
            state: state.as_str().to_string(),
        };
        let n = c.baselines.get(&state).copied().unwrap_or(0);
        metrics.state.baselines.get_or_create(&labels).set(n);
    }
}

/// Runs until `shutdown` is cancelled; the first look is at once.
pub async fn run(store: SharedStorage, metrics: Metrics, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut durable = store.durable_cursor();
    let mut last_recount: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let head = *durable.borrow();
        let state = &metrics.state;
        state
            .subscriber_lag
            .set(state.subscriber_positions.max_lag(head) as i64);
        match store.database_bytes() {
            Ok(b) => {
                state.database_bytes.set(b as i64);
            }
            Err(e) => {
                tracing::debug!(message = "Reading the database size failed.", error = %e)
            }
        }
        let forgotten = state
            .sensor_reports
            .forget_older(SystemTime::now(), SENSOR_FORGET_AFTER);
        for node in &forgotten {
            // Set with the same health reports: it goes with them.
            metrics.sensor_reported_drops.remove(node);
        }
        let moved = durable.has_changed().unwrap_or(false);
        if moved || last_recount.is_none_or(|t| t.elapsed() >= RECOUNT_AT_LEAST) {
            durable.borrow_and_update();
            let store = store.clone();
            // The recount reads sled synchronously; it runs off the async workers.
            match tokio::task::spawn_blocking(move || count(store.as_ref())).await {
                Ok(Ok(c)) => publish(&metrics, &c),
                Ok(Err(e)) => {
                    tracing::error!(message = "Counting incidents and baselines failed.", error = %e)
                }
                Err(e) => {
                    tracing::error!(message = "Counting incidents and baselines failed.", error = %e)
                }
            }
            last_recount = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_is_published_and_absent_ones_are_zero() {
        let metrics = Metrics::default();
        let mut c = Counts::default();
        c.incidents
            .insert((Severity::High, IncidentKind::SensorBlind), 2);
        c.baselines.insert(BaselineState::Enforced, 3);
        publish(&metrics, &c);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &metrics.register()).unwrap();
        assert_eq!(
            out.lines()
                .filter(|l| l.starts_with("procguard_server_incidents_open{"))
                .count(),
            SEVERITIES.len() * KINDS.len()
        );
        assert!(out.contains(
            "procguard_server_incidents_open{severity=\"high\",kind=\"sensor-blind\"} 2\n"
        ));
        assert!(out
            .contains("procguard_server_incidents_open{severity=\"low\",kind=\"deviation\"} 0\n"));
        assert!(out.contains("procguard_server_baselines{state=\"enforced\"} 3\n"));
        assert!(out.contains("procguard_server_baselines{state=\"learning\"} 0\n"));
    }
}
