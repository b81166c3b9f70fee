//! How Evidently bins two samples before PSI and Jensen-Shannon
//! (`get_binned_data`): a numeric feature with more than 20 distinct
//! reference values gets NumPy's Sturges bins over both samples together;
//! anything else is counted per distinct value.

use std::collections::BTreeMap;
use std::hash::Hash;

use crate::Sample;

/// Reference and current shares per bin, in the same bin order.
#[derive(Debug, Clone, PartialEq)]
pub struct Binned {
    /// Share of the reference in each bin.
    pub reference: Vec<f64>,
    /// Share of the current window in each bin.
    pub current: Vec<f64>,
}

/// Above this many distinct reference values a numeric feature is binned.
const MAX_DISCRETE: usize = 20;

/// Bins two numeric samples; `fill_zeroes` replaces empty bins by a small
/// share as Evidently does for PSI (not for Jensen-Shannon).
pub fn bin_numeric(reference: &Sample, current: &Sample, fill_zeroes: bool) -> Binned {
    let mut binned = if reference.distinct() > MAX_DISCRETE {
        let edges = sturges_edges(reference, current);
        Binned {
            reference: shares(&histogram(reference, &edges), reference.len()),
            current: shares(&histogram(current, &edges), current.len()),
        }
    } else {
        let (r, c) = count_keys(
            reference.values().iter().map(|v| OrdF64(*v)),
            current.values().iter().map(|v| OrdF64(*v)),
        );
        Binned {
            reference: shares(&r, reference.len()),
            current: shares(&c, current.len()),
        }
    };
    if fill_zeroes {
        fill(&mut binned.reference);
        fill(&mut binned.current);
    }
    binned
}

/// Bins two categorical samples by value.
pub fn bin_categories<K: Ord + Hash + Clone>(
    reference: &[K],
    current: &[K],
    fill_zeroes: bool,
) -> Binned {
    let (r, c) = count_keys(reference.iter().cloned(), current.iter().cloned());
    let mut binned = Binned {
        reference: shares(&r, reference.len()),
        current: shares(&c, current.len()),
    };
    if fill_zeroes {
        fill(&mut binned.reference);
        fill(&mut binned.current);
    }
    binned
}

/// Counts of each key seen in either sample, in one key order for both.
pub(crate) fn count_keys<K: Ord>(
    reference: impl Iterator<Item = K>,
    current: impl Iterator<Item = K>,
) -> (Vec<usize>, Vec<usize>) {
    let mut counts: BTreeMap<K, (usize, usize)> = BTreeMap::new();
    for k in reference {
        counts.entry(k).or_default().0 += 1;
    }
    for k in current {
        counts.entry(k).or_default().1 += 1;
    }
    counts.into_values().unzip()
}

/// `np.histogram_bin_edges(concat(reference, current), bins="sturges")`.
pub fn sturges_edges(reference: &Sample, current: &Sample) -> Vec<f64> {
    let (r0, r1) = reference
        .range()
        .unwrap_or((f64::INFINITY, f64::NEG_INFINITY));
    let (c0, c1) = current
        .range()
        .unwrap_or((f64::INFINITY, f64::NEG_INFINITY));
    let (min, max) = (r0.min(c0), r1.max(c1));
    let n = reference.len() + current.len();
    let (mut first, mut last) = (min, max);
    if first == last {
        first -= 0.5;
        last += 0.5;
    }
    let width = (max - min) / ((n as f64).log2() + 1.0);
    let bins = if width != 0.0 {
        ((last - first) / width).ceil() as usize
    } else {
        1
    };
    linspace(first, last, bins + 1)
}

/// `np.linspace(start, stop, num)` with its exact arithmetic.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut y: Vec<f64> = (0..num)
        .map(|i| {
            let i = i as f64;
            if step == 0.0 {
                i / div * delta + start
            } else {
                i * step + start
            }
        })
        .collect();
    if num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// `np.histogram(sample, edges)[0]`: bin i holds edges[i] <= x < edges[i+1],
/// the last bin also holds its right edge; values outside are not counted.
pub fn histogram(sample: &Sample, edges: &[f64]) -> Vec<usize> {
    let last = edges.len() - 1;
    let cum: Vec<usize> = edges
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            if i == last {
                sample.count_le(e)
            } else {
                sample.count_lt(e)
            }
        })
        .collect();
    cum.windows(2).map(|w| w[1] - w[0]).collect()
}

fn shares(counts: &[usize], n: usize) -> Vec<f64> {
    counts.iter().map(|&c| c as f64 / n as f64).collect()
}

/// Evidently's `feel_zeroes`: an empty bin gets 0.0001, or a millionth of
/// the smallest non-empty share when that is itself <= 0.0001.
pub(crate) fn fill(shares: &mut [f64]) {
    let smallest = shares
        .iter()
        .copied()
        .filter(|&s| s != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !smallest.is_finite() {
        return;
    }
    let filler = if smallest <= 0.0001 {
        smallest / 1e6
    } else {
        0.0001
    };
    for s in shares.iter_mut().filter(|s| **s == 0.0) {
        *s = filler;
    }
}

/// An f64 ordered by value (only finite values reach it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OrdF64(pub(crate) f64);

impl Eq for OrdF64 {}

impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // -0.0 and 0.0 are one value, as in pandas.
        self.0
            .partial_cmp(&other.0)
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sturges_edges_match_numpy() {
        // np.histogram_bin_edges(np.arange(10.0), bins="sturges"):
        // 5 bins (ceil(log2(10) + 1) = 5), edges 0, 1.8, ..., 9.
        let a = Sample::new((0..5).map(f64::from));
        let b = Sample::new((5..10).map(f64::from));
        let e = sturges_edges(&a, &b);
        assert_eq!(e, vec![0.0, 1.8, 3.6, 5.4, 7.2, 9.0]);
    }

    #[test]
    fn histogram_closes_the_last_bin() {
        let s = Sample::new([0.0, 1.0, 1.0, 2.0]);
        assert_eq!(histogram(&s, &[0.0, 1.0, 2.0]), vec![1, 3]);
    }

    #[test]
    fn fill_zeroes_like_evidently() {
        let mut s = vec![0.5, 0.0, 0.5];
        fill(&mut s);
        assert_eq!(s, vec![0.5, 0.0001, 0.5]);
        let mut s = vec![0.99995, 0.0, 0.00005];
        fill(&mut s);
        assert_eq!(s[1], 0.00005 / 1e6);
    }
}
