//! Warnings that can repeat as fast as their cause does (a server that stays down, a disk that
//! stays full, a flood of refused streams): logged at once the first time, then at most once
//! per interval with how many were held back, so a log shows every episode without a line per
//! occurrence. The occurrences themselves are counted in metrics by their callers.

use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A warning's cause changing within an interval (a server first down, then refusing the
/// sensor's certificate) is news: up to this many such lines are let through per interval
/// besides the first, so a cause that flaps between a few reasons cannot flood the log.
pub const MORE_REASONS_PER_INTERVAL: u32 = 3;

/// One kind of repeated warning. `const`, so a call site can keep it in a `static`.
#[derive(Debug)]
pub struct Repeated {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the interval's first line was let through.
    since: Option<Instant>,
    /// Occurrences held back since the last line.
    held: u64,
    /// The reason of the last line let through ([`Repeated::admit_reason`]).
    reason: Option<u64>,
    /// Lines let through in this interval for a changed reason.
    more: u32,
}

impl Repeated {
    /// A warning logged at most once per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new(State {
                since: None,
                held: 0,
                reason: None,
                more: 0,
            }),
        }
    }

    /// Whether to log this occurrence now: `Some(held_back)` (the occurrences not logged since
    /// the last line, to log with it), or `None` to count it and stay quiet.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(None, Instant::now())
    }

    /// [`Repeated::admit`] for an occurrence with a `reason`: an occurrence whose reason
    /// differs from the last line's is also let through within the interval, up to
    /// [`MORE_REASONS_PER_INTERVAL`] times. The reason should leave out what changes at every
    /// occurrence (counts, addresses of the moment), or every occurrence reads as news.
    pub fn admit_reason(&self, reason: impl Hash) -> Option<u64> {
        let mut h = std::hash::DefaultHasher::new();
        reason.hash(&mut h);
        self.admit_at(Some(h.finish()), Instant::now())
    }

    /// [`Repeated::admit`] at `now`, for an occurrence with or without a reason.
    pub fn admit_at(&self, reason: Option<u64>, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let in_interval = s
            .since
            .is_some_and(|since| now.saturating_duration_since(since) < self.every);
        if in_interval {
            let news = reason.is_some() && reason != s.reason;
            if !news || s.more >= MORE_REASONS_PER_INTERVAL {
                s.held += 1;
                return None;
            }
            s.more += 1;
        } else {
            s.since = Some(now);
            s.more = 0;
        }
        s.reason = reason;
        Some(std::mem::take(&mut s.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_is_logged_then_one_line_per_interval_with_the_count() {
        let r = Repeated::new(Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(r.admit_at(None, t), Some(0));
        for s in 1..=5 {
            assert_eq!(r.admit_at(None, t + Duration::from_secs(s)), None);
        }
        assert_eq!(r.admit_at(None, t + Duration::from_secs(60)), Some(5));
        assert_eq!(r.admit_at(None, t + Duration::from_secs(61)), None);
        // After a quiet spell, the next episode is logged at once.
        assert_eq!(r.admit_at(None, t + Duration::from_secs(600)), Some(1));
    }

    #[test]
    fn a_changed_reason_is_logged_within_the_interval_but_a_flapping_one_is_bounded() {
        let r = Repeated::new(Duration::from_secs(60));
        let t = Instant::now();
        let at = |s| t + Duration::from_secs(s);
        let (down, refused, expired) = (Some(1), Some(2), Some(3));
        assert_eq!(r.admit_at(down, at(0)), Some(0));
        assert_eq!(r.admit_at(down, at(1)), None, "the same reason waits");
        assert_eq!(r.admit_at(refused, at(2)), Some(1), "a new reason is news");
        assert_eq!(r.admit_at(refused, at(3)), None);
        assert_eq!(r.admit_at(down, at(4)), Some(1));
        assert_eq!(r.admit_at(expired, at(5)), Some(0));
        // MORE_REASONS_PER_INTERVAL used: a reason flapping within the interval is counted.
        for s in 6..=20 {
            let reason = if s % 2 == 0 { down } else { refused };
            assert_eq!(r.admit_at(reason, at(s)), None, "{s}");
        }
        // The next interval starts with one line carrying every held occurrence.
        assert_eq!(r.admit_at(down, at(60)), Some(15));
        assert_eq!(r.admit_at(refused, at(61)), Some(0));
    }
}
