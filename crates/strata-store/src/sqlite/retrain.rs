//! [`RetrainStore`] for SQLite.

use rusqlite::{OptionalExtension as _, params};

use super::SqliteStore;
use crate::error::{Context, Error, Result};
use crate::retrain::{RetrainStore, StoredCycle, no_cycle_unless};

const COLUMNS: &str = "id, model, state, done, created_ns, updated_ns, body";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredCycle, String)> {
    Ok((
        StoredCycle {
            id: r.get(0)?,
            model: r.get(1)?,
            state: r.get(2)?,
            done: r.get::<_, i64>(3)? != 0,
            created_ns: r.get(4)?,
            updated_ns: r.get(5)?,
            body: serde_json::Value::Null,
        },
        r.get(6)?,
    ))
}

fn parse((mut cycle, body): (StoredCycle, String)) -> Result<StoredCycle> {
    cycle.body = serde_json::from_str(&body)
        .map_err(|e| Error::Corrupt(format!("retraining cycle {}: {e}", cycle.id)))?;
    Ok(cycle)
}

impl RetrainStore for SqliteStore {
    fn create_cycle(&self, c: &StoredCycle) -> Result<i64> {
        self.write(|w| {
            w.conn
                .execute(
                    "INSERT INTO retrain_cycles (model, state, done, created_ns, updated_ns, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        c.model,
                        c.state,
                        i64::from(c.done),
                        c.created_ns,
                        c.updated_ns,
                        c.body.to_string()
                    ],
                )
                .context(|| format!("cannot store a retraining cycle of {}", c.model))?;
            Ok(w.conn.last_insert_rowid())
        })
    }

    fn update_cycle(&self, c: &StoredCycle) -> Result<()> {
        self.write(|w| {
            let changed = w
                .conn
                .execute(
                    "UPDATE retrain_cycles SET state = ?2, done = ?3, updated_ns = ?4, body = ?5
                     WHERE id = ?1",
                    params![
                        c.id,
                        c.state,
                        i64::from(c.done),
                        c.updated_ns,
                        c.body.to_string()
                    ],
                )
                .context(|| format!("cannot update retraining cycle {}", c.id))?;
            no_cycle_unless(changed, c.id)
        })
    }

    fn cycle(&self, id: i64) -> Result<Option<StoredCycle>> {
        self.read(|conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM retrain_cycles WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()
            .context(|| format!("cannot read retraining cycle {id}"))?
            .map(parse)
            .transpose()
        })
    }

    fn cycles(&self, model: Option<&str>, limit: usize) -> Result<Vec<StoredCycle>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM retrain_cycles WHERE ?1 IS NULL OR model = ?1
                     ORDER BY id DESC LIMIT ?2"
                ))
                .context(|| "cannot prepare a retraining cycle query".into())?;
            let rows = stmt
                .query_map(params![model, limit as i64], row)
                .context(|| "cannot read retraining cycles".into())?;
            rows.map(|r| parse(r.context(|| "cannot read a retraining cycle".into())?))
                .collect()
        })
    }
}
