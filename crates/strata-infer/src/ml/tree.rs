//! Tree ensembles (`ai.onnx.ml` `TreeEnsembleRegressor` and
//! `TreeEnsembleClassifier`) compiled into a flat layout and evaluated the
//! way onnxruntime does, so the two agree to float rounding.
//!
//! Layout: every tree is laid out depth-first (the true child right after
//! its parent) in one array of 16-byte nodes shared by all trees. A leaf
//! points to itself, so a tree of depth `d` is walked in exactly `d` steps
//! with no "is this a leaf?" branch, and several trees are walked side by
//! side: the walk is a chain of dependent loads, and interleaving trees lets
//! the CPU overlap them. The comparison picks the child by index
//! (`children[go_true as usize]`), which compiles to branch-free code, so
//! unpredictable splits cost no branch mispredictions.

use std::collections::HashMap;

use crate::error::Result;
use crate::onnx::NodeCtx;

/// The most regression targets an ensemble may have: each row's scores are
/// allocated for all of them, and a few hundred bytes of model saying 2^40
/// would abort the process that checks it.
const MAX_TARGETS: i64 = 1 << 16;

/// How a split node compares the feature value `x` with its threshold `t`
/// (`x <= t` for `BRANCH_LEQ`, and so on); true goes to the true child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchMode {
    /// `x <= t`
    Leq,
    /// `x < t`
    Lt,
    /// `x >= t`
    Gte,
    /// `x > t`
    Gt,
    /// `x == t`
    Eq,
    /// `x != t`
    Neq,
}

impl BranchMode {
    fn parse(s: &str) -> Option<Option<Self>> {
        Some(match s {
            "BRANCH_LEQ" => Some(Self::Leq),
            "BRANCH_LT" => Some(Self::Lt),
            "BRANCH_GTE" => Some(Self::Gte),
            "BRANCH_GT" => Some(Self::Gt),
            "BRANCH_EQ" => Some(Self::Eq),
            "BRANCH_NEQ" => Some(Self::Neq),
            "LEAF" => None,
            _ => return None,
        })
    }

    #[inline(always)]
    fn test(self, x: f32, t: f32) -> bool {
        match self {
            Self::Leq => x <= t,
            Self::Lt => x < t,
            Self::Gte => x >= t,
            Self::Gt => x > t,
            Self::Eq => x == t,
            Self::Neq => x != t,
        }
    }

    /// The f32 threshold that makes `x (f32) op t32` equal `x op t` for a
    /// double threshold `t` (the `nodes_values_as_tensor` form).
    fn narrow_threshold(self, t: f64) -> f32 {
        match self {
            Self::Leq | Self::Gt => round_down(t),
            Self::Lt | Self::Gte => round_up(t),
            Self::Eq | Self::Neq => {
                let f = t as f32;
                if f as f64 == t { f } else { f32::NAN }
            }
        }
    }
}

fn next_up(f: f32) -> f32 {
    if f.is_nan() || f == f32::INFINITY {
        f
    } else if f == 0.0 {
        f32::from_bits(1)
    } else if f > 0.0 {
        f32::from_bits(f.to_bits() + 1)
    } else {
        f32::from_bits(f.to_bits() - 1)
    }
}

fn next_down(f: f32) -> f32 {
    -next_up(-f)
}

/// The largest f32 not above `t`.
fn round_down(t: f64) -> f32 {
    let f = t as f32;
    if f as f64 > t { next_down(f) } else { f }
}

/// The smallest f32 not below `t`.
fn round_up(t: f64) -> f32 {
    let f = t as f32;
    if (f as f64) < t { next_up(f) } else { f }
}

/// How the leaf values reached in each tree are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Sum over trees (the default).
    Sum,
    /// Sum divided by the number of trees.
    Average,
    /// Smallest leaf value.
    Min,
    /// Largest leaf value.
    Max,
}

/// The function applied to the aggregated scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    /// Scores as they are.
    None,
    /// `1 / (1 + exp(-x))` per score.
    Logistic,
    /// Softmax over the scores of a row.
    Softmax,
    /// Softmax that leaves zero scores at zero.
    SoftmaxZero,
    /// Inverse of the normal CDF, per score.
    Probit,
}

impl PostTransform {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NONE" => Self::None,
            "LOGISTIC" => Self::Logistic,
            "SOFTMAX" => Self::Softmax,
            "SOFTMAX_ZERO" => Self::SoftmaxZero,
            "PROBIT" => Self::Probit,
            _ => return None,
        })
    }
}

/// A node in the flat layout. `children[1]` is taken when the comparison
/// holds, `children[0]` otherwise; a leaf has both children set to itself.
/// Bit 31 of `feature` marks "a missing value (NaN) goes to the true child".
#[derive(Debug, Clone, Copy)]
struct FlatNode {
    feature: u32,
    threshold: f32,
    children: [u32; 2],
}

const MISSING_TRUE: u32 = 1 << 31;
/// Trees walked side by side.
const LANES: usize = 8;

/// What kind of ensemble, and its output layout.
#[derive(Debug, Clone)]
pub enum Kind {
    /// `TreeEnsembleRegressor`: `n_targets` values per row.
    Regressor {
        /// How leaf values combine across trees.
        aggregate: Aggregate,
    },
    /// `TreeEnsembleClassifier`: a label and one score per class.
    Classifier {
        /// The class labels, in class-id order.
        labels: Vec<i64>,
        /// Only one class id carries weights (onnxruntime's binary case).
        binary_case: bool,
        /// No weight is negative.
        weights_all_positive: bool,
    },
}

/// A compiled tree ensemble.
#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    nodes: Vec<FlatNode>,
    roots: Vec<u32>,
    /// Steps needed by each group of `LANES` trees (the deepest of them).
    group_depths: Vec<u32>,
    /// Per-node branch mode when the trees mix modes; `None` when uniform.
    modes: Option<Vec<BranchMode>>,
    uniform_mode: BranchMode,
    has_missing_true: bool,
    /// Leaf weights in compressed rows: node `i` owns
    /// `weights[leaf_start[i]..leaf_start[i + 1]]` as (output, weight).
    leaf_start: Vec<u32>,
    weights: Vec<(u32, f32)>,
    /// Single-output shortcut: the summed weight of each leaf, and whether
    /// it has any.
    leaf_value: Vec<f32>,
    leaf_has: Vec<bool>,
    base_values: Vec<f32>,
    post_transform: PostTransform,
    n_outputs: usize,
    max_feature: usize,
    kind: Kind,
}

struct RawNode {
    node_id: i64,
    feature: i64,
    mode: Option<BranchMode>,
    value: f64,
    true_id: i64,
    false_id: i64,
    missing_true: bool,
}

impl TreeEnsemble {
    /// Compiles a `TreeEnsembleRegressor` or `TreeEnsembleClassifier` node.
    pub(crate) fn from_node(ctx: &NodeCtx<'_>) -> Result<Self> {
        let classifier = ctx.node.op_type == "TreeEnsembleClassifier";
        let tree_ids = ctx.req_ints("nodes_treeids")?;
        let node_ids = ctx.req_ints("nodes_nodeids")?;
        let feature_ids = ctx.req_ints("nodes_featureids")?;
        let modes = ctx.req_strings("nodes_modes")?;
        let (values, _) = ctx.req_floats_or_tensor("nodes_values")?;
        let true_ids = ctx.req_ints("nodes_truenodeids")?;
        let false_ids = ctx.req_ints("nodes_falsenodeids")?;
        let missing = ctx.ints("nodes_missing_value_tracks_true").unwrap_or(&[]);
        let n = tree_ids.len();
        for (name, len) in [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", feature_ids.len()),
            ("nodes_modes", modes.len()),
            ("nodes_values", values.len()),
            ("nodes_truenodeids", true_ids.len()),
            ("nodes_falsenodeids", false_ids.len()),
        ] {
            if len != n {
                return Err(ctx.invalid(format!(
                    "attribute \"{name}\" has {len} entries but \"nodes_treeids\" has {n}"
                )));
            }
        }
        if !missing.is_empty() && missing.len() != n {
            return Err(ctx.invalid(format!(
                "attribute \"nodes_missing_value_tracks_true\" has {} entries but \"nodes_treeids\" has {n}",
                missing.len()
            )));
        }
        if n == 0 {
            return Err(ctx.invalid("the ensemble has no nodes"));
        }

        let post_transform = match ctx.string("post_transform")? {
            None => PostTransform::None,
            Some(s) => PostTransform::parse(&s)
                .ok_or_else(|| ctx.invalid(format!("unknown post_transform \"{s}\"")))?,
        };
        let aggregate = match ctx.string("aggregate_function")? {
            None => Aggregate::Sum,
            Some(s) if classifier => {
                return Err(ctx.invalid(format!(
                    "a classifier takes no aggregate_function (got \"{s}\")"
                )));
            }
            Some(s) => match s.as_str() {
                "SUM" => Aggregate::Sum,
                "AVERAGE" => Aggregate::Average,
                "MIN" => Aggregate::Min,
                "MAX" => Aggregate::Max,
                _ => return Err(ctx.invalid(format!("unknown aggregate_function \"{s}\""))),
            },
        };

        // Nodes grouped by tree, trees in order of first appearance.
        let mut tree_index: HashMap<i64, usize> = HashMap::new();
        let mut trees: Vec<(i64, Vec<RawNode>)> = Vec::new();
        for i in 0..n {
            let mode = BranchMode::parse(&modes[i])
                .ok_or_else(|| ctx.invalid(format!("unknown node mode \"{}\"", modes[i])))?;
            let slot = *tree_index.entry(tree_ids[i]).or_insert_with(|| {
                trees.push((tree_ids[i], Vec::new()));
                trees.len() - 1
            });
            trees[slot].1.push(RawNode {
                node_id: node_ids[i],
                feature: feature_ids[i],
                mode,
                value: values[i],
                true_id: true_ids[i],
                false_id: false_ids[i],
                missing_true: missing.get(i).is_some_and(|&m| m != 0),
            });
        }

        // Leaf weights, keyed by (tree id, node id).
        let (prefix, n_outputs, labels) = if classifier {
            if ctx.has("classlabels_strings") {
                return Err(ctx.invalid(
                    "string class labels are not supported (Strata's outputs are numbers); \
                     train the classifier on integer labels",
                ));
            }
            let labels = ctx
                .ints("classlabels_int64s")
                .map(<[i64]>::to_vec)
                .ok_or_else(|| {
                    ctx.invalid("missing attribute \"classlabels_int64s\" (the class labels)")
                })?;
            if labels.len() < 2 {
                return Err(ctx.invalid(format!(
                    "a classifier needs at least 2 classes, got {}",
                    labels.len()
                )));
            }
            ("class", labels.len(), labels)
        } else {
            let n_targets = ctx.int("n_targets").unwrap_or(1);
            if !(1..=MAX_TARGETS).contains(&n_targets) {
                return Err(ctx.invalid(format!(
                    "n_targets must be 1 to {MAX_TARGETS}, got {n_targets}"
                )));
            }
            ("target", n_targets as usize, Vec::new())
        };
        let w_trees = ctx.req_ints(&format!("{prefix}_treeids"))?;
        let w_nodes = ctx.req_ints(&format!("{prefix}_nodeids"))?;
        let w_ids = ctx.req_ints(&format!("{prefix}_ids"))?;
        let (w_values, _) = ctx.req_floats_or_tensor(&format!("{prefix}_weights"))?;
        if w_nodes.len() != w_trees.len()
            || w_ids.len() != w_trees.len()
            || w_values.len() != w_trees.len()
        {
            return Err(ctx.invalid(format!(
                "attributes {prefix}_treeids, {prefix}_nodeids, {prefix}_ids and {prefix}_weights differ in length"
            )));
        }
        let mut leaf_weights: HashMap<(i64, i64), Vec<(u32, f32)>> = HashMap::new();
        let mut classes_seen = std::collections::BTreeSet::new();
        for i in 0..w_trees.len() {
            let out = w_ids[i];
            if out < 0 || out as usize >= n_outputs {
                return Err(ctx.invalid(format!(
                    "{prefix}_ids[{i}] = {out} is out of range (the ensemble has {n_outputs} outputs)"
                )));
            }
            classes_seen.insert(out);
            let list = leaf_weights.entry((w_trees[i], w_nodes[i])).or_default();
            // Several votes of one leaf for the same class add up, as in
            // onnxruntime. For a regressor's target onnxruntime's answer
            // depends on the number of targets and the aggregate (the first
            // weight, the sum, or one vote each): no exporter writes such
            // a leaf, so it is refused rather than answered differently.
            match list.iter_mut().find(|(o, _)| *o == out as u32) {
                Some(_) if prefix == "target" => {
                    return Err(ctx.invalid(format!(
                        "leaf {} of tree {} has two weights for target {out}",
                        w_nodes[i], w_trees[i]
                    )));
                }
                Some(entry) => entry.1 += w_values[i] as f32,
                None => list.push((out as u32, w_values[i] as f32)),
            }
        }
        let weights_all_positive = w_values.iter().all(|&w| w >= 0.0);

        let base_values: Vec<f32> = match ctx.floats_or_tensor("base_values")? {
            None => Vec::new(),
            Some((v, _)) => v.into_iter().map(|x| x as f32).collect(),
        };
        if !base_values.is_empty() && base_values.len() != 1 && base_values.len() != n_outputs {
            return Err(ctx.invalid(format!(
                "base_values has {} entries; expected 0, 1 or {n_outputs}",
                base_values.len()
            )));
        }

        // Lay out every tree depth-first.
        let mut nodes: Vec<FlatNode> = Vec::with_capacity(n);
        let mut node_modes: Vec<BranchMode> = Vec::with_capacity(n);
        let mut leaf_start: Vec<u32> = vec![0];
        let mut weights: Vec<(u32, f32)> = Vec::new();
        let mut roots = Vec::with_capacity(trees.len());
        let mut depths = Vec::with_capacity(trees.len());
        let mut used_leaves = 0usize;
        let mut max_feature = 0usize;
        for (tree_id, raw) in &trees {
            let mut by_id: HashMap<i64, usize> = HashMap::with_capacity(raw.len());
            for (k, r) in raw.iter().enumerate() {
                if by_id.insert(r.node_id, k).is_some() {
                    return Err(
                        ctx.invalid(format!("tree {tree_id} has node id {} twice", r.node_id))
                    );
                }
            }
            let mut referenced = vec![false; raw.len()];
            for r in raw.iter().filter(|r| r.mode.is_some()) {
                for child in [r.true_id, r.false_id] {
                    let k = *by_id.get(&child).ok_or_else(|| {
                        ctx.invalid(format!(
                            "tree {tree_id}: node {} points to node {child}, which does not exist",
                            r.node_id
                        ))
                    })?;
                    referenced[k] = true;
                }
            }
            let unreferenced: Vec<usize> = (0..raw.len()).filter(|&k| !referenced[k]).collect();
            if unreferenced.len() != 1 {
                return Err(ctx.invalid(format!(
                    "tree {tree_id} has {} root nodes (nodes nobody points to); a tree has exactly one",
                    unreferenced.len()
                )));
            }
            // Depth-first, true child first; a node seen twice means a cycle
            // or a shared subtree.
            let mut flat_of: Vec<Option<u32>> = vec![None; raw.len()];
            let mut stack: Vec<(usize, u32)> = vec![(unreferenced[0], 0)];
            let mut pending_links: Vec<(usize, usize, usize)> = Vec::new();
            let mut depth = 0u32;
            while let Some((k, d)) = stack.pop() {
                if flat_of[k].is_some() {
                    return Err(ctx.invalid(format!(
                        "tree {tree_id}: node {} is reached twice (a cycle or a shared subtree)",
                        raw[k].node_id
                    )));
                }
                let index = nodes.len();
                let index32 = u32::try_from(index).map_err(|_| ctx.invalid("too many nodes"))?;
                flat_of[k] = Some(index32);
                let r = &raw[k];
                match r.mode {
                    Some(mode) => {
                        depth = depth.max(d + 1);
                        let feature = usize::try_from(r.feature)
                            .ok()
                            .filter(|&f| f < (MISSING_TRUE as usize))
                            .ok_or_else(|| {
                                ctx.invalid(format!(
                                    "tree {tree_id}: node {} has feature id {}",
                                    r.node_id, r.feature
                                ))
                            })?;
                        max_feature = max_feature.max(feature);
                        let flags = if r.missing_true { MISSING_TRUE } else { 0 };
                        nodes.push(FlatNode {
                            feature: feature as u32 | flags,
                            threshold: mode.narrow_threshold(r.value),
                            children: [0, 0],
                        });
                        node_modes.push(mode);
                        let t = by_id[&r.true_id];
                        let f = by_id[&r.false_id];
                        pending_links.push((index, t, f));
                        stack.push((f, d + 1));
                        stack.push((t, d + 1));
                    }
                    None => {
                        nodes.push(FlatNode {
                            feature: 0,
                            threshold: 0.0,
                            children: [index32, index32],
                        });
                        node_modes.push(BranchMode::Leq);
                    }
                }
                let leaf = leaf_weights.get(&(*tree_id, r.node_id));
                if let Some(list) = leaf {
                    if r.mode.is_some() {
                        return Err(ctx.invalid(format!(
                            "tree {tree_id}: node {} has {prefix} weights but is not a leaf",
                            r.node_id
                        )));
                    }
                    used_leaves += 1;
                    weights.extend_from_slice(list);
                }
                leaf_start.push(weights.len() as u32);
            }
            for (index, t, f) in pending_links {
                // Every child was visited: they are in `by_id` and reachable.
                let (Some(ft), Some(ff)) = (flat_of[t], flat_of[f]) else {
                    return Err(ctx.invalid(format!("tree {tree_id} is malformed")));
                };
                nodes[index].children = [ff, ft];
            }
            roots.push(flat_of[unreferenced[0]].unwrap_or(0));
            depths.push(depth);
        }
        if used_leaves != leaf_weights.len() {
            return Err(ctx.invalid(format!(
                "some {prefix} weights point to (tree, node) pairs that are not reachable leaves"
            )));
        }

        let uniform_mode = node_modes
            .iter()
            .zip(&nodes)
            .find(|(_, nd)| nd.children[0] != nd.children[1]);
        let uniform_mode = uniform_mode.map(|(m, _)| *m).unwrap_or(BranchMode::Leq);
        let mixed = nodes
            .iter()
            .zip(&node_modes)
            .any(|(nd, m)| nd.children[0] != nd.children[1] && *m != uniform_mode);
        let has_missing_true = nodes.iter().any(|nd| nd.feature & MISSING_TRUE != 0);
        let group_depths = depths
            .chunks(LANES)
            .map(|c| c.iter().copied().max().unwrap_or(0))
            .collect();

        let mut leaf_value = vec![0.0f32; nodes.len()];
        let mut leaf_has = vec![false; nodes.len()];
        for i in 0..nodes.len() {
            for &(o, w) in &weights[leaf_start[i] as usize..leaf_start[i + 1] as usize] {
                if o == 0 {
                    leaf_value[i] += w;
                    leaf_has[i] = true;
                }
            }
        }

        let kind = if classifier {
            Kind::Classifier {
                labels,
                binary_case: n_outputs == 2 && classes_seen.len() == 1,
                weights_all_positive,
            }
        } else {
            Kind::Regressor { aggregate }
        };
        Ok(TreeEnsemble {
            nodes,
            roots,
            group_depths,
            modes: mixed.then_some(node_modes),
            uniform_mode,
            has_missing_true,
            leaf_start,
            weights,
            leaf_value,
            leaf_has,
            base_values,
            post_transform,
            n_outputs,
            max_feature,
            kind,
        })
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// Features a row must have (one past the largest feature id used).
    pub fn input_len(&self) -> usize {
        self.max_feature + 1
    }

    /// Scores per row: regression targets, or classes.
    pub fn n_outputs(&self) -> usize {
        self.n_outputs
    }

    /// Whether this is a classifier (it then also writes a label).
    pub fn is_classifier(&self) -> bool {
        matches!(self.kind, Kind::Classifier { .. })
    }

    /// Calls `visit(tree, leaf)` for every tree, in tree order, with the
    /// flat index of the leaf the row `x` reaches.
    #[inline]
    fn for_each_leaf(&self, x: &[f32], visit: impl FnMut(usize, usize)) {
        match (&self.modes, self.has_missing_true) {
            (Some(modes), _) => self.walk_mixed(x, modes, visit),
            (None, false) => match self.uniform_mode {
                BranchMode::Leq => self.walk::<false>(x, |x, t| x <= t, visit),
                BranchMode::Lt => self.walk::<false>(x, |x, t| x < t, visit),
                BranchMode::Gte => self.walk::<false>(x, |x, t| x >= t, visit),
                BranchMode::Gt => self.walk::<false>(x, |x, t| x > t, visit),
                BranchMode::Eq => self.walk::<false>(x, |x, t| x == t, visit),
                BranchMode::Neq => self.walk::<false>(x, |x, t| x != t, visit),
            },
            (None, true) => match self.uniform_mode {
                BranchMode::Leq => self.walk::<true>(x, |x, t| x <= t, visit),
                BranchMode::Lt => self.walk::<true>(x, |x, t| x < t, visit),
                BranchMode::Gte => self.walk::<true>(x, |x, t| x >= t, visit),
                BranchMode::Gt => self.walk::<true>(x, |x, t| x > t, visit),
                BranchMode::Eq => self.walk::<true>(x, |x, t| x == t, visit),
                BranchMode::Neq => self.walk::<true>(x, |x, t| x != t, visit),
            },
        }
    }

    #[inline(always)]
    fn step<const MISSING: bool>(&self, x: &[f32], i: u32, cmp: impl Fn(f32, f32) -> bool) -> u32 {
        let node = self.nodes[i as usize];
        if MISSING {
            let v = x[(node.feature & !MISSING_TRUE) as usize];
            let go = cmp(v, node.threshold) | ((node.feature & MISSING_TRUE != 0) & v.is_nan());
            node.children[go as usize]
        } else {
            let v = x[node.feature as usize];
            node.children[cmp(v, node.threshold) as usize]
        }
    }

    #[inline(always)]
    fn walk<const MISSING: bool>(
        &self,
        x: &[f32],
        cmp: impl Fn(f32, f32) -> bool + Copy,
        mut visit: impl FnMut(usize, usize),
    ) {
        let mut groups = self.roots.chunks_exact(LANES);
        let mut tree = 0;
        for (group, &depth) in (&mut groups).zip(&self.group_depths) {
            let mut at: [u32; LANES] = group.try_into().unwrap_or([0; LANES]);
            for _ in 0..depth {
                for lane in &mut at {
                    *lane = self.step::<MISSING>(x, *lane, cmp);
                }
            }
            for (k, &leaf) in at.iter().enumerate() {
                visit(tree + k, leaf as usize);
            }
            tree += LANES;
        }
        let rest = groups.remainder();
        if !rest.is_empty() {
            let depth = self.group_depths[self.group_depths.len() - 1];
            for &root in rest {
                let mut at = root;
                for _ in 0..depth {
                    at = self.step::<MISSING>(x, at, cmp);
                }
                visit(tree, at as usize);
                tree += 1;
            }
        }
    }

    fn walk_mixed(&self, x: &[f32], modes: &[BranchMode], mut visit: impl FnMut(usize, usize)) {
        for (tree, &root) in self.roots.iter().enumerate() {
            let mut at = root as usize;
            loop {
                let node = self.nodes[at];
                if node.children[0] as usize == at {
                    break;
                }
                let v = x[(node.feature & !MISSING_TRUE) as usize];
                let go = modes[at].test(v, node.threshold)
                    | ((node.feature & MISSING_TRUE != 0) & v.is_nan());
                at = node.children[go as usize] as usize;
            }
            visit(tree, at);
        }
    }

    /// Evaluates one row. `x` must hold at least [`Self::input_len`]
    /// features. Regressors write `n_outputs` values to `scores_out`;
    /// classifiers also return the label.
    pub fn eval_row(&self, x: &[f32], scores_out: &mut [f32]) -> Option<i64> {
        debug_assert!(x.len() > self.max_feature && scores_out.len() >= self.n_outputs);
        match &self.kind {
            Kind::Regressor { aggregate } if self.n_outputs == 1 => {
                scores_out[0] = self.eval_single(x, *aggregate);
                None
            }
            Kind::Regressor { aggregate } => {
                with_scratch(self.n_outputs, |scores, has| {
                    self.accumulate(x, *aggregate, scores, has);
                    self.finalize_targets(*aggregate, scores, has, scores_out);
                });
                None
            }
            Kind::Classifier {
                labels,
                binary_case,
                weights_all_positive,
            } => {
                let mut label = 0;
                with_scratch(self.n_outputs, |scores, has| {
                    self.accumulate(x, Aggregate::Sum, scores, has);
                    label = self.finalize_classes(
                        labels,
                        *binary_case,
                        *weights_all_positive,
                        scores,
                        has,
                        scores_out,
                    );
                });
                Some(label)
            }
        }
    }

    fn eval_single(&self, x: &[f32], aggregate: Aggregate) -> f32 {
        let origin = if self.base_values.len() == 1 {
            self.base_values[0]
        } else {
            0.0
        };
        let score = match aggregate {
            Aggregate::Sum | Aggregate::Average => {
                let mut sum = 0.0f32;
                self.for_each_leaf(x, |_, leaf| sum += self.leaf_value[leaf]);
                if aggregate == Aggregate::Average {
                    sum / self.n_trees() as f32 + origin
                } else {
                    sum + origin
                }
            }
            Aggregate::Min | Aggregate::Max => {
                let mut best: Option<f32> = None;
                self.for_each_leaf(x, |_, leaf| {
                    if self.leaf_has[leaf] {
                        let v = self.leaf_value[leaf];
                        best = Some(match best {
                            Some(b) => {
                                let better = if aggregate == Aggregate::Min {
                                    v < b
                                } else {
                                    v > b
                                };
                                if better { v } else { b }
                            }
                            None => v,
                        });
                    }
                });
                best.map_or(origin, |b| b + origin)
            }
        };
        // onnxruntime applies only PROBIT to a single regression target.
        if self.post_transform == PostTransform::Probit {
            probit(score)
        } else {
            score
        }
    }

    fn accumulate(&self, x: &[f32], aggregate: Aggregate, scores: &mut [f32], has: &mut [bool]) {
        self.for_each_leaf(x, |_, leaf| {
            let range = self.leaf_start[leaf] as usize..self.leaf_start[leaf + 1] as usize;
            for &(o, w) in &self.weights[range] {
                let o = o as usize;
                scores[o] = match aggregate {
                    Aggregate::Sum | Aggregate::Average => scores[o] + w,
                    Aggregate::Min if !has[o] || w < scores[o] => w,
                    Aggregate::Max if !has[o] || w > scores[o] => w,
                    Aggregate::Min | Aggregate::Max => scores[o],
                };
                has[o] = true;
            }
        });
    }

    fn finalize_targets(
        &self,
        aggregate: Aggregate,
        scores: &mut [f32],
        has: &[bool],
        out: &mut [f32],
    ) {
        let use_base = self.base_values.len() == self.n_outputs;
        for j in 0..self.n_outputs {
            let base = if use_base { self.base_values[j] } else { 0.0 };
            scores[j] = match aggregate {
                Aggregate::Sum => scores[j] + base,
                Aggregate::Average => scores[j] / self.n_trees() as f32 + base,
                Aggregate::Min | Aggregate::Max => base + if has[j] { scores[j] } else { 0.0 },
            };
        }
        write_scores(scores, self.post_transform, out, None);
    }

    /// onnxruntime's classifier finish, case by case (see
    /// `tree_ensemble_aggregator.h`), so labels and scores match it.
    fn finalize_classes(
        &self,
        labels: &[i64],
        binary_case: bool,
        all_positive: bool,
        scores: &mut [f32],
        has: &mut [bool],
        out: &mut [f32],
    ) -> i64 {
        let n = self.n_outputs;
        let base = &self.base_values;
        if n > 2 {
            for k in 0..base.len() {
                if has[k] {
                    scores[k] += base[k];
                } else {
                    has[k] = true;
                    scores[k] = base[k];
                }
            }
            let mut best: Option<usize> = None;
            for k in 0..n {
                if has[k] && best.is_none_or(|b| scores[k] > scores[b]) {
                    best = Some(k);
                }
            }
            write_scores(scores, self.post_transform, out, None);
            return labels[best.unwrap_or(0)];
        }
        let mut len = 2;
        let mut second = None;
        match base.len() {
            2 if has[1] => {
                // onnxruntime uses base_values[1] and class 0's score here.
                scores[1] = base[1] + scores[0];
                scores[0] = -scores[1];
            }
            2 => {
                scores[1] += base[1];
                scores[0] += base[0];
            }
            1 => {
                scores[0] += base[0];
                if !has[1] {
                    len = 1;
                }
            }
            _ => {
                second = Some(SecondClass::Mixed);
                if !has[1] {
                    len = 1;
                }
            }
        }
        let positive = if len == 2 && has[1] {
            scores[1]
        } else if has[0] {
            scores[0]
        } else {
            0.0
        };
        let label = if binary_case {
            let (wins, kind) = if all_positive {
                (positive > 0.5, SecondClass::Complement)
            } else {
                (positive > 0.0, SecondClass::Mixed)
            };
            second = Some(kind);
            labels[wins as usize]
        } else {
            // onnxruntime returns the literal 1 or 0 here; the class labels
            // say the same thing when they are [0, 1] and the right thing
            // when they are not.
            labels[(positive > 0.0) as usize]
        };
        write_scores(&mut scores[..len], self.post_transform, out, second);
        label
    }
}

/// How onnxruntime fills in the second class score of a binary classifier
/// that only carries scores for one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecondClass {
    /// All weights positive: the scores are `[1 - s, s]`.
    Complement,
    /// Mixed-sign weights: the scores are `[-s, s]`.
    Mixed,
}

/// Runs `f` with zeroed score and has-score buffers of length `n`, on the
/// stack for the usual small class counts.
#[inline]
fn with_scratch(n: usize, f: impl FnOnce(&mut [f32], &mut [bool])) {
    const SMALL: usize = 32;
    if n <= SMALL {
        let mut scores = [0.0f32; SMALL];
        let mut has = [false; SMALL];
        f(&mut scores[..n], &mut has[..n]);
    } else {
        let mut scores = vec![0.0f32; n];
        let mut has = vec![false; n];
        f(&mut scores, &mut has);
    }
}

fn write_scores(
    scores: &mut [f32],
    post: PostTransform,
    out: &mut [f32],
    second: Option<SecondClass>,
) {
    if scores.len() >= 2 {
        match post {
            PostTransform::None => {}
            PostTransform::Logistic => scores.iter_mut().for_each(|s| *s = logistic(*s)),
            PostTransform::Probit => scores.iter_mut().for_each(|s| *s = probit(*s)),
            PostTransform::Softmax => softmax(scores),
            PostTransform::SoftmaxZero => softmax_zero(scores),
        }
        out[..scores.len()].copy_from_slice(scores);
        return;
    }
    // One score for two classes: onnxruntime 1.32 derives the second as
    // below (checked against it by the golden tests). With PROBIT it writes
    // only the first and leaves the second unset; Strata writes 0.
    let s = scores[0];
    let pair = if post == PostTransform::Probit {
        [probit(s), 0.0]
    } else {
        match second {
            Some(_) if post == PostTransform::Logistic => [logistic(-s), logistic(s)],
            Some(SecondClass::Complement) => [1.0 - s, s],
            Some(SecondClass::Mixed) => [-s, s],
            None => [s, 0.0],
        }
    };
    let n = out.len().min(2);
    out[..n].copy_from_slice(&pair[..n]);
}

/// The logistic function as onnxruntime computes it (stable for large |x|).
pub(crate) fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

/// onnxruntime's probit: sqrt(2) * erfinv(2x - 1) with its erfinv
/// approximation, so results match it rather than an exact inverse.
pub(crate) fn probit(x: f32) -> f32 {
    std::f32::consts::SQRT_2 * erf_inv(2.0 * x - 1.0)
}

// onnxruntime's constants (3.14159, not PI), to give its numbers.
#[allow(clippy::approx_constant)]
fn erf_inv(x: f32) -> f32 {
    let sign = if x < 0.0 { -1.0f32 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    let log = x.ln();
    let v = 2.0 / (3.14159f32 * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147f32 * log;
    let v3 = -v + (v * v - v2).sqrt();
    sign * v3.sqrt()
}

pub(crate) fn softmax(values: &mut [f32]) {
    let max = values.iter().copied().fold(-f32::MAX, f32::max);
    let mut sum = 0.0f32;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in values.iter_mut() {
        *v /= sum;
    }
}

fn softmax_zero(values: &mut [f32]) {
    let max = values.iter().copied().fold(-f32::MAX, f32::max);
    let exp_neg_max = (-max).exp();
    let mut sum = 0.0f32;
    for v in values.iter_mut() {
        if *v > 0.000_000_1 || *v < -0.000_000_1 {
            *v = (*v - max).exp();
            sum += *v;
        } else {
            *v *= exp_neg_max;
        }
    }
    for v in values.iter_mut() {
        *v /= sum;
    }
}
