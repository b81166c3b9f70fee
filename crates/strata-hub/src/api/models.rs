//! Models, versions, aliases, deployments, training and backtest jobs over
//! HTTP, and the artifact download devices use.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use strata_store::{Job, JobLogLine, ModelInfo, ModelVersion, Twin};
use utoipa::{IntoParams, ToSchema};

use super::registry::device_id;
use super::{ApiState, ErrorBody, blocking};
use crate::auth::{Permission, Principal};
use crate::error::{Error, Result};
use crate::models::backtest::BacktestSpec;
use crate::models::deploy::{DeployRequest, DeployResult};
use crate::models::train::{TrainSpec, Trainer};
use crate::models::{NewVersion, VersionRef};
use crate::registry::CredentialCheck;

/// A model with its versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelDetail {
    /// The model.
    #[serde(flatten)]
    pub info: ModelInfo,
    /// Its versions, oldest first.
    pub versions: Vec<ModelVersion>,
}

/// All models.
#[utoipa::path(get, path = "/api/v1/models", tag = "models", security(("bearer_token" = [])),
    responses((status = 200, body = [ModelInfo])))]
pub async fn list_models(State(s): State<ApiState>) -> Result<Json<Vec<ModelInfo>>> {
    Ok(Json(blocking(move || s.models.models()).await?))
}

/// One model and its versions.
#[utoipa::path(get, path = "/api/v1/models/{name}", tag = "models", security(("bearer_token" = [])),
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, body = ModelDetail), (status = 404, body = ErrorBody)))]
pub async fn get_model(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<ModelDetail>> {
    Ok(Json(
        blocking(move || {
            Ok(ModelDetail {
                info: s.models.model(&name)?,
                versions: s.models.versions(&name)?,
            })
        })
        .await?,
    ))
}

/// How an uploaded ONNX file is described.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UploadParams {
    /// Input feature names, comma-separated, in input order (`f0,f1,...`
    /// when absent); the count must match the model's input width.
    pub features: Option<String>,
    /// The edge pipeline vector the model reads.
    pub vector: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Alias to point at the new version.
    pub alias: Option<String>,
}

/// Uploads an ONNX model (the request body) as a new version. It is loaded
/// by the edge runtime first: an unsupported op or a feature list of the
/// wrong width is refused with a message naming it.
#[utoipa::path(post, path = "/api/v1/models/{name}/versions", tag = "models", security(("bearer_token" = [])),
    params(("name" = String, Path, description = "Model name"), UploadParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The ONNX file"),
    responses((status = 201, body = ModelVersion), (status = 400, body = ErrorBody)))]
pub async fn upload_version(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(p): Query<UploadParams>,
    body: Bytes,
) -> Result<(StatusCode, Json<ModelVersion>)> {
    let features = p.features.map(|f| {
        f.split(',')
            .map(|x| x.trim().to_owned())
            .collect::<Vec<_>>()
    });
    // Checked first: a version registered and then refused its alias
    // would be registered again by a client that retries.
    if let Some(alias) = &p.alias {
        crate::models::ModelRegistry::check_alias(alias)?;
    }
    let version = blocking(move || {
        let v = s.models.register(NewVersion {
            model: name,
            onnx: body.to_vec(),
            features,
            vector: p.vector,
            description: p.description.unwrap_or_default(),
            lineage: strata_store::Lineage {
                trigger: "upload".into(),
                trainer: "external upload".into(),
                ..Default::default()
            },
            ..NewVersion::default()
        })?;
        if let Some(alias) = p.alias {
            s.models.set_alias(&v.model, &alias, v.version)?;
        }
        Ok(v)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(version)))
}

/// One version, by number or alias.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}", tag = "models", security(("bearer_token" = [])),
    params(("name" = String, Path), ("version" = String, Path, description = "Number or alias")),
    responses((status = 200, body = ModelVersion), (status = 404, body = ErrorBody)))]
pub async fn get_version(
    State(s): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelVersion>> {
    Ok(Json(
        blocking(move || s.models.version(&name, &VersionRef::parse(&version)?)).await?,
    ))
}

/// A version's ONNX file.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/artifact", tag = "models", security(("bearer_token" = [])),
    params(("name" = String, Path), ("version" = String, Path, description = "Number or alias")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = ErrorBody)))]
pub async fn get_artifact(
    State(s): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    let (v, bytes) = blocking(move || {
        let v = s.models.version(&name, &VersionRef::parse(&version)?)?;
        let bytes = s.models.artifact(&v)?;
        Ok((v, bytes))
    })
    .await?;
    Ok(octets(&v.sha256, bytes))
}

fn octets(sha256: &str, bytes: Vec<u8>) -> impl IntoResponse + use<> {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::ETAG, format!("\"{sha256}\"")),
        ],
        bytes,
    )
}

/// A version's tree node sample counts (models trained by the hub).
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}/tree-stats", tag = "models", security(("bearer_token" = [])),
    params(("name" = String, Path), ("version" = String, Path, description = "Number or alias")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn get_tree_stats(
    State(s): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(
        blocking(move || {
            let v = s.models.version(&name, &VersionRef::parse(&version)?)?;
            s.models.tree_stats(&v)
        })
        .await?,
    ))
}

/// Where an alias should point.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct AliasTarget {
    /// The version number.
    pub version: u32,
}

/// The result of moving an alias.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct AliasMoved {
    /// The alias.
    pub alias: String,
    /// The version it points at now.
    pub version: u32,
    /// The version it pointed at before.
    pub previous: Option<u32>,
}

/// Points an alias (`champion`, `challenger`, ...) at a version.
#[utoipa::path(put, path = "/api/v1/models/{name}/aliases/{alias}", tag = "models", security(("bearer_token" = [])),
    params(("name" = String, Path), ("alias" = String, Path)), request_body = AliasTarget,
    responses((status = 200, body = AliasMoved), (status = 404, body = ErrorBody)))]
pub async fn set_alias(
    State(s): State<ApiState>,
    Path((name, alias)): Path<(String, String)>,
    Json(t): Json<AliasTarget>,
) -> Result<Json<AliasMoved>> {
    Ok(Json(
        blocking(move || {
            let previous = s.models.set_alias(&name, &alias, t.version)?;
            Ok(AliasMoved {
                alias,
                version: t.version,
                previous,
            })
        })
        .await?,
    ))
}

/// Removes an alias.
#[utoipa::path(delete, path = "/api/v1/models/{name}/aliases/{alias}", tag = "models", security(("bearer_token" = [])),
    params(("name" = String, Path), ("alias" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_alias(
    State(s): State<ApiState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<StatusCode> {
    blocking(move || s.models.remove_alias(&name, &alias)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deploys a version to devices (by ids, site or tags) through their
/// twins; each agent downloads the artifact, checks its hash, and swaps
/// the model in.
#[utoipa::path(post, path = "/api/v1/models/{name}/deploy", tag = "models", security(("bearer_token" = [])),
    params(("name" = String, Path)), request_body = DeployRequest,
    responses((status = 200, body = DeployResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deploy(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Json(req): Json<DeployRequest>,
) -> Result<Json<DeployResult>> {
    Ok(Json(
        blocking(move || s.deployer.deploy(&name, &req)).await?,
    ))
}

/// A device's twin: what it should run and what it reports.
#[utoipa::path(get, path = "/api/v1/devices/{id}/twin", tag = "models", security(("bearer_token" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Twin), (status = 404, body = ErrorBody)))]
pub async fn get_twin(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Json<Twin>> {
    let id = device_id(&id)?;
    Ok(Json(blocking(move || s.deployer.twin(&id)).await?))
}

/// Queues a training job: dataset from stored telemetry through the edge
/// pipeline, a built-in or external trainer, hold-out evaluation,
/// registration with lineage.
#[utoipa::path(post, path = "/api/v1/jobs/train", tag = "jobs", security(("bearer_token" = [])),
    request_body(content = Object, description = "A training spec (see docs/design/models.md)"),
    responses((status = 202, body = Job), (status = 400, body = ErrorBody)))]
pub async fn submit_training(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Json(spec): Json<serde_json::Value>,
) -> Result<(StatusCode, Json<Job>)> {
    let spec: TrainSpec = serde_json::from_value(spec)
        .map_err(|e| Error::BadRequest(format!("training spec: {e}")))?;
    // An external trainer is a command the hub runs as itself, with its
    // data directory (keys, tokens) in reach: an administrator's call.
    if matches!(spec.trainer, Trainer::External { .. }) {
        p.require(Permission::Admin)?;
    }
    let job = blocking(move || s.jobs.submit_training(&spec)).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Queues a backtest: stored telemetry replayed through the pipeline and
/// each named version (e.g. champion and challenger), scored on the same
/// rows.
#[utoipa::path(post, path = "/api/v1/jobs/backtest", tag = "jobs", security(("bearer_token" = [])),
    request_body(content = Object, description = "A backtest spec"),
    responses((status = 202, body = Job), (status = 400, body = ErrorBody)))]
pub async fn submit_backtest(
    State(s): State<ApiState>,
    Json(spec): Json<serde_json::Value>,
) -> Result<(StatusCode, Json<Job>)> {
    let spec: BacktestSpec = serde_json::from_value(spec)
        .map_err(|e| Error::BadRequest(format!("backtest spec: {e}")))?;
    let job = blocking(move || s.jobs.submit_backtest(&spec)).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Paging of the job list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct JobListParams {
    /// Most jobs returned, newest first (default 50).
    pub limit: Option<usize>,
}

/// The newest jobs.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", security(("bearer_token" = [])), params(JobListParams),
    responses((status = 200, body = [Job])))]
pub async fn list_jobs(
    State(s): State<ApiState>,
    Query(p): Query<JobListParams>,
) -> Result<Json<Vec<Job>>> {
    let limit = p.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(blocking(move || s.jobs.jobs(limit)).await?))
}

/// One job: state, progress, result.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", security(("bearer_token" = [])),
    params(("id" = i64, Path)), responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub async fn get_job(State(s): State<ApiState>, Path(id): Path<i64>) -> Result<Json<Job>> {
    Ok(Json(blocking(move || s.jobs.job(id)).await?))
}

/// Why a job is cancelled.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelJobRequest {
    /// Kept as the job's message and last log line.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Cancels a queued or running job: a queued one never starts, a running
/// one stops at its next step and registers nothing. The body is
/// optional.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", security(("bearer_token" = [])),
    params(("id" = i64, Path)), request_body(content = Option<CancelJobRequest>),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody),
        (status = 409, description = "the job has already ended", body = ErrorBody)))]
pub async fn cancel_job(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<i64>,
    body: Option<Json<CancelJobRequest>>,
) -> Result<Json<Job>> {
    let given = body.and_then(|Json(b)| b.reason).unwrap_or_default();
    let reason = match given.trim() {
        "" => format!("cancelled by {}", p.name),
        why => format!("cancelled by {}: {why}", p.name),
    };
    Ok(Json(blocking(move || s.jobs.cancel(id, &reason)).await?))
}

/// A job's log.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/log", tag = "jobs", security(("bearer_token" = [])),
    params(("id" = i64, Path)), responses((status = 200, body = [JobLogLine]), (status = 404, body = ErrorBody)))]
pub async fn get_job_log(
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<Json<Vec<JobLogLine>>> {
    Ok(Json(blocking(move || s.jobs.log(id)).await?))
}

/// An artifact, for a device: HTTP Basic auth with the device id and its
/// credential (the MQTT ones). A device may fetch only artifacts its
/// desired twin names.
#[utoipa::path(get, path = "/api/v1/device/artifacts/{sha256}", tag = "models",
    params(("sha256" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn device_artifact(
    State(s): State<ApiState>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse> {
    let id = authenticated_device(&s, &headers)?;
    let hash = sha256.clone();
    let bytes = blocking(move || {
        let twin = s.deployer.twin(&id)?;
        let named = |key: &str, sha: &dyn Fn(&serde_json::Value) -> Option<String>| {
            twin.desired
                .get(key)
                .and_then(|m| m.as_array())
                .is_some_and(|items| {
                    items
                        .iter()
                        .any(|i| sha(i).as_deref() == Some(hash.as_str()))
                })
        };
        // Directly deployed models, and the artifacts of signed updates'
        // releases.
        let assigned = named("models", &|m| m.get("sha256")?.as_str().map(str::to_owned))
            || named("updates", &|u| {
                let payload = u.get("release")?.get("payload")?.as_str()?;
                let release: serde_json::Value = serde_json::from_str(payload).ok()?;
                release["artifact"]["sha256"].as_str().map(str::to_owned)
            });
        if !assigned {
            return Err(Error::Forbidden(format!(
                "artifact {hash} is not assigned to device {id}"
            )));
        }
        s.models.artifacts().get(&hash)
    })
    .await?;
    let total = bytes.len() as u64;
    match byte_range(&headers, total)? {
        None => {
            let mut response = octets(&sha256, bytes).into_response();
            response.headers_mut().insert(
                header::ACCEPT_RANGES,
                header::HeaderValue::from_static("bytes"),
            );
            Ok(response)
        }
        Some((start, end)) => {
            let part = bytes[start as usize..=end as usize].to_vec();
            let mut response = octets(&sha256, part).into_response();
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let range = format!("bytes {start}-{end}/{total}");
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header::HeaderValue::from_str(&range).expect("ASCII header"),
            );
            Ok(response)
        }
    }
}

/// The one byte range asked for (`Range: bytes=START-` or
/// `bytes=START-END`), clamped to the artifact; `None` for the whole.
/// Resumed downloads ask for the rest of what they have.
fn byte_range(headers: &HeaderMap, total: u64) -> Result<Option<(u64, u64)>> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let bad = || Error::BadRequest("Range must be bytes=START- or bytes=START-END".into());
    let spec = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("bytes="))
        .ok_or_else(bad)?;
    let (start, end) = spec.split_once('-').ok_or_else(bad)?;
    let start: u64 = start.trim().parse().map_err(|_| bad())?;
    let end: u64 = match end.trim() {
        "" => total.saturating_sub(1),
        e => e
            .parse::<u64>()
            .map_err(|_| bad())?
            .min(total.saturating_sub(1)),
    };
    if start >= total || start > end {
        return Err(Error::RangeNotSatisfiable(format!(
            "range {start}-{end} is outside the artifact's {total} bytes"
        )));
    }
    Ok(Some((start, end)))
}

/// `Authorization: Basic base64(user:password)`.
/// The device calling with HTTP Basic auth (its id and credential), if it
/// is active.
pub(super) fn authenticated_device(
    s: &ApiState,
    headers: &HeaderMap,
) -> Result<strata_proto::DeviceId> {
    let (device, credential) = basic_auth(headers)?;
    match s.registry.check_credential(&device, credential.as_bytes()) {
        CredentialCheck::Valid => device_id(&device),
        CredentialCheck::Revoked => Err(Error::Forbidden(format!("device {device} is revoked"))),
        _ => Err(Error::Unauthorized(
            "unknown device or wrong credential".into(),
        )),
    }
}

fn basic_auth(headers: &HeaderMap) -> Result<(String, String)> {
    let missing = || {
        Error::Unauthorized(
            "this route needs HTTP Basic auth with the device id and its credential".into(),
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(missing)?;
    let decoded = crate::secret::base64_decode(value.trim()).ok_or_else(missing)?;
    let text = String::from_utf8(decoded).map_err(|_| missing())?;
    let (user, password) = text.split_once(':').ok_or_else(missing)?;
    Ok((user.to_owned(), password.to_owned()))
}
