//! What a rollout campaign is asked to do, how its devices are split into
//! waves, and the decisions each step takes: pure functions of the stored
//! campaign, its devices and what they reported, so that a restarted hub
//! takes the same decisions from the same rows.
//!
//! Anchors: Eclipse hawkBit (groups with success and error thresholds),
//! AWS IoT Jobs (exponential rollout, abort criteria after a minimum
//! number of devices, timeouts).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use strata_proto::{DeviceId, UpdateReport};
use strata_store::{Campaign, CampaignDevice};

use crate::error::{Error, Result};
use crate::models::deploy::DeviceSelector;

/// The release a campaign installs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRef {
    /// `model`, `config` or `bundle`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its version (an accepted release).
    pub version: u64,
}

/// A number of devices, or a percentage of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Share {
    /// This many devices.
    Count(usize),
    /// This percentage of the devices (rounded up).
    Percent(f64),
}

impl Share {
    /// How many of `n` devices.
    pub fn of(self, n: usize) -> usize {
        match self {
            Share::Count(c) => c,
            Share::Percent(p) => (p / 100.0 * n as f64 - 1e-9).ceil().max(0.0) as usize,
        }
    }

    fn validate(self, what: &str) -> Result<()> {
        match self {
            Share::Count(0) => Err(Error::BadRequest(format!("{what}: a count of at least 1"))),
            Share::Percent(p) if !(p > 0.0 && p <= 100.0) => Err(Error::BadRequest(format!(
                "{what}: a percentage above 0 and at most 100, not {p}"
            ))),
            _ => Ok(()),
        }
    }
}

/// How the devices after the canary are split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Waves {
    /// Waves of `size` devices.
    Fixed {
        /// Devices per wave.
        size: usize,
    },
    /// Each wave `factor` times the one before, the first `start` devices
    /// (default: twice the canary).
    Exponential {
        /// The first wave after the canary.
        #[serde(default)]
        start: Option<usize>,
        /// Growth per wave (at least 1).
        #[serde(default = "default_factor")]
        factor: f64,
    },
}

fn default_factor() -> f64 {
    2.0
}

/// What a failure threshold does once crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop opening waves until an operator resumes or aborts.
    #[default]
    Pause,
    /// Stop for good (and roll back if asked).
    Abort,
}

/// A campaign request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    /// The release to install.
    pub release: ReleaseRef,
    /// The devices (active ones); all active devices when empty.
    #[serde(default)]
    pub target: DeviceSelector,
    /// Only devices whose twin names one of these versions of the
    /// release's kind and name now (0: none yet); empty: any.
    #[serde(default)]
    pub from_versions: Vec<u64>,
    /// The first wave (default 5 %, at least one device).
    #[serde(default = "default_canary")]
    pub canary: Share,
    /// The waves after the canary (default exponential, factor 2).
    #[serde(default = "default_waves")]
    pub waves: Waves,
    /// Share of a wave that must commit before the next one opens
    /// (default 90); below it the campaign pauses.
    #[serde(default = "default_success")]
    pub success_percent: f64,
    /// Failed or silent devices, since the start or the last resume,
    /// that stop the campaign (default 10 %).
    #[serde(default = "default_failure")]
    pub failure_threshold: Share,
    /// Devices that must have answered before a percentage threshold
    /// applies (default 10).
    #[serde(default = "default_min_sample")]
    pub min_sample: usize,
    /// Pause (default) or abort at the failure threshold.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// A device that has not committed this long after its assignment
    /// counts as failed (default 600 s).
    #[serde(default = "default_timeout")]
    pub device_timeout_s: u64,
    /// On abort, put the devices that committed this release back on the
    /// release they had (the release must allow it: `min_version`).
    #[serde(default)]
    pub rollback: bool,
    /// How long each signed assignment is valid (default 6 h); the hub
    /// signs new ones for devices still working on theirs at half-life.
    #[serde(default = "default_ttl")]
    pub assignment_ttl_s: u64,
}

fn default_canary() -> Share {
    Share::Percent(5.0)
}
fn default_waves() -> Waves {
    Waves::Exponential {
        start: None,
        factor: 2.0,
    }
}
fn default_success() -> f64 {
    90.0
}
fn default_failure() -> Share {
    Share::Percent(10.0)
}
fn default_min_sample() -> usize {
    10
}
fn default_timeout() -> u64 {
    600
}
fn default_ttl() -> u64 {
    6 * 3600
}

impl CampaignSpec {
    /// Refuses settings that make no sense, naming the field.
    pub fn validate(&self) -> Result<()> {
        self.canary.validate("canary")?;
        self.failure_threshold.validate("failure_threshold")?;
        match self.waves {
            Waves::Fixed { size: 0 } => {
                return Err(Error::BadRequest("waves: a size of at least 1".into()));
            }
            Waves::Exponential { start: Some(0), .. } => {
                return Err(Error::BadRequest("waves: a start of at least 1".into()));
            }
            Waves::Exponential { factor, .. } if !(1.0..=1000.0).contains(&factor) => {
                return Err(Error::BadRequest(format!(
                    "waves: a factor from 1 to 1000, not {factor}"
                )));
            }
            _ => {}
        }
        if !(0.0..=100.0).contains(&self.success_percent) {
            return Err(Error::BadRequest(format!(
                "success_percent: from 0 to 100, not {}",
                self.success_percent
            )));
        }
        if self.device_timeout_s == 0 || self.assignment_ttl_s < 2 {
            return Err(Error::BadRequest(
                "device_timeout_s must be at least 1 and assignment_ttl_s at least 2".into(),
            ));
        }
        Ok(())
    }

    /// Wave sizes for `n` devices: the canary, then the waves.
    pub fn plan(&self, n: usize) -> Vec<usize> {
        if n == 0 {
            return Vec::new();
        }
        let canary = self.canary.of(n).clamp(1, n);
        let mut sizes = vec![canary];
        let mut left = n - canary;
        let mut next = match self.waves {
            Waves::Fixed { size } => size as f64,
            Waves::Exponential { start, .. } => start.unwrap_or(2 * canary) as f64,
        };
        while left > 0 {
            let size = (next.round() as usize).clamp(1, left);
            sizes.push(size);
            left -= size;
            if let Waves::Exponential { factor, .. } = self.waves {
                next *= factor;
            }
        }
        sizes
    }
}

/// The order devices are reached in: a shuffle fixed by `seed`, so that
/// the canary is a sample of the whole fleet, not its first ids.
pub fn shuffle(devices: &mut [DeviceId], seed: &str) {
    devices.sort_by_cached_key(|d| strata_ota::sha256_hex(format!("{seed}/{d}").as_bytes()));
}

/// The assignment tag of a campaign (written in each signed assignment,
/// echoed in the device's report).
pub fn tag(id: i64) -> String {
    format!("campaign-{id}")
}

/// The tag of a campaign's rollback assignments.
pub fn rollback_tag(id: i64) -> String {
    format!("campaign-{id}-rollback")
}

/// What the hub must do to a device's twin for a step. A step names each
/// device at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Todo {
    /// Sign and deliver an assignment of `version`, tagged `tag`.
    Assign {
        /// Index into the campaign's devices.
        device: usize,
        /// The release version.
        version: u64,
        /// The campaign tag.
        tag: String,
    },
    /// Remove the release's kind and name from the device's twin (it
    /// named none before the campaign).
    Remove {
        /// Index into the campaign's devices.
        device: usize,
    },
}

impl Todo {
    /// The index of the device it is for.
    pub fn device(&self) -> usize {
        match self {
            Todo::Assign { device, .. } | Todo::Remove { device } => *device,
        }
    }
}

/// Counts of a campaign's devices by state.
pub fn counts<'a>(devices: impl IntoIterator<Item = &'a CampaignDevice>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for d in devices {
        *counts.entry(d.state.clone()).or_default() += 1;
    }
    counts
}

fn decided_and_failed(devices: &[CampaignDevice]) -> (u64, u64) {
    let c = counts(devices);
    let get = |s: &str| c.get(s).copied().unwrap_or(0);
    let failed = get("failed") + get("timed_out");
    // Devices the campaign put back count with what they did before.
    (
        get("committed")
            + failed
            + get("rolling_back")
            + get("rolled_back")
            + get("rollback_failed"),
        failed,
    )
}

/// One step of a campaign at `now_ns`: records what devices reported,
/// times out the silent ones, checks the thresholds, opens the next wave
/// or finishes. Changes `campaign` and `devices` in place, returns what to
/// do to twins and which device rows changed.
pub fn step(
    campaign: &mut Campaign,
    spec: &CampaignSpec,
    devices: &mut [CampaignDevice],
    reports: &HashMap<DeviceId, Vec<UpdateReport>>,
    now_ns: i64,
) -> (Vec<Todo>, Vec<usize>) {
    let mut todo = Vec::new();
    let mut changed = Vec::new();
    let (main_tag, back_tag) = (tag(campaign.id), rollback_tag(campaign.id));
    let timeout = secs(spec.device_timeout_s);
    let ttl = secs(spec.assignment_ttl_s);
    for (i, d) in devices.iter_mut().enumerate() {
        let (version, tag, ok, bad) = match d.state.as_str() {
            "assigned" => (spec.release.version, &main_tag, "committed", "failed"),
            "rolling_back" => match d.previous {
                Some(v) => (v, &back_tag, "rolled_back", "rollback_failed"),
                None => continue,
            },
            _ => continue,
        };
        let answer = reports.get(&d.device).and_then(|rs| {
            rs.iter().find(|r| {
                r.kind == spec.release.kind
                    && r.name == spec.release.name
                    && r.version == version
                    && r.campaign.as_deref() == Some(tag.as_str())
            })
        });
        let timed_out = d
            .assigned_ns
            .is_some_and(|at| now_ns >= at.saturating_add(timeout));
        let decided = match answer {
            Some(r) if r.state == "committed" => Some((ok, None)),
            // Still trying (the artifact could not be fetched yet).
            Some(r) if r.reason.as_deref() == Some("unavailable") && !timed_out => None,
            Some(r) => Some((bad, r.reason.clone().or_else(|| Some(r.state.clone())))),
            None if timed_out => Some((
                if d.state == "assigned" {
                    "timed_out"
                } else {
                    bad
                },
                Some("timeout".to_owned()),
            )),
            None => None,
        };
        if let Some((state, reason)) = decided {
            d.state = state.into();
            d.reason = reason;
            d.decided_ns = Some(now_ns);
            changed.push(i);
        } else if d.expires_ns.is_some_and(|e| e - now_ns < ttl / 2) {
            // Still working on it: a fresh assignment before this expires.
            d.expires_ns = Some(now_ns.saturating_add(ttl));
            todo.push(Todo::Assign {
                device: i,
                version,
                tag: tag.clone(),
            });
            changed.push(i);
        }
    }

    match campaign.state.as_str() {
        "running" => {
            let (decided, failed) = decided_and_failed(devices);
            let decided = decided.saturating_sub(campaign.baseline_decided);
            let failed = failed.saturating_sub(campaign.baseline_failed);
            let crossed = match spec.failure_threshold {
                Share::Count(n) => failed >= n as u64,
                Share::Percent(p) => {
                    decided >= spec.min_sample as u64 && failed as f64 * 100.0 >= p * decided as f64
                }
            };
            if crossed {
                let why = format!(
                    "failure threshold crossed: {failed} of {decided} devices failed or timed out (threshold {})",
                    match spec.failure_threshold {
                        Share::Count(n) => format!("{n} devices"),
                        Share::Percent(p) => format!("{p} % after {} devices", spec.min_sample),
                    }
                );
                match spec.on_failure {
                    OnFailure::Pause => pause(campaign, why, now_ns),
                    OnFailure::Abort => {
                        let (t, c) = abort(campaign, spec, devices, why, now_ns);
                        // What the abort gives a device replaces what
                        // this step gave it before (a fresh assignment
                        // of the release it now withdraws).
                        todo.retain(|earlier| !t.iter().any(|x| x.device() == earlier.device()));
                        todo.extend(t);
                        changed.extend(c);
                    }
                }
            } else {
                loop {
                    open_waves(campaign, spec, devices, now_ns, &mut todo, &mut changed);
                    let wave: Vec<&CampaignDevice> =
                        devices.iter().filter(|d| d.wave == campaign.wave).collect();
                    if wave
                        .iter()
                        .any(|d| d.state == "assigned" || d.state == "pending")
                    {
                        break;
                    }
                    let committed = wave.iter().filter(|d| d.state == "committed").count();
                    let share = committed as f64 * 100.0 / wave.len().max(1) as f64;
                    if share + 1e-9 < spec.success_percent {
                        pause(
                            campaign,
                            format!(
                                "wave {}: {committed} of {} devices committed ({share:.1} %), below the {} % needed to go on",
                                campaign.wave,
                                wave.len(),
                                spec.success_percent
                            ),
                            now_ns,
                        );
                        break;
                    }
                    if !advance(campaign, now_ns) {
                        break;
                    }
                }
            }
        }
        "rolling_back" if !devices.iter().any(|d| d.state == "rolling_back") => {
            campaign.state = "rolled_back".into();
            campaign.updated_ns = now_ns;
        }
        _ => {}
    }
    changed.sort_unstable();
    changed.dedup();
    (todo, changed)
}

/// Assigns the pending devices of every opened wave.
fn open_waves(
    campaign: &Campaign,
    spec: &CampaignSpec,
    devices: &mut [CampaignDevice],
    now_ns: i64,
    todo: &mut Vec<Todo>,
    changed: &mut Vec<usize>,
) {
    let ttl = secs(spec.assignment_ttl_s);
    for (i, d) in devices.iter_mut().enumerate() {
        if d.state == "pending" && d.wave <= campaign.wave {
            d.state = "assigned".into();
            d.assigned_ns = Some(now_ns);
            d.expires_ns = Some(now_ns.saturating_add(ttl));
            todo.push(Todo::Assign {
                device: i,
                version: spec.release.version,
                tag: tag(campaign.id),
            });
            changed.push(i);
        }
    }
}

/// Opens the next wave, or completes the campaign after the last; false
/// when it completed.
fn advance(campaign: &mut Campaign, now_ns: i64) -> bool {
    campaign.updated_ns = now_ns;
    if campaign.wave + 1 < campaign.waves {
        campaign.wave += 1;
        true
    } else {
        campaign.state = "completed".into();
        false
    }
}

fn pause(campaign: &mut Campaign, why: String, now_ns: i64) {
    tracing::warn!(campaign = campaign.id, "campaign paused: {why}");
    campaign.state = "paused".into();
    campaign.reason = why;
    campaign.updated_ns = now_ns;
}

/// Resumes a paused campaign: the failure threshold counts from now, and
/// a finished wave that paused below its success share is accepted.
pub fn resume(campaign: &mut Campaign, devices: &[CampaignDevice], now_ns: i64) -> Result<()> {
    if campaign.state != "paused" {
        return Err(Error::Conflict(format!(
            "campaign {} is {}, not paused",
            campaign.id, campaign.state
        )));
    }
    let (decided, failed) = decided_and_failed(devices);
    campaign.baseline_decided = decided;
    campaign.baseline_failed = failed;
    campaign.state = "running".into();
    campaign.reason = String::new();
    campaign.updated_ns = now_ns;
    let wave_done = devices
        .iter()
        .filter(|d| d.wave == campaign.wave)
        .all(|d| d.state != "assigned" && d.state != "pending");
    if wave_done {
        advance(campaign, now_ns);
    }
    Ok(())
}

/// Pauses a running campaign by hand.
pub fn pause_by_hand(campaign: &mut Campaign, now_ns: i64) -> Result<()> {
    if campaign.state != "running" {
        return Err(Error::Conflict(format!(
            "campaign {} is {}, not running",
            campaign.id, campaign.state
        )));
    }
    pause(campaign, "paused by an operator".into(), now_ns);
    Ok(())
}

/// Stops a campaign for good: devices not reached are skipped, devices
/// still working on it and those it failed on get their previous release
/// back in their twin, and with `rollback` the devices that committed go
/// back to the release they had.
pub fn abort(
    campaign: &mut Campaign,
    spec: &CampaignSpec,
    devices: &mut [CampaignDevice],
    why: String,
    now_ns: i64,
) -> (Vec<Todo>, Vec<usize>) {
    tracing::warn!(campaign = campaign.id, "campaign aborted: {why}");
    let mut todo = Vec::new();
    let mut changed = Vec::new();
    let back = rollback_tag(campaign.id);
    let ttl = secs(spec.assignment_ttl_s);
    campaign.state = "aborted".into();
    campaign.reason = why;
    campaign.updated_ns = now_ns;
    for (i, d) in devices.iter_mut().enumerate() {
        let restore = match d.state.as_str() {
            "pending" => {
                d.state = "skipped".into();
                changed.push(i);
                false
            }
            "assigned" => {
                d.state = "withdrawn".into();
                d.decided_ns = Some(now_ns);
                changed.push(i);
                true
            }
            "failed" | "timed_out" => true,
            "committed" if spec.rollback => {
                if d.previous.is_some() {
                    d.state = "rolling_back".into();
                    d.assigned_ns = Some(now_ns);
                    d.expires_ns = Some(now_ns.saturating_add(ttl));
                    d.decided_ns = None;
                    changed.push(i);
                    campaign.state = "rolling_back".into();
                }
                d.previous.is_some()
            }
            _ => false,
        };
        if restore {
            todo.push(match d.previous {
                Some(version) => Todo::Assign {
                    device: i,
                    version,
                    tag: back.clone(),
                },
                None => Todo::Remove { device: i },
            });
        }
    }
    (todo, changed)
}

fn secs(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> CampaignSpec {
        let mut base =
            serde_json::json!({"release": {"kind": "model", "name": "rul", "version": 3}});
        base.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        let spec: CampaignSpec = serde_json::from_value(base).unwrap();
        spec.validate().unwrap();
        spec
    }

    fn campaign(spec: &CampaignSpec, n: usize) -> (Campaign, Vec<CampaignDevice>) {
        let sizes = spec.plan(n);
        let mut devices = Vec::new();
        for (wave, size) in sizes.iter().enumerate() {
            for _ in 0..*size {
                devices.push(CampaignDevice {
                    device: DeviceId::new(format!("d{}", devices.len())).unwrap(),
                    wave: wave as u32,
                    state: "pending".into(),
                    previous: Some(2),
                    assigned_ns: None,
                    expires_ns: None,
                    decided_ns: None,
                    reason: None,
                });
            }
        }
        let c = Campaign {
            id: 7,
            spec: serde_json::to_value(spec).unwrap(),
            state: "running".into(),
            reason: String::new(),
            wave: 0,
            waves: sizes.len() as u32,
            created_ns: 0,
            updated_ns: 0,
            baseline_decided: 0,
            baseline_failed: 0,
            revision: 0,
        };
        (c, devices)
    }

    /// Every assigned device answers: `fail` decides which fail.
    fn answer(
        devices: &[CampaignDevice],
        fail: impl Fn(&DeviceId) -> bool,
    ) -> HashMap<DeviceId, Vec<UpdateReport>> {
        devices
            .iter()
            .filter(|d| d.state == "assigned" || d.state == "rolling_back")
            .map(|d| {
                let (version, campaign) = if d.state == "assigned" {
                    (3, tag(7))
                } else {
                    (2, rollback_tag(7))
                };
                let bad = d.state == "assigned" && fail(&d.device);
                let report = UpdateReport {
                    kind: "model".into(),
                    name: "rul".into(),
                    version,
                    state: if bad { "rolled_back" } else { "committed" }.into(),
                    reason: bad.then(|| "health_check".into()),
                    error: None,
                    campaign: Some(campaign),
                };
                (d.device.clone(), vec![report])
            })
            .collect()
    }

    #[test]
    fn waves_cover_every_device_once() {
        let s = spec(serde_json::json!({}));
        assert_eq!(s.plan(1000), [50, 100, 200, 400, 250]);
        assert_eq!(s.plan(1), [1]);
        assert_eq!(s.plan(0), Vec::<usize>::new());
        let fixed = spec(
            serde_json::json!({"canary": {"count": 3}, "waves": {"mode": "fixed", "size": 4}}),
        );
        assert_eq!(fixed.plan(12), [3, 4, 4, 1]);
        let steep =
            spec(serde_json::json!({"waves": {"mode": "exponential", "start": 10, "factor": 3}}));
        assert_eq!(steep.plan(100), [5, 10, 30, 55]);
        assert_eq!(Share::Percent(5.0).of(10), 1);
        assert_eq!(Share::Percent(10.0).of(10), 1);
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let bad = [
            serde_json::json!({"canary": {"percent": 0}}),
            serde_json::json!({"failure_threshold": {"count": 0}}),
            serde_json::json!({"waves": {"mode": "exponential", "factor": 0.5}}),
            serde_json::json!({"success_percent": 120}),
            serde_json::json!({"device_timeout_s": 0}),
        ];
        for b in bad {
            let mut base =
                serde_json::json!({"release": {"kind": "model", "name": "rul", "version": 3}});
            base.as_object_mut()
                .unwrap()
                .extend(b.as_object().unwrap().clone());
            let spec: CampaignSpec = serde_json::from_value(base).unwrap();
            assert!(matches!(spec.validate(), Err(Error::BadRequest(_))), "{b}");
        }
        let unknown = serde_json::json!({"release": {"kind": "model", "name": "rul", "version": 3}, "canery": {"count": 1}});
        assert!(serde_json::from_value::<CampaignSpec>(unknown).is_err());
    }

    #[test]
    fn a_healthy_campaign_completes_every_wave() {
        let s = spec(serde_json::json!({}));
        let (mut c, mut devices) = campaign(&s, 100);
        let mut now = 1;
        let mut waves_seen = Vec::new();
        while c.state == "running" {
            let reports = answer(&devices, |_| false);
            let (todo, _) = step(&mut c, &s, &mut devices, &reports, now);
            waves_seen.push((c.wave, todo.len()));
            now += 1;
            assert!(now < 100, "{c:?}");
        }
        assert_eq!(c.state, "completed");
        assert!(devices.iter().all(|d| d.state == "committed"));
        // The canary first, then each wave only once the one before is done.
        assert_eq!(waves_seen[0], (0, 5));
        assert_eq!(waves_seen[1], (1, 10));
    }

    #[test]
    fn failures_pause_at_the_threshold_and_resume_counts_afresh() {
        let s = spec(
            serde_json::json!({"failure_threshold": {"percent": 20}, "min_sample": 4, "canary": {"count": 10}}),
        );
        let (mut c, mut devices) = campaign(&s, 100);
        step(&mut c, &s, &mut devices, &HashMap::new(), 1);
        // Three of the ten canary devices fail: 30 % >= 20 %.
        let bad = |d: &DeviceId| ["d0", "d1", "d2"].contains(&d.as_str());
        let reports = answer(&devices, bad);
        let (todo, _) = step(&mut c, &s, &mut devices, &reports, 2);
        assert_eq!(c.state, "paused");
        assert!(c.reason.contains("3 of 10"), "{}", c.reason);
        assert!(todo.is_empty(), "no wave opens while paused");
        assert_eq!(devices[0].reason.as_deref(), Some("health_check"));
        resume(&mut c, &devices, 3).unwrap();
        assert_eq!((c.state.as_str(), c.wave), ("running", 1));
        let (todo, _) = step(&mut c, &s, &mut devices, &HashMap::new(), 4);
        assert_eq!(todo.len(), 20, "the next wave opens");
        assert!(resume(&mut c, &devices, 5).is_err());
    }

    #[test]
    fn silent_devices_time_out_as_failures() {
        let s = spec(
            serde_json::json!({"device_timeout_s": 10, "failure_threshold": {"count": 2}, "on_failure": "abort"}),
        );
        let (mut c, mut devices) = campaign(&s, 40);
        step(&mut c, &s, &mut devices, &HashMap::new(), 0);
        assert_eq!(devices[0].state, "assigned");
        step(&mut c, &s, &mut devices, &HashMap::new(), 9_000_000_000);
        assert_eq!(c.state, "running");
        let (todo, _) = step(&mut c, &s, &mut devices, &HashMap::new(), 10_000_000_000);
        assert_eq!(c.state, "aborted");
        assert_eq!(devices[0].state, "timed_out");
        assert_eq!(devices[0].reason.as_deref(), Some("timeout"));
        assert!(devices[5].state == "skipped");
        // The canary's twins name the release they had again.
        assert_eq!(todo.len(), 2);
        assert!(
            matches!(&todo[0], Todo::Assign { version: 2, tag, .. } if tag == "campaign-7-rollback")
        );
    }

    #[test]
    fn abort_with_rollback_returns_committed_devices_to_their_release() {
        let s = spec(
            serde_json::json!({"rollback": true, "canary": {"count": 4}, "failure_threshold": {"count": 1}, "on_failure": "abort"}),
        );
        let (mut c, mut devices) = campaign(&s, 20);
        step(&mut c, &s, &mut devices, &HashMap::new(), 1);
        let reports = answer(&devices, |d| d.as_str() == "d3");
        let (todo, _) = step(&mut c, &s, &mut devices, &reports, 2);
        assert_eq!(c.state, "rolling_back");
        assert_eq!(
            devices[..4]
                .iter()
                .map(|d| d.state.as_str())
                .collect::<Vec<_>>(),
            ["rolling_back", "rolling_back", "rolling_back", "failed"]
        );
        assert_eq!(todo.len(), 4, "three roll back, the failed one is restored");
        let reports = answer(&devices, |_| false);
        step(&mut c, &s, &mut devices, &reports, 3);
        assert_eq!(c.state, "rolled_back");
        assert_eq!(devices[0].state, "rolled_back");
    }

    #[test]
    fn assignments_are_signed_again_before_they_expire() {
        let s = spec(serde_json::json!({"assignment_ttl_s": 100, "device_timeout_s": 1000}));
        let (mut c, mut devices) = campaign(&s, 20);
        step(&mut c, &s, &mut devices, &HashMap::new(), 0);
        let (todo, _) = step(&mut c, &s, &mut devices, &HashMap::new(), 40_000_000_000);
        assert!(todo.is_empty());
        let (todo, _) = step(&mut c, &s, &mut devices, &HashMap::new(), 51_000_000_000);
        assert_eq!(todo.len(), 1);
        assert_eq!(devices[0].expires_ns, Some(151_000_000_000));
    }

    #[test]
    fn an_abort_in_the_step_that_signs_again_leaves_the_release_withdrawn() {
        // Devices still installing get a fresh assignment at half-life; a
        // failure that aborts the campaign in that same step must leave
        // them with their previous release only, not both (the later
        // delivery would win).
        let s = spec(
            serde_json::json!({"assignment_ttl_s": 100, "device_timeout_s": 1000, "canary": {"count": 4}, "failure_threshold": {"count": 1}, "on_failure": "abort"}),
        );
        let (mut c, mut devices) = campaign(&s, 20);
        step(&mut c, &s, &mut devices, &HashMap::new(), 0);
        let mut reports = answer(&devices, |d| d.as_str() == "d3");
        reports.retain(|d, _| d.as_str() == "d3");
        let (todo, _) = step(&mut c, &s, &mut devices, &reports, 51_000_000_000);
        assert_eq!(c.state, "aborted");
        assert_eq!(todo.len(), 4, "{todo:?}");
        for t in &todo {
            assert!(
                matches!(t, Todo::Assign { version: 2, tag, .. } if tag == "campaign-7-rollback"),
                "{t:?}"
            );
        }
        assert_eq!(devices[0].state, "withdrawn");
    }

    #[test]
    fn the_order_is_a_fixed_shuffle() {
        let ids: Vec<DeviceId> = (0..50)
            .map(|i| DeviceId::new(format!("m{i:02}")).unwrap())
            .collect();
        let (mut a, mut b) = (ids.clone(), ids.clone());
        shuffle(&mut a, "seed");
        shuffle(&mut b, "seed");
        assert_eq!(a, b);
        assert_ne!(a, ids);
        shuffle(&mut b, "other");
        assert_ne!(a, b);
    }
}
