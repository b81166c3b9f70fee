//! [`LabelStore`] for SQLite.

use rusqlite::params;
use strata_proto::DeviceId;

use super::SqliteStore;
use crate::error::{Context, Error, Result};
use crate::labels::{Label, LabelStore};

impl LabelStore for SqliteStore {
    fn add_labels(&self, labels: &[Label], received_ns: i64) -> Result<usize> {
        self.write(|w| {
            let tx = w.conn.transaction().context(|| "cannot begin".into())?;
            let mut new = 0;
            {
                let mut exists = tx
                    .prepare_cached(
                        "SELECT 1 FROM labels WHERE device_id = ?1 AND target = ?2 AND ts_ns = ?3",
                    )
                    .context(|| "cannot prepare a label lookup".into())?;
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO labels (device_id, target, ts_ns, value, source, received_ns)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (device_id, target, ts_ns)
                         DO UPDATE SET value = ?4, source = ?5, received_ns = ?6",
                    )
                    .context(|| "cannot prepare a label insert".into())?;
                for l in labels {
                    let key = params![l.device.as_str(), l.target, l.ts_ns];
                    new += usize::from(
                        !exists
                            .exists(key)
                            .context(|| "cannot look up a label".into())?,
                    );
                    upsert
                        .execute(params![
                            l.device.as_str(),
                            l.target,
                            l.ts_ns,
                            l.value,
                            l.source,
                            received_ns
                        ])
                        .context(|| format!("cannot store a label of {}", l.device))?;
                }
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
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT device_id, ts_ns, value, source FROM labels
                     WHERE target = ?1 AND (?2 IS NULL OR device_id = ?2) AND ts_ns BETWEEN ?3 AND ?4
                     ORDER BY device_id, ts_ns",
                )
                .context(|| "cannot prepare a label query".into())?;
            let rows = stmt
                .query_map(params![target, device.map(|d| d.as_str()), from_ns, to_ns], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, f64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .context(|| format!("cannot read labels of {target}"))?;
            rows.map(|row| {
                let (device, ts_ns, value, source) = row.context(|| "cannot read a label".into())?;
                Ok(Label {
                    device: DeviceId::new(device).map_err(|e| Error::Corrupt(e.to_string()))?,
                    target: target.to_owned(),
                    ts_ns,
                    value,
                    source,
                })
            })
            .collect()
        })
    }
}
