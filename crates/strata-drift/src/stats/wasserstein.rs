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
    // Walk the merged, sorted values, taking every copy of a value at
    // once: between two consecutive distinct values p and x the CDFs are
    // constant at (#a <= p)/n1 and (#b <= p)/n2, which `i` and `j` are.
    // SciPy also adds a term for each repeated value, with a width of 0:
    // an exact 0 that leaves the sum as it is.
    let mut prev: Option<f64> = None;
    loop {
        let x = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        if let Some(p) = prev {
            sum += (i as f64 / n1 - j as f64 / n2).abs() * (x - p);
        }
        while a.get(i).is_some_and(|&v| v <= x) {
            i += 1;
        }
        while b.get(j).is_some_and(|&v| v <= x) {
            j += 1;
        }
        prev = Some(x);
    }
    sum
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

    #[test]
    fn repeated_values_count_once_each_copy() {
        // scipy.stats.wasserstein_distance([0, 0, 1, 1, 1], [0, 1, 1, 2]) = 0.4.
        let a = Sample::new([0.0, 0.0, 1.0, 1.0, 1.0]);
        let b = Sample::new([0.0, 1.0, 1.0, 2.0]);
        assert!((wasserstein_distance(&a, &b) - 0.4).abs() < 1e-15);
    }

    /// SciPy's formula written out: the CDFs at every merged value, each
    /// times the gap to the next.
    fn by_definition(a: &[f64], b: &[f64]) -> f64 {
        let mut all: Vec<f64> = a.iter().chain(b).copied().collect();
        all.sort_by(f64::total_cmp);
        let cdf = |s: &[f64], x: f64| s.iter().filter(|&&v| v <= x).count() as f64 / s.len() as f64;
        all.windows(2)
            .map(|w| (cdf(a, w[0]) - cdf(b, w[0])).abs() * (w[1] - w[0]))
            .sum()
    }

    #[test]
    fn agrees_with_the_definition_on_samples_full_of_ties() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..50 {
            // Few distinct values (many copies of each), then many.
            let distinct = if round % 2 == 0 { 4 } else { 1000 };
            let mut draw = |n: u64| -> Vec<f64> {
                (0..n)
                    .map(|_| (next() % distinct) as f64 * 0.5 - 3.0)
                    .collect()
            };
            let (a, b) = (draw(1 + round % 37), draw(1 + (round * 7) % 53));
            let ours = wasserstein_distance(&Sample::new(a.clone()), &Sample::new(b.clone()));
            let expected = by_definition(&a, &b);
            assert!(
                (ours - expected).abs() <= 1e-12 * expected.max(1.0),
                "{ours} vs {expected}"
            );
        }
    }
}
