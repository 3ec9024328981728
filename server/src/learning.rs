//! The learning timer: every [`LEARNING_TICK`], ends learning for the baselines whose evidence
//! says so (`procguard_core::Baseline::evaluate_learning`, through the storage) and pushes
//! each one that changed to the sensors; once a day it drops activity older than the longest
//! dry-run window. Ends with the shutdown token.

use crate::hub::Hub;
use crate::store::{day_of, SharedStorage, MAX_DRY_RUN_DAYS};
use procguard_core::policy::Policies;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often learning windows are evaluated.
pub const LEARNING_TICK: Duration = Duration::from_secs(5);

/// Runs the timer until `shutdown` is cancelled.
pub async fn run(store: SharedStorage, hub: Hub, policies: Policies, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(LEARNING_TICK);
    let mut pruned_day = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                // Once a day, drop activity older than the longest dry-run window.
                let today = day_of(SystemTime::now());
                if today != pruned_day {
                    pruned_day = today;
                    match store.prune_activity(today.saturating_sub(MAX_DRY_RUN_DAYS)) {
                        Ok(n) if n > 0 => tracing::info!(message = "Pruned old activity.", records = n),
                        Ok(_) => {}
                        Err(e) => tracing::error!(message = "Activity pruning failed.", error = %e),
                    }
                }
                match store.evaluate_learning(&policies, SystemTime::now()).await {
                    Ok(changed) => {
                        for b in changed {
                            tracing::info!(message = "Learning ended.", workload = %b.workload, state = b.state.as_str(), reason = b.learning.end_reason.as_deref().unwrap_or(""));
                            hub.publish(b);
                        }
                    }
                    Err(e) => tracing::error!(message = "Learning evaluation failed.", error = %e),
                }
            }
        }
    }
}
