//! Closed-loop rules end to end against a plant nobody here wrote: an
//! asyncua OPC UA server and a pymodbus server, both logging every write.
//! While the site is in phase 1 the gate is closed and nothing is written;
//! in phase 2 with its gate met, setpoints are written within bounds, at
//! the rate limit, after cooldowns; a dry-run rule never writes; an
//! approval-mode rule writes only once an operator approves through the
//! hub. Every decision reaches the hub's action record.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The writes the plant logged: (seconds, output, address, value).
fn writes(log: &Path) -> Vec<(f64, String, i64, f64)> {
    let Ok(text) = std::fs::read_to_string(log) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            (
                v["t"].as_f64().unwrap(),
                v["output"].as_str().unwrap().to_string(),
                v["address"].as_i64().unwrap(),
                v["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn fan_writes(log: &Path) -> Vec<(f64, f64)> {
    writes(log)
        .into_iter()
        .filter(|w| w.1 == "fan")
        .map(|w| (w.0, w.3))
        .collect()
}

fn register_writes(log: &Path, address: i64) -> Vec<(f64, f64)> {
    writes(log)
        .into_iter()
        .filter(|w| w.1 == "modbus" && w.2 == address)
        .map(|w| (w.0, w.3))
        .collect()
}

fn actions(hub: &HubProcess, query: &str) -> Vec<Value> {
    let (status, body) = hub.api("GET", &format!("/api/v1/control/actions?{query}"), None);
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

fn hub_config(dir: &Path, phase: u8) -> String {
    let path = dir.join(format!("hub-phase{phase}.toml"));
    std::fs::write(
        &path,
        format!(
            "[control]\ninterval_s = 1\nphases = {{ \"site-1\" = {phase} }}\n\
             [control.gates.2]\nwindow_days = 1\nmin_uptime = 0.5\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn closed_loop_rules_write_within_their_interlocks_only_while_the_site_gate_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let config = hub_config(dir.path(), 1);
    let hub = HubProcess::start_with(&hub_dir, &["--config", &config]);
    let credential = hub.provision("plant-gw", json!({}));

    let (ua, mb) = (free_port().to_string(), free_port().to_string());
    let temperature = dir.path().join("temperature");
    let log = dir.path().join("writes.jsonl");
    std::fs::write(&temperature, "70").unwrap();
    let _plant = Peer::python(
        "control_plant.py",
        &[
            &ua,
            &mb,
            temperature.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
    );

    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let endpoint = format!("opc.tcp://127.0.0.1:{ua}/strata/");
    let modbus = format!("127.0.0.1:{mb}");
    let edge_config = format!(
        r#"{hub}
[[sources]]
type = "opcua"
stream = "ua"
endpoint = "{endpoint}"
sampling_ms = 50
publishing_ms = 100
batch_ms = 200
[[sources.nodes]]
node = "ns=2;s=Line1.Temperature"
name = "temperature"

[[control.outputs]]
type = "opcua"
name = "fan"
endpoint = "{endpoint}"
node = "ns=2;s=Line1.FanSetpoint"

[[control.outputs]]
type = "modbus"
name = "load"
address = "{modbus}"
register = 10

[[control.outputs]]
type = "modbus"
name = "spare"
address = "{modbus}"
register = 11

[[control.outputs]]
type = "modbus"
name = "valve"
address = "{modbus}"
register = 12

# Fan to 80, at most 10 per second, a write a second at most.
[[control.rules]]
name = "cool"
signal = "temperature"
above = 50.0
output = "fan"
setpoint = 80.0
min = 0.0
max = 90.0
max_rate = 10.0
cooldown_s = 1.0
mode = "armed"

# Load follows the temperature, but never above 60.5 (the register holds
# whole numbers: 61, the nearest to 60.5, would be past it).
[[control.rules]]
name = "derate"
signal = "temperature"
above = 50.0
output = "load"
setpoint_signal = "temperature"
min = 0.0
max = 60.5
cooldown_s = 2.0
mode = "armed"

# A rule still on trial (dry run is the default mode).
[[control.rules]]
name = "trial"
signal = "temperature"
above = 50.0
output = "spare"
setpoint = 33.0
min = 0.0
max = 100.0
cooldown_s = 1.0

[[control.rules]]
name = "valve"
signal = "temperature"
above = 50.0
output = "valve"
setpoint = 42.0
min = 0.0
max = 50.0
cooldown_s = 1.0
mode = "approval"
"#,
        hub = edge_hub_config(&hub, &edge_dir, "plant-gw", &credential),
    );
    let _edge = EdgeProcess::start(&edge_dir, &edge_config);

    // Phase 1: the gate is closed, the rules want to act, nothing is written.
    let phase_1 = |a: &Value| {
        a["outcome"] == "blocked"
            && a["reason"]
                .as_str()
                .is_some_and(|r| r.contains("temperature 70") && r.contains("phase 1"))
    };
    eventually(
        Duration::from_secs(60),
        "an action blocked by phase 1",
        || actions(&hub, "rule=cool").iter().any(phase_1),
    );
    let (_, gates) = hub.api("GET", "/api/v1/control/gates", None);
    assert_eq!(gates[0]["open"], false, "{gates}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        writes(&log).is_empty(),
        "written with the gate closed: {:?}",
        writes(&log)
    );

    // Phase 2, whose gate (uptime >= 0.5 over a day) the site meets.
    let (mqtt, http) = (hub.mqtt.to_string(), hub.http.to_string());
    hub.kill();
    let config = hub_config(dir.path(), 2);
    let hub = HubProcess::start_at(&hub_dir, &mqtt, &http, &["--config", &config]);
    eventually(Duration::from_secs(30), "the gate opens", || {
        let (_, gates) = hub.api("GET", "/api/v1/control/gates", None);
        gates[0]["open"] == true
    });
    let (_, gates) = hub.api("GET", "/api/v1/control/gates", None);
    let check = &gates[0]["checks"][0];
    assert!(
        check["kpi"].as_str().unwrap().starts_with("uptime") && check["ok"] == true,
        "{gates}"
    );
    eventually(Duration::from_secs(60), "the fan reaches 80", || {
        fan_writes(&log).last().is_some_and(|w| w.1 == 80.0)
    });

    // The fan went 20 -> 80 in steps of at most 10, at least a second apart.
    let fan = fan_writes(&log);
    assert!(fan.len() >= 6, "{fan:?}");
    let mut previous = (0.0, 20.0);
    for &(t, v) in &fan {
        assert!((0.0..=90.0).contains(&v), "fan {v} out of bounds");
        assert!(
            (v - previous.1).abs() <= 10.0 + 1e-9,
            "step {previous:?} -> {v}"
        );
        if previous.0 > 0.0 {
            assert!(
                t - previous.0 >= 0.9,
                "cooldown: {previous:?} -> ({t}, {v})"
            );
        }
        previous = (t, v);
    }
    // The load would follow 70 but is clamped to 60.5, and written as 60.
    eventually(Duration::from_secs(20), "the load derated", || {
        !register_writes(&log, 10).is_empty()
    });
    assert_eq!(register_writes(&log, 10)[0].1, 60.0);
    eventually(Duration::from_secs(20), "the derating recorded", || {
        actions(&hub, "rule=derate").iter().any(|a| {
            a["outcome"] == "written"
                && a["value"] == 60.0
                && a["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("60 written, the nearest to 60.5"))
        })
    });
    // Cooler: the load follows the temperature down, within bounds.
    std::fs::write(&temperature, "55").unwrap();
    eventually(Duration::from_secs(20), "the load follows 55", || {
        register_writes(&log, 10)
            .last()
            .is_some_and(|w| w.1 == 55.0)
    });
    let load = register_writes(&log, 10);
    assert!(load.iter().all(|w| w.1 <= 60.5), "{load:?}");
    for pair in load.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= 1.9, "cooldown of 2 s: {load:?}");
    }

    // The dry run recorded what it would write and wrote nothing.
    let trial = actions(&hub, "rule=trial");
    assert!(
        trial
            .iter()
            .any(|a| a["outcome"] == "dry_run" && a["value"] == 33.0),
        "{trial:?}"
    );
    assert!(register_writes(&log, 11).is_empty());

    // The approval rule proposed; nothing is written until approved.
    let proposed = actions(&hub, "rule=valve")
        .into_iter()
        .find(|a| a["outcome"] == "proposed")
        .expect("a proposal");
    assert!(register_writes(&log, 12).is_empty());
    let id = proposed["action"].as_str().unwrap();
    let (status, body) = hub.api(
        "POST",
        &format!("/api/v1/control/actions/plant-gw/{id}/approve"),
        Some(json!({"by": "shift-lead"})),
    );
    assert_eq!(status, 202, "{body}");
    eventually(Duration::from_secs(20), "the valve written", || {
        !register_writes(&log, 12).is_empty()
    });
    assert_eq!(register_writes(&log, 12).len(), 1);
    assert_eq!(register_writes(&log, 12)[0].1, 42.0);
    eventually(Duration::from_secs(20), "the approval recorded", || {
        actions(&hub, &format!("action={id}"))
            .iter()
            .any(|a| a["outcome"] == "written" && a["approved_by"] == "shift-lead")
    });
    // Approving it again is refused: it is no longer a proposal.
    let (status, _) = hub.api(
        "POST",
        &format!("/api/v1/control/actions/plant-gw/{id}/approve"),
        Some(json!({"by": "shift-lead"})),
    );
    assert_eq!(status, 409);
    let (status, _) = hub.api(
        "POST",
        "/api/v1/control/actions/plant-gw/no-such/approve",
        Some(json!({"by": "x"})),
    );
    assert_eq!(status, 404);

    // Every write the plant saw is in the hub's record, with its reason.
    let recorded = |rule: &str| {
        actions(&hub, &format!("rule={rule}&limit=1000"))
            .iter()
            .filter(|a| a["outcome"] == "written")
            .count()
    };
    eventually(Duration::from_secs(20), "records of every write", || {
        recorded("cool") == fan_writes(&log).len()
            && recorded("derate") == register_writes(&log, 10).len()
    });
    let cool = actions(&hub, "rule=cool&limit=1000");
    assert!(
        cool.iter()
            .any(|a| a["reason"].as_str().unwrap().contains("rate limited")),
        "{cool:?}"
    );
    // Each write's intent was recorded before it (an earlier record of the
    // device), so a power cut between the two leaves a trace.
    for w in cool.iter().filter(|a| a["outcome"] == "written") {
        assert!(
            cool.iter().any(|i| i["outcome"] == "writing"
                && i["action"] == w["action"]
                && i["value"] == w["value"]
                && i["seq"].as_u64() < w["seq"].as_u64()),
            "no intent before {w}"
        );
    }
}
