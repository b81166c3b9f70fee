//! The schema and its migrations, tracked with `PRAGMA user_version`.

use rusqlite::Connection;

/// Migrations in order; the database's `user_version` counts those applied.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE sites (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    region      TEXT NOT NULL,
    created_ns  INTEGER NOT NULL
);
CREATE TABLE devices (
    id                  TEXT PRIMARY KEY,
    site_id             TEXT NOT NULL REFERENCES sites(id),
    tags                TEXT NOT NULL DEFAULT '{}',
    signals             TEXT NOT NULL DEFAULT '{}',
    model_version       TEXT,
    firmware_version    TEXT,
    state               TEXT NOT NULL,
    token_sha256        BLOB,
    token_expires_ns    INTEGER,
    credential_sha256   BLOB,
    online              INTEGER NOT NULL DEFAULT 0,
    last_seen_ns        INTEGER,
    created_ns          INTEGER NOT NULL,
    revoked_ns          INTEGER
);
CREATE INDEX devices_by_site ON devices(site_id);
CREATE TABLE series (
    id          INTEGER PRIMARY KEY,
    device_id   TEXT NOT NULL,
    signal      TEXT NOT NULL,
    unit        TEXT NOT NULL,
    UNIQUE (device_id, signal)
);
-- A producer stream inside a device.
CREATE TABLE streams (
    id          INTEGER PRIMARY KEY,
    device_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    UNIQUE (device_id, name)
);
-- One row per stored batch, keyed by (stream, seq): the exactly-once ledger
-- and the readings in one. `data` is the packed batch (blob.rs).
CREATE TABLE batches (
    stream_id   INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    t_min       INTEGER NOT NULL,
    t_max       INTEGER NOT NULL,
    readings    INTEGER NOT NULL,
    received_ns INTEGER NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
CREATE INDEX batches_by_end ON batches(stream_id, t_max);
CREATE TABLE latest (
    series_id   INTEGER PRIMARY KEY,
    ts_ns       INTEGER NOT NULL,
    value       REAL NOT NULL,
    quality     INTEGER NOT NULL
);
"#];

/// Brings the schema up to date.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
