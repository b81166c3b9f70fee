//! The storage writer: one thread that owns the write side of storage and
//! commits batches in groups.
//!
//! While one transaction commits, new batches queue up; the next
//! transaction takes all of them at once. The fsync that makes a commit
//! durable runs on a second thread (the syncer), so the writer starts its
//! next transaction meanwhile, and one fsync covers every commit made while
//! the one before it ran. So the cost of an fsync is shared by every batch
//! that arrived during the previous one, and throughput grows with load
//! instead of collapsing under it. Each batch's publisher is acknowledged
//! only once the transaction holding it is durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use strata_broker::IngestRefusal;
use strata_proto::DeviceId;
use strata_store::{BatchWrite, TelemetryStore, WriteOutcome};
use tokio::sync::{mpsc, oneshot};

use crate::alerts::Alerts;
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
        done: Ack,
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

/// Starts the writer thread (and its syncer); it stops when every sender is
/// dropped or on [`Command::Stop`], after storing what was queued and
/// acknowledging what it stored.
pub fn spawn(
    store: Arc<dyn TelemetryStore>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    alerts: Arc<Alerts>,
    max_batches_per_commit: usize,
) -> (mpsc::UnboundedSender<Command>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = std::thread::Builder::new()
        .name("strata-writer".into())
        .spawn(move || {
            let (to_sync, synced) = std::sync::mpsc::channel();
            let syncer = {
                let (store, metrics) = (Arc::clone(&store), Arc::clone(&metrics));
                std::thread::Builder::new()
                    .name("strata-sync".into())
                    .spawn(move || sync_loop(&synced, &*store, &metrics))
                    .expect("spawn the storage sync thread")
            };
            run(
                rx,
                store,
                registry,
                metrics,
                &alerts,
                max_batches_per_commit.max(1),
                to_sync,
            );
            // `run` dropped its sender: the syncer acknowledges the last
            // commits, then ends.
            let _ = syncer.join();
        })
        .expect("spawn the storage writer thread");
    (tx, handle)
}

/// Answers a batch's publisher once it is durable (or refused).
type Ack = oneshot::Sender<Result<(), IngestRefusal>>;

/// A commit waiting for its sync, with the publishers to answer then.
struct Committed {
    commit: u64,
    /// Per batch: readings, outcome, publisher.
    batches: Vec<(u64, WriteOutcome, Ack)>,
}

/// Syncs commits in groups, then acknowledges their batches.
fn sync_loop(
    rx: &std::sync::mpsc::Receiver<Committed>,
    store: &dyn TelemetryStore,
    metrics: &Metrics,
) {
    let mut group = Vec::new();
    while let Ok(first) = rx.recv() {
        group.push(first);
        group.extend(rx.try_iter());
        let through = group.iter().map(|c| c.commit).max().unwrap_or(0);
        if let Err(e) = store.sync(through) {
            // After a failed fsync the kernel may have dropped the dirty
            // pages, so what was committed can no longer be trusted to be
            // on disk, and a retry would only be answered "duplicate". As
            // PostgreSQL does, stop: nothing unsynced was acknowledged, the
            // devices keep it, and a restart reads what really is on disk.
            tracing::error!("cannot sync telemetry to disk; stopping the hub: {e}");
            std::process::abort();
        }
        for c in group.drain(..) {
            for (readings, outcome, done) in c.batches {
                match outcome {
                    WriteOutcome::Stored => {
                        metrics.batches_stored.fetch_add(1, Relaxed);
                        metrics.readings_stored.fetch_add(readings, Relaxed);
                    }
                    WriteOutcome::Duplicate => {
                        metrics.batches_duplicate.fetch_add(1, Relaxed);
                    }
                }
                let _ = done.send(Ok(()));
            }
        }
    }
}

fn run(
    mut rx: mpsc::UnboundedReceiver<Command>,
    store: Arc<dyn TelemetryStore>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    alerts: &Alerts,
    max: usize,
    to_sync: std::sync::mpsc::Sender<Committed>,
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
        match store.write_batches_unsynced(&writes) {
            Ok((outcomes, commit)) => {
                metrics.commits.fetch_add(1, Relaxed);
                metrics
                    .commit_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
                for (w, outcome) in writes.iter().zip(&outcomes) {
                    if *outcome == WriteOutcome::Stored {
                        alerts.offer(&w.device, &w.batch);
                    }
                }
                let batches = writes
                    .iter()
                    .zip(outcomes)
                    .zip(waiters.drain(..))
                    .map(|((w, outcome), done)| (w.batch.readings, outcome, done))
                    .collect();
                let _ = to_sync.send(Committed { commit, batches });
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
