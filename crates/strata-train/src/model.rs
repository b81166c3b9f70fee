//! What a trainer hands back: the ONNX bytes the registry stores, the names
//! the edge binds to, the parameters and tree statistics the hub keeps as
//! JSON, and the model itself so predictions (and so metrics) need no
//! runtime.

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::gbt::GbtModel;
use crate::iforest::IsolationForestModel;
use crate::onnx;
use crate::ridge::RidgeModel;
use crate::tree::TreeStats;

/// The name of every exported model's input, a float `[N, features]`.
pub const INPUT_NAME: &str = "features";

/// Which trainer made a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Gradient-boosted trees, regression; output `prediction`.
    GbtRegressor,
    /// Gradient-boosted trees, binary classification; output `probability`.
    GbtClassifier,
    /// Isolation forest; output `anomaly_score`.
    IsolationForest,
    /// Ridge regression; output `prediction`.
    Ridge,
}

impl ModelKind {
    /// The name used in JSON and in the ONNX metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::GbtRegressor => "gbt_regressor",
            ModelKind::GbtClassifier => "gbt_classifier",
            ModelKind::IsolationForest => "isolation_forest",
            ModelKind::Ridge => "ridge",
        }
    }
}

/// A trained model in native form.
#[derive(Debug, Clone, PartialEq)]
pub enum Predictor {
    /// Boosted trees (regression or classification).
    Gbt(GbtModel),
    /// Isolation forest.
    IsolationForest(IsolationForestModel),
    /// Ridge regression.
    Ridge(RidgeModel),
}

impl Predictor {
    /// The model's one output for one row (`x` holds every feature).
    pub fn predict_row(&self, x: &[f32]) -> f32 {
        match self {
            Predictor::Gbt(m) => m.predict_row(x),
            Predictor::IsolationForest(m) => m.predict_row(x),
            Predictor::Ridge(m) => m.predict_row(x),
        }
    }
}

/// A trained model, exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedModel {
    /// The ONNX file (IR 8; `ai.onnx` 17, `ai.onnx.ml` 3 for trees).
    pub onnx: Vec<u8>,
    /// Which trainer made it.
    pub kind: ModelKind,
    /// The ONNX input's name ([`INPUT_NAME`]), float `[N, features]`.
    pub input_name: String,
    /// The ONNX output names, each float `[N, 1]`.
    pub outputs: Vec<String>,
    /// The input columns, in order: the feature schema the edge binds.
    pub feature_names: Vec<String>,
    /// The parameters trained with, defaults filled in.
    pub params: serde_json::Value,
    /// Per tree and node training sample counts (tree ensembles only).
    pub tree_stats: Option<TreeStats>,
    /// The model itself, for predictions without a runtime.
    pub predictor: Predictor,
}

impl TrainedModel {
    pub(crate) fn new(
        graph: onnx::Graph,
        kind: ModelKind,
        outputs: Vec<String>,
        data: &Dataset,
        params: &impl Serialize,
        tree_stats: Option<TreeStats>,
        predictor: Predictor,
    ) -> Self {
        let names = serde_json::to_string(data.feature_names()).unwrap_or_default();
        let onnx = onnx::encode(
            graph,
            &[
                ("strata.kind", kind.as_str().to_string()),
                ("strata.feature_names", names),
            ],
        );
        TrainedModel {
            onnx,
            kind,
            input_name: INPUT_NAME.to_string(),
            outputs,
            feature_names: data.feature_names().to_vec(),
            // Parameters are plain structs of numbers and enums.
            params: serde_json::to_value(params).unwrap_or(serde_json::Value::Null),
            tree_stats,
            predictor,
        }
    }

    /// The output for one row.
    pub fn predict_row(&self, x: &[f32]) -> f32 {
        self.predictor.predict_row(x)
    }

    /// The output for every row of a row-major batch.
    pub fn predict(&self, features: &[f32]) -> Result<Vec<f32>> {
        let width = self.feature_names.len();
        if !features.len().is_multiple_of(width) {
            return Err(Error::Shape(format!(
                "{} values are not a whole number of rows of {width} features",
                features.len()
            )));
        }
        Ok(features
            .chunks_exact(width)
            .map(|row| self.predict_row(row))
            .collect())
    }

    /// The output for every row of a table with the same features.
    pub fn predict_dataset(&self, data: &Dataset) -> Result<Vec<f32>> {
        if data.feature_names() != self.feature_names.as_slice() {
            return Err(Error::Shape(format!(
                "the model was trained on features {:?}, the table has {:?}",
                self.feature_names,
                data.feature_names()
            )));
        }
        self.predict(data.features())
    }
}
