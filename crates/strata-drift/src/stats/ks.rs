//! Two-sample Kolmogorov-Smirnov test, two-sided, as `scipy.stats.ks_2samp`
//! computes it (which is what Evidently calls): the exact distribution when
//! both samples have at most 10,000 values; above, the distribution of the
//! one-sample statistic for n = round(n1 n2 / (n1 + n2)) (`kolmogorov.rs`).

use super::kolmogorov::kstwo_sf;
use crate::Sample;

/// Above this many values in either sample the p-value is asymptotic
/// (SciPy's `MAX_AUTO_N`).
const MAX_EXACT_N: usize = 10_000;

/// The outcome of a two-sample KS test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsResult {
    /// The largest distance between the two empirical CDFs.
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// True when the p-value came from the exact distribution.
    pub exact: bool,
}

/// Runs the test. Both samples must be non-empty (the caller checks).
pub fn ks_2samp(a: &Sample, b: &Sample) -> KsResult {
    let (n1, n2) = (a.len(), b.len());
    let d = statistic(a.values(), b.values());
    let g = gcd(n1, n2);
    if n1.max(n2) <= MAX_EXACT_N
        && let Some((d, p)) = exact(n1, n2, g, d)
    {
        return KsResult {
            statistic: d,
            p_value: p.clamp(0.0, 1.0),
            exact: true,
        };
    }
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = (m * n / (m + n)).round();
    KsResult {
        statistic: d,
        p_value: kstwo_sf(en as u64, d),
        exact: false,
    }
}

/// max |F_a(x) - F_b(x)| over every value of either sample, with the CDFs
/// computed as SciPy does (`searchsorted(side="right") / n`, then the
/// difference), so the statistic is the same float.
fn statistic(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let (mut max_diff, mut min_diff) = (f64::NEG_INFINITY, f64::INFINITY);
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => unreachable!(),
        };
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        let diff = i as f64 / n1 - j as f64 / n2;
        max_diff = max_diff.max(diff);
        min_diff = min_diff.min(diff);
    }
    let min_s = (-min_diff).clamp(0.0, 1.0);
    if min_s > max_diff { min_s } else { max_diff }
}

/// SciPy's `_attempt_exact_2kssamp` for the two-sided test: the statistic
/// rounded to the lattice of 1/lcm(n1, n2), and the exact p-value, or None
/// when the computation left the range of floats.
fn exact(n1: usize, n2: usize, g: usize, d: f64) -> Option<(f64, f64)> {
    let lcm = (n1 / g) as f64 * n2 as f64;
    let h = (d * lcm).round_ties_even();
    let d = h / lcm;
    if h == 0.0 {
        return Some((d, 1.0));
    }
    let h = h as i64;
    let p = if n1 == n2 {
        prob_outside_square(n1 as i64, h)
    } else {
        outer_prob_inside(n1 as i64, n2 as i64, g as i64, h)
    };
    (p.is_finite() && (0.0..=1.0).contains(&p)).then_some((d, p))
}

/// P(D_{n,n} >= h/n) by Hodges' alternating sum in Horner form.
fn prob_outside_square(n: i64, h: i64) -> f64 {
    let mut p = 0.0;
    let mut k = n / h;
    while k >= 0 {
        let mut p1 = 1.0;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// The share of lattice paths from (0, 0) to (m, n) that leave the band
/// |x/m - y/n| < h/lcm(m, n): the inside method with the 1 - p recursion
/// (Viehmann 2021), column by column over a sliding window.
fn outer_prob_inside(m: i64, n: i64, g: i64, h: i64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = (m / g, n / g);
    let mut minj: i64 = 0;
    let mut maxj: i64 = ((h as f64 / mg as f64).ceil() as i64).min(n + 1);
    let mut curlen = maxj - minj;
    let len = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len];
    for v in &mut a[minj as usize..(maxj as usize).min(len)] {
        *v = 0.0;
    }
    // 1/(i + j) for every cell, looked up rather than divided.
    let reciprocals: Vec<f64> = (0..=m + n).map(|k| 1.0 / k as f64).collect();
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((((ng * i - h) as f64 / mg as f64).floor() as i64) + 1).max(0);
        minj = minj.min(n);
        maxj = (((ng * i + h) as f64 / mg as f64).ceil() as i64).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        // SciPy sets each cell to `(a·i + val·j) / (i + j)`, from the cell
        // before. Here it is `b + c·val`, with b = a·i·r and c = j·r for
        // r = 1/(i + j) from the table: no division, and two cells in a
        // row fold into one step from the cell before them, so the chain
        // from cell to cell is a multiplication and an addition every two
        // cells. That rounds differently from SciPy by a few ulps of a
        // value between 0 and 1; each cell is a weighted mean of two
        // earlier ones, so those differences add up but are never
        // amplified.
        let (fi, off, cells) = (i as f64, (minj - lastminj) as usize, (maxj - minj) as usize);
        let step = |jj: usize, a: &[f64]| {
            let j = jj as i64 + minj;
            let r = reciprocals[(i + j) as usize];
            (a[jj + off] * (fi * r), j as f64 * r)
        };
        let mut jj = 0;
        while jj + 1 < cells {
            let (b0, c0) = step(jj, &a);
            let (b1, c1) = step(jj + 1, &a);
            let first = b0 + c0 * val;
            val = (b1 + c1 * b0) + (c1 * c0) * val;
            (a[jj], a[jj + 1]) = (first, val);
            jj += 2;
        }
        if jj < cells {
            let (b, c) = step(jj, &a);
            val = b + c * val;
            a[jj] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let from = (maxj - minj) as usize;
            let to = (from + (lastlen - curlen) as usize).min(len);
            for v in &mut a[from..to] {
                *v = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(v: &[f64]) -> Sample {
        Sample::new(v.iter().copied())
    }

    #[test]
    fn identical_samples_have_p_one() {
        let a = sample(&[1.0, 2.0, 3.0, 4.0]);
        let r = ks_2samp(&a, &a);
        assert_eq!(r.statistic, 0.0);
        assert_eq!(r.p_value, 1.0);
    }

    #[test]
    fn disjoint_samples_have_statistic_one() {
        let a = sample(&[1.0, 2.0, 3.0]);
        let b = sample(&[10.0, 11.0, 12.0, 13.0]);
        let r = ks_2samp(&a, &b);
        assert_eq!(r.statistic, 1.0);
        // Exact: 2 / C(7, 3) = 2 / 35.
        assert!((r.p_value - 2.0 / 35.0).abs() < 1e-15, "{}", r.p_value);
    }
}
