//! Liveness and Prometheus metrics.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::ApiState;

/// Liveness: the hub answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The hub is up", body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Hub and broker counters in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", body = String)))]
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let mut text = String::with_capacity(4096);
    state.metrics.render(&mut text);
    crate::broker_metrics(&state.broker, &mut text);
    state.kpis.render(&mut text);
    state.alerts.render(&mut text);
    state.webhooks.render(&mut text);
    let retrainer = state.retrainer.clone();
    match tokio::task::spawn_blocking(move || retrainer.render()).await {
        Ok(Ok(cycles)) => text.push_str(&cycles),
        Ok(Err(e)) => tracing::warn!("cannot count retraining cycles: {e}"),
        Err(e) => tracing::warn!("cannot count retraining cycles: {e}"),
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
