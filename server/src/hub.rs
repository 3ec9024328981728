//! The push hub: fan-out of changed baselines to every connected sensor stream.
//!
//! A broadcast channel of [`HUB_BUFFER`] changes. A stream that falls that far behind is told
//! it lagged and sends its sensor a full snapshot instead, so no sensor misses an update and
//! no slow sensor holds the others back.

use procguard_core::Baseline;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Baseline changes buffered in the hub for slow streams; past it a stream resyncs with a
/// full snapshot.
pub const HUB_BUFFER: usize = 1_024;

/// Fan-out of baseline changes to connected sensors.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: broadcast::Sender<Baseline>,
    /// Changes announced so far: what a connecting sensor's snapshot was built from is still
    /// current while this has not moved.
    generation: Arc<AtomicU64>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(HUB_BUFFER).0,
            generation: Arc::default(),
        }
    }
}

impl Hub {
    /// Announces a changed baseline. Having no sensor connected is not an error.
    pub fn publish(&self, b: Baseline) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let _ = self.tx.send(b);
    }

    /// Changes announced so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A receiver for one stream.
    pub fn subscribe(&self) -> broadcast::Receiver<Baseline> {
        self.tx.subscribe()
    }
}
