//! Closed-loop control on the wire (JSON).
//!
//! - `down/control` (retained): the hub's verdict on the device's site
//!   phase gate, [`ControlGate`]. An agent arms its closed-loop rules only
//!   while the latest gate it holds is open.
//! - `down/cmd` with `{"approve": ...}`: an operator approved an action a
//!   rule in approval mode proposed, [`Approval`].
//! - `up/events`: every decision a rule took, [`ControlAction`], with its
//!   reason; the hub keeps them as the action record.

use serde::{Deserialize, Serialize};

/// Whether a site's closed-loop rules may act, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ControlGate {
    /// The site.
    pub site: String,
    /// Its phase: 1 monitoring, 2 closed loop, 3 autonomous.
    pub phase: u8,
    /// True when the site's phase allows closed loop and every check of
    /// its gate passes.
    pub open: bool,
    /// Each check of the gate, measured.
    pub checks: Vec<GateCheck>,
    /// Why the gate is closed (empty when open).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When the hub measured it, ns.
    pub ts_ns: i64,
    /// How long an open verdict holds, in seconds from when it was
    /// measured (`ts_ns`): the hub sends a newer one well within this, so a gate
    /// the hub stopped renewing (the hub down, the link cut) closes.
    /// Absent from hubs before it existed: then an open gate holds until
    /// the next verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_s: Option<f64>,
}

/// One measured condition of a gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GateCheck {
    /// What is measured, e.g. `uptime` or `precision(failure)`.
    pub kpi: String,
    /// `>=` or `<=`.
    pub op: String,
    /// The required value.
    pub required: f64,
    /// The measured value, when there was anything to measure.
    pub measured: Option<f64>,
    /// Whether it passes.
    pub ok: bool,
}

/// A command approving an action a rule proposed (`down/cmd`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approval {
    /// The proposed action's id ([`ControlAction::action`]).
    pub approve: String,
    /// Who approved it.
    pub by: String,
}

/// What became of one decision of a closed-loop rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    /// The setpoint is about to be written; the record of how that went
    /// follows under the same action id. Alone, it marks a write the
    /// gateway may have made before it lost power.
    Writing,
    /// The setpoint was written to the output.
    Written,
    /// Dry run: what would have been written, nothing was.
    DryRun,
    /// Approval mode: waiting for an operator.
    Proposed,
    /// A proposal that was not approved in time.
    Expired,
    /// The rule wanted to act but an interlock or the gate stopped it.
    Blocked,
    /// Writing failed.
    Failed,
    /// The rule was disarmed (an unhealthy model or sensor).
    Disarmed,
    /// The rule was armed again.
    Rearmed,
}

impl ActionOutcome {
    /// The name used in records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Writing => "writing",
            ActionOutcome::Written => "written",
            ActionOutcome::DryRun => "dry_run",
            ActionOutcome::Proposed => "proposed",
            ActionOutcome::Expired => "expired",
            ActionOutcome::Blocked => "blocked",
            ActionOutcome::Failed => "failed",
            ActionOutcome::Disarmed => "disarmed",
            ActionOutcome::Rearmed => "rearmed",
        }
    }
}

/// One record of the closed-loop action log (`up/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ControlAction {
    /// Sequence number of the record on the device (the hub keeps each
    /// once).
    pub seq: u64,
    /// When the rule decided, ns.
    pub ts_ns: i64,
    /// The rule.
    pub rule: String,
    /// The output it drives.
    pub output: String,
    /// Id of the action (a proposal and its approval share it).
    pub action: String,
    /// What became of it.
    pub outcome: ActionOutcome,
    /// The setpoint the rule asked for, before interlocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<f64>,
    /// The setpoint written (or that would have been).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The output's value before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<f64>,
    /// Why: the condition that held, and every interlock that shaped or
    /// stopped the action.
    pub reason: String,
    /// Who approved it (approved actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_gates_round_trip_as_json() {
        let a = ControlAction {
            seq: 3,
            ts_ns: 1,
            rule: "cool".into(),
            output: "fan".into(),
            action: "cool-3".into(),
            outcome: ActionOutcome::DryRun,
            requested: Some(120.0),
            value: Some(100.0),
            previous: None,
            reason: "temperature 91 > 80; clamped to max 100".into(),
            approved_by: None,
        };
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"outcome\":\"dry_run\""), "{json}");
        assert_eq!(serde_json::from_str::<ControlAction>(&json).unwrap(), a);
        let g: ControlGate =
            serde_json::from_str(r#"{"site":"a","phase":2,"open":false,"checks":[],"ts_ns":5}"#)
                .unwrap();
        assert_eq!((g.phase, g.open, g.reason.as_str()), (2, false, ""));
        let ap: Approval = serde_json::from_str(r#"{"approve":"cool-3","by":"ops"}"#).unwrap();
        assert_eq!(ap.approve, "cool-3");
    }
}
