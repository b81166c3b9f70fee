//! Isolation forest (Liu, Ting and Zhou, 2008): each tree isolates rows of
//! a random subsample by random splits (a random non-constant feature, a
//! threshold uniform between its minimum and maximum in the node); an
//! anomaly is isolated in few splits. A row's path length in a tree is the
//! depth of its leaf plus `c(leaf size)`, the expected depth still needed
//! to isolate it among the rows the leaf was left with; the score is
//! `2^(-E[path] / c(sample size))`, in (0, 1], higher for anomalies.
//!
//! Export: a `TreeEnsembleRegressor` (aggregate `AVERAGE`, leaf value =
//! depth + c(leaf size)) giving the mean path length, then standard ops:
//! `Div` by c(n), `Neg`, and `Pow` with base 2, into `anomaly_score`.

use serde::{Deserialize, Serialize};

use crate::check::check_range;
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::model::{INPUT_NAME, ModelKind, Predictor, TrainedModel};
use crate::onnx::{self, Aggregate};
use crate::progress::{OnProgress, Progress, report};
use crate::rng::Rng;
use crate::tree::{NodeKind, Tree, TreeNode, TreeStats};

/// Parameters of [`train_isolation_forest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsolationForestParams {
    /// Trees (1..=5000).
    pub n_trees: usize,
    /// Rows drawn, without replacement, for each tree (2..=1000000); all
    /// rows when the table has fewer.
    pub max_samples: usize,
    /// Depth limit (1..=32); `null` for the usual `ceil(log2(sample))`.
    pub max_depth: Option<usize>,
    /// Seed for subsamples, features and thresholds.
    pub seed: u64,
}

impl Default for IsolationForestParams {
    fn default() -> Self {
        IsolationForestParams {
            n_trees: 100,
            max_samples: 256,
            max_depth: None,
            seed: 0,
        }
    }
}

impl IsolationForestParams {
    /// Checks every parameter; the error names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        check_range("n_trees", self.n_trees, 1, 5000)?;
        check_range("max_samples", self.max_samples, 2, 1_000_000)?;
        if let Some(d) = self.max_depth {
            check_range("max_depth", d, 1, 32)?;
        }
        Ok(())
    }
}

/// Euler-Mascheroni constant.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// The average path length of an unsuccessful search in a binary search
/// tree of `n` items: `2 H(n-1) - 2 (n-1) / n`, with `c(2) = 1` and
/// `c(n <= 1) = 0`, as in the paper and scikit-learn.
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        n => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// A trained isolation forest.
#[derive(Debug, Clone, PartialEq)]
pub struct IsolationForestModel {
    /// The trees; leaf values are depth + c(leaf size).
    pub trees: Vec<Tree>,
    /// Rows each tree was grown on.
    pub sample_size: usize,
    /// `c(sample_size)`, the normaliser of the score, as exported.
    pub normaliser: f32,
}

impl IsolationForestModel {
    /// The mean path length of a row, in `f32` as the runtimes compute it.
    pub fn mean_path_length(&self, x: &[f32]) -> f32 {
        let mut sum = 0.0f32;
        for tree in &self.trees {
            sum += tree.predict(x);
        }
        sum / self.trees.len() as f32
    }

    /// The anomaly score, in (0, 1], higher = more anomalous.
    pub fn predict_row(&self, x: &[f32]) -> f32 {
        2.0f32.powf(-(self.mean_path_length(x) / self.normaliser))
    }
}

/// Grows one tree on `rows` (indices into `data`).
fn grow(data: &Dataset, mut rows: Vec<usize>, max_depth: usize, rng: &mut Rng) -> Tree {
    let mut tree = Tree::default();
    tree.nodes.push(TreeNode {
        kind: NodeKind::Leaf { value: 0.0 },
        samples: rows.len() as u64,
    });
    // (node id, start, len, depth) of nodes still to resolve; a node owns
    // `rows[start..start + len]`.
    let mut stack = vec![(0usize, 0usize, rows.len(), 0usize)];
    let mut candidates = Vec::with_capacity(data.n_features());
    while let Some((id, start, len, depth)) = stack.pop() {
        let part = &mut rows[start..start + len];
        let leaf = |tree: &mut Tree| {
            tree.nodes[id].kind = NodeKind::Leaf {
                value: (depth as f64 + average_path_length(len)) as f32,
            };
        };
        if depth >= max_depth || len <= 1 {
            leaf(&mut tree);
            continue;
        }
        // Features that still vary in this node, with their range.
        candidates.clear();
        for j in 0..data.n_features() {
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for &r in part.iter() {
                let v = data.value(r, j);
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if lo < hi {
                candidates.push((j, lo, hi));
            }
        }
        if candidates.is_empty() {
            leaf(&mut tree);
            continue;
        }
        let (feature, lo, hi) = candidates[rng.below(candidates.len())];
        let threshold = split_point(lo, hi, rng.next_f64());
        // Partition: `<= threshold` first (both sides non-empty, as
        // lo <= threshold < hi).
        let mut n_left = 0;
        for k in 0..part.len() {
            if data.value(part[k], feature) <= threshold {
                part.swap(k, n_left);
                n_left += 1;
            }
        }
        let (left, right) = (tree.nodes.len(), tree.nodes.len() + 1);
        tree.nodes[id].kind = NodeKind::Split {
            feature,
            threshold,
            left,
            right,
        };
        for n in [n_left, len - n_left] {
            tree.nodes.push(TreeNode {
                kind: NodeKind::Leaf { value: 0.0 },
                samples: n as u64,
            });
        }
        stack.push((right, start + n_left, len - n_left, depth + 1));
        stack.push((left, start, n_left, depth + 1));
    }
    tree
}

/// A threshold uniform in `[lo, hi)` as an `f32` (`lo < hi`): at least
/// `lo`, so the left side keeps the minimum, and below `hi`, so the
/// maximum goes right.
fn split_point(lo: f32, hi: f32, u: f64) -> f32 {
    let t = (lo as f64 + u * (hi as f64 - lo as f64)) as f32;
    if t >= hi {
        // The largest f32 below `hi`; `lo` is an f32 below `hi`, so it is
        // at least `lo`.
        let below = if hi > 0.0 {
            f32::from_bits(hi.to_bits() - 1)
        } else if hi == 0.0 {
            -f32::from_bits(1)
        } else {
            f32::from_bits(hi.to_bits() + 1)
        };
        below.max(lo)
    } else {
        t.max(lo)
    }
}

/// Trains an isolation forest on the features (a target, if any, is
/// ignored). Output `anomaly_score`.
pub fn train_isolation_forest(
    data: &Dataset,
    params: &IsolationForestParams,
    progress: OnProgress<'_>,
) -> Result<TrainedModel> {
    params.validate()?;
    let n = data.n_rows();
    if n < 2 {
        return Err(Error::Shape(format!(
            "an isolation forest needs at least 2 rows, got {n}"
        )));
    }
    let sample_size = params.max_samples.min(n);
    let max_depth = params
        .max_depth
        .unwrap_or_else(|| (sample_size as f64).log2().ceil().max(1.0) as usize);
    let mut trees = Vec::with_capacity(params.n_trees);
    for k in 0..params.n_trees {
        let mut rng = Rng::new(params.seed, k as u64);
        let rows = rng.sample_sorted(n, sample_size);
        let tree = grow(data, rows, max_depth, &mut rng);
        report(
            progress,
            Progress {
                done: k + 1,
                total: params.n_trees,
                message: format!(
                    "tree {}/{}: {} leaves, depth {}",
                    k + 1,
                    params.n_trees,
                    tree.n_leaves(),
                    tree.depth()
                ),
            },
        )?;
        trees.push(tree);
    }
    let model = IsolationForestModel {
        trees,
        sample_size,
        normaliser: average_path_length(sample_size) as f32,
    };
    Ok(export(data, params, model))
}

fn export(
    data: &Dataset,
    params: &IsolationForestParams,
    model: IsolationForestModel,
) -> TrainedModel {
    let output = "anomaly_score";
    let nodes = vec![
        onnx::tree_ensemble_regressor(
            INPUT_NAME,
            "mean_path_length",
            &model.trees,
            Aggregate::Average,
            0.0,
        ),
        onnx::node(
            "Div",
            "",
            &["mean_path_length", "normaliser"],
            &["normalised_path"],
            vec![],
        ),
        onnx::node("Neg", "", &["normalised_path"], &["exponent"], vec![]),
        onnx::node("Pow", "", &["two", "exponent"], &[output], vec![]),
    ];
    let graph = onnx::Graph {
        name: ModelKind::IsolationForest.as_str(),
        input: onnx::batch_value(INPUT_NAME, data.n_features()),
        nodes,
        constants: vec![
            onnx::tensor("normaliser", &[], vec![model.normaliser]),
            onnx::tensor("two", &[], vec![2.0]),
        ],
        outputs: vec![onnx::batch_value(output, 1)],
    };
    TrainedModel::new(
        graph,
        ModelKind::IsolationForest,
        vec![output.to_string()],
        data,
        params,
        Some(TreeStats::of(&model.trees)),
        Predictor::IsolationForest(model),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::ignore_progress;

    #[test]
    fn average_path_length_matches_the_paper() {
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        // c(256) = 2 (ln 255 + 0.5772...) - 2 * 255 / 256 = 10.2448...
        assert!((average_path_length(256) - 10.244_770_920_116_851).abs() < 1e-9);
        // H(2) = 1.5 exactly would give 2*1.5 - 4/3; the log approximation is close.
        assert!(
            (average_path_length(3) - (2.0 * (2f64.ln() + EULER_GAMMA) - 4.0 / 3.0)).abs() < 1e-12
        );
    }

    #[test]
    fn split_points_stay_in_range() {
        for (lo, hi) in [
            (0.0f32, 1.0f32),
            (1.0, f32::from_bits(1.0f32.to_bits() + 1)),
            (-2.0, -1.0),
            (-1.0, 0.0),
        ] {
            for u in [0.0, 0.5, 0.999_999_999_999] {
                let t = split_point(lo, hi, u);
                assert!(lo <= t && t < hi, "lo={lo} hi={hi} u={u} t={t}");
            }
        }
    }

    fn cloud() -> Dataset {
        // A 2-D grid and one far point (the last row).
        let mut f = Vec::new();
        for i in 0..20 {
            for j in 0..20 {
                f.extend([i as f32 / 20.0, j as f32 / 20.0]);
            }
        }
        f.extend([5.0, 5.0]);
        Dataset::unlabeled(vec!["a".into(), "b".into()], f).unwrap()
    }

    #[test]
    fn an_outlier_scores_highest_and_trees_follow_the_rules() {
        let data = cloud();
        let params = IsolationForestParams {
            n_trees: 50,
            max_samples: 64,
            ..Default::default()
        };
        let m = train_isolation_forest(&data, &params, &mut ignore_progress()).unwrap();
        let Predictor::IsolationForest(f) = &m.predictor else {
            panic!()
        };
        assert_eq!(f.sample_size, 64);
        for tree in &f.trees {
            assert!(tree.depth() <= 6, "ceil(log2(64)) = 6");
            assert_eq!(tree.nodes[0].samples, 64);
            for node in &tree.nodes {
                match node.kind {
                    NodeKind::Split { left, right, .. } => {
                        assert_eq!(
                            tree.nodes[left].samples + tree.nodes[right].samples,
                            node.samples
                        );
                        assert!(tree.nodes[left].samples > 0 && tree.nodes[right].samples > 0);
                    }
                    NodeKind::Leaf { value } => assert!(value >= 0.0),
                }
            }
        }
        let scores = m.predict_dataset(&data).unwrap();
        let outlier = scores[400];
        assert!(
            scores[..400].iter().all(|&s| s < outlier),
            "outlier {outlier}"
        );
        assert!(scores.iter().all(|&s| s > 0.0 && s <= 1.0));
        // The centre of the grid looks normal.
        assert!(m.predict_row(&[0.5, 0.5]) < 0.5);
    }

    #[test]
    fn a_constant_table_gives_single_leaf_trees() {
        let d = Dataset::unlabeled(vec!["a".into()], vec![1.0; 10]).unwrap();
        let m = train_isolation_forest(
            &d,
            &IsolationForestParams::default(),
            &mut ignore_progress(),
        )
        .unwrap();
        let Predictor::IsolationForest(f) = &m.predictor else {
            panic!()
        };
        assert!(f.trees.iter().all(|t| t.nodes.len() == 1));
        // Path length c(10) everywhere: score 2^-1.
        assert!((m.predict_row(&[1.0]) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn params_are_checked() {
        let bad = IsolationForestParams {
            max_samples: 1,
            ..Default::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Param {
                param: "max_samples",
                ..
            })
        ));
        let err = serde_json::from_str::<IsolationForestParams>(r#"{"trees": 3}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
