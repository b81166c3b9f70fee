//! End to end: the `strata hub` binary against MQTT clients nobody here
//! wrote (`mosquitto_pub` / `mosquitto_sub` from Debian's mosquitto-clients).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;
use strata_proto::payload::{Encoding, encode_telemetry};
use strata_proto::{SignalSeries, TelemetryBatch};

#[test]
fn a_batch_published_twice_is_stored_once_in_both_protocol_versions() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let cred = hub.provision("press-1", json!({}));
    let topic = "strata/v1/press-1/up/telemetry";
    let t = now_ns();
    for version in ["mqttv311", "mqttv5"] {
        for _ in 0..2 {
            let out = mosquitto_pub(
                &hub,
                "press-1",
                &cred,
                version,
                topic,
                PubPayload::Text(&json_batch("main", 1, t, 21.5)),
            );
            assert!(
                out.status.success(),
                "{version}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // mosquitto_pub exits after the PUBACK, which the hub sends only once the
    // batch is durable: no waiting needed.
    assert_eq!(hub.readings("press-1", "temp"), vec![(t, 21.5)]);
    assert_eq!(hub.metric("strata_batches_stored_total"), 1.0);
    assert_eq!(hub.metric("strata_batches_duplicate_total"), 3.0);

    // Protobuf from a file: another seq of the same stream is a new batch.
    let batch = TelemetryBatch {
        stream: "main".into(),
        seq: 2,
        signals: vec![SignalSeries {
            name: "temp".into(),
            unit: "Cel".into(),
            ts_ns: vec![t + 1, t + 2],
            values: vec![22.0, 22.5],
            quality: vec![],
        }],
    };
    let file = dir.path().join("batch.pb");
    std::fs::write(&file, encode_telemetry(&batch, Encoding::Protobuf)).unwrap();
    let out = mosquitto_pub(
        &hub,
        "press-1",
        &cred,
        "mqttv5",
        topic,
        PubPayload::File(&file),
    );
    assert!(out.status.success());
    assert_eq!(hub.readings("press-1", "temp").len(), 3);

    // An inference batch with the same stream name and seq is another batch.
    let out = mosquitto_pub(
        &hub,
        "press-1",
        &cred,
        "mqttv5",
        "strata/v1/press-1/up/inference",
        PubPayload::Text(
            &json_batch("main", 1, t + 3, 0.9).replace("\"temp\"", "\"anomaly_score\""),
        ),
    );
    assert!(out.status.success());
    assert_eq!(hub.readings("press-1", "anomaly_score"), vec![(t + 3, 0.9)]);
    assert_eq!(hub.metric("strata_batches_stored_total"), 3.0);

    let (_, latest) = hub.api("GET", "/api/v1/devices/press-1/latest", None);
    let temp = latest
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["signal"] == "temp")
        .expect("temp");
    assert_eq!(temp["value"], 22.5);
    let (_, device) = hub.api("GET", "/api/v1/devices/press-1", None);
    assert!(device["last_seen_ns"].as_i64().is_some(), "{device}");
}

#[test]
fn a_device_cannot_touch_another_devices_topics() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let cred_a = hub.provision("dev-a", json!({}));
    let _cred_b = hub.provision("dev-b", json!({}));
    let t = now_ns();

    for version in ["mqttv311", "mqttv5"] {
        let _ = mosquitto_pub(
            &hub,
            "dev-a",
            &cred_a,
            version,
            "strata/v1/dev-b/up/telemetry",
            PubPayload::Text(&json_batch("main", 1, t, 1.0)),
        );
    }
    assert_eq!(
        hub.metric("strata_rejected_total{reason=\"acl_publish\"}"),
        2.0
    );
    assert!(
        hub.readings("dev-b", "temp").is_empty(),
        "nothing may land in dev-b's data"
    );

    // Using another device's id as client id with one's own credential fails too.
    let out = mosquitto_pub(
        &hub,
        "dev-b",
        &cred_a,
        "mqttv311",
        "strata/v1/dev-b/up/telemetry",
        PubPayload::Text("{}"),
    );
    assert!(
        !out.status.success(),
        "dev-a's credential must not log in as dev-b"
    );

    for (version, filter) in [
        ("mqttv311", "strata/v1/dev-b/down/#"),
        ("mqttv5", "strata/v1/+/up/#"),
        ("mqttv5", "#"),
    ] {
        let out = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &hub.mqtt.port().to_string(),
                "-V",
                version,
            ])
            .args([
                "-i", "dev-a", "-u", "dev-a", "-P", &cred_a, "-t", filter, "-W", "5",
            ])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("denied"),
            "{version} {filter}: subscription must be denied, got {text:?}"
        );
    }
    assert_eq!(
        hub.metric("strata_rejected_total{reason=\"acl_subscribe\"}"),
        3.0
    );

    // Its own topics work.
    let out = mosquitto_pub(
        &hub,
        "dev-a",
        &cred_a,
        "mqttv5",
        "strata/v1/dev-a/up/telemetry",
        PubPayload::Text(&json_batch("m", 1, t, 3.0)),
    );
    assert!(out.status.success());
    assert_eq!(hub.readings("dev-a", "temp"), vec![(t, 3.0)]);
}

#[test]
fn a_revoked_device_is_disconnected_at_once_and_refused_after() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let cred = hub.provision("gw-9", json!({}));

    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &hub.mqtt.port().to_string(),
            "-V",
            "mqttv311",
        ])
        .args([
            "-i",
            "gw-9",
            "-u",
            "gw-9",
            "-P",
            &cred,
            "-t",
            "strata/v1/gw-9/down/#",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // mosquitto_sub buffers its output when it is a pipe: watch the hub instead.
    eventually(Duration::from_secs(10), "device shown online", || {
        hub.api("GET", "/api/v1/devices/gw-9", None).1["online"] == true
    });

    let (status, revoked) = hub.api("POST", "/api/v1/devices/gw-9/revoke", None);
    assert_eq!(status, 200);
    assert_eq!(revoked["state"], "revoked");

    // The live session is cut; mosquitto_sub reconnects, is refused, and exits.
    eventually(Duration::from_secs(10), "mosquitto_sub to stop", || {
        sub.try_wait().unwrap().is_some()
    });
    let out = sub.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "mosquitto_sub should fail: {text}");
    assert!(
        text.contains("not authorised"),
        "the reconnect must be refused as not authorised: {text}"
    );

    let out = mosquitto_pub(
        &hub,
        "gw-9",
        &cred,
        "mqttv5",
        "strata/v1/gw-9/up/telemetry",
        PubPayload::Text("{}"),
    );
    assert!(!out.status.success());
    assert!(hub.metric("strata_rejected_total{reason=\"revoked_device\"}") >= 2.0);
    eventually(Duration::from_secs(10), "device shown offline", || {
        hub.api("GET", "/api/v1/devices/gw-9", None).1["online"] == false
    });
}

#[test]
fn bad_input_is_refused_counted_and_good_data_still_flows() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, "[ingest]\nmax_readings_per_batch = 1000\n").unwrap();
    let hub = HubProcess::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let cred = hub.provision("line-3", json!({"temp": "Cel", "speed": "rpm"}));
    let topic = "strata/v1/line-3/up/telemetry";
    let t = now_ns();
    let publish_pb = |batch: &TelemetryBatch, name: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, encode_telemetry(batch, Encoding::Protobuf)).unwrap();
        let out = mosquitto_pub(
            &hub,
            "line-3",
            &cred,
            "mqttv5",
            topic,
            PubPayload::File(&file),
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let signal = |name: &str, unit: &str, ts: Vec<i64>, values: Vec<f64>| SignalSeries {
        name: name.into(),
        unit: unit.into(),
        ts_ns: ts,
        values,
        quality: vec![],
    };

    // Malformed JSON and protobuf.
    let _ = mosquitto_pub(
        &hub,
        "line-3",
        &cred,
        "mqttv311",
        topic,
        PubPayload::Text("{\"stream\": oops"),
    );
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, [0x0a, 0xff, 0xff, 0x01]).unwrap();
    let _ = mosquitto_pub(
        &hub,
        "line-3",
        &cred,
        "mqttv5",
        topic,
        PubPayload::File(&garbage),
    );
    // NaN and infinity beside a good reading; one reading an hour in the
    // future, one stamped in seconds (1970, by a clock read in ns).
    let mixed = TelemetryBatch {
        stream: "main".into(),
        seq: 1,
        signals: vec![
            signal(
                "temp",
                "Cel",
                vec![t, t + 1, t + 2],
                vec![f64::NAN, 20.0, f64::INFINITY],
            ),
            signal(
                "speed",
                "rpm",
                vec![t, t + 3_600_000_000_000, t / 1_000_000_000],
                vec![1500.0, 1600.0, 1700.0],
            ),
            signal("pressure", "bar", vec![t], vec![2.0]),
            signal("speed_wrong", "rpm", vec![t], vec![1.0]),
        ],
    };
    publish_pb(&mixed, "mixed.pb");
    // A unit other than the declared one.
    publish_pb(
        &TelemetryBatch {
            stream: "main".into(),
            seq: 2,
            signals: vec![signal("temp", "degF", vec![t + 5], vec![70.0])],
        },
        "unit.pb",
    );
    // Columns of different lengths.
    publish_pb(
        &TelemetryBatch {
            stream: "main".into(),
            seq: 3,
            signals: vec![signal("temp", "Cel", vec![t], vec![])],
        },
        "cols.pb",
    );
    // Over the reading limit (1000 in this hub's config).
    let big = TelemetryBatch {
        stream: "main".into(),
        seq: 4,
        signals: vec![signal("temp", "Cel", vec![t; 1001], vec![1.0; 1001])],
    };
    publish_pb(&big, "big.pb");
    // An MQTT packet over the broker's 1 MiB limit.
    let huge = dir.path().join("huge");
    std::fs::write(&huge, vec![b' '; 2 << 20]).unwrap();
    // MQTT 3.1.1: a v5 client would see the limit in CONNACK and not send it.
    let _ = mosquitto_pub(
        &hub,
        "line-3",
        &cred,
        "mqttv311",
        topic,
        PubPayload::File(&huge),
    );
    // An unknown device.
    let out = mosquitto_pub(
        &hub,
        "ghost",
        "whatever",
        "mqttv311",
        "strata/v1/ghost/up/telemetry",
        PubPayload::Text("{}"),
    );
    assert!(!out.status.success());

    // Good data after all that.
    let out = mosquitto_pub(
        &hub,
        "line-3",
        &cred,
        "mqttv311",
        topic,
        PubPayload::Text(&json_batch("main", 5, t + 10, 25.0)),
    );
    assert!(out.status.success());

    let m = |reason: &str| hub.metric(&format!("strata_rejected_total{{reason=\"{reason}\"}}"));
    assert_eq!(m("malformed"), 2.0);
    assert_eq!(m("non_finite"), 2.0);
    assert_eq!(m("future_timestamp"), 1.0);
    assert_eq!(m("past_timestamp"), 1.0);
    assert_eq!(m("unknown_signal"), 2.0, "pressure and speed_wrong");
    assert_eq!(m("unit_mismatch"), 1.0);
    assert_eq!(m("invalid_batch"), 1.0);
    assert_eq!(m("oversized"), 1.0);
    assert_eq!(m("unknown_device"), 1.0);
    assert_eq!(
        hub.metric("strata_mqtt_dropped_too_large_total"),
        1.0,
        "the 2 MiB packet"
    );

    assert_eq!(
        hub.readings("line-3", "temp"),
        vec![(t + 1, 20.0), (t + 10, 25.0)]
    );
    assert_eq!(hub.readings("line-3", "speed"), vec![(t, 1500.0)]);
    assert!(hub.readings("line-3", "pressure").is_empty());
}

/// Publishes one reading of `temp` in batch `seq` of stream "main" as
/// press-1, with `mosquitto_pub` speaking `version`; checks it succeeded.
fn publish_main(hub: &HubProcess, cred: &str, version: &str, seq: u64, ts: i64, value: f64) {
    let out = mosquitto_pub(
        hub,
        "press-1",
        cred,
        version,
        "strata/v1/press-1/up/telemetry",
        PubPayload::Text(&json_batch("main", seq, ts, value)),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn telemetry_past_its_retention_period_is_deleted_and_stays_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        "[storage]\nretention_days = 7\nretention_check_s = 1\n",
    )
    .unwrap();
    let hub = HubProcess::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let cred = hub.provision("press-1", json!({}));
    let now = now_ns();
    let old = now - 10 * 86_400 * 1_000_000_000;
    let publish = |seq, ts, value| publish_main(&hub, &cred, "mqttv311", seq, ts, value);
    // A reading from ten days ago (a gateway that was offline), then a
    // recent one.
    publish(1, old, 1.5);
    publish(2, now, 2.5);
    eventually(Duration::from_secs(30), "a retention pass", || {
        hub.metric("strata_retention_batches_deleted_total") == 1.0
    });
    assert_eq!(hub.readings("press-1", "temp"), vec![(now, 2.5)]);
    assert_eq!(hub.metric("strata_retention_readings_deleted_total"), 1.0);
    assert_eq!(hub.metric("strata_retention_failures_total"), 0.0);
    // Sent again, the expired batch is still a duplicate: not stored twice.
    publish(1, old, 1.5);
    assert_eq!(hub.metric("strata_batches_duplicate_total"), 1.0);
    assert_eq!(hub.readings("press-1", "temp"), vec![(now, 2.5)]);
}

#[test]
fn with_postgres_telemetry_lands_there_once_and_a_killed_hub_loses_none() {
    let schema = PgSchema::new("ingest");
    let (url, mut db) = (&schema.url, schema.client());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, format!("[storage]\npostgres = {url:?}\n")).unwrap();
    let start = || HubProcess::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let hub = start();
    let cred = hub.provision("press-1", json!({}));
    let t = now_ns();
    let publish = |hub: &HubProcess, seq, ts, value| {
        publish_main(hub, &cred, "mqttv5", seq, ts, value);
    };
    publish(&hub, 1, t, 21.5);
    publish(&hub, 1, t, 21.5);
    publish(&hub, 2, t + 1, 22.0);
    // Acknowledged means committed in PostgreSQL.
    let rows: i64 = db
        .query_one("SELECT count(*) FROM telemetry_batches", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 2);
    assert_eq!(
        hub.readings("press-1", "temp"),
        vec![(t, 21.5), (t + 1, 22.0)]
    );
    assert_eq!(hub.metric("strata_batches_duplicate_total"), 1.0);
    let (_, latest) = hub.api("GET", "/api/v1/devices/press-1/latest", None);
    assert_eq!(latest[0]["value"], 22.0, "{latest}");

    // SIGKILL, restart: everything acknowledged is there, and a resend is
    // still a duplicate.
    hub.kill();
    let hub = start();
    publish(&hub, 2, t + 1, 22.0);
    publish(&hub, 3, t + 2, 22.5);
    assert_eq!(
        hub.readings("press-1", "temp"),
        vec![(t, 21.5), (t + 1, 22.0), (t + 2, 22.5)]
    );
    assert_eq!(hub.metric("strata_batches_duplicate_total"), 1.0);
    assert_eq!(hub.metric("strata_batches_stored_total"), 1.0);
}
