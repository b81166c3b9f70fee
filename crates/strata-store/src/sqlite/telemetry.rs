//! [`TelemetryStore`] for SQLite: the exactly-once write path and queries.
//!
//! A commit stores the batches of each stream as one block row
//! ([`crate::block`]) and records their seqs in the stream's ledger
//! ([`crate::seqset`]), which the writer keeps in memory for the streams it
//! has seen: a duplicate is recognised without touching the database.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rusqlite::params;
use strata_proto::{DeviceId, TelemetryBatch};

use super::{FastMap, SqliteStore, Writer};
use crate::block::{self, BlockBuilder, BlockEntry};
use crate::error::{Context, Result};
use crate::segment::{Appender, Place, Segments};
use crate::seqset::{IntervalChange, SeqSet};
use crate::{
    BatchWrite, Expired, LatestReading, Point, RangeQuery, RangeResult, SeriesInfo, TelemetryStore,
    WriteOutcome, blob,
};

impl TelemetryStore for SqliteStore {
    fn write_batches(&self, batches: &[BatchWrite]) -> Result<Vec<WriteOutcome>> {
        let (outcomes, commit) = self.write_batches_unsynced(batches)?;
        self.sync(commit)?;
        Ok(outcomes)
    }

    fn write_batches_unsynced(&self, batches: &[BatchWrite]) -> Result<(Vec<WriteOutcome>, u64)> {
        // Held until the transaction has committed: segment appends and
        // their rows go in the same order here and in any other process.
        let mut segments = self.segments.lock()?;
        let mark = segments.mark();
        let (result, commit) = self.write_unsynced(|w| {
            let result = write_in_transaction(w, &mut segments, batches);
            if result.is_err() {
                // The transaction rolled back: ids created in it are gone,
                // and so are the seqs it recorded, and no row points at
                // the blocks it appended.
                w.series.clear();
                w.streams.clear();
                w.ledgers.clear();
                if let Err(e) = segments.cut_back(mark) {
                    tracing::warn!("cannot drop the blocks of a failed commit: {e}");
                }
            }
            result
        });
        Ok((result?, commit))
    }

    fn sync(&self, commit: u64) -> Result<()> {
        self.sync_through(commit)
    }

    fn series(&self, device: Option<&DeviceId>) -> Result<Vec<SeriesInfo>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT s.device_id, s.signal, s.unit, l.ts_ns, l.value, l.quality
                     FROM series s LEFT JOIN latest l ON l.series_id = s.id
                     WHERE ?1 IS NULL OR s.device_id = ?1
                     ORDER BY s.device_id, s.signal",
                )
                .context(|| "cannot list series".into())?;
            let rows = stmt
                .query_map(params![device.map(|d| d.as_str())], |r| {
                    let device: String = r.get(0)?;
                    let signal: String = r.get(1)?;
                    let unit: String = r.get(2)?;
                    let ts: Option<i64> = r.get(3)?;
                    let latest = match ts {
                        Some(ts_ns) => Some(LatestReading {
                            signal: signal.clone(),
                            unit: unit.clone(),
                            ts_ns,
                            value: r.get(4)?,
                            quality: r.get(5)?,
                        }),
                        None => None,
                    };
                    Ok((device, signal, unit, latest))
                })
                .context(|| "cannot list series".into())?;
            let mut out = Vec::new();
            for row in rows {
                let (device, signal, unit, latest) =
                    row.context(|| "cannot read a series row".into())?;
                let device =
                    DeviceId::new(device).map_err(|e| crate::Error::Corrupt(e.to_string()))?;
                out.push(SeriesInfo {
                    device,
                    signal,
                    unit,
                    latest,
                });
            }
            Ok(out)
        })
    }

    fn range(&self, q: &RangeQuery) -> Result<RangeResult> {
        self.read(|conn| {
            // A signal the device never sent has nothing to find: answered
            // at once, not by reading every block of the device's history.
            let known = conn
                .prepare_cached("SELECT 1 FROM series WHERE device_id = ?1 AND signal = ?2")
                .and_then(|mut s| s.exists(params![q.device.as_str(), q.signal]))
                .context(|| format!("cannot look up {}/{}", q.device, q.signal))?;
            if !known {
                return Ok(crate::range::Collector::new(q).finish());
            }
            let last_end = latest_end(conn, &q.device, q.to_ns)?;
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT b.t_min, {BLOCK_BYTES} FROM streams s JOIN blocks b ON b.stream_id = s.id
                     WHERE s.device_id = ?1 AND b.t_max BETWEEN ?2 AND ?4 AND b.t_min <= ?3
                       AND b.readings > 0
                     ORDER BY b.t_min"
                ))
                .context(|| "cannot query blocks".into())?;
            let mut rows = stmt
                .query(params![q.device.as_str(), q.from_ns, q.to_ns, last_end])
                .context(|| format!("cannot query {}/{}", q.device, q.signal))?;
            let mut answer = crate::range::Collector::new(q);
            while let Some(row) = rows.next().context(|| "cannot read a block".into())? {
                // Blocks come in order of their first reading: once the
                // answer is full before one, the rest cannot change it.
                let t_min: i64 = row.get(0).context(|| "cannot read a block".into())?;
                if answer.full_before(t_min) {
                    break;
                }
                let data = block_bytes(&self.segments, row, 1)?;
                block::for_each_entry(&data, |e| {
                    if e.readings == 0 || e.t_max < q.from_ns || e.t_min > q.to_ns {
                        return Ok(());
                    }
                    blob::signal_points(e.data, &q.signal, |p| answer.add(p))
                })?;
            }
            Ok(answer.finish())
        })
    }

    fn expire(&self, before_ns: i64) -> Result<Expired> {
        self.expire_before(before_ns)
    }

    fn shrink_to(&self, max_bytes: u64) -> Result<Expired> {
        self.shrink_to_bytes(max_bytes)
    }

    fn replay(
        &self,
        device: &DeviceId,
        stream: Option<&str>,
        from_ns: i64,
        to_ns: i64,
        each: &mut dyn FnMut(TelemetryBatch) -> Result<()>,
    ) -> Result<()> {
        self.read(|conn| {
            let last_end = latest_end(conn, device, to_ns)?;
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT s.name, b.t_min, {BLOCK_BYTES} FROM streams s JOIN blocks b ON b.stream_id = s.id
                     WHERE s.device_id = ?1 AND (?2 IS NULL OR s.name = ?2)
                       AND b.t_max BETWEEN ?3 AND ?5 AND b.t_min <= ?4
                       AND b.readings > 0
                     ORDER BY b.t_min"
                ))
                .context(|| "cannot query blocks".into())?;
            let mut rows = stmt
                .query(params![device.as_str(), stream, from_ns, to_ns, last_end])
                .context(|| format!("cannot replay {device}"))?;
            // Blocks come in order of their first reading, and no batch of a
            // later block starts before that block does: a batch can be
            // handed on once the next block starts after it.
            let mut ready: BinaryHeap<Reverse<ReplayItem>> = BinaryHeap::new();
            let mut emit_until = |ready: &mut BinaryHeap<Reverse<ReplayItem>>, bound: i64| -> Result<()> {
                while ready.peek().is_some_and(|Reverse(b)| b.t_min <= bound) {
                    let Reverse(b) = ready.pop().expect("peeked");
                    each(blob::decode_batch(&b.stream, b.seq, &b.data)?)?;
                }
                Ok(())
            };
            while let Some(row) = rows.next().context(|| "cannot read a block".into())? {
                let name: String = row.get(0).context(|| "cannot read a block".into())?;
                let block_start: i64 = row.get(1).context(|| "cannot read a block".into())?;
                emit_until(&mut ready, block_start.saturating_sub(1))?;
                let data = block_bytes(&self.segments, row, 2)?;
                block::for_each_entry(&data, |e| {
                    if e.readings > 0 && e.t_max >= from_ns && e.t_min <= to_ns {
                        ready.push(Reverse(ReplayItem {
                            t_min: e.t_min,
                            stream: name.clone(),
                            seq: e.seq,
                            data: e.data.to_vec(),
                        }));
                    }
                    Ok(())
                })?;
            }
            emit_until(&mut ready, i64::MAX)
        })
    }

    fn batch_count(&self, device: Option<&DeviceId>) -> Result<u64> {
        self.read(|conn| {
            conn.query_row(
                "SELECT coalesce(sum(b.batches), 0) FROM blocks b JOIN streams s ON s.id = b.stream_id
                 WHERE ?1 IS NULL OR s.device_id = ?1",
                params![device.map(|d| d.as_str())],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .context(|| "cannot count batches".into())
        })
    }
}

/// A batch waiting for its turn in [`TelemetryStore::replay`]: ordered by
/// first reading, then stream, then seq.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct ReplayItem {
    t_min: i64,
    stream: String,
    seq: u64,
    data: Vec<u8>,
}

/// What the writer keeps about a stream it has written to: its id, its
/// longest block's span (`max_span_ns`, which range queries bound their
/// search with), and the ids of the series its batches carried (a
/// handful, so a batch finds each of its signals' ids by name without
/// hashing).
#[derive(Debug, Clone)]
pub(super) struct StreamIds {
    id: i64,
    max_span: i64,
    series: Vec<(String, i64)>,
}

fn write_in_transaction(
    w: &mut Writer,
    segments: &mut Appender<'_>,
    batches: &[BatchWrite],
) -> Result<Vec<WriteOutcome>> {
    let tx = w
        .conn
        .transaction()
        .context(|| "cannot begin a write transaction".into())?;
    let mut outcomes = Vec::with_capacity(batches.len());
    // Latest reading per series over the whole transaction: one upsert each.
    let mut latest: FastMap<i64, Point> = FastMap::default();
    // One block per stream, in order of first appearance, with the
    // stream's device and name.
    let mut blocks: Vec<(i64, BlockBuilder, i64, &str, &str)> = Vec::new();
    let mut block_of: FastMap<i64, usize> = FastMap::default();
    for b in batches {
        let e = &b.batch;
        let known = w
            .streams
            .get_mut(b.device.as_str())
            .and_then(|m| m.get_mut(e.stream.as_str()));
        let stream = match known {
            Some(s) => s,
            None => {
                let (id, max_span) = stream_id(&tx, &b.device, &e.stream)?;
                w.streams
                    .entry(b.device.as_str().to_owned())
                    .or_default()
                    .entry(e.stream.clone())
                    .or_insert(StreamIds {
                        id,
                        max_span,
                        series: Vec::new(),
                    })
            }
        };
        let stream_id = stream.id;
        let ledger = match w.ledgers.entry(stream_id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(load_ledger(&tx, stream_id)?),
        };
        if !ledger.insert(e.seq) {
            outcomes.push(WriteOutcome::Duplicate);
            continue;
        }
        let at = *block_of.entry(stream_id).or_insert_with(|| {
            blocks.push((
                stream_id,
                BlockBuilder::default(),
                b.received_ns,
                b.device.as_str(),
                e.stream.as_str(),
            ));
            blocks.len() - 1
        });
        let (_, block, received, _, _) = &mut blocks[at];
        *received = (*received).max(b.received_ns);
        block.push(BlockEntry {
            seq: e.seq,
            t_min: e.t_min,
            t_max: e.t_max,
            readings: e.readings,
            data: &e.data,
        });
        for (name, unit, last) in e.signals() {
            let series_id = match stream.series.iter().find(|(n, _)| n == name) {
                Some(&(_, id)) => id,
                None => {
                    let id = series_id(&tx, &mut w.series, &b.device, name, unit)?;
                    stream.series.push((name.to_owned(), id));
                    id
                }
            };
            latest
                .entry(series_id)
                .and_modify(|cur| {
                    if last.ts_ns >= cur.ts_ns {
                        *cur = last;
                    }
                })
                .or_insert(last);
        }
        outcomes.push(WriteOutcome::Stored);
    }
    {
        let mut insert = tx
            .prepare_cached(INSERT_BLOCK)
            .context(|| "cannot prepare the block insert".into())?;
        let mut upsert_interval = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO stream_seqs (stream_id, lo, hi) VALUES (?1, ?2, ?3)",
            )
            .context(|| "cannot prepare the ledger update".into())?;
        let mut remove_interval = tx
            .prepare_cached("DELETE FROM stream_seqs WHERE stream_id = ?1 AND lo = ?2")
            .context(|| "cannot prepare the ledger update".into())?;
        let mut widen = tx
            .prepare_cached("UPDATE streams SET max_span_ns = max(max_span_ns, ?2) WHERE id = ?1")
            .context(|| "cannot prepare the stream span update".into())?;
        // The blocks' bytes go to the segment, on disk before any row
        // points at them (segment.rs).
        let bytes: Vec<&[u8]> = blocks.iter().map(|(_, block, ..)| block.data()).collect();
        let places = if bytes.is_empty() {
            Vec::new()
        } else {
            let places = segments.append(&bytes)?;
            segments.sync()?;
            places
        };
        for ((stream_id, block, received, device, stream), place) in blocks.iter().zip(places) {
            insert_block(&mut insert, *stream_id, block, *received, place).context(|| {
                format!(
                    "cannot store {} batches of stream {stream_id}",
                    block.batches()
                )
            })?;
            let (t_min, t_max) = block.time_range();
            let span = t_max.saturating_sub(t_min);
            let known = w
                .streams
                .get_mut(*device)
                .and_then(|m| m.get_mut(*stream))
                .expect("cached above");
            if span > known.max_span {
                widen
                    .execute(params![stream_id, span])
                    .context(|| format!("cannot record the span of stream {stream_id}"))?;
                known.max_span = span;
            }
            let ledger = w.ledgers.get_mut(stream_id).expect("loaded above");
            // SQLite integers are signed; a seq above i64::MAX keeps its bits.
            for change in ledger.take_changes() {
                match change {
                    IntervalChange::Upsert { lo, hi } => {
                        upsert_interval.execute(params![stream_id, lo as i64, hi as i64])
                    }
                    IntervalChange::Remove { lo } => {
                        remove_interval.execute(params![stream_id, lo as i64])
                    }
                }
                .context(|| format!("cannot update the ledger of stream {stream_id}"))?;
            }
        }
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO latest (series_id, ts_ns, value, quality) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (series_id) DO UPDATE SET
                    ts_ns = excluded.ts_ns, value = excluded.value, quality = excluded.quality
                 WHERE excluded.ts_ns >= latest.ts_ns",
            )
            .context(|| "cannot prepare the latest-value upsert".into())?;
        for (id, p) in latest {
            upsert
                .execute(params![id, p.ts_ns, p.value, p.quality])
                .context(|| "cannot update latest values".into())?;
        }
    }
    tx.commit().context(|| "cannot commit telemetry".into())?;
    Ok(outcomes)
}

/// Stores one block's row, its bytes being at `place` in a segment;
/// `stmt` is prepared from [`INSERT_BLOCK`].
fn insert_block(
    stmt: &mut rusqlite::CachedStatement<'_>,
    stream_id: i64,
    block: &BlockBuilder,
    received_ns: i64,
    place: Place,
) -> rusqlite::Result<usize> {
    let (t_min, t_max) = block.time_range();
    stmt.execute(params![
        stream_id,
        t_min,
        t_max,
        block.batches() as i64,
        block.readings() as i64,
        received_ns,
        &[] as &[u8],
        place.segment,
        place.offset as i64,
        place.length as i64,
    ])
}

/// The statement [`insert_block`] runs.
const INSERT_BLOCK: &str = "INSERT INTO blocks
    (stream_id, t_min, t_max, batches, readings, received_ns, data, segment, seg_offset, seg_length)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// The latest last reading a block of `device` that overlaps a window
/// ending at `to_ns` can have: `to_ns` plus the longest span of a block
/// of its streams (`max_span_ns`), so that a query of an old window reads
/// the rows of the blocks about it, not of every later one. One block
/// that spans ages (a gateway stamping 1970 before its clock was set)
/// only takes its device's queries back to reading every later block.
fn latest_end(conn: &rusqlite::Connection, device: &DeviceId, to_ns: i64) -> Result<i64> {
    let span: i64 = conn
        .prepare_cached("SELECT coalesce(max(max_span_ns), 0) FROM streams WHERE device_id = ?1")
        .and_then(|mut stmt| stmt.query_row(params![device.as_str()], |r| r.get(0)))
        .context(|| format!("cannot read the block spans of {device}"))?;
    // A span that did not fit in an i64 is kept as i64::MAX: no bound.
    Ok(if span == i64::MAX {
        i64::MAX
    } else {
        to_ns.saturating_add(span)
    })
}

/// The columns that say where a block's bytes are, after the block's
/// other columns in a query: `data, segment, seg_offset, seg_length`.
const BLOCK_BYTES: &str = "b.data, b.segment, b.seg_offset, b.seg_length";

/// A block's bytes from a row whose columns from `at` on are
/// [`BLOCK_BYTES`]: in the row, or read from its segment.
fn block_bytes<'r>(
    segments: &Segments,
    row: &'r rusqlite::Row<'_>,
    at: usize,
) -> Result<std::borrow::Cow<'r, [u8]>> {
    let cannot = |e: rusqlite::Error| crate::Error::Corrupt(format!("a block row: {e}"));
    let segment: Option<u32> = row.get(at + 1).map_err(cannot)?;
    match segment {
        None => {
            let data = row.get_ref(at).map_err(cannot)?;
            let data = data
                .as_blob()
                .map_err(|e| crate::Error::Corrupt(e.to_string()))?;
            Ok(std::borrow::Cow::Borrowed(data))
        }
        Some(segment) => {
            let offset: i64 = row.get(at + 2).map_err(cannot)?;
            let length: i64 = row.get(at + 3).map_err(cannot)?;
            Ok(std::borrow::Cow::Owned(segments.read(Place {
                segment,
                offset: offset as u64,
                length: length as u64,
            })?))
        }
    }
}

/// A stream's ledger as stored.
fn load_ledger(tx: &rusqlite::Transaction<'_>, stream_id: i64) -> Result<SeqSet> {
    let mut stmt = tx
        .prepare_cached("SELECT lo, hi FROM stream_seqs WHERE stream_id = ?1")
        .context(|| "cannot prepare the ledger query".into())?;
    let rows = stmt
        .query_map(params![stream_id], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .context(|| format!("cannot read the ledger of stream {stream_id}"))?;
    let intervals = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .context(|| format!("cannot read the ledger of stream {stream_id}"))?;
    Ok(SeqSet::from_intervals(intervals))
}

/// The id of a stream, created in `tx` if new.
fn stream_id(tx: &rusqlite::Transaction<'_>, device: &DeviceId, name: &str) -> Result<(i64, i64)> {
    tx.execute(
        "INSERT INTO streams (device_id, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![device.as_str(), name],
    )
    .context(|| format!("cannot create stream {device}/{name}"))?;
    tx.query_row(
        "SELECT id, max_span_ns FROM streams WHERE device_id = ?1 AND name = ?2",
        params![device.as_str(), name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .context(|| format!("cannot look up stream {device}/{name}"))
}

/// The id of a series (with `unit`, the unit first reported), from the
/// cache or created in `tx`.
fn series_id(
    tx: &rusqlite::Transaction<'_>,
    cache: &mut FastMap<String, FastMap<String, i64>>,
    device: &DeviceId,
    name: &str,
    unit: &str,
) -> Result<i64> {
    // Two levels so that a hit allocates nothing.
    if let Some(&id) = cache.get(device.as_str()).and_then(|m| m.get(name)) {
        return Ok(id);
    }
    tx.execute(
        "INSERT INTO series (device_id, signal, unit) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![device.as_str(), name, unit],
    )
    .context(|| format!("cannot create series {device}/{name}"))?;
    let id: i64 = tx
        .query_row(
            "SELECT id FROM series WHERE device_id = ?1 AND signal = ?2",
            params![device.as_str(), name],
            |r| r.get(0),
        )
        .context(|| format!("cannot look up series {device}/{name}"))?;
    cache
        .entry(device.as_str().to_owned())
        .or_default()
        .insert(name.to_owned(), id);
    Ok(id)
}
