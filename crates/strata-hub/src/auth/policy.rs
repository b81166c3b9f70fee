//! What every API route needs: one table, read by the API's authorization
//! layer on each request. A route that is not in the table is refused, so
//! adding a route without deciding who may call it fails closed (and the
//! route test fails).
//!
//! Changes (every method but GET) are written to the audit log under the
//! action named here.

use super::Permission::{self, Admin, Ml, Operate, Read};

/// One route's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePolicy {
    /// The HTTP method.
    pub method: &'static str,
    /// The path as the router writes it, under `/api/v1`.
    pub path: &'static str,
    /// What the caller needs.
    pub permission: Permission,
    /// The audit log's name for it.
    pub action: &'static str,
}

const fn r(
    method: &'static str,
    path: &'static str,
    permission: Permission,
    action: &'static str,
) -> RoutePolicy {
    RoutePolicy {
        method,
        path,
        permission,
        action,
    }
}

/// Every authenticated route. Handlers check more where the body decides
/// (a release's kind: [`super::release_permission`]; issuing a token for
/// someone else needs admin).
pub const ROUTES: &[RoutePolicy] = &[
    // Identity.
    r("GET", "/whoami", Read, "auth.whoami"),
    r("GET", "/tokens", Read, "token.list"),
    r("POST", "/tokens", Read, "token.issue"),
    r("DELETE", "/tokens/{id}", Read, "token.revoke"),
    r("GET", "/users", Admin, "user.list"),
    r("POST", "/users", Admin, "user.create"),
    r("PATCH", "/users/{name}", Admin, "user.update"),
    r("GET", "/audit", Admin, "audit.list"),
    r("GET", "/audit/head", Admin, "audit.head"),
    r("GET", "/audit/verify", Admin, "audit.verify"),
    // Registry.
    r("GET", "/sites", Read, "site.list"),
    r("POST", "/sites", Admin, "site.create"),
    r("GET", "/devices", Read, "device.list"),
    r("POST", "/devices", Admin, "device.create"),
    r("GET", "/devices/{id}", Read, "device.get"),
    r("PATCH", "/devices/{id}", Admin, "device.update"),
    r("POST", "/devices/{id}/revoke", Admin, "device.revoke"),
    r("POST", "/devices/{id}/token", Admin, "device.reissue_token"),
    r("GET", "/fleet", Read, "fleet.get"),
    // Telemetry.
    r("GET", "/devices/{id}/latest", Read, "telemetry.latest"),
    r(
        "GET",
        "/devices/{id}/signals/{signal}",
        Read,
        "telemetry.range",
    ),
    r("GET", "/series", Read, "telemetry.series"),
    // Models.
    r("GET", "/devices/{id}/twin", Read, "twin.get"),
    r("GET", "/models", Read, "model.list"),
    r("GET", "/models/{name}", Read, "model.get"),
    r("POST", "/models/{name}/versions", Ml, "model.upload"),
    r(
        "GET",
        "/models/{name}/versions/{version}",
        Read,
        "model.version",
    ),
    r(
        "GET",
        "/models/{name}/versions/{version}/artifact",
        Read,
        "model.artifact",
    ),
    r(
        "GET",
        "/models/{name}/versions/{version}/tree-stats",
        Read,
        "model.tree_stats",
    ),
    r(
        "GET",
        "/models/{name}/versions/{version}/profile",
        Read,
        "drift.profile",
    ),
    r(
        "POST",
        "/models/{name}/versions/{version}/profile",
        Ml,
        "drift.build_profile",
    ),
    r(
        "GET",
        "/models/{name}/versions/{version}/drift",
        Read,
        "drift.report",
    ),
    r("GET", "/models/{name}/accuracy", Read, "model.accuracy"),
    r("PUT", "/models/{name}/aliases/{alias}", Ml, "model.promote"),
    r(
        "DELETE",
        "/models/{name}/aliases/{alias}",
        Ml,
        "model.unalias",
    ),
    r("POST", "/models/{name}/deploy", Ml, "model.deploy"),
    r("POST", "/labels", Ml, "labels.add"),
    r("GET", "/kpis", Read, "kpi.get"),
    r("GET", "/retraining", Read, "retraining.list"),
    r("GET", "/retraining/{id}", Read, "retraining.get"),
    // Jobs.
    r("GET", "/jobs", Read, "job.list"),
    r("POST", "/jobs/train", Ml, "job.train"),
    r("POST", "/jobs/backtest", Ml, "job.backtest"),
    r("GET", "/jobs/{id}", Read, "job.get"),
    r("GET", "/jobs/{id}/log", Read, "job.log"),
    r("POST", "/jobs/{id}/cancel", Ml, "job.cancel"),
    // Alerts and workflows.
    r("GET", "/alerts", Read, "alert.list"),
    r("GET", "/alerts/{id}", Read, "alert.get"),
    r("POST", "/alerts/{id}/ack", Operate, "alert.acknowledge"),
    r("GET", "/alert-rules", Read, "alert.rules"),
    r("GET", "/webhooks/deliveries", Read, "webhook.deliveries"),
    r("GET", "/workflows", Read, "workflow.list"),
    r("GET", "/workflows/runs", Read, "workflow.runs"),
    r("GET", "/workflows/runs/{id}", Read, "workflow.run"),
    // Closed loop.
    r("GET", "/control/gates", Read, "control.gates"),
    r("GET", "/control/actions", Read, "control.actions"),
    r(
        "POST",
        "/control/actions/{device}/{action}/approve",
        Operate,
        "control.approve",
    ),
    // OTA: the handlers also check the release's kind.
    r("POST", "/artifacts", Ml, "artifact.upload"),
    r("GET", "/releases", Read, "release.list"),
    r("POST", "/releases", Ml, "release.submit"),
    r(
        "POST",
        "/releases/{kind}/{name}/{version}/assign",
        Ml,
        "release.assign",
    ),
    r("GET", "/ota/keys", Read, "ota.keys"),
    r("GET", "/campaigns", Read, "campaign.list"),
    r("POST", "/campaigns", Ml, "campaign.start"),
    r("GET", "/campaigns/{id}", Read, "campaign.get"),
    r("POST", "/campaigns/{id}/{action}", Ml, "campaign.act"),
];

/// The rule for `method` on `path` (a route template under `/api/v1`).
pub fn lookup(method: &str, path: &str) -> Option<&'static RoutePolicy> {
    ROUTES.iter().find(|p| p.method == method && p.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_has_one_rule_and_reads_need_only_read() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(
                !ROUTES[i + 1..]
                    .iter()
                    .any(|b| a.method == b.method && a.path == b.path),
                "{} {} twice",
                a.method,
                a.path
            );
            if a.method == "GET" && !a.path.starts_with("/users") && !a.path.starts_with("/audit") {
                assert_eq!(a.permission, Read, "{} {}", a.method, a.path);
            }
        }
        assert_eq!(
            lookup("POST", "/alerts/{id}/ack").unwrap().permission,
            Operate
        );
        assert!(lookup("DELETE", "/alerts/{id}/ack").is_none());
    }
}
