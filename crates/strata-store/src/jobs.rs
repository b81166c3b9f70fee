//! The records of long-running hub jobs (training, backtests): state,
//! progress and a log, stored so a job survives a hub restart.

use serde::{Deserialize, Serialize};

use crate::error::{Result, corrupt};

/// A job cut short this many times (its hub stopped without letting it
/// go: a crash, or a worker that went silent) is failed rather than
/// started again: it may be what brings the hub down. A hub that stops
/// cleanly lets its job go ([`crate::JobStore::release_job`]), which does
/// not count.
pub const MAX_JOB_ATTEMPTS: u32 = 3;

/// What a job cut short [`MAX_JOB_ATTEMPTS`] times says.
pub(crate) const GAVE_UP: &str = "failed: cut short every time it ran (3 times): it may be what stops the hub; submit it again to retry";

/// What a job its hub let go of on stopping says.
pub(crate) const RELEASED: &str = "queued again: the hub stopped while it ran";

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A worker runs it.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error (the message says why).
    Failed,
    /// Stopped on request, or past its time limit (the message says who
    /// or what stopped it). A running job's worker learns at its next
    /// write to the store and stops. Stored as `failed` with the time it
    /// was cancelled, so that hubs of an earlier release sharing the job
    /// store read it (as failed).
    Cancelled,
}

impl JobState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }

    /// Whether the job has ended.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    /// Its id.
    pub id: i64,
    /// What it does (`train`, `backtest`).
    pub kind: String,
    /// What it was asked to do, as given.
    pub spec: serde_json::Value,
    /// Its state.
    pub state: JobState,
    /// Progress from 0 to 1.
    pub progress: f64,
    /// The latest status line, or the error of a failed job.
    pub message: String,
    /// What it produced (e.g. the registered model version, a report).
    pub result: Option<serde_json::Value>,
    /// How many times a worker started it (a restart of the hub starts an
    /// unfinished job again).
    pub attempts: u32,
    /// Creation time, ns.
    pub created_ns: i64,
    /// When a worker last started it, ns.
    pub started_ns: Option<i64>,
    /// When it finished, ns.
    pub finished_ns: Option<i64>,
}

/// A worker's claim of a job: the job, and which start of it the worker
/// runs ([`Job::attempts`] when it took it). Where replicas share the job
/// store, a job whose worker went silent is queued again and taken by
/// another worker as the next attempt; the silent one, should it come
/// back, no longer records anything for the job (its progress, its end),
/// and learns so from the store's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobClaim {
    /// The job.
    pub id: i64,
    /// Which start of it.
    pub attempt: u32,
}

impl Job {
    /// The claim of the worker that took this job (as
    /// [`crate::JobStore::claim_job`] returns it).
    pub fn claim(&self) -> JobClaim {
        JobClaim {
            id: self.id,
            attempt: self.attempts,
        }
    }
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobLogLine {
    /// When, ns.
    pub ts_ns: i64,
    /// The line.
    pub line: String,
}

/// Lines kept per job: a runaway external trainer cannot fill the disk.
pub(crate) const MAX_LOG_LINES: i64 = 10_000;

/// The columns of a stored job, in the order both engines keep them.
pub(crate) const JOB_COLUMNS: &str = "id, kind, spec, state, progress, message, result, \
                                      attempts, created_ns, started_ns, finished_ns, cancelled_ns";

/// A job as stored, its JSON and state still text.
pub(crate) struct StoredJob<'a> {
    pub id: i64,
    pub kind: String,
    pub spec: &'a str,
    pub state: &'a str,
    pub progress: f64,
    pub message: String,
    pub result: Option<&'a str>,
    pub attempts: u32,
    pub created_ns: i64,
    pub started_ns: Option<i64>,
    pub finished_ns: Option<i64>,
    pub cancelled_ns: Option<i64>,
}

impl StoredJob<'_> {
    /// The job, its text decoded.
    pub(crate) fn decode(self) -> Result<Job> {
        Ok(Job {
            id: self.id,
            kind: self.kind,
            spec: serde_json::from_str(self.spec).map_err(corrupt)?,
            state: match JobState::parse(self.state) {
                Some(JobState::Failed) if self.cancelled_ns.is_some() => JobState::Cancelled,
                Some(state) => state,
                None => return Err(corrupt(format!("job state {:?}", self.state))),
            },
            progress: self.progress,
            message: self.message,
            result: self
                .result
                .map(serde_json::from_str)
                .transpose()
                .map_err(corrupt)?,
            attempts: self.attempts,
            created_ns: self.created_ns,
            started_ns: self.started_ns,
            finished_ns: self.finished_ns,
        })
    }
}
