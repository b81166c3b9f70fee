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
}

#[cfg(test)]
mod tests {
    use strata_proto::SignalSketch;

    use super::*;
    use crate::Durability;

    fn batch(seq: u64, end_ns: i64) -> SketchBatch {
        SketchBatch {
            stream: "sketch:rul:2".into(),
            seq,
            model: "rul".into(),
            version: 2,
            start_ns: end_ns - 10,
            end_ns,
            vectors: 3,
            features: vec![SignalSketch {
                name: "x".into(),
                bins: "ab".into(),
                counts: vec![1, 2, 0],
                n: 3,
                dropped: 0,
                sum: 1.5,
                sum_sq: 1.0,
                min: Some(0.1),
                max: Some(0.9),
            }],
            outputs: vec![],
            detections: vec![],
        }
    }

    #[test]
    fn sketches_are_stored_once_and_read_back_by_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
        let d = DeviceId::new("press-1").unwrap();
        assert!(store.add_sketches(&d, &batch(1, 100), 5).unwrap());
        assert!(
            !store.add_sketches(&d, &batch(1, 100), 6).unwrap(),
            "a retry is a duplicate"
        );
        assert!(store.add_sketches(&d, &batch(2, 200), 7).unwrap());
        let all = store.sketches("rul", 2, 0, 1000).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].batch, batch(1, 100));
        assert_eq!(store.sketches("rul", 2, 150, 1000).unwrap().len(), 1);
        assert!(store.sketches("rul", 3, 0, 1000).unwrap().is_empty());
    }
}
