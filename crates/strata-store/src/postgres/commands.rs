//! The log of commands hub replicas relay to each other
//! ([`crate::CommandLog`]): `shared_commands`, one row per command sent.
//! Each record takes the next value of the commands' change count
//! (`changes.rs`) as its position, so positions follow the order records
//! commit and a replica that has read up to one has seen every command
//! before it.

use strata_proto::DeviceId;

use super::Connection;
use super::changes::{self, Count};
use crate::error::{Context, Result, corrupt};
use crate::{CommandLog, RelayedCommand};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_commands (
    position  BIGINT PRIMARY KEY,
    origin    TEXT NOT NULL,
    device_id TEXT NOT NULL,
    payload   BYTEA NOT NULL,
    sent_ns   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS shared_commands_by_time ON shared_commands (sent_ns);
";

/// The PostgreSQL command log.
pub struct PostgresCommands {
    db: Connection,
}

impl PostgresCommands {
    /// Connects to the database at `url` and makes the table if needed.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(PostgresCommands {
            db: Connection::open(url, SCHEMA, "command log")?,
        })
    }
}

impl CommandLog for PostgresCommands {
    fn append(&self, origin: &str, device: &DeviceId, payload: &[u8], now_ns: i64) -> Result<i64> {
        self.db.with(|c| {
            let what = || format!("cannot record the command for {device}");
            let mut tx = c.transaction().context(what)?;
            let position = changes::bump(&mut tx, Count::Commands).context(what)?;
            tx.execute(
                "INSERT INTO shared_commands (position, origin, device_id, payload, sent_ns)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&position, &origin, &device.as_str(), &payload, &now_ns],
            )
            .and_then(|_| tx.commit())
            .context(what)?;
            Ok(position)
        })
    }

    fn position(&self) -> Result<i64> {
        self.db.with(|c| changes::version(c, Count::Commands))
    }

    fn after(&self, position: i64, limit: usize) -> Result<(Vec<RelayedCommand>, i64)> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.with(|c| {
            let rows = c
                .query(
                    "SELECT position, origin, device_id, payload, sent_ns FROM shared_commands
                     WHERE position > $1 ORDER BY position LIMIT $2",
                    &[&position, &limit],
                )
                .context(|| "cannot read the commands sent lately".into())?;
            let commands = rows
                .iter()
                .map(|r| {
                    Ok(RelayedCommand {
                        position: r.get(0),
                        origin: r.get(1),
                        device: DeviceId::new(r.get::<_, String>(2)).map_err(corrupt)?,
                        payload: r.get(3),
                        sent_ns: r.get(4),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let reached = commands.last().map_or(position, |c| c.position);
            Ok((commands, reached))
        })
    }

    fn forget_before(&self, before_ns: i64) -> Result<u64> {
        self.db.with(|c| {
            c.execute(
                "DELETE FROM shared_commands WHERE sent_ns < $1",
                &[&before_ns],
            )
            .context(|| "cannot forget old commands".into())
        })
    }
}
