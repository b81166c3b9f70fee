//! Training and evaluation datasets built from stored telemetry by
//! replaying it through the edge's own pipeline (`strata-pipeline`), so a
//! model is trained and backtested on exactly the features a gateway
//! computes. Each row is one feature vector; its target is the newest
//! reading of the target signal (e.g. the ground truth `label.rul_h`)
//! before the vector's window ended, or, with `label_lag_ms`, the late
//! label (`POST /api/v1/labels`, e.g. a maintenance record) that the live
//! accuracy would join to it.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use strata_pipeline::{Output, Pipeline, PipelineConfig};
use strata_proto::DeviceId;
use strata_store::{Label, LabelStore, TelemetryStore};

use crate::error::{Error, Result};

/// Where a dataset comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// The devices whose telemetry is used.
    pub devices: Vec<String>,
    /// Start of the window, ns (0: from the first reading).
    #[serde(default)]
    pub from_ns: i64,
    /// End of the window, ns, not included (0: up to now). Only rows
    /// (feature vectors) stamped in `from_ns..to_ns` are kept, though the
    /// store replays whole batches that overlap it: a training window
    /// and the evaluation window after it share no row.
    #[serde(default)]
    pub to_ns: i64,
    /// Only this stream of each device (all streams when absent).
    #[serde(default)]
    pub stream: Option<String>,
    /// The edge pipeline that computes the features (the `[pipeline]`
    /// table of an agent config, as JSON).
    #[schema(value_type = Object)]
    pub pipeline: PipelineConfig,
    /// The pipeline's feature vector the model reads.
    pub vector: String,
    /// The signal to predict (e.g. `label.rul_h`).
    pub target: String,
    /// Take the targets from the late labels of `target` instead of a
    /// signal: each label goes with the latest vector at most this many
    /// milliseconds before it, as the live accuracy joins labels to
    /// predictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_lag_ms: Option<u64>,
    /// The most rows kept. Past it the rows are thinned evenly (every
    /// second kept, then every fourth, ...), so a long window of a large
    /// fleet still fits in the hub's memory. Left out of the JSON at its default, so that a replica of an older
    /// release (during a rolling upgrade) still reads the spec.
    #[serde(default = "d_max_rows", skip_serializing_if = "is_d_max_rows")]
    pub max_rows: u64,
}

fn d_max_rows() -> u64 {
    2_000_000
}

fn is_d_max_rows(n: &u64) -> bool {
    *n == d_max_rows()
}

/// A dataset: one row per feature vector that had a target.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Feature names, in column order.
    pub features: Vec<String>,
    /// Rows laid end to end, `features.len()` values each.
    pub rows: Vec<f32>,
    /// Target per row.
    pub target: Vec<f32>,
    /// Vector time per row, ns.
    pub ts_ns: Vec<i64>,
    /// Index into `devices` per row.
    pub device: Vec<u32>,
    /// The devices that gave rows.
    pub devices: Vec<String>,
    /// Vectors left out for want of a target reading before them.
    pub unlabelled: u64,
    /// One labelled row in this many is kept (1: all; more when the
    /// spec's `max_rows` was reached).
    pub kept_every: u64,
    /// The pipeline's longest window (and resampling interval), ns: rows
    /// closer in time than this were computed from some of the same
    /// readings.
    pub window_ns: i64,
}

/// A dataset's rows split in time ([`Dataset::split_by_time`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSplit {
    /// Rows to train on.
    pub train: Vec<usize>,
    /// Rows held out, later than every training row of their device.
    pub holdout: Vec<usize>,
    /// Rows in neither: computed from readings a held-out row of the same
    /// device was computed from too.
    pub purged: usize,
}

impl Dataset {
    /// Rows in the dataset.
    pub fn len(&self) -> usize {
        self.target.len()
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }

    /// One row's features.
    pub fn row(&self, i: usize) -> &[f32] {
        let w = self.features.len();
        &self.rows[i * w..(i + 1) * w]
    }

    /// Writes the dataset as CSV (`ts_ns,device,<features...>,target`),
    /// the format external trainers read; returns its SHA-256 in hex.
    pub fn write_csv(&self, out: impl std::io::Write) -> std::io::Result<String> {
        let mut hashing = HashingWriter {
            inner: std::io::BufWriter::new(out),
            hash: Sha256::new(),
        };
        let mut header = vec!["ts_ns".to_owned(), "device".to_owned()];
        header.extend(self.features.iter().cloned());
        header.push("target".to_owned());
        writeln!(hashing, "{}", header.join(","))?;
        for i in 0..self.len() {
            write!(
                hashing,
                "{},{}",
                self.ts_ns[i], self.devices[self.device[i] as usize]
            )?;
            for v in self.row(i) {
                write!(hashing, ",{v}")?;
            }
            writeln!(hashing, ",{}", self.target[i])?;
        }
        hashing.inner.flush()?;
        Ok(strata_ota::hex(&hashing.hash.finalize()))
    }

    /// The SHA-256 of the CSV form, without writing it anywhere.
    pub fn digest(&self) -> String {
        self.write_csv(std::io::sink())
            .expect("writing to a sink cannot fail")
    }

    /// Splits rows in time: for each device, its last `holdout` share of
    /// rows is held out, so the model is judged on data later than
    /// anything it saw. Windows overlap (a 5 s window every second), so
    /// the training rows less than one longest window before a device's
    /// first held-out row, computed partly from the same readings, are
    /// purged: kept, the hold-out would score the model on what it has
    /// seen.
    pub fn split_by_time(&self, holdout: f64) -> TimeSplit {
        let mut split = TimeSplit {
            train: Vec::new(),
            holdout: Vec::new(),
            purged: 0,
        };
        for d in 0..self.devices.len() as u32 {
            let mut idx: Vec<usize> = (0..self.len()).filter(|&i| self.device[i] == d).collect();
            idx.sort_by_key(|&i| self.ts_ns[i]);
            let cut = idx.len() - ((idx.len() as f64 * holdout).round() as usize).min(idx.len());
            let (train, held) = idx.split_at(cut);
            // A row's window is `(ts - window, ts]`.
            let kept = match held.first() {
                Some(&first) => {
                    let clear = self.ts_ns[first].saturating_sub(self.window_ns);
                    train.partition_point(|&i| self.ts_ns[i] <= clear)
                }
                None => train.len(),
            };
            split.train.extend_from_slice(&train[..kept]);
            split.purged += train.len() - kept;
            split.holdout.extend_from_slice(held);
        }
        split
    }

    /// Keeps the rows at even positions, in place.
    fn keep_every_other(&mut self) {
        let w = self.features.len();
        let kept = self.len().div_ceil(2);
        for k in 0..kept {
            let i = 2 * k;
            self.rows.copy_within(i * w..(i + 1) * w, k * w);
            self.target[k] = self.target[i];
            self.ts_ns[k] = self.ts_ns[i];
            self.device[k] = self.device[i];
        }
        self.rows.truncate(kept * w);
        self.target.truncate(kept);
        self.ts_ns.truncate(kept);
        self.device.truncate(kept);
        self.kept_every *= 2;
    }

    /// The rows at `idx`, as (features laid end to end, targets).
    pub fn take(&self, idx: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let mut rows = Vec::with_capacity(idx.len() * self.features.len());
        let mut target = Vec::with_capacity(idx.len());
        for &i in idx {
            rows.extend_from_slice(self.row(i));
            target.push(self.target[i]);
        }
        (rows, target)
    }
}

struct HashingWriter<W: std::io::Write> {
    inner: W,
    hash: Sha256,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Replays each device's stored telemetry through the pipeline and
/// collects labelled rows (the targets from `labels` when the spec says
/// so). `progress(done, total)` is called per device; an error from it
/// stops the build with that error (a cancelled job).
pub fn build(
    store: &dyn TelemetryStore,
    labels: &dyn LabelStore,
    spec: &DatasetSpec,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<Dataset> {
    let features = vector_features(&spec.pipeline, &spec.vector)?;
    if spec.devices.is_empty() {
        return Err(Error::BadRequest("the dataset names no devices".into()));
    }
    let to_ns = if spec.to_ns == 0 {
        i64::MAX
    } else {
        spec.to_ns
    };
    let mut ds = Dataset {
        features,
        kept_every: 1,
        window_ns: overlap_ns(&spec.pipeline),
        ..Dataset::default()
    };
    let max_rows = usize::try_from(spec.max_rows.max(1)).unwrap_or(usize::MAX);
    // Labelled rows seen, kept or not: rows `k * kept_every` are kept.
    let mut seen = 0u64;
    let unique: BTreeSet<&String> = spec.devices.iter().collect();
    for (n, device) in unique.iter().enumerate() {
        let id = DeviceId::new(device.as_str()).map_err(|e| Error::BadRequest(e.to_string()))?;
        let index = ds.devices.len() as u32;
        let mut unlabelled = 0;
        let device_labels = match spec.label_lag_ns() {
            Some(lag) => Some(labels.labels(
                &spec.target,
                Some(&id),
                spec.from_ns,
                to_ns.saturating_add(lag),
            )?),
            None => None,
        };
        replay_device(
            store,
            spec,
            &id,
            (spec.from_ns, to_ns),
            device_labels.as_deref(),
            &mut |ts, row, target| {
                seen += 1;
                if !(seen - 1).is_multiple_of(ds.kept_every) {
                    return;
                }
                ds.rows.extend_from_slice(row);
                ds.target.push(target);
                ds.ts_ns.push(ts);
                ds.device.push(index);
                if ds.len() > max_rows {
                    ds.keep_every_other();
                }
            },
            &mut unlabelled,
        )?;
        ds.unlabelled += unlabelled;
        // Rows of this device were kept (thinning may have taken some
        // back, so the count alone does not tell).
        if ds.device.last() == Some(&index) {
            ds.devices.push(device.to_string());
        }
        progress(n + 1, unique.len())?;
    }
    Ok(ds)
}

/// The feature names of a pipeline's vector (a clear error when the
/// pipeline is invalid or has no such vector).
pub fn vector_features(pipeline: &PipelineConfig, vector: &str) -> Result<Vec<String>> {
    let p = Pipeline::new(pipeline).map_err(|e| Error::BadRequest(format!("pipeline: {e}")))?;
    let schema = p.vector_schema(vector).ok_or_else(|| {
        Error::BadRequest(format!("the pipeline has no feature vector {vector:?}"))
    })?;
    Ok(schema.features().to_vec())
}

/// The pipeline to replay stored telemetry through: the agent's windows
/// and vectors without its per-signal transforms. An agent stores what its
/// transforms made (scaled, converted, renamed, resampled), so applying
/// them again would scale twice and find no signal under a new name.
pub fn as_stored(agent: &PipelineConfig) -> PipelineConfig {
    PipelineConfig {
        unlisted: strata_pipeline::Unlisted::Pass,
        signals: Vec::new(),
        ..agent.clone()
    }
}

/// The longest window of a pipeline, ns: how far before a dataset's start
/// the replay begins, so its first rows are computed from whole windows
/// as a gateway running all along computed them.
pub fn warm_up_ns(pipeline: &PipelineConfig) -> i64 {
    let longest_ms = pipeline
        .windows
        .iter()
        .map(|w| w.size_ms)
        .max()
        .unwrap_or(0);
    ms_to_ns(longest_ms)
}

/// Milliseconds of the config in ns, saturating.
fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

/// How far apart two rows must be to share no reading: the longest
/// window, plus the longest resampling interval (a resampled reading is
/// stamped at its interval's start, and holds readings up to its end).
fn overlap_ns(pipeline: &PipelineConfig) -> i64 {
    let resample_ms = pipeline
        .signals
        .iter()
        .filter_map(|s| s.resample_ms)
        .max()
        .unwrap_or(0);
    warm_up_ns(pipeline).saturating_add(ms_to_ns(resample_ms))
}

impl DatasetSpec {
    /// `label_lag_ms` in ns, when the targets are labels.
    fn label_lag_ns(&self) -> Option<i64> {
        self.label_lag_ms.map(ms_to_ns)
    }
}

/// Replays one device: calls `row(ts_ns, features, target)` for every
/// vector stamped in `from_ns..to_ns` that has a target: the newest
/// reading of the target signal before it, or with `labels` (the device's
/// labels of the target, by time) the label joined to it. The replay
/// starts one longest window before `from_ns`, so no row is computed from
/// a window only partly filled.
pub fn replay_device(
    store: &dyn TelemetryStore,
    spec: &DatasetSpec,
    device: &DeviceId,
    (from_ns, to_ns): (i64, i64),
    labels: Option<&[Label]>,
    row: &mut dyn FnMut(i64, &[f32], f32),
    unlabelled: &mut u64,
) -> Result<()> {
    let mut pipeline = Pipeline::new(&as_stored(&spec.pipeline))
        .map_err(|e| Error::BadRequest(format!("pipeline: {e}")))?;
    let mut out = Output::new();
    // Target readings not yet matched to a vector, oldest first.
    let mut targets: VecDeque<(i64, f64)> = VecDeque::new();
    let lag = spec.label_lag_ns().unwrap_or(0);
    let mut join = labels.map(|labels| LabelJoin::new(labels, lag));
    let mut emit = |out: &mut Output, targets: &mut VecDeque<(i64, f64)>| {
        for v in out.take_vectors() {
            if v.name.as_ref() != spec.vector {
                continue;
            }
            let in_window = (from_ns..to_ns).contains(&v.ts_ns);
            if let Some(join) = &mut join {
                // A vector past the window still comes between a label and
                // the vectors before it.
                join.vector(v.ts_ns, &v.values, in_window, row, unlabelled);
                continue;
            }
            if !in_window {
                continue;
            }
            while targets.len() > 1 && targets[1].0 < v.ts_ns {
                targets.pop_front();
            }
            match targets.front() {
                Some(&(ts, value)) if ts < v.ts_ns && value.is_finite() => {
                    row(v.ts_ns, &v.values, value as f32)
                }
                _ => *unlabelled += 1,
            }
        }
        out.clear();
    };
    let replay_to = if labels.is_some() {
        to_ns.saturating_add(lag)
    } else {
        to_ns
    };
    store.replay(
        device,
        spec.stream.as_deref(),
        from_ns.saturating_sub(warm_up_ns(&spec.pipeline)).max(0),
        replay_to,
        &mut |batch| {
            if labels.is_none() {
                for s in batch.signals.iter().filter(|s| s.name == spec.target) {
                    for (&ts, &v) in s.ts_ns.iter().zip(&s.values) {
                        if targets.back().is_none_or(|&(last, _)| ts > last) {
                            targets.push_back((ts, v));
                        }
                    }
                }
            }
            pipeline.push_batch(&batch, &mut out);
            emit(&mut out, &mut targets);
            Ok(())
        },
    )?;
    pipeline.finish(&mut out);
    emit(&mut out, &mut targets);
    if let Some(join) = &mut join {
        join.finish(row, unlabelled);
    }
    Ok(())
}

/// Joins late labels to vectors as the live accuracy joins them to
/// predictions: each label takes the latest vector at or before it, at
/// most `lag` older (so one vector may go with several labels).
struct LabelJoin<'a> {
    labels: &'a [Label],
    /// The next label to join.
    next: usize,
    lag: i64,
    /// The latest vector so far.
    last: Option<Latest>,
}

/// The latest vector a label may join.
struct Latest {
    ts_ns: i64,
    features: Vec<f32>,
    /// Whether it is in the dataset's window (else it gives no row, but
    /// still comes between the labels after it and older vectors).
    in_window: bool,
    /// Whether a label joined it.
    joined: bool,
}

impl<'a> LabelJoin<'a> {
    fn new(labels: &'a [Label], lag: i64) -> LabelJoin<'a> {
        LabelJoin {
            labels,
            next: 0,
            lag,
            last: None,
        }
    }

    /// A vector, in time order: the labels before it are joined first.
    fn vector(
        &mut self,
        ts_ns: i64,
        values: &[f32],
        in_window: bool,
        row: &mut dyn FnMut(i64, &[f32], f32),
        unlabelled: &mut u64,
    ) {
        while self.labels.get(self.next).is_some_and(|l| l.ts_ns < ts_ns) {
            self.join_next(row);
        }
        self.count_if_unjoined(unlabelled);
        self.last = Some(Latest {
            ts_ns,
            features: values.to_vec(),
            in_window,
            joined: false,
        });
    }

    /// The labels after the last vector.
    fn finish(&mut self, row: &mut dyn FnMut(i64, &[f32], f32), unlabelled: &mut u64) {
        while self.next < self.labels.len() {
            self.join_next(row);
        }
        self.count_if_unjoined(unlabelled);
    }

    fn join_next(&mut self, row: &mut dyn FnMut(i64, &[f32], f32)) {
        let label = &self.labels[self.next];
        self.next += 1;
        if let Some(v) = &mut self.last
            && v.in_window
            && label.ts_ns - v.ts_ns <= self.lag
            && label.value.is_finite()
        {
            row(v.ts_ns, &v.features, label.value as f32);
            v.joined = true;
        }
    }

    /// Counts the last vector as unlabelled if it is in the window and no
    /// label joined it.
    fn count_if_unjoined(&mut self, unlabelled: &mut u64) {
        if self.last.take().is_some_and(|v| v.in_window && !v.joined) {
            *unlabelled += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::{SignalSeries, TelemetryBatch};
    use strata_store::{BatchWrite, EncodedBatch, LabelStore, SqliteStore};

    #[test]
    fn stored_telemetry_is_not_transformed_a_second_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), strata_store::Durability::Process).unwrap();
        let device = DeviceId::new("press-1").unwrap();
        // What an agent with `scale = 0.1` and `rename = "temp_c"` stored:
        // 20.0 and 22.0 (from raw 200 and 220), one reading in the next
        // window (which ends the first), and the label.
        let series = |name: &str, ts: Vec<i64>, values: Vec<f64>| SignalSeries {
            name: name.into(),
            unit: String::new(),
            ts_ns: ts,
            values,
            quality: Vec::new(),
        };
        let s = 1_000_000_000i64;
        let batch = TelemetryBatch {
            stream: "line".into(),
            seq: 1,
            signals: vec![
                series("temp_c", vec![s, 2 * s, 11 * s], vec![20.0, 22.0, 30.0]),
                series("label.y", vec![0], vec![1.0]),
            ],
        };
        store
            .write_batches(&[BatchWrite {
                device: device.clone(),
                received_ns: 3 * s,
                batch: EncodedBatch::encode(&batch),
            }])
            .unwrap();
        let pipeline: PipelineConfig = serde_json::from_value(serde_json::json!({
            "signals": [{"name": "temp", "rename": "temp_c", "scale": 0.1}],
            "windows": [{"name": "w", "signals": ["temp_c"], "size_ms": 10000, "features": ["mean"]}],
            "vectors": [{"name": "v", "features": ["w.temp_c.mean"]}],
        }))
        .unwrap();
        let spec = DatasetSpec {
            devices: vec!["press-1".into()],
            from_ns: 0,
            to_ns: 0,
            stream: None,
            pipeline,
            vector: "v".into(),
            target: "label.y".into(),
            label_lag_ms: None,
            max_rows: d_max_rows(),
        };
        let (mut rows, mut unlabelled) = (Vec::new(), 0);
        replay_device(
            &store,
            &spec,
            &device,
            (0, i64::MAX),
            None,
            &mut |_, f, _| rows.push(f.to_vec()),
            &mut unlabelled,
        )
        .unwrap();
        assert_eq!(
            rows.first(),
            Some(&vec![21.0f32]),
            "the mean of what was stored: {rows:?}"
        );
    }

    /// Sixty seconds of `temp` (and `label.y`) = 1, 2, ... 60, in batches
    /// of `per_batch` seconds, and a pipeline of 5 s windows sliding by 1 s.
    fn a_minute_stored(
        dir: &std::path::Path,
        per_batch: i64,
    ) -> (SqliteStore, impl Fn(i64, i64) -> DatasetSpec) {
        let store = SqliteStore::open(dir, strata_store::Durability::Process).unwrap();
        let s = 1_000_000_000i64;
        let batches: Vec<BatchWrite> = (0..60 / per_batch)
            .map(|b| {
                let seconds: Vec<i64> = (b * per_batch + 1..=(b + 1) * per_batch).collect();
                let series = |name: &str| SignalSeries {
                    name: name.into(),
                    unit: String::new(),
                    ts_ns: seconds.iter().map(|i| i * s).collect(),
                    values: seconds.iter().map(|&i| i as f64).collect(),
                    quality: Vec::new(),
                };
                BatchWrite {
                    device: DeviceId::new("press-1").unwrap(),
                    received_ns: ((b + 1) * per_batch + 1) * s,
                    batch: EncodedBatch::encode(&TelemetryBatch {
                        stream: "line".into(),
                        seq: b as u64 + 1,
                        signals: vec![series("temp"), series("label.y")],
                    }),
                }
            })
            .collect();
        store.write_batches(&batches).unwrap();
        let pipeline: PipelineConfig = serde_json::from_value(serde_json::json!({
            "windows": [{"name": "w", "signals": ["temp"], "size_ms": 5000, "hop_ms": 1000,
                         "features": ["mean"]}],
            "vectors": [{"name": "v", "features": ["w.temp.mean"]}],
        }))
        .unwrap();
        let spec = move |from_ns, to_ns| DatasetSpec {
            devices: vec!["press-1".into()],
            from_ns,
            to_ns,
            stream: None,
            pipeline: pipeline.clone(),
            vector: "v".into(),
            target: "label.y".into(),
            label_lag_ms: None,
            max_rows: d_max_rows(),
        };
        (store, spec)
    }

    /// Training rows whose window overlaps a held-out row's of the same
    /// device are purged; other devices' rows are not.
    #[test]
    fn training_rows_sharing_readings_with_the_hold_out_are_purged() {
        const SEC: i64 = 1_000_000_000;
        // Device 0 every second from 1 to 10 s; device 1 every 10 s.
        let mut ts_ns: Vec<i64> = (1..=10).map(|t| t * SEC).collect();
        ts_ns.extend((1..=10).map(|t| t * 10 * SEC));
        let data = Dataset {
            features: vec!["f".into()],
            rows: vec![0.0; 20],
            target: vec![0.0; 20],
            device: [vec![0; 10], vec![1; 10]].concat(),
            ts_ns,
            devices: vec!["a".into(), "b".into()],
            unlabelled: 0,
            kept_every: 1,
            window_ns: 3 * SEC,
        };
        let split = data.split_by_time(0.3);
        let times = |idx: &[usize]| idx.iter().map(|&i| data.ts_ns[i] / SEC).collect::<Vec<_>>();
        // Device 0 holds out 8, 9 and 10 s; the row at 8 s reads (5, 8],
        // so rows after 5 s go. Device 1's rows are 10 s apart: none goes.
        assert_eq!(
            times(&split.train),
            [1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 60, 70]
        );
        assert_eq!(times(&split.holdout), [8, 9, 10, 80, 90, 100]);
        assert_eq!(split.purged, 2);
        // Without windows nothing is purged.
        let plain = Dataset {
            window_ns: 0,
            ..data.clone()
        };
        assert_eq!(plain.split_by_time(0.3).purged, 0);
        // Resampled readings hold up to an interval past their stamp.
        let pipeline: PipelineConfig = serde_json::from_value(serde_json::json!({
            "signals": [{"name": "temp", "resample_ms": 1000}, {"name": "rpm"}],
            "windows": [{"name": "w", "signals": ["temp"], "size_ms": 5000, "features": ["mean"]}],
        }))
        .unwrap();
        assert_eq!(overlap_ns(&pipeline), 6 * SEC);
    }

    /// The store replays whole batches that overlap a window; a batch
    /// across the split once put rows after it in the training set.
    #[test]
    fn windows_either_side_of_a_split_share_no_row() {
        let dir = tempfile::tempdir().unwrap();
        // One batch, across the split.
        let (store, spec) = a_minute_stored(dir.path(), 60);
        let split = 30_000_000_000;
        let train = build(&store, &store, &spec(0, split), &mut |_, _| Ok(())).unwrap();
        let eval = build(&store, &store, &spec(split, 0), &mut |_, _| Ok(())).unwrap();
        assert!(
            train.len() >= 4 && eval.len() >= 4,
            "{} {}",
            train.len(),
            eval.len()
        );
        assert!(train.ts_ns.iter().all(|&t| t < split), "{:?}", train.ts_ns);
        assert!(eval.ts_ns.iter().all(|&t| t >= split), "{:?}", eval.ts_ns);
    }

    /// A window starting mid-stream gives the rows a replay of everything
    /// gives at the same times: its first windows are filled from before
    /// its start, not left partly empty.
    #[test]
    fn a_late_start_computes_whole_windows() {
        let dir = tempfile::tempdir().unwrap();
        // A batch a second: the replay of a late start begins late.
        let (store, spec) = a_minute_stored(dir.path(), 1);
        let all = build(&store, &store, &spec(0, 0), &mut |_, _| Ok(())).unwrap();
        let late = build(&store, &store, &spec(32_500_000_000, 0), &mut |_, _| Ok(())).unwrap();
        assert!(late.len() >= 10, "{}", late.len());
        for (i, ts) in late.ts_ns.iter().enumerate() {
            let j = all
                .ts_ns
                .iter()
                .position(|t| t == ts)
                .expect("the same times");
            assert_eq!(late.row(i), all.row(j), "the row at {ts}");
        }
    }

    /// With `label_lag_ms`, the targets are late labels, each joined to
    /// the latest vector at most the lag before it, as the live accuracy
    /// joins labels to predictions.
    #[test]
    fn labels_are_joined_to_vectors_as_the_live_accuracy_joins_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, spec) = a_minute_stored(dir.path(), 1);
        let ms = 1_000_000i64;
        let label = |ts_ms: i64, value: f64| Label {
            device: DeviceId::new("press-1").unwrap(),
            target: "label.y".into(),
            ts_ns: ts_ms * ms,
            value,
            source: "cmms".into(),
        };
        let labels = [
            label(20_500, 100.0), // the vector of 20 s, 0.5 s before
            label(20_700, 200.0), // the same vector, now 0.7 s before: too old
            label(30_000, 300.0), // the vector of 30 s, at the same time
            label(45_900, 999.0), // the vector of 45 s is 0.9 s before: too old
            label(58_200, 400.0), // the vector of 58 s
        ];
        store.add_labels(&labels, 61_000 * ms).unwrap();
        let all = build(&store, &store, &spec(0, 0), &mut |_, _| Ok(())).unwrap();
        let joined = build(
            &store,
            &store,
            &DatasetSpec {
                label_lag_ms: Some(500),
                ..spec(0, 0)
            },
            &mut |_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(joined.ts_ns, [20_000 * ms, 30_000 * ms, 58_000 * ms]);
        assert_eq!(joined.target, [100.0, 300.0, 400.0]);
        for (i, ts) in joined.ts_ns.iter().enumerate() {
            let j = all.ts_ns.iter().position(|t| t == ts).unwrap();
            assert_eq!(joined.row(i), all.row(j));
        }
        // In a window ending at 58 s, with a lag of 2 s: the vector of 20 s
        // goes with both labels after it; the label of 58.2 s has no row,
        // as its latest vector (58 s) is past the window, and the vector
        // of 57 s, within the lag, is not taken in its place.
        let window = build(
            &store,
            &store,
            &DatasetSpec {
                label_lag_ms: Some(2_000),
                ..spec(0, 58_000 * ms)
            },
            &mut |_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(
            window.ts_ns,
            [20_000 * ms, 20_000 * ms, 30_000 * ms, 45_000 * ms]
        );
        assert_eq!(window.target, [100.0, 200.0, 300.0, 999.0]);
    }

    /// Past `max_rows`, rows are thinned evenly: every second, fourth...
    #[test]
    fn a_dataset_past_its_row_limit_is_thinned_evenly() {
        let dir = tempfile::tempdir().unwrap();
        let (store, spec) = a_minute_stored(dir.path(), 1);
        let all = build(&store, &store, &spec(0, 0), &mut |_, _| Ok(())).unwrap();
        let thin = build(
            &store,
            &store,
            &DatasetSpec {
                max_rows: 10,
                ..spec(0, 0)
            },
            &mut |_, _| Ok(()),
        )
        .unwrap();
        assert!(all.len() > 40, "{}", all.len());
        assert!(
            thin.len() <= 10 && thin.kept_every >= 4,
            "{} {}",
            thin.len(),
            thin.kept_every
        );
        let every: Vec<i64> = all
            .ts_ns
            .iter()
            .step_by(thin.kept_every as usize)
            .copied()
            .collect();
        assert_eq!(thin.ts_ns, every);
        let values: Vec<f32> = every
            .iter()
            .map(|t| all.row(all.ts_ns.iter().position(|x| x == t).unwrap())[0])
            .collect();
        assert_eq!(thin.rows, values);
        assert_eq!(thin.devices, ["press-1"]);
    }
}
