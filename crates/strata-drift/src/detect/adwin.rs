//! ADWIN, adaptive windowing (Bifet & Gavaldà 2007), in its ADWIN2 form
//! with exponential buckets: the window is summarised as rows of buckets,
//! row i holding up to `max_buckets` summaries of 2^i values each. Every
//! `clock` values, every split of the window into an older and a newer
//! part is tested; when their means differ by more than the Hoeffding-style
//! bound, the oldest bucket is dropped and a change is reported.
//!
//! The arithmetic (the streaming variance update, the merge of two
//! buckets, the cut bound) is river's, in the same order, so detections
//! land on the same indices as `river.drift.ADWIN`. Two things make it
//! fast without changing an answer: the rows take the values between two
//! tests in one pass (the same merges, in the same order), and a screen
//! without divisions or roots clears the splits that provably do not cut,
//! so river's own test runs only on the few near the bound.

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

/// Values put in the bucket rows at a time: a row then receives at most
/// this many buckets, and passes at most half as many (plus one) on.
const RUN: usize = 32;

/// Buckets arriving at a row: sums and squared deviations.
#[derive(Debug, Clone, Copy)]
struct Arriving {
    totals: [f64; RUN],
    variances: [f64; RUN],
    len: usize,
}

impl Default for Arriving {
    fn default() -> Self {
        Arriving {
            totals: [0.0; RUN],
            variances: [0.0; RUN],
            len: 0,
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
    /// Scratch for [`Adwin::has_cut`]: the buckets oldest first, and each
    /// split's `n0` and `u0`.
    split_totals: Vec<f64>,
    newest: f64,
    n0s: Vec<f64>,
    u0s: Vec<f64>,
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
            split_totals: Vec::new(),
            newest: 0.0,
            n0s: Vec::new(),
            u0s: Vec::new(),
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
    /// takes a whole run at once ([`Adwin::fill_row`]), up to [`RUN`]
    /// values at a time.
    fn add_buckets(&mut self, values: &[f64]) {
        let mut bufs = [Arriving::default(), Arriving::default()];
        for run in values.chunks(RUN) {
            // Single values: their squared deviations are zero (the buffer
            // may hold a higher row's from the last run).
            bufs[0].totals[..run.len()].copy_from_slice(run);
            bufs[0].variances[..run.len()].fill(0.0);
            bufs[0].len = run.len();
            // Row i reads bufs[i % 2] and passes its merges on in the other.
            let mut i = 0;
            loop {
                let [a, b] = &mut bufs;
                let (arriving, merged) = if i % 2 == 0 { (&*a, b) } else { (&*b, a) };
                if arriving.len == 0 {
                    break;
                }
                self.fill_row(i, arriving, i > 0, merged);
                i += 1;
            }
        }
    }

    /// Appends the `arriving` buckets (of row `i`'s size; their squared
    /// deviations are zero unless `with_variances`) to row `i`. Of the
    /// row's old buckets and the new ones, the oldest `2m` pair up into
    /// buckets of the next row, put in `merged` (`m` as many merges as
    /// river's would make), and the rest stay.
    fn fill_row(
        &mut self,
        i: usize,
        arriving: &Arriving,
        with_variances: bool,
        merged: &mut Arriving,
    ) {
        let cap = self.cap;
        if i == self.lens.len() {
            self.lens.push(0);
            self.totals.resize(self.totals.len() + cap, 0.0);
            self.variances.resize(self.variances.len() + cap, 0.0);
        }
        let base = i * cap;
        let (new_t, new_v) = (
            &arriving.totals[..arriving.len],
            &arriving.variances[..arriving.len],
        );
        let held = self.lens[i];
        let all = held + new_t.len();
        let merges = if all < cap { 0 } else { (all + 2 - cap) / 2 };
        merged.len = merges;
        // Dividing by a power of two and multiplying by its inverse round
        // the same exact value: the same floats as river's.
        let inv = 1.0 / (1u64 << i) as f64;
        let n = (1u64 << i) as f64;
        let merge = |t0: f64, t1: f64, v0: f64, v1: f64| {
            let (mu0, mu1) = (t0 * inv, t1 * inv);
            (t0 + t1, v0 + v1 + n * 0.5 * (mu0 - mu1) * (mu0 - mu1))
        };
        // Bucket j of the row's old and new buckets together.
        let bucket = |j: usize| {
            if j < held {
                (self.totals[base + j], self.variances[base + j])
            } else {
                (new_t[j - held], new_v[j - held])
            }
        };
        // The pairs that take an old bucket, then those of new ones only.
        let with_old = merges.min(held.div_ceil(2));
        for p in 0..with_old {
            let ((t0, v0), (t1, v1)) = (bucket(2 * p), bucket(2 * p + 1));
            (merged.totals[p], merged.variances[p]) = merge(t0, t1, v0, v1);
        }
        let from = (2 * with_old).saturating_sub(held);
        let to = from + 2 * (merges - with_old);
        let outs = merged.totals[with_old..merges]
            .iter_mut()
            .zip(&mut merged.variances[with_old..merges]);
        let pairs = new_t[from..to].chunks_exact(2);
        if with_variances {
            for ((t, v), (ot, ov)) in pairs.zip(new_v[from..to].chunks_exact(2)).zip(outs) {
                (*ot, *ov) = merge(t[0], t[1], v[0], v[1]);
            }
        } else {
            for (t, (ot, ov)) in pairs.zip(outs) {
                (*ot, *ov) = merge(t[0], t[1], 0.0, 0.0);
            }
        }
        // The rest stay, oldest first.
        let (at, from) = if 2 * merges < held {
            self.shift_row(i, 2 * merges);
            (base + held - 2 * merges, 0)
        } else {
            (base, 2 * merges - held)
        };
        let rest = new_t.len() - from;
        self.totals[at..at + rest].copy_from_slice(&new_t[from..]);
        self.variances[at..at + rest].copy_from_slice(&new_v[from..]);
        self.lens[i] = all - 2 * merges;
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
        let (width, total) = (self.width, self.total);
        let (ts, n0s, u0s) = (&self.split_totals, &self.n0s, &self.u0s);
        // River tests the splits whose parts both hold `min_len` values:
        // `n0` grows split by split, so they are a range.
        let first = n0s.partition_point(|&n0| n0 < min_len);
        let end = n0s.partition_point(|&n0| width - n0 >= min_len);
        // River's test of split j, with the newer part's sum as river's
        // loop has it (the window's sum less each older bucket in turn).
        let cuts = |j: usize, u1: f64| {
            let (n0, u0) = (n0s[j], u0s[j]);
            let n1 = width - n0;
            let delta_mean = u0 / n0 - u1 / n1;
            let m_recip = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
            let epsilon =
                (2.0 * m_recip * var * delta_prime).sqrt() + 2.0 / 3.0 * delta_prime * m_recip;
            delta_mean.abs() > epsilon
        };
        let u1_at = |j: usize| ts[..=j].iter().fold(total, |u1, &t| u1 - t);
        let abs_sum = ts.iter().map(|t| t.abs()).sum::<f64>() + self.newest.abs();
        let Some(screen) = Screen::new(var, delta_prime, width, total, abs_sum, min_len, ts.len())
        else {
            let mut u1 = total;
            return (0..end).any(|j| {
                u1 -= ts[j];
                j >= first && cuts(j, u1)
            });
        };
        const LANES: usize = 8;
        let mut start = first;
        while start < end {
            let stop = (start + LANES).min(end);
            let cleared = n0s[start..stop]
                .iter()
                .zip(&u0s[start..stop])
                .fold(true, |all, (&n0, &u0)| all & screen.clears(n0, u0));
            if !cleared
                && (start..stop).any(|j| !screen.clears(n0s[j], u0s[j]) && cuts(j, u1_at(j)))
            {
                return true;
            }
            start = stop;
        }
        false
    }

    /// Every split's bucket and sums, oldest buckets first, as river's loop
    /// accumulates them: the bucket it moves to the older part, and that
    /// part's width `n0` and sum `u0` (the newer part's width is the
    /// window's less `n0`, exactly: widths are whole numbers). The split
    /// before row 0's newest bucket is the last; river tests none after it
    /// (that bucket's sum is kept in `newest`).
    fn split_sums(&mut self) {
        self.split_totals.clear();
        for i in (0..self.lens.len()).rev() {
            let base = i * self.cap;
            self.split_totals
                .extend_from_slice(&self.totals[base..base + self.lens[i]]);
        }
        // Like river's loop, only a newest bucket in row 0 is left out (with
        // one bucket per row, row 0 can be empty).
        self.newest = match self.lens[0] {
            0 => 0.0,
            _ => self.split_totals.pop().unwrap_or(0.0),
        };
        let splits = self.split_totals.len();
        self.n0s.resize(splits, 0.0);
        self.u0s.resize(splits, 0.0);
        let (mut n0, mut u0) = (0.0, 0.0);
        let mut j = 0;
        for i in (0..self.lens.len()).rev() {
            let size = (1u64 << i) as f64;
            let count = self.lens[i].min(splits - j);
            for (&t, (n, u)) in self.split_totals[j..j + count].iter().zip(
                self.n0s[j..j + count]
                    .iter_mut()
                    .zip(&mut self.u0s[j..j + count]),
            ) {
                n0 += size;
                u0 += t;
                (*n, *u) = (n0, u0);
            }
            j += count;
        }
    }
}

/// A test that proves, without a division or a square root, that a split
/// does not cut in river's arithmetic.
///
/// River cuts where `|u0/n0 - u1/n1| > sqrt(2 m var δ') + 2/3 δ' m`, with
/// `m = 1/a + 1/b`, `a = n0 - min + 1`, `b = n1 - min + 1`. In real numbers
/// `u1 = T - u0` and `u0/n0 - u1/n1 = (u0 W - T n0) / (n0 n1)` (`T`, `W`
/// the window's sum and width). Leaving out the second term of the bound
/// (which only raises it), multiplying by `n0 n1`, squaring and
/// multiplying by `a b`, a split cannot cut where
///
/// ```text
/// (|u0 W - T n0| + slack)² · a b  <  2 var δ' (a + b) n0² n1² · (1 - 1e-12)
/// ```
///
/// `slack = 1e-11 · W · Σ|bucket sums|` covers every rounding between
/// this and river's arithmetic: river's `u1` is the window's sum less one
/// bucket at a time (at most 1,000 roundings here, each within 2^-53 of
/// `Σ|bucket sums|`), the two products, and river's divisions and
/// subtraction; the factor `1 - 1e-12` covers the roundings of both sides
/// and of river's bound. A side that overflows fails the comparison (and
/// the split is tested exactly); the screen is off unless the variance is
/// between 1e-100 and 1e100, so the right side is far from underflow and
/// a left side that underflows is far below it.
#[derive(Debug, Clone, Copy)]
struct Screen {
    /// `2 var δ' (a + b) (1 - 1e-12)`, the same for every split.
    k: f64,
    width: f64,
    total: f64,
    slack: f64,
    /// `min_window_length - 1`.
    less: f64,
}

impl Screen {
    fn new(
        var: f64,
        delta_prime: f64,
        width: f64,
        total: f64,
        abs_sum: f64,
        min_len: f64,
        buckets: usize,
    ) -> Option<Screen> {
        let a_plus_b = width - 2.0 * min_len + 2.0;
        let k = 2.0 * var * delta_prime * a_plus_b * (1.0 - 1e-12);
        let slack = 1e-11 * width * abs_sum;
        let usable = (1e-100..=1e100).contains(&var)
            && k.is_finite()
            && k > 0.0
            && slack.is_finite()
            && buckets <= 1000;
        usable.then_some(Screen {
            k,
            width,
            total,
            slack,
            less: min_len - 1.0,
        })
    }

    /// True when the split (the older part's width and sum) provably does
    /// not cut. Branch-free, so the compiler runs several side by side.
    #[inline]
    fn clears(&self, n0: f64, u0: f64) -> bool {
        let n1 = self.width - n0;
        let d = (u0 * self.width - self.total * n0).abs() + self.slack;
        let lhs = d * d * ((n0 - self.less) * (n1 - self.less));
        let nn = n0 * n1;
        let rhs = self.k * (nn * nn);
        (lhs < rhs) & (rhs < f64::INFINITY)
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
        for clock in [1, 7, 32, 100] {
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
            // The same buckets, down to their squared deviations.
            assert_eq!(all.lens, one.lens, "clock {clock}");
            for (i, &len) in all.lens.iter().enumerate() {
                let row = i * all.cap..i * all.cap + len;
                assert_eq!(
                    all.totals[row.clone()],
                    one.totals[row.clone()],
                    "clock {clock}"
                );
                assert_eq!(
                    all.variances[row.clone()],
                    one.variances[row],
                    "clock {clock}"
                );
            }
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
            let m = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
            let eps = (2.0 * m * var * dp).sqrt() + 2.0 / 3.0 * dp * m;
            let rel = [1e-6, 1e-10, 1e-13, 1e-15][(rng.uniform() * 4.0) as usize];
            let gap = eps * (1.0 + (rng.uniform() - 0.5) * 2.0 * rel) * [1.0, 0.5, 2.0][near % 3];
            let mean1 = offset + scale * (rng.uniform() - 0.5);
            let mean0 = mean1 + if rng.uniform() < 0.5 { gap } else { -gap };
            let (u0, u1) = (mean0 * n0, mean1 * n1);
            // The smallest slack the screen can have: no bucket sums cancel.
            let abs_sum = u0.abs() + u1.abs();
            let Some(screen) = Screen::new(var, dp, width, u0 + u1, abs_sum, min_len, 100) else {
                continue;
            };
            near += 1;
            if n0 < min_len || n1 < min_len {
                continue;
            }
            if screen.clears(n0, u0) {
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
                let mut u1 = a.total;
                let exact = (0..a.n0s.len()).any(|j| {
                    u1 -= a.split_totals[j];
                    let n0 = a.n0s[j];
                    river_cuts(n0, a.width - n0, a.u0s[j], u1, var, dp, min_len)
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
