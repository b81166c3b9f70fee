//! The built-in simulator source: a machine with temperature, vibration and
//! motor current, deterministic for a given seed and sequence number so
//! that tests and backtests can reproduce every reading.

use serde::Deserialize;
use strata_proto::{SignalSeries, TelemetryBatch};

/// Configuration of a simulator source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Stream name its batches are sent under.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// One batch every this many milliseconds.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Readings per signal in each batch, spread over the interval.
    #[serde(default = "default_readings")]
    pub readings_per_signal: usize,
    /// Seed: machines with different seeds behave differently.
    #[serde(default)]
    pub seed: u64,
    /// Stop after this many batches in the stream (0: never stop).
    #[serde(default)]
    pub max_batches: u64,
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

/// A deterministic noise source (xorshift).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }
}

/// The batch `seq` of a simulated machine: `per_signal` readings of each
/// signal starting at `start_ns`, `step_ns` apart.
pub fn machine_batch(
    stream: &str,
    seed: u64,
    seq: u64,
    start_ns: i64,
    step_ns: i64,
    per_signal: usize,
) -> TelemetryBatch {
    let mut noise = Noise(
        0x9e37_79b9_7f4a_7c15 ^ seed.rotate_left(32) ^ seq.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1,
    );
    let ts: Vec<i64> = (0..per_signal as i64)
        .map(|i| start_ns + i * step_ns)
        .collect();
    let t = |i: usize| (ts[i] as f64) / 1e9;
    let phase = (seed % 97) as f64 * 0.7;
    let mut series =
        |name: &str, unit: &str, f: &dyn Fn(usize) -> f64, noise_scale: f64| SignalSeries {
            name: name.into(),
            unit: unit.into(),
            ts_ns: ts.clone(),
            values: (0..per_signal)
                .map(|i| f(i) + noise_scale * noise.next())
                .collect(),
            quality: vec![],
        };
    let signals = vec![
        series(
            "temperature",
            "Cel",
            &|i| 55.0 + 5.0 * (t(i) / 60.0 + phase).sin(),
            1.0,
        ),
        series(
            "vibration_rms",
            "mm/s",
            &|i| 2.0 + 0.5 * (t(i) / 7.0 + phase).sin().abs(),
            0.2,
        ),
        series(
            "current",
            "A",
            &|i| 12.0 + 1.5 * (t(i) / 30.0 + phase).cos(),
            0.3,
        ),
    ];
    TelemetryBatch {
        stream: stream.into(),
        seq,
        signals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_valid_and_repeatable() {
        let a = machine_batch("sim", 3, 7, 1_700_000_000_000_000_000, 100_000_000, 10);
        assert_eq!(
            a,
            machine_batch("sim", 3, 7, 1_700_000_000_000_000_000, 100_000_000, 10)
        );
        assert_ne!(
            a,
            machine_batch("sim", 4, 7, 1_700_000_000_000_000_000, 100_000_000, 10)
        );
        assert_ne!(
            a,
            machine_batch("sim", 3, 8, 1_700_000_000_000_000_000, 100_000_000, 10)
        );
        let mut b = a.clone();
        let removed = strata_proto::validate::validate(
            &mut b,
            &Default::default(),
            1_800_000_000_000_000_000,
        )
        .unwrap();
        assert_eq!(removed.total(), 0);
        assert_eq!(b.signals.iter().map(|s| s.values.len()).sum::<usize>(), 30);
        let temp = &b.signals[0].values;
        assert!(temp.iter().all(|v| (45.0..65.0).contains(v)), "{temp:?}");
    }
}
