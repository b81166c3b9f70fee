//! [`RegistryStore`] for SQLite: sites, devices and credentials.

use rusqlite::{OptionalExtension, Row, params};
use strata_proto::{DeviceId, SiteId};

use super::SqliteStore;
use crate::error::{Context, Error, Result, corrupt};
use crate::model::{map_json, stored_hash};
use crate::{
    Device, DeviceCredential, DeviceState, DeviceUpdate, EnrollOutcome, NewDevice, RegistryStore,
    Site,
};

const DEVICE_COLUMNS: &str = "id, site_id, tags, signals, model_version, firmware_version, state, \
                              online, last_seen_ns, created_ns, revoked_ns";

/// Reads a device row; decoding problems surface as `Corrupt` afterwards.
fn device_row(r: &Row<'_>) -> rusqlite::Result<Result<Device>> {
    let id: String = r.get(0)?;
    let site: String = r.get(1)?;
    let tags: String = r.get(2)?;
    let signals: String = r.get(3)?;
    let state: String = r.get(6)?;
    let online: i64 = r.get(7)?;
    let model_version = r.get(4)?;
    let firmware_version = r.get(5)?;
    let last_seen_ns = r.get(8)?;
    let created_ns = r.get(9)?;
    let revoked_ns = r.get(10)?;
    Ok((|| {
        Ok(Device {
            id: DeviceId::new(id).map_err(corrupt)?,
            site: SiteId::new(site).map_err(corrupt)?,
            tags: serde_json::from_str(&tags).map_err(corrupt)?,
            signals: serde_json::from_str(&signals).map_err(corrupt)?,
            model_version,
            firmware_version,
            state: DeviceState::stored(&state)?,
            online: online != 0,
            last_seen_ns,
            created_ns,
            revoked_ns,
        })
    })())
}

impl RegistryStore for SqliteStore {
    fn create_site(&self, site: &Site) -> Result<()> {
        self.write(|w| {
            let n = w
                .conn
                .execute(
                    "INSERT OR IGNORE INTO sites (id, name, region, created_ns) VALUES (?1, ?2, ?3, ?4)",
                    params![site.id.as_str(), site.name, site.region, site.created_ns],
                )
                .context(|| format!("cannot create site {}", site.id))?;
            if n == 0 {
                return Err(Error::Conflict(format!("site {} exists already", site.id)));
            }
            Ok(())
        })
    }

    fn sites(&self) -> Result<Vec<Site>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, name, region, created_ns FROM sites ORDER BY id")
                .context(|| "cannot list sites".into())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .context(|| "cannot list sites".into())?;
            rows.map(|row| {
                let (id, name, region, created_ns) = row.context(|| "cannot read a site".into())?;
                Ok(Site {
                    id: SiteId::new(id).map_err(corrupt)?,
                    name,
                    region,
                    created_ns,
                })
            })
            .collect()
        })
    }

    fn site(&self, id: &SiteId) -> Result<Option<Site>> {
        Ok(self.sites()?.into_iter().find(|s| &s.id == id))
    }

    fn create_device(&self, d: &NewDevice) -> Result<()> {
        self.write(|w| {
            let site_exists: bool = w
                .conn
                .query_row("SELECT 1 FROM sites WHERE id = ?1", params![d.site.as_str()], |_| Ok(()))
                .optional()
                .context(|| format!("cannot look up site {}", d.site))?
                .is_some();
            if !site_exists {
                return Err(Error::NotFound(format!("site {} does not exist; create it first", d.site)));
            }
            let n = w
                .conn
                .execute(
                    "INSERT OR IGNORE INTO devices (id, site_id, tags, signals, state, token_sha256, token_expires_ns, created_ns)
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7)",
                    params![
                        d.id.as_str(),
                        d.site.as_str(),
                        map_json(&d.tags),
                        map_json(&d.signals),
                        &d.token_sha256[..],
                        d.token_expires_ns,
                        d.created_ns
                    ],
                )
                .context(|| format!("cannot create device {}", d.id))?;
            if n == 0 {
                return Err(Error::Conflict(format!("device {} exists already", d.id)));
            }
            Ok(())
        })
    }

    fn devices(&self, site: Option<&SiteId>) -> Result<Vec<Device>> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE ?1 IS NULL OR site_id = ?1 ORDER BY id"
            );
            let mut stmt = conn
                .prepare_cached(&sql)
                .context(|| "cannot list devices".into())?;
            let rows = stmt
                .query_map(params![site.map(|s| s.as_str())], device_row)
                .context(|| "cannot list devices".into())?;
            rows.map(|r| r.context(|| "cannot read a device".into())?)
                .collect()
        })
    }

    fn device(&self, id: &DeviceId) -> Result<Option<Device>> {
        self.read(|conn| {
            let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1");
            conn.query_row(&sql, params![id.as_str()], device_row)
                .optional()
                .context(|| format!("cannot look up device {id}"))?
                .transpose()
        })
    }

    fn credentials(&self) -> Result<Vec<DeviceCredential>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, state, credential_sha256, signals FROM devices")
                .context(|| "cannot list credentials".into())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .context(|| "cannot list credentials".into())?;
            rows.map(|row| {
                let (id, state, hash, signals) =
                    row.context(|| "cannot read a credential".into())?;
                Ok(DeviceCredential {
                    device: DeviceId::new(id).map_err(corrupt)?,
                    state: DeviceState::stored(&state)?,
                    credential_sha256: stored_hash(hash)?,
                    signals: serde_json::from_str(&signals).map_err(corrupt)?,
                })
            })
            .collect()
        })
    }

    fn enroll(
        &self,
        id: &DeviceId,
        token_sha256: &[u8; 32],
        credential_sha256: &[u8; 32],
        now_ns: i64,
    ) -> Result<EnrollOutcome> {
        self.write(|w| {
            let tx = w.conn.transaction().context(|| format!("cannot enroll {id}"))?;
            let row: Option<(String, Option<Vec<u8>>, Option<i64>)> = tx
                .query_row(
                    "SELECT state, token_sha256, token_expires_ns FROM devices WHERE id = ?1",
                    params![id.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .context(|| format!("cannot look up device {id}"))?;
            let Some((state, token, expires)) = row else {
                return Ok(EnrollOutcome::UnknownDevice);
            };
            let state = DeviceState::stored(&state)?;
            let outcome =
                EnrollOutcome::judge(state, stored_hash(token)?, expires, token_sha256, now_ns);
            if outcome != EnrollOutcome::Enrolled {
                return Ok(outcome);
            }
            tx.execute(
                "UPDATE devices SET state = 'active', credential_sha256 = ?2, token_sha256 = NULL, token_expires_ns = NULL
                 WHERE id = ?1",
                params![id.as_str(), &credential_sha256[..]],
            )
            .context(|| format!("cannot store the credential of {id}"))?;
            tx.commit().context(|| format!("cannot enroll {id}"))?;
            Ok(EnrollOutcome::Enrolled)
        })
    }

    fn reissue_token(
        &self,
        id: &DeviceId,
        token_sha256: &[u8; 32],
        expires_ns: i64,
    ) -> Result<bool> {
        self.write(|w| {
            let n = w
                .conn
                .execute(
                    "UPDATE devices SET token_sha256 = ?2, token_expires_ns = ?3 WHERE id = ?1 AND state = 'pending'",
                    params![id.as_str(), &token_sha256[..], expires_ns],
                )
                .context(|| format!("cannot reissue the token of {id}"))?;
            Ok(n == 1)
        })
    }

    fn revoke(&self, id: &DeviceId, now_ns: i64) -> Result<bool> {
        self.write(|w| {
            let n = w
                .conn
                .execute(
                    "UPDATE devices SET state = 'revoked', revoked_ns = ?2, credential_sha256 = NULL,
                        token_sha256 = NULL, token_expires_ns = NULL, online = 0
                     WHERE id = ?1 AND state != 'revoked'",
                    params![id.as_str(), now_ns],
                )
                .context(|| format!("cannot revoke {id}"))?;
            Ok(n == 1)
        })
    }

    fn update_device(&self, id: &DeviceId, u: &DeviceUpdate) -> Result<bool> {
        self.write(|w| {
            let n = w
                .conn
                .execute(
                    "UPDATE devices SET
                        tags = coalesce(?2, tags),
                        model_version = coalesce(?3, model_version),
                        firmware_version = coalesce(?4, firmware_version),
                        signals = coalesce(?5, signals)
                     WHERE id = ?1",
                    params![
                        id.as_str(),
                        u.tags.as_ref().map(map_json),
                        u.model_version,
                        u.firmware_version,
                        u.signals.as_ref().map(map_json)
                    ],
                )
                .context(|| format!("cannot update device {id}"))?;
            Ok(n == 1)
        })
    }

    fn set_presence(&self, changes: &[(DeviceId, bool, i64)]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.write(|w| {
            let tx = w.conn.transaction().context(|| "cannot record presence".into())?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE devices SET online = ?2, last_seen_ns = max(coalesce(last_seen_ns, 0), ?3)
                         WHERE id = ?1",
                    )
                    .context(|| "cannot record presence".into())?;
                let mut log = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO presence_log (device_id, ts_ns, online) VALUES (?1, ?2, ?3)",
                    )
                    .context(|| "cannot record presence".into())?;
                for (id, online, ts) in changes {
                    stmt.execute(params![id.as_str(), online, ts])
                        .context(|| format!("cannot record presence of {id}"))?;
                    log.execute(params![id.as_str(), ts, online])
                        .context(|| format!("cannot log presence of {id}"))?;
                }
            }
            tx.commit().context(|| "cannot record presence".into())
        })
    }

    fn forget_presence(&self, before_ns: i64) -> Result<u64> {
        // A few thousand rows a transaction (the first pass over an old
        // store may have many), so that ingest goes on meanwhile.
        const ROWS_PER_TRANSACTION: usize = 5_000;
        let mut total = 0;
        loop {
            let n = self.write(|w| {
                w.conn
                    .execute(
                        &format!(
                            "DELETE FROM presence_log WHERE (device_id, ts_ns) IN
                             (SELECT device_id, ts_ns FROM presence_log p
                              WHERE ts_ns < (SELECT max(ts_ns) FROM presence_log q
                                             WHERE q.device_id = p.device_id AND q.ts_ns < ?1)
                              LIMIT {ROWS_PER_TRANSACTION})"
                        ),
                        params![before_ns],
                    )
                    .context(|| "cannot delete old presence changes".into())
            })?;
            total += n as u64;
            if n < ROWS_PER_TRANSACTION {
                return Ok(total);
            }
        }
    }

    fn presence_log(&self, from_ns: i64, to_ns: i64) -> Result<Vec<(DeviceId, i64, bool)>> {
        self.read(|conn| {
            // The last change before the window too: the state it opens in.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT device_id, ts_ns, online FROM presence_log p
                     WHERE ts_ns BETWEEN ?1 AND ?2
                        OR ts_ns = (SELECT max(ts_ns) FROM presence_log q
                                    WHERE q.device_id = p.device_id AND q.ts_ns < ?1)
                     ORDER BY device_id, ts_ns",
                )
                .context(|| "cannot read presence".into())?;
            let rows = stmt
                .query_map(params![from_ns, to_ns], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                })
                .context(|| "cannot read presence".into())?;
            rows.map(|row| {
                let (id, ts, online) = row.context(|| "cannot read presence".into())?;
                Ok((
                    DeviceId::new(id).map_err(|e| Error::Corrupt(e.to_string()))?,
                    ts,
                    online,
                ))
            })
            .collect()
        })
    }

    fn touch(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        self.write(|w| {
            let tx = w.conn.transaction().context(|| "cannot record last-seen times".into())?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE devices SET last_seen_ns = max(coalesce(last_seen_ns, 0), ?2) WHERE id = ?1",
                    )
                    .context(|| "cannot record last-seen times".into())?;
                for (id, ts) in seen {
                    stmt.execute(params![id.as_str(), ts]).context(|| format!("cannot record last-seen of {id}"))?;
                }
            }
            tx.commit().context(|| "cannot record last-seen times".into())
        })
    }
}
