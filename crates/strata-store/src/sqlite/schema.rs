//! The schema and its migrations, tracked with `PRAGMA user_version`.

use std::collections::HashMap;

use rusqlite::{Connection, Transaction, params};

use crate::block::{BlockBuilder, BlockEntry};
use crate::seqset::SeqSet;

/// Migrations in order; the database's `user_version` counts those applied.
/// Each runs in one transaction: its SQL, then its Rust step if it has one.
const MIGRATIONS: &[(&str, Option<RustStep>)] = &[
    (
        r#"
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
"#,
        None,
    ),
    (
        r#"
-- The model registry (docs/design/models.md).
CREATE TABLE models (
    name        TEXT PRIMARY KEY,
    created_ns  INTEGER NOT NULL
);
CREATE TABLE model_versions (
    model           TEXT NOT NULL REFERENCES models(name),
    version         INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    size            INTEGER NOT NULL,
    runtime         TEXT NOT NULL,
    input_len       INTEGER NOT NULL,
    outputs         TEXT NOT NULL,
    ops             TEXT NOT NULL,
    features        TEXT NOT NULL,
    vector          TEXT,
    lineage         TEXT NOT NULL,
    metrics         TEXT NOT NULL,
    has_tree_stats  INTEGER NOT NULL,
    description     TEXT NOT NULL,
    created_ns      INTEGER NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE model_aliases (
    model       TEXT NOT NULL,
    alias       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_ns  INTEGER NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES model_versions(model, version)
);
-- Long-running jobs (training, backtests) and their logs.
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    state       TEXT NOT NULL,
    progress    REAL NOT NULL DEFAULT 0,
    message     TEXT NOT NULL DEFAULT '',
    result      TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_ns  INTEGER NOT NULL,
    started_ns  INTEGER,
    finished_ns INTEGER
);
CREATE INDEX jobs_by_state ON jobs(state, id);
CREATE TABLE job_log (
    job_id      INTEGER NOT NULL REFERENCES jobs(id),
    ts_ns       INTEGER NOT NULL,
    line        TEXT NOT NULL
);
CREATE INDEX job_log_by_job ON job_log(job_id);
-- Device twins: desired (set by the hub) and reported (by the device).
CREATE TABLE twins (
    device_id       TEXT PRIMARY KEY,
    desired         TEXT NOT NULL DEFAULT '{}',
    desired_version INTEGER NOT NULL DEFAULT 0,
    desired_ns      INTEGER,
    reported        TEXT NOT NULL DEFAULT '{}',
    reported_ns     INTEGER
);
"#,
        None,
    ),
    (
        r#"
-- Signed OTA releases the hub accepted (docs/design/ota.md).
CREATE TABLE releases (
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    digest      TEXT NOT NULL UNIQUE,
    key_id      TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    expires_ns  INTEGER NOT NULL,
    accepted_ns INTEGER NOT NULL,
    envelope    TEXT NOT NULL,
    PRIMARY KEY (kind, name, version)
);
"#,
        None,
    ),
    (
        r#"
-- OTA rollout campaigns and where each targeted device is in them.
CREATE TABLE campaigns (
    id               INTEGER PRIMARY KEY,
    spec             TEXT NOT NULL,
    state            TEXT NOT NULL,
    reason           TEXT NOT NULL DEFAULT '',
    wave             INTEGER NOT NULL,
    waves            INTEGER NOT NULL,
    created_ns       INTEGER NOT NULL,
    updated_ns       INTEGER NOT NULL,
    baseline_decided INTEGER NOT NULL DEFAULT 0,
    baseline_failed  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE campaign_devices (
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    device_id   TEXT NOT NULL,
    wave        INTEGER NOT NULL,
    state       TEXT NOT NULL,
    previous    INTEGER,
    assigned_ns INTEGER,
    expires_ns  INTEGER,
    decided_ns  INTEGER,
    reason      TEXT,
    PRIMARY KEY (campaign_id, device_id)
);
"#,
        None,
    ),
    (
        r#"
-- Telemetry in blocks: the batches of one stream that one commit stored, in
-- one row (block.rs), instead of a row per batch.
CREATE TABLE blocks (
    id          INTEGER PRIMARY KEY,
    stream_id   INTEGER NOT NULL,
    t_min       INTEGER NOT NULL,
    t_max       INTEGER NOT NULL,
    batches     INTEGER NOT NULL,
    readings    INTEGER NOT NULL,
    received_ns INTEGER NOT NULL,
    data        BLOB NOT NULL
);
CREATE INDEX blocks_by_end ON blocks(stream_id, t_max);
-- The exactly-once ledger: the stored seqs of each stream as inclusive
-- intervals (seqset.rs); seqs keep their u64 bits in SQLite's i64.
CREATE TABLE stream_seqs (
    stream_id   INTEGER NOT NULL,
    lo          INTEGER NOT NULL,
    hi          INTEGER NOT NULL,
    PRIMARY KEY (stream_id, lo)
) WITHOUT ROWID;
"#,
        Some(batches_to_blocks),
    ),
    (
        r#"
-- Drift sketches: one row per batch a device sent, once per (stream, seq).
CREATE TABLE sketch_batches (
    device_id   TEXT NOT NULL,
    stream      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    model       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    start_ns    INTEGER NOT NULL,
    end_ns      INTEGER NOT NULL,
    received_ns INTEGER NOT NULL,
    body        BLOB NOT NULL,
    PRIMARY KEY (device_id, stream, seq)
) WITHOUT ROWID;
CREATE INDEX sketch_batches_by_model ON sketch_batches(model, version, end_ns);
"#,
        None,
    ),
    (
        r#"
-- Ground truth that arrives late, one value per (device, target, time).
CREATE TABLE labels (
    device_id   TEXT NOT NULL,
    target      TEXT NOT NULL,
    ts_ns       INTEGER NOT NULL,
    value       REAL NOT NULL,
    source      TEXT NOT NULL,
    received_ns INTEGER NOT NULL,
    PRIMARY KEY (device_id, target, ts_ns)
) WITHOUT ROWID;
CREATE INDEX labels_by_target ON labels(target, ts_ns);
-- Every online/offline change of a device, for uptime.
CREATE TABLE presence_log (
    device_id   TEXT NOT NULL,
    ts_ns       INTEGER NOT NULL,
    online      INTEGER NOT NULL,
    PRIMARY KEY (device_id, ts_ns)
) WITHOUT ROWID;
"#,
        None,
    ),
    (
        r#"
-- The retraining loop's cycles: trigger, state and every step.
CREATE TABLE retrain_cycles (
    id          INTEGER PRIMARY KEY,
    model       TEXT NOT NULL,
    state       TEXT NOT NULL,
    done        INTEGER NOT NULL,
    created_ns  INTEGER NOT NULL,
    updated_ns  INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX retrain_cycles_by_model ON retrain_cycles(model, id);
"#,
        None,
    ),
    (
        r#"
-- Alerts: lifecycle state and keys as columns, the rest as JSON.
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY,
    rule        TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    state       TEXT NOT NULL,
    raised_ns   INTEGER NOT NULL,
    updated_ns  INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX alerts_by_state ON alerts(state, id);
CREATE INDEX alerts_by_device ON alerts(device_id, id);
-- Every change in an alert's life.
CREATE TABLE alert_events (
    alert_id    INTEGER NOT NULL,
    ts_ns       INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX alert_events_by_alert ON alert_events(alert_id, ts_ns);
-- Webhook deliveries, written with the change that causes them.
CREATE TABLE webhook_deliveries (
    id           INTEGER PRIMARY KEY,
    endpoint     TEXT NOT NULL,
    event        TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_ns   INTEGER NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    next_ns      INTEGER NOT NULL,
    last_error   TEXT,
    delivered_ns INTEGER
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries(state, endpoint, id);
"#,
        None,
    ),
    (
        r#"
-- Workflow runs: state and due time as columns, steps and trigger as JSON.
CREATE TABLE workflow_runs (
    id          INTEGER PRIMARY KEY,
    workflow    TEXT NOT NULL,
    state       TEXT NOT NULL,
    next_ns     INTEGER NOT NULL,
    created_ns  INTEGER NOT NULL,
    updated_ns  INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX workflow_runs_due ON workflow_runs(state, next_ns);
"#,
        None,
    ),
    (
        r#"
-- Closed-loop action records from devices, once per (device, seq).
CREATE TABLE control_actions (
    id          INTEGER PRIMARY KEY,
    device      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    ts_ns       INTEGER NOT NULL,
    rule        TEXT NOT NULL,
    action      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    received_ns INTEGER NOT NULL,
    body        TEXT NOT NULL,
    UNIQUE (device, seq)
);
CREATE INDEX control_actions_time ON control_actions(ts_ns);
"#,
        None,
    ),
    (
        r#"
-- The hash-chained audit log and signed checkpoints of its head.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    ts_ns       INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    sha256      TEXT NOT NULL
);
CREATE INDEX audit_log_by_actor ON audit_log(actor, seq);
CREATE INDEX audit_log_by_action ON audit_log(action, seq);
CREATE TABLE audit_checkpoints (
    seq         INTEGER PRIMARY KEY,
    sha256      TEXT NOT NULL,
    ts_ns       INTEGER NOT NULL,
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL
);
-- Users, service accounts and their API tokens (hashes only).
CREATE TABLE users (
    name         TEXT PRIMARY KEY,
    role         TEXT NOT NULL,
    service      INTEGER NOT NULL,
    password_phc TEXT,
    created_ns   INTEGER NOT NULL,
    disabled_ns  INTEGER
);
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL REFERENCES users(name),
    label        TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_ns   INTEGER NOT NULL,
    expires_ns   INTEGER,
    revoked_ns   INTEGER
);
"#,
        None,
    ),
    (
        r#"
-- Device certificates issued by the platform CA, by their SHA-256.
CREATE TABLE device_certificates (
    sha256       TEXT PRIMARY KEY,
    device_id    TEXT NOT NULL,
    issued_ns    INTEGER NOT NULL,
    not_after_ns INTEGER NOT NULL
);
CREATE INDEX device_certificates_by_device ON device_certificates(device_id);
"#,
        None,
    ),
    (
        r#"
-- Blocks written since segments came in keep their bytes in a segment file
-- (segment.rs): the row has the place of the block's record, and an empty
-- `data`. Older rows keep their bytes in `data`.
ALTER TABLE blocks ADD COLUMN segment INTEGER;
ALTER TABLE blocks ADD COLUMN seg_offset INTEGER;
ALTER TABLE blocks ADD COLUMN seg_length INTEGER;
"#,
        None,
    ),
    (
        r#"
-- Retention removes a segment file once no block row points into it.
CREATE INDEX blocks_by_segment ON blocks(segment) WHERE segment IS NOT NULL;
"#,
        None,
    ),
    (
        r#"
-- A campaign's save is refused if it was read at an older revision.
ALTER TABLE campaigns ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
"#,
        None,
    ),
    (
        r#"
-- How many times in a row a job was cut short (its hub stopped without
-- letting it go): past MAX_JOB_ATTEMPTS it fails instead of running again.
ALTER TABLE jobs ADD COLUMN cut_short INTEGER NOT NULL DEFAULT 0;
"#,
        None,
    ),
    (
        r#"
-- Webhook deliveries and workflow runs are forgotten after `history_days`:
-- their ids (a receiver's dedupe key, a run's URL) must never come back
-- once the newest rows are gone, so they are AUTOINCREMENT.
CREATE TABLE webhook_deliveries_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint     TEXT NOT NULL,
    event        TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_ns   INTEGER NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    next_ns      INTEGER NOT NULL,
    last_error   TEXT,
    delivered_ns INTEGER
);
INSERT INTO webhook_deliveries_new SELECT * FROM webhook_deliveries;
DROP TABLE webhook_deliveries;
ALTER TABLE webhook_deliveries_new RENAME TO webhook_deliveries;
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries(state, endpoint, id);
CREATE TABLE workflow_runs_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow    TEXT NOT NULL,
    state       TEXT NOT NULL,
    next_ns     INTEGER NOT NULL,
    created_ns  INTEGER NOT NULL,
    updated_ns  INTEGER NOT NULL,
    body        TEXT NOT NULL
);
INSERT INTO workflow_runs_new SELECT * FROM workflow_runs;
DROP TABLE workflow_runs;
ALTER TABLE workflow_runs_new RENAME TO workflow_runs;
CREATE INDEX workflow_runs_due ON workflow_runs(state, next_ns);
"#,
        None,
    ),
    (
        r#"
-- A range query bounds its search of a stream's blocks by their last
-- reading: a block that overlaps [from, to] ends within [from, to + the
-- stream's longest block span]. By `t_max >= from` alone, a query of an
-- old window read the row of every later block.
ALTER TABLE streams ADD COLUMN max_span_ns INTEGER NOT NULL DEFAULT 0;
-- (A span past i64 becomes REAL in SQLite; the cast brings it back.)
UPDATE streams SET max_span_ns = CAST(coalesce(
    (SELECT max(t_max - t_min) FROM blocks WHERE blocks.stream_id = streams.id), 0) AS INTEGER);
"#,
        None,
    ),
    (
        r#"
-- Retention deletes the sketches whose window ended before a time.
CREATE INDEX sketch_batches_by_end ON sketch_batches(end_ns);
"#,
        None,
    ),
    (
        r#"
-- Which store numbered the desired twins' versions, made once: a device
-- compares two twins' versions only within one epoch, so a store started
-- afresh (versions from 1 again) is not taken for an old one.
CREATE TABLE twin_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), epoch TEXT NOT NULL);
INSERT INTO twin_epoch VALUES (1, lower(hex(randomblob(16))));
"#,
        None,
    ),
    (
        r#"
-- A cancelled job is stored as failed with the time it was cancelled, as
-- an earlier release reads it; one registering its result (committing)
-- can no longer be cancelled.
ALTER TABLE jobs ADD COLUMN cancelled_ns INTEGER;
ALTER TABLE jobs ADD COLUMN committing INTEGER NOT NULL DEFAULT 0;
"#,
        None,
    ),
];

/// Brings the schema up to date.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, (sql, step)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        if let Some(step) = step {
            step(&tx)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// A migration step that SQL alone cannot do.
type RustStep = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// Batches per block when old rows are regrouped.
const MIGRATED_BLOCK_BATCHES: u64 = 256;

/// Moves the rows of the old one-row-per-batch table into blocks and the
/// exactly-once ledger, then drops it.
fn batches_to_blocks(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let mut ledgers: HashMap<i64, SeqSet> = HashMap::new();
    {
        let mut rows = tx.prepare(
            "SELECT stream_id, seq, t_min, t_max, readings, received_ns, data
             FROM batches ORDER BY stream_id, t_min, seq",
        )?;
        // The table as this migration left it (later ones add columns).
        let mut insert = tx.prepare(
            "INSERT INTO blocks (stream_id, t_min, t_max, batches, readings, received_ns, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut store = |stream: i64, b: &BlockBuilder, received: i64| {
            let (t_min, t_max) = b.time_range();
            insert
                .execute(params![
                    stream,
                    t_min,
                    t_max,
                    b.batches() as i64,
                    b.readings() as i64,
                    received,
                    b.data()
                ])
                .map(drop)
        };
        let mut open: Option<(i64, BlockBuilder, i64)> = None;
        let mut rows = rows.query([])?;
        while let Some(r) = rows.next()? {
            let stream: i64 = r.get(0)?;
            let seq = r.get::<_, i64>(1)? as u64;
            let received: i64 = r.get(5)?;
            if let Some((s, b, rec)) = &open
                && (*s != stream || b.batches() >= MIGRATED_BLOCK_BATCHES)
            {
                store(*s, b, *rec)?;
                open = None;
            }
            let (_, block, rec) = open.get_or_insert_with(|| (stream, BlockBuilder::default(), 0));
            *rec = (*rec).max(received);
            block.push(BlockEntry {
                seq,
                t_min: r.get(2)?,
                t_max: r.get(3)?,
                readings: r.get::<_, i64>(4)? as u64,
                data: r.get_ref(6)?.as_blob()?,
            });
            ledgers.entry(stream).or_default().insert(seq);
        }
        if let Some((s, b, rec)) = &open {
            store(*s, b, *rec)?;
        }
    }
    let mut interval =
        tx.prepare("INSERT INTO stream_seqs (stream_id, lo, hi) VALUES (?1, ?2, ?3)")?;
    for (stream, ledger) in &ledgers {
        for (lo, hi) in ledger.intervals() {
            interval.execute(params![stream, lo as i64, hi as i64])?;
        }
    }
    tx.execute_batch("DROP TABLE batches;")
}
