//! `strata edge`: run the edge agent on a gateway.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use strata_edge::{Agent, EdgeConfig};

/// Options of `strata edge`.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Agent configuration (TOML); see config/edge.toml for every key.
    #[arg(long, short, env = "STRATA_EDGE_CONFIG")]
    pub config: PathBuf,
}

/// Runs the agent until Ctrl-C or SIGTERM.
pub async fn run(args: EdgeArgs) -> anyhow::Result<()> {
    let config = EdgeConfig::load(&args.config)?;
    let device = config.device.clone();
    let data_dir = config.data_dir.clone();
    let mut agent = Agent::start(config).context("cannot start the edge agent")?;
    println!("strata edge running: device={device}");
    let asked_to_stop = tokio::select! {
        _ = agent.until_ended() => false,
        _ = super::wait_for_stop_signal() => true,
    };
    if asked_to_stop {
        // An update being tried did not stop the agent: once its tasks
        // have ended (none writes the OTA state any more), the marks go.
        agent.stop().await;
        if let Err(e) = strata_edge::twin::forget_trials(&data_dir) {
            tracing::warn!("{e}");
        }
    }
    Ok(())
}
