//! End to end, hub replicas sharing the registry, people's accounts and
//! the model registry in PostgreSQL (`[shared] postgres`, this machine's
//! server, a schema per test), with artifacts in one bucket (moto's S3
//! server):
//! - a device registered and enrolled through one hub connects to another
//!   with the same credential, and revoking it through either cuts it off
//!   at both; while the registry's database stalls, telemetry from known
//!   devices keeps being stored (devices connect with `mosquitto_pub` and
//!   `mosquitto_sub`);
//! - a user made at one hub logs in at the other, its tokens work at both,
//!   and a revocation or a disabled account at one holds at the other;
//! - each hub keeps its audit log in the database, under its own key: any
//!   lists every hub's entries and verifies every log (an edit in the
//!   database is found), and a third hub started with a copy of one's
//!   audit key is refused;
//! - a model version registered at one hub is listed and served by the
//!   other, versions registered through both at once are numbered once
//!   each, and an alias moved at one is where the other finds it; both
//!   sign with the one rollout key given to them; a replica stops cleanly
//!   on SIGTERM;
//! - a model deployed through one hub reaches a device connected to the
//!   other (its desired twin, published there too), and so does an
//!   operator's approval given at the other (a command, relayed);
//! - a rollout campaign started at one hub is listed, carried on, paused,
//!   resumed and aborted through either, and a second one of the same
//!   release is refused at the other;
//! - with the same retraining policy at both, one replica at a time runs
//!   it, and the other takes over when that one stops;
//! - with telemetry in PostgreSQL too, training jobs queued at either are
//!   run once each by whichever takes them, and a job whose worker went
//!   silent is taken back and run again.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;
use strata_edge::sources::simulator::Scenario;

/// A hub whose shared stores are in `schema` and artifacts in `bucket`,
/// looking for other replicas' changes every 100 ms.
fn replica(dir: &Path, schema: &PgSchema, bucket: &Bucket) -> HubProcess {
    replica_at(dir, &schema.url, bucket, "")
}

/// The same, with the shared database at `url` and `more` configuration.
fn replica_at(dir: &Path, url: &str, bucket: &Bucket, more: &str) -> HubProcess {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[shared]\npostgres = {url:?}\nrefresh_ms = 100\n{}{more}",
            bucket.config("models", &bucket.secret)
        ),
    )
    .unwrap();
    HubProcess::start_with(dir, &["--config", config.to_str().unwrap()])
}

/// A TCP relay to PostgreSQL that can stall: while `stalled`, nothing
/// passes either way and connections stay open, as on a network that
/// drops packets.
struct Relay {
    port: u16,
    stalled: Arc<AtomicBool>,
}

impl Relay {
    fn to_postgres() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let server = TcpStream::connect("127.0.0.1:5432").unwrap();
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || pass(from, to, &flag));
                }
            }
        });
        Relay { port, stalled }
    }
}

fn pass(mut from: TcpStream, mut to: TcpStream, stalled: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        while stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                while stalled.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
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
    let bucket = Bucket::start(dir.path());
    let a = replica(&dir.path().join("hub-a"), &schema, &bucket);
    let b = replica(&dir.path().join("hub-b"), &schema, &bucket);

    // Registered and enrolled through hub A only.
    let credential = a.provision("gw-1", json!({"temp": "Cel"}));
    let (status, device) = b.api("GET", "/api/v1/devices/gw-1", None);
    assert_eq!((status, &device["state"]), (200, &json!("active")));

    // Hub B takes the credential once it has seen the change.
    eventually(Duration::from_secs(10), "hub B to take gw-1", || {
        publish(&b, "gw-1", &credential, 1)
    });
    assert!(b.metric("strata_shared_reloads_total") >= 1.0);
    // A hub whose store fails for a moment closes the connection without
    // acknowledging (the client sends again): one refusal is not a failure.
    eventually(Duration::from_secs(10), "hub A to take a batch", || {
        publish(&a, "gw-1", &credential, 2)
    });
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

#[test]
fn while_the_registry_database_stalls_known_devices_keep_storing_telemetry() {
    let schema = PgSchema::new("stall");
    let relay = Relay::to_postgres();
    let url = schema
        .url
        .replace("port=5432", &format!("port={}", relay.port));
    assert_ne!(url, schema.url);
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    let hub = replica_at(&dir.path().join("hub"), &url, &bucket, "");
    let credential = hub.provision("gw-2", json!({}));

    relay.stalled.store(true, Ordering::SeqCst);
    // Each publish connects, publishes at QoS 1 and disconnects: the
    // presence changes wait for the database, the batches do not.
    for seq in 1..=5 {
        let batch = json_batch("main", seq, now_ns(), seq as f64);
        let out = Command::new("timeout")
            .args(["30", "mosquitto_pub", "-h", "127.0.0.1"])
            .args([
                "-p",
                &hub.mqtt.port().to_string(),
                "-V",
                "mqttv5",
                "-q",
                "1",
            ])
            .args(["-i", "gw-2", "-u", "gw-2", "-P", &credential])
            .args(["-t", "strata/v1/gw-2/up/telemetry", "-m", &batch])
            .output()
            .unwrap();
        assert!(out.status.success(), "batch {seq} acknowledged: {out:?}");
    }
    assert_eq!(hub.metric("strata_batches_stored_total"), 5.0);

    // Back: the presence the hub kept is written.
    relay.stalled.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(20), "presence recorded", || {
        let (_, device) = hub.api("GET", "/api/v1/devices/gw-2", None);
        device["last_seen_ns"].as_i64().is_some_and(|t| t > 0) && device["online"] == false
    });
    assert_eq!(hub.readings("gw-2", "temp").len(), 5);
}

#[test]
fn an_account_made_at_one_replica_works_at_the_other_and_revocations_hold_at_both() {
    let schema = PgSchema::new("accounts");
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    let a = replica(&dir.path().join("hub-a"), &schema, &bucket);
    let b = replica(&dir.path().join("hub-b"), &schema, &bucket);
    let whoami = |hub: &HubProcess, token: &str| hub.api_as(token, "GET", "/api/v1/whoami", None).0;

    let (status, body) = a.api(
        "POST",
        "/api/v1/users",
        Some(json!({"name": "ops", "role": "operator", "password": "ops correct horse battery"})),
    );
    assert_eq!(status, 201, "{body}");
    // Logs in at the other replica once it has seen the account.
    let mut session = String::new();
    eventually(Duration::from_secs(10), "a login at hub B", || {
        let (status, body) = b.api_anonymous(
            "POST",
            "/api/v1/login",
            Some(json!({"user": "ops", "password": "ops correct horse battery"})),
        );
        session = body["token"].as_str().unwrap_or_default().to_owned();
        status == 201
    });
    // At once: a token one replica does not know yet makes it look.
    assert_eq!(whoami(&a, &session), 200, "hub B's session at hub A");

    // A token issued at A, revoked at B: refused at A too.
    let (status, issued) = a.api_as(
        &session,
        "POST",
        "/api/v1/tokens",
        Some(json!({"label": "grafana", "scopes": ["read"]})),
    );
    assert_eq!(status, 201, "{issued}");
    let token = issued["token"].as_str().unwrap().to_owned();
    let id = issued["info"]["id"].as_str().unwrap().to_owned();
    assert_eq!(whoami(&b, &token), 200, "A's token at hub B, at once");
    let (status, body) = b.api_as(&session, "DELETE", &format!("/api/v1/tokens/{id}"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(whoami(&b, &token), 401, "at once where it was revoked");
    eventually(
        Duration::from_secs(10),
        "the revoked token refused at A",
        || whoami(&a, &token) == 401,
    );

    // Disabled at A: B refuses the session too.
    let (status, body) = a.api(
        "PATCH",
        "/api/v1/users/ops",
        Some(json!({"disabled": true})),
    );
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(10),
        "the disabled account refused at B",
        || whoami(&b, &session) == 401,
    );
    assert!(b.metric("strata_shared_reloads_total") >= 3.0);

    // Changed through both at once, its role at A and whether it is
    // disabled at B: each replica writes only what it was asked to, so
    // the last change of each survives the other's.
    let (a, b) = (&a, &b);
    std::thread::scope(|s| {
        let patch = |hub: &HubProcess, body: serde_json::Value| {
            let (status, user) = hub.api("PATCH", "/api/v1/users/ops", Some(body));
            assert_eq!(status, 200, "{user}");
        };
        s.spawn(move || {
            for role in ["operator", "viewer"].repeat(15) {
                patch(a, json!({"role": role}));
            }
        });
        s.spawn(move || {
            for disabled in [true, false].repeat(15) {
                patch(b, json!({"disabled": disabled}));
            }
        });
    });
    for hub in [a, b] {
        eventually(Duration::from_secs(10), "both changes kept", || {
            let (_, users) = hub.api("GET", "/api/v1/users", None);
            let ops = users
                .as_array()
                .and_then(|u| u.iter().find(|u| u["name"] == "ops"))
                .cloned()
                .unwrap_or_default();
            ops["role"] == "viewer" && ops["disabled_ns"].is_null()
        });
    }
}

#[test]
fn each_replica_audits_into_the_shared_database_and_any_lists_and_verifies_them_all() {
    let schema = PgSchema::new("audit");
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    let a = replica(&dir.path().join("hub-a"), &schema, &bucket);
    let b = replica(&dir.path().join("hub-b"), &schema, &bucket);

    // A user made at B is in B's log, which A lists.
    let (status, body) = b.api(
        "POST",
        "/api/v1/users",
        Some(json!({"name": "auditor", "role": "viewer", "password": "auditor horse battery"})),
    );
    assert_eq!(status, 201, "{body}");
    let (_, head_b) = b.api("GET", "/api/v1/audit/head", None);
    let log_b = head_b["key_id"].as_str().unwrap().to_owned();
    let (_, head_a) = a.api("GET", "/api/v1/audit/head", None);
    let log_a = head_a["key_id"].as_str().map(str::to_owned);
    assert_ne!(log_a.as_deref(), Some(log_b.as_str()), "a log each");
    let (status, listed) = a.api("GET", "/api/v1/audit?action=user.create", None);
    assert_eq!(status, 200, "{listed}");
    let made = listed.as_array().unwrap();
    assert_eq!(made.len(), 1, "B's user.create listed at A: {listed}");
    assert_eq!(made[0]["replica"], log_b.as_str(), "{listed}");

    // A verifies its own log and B's.
    let (status, report) = a.api("GET", "/api/v1/audit/verify", None);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["problems"], json!([]), "{report}");
    let replicas = report["replicas"].as_array().unwrap();
    let b_report = replicas
        .iter()
        .find(|r| r["replica"] == log_b.as_str())
        .unwrap_or_else(|| panic!("B's log verified at A: {report}"));
    assert!(b_report["entries"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(b_report["problems"], json!([]), "{report}");

    // So does `strata audit verify` against the database, for every log
    // and for B's own key.
    let verify = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["audit", "verify", "--postgres", &schema.url])
            .args(args)
            .output()
            .unwrap()
    };
    let out = verify(&[]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("the audit logs of 2 replica(s) are intact"),
        "{said}"
    );
    let b_key = strata_hub::audit::key_of(&dir.path().join("hub-b"))
        .unwrap()
        .1;
    let out = verify(&["--public-key", &b_key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // An entry of B's log edited in the database: A finds it.
    let edited = schema
        .client()
        .execute(
            "UPDATE shared_audit_entries SET outcome = 'denied' WHERE replica = $1 AND action = 'user.create'",
            &[&log_b],
        )
        .unwrap();
    assert_eq!(edited, 1);
    let (_, report) = a.api("GET", "/api/v1/audit/verify", None);
    let b_report = report["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["replica"] == log_b.as_str())
        .unwrap()
        .clone();
    let problems = b_report["problems"].to_string();
    assert!(problems.contains("does not match its hash"), "{report}");
    assert_eq!(
        report["problems"],
        json!([]),
        "A's own log is intact: {report}"
    );
    // And so does `strata audit verify`, both ways.
    for args in [&[][..], &["--public-key", &b_key]] {
        let out = verify(args);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!out.status.success(), "{args:?}: {said}");
        assert!(said.contains("does not match its hash"), "{args:?}: {said}");
    }

    // A third replica started with B's audit key would write B's log: it
    // is refused at start.
    let copy = dir.path().join("hub-c");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(dir.path().join("hub-b/audit.key"), copy.join("audit.key")).unwrap();
    let config = copy.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[shared]\npostgres = {:?}\n{}",
            schema.url,
            bucket.config("models", &bucket.secret)
        ),
    )
    .unwrap();
    let mut third = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["hub", "--data-dir"])
        .arg(&copy)
        .args(["--config", config.to_str().unwrap()])
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--mqtt-plaintext")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ended = None;
    for _ in 0..300 {
        ended = third.try_wait().unwrap();
        if ended.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if ended.is_none() {
        let _ = third.kill();
    }
    let out = third.wait_with_output().unwrap();
    assert!(ended.is_some_and(|s| !s.success()), "the third hub ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("same audit key"), "{stderr}");
}

#[test]
fn models_deployed_through_both_replicas_at_once_all_reach_the_twin() {
    let schema = PgSchema::new("twin_edits");
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    let a = replica(&dir.path().join("hub-a"), &schema, &bucket);
    let b = replica(&dir.path().join("hub-b"), &schema, &bucket);
    a.provision("press-1", json!({}));
    let listed = deploy_models_at_once(&[&a, &b], "press-1", &train_rul(dir.path()));
    let expected: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    assert_eq!(listed, expected, "none lost");
}

#[test]
fn a_model_registered_at_one_replica_is_served_and_promoted_at_the_other() {
    let schema = PgSchema::new("models");
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    // One rollout key for both, made once.
    let key = dir.path().join("rollout.key");
    let public = strata(&["release".as_ref(), "keygen".as_ref(), key.as_os_str()]);
    let ota = format!("[ota]\nrollout_key_file = {key:?}\n");
    let a = replica_at(&dir.path().join("hub-a"), &schema.url, &bucket, &ota);
    let b = replica_at(&dir.path().join("hub-b"), &schema.url, &bucket, &ota);
    for hub in [&a, &b] {
        let (status, keys) = hub.api("GET", "/api/v1/ota/keys", None);
        assert_eq!(
            (status, keys["rollout_key"].as_str()),
            (200, Some(public.trim()))
        );
    }

    // A scikit-learn model registered through A, twice: B lists both
    // versions and serves their artifact byte for byte from the bucket.
    let onnx = train_rul(dir.path());
    for expected in [1, 2] {
        let v = register_rul(&a, &onnx);
        assert_eq!(v["version"].as_u64(), Some(expected), "{v}");
    }
    let (status, versions) = b.api("GET", "/api/v1/models/rul", None);
    assert_eq!(status, 200, "{versions}");
    assert_eq!(versions["latest_version"], 2, "{versions}");
    let bearer = format!("Bearer {}", b.token);
    let (status, served) = b.get_bytes("/api/v1/models/rul/versions/2/artifact", Some(&bearer));
    assert_eq!((status, served == onnx), (200, true));

    // Versions registered through both at once are numbered once each.
    std::thread::scope(|s| {
        for hub in [&a, &b] {
            let onnx = &onnx;
            s.spawn(move || {
                for _ in 0..3 {
                    register_rul(hub, onnx);
                }
            });
        }
    });
    let (_, versions) = a.api("GET", "/api/v1/models/rul", None);
    assert_eq!(versions["latest_version"], 8, "{versions}");

    // An alias moved at B is where A finds it, and the move back at A
    // reports B's.
    let (status, moved) = b.api(
        "PUT",
        "/api/v1/models/rul/aliases/champion",
        Some(json!({"version": 2})),
    );
    assert_eq!(status, 200, "{moved}");
    let (_, info) = a.api("GET", "/api/v1/models/rul", None);
    assert_eq!(info["aliases"]["champion"], 2, "{info}");
    let (_, moved) = a.api(
        "PUT",
        "/api/v1/models/rul/aliases/champion",
        Some(json!({"version": 1})),
    );
    assert_eq!(moved["previous"], 2, "{moved}");

    // Both stop cleanly: their database sessions are closed off the async
    // runtime (closing one on it made the hub panic on its way out).
    for hub in [a, b] {
        assert!(hub.stop().success());
    }
}

/// `device` connected to `hub` with `mosquitto_sub` (QoS 1, MQTT 5),
/// waiting up to 60 s for one message on `topic`, which it prints.
fn subscribe(hub: &HubProcess, device: &str, credential: &str, topic: &str) -> Child {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &hub.mqtt.port().to_string()])
        .args(["-q", "1", "-V", "mqttv5", "-i", device, "-u", device])
        .args(["-P", credential, "-t", topic, "-C", "1", "-W", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mosquitto_sub (Debian package mosquitto-clients)")
}

/// What `subscribe` printed.
fn received(device: Child) -> serde_json::Value {
    let out = device.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_model_deployed_through_one_replica_reaches_a_device_connected_to_the_other() {
    let schema = PgSchema::new("twin_relay");
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    let a = replica(&dir.path().join("hub-a"), &schema, &bucket);
    let b = replica(&dir.path().join("hub-b"), &schema, &bucket);
    let credential = a.provision("press-1", json!({}));

    // The device, connected to A, waits for its desired twin.
    let device = subscribe(&a, "press-1", &credential, "strata/v1/press-1/down/twin");

    // A model registered and deployed to it through B.
    register_rul(&b, &train_rul(dir.path()));
    let (status, deployed) = b.api(
        "POST",
        "/api/v1/models/rul/deploy",
        Some(json!({"version": "1", "vector": "machine", "devices": ["press-1"]})),
    );
    assert_eq!(
        (status, &deployed["devices"]),
        (200, &json!(["press-1"])),
        "{deployed}"
    );

    // A publishes it within its next look for other replicas' changes.
    let twin = received(device);
    assert_eq!(twin["models"][0]["name"], "rul", "{twin}");
    assert_eq!(twin["desired_version"], 1, "{twin}");
    // Counted once the look is over.
    eventually(Duration::from_secs(10), "the twin counted", || {
        a.metric("strata_shared_twins_published_total") >= 1.0
    });
}

#[test]
fn an_approval_given_at_one_replica_reaches_a_device_connected_to_the_other() {
    let schema = PgSchema::new("command_relay");
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    let a = replica(&dir.path().join("hub-a"), &schema, &bucket);
    let b = replica(&dir.path().join("hub-b"), &schema, &bucket);
    let credential = a.provision("press-1", json!({}));

    // The device, connected to A, proposes an action and waits for a
    // command.
    let proposal = json!({
        "seq": 1, "ts_ns": now_ns(), "rule": "cool", "output": "fan",
        "action": "cool-1", "outcome": "proposed", "value": 40.0,
        "reason": "temperature above 80",
    });
    let sent = mosquitto_pub(
        &a,
        "press-1",
        &credential,
        "mqttv5",
        "strata/v1/press-1/up/events",
        PubPayload::Text(&proposal.to_string()),
    );
    assert!(sent.status.success(), "{sent:?}");
    let device = subscribe(&a, "press-1", &credential, "strata/v1/press-1/down/cmd");
    eventually(Duration::from_secs(20), "press-1 online at A", || {
        a.api("GET", "/api/v1/devices/press-1", None).1["online"] == true
    });
    // Subscribed a moment after it connected.
    std::thread::sleep(Duration::from_millis(500));

    // An operator approves it at B, which has no device connected.
    let (status, body) = b.api(
        "POST",
        "/api/v1/control/actions/press-1/cool-1/approve",
        None,
    );
    assert_eq!(status, 202, "{body}");

    // A relays the approval within its next look.
    let approval = received(device);
    assert_eq!(approval["approve"], "cool-1", "{approval}");
    // Counted once the look is over.
    eventually(Duration::from_secs(10), "the approval counted", || {
        a.metric("strata_shared_commands_relayed_total") == 1.0
    });
    // B published it itself and relays nothing back.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.metric("strata_shared_commands_relayed_total"), 0.0);
    assert_eq!(a.metric("strata_shared_commands_relayed_total"), 1.0);
    assert_eq!(a.metric("strata_shared_commands_stale_total"), 0.0);
}

#[test]
fn a_rollout_started_at_one_replica_is_carried_on_paused_and_aborted_at_the_other() {
    let schema = PgSchema::new("rollouts");
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    let key = dir.path().join("release.key");
    let public = strata(&["release".as_ref(), "keygen".as_ref(), key.as_os_str()]);
    let rollout = dir.path().join("rollout.key");
    strata(&["release".as_ref(), "keygen".as_ref(), rollout.as_os_str()]);
    let ota = format!(
        "[ota]\nrelease_keys = [\"{}\"]\nrollout_key_file = {rollout:?}\n",
        public.trim()
    );
    let a = replica_at(&dir.path().join("hub-a"), &schema.url, &bucket, &ota);
    let b = replica_at(&dir.path().join("hub-b"), &schema.url, &bucket, &ota);
    for i in 0..10 {
        a.provision(&format!("m-{i}"), json!({}));
    }

    // A release signed offline, submitted through B.
    let artifact = dir.path().join("model.bin");
    std::fs::write(&artifact, b"a made-up model").unwrap();
    let signed = dir.path().join("v2.json");
    let envelope = sign_release(&key, 2, &artifact, "machine", "a,b", &[]);
    std::fs::write(&signed, envelope.to_string()).unwrap();
    let b_url = format!("http://{}", b.http);
    strata(
        &[
            "release",
            "submit",
            signed.to_str().unwrap(),
            "--artifact",
            artifact.to_str().unwrap(),
            "--hub",
            &b_url,
            "--token",
            &b.token,
        ]
        .map(std::ffi::OsStr::new),
    );

    // Started at A: B lists it, and its canary is assigned.
    let spec = json!({"release": {"kind": "model", "name": "rul", "version": 2}});
    let (status, started) = a.api("POST", "/api/v1/campaigns", Some(spec.clone()));
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_i64().unwrap();
    let view = |hub: &HubProcess| hub.api("GET", &format!("/api/v1/campaigns/{id}"), None).1;
    eventually(Duration::from_secs(30), "the canary assigned", || {
        view(&b)["totals"]["assigned"] == 1
    });
    let canary = (0..10)
        .map(|i| format!("m-{i}"))
        .find(|d| {
            let (_, twin) = b.api("GET", &format!("/api/v1/devices/{d}/twin"), None);
            twin["desired"]["updates"]
                .as_array()
                .is_some_and(|u| !u.is_empty())
        })
        .expect("one device has its assignment");
    // One rollout of a release at a time, whichever replica is asked.
    let (status, refused) = b.api("POST", "/api/v1/campaigns", Some(spec));
    assert_eq!(status, 409, "{refused}");

    // Paused at B, resumed at A, aborted at B: each seen at the other.
    let act = |hub: &HubProcess, action: &str| {
        let (status, v) = hub.api("POST", &format!("/api/v1/campaigns/{id}/{action}"), None);
        assert_eq!(status, 200, "{action}: {v}");
        v
    };
    let paused = act(&b, "pause");
    assert_eq!(view(&a)["state"], "paused");
    std::thread::sleep(Duration::from_millis(1500));
    let still = view(&a);
    assert_eq!(
        (&still["state"], &still["totals"]),
        (&json!("paused"), &paused["totals"]),
        "neither worker moved it"
    );
    act(&a, "resume");
    assert_eq!(view(&b)["state"], "running");
    act(&b, "abort");
    let aborted = view(&a);
    assert_eq!(aborted["state"], "aborted", "{aborted}");
    assert!(aborted["revision"].as_u64().unwrap() >= 4, "{aborted}");
    let (_, twin) = a.api("GET", &format!("/api/v1/devices/{canary}/twin"), None);
    assert_eq!(twin["desired"]["updates"], json!([]), "{twin}");
    for hub in [a, b] {
        assert!(hub.stop().success());
    }
}

#[test]
fn one_replica_at_a_time_runs_the_retraining_policies() {
    let schema = PgSchema::new("retrain_lease");
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    // The same policy at both, as replicas sharing one configuration have
    // it: a schedule that fires at once, and a cycle that stays open.
    let policy = "\n[[retrain]]\nmodel = \"rul\"\ncheck_s = 1\nevery_s = 1\ncollect_s = 3600\n";
    let start = |name: &str| replica_at(&dir.path().join(name), &schema.url, &bucket, policy);
    let a = start("hub-a");
    let b = start("hub-b");
    register_rul(&a, &train_rul(dir.path()));

    let leading = |hub: &HubProcess| hub.metric("strata_shared_leader{duty=\"retrain\"}") == 1.0;
    let cycles = |hub: &HubProcess| {
        let (status, list) = hub.api("GET", "/api/v1/retraining?model=rul", None);
        assert_eq!(status, 200, "{list}");
        list.as_array().unwrap().len()
    };
    eventually(Duration::from_secs(30), "a replica opens a cycle", || {
        cycles(&a) + cycles(&b) > 0
    });
    // Only one of them runs the policy: one cycle, at the replica that
    // holds the lease, and none at the other, seconds later still.
    std::thread::sleep(Duration::from_secs(3));
    let counts = (cycles(&a), cycles(&b));
    assert!(
        counts == (1, 0) || counts == (0, 1),
        "one cycle, at one replica: {counts:?}"
    );
    let (leader, other) = if counts.0 == 1 { (a, b) } else { (b, a) };
    assert!(leading(&leader) && !leading(&other));

    // The leader stops: the other takes the lease and runs the policy.
    leader.kill();
    eventually(
        Duration::from_secs(30),
        "the other replica takes over",
        || leading(&other) && cycles(&other) == 1,
    );
}

#[test]
fn one_replica_at_a_time_raises_offline_alerts() {
    let schema = PgSchema::new("offline_lease");
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    // The same rule at both replicas, which read the same registry.
    let rule = "\n[[alerts]]\nname = \"gone\"\ncondition = \"offline\"\nfor_s = 1.0\n";
    let start = |name: &str| replica_at(&dir.path().join(name), &schema.url, &bucket, rule);
    let a = start("hub-a");
    let b = start("hub-b");
    let leading =
        |hub: &HubProcess| hub.metric("strata_shared_leader{duty=\"offline_alerts\"}") == 1.0;
    let open = |hub: &HubProcess| {
        let (status, list) = hub.api("GET", "/api/v1/alerts?rule=gone&open=true", None);
        assert_eq!(status, 200, "{list}");
        list.as_array().unwrap().len()
    };

    // gw-1 publishes once through A and goes: one alert, at one replica.
    let credential = a.provision("gw-1", json!({"temp": "Cel"}));
    assert!(publish(&a, "gw-1", &credential, 1));
    eventually(Duration::from_secs(30), "an offline alert", || {
        open(&a) + open(&b) > 0
    });
    std::thread::sleep(Duration::from_secs(3));
    let counts = (open(&a), open(&b));
    assert!(
        counts == (1, 0) || counts == (0, 1),
        "one offline alert, at one replica: {counts:?}"
    );
    let (leader, other) = if counts.0 == 1 { (a, b) } else { (b, a) };
    assert!(leading(&leader) && !leading(&other));

    // The leader stops: the other takes the lease and raises the alert.
    leader.kill();
    eventually(
        Duration::from_secs(30),
        "the other replica takes over",
        || leading(&other) && open(&other) == 1,
    );
}

/// With telemetry in PostgreSQL, one replica at a time deletes what is
/// past retention (each pass would delete the same rows under its
/// writer's lock), and another takes over when it stops.
#[test]
fn one_replica_at_a_time_runs_retention_over_shared_telemetry() {
    let schema = PgSchema::new("retention_lease");
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    let storage = format!(
        "[storage]
postgres = {:?}
retention_days = 30
retention_check_s = 1
",
        schema.url
    );
    let a = replica_at(&dir.path().join("hub-a"), &schema.url, &bucket, &storage);
    let b = replica_at(&dir.path().join("hub-b"), &schema.url, &bucket, &storage);
    let leading = |hub: &HubProcess| hub.metric("strata_shared_leader{duty=\"retention\"}") == 1.0;
    eventually(
        Duration::from_secs(30),
        "one replica runs retention",
        || leading(&a) || leading(&b),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(leading(&a) != leading(&b), "one replica, not two");
    let (leader, other) = if leading(&a) { (a, b) } else { (b, a) };
    leader.kill();
    eventually(
        Duration::from_secs(30),
        "the other replica takes over",
        || leading(&other),
    );
}

#[test]
fn with_telemetry_shared_too_any_replica_runs_a_queued_job_once_and_takes_back_an_abandoned_one() {
    let schema = PgSchema::new("jobs");
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::start(dir.path());
    let telemetry = format!("[storage]\npostgres = {:?}\n", schema.url);
    let a = replica_at(&dir.path().join("hub-a"), &schema.url, &bucket, &telemetry);
    let b = replica_at(&dir.path().join("hub-b"), &schema.url, &bucket, &telemetry);
    let store = strata_store::postgres::PostgresTelemetry::connect(&schema.url).unwrap();
    let machines = ["m-1", "m-2"];
    seed_into(&a, &store, &machines, 240, &|i| {
        simulator(Scenario::Machine, i as u64 + 1)
    });
    let spec = json!({
        "model": "rul",
        "trainer": {"type": "gbt_regressor"},
        "dataset": {
            "devices": machines, "pipeline": pipeline(MACHINE_PIPELINE),
            "vector": "bearing", "target": "label.rul_h",
        },
    });

    // A job left running by a replica that is gone (its worker silent for
    // longer than the store allows) is taken back and run by a live one.
    let jobs = strata_store::postgres::PostgresJobs::connect(&schema.url).unwrap();
    use strata_store::JobStore;
    let abandoned = jobs.create_job("train", &spec, now_ns()).unwrap();
    let silent = now_ns() - strata_store::postgres::SILENT_NS - 1_000_000_000;
    assert_eq!(jobs.claim_job(silent).unwrap().unwrap().id, abandoned);

    // Two jobs queued at each replica.
    let mut ids = vec![abandoned];
    for hub in [&a, &b, &a, &b] {
        let (status, job) = hub.api("POST", "/api/v1/jobs/train", Some(spec.clone()));
        assert_eq!(status, 202, "{job}");
        ids.push(job["id"].as_i64().unwrap());
    }
    for &id in &ids {
        let job = b.wait_job(id, Duration::from_secs(240));
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    // Each ran once: the abandoned one a second time, the others once,
    // and each registered one version.
    let (_, listed) = a.api("GET", "/api/v1/jobs", None);
    let attempts: Vec<(i64, u64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["id"].as_i64().unwrap(), j["attempts"].as_u64().unwrap()))
        .collect();
    assert_eq!(attempts.len(), 5, "{listed}");
    for (id, n) in attempts {
        assert_eq!(n, if id == abandoned { 2 } else { 1 }, "job {id}: {listed}");
    }
    let (_, model) = b.api("GET", "/api/v1/models/rul", None);
    assert_eq!(model["latest_version"], 5, "{model}");
}
