//! Telemetry in PostgreSQL, for hubs at scale (feature `postgres`): what
//! [`TelemetryStore`] promises, on tables that several hub replicas can
//! share. The other stores replicas share live beside it: the device
//! registry ([`PostgresRegistry`]), people's accounts and tokens
//! ([`PostgresAccess`]), device twins ([`PostgresTwins`]), drift sketches
//! and closed-loop action records ([`PostgresRecords`]), the model
//! registry ([`PostgresModels`]), accepted OTA releases
//! ([`PostgresReleases`]) and rollout campaigns ([`PostgresCampaigns`]),
//! training jobs ([`PostgresJobs`]), retraining
//! cycles ([`PostgresCycles`]), late labels ([`PostgresLabels`]) and the
//! log of commands replicas relay to each other ([`PostgresCommands`]),
//! and each replica's audit log ([`PostgresAudit`]);
//! [`PostgresLease`] lets one replica at a time perform a duty;
//! `changes.rs` keeps the counts replicas poll to keep their caches
//! current.
//!
//! - `telemetry_batches`: one row per stored batch, its readings packed as
//!   [`crate::blob`] packs them, partitioned by the UTC day of its first
//!   reading (`telemetry_batches_YYYYMMDD`, made when a day's first batch
//!   arrives), so queries touch only the days asked for and retention
//!   drops whole days.
//! - `telemetry_seqs (stream_id, seq)`: the exactly-once ledger. A batch is
//!   stored by the transaction whose insert of its key succeeds, so two
//!   replicas handed the same batch store it once. Retention keeps it to
//!   the batches still stored: it deletes the rows of the batches it
//!   deletes, and raises each stream's floor (`seq_floor`, the highest seq
//!   it deleted; `floor_before_ns`, just past the newest reading it
//!   deleted). A batch at or below the floor whose readings all end before
//!   `floor_before_ns` counts as sent before: it was deleted, or is as old
//!   as what was. Any other batch is looked up in the ledger as usual, so
//!   fresh readings under a low seq (a gateway whose clock was once wrong)
//!   are still stored.
//! - `telemetry_streams`, `telemetry_series` and `telemetry_latest`.
//!
//! A write is one transaction, durable when it returns (PostgreSQL's
//! `synchronous_commit`); `sync` has nothing left to do.
//!
//! The client blocks on a runtime of its own, which tokio refuses inside
//! another runtime: a call made where a runtime is current (the hub's async
//! code, its blocking pool) runs on a thread of its own ([`off_runtime`]);
//! the ingest writer's plain thread calls straight through.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use postgres::{Client, NoTls, Transaction};
use strata_proto::{DeviceId, TelemetryBatch};

mod access;
mod audit;
mod campaigns;
mod changes;
mod commands;
mod cycles;
mod jobs;
mod labels;
mod lease;
mod models;
mod records;
mod registry;
mod releases;
mod twins;

pub use access::PostgresAccess;
pub use audit::PostgresAudit;
pub use campaigns::PostgresCampaigns;
pub use commands::PostgresCommands;
pub use cycles::PostgresCycles;
pub use jobs::{PostgresJobs, SILENT_NS};
pub use labels::PostgresLabels;
pub use lease::PostgresLease;
pub use models::PostgresModels;
pub use records::PostgresRecords;
pub use registry::PostgresRegistry;
pub use releases::PostgresReleases;
pub use twins::PostgresTwins;

use crate::error::{Context, Error, Result};
use crate::{
    BatchWrite, Expired, LatestReading, Point, RangeQuery, RangeResult, SeriesInfo, TelemetryStore,
    WriteOutcome, blob,
};

const DAY_NS: i64 = 86_400_000_000_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS telemetry_streams (
    id        BIGSERIAL PRIMARY KEY,
    device_id TEXT NOT NULL,
    name      TEXT NOT NULL,
    UNIQUE (device_id, name)
);
ALTER TABLE telemetry_streams ADD COLUMN IF NOT EXISTS seq_floor BIGINT;
ALTER TABLE telemetry_streams ADD COLUMN IF NOT EXISTS floor_before_ns BIGINT;
CREATE TABLE IF NOT EXISTS telemetry_seqs (
    stream_id BIGINT NOT NULL,
    seq       BIGINT NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
CREATE TABLE IF NOT EXISTS telemetry_batches (
    stream_id   BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    t_min       BIGINT NOT NULL,
    t_max       BIGINT NOT NULL,
    readings    BIGINT NOT NULL,
    received_ns BIGINT NOT NULL,
    data        BYTEA NOT NULL
) PARTITION BY RANGE (t_min);
CREATE INDEX IF NOT EXISTS telemetry_batches_by_end ON telemetry_batches (stream_id, t_max);
CREATE TABLE IF NOT EXISTS telemetry_series (
    id        BIGSERIAL PRIMARY KEY,
    device_id TEXT NOT NULL,
    signal    TEXT NOT NULL,
    unit      TEXT NOT NULL,
    UNIQUE (device_id, signal)
);
CREATE TABLE IF NOT EXISTS telemetry_latest (
    series_id BIGINT PRIMARY KEY,
    ts_ns     BIGINT NOT NULL,
    value     DOUBLE PRECISION NOT NULL,
    quality   INTEGER NOT NULL
);
";

/// The PostgreSQL telemetry store.
pub struct PostgresTelemetry {
    url: String,
    writer: Mutex<Writer>,
    reader: Mutex<Session>,
}

struct Writer {
    client: Session,
    /// (device, stream) -> id, for the streams written so far.
    streams: IdCache,
    /// (device, signal) -> series id.
    series: IdCache,
    /// Days whose partition exists.
    days: HashSet<i64>,
}

/// Runs `f` where the client may block: here, unless a runtime is
/// current, else on a scoped thread of its own.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Whether `out` failed because the connection broke or the server ended
/// the session (a failure the server did not report itself, 08 connection
/// errors, 57P0x shutdown): the client may not know it yet, so it is made
/// again at once rather than failing the next call too.
fn connection_lost<T>(out: &Result<T>) -> bool {
    let Err(Error::Postgres { source, .. }) = out else {
        return false;
    };
    source
        .code()
        .is_none_or(|c| c.code().starts_with("08") || c.code().starts_with("57P0"))
}

/// A client that is closed off the async runtime when dropped: the
/// client's own drop blocks on its runtime, which tokio refuses on a
/// runtime's thread, and a hub's stores are often dropped there when it
/// stops.
struct Session(Option<Client>);

impl std::ops::Deref for Session {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.0
            .as_ref()
            .expect("a session holds its client until dropped")
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        self.0
            .as_mut()
            .expect("a session holds its client until dropped")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            off_runtime(move || drop(client));
        }
    }
}

/// Connects to `url`. Unless the URL says otherwise, a server that
/// vanishes without closing the connection (a power cut, a partition) is
/// noticed within about half a minute, not the two hours of the system's
/// TCP keepalive: a call blocked on it fails (and the connection is made
/// again) instead of holding the ingest writer or a lease for hours.
fn connect(url: &str) -> Result<Session> {
    let what = || format!("cannot connect to PostgreSQL at {}", redact(url));
    let mut config = url.parse::<postgres::Config>().context(what)?;
    if !url.contains("connect_timeout") {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    if !url.contains("keepalives") {
        config
            .keepalives_idle(std::time::Duration::from_secs(10))
            .keepalives_interval(std::time::Duration::from_secs(5))
            .keepalives_retries(3);
    }
    if !url.contains("tcp_user_timeout") {
        config.tcp_user_timeout(std::time::Duration::from_secs(30));
    }
    config
        .connect(NoTls)
        .map(|client| Session(Some(client)))
        .context(what)
}

/// Runs `f` on `client`, made again first if it was closed, and after `f`
/// if `f` lost the connection (the server restarted, say).
fn on_connection<T>(
    url: &str,
    client: &mut Session,
    f: impl FnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    if client.is_closed() {
        *client = connect(url)?;
    }
    let out = f(client);
    if connection_lost(&out)
        && let Ok(fresh) = connect(url)
    {
        *client = fresh;
    }
    out
}

/// One connection that a shared store's calls take turns on, made again
/// when it is lost.
struct Connection {
    url: String,
    client: Mutex<Session>,
}

impl Connection {
    /// Connects to `url` and makes the store's tables (`schema`, named
    /// `what` in messages) with the shared change count's.
    fn open(url: &str, schema: &str, what: &str) -> Result<Connection> {
        let client = off_runtime(|| {
            let mut client = connect(url)?;
            changes::create(&mut client, schema, what)?;
            Ok::<_, Error>(client)
        })?;
        Ok(Connection {
            url: url.to_owned(),
            client: Mutex::new(client),
        })
    }

    /// Runs `f` with the connection (made again if it was lost).
    fn with<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        off_runtime(|| {
            let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
            on_connection(&self.url, &mut client, f)
        })
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user_info = &url[scheme + 3..at];
            let user = user_info.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.split("password=").next().unwrap_or(url).to_owned(),
    }
}

impl PostgresTelemetry {
    /// Connects to the database at `url` (`postgres://user@host/db` or
    /// `host=... user=... dbname=...`) and makes the tables if needed.
    pub fn connect(url: &str) -> Result<Self> {
        let (client, reader) = off_runtime(|| {
            let mut client = connect(url)?;
            // Under the lock the shared tables are made with: replicas
            // starting together on an empty database race otherwise.
            changes::create(&mut client, SCHEMA, "telemetry")?;
            Ok::<_, Error>((client, connect(url)?))
        })?;
        Ok(PostgresTelemetry {
            url: url.to_owned(),
            writer: Mutex::new(Writer {
                client,
                streams: HashMap::new(),
                series: HashMap::new(),
                days: HashSet::new(),
            }),
            reader: Mutex::new(reader),
        })
    }

    /// Runs `f` with the reader connection, made again if it was lost
    /// (the server restarted, say).
    fn read<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        off_runtime(|| {
            let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
            on_connection(&self.url, &mut reader, f)
        })
    }

    /// Runs `f` with the writer connection, made again if it was lost:
    /// what a failed write held was not acknowledged, and comes again.
    fn write<T: Send>(&self, f: impl FnOnce(&mut Writer) -> Result<T> + Send) -> Result<T> {
        off_runtime(|| {
            let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            if writer.client.is_closed() {
                writer.client = connect(&self.url)?;
            }
            let out = f(&mut writer);
            if connection_lost(&out)
                && let Ok(fresh) = connect(&self.url)
            {
                writer.client = fresh;
            }
            out
        })
    }
}

/// The advisory lock replicas take turns on to make day partitions.
const PARTITION_LOCK: i64 = 0x5354_5241_5441_5044; // "STRATAPD"

/// The partition of day `day` (days since 1970-01-01, UTC).
fn partition_name(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("telemetry_batches_{y:04}{m:02}{d:02}")
}

/// The day of a partition named by [`partition_name`].
fn partition_day(name: &str) -> Option<i64> {
    let date = name.strip_prefix("telemetry_batches_")?;
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (&date[..4], &date[4..6], &date[6..]);
    Some(days_from_civil(
        y.parse().ok()?,
        m.parse().ok()?,
        d.parse().ok()?,
    ))
}

/// (year, month, day) of day `z` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = y - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Writer {
    /// Makes the partition of each day in `days` that does not exist yet.
    fn ensure_days(&mut self, days: impl Iterator<Item = i64>) -> Result<()> {
        for day in days {
            if self.days.contains(&day) {
                continue;
            }
            let name = partition_name(day);
            // Made apart and then attached: `CREATE TABLE ... PARTITION OF`
            // takes an exclusive lock on the whole table, so it waits for
            // every query reading it (a long replay for training) and every
            // replica's inserts queue behind it; attaching takes a lock
            // that reads and inserts do not wait for. Replicas making
            // partitions take turns (an advisory lock), and none waits
            // more than a few seconds for a table lock.
            let sql = format!(
                "SET LOCAL lock_timeout = '5s';
                 SELECT pg_advisory_xact_lock({PARTITION_LOCK});
                 CREATE TABLE IF NOT EXISTS {name}
                     (LIKE telemetry_batches INCLUDING DEFAULTS INCLUDING CONSTRAINTS);"
            );
            let attach = format!(
                "ALTER TABLE telemetry_batches ATTACH PARTITION {name}
                 FOR VALUES FROM ({}) TO ({})",
                day.saturating_mul(DAY_NS),
                (day + 1).saturating_mul(DAY_NS)
            );
            let what = || format!("cannot create partition {name}");
            let mut tx = self.client.transaction().context(what)?;
            tx.batch_execute(&sql).context(what)?;
            let attached: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1)
                     AND inhparent = 'telemetry_batches'::regclass)",
                    &[&name],
                )
                .context(what)?
                .get(0);
            if !attached {
                tx.batch_execute(&attach).context(what)?;
            }
            tx.commit().context(what)?;
            self.days.insert(day);
        }
        Ok(())
    }
}

fn stream_id(
    tx: &mut Transaction<'_>,
    cache: &mut IdCache,
    device: &DeviceId,
    name: &str,
) -> Result<i64> {
    find_or_insert(
        tx,
        cache,
        (device.as_str(), name),
        "SELECT id FROM telemetry_streams WHERE device_id = $1 AND name = $2",
        "INSERT INTO telemetry_streams (device_id, name) VALUES ($1, $2)
         ON CONFLICT DO NOTHING RETURNING id",
        &[],
    )
    .context(|| format!("cannot find stream {device}/{name}"))
}

fn series_id(
    tx: &mut Transaction<'_>,
    cache: &mut IdCache,
    device: &DeviceId,
    signal: &str,
    unit: &str,
) -> Result<i64> {
    find_or_insert(
        tx,
        cache,
        (device.as_str(), signal),
        "SELECT id FROM telemetry_series WHERE device_id = $1 AND signal = $2",
        "INSERT INTO telemetry_series (device_id, signal, unit) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING RETURNING id",
        &[&unit],
    )
    .context(|| format!("cannot find series {device}/{signal}"))
}

/// Ids of rows keyed by (device, name), as the writer has seen them.
type IdCache = HashMap<(String, String), i64>;

/// The id of the row keyed by `key` (device, name; `$1` and `$2` of both
/// statements, `more` after them in `insert`): from `cache`, or what
/// `find` returns, or what `insert` makes. Another replica may insert the
/// same row at the same moment: then `insert` waits for it and does
/// nothing, and a `find` after (a statement of its own, so it sees what
/// committed meanwhile) returns it.
fn find_or_insert(
    tx: &mut Transaction<'_>,
    cache: &mut IdCache,
    key: (&str, &str),
    find: &str,
    insert: &str,
    more: &[&(dyn postgres::types::ToSql + Sync)],
) -> std::result::Result<i64, postgres::Error> {
    if let Some(&id) = cache.get(&(key.0.to_owned(), key.1.to_owned())) {
        return Ok(id);
    }
    let find_params: [&(dyn postgres::types::ToSql + Sync); 2] = [&key.0, &key.1];
    let mut insert_params = find_params.to_vec();
    insert_params.extend_from_slice(more);
    let id = match tx.query_opt(find, &find_params)? {
        Some(row) => row.get(0),
        None => match tx.query_opt(insert, &insert_params)? {
            Some(row) => row.get(0),
            None => tx.query_one(find, &find_params)?.get(0),
        },
    };
    cache.insert((key.0.to_owned(), key.1.to_owned()), id);
    Ok(id)
}

/// The `telemetry_batches` rows of a write, column by column (sent as
/// arrays and unnested: one statement whatever the number of batches).
#[derive(Default)]
struct Columns<'a> {
    stream_id: Vec<i64>,
    seq: Vec<i64>,
    t_min: Vec<i64>,
    t_max: Vec<i64>,
    readings: Vec<i64>,
    received_ns: Vec<i64>,
    data: Vec<&'a [u8]>,
}

/// One write: a transaction storing the batches not stored before.
fn write_batches(w: &mut Writer, batches: &[BatchWrite]) -> Result<Vec<WriteOutcome>> {
    let days: HashSet<i64> = batches
        .iter()
        .map(|b| b.batch.t_min.div_euclid(DAY_NS))
        .collect();
    w.ensure_days(days.into_iter())?;
    let result = (|| {
        let mut tx = w
            .client
            .transaction()
            .context(|| "cannot begin a telemetry transaction".into())?;
        let mut streams = Vec::with_capacity(batches.len());
        for b in batches {
            streams.push(stream_id(
                &mut tx,
                &mut w.streams,
                &b.device,
                &b.batch.stream,
            )?);
        }
        // SQL integers are signed; a seq above i64::MAX keeps its bits.
        let seqs: Vec<i64> = batches.iter().map(|b| b.batch.seq as i64).collect();
        // Keys in one order at every replica: two replicas inserting
        // overlapping redeliveries in opposite orders would each wait for
        // the other's row (a deadlock, which fails a whole commit).
        // With each key, its batch's newest reading (the first batch's, of
        // a key sent twice in one call), for the floor.
        let mut keys: Vec<(i64, i64, i64)> = (0..batches.len())
            .map(|i| (streams[i], seqs[i], batches[i].batch.t_max))
            .collect();
        keys.sort_by_key(|&(stream, seq, _)| (stream, seq));
        keys.dedup_by_key(|&mut (stream, seq, _)| (stream, seq));
        let key_streams: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let key_seqs: Vec<i64> = keys.iter().map(|k| k.1).collect();
        let key_ends: Vec<i64> = keys.iter().map(|k| k.2).collect();
        let new: HashSet<(i64, i64)> = tx
            .query(
                "INSERT INTO telemetry_seqs (stream_id, seq)
                 SELECT k.stream_id, k.seq
                 FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[]) AS k(stream_id, seq, t_max)
                 JOIN telemetry_streams s ON s.id = k.stream_id
                 WHERE s.seq_floor IS NULL OR k.seq > s.seq_floor
                    OR k.t_max >= s.floor_before_ns
                 ON CONFLICT DO NOTHING RETURNING stream_id, seq",
                &[&key_streams, &key_seqs, &key_ends],
            )
            .context(|| "cannot record the batches' seqs".into())?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        // A key stored now is stored by its first batch in this call.
        let mut taken = HashSet::new();
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut latest: HashMap<i64, Point> = HashMap::new();
        let mut rows = Columns::default();
        for (i, b) in batches.iter().enumerate() {
            let key = (streams[i], seqs[i]);
            if !new.contains(&key) || !taken.insert(key) {
                outcomes.push(WriteOutcome::Duplicate);
                continue;
            }
            outcomes.push(WriteOutcome::Stored);
            let e = &b.batch;
            rows.stream_id.push(key.0);
            rows.seq.push(key.1);
            rows.t_min.push(e.t_min);
            rows.t_max.push(e.t_max);
            rows.readings.push(e.readings as i64);
            rows.received_ns.push(b.received_ns);
            rows.data.push(&e.data);
            for (name, unit, last) in e.signals() {
                let id = series_id(&mut tx, &mut w.series, &b.device, name, unit)?;
                let cur = latest.entry(id).or_insert(last);
                if last.ts_ns >= cur.ts_ns {
                    *cur = last;
                }
            }
        }
        if !rows.data.is_empty() {
            tx.execute(
                "INSERT INTO telemetry_batches
                     (stream_id, seq, t_min, t_max, readings, received_ns, data)
                 SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[],
                     $4::BIGINT[], $5::BIGINT[], $6::BIGINT[], $7::BYTEA[])",
                &[
                    &rows.stream_id,
                    &rows.seq,
                    &rows.t_min,
                    &rows.t_max,
                    &rows.readings,
                    &rows.received_ns,
                    &rows.data,
                ],
            )
            .context(|| format!("cannot store {} batches", rows.data.len()))?;
        }
        // In id order, so two replicas updating the same series lock
        // their rows in the same order (no deadlock).
        let mut latest: Vec<(i64, Point)> = latest.into_iter().collect();
        latest.sort_by_key(|&(id, _)| id);
        let (ids, points): (Vec<i64>, Vec<Point>) = latest.into_iter().unzip();
        let ts: Vec<i64> = points.iter().map(|p| p.ts_ns).collect();
        let values: Vec<f64> = points.iter().map(|p| p.value).collect();
        let quality: Vec<i32> = points.iter().map(|p| p.quality).collect();
        tx.execute(
            "INSERT INTO telemetry_latest (series_id, ts_ns, value, quality)
             SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::FLOAT8[], $4::INT[])
             ON CONFLICT (series_id) DO UPDATE SET
                 ts_ns = excluded.ts_ns, value = excluded.value, quality = excluded.quality
             WHERE excluded.ts_ns >= telemetry_latest.ts_ns",
            &[&ids, &ts, &values, &quality],
        )
        .context(|| "cannot update latest values".into())?;
        tx.commit().context(|| "cannot commit telemetry".into())?;
        Ok(outcomes)
    })();
    if result.is_err() {
        // Ids made by a transaction that rolled back are gone; and the
        // failure may be a day partition another replica's retention
        // dropped since this one made it: looked at again next time.
        w.streams.clear();
        w.series.clear();
        w.days.clear();
    }
    result
}

impl TelemetryStore for PostgresTelemetry {
    fn write_batches(&self, batches: &[BatchWrite]) -> Result<Vec<WriteOutcome>> {
        self.write(|w| write_batches(w, batches))
    }

    fn series(&self, device: Option<&DeviceId>) -> Result<Vec<SeriesInfo>> {
        self.read(|c| {
            let rows = c
                .query(
                    "SELECT s.device_id, s.signal, s.unit, l.ts_ns, l.value, l.quality
                     FROM telemetry_series s LEFT JOIN telemetry_latest l ON l.series_id = s.id
                     WHERE $1::TEXT IS NULL OR s.device_id = $1
                     ORDER BY s.device_id, s.signal",
                    &[&device.map(|d| d.as_str())],
                )
                .context(|| "cannot list series".into())?;
            rows.iter()
                .map(|r| {
                    let device: String = r.get(0);
                    let (signal, unit): (String, String) = (r.get(1), r.get(2));
                    let ts: Option<i64> = r.get(3);
                    let latest = ts.map(|ts_ns| LatestReading {
                        signal: signal.clone(),
                        unit: unit.clone(),
                        ts_ns,
                        value: r.get(4),
                        quality: r.get(5),
                    });
                    Ok(SeriesInfo {
                        device: DeviceId::new(device).map_err(|e| Error::Corrupt(e.to_string()))?,
                        signal,
                        unit,
                        latest,
                    })
                })
                .collect()
        })
    }

    fn range(&self, q: &RangeQuery) -> Result<RangeResult> {
        self.read(|c| {
            use postgres::fallible_iterator::FallibleIterator as _;
            // A signal the device never sent has nothing to find: answered
            // at once, not by reading every batch of the device's history.
            let known = c
                .query_opt(
                    "SELECT 1 FROM telemetry_series WHERE device_id = $1 AND signal = $2",
                    &[&q.device.as_str(), &q.signal],
                )
                .context(|| format!("cannot look up {}/{}", q.device, q.signal))?;
            if known.is_none() {
                return Ok(crate::range::Collector::new(q).finish());
            }
            // Rows stream in (not all loaded first), in order of their
            // first reading: once the answer is full before one, the rest
            // cannot change it.
            let params: [&(dyn postgres::types::ToSql + Sync); 3] =
                [&q.device.as_str(), &q.from_ns, &q.to_ns];
            let mut rows = c
                .query_raw(
                    "SELECT b.t_min, b.data FROM telemetry_streams s
                     JOIN telemetry_batches b ON b.stream_id = s.id
                     WHERE s.device_id = $1 AND b.t_max >= $2 AND b.t_min <= $3 AND b.readings > 0
                     ORDER BY b.t_min",
                    params,
                )
                .context(|| format!("cannot query {}/{}", q.device, q.signal))?;
            let mut answer = crate::range::Collector::new(q);
            while let Some(row) = rows
                .next()
                .context(|| format!("cannot read {}/{}", q.device, q.signal))?
            {
                if answer.full_before(row.get(0)) {
                    break;
                }
                blob::signal_points(row.get(1), &q.signal, |p| answer.add(p))?;
            }
            Ok(answer.finish())
        })
    }

    fn batch_count(&self, device: Option<&DeviceId>) -> Result<u64> {
        self.read(|c| {
            let row = c
                .query_one(
                    "SELECT count(*) FROM telemetry_batches b
                     JOIN telemetry_streams s ON s.id = b.stream_id
                     WHERE $1::TEXT IS NULL OR s.device_id = $1",
                    &[&device.map(|d| d.as_str())],
                )
                .context(|| "cannot count batches".into())?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn expire(&self, before_ns: i64) -> Result<Expired> {
        self.write(|w| {
            let mut expired = Expired::default();
            let row = w
                .client
                .query_one(
                    &format!(
                        "WITH gone AS (DELETE FROM telemetry_batches
                         WHERE t_max < $1 AND t_min < $1 RETURNING stream_id, seq, t_max, readings),
                     {RAISE_FLOORS}
                     SELECT count(*), coalesce(sum(readings), 0)::BIGINT FROM gone"
                    ),
                    &[&before_ns],
                )
                .context(|| "cannot delete expired telemetry".into())?;
            let (batches, readings): (i64, i64) = (row.get(0), row.get(1));
            expired.blocks = batches as u64;
            expired.batches = batches as u64;
            expired.readings = readings as u64;
            // Days wholly before the cutoff that are empty now go (a batch
            // that began on one and reaches past the cutoff keeps its day).
            let last_day = before_ns.div_euclid(DAY_NS);
            for (name, day) in partitions(&mut w.client)? {
                if day >= last_day {
                    continue;
                }
                drop_if_empty(w, &name, day, &mut expired)?;
            }
            Ok(expired)
        })
    }

    fn shrink_to(&self, max_bytes: u64) -> Result<Expired> {
        self.write(|w| {
            let mut expired = Expired::default();
            let mut days = partitions(&mut w.client)?;
            // The newest day always stays.
            while days.len() > 1 {
                let row = w
                    .client
                    .query_one(
                        "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::BIGINT
                     FROM pg_inherits WHERE inhparent = 'telemetry_batches'::regclass",
                        &[],
                    )
                    .context(|| "cannot measure the telemetry tables".into())?;
                if row.get::<_, i64>(0) as u64 <= max_bytes {
                    break;
                }
                let (name, day) = days.remove(0);
                let row = w
                    .client
                    .query_one(
                        &format!("SELECT count(*), coalesce(sum(readings), 0)::BIGINT FROM {name}"),
                        &[],
                    )
                    .context(|| format!("cannot count {name}"))?;
                let (batches, readings): (i64, i64) = (row.get(0), row.get(1));
                expired.blocks += batches as u64;
                expired.batches += batches as u64;
                expired.readings += readings as u64;
                drop_partition(w, &name, day, &mut expired)?;
            }
            Ok(expired)
        })
    }

    fn replay(
        &self,
        device: &DeviceId,
        stream: Option<&str>,
        from_ns: i64,
        to_ns: i64,
        each: &mut dyn FnMut(TelemetryBatch) -> Result<()>,
    ) -> Result<()> {
        // The rows stream in from a thread of the reader's; batches are
        // decoded and handed on here, so a long replay never sits in memory.
        let (rows_tx, rows_rx) = std::sync::mpsc::sync_channel::<(String, i64, Vec<u8>)>(256);
        std::thread::scope(|s| {
            let reader = s.spawn(move || -> Result<()> {
                use postgres::fallible_iterator::FallibleIterator as _;
                let mut c = self.reader.lock().unwrap_or_else(|e| e.into_inner());
                if c.is_closed() {
                    *c = connect(&self.url)?;
                }
                let params: [&(dyn postgres::types::ToSql + Sync); 4] =
                    [&device.as_str(), &stream, &from_ns, &to_ns];
                let mut rows = c
                    .query_raw(
                        "SELECT s.name, b.seq, b.data FROM telemetry_streams s
                         JOIN telemetry_batches b ON b.stream_id = s.id
                         WHERE s.device_id = $1 AND ($2::TEXT IS NULL OR s.name = $2)
                           AND b.t_max >= $3 AND b.t_min <= $4 AND b.readings > 0
                         ORDER BY b.t_min, s.name, b.seq",
                        params,
                    )
                    .context(|| format!("cannot replay {device}"))?;
                while let Some(row) = rows.next().context(|| format!("cannot replay {device}"))? {
                    if rows_tx.send((row.get(0), row.get(1), row.get(2))).is_err() {
                        break; // The caller stopped.
                    }
                }
                Ok(())
            });
            for (name, seq, data) in rows_rx {
                each(blob::decode_batch(&name, seq as u64, &data)?)?;
            }
            reader
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// The day partitions, oldest first.
fn partitions(client: &mut Client) -> Result<Vec<(String, i64)>> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'telemetry_batches'::regclass",
            &[],
        )
        .context(|| "cannot list the telemetry partitions".into())?;
    let mut days: Vec<(String, i64)> = rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            partition_day(&name).map(|day| (name, day))
        })
        .collect();
    days.sort_by_key(|&(_, day)| day);
    Ok(days)
}

/// Drops a day's partition if it holds no row, counting its size as
/// freed. The check and the drop are one transaction holding the
/// partition's lock, so a batch another replica stores meanwhile either
/// commits before the check (and the day stays) or waits, fails after the
/// drop and comes again (into the day made anew), never lost in between.
fn drop_if_empty(w: &mut Writer, name: &str, day: i64, expired: &mut Expired) -> Result<()> {
    let mut tx = w
        .client
        .transaction()
        .context(|| format!("cannot begin dropping {name}"))?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{DROP_LOCK_WAIT}'; LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE"
    ))
    .context(|| format!("cannot lock {name}"))?;
    let empty: bool = tx
        .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {name})"), &[])
        .context(|| format!("cannot read {name}"))?
        .get(0);
    if !empty {
        return Ok(());
    }
    let bytes = measure_and_drop(&mut tx, name)?;
    tx.commit().context(|| format!("cannot drop {name}"))?;
    forget_day(w, day, bytes, expired);
    Ok(())
}

/// The end of a statement whose CTE `gone` returned the `stream_id`,
/// `seq` and `t_max` of deleted batches: raises each stream's floor (the
/// highest seq deleted, and just past the newest reading deleted) and
/// deletes those batches' rows from the ledger.
const RAISE_FLOORS: &str = "
    floors AS (SELECT stream_id, max(seq) AS seq, max(t_max) + 1 AS before_ns
               FROM gone GROUP BY stream_id),
    raised AS (UPDATE telemetry_streams t
               SET seq_floor = GREATEST(t.seq_floor, f.seq),
                   floor_before_ns = GREATEST(t.floor_before_ns, f.before_ns)
               FROM floors f WHERE t.id = f.stream_id),
    trimmed AS (DELETE FROM telemetry_seqs l USING gone g
                WHERE l.stream_id = g.stream_id AND l.seq = g.seq)";

/// Drops a day's partition, counting its size as freed; its streams'
/// ledgers are trimmed in the same transaction.
fn drop_partition(w: &mut Writer, name: &str, day: i64, expired: &mut Expired) -> Result<()> {
    let mut tx = w
        .client
        .transaction()
        .context(|| format!("cannot begin dropping {name}"))?;
    // Locked first, so a batch another replica stores meanwhile is either
    // in `gone` (its ledger row goes with it) or waits and fails after
    // the drop, and comes again.
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{DROP_LOCK_WAIT}'; LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE"
    ))
    .context(|| format!("cannot lock {name}"))?;
    tx.batch_execute(&format!(
        "WITH gone AS (SELECT stream_id, seq, t_max FROM {name}), {RAISE_FLOORS} SELECT 1"
    ))
    .context(|| format!("cannot trim the ledger of {name}"))?;
    let bytes = measure_and_drop(&mut tx, name)?;
    tx.commit().context(|| format!("cannot drop {name}"))?;
    forget_day(w, day, bytes, expired);
    Ok(())
}

/// The longest a partition's drop waits for its locks. Dropping a
/// partition locks the whole table, and while the drop waits (behind a
/// long read, say a training replay) every insert and query of every
/// replica queues behind it; past this the drop gives up, and the next
/// retention pass tries again.
const DROP_LOCK_WAIT: &str = "2s";

/// Drops the partition `name`; returns its size before.
fn measure_and_drop(c: &mut impl postgres::GenericClient, name: &str) -> Result<i64> {
    let bytes: i64 = c
        .query_one(
            "SELECT pg_total_relation_size($1::TEXT::regclass)::BIGINT",
            &[&name],
        )
        .context(|| format!("cannot measure {name}"))?
        .get(0);
    c.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
        .context(|| format!("cannot drop {name}"))?;
    Ok(bytes)
}

/// Counts a dropped day's partition as freed; the writer no longer has it.
fn forget_day(w: &mut Writer, day: i64, bytes: i64, expired: &mut Expired) {
    w.days.remove(&day);
    expired.segments += 1;
    expired.bytes += bytes as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_by_their_utc_day() {
        assert_eq!(partition_name(0), "telemetry_batches_19700101");
        // 2026-12-05 is day 20,792; 2000-02-29 day 11,016.
        assert_eq!(partition_name(20_792), "telemetry_batches_20261205");
        assert_eq!(partition_name(11_016), "telemetry_batches_20000229");
        assert_eq!(partition_name(-1), "telemetry_batches_19691231");
        for day in (-100_000..100_000).step_by(7) {
            assert_eq!(partition_day(&partition_name(day)), Some(day));
        }
        assert_eq!(partition_day("telemetry_batches_2026120"), None);
        assert_eq!(partition_day("telemetry_seqs"), None);
    }

    #[test]
    fn messages_leave_the_password_out() {
        assert_eq!(
            redact("postgres://strata:secret@db.plant:5432/strata"),
            "postgres://strata@db.plant:5432/strata"
        );
        assert_eq!(
            redact("host=db user=strata password=secret"),
            "host=db user=strata "
        );
    }
}
