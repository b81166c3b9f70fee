//! Mergeable feature sketches: a histogram of one feature over the bins of
//! its reference profile, plus count, sum, sum of squares, min and max.
//!
//! The edge agent keeps one per feature per window and sends it instead of
//! the readings; the hub adds sketches up (per device, site, firmware...)
//! and compares them with the profile the model was trained on. PSI,
//! Jensen-Shannon and chi-squared over the profile's bins are exact on
//! sketches; the KS statistic at the bin edges is a lower bound of the one
//! on raw data, and the Wasserstein distance assumes values spread evenly
//! inside each bin.

use serde::{Deserialize, Serialize};

use crate::stats::{chi_square, jensen_shannon, psi};
use crate::{DriftError, Sample};

/// The reference side of a feature: its bin edges and the reference's
/// sketch over them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    /// The reference sample's sketch (its edges are the profile's).
    pub reference: Sketch,
    /// Population standard deviation of the reference (Wasserstein norm).
    pub std: f64,
}

impl FeatureProfile {
    /// Profiles a reference sample: edges at its quantiles, `bins` bins at
    /// most (fewer when values repeat).
    pub fn from_reference(reference: &Sample, bins: usize) -> Result<FeatureProfile, DriftError> {
        let values = reference.values();
        if values.is_empty() {
            return Err(DriftError::Empty("reference"));
        }
        let bins = bins.max(1);
        let mut edges: Vec<f64> = (0..=bins)
            .map(|i| values[(i * (values.len() - 1)) / bins])
            .collect();
        edges.dedup();
        if edges.len() == 1 {
            edges.push(edges[0]);
        }
        let mut sketch = Sketch::new(edges)?;
        for &v in values {
            sketch.add(v);
        }
        Ok(FeatureProfile {
            reference: sketch,
            std: reference.std(),
        })
    }

    /// An empty sketch over this profile's bins.
    pub fn empty_sketch(&self) -> Sketch {
        Sketch::new(self.reference.edges.clone()).expect("a profile's edges are valid")
    }

    /// Compares a current sketch with the reference.
    pub fn compare(&self, current: &Sketch) -> Result<SketchDrift, DriftError> {
        let reference = &self.reference;
        if reference.edges != current.edges {
            return Err(DriftError::BinMismatch("compared"));
        }
        if current.n == 0 {
            return Err(DriftError::Empty("current"));
        }
        // Only bins either side uses take part, as in Evidently's binning
        // of categories.
        let used: Vec<usize> = (0..reference.counts.len())
            .filter(|&i| reference.counts[i] + current.counts[i] > 0)
            .collect();
        let r_counts: Vec<usize> = used.iter().map(|&i| reference.counts[i] as usize).collect();
        let c_counts: Vec<usize> = used.iter().map(|&i| current.counts[i] as usize).collect();
        let share =
            |c: &[usize], n: u64| c.iter().map(|&x| x as f64 / n as f64).collect::<Vec<_>>();
        let (r, c) = (share(&r_counts, reference.n), share(&c_counts, current.n));
        let (mut rf, mut cf) = (r.clone(), c.clone());
        crate::stats::fill_zeroes(&mut rf);
        crate::stats::fill_zeroes(&mut cf);
        Ok(SketchDrift {
            psi: psi(&rf, &cf),
            jensen_shannon: jensen_shannon(&r, &c),
            chi_square_p: chi_square(&r_counts, &c_counts).p_value,
            ks_lower_bound: ks_at_edges(reference, current),
            wasserstein_normed: wasserstein_binned(reference, current) / self.std.max(0.001),
            mean_shift: current.mean() - reference.mean(),
            current_n: current.n,
        })
    }
}

/// Drift of one sketch against its profile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SketchDrift {
    /// PSI over the profile's bins (empty bins filled as Evidently does).
    pub psi: f64,
    /// Jensen-Shannon distance over the profile's bins.
    pub jensen_shannon: f64,
    /// Chi-squared p-value of the bin counts.
    pub chi_square_p: f64,
    /// The largest CDF difference at the bin edges (a lower bound of KS).
    pub ks_lower_bound: f64,
    /// Wasserstein distance (values spread evenly in their bins) normed by
    /// the reference's standard deviation.
    pub wasserstein_normed: f64,
    /// Current mean minus reference mean.
    pub mean_shift: f64,
    /// Values in the current sketch.
    pub current_n: u64,
}

/// A histogram over fixed edges: `counts[0]` below the first edge,
/// `counts[i]` in `[edges[i-1], edges[i])` (the last bin closed), and the
/// last count above the last edge. Mergeable by adding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    /// Bin edges, ascending.
    pub edges: Vec<f64>,
    /// Values per bin, `edges.len() + 1` of them.
    pub counts: Vec<u64>,
    /// Finite values added.
    pub n: u64,
    /// NaN or infinite values offered and left out.
    pub dropped: u64,
    /// Sum of the values.
    pub sum: f64,
    /// Sum of their squares.
    pub sum_sq: f64,
    /// Smallest value (+inf when empty; `null` in JSON).
    #[serde(with = "finite_or_null::min")]
    pub min: f64,
    /// Largest value (-inf when empty; `null` in JSON).
    #[serde(with = "finite_or_null::max")]
    pub max: f64,
}

/// JSON has no infinities: an empty sketch's min and max travel as null.
mod finite_or_null {
    macro_rules! side {
        ($name:ident, $empty:expr) => {
            pub mod $name {
                use serde::{Deserialize, Deserializer, Serializer};

                pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
                    if v.is_finite() {
                        s.serialize_some(v)
                    } else {
                        s.serialize_none()
                    }
                }

                pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
                    Ok(Option::<f64>::deserialize(d)?.unwrap_or($empty))
                }
            }
        };
    }
    side!(min, f64::INFINITY);
    side!(max, f64::NEG_INFINITY);
}

impl Sketch {
    /// An empty sketch over `edges` (finite, ascending, at least two).
    pub fn new(edges: Vec<f64>) -> Result<Sketch, DriftError> {
        if edges.len() < 2
            || edges.iter().any(|e| !e.is_finite())
            || edges.windows(2).any(|w| w[0] > w[1])
        {
            return Err(DriftError::InvalidSketch(
                "edges must be at least two finite values in ascending order".into(),
            ));
        }
        Ok(Sketch {
            counts: vec![0; edges.len() + 1],
            edges,
            n: 0,
            dropped: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        })
    }

    /// Checks a sketch that came from elsewhere (a device).
    pub fn validate(&self) -> Result<(), DriftError> {
        Sketch::new(self.edges.clone())?;
        if self.counts.len() != self.edges.len() + 1 {
            return Err(DriftError::InvalidSketch(format!(
                "{} counts for {} edges (expected edges + 1)",
                self.counts.len(),
                self.edges.len()
            )));
        }
        if self.counts.iter().sum::<u64>() != self.n {
            return Err(DriftError::InvalidSketch(
                "counts do not add up to n".into(),
            ));
        }
        if !self.sum.is_finite() || !self.sum_sq.is_finite() {
            return Err(DriftError::InvalidSketch("sum is not finite".into()));
        }
        if self.n > 0 && !(self.min.is_finite() && self.max.is_finite() && self.min <= self.max) {
            return Err(DriftError::InvalidSketch(
                "min and max must be finite, min <= max".into(),
            ));
        }
        Ok(())
    }

    /// Adds one value (non-finite values are counted in `dropped`).
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.dropped += 1;
            return;
        }
        let last = self.edges.len() - 1;
        let bin = if x > self.edges[last] {
            last + 1
        } else if x == self.edges[last] {
            last
        } else {
            self.edges.partition_point(|&e| e <= x)
        };
        self.counts[bin] += 1;
        self.n += 1;
        self.sum += x;
        self.sum_sq += x * x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// Adds another sketch over the same edges.
    pub fn merge(&mut self, other: &Sketch) -> Result<(), DriftError> {
        if self.edges != other.edges {
            return Err(DriftError::BinMismatch("merged"));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.dropped += other.dropped;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        Ok(())
    }

    /// A fingerprint of the edges (FNV-1a over their bits), so a sketch
    /// sent without its edges can be matched to the bins it was made over.
    pub fn bins_id(&self) -> String {
        bins_id(&self.edges)
    }

    /// Mean of the values (NaN when empty).
    pub fn mean(&self) -> f64 {
        self.sum / self.n as f64
    }

    /// The CDF at each edge: share of values <= edge (counting the closed
    /// last bin at the last edge, and treating each edge as the boundary).
    fn cdf_at_edges(&self) -> Vec<f64> {
        let mut acc = self.counts[0];
        let mut out = Vec::with_capacity(self.edges.len());
        out.push(acc as f64 / self.n as f64);
        for c in &self.counts[1..self.edges.len()] {
            acc += c;
            out.push(acc as f64 / self.n as f64);
        }
        out
    }
}

/// The fingerprint of a set of edges (see [`Sketch::bins_id`]).
pub fn bins_id(edges: &[f64]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for e in edges {
        for b in e.to_bits().to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn ks_at_edges(a: &Sketch, b: &Sketch) -> f64 {
    a.cdf_at_edges()
        .iter()
        .zip(b.cdf_at_edges())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// ∫ |F_a - F_b| with each sketch's values spread evenly inside their bins
/// (the open outer bins span to the sketch's min and max).
fn wasserstein_binned(a: &Sketch, b: &Sketch) -> f64 {
    // Breakpoints: both sketches' min/max and the shared edges.
    let lo = a.min.min(b.min).min(a.edges[0]);
    let hi = a.max.max(b.max).max(a.edges[a.edges.len() - 1]);
    let mut points: Vec<f64> = vec![lo];
    points.extend(a.edges.iter().copied());
    points.push(hi);
    points.extend([a.min, a.max, b.min, b.max]);
    points.sort_unstable_by(f64::total_cmp);
    points.dedup();
    let mut total = 0.0;
    for w in points.windows(2) {
        let (x0, x1) = (w[0], w[1]);
        if x1 <= x0 {
            continue;
        }
        // Both CDFs are linear on [x0, x1]: integrate |d0 + (d1-d0) t|.
        let d0 = cdf_linear(a, x0) - cdf_linear(b, x0);
        let d1 = cdf_linear(a, x1) - cdf_linear(b, x1);
        let len = x1 - x0;
        total += if d0 * d1 >= 0.0 {
            (d0.abs() + d1.abs()) / 2.0 * len
        } else {
            (d0 * d0 + d1 * d1) / (2.0 * (d0.abs() + d1.abs())) * len
        };
    }
    total
}

/// The CDF at x with each bin's values spread evenly over the bin.
fn cdf_linear(s: &Sketch, x: f64) -> f64 {
    let n = s.n as f64;
    let last = s.edges.len() - 1;
    // Bin i spans [lo_i, hi_i]: the outer ones reach to min and max.
    let span = |i: usize| -> (f64, f64) {
        if i == 0 {
            (s.min.min(s.edges[0]), s.edges[0])
        } else if i == last + 1 {
            (s.edges[last], s.max.max(s.edges[last]))
        } else {
            (s.edges[i - 1], s.edges[i])
        }
    };
    let mut acc = 0.0;
    for (i, &c) in s.counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let (lo, hi) = span(i);
        let part = if x >= hi {
            1.0
        } else if x <= lo {
            0.0
        } else {
            (x - lo) / (hi - lo)
        };
        acc += c as f64 * part;
    }
    acc / n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(values: impl IntoIterator<Item = f64>) -> FeatureProfile {
        FeatureProfile::from_reference(&Sample::new(values), 10).unwrap()
    }

    #[test]
    fn merged_sketches_equal_one_sketch_of_everything() {
        let p = profile((0..1000).map(|i| f64::from(i) / 10.0));
        let (mut a, mut b, mut all) = (p.empty_sketch(), p.empty_sketch(), p.empty_sketch());
        for i in 0..500 {
            let x = f64::from(i) * 0.37 - 20.0;
            if i % 3 == 0 {
                a.add(x)
            } else {
                b.add(x)
            }
            all.add(x);
        }
        a.merge(&b).unwrap();
        assert_eq!(a.counts, all.counts);
        assert_eq!(a.n, all.n);
        assert_eq!((a.min, a.max), (all.min, all.max));
    }

    #[test]
    fn the_same_distribution_shows_no_drift_and_a_shift_does() {
        let p = profile((0..2000).map(|i| f64::from(i % 100)));
        let mut same = p.empty_sketch();
        let mut shifted = p.empty_sketch();
        for i in 0..1000 {
            same.add(f64::from(i % 100));
            shifted.add(f64::from(i % 100) + 30.0);
        }
        let d = p.compare(&same).unwrap();
        assert!(d.psi.abs() < 1e-12 && d.jensen_shannon < 1e-9 && d.ks_lower_bound < 1e-12);
        assert!(d.wasserstein_normed < 0.01, "{d:?}");
        let d = p.compare(&shifted).unwrap();
        assert!(
            d.psi > 1.0 && d.ks_lower_bound > 0.25 && d.chi_square_p < 1e-6,
            "{d:?}"
        );
        // A shift of 30 over a std of ~28.9 is about one std.
        assert!((d.wasserstein_normed - 30.0 / p.std).abs() < 0.1, "{d:?}");
    }

    #[test]
    fn bad_sketches_are_refused() {
        assert!(Sketch::new(vec![1.0]).is_err());
        assert!(Sketch::new(vec![2.0, 1.0]).is_err());
        let p = profile((0..100).map(f64::from));
        let mut s = p.empty_sketch();
        s.add(f64::NAN);
        assert_eq!((s.n, s.dropped), (0, 1));
        s.counts[0] = 5;
        assert!(s.validate().is_err());
        let other = profile((0..100).map(|i| f64::from(i) * 2.0)).empty_sketch();
        assert_eq!(s.merge(&other), Err(DriftError::BinMismatch("merged")));
    }
}
