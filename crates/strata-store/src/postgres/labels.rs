//! Late labels in PostgreSQL, shared by hub replicas whose telemetry is
//! there too: a label sent to any replica is joined to the predictions by
//! whichever replica judges accuracy (the one running retraining, an API
//! call at another).
//!
//! `shared_labels` holds what the SQLite store keeps in `labels`: one
//! label per (device, target, time), replaced when sent again.

use strata_proto::DeviceId;

use super::Connection;
use crate::error::{Context, Result, corrupt};
use crate::labels::{Label, LabelStore};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_labels (
    device_id   TEXT NOT NULL,
    target      TEXT NOT NULL,
    ts_ns       BIGINT NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    source      TEXT NOT NULL,
    received_ns BIGINT NOT NULL,
    PRIMARY KEY (target, device_id, ts_ns)
);
";

/// The PostgreSQL label store.
pub struct PostgresLabels {
    db: Connection,
}

impl PostgresLabels {
    /// Connects to the database at `url` and makes the table if needed.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(PostgresLabels {
            db: Connection::open(url, SCHEMA, "label")?,
        })
    }
}

impl LabelStore for PostgresLabels {
    fn add_labels(&self, labels: &[Label], received_ns: i64) -> Result<usize> {
        self.db.with(|c| {
            let mut tx = c.transaction().context(|| "cannot store labels".into())?;
            let mut new = 0;
            for l in labels {
                // `xmax = 0` only on a row this statement inserted.
                let inserted: bool = tx
                    .query_one(
                        "INSERT INTO shared_labels (device_id, target, ts_ns, value, source, received_ns)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (target, device_id, ts_ns)
                         DO UPDATE SET value = $4, source = $5, received_ns = $6
                         RETURNING xmax = 0",
                        &[
                            &l.device.as_str(),
                            &l.target,
                            &l.ts_ns,
                            &l.value,
                            &l.source,
                            &received_ns,
                        ],
                    )
                    .context(|| format!("cannot store a label of {}", l.device))?
                    .get(0);
                new += usize::from(inserted);
            }
            tx.commit().context(|| "cannot commit labels".into())?;
            Ok(new)
        })
    }

    fn labels(
        &self,
        target: &str,
        device: Option<&DeviceId>,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<Label>> {
        self.db.with(|c| {
            c.query(
                "SELECT device_id, ts_ns, value, source FROM shared_labels
                 WHERE target = $1 AND ($2::TEXT IS NULL OR device_id = $2)
                   AND ts_ns BETWEEN $3 AND $4
                 ORDER BY device_id, ts_ns",
                &[&target, &device.map(|d| d.as_str()), &from_ns, &to_ns],
            )
            .context(|| format!("cannot read labels of {target}"))?
            .iter()
            .map(|r| {
                Ok(Label {
                    device: DeviceId::new(r.get::<_, String>(0)).map_err(corrupt)?,
                    target: target.to_owned(),
                    ts_ns: r.get(1),
                    value: r.get(2),
                    source: r.get(3),
                })
            })
            .collect()
        })
    }
}
