//! Distances between two binned distributions: the population stability
//! index and the Jensen-Shannon distance (`scipy.spatial.distance.
//! jensenshannon` with the natural logarithm).

/// PSI = Σ (r - c) ln(r / c) over the bins (shares must have no zeros:
/// bin with `fill_zeroes`).
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| (r - c) * (r / c).ln())
        .sum()
}

/// The Jensen-Shannon distance: √(JS divergence), natural logarithm, after
/// normalising both distributions to sum 1.
pub fn jensen_shannon(reference: &[f64], current: &[f64]) -> f64 {
    let sp: f64 = reference.iter().sum();
    let sq: f64 = current.iter().sum();
    let (mut left, mut right) = (0.0, 0.0);
    for (p, q) in reference.iter().zip(current) {
        let (p, q) = (p / sp, q / sq);
        let m = (p + q) / 2.0;
        left += rel_entr(p, m);
        right += rel_entr(q, m);
    }
    ((left + right) / 2.0).sqrt()
}

/// `scipy.special.rel_entr`: x ln(x / y), 0 at x = 0.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_are_zero() {
        let p = [0.2, 0.3, 0.5];
        assert_eq!(psi(&p, &p), 0.0);
        assert_eq!(jensen_shannon(&p, &p), 0.0);
    }

    #[test]
    fn disjoint_distributions_have_the_largest_js() {
        // ln 2 is the largest JS divergence; the distance is its root.
        let d = jensen_shannon(&[1.0, 0.0], &[0.0, 1.0]);
        assert!((d - std::f64::consts::LN_2.sqrt()).abs() < 1e-15);
    }
}
