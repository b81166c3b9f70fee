//! Gradient-boosted trees, our own histogram implementation: quantile bins
//! per feature, second-order gradient boosting (squared error for
//! regression, log loss for binary classification) with an L2 penalty on
//! leaf values, optional row subsampling, depth-wise or best-first trees.
//!
//! Export: one `ai.onnx.ml` `TreeEnsembleRegressor` (aggregate `SUM`,
//! `base_values` = the initial prediction, `BRANCH_LEQ` on thresholds that
//! are bin edges, so the exported test is exactly the binned split), and
//! for classification a standard `Sigmoid` after it.

mod binning;
mod grow;
mod histogram;
mod params;

pub use params::{GbtParams, Growth};

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::model::{INPUT_NAME, ModelKind, Predictor, TrainedModel};
use crate::onnx::{self, Aggregate};
use crate::progress::{OnProgress, Progress, report};
use crate::rng::Rng;
use crate::tree::{Tree, TreeStats};
use binning::BinMapper;
use grow::{Binned, GrowParams, grow};
use histogram::{Layout, SplitRule};

/// What a boosted ensemble predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GbtTask {
    /// A number (squared-error loss), e.g. remaining useful life in hours.
    Regression,
    /// The probability of class 1 (log loss); targets are 0 or 1.
    BinaryClassification,
}

/// A trained boosted ensemble: `base_score` plus the sum of the trees'
/// leaf values, in `f32` and tree order as the ONNX runtimes add them,
/// then the logistic function for classification.
#[derive(Debug, Clone, PartialEq)]
pub struct GbtModel {
    /// Regression or classification.
    pub task: GbtTask,
    /// The initial prediction (mean target, or log-odds of the base rate).
    pub base_score: f32,
    /// The trees, leaf values already scaled by the learning rate.
    pub trees: Vec<Tree>,
}

impl GbtModel {
    /// The sum before any link function (the log-odds for classification).
    pub fn raw_score(&self, x: &[f32]) -> f32 {
        let mut sum = 0.0f32;
        for tree in &self.trees {
            sum += tree.predict(x);
        }
        sum + self.base_score
    }

    /// The prediction for one row: the regression value, or the
    /// probability of class 1.
    pub fn predict_row(&self, x: &[f32]) -> f32 {
        let raw = self.raw_score(x);
        match self.task {
            GbtTask::Regression => raw,
            GbtTask::BinaryClassification => sigmoid(raw),
        }
    }
}

/// The logistic function, computed without overflow for large |x| and
/// without cancellation for negative x (`1 - v` there made everything
/// below about -17 exactly 0, and the log loss's Hessians with it).
pub(crate) fn sigmoid(x: f32) -> f32 {
    let e = (-x.abs()).exp();
    if x < 0.0 {
        e / (1.0 + e)
    } else {
        1.0 / (1.0 + e)
    }
}

/// Trains a regression ensemble (squared error). Output `prediction`.
pub fn train_gbt_regressor(
    data: &Dataset,
    params: &GbtParams,
    progress: OnProgress<'_>,
) -> Result<TrainedModel> {
    train(data, params, GbtTask::Regression, progress)
}

/// Trains a binary classifier (log loss) on 0/1 targets. Output
/// `probability`, the probability of class 1.
pub fn train_gbt_classifier(
    data: &Dataset,
    params: &GbtParams,
    progress: OnProgress<'_>,
) -> Result<TrainedModel> {
    train(data, params, GbtTask::BinaryClassification, progress)
}

fn check_labels(target: &[f32]) -> Result<f64> {
    if let Some(row) = target.iter().position(|&y| y != 0.0 && y != 1.0) {
        return Err(Error::Target(format!(
            "a binary classifier needs targets 0 or 1; row {row} has {}",
            target[row]
        )));
    }
    let positives = target.iter().filter(|&&y| y == 1.0).count();
    if positives == 0 || positives == target.len() {
        return Err(Error::Target(format!(
            "every row is of class {}; a classifier needs both classes",
            if positives == 0 { 0 } else { 1 }
        )));
    }
    Ok(positives as f64 / target.len() as f64)
}

fn train(
    data: &Dataset,
    params: &GbtParams,
    task: GbtTask,
    progress: OnProgress<'_>,
) -> Result<TrainedModel> {
    params.validate()?;
    let target = data.require_target("gradient boosting")?;
    let n = data.n_rows();
    if u32::try_from(n).is_err() {
        return Err(Error::Shape(format!(
            "{n} rows; gradient boosting takes at most {} (sample the table)",
            u32::MAX
        )));
    }
    let base = match task {
        GbtTask::Regression => target.iter().map(|&y| y as f64).sum::<f64>() / n as f64,
        GbtTask::BinaryClassification => {
            let p = check_labels(target)?;
            (p / (1.0 - p)).ln()
        }
    };
    let base_score = base as f32;

    let mapper = BinMapper::fit(data, params.max_bins);
    let columns = mapper.bin_table(data);
    let layout = Layout::new((0..data.n_features()).map(|j| mapper.n_bins(j)));
    let binned = Binned {
        mapper: &mapper,
        layout: &layout,
        columns: &columns,
    };
    let grow_params = GrowParams {
        rule: SplitRule {
            l2: params.l2,
            min_samples_leaf: params.min_samples_leaf,
            min_split_gain: params.min_split_gain,
        },
        max_depth: params.max_depth,
        growth: params.growth,
        max_leaves: params.max_leaves,
        shrinkage: params.learning_rate,
    };
    let n_sample = ((n as f64 * params.subsample).round() as usize).clamp(1, n);

    // Raw scores as the exported model computes them, in f32.
    let mut raw = vec![base_score; n];
    let mut grad = vec![0.0f64; n];
    let mut hess = vec![0.0f64; n];
    let mut trees = Vec::with_capacity(params.n_trees);
    for k in 0..params.n_trees {
        for i in 0..n {
            let (y, f) = (target[i] as f64, raw[i] as f64);
            (grad[i], hess[i]) = match task {
                GbtTask::Regression => (f - y, 1.0),
                GbtTask::BinaryClassification => {
                    let p = sigmoid(raw[i]) as f64;
                    (p - y, (p * (1.0 - p)).max(1e-16))
                }
            };
        }
        let rows: Vec<u32> = if n_sample < n {
            Rng::new(params.seed, k as u64)
                .sample_sorted(n, n_sample)
                .into_iter()
                .map(|i| i as u32)
                .collect()
        } else {
            (0..n as u32).collect()
        };
        let tree = grow(&binned, rows, &grad, &hess, &grow_params);
        for (i, r) in raw.iter_mut().enumerate() {
            *r += tree.predict(data.row(i));
        }
        let loss = training_loss(task, target, &raw);
        report(
            progress,
            Progress {
                done: k + 1,
                total: params.n_trees,
                message: format!(
                    "tree {}/{}: {} leaves, depth {}, train {}",
                    k + 1,
                    params.n_trees,
                    tree.n_leaves(),
                    tree.depth(),
                    loss
                ),
            },
        )?;
        trees.push(tree);
    }

    let model = GbtModel {
        task,
        base_score,
        trees,
    };
    Ok(export(data, params, model))
}

/// The training loss for the progress log: RMSE or mean log loss.
fn training_loss(task: GbtTask, target: &[f32], raw: &[f32]) -> String {
    let n = target.len() as f64;
    match task {
        GbtTask::Regression => {
            let mse = target
                .iter()
                .zip(raw)
                .map(|(&y, &f)| (f as f64 - y as f64).powi(2))
                .sum::<f64>()
                / n;
            format!("rmse {:.6}", mse.sqrt())
        }
        GbtTask::BinaryClassification => {
            let ll = target
                .iter()
                .zip(raw)
                .map(|(&y, &f)| {
                    let p = (sigmoid(f) as f64).clamp(1e-15, 1.0 - 1e-15);
                    -(y as f64 * p.ln() + (1.0 - y as f64) * (1.0 - p).ln())
                })
                .sum::<f64>()
                / n;
            format!("log loss {ll:.6}")
        }
    }
}

fn export(data: &Dataset, params: &GbtParams, model: GbtModel) -> TrainedModel {
    let width = data.n_features();
    let (kind, output) = match model.task {
        GbtTask::Regression => (ModelKind::GbtRegressor, "prediction"),
        GbtTask::BinaryClassification => (ModelKind::GbtClassifier, "probability"),
    };
    let mut nodes = Vec::new();
    match model.task {
        GbtTask::Regression => nodes.push(onnx::tree_ensemble_regressor(
            INPUT_NAME,
            output,
            &model.trees,
            Aggregate::Sum,
            model.base_score,
        )),
        GbtTask::BinaryClassification => {
            nodes.push(onnx::tree_ensemble_regressor(
                INPUT_NAME,
                "log_odds",
                &model.trees,
                Aggregate::Sum,
                model.base_score,
            ));
            nodes.push(onnx::node("Sigmoid", "", &["log_odds"], &[output], vec![]));
        }
    }
    let graph = onnx::Graph {
        name: kind.as_str(),
        input: onnx::batch_value(INPUT_NAME, width),
        nodes,
        constants: Vec::new(),
        outputs: vec![onnx::batch_value(output, 1)],
    };
    let tree_stats = TreeStats::of(&model.trees);
    TrainedModel::new(
        graph,
        kind,
        vec![output.to_string()],
        data,
        params,
        Some(tree_stats),
        Predictor::Gbt(model),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::ignore_progress;
    use crate::tree::NodeKind;

    fn step_data() -> Dataset {
        // y = 10 when x0 > 0.5, else 0; x1 is noise.
        let n = 200;
        let mut features = Vec::new();
        let mut target = Vec::new();
        for i in 0..n {
            let x0 = i as f32 / n as f32;
            let x1 = ((i * 37) % 11) as f32;
            features.extend([x0, x1]);
            target.push(if x0 > 0.5 { 10.0 } else { 0.0 });
        }
        Dataset::new(vec!["x0".into(), "x1".into()], features, target).unwrap()
    }

    #[test]
    fn one_stump_finds_the_step_and_counts_samples() {
        let params = GbtParams {
            n_trees: 1,
            max_depth: 1,
            learning_rate: 1.0,
            l2: 0.0,
            min_samples_leaf: 1,
            ..Default::default()
        };
        let m = train_gbt_regressor(&step_data(), &params, &mut ignore_progress()).unwrap();
        let Predictor::Gbt(g) = &m.predictor else {
            panic!()
        };
        assert_eq!(g.base_score, 10.0 * 99.0 / 200.0);
        let NodeKind::Split {
            feature, threshold, ..
        } = g.trees[0].nodes[0].kind
        else {
            panic!("root is a leaf")
        };
        assert_eq!(feature, 0);
        // The last x0 of the zero class is 100/200.
        assert_eq!(threshold, 0.5);
        assert_eq!(m.predict_row(&[0.2, 3.0]), 0.0);
        assert_eq!(m.predict_row(&[0.9, 3.0]), 10.0);
        let stats = m.tree_stats.as_ref().unwrap();
        assert_eq!(stats.trees[0].node_samples, vec![200, 101, 99]);
    }

    #[test]
    fn child_counts_add_up_and_depth_is_limited() {
        for growth in [Growth::DepthWise, Growth::BestFirst] {
            let params = GbtParams {
                n_trees: 3,
                max_depth: 3,
                min_samples_leaf: 5,
                max_leaves: 5,
                growth,
                subsample: 0.5,
                ..Default::default()
            };
            let m = train_gbt_regressor(&step_data(), &params, &mut ignore_progress()).unwrap();
            let Predictor::Gbt(g) = &m.predictor else {
                panic!()
            };
            for tree in &g.trees {
                assert!(tree.depth() <= 3);
                assert_eq!(tree.nodes[0].samples, 100, "subsample of half the rows");
                if growth == Growth::BestFirst {
                    assert!(tree.n_leaves() <= 5);
                }
                for node in &tree.nodes {
                    if let NodeKind::Split { left, right, .. } = node.kind {
                        let (l, r) = (tree.nodes[left].samples, tree.nodes[right].samples);
                        assert_eq!(l + r, node.samples);
                        assert!(l >= 5 && r >= 5);
                    }
                }
            }
        }
    }

    #[test]
    fn training_is_deterministic_per_seed() {
        let params = GbtParams {
            n_trees: 5,
            subsample: 0.7,
            seed: 9,
            ..Default::default()
        };
        let a = train_gbt_regressor(&step_data(), &params, &mut ignore_progress()).unwrap();
        let b = train_gbt_regressor(&step_data(), &params, &mut ignore_progress()).unwrap();
        assert_eq!(a.onnx, b.onnx);
        let c = train_gbt_regressor(
            &step_data(),
            &GbtParams { seed: 10, ..params },
            &mut ignore_progress(),
        )
        .unwrap();
        assert_ne!(a.onnx, c.onnx);
    }

    #[test]
    fn a_callback_that_says_stop_ends_training_after_that_tree() {
        let params = GbtParams {
            n_trees: 20,
            ..Default::default()
        };
        let mut trees = 0;
        let err = train_gbt_regressor(&step_data(), &params, &mut |p| {
            trees = p.done;
            if p.done == 3 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .unwrap_err();
        assert!(
            matches!(err, Error::Stopped { done: 3, total: 20 }),
            "{err}"
        );
        assert_eq!(trees, 3);
    }

    #[test]
    fn the_classifier_learns_the_step_and_reports_progress() {
        let data = step_data();
        let labels: Vec<f32> = data
            .target()
            .iter()
            .map(|&y| (y > 0.0) as u8 as f32)
            .collect();
        let data = Dataset::new(
            data.feature_names().to_vec(),
            data.features().to_vec(),
            labels,
        )
        .unwrap();
        let mut seen = Vec::new();
        let params = GbtParams {
            n_trees: 20,
            min_samples_leaf: 5,
            ..Default::default()
        };
        let m = train_gbt_classifier(&data, &params, &mut |p| {
            seen.push(p);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen.len(), 20);
        assert_eq!((seen[19].done, seen[19].total), (20, 20));
        assert!(
            seen[0].message.starts_with("tree 1/20:"),
            "{}",
            seen[0].message
        );
        assert!(m.predict_row(&[0.1, 0.0]) < 0.2);
        assert!(m.predict_row(&[0.9, 0.0]) > 0.8);
        assert_eq!(m.outputs, vec!["probability".to_string()]);
        assert_eq!(m.params["n_trees"], 20);
    }

    #[test]
    fn classifier_targets_must_be_zero_or_one_and_both_present() {
        let err = train_gbt_classifier(&step_data(), &GbtParams::default(), &mut ignore_progress())
            .unwrap_err();
        assert!(err.to_string().contains("row 101 has 10"), "{err}");
        let d = Dataset::new(vec!["x".into()], vec![1.0, 2.0], vec![1.0, 1.0]).unwrap();
        let err =
            train_gbt_classifier(&d, &GbtParams::default(), &mut ignore_progress()).unwrap_err();
        assert!(err.to_string().contains("every row is of class 1"), "{err}");
    }

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(-200.0), 0.0);
        assert_eq!(sigmoid(200.0), 1.0);
        assert!((sigmoid(1.0) - 0.731_058_6).abs() < 1e-7);
        // Far below zero it is small, not 0: e^-20 / (1 + e^-20).
        let small = sigmoid(-20.0);
        assert!((small / 2.061_153_6e-9 - 1.0).abs() < 1e-6, "{small}");
        assert_eq!(sigmoid(-110.0), 0.0, "below f32's smallest");
    }
}
