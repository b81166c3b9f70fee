//! Throughput of the pipeline on a typical predictive-maintenance config:
//! three signals at 1 kHz (two vibration axes and motor current) through
//! scale, unit conversion, range check and resampling, a sliding window
//! (1 s every 0.5 s) with every statistic and three FFT band energies per
//! signal, joined into one 36-wide feature vector.
//!
//! Hand-rolled (no criterion, to keep the build light): one warm-up round,
//! then several timed rounds; prints the median in readings per second.
//! Run with `cargo bench -p strata-pipeline --bench pipeline`.

use std::hint::black_box;
use std::time::Instant;

use strata_pipeline::{Output, Pipeline, PipelineConfig};
use strata_proto::{SignalSeries, TelemetryBatch};

const CONFIG: &str = r#"
[[signals]]
name = "vib_x"
scale = 0.001
convert = { from = "in/s", to = "mm/s" }
range = { min = -500.0, max = 500.0, action = "flag" }
resample_ms = 1
resample = "mean"

[[signals]]
name = "vib_y"
scale = 0.001
convert = { from = "in/s", to = "mm/s" }
range = { min = -500.0, max = 500.0, action = "flag" }
resample_ms = 1
resample = "mean"

[[signals]]
name = "current"
range = { min = 0.0, max = 100.0, action = "drop" }
resample_ms = 1

[[windows]]
name = "vib"
signals = ["vib_x", "vib_y", "current"]
size_ms = 1000
hop_ms = 500
features = ["mean", "std", "min", "max", "rms", "peak_to_peak", "kurtosis", "skewness", "count"]
fft_bands_hz = [[10.0, 50.0], [50.0, 200.0], [200.0, 500.0]]

[[vectors]]
name = "machine"
features = [
  "vib.vib_x.mean", "vib.vib_x.std", "vib.vib_x.min", "vib.vib_x.max", "vib.vib_x.rms", "vib.vib_x.peak_to_peak",
  "vib.vib_x.kurtosis", "vib.vib_x.skewness", "vib.vib_x.count", "vib.vib_x.band_10_50", "vib.vib_x.band_50_200", "vib.vib_x.band_200_500",
  "vib.vib_y.mean", "vib.vib_y.std", "vib.vib_y.min", "vib.vib_y.max", "vib.vib_y.rms", "vib.vib_y.peak_to_peak",
  "vib.vib_y.kurtosis", "vib.vib_y.skewness", "vib.vib_y.count", "vib.vib_y.band_10_50", "vib.vib_y.band_50_200", "vib.vib_y.band_200_500",
  "vib.current.mean", "vib.current.std", "vib.current.min", "vib.current.max", "vib.current.rms", "vib.current.peak_to_peak",
  "vib.current.kurtosis", "vib.current.skewness", "vib.current.count", "vib.current.band_10_50", "vib.current.band_50_200", "vib.current.band_200_500",
]
"#;

/// Seconds of data per round.
const SECONDS: i64 = 60;
/// Readings per signal per batch (100 ms at 1 kHz).
const PER_BATCH: i64 = 100;
const ROUNDS: usize = 7;

/// A small deterministic generator, so every run pushes the same data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }
}

fn batches() -> Vec<TelemetryBatch> {
    let mut rng = Lcg(42);
    let start = 1_700_000_000_000_000_000i64;
    let ms = 1_000_000i64;
    (0..SECONDS * 1000 / PER_BATCH)
        .map(|b| {
            // Jittered sampling instants around each millisecond.
            let ts: Vec<i64> = (0..PER_BATCH)
                .map(|i| {
                    start + (b * PER_BATCH + i) * ms + 200_000 + (rng.next() * 100_000.0) as i64
                })
                .collect();
            let t = |i: usize| ts[i] as f64 * 1e-9;
            let wave = |f: f64, i: usize| (2.0 * std::f64::consts::PI * f * t(i)).sin();
            let vib_x = (0..ts.len())
                .map(|i| 400.0 * wave(30.0, i) + 100.0 * wave(120.0, i) + 50.0 * rng.next())
                .collect();
            let vib_y = (0..ts.len())
                .map(|i| 300.0 * wave(60.0, i) + 80.0 * wave(310.0, i) + 50.0 * rng.next())
                .collect();
            let current = (0..ts.len())
                .map(|i| 20.0 + 2.0 * wave(50.0, i) + rng.next())
                .collect();
            let series = |name: &str, values: Vec<f64>| SignalSeries {
                name: name.into(),
                unit: String::new(),
                ts_ns: ts.clone(),
                values,
                quality: Vec::new(),
            };
            TelemetryBatch {
                stream: "bench".into(),
                seq: b as u64,
                signals: vec![
                    series("vib_x", vib_x),
                    series("vib_y", vib_y),
                    series("current", current),
                ],
            }
        })
        .collect()
}

fn round(config: &PipelineConfig, batches: &[TelemetryBatch]) -> (f64, usize) {
    let mut pipeline = Pipeline::new(config).expect("bench config is valid");
    let mut out = Output::new();
    let mut vectors = 0;
    let started = Instant::now();
    for batch in batches {
        pipeline.push_batch(batch, &mut out);
        vectors += out.vectors().len();
        black_box(out.series());
        out.clear();
    }
    (started.elapsed().as_secs_f64(), vectors)
}

fn main() {
    let config: PipelineConfig = toml::from_str(CONFIG).expect("bench config parses");
    let batches = batches();
    let readings: usize = batches
        .iter()
        .flat_map(|b| &b.signals)
        .map(|s| s.values.len())
        .sum();
    let (_, vectors) = round(&config, &batches);
    let mut times: Vec<f64> = (0..ROUNDS).map(|_| round(&config, &batches).0).collect();
    times.sort_by(f64::total_cmp);
    let median = times[ROUNDS / 2];
    println!(
        "pipeline: {readings} readings ({} signals x {SECONDS} s at 1 kHz), {vectors} vectors of 36 features per round",
        3
    );
    println!(
        "pipeline: median of {ROUNDS} rounds {:.1} ms = {:.2} M readings/s (fastest {:.2}, slowest {:.2})",
        median * 1e3,
        readings as f64 / median / 1e6,
        readings as f64 / times[0] / 1e6,
        readings as f64 / times[ROUNDS - 1] / 1e6,
    );
}
