//! Every trainer, end to end, on synthetic data with a known structure:
//! train, export ONNX, and check that
//! (a) Strata's runtime (`strata_infer::load_model`) gives the native Rust
//!     predictions,
//! (b) onnxruntime 1.32 (run by `tests/ort_check.py`) gives them too,
//! (c) the model beats the naive baseline on a time-ordered hold-out by the
//!     margin stated in each test,
//! and that the tree statistics line up with the exported tree and node ids.
//!
//! Tolerance for (a) and (b): |ours - theirs| <= 1e-5 * max(1, |theirs|),
//! i.e. absolute up to 1, relative above. Tree models are also probed on
//! rows whose values sit exactly on split thresholds (and one float above),
//! where `x <= threshold` must go the same way everywhere.
//!
//! The reference Python is `STRATA_PEERS_PYTHON` (a virtualenv with
//! onnxruntime, numpy and scikit-learn; `scripts/test.sh` creates
//! `target/peers`). These tests fail, never skip, without it.

use std::ffi::OsStr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use prost::Message;
use serde_json::{Value as Json, json};
use strata_train::baseline::best_constant_f1;
use strata_train::{
    Dataset, Evaluation, GbtParams, Growth, IsolationForestParams, NodeKind, Predictor,
    RidgeParams, TrainedModel, Tree, TreeStats, ignore_progress, metrics, time_holdout,
    train_gbt_classifier, train_gbt_regressor, train_isolation_forest, train_ridge,
};
use tract_onnx::pb;

const TOLERANCE: f32 = 1e-5;

// ---------------------------------------------------------------- helpers

fn peers_python() -> PathBuf {
    match std::env::var_os("STRATA_PEERS_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "STRATA_PEERS_PYTHON is not set. These tests check every exported model against \
             onnxruntime and scikit-learn, run by tests/ort_check.py. Point it at a Python that \
             has onnxruntime 1.32, numpy and scikit-learn, e.g. the virtualenv scripts/test.sh \
             creates: STRATA_PEERS_PYTHON=$PWD/target/peers/bin/python cargo test -p strata-train"
        ),
    }
}

/// Runs `tests/ort_check.py` with `args` and parses what it prints.
fn python(args: &[&OsStr]) -> Json {
    let python = peers_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ort_check.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (STRATA_PEERS_PYTHON): {e}", python.display()));
    assert!(
        out.status.success(),
        "ort_check.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ort_check.py prints JSON")
}

fn floats(v: &Json) -> Vec<f32> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

fn close(ours: f32, reference: f32) -> bool {
    (ours - reference).abs() <= TOLERANCE * reference.abs().max(1.0)
}

/// Asserts two output vectors agree within the tolerance; returns the
/// largest scaled difference.
fn assert_agree(what: &str, ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len(), "{what}: lengths differ");
    let mut worst = 0.0f32;
    for (i, (&a, &b)) in ours.iter().zip(reference).enumerate() {
        assert!(
            close(a, b),
            "{what}: row {i}: native {a} vs reference {b} (difference {})",
            (a - b).abs()
        );
        worst = worst.max((a - b).abs() / b.abs().max(1.0));
    }
    worst
}

/// Checks (a) and (b) on `rows`: Strata's runtime and onnxruntime both
/// reproduce the native predictions.
fn check_runtimes(name: &str, model: &TrainedModel, rows: &[f32], expect_runtime: &str) {
    let width = model.feature_names.len();
    let n = rows.len() / width;
    let native = model.predict(rows).unwrap();
    assert!(
        native.iter().all(|v| v.is_finite()),
        "{name}: native output not finite"
    );

    let loaded = strata_infer::load_model(&model.onnx)
        .unwrap_or_else(|e| panic!("{name}: strata-infer refuses the export: {e}"));
    assert_eq!(loaded.runtime(), expect_runtime, "{name}");
    assert_eq!(loaded.input_len(), width, "{name}");
    let names: Vec<&str> = loaded.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, model.outputs, "{name}: output names");
    assert_eq!(loaded.output_len(), 1, "{name}: one value per row");
    let mut strata = vec![0.0f32; n];
    loaded.run_batch(rows, &mut strata).unwrap();
    let worst_strata = assert_agree(&format!("{name} (strata-infer)"), &native, &strata);

    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("model.onnx");
    let inputs_path = dir.path().join("inputs.json");
    std::fs::write(&model_path, &model.onnx).unwrap();
    std::fs::write(
        &inputs_path,
        serde_json::to_vec(&json!({"n_features": width, "rows": rows})).unwrap(),
    )
    .unwrap();
    let out = python(&[
        OsStr::new("run"),
        model_path.as_os_str(),
        inputs_path.as_os_str(),
    ]);
    let ort = floats(&out["outputs"][model.outputs[0].as_str()]);
    let worst_ort = assert_agree(&format!("{name} (onnxruntime)"), &native, &ort);
    eprintln!(
        "{name}: {n} rows agree; largest scaled difference {worst_strata:e} with {expect_runtime}, \
         {worst_ort:e} with onnxruntime {}",
        out["version"]
    );
}

/// Test rows for a tree model: hold-out rows with features moved onto split
/// thresholds (odd rows one float above them), plus far-out rows.
fn threshold_probes(trees: &[Tree], holdout: &Dataset) -> Vec<f32> {
    let width = holdout.n_features();
    let mut thresholds: Vec<Vec<f32>> = vec![Vec::new(); width];
    for tree in trees {
        for node in &tree.nodes {
            if let NodeKind::Split {
                feature, threshold, ..
            } = node.kind
            {
                thresholds[feature].push(threshold);
            }
        }
    }
    let mut rows = Vec::new();
    for k in 0..300 {
        let base = holdout.row(k % holdout.n_rows());
        for (j, &v) in base.iter().enumerate() {
            let t = &thresholds[j];
            rows.push(if t.is_empty() || k % 3 == 2 {
                v
            } else {
                let x = t[(k * 7 + j * 13) % t.len()];
                if k % 2 == 0 { x } else { next_up(x) }
            });
        }
    }
    for far in [-1e30f32, -1e6, 1e6, 1e30] {
        rows.extend(std::iter::repeat_n(far, width));
    }
    rows
}

fn next_up(x: f32) -> f32 {
    if x == 0.0 {
        f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        f32::from_bits(x.to_bits() - 1)
    }
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> &'a pb::AttributeProto {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("attribute {name} missing"))
}

/// The tree statistics are keyed by the ONNX tree and node ids: one count
/// per exported node, and a split's count is its two children's.
fn check_tree_stats(model: &TrainedModel, root_samples: u64) {
    let stats: &TreeStats = model.tree_stats.as_ref().expect("tree stats");
    let proto = pb::ModelProto::decode(model.onnx.as_slice()).unwrap();
    let graph = proto.graph.unwrap();
    let node = graph
        .node
        .iter()
        .find(|n| n.op_type == "TreeEnsembleRegressor")
        .unwrap();
    let tree_ids = &attr(node, "nodes_treeids").ints;
    let node_ids = &attr(node, "nodes_nodeids").ints;
    let true_ids = &attr(node, "nodes_truenodeids").ints;
    let false_ids = &attr(node, "nodes_falsenodeids").ints;
    let modes = &attr(node, "nodes_modes").strings;
    let mut per_tree = vec![0usize; stats.trees.len()];
    for i in 0..tree_ids.len() {
        let (t, n) = (tree_ids[i] as usize, node_ids[i] as usize);
        per_tree[t] += 1;
        let samples = &stats.trees[t].node_samples;
        if modes[i] != b"LEAF" {
            let (l, r) = (true_ids[i] as usize, false_ids[i] as usize);
            assert_eq!(
                samples[n],
                samples[l] + samples[r],
                "tree {t} node {n}: counts do not add up"
            );
            assert!(samples[l] > 0 && samples[r] > 0);
        }
    }
    for (t, tree) in stats.trees.iter().enumerate() {
        assert_eq!(per_tree[t], tree.node_samples.len(), "tree {t}: node count");
        assert_eq!(tree.node_samples[0], root_samples, "tree {t}: root count");
    }
    let json = serde_json::to_value(stats).unwrap();
    assert!(json["trees"][0]["node_samples"].is_array());
}

/// A small seeded generator for the synthetic data.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn trees_of(model: &TrainedModel) -> &[Tree] {
    match &model.predictor {
        Predictor::Gbt(g) => &g.trees,
        Predictor::IsolationForest(f) => &f.trees,
        Predictor::Ridge(_) => panic!("no trees"),
    }
}

// ------------------------------------------------------------------ tests

/// Remaining useful life in hours: a nonlinear function (Friedman #1,
/// scaled) of 5 features on different scales, 3 noise features, and noise.
/// Margin: hold-out MAE below half the mean predictor's.
#[test]
fn gbt_regressor_exports_and_beats_the_mean() {
    peers_python();
    let mut g = Gen(1);
    let (n, width) = (5000, 8);
    let scales = [1.0, 10.0, 100.0, 0.01, 1000.0, 1.0, 5.0, 50.0];
    let offsets = [0.0, -5.0, 20.0, 0.5, -300.0, 0.0, 1.0, 2.0];
    let mut features = Vec::with_capacity(n * width);
    let mut target = Vec::with_capacity(n);
    for _ in 0..n {
        let u: Vec<f64> = (0..width).map(|_| g.uniform()).collect();
        let friedman = 10.0 * (std::f64::consts::PI * u[0] * u[1]).sin()
            + 20.0 * (u[2] - 0.5).powi(2)
            + 10.0 * u[3]
            + 5.0 * u[4]
            + g.normal();
        target.push((50.0 * friedman) as f32);
        features.extend((0..width).map(|j| (offsets[j] + scales[j] * u[j]) as f32));
    }
    let data = Dataset::new(names("sensor", width), features, target).unwrap();
    let split = time_holdout(&data, 0.2).unwrap();
    let params = GbtParams {
        n_trees: 100,
        max_depth: 5,
        learning_rate: 0.1,
        subsample: 0.8,
        seed: 7,
        ..Default::default()
    };
    let started = Instant::now();
    let mut reports = 0;
    let model = train_gbt_regressor(&split.train, &params, &mut |_| {
        reports += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    eprintln!(
        "gbt regressor: {} trees, depth {}, on {} rows x {width} features in {:?} (debug build unless --release)",
        params.n_trees,
        params.max_depth,
        split.train.n_rows(),
        started.elapsed()
    );
    assert_eq!(reports, 100);
    assert_eq!(model.outputs, vec!["prediction"]);

    let predicted = model.predict_dataset(&split.holdout).unwrap();
    let eval =
        Evaluation::regression(split.train.target(), split.holdout.target(), &predicted).unwrap();
    let (mae, base) = (eval.model.mae.unwrap(), eval.baseline.mae.unwrap());
    eprintln!(
        "gbt regressor: hold-out MAE {mae:.2} h vs mean predictor {base:.2} h, R2 {:?}",
        eval.model.r2
    );
    assert!(
        mae < 0.5 * base,
        "MAE {mae} is not below half the baseline's {base}"
    );

    check_tree_stats(&model, (split.train.n_rows() as f64 * 0.8).round() as u64);
    let mut rows = split.holdout.features().to_vec();
    rows.extend(threshold_probes(trees_of(&model), &split.holdout));
    check_runtimes("gbt regressor", &model, &rows, "strata-ml");
}

/// Failure within a horizon: label 1 when a hidden nonlinear function of 4
/// Gaussian features (plus noise) is in its top quarter; grown best-first.
/// Margins: hold-out ROC AUC above 0.9, F1 at 0.5 above both the base-rate
/// predictor's and the best F1 any constant prediction reaches.
#[test]
fn gbt_classifier_exports_and_beats_the_base_rate() {
    peers_python();
    let mut g = Gen(2);
    let (n, width) = (5000, 6);
    let mut features = Vec::with_capacity(n * width);
    let mut hidden = Vec::with_capacity(n);
    for _ in 0..n {
        let x: Vec<f64> = (0..width).map(|_| g.normal()).collect();
        hidden.push((3.0 * x[0]).sin() + x[1] * x[1] - x[2] * x[3] + 0.3 * g.normal());
        features.extend(x.iter().map(|&v| v as f32));
    }
    let mut sorted = hidden.clone();
    sorted.sort_by(f64::total_cmp);
    let cut = sorted[n * 3 / 4];
    let labels: Vec<f32> = hidden.iter().map(|&h| (h > cut) as u8 as f32).collect();
    let data = Dataset::new(names("x", width), features, labels).unwrap();
    let split = time_holdout(&data, 0.2).unwrap();
    let params = GbtParams {
        n_trees: 150,
        max_depth: 6,
        growth: Growth::BestFirst,
        max_leaves: 16,
        learning_rate: 0.1,
        seed: 3,
        ..Default::default()
    };
    let started = Instant::now();
    let model = train_gbt_classifier(&split.train, &params, &mut ignore_progress()).unwrap();
    eprintln!(
        "gbt classifier: {} trees best-first on {} rows x {width} features in {:?}",
        params.n_trees,
        split.train.n_rows(),
        started.elapsed()
    );
    assert_eq!(model.outputs, vec!["probability"]);

    let predicted = model.predict_dataset(&split.holdout).unwrap();
    assert!(predicted.iter().all(|&p| (0.0..=1.0).contains(&p)));
    let eval = Evaluation::classification(
        split.train.target(),
        split.holdout.target(),
        &predicted,
        0.5,
    )
    .unwrap();
    let auc = eval.model.roc_auc.unwrap();
    let f1 = eval.model.f1.unwrap();
    let constant_f1 = best_constant_f1(split.holdout.target());
    eprintln!(
        "gbt classifier: hold-out AUC {auc:.4}, F1 {f1:.4}; base rate F1 {:?}, best constant F1 {constant_f1:.4}",
        eval.baseline.f1
    );
    assert!(auc > 0.9, "AUC {auc}");
    assert_eq!(eval.baseline.roc_auc, Some(0.5));
    assert!(
        f1 > eval.baseline.f1.unwrap() && f1 > constant_f1,
        "F1 {f1}"
    );

    check_tree_stats(&model, split.train.n_rows() as u64);
    let mut rows = split.holdout.features().to_vec();
    rows.extend(threshold_probes(trees_of(&model), &split.holdout));
    check_runtimes("gbt classifier", &model, &rows, "strata-ml");
}

/// Anomalies injected in a Gaussian cloud (3% of rows, far from its
/// centre, at random times). Unsupervised training on the first 70%; the
/// hold-out is the rest. Margin: hold-out ROC AUC above 0.9, for us and for
/// scikit-learn's IsolationForest on the same rows (their scores differ,
/// as their randomness does; their ranking should broadly agree).
#[test]
fn isolation_forest_exports_and_finds_injected_anomalies() {
    peers_python();
    let mut g = Gen(3);
    let (n, width) = (3000, 5);
    let mut features = Vec::with_capacity(n * width);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let anomaly = g.uniform() < 0.03;
        let x: Vec<f64> = if anomaly {
            let d: Vec<f64> = (0..width).map(|_| g.normal()).collect();
            let norm = d.iter().map(|v| v * v).sum::<f64>().sqrt();
            let radius = 4.5 + 2.5 * g.uniform();
            d.iter()
                .map(|v| v / norm * radius + 0.3 * g.normal())
                .collect()
        } else {
            (0..width).map(|_| g.normal()).collect()
        };
        features.extend(x.iter().map(|&v| v as f32));
        labels.push(anomaly as u8 as f32);
    }
    let data = Dataset::new(names("v", width), features, labels).unwrap();
    let split = time_holdout(&data, 0.3).unwrap();
    let train = Dataset::unlabeled(
        split.train.feature_names().to_vec(),
        split.train.features().to_vec(),
    )
    .unwrap();
    let params = IsolationForestParams {
        seed: 11,
        ..Default::default()
    };
    let started = Instant::now();
    let model = train_isolation_forest(&train, &params, &mut ignore_progress()).unwrap();
    eprintln!(
        "isolation forest: {} trees of 256 samples on {} rows in {:?}",
        params.n_trees,
        train.n_rows(),
        started.elapsed()
    );
    assert_eq!(model.outputs, vec!["anomaly_score"]);

    let scores = model.predict_dataset(&split.holdout).unwrap();
    assert!(scores.iter().all(|&s| s > 0.0 && s <= 1.0));
    let labels = split.holdout.target();
    let auc = metrics::roc_auc(labels, &scores).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let data_path = dir.path().join("iforest.json");
    std::fs::write(
        &data_path,
        serde_json::to_vec(&json!({
            "n_features": width,
            "train": train.features(),
            "holdout": split.holdout.features(),
            "labels": labels,
            "seed": 0,
        }))
        .unwrap(),
    )
    .unwrap();
    let sk = python(&[OsStr::new("sklearn-iforest"), data_path.as_os_str()]);
    let sk_auc = sk["auc"].as_f64().unwrap();
    let sk_scores = floats(&sk["scores"]);
    // Our AUC computed on sklearn's scores equals sklearn's own.
    assert!((metrics::roc_auc(labels, &sk_scores).unwrap() - sk_auc).abs() < 1e-9);
    let rho = spearman(&scores, &sk_scores);
    eprintln!(
        "isolation forest: hold-out AUC {auc:.4} (scikit-learn {sk_auc:.4}); Spearman correlation of the scores {rho:.3}"
    );
    assert!(auc > 0.9, "AUC {auc}");
    assert!(sk_auc > 0.9, "scikit-learn AUC {sk_auc}");
    assert!(
        rho > 0.8,
        "our scores and scikit-learn's rank rows differently: {rho}"
    );

    check_tree_stats(&model, 256);
    let mut rows = split.holdout.features().to_vec();
    rows.extend(threshold_probes(trees_of(&model), &split.holdout));
    check_runtimes("isolation forest", &model, &rows, "strata-ml");
}

/// Features far from 0 (a meter reading around a million): the raw form
/// `x . w + b` cancels most of its digits in f32, as the edge computes it;
/// the export is centred on the training means, so it does not.
#[test]
fn a_ridge_model_on_large_features_runs_at_the_edge_without_cancellation() {
    let (mut f, mut y) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let a = 1_000_000.0 + (i % 50) as f32 * 0.25;
        let b = 2_000_000.0 + ((i * 7) % 31) as f32 * 0.5;
        f.extend([a, b]);
        y.push((0.1 * f64::from(a) - 0.3 * f64::from(b) + 500_000.0) as f32);
    }
    let data = Dataset::new(vec!["a".into(), "b".into()], f.clone(), y.clone()).unwrap();
    let model = train_ridge(&data, &RidgeParams { alpha: 0.0 }, &mut ignore_progress()).unwrap();
    let loaded = strata_infer::load_model(&model.onnx).unwrap();
    let mut out = vec![0.0f32; y.len()];
    loaded.run_batch(&f, &mut out).unwrap();
    let worst = out
        .iter()
        .zip(&y)
        .map(|(p, t)| (p - t).abs())
        .fold(0.0f32, f32::max);
    // The targets are a few units; the raw form's terms are about
    // 500,000, where f32 steps by 0.06, and it was off by about that.
    assert!(worst < 0.02, "largest error {worst}");
}

/// Hourly building load over ten weeks: an office occupancy profile
/// (weekdays 8:00-18:00), cooling with the outside temperature, noise.
/// Features: daily harmonics, a weekend flag and its interaction with the
/// first daily harmonic, temperature. The hold-out is the last two weeks.
/// Margin: hold-out MAE below half the mean predictor's.
#[test]
fn ridge_forecaster_exports_and_beats_the_mean() {
    peers_python();
    let mut g = Gen(4);
    let hours = 24 * 7 * 10;
    let tau = std::f64::consts::TAU;
    let mut features = Vec::new();
    let mut target = Vec::new();
    for t in 0..hours {
        let hour = (t % 24) as f64;
        let weekend = ((t / 24) % 7 >= 5) as u8 as f64;
        let occupied = weekend == 0.0 && (8.0..18.0).contains(&hour);
        let temp = 18.0
            + 7.0 * (tau * (hour - 9.0) / 24.0).sin()
            + 4.0 * (tau * t as f64 / (24.0 * 30.0)).sin()
            + 1.5 * g.normal();
        let load = 250.0
            + if occupied { 150.0 } else { 0.0 }
            + 6.0 * (temp - 18.0).max(0.0)
            + 10.0 * g.normal();
        let mut row = Vec::new();
        for k in 1..=3 {
            let a = tau * k as f64 * hour / 24.0;
            row.extend([a.sin(), a.cos()]);
        }
        let a = tau * hour / 24.0;
        row.extend([weekend, weekend * a.sin(), weekend * a.cos(), temp]);
        features.extend(row.iter().map(|&v| v as f32));
        target.push(load as f32);
    }
    let feature_names = vec![
        "day_sin1",
        "day_cos1",
        "day_sin2",
        "day_cos2",
        "day_sin3",
        "day_cos3",
        "weekend",
        "weekend_sin1",
        "weekend_cos1",
        "outside_temp",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let data = Dataset::new(feature_names, features, target).unwrap();
    let split = time_holdout(&data, 0.2).unwrap();
    let started = Instant::now();
    let mut phases = Vec::new();
    let model = train_ridge(&split.train, &RidgeParams { alpha: 1.0 }, &mut |p| {
        phases.push(p);
        ControlFlow::Continue(())
    })
    .unwrap();
    eprintln!(
        "ridge: {} rows x 10 features in {:?}",
        split.train.n_rows(),
        started.elapsed()
    );
    assert_eq!(phases.last().map(|p| (p.done, p.total)), Some((2, 2)));
    assert!(model.tree_stats.is_none());

    let predicted = model.predict_dataset(&split.holdout).unwrap();
    let eval =
        Evaluation::regression(split.train.target(), split.holdout.target(), &predicted).unwrap();
    let (mae, base) = (eval.model.mae.unwrap(), eval.baseline.mae.unwrap());
    eprintln!(
        "ridge: hold-out MAE {mae:.2} kW vs mean predictor {base:.2} kW, R2 {:?}",
        eval.model.r2
    );
    assert!(
        mae < 0.5 * base,
        "MAE {mae} is not below half the baseline's {base}"
    );

    // Hold-out rows plus a heat wave and a cold snap outside the training range.
    let mut rows = split.holdout.features().to_vec();
    for temp in [45.0f32, -20.0] {
        let mut r = split.holdout.row(10).to_vec();
        r[9] = temp;
        rows.extend(r);
    }
    check_runtimes("ridge", &model, &rows, "tract");
}

/// Every model's ONNX says what it was trained on and uses the opsets both
/// runtimes take; the JSON parameters are the full set, defaults included.
#[test]
fn exports_carry_their_schema_and_parameters() {
    let data = Dataset::new(
        names("f", 2),
        (0..200).map(|i| ((i * 37) % 101) as f32).collect(),
        (0..100).map(|i| (i % 2) as f32).collect(),
    )
    .unwrap();
    let models = [
        train_gbt_regressor(
            &data,
            &GbtParams {
                n_trees: 2,
                ..Default::default()
            },
            &mut ignore_progress(),
        )
        .unwrap(),
        train_gbt_classifier(
            &data,
            &GbtParams {
                n_trees: 2,
                ..Default::default()
            },
            &mut ignore_progress(),
        )
        .unwrap(),
        train_isolation_forest(
            &data,
            &IsolationForestParams {
                n_trees: 2,
                ..Default::default()
            },
            &mut ignore_progress(),
        )
        .unwrap(),
        train_ridge(&data, &RidgeParams::default(), &mut ignore_progress()).unwrap(),
    ];
    for m in &models {
        let proto = pb::ModelProto::decode(m.onnx.as_slice()).unwrap();
        assert_eq!(proto.ir_version, 8);
        let meta: Vec<(&str, &str)> = proto
            .metadata_props
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        assert!(meta.contains(&("strata.kind", m.kind.as_str())));
        assert!(meta.contains(&("strata.feature_names", r#"["f0","f1"]"#)));
        let graph = proto.graph.unwrap();
        assert_eq!(graph.input.len(), 1);
        assert_eq!(graph.input[0].name, m.input_name);
        assert_eq!(
            graph
                .output
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>(),
            m.outputs
        );
        for op in &proto.opset_import {
            match op.domain.as_str() {
                "" => assert_eq!(op.version, 17),
                "ai.onnx.ml" => assert_eq!(op.version, 3),
                other => panic!("unexpected domain {other}"),
            }
        }
        assert!(m.params.is_object());
    }
    assert_eq!(models[0].params["max_bins"], 255);
    assert_eq!(models[2].params["max_samples"], 256);
    assert_eq!(models[3].params["alpha"], 1.0);
}

/// Spearman rank correlation (ties get average ranks).
fn spearman(a: &[f32], b: &[f32]) -> f64 {
    fn ranks(v: &[f32]) -> Vec<f64> {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
                j += 1;
            }
            for &k in &order[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}
