//! The event-ID index (ingest idempotency), kept in two generations so that retention can
//! forget old IDs without a per-ID expiry index on the ingest path.
//!
//! Event IDs are random (UUIDs), so a tree keyed by them has no age order to trim from.
//! Instead the index is a *current* generation, where ingest inserts, and a frozen *previous*
//! one; a lookup checks both. Retention rotates when the current generation is older than the
//! retention age or holds more than half the retention size: the previous generation is
//! dropped whole (`Db::drop_tree`, no per-key deletes), the current one becomes the previous
//! one, and a new, empty generation starts. Hence an event ID is remembered for at least the
//! retention age (unless size forces earlier rotations, which are logged), and the index
//! holds at most about the retention size.
//!
//! Trees: generation 0 is the tree `event_ids` (the name before generations existed, so old
//! databases keep their index), generation `n` is `event_ids.n`. `meta` keys:
//! `event_ids_gen` (big-endian current generation) and `event_ids_started` (big-endian seconds
//! since the epoch when it started). Rotation writes `meta` before anything is inserted into
//! the new tree, so after a crash the recorded generation is never older than the tree
//! holding durable IDs; trees of other generations found at start are leftovers and dropped.

use super::{be, Result};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The name of generation `n`.
fn name(n: u64) -> String {
    if n == 0 {
        "event_ids".to_string()
    } else {
        format!("event_ids.{n}")
    }
}

/// The generation a tree name belongs to, if it is one.
fn generation_of(tree: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(tree).ok()?;
    if s == "event_ids" {
        return Some(0);
    }
    s.strip_prefix("event_ids.")?.parse().ok()
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

struct Generations {
    gen: u64,
    started: SystemTime,
    current: sled::Tree,
    /// IDs and key bytes in `current` (counted at start, then per commit).
    current_ids: u64,
    current_bytes: u64,
    previous: Option<sled::Tree>,
    previous_ids: u64,
}

/// The two generations. Cheap to clone.
#[derive(Clone)]
pub(super) struct EventIds {
    db: sled::Db,
    meta: sled::Tree,
    gens: Arc<RwLock<Generations>>,
}

/// What a rotation retired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Rotation {
    /// IDs forgotten (the previous generation's).
    pub removed: u64,
    /// Whether size, not age, forced the rotation.
    pub by_size: bool,
    /// The tree to drop, if there was a previous generation.
    pub drop: Option<String>,
}

impl EventIds {
    pub(super) fn open(db: &sled::Db, meta: &sled::Tree, now: SystemTime) -> Result<Self> {
        let gen = meta.get("event_ids_gen")?.map(|v| be(&v)).unwrap_or(0);
        let started = match meta.get("event_ids_started")? {
            Some(v) => UNIX_EPOCH + Duration::from_secs(be(&v)),
            None => {
                meta.insert("event_ids_started", &secs(now).to_be_bytes())?;
                now
            }
        };
        let mut previous = None;
        for t in db.tree_names() {
            match generation_of(&t) {
                Some(g) if g == gen => {}
                Some(g) if gen > 0 && g == gen - 1 => previous = Some(db.open_tree(&t)?),
                Some(g) => {
                    tracing::info!(
                        message = "Dropping a leftover event-ID generation.",
                        generation = g
                    );
                    db.drop_tree(&t)?;
                }
                None => {}
            }
        }
        let current = db.open_tree(name(gen))?;
        let (mut current_ids, mut current_bytes) = (0, 0);
        for k in current.iter().keys() {
            current_ids += 1;
            current_bytes += k?.len() as u64;
        }
        let previous_ids = previous.as_ref().map(|p| p.len() as u64).unwrap_or(0);
        Ok(Self {
            db: db.clone(),
            meta: meta.clone(),
            gens: Arc::new(RwLock::new(Generations {
                gen,
                started,
                current,
                current_ids,
                current_bytes,
                previous,
                previous_ids,
            })),
        })
    }

    /// The current generation (to insert into, inside the ingest transaction) and the
    /// previous one (frozen; read directly). Call under the store's writer lock, which
    /// rotation also takes, so both stay valid for the transaction.
    pub(super) fn trees(&self) -> (sled::Tree, Option<sled::Tree>) {
        let g = self.gens.read().expect("event-ID generations");
        (g.current.clone(), g.previous.clone())
    }

    /// Counts IDs a committed transaction inserted. Call under the writer lock.
    pub(super) fn added(&self, ids: u64, bytes: u64) {
        let mut g = self.gens.write().expect("event-ID generations");
        g.current_ids += ids;
        g.current_bytes += bytes;
    }

    /// IDs remembered now (both generations).
    pub(super) fn len(&self) -> u64 {
        let g = self.gens.read().expect("event-ID generations");
        g.current_ids + g.previous_ids
    }

    /// Starts a new generation if the current one is older than `max_age` or holds more than
    /// half of `max_bytes`. Call under the writer lock, then drop the retired tree with
    /// [`EventIds::drop_generation`] without it.
    pub(super) fn rotate_if_due(
        &self,
        max_age: Duration,
        max_bytes: u64,
        now: SystemTime,
    ) -> Result<Option<Rotation>> {
        let mut g = self.gens.write().expect("event-ID generations");
        let old = now.duration_since(g.started).unwrap_or_default() >= max_age;
        let big = g.current_bytes > max_bytes / 2;
        if !(old || big) {
            return Ok(None);
        }
        let next = g.gen + 1;
        // The new generation is recorded before anything is inserted into it.
        self.meta.insert("event_ids_gen", &next.to_be_bytes())?;
        self.meta
            .insert("event_ids_started", &secs(now).to_be_bytes())?;
        let fresh = self.db.open_tree(name(next))?;
        let drop = g.previous.is_some().then(|| name(g.gen - 1));
        let removed = g.previous_ids;
        let current = std::mem::replace(&mut g.current, fresh);
        g.previous = Some(current);
        g.previous_ids = g.current_ids;
        g.current_ids = 0;
        g.current_bytes = 0;
        g.gen = next;
        g.started = now;
        Ok(Some(Rotation {
            removed,
            by_size: big && !old,
            drop,
        }))
    }

    /// Drops a generation [`EventIds::rotate_if_due`] retired.
    pub(super) fn drop_generation(&self, name: &str) -> Result<()> {
        self.db.drop_tree(name)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names_round_trip() {
        for n in [0, 1, 42] {
            assert_eq!(generation_of(name(n).as_bytes()), Some(n));
        }
        assert_eq!(generation_of(b"event_idsx"), None);
        assert_eq!(generation_of(b"event_ids.x"), None);
        assert_eq!(generation_of(b"records"), None);
    }
}
