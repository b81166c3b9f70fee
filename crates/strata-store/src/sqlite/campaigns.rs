//! [`CampaignStore`] for SQLite.

use rusqlite::{OptionalExtension, Row, params};
use strata_proto::DeviceId;

use super::SqliteStore;
use crate::error::{Context, Error, Result, corrupt};
use crate::{Campaign, CampaignDevice, CampaignStore};

const CAMPAIGN_COLUMNS: &str = "id, spec, state, reason, wave, waves, created_ns, updated_ns, baseline_decided, baseline_failed, revision";
const DEVICE_COLUMNS: &str =
    "device_id, wave, state, previous, assigned_ns, expires_ns, decided_ns, reason";

fn campaign_row(r: &Row<'_>) -> rusqlite::Result<(Campaign, String)> {
    Ok((
        Campaign {
            id: r.get(0)?,
            spec: serde_json::Value::Null,
            state: r.get(2)?,
            reason: r.get(3)?,
            wave: r.get(4)?,
            waves: r.get(5)?,
            created_ns: r.get(6)?,
            updated_ns: r.get(7)?,
            baseline_decided: r.get::<_, i64>(8)? as u64,
            baseline_failed: r.get::<_, i64>(9)? as u64,
            revision: r.get::<_, i64>(10)? as u64,
        },
        r.get(1)?,
    ))
}

fn with_spec((mut c, spec): (Campaign, String)) -> Result<Campaign> {
    c.spec = serde_json::from_str(&spec).map_err(corrupt)?;
    Ok(c)
}

fn device_row(r: &Row<'_>) -> rusqlite::Result<Result<CampaignDevice>> {
    let id: String = r.get(0)?;
    let wave = r.get(1)?;
    let state = r.get(2)?;
    let previous = r.get::<_, Option<i64>>(3)?.map(|v| v as u64);
    let assigned_ns = r.get(4)?;
    let expires_ns = r.get(5)?;
    let decided_ns = r.get(6)?;
    let reason = r.get(7)?;
    Ok(DeviceId::new(id)
        .map_err(corrupt)
        .map(|device| CampaignDevice {
            device,
            wave,
            state,
            previous,
            assigned_ns,
            expires_ns,
            decided_ns,
            reason,
        }))
}

fn write_devices(conn: &rusqlite::Connection, id: i64, devices: &[CampaignDevice]) -> Result<()> {
    let sql = format!(
        "INSERT INTO campaign_devices (campaign_id, {DEVICE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (campaign_id, device_id) DO UPDATE SET wave = excluded.wave, state = excluded.state,
           previous = excluded.previous, assigned_ns = excluded.assigned_ns, expires_ns = excluded.expires_ns,
           decided_ns = excluded.decided_ns, reason = excluded.reason"
    );
    let mut stmt = conn
        .prepare_cached(&sql)
        .context(|| "cannot write campaign devices".into())?;
    for d in devices {
        stmt.execute(params![
            id,
            d.device.as_str(),
            d.wave,
            d.state,
            d.previous.map(|v| v as i64),
            d.assigned_ns,
            d.expires_ns,
            d.decided_ns,
            d.reason
        ])
        .context(|| format!("cannot write device {} of campaign {id}", d.device))?;
    }
    Ok(())
}

impl CampaignStore for SqliteStore {
    fn create_campaign(&self, c: &Campaign, devices: &[CampaignDevice]) -> Result<i64> {
        self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot start a transaction".into())?;
            tx.execute(
                "INSERT INTO campaigns (spec, state, reason, wave, waves, created_ns, updated_ns, baseline_decided, baseline_failed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    c.spec.to_string(),
                    c.state,
                    c.reason,
                    c.wave,
                    c.waves,
                    c.created_ns,
                    c.updated_ns,
                    c.baseline_decided as i64,
                    c.baseline_failed as i64
                ],
            )
            .context(|| "cannot store a campaign".into())?;
            let id = tx.last_insert_rowid();
            write_devices(&tx, id, devices)?;
            tx.commit()
                .context(|| format!("cannot commit campaign {id}"))?;
            Ok(id)
        })
    }

    fn campaigns(&self) -> Result<Vec<Campaign>> {
        self.read(|conn| {
            let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY id DESC");
            let mut stmt = conn
                .prepare_cached(&sql)
                .context(|| "cannot list campaigns".into())?;
            let rows = stmt
                .query_map([], campaign_row)
                .context(|| "cannot list campaigns".into())?;
            rows.map(|r| with_spec(r.context(|| "cannot read a campaign".into())?))
                .collect()
        })
    }

    fn campaign(&self, id: i64) -> Result<Option<Campaign>> {
        self.read(|conn| {
            let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?1");
            conn.query_row(&sql, params![id], campaign_row)
                .optional()
                .context(|| format!("cannot read campaign {id}"))?
                .map(with_spec)
                .transpose()
        })
    }

    fn campaign_devices(&self, id: i64) -> Result<Vec<CampaignDevice>> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {DEVICE_COLUMNS} FROM campaign_devices WHERE campaign_id = ?1 ORDER BY wave, rowid"
            );
            let mut stmt = conn
                .prepare_cached(&sql)
                .context(|| format!("cannot list the devices of campaign {id}"))?;
            let rows = stmt
                .query_map(params![id], device_row)
                .context(|| format!("cannot list the devices of campaign {id}"))?;
            rows.map(|r| r.context(|| "cannot read a campaign device".into())?)
                .collect()
        })
    }

    fn save_campaign(&self, c: &Campaign, devices: &[CampaignDevice]) -> Result<()> {
        self.write(|w| {
            let tx = w
                .conn
                .transaction()
                .context(|| "cannot start a transaction".into())?;
            let n = tx
                .execute(
                    "UPDATE campaigns SET state = ?2, reason = ?3, wave = ?4, updated_ns = ?5,
                       baseline_decided = ?6, baseline_failed = ?7, revision = revision + 1
                     WHERE id = ?1 AND revision = ?8",
                    params![
                        c.id,
                        c.state,
                        c.reason,
                        c.wave,
                        c.updated_ns,
                        c.baseline_decided as i64,
                        c.baseline_failed as i64,
                        c.revision as i64
                    ],
                )
                .context(|| format!("cannot update campaign {}", c.id))?;
            if n == 0 {
                let now: Option<i64> = tx
                    .query_row(
                        "SELECT revision FROM campaigns WHERE id = ?1",
                        params![c.id],
                        |r| r.get(0),
                    )
                    .optional()
                    .context(|| format!("cannot read campaign {}", c.id))?;
                return Err(match now {
                    None => Error::NotFound(format!("campaign {}", c.id)),
                    Some(now) => crate::campaigns::changed_meanwhile(c, now as u64),
                });
            }
            write_devices(&tx, c.id, devices)?;
            tx.commit()
                .context(|| format!("cannot commit campaign {}", c.id))
        })
    }
}
