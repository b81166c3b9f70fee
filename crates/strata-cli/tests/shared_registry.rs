//! End to end, hub replicas sharing one registry in PostgreSQL
//! (`[registry] postgres`, this machine's server, a schema per test): a
//! device registered and enrolled through one hub connects to another
//! with the same credential, and revoking it through either cuts it off
//! at both. Devices connect with `mosquitto_pub` and `mosquitto_sub`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

/// A hub whose registry is in `schema`, looking for other replicas'
/// changes every 100 ms.
fn replica(dir: &Path, schema: &PgSchema) -> HubProcess {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[registry]\npostgres = {:?}\nrefresh_ms = 100\n",
            schema.url
        ),
    )
    .unwrap();
    HubProcess::start_with(dir, &["--config", config.to_str().unwrap()])
}

/// Publishes one batch of `temp` as `device` (QoS 1, MQTT 5); whether the
/// hub took it.
fn publish(hub: &HubProcess, device: &str, credential: &str, seq: u64) -> bool {
    let batch = json_batch("main", seq, now_ns(), seq as f64);
    mosquitto_pub(
        hub,
        device,
        credential,
        "mqttv5",
        &format!("strata/v1/{device}/up/telemetry"),
        PubPayload::Text(&batch),
    )
    .status
    .success()
}

#[test]
fn a_device_enrolled_at_one_replica_works_at_the_other_and_revocation_reaches_both() {
    let schema = PgSchema::new("registry");
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&dir.path().join("hub-a"), &schema);
    let b = replica(&dir.path().join("hub-b"), &schema);

    // Registered and enrolled through hub A only.
    let credential = a.provision("gw-1", json!({"temp": "Cel"}));
    let (status, device) = b.api("GET", "/api/v1/devices/gw-1", None);
    assert_eq!((status, &device["state"]), (200, &json!("active")));

    // Hub B takes the credential once it has seen the change.
    eventually(Duration::from_secs(10), "hub B to take gw-1", || {
        publish(&b, "gw-1", &credential, 1)
    });
    assert!(b.metric("strata_registry_reloads_total") >= 1.0);
    assert!(publish(&a, "gw-1", &credential, 2));
    eventually(
        Duration::from_secs(10),
        "a batch stored at each hub",
        || a.readings("gw-1", "temp").len() == 1 && b.readings("gw-1", "temp").len() == 1,
    );
    // The declared signals came along: B refuses an undeclared one.
    let undeclared = format!(
        r#"{{"stream":"main","seq":9,"signals":[{{"name":"rpm","unit":"1/min","ts_ns":[{}],"values":[1.0]}}]}}"#,
        now_ns()
    );
    mosquitto_pub(
        &b,
        "gw-1",
        &credential,
        "mqttv5",
        "strata/v1/gw-1/up/telemetry",
        PubPayload::Text(&undeclared),
    );
    eventually(
        Duration::from_secs(10),
        "the undeclared signal refused",
        || b.metric("strata_rejected_total{reason=\"unknown_signal\"}") >= 1.0,
    );
    // A wrong credential is as wrong at B as at A.
    assert!(!publish(&b, "gw-1", "not-the-credential", 3));

    // Connected to hub B, revoked through hub A.
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &b.mqtt.port().to_string()])
        .args([
            "-V",
            "mqttv311",
            "-i",
            "gw-1",
            "-u",
            "gw-1",
            "-P",
            &credential,
        ])
        .args(["-t", "strata/v1/gw-1/down/#"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), "gw-1 online at hub B", || {
        a.api("GET", "/api/v1/devices/gw-1", None).1["online"] == true
    });
    let (status, revoked) = a.api("POST", "/api/v1/devices/gw-1/revoke", None);
    assert_eq!((status, &revoked["state"]), (200, &json!("revoked")));

    // Hub B closes the live session, and refuses the reconnect.
    eventually(
        Duration::from_secs(10),
        "mosquitto_sub cut off by hub B",
        || sub.try_wait().unwrap().is_some(),
    );
    let out = sub.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("not authorised"),
        "the reconnect must be refused as not authorised: {text}"
    );
    assert!(!publish(&a, "gw-1", &credential, 4));
    assert!(!publish(&b, "gw-1", &credential, 5));
    for hub in [&a, &b] {
        assert_eq!(hub.readings("gw-1", "temp").len(), 1);
    }
}
