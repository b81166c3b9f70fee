//! Drift benchmarks, each against its reference in the same run:
//!
//! 1. detector throughput: ADWIN and Page-Hinkley (river's defaults) over
//!    one stream of 1,000,000 values with mean steps, ours vs river 0.26
//!    (`benches/river_time.py`, the test peers' Python), with a check that
//!    both flag the same indices;
//! 2. drift computation for a fleet: 1,000 devices × 20 features, each a
//!    window of 1,000 values against a 5,000-value reference: all four
//!    numeric statistics on raw windows, then the sketch path (add the
//!    window to a sketch, merge per site, compare with the profile); and
//!    Evidently's time per comparison on a sample of the same pairs.
//!
//! `cargo bench -p strata-drift --bench drift`. Run without `--bench`
//! (as `cargo test --all-targets` does), it runs a small version as a
//! smoke test.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value as Json;
use strata_drift::Sample;
use strata_drift::detect::{Adwin, AdwinParams, Detector, PageHinkley, PageHinkleyParams};
use strata_drift::sketch::FeatureProfile;
use strata_drift::stats::{StatTest, numeric_drift};

/// Sizes of a run.
struct Sizes {
    stream: usize,
    devices: usize,
    features: usize,
    window: usize,
    reference: usize,
    evidently_pairs: usize,
}

const FULL: Sizes = Sizes {
    stream: 1_000_000,
    devices: 1_000,
    features: 20,
    window: 1_000,
    reference: 5_000,
    evidently_pairs: 40,
};

const SMOKE: Sizes = Sizes {
    stream: 200_000,
    devices: 5,
    features: 4,
    window: 200,
    reference: 500,
    evidently_pairs: 2,
};

/// A small deterministic generator (xorshift64*), Box-Muller normals.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self, mean: f64, std: f64) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        mean + std * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn python() -> PathBuf {
    std::env::var_os("STRATA_PEERS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/bin/python")
        })
}

fn write_f64(path: &Path, values: &[f64]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write bench input");
}

fn peer(args: &[&std::ffi::OsStr]) -> Json {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/river_time.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("run the reference Python (STRATA_PEERS_PYTHON)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from river_time.py")
}

/// Best of `rounds` timings of `f`, in seconds.
fn best_of(rounds: usize, mut f: impl FnMut()) -> f64 {
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn detectors(dir: &Path, z: &Sizes) {
    let mut rng = Rng(0x5eed);
    let xs: Vec<f64> = (0..z.stream)
        .map(|i| rng.normal([0.0, 1.5, -0.5, 2.0][(i / 50_000) % 4], 1.0))
        .collect();
    let path = dir.join("stream.f64");
    write_f64(&path, &xs);
    let river = peer(&["detectors".as_ref(), path.as_os_str()]);
    println!("detector throughput, {} values (best of 3):", z.stream);
    type Make = fn() -> Box<dyn Detector>;
    let ours: [(&str, Make); 2] = [
        ("adwin", || Box::new(Adwin::new(AdwinParams::default()))),
        ("page_hinkley", || {
            Box::new(PageHinkley::new(PageHinkleyParams::default()))
        }),
    ];
    for (name, make) in ours {
        let mut found = Vec::new();
        let secs = best_of(3, || found = make().detections(black_box(&xs)));
        let rate = z.stream as f64 / secs;
        let theirs = &river[name];
        let river_rate = theirs["values_per_s"].as_f64().unwrap();
        let same: Vec<usize> = theirs["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(found, same, "{name}: detections differ from river's");
        println!(
            "  {name:<13} ours {:>7.1} M values/s   river {:>6.3} M values/s   ratio {:>6.1}x   ({} detections, same as river)",
            rate / 1e6,
            river_rate / 1e6,
            rate / river_rate,
            found.len()
        );
    }
}

fn fleet(dir: &Path, z: &Sizes) {
    let mut rng = Rng(0xd1f7);
    let references: Vec<Sample> = (0..z.features)
        .map(|f| Sample::new((0..z.reference).map(|_| rng.normal(f as f64, 1.0 + f as f64 / 10.0))))
        .collect();
    // Every 10th device drifts on every 4th feature.
    let windows: Vec<Vec<Vec<f64>>> = (0..z.devices)
        .map(|d| {
            (0..z.features)
                .map(|f| {
                    let shift = if d % 10 == 0 && f % 4 == 0 { 0.5 } else { 0.0 };
                    (0..z.window)
                        .map(|_| rng.normal(f as f64 + shift, 1.0 + f as f64 / 10.0))
                        .collect()
                })
                .collect()
        })
        .collect();
    let pairs = z.devices * z.features;
    println!(
        "fleet drift, {} devices × {} features, windows of {} vs a reference of {}:",
        z.devices, z.features, z.window, z.reference
    );

    let tests = [
        StatTest::Ks,
        StatTest::Wasserstein,
        StatTest::JensenShannon,
        StatTest::Psi,
    ];
    let mut drifted = 0;
    let secs = best_of(1, || {
        drifted = 0;
        for device in &windows {
            for (f, window) in device.iter().enumerate() {
                let current = Sample::new(window.iter().copied());
                for test in tests {
                    let s = numeric_drift(test, &references[f], &current, None).unwrap();
                    drifted += usize::from(s.drifted && test == StatTest::Ks);
                }
            }
        }
    });
    println!(
        "  raw windows, 4 statistics each: {:.2} s in all, {:.1} µs per feature window ({drifted} KS drift verdicts)",
        secs,
        secs / pairs as f64 * 1e6
    );

    let profiles: Vec<FeatureProfile> = references
        .iter()
        .map(|r| FeatureProfile::from_reference(r, 20).unwrap())
        .collect();
    let secs_sketch = best_of(3, || {
        let mut flagged = 0;
        for device in &windows {
            for (f, window) in device.iter().enumerate() {
                let mut sketch = profiles[f].empty_sketch();
                for &x in window {
                    sketch.add(x);
                }
                let d = profiles[f].compare(&sketch).unwrap();
                flagged += usize::from(d.psi >= 0.1);
            }
        }
        black_box(flagged);
    });
    println!(
        "  sketch path (sketch the window, compare with the profile): {:.3} s in all, {:.2} µs per feature window",
        secs_sketch,
        secs_sketch / pairs as f64 * 1e6
    );

    // Evidently on the first z.evidently_pairs windows of feature 0.
    let ref_path = dir.join("reference.f64");
    let cur_path = dir.join("current.f64");
    write_f64(&ref_path, references[0].values());
    let sample: Vec<f64> = windows
        .iter()
        .take(z.evidently_pairs)
        .flat_map(|d| d[0].iter().copied())
        .collect();
    write_f64(&cur_path, &sample);
    let n = z.evidently_pairs.to_string();
    let evidently = peer(&[
        "stats".as_ref(),
        ref_path.as_os_str(),
        cur_path.as_os_str(),
        n.as_ref(),
    ]);
    let mut ours_total = 0.0;
    let mut theirs_total = 0.0;
    for test in tests {
        let theirs = evidently[test.name()].as_f64().unwrap();
        let ours = best_of(3, || {
            for d in windows.iter().take(z.evidently_pairs) {
                let current = Sample::new(d[0].iter().copied());
                black_box(numeric_drift(test, &references[0], &current, None).unwrap());
            }
        }) / z.evidently_pairs as f64;
        ours_total += ours;
        theirs_total += theirs;
        println!(
            "  {:<13} ours {:>8.1} µs   Evidently {:>8.1} µs per comparison   ratio {:>6.1}x",
            test.name(),
            ours * 1e6,
            theirs * 1e6,
            theirs / ours
        );
    }
    println!(
        "  all four: ours {:.1} µs, Evidently {:.1} µs per feature window; the fleet would take Evidently about {:.0} s",
        ours_total * 1e6,
        theirs_total * 1e6,
        theirs_total * pairs as f64
    );
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/strata-drift-bench");
    std::fs::create_dir_all(&dir).expect("bench directory");
    let sizes = if std::env::args().any(|a| a == "--bench") {
        &FULL
    } else {
        &SMOKE
    };
    detectors(&dir, sizes);
    fleet(&dir, sizes);
}
