//! The model lifecycle the demo walks through, all through the hub's API
//! as an operator would: collect labelled telemetry, train a model on it,
//! register and deploy it to the fleet, then watch predictions (and raise
//! alerts when a machine is predicted to fail soon).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::progress::Bar;
use crate::api_client::ApiClient;

/// The model the demo trains.
pub const MODEL: &str = "rul";
/// The reading the deployed model writes: `{model}.{output}`.
pub const PREDICTION: &str = "rul.prediction";
/// The ground truth the simulator sends beside its readings.
pub const TRUTH: &str = "label.rul_h";

/// What the lifecycle needs.
pub struct Plan {
    /// The hub's API.
    pub api: ApiClient,
    /// The fleet.
    pub devices: Vec<String>,
    /// How long to collect before training.
    pub collect: Duration,
    /// The pipeline the agents run, as JSON (the training job replays
    /// stored telemetry through the same one).
    pub pipeline: Value,
    /// Its feature vector.
    pub vector: String,
    /// A predicted remaining life below this many hours raises an alert.
    pub alert_below_h: f64,
    /// Set when the demo is stopping.
    pub stop: Arc<AtomicBool>,
}

impl Plan {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn sleep(&self, d: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stopping() {
                bail!("stopped");
            }
            std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
        }
        Ok(())
    }
}

/// Runs every step, then reports predictions until stopped.
pub fn run(plan: &Plan) -> anyhow::Result<()> {
    collect(plan)?;
    let version = train(plan)?;
    deploy(plan, version)?;
    watch(plan)
}

/// Collects until every machine has `plan.collect` of labelled telemetry
/// stored, counted from its first stored label: on a loaded machine the
/// agents may start streaming late, and a model trained on less would be
/// judged on too few rows.
fn collect(plan: &Plan) -> anyhow::Result<()> {
    let goal = plan.collect.as_secs();
    let mut bar = Bar::new("[1/4] collecting labelled telemetry", goal);
    let mut first_label: Vec<Option<i64>> = vec![None; plan.devices.len()];
    loop {
        plan.sleep(Duration::from_secs(1))?;
        let mut shortest = u64::MAX;
        for (device, first) in plan.devices.iter().zip(&mut first_label) {
            let labelled_s = match latest_reading(&plan.api, device, TRUTH)? {
                Some(newest) => {
                    let first = *first.get_or_insert(newest.ts_ns);
                    ((newest.ts_ns - first).max(0) / 1_000_000_000) as u64
                }
                None => 0,
            };
            shortest = shortest.min(labelled_s);
        }
        let stored = stored_readings(&plan.api).unwrap_or(0);
        bar.set(shortest.min(goal), &format!("{stored} readings stored"));
        if shortest >= goal {
            break;
        }
    }
    bar.finish("");
    Ok(())
}

/// Readings stored so far, from the hub's Prometheus counters.
fn stored_readings(api: &ApiClient) -> anyhow::Result<u64> {
    let text = api.get_text("metrics", "/metrics")?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("strata_readings_stored_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

fn train(plan: &Plan) -> anyhow::Result<u32> {
    let spec = json!({
        "model": MODEL,
        "trainer": { "type": "gbt_regressor", "params": { "n_trees": 150, "max_depth": 5, "min_samples_leaf": 10 } },
        "dataset": {
            "devices": plan.devices,
            "pipeline": plan.pipeline,
            "vector": plan.vector,
            "target": TRUTH,
        },
        "holdout": 0.2,
        "alias": "champion",
        "description": "remaining useful life of the bearing, in hours",
    });
    let job: Value = plan.api.post("train", "/api/v1/jobs/train", &spec)?;
    let id = job["id"].as_i64().context("no job id")?;
    let mut bar = Bar::new("[2/4] training rul (gradient-boosted trees)", 100);
    let job = loop {
        plan.sleep(Duration::from_millis(300))?;
        let job: Value = plan.api.get("job", &format!("/api/v1/jobs/{id}"))?;
        let progress = job["progress"].as_f64().unwrap_or(0.0);
        bar.set(
            (progress * 100.0) as u64,
            job["message"].as_str().unwrap_or(""),
        );
        match job["state"].as_str() {
            Some("succeeded") => break job,
            Some("failed") => bail!(
                "training failed: {}",
                job["message"].as_str().unwrap_or("no message")
            ),
            _ => {}
        }
    };
    bar.finish("");
    let result = &job["result"];
    let version = result["version"]
        .as_u64()
        .context("no version in the job result")? as u32;
    let m = &result["metrics"];
    let seconds = m["train_seconds"].as_f64().unwrap_or(f64::NAN);
    println!(
        "      {MODEL} v{version}: hold-out MAE {:.1} h (predicting the mean: {:.1} h), trained in {} on {} rows",
        m["mae"].as_f64().unwrap_or(f64::NAN),
        m["baseline_mae"].as_f64().unwrap_or(f64::NAN),
        if seconds < 1.0 {
            format!("{:.0} ms", seconds * 1e3)
        } else {
            format!("{seconds:.1} s")
        },
        m["train_rows"].as_f64().unwrap_or(0.0),
    );
    Ok(version)
}

fn deploy(plan: &Plan, version: u32) -> anyhow::Result<()> {
    let started = Instant::now();
    let _: Value = plan.api.post(
        "deploy",
        &format!("/api/v1/models/{MODEL}/deploy"),
        &json!({ "version": version.to_string(), "devices": plan.devices }),
    )?;
    let total = plan.devices.len() as u64;
    let mut bar = Bar::new(&format!("[3/4] deploying {MODEL} v{version}"), total);
    loop {
        let mut running = 0;
        let mut predicting = 0;
        for d in &plan.devices {
            let twin: Value = plan.api.get("twin", &format!("/api/v1/devices/{d}/twin"))?;
            let models = twin["reported"]["models"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(failed) = models.iter().find(|m| m["state"] == "failed") {
                bail!(
                    "{d} could not run {MODEL} v{version}: {}",
                    failed["error"].as_str().unwrap_or("no reason given")
                );
            }
            if models
                .iter()
                .any(|m| m["name"] == MODEL && m["version"] == version && m["state"] == "running")
            {
                running += 1;
                if latest(&plan.api, d, PREDICTION)?.is_some() {
                    predicting += 1;
                }
            }
        }
        bar.set(
            running,
            &format!("{running} running, {predicting} predicting"),
        );
        if predicting == total {
            break;
        }
        plan.sleep(Duration::from_millis(500))?;
    }
    bar.finish("");
    println!(
        "[4/4] model deployed, predictions flowing ({:.1} s after the deployment)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The newest value of a signal of a device.
fn latest(api: &ApiClient, device: &str, signal: &str) -> anyhow::Result<Option<f64>> {
    Ok(latest_reading(api, device, signal)?.map(|r| r.value))
}

/// The newest stored reading of a signal of a device.
fn latest_reading(
    api: &ApiClient,
    device: &str,
    signal: &str,
) -> anyhow::Result<Option<strata_store::LatestReading>> {
    let readings: Vec<strata_store::LatestReading> =
        api.get("latest", &format!("/api/v1/devices/{device}/latest"))?;
    Ok(readings.into_iter().find(|r| r.signal == signal))
}

fn watch(plan: &Plan) -> anyhow::Result<()> {
    let shown: Vec<&String> = plan.devices.iter().take(5).collect();
    // Machines alerted and not yet back above the threshold (repaired): an
    // alert is raised once per crossing, not at every look.
    let mut alerted = std::collections::BTreeSet::new();
    loop {
        plan.sleep(Duration::from_secs(5))?;
        println!("  machine        predicted RUL    true RUL");
        for d in &plan.devices {
            let predicted = latest(&plan.api, d, PREDICTION)?;
            let truth = latest(&plan.api, d, TRUTH)?;
            if shown.contains(&d) {
                println!("  {d:<12} {:>12} {:>11}", hours(predicted), hours(truth));
            }
            match predicted {
                Some(p) if p < plan.alert_below_h && alerted.insert(d.clone()) => println!(
                    "  ALERT {d}: bearing predicted to fail in {p:.1} h (threshold {:.0} h)",
                    plan.alert_below_h
                ),
                Some(p) if p >= plan.alert_below_h && alerted.remove(d) => {
                    println!("  cleared {d}: predicted remaining life is above the threshold again")
                }
                _ => {}
            }
        }
    }
}

fn hours(v: Option<f64>) -> String {
    v.map(|h| format!("{h:.1} h")).unwrap_or_else(|| "-".into())
}
