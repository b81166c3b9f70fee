//! The HTTP API: REST under `/api/v1`, its OpenAPI document at
//! `/api-docs/openapi.json`, a Swagger page at `/swagger-ui`, `/healthz`
//! and Prometheus `/metrics`.
//!
//! Everything under `/api/v1` needs a bearer token (a user's session or
//! API token, a service account's token, or the hub's bootstrap admin
//! token) with the permission that [`crate::auth::policy`] names for the
//! route; every change is written to the audit log. The exceptions are
//! `/api/v1/login`, `/api/v1/enroll`, which devices call with their
//! one-time token, and `/api/v1/device/...`, which devices call with their
//! credential.

mod access;
mod alerts;
mod control;
mod drift;
mod error;
mod fleet;
pub mod https;
mod models;
mod ops;
mod ota;
mod registry;
mod retrain;
mod telemetry;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use strata_store::TelemetryStore;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

pub use error::{ErrorBody, ErrorDetail};

use crate::audit::{Audit, Event};
use crate::auth::{Access, policy};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::Registry;

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
    /// Users, service accounts and tokens.
    pub access: Arc<Access>,
    /// The audit log.
    pub audit: Arc<Audit>,
    /// The platform CA.
    pub pki: Arc<crate::pki::Pki>,
    /// The MQTT address devices should connect to, as shown at enrollment.
    pub mqtt_port: u16,
    /// The MQTT TLS port, when there is a TLS listener.
    pub mqtt_tls_port: Option<u16>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Strata hub API", description = "Devices, sites and telemetry of a Strata hub."),
    paths(
        access::login,
        access::whoami,
        access::list_users,
        access::create_user,
        access::update_user,
        access::issue_token,
        access::list_tokens,
        access::revoke_token,
        access::list_audit,
        access::audit_head,
        access::verify_audit,
        registry::list_sites,
        registry::create_site,
        registry::list_devices,
        registry::create_device,
        registry::get_device,
        registry::update_device,
        registry::revoke_device,
        registry::reissue_token,
        registry::enroll,
        registry::renew_certificate,
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
        models::cancel_job,
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
        (name = "access", description = "Logins, users, service accounts, API tokens and the audit log"),
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
        // Any bearer token: the admin token, a login session or an API
        // token; what each may call depends on its permissions.
        components.add_security_scheme(
            "bearer_token",
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
    let authorized = Router::new()
        .route("/whoami", get(access::whoami))
        .route("/users", get(access::list_users).post(access::create_user))
        .route("/users/{name}", axum::routing::patch(access::update_user))
        .route(
            "/tokens",
            get(access::list_tokens).post(access::issue_token),
        )
        .route("/tokens/{id}", axum::routing::delete(access::revoke_token))
        .route("/audit", get(access::list_audit))
        .route("/audit/head", get(access::audit_head))
        .route("/audit/verify", get(access::verify_audit))
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
        .route("/jobs/{id}/cancel", post(models::cancel_job))
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
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    let api = Router::new()
        .route("/login", post(access::login))
        .route("/enroll", post(registry::enroll))
        .route("/device/certificate", post(registry::renew_certificate))
        .route("/device/artifacts/{sha256}", get(models::device_artifact))
        .merge(authorized);
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .merge(crate::dashboard::router())
        .merge(SwaggerUi::new("/swagger-ui").url("/api-docs/openapi.json", openapi()))
        .with_state(state)
}

/// The name an acknowledgement or approval is recorded under: the
/// caller's, except that the shared bootstrap admin token (not a person)
/// may name the person acting.
pub(crate) fn acting_as(p: &crate::auth::Principal, named: Option<&str>) -> String {
    match named.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) if p.name == crate::auth::BOOTSTRAP_ADMIN && p.token_id.is_none() => n.to_owned(),
        _ => p.name.clone(),
    }
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

/// Authenticates the bearer token, checks the route's rule, and audits
/// refusals and every change.
async fn authorize(
    State(state): State<ApiState>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let template = matched
        .as_ref()
        .map(|m| m.as_str().trim_start_matches("/api/v1").to_owned())
        .unwrap_or_default();
    let Some(rule) = policy::lookup(&method, &template) else {
        state.metrics.api_forbidden.fetch_add(1, Relaxed);
        let refusal = Error::Forbidden(format!(
            "{method} {template} has no access rule, so nobody may call it"
        ));
        return refuse(request, refusal).await;
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let checked = match presented {
        // A token the cache does not know may be a moment old, from
        // another replica: looked for in the store, off the runtime.
        Some(t) if !state.access.knows(t) => {
            let (access, token) = (state.access.clone(), t.to_owned());
            let (checked, reloaded) =
                tokio::task::spawn_blocking(move || access.authenticate_caught_up(&token))
                    .await
                    .unwrap_or_else(|e| {
                        let e = Error::Unavailable(format!("token check failed: {e}"));
                        (Err(e), false)
                    });
            if reloaded {
                state.metrics.shared_reloads.fetch_add(1, Relaxed);
            }
            Some(checked)
        }
        Some(t) => Some(state.access.authenticate(t)),
        None => None,
    };
    let principal = match checked {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            state.metrics.api_unauthorized.fetch_add(1, Relaxed);
            return refuse(request, e).await;
        }
        None => {
            state.metrics.api_unauthorized.fetch_add(1, Relaxed);
            let refusal = Error::Unauthorized(
                "this route needs `Authorization: Bearer <token>`: log in at /api/v1/login, use an API token, or the hub's admin.token from its data directory".into(),
            );
            return refuse(request, refusal).await;
        }
    };
    let target = request.uri().path().to_owned();
    let (actor, token_id) = (principal.name.clone(), principal.token_id.clone());
    let event = move |outcome: String| {
        let mut e = Event::ok(actor.clone(), rule.action, target.clone()).outcome(outcome);
        if let Some(id) = &token_id {
            e = e.detail(serde_json::json!({ "token": id }));
        }
        e
    };
    if let Err(refusal) = principal.require(rule.permission) {
        state.metrics.api_forbidden.fetch_add(1, Relaxed);
        record(&state, event("denied".into())).await;
        return refuse(request, refusal).await;
    }
    request.extensions_mut().insert(principal.clone());
    if method == "GET" {
        return next.run(request).await;
    }
    // A change and its entry run in a task of their own: the server drops
    // this future when the client goes away mid-request (a timeout, a
    // closed socket), while the change's blocking work carries on, and
    // the entry must not be dropped with it.
    let entry = tokio::spawn(async move {
        let response = next.run(request).await;
        let status = response.status();
        let outcome = if status.is_success() {
            "ok".to_owned()
        } else {
            status.as_u16().to_string()
        };
        record(&state, event(outcome)).await;
        response
    });
    entry
        .await
        .unwrap_or_else(|e| Error::Unavailable(format!("request task failed: {e}")).into_response())
}

/// Answers a refused request. A small body is read first, so the client's
/// connection stays usable (a server that answers before reading the body
/// must close the connection, and clients that reuse it then fail).
async fn refuse(request: Request, refusal: Error) -> Response {
    let _ = axum::body::to_bytes(request.into_body(), 64 << 10).await;
    refusal.into_response()
}

/// Appends to the audit log off the async threads; a failure is logged
/// there (the action has happened either way).
async fn record(state: &ApiState, event: Event) {
    let audit = state.audit.clone();
    let _ = tokio::task::spawn_blocking(move || audit.record(event)).await;
}
