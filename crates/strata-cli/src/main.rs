//! `strata`: the one user-facing binary. Each role is a subcommand:
//! `strata hub` runs the hub, `strata edge` the agent on a gateway,
//! `strata demo` a hub with a fleet of simulated edge agents,
//! `strata site` / `strata device` manage the registry over the hub's API,
//! `strata bench` measures.

mod api_client;
mod cmd;
#[cfg(feature = "hub")]
mod fleet;

use clap::{Parser, Subcommand};

/// Strata: an AIoT platform from pilot line to fleet.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub: MQTT broker, registry, ingestion, storage and HTTP API.
    #[cfg(feature = "hub")]
    Hub(cmd::hub::HubArgs),
    /// Run the edge agent on a gateway: sources, pipeline, models, durable
    /// outbox, uplink.
    #[cfg(feature = "edge")]
    Edge(cmd::edge::EdgeArgs),
    /// The whole lifecycle in one command: a hub and a simulated fleet,
    /// labelled data collected, a model trained, deployed, predicting.
    #[cfg(feature = "hub")]
    Demo(cmd::demo::DemoArgs),
    /// Manage sites (through a running hub's API).
    #[command(subcommand)]
    Site(cmd::registry::SiteCommand),
    /// Manage devices (through a running hub's API).
    #[command(subcommand)]
    Device(cmd::registry::DeviceCommand),
    /// A simulated fleet for a running hub: backfilled history and live
    /// agents, to produce training data and load-test the platform.
    #[cfg(feature = "hub")]
    Simulate(cmd::simulate::SimulateArgs),
    /// Models: registry, upload, aliases, deployment, training, backtests
    /// (through a running hub's API).
    #[command(subcommand)]
    Model(cmd::model::ModelCommand),
    /// Training and backtest jobs (through a running hub's API).
    #[command(subcommand)]
    Job(cmd::model::JobCommand),
    /// Signed OTA releases: make a release key, sign a release (offline),
    /// check one, submit one to a hub.
    #[command(subcommand)]
    Release(cmd::release::ReleaseCommand),
    /// Rollout campaigns of signed releases: canary, waves, thresholds;
    /// follow, pause, resume or abort them (through a running hub's API).
    #[command(subcommand)]
    Campaign(cmd::campaign::CampaignCommand),
    /// Users and service accounts (through a running hub's API).
    #[command(subcommand)]
    User(cmd::access::UserCommand),
    /// API tokens: issue, list, revoke (through a running hub's API).
    #[command(subcommand)]
    Token(cmd::access::TokenCommand),
    /// The tamper-evident audit log: read it, take its signed head, verify it.
    #[command(subcommand)]
    Audit(cmd::access::AuditCommand),
    /// Measure the platform on this machine.
    #[cfg(feature = "hub")]
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
}

/// The hub moves every batch from a connection's thread to the storage
/// writer's and frees it there; mimalloc handles that pattern (and the many
/// small allocations of ingest) far better than the system allocator. The
/// edge-only gateway build keeps the system allocator and its small footprint.
#[cfg(feature = "hub")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The OPC UA client logs errors about its missing application
    // certificate even on unencrypted endpoints (the only ones offered
    // now); they would only mislead.
    for quiet in [
        "opcua_crypto::certificate_store=off",
        "opcua_core::comms::secure_channel=off",
        "opcua_client::session::client=off",
    ] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // The edge agent is I/O-bound (its pipeline and models have their own
    // thread): one runtime thread keeps a gateway's memory small.
    #[cfg(feature = "edge")]
    let single = matches!(cli.command, Command::Edge(_));
    #[cfg(not(feature = "edge"))]
    let single = false;
    let mut builder = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            #[cfg(feature = "hub")]
            Command::Hub(args) => cmd::hub::run(args).await,
            #[cfg(feature = "edge")]
            Command::Edge(args) => cmd::edge::run(args).await,
            #[cfg(feature = "hub")]
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Site(c) => cmd::registry::site(c).await,
            Command::Device(c) => cmd::registry::device(c).await,
            #[cfg(feature = "hub")]
            Command::Simulate(args) => cmd::simulate::run(args).await,
            Command::Model(c) => cmd::model::model(c).await,
            Command::Job(c) => cmd::model::job(c).await,
            Command::Release(c) => cmd::registry::blocking(move || cmd::release::run(c)).await,
            Command::Campaign(c) => cmd::registry::blocking(move || cmd::campaign::run(c)).await,
            Command::User(c) => cmd::access::user(c).await,
            Command::Token(c) => cmd::access::token(c).await,
            Command::Audit(c) => cmd::access::audit(c).await,
            #[cfg(feature = "hub")]
            Command::Bench(c) => cmd::bench::run(c).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
