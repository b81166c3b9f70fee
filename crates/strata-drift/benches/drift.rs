//! Drift benchmarks, each against its reference in the same run:
//!
//! 1. detector throughput: ADWIN and Page-Hinkley (river's defaults) over
//!    one stream of 1,000,000 values with mean steps, ours vs river 0.26
//!    (`benches/river_time.py`, the test peers' Python), with a check that
//!    both flag the same indices. The two take turns, round after round,
//!    each round running ours for as long as river's one run took: this
//!    machine's speed drifts by a third from one minute to the next, and
//!    a ratio is only fair between runs made in the same few seconds;
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
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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
    /// Rounds of river's run, then ours, for each detector.
    rounds: usize,
}

const FULL: Sizes = Sizes {
    stream: 1_000_000,
    devices: 1_000,
    features: 20,
    window: 1_000,
    reference: 5_000,
    evidently_pairs: 40,
    rounds: 7,
};

const SMOKE: Sizes = Sizes {
    stream: 200_000,
    devices: 5,
    features: 4,
    window: 200,
    reference: 500,
    evidently_pairs: 2,
    rounds: 1,
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

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/river_time.py")
}

fn peer(args: &[&std::ffi::OsStr]) -> Json {
    let out = Command::new(python())
        .arg(script())
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

/// River's detectors in one Python process kept open, which runs a
/// detector over the stream when asked.
struct River {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl River {
    fn start(stream: &Path) -> River {
        let mut child = Command::new(python())
            .arg(script())
            .arg("detectors")
            .arg(stream)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the reference Python (STRATA_PEERS_PYTHON)");
        let input = child.stdin.take();
        let output = BufReader::new(child.stdout.take().expect("piped stdout"));
        River {
            child,
            input,
            output,
        }
    }

    /// One run of river's detector `name` over the stream: its seconds
    /// and the indices it flagged.
    fn run(&mut self, name: &str) -> (f64, Vec<usize>) {
        let input = self.input.as_mut().expect("open stdin");
        writeln!(input, "{name}")
            .and_then(|()| input.flush())
            .expect("ask river_time.py");
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .expect("read river_time.py");
        assert!(
            !line.is_empty(),
            "river_time.py ended early (see its error above)"
        );
        let out: Json = serde_json::from_str(&line).expect("JSON from river_time.py");
        let found = out["detections"]
            .as_array()
            .expect("detections")
            .iter()
            .map(|v| v.as_u64().expect("an index") as usize)
            .collect();
        (out["seconds"].as_f64().expect("seconds"), found)
    }
}

impl Drop for River {
    fn drop(&mut self) {
        // Closing its input ends the loop.
        self.input.take();
        let _ = self.child.wait();
    }
}

/// The middle of `xs` (the upper one of the two for an even count).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
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
    let mut river = River::start(&path);
    println!(
        "detector throughput, {} values (medians of {} rounds: river's run, then ours for as long):",
        z.stream, z.rounds
    );
    type Make = fn() -> Box<dyn Detector>;
    let ours: [(&str, Make); 2] = [
        ("adwin", || Box::new(Adwin::new(AdwinParams::default()))),
        ("page_hinkley", || {
            Box::new(PageHinkley::new(PageHinkleyParams::default()))
        }),
    ];
    for (name, make) in ours {
        let (mut theirs, mut mine, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut found = Vec::new();
        for _ in 0..z.rounds {
            let (river_secs, same) = river.run(name);
            // Ours, run after run, until as much time has passed.
            let (start, mut runs) = (Instant::now(), 0);
            while runs == 0 || start.elapsed().as_secs_f64() < river_secs {
                found = make().detections(black_box(&xs));
                runs += 1;
            }
            let secs = start.elapsed().as_secs_f64() / f64::from(runs);
            assert_eq!(found, same, "{name}: detections differ from river's");
            theirs.push(river_secs);
            mine.push(secs);
            ratios.push(river_secs / secs);
        }
        let (low, high) = ratios
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(l, h), &r| (l.min(r), h.max(r)));
        println!(
            "  {name:<13} ours {:>7.1} M values/s   river {:>6.3} M values/s   ratio {:>6.1}x (rounds {low:.1}x to {high:.1}x)   ({} detections, same as river)",
            z.stream as f64 / median(mine) / 1e6,
            z.stream as f64 / median(theirs) / 1e6,
            median(ratios),
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
