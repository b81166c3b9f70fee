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
    /// Scratch for [`Adwin::add_buckets`]: the buckets one row merges
    /// into the next (sums, squared deviations), and the next row's.
    merged: (Vec<f64>, Vec<f64>),
    next_merged: (Vec<f64>, Vec<f64>),
    /// Scratch for [`Adwin::has_cut`]: each split's `n0`, `u0` and `u1`.
    n0s: Vec<f64>,
    u0s: Vec<f64>,
    u1s: Vec<f64>,
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
            merged: (Vec::new(), Vec::new()),
            next_merged: (Vec::new(), Vec::new()),
            n0s: Vec::new(),
            u0s: Vec::new(),
            u1s: Vec::new(),
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
        self.add_to_window(value, incremental);
        self.add_buckets(&[value]);
    }

    /// Counts a value in the window's width, sum and variance (its
    /// variance increment already computed).
    fn add_to_window(&mut self, value: f64, incremental: f64) {
        self.width += 1.0;
        self.variance += incremental;
        self.total += value;
    }

    /// Puts `values` (oldest first) in row 0, merging buckets as river does
    /// value by value: whenever a row reaches `cap` buckets its two oldest
    /// become one bucket of the next row. A row's buckets arrive in the
    /// same order whether values come one at a time or many, so each row
    /// takes a whole run at once ([`Adwin::fill_row`]).
    fn add_buckets(&mut self, values: &[f64]) {
        let mut merged = std::mem::take(&mut self.merged);
        let mut next = std::mem::take(&mut self.next_merged);
        let mut more = self.fill_row(0, values, None, &mut merged);
        let mut i = 1;
        while more {
            more = self.fill_row(i, &merged.0, Some(&merged.1), &mut next);
            std::mem::swap(&mut merged, &mut next);
            i += 1;
        }
        self.merged = merged;
        self.next_merged = next;
    }

    /// Appends buckets of row `i`'s size (sums `totals`, squared deviations
    /// `variances`, or none for single values) to the row. Of the row's old
    /// buckets and the new ones, the oldest `2m` pair up into buckets of
    /// the next row, put in `merged` (`m` as many merges as river's would
    /// make), and the rest stay. Returns whether anything was merged.
    fn fill_row(
        &mut self,
        i: usize,
        totals: &[f64],
        variances: Option<&[f64]>,
        merged: &mut (Vec<f64>, Vec<f64>),
    ) -> bool {
        let cap = self.cap;
        if i == self.lens.len() {
            self.lens.push(0);
            self.totals.resize(self.totals.len() + cap, 0.0);
            self.variances.resize(self.variances.len() + cap, 0.0);
        }
        let base = i * cap;
        let (held, all) = (self.lens[i], self.lens[i] + totals.len());
        let put = |adwin: &mut Adwin, at: usize, from: usize| {
            let n = totals.len() - from;
            adwin.totals[at..at + n].copy_from_slice(&totals[from..]);
            match variances {
                Some(v) => adwin.variances[at..at + n].copy_from_slice(&v[from..]),
                None => adwin.variances[at..at + n].fill(0.0),
            }
        };
        if all < cap {
            put(self, base + held, 0);
            self.lens[i] = all;
            return false;
        }
        let merges = (all + 2 - cap) / 2;
        // Dividing by a power of two and multiplying by its inverse round
        // the same exact value: the same floats as river's.
        let inv = 1.0 / (1u64 << i) as f64;
        let n = (1u64 << i) as f64;
        let merge = |t0: f64, t1: f64, v0: f64, v1: f64| {
            let (mu0, mu1) = (t0 * inv, t1 * inv);
            (t0 + t1, v0 + v1 + n * 0.5 * (mu0 - mu1) * (mu0 - mu1))
        };
        let (out_t, out_v) = merged;
        out_t.resize(merges, 0.0);
        out_v.resize(merges, 0.0);
        // Bucket j of the row's old and new buckets together.
        let bucket = |adwin: &Adwin, j: usize| {
            if j < held {
                (adwin.totals[base + j], adwin.variances[base + j])
            } else {
                let v = variances.map_or(0.0, |v| v[j - held]);
                (totals[j - held], v)
            }
        };
        // The pairs that take an old bucket, then those of new ones only.
        let with_old = merges.min(held.div_ceil(2));
        for p in 0..with_old {
            let ((t0, v0), (t1, v1)) = (bucket(self, 2 * p), bucket(self, 2 * p + 1));
            (out_t[p], out_v[p]) = merge(t0, t1, v0, v1);
        }
        let from = (2 * with_old).saturating_sub(held);
        let new_t = totals[from..from + 2 * (merges - with_old)].chunks_exact(2);
        let outs = out_t[with_old..].iter_mut().zip(&mut out_v[with_old..]);
        match variances {
            Some(vs) => {
                let new_v = vs[from..].chunks_exact(2);
                for ((t, v), (ot, ov)) in new_t.zip(new_v).zip(outs) {
                    (*ot, *ov) = merge(t[0], t[1], v[0], v[1]);
                }
            }
            None => {
                for (t, (ot, ov)) in new_t.zip(outs) {
                    (*ot, *ov) = merge(t[0], t[1], 0.0, 0.0);
                }
            }
        }
        // The rest stay, oldest first.
        if 2 * merges < held {
            self.shift_row(i, 2 * merges);
            put(self, base + held - 2 * merges, 0);
        } else {
            put(self, base, 2 * merges - held);
        }
        self.lens[i] = all - 2 * merges;
        true
    }

    /// Removes the `k` oldest buckets of row `i`.
    fn shift_row(&mut self, i: usize, k: usize) {
        let base = i * self.cap;
        let len = self.lens[i];
        self.totals.copy_within(base + k..base + len, base);
        self.variances.copy_within(base + k..base + len, base);
        self.lens[i] = len - k;
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
    ///
    /// Most splits are nowhere near the bound: a screen without divisions
    /// or roots ([`Screen`]) clears them eight at a time, and only the
    /// splits it cannot clear are tested in river's own arithmetic, oldest
    /// first, so the answer is river's.
    fn has_cut(&mut self) -> bool {
        let min_len = f64::from(self.params.min_window_length);
        let delta_prime = (2.0 * self.width.ln() / self.params.delta).ln();
        let var = self.variance / self.width;
        self.split_sums();
        let (width, n0s, u0s, u1s) = (self.width, &self.n0s, &self.u0s, &self.u1s);
        let cuts = |j: usize| {
            let (n0, u0, u1) = (n0s[j], u0s[j], u1s[j]);
            let n1 = width - n0;
            if n1 < min_len || n0 < min_len {
                return false;
            }
            let delta_mean = u0 / n0 - u1 / n1;
            let m_recip = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
            let epsilon =
                (2.0 * m_recip * var * delta_prime).sqrt() + 2.0 / 3.0 * delta_prime * m_recip;
            delta_mean.abs() > epsilon
        };
        let splits = n0s.len();
        let Some(screen) = Screen::new(var, delta_prime, width, min_len) else {
            return (0..splits).any(cuts);
        };
        const LANES: usize = 8;
        let clears = |j: usize| screen.clears(n0s[j], u0s[j], u1s[j]);
        let mut start = 0;
        while start < splits {
            let end = (start + LANES).min(splits);
            let (n0, u0, u1) = (&n0s[start..end], &u0s[start..end], &u1s[start..end]);
            let cleared = n0
                .iter()
                .zip(u0)
                .zip(u1)
                .fold(true, |all, ((&n0, &u0), &u1)| {
                    all & screen.clears(n0, u0, u1)
                });
            if !cleared && (start..end).any(|j| !clears(j) && cuts(j)) {
                return true;
            }
            start = end;
        }
        false
    }

    /// Every split's size and sums, oldest buckets first, as river's loop
    /// accumulates them: the older part's width `n0` and sum `u0`, and the
    /// newer part's sum `u1` (its width is the window's less `n0`, exactly:
    /// widths are whole numbers). The split before the newest bucket is
    /// the last; river tests none after it.
    fn split_sums(&mut self) {
        let buckets: usize = self.lens.iter().sum();
        let splits = buckets.saturating_sub(1);
        self.n0s.resize(splits, 0.0);
        self.u0s.resize(splits, 0.0);
        self.u1s.resize(splits, 0.0);
        let (mut n0, mut u0, mut u1) = (0.0, 0.0, self.total);
        let mut j = 0;
        for i in (0..self.lens.len()).rev() {
            let size = (1u64 << i) as f64;
            let base = i * self.cap;
            for &t in &self.totals[base..base + self.lens[i]] {
                if j == splits {
                    return;
                }
                n0 += size;
                u0 += t;
                u1 -= t;
                self.n0s[j] = n0;
                self.u0s[j] = u0;
                self.u1s[j] = u1;
                j += 1;
            }
        }
    }
}

/// A test that proves, without a division or a square root, that a split
/// does not cut in river's arithmetic.
///
/// River cuts where `|u0/n0 - u1/n1| > sqrt(2 m var δ') + 2/3 δ' m`, with
/// `m = 1/a + 1/b`. Leaving out the second term (which only raises the
/// bound), multiplying by `n0 n1` and squaring, then multiplying by `a b`,
/// a split cannot cut where
///
/// ```text
/// (|u0 n1 - u1 n0| + slack)² · a b  <  2 var δ' (a + b) n0² n1² · (1 - 1e-12)
/// ```
///
/// `slack = 1e-14 (|u0| n1 + |u1| n0)` covers the rounding of the two
/// products and of river's own divisions and subtraction (each within
/// 2^-53 of its operands, some 5·10⁻¹⁶ in all), and the factor
/// `1 - 1e-12` covers the roundings of both sides and of river's bound.
/// A side that overflows fails the comparison (and the split is tested
/// exactly); the screen is off unless the variance is between 1e-100 and
/// 1e100, so the right side is far from underflow and a left side that
/// underflows is far below it.
#[derive(Debug, Clone, Copy)]
struct Screen {
    /// `2 var δ' (1 - 1e-12)`.
    k: f64,
    /// The window's width.
    width: f64,
    /// `min_window_length`.
    min_len: f64,
}

impl Screen {
    fn new(var: f64, delta_prime: f64, width: f64, min_len: f64) -> Option<Screen> {
        let k = 2.0 * var * delta_prime * (1.0 - 1e-12);
        ((1e-100..=1e100).contains(&var) && k.is_finite() && k > 0.0).then_some(Screen {
            k,
            width,
            min_len,
        })
    }

    /// True when the split (older part's width and sum, newer part's sum)
    /// provably does not cut, or is not tested because a part is shorter
    /// than `min_window_length`. Branch-free, so the compiler can run
    /// several splits side by side.
    #[inline]
    fn clears(&self, n0: f64, u0: f64, u1: f64) -> bool {
        let n1 = self.width - n0;
        let (a, b) = (n0 - self.min_len + 1.0, n1 - self.min_len + 1.0);
        let d = (u0 * n1 - u1 * n0).abs();
        let slack = 1e-14 * (u0.abs() * n1 + u1.abs() * n0);
        let lhs = (d + slack) * (d + slack) * (a * b);
        let nn = n0 * n1;
        let rhs = self.k * (a + b) * (nn * nn);
        let short = (n1 < self.min_len) | (n0 < self.min_len);
        short | ((lhs < rhs) & (rhs < f64::INFINITY))
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
            for (&x, &inc) in run.iter().zip(&incs) {
                self.add_to_window(x, inc);
            }
            self.add_buckets(run);
            self.tick += run.len() as u64 - 1;
            if run.len() == to_test {
                self.detected = self.detect();
                if self.detected {
                    found.push(i + run.len() - 1);
                }
            } else {
                // The stream ends before the next test: count the last value.
                self.tick += 1;
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

    /// A small deterministic generator for the tests below.
    struct Xorshift(u64);

    impl Xorshift {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// River's cut test for one split, as written in river.
    fn river_cuts(n0: f64, n1: f64, u0: f64, u1: f64, var: f64, dp: f64, min_len: f64) -> bool {
        if n1 < min_len || n0 < min_len {
            return false;
        }
        let delta_mean = u0 / n0 - u1 / n1;
        let m_recip = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
        let epsilon = (2.0 * m_recip * var * dp).sqrt() + 2.0 / 3.0 * dp * m_recip;
        delta_mean.abs() > epsilon
    }

    #[test]
    fn the_screen_never_clears_a_split_that_cuts() {
        // Splits placed right at the bound (the difference of means within
        // a relative 1e-6 down to 1e-15 of river's epsilon either side, or
        // at half or twice it), at every scale
        // from 1e-90 to 1e90 and with offsets that make the means nearly
        // equal: wherever the screen clears, river does not cut.
        let mut rng = Xorshift(0x0dd_ba11);
        let (mut cleared, mut near) = (0, 0);
        for _ in 0..200_000 {
            let scale = 10f64.powf(rng.uniform() * 180.0 - 90.0);
            let offset = scale * [0.0, 1.0, 1e6, -1e9][(rng.uniform() * 4.0) as usize];
            let width = (2.0 + rng.uniform() * 1e6).floor();
            let min_len = (1.0 + rng.uniform() * 10.0).floor();
            let n0 = (1.0 + rng.uniform() * (width - 1.0)).floor();
            let n1 = width - n0;
            let var = scale * scale * (1e-3 + rng.uniform());
            let dp = (2.0 * width.ln() / 0.002).ln();
            let Some(screen) = Screen::new(var, dp, width, min_len) else {
                continue;
            };
            let m = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
            let eps = (2.0 * m * var * dp).sqrt() + 2.0 / 3.0 * dp * m;
            let rel = [1e-6, 1e-10, 1e-13, 1e-15][(rng.uniform() * 4.0) as usize];
            let gap = eps * (1.0 + (rng.uniform() - 0.5) * 2.0 * rel) * [1.0, 0.5, 2.0][near % 3];
            let mean1 = offset + scale * (rng.uniform() - 0.5);
            let mean0 = mean1 + if rng.uniform() < 0.5 { gap } else { -gap };
            let (u0, u1) = (mean0 * n0, mean1 * n1);
            near += 1;
            if screen.clears(n0, u0, u1) {
                cleared += 1;
                assert!(
                    !river_cuts(n0, n1, u0, u1, var, dp, min_len),
                    "cleared a cut: n0 {n0} n1 {n1} u0 {u0:e} u1 {u1:e} var {var:e}"
                );
            }
        }
        assert!(cleared > 10_000 && near > 100_000, "{cleared} of {near}");
    }

    #[test]
    fn screened_tests_answer_as_river_s_test_of_every_split() {
        // Streams at several scales, with and without changes: at every
        // test, the screened answer is the answer of river's test run on
        // every split.
        for (scale, offset, step) in [
            (1.0, 0.0, 0.3),
            (1e-80, 1e-78, 1e-81),
            (1e80, -1e82, 0.0),
            (1e-3, 1e6, 2e-4),
            (0.0, 5.0, 0.0),
        ] {
            let mut rng = Xorshift(0x5eed);
            let mut a = Adwin::new(AdwinParams::default());
            let mut tested = 0;
            for i in 0..30_000 {
                let x = offset + scale * rng.uniform() + step * f64::from((i / 4000) % 2);
                a.insert(x);
                if i % 32 != 31 || a.width <= 10.0 {
                    continue;
                }
                let min_len = f64::from(a.params.min_window_length);
                let dp = (2.0 * a.width.ln() / a.params.delta).ln();
                let var = a.variance / a.width;
                a.split_sums();
                let exact = (0..a.n0s.len()).any(|j| {
                    let n0 = a.n0s[j];
                    river_cuts(n0, a.width - n0, a.u0s[j], a.u1s[j], var, dp, min_len)
                });
                assert_eq!(a.has_cut(), exact, "scale {scale:e}, value {i}");
                tested += 1;
                if exact {
                    a.drop_oldest();
                }
            }
            assert!(tested > 900);
        }
    }
}
