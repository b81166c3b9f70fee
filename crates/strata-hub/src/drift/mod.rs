//! Drift monitoring at the hub (docs/design/drift.md).
//!
//! - Every model version trained here gets a reference profile: quantile
//!   bins and reference counts per input feature (its training rows) and
//!   per output (its predictions on them). Uploaded versions get one from
//!   a dataset on request.
//! - A deployment hands the profile's bins to the devices (with the sketch
//!   window and the edge detector); agents send a histogram per feature
//!   and output per window on `up/sketch`.
//! - Sketches are checked against the profile (same bins, by fingerprint)
//!   and stored once per (device, stream, seq), acknowledged when durable.
//! - A report merges them per segment (device, site, firmware, a tag) and
//!   compares each with the profile, then says which segment the drift is
//!   confined to ([`report`]).

pub mod accuracy;
pub mod report;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_drift::profile::ModelProfile;
use strata_drift::sketch::bins_id;
use strata_proto::{DeviceId, DriftSettings, SketchBatch};
use strata_store::{DriftStore, ModelVersion};

use crate::config::DriftConfig;
use crate::error::{Error, Result};
use crate::models::ModelRegistry;

/// The profile of a model on reference rows (row-major, one value per
/// feature): the rows' columns, and every output value the model gives on
/// them, named as the edge names them.
pub fn build_profile(
    model: &dyn strata_infer::Model,
    features: &[String],
    rows: &[f32],
) -> Result<ModelProfile> {
    let width = features.len();
    if width == 0 || rows.is_empty() || !rows.len().is_multiple_of(width) {
        return Err(Error::BadRequest(format!(
            "a profile needs rows of {width} features; got {} values",
            rows.len()
        )));
    }
    let mut out = vec![0f32; model.output_len()];
    let mut predictions = Vec::with_capacity(rows.len() / width * out.len());
    for row in rows.chunks_exact(width) {
        model
            .run(row, &mut out)
            .map_err(|e| Error::BadRequest(format!("the model failed on a reference row: {e}")))?;
        predictions.extend_from_slice(&out);
    }
    let outputs = strata_infer::output_names(model.outputs());
    ModelProfile::build(
        features,
        rows,
        &outputs,
        &predictions,
        strata_drift::profile::DEFAULT_BINS,
    )
    .map_err(|e| Error::BadRequest(format!("cannot profile the reference rows: {e}")))
}

/// What the cache knows of a version's profile.
#[derive(Clone)]
enum Cached {
    /// Its profile (profiles never change).
    Found(Arc<ModelProfile>),
    /// It had none when looked at then: a version registered through
    /// another replica gets its profile a moment after it is listed, so
    /// absence is looked at again after [`Drift::recheck_absent`].
    Absent(Instant),
}

/// (model, version) -> what is known of its profile.
type ProfileCache = HashMap<(String, u32), Cached>;

/// Profiles, sketch intake and reports.
pub struct Drift {
    store: Arc<dyn DriftStore>,
    models: Arc<ModelRegistry>,
    config: DriftConfig,
    /// (model, version) -> its profile, read once (or its absence).
    profiles: Mutex<ProfileCache>,
    /// How long a version found without a profile is taken to have none.
    recheck_absent: Duration,
}

/// Why a sketch batch was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum SketchRefusal {
    /// Not a valid sketch batch.
    Malformed(String),
    /// Not over the bins of its model version's profile.
    Mismatch(String),
    /// The profile could not be read now (its store is unreachable): the
    /// device sends the batch again.
    Unavailable(String),
}

fn profile_file(model: &str, version: u32) -> String {
    format!("profile-{model}-v{version}.json")
}

impl Drift {
    /// The drift service over the hub's stores.
    pub fn new(
        store: Arc<dyn DriftStore>,
        models: Arc<ModelRegistry>,
        config: DriftConfig,
    ) -> Self {
        Drift {
            store,
            models,
            config,
            profiles: Mutex::new(HashMap::new()),
            recheck_absent: Duration::from_secs(30),
        }
    }

    /// The store of sketches.
    pub fn store(&self) -> &Arc<dyn DriftStore> {
        &self.store
    }

    /// Keeps `profile` as the reference of `v`.
    /// Profiles never change: a version that has one refuses another.
    pub fn save_profile(&self, v: &ModelVersion, profile: ModelProfile) -> Result<()> {
        if self.profile(&v.model, v.version)?.is_some() {
            return Err(Error::Conflict(format!(
                "{} v{} has a profile already; profiles never change",
                v.model, v.version
            )));
        }
        let json = serde_json::to_vec(&profile).expect("JSON of a profile");
        self.models
            .artifacts()
            .put_named(&profile_file(&v.model, v.version), &json)?;
        self.profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (v.model.clone(), v.version),
                Cached::Found(Arc::new(profile)),
            );
        Ok(())
    }

    /// The reference profile of `model` v`version`, if it has one.
    pub fn profile(&self, model: &str, version: u32) -> Result<Option<Arc<ModelProfile>>> {
        let key = (model.to_owned(), version);
        match self
            .profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            Some(Cached::Found(p)) => return Ok(Some(p.clone())),
            Some(Cached::Absent(at)) if at.elapsed() < self.recheck_absent => return Ok(None),
            _ => {}
        }
        let loaded = match self
            .models
            .artifacts()
            .get_named(&profile_file(model, version))
        {
            Ok(bytes) => {
                let damaged = |e: String| {
                    Error::Conflict(format!("the profile of {model} v{version} is damaged: {e}"))
                };
                let p: ModelProfile =
                    serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
                // Its sketches must be usable before anything builds on them.
                for named in p.features.iter().chain(&p.outputs) {
                    named
                        .profile
                        .reference
                        .validate()
                        .map_err(|e| damaged(format!("{}: {e}", named.name)))?;
                }
                Some(Arc::new(p))
            }
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let cached = match &loaded {
            Some(p) => Cached::Found(p.clone()),
            None => Cached::Absent(Instant::now()),
        };
        self.profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, cached);
        Ok(loaded)
    }

    /// The profile of `model` v`version` where that version is registered:
    /// a device names any model it likes, and only registered versions
    /// are looked up in the artifact store (and their absence cached).
    fn registered_profile(&self, model: &str, version: u32) -> Result<Option<Arc<ModelProfile>>> {
        let key = (model.to_owned(), version);
        if let Some(Cached::Found(p)) = self
            .profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Some(p.clone()));
        }
        match self
            .models
            .version(model, &crate::models::VersionRef::Number(version))
        {
            Ok(_) => self.profile(model, version),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What a deployment of `v` tells devices about drift (None without a
    /// profile).
    pub fn settings(&self, v: &ModelVersion) -> Result<Option<DriftSettings>> {
        let Some(profile) = self.profile(&v.model, v.version)? else {
            return Ok(None);
        };
        let edges = |list: &[strata_drift::profile::NamedProfile]| {
            list.iter()
                .map(|p| (p.name.clone(), p.profile.reference.edges.clone()))
                .collect()
        };
        Ok(Some(DriftSettings {
            window_s: self.config.window_s,
            features: edges(&profile.features),
            outputs: edges(&profile.outputs),
            detector: self.config.detector().map_err(Error::BadRequest)?,
        }))
    }

    /// Checks a sketch batch from `device` against its profile.
    pub fn check(&self, payload: &[u8]) -> std::result::Result<SketchBatch, SketchRefusal> {
        let batch = strata_proto::sketch::decode_sketch_batch(payload)
            .map_err(|e| SketchRefusal::Malformed(e.to_string()))?;
        crate::models::check_name("model", &batch.model)
            .map_err(|e| SketchRefusal::Malformed(e.to_string()))?;
        let profile = self
            .registered_profile(&batch.model, batch.version)
            .map_err(|e| SketchRefusal::Unavailable(e.to_string()))?
            .ok_or_else(|| {
                SketchRefusal::Mismatch(format!(
                    "{} v{} has no drift profile at this hub",
                    batch.model, batch.version
                ))
            })?;
        let features = batch.features.iter().map(|s| (s, false));
        for (s, is_output) in features.chain(batch.outputs.iter().map(|s| (s, true))) {
            let (found, kind) = if is_output {
                (profile.output(&s.name), "output")
            } else {
                (profile.feature(&s.name), "feature")
            };
            let p = found.ok_or_else(|| {
                SketchRefusal::Mismatch(format!(
                    "{} v{} has no {kind} {:?}",
                    batch.model, batch.version, s.name
                ))
            })?;
            let edges = &p.reference.edges;
            if s.bins != bins_id(edges) || s.counts.len() != edges.len() + 1 {
                return Err(SketchRefusal::Mismatch(format!(
                    "{}: the sketch is not over the bins of {} v{}",
                    s.name, batch.model, batch.version
                )));
            }
        }
        Ok(batch)
    }

    /// Stores a checked batch; false when it was stored before.
    pub fn store_batch(&self, device: &DeviceId, batch: &SketchBatch) -> Result<bool> {
        Ok(self.store.add_sketches(device, batch, crate::now_ns())?)
    }
}

#[cfg(test)]
mod tests {
    use strata_drift::Sample;
    use strata_drift::profile::NamedProfile;
    use strata_drift::sketch::FeatureProfile;
    use strata_store::{Durability, SqliteStore};

    use super::*;
    use crate::models::ArtifactStore;

    fn version(n: u32) -> ModelVersion {
        ModelVersion {
            model: "rul".into(),
            version: n,
            sha256: "ab".repeat(32),
            size: 1,
            runtime: "ml".into(),
            input_len: 1,
            outputs: vec![],
            ops: vec![],
            features: vec!["x".into()],
            vector: None,
            lineage: Default::default(),
            metrics: Default::default(),
            has_tree_stats: false,
            description: String::new(),
            created_ns: 0,
        }
    }

    #[test]
    fn a_profile_saved_through_another_replica_is_found_once_absence_is_looked_at_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), Durability::Process).unwrap());
        let artifacts = ArtifactStore::open(dir.path()).unwrap();
        let models = Arc::new(ModelRegistry::open(store.clone(), artifacts));
        // Two replicas over the same artifacts.
        let here = Drift::new(store.clone(), models.clone(), DriftConfig::default());
        let mut there = Drift::new(store, models, DriftConfig::default());
        there.recheck_absent = Duration::from_millis(50);
        assert!(there.profile("rul", 3).unwrap().is_none());

        let profile = ModelProfile {
            rows: 100,
            features: vec![NamedProfile {
                name: "x".into(),
                profile: FeatureProfile::from_reference(&Sample::new((0..100).map(f64::from)), 10)
                    .unwrap(),
            }],
            outputs: vec![],
        };
        here.save_profile(&version(3), profile).unwrap();
        assert!(here.profile("rul", 3).unwrap().is_some());
        // Absence is remembered for a while, then looked at again.
        assert!(there.profile("rul", 3).unwrap().is_none());
        std::thread::sleep(Duration::from_millis(60));
        let found = there.profile("rul", 3).unwrap().expect("found");
        assert_eq!(found.rows, 100);
    }

    #[test]
    fn an_unreadable_profile_asks_for_the_batch_again_and_is_read_once_it_can_be() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), Durability::Process).unwrap());
        let artifacts = ArtifactStore::open(dir.path()).unwrap();
        let models = Arc::new(ModelRegistry::open(store.clone(), artifacts.clone()));
        for _ in 1..=4 {
            strata_store::ModelStore::add_model_version(store.as_ref(), &version(0)).unwrap();
        }
        let drift = Drift::new(store, models, DriftConfig::default());
        let reference =
            FeatureProfile::from_reference(&Sample::new((0..100).map(f64::from)), 10).unwrap();
        let profile = ModelProfile {
            rows: 100,
            features: vec![NamedProfile {
                name: "x".into(),
                profile: reference.clone(),
            }],
            outputs: vec![],
        };
        let mut counts = vec![0; reference.reference.edges.len() + 1];
        counts[1] = 2;
        let batch = SketchBatch {
            stream: "sketch:rul:4".into(),
            seq: 1,
            model: "rul".into(),
            version: 4,
            start_ns: 0,
            end_ns: 1_000_000_000,
            vectors: 2,
            features: vec![strata_proto::sketch::SignalSketch {
                name: "x".into(),
                bins: bins_id(&reference.reference.edges),
                counts,
                n: 2,
                dropped: 0,
                sum: 3.0,
                sum_sq: 5.0,
                min: Some(1.0),
                max: Some(2.0),
            }],
            outputs: vec![],
            detections: vec![],
        };
        let payload = serde_json::to_vec(&batch).unwrap();
        // The profile's file cannot be read (here: a directory stands in
        // its place, as a disk or bucket error would): not the device's
        // fault, so the batch is neither refused nor kept.
        let path = dir
            .path()
            .join("artifacts/sha256")
            .join(profile_file("rul", 4));
        std::fs::create_dir(&path).unwrap();
        match drift.check(&payload) {
            Err(SketchRefusal::Unavailable(why)) => assert!(why.contains("cannot read"), "{why}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // Nothing was remembered: once the profile reads, the batch sent
        // again is taken.
        std::fs::remove_dir(&path).unwrap();
        artifacts
            .put_named(
                &profile_file("rul", 4),
                &serde_json::to_vec(&profile).unwrap(),
            )
            .unwrap();
        let checked = drift.check(&payload).expect("checked");
        assert_eq!(checked.seq, 1);

        // A device may name any model: one not registered here is refused
        // without a look in the artifact store, and nothing is kept of it;
        // a name no model can have is malformed.
        let other = |model: &str, version: u32| {
            let mut b = batch.clone();
            b.model = model.into();
            b.version = version;
            b.stream = format!("sketch:{model}:{version}");
            serde_json::to_vec(&b).unwrap()
        };
        let cached = || drift.profiles.lock().unwrap().len();
        let before = cached();
        for (model, version) in [("rul", 5), ("r4nd0m", 1), ("r4nd0m2", 1)] {
            match drift.check(&other(model, version)) {
                Err(SketchRefusal::Mismatch(why)) => {
                    assert!(why.contains("no drift profile"), "{why}")
                }
                other => panic!("expected Mismatch, got {other:?}"),
            }
        }
        assert_eq!(cached(), before);
        // A feature's sketch sent as an output's: the profile has no such
        // output.
        let mut swapped = batch.clone();
        swapped.outputs = std::mem::take(&mut swapped.features);
        match drift.check(&serde_json::to_vec(&swapped).unwrap()) {
            Err(SketchRefusal::Mismatch(why)) => assert!(why.contains("no output \"x\""), "{why}"),
            other => panic!("expected Mismatch, got {other:?}"),
        }
        match drift.check(&other(&"x".repeat(65), 1)) {
            Err(SketchRefusal::Malformed(why)) => assert!(why.contains("64"), "{why}"),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }
}
