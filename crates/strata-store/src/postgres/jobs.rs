//! Training and backtest jobs in PostgreSQL, shared by hub replicas whose
//! telemetry is there too: a job queued at any replica is run by whichever
//! replica's worker takes it first, and every replica lists it.
//!
//! `shared_jobs` and `shared_job_log` hold what the SQLite store keeps in
//! `jobs` and `job_log`, and `alive_ns`: a worker running a job says so
//! every few seconds ([`JobStore::job_alive`]). A replica cannot tell at
//! start which running jobs were its own, so none is put back then;
//! instead a running job silent for [`SILENT_NS`] (its worker's replica
//! stopped or lost the database) goes back in the queue at the next idle
//! worker's look, whichever replica that is. Each take is one more
//! attempt: the worker that took an earlier one, should it come back,
//! records nothing more for the job ([`crate::JobClaim`]).

use postgres::Row;

use super::Connection;
use crate::error::{Context, Result, corrupt};
use crate::jobs::{GAVE_UP, JOB_COLUMNS, MAX_JOB_ATTEMPTS, MAX_LOG_LINES, RELEASED, StoredJob};
use crate::{Job, JobClaim, JobLogLine, JobState, JobStore};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_jobs (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    state       TEXT NOT NULL,
    progress    DOUBLE PRECISION NOT NULL DEFAULT 0,
    message     TEXT NOT NULL DEFAULT '',
    result      TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_ns  BIGINT NOT NULL,
    started_ns  BIGINT,
    finished_ns BIGINT,
    alive_ns    BIGINT
);
CREATE INDEX IF NOT EXISTS shared_jobs_by_state ON shared_jobs (state, id);
CREATE TABLE IF NOT EXISTS shared_job_log (
    n       BIGSERIAL PRIMARY KEY,
    job_id  BIGINT NOT NULL REFERENCES shared_jobs(id),
    ts_ns   BIGINT NOT NULL,
    line    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shared_job_log_by_job ON shared_job_log (job_id, n);
ALTER TABLE shared_jobs ADD COLUMN IF NOT EXISTS cut_short INTEGER NOT NULL DEFAULT 0;
ALTER TABLE shared_jobs ADD COLUMN IF NOT EXISTS cancelled_ns BIGINT;
ALTER TABLE shared_jobs ADD COLUMN IF NOT EXISTS committing BOOLEAN NOT NULL DEFAULT false;
";

/// How long a running job's worker may be silent before the job is taken
/// to be abandoned: six of the hub's five-second signs of life.
pub const SILENT_NS: i64 = 30_000_000_000;

/// The PostgreSQL job store.
pub struct PostgresJobs {
    db: Connection,
}

impl PostgresJobs {
    /// Connects to the database at `url` and makes the tables if needed.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(PostgresJobs {
            db: Connection::open(url, SCHEMA, "job")?,
        })
    }
}

/// A row of [`JOB_COLUMNS`].
fn job_row(r: &Row) -> Result<Job> {
    StoredJob {
        id: r.get(0),
        kind: r.get(1),
        spec: r.get(2),
        state: r.get(3),
        progress: r.get(4),
        message: r.get(5),
        result: r.get(6),
        attempts: u32::try_from(r.get::<_, i32>(7)).map_err(corrupt)?,
        created_ns: r.get(8),
        started_ns: r.get(9),
        finished_ns: r.get(10),
        cancelled_ns: r.get(11),
    }
    .decode()
}

impl JobStore for PostgresJobs {
    fn create_job(&self, kind: &str, spec: &serde_json::Value, now_ns: i64) -> Result<i64> {
        self.db.with(|c| {
            Ok(c.query_one(
                "INSERT INTO shared_jobs (kind, spec, state, created_ns)
                 VALUES ($1, $2, 'queued', $3) RETURNING id",
                &[&kind, &spec.to_string(), &now_ns],
            )
            .context(|| format!("cannot queue a {kind} job"))?
            .get(0))
        })
    }

    fn jobs(&self, limit: usize) -> Result<Vec<Job>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.with(|c| {
            c.query(
                &format!("SELECT {JOB_COLUMNS} FROM shared_jobs ORDER BY id DESC LIMIT $1"),
                &[&limit],
            )
            .context(|| "cannot list jobs".into())?
            .iter()
            .map(job_row)
            .collect()
        })
    }

    fn job(&self, id: i64) -> Result<Option<Job>> {
        self.db.with(|c| {
            c.query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM shared_jobs WHERE id = $1"),
                &[&id],
            )
            .context(|| format!("cannot look up job {id}"))?
            .map(|r| job_row(&r))
            .transpose()
        })
    }

    fn claim_job(&self, now_ns: i64) -> Result<Option<Job>> {
        self.db.with(|c| {
            // Replicas looking at once each take a different job: a row
            // another has locked is skipped, not waited for.
            c.query_opt(
                &format!(
                    "UPDATE shared_jobs
                     SET state = 'running', attempts = attempts + 1, started_ns = $1,
                         alive_ns = $1, committing = false
                     WHERE id = (SELECT id FROM shared_jobs WHERE state = 'queued'
                                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING {JOB_COLUMNS}"
                ),
                &[&now_ns],
            )
            .context(|| "cannot claim a job".into())?
            .map(|r| job_row(&r))
            .transpose()
        })
    }

    fn job_progress(
        &self,
        claim: JobClaim,
        progress: f64,
        line: &str,
        now_ns: i64,
    ) -> Result<bool> {
        let id = claim.id;
        let attempt = i32::try_from(claim.attempt).unwrap_or(i32::MAX);
        self.db.with(|c| {
            let what = || format!("cannot record progress of job {id}");
            let mut tx = c.transaction().context(what)?;
            let updated = tx
                .execute(
                    "UPDATE shared_jobs SET progress = $2, message = $3, alive_ns = $4
                     WHERE id = $1 AND attempts = $5 AND state = 'running'",
                    &[&id, &progress.clamp(0.0, 1.0), &line, &now_ns, &attempt],
                )
                .context(what)?;
            if updated == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO shared_job_log (job_id, ts_ns, line)
                 SELECT $1, $2, $3
                 WHERE (SELECT count(*) FROM shared_job_log WHERE job_id = $1) < $4",
                &[&id, &now_ns, &line, &MAX_LOG_LINES],
            )
            .and_then(|_| tx.commit())
            .context(what)?;
            Ok(true)
        })
    }

    fn finish_job(
        &self,
        claim: JobClaim,
        state: JobState,
        message: &str,
        result: Option<&serde_json::Value>,
        now_ns: i64,
    ) -> Result<bool> {
        let id = claim.id;
        let attempt = i32::try_from(claim.attempt).unwrap_or(i32::MAX);
        self.db.with(|c| {
            let what = || format!("cannot finish job {id}");
            let mut tx = c.transaction().context(what)?;
            let progress: Option<f64> = (state == JobState::Succeeded).then_some(1.0);
            let updated = tx
                .execute(
                    "UPDATE shared_jobs SET state = $2, message = $3, result = $4, finished_ns = $5,
                            progress = coalesce($6, progress)
                     WHERE id = $1 AND attempts = $7 AND state = 'running'",
                    &[
                        &id,
                        &state.as_str(),
                        &message,
                        &result.map(|r| r.to_string()),
                        &now_ns,
                        &progress,
                        &attempt,
                    ],
                )
                .context(what)?;
            if updated == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO shared_job_log (job_id, ts_ns, line) VALUES ($1, $2, $3)",
                &[&id, &now_ns, &format!("{}: {message}", state.as_str())],
            )
            .and_then(|_| tx.commit())
            .context(what)?;
            Ok(true)
        })
    }

    fn cancel_job(&self, id: i64, reason: &str, now_ns: i64) -> Result<Option<Job>> {
        self.db.with(|c| {
            let what = || format!("cannot cancel job {id}");
            let mut tx = c.transaction().context(what)?;
            let updated = tx
                .execute(
                    "UPDATE shared_jobs SET state = 'failed', cancelled_ns = $3, message = $2,
                            finished_ns = $3
                     WHERE id = $1 AND state IN ('queued', 'running') AND NOT committing",
                    &[&id, &reason, &now_ns],
                )
                .context(what)?;
            if updated > 0 {
                tx.execute(
                    "INSERT INTO shared_job_log (job_id, ts_ns, line) VALUES ($1, $2, $3)",
                    &[&id, &now_ns, &format!("cancelled: {reason}")],
                )
                .context(what)?;
            }
            tx.commit().context(what)
        })?;
        self.job(id)
    }

    fn job_log(&self, id: i64) -> Result<Vec<JobLogLine>> {
        self.db.with(|c| {
            Ok(c.query(
                "SELECT ts_ns, line FROM shared_job_log WHERE job_id = $1 ORDER BY n",
                &[&id],
            )
            .context(|| format!("cannot read the log of job {id}"))?
            .iter()
            .map(|r| JobLogLine {
                ts_ns: r.get(0),
                line: r.get(1),
            })
            .collect())
        })
    }

    /// None: the others' running jobs are not this replica's to take back
    /// at its start (see the module's documentation).
    fn requeue_running_jobs(&self, _now_ns: i64) -> Result<u64> {
        Ok(0)
    }

    fn begin_commit(&self, claim: JobClaim) -> Result<bool> {
        let (id, attempt) = (claim.id, i32::try_from(claim.attempt).unwrap_or(i32::MAX));
        self.db.with(|c| {
            let n = c
                .execute(
                    "UPDATE shared_jobs SET committing = true
                     WHERE id = $1 AND attempts = $2 AND state = 'running'",
                    &[&id, &attempt],
                )
                .context(|| format!("cannot mark job {id} as committing"))?;
            Ok(n > 0)
        })
    }

    fn job_alive(&self, claim: JobClaim, now_ns: i64) -> Result<bool> {
        let id = claim.id;
        let attempt = i32::try_from(claim.attempt).unwrap_or(i32::MAX);
        self.db.with(|c| {
            let updated = c
                .execute(
                    "UPDATE shared_jobs SET alive_ns = $2
                     WHERE id = $1 AND attempts = $3 AND state = 'running'",
                    &[&id, &now_ns, &attempt],
                )
                .context(|| format!("cannot say job {id} is alive"))?;
            Ok(updated > 0)
        })
    }

    fn requeue_abandoned_jobs(&self, now_ns: i64) -> Result<u64> {
        let most = MAX_JOB_ATTEMPTS as i32;
        self.db.with(|c| {
            c.execute(
                "UPDATE shared_jobs SET state = 'failed', message = $2, finished_ns = $3
                 WHERE state = 'running' AND coalesce(alive_ns, 0) < $1 AND cut_short + 1 >= $4",
                &[&(now_ns - SILENT_NS), &GAVE_UP, &now_ns, &most],
            )
            .context(|| "cannot fail jobs cut short too often".into())?;
            c.execute(
                "UPDATE shared_jobs
                 SET state = 'queued', cut_short = cut_short + 1,
                     message = 'queued again: its worker went silent'
                 WHERE state = 'running' AND coalesce(alive_ns, 0) < $1",
                &[&(now_ns - SILENT_NS)],
            )
            .context(|| "cannot requeue abandoned jobs".into())
        })
    }

    fn release_job(&self, claim: JobClaim) -> Result<bool> {
        let (id, attempt) = (claim.id, i32::try_from(claim.attempt).unwrap_or(i32::MAX));
        self.db.with(|c| {
            let n = c
                .execute(
                    "UPDATE shared_jobs SET state = 'queued', alive_ns = NULL, message = $3
                     WHERE id = $1 AND attempts = $2 AND state = 'running'",
                    &[&id, &attempt, &RELEASED],
                )
                .context(|| format!("cannot queue job {id} again"))?;
            Ok(n > 0)
        })
    }
}
