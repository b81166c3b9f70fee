//! Phase gates and the closed-loop action record (`[control]`).
//!
//! Each site has a phase: 1 monitoring only, 2 closed loop, 3 autonomous.
//! A site in phase 2 or 3 has its closed-loop rules armed only while its
//! measured KPIs meet the gate set for that phase (device uptime, and a
//! model's accuracy, precision or MAE on the labels of the window). A task
//! measures every gate every `interval_s` and publishes the verdict,
//! retained, on each of the site's devices' `down/control` when it
//! changed. By default a device holds the last verdict through a hub or
//! network outage of any length (the edge stays autonomous); with
//! `gate_valid_s`, an open verdict lapses that long after it was measured,
//! and the hub sends a new one every third of that, so a hub
//! that stops measuring (down, cut off, its store failing) leaves no gate
//! open for long; then, when the devices cannot even be listed, every gate
//! sent open is closed at once. The API shows every check with its measured value, so anyone
//! can see why a gate is open or closed.
//!
//! Devices send every decision their rules take on `up/events`; the hub
//! keeps each record once ([`strata_store::ControlStore`]) and relays
//! operators' approvals of proposed actions on the device's `down/cmd`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Deserialize;
use strata_proto::{Approval, ControlGate, DeviceId, Direction, GateCheck, Topic, TopicKind};
use strata_store::{ControlStore, Device, DeviceState, LabelStore, TelemetryStore};

use crate::downlink::{Downlink, Reach};
use crate::error::{Error, Result};
use crate::models::{ModelRegistry, VersionRef};
use crate::registry::Registry;

/// `[control]` of the hub config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Each site's phase (1, 2 or 3); a site not listed is in phase 1.
    pub phases: BTreeMap<String, u8>,
    /// The gate of each phase (`[control.gates.2]`, `[control.gates.3]`).
    pub gates: BTreeMap<String, GateConfig>,
    /// Gates are measured every this many seconds.
    pub interval_s: u64,
    /// A device holds an open gate this many seconds after it was
    /// measured, unless the hub sends a newer one (every third of this);
    /// unset, until the next verdict.
    pub gate_valid_s: Option<u64>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            phases: BTreeMap::new(),
            gates: BTreeMap::new(),
            interval_s: 15,
            gate_valid_s: None,
        }
    }
}

/// What a site must meet for its closed-loop rules to be armed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// The KPIs are measured over the last this many days.
    #[serde(default = "default_window_days")]
    pub window_days: f64,
    /// Mean share of the window the site's devices were online.
    #[serde(default)]
    pub min_uptime: Option<f64>,
    /// The model whose serving version is scored on the site's labels.
    #[serde(default)]
    pub model: Option<String>,
    /// Lowest accuracy (classifiers).
    #[serde(default)]
    pub min_accuracy: Option<f64>,
    /// Lowest precision of class 1 (classifiers).
    #[serde(default)]
    pub min_precision: Option<f64>,
    /// Highest MAE (regressions).
    #[serde(default)]
    pub max_mae: Option<f64>,
    /// Fewest labelled predictions the model scores count on.
    #[serde(default = "default_min_labels")]
    pub min_labels: u64,
}

fn default_window_days() -> f64 {
    7.0
}
fn default_min_labels() -> u64 {
    20
}

const DAY_NS: f64 = 86_400e9;

impl ControlConfig {
    /// Checks phases and gates; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (site, phase) in &self.phases {
            if !(1..=3).contains(phase) {
                return Err(format!(
                    "[control] phases.{site} = {phase}: a phase is 1, 2 or 3"
                ));
            }
        }
        for (phase, g) in &self.gates {
            let at = format!("[control.gates.{phase}]");
            if phase != "2" && phase != "3" {
                return Err(format!("{at}: gates are set for phase \"2\" or \"3\""));
            }
            if !(g.window_days.is_finite() && g.window_days > 0.0) {
                return Err(format!("{at}: window_days must be above 0"));
            }
            let shares = [
                ("min_uptime", g.min_uptime),
                ("min_accuracy", g.min_accuracy),
                ("min_precision", g.min_precision),
            ];
            for (key, v) in shares {
                if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                    return Err(format!("{at}: {key} is a share between 0 and 1"));
                }
            }
            if g.max_mae.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(format!("{at}: max_mae must be 0 or more"));
            }
            let scores_model =
                g.min_accuracy.is_some() || g.min_precision.is_some() || g.max_mae.is_some();
            if scores_model && g.model.is_none() {
                return Err(format!("{at}: name the `model` the scores are of"));
            }
        }
        if self.interval_s == 0 {
            return Err("[control] interval_s must be at least 1".into());
        }
        if let Some(valid) = self.gate_valid_s
            && valid < self.interval_s.saturating_mul(3)
        {
            return Err(format!(
                "[control] gate_valid_s = {valid} must be at least three times interval_s ({}): the gate is renewed every third of it",
                self.interval_s
            ));
        }
        Ok(())
    }

    /// A site's phase.
    pub fn phase(&self, site: &str) -> u8 {
        self.phases.get(site).copied().unwrap_or(1)
    }
}

/// What measuring a gate reads.
pub struct GateInputs<'a> {
    /// Devices and their presence history.
    pub registry: &'a Registry,
    /// Models and their versions.
    pub models: &'a ModelRegistry,
    /// Labels.
    pub labels: &'a dyn LabelStore,
    /// Predictions.
    pub telemetry: &'a dyn TelemetryStore,
}

/// Measures the gate of `site` (whose active devices are `devices`);
/// `presence` holds the devices' presence changes over at least the
/// gate's window.
pub fn measure(
    config: &ControlConfig,
    site: &str,
    devices: &[Device],
    presence: &BTreeMap<DeviceId, Vec<(i64, bool)>>,
    inputs: &GateInputs<'_>,
    now_ns: i64,
) -> Result<ControlGate> {
    let phase = config.phase(site);
    let mut gate = ControlGate {
        site: site.to_string(),
        phase,
        open: false,
        checks: Vec::new(),
        reason: String::new(),
        ts_ns: now_ns,
        valid_s: config.gate_valid_s.map(|v| v as f64),
    };
    if phase < 2 {
        gate.reason = "phase 1: monitoring only".into();
        return Ok(gate);
    }
    let Some(g) = config.gates.get(&phase.to_string()) else {
        gate.reason = format!("no gate is set for phase {phase} ([control.gates.{phase}])");
        return Ok(gate);
    };
    let from_ns = now_ns - (g.window_days * DAY_NS) as i64;
    let check = |kpi: String, op: &str, required: f64, measured: Option<f64>| GateCheck {
        ok: measured.is_some_and(|m| {
            if op == ">=" {
                m >= required
            } else {
                m <= required
            }
        }),
        kpi,
        op: op.to_string(),
        required,
        measured,
    };
    if let Some(min) = g.min_uptime {
        let uptime = (!devices.is_empty()).then(|| {
            devices
                .iter()
                .map(|d| {
                    let changes = presence.get(&d.id).map_or(&[][..], Vec::as_slice);
                    crate::kpi::uptime_share(changes, d, from_ns, now_ns)
                })
                .sum::<f64>()
                / devices.len() as f64
        });
        gate.checks.push(check(
            format!("uptime over {} d", g.window_days),
            ">=",
            min,
            uptime,
        ));
    }
    if let Some(model) = &g.model {
        let scores = model_scores(model, g, devices, inputs, from_ns, now_ns)?;
        let wanted = [
            ("accuracy", ">=", g.min_accuracy, scores.accuracy),
            ("precision", ">=", g.min_precision, scores.precision),
            ("mae", "<=", g.max_mae, scores.mae),
        ];
        for (name, op, required, measured) in wanted {
            if let Some(required) = required {
                let measured = measured.filter(|_| scores.pairs >= g.min_labels);
                gate.checks.push(check(
                    format!(
                        "{name}({model}) over {} d, {} labels",
                        g.window_days, scores.pairs
                    ),
                    op,
                    required,
                    measured,
                ));
            }
        }
    }
    let failing: Vec<String> = gate
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| match c.measured {
            Some(m) => format!("{} is {m:.4}, needs {} {}", c.kpi, c.op, c.required),
            None => format!("{}: not enough data", c.kpi),
        })
        .collect();
    gate.open = failing.is_empty();
    gate.reason = failing.join("; ");
    Ok(gate)
}

/// The serving version's scores on the site's labels of the window.
fn model_scores(
    model: &str,
    g: &GateConfig,
    devices: &[Device],
    inputs: &GateInputs<'_>,
    from_ns: i64,
    to_ns: i64,
) -> Result<crate::drift::accuracy::Scores> {
    let Ok(info) = inputs.models.model(model) else {
        return Ok(Default::default());
    };
    let Some(n) = info
        .aliases
        .get("champion")
        .copied()
        .or(info.latest_version)
    else {
        return Ok(Default::default());
    };
    let v = inputs.models.version(model, &VersionRef::Number(n))?;
    if v.lineage.target.is_none() || devices.is_empty() {
        return Ok(Default::default());
    }
    let by_id: BTreeMap<DeviceId, Device> =
        devices.iter().map(|d| (d.id.clone(), d.clone())).collect();
    let spec = crate::drift::accuracy::AccuracySpec {
        from_ns,
        to_ns,
        bucket_ns: (g.window_days * DAY_NS) as i64 + 1,
        max_lag_ns: 300_000_000_000,
        by: Vec::new(),
        devices: devices.iter().map(|d| d.id.clone()).collect(),
    };
    let a = crate::drift::accuracy::version_accuracy(
        &v,
        inputs.labels,
        inputs.telemetry,
        &by_id,
        &spec,
    )?;
    Ok(a.overall)
}

/// The gates as last measured, and what each device was last sent.
pub struct Gates {
    config: ControlConfig,
    latest: Mutex<BTreeMap<String, ControlGate>>,
    /// Per device, the gate last sent and when (the hub's clock, ns).
    sent: Mutex<BTreeMap<DeviceId, (ControlGate, i64)>>,
    downlink: Downlink,
    actions: Arc<dyn ControlStore>,
}

/// Two verdicts that differ only in when they were measured, and in the
/// figures their checks measured (which the reason and the label counts
/// quote), are the same: a gate is sent again, and logged, when it opens
/// or closes or a check passes or fails, not whenever a figure moves.
fn same(a: &ControlGate, b: &ControlGate) -> bool {
    fn verdict(g: &ControlGate) -> (&str, u8, bool, Vec<(&str, f64, bool)>) {
        let checks = g.checks.iter().map(|c| (c.op.as_str(), c.required, c.ok));
        (&g.site, g.phase, g.open, checks.collect())
    }
    verdict(a) == verdict(b)
}

/// Whether a device last sent `sent` (at its time) is sent `gate` at
/// `now_ns`: when the verdict changed, or to renew it before it lapses.
fn due(sent: Option<&(ControlGate, i64)>, gate: &ControlGate, now_ns: i64, renew_ns: i64) -> bool {
    sent.is_none_or(|(s, at)| !same(s, gate) || now_ns.saturating_sub(*at) >= renew_ns)
}

impl Gates {
    /// Gates for `config`.
    pub fn new(
        config: ControlConfig,
        downlink: Downlink,
        actions: Arc<dyn ControlStore>,
    ) -> Arc<Self> {
        Arc::new(Gates {
            config,
            latest: Mutex::new(BTreeMap::new()),
            sent: Mutex::new(BTreeMap::new()),
            downlink,
            actions,
        })
    }

    /// Every site's gate as last measured.
    pub fn latest(&self) -> Vec<ControlGate> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Stored action records.
    pub fn actions(&self) -> &dyn ControlStore {
        &*self.actions
    }

    /// Sends every device the gate it was last sent, again (after the
    /// hub's connection to an upstream broker was made again: what was
    /// queued on the lost one may not have reached it).
    pub fn send_again(&self) -> Result<()> {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (device, (gate, _)) in &sent {
            self.send(device, gate, crate::now_ns())?;
        }
        Ok(())
    }

    /// Measures every site's gate and sends each device its site's
    /// verdict when it changed. A site whose gate cannot be measured gets
    /// a closed one; a failure at one site or device leaves the others
    /// served (the first error is returned at the end).
    pub fn cycle(&self, inputs: &GateInputs<'_>) -> Result<()> {
        let now = crate::now_ns();
        let (by_site, presence) = match self.read_devices(inputs, now) {
            Ok(read) => read,
            Err(e) => {
                // Only where gates lapse anyway: by default a device keeps
                // the last verdict through a hub outage, and one failed
                // read (a busy database) must not flap every gate.
                if self.config.gate_valid_s.is_some() {
                    self.close_every_open_gate(&format!("the gates cannot be measured: {e}"), now);
                }
                return Err(e);
            }
        };
        let renew_ns = self
            .config
            .gate_valid_s
            .map_or(i64::MAX, |v| (v as i64 / 3).saturating_mul(1_000_000_000));
        let mut failure = None;
        for (site, devices) in &by_site {
            let gate = match measure(&self.config, site, devices, &presence, inputs, now) {
                Ok(gate) => gate,
                Err(e) => {
                    let reason = format!("the gate cannot be measured: {e}");
                    failure.get_or_insert(e);
                    ControlGate {
                        site: site.clone(),
                        phase: self.config.phase(site),
                        open: false,
                        checks: Vec::new(),
                        reason,
                        ts_ns: now,
                        valid_s: self.config.gate_valid_s.map(|v| v as f64),
                    }
                }
            };
            for d in devices {
                let send = due(
                    self.sent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&d.id),
                    &gate,
                    now,
                    renew_ns,
                );
                if send && let Err(e) = self.send(&d.id, &gate, now) {
                    failure.get_or_insert(e);
                }
            }
            let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
            if latest.get(site).is_none_or(|g| !same(g, &gate)) {
                tracing::info!(
                    site,
                    phase = gate.phase,
                    open = gate.open,
                    "site gate {}",
                    if gate.open { "open" } else { &gate.reason }
                );
            }
            latest.insert(site.clone(), gate);
        }
        failure.map_or(Ok(()), Err)
    }

    /// The active devices by site, and their presence changes over the
    /// longest gate window.
    #[allow(clippy::type_complexity)]
    fn read_devices(
        &self,
        inputs: &GateInputs<'_>,
        now: i64,
    ) -> Result<(
        BTreeMap<String, Vec<Device>>,
        BTreeMap<DeviceId, Vec<(i64, bool)>>,
    )> {
        let mut by_site: BTreeMap<String, Vec<Device>> = BTreeMap::new();
        for d in inputs.registry.devices(None)? {
            if d.state == DeviceState::Active {
                by_site.entry(d.site.to_string()).or_default().push(d);
            }
        }
        // One read of the presence history, over the longest gate window,
        // serves every site (changes before a window are clamped to it).
        let longest = self
            .config
            .gates
            .values()
            .map(|g| g.window_days)
            .fold(0.0, f64::max);
        let presence = inputs
            .registry
            .presence_by_device(now - (longest * DAY_NS) as i64, now)?;
        Ok((by_site, presence))
    }

    /// Sends every device last sent an open gate a closed one, saying why
    /// (what could be sent is; the rest lapse within `gate_valid_s`).
    fn close_every_open_gate(&self, reason: &str, now: i64) {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (device, (gate, _)) in sent.into_iter().filter(|(_, (g, _))| g.open) {
            let closed = ControlGate {
                open: false,
                checks: Vec::new(),
                reason: reason.to_string(),
                ts_ns: now,
                ..gate
            };
            if let Err(e) = self.send(&device, &closed, now) {
                tracing::warn!(%device, "cannot close the gate: {e}");
            }
        }
    }

    fn send(&self, device: &DeviceId, gate: &ControlGate, now: i64) -> Result<()> {
        let topic = Topic::new(device.clone(), Direction::Down, TopicKind::Control).to_string();
        let payload = Bytes::from(serde_json::to_vec(gate).expect("JSON of a gate"));
        self.downlink
            .send(Reach::Everywhere, &topic, payload, true)
            .map_err(|e| Error::Unavailable(format!("cannot send the gate to {device}: {e}")))?;
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(device.clone(), (gate.clone(), now));
        Ok(())
    }

    /// Relays an operator's approval of a proposed action to the device.
    pub fn approve(&self, device: &DeviceId, action: &str, by: &str) -> Result<()> {
        let proposed = self.actions.actions(&strata_store::ActionFilter {
            device: Some(device.clone()),
            action: Some(action.to_string()),
            limit: 10,
            ..Default::default()
        })?;
        if proposed.is_empty() {
            return Err(Error::NotFound(format!(
                "device {device} has proposed no action {action:?}"
            )));
        }
        if let Some(done) = proposed
            .iter()
            .find(|a| a.action.outcome != strata_proto::ActionOutcome::Proposed)
        {
            return Err(Error::Conflict(format!(
                "action {action:?} of {device} is already {}",
                done.action.outcome.as_str()
            )));
        }
        let approval = Approval {
            approve: action.to_string(),
            by: by.to_string(),
        };
        let payload = Bytes::from(serde_json::to_vec(&approval).expect("JSON of an approval"));
        self.downlink
            .command(device, payload)
            .map_err(|e| Error::Unavailable(format!("cannot send the approval to {device}: {e}")))
    }
}

/// Measures the gates every `interval_s` until `stop` turns true.
pub fn spawn(
    gates: Arc<Gates>,
    registry: Arc<Registry>,
    models: Arc<ModelRegistry>,
    labels: Arc<dyn LabelStore>,
    telemetry: Arc<dyn TelemetryStore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let interval = std::time::Duration::from_secs(gates.config.interval_s);
    tokio::spawn(async move {
        loop {
            let (g, r, m, l, t) = (
                gates.clone(),
                registry.clone(),
                models.clone(),
                labels.clone(),
                telemetry.clone(),
            );
            let done = tokio::task::spawn_blocking(move || {
                g.cycle(&GateInputs {
                    registry: &r,
                    models: &m,
                    labels: &*l,
                    telemetry: &*t,
                })
            })
            .await;
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("cannot measure the site gates: {e}"),
                Err(e) => tracing::warn!("gate task failed: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_gates_are_checked() {
        let parse = |t: &str| toml::from_str::<ControlConfig>(t).unwrap().validate();
        parse("phases = { a = 2 }\n[gates.2]\nmin_uptime = 0.99\n").unwrap();
        assert!(
            parse("phases = { a = 4 }")
                .unwrap_err()
                .contains("1, 2 or 3")
        );
        assert!(
            parse("[gates.1]\nmin_uptime = 0.5")
                .unwrap_err()
                .contains("\"2\" or \"3\"")
        );
        assert!(
            parse("[gates.2]\nmin_uptime = 1.5")
                .unwrap_err()
                .contains("min_uptime")
        );
        assert!(
            parse("[gates.2]\nmin_precision = 0.9")
                .unwrap_err()
                .contains("`model`")
        );
        let c: ControlConfig = toml::from_str("phases = { a = 3 }").unwrap();
        assert_eq!((c.phase("a"), c.phase("b")), (3, 1));
    }

    #[test]
    fn verdicts_differing_only_in_time_or_in_figures_are_the_same() {
        let a = ControlGate {
            site: "s".into(),
            phase: 2,
            open: true,
            ts_ns: 1,
            ..Default::default()
        };
        assert!(same(
            &a,
            &ControlGate {
                ts_ns: 9,
                ..a.clone()
            }
        ));
        assert!(!same(
            &a,
            &ControlGate {
                open: false,
                ..a.clone()
            }
        ));
        // A figure that moves without changing a check's verdict (uptime
        // creeping up) is no new verdict; a check that fails is.
        let check = |measured: f64, ok: bool| GateCheck {
            kpi: "uptime".into(),
            op: ">=".into(),
            required: 0.9,
            measured: Some(measured),
            ok,
        };
        let with = |c: GateCheck| ControlGate {
            checks: vec![c],
            ..a.clone()
        };
        assert!(same(&with(check(0.95, true)), &with(check(0.97, true))));
        assert!(!same(&with(check(0.95, true)), &with(check(0.85, false))));
        let failing = |measured: f64| ControlGate {
            open: false,
            reason: format!("uptime is {measured:.4}, needs >= 0.9"),
            ..with(check(measured, false))
        };
        assert!(same(&failing(0.81), &failing(0.83)));
    }

    #[test]
    fn a_gate_is_sent_when_it_changes_and_renewed_before_it_lapses() {
        let open = ControlGate {
            site: "s".into(),
            phase: 2,
            open: true,
            ts_ns: 1,
            ..Default::default()
        };
        let closed = ControlGate {
            open: false,
            ..open.clone()
        };
        let renew = 200;
        assert!(due(None, &open, 0, renew));
        assert!(!due(Some(&(open.clone(), 0)), &open, 199, renew));
        assert!(due(Some(&(open.clone(), 0)), &open, 200, renew));
        // No validity: sent only when it changes.
        assert!(!due(
            Some(&(open.clone(), 0)),
            &open,
            1_800_000_000_000_000_000,
            i64::MAX
        ));
        assert!(due(Some(&(open.clone(), 0)), &closed, 1, renew));
        // Validity too short to renew within it is refused.
        let c: ControlConfig = toml::from_str("interval_s = 60\ngate_valid_s = 120").unwrap();
        assert!(c.validate().unwrap_err().contains("three times"));
    }
}
