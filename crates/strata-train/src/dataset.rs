//! The training table: named feature columns stored row-major as `f32`
//! (the type the models read at inference), and an optional target. The
//! constructors check everything once, so the trainers can assume finite
//! values and consistent lengths.

use std::collections::HashSet;

use crate::error::{Error, Result};

/// Rows of features with (usually) one target value per row, in the order
/// given, which for telemetry is time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    feature_names: Vec<String>,
    features: Vec<f32>,
    target: Vec<f32>,
}

impl Dataset {
    /// A labelled table: `features` is row-major with `feature_names.len()`
    /// values per row, and `target` has one value per row. Refuses empty
    /// tables, duplicate or empty names, lengths that do not add up and
    /// non-finite values (naming the row and feature).
    pub fn new(feature_names: Vec<String>, features: Vec<f32>, target: Vec<f32>) -> Result<Self> {
        let data = Self::unlabeled(feature_names, features)?;
        if target.len() != data.n_rows() {
            return Err(Error::Shape(format!(
                "{} target values for {} rows",
                target.len(),
                data.n_rows()
            )));
        }
        if let Some(row) = target.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "target",
                row,
                feature: "target".into(),
                value: target[row].to_string(),
            });
        }
        Ok(Dataset { target, ..data })
    }

    /// A table without a target, for unsupervised training (isolation
    /// forest). Same checks as [`Dataset::new`] on the features.
    pub fn unlabeled(feature_names: Vec<String>, features: Vec<f32>) -> Result<Self> {
        let width = feature_names.len();
        if width == 0 {
            return Err(Error::Shape("no features: name at least one".into()));
        }
        let mut seen = HashSet::new();
        for (i, name) in feature_names.iter().enumerate() {
            if name.is_empty() {
                return Err(Error::Shape(format!("feature {i} has an empty name")));
            }
            if !seen.insert(name.as_str()) {
                return Err(Error::Shape(format!("feature \"{name}\" is named twice")));
            }
        }
        if features.is_empty() {
            return Err(Error::Shape("the table has no rows".into()));
        }
        if !features.len().is_multiple_of(width) {
            return Err(Error::Shape(format!(
                "{} feature values are not a whole number of rows of {width} features",
                features.len()
            )));
        }
        if let Some(at) = features.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "features",
                row: at / width,
                feature: feature_names[at % width].clone(),
                value: features[at].to_string(),
            });
        }
        Ok(Dataset {
            feature_names,
            features,
            target: Vec::new(),
        })
    }

    /// The feature names, in column order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Features per row.
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.features.len() / self.n_features()
    }

    /// All features, row-major.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// The target, one value per row; empty for an unlabeled table.
    pub fn target(&self) -> &[f32] {
        &self.target
    }

    /// Whether the table has a target.
    pub fn has_target(&self) -> bool {
        !self.target.is_empty()
    }

    /// One row's features.
    pub fn row(&self, i: usize) -> &[f32] {
        let w = self.n_features();
        &self.features[i * w..(i + 1) * w]
    }

    /// The value of feature `j` in row `i`.
    pub(crate) fn value(&self, i: usize, j: usize) -> f32 {
        self.features[i * self.n_features() + j]
    }

    /// A new table of the given rows, in the given order (indices must be
    /// in range; they come from this crate's splits).
    pub fn select_rows(&self, rows: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(rows.len() * self.n_features());
        for &r in rows {
            features.extend_from_slice(self.row(r));
        }
        let target = if self.has_target() {
            rows.iter().map(|&r| self.target[r]).collect()
        } else {
            Vec::new()
        };
        Dataset {
            feature_names: self.feature_names.clone(),
            features,
            target,
        }
    }

    /// The target, or an error telling that a supervised trainer needs one.
    pub(crate) fn require_target(&self, trainer: &str) -> Result<&[f32]> {
        if self.has_target() {
            Ok(&self.target)
        } else {
            Err(Error::Target(format!(
                "{trainer} needs a target; build the dataset with Dataset::new"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("f{i}")).collect()
    }

    #[test]
    fn accepts_a_consistent_table() {
        let d = Dataset::new(
            names(2),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            vec![0.0, 1.0, 2.0],
        )
        .unwrap();
        assert_eq!(d.n_rows(), 3);
        assert_eq!(d.n_features(), 2);
        assert_eq!(d.row(1), &[3.0, 4.0]);
        assert_eq!(d.value(2, 0), 5.0);
        let s = d.select_rows(&[2, 0]);
        assert_eq!(s.features(), &[5.0, 6.0, 1.0, 2.0]);
        assert_eq!(s.target(), &[2.0, 0.0]);
    }

    #[test]
    fn names_the_row_and_feature_of_a_nan() {
        let err = Dataset::new(
            vec!["temp".into(), "rpm".into()],
            vec![1.0, 2.0, 3.0, f32::NAN],
            vec![0.0, 0.0],
        )
        .unwrap_err();
        assert_eq!(
            err,
            Error::NonFinite {
                what: "features",
                row: 1,
                feature: "rpm".into(),
                value: "NaN".into()
            }
        );
        assert!(
            err.to_string().contains("row 1, feature \"rpm\" is NaN"),
            "{err}"
        );
    }

    #[test]
    fn refuses_infinite_targets_and_bad_shapes() {
        let err = Dataset::new(names(1), vec![1.0, 2.0], vec![0.0, f32::INFINITY]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    what: "target",
                    row: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            Dataset::new(names(2), vec![1.0, 2.0, 3.0], vec![0.0]),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            Dataset::new(names(1), vec![1.0, 2.0], vec![0.0]),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            Dataset::new(vec!["a".into(), "a".into()], vec![1.0, 2.0], vec![0.0]),
            Err(Error::Shape(m)) if m.contains("named twice")
        ));
        assert!(matches!(
            Dataset::unlabeled(names(1), vec![]),
            Err(Error::Shape(_))
        ));
    }

    #[test]
    fn an_unlabeled_table_has_no_target() {
        let d = Dataset::unlabeled(names(1), vec![1.0, 2.0]).unwrap();
        assert!(!d.has_target());
        assert!(matches!(d.require_target("ridge"), Err(Error::Target(_))));
    }
}
