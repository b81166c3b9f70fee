//! Retraining cycles in PostgreSQL, shared by hub replicas whose jobs are
//! there too: whichever replica holds the retraining lease carries on the
//! open cycle where the one before it stopped, and every replica lists
//! every cycle.
//!
//! `shared_retrain_cycles` holds what the SQLite store keeps in
//! `retrain_cycles`.

use postgres::Row;

use super::Connection;
use crate::error::{Context, Error, Result};
use crate::retrain::{RetrainStore, StoredCycle, no_cycle_unless};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_retrain_cycles (
    id          BIGSERIAL PRIMARY KEY,
    model       TEXT NOT NULL,
    state       TEXT NOT NULL,
    done        BOOLEAN NOT NULL,
    created_ns  BIGINT NOT NULL,
    updated_ns  BIGINT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shared_retrain_cycles_by_model ON shared_retrain_cycles (model, id);
";

const COLUMNS: &str = "id, model, state, done, created_ns, updated_ns, body";

/// The PostgreSQL retraining cycle store.
pub struct PostgresCycles {
    db: Connection,
}

impl PostgresCycles {
    /// Connects to the database at `url` and makes the table if needed.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(PostgresCycles {
            db: Connection::open(url, SCHEMA, "retraining cycle")?,
        })
    }
}

/// A row of [`COLUMNS`].
fn cycle_row(r: &Row) -> Result<StoredCycle> {
    let id: i64 = r.get(0);
    Ok(StoredCycle {
        id,
        model: r.get(1),
        state: r.get(2),
        done: r.get(3),
        created_ns: r.get(4),
        updated_ns: r.get(5),
        body: serde_json::from_str(r.get(6))
            .map_err(|e| Error::Corrupt(format!("retraining cycle {id}: {e}")))?,
    })
}

impl RetrainStore for PostgresCycles {
    fn create_cycle(&self, c: &StoredCycle) -> Result<i64> {
        self.db.with(|db| {
            Ok(db
                .query_one(
                    "INSERT INTO shared_retrain_cycles (model, state, done, created_ns, updated_ns, body)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        &c.model,
                        &c.state,
                        &c.done,
                        &c.created_ns,
                        &c.updated_ns,
                        &c.body.to_string(),
                    ],
                )
                .context(|| format!("cannot store a retraining cycle of {}", c.model))?
                .get(0))
        })
    }

    fn update_cycle(&self, c: &StoredCycle) -> Result<()> {
        self.db.with(|db| {
            let changed = db.execute(
                "UPDATE shared_retrain_cycles SET state = $2, done = $3, updated_ns = $4, body = $5
                 WHERE id = $1",
                &[&c.id, &c.state, &c.done, &c.updated_ns, &c.body.to_string()],
            )
            .context(|| format!("cannot update retraining cycle {}", c.id))?;
            no_cycle_unless(changed as usize, c.id)
        })
    }

    fn cycle(&self, id: i64) -> Result<Option<StoredCycle>> {
        self.db.with(|db| {
            db.query_opt(
                &format!("SELECT {COLUMNS} FROM shared_retrain_cycles WHERE id = $1"),
                &[&id],
            )
            .context(|| format!("cannot read retraining cycle {id}"))?
            .map(|r| cycle_row(&r))
            .transpose()
        })
    }

    fn cycles(&self, model: Option<&str>, limit: usize) -> Result<Vec<StoredCycle>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.with(|db| {
            db.query(
                &format!(
                    "SELECT {COLUMNS} FROM shared_retrain_cycles
                     WHERE $1::TEXT IS NULL OR model = $1 ORDER BY id DESC LIMIT $2"
                ),
                &[&model, &limit],
            )
            .context(|| "cannot read retraining cycles".into())?
            .iter()
            .map(cycle_row)
            .collect()
        })
    }
}
