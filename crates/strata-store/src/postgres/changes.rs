//! The change count that hub replicas poll: one row, moved by every change
//! to what their caches hold (the device registry's identities, people's
//! accounts and tokens), in the same transaction as the change.

use postgres::{Client, GenericClient, Transaction};

use crate::error::{Context, Result};

/// Makes the table; part of each shared store's schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_changes (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO shared_changes (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING;
";

/// Replicas starting together take this advisory lock to make the shared
/// tables one after the other (`CREATE TABLE IF NOT EXISTS` races otherwise).
const SCHEMA_LOCK: i64 = 0x5354_5241_5441_5348; // "STRATASH"

/// Makes `schema` (and the change count's table) under the advisory lock.
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

/// Moves the count, within `tx`.
pub(super) fn bump(tx: &mut Transaction<'_>) -> std::result::Result<(), postgres::Error> {
    tx.execute(
        "UPDATE shared_changes SET version = version + 1 WHERE id = 1",
        &[],
    )
    .map(drop)
}

/// The count now.
pub(super) fn version(client: &mut impl GenericClient) -> Result<i64> {
    let row = client
        .query_one("SELECT version FROM shared_changes WHERE id = 1", &[])
        .context(|| "cannot read the shared change count".into())?;
    Ok(row.get(0))
}
