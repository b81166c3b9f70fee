//! The job runner: training and backtest jobs run one at a time on a
//! worker thread (the hub has other work; on two cores one job at a time
//! keeps ingest responsive). Jobs, their progress and logs are stored, so a
//! job cut short by a hub restart is queued again and run from the start.
//! Where replicas share the job store, each replica's worker takes queued
//! jobs, says every [`LOOK_EVERY`] that the one it runs is alive, and when
//! idle puts back in the queue those whose worker went silent.

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

/// What a running job reports through: progress, log lines, lookups.
#[derive(Clone)]
pub struct JobCtx {
    claim: JobClaim,
    store: Arc<dyn JobStore>,
    registry: Arc<Registry>,
    last: Arc<Mutex<(Instant, f64)>>,
    /// The store said the job is no longer this run's (its worker went
    /// silent and another replica took it back).
    taken_over: Arc<AtomicBool>,
}

impl JobCtx {
    /// The job's id.
    pub fn id(&self) -> i64 {
        self.claim.id
    }

    /// Fails once the job is no longer this run's: another replica's
    /// worker took it back while this one was silent and runs it again.
    /// Checked before the job changes anything beyond itself (registering
    /// a model version), so a job taken back does that once.
    pub fn still_mine(&self) -> Result<()> {
        let alive = self.store.job_alive(self.claim, crate::now_ns())?;
        if !alive {
            self.taken_over.store(true, Ordering::Relaxed);
        }
        if self.taken_over.load(Ordering::Relaxed) {
            return Err(Error::Conflict(format!(
                "job {} was taken back by another worker while this one was silent; \
                 this run stops",
                self.claim.id
            )));
        }
        Ok(())
    }

    /// Records what the store answered to a write of this run's.
    fn answered(&self, what: &str, answer: strata_store::Result<bool>) {
        match answer {
            Ok(true) => {}
            Ok(false) => self.taken_over.store(true, Ordering::Relaxed),
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

/// The claim of the job the worker runs, if any.
type Running = Arc<Mutex<Option<JobClaim>>>;

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
            .spawn(move || worker(deps, wake, stop, running))
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
        if let Some(claim) = running {
            match self.store.release_job(claim) {
                Ok(true) => tracing::info!(job = claim.id, "the running job is queued again"),
                Ok(false) => {}
                Err(e) => tracing::warn!(job = claim.id, "cannot queue the running job again: {e}"),
            }
        }
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
                *running.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.claim());
                // Stopped meanwhile: let it go again at once.
                if stop.load(Ordering::Relaxed) {
                    let claim = running.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(claim) = claim {
                        let _ = deps.jobs.release_job(claim);
                    }
                    return;
                }
                run_one(&deps, job);
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

fn run_one(deps: &JobDeps, job: Job) {
    let ctx = JobCtx {
        claim: job.claim(),
        store: deps.jobs.clone(),
        registry: deps.registry.clone(),
        last: Arc::new(Mutex::new((Instant::now(), 0.0))),
        taken_over: Arc::new(AtomicBool::new(false)),
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
        Err(e) => {
            tracing::warn!(job = job.id, "job failed: {e}");
            deps.jobs
                .finish_job(claim, JobState::Failed, &e.to_string(), None, now)
        }
    };
    match finished {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            job = job.id,
            attempt = job.attempts,
            "the job was taken back by another worker while this one was silent; \
             this run's end is not recorded"
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
            taken_over: Arc::new(AtomicBool::new(false)),
        };
        let stale = ctx(&first);
        stale.log("reading");
        assert!(stale.still_mine().is_ok());

        // Taken back: queued again and claimed as the next attempt.
        assert_eq!(store.requeue_running_jobs(0).unwrap(), 1);
        let second = store.claim_job(3).unwrap().unwrap();
        assert_eq!((second.id, second.attempts), (id, 2));
        let current = ctx(&second);

        stale.log("stale");
        let err = stale.still_mine().unwrap_err();
        assert!(err.to_string().contains("taken back"), "{err}");
        current.log("again");
        assert!(current.still_mine().is_ok());
        let log: Vec<String> = store
            .job_log(id)
            .unwrap()
            .into_iter()
            .map(|l| l.line)
            .collect();
        assert_eq!(log, ["reading", "again"]);
    }
}
