//! The model registry (docs/design/models.md): versions with lineage and
//! metrics, content-addressed ONNX artifacts, aliases, and the checks that
//! make "registered" mean "a gateway can run it".
//!
//! Every upload is loaded by the edge runtime itself (`strata_infer`), so an
//! unsupported op or a feature schema of the wrong width is refused here,
//! with the op or the widths named, rather than on a thousand gateways.

pub mod artifacts;
pub mod backtest;
pub mod dataset;
pub mod deploy;
pub mod jobs;
pub mod s3;
pub mod train;

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_store::{Lineage, ModelInfo, ModelOutputInfo, ModelStore, ModelVersion};

pub use artifacts::ArtifactStore;

use crate::error::{Error, Result};

/// A model version to register.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    /// The model's name.
    pub model: String,
    /// The ONNX file.
    pub onnx: Vec<u8>,
    /// Input names in order; `f0..fN` when not given.
    pub features: Option<Vec<String>>,
    /// The edge pipeline vector it reads.
    pub vector: Option<String>,
    /// Free text.
    pub description: String,
    /// Where it came from.
    pub lineage: Lineage,
    /// Evaluation figures.
    pub metrics: BTreeMap<String, f64>,
    /// Tree node sample counts (`{"trees": [{"node_samples": [...]}]}`).
    pub tree_stats: Option<serde_json::Value>,
}

/// Which version a request means: a number or an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRef {
    /// A version number.
    Number(u32),
    /// An alias such as `champion`.
    Alias(String),
}

impl VersionRef {
    /// Parses `3`, `v3` or an alias name.
    pub fn parse(s: &str) -> Result<Self> {
        let digits = s.strip_prefix('v').unwrap_or(s);
        if let Ok(n) = digits.parse::<u32>() {
            return Ok(VersionRef::Number(n));
        }
        check_name("alias", s)?;
        Ok(VersionRef::Alias(s.to_owned()))
    }
}

/// Model and alias names: what the edge accepts in a stream name.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "{what} {name:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"
        )))
    }
}

/// The registry.
pub struct ModelRegistry {
    store: Arc<dyn ModelStore>,
    artifacts: ArtifactStore,
}

impl ModelRegistry {
    /// The registry over `store`, with its artifacts in `artifacts`.
    pub fn open(store: Arc<dyn ModelStore>, artifacts: ArtifactStore) -> Self {
        ModelRegistry { store, artifacts }
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// Validates and registers a version; returns it with its number.
    pub fn register(&self, new: NewVersion) -> Result<ModelVersion> {
        check_name("model name", &new.model)?;
        if let Some(v) = &new.vector {
            check_name("vector name", v)?;
        }
        let checked = validate(&new.onnx, new.features.as_deref())?;
        let sha256 = self.artifacts.put(&new.onnx)?;
        let has_tree_stats = match &new.tree_stats {
            Some(stats) => {
                let json = serde_json::to_vec(stats).expect("JSON of a JSON value");
                self.artifacts
                    .put_named(&format!("{sha256}.tree-stats.json"), &json)?;
                true
            }
            None => false,
        };
        let mut version = ModelVersion {
            model: new.model,
            version: 0,
            sha256,
            size: new.onnx.len() as u64,
            runtime: checked.runtime,
            input_len: checked.features.len() as u32,
            outputs: checked.outputs,
            ops: checked.ops,
            features: checked.features,
            vector: new.vector,
            lineage: new.lineage,
            metrics: new.metrics,
            has_tree_stats,
            description: new.description,
            created_ns: crate::now_ns(),
        };
        version.version = self.store.add_model_version(&version)?;
        tracing::info!(
            model = version.model,
            version = version.version,
            sha256 = version.sha256,
            "model version registered"
        );
        Ok(version)
    }

    /// All models.
    pub fn models(&self) -> Result<Vec<ModelInfo>> {
        Ok(self.store.models()?)
    }

    /// One model.
    pub fn model(&self, name: &str) -> Result<ModelInfo> {
        self.store
            .model(name)?
            .ok_or_else(|| Error::NotFound(format!("no model {name}")))
    }

    /// A model's versions, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        self.model(name)?;
        Ok(self.store.model_versions(name)?)
    }

    /// The version a number or alias means.
    pub fn version(&self, name: &str, which: &VersionRef) -> Result<ModelVersion> {
        let number = match which {
            VersionRef::Number(n) => *n,
            VersionRef::Alias(alias) => {
                *self.model(name)?.aliases.get(alias).ok_or_else(|| {
                    Error::NotFound(format!("model {name} has no alias {alias:?}"))
                })?
            }
        };
        self.store
            .model_version(name, number)?
            .ok_or_else(|| Error::NotFound(format!("model {name} has no version {number}")))
    }

    /// Checks an alias name: a valid name that cannot read as a version.
    pub fn check_alias(alias: &str) -> Result<()> {
        check_name("alias", alias)?;
        if alias.bytes().all(|b| b.is_ascii_digit() || b == b'v') {
            return Err(Error::BadRequest(format!(
                "alias {alias:?} would read as a version number"
            )));
        }
        Ok(())
    }

    /// Points an alias at a version; returns the version it pointed at.
    pub fn set_alias(&self, name: &str, alias: &str, version: u32) -> Result<Option<u32>> {
        Self::check_alias(alias)?;
        Ok(self
            .store
            .set_alias(name, alias, version, crate::now_ns())?)
    }

    /// Points an alias at `to` only if it still points at `from` (`None`:
    /// no such alias yet); false when it was moved meanwhile.
    pub fn move_alias(&self, name: &str, alias: &str, from: Option<u32>, to: u32) -> Result<bool> {
        Self::check_alias(alias)?;
        Ok(self
            .store
            .move_alias(name, alias, from, to, crate::now_ns())?)
    }

    /// Removes an alias.
    pub fn remove_alias(&self, name: &str, alias: &str) -> Result<()> {
        if self.store.remove_alias(name, alias)? {
            Ok(())
        } else {
            Err(Error::NotFound(format!(
                "model {name} has no alias {alias:?}"
            )))
        }
    }

    /// A version's ONNX file, checked against its hash and size.
    pub fn artifact(&self, v: &ModelVersion) -> Result<Vec<u8>> {
        let bytes = self.artifacts.get(&v.sha256)?;
        if bytes.len() as u64 != v.size {
            return Err(Error::Conflict(format!(
                "artifact of {} v{} has {} bytes, the registry says {}",
                v.model,
                v.version,
                bytes.len(),
                v.size
            )));
        }
        Ok(bytes)
    }

    /// A version's tree node sample counts.
    pub fn tree_stats(&self, v: &ModelVersion) -> Result<serde_json::Value> {
        if !v.has_tree_stats {
            return Err(Error::NotFound(format!(
                "{} v{} has no tree statistics (only models trained here keep them)",
                v.model, v.version
            )));
        }
        let bytes = self
            .artifacts
            .get_named(&format!("{}.tree-stats.json", v.sha256))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Conflict(format!("tree statistics are damaged: {e}")))
    }

    /// A version loaded in the edge runtime.
    pub fn load(&self, v: &ModelVersion) -> Result<Box<dyn strata_infer::Model>> {
        strata_infer::load_model(&self.artifact(v)?).map_err(|e| {
            Error::Conflict(format!("{} v{} no longer loads: {e}", v.model, v.version))
        })
    }
}

/// What validation learned about a model.
struct Checked {
    runtime: String,
    features: Vec<String>,
    outputs: Vec<ModelOutputInfo>,
    ops: Vec<String>,
}

/// Loads the model in the edge runtime and runs one row through it.
fn validate(onnx: &[u8], features: Option<&[String]>) -> Result<Checked> {
    let refuse = |e: strata_infer::Error| {
        Error::BadRequest(format!("the model cannot run at the edge: {e}"))
    };
    let proto = strata_infer::onnx::decode(onnx).map_err(refuse)?;
    let ops = strata_infer::onnx::op_list(&proto);
    let model = strata_infer::load_model(onnx).map_err(refuse)?;
    let width = model.input_len();
    let features = match features {
        Some(names) => {
            if names.len() != width {
                return Err(Error::BadRequest(format!(
                    "the feature schema names {} features but the model takes {width}",
                    names.len()
                )));
            }
            if let Some(bad) = names.iter().find(|n| n.trim().is_empty()) {
                return Err(Error::BadRequest(format!("feature name {bad:?} is empty")));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = names.iter().find(|n| !seen.insert(n.as_str())) {
                return Err(Error::BadRequest(format!(
                    "feature {twice:?} is named twice: each column of the model needs its own feature"
                )));
            }
            names.to_vec()
        }
        None => (0..width).map(|i| format!("f{i}")).collect(),
    };
    // Outputs become series by name, with what series names cannot hold
    // replaced: two that end up the same would write one series twice.
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = strata_infer::output_names(model.outputs())
        .into_iter()
        .find(|n| !seen.insert(n.clone()))
    {
        return Err(Error::BadRequest(format!(
            "two of the model's outputs would both be stored as series {twice:?}: rename one"
        )));
    }
    let mut out = vec![0f32; model.output_len()];
    model
        .run(&vec![0f32; width], &mut out)
        .map_err(|e| Error::BadRequest(format!("the model fails on a row of zeros: {e}")))?;
    Ok(Checked {
        runtime: model.runtime().to_owned(),
        features,
        outputs: model
            .outputs()
            .iter()
            .map(|o| ModelOutputInfo {
                name: o.name.clone(),
                len: o.len as u32,
            })
            .collect(),
        ops,
    })
}
