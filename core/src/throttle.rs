//! Rate limiting for log lines on hot paths.
//!
//! A flood of bad messages must be counted in full but logged sparingly. A [`LogThrottle`]
//! lets one line through per period and reports how many were suppressed since the last one.
//! The caller passes the current instant, so the type stays pure and testable.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one event through per period.
#[derive(Debug)]
pub struct LogThrottle {
    period: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// One event per `period`.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            state: Mutex::new(ThrottleState::default()),
        }
    }

    /// `Some(suppressed)` when this event may be logged, with the number of events suppressed
    /// since the previous one; `None` when it must be dropped.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = state
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.period);
        if due {
            state.last = Some(now);
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_period_with_the_suppressed_count() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.allow(start), Some(0));
        assert_eq!(throttle.allow(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.allow(start + Duration::from_secs(2)), None);
        assert_eq!(throttle.allow(start + Duration::from_secs(10)), Some(2));
    }
}
