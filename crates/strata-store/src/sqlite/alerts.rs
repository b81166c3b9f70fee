//! [`AlertStore`] for SQLite.

use rusqlite::{OptionalExtension as _, Transaction, params};

use super::SqliteStore;
use crate::alerts::{
    AlertEvent, AlertFilter, AlertStore, Delivery, NewDelivery, StoredAlert, StoredRun,
};
use crate::error::{Context, Error, Result};

const ALERT_COLUMNS: &str = "id, rule, device_id, state, raised_ns, updated_ns, body";
const DELIVERY_COLUMNS: &str =
    "id, endpoint, event, body, created_ns, state, attempts, next_ns, last_error, delivered_ns";

/// The oldest pending delivery of each endpoint: an endpoint receives its
/// deliveries in the order they were queued, so a later one waits while an
/// earlier one is being retried.
const HEADS: &str =
    "SELECT min(id) FROM webhook_deliveries WHERE state = 'pending' GROUP BY endpoint";

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredAlert, String)> {
    Ok((
        StoredAlert {
            id: r.get(0)?,
            rule: r.get(1)?,
            device: r.get(2)?,
            state: r.get(3)?,
            raised_ns: r.get(4)?,
            updated_ns: r.get(5)?,
            body: serde_json::Value::Null,
        },
        r.get(6)?,
    ))
}

fn parse_alert((mut alert, body): (StoredAlert, String)) -> Result<StoredAlert> {
    alert.body = serde_json::from_str(&body)
        .map_err(|e| Error::Corrupt(format!("alert {}: {e}", alert.id)))?;
    Ok(alert)
}

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        endpoint: r.get(1)?,
        event: r.get(2)?,
        body: r.get(3)?,
        created_ns: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        next_ns: r.get(7)?,
        last_error: r.get(8)?,
        delivered_ns: r.get(9)?,
    })
}

fn upsert_alert(tx: &Transaction<'_>, a: &StoredAlert) -> Result<()> {
    tx.execute(
        "INSERT INTO alerts (id, rule, device_id, state, raised_ns, updated_ns, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state,
             updated_ns = excluded.updated_ns, body = excluded.body",
        params![
            a.id,
            a.rule,
            a.device,
            a.state,
            a.raised_ns,
            a.updated_ns,
            a.body.to_string()
        ],
    )
    .context(|| format!("cannot store alert {}", a.id))?;
    Ok(())
}

const RUN_COLUMNS: &str = "id, workflow, state, next_ns, created_ns, updated_ns, body";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredRun, String)> {
    Ok((
        StoredRun {
            id: r.get(0)?,
            workflow: r.get(1)?,
            state: r.get(2)?,
            next_ns: r.get(3)?,
            created_ns: r.get(4)?,
            updated_ns: r.get(5)?,
            body: serde_json::Value::Null,
        },
        r.get(6)?,
    ))
}

fn parse_run((mut run, body): (StoredRun, String)) -> Result<StoredRun> {
    run.body = serde_json::from_str(&body)
        .map_err(|e| Error::Corrupt(format!("workflow run {}: {e}", run.id)))?;
    Ok(run)
}

fn insert_deliveries(tx: &Transaction<'_>, ds: &[NewDelivery], now_ns: i64) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(ds.len());
    for d in ds {
        tx.execute(
            "INSERT INTO webhook_deliveries
                 (endpoint, event, body, created_ns, state, attempts, next_ns)
             VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?4)",
            params![d.endpoint, d.event, d.body, now_ns],
        )
        .context(|| format!("cannot queue a webhook delivery to {}", d.endpoint))?;
        ids.push(tx.last_insert_rowid());
    }
    Ok(ids)
}

/// The `WHERE` of an [`AlertFilter`]: `?1` state, `?2` device, `?3` rule,
/// `?4` only open ones (1) or not (0).
const ALERT_FILTER: &str = "(?1 IS NULL OR state = ?1) AND (?2 IS NULL OR device_id = ?2)
    AND (?3 IS NULL OR rule = ?3) AND (?4 = 0 OR state != 'cleared')";

impl AlertStore for SqliteStore {
    fn record_alert(
        &self,
        alert: &StoredAlert,
        event: &AlertEvent,
        deliveries: &[NewDelivery],
        runs: &[StoredRun],
    ) -> Result<()> {
        self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot begin an alert change".into())?;
            upsert_alert(&tx, alert)?;
            tx.execute(
                "INSERT INTO alert_events (alert_id, ts_ns, kind, detail) VALUES (?1, ?2, ?3, ?4)",
                params![alert.id, event.ts_ns, event.kind, event.detail],
            )
            .context(|| format!("cannot record the history of alert {}", alert.id))?;
            insert_deliveries(&tx, deliveries, event.ts_ns)?;
            for r in runs {
                tx.execute(
                    "INSERT INTO workflow_runs (workflow, state, next_ns, created_ns, updated_ns, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        r.workflow,
                        r.state,
                        r.next_ns,
                        r.created_ns,
                        r.updated_ns,
                        r.body.to_string()
                    ],
                )
                .context(|| format!("cannot start a run of workflow {}", r.workflow))?;
            }
            tx.commit()
                .context(|| format!("cannot commit alert {}", alert.id))
        })
    }

    fn touch_alert(&self, alert: &StoredAlert) -> Result<()> {
        self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot begin an alert update".into())?;
            upsert_alert(&tx, alert)?;
            tx.commit()
                .context(|| format!("cannot commit alert {}", alert.id))
        })
    }

    fn alert(&self, id: i64) -> Result<Option<StoredAlert>> {
        self.read(|conn| {
            conn.query_row(
                &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"),
                params![id],
                alert_row,
            )
            .optional()
            .context(|| format!("cannot read alert {id}"))?
            .map(parse_alert)
            .transpose()
        })
    }

    fn alerts(&self, f: &AlertFilter, limit: usize) -> Result<Vec<StoredAlert>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts WHERE {ALERT_FILTER}
                     ORDER BY id DESC LIMIT ?5"
                ))
                .context(|| "cannot prepare an alert query".into())?;
            let rows = stmt
                .query_map(
                    params![f.state, f.device, f.rule, i64::from(f.open), limit as i64],
                    alert_row,
                )
                .context(|| "cannot read alerts".into())?;
            rows.map(|r| parse_alert(r.context(|| "cannot read an alert".into())?))
                .collect()
        })
    }

    fn count_alerts(&self, f: &AlertFilter) -> Result<u64> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!("SELECT count(*) FROM alerts WHERE {ALERT_FILTER}"))
                .context(|| "cannot prepare an alert count".into())?;
            let n: i64 = stmt
                .query_row(params![f.state, f.device, f.rule, i64::from(f.open)], |r| {
                    r.get(0)
                })
                .context(|| "cannot count alerts".into())?;
            Ok(n as u64)
        })
    }

    fn max_alert_id(&self) -> Result<i64> {
        self.read(|conn| {
            conn.query_row("SELECT coalesce(max(id), 0) FROM alerts", [], |r| r.get(0))
                .context(|| "cannot read the largest alert id".into())
        })
    }

    fn alert_events(&self, id: i64) -> Result<Vec<AlertEvent>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT ts_ns, kind, detail FROM alert_events WHERE alert_id = ?1
                     ORDER BY ts_ns, rowid",
                )
                .context(|| "cannot prepare an alert history query".into())?;
            let rows = stmt
                .query_map(params![id], |r| {
                    Ok(AlertEvent {
                        ts_ns: r.get(0)?,
                        kind: r.get(1)?,
                        detail: r.get(2)?,
                    })
                })
                .context(|| format!("cannot read the history of alert {id}"))?;
            rows.map(|r| r.context(|| format!("cannot read the history of alert {id}")))
                .collect()
        })
    }

    fn queue_deliveries(&self, deliveries: &[NewDelivery], now_ns: i64) -> Result<Vec<i64>> {
        self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot begin queueing deliveries".into())?;
            let ids = insert_deliveries(&tx, deliveries, now_ns)?;
            tx.commit()
                .context(|| "cannot commit queued deliveries".into())?;
            Ok(ids)
        })
    }

    fn due_deliveries(&self, now_ns: i64, limit: usize) -> Result<Vec<Delivery>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
                     WHERE id IN ({HEADS}) AND next_ns <= ?1 ORDER BY id LIMIT ?2"
                ))
                .context(|| "cannot prepare a delivery query".into())?;
            let rows = stmt
                .query_map(params![now_ns, limit as i64], delivery_row)
                .context(|| "cannot read due deliveries".into())?;
            rows.map(|r| r.context(|| "cannot read a delivery".into()))
                .collect()
        })
    }

    fn next_delivery_ns(&self) -> Result<Option<i64>> {
        self.read(|conn| {
            conn.query_row(
                &format!("SELECT min(next_ns) FROM webhook_deliveries WHERE id IN ({HEADS})"),
                [],
                |r| r.get(0),
            )
            .context(|| "cannot read the next delivery time".into())
        })
    }

    fn record_attempt(&self, d: &Delivery) -> Result<()> {
        self.write(|w| {
            w.conn
                .execute(
                    "UPDATE webhook_deliveries SET state = ?2, attempts = ?3, next_ns = ?4,
                         last_error = ?5, delivered_ns = ?6 WHERE id = ?1",
                    params![
                        d.id,
                        d.state,
                        d.attempts,
                        d.next_ns,
                        d.last_error,
                        d.delivered_ns
                    ],
                )
                .context(|| format!("cannot record an attempt of delivery {}", d.id))?;
            Ok(())
        })
    }

    fn deliveries(
        &self,
        endpoint: Option<&str>,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
                     WHERE (?1 IS NULL OR endpoint = ?1) AND (?2 IS NULL OR state = ?2)
                     ORDER BY id DESC LIMIT ?3"
                ))
                .context(|| "cannot prepare a delivery query".into())?;
            let rows = stmt
                .query_map(params![endpoint, state, limit as i64], delivery_row)
                .context(|| "cannot read deliveries".into())?;
            rows.map(|r| r.context(|| "cannot read a delivery".into()))
                .collect()
        })
    }

    fn due_runs(&self, now_ns: i64, limit: usize) -> Result<Vec<StoredRun>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM workflow_runs
                     WHERE state = 'running' AND next_ns <= ?1 ORDER BY next_ns, id LIMIT ?2"
                ))
                .context(|| "cannot prepare a workflow run query".into())?;
            let rows = stmt
                .query_map(params![now_ns, limit as i64], run_row)
                .context(|| "cannot read due workflow runs".into())?;
            rows.map(|r| parse_run(r.context(|| "cannot read a workflow run".into())?))
                .collect()
        })
    }

    fn next_run_ns(&self) -> Result<Option<i64>> {
        self.read(|conn| {
            conn.query_row(
                "SELECT min(next_ns) FROM workflow_runs WHERE state = 'running'",
                [],
                |r| r.get(0),
            )
            .context(|| "cannot read the next workflow step time".into())
        })
    }

    fn update_run(&self, r: &StoredRun) -> Result<()> {
        self.write(|w| {
            w.conn
                .execute(
                    "UPDATE workflow_runs SET state = ?2, next_ns = ?3, updated_ns = ?4, body = ?5
                     WHERE id = ?1",
                    params![r.id, r.state, r.next_ns, r.updated_ns, r.body.to_string()],
                )
                .context(|| format!("cannot update workflow run {}", r.id))?;
            Ok(())
        })
    }

    fn run(&self, id: i64) -> Result<Option<StoredRun>> {
        self.read(|conn| {
            conn.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = ?1"),
                params![id],
                run_row,
            )
            .optional()
            .context(|| format!("cannot read workflow run {id}"))?
            .map(parse_run)
            .transpose()
        })
    }

    fn runs(&self, workflow: Option<&str>, limit: usize) -> Result<Vec<StoredRun>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE ?1 IS NULL OR workflow = ?1
                     ORDER BY id DESC LIMIT ?2"
                ))
                .context(|| "cannot prepare a workflow run query".into())?;
            let rows = stmt
                .query_map(params![workflow, limit as i64], run_row)
                .context(|| "cannot read workflow runs".into())?;
            rows.map(|r| parse_run(r.context(|| "cannot read a workflow run".into())?))
                .collect()
        })
    }

    fn forget_history(&self, before_ns: i64) -> Result<(u64, u64)> {
        // A few thousand rows a transaction, so that ingest and the
        // hub's other writes go on meanwhile.
        const ROWS_PER_TRANSACTION: usize = 5_000;
        let forget = |table: &str, condition: &str| -> Result<u64> {
            let sql = format!(
                "DELETE FROM {table} WHERE id IN
                 (SELECT id FROM {table} WHERE {condition} LIMIT {ROWS_PER_TRANSACTION})"
            );
            let mut total = 0;
            loop {
                let n = self.write(|w| {
                    w.conn
                        .execute(&sql, params![before_ns])
                        .context(|| format!("cannot delete old rows of {table}"))
                })?;
                total += n as u64;
                if n < ROWS_PER_TRANSACTION {
                    return Ok(total);
                }
            }
        };
        let deliveries = forget(
            "webhook_deliveries",
            "state <> 'pending' AND created_ns < ?1",
        )?;
        let runs = forget("workflow_runs", "state <> 'running' AND updated_ns < ?1")?;
        Ok((deliveries, runs))
    }

    fn forget_cleared_alerts(&self, before_ns: i64) -> Result<u64> {
        const ALERTS_PER_TRANSACTION: usize = 2_000;
        let chosen = format!(
            "SELECT id FROM alerts WHERE state = 'cleared' AND updated_ns < ?1
             AND id < (SELECT max(id) FROM alerts) ORDER BY id LIMIT {ALERTS_PER_TRANSACTION}"
        );
        let mut total = 0;
        loop {
            let n = self.write(|w| {
                let tx = w
                    .conn
                    .transaction()
                    .context(|| "cannot delete old alerts".into())?;
                tx.execute(
                    &format!("DELETE FROM alert_events WHERE alert_id IN ({chosen})"),
                    params![before_ns],
                )
                .context(|| "cannot delete old alerts' history".into())?;
                let n = tx
                    .execute(
                        &format!("DELETE FROM alerts WHERE id IN ({chosen})"),
                        params![before_ns],
                    )
                    .context(|| "cannot delete old alerts".into())?;
                tx.commit().context(|| "cannot delete old alerts".into())?;
                Ok(n)
            })?;
            total += n as u64;
            if n < ALERTS_PER_TRANSACTION {
                return Ok(total);
            }
        }
    }
}
