//! Closed-loop control over HTTP: each site's phase gate with every check
//! measured, the action record devices send, and approving an action a
//! rule in approval mode proposed.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use strata_proto::{ControlAction, ControlGate, DeviceId};
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, ErrorBody, blocking};
use crate::auth::Principal;
use crate::error::{Error, Result};

/// Every site's gate as last measured.
#[utoipa::path(get, path = "/api/v1/control/gates", tag = "control", security(("bearer_token" = [])),
    responses((status = 200, body = Vec<ControlGate>)))]
pub async fn list_gates(State(s): State<ApiState>) -> Json<Vec<ControlGate>> {
    Json(s.gates.latest())
}

/// Which action records to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ActionQuery {
    /// Only of this device.
    pub device: Option<String>,
    /// Only of this rule.
    pub rule: Option<String>,
    /// Only of this action id.
    pub action: Option<String>,
    /// At most this many, newest first (default 100).
    pub limit: Option<usize>,
}

/// One record of the closed-loop action log.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionRecord {
    /// The device whose rule decided.
    pub device: String,
    /// When the hub received it, ns.
    pub received_ns: i64,
    /// The decision.
    #[serde(flatten)]
    pub action: ControlAction,
}

/// Closed-loop action records, newest first.
#[utoipa::path(get, path = "/api/v1/control/actions", tag = "control", security(("bearer_token" = [])),
    params(ActionQuery), responses((status = 200, body = Vec<ActionRecord>)))]
pub async fn list_actions(
    State(s): State<ApiState>,
    Query(q): Query<ActionQuery>,
) -> Result<Json<Vec<ActionRecord>>> {
    let device = q
        .device
        .map(DeviceId::new)
        .transpose()
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let filter = strata_store::ActionFilter {
        device,
        rule: q.rule,
        action: q.action,
        limit: q.limit.unwrap_or(100).clamp(1, 10_000),
    };
    let rows = blocking(move || Ok(s.gates.actions().actions(&filter)?)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| ActionRecord {
                device: r.device.to_string(),
                received_ns: r.received_ns,
                action: r.action,
            })
            .collect(),
    ))
}

/// Who approves an action.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Approve {
    /// Who approves it (in the record). The hub records the caller's name;
    /// only the shared bootstrap admin token may name someone else here.
    #[serde(default)]
    pub by: Option<String>,
}

/// Approves an action a rule proposed; the device checks its interlocks
/// and the gate again before it writes.
#[utoipa::path(post, path = "/api/v1/control/actions/{device}/{action}/approve", tag = "control",
    security(("bearer_token" = [])),
    params(("device" = String, Path), ("action" = String, Path)), request_body = Approve,
    responses((status = 202, description = "Sent to the device"), (status = 404, body = ErrorBody),
        (status = 409, description = "No longer a proposal", body = ErrorBody)))]
pub async fn approve(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Path((device, action)): Path<(String, String)>,
    Json(req): Json<Approve>,
) -> Result<axum::http::StatusCode> {
    let device = DeviceId::new(device).map_err(|e| Error::NotFound(e.to_string()))?;
    let by = super::acting_as(&p, req.by.as_deref());
    blocking(move || s.gates.approve(&device, &action, &by)).await?;
    Ok(axum::http::StatusCode::ACCEPTED)
}
