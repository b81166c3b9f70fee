//! `strata hub`: run the hub until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use strata_hub::{Hub, HubConfig};

/// Options of `strata hub`; each overrides the config file.
#[derive(Debug, Args)]
pub struct HubArgs {
    /// Configuration file (TOML); see config/hub.toml for every key.
    #[arg(long, short, env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (database, admin token).
    #[arg(long, env = "STRATA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Plain-text MQTT listen address, e.g. 0.0.0.0:1883 (with --mqtt-plaintext).
    #[arg(long)]
    pub mqtt_listen: Option<SocketAddr>,
    /// Turn on plain-text MQTT with device passwords: for development only.
    #[arg(long)]
    pub mqtt_plaintext: bool,
    /// MQTT over TLS listen address (device certificates), e.g. 0.0.0.0:8883.
    #[arg(long)]
    pub mqtt_tls_listen: Option<SocketAddr>,
    /// HTTP listen address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Make the twins' epoch anew, after restoring the twin store from a
    /// backup: devices then apply their twins whatever versions they
    /// applied before.
    #[arg(long)]
    pub new_twin_epoch: bool,
}

impl HubArgs {
    /// The configuration: the file (or defaults), then the flags.
    pub fn config(&self) -> anyhow::Result<HubConfig> {
        let mut config = match &self.config {
            Some(path) => HubConfig::load(path)?,
            None => HubConfig::default(),
        };
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(a) = self.mqtt_listen {
            config.mqtt.listen = a;
        }
        if self.mqtt_plaintext {
            config.mqtt.plaintext = true;
        }
        if let Some(a) = self.mqtt_tls_listen {
            config.mqtt.tls.listen = Some(a);
        }
        if let Some(a) = self.http_listen {
            config.http.listen = a;
        }
        config.new_twin_epoch = self.new_twin_epoch;
        Ok(config)
    }
}

/// Runs the hub in the foreground.
pub async fn run(args: HubArgs) -> anyhow::Result<()> {
    let hub = Hub::start(args.config()?)
        .await
        .context("cannot start the hub")?;
    // One line a script can wait for and parse.
    let tls = hub
        .mqtt_tls_addr()
        .map(|a| format!(" mqtts={a}"))
        .unwrap_or_default();
    println!(
        "strata hub ready: mqtt={}{tls} http={} api={} data_dir={}",
        hub.mqtt_addr(),
        hub.http_addr(),
        hub.api_url(),
        hub.data_dir().display()
    );
    super::wait_for_stop_signal().await;
    eprintln!("stopping: finishing queued writes");
    hub.shutdown().await;
    Ok(())
}
