//! Telemetry retention: every `retention_check_s` (and once at start), the
//! telemetry older than `retention_days` is deleted and the disk space it
//! took is freed ([`TelemetryStore::expire`]), then, past
//! `retention_max_mb`, the oldest ([`TelemetryStore::shrink_to`]). Counted in `/metrics`; a
//! failed pass is logged and tried again at the next check.
//!
//! Drift sketches go with the telemetry they summarise: those whose window
//! ended before `retention_days` ([`DriftStore::forget_sketches`]); the
//! size limit counts telemetry files only.
//!
//! The same clock deletes past `history_days` finished webhook deliveries
//! and workflow runs ([`AlertStore::forget_history`]), cleared alerts, API
//! tokens that expired or were revoked, and presence changes but each
//! device's state at the cut ([`History`]).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use strata_store::{AlertStore, DriftStore, TelemetryStore};

use crate::config::StorageConfig;
use crate::metrics::Metrics;

/// What retention deletes from, and whether this replica does it.
pub struct Stores {
    /// Telemetry.
    pub telemetry: Arc<dyn TelemetryStore>,
    /// Drift sketches.
    pub sketches: Arc<dyn DriftStore>,
    /// Held by the one replica that runs telemetry retention over shared
    /// telemetry (always, alone).
    pub lease: crate::shared::Lease,
    /// Whether the drift sketches are shared too: then only the lease's
    /// holder deletes them; else each replica deletes its own.
    pub sketches_shared: bool,
}

/// Starts the retention task, if the configuration keeps telemetry for a
/// limited time or up to a size; it ends when `stop` turns true.
/// Telemetry is deleted only while `stores.lease` is held.
pub fn spawn(
    config: &StorageConfig,
    stores: Stores,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let Stores {
        telemetry: store,
        sketches,
        lease,
        sketches_shared,
    } = stores;
    let policy = Policy {
        keep_ns: config.retention_ns(),
        max_bytes: config.retention_max_bytes(),
    };
    if policy.keep_ns.is_none() && policy.max_bytes.is_none() {
        // Nothing to run: this replica does not run it either.
        metrics.retention_leader.store(0, Relaxed);
        return None;
    }
    let every = Duration::from_secs(config.retention_check_s);
    let m = metrics.clone();
    let pass = move || {
        let leader = lease.held();
        if leader {
            run_once(&*store, &m, policy);
        }
        if let Some(keep_ns) = policy.keep_ns
            && (leader || !sketches_shared)
        {
            forget_sketches(&*sketches, &m, crate::now_ns().saturating_sub(keep_ns));
        }
    };
    Some(periodic(every, metrics, stop, "telemetry retention", pass))
}

/// What to keep.
#[derive(Debug, Clone, Copy)]
struct Policy {
    keep_ns: Option<i64>,
    max_bytes: Option<u64>,
}

/// One pass: deletes what is older than the period, then the oldest until
/// the files fit the size limit.
fn run_once(store: &dyn TelemetryStore, metrics: &Metrics, policy: Policy) {
    if let Some(keep_ns) = policy.keep_ns {
        let before_ns = crate::now_ns().saturating_sub(keep_ns);
        count(
            metrics,
            "past its retention period",
            store.expire(before_ns),
        );
    }
    if let Some(max_bytes) = policy.max_bytes {
        count(metrics, "over the size limit", store.shrink_to(max_bytes));
    }
}

/// Deletes the sketch batches whose window ended before `before_ns`.
fn forget_sketches(store: &dyn DriftStore, metrics: &Metrics, before_ns: i64) {
    match store.forget_sketches(before_ns) {
        Ok(deleted) => {
            metrics.sketch_batches_expired.fetch_add(deleted, Relaxed);
            if deleted > 0 {
                tracing::info!(
                    batches = deleted,
                    "retention deleted drift sketches past its period"
                );
            }
        }
        Err(e) => {
            metrics.retention_failures.fetch_add(1, Relaxed);
            tracing::warn!("sketch retention failed, trying again at the next check: {e}");
        }
    }
}

fn count(metrics: &Metrics, why: &str, pass: strata_store::Result<strata_store::Expired>) {
    match pass {
        Ok(expired) => {
            metrics.batches_expired.fetch_add(expired.batches, Relaxed);
            metrics
                .readings_expired
                .fetch_add(expired.readings, Relaxed);
            metrics
                .segments_removed
                .fetch_add(expired.segments, Relaxed);
            metrics
                .segment_bytes_freed
                .fetch_add(expired.bytes, Relaxed);
            if expired.blocks > 0 || expired.segments > 0 {
                tracing::info!(
                    batches = expired.batches,
                    readings = expired.readings,
                    segment_files = expired.segments,
                    bytes_freed = expired.bytes,
                    "telemetry retention deleted what was {why}"
                );
            }
        }
        Err(e) => {
            metrics.retention_failures.fetch_add(1, Relaxed);
            tracing::warn!("telemetry retention failed, trying again at the next check: {e}");
        }
    }
}

/// What history retention deletes from.
pub struct History {
    /// Webhook deliveries, workflow runs, cleared alerts.
    pub alerts: Arc<dyn AlertStore>,
    /// API tokens long expired or revoked.
    pub access: Arc<crate::auth::Access>,
    /// Old presence changes.
    pub registry: Arc<crate::registry::Registry>,
}

/// Starts the task that deletes, past `history_days` (none when it is
/// 0): finished webhook deliveries and workflow runs, cleared alerts, API
/// tokens that expired or were revoked, and the devices' presence changes
/// (each device's last one before the cut stays: its state then). It ends
/// when `stop` turns true.
pub fn spawn_history(
    config: &StorageConfig,
    history: History,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let keep_ns = config.history_ns()?;
    let every = Duration::from_secs(config.retention_check_s);
    let m = metrics.clone();
    let pass = move || {
        let before = crate::now_ns().saturating_sub(keep_ns);
        let History {
            alerts: store,
            access,
            registry,
        } = &history;
        let deleted = store.forget_history(before).and_then(|(deliveries, runs)| {
            Ok((deliveries, runs, store.forget_cleared_alerts(before)?))
        });
        let (deliveries, runs, alerts) = or_nothing(
            &m,
            "old webhook deliveries, workflow runs and alerts",
            deleted,
        );
        let tokens = or_nothing(&m, "old API tokens", access.forget_tokens(before));
        let presence = or_nothing(&m, "old presence changes", registry.forget_presence(before));
        let total = deliveries + runs + alerts + tokens + presence;
        m.history_deleted.fetch_add(total, Relaxed);
        if total > 0 {
            tracing::info!(
                deliveries,
                runs,
                alerts,
                tokens,
                presence,
                "deleted what was past history_days"
            );
        }
    };
    Some(periodic(every, metrics, stop, "history retention", pass))
}

/// What a history deletion deleted, or nothing: its failure counted and
/// said, for the next check to try again.
fn or_nothing<T: Default, E: std::fmt::Display>(
    metrics: &Metrics,
    what: &str,
    deleted: Result<T, E>,
) -> T {
    deleted.unwrap_or_else(|e| {
        metrics.retention_failures.fetch_add(1, Relaxed);
        tracing::warn!("deleting {what} failed, trying again at the next check: {e}");
        T::default()
    })
}

/// Runs `pass` off the runtime now and every `period` after, until `stop`
/// turns true; a pass that panics is counted as a failed retention pass.
fn periodic(
    period: Duration,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
    pass: impl Fn() + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    let pass = Arc::new(pass);
    tokio::spawn(async move {
        loop {
            let p = pass.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || p()).await {
                metrics.retention_failures.fetch_add(1, Relaxed);
                tracing::warn!("{what} task failed: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use strata_proto::{DeviceId, SiteId};
    use strata_store::{AccessStore, ApiToken, NewDevice, RegistryStore, Site, SqliteStore, User};

    const DAY_NS: i64 = 86_400_000_000_000;

    /// The history pass, as the hub starts it, deletes API tokens and
    /// presence changes from past `history_days`, from the stores and
    /// from the caches the API answers from; what is recent stays.
    #[tokio::test]
    async fn the_history_pass_forgets_old_tokens_and_presence_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), Default::default()).unwrap());
        let now = crate::now_ns();
        let user = User {
            name: "alice".into(),
            role: "viewer".into(),
            service: false,
            password_phc: None,
            created_ns: 1,
            disabled_ns: None,
        };
        store.create_user(&user).unwrap();
        let token = |id: &str, expires_ns: i64| ApiToken {
            id: id.into(),
            user: "alice".into(),
            label: String::new(),
            scopes: vec!["read".into()],
            // Hex, one byte repeated: a1 or a2.
            token_sha256: format!("a{}", &id[1..]).repeat(32),
            created_ns: 1,
            expires_ns: Some(expires_ns),
            revoked_ns: None,
        };
        store.create_token(&token("t1", now - 3 * DAY_NS)).unwrap();
        store.create_token(&token("t2", now - DAY_NS / 2)).unwrap();
        store
            .create_site(&Site {
                id: SiteId::new("plant").unwrap(),
                name: "Plant".into(),
                region: "eu".into(),
                created_ns: 1,
            })
            .unwrap();
        let press = DeviceId::new("press-1").unwrap();
        store
            .create_device(&NewDevice {
                id: press.clone(),
                site: SiteId::new("plant").unwrap(),
                tags: BTreeMap::new(),
                signals: BTreeMap::new(),
                token_sha256: [1; 32],
                token_expires_ns: now,
                created_ns: 1,
            })
            .unwrap();
        let changes = [
            (press.clone(), true, now - 5 * DAY_NS),
            (press.clone(), false, now - 4 * DAY_NS),
            (press.clone(), true, now - 3 * DAY_NS),
            (press.clone(), false, now - DAY_NS / 2),
        ];
        store.set_presence(&changes).unwrap();

        let access = Arc::new(
            crate::auth::Access::load(store.clone(), [0; 32], &Default::default()).unwrap(),
        );
        let registry = Arc::new(crate::registry::Registry::load(store.clone(), 600).unwrap());
        assert_eq!(access.tokens(None).len(), 2);
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let config = StorageConfig {
            history_days: 2,
            retention_check_s: 3_600,
            ..Default::default()
        };
        let history = History {
            alerts: store.clone(),
            access: access.clone(),
            registry: registry.clone(),
        };
        let task = spawn_history(&config, history, metrics.clone(), stopped).expect("a task");
        // The first pass runs at once: t1, and the presence changes before
        // the last one ahead of the cut (3 days ago, online).
        for _ in 0..3_000 {
            if metrics.history_deleted.load(Relaxed) >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.history_deleted.load(Relaxed), 3);
        let left: Vec<String> = access.tokens(None).into_iter().map(|t| t.id).collect();
        assert_eq!(left, ["t2"]);
        assert_eq!(store.tokens().unwrap().len(), 1);
        let log = registry.presence_log(0, now).unwrap();
        let kept: Vec<_> = changes[2..]
            .iter()
            .map(|(d, online, ts)| (d.clone(), *ts, *online))
            .collect();
        assert_eq!(log, kept);
        stop.send_replace(true);
        task.await.unwrap();
    }
}
