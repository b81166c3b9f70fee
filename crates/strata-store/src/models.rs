//! The records of the model registry: models, their versions with lineage,
//! and aliases (`champion`, `challenger`, ...) that point at versions.
//!
//! Artifacts themselves are not here: the hub keeps them content-addressed
//! on disk (or in a bucket); a version row holds their sha256 and size.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Result, corrupt};

/// A model: a name that versions accumulate under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelInfo {
    /// Its name (`[A-Za-z0-9_-]`).
    pub name: String,
    /// When its first version was registered, ns.
    pub created_ns: i64,
    /// Its newest version, if any.
    pub latest_version: Option<u32>,
    /// Alias to version, e.g. `champion -> 3`.
    pub aliases: BTreeMap<String, u32>,
}

/// One output of a model as the edge runtime sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelOutputInfo {
    /// Output name (readings are `{model}.{name}`, with an index suffix
    /// when `len > 1`).
    pub name: String,
    /// Values per row.
    pub len: u32,
}

/// Where a model version came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct Lineage {
    /// What made it: `upload`, `training`, `retraining`, ...
    pub trigger: String,
    /// The trainer (`gbt`, `isolation-forest`, `linear`, `external:<cmd>`)
    /// or the uploader's note.
    pub trainer: String,
    /// The training job, when a job made it.
    pub job: Option<i64>,
    /// The version it replaces or was derived from.
    pub parent_version: Option<u32>,
    /// Start of the training data window, ns.
    pub data_from_ns: Option<i64>,
    /// End of the training data window, ns.
    pub data_to_ns: Option<i64>,
    /// SHA-256 of the training dataset as exported (CSV), hex.
    pub data_sha256: Option<String>,
    /// Rows in the training set.
    pub rows: Option<u64>,
    /// Devices the data came from.
    pub devices: Vec<String>,
    /// Sites the data came from.
    pub sites: Vec<String>,
    /// The target signal it was trained to predict.
    pub target: Option<String>,
    /// Trainer parameters, as given.
    pub params: serde_json::Value,
}

/// A registered model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelVersion {
    /// The model's name.
    pub model: String,
    /// Its version, assigned by the hub, growing from 1.
    pub version: u32,
    /// SHA-256 of the ONNX artifact, hex.
    pub sha256: String,
    /// Artifact size in bytes.
    pub size: u64,
    /// The edge runtime that runs it (`ml` or `tract`).
    pub runtime: String,
    /// Features per row.
    pub input_len: u32,
    /// Outputs, in order.
    pub outputs: Vec<ModelOutputInfo>,
    /// ONNX ops in the graph (`domain:Op`, sorted).
    pub ops: Vec<String>,
    /// The feature schema: input names in order.
    pub features: Vec<String>,
    /// The edge pipeline's feature vector it reads, when bound to one.
    pub vector: Option<String>,
    /// Where it came from.
    pub lineage: Lineage,
    /// Evaluation figures (e.g. `mae`, `auc`, `baseline_mae`).
    pub metrics: BTreeMap<String, f64>,
    /// Whether tree node sample counts are kept beside the artifact.
    pub has_tree_stats: bool,
    /// Free text.
    pub description: String,
    /// Registration time, ns.
    pub created_ns: i64,
}

/// The columns of a stored version, in the order both engines keep them.
pub(crate) const VERSION_COLUMNS: &str = "model, version, sha256, size, runtime, input_len, \
                                          outputs, ops, features, vector, lineage, metrics, \
                                          has_tree_stats, description, created_ns";

/// A record's JSON column, as both engines store it.
pub(crate) fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("JSON of registry records")
}

/// The JSON columns of a stored version, as read back.
pub(crate) struct JsonColumns<'a> {
    pub outputs: &'a str,
    pub ops: &'a str,
    pub features: &'a str,
    pub lineage: &'a str,
    pub metrics: &'a str,
}

impl ModelVersion {
    /// `partial` (every plain column read) with its JSON columns decoded.
    pub(crate) fn with_json(partial: ModelVersion, json: JsonColumns<'_>) -> Result<ModelVersion> {
        Ok(ModelVersion {
            outputs: serde_json::from_str(json.outputs).map_err(corrupt)?,
            ops: serde_json::from_str(json.ops).map_err(corrupt)?,
            features: serde_json::from_str(json.features).map_err(corrupt)?,
            lineage: serde_json::from_str(json.lineage).map_err(corrupt)?,
            metrics: serde_json::from_str(json.metrics).map_err(corrupt)?,
            ..partial
        })
    }
}
