//! Device identity over mutual TLS, checked with clients nobody here
//! wrote: keys and a self-signed certificate from `openssl`, connections
//! from `mosquitto_pub` / `mosquitto_sub`. A device without a valid
//! certificate from the platform CA cannot connect, cannot use another
//! device's client id or topics, and a revoked device is refused at once,
//! its live session closed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{HubProcess, eventually, now_ns, openssl};
use serde_json::{Value, json};

/// A device's files: its own key, the certificate the hub issued, the CA.
struct DeviceFiles {
    key: PathBuf,
    cert: PathBuf,
    ca: PathBuf,
    credential: String,
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A P-256 key made by openssl; returns its path and its public key (DER, base64).
fn device_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        key.to_str().unwrap(),
    ]);
    let spki = openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ]);
    (key, base64(&spki))
}

/// Registers and enrolls `device` with a public key; writes its files.
fn enroll(hub: &HubProcess, dir: &Path, device: &str) -> DeviceFiles {
    hub.api(
        "POST",
        "/api/v1/sites",
        Some(json!({"id": "plant", "region": "eu"})),
    );
    let (status, created) = hub.api(
        "POST",
        "/api/v1/devices",
        Some(json!({"id": device, "site": "plant"})),
    );
    assert_eq!(status, 201, "{created}");
    let (key, public_key) = device_key(dir, device);
    // A key the CA cannot certify is refused before the token is spent:
    // the same token then enrolls the device with a good key.
    let (status, refused) = hub.api_anonymous(
        "POST",
        "/api/v1/enroll",
        Some(json!({"device": device, "token": created["enrollment_token"], "public_key": "AAAAAAAA"})),
    );
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("public key"), "{refused}");
    let (status, enrolled) = hub.api_anonymous(
        "POST",
        "/api/v1/enroll",
        Some(json!({"device": device, "token": created["enrollment_token"], "public_key": public_key})),
    );
    assert_eq!(status, 200, "{enrolled}");
    assert_eq!(enrolled["mqtt_tls_port"], hub.mqtts.unwrap().port());
    let cert = dir.join(format!("{device}.pem"));
    let ca = dir.join("ca.pem");
    std::fs::write(
        &cert,
        enrolled["certificate"]["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(&ca, enrolled["certificate"]["ca_pem"].as_str().unwrap()).unwrap();
    DeviceFiles {
        key,
        cert,
        ca,
        credential: enrolled["credential"].as_str().unwrap().to_owned(),
    }
}

fn batch(seq: u64, ts: i64, value: f64) -> String {
    json!({"stream": "main", "seq": seq,
        "signals": [{"name": "temp", "unit": "Cel", "ts_ns": [ts], "values": [value]}]})
    .to_string()
}

/// `program` (mosquitto_pub or mosquitto_sub) to the hub's TLS port over
/// MQTT 5 as `client_id`, trusting `ca`.
fn mosquitto_tls(program: &str, hub: &HubProcess, ca: &Path, client_id: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &hub.mqtts.unwrap().port().to_string(),
        "-V",
        "mqttv5",
        "-i",
        client_id,
    ])
    .arg("--cafile")
    .arg(ca);
    cmd
}

/// mosquitto_sub as `client_id` with `files`, on `filter`.
fn mosquitto_sub(hub: &HubProcess, files: &DeviceFiles, client_id: &str, filter: &str) -> Command {
    let mut sub = mosquitto_tls("mosquitto_sub", hub, &files.ca, client_id);
    sub.arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .args(["-t", filter]);
    sub
}

/// A live session of `device` with its own files, on its command topics.
fn subscribe_own(hub: &HubProcess, files: &DeviceFiles, device: &str) -> std::process::Child {
    mosquitto_sub(hub, files, device, &format!("strata/v1/{device}/down/#"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// mosquitto_pub over TLS with the given identity files (any may be absent).
fn publish(
    hub: &HubProcess,
    client_id: &str,
    files: (&Path, Option<&Path>, Option<&Path>),
    topic: &str,
    payload: &str,
) -> Output {
    let (ca, cert, key) = files;
    let mut cmd = mosquitto_tls("mosquitto_pub", hub, ca, client_id);
    cmd.args(["-q", "1", "-t", topic, "-m", payload]);
    if let Some(c) = cert {
        cmd.arg("--cert").arg(c);
    }
    if let Some(k) = key {
        cmd.arg("--key").arg(k);
    }
    cmd.output().expect("run mosquitto_pub")
}

/// A hub with mTLS whose device certificates last `ttl_s` seconds, and
/// its API over HTTPS; its config and data live in `dir`.
fn hub_with_cert_ttl(dir: &Path, ttl_s: u64) -> HubProcess {
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        format!("[http]\ntls = true\n[mqtt.tls]\ndevice_cert_ttl_s = {ttl_s}\n"),
    )
    .unwrap();
    HubProcess::start_secure(&dir.join("hub"), &["--config", config.to_str().unwrap()])
}

fn own(files: &DeviceFiles) -> (&Path, Option<&Path>, Option<&Path>) {
    (&files.ca, Some(&files.cert), Some(&files.key))
}

#[test]
fn only_a_device_with_its_own_certificate_from_the_platform_ca_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start_secure(dir.path(), &[]);
    // No plain-text listener: the one MQTT address is the TLS one.
    assert_eq!(Some(hub.mqtt), hub.mqtts);
    let press = enroll(&hub, dir.path(), "press-1");
    let other = enroll(&hub, dir.path(), "press-2");
    let t = now_ns();

    // Its own certificate, its own client id and topic: stored.
    let out = publish(
        &hub,
        "press-1",
        own(&press),
        "strata/v1/press-1/up/telemetry",
        &batch(1, t, 20.5),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hub.readings("press-1", "temp"), vec![(t, 20.5)]);

    // No certificate: the TLS handshake fails.
    let out = publish(
        &hub,
        "press-1",
        (&press.ca, None, None),
        "strata/v1/press-1/up/telemetry",
        &batch(2, t + 1, 1.0),
    );
    assert!(!out.status.success());
    // The password over TLS is not enough either.
    let mut cmd = Command::new("mosquitto_pub");
    let out = cmd
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &hub.mqtts.unwrap().port().to_string(),
            "-q",
            "1",
        ])
        .arg("--cafile")
        .arg(&press.ca)
        .args([
            "-i",
            "press-1",
            "-u",
            "press-1",
            "-P",
            &press.credential,
            "-t",
            "strata/v1/press-1/up/telemetry",
            "-m",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // A certificate openssl signed itself, for the same key and name: refused.
    let forged = dir.path().join("forged.pem");
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        press.key.to_str().unwrap(),
        "-subj",
        "/CN=press-1",
        "-days",
        "1",
        "-out",
        forged.to_str().unwrap(),
    ]);
    let out = publish(
        &hub,
        "press-1",
        (&press.ca, Some(&forged), Some(&press.key)),
        "strata/v1/press-1/up/telemetry",
        &batch(3, t + 2, 1.0),
    );
    assert!(!out.status.success());

    // press-2's certificate cannot act as press-1 ...
    let out = publish(
        &hub,
        "press-1",
        own(&other),
        "strata/v1/press-1/up/telemetry",
        &batch(4, t + 3, 1.0),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("authorised") || stderr.contains("authorized"),
        "{stderr}"
    );
    // ... nor write under press-1's topics with its own id.
    let _ = publish(
        &hub,
        "press-2",
        own(&other),
        "strata/v1/press-1/up/telemetry",
        &batch(5, t + 4, 99.0),
    );
    assert_eq!(
        hub.metric("strata_rejected_total{reason=\"acl_publish\"}"),
        1.0
    );
    assert_eq!(hub.readings("press-1", "temp"), vec![(t, 20.5)]);
    // Nor read them.
    let out = mosquitto_sub(&hub, &other, "press-2", "strata/v1/press-1/down/#")
        .args(["-W", "3"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("denied"),
        "press-2 subscribed to press-1's topics: {text:?}"
    );

    assert!(hub.metric("strata_mqtt_tls_failures_total") >= 3.0);
    assert!(hub.metric("strata_mqtt_tls_handshakes_total") >= 3.0);
    hub.kill();
}

#[test]
fn a_revoked_device_is_cut_off_and_refused_and_an_expired_certificate_fails() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_cert_ttl(dir.path(), 4);
    let press = enroll(&hub, dir.path(), "press-1");
    let short = enroll(&hub, dir.path(), "press-3");

    // A live session: mosquitto_sub on its own command topic.
    let mut sub = subscribe_own(&hub, &press, "press-1");
    eventually(Duration::from_secs(10), "press-1 is online", || {
        hub.api("GET", "/api/v1/devices/press-1", None).1["online"] == true
    });
    let (status, body) = hub.api("POST", "/api/v1/devices/press-1/revoke", None);
    assert_eq!(status, 200, "{body}");
    // The broker closes the session; mosquitto_sub, refused on reconnecting, gives up.
    eventually(Duration::from_secs(10), "the session is closed", || {
        hub.api("GET", "/api/v1/devices/press-1", None).1["online"] == false
    });
    let _ = sub.kill();
    let _ = sub.wait();
    let out = publish(
        &hub,
        "press-1",
        own(&press),
        "strata/v1/press-1/up/telemetry",
        &batch(1, now_ns(), 1.0),
    );
    assert!(!out.status.success(), "a revoked device connected");

    // Renewal: the device's credential and a new key get a new certificate.
    let (new_key, public_key) = device_key(dir.path(), "press-3-next");
    let auth = common::basic_auth("press-3", &short.credential);
    let mut response = common::api_agent(&hub.api, &hub.data_dir)
        .post(format!("{}/api/v1/device/certificate", hub.api))
        .header("Authorization", &auth)
        .send_json(json!({"public_key": public_key}))
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let renewed: Value = response.body_mut().read_json().unwrap();
    let new_cert = dir.path().join("press-3-next.pem");
    std::fs::write(&new_cert, renewed["certificate_pem"].as_str().unwrap()).unwrap();
    let renewed_files = (
        short.ca.as_path(),
        Some(new_cert.as_path()),
        Some(new_key.as_path()),
    );
    let out = publish(
        &hub,
        "press-3",
        renewed_files,
        "strata/v1/press-3/up/telemetry",
        &batch(1, now_ns(), 2.0),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // After its 4 s, the first certificate no longer gets in.
    std::thread::sleep(Duration::from_secs(5));
    let out = publish(
        &hub,
        "press-3",
        own(&short),
        "strata/v1/press-3/up/telemetry",
        &batch(2, now_ns(), 3.0),
    );
    assert!(!out.status.success(), "an expired certificate connected");
    let (_, log) = hub.api("GET", "/api/v1/audit?action=device.certificate", None);
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    hub.kill();
}

#[test]
fn a_live_session_ends_when_its_certificate_expires() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_cert_ttl(dir.path(), 6);
    let press = enroll(&hub, dir.path(), "press-5");
    let mut sub = subscribe_own(&hub, &press, "press-5");
    eventually(Duration::from_secs(10), "press-5 is online", || {
        hub.api("GET", "/api/v1/devices/press-5", None).1["online"] == true
    });
    // Nobody acts: the hub closes the session when the certificate's 6 s
    // are over (MQTT 5 DISCONNECT, maximum connect time), and
    // mosquitto_sub, told why, ends.
    eventually(Duration::from_secs(15), "the session is closed", || {
        sub.try_wait().unwrap().is_some()
    });
    eventually(Duration::from_secs(10), "press-5 is offline", || {
        hub.api("GET", "/api/v1/devices/press-5", None).1["online"] == false
    });
    hub.kill();
}

#[test]
fn an_edge_agent_enrolled_with_a_key_streams_over_tls_and_renews_before_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_cert_ttl(dir.path(), 6);
    hub.api(
        "POST",
        "/api/v1/sites",
        Some(json!({"id": "plant", "region": "eu"})),
    );
    let (_, created) = hub.api(
        "POST",
        "/api/v1/devices",
        Some(json!({"id": "gw-1", "site": "plant"})),
    );
    let identity = dir.path().join("identity");
    // Enrollment, renewal and the rest of the API over HTTPS, trusting the
    // hub's CA (handed out with the token; then kept in the identity).
    let url = hub.api.clone();
    assert!(url.starts_with("https://"), "{url}");
    let ca = hub.data_dir.join("ca.pem");
    let token = created["enrollment_token"].as_str().unwrap();
    let enrolled: Value = serde_json::from_str(&common::strata(&[
        "device".as_ref(),
        "enroll".as_ref(),
        "gw-1".as_ref(),
        "--token".as_ref(),
        token.as_ref(),
        "--hub".as_ref(),
        url.as_ref(),
        "--ca-file".as_ref(),
        ca.as_os_str(),
        "--identity-dir".as_ref(),
        identity.as_os_str(),
    ]))
    .unwrap();
    assert_eq!(enrolled["mqtt_tls_port"], hub.mqtts.unwrap().port());
    for file in ["device.key", "device.pem", "ca.pem", "credential"] {
        assert!(identity.join(file).exists(), "{file}");
    }

    let agent_config = format!(
        "device = \"gw-1\"\ndata_dir = {:?}\n[hub]\nmqtt = \"{}\"\nhttp = \"{url}\"\ncredential_file = {:?}\ntls_dir = {:?}\n\
         [[sources]]\ntype = \"simulator\"\nstream = \"line\"\ninterval_ms = 100\n",
        dir.path().join("edge"),
        hub.mqtts.unwrap(),
        identity.join("credential"),
        identity,
    );
    let first_cert = std::fs::read_to_string(identity.join("device.pem")).unwrap();
    let agent = common::EdgeProcess::start(dir.path(), &agent_config);
    let stored = || {
        hub.api("GET", "/api/v1/series", None)
            .1
            .as_array()
            .map_or(0, |s| s.len())
    };
    eventually(
        Duration::from_secs(30),
        "the agent's readings arrive over TLS",
        || stored() > 0,
    );
    // At two thirds of its 6 s, the agent renews with a new key.
    eventually(
        Duration::from_secs(20),
        "the agent renews its certificate",
        || std::fs::read_to_string(identity.join("device.pem")).unwrap() != first_cert,
    );
    let (_, log) = hub.api("GET", "/api/v1/audit?action=device.certificate", None);
    assert_eq!(log[0]["actor"], "device:gw-1", "{log}");
    // When the first certificate expires the hub ends the session; the
    // agent reconnects with the renewed one and its readings keep coming.
    let connections = hub.metric("strata_mqtt_connections_accepted_total");
    eventually(
        Duration::from_secs(20),
        "the agent reconnects after its first certificate expires",
        || hub.metric("strata_mqtt_connections_accepted_total") > connections,
    );
    let so_far = hub.metric("strata_readings_stored_total");
    eventually(
        Duration::from_secs(20),
        "readings keep arriving on the new session",
        || hub.metric("strata_readings_stored_total") > so_far,
    );
    // Restarted, it connects with the renewed certificate it kept.
    agent.kill();
    std::thread::sleep(Duration::from_secs(3));
    let before = hub.metric("strata_mqtt_connections_accepted_total");
    let agent = common::EdgeProcess::start(dir.path(), &agent_config);
    eventually(
        Duration::from_secs(30),
        "the restarted agent connects",
        || hub.metric("strata_mqtt_connections_accepted_total") > before,
    );
    agent.kill();
    hub.kill();
}
