//! Closed-loop action records as stored: every decision a device's rules
//! took (written, dry run, proposed, blocked, ...), kept once per
//! (device, seq) however often the device resends it.

use serde::{Deserialize, Serialize};
use strata_proto::DeviceId;

use crate::Result;

/// One stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAction {
    /// The device whose rule decided.
    pub device: DeviceId,
    /// When the hub received it, ns.
    pub received_ns: i64,
    /// The record as the device sent it.
    pub action: strata_proto::ControlAction,
}

/// Which records to read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionFilter {
    /// Only this device's.
    pub device: Option<DeviceId>,
    /// Only this rule's.
    pub rule: Option<String>,
    /// Only this action id's (a proposal and what became of it).
    pub action: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Where action records go.
pub trait ControlStore: Send + Sync + 'static {
    /// Stores a record; false when (device, seq) was already stored.
    fn record_action(&self, action: &StoredAction) -> Result<bool>;
    /// Records matching `filter`, newest first.
    fn actions(&self, filter: &ActionFilter) -> Result<Vec<StoredAction>>;
}
