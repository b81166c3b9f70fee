//! The device registry in PostgreSQL: sites, devices, their credentials
//! and presence, in one database that every hub replica reads and writes,
//! so a device registered, enrolled or revoked through any replica is so
//! for all of them.
//!
//! - `registry_sites`, `registry_devices`, `registry_presence`: what the
//!   SQLite registry keeps in `sites`, `devices` and `presence_log`.
//! - `shared_changes` ([`super::changes`]): every change to a device's
//!   credential, state or declared signals moves the registry's count, in
//!   the same transaction. A replica polls it ([`RegistryStore::changes`])
//!   and reloads its authentication cache only when it moved.
//!
//! Enrollment locks the device's row (`FOR UPDATE`), so a token is traded
//! once even when two replicas are handed it at the same moment. Presence
//! from several replicas may arrive out of order: a device's `online` takes
//! a change only if it is newer than the one it holds.

use postgres::Row;
use strata_proto::{DeviceId, SiteId};

use super::Connection;
use super::changes::{self, Count};
use crate::error::{Context, Error, Result, corrupt};
use crate::model::{map_json, stored_hash};
use crate::{
    Device, DeviceCredential, DeviceState, DeviceUpdate, EnrollOutcome, NewDevice, RegistryStore,
    Site,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS registry_sites (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    region      TEXT NOT NULL,
    created_ns  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_devices (
    id                  TEXT PRIMARY KEY,
    site_id             TEXT NOT NULL REFERENCES registry_sites (id),
    tags                TEXT NOT NULL,
    signals             TEXT NOT NULL,
    model_version       TEXT,
    firmware_version    TEXT,
    state               TEXT NOT NULL,
    token_sha256        BYTEA,
    token_expires_ns    BIGINT,
    credential_sha256   BYTEA,
    online              BOOLEAN NOT NULL DEFAULT false,
    online_changed_ns   BIGINT NOT NULL DEFAULT 0,
    last_seen_ns        BIGINT,
    created_ns          BIGINT NOT NULL,
    revoked_ns          BIGINT
);
CREATE INDEX IF NOT EXISTS registry_devices_by_site ON registry_devices (site_id);
CREATE TABLE IF NOT EXISTS registry_presence (
    device_id   TEXT NOT NULL,
    ts_ns       BIGINT NOT NULL,
    online      BOOLEAN NOT NULL,
    PRIMARY KEY (device_id, ts_ns)
);
";

const DEVICE_COLUMNS: &str = "id, site_id, tags, signals, model_version, firmware_version, state, \
                              online, last_seen_ns, created_ns, revoked_ns";

/// The PostgreSQL registry.
pub struct PostgresRegistry {
    db: Connection,
}

/// A row of [`DEVICE_COLUMNS`].
fn device_row(r: &Row) -> Result<Device> {
    Ok(Device {
        id: DeviceId::new(r.get::<_, String>(0)).map_err(corrupt)?,
        site: SiteId::new(r.get::<_, String>(1)).map_err(corrupt)?,
        tags: serde_json::from_str(r.get(2)).map_err(corrupt)?,
        signals: serde_json::from_str(r.get(3)).map_err(corrupt)?,
        model_version: r.get(4),
        firmware_version: r.get(5),
        state: DeviceState::stored(r.get(6))?,
        online: r.get(7),
        last_seen_ns: r.get(8),
        created_ns: r.get(9),
        revoked_ns: r.get(10),
    })
}

impl PostgresRegistry {
    /// Connects to the database at `url` and makes the tables if needed.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(PostgresRegistry {
            db: Connection::open(url, SCHEMA, "registry")?,
        })
    }
}

impl RegistryStore for PostgresRegistry {
    fn create_site(&self, site: &Site) -> Result<()> {
        self.db.with(|c| {
            let n = c
                .execute(
                    "INSERT INTO registry_sites (id, name, region, created_ns) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[&site.id.as_str(), &site.name, &site.region, &site.created_ns],
                )
                .context(|| format!("cannot create site {}", site.id))?;
            if n == 0 {
                return Err(Error::Conflict(format!("site {} exists already", site.id)));
            }
            Ok(())
        })
    }

    fn sites(&self) -> Result<Vec<Site>> {
        self.db.with(|c| {
            let rows = c
                .query(
                    "SELECT id, name, region, created_ns FROM registry_sites ORDER BY id",
                    &[],
                )
                .context(|| "cannot list sites".into())?;
            rows.iter()
                .map(|r| {
                    Ok(Site {
                        id: SiteId::new(r.get::<_, String>(0)).map_err(corrupt)?,
                        name: r.get(1),
                        region: r.get(2),
                        created_ns: r.get(3),
                    })
                })
                .collect()
        })
    }

    fn site(&self, id: &SiteId) -> Result<Option<Site>> {
        Ok(self.sites()?.into_iter().find(|s| &s.id == id))
    }

    fn create_device(&self, d: &NewDevice) -> Result<()> {
        self.db.with(|c| {
            let mut tx = c
                .transaction()
                .context(|| format!("cannot create device {}", d.id))?;
            let site = tx
                .query_opt(
                    "SELECT 1 FROM registry_sites WHERE id = $1",
                    &[&d.site.as_str()],
                )
                .context(|| format!("cannot look up site {}", d.site))?;
            if site.is_none() {
                return Err(Error::NotFound(format!(
                    "site {} does not exist; create it first",
                    d.site
                )));
            }
            let n = tx
                .execute(
                    "INSERT INTO registry_devices
                        (id, site_id, tags, signals, state, token_sha256, token_expires_ns, created_ns)
                     VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)
                     ON CONFLICT DO NOTHING",
                    &[
                        &d.id.as_str(),
                        &d.site.as_str(),
                        &map_json(&d.tags),
                        &map_json(&d.signals),
                        &&d.token_sha256[..],
                        &d.token_expires_ns,
                        &d.created_ns,
                    ],
                )
                .context(|| format!("cannot create device {}", d.id))?;
            if n == 0 {
                return Err(Error::Conflict(format!("device {} exists already", d.id)));
            }
            changes::bump(&mut tx, Count::Registry)
                .and_then(|_| tx.commit())
                .context(|| format!("cannot create device {}", d.id))
        })
    }

    fn devices(&self, site: Option<&SiteId>) -> Result<Vec<Device>> {
        self.db.with(|c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT {DEVICE_COLUMNS} FROM registry_devices
                         WHERE $1::TEXT IS NULL OR site_id = $1 ORDER BY id"
                    ),
                    &[&site.map(|s| s.as_str())],
                )
                .context(|| "cannot list devices".into())?;
            rows.iter().map(device_row).collect()
        })
    }

    fn device(&self, id: &DeviceId) -> Result<Option<Device>> {
        self.db.with(|c| {
            c.query_opt(
                &format!("SELECT {DEVICE_COLUMNS} FROM registry_devices WHERE id = $1"),
                &[&id.as_str()],
            )
            .context(|| format!("cannot look up device {id}"))?
            .as_ref()
            .map(device_row)
            .transpose()
        })
    }

    fn credentials(&self) -> Result<Vec<DeviceCredential>> {
        self.db.with(|c| {
            let rows = c
                .query(
                    "SELECT id, state, credential_sha256, signals FROM registry_devices",
                    &[],
                )
                .context(|| "cannot list credentials".into())?;
            rows.iter()
                .map(|r| {
                    Ok(DeviceCredential {
                        device: DeviceId::new(r.get::<_, String>(0)).map_err(corrupt)?,
                        state: DeviceState::stored(r.get(1))?,
                        credential_sha256: stored_hash(r.get(2))?,
                        signals: serde_json::from_str(r.get(3)).map_err(corrupt)?,
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
        self.db.with(|c| {
            let mut tx = c.transaction().context(|| format!("cannot enroll {id}"))?;
            let row = tx
                .query_opt(
                    "SELECT state, token_sha256, token_expires_ns FROM registry_devices
                     WHERE id = $1 FOR UPDATE",
                    &[&id.as_str()],
                )
                .context(|| format!("cannot look up device {id}"))?;
            let Some(row) = row else {
                return Ok(EnrollOutcome::UnknownDevice);
            };
            let outcome = EnrollOutcome::judge(
                DeviceState::stored(row.get(0))?,
                stored_hash(row.get(1))?,
                row.get(2),
                token_sha256,
                now_ns,
            );
            if outcome != EnrollOutcome::Enrolled {
                return Ok(outcome);
            }
            tx.execute(
                "UPDATE registry_devices SET state = 'active', credential_sha256 = $2,
                    token_sha256 = NULL, token_expires_ns = NULL
                 WHERE id = $1",
                &[&id.as_str(), &&credential_sha256[..]],
            )
            .and_then(|_| changes::bump(&mut tx, Count::Registry))
            .and_then(|_| tx.commit())
            .context(|| format!("cannot store the credential of {id}"))?;
            Ok(EnrollOutcome::Enrolled)
        })
    }

    fn reissue_token(
        &self,
        id: &DeviceId,
        token_sha256: &[u8; 32],
        expires_ns: i64,
    ) -> Result<bool> {
        self.db.with(|c| {
            let n = c
                .execute(
                    "UPDATE registry_devices SET token_sha256 = $2, token_expires_ns = $3
                     WHERE id = $1 AND state = 'pending'",
                    &[&id.as_str(), &&token_sha256[..], &expires_ns],
                )
                .context(|| format!("cannot reissue the token of {id}"))?;
            Ok(n == 1)
        })
    }

    fn revoke(&self, id: &DeviceId, now_ns: i64) -> Result<bool> {
        self.db.with(|c| {
            let mut tx = c.transaction().context(|| format!("cannot revoke {id}"))?;
            let n = tx
                .execute(
                    "UPDATE registry_devices SET state = 'revoked', revoked_ns = $2,
                        credential_sha256 = NULL, token_sha256 = NULL, token_expires_ns = NULL,
                        online = false
                     WHERE id = $1 AND state <> 'revoked'",
                    &[&id.as_str(), &now_ns],
                )
                .context(|| format!("cannot revoke {id}"))?;
            if n == 1 {
                changes::bump(&mut tx, Count::Registry)
                    .and_then(|_| tx.commit())
                    .context(|| format!("cannot revoke {id}"))?;
            }
            Ok(n == 1)
        })
    }

    fn update_device(&self, id: &DeviceId, u: &DeviceUpdate) -> Result<bool> {
        self.db.with(|c| {
            let mut tx = c
                .transaction()
                .context(|| format!("cannot update device {id}"))?;
            let n = tx
                .execute(
                    "UPDATE registry_devices SET
                        tags = coalesce($2, tags),
                        model_version = coalesce($3, model_version),
                        firmware_version = coalesce($4, firmware_version),
                        signals = coalesce($5, signals)
                     WHERE id = $1",
                    &[
                        &id.as_str(),
                        &u.tags.as_ref().map(map_json),
                        &u.model_version,
                        &u.firmware_version,
                        &u.signals.as_ref().map(map_json),
                    ],
                )
                .context(|| format!("cannot update device {id}"))?;
            // Declared signals are in the authentication cache.
            if n == 1 && u.signals.is_some() {
                changes::bump(&mut tx, Count::Registry)
                    .context(|| format!("cannot update device {id}"))?;
            }
            tx.commit()
                .context(|| format!("cannot update device {id}"))?;
            Ok(n == 1)
        })
    }

    fn set_presence(&self, changes: &[(DeviceId, bool, i64)]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.db.with(|c| {
            let mut tx = c
                .transaction()
                .context(|| "cannot record presence".into())?;
            let state = tx
                .prepare(
                    "UPDATE registry_devices SET
                        online = CASE WHEN $3 >= online_changed_ns THEN $2 ELSE online END,
                        online_changed_ns = greatest(online_changed_ns, $3),
                        last_seen_ns = greatest(coalesce(last_seen_ns, 0), $3)
                     WHERE id = $1",
                )
                .context(|| "cannot record presence".into())?;
            let log = tx
                .prepare(
                    "INSERT INTO registry_presence (device_id, ts_ns, online) VALUES ($1, $3, $2)
                     ON CONFLICT (device_id, ts_ns) DO UPDATE SET online = excluded.online",
                )
                .context(|| "cannot record presence".into())?;
            // Rows in one order at every replica (no deadlock between two
            // recording the same devices); the statements are order-free.
            let mut changes: Vec<&(DeviceId, bool, i64)> = changes.iter().collect();
            changes.sort_by(|a, b| (a.0.as_str(), a.2).cmp(&(b.0.as_str(), b.2)));
            for (id, online, ts) in changes {
                let params: [&(dyn postgres::types::ToSql + Sync); 3] = [&id.as_str(), online, ts];
                tx.execute(&state, &params)
                    .and_then(|_| tx.execute(&log, &params))
                    .context(|| format!("cannot record presence of {id}"))?;
            }
            tx.commit().context(|| "cannot record presence".into())
        })
    }

    fn forget_presence(&self, before_ns: i64) -> Result<u64> {
        self.db.with(|c| {
            c.execute(
                "DELETE FROM registry_presence p
                 WHERE ts_ns < (SELECT max(ts_ns) FROM registry_presence q
                                WHERE q.device_id = p.device_id AND q.ts_ns < $1)",
                &[&before_ns],
            )
            .context(|| "cannot delete old presence changes".into())
        })
    }

    fn presence_log(&self, from_ns: i64, to_ns: i64) -> Result<Vec<(DeviceId, i64, bool)>> {
        self.db.with(|c| {
            // The last change before the window too: the state it opens in.
            let rows = c
                .query(
                    "SELECT device_id, ts_ns, online FROM registry_presence p
                     WHERE ts_ns BETWEEN $1 AND $2
                        OR ts_ns = (SELECT max(ts_ns) FROM registry_presence q
                                    WHERE q.device_id = p.device_id AND q.ts_ns < $1)
                     ORDER BY device_id, ts_ns",
                    &[&from_ns, &to_ns],
                )
                .context(|| "cannot read presence".into())?;
            rows.iter()
                .map(|r| {
                    Ok((
                        DeviceId::new(r.get::<_, String>(0)).map_err(corrupt)?,
                        r.get(1),
                        r.get(2),
                    ))
                })
                .collect()
        })
    }

    fn touch(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
        let times: Vec<i64> = seen.iter().map(|&(_, ts)| ts).collect();
        self.db.with(|c| {
            c.execute(
                "UPDATE registry_devices d SET last_seen_ns = greatest(coalesce(d.last_seen_ns, 0), s.ts)
                 FROM (SELECT id, max(ts) AS ts FROM unnest($1::TEXT[], $2::BIGINT[]) AS u (id, ts)
                       GROUP BY id) s
                 WHERE d.id = s.id",
                &[&ids, &times],
            )
            .context(|| "cannot record last-seen times".into())?;
            Ok(())
        })
    }

    fn changes(&self) -> Result<Option<i64>> {
        self.db
            .with(|c| changes::version(c, Count::Registry).map(Some))
    }
}
