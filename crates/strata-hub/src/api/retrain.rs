//! The retraining loop over HTTP: its cycles, each with its trigger, the
//! figures of every decision and every step.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiState, ErrorBody, blocking};
use crate::error::Result;
use crate::retrain::Cycle;

/// Which cycles to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct CycleQuery {
    /// Only this model's.
    pub model: Option<String>,
    /// At most this many, newest first (default 50).
    pub limit: Option<usize>,
}

/// Retraining cycles, newest first.
#[utoipa::path(get, path = "/api/v1/retraining", tag = "drift", security(("bearer_token" = [])),
    params(CycleQuery), responses((status = 200, body = Vec<Cycle>)))]
pub async fn list_cycles(
    State(s): State<ApiState>,
    Query(q): Query<CycleQuery>,
) -> Result<Json<Vec<Cycle>>> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(
        blocking(move || s.retrainer.cycles(q.model.as_deref(), limit)).await?,
    ))
}

/// One retraining cycle.
#[utoipa::path(get, path = "/api/v1/retraining/{id}", tag = "drift", security(("bearer_token" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Cycle), (status = 404, body = ErrorBody)))]
pub async fn get_cycle(State(s): State<ApiState>, Path(id): Path<i64>) -> Result<Json<Cycle>> {
    Ok(Json(blocking(move || s.retrainer.cycle(id)).await?))
}
