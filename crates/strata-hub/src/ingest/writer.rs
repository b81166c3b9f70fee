//! The storage writer: one thread that owns the write side of storage and
//! commits batches in groups.
//!
//! While one transaction commits (and fsyncs), new batches queue up; the
//! next transaction takes all of them at once. So the cost of an fsync is
//! shared by every batch that arrived during the previous one, and
//! throughput grows with load instead of collapsing under it. Each batch's
//! publisher is acknowledged only after the transaction holding it commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use strata_broker::IngestRefusal;
use strata_proto::DeviceId;
use strata_store::{BatchWrite, TelemetryStore, WriteOutcome};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::now_ns;
use crate::registry::Registry;

/// Work for the writer.
pub enum Command {
    /// Store a batch, then answer on `done`.
    Batch {
        /// The batch.
        write: BatchWrite,
        /// Resolved when the batch is durable (or refused).
        done: oneshot::Sender<Result<(), IngestRefusal>>,
    },
    /// Store what is queued, then stop.
    Stop,
    /// Record a device going online or offline.
    Presence {
        /// The device.
        device: DeviceId,
        /// Online or not.
        online: bool,
    },
}

/// Starts the writer thread; it stops when every sender is dropped, after
/// storing what was queued.
pub fn spawn(
    store: Arc<dyn TelemetryStore>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    max_batches_per_commit: usize,
) -> (mpsc::UnboundedSender<Command>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = std::thread::Builder::new()
        .name("strata-writer".into())
        .spawn(move || run(rx, store, registry, metrics, max_batches_per_commit.max(1)))
        .expect("spawn the storage writer thread");
    (tx, handle)
}

fn run(
    mut rx: mpsc::UnboundedReceiver<Command>,
    store: Arc<dyn TelemetryStore>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    max: usize,
) {
    let mut writes = Vec::with_capacity(max);
    let mut waiters = Vec::with_capacity(max);
    let mut seen: HashMap<DeviceId, i64> = HashMap::new();
    let mut last_touch = Instant::now();
    let mut presence: Vec<(DeviceId, bool, i64)> = Vec::new();
    let mut stopping = false;
    while !stopping {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Stop => stopping = true,
                Command::Batch { write, done } => {
                    writes.push(write);
                    waiters.push(done);
                }
                Command::Presence { device, online } => presence.push((device, online, now_ns())),
            }
            if writes.len() < max {
                next = rx.try_recv().ok();
            }
        }
        // Connects and disconnects of this round share one transaction, so
        // a reconnect storm costs one fsync, not one per device.
        if !presence.is_empty() {
            registry.set_presence(&presence);
            presence.clear();
        }
        if writes.is_empty() {
            continue;
        }
        metrics.queue_depth.fetch_sub(writes.len() as i64, Relaxed);
        let started = Instant::now();
        match store.write_batches(&writes) {
            Ok(outcomes) => {
                metrics.commits.fetch_add(1, Relaxed);
                metrics
                    .commit_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
                for ((write, outcome), done) in writes.iter().zip(outcomes).zip(waiters.drain(..)) {
                    match outcome {
                        WriteOutcome::Stored => {
                            metrics.batches_stored.fetch_add(1, Relaxed);
                            metrics
                                .readings_stored
                                .fetch_add(write.batch.readings, Relaxed);
                        }
                        WriteOutcome::Duplicate => {
                            metrics.batches_duplicate.fetch_add(1, Relaxed);
                        }
                    }
                    let _ = done.send(Ok(()));
                }
                let now = now_ns();
                for w in &writes {
                    // Cloning the id (an allocation) only for a device not yet in the round.
                    match seen.get_mut(&w.device) {
                        Some(t) => *t = now,
                        None => {
                            seen.insert(w.device.clone(), now);
                        }
                    }
                }
            }
            Err(e) => {
                // Nothing of this transaction is stored: refuse every batch as
                // retryable, so each publisher sends it again.
                metrics.commit_failures.fetch_add(1, Relaxed);
                tracing::error!(
                    batches = writes.len(),
                    "cannot store telemetry, publishers will retry: {e}"
                );
                for done in waiters.drain(..) {
                    let _ = done.send(Err(IngestRefusal::Retry));
                }
            }
        }
        writes.clear();
        // Last-seen times are advisory: written after acknowledging, at most
        // once a second so they never cost the telemetry path an fsync.
        if !seen.is_empty() && (last_touch.elapsed().as_secs() >= 1 || rx.is_empty()) {
            last_touch = Instant::now();
            let list: Vec<(DeviceId, i64)> = seen.drain().collect();
            registry.touch(&list);
        }
    }
}
