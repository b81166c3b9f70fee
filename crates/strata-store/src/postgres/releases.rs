//! Accepted OTA releases in PostgreSQL, shared by hub replicas: a release
//! accepted through one replica can be rolled out from any, and none
//! accepts a version of it twice.
//!
//! `shared_releases` holds what the SQLite store keeps in `releases`; its
//! key (kind, name, version) makes the second of two replicas accepting
//! the same version at once fail with a conflict, as on one hub.

use postgres::Row;

use super::Connection;
use crate::error::{Context, Error, Result, corrupt};
use crate::{ReleaseRecord, ReleaseStore};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_releases (
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    digest      TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    expires_ns  BIGINT NOT NULL,
    accepted_ns BIGINT NOT NULL,
    envelope    TEXT NOT NULL,
    PRIMARY KEY (kind, name, version)
);
";

const COLUMNS: &str =
    "kind, name, version, digest, key_id, sha256, size, expires_ns, accepted_ns, envelope";

/// The PostgreSQL release store.
pub struct PostgresReleases {
    db: Connection,
}

impl PostgresReleases {
    /// Connects to the database at `url` and makes the table if needed.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(PostgresReleases {
            db: Connection::open(url, SCHEMA, "release")?,
        })
    }
}

/// A row of [`COLUMNS`].
fn release_row(r: &Row) -> Result<ReleaseRecord> {
    Ok(ReleaseRecord {
        kind: r.get(0),
        name: r.get(1),
        version: u64::try_from(r.get::<_, i64>(2)).map_err(corrupt)?,
        digest: r.get(3),
        key_id: r.get(4),
        sha256: r.get(5),
        size: u64::try_from(r.get::<_, i64>(6)).map_err(corrupt)?,
        expires_ns: r.get(7),
        accepted_ns: r.get(8),
        envelope: r.get(9),
    })
}

impl ReleaseStore for PostgresReleases {
    fn add_release(&self, x: &ReleaseRecord) -> Result<()> {
        let version = i64::try_from(x.version).map_err(|_| {
            Error::Conflict(format!(
                "release version {} is beyond the largest kept (2^63 - 1)",
                x.version
            ))
        })?;
        let size = i64::try_from(x.size).map_err(corrupt)?;
        let stored = self.db.with(|c| {
            c.execute(
                &format!(
                    "INSERT INTO shared_releases ({COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
                ),
                &[
                    &x.kind,
                    &x.name,
                    &version,
                    &x.digest,
                    &x.key_id,
                    &x.sha256,
                    &size,
                    &x.expires_ns,
                    &x.accepted_ns,
                    &x.envelope,
                ],
            )
            .context(|| format!("cannot store release {} {} {}", x.kind, x.name, x.version))
        })?;
        if stored == 0 {
            return Err(Error::Conflict(format!(
                "{} {} version {} exists already",
                x.kind, x.name, x.version
            )));
        }
        Ok(())
    }

    fn releases(&self, kind: Option<&str>, name: Option<&str>) -> Result<Vec<ReleaseRecord>> {
        self.db.with(|c| {
            c.query(
                &format!(
                    "SELECT {COLUMNS} FROM shared_releases
                     WHERE ($1::TEXT IS NULL OR kind = $1) AND ($2::TEXT IS NULL OR name = $2)
                     ORDER BY accepted_ns DESC, version DESC"
                ),
                &[&kind, &name],
            )
            .context(|| "cannot list releases".into())?
            .iter()
            .map(release_row)
            .collect()
        })
    }

    fn latest_release_version(&self, kind: &str, name: &str) -> Result<Option<u64>> {
        self.db.with(|c| {
            let latest: Option<i64> = c
                .query_one(
                    "SELECT max(version) FROM shared_releases WHERE kind = $1 AND name = $2",
                    &[&kind, &name],
                )
                .context(|| format!("cannot read the versions of {kind} {name}"))?
                .get(0);
            latest
                .map(|v| u64::try_from(v).map_err(corrupt))
                .transpose()
        })
    }
}
