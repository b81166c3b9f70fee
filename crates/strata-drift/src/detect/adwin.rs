//! ADWIN, adaptive windowing (Bifet & Gavaldà 2007), in its ADWIN2 form
//! with exponential buckets: the window is summarised as rows of buckets,
//! row i holding up to `max_buckets` summaries of 2^i values each. Every
//! `clock` values, every split of the window into an older and a newer
//! part is tested; when their means differ by more than the Hoeffding-style
//! bound, the oldest bucket is dropped and a change is reported.
//!
//! The arithmetic (the streaming variance update, the merge of two
//! buckets, the cut bound) is river's, in the same order, so detections
//! land on the same indices as `river.drift.ADWIN`.

use serde::{Deserialize, Serialize};

use super::Detector;

/// ADWIN parameters (river's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdwinParams {
    /// Confidence of the cut test: smaller means fewer, surer detections.
    pub delta: f64,
    /// Test for a change every `clock` values.
    pub clock: u32,
    /// Buckets per row before two are merged into the next row.
    pub max_buckets: usize,
    /// Neither part of a split may hold fewer values than this.
    pub min_window_length: u32,
    /// No test before the window holds more values than this.
    pub grace_period: u32,
}

impl Default for AdwinParams {
    fn default() -> Self {
        AdwinParams {
            delta: 0.002,
            clock: 32,
            max_buckets: 5,
            min_window_length: 5,
            grace_period: 10,
        }
    }
}

/// An ADWIN detector.
#[derive(Debug, Clone)]
pub struct Adwin {
    params: AdwinParams,
    /// Slots per row (`max_buckets + 1`: a row overflows by one, then
    /// merges).
    cap: usize,
    /// Row i, slot k at `i * cap + k`: the sum of the bucket's 2^i values,
    /// oldest bucket first.
    totals: Vec<f64>,
    /// The same slots: each bucket's sum of squared deviations.
    variances: Vec<f64>,
    /// Buckets held per row.
    lens: Vec<usize>,
    /// Values in the window.
    width: f64,
    /// Their sum.
    total: f64,
    /// Their sum of squared deviations from the mean.
    variance: f64,
    tick: u64,
    detected: bool,
}

impl Adwin {
    /// A fresh detector.
    pub fn new(params: AdwinParams) -> Self {
        let cap = params.max_buckets.max(1) + 1;
        Adwin {
            params,
            cap,
            totals: vec![0.0; cap],
            variances: vec![0.0; cap],
            lens: vec![0],
            width: 0.0,
            total: 0.0,
            variance: 0.0,
            tick: 0,
            detected: false,
        }
    }

    /// How many values the window holds.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// The mean of the window (0 when empty).
    pub fn estimation(&self) -> f64 {
        if self.width == 0.0 {
            0.0
        } else {
            self.total / self.width
        }
    }

    fn insert(&mut self, value: f64) {
        let mut incremental = 0.0;
        if self.width + 1.0 > 1.0 {
            let d = value - self.total / self.width;
            incremental = self.width * d * d / (self.width + 1.0);
        }
        self.push(value, incremental);
    }

    /// Inserts a value whose variance increment is already computed.
    fn push(&mut self, value: f64, incremental: f64) {
        let len = self.lens[0];
        self.totals[len] = value;
        self.variances[len] = 0.0;
        self.lens[0] = len + 1;
        self.width += 1.0;
        self.variance += incremental;
        self.total += value;
        if len + 1 == self.cap {
            self.compress();
        }
    }

    /// Removes the `k` oldest buckets of row `i`.
    fn shift_row(&mut self, i: usize, k: usize) {
        let base = i * self.cap;
        let len = self.lens[i];
        self.totals.copy_within(base + k..base + len, base);
        self.variances.copy_within(base + k..base + len, base);
        self.lens[i] = len - k;
    }

    /// Merges the two oldest buckets of every full row into the next row.
    fn compress(&mut self) {
        let cap = self.cap;
        let mut i = 0;
        while self.lens[i] == cap {
            // Dividing by a power of two and multiplying by its inverse
            // round the same exact value: the same floats as river's.
            let inv = 1.0 / (1u64 << i) as f64;
            let n = (1u64 << i) as f64;
            let base = i * cap;
            let (t0, t1) = (self.totals[base], self.totals[base + 1]);
            let (v0, v1) = (self.variances[base], self.variances[base + 1]);
            let (mu0, mu1) = (t0 * inv, t1 * inv);
            if i + 1 == self.lens.len() {
                self.lens.push(0);
                self.totals.resize(self.totals.len() + cap, 0.0);
                self.variances.resize(self.variances.len() + cap, 0.0);
            }
            let next = (i + 1) * cap + self.lens[i + 1];
            self.totals[next] = t0 + t1;
            self.variances[next] = v0 + v1 + n * 0.5 * (mu0 - mu1) * (mu0 - mu1);
            self.lens[i + 1] += 1;
            self.shift_row(i, 2);
            if self.lens[i + 1] <= self.params.max_buckets {
                break;
            }
            i += 1;
        }
    }

    /// Drops the oldest bucket from the window.
    fn drop_oldest(&mut self) {
        let last = self.lens.len() - 1;
        let n = (1u64 << last) as f64;
        let base = last * self.cap;
        let (total, variance) = (self.totals[base], self.variances[base]);
        let mu = total * (1.0 / n);
        self.width -= n;
        self.total -= total;
        let mu_window = self.total / self.width;
        self.variance -=
            variance + n * self.width * (mu - mu_window) * (mu - mu_window) / (n + self.width);
        self.shift_row(last, 1);
        if self.lens[last] == 0 {
            self.lens.pop();
            self.totals.truncate(last * self.cap);
            self.variances.truncate(last * self.cap);
        }
    }

    /// Tests every split, oldest buckets first; on a significant one drops
    /// the oldest bucket and tests again.
    fn detect(&mut self) -> bool {
        self.tick += 1;
        let p = self.params;
        if self.tick % u64::from(p.clock) != 0 || self.width <= f64::from(p.grace_period) {
            return false;
        }
        let mut changed = false;
        while self.has_cut() {
            changed = true;
            if self.width <= 0.0 {
                break;
            }
            self.drop_oldest();
        }
        changed
    }

    /// Whether any split of the window into older and newer buckets has
    /// means further apart than the bound. The running sums advance in
    /// river's order, so every split sees the same floats; the terms that
    /// depend only on the window (ln ln width, the variance) are computed
    /// once per test.
    fn has_cut(&self) -> bool {
        let min_len = f64::from(self.params.min_window_length);
        let delta_prime = (2.0 * self.width.ln() / self.params.delta).ln();
        let var = self.variance / self.width;
        let (mut n0, mut n1) = (0.0, self.width);
        let (mut u0, mut u1) = (0.0, self.total);
        for i in (0..self.lens.len()).rev() {
            let size = (1u64 << i) as f64;
            let base = i * self.cap;
            let len = self.lens[i];
            for (k, &t) in self.totals[base..base + len].iter().enumerate() {
                n0 += size;
                n1 -= size;
                u0 += t;
                u1 -= t;
                if i == 0 && k == len - 1 {
                    return false;
                }
                if n1 >= min_len && n0 >= min_len {
                    let delta_mean = u0 / n0 - u1 / n1;
                    let m_recip = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
                    let epsilon = (2.0 * m_recip * var * delta_prime).sqrt()
                        + 2.0 / 3.0 * delta_prime * m_recip;
                    if delta_mean.abs() > epsilon {
                        return true;
                    }
                }
            }
        }
        false
    }
}

impl Detector for Adwin {
    fn update(&mut self, x: f64) -> bool {
        if self.detected {
            *self = Adwin::new(self.params);
        }
        self.insert(x);
        self.detected = self.detect();
        self.detected
    }

    /// The same as updating value by value, faster: between two tests the
    /// variance increments of a run of values do not depend on one
    /// another, so their divisions are computed together (the same
    /// operations on the same floats), then the values are inserted.
    fn detections(&mut self, xs: &[f64]) -> Vec<usize> {
        let mut found = Vec::new();
        let mut increments = Vec::new();
        let mut incs = Vec::new();
        let clock = u64::from(self.params.clock);
        let mut i = 0;
        while i < xs.len() {
            if self.detected {
                *self = Adwin::new(self.params);
            }
            // Values up to and including the next one that tests.
            let to_test = (clock - self.tick % clock) as usize;
            let run = &xs[i..(i + to_test).min(xs.len())];
            // Running totals in river's order, then every increment.
            increments.clear();
            let (mut total, mut width) = (self.total, self.width);
            increments.extend(run.iter().map(|&x| {
                let (t, w) = (total, width);
                total += x;
                width += 1.0;
                (x, t, w)
            }));
            incs.clear();
            incs.extend(increments.iter().map(|&(x, t, w)| {
                if w + 1.0 > 1.0 {
                    let d = x - t / w;
                    w * d * d / (w + 1.0)
                } else {
                    0.0
                }
            }));
            for (k, (&x, &inc)) in run.iter().zip(&incs).enumerate() {
                self.push(x, inc);
                if k + 1 < run.len() {
                    self.tick += 1;
                } else {
                    self.detected = self.detect();
                    if self.detected {
                        found.push(i + k);
                    }
                }
            }
            i += run.len();
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_grows_on_a_constant_stream() {
        let mut a = Adwin::new(AdwinParams::default());
        for _ in 0..5000 {
            assert!(!a.update(1.0));
        }
        assert_eq!(a.width(), 5000.0);
        assert_eq!(a.estimation(), 1.0);
    }

    #[test]
    fn a_mean_shift_is_found_soon_after_it_happens() {
        let mut a = Adwin::new(AdwinParams::default());
        let mut xs: Vec<f64> = (0..1000).map(|i| f64::from(i % 2)).collect();
        xs.extend((0..1000).map(|i| 4.0 + f64::from(i % 4)));
        let found = a.detections(&xs);
        assert!(!found.is_empty());
        assert!(found[0] >= 1000 && found[0] < 1100, "{found:?}");
    }

    #[test]
    fn a_whole_stream_at_once_detects_as_value_by_value() {
        let mut state = 0x1234_5678_u64;
        let xs: Vec<f64> = (0..20_000)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f64 / (1u64 << 53) as f64 + [0.0, 0.8, 0.2][(i / 3000) % 3]
            })
            .collect();
        for clock in [1, 7, 32] {
            let params = AdwinParams {
                clock,
                ..AdwinParams::default()
            };
            let mut one = Adwin::new(params);
            let by_value: Vec<usize> = (0..xs.len()).filter(|&i| one.update(xs[i])).collect();
            let mut all = Adwin::new(params);
            assert!(!by_value.is_empty());
            assert_eq!(all.detections(&xs), by_value, "clock {clock}");
            assert_eq!((all.width(), all.variance), (one.width(), one.variance));
        }
    }

    #[test]
    fn bucket_rows_hold_every_value() {
        let mut a = Adwin::new(AdwinParams::default());
        for i in 0..1000 {
            a.update(f64::from(i % 7));
        }
        let counted: f64 = a
            .lens
            .iter()
            .enumerate()
            .map(|(i, &len)| len as f64 * (1u64 << i) as f64)
            .sum();
        assert_eq!(counted, a.width());
        assert!(a.lens.iter().all(|&len| len <= 5));
    }
}
