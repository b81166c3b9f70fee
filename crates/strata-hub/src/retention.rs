//! Telemetry retention: every `retention_check_s` (and once at start), the
//! telemetry older than `retention_days` is deleted and the disk space it
//! took is freed ([`TelemetryStore::expire`]). Counted in `/metrics`; a
//! failed pass is logged and tried again at the next check.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use strata_store::TelemetryStore;

use crate::config::StorageConfig;
use crate::metrics::Metrics;

/// Starts the retention task, if the configuration keeps telemetry for a
/// limited time; it ends when `stop` turns true.
pub fn spawn(
    config: &StorageConfig,
    store: Arc<dyn TelemetryStore>,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let keep_ns = config.retention_ns()?;
    let every = Duration::from_secs(config.retention_check_s);
    Some(tokio::spawn(async move {
        loop {
            let (store, m) = (store.clone(), metrics.clone());
            let pass = tokio::task::spawn_blocking(move || run_once(&*store, &m, keep_ns)).await;
            if let Err(e) = pass {
                metrics.retention_failures.fetch_add(1, Relaxed);
                tracing::warn!("telemetry retention task failed: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }))
}

/// One pass: deletes what is older than `keep_ns` before now.
fn run_once(store: &dyn TelemetryStore, metrics: &Metrics, keep_ns: i64) {
    let before_ns = crate::now_ns().saturating_sub(keep_ns);
    match store.expire(before_ns) {
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
                    "telemetry retention deleted what was past its retention period"
                );
            }
        }
        Err(e) => {
            metrics.retention_failures.fetch_add(1, Relaxed);
            tracing::warn!("telemetry retention failed, trying again at the next check: {e}");
        }
    }
}
