//! [`ControlStore`] for SQLite.

use rusqlite::params;

use super::SqliteStore;
use crate::control::{ActionFilter, ControlStore, StoredAction};
use crate::error::{Context, Error, Result};

impl ControlStore for SqliteStore {
    fn record_action(&self, a: &StoredAction) -> Result<bool> {
        let body = serde_json::to_string(&a.action).expect("JSON of an action");
        self.write(|w| {
            let n = w
                .conn
                .execute(
                    "INSERT OR IGNORE INTO control_actions
                        (device, seq, ts_ns, rule, action, outcome, received_ns, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        a.device.as_str(),
                        a.action.seq as i64,
                        a.action.ts_ns,
                        a.action.rule,
                        a.action.action,
                        a.action.outcome.as_str(),
                        a.received_ns,
                        body
                    ],
                )
                .context(|| format!("cannot store a control action of {}", a.device))?;
            Ok(n == 1)
        })
    }

    fn actions(&self, f: &ActionFilter) -> Result<Vec<StoredAction>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT device, received_ns, body FROM control_actions
                     WHERE (?1 IS NULL OR device = ?1) AND (?2 IS NULL OR rule = ?2)
                       AND (?3 IS NULL OR action = ?3)
                     ORDER BY ts_ns DESC, id DESC LIMIT ?4",
                )
                .context(|| "cannot read control actions".to_string())?;
            let rows = stmt
                .query_map(
                    params![
                        f.device.as_ref().map(|d| d.as_str()),
                        f.rule,
                        f.action,
                        f.limit as i64
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    },
                )
                .context(|| "cannot read control actions".to_string())?;
            let mut out = Vec::new();
            for row in rows {
                let (device, received_ns, body) =
                    row.context(|| "cannot read control actions".to_string())?;
                let device = strata_proto::DeviceId::new(device)
                    .map_err(|e| Error::Corrupt(format!("control action device: {e}")))?;
                let action = serde_json::from_str(&body)
                    .map_err(|e| Error::Corrupt(format!("control action of {device}: {e}")))?;
                out.push(StoredAction {
                    device,
                    received_ns,
                    action,
                });
            }
            Ok(out)
        })
    }
}
