//! Warnings that repeat for as long as a condition lasts (a full outbox
//! through a day-long outage, a nearly full disk) are logged at most once a
//! minute, with how many were held back meanwhile, so that a gateway's logs
//! do not fill its disk. Counters keep the exact numbers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a throttled warning is logged.
pub const PERIOD: Duration = Duration::from_secs(60);

/// One warning's throttle.
#[derive(Debug, Default)]
pub struct Throttle {
    /// When it was last let through, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// Whether to log now; if so, how many were held back since the last
    /// one logged.
    pub fn pass(&self) -> Option<u64> {
        self.pass_at(Instant::now())
    }

    fn pass_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held_back) = &mut *state;
        match last {
            Some(t) if now.saturating_duration_since(*t) < PERIOD => {
                *held_back += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_a_period_with_the_count_held_back() {
        let t = Throttle::default();
        let start = Instant::now();
        assert_eq!(t.pass_at(start), Some(0));
        assert_eq!(t.pass_at(start + Duration::from_secs(1)), None);
        assert_eq!(t.pass_at(start + PERIOD - Duration::from_millis(1)), None);
        assert_eq!(t.pass_at(start + PERIOD), Some(2));
        assert_eq!(t.pass_at(start + PERIOD), None);
        assert_eq!(t.pass_at(start + 3 * PERIOD), Some(1));
    }
}
