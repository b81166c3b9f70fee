//! What a push produces: the transformed series to send upstream and the
//! feature vectors that models consume, in buffers that are reused from one
//! push to the next so that a steady stream allocates nothing.

use std::sync::Arc;

use strata_proto::SignalSeries;

use crate::transform::{GOOD, Reading};

/// The ordered feature names of a vector: a model bound to the vector must
/// take exactly `width()` inputs, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorSchema {
    name: Arc<str>,
    features: Arc<[String]>,
}

impl VectorSchema {
    pub(crate) fn new(name: &str, features: Vec<String>) -> VectorSchema {
        VectorSchema {
            name: name.into(),
            features: features.into(),
        }
    }

    /// The vector's name, as configured.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The feature names `<window>.<signal>.<feature>`, in vector order.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// The number of features: a model's input width must equal it.
    pub fn width(&self) -> usize {
        self.features.len()
    }

    pub(crate) fn shared_name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    pub(crate) fn shared_features(&self) -> Arc<[String]> {
        Arc::clone(&self.features)
    }

    /// The position of a feature in the vector.
    pub fn position(&self, feature: &str) -> Option<usize> {
        self.features.iter().position(|f| f == feature)
    }
}

/// The features of one vector for the windows ending at `ts_ns`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureVector {
    /// The vector's name (shared with its schema).
    pub name: Arc<str>,
    /// The end of the joined windows (exclusive), ns since the epoch: the
    /// window of size `s` covered `[ts_ns - s, ts_ns)`.
    pub ts_ns: i64,
    /// The feature values, in schema order. Always finite.
    pub values: Vec<f32>,
    /// The feature names, in the same order (shared with the schema).
    pub names: Arc<[String]>,
}

/// The result of one or more pushes. Pushes append to it; [`Output::clear`]
/// empties it while keeping its buffers for the next push.
///
/// Use one `Output` per pipeline: it holds at most one series per signal,
/// keyed by the pipeline's signal indices.
#[derive(Debug, Default)]
pub struct Output {
    owner: u64,
    series: Vec<SignalSeries>,
    /// Per pipeline signal index: 1 + its position in `series`, or 0.
    slot_index: Vec<u32>,
    spare_series: Vec<SignalSeries>,
    vectors: Vec<FeatureVector>,
    spare_values: Vec<Vec<f32>>,
}

impl Output {
    /// An empty output.
    pub fn new() -> Output {
        Output::default()
    }

    /// The transformed series, one per signal that emitted readings, in the
    /// order the signals first emitted. Quality is empty when every reading
    /// is Good, as on the wire.
    pub fn series(&self) -> &[SignalSeries] {
        &self.series
    }

    /// The feature vectors, in the order they completed. Within one vector
    /// `ts_ns` strictly increases from push to push.
    pub fn vectors(&self) -> &[FeatureVector] {
        &self.vectors
    }

    /// Whether there is neither a series nor a vector.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty() && self.vectors.is_empty()
    }

    /// Takes the series (e.g. into an uplink `TelemetryBatch`); the next
    /// push starts new ones.
    pub fn take_series(&mut self) -> Vec<SignalSeries> {
        self.slot_index.fill(0);
        std::mem::take(&mut self.series)
    }

    /// Takes the feature vectors.
    pub fn take_vectors(&mut self) -> Vec<FeatureVector> {
        std::mem::take(&mut self.vectors)
    }

    /// Empties the output, keeping the buffers for reuse.
    pub fn clear(&mut self) {
        self.slot_index.fill(0);
        for mut s in self.series.drain(..) {
            s.ts_ns.clear();
            s.values.clear();
            s.quality.clear();
            self.spare_series.push(s);
        }
        for mut v in self.vectors.drain(..) {
            v.values.clear();
            self.spare_values.push(v.values);
        }
    }

    /// Makes sure the slot indices belong to pipeline `owner`.
    pub(crate) fn bind(&mut self, owner: u64) {
        if self.owner != owner {
            self.owner = owner;
            self.slot_index.fill(0);
        }
    }

    /// The position of the series of pipeline signal `slot`, started with
    /// `name` and `unit` if there is none yet.
    pub(crate) fn series_for(&mut self, slot: usize, name: &str, unit: &str) -> usize {
        if self.slot_index.len() <= slot {
            self.slot_index.resize(slot + 1, 0);
        }
        if let Some(i) = self.slot_index[slot].checked_sub(1) {
            return i as usize;
        }
        let mut s = self.spare_series.pop().unwrap_or_default();
        s.name.clear();
        s.name.push_str(name);
        s.unit.clear();
        s.unit.push_str(unit);
        self.series.push(s);
        self.slot_index[slot] = self.series.len() as u32;
        self.series.len() - 1
    }

    #[inline]
    pub(crate) fn push_reading(&mut self, index: usize, r: Reading) {
        let s = &mut self.series[index];
        // Quality stays empty while every reading is Good.
        if r.quality != GOOD || !s.quality.is_empty() {
            s.quality.resize(s.values.len(), GOOD);
            s.quality.push(r.quality);
        }
        s.ts_ns.push(r.ts);
        s.values.push(r.value);
    }

    /// An empty buffer for a vector's values.
    pub(crate) fn value_buffer(&mut self) -> Vec<f32> {
        self.spare_values.pop().unwrap_or_default()
    }

    pub(crate) fn push_vector(&mut self, v: FeatureVector) {
        self.vectors.push(v);
    }
}
