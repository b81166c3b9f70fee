//! [`JobStore`] for SQLite: the job queue, progress and logs.

use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use crate::error::{Context, Result};
use crate::jobs::{GAVE_UP, JOB_COLUMNS, MAX_JOB_ATTEMPTS, MAX_LOG_LINES, RELEASED, StoredJob};
use crate::{Job, JobClaim, JobLogLine, JobState, JobStore};

fn job_row(r: &Row<'_>) -> rusqlite::Result<Result<Job>> {
    let stored = StoredJob {
        id: r.get(0)?,
        kind: r.get(1)?,
        spec: r.get_ref(2)?.as_str()?,
        state: r.get_ref(3)?.as_str()?,
        progress: r.get(4)?,
        message: r.get(5)?,
        result: r.get_ref(6)?.as_str_or_null()?,
        attempts: r.get(7)?,
        created_ns: r.get(8)?,
        started_ns: r.get(9)?,
        finished_ns: r.get(10)?,
        cancelled_ns: r.get(11)?,
    };
    Ok(stored.decode())
}

impl JobStore for SqliteStore {
    fn create_job(&self, kind: &str, spec: &serde_json::Value, now_ns: i64) -> Result<i64> {
        self.write(|w| {
            w.conn
                .execute(
                    "INSERT INTO jobs (kind, spec, state, created_ns) VALUES (?1, ?2, 'queued', ?3)",
                    params![kind, spec.to_string(), now_ns],
                )
                .context(|| format!("cannot queue a {kind} job"))?;
            Ok(w.conn.last_insert_rowid())
        })
    }

    fn jobs(&self, limit: usize) -> Result<Vec<Job>> {
        self.read(|conn| {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY id DESC LIMIT ?1");
            let mut stmt = conn
                .prepare_cached(&sql)
                .context(|| "cannot list jobs".into())?;
            let rows = stmt
                .query_map(params![limit as i64], job_row)
                .context(|| "cannot list jobs".into())?;
            rows.map(|r| r.context(|| "cannot read a job".into())?)
                .collect()
        })
    }

    fn job(&self, id: i64) -> Result<Option<Job>> {
        self.read(|conn| {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
            conn.query_row(&sql, params![id], job_row)
                .optional()
                .context(|| format!("cannot look up job {id}"))?
                .transpose()
        })
    }

    fn claim_job(&self, now_ns: i64) -> Result<Option<Job>> {
        let claimed = self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot start a transaction".into())?;
            let id: Option<i64> = tx
                .query_row(
                    "SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .context(|| "cannot look for a queued job".into())?;
            if let Some(id) = id {
                tx.execute(
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_ns = ?2,
                            committing = 0
                     WHERE id = ?1",
                    params![id, now_ns],
                )
                .context(|| format!("cannot start job {id}"))?;
            }
            tx.commit().context(|| "cannot claim a job".into())?;
            Ok(id)
        })?;
        match claimed {
            Some(id) => self.job(id),
            None => Ok(None),
        }
    }

    fn job_progress(
        &self,
        claim: JobClaim,
        progress: f64,
        line: &str,
        now_ns: i64,
    ) -> Result<bool> {
        let id = claim.id;
        self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot start a transaction".into())?;
            let updated = tx
                .execute(
                    "UPDATE jobs SET progress = ?2, message = ?3
                     WHERE id = ?1 AND attempts = ?4 AND state = 'running'",
                    params![id, progress.clamp(0.0, 1.0), line, claim.attempt],
                )
                .context(|| format!("cannot record progress of job {id}"))?;
            if updated == 0 {
                return Ok(false);
            }
            let lines: i64 = tx
                .query_row(
                    "SELECT count(*) FROM job_log WHERE job_id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .context(|| format!("cannot count the log of job {id}"))?;
            if lines < MAX_LOG_LINES {
                tx.execute(
                    "INSERT INTO job_log (job_id, ts_ns, line) VALUES (?1, ?2, ?3)",
                    params![id, now_ns, line],
                )
                .context(|| format!("cannot log for job {id}"))?;
            }
            tx.commit()
                .context(|| format!("cannot record progress of job {id}"))?;
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
        self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot start a transaction".into())?;
            let progress = if state == JobState::Succeeded {
                1.0
            } else {
                -1.0
            };
            let updated = tx
                .execute(
                    "UPDATE jobs SET state = ?2, message = ?3, result = ?4, finished_ns = ?5,
                            progress = CASE WHEN ?6 >= 0 THEN ?6 ELSE progress END
                     WHERE id = ?1 AND attempts = ?7 AND state = 'running'",
                    params![
                        id,
                        state.as_str(),
                        message,
                        result.map(|r| r.to_string()),
                        now_ns,
                        progress,
                        claim.attempt
                    ],
                )
                .context(|| format!("cannot finish job {id}"))?;
            if updated == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO job_log (job_id, ts_ns, line) VALUES (?1, ?2, ?3)",
                params![id, now_ns, format!("{}: {message}", state.as_str())],
            )
            .context(|| format!("cannot log for job {id}"))?;
            tx.commit().context(|| format!("cannot finish job {id}"))?;
            Ok(true)
        })
    }

    fn cancel_job(&self, id: i64, reason: &str, now_ns: i64) -> Result<Option<Job>> {
        self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot start a transaction".into())?;
            let updated = tx
                .execute(
                    "UPDATE jobs SET state = 'failed', cancelled_ns = ?3, message = ?2,
                            finished_ns = ?3
                     WHERE id = ?1 AND state IN ('queued', 'running') AND committing = 0",
                    params![id, reason, now_ns],
                )
                .context(|| format!("cannot cancel job {id}"))?;
            if updated > 0 {
                tx.execute(
                    "INSERT INTO job_log (job_id, ts_ns, line) VALUES (?1, ?2, ?3)",
                    params![id, now_ns, format!("cancelled: {reason}")],
                )
                .context(|| format!("cannot log for job {id}"))?;
            }
            tx.commit().context(|| format!("cannot cancel job {id}"))
        })?;
        self.job(id)
    }

    fn job_log(&self, id: i64) -> Result<Vec<JobLogLine>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT ts_ns, line FROM job_log WHERE job_id = ?1 ORDER BY rowid")
                .context(|| "cannot read a job log".into())?;
            let rows = stmt
                .query_map(params![id], |r| {
                    Ok(JobLogLine {
                        ts_ns: r.get(0)?,
                        line: r.get(1)?,
                    })
                })
                .context(|| format!("cannot read the log of job {id}"))?;
            rows.collect::<rusqlite::Result<_>>()
                .context(|| format!("cannot read the log of job {id}"))
        })
    }

    fn requeue_running_jobs(&self, now_ns: i64) -> Result<u64> {
        self.write(|w| {
            w.conn
                .execute(
                    "UPDATE jobs SET state = 'failed', message = ?1, finished_ns = ?2
                     WHERE state = 'running' AND cut_short + 1 >= ?3",
                    params![GAVE_UP, now_ns, MAX_JOB_ATTEMPTS],
                )
                .context(|| "cannot fail jobs cut short too often".into())?;
            let n = w
                .conn
                .execute(
                    "UPDATE jobs SET state = 'queued', cut_short = cut_short + 1,
                            message = 'restarted after a hub restart'
                     WHERE state = 'running'",
                    [],
                )
                .context(|| "cannot requeue jobs".into())?;
            Ok(n as u64)
        })
    }

    fn release_job(&self, claim: JobClaim) -> Result<bool> {
        self.write(|w| {
            let n = w
                .conn
                .execute(
                    "UPDATE jobs SET state = 'queued', message = ?3
                     WHERE id = ?1 AND attempts = ?2 AND state = 'running'",
                    params![claim.id, claim.attempt, RELEASED],
                )
                .context(|| format!("cannot queue job {} again", claim.id))?;
            Ok(n > 0)
        })
    }

    fn begin_commit(&self, claim: JobClaim) -> Result<bool> {
        self.write(|w| {
            let n = w
                .conn
                .execute(
                    "UPDATE jobs SET committing = 1
                     WHERE id = ?1 AND attempts = ?2 AND state = 'running'",
                    params![claim.id, claim.attempt],
                )
                .context(|| format!("cannot mark job {} as committing", claim.id))?;
            Ok(n > 0)
        })
    }

    /// Nothing to record (no other process shares this store), but the
    /// answer: whether the job is still the claim's.
    fn job_alive(&self, claim: JobClaim, _now_ns: i64) -> Result<bool> {
        self.read(|c| {
            c.query_row(
                "SELECT count(*) FROM jobs WHERE id = ?1 AND attempts = ?2 AND state = 'running'",
                params![claim.id, claim.attempt],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .context(|| format!("cannot look at job {}", claim.id))
        })
    }
}
