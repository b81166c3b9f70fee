//! What devices send besides telemetry and twins, in PostgreSQL, shared
//! by hub replicas: drift sketches ([`DriftStore`]) and closed-loop action
//! records ([`ControlStore`]). Behind an upstream broker each message lands
//! at whichever replica takes it; kept here, a drift report or the action
//! history at any replica covers the whole fleet.
//!
//! Both are kept once per (device, stream, seq) or (device, seq), as the
//! SQLite store keeps them, so a resend through another replica changes
//! nothing.

use strata_proto::{DeviceId, SketchBatch};

use super::Connection;
use crate::control::{ActionFilter, ControlStore, StoredAction};
use crate::drift::{DriftStore, StoredSketches};
use crate::error::{Context, Result, corrupt};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_sketch_batches (
    device_id    TEXT NOT NULL,
    stream       TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    model        TEXT NOT NULL,
    version      BIGINT NOT NULL,
    start_ns     BIGINT NOT NULL,
    end_ns       BIGINT NOT NULL,
    received_ns  BIGINT NOT NULL,
    body         BYTEA NOT NULL,
    PRIMARY KEY (device_id, stream, seq)
);
CREATE INDEX IF NOT EXISTS shared_sketch_batches_by_model
    ON shared_sketch_batches (model, version, end_ns);
CREATE INDEX IF NOT EXISTS shared_sketch_batches_by_end
    ON shared_sketch_batches (end_ns);
CREATE TABLE IF NOT EXISTS shared_control_actions (
    id           BIGSERIAL PRIMARY KEY,
    device       TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    ts_ns        BIGINT NOT NULL,
    rule         TEXT NOT NULL,
    action       TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    received_ns  BIGINT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (device, seq)
);
CREATE INDEX IF NOT EXISTS shared_control_actions_by_time
    ON shared_control_actions (ts_ns DESC, id DESC);
";

/// Drift sketches and action records in PostgreSQL.
pub struct PostgresRecords {
    db: Connection,
}

impl PostgresRecords {
    /// Connects to the database at `url` and makes the tables if needed.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(PostgresRecords {
            db: Connection::open(url, SCHEMA, "sketch and action")?,
        })
    }
}

impl DriftStore for PostgresRecords {
    fn add_sketches(
        &self,
        device: &DeviceId,
        batch: &SketchBatch,
        received_ns: i64,
    ) -> Result<bool> {
        let body = serde_json::to_vec(batch).expect("JSON of a sketch batch");
        let seq = i64::try_from(batch.seq).map_err(corrupt)?;
        self.db.with(|c| {
            let n = c
                .execute(
                    "INSERT INTO shared_sketch_batches
                        (device_id, stream, seq, model, version, start_ns, end_ns, received_ns, body)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                    &[
                        &device.as_str(),
                        &batch.stream,
                        &seq,
                        &batch.model,
                        &i64::from(batch.version),
                        &batch.start_ns,
                        &batch.end_ns,
                        &received_ns,
                        &body,
                    ],
                )
                .context(|| format!("cannot store sketches of {device}"))?;
            Ok(n == 1)
        })
    }

    fn sketches(
        &self,
        model: &str,
        version: u32,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<StoredSketches>> {
        self.db.with(|c| {
            let rows = c
                .query(
                    "SELECT device_id, received_ns, body FROM shared_sketch_batches
                     WHERE model = $1 AND version = $2 AND end_ns >= $3 AND end_ns < $4
                     ORDER BY end_ns, device_id",
                    &[&model, &i64::from(version), &from_ns, &to_ns],
                )
                .context(|| format!("cannot read sketches of {model} v{version}"))?;
            rows.iter()
                .map(|r| {
                    Ok(StoredSketches {
                        device: DeviceId::new(r.get::<_, String>(0)).map_err(corrupt)?,
                        received_ns: r.get(1),
                        batch: serde_json::from_slice(r.get(2))
                            .map_err(|e| corrupt(format!("a stored sketch batch: {e}")))?,
                    })
                })
                .collect()
        })
    }

    fn forget_sketches(&self, before_ns: i64) -> Result<u64> {
        // In statements of at most 10,000 rows, each holding the records
        // connection (sketch intake, action records) only that long.
        let mut deleted = 0;
        loop {
            let n = self.db.with(|c| {
                c.execute(
                    "DELETE FROM shared_sketch_batches WHERE ctid IN
                     (SELECT ctid FROM shared_sketch_batches WHERE end_ns < $1 LIMIT 10000)",
                    &[&before_ns],
                )
                .context(|| "cannot delete old sketches".into())
            })?;
            deleted += n;
            if n < 10_000 {
                return Ok(deleted);
            }
        }
    }
}

impl ControlStore for PostgresRecords {
    fn record_action(&self, a: &StoredAction) -> Result<bool> {
        let body = serde_json::to_string(&a.action).expect("JSON of an action");
        let seq = i64::try_from(a.action.seq).map_err(corrupt)?;
        self.db.with(|c| {
            let n = c
                .execute(
                    "INSERT INTO shared_control_actions
                        (device, seq, ts_ns, rule, action, outcome, received_ns, body)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    &[
                        &a.device.as_str(),
                        &seq,
                        &a.action.ts_ns,
                        &a.action.rule,
                        &a.action.action,
                        &a.action.outcome.as_str(),
                        &a.received_ns,
                        &body,
                    ],
                )
                .context(|| format!("cannot store a control action of {}", a.device))?;
            Ok(n == 1)
        })
    }

    fn actions(&self, f: &ActionFilter) -> Result<Vec<StoredAction>> {
        let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
        self.db.with(|c| {
            let rows = c
                .query(
                    "SELECT device, received_ns, body FROM shared_control_actions
                     WHERE ($1::TEXT IS NULL OR device = $1) AND ($2::TEXT IS NULL OR rule = $2)
                       AND ($3::TEXT IS NULL OR action = $3)
                     ORDER BY ts_ns DESC, id DESC LIMIT $4",
                    &[
                        &f.device.as_ref().map(|d| d.as_str()),
                        &f.rule,
                        &f.action,
                        &limit,
                    ],
                )
                .context(|| "cannot read control actions".to_string())?;
            rows.iter()
                .map(|r| {
                    let device = DeviceId::new(r.get::<_, String>(0))
                        .map_err(|e| corrupt(format!("control action device: {e}")))?;
                    let action = serde_json::from_str(r.get(2))
                        .map_err(|e| corrupt(format!("control action of {device}: {e}")))?;
                    Ok(StoredAction {
                        device,
                        received_ns: r.get(1),
                        action,
                    })
                })
                .collect()
        })
    }
}
