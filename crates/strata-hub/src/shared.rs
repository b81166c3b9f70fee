//! Keeping a replica's caches current when the registry and accounts are
//! shared with other replicas (`[shared] postgres`): every `refresh_ms`,
//! [`Registry::refresh`] and [`Access::refresh`] read their store's change
//! count and reload what they cache only when it moved. Counted in
//! `/metrics`; a failed look keeps the caches as they were and is tried
//! again at the next tick. Both caches keep their count, and the turn
//! local changes and reloads take, in a [`Freshness`]. At the same tick
//! the replica publishes on its broker the desired twins changed since
//! its last look (by any replica), so a device connected here gets a
//! deployment or a signed update made through another replica
//! ([`Deployer::follow_changes`]), and the commands other replicas sent
//! ([`CommandRelay::follow`]).
//!
//! A duty that must run at one replica at a time (retraining, raising
//! `offline` alerts) goes by a [`Lease`]: the replica holding it performs
//! the duty, and another takes it when that one stops or loses the
//! database.

use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::auth::Access;
use crate::metrics::Metrics;
use crate::models::deploy::Deployer;
use crate::registry::Registry;
use crate::relay::CommandRelay;

/// What a cache of a store other replicas may change keeps to stay
/// current (the registry's and the accounts'): the store's change count it
/// was loaded at, and the turn that a change made here (from its store
/// write through its cache update) and a reload (from reading the store
/// through replacing the cache) take, so that a reload never puts back
/// what such a change replaced.
#[derive(Debug)]
pub struct Freshness {
    loaded: AtomicI64,
    turn: Mutex<()>,
}

impl Freshness {
    /// For a cache loaded when the store's count was `count` (`None`: a
    /// store only this hub writes).
    pub fn new(count: Option<i64>) -> Freshness {
        Freshness {
            loaded: AtomicI64::new(count.unwrap_or(0)),
            turn: Mutex::new(()),
        }
    }

    /// The turn to change the store and then the cache, or to reload.
    pub fn turn(&self) -> MutexGuard<'_, ()> {
        self.turn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's count `now`, if it moved since the cache was loaded
    /// (`None`: nothing to reload).
    pub fn moved(&self, now: Option<i64>) -> Option<i64> {
        now.filter(|&n| n != self.loaded.load(Acquire))
    }

    /// The cache now holds what the store had at `count`.
    pub fn reloaded(&self, count: i64) {
        self.loaded.store(count, Release);
    }

    /// The store's count as of the last (re)load.
    pub fn loaded(&self) -> i64 {
        self.loaded.load(Acquire)
    }
}

/// What the refresh task keeps current: the caches of the registry and
/// accounts, and the desired twins this replica's broker holds for the
/// devices connected to it.
pub struct Followers {
    /// The device registry.
    pub registry: Arc<Registry>,
    /// People's accounts.
    pub access: Arc<Access>,
    /// Publishes the desired twins changed elsewhere.
    pub deployer: Arc<Deployer>,
    /// Publishes the commands other replicas sent (`None`: devices get
    /// them from an upstream broker).
    pub commands: Option<Arc<CommandRelay>>,
}

/// Starts the refresh task, if anything is shared; it ends when `stop`
/// turns true.
pub fn spawn(
    followers: Followers,
    every: Duration,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    shared: bool,
) -> Option<tokio::task::JoinHandle<()>> {
    if !shared {
        return None;
    }
    let Followers {
        registry,
        access,
        deployer,
        commands,
    } = followers;
    show_version(&registry, &access, &metrics);
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let (r, a, d, c) = (
                registry.clone(),
                access.clone(),
                deployer.clone(),
                commands.clone(),
            );
            let looked = tokio::task::spawn_blocking(move || {
                let devices = r.refresh();
                let accounts = a.refresh();
                let twins = d.follow_changes();
                let commands = c.map(|c| c.follow());
                (devices, accounts, twins, commands)
            })
            .await;
            match looked {
                Ok((devices, accounts, twins, commands)) => {
                    match commands {
                        Some(Ok(relayed)) => {
                            metrics
                                .shared_commands_relayed
                                .fetch_add(relayed.published, Relaxed);
                            metrics
                                .shared_commands_stale
                                .fetch_add(relayed.stale, Relaxed);
                        }
                        Some(Err(e)) => {
                            metrics.shared_refresh_failures.fetch_add(1, Relaxed);
                            tracing::warn!("cannot relay the commands other replicas sent: {e}");
                        }
                        None => {}
                    }
                    match twins {
                        Ok(n) => {
                            metrics.shared_twins_published.fetch_add(n as u64, Relaxed);
                        }
                        Err(e) => {
                            metrics.shared_refresh_failures.fetch_add(1, Relaxed);
                            tracing::warn!("cannot publish the twins other replicas changed: {e}");
                        }
                    }
                    for outcome in [devices, accounts] {
                        match outcome {
                            Ok(true) => {
                                metrics.shared_reloads.fetch_add(1, Relaxed);
                            }
                            Ok(false) => {}
                            Err(e) => {
                                metrics.shared_refresh_failures.fetch_add(1, Relaxed);
                                tracing::warn!("cannot look for changes other replicas made: {e}");
                            }
                        }
                    }
                    show_version(&registry, &access, &metrics);
                }
                Err(e) => {
                    metrics.shared_refresh_failures.fetch_add(1, Relaxed);
                    tracing::warn!("the shared-store refresh failed: {e}");
                }
            }
        }
    }))
}

/// The change counts the caches have seen.
fn show_version(registry: &Registry, access: &Access, metrics: &Metrics) {
    metrics
        .shared_registry_version
        .store(registry.freshness().loaded(), Relaxed);
    metrics
        .shared_accounts_version
        .store(access.freshness().loaded(), Relaxed);
}

/// A duty that one replica at a time performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    /// Running the retraining policies.
    Retrain,
    /// Raising `offline` alerts: every replica reads the same registry, so
    /// each would raise its own alert (and webhook) for every device.
    OfflineAlerts,
    /// Deleting telemetry past retention (and drift sketches, where those
    /// are shared too), where the replicas share it: each replica's pass
    /// would delete the same rows, holding its writer's lock the while.
    Retention,
}

impl Duty {
    /// Its name: the lease's in the database, the label in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Duty::Retrain => "retrain",
            Duty::OfflineAlerts => "offline_alerts",
            Duty::Retention => "retention",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Duty::Retrain => "the retraining policies",
            Duty::OfflineAlerts => "the offline alerts",
            Duty::Retention => "telemetry retention",
        }
    }

    fn gauge(self, metrics: &Metrics) -> &AtomicI64 {
        match self {
            Duty::Retrain => &metrics.retrain_leader,
            Duty::OfflineAlerts => &metrics.offline_alerts_leader,
            Duty::Retention => &metrics.retention_leader,
        }
    }
}

/// Whether this replica performs a [`Duty`]: always, alone; with shared
/// stores, while it holds the duty's lease in the database. `/metrics`
/// shows it (`strata_shared_leader{duty="retrain"}`).
pub struct Lease {
    shared: Option<strata_store::postgres::PostgresLease>,
    duty: Duty,
    /// Also where the last look's answer is kept.
    metrics: Arc<Metrics>,
}

impl Lease {
    /// A hub without other replicas: it performs the duty.
    pub fn alone(duty: Duty, metrics: Arc<Metrics>) -> Lease {
        duty.gauge(&metrics).store(1, Relaxed);
        Lease {
            shared: None,
            duty,
            metrics,
        }
    }

    /// The duty's lease among the replicas sharing the database at `url`.
    pub fn shared(
        url: &str,
        duty: Duty,
        metrics: Arc<Metrics>,
    ) -> Result<Lease, strata_store::Error> {
        Ok(Lease {
            shared: Some(strata_store::postgres::PostgresLease::connect(
                url,
                duty.name(),
            )?),
            duty,
            metrics,
        })
    }

    /// The duty's lease among the replicas sharing the database at `url`
    /// where this replica has the duty at all (`has_work`: rules or
    /// policies that need it); else, alone or with nothing to do, a lease
    /// of its own.
    pub fn for_duty(
        url: Option<&str>,
        has_work: bool,
        duty: Duty,
        metrics: Arc<Metrics>,
    ) -> Result<Lease, strata_store::Error> {
        match url {
            Some(url) if has_work => Lease::shared(url, duty, metrics),
            _ => Ok(Lease::alone(duty, metrics)),
        }
    }

    /// Whether this replica performs the duty now (taking the lease if no
    /// other replica holds it). One that cannot reach the database does
    /// not.
    pub fn held(&self) -> bool {
        let Some(lease) = &self.shared else {
            return true;
        };
        let what = self.duty.what();
        let now = lease.held().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot look at the lease of {what}");
            false
        });
        if self.duty.gauge(&self.metrics).swap(i64::from(now), Relaxed) != i64::from(now) {
            if now {
                tracing::info!("this replica now runs {what}");
            } else {
                tracing::info!("another replica runs {what} now");
            }
        }
        now
    }
}

#[cfg(test)]
mod tests {
    use super::Freshness;

    #[test]
    fn a_reload_is_due_only_when_a_shared_store_moved() {
        let local = Freshness::new(None);
        assert_eq!(local.moved(None), None, "a store only this hub writes");
        let shared = Freshness::new(Some(3));
        assert_eq!(shared.moved(Some(3)), None);
        assert_eq!(shared.moved(Some(5)), Some(5));
        shared.reloaded(5);
        assert_eq!((shared.loaded(), shared.moved(Some(5))), (5, None));
    }
}
