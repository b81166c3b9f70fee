//! The reference profile of a model version: one [`FeatureProfile`] per
//! input feature (from its training rows) and per output (from its
//! predictions on those rows), so that both data drift and prediction
//! drift can be measured against what the model was trained on.

use serde::{Deserialize, Serialize};

use crate::sketch::FeatureProfile;
use crate::{DriftError, Sample};

/// Bins per profile unless asked otherwise (reference quantiles).
pub const DEFAULT_BINS: usize = 20;

/// A profile under a name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedProfile {
    /// Feature or output name.
    pub name: String,
    /// Its profile.
    #[serde(flatten)]
    pub profile: FeatureProfile,
}

/// The reference of one model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// Rows the profile was built from.
    pub rows: u64,
    /// One per input feature, in the model's input order.
    pub features: Vec<NamedProfile>,
    /// One per output value, in output order.
    pub outputs: Vec<NamedProfile>,
}

impl ModelProfile {
    /// Builds a profile from row-major `rows` (one value per name in
    /// `features`) and row-major `predictions` (one per name in `outputs`).
    pub fn build(
        features: &[String],
        rows: &[f32],
        outputs: &[String],
        predictions: &[f32],
        bins: usize,
    ) -> Result<ModelProfile, DriftError> {
        let columns = |names: &[String], data: &[f32]| -> Result<Vec<NamedProfile>, DriftError> {
            let width = names.len();
            if width == 0 {
                return Ok(Vec::new());
            }
            if !data.len().is_multiple_of(width) {
                return Err(DriftError::InvalidSketch(format!(
                    "{} values do not divide into rows of {width}",
                    data.len()
                )));
            }
            names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let column = data.iter().skip(i).step_by(width).map(|&v| f64::from(v));
                    Ok(NamedProfile {
                        name: name.clone(),
                        profile: FeatureProfile::from_reference(&Sample::new(column), bins)?,
                    })
                })
                .collect()
        };
        let features_out = columns(features, rows)?;
        let outputs_out = columns(outputs, predictions)?;
        let n = if features.is_empty() {
            0
        } else {
            rows.len() / features.len()
        };
        Ok(ModelProfile {
            rows: n as u64,
            features: features_out,
            outputs: outputs_out,
        })
    }

    /// The profile of a feature or output by name.
    pub fn get(&self, name: &str) -> Option<&FeatureProfile> {
        self.feature(name).or_else(|| self.output(name))
    }

    /// The profile of an input feature by name.
    pub fn feature(&self, name: &str) -> Option<&FeatureProfile> {
        find(&self.features, name)
    }

    /// The profile of an output by name (an output may share a feature's
    /// name; it has its own bins).
    pub fn output(&self, name: &str) -> Option<&FeatureProfile> {
        find(&self.outputs, name)
    }
}

fn find<'a>(list: &'a [NamedProfile], name: &str) -> Option<&'a FeatureProfile> {
    list.iter().find(|p| p.name == name).map(|p| &p.profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_profiled_by_name() {
        let names = vec!["a".to_string(), "b".to_string()];
        // a = 0..100, b = 1000 + 2 i.
        let rows: Vec<f32> = (0..100)
            .flat_map(|i| [i as f32, 1000.0 + 2.0 * i as f32])
            .collect();
        let preds: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let p = ModelProfile::build(&names, &rows, &["y".to_string()], &preds, 10).unwrap();
        assert_eq!(p.rows, 100);
        assert_eq!(p.get("a").unwrap().reference.edges.first(), Some(&0.0));
        assert_eq!(p.get("b").unwrap().reference.edges.last(), Some(&1198.0));
        assert_eq!(p.get("y").unwrap().reference.n, 100);
        assert!(p.get("c").is_none());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<ModelProfile>(&json).unwrap(), p);
    }
}
