//! Login throttling: password guessing gets slower the more it fails.
//!
//! Each user name has a count of attempts since its last right password
//! (the hub keeps a second table the same way for source addresses).
//! Once it reaches the free attempts, the name must wait before the next
//! try: one second, then twice as long after each further one, up to a
//! ceiling. A try made while waiting is refused without checking the
//! password, so it costs neither an argon2 hash nor a guess. A right
//! password clears a name's count; an address's it only takes its own
//! attempt back from, so a sprayer cannot wipe its guesses by logging in
//! to an account of its own now and then. An address's count instead
//! fades, one attempt per [`ADDRESS_FADE`] without one, so that the typos
//! of an office behind one address do not add up to a lockout.
//!
//! An attempt is counted when it starts, before its password is checked, so
//! guesses sent all at once are held to the free attempts as well: the
//! check and the count are one step under the table's lock. A wrong
//! password then starts the wait again from the moment it was refused.
//!
//! Names that do not exist are counted the same way, so the throttle tells
//! nobody which names are real. The table holds each name's SHA-256, not
//! the name (a request may send a name megabytes long), and keeps at most
//! [`MAX_TRACKED`] names; when it is full, names whose wait ended long ago
//! go first, then the one that failed least recently.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Names tracked at most (a spray of random names cannot grow memory).
pub const MAX_TRACKED: usize = 10_000;

/// How long an address's count takes to lose one attempt.
pub const ADDRESS_FADE: Duration = Duration::from_secs(60);

/// Attempts since the last right password, per user name.
pub struct LoginThrottle {
    free_attempts: u32,
    max_wait: Duration,
    /// One attempt forgotten per this much time without one (addresses).
    fade: Option<Duration>,
    names: Mutex<HashMap<Key, Failures>>,
}

/// A name's SHA-256.
type Key = [u8; 32];

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// No attempt before this.
    until: Instant,
    /// Attempts refused since the wait began.
    refused: u32,
}

/// An attempt refused: how long the name must still wait, and whether
/// this is the first attempt refused in that wait (the rest need no
/// audit entry each: a flood of them would fill the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Until the next attempt is considered.
    pub wait: Duration,
    /// The first attempt refused in this wait.
    pub first: bool,
}

impl LoginThrottle {
    /// `free_attempts` attempts without a right password before the first
    /// wait (at least 1); waits double up to `max_wait`.
    pub fn new(free_attempts: u32, max_wait: Duration) -> LoginThrottle {
        LoginThrottle {
            free_attempts: free_attempts.max(1),
            max_wait,
            fade: None,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// The same, for addresses: each key's count fades by one attempt per
    /// `fade` without one.
    pub fn fading(free_attempts: u32, max_wait: Duration, fade: Duration) -> LoginThrottle {
        LoginThrottle {
            fade: Some(fade),
            ..LoginThrottle::new(free_attempts, max_wait)
        }
    }

    /// Starts an attempt for `name`: refused when it may not try again
    /// yet (nothing is counted then); otherwise counts the attempt.
    pub fn begin(&self, name: &str, now: Instant) -> Result<(), Refused> {
        let key = crate::secret::hash(name.as_bytes());
        let mut names = self.lock();
        if let Some(f) = names.get_mut(&key)
            && f.until > now
        {
            f.refused = f.refused.saturating_add(1);
            return Err(Refused {
                wait: f.until - now,
                first: f.refused == 1,
            });
        }
        if names.len() >= MAX_TRACKED && !names.contains_key(&key) {
            self.make_room(&mut names, now);
        }
        let f = names.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            until: now,
            refused: 0,
        });
        if let Some(fade) = self.fade {
            let idle = now.saturating_duration_since(f.last).as_secs_f64();
            let faded = (idle / fade.as_secs_f64()) as u32;
            f.count = f.count.saturating_sub(faded);
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        f.until = now + self.wait_after(f.count);
        f.refused = 0;
        Ok(())
    }

    /// After a wrong password for `name`: its wait runs from `now`.
    pub fn failed(&self, name: &str, now: Instant) {
        if let Some(f) = self.lock().get_mut(&crate::secret::hash(name.as_bytes())) {
            f.until = f.until.max(now + self.wait_after(f.count));
        }
    }

    /// Clears `name`'s count after a right password.
    pub fn succeeded(&self, name: &str) {
        self.lock().remove(&crate::secret::hash(name.as_bytes()));
    }

    /// Takes back the attempt a right password counted for `name` (an
    /// address), keeping its other attempts' count.
    pub fn take_back(&self, name: &str) {
        let key = crate::secret::hash(name.as_bytes());
        let mut names = self.lock();
        let Some(f) = names.get_mut(&key) else { return };
        f.count = f.count.saturating_sub(1);
        if f.count == 0 {
            names.remove(&key);
        } else {
            f.until = f.until.min(f.last + self.wait_after(f.count));
        }
    }

    /// The wait after `count` attempts without a right password.
    fn wait_after(&self, count: u32) -> Duration {
        if count < self.free_attempts {
            return Duration::ZERO;
        }
        let doublings = (count - self.free_attempts).min(32);
        Duration::from_secs(1u64 << doublings).min(self.max_wait)
    }

    /// Forgets names whose wait ended over `max_wait` ago; if none did,
    /// the one that failed least recently.
    fn make_room(&self, names: &mut HashMap<Key, Failures>, now: Instant) {
        names.retain(|_, f| f.until + self.max_wait > now);
        if names.len() >= MAX_TRACKED {
            let oldest = names.iter().min_by_key(|(_, f)| f.last).map(|(n, _)| *n);
            if let Some(n) = oldest {
                names.remove(&n);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Failures>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// The wait `name` has right after an attempt at `at`.
    fn wait_after_attempt(t: &LoginThrottle, name: &str, at: Instant) -> u64 {
        t.begin(name, at).unwrap();
        (t.lock()[&crate::secret::hash(name.as_bytes())].until - at).as_secs()
    }

    #[test]
    fn waits_start_after_the_free_attempts_and_double_to_the_ceiling() {
        let t = LoginThrottle::new(3, Duration::from_secs(10));
        let now = Instant::now();
        let waits: Vec<u64> = (0..8)
            .map(|i| wait_after_attempt(&t, "olga", now + 20 * S * i))
            .collect();
        assert_eq!(waits, [0, 0, 1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn a_waiting_name_is_refused_until_its_wait_ends() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(t.begin("olga", now), Ok(()));
        assert_eq!(t.begin("olga", now), Ok(()));
        let refused = |wait, first| Err(Refused { wait, first });
        assert_eq!(t.begin("olga", now), refused(S, true));
        assert_eq!(t.begin("olga", now + S / 2), refused(S / 2, false));
        // Other names are not held up.
        assert_eq!(t.begin("piet", now), Ok(()));
        // Refused attempts are not counted: the next one waits twice as long.
        assert_eq!(t.begin("olga", now + S), Ok(()));
        assert_eq!(t.begin("olga", now + S), refused(2 * S, true));
    }

    #[test]
    fn a_wrong_password_starts_the_wait_from_its_refusal() {
        let t = LoginThrottle::new(1, Duration::from_secs(60));
        let now = Instant::now();
        t.begin("olga", now).unwrap();
        // The password check took half a second.
        t.failed("olga", now + S / 2);
        assert_eq!(t.begin("olga", now + S).map_err(|r| r.wait), Err(S / 2));
        assert_eq!(t.begin("olga", now + S + S / 2), Ok(()));
    }

    #[test]
    fn guesses_sent_at_once_get_only_the_free_attempts() {
        let t = std::sync::Arc::new(LoginThrottle::new(5, Duration::from_secs(60)));
        let now = Instant::now();
        let admitted: usize = (0..50)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || t.begin("olga", now).is_ok())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn a_right_password_clears_the_count() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        t.begin("olga", now).unwrap();
        t.succeeded("olga");
        assert_eq!(wait_after_attempt(&t, "olga", now), 0);
    }

    #[test]
    fn an_addresss_count_fades_with_time_without_attempts() {
        let t = LoginThrottle::fading(3, Duration::from_secs(900), ADDRESS_FADE);
        let now = Instant::now();
        for _ in 0..2 {
            t.begin("10.0.0.1", now).unwrap();
        }
        // Two minutes later two attempts are forgotten: the next is free.
        let later = now + 2 * ADDRESS_FADE;
        assert_eq!(wait_after_attempt(&t, "10.0.0.1", later), 0);
        assert_eq!(wait_after_attempt(&t, "10.0.0.1", later), 0);
        assert_eq!(wait_after_attempt(&t, "10.0.0.1", later), 1);
        // A name's count does not fade.
        let names = LoginThrottle::new(3, Duration::from_secs(900));
        for _ in 0..3 {
            names.begin("olga", now).unwrap();
        }
        assert_eq!(wait_after_attempt(&names, "olga", now + 3600 * S), 2);
    }

    #[test]
    fn taking_back_a_right_password_keeps_the_other_attempts() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        let now = Instant::now();
        t.begin("10.0.0.1", now).unwrap();
        t.begin("10.0.0.1", now).unwrap();
        // The third attempt, a right password, is taken back...
        t.begin("10.0.0.1", now).unwrap();
        t.take_back("10.0.0.1");
        // ... so the next is still free, and the one after waits.
        assert_eq!(wait_after_attempt(&t, "10.0.0.1", now), 1);
        t.take_back("unknown");
        t.begin("10.0.0.2", now).unwrap();
        t.take_back("10.0.0.2");
        assert!(t.lock().len() == 1);
    }

    #[test]
    fn a_spray_of_names_keeps_the_table_bounded_and_the_newest_counts() {
        let t = LoginThrottle::new(1, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..MAX_TRACKED + 10 {
            t.begin(&format!("name-{i}"), now + Duration::from_millis(i as u64))
                .unwrap();
        }
        assert_eq!(t.lock().len(), MAX_TRACKED);
        let last = format!("name-{}", MAX_TRACKED + 9);
        assert!(t.begin(&last, now + Duration::from_secs(11)).is_err());
        // Names that waited out their time long ago go first.
        t.begin("late", now + Duration::from_secs(3600)).unwrap();
        assert_eq!(t.lock().len(), 1);
    }
}
