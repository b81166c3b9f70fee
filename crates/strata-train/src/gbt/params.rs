//! Gradient-boosting parameters: defaults that suit a few thousand to a
//! few million telemetry rows, read from the hub's JSON with unknown keys
//! refused, and checked before training with errors that give the range.

use serde::{Deserialize, Serialize};

use crate::check::{check_non_negative, check_range, check_unit};
use crate::error::Result;

/// How a tree is grown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Growth {
    /// Level by level: every leaf that has a useful split is split until
    /// `max_depth`.
    DepthWise,
    /// Best leaf first: the split with the largest gain anywhere in the
    /// tree, until `max_leaves` leaves (and never deeper than `max_depth`).
    BestFirst,
}

/// Parameters of [`crate::train_gbt_regressor`] and
/// [`crate::train_gbt_classifier`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GbtParams {
    /// Boosting rounds, one tree each (1..=5000).
    pub n_trees: usize,
    /// Largest number of splits from the root to a leaf (1..=16).
    pub max_depth: usize,
    /// Shrinkage applied to every leaf value, in (0, 1].
    pub learning_rate: f64,
    /// Quantile bins per feature (2..=255).
    pub max_bins: usize,
    /// Fewest training rows in a leaf (>= 1).
    pub min_samples_leaf: usize,
    /// L2 penalty on leaf values (>= 0): leaf = -G / (H + l2).
    pub l2: f64,
    /// Smallest loss reduction that makes a split worth it (>= 0).
    pub min_split_gain: f64,
    /// Fraction of rows each tree is grown on, drawn without replacement
    /// with `seed`, in (0, 1].
    pub subsample: f64,
    /// Level-wise or best-first growth.
    pub growth: Growth,
    /// Leaves per tree for best-first growth (2..=65536); ignored by
    /// depth-wise growth.
    pub max_leaves: usize,
    /// Seed for row subsampling.
    pub seed: u64,
}

impl Default for GbtParams {
    fn default() -> Self {
        GbtParams {
            n_trees: 100,
            max_depth: 6,
            learning_rate: 0.1,
            max_bins: 255,
            min_samples_leaf: 20,
            l2: 1.0,
            min_split_gain: 0.0,
            subsample: 1.0,
            growth: Growth::DepthWise,
            max_leaves: 31,
            seed: 0,
        }
    }
}

impl GbtParams {
    /// Checks every parameter; the error names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        check_range("n_trees", self.n_trees, 1, 5000)?;
        check_range("max_depth", self.max_depth, 1, 16)?;
        check_unit("learning_rate", self.learning_rate)?;
        check_range("max_bins", self.max_bins, 2, 255)?;
        check_range("min_samples_leaf", self.min_samples_leaf, 1, 1_000_000)?;
        check_non_negative("l2", self.l2)?;
        check_non_negative("min_split_gain", self.min_split_gain)?;
        check_unit("subsample", self.subsample)?;
        check_range("max_leaves", self.max_leaves, 2, 65536)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn defaults_are_valid_and_json_fills_in_defaults() {
        GbtParams::default().validate().unwrap();
        let p: GbtParams =
            serde_json::from_str(r#"{"n_trees": 50, "growth": "best_first"}"#).unwrap();
        assert_eq!(p.n_trees, 50);
        assert_eq!(p.growth, Growth::BestFirst);
        assert_eq!(p.max_depth, 6);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<GbtParams>(r#"{"n_tree": 50}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `n_tree`"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_the_parameter_and_range() {
        let cases: Vec<(GbtParams, &str)> = vec![
            (
                GbtParams {
                    n_trees: 0,
                    ..Default::default()
                },
                "n_trees",
            ),
            (
                GbtParams {
                    n_trees: 5001,
                    ..Default::default()
                },
                "n_trees",
            ),
            (
                GbtParams {
                    max_depth: 17,
                    ..Default::default()
                },
                "max_depth",
            ),
            (
                GbtParams {
                    learning_rate: 0.0,
                    ..Default::default()
                },
                "learning_rate",
            ),
            (
                GbtParams {
                    learning_rate: 1.5,
                    ..Default::default()
                },
                "learning_rate",
            ),
            (
                GbtParams {
                    learning_rate: f64::NAN,
                    ..Default::default()
                },
                "learning_rate",
            ),
            (
                GbtParams {
                    max_bins: 256,
                    ..Default::default()
                },
                "max_bins",
            ),
            (
                GbtParams {
                    min_samples_leaf: 0,
                    ..Default::default()
                },
                "min_samples_leaf",
            ),
            (
                GbtParams {
                    l2: -1.0,
                    ..Default::default()
                },
                "l2",
            ),
            (
                GbtParams {
                    subsample: 0.0,
                    ..Default::default()
                },
                "subsample",
            ),
            (
                GbtParams {
                    max_leaves: 1,
                    ..Default::default()
                },
                "max_leaves",
            ),
        ];
        for (p, name) in cases {
            match p.validate() {
                Err(Error::Param { param, .. }) => assert_eq!(param, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        let msg = GbtParams {
            max_depth: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(msg, "parameter \"max_depth\": must be in 1..=16, got 0");
    }
}
