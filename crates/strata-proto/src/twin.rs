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
    /// Which hub store numbered `desired_version`, made once with the
    /// store: versions compare only within one epoch (empty from hubs that
    /// predate it). See [`DesiredTwin::supersedes`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Models to run, at most one version per model name.
    #[serde(default)]
    pub models: Vec<ModelAssignment>,
    /// Signed updates (`strata_ota::SignedUpdate`: an assignment and its
    /// release, as signed), at most one per release kind and name.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub updates: Vec<serde_json::Value>,
}

impl DesiredTwin {
    /// Whether this twin replaces `current`, the one a device applied.
    /// Within one epoch only a later version does: twins sent by several
    /// hub replicas may arrive out of order, and an older one must not
    /// undo a newer. A twin of another epoch (the hub's store started
    /// afresh, numbering from 1 again) always does. Where either has no
    /// epoch (a hub of an earlier release, or a twin an agent kept from
    /// one), any other version does, as before epochs.
    pub fn supersedes(&self, current: &DesiredTwin) -> bool {
        if self.epoch.is_empty() || current.epoch.is_empty() {
            return self.desired_version != current.desired_version;
        }
        if self.epoch != current.epoch {
            return true;
        }
        self.desired_version > current.desired_version
    }
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

#[cfg(test)]
mod tests {
    use super::DesiredTwin;

    fn twin(epoch: &str, desired_version: u64) -> DesiredTwin {
        DesiredTwin {
            desired_version,
            epoch: epoch.into(),
            ..DesiredTwin::default()
        }
    }

    #[test]
    fn only_a_later_version_of_the_same_epoch_replaces_a_twin() {
        let applied = twin("e1", 5);
        assert!(twin("e1", 6).supersedes(&applied));
        assert!(!twin("e1", 5).supersedes(&applied), "the same again");
        assert!(!twin("e1", 4).supersedes(&applied), "older, arrived late");
        // A store started afresh numbers from 1 again.
        assert!(twin("e2", 1).supersedes(&applied));
        // Hubs without epochs: any other version, as before.
        assert!(twin("", 4).supersedes(&twin("", 5)));
        assert!(!twin("", 5).supersedes(&twin("", 5)));
        // A hub upgraded to epochs, and a twin kept from before it; or
        // replicas of both releases side by side during the upgrade: the
        // same version from either is the same twin.
        assert!(twin("e1", 1).supersedes(&twin("", 5)));
        assert!(!twin("e1", 5).supersedes(&twin("", 5)));
        assert!(!twin("", 5).supersedes(&twin("e1", 5)));
    }

    #[test]
    fn the_epoch_is_left_out_when_unknown_and_read_when_absent() {
        let json = serde_json::to_string(&twin("", 3)).unwrap();
        assert!(!json.contains("epoch"), "{json}");
        let parsed: DesiredTwin = serde_json::from_str(r#"{"desired_version": 3}"#).unwrap();
        assert_eq!(parsed, twin("", 3));
    }
}
