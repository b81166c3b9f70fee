//! The device twin at the edge: applies the models the hub deploys.
//!
//! The hub publishes the desired twin (retained) on `down/twin`. For each
//! assigned model the agent downloads the artifact from the hub over HTTP
//! (device credential, Basic auth) unless it has it, checks size and
//! SHA-256, loads it with the edge runtime, and swaps the new model set
//! into the processing thread in one step. A model that fails to download
//! or load is reported as failed and the others still run; the models of
//! the agent's own config file keep running unless the hub assigns a model
//! of the same name. The applied document is kept in `twin.json`, so a
//! restarted agent runs its deployed models before it reaches the hub.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_ota::{Artifact, ArtifactCheck, Kind, Refusal, SignedUpdate};
use strata_pipeline::{Pipeline, PipelineConfig, VectorSchema};
use strata_proto::{
    DesiredTwin, DeviceId, ModelAssignment, ModelReport, ReportedTwin, UpdateReport,
};
use tokio::sync::{Notify, watch};

use crate::health::HealthState;
use crate::identity::base64;
use crate::inference::{ModelConfig, Models};
use crate::uplink::Backoff;

/// File in the data directory holding the last applied desired twin.
pub const TWIN_FILE: &str = "twin.json";

/// The latest reported twin, waiting for the uplink to publish it (on
/// every connect and whenever it changes).
#[derive(Debug, Default)]
pub struct Reported {
    latest: Mutex<Option<Vec<u8>>>,
    /// Woken when `latest` changes.
    pub changed: Notify,
}

impl Reported {
    /// The document to publish, if any.
    pub fn latest(&self) -> Option<Vec<u8>> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, twin: &ReportedTwin) {
        let json = serde_json::to_vec(twin).expect("JSON of a twin");
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(json);
        self.changed.notify_one();
    }
}

/// A change for the processing thread.
pub enum Swap {
    /// New models over the same pipeline.
    Models(Models),
    /// A new pipeline (a config release) and the models bound to it.
    Pipeline(Box<Option<Pipeline>>, Models),
}

/// What applying a twin needs.
pub struct TwinApplier {
    /// The device.
    pub device: DeviceId,
    /// Its credential, for downloads.
    pub credential: String,
    /// The hub's HTTP base URL.
    pub http: Option<String>,
    /// The identity directory, whose `ca.pem` an `https://` hub's
    /// certificate must chain to.
    pub tls_dir: Option<PathBuf>,
    /// The agent's data directory (artifacts go to `models/`).
    pub data_dir: PathBuf,
    /// Where relative model paths of the config file are resolved.
    pub base_dir: PathBuf,
    /// Models from the config file.
    pub configured: Vec<ModelConfig>,
    /// The `[pipeline]` of the config file (what runs when no config
    /// release is committed).
    pub file_pipeline: Option<PipelineConfig>,
    /// The pipeline the processing thread runs now.
    pub running: Mutex<Option<PipelineConfig>>,
    /// Where new model sets and pipelines go (the processing thread).
    pub swap: std::sync::mpsc::Sender<Swap>,
    /// Health, told about the new models by the processor.
    pub health: Arc<HealthState>,
    /// The report slot the uplink publishes.
    pub reported: Arc<Reported>,
    /// The keys signed updates must be signed with.
    pub trust: strata_ota::Trust,
    /// This device as release targets see it.
    pub identity: strata_ota::Device,
    /// How long a newly installed model must run well before it is
    /// committed.
    pub health_window: Duration,
    /// Install hooks for bundle releases, by name.
    pub hooks: std::collections::BTreeMap<String, crate::bundle::HookConfig>,
    /// Refuse the twin's unsigned `models` (`[ota] signed_only`).
    pub signed_only: bool,
}

impl TwinApplier {
    /// Applies the twin kept from the last run, then every desired twin the
    /// uplink receives; retries failed downloads with backoff.
    pub async fn run(self, mut desired: watch::Receiver<Option<Vec<u8>>>) {
        let mut current: Option<DesiredTwin> = std::fs::read(self.data_dir.join(TWIN_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut applied_ok = false;
        // The newest desired twin, as a pass looks at it before a commit.
        let latest = desired.clone();
        // A bundle whose install a power cut interrupted goes back to the
        // committed one before anything else (slot A).
        self.recover_interrupted().await;
        if let Some(twin) = &current {
            applied_ok = self.apply(twin.clone(), false, &latest).await;
        }
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let wait = (!applied_ok && current.is_some()).then(|| backoff.next_delay());
            let retry = async move {
                match wait {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let Some(payload) = desired.borrow_and_update().clone() else { continue };
                    let twin: DesiredTwin = match serde_json::from_slice(&payload) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!(device = %self.device, "desired twin refused: {e}");
                            continue;
                        }
                    };
                    // The same twin again (the broker's retained copy at
                    // each reconnect): applied, or waiting for its retry,
                    // which a flapping link must not bring forward. Or an
                    // older one, sent by another hub replica and arrived
                    // late: it must not undo the newer.
                    if let Some(c) = current.as_ref().filter(|c| !twin.supersedes(c)) {
                        if twin.desired_version < c.desired_version {
                            tracing::info!(
                                device = %self.device,
                                "desired twin v{} ignored: v{} is newer",
                                twin.desired_version,
                                c.desired_version
                            );
                        }
                        continue;
                    }
                    backoff.reset();
                    applied_ok = self.apply(twin.clone(), true, &latest).await;
                    current = Some(twin);
                }
                _ = retry => {
                    if let Some(twin) = &current {
                        applied_ok = self.apply(twin.clone(), true, &latest).await;
                    }
                }
            }
        }
    }

    /// Applies a twin; true when every model and signed update was decided
    /// (false asks for a retry: a download failed, or the OTA state could
    /// not be read).
    async fn apply(
        &self,
        twin: DesiredTwin,
        download: bool,
        latest: &watch::Receiver<Option<Vec<u8>>>,
    ) -> bool {
        let mut reports = Vec::new();
        let mut ready = Vec::new();
        let mut retry = false;
        // Signed updates first: a model name they install is not also
        // taken from `models`.
        // Unreadable, nothing is applied (and nothing saved over it): the
        // pass is retried.
        let mut committed = match OtaState::load(&self.data_dir) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(device = %self.device, "the twin waits: {e}");
                return false;
            }
        };
        // Each model and config release this pass may run, marked before
        // any of it does (its golden cases, its load, its health window):
        // a start that finds a mark counts a stop.
        let trials: Vec<(String, u64, String)> = twin
            .updates
            .iter()
            .filter(|v| !is_bundle(v) && committed.failed_before(v).is_none())
            .filter_map(|v| {
                let (key, version) = claimed_release(v)?;
                let digest = assignment_digest(v)?;
                (committed.get(&key) != Some(version)).then_some((key, version, digest))
            })
            .collect();
        if !trials.is_empty() {
            for (key, version, digest) in &trials {
                committed
                    .trying
                    .insert(key.clone(), (*version, digest.clone()));
            }
            self.save(&committed);
        }
        let mut updates = Vec::new();
        let mut commits = Vec::new();
        // A config release decides the vectors models bind to: first.
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let fallback = committed.pipeline().or_else(|| self.file_pipeline.clone());
        let mut target = fallback.clone();
        let mut config_commit = None;
        // The digest of each release verified in this pass, by `kind/name`:
        // what a commit remembers (a rollback may bring it back).
        let mut verified: Vec<(String, String)> = Vec::new();
        // The assignment (by digest) each report answers, in order.
        let mut answered = Vec::new();
        for value in twin.updates.iter().filter(|v| kind_of(v) == Some("config")) {
            answered.push(assignment_digest(value));
            // An assignment that already failed here is not tried again
            // (e.g. after a restart): its report stands.
            if let Some(known) = committed.failed_before(value) {
                updates.push(with_campaign(known, value));
                continue;
            }
            let report = match self.config_update(value, download, &committed).await {
                Ok((key, version, floor, path, pipeline, digest)) => {
                    target = Some(pipeline);
                    let report = update_report(&key, version, None);
                    verified.extend(digest.map(|d| (key.clone(), d)));
                    config_commit = Some((key, version, floor, path));
                    report
                }
                Err(e) => {
                    let (report, again) = error_report(&self.device, e);
                    retry |= again;
                    report
                }
            };
            updates.push(UpdateReport {
                campaign: campaign_of(value),
                ..report
            });
        }
        let vectors = vectors_of(&target);
        for value in twin.updates.iter().filter(|v| kind_of(v) != Some("config")) {
            let at = updates.len();
            answered.push(assignment_digest(value));
            if let Some(known) = committed.failed_before(value) {
                // The committed model of that name keeps running.
                let key = format!("{}/{}", known.kind, known.name);
                ready.extend(committed.running(&key));
                updates.push(with_campaign(known, value));
                continue;
            }
            if is_bundle(value) {
                let (report, again) = self.bundle_update(value, download, &mut committed).await;
                updates.push(report);
                retry |= again;
            } else {
                match self.update(value, download, &committed, &vectors).await {
                    Ok(u) => {
                        updates.push(update_report(&u.key, u.version, None));
                        verified.extend(u.release.clone().map(|d| (u.key.clone(), d)));
                        commits.push((u.key, u.version, u.floor, u.config.name.clone()));
                        ready.push(u.config);
                    }
                    Err(e) => {
                        // The committed version keeps running.
                        ready.extend(committed.running(e.key()));
                        let (report, again) = error_report(&self.device, e);
                        retry |= again;
                        updates.push(report);
                    }
                }
            }
            // Which campaign asked, so the hub counts this answer there.
            if let Some(u) = updates.get_mut(at) {
                u.campaign = campaign_of(value);
            }
        }
        let installed: Vec<String> = ready.iter().map(|c: &ModelConfig| c.name.clone()).collect();
        // The direct deployments that a first signed release of their name
        // replaces now: its rollback brings them back, as they ran before.
        let mut replaced = Vec::new();
        for (key, _, _, name) in &commits {
            if committed.running(key).is_some() {
                continue;
            }
            let Some(m) = twin.models.iter().find(|m| !m.shadow && &m.name == name) else {
                continue;
            };
            // Only one this agent would run: never an unsigned model on an
            // agent that takes signed releases only.
            if direct_refusal(self.signed_only, m, &committed).is_some() {
                continue;
            }
            if let Ok(path) = self.artifact(m, false).await
                && let Ok(config) = self.check_one(m, &path, &vectors).await
            {
                replaced.push(config);
            }
        }
        // A shadow challenger runs beside whatever serves under its name.
        for m in twin
            .models
            .iter()
            .filter(|m| m.shadow || !installed.contains(&m.name))
        {
            let result = match direct_refusal(self.signed_only, m, &committed) {
                Some(refused) => Err(refused),
                None => match self.artifact(m, download).await {
                    Ok(path) => self.check_one(m, &path, &vectors).await,
                    Err(e) => {
                        // Unreachable now, the pass is tried again; a
                        // content that is not the announced one is final
                        // for this twin (each try would download it all).
                        retry |= matches!(e, ArtifactError::Unavailable(_));
                        Err(e.to_string())
                    }
                },
            };
            match result {
                Ok(config) => {
                    ready.push(config);
                    reports.push(report(m, None));
                }
                Err(e) => {
                    tracing::warn!(device = %self.device, model = m.name, version = m.version, "deployment failed: {e}");
                    reports.push(report(m, Some(e)));
                }
            }
        }
        let assigned: Vec<&str> = ready
            .iter()
            .filter(|c| !c.shadow)
            .map(|c| c.name.as_str())
            .collect();
        let unassigned: Vec<ModelConfig> = self
            .configured
            .iter()
            .filter(|c| !assigned.contains(&c.name.as_str()))
            .map(|c| self.file_model(c))
            .collect();
        let mut configs = crate::inference::fitting(&unassigned, Path::new("/"), &vectors);
        configs.extend(ready);
        match load_models(configs.clone(), vectors.clone()).await {
            Ok(models) => {
                let stats = models.stats();
                let before = (
                    self.health
                        .pipeline_outputs
                        .load(std::sync::atomic::Ordering::Relaxed),
                    self.health.readings_in(),
                );
                // A newly installed version must prove itself on live data
                // before it is committed; else the committed one comes back.
                let config_entry = config_commit
                    .as_ref()
                    .map(|(key, version, floor, _)| (key.clone(), *version, *floor, String::new()));
                let fresh: Vec<&(String, u64, u64, String)> = commits
                    .iter()
                    .chain(config_entry.iter())
                    .filter(|(key, version, _, _)| committed.get(key) != Some(*version))
                    .collect();
                self.send(&target, running.as_ref(), models);
                let mut unhealthy = if fresh.is_empty() {
                    Vec::new()
                } else {
                    self.health_window(&fresh, &stats, before, (latest, &twin))
                        .await
                };
                // A twin that arrived meanwhile and no longer names a
                // release withdrew it (e.g. an aborted campaign): it goes
                // back rather than being committed, and raising the floor,
                // after the withdrawal. By release, not by assignment: the
                // hub signs a new assignment of the same release as the
                // old one nears its expiry.
                if let Some(newer) = newer_twin(latest, &twin) {
                    for (key, version, _, _) in &fresh {
                        if withdraws(&newer, key, *version)
                            && !unhealthy.iter().any(|(k, _)| k == key)
                        {
                            unhealthy
                                .push((key.clone(), "withdrawn during its health window".into()));
                        }
                    }
                }
                if !unhealthy.is_empty() {
                    let config_failed = unhealthy.iter().any(|(k, _)| k.starts_with("config/"));
                    let back_pipeline = if config_failed {
                        fallback.clone()
                    } else {
                        target.clone()
                    };
                    let back = self
                        .roll_back(
                            &configs,
                            &unhealthy,
                            &committed,
                            &replaced,
                            &back_pipeline,
                            &target,
                        )
                        .await;
                    for (key, why) in &unhealthy {
                        for u in updates
                            .iter_mut()
                            .filter(|u| &format!("{}/{}", u.kind, u.name) == key)
                        {
                            // Rolled back only if what ran before runs again.
                            let (state, error) = match &back {
                                Ok(()) => ("rolled_back", why.clone()),
                                Err(e) => (
                                    "failed",
                                    format!("{why}; what ran before cannot run again: {e}"),
                                ),
                            };
                            u.state = state.into();
                            u.reason = Some("health_check".into());
                            u.error = Some(error);
                        }
                    }
                }
                // The anti-rollback version moves only once the new
                // version ran well.
                for (key, version, floor, name) in &commits {
                    if unhealthy.iter().any(|(k, _)| k == key) {
                        continue;
                    }
                    if let Some(config) = configs.iter().find(|c| &c.name == name) {
                        committed.set(key, *version, *floor, config);
                        committed.remember_release(key, verified_digest(&verified, key));
                    }
                }
                if let Some((key, version, floor, path)) = &config_commit
                    && !unhealthy.iter().any(|(k, _)| k == key)
                {
                    committed.set_config(key, *version, *floor, path);
                    committed.remember_release(key, verified_digest(&verified, key));
                }
                // Decided: the marks of this pass go (and the count of
                // stops of what committed).
                committed.trying.clear();
                for (key, version, _, _) in &fresh {
                    if committed.get(key) == Some(*version) {
                        committed.interruptions.remove(&release_id(key, *version));
                    }
                }
                if (!commits.is_empty() || config_commit.is_some())
                    && let Err(e) = committed.save(&self.data_dir)
                {
                    tracing::warn!(device = %self.device, "cannot keep the committed versions: {e}");
                }
            }
            Err(e) => {
                // Each model loaded alone; together they clash (e.g. two
                // outputs of one name): keep what runs now.
                tracing::warn!(device = %self.device, "the deployed model set does not load: {e}");
                for r in &mut reports {
                    r.state = "failed".into();
                    r.error = Some(e.clone());
                }
                // Only the releases new in this pass are to blame: one the
                // device committed before ran with the rest, and stays
                // committed (failed, it would be remembered as failed for
                // good and never installed again).
                for u in updates.iter_mut().filter(|u| {
                    u.state == "committed"
                        && committed.get(&format!("{}/{}", u.kind, u.name)) != Some(u.version)
                }) {
                    u.state = "failed".into();
                    u.reason = Some("incompatible".into());
                    u.error = Some(e.clone());
                }
            }
        }
        // Remember what failed for good, for the assignments the twin
        // still names.
        let state = match OtaState::load(&self.data_dir) {
            Ok(mut state) => {
                let mut changed = state.remember_failures(&answered, &updates);
                // The pass is over: nothing of it runs unproven. Stops are
                // counted on only for releases the hub's twin still names
                // (not the one kept from the last run, applied first at a
                // start, which may predate the release that stopped it).
                changed |= !state.trying.is_empty();
                state.trying.clear();
                if download {
                    let named: Vec<String> = twin
                        .updates
                        .iter()
                        .filter_map(claimed_release)
                        .map(|(key, version)| release_id(&key, version))
                        .collect();
                    let counted = state.interruptions.len();
                    state.interruptions.retain(|id, _| named.contains(id));
                    changed |= state.interruptions.len() != counted;
                }
                if changed {
                    self.save(&state);
                }
                Some(state)
            }
            Err(e) => {
                tracing::warn!(device = %self.device, "failures not remembered: {e}");
                None
            }
        };
        let ok = !retry && state.is_some();
        if ok && let Some(state) = state {
            let json = serde_json::to_vec(&twin).expect("JSON of a twin");
            if let Err(e) = crate::write_atomic(&self.data_dir.join(TWIN_FILE), &json) {
                tracing::warn!(device = %self.device, "cannot keep the applied twin: {e}");
            }
            // Everything the twin names runs or was decided: what it does
            // not name, and no committed release holds, is not needed.
            prune_artifacts(&self.data_dir, &needed_artifacts(&twin, &state));
        }
        self.reported.set(&ReportedTwin {
            desired_version: twin.desired_version,
            models: reports,
            updates,
        });
        ok
    }

    /// Watches newly installed models for the health window: each must
    /// never fail and must have run at least once. A model that has not
    /// run yet (the machine is busy) gets up to twice the window more to
    /// run once, counted from when readings come in: a line idle since
    /// the switch (a weekend, a stop) has given it nothing to run on, so
    /// the window waits for it, unless a newer twin withdraws every
    /// release still waiting meanwhile. Returns the `kind/name` of those
    /// that did not pass, with why. `before` is the pipeline's outputs and
    /// the sources' readings at the switch; `twin`, where newer twins
    /// arrive and the one applied.
    async fn health_window(
        &self,
        fresh: &[&(String, u64, u64, String)],
        stats: &[(String, Arc<crate::health::ModelStats>)],
        before: (u64, u64),
        twin: (&watch::Receiver<Option<Vec<u8>>>, &DesiredTwin),
    ) -> Vec<(String, String)> {
        let (outputs_before, readings_before) = before;
        use std::sync::atomic::Ordering::Relaxed;
        // A model: its runs and errors; a pipeline (no model name): the
        // frames it turned into output since the switch.
        let counts = |name: &str| {
            if name.is_empty() {
                let outputs = self.health.pipeline_outputs.load(Relaxed);
                return (outputs.saturating_sub(outputs_before), 0);
            }
            stats
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| (s.runs.load(Relaxed), s.errors.load(Relaxed)))
                .unwrap_or((0, 0))
        };
        // Whether every release still waiting for its first run is
        // withdrawn by a newer twin: an idle line then has nothing left to
        // wait for. (The twin is read once per look, not per release.)
        let all_waiting_withdrawn = || {
            newer_twin(twin.0, twin.1).is_some_and(|newer| {
                fresh
                    .iter()
                    .filter(|(_, _, _, name)| counts(name) == (0, 0))
                    .all(|(key, version, _, _)| withdraws(&newer, key, *version))
            })
        };
        tokio::time::sleep(self.health_window).await;
        let mut patience = Patience::new(self.health_window * 2, readings_before);
        let mut told = false;
        while fresh.iter().any(|(_, _, _, name)| counts(name) == (0, 0))
            && !patience.over(self.health.readings_in(), tokio::time::Instant::now())
        {
            if patience.idle && !told {
                told = true;
                tracing::info!(
                    device = %self.device,
                    "no reading has come in since the update: its health window waits for the line to run"
                );
            }
            if patience.idle && all_waiting_withdrawn() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A release a newer twin withdraws gets the withdrawal's verdict,
        // not this window's.
        let newer = newer_twin(twin.0, twin.1);
        let withdrawn = |key: &str, version: u64| {
            newer
                .as_ref()
                .is_some_and(|newer| withdraws(newer, key, version))
        };
        let mut unhealthy = Vec::new();
        for (key, version, _, name) in fresh {
            let (runs, errors) = counts(name);
            let why = if errors > 0 {
                Some(format!(
                    "{errors} of {runs} inferences failed in the health window"
                ))
            } else if runs == 0 && withdrawn(key, *version) {
                // Never given data to run on: rolled back as withdrawn by
                // the caller, not failed here.
                None
            } else if runs == 0 && name.is_empty() {
                Some(format!(
                    "the new pipeline gave no output in {:.1} s",
                    self.health_window.as_secs_f64() * 3.0
                ))
            } else if runs == 0 {
                Some(format!(
                    "no inference ran in {:.1} s after the switch",
                    self.health_window.as_secs_f64() * 3.0
                ))
            } else {
                None
            };
            if let Some(why) = why {
                tracing::warn!(device = %self.device, update = key, version, "rolling back: {why}");
                unhealthy.push((key.clone(), why));
            }
        }
        unhealthy
    }

    /// Puts what ran before `unhealthy` updates back in place of the new
    /// ones: the committed signed versions, else the direct deployments
    /// they `replaced`, else the config file's models.
    async fn roll_back(
        &self,
        configs: &[ModelConfig],
        unhealthy: &[(String, String)],
        committed: &OtaState,
        replaced: &[ModelConfig],
        pipeline: &Option<PipelineConfig>,
        running: &Option<PipelineConfig>,
    ) -> Result<(), String> {
        let names: Vec<String> = unhealthy
            .iter()
            .filter_map(|(key, _)| key.split_once('/').map(|(_, n)| n.to_owned()))
            .collect();
        let mut back: Vec<ModelConfig> = configs
            .iter()
            .filter(|c| !names.contains(&c.name))
            .cloned()
            .collect();
        for (key, _) in unhealthy {
            let name = key.split_once('/').map_or("", |(_, n)| n);
            match committed.running(key) {
                Some(before) => back.push(before),
                // Nothing signed committed under that name yet: the direct
                // deployment the update replaced, or the config file's model.
                None => match replaced.iter().find(|c| c.name == name) {
                    Some(direct) => back.push(direct.clone()),
                    None => back.extend(self.file_models_named(name)),
                },
            }
        }
        // The config file's models that the new pipeline left out run again
        // under the pipeline that comes back, where nothing serves their name.
        let vectors = vectors_of(pipeline);
        let missing: Vec<ModelConfig> = self
            .configured
            .iter()
            .filter(|c| {
                !back
                    .iter()
                    .any(|b| b.name == c.name && (!b.shadow || c.shadow))
            })
            .map(|c| self.file_model(c))
            .collect();
        back.extend(crate::inference::fitting(
            &missing,
            Path::new("/"),
            &vectors,
        ));
        match load_models(back, vectors).await {
            Ok(models) => {
                self.send(pipeline, running.as_ref(), models);
                Ok(())
            }
            Err(e) => {
                tracing::error!(device = %self.device, "cannot roll back; the new version keeps running: {e}");
                Err(e)
            }
        }
    }

    /// A model of the config file, its path resolved.
    fn file_model(&self, c: &ModelConfig) -> ModelConfig {
        ModelConfig {
            path: self.base_dir.join(&c.path),
            ..c.clone()
        }
    }

    /// The config file's models named `name`.
    fn file_models_named(&self, name: &str) -> Vec<ModelConfig> {
        self.configured
            .iter()
            .filter(|c| c.name == name)
            .map(|c| self.file_model(c))
            .collect()
    }

    /// Sends models to the processing thread, with `pipeline` when it is
    /// not the one running.
    fn send(
        &self,
        pipeline: &Option<PipelineConfig>,
        running: Option<&PipelineConfig>,
        models: Models,
    ) {
        if pipeline.as_ref() == running {
            let _ = self.swap.send(Swap::Models(models));
            return;
        }
        match pipeline.as_ref().map(Pipeline::new).transpose() {
            Ok(p) => {
                let _ = self.swap.send(Swap::Pipeline(Box::new(p), models));
                *self.running.lock().unwrap_or_else(|e| e.into_inner()) = pipeline.clone();
            }
            // Checked when the release was read; kept as it is otherwise.
            Err(e) => tracing::error!(device = %self.device, "cannot start the pipeline: {e}"),
        }
    }

    /// Verifies a config release and reads its `[pipeline]`.
    async fn config_update(
        &self,
        value: &serde_json::Value,
        download: bool,
        committed: &OtaState,
    ) -> Result<(String, u64, u64, PathBuf, PipelineConfig, Option<String>), UpdateError> {
        let signed: SignedUpdate = serde_json::from_value(value.clone()).map_err(|e| {
            UpdateError::Refused(
                "config/?".into(),
                0,
                Refusal::Malformed {
                    what: "update",
                    detail: e.to_string(),
                },
            )
        })?;
        let (key, version) = peek(&signed.release).unwrap_or(("config/?".into(), 0));
        if committed.get(&key) == Some(version)
            && let Some(path) = committed.configs.get(&key)
            && let Ok(pipeline) = read_pipeline(path)
        {
            let floor = committed.floor(&key).unwrap_or(version);
            return Ok((key, version, floor, path.clone(), pipeline, None));
        }
        let r = self
            .check_signed(&signed, committed)
            .map_err(|refusal| UpdateError::Refused(key.clone(), version, refusal))?;
        let path = match self
            .artifact_at(&r.artifact, "configs", &r.name, download)
            .await
        {
            Ok(path) => path,
            Err(ArtifactError::Refused(refusal)) => {
                return Err(UpdateError::Refused(key, version, refusal));
            }
            Err(ArtifactError::Unavailable(e)) => return Err(UpdateError::Retry(key, version, e)),
        };
        let pipeline = read_pipeline(&path)
            .map_err(|e| UpdateError::Failed(key.clone(), version, "invalid", e))?;
        let digest = signed.release.digest();
        Ok((key, version, r.floor(), path, pipeline, Some(digest)))
    }

    /// Verifies a signed update and makes its model ready to load.
    async fn update(
        &self,
        value: &serde_json::Value,
        download: bool,
        committed: &OtaState,
        vectors: &[VectorSchema],
    ) -> Result<ReadyUpdate, UpdateError> {
        let unknown = || ("?".to_owned(), 0);
        let signed: SignedUpdate = serde_json::from_value(value.clone()).map_err(|e| {
            let (k, v) = unknown();
            UpdateError::Refused(
                k,
                v,
                Refusal::Malformed {
                    what: "update",
                    detail: e.to_string(),
                },
            )
        })?;
        // The committed version, named again (e.g. the twin kept from before
        // a restart, its assignment since expired): it was verified when it
        // was installed, and keeps running as it is.
        if let Some((key, version)) = peek(&signed.release)
            && committed.get(&key) == Some(version)
            && let Some(config) = committed.running(&key)
        {
            let floor = committed.floor(&key).unwrap_or(version);
            return Ok(ReadyUpdate {
                config,
                key,
                version,
                floor,
                release: None,
            });
        }
        let r = self.check_signed(&signed, committed).map_err(|refusal| {
            let (k, v) = peek(&signed.release).unwrap_or_else(unknown);
            UpdateError::Refused(k, v, refusal)
        })?;
        let key = key_of(&r);
        let refuse = |refusal| UpdateError::Refused(key.clone(), r.version, refusal);
        if r.kind != Kind::Model {
            return Err(refuse(Refusal::Malformed {
                what: "release",
                detail: format!(
                    "this agent installs model releases; {} releases are not supported yet",
                    r.kind.as_str()
                ),
            }));
        }
        let details = r.model.clone().ok_or_else(|| {
            refuse(Refusal::Malformed {
                what: "release",
                detail: "a model release without model details".into(),
            })
        })?;
        let details_golden = details.golden.clone();
        let m = ModelAssignment {
            name: r.name.clone(),
            version: u32::try_from(r.version).unwrap_or(u32::MAX),
            sha256: r.artifact.sha256.clone(),
            size: r.artifact.size,
            vector: details.vector,
            features: details.features,
            // Signed releases carry no reference profile (yet): no sketches.
            drift: None,
            shadow: false,
        };
        let path = match self.artifact(&m, download).await {
            Ok(path) => path,
            Err(ArtifactError::Refused(refusal)) => return Err(refuse(refusal)),
            Err(ArtifactError::Unavailable(e)) => {
                return Err(UpdateError::Retry(key, r.version, e));
            }
        };
        // Loading and running a model takes a while: off the runtime's
        // thread, which the uplink and the sources share.
        let checked = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || golden_check(&path, &details_golden))
                .await
                .unwrap_or_else(|e| Err(format!("the golden cases could not run: {e}")))
        };
        if let Err(e) = checked {
            return Err(UpdateError::Failed(key, r.version, "health_check", e));
        }
        // E.g. the model reads a vector this device's pipeline lacks.
        let config = self
            .check_one(&m, &path, vectors)
            .await
            .map_err(|e| UpdateError::Failed(key.clone(), r.version, "incompatible", e))?;
        Ok(ReadyUpdate {
            config,
            key,
            version: r.version,
            floor: r.floor(),
            release: Some(signed.release.digest()),
        })
    }

    /// Every check of a signed update against this device's trust, identity
    /// and anti-rollback floors; the release when it passes.
    fn check_signed(
        &self,
        signed: &SignedUpdate,
        committed: &OtaState,
    ) -> Result<strata_ota::Release, Refusal> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        // Anything below the floor of the committed release is a rollback.
        strata_ota::verify(
            &self.trust,
            &self.identity,
            &signed.assignment,
            &signed.release,
            |r| committed.floor(&key_of(r)),
            |digest| committed.committed_release(digest),
            now,
        )
        .map(|v| v.release)
    }

    /// Verifies, downloads, installs (with the hook the release names),
    /// waits the health window, runs the hook's check, and commits, or
    /// installs the committed bundle again. Returns the report, and whether
    /// to retry later (the artifact could not be fetched).
    async fn bundle_update(
        &self,
        value: &serde_json::Value,
        download: bool,
        committed: &mut OtaState,
    ) -> (UpdateReport, bool) {
        let refused = |key: &str, version, refusal: Refusal| {
            update_report(key, version, Some((refusal.code(), refusal.to_string())))
        };
        let failed = |key: &str, version, state: &str, code: &str, e: String| {
            let mut r = update_report(key, version, Some((code, e)));
            r.state = state.into();
            r
        };
        let signed: SignedUpdate = match serde_json::from_value(value.clone()) {
            Ok(s) => s,
            Err(e) => {
                let malformed = Refusal::Malformed {
                    what: "update",
                    detail: e.to_string(),
                };
                return (refused("bundle/?", 0, malformed), false);
            }
        };
        let (key, version) = peek(&signed.release).unwrap_or(("bundle/?".into(), 0));
        if committed.get(&key) == Some(version) && committed.bundles.contains_key(&key) {
            return (update_report(&key, version, None), false);
        }
        let r = match self.check_signed(&signed, committed) {
            Ok(r) => r,
            Err(refusal) => return (refused(&key, version, refusal), false),
        };
        let Some(hook_name) = r.bundle.as_ref().map(|b| b.install_hook.clone()) else {
            let malformed = Refusal::Malformed {
                what: "release",
                detail: "a bundle release without an install hook".into(),
            };
            return (refused(&key, version, malformed), false);
        };
        let Some(hook) = self.hooks.get(&hook_name).cloned() else {
            let e =
                format!("this agent has no install hook {hook_name:?} ([ota.hooks.{hook_name}])");
            return (failed(&key, version, "failed", "incompatible", e), false);
        };
        let file = match self
            .artifact_at(&r.artifact, "bundles", &r.name, download)
            .await
        {
            Ok(path) => path,
            Err(ArtifactError::Refused(refusal)) => {
                return (refused(&key, version, refusal), false);
            }
            Err(ArtifactError::Unavailable(e)) => {
                return (update_report(&key, version, Some(("unavailable", e))), true);
            }
        };
        // Marked before the hook runs: a power cut from here on brings the
        // committed bundle back at the next start.
        committed.installing.insert(key.clone(), version);
        if let Some(digest) = assignment_digest(value) {
            committed.installing_assignment.insert(key.clone(), digest);
        }
        if let Err(e) = committed.save(&self.data_dir) {
            // Without the mark, a power cut in the hook would go unnoticed.
            committed.clear_installing(&key);
            let e = format!("cannot record the install before running its hook: {e}");
            return (update_report(&key, version, Some(("unavailable", e))), true);
        }
        let timeout = Duration::from_secs(hook.timeout_s);
        let bundle = crate::bundle::Bundle {
            name: &r.name,
            version,
            file: &file,
        };
        if let Err(e) = self.hook(hook.install.clone(), &bundle, timeout).await {
            tracing::warn!(device = %self.device, update = key, version, "bundle install failed: {e}");
            let _ = self.restore_bundle(&key, committed).await;
            return (failed(&key, version, "failed", "install", e), false);
        }
        tokio::time::sleep(self.health_window).await;
        if let Err(e) = self.hook(hook.check.clone(), &bundle, timeout).await {
            tracing::warn!(device = %self.device, update = key, version, "bundle check failed; rolling back: {e}");
            return match self.restore_bundle(&key, committed).await {
                Ok(()) => (
                    failed(&key, version, "rolled_back", "health_check", e),
                    false,
                ),
                // Nothing was rolled back: said so, not `rolled_back`.
                Err(why) => {
                    let e = format!("{e}; {why}, so this one stays installed");
                    (failed(&key, version, "failed", "health_check", e), false)
                }
            };
        }
        committed.set_bundle(&key, version, r.floor(), &file, &hook_name);
        committed.remember_release(&key, Some(signed.release.digest()));
        self.save(committed);
        tracing::info!(device = %self.device, update = key, version, "bundle committed");
        (update_report(&key, version, None), false)
    }

    /// Runs a hook command off the runtime's threads.
    async fn hook(
        &self,
        command: Vec<String>,
        bundle: &crate::bundle::Bundle<'_>,
        timeout: Duration,
    ) -> Result<(), String> {
        let (name, version, file) = (
            bundle.name.to_owned(),
            bundle.version,
            bundle.file.to_owned(),
        );
        let dir = self.base_dir.clone();
        tokio::task::spawn_blocking(move || {
            let bundle = crate::bundle::Bundle {
                name: &name,
                version,
                file: &file,
            };
            crate::bundle::run(&command, &bundle, &dir, timeout)
        })
        .await
        .map_err(|e| format!("hook task failed: {e}"))?
    }

    /// Installs the committed bundle of `key` again (if there is one) and
    /// clears the install mark; when that install fails the mark stays, so
    /// the next start tries again. An error says why nothing was installed
    /// again (a first bundle of its name has nothing to go back to, and
    /// stays installed).
    async fn restore_bundle(&self, key: &str, committed: &mut OtaState) -> Result<(), String> {
        let outcome = match committed.bundles.get(key).cloned() {
            None => Err("no earlier bundle of this name was committed here".to_owned()),
            Some(b) => match self.hooks.get(&b.hook) {
                None => Err(format!(
                    "the committed bundle's hook {:?} is no longer configured",
                    b.hook
                )),
                Some(hook) => {
                    let bundle = crate::bundle::Bundle {
                        name: key.split_once('/').map_or(key, |(_, n)| n),
                        version: committed.get(key).unwrap_or(0),
                        file: &b.file,
                    };
                    let timeout = Duration::from_secs(hook.timeout_s);
                    if let Err(e) = self.hook(hook.install.clone(), &bundle, timeout).await {
                        tracing::error!(device = %self.device, update = key, "cannot install the committed bundle again (tried again at the next start): {e}");
                        return Err(format!(
                            "installing the committed bundle again failed (tried again at the next start): {e}"
                        ));
                    }
                    tracing::info!(device = %self.device, update = key, "committed bundle installed again");
                    Ok(())
                }
            },
        };
        committed.clear_installing(key);
        self.save(committed);
        outcome
    }

    /// At a start: counts the releases the agent stopped with while they
    /// were tried, and brings back the committed bundles whose replacement
    /// was cut short.
    async fn recover_interrupted(&self) {
        let mut state = match OtaState::load(&self.data_dir) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(device = %self.device, "interrupted updates not looked at: {e}");
                return;
            }
        };
        // Model and config releases the agent stopped with while they were
        // tried.
        let stopped = std::mem::take(&mut state.trying);
        if !stopped.is_empty() {
            self.save(&state);
        }
        for (key, (version, digest)) in stopped {
            let id = release_id(&key, version);
            let times = state.interruptions.entry(id.clone()).or_default();
            *times += 1;
            if *times < MAX_INTERRUPTIONS {
                tracing::warn!(device = %self.device, update = key, version, "the agent stopped while this version was being tried ({times} of {MAX_INTERRUPTIONS} times); it is tried again");
                self.save(&state);
                continue;
            }
            state.interruptions.remove(&id);
            tracing::warn!(device = %self.device, update = key, version, "the agent stopped {MAX_INTERRUPTIONS} times while this version was being tried; it is not tried again");
            let why =
                format!("the agent stopped {MAX_INTERRUPTIONS} times while it was being tried");
            let comes_back = state.committed.contains_key(&key);
            state.give_up_interrupted(&key, version, digest, why, comes_back);
            self.save(&state);
        }
        let cut: Vec<(String, u64)> = state.installing.clone().into_iter().collect();
        for (key, version) in cut {
            tracing::warn!(device = %self.device, update = key, version, "an install was cut short; the committed bundle comes back");
            // The version that was installing failed here: a hook or a
            // version that restarts the gateway must not be installed
            // again at every start while the twin still names it.
            if let Some(digest) = state.installing_assignment.get(&key).cloned() {
                let why = "the gateway restarted during the install or its health check";
                let comes_back = state.bundles.contains_key(&key);
                state.give_up_interrupted(&key, version, digest, why.into(), comes_back);
                self.save(&state);
            }
            let _ = self.restore_bundle(&key, &mut state).await;
        }
    }

    fn save(&self, state: &OtaState) {
        if let Err(e) = state.save(&self.data_dir) {
            tracing::warn!(device = %self.device, "cannot keep the OTA state: {e}");
        }
    }

    /// Loads one assignment alone, to name the model that fails.
    async fn check_one(
        &self,
        m: &ModelAssignment,
        path: &Path,
        vectors: &[VectorSchema],
    ) -> Result<ModelConfig, String> {
        let config = ModelConfig {
            name: m.name.clone(),
            path: path.to_owned(),
            version: m.version.to_string(),
            vector: m.vector.clone(),
            features: Some(m.features.clone()),
            outputs: None,
            drift: m.drift.clone(),
            shadow: m.shadow,
        };
        load_models(vec![config.clone()], vectors.to_vec()).await?;
        Ok(config)
    }

    /// The artifact on disk, downloaded first if needed, and checked
    /// against the size and SHA-256 it was announced with.
    async fn artifact(
        &self,
        m: &ModelAssignment,
        download: bool,
    ) -> Result<PathBuf, ArtifactError> {
        let signed = Artifact {
            sha256: m.sha256.clone(),
            size: m.size,
        };
        self.artifact_at(&signed, "models", &m.name, download).await
    }

    /// The artifact in `<data>/<dir>/`, downloaded first if needed, and
    /// checked against its signed size and SHA-256.
    async fn artifact_at(
        &self,
        signed: &Artifact,
        dir: &str,
        what: &str,
        download: bool,
    ) -> Result<PathBuf, ArtifactError> {
        let signed = Artifact {
            sha256: signed.sha256.to_ascii_lowercase(),
            size: signed.size,
        };
        if signed.sha256.len() != 64 || !signed.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ArtifactError::Refused(Refusal::Malformed {
                what: "artifact",
                detail: format!("{:?} is not a SHA-256", signed.sha256),
            }));
        }
        let extension = match dir {
            "models" => "onnx",
            "configs" => "toml",
            _ => "bin",
        };
        let dir = self.data_dir.join(dir);
        let path = dir.join(format!("{}.{extension}", signed.sha256));
        if path.exists() {
            let (kept, expected) = (path.clone(), signed.clone());
            let intact = tokio::task::spawn_blocking(move || check_file(&expected, &kept))
                .await
                .is_ok_and(|checked| checked.is_ok());
            if intact {
                return Ok(path);
            }
            tracing::warn!(path = %path.display(), "a kept artifact is damaged; fetching it again");
        }
        if !download {
            return Err(ArtifactError::Unavailable("not downloaded yet".into()));
        }
        let base = self.http.clone().ok_or_else(|| {
            ArtifactError::Unavailable(
                "the agent config has no [hub] http address to download models from".into(),
            )
        })?;
        let url = format!(
            "{}/api/v1/device/artifacts/{}",
            base.trim_end_matches('/'),
            signed.sha256
        );
        std::fs::create_dir_all(&dir).map_err(|e| {
            ArtifactError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let part = dir.join(format!("{}.part", signed.sha256));
        let (device, credential) = (self.device.to_string(), self.credential.clone());
        let (expected, partial, target) = (signed.clone(), part.clone(), path.clone());
        let tls_dir = self.tls_dir.clone();
        // Off the runtime's threads: network, hashing and a synced write.
        tokio::task::spawn_blocking(move || {
            let agent = crate::identity::hub_agent(tls_dir.as_deref(), Some(DOWNLOAD_TIMEOUT))
                .map_err(ArtifactError::Unavailable)?;
            fetch_resumable(&agent, &url, &device, &credential, &expected, &partial)?;
            // Checked while streaming; checked again, as it lies on disk,
            // before it takes the artifact's name.
            check_file(&expected, &partial).map_err(|e| {
                let _ = std::fs::remove_file(&partial);
                ArtifactError::Unavailable(format!("the downloaded artifact changed on disk: {e}"))
            })?;
            crate::rename_durably(&partial, &target).map_err(|e| {
                ArtifactError::Unavailable(format!("cannot store {}: {e}", target.display()))
            })
        })
        .await
        .map_err(|e| ArtifactError::Unavailable(format!("download task failed: {e}")))??;
        tracing::info!(device = %self.device, release = what, "artifact downloaded");
        Ok(path)
    }
}

/// Why an artifact is not ready.
#[derive(Debug)]
enum ArtifactError {
    /// Its content is not the announced one: final.
    Refused(Refusal),
    /// Not reachable now: try again later.
    Unavailable(String),
}

impl std::fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArtifactError::Refused(r) => write!(f, "refused: {r}"),
            ArtifactError::Unavailable(e) => f.write_str(e),
        }
    }
}

impl UpdateError {
    /// The update's `kind/name`.
    fn key(&self) -> &str {
        match self {
            UpdateError::Refused(key, ..)
            | UpdateError::Retry(key, ..)
            | UpdateError::Failed(key, ..) => key,
        }
    }
}

/// A verified update whose model is ready to load.
struct ReadyUpdate {
    config: ModelConfig,
    /// `kind/name`.
    key: String,
    version: u64,
    /// The anti-rollback floor its commit sets.
    floor: u64,
    /// The digest of the release it verified (none for the committed
    /// version named again, which was verified when it was installed).
    release: Option<String>,
}

/// Why a signed update did not install: (`kind/name`, version, ...).
enum UpdateError {
    /// Refused for good.
    Refused(String, u64, Refusal),
    /// Try again later.
    Retry(String, u64, String),
    /// Verified, but it does not work here: fails its golden cases
    /// (`health_check`), or does not load on this device (`incompatible`).
    Failed(String, u64, &'static str, String),
}

/// The release's golden cases, run on the model before it may run: every
/// output within 1e-4 (relative, at least 1e-4 absolute) of the signed one.
fn golden_check(path: &Path, cases: &[strata_ota::GoldenCase]) -> Result<(), String> {
    if cases.is_empty() {
        return Ok(());
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let model = strata_infer::load_model(&bytes).map_err(|e| e.to_string())?;
    let mut out = vec![0f32; model.output_len()];
    for (i, case) in cases.iter().enumerate() {
        if case.input.len() != model.input_len() || case.output.len() != out.len() {
            return Err(format!(
                "golden case {i} has {} inputs and {} outputs; the model takes {} and gives {}",
                case.input.len(),
                case.output.len(),
                model.input_len(),
                out.len()
            ));
        }
        model
            .run(&case.input, &mut out)
            .map_err(|e| format!("golden case {i}: {e}"))?;
        for (j, (&got, &want)) in out.iter().zip(&case.output).enumerate() {
            // Written so that a NaN output fails too.
            let close = (got - want).abs() <= 1e-4 * want.abs().max(1.0);
            if !close {
                return Err(format!(
                    "golden case {i}, output {j}: the model gives {got}, the release expects {want}"
                ));
            }
        }
    }
    Ok(())
}

/// The desired twin `latest` holds, when it supersedes the one `applied`.
fn newer_twin(
    latest: &watch::Receiver<Option<Vec<u8>>>,
    applied: &DesiredTwin,
) -> Option<DesiredTwin> {
    let payload = latest.borrow().clone()?;
    serde_json::from_slice::<DesiredTwin>(&payload)
        .ok()
        .filter(|t| t.supersedes(applied))
}

/// Whether `newer` withdraws the release `key` at `version`: names it in
/// none of its updates. By release, not by assignment: the hub signs a
/// new assignment of the same release as the old one nears its expiry.
fn withdraws(newer: &DesiredTwin, key: &str, version: u64) -> bool {
    !newer
        .updates
        .iter()
        .filter_map(claimed_release)
        .any(|(k, v)| k == key && v == version)
}

/// The SHA-256 of a signed update's assignment payload: which assignment
/// it is.
fn assignment_digest(update: &serde_json::Value) -> Option<String> {
    let payload = update["assignment"]["payload"].as_str()?;
    Some(strata_ota::sha256_hex(payload.as_bytes()))
}

/// The kind a signed update's release claims (unverified).
fn kind_of(update: &serde_json::Value) -> Option<&'static str> {
    let payload = update["release"]["payload"].as_str()?;
    let r: serde_json::Value = serde_json::from_str(payload).ok()?;
    ["model", "config", "bundle"]
        .into_iter()
        .find(|k| r["kind"] == *k)
}

/// The `kind/name` and version a signed update's release claims
/// (unverified: for bookkeeping only, never to install).
fn claimed_release(update: &serde_json::Value) -> Option<(String, u64)> {
    let payload = update["release"]["payload"].as_str()?;
    let r: serde_json::Value = serde_json::from_str(payload).ok()?;
    let key = format!("{}/{}", kind_of(update)?, r["name"].as_str()?);
    Some((key, r["version"].as_u64()?))
}

/// A release as counted across assignments: `kind/name@version`.
fn release_id(key: &str, version: u64) -> String {
    format!("{key}@{version}")
}

/// Whether a signed update (unverified) is a bundle's.
fn is_bundle(update: &serde_json::Value) -> bool {
    kind_of(update) == Some("bundle")
}

/// The pipeline a committed config release installed, for the agent's
/// start (it replaces the config file's `[pipeline]`). An error when the
/// committed versions cannot be read: a damaged file read as empty would
/// forget every anti-rollback floor and accept a downgrade, and the next
/// save would make that permanent; so the agent does not start, and says
/// what to do.
pub fn committed_pipeline(data_dir: &Path) -> Result<Option<PipelineConfig>, String> {
    OtaState::load(data_dir).map(|s| s.pipeline())
}

/// The `[pipeline]` of a config release's file, checked.
fn read_pipeline(path: &Path) -> Result<PipelineConfig, String> {
    #[derive(serde::Deserialize)]
    struct File {
        pipeline: PipelineConfig,
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: File = toml::from_str(&text)
        .map_err(|e| format!("not a config with a [pipeline]: {}", e.message()))?;
    Pipeline::new(&file.pipeline).map_err(|e| format!("[pipeline]: {e}"))?;
    Ok(file.pipeline)
}

/// The feature vectors a pipeline makes.
/// Loads `configs` on a blocking thread: decoding and compiling a large
/// model takes seconds on a gateway, and the agent's runtime has one thread
/// for its sources, uplink and heartbeat, which must not stop meanwhile.
async fn load_models(
    configs: Vec<ModelConfig>,
    vectors: Vec<VectorSchema>,
) -> Result<Models, String> {
    tokio::task::spawn_blocking(move || Models::load(&configs, Path::new("/"), &vectors))
        .await
        .map_err(|e| format!("loading the models failed: {e}"))?
}

fn vectors_of(pipeline: &Option<PipelineConfig>) -> Vec<VectorSchema> {
    pipeline
        .as_ref()
        .and_then(|p| Pipeline::new(p).ok())
        .map(|p| p.vector_schemas().cloned().collect())
        .unwrap_or_default()
}

/// The report of an update that did not install, and whether to retry.
fn error_report(device: &DeviceId, e: UpdateError) -> (UpdateReport, bool) {
    match e {
        UpdateError::Retry(key, version, e) => {
            tracing::info!(%device, update = key, "update postponed: {e}");
            (update_report(&key, version, Some(("unavailable", e))), true)
        }
        UpdateError::Failed(key, version, code, e) => {
            tracing::warn!(%device, update = key, version, "update fails ({code}): {e}");
            let mut report = update_report(&key, version, Some((code, e)));
            report.state = "failed".into();
            (report, false)
        }
        UpdateError::Refused(key, version, refusal) => {
            tracing::warn!(%device, update = key, version, "update refused: {refusal}");
            let report = update_report(&key, version, Some((refusal.code(), refusal.to_string())));
            (report, false)
        }
    }
}

fn key_of(r: &strata_ota::Release) -> String {
    format!("{}/{}", r.kind.as_str(), r.name)
}

/// The kind/name and version a release claims, before it is verified (for
/// reports about refused updates only).
fn peek(release: &strata_ota::Envelope) -> Option<(String, u64)> {
    let r: strata_ota::Release = serde_json::from_str(&release.payload).ok()?;
    Some((key_of(&r), r.version))
}

/// The digest of the release verified for `key` in this pass, if any.
fn verified_digest(verified: &[(String, String)], key: &str) -> Option<String> {
    verified
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, digest)| digest.clone())
}

/// The campaign an update's assignment names (unverified: for reports).
fn campaign_of(update: &serde_json::Value) -> Option<String> {
    let payload = update["assignment"]["payload"].as_str()?;
    let a: serde_json::Value = serde_json::from_str(payload).ok()?;
    a["campaign"].as_str().map(str::to_owned)
}

/// A report kept from before, answering `update`: under its campaign
/// (one recorded at a start has none), so that the campaign counts it.
fn with_campaign(mut report: UpdateReport, update: &serde_json::Value) -> UpdateReport {
    if report.campaign.is_none() {
        report.campaign = campaign_of(update);
    }
    report
}

fn update_report(key: &str, version: u64, error: Option<(&str, String)>) -> UpdateReport {
    let (kind, name) = key.split_once('/').unwrap_or(("?", key));
    UpdateReport {
        kind: kind.into(),
        name: name.into(),
        version,
        state: if error.is_none() {
            "committed"
        } else {
            "refused"
        }
        .into(),
        reason: error.as_ref().map(|(code, _)| (*code).to_owned()),
        error: error.map(|(_, e)| e),
        campaign: None,
    }
}

/// The version committed per `kind/name`, its anti-rollback floor (raised
/// only once a new version runs, never lowered) and the model it
/// installed, which keeps running when a later update is refused. Kept in
/// `ota-state.json`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct OtaState {
    committed: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    floors: std::collections::BTreeMap<String, u64>,
    /// Committed bundles: their file and hook.
    #[serde(default)]
    bundles: std::collections::BTreeMap<String, InstalledBundle>,
    /// Reports of assignments (by digest) that failed for good here.
    #[serde(default)]
    failed: std::collections::BTreeMap<String, UpdateReport>,
    /// Committed config releases: their file.
    #[serde(default)]
    configs: std::collections::BTreeMap<String, PathBuf>,
    /// Bundles whose install hook ran but which are not committed yet.
    #[serde(default)]
    installing: std::collections::BTreeMap<String, u64>,
    /// The assignment (by digest) each of those came from.
    #[serde(default)]
    installing_assignment: std::collections::BTreeMap<String, String>,
    /// Failures (by digest) recorded at a start for an install cut short,
    /// kept until a twin naming their assignment is answered: the twin
    /// kept from the last run may predate that assignment.
    #[serde(default)]
    unanswered: std::collections::BTreeSet<String>,
    #[serde(default)]
    installed: std::collections::BTreeMap<String, InstalledModel>,
    /// Model and config releases being tried (checked, loaded, in their
    /// health window), by `kind/name`: (version, assignment digest). Left
    /// at a start, the agent stopped meanwhile: a power cut, or a model
    /// that aborts the agent or exhausts its memory.
    #[serde(default)]
    trying: std::collections::BTreeMap<String, (u64, String)>,
    /// How often the agent stopped while a release was being tried (by
    /// `kind/name@version`): at [`MAX_INTERRUPTIONS`] its assignment
    /// failed, and it is not tried at every start for ever.
    #[serde(default)]
    interruptions: std::collections::BTreeMap<String, u32>,
    /// Digests of the releases committed here, per `kind/name`, newest
    /// last: a rollback may bring one back after it expired.
    #[serde(default)]
    releases: std::collections::BTreeMap<String, Vec<String>>,
}

/// How long a health window waits for a new version's first run: `extra`
/// from the first look, or from the last look at which no reading had
/// come in since the switch (an idle line gives nothing to run on).
struct Patience {
    deadline: tokio::time::Instant,
    extra: Duration,
    readings_at_switch: u64,
    /// Whether no reading had come in at the last look.
    idle: bool,
}

impl Patience {
    fn new(extra: Duration, readings_at_switch: u64) -> Patience {
        Patience {
            deadline: tokio::time::Instant::now() + extra,
            extra,
            readings_at_switch,
            idle: false,
        }
    }

    /// Whether the wait is over at `now`, the sources having produced
    /// `readings` since their start.
    fn over(&mut self, readings: u64, now: tokio::time::Instant) -> bool {
        self.idle = readings == self.readings_at_switch;
        if self.idle {
            self.deadline = now + self.extra;
            return false;
        }
        now >= self.deadline
    }
}

/// Stops in a release's health window after which it counts as failed: a
/// power cut may come once; a release the agent dies with every time
/// would otherwise be tried at every start.
const MAX_INTERRUPTIONS: u32 = 3;

/// Releases remembered per `kind/name` as committed here.
const RELEASES_KEPT: usize = 16;

/// A bundle a committed update installed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct InstalledBundle {
    file: PathBuf,
    hook: String,
}

/// A model a committed update installed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct InstalledModel {
    name: String,
    path: PathBuf,
    version: String,
    vector: String,
    features: Option<Vec<String>>,
}

/// File in the data directory holding the committed versions.
pub const OTA_STATE_FILE: &str = "ota-state.json";

/// At a clean stop (a signal from the service manager or an operator):
/// the model and config releases being tried did not stop the agent, so
/// their marks in the OTA state in `dir` go, and the next start tries
/// them again without counting a stop against them.
pub fn forget_trials(dir: &Path) -> Result<(), String> {
    let mut state = OtaState::load(dir)?;
    if state.trying.is_empty() {
        return Ok(());
    }
    state.trying.clear();
    state
        .save(dir)
        .map_err(|e| format!("cannot keep the OTA state in {}: {e}", dir.display()))
}

impl OtaState {
    /// The state kept in `dir` (empty before the first commit). Any other
    /// failure to read it is an error, never an empty state: that would
    /// forget every anti-rollback floor and accept a downgrade, and the
    /// next save would make that permanent.
    fn load(dir: &Path) -> Result<OtaState, String> {
        let path = dir.join(OTA_STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OtaState::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{} is damaged ({e}): it holds the committed versions and the floors that \
                 refuse downgrades. Restore it from a backup; or delete it to start over, \
                 accepting any signed version again",
                path.display()
            )
        })
    }

    fn get(&self, key: &str) -> Option<u64> {
        self.committed.get(key).copied()
    }

    /// Remembers that the release with `digest` was committed as `key`.
    fn remember_release(&mut self, key: &str, digest: Option<String>) {
        let Some(digest) = digest else { return };
        let kept = self.releases.entry(key.to_owned()).or_default();
        kept.retain(|d| *d != digest);
        kept.push(digest);
        if kept.len() > RELEASES_KEPT {
            kept.remove(0);
        }
    }

    /// Whether the release with `digest` was committed here.
    fn committed_release(&self, digest: &str) -> bool {
        self.releases.values().flatten().any(|d| d == digest)
    }

    /// Records, at a start, that the assignment `digest` (of `key` at
    /// `version`) was cut short and failed for good: `rolled_back` where
    /// a committed version `comes_back`, `failed` otherwise. Kept until a
    /// twin naming the assignment is answered (the twin kept from the last
    /// run may predate it).
    fn give_up_interrupted(
        &mut self,
        key: &str,
        version: u64,
        digest: String,
        why: String,
        comes_back: bool,
    ) {
        let mut report = update_report(key, version, Some(("interrupted", why)));
        report.state = if comes_back { "rolled_back" } else { "failed" }.into();
        self.failed.insert(digest.clone(), report);
        self.unanswered.insert(digest);
    }

    /// Clears the install mark of a bundle.
    fn clear_installing(&mut self, key: &str) {
        self.installing.remove(key);
        self.installing_assignment.remove(key);
    }

    /// The lowest version that may still be installed.
    fn floor(&self, key: &str) -> Option<u64> {
        self.floors.get(key).or(self.committed.get(key)).copied()
    }

    /// Commits `version` (verified against the floor), raising the floor
    /// to the release's if that is higher.
    fn set(&mut self, key: &str, version: u64, floor: u64, config: &ModelConfig) {
        let floor = self.floor(key).unwrap_or(0).max(floor);
        self.floors.insert(key.to_owned(), floor);
        self.committed.insert(key.to_owned(), version);
        self.installed.insert(
            key.to_owned(),
            InstalledModel {
                name: config.name.clone(),
                path: config.path.clone(),
                version: config.version.clone(),
                vector: config.vector.clone(),
                features: config.features.clone(),
            },
        );
    }

    /// The report of this signed update's assignment, if it failed here
    /// for good before.
    fn failed_before(&self, update: &serde_json::Value) -> Option<UpdateReport> {
        self.failed.get(&assignment_digest(update)?).cloned()
    }

    /// Keeps the final failures among `reports` (answering the assignments
    /// `answered`, in order) and forgets assignments no longer named;
    /// true when something changed.
    fn remember_failures(&mut self, answered: &[Option<String>], reports: &[UpdateReport]) -> bool {
        let before = (self.failed.clone(), self.unanswered.clone());
        let named = |digest: &String| answered.iter().flatten().any(|a| a == digest);
        self.failed
            .retain(|digest, _| named(digest) || self.unanswered.contains(digest));
        self.unanswered.retain(|digest| !named(digest));
        for (digest, report) in answered.iter().zip(reports) {
            let for_good = match report.state.as_str() {
                "failed" | "rolled_back" => true,
                // `expired` may be this gateway's clock (ahead, until NTP
                // sets it right): looked at again, not remembered.
                "refused" => !matches!(report.reason.as_deref(), Some("unavailable" | "expired")),
                _ => false,
            };
            if let Some(digest) = digest
                && for_good
            {
                self.failed.insert(digest.clone(), report.clone());
            }
        }
        (&self.failed, &self.unanswered) != (&before.0, &before.1)
    }

    /// Commits a config release.
    fn set_config(&mut self, key: &str, version: u64, floor: u64, file: &Path) {
        let floor = self.floor(key).unwrap_or(0).max(floor);
        self.floors.insert(key.to_owned(), floor);
        self.committed.insert(key.to_owned(), version);
        self.configs.insert(key.to_owned(), file.to_owned());
    }

    /// The pipeline of the committed config release, if any.
    fn pipeline(&self) -> Option<PipelineConfig> {
        self.configs
            .values()
            .find_map(|path| read_pipeline(path).ok())
    }

    /// Commits a bundle.
    fn set_bundle(&mut self, key: &str, version: u64, floor: u64, file: &Path, hook: &str) {
        let floor = self.floor(key).unwrap_or(0).max(floor);
        self.floors.insert(key.to_owned(), floor);
        self.committed.insert(key.to_owned(), version);
        self.clear_installing(key);
        self.bundles.insert(
            key.to_owned(),
            InstalledBundle {
                file: file.to_owned(),
                hook: hook.to_owned(),
            },
        );
    }

    /// The model the committed update of `key` installed, if any.
    fn running(&self, key: &str) -> Option<ModelConfig> {
        self.installed.get(key).map(|m| ModelConfig {
            name: m.name.clone(),
            path: m.path.clone(),
            version: m.version.clone(),
            vector: m.vector.clone(),
            features: m.features.clone(),
            outputs: None,
            drift: None,
            shadow: false,
        })
    }

    fn save(&self, dir: &Path) -> std::io::Result<()> {
        crate::write_atomic(
            &dir.join(OTA_STATE_FILE),
            &serde_json::to_vec(self).expect("JSON of the OTA state"),
        )
    }
}

fn report(m: &ModelAssignment, error: Option<String>) -> ModelReport {
    ModelReport {
        name: m.name.clone(),
        version: m.version,
        state: if error.is_none() { "running" } else { "failed" }.into(),
        error,
        shadow: m.shadow,
    }
}

/// Why a direct (unsigned) deployment from the twin's `models` is refused,
/// if it is: this agent takes signed releases only, or the model already
/// runs a signed release here, which only a signed release replaces (the
/// two number their versions apart, so no version of one can say it is
/// newer than the other's). A shadow challenger serves nothing, so it may.
fn direct_refusal(signed_only: bool, m: &ModelAssignment, committed: &OtaState) -> Option<String> {
    if signed_only {
        return Some(
            "refused: this agent takes models from signed releases only ([ota] signed_only)".into(),
        );
    }
    let key = format!("{}/{}", strata_ota::Kind::Model.as_str(), m.name);
    let signed = committed.get(&key)?;
    (!m.shadow).then(|| {
        format!(
            "refused: {} runs signed release {signed} here, which only a signed release replaces",
            m.name
        )
    })
}

/// Longest a model download may take before it is retried (resuming).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// The artifacts (by SHA-256) a device keeps: those its twin names, and
/// those of the releases it committed (what it goes back to).
fn needed_artifacts(twin: &DesiredTwin, state: &OtaState) -> std::collections::BTreeSet<String> {
    let committed = state
        .installed
        .values()
        .map(|m| &m.path)
        .chain(state.configs.values())
        .chain(state.bundles.values().map(|b| &b.file));
    let named = twin.updates.iter().filter_map(|u| {
        let payload = u["release"]["payload"].as_str()?;
        let r: strata_ota::Release = serde_json::from_str(payload).ok()?;
        Some(r.artifact.sha256)
    });
    committed
        .filter_map(|path| artifact_name(path))
        .chain(twin.models.iter().map(|m| m.sha256.clone()))
        .chain(named)
        .map(|sha| sha.to_ascii_lowercase())
        .collect()
}

/// The SHA-256 an artifact's file (or partial download) is named after.
fn artifact_name(path: &Path) -> Option<String> {
    let (stem, _) = path.file_name()?.to_str()?.split_once('.')?;
    (stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit())).then(|| stem.to_owned())
}

/// Deletes the downloaded artifacts, whole or partial, that are not in
/// `keep`: a gateway that takes updates for years must not fill its disk.
fn prune_artifacts(data_dir: &Path, keep: &std::collections::BTreeSet<String>) {
    for dir in ["models", "configs", "bundles"] {
        let Ok(entries) = std::fs::read_dir(data_dir.join(dir)) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            let Some(sha) = artifact_name(&path) else {
                continue;
            };
            if keep.contains(&sha.to_ascii_lowercase()) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "artifact no longer needed; deleted")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot delete an artifact no longer needed: {e}")
                }
            }
        }
    }
}

/// Checks the artifact in `path` against its signed size and SHA-256,
/// reading it piece by piece (a bundle may be larger than the memory).
fn check_file(expected: &Artifact, path: &Path) -> Result<(), String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut check = ArtifactCheck::new(expected);
    hash_into(&mut file, &mut check).map_err(|e| format!("{}: {e}", path.display()))?;
    check.finish().map_err(|e| e.to_string())
}

/// Feeds everything `reader` holds to `check`.
fn hash_into(reader: &mut impl std::io::Read, check: &mut ArtifactCheck) -> Result<(), String> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => check.update(&buf[..n]).map_err(|e| e.to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read: {e}")),
        }
    }
}

/// Space a download must leave free on the data directory's file system:
/// an update must never fill the disk the outbox keeps telemetry on. It is
/// below the outbox's own `keep_free_bytes` (64 MiB by default), where the
/// outbox stops growing: a backlog of telemetry still lets updates of up to
/// the difference (48 MiB, and a config release to mend it) through, and a
/// large download makes the outbox apply its drop policy rather than run
/// out of disk.
const RESERVE_BYTES: u64 = 16 << 20;

/// Whether the file system `part` is on has room for `needed` more bytes
/// and the reserve. Where the free space cannot be read, the download's
/// own writes say whether it fits.
fn room_for(part: &Path, needed: u64) -> Result<(), String> {
    let dir = part.parent().unwrap_or(Path::new("."));
    match crate::outbox::disk_free(dir) {
        Some(free) => room(needed, free),
        None => Ok(()),
    }
}

/// `needed` bytes and the reserve against `free` bytes.
fn room(needed: u64, free: u64) -> Result<(), String> {
    if free >= needed.saturating_add(RESERVE_BYTES) {
        return Ok(());
    }
    Err(format!(
        "not enough disk space: the download needs {needed} bytes and {} MiB are kept free, but \
         the data directory's disk has {free} bytes free",
        RESERVE_BYTES >> 20
    ))
}

/// Downloads an artifact into `part`, resuming from what `part` already
/// holds (HTTP Range), hashing and counting while streaming, and returns
/// once `part` holds the whole artifact with its announced size and
/// SHA-256, synced. Nothing is held in memory but a buffer. A broken
/// connection keeps what arrived for the next attempt; a wrong size or
/// hash discards it.
fn fetch_resumable(
    agent: &ureq::Agent,
    url: &str,
    device: &str,
    credential: &str,
    expected: &Artifact,
    part: &Path,
) -> Result<(), ArtifactError> {
    use std::io::Write as _;
    let unavailable = ArtifactError::Unavailable;
    let mut have = std::fs::metadata(part).map_or(0, |m| m.len());
    // Whole already (a power cut after the download, before the rename):
    // taken if it checks out, fetched again from the start if not.
    if have == expected.size && check_file(expected, part).is_ok() {
        return Ok(());
    }
    if have >= expected.size {
        have = 0;
    }
    room_for(part, expected.size - have).map_err(unavailable)?;
    let auth = format!(
        "Basic {}",
        base64(format!("{device}:{credential}").as_bytes())
    );
    let mut request = agent.get(url).header("Authorization", &auth);
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let mut response = request
        .call()
        .map_err(|e| unavailable(format!("cannot reach the hub at {url}: {e}")))?;
    let status = response.status();
    if status.as_u16() != 206 {
        if !status.is_success() {
            let mut body = Vec::new();
            let _ = response
                .body_mut()
                .as_reader()
                .take(300)
                .read_to_end(&mut body);
            if status.as_u16() == 416 {
                let _ = std::fs::remove_file(part);
            }
            return Err(unavailable(format!(
                "the hub answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        // The whole artifact (no range asked, or the server ignored it).
        have = 0;
    } else {
        // A part must start where ours ends (`bytes {start}-...`).
        let start = response
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if start != Some(have) {
            let _ = std::fs::remove_file(part);
            return Err(unavailable(format!(
                "the hub answered a range that is not the rest of ours ({start:?}, not {have}); starting again"
            )));
        }
    }
    // Bytes kept from an earlier attempt may be what is wrong (a power
    // loss, a proxy that misread the range): a resumed download that does
    // not check out is started again, not refused for good.
    let resumed = have > 0;
    let mut file = if resumed {
        std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(part)
    } else {
        std::fs::File::create(part)
    }
    .map_err(|e| unavailable(format!("cannot write {}: {e}", part.display())))?;
    let discard = |refusal| {
        let _ = std::fs::remove_file(part);
        if resumed {
            ArtifactError::Unavailable(format!(
                "the resumed download did not check out ({refusal}); starting again"
            ))
        } else {
            ArtifactError::Refused(refusal)
        }
    };
    let mut check = ArtifactCheck::new(expected);
    if resumed {
        // The kept part, read back from its start (the file is opened to
        // append, which writes at the end whatever the read position).
        let mut kept = std::io::Read::take(&mut file, have);
        hash_into(&mut kept, &mut check).map_err(unavailable)?;
        if check.seen() != have {
            let _ = std::fs::remove_file(part);
            return Err(unavailable(format!(
                "the kept part of {} changed while it was read; starting again",
                part.display()
            )));
        }
    }
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = file.sync_all();
                return Err(unavailable(format!(
                    "download of {url} broke off after {} of {} bytes (kept, to resume): {e}",
                    check.seen(),
                    expected.size
                )));
            }
        };
        check.update(&buf[..n]).map_err(discard)?;
        file.write_all(&buf[..n])
            .map_err(|e| unavailable(format!("cannot write {}: {e}", part.display())))?;
    }
    check.finish().map_err(discard)?;
    file.sync_all()
        .map_err(|e| unavailable(format!("cannot sync {}: {e}", part.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_must_leave_the_reserve_free() {
        assert!(room(10, RESERVE_BYTES + 10).is_ok());
        let e = room(11, RESERVE_BYTES + 10).unwrap_err();
        assert!(e.contains("needs 11 bytes"), "{e}");
        // The real file system of a directory is read.
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("model.part");
        assert!(room_for(&part, 1).is_ok());
        assert!(
            room_for(&part, u64::MAX / 2)
                .unwrap_err()
                .contains("bytes free")
        );
    }

    fn assignment(version: u32, shadow: bool) -> ModelAssignment {
        serde_json::from_value(serde_json::json!({
            "name": "rul",
            "version": version,
            "sha256": "00".repeat(32),
            "size": 1,
            "vector": "w",
            "features": [],
            "shadow": shadow,
        }))
        .unwrap()
    }

    #[test]
    fn an_expired_assignment_is_looked_at_again_other_refusals_are_not() {
        let mut state = OtaState::default();
        let refused = |reason: &str| UpdateReport {
            state: "refused".into(),
            ..update_report("model/rul", 3, Some((reason, "no".into())))
        };
        let answered = [Some("a".to_owned()), Some("b".to_owned())];
        assert!(state.remember_failures(&answered, &[refused("expired"), refused("signature")]));
        assert!(!state.failed.contains_key("a"), "the clock may be wrong");
        assert!(state.failed.contains_key("b"));
    }

    #[test]
    fn a_damaged_ota_state_stops_the_start_instead_of_forgetting_the_floors() {
        let dir = tempfile::tempdir().unwrap();
        committed_pipeline(dir.path()).unwrap();
        let mut state = OtaState::default();
        state.floors.insert("model/rul".into(), 7);
        state.save(dir.path()).unwrap();
        committed_pipeline(dir.path()).unwrap();
        std::fs::write(dir.path().join(OTA_STATE_FILE), b"{\"committed\": {\"mo").unwrap();
        let e = committed_pipeline(dir.path()).unwrap_err();
        assert!(e.contains("damaged") && e.contains("downgrades"), "{e}");
        // Nor is it read as empty later, while the agent runs (a pass that
        // cannot read it applies nothing and saves nothing over it).
        assert!(OtaState::load(dir.path()).is_err());
    }

    #[test]
    fn a_whole_download_kept_from_before_a_power_cut_is_not_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("x.part");
        let bytes = b"the artifact".to_vec();
        std::fs::write(&part, &bytes).unwrap();
        let expected = Artifact {
            sha256: strata_ota::sha256_hex(&bytes),
            size: bytes.len() as u64,
        };
        // Nothing listens there: any request would fail.
        let agent = ureq::Agent::new_with_defaults();
        let url = "http://127.0.0.1:9/api/v1/device/artifacts/x";
        assert!(fetch_resumable(&agent, url, "d", "c", &expected, &part).is_ok());
        // A part of the right size with other bytes is fetched again.
        std::fs::write(&part, b"not the thing").unwrap();
        let wrong = Artifact {
            size: 13,
            ..expected
        };
        assert!(matches!(
            fetch_resumable(&agent, url, "d", "c", &wrong, &part),
            Err(ArtifactError::Unavailable(e)) if e.contains("cannot reach")
        ));
    }

    #[test]
    fn artifacts_nothing_needs_are_deleted_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sha = |b: u8| format!("{b:02x}").repeat(32);
        let file = |sub: &str, name: String| {
            let path = dir.path().join(sub).join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
            path
        };
        // Committed: a model release, a config release, a bundle.
        let mut state = OtaState::default();
        let model = file("models", format!("{}.onnx", sha(1)));
        state.installed.insert(
            "model/rul".into(),
            InstalledModel {
                name: "rul".into(),
                path: model.clone(),
                version: "3".into(),
                vector: "w".into(),
                features: None,
            },
        );
        let config = file("configs", format!("{}.toml", sha(2)));
        state.configs.insert("config/line".into(), config.clone());
        let bundle = file("bundles", format!("{}.bin", sha(3)));
        state.bundles.insert(
            "bundle/fw".into(),
            InstalledBundle {
                file: bundle.clone(),
                hook: "fw".into(),
            },
        );
        // Named by the twin: a direct deployment, and a signed update's
        // release whose download is under way.
        let mut direct = assignment(4, false);
        direct.sha256 = sha(4).to_ascii_uppercase();
        let deployed = file("models", format!("{}.onnx", sha(4)));
        let release = strata_ota::Release {
            kind: Kind::Bundle,
            name: "fw".into(),
            version: 9,
            min_version: None,
            artifact: Artifact {
                sha256: sha(5),
                size: 1,
            },
            target: strata_ota::Target::default(),
            created_ns: 0,
            expires_ns: 1,
            model: None,
            bundle: None,
        };
        let update = serde_json::json!({
            "release": { "payload": serde_json::to_string(&release).unwrap() },
        });
        let partial = file("bundles", format!("{}.part", sha(5)));
        // Needed by nothing: an older model, an abandoned partial
        // download, an older config; a file of another name stays.
        let old = [
            file("models", format!("{}.onnx", sha(6))),
            file("bundles", format!("{}.part", sha(7))),
            file("configs", format!("{}.toml", sha(8))),
        ];
        let other = file("models", "notes.txt".into());
        let twin = DesiredTwin {
            models: vec![direct],
            updates: vec![update],
            ..DesiredTwin::default()
        };
        prune_artifacts(dir.path(), &needed_artifacts(&twin, &state));
        for kept in [&model, &config, &bundle, &deployed, &partial, &other] {
            assert!(kept.exists(), "{} was deleted", kept.display());
        }
        for gone in &old {
            assert!(!gone.exists(), "{} was kept", gone.display());
        }
    }

    #[test]
    fn direct_deployments_respect_signed_commits_and_signed_only() {
        let mut state = OtaState::default();
        // Nothing signed committed: the hub may deploy any version.
        assert_eq!(direct_refusal(false, &assignment(1, false), &state), None);
        state.committed.insert("model/rul".into(), 5);
        // A signed release runs: only another signed release replaces it,
        // whatever the direct deployment's version.
        for version in [4, 5, 9] {
            let refused = direct_refusal(false, &assignment(version, false), &state).unwrap();
            assert!(refused.contains("signed release 5"), "{refused}");
        }
        // A shadow challenger replaces nothing.
        assert_eq!(direct_refusal(false, &assignment(4, true), &state), None);
        // Another model is not concerned.
        let mut other = assignment(1, false);
        other.name = "energy".into();
        assert_eq!(direct_refusal(false, &other, &state), None);
        // Signed releases only: every direct deployment is refused.
        let refused = direct_refusal(true, &assignment(9, false), &OtaState::default()).unwrap();
        assert!(refused.contains("signed_only"), "{refused}");
    }

    #[test]
    fn a_clean_stop_forgets_the_trials_but_not_the_stops_counted() {
        let dir = tempfile::tempdir().unwrap();
        forget_trials(dir.path()).unwrap();
        assert!(
            !dir.path().join(OTA_STATE_FILE).exists(),
            "nothing to forget, nothing written"
        );
        let mut state = OtaState::default();
        state.committed.insert("model/rul".into(), 4);
        state
            .trying
            .insert("model/rul".into(), (5, "digest".into()));
        state.interruptions.insert(release_id("model/rul", 5), 2);
        state.save(dir.path()).unwrap();
        forget_trials(dir.path()).unwrap();
        let after = OtaState::load(dir.path()).unwrap();
        assert!(after.trying.is_empty());
        assert_eq!(
            after.interruptions.get(&release_id("model/rul", 5)),
            Some(&2)
        );
        assert_eq!(after.get("model/rul"), Some(4));
        // A damaged state is not saved over.
        std::fs::write(dir.path().join(OTA_STATE_FILE), b"{").unwrap();
        assert!(forget_trials(dir.path()).unwrap_err().contains("damaged"));
    }

    /// A line idle since an update's switch holds its health window open;
    /// once readings come in, the new version has the usual time to run.
    #[test]
    fn an_idle_line_holds_the_health_window_open() {
        let extra = Duration::from_secs(20);
        let start = tokio::time::Instant::now();
        let mut p = Patience::new(extra, 100);
        // Readings come in: over once `extra` has passed.
        assert!(!p.over(150, start + Duration::from_secs(5)));
        assert!(p.over(150, start + Duration::from_secs(21)));
        // Idle for a weekend: never over while nothing comes in.
        let mut p = Patience::new(extra, 100);
        let day = Duration::from_secs(86_400);
        assert!(!p.over(100, start + day));
        assert!(!p.over(100, start + 2 * day) && p.idle);
        // The line starts: `extra` more from the last idle look.
        assert!(!p.over(101, start + 2 * day + Duration::from_secs(19)));
        assert!(p.over(101, start + 2 * day + Duration::from_secs(21)));
    }

    /// Twins that arrive out of order (sent by two hub replicas): an older
    /// one of the same epoch is ignored; one of another epoch (a hub store
    /// started afresh) is applied whatever its version.
    #[tokio::test]
    async fn an_older_twin_arriving_late_does_not_undo_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let (swap, _swaps) = std::sync::mpsc::channel();
        let reported = Arc::new(Reported::default());
        let applier = TwinApplier {
            device: DeviceId::new("press-1").unwrap(),
            credential: String::new(),
            http: None,
            tls_dir: None,
            data_dir: dir.path().to_owned(),
            base_dir: dir.path().to_owned(),
            configured: Vec::new(),
            file_pipeline: None,
            running: Mutex::new(None),
            swap,
            health: Arc::new(HealthState::new(Vec::new(), Vec::new())),
            reported: reported.clone(),
            trust: strata_ota::Trust {
                release_keys: Vec::new(),
                rollout_keys: Vec::new(),
            },
            identity: strata_ota::Device {
                id: "press-1".into(),
                site: "plant".into(),
                tags: Default::default(),
            },
            health_window: Duration::ZERO,
            hooks: Default::default(),
            signed_only: false,
        };
        let (desired, receiver) = watch::channel(None);
        let running = tokio::spawn(applier.run(receiver));
        let send = |epoch: &str, version: u64| {
            let twin = DesiredTwin {
                desired_version: version,
                epoch: epoch.into(),
                ..DesiredTwin::default()
            };
            desired.send_replace(Some(serde_json::to_vec(&twin).unwrap()));
        };
        let applied = || -> u64 {
            let latest = reported.latest().expect("a report");
            serde_json::from_slice::<serde_json::Value>(&latest).unwrap()["desired_version"]
                .as_u64()
                .unwrap()
        };
        let reported_within = |limit: Duration| {
            let reported = reported.clone();
            async move {
                tokio::time::timeout(limit, reported.changed.notified())
                    .await
                    .is_ok()
            }
        };

        send("e1", 2);
        assert!(reported_within(Duration::from_secs(10)).await);
        assert_eq!(applied(), 2);
        send("e1", 1);
        assert!(
            !reported_within(Duration::from_millis(500)).await,
            "the older twin was applied"
        );
        assert_eq!(applied(), 2);
        send("e2", 1);
        assert!(reported_within(Duration::from_secs(10)).await);
        assert_eq!(applied(), 1);
        let kept: DesiredTwin =
            serde_json::from_slice(&std::fs::read(dir.path().join(TWIN_FILE)).unwrap()).unwrap();
        assert_eq!((kept.epoch.as_str(), kept.desired_version), ("e2", 1));
        running.abort();
    }
}
