//! Alerts: rules on telemetry, predictions and device health, evaluated on
//! every stored reading they watch, with severity, deduplication, a
//! lifecycle (active, acknowledged, cleared) and a history of each alert.
//!
//! The storage writer hands every stored batch that carries a watched
//! signal to [`Alerts::offer`] (a copy of its packed bytes on a bounded
//! queue, so ingest never waits on alerting); one thread decodes the
//! watched signals, runs the [`eval::Evaluator`], and records each change
//! with its webhook deliveries in one transaction. Once a second it also
//! checks device presence for `offline` rules and stores the latest value
//! and breach count of open alerts.

pub mod eval;
pub mod rules;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_proto::DeviceId;
use strata_store::{AlertEvent, AlertFilter, AlertStore, EncodedBatch, StoredAlert};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::now_ns;
use crate::registry::Registry;
use crate::wake::Worker;
use crate::webhooks::Webhooks;
use crate::workflows::Workflows;
use eval::{Evaluator, Verdict};
use rules::{AlertRule, Condition, Severity};

/// Batches waiting for the alert thread before new ones are dropped (and
/// counted).
const QUEUE: usize = 4096;

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Raised, nobody has acknowledged it.
    Active,
    /// Someone has taken it on; the condition still holds.
    Acknowledged,
    /// The condition no longer holds.
    Cleared,
}

impl AlertState {
    fn as_str(self) -> &'static str {
        match self {
            AlertState::Active => "active",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Cleared => "cleared",
        }
    }
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// Its id.
    pub id: i64,
    /// The rule that raised it.
    pub rule: String,
    /// The device.
    pub device: String,
    /// How bad it is.
    pub severity: Severity,
    /// Where it stands.
    pub state: AlertState,
    /// What it is about, in words.
    pub message: String,
    /// The signal watched (empty for `offline`).
    pub signal: String,
    /// The rule's condition.
    pub condition: Condition,
    /// The rule's threshold, rate or z-score limit.
    pub threshold: f64,
    /// The value that raised it.
    #[serde(deserialize_with = "number_or_null")]
    pub raised_value: f64,
    /// The latest breaching value.
    #[serde(deserialize_with = "number_or_null")]
    pub last_value: f64,
    /// Breaching readings seen while it was open (the first included).
    pub breaches: u64,
    /// When the condition started to hold, ns.
    pub since_ns: i64,
    /// When it was raised, ns.
    pub raised_ns: i64,
    /// When it last changed, ns.
    pub updated_ns: i64,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_ns: Option<i64>,
    /// Their note.
    pub note: Option<String>,
    /// When it cleared, ns.
    pub cleared_ns: Option<i64>,
}

/// A stored value; `null` is an infinite z-score or rate that an older
/// hub stored as JSON's nothing, read as the largest number.
fn number_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::MAX))
}

impl Alert {
    fn stored(&self) -> StoredAlert {
        StoredAlert {
            id: self.id,
            rule: self.rule.clone(),
            device: self.device.clone(),
            state: self.state.as_str().into(),
            raised_ns: self.raised_ns,
            updated_ns: self.updated_ns,
            body: serde_json::to_value(self).expect("an alert is JSON"),
        }
    }

    fn from_stored(s: StoredAlert) -> Result<Alert> {
        serde_json::from_value(s.body)
            .map_err(|e| Error::Unavailable(format!("alert {} is unreadable: {e}", s.id)))
    }
}

/// An alert with its history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlertDetail {
    /// The alert.
    #[serde(flatten)]
    pub alert: Alert,
    /// Its changes, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub history: Vec<AlertEvent>,
}

/// A stored batch for the alert thread.
struct Offered {
    device: DeviceId,
    blob: Vec<u8>,
}

/// What the alert thread owns, behind one lock (the API's acknowledgements
/// take it too).
struct State {
    eval: Evaluator,
    /// Open alerts by (rule index, device).
    open: HashMap<(usize, String), Alert>,
    /// Open alerts whose latest value or count changed since the last flush.
    dirty: HashSet<(usize, String)>,
    next_id: i64,
    /// Each device's site, refreshed every second.
    sites: HashMap<String, String>,
}

/// The alerting service.
pub struct Alerts {
    /// Rule indexes by the signal they watch.
    by_signal: HashMap<String, Vec<usize>>,
    state: Mutex<State>,
    store: Arc<dyn AlertStore>,
    registry: Arc<Registry>,
    webhooks: Arc<Webhooks>,
    workflows: Arc<Workflows>,
    queue: SyncSender<Offered>,
    dropped: AtomicU64,
    raised: Mutex<BTreeMap<String, u64>>,
    /// Whether a rule needs the device list (an `offline` rule, or one
    /// limited to a site): otherwise the tick does not read it.
    needs_devices: bool,
    /// When this hub started, ns.
    started_ns: i64,
    /// Whether this replica raises `offline` alerts now.
    offline_lease: crate::shared::Lease,
    /// Whether a rule is an `offline` one.
    has_offline_rules: bool,
    worker: Worker,
}

/// Whether `rules` watch device presence (an `offline` rule).
pub fn watches_presence(rules: &[AlertRule]) -> bool {
    rules.iter().any(|r| r.condition == Condition::Offline)
}

/// How long devices have after a hub starts to connect to it again (their
/// reconnect delays reach 30 s) before they count as offline.
const RECONNECT_GRACE_NS: i64 = 60_000_000_000;

/// Since when a device not connected counts as offline, for `offline`
/// rules: since it was last heard from, but a device last heard from
/// before this hub started (a restart, an upgrade, a crash disconnects the
/// whole fleet at once) only once it has had time to connect again, so a
/// restart does not raise an alert for every device.
fn offline_since(last_seen_ns: i64, started_ns: i64) -> i64 {
    if last_seen_ns < started_ns {
        last_seen_ns.max(started_ns.saturating_add(RECONNECT_GRACE_NS))
    } else {
        last_seen_ns
    }
}

impl Alerts {
    /// Loads the open alerts and starts the alert thread.
    pub fn start(
        rules: Vec<AlertRule>,
        store: Arc<dyn AlertStore>,
        registry: Arc<Registry>,
        webhooks: Arc<Webhooks>,
        workflows: Arc<Workflows>,
        offline_lease: crate::shared::Lease,
    ) -> Result<Arc<Alerts>> {
        rules::validate_all(&rules).map_err(Error::BadRequest)?;
        let mut by_signal: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            if r.condition != Condition::Offline {
                by_signal.entry(r.signal.clone()).or_default().push(i);
            }
        }
        let mut eval = Evaluator::new(rules.clone());
        let mut open = HashMap::new();
        let filter = AlertFilter {
            open: true,
            ..AlertFilter::default()
        };
        // Open alerts no configured rule watches any more (the rule was
        // removed or renamed, or its device list no longer names the
        // device): nothing would ever clear them, so they clear now.
        let mut unwatched = Vec::new();
        for stored in store.alerts(&filter, usize::MAX >> 1)? {
            let alert = Alert::from_stored(stored)?;
            match rules.iter().position(|r| r.name == alert.rule) {
                Some(i) if applies_to_device(&rules[i], &alert.device) => {
                    eval.mark_open(i, &alert.device);
                    open.insert((i, alert.device.clone()), alert);
                }
                Some(_) => unwatched.push((alert, "no longer watches its device")),
                None => unwatched.push((alert, "is no longer configured")),
            }
        }
        let needs_devices = rules
            .iter()
            .any(|r| r.condition == Condition::Offline || r.site.is_some());
        let (queue, offered) = std::sync::mpsc::sync_channel(QUEUE);
        let alerts = Arc::new(Alerts {
            by_signal,
            state: Mutex::new(State {
                eval,
                open,
                dirty: HashSet::new(),
                next_id: store.max_alert_id()? + 1,
                sites: HashMap::new(),
            }),
            store,
            registry,
            webhooks,
            workflows,
            queue,
            dropped: AtomicU64::new(0),
            raised: Mutex::new(BTreeMap::new()),
            needs_devices,
            started_ns: now_ns(),
            offline_lease,
            has_offline_rules: watches_presence(&rules),
            worker: Worker::default(),
        });
        let now = now_ns();
        for (mut alert, why) in unwatched {
            alert.state = AlertState::Cleared;
            alert.cleared_ns = Some(now);
            alert.updated_ns = now;
            let detail = format!("cleared at start: rule {:?} {why}", alert.rule);
            // Not stored: it stays open, and the next start tries again.
            alerts.record(&alert, "cleared", detail);
        }
        if !rules.is_empty() {
            let worker = Arc::clone(&alerts);
            alerts
                .worker
                .spawn("strata-alerts", move || worker.run(&offered))
                .map_err(|e| Error::Unavailable(format!("cannot start the alert thread: {e}")))?;
        }
        Ok(alerts)
    }

    /// The configured rules.
    pub fn rules(&self) -> Vec<AlertRule> {
        self.lock().eval.rules().to_vec()
    }

    /// Called by the storage writer with each batch it stored: queues a copy
    /// when the batch carries a watched signal. Never blocks; when the alert
    /// thread is behind, the batch is dropped and counted.
    pub fn offer(&self, device: &DeviceId, batch: &EncodedBatch) {
        if self.by_signal.is_empty()
            || !batch
                .signals()
                .any(|(name, _, _)| self.by_signal.contains_key(name))
        {
            return;
        }
        let offered = Offered {
            device: device.clone(),
            blob: batch.data.clone(),
        };
        if let Err(TrySendError::Full(_)) = self.queue.try_send(offered) {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Stops the alert thread.
    pub fn stop(&self) {
        self.worker.stop();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, offered: &Receiver<Offered>) {
        // (`checked_sub`: an Instant a second back does not exist in the
        // first second after a boot.)
        let mut last_tick = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        while !self.worker.stopping() {
            match offered.recv_timeout(Duration::from_millis(200)) {
                Ok(o) => self.evaluate(&o),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                if let Err(e) = self.tick() {
                    tracing::warn!("alerts: {e}");
                }
            }
        }
    }

    /// Runs the rules watching the signals of one stored batch.
    fn evaluate(&self, o: &Offered) {
        let mut state = self.lock();
        let site = state.sites.get(o.device.as_str()).cloned();
        let mut points = Vec::new();
        let decoded = strata_store::blob::for_each_signal(
            &o.blob,
            |name| self.by_signal.contains_key(name),
            |name, _unit, each| {
                points.clear();
                each(&mut |p| points.push((p.ts_ns, p.value)))?;
                points.sort_by_key(|&(ts, _)| ts);
                for &rule in &self.by_signal[name] {
                    if !applies(
                        &state.eval.rules()[rule],
                        o.device.as_str(),
                        site.as_deref(),
                    ) {
                        continue;
                    }
                    for &(ts, v) in &points {
                        if let Some(verdict) = state.eval.reading(rule, o.device.as_str(), ts, v) {
                            self.apply(&mut state, rule, o.device.as_str(), verdict);
                        }
                    }
                }
                Ok(())
            },
        );
        if let Err(e) = decoded {
            tracing::warn!("alerts: cannot decode a batch of {}: {e}", o.device);
        }
    }

    /// Once a second: presence for `offline` rules, sites, and the latest
    /// values of open alerts.
    fn tick(&self) -> Result<()> {
        let devices = if self.needs_devices {
            self.registry.devices(None)?
        } else {
            Vec::new()
        };
        // Replicas sharing a registry: only the one holding the lease
        // raises `offline` alerts; the others still clear the ones they
        // raised before. Asked before taking the state's lock: the lease
        // may wait on the database.
        let raises = !self.has_offline_rules || self.offline_lease.held();
        let now = now_ns();
        let mut state = self.lock();
        if self.needs_devices {
            state.sites = devices
                .iter()
                .map(|d| (d.id.to_string(), d.site.to_string()))
                .collect();
        }
        let offline_rules: Vec<usize> = (0..state.eval.rules().len())
            .filter(|&i| state.eval.rules()[i].condition == Condition::Offline)
            .collect();
        for rule in offline_rules {
            for d in &devices {
                let r = &state.eval.rules()[rule];
                // Never-seen devices were never online.
                let watched = d.last_seen_ns.is_some()
                    && applies(r, d.id.as_str(), Some(d.site.as_str()))
                    && (raises || state.open.contains_key(&(rule, d.id.to_string())));
                if !watched {
                    continue;
                }
                // Revoked devices are cut off on purpose: never offline,
                // so an alert raised before the revocation clears instead
                // of staying open for good.
                let revoked = d.state != strata_store::DeviceState::Active;
                let since = (!d.online && !revoked)
                    .then(|| offline_since(d.last_seen_ns.unwrap_or(now), self.started_ns));
                if let Some(v) = state.eval.presence(rule, d.id.as_str(), since, now) {
                    self.apply(&mut state, rule, d.id.as_str(), v);
                }
            }
        }
        let dirty: Vec<(usize, String)> = state.dirty.drain().collect();
        for key in dirty {
            if let Some(alert) = state.open.get(&key) {
                self.store.touch_alert(&alert.stored())?;
            }
        }
        Ok(())
    }

    /// Turns a verdict into an alert change.
    fn apply(&self, state: &mut State, rule: usize, device: &str, verdict: Verdict) {
        let key = (rule, device.to_owned());
        let now = now_ns();
        match verdict {
            Verdict::Raise { value, since_ns } => {
                let r = &state.eval.rules()[rule];
                let alert = Alert {
                    id: state.next_id,
                    rule: r.name.clone(),
                    device: device.to_owned(),
                    severity: r.severity,
                    state: AlertState::Active,
                    message: r.describe(device, value),
                    signal: r.signal.clone(),
                    condition: r.condition,
                    threshold: r.threshold(),
                    raised_value: value,
                    last_value: value,
                    breaches: 1,
                    since_ns,
                    raised_ns: now,
                    updated_ns: now,
                    acknowledged_by: None,
                    acknowledged_ns: None,
                    note: None,
                    cleared_ns: None,
                };
                let detail = alert.message.clone();
                if self.record(&alert, "raised", detail) {
                    state.next_id += 1;
                    *self
                        .raised
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(alert.rule.clone())
                        .or_default() += 1;
                    state.open.insert(key, alert);
                } else {
                    // Not stored: forget it, so the next breach tries again.
                    state.eval.mark_closed(rule, device);
                }
            }
            Verdict::Breach { value } => {
                if let Some(alert) = state.open.get_mut(&key) {
                    alert.last_value = value;
                    alert.breaches += 1;
                    state.dirty.insert(key);
                }
            }
            Verdict::Clear { value } => {
                let Some(mut alert) = state.open.remove(&key) else {
                    return;
                };
                let before = alert.clone();
                let was_dirty = state.dirty.remove(&key);
                alert.state = AlertState::Cleared;
                alert.cleared_ns = Some(now);
                alert.updated_ns = now;
                let detail = if alert.condition == Condition::Offline {
                    format!("{device} is back online")
                } else {
                    format!(
                        "{} is back to {value} (limit {})",
                        alert.signal, alert.threshold
                    )
                };
                if !self.record(&alert, "cleared", detail) {
                    // Keep it open as it was (acknowledged or not): the
                    // next reading clears it again.
                    if was_dirty {
                        state.dirty.insert(key.clone());
                    }
                    state.open.insert(key, before);
                    state.eval.mark_open(rule, device);
                }
            }
        }
    }

    /// Stores a change with its history entry, webhooks and the workflow
    /// runs it starts; false (logged) when storage refused it.
    fn record(&self, alert: &Alert, kind: &str, detail: String) -> bool {
        let event = AlertEvent {
            ts_ns: alert.updated_ns,
            kind: kind.into(),
            detail,
        };
        let name = format!("alert.{kind}");
        let body = serde_json::json!({ "event": name, "alert": alert });
        let deliveries = self.webhooks.deliveries_for(&name, &body);
        let runs = self.workflows.runs_for(&name, &alert.rule, &body["alert"]);
        match self
            .store
            .record_alert(&alert.stored(), &event, &deliveries, &runs)
        {
            Ok(()) => {
                if !deliveries.is_empty() {
                    self.webhooks.queued();
                }
                if !runs.is_empty() {
                    self.workflows.queued();
                }
                true
            }
            Err(e) => {
                tracing::warn!("alerts: cannot store alert {} ({kind}): {e}", alert.id);
                false
            }
        }
    }

    /// Acknowledges an open alert.
    pub fn acknowledge(&self, id: i64, by: &str, note: Option<String>) -> Result<Alert> {
        if by.trim().is_empty() {
            return Err(Error::BadRequest(
                "say who acknowledges the alert (by)".into(),
            ));
        }
        let mut state = self.lock();
        let Some(key) = state
            .open
            .iter()
            .find(|(_, a)| a.id == id)
            .map(|(k, _)| k.clone())
        else {
            // `alert` takes the state's lock again.
            drop(state);
            let stored = self.alert(id)?.alert;
            return Err(Error::Conflict(match stored.state {
                AlertState::Cleared => {
                    format!("alert {id} is cleared: only an open alert can be acknowledged")
                }
                _ => format!(
                    "alert {id} belongs to rule {:?}, which is no longer configured",
                    stored.rule
                ),
            }));
        };
        let alert = state.open.get_mut(&key).expect("found above");
        if alert.state == AlertState::Acknowledged {
            return Err(Error::Conflict(format!(
                "alert {id} was already acknowledged by {}",
                alert.acknowledged_by.as_deref().unwrap_or("someone")
            )));
        }
        let mut acked = alert.clone();
        let now = now_ns();
        acked.state = AlertState::Acknowledged;
        acked.acknowledged_by = Some(by.to_owned());
        acked.acknowledged_ns = Some(now);
        acked.note = note.clone();
        acked.updated_ns = now;
        let detail = match &note {
            Some(n) => format!("acknowledged by {by}: {n}"),
            None => format!("acknowledged by {by}"),
        };
        if !self.record(&acked, "acknowledged", detail) {
            return Err(Error::Unavailable(format!(
                "cannot store the acknowledgement of alert {id}"
            )));
        }
        *alert = acked.clone();
        state.dirty.remove(&key);
        Ok(acked)
    }

    /// One alert with its history.
    pub fn alert(&self, id: i64) -> Result<AlertDetail> {
        let stored = self
            .store
            .alert(id)?
            .ok_or_else(|| Error::NotFound(format!("no alert {id}")))?;
        let alert = self.fresh(vec![Alert::from_stored(stored)?]).remove(0);
        Ok(AlertDetail {
            alert,
            history: self.store.alert_events(id)?,
        })
    }

    /// Alerts, newest first.
    pub fn alerts(&self, filter: &AlertFilter, limit: usize) -> Result<Vec<Alert>> {
        let stored = self
            .store
            .alerts(filter, limit)?
            .into_iter()
            .map(Alert::from_stored)
            .collect::<Result<Vec<_>>>()?;
        Ok(self.fresh(stored))
    }

    /// How many alerts match `filter` (their states are always stored at
    /// once, so this agrees with [`Alerts::alerts`]).
    pub fn count(&self, filter: &AlertFilter) -> Result<u64> {
        Ok(self.store.count_alerts(filter)?)
    }

    /// Stored alerts with each open one replaced by its in-memory version
    /// (whose latest value and count may not be flushed yet).
    fn fresh(&self, alerts: Vec<Alert>) -> Vec<Alert> {
        let state = self.lock();
        let open: HashMap<i64, &Alert> = state.open.values().map(|a| (a.id, a)).collect();
        alerts
            .into_iter()
            .map(|a| match open.get(&a.id) {
                Some(live) => (*live).clone(),
                None => a,
            })
            .collect()
    }

    /// `strata_alerts_open{severity}`, `strata_alerts_raised_total{rule}`,
    /// `strata_alert_batches_dropped_total`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let mut open: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        let state = self.lock();
        for a in state.open.values() {
            *open
                .entry((a.severity.as_str(), a.state.as_str()))
                .or_default() += 1;
        }
        out.push_str(
            "# HELP strata_alerts_open Open alerts by severity and state.\n\
             # TYPE strata_alerts_open gauge\n",
        );
        for severity in ["info", "warning", "critical"] {
            for st in ["active", "acknowledged"] {
                let n = open.get(&(severity, st)).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "strata_alerts_open{{severity=\"{severity}\",state=\"{st}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP strata_alerts_raised_total Alerts raised by rule.\n\
             # TYPE strata_alerts_raised_total counter\n",
        );
        let raised = self.raised.lock().unwrap_or_else(|e| e.into_inner());
        for r in state.eval.rules() {
            let n = raised.get(&r.name).copied().unwrap_or(0);
            let rule = crate::metrics::label_value(&r.name);
            let _ = writeln!(out, "strata_alerts_raised_total{{rule=\"{rule}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP strata_alert_batches_dropped_total Stored batches the alert thread was too busy to evaluate.\n\
             # TYPE strata_alert_batches_dropped_total counter\n\
             strata_alert_batches_dropped_total {}",
            self.dropped.load(Relaxed)
        );
    }
}

/// Whether `rule`'s device list (if any) names `device`.
fn applies_to_device(rule: &AlertRule, device: &str) -> bool {
    rule.devices.is_empty() || rule.devices.iter().any(|d| d == device)
}

/// Whether `rule` watches `device` (of `site`).
fn applies(rule: &AlertRule, device: &str, site: Option<&str>) -> bool {
    applies_to_device(rule, device) && rule.site.as_deref().is_none_or(|s| Some(s) == site)
}

#[cfg(test)]
mod tests {
    use super::eval::{Evaluator, Verdict};
    use super::rules::AlertRule;
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn a_hub_restart_gives_the_fleet_time_to_reconnect_before_offline_alerts() {
        let rule: AlertRule = toml::from_str("name = \"gone\"\ncondition = \"offline\"\n").unwrap();
        let mut eval = Evaluator::new(vec![rule]);
        let started = 1_000 * S;
        // Both were cut off by the restart; one reconnects in time.
        let last_seen = started - 2 * S;
        for now in [started + S, started + 30 * S] {
            let since = offline_since(last_seen, started);
            assert_eq!(eval.presence(0, "slow", Some(since), now), None, "at {now}");
            assert_eq!(eval.presence(0, "back", Some(since), now), None);
        }
        assert_eq!(eval.presence(0, "back", None, started + 40 * S), None);
        // The other is still away once the grace is over.
        let verdict = eval.presence(
            0,
            "slow",
            Some(offline_since(last_seen, started)),
            started + 61 * S,
        );
        assert!(
            matches!(verdict, Some(Verdict::Raise { .. })),
            "{verdict:?}"
        );
        // A device heard from since the start is judged at once.
        let seen_since = started + 100 * S;
        assert_eq!(offline_since(seen_since, started), seen_since);
        let verdict = eval.presence(0, "later", Some(seen_since), seen_since);
        assert!(
            matches!(verdict, Some(Verdict::Raise { .. })),
            "{verdict:?}"
        );
    }
}
