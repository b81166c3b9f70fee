//! [`TelemetryStore`] for SQLite: the exactly-once write path and queries.

use std::collections::{BTreeMap, HashMap};

use rusqlite::params;
use strata_proto::{DeviceId, TelemetryBatch};

use super::{SqliteStore, Writer};
use crate::error::{Context, Result};
use crate::{
    BatchWrite, Bucket, LatestReading, Point, RangeQuery, RangeResult, SeriesInfo, TelemetryStore,
    WriteOutcome, blob,
};

impl TelemetryStore for SqliteStore {
    fn write_batches(&self, batches: &[BatchWrite]) -> Result<Vec<WriteOutcome>> {
        self.write(|w| {
            let result = write_in_transaction(w, batches);
            if result.is_err() {
                // The transaction rolled back: ids created in it are gone.
                w.series.clear();
                w.streams.clear();
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
            let mut stmt = conn
                .prepare_cached(
                    "SELECT b.data FROM streams s JOIN batches b ON b.stream_id = s.id
                     WHERE s.device_id = ?1 AND b.t_max >= ?2 AND b.t_min <= ?3 AND b.readings > 0",
                )
                .context(|| "cannot query batches".into())?;
            let mut rows = stmt
                .query(params![q.device.as_str(), q.from_ns, q.to_ns])
                .context(|| format!("cannot query {}/{}", q.device, q.signal))?;
            let mut points = Vec::new();
            let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
            while let Some(row) = rows.next().context(|| "cannot read a batch".into())? {
                let data = row.get_ref(0).context(|| "cannot read a batch".into())?;
                let data = data
                    .as_blob()
                    .map_err(|e| crate::Error::Corrupt(e.to_string()))?;
                blob::signal_points(data, &q.signal, |p| {
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

    fn replay(
        &self,
        device: &DeviceId,
        stream: Option<&str>,
        from_ns: i64,
        to_ns: i64,
        each: &mut dyn FnMut(TelemetryBatch) -> Result<()>,
    ) -> Result<()> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT s.name, b.seq, b.data FROM streams s JOIN batches b ON b.stream_id = s.id
                     WHERE s.device_id = ?1 AND (?2 IS NULL OR s.name = ?2)
                       AND b.t_max >= ?3 AND b.t_min <= ?4 AND b.readings > 0
                     ORDER BY b.t_min, s.name, b.seq",
                )
                .context(|| "cannot query batches".into())?;
            let mut rows = stmt
                .query(params![device.as_str(), stream, from_ns, to_ns])
                .context(|| format!("cannot replay {device}"))?;
            while let Some(row) = rows.next().context(|| "cannot read a batch".into())? {
                let name: String = row.get(0).context(|| "cannot read a batch".into())?;
                let seq: i64 = row.get(1).context(|| "cannot read a batch".into())?;
                let data = row.get_ref(2).context(|| "cannot read a batch".into())?;
                let data = data
                    .as_blob()
                    .map_err(|e| crate::Error::Corrupt(e.to_string()))?;
                each(blob::decode_batch(&name, seq as u64, data)?)?;
            }
            Ok(())
        })
    }

    fn batch_count(&self, device: Option<&DeviceId>) -> Result<u64> {
        self.read(|conn| {
            conn.query_row(
                "SELECT count(*) FROM batches b JOIN streams s ON s.id = b.stream_id
                 WHERE ?1 IS NULL OR s.device_id = ?1",
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
    // In i128: near i64::MIN the bucket start would overflow i64.
    let start = (i128::from(p.ts_ns).div_euclid(i128::from(width)) * i128::from(width))
        .max(i128::from(i64::MIN)) as i64;
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
    let mut latest: HashMap<i64, Point> = HashMap::new();
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO batches (stream_id, seq, t_min, t_max, readings, received_ns, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .context(|| "cannot prepare the batch insert".into())?;
        for b in batches {
            let e = &b.batch;
            let stream_id = cached_id(&tx, &mut w.streams, &b.device, &e.stream, Kind::Stream)?;
            // SQLite integers are signed; a seq above i64::MAX keeps its bits.
            let inserted = insert
                .execute(params![
                    stream_id,
                    e.seq as i64,
                    e.t_min,
                    e.t_max,
                    e.readings as i64,
                    b.received_ns,
                    &e.data
                ])
                .context(|| format!("cannot store batch {}/{}#{}", b.device, e.stream, e.seq))?;
            if inserted == 0 {
                outcomes.push(WriteOutcome::Duplicate);
                continue;
            }
            for s in &e.signals {
                let series_id = cached_id(
                    &tx,
                    &mut w.series,
                    &b.device,
                    &s.name,
                    Kind::Series(&s.unit),
                )?;
                latest
                    .entry(series_id)
                    .and_modify(|cur| {
                        if s.last.ts_ns >= cur.ts_ns {
                            *cur = s.last;
                        }
                    })
                    .or_insert(s.last);
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
        for (id, p) in latest {
            upsert
                .execute(params![id, p.ts_ns, p.value, p.quality])
                .context(|| "cannot update latest values".into())?;
        }
    }
    tx.commit().context(|| "cannot commit telemetry".into())?;
    Ok(outcomes)
}

/// Which id table [`cached_id`] works on.
enum Kind<'a> {
    /// `streams (device_id, name)`.
    Stream,
    /// `series (device_id, signal, unit)`, with the unit first reported.
    Series(&'a str),
}

/// The id of a stream or series, from the cache or created in `tx`.
fn cached_id(
    tx: &rusqlite::Transaction<'_>,
    cache: &mut HashMap<String, HashMap<String, i64>>,
    device: &DeviceId,
    name: &str,
    kind: Kind<'_>,
) -> Result<i64> {
    // Two levels so that a hit allocates nothing.
    if let Some(&id) = cache.get(device.as_str()).and_then(|m| m.get(name)) {
        return Ok(id);
    }
    let id: i64 = match kind {
        Kind::Stream => {
            tx.execute(
                "INSERT INTO streams (device_id, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![device.as_str(), name],
            )
            .context(|| format!("cannot create stream {device}/{name}"))?;
            tx.query_row(
                "SELECT id FROM streams WHERE device_id = ?1 AND name = ?2",
                params![device.as_str(), name],
                |r| r.get(0),
            )
            .context(|| format!("cannot look up stream {device}/{name}"))?
        }
        Kind::Series(unit) => {
            tx.execute(
                "INSERT INTO series (device_id, signal, unit) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![device.as_str(), name, unit],
            )
            .context(|| format!("cannot create series {device}/{name}"))?;
            tx.query_row(
                "SELECT id FROM series WHERE device_id = ?1 AND signal = ?2",
                params![device.as_str(), name],
                |r| r.get(0),
            )
            .context(|| format!("cannot look up series {device}/{name}"))?
        }
    };
    cache
        .entry(device.as_str().to_owned())
        .or_default()
        .insert(name.to_owned(), id);
    Ok(id)
}
