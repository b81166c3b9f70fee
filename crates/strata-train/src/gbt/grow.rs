//! Growing one regression tree on gradients and hessians: depth-wise
//! (every splittable leaf, level by level) or best-first (the largest gain
//! anywhere, up to a leaf budget). Rows live in one index array; a node owns
//! a contiguous range of it, split in place, stably, when the node splits.

use super::binning::BinMapper;
use super::histogram::{Candidate, Histogram, Layout, SplitRule, Sums, best_split, leaf_weight};
use super::params::Growth;
use crate::tree::{NodeKind, Tree, TreeNode};

/// What [`grow`] needs besides the data.
pub(crate) struct GrowParams {
    pub rule: SplitRule,
    pub max_depth: usize,
    pub growth: Growth,
    pub max_leaves: usize,
    /// Multiplies every leaf value (the learning rate).
    pub shrinkage: f64,
}

/// The binned training table.
pub(crate) struct Binned<'a> {
    pub mapper: &'a BinMapper,
    pub layout: &'a Layout,
    pub columns: &'a [Vec<u8>],
}

/// A leaf that may still be split.
struct Open {
    node: usize,
    start: usize,
    len: usize,
    depth: usize,
    sums: Sums,
    hist: Option<Histogram>,
    best: Option<Candidate>,
}

/// Grows a tree on `rows` (indices into the table, each once).
pub(crate) fn grow(
    data: &Binned<'_>,
    rows: Vec<u32>,
    grad: &[f64],
    hess: &[f64],
    params: &GrowParams,
) -> Tree {
    let mut rows = rows;
    let mut scratch: Vec<u32> = Vec::with_capacity(rows.len());
    let sums = Sums::of(&rows, grad, hess);
    let mut tree = Tree {
        nodes: vec![TreeNode {
            kind: NodeKind::Leaf { value: 0.0 },
            samples: rows.len() as u64,
        }],
    };
    let mut root = Open {
        node: 0,
        start: 0,
        len: rows.len(),
        depth: 0,
        sums,
        hist: None,
        best: None,
    };
    if splittable(&root, params) {
        let hist = histogram(&root, data, &rows, grad, hess);
        choose_split(&mut root, hist, data, params);
    }
    let mut open = vec![root];
    let mut done: Vec<Open> = Vec::new();
    let mut leaves = 1usize;
    loop {
        // Depth-wise takes the oldest open leaf (breadth-first order);
        // best-first the one with the largest gain.
        let pick = match params.growth {
            Growth::DepthWise => (!open.is_empty()).then_some(0),
            Growth::BestFirst if leaves >= params.max_leaves => None,
            Growth::BestFirst => open
                .iter()
                .enumerate()
                .filter_map(|(i, o)| o.best.map(|c| (i, c.gain)))
                .fold(None, |acc: Option<(usize, f64)>, (i, g)| match acc {
                    Some((_, best)) if best >= g => acc,
                    _ => Some((i, g)),
                })
                .map(|(i, _)| i),
        };
        let Some(i) = pick else { break };
        let mut leaf = open.remove(i);
        let Some(split) = leaf.best else {
            done.push(leaf);
            continue;
        };
        // Split the row range: bins <= split.bin first, order kept.
        let column = &data.columns[split.feature];
        let range = &mut rows[leaf.start..leaf.start + leaf.len];
        scratch.clear();
        let mut n_left = 0;
        for k in 0..range.len() {
            let r = range[k];
            if column[r as usize] as usize <= split.bin {
                range[n_left] = r;
                n_left += 1;
            } else {
                scratch.push(r);
            }
        }
        range[n_left..].copy_from_slice(&scratch);
        debug_assert_eq!(n_left, split.left.n);

        let (left_id, right_id) = (tree.nodes.len(), tree.nodes.len() + 1);
        tree.nodes[leaf.node].kind = NodeKind::Split {
            feature: split.feature,
            threshold: data.mapper.threshold(split.feature, split.bin),
            left: left_id,
            right: right_id,
        };
        for s in [split.left, split.right] {
            tree.nodes.push(TreeNode {
                kind: NodeKind::Leaf { value: 0.0 },
                samples: s.n as u64,
            });
        }
        leaves += 1;
        let child = |node, start, len, sums| Open {
            node,
            start,
            len,
            depth: leaf.depth + 1,
            sums,
            hist: None,
            best: None,
        };
        let mut left = child(left_id, leaf.start, n_left, split.left);
        let mut right = child(
            right_id,
            leaf.start + n_left,
            leaf.len - n_left,
            split.right,
        );
        // Sum the smaller child from rows; the larger is parent - smaller.
        let parent = leaf.hist.take();
        let (small, large) = if left.len <= right.len {
            (&mut left, &mut right)
        } else {
            (&mut right, &mut left)
        };
        let (want_small, want_large) = (splittable(small, params), splittable(large, params));
        if want_small || want_large {
            let small_hist = histogram(small, data, &rows, grad, hess);
            if want_large {
                let large_hist = match &parent {
                    Some(p) => p.minus(&small_hist),
                    None => histogram(large, data, &rows, grad, hess),
                };
                choose_split(large, large_hist, data, params);
            }
            if want_small {
                choose_split(small, small_hist, data, params);
            }
        }
        open.push(left);
        open.push(right);
    }
    for leaf in open.into_iter().chain(done) {
        let value = (params.shrinkage * leaf_weight(&leaf.sums, params.rule.l2)) as f32;
        tree.nodes[leaf.node].kind = NodeKind::Leaf { value };
    }
    tree
}

/// Whether a leaf may be split at all.
fn splittable(leaf: &Open, params: &GrowParams) -> bool {
    leaf.depth < params.max_depth && leaf.len >= 2 * params.rule.min_samples_leaf
}

fn histogram(
    leaf: &Open,
    data: &Binned<'_>,
    rows: &[u32],
    grad: &[f64],
    hess: &[f64],
) -> Histogram {
    Histogram::build(
        data.layout,
        data.columns,
        &rows[leaf.start..leaf.start + leaf.len],
        grad,
        hess,
    )
}

/// Finds a leaf's best split; keeps the histogram while the leaf may still
/// split, for its children's subtraction.
fn choose_split(leaf: &mut Open, hist: Histogram, data: &Binned<'_>, params: &GrowParams) {
    leaf.best = best_split(&hist, data.layout, &leaf.sums, &params.rule);
    if leaf.best.is_some() {
        leaf.hist = Some(hist);
    }
}
