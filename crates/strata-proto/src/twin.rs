//! The device twin on the wire (JSON on `down/twin` and `up/twin`): the
//! desired document the hub publishes, retained, for each device, and the
//! reported document the device answers with.
//!
//! Today the twin carries the models a device should run; configuration
//! and OTA releases join it as further keys.

use serde::{Deserialize, Serialize};

/// What the hub wants a device to run (`strata/v1/{device}/down/twin`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DesiredTwin {
    /// Grows with every change; the device reports the one it applied.
    pub desired_version: u64,
    /// Models to run, at most one version per model name.
    #[serde(default)]
    pub models: Vec<ModelAssignment>,
    /// Signed updates (`strata_ota::SignedUpdate`: an assignment and its
    /// release, as signed), at most one per release kind and name.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub updates: Vec<serde_json::Value>,
}

/// One model a device should run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelAssignment {
    /// Model name (predictions are `{name}.{output}` readings).
    pub name: String,
    /// Version (predictions go to stream `model:{name}:{version}`).
    pub version: u32,
    /// SHA-256 of the ONNX artifact, lower-case hex: the device downloads
    /// it from the hub and refuses any other content.
    pub sha256: String,
    /// Artifact size in bytes.
    pub size: u64,
    /// The pipeline feature vector it reads.
    pub vector: String,
    /// The features it reads, by name, in input order.
    pub features: Vec<String>,
    /// Drift sketches and detectors for this model, when its version has a
    /// reference profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::DriftSettings>,
    /// A shadow challenger: it runs beside the model's serving version on
    /// the same feature vectors, its predictions are kept (readings
    /// `{name}.shadow.{output}` on its own stream) but nothing acts on them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

/// What a device says it runs (`strata/v1/{device}/up/twin`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportedTwin {
    /// The desired version this report answers.
    pub desired_version: u64,
    /// Each assigned model and how applying it went.
    #[serde(default)]
    pub models: Vec<ModelReport>,
    /// Each signed update and how it went.
    #[serde(default)]
    pub updates: Vec<UpdateReport>,
}

/// How one signed update went on the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateReport {
    /// Release kind (`model`, `config`, `bundle`).
    pub kind: String,
    /// Release name.
    pub name: String,
    /// Release version offered.
    pub version: u64,
    /// `committed`, `refused`, `failed` (verified but fails here) or
    /// `rolled_back` (failed its health window).
    pub state: String,
    /// The refusal's code (`rollback`, `hash_mismatch`, `expired`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What went wrong, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The campaign whose assignment this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
}

/// How one assigned model is doing on the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelReport {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: u32,
    /// `running` or `failed`.
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether it runs as a shadow challenger.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}
