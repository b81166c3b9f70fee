//! Alerts over HTTP: list and read them with their history, acknowledge
//! them, read the rules, and follow the webhook deliveries and workflow
//! runs they caused.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use strata_store::{AlertFilter, Delivery};
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, ErrorBody, blocking};
use crate::alerts::rules::AlertRule;
use crate::alerts::{Alert, AlertDetail};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::workflows::{Run, Workflow};

/// Which alerts to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AlertQuery {
    /// Only in this state (`active`, `acknowledged`, `cleared`).
    pub state: Option<String>,
    /// Only of this device.
    pub device: Option<String>,
    /// Only of this rule.
    pub rule: Option<String>,
    /// Only open ones (active or acknowledged).
    #[serde(default)]
    pub open: bool,
    /// At most this many, newest first (default 100).
    pub limit: Option<usize>,
}

/// Alerts, newest first.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", security(("bearer_token" = [])),
    params(AlertQuery), responses((status = 200, body = Vec<Alert>)))]
pub async fn list_alerts(
    State(s): State<ApiState>,
    Query(q): Query<AlertQuery>,
) -> Result<Json<Vec<Alert>>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    if let Some(state) = q.state.as_deref()
        && !["active", "acknowledged", "cleared"].contains(&state)
    {
        return Err(Error::BadRequest(format!(
            "state {state:?} is not active, acknowledged or cleared (open=true for both open states)"
        )));
    }
    let filter = AlertFilter {
        state: q.state,
        device: q.device,
        rule: q.rule,
        open: q.open,
    };
    Ok(Json(
        blocking(move || s.alerts.alerts(&filter, limit)).await?,
    ))
}

/// One alert with its history.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts", security(("bearer_token" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = AlertDetail), (status = 404, body = ErrorBody)))]
pub async fn get_alert(
    State(s): State<ApiState>,
    Path(id): Path<i64>,
) -> Result<Json<AlertDetail>> {
    Ok(Json(blocking(move || s.alerts.alert(id)).await?))
}

/// Who acknowledges an alert, and why.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Acknowledge {
    /// Who takes it on. The hub records the caller's name; only the
    /// shared bootstrap admin token may name someone else here.
    #[serde(default)]
    pub by: Option<String>,
    /// A note for the history.
    pub note: Option<String>,
}

/// Acknowledges an active alert.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "alerts", security(("bearer_token" = [])),
    params(("id" = i64, Path)), request_body = Acknowledge,
    responses((status = 200, body = Alert), (status = 404, body = ErrorBody),
        (status = 409, description = "Cleared or already acknowledged", body = ErrorBody)))]
pub async fn acknowledge(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<i64>,
    Json(req): Json<Acknowledge>,
) -> Result<Json<Alert>> {
    let by = super::acting_as(&p, req.by.as_deref());
    Ok(Json(
        blocking(move || s.alerts.acknowledge(id, &by, req.note)).await?,
    ))
}

/// The alert rules in force.
#[utoipa::path(get, path = "/api/v1/alert-rules", tag = "alerts", security(("bearer_token" = [])),
    responses((status = 200, body = Vec<AlertRule>)))]
pub async fn list_rules(State(s): State<ApiState>) -> Result<Json<Vec<AlertRule>>> {
    // Off the runtime: the alert thread holds this lock while it stores.
    Ok(Json(blocking(move || Ok(s.alerts.rules())).await?))
}

/// Which deliveries to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveryQuery {
    /// Only to this endpoint.
    pub endpoint: Option<String>,
    /// Only in this state (`pending`, `delivered`, `failed`).
    pub state: Option<String>,
    /// At most this many, newest first (default 100).
    pub limit: Option<usize>,
}

/// Webhook deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/webhooks/deliveries", tag = "alerts", security(("bearer_token" = [])),
    params(DeliveryQuery), responses((status = 200, body = Vec<Object>)))]
pub async fn list_deliveries(
    State(s): State<ApiState>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<Vec<Delivery>>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    if let Some(state) = q.state.as_deref()
        && !["pending", "delivered", "failed"].contains(&state)
    {
        return Err(Error::BadRequest(format!(
            "state {state:?} is not pending, delivered or failed"
        )));
    }
    Ok(Json(
        blocking(move || {
            s.webhooks
                .deliveries(q.endpoint.as_deref(), q.state.as_deref(), limit)
        })
        .await?,
    ))
}

/// The workflows in force.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "alerts", security(("bearer_token" = [])),
    responses((status = 200, body = Vec<Workflow>)))]
pub async fn list_workflows(State(s): State<ApiState>) -> Json<Vec<Workflow>> {
    Json(s.workflows.workflows().to_vec())
}

/// Which runs to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct RunQuery {
    /// Only of this workflow.
    pub workflow: Option<String>,
    /// At most this many, newest first (default 100).
    pub limit: Option<usize>,
}

/// Workflow runs, newest first, each with every step's outcome.
#[utoipa::path(get, path = "/api/v1/workflows/runs", tag = "alerts", security(("bearer_token" = [])),
    params(RunQuery), responses((status = 200, body = Vec<Run>)))]
pub async fn list_runs(
    State(s): State<ApiState>,
    Query(q): Query<RunQuery>,
) -> Result<Json<Vec<Run>>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(
        blocking(move || s.workflows.runs(q.workflow.as_deref(), limit)).await?,
    ))
}

/// One workflow run.
#[utoipa::path(get, path = "/api/v1/workflows/runs/{id}", tag = "alerts", security(("bearer_token" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Run), (status = 404, body = ErrorBody)))]
pub async fn get_run(State(s): State<ApiState>, Path(id): Path<i64>) -> Result<Json<Run>> {
    Ok(Json(blocking(move || s.workflows.run_by_id(id)).await?))
}
