//! `strata demo`: the whole model lifecycle in one command.
//!
//! Starts a hub, registers a site and N machines through the API, enrolls
//! each with its one-time token, and runs one edge agent per machine (in
//! this process, each with its own durable outbox and feature pipeline)
//! streaming simulated telemetry over MQTT. Then, through the API: collects
//! labelled data, trains a remaining-useful-life model, registers and
//! deploys it to the fleet, and shows live predictions and alerts.

mod lifecycle;
mod progress;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use strata_edge::config::{HubLink, OutboxConfig};
use strata_edge::sources::SourceConfig;
use strata_edge::sources::simulator::SimulatorConfig;
use strata_edge::{Agent, EdgeConfig};
use strata_hub::{Hub, HubConfig};

use crate::api_client::ApiClient;
use crate::fleet::{self, Login};

/// Options of `strata demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Simulated machines.
    #[arg(long, default_value_t = 20)]
    pub devices: usize,
    /// MQTT listen address (1883 is often taken by a system broker).
    #[arg(long, default_value = "127.0.0.1:18830")]
    pub mqtt_listen: SocketAddr,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// Data directory; a fresh temporary one when absent.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Stop after this many seconds (runs until Ctrl-C when absent).
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Seconds of labelled telemetry collected from every machine before
    /// training.
    #[arg(long, default_value_t = 60)]
    pub collect_s: u64,
    /// Only stream telemetry: no training, no deployment.
    #[arg(long)]
    pub stream_only: bool,
    /// A hub configuration file (as for `strata hub --config`); the demo
    /// sets its listen addresses and data directory. Without one, the hub
    /// has the demo's alert rules and phase gate.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The demo hub's configuration when no `--config` is given: alerts on a
/// machine whose predicted remaining life falls under the failure horizon
/// and on a machine offline for 30 s; the plant in phase 2, its closed-loop
/// gate open while the machines are up and the model's error is small.
const DEMO_CONFIG: &str = r#"
[[alerts]]
name = "bearing-failing"
severity = "critical"
signal = "rul.prediction"
condition = "below"
value = 8.0
for_s = 5
message = "bearing of {device} predicted to fail in {value} h"

[[alerts]]
name = "machine-offline"
severity = "warning"
condition = "offline"
for_s = 30
message = "{device} is offline"

[control]
phases = { demo-plant = 2 }
interval_s = 5

[control.gates.2]
window_days = 1
min_uptime = 0.9
model = "rul"
max_mae = 8.0
"#;

/// The site of the demo's machines.
const SITE: &str = "demo-plant";

/// The feature pipeline every simulated machine runs: 5 s windows every
/// second over the three sensor signals, joined into the vector `bearing`.
const PIPELINE: &str = r#"
unlisted = "pass"
[[windows]]
name = "w"
signals = ["temperature", "vibration_rms", "current"]
size_ms = 5000
hop_ms = 1000
features = ["mean", "std", "max"]
[[vectors]]
name = "bearing"
features = [
    "w.temperature.mean", "w.temperature.std", "w.temperature.max",
    "w.vibration_rms.mean", "w.vibration_rms.std", "w.vibration_rms.max",
    "w.current.mean", "w.current.std", "w.current.max",
]
"#;

/// Simulated seconds per real second: a machine's two-day bearing life
/// passes in under a minute, so the fleet shows every stage of wear while
/// the demo collects.
const TIME_SCALE: f64 = 3600.0;
/// Mean simulated bearing life.
const LIFETIME_S: f64 = 2.0 * 86_400.0;
/// A machine with less remaining life than this is labelled failing, and a
/// prediction below it raises an alert.
const HORIZON_H: f64 = 8.0;

fn pipeline() -> strata_pipeline::PipelineConfig {
    toml::from_str(PIPELINE).expect("the demo pipeline parses")
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let temp = match &args.data_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("strata-demo-").tempdir()?),
    };
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.as_ref().expect("temp dir").path().to_owned());
    let mut config = match &args.config {
        Some(path) => HubConfig::load(path)
            .with_context(|| format!("cannot read the hub configuration {}", path.display()))?,
        None => HubConfig::parse(DEMO_CONFIG)
            .map_err(|e| anyhow::anyhow!("the demo's hub configuration does not parse: {e}"))?,
    };
    config.data_dir = data_dir.clone();
    config.mqtt.listen = args.mqtt_listen;
    // The demo runs on one machine with simulated devices that use passwords.
    config.mqtt.plaintext = true;
    config.http.listen = args.http_listen;
    let hub = Hub::start(config)
        .await
        .context("cannot start the demo hub")?;
    let base = format!("http://{}", hub.http_addr());
    let api = ApiClient::new(&base, Some(hub.admin_token().to_owned()));

    let count = args.devices;
    let saved = data_dir.join(FLEET_FILE);
    let registering = api.clone();
    let spec = fleet::FleetSpec {
        site: SITE.into(),
        site_name: "Demo plant".into(),
        prefix: "machine-".into(),
        count,
    };
    let (logins, keys) = tokio::task::spawn_blocking(move || {
        let logins = fleet::logins(&registering, &spec, &saved)?;
        let keys: serde_json::Value = registering.get("read the OTA keys", "/api/v1/ota/keys")?;
        anyhow::Ok((logins, keys))
    })
    .await??;
    let health_window_ms = strata_edge::config::OtaConfig::default().health_window_ms;
    let ota = |i: usize| fleet::ota_config(&keys, SITE, i + 1, health_window_ms);
    let devices: Vec<String> = logins.iter().map(|l| l.device.clone()).collect();
    let mqtt = hub.mqtt_addr();
    let mut fleet = tokio::task::JoinSet::new();
    for (i, login) in logins.into_iter().enumerate() {
        let agent = Agent::start(edge_config(&data_dir, mqtt, &base, login, i as u64, ota(i)))
            .context("cannot start a simulated edge agent")?;
        fleet.spawn(async move {
            agent.wait().await;
            Ok::<(), anyhow::Error>(())
        });
    }

    println!("strata demo running: {count} simulated machines, each with its own edge agent");
    println!("  dashboard:  {base}/ui/#token={}", hub.admin_token());
    println!("  API docs:   {base}/swagger-ui/");
    println!(
        "  devices:    curl -H \"Authorization: Bearer $(cat {}/admin.token)\" {base}/api/v1/devices",
        data_dir.display()
    );
    println!("  metrics:    {base}/metrics");
    println!("  MQTT:       {mqtt} (devices authenticate with their own credentials)");
    println!("  data:       {}", data_dir.display());
    println!("Ctrl-C stops the demo.");

    let stop_lifecycle = Arc::new(AtomicBool::new(false));
    let mut lifecycle = if args.stream_only {
        None
    } else {
        let plan = lifecycle::Plan {
            api,
            devices,
            collect: Duration::from_secs(args.collect_s),
            pipeline: serde_json::to_value(pipeline()).expect("JSON of a pipeline"),
            vector: "bearing".into(),
            alert_below_h: HORIZON_H,
            stop: stop_lifecycle.clone(),
        };
        Some(tokio::task::spawn_blocking(move || lifecycle::run(&plan)))
    };

    let stop = async {
        match args.duration_s {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => super::wait_for_stop_signal().await,
        }
    };
    tokio::pin!(stop);
    let mut report = tokio::time::interval(Duration::from_secs(5));
    report.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = report.tick(), if lifecycle.is_none() => {
                let m = hub.metrics();
                println!(
                    "  stored {} batches, {} readings",
                    m.batches_stored.load(Relaxed),
                    m.readings_stored.load(Relaxed)
                );
            }
            done = async { lifecycle.as_mut().expect("guarded").await }, if lifecycle.is_some() => {
                lifecycle = None;
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        stop_lifecycle.store(true, Relaxed);
                        fleet.shutdown().await;
                        hub.shutdown().await;
                        return Err(e.context("the demo's model lifecycle failed"));
                    }
                    Err(e) => anyhow::bail!("the demo's model lifecycle panicked: {e}"),
                }
            }
            Some(done) = fleet.join_next() => {
                if let Ok(Err(e)) = done {
                    eprintln!("a simulated machine stopped: {e:#}");
                }
            }
        }
    }
    stop_lifecycle.store(true, Relaxed);
    if let Some(task) = lifecycle {
        let _ = task.await;
    }
    fleet.shutdown().await;
    let stored = hub.metrics().readings_stored.load(Relaxed);
    hub.shutdown().await;
    println!("demo stopped: {stored} readings stored");
    Ok(())
}

/// One in-process edge agent for a simulated machine, with its own outbox.
fn edge_config(
    data_dir: &std::path::Path,
    mqtt: SocketAddr,
    http: &str,
    login: Login,
    seed: u64,
    ota: strata_edge::config::OtaConfig,
) -> EdgeConfig {
    EdgeConfig {
        data_dir: data_dir.join("edge").join(&login.device),
        hub: HubLink {
            mqtt,
            credential: Some(login.credential),
            credential_file: None,
            window: 32,
            http: Some(http.to_owned()),
            tls_dir: None,
        },
        outbox: OutboxConfig::default(),
        sources: vec![SourceConfig::Simulator(SimulatorConfig {
            seed,
            time_scale: TIME_SCALE,
            lifetime_s: LIFETIME_S,
            failure_horizon_s: HORIZON_H * 3600.0,
            ..SimulatorConfig::default()
        })],
        health: Default::default(),
        pipeline: Some(pipeline()),
        models: Vec::new(),
        ota,
        control: Default::default(),
        base_dir: data_dir.to_path_buf(),
        device: login.device,
    }
}

/// Where the demo keeps its machines' credentials, so a second run on the
/// same data directory reconnects the same fleet.
const FLEET_FILE: &str = "demo-fleet.json";
