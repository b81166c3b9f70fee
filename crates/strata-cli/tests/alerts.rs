//! Alerts and webhooks end to end: a hub with alert rules and a webhook
//! endpoint, devices publishing with `mosquitto_pub` / `mosquitto_sub`, and a
//! webhook receiver in Python (http.server + hmac) that checks signatures.
//!
//! An over-temperature alert is raised once (however many readings breach),
//! acknowledged over the API, and cleared by a normal reading; an offline
//! alert follows a device's connection. The receiver is down while all this
//! happens, and the hub is killed with SIGKILL before it comes up: after a
//! restart every notification still arrives, signed, once per change.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    HubProcess, Peer, PubPayload, ServerCertificate, eventually, free_port, mosquitto_pub, now_ns,
};
use serde_json::{Value, json};

fn batch(seq: u64, t0: i64, values: &[f64]) -> String {
    let ts: Vec<String> = (0..values.len())
        .map(|i| (t0 + i as i64 * 100_000_000).to_string())
        .collect();
    let vs: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    format!(
        r#"{{"stream":"main","seq":{seq},"signals":[{{"name":"temperature","unit":"Cel","ts_ns":[{}],"values":[{}]}}]}}"#,
        ts.join(","),
        vs.join(",")
    )
}

fn publish(hub: &HubProcess, cred: &str, payload: &str) {
    let out = mosquitto_pub(
        hub,
        "press-1",
        cred,
        "mqttv5",
        "strata/v1/press-1/up/telemetry",
        PubPayload::Text(payload),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A device held connected by `mosquitto_sub`; disconnected on drop.
struct Connected(std::process::Child);

impl Drop for Connected {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mosquitto_sub` logged in as `device`, subscribed to `topic`.
fn subscriber(hub: &HubProcess, device: &str, cred: &str, topic: &str) -> Command {
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &hub.mqtt.port().to_string(),
        "-V",
        "mqttv5",
    ])
    .args(["-i", device, "-u", device, "-P", cred, "-t", topic])
    .stderr(Stdio::null());
    cmd
}

fn connect(hub: &HubProcess, device: &str, cred: &str) -> Connected {
    let child = subscriber(hub, device, cred, &format!("strata/v1/{device}/down/#"))
        .stdout(Stdio::null())
        .spawn()
        .expect("run mosquitto_sub");
    Connected(child)
}

fn alerts(hub: &HubProcess, query: &str) -> Vec<Value> {
    let (status, body) = hub.api("GET", &format!("/api/v1/alerts{query}"), None);
    assert_eq!(status, 200, "{body}");
    body.as_array().expect("a list").clone()
}

#[test]
fn alerts_are_deduplicated_acknowledged_cleared_and_webhooks_survive_a_receiver_outage() {
    let dir = tempfile::tempdir().unwrap();
    let receiver_port = free_port();
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[alerts]]
name = "overheat"
severity = "critical"
signal = "temperature"
condition = "above"
value = 80.0

[[alerts]]
name = "press-2-offline"
condition = "offline"
for_s = 1.0
devices = ["press-2"]

[[webhooks]]
name = "cmms"
url = "http://127.0.0.1:{receiver_port}/hooks/strata"
backoff_s = 0.2
max_backoff_s = 1.0
"#
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let hub = HubProcess::start_with(dir.path(), &["--config", config_arg]);
    let (status, rules) = hub.api("GET", "/api/v1/alert-rules", None);
    assert_eq!(status, 200);
    assert_eq!(rules.as_array().unwrap().len(), 2, "{rules}");

    let cred = hub.provision("press-1", json!({}));
    let cred2 = hub.provision("press-2", json!({}));

    // Normal, then two breaching readings in one batch, then the same batch
    // again (a duplicate, stored and evaluated once), then more breaches.
    let t = now_ns();
    publish(&hub, &cred, &batch(1, t, &[70.0, 71.0]));
    publish(&hub, &cred, &batch(2, t + 1_000_000_000, &[85.0, 90.0]));
    publish(&hub, &cred, &batch(2, t + 1_000_000_000, &[85.0, 90.0]));
    eventually(Duration::from_secs(20), "the overheat alert", || {
        !alerts(&hub, "?rule=overheat").is_empty()
    });
    publish(&hub, &cred, &batch(3, t + 2_000_000_000, &[95.0]));
    eventually(Duration::from_secs(20), "the third breach counted", || {
        alerts(&hub, "?rule=overheat")[0]["breaches"] == 3
    });
    let open = alerts(&hub, "?rule=overheat");
    assert_eq!(open.len(), 1, "one alert, not one per reading: {open:?}");
    let alert = &open[0];
    let id = alert["id"].as_i64().unwrap();
    assert_eq!(alert["state"], "active");
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["device"], "press-1");
    assert_eq!(alert["raised_value"], 85.0);
    assert_eq!(alert["last_value"], 95.0);
    assert_eq!(
        hub.metric("strata_alerts_open{severity=\"critical\",state=\"active\"}"),
        1.0
    );

    // Acknowledge it; a second acknowledgement is refused.
    let (status, acked) = hub.api(
        "POST",
        &format!("/api/v1/alerts/{id}/ack"),
        Some(json!({"by": "maria", "note": "bearing ordered"})),
    );
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(acked["acknowledged_by"], "maria");
    let (status, again) = hub.api(
        "POST",
        &format!("/api/v1/alerts/{id}/ack"),
        Some(json!({"by": "joe"})),
    );
    assert_eq!(status, 409, "{again}");
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maria")
    );
    let (status, _) = hub.api("POST", "/api/v1/alerts/9999/ack", Some(json!({"by": "x"})));
    assert_eq!(status, 404);

    // A normal reading clears it; the next breach is a new alert.
    publish(&hub, &cred, &batch(4, t + 3_000_000_000, &[60.0]));
    eventually(Duration::from_secs(20), "the alert cleared", || {
        alerts(&hub, "?state=cleared&rule=overheat")
            .iter()
            .any(|a| a["id"] == id)
    });
    // Acknowledging it now is refused (it once locked the alert thread
    // for good: the refusal looked the alert up under the lock it held).
    let (status, late) = hub.api(
        "POST",
        &format!("/api/v1/alerts/{id}/ack"),
        Some(json!({"by": "maria"})),
    );
    assert_eq!(status, 409, "{late}");
    assert!(late.to_string().contains("cleared"), "{late}");
    let (status, wrong) = hub.api("GET", "/api/v1/alerts?state=open", None);
    assert_eq!(status, 400, "a state no alert has: {wrong}");
    publish(&hub, &cred, &batch(5, t + 4_000_000_000, &[99.0]));
    eventually(Duration::from_secs(20), "a second overheat alert", || {
        alerts(&hub, "?rule=overheat&open=true")
            .first()
            .is_some_and(|a| a["id"].as_i64() != Some(id))
    });
    let (status, detail) = hub.api("GET", &format!("/api/v1/alerts/{id}"), None);
    assert_eq!(status, 200);
    let kinds: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["raised", "acknowledged", "cleared"], "{detail}");

    // press-2 connects (mosquitto_sub stays connected), then drops.
    let sub = connect(&hub, "press-2", &cred2);
    eventually(Duration::from_secs(20), "press-2 online", || {
        hub.api("GET", "/api/v1/devices/press-2", None).1["online"] == true
    });
    drop(sub);
    eventually(Duration::from_secs(20), "the offline alert", || {
        !alerts(&hub, "?rule=press-2-offline&open=true").is_empty()
    });
    // press-1 comes and goes with every mosquitto_pub, but the rule is
    // only for press-2.
    assert!(alerts(&hub, "?device=press-1&rule=press-2-offline").is_empty());

    // Every change so far is queued for the receiver, which is down: the
    // deliveries are being retried.
    eventually(
        Duration::from_secs(20),
        "retries of a failing delivery",
        || {
            let (_, d) = hub.api("GET", "/api/v1/webhooks/deliveries?state=pending", None);
            d.as_array()
                .unwrap()
                .iter()
                .any(|d| d["attempts"].as_u64().unwrap_or(0) >= 2)
        },
    );
    assert!(
        hub.metric("strata_webhook_attempts_total{endpoint=\"cmms\",outcome=\"retry\"}") >= 2.0
    );

    // The hub dies with deliveries pending, and comes back.
    let (mqtt, http) = (hub.mqtt.to_string(), hub.http.to_string());
    hub.kill();
    let hub = HubProcess::start_at(dir.path(), &mqtt, &http, &["--config", config_arg]);

    // press-2 reconnects: its offline alert clears (deduplication survived
    // the restart: no second offline alert was raised meanwhile).
    let sub = connect(&hub, "press-2", &cred2);
    eventually(Duration::from_secs(20), "the offline alert cleared", || {
        alerts(&hub, "?rule=press-2-offline&open=true").is_empty()
    });
    assert_eq!(alerts(&hub, "?rule=press-2-offline").len(), 1);

    // The receiver comes up, failing its first two requests with 503.
    let secret = dir.path().join("webhooks/cmms.secret");
    let log = dir.path().join("received.jsonl");
    let _receiver = Peer::python(
        "webhook_receiver.py",
        &[
            &receiver_port.to_string(),
            secret.to_str().unwrap(),
            "2",
            log.to_str().unwrap(),
        ],
    );
    // raised, acknowledged, cleared (alert 1); raised (alert 2); raised,
    // cleared (offline).
    let wanted = 6;
    eventually(Duration::from_secs(60), "every delivery made", || {
        let (_, d) = hub.api("GET", "/api/v1/webhooks/deliveries?state=delivered", None);
        d.as_array().unwrap().len() == wanted
    });
    drop(sub);

    let received: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(received.iter().all(|r| r["valid"] == true), "{received:?}");
    assert_eq!(received.iter().filter(|r| r["status"] == 503).count(), 2);
    let accepted: Vec<&Value> = received.iter().filter(|r| r["status"] == 200).collect();
    let mut ids: Vec<&str> = accepted
        .iter()
        .map(|r| r["delivery"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        wanted,
        "each change delivered once: {accepted:?}"
    );
    let of_first: Vec<&str> = accepted
        .iter()
        .filter(|r| r["body"]["alert"]["id"] == id)
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        of_first,
        ["alert.raised", "alert.acknowledged", "alert.cleared"],
        "in the order they happened"
    );
    let offline: Vec<&str> = accepted
        .iter()
        .filter(|r| r["body"]["alert"]["rule"] == "press-2-offline")
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(offline, ["alert.raised", "alert.cleared"]);
    let acked = accepted
        .iter()
        .find(|r| r["event"] == "alert.acknowledged")
        .unwrap();
    assert_eq!(acked["body"]["alert"]["note"], "bearing ordered");
    let (_, failed) = hub.api("GET", "/api/v1/webhooks/deliveries?state=failed", None);
    assert_eq!(failed.as_array().unwrap().len(), 0);

    // The overheat rule is taken out of the config: its open alert (the
    // second) would never clear, so it clears at the next start.
    let open = alerts(&hub, "?rule=overheat&open=true");
    assert_eq!(open.len(), 1, "{open:?}");
    let second = open[0]["id"].as_i64().unwrap();
    hub.kill();
    let text = std::fs::read_to_string(&config).unwrap();
    let without = text.replacen("name = \"overheat\"", "name = \"overheat-v2\"", 1);
    std::fs::write(&config, without).unwrap();
    let hub = HubProcess::start_at(dir.path(), &mqtt, &http, &["--config", config_arg]);
    assert!(alerts(&hub, "?rule=overheat&open=true").is_empty());
    let (_, detail) = hub.api("GET", &format!("/api/v1/alerts/{second}"), None);
    assert_eq!(detail["state"], "cleared", "{detail}");
    let last = &detail["history"].as_array().unwrap().last().unwrap()["detail"];
    assert!(
        last.as_str().unwrap().contains("no longer configured"),
        "{detail}"
    );
}

/// Predicted failure -> work order in a maintenance system (its first
/// answer a 503) -> a reduced-load command to the line's controller that
/// names the work order -> a chat message that names it too.
#[test]
fn a_workflow_chains_a_work_order_a_command_and_a_notification() {
    let dir = tempfile::tempdir().unwrap();
    let (cmms_port, chat_port) = (free_port(), free_port());
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[alerts]]
name = "overheat"
signal = "temperature"
condition = "above"
value = 80.0

[[webhooks]]
name = "cmms"
url = "http://127.0.0.1:{cmms_port}/api/work-orders"
events = ["alert.acknowledged"]
backoff_s = 0.2

[[webhooks]]
name = "chat"
url = "http://127.0.0.1:{chat_port}/strata"
events = ["alert.cleared"]

[[workflows]]
name = "overheat-response"
rules = ["overheat"]
[[workflows.steps]]
name = "work_order"
webhook = "cmms"
body = {{ title = "Overheat on {{alert.device}}", reading = "{{alert.raised_value}}" }}
[[workflows.steps]]
name = "reduce_load"
device = "controller-1"
command = {{ name = "set_load", percent = 60, work_order = "{{steps.work_order.id}}" }}
[[workflows.steps]]
name = "notify"
webhook = "chat"
body = {{ text = "{{alert.message}}: work order {{steps.work_order.id}}, load cut to 60 %" }}
"#
        ),
    )
    .unwrap();
    let hub = HubProcess::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let cred = hub.provision("press-1", json!({}));
    let controller = hub.provision("controller-1", json!({}));
    let (status, workflows) = hub.api("GET", "/api/v1/workflows", None);
    assert_eq!(status, 200);
    assert_eq!(workflows[0]["steps"].as_array().unwrap().len(), 3);

    let webhooks = dir.path().join("webhooks");
    let (cmms_log, chat_log) = (dir.path().join("cmms.jsonl"), dir.path().join("chat.jsonl"));
    let _cmms = Peer::python(
        "webhook_receiver.py",
        &[
            &cmms_port.to_string(),
            webhooks.join("cmms.secret").to_str().unwrap(),
            "1",
            cmms_log.to_str().unwrap(),
        ],
    );
    let _chat = Peer::python(
        "webhook_receiver.py",
        &[
            &chat_port.to_string(),
            webhooks.join("chat.secret").to_str().unwrap(),
            "0",
            chat_log.to_str().unwrap(),
        ],
    );
    // The controller listens for commands.
    let listener = subscriber(
        &hub,
        "controller-1",
        &controller,
        "strata/v1/controller-1/down/cmd",
    )
    .args(["-q", "1", "-C", "1", "-W", "60"])
    .stdout(Stdio::piped())
    .spawn()
    .expect("run mosquitto_sub");
    eventually(Duration::from_secs(20), "the controller online", || {
        hub.api("GET", "/api/v1/devices/controller-1", None).1["online"] == true
    });

    publish(&hub, &cred, &batch(1, now_ns(), &[70.0, 88.0]));
    let run = || hub.api("GET", "/api/v1/workflows/runs", None).1[0].clone();
    eventually(Duration::from_secs(60), "the run finished", || {
        run()["state"] == "succeeded" || run()["state"] == "failed"
    });
    let run = run();
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["trigger"]["alert"]["device"], "press-1");
    let steps = run["steps"].as_array().unwrap();
    assert_eq!(steps[0]["attempts"], 2, "the 503 was retried: {run}");
    assert_eq!(steps[0]["output"]["id"], "WO-2");
    assert_eq!(steps[1]["output"]["device"], "controller-1");
    let (status, same) = hub.api(
        "GET",
        &format!("/api/v1/workflows/runs/{}", run["id"]),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(same["id"], run["id"]);

    let out = listener.wait_with_output().unwrap();
    let command: Value = serde_json::from_slice(&out.stdout).expect("one command, as JSON");
    assert_eq!(
        command["command"],
        json!({"name": "set_load", "percent": 60, "work_order": "WO-2"})
    );
    assert_eq!(command["workflow"], "overheat-response");

    let lines = |path: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let cmms = lines(&cmms_log);
    assert_eq!(cmms.len(), 2, "{cmms:?}");
    assert!(
        cmms.iter()
            .all(|r| r["valid"] == true && r["event"] == "workflow.step")
    );
    assert_eq!(
        cmms[1]["body"],
        json!({"title": "Overheat on press-1", "reading": 88.0})
    );
    let chat = lines(&chat_log);
    assert_eq!(chat.len(), 1, "{chat:?}");
    assert_eq!(chat[0]["valid"], true);
    let text = chat[0]["body"]["text"].as_str().unwrap();
    assert!(
        text.contains("press-1") && text.contains("work order WO-2"),
        "{text}"
    );
}

#[test]
fn an_invalid_alert_rule_or_webhook_stops_the_hub_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expect) in [
        (
            "[[alerts]]\nname = \"hot\"\ncondition = \"above\"\nvalue = 1\n",
            "needs a signal",
        ),
        (
            "[[webhooks]]\nname = \"x\"\nurl = \"ftp://h/\"\n",
            "http://",
        ),
        (
            "[[workflows]]\nname = \"w\"\n[[workflows.steps]]\nname = \"a\"\nwebhook = \"nowhere\"\n",
            "no [[webhooks]] endpoint named \"nowhere\"",
        ),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["hub", "--config", config.to_str().unwrap(), "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{err}");
    }
}

#[test]
fn webhooks_go_over_https_to_endpoints_whose_certificate_chains_to_their_ca() {
    let dir = tempfile::tempdir().unwrap();
    // An internal system's own CA and its server certificate, made with
    // openssl; the receiver serves them with Python's ssl module.
    let ServerCertificate {
        ca: ca_pem,
        cert,
        key,
    } = ServerCertificate::make(&dir.path().join("cmms-tls"), "CMMS test CA");

    let port = free_port();
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[alerts]]
name = "overheat"
signal = "temperature"
condition = "above"
value = 80.0

# Trusts the CMMS's CA.
[[webhooks]]
name = "cmms"
url = "https://127.0.0.1:{port}/hooks/strata"
ca_file = {ca:?}
backoff_s = 0.2

# The same server, trusted against the public web's CAs only: refused.
[[webhooks]]
name = "stranger"
url = "https://127.0.0.1:{port}/hooks/strata"
max_attempts = 2
backoff_s = 0.2

# Signed with a secret the receiver does not know: it answers 401, which
# no retry can change.
[[webhooks]]
name = "forged"
url = "https://127.0.0.1:{port}/hooks/strata"
ca_file = {ca:?}
max_attempts = 5
backoff_s = 0.2
"#,
            ca = ca_pem,
        ),
    )
    .unwrap();
    let hub = HubProcess::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let log = dir.path().join("received.jsonl");
    let _receiver = Peer::python(
        "webhook_receiver.py",
        &[
            &port.to_string(),
            dir.path().join("webhooks/cmms.secret").to_str().unwrap(),
            "0",
            log.to_str().unwrap(),
            &cert,
            &key,
        ],
    );
    let cred = hub.provision("press-1", json!({}));
    publish(&hub, &cred, &batch(1, now_ns(), &[85.0]));

    let deliveries = |state: &str| -> Vec<Value> {
        let (_, d) = hub.api(
            "GET",
            &format!("/api/v1/webhooks/deliveries?state={state}"),
            None,
        );
        d.as_array().cloned().unwrap_or_default()
    };
    eventually(Duration::from_secs(30), "the deliveries settled", || {
        deliveries("delivered").len() == 1 && deliveries("failed").len() == 2
    });
    let delivered = &deliveries("delivered")[0];
    assert_eq!(delivered["endpoint"], "cmms", "{delivered}");
    let failed_at = |endpoint: &str| {
        deliveries("failed")
            .into_iter()
            .find(|d| d["endpoint"] == endpoint)
            .unwrap()
    };
    // A 4xx answer is refused for good at the first attempt.
    let forged = failed_at("forged");
    assert_eq!(forged["attempts"], 1, "{forged}");
    assert!(
        forged["last_error"].as_str().unwrap().contains("401"),
        "{forged}"
    );
    let failed = &failed_at("stranger");
    assert_eq!(failed["attempts"], 2, "{failed}");
    let error = failed["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        error.contains("certificate") || error.contains("issuer"),
        "{failed}"
    );
    // The receiver saw one request, over TLS, signed.
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let valid: Vec<&Value> = lines.iter().filter(|l| l["valid"] == true).collect();
    assert_eq!(valid.len(), 1, "{lines:?}");
    assert_eq!(valid[0]["event"], "alert.raised");
    // And the forged one once, answered 401.
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l["valid"] == false && l["status"] == 401)
    );
}

/// A device revoked while its offline alert is open: revoked on purpose,
/// it is not "offline" any more, and the alert clears instead of staying
/// open for good.
#[test]
fn the_offline_alert_of_a_device_revoked_meanwhile_clears() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        "[[alerts]]\nname = \"gone\"\ncondition = \"offline\"\nfor_s = 1.0\nclear_for_s = 0.0\n",
    )
    .unwrap();
    let hub = HubProcess::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let cred = hub.provision("press-9", json!({}));
    let sub = connect(&hub, "press-9", &cred);
    eventually(Duration::from_secs(20), "press-9 online", || {
        hub.api("GET", "/api/v1/devices/press-9", None).1["online"] == true
    });
    drop(sub);
    eventually(Duration::from_secs(20), "the offline alert", || {
        !alerts(&hub, "?rule=gone&open=true").is_empty()
    });
    let (status, body) = hub.api("POST", "/api/v1/devices/press-9/revoke", None);
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(20), "the alert cleared", || {
        alerts(&hub, "?rule=gone&open=true").is_empty()
    });
    assert_eq!(alerts(&hub, "?rule=gone").len(), 1, "raised once, cleared");
}

#[test]
fn devices_connected_when_the_hub_crashed_are_offline_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let cred = hub.provision("press-9", json!({}));
    let online =
        |hub: &HubProcess| hub.api("GET", "/api/v1/devices/press-9", None).1["online"] == true;
    let sub = connect(&hub, "press-9", &cred);
    eventually(Duration::from_secs(20), "press-9 online", || online(&hub));

    // The hub dies (no graceful stop marks anyone offline), and the
    // device's connection with it.
    let (mqtt, http) = (hub.mqtt.to_string(), hub.http.to_string());
    hub.kill();
    drop(sub);
    let hub = HubProcess::start_at(dir.path(), &mqtt, &http, &[]);
    assert!(!online(&hub), "press-9 counts as online after the crash");
    let sub = connect(&hub, "press-9", &cred);
    eventually(Duration::from_secs(20), "press-9 online again", || {
        online(&hub)
    });
    drop(sub);
}
