//! [`JobStore`] for SQLite: the job queue, progress and logs.

use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use crate::error::{Context, Result, corrupt};
use crate::{Job, JobLogLine, JobState, JobStore};

const JOB_COLUMNS: &str = "id, kind, spec, state, progress, message, result, attempts, created_ns, started_ns, finished_ns";

/// Lines kept per job: a runaway external trainer cannot fill the disk.
const MAX_LOG_LINES: i64 = 10_000;

fn job_row(r: &Row<'_>) -> rusqlite::Result<Result<Job>> {
    let spec: String = r.get(2)?;
    let state: String = r.get(3)?;
    let result: Option<String> = r.get(6)?;
    let id = r.get(0)?;
    let kind = r.get(1)?;
    let progress = r.get(4)?;
    let message = r.get(5)?;
    let attempts = r.get(7)?;
    let created_ns = r.get(8)?;
    let started_ns = r.get(9)?;
    let finished_ns = r.get(10)?;
    Ok((|| {
        Ok(Job {
            id,
            kind,
            spec: serde_json::from_str(&spec).map_err(corrupt)?,
            state: JobState::parse(&state)
                .ok_or_else(|| corrupt(format!("job state {state:?}")))?,
            progress,
            message,
            result: result
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .map_err(corrupt)?,
            attempts,
            created_ns,
            started_ns,
            finished_ns,
        })
    })())
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
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_ns = ?2
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

    fn job_progress(&self, id: i64, progress: f64, line: &str, now_ns: i64) -> Result<()> {
        self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot start a transaction".into())?;
            tx.execute(
                "UPDATE jobs SET progress = ?2, message = ?3 WHERE id = ?1",
                params![id, progress.clamp(0.0, 1.0), line],
            )
            .context(|| format!("cannot record progress of job {id}"))?;
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
                .context(|| format!("cannot record progress of job {id}"))
        })
    }

    fn finish_job(
        &self,
        id: i64,
        state: JobState,
        message: &str,
        result: Option<&serde_json::Value>,
        now_ns: i64,
    ) -> Result<()> {
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
            tx.execute(
                "UPDATE jobs SET state = ?2, message = ?3, result = ?4, finished_ns = ?5,
                        progress = CASE WHEN ?6 >= 0 THEN ?6 ELSE progress END
                 WHERE id = ?1",
                params![
                    id,
                    state.as_str(),
                    message,
                    result.map(|r| r.to_string()),
                    now_ns,
                    progress
                ],
            )
            .context(|| format!("cannot finish job {id}"))?;
            tx.execute(
                "INSERT INTO job_log (job_id, ts_ns, line) VALUES (?1, ?2, ?3)",
                params![id, now_ns, format!("{}: {message}", state.as_str())],
            )
            .context(|| format!("cannot log for job {id}"))?;
            tx.commit().context(|| format!("cannot finish job {id}"))
        })
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

    fn requeue_running_jobs(&self) -> Result<u64> {
        self.write(|w| {
            let n = w
                .conn
                .execute(
                    "UPDATE jobs SET state = 'queued', message = 'restarted after a hub restart'
                     WHERE state = 'running'",
                    [],
                )
                .context(|| "cannot requeue jobs".into())?;
            Ok(n as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_goes_through_its_life_and_a_restart_requeues_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), crate::Durability::Process).unwrap();
        let a = store
            .create_job("train", &serde_json::json!({"x": 1}), 1)
            .unwrap();
        let b = store
            .create_job("backtest", &serde_json::json!({}), 2)
            .unwrap();
        let got = store.claim_job(3).unwrap().unwrap();
        assert_eq!((got.id, got.state, got.attempts), (a, JobState::Running, 1));
        store.job_progress(a, 0.5, "half way", 4).unwrap();
        // The hub dies here: a restart puts the job back in the queue.
        assert_eq!(store.requeue_running_jobs().unwrap(), 1);
        let again = store.claim_job(5).unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (a, 2));
        store
            .finish_job(
                a,
                JobState::Succeeded,
                "done",
                Some(&serde_json::json!({"v": 1})),
                6,
            )
            .unwrap();
        let done = store.job(a).unwrap().unwrap();
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(done.progress, 1.0);
        assert_eq!(done.result, Some(serde_json::json!({"v": 1})));
        let log: Vec<String> = store
            .job_log(a)
            .unwrap()
            .into_iter()
            .map(|l| l.line)
            .collect();
        assert_eq!(log, ["half way", "succeeded: done"]);
        assert_eq!(store.claim_job(7).unwrap().unwrap().id, b);
        assert!(store.claim_job(8).unwrap().is_none());
        assert_eq!(store.jobs(10).unwrap()[0].id, b);
    }
}
