//! Single-row latency of a 100-tree depth-6 GradientBoostingRegressor:
//! Strata's evaluator vs onnxruntime (same process, single-threaded
//! session) vs tract, on the same model and the same rows.
//!
//! `cargo bench -p strata-infer --features ort --bench tree_latency [-- MODEL.onnx]`
//!
//! Without a path, the model comes from `tests/golden/make_golden.py`, run
//! into `target/strata-infer-bench/` with the test peers' Python
//! (`STRATA_PEERS_PYTHON`). onnxruntime is loaded from `ORT_DYLIB_PATH`, or
//! from the onnxruntime wheel in the peers virtualenv.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use strata_infer::{InferenceRuntime, MlRuntime, Model, OrtRuntime, TractRuntime};

const ROWS: usize = 256;
const WARMUP_ROUNDS: usize = 200;
const ROUNDS: usize = 2_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_path() -> PathBuf {
    if let Some(p) = std::env::args().skip(1).find(|a| a.ends_with(".onnx")) {
        return PathBuf::from(p);
    }
    let python = std::env::var_os("STRATA_PEERS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/peers/bin/python"));
    let out = workspace().join("target/strata-infer-bench");
    let model = out.join("gbr_100x6.onnx");
    if !model.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/make_golden.py");
        let status = Command::new(&python)
            .arg(script)
            .arg(&out)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} (set STRATA_PEERS_PYTHON or pass a model path): {e}",
                    python.display()
                )
            });
        assert!(status.success(), "make_golden.py failed");
    }
    model
}

fn ort_library() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let capi = workspace().join("target/peers/lib/python3.11/site-packages/onnxruntime/capi");
    std::fs::read_dir(&capi)
        .unwrap_or_else(|e| {
            panic!(
                "no onnxruntime wheel at {} ({e}); set ORT_DYLIB_PATH",
                capi.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
        .expect("libonnxruntime.so.* in the onnxruntime wheel")
}

/// Deterministic rows spread like the training data (xorshift).
fn rows(width: usize) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..ROWS * width)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
        })
        .collect()
}

struct Figures {
    median: f64,
    p99: f64,
}

/// Times single-row calls: each sample is one pass over all rows, divided
/// by the row count (a single call is below the clock's resolution).
fn measure(model: &dyn Model, rows: &[f32]) -> Figures {
    let width = model.input_len();
    let mut out = vec![0.0f32; model.output_len()];
    for _ in 0..WARMUP_ROUNDS {
        for row in rows.chunks_exact(width) {
            model.run(black_box(row), &mut out).expect("run");
        }
    }
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for row in rows.chunks_exact(width) {
            model.run(black_box(row), &mut out).expect("run");
            black_box(&out);
        }
        samples.push(start.elapsed().as_nanos() as f64 / ROWS as f64);
    }
    samples.sort_by(f64::total_cmp);
    Figures {
        median: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
    }
}

fn main() {
    let path = model_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ours = MlRuntime.load(&bytes).expect("strata-ml loads the model");
    let ort = OrtRuntime::from_library(ort_library()).expect("onnxruntime library");
    let reference = ort.load(&bytes).expect("onnxruntime loads the model");
    let input = rows(ours.input_len());

    // Same answers before timing anything.
    let mut a = vec![0.0; ours.output_len()];
    let mut b = vec![0.0; reference.output_len()];
    for row in input.chunks_exact(ours.input_len()) {
        ours.run(row, &mut a).unwrap();
        reference.run(row, &mut b).unwrap();
        assert!(
            (a[0] - b[0]).abs() <= 1e-5 * b[0].abs().max(1.0),
            "outputs differ: {a:?} vs {b:?}"
        );
    }

    println!("model {} ({} rows, single-row calls)", path.display(), ROWS);
    let ours_f = measure(&*ours, &input);
    println!(
        "strata-ml    median {:>9.1} ns  p99 {:>9.1} ns",
        ours_f.median, ours_f.p99
    );
    let ort_f = measure(&*reference, &input);
    println!(
        "onnxruntime  median {:>9.1} ns  p99 {:>9.1} ns",
        ort_f.median, ort_f.p99
    );
    match TractRuntime.load(&bytes) {
        Ok(tract) => {
            let t = measure(&*tract, &input);
            println!(
                "tract        median {:>9.1} ns  p99 {:>9.1} ns",
                t.median, t.p99
            );
        }
        Err(e) => println!("tract        cannot load the model: {e}"),
    }
    println!(
        "onnxruntime / strata-ml: {:.1}x (median), {:.1}x (p99)",
        ort_f.median / ours_f.median,
        ort_f.p99 / ours_f.p99
    );
}
