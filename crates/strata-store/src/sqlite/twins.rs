//! [`TwinStore`] for SQLite.

use rusqlite::{OptionalExtension, params};
use strata_proto::DeviceId;

use super::SqliteStore;
use crate::error::{Context, Result, corrupt};
use crate::{DesiredEdit, Twin, TwinStore};

/// The raw columns of a twin row, decoded by [`twin_from`].
type TwinRow = (String, i64, Option<i64>, String, Option<i64>);

const TWIN_COLUMNS: &str = "desired, desired_version, desired_ns, reported, reported_ns";

fn twin_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<TwinRow> {
    Ok((
        r.get(first)?,
        r.get(first + 1)?,
        r.get(first + 2)?,
        r.get(first + 3)?,
        r.get(first + 4)?,
    ))
}

fn twin_from(device: DeviceId, row: TwinRow) -> Result<Twin> {
    let (desired, version, desired_ns, reported, reported_ns) = row;
    Ok(Twin {
        device,
        desired: serde_json::from_str(&desired).map_err(corrupt)?,
        desired_version: version as u64,
        desired_ns,
        reported: serde_json::from_str(&reported).map_err(corrupt)?,
        reported_ns,
    })
}

fn read_twin(conn: &rusqlite::Connection, device: &DeviceId) -> Result<Twin> {
    let row = conn
        .query_row(
            &format!("SELECT {TWIN_COLUMNS} FROM twins WHERE device_id = ?1"),
            params![device.as_str()],
            |r| twin_row(r, 0),
        )
        .optional()
        .context(|| format!("cannot read the twin of {device}"))?;
    match row {
        Some(row) => twin_from(device.clone(), row),
        None => Ok(Twin::empty(device.clone())),
    }
}

impl TwinStore for SqliteStore {
    fn twin_epoch(&self) -> Result<String> {
        self.read(|conn| {
            conn.query_row("SELECT epoch FROM twin_epoch WHERE id = 1", [], |r| {
                r.get(0)
            })
            .context(|| "cannot read the twins' epoch".into())
        })
    }

    fn renew_twin_epoch(&self) -> Result<String> {
        self.write(|w| {
            w.conn
                .query_row(
                    "UPDATE twin_epoch SET epoch = lower(hex(randomblob(16))) WHERE id = 1
                     RETURNING epoch",
                    [],
                    |r| r.get(0),
                )
                .context(|| "cannot make the twins' epoch anew".into())
        })
    }

    fn twin(&self, device: &DeviceId) -> Result<Twin> {
        self.read(|conn| read_twin(conn, device))
    }

    fn desired_twins(&self) -> Result<Vec<Twin>> {
        self.read(|conn| {
            let sql = format!(
                "SELECT device_id, {TWIN_COLUMNS} FROM twins WHERE desired_version > 0 ORDER BY device_id"
            );
            let mut stmt = conn
                .prepare_cached(&sql)
                .context(|| "cannot list twins".into())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, twin_row(r, 1)?)))
                .context(|| "cannot list twins".into())?;
            rows.map(|row| {
                let (id, row) = row.context(|| "cannot read a twin".into())?;
                twin_from(DeviceId::new(id).map_err(corrupt)?, row)
            })
            .collect()
        })
    }

    fn edit_desired(
        &self,
        device: &DeviceId,
        key: &str,
        now_ns: i64,
        edit: &mut DesiredEdit<'_>,
    ) -> Result<Twin> {
        self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot start a transaction".into())?;
            let mut twin = read_twin(&tx, device)?;
            twin.edit_desired_key(key, now_ns, edit)?;
            tx.execute(
                "INSERT INTO twins (device_id, desired, desired_version, desired_ns)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (device_id) DO UPDATE
                 SET desired = ?2, desired_version = ?3, desired_ns = ?4",
                params![
                    device.as_str(),
                    twin.desired.to_string(),
                    twin.desired_version as i64,
                    now_ns
                ],
            )
            .context(|| format!("cannot set the twin of {device}"))?;
            tx.commit()
                .context(|| format!("cannot set the twin of {device}"))?;
            Ok(twin)
        })
    }

    fn set_reported(
        &self,
        device: &DeviceId,
        reported: &serde_json::Value,
        now_ns: i64,
    ) -> Result<()> {
        self.write(|w| {
            w.conn
                .execute(
                    "INSERT INTO twins (device_id, reported, reported_ns) VALUES (?1, ?2, ?3)
                     ON CONFLICT (device_id) DO UPDATE SET reported = ?2, reported_ns = ?3",
                    params![device.as_str(), reported.to_string(), now_ns],
                )
                .context(|| format!("cannot store the reported twin of {device}"))?;
            Ok(())
        })
    }
}
