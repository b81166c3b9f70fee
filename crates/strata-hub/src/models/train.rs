//! Training jobs: build a dataset from stored telemetry, train with a
//! built-in trainer (`strata-train`) or an external command, evaluate on a
//! time hold-out against a naive baseline, and register the result with
//! its lineage.
//!
//! An external trainer is any command: it gets the training and hold-out
//! sets as CSV (`ts_ns,device,<features...>,target`) and writes
//! `model.onnx` (and optionally `metrics.json`, a flat object of numbers)
//! into its output directory. The hub evaluates what it wrote on the
//! hold-out itself, with the edge runtime, so built-in and external models
//! are compared on the same figures.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_store::{Lineage, ModelVersion, TelemetryStore};
use strata_train::{
    Evaluation, GbtParams, IsolationForestParams, Metrics, RidgeParams, TrainedModel,
};

use super::dataset::{self, Dataset, DatasetSpec};
use super::jobs::JobCtx;
use super::{ModelRegistry, NewVersion, check_name};
use crate::error::{Error, Result};

/// What a training job does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// The model name to register the result under.
    pub model: String,
    /// The trainer.
    pub trainer: Trainer,
    /// The data.
    pub dataset: DatasetSpec,
    /// Share of each device's latest rows held out for evaluation.
    #[serde(default = "default_holdout")]
    pub holdout: f64,
    /// Alias to point at the new version (e.g. `challenger`).
    #[serde(default)]
    pub alias: Option<String>,
    /// Why it was trained (`manual`, `schedule`, `drift:<event>`...).
    #[serde(default = "default_trigger")]
    pub trigger: String,
    /// Free text for the registry.
    #[serde(default)]
    pub description: String,
    /// The version this one retrains, for its lineage (a retraining
    /// cycle's champion); by default the `champion` alias, else the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
}

fn default_holdout() -> f64 {
    0.2
}

fn default_trigger() -> String {
    "manual".into()
}

/// A trainer and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trainer {
    /// Gradient-boosted trees, squared error (e.g. remaining useful life).
    GbtRegressor {
        /// Parameters.
        #[serde(default)]
        params: GbtParams,
    },
    /// Gradient-boosted trees, log loss on 0/1 targets (e.g. failure
    /// within a horizon); predicts the probability of 1.
    GbtClassifier {
        /// Parameters.
        #[serde(default)]
        params: GbtParams,
        /// Probability at which a row counts as positive.
        #[serde(default = "half")]
        threshold: f32,
    },
    /// Isolation forest: anomaly scores; the target, when 0/1, is only used
    /// to report how well scores separate the classes.
    IsolationForest {
        /// Parameters.
        #[serde(default)]
        params: IsolationForestParams,
        /// Score at which a row counts as anomalous.
        #[serde(default = "half")]
        threshold: f32,
    },
    /// Ridge regression (e.g. a building's load forecast).
    Ridge {
        /// Parameters.
        #[serde(default)]
        params: RidgeParams,
    },
    /// Any command that writes `model.onnx`.
    External {
        /// Program and arguments.
        command: Vec<String>,
        /// `regression` or `classification`: how the hub evaluates it.
        #[serde(default = "regression")]
        task: String,
        /// Classification threshold.
        #[serde(default = "half")]
        threshold: f32,
        /// Longest run allowed.
        #[serde(default = "default_timeout")]
        timeout_s: u64,
    },
}

fn half() -> f32 {
    0.5
}

fn regression() -> String {
    "regression".into()
}

fn default_timeout() -> u64 {
    3600
}

impl Trainer {
    fn name(&self) -> String {
        match self {
            Trainer::GbtRegressor { .. } => "gbt_regressor".into(),
            Trainer::GbtClassifier { .. } => "gbt_classifier".into(),
            Trainer::IsolationForest { .. } => "isolation_forest".into(),
            Trainer::Ridge { .. } => "ridge".into(),
            Trainer::External { command, .. } => format!("external:{}", command.join(" ")),
        }
    }

    /// The classification threshold, or `None` for regressions.
    pub fn threshold(&self) -> Option<f32> {
        match self {
            Trainer::GbtClassifier { threshold, .. }
            | Trainer::IsolationForest { threshold, .. } => Some(*threshold),
            Trainer::External {
                task, threshold, ..
            } if task == "classification" => Some(*threshold),
            _ => None,
        }
    }
}

impl TrainSpec {
    /// Checks what can be checked before the job runs.
    pub fn validate(&self) -> Result<()> {
        check_name("model name", &self.model)?;
        if let Some(a) = &self.alias {
            check_name("alias", a)?;
        }
        if !(0.05..=0.5).contains(&self.holdout) {
            return Err(Error::BadRequest(format!(
                "holdout {} must be between 0.05 and 0.5",
                self.holdout
            )));
        }
        dataset::vector_features(&self.dataset.pipeline, &self.dataset.vector)?;
        let bad = |e: strata_train::Error| Error::BadRequest(format!("trainer: {e}"));
        match &self.trainer {
            Trainer::GbtRegressor { params } | Trainer::GbtClassifier { params, .. } => {
                params.validate().map_err(bad)
            }
            Trainer::IsolationForest { params, .. } => params.validate().map_err(bad),
            Trainer::Ridge { params } => params.validate().map_err(bad),
            Trainer::External { command, task, .. } => {
                if command.is_empty() {
                    return Err(Error::BadRequest(
                        "the external trainer has no command".into(),
                    ));
                }
                if task != "regression" && task != "classification" {
                    return Err(Error::BadRequest(format!(
                        "task {task:?} must be \"regression\" or \"classification\""
                    )));
                }
                Ok(())
            }
        }
    }
}

/// Runs a training job; returns what it registered.
pub fn run(
    spec: &TrainSpec,
    telemetry: &dyn TelemetryStore,
    labels: &dyn strata_store::LabelStore,
    registry: &ModelRegistry,
    drift: &crate::drift::Drift,
    job_dir: &Path,
    ctx: &JobCtx,
) -> Result<ModelVersion> {
    spec.validate()?;
    ctx.progress(0.0, "building the dataset from stored telemetry");
    let data = dataset::build(telemetry, labels, &spec.dataset, &mut |done, total| {
        ctx.progress(
            0.3 * done as f64 / total as f64,
            &format!("replayed {done} of {total} devices through the pipeline"),
        );
        ctx.go_on()
    })?;
    let split = data.split_by_time(spec.holdout);
    let (train_idx, test_idx) = (split.train.as_slice(), split.holdout.as_slice());
    if train_idx.len() < 20 || test_idx.is_empty() {
        return Err(Error::BadRequest(format!(
            "the dataset has {} labelled rows ({} unlabelled vectors, {} purged between training \
             and hold-out) in the window: too few to train; collect more data or widen the window",
            data.len(),
            data.unlabelled,
            split.purged
        )));
    }
    let digest = data.digest();
    let thinned = if data.kept_every > 1 {
        format!(
            "; one row in {} kept, to stay within max_rows {}",
            data.kept_every, spec.dataset.max_rows
        )
    } else {
        String::new()
    };
    ctx.progress(
        0.3,
        &format!(
            "dataset: {} rows x {} features from {} devices ({} train, {} purged as their \
             windows overlap the hold-out's, {} hold-out), sha256 {}{thinned}",
            data.len(),
            data.features.len(),
            data.devices.len(),
            train_idx.len(),
            split.purged,
            test_idx.len(),
            &digest[..12]
        ),
    );
    let (train_rows, train_target) = data.take(train_idx);
    let (test_rows, test_target) = data.take(test_idx);
    let started = Instant::now();
    let (onnx, params, tree_stats, mut metrics) = match &spec.trainer {
        Trainer::External {
            command, timeout_s, ..
        } => {
            let (onnx, reported) = external(
                command,
                &data,
                (train_idx, test_idx),
                job_dir,
                Duration::from_secs(*timeout_s),
                ctx,
            )?;
            (
                onnx,
                serde_json::json!({ "command": command }),
                None,
                reported,
            )
        }
        builtin => {
            let set =
                strata_train::Dataset::new(data.features.clone(), train_rows, train_target.clone())
                    .map_err(|e| Error::BadRequest(format!("training set: {e}")))?;
            let mut progress = ctx.trainer_progress(0.3, 0.6);
            let trained: TrainedModel = match builtin {
                Trainer::GbtRegressor { params } => {
                    strata_train::train_gbt_regressor(&set, params, &mut progress)
                }
                Trainer::GbtClassifier { params, .. } => {
                    strata_train::train_gbt_classifier(&set, params, &mut progress)
                }
                Trainer::IsolationForest { params, .. } => {
                    strata_train::train_isolation_forest(&set, params, &mut progress)
                }
                Trainer::Ridge { params } => strata_train::train_ridge(&set, params, &mut progress),
                Trainer::External { .. } => unreachable!("handled above"),
            }
            .map_err(|e| match e {
                strata_train::Error::Stopped { .. } => ctx
                    .go_on()
                    .err()
                    .unwrap_or_else(|| Error::Conflict(format!("training stopped: {e}"))),
                e => Error::BadRequest(format!("training failed: {e}")),
            })?;
            let stats = trained
                .tree_stats
                .as_ref()
                .map(|s| serde_json::to_value(s).expect("JSON of tree stats"));
            (trained.onnx, trained.params, stats, BTreeMap::new())
        }
    };
    metrics.insert("train_seconds".into(), started.elapsed().as_secs_f64());
    ctx.progress(0.9, "evaluating on the hold-out with the edge runtime");
    let model = strata_infer::load_model(&onnx)
        .map_err(|e| Error::BadRequest(format!("the trained model cannot run at the edge: {e}")))?;
    let predicted = predict(&*model, &test_rows, data.features.len())?;
    let evaluation = match spec.trainer.threshold() {
        Some(t) if both_classes(&test_target) => Some(Evaluation::classification(
            &train_target,
            &test_target,
            &predicted,
            t,
        )),
        // A hold-out of one class has no ROC AUC; the threshold is kept
        // anyway, as live accuracy cuts the scores at it.
        Some(t) => {
            metrics.insert("threshold".into(), f64::from(t));
            None
        }
        None => Some(Evaluation::regression(
            &train_target,
            &test_target,
            &predicted,
        )),
    }
    .transpose()
    .map_err(|e| Error::BadRequest(format!("evaluation: {e}")))?;
    if let Some(e) = &evaluation {
        flatten(&e.model, "", &mut metrics);
        flatten(&e.baseline, "baseline_", &mut metrics);
    }
    metrics.insert("train_rows".into(), train_idx.len() as f64);
    metrics.insert("holdout_rows".into(), test_idx.len() as f64);
    metrics.insert("purged_rows".into(), split.purged as f64);

    let sites = data
        .devices
        .iter()
        .filter_map(|d| strata_proto::DeviceId::new(d.as_str()).ok())
        .filter_map(|d| ctx.device_site(&d))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let parent = spec.parent.or_else(|| {
        registry
            .model(&spec.model)
            .ok()
            .and_then(|m| m.aliases.get("champion").copied().or(m.latest_version))
    });
    // A job taken back by another replica's worker registers its version
    // there, once.
    ctx.begin_commit()?;
    // A job run again after a stop between its registration and its last
    // steps (the profile, the alias) finishes the version it registered
    // rather than registering a second one.
    let registered = match registry.versions(&spec.model) {
        Ok(versions) => versions
            .into_iter()
            .find(|v| v.lineage.job == Some(ctx.id())),
        Err(Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    // The model the profile is of: the registered one, when this run
    // found its version (what it trained again may differ).
    let (version, model) = match registered {
        Some(v) => {
            let onnx = registry.artifacts().get(&v.sha256)?;
            let model = strata_infer::load_model(&onnx).map_err(|e| {
                Error::Conflict(format!("{} v{} cannot be loaded: {e}", v.model, v.version))
            })?;
            (v, model)
        }
        None => (
            registry.register(NewVersion {
                model: spec.model.clone(),
                onnx,
                features: Some(data.features.clone()),
                vector: Some(spec.dataset.vector.clone()),
                description: spec.description.clone(),
                lineage: Lineage {
                    trigger: spec.trigger.clone(),
                    trainer: spec.trainer.name(),
                    job: Some(ctx.id()),
                    parent_version: parent,
                    data_from_ns: data.ts_ns.iter().min().copied(),
                    data_to_ns: data.ts_ns.iter().max().copied(),
                    data_sha256: Some(digest),
                    rows: Some(data.len() as u64),
                    devices: data.devices.clone(),
                    sites,
                    target: Some(spec.dataset.target.clone()),
                    params: serde_json::json!({
                        "trainer": params,
                        "pipeline": spec.dataset.pipeline,
                        "holdout": spec.holdout,
                    }),
                },
                metrics,
                tree_stats,
            })?,
            model,
        ),
    };
    // The reference for drift: the training rows and the model's outputs
    // on them.
    let (reference_rows, _) = data.take(train_idx);
    let profile = crate::drift::build_profile(&*model, &data.features, &reference_rows)?;
    drift.save_profile(&version, profile)?;
    if let Some(alias) = &spec.alias {
        registry.set_alias(&version.model, alias, version.version)?;
    }
    ctx.progress(
        1.0,
        &format!("registered {} v{}", version.model, version.version),
    );
    Ok(version)
}

/// Runs a model on rows laid end to end and returns one score per row:
/// the probability of class 1 when the model has a probability output,
/// else its first value.
pub fn predict(model: &dyn strata_infer::Model, rows: &[f32], width: usize) -> Result<Vec<f32>> {
    if model.input_len() != width {
        return Err(Error::BadRequest(format!(
            "the model takes {} features, the dataset has {width}",
            model.input_len()
        )));
    }
    let pick = score_index(model.outputs());
    let mut out = vec![0f32; model.output_len()];
    rows.chunks_exact(width.max(1))
        .map(|row| {
            model
                .run(row, &mut out)
                .map_err(|e| Error::BadRequest(format!("the model failed on a row: {e}")))?;
            Ok(out[pick])
        })
        .collect()
}

/// Which flat output value is the score: the last value of the first
/// output named like a probability, else the first value.
pub fn score_index(outputs: &[strata_infer::OutputSpec]) -> usize {
    let mut offset = 0;
    for o in outputs {
        if o.name.contains("prob") {
            return offset + o.len - 1;
        }
        offset += o.len;
    }
    0
}

fn both_classes(labels: &[f32]) -> bool {
    labels.iter().all(|&y| y == 0.0 || y == 1.0) && labels.contains(&0.0) && labels.contains(&1.0)
}

/// Metrics as flat `name -> number` entries.
pub fn flatten(m: &Metrics, prefix: &str, out: &mut BTreeMap<String, f64>) {
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(m) {
        for (k, v) in map {
            if let Some(x) = v.as_f64() {
                out.insert(format!("{prefix}{k}"), x);
            }
        }
    }
}

/// Runs an external trainer in `job_dir`; returns the model it wrote and
/// the metrics it reported.
fn external(
    command: &[String],
    data: &Dataset,
    (train, test): (&[usize], &[usize]),
    job_dir: &Path,
    timeout: Duration,
    ctx: &JobCtx,
) -> Result<(Vec<u8>, BTreeMap<String, f64>)> {
    let io = |what: &str, e: std::io::Error| Error::Unavailable(format!("{what}: {e}"));
    // One output directory per attempt: a trainer left running by a hub
    // that crashed (what it started, if it forked) writes into its own.
    let out_dir = job_dir.join("out").join(ctx.attempt().to_string());
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).map_err(|e| io("cannot create the job directory", e))?;
    let write = |name: &str, idx: &[usize]| -> Result<std::path::PathBuf> {
        let path = job_dir.join(name);
        let subset = subset(data, idx);
        let file = std::fs::File::create(&path).map_err(|e| io("cannot write the dataset", e))?;
        subset
            .write_csv(file)
            .map_err(|e| io("cannot write the dataset", e))?;
        Ok(path)
    };
    let train_csv = write("train.csv", train)?;
    let holdout_csv = write("holdout.csv", test)?;
    ctx.progress(0.35, &format!("running {}", command.join(" ")));
    if !program_exists(&command[0], job_dir) {
        return Err(Error::BadRequest(format!(
            "cannot run {:?}: no such program (a path, or a name on the hub's PATH)",
            command[0]
        )));
    }
    let mut child = trainer_command(command)
        .current_dir(job_dir)
        .env("STRATA_TRAIN_CSV", &train_csv)
        .env("STRATA_HOLDOUT_CSV", &holdout_csv)
        .env("STRATA_OUTPUT_DIR", &out_dir)
        .env("STRATA_FEATURES", data.features.join(","))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::BadRequest(format!("cannot run {:?}: {e}", command[0])))?;
    let group = rustix::process::Pid::from_child(&child);
    let forward = |pipe: Box<dyn std::io::Read + Send>| {
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                ctx.log(&line);
            }
        })
    };
    let readers = [
        forward(Box::new(child.stdout.take().expect("piped"))),
        forward(Box::new(child.stderr.take().expect("piped"))),
    ];
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| io("cannot wait for the trainer", e))?
        {
            break status;
        }
        if Instant::now() > deadline {
            stop(&mut child);
            return Err(Error::BadRequest(format!(
                "the external trainer ran longer than {} s and was stopped",
                timeout.as_secs()
            )));
        }
        if let Err(e) = ctx.go_on() {
            stop(&mut child);
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // What the trainer started and left running would keep its output
    // pipes open, and the readers waiting, for ever.
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    for r in readers {
        let _ = r.join();
    }
    if !status.success() {
        return Err(Error::BadRequest(format!(
            "the external trainer failed ({status}); its output is in the job log"
        )));
    }
    let onnx = std::fs::read(out_dir.join("model.onnx")).map_err(|e| {
        Error::BadRequest(format!(
            "the external trainer wrote no readable model.onnx in $STRATA_OUTPUT_DIR: {e}"
        ))
    })?;
    Ok((onnx, read_reported_metrics(&out_dir)?))
}

/// The external trainer's command, in a process group of its own, so that
/// stopping it stops what it started too; and, where util-linux's
/// `setpriv --pdeathsig` is at hand (every Debian), killed if the hub
/// dies, so that a crashed hub leaves no trainer running beside the job's
/// next attempt (what the trainer started itself is left to write into its
/// attempt's own output directory).
fn trainer_command(command: &[String]) -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    // `--pdeathsig` came with util-linux 2.33 (2018): older ones refuse it.
    static PDEATHSIG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let pdeathsig = *PDEATHSIG.get_or_init(|| {
        Command::new(SETPRIV)
            .args(["--pdeathsig", "KILL", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let mut cmd = if pdeathsig {
        let mut cmd = Command::new(SETPRIV);
        cmd.args(["--pdeathsig", "KILL", "--"]).args(command);
        cmd
    } else {
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]);
        cmd
    };
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd
}

/// Whether `program` names a file to run: a path (relative ones from the
/// job directory, where it runs) or a name found on `PATH`. Checked before
/// starting it, as `setpriv` would only fail with a status.
fn program_exists(program: &str, job_dir: &Path) -> bool {
    if program.contains('/') {
        return job_dir.join(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Kills the trainer's process group, then reaps the trainer.
fn stop(child: &mut std::process::Child) {
    let group = rustix::process::Pid::from_child(child);
    if let Err(e) = rustix::process::kill_process_group(group, rustix::process::Signal::KILL) {
        tracing::warn!("cannot stop the external trainer's processes: {e}");
        let _ = child.kill();
    }
    let _ = child.wait();
}

fn subset(data: &Dataset, idx: &[usize]) -> Dataset {
    let (rows, target) = data.take(idx);
    Dataset {
        features: data.features.clone(),
        rows,
        target,
        ts_ns: idx.iter().map(|&i| data.ts_ns[i]).collect(),
        device: idx.iter().map(|&i| data.device[i]).collect(),
        devices: data.devices.clone(),
        unlabelled: 0,
        kept_every: data.kept_every,
        window_ns: data.window_ns,
    }
}

/// `metrics.json` from an external trainer, prefixed `reported_`.
fn read_reported_metrics(out_dir: &Path) -> Result<BTreeMap<String, f64>> {
    let path = out_dir.join("metrics.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(BTreeMap::new());
    };
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| Error::BadRequest(format!("metrics.json is not a JSON object: {e}")))?;
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| v.as_f64().map(|x| (format!("reported_{k}"), x)))
        .collect())
}
