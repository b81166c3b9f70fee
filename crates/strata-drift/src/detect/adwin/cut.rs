//! ADWIN's test: does any split of the window into an older and a newer
//! part have means further apart than the bound?
//!
//! River walks the buckets oldest first, moving each into the older part
//! and testing the split, with divisions and a square root per split. Most
//! splits are nowhere near the bound: a screen of multiplications only
//! ([`Screen`]) proves them uncut, and river's own test runs on the rest,
//! oldest first, so the answer is river's.

use super::AdwinParams;

use super::buckets::Buckets;
use super::explicit::cuts;

/// The test's scratch space, kept between tests.
#[derive(Debug, Clone, Default)]
pub(super) struct CutTest {
    /// The tree's count and number of rows at the last test (no rows
    /// after a reset).
    last_count: u64,
    last_top: usize,
    /// Where each row's splits start in the arrays below.
    begins: Vec<usize>,
    /// How many splits the arrays below hold.
    splits: usize,
    /// The splits, oldest first: the bucket river moves into the older
    /// part, and that part's width `n0` and sum `u0` as river's loop
    /// accumulates them (the newer part's width is the window's less
    /// `n0`, exactly: widths are whole numbers), and the sum of the
    /// buckets' magnitudes so far.
    totals: Vec<f64>,
    n0s: Vec<f64>,
    u0s: Vec<f64>,
    magnitudes: Vec<f64>,
    /// A lower bound of δ' for the screen: river's δ' at `dp_width`
    /// values. δ' only grows with the width, so it bounds δ' for any wider
    /// window; it is recomputed when the window has grown a quarter.
    dp_floor: f64,
    dp_width: f64,
}

/// The window's width, sum and sum of squared deviations.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Window {
    pub width: f64,
    pub total: f64,
    pub variance: f64,
}

/// River's `δ' = ln(2 ln(width) / δ)`.
fn delta_prime(width: f64, delta: f64) -> f64 {
    (2.0 * width.ln() / delta).ln()
}

impl CutTest {
    /// Forgets the window (the detector starts afresh).
    pub fn reset(&mut self) {
        self.dp_floor = 0.0;
        self.dp_width = f64::INFINITY;
        self.last_top = 0;
    }

    /// Whether any split of the window `b` holds cuts, in river's answer.
    #[inline(always)]
    pub fn has_cut(&mut self, b: &Buckets, w: Window, params: &AdwinParams) -> bool {
        let min_len = f64::from(params.min_window_length);
        let var = w.variance / w.width;
        let newest = self.split_sums(b);
        let count = self.splits;
        let (ts, n0s, u0s) = (
            &self.totals[..count],
            &self.n0s[..count],
            &self.u0s[..count],
        );
        // River tests the splits whose parts both hold `min_len` values:
        // `n0` grows split by split, so they are a range, and only a few
        // splits at either end fall outside it.
        let mut first = 0;
        while first < n0s.len() && n0s[first] < min_len {
            first += 1;
        }
        let mut end = n0s.len();
        while end > first && w.width - n0s[end - 1] < min_len {
            end -= 1;
        }
        if first >= end {
            return false;
        }
        // River's test of split j, with the newer part's sum as river's
        // loop has it (the window's sum less each older bucket in turn).
        let mut exact = None;
        let mut exact_dp = || *exact.get_or_insert_with(|| delta_prime(w.width, params.delta));
        let u1_at = |j: usize| ts[..=j].iter().fold(w.total, |u1, &t| u1 - t);
        let cuts_at = |j: usize, dp: f64| {
            let n0 = n0s[j];
            cuts(n0, w.width - n0, u0s[j], u1_at(j), var, dp, min_len)
        };
        if !(w.width >= self.dp_width && w.width < 1.25 * self.dp_width) {
            self.dp_width = w.width;
            self.dp_floor = exact_dp();
        }
        let magnitude = count.checked_sub(1).map_or(0.0, |j| self.magnitudes[j]) + newest.abs();
        let screen = Screen::new(
            var,
            self.dp_floor * (1.0 - 1e-12),
            w,
            magnitude,
            min_len,
            ts.len(),
        );
        let Some(screen) = screen else {
            let dp = exact_dp();
            return (first..end).any(|j| cuts_at(j, dp));
        };
        // One branch-free pass (which the compiler vectorizes), then river's
        // own test of what the screen could not clear, oldest first.
        let cleared = n0s[first..end]
            .iter()
            .zip(&u0s[first..end])
            .fold(true, |all, (&n0, &u0)| all & screen.clears(n0, u0));
        if cleared {
            return false;
        }
        let dp = exact_dp();
        (first..end).any(|j| !screen.clears(n0s[j], u0s[j]) && cuts_at(j, dp))
    }

    /// Fills the splits from the rows the tree holds, oldest bucket first.
    /// The split before row 0's newest bucket is the last; river tests
    /// none after it. Returns that bucket's sum (0 when row 0 is empty:
    /// with one bucket per row it can be).
    ///
    /// Old rows change rarely: the splits of the rows above the highest
    /// one that changed since the last test are the same buckets summed
    /// in the same order, so they are kept, and the sums go on from there.
    #[inline(always)]
    fn split_sums(&mut self, b: &Buckets) -> f64 {
        let top = b.row_count();
        if self.totals.len() < b.most_splits() {
            for v in [
                &mut self.totals,
                &mut self.n0s,
                &mut self.u0s,
                &mut self.magnitudes,
            ] {
                v.resize(b.most_splits(), 0.0);
            }
        }
        // Rows `from..top` are as they were; row `from - 1` and those
        // below are summed again.
        let from = if self.last_top == top {
            b.first_unchanged_row(self.last_count).clamp(1, top)
        } else {
            self.begins.clear();
            self.begins.resize(top, 0);
            top
        };
        (self.last_count, self.last_top) = (b.count(), top);
        let keep = if from < top { self.begins[from - 1] } else { 0 };
        let (mut n0, mut u0, mut magnitude) = match keep {
            0 => (0.0, 0.0, 0.0),
            k => (self.n0s[k - 1], self.u0s[k - 1], self.magnitudes[k - 1]),
        };
        let mut j = keep;
        for i in (0..from).rev() {
            let row = b.row(i, top);
            self.begins[i] = j;
            // Leave row 0's newest bucket out.
            let hi = if i == 0 && row.len() > 0 {
                row.hi - 1
            } else {
                row.hi
            };
            let size = (1u64 << i) as f64;
            let ring = b.ring(i);
            let mask = ring.len() - 1;
            let len = (hi - row.lo) as usize;
            let (ts, n0s) = (&mut self.totals[j..j + len], &mut self.n0s[j..j + len]);
            let (u0s, ms) = (&mut self.u0s[j..j + len], &mut self.magnitudes[j..j + len]);
            let lo = row.lo as usize;
            for k in 0..len {
                let t = ring[(lo + k) & mask];
                n0 += size;
                u0 += t;
                magnitude += t.abs();
                (ts[k], n0s[k], u0s[k], ms[k]) = (t, n0, u0, magnitude);
            }
            j += len;
        }
        self.splits = j;
        let r0 = b.row(0, top);
        if r0.len() > 0 {
            b.get(0, r0.hi - 1).0
        } else {
            0.0
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
/// and of river's bound. The screen takes δ' from below (a smaller δ' only
/// clears fewer splits). A side that overflows fails the comparison (and
/// the split is tested exactly); the screen is off unless the variance is
/// between 1e-100 and 1e100, so the right side is far from underflow and
/// a left side that underflows is far below it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Screen {
    /// `2 var δ' (a + b) (1 - 1e-12)`, the same for every split.
    k: f64,
    width: f64,
    total: f64,
    slack: f64,
    /// `min_window_length - 1`.
    less: f64,
}

impl Screen {
    /// The screen for window `w` (its variance per value `var`), given a
    /// lower bound of δ' and the sum of the buckets' magnitudes.
    pub fn new(
        var: f64,
        delta_prime: f64,
        w: Window,
        magnitude: f64,
        min_len: f64,
        buckets: usize,
    ) -> Option<Screen> {
        let width = w.width;
        let a_plus_b = width - 2.0 * min_len + 2.0;
        let k = 2.0 * var * delta_prime * a_plus_b * (1.0 - 1e-12);
        let slack = 1e-11 * width * magnitude;
        let usable = (1e-100..=1e100).contains(&var)
            && k.is_finite()
            && k > 0.0
            && slack.is_finite()
            && buckets <= 1000;
        usable.then_some(Screen {
            k,
            width,
            total: w.total,
            slack,
            less: min_len - 1.0,
        })
    }

    /// True when the split (the older part's width and sum) provably does
    /// not cut. Branch-free, so the compiler runs several side by side.
    #[inline(always)]
    pub fn clears(&self, n0: f64, u0: f64) -> bool {
        let n1 = self.width - n0;
        let d = (u0 * self.width - self.total * n0).abs() + self.slack;
        let lhs = d * d * ((n0 - self.less) * (n1 - self.less));
        let nn = n0 * n1;
        let rhs = self.k * (nn * nn);
        (lhs < rhs) & (rhs < f64::INFINITY)
    }
}
