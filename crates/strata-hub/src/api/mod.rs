//! The HTTP API: REST under `/api/v1`, its OpenAPI document at
//! `/api-docs/openapi.json`, a Swagger page at `/swagger-ui`, `/healthz`
//! and Prometheus `/metrics`.
//!
//! Everything under `/api/v1` needs the admin token as a bearer token,
//! except `/api/v1/enroll`, which devices call with their one-time token,
//! and `/api/v1/device/...`, which devices call with their credential.

mod alerts;
mod control;
mod drift;
mod error;
mod fleet;
mod models;
mod ops;
mod ota;
mod registry;
mod retrain;
mod telemetry;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use strata_store::TelemetryStore;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

pub use error::{ErrorBody, ErrorDetail};

use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::secret;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The device registry.
    pub registry: Arc<Registry>,
    /// Telemetry storage.
    pub store: Arc<dyn TelemetryStore>,
    /// Hub counters.
    pub metrics: Arc<Metrics>,
    /// The broker, for its counters.
    pub broker: strata_broker::BrokerHandle,
    /// The model registry.
    pub models: Arc<crate::models::ModelRegistry>,
    /// The latest fleet KPIs.
    pub kpis: Arc<crate::kpi::KpiCache>,
    /// Late labels (ground truth).
    pub labels: Arc<dyn strata_store::LabelStore>,
    /// Drift profiles, sketches and reports.
    pub drift: Arc<crate::drift::Drift>,
    /// Deployments through device twins.
    pub deployer: Arc<crate::models::deploy::Deployer>,
    /// Training and backtest jobs.
    pub jobs: Arc<crate::models::jobs::JobRunner>,
    /// OTA releases.
    pub ota: Arc<crate::ota::Ota>,
    /// Rollout campaigns.
    pub campaigns: Arc<crate::ota::rollout::Campaigns>,
    /// The retraining loop's cycles.
    pub retrainer: Arc<crate::retrain::Retrainer>,
    /// Alerts and their rules.
    pub alerts: Arc<crate::alerts::Alerts>,
    /// Site phase gates and closed-loop action records.
    pub gates: Arc<crate::control::Gates>,
    /// Webhook deliveries.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Workflow runs.
    pub workflows: Arc<crate::workflows::Workflows>,
    /// SHA-256 of the admin token.
    pub admin_token_sha256: [u8; 32],
    /// The MQTT address devices should connect to, as shown at enrollment.
    pub mqtt_port: u16,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Strata hub API", description = "Devices, sites and telemetry of a Strata hub."),
    paths(
        registry::list_sites,
        registry::create_site,
        registry::list_devices,
        registry::create_device,
        registry::get_device,
        registry::update_device,
        registry::revoke_device,
        registry::reissue_token,
        registry::enroll,
        fleet::get_fleet,
        telemetry::list_series,
        telemetry::latest,
        telemetry::range,
        models::list_models,
        models::get_model,
        models::upload_version,
        models::get_version,
        models::get_artifact,
        models::get_tree_stats,
        drift::get_profile,
        drift::build_profile,
        drift::get_drift,
        drift::post_labels,
        drift::get_accuracy,
        drift::get_kpis,
        retrain::list_cycles,
        retrain::get_cycle,
        alerts::list_alerts,
        alerts::get_alert,
        alerts::acknowledge,
        alerts::list_rules,
        alerts::list_deliveries,
        alerts::list_workflows,
        alerts::list_runs,
        alerts::get_run,
        control::list_gates,
        control::list_actions,
        control::approve,
        models::set_alias,
        models::remove_alias,
        models::deploy,
        models::get_twin,
        models::submit_training,
        models::submit_backtest,
        models::list_jobs,
        models::get_job,
        models::get_job_log,
        models::device_artifact,
        ota::upload_artifact,
        ota::submit_release,
        ota::list_releases,
        ota::assign,
        ota::keys,
        ota::create_campaign,
        ota::list_campaigns,
        ota::get_campaign,
        ota::campaign_action,
        ops::healthz,
        ops::metrics,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "registry", description = "Sites, devices, enrollment and revocation"),
        (name = "telemetry", description = "Stored readings"),
        (name = "models", description = "Model registry, aliases and deployment"),
        (name = "jobs", description = "Training and backtest jobs"),
        (name = "drift", description = "Reference profiles, drift sketches and drift reports"),
        (name = "control", description = "Site phase gates, the closed-loop action record, approvals"),
        (name = "alerts", description = "Alerts, their rules and history, the webhook deliveries and workflow runs they cause"),
        (name = "ota", description = "Signed releases, the keys devices trust, and rollout campaigns"),
        (name = "operations", description = "Health and metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Largest ONNX upload accepted.
const MAX_MODEL_BYTES: usize = 256 << 20;

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    let admin = Router::new()
        .route(
            "/sites",
            get(registry::list_sites).post(registry::create_site),
        )
        .route(
            "/devices",
            get(registry::list_devices).post(registry::create_device),
        )
        .route(
            "/devices/{id}",
            get(registry::get_device).patch(registry::update_device),
        )
        .route("/fleet", get(fleet::get_fleet))
        .route("/devices/{id}/revoke", post(registry::revoke_device))
        .route("/devices/{id}/token", post(registry::reissue_token))
        .route("/devices/{id}/latest", get(telemetry::latest))
        .route("/devices/{id}/signals/{signal}", get(telemetry::range))
        .route("/series", get(telemetry::list_series))
        .route("/devices/{id}/twin", get(models::get_twin))
        .route("/models", get(models::list_models))
        .route("/models/{name}", get(models::get_model))
        .route(
            "/models/{name}/versions",
            post(models::upload_version).layer(DefaultBodyLimit::max(MAX_MODEL_BYTES)),
        )
        .route(
            "/models/{name}/versions/{version}",
            get(models::get_version),
        )
        .route(
            "/models/{name}/versions/{version}/artifact",
            get(models::get_artifact),
        )
        .route(
            "/models/{name}/versions/{version}/tree-stats",
            get(models::get_tree_stats),
        )
        .route(
            "/models/{name}/versions/{version}/profile",
            get(drift::get_profile).post(drift::build_profile),
        )
        .route(
            "/models/{name}/versions/{version}/drift",
            get(drift::get_drift),
        )
        .route("/models/{name}/accuracy", get(drift::get_accuracy))
        .route("/labels", post(drift::post_labels))
        .route("/kpis", get(drift::get_kpis))
        .route("/retraining", get(retrain::list_cycles))
        .route("/retraining/{id}", get(retrain::get_cycle))
        .route("/alerts", get(alerts::list_alerts))
        .route("/alerts/{id}", get(alerts::get_alert))
        .route("/alerts/{id}/ack", post(alerts::acknowledge))
        .route("/alert-rules", get(alerts::list_rules))
        .route("/webhooks/deliveries", get(alerts::list_deliveries))
        .route("/workflows", get(alerts::list_workflows))
        .route("/workflows/runs", get(alerts::list_runs))
        .route("/workflows/runs/{id}", get(alerts::get_run))
        .route("/control/gates", get(control::list_gates))
        .route("/control/actions", get(control::list_actions))
        .route(
            "/control/actions/{device}/{action}/approve",
            post(control::approve),
        )
        .route(
            "/models/{name}/aliases/{alias}",
            put(models::set_alias).delete(models::remove_alias),
        )
        .route("/models/{name}/deploy", post(models::deploy))
        .route("/jobs", get(models::list_jobs))
        .route("/jobs/train", post(models::submit_training))
        .route("/jobs/backtest", post(models::submit_backtest))
        .route("/jobs/{id}", get(models::get_job))
        .route("/jobs/{id}/log", get(models::get_job_log))
        .route(
            "/artifacts",
            post(ota::upload_artifact).layer(DefaultBodyLimit::max(MAX_MODEL_BYTES)),
        )
        .route(
            "/releases",
            get(ota::list_releases).post(ota::submit_release),
        )
        .route(
            "/releases/{kind}/{name}/{version}/assign",
            post(ota::assign),
        )
        .route("/ota/keys", get(ota::keys))
        .route(
            "/campaigns",
            get(ota::list_campaigns).post(ota::create_campaign),
        )
        .route("/campaigns/{id}", get(ota::get_campaign))
        .route("/campaigns/{id}/{action}", post(ota::campaign_action))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let api = Router::new()
        .route("/enroll", post(registry::enroll))
        .route("/device/artifacts/{sha256}", get(models::device_artifact))
        .merge(admin);
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .merge(crate::dashboard::router())
        .merge(SwaggerUi::new("/swagger-ui").url("/api-docs/openapi.json", openapi()))
        .with_state(state)
}

/// Runs storage work off the async threads, so a slow commit never stalls
/// the tasks that serve MQTT connections.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("request task failed: {e}")))?
}

async fn require_admin(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if secret::same(&secret::hash(token.trim().as_bytes()), &state.admin_token_sha256) => {
            next.run(request).await
        }
        Some(_) => Error::Unauthorized("the bearer token is not valid".into()).into_response(),
        None => Error::Unauthorized(
            "this route needs `Authorization: Bearer <admin token>`; the hub wrote the token to admin.token in its data directory".into(),
        )
        .into_response(),
    }
}
