//! Device twins in PostgreSQL, shared by hub replicas: what a device
//! reports lands at whichever replica takes its message, and every replica
//! (a rollout's worker, the API) reads it from here.
//!
//! `shared_twins` holds what the SQLite store keeps in `twins`. Setting a
//! desired key locks the row (`FOR UPDATE`), so two replicas changing one
//! device's desired document at once each get their own version.
//!
//! Each change of a desired document also takes the next value of the
//! twins' change count (`changes.rs`) as its place in a log,
//! `desired_change`: a replica follows that log to publish, on its own
//! broker, the desired twins other replicas changed, so a device
//! connected to any replica gets them.

use postgres::{GenericClient, Row};
use strata_proto::DeviceId;

use super::Connection;
use super::changes::{self, Count};
use crate::error::{Context, Result, corrupt};
use crate::{DesiredEdit, Twin, TwinStore};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_twins (
    device_id        TEXT PRIMARY KEY,
    desired          TEXT NOT NULL DEFAULT '{}',
    desired_version  BIGINT NOT NULL DEFAULT 0,
    desired_ns       BIGINT,
    reported         TEXT NOT NULL DEFAULT '{}',
    reported_ns      BIGINT
);
ALTER TABLE shared_twins ADD COLUMN IF NOT EXISTS desired_change BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS shared_twins_by_change ON shared_twins (desired_change);
CREATE TABLE IF NOT EXISTS shared_twin_epoch (id INT PRIMARY KEY CHECK (id = 1), epoch TEXT NOT NULL);
INSERT INTO shared_twin_epoch VALUES (1, md5(random()::text || clock_timestamp()::text))
    ON CONFLICT (id) DO NOTHING;
";

const COLUMNS: &str = "device_id, desired, desired_version, desired_ns, reported, reported_ns";
/// How many [`COLUMNS`] there are.
const COLUMN_COUNT: usize = 6;

/// The PostgreSQL twin store.
pub struct PostgresTwins {
    db: Connection,
}

/// A row of [`COLUMNS`].
fn twin_row(r: &Row) -> Result<Twin> {
    Ok(Twin {
        device: DeviceId::new(r.get::<_, String>(0)).map_err(corrupt)?,
        desired: serde_json::from_str(r.get(1)).map_err(corrupt)?,
        desired_version: u64::try_from(r.get::<_, i64>(2)).map_err(corrupt)?,
        desired_ns: r.get(3),
        reported: serde_json::from_str(r.get(4)).map_err(corrupt)?,
        reported_ns: r.get(5),
    })
}

/// The twin of `device` (empty when nothing was set); `lock` takes its row
/// for the rest of the transaction.
fn read_twin(c: &mut impl GenericClient, device: &DeviceId, lock: bool) -> Result<Twin> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    c.query_opt(
        &format!("SELECT {COLUMNS} FROM shared_twins WHERE device_id = $1{lock}"),
        &[&device.as_str()],
    )
    .context(|| format!("cannot read the twin of {device}"))?
    .map_or_else(|| Ok(Twin::empty(device.clone())), |r| twin_row(&r))
}

impl PostgresTwins {
    /// Connects to the database at `url` and makes the table if needed.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(PostgresTwins {
            db: Connection::open(url, SCHEMA, "twin")?,
        })
    }
}

impl TwinStore for PostgresTwins {
    fn twin_epoch(&self) -> Result<String> {
        self.db.with(|c| {
            Ok(
                c.query_one("SELECT epoch FROM shared_twin_epoch WHERE id = 1", &[])
                    .context(|| "cannot read the twins' epoch".into())?
                    .get(0),
            )
        })
    }

    fn renew_twin_epoch(&self) -> Result<String> {
        self.db.with(|c| {
            Ok(c.query_one(
                "UPDATE shared_twin_epoch SET epoch = md5(random()::text || clock_timestamp()::text)
                 WHERE id = 1 RETURNING epoch",
                &[],
            )
            .context(|| "cannot make the twins' epoch anew".into())?
            .get(0))
        })
    }

    fn twin(&self, device: &DeviceId) -> Result<Twin> {
        self.db.with(|c| read_twin(c, device, false))
    }

    fn edit_desired(
        &self,
        device: &DeviceId,
        key: &str,
        now_ns: i64,
        edit: &mut DesiredEdit<'_>,
    ) -> Result<Twin> {
        self.db.with(|c| {
            let what = || format!("cannot set the twin of {device}");
            let mut tx = c.transaction().context(what)?;
            // The row exists before it is locked, so that two first
            // changes to a device's twin wait for each other too.
            tx.execute(
                "INSERT INTO shared_twins (device_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&device.as_str()],
            )
            .context(what)?;
            let mut twin = read_twin(&mut tx, device, true)?;
            twin.edit_desired_key(key, now_ns, edit)?;
            let version = i64::try_from(twin.desired_version).map_err(corrupt)?;
            // Last before the commit: the count's row is locked from here.
            changes::bump(&mut tx, Count::Twins)
                .and_then(|change| {
                    tx.execute(
                        "UPDATE shared_twins SET desired = $2, desired_version = $3,
                           desired_ns = $4, desired_change = $5
                         WHERE device_id = $1",
                        &[
                            &device.as_str(),
                            &twin.desired.to_string(),
                            &version,
                            &now_ns,
                            &change,
                        ],
                    )
                })
                .and_then(|_| tx.commit())
                .context(what)?;
            Ok(twin)
        })
    }

    fn desired_twins(&self) -> Result<Vec<Twin>> {
        self.db.with(|c| {
            c.query(
                &format!(
                    "SELECT {COLUMNS} FROM shared_twins WHERE desired_version > 0 ORDER BY device_id"
                ),
                &[],
            )
            .context(|| "cannot list twins".into())?
            .iter()
            .map(twin_row)
            .collect()
        })
    }

    fn desired_position(&self) -> Result<Option<i64>> {
        self.db
            .with(|c| changes::version(c, Count::Twins).map(Some))
    }

    fn desired_after(&self, position: i64, limit: usize) -> Result<(Vec<Twin>, i64)> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.with(|c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLUMNS}, desired_change FROM shared_twins
                         WHERE desired_change > $1 ORDER BY desired_change LIMIT $2"
                    ),
                    &[&position, &limit],
                )
                .context(|| "cannot read the desired twins changed lately".into())?;
            let reached = rows.last().map_or(position, |r| r.get(COLUMN_COUNT));
            let twins = rows.iter().map(twin_row).collect::<Result<_>>()?;
            Ok((twins, reached))
        })
    }

    fn set_reported(
        &self,
        device: &DeviceId,
        reported: &serde_json::Value,
        now_ns: i64,
    ) -> Result<()> {
        self.db.with(|c| {
            // A report that arrives late (through another replica) does
            // not replace a newer one.
            c.execute(
                "INSERT INTO shared_twins (device_id, reported, reported_ns) VALUES ($1, $2, $3)
                 ON CONFLICT (device_id) DO UPDATE SET reported = $2, reported_ns = $3
                 WHERE coalesce(shared_twins.reported_ns, 0) <= $3",
                &[&device.as_str(), &reported.to_string(), &now_ns],
            )
            .context(|| format!("cannot store the reported twin of {device}"))?;
            Ok(())
        })
    }
}
