//! Workflows: cross-system orchestration started by alert changes. A
//! `[[workflows]]` entry names the event and rules that start it and a
//! chain of steps, each either a signed webhook call (whose JSON answer
//! later steps can use, e.g. the id of the work order a maintenance system
//! created) or a command published to the alert's device on
//! `strata/v1/{device}/down/cmd`.
//!
//! ```toml
//! [[workflows]]
//! name = "bearing-response"
//! on = "alert.raised"
//! rules = ["bearing-failing"]
//! [[workflows.steps]]
//! name = "work_order"
//! webhook = "cmms"
//! body = { title = "Replace the bearing of {alert.device}" }
//! [[workflows.steps]]
//! name = "reduce_load"
//! command = { name = "set_load", percent = 60, work_order = "{steps.work_order.id}" }
//! ```
//!
//! A run is stored in the transaction of the alert change that starts it,
//! and every step's outcome is stored before the next one starts, so a
//! restarted hub carries on with the step it was at. A failing step is
//! retried with its endpoint's backoff (commands: 1 s doubling to 60 s),
//! up to `max_attempts`; then the run fails and later steps do not run.

pub mod template;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strata_store::{AlertStore, StoredRun};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::now_ns;
use crate::wake::Worker;
use crate::webhooks::{EVENTS, Failure, Webhooks};

/// Attempts of a command step before the run fails.
const COMMAND_ATTEMPTS: u32 = 10;

impl From<String> for Failure {
    fn from(why: String) -> Failure {
        Failure {
            why,
            for_good: false,
        }
    }
}

impl From<&str> for Failure {
    fn from(why: &str) -> Failure {
        why.to_owned().into()
    }
}

/// One `[[workflows]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Its name (unique).
    pub name: String,
    /// The alert event that starts it.
    #[serde(default = "default_on")]
    pub on: String,
    /// Only alerts of these rules start it; every rule when empty.
    #[serde(default)]
    pub rules: Vec<String>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

fn default_on() -> String {
    "alert.raised".into()
}

/// One step of a workflow: exactly one of `webhook` or `command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Its name (unique in the workflow); later steps read its answer as
    /// `{steps.NAME....}`.
    pub name: String,
    /// POST to this `[[webhooks]]` endpoint and wait for a 2xx answer.
    #[serde(default)]
    pub webhook: Option<String>,
    /// The webhook's JSON body (templated); the run's context when absent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
    /// Publish this JSON (templated) as a command to the device.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub command: Option<Value>,
    /// The command's device (templated); the alert's device by default.
    #[serde(default)]
    pub device: Option<String>,
}

impl Workflow {
    /// Checks what serde cannot; `webhooks` are the configured endpoints.
    pub fn validate(&self, webhooks: &[crate::webhooks::WebhookEndpoint]) -> Result<(), String> {
        let at = format!("[[workflows]] {:?}", self.name);
        if self.name.trim().is_empty() {
            return Err("[[workflows]]: every workflow needs a name".into());
        }
        if !EVENTS.contains(&self.on.as_str()) {
            return Err(format!(
                "{at}: on = {:?} is not an event ({EVENTS:?})",
                self.on
            ));
        }
        if self.steps.is_empty() {
            return Err(format!("{at}: needs at least one step"));
        }
        for (i, s) in self.steps.iter().enumerate() {
            if self.steps[..i].iter().any(|o| o.name == s.name) || s.name.is_empty() {
                return Err(format!(
                    "{at}: step names must be set and unique ({:?})",
                    s.name
                ));
            }
            match (&s.webhook, &s.command) {
                (Some(w), None) => {
                    if !webhooks.iter().any(|e| &e.name == w) {
                        return Err(format!(
                            "{at} step {:?}: no [[webhooks]] endpoint named {w:?}",
                            s.name
                        ));
                    }
                    if s.device.is_some() {
                        return Err(format!("{at} step {:?}: device is for commands", s.name));
                    }
                }
                (None, Some(_)) => {
                    if s.body.is_some() {
                        return Err(format!("{at} step {:?}: body is for webhooks", s.name));
                    }
                }
                _ => {
                    return Err(format!(
                        "{at} step {:?}: set exactly one of webhook or command",
                        s.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks a set of workflows: each valid, names unique.
pub fn validate_all(
    workflows: &[Workflow],
    webhooks: &[crate::webhooks::WebhookEndpoint],
    alerts: &[crate::alerts::rules::AlertRule],
) -> Result<(), String> {
    for (i, w) in workflows.iter().enumerate() {
        w.validate(webhooks)?;
        // A misspelt rule would leave the workflow silently idle.
        if let Some(r) = w
            .rules
            .iter()
            .find(|r| !alerts.iter().any(|a| &a.name == *r))
        {
            return Err(format!(
                "[[workflows]] {:?}: rules names {r:?}, which no [[alerts]] rule is called",
                w.name
            ));
        }
        if workflows[..i].iter().any(|o| o.name == w.name) {
            return Err(format!("[[workflows]]: two workflows named {:?}", w.name));
        }
    }
    Ok(())
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepOutcome {
    /// The step.
    pub name: String,
    /// `pending`, `succeeded` or `failed`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// The webhook's JSON answer, or the command sent.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// The last attempt's error.
    pub error: Option<String>,
    /// When it ended, ns.
    pub finished_ns: Option<i64>,
}

/// A workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    /// Its id.
    pub id: i64,
    /// The workflow.
    pub workflow: String,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    /// What started it: the event and the alert.
    #[schema(value_type = Object)]
    pub trigger: Value,
    /// The step it is at.
    pub step: usize,
    /// Every step, in order.
    pub steps: Vec<StepOutcome>,
    /// When it started, ns.
    pub created_ns: i64,
    /// When it last changed, ns.
    pub updated_ns: i64,
}

impl Run {
    fn from_stored(s: StoredRun) -> Result<Run> {
        #[derive(Deserialize)]
        struct Body {
            trigger: Value,
            step: usize,
            steps: Vec<StepOutcome>,
        }
        let body: Body = serde_json::from_value(s.body)
            .map_err(|e| Error::Unavailable(format!("workflow run {} is unreadable: {e}", s.id)))?;
        Ok(Run {
            id: s.id,
            workflow: s.workflow,
            state: s.state,
            trigger: body.trigger,
            step: body.step,
            steps: body.steps,
            created_ns: s.created_ns,
            updated_ns: s.updated_ns,
        })
    }

    fn stored(&self, next_ns: i64) -> StoredRun {
        StoredRun {
            id: self.id,
            workflow: self.workflow.clone(),
            state: self.state.clone(),
            next_ns,
            created_ns: self.created_ns,
            updated_ns: self.updated_ns,
            body: json!({ "trigger": self.trigger, "step": self.step, "steps": self.steps }),
        }
    }

    /// The context templates read: the trigger's fields, `steps.NAME` (each
    /// finished step's output) and `run.id`.
    fn context(&self) -> Value {
        let mut ctx = self.trigger.clone();
        let steps: serde_json::Map<String, Value> = self
            .steps
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.output.clone()?)))
            .collect();
        ctx["steps"] = Value::Object(steps);
        ctx["run"] = json!({ "id": self.id, "workflow": self.workflow });
        ctx
    }
}

/// The workflow runner.
pub struct Workflows {
    workflows: Vec<Workflow>,
    store: Arc<dyn AlertStore>,
    webhooks: Arc<Webhooks>,
    downlink: Mutex<Option<crate::downlink::Downlink>>,
    worker: Worker,
}

impl Workflows {
    /// The runner of `workflows` (started by [`Workflows::start`] once the
    /// broker is up).
    pub fn new(
        workflows: Vec<Workflow>,
        store: Arc<dyn AlertStore>,
        webhooks: Arc<Webhooks>,
    ) -> Arc<Workflows> {
        Arc::new(Workflows {
            workflows,
            store,
            webhooks,
            downlink: Mutex::new(None),
            worker: Worker::default(),
        })
    }

    /// Starts the runner thread, which first carries on with the runs an
    /// earlier hub left running.
    pub fn start(self: &Arc<Self>, downlink: crate::downlink::Downlink) -> Result<()> {
        *self.downlink.lock().unwrap_or_else(|e| e.into_inner()) = Some(downlink);
        if self.workflows.is_empty() {
            return Ok(());
        }
        let worker = Arc::clone(self);
        self.worker
            .spawn("strata-workflows", move || worker.run())
            .map_err(|e| Error::Unavailable(format!("cannot start the workflow runner: {e}")))
    }

    /// Stops the runner after its current step.
    pub fn stop(&self) {
        self.worker.stop();
    }

    /// The runs `event` about `alert` (its rule `rule`) starts; store them
    /// with the change, then call [`Workflows::queued`].
    pub fn runs_for(&self, event: &str, rule: &str, alert: &Value) -> Vec<StoredRun> {
        let now = now_ns();
        self.workflows
            .iter()
            .filter(|w| w.on == event && (w.rules.is_empty() || w.rules.iter().any(|r| r == rule)))
            .map(|w| {
                Run {
                    id: 0,
                    workflow: w.name.clone(),
                    state: "running".into(),
                    trigger: json!({ "event": event, "alert": alert }),
                    step: 0,
                    steps: w
                        .steps
                        .iter()
                        .map(|s| StepOutcome {
                            name: s.name.clone(),
                            state: "pending".into(),
                            attempts: 0,
                            output: None,
                            error: None,
                            finished_ns: None,
                        })
                        .collect(),
                    created_ns: now,
                    updated_ns: now,
                }
                .stored(now)
            })
            .collect()
    }

    /// Tells the runner that runs were started.
    pub fn queued(&self) {
        self.worker.wake();
    }

    /// The configured workflows.
    pub fn workflows(&self) -> &[Workflow] {
        &self.workflows
    }

    /// Runs, newest first.
    pub fn runs(&self, workflow: Option<&str>, limit: usize) -> Result<Vec<Run>> {
        self.store
            .runs(workflow, limit)?
            .into_iter()
            .map(Run::from_stored)
            .collect()
    }

    /// One run.
    pub fn run_by_id(&self, id: i64) -> Result<Run> {
        let stored = self
            .store
            .run(id)?
            .ok_or_else(|| Error::NotFound(format!("no workflow run {id}")))?;
        Run::from_stored(stored)
    }

    fn run(&self) {
        while !self.worker.stopping() {
            let mut failed = false;
            match self.store.due_runs(now_ns(), 32) {
                Ok(due) => {
                    for stored in due {
                        if self.worker.stopping() {
                            return;
                        }
                        if let Err(e) = self.advance(stored) {
                            tracing::warn!("workflows: {e}");
                            failed = true;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("workflows: cannot read due runs: {e}");
                    failed = true;
                }
            }
            if failed {
                // A run whose outcome could not be stored is still due:
                // going round at once would repeat its step (a command to
                // a device, a call) again and again while the store fails.
                self.worker.wait(crate::wake::STORE_RETRY);
                continue;
            }
            self.worker
                .wait_until(self.store.next_run_ns().ok().flatten());
        }
    }

    /// Makes one attempt at a run's current step and stores the outcome.
    fn advance(&self, stored: StoredRun) -> Result<()> {
        let mut run = Run::from_stored(stored)?;
        let now = now_ns();
        let Some(workflow) = self.workflows.iter().find(|w| w.name == run.workflow) else {
            run.state = "failed".into();
            run.updated_ns = now;
            if let Some(s) = run.steps.get_mut(run.step) {
                s.error = Some(format!(
                    "workflow {:?} is no longer configured",
                    run.workflow
                ));
            }
            return Ok(self.store.update_run(&run.stored(now))?);
        };
        // A run goes on only with the steps it started with: after a step
        // was added, removed or renamed its outcomes and `steps.NAME`
        // outputs would belong to other steps.
        let same_steps = run.steps.len() == workflow.steps.len()
            && run
                .steps
                .iter()
                .zip(&workflow.steps)
                .all(|(o, s)| o.name == s.name);
        let step = workflow.steps.get(run.step).filter(|_| same_steps);
        let Some(step) = step else {
            run.updated_ns = now;
            // Every step it started with is done: it is finished.
            run.state = "succeeded".into();
            if let Some(s) = run.steps.get_mut(run.step) {
                run.state = "failed".into();
                s.state = "failed".into();
                s.error = Some(format!(
                    "workflow {:?} changed since this run started: its steps are now {:?}",
                    run.workflow,
                    workflow.steps.iter().map(|s| &s.name).collect::<Vec<_>>()
                ));
                s.finished_ns = Some(now);
            }
            return Ok(self.store.update_run(&run.stored(now))?);
        };
        let result = self.attempt(&run, step);
        let (max_attempts, backoff) = match &step.webhook {
            Some(name) => match self.webhooks.endpoint(name) {
                Some(e) => (e.max_attempts, e.backoff(run.steps[run.step].attempts + 1)),
                None => (1, Duration::ZERO),
            },
            None => {
                let n = run.steps[run.step].attempts;
                (COMMAND_ATTEMPTS, Duration::from_secs(1 << n.min(6)))
            }
        };
        let outcome = &mut run.steps[run.step];
        outcome.attempts += 1;
        let mut next_ns = now;
        match result {
            Ok(output) => {
                outcome.state = "succeeded".into();
                outcome.output = Some(output);
                outcome.error = None;
                outcome.finished_ns = Some(now);
                run.step += 1;
                if run.step == workflow.steps.len() {
                    run.state = "succeeded".into();
                }
            }
            Err(Failure { why: e, for_good }) if for_good || outcome.attempts >= max_attempts => {
                tracing::warn!(
                    "workflow {} run {}: step {} failed after {} attempts: {e}",
                    run.workflow,
                    run.id,
                    outcome.name,
                    outcome.attempts
                );
                outcome.state = "failed".into();
                outcome.error = Some(e);
                outcome.finished_ns = Some(now);
                run.state = "failed".into();
            }
            Err(Failure { why: e, .. }) => {
                outcome.error = Some(e);
                next_ns = now + backoff.as_nanos() as i64;
            }
        }
        run.updated_ns = now;
        Ok(self.store.update_run(&run.stored(next_ns))?)
    }

    /// One attempt at `step`: its output, or why it failed (for good
    /// when the endpoint refused the request itself, e.g. a 401).
    fn attempt(&self, run: &Run, step: &Step) -> std::result::Result<Value, Failure> {
        let ctx = run.context();
        if let Some(endpoint) = &step.webhook {
            let body = match &step.body {
                Some(b) => template::render(b, &ctx)?,
                None => ctx,
            };
            let id = format!("run-{}-{}", run.id, step.name);
            let answer = self
                .webhooks
                .call(endpoint, &id, "workflow.step", &body.to_string())?;
            return Ok(serde_json::from_str(&answer).unwrap_or(Value::String(answer)));
        }
        let command = template::render(step.command.as_ref().expect("validated"), &ctx)?;
        let device = match &step.device {
            Some(d) => template::render(&Value::String(d.clone()), &ctx)?,
            None => ctx["alert"]["device"].clone(),
        };
        let device = device
            .as_str()
            .and_then(|d| strata_proto::DeviceId::new(d).ok())
            .ok_or_else(|| format!("the command's device {device} is not a device id"))?;
        let payload = json!({
            "command": command,
            "workflow": run.workflow,
            "run": run.id,
            "step": step.name,
        });
        let downlink = self
            .downlink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let downlink = downlink.ok_or("the broker is not running")?;
        let topic = crate::downlink::command_topic(&device);
        downlink
            .command(&device, bytes::Bytes::from(payload.to_string()))
            .map_err(|e| format!("cannot publish the command on {topic}: {e}"))?;
        Ok(json!({ "device": device.as_str(), "topic": topic, "command": command }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Vec<crate::webhooks::WebhookEndpoint> {
        vec![toml::from_str("name = \"cmms\"\nurl = \"http://h/\"\n").unwrap()]
    }

    fn check(text: &str) -> Result<(), String> {
        let w: Workflow = toml::from_str(text).map_err(|e| e.to_string())?;
        w.validate(&endpoints())
    }

    #[test]
    fn each_step_is_a_webhook_or_a_command_and_names_are_unique() {
        let head = "name = \"w\"\n";
        check(&format!(
            "{head}[[steps]]\nname = \"a\"\nwebhook = \"cmms\"\n[[steps]]\nname = \"b\"\ncommand = {{ x = 1 }}\n"
        ))
        .unwrap();
        let err = |steps: &str| check(&format!("{head}{steps}")).unwrap_err();
        assert!(err("[[steps]]\nname = \"a\"\n").contains("exactly one"));
        assert!(
            err("[[steps]]\nname = \"a\"\nwebhook = \"cmms\"\ncommand = {}\n")
                .contains("exactly one")
        );
        assert!(err("[[steps]]\nname = \"a\"\nwebhook = \"x\"\n").contains("no [[webhooks]]"));
        assert!(
            err("[[steps]]\nname = \"a\"\ncommand = {}\n[[steps]]\nname = \"a\"\ncommand = {}\n")
                .contains("unique")
        );
        assert!(
            err("on = \"alert.exploded\"\n[[steps]]\nname = \"a\"\ncommand = {}\n")
                .contains("not an event")
        );
        assert!(err("steps = []\n").contains("at least one step"));
    }

    #[test]
    fn a_run_starts_only_for_its_event_and_rules() {
        let w: Workflow = toml::from_str(
            "name = \"w\"\nrules = [\"hot\"]\n[[steps]]\nname = \"a\"\ncommand = { x = 1 }\n",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            strata_store::SqliteStore::open(dir.path(), strata_store::Durability::Process).unwrap(),
        );
        let hooks = Webhooks::start(store.clone(), &[], dir.path()).unwrap();
        let flows = Workflows::new(vec![w], store, hooks);
        let alert = json!({"device": "m1"});
        assert_eq!(flows.runs_for("alert.raised", "hot", &alert).len(), 1);
        assert!(flows.runs_for("alert.raised", "cold", &alert).is_empty());
        assert!(flows.runs_for("alert.cleared", "hot", &alert).is_empty());
        let run =
            Run::from_stored(flows.runs_for("alert.raised", "hot", &alert).remove(0)).unwrap();
        assert_eq!(run.steps[0].state, "pending");
        assert_eq!(run.context()["alert"]["device"], "m1");
    }

    #[test]
    fn a_rule_no_alert_is_called_is_refused() {
        let w: Workflow = toml::from_str(
            "name = \"w\"\nrules = [\"hto\"]\n[[steps]]\nname = \"a\"\ncommand = {}\n",
        )
        .unwrap();
        let hot: crate::alerts::rules::AlertRule =
            toml::from_str("name = \"hot\"\nsignal = \"t\"\ncondition = \"above\"\nvalue = 1\n")
                .unwrap();
        let err =
            validate_all(std::slice::from_ref(&w), &[], std::slice::from_ref(&hot)).unwrap_err();
        assert!(err.contains("\"hto\""), "{err}");
        let mut fixed = w;
        fixed.rules = vec!["hot".into()];
        validate_all(&[fixed], &[], &[hot]).unwrap();
    }

    /// Runs stored with other steps than the workflow has now: it once
    /// indexed past a run's own outcomes and stopped the runner thread at
    /// every start.
    #[test]
    fn a_run_goes_on_only_with_the_steps_it_started_with() {
        let workflow = |steps: &[&str]| -> Workflow {
            let mut text = "name = \"w\"\n".to_owned();
            for s in steps {
                text += &format!("[[steps]]\nname = \"{s}\"\ncommand = {{ x = 1 }}\n");
            }
            toml::from_str(&text).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            strata_store::SqliteStore::open(dir.path(), strata_store::Durability::Process).unwrap(),
        );
        let hooks = Webhooks::start(store.clone(), &[], dir.path()).unwrap();
        // (steps it started with, steps now, its state after one advance)
        for (alert_id, (then, now, state)) in [
            (&["a"][..], &["a", "b"][..], "succeeded"),
            (&["a", "b"][..], &["a", "c"][..], "failed"),
        ]
        .into_iter()
        .enumerate()
        {
            let before = Workflows::new(vec![workflow(then)], store.clone(), hooks.clone());
            let mut run =
                Run::from_stored(before.runs_for("alert.raised", "r", &json!({})).remove(0))
                    .unwrap();
            // Step a is done; the run is still `running`.
            run.step = 1;
            run.steps[0].state = "succeeded".into();
            let alert = strata_store::StoredAlert {
                id: alert_id as i64 + 1,
                rule: "r".into(),
                device: "m1".into(),
                state: "active".into(),
                raised_ns: 1,
                updated_ns: 1,
                body: json!({}),
            };
            let event = strata_store::AlertEvent {
                ts_ns: 1,
                kind: "raised".into(),
                detail: String::new(),
            };
            store
                .record_alert(&alert, &event, &[], &[run.stored(0)])
                .unwrap();
            let after = Workflows::new(vec![workflow(now)], store.clone(), hooks.clone());
            let due = store.due_runs(i64::MAX, 10).unwrap();
            assert_eq!(due.len(), 1);
            after.advance(due[0].clone()).unwrap();
            let done = Run::from_stored(store.run(due[0].id).unwrap().unwrap()).unwrap();
            assert_eq!(done.state, state, "{done:?}");
            if state == "failed" {
                let why = done.steps[1].error.as_deref().unwrap_or_default();
                assert!(why.contains("changed"), "{why}");
            }
        }
    }
}
