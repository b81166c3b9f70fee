//! Logins, users, service accounts, API tokens and the audit log over HTTP.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use strata_store::{AuditCheckpoint, AuditEntry};
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, ErrorBody, blocking};
use crate::audit::{Anchor, Event, Report};
use crate::auth::{CreateUser, IssuedToken, Principal, TokenInfo, UpdateUser, UserInfo};
use crate::error::{Error, Result};

/// A login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

/// Trades a user name and password for a session token (the hub's
/// `auth.session_ttl_s`, 12 h by default). Every attempt is audited but
/// those refused while a wait lasts after the first (they are counted in
/// `strata_logins_throttled_total`). After
/// `auth.login_free_attempts` wrong passwords in a row for a name (5 by
/// default), its logins get 429 with `Retry-After` until a wait of 1 s,
/// doubling after each further failure up to `auth.login_max_wait_s`, is
/// over; the password is not checked meanwhile.
#[utoipa::path(post, path = "/api/v1/login", tag = "access", request_body = Login,
    responses((status = 201, body = IssuedToken), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn login(
    State(s): State<ApiState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<super::https::Peer>,
    Json(req): Json<Login>,
) -> Result<(StatusCode, Json<IssuedToken>)> {
    // A name no account can have is refused before it is throttled,
    // logged or audited: anyone may call this route, and a name may be
    // as long as the body.
    if crate::auth::check_name(&req.user).is_err() {
        s.metrics
            .login_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(Error::Unauthorized("wrong user name or password".into()));
    }
    let user = req.user.clone();
    let source = Some(peer.0.ip());
    let outcome = blocking(move || {
        let result = s.access.login(&req.user, &req.password, source);
        let event = Event::ok(req.user.clone(), "auth.login", req.user.clone());
        let event = match &result {
            Ok(t) => Some(event.detail(serde_json::json!({"token": t.info.id}))),
            Err(Error::TooManyRequests { first: true, .. }) => Some(event.outcome("throttled")),
            // Attempts while a wait lasts: the first is on the record.
            Err(Error::TooManyRequests { first: false, .. }) => None,
            Err(_) => Some(event.outcome("denied")),
        };
        if let Some(event) = event {
            s.audit.record(event)?;
        }
        let counter = match &result {
            Ok(_) => None,
            Err(Error::TooManyRequests { .. }) => Some(&s.metrics.logins_throttled),
            Err(_) => Some(&s.metrics.login_failures),
        };
        if let Some(c) = counter {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    })
    .await;
    if outcome.is_err() {
        tracing::info!(user, "refused a login");
    }
    Ok((StatusCode::CREATED, Json(outcome?)))
}

/// Who the bearer token belongs to and what it may do.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "access", security(("bearer_token" = [])),
    responses((status = 200, body = Principal), (status = 401, body = ErrorBody)))]
pub async fn whoami(Extension(p): Extension<Principal>) -> Json<Principal> {
    Json(p)
}

/// Every user and service account.
#[utoipa::path(get, path = "/api/v1/users", tag = "access", security(("bearer_token" = [])),
    responses((status = 200, body = [UserInfo]), (status = 403, body = ErrorBody)))]
pub async fn list_users(State(s): State<ApiState>) -> Result<Json<Vec<UserInfo>>> {
    Ok(Json(s.access.users()?))
}

/// Creates a user (with a password) or a service account (without).
#[utoipa::path(post, path = "/api/v1/users", tag = "access", security(("bearer_token" = [])),
    request_body = CreateUser,
    responses((status = 201, body = UserInfo), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_user(
    State(s): State<ApiState>,
    Json(req): Json<CreateUser>,
) -> Result<(StatusCode, Json<UserInfo>)> {
    let user = blocking(move || s.access.create_user(req)).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Changes a user's role or password, or disables it (its tokens stop at once).
#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "access", security(("bearer_token" = [])),
    params(("name" = String, Path)), request_body = UpdateUser,
    responses((status = 200, body = UserInfo), (status = 404, body = ErrorBody)))]
pub async fn update_user(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Json(req): Json<UpdateUser>,
) -> Result<Json<UserInfo>> {
    Ok(Json(
        blocking(move || s.access.update_user(&name, req)).await?,
    ))
}

/// A token to issue.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    /// Whom it acts as; yourself when absent (only an admin may name another).
    #[serde(default)]
    pub user: Option<String>,
    /// What it is for.
    #[serde(default)]
    pub label: String,
    /// `read`, `operate`, `ml`, `admin`: within the user's role. All of the
    /// role's when absent.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Lifetime in seconds (default 90 days, at most a year).
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// Issues an API token. The token is in this answer only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "access", security(("bearer_token" = [])),
    request_body = IssueToken,
    responses((status = 201, body = IssuedToken), (status = 403, body = ErrorBody)))]
pub async fn issue_token(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Json(req): Json<IssueToken>,
) -> Result<(StatusCode, Json<IssuedToken>)> {
    let token = blocking(move || {
        s.access.issue_token(
            &p,
            req.user.as_deref(),
            &req.label,
            req.scopes.as_deref(),
            req.ttl_s,
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// Tokens: your own, or everyone's for an admin (never the tokens themselves).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "access", security(("bearer_token" = [])),
    responses((status = 200, body = [TokenInfo])))]
pub async fn list_tokens(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
) -> Json<Vec<TokenInfo>> {
    let all = p.require(crate::auth::Permission::Admin).is_ok();
    Json(s.access.tokens((!all).then_some(p.name.as_str())))
}

/// Revokes a token (your own, or any for an admin); it stops working at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "access", security(("bearer_token" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = TokenInfo), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>> {
    Ok(Json(
        blocking(move || s.access.revoke_token(&p, &id)).await?,
    ))
}

/// Filter of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Only this actor's entries.
    pub actor: Option<String>,
    /// Only this action's entries (e.g. `device.revoke`).
    pub action: Option<String>,
    /// At most this many, newest first (default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "access", security(("bearer_token" = [])),
    params(AuditQuery), responses((status = 200, body = [AuditEntry])))]
pub async fn list_audit(
    State(s): State<ApiState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(
        blocking(move || {
            s.audit
                .recent(q.actor.as_deref(), q.action.as_deref(), limit)
        })
        .await?,
    ))
}

/// The latest signed checkpoint: keep a copy elsewhere and pass it to
/// `strata audit verify --anchor seq:sha256` later.
#[utoipa::path(get, path = "/api/v1/audit/head", tag = "access", security(("bearer_token" = [])),
    responses((status = 200, body = AuditCheckpoint), (status = 404, body = ErrorBody)))]
pub async fn audit_head(State(s): State<ApiState>) -> Result<Json<AuditCheckpoint>> {
    blocking(move || s.audit.head())
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound("the audit log is empty".into()))
}

/// Where verification starts from.
#[derive(Debug, Deserialize, IntoParams)]
pub struct VerifyQuery {
    /// A checkpoint kept elsewhere, `seq:sha256`, that the log must still contain.
    pub anchor: Option<String>,
}

/// Recomputes the whole chain and checks every checkpoint's signature.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "access", security(("bearer_token" = [])),
    params(VerifyQuery), responses((status = 200, body = Report)))]
pub async fn verify_audit(
    State(s): State<ApiState>,
    Query(q): Query<VerifyQuery>,
) -> Result<Json<Report>> {
    let anchor: Option<Anchor> = q
        .anchor
        .map(|a| a.parse().map_err(Error::BadRequest))
        .transpose()?;
    Ok(Json(
        blocking(move || s.audit.verify(anchor.as_ref())).await?,
    ))
}
