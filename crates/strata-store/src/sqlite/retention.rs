//! Retention for SQLite: old blocks are deleted (by age, stream by stream;
//! by size, the oldest segment's at a time) in small transactions so that
//! ingest never waits long for the writer connection; then the segment
//! files no row points at any more are removed.
//!
//! The order makes it crash-safe: rows go first, so a row never points at
//! a removed file; a crash between the two leaves unused files, which the
//! next pass removes.

use rusqlite::params;

use super::SqliteStore;
use crate::Expired;
use crate::error::{Context, Result};

/// Most blocks one transaction deletes.
const BLOCKS_PER_TRANSACTION: i64 = 10_000;

impl SqliteStore {
    pub(super) fn expire_before(&self, before_ns: i64) -> Result<Expired> {
        let streams: Vec<i64> = self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT id FROM streams ORDER BY id")
                .context(|| "cannot list streams".into())?;
            let ids = stmt
                .query_map([], |r| r.get(0))
                .context(|| "cannot list streams".into())?;
            ids.collect::<rusqlite::Result<Vec<i64>>>()
                .context(|| "cannot list streams".into())
        })?;
        let mut expired = Expired::default();
        for stream in streams {
            // Served by the (stream_id, t_max) index.
            self.delete_blocks(
                "stream_id = ?1 AND t_max < ?2",
                [stream, before_ns],
                &mut expired,
            )?;
        }
        self.remove_unused_segments(&mut expired)?;
        Ok(expired)
    }

    /// Deletes the oldest telemetry, a segment file at a time (its blocks,
    /// then the file), until the segment files take at most `max_bytes`;
    /// the newest segment is never removed.
    pub(super) fn shrink_to_bytes(&self, max_bytes: u64) -> Result<Expired> {
        let mut expired = Expired::default();
        loop {
            let files = self.segments.files()?;
            let total: u64 = files.iter().map(|&(_, len)| len).sum();
            let Some(&(oldest, _)) = files.first().filter(|_| files.len() > 1) else {
                break;
            };
            if total <= max_bytes {
                break;
            }
            // Served by the blocks_by_segment index.
            self.delete_blocks("segment = ?1", [i64::from(oldest)], &mut expired)?;
            let removed = expired.segments;
            self.remove_unused_segments(&mut expired)?;
            if expired.segments == removed {
                // Nothing could go (another process is appending there?).
                break;
            }
        }
        Ok(expired)
    }

    /// Deletes the blocks `condition` (on `args`) selects, in transactions
    /// of at most [`BLOCKS_PER_TRANSACTION`], counting them in `expired`.
    fn delete_blocks<const N: usize>(
        &self,
        condition: &str,
        args: [i64; N],
        expired: &mut Expired,
    ) -> Result<()> {
        let sql = format!(
            "DELETE FROM blocks WHERE id IN (SELECT id FROM blocks WHERE {condition} LIMIT {BLOCKS_PER_TRANSACTION})
             RETURNING batches, readings"
        );
        loop {
            let deleted = self.write(|w| {
                let tx = w
                    .conn
                    .transaction()
                    .context(|| "cannot begin a retention transaction".into())?;
                let mut counts = (0u64, 0u64, 0u64);
                {
                    let mut stmt = tx
                        .prepare_cached(&sql)
                        .context(|| "cannot prepare the retention delete".into())?;
                    let rows = stmt
                        .query_map(rusqlite::params_from_iter(args), |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                        })
                        .context(|| format!("cannot delete blocks where {condition}"))?;
                    for row in rows {
                        let (b, r) =
                            row.context(|| format!("cannot delete blocks where {condition}"))?;
                        counts.0 += 1;
                        counts.1 += b as u64;
                        counts.2 += r as u64;
                    }
                }
                tx.commit()
                    .context(|| "cannot commit a retention transaction".into())?;
                Ok(counts)
            })?;
            expired.blocks += deleted.0;
            expired.batches += deleted.1;
            expired.readings += deleted.2;
            if deleted.0 < BLOCKS_PER_TRANSACTION as u64 {
                return Ok(());
            }
        }
    }

    /// Removes the segment files no row points at any more, counting them.
    fn remove_unused_segments(&self, expired: &mut Expired) -> Result<()> {
        // Under the append lock: no commit is under way, and appends only
        // ever go to the newest segment, which is never removed.
        let mut appender = self.segments.lock()?;
        let (segments, bytes) = appender.remove_unused(|segment| {
            self.read(|conn| {
                conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM blocks WHERE segment = ?1)",
                    params![segment],
                    |r| r.get::<_, bool>(0),
                )
                .context(|| format!("cannot tell whether segment {segment} is in use"))
            })
        })?;
        expired.segments += segments;
        expired.bytes += bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use strata_proto::{DeviceId, SignalSeries, TelemetryBatch};

    use crate::{
        BatchWrite, Durability, EncodedBatch, RangeQuery, SqliteStore, TelemetryStore, WriteOutcome,
    };

    const SECOND: i64 = 1_000_000_000;
    const DAY: i64 = 86_400 * SECOND;
    const BASE: i64 = 1_700_000_000 * SECOND;

    /// 50 readings a second apart from `t0`.
    fn batch(device: &str, seq: u64, t0: i64) -> BatchWrite {
        BatchWrite {
            device: DeviceId::new(device).unwrap(),
            received_ns: 0,
            batch: EncodedBatch::encode(&TelemetryBatch {
                stream: "main".into(),
                seq,
                signals: vec![SignalSeries {
                    name: "temp".into(),
                    unit: "Cel".into(),
                    ts_ns: (0..50).map(|i| t0 + i * SECOND).collect(),
                    values: (0..50)
                        .map(|i| (seq * 50 + i as u64) as f64 * 0.37)
                        .collect(),
                    quality: vec![],
                }],
            }),
        }
    }

    fn segment_files(dir: &Path) -> Vec<(String, u64)> {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(dir.join(super::super::SEGMENTS_DIR))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .map(|e| {
                let len = e.metadata().unwrap().len();
                (e.file_name().to_string_lossy().into_owned(), len)
            })
            .collect();
        files.sort();
        files
    }

    fn timestamps(store: &SqliteStore, device: &str, from_ns: i64, to_ns: i64) -> Vec<i64> {
        let q = RangeQuery {
            device: DeviceId::new(device).unwrap(),
            signal: "temp".into(),
            from_ns,
            to_ns,
            bucket_ns: None,
            limit: 1_000_000,
        };
        store
            .range(&q)
            .unwrap()
            .points
            .iter()
            .map(|p| p.ts_ns)
            .collect()
    }

    #[test]
    fn over_its_size_limit_the_oldest_segments_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
        store.segments.set_segment_bytes(4096);
        for seq in 1..=60 {
            let t0 = BASE + seq as i64 * 100 * SECOND;
            store
                .write_batches(&[batch("d1", seq, t0), batch("d2", seq, t0)])
                .unwrap();
        }
        let before = segment_files(dir.path());
        let total: u64 = before.iter().map(|f| f.1).sum();
        let all = store.batch_count(None).unwrap();
        let limit = 4 * 4096;
        assert!(total > 2 * limit, "{before:?}");

        let expired = store.shrink_to(limit).unwrap();
        let after = segment_files(dir.path());
        let left: u64 = after.iter().map(|f| f.1).sum();
        assert!(left <= limit, "{after:?}");
        // Only the oldest went, and no more than needed: with the next
        // oldest too, the rest would have fit.
        assert_eq!(after[..], before[before.len() - after.len()..]);
        assert!(left + before[before.len() - after.len() - 1].1 > limit);
        assert_eq!(expired.segments as usize, before.len() - after.len());
        assert_eq!(
            expired.bytes,
            before[..before.len() - after.len()]
                .iter()
                .map(|f| f.1)
                .sum::<u64>()
        );
        assert_eq!(store.batch_count(None).unwrap(), all - expired.batches);
        // What is left is the newest, every reading of it.
        let kept = timestamps(&store, "d1", 0, i64::MAX);
        assert_eq!(kept.len() as u64, (all - expired.batches) / 2 * 50);
        assert_eq!(
            *kept.last().unwrap(),
            BASE + 60 * 100 * SECOND + 49 * SECOND
        );
        assert!(kept[0] > BASE + 100 * SECOND);
        // Already small enough: nothing more goes.
        assert_eq!(store.shrink_to(limit).unwrap(), crate::Expired::default());
        // Even a limit of zero keeps the newest segment.
        store.shrink_to(0).unwrap();
        assert_eq!(segment_files(dir.path()), after[after.len() - 1..]);
    }

    #[test]
    fn expired_blocks_go_and_their_segments_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Durability::Fsync).unwrap();
        store.segments.set_segment_bytes(4096);
        // Ten days, ten commits a day, two devices per commit.
        let mut seq = 0;
        for day in 0..10 {
            for k in 0..10 {
                seq += 1;
                let t0 = BASE + day * DAY + k * 100 * SECOND;
                let out = store
                    .write_batches(&[batch("d1", seq, t0), batch("d2", seq, t0)])
                    .unwrap();
                assert_eq!(out, vec![WriteOutcome::Stored; 2]);
            }
        }
        // One batch reaches across the cutoff: its block stays whole.
        let cutoff = BASE + 7 * DAY;
        seq += 1;
        store
            .write_batches(&[batch("d1", seq, cutoff - 10 * SECOND)])
            .unwrap();
        let before = segment_files(dir.path());
        assert!(before.len() > 5, "{before:?}");
        let total = store.batch_count(None).unwrap();

        let expired = store.expire(cutoff).unwrap();
        assert_eq!(
            (expired.blocks, expired.batches, expired.readings),
            (140, 140, 140 * 50)
        );
        assert_eq!(store.batch_count(None).unwrap(), total - 140);
        let after = segment_files(dir.path());
        let removed: Vec<&(String, u64)> = before.iter().filter(|f| !after.contains(f)).collect();
        assert_eq!(removed.len() as u64, expired.segments);
        assert!(expired.segments >= 3, "{expired:?}");
        assert_eq!(removed.iter().map(|f| f.1).sum::<u64>(), expired.bytes);
        // The newest segment is never removed.
        assert_eq!(after.last(), before.last());

        // Nothing before the cutoff but the block that reaches across it.
        let old = timestamps(&store, "d1", 0, cutoff - 1);
        assert_eq!(
            old,
            (0..10)
                .map(|i| cutoff - (10 - i) * SECOND)
                .collect::<Vec<_>>()
        );
        assert!(timestamps(&store, "d2", 0, cutoff - 1).is_empty());
        let recent = timestamps(&store, "d2", cutoff, i64::MAX);
        assert_eq!(recent.len(), 3 * 10 * 50);
        // The ledger stays: an expired batch sent again is a duplicate.
        assert_eq!(
            store.write_batches(&[batch("d2", 1, BASE)]).unwrap(),
            vec![WriteOutcome::Duplicate]
        );
        assert_eq!(store.expire(cutoff).unwrap(), crate::Expired::default());

        // Reopened, what is left reads back and appends go on.
        drop(store);
        let store = SqliteStore::open(dir.path(), Durability::Fsync).unwrap();
        assert_eq!(timestamps(&store, "d2", cutoff, i64::MAX), recent);
        assert_eq!(timestamps(&store, "d1", 0, cutoff - 1), old);
        store
            .write_batches(&[batch("d2", seq + 1, BASE + 11 * DAY)])
            .unwrap();
        assert_eq!(
            timestamps(&store, "d2", cutoff, i64::MAX).len(),
            recent.len() + 50
        );
    }
}
