//! Fleet KPIs, per site and fleet-wide: device uptime (from the presence
//! history), data freshness (time since each device was last heard from),
//! inference latency p50/p99 per model (from the `{model}.latency_us`
//! readings agents store with every prediction), and each model's serving
//! version scored on the last day's labels (accuracy decay).
//!
//! A background task recomputes them every `interval` for the last
//! `window` and keeps the result, so `/metrics` and the API serve them
//! without scanning storage on every scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use strata_proto::DeviceId;
use strata_store::{Device, LabelStore, RangeQuery, TelemetryStore};

use crate::error::Result;
use crate::models::ModelRegistry;
use crate::registry::Registry;

/// A device unheard of for longer than this counts as stale.
pub const STALE_AFTER_NS: i64 = 300_000_000_000;

/// The window KPIs cover: the last hour.
pub const WINDOW_NS: i64 = 3_600_000_000_000;

/// The labels model accuracy is scored on: the last day's.
pub const ACCURACY_WINDOW_NS: i64 = 86_400_000_000_000;

/// How often the background task recomputes them.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// Most latency readings read per device and model.
const MAX_LATENCY_POINTS: usize = 20_000;

/// KPIs of a group of devices (a site, or the fleet).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupKpis {
    /// Active devices.
    pub devices: usize,
    /// Of which online now.
    pub online: usize,
    /// Mean share of the window the devices were online (0..=1).
    pub uptime: f64,
    /// Median seconds since a device was last heard from.
    pub freshness_p50_s: Option<f64>,
    /// Largest such time.
    pub freshness_max_s: Option<f64>,
    /// Devices unheard of for over five minutes (or never).
    pub stale: usize,
}

/// Inference latency of one model in a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelKpis {
    /// The model.
    pub model: String,
    /// `fleet` or a site id.
    pub scope: String,
    /// Inferences measured in the window.
    pub runs: u64,
    /// Median latency, microseconds.
    pub latency_p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub latency_p99_us: f64,
}

/// How a model's serving version scores on the labels of the last day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccuracyKpis {
    /// The model.
    pub model: String,
    /// Its champion (or, without one, its latest version).
    pub version: u32,
    /// Labels paired with a prediction.
    pub pairs: u64,
    /// MAE over them (regressions).
    pub mae: Option<f64>,
    /// Accuracy over them (classifiers).
    pub accuracy: Option<f64>,
    /// Latest hour against the registered figure (see the accuracy API).
    pub decay: Option<f64>,
}

/// Every KPI over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KpiReport {
    /// Window start, ns.
    pub from_ns: i64,
    /// Window end, ns.
    pub to_ns: i64,
    /// The whole fleet.
    pub fleet: GroupKpis,
    /// Per site.
    pub sites: BTreeMap<String, GroupKpis>,
    /// Per model, fleet-wide then per site.
    pub models: Vec<ModelKpis>,
    /// Per model with labels: its serving version's accuracy.
    pub accuracy: Vec<AccuracyKpis>,
}

/// Computes KPIs for `[from_ns, to_ns]` (`to_ns` is "now" for freshness).
pub fn compute(
    registry: &Registry,
    models: &ModelRegistry,
    telemetry: &dyn TelemetryStore,
    labels: &dyn LabelStore,
    from_ns: i64,
    to_ns: i64,
) -> Result<KpiReport> {
    let devices: Vec<Device> = registry
        .devices(None)?
        .into_iter()
        .filter(|d| d.state == strata_store::DeviceState::Active)
        .collect();
    let log = registry.presence_by_device(from_ns, to_ns)?;
    let uptime: BTreeMap<&DeviceId, f64> = devices
        .iter()
        .map(|d| {
            (
                &d.id,
                uptime_share(
                    log.get(&d.id).map_or(&[][..], Vec::as_slice),
                    d,
                    from_ns,
                    to_ns,
                ),
            )
        })
        .collect();
    let group = |members: &[&Device]| -> GroupKpis {
        let mut fresh: Vec<f64> = members
            .iter()
            .filter_map(|d| d.last_seen_ns.map(|t| (to_ns - t).max(0) as f64 / 1e9))
            .collect();
        fresh.sort_by(f64::total_cmp);
        GroupKpis {
            devices: members.len(),
            online: members.iter().filter(|d| d.online).count(),
            uptime: if members.is_empty() {
                0.0
            } else {
                members.iter().map(|d| uptime[&d.id]).sum::<f64>() / members.len() as f64
            },
            freshness_p50_s: quantile(&fresh, 0.5),
            freshness_max_s: fresh.last().copied(),
            stale: members
                .iter()
                .filter(|d| d.last_seen_ns.is_none_or(|t| to_ns - t > STALE_AFTER_NS))
                .count(),
        }
    };
    let all: Vec<&Device> = devices.iter().collect();
    let mut by_site: BTreeMap<String, Vec<&Device>> = BTreeMap::new();
    for d in &devices {
        by_site.entry(d.site.to_string()).or_default().push(d);
    }
    let mut report = KpiReport {
        from_ns,
        to_ns,
        fleet: group(&all),
        sites: by_site.iter().map(|(s, m)| (s.clone(), group(m))).collect(),
        models: Vec::new(),
        accuracy: Vec::new(),
    };
    let by_id: BTreeMap<DeviceId, Device> =
        devices.iter().map(|d| (d.id.clone(), d.clone())).collect();
    for m in models.models()? {
        let serving = m.aliases.get("champion").copied().or(m.latest_version);
        if let Some(v) = serving.and_then(|n| {
            models
                .version(&m.name, &crate::models::VersionRef::Number(n))
                .ok()
        }) && v.lineage.target.is_some()
        {
            let spec = crate::drift::accuracy::AccuracySpec {
                from_ns: to_ns - ACCURACY_WINDOW_NS,
                to_ns,
                bucket_ns: 3_600_000_000_000,
                max_lag_ns: 300_000_000_000,
                by: Vec::new(),
                devices: Vec::new(),
            };
            let a = crate::drift::accuracy::version_accuracy(&v, labels, telemetry, &by_id, &spec)?;
            if a.overall.pairs > 0 {
                report.accuracy.push(AccuracyKpis {
                    model: m.name.clone(),
                    version: v.version,
                    pairs: a.overall.pairs,
                    mae: a.overall.mae,
                    accuracy: a.overall.accuracy,
                    decay: a.decay,
                });
            }
        }
        let signal = format!("{}.latency_us", m.name);
        let mut fleet = Vec::new();
        let mut per_site: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for d in &devices {
            let values = newest_values(
                telemetry,
                &d.id,
                &signal,
                (from_ns, to_ns),
                MAX_LATENCY_POINTS,
            )?;
            per_site
                .entry(d.site.to_string())
                .or_default()
                .extend(&values);
            fleet.extend(values);
        }
        let mut push = |scope: String, mut v: Vec<f64>| {
            if v.is_empty() {
                return;
            }
            v.sort_by(f64::total_cmp);
            report.models.push(ModelKpis {
                model: m.name.clone(),
                scope,
                runs: v.len() as u64,
                latency_p50_us: quantile(&v, 0.5).unwrap_or(0.0),
                latency_p99_us: quantile(&v, 0.99).unwrap_or(0.0),
            });
        };
        push("fleet".into(), fleet);
        for (site, v) in per_site {
            push(site, v);
        }
    }
    Ok(report)
}

/// About the newest `limit` values of `signal` in `[from, to]`: a range
/// keeps the earliest points, so where the window holds more the range is
/// asked again over the last stretch as long as the one its first points
/// covered (at a steady rate, about as many points).
fn newest_values(
    telemetry: &dyn TelemetryStore,
    device: &DeviceId,
    signal: &str,
    (from_ns, to_ns): (i64, i64),
    limit: usize,
) -> Result<Vec<f64>> {
    let query = |from_ns| {
        telemetry.range(&RangeQuery {
            device: device.clone(),
            signal: signal.to_owned(),
            from_ns,
            to_ns,
            bucket_ns: None,
            limit,
        })
    };
    let mut r = query(from_ns)?;
    if r.truncated
        && let Some(last) = r.points.last()
    {
        let covered = last.ts_ns.saturating_sub(from_ns).max(1);
        let newest = query(to_ns.saturating_sub(covered).max(from_ns))?;
        // A rate that fell (a burst, then a device gone quiet) leaves the
        // last stretch with few points: the earliest then say more.
        if newest.points.len() >= limit / 2 {
            r = newest;
        }
    }
    Ok(r.points.iter().map(|p| p.value).collect())
}

/// Share of `[from, to]` a device was online, from its changes (the first
/// may lie before the window). Without any change on record, its current
/// state counts for the part of the window since it was created.
pub(crate) fn uptime_share(changes: &[(i64, bool)], d: &Device, from: i64, to: i64) -> f64 {
    let start = from.max(d.created_ns);
    if to <= start {
        return 0.0;
    }
    if changes.is_empty() {
        return if d.online { 1.0 } else { 0.0 };
    }
    let mut online_ns = 0i64;
    let mut state = false;
    let mut at = start;
    for &(ts, online) in changes {
        let ts = ts.clamp(start, to);
        if state {
            online_ns += ts - at;
        }
        at = ts;
        state = online;
    }
    if state {
        online_ns += to - at;
    }
    online_ns as f64 / (to - start) as f64
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Recomputes the KPIs every [`INTERVAL`] until `stop` turns true.
pub fn spawn(
    cache: Arc<KpiCache>,
    registry: Arc<Registry>,
    models: Arc<ModelRegistry>,
    telemetry: Arc<dyn TelemetryStore>,
    labels: Arc<dyn LabelStore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (c, r, m, t) = (
                cache.clone(),
                registry.clone(),
                models.clone(),
                telemetry.clone(),
            );
            let l = labels.clone();
            let done = tokio::task::spawn_blocking(move || {
                let now = crate::now_ns();
                compute(&r, &m, &*t, &*l, now - WINDOW_NS, now).map(|report| c.set(report))
            })
            .await;
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("cannot compute KPIs: {e}"),
                Err(e) => tracing::warn!("KPI task failed: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}

/// The latest KPIs, recomputed in the background.
#[derive(Default)]
pub struct KpiCache {
    latest: Mutex<Option<Arc<KpiReport>>>,
}

impl KpiCache {
    /// The latest report, if one was computed.
    pub fn latest(&self) -> Option<Arc<KpiReport>> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Keeps `report` as the latest.
    pub fn set(&self, report: KpiReport) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(report));
    }

    /// Renders the latest KPIs in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let Some(r) = self.latest() else {
            return;
        };
        type Gauge = (&'static str, &'static str, fn(&GroupKpis) -> Option<f64>);
        let gauges: [Gauge; 6] = [
            ("strata_kpi_devices", "Active devices.", |g| {
                Some(g.devices as f64)
            }),
            ("strata_kpi_devices_online", "Devices online now.", |g| {
                Some(g.online as f64)
            }),
            (
                "strata_kpi_uptime_ratio",
                "Mean share of the KPI window devices were online.",
                |g| Some(g.uptime),
            ),
            (
                "strata_kpi_freshness_p50_seconds",
                "Median time since a device was last heard from.",
                |g| g.freshness_p50_s,
            ),
            (
                "strata_kpi_freshness_max_seconds",
                "Longest time since a device was last heard from.",
                |g| g.freshness_max_s,
            ),
            (
                "strata_kpi_devices_stale",
                "Devices unheard of for over five minutes.",
                |g| Some(g.stale as f64),
            ),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            if let Some(v) = get(&r.fleet) {
                let _ = writeln!(out, "{name}{{scope=\"fleet\"}} {v}");
            }
            for (site, g) in &r.sites {
                if let Some(v) = get(g) {
                    let _ = writeln!(out, "{name}{{scope=\"{site}\"}} {v}");
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP strata_kpi_inference_latency_microseconds Inference latency at the edge over the KPI window.\n# TYPE strata_kpi_inference_latency_microseconds gauge"
        );
        for m in &r.models {
            for (q, v) in [("0.5", m.latency_p50_us), ("0.99", m.latency_p99_us)] {
                let _ = writeln!(
                    out,
                    "strata_kpi_inference_latency_microseconds{{model=\"{}\",scope=\"{}\",quantile=\"{q}\"}} {v}",
                    m.model, m.scope
                );
            }
        }
        type AccuracyGauge = (&'static str, &'static str, fn(&AccuracyKpis) -> Option<f64>);
        let accuracy: [AccuracyGauge; 3] = [
            (
                "strata_kpi_model_mae",
                "MAE of a model's serving version on the last day's labels.",
                |a| a.mae,
            ),
            (
                "strata_kpi_model_accuracy",
                "Accuracy of a model's serving version on the last day's labels.",
                |a| a.accuracy,
            ),
            (
                "strata_kpi_model_decay",
                "Latest hour's MAE over the registered one (or accuracy lost).",
                |a| a.decay,
            ),
        ];
        for (name, help, get) in accuracy {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for a in &r.accuracy {
                if let Some(v) = get(a) {
                    let _ = writeln!(
                        out,
                        "{name}{{model=\"{}\",version=\"{}\"}} {v}",
                        a.model, a.version
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(created_ns: i64, online: bool) -> Device {
        Device {
            id: DeviceId::new("d").unwrap(),
            site: strata_proto::SiteId::new("s").unwrap(),
            tags: BTreeMap::new(),
            model_version: None,
            firmware_version: None,
            state: strata_store::DeviceState::Active,
            online,
            last_seen_ns: None,
            created_ns,
            revoked_ns: None,
            signals: BTreeMap::new(),
        }
    }

    #[test]
    fn uptime_integrates_the_changes_over_the_window() {
        let d = device(0, false);
        // Online before the window, off at 40, on at 70: 70 of 100.
        let changes = [(-5, true), (40, false), (70, true)];
        assert!((uptime_share(&changes, &d, 0, 100) - 0.7).abs() < 1e-12);
        // Created halfway: only its lifetime counts.
        let d = device(50, false);
        assert!((uptime_share(&[(50, true), (75, false)], &d, 0, 100) - 0.5).abs() < 1e-12);
        // No history: its state now.
        assert_eq!(uptime_share(&[], &device(0, true), 0, 100), 1.0);
        assert_eq!(uptime_share(&[], &device(0, false), 0, 100), 0.0);
    }

    #[test]
    fn latency_is_read_from_the_newest_points_of_the_window() {
        use strata_store::{BatchWrite, Durability, EncodedBatch, SqliteStore};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
        let t0 = 1_700_000_000_000_000_000i64;
        let second = 1_000_000_000;
        // 100 readings a second apart, valued by their index.
        let batch = strata_proto::TelemetryBatch {
            stream: "model:rul:1".into(),
            seq: 1,
            signals: vec![strata_proto::SignalSeries {
                name: "rul.latency_us".into(),
                unit: "us".into(),
                ts_ns: (0..100).map(|i| t0 + i * second).collect(),
                values: (0..100).map(f64::from).collect(),
                quality: vec![],
            }],
        };
        store
            .write_batches(&[BatchWrite {
                device: DeviceId::new("d").unwrap(),
                received_ns: 0,
                batch: EncodedBatch::encode(&batch),
            }])
            .unwrap();
        let d = DeviceId::new("d").unwrap();
        let window = (t0, t0 + 99 * second);
        let newest = newest_values(&store, &d, "rul.latency_us", window, 10).unwrap();
        // The last ten seconds of the window, not its first ten.
        assert_eq!(newest, (90..=99).map(f64::from).collect::<Vec<_>>());
        // Under the limit: all of them.
        let all = newest_values(&store, &d, "rul.latency_us", window, 1000).unwrap();
        assert_eq!(all.len(), 100);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
