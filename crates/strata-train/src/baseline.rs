//! Naive baselines, so a model is always reported next to what it has to
//! beat: the training mean for regression, the training base rate for a
//! classifier (a constant score, so ROC AUC 0.5 and F1 of "never"/"always"
//! positive at the threshold).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::Metrics;

fn mean(values: &[f32]) -> Result<f64> {
    if values.is_empty() {
        return Err(Error::metric("baseline", "no training targets"));
    }
    Ok(values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64)
}

/// The mean-predictor's value: the training target's mean.
pub fn training_mean(train_target: &[f32]) -> Result<f64> {
    mean(train_target)
}

/// The base-rate predictor's probability: the share of 1s in training.
pub fn base_rate(train_labels: &[f32]) -> Result<f64> {
    mean(train_labels)
}

/// The best F1 any constant prediction reaches on `labels`: predicting
/// every row positive, `2p / (1 + p)` for a positive rate `p`.
pub fn best_constant_f1(labels: &[f32]) -> f64 {
    let p = labels.iter().filter(|&&y| y == 1.0).count() as f64 / labels.len().max(1) as f64;
    2.0 * p / (1.0 + p)
}

/// A model's hold-out metrics beside the naive baseline's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    /// The model's metrics.
    pub model: Metrics,
    /// The naive predictor's metrics on the same rows.
    pub baseline: Metrics,
}

impl Evaluation {
    /// Regression: the model against the training mean.
    pub fn regression(
        train_target: &[f32],
        holdout_target: &[f32],
        predicted: &[f32],
    ) -> Result<Evaluation> {
        let constant = vec![training_mean(train_target)? as f32; holdout_target.len()];
        Ok(Evaluation {
            model: Metrics::regression(holdout_target, predicted)?,
            baseline: Metrics::regression(holdout_target, &constant)?,
        })
    }

    /// Classification: the model's scores against the training base rate,
    /// both thresholded at `threshold`.
    pub fn classification(
        train_labels: &[f32],
        holdout_labels: &[f32],
        scores: &[f32],
        threshold: f32,
    ) -> Result<Evaluation> {
        let constant = vec![base_rate(train_labels)? as f32; holdout_labels.len()];
        Ok(Evaluation {
            model: Metrics::classification(holdout_labels, scores, threshold)?,
            baseline: Metrics::classification(holdout_labels, &constant, threshold)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_baseline_scores_the_holdout_with_the_training_mean() {
        let e = Evaluation::regression(&[1.0, 3.0], &[2.0, 4.0], &[2.0, 4.0]).unwrap();
        assert_eq!(e.model.mae, Some(0.0));
        // Predicts 2 for both: errors 0 and 2.
        assert_eq!(e.baseline.mae, Some(1.0));
        assert_eq!(e.baseline.r2, Some(-1.0));
    }

    #[test]
    fn the_base_rate_baseline_has_auc_one_half() {
        let e = Evaluation::classification(
            &[0.0, 0.0, 0.0, 1.0],
            &[0.0, 1.0, 0.0, 1.0],
            &[0.1, 0.9, 0.2, 0.8],
            0.5,
        )
        .unwrap();
        assert_eq!(e.baseline.roc_auc, Some(0.5));
        // 0.25 < 0.5: never positive.
        assert_eq!(e.baseline.f1, Some(0.0));
        assert_eq!(e.model.f1, Some(1.0));
        assert!((best_constant_f1(&[0.0, 1.0, 0.0, 1.0]) - 2.0 / 3.0).abs() < 1e-12);
        assert!(base_rate(&[]).is_err());
    }
}
