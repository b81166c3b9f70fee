//! The edge pipeline and inference end to end: a simulated machine's
//! readings go through windows and features into a feature vector, two
//! scikit-learn models (exported by skl2onnx) run on every vector in the
//! agent, and their predictions reach the hub. The test recomputes each
//! vector from the raw readings stored at the hub and asks onnxruntime for
//! the same predictions.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const WINDOW_NS: i64 = 1_000_000_000;

/// Runs tests/peers/models.py with `args` and returns its standard output.
fn models_py(args: &[&std::ffi::OsStr]) -> Vec<u8> {
    peer_script("models.py", args)
}

/// Trains the two reference models into `dir` (rul.onnx, anomaly.onnx).
fn train_models(dir: &Path) {
    models_py(&["train".as_ref(), dir.as_os_str()]);
}

/// onnxruntime's outputs for `rows` (one list per output, one row each).
fn onnxruntime(dir: &Path, model: &Path, rows: &[Vec<f32>]) -> Vec<Vec<Vec<f64>>> {
    let file = dir.join("rows.json");
    std::fs::write(&file, serde_json::to_vec(rows).unwrap()).unwrap();
    let stdout = models_py(&["run".as_ref(), model.as_os_str(), file.as_os_str()]);
    serde_json::from_slice::<Value>(&stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| serde_json::from_value(o.clone()).unwrap())
        .collect()
}

/// Mean and max of the readings in [end - 1 s, end), as the window saw them.
fn window(readings: &[(i64, f64)], end: i64) -> Option<(f32, f32)> {
    let inside: Vec<f64> = readings
        .iter()
        .filter(|(t, _)| *t >= end - WINDOW_NS && *t < end)
        .map(|(_, v)| *v)
        .collect();
    if inside.is_empty() {
        return None;
    }
    let mean = inside.iter().sum::<f64>() / inside.len() as f64;
    let max = inside.iter().cloned().fold(f64::MIN, f64::max);
    Some((mean as f32, max as f32))
}

#[test]
fn windows_features_and_two_models_run_in_the_agent_like_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    train_models(&models);

    let hub = HubProcess::start(&dir.path().join("hub"));
    let credential = hub.provision("gw-ml", json!({}));
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let config = format!(
        "{hub_part}[[sources]]\ntype = \"simulator\"\nstream = \"sim\"\ninterval_ms = 200\nreadings_per_signal = 20\nseed = 4\n\
         [pipeline]\n\
         [[pipeline.windows]]\nname = \"w\"\nsignals = [\"temperature\", \"current\"]\nsize_ms = 1000\nfeatures = [\"mean\", \"max\"]\n\
         [[pipeline.vectors]]\nname = \"machine\"\nfeatures = [\"w.temperature.mean\", \"w.temperature.max\", \"w.current.mean\", \"w.current.max\"]\n\
         [[models]]\nname = \"rul\"\nversion = \"7\"\npath = {rul:?}\nvector = \"machine\"\noutputs = [\"rul_h\"]\n\
         [[models]]\nname = \"anomaly\"\npath = {anomaly:?}\nvector = \"machine\"\n",
        hub_part = edge_hub_config(&hub, &edge_dir, "gw-ml", &credential),
        rul = models.join("rul.onnx"),
        anomaly = models.join("anomaly.onnx"),
    );
    let _agent = EdgeProcess::start(&edge_dir, &config);

    eventually(Duration::from_secs(60), "predictions at the hub", || {
        hub.readings("gw-ml", "rul.rul_h").len() >= 5
            && hub.readings("gw-ml", "anomaly.scores").len() >= 5
    });
    let temperature = hub.readings("gw-ml", "temperature");
    let current = hub.readings("gw-ml", "current");
    let predictions = hub.readings("gw-ml", "rul.rul_h");
    let scores = hub.readings("gw-ml", "anomaly.scores");
    // Windows close on the epoch grid, one per second.
    assert!(predictions.iter().all(|(t, _)| t % WINDOW_NS == 0));

    // Recompute each vector from the stored raw readings (whole windows
    // only: the first one may have started before the agent did).
    let complete = |end: i64| temperature.iter().any(|(t, _)| *t < end - WINDOW_NS);
    let mut rows = Vec::new();
    let mut expected_rul = Vec::new();
    let mut expected_score = Vec::new();
    for (i, (end, value)) in predictions.iter().enumerate() {
        if !complete(*end) {
            continue;
        }
        let (tm, tx) = window(&temperature, *end).expect("temperature in the window");
        let (cm, cx) = window(&current, *end).expect("current in the window");
        rows.push(vec![tm, tx, cm, cx]);
        expected_rul.push(*value);
        let score = scores
            .iter()
            .find(|(t, _)| t == end)
            .expect("both models ran on the vector");
        expected_score.push(score.1);
        assert_eq!(scores[i].0, *end);
    }
    assert!(rows.len() >= 3, "{} complete windows", rows.len());
    let reference = onnxruntime(dir.path(), &models.join("rul.onnx"), &rows);
    for (ours, theirs) in expected_rul.iter().zip(&reference[0]) {
        assert!(
            (ours - theirs[0]).abs() <= 1e-4 * theirs[0].abs().max(1.0),
            "rul: ours {ours}, onnxruntime {}",
            theirs[0]
        );
    }
    let reference = onnxruntime(dir.path(), &models.join("anomaly.onnx"), &rows);
    for (ours, theirs) in expected_score.iter().zip(&reference[1]) {
        assert!(
            (ours - theirs[0]).abs() <= 1e-5,
            "anomaly score: ours {ours}, onnxruntime {}",
            theirs[0]
        );
    }

    // The heartbeat reports each model's latency and runs.
    eventually(
        Duration::from_secs(30),
        "model latency in a heartbeat",
        || {
            !hub.readings("gw-ml", "health.model.rul.latency_p99_us")
                .is_empty()
                && hub
                    .readings("gw-ml", "health.model.anomaly.runs_total")
                    .last()
                    .is_some_and(|(_, n)| *n >= 1.0)
        },
    );
    assert!(!hub.readings("gw-ml", "rul.latency_us").is_empty());

    // Predictions are stored under a stream naming the model version.
    let db = rusqlite::Connection::open(dir.path().join("hub").join("strata.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT name FROM streams WHERE device_id = 'gw-ml' ORDER BY name")
        .unwrap();
    let streams: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(streams, ["health", "model:anomaly:1", "model:rul:7", "sim"]);
}

#[test]
fn a_model_that_does_not_fit_its_vector_stops_the_agent_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    train_models(dir.path());
    std::fs::write(dir.path().join("credential"), "x").unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "device = \"gw\"\ndata_dir = {:?}\n[hub]\nmqtt = \"127.0.0.1:1\"\ncredential_file = {:?}\n\
             [[sources]]\ntype = \"simulator\"\n[pipeline]\n\
             [[pipeline.windows]]\nname = \"w\"\nsignals = [\"temperature\"]\nsize_ms = 1000\nfeatures = [\"mean\", \"max\"]\n\
             [[pipeline.vectors]]\nname = \"machine\"\nfeatures = [\"w.temperature.mean\", \"w.temperature.max\"]\n\
             [[models]]\nname = \"rul\"\npath = \"rul.onnx\"\nvector = \"machine\"\n",
            dir.path().join("data"),
            dir.path().join("credential"),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["edge", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("models[0] (rul): the model takes 4 inputs but is given 2 features"),
        "{stderr}"
    );
}
