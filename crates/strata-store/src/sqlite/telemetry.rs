//! [`TelemetryStore`] for SQLite: the exactly-once write path and queries.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{OptionalExtension, params};
use strata_proto::DeviceId;

use super::{SqliteStore, Writer};
use crate::error::{Context, Result};
use crate::{
    BatchWrite, Bucket, LatestReading, Point, RangeQuery, RangeResult, SeriesInfo, TelemetryStore,
    WriteOutcome, chunk,
};

impl TelemetryStore for SqliteStore {
    fn write_batches(&self, batches: &[BatchWrite]) -> Result<Vec<WriteOutcome>> {
        self.write(|w| {
            let result = write_in_transaction(w, batches);
            if result.is_err() {
                // The transaction rolled back: series ids created in it are gone.
                w.series.clear();
            }
            result
        })
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

    fn latest(&self, device: &DeviceId) -> Result<Vec<LatestReading>> {
        Ok(self
            .series(Some(device))?
            .into_iter()
            .filter_map(|s| s.latest)
            .collect())
    }

    fn range(&self, q: &RangeQuery) -> Result<RangeResult> {
        self.read(|conn| {
            let series_id: Option<i64> = conn
                .query_row(
                    "SELECT id FROM series WHERE device_id = ?1 AND signal = ?2",
                    params![q.device.as_str(), q.signal],
                    |r| r.get(0),
                )
                .optional()
                .context(|| format!("cannot look up series {}/{}", q.device, q.signal))?;
            let Some(series_id) = series_id else {
                return Ok(RangeResult::default());
            };
            let mut stmt = conn
                .prepare_cached(
                    "SELECT data FROM chunks WHERE series_id = ?1 AND t_max >= ?2 AND t_min <= ?3",
                )
                .context(|| "cannot query chunks".into())?;
            let mut rows = stmt
                .query(params![series_id, q.from_ns, q.to_ns])
                .context(|| format!("cannot query {}/{}", q.device, q.signal))?;
            let mut points = Vec::new();
            let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
            while let Some(row) = rows.next().context(|| "cannot read a chunk".into())? {
                let data = row.get_ref(0).context(|| "cannot read a chunk".into())?;
                let data = data
                    .as_blob()
                    .map_err(|e| crate::Error::Corrupt(e.to_string()))?;
                chunk::decode(data, |p| {
                    if p.ts_ns < q.from_ns || p.ts_ns > q.to_ns {
                        return;
                    }
                    match q.bucket_ns {
                        None => points.push(p),
                        Some(width) => add_to_bucket(&mut buckets, width, p),
                    }
                })?;
            }
            let mut result = RangeResult::default();
            if q.bucket_ns.is_some() {
                result.truncated = buckets.len() > q.limit;
                result.buckets = buckets
                    .into_values()
                    .take(q.limit)
                    .map(|mut b| {
                        b.avg /= b.count as f64;
                        b
                    })
                    .collect();
            } else {
                points.sort_by_key(|p: &Point| p.ts_ns);
                result.truncated = points.len() > q.limit;
                points.truncate(q.limit);
                result.points = points;
            }
            Ok(result)
        })
    }

    fn batch_count(&self, device: Option<&DeviceId>) -> Result<u64> {
        self.read(|conn| {
            conn.query_row(
                "SELECT count(*) FROM batches WHERE ?1 IS NULL OR device_id = ?1",
                params![device.map(|d| d.as_str())],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .context(|| "cannot count batches".into())
        })
    }
}

/// Accumulates `p` into its bucket; `avg` holds the running sum until the end.
fn add_to_bucket(buckets: &mut BTreeMap<i64, Bucket>, width: i64, p: Point) {
    let start = p.ts_ns.div_euclid(width) * width;
    let b = buckets.entry(start).or_insert(Bucket {
        start_ns: start,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        avg: 0.0,
        count: 0,
    });
    b.min = b.min.min(p.value);
    b.max = b.max.max(p.value);
    b.avg += p.value;
    b.count += 1;
}

fn write_in_transaction(w: &mut Writer, batches: &[BatchWrite]) -> Result<Vec<WriteOutcome>> {
    let tx = w
        .conn
        .transaction()
        .context(|| "cannot begin a write transaction".into())?;
    let mut outcomes = Vec::with_capacity(batches.len());
    // Latest reading per series over the whole transaction: one upsert each.
    let mut latest: HashMap<i64, (i64, f64, i32)> = HashMap::new();
    let mut buf = Vec::new();
    {
        let mut ledger = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO batches (device_id, stream, seq, received_ns, readings)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .context(|| "cannot prepare the batch ledger insert".into())?;
        let mut insert_chunk = tx
            .prepare_cached(
                "INSERT INTO chunks (series_id, t_min, t_max, n, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .context(|| "cannot prepare the chunk insert".into())?;
        for b in batches {
            let readings: usize = b.batch.signals.iter().map(|s| s.values.len()).sum();
            // SQLite integers are signed; a seq above i64::MAX keeps its bits.
            let seq = b.batch.seq as i64;
            let inserted = ledger
                .execute(params![
                    b.device.as_str(),
                    b.batch.stream,
                    seq,
                    b.received_ns,
                    readings as i64
                ])
                .context(|| {
                    format!(
                        "cannot record batch {}/{}#{}",
                        b.device, b.batch.stream, b.batch.seq
                    )
                })?;
            if inserted == 0 {
                outcomes.push(WriteOutcome::Duplicate);
                continue;
            }
            for s in &b.batch.signals {
                if s.values.is_empty() {
                    continue;
                }
                let series_id = series_id(&tx, &mut w.series, &b.device, &s.name, &s.unit)?;
                buf.clear();
                chunk::encode(&s.ts_ns, &s.values, &s.quality, &mut buf);
                let (t_min, t_max) = min_max(&s.ts_ns);
                insert_chunk
                    .execute(params![
                        series_id,
                        t_min,
                        t_max,
                        s.values.len() as i64,
                        &buf
                    ])
                    .context(|| format!("cannot store readings of {}/{}", b.device, s.name))?;
                let last = s
                    .ts_ns
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, t)| **t)
                    .map(|(i, _)| i)
                    .expect("non-empty");
                let candidate = (
                    s.ts_ns[last],
                    s.values[last],
                    s.quality.get(last).copied().unwrap_or(0),
                );
                latest
                    .entry(series_id)
                    .and_modify(|cur| {
                        if candidate.0 >= cur.0 {
                            *cur = candidate;
                        }
                    })
                    .or_insert(candidate);
            }
            outcomes.push(WriteOutcome::Stored);
        }
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO latest (series_id, ts_ns, value, quality) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (series_id) DO UPDATE SET
                    ts_ns = excluded.ts_ns, value = excluded.value, quality = excluded.quality
                 WHERE excluded.ts_ns >= latest.ts_ns",
            )
            .context(|| "cannot prepare the latest-value upsert".into())?;
        for (id, (ts, value, quality)) in latest {
            upsert
                .execute(params![id, ts, value, quality])
                .context(|| "cannot update latest values".into())?;
        }
    }
    tx.commit().context(|| "cannot commit telemetry".into())?;
    Ok(outcomes)
}

fn min_max(ts: &[i64]) -> (i64, i64) {
    ts.iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)))
}

fn series_id(
    tx: &rusqlite::Transaction<'_>,
    cache: &mut HashMap<String, HashMap<String, i64>>,
    device: &DeviceId,
    signal: &str,
    unit: &str,
) -> Result<i64> {
    // Two levels so that a hit allocates nothing.
    if let Some(&id) = cache.get(device.as_str()).and_then(|m| m.get(signal)) {
        return Ok(id);
    }
    tx.prepare_cached(
        "INSERT INTO series (device_id, signal, unit) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![device.as_str(), signal, unit]))
    .context(|| format!("cannot create series {device}/{signal}"))?;
    let id: i64 = tx
        .query_row(
            "SELECT id FROM series WHERE device_id = ?1 AND signal = ?2",
            params![device.as_str(), signal],
            |r| r.get(0),
        )
        .context(|| format!("cannot look up series {device}/{signal}"))?;
    cache
        .entry(device.as_str().to_owned())
        .or_default()
        .insert(signal.to_owned(), id);
    Ok(id)
}
