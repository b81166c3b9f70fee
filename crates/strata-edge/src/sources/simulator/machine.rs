//! A simulated motor-driven machine whose bearing wears towards failure.
//!
//! Wear grows with the cube of the machine's age over its life, so signals
//! stay near normal for most of the life and drift away towards its end,
//! as real bearings do. After a failure the machine is repaired and starts
//! a new life, so a long run holds many lives. The raw vibration waveform
//! carries the shaft tone and the bearing's outer- and inner-race fault
//! tones (BPFO, BPFI), which grow with wear: what FFT band features find.

use std::f64::consts::TAU;

use strata_proto::SignalSeries;

use super::{Noise, SimulatorConfig, seeded_unit, series};

/// Shaft speed: 1480 rpm.
pub const SHAFT_HZ: f64 = 1480.0 / 60.0;
/// Ball-pass frequency, outer race, for a typical deep-groove bearing.
pub const BPFO_HZ: f64 = 3.58 * SHAFT_HZ;
/// Ball-pass frequency, inner race.
pub const BPFI_HZ: f64 = 5.42 * SHAFT_HZ;

/// One machine, fixed by its seed.
#[derive(Debug, Clone)]
pub struct Machine {
    life_s: f64,
    phase_s: f64,
    time_scale: f64,
    horizon_s: f64,
    per_signal: usize,
    vibration_hz: u32,
}

impl Machine {
    /// The machine a simulator config describes.
    pub fn new(c: &SimulatorConfig) -> Self {
        let life_s = c.lifetime_s * (0.75 + 0.5 * seeded_unit(c.seed, 1));
        Machine {
            life_s,
            phase_s: seeded_unit(c.seed, 2) * life_s,
            time_scale: c.time_scale,
            horizon_s: c.failure_horizon_s,
            per_signal: c.readings_per_signal,
            vibration_hz: c.vibration_hz,
        }
    }

    fn sim_s(&self, ts_ns: i64) -> f64 {
        ts_ns as f64 / 1e9 * self.time_scale + self.phase_s
    }

    /// Simulated seconds since the last repair at wall time `ts_ns`.
    pub fn age_s(&self, ts_ns: i64) -> f64 {
        self.sim_s(ts_ns).rem_euclid(self.life_s)
    }

    /// Ground truth: simulated seconds until the bearing fails.
    pub fn remaining_life_s(&self, ts_ns: i64) -> f64 {
        self.life_s - self.age_s(ts_ns)
    }

    /// Wear in [0, 1): 0 when new, near 1 just before failure.
    pub fn wear(&self, ts_ns: i64) -> f64 {
        (self.age_s(ts_ns) / self.life_s).powi(3)
    }

    /// Load in [0.4, 1]: a production cycle over a simulated hour.
    fn load(&self, ts_ns: i64) -> f64 {
        0.7 + 0.3 * (TAU * self.sim_s(ts_ns) / 3600.0).sin()
    }

    /// The signals of one interval starting at `start_ns`.
    pub(super) fn batch(
        &self,
        start_ns: i64,
        interval_ns: i64,
        noise: &mut Noise,
    ) -> Vec<SignalSeries> {
        let ts = SimulatorConfig::timestamps(self.per_signal, start_ns, interval_ns);
        let each = |f: &mut dyn FnMut(i64) -> f64| ts.iter().map(|&t| f(t)).collect::<Vec<f64>>();
        let temperature =
            each(&mut |t| 40.0 + 10.0 * self.load(t) + 25.0 * self.wear(t) + 0.8 * noise.next());
        let vibration_rms = each(&mut |t| {
            1.2 + 0.8 * self.load(t)
                + 6.0 * self.wear(t).sqrt() * self.wear(t)
                + 0.15 * noise.next()
        });
        let current =
            each(&mut |t| 8.0 + 6.0 * self.load(t) + 2.5 * self.wear(t) + 0.3 * noise.next());
        let rul_h = each(&mut |t| self.remaining_life_s(t) / 3600.0);
        let failing = each(&mut |t| f64::from(u8::from(self.remaining_life_s(t) < self.horizon_s)));
        let mut signals = vec![
            series("temperature", "Cel", &ts, temperature),
            series("vibration_rms", "mm/s", &ts, vibration_rms),
            series("current", "A", &ts, current),
            series("label.rul_h", "h", &ts, rul_h),
            series("label.failure", "", &ts, failing),
        ];
        if self.vibration_hz > 0 {
            let n =
                (u64::from(self.vibration_hz) * interval_ns as u64 / 1_000_000_000).max(1) as usize;
            let step = 1e9 / f64::from(self.vibration_hz);
            let wts: Vec<i64> = (0..n)
                .map(|i| start_ns + (i as f64 * step) as i64)
                .collect();
            let wear = self.wear(start_ns);
            let load = self.load(start_ns);
            let (shaft, bpfo, bpfi) = (1.0 * load, 0.05 + 2.5 * wear, 0.03 + 1.5 * wear * wear);
            let wave = wts
                .iter()
                .map(|&t| {
                    let s = t as f64 / 1e9;
                    shaft * (TAU * SHAFT_HZ * s).sin()
                        + bpfo * (TAU * BPFO_HZ * s).sin()
                        + bpfi * (TAU * BPFI_HZ * s).sin()
                        + 0.2 * noise.next()
                })
                .collect();
            signals.push(series("vibration", "mm/s2", &wts, wave));
        }
        signals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(time_scale: f64) -> (SimulatorConfig, Machine) {
        let mut c: SimulatorConfig =
            toml::from_str("lifetime_s = 1000.0\nfailure_horizon_s = 100.0\nvibration_hz = 1000")
                .unwrap();
        c.time_scale = time_scale;
        let m = Machine::new(&c);
        (c, m)
    }

    #[test]
    fn wear_rises_over_a_life_and_resets_at_repair() {
        let (_, m) = machine(1.0);
        assert!((750.0..=1250.0).contains(&m.life_s));
        // Find a repair: remaining life jumps up.
        let sec = 1_000_000_000i64;
        let t0 = 1_700_000_000 * sec;
        let rul: Vec<f64> = (0..2500)
            .map(|i| m.remaining_life_s(t0 + i * sec))
            .collect();
        let repairs = rul.windows(2).filter(|w| w[1] > w[0]).count();
        assert!(repairs >= 2, "two lives in 2500 s");
        assert!(rul.iter().all(|r| *r > 0.0 && *r <= m.life_s));
        let young = m.wear(t0 + (m.life_s - m.age_s(t0) + 1.0) as i64 * sec);
        assert!(young < 0.01, "{young}");
    }

    #[test]
    fn worn_machines_run_hotter_and_shake_more_and_are_labelled_failing() {
        let (c, m) = machine(1.0);
        let sec = 1_000_000_000i64;
        let t0 = 1_700_000_000 * sec;
        // The moment just after a repair, then 98 % through that life.
        let fresh = t0 + ((m.life_s - m.age_s(t0)) * 1e9) as i64 + sec;
        let worn = fresh + (0.98 * m.life_s * 1e9) as i64;
        let mean = |b: &[SignalSeries], name: &str| {
            let s = b.iter().find(|s| s.name == name).unwrap();
            s.values.iter().sum::<f64>() / s.values.len() as f64
        };
        let a = m.batch(fresh, sec, &mut Noise::new(c.seed, 1));
        let b = m.batch(worn, sec, &mut Noise::new(c.seed, 1));
        assert!(mean(&b, "temperature") > mean(&a, "temperature") + 15.0);
        assert!(mean(&b, "vibration_rms") > mean(&a, "vibration_rms") + 3.0);
        assert_eq!(mean(&a, "label.failure"), 0.0);
        assert_eq!(mean(&b, "label.failure"), 1.0);
        let wave = b.iter().find(|s| s.name == "vibration").unwrap();
        assert_eq!(wave.values.len(), 1000);
    }

    #[test]
    fn the_waveform_carries_the_bearing_fault_tone() {
        let (c, m) = machine(1.0);
        let sec = 1_000_000_000i64;
        let t0 = 1_700_000_000 * sec;
        let fresh = t0 + ((m.life_s - m.age_s(t0)) * 1e9) as i64 + sec;
        let worn = fresh + (0.98 * m.life_s * 1e9) as i64;
        // Amplitude at BPFO by correlating with the tone (a one-bin DFT).
        let tone = |start: i64| {
            let b = m.batch(start, sec, &mut Noise::new(c.seed, 9));
            let w = b.iter().find(|s| s.name == "vibration").unwrap();
            let (mut re, mut im) = (0.0, 0.0);
            for (&t, &v) in w.ts_ns.iter().zip(&w.values) {
                let p = TAU * BPFO_HZ * t as f64 / 1e9;
                re += v * p.cos();
                im += v * p.sin();
            }
            2.0 * (re * re + im * im).sqrt() / w.values.len() as f64
        };
        let (new, old) = (tone(fresh), tone(worn));
        assert!(new < 0.2, "{new}");
        assert!(old > 1.5, "{old}");
    }
}
