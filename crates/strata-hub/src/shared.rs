//! Keeping a replica's caches current when the registry and accounts are
//! shared with other replicas (`[shared] postgres`): every `refresh_ms`,
//! [`Registry::refresh`] and [`Access::refresh`] read their store's change
//! count and reload what they cache only when it moved. Counted in
//! `/metrics`; a failed look keeps the caches as they were and is tried
//! again at the next tick.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::auth::Access;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Starts the refresh task, if anything is shared; it ends when `stop`
/// turns true.
pub fn spawn(
    registry: Arc<Registry>,
    access: Arc<Access>,
    every: Duration,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    shared: bool,
) -> Option<tokio::task::JoinHandle<()>> {
    if !shared {
        return None;
    }
    show_version(&registry, &access, &metrics);
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let (r, a) = (registry.clone(), access.clone());
            let looked = tokio::task::spawn_blocking(move || {
                let devices = r.refresh();
                let accounts = a.refresh();
                (devices, accounts)
            })
            .await;
            match looked {
                Ok((devices, accounts)) => {
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
    (metrics.shared_registry_version).store(registry.loaded_changes(), Relaxed);
    (metrics.shared_accounts_version).store(access.loaded_changes(), Relaxed);
}
