//! Evaluation metrics on a hold-out, computed in `f64`: MAE, RMSE and R²
//! for regression; accuracy, precision, recall and F1 at a threshold and
//! ROC AUC (ties get the average rank) for classifiers and anomaly scores.
//! [`Metrics`] is what the hub stores per model version, as JSON.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

fn check_pair(metric: &'static str, target: &[f32], predicted: &[f32]) -> Result<()> {
    if target.len() != predicted.len() {
        return Err(Error::metric(
            metric,
            format!(
                "{} targets but {} predictions",
                target.len(),
                predicted.len()
            ),
        ));
    }
    if target.is_empty() {
        return Err(Error::metric(metric, "no rows to evaluate"));
    }
    Ok(())
}

/// Mean absolute error.
pub fn mae(target: &[f32], predicted: &[f32]) -> Result<f64> {
    check_pair("mae", target, predicted)?;
    Ok(target
        .iter()
        .zip(predicted)
        .map(|(&y, &p)| (y as f64 - p as f64).abs())
        .sum::<f64>()
        / target.len() as f64)
}

/// Root mean squared error.
pub fn rmse(target: &[f32], predicted: &[f32]) -> Result<f64> {
    check_pair("rmse", target, predicted)?;
    let mse = target
        .iter()
        .zip(predicted)
        .map(|(&y, &p)| (y as f64 - p as f64).powi(2))
        .sum::<f64>()
        / target.len() as f64;
    Ok(mse.sqrt())
}

/// Coefficient of determination, `1 - SS_res / SS_tot`: 1 is perfect, 0
/// is as good as predicting the mean, below 0 is worse. Undefined (an
/// error) for a constant target.
pub fn r2(target: &[f32], predicted: &[f32]) -> Result<f64> {
    check_pair("r2", target, predicted)?;
    let n = target.len() as f64;
    let mean = target.iter().map(|&y| y as f64).sum::<f64>() / n;
    let ss_tot: f64 = target.iter().map(|&y| (y as f64 - mean).powi(2)).sum();
    if ss_tot == 0.0 {
        return Err(Error::metric("r2", "the target is constant"));
    }
    let ss_res: f64 = target
        .iter()
        .zip(predicted)
        .map(|(&y, &p)| (y as f64 - p as f64).powi(2))
        .sum();
    Ok(1.0 - ss_res / ss_tot)
}

fn check_labels(metric: &'static str, labels: &[f32]) -> Result<()> {
    match labels.iter().position(|&y| y != 0.0 && y != 1.0) {
        Some(i) => Err(Error::metric(
            metric,
            format!("labels must be 0 or 1; row {i} has {}", labels[i]),
        )),
        None => Ok(()),
    }
}

/// Counts of a thresholded binary prediction (`score >= threshold` is
/// positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Positives predicted positive.
    pub true_positives: usize,
    /// Negatives predicted positive.
    pub false_positives: usize,
    /// Negatives predicted negative.
    pub true_negatives: usize,
    /// Positives predicted negative.
    pub false_negatives: usize,
}

impl Confusion {
    /// Counts `labels` (0 or 1) against `scores >= threshold`.
    pub fn at(labels: &[f32], scores: &[f32], threshold: f32) -> Result<Confusion> {
        check_pair("confusion", labels, scores)?;
        check_labels("confusion", labels)?;
        let mut c = Confusion {
            true_positives: 0,
            false_positives: 0,
            true_negatives: 0,
            false_negatives: 0,
        };
        for (&y, &s) in labels.iter().zip(scores) {
            match (y == 1.0, s >= threshold) {
                (true, true) => c.true_positives += 1,
                (false, true) => c.false_positives += 1,
                (false, false) => c.true_negatives += 1,
                (true, false) => c.false_negatives += 1,
            }
        }
        Ok(c)
    }

    fn ratio(num: usize, den: usize) -> f64 {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    }

    /// Share of rows predicted right.
    pub fn accuracy(&self) -> f64 {
        let n =
            self.true_positives + self.false_positives + self.true_negatives + self.false_negatives;
        Self::ratio(self.true_positives + self.true_negatives, n)
    }

    /// Share of predicted positives that are positive (0 when nothing is
    /// predicted positive).
    pub fn precision(&self) -> f64 {
        Self::ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
        )
    }

    /// Share of positives predicted positive (0 when there are none).
    pub fn recall(&self) -> f64 {
        Self::ratio(
            self.true_positives,
            self.true_positives + self.false_negatives,
        )
    }

    /// Harmonic mean of precision and recall (0 when both are 0).
    pub fn f1(&self) -> f64 {
        Self::ratio(
            2 * self.true_positives,
            2 * self.true_positives + self.false_positives + self.false_negatives,
        )
    }
}

/// Area under the ROC curve: the probability that a random positive
/// scores above a random negative, ties counting one half (the
/// Mann-Whitney statistic with average ranks). An error unless both
/// classes are present.
pub fn roc_auc(labels: &[f32], scores: &[f32]) -> Result<f64> {
    check_pair("roc_auc", labels, scores)?;
    check_labels("roc_auc", labels)?;
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::metric("roc_auc", format!("score of row {i} is NaN")));
    }
    let positives = labels.iter().filter(|&&y| y == 1.0).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(Error::metric(
            "roc_auc",
            "needs both classes among the labels",
        ));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        let tied_positives = order[i..=j].iter().filter(|&&k| labels[k] == 1.0).count();
        rank_sum += average_rank * tied_positives as f64;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Ok((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Metrics of one model (or baseline) on one set of rows; absent fields do
/// not apply to the task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Rows evaluated.
    pub n: usize,
    /// Mean absolute error (regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Root mean squared error (regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// R² (regression; absent for a constant target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    /// ROC AUC (classification; absent when one class is missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
    /// The score at or above which a row counts as positive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Accuracy at `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Precision at `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    /// Recall at `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    /// F1 at `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// Share of positive labels (classification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_rate: Option<f64>,
}

impl Metrics {
    /// MAE, RMSE and R² of regression predictions.
    pub fn regression(target: &[f32], predicted: &[f32]) -> Result<Metrics> {
        Ok(Metrics {
            n: target.len(),
            mae: Some(mae(target, predicted)?),
            rmse: Some(rmse(target, predicted)?),
            r2: r2(target, predicted).ok(),
            ..Default::default()
        })
    }

    /// ROC AUC and thresholded metrics of scores against 0/1 labels (a
    /// classifier's probabilities, or anomaly scores against "is anomaly").
    pub fn classification(labels: &[f32], scores: &[f32], threshold: f32) -> Result<Metrics> {
        let c = Confusion::at(labels, scores, threshold)?;
        let positives = c.true_positives + c.false_negatives;
        Ok(Metrics {
            n: labels.len(),
            roc_auc: roc_auc(labels, scores).ok(),
            threshold: Some(threshold),
            accuracy: Some(c.accuracy()),
            precision: Some(c.precision()),
            recall: Some(c.recall()),
            f1: Some(c.f1()),
            positive_rate: Some(positives as f64 / labels.len() as f64),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn regression_metrics_by_hand() {
        let y = [1.0, 2.0, 3.0, 4.0];
        let p = [1.5, 2.0, 2.0, 5.0];
        // |err| = 0.5, 0, 1, 1 -> MAE 0.625; err^2 = 0.25, 0, 1, 1 -> MSE 0.5625.
        assert!(close(mae(&y, &p).unwrap(), 0.625));
        assert!(close(rmse(&y, &p).unwrap(), 0.75));
        // SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5; R2 = 1 - 2.25 / 5.
        assert!(close(r2(&y, &p).unwrap(), 0.55));
        assert!(close(r2(&y, &y).unwrap(), 1.0));
        assert!(r2(&[2.0, 2.0], &[1.0, 3.0]).is_err());
        assert!(mae(&y, &p[..3]).is_err());
        assert!(mae(&[], &[]).is_err());
        let m = Metrics::regression(&y, &p).unwrap();
        assert_eq!(m.n, 4);
        assert!(close(m.r2.unwrap(), 0.55));
    }

    #[test]
    fn confusion_metrics_by_hand() {
        let labels = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let scores = [0.9, 0.6, 0.4, 0.7, 0.2, 0.1, 0.5, 0.5];
        // >= 0.5: predicted positive rows 0, 1, 3, 6, 7.
        let c = Confusion::at(&labels, &scores, 0.5).unwrap();
        assert_eq!(
            (
                c.true_positives,
                c.false_positives,
                c.true_negatives,
                c.false_negatives
            ),
            (3, 2, 2, 1)
        );
        assert!(close(c.precision(), 0.6));
        assert!(close(c.recall(), 0.75));
        assert!(close(c.f1(), 2.0 * 0.6 * 0.75 / 1.35));
        assert!(close(c.accuracy(), 5.0 / 8.0));
        let none = Confusion::at(&labels, &scores, 2.0).unwrap();
        assert_eq!(
            (none.precision(), none.recall(), none.f1()),
            (0.0, 0.0, 0.0)
        );
        assert!(Confusion::at(&[2.0], &[0.5], 0.5).is_err());
    }

    #[test]
    fn auc_of_perfect_reversed_and_constant_scores() {
        let labels = [0.0, 0.0, 1.0, 1.0];
        assert!(close(roc_auc(&labels, &[0.1, 0.2, 0.3, 0.4]).unwrap(), 1.0));
        assert!(close(roc_auc(&labels, &[0.4, 0.3, 0.2, 0.1]).unwrap(), 0.0));
        assert!(close(roc_auc(&labels, &[0.5; 4]).unwrap(), 0.5));
        assert!(roc_auc(&[1.0, 1.0], &[0.1, 0.2]).is_err());
        assert!(roc_auc(&[1.0, 0.0], &[f32::NAN, 0.2]).is_err());
    }

    #[test]
    fn auc_with_ties_uses_average_ranks() {
        // Pairs (positive, negative): positives 0.8, 0.5, 0.3; negatives
        // 0.5, 0.3, 0.1, 0.1. Wins: 0.8 beats 4; 0.5 beats 3, ties 1;
        // 0.3 beats 2, ties 1. AUC = (4 + 3.5 + 2.5) / 12 = 10 / 12.
        let labels = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let scores = [0.8, 0.5, 0.3, 0.5, 0.3, 0.1, 0.1];
        assert!(close(roc_auc(&labels, &scores).unwrap(), 10.0 / 12.0));
        // Brute force over every pair agrees on an awkward case.
        let labels: Vec<f32> = (0..40).map(|i| ((i * 7) % 3 == 0) as u8 as f32).collect();
        let scores: Vec<f32> = (0..40).map(|i| ((i * 13) % 5) as f32).collect();
        let mut wins = 0.0;
        let mut pairs = 0.0;
        for i in 0..40 {
            for j in 0..40 {
                if labels[i] == 1.0 && labels[j] == 0.0 {
                    pairs += 1.0;
                    wins += if scores[i] > scores[j] {
                        1.0
                    } else if scores[i] == scores[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        assert!(close(roc_auc(&labels, &scores).unwrap(), wins / pairs));
    }

    #[test]
    fn metrics_serialise_only_what_applies() {
        let m = Metrics::classification(&[0.0, 1.0], &[0.2, 0.7], 0.5).unwrap();
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["roc_auc"], 1.0);
        assert_eq!(json["f1"], 1.0);
        assert!(json.get("mae").is_none());
        let back: Metrics = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        let one_class = Metrics::classification(&[1.0, 1.0], &[0.2, 0.7], 0.5).unwrap();
        assert_eq!(one_class.roc_auc, None);
    }
}
