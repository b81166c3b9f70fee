//! The job runner: training and backtest jobs run one at a time on a
//! worker thread (the hub has other work; on two cores one job at a time
//! keeps ingest responsive). Jobs, their progress and logs are stored, so a
//! job cut short by a hub restart is queued again and run from the start.
//! Where replicas share the job store, each replica's worker takes queued
//! jobs, says every [`LOOK_EVERY`] that the one it runs is alive, and when
//! idle puts back in the queue those whose worker went silent.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_proto::{DeviceId, SiteId};
use strata_store::{Job, JobClaim, JobLogLine, JobState, JobStore, TelemetryStore};

use super::ModelRegistry;
use super::backtest::{self, BacktestSpec};
use super::train::{self, TrainSpec};
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::wake::Wake;

/// What a running job reports through: progress, log lines, lookups, and
/// whether it should go on.
#[derive(Clone)]
pub struct JobCtx {
    claim: JobClaim,
    store: Arc<dyn JobStore>,
    registry: Arc<Registry>,
    last: Arc<Mutex<(Instant, f64)>>,
    /// The job is no longer this run's: it was cancelled, or its worker
    /// went silent and another replica took it back. Set from the store's
    /// answers, or at once by a cancellation on this hub.
    lost: Arc<AtomicBool>,
}

impl JobCtx {
    /// The job's id.
    pub fn id(&self) -> i64 {
        self.claim.id
    }

    /// Which start of the job this run is (from 1).
    pub fn attempt(&self) -> u32 {
        self.claim.attempt
    }

    /// Called before the job changes anything beyond itself (registering
    /// a model version): fails once the job is no longer this run's
    /// (cancelled, or taken back by another replica's worker while this
    /// one was silent), asking the store; else, from now on, the job can
    /// no longer be cancelled. So a job taken back registers once, and a
    /// cancelled one not at all.
    pub fn begin_commit(&self) -> Result<()> {
        if !self.store.begin_commit(self.claim)? {
            self.lost.store(true, Ordering::Relaxed);
        }
        self.go_on()
    }

    /// Fails once this run has learnt that the job is no longer its own,
    /// without asking the store: what a job checks between its steps.
    pub fn go_on(&self) -> Result<()> {
        if self.lost() {
            return Err(self.why_lost());
        }
        Ok(())
    }

    /// Whether this run has learnt that the job is no longer its own.
    fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// What stopped this run, in the user's words.
    fn why_lost(&self) -> Error {
        let id = self.claim.id;
        match self.store.job(id) {
            Ok(Some(job)) if job.state == JobState::Cancelled => {
                Error::Conflict(format!("job {id} was cancelled: {}", job.message))
            }
            _ => Error::Conflict(format!(
                "job {id} was taken back by another worker while this one was silent; \
                 this run stops"
            )),
        }
    }

    /// A trainer's progress callback: records the step between `from`
    /// and `from + share` of the job, and stops the trainer once the job
    /// is no longer this run's.
    pub fn trainer_progress(
        &self,
        from: f64,
        share: f64,
    ) -> impl FnMut(strata_train::Progress) -> ControlFlow<()> + '_ {
        move |p| {
            self.progress(
                from + share * p.done as f64 / p.total.max(1) as f64,
                &p.message,
            );
            match self.go_on() {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            }
        }
    }

    /// Records what the store answered to a write of this run's.
    fn answered(&self, what: &str, answer: strata_store::Result<bool>) {
        match answer {
            Ok(true) => {}
            Ok(false) => self.lost.store(true, Ordering::Relaxed),
            Err(e) => tracing::warn!(job = self.claim.id, "cannot record job {what}: {e}"),
        }
    }

    /// Records progress (0..=1) and a status line. Stored at most every
    /// 200 ms (and always at 0 and 1), so a 1,000-tree job does not write
    /// 1,000 rows.
    pub fn progress(&self, fraction: f64, line: &str) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let edge = fraction <= 0.0 || fraction >= 1.0;
        if !edge && now.duration_since(last.0) < Duration::from_millis(200) && fraction >= last.1 {
            return;
        }
        *last = (now, fraction);
        let answer = self
            .store
            .job_progress(self.claim, fraction, line, crate::now_ns());
        self.answered("progress", answer);
    }

    /// Appends a line to the job's log (e.g. an external trainer's output)
    /// without changing its progress.
    pub fn log(&self, line: &str) {
        let progress = self.last.lock().unwrap_or_else(|e| e.into_inner()).1;
        let answer = self
            .store
            .job_progress(self.claim, progress, line, crate::now_ns());
        self.answered("log", answer);
    }

    /// The site of a device, for lineage.
    pub fn device_site(&self, device: &DeviceId) -> Option<String> {
        self.registry
            .device(device)
            .ok()
            .map(|d| SiteId::to_string(&d.site))
    }
}

/// The runner.
pub struct JobRunner {
    store: Arc<dyn JobStore>,
    wake: Arc<Wake>,
    stop: Arc<AtomicBool>,
    /// The job the worker runs now.
    running: Running,
}

/// The job the worker runs, if any.
type Running = Arc<Mutex<Option<RunningJob>>>;

/// A job the worker runs: its claim, and the flag its run stops on.
struct RunningJob {
    claim: JobClaim,
    lost: Arc<AtomicBool>,
}

/// What a job needs.
pub struct JobDeps {
    /// Job records.
    pub jobs: Arc<dyn JobStore>,
    /// Telemetry, to build datasets.
    pub telemetry: Arc<dyn TelemetryStore>,
    /// Late labels: targets of datasets that take them.
    pub labels: Arc<dyn strata_store::LabelStore>,
    /// The model registry.
    pub models: Arc<ModelRegistry>,
    /// Drift profiles (a trained version gets one).
    pub drift: Arc<crate::drift::Drift>,
    /// The device registry.
    pub registry: Arc<Registry>,
    /// Where jobs keep files (`<data>/jobs/<id>/`).
    pub dir: PathBuf,
}

impl JobRunner {
    /// Requeues jobs a previous process left running and starts the worker.
    pub fn start(deps: JobDeps) -> Result<JobRunner> {
        let requeued = deps.jobs.requeue_running_jobs(crate::now_ns())?;
        if requeued > 0 {
            tracing::info!(requeued, "jobs cut short by a restart are queued again");
        }
        let wake = Arc::new(Wake::set());
        let stop = Arc::new(AtomicBool::new(false));
        let running = Running::default();
        let runner = JobRunner {
            store: deps.jobs.clone(),
            wake: wake.clone(),
            stop: stop.clone(),
            running: running.clone(),
        };
        std::thread::Builder::new()
            .name("strata-jobs".into())
            .spawn(move || {
                run_at_lower_priority();
                worker(deps, wake, stop, running)
            })
            .map_err(|e| Error::Unavailable(format!("cannot start the job worker: {e}")))?;
        Ok(runner)
    }

    /// Queues a training job after checking its spec.
    pub fn submit_training(&self, spec: &TrainSpec) -> Result<Job> {
        spec.validate()?;
        self.submit("train", serde_json::to_value(spec).expect("JSON of a spec"))
    }

    /// Queues a backtest job.
    pub fn submit_backtest(&self, spec: &BacktestSpec) -> Result<Job> {
        if spec.versions.is_empty() {
            return Err(Error::BadRequest("the backtest names no version".into()));
        }
        super::dataset::vector_features(&spec.dataset.pipeline, &spec.dataset.vector)?;
        self.submit(
            "backtest",
            serde_json::to_value(spec).expect("JSON of a spec"),
        )
    }

    fn submit(&self, kind: &str, spec: serde_json::Value) -> Result<Job> {
        let id = self.store.create_job(kind, &spec, crate::now_ns())?;
        self.wake.wake();
        self.job(id)
    }

    /// One job.
    pub fn job(&self, id: i64) -> Result<Job> {
        self.store
            .job(id)?
            .ok_or_else(|| Error::NotFound(format!("no job {id}")))
    }

    /// The newest jobs.
    pub fn jobs(&self, limit: usize) -> Result<Vec<Job>> {
        Ok(self.store.jobs(limit)?)
    }

    /// A job's log.
    pub fn log(&self, id: i64) -> Result<Vec<JobLogLine>> {
        self.job(id)?;
        Ok(self.store.job_log(id)?)
    }

    /// Cancels a job that has not ended: a queued one never starts, a
    /// running one stops at its next step (at once on this hub; within a
    /// few seconds on another replica sharing the job store, at its next
    /// write). Cancelling a cancelled job again changes nothing; one that
    /// has succeeded or failed cannot be.
    pub fn cancel(&self, id: i64, reason: &str) -> Result<Job> {
        let job = self
            .store
            .cancel_job(id, reason, crate::now_ns())?
            .ok_or_else(|| Error::NotFound(format!("no job {id}")))?;
        match job.state {
            JobState::Cancelled => {}
            JobState::Queued | JobState::Running => {
                return Err(Error::Conflict(format!(
                    "job {id} is registering its result: too late to cancel"
                )));
            }
            JobState::Succeeded | JobState::Failed => {
                return Err(Error::Conflict(format!(
                    "job {id} has already {}: {}",
                    job.state.as_str(),
                    job.message
                )));
            }
        }
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(run) = running.as_ref().filter(|r| r.claim.id == id) {
            run.lost.store(true, Ordering::Relaxed);
        }
        tracing::info!(job = id, "job cancelled: {}", job.message);
        Ok(job)
    }

    /// Stops the worker, and lets the job it runs go (queued again, not
    /// counted as cut short: the hub is stopping cleanly).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.wake();
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(RunningJob { claim, .. }) = running {
            match self.store.release_job(claim) {
                Ok(true) => tracing::info!(job = claim.id, "the running job is queued again"),
                Ok(false) => {}
                Err(e) => tracing::warn!(job = claim.id, "cannot queue the running job again: {e}"),
            }
        }
    }
}

/// The nice value the job worker runs at, when the hub runs at a lower
/// one: training and backtests take the CPU that ingest, the broker and
/// the API leave, and so do the external trainers it starts (they inherit
/// it).
const JOB_NICENESS: i32 = 10;

/// Lowers the calling thread's priority to [`JOB_NICENESS`] (on Linux
/// the nice value belongs to each thread, and what it starts inherits it).
fn run_at_lower_priority() {
    let now = rustix::process::getpriority_process(None).unwrap_or(0);
    if now < JOB_NICENESS
        && let Err(e) = rustix::process::setpriority_process(None, JOB_NICENESS)
    {
        tracing::warn!("cannot lower the job worker's priority: {e}");
    }
}

/// How often a worker says the job it runs is alive, and an idle worker
/// looks for queued jobs (and, in a store replicas share, for jobs whose
/// worker went silent).
const LOOK_EVERY: Duration = Duration::from_secs(5);

fn worker(deps: JobDeps, wake: Arc<Wake>, stop: Arc<AtomicBool>, running: Running) {
    while !stop.load(Ordering::Relaxed) {
        match deps.jobs.claim_job(crate::now_ns()) {
            Ok(Some(job)) => {
                let lost = Arc::new(AtomicBool::new(false));
                *running.lock().unwrap_or_else(|e| e.into_inner()) = Some(RunningJob {
                    claim: job.claim(),
                    lost: lost.clone(),
                });
                // Stopped meanwhile: let it go again at once.
                if stop.load(Ordering::Relaxed) {
                    let run = running.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(run) = run {
                        let _ = deps.jobs.release_job(run.claim);
                    }
                    return;
                }
                run_one(&deps, job, lost);
                running.lock().unwrap_or_else(|e| e.into_inner()).take();
            }
            Ok(None) => match deps.jobs.requeue_abandoned_jobs(crate::now_ns()) {
                Ok(0) => wake.wait(LOOK_EVERY),
                Ok(n) => {
                    tracing::info!(
                        requeued = n,
                        "jobs whose worker went silent are queued again"
                    )
                }
                Err(e) => {
                    tracing::warn!("cannot look for abandoned jobs: {e}");
                    wake.wait(LOOK_EVERY);
                }
            },
            Err(e) => {
                tracing::error!("cannot take a job: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn run_one(deps: &JobDeps, job: Job, lost: Arc<AtomicBool>) {
    let ctx = JobCtx {
        claim: job.claim(),
        store: deps.jobs.clone(),
        registry: deps.registry.clone(),
        last: Arc::new(Mutex::new((Instant::now(), 0.0))),
        lost,
    };
    tracing::info!(
        job = job.id,
        kind = job.kind,
        attempt = job.attempts,
        "job started"
    );
    let dir = deps.dir.join(job.id.to_string());
    let (done, alive) = std::sync::mpsc::channel::<()>();
    let outcome = std::thread::scope(|s| {
        // Says the job is alive until it ends: replicas sharing the job
        // store take a silent one back.
        let watched = &ctx;
        s.spawn(move || {
            while alive.recv_timeout(LOOK_EVERY) == Err(RecvTimeoutError::Timeout) {
                let answer = watched.store.job_alive(watched.claim, crate::now_ns());
                watched.answered("as alive", answer);
            }
        });
        let outcome = run_job(deps, &job, &dir, &ctx);
        drop(done);
        outcome
    });
    let now = crate::now_ns();
    let claim = job.claim();
    let finished = match &outcome {
        Ok(result) => deps
            .jobs
            .finish_job(claim, JobState::Succeeded, "done", Some(result), now),
        // Cancelled or taken back: the store refuses this run's end.
        Err(e) if ctx.lost() => {
            tracing::info!(job = job.id, "job stopped: {e}");
            return;
        }
        Err(e) => {
            tracing::warn!(job = job.id, "job failed: {e}");
            deps.jobs
                .finish_job(claim, JobState::Failed, &e.to_string(), None, now)
        }
    };
    match finished {
        Ok(true) => {}
        Ok(false) => tracing::info!(
            job = job.id,
            attempt = job.attempts,
            "this run's end is not recorded: {}",
            ctx.why_lost()
        ),
        Err(e) => tracing::error!(job = job.id, "cannot record the end of a job: {e}"),
    }
}

/// Runs `job`. A panic in a trainer fails its job, not the worker: later
/// jobs still run.
fn run_job(deps: &JobDeps, job: &Job, dir: &Path, ctx: &JobCtx) -> Result<serde_json::Value> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<serde_json::Value> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        match job.kind.as_str() {
            "train" => {
                let spec: TrainSpec = serde_json::from_value(job.spec.clone())
                    .map_err(|e| Error::BadRequest(format!("training spec: {e}")))?;
                let v = train::run(
                    &spec,
                    &*deps.telemetry,
                    &*deps.labels,
                    &deps.models,
                    &deps.drift,
                    dir,
                    ctx,
                )?;
                Ok(
                    serde_json::json!({ "model": v.model, "version": v.version, "metrics": v.metrics }),
                )
            }
            "backtest" => {
                let spec: BacktestSpec = serde_json::from_value(job.spec.clone())
                    .map_err(|e| Error::BadRequest(format!("backtest spec: {e}")))?;
                let report = backtest::run(&spec, &*deps.telemetry, &*deps.labels, &deps.models, ctx)?;
                Ok(serde_json::to_value(report).expect("JSON of a report"))
            }
            other => Err(Error::BadRequest(format!("unknown job kind {other:?}"))),
        }
    }))
    .unwrap_or_else(|panic| {
        Err(Error::Unavailable(format!(
            "the job crashed: {}",
            crate::panic_message(&*panic)
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::Durability;
    use strata_store::sqlite::SqliteStore;

    #[test]
    fn the_job_worker_runs_at_a_lower_priority_than_the_rest_of_the_hub() {
        let before = rustix::process::getpriority_process(None).unwrap();
        let worker = std::thread::spawn(|| {
            run_at_lower_priority();
            rustix::process::getpriority_process(None).unwrap()
        });
        assert_eq!(worker.join().unwrap(), JOB_NICENESS.max(before));
        assert_eq!(
            rustix::process::getpriority_process(None).unwrap(),
            before,
            "only the worker's thread"
        );
    }

    #[test]
    fn a_run_whose_job_was_taken_back_records_nothing_and_stops_before_registering() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), Durability::Process).unwrap());
        let registry = Arc::new(Registry::load(store.clone(), 3600).unwrap());
        let id = store
            .create_job("train", &serde_json::json!({}), 1)
            .unwrap();
        let first = store.claim_job(2).unwrap().unwrap();
        let ctx = |job: &Job| JobCtx {
            claim: job.claim(),
            store: store.clone(),
            registry: registry.clone(),
            last: Arc::new(Mutex::new((Instant::now(), 0.0))),
            lost: Arc::new(AtomicBool::new(false)),
        };
        let stale = ctx(&first);
        stale.log("reading");
        assert!(stale.begin_commit().is_ok());

        // Taken back: queued again and claimed as the next attempt.
        assert_eq!(store.requeue_running_jobs(0).unwrap(), 1);
        let second = store.claim_job(3).unwrap().unwrap();
        assert_eq!((second.id, second.attempts), (id, 2));
        let current = ctx(&second);

        stale.log("stale");
        let err = stale.begin_commit().unwrap_err();
        assert!(err.to_string().contains("taken back"), "{err}");
        current.log("again");
        assert!(current.begin_commit().is_ok());
        let log: Vec<String> = store
            .job_log(id)
            .unwrap()
            .into_iter()
            .map(|l| l.line)
            .collect();
        assert_eq!(log, ["reading", "again"]);
    }

    #[test]
    fn a_run_whose_job_was_cancelled_stops_its_trainer_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), Durability::Process).unwrap());
        let registry = Arc::new(Registry::load(store.clone(), 3600).unwrap());
        store
            .create_job("train", &serde_json::json!({}), 1)
            .unwrap();
        let job = store.claim_job(2).unwrap().unwrap();
        let ctx = JobCtx {
            claim: job.claim(),
            store: store.clone(),
            registry,
            // The last progress stored a second ago: the next is stored.
            last: Arc::new(Mutex::new((Instant::now() - Duration::from_secs(1), 0.0))),
            lost: Arc::new(AtomicBool::new(false)),
        };
        let step = |done| strata_train::Progress {
            done,
            total: 10,
            message: format!("tree {done}/10"),
        };
        let mut progress = ctx.trainer_progress(0.3, 0.6);
        assert_eq!(progress(step(1)), ControlFlow::Continue(()));
        store.cancel_job(job.id, "cancelled by ops", 3).unwrap();
        // Cancelled elsewhere (another replica): the run's next write,
        // here its sign of life, is refused, and the trainer stops at
        // its next step.
        ctx.answered("as alive", store.job_alive(ctx.claim, 4));
        assert_eq!(progress(step(2)), ControlFlow::Break(()));
        let err = ctx.go_on().unwrap_err();
        assert_eq!(
            err.to_string(),
            Error::Conflict(format!("job {} was cancelled: cancelled by ops", job.id)).to_string()
        );
        assert!(ctx.begin_commit().is_err());
        let stored = store.job(job.id).unwrap().unwrap();
        assert_eq!(
            (stored.state, stored.progress),
            (JobState::Cancelled, 0.3 + 0.6 * 0.1)
        );
    }
}
