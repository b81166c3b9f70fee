//! `strata simulate`: a simulated fleet for a running hub, to produce
//! training data, try models before a rollout, and load-test the platform.
//!
//! Registers N devices (machines that wear towards failure at a chosen
//! rate, or building zones with daily, weekly and seasonal load) through
//! the API. With `--backfill-s` it first publishes that much history per
//! device as fast as the hub acknowledges it (stream `history`), and
//! reports the rate; then each device runs a real edge agent in this
//! process (simulator source, optional pipeline, durable outbox, twin) for
//! `--duration-s` or until Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use strata_edge::config::{HubLink, OutboxConfig};
use strata_edge::sources::SourceConfig;
use strata_edge::sources::simulator::{Scenario, SimulatorConfig};
use strata_edge::{Agent, EdgeConfig};
use strata_proto::payload::{Encoding, encode_telemetry};

use super::registry::HubAccess;
use crate::fleet::{self, Login};

/// Options of `strata simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    access: HubAccess,
    /// The hub's MQTT address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: SocketAddr,
    /// Simulated devices.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// `machine` (bearing wear, failure labels) or `building` (HVAC load).
    #[arg(long, default_value = "machine")]
    scenario: String,
    /// The site the devices belong to (created if missing).
    #[arg(long, default_value = "sim")]
    site: String,
    /// Device ids are `{prefix}{n:02}` (default: the scenario and a dash).
    #[arg(long)]
    prefix: Option<String>,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 3600.0)]
    time_scale: f64,
    /// Machines: mean bearing life in simulated hours (the failure rate is
    /// one per life; each machine's own life is 75-125 % of this).
    #[arg(long, default_value_t = 48.0)]
    lifetime_h: f64,
    /// Machines: remaining life, in simulated hours, under which readings
    /// are labelled failing.
    #[arg(long, default_value_t = 8.0)]
    failure_horizon_h: f64,
    /// Seconds of history per device to publish before going live, as
    /// fast as the hub takes it (0: none).
    #[arg(long, default_value_t = 0)]
    backfill_s: u64,
    /// Seconds to run live after the backfill (0: stop after the backfill;
    /// absent: until Ctrl-C).
    #[arg(long)]
    duration_s: Option<u64>,
    /// A TOML file with a `[pipeline]` table the agents run (so models
    /// deployed to the simulated devices have their features).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Devices on an older configuration: this share of the devices
    /// (spread evenly) runs the `[pipeline]` of `--legacy-pipeline`
    /// instead, e.g. to rehearse a rollout part of the fleet cannot take.
    #[arg(long, default_value_t = 0.0, requires = "legacy_pipeline")]
    legacy_share: f64,
    /// The pipeline of the legacy devices.
    #[arg(long)]
    legacy_pipeline: Option<PathBuf>,
    /// Milliseconds between two readings batches of a device.
    #[arg(long)]
    interval_ms: Option<u64>,
    /// How long a model an update installed must run well on a device
    /// before it is committed (the agents' `[ota] health_window_ms`).
    #[arg(long, default_value_t = 10_000)]
    health_window_ms: u64,
    /// Where the fleet's credentials and the agents' outboxes live.
    #[arg(long, default_value = "sim-state")]
    state_dir: PathBuf,
}

/// Stream name of backfilled history (live data uses `sim`, so the two
/// never share sequence numbers).
const HISTORY_STREAM: &str = "history";

/// Runs `strata simulate`.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let scenario = match args.scenario.as_str() {
        "machine" => Scenario::Machine,
        "building" => Scenario::Building,
        other => bail!("--scenario {other:?}: use \"machine\" or \"building\""),
    };
    let pipeline = match &args.pipeline {
        Some(path) => Some(read_pipeline(path)?),
        None => None,
    };
    let legacy_pipeline = match &args.legacy_pipeline {
        Some(path) => Some(read_pipeline(path)?),
        None => None,
    };
    if !(0.0..=1.0).contains(&args.legacy_share) {
        bail!("--legacy-share {}: a share from 0 to 1", args.legacy_share);
    }
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
    let api = args.access.client()?;
    let spec = fleet::FleetSpec {
        site: args.site.clone(),
        site_name: format!("Simulated {}s", args.scenario),
        prefix: args
            .prefix
            .clone()
            .unwrap_or_else(|| format!("{}-", args.scenario)),
        count: args.devices,
    };
    let saved = args.state_dir.join("fleet.json");
    let (logins, keys) = tokio::task::spawn_blocking(move || {
        let logins = fleet::logins(&api, &spec, &saved)?;
        // The agents trust what this hub trusts, as a real install would
        // be configured from `GET /api/v1/ota/keys`.
        let keys: serde_json::Value = api.get("read the OTA keys", "/api/v1/ota/keys")?;
        anyhow::Ok((logins, keys))
    })
    .await??;
    let ota = |i: usize| fleet::ota_config(&keys, &args.site, i + 1, args.health_window_ms);
    let simulator = |seed: u64| SimulatorConfig {
        scenario,
        seed,
        time_scale: args.time_scale,
        lifetime_s: args.lifetime_h * 3600.0,
        failure_horizon_s: args.failure_horizon_h * 3600.0,
        interval_ms: args
            .interval_ms
            .unwrap_or(SimulatorConfig::default().interval_ms),
        ..SimulatorConfig::default()
    };
    for (i, _) in logins.iter().enumerate() {
        simulator(i as u64)
            .validate()
            .map_err(|e| anyhow::anyhow!(e))?;
    }

    if args.backfill_s > 0 {
        backfill(&args, &logins, &simulator).await?;
    }
    if args.duration_s == Some(0) {
        return Ok(());
    }
    let mut fleet = tokio::task::JoinSet::new();
    let mut legacy = 0;
    for (i, login) in logins.into_iter().enumerate() {
        // Every 1/share-th device, so that exactly that share is legacy.
        let is_legacy =
            ((i + 1) as f64 * args.legacy_share).floor() > (i as f64 * args.legacy_share).floor();
        legacy += usize::from(is_legacy);
        let config = EdgeConfig {
            data_dir: args.state_dir.join("edge").join(&login.device),
            hub: HubLink {
                mqtt: args.mqtt,
                credential: Some(login.credential),
                credential_file: None,
                window: 32,
                http: Some(args.access.hub.clone()),
                tls_dir: None,
            },
            // Simulated devices share this machine's disk: their outboxes
            // survive a crash of the simulator, not a power loss.
            outbox: OutboxConfig {
                durability: strata_edge::outbox::Durability::Process,
                ..OutboxConfig::default()
            },
            sources: vec![SourceConfig::Simulator(simulator(i as u64))],
            health: Default::default(),
            pipeline: if is_legacy {
                legacy_pipeline.clone()
            } else {
                pipeline.clone()
            },
            models: Vec::new(),
            ota: ota(i),
            control: Default::default(),
            base_dir: args.state_dir.clone(),
            device: login.device,
        };
        let agent = Agent::start(config).context("cannot start a simulated edge agent")?;
        fleet.spawn(agent.wait());
    }
    println!(
        "simulating {} {}s live against {} ({legacy} on the legacy pipeline); Ctrl-C stops",
        args.devices, args.scenario, args.mqtt
    );
    match args.duration_s {
        Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
        None => super::wait_for_stop_signal().await,
    }
    fleet.shutdown().await;
    Ok(())
}

/// Publishes `backfill_s` seconds of history per device, all devices at
/// once, and prints the rate the hub took it at.
async fn backfill(
    args: &SimulateArgs,
    logins: &[Login],
    simulator: &dyn Fn(u64) -> SimulatorConfig,
) -> anyhow::Result<()> {
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64;
    let mut readings = 0usize;
    let mut payloads = Vec::new();
    for (i, _) in logins.iter().enumerate() {
        let mut sim = simulator(i as u64);
        sim.stream = HISTORY_STREAM.into();
        let interval_ns = sim.interval_ms as i64 * 1_000_000;
        let batches = (args.backfill_s * 1000 / sim.interval_ms.max(1)) as i64;
        let start = end - batches * interval_ns;
        let device: Vec<Bytes> = (0..batches)
            .map(|n| {
                let batch = sim.batch(n as u64 + 1, start + n * interval_ns);
                readings += batch.signals.iter().map(|s| s.values.len()).sum::<usize>();
                Bytes::from(encode_telemetry(&batch, Encoding::Protobuf))
            })
            .collect();
        payloads.push(device);
    }
    let batches: usize = payloads.iter().map(Vec::len).sum();
    println!(
        "backfilling {} s of history: {batches} batches, {readings} readings from {} devices",
        args.backfill_s,
        logins.len()
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (login, p) in logins.iter().cloned().zip(payloads) {
        let mqtt = args.mqtt;
        tasks.spawn(async move {
            let topic = format!("strata/v1/{}/up/telemetry", login.device);
            // The hub binds the client id to the device: the live agent
            // connects only after the backfill.
            fleet::publish_all(mqtt, &login.device.clone(), Some(&login), &topic, p, 64).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a backfill task failed")??;
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "backfill acknowledged in {s:.2} s: {:.0} batches/s, {:.0} readings/s",
        batches as f64 / s,
        readings as f64 / s
    );
    Ok(())
}

/// The `[pipeline]` table of a TOML file.
fn read_pipeline(path: &Path) -> anyhow::Result<strata_pipeline::PipelineConfig> {
    #[derive(serde::Deserialize)]
    struct File {
        pipeline: strata_pipeline::PipelineConfig,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: File = toml::from_str(&text)
        .with_context(|| format!("{}: no valid [pipeline] table", path.display()))?;
    strata_pipeline::Pipeline::new(&file.pipeline)
        .map_err(|e| anyhow::anyhow!("{}: [pipeline]: {e}", path.display()))?;
    Ok(file.pipeline)
}
