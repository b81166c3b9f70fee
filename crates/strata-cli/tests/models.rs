//! The model lifecycle at the hub, against the real `strata hub` binary:
//! built-in trainers learn from simulated machines and buildings and
//! export ONNX that our runtime and onnxruntime agree on; an external
//! scikit-learn model is uploaded, refused when it cannot run, and deployed
//! to a running agent whose predictions reach storage; an external trainer
//! command and a champion/challenger backtest run as jobs; a job cut short
//! by SIGKILL runs again after the restart.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use strata_edge::sources::simulator::{Scenario, SimulatorConfig};

/// The buildings' pipeline: hourly-ish means of the drivers of HVAC load.
const BUILDING_PIPELINE: &str = r#"
[[windows]]
name = "w"
signals = ["outdoor_temperature", "occupancy", "setpoint"]
size_ms = 5000
hop_ms = 1000
features = ["mean", "max"]
[[vectors]]
name = "zone"
features = ["w.outdoor_temperature.mean", "w.outdoor_temperature.max",
            "w.occupancy.mean", "w.occupancy.max", "w.setpoint.mean"]
"#;

/// Feature vectors as the edge computes them for a simulated device.
fn vectors(toml_text: &str, sim: &SimulatorConfig, seconds: i64) -> Vec<Vec<f32>> {
    let config: strata_pipeline::PipelineConfig = toml::from_str(toml_text).unwrap();
    let mut p = strata_pipeline::Pipeline::new(&config).unwrap();
    let mut out = strata_pipeline::Output::new();
    let start = history_end_ns() - seconds * 1_000_000_000;
    for seq in 1..=seconds {
        p.push_batch(
            &sim.batch(seq as u64, start + seq * 1_000_000_000),
            &mut out,
        );
    }
    out.take_vectors().into_iter().map(|v| v.values).collect()
}

/// Checks that our runtime and onnxruntime give the same outputs, to 1e-5
/// of the output's scale (its largest magnitude over the rows, at least 1):
/// a 100-tree sum in f32 rounds differently when added in another order.
fn same_as_onnxruntime(dir: &Path, onnx: &[u8], rows: &[Vec<f32>]) -> f64 {
    let model_path = dir.join("model.onnx");
    std::fs::write(&model_path, onnx).unwrap();
    let rows_path = dir.join("rows.json");
    std::fs::write(&rows_path, serde_json::to_vec(rows).unwrap()).unwrap();
    let reference: Vec<Vec<Vec<f64>>> = serde_json::from_slice(&peer_script(
        "models.py",
        &[
            "run".as_ref(),
            model_path.as_os_str(),
            rows_path.as_os_str(),
        ],
    ))
    .unwrap();
    let want: Vec<f64> = reference[0].iter().map(|r| r[0]).collect();
    let scale = want.iter().fold(1f64, |m, w| m.max(w.abs()));
    let model = strata_infer::load_model(onnx).unwrap();
    let mut out = vec![0f32; model.output_len()];
    let mut worst = 0f64;
    for (r, row) in rows.iter().enumerate() {
        model.run(row, &mut out).unwrap();
        let got = out[0] as f64;
        worst = worst.max((got - want[r]).abs());
        assert!(
            (got - want[r]).abs() <= 1e-5 * scale,
            "row {r}: ours {got}, onnxruntime {}",
            want[r]
        );
    }
    worst
}

#[test]
fn built_in_trainers_learn_from_simulated_fleets_and_agree_with_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&dir.path().join("hub"));
    let machines = ["m-1", "m-2", "m-3", "m-4"];
    seed(&hub, &machines, Scenario::Machine, 480);
    let zones = ["zone-1", "zone-2"];
    seed(&hub, &zones, Scenario::Building, 900);
    let machine_rows = vectors(MACHINE_PIPELINE, &simulator(Scenario::Machine, 1), 120);
    let zone_rows = vectors(BUILDING_PIPELINE, &simulator(Scenario::Building, 1), 120);

    let dataset = |devices: &[&str], pipe: &str, vector: &str, target: &str| json!({ "devices": devices, "pipeline": pipeline(pipe), "vector": vector, "target": target });
    let cases = [
        (
            "rul",
            json!({"type": "gbt_regressor"}),
            dataset(&machines, MACHINE_PIPELINE, "bearing", "label.rul_h"),
            &machine_rows,
        ),
        (
            "failure",
            json!({"type": "gbt_classifier"}),
            dataset(&machines, MACHINE_PIPELINE, "bearing", "label.failure"),
            &machine_rows,
        ),
        (
            "anomaly",
            json!({"type": "isolation_forest"}),
            dataset(&machines, MACHINE_PIPELINE, "bearing", "label.failure"),
            &machine_rows,
        ),
        (
            "load",
            json!({"type": "ridge"}),
            dataset(&zones, BUILDING_PIPELINE, "zone", "hvac_power"),
            &zone_rows,
        ),
        (
            "load_gbt",
            json!({"type": "gbt_regressor"}),
            dataset(&zones, BUILDING_PIPELINE, "zone", "hvac_power"),
            &zone_rows,
        ),
    ];
    for (name, trainer, data, rows) in cases {
        let job = train(
            &hub,
            json!({ "model": name, "trainer": trainer, "dataset": data }),
        );
        let m = &job["result"]["metrics"];
        eprintln!("{name}: {m}");
        match name {
            "rul" | "load_gbt" => {
                let (mae, base) = (
                    m["mae"].as_f64().unwrap(),
                    m["baseline_mae"].as_f64().unwrap(),
                );
                assert!(
                    mae < 0.5 * base,
                    "{name}: MAE {mae} not below half the mean's {base}"
                );
            }
            "load" => {
                // HVAC power follows |setpoint - outdoor|: a linear model
                // gains less in seasons that cross the setpoint.
                let (mae, base) = (
                    m["mae"].as_f64().unwrap(),
                    m["baseline_mae"].as_f64().unwrap(),
                );
                assert!(
                    mae < 0.75 * base,
                    "{name}: MAE {mae} not below 3/4 of the mean's {base}"
                );
            }
            "failure" => {
                assert!(m["roc_auc"].as_f64().unwrap() > 0.95, "{name}: {m}");
                assert!(
                    m["f1"].as_f64().unwrap() > m["baseline_f1"].as_f64().unwrap() + 0.3,
                    "{m}"
                );
            }
            _ => assert!(m["roc_auc"].as_f64().unwrap() > 0.8, "{name}: {m}"),
        }
        let version = job["result"]["version"].as_u64().unwrap();
        let (status, v) = hub.api(
            "GET",
            &format!("/api/v1/models/{name}/versions/{version}"),
            None,
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["lineage"]["trigger"], "manual");
        assert_eq!(
            v["lineage"]["devices"].as_array().unwrap().len(),
            data["devices"].as_array().unwrap().len()
        );
        assert_eq!(v["features"], data["pipeline"]["vectors"][0]["features"]);
        assert!(v["lineage"]["data_sha256"].as_str().unwrap().len() == 64);
        let (status, onnx) = hub.get_bytes(
            &format!("/api/v1/models/{name}/versions/{version}/artifact"),
            Some(&format!("Bearer {}", hub.token)),
        );
        assert_eq!(status, 200);
        let worst = same_as_onnxruntime(dir.path(), &onnx, rows);
        eprintln!("{name}: largest difference from onnxruntime {worst:e}");
        // Trees keep their node sample counts beside the artifact.
        let (status, stats) = hub.api(
            "GET",
            &format!("/api/v1/models/{name}/versions/{version}/tree-stats"),
            None,
        );
        if name == "load" {
            assert_eq!(status, 404, "{stats}");
        } else {
            assert_eq!(status, 200, "{stats}");
            let trees = stats["trees"].as_array().unwrap();
            assert_eq!(trees.len(), 100);
            assert!(trees[0]["node_samples"][0].as_u64().unwrap() > 0);
        }
    }
}

#[test]
fn an_uploaded_scikit_learn_model_runs_at_the_edge_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&dir.path().join("hub"));
    peer_script("models.py", &["train".as_ref(), dir.path().as_os_str()]);
    let onnx = std::fs::read(dir.path().join("rul.onnx")).unwrap();
    let features = "w.temperature.mean,w.temperature.max,w.current.mean,w.current.max";

    // A schema of the wrong width is refused, naming both widths.
    let (status, body) = hub.api_bytes("/api/v1/models/rul/versions?features=a,b,c", &onnx);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("names 3 features but the model takes 4"),
        "{body}"
    );
    // So is a schema that names one feature twice.
    let (status, body) = hub.api_bytes("/api/v1/models/rul/versions?features=a,b,c,a", &onnx);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("feature \"a\" is named twice"),
        "{body}"
    );
    // An op the edge cannot run is refused, naming the op.
    peer_script(
        "models.py",
        &[
            "unsupported".as_ref(),
            dir.path().join("bad.onnx").as_os_str(),
        ],
    );
    let bad = std::fs::read(dir.path().join("bad.onnx")).unwrap();
    let (status, body) = hub.api_bytes("/api/v1/models/bad/versions", &bad);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"Imputer\""),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ai.onnx.ml"),
        "{body}"
    );

    let (status, v) = hub.api_bytes(
        &format!("/api/v1/models/rul/versions?features={features}&vector=machine&alias=champion"),
        &onnx,
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["runtime"], "strata-ml");
    assert!(
        v["ops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "ai.onnx.ml:TreeEnsembleRegressor"),
        "{v}"
    );
    let sha = v["sha256"].as_str().unwrap().to_owned();
    let (_, info) = hub.api("GET", "/api/v1/models/rul", None);
    assert_eq!(info["aliases"]["champion"], 1);

    // An agent whose pipeline makes the `machine` vector gets it deployed.
    let credential = hub.provision("press-1", json!({}));
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let config = format!(
        "{}\n[[sources]]\ntype = \"simulator\"\ninterval_ms = 200\n\
         [[pipeline.windows]]\nname = \"w\"\nsignals = [\"temperature\", \"current\"]\nsize_ms = 1000\nfeatures = [\"mean\", \"max\"]\n\
         [[pipeline.vectors]]\nname = \"machine\"\nfeatures = [\"w.temperature.mean\", \"w.temperature.max\", \"w.current.mean\", \"w.current.max\"]\n",
        edge_hub_config(&hub, &edge_dir, "press-1", &credential)
    );
    let _edge = EdgeProcess::start(&edge_dir, &config);
    // Only a device the artifact is assigned to may download it.
    let other = hub.provision("press-2", json!({}));
    let basic = basic_auth;
    let path = format!("/api/v1/device/artifacts/{sha}");
    assert_eq!(hub.get_bytes(&path, None).0, 401);
    assert_eq!(
        hub.get_bytes(&path, Some(&basic("press-1", "wrong"))).0,
        401
    );
    assert_eq!(
        hub.get_bytes(&path, Some(&basic("press-1", &credential))).0,
        403
    );

    let (status, deployed) = hub.api(
        "POST",
        "/api/v1/models/rul/deploy",
        Some(json!({ "version": "champion", "devices": ["press-1"] })),
    );
    assert_eq!(status, 200, "{deployed}");
    assert_eq!(hub.get_bytes(&path, Some(&basic("press-2", &other))).0, 403);
    let (status, bytes) = hub.get_bytes(&path, Some(&basic("press-1", &credential)));
    assert_eq!((status, bytes.len()), (200, onnx.len()));
    eventually(
        Duration::from_secs(60),
        "the agent reports rul v1 running",
        || {
            let (_, twin) = hub.api("GET", "/api/v1/devices/press-1/twin", None);
            twin["reported"]["models"][0]["state"] == "running"
                && twin["reported"]["models"][0]["version"] == 1
        },
    );
    eventually(
        Duration::from_secs(60),
        "predictions of rul v1 are stored",
        || !hub.readings("press-1", "rul.variable").is_empty(),
    );
    // Predictions carry their version in the stream name.
    let db = rusqlite::Connection::open(hub.data_dir.join("strata.db")).unwrap();
    let streams: Vec<String> = db
        .prepare("SELECT name FROM streams WHERE device_id = 'press-1'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(streams.iter().any(|s| s == "model:rul:1"), "{streams:?}");
}

#[test]
fn models_deployed_at_once_to_one_device_all_reach_its_twin() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    hub.provision("press-1", json!({}));
    let listed = deploy_models_at_once(&[&hub; 4], "press-1", &train_rul(dir.path()));
    let expected: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    assert_eq!(listed, expected, "none lost");
}

#[test]
fn an_external_trainer_runs_as_a_job_and_a_backtest_compares_champion_and_challenger() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&dir.path().join("hub"));
    let machines = ["m-1", "m-2", "m-3"];
    seed(&hub, &machines, Scenario::Machine, 300);
    let data = json!({
        "devices": machines, "pipeline": pipeline(MACHINE_PIPELINE),
        "vector": "bearing", "target": "label.rul_h",
    });
    let builtin = train(
        &hub,
        json!({ "model": "rul", "trainer": {"type": "gbt_regressor"}, "dataset": data, "alias": "champion" }),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/external_trainer.py");
    let external = train(
        &hub,
        json!({
            "model": "rul",
            "trainer": { "type": "external", "command": [peers_python(), script] },
            "dataset": data,
            "alias": "challenger",
        }),
    );
    let v = external["result"]["version"].as_u64().unwrap();
    assert_eq!(v, builtin["result"]["version"].as_u64().unwrap() + 1);
    let m = &external["result"]["metrics"];
    assert!(m["reported_train_mae"].as_f64().unwrap() > 0.0, "{m}");
    assert!(
        m["mae"].as_f64().unwrap() < m["baseline_mae"].as_f64().unwrap(),
        "{m}"
    );
    let (_, log) = hub.api("GET", &format!("/api/v1/jobs/{}/log", external["id"]), None);
    assert!(log.to_string().contains("training on"), "{log}");
    let (_, version) = hub.api("GET", &format!("/api/v1/models/rul/versions/{v}"), None);
    assert_eq!(version["lineage"]["parent_version"], 1, "{version}");
    assert!(
        version["lineage"]["trainer"]
            .as_str()
            .unwrap()
            .starts_with("external:")
    );

    let (status, job) = hub.api(
        "POST",
        "/api/v1/jobs/backtest",
        Some(json!({ "model": "rul", "versions": ["champion", "challenger"], "dataset": data })),
    );
    assert_eq!(status, 202, "{job}");
    let report =
        hub.wait_job(job["id"].as_i64().unwrap(), Duration::from_secs(120))["result"].clone();
    assert_eq!(report["versions"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["versions"][0]["version"], 1);
    assert_eq!(report["versions"][1]["version"], v);
    assert_eq!(report["criterion"], "mae");
    let maes: Vec<f64> = (0..2)
        .map(|i| report["versions"][i]["metrics"]["mae"].as_f64().unwrap())
        .collect();
    let best = if maes[0] <= maes[1] {
        "champion"
    } else {
        "challenger"
    };
    assert_eq!(report["best"], best, "{report}");
    assert!(
        maes.iter()
            .all(|&mae| mae < report["baseline"]["mae"].as_f64().unwrap()),
        "{report}"
    );
}

#[test]
fn a_training_job_cut_short_by_a_hub_crash_runs_again_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("hub");
    let hub = HubProcess::start(&data_dir);
    let machines = ["m-1", "m-2"];
    seed(&hub, &machines, Scenario::Machine, 200);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/external_trainer.py");
    let (status, job) = hub.api(
        "POST",
        "/api/v1/jobs/train",
        Some(json!({
            "model": "rul",
            "trainer": { "type": "external", "command": [peers_python(), script, "--sleep", "3.5"] },
            "dataset": { "devices": machines, "pipeline": pipeline(MACHINE_PIPELINE), "vector": "bearing", "target": "label.rul_h" },
        })),
    );
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_i64().unwrap();
    eventually(Duration::from_secs(60), "the job runs the trainer", || {
        let (_, log) = hub.api("GET", &format!("/api/v1/jobs/{id}/log"), None);
        log.to_string().contains("waiting 3.5")
    });
    hub.kill();
    // The trainer dies with the hub, rather than finish beside the rerun.
    eventually(
        Duration::from_secs(1),
        "the trainer killed with the hub",
        || {
            !std::process::Command::new("pgrep")
                .args(["-f", "external_trainer.py --sleep 3.5"])
                .status()
                .unwrap()
                .success()
        },
    );
    let hub = HubProcess::start(&data_dir);
    let job = hub.wait_job(id, Duration::from_secs(120));
    assert_eq!(job["attempts"], 2, "{job}");
    let (_, model) = hub.api("GET", "/api/v1/models/rul", None);
    assert_eq!(model["versions"].as_array().unwrap().len(), 1, "{model}");
}

#[test]
fn cancelled_jobs_stop_register_nothing_and_let_the_next_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&dir.path().join("hub"));
    let machines = ["m-1", "m-2"];
    seed(&hub, &machines, Scenario::Machine, 200);
    let data = json!({
        "devices": machines, "pipeline": pipeline(MACHINE_PIPELINE),
        "vector": "bearing", "target": "label.rul_h",
    });
    let submit = |trainer: Value| -> i64 {
        let (status, job) = hub.api(
            "POST",
            "/api/v1/jobs/train",
            Some(json!({ "model": "rul", "trainer": trainer, "dataset": data })),
        );
        assert_eq!(status, 202, "{job}");
        job["id"].as_i64().unwrap()
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/external_trainer.py");
    // A trainer that would run for ten minutes (started by a shell, as
    // a wrapper script would), then two jobs behind it.
    let slow = submit(json!({
        "type": "external",
        "command": ["sh", "-c", "\"$0\" \"$1\" --sleep 601 & wait", peers_python(), &script],
    }));
    let queued = submit(json!({ "type": "gbt_regressor" }));
    let next = submit(json!({ "type": "gbt_regressor", "params": { "n_trees": 20 } }));
    let log = |id: i64| -> Vec<String> {
        let (_, log) = hub.api("GET", &format!("/api/v1/jobs/{id}/log"), None);
        log.as_array()
            .unwrap()
            .iter()
            .map(|l| l["line"].as_str().unwrap().to_owned())
            .collect()
    };
    eventually(Duration::from_secs(60), "the slow trainer runs", || {
        log(slow).iter().any(|l| l.contains("waiting 601"))
    });
    // It runs at the job worker's lower priority (nice 10), leaving the
    // CPU to ingest and the API first.
    let pgrep = std::process::Command::new("pgrep")
        .args(["-f", "external_trainer.py --sleep 601"])
        .output()
        .unwrap();
    let pid = String::from_utf8(pgrep.stdout).unwrap();
    let pid = pid.lines().next().expect("the trainer's process");
    let ps = std::process::Command::new("ps")
        .args(["-o", "ni=", "-p", pid])
        .output()
        .unwrap();
    let nice: i32 = String::from_utf8(ps.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(nice >= 10, "the trainer runs at nice {nice}");

    // The queued job, through the API without a reason: it never starts.
    let (status, job) = hub.api("POST", &format!("/api/v1/jobs/{queued}/cancel"), None);
    assert_eq!(status, 200, "{job}");
    assert_eq!(
        (job["state"].as_str(), job["message"].as_str()),
        (Some("cancelled"), Some("cancelled by admin"))
    );
    // The running one, through the CLI: its trainer's process is killed.
    let (ok, out, err) = strata(
        &hub,
        &[
            "job",
            "cancel",
            &slow.to_string(),
            "--reason",
            "wrong dataset",
        ],
    );
    assert!(ok, "{err}");
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(job["message"], "cancelled by admin: wrong dataset");

    // The worker goes on to the next job at once, not in ten minutes.
    let done = hub.wait_job(next, Duration::from_secs(120));
    assert_eq!(done["result"]["version"], 1, "{done}");
    let (_, model) = hub.api("GET", "/api/v1/models/rul", None);
    assert_eq!(model["versions"].as_array().unwrap().len(), 1, "{model}");
    let trainer_left = std::process::Command::new("pgrep")
        .args(["-f", "external_trainer.py --sleep 601"])
        .status()
        .unwrap();
    assert!(
        !trainer_left.success(),
        "the trainer's process, started by the shell, was killed with it"
    );
    for (id, reason) in [
        (slow, "cancelled by admin: wrong dataset"),
        (queued, "cancelled by admin"),
    ] {
        let (_, job) = hub.api("GET", &format!("/api/v1/jobs/{id}"), None);
        assert_eq!(job["state"], "cancelled", "{job}");
        assert_eq!(log(id).last().unwrap(), &format!("cancelled: {reason}"));
    }
    assert_eq!(log(queued).len(), 1, "it never started: {:?}", log(queued));

    // Again: nothing changes; an ended job or an unknown one cannot be.
    let (status, again) = hub.api(
        "POST",
        &format!("/api/v1/jobs/{slow}/cancel"),
        Some(json!({ "reason": "twice" })),
    );
    assert_eq!(
        (status, again["message"].as_str()),
        (200, job["message"].as_str())
    );
    let (status, body) = hub.api("POST", &format!("/api/v1/jobs/{next}/cancel"), None);
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("has already succeeded"), "{body}");
    let (status, _) = hub.api("POST", "/api/v1/jobs/999999/cancel", None);
    assert_eq!(status, 404);
    let (status, audit) = hub.api("GET", "/api/v1/audit?action=job.cancel", None);
    assert_eq!(status, 200);
    assert!(
        audit.to_string().contains(&format!("/jobs/{slow}/cancel")),
        "{audit}"
    );

    // A trainer that ends leaving a process behind, which holds its
    // output open: the job still ends, and that process with it.
    let leaves = submit(json!({
        "type": "external", "command": ["sh", "-c", "sleep 602 & exit 3"],
    }));
    let mut job = Value::Null;
    eventually(Duration::from_secs(60), "the job ends", || {
        job = hub.api("GET", &format!("/api/v1/jobs/{leaves}"), None).1;
        job["state"] == "failed"
    });
    assert!(
        job["message"].as_str().unwrap().contains("exit status: 3"),
        "{job}"
    );
    let left = std::process::Command::new("pgrep")
        .args(["-f", "sleep 602"])
        .status()
        .unwrap();
    assert!(!left.success(), "what the trainer left running was killed");
}

/// Runs `strata` with `args` against `hub`; returns (success, stdout, stderr).
fn strata(hub: &HubProcess, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .args([
            "--hub",
            &format!("http://{}", hub.http),
            "--token",
            &hub.token,
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_model_commands_drive_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&dir.path().join("hub"));
    peer_script("models.py", &["train".as_ref(), dir.path().as_os_str()]);
    let file = dir.path().join("anomaly.onnx");
    let file = file.to_str().unwrap();
    let (ok, out, err) = strata(
        &hub,
        &["model", "upload", "anomaly", file, "--vector", "machine"],
    );
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["features"], json!(["f0", "f1", "f2", "f3"]));
    let (ok, _, err) = strata(
        &hub,
        &["model", "upload", "anomaly", file, "--features", "a,b"],
    );
    assert!(!ok);
    assert!(
        err.contains("names 2 features but the model takes 4"),
        "{err}"
    );
    let (ok, out, err) = strata(&hub, &["model", "alias", "anomaly", "champion", "1"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["previous"],
        Value::Null
    );
    let (ok, out, _) = strata(&hub, &["model", "list"]);
    assert!(ok);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["aliases"]["champion"], 1, "{list}");
    // Deploying to a fleet that has no active device is refused, clearly.
    let (ok, _, err) = strata(
        &hub,
        &["model", "deploy", "anomaly", "--version", "champion"],
    );
    assert!(!ok);
    assert!(err.contains("matches no active device"), "{err}");
    let (ok, _, err) = strata(&hub, &["model", "show", "nothing"]);
    assert!(!ok);
    assert!(err.contains("no model nothing"), "{err}");
}

#[test]
fn simulate_backfills_a_fleets_history_that_a_model_trains_on() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&dir.path().join("hub"));
    let state = dir.path().join("sim");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "simulate",
            "--devices",
            "3",
            "--backfill-s",
            "240",
            "--duration-s",
            "0",
        ])
        .args([
            "--lifetime-h",
            "24",
            "--site",
            "plant-9",
            "--mqtt",
            &hub.mqtt.to_string(),
        ])
        .args([
            "--hub",
            &format!("http://{}", hub.http),
            "--token",
            &hub.token,
            "--state-dir",
        ])
        .arg(&state)
        .env("STRATA_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("backfill acknowledged"), "{stdout}");
    // Every acknowledged batch is stored, once.
    assert_eq!(hub.metric("strata_batches_stored_total"), 3.0 * 240.0);
    let (_, devices) = hub.api("GET", "/api/v1/devices?site=plant-9", None);
    let ids: Vec<&str> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["machine-01", "machine-02", "machine-03"]);

    let job = train(
        &hub,
        json!({
            "model": "rul",
            "trainer": {"type": "gbt_regressor"},
            "dataset": { "devices": ids, "pipeline": pipeline(MACHINE_PIPELINE), "vector": "bearing", "target": "label.rul_h" },
        }),
    );
    let m = &job["result"]["metrics"];
    assert!(
        m["mae"].as_f64().unwrap() < 0.5 * m["baseline_mae"].as_f64().unwrap(),
        "{m}"
    );
    let (_, v) = hub.api("GET", "/api/v1/models/rul/versions/1", None);
    assert_eq!(v["lineage"]["sites"], json!(["plant-9"]), "{v}");
}

#[test]
fn a_release_signed_offline_verifies_and_a_tampered_artifact_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let strata = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let key = dir.path().join("release.key");
    let (ok, public, err) = strata(&["release".as_ref(), "keygen".as_ref(), key.as_os_str()]);
    assert!(ok, "{err}");
    let public = public.trim().to_owned();
    assert_eq!(public.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let artifact = dir.path().join("model.onnx");
    std::fs::write(&artifact, b"model bytes").unwrap();
    let (ok, signed, err) = strata(&[
        "release".as_ref(),
        "sign".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--kind".as_ref(),
        "model".as_ref(),
        "--name".as_ref(),
        "rul".as_ref(),
        "--version".as_ref(),
        "3".as_ref(),
        "--artifact".as_ref(),
        artifact.as_os_str(),
        "--vector".as_ref(),
        "bearing".as_ref(),
        "--features".as_ref(),
        "a,b".as_ref(),
        "--site".as_ref(),
        "plant-1".as_ref(),
    ]);
    assert!(ok, "{err}");
    let envelope: Value = serde_json::from_str(&signed).unwrap();
    let release: Value = serde_json::from_str(envelope["payload"].as_str().unwrap()).unwrap();
    assert_eq!(release["version"], 3);
    assert_eq!(release["artifact"]["size"], 11);
    assert_eq!(release["target"]["sites"], json!(["plant-1"]));
    let path = dir.path().join("release.json");
    std::fs::write(&path, &signed).unwrap();
    let verify = |artifact: &Path, key: &str| {
        strata(&[
            "release".as_ref(),
            "verify".as_ref(),
            path.as_os_str(),
            "--release-key".as_ref(),
            key.as_ref(),
            "--artifact".as_ref(),
            artifact.as_os_str(),
        ])
    };
    let (ok, out, err) = verify(&artifact, &public);
    assert!(ok, "{err}");
    assert!(out.starts_with("ok: model rul version 3"), "{out}");
    // The artifact changed after signing: refused, with both hashes named.
    std::fs::write(&artifact, b"model bytez").unwrap();
    let (ok, _, err) = verify(&artifact, &public);
    assert!(!ok);
    assert!(err.contains("the artifact hashes to"), "{err}");
    // Another key did not sign it.
    let other = dir.path().join("other.key");
    let (_, other_public, _) = strata(&["release".as_ref(), "keygen".as_ref(), other.as_os_str()]);
    std::fs::write(&artifact, b"model bytes").unwrap();
    let (ok, _, err) = verify(&artifact, other_public.trim());
    assert!(!ok);
    assert!(err.contains("not a trusted release key"), "{err}");
    // An edited release (a bigger version) no longer verifies.
    let edited = signed.replace("\\\"version\\\":3", "\\\"version\\\":4");
    assert_ne!(edited, signed);
    std::fs::write(&path, edited).unwrap();
    let (ok, _, err) = verify(&artifact, &public);
    assert!(!ok);
    assert!(err.contains("signature does not match"), "{err}");
}
