//! Models on the edge: each configured ONNX model is bound to one of the
//! pipeline's feature vectors and runs on every vector the pipeline
//! completes. Its outputs become readings `{model}.{output}` (plus
//! `{model}.latency_us`) on the stream `model:{name}:{version}`, so every
//! stored prediction says which model version made it, and a new version
//! starts a new stream with its own sequence numbers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Deserialize;
use strata_infer::Model;
use strata_pipeline::{FeatureVector, VectorSchema};
use strata_proto::{SignalSeries, SketchBatch};

use crate::drift::ModelDrift;
use crate::health::ModelStats;

/// Configuration of one model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Model name, e.g. `rul`: 1..=64 of [A-Za-z0-9_-].
    pub name: String,
    /// The ONNX file; relative paths are relative to the config file.
    pub path: PathBuf,
    /// The model version, e.g. `3` (1..=32 of [A-Za-z0-9_.-]).
    #[serde(default = "default_version")]
    pub version: String,
    /// The pipeline feature vector the model reads.
    pub vector: String,
    /// The model's inputs by feature name, in the model's order (default:
    /// the whole vector, in the vector's order).
    #[serde(default)]
    pub features: Option<Vec<String>>,
    /// Names for the model's output values, in order (default: the ONNX
    /// output names, with `.{i}` for outputs wider than one).
    #[serde(default)]
    pub outputs: Option<Vec<String>>,
    /// Drift sketches (and a detector) for this model; deployments from
    /// the hub fill it from the version's reference profile.
    #[serde(default)]
    pub drift: Option<strata_proto::DriftSettings>,
    /// A shadow challenger: runs beside the model of the same name, its
    /// readings are `{name}.shadow.{output}` so they never mix with the
    /// serving model's.
    #[serde(default)]
    pub shadow: bool,
}

impl ModelConfig {
    /// The vector this model reads and the positions of its inputs in it;
    /// an error when the pipeline has no such vector or feature.
    pub fn bind<'v>(
        &self,
        vectors: &'v [VectorSchema],
    ) -> Result<(&'v VectorSchema, Vec<usize>), String> {
        let schema = vectors
            .iter()
            .find(|v| v.name() == self.vector)
            .ok_or_else(|| {
                format!(
                    "the pipeline has no vector {:?} (it has: {})",
                    self.vector,
                    vectors
                        .iter()
                        .map(|v| v.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let picks = match &self.features {
            None => (0..schema.width()).collect(),
            Some(names) => names
                .iter()
                .map(|f| {
                    schema
                        .position(f)
                        .ok_or_else(|| format!("vector {:?} has no feature {f:?}", self.vector))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok((schema, picks))
    }

    /// The name its readings and counters go by: `{name}`, or
    /// `{name}.shadow` for a shadow challenger.
    pub fn signal_prefix(&self) -> String {
        if self.shadow {
            format!("{}.shadow", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// The models of the config file that load against the pipeline's
/// vectors. Where a committed config release replaced the file's
/// pipeline, a file model written for the old vectors (gone, renamed or
/// of another width) is left out, logged, rather than stopping the agent:
/// a gateway that cannot start cannot be sent the fix.
pub fn fitting(
    configs: &[ModelConfig],
    base_dir: &Path,
    vectors: &[VectorSchema],
) -> Vec<ModelConfig> {
    configs
        .iter()
        .filter(
            |c| match Models::load(std::slice::from_ref(c), base_dir, vectors) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(
                        model = c.name,
                        "the config file's model does not fit the pipeline, left out: {e}"
                    );
                    false
                }
            },
        )
        .cloned()
        .collect()
}

fn default_version() -> String {
    "1".into()
}

fn valid(s: &str, max: usize, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c))
}

/// One loaded model bound to its vector.
struct Bound {
    name: String,
    stream: Arc<str>,
    vector: String,
    picks: Vec<usize>,
    model: Box<dyn Model>,
    stats: Arc<ModelStats>,
    input: Vec<f32>,
    output: Vec<f32>,
    /// One series per output value, then latency.
    pending: Vec<SignalSeries>,
    /// Drift sketches of its inputs and outputs, when configured.
    drift: Option<ModelDrift>,
    /// Finished sketch windows not yet taken.
    sketches: Vec<SketchBatch>,
    /// Whether a non-finite answer was logged already.
    warned_non_finite: bool,
}

/// Every model of the agent.
#[derive(Default)]
pub struct Models {
    models: Vec<Bound>,
}

impl Models {
    /// Loads and binds every model; the message names the model and what is
    /// wrong (missing file, unsupported op, unknown feature, width).
    pub fn load(
        configs: &[ModelConfig],
        base_dir: &Path,
        vectors: &[VectorSchema],
    ) -> Result<Models, String> {
        for (i, c) in configs.iter().enumerate() {
            if configs[..i]
                .iter()
                .any(|o| o.name == c.name && o.shadow == c.shadow)
            {
                let what = if c.shadow { "shadow " } else { "" };
                return Err(format!(
                    "models[{i}] ({}): two {what}models are named so",
                    c.name
                ));
            }
        }
        let mut models = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let at = format!("models[{i}] ({})", c.name);
            if !valid(&c.name, 64, &[]) {
                return Err(format!("{at}: name must be 1..=64 of [A-Za-z0-9_-]"));
            }
            if !valid(&c.version, 32, &['.']) {
                return Err(format!("{at}: version must be 1..=32 of [A-Za-z0-9_.-]"));
            }
            let (schema, picks) = c.bind(vectors).map_err(|e| format!("{at}: {e}"))?;
            let path = base_dir.join(&c.path);
            let bytes = std::fs::read(&path)
                .map_err(|e| format!("{at}: cannot read {}: {e}", path.display()))?;
            let model = strata_infer::load_model(&bytes)
                .map_err(|e| format!("{at}: {}: {e}", path.display()))?;
            if picks.len() != model.input_len() {
                return Err(format!(
                    "{at}: the model takes {} inputs but is given {} features",
                    model.input_len(),
                    picks.len()
                ));
            }
            let mut names = strata_infer::output_names(model.outputs());
            if let Some(given) = &c.outputs {
                if given.len() != model.output_len() {
                    return Err(format!(
                        "{at}: `outputs` names {} values but the model gives {} ({})",
                        given.len(),
                        model.output_len(),
                        names.join(", ")
                    ));
                }
                if let Some(bad) = given.iter().find(|n| !valid(n, 64, &['.'])) {
                    return Err(format!(
                        "{at}: output name {bad:?} must be of [A-Za-z0-9_.-]"
                    ));
                }
                names = given.clone();
            }
            let prefix = c.signal_prefix();
            let mut pending: Vec<SignalSeries> = names
                .iter()
                .map(|n| SignalSeries {
                    name: format!("{prefix}.{n}"),
                    ..Default::default()
                })
                .collect();
            pending.push(SignalSeries {
                name: format!("{prefix}.latency_us"),
                unit: "us".into(),
                ..Default::default()
            });
            let drift = match &c.drift {
                None => None,
                Some(settings) => {
                    let version: u32 = c.version.parse().map_err(|_| {
                        format!(
                            "{at}: drift sketches need a numeric version, not {:?}",
                            c.version
                        )
                    })?;
                    let inputs = c
                        .features
                        .clone()
                        .unwrap_or_else(|| schema.features().to_vec());
                    Some(
                        ModelDrift::new(&c.name, version, settings, &inputs, &names)
                            .map_err(|e| format!("{at}: {e}"))?,
                    )
                }
            };
            models.push(Bound {
                drift,
                sketches: Vec::new(),
                warned_non_finite: false,
                name: prefix,
                stream: format!("model:{}:{}", c.name, c.version).into(),
                vector: c.vector.clone(),
                input: vec![0.0; picks.len()],
                output: vec![0.0; model.output_len()],
                picks,
                model,
                stats: Arc::new(ModelStats::default()),
                pending,
            });
        }
        Ok(Models { models })
    }

    /// Per model: (name, counters), for the heartbeat.
    pub fn stats(&self) -> Vec<(String, Arc<ModelStats>)> {
        self.models
            .iter()
            .map(|m| (m.name.clone(), m.stats.clone()))
            .collect()
    }

    /// Whether there is no model.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Runs every model bound to `vector`'s name.
    pub fn run(&mut self, vector: &FeatureVector) {
        for m in self.models.iter_mut().filter(|m| *m.vector == *vector.name) {
            for (slot, &i) in m.input.iter_mut().zip(&m.picks) {
                *slot = vector.values[i];
            }
            let started = Instant::now();
            let result = m.model.run(&m.input, &mut m.output);
            let ns = started.elapsed().as_nanos() as u64;
            m.stats.runs.fetch_add(1, Ordering::Relaxed);
            m.stats.latency.record(ns);
            if let Err(e) = result {
                m.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(model = %m.name, "inference failed: {e}");
                continue;
            }
            let (outputs, latency) = m.pending.split_at_mut(m.output.len());
            for (series, &v) in outputs.iter_mut().zip(&m.output) {
                // The hub refuses non-finite readings, so such values stay
                // here.
                if v.is_finite() {
                    series.ts_ns.push(vector.ts_ns);
                    series.values.push(f64::from(v));
                }
            }
            // The pipeline's vectors are finite: a model that answers NaN
            // or infinity to one is broken, and the run counts as failed
            // (a health window rolls such a version back).
            if m.output.iter().any(|v| !v.is_finite()) {
                m.stats.errors.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut m.warned_non_finite, true) {
                    tracing::warn!(model = %m.name, "the model answered a value that is not finite (counted as a failed run; logged once)");
                }
            }
            latency[0].ts_ns.push(vector.ts_ns);
            latency[0].values.push(ns as f64 / 1e3);
            if let Some(d) = &mut m.drift
                && let Some(done) = d.observe(vector.ts_ns, &m.input, &m.output)
            {
                m.sketches.push(done);
            }
        }
    }

    /// Takes the sketch windows finished since the last call.
    pub fn take_sketches(&mut self) -> Vec<SketchBatch> {
        self.models
            .iter_mut()
            .flat_map(|m| std::mem::take(&mut m.sketches))
            .collect()
    }

    /// Takes every sketch window, the open ones too (before the models are
    /// replaced or the agent stops).
    pub fn flush_sketches(&mut self) -> Vec<SketchBatch> {
        for m in &mut self.models {
            if let Some(open) = m.drift.as_mut().and_then(ModelDrift::take) {
                m.sketches.push(open);
            }
        }
        self.take_sketches()
    }

    /// Takes the readings made since the last call, per model stream.
    pub fn take(&mut self) -> Vec<(Arc<str>, Vec<SignalSeries>)> {
        let mut out = Vec::new();
        for m in &mut self.models {
            if m.pending.iter().all(|s| s.values.is_empty()) {
                continue;
            }
            let series = m
                .pending
                .iter_mut()
                .filter(|s| !s.values.is_empty())
                .map(|s| SignalSeries {
                    name: s.name.clone(),
                    unit: s.unit.clone(),
                    ts_ns: std::mem::take(&mut s.ts_ns),
                    values: std::mem::take(&mut s.values),
                    quality: Vec::new(),
                })
                .collect();
            out.push((m.stream.clone(), series));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, vector: &str) -> ModelConfig {
        ModelConfig {
            name: name.into(),
            path: "missing.onnx".into(),
            version: "1".into(),
            vector: vector.into(),
            features: None,
            outputs: None,
            drift: None,
            shadow: false,
        }
    }

    /// A model that answers `answer` whatever it is given.
    struct Constant {
        answer: f32,
        outputs: Vec<strata_infer::OutputSpec>,
    }

    impl Model for Constant {
        fn input_len(&self) -> usize {
            1
        }
        fn outputs(&self) -> &[strata_infer::OutputSpec] {
            &self.outputs
        }
        fn runtime(&self) -> &'static str {
            "test"
        }
        fn run(&self, _: &[f32], out: &mut [f32]) -> strata_infer::Result<()> {
            out.fill(self.answer);
            Ok(())
        }
    }

    fn bound(answer: f32) -> Bound {
        Bound {
            name: "m".into(),
            stream: "model:m:1".into(),
            vector: "v".into(),
            picks: vec![0],
            model: Box::new(Constant {
                answer,
                outputs: vec![strata_infer::OutputSpec {
                    name: "y".into(),
                    len: 1,
                }],
            }),
            stats: Arc::default(),
            input: vec![0.0],
            output: vec![0.0],
            pending: vec![SignalSeries::default(), SignalSeries::default()],
            drift: None,
            sketches: Vec::new(),
            warned_non_finite: false,
        }
    }

    #[test]
    fn a_model_that_answers_nan_counts_failed_runs() {
        let mut models = Models {
            models: vec![bound(1.5), bound(f32::NAN)],
        };
        let vector = FeatureVector {
            name: "v".into(),
            ts_ns: 1,
            values: vec![2.0],
            names: vec!["x".to_owned()].into(),
        };
        for _ in 0..3 {
            models.run(&vector);
        }
        let counts: Vec<(u64, u64)> = models
            .models
            .iter()
            .map(|m| {
                (
                    m.stats.runs.load(Ordering::Relaxed),
                    m.stats.errors.load(Ordering::Relaxed),
                )
            })
            .collect();
        assert_eq!(counts, [(3, 0), (3, 3)]);
        // The NaN itself is never sent.
        assert_eq!(models.models[0].pending[0].values, [1.5; 3]);
        assert!(models.models[1].pending[0].values.is_empty());
    }

    /// The vectors of a pipeline with one, `machine`, of one feature.
    fn machine_vectors() -> Vec<VectorSchema> {
        let pipeline: strata_pipeline::PipelineConfig = toml::from_str(
            "[[windows]]\nname = \"w\"\nsignals = [\"t\"]\nsize_ms = 1000\nfeatures = [\"mean\"]\n\
             [[vectors]]\nname = \"machine\"\nfeatures = [\"w.t.mean\"]\n",
        )
        .unwrap();
        let p = strata_pipeline::Pipeline::new(&pipeline).unwrap();
        p.vector_schemas().cloned().collect()
    }

    #[test]
    fn file_models_that_do_not_fit_a_released_pipeline_are_left_out() {
        let schemas = machine_vectors();
        let mut unknown_feature = config("b", "machine");
        unknown_feature.features = Some(vec!["w.t.max".into()]);
        let configs = [
            config("a", "machine"),
            unknown_feature,
            config("c", "renamed"),
        ];
        // a fits the vectors but its file is missing: left out too (each
        // is loaded on its own; the ota test keeps a model that loads).
        let dir = tempfile::tempdir().unwrap();
        assert!(fitting(&configs, dir.path(), &schemas).is_empty());
    }

    #[test]
    fn bad_model_configs_are_refused_with_the_model_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = |c: ModelConfig| Models::load(&[c], dir.path(), &[]).err().unwrap();
        let e = err(config("r ul", "machine"));
        assert!(e.contains("models[0] (r ul): name"), "{e}");
        let e = err(config("rul", "machine"));
        assert!(e.contains("the pipeline has no vector \"machine\""), "{e}");
        let mut c = config("rul", "machine");
        c.version = "1/2".into();
        assert!(err(c).contains("version"));
        let schemas = machine_vectors();
        let e = Models::load(&[config("rul", "machine")], dir.path(), &schemas)
            .err()
            .unwrap();
        assert!(
            e.contains("cannot read") && e.contains("missing.onnx"),
            "{e}"
        );
        std::fs::write(dir.path().join("missing.onnx"), b"not onnx").unwrap();
        let e = Models::load(&[config("rul", "machine")], dir.path(), &schemas)
            .err()
            .unwrap();
        assert!(e.starts_with("models[0] (rul): "), "{e}");
        let twice = [config("rul", "machine"), config("rul", "machine")];
        let e = Models::load(&twice, dir.path(), &schemas).err().unwrap();
        assert!(e.contains("models[1] (rul): two models"), "{e}");
        // A shadow challenger may share its champion's name (and then
        // fails here only for its file), but not another shadow's.
        let mut shadow = config("rul", "machine");
        shadow.shadow = true;
        assert_eq!(shadow.signal_prefix(), "rul.shadow");
        let pair = [config("rul", "machine"), shadow.clone()];
        let e = Models::load(&pair, dir.path(), &schemas).err().unwrap();
        assert!(e.starts_with("models[0] (rul): "), "{e}");
        let e = Models::load(&[shadow.clone(), shadow], dir.path(), &schemas)
            .err()
            .unwrap();
        assert!(e.contains("two shadow models"), "{e}");
    }
}
