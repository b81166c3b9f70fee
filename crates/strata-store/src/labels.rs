//! Ground truth that arrives late: a maintenance record, an inspection or
//! a meter reading says what a model's target really was at some time.

use serde::{Deserialize, Serialize};
use strata_proto::DeviceId;

use crate::Result;

/// The true value of a target signal on a device at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Label {
    /// The device.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub device: DeviceId,
    /// The target it labels, as models name it (e.g. `label.rul_h`).
    pub target: String,
    /// When the value held, ns since the epoch.
    pub ts_ns: i64,
    /// The true value.
    pub value: f64,
    /// Where it came from (e.g. `cmms`, `inspection`).
    #[serde(default)]
    pub source: String,
}

/// Where labels go. One label per (device, target, time): sending it
/// again replaces it (a corrected record), so retries are harmless.
pub trait LabelStore: Send + Sync + 'static {
    /// Stores labels in one transaction; returns how many were new.
    fn add_labels(&self, labels: &[Label], received_ns: i64) -> Result<usize>;

    /// The labels of `target` in `[from_ns, to_ns]`, optionally of one
    /// device, by device then time.
    fn labels(
        &self,
        target: &str,
        device: Option<&DeviceId>,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<Label>>;
}
