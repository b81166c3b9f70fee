//! The automated retraining loop (docs/design/drift.md): per model, a
//! policy watches the champion's drift and accuracy (or a schedule); when
//! it fires, the loop collects fresh data, trains a challenger with the
//! champion's own recipe (its training job's spec) on a fresh window,
//! scores champion and challenger on the newest share of that window,
//! lets a better challenger shadow the champion on the canary devices,
//! compares them there on the labels that arrive, and promotes it or lets
//! it go. Every step is a stored, timestamped record (`GET
//! /api/v1/retraining`), and the challenger's lineage names the cycle.
//!
//! The loop is a state machine over stored cycles, advanced every
//! `check_s`: a hub restarted mid-cycle carries on from the stored state
//! (its jobs are stored and re-run too).

pub mod cycle;
pub mod policy;
mod trigger;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strata_proto::DeviceId;
use strata_store::{JobState, LabelStore, RetrainStore, StoredCycle, TelemetryStore};

pub use cycle::{Comparison, Cycle, CycleState, Trigger};
pub use policy::{Canary, RetrainPolicy};

use crate::drift::Drift;
use crate::drift::accuracy::{self, AccuracySpec};
use crate::error::{Error, Result};
use crate::models::backtest::{BacktestReport, BacktestSpec};
use crate::models::deploy::{DeployRequest, Deployer, DeviceSelector};
use crate::models::jobs::JobRunner;
use crate::models::train::TrainSpec;
use crate::models::{ModelRegistry, VersionRef};
use crate::registry::Registry;
use crate::wake::Wake;

const S: i64 = 1_000_000_000;

/// What the loop works with.
pub struct RetrainDeps {
    /// Where cycles are kept.
    pub cycles: Arc<dyn RetrainStore>,
    /// Training and backtest jobs.
    pub jobs: Arc<JobRunner>,
    /// The model registry.
    pub models: Arc<ModelRegistry>,
    /// Profiles and sketches.
    pub drift: Arc<Drift>,
    /// Twins: shadow, promotion.
    pub deployer: Arc<Deployer>,
    /// Devices.
    pub registry: Arc<Registry>,
    /// Late labels.
    pub labels: Arc<dyn LabelStore>,
    /// Predictions.
    pub telemetry: Arc<dyn TelemetryStore>,
    /// Where promotions are recorded.
    pub audit: Arc<crate::audit::Audit>,
    /// Whether this replica runs the policies (one replica at a time).
    pub lease: Arc<crate::shared::Lease>,
}

/// The running loop; reads of its cycles.
pub struct Retrainer {
    cycles: Arc<dyn RetrainStore>,
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
}

impl Retrainer {
    /// Starts the loop over `policies` (none: nothing runs, cycles can
    /// still be read).
    pub fn start(deps: RetrainDeps, policies: Vec<RetrainPolicy>) -> Result<Retrainer> {
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Wake::set());
        let retrainer = Retrainer {
            cycles: deps.cycles.clone(),
            stop: stop.clone(),
            wake: wake.clone(),
        };
        if !policies.is_empty() {
            std::thread::Builder::new()
                .name("strata-retrain".into())
                .spawn(move || run(deps, policies, stop, wake))
                .map_err(|e| {
                    Error::Unavailable(format!("cannot start the retraining loop: {e}"))
                })?;
        }
        Ok(retrainer)
    }

    /// The newest cycles first, optionally of one model.
    pub fn cycles(&self, model: Option<&str>, limit: usize) -> Result<Vec<Cycle>> {
        self.cycles
            .cycles(model, limit)?
            .into_iter()
            .map(decode)
            .collect()
    }

    /// One cycle.
    pub fn cycle(&self, id: i64) -> Result<Cycle> {
        decode(
            self.cycles
                .cycle(id)?
                .ok_or_else(|| Error::NotFound(format!("no retraining cycle {id}")))?,
        )
    }

    /// `strata_retrain_cycles{model, state}`: cycles per model and state
    /// (the newest 10,000), in the Prometheus text format.
    pub fn render(&self) -> Result<String> {
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for c in self.cycles.cycles(None, 10_000)? {
            *counts.entry((c.model, c.state)).or_default() += 1;
        }
        let mut out = String::new();
        if !counts.is_empty() {
            out.push_str(
                "# HELP strata_retrain_cycles Retraining cycles by model and state.\n\
                 # TYPE strata_retrain_cycles gauge\n",
            );
        }
        for ((model, state), n) in counts {
            out.push_str(&format!(
                "strata_retrain_cycles{{model=\"{model}\",state=\"{state}\"}} {n}\n"
            ));
        }
        Ok(out)
    }

    /// Stops the loop after its current step.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.wake();
    }
}

fn decode(stored: StoredCycle) -> Result<Cycle> {
    let mut c: Cycle = serde_json::from_value(stored.body)
        .map_err(|e| Error::Conflict(format!("retraining cycle {} is damaged: {e}", stored.id)))?;
    // The body written at creation, before the store gave the id, says 0.
    c.id = stored.id;
    Ok(c)
}

fn run(deps: RetrainDeps, policies: Vec<RetrainPolicy>, stop: Arc<AtomicBool>, wake: Arc<Wake>) {
    let mut next_check: BTreeMap<String, i64> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        if !policies.is_empty() && !deps.lease.held() {
            // Another replica runs them; look again in a while.
            next_check.clear();
            wake.wait(Duration::from_secs(1));
            continue;
        }
        let now = crate::now_ns();
        for p in &policies {
            if next_check.get(&p.model).is_some_and(|&at| at > now) {
                continue;
            }
            next_check.insert(p.model.clone(), now + p.check_s as i64 * S);
            // A panic in one policy's check (a bug, a damaged record) is
            // logged and the check taken again later; the loop goes on
            // for every model.
            let checked =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&deps, p, now)));
            match checked {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(model = p.model, "retraining check failed: {e}"),
                Err(panic) => tracing::error!(
                    model = p.model,
                    "retraining check panicked ({}); it is taken again in {} s",
                    crate::panic_message(&*panic),
                    p.check_s
                ),
            }
        }
        let soonest = next_check.values().min().copied().unwrap_or(now + S);
        let wait = (soonest - crate::now_ns()).clamp(50_000_000, 5 * S);
        wake.wait(Duration::from_nanos(wait as u64));
    }
}

/// One look at a policy: advance its open cycle, or see whether a trigger
/// fires.
fn check(deps: &RetrainDeps, p: &RetrainPolicy, now: i64) -> Result<()> {
    let latest = deps.cycles.cycles(Some(&p.model), 1)?.into_iter().next();
    if let Some(stored) = &latest
        && !stored.done
    {
        let mut c = decode(stored.clone())?;
        let before = c.clone();
        match advance(deps, p, &mut c, now) {
            Err(e) if ends_the_cycle(&e) => {
                c.step(CycleState::Failed, e.to_string(), now);
                // A shadow of a failed cycle stops.
                if c.shadow_from_ns.is_some() {
                    let _ = deps.deployer.end_shadow(&p.model);
                }
            }
            Err(e) => tracing::warn!(
                cycle = c.id,
                model = %p.model,
                "retraining: {e}; the cycle goes on at the next check"
            ),
            Ok(()) => {}
        }
        if c != before {
            save(deps, &c)?;
        }
        return Ok(());
    }
    if latest
        .as_ref()
        .is_some_and(|l| now - l.updated_ns < p.cooldown_s as i64 * S)
    {
        return Ok(());
    }
    let Some(champion) = serving_version(&deps.models, &deps.deployer, &p.model)? else {
        return Ok(());
    };
    // A version not trained here has no recipe: its first cycle failed
    // saying so, and every trigger after would fail the same way, once a
    // cooldown, until another version serves.
    let failed_for_want_of_a_recipe = champion.lineage.job.is_none()
        && latest.as_ref().is_some_and(|l| {
            decode(l.clone())
                .is_ok_and(|c| c.champion == champion.version && c.state == CycleState::Failed)
        });
    if failed_for_want_of_a_recipe {
        return Ok(());
    }
    let last_start = latest.as_ref().map(|l| l.created_ns);
    let Some(trigger) = trigger::fire(deps, p, &champion, last_start, now)? else {
        return Ok(());
    };
    let mut c = Cycle {
        id: 0,
        model: p.model.clone(),
        state: CycleState::Collecting,
        trigger,
        champion: champion.version,
        challenger: None,
        train_job: None,
        backtest_job: None,
        window_ns: None,
        devices: Vec::new(),
        canary: Vec::new(),
        shadow_from_ns: None,
        offline: None,
        live: None,
        promoting_ns: None,
        steps: Vec::new(),
        created_ns: now,
        updated_ns: now,
    };
    c.id = deps.cycles.create_cycle(&stored(&c))?;
    let detail = c.trigger.detail.clone();
    c.step(
        CycleState::Collecting,
        format!(
            "{detail}; collecting {} s of fresh data before training",
            p.collect_s
        ),
        now,
    );
    save(deps, &c)
}

fn stored(c: &Cycle) -> StoredCycle {
    StoredCycle {
        id: c.id,
        model: c.model.clone(),
        state: c.state.as_str().into(),
        done: c.state.is_done(),
        created_ns: c.created_ns,
        updated_ns: c.updated_ns,
        body: serde_json::to_value(c).expect("JSON of a cycle"),
    }
}

fn save(deps: &RetrainDeps, c: &Cycle) -> Result<()> {
    Ok(deps.cycles.update_cycle(&stored(c))?)
}

/// Whether a step's error ends its cycle: any but the store being down
/// for the moment (a lost connection, a busy database), which must not
/// throw away a shadow of hours; the step is taken again at the next
/// check, from what was saved of the ones before.
fn ends_the_cycle(e: &Error) -> bool {
    !matches!(e, Error::Store(store) if store.is_retryable())
}

/// The champion now, when it is no longer `champion` (the one a cycle
/// started from). A model without a champion alias has not moved.
fn champion_moved(aliases: &std::collections::BTreeMap<String, u32>, champion: u32) -> Option<u32> {
    aliases
        .get("champion")
        .copied()
        .filter(|&now| now != champion)
}

/// The version a model serves: its champion; without that alias (a
/// version deployed by number), the one most devices run, else its
/// latest. Not simply the latest: a challenger a cycle registered and
/// rejected is the latest, and runs nowhere.
pub fn serving_version(
    models: &ModelRegistry,
    deployer: &Deployer,
    model: &str,
) -> Result<Option<strata_store::ModelVersion>> {
    let info = match models.model(model) {
        Ok(info) => info,
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let number = match info.aliases.get("champion") {
        Some(&n) => Some(n),
        None => deployer.most_served_version(model)?.or(info.latest_version),
    };
    let Some(number) = number else {
        return Ok(None);
    };
    Ok(Some(models.version(model, &VersionRef::Number(number))?))
}

/// Moves an open cycle on as far as it can go now.
fn advance(deps: &RetrainDeps, p: &RetrainPolicy, c: &mut Cycle, now: i64) -> Result<()> {
    match c.state {
        CycleState::Collecting if now >= c.trigger.at_ns + p.collect_s as i64 * S => {
            start_training(deps, p, c, now)
        }
        CycleState::Training => {
            let Some(job) = finished_job(deps, p, c, c.train_job, now)? else {
                return Ok(());
            };
            let version = job
                .result
                .as_ref()
                .and_then(|r| r["version"].as_u64())
                .ok_or_else(|| {
                    Error::Conflict(format!("training job {} gave no version", job.id))
                })? as u32;
            c.challenger = Some(version);
            start_backtest(deps, c, now)
        }
        CycleState::Evaluating => {
            let Some(job) = finished_job(deps, p, c, c.backtest_job, now)? else {
                return Ok(());
            };
            let report: BacktestReport = serde_json::from_value(job.result.unwrap_or_default())
                .map_err(|e| Error::Conflict(format!("backtest job {}: {e}", job.id)))?;
            decide_offline(deps, p, c, &report, now)
        }
        CycleState::Shadowing => {
            let from = c.shadow_from_ns.unwrap_or(now);
            if now < from + p.shadow_s as i64 * S {
                return Ok(());
            }
            decide_live(deps, p, c, now)
        }
        _ => Ok(()),
    }
}

/// The champion's recipe: the id and spec of the job that trained it.
fn recipe(deps: &RetrainDeps, c: &Cycle) -> Result<(i64, TrainSpec)> {
    let champion = deps
        .models
        .version(&c.model, &VersionRef::Number(c.champion))?;
    let id = champion.lineage.job.ok_or_else(|| {
        Error::BadRequest(format!(
            "{} v{} was not trained here, so there is no recipe to retrain it with",
            c.model, c.champion
        ))
    })?;
    let spec = serde_json::from_value(deps.jobs.job(id)?.spec).map_err(|e| {
        Error::Conflict(format!("the training spec of job {id} is unreadable: {e}"))
    })?;
    Ok((id, spec))
}

/// How many of the newest jobs are looked through for one a cycle
/// submitted before the hub stopped.
const JOBS_LOOKED_AT: usize = 500;

/// Among `newest`, the job of `kind` that cycle `c`
/// submitted before the hub stopped, before the cycle could record it (a
/// crash between the two): the cycle carries on with it rather than
/// training or backtesting twice. `is_ours` recognises its spec.
fn submitted_before<'a>(
    newest: &'a [strata_store::Job],
    c: &Cycle,
    kind: &str,
    is_ours: impl Fn(&serde_json::Value) -> bool,
) -> Option<&'a strata_store::Job> {
    newest
        .iter()
        .find(|j| j.created_ns >= c.created_ns && j.kind == kind && is_ours(&j.spec))
}

fn start_training(deps: &RetrainDeps, p: &RetrainPolicy, c: &mut Cycle, now: i64) -> Result<()> {
    let (recipe, mut spec) = recipe(deps, c)?;
    let trigger = c.lineage_trigger();
    let newest = deps.jobs.jobs(JOBS_LOOKED_AT)?;
    if let Some(job) = submitted_before(&newest, c, "train", |s| {
        s["trigger"] == trigger.as_str() && s["model"] == c.model.as_str()
    }) {
        let submitted: TrainSpec = serde_json::from_value(job.spec.clone()).map_err(|e| {
            Error::Conflict(format!(
                "the training spec of job {} is unreadable: {e}",
                job.id
            ))
        })?;
        let window = &submitted.dataset;
        c.train_job = Some(job.id);
        c.window_ns = Some([window.from_ns, window.to_ns, job.created_ns]);
        c.devices = window.devices.clone();
        c.step(
            CycleState::Training,
            format!(
                "training job {} on {} devices' data, submitted before the hub stopped",
                job.id,
                c.devices.len()
            ),
            now,
        );
        return Ok(());
    }
    let devices = deps.deployer.serving(&c.model)?;
    if !devices.is_empty() {
        spec.dataset.devices = devices.iter().map(|d| d.to_string()).collect();
    }
    let gap = crate::models::dataset::warm_up_ns(&spec.dataset.pipeline);
    let [from, train_to, _] = fresh_window(p, c.trigger.evidence_from_ns, gap, now);
    spec.dataset.from_ns = from;
    spec.dataset.to_ns = train_to;
    spec.alias = Some("challenger".into());
    spec.trigger = c.lineage_trigger();
    // The parent is the champion; named only where the job would not
    // find it by the `champion` alias (a replica of an older release,
    // during a rolling upgrade, cannot read the field).
    let by_alias = deps
        .models
        .model(&c.model)?
        .aliases
        .get("champion")
        .copied();
    spec.parent = (by_alias != Some(c.champion)).then_some(c.champion);
    spec.description = format!(
        "retrained by cycle {} ({}): {}",
        c.id, c.trigger.kind, c.trigger.detail
    );
    let submitted = deps.jobs.submit_training(&spec)?;
    c.train_job = Some(submitted.id);
    c.window_ns = Some([from, train_to, now]);
    c.devices = spec.dataset.devices.clone();
    c.step(
        CycleState::Training,
        format!(
            "training job {} on {} devices' data of the last {} s with the recipe of job {recipe}, \
             which trained v{}; the newest {:.0} % of the data since the evidence began is kept for evaluation",
            submitted.id,
            c.devices.len(),
            (train_to - from) / S,
            c.champion,
            p.eval_share * 100.0
        ),
        now,
    );
    Ok(())
}

/// The fresh window of a cycle that trains at `now`: `[from, train_to,
/// now]`. Training takes the rows of `from..train_to`; the held-out rows
/// are those of `train_to + gap..now`, where `gap` is the pipeline's
/// longest window, so no held-out row is computed from data a training
/// row saw. The held-out share is `eval_share` of the time since the
/// evidence began (of the whole window when there is none, e.g. a
/// schedule): after a drift, the challenger trains on part of the drifted
/// data and is judged on the rest, where a share of the whole window
/// would have held all of it out.
fn fresh_window(p: &RetrainPolicy, evidence_from_ns: Option<i64>, gap: i64, now: i64) -> [i64; 3] {
    let from = now - p.train_window_s as i64 * S;
    let fresh_from = evidence_from_ns.unwrap_or(from).clamp(from, now);
    let split = now - ((now - fresh_from) as f64 * p.eval_share) as i64;
    let train_to = (split - gap).max(from);
    [from, train_to, now]
}

fn start_backtest(deps: &RetrainDeps, c: &mut Cycle, now: i64) -> Result<()> {
    let challenger = c.challenger.expect("trained");
    let (_, train) = recipe(deps, c)?;
    let [_, train_to, to] = c.window_ns.expect("set at training");
    let split = train_to + crate::models::dataset::warm_up_ns(&train.dataset.pipeline);
    let mut dataset = train.dataset.clone();
    dataset.devices = c.devices.clone();
    dataset.from_ns = split;
    dataset.to_ns = to;
    let spec = BacktestSpec {
        model: c.model.clone(),
        versions: vec![c.champion.to_string(), challenger.to_string()],
        dataset,
        threshold: train.trainer.threshold(),
    };
    let asked = serde_json::to_value(&spec).expect("JSON of a spec");
    let newest = deps.jobs.jobs(JOBS_LOOKED_AT)?;
    let job = match submitted_before(&newest, c, "backtest", |s| *s == asked) {
        Some(job) => job.clone(),
        None => deps.jobs.submit_backtest(&spec)?,
    };
    c.backtest_job = Some(job.id);
    c.step(
        CycleState::Evaluating,
        format!(
            "registered v{challenger}; backtest job {} scores v{} and v{challenger} on the held-out {} s",
            job.id,
            c.champion,
            (to - split) / S
        ),
        now,
    );
    Ok(())
}

/// The job when it has ended; an error when it failed or was cancelled,
/// or when it has not ended `max_job_s` after the cycle's step that
/// started it or, for a job run again (a hub restarted meanwhile), after
/// its last start: the job is then cancelled, so it registers no version
/// that no cycle would shadow.
fn finished_job(
    deps: &RetrainDeps,
    p: &RetrainPolicy,
    c: &Cycle,
    id: Option<i64>,
    now: i64,
) -> Result<Option<strata_store::Job>> {
    let id = id.ok_or_else(|| Error::Conflict("the cycle lost its job".into()))?;
    let job = deps.jobs.job(id)?;
    match job.state {
        JobState::Succeeded => Ok(Some(job)),
        JobState::Failed => Err(Error::Conflict(format!("job {id} failed: {}", job.message))),
        JobState::Cancelled => Err(Error::Conflict(format!(
            "job {id} was cancelled: {}",
            job.message
        ))),
        JobState::Queued | JobState::Running => {
            if overdue(&job, c, p, now) {
                let reason = format!(
                    "it had not ended {} s after it started (the retraining policy's max_job_s)",
                    p.max_job_s
                );
                return match deps.jobs.cancel(id, &reason) {
                    Ok(job) => Err(Error::Conflict(format!(
                        "job {id} was cancelled: {}",
                        job.message
                    ))),
                    // It ended meanwhile, or is registering its result:
                    // taken as it ends.
                    Err(Error::Conflict(_)) => match deps.jobs.job(id)? {
                        job if job.state == JobState::Succeeded => Ok(Some(job)),
                        job if !job.state.is_finished() => Ok(None),
                        job => Err(Error::Conflict(format!(
                            "job {id} {}: {}",
                            job.state.as_str(),
                            job.message
                        ))),
                    },
                    Err(e) => Err(e),
                };
            }
            Ok(None)
        }
    }
}

/// Whether a job that has not ended has run past `max_job_s`, counted
/// from the cycle's step that started it or, for a job run again (a hub
/// restarted meanwhile), from its last start.
fn overdue(job: &strata_store::Job, c: &Cycle, p: &RetrainPolicy, now: i64) -> bool {
    let stepped = c.steps.last().map_or(c.updated_ns, |s| s.at_ns);
    let since = job.started_ns.unwrap_or(stepped).max(stepped);
    now - since > p.max_job_s as i64 * S
}

fn decide_offline(
    deps: &RetrainDeps,
    p: &RetrainPolicy,
    c: &mut Cycle,
    report: &BacktestReport,
    now: i64,
) -> Result<()> {
    let challenger = c.challenger.expect("trained");
    let figure = |version: u32| -> Result<f64> {
        let m = &report
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| Error::Conflict(format!("the backtest lacks v{version}")))?
            .metrics;
        let value = if report.criterion == "roc_auc" {
            m.roc_auc
        } else {
            m.mae
        };
        value.ok_or_else(|| Error::Conflict(format!("the backtest has no {}", report.criterion)))
    };
    if (report.rows as u64) < p.min_eval_rows {
        c.step(
            CycleState::Rejected,
            format!(
                "only {} held-out rows to score v{} and v{challenger} on (at least {} needed); v{} stays champion",
                report.rows, c.champion, p.min_eval_rows, c.champion
            ),
            now,
        );
        return Ok(());
    }
    let undefined = report.versions.iter().any(|v| {
        if report.criterion == "roc_auc" {
            v.metrics.roc_auc.is_none()
        } else {
            v.metrics.mae.is_none()
        }
    });
    if undefined {
        c.step(
            CycleState::Rejected,
            format!(
                "no {} on the {} held-out rows{}; v{} stays champion",
                report.criterion,
                report.rows,
                if report.criterion == "roc_auc" {
                    " (ROC AUC needs both classes among them)"
                } else {
                    ""
                },
                c.champion
            ),
            now,
        );
        return Ok(());
    }
    let (champ, chall) = (figure(c.champion)?, figure(challenger)?);
    let error = |x: f64| {
        if report.criterion == "roc_auc" {
            1.0 - x
        } else {
            x
        }
    };
    let gain = cycle::improvement(error(champ), error(chall));
    c.offline = Some(Comparison {
        criterion: report.criterion.clone(),
        champion: champ,
        challenger: chall,
        improvement: gain,
        n: report.rows as u64,
    });
    let figures = format!(
        "{} v{}: {champ:.4}, v{challenger}: {chall:.4} on {} held-out rows ({:+.1} %)",
        report.criterion,
        c.champion,
        report.rows,
        gain * 100.0
    );
    if gain < p.min_improvement {
        c.step(
            CycleState::Rejected,
            format!(
                "{figures}: short of the {:.0} % required; v{} stays champion",
                p.min_improvement * 100.0,
                c.champion
            ),
            now,
        );
        return Ok(());
    }
    let serving = deps.deployer.serving(&c.model)?;
    // The devices the trigger named, and those that drift by now (a fault
    // spreads, or reached its second device a window later).
    let champion = deps
        .models
        .version(&c.model, &VersionRef::Number(c.champion))?;
    let mut named: Vec<DeviceId> = c
        .trigger
        .devices
        .iter()
        .cloned()
        .chain(trigger::drifting_now(deps, p, &champion, now)?)
        .filter_map(|d| DeviceId::new(d.as_str()).ok())
        .filter(|d| serving.contains(d))
        .collect();
    named.sort();
    named.dedup();
    let canary = match p.canary {
        Canary::Drifting if !named.is_empty() => named,
        _ => serving,
    };
    if canary.is_empty() {
        c.step(
            CycleState::Abandoned,
            format!("{figures}; but no device serves {} to shadow on", c.model),
            now,
        );
        return Ok(());
    }
    deps.deployer.deploy(
        &c.model,
        &DeployRequest {
            version: challenger.to_string(),
            vector: None,
            target: DeviceSelector {
                devices: Some(canary.iter().map(|d| d.to_string()).collect()),
                ..DeviceSelector::default()
            },
            shadow: true,
        },
    )?;
    c.canary = canary.iter().map(|d| d.to_string()).collect();
    c.shadow_from_ns = Some(now);
    c.step(
        CycleState::Shadowing,
        format!(
            "{figures}; v{challenger} shadows v{} on {} for {} s",
            c.champion,
            c.canary.join(", "),
            p.shadow_s
        ),
        now,
    );
    Ok(())
}

/// Someone promoted `now_champion` while this cycle's challenger `what`
/// the cycle's champion: the challenger was not compared with the
/// version that serves now, so promoting it (or putting the old one back
/// should that fail) would override them. The shadow ends. Where this
/// cycle had begun to put its challenger on the devices, they are given
/// the new champion (or, where it cannot serve, the old one) back, so the
/// fleet never stays on a version nobody chose.
fn abandon_for_a_new_champion(
    deps: &RetrainDeps,
    c: &mut Cycle,
    now_champion: u32,
    what: &str,
    now: i64,
) -> Result<()> {
    let challenger = c.challenger.expect("trained");
    if c.promoting_ns.is_some() {
        let serving = deps.deployer.serving(&c.model)?;
        if let Err(e) = deps.deployer.promote(&c.model, now_champion, &serving) {
            tracing::warn!(
                model = %c.model,
                "v{now_champion} cannot serve on the devices ({e}); v{} goes back on them",
                c.champion
            );
            deps.deployer.promote(&c.model, c.champion, &serving)?;
        }
    }
    deps.deployer.end_shadow(&c.model)?;
    c.step(
        CycleState::Abandoned,
        format!(
            "v{now_champion} became champion while v{challenger} {what} v{}; \
             v{challenger} was not compared with it, so the shadow ends and v{now_champion} stays",
            c.champion
        ),
        now,
    );
    Ok(())
}

fn decide_live(deps: &RetrainDeps, p: &RetrainPolicy, c: &mut Cycle, now: i64) -> Result<()> {
    let challenger = c.challenger.expect("trained");
    let aliases = deps.models.model(&c.model)?.aliases;
    if champion_moved(&aliases, c.champion) == Some(challenger) && c.promoting_ns.is_some() {
        // This cycle promoted it at an earlier check whose record did not
        // complete (the hub stopped, or the store refused the audit entry
        // or the save after the alias moved): finish the record.
        let serving = deps.deployer.serving(&c.model)?;
        deps.audit.record(
            crate::audit::Event::ok(
                "retrainer",
                "model.promote",
                format!("{}@{challenger}", c.model),
            )
            .detail(
                serde_json::json!({"cycle": c.id, "devices": serving.len(), "recorded_late": true}),
            ),
        )?;
        c.step(
            CycleState::Promoted,
            format!(
                "v{challenger} is champion and serves on {} devices (promoted at an earlier check, recorded now)",
                serving.len()
            ),
            now,
        );
        return Ok(());
    }
    if let Some(now_champion) = champion_moved(&aliases, c.champion) {
        return abandon_for_a_new_champion(deps, c, now_champion, "shadowed", now);
    }
    let devices = deps.registry.devices_by_id()?;
    let from = c.shadow_from_ns.unwrap_or(now);
    let spec = AccuracySpec {
        from_ns: from,
        to_ns: now,
        bucket_ns: (now - from).max(1),
        max_lag_ns: p.max_lag_s as i64 * S,
        by: Vec::new(),
        devices: c
            .canary
            .iter()
            .filter_map(|d| DeviceId::new(d.as_str()).ok())
            .collect(),
    };
    let version = |number: u32| deps.models.version(&c.model, &VersionRef::Number(number));
    let (champ, chall) = accuracy::compare_on_the_same_labels(
        (&version(c.champion)?, &version(challenger)?),
        &*deps.labels,
        &*deps.telemetry,
        &devices,
        &spec,
    )?;
    let pairs = chall.overall.pairs.min(champ.overall.pairs);
    if pairs < p.min_pairs {
        deps.deployer.end_shadow(&c.model)?;
        c.step(
            CycleState::Abandoned,
            format!(
                "only {pairs} labels matched both versions' predictions in the shadow (at least {} needed); \
                 v{} stays champion",
                p.min_pairs, c.champion
            ),
            now,
        );
        return Ok(());
    }
    let (criterion, a, b, gain) = match (champ.overall.mae, chall.overall.mae) {
        (Some(a), Some(b)) => ("mae", a, b, cycle::improvement(a, b)),
        _ => {
            let a = champ.overall.accuracy.unwrap_or(0.0);
            let b = chall.overall.accuracy.unwrap_or(0.0);
            ("accuracy", a, b, cycle::improvement(1.0 - a, 1.0 - b))
        }
    };
    c.live = Some(Comparison {
        criterion: criterion.into(),
        champion: a,
        challenger: b,
        improvement: gain,
        n: chall.overall.pairs,
    });
    let figures = format!(
        "live {criterion} on the canary's labels: v{}: {a:.4}, v{challenger}: {b:.4} ({} pairs, {:+.1} %)",
        c.champion,
        chall.overall.pairs,
        gain * 100.0
    );
    if gain <= 0.0 {
        deps.deployer.end_shadow(&c.model)?;
        c.step(
            CycleState::Abandoned,
            format!(
                "{figures}: not better; the shadow ends, v{} stays champion",
                c.champion
            ),
            now,
        );
        return Ok(());
    }
    // The comparison took a while: someone may have promoted a version
    // meanwhile.
    let aliases = deps.models.model(&c.model)?.aliases;
    if let Some(now_champion) = champion_moved(&aliases, c.champion) {
        return abandon_for_a_new_champion(deps, c, now_champion, "was compared with", now);
    }
    let alias = aliases.get("champion").copied();
    // The devices first, then the alias: a promotion that fails midway
    // puts the champion back where it had moved, so the alias and what
    // the fleet runs never disagree. The alias moves only from where it
    // was just read, so a promotion by hand during this one wins, and the
    // devices are given the version it chose.
    // Marked first: should the record of the promotion not complete, the
    // next check finishes it (and tells it from one made by hand).
    c.promoting_ns = Some(now);
    save(deps, c)?;
    let serving = deps.deployer.serving(&c.model)?;
    let promoted = deps
        .deployer
        .promote(&c.model, challenger, &serving)
        .and_then(|()| {
            deps.models
                .move_alias(&c.model, "champion", alias, challenger)
        });
    // Where the alias stands now, when this promotion may not have moved
    // it (refused, or an error that may have come after the commit).
    let champion_now = || {
        deps.models
            .model(&c.model)
            .map(|m| m.aliases.get("champion").copied())
    };
    let moved_anyway = || matches!(champion_now(), Ok(Some(v)) if v == challenger);
    let promoted = match promoted {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) if moved_anyway() => {
            // Moved to the challenger all the same (by hand, or this
            // promotion's commit whose answer was lost): promoted.
            deps.deployer.promote(&c.model, challenger, &serving)
        }
        Ok(false) => {
            // Promoted by hand to another version during this promotion:
            // that one stays, and goes back on the devices.
            let now_champion = champion_now()?.unwrap_or(c.champion);
            return abandon_for_a_new_champion(
                deps,
                c,
                now_champion,
                "was being promoted over",
                now,
            );
        }
        Err(e) => Err(e),
    };
    if let Err(e) = promoted {
        let champion = c.champion;
        return Err(match deps.deployer.promote(&c.model, champion, &serving) {
            Ok(()) => Error::Unavailable(format!(
                "promoting v{challenger} failed, v{champion} is back on every device: {e}"
            )),
            Err(undo) => Error::Unavailable(format!(
                "promoting v{challenger} failed ({e}), and putting v{champion} back failed too: {undo}"
            )),
        });
    }
    deps.audit.record(
        crate::audit::Event::ok(
            "retrainer",
            "model.promote",
            format!("{}@{challenger}", c.model),
        )
        .detail(serde_json::json!({"cycle": c.id, "devices": serving.len()})),
    )?;
    c.step(
        CycleState::Promoted,
        format!(
            "{figures}: v{challenger} is champion and serves on {} devices",
            serving.len()
        ),
        now,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{S, champion_moved, ends_the_cycle, fresh_window, overdue, submitted_before};
    use crate::error::Error;
    use crate::retrain::cycle::Cycle;

    #[test]
    fn a_job_submitted_before_a_crash_is_found_and_no_other() {
        let cycle: Cycle = serde_json::from_value(serde_json::json!({
            "id": 4, "model": "rul", "state": "collecting",
            "trigger": {"kind": "drift", "at_ns": 900, "detail": "psi",
                        "devices": [], "findings": []},
            "champion": 2, "devices": [], "canary": [], "steps": [],
            "created_ns": 1_000, "updated_ns": 1_000,
        }))
        .unwrap();
        let job = |id: i64, kind: &str, trigger: &str, created_ns: i64| {
            serde_json::from_value::<strata_store::Job>(serde_json::json!({
                "id": id, "kind": kind, "spec": {"trigger": trigger},
                "state": "queued", "progress": 0.0, "message": "",
                "attempts": 0, "created_ns": created_ns,
            }))
            .unwrap()
        };
        let ours = cycle.lineage_trigger();
        let is_ours = |s: &serde_json::Value| s["trigger"] == ours.as_str();
        // Newest first: another cycle's, a backtest, ours, then one from
        // before the cycle started with the same trigger (an earlier cycle
        // of the same id, its rows long gone).
        let newest = [
            job(9, "train", "drift:cycle-5", 3_000),
            job(8, "backtest", &ours, 2_500),
            job(7, "train", &ours, 2_000),
            job(3, "train", &ours, 500),
        ];
        let found = submitted_before(&newest, &cycle, "train", is_ours).map(|j| j.id);
        assert_eq!(found, Some(7));
        assert_eq!(
            submitted_before(&newest[..2], &cycle, "train", is_ours).map(|j| j.id),
            None
        );
        assert_eq!(
            submitted_before(&newest[3..], &cycle, "train", is_ours).map(|j| j.id),
            None
        );
    }

    #[test]
    fn a_job_is_overdue_max_job_s_after_its_step_or_its_last_start() {
        let p: super::RetrainPolicy =
            toml::from_str("model = \"rul\"\nevery_s = 60\nmax_job_s = 100\n").unwrap();
        let cycle: Cycle = serde_json::from_value(serde_json::json!({
            "id": 4, "model": "rul", "state": "training",
            "trigger": {"kind": "schedule", "at_ns": 0, "detail": "", "devices": [], "findings": []},
            "champion": 2, "devices": [], "canary": [],
            "steps": [{"state": "training", "at_ns": 1_000 * S, "message": "job 7"}],
            "created_ns": 0, "updated_ns": 1_000 * S,
        }))
        .unwrap();
        let job = |started: Option<i64>| {
            serde_json::from_value::<strata_store::Job>(serde_json::json!({
                "id": 7, "kind": "train", "spec": {}, "state": "running", "progress": 0.5,
                "message": "", "attempts": 1, "created_ns": 1_000 * S, "started_ns": started,
            }))
            .unwrap()
        };
        // Still queued: counted from the step.
        assert!(!overdue(&job(None), &cycle, &p, 1_100 * S));
        assert!(overdue(&job(None), &cycle, &p, 1_100 * S + 1));
        // Started again after a restart at 1,050 s: counted from then.
        assert!(!overdue(&job(Some(1_050 * S)), &cycle, &p, 1_150 * S));
        assert!(overdue(&job(Some(1_050 * S)), &cycle, &p, 1_150 * S + 1));
    }

    #[test]
    fn the_held_out_share_is_of_the_data_since_the_evidence() {
        let p: super::RetrainPolicy = toml::from_str(
            "model = \"rul\"\nevery_s = 60\ntrain_window_s = 100\neval_share = 0.25\n",
        )
        .unwrap();
        let now = 1_000 * S;
        // A schedule: the newest quarter of the whole window, less the gap.
        assert_eq!(fresh_window(&p, None, 5 * S, now), [900 * S, 970 * S, now]);
        // Drift seen from 40 s ago: 30 s of it trained on (less the gap),
        // the newest 10 s held out.
        assert_eq!(
            fresh_window(&p, Some(960 * S), 5 * S, now),
            [900 * S, 985 * S, now]
        );
        // Evidence older than the window counts from the window's start;
        // a gap longer than the training part leaves it empty, not reversed.
        assert_eq!(fresh_window(&p, Some(0), 0, now), [900 * S, 975 * S, now]);
        assert_eq!(
            fresh_window(&p, Some(999 * S), 150 * S, now),
            [900 * S, 900 * S, now]
        );
    }

    #[test]
    fn a_champion_promoted_during_the_shadow_is_noticed() {
        let champion =
            |v: u32| BTreeMap::from([("champion".to_string(), v), ("canary".to_string(), 9)]);
        assert_eq!(champion_moved(&champion(5), 5), None);
        assert_eq!(champion_moved(&champion(7), 5), Some(7));
        // Without a champion alias the cycle started from the latest
        // version; registering the challenger is not a promotion.
        assert_eq!(champion_moved(&BTreeMap::new(), 5), None);
    }

    #[test]
    fn only_a_store_down_for_the_moment_leaves_a_cycle_going() {
        let busy = strata_store::Error::Sqlite {
            context: "cannot read the labels".into(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ),
        };
        assert!(!ends_the_cycle(&Error::Store(busy)));
        let gone = strata_store::Error::NotFound("no job 7".into());
        assert!(ends_the_cycle(&Error::Store(gone)));
        assert!(ends_the_cycle(&Error::Conflict(
            "the training failed".into()
        )));
    }
}
