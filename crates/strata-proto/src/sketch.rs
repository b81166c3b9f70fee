//! Drift sketches on the wire (`strata/v1/{device}/up/sketch`, JSON).
//!
//! For every model with drift settings, the agent summarises each input
//! feature and each output over a window in a histogram over the bins of
//! the model version's reference profile, and sends the histograms
//! instead of the values. A batch carries (stream, seq) like telemetry, so
//! the hub stores each exactly once. The bins themselves stay at the hub
//! and in the twin; each histogram names them by a fingerprint (`bins`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::payload::{DecodeError, json_error};

/// Largest sketch batch accepted (bytes of JSON).
pub const MAX_SKETCH_BATCH: usize = 1 << 20;

/// The stream a model version's sketches travel on.
pub fn sketch_stream(model: &str, version: u32) -> String {
    format!("sketch:{model}:{version}")
}

/// What a deployment tells the agent about drift for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DriftSettings {
    /// Length of a sketch window in seconds.
    pub window_s: u64,
    /// Bin edges per input feature (ascending, at least two).
    pub features: BTreeMap<String, Vec<f64>>,
    /// Bin edges per output value.
    pub outputs: BTreeMap<String, Vec<f64>>,
    /// A streaming change detector run on every output value at the edge
    /// (`{"kind": "adwin", ...}` or `{"kind": "page_hinkley", ...}` with
    /// river's parameter names); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub detector: Option<serde_json::Value>,
}

/// One window of sketches of one model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SketchBatch {
    /// `sketch:{model}:{version}`.
    pub stream: String,
    /// Sequence number in the stream.
    pub seq: u64,
    /// The model.
    pub model: String,
    /// Its version.
    pub version: u32,
    /// Window start, ns since the epoch.
    pub start_ns: i64,
    /// Window end, ns.
    pub end_ns: i64,
    /// Feature vectors the model saw in the window.
    pub vectors: u64,
    /// One histogram per input feature.
    pub features: Vec<SignalSketch>,
    /// One histogram per output value.
    pub outputs: Vec<SignalSketch>,
    /// Changes the edge's detector found in the window.
    #[serde(default)]
    pub detections: Vec<Detection>,
}

/// A histogram of one feature or output over its profile's bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignalSketch {
    /// Feature or output name.
    pub name: String,
    /// Fingerprint of the bin edges the counts are over.
    pub bins: String,
    /// Count per bin: below the first edge, one per bin, above the last.
    pub counts: Vec<u64>,
    /// Finite values counted.
    pub n: u64,
    /// NaN or infinite values left out.
    pub dropped: u64,
    /// Sum of the values.
    pub sum: f64,
    /// Sum of their squares.
    pub sum_sq: f64,
    /// Smallest value (null when none).
    pub min: Option<f64>,
    /// Largest value (null when none).
    pub max: Option<f64>,
}

/// A change a streaming detector found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Detection {
    /// The output it watched.
    pub signal: String,
    /// `adwin` or `page_hinkley`.
    pub detector: String,
    /// Time of the value that completed the detection, ns.
    pub ts_ns: i64,
    /// That value.
    pub value: f64,
}

/// The most values one histogram of a batch may count (far above any
/// window's), so that no sum the hub makes of many stays short of
/// overflowing.
pub const MAX_SKETCH_COUNT: u64 = 1 << 40;

/// Parses and checks a sketch batch: size, JSON shape, the stream name,
/// a window that ends after it starts, and consistent histograms.
pub fn decode_sketch_batch(payload: &[u8]) -> Result<SketchBatch, DecodeError> {
    if payload.len() > MAX_SKETCH_BATCH {
        return Err(DecodeError::Invalid(format!(
            "sketch batch of {} bytes is over the limit of {MAX_SKETCH_BATCH}",
            payload.len()
        )));
    }
    let batch: SketchBatch =
        serde_json::from_slice(payload).map_err(|e| json_error("SketchBatch", e))?;
    let bad = |why: String| Err(DecodeError::Invalid(format!("sketch batch: {why}")));
    if batch.stream != sketch_stream(&batch.model, batch.version) {
        return bad(format!(
            "stream {:?} must be \"sketch:{}:{}\"",
            batch.stream, batch.model, batch.version
        ));
    }
    if batch.end_ns < batch.start_ns {
        return bad("the window ends before it starts".into());
    }
    if batch.vectors > MAX_SKETCH_COUNT {
        return bad(format!("more than {MAX_SKETCH_COUNT} vectors"));
    }
    for list in [&batch.features, &batch.outputs] {
        if let Some((i, s)) = list
            .iter()
            .enumerate()
            .find(|(i, s)| list[..*i].iter().any(|o| o.name == s.name))
        {
            return bad(format!("{}: sketched twice (sketch {i})", s.name));
        }
    }
    for s in batch.features.iter().chain(&batch.outputs) {
        if s.counts.len() < 3 {
            return bad(format!(
                "{}: {} counts, at least 3 expected",
                s.name,
                s.counts.len()
            ));
        }
        if s.n > MAX_SKETCH_COUNT || s.dropped > MAX_SKETCH_COUNT {
            return bad(format!(
                "{}: more than {MAX_SKETCH_COUNT} values counted",
                s.name
            ));
        }
        let total = s.counts.iter().try_fold(0u64, |a, &c| a.checked_add(c));
        if total != Some(s.n) {
            return bad(format!(
                "{}: the counts do not add up to n = {}",
                s.name, s.n
            ));
        }
        // Each value of the window is counted once, or dropped (not
        // finite): a sketch that claims more would outweigh every other
        // device's in a merge.
        if s.n.checked_add(s.dropped) != Some(batch.vectors) {
            return bad(format!(
                "{}: n + dropped = {} + {} must be the window's {} vectors",
                s.name, s.n, s.dropped, batch.vectors
            ));
        }
        if !(s.sum.is_finite() && s.sum_sq.is_finite()) {
            return bad(format!("{}: the sums must be finite", s.name));
        }
        let range_ok = match (s.min, s.max) {
            (Some(lo), Some(hi)) => s.n > 0 && lo.is_finite() && hi.is_finite() && lo <= hi,
            (None, None) => s.n == 0,
            _ => false,
        };
        if !range_ok {
            return bad(format!(
                "{}: min and max must be both set (finite, min <= max) exactly when n > 0",
                s.name
            ));
        }
        // n values within [min, max] add up to within [n min, n max], and
        // their squares to at most n max(min², max²) (beside rounding).
        if let (Some(lo), Some(hi)) = (s.min, s.max) {
            let n = s.n as f64;
            let top = lo.abs().max(hi.abs());
            let slack = 1e-9 * n * top;
            let sums_ok = s.sum >= n * lo - slack
                && s.sum <= n * hi + slack
                && s.sum_sq >= 0.0
                && s.sum_sq <= n * top * top * (1.0 + 1e-9);
            if !sums_ok {
                return bad(format!(
                    "{}: the sums do not fit {} values within [min, max]",
                    s.name, s.n
                ));
            }
        }
    }
    // A detector watches each output and fires at most once a value.
    let most = batch.vectors.saturating_mul(batch.outputs.len() as u64);
    if batch.detections.len() as u64 > most {
        return bad(format!(
            "{} detections, more than {most} ({} vectors, {} outputs)",
            batch.detections.len(),
            batch.vectors,
            batch.outputs.len()
        ));
    }
    for d in &batch.detections {
        if !batch.outputs.iter().any(|o| o.name == d.signal) {
            return bad(format!(
                "detection on {:?}, which is not an output",
                d.signal
            ));
        }
        if !matches!(d.detector.as_str(), "adwin" | "page_hinkley") {
            return bad(format!("detection by {:?}: not a detector", d.detector));
        }
        if !d.value.is_finite() {
            return bad(format!(
                "detection on {}: the value must be finite",
                d.signal
            ));
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> SketchBatch {
        SketchBatch {
            stream: sketch_stream("rul", 3),
            seq: 1,
            model: "rul".into(),
            version: 3,
            start_ns: 0,
            end_ns: 60_000_000_000,
            vectors: 2,
            features: vec![SignalSketch {
                name: "v.rms".into(),
                bins: "00ff".into(),
                counts: vec![0, 2, 0],
                n: 2,
                dropped: 0,
                sum: 3.0,
                sum_sq: 5.0,
                min: Some(1.0),
                max: Some(2.0),
            }],
            outputs: vec![],
            detections: vec![],
        }
    }

    fn detection(signal: &str, detector: &str) -> Detection {
        Detection {
            signal: signal.into(),
            detector: detector.into(),
            ts_ns: 1,
            value: 1.0,
        }
    }

    #[test]
    fn a_good_batch_round_trips() {
        let b = batch();
        let json = serde_json::to_vec(&b).unwrap();
        assert_eq!(decode_sketch_batch(&json).unwrap(), b);
    }

    #[test]
    fn bad_batches_are_refused_with_the_reason() {
        type Change = fn(&mut SketchBatch);
        let cases: [(Change, &str); 18] = [
            (|b| b.stream = "sketch:other:3".into(), "stream"),
            (|b| b.end_ns = -1, "ends before"),
            (|b| b.features[0].counts = vec![0, 1, 0], "add up"),
            // Counts whose sum wraps around to n.
            (
                |b| {
                    b.features[0].n = 1;
                    b.features[0].counts = vec![1 << 63, 1 << 63, 1];
                },
                "add up",
            ),
            (|b| b.features[0].n = u64::MAX, "values counted"),
            (|b| b.features[0].dropped = u64::MAX, "values counted"),
            (|b| b.vectors = u64::MAX, "vectors"),
            (|b| b.features[0].counts = vec![2], "at least 3"),
            (|b| b.features[0].min = None, "min and max"),
            (|b| b.features[0].max = Some(0.5), "min and max"),
            // A sketch of more values than the window had.
            (
                |b| {
                    b.features[0].n = 1 << 30;
                    b.features[0].counts = vec![0, 1 << 30, 0];
                },
                "must be the window's",
            ),
            (|b| b.features.push(b.features[0].clone()), "sketched twice"),
            (|b| b.features[0].sum = 1e12, "the sums do not fit"),
            (|b| b.features[0].sum_sq = -1.0, "the sums do not fit"),
            (
                |b| b.detections.push(detection("v.rms", "adwin")),
                "more than 0",
            ),
            (
                |b| {
                    b.outputs.push(b.features[0].clone());
                    b.detections.push(detection("y", "adwin"));
                },
                "not an output",
            ),
            (
                |b| {
                    b.outputs.push(b.features[0].clone());
                    b.detections.push(detection("v.rms", "ddm"));
                },
                "not a detector",
            ),
            (
                |b| {
                    b.outputs.push(b.features[0].clone());
                    for _ in 0..3 {
                        b.detections.push(detection("v.rms", "adwin"));
                    }
                },
                "more than 2",
            ),
        ];
        for (change, why) in cases {
            let mut b = batch();
            change(&mut b);
            let err = decode_sketch_batch(&serde_json::to_vec(&b).unwrap()).unwrap_err();
            assert!(err.to_string().contains(why), "{err} (expected {why})");
        }
        assert!(decode_sketch_batch(b"{\"stream\": 1}").is_err());
        assert!(decode_sketch_batch(&vec![b' '; MAX_SKETCH_BATCH + 1]).is_err());
    }
}
