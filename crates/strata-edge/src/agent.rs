//! The agent: runs every source into the outbox and the uplink beside them.

use std::sync::Arc;
use std::time::Duration;

use strata_proto::DeviceId;
use strata_proto::payload::{Encoding, encode_telemetry};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::config::EdgeConfig;
use crate::outbox::Outbox;
use crate::sources::SourceConfig;
use crate::sources::simulator::{SimulatorConfig, machine_batch};
use crate::uplink::{self, UplinkConfig};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The outbox could not be opened.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
}

/// A running agent.
pub struct Agent {
    tasks: JoinSet<()>,
    outbox: Arc<Outbox>,
}

impl Agent {
    /// Starts the sources and the uplink.
    pub fn start(config: EdgeConfig) -> Result<Agent, AgentError> {
        let credential = config.credential()?;
        let device = DeviceId::new(config.device.as_str()).expect("checked at parse");
        let outbox = Arc::new(Outbox::open(
            &config.data_dir,
            config.outbox.max_bytes,
            config.outbox.drop_policy,
        )?);
        let appended = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        for source in config.sources {
            match source {
                SourceConfig::Simulator(sim) => {
                    tasks.spawn(simulate(sim, outbox.clone(), appended.clone()));
                }
            }
        }
        let uplink = UplinkConfig {
            device,
            mqtt: config.hub.mqtt,
            credential,
            window: config.hub.window,
        };
        tasks.spawn(uplink::run(uplink, outbox.clone(), appended));
        Ok(Agent { tasks, outbox })
    }

    /// The outbox, for status.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Runs until every task ends (sources with a batch limit end; the
    /// uplink does not) or the future is dropped.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A simulator source: one batch per interval into the outbox.
async fn simulate(config: SimulatorConfig, outbox: Arc<Outbox>, appended: Arc<Notify>) {
    let interval = Duration::from_millis(config.interval_ms.max(1));
    let step_ns = (interval.as_nanos() as i64 / config.readings_per_signal.max(1) as i64).max(1);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let start = crate::now_ns() - interval.as_nanos() as i64;
        let (outbox2, config2) = (outbox.clone(), config.clone());
        let appended_seq = tokio::task::spawn_blocking(move || {
            if config2.max_batches > 0 && outbox2.next_seq(&config2.stream)? > config2.max_batches {
                return Ok(None);
            }
            outbox2
                .append(&config2.stream, |seq| {
                    let batch = machine_batch(
                        &config2.stream,
                        config2.seed,
                        seq,
                        start,
                        step_ns,
                        config2.readings_per_signal,
                    );
                    encode_telemetry(&batch, Encoding::Protobuf)
                })
                .map(Some)
        })
        .await;
        match appended_seq {
            Ok(Ok(Some(_))) => appended.notify_one(),
            Ok(Ok(None)) => {
                tracing::info!(stream = %config.stream, "simulator reached max_batches");
                return;
            }
            Ok(Err(e)) => tracing::warn!(stream = %config.stream, "batch not kept: {e}"),
            Err(e) => tracing::error!("simulator task failed: {e}"),
        }
    }
}
