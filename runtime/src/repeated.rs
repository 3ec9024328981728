//! Warnings that can repeat as fast as their cause does (a server that stays down, a disk that
//! stays full, a flood of refused streams): logged at once the first time, then at most once
//! per interval with how many were held back, so a log shows every episode without a line per
//! occurrence. The occurrences themselves are counted in metrics by their callers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of repeated warning. `const`, so a call site can keep it in a `static`.
#[derive(Debug)]
pub struct Repeated {
    every: Duration,
    /// When a line was last let through, and the occurrences held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Repeated {
    /// A warning logged at most once per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Whether to log this occurrence now: `Some(held_back)` (the occurrences not logged since
    /// the last line, to log with it), or `None` to count it and stay quiet.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// [`Repeated::admit`] at `now`.
    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let held = std::mem::take(&mut s.1);
                s.0 = Some(now);
                Some(held)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_is_logged_then_one_line_per_interval_with_the_count() {
        let r = Repeated::new(Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(r.admit_at(t), Some(0));
        for s in 1..=5 {
            assert_eq!(r.admit_at(t + Duration::from_secs(s)), None);
        }
        assert_eq!(r.admit_at(t + Duration::from_secs(60)), Some(5));
        assert_eq!(r.admit_at(t + Duration::from_secs(61)), None);
        // After a quiet spell, the next episode is logged at once.
        assert_eq!(r.admit_at(t + Duration::from_secs(600)), Some(1));
    }
}
