//! The HTTP API of a running `strata hub`: auth, registry, queries with
//! downsampling, the OpenAPI document and the Swagger page; and the
//! startup error when a port is taken.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn api_serves_registry_queries_and_its_own_documentation() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());

    // Without the admin token: refused with a message that says what to do.
    let (status, body) = hub.api_anonymous("GET", "/api/v1/devices", None);
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin.token"),
        "{body}"
    );
    assert_eq!(body["error"]["retryable"], false);

    // Registry.
    let (status, _) = hub.api(
        "POST",
        "/api/v1/sites",
        Some(json!({"id": "bldg-1", "region": "eu-central", "name": "HQ"})),
    );
    assert_eq!(status, 201);
    let (status, body) = hub.api(
        "POST",
        "/api/v1/sites",
        Some(json!({"id": "bldg-1", "region": "eu-central"})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let (status, body) = hub.api(
        "POST",
        "/api/v1/devices",
        Some(json!({"id": "ahu/1", "site": "bldg-1"})),
    );
    assert_eq!(status, 422, "an id with a slash is refused: {body}");
    let (status, body) = hub.api(
        "POST",
        "/api/v1/devices",
        Some(json!({"id": "ahu-1", "site": "nowhere"})),
    );
    assert_eq!(status, 404, "{body}");
    let cred = hub.provision("ahu-1", json!({}));
    let (status, body) = hub.api(
        "PATCH",
        "/api/v1/devices/ahu-1",
        Some(json!({"firmware_version": "2.3.0", "tags": {"floor": "3"}})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["firmware_version"].as_str(),
            body["tags"]["floor"].as_str()
        ),
        (Some("2.3.0"), Some("3"))
    );
    let (_, sites) = hub.api("GET", "/api/v1/sites", None);
    assert_eq!(
        sites.as_array().unwrap().len(),
        2,
        "bldg-1 and the provisioning site"
    );
    let (_, devices) = hub.api("GET", "/api/v1/devices?site=site-1", None);
    assert_eq!(devices[0]["id"], "ahu-1");
    // An active device gets no new token, and enrolling it again (or an
    // unknown device) is refused with one answer that reveals nothing.
    let (status, _) = hub.api("POST", "/api/v1/devices/ahu-1/token", None);
    assert_eq!(status, 409, "an active device gets no new token");
    let (s1, again) = hub.api_anonymous(
        "POST",
        "/api/v1/enroll",
        Some(json!({"device": "ahu-1", "token": "stet_x"})),
    );
    let (s2, ghost) = hub.api_anonymous(
        "POST",
        "/api/v1/enroll",
        Some(json!({"device": "ghost-1", "token": "stet_x"})),
    );
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .replace("ahu-1", "X"),
        ghost["error"]["message"]
            .as_str()
            .unwrap()
            .replace("ghost-1", "X")
    );

    // 600 readings over 60 s, then downsampled into 10 s buckets.
    let t0 = 1_700_000_000_000_000_000i64;
    let ts: Vec<i64> = (0..600).map(|i| t0 + i * 100_000_000).collect();
    let values: Vec<f64> = (0..600).map(f64::from).collect();
    let payload = json!({"stream": "s", "seq": 1, "signals": [{"name": "supply_temp", "unit": "Cel", "ts_ns": ts, "values": values}]});
    let out = mosquitto_pub(
        &hub,
        "ahu-1",
        &cred,
        "mqttv5",
        "strata/v1/ahu-1/up/telemetry",
        PubPayload::Text(&payload.to_string()),
    );
    assert!(out.status.success());
    let path = format!(
        "/api/v1/devices/ahu-1/signals/supply_temp?from={t0}&to={}&bucket=10s",
        t0 + 60_000_000_000
    );
    let (status, range) = hub.api("GET", &path, None);
    assert_eq!(status, 200, "{range}");
    let buckets = range["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 6);
    assert_eq!(buckets[0]["count"], 100);
    assert_eq!(buckets[0]["min"], 0.0);
    assert_eq!(buckets[0]["max"], 99.0);
    assert_eq!(buckets[0]["avg"], 49.5);
    assert_eq!(buckets[5]["max"], 599.0);
    let (_, raw) = hub.api(
        "GET",
        &format!(
            "/api/v1/devices/ahu-1/signals/supply_temp?from={t0}&to={}&limit=10",
            t0 + 60_000_000_000
        ),
        None,
    );
    assert_eq!(raw["points"].as_array().unwrap().len(), 10);
    assert_eq!(raw["truncated"], true);
    let (status, body) = hub.api(
        "GET",
        "/api/v1/devices/ahu-1/signals/supply_temp?bucket=soon",
        None,
    );
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bucket"),
        "{body}"
    );
    let (_, series) = hub.api("GET", "/api/v1/series?device=ahu-1", None);
    assert_eq!(series[0]["latest"]["value"], 599.0);

    // OpenAPI document and the vendored Swagger page.
    let (status, doc) = hub.api_anonymous("GET", "/api-docs/openapi.json", None);
    assert_eq!(status, 200);
    for path in [
        "/api/v1/devices",
        "/api/v1/enroll",
        "/api/v1/devices/{id}/signals/{signal}",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "OpenAPI lacks {path}");
    }
    // Every secured operation names the one scheme the document defines:
    // a bearer token of any kind (admin, session or API token).
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes.keys().collect::<Vec<_>>(), ["bearer_token"]);
    assert_eq!(schemes["bearer_token"]["scheme"], "bearer");
    let mut secured = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for requirement in op["security"].as_array().into_iter().flatten() {
                for name in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{method} {path} uses {name}");
                    secured += 1;
                }
            }
        }
    }
    assert!(secured > 40, "only {secured} secured operations");
    let (status, page) = hub.api_anonymous("GET", "/swagger-ui/", None);
    assert_eq!(status, 200);
    assert!(
        page.as_str().unwrap().contains("swagger"),
        "the Swagger page is served"
    );
    let (status, _) = hub.api_anonymous("GET", "/swagger-ui/swagger-ui-bundle.js", None);
    assert_eq!(status, 200, "Swagger's assets are vendored, not fetched");
}

#[test]
fn a_taken_port_gives_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    // Each listener in turn on the taken port, the others on free ones.
    let cases: [(&str, &[&str]); 3] = [
        (
            "--mqtt-listen",
            &["--mqtt-plaintext", "--http-listen", "127.0.0.1:0"],
        ),
        ("--mqtt-tls-listen", &["--http-listen", "127.0.0.1:0"]),
        (
            "--http-listen",
            &["--mqtt-plaintext", "--mqtt-listen", "127.0.0.1:0"],
        ),
    ];
    for (flag, others) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["hub", flag, &addr])
            .args(others)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(&addr) && stderr.contains("in use"),
            "{flag}: {stderr}"
        );
    }
}

#[test]
fn a_second_hub_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["hub", "--mqtt-plaintext", "--mqtt-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("another hub runs on the data directory"),
        "{stderr}"
    );
    // The first one is untouched, and once it is gone the directory is free.
    let (status, _) = hub.api("GET", "/api/v1/devices", None);
    assert_eq!(status, 200);
    hub.kill();
    let again = HubProcess::start(dir.path());
    let (status, _) = again.api("GET", "/api/v1/devices", None);
    assert_eq!(status, 200);
}

#[test]
fn an_invalid_config_file_is_refused_with_its_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        "[mqtt]\nlisten = \"0.0.0.0:1883\"\nmax_packet = 5\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["hub", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("hub.toml") && stderr.contains("line 3") && stderr.contains("max_packet"),
        "{stderr}"
    );
}
