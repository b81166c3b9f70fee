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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Durability;

    fn label(device: &str, ts_ns: i64, value: f64) -> Label {
        Label {
            device: DeviceId::new(device).unwrap(),
            target: "label.rul_h".into(),
            ts_ns,
            value,
            source: "cmms".into(),
        }
    }

    #[test]
    fn a_label_sent_again_replaces_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
        assert_eq!(
            store
                .add_labels(&[label("a", 10, 1.0), label("b", 10, 2.0)], 1)
                .unwrap(),
            2
        );
        assert_eq!(
            store
                .add_labels(&[label("a", 10, 1.5), label("a", 20, 3.0)], 2)
                .unwrap(),
            1
        );
        let all = store.labels("label.rul_h", None, 0, 100).unwrap();
        assert_eq!(
            all,
            vec![
                label("a", 10, 1.5),
                label("a", 20, 3.0),
                label("b", 10, 2.0)
            ]
        );
        let a = DeviceId::new("a").unwrap();
        assert_eq!(
            store
                .labels("label.rul_h", Some(&a), 15, 100)
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .labels("label.failure", None, 0, 100)
                .unwrap()
                .is_empty()
        );
    }
}
