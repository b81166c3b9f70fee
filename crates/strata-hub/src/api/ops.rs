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
    // The alert thread holds its state's lock while it stores an alert,
    // and a slow store would park the runtime's workers (which serve MQTT
    // too) behind it: what takes such locks renders off the runtime.
    let s = state.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let mut text = String::with_capacity(4096);
        s.kpis.render(&mut text);
        s.alerts.render(&mut text);
        s.webhooks.render(&mut text);
        (text, s.retrainer.render())
    })
    .await;
    match rendered {
        Ok((more, cycles)) => {
            text.push_str(&more);
            match cycles {
                Ok(cycles) => text.push_str(&cycles),
                Err(e) => tracing::warn!("cannot count retraining cycles: {e}"),
            }
        }
        Err(e) => tracing::warn!("cannot render the alert, KPI and webhook metrics: {e}"),
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
