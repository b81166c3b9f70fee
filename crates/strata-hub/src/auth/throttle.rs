//! Login throttling: password guessing gets slower the more it fails.
//!
//! Each user name has a count of wrong passwords in a row. Once it reaches
//! the free attempts, the name must wait before the next try: one second,
//! then twice as long after each further failure, up to a ceiling. A try
//! made while waiting is refused without checking the password, so it costs
//! neither an argon2 hash nor a guess. A right password clears the count.
//!
//! Names that do not exist are counted the same way, so the throttle tells
//! nobody which names are real. The table keeps at most [`MAX_TRACKED`]
//! names; when it is full, names whose wait ended long ago go first, then
//! the one that failed least recently.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Names tracked at most (a spray of random names cannot grow memory).
pub const MAX_TRACKED: usize = 10_000;

/// Wrong passwords in a row, per user name.
pub struct LoginThrottle {
    free_attempts: u32,
    max_wait: Duration,
    names: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// No attempt before this.
    until: Instant,
}

impl LoginThrottle {
    /// `free_attempts` wrong passwords in a row before the first wait
    /// (at least 1); waits double up to `max_wait`.
    pub fn new(free_attempts: u32, max_wait: Duration) -> LoginThrottle {
        LoginThrottle {
            free_attempts: free_attempts.max(1),
            max_wait,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` when `name` may not try again for `wait`.
    pub fn check(&self, name: &str, now: Instant) -> Result<(), Duration> {
        match self.lock().get(name) {
            Some(f) if f.until > now => Err(f.until - now),
            _ => Ok(()),
        }
    }

    /// Counts a wrong password for `name`; returns the wait it now has.
    pub fn failed(&self, name: &str, now: Instant) -> Duration {
        let mut names = self.lock();
        if !names.contains_key(name) && names.len() >= MAX_TRACKED {
            self.make_room(&mut names, now);
        }
        let f = names.entry(name.to_owned()).or_insert(Failures {
            count: 0,
            last: now,
            until: now,
        });
        f.count = f.count.saturating_add(1);
        f.last = now;
        let wait = self.wait_after(f.count);
        f.until = now + wait;
        wait
    }

    /// Clears `name`'s count after a right password.
    pub fn succeeded(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The wait after `count` wrong passwords in a row.
    fn wait_after(&self, count: u32) -> Duration {
        if count < self.free_attempts {
            return Duration::ZERO;
        }
        let doublings = (count - self.free_attempts).min(32);
        Duration::from_secs(1u64 << doublings).min(self.max_wait)
    }

    /// Forgets names whose wait ended over `max_wait` ago; if none did,
    /// the one that failed least recently.
    fn make_room(&self, names: &mut HashMap<String, Failures>, now: Instant) {
        names.retain(|_, f| f.until + self.max_wait > now);
        if names.len() >= MAX_TRACKED {
            let oldest = names
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(n, _)| n.clone());
            if let Some(n) = oldest {
                names.remove(&n);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn waits_start_after_the_free_attempts_and_double_to_the_ceiling() {
        let t = LoginThrottle::new(3, Duration::from_secs(10));
        let now = Instant::now();
        let waits: Vec<u64> = (0..8)
            .map(|i| t.failed("olga", now + 20 * S * i).as_secs())
            .collect();
        assert_eq!(waits, [0, 0, 1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn a_waiting_name_is_refused_until_its_wait_ends() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        t.failed("olga", now);
        assert_eq!(t.check("olga", now), Ok(()));
        assert_eq!(t.failed("olga", now), S);
        assert_eq!(t.check("olga", now), Err(S));
        assert_eq!(t.check("olga", now + S / 2), Err(S / 2));
        assert_eq!(t.check("olga", now + S), Ok(()));
        // Other names are not held up.
        assert_eq!(t.check("piet", now), Ok(()));
        // The next failure waits twice as long.
        assert_eq!(t.failed("olga", now + S), 2 * S);
    }

    #[test]
    fn a_right_password_clears_the_count() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        t.failed("olga", now);
        t.succeeded("olga");
        assert_eq!(t.failed("olga", now), Duration::ZERO);
    }

    #[test]
    fn a_spray_of_names_keeps_the_table_bounded_and_the_newest_counts() {
        let t = LoginThrottle::new(1, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..MAX_TRACKED + 10 {
            t.failed(&format!("name-{i}"), now + Duration::from_millis(i as u64));
        }
        assert_eq!(t.lock().len(), MAX_TRACKED);
        let last = format!("name-{}", MAX_TRACKED + 9);
        assert!(t.check(&last, now + Duration::from_secs(11)).is_err());
        // Names that waited out their time long ago go first.
        t.failed("late", now + Duration::from_secs(3600));
        assert_eq!(t.lock().len(), 1);
    }
}
