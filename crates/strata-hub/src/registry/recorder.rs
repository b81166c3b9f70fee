//! Presence and last-seen times for a registry in another process's
//! database (PostgreSQL, shared by replicas), written from a thread of
//! their own.
//!
//! The storage writer hears of connects, disconnects and devices heard
//! from; with the registry in the data directory it writes them itself
//! (a local transaction). A database over the network may be slow or
//! unreachable, and the writer must not wait on it: telemetry keeps being
//! stored while the devices already known keep authenticating from the
//! cache. So here the writer only adds to what is pending, and this thread
//! writes it, in order, trying again every second while the database
//! refuses. Pending stays bounded: last-seen times merge per device, and
//! past [`MAX_PENDING_CHANGES`] the oldest presence changes are dropped,
//! counted in a warning (presence is advisory: the next connect or
//! disconnect sets it right).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use strata_proto::DeviceId;
use strata_store::RegistryStore;

/// The most presence changes kept while the database is unreachable.
pub const MAX_PENDING_CHANGES: usize = 100_000;

/// What is waiting to be written.
#[derive(Default)]
struct Pending {
    /// Presence changes, oldest first.
    presence: Vec<(DeviceId, bool, i64)>,
    /// The latest time each device was heard from.
    seen: HashMap<DeviceId, i64>,
    /// Presence changes dropped since the last warning.
    dropped: usize,
    /// The registry is gone: write what is left, then stop.
    closing: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.presence.is_empty() && self.seen.is_empty()
    }

    fn add_presence(&mut self, changes: &[(DeviceId, bool, i64)]) {
        self.presence.extend_from_slice(changes);
        let over = self.presence.len().saturating_sub(MAX_PENDING_CHANGES);
        if over > 0 {
            self.presence.drain(..over);
            self.dropped += over;
        }
    }

    fn add_seen(&mut self, seen: impl IntoIterator<Item = (DeviceId, i64)>) {
        for (id, ts) in seen {
            let t = self.seen.entry(id).or_insert(ts);
            *t = (*t).max(ts);
        }
    }
}

/// The handle the registry keeps; dropping it lets the thread finish.
pub struct Recorder {
    shared: Arc<(Mutex<Pending>, Condvar)>,
}

impl Recorder {
    /// Starts the thread writing to `store`.
    pub fn start(store: Arc<dyn RegistryStore>) -> Recorder {
        let shared = Arc::new((Mutex::new(Pending::default()), Condvar::new()));
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("strata-presence".into())
            .spawn(move || run(&*store, &theirs))
            .expect("spawn the presence recorder thread");
        Recorder { shared }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues presence changes (in order).
    pub fn presence(&self, changes: &[(DeviceId, bool, i64)]) {
        self.pending().add_presence(changes);
        self.shared.1.notify_one();
    }

    /// Queues last-seen times.
    pub fn seen(&self, seen: &[(DeviceId, i64)]) {
        self.pending().add_seen(seen.iter().cloned());
        self.shared.1.notify_one();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.pending().closing = true;
        self.shared.1.notify_one();
    }
}

fn run(store: &dyn RegistryStore, shared: &(Mutex<Pending>, Condvar)) {
    let (lock, wake) = shared;
    loop {
        let mut pending = lock.lock().unwrap_or_else(|e| e.into_inner());
        while pending.is_empty() && !pending.closing {
            pending = wake.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        if pending.dropped > 0 {
            tracing::warn!(
                dropped = pending.dropped,
                "the registry database was unreachable too long: dropped the oldest presence changes"
            );
            pending.dropped = 0;
        }
        let presence = std::mem::take(&mut pending.presence);
        let seen: Vec<(DeviceId, i64)> = pending.seen.drain().collect();
        let closing = pending.closing;
        drop(pending);
        if presence.is_empty() && seen.is_empty() {
            return;
        }
        let written = store
            .set_presence(&presence)
            .map_err(|e| (e, true))
            .and_then(|()| store.touch(&seen).map_err(|e| (e, false)));
        if let Err((e, presence_failed)) = written {
            tracing::warn!("cannot record presence and last-seen times (tried again in 1 s): {e}");
            if closing {
                return;
            }
            // Put it back ahead of what came meanwhile, and wait a little.
            let mut pending = lock.lock().unwrap_or_else(|e| e.into_inner());
            if presence_failed {
                let newer = std::mem::replace(&mut pending.presence, presence);
                pending.add_presence(&newer);
            }
            pending.add_seen(seen);
            drop(pending);
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str) -> DeviceId {
        DeviceId::new(id).unwrap()
    }

    #[test]
    fn pending_stays_bounded_and_keeps_the_newest() {
        let mut p = Pending::default();
        let changes: Vec<_> = (0..MAX_PENDING_CHANGES as i64 + 10)
            .map(|t| (dev("d1"), t % 2 == 0, t))
            .collect();
        p.add_presence(&changes);
        assert_eq!(p.presence.len(), MAX_PENDING_CHANGES);
        assert_eq!(p.dropped, 10);
        assert_eq!(p.presence[0].2, 10, "the oldest went");
        p.add_seen([(dev("d1"), 5), (dev("d2"), 7), (dev("d1"), 3)]);
        assert_eq!(p.seen[&dev("d1")], 5);
        assert_eq!(p.seen.len(), 2);
    }
}
