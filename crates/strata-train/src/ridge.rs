//! Ridge regression in closed form, for forecasts that are linear in their
//! features (the building load from calendar terms and lagged load).
//! Features are standardised so one `alpha` means the same whatever their
//! units; the scaling is folded back into the weights, so the exported
//! model reads raw features. The normal equations are solved by Cholesky
//! in `f64`; the intercept is not penalised.
//!
//! Export: standard ops only, `MatMul` by the weights then `Add` the
//! intercept, into `prediction`.

use serde::{Deserialize, Serialize};

use crate::check::check_non_negative;
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::model::{INPUT_NAME, ModelKind, Predictor, TrainedModel};
use crate::onnx;
use crate::progress::{OnProgress, Progress, report};

/// Parameters of [`train_ridge`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RidgeParams {
    /// L2 penalty on the weights of the standardised features (>= 0);
    /// 0 is ordinary least squares.
    pub alpha: f64,
}

impl Default for RidgeParams {
    fn default() -> Self {
        RidgeParams { alpha: 1.0 }
    }
}

impl RidgeParams {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        check_non_negative("alpha", self.alpha)
    }
}

/// A linear model on raw features: `intercept + sum(weights[j] * x[j])`,
/// computed (and exported) centred, as `offset + sum(weights[j] * (x[j] -
/// center[j]))`: with features far from 0 (a load of 1e5, a timestamp) the
/// raw form cancels most of its digits in `f32`, which the edge runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeModel {
    /// One weight per feature, as exported.
    pub weights: Vec<f32>,
    /// The intercept of the raw form (for reading; not what runs).
    pub intercept: f32,
    /// The training rows' mean of each feature, as exported.
    pub center: Vec<f32>,
    /// The prediction at `center`, as exported.
    pub offset: f32,
}

impl RidgeModel {
    /// The prediction for one row: the exported graph's differences in
    /// `f32`, their products summed in `f64`, then rounded.
    pub fn predict_row(&self, x: &[f32]) -> f32 {
        let mut sum = self.offset as f64;
        for ((w, v), c) in self.weights.iter().zip(x).zip(&self.center) {
            sum += *w as f64 * (*v - *c) as f64;
        }
        sum as f32
    }
}

/// Solves `a x = b` for a symmetric positive definite `a` (row-major,
/// `p x p`) by Cholesky; `None` when `a` is not positive definite.
pub(crate) fn cholesky_solve(a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    let p = b.len();
    let mut l = vec![0.0f64; p * p];
    for i in 0..p {
        for j in 0..=i {
            let mut s = a[i * p + j];
            for k in 0..j {
                s -= l[i * p + k] * l[j * p + k];
            }
            if i == j {
                // Relative to the diagonal, a pivot this small means the
                // matrix is singular to working precision.
                // (NaN fails too.)
                if s.is_nan() || s <= a[i * p + i].abs() * 1e-12 {
                    return None;
                }
                l[i * p + i] = s.sqrt();
            } else {
                l[i * p + j] = s / l[j * p + j];
            }
        }
    }
    // L y = b, then L^T x = y.
    let mut y = vec![0.0f64; p];
    for i in 0..p {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * p + k] * y[k];
        }
        y[i] = s / l[i * p + i];
    }
    let mut x = vec![0.0f64; p];
    for i in (0..p).rev() {
        let mut s = y[i];
        for k in i + 1..p {
            s -= l[k * p + i] * x[k];
        }
        x[i] = s / l[i * p + i];
    }
    Some(x)
}

/// Fits ridge regression on the table. Output `prediction`. A feature that
/// is constant in the training rows gets weight 0.
pub fn train_ridge(
    data: &Dataset,
    params: &RidgeParams,
    progress: OnProgress<'_>,
) -> Result<TrainedModel> {
    params.validate()?;
    let target = data.require_target("ridge regression")?;
    let (n, p) = (data.n_rows(), data.n_features());
    let nf = n as f64;
    let mut mean = vec![0.0f64; p];
    for i in 0..n {
        for (j, m) in mean.iter_mut().enumerate() {
            *m += data.value(i, j) as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= nf);
    let mut std = vec![0.0f64; p];
    for i in 0..n {
        for (j, s) in std.iter_mut().enumerate() {
            *s += (data.value(i, j) as f64 - mean[j]).powi(2);
        }
    }
    std.iter_mut().for_each(|s| *s = (*s / nf).sqrt());
    let y_mean = target.iter().map(|&y| y as f64).sum::<f64>() / nf;
    // Columns that vary; the others keep weight 0.
    let active: Vec<usize> = (0..p).filter(|&j| std[j] > 0.0).collect();
    let q = active.len();

    let mut a = vec![0.0f64; q * q];
    let mut b = vec![0.0f64; q];
    let mut z = vec![0.0f64; q];
    for (i, &y) in target.iter().enumerate() {
        for (k, &j) in active.iter().enumerate() {
            z[k] = (data.value(i, j) as f64 - mean[j]) / std[j];
        }
        let y = y as f64 - y_mean;
        for r in 0..q {
            b[r] += z[r] * y;
            for c in 0..=r {
                a[r * q + c] += z[r] * z[c];
            }
        }
    }
    for r in 0..q {
        for c in 0..r {
            a[c * q + r] = a[r * q + c];
        }
        a[r * q + r] += params.alpha;
    }
    report(
        progress,
        Progress {
            done: 1,
            total: 2,
            message: format!("normal equations: {n} rows, {q} varying features of {p}"),
        },
    )?;
    let w = cholesky_solve(&a, &b).ok_or_else(|| {
        Error::Solve(
            "the features are collinear (one is a combination of others); \
             raise alpha above 0 or drop the redundant features"
                .into(),
        )
    })?;
    let mut weights = vec![0.0f64; p];
    for (k, &j) in active.iter().enumerate() {
        weights[j] = w[k] / std[j];
    }
    let intercept = y_mean - weights.iter().zip(&mean).map(|(w, m)| w * m).sum::<f64>();
    report(
        progress,
        Progress {
            done: 2,
            total: 2,
            message: format!("solved: intercept {intercept:.6}"),
        },
    )?;
    // The centre as exported (f32), and the prediction there in f64.
    let center: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let offset = intercept
        + weights
            .iter()
            .zip(&center)
            .map(|(w, &c)| w * c as f64)
            .sum::<f64>();
    let model = RidgeModel {
        weights: weights.iter().map(|&w| w as f32).collect(),
        intercept: intercept as f32,
        center,
        offset: offset as f32,
    };
    Ok(export(data, params, model))
}

fn export(data: &Dataset, params: &RidgeParams, model: RidgeModel) -> TrainedModel {
    let output = "prediction";
    let p = data.n_features();
    let graph = onnx::Graph {
        name: ModelKind::Ridge.as_str(),
        input: onnx::batch_value(INPUT_NAME, p),
        nodes: vec![
            onnx::node("Sub", "", &[INPUT_NAME, "center"], &["centered"], vec![]),
            onnx::node(
                "MatMul",
                "",
                &["centered", "weights"],
                &["weighted"],
                vec![],
            ),
            onnx::node("Add", "", &["weighted", "offset"], &[output], vec![]),
        ],
        constants: vec![
            onnx::tensor("center", &[p], model.center.clone()),
            onnx::tensor("weights", &[p, 1], model.weights.clone()),
            onnx::tensor("offset", &[1], vec![model.offset]),
        ],
        outputs: vec![onnx::batch_value(output, 1)],
    };
    TrainedModel::new(
        graph,
        ModelKind::Ridge,
        vec![output.to_string()],
        data,
        params,
        None,
        Predictor::Ridge(model),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::ignore_progress;

    fn ridge(data: &Dataset, alpha: f64) -> RidgeModel {
        let m = train_ridge(data, &RidgeParams { alpha }, &mut ignore_progress()).unwrap();
        match m.predictor {
            Predictor::Ridge(r) => r,
            _ => panic!(),
        }
    }

    #[test]
    fn cholesky_solves_a_known_system() {
        // [[4, 2], [2, 3]] x = [2, 1] has x = [0.5, 0].
        let x = cholesky_solve(&[4.0, 2.0, 2.0, 3.0], &[2.0, 1.0]).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-15 && x[1].abs() < 1e-15, "{x:?}");
        assert_eq!(cholesky_solve(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0]), None);
    }

    #[test]
    fn least_squares_recovers_an_exact_linear_law() {
        // y = 2 x0 - 3 x1 + 5.
        let mut f = Vec::new();
        let mut y = Vec::new();
        for i in 0..50 {
            let (a, b) = (i as f32 * 0.5, ((i * 7) % 13) as f32);
            f.extend([a, b]);
            y.push(2.0 * a - 3.0 * b + 5.0);
        }
        let d = Dataset::new(vec!["a".into(), "b".into()], f, y).unwrap();
        let m = ridge(&d, 0.0);
        assert!((m.weights[0] - 2.0).abs() < 1e-5, "{m:?}");
        assert!((m.weights[1] + 3.0).abs() < 1e-5, "{m:?}");
        assert!((m.intercept - 5.0).abs() < 1e-4, "{m:?}");
    }

    #[test]
    fn the_penalty_shrinks_the_standardised_weight_as_computed_by_hand() {
        // One feature x = 1..4, y = 2x: sigma^2 = 1.25, sum z^2 = 4 and
        // sum z (y - mean y) = 10 / sigma, so the raw weight is
        // 10 / (1.25 (4 + alpha)) = 8 / (4 + alpha): 1 for alpha = 4, and
        // the intercept 5 - 1 * 2.5.
        let d = Dataset::new(
            vec!["x".into()],
            vec![1.0, 2.0, 3.0, 4.0],
            vec![2.0, 4.0, 6.0, 8.0],
        )
        .unwrap();
        let m = ridge(&d, 4.0);
        assert!((m.weights[0] - 1.0).abs() < 1e-6, "{m:?}");
        assert!((m.intercept - 2.5).abs() < 1e-6, "{m:?}");
        assert!((m.predict_row(&[10.0]) - 12.5).abs() < 1e-5);
    }

    #[test]
    fn constant_features_get_zero_weight_and_collinear_ones_need_alpha() {
        let d = Dataset::new(
            vec!["x".into(), "c".into(), "x2".into()],
            vec![1.0, 7.0, 2.0, 2.0, 7.0, 4.0, 3.0, 7.0, 6.0],
            vec![1.0, 2.0, 3.0],
        )
        .unwrap();
        let err = train_ridge(&d, &RidgeParams { alpha: 0.0 }, &mut ignore_progress()).unwrap_err();
        assert!(matches!(err, Error::Solve(_)), "{err}");
        let m = ridge(&d, 0.1);
        assert_eq!(m.weights[1], 0.0);
        assert!(m.weights[0] > 0.0 && m.weights[2] > 0.0);
    }
}
