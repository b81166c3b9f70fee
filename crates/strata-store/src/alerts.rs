//! Alerts and webhook deliveries as stored.
//!
//! An alert is one row (its lifecycle state and keys as columns, the rest as
//! the hub's JSON document) plus its history, one row per change. The
//! webhook deliveries an alert change causes are written in the same
//! transaction as the change, so a crash can lose neither the change nor the
//! notification of it: the delivery worker finds them on restart. The same
//! holds for the workflow runs an alert change starts.

use serde::{Deserialize, Serialize};

use crate::Result;

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    /// Assigned by the hub (one writer), so deliveries can name it before
    /// the row exists.
    pub id: i64,
    /// The rule that raised it.
    pub rule: String,
    /// The device it is about.
    pub device: String,
    /// `active`, `acknowledged` or `cleared`.
    pub state: String,
    /// When it was raised, ns.
    pub raised_ns: i64,
    /// When it last changed, ns.
    pub updated_ns: i64,
    /// Everything else (severity, values, who acknowledged it ...).
    pub body: serde_json::Value,
}

/// One change in an alert's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// When, ns.
    pub ts_ns: i64,
    /// `raised`, `acknowledged`, `cleared`.
    pub kind: String,
    /// What happened, in words.
    pub detail: String,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Only in this state.
    pub state: Option<String>,
    /// Only of this device.
    pub device: Option<String>,
    /// Only of this rule.
    pub rule: Option<String>,
    /// Only those still open (active or acknowledged).
    pub open: bool,
}

/// A webhook delivery to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDelivery {
    /// The endpoint's name.
    pub endpoint: String,
    /// The event, e.g. `alert.raised`.
    pub event: String,
    /// The JSON body, exactly as it will be signed and sent.
    pub body: String,
}

/// A webhook delivery and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Assigned by the store; also the receiver's idempotency key.
    pub id: i64,
    /// The endpoint's name.
    pub endpoint: String,
    /// The event.
    pub event: String,
    /// The JSON body.
    pub body: String,
    /// When it was queued, ns.
    pub created_ns: i64,
    /// `pending`, `delivered` or `failed` (gave up).
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due, ns.
    pub next_ns: i64,
    /// The last attempt's outcome, e.g. `HTTP 503` or a connection error.
    pub last_error: Option<String>,
    /// When it was delivered, ns.
    pub delivered_ns: Option<i64>,
}

/// A workflow run as stored: its state and when its next step is due as
/// columns, the rest (trigger, every step's outcome) as the hub's JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRun {
    /// Assigned by the store (ignored when created).
    pub id: i64,
    /// The workflow.
    pub workflow: String,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    /// When the next attempt of its current step is due, ns.
    pub next_ns: i64,
    /// When it started, ns.
    pub created_ns: i64,
    /// When it last changed, ns.
    pub updated_ns: i64,
    /// Everything else.
    pub body: serde_json::Value,
}

/// Where alerts, webhook deliveries and workflow runs go.
pub trait AlertStore: Send + Sync + 'static {
    /// Inserts or replaces an alert, appends `event` to its history, queues
    /// `deliveries` and starts `runs` (all due at once), in one transaction.
    fn record_alert(
        &self,
        alert: &StoredAlert,
        event: &AlertEvent,
        deliveries: &[NewDelivery],
        runs: &[StoredRun],
    ) -> Result<()>;
    /// Replaces an alert's document without a history entry (its latest
    /// value and count, flushed now and then).
    fn touch_alert(&self, alert: &StoredAlert) -> Result<()>;
    /// One alert.
    fn alert(&self, id: i64) -> Result<Option<StoredAlert>>;
    /// Alerts matching `filter`, newest first, at most `limit`.
    fn alerts(&self, filter: &AlertFilter, limit: usize) -> Result<Vec<StoredAlert>>;
    /// How many alerts match `filter` (all of them, without reading them).
    fn count_alerts(&self, filter: &AlertFilter) -> Result<u64>;
    /// The largest alert id given so far (0 when none).
    fn max_alert_id(&self) -> Result<i64>;
    /// An alert's history, oldest first.
    fn alert_events(&self, id: i64) -> Result<Vec<AlertEvent>>;
    /// Queues deliveries that belong to no alert change (e.g. a workflow
    /// step); returns their ids.
    fn queue_deliveries(&self, deliveries: &[NewDelivery], now_ns: i64) -> Result<Vec<i64>>;
    /// The oldest pending delivery of each endpoint, where due by `now_ns`
    /// (an endpoint gets its deliveries in queue order: a later one waits
    /// while an earlier one is retried), at most `limit`.
    fn due_deliveries(&self, now_ns: i64, limit: usize) -> Result<Vec<Delivery>>;
    /// The earliest `next_ns` of the deliveries [`AlertStore::due_deliveries`]
    /// would return.
    fn next_delivery_ns(&self) -> Result<Option<i64>>;
    /// Records an attempt's outcome (state, attempts, next_ns, last_error,
    /// delivered_ns).
    fn record_attempt(&self, delivery: &Delivery) -> Result<()>;
    /// Deliveries, newest first, optionally of one endpoint or state.
    fn deliveries(
        &self,
        endpoint: Option<&str>,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>>;
    /// Running workflow runs whose next step is due by `now_ns`, oldest
    /// first, at most `limit`.
    fn due_runs(&self, now_ns: i64, limit: usize) -> Result<Vec<StoredRun>>;
    /// The earliest `next_ns` of any running workflow run.
    fn next_run_ns(&self) -> Result<Option<i64>>;
    /// Replaces a run's state, due time and document.
    fn update_run(&self, run: &StoredRun) -> Result<()>;
    /// One run.
    fn run(&self, id: i64) -> Result<Option<StoredRun>>;
    /// Runs, newest first, optionally of one workflow.
    fn runs(&self, workflow: Option<&str>, limit: usize) -> Result<Vec<StoredRun>>;
    /// Deletes the webhook deliveries queued before `before_ns` that are
    /// no longer pending, and the workflow runs no longer running that
    /// last changed before it; returns how many of each.
    fn forget_history(&self, before_ns: i64) -> Result<(u64, u64)>;
    /// Deletes the alerts cleared before `before_ns`, with their history;
    /// returns how many. The alert with the largest id stays, so that ids
    /// are never given twice ([`AlertStore::max_alert_id`]).
    fn forget_cleared_alerts(&self, before_ns: i64) -> Result<u64>;
}
