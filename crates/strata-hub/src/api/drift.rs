//! Drift over HTTP: a model version's reference profile, building one for
//! an uploaded version, drift reports from the sketches devices sent, and
//! accuracy from labels that arrive late.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, ErrorBody, blocking};
use strata_store::Label;

use crate::drift::accuracy::{self, AccuracySpec, VersionAccuracy};
use crate::drift::report::{self, Dimension, DriftReport, ReportSpec};
use crate::error::{Error, Result};
use crate::kpi::KpiReport;
use crate::models::VersionRef;
use crate::models::dataset::{self, DatasetSpec};

/// A version's reference profile: bins and reference counts per feature
/// and output.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/profile", tag = "drift", security(("bearer_token" = [])),
    params(("name" = String, Path), ("version" = String, Path, description = "Number or alias")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn get_profile(
    State(s): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(
        blocking(move || {
            let v = s.models.version(&name, &VersionRef::parse(&version)?)?;
            let p = s.drift.profile(&v.model, v.version)?.ok_or_else(|| {
                Error::NotFound(format!(
                    "{} v{} has no drift profile (versions trained here get one; \
                     POST a dataset to this path to build one)",
                    v.model, v.version
                ))
            })?;
            Ok(serde_json::to_value(&*p).expect("JSON of a profile"))
        })
        .await?,
    ))
}

/// What building a profile did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProfileBuilt {
    /// The model.
    pub model: String,
    /// Its version.
    pub version: u32,
    /// Reference rows.
    pub rows: u64,
    /// Features profiled.
    pub features: Vec<String>,
    /// Outputs profiled.
    pub outputs: Vec<String>,
}

/// Builds the reference profile of a version (an uploaded one, typically)
/// from a dataset replayed through the edge pipeline: its rows, and the
/// version's outputs on them. A profile never changes once set.
#[utoipa::path(post, path = "/api/v1/models/{name}/versions/{version}/profile", tag = "drift", security(("bearer_token" = [])),
    params(("name" = String, Path), ("version" = String, Path, description = "Number or alias")),
    request_body = DatasetSpec,
    responses((status = 201, body = ProfileBuilt), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn build_profile(
    State(s): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
    Json(spec): Json<DatasetSpec>,
) -> Result<(axum::http::StatusCode, Json<ProfileBuilt>)> {
    let built = blocking(move || {
        let v = s.models.version(&name, &VersionRef::parse(&version)?)?;
        let data = dataset::build(&*s.store, &*s.labels, &spec, &mut |_, _| Ok(()))?;
        if data.features != v.features {
            return Err(Error::BadRequest(format!(
                "the dataset's features ({}) are not the version's ({})",
                data.features.join(", "),
                v.features.join(", ")
            )));
        }
        if data.is_empty() {
            return Err(Error::BadRequest(
                "the dataset has no rows in the window".into(),
            ));
        }
        let model = s.models.load(&v)?;
        let profile = crate::drift::build_profile(&*model, &data.features, &data.rows)?;
        let built = ProfileBuilt {
            model: v.model.clone(),
            version: v.version,
            rows: profile.rows,
            features: profile.features.iter().map(|p| p.name.clone()).collect(),
            outputs: profile.outputs.iter().map(|p| p.name.clone()).collect(),
        };
        s.drift.save_profile(&v, profile)?;
        Ok(built)
    })
    .await?;
    Ok((axum::http::StatusCode::CREATED, Json(built)))
}

/// Which sketches a report covers and how it judges them.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DriftParams {
    /// Windows ending at or after this time, ns (default: an hour ago).
    pub from_ns: Option<i64>,
    /// Windows ending before this time, ns (default: now).
    pub to_ns: Option<i64>,
    /// Comma-separated dimensions: `device`, `site`, `firmware`,
    /// `tag:<key>` (default `device,site,firmware`).
    pub by: Option<String>,
    /// PSI at which a segment drifts (default 0.1).
    pub psi_threshold: Option<f64>,
    /// Fewest values a segment needs to be judged (default 50).
    pub min_count: Option<u64>,
}

/// Drift of a version's features and outputs against its profile, per
/// segment, with where the drift is confined.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/drift", tag = "drift", security(("bearer_token" = [])),
    params(("name" = String, Path), ("version" = String, Path, description = "Number or alias"), DriftParams),
    responses((status = 200, body = DriftReport), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_drift(
    State(s): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<DriftParams>,
) -> Result<Json<DriftReport>> {
    Ok(Json(
        blocking(move || {
            let v = s.models.version(&name, &VersionRef::parse(&version)?)?;
            let spec = report_spec(&q)?;
            drift_report(&s, &v.model, v.version, &spec)
        })
        .await?,
    ))
}

fn report_spec(q: &DriftParams) -> Result<ReportSpec> {
    let now = crate::now_ns();
    let to_ns = q.to_ns.unwrap_or(now);
    let from_ns = q.from_ns.unwrap_or(to_ns.saturating_sub(3_600_000_000_000));
    if from_ns >= to_ns {
        return Err(Error::BadRequest("from_ns must be before to_ns".into()));
    }
    let by =
        q.by.as_deref()
            .unwrap_or("device,site,firmware")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                Dimension::parse(s).ok_or_else(|| {
                    Error::BadRequest(format!(
                        "by: {s:?} is not device, site, firmware or tag:<key>"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
    let psi_threshold = q.psi_threshold.unwrap_or(report::DEFAULT_PSI_THRESHOLD);
    if !(psi_threshold.is_finite() && psi_threshold > 0.0) {
        return Err(Error::BadRequest(
            "psi_threshold must be a positive number".into(),
        ));
    }
    Ok(ReportSpec {
        from_ns,
        to_ns,
        by,
        psi_threshold,
        min_count: q.min_count.unwrap_or(report::DEFAULT_MIN_COUNT).max(1),
    })
}

/// A drift report of `model` v`version` (shared with the monitor).
pub(crate) fn drift_report(
    s: &ApiState,
    model: &str,
    version: u32,
    spec: &ReportSpec,
) -> Result<DriftReport> {
    let profile = s
        .drift
        .profile(model, version)?
        .ok_or_else(|| Error::NotFound(format!("{model} v{version} has no drift profile")))?;
    let batches = s
        .drift
        .store()
        .sketches(model, version, spec.from_ns, spec.to_ns)?;
    let devices = devices(s)?;
    Ok(report::build(
        model, version, &profile, &batches, &devices, spec,
    ))
}

/// What storing labels did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LabelsStored {
    /// Labels received.
    pub received: usize,
    /// Of which new (the rest replaced earlier ones).
    pub new: usize,
}

/// Most labels one request may carry.
const MAX_LABELS: usize = 100_000;

/// Stores ground truth that arrived late (maintenance records,
/// inspections). One label per (device, target, time); sending one again
/// replaces it, so retries are harmless.
#[utoipa::path(post, path = "/api/v1/labels", tag = "drift", security(("bearer_token" = [])),
    request_body = [Label],
    responses((status = 200, body = LabelsStored), (status = 400, body = ErrorBody)))]
pub async fn post_labels(
    State(s): State<ApiState>,
    Json(labels): Json<Vec<Label>>,
) -> Result<Json<LabelsStored>> {
    if labels.len() > MAX_LABELS {
        return Err(Error::BadRequest(format!(
            "{} labels in one request; at most {MAX_LABELS}",
            labels.len()
        )));
    }
    for (i, l) in labels.iter().enumerate() {
        if !l.value.is_finite() {
            return Err(Error::BadRequest(format!(
                "labels[{i}]: the value must be finite"
            )));
        }
        if l.target.is_empty() || l.target.len() > 128 {
            return Err(Error::BadRequest(format!(
                "labels[{i}]: the target must be 1 to 128 characters"
            )));
        }
    }
    Ok(Json(
        blocking(move || {
            for (i, l) in labels.iter().enumerate() {
                if s.registry.device(&l.device).is_err() {
                    return Err(Error::BadRequest(format!(
                        "labels[{i}]: no device {}",
                        l.device
                    )));
                }
            }
            let new = s.labels.add_labels(&labels, crate::now_ns())?;
            Ok(LabelsStored {
                received: labels.len(),
                new,
            })
        })
        .await?,
    ))
}

/// Which versions and labels an accuracy report covers.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccuracyParams {
    /// Comma-separated version numbers or aliases (default: every version).
    pub versions: Option<String>,
    /// Labels from this time, ns (default: a day ago).
    pub from_ns: Option<i64>,
    /// Labels up to this time, ns (default: now).
    pub to_ns: Option<i64>,
    /// Bucket length in seconds (default: a tenth of the window).
    pub bucket_s: Option<u64>,
    /// Oldest prediction a label pairs with, seconds before it (default 300).
    pub max_lag_s: Option<u64>,
    /// Comma-separated dimensions: `device`, `site`, `firmware`,
    /// `tag:<key>` (default `site,firmware`).
    pub by: Option<String>,
}

/// Ten years in seconds: the longest bucket or lag an accuracy query takes.
const TEN_YEARS_S: u64 = 10 * 365 * 86_400;

/// The most buckets an accuracy query may ask for.
const MAX_ACCURACY_BUCKETS: i64 = 100_000;

/// Accuracy of a model's versions over time and per segment, from labels
/// joined to the predictions made before them.
#[utoipa::path(get, path = "/api/v1/models/{name}/accuracy", tag = "drift", security(("bearer_token" = [])),
    params(("name" = String, Path), AccuracyParams),
    responses((status = 200, body = [VersionAccuracy]), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_accuracy(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<AccuracyParams>,
) -> Result<Json<Vec<VersionAccuracy>>> {
    Ok(Json(
        blocking(move || {
            let versions = match &q.versions {
                None => s.models.versions(&name)?,
                Some(list) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| s.models.version(&name, &VersionRef::parse(v)?))
                    .collect::<Result<_>>()?,
            };
            let to_ns = q.to_ns.unwrap_or_else(crate::now_ns);
            let from_ns = q
                .from_ns
                .unwrap_or(to_ns.saturating_sub(86_400_000_000_000));
            if from_ns >= to_ns {
                return Err(Error::BadRequest("from_ns must be before to_ns".into()));
            }
            let by = dimensions(q.by.as_deref().unwrap_or("site,firmware"))?;
            // Seconds beyond ten years are no bucket or lag anyone means
            // (and would wrap as ns).
            let seconds = |s: u64| (s.min(TEN_YEARS_S) as i64).saturating_mul(1_000_000_000);
            let bucket_ns = q
                .bucket_s
                .map(|b| seconds(b.max(1)))
                .unwrap_or((to_ns.saturating_sub(from_ns) / 10).max(1));
            let buckets = to_ns.saturating_sub(from_ns) / bucket_ns;
            if buckets > MAX_ACCURACY_BUCKETS {
                return Err(Error::BadRequest(format!(
                    "{buckets} buckets of bucket_s in the window: at most {MAX_ACCURACY_BUCKETS}"
                )));
            }
            let spec = AccuracySpec {
                from_ns,
                to_ns,
                bucket_ns,
                max_lag_ns: seconds(q.max_lag_s.unwrap_or(300)),
                by,
                devices: Vec::new(),
            };
            let devices = devices(&s)?;
            versions
                .iter()
                .map(|v| accuracy::version_accuracy(v, &*s.labels, &*s.store, &devices, &spec))
                .collect()
        })
        .await?,
    ))
}

fn dimensions(list: &str) -> Result<Vec<Dimension>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            Dimension::parse(s).ok_or_else(|| {
                Error::BadRequest(format!(
                    "by: {s:?} is not device, site, firmware or tag:<key>"
                ))
            })
        })
        .collect()
}

fn devices(s: &ApiState) -> Result<BTreeMap<strata_proto::DeviceId, strata_store::Device>> {
    s.registry.devices_by_id()
}

/// KPIs over the last hour, per site and fleet-wide: uptime, data
/// freshness, inference latency per model (recomputed every 15 s).
#[utoipa::path(get, path = "/api/v1/kpis", tag = "drift", security(("bearer_token" = [])),
    responses((status = 200, body = KpiReport)))]
pub async fn get_kpis(State(s): State<ApiState>) -> Result<Json<KpiReport>> {
    if let Some(r) = s.kpis.latest() {
        return Ok(Json((*r).clone()));
    }
    Ok(Json(
        blocking(move || {
            let now = crate::now_ns();
            let r = crate::kpi::compute(
                &s.registry,
                &s.models,
                &*s.store,
                &*s.labels,
                now - crate::kpi::WINDOW_NS,
                now,
            )?;
            s.kpis.set(r.clone());
            Ok(r)
        })
        .await?,
    ))
}
