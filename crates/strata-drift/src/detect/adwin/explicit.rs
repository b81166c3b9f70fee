//! River's rows written out, for what follows a detection: river drops the
//! oldest bucket and tests every split again, until none cuts. That breaks
//! the aligned blocks of [`super::buckets`], but it happens once per
//! detection and the detector starts afresh on the next value, so it runs
//! here, literally, on a copy of the rows.

use super::AdwinParams;

/// The window as river holds it.
#[derive(Debug, Clone)]
pub(super) struct Rows {
    /// Row i (lowest first) holds buckets of 2^i values, oldest first:
    /// each its sum and sum of squared deviations.
    pub rows: Vec<Vec<(f64, f64)>>,
    pub width: f64,
    pub total: f64,
    pub variance: f64,
}

impl Rows {
    /// River's test of every split, oldest buckets first (row 0's newest
    /// bucket is never a split's older part).
    pub fn has_cut(&self, params: &AdwinParams) -> bool {
        let min_len = f64::from(params.min_window_length);
        let delta_prime = (2.0 * self.width.ln() / params.delta).ln();
        let var = self.variance / self.width;
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for (i, row) in self.rows.iter().enumerate().rev() {
            let size = (1u64 << i) as f64;
            buckets.extend(row.iter().map(|&(t, _)| (size, t)));
        }
        if self.rows.first().is_some_and(|r| !r.is_empty()) {
            buckets.pop();
        }
        let (mut n0, mut u0, mut u1) = (0.0, 0.0, self.total);
        for (size, t) in buckets {
            n0 += size;
            u0 += t;
            u1 -= t;
            let n1 = self.width - n0;
            if n0 >= min_len && n1 >= min_len && cuts(n0, n1, u0, u1, var, delta_prime, min_len) {
                return true;
            }
        }
        false
    }

    /// Drops the oldest bucket (the first of the top row) from the window.
    /// (With one bucket per row, a drop can leave the row below the top
    /// empty; river's own code fails there. Here the oldest bucket is then
    /// the first of the highest row that holds one.)
    pub fn drop_oldest(&mut self) {
        while self.rows.len() > 1 && self.rows.last().is_some_and(Vec::is_empty) {
            self.rows.pop();
        }
        let last = self.rows.len() - 1;
        if self.rows[last].is_empty() {
            return;
        }
        let n = (1u64 << last) as f64;
        let (total, variance) = self.rows[last].remove(0);
        let mu = total * (1.0 / n);
        self.width -= n;
        self.total -= total;
        let mu_window = self.total / self.width;
        self.variance -=
            variance + n * self.width * (mu - mu_window) * (mu - mu_window) / (n + self.width);
        if self.rows[last].is_empty() && last > 0 {
            self.rows.pop();
        }
    }
}

/// River's cut test of one split: the older part's width and sum `n0`,
/// `u0`, the newer part's `n1`, `u1`; the window's variance per value and
/// `δ' = ln(2 ln(width) / δ)`.
#[inline]
pub(super) fn cuts(n0: f64, n1: f64, u0: f64, u1: f64, var: f64, dp: f64, min_len: f64) -> bool {
    let delta_mean = u0 / n0 - u1 / n1;
    let m_recip = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
    let epsilon = (2.0 * m_recip * var * dp).sqrt() + 2.0 / 3.0 * dp * m_recip;
    delta_mean.abs() > epsilon
}
