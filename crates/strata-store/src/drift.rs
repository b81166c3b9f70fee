//! Drift sketches as stored: one row per sketch batch a device sent,
//! exactly once per (device, stream, seq).

use strata_proto::{DeviceId, SketchBatch};

use crate::Result;

/// A sketch batch with the device that sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSketches {
    /// The sender.
    pub device: DeviceId,
    /// When the hub stored it, ns.
    pub received_ns: i64,
    /// What it sent.
    pub batch: SketchBatch,
}

/// Where drift sketches go.
pub trait DriftStore: Send + Sync + 'static {
    /// Stores a batch durably; false when this (device, stream, seq) was
    /// stored before (a retry), which changes nothing.
    fn add_sketches(
        &self,
        device: &DeviceId,
        batch: &SketchBatch,
        received_ns: i64,
    ) -> Result<bool>;

    /// The batches of `model` v`version` whose window ends in
    /// `[from_ns, to_ns)`, oldest first.
    fn sketches(
        &self,
        model: &str,
        version: u32,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<StoredSketches>>;

    /// Deletes the batches whose window ended before `before_ns` (as
    /// telemetry retention deletes the readings they summarise); returns
    /// how many went.
    fn forget_sketches(&self, before_ns: i64) -> Result<u64>;
}
