//! People and services against a real hub: every API route refuses the
//! roles that may not use it, sessions and tokens expire and are revoked,
//! and every change lands in an audit log that `strata audit verify`
//! checks, catching any edit.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::time::Duration;

use common::{HubProcess, strata};
use serde_json::{Value, json};

const ROLES: [(&str, char); 4] = [
    ("viewer", 'V'),
    ("operator", 'O'),
    ("ml_engineer", 'M'),
    ("admin", 'A'),
];

/// Who may call each route, written out here rather than read from the
/// hub: V viewer, O operator, M ML engineer, A admin.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/whoami", "VOMA"),
    ("GET", "/api/v1/tokens", "VOMA"),
    ("POST", "/api/v1/tokens", "VOMA"),
    ("DELETE", "/api/v1/tokens/{id}", "VOMA"),
    ("GET", "/api/v1/users", "A"),
    ("POST", "/api/v1/users", "A"),
    ("PATCH", "/api/v1/users/{name}", "A"),
    ("GET", "/api/v1/audit", "A"),
    ("GET", "/api/v1/audit/head", "A"),
    ("GET", "/api/v1/audit/verify", "A"),
    ("GET", "/api/v1/sites", "VOMA"),
    ("POST", "/api/v1/sites", "A"),
    ("GET", "/api/v1/devices", "VOMA"),
    ("POST", "/api/v1/devices", "A"),
    ("GET", "/api/v1/devices/{id}", "VOMA"),
    ("PATCH", "/api/v1/devices/{id}", "A"),
    ("POST", "/api/v1/devices/{id}/revoke", "A"),
    ("POST", "/api/v1/devices/{id}/token", "A"),
    ("GET", "/api/v1/fleet", "VOMA"),
    ("GET", "/api/v1/devices/{id}/latest", "VOMA"),
    ("GET", "/api/v1/devices/{id}/signals/{signal}", "VOMA"),
    ("GET", "/api/v1/series", "VOMA"),
    ("GET", "/api/v1/devices/{id}/twin", "VOMA"),
    ("GET", "/api/v1/models", "VOMA"),
    ("GET", "/api/v1/models/{name}", "VOMA"),
    ("POST", "/api/v1/models/{name}/versions", "MA"),
    ("GET", "/api/v1/models/{name}/versions/{version}", "VOMA"),
    (
        "GET",
        "/api/v1/models/{name}/versions/{version}/artifact",
        "VOMA",
    ),
    (
        "GET",
        "/api/v1/models/{name}/versions/{version}/tree-stats",
        "VOMA",
    ),
    (
        "GET",
        "/api/v1/models/{name}/versions/{version}/profile",
        "VOMA",
    ),
    (
        "POST",
        "/api/v1/models/{name}/versions/{version}/profile",
        "MA",
    ),
    (
        "GET",
        "/api/v1/models/{name}/versions/{version}/drift",
        "VOMA",
    ),
    ("GET", "/api/v1/models/{name}/accuracy", "VOMA"),
    ("PUT", "/api/v1/models/{name}/aliases/{alias}", "MA"),
    ("DELETE", "/api/v1/models/{name}/aliases/{alias}", "MA"),
    ("POST", "/api/v1/models/{name}/deploy", "MA"),
    ("POST", "/api/v1/labels", "MA"),
    ("GET", "/api/v1/kpis", "VOMA"),
    ("GET", "/api/v1/retraining", "VOMA"),
    ("GET", "/api/v1/retraining/{id}", "VOMA"),
    ("GET", "/api/v1/jobs", "VOMA"),
    ("POST", "/api/v1/jobs/train", "MA"),
    ("POST", "/api/v1/jobs/backtest", "MA"),
    ("GET", "/api/v1/jobs/{id}", "VOMA"),
    ("GET", "/api/v1/jobs/{id}/log", "VOMA"),
    ("POST", "/api/v1/jobs/{id}/cancel", "MA"),
    ("GET", "/api/v1/alerts", "VOMA"),
    ("GET", "/api/v1/alerts/{id}", "VOMA"),
    ("POST", "/api/v1/alerts/{id}/ack", "OA"),
    ("GET", "/api/v1/alert-rules", "VOMA"),
    ("GET", "/api/v1/webhooks/deliveries", "VOMA"),
    ("GET", "/api/v1/workflows", "VOMA"),
    ("GET", "/api/v1/workflows/runs", "VOMA"),
    ("GET", "/api/v1/workflows/runs/{id}", "VOMA"),
    ("GET", "/api/v1/control/gates", "VOMA"),
    ("GET", "/api/v1/control/actions", "VOMA"),
    (
        "POST",
        "/api/v1/control/actions/{device}/{action}/approve",
        "OA",
    ),
    ("POST", "/api/v1/artifacts", "MA"),
    ("GET", "/api/v1/releases", "VOMA"),
    ("POST", "/api/v1/releases", "MA"),
    (
        "POST",
        "/api/v1/releases/{kind}/{name}/{version}/assign",
        "MA",
    ),
    ("GET", "/api/v1/ota/keys", "VOMA"),
    ("GET", "/api/v1/campaigns", "VOMA"),
    ("POST", "/api/v1/campaigns", "MA"),
    ("GET", "/api/v1/campaigns/{id}", "VOMA"),
    ("POST", "/api/v1/campaigns/{id}/{action}", "MA"),
];

/// Routes that are not for people: a device's enrollment, artifact
/// download and certificate renewal (HTTP Basic with its credential), and
/// the login itself.
const NOT_BEARER: &[&str] = &[
    "/api/v1/login",
    "/api/v1/enroll",
    "/api/v1/device/artifacts/{sha256}",
    "/api/v1/device/certificate",
];

/// Makes one user per role, logs each in; returns (role letter, session token).
fn sessions(hub: &HubProcess) -> Vec<(char, String)> {
    ROLES
        .iter()
        .map(|(role, letter)| {
            let name = format!("{role}-user");
            let password = format!("{role} correct horse battery");
            let (status, body) = hub.api(
                "POST",
                "/api/v1/users",
                Some(json!({"name": name, "role": role, "password": password})),
            );
            assert_eq!(status, 201, "{body}");
            let (status, session) = hub.api_anonymous(
                "POST",
                "/api/v1/login",
                Some(json!({"user": name, "password": password})),
            );
            assert_eq!(status, 201, "{session}");
            (*letter, session["token"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn each_role_is_denied_exactly_what_it_may_not_do_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let sessions = sessions(&hub);

    // The table covers every route the hub documents, and nothing else.
    let (_, doc) = hub.api_anonymous("GET", "/api-docs/openapi.json", None);
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if path.starts_with("/api/v1/") && !NOT_BEARER.contains(&path.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let expected: BTreeSet<_> = EXPECTED
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented.difference(&expected).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes the test does not classify"
    );
    assert_eq!(
        expected.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "classified routes the hub does not document"
    );

    let mut checked = 0;
    for (method, template, allowed) in EXPECTED {
        let path = fill(template);
        for (letter, token) in &sessions {
            let (status, body) = hub.api_as(token, method, &path, Some(json!({})));
            if allowed.contains(*letter) {
                assert!(
                    status != 401 && status != 403,
                    "{letter} was refused {method} {path}: {status} {body}"
                );
            } else {
                assert_eq!(
                    status, 403,
                    "{letter} was not refused {method} {path}: {body}"
                );
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("permission")
                );
            }
            checked += 1;
        }
        // And nobody gets in without a token.
        let (status, _) = hub.api_anonymous(method, &path, Some(json!({})));
        assert_eq!(status, 401, "{method} {path} without a token");
    }
    assert_eq!(checked, EXPECTED.len() * ROLES.len());

    // The refusals are counted and audited.
    assert!(hub.metric("strata_api_forbidden_total") > 50.0);
    let (_, denied) = hub.api("GET", "/api/v1/audit?limit=10000", None);
    let denied: Vec<&Value> = denied
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    assert!(
        denied
            .iter()
            .any(|e| e["actor"] == "viewer-user" && e["action"] == "device.revoke")
    );
    hub.kill();
}

/// A concrete path for a route template: whatever the values, the route
/// (and so its rule) is the same.
fn fill(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg {
            "{id}" | "{version}" => "1",
            "{kind}" => "model",
            "{action}" => "pause",
            s if s.starts_with('{') => "x",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn model_rollouts_are_the_ml_engineers_but_config_rollouts_are_the_admins() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let sessions = sessions(&hub);
    let ml = &sessions.iter().find(|(l, _)| *l == 'M').unwrap().1;
    let campaign = |kind: &str| json!({"release": {"kind": kind, "name": "line", "version": 1}});
    // A model campaign passes the permission check (and fails later: no such release).
    let (status, body) = hub.api_as(ml, "POST", "/api/v1/campaigns", Some(campaign("model")));
    assert!(status != 403 && status != 401, "{status} {body}");
    for kind in ["config", "bundle"] {
        let (status, body) = hub.api_as(ml, "POST", "/api/v1/campaigns", Some(campaign(kind)));
        assert_eq!(status, 403, "{kind}: {body}");
        let path = format!("/api/v1/releases/{kind}/line/1/assign");
        let (status, body) = hub.api_as(ml, "POST", &path, Some(json!({})));
        assert_eq!(status, 403, "{kind}: {body}");
    }
    // Training with a built-in trainer is theirs; with an external one (a
    // command the hub runs as itself), an administrator's.
    let dataset = json!({"devices": ["m-1"], "pipeline": common::pipeline(common::MACHINE_PIPELINE),
        "vector": "bearing", "target": "label.rul_h"});
    let builtin = json!({"model": "rul", "trainer": {"type": "gbt_regressor"}, "dataset": dataset});
    let (status, body) = hub.api_as(ml, "POST", "/api/v1/jobs/train", Some(builtin));
    assert_eq!(status, 202, "{body}");
    let external = json!({"model": "rul", "trainer": {"type": "external",
        "command": ["sh", "-c", "cat ../../admin.token"]}, "dataset": dataset});
    let (status, body) = hub.api_as(ml, "POST", "/api/v1/jobs/train", Some(external.clone()));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("admin"),
        "{body}"
    );
    let (_, jobs) = hub.api("GET", "/api/v1/jobs", None);
    assert_eq!(
        jobs.as_array().unwrap().len(),
        1,
        "only the built-in one queued: {jobs}"
    );
    // Signed config release submitted by the ML engineer: refused on its kind.
    let envelope = json!({"payload": json!({"kind": "config", "name": "line", "version": 1}).to_string(),
        "key_id": "k", "signature": "00"});
    let (status, body) = hub.api_as(ml, "POST", "/api/v1/releases", Some(envelope));
    assert_eq!(status, 403, "{body}");
    hub.kill();
}

#[test]
fn expired_and_revoked_tokens_and_disabled_accounts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let url = hub_url(&hub);
    let run = |extra: &[&str]| {
        let mut args: Vec<&OsStr> = extra.iter().map(OsStr::new).collect();
        args.extend([OsStr::new("--hub"), OsStr::new(&url)]);
        args.extend([OsStr::new("--data-dir"), dir.path().as_os_str()]);
        serde_json::from_str::<Value>(&strata(&args)).unwrap()
    };
    run(&["user", "add", "etl", "--role", "viewer", "--service"]);
    let short = run(&[
        "token", "issue", "--user", "etl", "--label", "short", "--ttl", "1s",
    ]);
    let long = run(&[
        "token", "issue", "--user", "etl", "--label", "long", "--scope", "read",
    ]);
    let (short, long) = (
        short["token"].as_str().unwrap().to_owned(),
        long["token"].as_str().unwrap().to_owned(),
    );
    let (status, me) = hub.api_as(&short, "GET", "/api/v1/whoami", None);
    assert_eq!((status, me["name"].as_str()), (200, Some("etl")));
    std::thread::sleep(Duration::from_millis(1200));
    let (status, body) = hub.api_as(&short, "GET", "/api/v1/fleet", None);
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );

    // A service account cannot mint itself more than it has.
    let (status, _) = hub.api_as(
        &long,
        "POST",
        "/api/v1/tokens",
        Some(json!({"scopes": ["admin"]})),
    );
    assert_eq!(status, 403);

    // Revoked: refused on the next request.
    assert_eq!(hub.api_as(&long, "GET", "/api/v1/fleet", None).0, 200);
    let id = hub.api_as(&long, "GET", "/api/v1/tokens", None).1[1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run(&["token", "revoke", &id]);
    let (status, body) = hub.api_as(&long, "GET", "/api/v1/fleet", None);
    assert_eq!(status, 401, "{body}");

    // Disabled: a user's session stops at once, and it cannot log in again.
    let (status, _) = hub.api(
        "POST",
        "/api/v1/users",
        Some(json!({"name": "olga", "role": "operator", "password": "olga's long password"})),
    );
    assert_eq!(status, 201);
    let login = json!({"user": "olga", "password": "olga's long password"});
    let session = hub
        .api_anonymous("POST", "/api/v1/login", Some(login.clone()))
        .1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(hub.api_as(&session, "GET", "/api/v1/alerts", None).0, 200);
    run(&["user", "set", "olga", "--disable"]);
    assert_eq!(hub.api_as(&session, "GET", "/api/v1/alerts", None).0, 401);
    assert_eq!(
        hub.api_anonymous("POST", "/api/v1/login", Some(login)).0,
        401
    );
    let wrong = json!({"user": "olga", "password": "not olga's password"});
    assert_eq!(
        hub.api_anonymous("POST", "/api/v1/login", Some(wrong)).0,
        401
    );
    assert!(hub.metric("strata_login_failures_total") >= 2.0);
    hub.kill();
}

#[test]
fn wrong_passwords_in_a_row_get_429_with_retry_after_then_the_wait_ends() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let (status, _) = hub.api(
        "POST",
        "/api/v1/users",
        Some(json!({"name": "olga", "role": "viewer", "password": "olga's long password"})),
    );
    assert_eq!(status, 201);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let login = |password: &str| {
        let mut r = agent
            .post(format!("http://{}/api/v1/login", hub.http))
            .send_json(json!({"user": "olga", "password": password}))
            .unwrap();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = r.body_mut().read_json().unwrap();
        (r.status().as_u16(), retry_after, body)
    };
    // The hub's default: five free attempts.
    for _ in 0..5 {
        assert_eq!(login("a wrong guess").0, 401);
    }
    // Now even the right password waits, unchecked.
    let (status, retry_after, body) = login("olga's long password");
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "too_many_requests");
    assert_eq!(body["error"]["retryable"], true);
    assert_eq!(hub.metric("strata_logins_throttled_total"), 1.0);
    assert_eq!(hub.metric("strata_login_failures_total"), 5.0);
    // More attempts while the wait lasts are counted, not audited one by
    // one; nor is a name no account can have (it may be megabytes long).
    assert_eq!(login("another guess").0, 429);
    assert_eq!(hub.metric("strata_logins_throttled_total"), 2.0);
    let (status, _) = hub.api_anonymous(
        "POST",
        "/api/v1/login",
        Some(json!({"user": "x".repeat(100_000), "password": "guess"})),
    );
    assert_eq!(status, 401);
    assert_eq!(hub.metric("strata_login_failures_total"), 6.0);

    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(login("olga's long password").0, 201);
    // The right password cleared the count.
    assert_eq!(login("a wrong guess").0, 401);
    assert_eq!(login("olga's long password").0, 201);

    let (_, log) = hub.api("GET", "/api/v1/audit", None);
    let outcomes: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|e| e["action"] == "auth.login")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "denied",
            "denied",
            "denied",
            "denied",
            "denied",
            "throttled",
            "ok",
            "denied",
            "ok"
        ]
    );
    hub.kill();
}

#[test]
fn failed_enrollments_from_one_address_are_throttled_and_audited_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let enroll = |device: &str, token: &str| {
        hub.api_anonymous(
            "POST",
            "/api/v1/enroll",
            Some(json!({"device": device, "token": token})),
        )
    };
    // The hub's default: 30 free failures per address.
    for i in 0..30 {
        let (status, body) = enroll(&format!("ghost-{i}"), "stet_guess");
        assert_eq!(status, 401, "{body}");
    }
    // Then a wait of 1 s: refused unchecked, counted, audited once.
    for i in 30..33 {
        let (status, body) = enroll(&format!("ghost-{i}"), "stet_guess");
        assert_eq!(status, 429, "{body}");
    }
    assert_eq!(hub.metric("strata_enrollments_throttled_total"), 3.0);
    let (_, log) = hub.api("GET", "/api/v1/audit?limit=1000", None);
    let outcomes: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "device.enroll")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.len(), 31, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == "throttled").count(), 1);

    // A request the hub cannot even read is answered in plain text: the
    // CLI shows that text, not "a body that is not JSON".
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["user", "add", "bob", "--role", "superuser"])
        .env("STRATA_NEW_PASSWORD", "bob's long password")
        .args(["--hub", &format!("http://{}", hub.http)])
        .arg("--data-dir")
        .arg(&hub.data_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("unknown variant"), "{stderr}");
    hub.kill();
}

fn hub_url(hub: &HubProcess) -> String {
    format!("http://{}", hub.http)
}

#[test]
fn every_change_is_audited_and_strata_audit_verify_catches_an_edit() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let url = hub_url(&hub);
    let cli = |args: &[&str]| {
        let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        all.extend([OsStr::new("--hub"), OsStr::new(&url)]);
        all.extend([OsStr::new("--data-dir"), dir.path().as_os_str()]);
        strata(&all)
    };
    hub.api(
        "POST",
        "/api/v1/sites",
        Some(json!({"id": "plant", "region": "eu"})),
    );
    hub.api(
        "POST",
        "/api/v1/devices",
        Some(json!({"id": "press-1", "site": "plant"})),
    );
    hub.api("POST", "/api/v1/devices/press-1/revoke", None);
    let (status, _) = hub.api_anonymous(
        "POST",
        "/api/v1/login",
        Some(json!({"user": "mallory", "password": "guessing a password"})),
    );
    assert_eq!(status, 401);

    let (_, log) = hub.api("GET", "/api/v1/audit", None);
    let actions: Vec<(&str, &str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("admin", "site.create", "ok"),
            ("admin", "device.create", "ok"),
            ("admin", "device.revoke", "ok"),
            ("mallory", "auth.login", "denied"),
        ]
    );

    // The head, kept elsewhere, anchors a later check.
    let head = cli(&["audit", "head"]);
    let head = head.trim();
    assert!(head.starts_with("4:"), "{head}");
    let verify = |extra: &[&str]| {
        let mut args = vec![
            OsStr::new("audit"),
            OsStr::new("verify"),
            OsStr::new("--data-dir"),
            dir.path().as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = verify(&["--anchor", head]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("4 entries") && text.contains("intact"),
        "{text}"
    );

    // Someone with the database rewrites who revoked the press.
    let db = rusqlite::Connection::open(dir.path().join("strata.db")).unwrap();
    db.execute(
        "UPDATE audit_log SET actor = 'operator-bob' WHERE seq = 3",
        [],
    )
    .unwrap();
    let out = verify(&[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("problem: entry 3 (device.revoke by operator-bob) does not match its hash"),
        "{text}"
    );
    // The hub's own check says the same.
    let (_, report) = hub.api("GET", "/api/v1/audit/verify", None);
    assert!(
        !report["problems"].as_array().unwrap().is_empty(),
        "{report}"
    );

    // Put back, then cut off the last entry with its checkpoint: only the anchor notices.
    db.execute("UPDATE audit_log SET actor = 'admin' WHERE seq = 3", [])
        .unwrap();
    assert!(verify(&[]).status.success());
    // Rows slipped in below the chain's first seq are listed by the API,
    // so they must not pass the check.
    for seq in [0, -5] {
        db.execute(
            "INSERT INTO audit_log SELECT ?1, ts_ns, 'alice', action, target, outcome, detail, sha256
             FROM audit_log WHERE seq = 3",
            [seq],
        )
        .unwrap();
    }
    let out = verify(&[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("2 entries lie outside the chain"), "{text}");
    db.execute("DELETE FROM audit_log WHERE seq <= 0", [])
        .unwrap();
    assert!(verify(&[]).status.success());
    hub.kill();
    db.execute("DELETE FROM audit_log WHERE seq = 4", [])
        .unwrap();
    db.execute("DELETE FROM audit_checkpoints WHERE seq = 4", [])
        .unwrap();
    assert!(verify(&[]).status.success());
    let out = verify(&["--anchor", head]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success());
    assert!(
        text.contains("the anchor names entry 4 but the log ends at 3"),
        "{text}"
    );

    // The key is the hub's alone and the API never shows a secret.
    #[cfg(unix)]
    for file in ["audit.key", "admin.token"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file}: {mode:o}");
    }
}

/// A client that hangs up may do so before the hub even starts its
/// request (then nothing changes, and nothing is audited), or while the
/// change runs: then the change completes and is audited all the same.
/// Tried with a few pauses before the hang-up, so that some attempt lands
/// while the change runs; every change must have its entry.
#[test]
fn a_change_is_audited_even_when_its_client_hangs_up_before_the_answer() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let users = || hub.api("GET", "/api/v1/users", None).1.to_string();
    let mut created = Vec::new();
    for (i, pause_ms) in [0u64, 0, 5, 20, 50, 100].into_iter().enumerate() {
        // Creating a user hashes its password (tens of milliseconds): the
        // client has closed its side before the change completes.
        let name = format!("carol{i}");
        let body = json!({"name": name, "role": "viewer", "password": "a long enough password"})
            .to_string();
        let mut tcp = std::net::TcpStream::connect(hub.http).unwrap();
        write!(
            tcp,
            "POST /api/v1/users HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            hub.token,
            body.len()
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(pause_ms));
        tcp.shutdown(std::net::Shutdown::Write).unwrap();
        drop(tcp);
        // Settled either way within a second (the hash takes far less).
        std::thread::sleep(Duration::from_secs(1));
        if users().contains(&format!("\"{name}\"")) {
            created.push(name);
        }
    }
    assert!(
        !created.is_empty(),
        "no attempt reached the hub: {}",
        users()
    );
    // One entry per user created (an entry names the route, not the user).
    let (_, log) = hub.api("GET", "/api/v1/audit?action=user.create", None);
    assert_eq!(
        log.as_array().map(Vec::len),
        Some(created.len()),
        "{created:?}: {log}"
    );
}
