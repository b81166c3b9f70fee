//! Sources: where readings come from. Each source is a component with its
//! own config `type` (the folder name), registered in [`SourceConfig`]; it
//! runs as a task that sends [`Frame`]s to the pipeline. Heavy protocol
//! crates sit behind Cargo features (`modbus`, `opcua`).

pub mod frame;
#[cfg(feature = "modbus")]
pub mod modbus;
pub mod mqtt;
#[cfg(feature = "opcua")]
pub mod opcua;
pub mod simulator;

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

pub use frame::{Frame, FrameBuilder, FrameSender, Handled, Outcome, SourceStats};

/// The configuration of one source, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A built-in simulated machine or building zone.
    Simulator(simulator::SimulatorConfig),
    /// Polling registers of a Modbus TCP unit.
    #[cfg(feature = "modbus")]
    Modbus(modbus::ModbusConfig),
    /// Subscribing to nodes of an OPC UA server.
    #[cfg(feature = "opcua")]
    Opcua(opcua::OpcuaConfig),
    /// Subscribing to topics of a local MQTT broker.
    Mqtt(mqtt::MqttSourceConfig),
}

impl SourceConfig {
    /// The stream name the source's batches are sent under.
    pub fn stream(&self) -> &str {
        match self {
            SourceConfig::Simulator(c) => &c.stream,
            #[cfg(feature = "modbus")]
            SourceConfig::Modbus(c) => &c.stream,
            #[cfg(feature = "opcua")]
            SourceConfig::Opcua(c) => &c.stream,
            SourceConfig::Mqtt(c) => &c.stream,
        }
    }

    /// Checks what serde cannot; the message names the source and key.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            SourceConfig::Simulator(c) => c.validate(),
            #[cfg(feature = "modbus")]
            SourceConfig::Modbus(c) => c.validate(),
            #[cfg(feature = "opcua")]
            SourceConfig::Opcua(c) => c.validate(),
            SourceConfig::Mqtt(c) => c.validate(),
        }
    }

    /// Checks signal names the hub would refuse, for an agent with no
    /// pipeline to rename them (the names go to the hub as they are).
    pub fn check_names_for_the_hub(&self) -> Result<(), String> {
        match self {
            #[cfg(feature = "modbus")]
            SourceConfig::Modbus(c) => c.check_names_for_the_hub(),
            #[cfg(feature = "opcua")]
            SourceConfig::Opcua(c) => c.check_names_for_the_hub(),
            SourceConfig::Mqtt(c) => c.check_names_for_the_hub(),
            _ => Ok(()),
        }
    }
}

/// Runs one source until the task is dropped (or, for a simulator with a
/// batch limit, until it has produced them all).
pub async fn run(
    config: SourceConfig,
    data_dir: &Path,
    next_seq: u64,
    frames: FrameSender,
    stats: Arc<SourceStats>,
) {
    match config {
        SourceConfig::Simulator(c) => simulator::run(c, next_seq, frames, stats).await,
        #[cfg(feature = "modbus")]
        SourceConfig::Modbus(c) => modbus::run(c, frames, stats).await,
        #[cfg(feature = "opcua")]
        SourceConfig::Opcua(c) => {
            let pki = data_dir.join("opcua-pki");
            opcua::run(c, pki, frames, stats).await
        }
        SourceConfig::Mqtt(c) => mqtt::run(c, data_dir, frames, stats).await,
    }
}
