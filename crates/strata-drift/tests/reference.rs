//! Our drift statistics and detectors against the references they follow,
//! run on the same data: Evidently 0.7 (`tests/peers/evidently_drift.py`)
//! and river 0.26 (`tests/peers/river_detectors.py`).
//!
//! - Statistics agree to 1e-9 absolute (and, for p-values above 1e-250,
//!   to 1e-6 relative, which checks the exact KS and chi-squared tails),
//!   and the drift verdicts agree. The cases cover the exact KS p-value
//!   (equal and unequal sizes) and the asymptotic one (over 10,000 values).
//! - Detectors flag exactly river's indices.
//!
//! The reference Python is `STRATA_PEERS_PYTHON` (`scripts/test.sh` makes
//! a virtualenv with both); these tests fail, never skip, without it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use strata_drift::Sample;
use strata_drift::detect::{
    Adwin, AdwinParams, Detector, PageHinkley, PageHinkleyMode, PageHinkleyParams,
};
use strata_drift::stats::{StatTest, categorical_drift, numeric_drift};

fn peers_python() -> PathBuf {
    let python = std::env::var_os("STRATA_PEERS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/bin/python")
        });
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh once (it installs river and Evidently)",
        python.display()
    );
    python
}

fn run_peer(script: &str, seed: &str) -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(script);
    let out = Command::new(peers_python())
        .arg(&path)
        .arg(seed)
        .output()
        .expect("run the reference script");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reference prints JSON")
}

fn floats(v: &Json) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

fn check_statistics(seed: &str) {
    let cases = run_peer("evidently_drift.py", seed);
    let mut compared = 0;
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let kind = case["kind"].as_str().unwrap();
        for (test_name, expected) in case["results"].as_object().unwrap() {
            let test = StatTest::from_name(test_name).unwrap();
            let theirs = expected["value"].as_f64().unwrap();
            let score = if kind == "numeric" {
                let r = Sample::new(floats(&case["reference"]));
                let c = Sample::new(floats(&case["current"]));
                numeric_drift(test, &r, &c, None).unwrap()
            } else {
                let r = strings(&case["reference"]);
                let c = strings(&case["current"]);
                categorical_drift(test, &r, &c, None).unwrap()
            };
            let ours = score.value;
            let diff = (ours - theirs).abs();
            assert!(
                diff <= 1e-9 * theirs.abs().max(1.0),
                "seed {seed}, {name}, {test_name}: ours {ours:e}, Evidently {theirs:e}"
            );
            let is_p = matches!(test, StatTest::Ks | StatTest::ChiSquare);
            if is_p && theirs > 1e-250 {
                assert!(
                    diff <= 1e-6 * theirs,
                    "seed {seed}, {name}, {test_name}: ours {ours:e}, Evidently {theirs:e} (relative)"
                );
            }
            assert_eq!(
                score.drifted,
                expected["drifted"].as_bool().unwrap(),
                "seed {seed}, {name}, {test_name}: verdicts differ ({ours} vs {theirs})"
            );
            compared += 1;
        }
    }
    assert!(compared >= 50, "only {compared} statistics compared");
}

#[test]
fn drift_statistics_match_evidently() {
    for seed in ["7", "1234", "99"] {
        check_statistics(seed);
    }
}

fn detector(kind: &str, params: &Json) -> Box<dyn Detector> {
    let f = |k: &str| params.get(k).and_then(Json::as_f64);
    match kind {
        "adwin" => {
            let d = AdwinParams::default();
            Box::new(Adwin::new(AdwinParams {
                delta: f("delta").unwrap_or(d.delta),
                clock: f("clock").map_or(d.clock, |v| v as u32),
                max_buckets: f("max_buckets").map_or(d.max_buckets, |v| v as usize),
                min_window_length: f("min_window_length").map_or(d.min_window_length, |v| v as u32),
                grace_period: f("grace_period").map_or(d.grace_period, |v| v as u32),
            }))
        }
        "page_hinkley" => {
            let d = PageHinkleyParams::default();
            let mode = match params.get("mode").and_then(Json::as_str) {
                Some("up") => PageHinkleyMode::Up,
                Some("down") => PageHinkleyMode::Down,
                _ => PageHinkleyMode::Both,
            };
            Box::new(PageHinkley::new(PageHinkleyParams {
                min_instances: f("min_instances").map_or(d.min_instances, |v| v as u64),
                delta: f("delta").unwrap_or(d.delta),
                threshold: f("threshold").unwrap_or(d.threshold),
                alpha: f("alpha").unwrap_or(d.alpha),
                mode,
            }))
        }
        other => panic!("unknown detector {other}"),
    }
}

#[test]
fn detectors_flag_the_same_indices_as_river() {
    let mut runs = 0;
    let mut detections = 0;
    for seed in ["11", "2024"] {
        for stream in run_peer("river_detectors.py", seed).as_array().unwrap() {
            let xs = floats(&stream["values"]);
            for run in stream["runs"].as_array().unwrap() {
                let kind = run["kind"].as_str().unwrap();
                let theirs: Vec<usize> = run["detections"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
                    .collect();
                let ours = detector(kind, &run["params"]).detections(&xs);
                assert_eq!(
                    ours, theirs,
                    "seed {seed}, stream {:?}, {kind} {}",
                    stream["name"], run["params"]
                );
                runs += 1;
                detections += theirs.len();
            }
        }
    }
    assert!(
        runs >= 80 && detections > 100,
        "{runs} runs, {detections} detections"
    );
}
