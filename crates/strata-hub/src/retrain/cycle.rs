//! One retraining cycle as it is recorded: what triggered it, where it is,
//! the figures each decision was made on, and every step with its time.

use serde::{Deserialize, Serialize};

/// Where a cycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CycleState {
    /// Triggered; collecting fresh data before training.
    Collecting,
    /// The training job runs.
    Training,
    /// The backtest of champion and challenger runs.
    Evaluating,
    /// The challenger shadows the champion on the canary devices.
    Shadowing,
    /// The challenger is the champion now, on every serving device.
    Promoted,
    /// The challenger was not better on the held-out data.
    Rejected,
    /// The challenger did not prove itself in the shadow (worse, or too
    /// few labels); the champion stays.
    Abandoned,
    /// A step failed (e.g. a job); the champion stays.
    Failed,
}

impl CycleState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            CycleState::Collecting => "collecting",
            CycleState::Training => "training",
            CycleState::Evaluating => "evaluating",
            CycleState::Shadowing => "shadowing",
            CycleState::Promoted => "promoted",
            CycleState::Rejected => "rejected",
            CycleState::Abandoned => "abandoned",
            CycleState::Failed => "failed",
        }
    }

    /// Whether the cycle has ended.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            CycleState::Promoted
                | CycleState::Rejected
                | CycleState::Abandoned
                | CycleState::Failed
        )
    }
}

/// What started a cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Trigger {
    /// `drift`, `accuracy` or `schedule`.
    pub kind: String,
    /// When it fired, ns.
    pub at_ns: i64,
    /// In words, with the figures.
    pub detail: String,
    /// The devices it concerns (drifting devices), if any.
    pub devices: Vec<String>,
    /// What the drift report said about where the drift is.
    pub findings: Vec<String>,
    /// Where the evidence starts, ns: the first drifting window, or the
    /// start of the labels the accuracy trigger judged (none for a
    /// schedule). The held-out share is taken from the data after it, so
    /// the challenger trains on some of what the champion failed on and
    /// is judged on the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_from_ns: Option<i64>,
}

/// Champion and challenger on the same data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Comparison {
    /// `mae` or `roc_auc` (offline), `mae` or `accuracy` (live).
    pub criterion: String,
    /// The champion's figure.
    pub champion: f64,
    /// The challenger's figure.
    pub challenger: f64,
    /// How much lower the challenger's error is, as a fraction of the
    /// champion's (negative: worse).
    pub improvement: f64,
    /// Rows (offline) or (prediction, label) pairs (live) scored, the
    /// challenger's.
    pub n: u64,
}

/// One recorded step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    /// When, ns.
    pub at_ns: i64,
    /// The state it entered.
    pub state: CycleState,
    /// What happened.
    pub message: String,
}

/// A retraining cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cycle {
    /// Its id.
    pub id: i64,
    /// The model.
    pub model: String,
    /// Where it is.
    pub state: CycleState,
    /// What started it.
    pub trigger: Trigger,
    /// The champion when it started.
    pub champion: u32,
    /// The version it trained.
    pub challenger: Option<u32>,
    /// The training job.
    pub train_job: Option<i64>,
    /// The backtest job.
    pub backtest_job: Option<i64>,
    /// The fresh window: start, end of training data, end (ns).
    pub window_ns: Option<[i64; 3]>,
    /// Devices that served the champion (trained and evaluated on).
    pub devices: Vec<String>,
    /// Devices the challenger shadows on.
    pub canary: Vec<String>,
    /// When the shadow started, ns.
    pub shadow_from_ns: Option<i64>,
    /// Champion vs challenger on the held-out share of the window.
    pub offline: Option<Comparison>,
    /// Champion vs challenger on the labels of the shadow period.
    pub live: Option<Comparison>,
    /// When this cycle began moving the fleet to its challenger, ns: a
    /// promotion whose record did not complete is finished from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoting_ns: Option<i64>,
    /// Every step, oldest first.
    pub steps: Vec<Step>,
    /// Started, ns.
    pub created_ns: i64,
    /// Last changed, ns.
    pub updated_ns: i64,
}

impl Cycle {
    /// Moves to `state` and records why.
    pub fn step(&mut self, state: CycleState, message: impl Into<String>, now_ns: i64) {
        let message = message.into();
        tracing::info!(
            model = self.model,
            cycle = self.id,
            state = state.as_str(),
            "retraining: {message}"
        );
        self.state = state;
        self.updated_ns = now_ns;
        self.steps.push(Step {
            at_ns: now_ns,
            state,
            message,
        });
    }

    /// The lineage trigger of the version it trains: `drift:cycle-3`.
    pub fn lineage_trigger(&self) -> String {
        format!("{}:cycle-{}", self.trigger.kind, self.id)
    }
}

/// Relative improvement of an error: 1 - challenger / champion (0 when the
/// champion's error is 0 and the challenger's too).
pub fn improvement(champion_error: f64, challenger_error: f64) -> f64 {
    if champion_error > 0.0 {
        1.0 - challenger_error / champion_error
    } else if challenger_error > 0.0 {
        -1.0
    } else {
        0.0
    }
}
