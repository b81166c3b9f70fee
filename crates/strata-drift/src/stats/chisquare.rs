//! Pearson's chi-squared test of the current window's category counts
//! against the counts the reference shares predict (Evidently's
//! `chisquare` test, `scipy.stats.chisquare` underneath).

use crate::special::chi2_sf;

/// The outcome of a chi-squared test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChiSquareResult {
    /// Σ (observed - expected)² / expected.
    pub statistic: f64,
    /// P(χ²(k - 1) > statistic).
    pub p_value: f64,
}

/// `reference` and `current` are counts per category, in one order; the
/// expected current counts are the reference's scaled to the current total.
/// A category the reference never saw makes the statistic infinite.
pub fn chi_square(reference: &[usize], current: &[usize]) -> ChiSquareResult {
    let n_ref: usize = reference.iter().sum();
    let n_cur: usize = current.iter().sum();
    let k_norm = n_cur as f64 / n_ref as f64;
    let statistic: f64 = reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let expected = r as f64 * k_norm;
            let d = c as f64 - expected;
            d * d / expected
        })
        .sum();
    let df = reference.len().saturating_sub(1) as f64;
    ChiSquareResult {
        statistic,
        p_value: if df == 0.0 {
            f64::NAN
        } else {
            chi2_sf(statistic, df)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_shares_give_p_one() {
        let r = chi_square(&[10, 20, 30], &[1, 2, 3]);
        assert_eq!(r.statistic, 0.0);
        assert_eq!(r.p_value, 1.0);
    }

    #[test]
    fn matches_scipy() {
        // scipy.stats.chisquare([30, 10, 20], [20, 20, 20]):
        // statistic 10.0, p-value 0.006737946999085467.
        let r = chi_square(&[20, 20, 20], &[30, 10, 20]);
        assert!((r.statistic - 10.0).abs() < 1e-12);
        assert!((r.p_value - 0.006_737_946_999_085_467).abs() < 1e-15);
    }
}
