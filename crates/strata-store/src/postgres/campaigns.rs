//! OTA rollout campaigns in PostgreSQL, shared by hub replicas: a
//! campaign started through one replica is listed, paused, resumed or
//! aborted through any, and every replica's worker carries it on.
//!
//! `shared_campaigns` and `shared_campaign_devices` hold what the SQLite
//! store keeps in `campaigns` and `campaign_devices` (`ord` keeps the
//! order devices were given in). Two guards keep replicas from undoing
//! each other's work:
//! - a replica stepping a campaign, or acting on it for an operator,
//!   holds a PostgreSQL advisory lock on that campaign (creating one, a
//!   lock of its own, so two replicas cannot start a rollout of the same
//!   release at once), on a session kept for these locks;
//! - a save names the revision the campaign was read at, and is refused
//!   if it moved: should a lock's session break mid-step, the step that
//!   read the campaign before another replica's pause cannot overwrite
//!   the pause.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::{GenericClient, Row};
use strata_proto::DeviceId;

use super::{Connection, Session, connect, off_runtime};
use crate::campaigns::changed_meanwhile;
use crate::error::{Context, Error, Result, corrupt};
use crate::{Campaign, CampaignDevice, CampaignLock, CampaignStore};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_campaigns (
    id               BIGSERIAL PRIMARY KEY,
    spec             TEXT NOT NULL,
    state            TEXT NOT NULL,
    reason           TEXT NOT NULL DEFAULT '',
    wave             BIGINT NOT NULL,
    waves            BIGINT NOT NULL,
    created_ns       BIGINT NOT NULL,
    updated_ns       BIGINT NOT NULL,
    baseline_decided BIGINT NOT NULL DEFAULT 0,
    baseline_failed  BIGINT NOT NULL DEFAULT 0,
    revision         BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS shared_campaign_devices (
    campaign_id BIGINT NOT NULL REFERENCES shared_campaigns(id),
    device_id   TEXT NOT NULL,
    ord         BIGSERIAL,
    wave        BIGINT NOT NULL,
    state       TEXT NOT NULL,
    previous    BIGINT,
    assigned_ns BIGINT,
    expires_ns  BIGINT,
    decided_ns  BIGINT,
    reason      TEXT,
    PRIMARY KEY (campaign_id, device_id)
);
";

const CAMPAIGN_COLUMNS: &str = "id, spec, state, reason, wave, waves, created_ns, updated_ns, baseline_decided, baseline_failed, revision";
const DEVICE_COLUMNS: &str =
    "device_id, wave, state, previous, assigned_ns, expires_ns, decided_ns, reason";

/// How long a replica waits for another to finish with a campaign.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The PostgreSQL campaign store.
pub struct PostgresCampaigns {
    db: Connection,
    url: String,
    /// The advisory locks' key space: the schema's, so hubs kept apart by
    /// schemas in one database each have their own.
    space: i32,
    /// The session the locks are taken on (made again when lost: the locks
    /// went with the old one).
    locks: Arc<Mutex<Option<Session>>>,
}

impl PostgresCampaigns {
    /// Connects to the database at `url` and makes the tables if needed.
    pub fn connect(url: &str) -> Result<Self> {
        let db = Connection::open(url, SCHEMA, "campaign")?;
        let (session, key) = off_runtime(|| {
            let mut session = connect(url)?;
            let key = super::lease::schema_key(&mut session, "campaigns")?;
            Ok::<_, Error>((session, key))
        })?;
        Ok(PostgresCampaigns {
            db,
            url: url.to_owned(),
            space: (key >> 32) as i32,
            locks: Arc::new(Mutex::new(Some(session))),
        })
    }

    /// Takes the lock `(space, key)`, if free. A session found broken is
    /// made again once: the locks it held went with it.
    fn try_lock(&self, key: i32) -> Result<bool> {
        let mut slot = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        let mut tries = 0;
        loop {
            if slot.as_ref().is_none_or(|s| s.is_closed()) {
                *slot = Some(connect(&self.url)?);
            }
            let session = slot.as_mut().expect("made above");
            let out = session
                .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&self.space, &key])
                .map(|row| row.get(0))
                .context(|| "cannot take a campaign lock".into());
            if out.is_ok() {
                return out;
            }
            *slot = None;
            tries += 1;
            if tries == 2 || !super::connection_lost(&out) {
                return out;
            }
        }
    }
}

/// The lock key of campaign `id` (0: creating one; ids start at 1). Ids
/// past 2^31 share keys with smaller ones: they wait for each other, no
/// more.
fn lock_key(id: Option<i64>) -> i32 {
    id.map_or(0, |id| id as i32)
}

/// A row of [`CAMPAIGN_COLUMNS`].
fn campaign_row(r: &Row) -> Result<Campaign> {
    let count = |at: usize| u64::try_from(r.get::<_, i64>(at)).map_err(corrupt);
    let small = |at: usize| u32::try_from(r.get::<_, i64>(at)).map_err(corrupt);
    Ok(Campaign {
        id: r.get(0),
        spec: serde_json::from_str(r.get(1)).map_err(corrupt)?,
        state: r.get(2),
        reason: r.get(3),
        wave: small(4)?,
        waves: small(5)?,
        created_ns: r.get(6),
        updated_ns: r.get(7),
        baseline_decided: count(8)?,
        baseline_failed: count(9)?,
        revision: count(10)?,
    })
}

/// A row of [`DEVICE_COLUMNS`].
fn device_row(r: &Row) -> Result<CampaignDevice> {
    Ok(CampaignDevice {
        device: DeviceId::new(r.get::<_, String>(0)).map_err(corrupt)?,
        wave: u32::try_from(r.get::<_, i64>(1)).map_err(corrupt)?,
        state: r.get(2),
        previous: r
            .get::<_, Option<i64>>(3)
            .map(|v| u64::try_from(v).map_err(corrupt))
            .transpose()?,
        assigned_ns: r.get(4),
        expires_ns: r.get(5),
        decided_ns: r.get(6),
        reason: r.get(7),
    })
}

fn signed(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(corrupt)
}

/// Writes `devices` of campaign `id` (new ones after the others).
fn write_devices(c: &mut impl GenericClient, id: i64, devices: &[CampaignDevice]) -> Result<()> {
    let statement = c
        .prepare(&format!(
            "INSERT INTO shared_campaign_devices (campaign_id, {DEVICE_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (campaign_id, device_id) DO UPDATE SET wave = excluded.wave,
               state = excluded.state, previous = excluded.previous,
               assigned_ns = excluded.assigned_ns, expires_ns = excluded.expires_ns,
               decided_ns = excluded.decided_ns, reason = excluded.reason"
        ))
        .context(|| format!("cannot write the devices of campaign {id}"))?;
    for d in devices {
        let previous = d.previous.map(signed).transpose()?;
        c.execute(
            &statement,
            &[
                &id,
                &d.device.as_str(),
                &i64::from(d.wave),
                &d.state,
                &previous,
                &d.assigned_ns,
                &d.expires_ns,
                &d.decided_ns,
                &d.reason,
            ],
        )
        .context(|| format!("cannot write device {} of campaign {id}", d.device))?;
    }
    Ok(())
}

impl CampaignStore for PostgresCampaigns {
    fn create_campaign(&self, c: &Campaign, devices: &[CampaignDevice]) -> Result<i64> {
        self.db.with(|client| {
            let what = || "cannot store a campaign".to_string();
            let mut tx = client.transaction().context(what)?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO shared_campaigns (spec, state, reason, wave, waves, created_ns,
                       updated_ns, baseline_decided, baseline_failed)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                    &[
                        &c.spec.to_string(),
                        &c.state,
                        &c.reason,
                        &i64::from(c.wave),
                        &i64::from(c.waves),
                        &c.created_ns,
                        &c.updated_ns,
                        &signed(c.baseline_decided)?,
                        &signed(c.baseline_failed)?,
                    ],
                )
                .context(what)?
                .get(0);
            write_devices(&mut tx, id, devices)?;
            tx.commit()
                .context(|| format!("cannot commit campaign {id}"))?;
            Ok(id)
        })
    }

    fn campaigns(&self) -> Result<Vec<Campaign>> {
        self.db.with(|c| {
            c.query(
                &format!("SELECT {CAMPAIGN_COLUMNS} FROM shared_campaigns ORDER BY id DESC"),
                &[],
            )
            .context(|| "cannot list campaigns".into())?
            .iter()
            .map(campaign_row)
            .collect()
        })
    }

    fn campaign(&self, id: i64) -> Result<Option<Campaign>> {
        self.db.with(|c| {
            c.query_opt(
                &format!("SELECT {CAMPAIGN_COLUMNS} FROM shared_campaigns WHERE id = $1"),
                &[&id],
            )
            .context(|| format!("cannot read campaign {id}"))?
            .map(|r| campaign_row(&r))
            .transpose()
        })
    }

    fn campaign_devices(&self, id: i64) -> Result<Vec<CampaignDevice>> {
        self.db.with(|c| {
            c.query(
                &format!(
                    "SELECT {DEVICE_COLUMNS} FROM shared_campaign_devices
                     WHERE campaign_id = $1 ORDER BY wave, ord"
                ),
                &[&id],
            )
            .context(|| format!("cannot list the devices of campaign {id}"))?
            .iter()
            .map(device_row)
            .collect()
        })
    }

    fn save_campaign(&self, c: &Campaign, devices: &[CampaignDevice]) -> Result<()> {
        self.db.with(|client| {
            let what = || format!("cannot update campaign {}", c.id);
            let mut tx = client.transaction().context(what)?;
            let saved = tx
                .execute(
                    "UPDATE shared_campaigns SET state = $2, reason = $3, wave = $4, updated_ns = $5,
                       baseline_decided = $6, baseline_failed = $7, revision = revision + 1
                     WHERE id = $1 AND revision = $8",
                    &[
                        &c.id,
                        &c.state,
                        &c.reason,
                        &i64::from(c.wave),
                        &c.updated_ns,
                        &signed(c.baseline_decided)?,
                        &signed(c.baseline_failed)?,
                        &signed(c.revision)?,
                    ],
                )
                .context(what)?;
            if saved == 0 {
                let now: Option<i64> = tx
                    .query_opt(
                        "SELECT revision FROM shared_campaigns WHERE id = $1",
                        &[&c.id],
                    )
                    .context(what)?
                    .map(|r| r.get(0));
                return Err(match now {
                    None => Error::NotFound(format!("campaign {}", c.id)),
                    Some(now) => changed_meanwhile(c, u64::try_from(now).map_err(corrupt)?),
                });
            }
            write_devices(&mut tx, c.id, devices)?;
            tx.commit()
                .context(|| format!("cannot commit campaign {}", c.id))
        })
    }

    fn lock_campaign(&self, id: Option<i64>) -> Result<CampaignLock> {
        let key = lock_key(id);
        let started = Instant::now();
        off_runtime(|| {
            while !self.try_lock(key)? {
                if started.elapsed() > LOCK_WAIT {
                    return Err(Error::Conflict(match id {
                        Some(id) => format!(
                            "another hub has been acting on campaign {id} for {}s: try again",
                            LOCK_WAIT.as_secs()
                        ),
                        None => "another hub has been creating a campaign for too long: try again"
                            .into(),
                    }));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })?;
        let (locks, space) = (self.locks.clone(), self.space);
        Ok(CampaignLock::new(move || {
            off_runtime(|| {
                let mut slot = locks.lock().unwrap_or_else(|e| e.into_inner());
                // A session made again since holds nothing to give up.
                if let Some(session) = slot.as_mut() {
                    let out =
                        session.query_one("SELECT pg_advisory_unlock($1, $2)", &[&space, &key]);
                    if out.is_err() {
                        *slot = None;
                    }
                }
            });
        }))
    }
}
