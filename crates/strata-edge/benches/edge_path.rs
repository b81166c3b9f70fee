//! Throughput of the edge's processing path on one core: three signals at
//! 1 kHz through sliding windows with every feature (and FFT band energies
//! on the vibration waveform), joined into feature vectors, and two
//! scikit-learn models (a gradient-boosted regressor and an isolation
//! forest, exported by skl2onnx) on every vector.
//!
//! Run: `cargo bench -p strata-edge --bench edge_path`. The models are made
//! by tests/peers/models.py of strata-cli with the peers' Python
//! (`STRATA_PEERS_PYTHON`, default target/peers/bin/python).

use std::path::{Path, PathBuf};
use std::time::Instant;

use strata_edge::inference::{ModelConfig, Models};
use strata_pipeline::{Output, Pipeline, PipelineConfig};
use strata_proto::SignalSeries;

const PIPELINE: &str = r#"
[[windows]]
name = "w"
signals = ["temperature", "current", "vibration"]
size_ms = 1000
hop_ms = 250
features = ["mean", "std", "min", "max", "rms", "peak_to_peak", "kurtosis", "skewness"]

[[windows]]
name = "spectrum"
signals = ["vibration"]
size_ms = 1000
hop_ms = 250
features = ["rms"]
sample_rate_hz = 1000.0
fft_bands_hz = [[10.0, 50.0], [50.0, 120.0], [120.0, 250.0], [250.0, 500.0]]

[[vectors]]
name = "machine"
features = ["w.temperature.mean", "w.temperature.max", "w.current.mean", "w.current.max"]

[[vectors]]
name = "vibration"
features = ["spectrum.vibration.band_10_50", "spectrum.vibration.band_50_120", "spectrum.vibration.band_120_250", "w.vibration.kurtosis"]
"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn models_dir() -> PathBuf {
    let dir = workspace().join("target/bench-models");
    std::fs::create_dir_all(&dir).unwrap();
    let python = std::env::var_os("STRATA_PEERS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/peers/bin/python"));
    let status = std::process::Command::new(&python)
        .arg(workspace().join("crates/strata-cli/tests/peers/models.py"))
        .arg("train")
        .arg(&dir)
        .status()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/test.sh once)", python.display()));
    assert!(status.success());
    dir
}

/// 60 s of three signals at 1 kHz, in 100 ms frames.
fn frames() -> Vec<Vec<SignalSeries>> {
    let start = 1_700_000_000_000_000_000i64;
    (0..600)
        .map(|f| {
            let ts: Vec<i64> = (0..100)
                .map(|i| start + (f * 100 + i) * 1_000_000)
                .collect();
            let wave = |a: f64, hz: f64, off: f64| -> Vec<f64> {
                ts.iter()
                    .map(|&t| off + a * (t as f64 / 1e9 * hz * std::f64::consts::TAU).sin())
                    .collect()
            };
            vec![
                SignalSeries {
                    name: "temperature".into(),
                    ts_ns: ts.clone(),
                    values: wave(5.0, 0.1, 60.0),
                    ..Default::default()
                },
                SignalSeries {
                    name: "current".into(),
                    ts_ns: ts.clone(),
                    values: wave(2.0, 0.3, 12.0),
                    ..Default::default()
                },
                SignalSeries {
                    name: "vibration".into(),
                    ts_ns: ts.clone(),
                    values: wave(1.0, 88.4, 0.0),
                    ..Default::default()
                },
            ]
        })
        .collect()
}

fn main() {
    let config: PipelineConfig = toml::from_str(PIPELINE).unwrap();
    let dir = models_dir();
    let model = |name: &str, vector: &str| ModelConfig {
        name: name.into(),
        path: dir.join(format!("{name}.onnx")),
        version: "1".into(),
        vector: vector.into(),
        features: None,
        outputs: None,
        drift: None,
        shadow: false,
    };
    let models_config = [model("rul", "machine"), model("anomaly", "machine")];
    let frames = frames();
    let readings: usize = frames.iter().flatten().map(|s| s.values.len()).sum();

    let mut rates = Vec::new();
    let mut vectors = 0;
    for round in 0..7 {
        let mut pipeline = Pipeline::new(&config).unwrap();
        let schemas: Vec<_> = pipeline.vector_schemas().cloned().collect();
        let mut models = Models::load(&models_config, Path::new("."), &schemas).unwrap();
        let mut out = Output::new();
        vectors = 0;
        let started = Instant::now();
        for frame in &frames {
            for s in frame {
                pipeline.push_series(s, &mut out);
            }
            for v in out.vectors() {
                models.run(v);
                vectors += 1;
            }
            std::hint::black_box(models.take());
            out.clear();
        }
        let secs = started.elapsed().as_secs_f64();
        if round > 0 {
            rates.push(readings as f64 / secs);
        }
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "edge path: {readings} readings, {vectors} vectors, 2 models per machine vector: median {:.0} readings/s (min {:.0}, max {:.0}) on one core",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}
