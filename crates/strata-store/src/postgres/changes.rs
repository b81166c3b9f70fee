//! The change counts that hub replicas poll, one per cache: each is moved
//! by every change to what its cache holds, in the same transaction as the
//! change. The registry's moves when a device is registered, enrolled,
//! revoked or its declared signals change; the accounts' when a user is
//! made or changed, or a token issued or revoked. A login (a new session
//! token) so reloads the account cache, not the device cache. The twins'
//! moves with every change of a desired document, which takes the count's
//! value as its place in the log replicas follow to publish what other
//! replicas changed (`twins.rs`); the commands' with every command a
//! replica relays to the others (`commands.rs`).

use postgres::{Client, GenericClient, Transaction};

use crate::error::{Context, Result};

/// What a count is of.
#[derive(Debug, Clone, Copy)]
pub(super) enum Count {
    /// The device registry's identities.
    Registry,
    /// People's accounts and tokens.
    Accounts,
    /// Desired twin documents.
    Twins,
    /// Commands relayed between replicas (`commands.rs`).
    Commands,
}

impl Count {
    fn name(self) -> &'static str {
        match self {
            Count::Registry => "registry",
            Count::Accounts => "accounts",
            Count::Twins => "twins",
            Count::Commands => "commands",
        }
    }
}

/// Makes the table; part of each shared store's schema.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_changes (
    name    TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO shared_changes (name, version) VALUES ('registry', 0), ('accounts', 0), ('twins', 0),
    ('commands', 0)
    ON CONFLICT DO NOTHING;
";

/// Replicas starting together take this advisory lock to make the shared
/// tables one after the other (`CREATE TABLE IF NOT EXISTS` races otherwise).
const SCHEMA_LOCK: i64 = 0x5354_5241_5441_5348; // "STRATASH"

/// Makes `schema` (and the change counts' table) under the advisory lock.
pub(super) fn create(client: &mut Client, schema: &str, what: &str) -> Result<()> {
    let mut tx = client
        .transaction()
        .context(|| format!("cannot create the {what} tables"))?;
    tx.execute(&format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"), &[])
        .and_then(|_| tx.batch_execute(SCHEMA))
        .and_then(|()| tx.batch_execute(schema))
        .and_then(|()| tx.commit())
        .context(|| format!("cannot create the {what} tables"))
}

/// Moves `count`, within `tx`; returns its new value. The count's row
/// stays locked until `tx` ends, so counts are taken in the order their
/// transactions commit: a replica that has read changes up to a value has
/// seen every change below it.
pub(super) fn bump(
    tx: &mut Transaction<'_>,
    count: Count,
) -> std::result::Result<i64, postgres::Error> {
    tx.query_one(
        "UPDATE shared_changes SET version = version + 1 WHERE name = $1 RETURNING version",
        &[&count.name()],
    )
    .map(|row| row.get(0))
}

/// `count` now.
pub(super) fn version(client: &mut impl GenericClient, count: Count) -> Result<i64> {
    let row = client
        .query_one(
            "SELECT version FROM shared_changes WHERE name = $1",
            &[&count.name()],
        )
        .context(|| format!("cannot read the {} change count", count.name()))?;
    Ok(row.get(0))
}
