//! Retraining cycles as stored: one row per cycle the hub's retraining
//! loop started (trigger, state, every step), so a restarted hub carries on
//! where it stopped and anyone can read what happened and why.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// An update that changed no row names a cycle that does not exist: an
/// error, not a silent no-op (a cycle saved under a wrong id would stay
/// where it was forever).
pub(crate) fn no_cycle_unless(changed: usize, id: i64) -> Result<()> {
    if changed == 0 {
        return Err(Error::NotFound(format!("no retraining cycle {id}")));
    }
    Ok(())
}

/// A stored cycle: its id, model and state as columns (to find open
/// cycles), the rest as the hub's JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCycle {
    /// Assigned by the store.
    pub id: i64,
    /// The model it retrains.
    pub model: String,
    /// Its state (`collecting`, `training`, ..., `promoted`).
    pub state: String,
    /// Whether it has ended.
    pub done: bool,
    /// When it started, ns.
    pub created_ns: i64,
    /// When it last changed, ns.
    pub updated_ns: i64,
    /// Everything else.
    pub body: serde_json::Value,
}

/// Where retraining cycles go.
pub trait RetrainStore: Send + Sync + 'static {
    /// Stores a new cycle (its `id` is ignored); returns its id.
    fn create_cycle(&self, cycle: &StoredCycle) -> Result<i64>;
    /// Replaces a cycle's state and document.
    fn update_cycle(&self, cycle: &StoredCycle) -> Result<()>;
    /// One cycle.
    fn cycle(&self, id: i64) -> Result<Option<StoredCycle>>;
    /// The newest cycles first, optionally of one model, at most `limit`.
    fn cycles(&self, model: Option<&str>, limit: usize) -> Result<Vec<StoredCycle>>;
}
