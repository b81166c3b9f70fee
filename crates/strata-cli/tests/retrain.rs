//! The retraining loop end to end, with no human step: four real `strata
//! edge` agents run the champion; the vibration sensors of two of them
//! fail high. The hub's policy sees the drift on those two devices in
//! consecutive windows, collects fresh data, retrains with the champion's
//! own recipe, beats the champion on the held-out share of the fresh
//! window, lets the challenger shadow the champion on the two devices,
//! compares them there on the labels a maintenance system posts, promotes
//! it, and the fleet's accuracy on the faulty machines recovers.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use strata_edge::sources::simulator::{Scenario, SimulatorConfig};

const DEVICES: [&str; 4] = ["press-1", "press-2", "press-3", "press-4"];
/// The devices whose vibration sensor fails.
const FAULTY: [&str; 2] = ["press-3", "press-4"];

/// A bearing's mean life, simulated seconds: with simulated time running
/// 3,600 times fast, about 24 s, so the fresh window holds a few lives.
const LIFETIME_S: f64 = 86_400.0;

/// The hub's retraining policy for `rul`, scaled to a test.
const POLICY: &str = r#"
[drift]
window_s = 2

[[retrain]]
model = "rul"
check_s = 2
drift_psi = 12.0
drift_windows = 3
drift_window_s = 8
drift_min_count = 4
collect_s = 60
train_window_s = 90
eval_share = 0.3
min_improvement = 0.05
min_eval_rows = 40
shadow_s = 25
min_pairs = 20
cooldown_s = 3600
"#;

/// Posts the ground truth stored since `after` as labels (one per second
/// of each device), as a maintenance system would; returns the newest
/// time posted per device.
fn post_labels(hub: &HubProcess, after: &mut BTreeMap<&'static str, i64>) {
    let mut labels = Vec::new();
    for d in DEVICES {
        let since = after.get(d).copied().unwrap_or(0);
        let mut last_second = since / 1_000_000_000;
        for (ts, v) in hub.readings(d, "label.rul_h") {
            if ts > since && ts / 1_000_000_000 > last_second {
                last_second = ts / 1_000_000_000;
                labels.push(json!({"device": d, "target": "label.rul_h", "ts_ns": ts, "value": v, "source": "cmms"}));
                after.insert(d, ts);
            }
        }
    }
    if !labels.is_empty() {
        let (status, body) = hub.api("POST", "/api/v1/labels", Some(Value::Array(labels)));
        assert_eq!(status, 200, "{body}");
    }
}

/// MAE of `version` over the labels of `devices` in `[from, to]`.
fn mae(hub: &HubProcess, version: u32, devices: &[&str], from: i64, to: i64) -> (f64, u64) {
    let (status, a) = hub.api(
        "GET",
        &format!(
            "/api/v1/models/rul/accuracy?versions={version}&from_ns={from}&to_ns={to}&by=device"
        ),
        None,
    );
    assert_eq!(status, 200, "{a}");
    let (mut sum, mut n) = (0.0, 0u64);
    for g in a[0]["segments"]["device"].as_array().unwrap() {
        if devices.contains(&g["value"].as_str().unwrap()) {
            let pairs = g["pairs"].as_u64().unwrap();
            sum += g["mae"].as_f64().unwrap_or(0.0) * pairs as f64;
            n += pairs;
        }
    }
    (sum / n.max(1) as f64, n)
}

#[test]
fn drift_triggers_retraining_and_a_shadowed_challenger_is_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, POLICY).unwrap();
    let hub = HubProcess::start_with(
        &dir.path().join("hub"),
        &["--config", config.to_str().unwrap()],
    );
    // The champion: trained on the machines' history, by a job (whose spec
    // is the recipe the loop retrains with).
    let credentials = seed_with(&hub, &DEVICES, 300, &|i| SimulatorConfig {
        lifetime_s: LIFETIME_S,
        ..simulator(Scenario::Machine, i as u64 + 1)
    });
    let job = train(
        &hub,
        json!({ "model": "rul", "trainer": {"type": "gbt_regressor"}, "dataset": {
            "devices": DEVICES, "pipeline": pipeline(MACHINE_PIPELINE),
            "vector": "bearing", "target": "label.rul_h" } }),
    );
    assert_eq!(job["result"]["version"], 1, "{job}");
    let (status, body) = hub.api(
        "PUT",
        "/api/v1/models/rul/aliases/champion",
        Some(json!({"version": 1})),
    );
    assert_eq!(status, 200, "{body}");

    // The same machines, live (same seeds as their history; a stream of
    // their own, as the history's seqs are taken). Two vibration sensors
    // fail ten seconds in: they read 8 mm/s high, more than any sound
    // bearing gives, so the champion takes both machines for worn out.
    let pipeline_toml = MACHINE_PIPELINE
        .replace("[[windows]]", "[[pipeline.windows]]")
        .replace("[[vectors]]", "[[pipeline.vectors]]");
    let mut agents = Vec::new();
    for (i, device) in DEVICES.iter().enumerate() {
        let fault = if FAULTY.contains(device) {
            "[sources.degradation]\nsignal = \"vibration_rms\"\noffset = 8.0\nfrom_batch = 10\n"
        } else {
            ""
        };
        let edge_dir = dir.path().join(device);
        std::fs::create_dir_all(&edge_dir).unwrap();
        let edge_config = format!(
            "{}[[sources]]\ntype = \"simulator\"\nstream = \"live\"\nseed = {}\ntime_scale = 3600.0\nlifetime_s = {LIFETIME_S:.1}\n\
             failure_horizon_s = 28800.0\n{fault}{pipeline_toml}",
            edge_hub_config(&hub, &edge_dir, device, &credentials[i]),
            i + 1
        );
        agents.push(EdgeProcess::start(&edge_dir, &edge_config));
    }
    let (status, deployed) = hub.api(
        "POST",
        "/api/v1/models/rul/deploy",
        Some(json!({ "version": "champion" })),
    );
    assert_eq!(status, 200, "{deployed}");
    let started = now_ns();

    // From here on only the maintenance system acts: it posts what each
    // machine's remaining life really was. The loop does the rest.
    let mut posted = BTreeMap::new();
    let mut seen_states: Vec<String> = Vec::new();
    let mut shadow_readings = 0;
    let deadline = Instant::now() + Duration::from_secs(400);
    let cycle = loop {
        if Instant::now() >= deadline
            || (seen_states.is_empty() && now_ns() - started > 90_000_000_000)
        {
            let (_, r) = hub.api(
                "GET",
                &format!(
                    "/api/v1/models/rul/versions/1/drift?from_ns={}&to_ns={}&by=device&min_count=1&psi_threshold=12",
                    now_ns() - 20_000_000_000,
                    now_ns()
                ),
                None,
            );
            panic!(
                "no promotion in time; states seen: {seen_states:?}; sketches stored {}; last 20 s: {r:#}",
                hub.metric("strata_sketch_batches_stored_total")
            );
        }
        post_labels(&hub, &mut posted);
        let (status, cycles) = hub.api("GET", "/api/v1/retraining?model=rul", None);
        assert_eq!(status, 200, "{cycles}");
        if let Some(c) = cycles.as_array().unwrap().first() {
            let state = c["state"].as_str().unwrap().to_owned();
            if seen_states.last() != Some(&state) {
                eprintln!(
                    "cycle {}: {state}: {}",
                    c["id"],
                    c["steps"].as_array().unwrap().last().unwrap()["message"]
                );
                seen_states.push(state.clone());
            }
            if state == "shadowing" {
                shadow_readings =
                    shadow_readings.max(hub.readings("press-3", "rul.shadow.prediction").len());
            }
            match state.as_str() {
                "promoted" => break c.clone(),
                "rejected" | "abandoned" | "failed" => {
                    let t = hub.readings("press-1", "temperature");
                    let (_, series) = hub.api("GET", "/api/v1/series?device=press-1", None);
                    let job = c["train_job"].as_i64().unwrap_or(0);
                    let (_, log) = hub.api("GET", &format!("/api/v1/jobs/{job}"), None);
                    panic!(
                        "the cycle ended {state}: {c:#}\ntemperature: {} readings, {:?}..{:?}\nseries {series}\njob {log}",
                        t.len(),
                        t.first(),
                        t.last()
                    )
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(1000));
    };
    eprintln!("cycle: {cycle:#}");

    // The trigger: drift, on faulty machines only (the first to drift in
    // three windows running, or both).
    assert_eq!(cycle["trigger"]["kind"], "drift");
    let named = cycle["trigger"]["devices"].as_array().unwrap();
    assert!(
        !named.is_empty() && named.iter().all(|d| FAULTY.contains(&d.as_str().unwrap())),
        "{cycle}"
    );
    assert!(
        cycle["trigger"]["detail"]
            .as_str()
            .unwrap()
            .contains("w.vibration_rms."),
        "{cycle}"
    );
    // Every step recorded, in order.
    let states: Vec<&str> = cycle["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "collecting",
            "training",
            "evaluating",
            "shadowing",
            "promoted"
        ]
    );
    // Trained on the fresh window with lineage to the cycle; better on
    // the held-out share; shadowed on the faulty machines and better there.
    assert_eq!(cycle["challenger"], 2);
    let (_, v2) = hub.api("GET", "/api/v1/models/rul/versions/2", None);
    assert_eq!(v2["lineage"]["trigger"], "drift:cycle-1", "{v2}");
    assert_eq!(v2["lineage"]["parent_version"], 1, "{v2}");
    assert!(
        v2["lineage"]["data_from_ns"].as_i64().unwrap() >= started - 100_000_000_000,
        "{v2}"
    );
    assert!(
        cycle["offline"]["improvement"].as_f64().unwrap() >= 0.05,
        "{cycle}"
    );
    assert_eq!(cycle["canary"], json!(FAULTY));
    assert!(
        shadow_readings > 0,
        "the agents kept the shadow's predictions apart"
    );
    assert!(hub.readings("press-1", "rul.shadow.prediction").is_empty());
    assert!(
        cycle["live"]["improvement"].as_f64().unwrap() > 0.0,
        "{cycle}"
    );
    assert!(cycle["live"]["n"].as_u64().unwrap() >= 20, "{cycle}");

    assert_eq!(
        hub.metric("strata_retrain_cycles{model=\"rul\",state=\"promoted\"}"),
        1.0
    );

    // Promoted: champion alias, every twin serves v2, no shadow left.
    let (_, model) = hub.api("GET", "/api/v1/models/rul", None);
    assert_eq!(model["aliases"]["champion"], 2, "{model}");
    for d in DEVICES {
        let (_, twin) = hub.api("GET", &format!("/api/v1/devices/{d}/twin"), None);
        let models = twin["desired"]["models"].as_array().unwrap();
        assert_eq!(models.len(), 1, "{twin}");
        assert_eq!(
            (models[0]["version"].as_u64(), models[0].get("shadow")),
            (Some(2), None)
        );
    }

    // Accuracy recovers: on the faulty machines, v2 after the promotion
    // against v1 while the fault lasted and before the shadow began.
    let promoted_at = cycle["steps"][4]["at_ns"].as_i64().unwrap();
    let shadow_from = cycle["shadow_from_ns"].as_i64().unwrap();
    eventually(
        Duration::from_secs(60),
        "labels after the promotion",
        || {
            post_labels(&hub, &mut posted);
            mae(&hub, 2, &FAULTY, promoted_at, i64::MAX).1 >= 20
        },
    );
    let (before, n_before) = mae(&hub, 1, &FAULTY, started + 20_000_000_000, shadow_from);
    let (after, n_after) = mae(&hub, 2, &FAULTY, promoted_at, i64::MAX);
    let (healthy, _) = mae(&hub, 1, &["press-1", "press-2"], started, shadow_from);
    eprintln!(
        "MAE on the faulty machines: v1 {before:.2} h ({n_before} labels), after promotion v2 {after:.2} h \
         ({n_after} labels); v1 on the sound machines {healthy:.2} h"
    );
    assert!(n_before >= 20, "{n_before}");
    assert!(after < before, "v2 {after} vs v1 {before}");
    drop(agents);
}
