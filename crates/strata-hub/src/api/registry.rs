//! Sites, devices, enrollment and revocation over HTTP.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use strata_proto::{DeviceId, SiteId};
use strata_store::{Device, DeviceUpdate, Site};
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, ErrorBody, blocking};
use crate::error::{Error, Result};
use crate::pki::IssuedCertificate;
use crate::registry::{CreateDevice, CreateSite, CreatedDevice};

pub(super) fn device_id(id: &str) -> Result<DeviceId> {
    DeviceId::new(id).map_err(|e| Error::BadRequest(e.to_string()))
}

/// All sites.
#[utoipa::path(get, path = "/api/v1/sites", tag = "registry", security(("bearer_token" = [])),
    responses((status = 200, body = [Site]), (status = 401, body = ErrorBody)))]
pub async fn list_sites(State(s): State<ApiState>) -> Result<Json<Vec<Site>>> {
    Ok(Json(blocking(move || s.registry.sites()).await?))
}

/// Creates a site.
#[utoipa::path(post, path = "/api/v1/sites", tag = "registry", security(("bearer_token" = [])), request_body = CreateSite,
    responses((status = 201, body = Site), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_site(
    State(s): State<ApiState>,
    Json(req): Json<CreateSite>,
) -> Result<(StatusCode, Json<Site>)> {
    Ok((
        StatusCode::CREATED,
        Json(blocking(move || s.registry.create_site(req)).await?),
    ))
}

/// Filter for the device list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DeviceFilter {
    /// Only devices of this site.
    pub site: Option<String>,
}

/// All devices, optionally of one site.
#[utoipa::path(get, path = "/api/v1/devices", tag = "registry", security(("bearer_token" = [])), params(DeviceFilter),
    responses((status = 200, body = [Device]), (status = 400, body = ErrorBody)))]
pub async fn list_devices(
    State(s): State<ApiState>,
    Query(f): Query<DeviceFilter>,
) -> Result<Json<Vec<Device>>> {
    let site = f
        .site
        .map(SiteId::new)
        .transpose()
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    Ok(Json(
        blocking(move || s.registry.devices(site.as_ref())).await?,
    ))
}

/// Registers a device; the answer holds its one-time enrollment token.
#[utoipa::path(post, path = "/api/v1/devices", tag = "registry", security(("bearer_token" = [])), request_body = CreateDevice,
    responses((status = 201, body = CreatedDevice), (status = 404, description = "No such site", body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_device(
    State(s): State<ApiState>,
    Json(req): Json<CreateDevice>,
) -> Result<(StatusCode, Json<CreatedDevice>)> {
    Ok((
        StatusCode::CREATED,
        Json(blocking(move || s.registry.create_device(req)).await?),
    ))
}

/// One device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "registry", security(("bearer_token" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = Device), (status = 404, body = ErrorBody)))]
pub async fn get_device(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Json<Device>> {
    let id = device_id(&id)?;
    Ok(Json(blocking(move || s.registry.device(&id)).await?))
}

/// Changes a device's tags, versions or declared signals.
#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "registry", security(("bearer_token" = [])),
    params(("id" = String, Path, description = "Device id")), request_body = DeviceUpdate,
    responses((status = 200, body = Device), (status = 404, body = ErrorBody)))]
pub async fn update_device(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Json(update): Json<DeviceUpdate>,
) -> Result<Json<Device>> {
    let id = device_id(&id)?;
    Ok(Json(
        blocking(move || s.registry.update_device(&id, &update)).await?,
    ))
}

/// Revokes a device: its credential stops working and its live session closes.
#[utoipa::path(post, path = "/api/v1/devices/{id}/revoke", tag = "registry", security(("bearer_token" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = Device), (status = 404, body = ErrorBody)))]
pub async fn revoke_device(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Device>> {
    let id = device_id(&id)?;
    Ok(Json(blocking(move || s.registry.revoke(&id)).await?))
}

/// Issues a new enrollment token to a device that has not enrolled yet.
#[utoipa::path(post, path = "/api/v1/devices/{id}/token", tag = "registry", security(("bearer_token" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = CreatedDevice), (status = 409, body = ErrorBody)))]
pub async fn reissue_token(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<CreatedDevice>> {
    let id = device_id(&id)?;
    Ok(Json(blocking(move || s.registry.reissue_token(&id)).await?))
}

/// A device's enrollment request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The device id.
    pub device: String,
    /// Its one-time enrollment token.
    pub token: String,
    /// The device's public key (DER SubjectPublicKeyInfo, ECDSA P-256 or
    /// Ed25519, base64), for a certificate from the platform CA.
    #[serde(default)]
    pub public_key: Option<String>,
}

/// A device's request for a new certificate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// The device's new public key (DER SubjectPublicKeyInfo, base64).
    pub public_key: String,
}

/// What a device needs to connect.
#[derive(Debug, Serialize, ToSchema)]
pub struct Enrollment {
    /// The device id: MQTT client id and username.
    pub device: String,
    /// The MQTT password. Shown once; the hub keeps only its hash.
    pub credential: String,
    /// The MQTT port of the hub.
    pub mqtt_port: u16,
    /// Prefix of every topic the device may use.
    pub topic_prefix: String,
    /// The hub's MQTT TLS port, when it has a TLS listener.
    pub mqtt_tls_port: Option<u16>,
    /// The device's certificate, when it sent a public key.
    pub certificate: Option<IssuedCertificate>,
}

/// Trades a one-time enrollment token for the device's MQTT credential.
/// Failed enrollments are throttled per source address like logins
/// (`auth.login_free_attempts_per_address`): beyond them, 429 with
/// `Retry-After`, unchecked, and only the first such refusal is audited.
#[utoipa::path(post, path = "/api/v1/enroll", tag = "registry", request_body = EnrollRequest,
    responses((status = 200, body = Enrollment), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn enroll(
    State(s): State<ApiState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<super::https::Peer>,
    Json(req): Json<EnrollRequest>,
) -> Result<Json<Enrollment>> {
    let id = device_id(&req.device)?;
    let registry = s.registry.clone();
    let enroll_id = id.clone();
    let audit = s.audit.clone();
    let public_key = req
        .public_key
        .as_deref()
        .map(decode_public_key)
        .transpose()?;
    let (pki, registry_for_cert) = (s.pki.clone(), s.registry.clone());
    let (access, metrics, source) = (s.access.clone(), s.metrics.clone(), peer.0.ip());
    let (credential, certificate) = blocking(move || {
        let result = access.begin_enrollment(source).and_then(|()| {
            let result = registry
                .enroll(&enroll_id, &req.token)
                .and_then(|credential| {
                    let certificate = public_key
                        .map(|k| issue_certificate(&pki, &registry_for_cert, &enroll_id, &k))
                        .transpose()?;
                    Ok((credential, certificate))
                });
            // Only a wrong token counts against the address: a device
            // enrolled already (a provisioning script run again) or a
            // failure of the hub's own does not.
            access.end_enrollment(source, !matches!(result, Err(Error::Unauthorized(_))));
            result
        });
        let event = crate::audit::Event::ok(
            format!("device:{enroll_id}"),
            "device.enroll",
            enroll_id.to_string(),
        );
        let event = match &result {
            Ok(_) => Some(event),
            Err(Error::TooManyRequests { first, .. }) => {
                metrics
                    .enrollments_throttled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Attempts while a wait lasts: the first is on the record.
                first.then(|| event.outcome("throttled"))
            }
            Err(e) => Some(
                event
                    .outcome("denied")
                    .detail(serde_json::json!({"reason": e.to_string()})),
            ),
        };
        if let Some(event) = event {
            audit.record(event)?;
        }
        result
    })
    .await?;
    Ok(Json(Enrollment {
        topic_prefix: strata_proto::Topic::device_prefix(id.as_str()),
        device: id.to_string(),
        credential,
        mqtt_port: s.mqtt_port,
        mqtt_tls_port: s.mqtt_tls_port,
        certificate,
    }))
}

/// The DER of a base64 public key the CA can certify: checked before the
/// enrollment spends its one-time token.
fn decode_public_key(b64: &str) -> Result<Vec<u8>> {
    let der = crate::secret::base64_decode(b64.trim())
        .ok_or_else(|| Error::BadRequest("public_key is not base64".into()))?;
    crate::pki::Pki::check_public_key(&der)?;
    Ok(der)
}

/// Issues a certificate and lets the broker accept it.
fn issue_certificate(
    pki: &crate::pki::Pki,
    registry: &crate::registry::Registry,
    device: &DeviceId,
    spki_der: &[u8],
) -> Result<IssuedCertificate> {
    let issued = pki.issue(device, spki_der)?;
    let sha = crate::audit::chain::unhex32(&issued.sha256).expect("our own hash");
    registry.add_certificate(sha, device.clone(), issued.not_after_ns);
    Ok(issued)
}

/// Renews a device's certificate: HTTP Basic auth with the device id and
/// its credential, a new public key in the body. The old certificate stays
/// valid until it expires, so the device can switch over without a gap.
#[utoipa::path(post, path = "/api/v1/device/certificate", tag = "registry", request_body = CertificateRequest,
    responses((status = 201, body = IssuedCertificate), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn renew_certificate(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Json(req): Json<CertificateRequest>,
) -> Result<(StatusCode, Json<IssuedCertificate>)> {
    let device = super::models::authenticated_device(&s, &headers)?;
    let key = decode_public_key(&req.public_key)?;
    let issued = blocking(move || {
        let issued = issue_certificate(&s.pki, &s.registry, &device, &key)?;
        s.audit.record(
            crate::audit::Event::ok(
                format!("device:{device}"),
                "device.certificate",
                device.to_string(),
            )
            .detail(
                serde_json::json!({"sha256": issued.sha256, "not_after_ns": issued.not_after_ns}),
            ),
        )?;
        Ok(issued)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}
