//! Closed-loop control at the edge (`[control]`): rules watch readings and
//! predictions and write setpoints to outputs (OPC UA, Modbus, MQTT),
//! behind safety interlocks ([`rules`]). Armed only while the site's phase
//! gate from the hub (`down/control`) is open.
//!
//! The processing thread offers every watched signal's readings through a
//! [`Feed`] (never blocking: a full queue drops and counts); one task owns
//! the [`rules::Engine`] and the output connections, does one write at a
//! time, and appends every decision to the outbox as a
//! [`strata_proto::ControlAction`] on stream `control`, which the uplink
//! sends to `up/events`: the action record, durable at the edge until the
//! hub has it.

mod last_writes;
pub mod outputs;
pub mod rules;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use strata_proto::{ActionOutcome, Approval, ControlAction, ControlGate, Quality, SignalSeries};
use tokio::sync::{Notify, mpsc, watch};

use crate::health::HealthState;
use crate::outbox::Outbox;
use last_writes::LastWrites;
use outputs::{OutputConfig, Writer};
use rules::{Decision, Engine, RuleConfig};

/// The outbox stream action records are kept under.
pub const CONTROL_STREAM: &str = "control";

/// A model with an inference error within this long is unhealthy.
const MODEL_ERROR_WINDOW: Duration = Duration::from_secs(30);

/// Batches of readings queued for the control task.
const FEED_QUEUE: usize = 1024;

/// `[control]`: outputs and the rules that drive them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Where setpoints go.
    pub outputs: Vec<OutputConfig>,
    /// When and what to write.
    pub rules: Vec<RuleConfig>,
}

impl ControlConfig {
    /// Checks names and references; the message names the rule or output.
    pub fn validate(&self) -> Result<(), String> {
        let mut outputs = HashMap::new();
        for o in &self.outputs {
            o.validate()?;
            if outputs.insert(o.name(), o).is_some() {
                return Err(format!("two outputs are named {:?}", o.name()));
            }
        }
        let mut names = HashSet::new();
        for r in &self.rules {
            r.validate()?;
            if !names.insert(&r.name) {
                return Err(format!("two rules are named {:?}", r.name));
            }
            let Some(o) = outputs.get(r.output.as_str()) else {
                return Err(format!(
                    "rule {:?}: no output named {:?} in [[control.outputs]]",
                    r.name, r.output
                ));
            };
            if r.max_rate.is_some() && !o.knows_current_value() {
                return Err(format!(
                    "rule {:?}: `max_rate` needs the current value of {:?}; give the output `initial`",
                    r.name, r.output
                ));
            }
        }
        Ok(())
    }
}

/// Counters of the control task, for metrics.
#[derive(Debug, Default)]
pub struct ControlStats {
    /// Records per outcome, in [`OUTCOMES`] order.
    pub actions: [AtomicU64; 9],
    /// Readings the control task could not keep up with.
    pub dropped: AtomicU64,
    /// Approvals that matched no open proposal.
    pub approvals_refused: AtomicU64,
}

/// Every outcome, in the order of [`ControlStats::actions`].
pub const OUTCOMES: [ActionOutcome; 9] = [
    ActionOutcome::Writing,
    ActionOutcome::Written,
    ActionOutcome::DryRun,
    ActionOutcome::Proposed,
    ActionOutcome::Expired,
    ActionOutcome::Blocked,
    ActionOutcome::Failed,
    ActionOutcome::Disarmed,
    ActionOutcome::Rearmed,
];

impl ControlStats {
    fn count(&self, outcome: ActionOutcome) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.actions[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One reading of a watched signal, and the stream it came from.
#[derive(Debug, Clone)]
pub struct Observation {
    stream: Arc<str>,
    signal: String,
    value: f64,
    quality: Quality,
}

/// The processing thread's side: offers readings of watched signals.
#[derive(Debug, Clone)]
pub struct Feed {
    watched: Arc<HashSet<String>>,
    tx: mpsc::Sender<Vec<Observation>>,
    stats: Arc<ControlStats>,
}

impl Feed {
    /// Offers the readings of `series` (from `stream`) that some rule
    /// watches.
    pub fn offer(&self, stream: &Arc<str>, series: &[SignalSeries]) {
        let mut batch = Vec::new();
        for s in series.iter().filter(|s| self.watched.contains(&s.name)) {
            for (i, v) in s.values.iter().enumerate() {
                batch.push(Observation {
                    stream: stream.clone(),
                    signal: s.name.clone(),
                    value: *v,
                    quality: quality_of(s, i),
                });
            }
        }
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        if self.tx.try_send(batch).is_err() {
            self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The quality of reading `i` of `s`: no qualities at all means every
/// reading is good; a code this agent does not know, or a list shorter
/// than the values, is bad (a rule must not act on a reading it cannot
/// judge).
fn quality_of(s: &SignalSeries, i: usize) -> Quality {
    if s.quality.is_empty() {
        return Quality::Good;
    }
    s.quality
        .get(i)
        .and_then(|q| Quality::try_from(*q).ok())
        .unwrap_or(Quality::Bad)
}

/// What the control task listens to besides readings.
pub struct Inputs {
    /// The site gate, as the uplink last received it.
    pub gate: watch::Receiver<Option<ControlGate>>,
    /// Approvals from operators.
    pub approvals: mpsc::Receiver<Approval>,
}

/// The control task, ready to run.
pub struct Control {
    engine: Engine,
    writers: Vec<(String, Writer)>,
    observations: mpsc::Receiver<Vec<Observation>>,
    inputs: Inputs,
    outbox: Arc<Outbox>,
    appended: Arc<Notify>,
    health: Arc<HealthState>,
    stats: Arc<ControlStats>,
    /// Per model: (its error counter's address, errors seen, when they
    /// last grew, if they did while watched).
    model_errors: HashMap<String, ModelErrors>,
    models_watched: Vec<String>,
    /// The engine's clock ([`steady_ns`]).
    origin: std::time::Instant,
    /// Each rule's last write, kept across restarts for the cooldowns.
    last_writes: LastWrites,
}

/// The engine's time: nanoseconds since `origin` on the monotonic clock,
/// so that freshness, cooldowns, `for_s`, rate limits and approval
/// timeouts hold when the wall clock is set (a gateway without a battery
/// clock syncing NTP). Records carry the wall clock's time instead.
fn steady_ns(origin: std::time::Instant) -> i64 {
    i64::try_from(origin.elapsed().as_nanos()).unwrap_or(i64::MAX)
}

/// Sets up the control task for validated `config`; returns its feed for
/// the processing thread. Must be called inside a Tokio runtime.
pub fn start(
    config: &ControlConfig,
    data_dir: &Path,
    outbox: Arc<Outbox>,
    appended: Arc<Notify>,
    health: Arc<HealthState>,
    inputs: Inputs,
) -> Result<(Feed, Control), String> {
    let mut engine = Engine::new(config.rules.clone());
    let mut writers = Vec::new();
    let origin = std::time::Instant::now();
    let now = steady_ns(origin);
    // Cooldowns go on from the writes of earlier runs.
    let last_writes = LastWrites::open(data_dir);
    for (rule, age) in last_writes.ages(crate::now_ns()) {
        engine.acted_at(rule, now - age);
    }
    for o in &config.outputs {
        let writer = Writer::new(o, data_dir)?;
        // An MQTT output is known without asking anyone: its last
        // acknowledged setpoint, or `initial`.
        if let Some(v) = writer.known() {
            engine.set_output(o.name(), v, now);
        }
        writers.push((o.name().to_string(), writer));
    }
    let (tx, observations) = mpsc::channel(FEED_QUEUE);
    let stats = Arc::new(ControlStats::default());
    let feed = Feed {
        watched: Arc::new(engine.watched()),
        tx,
        stats: stats.clone(),
    };
    let models_watched = config
        .rules
        .iter()
        .filter_map(|r| r.model.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    Ok((
        feed,
        Control {
            engine,
            writers,
            observations,
            inputs,
            outbox,
            appended,
            health,
            stats,
            model_errors: HashMap::new(),
            models_watched,
            origin,
            last_writes,
        },
    ))
}

impl Control {
    /// The task's counters.
    pub fn stats(&self) -> Arc<ControlStats> {
        self.stats.clone()
    }

    /// Runs until the agent stops.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = self.observations.recv() => {
                    let Some(batch) = batch else { return };
                    for o in batch {
                        let now = steady_ns(self.origin);
                        let decisions =
                            self.engine.observe(&o.stream, &o.signal, o.value, o.quality, now);
                        self.carry_out(decisions).await;
                    }
                }
                changed = self.inputs.gate.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let gate = self.inputs.gate.borrow_and_update().clone();
                    if let Some(g) = gate {
                        let age = crate::now_ns().saturating_sub(g.ts_ns);
                        if self.engine.set_gate(g.clone(), steady_ns(self.origin), age) {
                            tracing::info!(site = %g.site, open = g.open, "control gate: {}", if g.open { "open" } else { g.reason.as_str() });
                        } else {
                            tracing::warn!(site = %g.site, ts_ns = g.ts_ns, "ignoring a site gate older than the one held");
                        }
                    }
                }
                approval = self.inputs.approvals.recv() => {
                    let Some(a) = approval else { return };
                    match self.engine.approve(&a.approve, &a.by, steady_ns(self.origin)) {
                        Ok(d) => self.carry_out(vec![d]).await,
                        Err(e) => {
                            self.stats.approvals_refused.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(action = %a.approve, by = %a.by, "approval refused: {e}");
                        }
                    }
                }
                _ = tick.tick() => {
                    self.read_back().await;
                    self.check_models();
                    let decisions = self.engine.tick(steady_ns(self.origin));
                    self.carry_out(decisions).await;
                }
            }
        }
    }

    /// Reads every output back: one whose value is not known yet, and one
    /// someone changed by hand (an HMI, a technician), so that rate
    /// limits step from what the machine holds and a rule puts back what
    /// was changed under it.
    async fn read_back(&mut self) {
        for (name, w) in &mut self.writers {
            let held = self.engine.output_value(name);
            match w.current().await {
                Ok(v) if held.is_none_or(|h| changed_by_hand(h, v)) => {
                    match held {
                        None => tracing::info!(output = %name, "output holds {v}"),
                        Some(h) => {
                            tracing::warn!(output = %name, "output holds {v}, not the {h} last written: changed outside this agent")
                        }
                    }
                    self.engine.set_output(name, v, steady_ns(self.origin));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(output = %name, "cannot read the output back: {e}"),
            }
        }
    }

    /// Marks the watched models unhealthy when they are not running or
    /// failed an inference lately.
    fn check_models(&mut self) {
        let running: HashMap<String, (usize, u64)> = self
            .health
            .models()
            .into_iter()
            .map(|(n, s)| {
                (
                    n,
                    (Arc::as_ptr(&s) as usize, s.errors.load(Ordering::Relaxed)),
                )
            })
            .collect();
        for m in &self.models_watched {
            let problem = match running.get(m) {
                None => Some("not running on this device".to_string()),
                Some(&(counter, errors)) => {
                    let now = std::time::Instant::now();
                    // Errors from before it was watched are old news. (Not
                    // `now - MODEL_ERROR_WINDOW`: that panics within the
                    // window's length of a boot.)
                    let seen = self
                        .model_errors
                        .entry(m.clone())
                        .or_insert((counter, errors, None));
                    errors_lately(seen, counter, errors, now).then(|| {
                        format!(
                            "inference errors within the last {} s",
                            MODEL_ERROR_WINDOW.as_secs()
                        )
                    })
                }
            };
            self.engine.set_model_health(m, problem);
        }
    }

    async fn carry_out(&mut self, decisions: Vec<Decision>) {
        for d in decisions {
            let action = match d {
                Decision::Record(a) => a,
                Decision::Write(mut a) => {
                    // The MQTT payload carries it: the wall clock's time.
                    a.ts_ns = crate::now_ns();
                    // Kept before the write goes out: a crash in between
                    // must not cut the cooldown short either.
                    let (path, json) = self.last_writes.note(&a.rule, a.ts_ns);
                    let kept =
                        tokio::task::spawn_blocking(move || crate::write_atomic(&path, &json))
                            .await;
                    if let Err(e) = kept
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                    {
                        tracing::warn!(rule = %a.rule, "cannot keep the time of this write: {e}");
                    }
                    // The intent goes on the record before the write: a
                    // power cut between the write and its record must
                    // still leave a trace of a write that may have been
                    // made.
                    let intent = self
                        .record(ControlAction {
                            outcome: ActionOutcome::Writing,
                            ..a.clone()
                        })
                        .await;
                    // No write goes out that cannot be put on the record
                    // (the outbox full of records not yet sent, a disk
                    // failing): the rule tries again at its next decision.
                    if let Err(e) = intent {
                        a.outcome = ActionOutcome::Failed;
                        a.reason = format!(
                            "{}; not written, as it could not be recorded: {e}",
                            a.reason
                        );
                        self.engine.forget_output(&a.output);
                        let _ = self.record(a).await;
                        continue;
                    }
                    let bounds = self
                        .engine
                        .write_bounds(&a)
                        .unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
                    let writer = self
                        .writers
                        .iter_mut()
                        .find(|(n, _)| *n == a.output)
                        .map(|(_, w)| w);
                    let result = match writer {
                        Some(w) => w.write(&a, bounds).await,
                        None => Err(format!("no output named {:?}", a.output)),
                    };
                    match result {
                        Ok(held) => {
                            let asked = a.value.unwrap_or(held);
                            if let Some(v) = a
                                .value
                                .filter(|v| (held - v).abs() > 1e-12 * v.abs().max(1.0))
                            {
                                a.reason = format!(
                                    "{}; {held} written, the nearest to {v} {} holds within [{}, {}]",
                                    a.reason, a.output, bounds.0, bounds.1
                                );
                            }
                            a.value = Some(held);
                            self.engine.written(&a, asked, steady_ns(self.origin));
                        }
                        Err(e) => {
                            a.outcome = ActionOutcome::Failed;
                            a.reason = format!("{}; write failed: {e}", a.reason);
                            self.engine.forget_output(&a.output);
                        }
                    }
                    a
                }
            };
            let _ = self.record(action).await;
        }
    }

    /// Counts, logs and keeps one record in the outbox, stamped with the
    /// wall clock (the engine's times are on the steady clock); the error
    /// when it could not be kept.
    async fn record(&mut self, mut action: ControlAction) -> Result<(), String> {
        action.ts_ns = crate::now_ns();
        self.stats.count(action.outcome);
        tracing::info!(
            rule = %action.rule,
            output = %action.output,
            outcome = action.outcome.as_str(),
            value = ?action.value,
            "control: {}",
            action.reason
        );
        let outbox = self.outbox.clone();
        let kept = tokio::task::spawn_blocking(move || {
            outbox.append(CONTROL_STREAM, |seq| {
                serde_json::to_vec(&ControlAction { seq, ..action }).expect("JSON of an action")
            })
        })
        .await;
        let kept = match kept {
            Ok(Ok(_)) => {
                self.appended.notify_one();
                return Ok(());
            }
            Ok(Err(e)) => {
                self.health.outbox_errors.fetch_add(1, Ordering::Relaxed);
                e.to_string()
            }
            Err(e) => format!("the task failed: {e}"),
        };
        tracing::warn!("control record not kept: {kept}");
        Err(kept)
    }
}

/// A model's error counter as last seen: its address, its count, and
/// when the count last grew (if it did while watched).
type ModelErrors = (usize, u64, Option<std::time::Instant>);

/// Whether a model's inference errors grew within [`MODEL_ERROR_WINDOW`]
/// before `now`, given its error counter (its address and count) now;
/// `seen` is what the last look kept, and is brought up to date.
fn errors_lately(
    seen: &mut ModelErrors,
    counter: usize,
    errors: u64,
    now: std::time::Instant,
) -> bool {
    // A model swapped in (a deployment, a rollback) counts its errors from
    // zero on a counter of its own.
    if seen.0 != counter || errors < seen.1 {
        (seen.0, seen.1) = (counter, 0);
    }
    if errors > seen.1 {
        (seen.1, seen.2) = (errors, Some(now));
    }
    seen.2
        .is_some_and(|grew| now.duration_since(grew) < MODEL_ERROR_WINDOW)
}

/// Whether an output read back as `read` no longer holds `held`, beyond
/// what reading it back can change (a float register's rounding).
fn changed_by_hand(held: f64, read: f64) -> bool {
    (read - held).abs() > 1e-6 * held.abs().max(1.0)
}

#[cfg(test)]
mod tests {
    use super::{MODEL_ERROR_WINDOW, changed_by_hand, errors_lately, quality_of};
    use strata_proto::{Quality, SignalSeries};

    #[test]
    fn unknown_or_missing_qualities_are_bad() {
        let mut s = SignalSeries {
            name: "t".into(),
            values: vec![1.0, 2.0],
            ..Default::default()
        };
        assert_eq!(quality_of(&s, 1), Quality::Good);
        s.quality = vec![Quality::Good as i32];
        assert_eq!(quality_of(&s, 0), Quality::Good);
        assert_eq!(quality_of(&s, 1), Quality::Bad);
        s.quality = vec![Quality::Good as i32, 99];
        assert_eq!(quality_of(&s, 1), Quality::Bad);
    }

    #[test]
    fn an_output_changed_by_hand_is_told_from_a_rounded_read() {
        assert!(!changed_by_hand(21.5, 21.5));
        // A 32-bit float register gives back 21.3 as 21.299999237060547.
        assert!(!changed_by_hand(21.3, f64::from(21.3f32)));
        assert!(changed_by_hand(21.5, 22.0));
        assert!(changed_by_hand(0.0, 0.01));
        assert!(changed_by_hand(50.0, 150.0));
    }

    #[test]
    fn a_swapped_in_model_that_fails_is_noticed() {
        let start = std::time::Instant::now();
        let later = start + MODEL_ERROR_WINDOW * 2;
        // Version 1 failed 50 times before it was watched: healthy.
        let mut seen = (1, 50, None);
        assert!(!errors_lately(&mut seen, 1, 50, start));
        // Version 1 failed 50 times long ago: healthy now.
        let mut seen = (1, 50, Some(start));
        assert!(!errors_lately(&mut seen, 1, 50, later));
        // Version 2, on a counter of its own, fails 50 times.
        assert!(errors_lately(&mut seen, 2, 50, later));
        // A new counter at the old one's address: a count lower than seen
        // is a new counter too, and its errors are new.
        let mut seen = (1, 50, Some(start));
        assert!(errors_lately(&mut seen, 1, 3, later));
        // Quiet for the window: healthy again.
        assert!(!errors_lately(&mut seen, 1, 3, later + MODEL_ERROR_WINDOW));
        // A counter that never failed is healthy.
        let mut seen = (1, 50, Some(start));
        assert!(!errors_lately(&mut seen, 2, 0, later));
    }
}
