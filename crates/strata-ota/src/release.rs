//! What a release and an assignment say.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a release installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An inference model (ONNX).
    Model,
    /// An edge agent configuration.
    Config,
    /// An application or firmware bundle: a file and its install hook.
    Bundle,
}

impl Kind {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Config => "config",
            Kind::Bundle => "bundle",
        }
    }
}

/// The artifact a release installs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// SHA-256 of its content, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Which devices a release may be installed on; every given part must
/// match (an empty selector matches every device).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Target {
    /// These devices only.
    pub devices: Vec<String>,
    /// Devices of these sites only.
    pub sites: Vec<String>,
    /// Devices carrying all these tags.
    pub tags: BTreeMap<String, String>,
}

/// A model release's details: what the agent binds it to, and the golden
/// cases it must reproduce before it may run (its health check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDetails {
    /// The pipeline vector it reads.
    pub vector: String,
    /// Its input features, by name, in order.
    pub features: Vec<String>,
    /// Inputs and the outputs they must give (all outputs, in order),
    /// within 1e-4 relative; signed with the release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub golden: Vec<GoldenCase>,
}

/// One golden input and its expected outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenCase {
    /// A feature row.
    pub input: Vec<f32>,
    /// Every output value, in order.
    pub output: Vec<f32>,
}

/// A bundle release's details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleDetails {
    /// The hook the agent runs to install it (a name from the agent's
    /// config, never a command from the release).
    pub install_hook: String,
}

/// What may be installed: signed with a release key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// What it installs.
    pub kind: Kind,
    /// Its name (a model's name, `agent`, ...).
    pub name: String,
    /// Grows with every release of (kind, name).
    pub version: u64,
    /// The lowest version a device that committed this release may go
    /// back to (a fleet rollback); absent: this version, no going back.
    /// This is the anti-rollback floor the device raises at commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<u64>,
    /// The artifact.
    pub artifact: Artifact,
    /// Where it may be installed.
    #[serde(default)]
    pub target: Target,
    /// When it was made, ns since the epoch.
    pub created_ns: i64,
    /// After this, no device installs it.
    pub expires_ns: i64,
    /// Model details (kind `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelDetails>,
    /// Bundle details (kind `bundle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleDetails>,
}

impl Release {
    /// The anti-rollback floor a device keeps once it committed this
    /// release.
    pub fn floor(&self) -> u64 {
        self.min_version.unwrap_or(self.version).min(self.version)
    }
}

/// This device should install that release now: signed with the hub's
/// rollout key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The device.
    pub device: String,
    /// SHA-256 of the release envelope's payload.
    pub release_digest: String,
    /// The release's kind.
    pub kind: Kind,
    /// The release's name.
    pub name: String,
    /// The release's version.
    pub version: u64,
    /// The campaign that made it.
    pub campaign: String,
    /// When it was issued, ns.
    pub issued_ns: i64,
    /// After this it is refused (hours, so a frozen hub cannot keep a
    /// device on stale instructions).
    pub expires_ns: i64,
}

/// What the hub puts in a device's twin for each update: the assignment and
/// the release it names, both as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedUpdate {
    /// The assignment (rollout key).
    pub assignment: crate::Envelope,
    /// The release (release key).
    pub release: crate::Envelope,
}
