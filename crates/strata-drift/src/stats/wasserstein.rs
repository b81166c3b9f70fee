//! The first Wasserstein distance between two samples (the area between
//! their empirical CDFs), as `scipy.stats.wasserstein_distance` computes it.
//! Evidently divides it by the reference's standard deviation.

use crate::Sample;

/// W1(a, b) = ∫ |F_a(x) - F_b(x)| dx.
pub fn wasserstein_distance(a: &Sample, b: &Sample) -> f64 {
    let (a, b) = (a.values(), b.values());
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut sum = 0.0;
    // Walk the merged, sorted values; between two consecutive values x and
    // next the CDFs are constant at (#a <= x)/n1 and (#b <= x)/n2.
    let mut prev: Option<f64> = None;
    loop {
        let x = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        if let Some(p) = prev {
            let (ci, cj) = (count_le(a, i, p), count_le(b, j, p));
            sum += (ci as f64 / n1 - cj as f64 / n2).abs() * (x - p);
        }
        // Consume one value (a before b at ties, as the merged order does).
        if a.get(i) == Some(&x) {
            i += 1;
        } else {
            j += 1;
        }
        prev = Some(x);
    }
    sum
}

/// `#values <= x` for a sorted slice whose first `from` values are known to
/// be <= x.
fn count_le(values: &[f64], from: usize, x: f64) -> usize {
    from + values[from..].partition_point(|&v| v <= x)
}

/// Evidently's normed distance: W1 / max(std(reference), 0.001).
pub fn wasserstein_normed(reference: &Sample, current: &Sample) -> f64 {
    wasserstein_distance(reference, current) / reference.std().max(0.001)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_by_c_costs_c() {
        let a = Sample::new([0.0, 1.0, 2.0, 3.0]);
        let b = Sample::new([0.5, 1.5, 2.5, 3.5]);
        assert!((wasserstein_distance(&a, &b) - 0.5).abs() < 1e-15);
        assert_eq!(wasserstein_distance(&a, &a), 0.0);
    }

    #[test]
    fn unequal_sizes() {
        // scipy.stats.wasserstein_distance([0, 1, 3], [5, 6, 8]) = 5.
        let a = Sample::new([0.0, 1.0, 3.0]);
        let b = Sample::new([5.0, 6.0, 8.0]);
        assert!((wasserstein_distance(&a, &b) - 5.0).abs() < 1e-12);
        // scipy.stats.wasserstein_distance([0, 10], [0]) = 5.
        let a = Sample::new([0.0, 10.0]);
        let b = Sample::new([0.0]);
        assert!((wasserstein_distance(&a, &b) - 5.0).abs() < 1e-12);
    }
}
