//! Window features: the statistics of [`Feature`] and FFT band energies,
//! computed from the readings of one closed window.
//!
//! Band energy, precisely: the window `[start, start + size)` is laid on a
//! grid of `N = size / period` slots, where `period` is the sample period in
//! whole nanoseconds (the signal's `resample_ms`, or `1e9 / sample_rate_hz`
//! rounded). A reading at `ts` goes to slot `(ts - start) / period` (readings
//! past slot `N - 1` are left out of the FFT; if two share a slot the later
//! wins) with the window mean (over all its readings) subtracted; empty slots
//! hold 0. With `X_k` the DFT of the slots (`X_k = Σ_n x_n e^{-2πikn/N}`),
//! `f_k = k * fs / N` and `fs = 1e9 / period`, the energy of band `[lo, hi)`
//! is the one-sided sum over `0 <= k <= N/2` with `lo <= f_k < hi` of
//! `w_k |X_k|² / N`, where `w_k = 1` for `k = 0` and (even `N`) `k = N/2`,
//! else 2. By Parseval, bands that tile `[0, fs/2]` add up to `Σ x_n²`, the
//! window's energy about its mean, provided the last one ends above `fs/2`
//! (a band is half-open, so one ending at exactly `fs/2` leaves out the
//! bin there, for even `N`): `N` times the variance when every slot is
//! filled. Scaling the signal by `c` scales band energies by `c²`.
//!
//! Reproducibility: the statistics use only correctly rounded operations
//! (`+ - * /`, `sqrt`) in a fixed order, and the FFT is `rustfft`'s scalar
//! planner rather than its SIMD kernels (which are picked by CPU features),
//! so a replay gives bit-identical features on any machine of the same
//! architecture. Across architectures the FFT's twiddle factors come from
//! the platform's `sin`/`cos` and may differ in the last bit.

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlannerScalar};

use crate::config::Feature;

/// Largest FFT, in slots.
pub const MAX_FFT_LEN: usize = 1 << 20;

/// The FFT part of a window's features.
pub(crate) struct Spectrum {
    period_ns: i64,
    n: usize,
    plan: Arc<dyn Fft<f64>>,
    /// Per band, the bin range `k_lo..k_hi`.
    bands: Vec<(usize, usize)>,
    /// The slots, transformed in place into the bins.
    slots: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl std::fmt::Debug for Spectrum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spectrum")
            .field("period_ns", &self.period_ns)
            .field("n", &self.n)
            .field("bands", &self.bands)
            .finish_non_exhaustive()
    }
}

impl Clone for Spectrum {
    fn clone(&self) -> Self {
        Spectrum {
            period_ns: self.period_ns,
            n: self.n,
            plan: Arc::clone(&self.plan),
            bands: self.bands.clone(),
            slots: self.slots.clone(),
            scratch: self.scratch.clone(),
        }
    }
}

impl Spectrum {
    /// A spectrum of `n` slots of `period_ns` each, for bands in Hz. The
    /// caller has checked `2 <= n <= MAX_FFT_LEN`.
    pub fn new(
        planner: &mut FftPlannerScalar<f64>,
        period_ns: i64,
        n: usize,
        bands_hz: &[[f64; 2]],
    ) -> Spectrum {
        let plan = planner.plan_fft_forward(n);
        let fs = 1e9 / period_ns as f64;
        let bands = bands_hz
            .iter()
            .map(|&[lo, hi]| {
                let in_band = |k: usize| {
                    let f = bin_frequency(k, fs, n);
                    lo <= f && f < hi
                };
                let k_lo = (0..=n / 2).find(|&k| in_band(k)).unwrap_or(n / 2 + 1);
                let k_hi = (k_lo..=n / 2).find(|&k| !in_band(k)).unwrap_or(n / 2 + 1);
                (k_lo, k_hi.max(k_lo))
            })
            .collect();
        Spectrum {
            period_ns,
            n,
            slots: vec![Complex::default(); n],
            scratch: vec![Complex::default(); plan.get_inplace_scratch_len()],
            plan,
            bands,
        }
    }

    /// Band energies of the readings (sorted by time, all in the window
    /// starting at `start`, `ts` as long as `values`) into `out`, one per
    /// band.
    fn band_energies(
        &mut self,
        start: i64,
        ts: &[i64],
        values: &[f64],
        mean: f64,
        out: &mut [f64],
    ) {
        self.slots.fill(Complex::default());
        for (&t, &v) in ts.iter().zip(values) {
            let slot = ((t - start) / self.period_ns) as usize;
            if let Some(s) = self.slots.get_mut(slot) {
                s.re = v - mean;
            }
        }
        self.plan
            .process_with_scratch(&mut self.slots, &mut self.scratch);
        let n = self.n;
        for (&(k_lo, k_hi), energy) in self.bands.iter().zip(out.iter_mut()) {
            let mut sum = 0.0;
            for k in k_lo..k_hi {
                let weight = if k == 0 || 2 * k == n { 1.0 } else { 2.0 };
                sum += weight * self.slots[k].norm_sqr();
            }
            *energy = sum / n as f64;
        }
    }
}

/// The frequency of DFT bin `k` of `n` at sample rate `fs`.
pub fn bin_frequency(k: usize, fs: f64, n: usize) -> f64 {
    k as f64 * fs / n as f64
}

/// The name of the band `[lo, hi)`: `band_10_50`, `band_12.5_50`.
pub fn band_name(lo: f64, hi: f64) -> String {
    format!("band_{lo}_{hi}")
}

/// What a window computes, with its scratch space.
#[derive(Debug, Clone)]
pub(crate) struct FeatureSet {
    stats: Vec<Feature>,
    spectrum: Option<Spectrum>,
}

impl FeatureSet {
    pub fn new(stats: Vec<Feature>, spectrum: Option<Spectrum>) -> FeatureSet {
        FeatureSet { stats, spectrum }
    }

    /// Number of values [`FeatureSet::compute`] writes.
    pub fn width(&self) -> usize {
        self.stats.len() + self.spectrum.as_ref().map_or(0, |s| s.bands.len())
    }

    /// Computes the features of a window's readings (in time order, `ts` as
    /// long as `values`) into `out` (`width()` long). Returns false if a
    /// value came out non-finite or too large for `f32`, or there are no
    /// readings.
    pub fn compute(&mut self, start: i64, ts: &[i64], values: &[f64], out: &mut [f64]) -> bool {
        let m = Moments::of(values);
        if m.n == 0 {
            return false;
        }
        for (feature, slot) in self.stats.iter().zip(out.iter_mut()) {
            *slot = m.feature(*feature);
        }
        if let Some(spectrum) = &mut self.spectrum {
            let bands = &mut out[self.stats.len()..];
            spectrum.band_energies(start, ts, values, m.mean, bands);
        }
        out.iter().all(|v| v.is_finite() && (*v as f32).is_finite())
    }
}

/// Sums over a window's values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Moments {
    pub n: usize,
    pub mean: f64,
    /// Central moments m_2, m_3, m_4 (divided by n).
    pub m2: f64,
    pub m3: f64,
    pub m4: f64,
    pub min: f64,
    pub max: f64,
    /// Σx² / n.
    pub mean_square: f64,
}

impl Moments {
    /// Two passes: the mean, then central moments about it (one pass with
    /// raw power sums loses precision when the mean is large).
    pub fn of(values: &[f64]) -> Moments {
        let n = values.len();
        let mut sum = 0.0;
        for &x in values {
            sum += x;
        }
        let nf = n as f64;
        let mean = sum / nf;
        let (mut s2, mut s3, mut s4, mut sq) = (0.0, 0.0, 0.0, 0.0);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for &x in values {
            let d = x - mean;
            let d2 = d * d;
            s2 += d2;
            s3 += d2 * d;
            s4 += d2 * d2;
            sq += x * x;
            min = min.min(x);
            max = max.max(x);
        }
        Moments {
            n,
            mean,
            m2: s2 / nf,
            m3: s3 / nf,
            m4: s4 / nf,
            min,
            max,
            mean_square: sq / nf,
        }
    }

    /// Whether every value is the same.
    fn constant(&self) -> bool {
        self.min == self.max
    }

    pub fn feature(&self, f: Feature) -> f64 {
        match f {
            Feature::Count => self.n as f64,
            Feature::Mean => self.mean,
            // A constant window whose sum does not add up exactly (ten
            // readings of 0.1) has a mean one rounding off its value, and
            // so tiny equal deviations: no spread, and no shape, all the
            // same.
            Feature::Std if self.constant() => 0.0,
            Feature::Std => self.m2.sqrt(),
            Feature::Min => self.min,
            Feature::Max => self.max,
            Feature::Rms => self.mean_square.sqrt(),
            Feature::PeakToPeak => self.max - self.min,
            // A spread so small that its square underflows (readings of
            // 1e-160) has no shape to measure either: 0, not 0/0, which
            // would refuse the whole window.
            Feature::Kurtosis if self.m2 * self.m2 > 0.0 && !self.constant() => {
                self.m4 / (self.m2 * self.m2) - 3.0
            }
            Feature::Skewness if self.m2 * self.m2.sqrt() > 0.0 && !self.constant() => {
                self.m3 / (self.m2 * self.m2.sqrt())
            }
            Feature::Kurtosis | Feature::Skewness => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(values: &[f64], f: Feature) -> f64 {
        Moments::of(values).feature(f)
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn statistics_against_hand_computed_values() {
        let x = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(stat(&x, Feature::Count), 8.0);
        assert_eq!(stat(&x, Feature::Mean), 5.0);
        // Deviations -3,-1,-1,-1,0,0,2,4: Σd² = 32, m2 = 4.
        assert_eq!(stat(&x, Feature::Std), 2.0);
        assert_eq!(stat(&x, Feature::Min), 2.0);
        assert_eq!(stat(&x, Feature::Max), 9.0);
        assert_eq!(stat(&x, Feature::PeakToPeak), 7.0);
        // Σx² = 4+16+16+16+25+25+49+81 = 232, /8 = 29.
        assert!(close(stat(&x, Feature::Rms), 29f64.sqrt(), 1e-12));
        // Σd³ = -27-1-1-1+0+0+8+64 = 42, m3 = 5.25, skew = 5.25 / 8.
        assert!(close(stat(&x, Feature::Skewness), 0.65625, 1e-12));
        // Σd⁴ = 81+1+1+1+0+0+16+256 = 356, m4 = 44.5, kurt = 44.5/16 - 3.
        assert!(close(stat(&x, Feature::Kurtosis), -0.21875, 1e-12));
    }

    #[test]
    fn constant_and_single_windows_have_zero_shape() {
        // 0.1 ten times, 21.3 sixty times: sums that do not add up exactly.
        let (tenths, odd) = ([0.1; 10], [21.3; 60]);
        for x in [
            &[3.0][..],
            &[3.0, 3.0, 3.0, 3.0],
            &tenths,
            &odd,
            &[1e6 + 0.1; 100],
        ] {
            assert_eq!(stat(x, Feature::Std), 0.0);
            assert_eq!(stat(x, Feature::Skewness), 0.0);
            assert_eq!(stat(x, Feature::Kurtosis), 0.0);
            assert!(close(stat(x, Feature::Rms), x[0], 1e-12 * x[0]));
        }
        // Two distinct values: symmetric, kurtosis exactly 1 - 3.
        assert!(close(stat(&[1.0, 3.0], Feature::Kurtosis), -2.0, 1e-12));
        assert!(close(stat(&[1.0, 3.0], Feature::Skewness), 0.0, 1e-12));
        // A spread whose square underflows: no shape, and a number.
        assert_eq!(stat(&[0.0, 1e-160], Feature::Kurtosis), 0.0);
        assert_eq!(stat(&[0.0, 1e-160, 0.0], Feature::Skewness), 0.0);
    }

    #[test]
    fn names() {
        assert_eq!(band_name(10.0, 50.0), "band_10_50");
        assert_eq!(band_name(12.5, 50.0), "band_12.5_50");
    }

    /// 8 slots at 1 kHz (bins 125 Hz apart, Nyquist 500 Hz).
    fn spectrum(bands: &[[f64; 2]]) -> Spectrum {
        Spectrum::new(&mut FftPlannerScalar::new(), 1_000_000, 8, bands)
    }

    #[test]
    fn band_bins_follow_the_half_open_rule() {
        let s = spectrum(&[
            [0.0, 125.0],
            [125.0, 375.0],
            [375.0, 1000.0],
            [600.0, 700.0],
        ]);
        assert_eq!(s.bands, vec![(0, 1), (1, 3), (3, 5), (5, 5)]);
    }

    #[test]
    fn band_energy_of_a_cosine() {
        // x_n = cos(2π·250·n/1000) = 1, 0, -1, 0, ...: bin 2 (250 Hz). Its
        // mean is 0, X_2 = N/2 = 4, so energy = 2·16/8 = 4 = Σx².
        let ts: Vec<i64> = (0..8).map(|i| i * 1_000_000).collect();
        let x = [1.0, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0, 0.0];
        let mut s = spectrum(&[[200.0, 300.0], [0.0, 200.0], [300.0, 501.0]]);
        let mut out = [0.0; 3];
        s.band_energies(0, &ts, &x, 0.0, &mut out);
        assert!(close(out[0], 4.0, 1e-12), "{out:?}");
        assert!(close(out[1], 0.0, 1e-12), "{out:?}");
        assert!(close(out[2], 0.0, 1e-12), "{out:?}");
    }

    #[test]
    fn nyquist_bin_counts_once_and_gaps_are_zero_after_the_mean() {
        // Alternating ±1 is all at 500 Hz (k = N/2): X_4 = 8, energy 64/8 = 8.
        let ts: Vec<i64> = (0..8).map(|i| i * 1_000_000).collect();
        let x = [1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0];
        let mut s = spectrum(&[[0.0, 1000.0]]);
        let mut out = [0.0];
        s.band_energies(0, &ts, &x, 0.0, &mut out);
        assert!(close(out[0], 8.0, 1e-12), "{out:?}");
        // Only slot 3 filled, with 5 - mean(5) = 0: no energy anywhere.
        let mut out = [1.0];
        s.band_energies(0, &[3_000_000], &[5.0], 5.0, &mut out);
        assert_eq!(out[0], 0.0);
    }

    #[test]
    fn non_finite_features_refuse_the_window() {
        let mut set = FeatureSet::new(vec![Feature::Rms], None);
        let mut out = [0.0];
        // Σx² overflows.
        assert!(!set.compute(0, &[1, 2], &[1e200, 1e200], &mut out));
        // Finite in f64 but not in f32.
        let mut set = FeatureSet::new(vec![Feature::Max], None);
        assert!(!set.compute(0, &[1], &[1e39], &mut out));
        assert!(set.compute(0, &[1], &[1e38], &mut out));
        assert!(!set.compute(0, &[], &[], &mut out));
    }
}
