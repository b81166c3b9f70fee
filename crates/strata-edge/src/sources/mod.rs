//! Sources: where readings come from. Each source is a component with its
//! own config `type` (the folder name), registered in [`SourceConfig`].

pub mod simulator;

use serde::Deserialize;

/// The configuration of one source, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A built-in simulated machine.
    Simulator(simulator::SimulatorConfig),
}

impl SourceConfig {
    /// The stream name the source's batches are sent under.
    pub fn stream(&self) -> &str {
        match self {
            SourceConfig::Simulator(c) => &c.stream,
        }
    }
}
