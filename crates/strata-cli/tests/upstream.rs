//! End to end, the scale-out path: devices publish to a Mosquitto broker
//! (Debian's `mosquitto`, on a free port), and `strata hub` processes take
//! their messages from it (`[upstream]`), acknowledging each only once
//! stored.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

/// Publishes each of `messages` to `topic` at QoS 1, as a device would,
/// with one `mosquitto_pub` reading them a line each.
fn publish(port: u16, topic: &str, messages: &[String]) {
    publish_with(port, &[], topic, messages);
}

/// The same, with more arguments to `mosquitto_pub` (credentials, TLS).
fn publish_with(port: u16, args: &[&str], topic: &str, messages: &[String]) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(args)
        .args(["-t", topic, "-l"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mosquitto_pub (Debian package mosquitto-clients)");
    let mut stdin = child.stdin.take().unwrap();
    for m in messages {
        writeln!(stdin, "{m}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `[upstream]` for one hub alone on a plain subscription: the broker
/// keeps what comes while the hub is down for the hub's session.
const ONE_HUB: &str = "client_id = \"hub-a\"\ngroup = \"\"";

/// A hub whose upstream is the broker on `port`, with more `[upstream]`
/// and other settings.
fn start_hub(dir: &Path, port: u16, upstream: &str, more: &str) -> HubProcess {
    start_hub_at(dir, &format!("mqtt://127.0.0.1:{port}"), upstream, more)
}

/// A hub whose upstream is the broker at `url`.
fn start_hub_at(dir: &Path, url: &str, upstream: &str, more: &str) -> HubProcess {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        format!("{more}\n[upstream]\nurl = {url:?}\n{upstream}\n"),
    )
    .unwrap();
    let hub = HubProcess::start_with(dir, &["--config", config.to_str().unwrap()]);
    eventually(Duration::from_secs(30), "subscribed upstream", || {
        hub.metric("strata_upstream_connected") == 1.0
    });
    hub
}

/// A Mosquitto password file in `dir` for `users` (name, password).
fn password_file(dir: &Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let path = dir.join("passwords");
    for (i, (user, password)) in users.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd
            .arg("-b")
            .arg(&path)
            .args([user, password])
            .output()
            .expect("run mosquitto_passwd (Debian package mosquitto)");
        assert!(out.status.success(), "{out:?}");
    }
    path
}

#[test]
fn messages_from_an_upstream_broker_are_stored_once_and_bad_ones_counted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Peer::mosquitto(dir.path(), port);
    let hub_dir = dir.path().join("hub");
    let hub = start_hub(&hub_dir, port, "client_id = \"hub-a\"", "");
    hub.provision("press-1", json!({"temp": "Cel"}));
    hub.provision("press-2", json!({}));
    let (status, _) = hub.api("POST", "/api/v1/devices/press-2/revoke", None);
    assert_eq!(status, 200);

    let t = now_ns();
    let telemetry = "strata/v1/press-1/up/telemetry";
    // Sent twice (a device retrying): stored once.
    publish(port, telemetry, &[json_batch("main", 1, t, 21.5)]);
    publish(
        port,
        telemetry,
        &[
            json_batch("main", 1, t, 21.5),
            json_batch("main", 2, t + 1, 22.0),
        ],
    );
    // Refused, each for its reason, without holding up what follows.
    publish(port, telemetry, &["{\"stream\": oops".into()]);
    publish(
        port,
        "strata/v1/ghost-7/up/telemetry",
        &[json_batch("main", 1, t, 1.0)],
    );
    publish(
        port,
        "strata/v1/press-2/up/telemetry",
        &[json_batch("main", 1, t, 1.0)],
    );
    publish(port, telemetry, &[json_batch("main", 3, t + 3, 22.5)]);

    eventually(Duration::from_secs(30), "three batches stored", || {
        hub.metric("strata_batches_stored_total") == 3.0
    });
    assert_eq!(
        hub.readings("press-1", "temp"),
        vec![(t, 21.5), (t + 1, 22.0), (t + 3, 22.5)]
    );
    assert_eq!(hub.metric("strata_batches_duplicate_total"), 1.0);
    let rejected =
        |reason: &str| hub.metric(&format!("strata_rejected_total{{reason=\"{reason}\"}}"));
    assert_eq!(rejected("malformed"), 1.0);
    assert_eq!(rejected("unknown_device"), 1.0);
    assert_eq!(rejected("revoked_device"), 1.0);
    assert_eq!(hub.metric("strata_upstream_messages_total"), 7.0);
    assert_eq!(hub.metric("strata_upstream_connections_total"), 1.0);

    // A device's health message sets its presence, as over the embedded
    // broker.
    publish(
        port,
        "strata/v1/press-1/up/health",
        &[r#"{"online":true,"ts_ns":1,"uptime_s":5}"#.into()],
    );
    eventually(Duration::from_secs(30), "press-1 online", || {
        let (_, device) = hub.api("GET", "/api/v1/devices/press-1", None);
        device["online"] == true
    });
}

#[test]
fn a_hub_killed_mid_stream_loses_nothing_the_broker_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Peer::mosquitto(dir.path(), port);
    let hub_dir = dir.path().join("hub");
    let hub = start_hub(&hub_dir, port, ONE_HUB, "");
    hub.provision("press-1", json!({}));
    let t = now_ns();
    let batches: Vec<String> = (1..=600)
        .map(|seq| json_batch("main", seq, t + seq as i64, seq as f64))
        .collect();
    let publisher = std::thread::spawn(move || {
        for chunk in batches.chunks(100) {
            publish(port, "strata/v1/press-1/up/telemetry", chunk);
        }
    });
    eventually(Duration::from_secs(60), "some batches stored", || {
        hub.metric("strata_batches_stored_total") >= 50.0
    });
    hub.kill();
    publisher.join().unwrap();

    let hub = start_hub(&hub_dir, port, ONE_HUB, "");
    eventually(Duration::from_secs(60), "every batch stored", || {
        hub.readings("press-1", "temp").len() == 600
    });
    let values: Vec<f64> = hub
        .readings("press-1", "temp")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, (1..=600).map(f64::from).collect::<Vec<_>>());
}

/// Telemetry and the registry both in PostgreSQL (`schema`), shared, and
/// the artifacts in `bucket`; the shared caches refreshed every
/// `refresh_ms`.
fn shared_config(schema: &PgSchema, bucket: &Bucket, refresh_ms: u64) -> String {
    format!(
        "[storage]\npostgres = {:?}\n[shared]\npostgres = {0:?}\nrefresh_ms = {refresh_ms}\n{}",
        schema.url,
        bucket.config("models", &bucket.secret)
    )
}

#[test]
fn replicas_share_the_stream_the_registry_twins_and_actions_and_postgres_stores_each_batch_once() {
    let schema = PgSchema::new("upstream");
    let mut db = schema.client();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Peer::mosquitto(dir.path(), port);
    let bucket = Bucket::start(dir.path());
    let shared = shared_config(&schema, &bucket, 100);
    let hubs: Vec<HubProcess> = ["hub-a", "hub-b"]
        .into_iter()
        .map(|id| {
            start_hub(
                &dir.path().join(id),
                port,
                &format!("client_id = \"{id}\""),
                &shared,
            )
        })
        .collect();
    // Registered once, through one replica; the other sees the change.
    hubs[0].provision("press-1", json!({}));
    let version: i64 = db
        .query_one(
            "SELECT version FROM shared_changes WHERE name = 'registry'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, 2, "registered, then enrolled");
    eventually(Duration::from_secs(10), "hub-b to see press-1", || {
        hubs[1].metric("strata_shared_version{cache=\"registry\"}") == 2.0
    });
    let t = now_ns();
    let batches: Vec<String> = (1..=400)
        .map(|seq| json_batch("main", seq, t + seq as i64, seq as f64))
        .collect();
    publish(port, "strata/v1/press-1/up/telemetry", &batches);
    // Sent again: whichever replica takes a batch now finds it stored.
    publish(port, "strata/v1/press-1/up/telemetry", &batches[..50]);

    let rows = |db: &mut postgres::Client| -> i64 {
        db.query_one("SELECT count(*) FROM telemetry_batches", &[])
            .unwrap()
            .get(0)
    };
    eventually(Duration::from_secs(60), "400 batches in PostgreSQL", || {
        rows(&mut db) == 400
            && hubs
                .iter()
                .map(|h| h.metric("strata_upstream_messages_total"))
                .sum::<f64>()
                == 450.0
    });
    let taken: Vec<f64> = hubs
        .iter()
        .map(|h| h.metric("strata_upstream_messages_total"))
        .collect();
    assert!(
        taken.iter().all(|&n| n > 0.0),
        "both replicas take a share: {taken:?}"
    );
    let stored: f64 = hubs
        .iter()
        .map(|h| h.metric("strata_batches_stored_total"))
        .sum();
    let duplicate: f64 = hubs
        .iter()
        .map(|h| h.metric("strata_batches_duplicate_total"))
        .sum();
    assert_eq!((stored, duplicate), (400.0, 50.0));
    // Either replica answers for all of it.
    for hub in &hubs {
        assert_eq!(hub.readings("press-1", "temp").len(), 400);
    }

    // Twin reports, one after another, land at either replica; each
    // replica shows the newest, whichever took it.
    let taken = |hubs: &[HubProcess]| -> Vec<f64> {
        hubs.iter()
            .map(|h| h.metric("strata_upstream_messages_total"))
            .collect()
    };
    let before = taken(&hubs);
    for version in 1..=6 {
        let report = json!({"desired_version": version, "models": [], "updates": []});
        publish(port, "strata/v1/press-1/up/twin", &[report.to_string()]);
        std::thread::sleep(Duration::from_millis(150));
    }
    for hub in &hubs {
        eventually(
            Duration::from_secs(10),
            "the newest report at each replica",
            || {
                hub.api("GET", "/api/v1/devices/press-1/twin", None).1["reported"]["desired_version"]
                    == 6
            },
        );
    }
    let after = taken(&hubs);
    assert!(
        (0..2).all(|i| after[i] > before[i]),
        "both replicas took reports: {before:?} -> {after:?}"
    );

    // Closed-loop action records too: every replica lists all of them.
    let actions: Vec<String> = (1..=8)
        .map(|seq| {
            json!({
                "seq": seq, "ts_ns": t + seq, "rule": "cool", "output": "fan",
                "action": format!("cool-{seq}"), "outcome": "written", "reason": "hot"
            })
            .to_string()
        })
        .collect();
    publish(port, "strata/v1/press-1/up/events", &actions);
    for hub in &hubs {
        eventually(
            Duration::from_secs(10),
            "every action at each replica",
            || {
                let (_, list) = hub.api("GET", "/api/v1/control/actions?device=press-1", None);
                list.as_array().is_some_and(|l| l.len() == 8)
            },
        );
    }
}

/// A device registered through one replica publishes at once, and the
/// shared subscription hands part of it to a replica whose cache has not
/// caught up (here it would not for ten minutes): that replica once
/// acknowledged those batches as from an unknown device, and they were
/// lost. It now asks the store, reloads, and stores them.
#[test]
fn a_device_registered_at_another_replica_is_taken_before_this_one_refreshes() {
    let schema = PgSchema::new("upstream_late");
    let mut db = schema.client();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Peer::mosquitto(dir.path(), port);
    let bucket = Bucket::start(dir.path());

    let hubs: Vec<HubProcess> = [("hub-a", 100), ("hub-b", 600_000)]
        .into_iter()
        .map(|(id, refresh_ms)| {
            start_hub(
                &dir.path().join(id),
                port,
                &format!("client_id = \"{id}\""),
                &shared_config(&schema, &bucket, refresh_ms),
            )
        })
        .collect();
    hubs[0].provision("press-1", json!({}));
    let t = now_ns();
    let batches: Vec<String> = (1..=200)
        .map(|seq| json_batch("main", seq, t + seq as i64, seq as f64))
        .collect();
    publish(port, "strata/v1/press-1/up/telemetry", &batches);
    eventually(Duration::from_secs(60), "200 batches in PostgreSQL", || {
        db.query_one("SELECT count(*) FROM telemetry_batches", &[])
            .unwrap()
            .get::<_, i64>(0)
            == 200
    });
    let taken = hubs[1].metric("strata_upstream_messages_total");
    assert!(taken > 0.0, "hub-b took a share: {taken}");
    assert_eq!(
        hubs[1].metric("strata_rejected_total{reason=\"unknown_device\"}"),
        0.0
    );
}

#[test]
fn over_tls_with_passwords_and_topic_rules_at_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    // Mosquitto as deployed: TLS, a password per client, and an ACL that
    // keeps each device to its own uplink and lets the hub read them all.
    let tls = ServerCertificate::make(&dir.path().join("tls"), "broker test CA");
    let passwords = password_file(
        dir.path(),
        &[("hub", "hub-secret"), ("press-1", "p1-secret")],
    );
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "user hub\ntopic read strata/v1/+/up/#\n\npattern write strata/v1/%u/up/#\n",
    )
    .unwrap();
    let port = free_port();
    let conf = format!(
        "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
         allow_anonymous false\npassword_file {}\nacl_file {}\n",
        tls.ca,
        tls.cert,
        tls.key,
        passwords.display(),
        acl.display()
    );
    let _broker = Peer::mosquitto_with(dir.path(), port, &conf);

    let hub_dir = dir.path().join("hub");
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::copy(&tls.ca, hub_dir.join("broker-ca.pem")).unwrap();
    let hub = start_hub_at(
        &hub_dir,
        &format!("mqtts://127.0.0.1:{port}"),
        "client_id = \"hub-a\"\nusername = \"hub\"\npassword = \"hub-secret\"\nca_file = \"broker-ca.pem\"",
        "",
    );
    hub.provision("press-1", json!({}));
    hub.provision("press-9", json!({}));
    let t = now_ns();
    let device = ["--cafile", &tls.ca, "-u", "press-1", "-P", "p1-secret"];
    publish_with(
        port,
        &device,
        "strata/v1/press-1/up/telemetry",
        &[json_batch("main", 1, t, 20.5)],
    );
    // The broker drops a publish to another device's topic; the hub never
    // sees it.
    publish_with(
        port,
        &device,
        "strata/v1/press-9/up/telemetry",
        &[json_batch("main", 1, t, 99.0)],
    );
    publish_with(
        port,
        &device,
        "strata/v1/press-1/up/telemetry",
        &[json_batch("main", 2, t + 1, 21.0)],
    );
    eventually(Duration::from_secs(30), "two batches stored", || {
        hub.readings("press-1", "temp").len() == 2
    });
    assert!(hub.readings("press-9", "temp").is_empty());
    assert_eq!(hub.metric("strata_upstream_messages_total"), 2.0);

    // A hub with a wrong password is refused by the broker and says so in
    // its metrics: never connected.
    let stranger_dir = dir.path().join("stranger");
    std::fs::create_dir_all(&stranger_dir).unwrap();
    std::fs::copy(&tls.ca, stranger_dir.join("broker-ca.pem")).unwrap();
    let config = stranger_dir.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nurl = \"mqtts://127.0.0.1:{port}\"\nclient_id = \"hub-x\"\nusername = \"hub\"\npassword = \"wrong\"\nca_file = \"broker-ca.pem\"\n"
        ),
    )
    .unwrap();
    let stranger = HubProcess::start_with(&stranger_dir, &["--config", config.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(stranger.metric("strata_upstream_connected"), 0.0);
    assert_eq!(stranger.metric("strata_upstream_connections_total"), 0.0);
}

#[test]
fn through_nats_jetstream_mqtt_listener_a_hub_down_for_a_while_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nats = Peer::nats_mqtt(dir.path(), port);
    let hub_dir = dir.path().join("hub");
    // NATS's MQTT listener keeps sessions in JetStream; it has no shared
    // subscriptions, so the hub takes a plain one.
    let hub = start_hub(&hub_dir, port, ONE_HUB, "");
    hub.provision("press-1", json!({}));
    let t = now_ns();
    let batch = |seq: u64| json_batch("main", seq, t + seq as i64, seq as f64);
    let topic = "strata/v1/press-1/up/telemetry";
    publish(port, topic, &(1..=100).map(batch).collect::<Vec<_>>());
    eventually(Duration::from_secs(30), "the first 100 stored", || {
        hub.readings("press-1", "temp").len() == 100
    });
    // Down while devices go on publishing: JetStream keeps it for the
    // hub's session.
    hub.kill();
    publish(port, topic, &(101..=200).map(batch).collect::<Vec<_>>());
    let hub = start_hub(&hub_dir, port, ONE_HUB, "");
    eventually(Duration::from_secs(60), "all 200 stored", || {
        hub.readings("press-1", "temp").len() == 200
    });
    // Batches the killed hub had stored but not yet acknowledged to the
    // broker come again: the ledger counts them and stores nothing twice.
    let again = hub.metric("strata_batches_duplicate_total");
    assert!(again <= 100.0, "{again} batches came again");
    assert_eq!(hub.readings("press-1", "temp").len(), 200);
}

#[test]
fn the_ingest_bench_measures_the_upstream_path() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Peer::mosquitto(dir.path(), port);
    let broker = format!("127.0.0.1:{port}");
    let out = strata(
        &[
            "bench",
            "ingest",
            "--upstream",
            &broker,
            "--devices",
            "2",
            "--batches",
            "50",
            "--rounds",
            "1",
            "--durability",
            "process",
            "--json",
        ]
        .map(std::ffi::OsStr::new),
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(report["upstream"], true, "{report}");
    // It checks itself that every batch was stored, or fails.
    assert!(report["hub_readings_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["raw_broker_readings_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_batch_the_store_refuses_is_not_acknowledged_and_comes_again() {
    let schema = PgSchema::new("upstream_retry");
    let mut db = schema.client();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Peer::mosquitto(dir.path(), port);
    let storage = format!("[storage]\npostgres = {:?}\n", schema.url);
    let hub = start_hub(&dir.path().join("hub"), port, ONE_HUB, &storage);
    hub.provision("press-1", json!({}));
    let t = now_ns();
    let topic = "strata/v1/press-1/up/telemetry";
    publish(port, topic, &[json_batch("main", 1, t, 1.0)]);
    eventually(Duration::from_secs(30), "the first batch stored", || {
        hub.readings("press-1", "temp").len() == 1
    });

    // The database refuses every new batch from now on (as a full disk or
    // a lost permission would): nothing is acknowledged, nothing lost.
    db.batch_execute("ALTER TABLE telemetry_seqs ADD CONSTRAINT hold CHECK (seq < 100)")
        .unwrap();
    publish(
        port,
        topic,
        &[
            json_batch("main", 100, t + 1, 2.0),
            json_batch("main", 101, t + 2, 3.0),
        ],
    );
    eventually(
        Duration::from_secs(30),
        "the refused commit counted",
        || hub.metric("strata_store_commit_failures_total") >= 1.0,
    );
    eventually(Duration::from_secs(30), "connected again", || {
        hub.metric("strata_upstream_connections_total") >= 2.0
    });
    assert_eq!(hub.readings("press-1", "temp").len(), 1);

    // The database takes them again: the broker's resend is stored.
    db.batch_execute("ALTER TABLE telemetry_seqs DROP CONSTRAINT hold")
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the refused batches stored",
        || hub.readings("press-1", "temp").len() == 3,
    );
}

/// The desired twin the broker on `port` holds for `device` (retained),
/// read as that device with `mosquitto_sub`.
fn retained_twin(port: u16, device: &str, credential: &str) -> Option<serde_json::Value> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args([
            "-i",
            &format!("{device}-look"),
            "-u",
            device,
            "-P",
            credential,
        ])
        .args(["-t", &format!("strata/v1/{device}/down/twin")])
        .args(["-C", "1", "-W", "5", "--retained-only"])
        .output()
        .expect("run mosquitto_sub (Debian package mosquitto-clients)");
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn an_edge_agent_on_the_upstream_broker_reaches_the_hub_and_the_hub_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The hub first: it keeps trying the broker until it is there.
    let hub_dir = dir.path().join("hub");
    std::fs::create_dir_all(&hub_dir).unwrap();
    let config = hub_dir.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"hub-a\"\n\
             username = \"hub\"\npassword = \"hub-secret\"\n"
        ),
    )
    .unwrap();
    let hub = HubProcess::start_with(&hub_dir, &["--config", config.to_str().unwrap()]);
    let credential = hub.provision("gw-1", json!({}));

    // The broker knows the hub and the device (its credential from
    // enrollment); the device may write its uplink and read its downlink.
    let passwords = password_file(
        dir.path(),
        &[("hub", "hub-secret"), ("gw-1", credential.as_str())],
    );
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "user hub\ntopic read strata/v1/+/up/#\ntopic write strata/v1/+/down/#\n\n\
         pattern write strata/v1/%u/up/#\npattern read strata/v1/%u/down/#\n",
    )
    .unwrap();
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n",
        passwords.display(),
        acl.display()
    );
    let broker = Peer::mosquitto_with(dir.path(), port, &conf);
    eventually(Duration::from_secs(30), "the hub subscribed", || {
        hub.metric("strata_upstream_connected") == 1.0
    });

    // A real agent (simulated sensors, its outbox) pointed at the broker.
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let credential_file = edge_dir.join("credential");
    std::fs::write(&credential_file, &credential).unwrap();
    let edge_config = format!(
        "device = \"gw-1\"\ndata_dir = {:?}\n[hub]\nmqtt = \"127.0.0.1:{port}\"\nhttp = \"{}\"\n\
         credential_file = {credential_file:?}\n[health]\ninterval_ms = 300\n\
         [[sources]]\ntype = \"simulator\"\nstream = \"sim\"\ninterval_ms = 200\nreadings_per_signal = 20\nseed = 4\n",
        edge_dir.join("data"),
        hub.api,
    );
    let _agent = EdgeProcess::start(&edge_dir, &edge_config);
    eventually(
        Duration::from_secs(60),
        "the agent's readings at the hub",
        || hub.readings("gw-1", "temperature").len() >= 40,
    );
    eventually(Duration::from_secs(30), "gw-1 online", || {
        let (_, device) = hub.api("GET", "/api/v1/devices/gw-1", None);
        device["online"] == true
    });
    assert_eq!(hub.metric("strata_batches_duplicate_total"), 0.0);

    // The other way: a model deployed at the hub reaches the agent through
    // the upstream broker (its desired twin, retained there), and the
    // agent's report of it comes back the same way.
    register_rul(&hub, &train_rul(dir.path()));
    let (status, deployed) = hub.api(
        "POST",
        "/api/v1/models/rul/deploy",
        Some(json!({"version": "1", "vector": "machine", "devices": ["gw-1"]})),
    );
    assert_eq!(status, 200, "{deployed}");
    let desired = || {
        let (_, twin) = hub.api("GET", "/api/v1/devices/gw-1/twin", None);
        twin
    };
    let version = desired()["desired_version"].as_u64().unwrap();
    eventually(
        Duration::from_secs(60),
        "the agent's report of its new twin",
        || desired()["reported"]["desired_version"].as_u64() == Some(version),
    );
    assert_eq!(
        desired()["reported"]["models"][0]["name"],
        "rul",
        "{}",
        desired()
    );
    assert!(hub.metric("strata_upstream_downlinks_total") >= 1.0);

    // A broker that lost what it retained (restarted without persistence)
    // gets every twin again once the hub is back on it.
    broker.kill();
    let _broker = Peer::mosquitto_with(dir.path(), port, &conf);
    eventually(Duration::from_secs(60), "the twin retained again", || {
        retained_twin(port, "gw-1", &credential)
            .is_some_and(|t| t["desired_version"].as_u64() == Some(version))
    });
}
