//! Gradient histograms and split finding. A node's histogram holds, per
//! feature and bin, the sums of gradients, hessians and rows; the best
//! split of the node is the bin boundary that most reduces the
//! second-order loss estimate (XGBoost's gain with an L2 penalty). A
//! child's histogram is its parent's minus its sibling's, so only the
//! smaller child is ever summed from rows.

/// Sums over a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sums {
    /// Sum of gradients.
    pub g: f64,
    /// Sum of hessians.
    pub h: f64,
    /// Number of rows.
    pub n: usize,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }

    fn minus(&self, o: &Sums) -> Sums {
        Sums {
            g: self.g - o.g,
            h: self.h - o.h,
            n: self.n - o.n,
        }
    }

    /// Sums of `rows`.
    pub(crate) fn of(rows: &[u32], grad: &[f64], hess: &[f64]) -> Sums {
        let mut s = Sums::default();
        for &r in rows {
            s.g += grad[r as usize];
            s.h += hess[r as usize];
        }
        s.n = rows.len();
        s
    }
}

/// The leaf value that minimises the second-order loss estimate.
pub(crate) fn leaf_weight(s: &Sums, l2: f64) -> f64 {
    -s.g / (s.h + l2).max(1e-12)
}

/// `G^2 / (H + l2)`: how much a leaf of these sums lowers the loss (times 2).
fn score(s: &Sums, l2: f64) -> f64 {
    s.g * s.g / (s.h + l2).max(1e-12)
}

/// Where each feature's bins start in a histogram.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    offsets: Vec<usize>,
}

impl Layout {
    /// A layout for features with these bin counts.
    pub(crate) fn new(bins_per_feature: impl IntoIterator<Item = usize>) -> Self {
        let mut offsets = vec![0];
        for b in bins_per_feature {
            offsets.push(offsets[offsets.len() - 1] + b);
        }
        Layout { offsets }
    }

    fn n_features(&self) -> usize {
        self.offsets.len() - 1
    }

    fn total(&self) -> usize {
        self.offsets[self.offsets.len() - 1]
    }
}

/// Per feature and bin sums of one node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Histogram {
    bins: Vec<Sums>,
}

impl Histogram {
    /// Sums `rows` of the binned `columns` into a histogram.
    pub(crate) fn build(
        layout: &Layout,
        columns: &[Vec<u8>],
        rows: &[u32],
        grad: &[f64],
        hess: &[f64],
    ) -> Histogram {
        let mut bins = vec![Sums::default(); layout.total()];
        for (j, column) in columns.iter().enumerate() {
            let feature = &mut bins[layout.offsets[j]..layout.offsets[j + 1]];
            for &r in rows {
                let r = r as usize;
                let s = &mut feature[column[r] as usize];
                s.g += grad[r];
                s.h += hess[r];
                s.n += 1;
            }
        }
        Histogram { bins }
    }

    /// This histogram minus a child's: the other child's.
    pub(crate) fn minus(&self, child: &Histogram) -> Histogram {
        Histogram {
            bins: self
                .bins
                .iter()
                .zip(&child.bins)
                .map(|(a, b)| a.minus(b))
                .collect(),
        }
    }
}

/// The least sum of hessians a child may have, as LightGBM's
/// `min_sum_hessian_in_leaf`: a classifier's leaf of rows it already
/// predicts confidently has hessians near 0, and without this floor (and
/// with `l2 = 0`) its value `-G / H` would be huge.
pub(crate) const MIN_CHILD_HESSIAN: f64 = 1e-3;

/// What makes a split acceptable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SplitRule {
    pub l2: f64,
    pub min_samples_leaf: usize,
    pub min_split_gain: f64,
}

/// The best split of a node: rows in bins `<= bin` of `feature` go left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    pub feature: usize,
    pub bin: usize,
    pub gain: f64,
    pub left: Sums,
    pub right: Sums,
}

/// The split with the largest gain above `rule.min_split_gain` that leaves
/// `rule.min_samples_leaf` rows and [`MIN_CHILD_HESSIAN`] on each side;
/// ties go to the lower feature and bin, so training is deterministic.
pub(crate) fn best_split(
    hist: &Histogram,
    layout: &Layout,
    total: &Sums,
    rule: &SplitRule,
) -> Option<Candidate> {
    let parent = score(total, rule.l2);
    let mut best: Option<Candidate> = None;
    for j in 0..layout.n_features() {
        let bins = &hist.bins[layout.offsets[j]..layout.offsets[j + 1]];
        let mut left = Sums::default();
        // The last bin cannot be a split point: nothing would go right.
        for (b, s) in bins.iter().enumerate().take(bins.len().saturating_sub(1)) {
            left.add(s);
            if left.n < rule.min_samples_leaf {
                continue;
            }
            let right = total.minus(&left);
            if right.n < rule.min_samples_leaf {
                break;
            }
            if s.n == 0 || left.h < MIN_CHILD_HESSIAN || right.h < MIN_CHILD_HESSIAN {
                // Same partition as the previous bin boundary, or a child
                // too sure of its rows.
                continue;
            }
            let gain = 0.5 * (score(&left, rule.l2) + score(&right, rule.l2) - parent);
            if gain > rule.min_split_gain && best.is_none_or(|c| gain > c.gain) {
                best = Some(Candidate {
                    feature: j,
                    bin: b,
                    gain,
                    left,
                    right,
                });
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: SplitRule = SplitRule {
        l2: 0.0,
        min_samples_leaf: 1,
        min_split_gain: 0.0,
    };

    #[test]
    fn finds_the_split_that_separates_the_gradients() {
        // Feature 0 is noise; feature 1 separates g = -1 (bins 0, 1) from
        // g = +1 (bins 2, 3).
        let columns = vec![vec![0, 1, 0, 1, 0, 1], vec![0, 1, 1, 2, 3, 2]];
        let grad = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0];
        let hess = [1.0; 6];
        let layout = Layout::new([2, 4]);
        let rows: Vec<u32> = (0..6).collect();
        let hist = Histogram::build(&layout, &columns, &rows, &grad, &hess);
        let total = Sums::of(&rows, &grad, &hess);
        let c = best_split(&hist, &layout, &total, &RULE).unwrap();
        assert_eq!((c.feature, c.bin), (1, 1));
        assert_eq!(
            c.left,
            Sums {
                g: -3.0,
                h: 3.0,
                n: 3
            }
        );
        assert_eq!(
            c.right,
            Sums {
                g: 3.0,
                h: 3.0,
                n: 3
            }
        );
        // 0.5 * (9/3 + 9/3 - 0/6) = 3.
        assert_eq!(c.gain, 3.0);
        assert_eq!(leaf_weight(&c.left, 0.0), 1.0);
        assert_eq!(leaf_weight(&c.right, 1.0), -0.75);
    }

    #[test]
    fn respects_min_samples_leaf_and_min_gain() {
        let columns = vec![vec![0, 1, 2, 3]];
        let grad = [-5.0, 1.0, 1.0, 1.0];
        let hess = [1.0; 4];
        let layout = Layout::new([4]);
        let rows: Vec<u32> = (0..4).collect();
        let hist = Histogram::build(&layout, &columns, &rows, &grad, &hess);
        let total = Sums::of(&rows, &grad, &hess);
        let free = best_split(&hist, &layout, &total, &RULE).unwrap();
        assert_eq!(free.bin, 0);
        let two = SplitRule {
            min_samples_leaf: 2,
            ..RULE
        };
        assert_eq!(best_split(&hist, &layout, &total, &two).unwrap().bin, 1);
        let three = SplitRule {
            min_samples_leaf: 3,
            ..RULE
        };
        assert_eq!(best_split(&hist, &layout, &total, &three), None);
        let greedy = SplitRule {
            min_split_gain: 1e9,
            ..RULE
        };
        assert_eq!(best_split(&hist, &layout, &total, &greedy), None);
    }

    #[test]
    fn a_child_too_sure_of_its_rows_is_not_split_off() {
        // Row 0 is a classifier's confident mistake: p = 0.9999 for y = 0,
        // so g = 0.9999 and h = 1e-4. Splitting it off alone would give a
        // leaf of about -10,000 with l2 = 0; the next boundary keeps two
        // rows together and a hessian above the floor.
        let columns = vec![vec![0, 1, 2, 3]];
        let grad = [0.9999, -0.5, -0.5, 0.5];
        let hess = [1e-4, 0.25, 0.25, 0.25];
        let layout = Layout::new([4]);
        let rows: Vec<u32> = (0..4).collect();
        let hist = Histogram::build(&layout, &columns, &rows, &grad, &hess);
        let total = Sums::of(&rows, &grad, &hess);
        let c = best_split(&hist, &layout, &total, &RULE).unwrap();
        assert!(
            c.left.h >= MIN_CHILD_HESSIAN && c.right.h >= MIN_CHILD_HESSIAN,
            "{c:?}"
        );
        assert!(leaf_weight(&c.left, 0.0).abs() < 10.0, "{c:?}");
    }

    #[test]
    fn a_parent_minus_one_child_is_the_other_child() {
        let columns = vec![vec![0, 1, 2, 1, 0], vec![3, 3, 0, 1, 2]];
        let grad = [0.5, -1.5, 2.0, 0.25, -0.75];
        let hess = [1.0, 0.5, 0.25, 2.0, 1.0];
        let layout = Layout::new([3, 4]);
        let all = Histogram::build(&layout, &columns, &[0, 1, 2, 3, 4], &grad, &hess);
        let a = Histogram::build(&layout, &columns, &[0, 3], &grad, &hess);
        let b = Histogram::build(&layout, &columns, &[1, 2, 4], &grad, &hess);
        assert_eq!(all.minus(&a), b);
    }

    #[test]
    fn a_constant_feature_has_no_split() {
        let columns = vec![vec![0, 0, 0]];
        let layout = Layout::new([1]);
        let rows = [0, 1, 2];
        let (grad, hess) = ([1.0, -1.0, 2.0], [1.0; 3]);
        let hist = Histogram::build(&layout, &columns, &rows, &grad, &hess);
        let total = Sums::of(&rows, &grad, &hess);
        assert_eq!(best_split(&hist, &layout, &total, &RULE), None);
    }
}
