//! Accuracy decay: late labels joined to the predictions that were made
//! before them, per model version, over time and per segment.
//!
//! A label says what the target (the version's training target, e.g.
//! `label.rul_h`) really was on a device at a time. It is paired with the
//! latest prediction of the version (stream `model:{name}:{version}`, its
//! score output) at or before that time and at most `max_lag_ns` older.
//! Regressions are scored by MAE, RMSE and bias; classifications (0/1
//! labels, a class score: a classifier's probability, an isolation
//! forest's anomaly score) by accuracy, precision and recall at the
//! version's threshold (0.5 unless its training chose another). The figure the version was registered with (its hold-out MAE
//! or accuracy) is the baseline the decay is measured from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_proto::DeviceId;
use strata_store::{Device, Label, LabelStore, ModelVersion, TelemetryStore};

use super::report::Dimension;
use crate::error::{Error, Result};

/// What an accuracy report covers.
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracySpec {
    /// Labels from this time, ns.
    pub from_ns: i64,
    /// Up to this time, ns (inclusive).
    pub to_ns: i64,
    /// Length of a time bucket, ns.
    pub bucket_ns: i64,
    /// Oldest prediction a label may be paired with, ns before it.
    pub max_lag_ns: i64,
    /// Segments to score separately.
    pub by: Vec<Dimension>,
    /// Only these devices' labels (all devices when empty).
    pub devices: Vec<DeviceId>,
}

/// Scores of a set of (prediction, label) pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Scores {
    /// Pairs scored.
    pub pairs: u64,
    /// Mean absolute error (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Root mean squared error (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Mean of prediction minus truth (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bias: Option<f64>,
    /// Share of correct classes at the version's threshold, 0.5 unless
    /// its training said otherwise (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Precision of class 1 (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    /// Recall of class 1 (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
}

/// Scores of one time bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BucketScores {
    /// Bucket start, ns.
    pub start_ns: i64,
    /// Its scores.
    #[serde(flatten)]
    pub scores: Scores,
}

/// Scores of one segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SegmentScores {
    /// The segment's value.
    pub value: String,
    /// Its scores.
    #[serde(flatten)]
    pub scores: Scores,
}

/// The accuracy of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionAccuracy {
    /// The version.
    pub version: u32,
    /// `regression` or `classification`.
    pub task: String,
    /// The target its labels are of.
    pub target: String,
    /// The prediction signal paired with them.
    pub prediction: String,
    /// Labels with no prediction in reach.
    pub unmatched: u64,
    /// All pairs.
    pub overall: Scores,
    /// What the version scored on its hold-out at registration (MAE or
    /// accuracy), when known.
    pub registered: Option<f64>,
    /// Latest bucket's MAE over the registered MAE (regression), or
    /// registered accuracy minus the latest bucket's (classification):
    /// how far it has decayed.
    pub decay: Option<f64>,
    /// Per time bucket, oldest first (buckets without pairs left out).
    pub buckets: Vec<BucketScores>,
    /// Per dimension, per value.
    pub segments: BTreeMap<String, Vec<SegmentScores>>,
}

/// One (prediction, truth) pair.
#[derive(Debug, Clone, Copy)]
struct Pair {
    ts_ns: i64,
    predicted: f64,
    truth: f64,
}

/// The prediction signal of a version: the value training scores it on
/// (`train::score_index`), named as the edge names its readings.
pub fn prediction_signal(v: &ModelVersion) -> String {
    let specs: Vec<strata_infer::OutputSpec> = v
        .outputs
        .iter()
        .map(|o| strata_infer::OutputSpec {
            name: o.name.clone(),
            len: o.len as usize,
        })
        .collect();
    let names = strata_infer::output_names(&specs);
    let score = crate::models::train::score_index(&specs);
    format!(
        "{}.{}",
        v.model,
        names.get(score).map_or("prediction", String::as_str)
    )
}

/// Whether `v`'s score is a class score in [0, 1] that 0.5 splits: a
/// classifier's, an isolation forest's anomaly score, or any model's
/// output named as a probability (an uploaded or externally trained
/// classifier). Such a score is judged by accuracy, not by its distance
/// to the 0/1 labels.
fn scores_classes(v: &ModelVersion) -> bool {
    let trainer = v.lineage.trainer.as_str();
    trainer.contains("classifier")
        || trainer == "isolation_forest"
        || prediction_signal(v)
            .strip_prefix(v.model.as_str())
            .is_some_and(|output| output.contains("prob"))
}

/// The stretches of time whose predictions can pair with `labels`
/// (sorted by time): `[label - max_lag, label]` for each, merged where
/// they overlap or lie closer than `max_lag` (one query instead of many
/// short ones).
fn reach(labels: &[Label], max_lag_ns: i64) -> Vec<(i64, i64)> {
    let lag = max_lag_ns.max(0);
    let mut out: Vec<(i64, i64)> = Vec::new();
    for l in labels {
        let from = l.ts_ns.saturating_sub(lag);
        match out.last_mut() {
            Some((_, to)) if from <= to.saturating_add(lag) => *to = (*to).max(l.ts_ns),
            _ => out.push((from, l.ts_ns)),
        }
    }
    out
}

/// For labels sorted by time, the latest prediction at or before each
/// one, found from predictions offered in any order (of equal times, the
/// one offered last), keeping one prediction per label.
///
/// A prediction can only be the latest for the labels from the first one
/// at or after it; so each label keeps the latest prediction that falls
/// after the label before it, and a label with none there takes its
/// predecessor's.
struct LatestBefore<'a> {
    labels: &'a [Label],
    /// Per label: the latest prediction after the label before it.
    since_previous: Vec<Option<(i64, f64)>>,
}

impl<'a> LatestBefore<'a> {
    fn new(labels: &'a [Label]) -> Self {
        LatestBefore {
            labels,
            since_previous: vec![None; labels.len()],
        }
    }

    fn offer(&mut self, ts: i64, value: f64) {
        let first_after = self.labels.partition_point(|l| l.ts_ns < ts);
        if let Some(slot) = self.since_previous.get_mut(first_after)
            && slot.is_none_or(|(latest, _)| ts >= latest)
        {
            *slot = Some((ts, value));
        }
    }

    /// Per label, in order: the latest prediction at or before it.
    fn latest(&self) -> Vec<Option<(i64, f64)>> {
        let mut carried = None;
        self.since_previous
            .iter()
            .map(|own| {
                carried = own.or(carried);
                carried
            })
            .collect()
    }
}

/// Scores `v` against the labels of its target.
pub fn version_accuracy(
    v: &ModelVersion,
    labels: &dyn LabelStore,
    telemetry: &dyn TelemetryStore,
    devices: &BTreeMap<DeviceId, Device>,
    spec: &AccuracySpec,
) -> Result<VersionAccuracy> {
    let (pairs, unmatched) = paired(v, labels, telemetry, spec)?;
    Ok(summarize(v, pairs, unmatched, devices, spec))
}

/// Scores two versions on the same labels only: those both have a
/// prediction for. A label only one of them could answer (before the
/// shadow loaded on a device, or where it failed to) would score that
/// one on ground the other never stood on.
pub fn compare_on_the_same_labels(
    (a, b): (&ModelVersion, &ModelVersion),
    labels: &dyn LabelStore,
    telemetry: &dyn TelemetryStore,
    devices: &BTreeMap<DeviceId, Device>,
    spec: &AccuracySpec,
) -> Result<(VersionAccuracy, VersionAccuracy)> {
    let (mut pa, ua) = paired(a, labels, telemetry, spec)?;
    let (mut pb, ub) = paired(b, labels, telemetry, spec)?;
    let (dropped_a, dropped_b) = keep_common(&mut pa, &mut pb);
    Ok((
        summarize(a, pa, ua + dropped_a, devices, spec),
        summarize(b, pb, ub + dropped_b, devices, spec),
    ))
}

/// Keeps in each list only the labels (device, time, value) the other
/// has as well; returns how many each lost.
fn keep_common(a: &mut Vec<(DeviceId, Pair)>, b: &mut Vec<(DeviceId, Pair)>) -> (u64, u64) {
    type Key = (DeviceId, i64, u64);
    let key = |(d, p): &(DeviceId, Pair)| -> Key { (d.clone(), p.ts_ns, p.truth.to_bits()) };
    let in_a: std::collections::HashSet<Key> = a.iter().map(key).collect();
    let in_b: std::collections::HashSet<Key> = b.iter().map(key).collect();
    let (before_a, before_b) = (a.len(), b.len());
    a.retain(|x| in_b.contains(&key(x)));
    b.retain(|x| in_a.contains(&key(x)));
    ((before_a - a.len()) as u64, (before_b - b.len()) as u64)
}

/// `v`'s predictions paired with the labels of its target (the latest
/// prediction at most `max_lag_ns` before each), and how many labels
/// found none.
fn paired(
    v: &ModelVersion,
    labels: &dyn LabelStore,
    telemetry: &dyn TelemetryStore,
    spec: &AccuracySpec,
) -> Result<(Vec<(DeviceId, Pair)>, u64)> {
    let target = v.lineage.target.clone().ok_or_else(|| {
        Error::BadRequest(format!(
            "{} v{} has no training target in its lineage, so no label applies to it",
            v.model, v.version
        ))
    })?;
    let signal = prediction_signal(v);
    // What it predicted while it ran as a shadow challenger counts too.
    let shadow_signal = signal.replacen('.', ".shadow.", 1);
    let stream = format!("model:{}:{}", v.model, v.version);
    let mut all = labels.labels(&target, None, spec.from_ns, spec.to_ns)?;
    if !spec.devices.is_empty() {
        all.retain(|l| spec.devices.contains(&l.device));
    }
    let mut by_device: BTreeMap<DeviceId, Vec<Label>> = BTreeMap::new();
    for l in all {
        by_device.entry(l.device.clone()).or_default().push(l);
    }
    let mut pairs: Vec<(DeviceId, Pair)> = Vec::new();
    let mut unmatched = 0u64;
    for (device, labels) in &mut by_device {
        labels.sort_by_key(|l| l.ts_ns);
        // Only the predictions in reach of a label are read, one stretch
        // of time at a time, and only the latest one before each label is
        // kept: a device's months of predictions are never held at once.
        let mut join = LatestBefore::new(labels);
        for (from, to) in reach(labels, spec.max_lag_ns) {
            telemetry.replay(device, Some(&stream), from, to, &mut |batch| {
                for s in batch
                    .signals
                    .iter()
                    .filter(|s| s.name == signal || s.name == shadow_signal)
                {
                    for (&ts, &value) in s.ts_ns.iter().zip(&s.values) {
                        // A batch reaching into two stretches is read
                        // twice; each prediction counts in one.
                        if (from..=to).contains(&ts) {
                            join.offer(ts, value);
                        }
                    }
                }
                Ok(())
            })?;
        }
        for (l, latest) in labels.iter().zip(join.latest()) {
            match latest {
                Some((ts, predicted)) if l.ts_ns.saturating_sub(ts) <= spec.max_lag_ns => pairs
                    .push((
                        device.clone(),
                        Pair {
                            ts_ns: l.ts_ns,
                            predicted,
                            truth: l.value,
                        },
                    )),
                _ => unmatched += 1,
            }
        }
    }
    Ok((pairs, unmatched))
}

/// The figures of `v`'s `pairs`, overall, per bucket and per segment.
fn summarize(
    v: &ModelVersion,
    pairs: Vec<(DeviceId, Pair)>,
    unmatched: u64,
    devices: &BTreeMap<DeviceId, Device>,
    spec: &AccuracySpec,
) -> VersionAccuracy {
    let target = v.lineage.target.clone().unwrap_or_default();
    let signal = prediction_signal(v);
    let classification =
        scores_classes(v) && pairs.iter().all(|(_, p)| p.truth == 0.0 || p.truth == 1.0);
    // Classes are cut where the version was evaluated at registration.
    let threshold = v.metrics.get("threshold").copied().unwrap_or(0.5);
    let score = |ps: &[Pair]| scores(ps, classification.then_some(threshold));
    let flat: Vec<Pair> = pairs.iter().map(|(_, p)| *p).collect();
    let mut buckets: BTreeMap<i64, Vec<Pair>> = BTreeMap::new();
    for p in &flat {
        // In i128: the span of a request near i64's ends overflows i64.
        let (from, ts, bucket) = (
            i128::from(spec.from_ns),
            i128::from(p.ts_ns),
            i128::from(spec.bucket_ns),
        );
        let start = i64::try_from(from + (ts - from) / bucket * bucket).unwrap_or(spec.from_ns);
        buckets.entry(start).or_default().push(*p);
    }
    let buckets: Vec<BucketScores> = buckets
        .into_iter()
        .map(|(start_ns, ps)| BucketScores {
            start_ns,
            scores: score(&ps),
        })
        .collect();
    let mut segments = BTreeMap::new();
    for dim in &spec.by {
        let mut groups: BTreeMap<String, Vec<Pair>> = BTreeMap::new();
        for (d, p) in &pairs {
            groups
                .entry(dim.value_of(d, devices.get(d)))
                .or_default()
                .push(*p);
        }
        segments.insert(
            dim.name(),
            groups
                .into_iter()
                .map(|(value, ps)| SegmentScores {
                    value,
                    scores: score(&ps),
                })
                .collect(),
        );
    }
    let registered = if classification {
        v.metrics.get("accuracy").copied()
    } else {
        v.metrics.get("mae").copied()
    };
    let latest = buckets.last().map(|b| &b.scores);
    let decay = match (registered, latest) {
        (Some(r), Some(s)) if classification => s.accuracy.map(|a| r - a),
        (Some(r), Some(s)) if r > 0.0 => s.mae.map(|m| m / r),
        _ => None,
    };
    VersionAccuracy {
        version: v.version,
        task: if classification {
            "classification"
        } else {
            "regression"
        }
        .into(),
        target,
        prediction: signal,
        unmatched,
        overall: score(&flat),
        registered,
        decay,
        buckets,
        segments,
    }
}

/// The figures of `pairs`: classes at `threshold` when given, else a
/// regression's.
fn scores(pairs: &[Pair], threshold: Option<f64>) -> Scores {
    let n = pairs.len() as f64;
    if pairs.is_empty() {
        return Scores::default();
    }
    if let Some(threshold) = threshold {
        let (mut tp, mut fp, mut fn_, mut right) = (0.0, 0.0, 0.0, 0.0);
        for p in pairs {
            let class = if p.predicted >= threshold { 1.0 } else { 0.0 };
            right += f64::from(u8::from(class == p.truth));
            match (class == 1.0, p.truth == 1.0) {
                (true, true) => tp += 1.0,
                (true, false) => fp += 1.0,
                (false, true) => fn_ += 1.0,
                _ => {}
            }
        }
        Scores {
            pairs: pairs.len() as u64,
            accuracy: Some(right / n),
            precision: (tp + fp > 0.0).then(|| tp / (tp + fp)),
            recall: (tp + fn_ > 0.0).then(|| tp / (tp + fn_)),
            ..Scores::default()
        }
    } else {
        let (mut abs, mut sq, mut bias) = (0.0, 0.0, 0.0);
        for p in pairs {
            let e = p.predicted - p.truth;
            abs += e.abs();
            sq += e * e;
            bias += e;
        }
        Scores {
            pairs: pairs.len() as u64,
            mae: Some(abs / n),
            rmse: Some((sq / n).sqrt()),
            bias: Some(bias / n),
            ..Scores::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_proto::{SignalSeries, TelemetryBatch};
    use strata_store::{
        BatchWrite, Durability, EncodedBatch, Lineage, ModelOutputInfo, SqliteStore,
    };

    use super::*;

    #[test]
    fn two_versions_are_compared_on_the_labels_both_answered() {
        let (d1, d2) = (DeviceId::new("a").unwrap(), DeviceId::new("b").unwrap());
        let pair = |d: &DeviceId, ts_ns: i64, predicted: f64| {
            (
                d.clone(),
                Pair {
                    ts_ns,
                    predicted,
                    truth: 1.0,
                },
            )
        };
        // The champion answered labels on both devices; the shadow ran on
        // device a only, and missed its first label there.
        let mut champion = vec![pair(&d1, 1, 9.0), pair(&d1, 2, 9.0), pair(&d2, 1, 1.0)];
        let mut shadow = vec![pair(&d1, 2, 2.0)];
        assert_eq!(keep_common(&mut champion, &mut shadow), (2, 0));
        assert_eq!(champion.len(), 1);
        assert_eq!((champion[0].0.as_str(), champion[0].1.ts_ns), ("a", 2));
        assert_eq!(shadow.len(), 1);
    }

    fn version(trainer: &str) -> ModelVersion {
        ModelVersion {
            model: "rul".into(),
            version: 2,
            sha256: String::new(),
            size: 0,
            runtime: "ml".into(),
            input_len: 1,
            outputs: vec![ModelOutputInfo {
                name: "prediction".into(),
                len: 1,
            }],
            ops: vec![],
            features: vec!["x".into()],
            vector: None,
            lineage: Lineage {
                trainer: trainer.into(),
                target: Some("label.rul_h".into()),
                ..Lineage::default()
            },
            metrics: BTreeMap::from([("mae".to_string(), 2.0)]),
            has_tree_stats: false,
            description: String::new(),
            created_ns: 0,
        }
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn class_scores_are_told_from_regressions() {
        assert!(!scores_classes(&version("gbt_regressor")));
        assert!(scores_classes(&version("gbt_classifier")));
        assert!(scores_classes(&version("isolation_forest")));
        // An uploaded model (no trainer of ours) whose score output is a
        // probability.
        let mut uploaded = version("");
        assert!(!scores_classes(&uploaded));
        uploaded.outputs = vec![
            ModelOutputInfo {
                name: "label".into(),
                len: 1,
            },
            ModelOutputInfo {
                name: "probabilities".into(),
                len: 2,
            },
        ];
        assert!(scores_classes(&uploaded));
    }

    fn label_at(ts_ns: i64) -> Label {
        Label {
            device: DeviceId::new("press-1").unwrap(),
            target: "label.rul_h".into(),
            ts_ns,
            value: 0.0,
            source: "test".into(),
        }
    }

    #[test]
    fn the_streaming_join_finds_what_sorting_every_prediction_finds() {
        // A small generator, so the test needs no crate.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for round in 0..200 {
            let mut labels: Vec<Label> =
                (0..next(12)).map(|_| label_at(next(100) as i64)).collect();
            labels.sort_by_key(|l| l.ts_ns);
            // Predictions in any order, some at equal times and some on a
            // label's time.
            let predictions: Vec<(i64, f64)> = (0..next(40))
                .map(|k| (next(110) as i64, (round * 100 + k) as f64))
                .collect();
            let mut join = LatestBefore::new(&labels);
            for &(ts, v) in &predictions {
                join.offer(ts, v);
            }
            // What the report did before: sort them all (stably), take the
            // last at or before each label.
            let mut sorted = predictions.clone();
            sorted.sort_by_key(|p| p.0);
            let want: Vec<Option<(i64, f64)>> = labels
                .iter()
                .map(|l| {
                    let at = sorted.partition_point(|p| p.0 <= l.ts_ns);
                    at.checked_sub(1).map(|i| sorted[i])
                })
                .collect();
            assert_eq!(join.latest(), want, "round {round}");
        }
    }

    #[test]
    fn only_the_stretches_before_labels_are_read() {
        let labels: Vec<Label> = [100, 105, 300, 330, 1000]
            .into_iter()
            .map(label_at)
            .collect();
        // Within 20 of each label; gaps under 20 are read through.
        assert_eq!(reach(&labels, 20), vec![(80, 105), (280, 330), (980, 1000)]);
        assert_eq!(
            reach(&labels, 0),
            vec![(100, 100), (105, 105), (300, 300), (330, 330), (1000, 1000)]
        );
        assert!(reach(&[], 20).is_empty());
    }

    #[test]
    fn labels_pair_with_the_last_prediction_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
        let d = DeviceId::new("press-1").unwrap();
        // Predictions every 10 s from 0 to 190 s: 100 - t/10 for the first
        // 100 s, then 8 too high (a faulty sensor).
        let ts: Vec<i64> = (0..20).map(|i| i * 10 * S).collect();
        let values: Vec<f64> = (0..20)
            .map(|i| 100.0 - i as f64 + if i >= 10 { 8.0 } else { 0.0 })
            .collect();
        let batch = TelemetryBatch {
            stream: "model:rul:2".into(),
            seq: 1,
            signals: vec![SignalSeries {
                name: "rul.prediction".into(),
                unit: String::new(),
                ts_ns: ts,
                values,
                quality: vec![],
            }],
        };
        store
            .write_batches(&[BatchWrite {
                device: d.clone(),
                received_ns: 0,
                batch: EncodedBatch::encode(&batch),
            }])
            .unwrap();
        // Truth 100 - t/10, labelled 5 s after each prediction, plus one
        // label long after the last prediction.
        let labels: Vec<Label> = (0..20)
            .map(|i| Label {
                device: d.clone(),
                target: "label.rul_h".into(),
                ts_ns: i * 10 * S + 5 * S,
                value: 100.0 - i as f64,
                source: "test".into(),
            })
            .chain(std::iter::once(Label {
                device: d.clone(),
                target: "label.rul_h".into(),
                ts_ns: 1000 * S,
                value: 0.0,
                source: "test".into(),
            }))
            .collect();
        store.add_labels(&labels, 0).unwrap();
        let spec = AccuracySpec {
            from_ns: 0,
            to_ns: 2000 * S,
            bucket_ns: 100 * S,
            max_lag_ns: 30 * S,
            by: vec![Dimension::Device],
            devices: Vec::new(),
        };
        let a = version_accuracy(
            &version("gbt_regressor"),
            &store,
            &store,
            &BTreeMap::new(),
            &spec,
        )
        .unwrap();
        assert_eq!(
            (a.task.as_str(), a.prediction.as_str()),
            ("regression", "rul.prediction")
        );
        assert_eq!((a.overall.pairs, a.unmatched), (20, 1));
        assert_eq!(a.overall.mae, Some(4.0));
        assert_eq!(a.buckets.len(), 2);
        assert_eq!(
            (a.buckets[0].scores.mae, a.buckets[1].scores.mae),
            (Some(0.0), Some(8.0))
        );
        assert_eq!(a.buckets[1].scores.bias, Some(8.0));
        // Registered with MAE 2: the latest bucket is 4 times worse.
        assert_eq!(a.decay, Some(4.0));
        assert_eq!(a.segments["device"][0].scores.pairs, 20);
    }
}
