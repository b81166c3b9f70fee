//! Golden tests: scikit-learn models exported with skl2onnx, plus hand-built
//! tree ensembles covering every branch mode, aggregate and post-transform,
//! each run by onnxruntime (in Python) on a few hundred rows. Every runtime
//! of this crate that loads a model must give onnxruntime's outputs.
//!
//! The models and the reference outputs are made fresh by
//! `tests/golden/make_golden.py`, run with the Python of the test peers
//! virtualenv (`STRATA_PEERS_PYTHON`, default `<workspace>/target/peers/bin/python`,
//! created by `scripts/test.sh`).
//!
//! Tolerance: |ours - onnxruntime| <= 1e-5 * max(1, |onnxruntime|), i.e.
//! 1e-5 absolute for values up to 1 and 1e-5 relative above; NaN must meet
//! NaN. Labels must be equal. One exception: MLP outputs on the extreme rows
//! (a feature of magnitude 1e4 or more, thousands of standard deviations
//! out) get 1e-4, because there float32 rounding inside the network
//! (onnxruntime's own error against exact arithmetic is ~1e-5 relative)
//! exceeds 1e-5; tree outputs get 1e-5 on every row.
//!
//! tract is held to the same tolerance on the skl2onnx models and the
//! hand-built multi-class ensembles; on hand-built two-class encodings it is
//! known to differ (see the brief) and its differences are printed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use strata_infer::{InferenceRuntime, MlRuntime, Model, TractRuntime, load_model};

const TOLERANCE: f32 = 1e-5;

fn peers_python() -> PathBuf {
    if let Some(p) = std::env::var_os("STRATA_PEERS_PYTHON") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/bin/python")
}

struct Golden {
    name: String,
    ops: Vec<String>,
    bytes: Vec<u8>,
    input_len: usize,
    inputs: Vec<f32>,
    /// (name, values per row, all values)
    outputs: Vec<(String, usize, Vec<f32>)>,
}

fn number(v: &Json) -> f32 {
    match v {
        Json::Null => f32::NAN,
        Json::String(s) if s == "inf" => f32::INFINITY,
        Json::String(s) if s == "-inf" => f32::NEG_INFINITY,
        other => other
            .as_f64()
            .unwrap_or_else(|| panic!("not a number: {other}")) as f32,
    }
}

fn numbers(v: &Json) -> Vec<f32> {
    v.as_array().expect("array").iter().map(number).collect()
}

fn make_golden() -> (tempfile::TempDir, Vec<Golden>) {
    let python = peers_python();
    assert!(
        python.exists(),
        "golden tests need the Python test peers (scikit-learn, skl2onnx, onnxruntime) at {}: \
         run scripts/test.sh once, or set STRATA_PEERS_PYTHON to a Python that has them",
        python.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/make_golden.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("run make_golden.py");
    assert!(
        out.status.success(),
        "make_golden.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Json =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).expect("manifest"))
            .expect("json");
    let models = manifest["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| Golden {
            name: m["name"].as_str().unwrap().to_string(),
            ops: m["ops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_str().unwrap().to_string())
                .collect(),
            bytes: std::fs::read(dir.path().join(m["file"].as_str().unwrap())).expect("model file"),
            input_len: m["input_len"].as_u64().unwrap() as usize,
            inputs: numbers(&m["inputs"]),
            outputs: m["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    (
                        o["name"].as_str().unwrap().to_string(),
                        o["len"].as_u64().unwrap() as usize,
                        numbers(&o["values"]),
                    )
                })
                .collect(),
        })
        .collect();
    (dir, models)
}

fn close(ours: f32, reference: f32, tolerance: f32) -> bool {
    (ours.is_nan() && reference.is_nan())
        || ours == reference
        || (ours - reference).abs() <= tolerance * reference.abs().max(1.0)
}

/// Compares a model with onnxruntime's outputs on every row. Returns the
/// largest scaled error, or the first mismatch.
fn compare(golden: &Golden, model: &dyn Model, skip_output: Option<&str>) -> Result<f32, String> {
    let specs: Vec<(String, usize)> = model
        .outputs()
        .iter()
        .map(|o| (o.name.clone(), o.len))
        .collect();
    let expected: Vec<(String, usize)> = golden
        .outputs
        .iter()
        .map(|(n, l, _)| (n.clone(), *l))
        .collect();
    if specs != expected {
        return Err(format!("outputs {specs:?}, onnxruntime has {expected:?}"));
    }
    if model.input_len() != golden.input_len {
        return Err(format!(
            "input_len {} vs {}",
            model.input_len(),
            golden.input_len
        ));
    }
    let rows = golden.inputs.len() / golden.input_len;
    let mut out = vec![0.0; model.output_len()];
    let mut worst = 0.0f32;
    let network = golden
        .ops
        .iter()
        .any(|o| o == "ai.onnx:MatMul" || o == "ai.onnx:Gemm");
    for r in 0..rows {
        let x = &golden.inputs[r * golden.input_len..(r + 1) * golden.input_len];
        let extreme = x.iter().any(|v| v.abs() >= 1e4);
        let tolerance = if network && extreme { 1e-4 } else { TOLERANCE };
        model
            .run(x, &mut out)
            .map_err(|e| format!("row {r}: {e}"))?;
        let mut at = 0;
        for (name, len, values) in &golden.outputs {
            let want = &values[r * len..(r + 1) * len];
            let got = &out[at..at + len];
            at += len;
            if skip_output == Some(name.as_str()) {
                continue;
            }
            for (g, w) in got.iter().zip(want) {
                if !close(*g, *w, tolerance) {
                    return Err(format!(
                        "row {r} {x:?}: output \"{name}\" is {got:?}, onnxruntime says {want:?}"
                    ));
                }
                if w.is_finite() && g.is_finite() && tolerance == TOLERANCE {
                    worst = worst.max((g - w).abs() / w.abs().max(1.0));
                }
            }
        }
    }
    Ok(worst)
}

#[test]
fn every_runtime_matches_onnxruntime() {
    let (_dir, models) = make_golden();
    assert!(
        models.len() > 50,
        "expected the full golden set, got {} models",
        models.len()
    );
    let mut failures = Vec::new();
    let mut tract_loaded = Vec::new();
    for golden in &models {
        // The runtime load_model picks must load every golden model.
        match load_model(&golden.bytes) {
            Ok(model) => match compare(golden, &*model, None) {
                Ok(worst) => println!(
                    "{:<36} {:<10} max scaled error {worst:.2e}",
                    golden.name,
                    model.runtime()
                ),
                Err(e) => failures.push(format!("{} ({}): {e}", golden.name, model.runtime())),
            },
            Err(e) => failures.push(format!("{}: load_model failed: {e}", golden.name)),
        }
        // Strata's evaluator on every graph it can take (all of them but
        // none is skipped silently: a refusal must be an unsupported op).
        match MlRuntime.load(&golden.bytes) {
            Ok(model) => {
                if let Err(e) = compare(golden, &*model, None) {
                    failures.push(format!("{} (strata-ml): {e}", golden.name));
                }
            }
            Err(e) => failures.push(format!("{}: strata-ml refused it: {e}", golden.name)),
        }
        // tract where it loads the graph.
        match TractRuntime.load(&golden.bytes) {
            Ok(model) => {
                let binary = golden
                    .outputs
                    .iter()
                    .any(|(n, l, _)| n == "probabilities" && *l == 2);
                // tract's two-class label is known to be wrong; its
                // probabilities are still compared.
                let skip = if binary { Some("label") } else { None };
                match compare(golden, &*model, skip) {
                    Ok(worst) => {
                        println!(
                            "{:<36} tract      max scaled error {worst:.2e}",
                            golden.name
                        );
                        tract_loaded.push(golden.name.clone());
                    }
                    Err(e) if golden.name.starts_with("tiny_binary") => {
                        println!("{:<36} tract      differs (known): {e}", golden.name)
                    }
                    Err(e) => failures.push(format!("{} (tract): {e}", golden.name)),
                }
            }
            Err(e) => {
                let ml = golden.ops.iter().any(|o| o.starts_with("ai.onnx.ml:"));
                if !ml {
                    failures.push(format!(
                        "{}: tract refused a standard-op graph: {e}",
                        golden.name
                    ));
                }
            }
        }
    }
    println!("tract loaded: {tract_loaded:?}");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        tract_loaded.iter().any(|n| n == "mlp_regressor"),
        "tract must run the MLP"
    );
}

#[test]
fn load_model_picks_the_runtime_by_ops() {
    let (_dir, models) = make_golden();
    for golden in &models {
        let model = load_model(&golden.bytes).unwrap();
        let ml = golden.ops.iter().any(|o| o.starts_with("ai.onnx.ml:"));
        let expected = if ml { "strata-ml" } else { "tract" };
        assert_eq!(model.runtime(), expected, "{}", golden.name);
    }
}
