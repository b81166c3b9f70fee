//! The procedure that carries rollout campaigns on: a worker thread steps
//! every active campaign whenever a device reports (and at least once a
//! second), delivers the signed assignments each step asks for through
//! the devices' twins, and only then stores the step. Everything it knows
//! is in storage, so a hub restarted at any point resumes each campaign
//! where the last stored step left it; a step cut short is simply taken
//! again (assignments are idempotent).
//!
//! Replicas sharing the campaign store (`[shared] postgres`) each run the
//! worker, woken by the reports of the devices connected to them. A step,
//! an operator's action and a creation hold the store's lock on the
//! campaign (on creating one) besides this hub's own, so replicas take
//! turns, and each reads the campaign afresh under the lock. A save of a
//! campaign that moved since it was read is refused by the store; the
//! step is then taken again from what is stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_proto::{DeviceId, UpdateReport};
use strata_store::{Campaign, CampaignDevice, CampaignStore, TwinStore};

use super::Ota;
use super::campaign::{self, CampaignSpec, Todo};
use crate::error::{Error, Result};
use crate::models::deploy::Deployer;
use crate::wake::Wake;

/// States in which a campaign still has work.
const ACTIVE: [&str; 3] = ["running", "paused", "rolling_back"];

/// The shortest time between two steps: reports arrive in bursts.
const MIN_STEP_INTERVAL: Duration = Duration::from_millis(200);

/// Campaigns and the worker that runs them.
pub struct Campaigns {
    store: Arc<dyn CampaignStore>,
    twins: Arc<dyn TwinStore>,
    ota: Arc<Ota>,
    deployer: Arc<Deployer>,
    /// Held by a step and by an operator's action, so they never interleave.
    lock: Mutex<()>,
    wake: Arc<Wake>,
    stop: AtomicBool,
}

/// A campaign with its progress per wave.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignView {
    /// The campaign.
    #[serde(flatten)]
    pub campaign: Campaign,
    /// Devices in the campaign.
    pub devices: u64,
    /// Devices per state, over all waves.
    pub totals: BTreeMap<String, u64>,
    /// Each wave's progress, the canary first.
    pub progress: Vec<WaveProgress>,
    /// Devices that failed, timed out or could not roll back (the first
    /// 100), with the reason they gave.
    pub failures: Vec<CampaignDevice>,
}

/// One wave's progress.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaveProgress {
    /// Its index (0 is the canary).
    pub wave: u32,
    /// Its devices.
    pub devices: u64,
    /// Devices per state (`pending`, `assigned`, `committed`, `failed`,
    /// `timed_out`, ...).
    pub states: BTreeMap<String, u64>,
    /// When its first assignment was signed, ns.
    pub started_ns: Option<i64>,
    /// When its last device answered, once every device has, ns.
    pub finished_ns: Option<i64>,
}

impl Campaigns {
    /// Starts the worker, which first resumes the campaigns a previous
    /// run left active.
    pub fn start(
        store: Arc<dyn CampaignStore>,
        twins: Arc<dyn TwinStore>,
        ota: Arc<Ota>,
        deployer: Arc<Deployer>,
        wake: Arc<Wake>,
    ) -> Result<Arc<Campaigns>> {
        let campaigns = Arc::new(Campaigns {
            store,
            twins,
            ota,
            deployer,
            lock: Mutex::new(()),
            wake,
            stop: AtomicBool::new(false),
        });
        let worker = campaigns.clone();
        std::thread::Builder::new()
            .name("strata-campaigns".into())
            .spawn(move || worker.run())
            .map_err(|e| Error::Unavailable(format!("cannot start the campaign worker: {e}")))?;
        Ok(campaigns)
    }

    /// Stops the worker after its current step.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.wake();
    }

    fn run(&self) {
        self.wake.wake();
        while !self.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            if let Err(e) = self.step_all() {
                tracing::error!("campaign step failed: {e}");
            }
            std::thread::sleep(MIN_STEP_INTERVAL.saturating_sub(started.elapsed()));
            self.wake.wait(Duration::from_secs(1));
        }
    }

    fn step_all(&self) -> Result<()> {
        for c in self.store.campaigns()? {
            if ACTIVE.contains(&c.state.as_str()) {
                let id = c.id;
                if let Err(e) = self.step(c) {
                    tracing::error!(campaign = id, "campaign step failed: {e}");
                }
            }
        }
        Ok(())
    }

    /// One step of one campaign.
    fn step(&self, mut c: Campaign) -> Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _shared = self.store.lock_campaign(Some(c.id))?;
        // Read again under the locks: an operator, or another replica,
        // may just have acted.
        if let Some(fresh) = self.store.campaign(c.id)? {
            c = fresh;
        }
        if !ACTIVE.contains(&c.state.as_str()) {
            return Ok(());
        }
        let spec = spec_of(&c)?;
        let mut devices = self.store.campaign_devices(c.id)?;
        let reports = self.reports(&devices)?;
        let before = c.clone();
        let (todo, changed) =
            campaign::step(&mut c, &spec, &mut devices, &reports, crate::now_ns());
        if c == before && changed.is_empty() {
            return Ok(());
        }
        self.deliver(&c, &spec, &devices, &todo)?;
        match self.save(&c, &devices, &changed) {
            Err(Error::Store(strata_store::Error::Conflict(why))) => {
                // Its deliveries are taken again from what is stored.
                tracing::info!(campaign = c.id, "step not saved, stepping again: {why}");
                self.wake.wake();
                Ok(())
            }
            saved => saved,
        }
    }

    /// What each device working on the campaign reported last.
    fn reports(&self, devices: &[CampaignDevice]) -> Result<HashMap<DeviceId, Vec<UpdateReport>>> {
        let mut reports = HashMap::new();
        for d in devices
            .iter()
            .filter(|d| d.state == "assigned" || d.state == "rolling_back")
        {
            let twin = self.twins.twin(&d.device)?;
            if let Some(updates) = twin.reported.get("updates")
                && let Ok(updates) = serde_json::from_value::<Vec<UpdateReport>>(updates.clone())
            {
                reports.insert(d.device.clone(), updates);
            }
        }
        Ok(reports)
    }

    /// Signs and delivers what a step asked for.
    fn deliver(
        &self,
        c: &Campaign,
        spec: &CampaignSpec,
        devices: &[CampaignDevice],
        todo: &[Todo],
    ) -> Result<()> {
        let r = &spec.release;
        let mut assign: BTreeMap<(u64, &str), Vec<DeviceId>> = BTreeMap::new();
        // Removals go first and assignments by version: this relies on a
        // step naming each device once (`campaign::step`).
        for t in todo {
            match t {
                Todo::Assign {
                    device,
                    version,
                    tag,
                } => assign
                    .entry((*version, tag.as_str()))
                    .or_default()
                    .push(devices[*device].device.clone()),
                Todo::Remove { device } => {
                    self.deployer
                        .remove_update(&devices[*device].device, &r.kind, &r.name)?;
                }
            }
        }
        let lifetime =
            i64::try_from(spec.assignment_ttl_s.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX);
        for ((version, tag), targets) in assign {
            let started = Instant::now();
            for (device, update) in self
                .ota
                .assign(&r.kind, &r.name, version, &targets, tag, lifetime)?
            {
                self.deployer.assign_update(&device, &update)?;
            }
            tracing::info!(
                campaign = c.id,
                version,
                tag,
                devices = targets.len(),
                ms = started.elapsed().as_millis() as u64,
                "assignments delivered"
            );
        }
        Ok(())
    }

    fn save(&self, c: &Campaign, devices: &[CampaignDevice], changed: &[usize]) -> Result<()> {
        let rows: Vec<CampaignDevice> = changed.iter().map(|&i| devices[i].clone()).collect();
        self.store.save_campaign(c, &rows)?;
        Ok(())
    }

    /// Creates a campaign: picks the devices, fixes their order and waves,
    /// and stores it; the worker opens the canary at once.
    pub fn create(&self, spec: CampaignSpec) -> Result<CampaignView> {
        spec.validate()?;
        let r = &spec.release;
        let release = self.ota.release(&r.kind, &r.name, r.version)?;
        let now = crate::now_ns();
        if release.expires_ns <= now {
            return Err(Error::BadRequest(format!(
                "{} {} version {} has expired",
                r.kind, r.name, r.version
            )));
        }
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let shared = self.store.lock_campaign(None)?;
        if let Some(busy) = self.store.campaigns()?.into_iter().find(|c| {
            ACTIVE.contains(&c.state.as_str())
                && spec_of(c).is_ok_and(|s| s.release.kind == r.kind && s.release.name == r.name)
        }) {
            return Err(Error::Conflict(format!(
                "campaign {} ({}) is still rolling out {} {}: finish or abort it first",
                busy.id, busy.state, r.kind, r.name
            )));
        }
        let mut picked = Vec::new();
        for device in self.deployer.select(&spec.target)? {
            let previous = self.deployer.desired_version(&device, &r.kind, &r.name)?;
            if spec.from_versions.is_empty() || spec.from_versions.contains(&previous.unwrap_or(0))
            {
                picked.push((device, previous));
            }
        }
        if picked.is_empty() {
            return Err(Error::BadRequest(
                "the target and from_versions match no active device".into(),
            ));
        }
        if spec.rollback
            && let Some(lowest) = picked.iter().filter_map(|(_, p)| *p).min()
            && lowest < release.floor()
        {
            return Err(Error::BadRequest(format!(
                "rollback: {} {} version {} does not allow going back to version {lowest} \
                 (its floor is {}); sign it with --min-version {lowest}, or start the campaign without rollback",
                r.kind,
                r.name,
                r.version,
                release.floor()
            )));
        }
        let mut order: Vec<DeviceId> = picked.iter().map(|(d, _)| d.clone()).collect();
        campaign::shuffle(
            &mut order,
            &format!("{}/{}/{}/{now}", r.kind, r.name, r.version),
        );
        let previous: HashMap<DeviceId, Option<u64>> = picked.into_iter().collect();
        let sizes = spec.plan(order.len());
        let mut rows = Vec::with_capacity(order.len());
        let mut ids = order.into_iter();
        for (wave, size) in sizes.iter().enumerate() {
            for device in ids.by_ref().take(*size) {
                rows.push(CampaignDevice {
                    previous: previous.get(&device).copied().flatten(),
                    device,
                    wave: wave as u32,
                    state: "pending".into(),
                    assigned_ns: None,
                    expires_ns: None,
                    decided_ns: None,
                    reason: None,
                });
            }
        }
        let c = Campaign {
            id: 0,
            spec: serde_json::to_value(&spec).expect("JSON of a spec"),
            state: "running".into(),
            reason: String::new(),
            wave: 0,
            waves: sizes.len() as u32,
            created_ns: now,
            updated_ns: now,
            baseline_decided: 0,
            baseline_failed: 0,
            revision: 0,
        };
        let id = self.store.create_campaign(&c, &rows)?;
        tracing::info!(
            campaign = id,
            kind = r.kind,
            name = r.name,
            version = r.version,
            devices = rows.len(),
            waves = ?sizes,
            "campaign created"
        );
        self.wake.wake();
        drop(shared);
        drop(guard);
        self.view(id)
    }

    /// Every campaign, newest first.
    pub fn list(&self) -> Result<Vec<Campaign>> {
        Ok(self.store.campaigns()?)
    }

    /// A campaign and its progress per wave.
    pub fn view(&self, id: i64) -> Result<CampaignView> {
        let c = self
            .store
            .campaign(id)?
            .ok_or_else(|| Error::NotFound(format!("no campaign {id}")))?;
        let devices = self.store.campaign_devices(id)?;
        let mut progress: Vec<WaveProgress> = (0..c.waves)
            .map(|wave| WaveProgress {
                wave,
                devices: 0,
                states: BTreeMap::new(),
                started_ns: None,
                finished_ns: None,
            })
            .collect();
        for d in &devices {
            if let Some(w) = progress.get_mut(d.wave as usize) {
                w.devices += 1;
                *w.states.entry(d.state.clone()).or_default() += 1;
                w.started_ns = match (w.started_ns, d.assigned_ns) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                w.finished_ns = w.finished_ns.max(d.decided_ns);
            }
        }
        for w in &mut progress {
            let open = ["pending", "assigned", "rolling_back"]
                .iter()
                .any(|s| w.states.contains_key(*s));
            if open {
                w.finished_ns = None;
            }
        }
        Ok(CampaignView {
            devices: devices.len() as u64,
            failures: devices
                .iter()
                .filter(|d| ["failed", "timed_out", "rollback_failed"].contains(&d.state.as_str()))
                .take(100)
                .cloned()
                .collect(),
            totals: campaign::counts(&devices),
            progress,
            campaign: c,
        })
    }

    /// An operator's `pause`, `resume` or `abort`.
    pub fn act(&self, id: i64, action: &str) -> Result<CampaignView> {
        {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let _shared = self.store.lock_campaign(Some(id))?;
            let mut c = self
                .store
                .campaign(id)?
                .ok_or_else(|| Error::NotFound(format!("no campaign {id}")))?;
            let spec = spec_of(&c)?;
            let mut devices = self.store.campaign_devices(id)?;
            let now = crate::now_ns();
            let (todo, changed) = match action {
                "pause" => {
                    campaign::pause_by_hand(&mut c, now)?;
                    (Vec::new(), Vec::new())
                }
                "resume" => {
                    campaign::resume(&mut c, &devices, now)?;
                    (Vec::new(), Vec::new())
                }
                "abort" if ["running", "paused"].contains(&c.state.as_str()) => campaign::abort(
                    &mut c,
                    &spec,
                    &mut devices,
                    "aborted by an operator".into(),
                    now,
                ),
                "abort" => {
                    return Err(Error::Conflict(format!(
                        "campaign {id} is {}; only a running or paused campaign can be aborted",
                        c.state
                    )));
                }
                other => {
                    return Err(Error::BadRequest(format!(
                        "{other:?} is not a campaign action: use pause, resume or abort"
                    )));
                }
            };
            self.deliver(&c, &spec, &devices, &todo)?;
            self.save(&c, &devices, &changed)?;
            tracing::info!(campaign = id, action, state = c.state, "campaign action");
        }
        self.wake.wake();
        self.view(id)
    }
}

fn spec_of(c: &Campaign) -> Result<CampaignSpec> {
    serde_json::from_value(c.spec.clone()).map_err(|e| {
        Error::Conflict(format!(
            "the stored spec of campaign {} is damaged: {e}",
            c.id
        ))
    })
}
