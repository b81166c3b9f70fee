//! [`ReleaseStore`] for SQLite.

use rusqlite::{Row, params};

use super::SqliteStore;
use crate::error::{Context, Error, Result};
use crate::{ReleaseRecord, ReleaseStore};

const COLUMNS: &str =
    "kind, name, version, digest, key_id, sha256, size, expires_ns, accepted_ns, envelope";

fn row(r: &Row<'_>) -> rusqlite::Result<ReleaseRecord> {
    Ok(ReleaseRecord {
        kind: r.get(0)?,
        name: r.get(1)?,
        version: r.get::<_, i64>(2)? as u64,
        digest: r.get(3)?,
        key_id: r.get(4)?,
        sha256: r.get(5)?,
        size: r.get::<_, i64>(6)? as u64,
        expires_ns: r.get(7)?,
        accepted_ns: r.get(8)?,
        envelope: r.get(9)?,
    })
}

impl ReleaseStore for SqliteStore {
    fn add_release(&self, x: &ReleaseRecord) -> Result<()> {
        self.write(|w| {
            let sql = format!(
                "INSERT OR IGNORE INTO releases ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            );
            let n = w
                .conn
                .execute(
                    &sql,
                    params![
                        x.kind,
                        x.name,
                        x.version as i64,
                        x.digest,
                        x.key_id,
                        x.sha256,
                        x.size as i64,
                        x.expires_ns,
                        x.accepted_ns,
                        x.envelope
                    ],
                )
                .context(|| format!("cannot store release {} {} {}", x.kind, x.name, x.version))?;
            if n == 0 {
                return Err(Error::Conflict(format!(
                    "{} {} version {} exists already",
                    x.kind, x.name, x.version
                )));
            }
            Ok(())
        })
    }

    fn releases(&self, kind: Option<&str>, name: Option<&str>) -> Result<Vec<ReleaseRecord>> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM releases WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR name = ?2)
                 ORDER BY accepted_ns DESC, version DESC"
            );
            let mut stmt = conn
                .prepare_cached(&sql)
                .context(|| "cannot list releases".into())?;
            let rows = stmt
                .query_map(params![kind, name], row)
                .context(|| "cannot list releases".into())?;
            rows.collect::<rusqlite::Result<_>>()
                .context(|| "cannot read a release".into())
        })
    }

    fn latest_release_version(&self, kind: &str, name: &str) -> Result<Option<u64>> {
        self.read(|conn| {
            conn.query_row(
                "SELECT max(version) FROM releases WHERE kind = ?1 AND name = ?2",
                params![kind, name],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|v| v.map(|v| v as u64))
            .context(|| format!("cannot read the versions of {kind} {name}"))
        })
    }
}
