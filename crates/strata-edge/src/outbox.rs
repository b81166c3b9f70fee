//! The durable store-and-forward outbox between the pipeline and the uplink.
//!
//! Every batch is written to SQLite (WAL) with its stream's next sequence
//! number in one transaction before anything tries to send it, and removed
//! only when the hub has acknowledged it. So a gateway that loses power or
//! its network, or is killed, resends exactly what the hub has not
//! confirmed, and the hub's (stream, seq) ledger drops the repeats.
//!
//! Sequence numbers live in their own table and only ever grow, even when
//! the outbox is empty or batches were dropped, so a seq is never reused
//! for different data.

use std::path::Path;
use std::sync::Mutex;

use std::sync::atomic::Ordering::Relaxed;

use rusqlite::{Connection, OptionalExtension, params};

use crate::throttle::Throttle;

/// The largest batch the outbox keeps: what the uplink sends in one MQTT
/// message (telemetry is split to fit, [`crate::split`]).
pub const MAX_PAYLOAD_BYTES: usize = crate::split::MAX_BATCH_BYTES;

/// How far [`Durability::Process`] moves the seqs at each start.
const SEQ_GAP: u64 = 1 << 20;

/// What happens when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Drop the oldest batches to make room (keep the freshest data).
    #[default]
    DropOldest,
    /// Refuse the new batch (keep the oldest data).
    RefuseNew,
}

/// What a stored batch survives before the hub has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// A power loss: every batch is synced to disk before it counts as
    /// stored.
    #[default]
    Fsync,
    /// A crash or kill of the agent, not of the machine: no sync per
    /// batch (less flash wear; for simulated fleets sharing one disk). A
    /// power loss can lose the newest batches; their seqs are never
    /// reused, as each start moves the seqs on by a million.
    Process,
}

/// An outbox error.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database failed.
    #[error("outbox {context}: {source}")]
    Sqlite {
        /// What the outbox was doing.
        context: &'static str,
        /// The database's error.
        source: rusqlite::Error,
    },
    /// Another agent runs on the data directory (it holds `agent.lock`):
    /// two would share one outbox, twin and update state.
    #[error("another edge agent runs on the data directory {dir} (it holds agent.lock)")]
    InUse {
        /// The data directory.
        dir: std::path::PathBuf,
    },
    /// The data directory's lock file could not be used.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The batch alone is larger than the outbox holds, or than one
    /// message to the hub may carry ([`MAX_PAYLOAD_BYTES`]).
    #[error("batch of {bytes} bytes refused: the limit is {limit} bytes")]
    TooLarge {
        /// The batch's size.
        bytes: u64,
        /// The smaller of the outbox's size and the message limit.
        limit: u64,
    },
    /// The outbox is full and the policy refuses new batches.
    #[error("outbox is full ({bytes} bytes, limit {limit}); batch refused")]
    Full {
        /// Bytes held.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The data directory's disk is nearly full, so the outbox's file may
    /// not grow, and the batch does not fit in the file as it is.
    #[error(
        "batch refused: the disk of {dir} has {free} bytes free, less than the {keep_free} \
         bytes the outbox leaves free (keep_free_bytes), and {why}"
    )]
    DiskLow {
        /// The data directory.
        dir: std::path::PathBuf,
        /// Bytes free on the disk.
        free: u64,
        /// Bytes the outbox leaves free (`keep_free_bytes`).
        keep_free: u64,
        /// Why the batch does not fit.
        why: &'static str,
    },
}

impl OutboxError {
    /// Whether the same batch may be taken later: the outbox was full, or
    /// its database failed (a full disk, say), rather than the batch being
    /// too large for it ever to fit.
    pub fn may_pass_later(&self) -> bool {
        matches!(
            self,
            OutboxError::Full { .. } | OutboxError::DiskLow { .. } | OutboxError::Sqlite { .. }
        )
    }
}

trait Ctx<T> {
    fn ctx(self, context: &'static str) -> Result<T, OutboxError>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, context: &'static str) -> Result<T, OutboxError> {
        self.map_err(|source| OutboxError::Sqlite { context, source })
    }
}

/// One batch waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Row id (send order).
    pub id: i64,
    /// Stream name.
    pub stream: String,
    /// Sequence number in the stream.
    pub seq: u64,
    /// The encoded payload, ready to publish.
    pub payload: Vec<u8>,
}

/// Counters of the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Batches waiting.
    pub depth: u64,
    /// Bytes waiting.
    pub bytes: u64,
    /// Batches dropped to make room since the outbox was opened: for its
    /// size bound or for a nearly full disk.
    pub dropped: u64,
    /// Bytes free on the data directory's disk, where it can be read.
    pub disk_free: Option<u64>,
}

/// The outbox.
pub struct Outbox {
    conn: Mutex<Connection>,
    /// The seq a stream starts at.
    first_seq: u64,
    max_bytes: u64,
    policy: DropPolicy,
    dropped: std::sync::atomic::AtomicU64,
    /// Bytes held, tracked here so appends need no scan of the table.
    bytes: std::sync::atomic::AtomicU64,
    /// Batches kept: counted as they come and go, since SQLite counts
    /// rows by reading every page (most of a backlog of days, on an SD
    /// card, at every heartbeat and scrape).
    depth: std::sync::atomic::AtomicU64,
    /// The data directory: the disk whose free space is watched.
    dir: std::path::PathBuf,
    /// Bytes left free on that disk: below this the outbox stops growing.
    keep_free: u64,
    /// The warning for batches dropped from a full outbox.
    full_warning: Throttle,
    /// Whether the disk was below `keep_free` at the last look.
    disk_was_low: std::sync::atomic::AtomicBool,
    /// `agent.lock` in the data directory, held while the outbox is open.
    _lock: std::fs::File,
}

/// The stream [`DropPolicy::DropOldest`] never drops: the closed loop's
/// records of what it did to machines.
const KEPT_STREAM: &str = crate::control::CONTROL_STREAM;

/// Name of the outbox database in the agent's data directory.
pub const OUTBOX_FILE: &str = "outbox.db";

/// Takes `agent.lock` in the data directory `dir`: one agent at a time.
fn lock_dir(dir: &Path) -> Result<std::fs::File, OutboxError> {
    let path = dir.join("agent.lock");
    let lock = |source| OutboxError::Lock {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(lock)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OutboxError::InUse {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(lock(e)),
    }
}

/// Writes a batch (stream, seq, payload) and moves its stream's next
/// sequence number on.
fn write(
    tx: &rusqlite::Transaction<'_>,
    (stream, seq, payload): (&str, u64, &[u8]),
) -> Result<(), OutboxError> {
    tx.prepare_cached("INSERT INTO outbox (stream, seq, payload) VALUES (?1, ?2, ?3)")
        .ctx("append")?
        .execute(params![stream, seq as i64, payload])
        .ctx("append")?;
    tx.prepare_cached(
        "INSERT INTO streams (name, next_seq) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET next_seq = excluded.next_seq",
    )
    .ctx("advance sequence")?
    .execute(params![stream, (seq + 1) as i64])
    .ctx("advance sequence")?;
    Ok(())
}

/// Bytes free for this process on the disk that holds `dir`.
pub(crate) fn disk_free(dir: &Path) -> Option<u64> {
    let fs = rustix::fs::statvfs(dir).ok()?;
    Some(fs.f_bavail.saturating_mul(fs.f_frsize))
}

impl Outbox {
    /// Opens (creating) the outbox in `dir`.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        policy: DropPolicy,
        durability: Durability,
    ) -> Result<Self, OutboxError> {
        let _ = std::fs::create_dir_all(dir);
        let lock = lock_dir(dir)?;
        let conn = Connection::open(dir.join(OUTBOX_FILE)).ctx("open")?;
        let synchronous = match durability {
            Durability::Fsync => "FULL",
            // In WAL mode: no sync per commit, still atomic.
            Durability::Process => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             -- The WAL is cut back to 4 MiB after a checkpoint: it is part
             -- of what the outbox takes on a nearly full disk.
             PRAGMA journal_size_limit = 4194304;
             PRAGMA synchronous = {synchronous};
             -- A FIFO touches its head and tail only: a small page cache
             -- keeps the agent's memory small on a gateway.
             PRAGMA cache_size = -512;
             CREATE TABLE IF NOT EXISTS streams (name TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
             -- first_seq: where a stream not in `streams` starts.
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS outbox (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 stream TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 payload BLOB NOT NULL
             );"
        ))
        .ctx("prepare schema")?;
        if durability == Durability::Process {
            // Without a sync per commit, a power loss takes back the newest
            // commits, and with them seqs that the hub may have stored
            // already. Each start moves every stream's next seq past all
            // the seqs so lost (the WAL is synced at every checkpoint, so
            // they are fewer than its 1,000 pages), and syncs that, so no
            // seq is handed out again for different data. A stream whose
            // row itself was lost starts past them too: new streams start
            // at `first_seq`, moved on at each start the same way.
            conn.execute_batch(&format!(
                "PRAGMA synchronous = FULL;
                 UPDATE streams SET next_seq = next_seq + {SEQ_GAP};
                 INSERT INTO meta (key, value) VALUES ('first_seq', 1)
                     ON CONFLICT (key) DO UPDATE SET value = value + {SEQ_GAP};
                 PRAGMA synchronous = {synchronous};"
            ))
            .ctx("move sequences past unsynced ones")?;
        }
        let first_seq: i64 = conn
            .query_row(
                "SELECT coalesce((SELECT value FROM meta WHERE key = 'first_seq'), 1)",
                [],
                |r| r.get(0),
            )
            .ctx("read the first sequence")?;
        let (bytes, depth): (i64, i64) = conn
            .query_row(
                "SELECT coalesce(sum(length(payload)), 0), count(*) FROM outbox",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx("size")?;
        Ok(Outbox {
            conn: Mutex::new(conn),
            first_seq: first_seq as u64,
            max_bytes,
            policy,
            dropped: Default::default(),
            bytes: (bytes as u64).into(),
            depth: (depth as u64).into(),
            dir: dir.to_path_buf(),
            keep_free: 0,
            full_warning: Throttle::default(),
            disk_was_low: false.into(),
            _lock: lock,
        })
    }

    /// Leaves `bytes` free on the data directory's disk: while the disk has
    /// less, the outbox's file does not grow. A new batch goes into the
    /// space that sent and dropped batches left; where it does not fit,
    /// the outbox applies its drop policy, as when it is full, instead of
    /// failing once the disk is. Records of actions may still grow it: they
    /// are small and few, and never dropped. 0 (the default) watches
    /// nothing.
    pub fn keep_free(mut self, bytes: u64) -> Self {
        self.keep_free = bytes;
        self
    }

    /// The disk's free bytes, when they are below the space to leave free;
    /// says so once when the disk becomes low and once when it has room
    /// again. Where the free space cannot be read, the writes say whether
    /// it fits.
    fn disk_low(&self) -> Option<u64> {
        if self.keep_free == 0 {
            return None;
        }
        let free = disk_free(&self.dir)?;
        let low = free < self.keep_free;
        if self.disk_was_low.swap(low, Relaxed) != low {
            if low {
                tracing::warn!(
                    dir = %self.dir.display(),
                    free,
                    keep_free = self.keep_free,
                    "the data directory's disk is nearly full: the outbox stops growing and \
                     applies its drop policy"
                );
            } else {
                tracing::info!(free, "the data directory's disk has room again");
            }
        }
        low.then_some(free)
    }

    /// Writes the batch without growing the file, the disk having `free`
    /// bytes: tries it, and where the file would grow, takes it back and,
    /// as the policy says, drops the oldest readings (as many bytes as the
    /// file would have grown by) and tries again, or refuses the batch.
    /// Returns the bytes and batches dropped (in `tx`: none if it rolls
    /// back).
    fn write_within_file(
        &self,
        tx: &rusqlite::Transaction<'_>,
        batch: (&str, u64, &[u8]),
        free: u64,
    ) -> Result<(u64, u64), OutboxError> {
        let pragma = |name| -> Result<i64, OutboxError> {
            tx.prepare_cached(name)
                .ctx("read the file's size")?
                .query_row([], |r| r.get(0))
                .ctx("read the file's size")
        };
        let pages = || pragma("PRAGMA page_count");
        let low = |why| OutboxError::DiskLow {
            dir: self.dir.clone(),
            free,
            keep_free: self.keep_free,
            why,
        };
        let before = pages()?;
        let (mut freed, mut n) = (0, 0);
        loop {
            tx.execute_batch("SAVEPOINT fit").ctx("try the batch")?;
            write(tx, batch)?;
            let grown = pages()? - before;
            if grown <= 0 {
                tx.execute_batch("RELEASE fit").ctx("keep the batch")?;
                return Ok((freed, n));
            }
            tx.execute_batch("ROLLBACK TO fit; RELEASE fit")
                .ctx("take the batch back")?;
            if self.policy == DropPolicy::RefuseNew {
                return Err(low("it does not fit in the outbox's file (refuse_new)"));
            }
            // The oldest readings, as many bytes as the file would have
            // grown by (at least one): records of actions are never dropped.
            let wanted = (grown * pragma("PRAGMA page_size")?) as u64;
            let (mut round, first) = (0, n);
            while n == first || round < wanted {
                let dropped = tx
                    .prepare_cached(
                        "DELETE FROM outbox WHERE id = \
                         (SELECT min(id) FROM outbox WHERE stream != ?1) \
                         RETURNING length(payload)",
                    )
                    .ctx("drop oldest")?
                    .query_row(params![KEPT_STREAM], |r| r.get::<_, i64>(0))
                    .optional()
                    .ctx("drop oldest")?;
                match dropped {
                    Some(len) => {
                        round += len as u64;
                        n += 1;
                    }
                    // The last reading went in this round: try again.
                    None if n > first => break,
                    None => {
                        return Err(low(
                            "it does not fit in the outbox's file with every reading dropped",
                        ));
                    }
                }
            }
            freed += round;
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a batch: `build(seq)` encodes it with the stream's next
    /// sequence number. Durable when this returns.
    pub fn append(
        &self,
        stream: &str,
        build: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<u64, OutboxError> {
        let mut conn = self.conn();
        let tx = conn.transaction().ctx("begin")?;
        // Cached statements: a gateway appends a few batches a second for
        // years, and parsing SQL would be most of the cost.
        let seq: u64 = tx
            .prepare_cached("SELECT next_seq FROM streams WHERE name = ?1")
            .ctx("read sequence")?
            .query_row(params![stream], |r| r.get::<_, i64>(0))
            .optional()
            .ctx("read sequence")?
            .map_or(self.first_seq, |s| s as u64);
        let payload = build(seq);
        // Checked before anything is dropped: a batch that can never fit
        // or be sent must not cost the ones already kept.
        let limit = self.max_bytes.min(MAX_PAYLOAD_BYTES as u64);
        if payload.len() as u64 > limit {
            return Err(OutboxError::TooLarge {
                bytes: payload.len() as u64,
                limit,
            });
        }
        let mut bytes = self.bytes.load(Relaxed);
        // Batches deleted, and of them those dropped for a full outbox and
        // for a full disk: counted once the transaction commits.
        let mut gone = 0u64;
        let (mut dropped_full, mut dropped_disk) = (0, 0);
        if bytes + payload.len() as u64 > self.max_bytes {
            match self.policy {
                DropPolicy::RefuseNew => {
                    return Err(OutboxError::Full {
                        bytes,
                        limit: self.max_bytes,
                    });
                }
                DropPolicy::DropOldest => {
                    // Records of what the gateway did to machines are
                    // never dropped to make room: only readings are.
                    let mut stmt = tx
                        .prepare(
                            "SELECT id, length(payload) FROM outbox WHERE stream != ?1 ORDER BY id",
                        )
                        .ctx("find oldest")?;
                    let mut rows = stmt.query(params![KEPT_STREAM]).ctx("find oldest")?;
                    let mut cut = None;
                    let mut n = 0;
                    while bytes + payload.len() as u64 > self.max_bytes {
                        let Some(row) = rows.next().ctx("find oldest")? else {
                            break;
                        };
                        let (id, len): (i64, i64) =
                            (row.get(0).ctx("row")?, row.get(1).ctx("row")?);
                        bytes -= len as u64;
                        cut = Some(id);
                        n += 1;
                    }
                    drop(rows);
                    drop(stmt);
                    if bytes + payload.len() as u64 > self.max_bytes {
                        // Nothing else left to drop: what is kept fills it.
                        return Err(OutboxError::Full {
                            bytes,
                            limit: self.max_bytes,
                        });
                    }
                    if let Some(id) = cut {
                        let deleted = tx
                            .execute(
                                "DELETE FROM outbox WHERE id <= ?1 AND stream != ?2",
                                params![id, KEPT_STREAM],
                            )
                            .ctx("drop oldest")?;
                        gone = deleted as u64;
                        dropped_full = n;
                    }
                }
            }
        }
        let batch = (stream, seq, &payload[..]);
        match self.disk_low().filter(|_| stream != KEPT_STREAM) {
            Some(free) => {
                let (freed, n) = self.write_within_file(&tx, batch, free)?;
                bytes -= freed;
                gone += n;
                dropped_disk = n;
            }
            None => write(&tx, batch)?,
        }
        tx.commit().ctx("commit")?;
        if dropped_full > 0
            && let Some(held_back) = self.full_warning.pass()
        {
            tracing::warn!(
                dropped = dropped_full,
                held_back,
                "outbox full: dropped the oldest batches"
            );
        }
        if dropped_disk > 0 {
            // Said once when the disk became low; counted in `dropped`.
            tracing::debug!(
                dropped = dropped_disk,
                "disk nearly full: the outbox dropped its oldest batches"
            );
        }
        self.dropped.fetch_add(dropped_full + dropped_disk, Relaxed);
        self.bytes.store(bytes + payload.len() as u64, Relaxed);
        // Under the connection's lock, as every change of the two is.
        self.depth
            .store(self.depth.load(Relaxed) + 1 - gone, Relaxed);
        Ok(seq)
    }

    /// The sequence number the next batch of `stream` will get.
    pub fn next_seq(&self, stream: &str) -> Result<u64, OutboxError> {
        let conn = self.conn();
        let seq = conn
            .query_row(
                "SELECT next_seq FROM streams WHERE name = ?1",
                params![stream],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .ctx("read sequence")?;
        // As `append` gives it: a new stream starts at `first_seq`.
        Ok(seq.map_or(self.first_seq, |s| s as u64))
    }

    /// Up to `n` batches after row `after`, oldest first. Reading in chunks
    /// keeps memory bounded however large the backlog.
    pub fn peek(&self, after: i64, n: usize) -> Result<Vec<Entry>, OutboxError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, stream, seq, payload FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .ctx("peek")?;
        let rows = stmt
            .query_map(params![after, n as i64], |r| {
                Ok(Entry {
                    id: r.get(0)?,
                    stream: r.get(1)?,
                    seq: r.get::<_, i64>(2)? as u64,
                    payload: r.get(3)?,
                })
            })
            .ctx("peek")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx("peek")
    }

    /// Removes acknowledged batches.
    pub fn remove(&self, ids: &[i64]) -> Result<(), OutboxError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().ctx("begin")?;
        let (mut freed, mut removed) = (0u64, 0u64);
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM outbox WHERE id = ?1 RETURNING length(payload)")
                .ctx("remove")?;
            for id in ids {
                if let Some(len) = stmt
                    .query_row(params![id], |r| r.get::<_, i64>(0))
                    .optional()
                    .ctx("remove")?
                {
                    freed += len as u64;
                    removed += 1;
                }
            }
        }
        tx.commit().ctx("commit")?;
        self.bytes.fetch_sub(freed, Relaxed);
        self.depth.fetch_sub(removed, Relaxed);
        Ok(())
    }

    /// Drops batches that can never be sent (kept by an earlier release,
    /// before batches were limited), counted with the batches dropped.
    pub fn discard(&self, ids: &[i64]) -> Result<(), OutboxError> {
        self.remove(ids)?;
        self.dropped.fetch_add(ids.len() as u64, Relaxed);
        Ok(())
    }

    /// Depth, size, drops and the disk's free space.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        Ok(OutboxStats {
            depth: self.depth.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            dropped: self.dropped.load(std::sync::atomic::Ordering::Relaxed),
            disk_free: disk_free(&self.dir),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_survive_reopen_and_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        {
            let o = Outbox::open(
                dir.path(),
                1 << 20,
                DropPolicy::DropOldest,
                Durability::Fsync,
            )
            .unwrap();
            assert_eq!(o.append("a", |s| vec![s as u8]).unwrap(), 1);
            assert_eq!(o.append("a", |s| vec![s as u8]).unwrap(), 2);
            assert_eq!(o.append("b", |s| vec![s as u8]).unwrap(), 1);
            let all = o.peek(0, 10).unwrap();
            o.remove(&all.iter().map(|e| e.id).collect::<Vec<_>>())
                .unwrap();
            assert_eq!(o.stats().unwrap().depth, 0);
        }
        let o = Outbox::open(
            dir.path(),
            1 << 20,
            DropPolicy::DropOldest,
            Durability::Fsync,
        )
        .unwrap();
        assert_eq!(
            o.append("a", |s| vec![s as u8]).unwrap(),
            3,
            "an emptied outbox still never reuses a seq"
        );
    }

    #[test]
    fn peeks_in_order_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(
            dir.path(),
            1 << 20,
            DropPolicy::DropOldest,
            Durability::Fsync,
        )
        .unwrap();
        for _ in 0..5 {
            o.append("s", |s| vec![s as u8]).unwrap();
        }
        let first = o.peek(0, 2).unwrap();
        assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        let next = o.peek(first[1].id, 10).unwrap();
        assert_eq!(
            next.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
    }

    #[test]
    fn size_bound_drops_oldest_or_refuses_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(
            &dir.path().join("a"),
            250,
            DropPolicy::DropOldest,
            Durability::Fsync,
        )
        .unwrap();
        for _ in 0..5 {
            o.append("s", |_| vec![0; 100]).unwrap();
        }
        let s = o.stats().unwrap();
        assert_eq!((s.depth, s.bytes, s.dropped), (2, 200, 3));

        // Control records are not dropped to make room, and when only they
        // are left, a new batch is refused.
        let kept = Outbox::open(
            &dir.path().join("kept"),
            250,
            DropPolicy::DropOldest,
            Durability::Fsync,
        )
        .unwrap();
        kept.append("s", |_| vec![0; 100]).unwrap();
        kept.append(KEPT_STREAM, |_| vec![1; 100]).unwrap();
        kept.append("s", |_| vec![0; 100]).unwrap();
        let streams = |o: &Outbox| -> Vec<String> {
            o.peek(0, 10)
                .unwrap()
                .iter()
                .map(|e| e.stream.clone())
                .collect()
        };
        assert_eq!(streams(&kept), ["control", "s"]);
        kept.append(KEPT_STREAM, |_| vec![1; 100]).unwrap();
        assert_eq!(streams(&kept), ["control", "control"]);
        assert!(matches!(
            kept.append("s", |_| vec![0; 100]),
            Err(OutboxError::Full { .. })
        ));
        assert_eq!(streams(&kept), ["control", "control"]);
        assert_eq!(
            o.peek(0, 10)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![4, 5]
        );

        let o = Outbox::open(
            &dir.path().join("b"),
            250,
            DropPolicy::RefuseNew,
            Durability::Fsync,
        )
        .unwrap();
        o.append("s", |_| vec![0; 100]).unwrap();
        o.append("s", |_| vec![0; 100]).unwrap();
        assert!(matches!(
            o.append("s", |_| vec![0; 100]),
            Err(OutboxError::Full { .. })
        ));
        // A refused batch does not consume a sequence number.
        o.remove(&[1]).unwrap();
        assert_eq!(o.append("s", |s| vec![s as u8; 100]).unwrap(), 3);
    }

    #[test]
    fn on_a_nearly_full_disk_the_outbox_stops_growing_and_applies_its_policy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let open = |max_bytes, policy, keep_free| {
            Outbox::open(&path, max_bytes, policy, Durability::Fsync)
                .unwrap()
                .keep_free(keep_free)
        };
        // No disk has this much free: the disk is nearly full.
        let low = u64::MAX;
        let db = || Connection::open(path.join(OUTBOX_FILE)).unwrap();
        let pages = || -> i64 {
            db().query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap()
        };
        // The counters agree with the table after every step.
        let checked = |o: &Outbox| -> OutboxStats {
            let s = o.stats().unwrap();
            let (depth, bytes): (i64, i64) = db()
                .query_row(
                    "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!((s.depth, s.bytes), (depth as u64, bytes as u64));
            s
        };
        let seqs = |o: &Outbox, stream: &str| -> Vec<u64> {
            o.peek(0, 1000)
                .unwrap()
                .iter()
                .filter(|e| e.stream == stream)
                .map(|e| e.seq)
                .collect()
        };

        // Leaving a byte free: the real disk has room, nothing changes.
        let o = open(1 << 20, DropPolicy::DropOldest, 1);
        for _ in 0..50 {
            o.append("s", |_| vec![7; 1000]).unwrap();
        }
        assert_eq!(checked(&o).dropped, 0);
        drop(o);

        // Dropping the oldest: the file does not grow, the freshest
        // batches are kept, and what was dropped is counted.
        let o = open(1 << 20, DropPolicy::DropOldest, low);
        let before = pages();
        for _ in 0..500 {
            o.append("s", |s| vec![s as u8; 1000]).unwrap();
        }
        o.append("s", |_| vec![0; 2500]).unwrap();
        assert_eq!(pages(), before, "the file grew");
        let s = checked(&o);
        assert!(s.dropped >= 450, "{s:?}");
        assert_eq!(s.depth, 551 - s.dropped);
        assert_eq!(seqs(&o, "s"), (s.dropped + 1..=551).collect::<Vec<_>>());

        // The space that sent batches leave takes new ones without a drop,
        // a new stream's too.
        let ids: Vec<i64> = o.peek(0, 1000).unwrap().iter().map(|e| e.id).collect();
        o.remove(&ids[..20]).unwrap();
        for _ in 0..10 {
            o.append("s", |_| vec![1; 1000]).unwrap();
        }
        o.append("t", |_| vec![1; 1000]).unwrap();
        assert_eq!(checked(&o).dropped, s.dropped);
        assert_eq!(pages(), before, "the file grew");

        // A batch larger than the whole file is refused, and the readings
        // dropped on the way to finding that out are back.
        let held = seqs(&o, "s");
        let e = o.append("s", |_| vec![2; 200_000]).unwrap_err();
        assert!(matches!(e, OutboxError::DiskLow { keep_free, .. } if keep_free == low));
        assert!(e.may_pass_later());
        assert!(e.to_string().contains("every reading dropped"), "{e}");
        assert_eq!(seqs(&o, "s"), held);
        assert_eq!(checked(&o).dropped, s.dropped);
        assert_eq!(pages(), before, "the file grew");

        // Records of actions are never dropped, and may grow the file.
        o.append(KEPT_STREAM, |_| vec![3; 40_000]).unwrap();
        assert!(pages() > before);
        let before = pages();
        drop(o);

        // A full outbox and a full disk in one batch: both drops counted.
        let bytes = checked(&open(1 << 20, DropPolicy::DropOldest, 1)).bytes;
        let o = open(bytes, DropPolicy::DropOldest, low);
        let dropped = checked(&o).dropped;
        o.append("s", |_| vec![4; 3000]).unwrap();
        let s = checked(&o);
        assert!(s.dropped >= dropped + 3, "{s:?}");
        assert!(s.bytes <= bytes);
        assert_eq!(seqs(&o, KEPT_STREAM).len(), 1);
        assert_eq!(pages(), before, "the file grew");
        drop(o);

        // Refusing new batches, the outbox fills the space it has, then
        // refuses the rest while the disk is low, without using up their
        // sequence numbers, and takes them again once the disk has room.
        let o = open(1 << 20, DropPolicy::DropOldest, 1);
        let ids: Vec<i64> = o.peek(0, 1000).unwrap().iter().map(|e| e.id).collect();
        o.remove(&ids[..10]).unwrap();
        drop(o);
        let o = open(1 << 20, DropPolicy::RefuseNew, low);
        let last = *seqs(&o, "s").last().unwrap();
        let mut taken = 0;
        let e = loop {
            match o.append("s", |_| vec![5; 1000]) {
                Ok(_) => taken += 1,
                Err(e) => break e,
            }
        };
        assert!(e.to_string().contains("(refuse_new)"), "{e}");
        assert!((1..20).contains(&taken), "{taken} batches taken");
        assert_eq!(pages(), before, "the file grew");
        checked(&o);
        drop(o);
        let o = open(1 << 20, DropPolicy::RefuseNew, 1);
        assert_eq!(o.append("s", |s| vec![s as u8]).unwrap(), last + taken + 1);
    }

    #[test]
    fn on_a_nearly_full_disk_a_batch_that_fits_once_every_reading_is_dropped_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let open = |keep_free| {
            Outbox::open(
                dir.path(),
                1 << 20,
                DropPolicy::DropOldest,
                Durability::Fsync,
            )
            .unwrap()
            .keep_free(keep_free)
        };
        let o = open(1);
        for _ in 0..12 {
            o.append("s", |_| vec![7; 1000]).unwrap();
        }
        drop(o);
        let o = open(u64::MAX);
        let seq = o.append("s", |_| vec![8; 9000]).unwrap();
        let kept: Vec<_> = o.peek(0, 100).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(kept, [seq]);
        let s = o.stats().unwrap();
        assert_eq!((s.depth, s.bytes, s.dropped), (1, 9000, 12));
    }

    #[test]
    fn without_a_sync_per_batch_each_start_moves_the_seqs_on() {
        let dir = tempfile::tempdir().unwrap();
        let open = |durability| {
            Outbox::open(dir.path(), 1 << 20, DropPolicy::DropOldest, durability).unwrap()
        };
        let o = open(Durability::Process);
        assert_eq!(o.append("s", |s| vec![s as u8]).unwrap(), 1);
        assert_eq!(o.append("s", |s| vec![s as u8]).unwrap(), 2);
        drop(o);
        // What a power loss could have taken back is never handed out again.
        let o = open(Durability::Process);
        assert_eq!(o.append("s", |s| vec![s as u8]).unwrap(), 3 + SEQ_GAP);
        drop(o);
        // Synced batches need no gap.
        let o = open(Durability::Fsync);
        assert_eq!(o.append("s", |s| vec![s as u8]).unwrap(), 4 + SEQ_GAP);
        // The batches kept are unchanged.
        let seqs: Vec<u64> = o.peek(0, 10).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3 + SEQ_GAP, 4 + SEQ_GAP]);
        // The depth is counted at the start and kept since.
        assert_eq!(o.stats().unwrap().depth, 4);
        o.remove(&[o.peek(0, 1).unwrap()[0].id]).unwrap();
        assert_eq!(o.stats().unwrap().depth, 3);
    }

    #[test]
    fn a_stream_whose_row_a_power_loss_took_starts_past_what_it_sent() {
        let dir = tempfile::tempdir().unwrap();
        let open = |durability| {
            Outbox::open(dir.path(), 1 << 20, DropPolicy::DropOldest, durability).unwrap()
        };
        let o = open(Durability::Process);
        assert_eq!(o.append("model:rul:2", |s| vec![s as u8]).unwrap(), 1);
        assert_eq!(o.append("model:rul:2", |s| vec![s as u8]).unwrap(), 2);
        // The stream was new and nothing was synced: a power loss can
        // take its row back after the hub stored seqs 1 and 2.
        o.conn()
            .execute("DELETE FROM streams WHERE name = 'model:rul:2'", [])
            .unwrap();
        drop(o);
        let o = open(Durability::Process);
        // What the next batch will get is what it gets.
        assert_eq!(o.next_seq("model:rul:2").unwrap(), 1 + SEQ_GAP);
        let seq = o.append("model:rul:2", |s| vec![s as u8]).unwrap();
        assert_eq!(seq, 1 + SEQ_GAP);
        drop(o);
        // With a sync per batch nothing is lost, and new streams start
        // where the last start left them.
        let o = open(Durability::Fsync);
        assert_eq!(o.append("other", |s| vec![s as u8]).unwrap(), 1 + SEQ_GAP);
    }

    #[test]
    fn one_agent_at_a_time_opens_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            Outbox::open(
                dir.path(),
                1 << 20,
                DropPolicy::DropOldest,
                Durability::Fsync,
            )
        };
        let first = open().unwrap();
        let err = open().err().expect("a second outbox on the same directory");
        assert!(matches!(err, OutboxError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("another edge agent"), "{err}");
        drop(first);
        open().unwrap();
    }

    #[test]
    fn a_batch_larger_than_the_outbox_or_a_message_is_refused_alone() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(
            &dir.path().join("a"),
            250,
            DropPolicy::DropOldest,
            Durability::Fsync,
        )
        .unwrap();
        o.append("s", |_| vec![0; 100]).unwrap();
        o.append("s", |_| vec![0; 100]).unwrap();
        // Dropping every batch kept would still not make room: nothing goes.
        assert!(matches!(
            o.append("s", |_| vec![0; 251]),
            Err(OutboxError::TooLarge {
                bytes: 251,
                limit: 250
            })
        ));
        let s = o.stats().unwrap();
        assert_eq!((s.depth, s.bytes, s.dropped), (2, 200, 0));
        assert_eq!(o.append("s", |_| vec![0; 100]).unwrap(), 3);

        let big = Outbox::open(
            &dir.path().join("b"),
            64 << 20,
            DropPolicy::DropOldest,
            Durability::Fsync,
        )
        .unwrap();
        let err = big
            .append("s", |_| vec![0; MAX_PAYLOAD_BYTES + 1])
            .unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        assert_eq!(big.append("s", |_| vec![0; MAX_PAYLOAD_BYTES]).unwrap(), 1);
    }
}
