//! Closed-loop rules and their safety interlocks, as pure logic: readings,
//! model health, the site gate and approvals go in; decisions (write this
//! setpoint, or a record of why not) come out. No I/O and no clock of its
//! own, so every interlock is tested here with made-up times.
//!
//! For a rule to write, in this order:
//! 1. it is armed: its signals are fresh and of good quality and its model
//!    is healthy (else it disarms itself, once, with the reason, and arms
//!    again when all is well);
//! 2. its condition holds, for `for_s` seconds;
//! 3. its cooldown since its last action has passed;
//! 4. the setpoint (fixed, or another signal's value) is clamped into
//!    `[min, max]` and moved at most `max_rate` per second from the
//!    output's current value;
//! 5. the site gate is open (unless the rule opts out);
//! 6. its mode allows it: `armed` writes, `dry_run` only records what it
//!    would write, `approval` proposes and writes once an operator
//!    approves (checking 1, 4 and 5 again at that moment).

use std::collections::HashMap;

use serde::Deserialize;
use strata_proto::{ActionOutcome, ControlAction, ControlGate, Quality};

/// What a rule may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Only record what it would write (the default: a new rule proves
    /// itself before it touches a machine).
    #[default]
    DryRun,
    /// Propose; write when an operator approves.
    Approval,
    /// Write.
    Armed,
}

/// One closed-loop rule (`[[control.rules]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name, in records.
    pub name: String,
    /// The reading or prediction the condition watches (a signal name,
    /// e.g. `temperature` or `failure.probability`).
    pub signal: String,
    /// The condition: the signal is above this...
    #[serde(default)]
    pub above: Option<f64>,
    /// ...or below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// For at least this many seconds.
    #[serde(default)]
    pub for_s: f64,
    /// The output to write.
    pub output: String,
    /// A fixed setpoint...
    #[serde(default)]
    pub setpoint: Option<f64>,
    /// ...or the value of this signal (e.g. a model's recommended load).
    #[serde(default)]
    pub setpoint_signal: Option<String>,
    /// Lowest value ever written.
    pub min: f64,
    /// Highest value ever written.
    pub max: f64,
    /// Most change per second of the written value (one write moves it at
    /// most `max_rate * max(cooldown_s, 1)`); none when absent.
    #[serde(default)]
    pub max_rate: Option<f64>,
    /// Seconds between two actions of this rule.
    #[serde(default = "default_cooldown")]
    pub cooldown_s: f64,
    /// `dry_run` (default), `approval` or `armed`.
    #[serde(default)]
    pub mode: Mode,
    /// Act only while the site's phase gate is open (default true).
    #[serde(default = "yes")]
    pub require_gate: bool,
    /// Disarm while this model is unhealthy (errors, or not running).
    #[serde(default)]
    pub model: Option<String>,
    /// Disarm when a watched signal has not been heard for this long.
    #[serde(default = "default_stale")]
    pub stale_s: f64,
    /// A proposal not approved within this many seconds expires.
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout_s: f64,
}

fn default_cooldown() -> f64 {
    10.0
}
fn default_stale() -> f64 {
    30.0
}
fn default_approval_timeout() -> f64 {
    300.0
}
fn yes() -> bool {
    true
}

impl RuleConfig {
    /// Checks what serde cannot; the message names the rule and key.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if self.above.is_some() == self.below.is_some() {
            return Err(format!(
                "rule {name:?}: give exactly one of `above` or `below`"
            ));
        }
        if self.setpoint.is_some() == self.setpoint_signal.is_some() {
            return Err(format!(
                "rule {name:?}: give exactly one of `setpoint` or `setpoint_signal`"
            ));
        }
        let finite = [
            ("min", Some(self.min)),
            ("max", Some(self.max)),
            ("above", self.above),
            ("below", self.below),
            ("setpoint", self.setpoint),
            ("max_rate", self.max_rate),
        ];
        for (key, v) in finite {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(format!("rule {name:?}: `{key}` must be a finite number"));
            }
        }
        if self.min > self.max {
            return Err(format!("rule {name:?}: `min` is above `max`"));
        }
        if let Some(s) = self.setpoint.filter(|s| *s < self.min || *s > self.max) {
            return Err(format!(
                "rule {name:?}: setpoint {s} lies outside [{}, {}]",
                self.min, self.max
            ));
        }
        if self.max_rate.is_some_and(|r| r <= 0.0) {
            return Err(format!("rule {name:?}: `max_rate` must be above 0"));
        }
        for (key, v) in [
            ("for_s", self.for_s),
            ("cooldown_s", self.cooldown_s),
            ("stale_s", self.stale_s),
            ("approval_timeout_s", self.approval_timeout_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("rule {name:?}: `{key}` must be 0 or more seconds"));
            }
        }
        if self.stale_s == 0.0 {
            return Err(format!("rule {name:?}: `stale_s` must be above 0"));
        }
        Ok(())
    }

    fn condition(&self, v: f64) -> bool {
        match (self.above, self.below) {
            (Some(a), _) => v > a,
            (_, Some(b)) => v < b,
            _ => false,
        }
    }

    fn condition_text(&self, v: f64) -> String {
        match (self.above, self.below) {
            (Some(a), _) => format!("{} {v} > {a}", self.signal),
            (_, Some(b)) => format!("{} {v} < {b}", self.signal),
            _ => String::new(),
        }
    }
}

/// The latest reading of a signal, and when it arrived (the engine's
/// clock, not the device's, so a wrong device clock cannot keep a dead
/// signal fresh, nor one behind make every reading stale).
#[derive(Debug, Clone, Copy)]
struct Latest {
    value: f64,
    quality: Quality,
    at_ns: i64,
}

/// How long a stream a signal stopped arriving from is remembered.
const SOURCES_MEMORY_NS: i64 = 3_600_000_000_000;

/// What the engine wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Write `value` to the rule's output, then record `action` with the
    /// outcome (written or failed) through [`Engine::written`] or
    /// [`Engine::failed`].
    Write(ControlAction),
    /// Record this; nothing to write.
    Record(ControlAction),
}

/// A proposal waiting for an operator.
#[derive(Debug, Clone)]
struct Proposal {
    action: String,
    requested: f64,
    at_ns: i64,
}

#[derive(Debug, Default)]
struct RuleState {
    /// Since when the condition holds.
    since_ns: Option<i64>,
    /// The last action (any outcome but blocked), for the cooldown.
    last_action_ns: Option<i64>,
    /// Why the rule is disarmed.
    disarmed: Option<String>,
    /// The last blocked record: (reason, when), so a lasting block is
    /// recorded once a minute, not at every reading.
    last_blocked: Option<(String, i64)>,
    proposal: Option<Proposal>,
    actions: u64,
}

/// A blocked action is recorded again after this long if still blocked.
const BLOCKED_REPEAT_NS: i64 = 60_000_000_000;

/// The closed-loop engine of one agent.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<RuleConfig>,
    state: Vec<RuleState>,
    signals: HashMap<String, Latest>,
    /// Each output's current value and since when (written, or read back).
    outputs: HashMap<String, (f64, i64)>,
    /// Per output, the rule that wrote it last, the setpoint it asked for
    /// and what the output holds for it (rounded inward to what it can
    /// hold): the same rule asking for the same again is already done
    /// (another rule, with other bounds, may need another rounding).
    settled: HashMap<String, (String, f64, f64)>,
    /// What dry runs would have left on each output.
    dry: HashMap<String, (f64, i64)>,
    /// Models that are unhealthy now, and why.
    unhealthy_models: HashMap<String, String>,
    gate: Option<ControlGate>,
    /// When the gate held was received (the engine's clock).
    gate_at_ns: i64,
    /// Per signal, the streams it arrived from and when last (the
    /// engine's clock): while two are heard, a rule watching it cannot
    /// tell which machine it reads.
    sources: HashMap<String, Vec<(std::sync::Arc<str>, i64)>>,
    /// Starts every action id, so ids stay unique across restarts.
    epoch: String,
}

fn seconds(ns: i64) -> f64 {
    ns as f64 / 1e9
}

impl Engine {
    /// An engine for validated rules.
    pub fn new(rules: Vec<RuleConfig>) -> Self {
        let state = rules.iter().map(|_| RuleState::default()).collect();
        Engine {
            rules,
            state,
            signals: HashMap::new(),
            outputs: HashMap::new(),
            settled: HashMap::new(),
            dry: HashMap::new(),
            unhealthy_models: HashMap::new(),
            gate: None,
            gate_at_ns: 0,
            sources: HashMap::new(),
            epoch: action_epoch(),
        }
    }

    /// Every signal some rule reads.
    pub fn watched(&self) -> std::collections::HashSet<String> {
        self.rules
            .iter()
            .flat_map(|r| std::iter::once(r.signal.clone()).chain(r.setpoint_signal.clone()))
            .collect()
    }

    /// The output's current value, as read back from the device at start.
    pub fn set_output(&mut self, output: &str, value: f64, now_ns: i64) {
        self.outputs.insert(output.to_string(), (value, now_ns));
        self.settled.remove(output);
    }

    /// The output's current value, when known.
    pub fn output_value(&self, output: &str) -> Option<f64> {
        self.outputs.get(output).map(|(v, _)| *v)
    }

    /// Forgets the output's value (after a failed write it may hold
    /// either); rate-limited rules wait until it is read back.
    pub fn forget_output(&mut self, output: &str) {
        self.outputs.remove(output);
        self.settled.remove(output);
    }

    /// Takes the hub's verdict on the site, received at `now_ns` and
    /// measured `age_ns` before (by the wall clock; 0 when stamped ahead);
    /// returns false (and keeps the one held) for an open verdict older
    /// than the one held: a late delivery must not put back an open gate
    /// the hub has closed since. A closed verdict is always taken, however
    /// old its time: the hub's clock may have been set back, and closing is
    /// the safe way to be wrong. Only a newer measurement renews an open
    /// gate's validity: the same one again (the broker's retained copy on
    /// every reconnect) does not, and its age counts from when it was
    /// measured, not received.
    pub fn set_gate(&mut self, gate: ControlGate, now_ns: i64, age_ns: i64) -> bool {
        if let Some(held) = &self.gate
            && gate.open
        {
            if gate.ts_ns < held.ts_ns {
                return false;
            }
            if gate.ts_ns == held.ts_ns && held.open {
                return true;
            }
        }
        self.gate = Some(gate);
        self.gate_at_ns = now_ns.saturating_sub(age_ns.max(0));
        true
    }

    /// Marks a model unhealthy (with why) or healthy (`None`).
    pub fn set_model_health(&mut self, model: &str, problem: Option<String>) {
        match problem {
            Some(p) => self.unhealthy_models.insert(model.to_string(), p),
            None => self.unhealthy_models.remove(model),
        };
    }

    /// A new reading of `signal` from `stream`; returns what the rules
    /// watching it decide.
    pub fn observe(
        &mut self,
        stream: &std::sync::Arc<str>,
        signal: &str,
        value: f64,
        quality: Quality,
        now_ns: i64,
    ) -> Vec<Decision> {
        let heard = self.sources.entry(signal.to_string()).or_default();
        match heard.iter_mut().find(|(s, _)| s == stream) {
            Some(entry) => entry.1 = now_ns,
            None => heard.push((stream.clone(), now_ns)),
        }
        heard.retain(|(_, at)| now_ns - at <= SOURCES_MEMORY_NS);
        self.signals.insert(
            signal.to_string(),
            Latest {
                value,
                quality,
                at_ns: now_ns,
            },
        );
        let mut out = Vec::new();
        for i in 0..self.rules.len() {
            let r = &self.rules[i];
            if r.signal == signal || r.setpoint_signal.as_deref() == Some(signal) {
                self.evaluate(i, now_ns, &mut out);
            }
        }
        out
    }

    /// Time passing: staleness, expired proposals, `for_s` conditions.
    pub fn tick(&mut self, now_ns: i64) -> Vec<Decision> {
        let mut out = Vec::new();
        for i in 0..self.rules.len() {
            self.expire(i, now_ns, &mut out);
            self.evaluate(i, now_ns, &mut out);
        }
        out
    }

    /// An operator approved `action`.
    pub fn approve(&mut self, action: &str, by: &str, now_ns: i64) -> Result<Decision, String> {
        let Some(i) = self
            .state
            .iter()
            .position(|s| s.proposal.as_ref().is_some_and(|p| p.action == action))
        else {
            return Err(format!(
                "no open proposal {action:?} (expired, superseded or unknown)"
            ));
        };
        let mut out = Vec::new();
        self.expire(i, now_ns, &mut out);
        if let Some(expired) = out.pop() {
            // Too late: the expiry is what is recorded, so the hub shows
            // the proposal expired instead of open for good.
            return Ok(expired);
        }
        let proposal = self.state[i]
            .proposal
            .take()
            .ok_or_else(|| format!("proposal {action:?} expired"))?;
        let rule = &self.rules[i];
        let mut reason = format!("approved by {by}");
        let previous = self.outputs.get(&rule.output).map(|o| o.0);
        let record = |outcome, value, reason: String| ControlAction {
            seq: 0,
            ts_ns: now_ns,
            rule: rule.name.clone(),
            output: rule.output.clone(),
            action: proposal.action.clone(),
            outcome,
            requested: Some(proposal.requested),
            value,
            previous,
            reason,
            approved_by: Some(by.to_string()),
        };
        if let Some(why) = self.health_problem(rule, now_ns) {
            return Ok(Decision::Record(record(
                ActionOutcome::Blocked,
                None,
                format!("{reason}, but {why}"),
            )));
        }
        if let Some(why) = self.gate_problem(rule, now_ns) {
            return Ok(Decision::Record(record(
                ActionOutcome::Blocked,
                None,
                format!("{reason}, but {why}"),
            )));
        }
        // The operator approved what was proposed then: if the condition
        // no longer holds, nothing is written.
        if let Some(l) = self.signals.get(&rule.signal)
            && !rule.condition(l.value)
        {
            return Ok(Decision::Record(record(
                ActionOutcome::Blocked,
                None,
                format!(
                    "{reason}, but the condition no longer holds ({} reads {})",
                    rule.signal, l.value
                ),
            )));
        }
        let current = self.outputs.get(&rule.output).copied();
        let (value, notes) = Self::shape(rule, proposal.requested, current, now_ns);
        let Some(value) = value else {
            return Ok(Decision::Record(record(
                ActionOutcome::Blocked,
                None,
                format!("{reason}, but {notes}"),
            )));
        };
        if !notes.is_empty() {
            reason = format!("{reason}; {notes}");
        }
        self.state[i].last_action_ns = Some(now_ns);
        Ok(Decision::Write(record(
            ActionOutcome::Written,
            Some(value),
            reason,
        )))
    }

    /// The bounds the output may round `action`'s setpoint within: the
    /// rule's `[min, max]`, and for a rule with `max_rate`, no further from
    /// the output's previous value than the setpoint itself (rounding to
    /// what a register holds must not step past the rate limit).
    pub fn write_bounds(&self, action: &ControlAction) -> Option<(f64, f64)> {
        let r = self.rules.iter().find(|r| r.name == action.rule)?;
        let (mut lo, mut hi) = (r.min, r.max);
        if r.max_rate.is_some()
            && let (Some(p), Some(v)) = (action.previous, action.value)
        {
            let step = (v - p).abs();
            (lo, hi) = (lo.max(p - step), hi.min(p + step));
        }
        Some((lo, hi))
    }

    /// Starts `rule`'s cooldown as if it had acted at `at_ns`, on the
    /// engine's clock (before it started, for a write kept across a
    /// restart).
    pub fn acted_at(&mut self, rule: &str, at_ns: i64) {
        if let Some(i) = self.rules.iter().position(|r| r.name == rule) {
            self.state[i].last_action_ns = Some(at_ns);
        }
    }

    /// The write of `action` succeeded: the output now holds its value,
    /// written for the setpoint `asked` (the same unless the output
    /// rounded it).
    pub fn written(&mut self, action: &ControlAction, asked: f64, now_ns: i64) {
        if let Some(v) = action.value {
            self.outputs.insert(action.output.clone(), (v, now_ns));
            self.settled
                .insert(action.output.clone(), (action.rule.clone(), asked, v));
        }
    }

    fn expire(&mut self, i: usize, now_ns: i64, out: &mut Vec<Decision>) {
        let rule = &self.rules[i];
        let timeout = (rule.approval_timeout_s * 1e9) as i64;
        let state = &mut self.state[i];
        if let Some(p) = state.proposal.take_if(|p| now_ns - p.at_ns > timeout) {
            let why = format!("not approved within {} s", rule.approval_timeout_s);
            out.push(Decision::Record(expired(rule, p, why, now_ns)));
        }
    }

    /// Why the rule may not act now because of its inputs, if so.
    fn health_problem(&self, rule: &RuleConfig, now_ns: i64) -> Option<String> {
        if let Some(m) = &rule.model
            && let Some(p) = self.unhealthy_models.get(m)
        {
            return Some(format!("model {m} is unhealthy: {p}"));
        }
        let stale_ns = (rule.stale_s * 1e9) as i64;
        for name in std::iter::once(&rule.signal).chain(rule.setpoint_signal.as_ref()) {
            let recent: Vec<&str> = self
                .sources
                .get(name)
                .into_iter()
                .flatten()
                .filter(|(_, at)| now_ns - at <= stale_ns)
                .map(|(s, _)| &**s)
                .collect();
            if recent.len() > 1 {
                return Some(format!(
                    "{name} arrives from {} streams ({}): a rule cannot tell which to follow",
                    recent.len(),
                    recent.join(", ")
                ));
            }
            let Some(l) = self.signals.get(name) else {
                continue;
            };
            if l.quality != Quality::Good {
                return Some(format!("{name} has {:?} quality", l.quality).to_lowercase());
            }
            if now_ns - l.at_ns > stale_ns {
                return Some(format!(
                    "{name} not heard for {:.1} s (stale after {} s)",
                    seconds(now_ns - l.at_ns),
                    rule.stale_s
                ));
            }
        }
        None
    }

    fn gate_problem(&self, rule: &RuleConfig, now_ns: i64) -> Option<String> {
        if !rule.require_gate {
            return None;
        }
        match &self.gate {
            None => Some("no site gate received from the hub yet".into()),
            Some(g) if !g.open => Some(format!(
                "site {} gate is closed (phase {}): {}",
                g.site, g.phase, g.reason
            )),
            Some(g) => g
                .valid_s
                .filter(|valid| seconds(now_ns - self.gate_at_ns) > *valid)
                .map(|valid| {
                    format!(
                        "site {} gate expired: the hub has not renewed it for {:.0} s (valid for {valid} s)",
                        g.site,
                        seconds(now_ns - self.gate_at_ns)
                    )
                }),
        }
    }

    /// The value to write for `requested`: clamped into range and rate
    /// limited from the output's current value. `None` (with why) when it
    /// cannot be written at all; the notes say what was changed.
    fn shape(
        rule: &RuleConfig,
        requested: f64,
        current: Option<(f64, i64)>,
        now_ns: i64,
    ) -> (Option<f64>, String) {
        let mut notes = Vec::new();
        if !requested.is_finite() {
            return (None, format!("the setpoint {requested} is not a number"));
        }
        let mut v = requested.clamp(rule.min, rule.max);
        if v != requested {
            notes.push(format!(
                "clamped {requested} to {} {v}",
                if requested > rule.max { "max" } else { "min" }
            ));
        }
        if let Some(rate) = rule.max_rate {
            let Some((current, since)) = current else {
                return (
                    None,
                    format!(
                        "the current value of {} is unknown, so max_rate cannot hold",
                        rule.output
                    ),
                );
            };
            // From a value outside the bounds (or not a number), no step
            // within max_rate stays within them: nothing is written until
            // the output is brought back in range.
            if !(current >= rule.min && current <= rule.max) {
                return (
                    None,
                    format!(
                        "{} reads {current}, outside [{}, {}], so no step within max_rate stays in bounds",
                        rule.output, rule.min, rule.max
                    ),
                );
            }
            // Between two writes the value moves at most `max_rate` per
            // second, and one write at most what a cooldown (or a second,
            // if longer) allows: a long quiet spell does not save up for
            // one big jump.
            let window = seconds((now_ns - since).max(0)).min(rule.cooldown_s.max(1.0));
            let step = rate * window;
            if (v - current).abs() > step {
                v = current + step.copysign(v - current);
                notes.push(format!("rate limited to {rate}/s: {current} -> {v}"));
            }
        }
        (Some(v), notes.join("; "))
    }

    fn evaluate(&mut self, i: usize, now_ns: i64, out: &mut Vec<Decision>) {
        let rule = &self.rules[i];
        let epoch = &self.epoch;
        // Every record gets its own id: the caller bumps `actions` after.
        let record = |state: &RuleState, outcome, value, reason: String| ControlAction {
            seq: 0,
            ts_ns: now_ns,
            rule: rule.name.clone(),
            output: rule.output.clone(),
            action: format!("{}-{epoch}-{}", rule.name, state.actions + 1),
            outcome,
            requested: None,
            value,
            previous: None,
            reason,
            approved_by: None,
        };
        // 1. Armed?
        let problem = self.health_problem(rule, now_ns);
        let state = &mut self.state[i];
        match (&state.disarmed, problem) {
            (None, Some(why)) => {
                // An open proposal is withdrawn, on the record: the hub
                // shows it closed, and a late approval finds it gone.
                if let Some(p) = state.proposal.take() {
                    let withdrawn = format!("withdrawn: the rule disarmed ({why})");
                    out.push(Decision::Record(expired(rule, p, withdrawn, now_ns)));
                }
                out.push(Decision::Record(record(
                    state,
                    ActionOutcome::Disarmed,
                    None,
                    why.clone(),
                )));
                state.actions += 1;
                state.disarmed = Some(why);
                state.since_ns = None;
                state.proposal = None;
                return;
            }
            (Some(_), Some(_)) => return,
            (Some(was), None) => {
                let reason = format!("inputs healthy again (was: {was})");
                out.push(Decision::Record(record(
                    state,
                    ActionOutcome::Rearmed,
                    None,
                    reason,
                )));
                state.actions += 1;
                state.disarmed = None;
            }
            (None, None) => {}
        }
        // 2. The condition, for long enough.
        let Some(value) = self.signals.get(&rule.signal).map(|l| l.value) else {
            return;
        };
        if !rule.condition(value) {
            state.since_ns = None;
            return;
        }
        let since = *state.since_ns.get_or_insert(now_ns);
        if now_ns - since < (rule.for_s * 1e9) as i64 {
            return;
        }
        // 3. One open proposal at a time (until approved or expired), and
        // the cooldown.
        if state.proposal.is_some() {
            return;
        }
        if state
            .last_action_ns
            .is_some_and(|t| now_ns - t < (rule.cooldown_s * 1e9) as i64)
        {
            return;
        }
        let mut reason = rule.condition_text(value);
        if rule.for_s > 0.0 {
            reason.push_str(&format!(" for {:.1} s", seconds(now_ns - since)));
        }
        // 4. The setpoint, shaped by the interlocks.
        let requested = match (&rule.setpoint, &rule.setpoint_signal) {
            (Some(s), _) => *s,
            (None, Some(name)) => match self.signals.get(name) {
                Some(l) => l.value,
                None => return,
            },
            (None, None) => return,
        };
        let current = match rule.mode {
            // A dry run goes on from what earlier dry runs would have left.
            Mode::DryRun => self
                .dry
                .get(&rule.output)
                .or(self.outputs.get(&rule.output)),
            _ => self.outputs.get(&rule.output),
        }
        .copied();
        let previous = current.map(|o| o.0);
        let (value, notes) = Self::shape(rule, requested, current, now_ns);
        let gate = self.gate_problem(rule, now_ns);
        let state = &mut self.state[i];
        let blocked = match (value, gate) {
            (None, _) => Some(notes.clone()),
            (Some(_), Some(gate)) => Some(gate),
            (Some(_), None) => None,
        };
        if let Some(why) = blocked {
            let repeat = match &state.last_blocked {
                Some((last, at)) => *last != why || now_ns - at >= BLOCKED_REPEAT_NS,
                None => true,
            };
            if repeat {
                let mut a = record(
                    state,
                    ActionOutcome::Blocked,
                    None,
                    format!("{reason}; {why}"),
                );
                a.requested = Some(requested);
                a.previous = previous;
                out.push(Decision::Record(a));
                state.actions += 1;
                state.last_blocked = Some((why, now_ns));
            }
            return;
        }
        state.last_blocked = None;
        let value = value.expect("checked above");
        let settled = self
            .settled
            .get(&rule.output)
            .is_some_and(|(by, asked, held)| {
                *by == rule.name && *asked == value && previous == Some(*held)
            });
        if previous.is_some_and(|p| p == value) || (settled && rule.mode != Mode::DryRun) {
            // Already there: nothing to do, nothing to record.
            return;
        }
        if !notes.is_empty() {
            reason = format!("{reason}; {notes}");
        }
        let (outcome, write) = match rule.mode {
            Mode::DryRun => (ActionOutcome::DryRun, false),
            Mode::Approval => (ActionOutcome::Proposed, false),
            Mode::Armed => (ActionOutcome::Written, true),
        };
        let mut a = record(state, outcome, Some(value), reason);
        a.requested = Some(requested);
        a.previous = previous;
        state.actions += 1;
        state.last_action_ns = Some(now_ns);
        match rule.mode {
            Mode::DryRun => {
                self.dry.insert(rule.output.clone(), (value, now_ns));
            }
            Mode::Approval => {
                state.proposal = Some(Proposal {
                    action: a.action.clone(),
                    requested,
                    at_ns: now_ns,
                });
            }
            Mode::Armed => {}
        }
        out.push(if write {
            Decision::Write(a)
        } else {
            Decision::Record(a)
        });
    }
}

/// The record that closes proposal `p` of `rule` unapproved.
fn expired(rule: &RuleConfig, p: Proposal, reason: String, now_ns: i64) -> ControlAction {
    ControlAction {
        seq: 0,
        ts_ns: now_ns,
        rule: rule.name.clone(),
        output: rule.output.clone(),
        action: p.action,
        outcome: ActionOutcome::Expired,
        requested: Some(p.requested),
        value: None,
        previous: None,
        reason,
        approved_by: None,
    }
}

/// What makes this run's action ids its own: the start's wall-clock
/// milliseconds and 32 random bits. A gateway without a battery clock
/// starts at the same time after every boot; the random bits keep a
/// second run's ids from repeating the first's (the hub refuses a repeated
/// id).
fn action_epoch() -> String {
    let mut bits = [0u8; 4];
    let random = getrandom::fill(&mut bits).map_or(0, |()| u32::from_le_bytes(bits));
    format!("{:x}{random:08x}", crate::now_ns() / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn rule(mode: Mode) -> RuleConfig {
        RuleConfig {
            name: "cool".into(),
            signal: "temperature".into(),
            above: Some(80.0),
            below: None,
            for_s: 0.0,
            output: "fan".into(),
            setpoint: None,
            setpoint_signal: Some("fan_wanted".into()),
            min: 0.0,
            max: 100.0,
            max_rate: Some(10.0),
            cooldown_s: 5.0,
            mode,
            require_gate: true,
            model: None,
            stale_s: 30.0,
            approval_timeout_s: 60.0,
        }
    }

    fn plc() -> std::sync::Arc<str> {
        "plc".into()
    }

    fn open() -> ControlGate {
        ControlGate {
            site: "plant".into(),
            phase: 2,
            open: true,
            ..Default::default()
        }
    }

    fn engine(r: RuleConfig) -> Engine {
        r.validate().unwrap();
        let mut e = Engine::new(vec![r]);
        e.set_gate(open(), 0, 0);
        e.set_output("fan", 20.0, 0);
        e
    }

    fn outcomes(d: &[Decision]) -> Vec<(ActionOutcome, Option<f64>)> {
        d.iter()
            .map(|d| match d {
                Decision::Write(a) | Decision::Record(a) => (a.outcome, a.value),
            })
            .collect()
    }

    /// Feeds the wanted setpoint then the temperature at `t` seconds.
    fn feed(e: &mut Engine, t: i64, wanted: f64, temperature: f64) -> Vec<Decision> {
        let mut d = e.observe(&plc(), "fan_wanted", wanted, Quality::Good, t * S);
        d.extend(e.observe(&plc(), "temperature", temperature, Quality::Good, t * S));
        d
    }

    #[test]
    fn writes_within_range_at_the_rate_limit_and_after_the_cooldown() {
        let mut e = engine(rule(Mode::Armed));
        // Below the threshold: nothing.
        assert!(feed(&mut e, 10, 90.0, 70.0).is_empty());
        // Above: wants 150, clamped to 100, moved at most 10/s from 20,
        // and at most one cooldown's worth (5 s) however long it held 20.
        let d = feed(&mut e, 11, 150.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Written, Some(70.0))]);
        let Decision::Write(a) = &d[0] else { panic!() };
        assert!(a.reason.contains("clamped 150 to max 100"), "{}", a.reason);
        assert_eq!((a.requested, a.previous), (Some(150.0), Some(20.0)));
        e.written(a, a.value.unwrap(), 11 * S);
        // Cooldown: 5 s of silence.
        for t in 12..16 {
            assert!(feed(&mut e, t, 10.0, 85.0).is_empty(), "t={t}");
        }
        // Then down to 10, rate limited: 5 s at 10/s = 50 from 70.
        let d = feed(&mut e, 16, 10.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Written, Some(20.0))]);
        let Decision::Write(a) = &d[0] else { panic!() };
        assert!(a.reason.contains("rate limited"), "{}", a.reason);
        let Decision::Write(a) = &d[0] else { panic!() };
        e.written(a, a.value.unwrap(), 16 * S);
        let d = feed(&mut e, 21, 10.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Written, Some(10.0))]);
    }

    #[test]
    fn a_setpoint_the_output_rounded_is_not_written_again() {
        let mut r = rule(Mode::Armed);
        r.max_rate = None;
        r.max = 60.5;
        let mut e = engine(r);
        let d = feed(&mut e, 1, 90.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Written, Some(60.5))]);
        let Some(Decision::Write(mut a)) = d.into_iter().next() else {
            panic!()
        };
        // A register of whole numbers took it as 60.
        a.value = Some(60.0);
        e.written(&a, 60.5, S);
        assert!(feed(&mut e, 10, 90.0, 85.0).is_empty());
        // Asked for something else, it writes again.
        let d = feed(&mut e, 20, 50.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Written, Some(50.0))]);
    }

    #[test]
    fn another_rule_on_the_output_is_not_settled_by_the_first_ones_rounding() {
        let mut cool = rule(Mode::Armed);
        cool.max_rate = None;
        cool.max = 60.5;
        let mut warm = cool.clone();
        warm.name = "keep-warm".into();
        (warm.above, warm.below) = (None, Some(50.0));
        (warm.min, warm.max) = (60.3, 70.0);
        let mut e = Engine::new(vec![cool, warm]);
        e.set_gate(open(), 0, 0);
        e.set_output("fan", 20.0, 0);
        let d = feed(&mut e, 1, 90.0, 85.0);
        let Some(Decision::Write(mut a)) = d.into_iter().next() else {
            panic!()
        };
        a.value = Some(60.0);
        e.written(&a, 60.5, S);
        // The other rule asks for the same 60.5: the 60 held is below its
        // min, so it writes (and its output rounds inward in turn).
        let d = feed(&mut e, 20, 60.5, 40.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Written, Some(60.5))]);
        let Decision::Write(a) = &d[0] else { panic!() };
        assert_eq!(a.rule, "keep-warm");
    }

    #[test]
    fn a_write_before_a_restart_holds_the_cooldown() {
        let mut r = rule(Mode::Armed);
        r.max_rate = None;
        let mut e = engine(r);
        // The last run wrote 2 s before this one started (its clock's 0).
        e.acted_at("cool", -2 * S);
        e.acted_at("no-such-rule", 0);
        for t in 0..3 {
            assert!(feed(&mut e, t, 90.0, 85.0).is_empty(), "t={t}");
        }
        let d = feed(&mut e, 3, 90.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Written, Some(90.0))]);
    }

    #[test]
    fn dry_run_records_what_it_would_do_and_writes_nothing() {
        let mut e = engine(rule(Mode::DryRun));
        let d = feed(&mut e, 1, 90.0, 85.0);
        // From 20 at 10/s for 1 s: 30.
        assert_eq!(outcomes(&d), [(ActionOutcome::DryRun, Some(30.0))]);
        // The next dry run goes on from 30, not from the real 20.
        let d = feed(&mut e, 6, 90.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::DryRun, Some(80.0))]);
    }

    #[test]
    fn a_closed_or_missing_gate_blocks_and_is_recorded_once() {
        let mut r = rule(Mode::Armed);
        r.max_rate = None;
        r.stale_s = 600.0;
        let mut e = Engine::new(vec![r]);
        let d = feed(&mut e, 1, 90.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Blocked, None)]);
        let Decision::Record(a) = &d[0] else { panic!() };
        assert!(a.reason.contains("no site gate"), "{}", a.reason);
        e.set_gate(
            ControlGate {
                open: false,
                reason: "uptime 0.95 < 0.99".into(),
                ..open()
            },
            0,
            0,
        );
        let d = feed(&mut e, 2, 90.0, 85.0);
        let Decision::Record(a) = &d[0] else { panic!() };
        assert!(a.reason.contains("uptime 0.95 < 0.99"), "{}", a.reason);
        // The same block again within a minute: not recorded again.
        assert!(feed(&mut e, 3, 90.0, 85.0).is_empty());
        assert_eq!(outcomes(&feed(&mut e, 63, 90.0, 85.0)).len(), 1);
        e.set_gate(open(), 0, 0);
        assert_eq!(
            outcomes(&feed(&mut e, 64, 90.0, 85.0)),
            [(ActionOutcome::Written, Some(90.0))]
        );
    }

    #[test]
    fn for_duration_must_hold_without_a_break() {
        let mut r = rule(Mode::Armed);
        r.for_s = 3.0;
        r.setpoint_signal = None;
        r.setpoint = Some(50.0);
        let mut e = engine(r);
        let mut temperature =
            |t: i64, v: f64| outcomes(&e.observe(&plc(), "temperature", v, Quality::Good, t * S));
        assert!(temperature(100, 85.0).is_empty());
        assert!(temperature(102, 85.0).is_empty());
        assert!(temperature(103, 70.0).is_empty(), "a break");
        assert!(temperature(104, 85.0).is_empty());
        assert!(temperature(106, 85.0).is_empty());
        assert_eq!(
            temperature(107, 85.0),
            [(ActionOutcome::Written, Some(50.0))]
        );
    }

    #[test]
    fn unhealthy_inputs_disarm_once_and_healthy_ones_rearm() {
        let mut r = rule(Mode::Armed);
        r.model = Some("failure".into());
        r.max_rate = None;
        let mut e = engine(r);
        e.set_model_health("failure", Some("3 inference errors".into()));
        let d = feed(&mut e, 1, 50.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Disarmed, None)]);
        assert!(feed(&mut e, 2, 50.0, 85.0).is_empty(), "disarmed once");
        e.set_model_health("failure", None);
        let d = feed(&mut e, 3, 50.0, 85.0);
        assert_eq!(
            outcomes(&d),
            [
                (ActionOutcome::Rearmed, None),
                (ActionOutcome::Written, Some(50.0))
            ]
        );
        // A bad-quality reading disarms too.
        let d = e.observe(&plc(), "temperature", 85.0, Quality::Bad, 20 * S);
        assert_eq!(outcomes(&d), [(ActionOutcome::Disarmed, None)]);
        let Decision::Record(a) = &d[0] else { panic!() };
        assert!(a.reason.contains("bad quality"), "{}", a.reason);
        // So does silence, noticed by the tick.
        let mut e = engine(rule(Mode::Armed));
        feed(&mut e, 1, 20.0, 70.0);
        assert!(e.tick(30 * S).is_empty());
        let d = e.tick(32 * S);
        assert_eq!(outcomes(&d), [(ActionOutcome::Disarmed, None)]);
    }

    #[test]
    fn approval_proposes_then_writes_what_holds_at_approval_time() {
        let mut e = engine(rule(Mode::Approval));
        let d = feed(&mut e, 1, 90.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Proposed, Some(30.0))]);
        let Decision::Record(p) = &d[0] else { panic!() };
        assert!(e.approve("nope", "ops", 2 * S).is_err());
        // Approved at 5 s: the rate limit now allows 20 + 5 * 10.
        let Decision::Write(a) = e.approve(&p.action, "ops", 5 * S).unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.value, a.approved_by.as_deref()),
            (Some(70.0), Some("ops"))
        );
        assert!(a.reason.starts_with("approved by ops"), "{}", a.reason);
        assert!(e.approve(&p.action, "ops", 6 * S).is_err(), "used once");
        // An unapproved proposal expires.
        let d = feed(&mut e, 11, 90.0, 85.0);
        let Decision::Record(p) = &d[0] else { panic!() };
        let d = e.tick(72 * S);
        assert!(
            outcomes(&d).contains(&(ActionOutcome::Expired, None)),
            "{d:?}"
        );
        assert!(e.approve(&p.action, "ops", 73 * S).is_err());
    }

    #[test]
    fn approval_is_refused_when_the_gate_closed_meanwhile() {
        let mut e = engine(rule(Mode::Approval));
        let Decision::Record(p) = feed(&mut e, 1, 90.0, 85.0).remove(0) else {
            panic!()
        };
        e.set_gate(
            ControlGate {
                open: false,
                reason: "phase 1".into(),
                ..open()
            },
            0,
            0,
        );
        let Decision::Record(a) = e.approve(&p.action, "ops", 2 * S).unwrap() else {
            panic!()
        };
        assert_eq!(a.outcome, ActionOutcome::Blocked);
    }

    #[test]
    fn rate_limit_needs_a_known_current_value() {
        let mut r = rule(Mode::Armed);
        r.require_gate = false;
        let mut e = Engine::new(vec![r]);
        let d = feed(&mut e, 1, 50.0, 85.0);
        let Decision::Record(a) = &d[0] else { panic!() };
        assert_eq!(a.outcome, ActionOutcome::Blocked);
        assert!(a.reason.contains("unknown"), "{}", a.reason);
    }

    #[test]
    fn the_rate_limit_never_steps_out_of_bounds_or_from_a_non_number() {
        // The output reads 150 (someone set it by hand), above max 100: a
        // step of 10 towards 90 would write 140. Nothing is written.
        for current in [150.0, -5.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut e = engine(rule(Mode::Armed));
            e.set_output("fan", current, 0);
            let d = feed(&mut e, 1, 90.0, 85.0);
            assert_eq!(outcomes(&d), [(ActionOutcome::Blocked, None)], "{current}");
            let Decision::Record(a) = &d[0] else { panic!() };
            assert!(a.reason.contains("outside [0, 100]"), "{}", a.reason);
        }
        // At a bound, a step stays within.
        let mut e = engine(rule(Mode::Armed));
        e.set_output("fan", 100.0, 0);
        let d = feed(&mut e, 1, 0.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Written, Some(90.0))]);
    }

    #[test]
    fn an_approval_after_the_timeout_records_the_expiry() {
        let mut e = engine(rule(Mode::Approval));
        let Decision::Record(p) = feed(&mut e, 1, 90.0, 85.0).remove(0) else {
            panic!()
        };
        // No tick has expired it yet; the late approval does.
        let Decision::Record(a) = e.approve(&p.action, "ops", 62 * S).unwrap() else {
            panic!("an expired proposal is not written")
        };
        assert_eq!(
            (a.outcome, a.action.as_str()),
            (ActionOutcome::Expired, p.action.as_str())
        );
        assert!(e.approve(&p.action, "ops", 63 * S).is_err());
    }

    #[test]
    fn a_proposal_open_when_the_rule_disarms_is_withdrawn_on_the_record() {
        let mut e = engine(rule(Mode::Approval));
        let Decision::Record(p) = feed(&mut e, 1, 90.0, 85.0).remove(0) else {
            panic!()
        };
        assert_eq!(p.outcome, ActionOutcome::Proposed);
        let d = e.observe(&plc(), "temperature", 85.0, Quality::Bad, 2 * S);
        assert_eq!(
            outcomes(&d),
            [
                (ActionOutcome::Expired, None),
                (ActionOutcome::Disarmed, None)
            ]
        );
        let Decision::Record(withdrawn) = &d[0] else {
            panic!()
        };
        assert_eq!(withdrawn.action, p.action);
        assert!(
            withdrawn.reason.contains("withdrawn"),
            "{}",
            withdrawn.reason
        );
        assert!(e.approve(&p.action, "ops", 3 * S).is_err());
    }

    #[test]
    fn a_gate_older_than_the_one_held_is_ignored() {
        let mut e = Engine::new(vec![rule(Mode::Armed)]);
        let closed = ControlGate {
            open: false,
            reason: "uptime".into(),
            ts_ns: 20 * S,
            ..open()
        };
        assert!(e.set_gate(closed, 0, 0));
        // The open verdict from before, delivered late.
        assert!(!e.set_gate(
            ControlGate {
                ts_ns: 10 * S,
                ..open()
            },
            0,
            0
        ));
        e.set_output("fan", 20.0, 0);
        let d = feed(&mut e, 1, 90.0, 85.0);
        let Decision::Record(a) = &d[0] else { panic!() };
        assert!(a.reason.contains("closed"), "{}", a.reason);
        assert!(e.set_gate(
            ControlGate {
                ts_ns: 30 * S,
                ..open()
            },
            0,
            0
        ));
    }

    #[test]
    fn a_closed_gate_is_taken_even_when_stamped_before_the_open_one_held() {
        // The hub's clock was set back between the two verdicts.
        let mut e = engine(rule(Mode::Armed));
        assert!(e.set_gate(
            ControlGate {
                ts_ns: 100 * S,
                ..open()
            },
            0,
            0
        ));
        let closed = ControlGate {
            open: false,
            reason: "uptime 0.5 < 0.99".into(),
            ts_ns: 50 * S,
            ..open()
        };
        assert!(e.set_gate(closed, S, 0));
        let d = feed(&mut e, 2, 90.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Blocked, None)]);
        let Decision::Record(a) = &d[0] else { panic!() };
        assert!(a.reason.contains("uptime 0.5"), "{}", a.reason);
    }

    #[test]
    fn an_open_gate_the_hub_stops_renewing_expires() {
        let mut r = rule(Mode::Armed);
        r.max_rate = None;
        r.stale_s = 600.0;
        let mut e = engine(r);
        assert!(e.set_gate(
            ControlGate {
                valid_s: Some(60.0),
                ts_ns: 1,
                ..open()
            },
            0,
            0
        ));
        assert_eq!(
            outcomes(&feed(&mut e, 30, 90.0, 85.0)),
            [(ActionOutcome::Written, Some(90.0))]
        );
        // 61 s after it arrived, with no renewal: nothing is written.
        let d = feed(&mut e, 61, 95.0, 85.0);
        assert_eq!(outcomes(&d), [(ActionOutcome::Blocked, None)]);
        let Decision::Record(a) = &d[0] else { panic!() };
        assert!(a.reason.contains("gate expired"), "{}", a.reason);
        // Renewed: the rule acts again.
        assert!(e.set_gate(
            ControlGate {
                valid_s: Some(60.0),
                ts_ns: 2,
                ..open()
            },
            62 * S,
            0
        ));
        assert_eq!(
            outcomes(&feed(&mut e, 70, 95.0, 85.0)),
            [(ActionOutcome::Written, Some(95.0))]
        );
    }

    #[test]
    fn the_same_gate_delivered_again_does_not_renew_it_and_ages_from_its_measure() {
        let mut r = rule(Mode::Armed);
        r.max_rate = None;
        r.stale_s = 600.0;
        let mut e = Engine::new(vec![r]);
        let gate = ControlGate {
            valid_s: Some(60.0),
            ts_ns: 7,
            ..open()
        };
        assert!(e.set_gate(gate.clone(), 0, 0));
        // The broker's retained copy again at every reconnect: no renewal.
        assert!(e.set_gate(gate.clone(), 50 * S, 0));
        e.set_output("fan", 20.0, 0);
        let d = feed(&mut e, 61, 90.0, 85.0);
        let Decision::Record(a) = &d[0] else {
            panic!("{d:?}")
        };
        assert!(a.reason.contains("gate expired"), "{}", a.reason);
        // A gate measured 50 s before it arrived has 10 s left.
        let mut e = engine(rule(Mode::Armed));
        assert!(e.set_gate(gate, 100 * S, 50 * S));
        let d = feed(&mut e, 111, 90.0, 85.0);
        let Decision::Record(a) = &d[0] else {
            panic!("{d:?}")
        };
        assert!(a.reason.contains("gate expired"), "{}", a.reason);
    }

    #[test]
    fn a_signal_arriving_from_two_streams_disarms_its_rules() {
        let mut r = rule(Mode::Armed);
        r.max_rate = None;
        let mut e = engine(r);
        assert_eq!(
            outcomes(&feed(&mut e, 1, 90.0, 85.0)),
            [(ActionOutcome::Written, Some(90.0))]
        );
        let other: std::sync::Arc<str> = "line-2".into();
        let d = e.observe(&other, "temperature", 85.0, Quality::Good, 2 * S);
        assert_eq!(outcomes(&d), [(ActionOutcome::Disarmed, None)]);
        let Decision::Record(a) = &d[0] else { panic!() };
        assert!(a.reason.contains("2 streams (plc, line-2)"), "{}", a.reason);
        // Line 2 stops (a source moved behind a pipeline, say): once it is
        // stale, the rule follows the one stream left.
        let d = feed(&mut e, 40, 95.0, 85.0);
        assert_eq!(outcomes(&d)[0], (ActionOutcome::Rearmed, None), "{d:?}");
    }

    #[test]
    fn rounding_to_what_the_output_holds_stays_within_the_rate_limit() {
        let mut r = rule(Mode::Armed);
        r.max_rate = Some(0.6);
        r.cooldown_s = 1.0;
        let mut e = engine(r);
        e.set_output("fan", 20.0, 0);
        let d = feed(&mut e, 1, 90.0, 85.0);
        let Decision::Write(a) = &d[0] else {
            panic!("{d:?}")
        };
        assert_eq!(a.value, Some(20.6));
        let bounds = e.write_bounds(a).unwrap();
        assert_eq!(bounds, (19.4, 20.6));
        // A whole-number register rounds inward: 20, not 21.
        let (_, held) = super::super::outputs::raw_setpoint(
            20.6,
            1.0,
            0.0,
            bounds,
            super::super::outputs::Grain::Whole,
        )
        .unwrap();
        assert_eq!(held, 20.0);
    }

    #[test]
    fn an_approval_after_the_condition_cleared_writes_nothing() {
        let mut e = engine(rule(Mode::Approval));
        let Decision::Record(p) = feed(&mut e, 1, 90.0, 85.0).remove(0) else {
            panic!()
        };
        assert_eq!(p.outcome, ActionOutcome::Proposed);
        e.observe(&plc(), "temperature", 70.0, Quality::Good, 2 * S);
        let Decision::Record(a) = e.approve(&p.action, "ops", 3 * S).unwrap() else {
            panic!("wrote after the condition cleared")
        };
        assert_eq!(a.outcome, ActionOutcome::Blocked);
        assert!(a.reason.contains("no longer holds"), "{}", a.reason);
    }

    #[test]
    fn invalid_rules_say_why() {
        let mut r = rule(Mode::Armed);
        r.below = Some(1.0);
        assert!(r.validate().unwrap_err().contains("exactly one of `above`"));
        let mut r = rule(Mode::Armed);
        r.setpoint_signal = None;
        assert!(r.validate().unwrap_err().contains("`setpoint`"));
        let mut r = rule(Mode::Armed);
        r.min = 200.0;
        assert!(r.validate().unwrap_err().contains("`min` is above"));
        let mut r = rule(Mode::Armed);
        r.setpoint_signal = None;
        r.setpoint = Some(120.0);
        assert!(r.validate().unwrap_err().contains("outside"));
        let mut r = rule(Mode::Armed);
        r.max_rate = Some(f64::NAN);
        assert!(r.validate().unwrap_err().contains("finite"));
    }
}
