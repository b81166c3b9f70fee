//! Backtests: stored telemetry replayed through the edge pipeline and one
//! or more model versions (e.g. `champion` and `challenger`), scored on the
//! same rows against the target signal, with a verdict on which is better.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_store::TelemetryStore;
use strata_train::{Evaluation, Metrics};

use super::dataset::{self, DatasetSpec};
use super::jobs::JobCtx;
use super::train::predict;
use super::{ModelRegistry, VersionRef};
use crate::error::{Error, Result};

/// What a backtest job does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestSpec {
    /// The model.
    pub model: String,
    /// Versions or aliases to compare (e.g. `["champion", "challenger"]`).
    pub versions: Vec<String>,
    /// The data; its pipeline must produce the features the versions read.
    pub dataset: DatasetSpec,
    /// Classification threshold; regression when absent.
    #[serde(default)]
    pub threshold: Option<f32>,
}

/// One version's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionScore {
    /// As asked (`champion`, `3`...).
    pub asked: String,
    /// The version it resolved to.
    pub version: u32,
    /// Its metrics on the replayed rows.
    #[schema(value_type = Object)]
    pub metrics: Metrics,
}

/// A backtest report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BacktestReport {
    /// The model.
    pub model: String,
    /// Rows replayed.
    pub rows: usize,
    /// Devices replayed.
    pub devices: Vec<String>,
    /// Per version, in the order asked.
    pub versions: Vec<VersionScore>,
    /// A constant predictor's metrics on the same rows (the mean or base
    /// rate of the replayed target).
    #[schema(value_type = Object)]
    pub baseline: Metrics,
    /// What decides: `mae` (lower is better) or `roc_auc` (higher).
    pub criterion: String,
    /// The asked name of the best version.
    pub best: String,
}

/// Runs a backtest.
pub fn run(
    spec: &BacktestSpec,
    telemetry: &dyn TelemetryStore,
    labels: &dyn strata_store::LabelStore,
    registry: &ModelRegistry,
    ctx: &JobCtx,
) -> Result<BacktestReport> {
    if spec.versions.is_empty() {
        return Err(Error::BadRequest("the backtest names no version".into()));
    }
    let versions = spec
        .versions
        .iter()
        .map(|v| {
            Ok((
                v.clone(),
                registry.version(&spec.model, &VersionRef::parse(v)?)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    ctx.progress(0.0, "replaying stored telemetry through the pipeline");
    let data = dataset::build(telemetry, labels, &spec.dataset, &mut |done, total| {
        ctx.progress(
            0.7 * done as f64 / total as f64,
            &format!("replayed {done} of {total} devices"),
        );
        ctx.go_on()
    })?;
    if data.is_empty() {
        return Err(Error::BadRequest(format!(
            "no labelled rows in the window ({} vectors had no target reading)",
            data.unlabelled
        )));
    }
    let columns: BTreeMap<&str, usize> = data
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| (f.as_str(), i))
        .collect();
    let mut scores = Vec::new();
    let mut baseline = None;
    for (n, (asked, v)) in versions.iter().enumerate() {
        ctx.go_on()?;
        let pick = v
            .features
            .iter()
            .map(|f| {
                columns.get(f.as_str()).copied().ok_or_else(|| {
                    Error::BadRequest(format!(
                        "{} v{} reads feature {f:?}, which vector {:?} does not have",
                        v.model, v.version, spec.dataset.vector
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut rows = Vec::with_capacity(data.len() * pick.len());
        for i in 0..data.len() {
            let row = data.row(i);
            rows.extend(pick.iter().map(|&c| row[c]));
        }
        let model = registry.load(v)?;
        let predicted = predict(&*model, &rows, pick.len())?;
        let evaluation = match spec.threshold {
            Some(t) => Evaluation::classification(&data.target, &data.target, &predicted, t),
            None => Evaluation::regression(&data.target, &data.target, &predicted),
        }
        .map_err(|e| Error::BadRequest(format!("evaluation: {e}")))?;
        baseline.get_or_insert(evaluation.baseline);
        scores.push(VersionScore {
            asked: asked.clone(),
            version: v.version,
            metrics: evaluation.model,
        });
        ctx.progress(
            0.7 + 0.3 * (n + 1) as f64 / versions.len() as f64,
            &format!("scored {} v{}", v.model, v.version),
        );
    }
    let (criterion, best) = if spec.threshold.is_some() {
        let best = scores
            .iter()
            .max_by(|a, b| {
                a.metrics
                    .roc_auc
                    .unwrap_or(0.0)
                    .total_cmp(&b.metrics.roc_auc.unwrap_or(0.0))
            })
            .expect("at least one version");
        ("roc_auc", best.asked.clone())
    } else {
        let best = scores
            .iter()
            .min_by(|a, b| {
                a.metrics
                    .mae
                    .unwrap_or(f64::INFINITY)
                    .total_cmp(&b.metrics.mae.unwrap_or(f64::INFINITY))
            })
            .expect("at least one version");
        ("mae", best.asked.clone())
    };
    Ok(BacktestReport {
        model: spec.model.clone(),
        rows: data.len(),
        devices: data.devices,
        versions: scores,
        baseline: baseline.expect("at least one version"),
        criterion: criterion.into(),
        best,
    })
}
