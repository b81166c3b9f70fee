//! Quantile bins per feature. Each bin is named by its upper edge, a value
//! seen in the training data, and holds the values above the previous edge
//! up to and including its own. A split "bin <= b" is therefore exactly the
//! exported `BRANCH_LEQ` test `x <= edges[b]` on the `f32` feature, for
//! training rows and any row at inference alike.

use crate::dataset::Dataset;

/// Upper bin edges per feature, ascending and distinct.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BinMapper {
    edges: Vec<Vec<f32>>,
}

/// Rows sampled per feature to find the quantiles: enough for 255 bins,
/// and it keeps binning linear in the table size.
const QUANTILE_SAMPLE: usize = 200_000;

impl BinMapper {
    /// Bins for every feature of `data`, at most `max_bins` (2..=255) each.
    pub(crate) fn fit(data: &Dataset, max_bins: usize) -> Self {
        let n = data.n_rows();
        // Evenly strided rows: deterministic, and spread over the whole
        // time range.
        let stride = n.div_ceil(QUANTILE_SAMPLE).max(1);
        let edges = (0..data.n_features())
            .map(|j| {
                let mut values: Vec<f32> =
                    (0..n).step_by(stride).map(|i| data.value(i, j)).collect();
                values.sort_by(f32::total_cmp);
                quantile_edges(&values, max_bins)
            })
            .collect();
        BinMapper { edges }
    }

    /// Bins of feature `j`.
    pub(crate) fn n_bins(&self, j: usize) -> usize {
        self.edges[j].len()
    }

    /// The bin of `x` for feature `j`: the first whose edge is `>= x`
    /// (values above the largest edge fall in the last bin).
    pub(crate) fn bin(&self, j: usize, x: f32) -> u8 {
        let e = &self.edges[j];
        e.partition_point(|&edge| edge < x).min(e.len() - 1) as u8
    }

    /// The `BRANCH_LEQ` threshold of the split "bin <= b" on feature `j`.
    pub(crate) fn threshold(&self, j: usize, b: usize) -> f32 {
        self.edges[j][b]
    }

    /// The whole table in bins, one column per feature.
    pub(crate) fn bin_table(&self, data: &Dataset) -> Vec<Vec<u8>> {
        (0..data.n_features())
            .map(|j| {
                (0..data.n_rows())
                    .map(|i| self.bin(j, data.value(i, j)))
                    .collect()
            })
            .collect()
    }
}

/// Upper edges for sorted `values`: every distinct value when there are at
/// most `max_bins` of them, else distinct values at (about) equal count
/// steps. The largest value is always the last edge.
fn quantile_edges(sorted: &[f32], max_bins: usize) -> Vec<f32> {
    let mut distinct: Vec<(f32, usize)> = Vec::new();
    for &v in sorted {
        match distinct.last_mut() {
            Some((last, count)) if *last == v => *count += 1,
            _ => distinct.push((v, 1)),
        }
    }
    if distinct.len() <= max_bins {
        return distinct.into_iter().map(|(v, _)| v).collect();
    }
    let n = sorted.len();
    let mut edges = Vec::with_capacity(max_bins);
    let mut cumulative = 0usize;
    // Bin `b` closes once the rows so far reach (b + 1) / max_bins of all;
    // a heavy value may close several quantiles at once. The last bin is
    // kept for the largest value.
    let mut next_quantile = 1usize;
    for (i, &(v, count)) in distinct.iter().enumerate() {
        cumulative += count;
        let last = i + 1 == distinct.len();
        if last || (edges.len() + 1 < max_bins && cumulative * max_bins >= next_quantile * n) {
            edges.push(v);
            next_quantile = cumulative * max_bins / n + 1;
        }
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(values: Vec<f32>) -> Dataset {
        let n = values.len();
        Dataset::new(vec!["x".into()], values, vec![0.0; n]).unwrap()
    }

    #[test]
    fn few_distinct_values_get_a_bin_each() {
        let m = BinMapper::fit(&column(vec![3.0, 1.0, 2.0, 1.0, 3.0]), 255);
        assert_eq!(m.edges[0], vec![1.0, 2.0, 3.0]);
        assert_eq!(m.bin(0, 1.0), 0);
        assert_eq!(m.bin(0, 1.5), 1);
        assert_eq!(m.bin(0, 3.0), 2);
        assert_eq!(m.bin(0, 99.0), 2);
        assert_eq!(m.bin(0, -99.0), 0);
    }

    #[test]
    fn many_values_get_equal_count_bins() {
        let m = BinMapper::fit(&column((0..1000).map(|i| i as f32).collect()), 4);
        assert_eq!(m.edges[0], vec![249.0, 499.0, 749.0, 999.0]);
        let counts = (0..4)
            .map(|b| (0..1000).filter(|&i| m.bin(0, i as f32) == b).count())
            .collect::<Vec<_>>();
        assert_eq!(counts, vec![250, 250, 250, 250]);
    }

    #[test]
    fn never_exceeds_max_bins_even_with_heavy_ties() {
        let mut v: Vec<f32> = vec![0.0; 900];
        v.extend((0..100).map(|i| 1.0 + i as f32));
        for max_bins in [2, 3, 16, 255] {
            let m = BinMapper::fit(&column(v.clone()), max_bins);
            let e = &m.edges[0];
            assert!(e.len() <= max_bins, "{} > {max_bins}", e.len());
            assert!(e.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(*e.last().unwrap(), 100.0);
            assert_eq!(e[0], 0.0, "the heavy value closes the first bin");
        }
    }

    #[test]
    fn a_bin_split_is_exactly_the_leq_threshold_test() {
        // Values that are close in f32 (neighbouring floats) and spread.
        let mut v: Vec<f32> = (0..500)
            .map(|i| ((i * 7919) % 500) as f32 * 0.37 - 50.0)
            .collect();
        let tiny = 1.0f32;
        v.extend([
            tiny,
            f32::from_bits(tiny.to_bits() + 1),
            f32::from_bits(tiny.to_bits() + 2),
        ]);
        let m = BinMapper::fit(&column(v.clone()), 32);
        let probes: Vec<f32> = v
            .iter()
            .flat_map(|&x| {
                [
                    x,
                    f32::from_bits(x.to_bits() + 1),
                    f32::from_bits(x.to_bits().wrapping_sub(1)),
                ]
            })
            .filter(|x| x.is_finite())
            .collect();
        // The last bin is never split on (everything would go left).
        for b in 0..m.n_bins(0) - 1 {
            let t = m.threshold(0, b);
            for &x in &probes {
                assert_eq!((m.bin(0, x) as usize) <= b, x <= t, "x={x} b={b} t={t}");
            }
        }
    }
}
