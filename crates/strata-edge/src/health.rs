//! The agent's health heartbeat: uptime, CPU, memory, outbox depth, free
//! disk space, each source's state, inference latency p50/p99 per model and
//! every drop counter, sent as an ordinary telemetry batch on the `health`
//! stream, so heartbeats are stored, queried and charted like any other
//! signal, and the ones taken while the hub was away arrive later instead
//! of vanishing.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use strata_proto::SignalSeries;

use crate::outbox::OutboxStats;
use crate::sources::SourceStats;

/// Stream name of heartbeats.
pub const HEALTH_STREAM: &str = "health";

/// Latencies of one model since the last heartbeat, in log-spaced buckets
/// (about 9 % wide), so recording is a counter increment and p50/p99 need
/// no stored samples.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
}

/// Bucket i holds latencies in [BASE^i, BASE^(i+1)) nanoseconds.
const BASE: f64 = 1.09;
const BUCKETS: usize = 320;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&self, ns: u64) {
        let i = if ns <= 1 {
            0
        } else {
            ((ns as f64).ln() / BASE.ln()) as usize
        };
        self.buckets[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The q-quantile (0..=1) in nanoseconds (the middle of its bucket),
    /// and resets nothing. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count.load(Ordering::Relaxed);
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(BASE.powf(i as f64 + 0.5));
            }
        }
        Some(BASE.powf(BUCKETS as f64))
    }

    /// Empties the histogram (at each heartbeat: p50/p99 are per interval).
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
    }
}

/// Counters of one model, read by the heartbeat.
#[derive(Debug, Default)]
pub struct ModelStats {
    /// Latency of each run since the last heartbeat.
    pub latency: LatencyHistogram,
    /// Runs in all.
    pub runs: AtomicU64,
    /// Runs that failed.
    pub errors: AtomicU64,
}

/// Everything the heartbeat reports, shared by the agent's parts.
#[derive(Debug)]
pub struct HealthState {
    started: Instant,
    /// Per source: (stream, counters).
    pub sources: Vec<(String, Arc<SourceStats>)>,
    /// Per model: (name, counters); replaced when the hub deploys models.
    models: Mutex<Vec<(String, Arc<ModelStats>)>>,
    /// Readings the pipeline refused (not finite, late, out of range with
    /// the drop action).
    pub pipeline_dropped: AtomicU64,
    /// Readings stamped more than five minutes ahead of the gateway's
    /// clock, dropped before the pipeline.
    pub readings_ahead: AtomicU64,
    /// Frames the pipeline turned into output (series or vectors): whether
    /// a new pipeline is up.
    pub pipeline_outputs: AtomicU64,
    /// Frames or batches that could not be written to the outbox.
    pub outbox_errors: AtomicU64,
    /// Drift sketch windows written to the outbox.
    pub sketch_batches: AtomicU64,
    /// Changes the edge's drift detectors found.
    pub drift_detections: AtomicU64,
    cpu: Mutex<Option<(Instant, f64)>>,
}

impl HealthState {
    /// A fresh state; uptime counts from now.
    pub fn new(
        sources: Vec<(String, Arc<SourceStats>)>,
        models: Vec<(String, Arc<ModelStats>)>,
    ) -> Self {
        HealthState {
            started: Instant::now(),
            sources,
            models: Mutex::new(models),
            pipeline_dropped: AtomicU64::new(0),
            readings_ahead: AtomicU64::new(0),
            pipeline_outputs: AtomicU64::new(0),
            outbox_errors: AtomicU64::new(0),
            sketch_batches: AtomicU64::new(0),
            drift_detections: AtomicU64::new(0),
            cpu: Mutex::new(None),
        }
    }

    /// Readings all sources produced since the start: unchanged while the
    /// line is idle.
    pub fn readings_in(&self) -> u64 {
        self.sources
            .iter()
            .map(|(_, s)| s.readings.load(Ordering::Relaxed))
            .sum()
    }

    /// The models reported from now on (after a deployment).
    pub fn set_models(&self, models: Vec<(String, Arc<ModelStats>)>) {
        *self.models.lock().unwrap_or_else(|e| e.into_inner()) = models;
    }

    /// The models reported now, with their counters.
    pub fn models(&self) -> Vec<(String, Arc<ModelStats>)> {
        self.models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Seconds since the agent started.
    pub fn uptime_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// One heartbeat's signals at `ts_ns`; resets the latency histograms.
    pub fn heartbeat(&self, ts_ns: i64, outbox: Option<OutboxStats>) -> Vec<SignalSeries> {
        let mut out = Vec::new();
        let mut add = |name: String, unit: &str, value: f64| {
            if value.is_finite() {
                out.push(SignalSeries {
                    name,
                    unit: unit.into(),
                    ts_ns: vec![ts_ns],
                    values: vec![value],
                    quality: vec![],
                });
            }
        };
        add(
            "health.uptime_s".into(),
            "s",
            self.started.elapsed().as_secs_f64().floor(),
        );
        if let Some(cpu) = self.cpu_percent() {
            add("health.cpu_percent".into(), "%", cpu);
        }
        if let Some(rss) = resident_bytes() {
            add("health.memory_rss_bytes".into(), "By", rss as f64);
        }
        if let Some(o) = outbox {
            add("health.outbox.batches".into(), "", o.depth as f64);
            add("health.outbox.bytes".into(), "By", o.bytes as f64);
            add("health.outbox.dropped_total".into(), "", o.dropped as f64);
            if let Some(free) = o.disk_free {
                add("health.disk.free_bytes".into(), "By", free as f64);
            }
        }
        add(
            "health.outbox.errors_total".into(),
            "",
            self.outbox_errors.load(Ordering::Relaxed) as f64,
        );
        add(
            "health.pipeline.dropped_total".into(),
            "",
            self.pipeline_dropped.load(Ordering::Relaxed) as f64,
        );
        add(
            "health.readings_ahead_total".into(),
            "",
            self.readings_ahead.load(Ordering::Relaxed) as f64,
        );
        for (stream, s) in &self.sources {
            let connected = s.connected.load(Ordering::Relaxed);
            add(
                format!("health.source.{stream}.connected"),
                "",
                f64::from(u8::from(connected)),
            );
            add(
                format!("health.source.{stream}.readings_total"),
                "",
                s.readings.load(Ordering::Relaxed) as f64,
            );
            add(
                format!("health.source.{stream}.errors_total"),
                "",
                s.errors.load(Ordering::Relaxed) as f64,
            );
            add(
                format!("health.source.{stream}.reconnects_total"),
                "",
                s.reconnects.load(Ordering::Relaxed) as f64,
            );
        }
        let models = self
            .models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (name, m) in &models {
            if let Some(p50) = m.latency.quantile(0.5) {
                add(
                    format!("health.model.{name}.latency_p50_us"),
                    "us",
                    p50 / 1e3,
                );
            }
            if let Some(p99) = m.latency.quantile(0.99) {
                add(
                    format!("health.model.{name}.latency_p99_us"),
                    "us",
                    p99 / 1e3,
                );
            }
            m.latency.reset();
            add(
                format!("health.model.{name}.runs_total"),
                "",
                m.runs.load(Ordering::Relaxed) as f64,
            );
            add(
                format!("health.model.{name}.errors_total"),
                "",
                m.errors.load(Ordering::Relaxed) as f64,
            );
        }
        out
    }

    /// Process CPU use since the previous call, in percent of one core.
    fn cpu_percent(&self) -> Option<f64> {
        let now = Instant::now();
        let used = cpu_seconds()?;
        let mut last = self.cpu.lock().unwrap_or_else(|p| p.into_inner());
        let percent = last.map(|(at, before)| {
            let wall = now.duration_since(at).as_secs_f64();
            if wall > 0.0 {
                100.0 * (used - before) / wall
            } else {
                0.0
            }
        });
        *last = Some((now, used));
        percent.or_else(|| {
            // The first heartbeat: average since the process started.
            let wall = self.started.elapsed().as_secs_f64();
            (wall > 0.0).then(|| 100.0 * used / wall)
        })
    }
}

/// User + system CPU seconds of this process (Linux `/proc`).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this agent targets.
    Some(ticks / 100.0)
}

/// Resident memory of this process in bytes (Linux `/proc`).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let h = LatencyHistogram::default();
        assert!(h.quantile(0.5).is_none());
        for ns in 1..=1000u64 {
            h.record(ns * 1000);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.1, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.1, "{p99}");
        h.reset();
        assert!(h.quantile(0.5).is_none());
        h.record(0);
        h.record(u64::MAX);
        assert!(h.quantile(1.0).unwrap() > 1e11);
    }

    #[test]
    fn a_heartbeat_reports_process_outbox_sources_and_models() {
        let source = Arc::new(SourceStats::default());
        source.readings.store(42, Ordering::Relaxed);
        source.set_connected(true);
        let model = Arc::new(ModelStats::default());
        model.latency.record(2_000);
        model.runs.store(1, Ordering::Relaxed);
        let state = HealthState::new(
            vec![("plc".into(), source)],
            vec![("rul".into(), model.clone())],
        );
        let outbox = OutboxStats {
            depth: 3,
            bytes: 300,
            dropped: 1,
            disk_free: Some(1 << 30),
        };
        let hb = state.heartbeat(5, Some(outbox));
        let get = |n: &str| hb.iter().find(|s| s.name == n).map(|s| s.values[0]);
        assert_eq!(get("health.outbox.batches"), Some(3.0));
        assert_eq!(get("health.outbox.dropped_total"), Some(1.0));
        assert_eq!(get("health.disk.free_bytes"), Some((1u64 << 30) as f64));
        assert_eq!(get("health.source.plc.readings_total"), Some(42.0));
        assert_eq!(get("health.source.plc.connected"), Some(1.0));
        assert!((get("health.model.rul.latency_p50_us").unwrap() - 2.0).abs() < 0.2);
        assert!(get("health.memory_rss_bytes").unwrap() > 1e5);
        assert!(get("health.cpu_percent").is_some());
        assert!(hb.iter().all(|s| s.ts_ns == vec![5]));
        // Latency is per interval: the next heartbeat has none.
        let hb = state.heartbeat(6, None);
        assert!(hb.iter().all(|s| !s.name.contains("latency")));
    }
}
