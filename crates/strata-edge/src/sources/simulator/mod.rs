//! The built-in simulator source, for the two first use cases: a machine
//! that wears towards failure (predictive maintenance) and a building zone
//! (energy). Every value is a pure function of (seed, timestamp) plus noise
//! seeded by (seed, batch), so tests and backtests reproduce every reading,
//! and the ground truth (remaining useful life, failure label) travels with
//! the data as `label.*` signals for training.

mod building;
mod machine;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Deserialize;
use strata_proto::{SignalSeries, TelemetryBatch};

pub use building::BuildingZone;
pub use machine::Machine;

use super::frame::{Frame, FrameSender, SourceStats};

/// Configuration of a simulator source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Stream name its batches are sent under.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// What is simulated.
    #[serde(default)]
    pub scenario: Scenario,
    /// One batch every this many milliseconds.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Readings per slow signal in each batch, spread over the interval.
    #[serde(default = "default_readings")]
    pub readings_per_signal: usize,
    /// Seed: machines with different seeds behave differently.
    #[serde(default)]
    pub seed: u64,
    /// Stop after this many batches in the stream (0: never stop).
    #[serde(default)]
    pub max_batches: u64,
    /// Simulated seconds per real second, so a demo can watch a machine
    /// wear out in minutes.
    #[serde(default = "one")]
    pub time_scale: f64,
    /// Machine: mean simulated seconds from new to failure (each machine's
    /// own life is 75–125 % of this, fixed by its seed).
    #[serde(default = "default_lifetime")]
    pub lifetime_s: f64,
    /// Machine: a reading is labelled "failing" when the remaining useful
    /// life is below this many simulated seconds.
    #[serde(default = "default_horizon")]
    pub failure_horizon_s: f64,
    /// Machine: sample rate of the raw `vibration` waveform (shaft and
    /// bearing-fault tones) in Hz; 0 sends no waveform.
    #[serde(default)]
    pub vibration_hz: u32,
    /// A faulty sensor (e.g. a recalibration gone wrong after a firmware
    /// update): from a batch on, one signal reads `value * gain + offset`.
    #[serde(default)]
    pub degradation: Option<Degradation>,
}

/// A sensor that reads wrong from some batch on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Degradation {
    /// The signal that reads wrong.
    pub signal: String,
    /// The first batch (seq) that reads wrong; 0 or 1: all of them.
    #[serde(default)]
    pub from_batch: u64,
    /// Factor applied to the true value.
    #[serde(default = "one")]
    pub gain: f64,
    /// Added after the factor.
    #[serde(default)]
    pub offset: f64,
}

/// What a simulator simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// A motor-driven machine whose bearing wears towards failure.
    #[default]
    Machine,
    /// A building zone with occupancy, HVAC and weather.
    Building,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

fn default_stream() -> String {
    "sim".into()
}
fn default_interval() -> u64 {
    1000
}
fn default_readings() -> usize {
    10
}
fn one() -> f64 {
    1.0
}
fn default_lifetime() -> f64 {
    7.0 * 86_400.0
}
fn default_horizon() -> f64 {
    86_400.0
}

impl SimulatorConfig {
    /// Checks the configuration; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.stream;
        if self.interval_ms == 0 || self.readings_per_signal == 0 {
            return Err(format!(
                "simulator {name:?}: interval_ms and readings_per_signal must be > 0"
            ));
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(format!("simulator {name:?}: time_scale must be > 0"));
        }
        if !(self.lifetime_s.is_finite() && self.lifetime_s > 0.0) {
            return Err(format!("simulator {name:?}: lifetime_s must be > 0"));
        }
        if !(self.failure_horizon_s.is_finite() && self.failure_horizon_s >= 0.0) {
            return Err(format!(
                "simulator {name:?}: failure_horizon_s must be >= 0"
            ));
        }
        if self.vibration_hz > 100_000 {
            return Err(format!("simulator {name:?}: vibration_hz above 100000"));
        }
        if let Some(d) = &self.degradation
            && !(d.gain.is_finite() && d.offset.is_finite())
        {
            return Err(format!(
                "simulator {name:?}: degradation of {}: gain and offset must be finite",
                d.signal
            ));
        }
        Ok(())
    }

    /// The batch `seq`: `readings_per_signal` readings of each slow signal
    /// from `start_ns` to the end of the interval (and the waveform, if on).
    pub fn batch(&self, seq: u64, start_ns: i64) -> TelemetryBatch {
        let interval_ns = self.interval_ms as i64 * 1_000_000;
        let mut noise = Noise::new(self.seed, seq);
        let mut signals = match self.scenario {
            Scenario::Machine => Machine::new(self).batch(start_ns, interval_ns, &mut noise),
            Scenario::Building => BuildingZone::new(self).batch(start_ns, interval_ns, &mut noise),
        };
        if let Some(d) = self.degradation.as_ref().filter(|d| seq >= d.from_batch) {
            for s in signals.iter_mut().filter(|s| s.name == d.signal) {
                for v in &mut s.values {
                    *v = *v * d.gain + d.offset;
                }
            }
        }
        TelemetryBatch {
            stream: self.stream.clone(),
            seq,
            signals,
        }
    }

    /// Timestamps of `n` evenly spaced readings in the interval.
    fn timestamps(n: usize, start_ns: i64, interval_ns: i64) -> Vec<i64> {
        let step = (interval_ns / n.max(1) as i64).max(1);
        (0..n as i64).map(|i| start_ns + i * step).collect()
    }
}

/// A deterministic noise source (xorshift), seeded per batch.
pub(crate) struct Noise(u64);

impl Noise {
    fn new(seed: u64, seq: u64) -> Self {
        Noise(
            0x9e37_79b9_7f4a_7c15 ^ seed.rotate_left(32) ^ seq.wrapping_mul(0x2545_f491_4f6c_dd1d)
                | 1,
        )
    }

    /// Uniform in [-0.5, 0.5).
    pub(crate) fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }
}

/// A uniform number in [0, 1) fixed by the seed and a purpose.
pub(crate) fn seeded_unit(seed: u64, purpose: u64) -> f64 {
    let mut n = Noise::new(seed, purpose.wrapping_add(0x51));
    n.next();
    n.next() + 0.5
}

/// A series with the given values at the given timestamps.
pub(crate) fn series(name: &str, unit: &str, ts: &[i64], values: Vec<f64>) -> SignalSeries {
    SignalSeries {
        name: name.into(),
        unit: unit.into(),
        ts_ns: ts.to_vec(),
        values,
        quality: vec![],
    }
}

/// Runs the simulator until it has produced `max_batches` in all (counting
/// from `next_seq`, the outbox's next sequence number for the stream, so a
/// restarted agent continues where the durable stream left off).
pub async fn run(
    config: SimulatorConfig,
    next_seq: u64,
    frames: FrameSender,
    stats: Arc<SourceStats>,
) {
    let interval = Duration::from_millis(config.interval_ms.max(1));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    stats.set_connected(true);
    let stream: Arc<str> = config.stream.as_str().into();
    let mut seq = next_seq.max(1);
    loop {
        if config.max_batches > 0 && seq > config.max_batches {
            tracing::info!(stream = %config.stream, "simulator reached max_batches");
            return;
        }
        tick.tick().await;
        let start = crate::now_ns() - interval.as_nanos() as i64;
        let batch = config.batch(seq, start);
        let frame = Frame {
            stream: stream.clone(),
            signals: batch.signals,
            handled: None,
            resent: false,
        };
        stats
            .readings
            .fetch_add(frame.readings() as u64, Ordering::Relaxed);
        if frames.send(frame).await.is_err() {
            return;
        }
        seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scenario: Scenario) -> SimulatorConfig {
        SimulatorConfig {
            scenario,
            seed: 3,
            ..SimulatorConfig::default()
        }
    }

    #[test]
    fn batches_are_valid_repeatable_and_differ_by_seed_and_seq() {
        for scenario in [Scenario::Machine, Scenario::Building] {
            let c = config(scenario);
            let t0 = 1_700_000_000_000_000_000;
            let a = c.batch(7, t0);
            assert_eq!(a, c.batch(7, t0));
            assert_ne!(a, c.batch(8, t0));
            let mut other = c.clone();
            other.seed = 4;
            assert_ne!(a, other.batch(7, t0));
            let mut b = a.clone();
            let removed = strata_proto::validate::validate(
                &mut b,
                &Default::default(),
                1_800_000_000_000_000_000,
            )
            .unwrap();
            assert_eq!(removed.total(), 0, "{scenario:?}");
            assert!(b.signals.iter().all(|s| s.values.len() == s.ts_ns.len()));
        }
    }

    #[test]
    fn a_degraded_sensor_reads_wrong_from_its_batch_on() {
        let mut c = config(Scenario::Machine);
        let t0 = 1_700_000_000_000_000_000;
        let healthy = [c.batch(4, t0), c.batch(5, t0)];
        c.degradation = Some(Degradation {
            signal: "temperature".into(),
            from_batch: 5,
            gain: 2.0,
            offset: 10.0,
        });
        assert_eq!(c.batch(4, t0), healthy[0]);
        let bad = c.batch(5, t0);
        for (h, b) in healthy[1].signals.iter().zip(&bad.signals) {
            for (x, y) in h.values.iter().zip(&b.values) {
                let expected = if h.name == "temperature" {
                    x * 2.0 + 10.0
                } else {
                    *x
                };
                assert_eq!(*y, expected, "{}", h.name);
            }
        }
    }
}
