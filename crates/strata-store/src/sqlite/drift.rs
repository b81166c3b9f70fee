//! [`DriftStore`] for SQLite.

use rusqlite::params;
use strata_proto::{DeviceId, SketchBatch};

use super::SqliteStore;
use crate::drift::{DriftStore, StoredSketches};
use crate::error::{Context, Error, Result};

impl DriftStore for SqliteStore {
    fn add_sketches(
        &self,
        device: &DeviceId,
        batch: &SketchBatch,
        received_ns: i64,
    ) -> Result<bool> {
        let body = serde_json::to_vec(batch).expect("JSON of a sketch batch");
        self.write(|w| {
            let n = w
                .conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO sketch_batches
                     (device_id, stream, seq, model, version, start_ns, end_ns, received_ns, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .context(|| "cannot prepare a sketch insert".into())?
                .execute(params![
                    device.as_str(),
                    batch.stream,
                    batch.seq as i64,
                    batch.model,
                    batch.version,
                    batch.start_ns,
                    batch.end_ns,
                    received_ns,
                    body
                ])
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
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT device_id, received_ns, body FROM sketch_batches
                     WHERE model = ?1 AND version = ?2 AND end_ns >= ?3 AND end_ns < ?4
                     ORDER BY end_ns, device_id",
                )
                .context(|| "cannot prepare a sketch query".into())?;
            let rows = stmt
                .query_map(params![model, version, from_ns, to_ns], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .context(|| format!("cannot read sketches of {model} v{version}"))?;
            rows.map(|row| {
                let (device, received_ns, body) =
                    row.context(|| "cannot read a sketch row".into())?;
                Ok(StoredSketches {
                    device: DeviceId::new(device).map_err(|e| Error::Corrupt(e.to_string()))?,
                    received_ns,
                    batch: serde_json::from_slice(&body)
                        .map_err(|e| Error::Corrupt(format!("a stored sketch batch: {e}")))?,
                })
            })
            .collect()
        })
    }

    fn forget_sketches(&self, before_ns: i64) -> Result<u64> {
        // In small transactions, so that ingest never waits long for the
        // writer connection; served by the sketch_batches_by_end index.
        let mut deleted = 0;
        loop {
            let n = self.write(|w| {
                w.conn
                    .prepare_cached(
                        "DELETE FROM sketch_batches WHERE (device_id, stream, seq) IN
                         (SELECT device_id, stream, seq FROM sketch_batches
                          WHERE end_ns < ?1 LIMIT 10000)",
                    )
                    .context(|| "cannot prepare a sketch deletion".into())?
                    .execute(params![before_ns])
                    .context(|| "cannot delete old sketches".into())
            })?;
            deleted += n as u64;
            if n < 10_000 {
                return Ok(deleted);
            }
        }
    }
}
