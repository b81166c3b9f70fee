//! OTA over HTTP: artifact upload, signed release intake, the release list,
//! the keys an agent is configured to trust, and rollout campaigns.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use strata_store::ReleaseRecord;
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, ErrorBody, blocking};
use crate::auth::{Principal, release_permission};
use crate::error::{Error, Result};
use crate::ota::campaign::CampaignSpec;
use crate::ota::rollout::CampaignView;

/// A stored artifact.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StoredArtifact {
    /// Its SHA-256, hex: what a release names.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Uploads an artifact (the body) to the content-addressed store.
#[utoipa::path(post, path = "/api/v1/artifacts", tag = "ota", security(("bearer_token" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = StoredArtifact)))]
pub async fn upload_artifact(
    State(s): State<ApiState>,
    body: Bytes,
) -> Result<(StatusCode, Json<StoredArtifact>)> {
    let size = body.len() as u64;
    let sha256 = blocking(move || s.models.artifacts().put(&body)).await?;
    Ok((StatusCode::CREATED, Json(StoredArtifact { sha256, size })))
}

/// Submits a signed release (from `strata release sign`). It is accepted
/// only when a trusted release key signed it, it has not expired, its
/// version is above every earlier one of its kind and name, and its
/// artifact was uploaded with exactly the signed size and hash; otherwise
/// 422 with the reason (`bad_signature`, `unknown_key`, `expired`,
/// `rollback`, `hash_mismatch`, `size_mismatch`...).
#[utoipa::path(post, path = "/api/v1/releases", tag = "ota", security(("bearer_token" = [])),
    request_body(content = Object, description = "A signed release envelope: payload, key_id, signature"),
    responses((status = 201, body = ReleaseRecord), (status = 422, body = ErrorBody)))]
pub async fn submit_release(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Json(envelope): Json<serde_json::Value>,
) -> Result<(StatusCode, Json<ReleaseRecord>)> {
    let envelope: strata_ota::Envelope = serde_json::from_value(envelope)
        .map_err(|e| Error::BadRequest(format!("not a signed release: {e}")))?;
    let payload: serde_json::Value = serde_json::from_str(&envelope.payload)
        .map_err(|e| Error::BadRequest(format!("the release's payload is not JSON: {e}")))?;
    p.require(release_permission(payload["kind"].as_str().unwrap_or("")))?;
    let record = blocking(move || s.ota.accept(&envelope)).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// Filters of the release list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ReleaseFilter {
    /// Only this kind (`model`, `config`, `bundle`).
    pub kind: Option<String>,
    /// Only this name.
    pub name: Option<String>,
}

/// Accepted releases, newest first.
#[utoipa::path(get, path = "/api/v1/releases", tag = "ota", security(("bearer_token" = [])), params(ReleaseFilter),
    responses((status = 200, body = [ReleaseRecord])))]
pub async fn list_releases(
    State(s): State<ApiState>,
    Query(f): Query<ReleaseFilter>,
) -> Result<Json<Vec<ReleaseRecord>>> {
    Ok(Json(
        blocking(move || s.ota.releases(f.kind.as_deref(), f.name.as_deref())).await?,
    ))
}

/// The keys an agent trusts: release keys (what may be installed) and the
/// hub's rollout key (which release, now).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TrustedKeys {
    /// Release public keys, hex.
    pub release_keys: Vec<String>,
    /// The hub's rollout public key, hex.
    pub rollout_key: String,
}

/// The public keys of this hub's OTA trust.
#[utoipa::path(get, path = "/api/v1/ota/keys", tag = "ota", security(("bearer_token" = [])),
    responses((status = 200, body = TrustedKeys)))]
pub async fn keys(State(s): State<ApiState>) -> Json<TrustedKeys> {
    let (release, rollout) = s.ota.trust();
    Json(TrustedKeys {
        release_keys: release.iter().map(|k| k.to_hex()).collect(),
        rollout_key: rollout.to_hex(),
    })
}

/// Which devices get a release now: every active device the filters
/// given match (all active devices when none is given). Unknown fields are
/// refused: a misspelt `devices` must not widen the target to the fleet.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// These devices.
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    /// Devices of this site.
    #[serde(default)]
    pub site: Option<String>,
    /// Devices carrying all these tags.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// How long each signed assignment stays valid (default 6 h, at most
    /// 30 days).
    #[serde(default = "default_assignment_s")]
    pub expires_in_s: u64,
}

/// The longest an assignment may stay valid.
const MAX_ASSIGNMENT_S: u64 = 30 * 86_400;

fn default_assignment_s() -> u64 {
    6 * 3600
}

/// What an assignment did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Assigned {
    /// The campaign id written into every assignment.
    pub campaign: String,
    /// Devices whose twin now carries the signed update.
    pub devices: Vec<String>,
}

/// Assigns a release to devices now: one assignment per device, signed
/// with the hub's rollout key, delivered with the release through the
/// device's twin. (Phased campaigns build on this.)
#[utoipa::path(post, path = "/api/v1/releases/{kind}/{name}/{version}/assign", tag = "ota", security(("bearer_token" = [])),
    params(("kind" = String, Path), ("name" = String, Path), ("version" = u64, Path)), request_body = AssignRequest,
    responses((status = 200, body = Assigned), (status = 404, body = ErrorBody)))]
pub async fn assign(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Path((kind, name, version)): Path<(String, String, u64)>,
    Json(req): Json<AssignRequest>,
) -> Result<Json<Assigned>> {
    p.require(release_permission(&kind))?;
    if !(1..=MAX_ASSIGNMENT_S).contains(&req.expires_in_s) {
        return Err(Error::BadRequest(format!(
            "expires_in_s must be between 1 and {MAX_ASSIGNMENT_S} (30 days)"
        )));
    }
    let target = crate::models::deploy::DeviceSelector {
        devices: req.devices,
        site: req.site,
        tags: req.tags,
    };
    Ok(Json(
        blocking(move || {
            let devices = s.deployer.select(&target)?;
            if devices.is_empty() {
                return Err(Error::BadRequest(
                    "the selector matches no active device".into(),
                ));
            }
            let campaign = format!("direct-{}", crate::now_ns());
            let lifetime =
                i64::try_from(req.expires_in_s.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX);
            for (device, update) in s
                .ota
                .assign(&kind, &name, version, &devices, &campaign, lifetime)?
            {
                s.deployer.assign_update(&device, &update)?;
            }
            Ok(Assigned {
                campaign,
                devices: devices.iter().map(|d| d.to_string()).collect(),
            })
        })
        .await?,
    ))
}

/// Starts a rollout campaign: the target's devices in a fixed shuffled
/// order, a canary then waves; each wave opens once the one before
/// committed enough, the failure threshold pauses or aborts it, and silent
/// devices count as failed after the timeout.
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "ota", security(("bearer_token" = [])),
    request_body = CampaignSpec,
    responses((status = 201, body = CampaignView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_campaign(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Json(spec): Json<serde_json::Value>,
) -> Result<(StatusCode, Json<CampaignView>)> {
    let spec: CampaignSpec = serde_json::from_value(spec)
        .map_err(|e| Error::BadRequest(format!("not a campaign spec: {e}")))?;
    p.require(release_permission(&spec.release.kind))?;
    let view = blocking(move || s.campaigns.create(spec)).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Every campaign, newest first.
#[utoipa::path(get, path = "/api/v1/campaigns", tag = "ota", security(("bearer_token" = [])),
    responses((status = 200, body = [strata_store::Campaign])))]
pub async fn list_campaigns(
    State(s): State<ApiState>,
) -> Result<Json<Vec<strata_store::Campaign>>> {
    Ok(Json(blocking(move || s.campaigns.list()).await?))
}

/// A campaign with its progress per wave and the devices that failed.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "ota", security(("bearer_token" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = CampaignView), (status = 404, body = ErrorBody)))]
pub async fn get_campaign(
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<Json<CampaignView>> {
    Ok(Json(blocking(move || s.campaigns.view(id)).await?))
}

/// `pause`, `resume` (the failure threshold counts afresh; a finished
/// wave that paused is accepted) or `abort` (with the campaign's
/// `rollback`, devices that committed go back to the release they had).
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/{action}", tag = "ota", security(("bearer_token" = [])),
    params(("id" = i64, Path), ("action" = String, Path, description = "pause, resume or abort")),
    responses((status = 200, body = CampaignView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn campaign_action(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Path((id, action)): Path<(i64, String)>,
) -> Result<Json<CampaignView>> {
    Ok(Json(
        blocking(move || {
            let campaign = s.campaigns.view(id)?.campaign;
            p.require(release_permission(
                campaign.spec["release"]["kind"].as_str().unwrap_or(""),
            ))?;
            s.campaigns.act(id, &action)
        })
        .await?,
    ))
}
