//! The storage writer: one thread that owns the write side of storage and
//! commits batches in groups.
//!
//! While one transaction commits and syncs, new batches queue up; the next
//! transaction takes all of them at once. So the cost of a commit and its
//! fsync is shared by every batch that arrived during the previous one, and
//! throughput grows with load instead of collapsing under it. Each batch's
//! publisher is acknowledged only once the transaction holding it is
//! durable: connections on tickets once per commit, whatever their count
//! of batches in it.
//!
//! (The sync used to run on a thread of its own, so the next transaction
//! could start meanwhile; on two cores the extra thread's wake-ups cost
//! more than the overlap gained, about a tenth of ingest throughput.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use strata_broker::{Acks, IngestRefusal};
use strata_proto::DeviceId;
use strata_store::{BatchWrite, TelemetryStore, WriteOutcome};
use tokio::sync::{mpsc, oneshot};

use crate::alerts::Alerts;
use crate::metrics::{LogTurn, Metrics};
use crate::now_ns;
use crate::registry::Registry;

/// Work for the writer.
pub enum Command {
    /// Store a batch, then answer on `done`.
    Batch {
        /// The batch.
        write: BatchWrite,
        /// Answered when the batch is durable (or refused).
        done: Done,
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
            run(
                rx,
                store,
                registry,
                metrics,
                &alerts,
                max_batches_per_commit.max(1),
            );
        })
        .expect("spawn the storage writer thread");
    (tx, handle)
}

/// How a batch's publisher learns that the batch is durable (or refused).
pub enum Done {
    /// A ticket of the publisher's connection (the common case: one
    /// wake-up per connection per sync, whatever its batches).
    Ticket(Arc<Acks>, u64),
    /// A channel of the batch's own.
    Channel(oneshot::Sender<Result<(), IngestRefusal>>),
}

impl Done {
    /// Answers at once (a ticket can only fail: a ticket done out of turn
    /// would acknowledge the ones before it).
    pub fn send(self, result: Result<(), IngestRefusal>) {
        match self {
            Done::Ticket(acks, ticket) => match result {
                Ok(()) => acks.done_through(ticket),
                Err(_) => acks.fail(),
            },
            Done::Channel(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// Answers the publishers of synced batches: channels one by one,
/// tickets once per connection (the last of its tickets, which the writer
/// took in order).
#[derive(Default)]
struct Answers {
    tickets: Vec<(Arc<Acks>, u64)>,
    /// Where each connection's entry is in `tickets`, by its address: a
    /// commit may hold batches of thousands of connections.
    index: HashMap<usize, usize, foldhash::fast::RandomState>,
}

impl Answers {
    fn ok(&mut self, done: Done) {
        match done {
            Done::Ticket(acks, ticket) => {
                let key = Arc::as_ptr(&acks) as usize;
                match self.index.get(&key) {
                    Some(&at) => {
                        let last = &mut self.tickets[at].1;
                        *last = (*last).max(ticket);
                    }
                    None => {
                        self.index.insert(key, self.tickets.len());
                        self.tickets.push((acks, ticket));
                    }
                }
            }
            channel => channel.send(Ok(())),
        }
    }

    fn send(&mut self) {
        self.index.clear();
        for (acks, ticket) in self.tickets.drain(..) {
            acks.done_through(ticket);
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
) {
    let mut writes = Vec::with_capacity(max);
    let mut waiters = Vec::with_capacity(max);
    let mut seen: HashMap<DeviceId, i64, foldhash::fast::RandomState> = HashMap::default();
    let mut last_touch = Instant::now();
    let mut presence: Vec<(DeviceId, bool, i64)> = Vec::new();
    let mut stopping = false;
    let mut answers = Answers::default();
    // Failed groups, and the batches that fail on their own after one:
    // each kind is said once a minute, so the first batch refused in a
    // minute is named.
    let (failures, batch_failures) = (LogTurn::default(), LogTurn::default());
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
                if let Err(e) = store.sync(commit) {
                    // After a failed fsync the kernel may have dropped the
                    // dirty pages, so what was committed can no longer be
                    // trusted to be on disk, and a retry would only be
                    // answered "duplicate". As PostgreSQL does, stop: nothing
                    // unsynced was acknowledged, the devices keep it, and a
                    // restart reads what really is on disk.
                    tracing::error!("cannot sync telemetry to disk; stopping the hub: {e}");
                    std::process::abort();
                }
                for ((w, outcome), done) in writes.iter().zip(outcomes).zip(waiters.drain(..)) {
                    count(&metrics, w, outcome);
                    answers.ok(done);
                }
                answers.send();
                let now = now_ns();
                for w in &writes {
                    saw(&mut seen, &w.device, now);
                }
            }
            Err(e) if writes.len() > 1 && !e.is_retryable() => {
                // One batch the store refuses (a value it cannot take) must
                // not keep every other publisher's from being stored: the
                // batches are stored one by one, and only those that still
                // fail are sent again. (A store down for the moment, a
                // lost connection, fails them all at once instead.)
                metrics.commit_failures.fetch_add(1, Relaxed);
                let now = now_ns();
                let refused = one_by_one(
                    &*store,
                    &writes,
                    &mut waiters,
                    &metrics,
                    &mut |w, outcome| {
                        if outcome == WriteOutcome::Stored {
                            alerts.offer(&w.device, &w.batch);
                        }
                        saw(&mut seen, &w.device, now);
                    },
                    &mut answers,
                    &batch_failures,
                );
                if let Some(held_back) = failures.take(now_ns(), FAILURE_LOG_EVERY_NS) {
                    tracing::warn!(
                        batches = writes.len(),
                        refused,
                        held_back,
                        "cannot store telemetry ({e}); stored these batches one by one instead"
                    );
                }
            }
            Err(e) => {
                // Nothing of this transaction is stored: refuse every batch as
                // retryable, so each publisher sends it again.
                metrics.commit_failures.fetch_add(1, Relaxed);
                if let Some(held_back) = failures.take(now_ns(), FAILURE_LOG_EVERY_NS) {
                    tracing::error!(
                        batches = writes.len(),
                        held_back,
                        "cannot store telemetry, publishers will retry: {e}"
                    );
                }
                for done in waiters.drain(..) {
                    done.send(Err(IngestRefusal::Retry));
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

/// Records that `device` was heard from at `now`; its id (an allocation)
/// is cloned only for a device not yet in the round.
fn saw(
    seen: &mut HashMap<DeviceId, i64, foldhash::fast::RandomState>,
    device: &DeviceId,
    now: i64,
) {
    match seen.get_mut(device) {
        Some(t) => *t = now,
        None => {
            seen.insert(device.clone(), now);
        }
    }
}

/// Counts a batch the store answered for.
fn count(metrics: &Metrics, w: &BatchWrite, outcome: WriteOutcome) {
    match outcome {
        WriteOutcome::Stored => {
            metrics.batches_stored.fetch_add(1, Relaxed);
            metrics.readings_stored.fetch_add(w.batch.readings, Relaxed);
        }
        WriteOutcome::Duplicate => {
            metrics.batches_duplicate.fetch_add(1, Relaxed);
        }
    }
}

/// Stores `writes` one transaction each, after their group failed: the
/// publishers of those stored are answered once they are synced (and the
/// batches stored `offer`ed to the alert rules), those still refused are
/// asked to send again. Two failures in a row are taken for the store's,
/// not a batch's: the rest are asked to send again without being tried.
/// Returns how many were asked to send again.
fn one_by_one(
    store: &dyn TelemetryStore,
    writes: &[BatchWrite],
    waiters: &mut Vec<Done>,
    metrics: &Metrics,
    answered: &mut dyn FnMut(&BatchWrite, WriteOutcome),
    answers: &mut Answers,
    failures: &LogTurn,
) -> usize {
    let mut stored = Vec::with_capacity(writes.len());
    let mut last_commit = None;
    let (mut refused, mut in_a_row) = (0usize, 0usize);
    for (w, done) in writes.iter().zip(waiters.drain(..)) {
        if in_a_row >= 2 {
            refused += 1;
            done.send(Err(IngestRefusal::Retry));
            continue;
        }
        match store.write_batches_unsynced(std::slice::from_ref(w)) {
            Ok((outcomes, commit)) => {
                in_a_row = 0;
                last_commit = Some(commit);
                metrics.commits.fetch_add(1, Relaxed);
                stored.push((w, outcomes[0], done));
            }
            Err(e) => {
                refused += 1;
                in_a_row += 1;
                metrics.commit_failures.fetch_add(1, Relaxed);
                if let Some(held_back) = failures.take(now_ns(), FAILURE_LOG_EVERY_NS) {
                    tracing::error!(
                        device = %w.device,
                        stream = %w.batch.stream,
                        seq = w.batch.seq,
                        held_back,
                        "cannot store this batch, its publisher will retry: {e}"
                    );
                }
                done.send(Err(IngestRefusal::Retry));
            }
        }
    }
    if let Some(commit) = last_commit
        && let Err(e) = store.sync(commit)
    {
        tracing::error!("cannot sync telemetry to disk; stopping the hub: {e}");
        std::process::abort();
    }
    for (w, outcome, done) in stored {
        answered(w, outcome);
        count(metrics, w, outcome);
        answers.ok(done);
    }
    answers.send();
    refused
}

/// Store failures last as long as their cause (a store down for an hour
/// fails every commit its publishers' retries bring), so they are logged
/// at most once a minute, with how many lines were held back meanwhile;
/// `strata_store_commit_failures_total` counts every one.
const FAILURE_LOG_EVERY_NS: i64 = 60_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::{SignalSeries, TelemetryBatch};
    use strata_store::{EncodedBatch, SqliteStore};

    /// The embedded store, refusing every write that holds a batch of
    /// device `bad` (as PostgreSQL refuses a value it cannot take).
    struct Refusing(SqliteStore);

    impl TelemetryStore for Refusing {
        fn write_batches(&self, batches: &[BatchWrite]) -> strata_store::Result<Vec<WriteOutcome>> {
            if batches.iter().any(|b| b.device.as_str() == "bad") {
                return Err(strata_store::Error::Conflict(
                    "a value it cannot take".into(),
                ));
            }
            self.0.write_batches(batches)
        }
        fn series(
            &self,
            d: Option<&DeviceId>,
        ) -> strata_store::Result<Vec<strata_store::SeriesInfo>> {
            self.0.series(d)
        }
        fn range(
            &self,
            q: &strata_store::RangeQuery,
        ) -> strata_store::Result<strata_store::RangeResult> {
            self.0.range(q)
        }
        fn batch_count(&self, d: Option<&DeviceId>) -> strata_store::Result<u64> {
            self.0.batch_count(d)
        }
        fn expire(&self, before_ns: i64) -> strata_store::Result<strata_store::Expired> {
            self.0.expire(before_ns)
        }
        fn shrink_to(&self, max_bytes: u64) -> strata_store::Result<strata_store::Expired> {
            self.0.shrink_to(max_bytes)
        }
        fn replay(
            &self,
            device: &DeviceId,
            stream: Option<&str>,
            from_ns: i64,
            to_ns: i64,
            each: &mut dyn FnMut(TelemetryBatch) -> strata_store::Result<()>,
        ) -> strata_store::Result<()> {
            self.0.replay(device, stream, from_ns, to_ns, each)
        }
    }

    fn write(device: &str, seq: u64) -> BatchWrite {
        BatchWrite {
            device: DeviceId::new(device).unwrap(),
            received_ns: 2_000_000_000_000_000_000,
            batch: EncodedBatch::encode(&TelemetryBatch {
                stream: "line".into(),
                seq,
                signals: vec![SignalSeries {
                    name: "temp".into(),
                    unit: "Cel".into(),
                    ts_ns: vec![1_900_000_000_000_000_000],
                    values: vec![21.5],
                    quality: Vec::new(),
                }],
            }),
        }
    }

    #[test]
    fn store_failures_are_logged_once_a_minute_with_the_count_held_back() {
        let log = LogTurn::default();
        let start = now_ns();
        let period = FAILURE_LOG_EVERY_NS;
        assert_eq!(log.take(start, period), Some(0));
        assert_eq!(log.take(start + 1_000_000_000, period), None);
        assert_eq!(log.take(start + period - 1_000_000, period), None);
        assert_eq!(log.take(start + period, period), Some(2));
        assert_eq!(log.take(start + period, period), None);
        assert_eq!(log.take(start + 3 * period, period), Some(1));
    }

    #[test]
    fn a_batch_the_store_refuses_keeps_no_other_from_being_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Refusing(SqliteStore::open(dir.path(), strata_store::Durability::Process).unwrap());
        let metrics = Metrics::default();
        let mut answered_for = Vec::new();
        let mut store_one_by_one = |writes: &[BatchWrite]| {
            let (mut waiters, mut answered) = (Vec::new(), Vec::new());
            for _ in writes {
                let (tx, rx) = oneshot::channel();
                waiters.push(Done::Channel(tx));
                answered.push(rx);
            }
            one_by_one(
                &store,
                writes,
                &mut waiters,
                &metrics,
                &mut |w, outcome| answered_for.push((w.device.to_string(), outcome)),
                &mut Answers::default(),
                &LogTurn::default(),
            );
            answered
                .into_iter()
                .map(|mut rx| rx.try_recv().unwrap().is_ok())
                .collect::<Vec<bool>>()
        };
        let writes = [write("good-1", 1), write("bad", 1), write("good-2", 7)];
        assert!(store.write_batches(&writes).is_err(), "the group fails");
        assert_eq!(store_one_by_one(&writes), [true, false, true]);
        // Two failures in a row are the store's: the rest is not tried.
        let writes = [write("bad", 2), write("bad", 3), write("good-3", 1)];
        assert_eq!(store_one_by_one(&writes), [false, false, false]);
        let writes = [write("good-1", 1), write("bad", 4)];
        assert_eq!(store_one_by_one(&writes), [true, false]);
        // The batches answered, for their devices to be seen (and those
        // stored offered to the alert rules): a duplicate's too.
        assert_eq!(
            answered_for,
            [
                ("good-1".to_string(), WriteOutcome::Stored),
                ("good-2".to_string(), WriteOutcome::Stored),
                ("good-1".to_string(), WriteOutcome::Duplicate)
            ]
        );
        assert_eq!(store.batch_count(None).unwrap(), 2);
        assert_eq!(metrics.batches_stored.load(Relaxed), 2);
    }
}
