//! Drift monitoring end to end, against the real `strata hub` binary:
//! a model trained at the hub gets a reference profile; deploying it hands
//! the profile's bins to the devices; their sketches (made by the edge's
//! own code, published by `mosquitto_pub` as each device, and sent by a
//! real `strata edge` agent) are checked and stored once; the drift report
//! finds that a faulty temperature sensor on the firmware 2.3 devices
//! drifts, and says that the drift is confined to firmware 2.3. Bad
//! sketches are refused and counted.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use strata_edge::drift::ModelDrift;
use strata_edge::sources::simulator::{Degradation, Scenario};
use strata_proto::{DriftSettings, SketchBatch};

/// The faulty sensor: reads 12 degrees too warm from the 150th second on.
fn faulty() -> Degradation {
    Degradation {
        signal: "temperature".into(),
        from_batch: 150,
        gain: 1.0,
        offset: 12.0,
    }
}

/// Sketch batches of a device over `seconds` after the training history,
/// made as the agent makes them: the edge pipeline, the deployed model,
/// and `strata_edge::drift::ModelDrift` with the deployment's settings.
fn sketches(
    settings: &DriftSettings,
    model: &dyn strata_infer::Model,
    seed: u64,
    degraded: bool,
    seconds: i64,
) -> Vec<SketchBatch> {
    let mut sim = simulator(Scenario::Machine, seed);
    if degraded {
        sim.degradation = Some(faulty());
    }
    let config: strata_pipeline::PipelineConfig = toml::from_str(MACHINE_PIPELINE).unwrap();
    let mut pipeline = strata_pipeline::Pipeline::new(&config).unwrap();
    let mut out = strata_pipeline::Output::new();
    let features: Vec<String> = config.vectors[0].features.clone();
    let outputs = strata_infer::output_names(model.outputs());
    let mut drift = ModelDrift::new("rul", 1, settings, &features, &outputs).unwrap();
    let start = history_end_ns();
    let mut batches = Vec::new();
    let mut y = vec![0f32; model.output_len()];
    for seq in 1..=seconds {
        pipeline.push_batch(
            &sim.batch(seq as u64, start + seq * 1_000_000_000),
            &mut out,
        );
        for v in out.take_vectors() {
            model.run(&v.values, &mut y).unwrap();
            batches.extend(drift.observe(v.ts_ns, &v.values, &y));
        }
    }
    batches.extend(drift.take());
    for (i, b) in batches.iter_mut().enumerate() {
        b.seq = i as u64 + 1;
    }
    batches
}

fn publish(hub: &HubProcess, device: &str, credential: &str, payload: &str) {
    let out = mosquitto_pub(
        hub,
        device,
        credential,
        "mqttv5",
        &format!("strata/v1/{device}/up/sketch"),
        PubPayload::Text(payload),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn report(hub: &HubProcess, query: &str) -> Value {
    let (status, r) = hub.api(
        "GET",
        &format!(
            "/api/v1/models/rul/versions/1/drift?from_ns=0&to_ns={}&{query}",
            i64::MAX
        ),
        None,
    );
    assert_eq!(status, 200, "{r}");
    r
}

#[test]
fn a_faulty_sensor_on_one_firmware_is_found_and_attributed_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, "[drift]\nwindow_s = 5\n").unwrap();
    let hub = HubProcess::start_with(
        &dir.path().join("hub"),
        &["--config", config.to_str().unwrap()],
    );
    let devices = [
        "press-1", "press-2", "press-3", "press-4", "press-5", "press-6",
    ];
    let credentials = seed(&hub, &devices, Scenario::Machine, 480);
    for (i, d) in devices.iter().enumerate() {
        let firmware = if i < 4 { "2.2" } else { "2.3" };
        let (status, body) = hub.api(
            "PATCH",
            &format!("/api/v1/devices/{d}"),
            Some(json!({ "firmware_version": firmware })),
        );
        assert_eq!(status, 200, "{body}");
    }

    // Training profiles the version: 9 features and the prediction.
    let job = train(
        &hub,
        json!({ "model": "rul", "trainer": {"type": "gbt_regressor"}, "dataset": {
            "devices": devices, "pipeline": pipeline(MACHINE_PIPELINE),
            "vector": "bearing", "target": "label.rul_h" } }),
    );
    assert_eq!(job["result"]["version"], 1, "{job}");
    let (status, profile) = hub.api("GET", "/api/v1/models/rul/versions/1/profile", None);
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["features"].as_array().unwrap().len(), 9);
    assert_eq!(profile["outputs"][0]["name"], "prediction");
    assert!(
        profile["rows"].as_u64().unwrap() > 1000,
        "{}",
        profile["rows"]
    );
    // A profile never changes.
    let (status, _) = hub.api(
        "POST",
        "/api/v1/models/rul/versions/1/profile",
        Some(
            json!({ "devices": devices, "pipeline": pipeline(MACHINE_PIPELINE),
                     "vector": "bearing", "target": "label.rul_h" }),
        ),
    );
    assert_eq!(status, 409);

    // Deploying hands the bins, the window and the detector to devices.
    let (status, deployed) = hub.api(
        "POST",
        "/api/v1/models/rul/deploy",
        Some(json!({ "version": "1" })),
    );
    assert_eq!(status, 200, "{deployed}");
    let (_, twin) = hub.api("GET", "/api/v1/devices/press-1/twin", None);
    let settings: DriftSettings =
        serde_json::from_value(twin["desired"]["models"][0]["drift"].clone())
            .expect("drift settings");
    assert_eq!(settings.window_s, 5);
    assert_eq!(settings.features.len(), 9);
    assert_eq!(settings.detector.as_ref().unwrap()["kind"], "adwin");

    // Each device's sketches of 300 s, published as the device.
    let (status, onnx) = hub.get_bytes(
        "/api/v1/models/rul/versions/1/artifact",
        Some(&format!("Bearer {}", hub.token)),
    );
    assert_eq!(status, 200);
    let model = strata_infer::load_model(&onnx).unwrap();
    let mut sent = 0;
    let mut first = None;
    for (i, d) in devices.iter().enumerate() {
        for b in sketches(&settings, &*model, 100 + i as u64, i >= 4, 300) {
            let json = serde_json::to_string(&b).unwrap();
            first.get_or_insert((i, json.clone()));
            publish(&hub, d, &credentials[i], &json);
            sent += 1;
        }
    }
    assert_eq!(
        hub.metric("strata_sketch_batches_stored_total"),
        sent as f64
    );

    // Healthy machines differ from one another and from the training
    // fleet by a PSI of up to about 0.8 on the noisiest features (window
    // standard deviations over 300 windows); the faulty sensor moves the
    // temperature features by about 7 and the prediction by about 1.6.
    let r = report(&hub, "by=device,site,firmware&psi_threshold=1.25");
    eprintln!("{}", serde_json::to_string_pretty(&r["findings"]).unwrap());
    assert_eq!(
        (r["batches"].as_u64(), r["devices"].as_u64()),
        (Some(sent), Some(6))
    );
    let signals = r["signals"].as_array().unwrap();
    let signal = |name: &str| signals.iter().find(|s| s["name"] == name).unwrap();
    for name in ["w.temperature.mean", "w.temperature.max"] {
        let a = &signal(name)["attribution"];
        assert_eq!(a["by"], "firmware", "{name}: {a}");
        assert_eq!(a["drifting"], json!(["2.3"]), "{name}: {a}");
        assert_eq!(a["steady"], json!(["2.2"]), "{name}: {a}");
        let by_firmware = signal(name)["segments"]["firmware"].as_array().unwrap();
        let psi = |v: &str| {
            by_firmware.iter().find(|g| g["value"] == v).unwrap()["score"]["psi"]
                .as_f64()
                .unwrap()
        };
        assert!(
            psi("2.3") > 1.25 && psi("2.2") < 0.25,
            "{name}: 2.3 {} vs 2.2 {}",
            psi("2.3"),
            psi("2.2")
        );
    }
    // The hub's own detector, over each device's window means, finds when
    // the faulty sensors went wrong, 150 s into the windows. (It also
    // flags the bearings' wear, a real change on every machine; that is
    // why drift verdicts come from the profile, not from the detector.)
    for d in ["press-5", "press-6"] {
        let at = r["hub_detections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["device"] == d && h["signal"] == "w.temperature.mean")
            .map(|h| (h["window_end_ns"].as_i64().unwrap() - history_end_ns()) / 1_000_000_000)
            .collect::<Vec<_>>();
        assert!(
            at.iter().any(|s| (150..=185).contains(s)),
            "{d}: detections at {at:?} s"
        );
    }
    // The sensors that work do not drift anywhere.
    for name in [
        "w.temperature.std",
        "w.vibration_rms.mean",
        "w.vibration_rms.max",
        "w.current.mean",
        "w.current.std",
        "w.current.max",
    ] {
        assert!(
            signal(name)["attribution"].is_null(),
            "{name}: {}",
            signal(name)
        );
    }
    assert!(
        r["findings"].as_array().unwrap().iter().any(|f| f
            .as_str()
            .unwrap()
            .starts_with("feature w.temperature.mean: drifts only on firmware 2.3 (2 of 6")),
        "{}",
        r["findings"]
    );

    // A retry is stored once; sketches over other bins and garbage are
    // refused, counted, and change nothing.
    let (i, again) = first.unwrap();
    publish(&hub, devices[i], &credentials[i], &again);
    assert_eq!(hub.metric("strata_sketch_batches_duplicate_total"), 1.0);
    let mut wrong: SketchBatch = serde_json::from_str(&again).unwrap();
    wrong.seq = 9999;
    wrong.features[0].bins = "0123456789abcdef".into();
    publish(
        &hub,
        devices[i],
        &credentials[i],
        &serde_json::to_string(&wrong).unwrap(),
    );
    let mut other_version = wrong.clone();
    other_version.features[0].bins = serde_json::from_str::<SketchBatch>(&again)
        .unwrap()
        .features[0]
        .bins
        .clone();
    other_version.version = 7;
    other_version.stream = "sketch:rul:7".into();
    publish(
        &hub,
        devices[i],
        &credentials[i],
        &serde_json::to_string(&other_version).unwrap(),
    );
    publish(&hub, devices[i], &credentials[i], "{\"stream\": ");
    // A window in 2100 would count in every report up to then.
    let mut future: SketchBatch = serde_json::from_str(&again).unwrap();
    future.seq = 9998;
    future.start_ns = 4_102_444_800_000_000_000;
    future.end_ns = future.start_ns + 60_000_000_000;
    publish(
        &hub,
        devices[i],
        &credentials[i],
        &serde_json::to_string(&future).unwrap(),
    );
    eventually(Duration::from_secs(10), "refusals counted", || {
        hub.metric("strata_rejected_total{reason=\"sketch_mismatch\"}") == 2.0
            && hub.metric("strata_rejected_total{reason=\"malformed\"}") == 1.0
            && hub.metric("strata_rejected_total{reason=\"future_timestamp\"}") == 1.0
    });
    assert_eq!(report(&hub, "by=firmware")["batches"].as_u64(), Some(sent));

    // Real agents send their own sketches over MQTT once the model is
    // deployed to them. press-7 (firmware 2.3) has a loose vibration
    // sensor that reads 3 mm/s high; press-8 runs the same machine (same
    // seed, so the same truth) with sound sensors, for comparison.
    let pipeline_toml = MACHINE_PIPELINE
        .replace("[[windows]]", "[[pipeline.windows]]")
        .replace("[[vectors]]", "[[pipeline.vectors]]");
    let edge_metrics = free_port();
    let mut agents = Vec::new();
    for (device, firmware, fault) in [
        (
            "press-7",
            "2.3",
            "[sources.degradation]\nsignal = \"vibration_rms\"\noffset = 3.0\n",
        ),
        ("press-8", "2.2", ""),
    ] {
        let credential = hub.provision(device, json!({}));
        hub.api(
            "PATCH",
            &format!("/api/v1/devices/{device}"),
            Some(json!({ "firmware_version": firmware })),
        );
        let edge_dir = dir.path().join(device);
        std::fs::create_dir_all(&edge_dir).unwrap();
        let metrics = if device == "press-7" {
            format!("metrics_listen = \"127.0.0.1:{edge_metrics}\"\n")
        } else {
            String::new()
        };
        let edge_config = format!(
            "{}{metrics}[[sources]]\ntype = \"simulator\"\nseed = 7\ntime_scale = 3600.0\nlifetime_s = 172800.0\n\
             failure_horizon_s = 28800.0\n{fault}{pipeline_toml}",
            edge_hub_config(&hub, &edge_dir, device, &credential)
        );
        agents.push(EdgeProcess::start(&edge_dir, &edge_config));
    }
    let (status, deployed) = hub.api(
        "POST",
        "/api/v1/models/rul/deploy",
        Some(json!({ "version": "1", "devices": ["press-7", "press-8"] })),
    );
    assert_eq!(status, 200, "{deployed}");
    eventually(
        Duration::from_secs(90),
        "the agents' sketches are stored",
        || hub.metric("strata_sketch_batches_stored_total") >= sent as f64 + 4.0,
    );
    let r = report(&hub, "by=device&min_count=5");
    let vibration = r["signals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "w.vibration_rms.mean")
        .unwrap();
    let by_device = vibration["segments"]["device"].as_array().unwrap();
    let press7 = by_device
        .iter()
        .find(|g| g["value"] == "press-7")
        .expect("press-7 in the report");
    assert!(press7["score"]["psi"].as_f64().unwrap() > 1.0, "{press7}");
    assert_eq!(
        hub.metric("strata_rejected_total{reason=\"sketch_mismatch\"}"),
        2.0
    );

    // Ground truth arrives late: the machine's true remaining life, here
    // the simulator's own, posted as labels. Joined to the predictions
    // made before each label, it scores each version per device, per
    // firmware and over time.
    let mut labels: Vec<Value> = Vec::new();
    for device in ["press-7", "press-8"] {
        eventually(Duration::from_secs(60), "predictions and truth", || {
            hub.readings(device, "rul.prediction").len() >= 5
                && hub.readings(device, "label.rul_h").len() >= 20
        });
        labels.extend(hub.readings(device, "label.rul_h").iter().map(|(ts, v)| {
            json!({"device": device, "target": "label.rul_h", "ts_ns": ts, "value": v, "source": "cmms"})
        }));
    }
    let (status, stored) = hub.api("POST", "/api/v1/labels", Some(Value::Array(labels.clone())));
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["new"].as_u64(), Some(labels.len() as u64));
    let (_, again) = hub.api("POST", "/api/v1/labels", Some(Value::Array(labels)));
    assert_eq!(
        again["new"], 0,
        "labels sent again replace, not add: {again}"
    );
    let (status, refused) = hub.api(
        "POST",
        "/api/v1/labels",
        Some(json!([{"device": "nobody", "target": "label.rul_h", "ts_ns": 1, "value": 1.0}])),
    );
    assert_eq!(status, 400, "{refused}");
    let (status, accuracy) = hub.api(
        "GET",
        &format!(
            "/api/v1/models/rul/accuracy?versions=1&from_ns=0&to_ns={}&by=device,firmware",
            i64::MAX
        ),
        None,
    );
    assert_eq!(status, 200, "{accuracy}");
    let v1 = &accuracy[0];
    eprintln!("accuracy of v1: {v1}");
    assert_eq!(
        (v1["task"].as_str(), v1["prediction"].as_str()),
        (Some("regression"), Some("rul.prediction"))
    );
    assert!(v1["overall"]["pairs"].as_u64().unwrap() >= 10, "{v1}");
    assert!(v1["registered"].as_f64().is_some(), "{v1}");
    let by_device = v1["segments"]["device"].as_array().unwrap();
    let mae = |d: &str| {
        by_device.iter().find(|g| g["value"] == d).unwrap()["mae"]
            .as_f64()
            .unwrap()
    };
    // Both devices are scored on their own labels. (Whether a sensor fault
    // costs accuracy depends on where in its life the simulated machine
    // is; the figures themselves are checked in the hub's unit test.)
    for d in ["press-7", "press-8"] {
        let g = by_device.iter().find(|g| g["value"] == d).unwrap();
        assert!(g["pairs"].as_u64() >= Some(5) && mae(d).is_finite(), "{g}");
    }
    let by_firmware = v1["segments"]["firmware"].as_array().unwrap();
    assert_eq!(by_firmware.len(), 2, "{v1}");

    // KPIs: the agent's own Prometheus endpoint, and the hub's fleet view
    // (uptime, freshness, inference latency per model) on the API and
    // on /metrics.
    let scrape = || -> String {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", edge_metrics)).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        text
    };
    let edge = scrape();
    let edge_metric = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    assert!(edge.starts_with("HTTP/1.1 200 OK"), "{edge}");
    assert!(
        edge_metric(
            &edge,
            "strata_edge_inferences_total{device=\"press-7\",model=\"rul\"}"
        ) > 0.0,
        "{edge}"
    );
    assert!(
        edge_metric(
            &edge,
            "strata_edge_sketch_batches_total{device=\"press-7\"}"
        ) > 0.0,
        "{edge}"
    );
    assert!(
        edge_metric(&edge, "strata_edge_disk_free_bytes{device=\"press-7\"}") > 0.0,
        "{edge}"
    );
    // (KPIs are recomputed every 15 s: wait for one made after the labels.)
    eventually(
        Duration::from_secs(40),
        "fleet KPIs with rul's latency and accuracy",
        || {
            let (_, k) = hub.api("GET", "/api/v1/kpis", None);
            k["models"].as_array().is_some_and(|m| {
                m.iter().any(|m| {
                    m["model"] == "rul"
                        && m["scope"] == "fleet"
                        && m["latency_p50_us"].as_f64() > Some(0.0)
                })
            }) && k["accuracy"].as_array().is_some_and(|a| !a.is_empty())
        },
    );
    let (_, k) = hub.api("GET", "/api/v1/kpis", None);
    eprintln!("KPIs: {k}");
    assert_eq!(k["fleet"]["devices"], 8);
    assert!(k["fleet"]["online"].as_u64() >= Some(1), "{k}");
    assert!(
        k["sites"]["site-1"]["uptime"].as_f64().unwrap() > 0.0,
        "{k}"
    );
    let rul = k["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["scope"] == "fleet")
        .unwrap();
    assert!(
        rul["latency_p99_us"].as_f64() >= rul["latency_p50_us"].as_f64(),
        "{rul}"
    );
    assert!(hub.metric("strata_kpi_inference_latency_microseconds{model=\"rul\",scope=\"fleet\",quantile=\"0.5\"}") > 0.0);
    assert_eq!(hub.metric("strata_kpi_devices{scope=\"fleet\"}"), 8.0);
    // The serving version's accuracy on the last day's labels is a KPI too.
    let accuracy = &k["accuracy"][0];
    assert_eq!(
        (accuracy["model"].as_str(), accuracy["version"].as_u64()),
        (Some("rul"), Some(1)),
        "{k}"
    );
    assert!(
        accuracy["pairs"].as_u64() >= v1["overall"]["pairs"].as_u64(),
        "{accuracy}"
    );
    assert!(accuracy["decay"].as_f64().is_some(), "{accuracy}");
    assert!(hub.metric("strata_kpi_model_mae{model=\"rul\",version=\"1\"}") > 0.0);
}
