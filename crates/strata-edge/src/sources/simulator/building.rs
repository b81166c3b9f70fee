//! A simulated building zone: weather outside, people inside on working
//! days, an HVAC unit holding a setpoint, and the power it takes. Driven
//! by the simulated clock, so `time_scale` turns a week into minutes.

use std::f64::consts::{PI, TAU};

use strata_proto::SignalSeries;

use super::{Noise, SimulatorConfig, seeded_unit, series};

/// One zone, fixed by its seed.
#[derive(Debug, Clone)]
pub struct BuildingZone {
    capacity: f64,
    insulation: f64,
    phase_s: f64,
    time_scale: f64,
    per_signal: usize,
}

const DAY: f64 = 86_400.0;

impl BuildingZone {
    /// The zone a simulator config describes.
    pub fn new(c: &SimulatorConfig) -> Self {
        BuildingZone {
            capacity: (10.0 + 40.0 * seeded_unit(c.seed, 3)).round(),
            insulation: 0.6 + 0.4 * seeded_unit(c.seed, 4),
            // Zones start on different days of the year.
            phase_s: (seeded_unit(c.seed, 5) * 365.0).floor() * DAY,
            time_scale: c.time_scale,
            per_signal: c.readings_per_signal,
        }
    }

    fn sim_s(&self, ts_ns: i64) -> f64 {
        ts_ns as f64 / 1e9 * self.time_scale + self.phase_s
    }

    /// Outdoor temperature: seasonal and daily cycles.
    pub fn outdoor_c(&self, ts_ns: i64) -> f64 {
        let s = self.sim_s(ts_ns);
        let day_of_year = (s / DAY).rem_euclid(365.0);
        let hour = (s / 3600.0).rem_euclid(24.0);
        11.0 + 9.0 * (TAU * (day_of_year - 110.0) / 365.0).sin()
            + 4.0 * (TAU * (hour - 9.0) / 24.0).sin()
    }

    /// People in the zone: office hours on weekdays.
    pub fn occupancy(&self, ts_ns: i64) -> f64 {
        let s = self.sim_s(ts_ns);
        let weekday = (s / DAY).floor().rem_euclid(7.0) < 5.0;
        let hour = (s / 3600.0).rem_euclid(24.0);
        if weekday && (8.0..18.0).contains(&hour) {
            (self.capacity * (0.5 + 0.5 * (PI * (hour - 8.0) / 10.0).sin())).round()
        } else {
            0.0
        }
    }

    /// The setpoint the HVAC holds: comfort when occupied, setback when not.
    pub fn setpoint_c(&self, ts_ns: i64) -> f64 {
        if self.occupancy(ts_ns) > 0.0 {
            21.5
        } else {
            17.0
        }
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
        let outdoor = each(&mut |t| self.outdoor_c(t) + 0.2 * noise.next());
        let occupancy = each(&mut |t| self.occupancy(t));
        let setpoint = each(&mut |t| self.setpoint_c(t));
        let zone = each(&mut |t| {
            let sp = self.setpoint_c(t);
            // The HVAC does not quite hold the setpoint against the weather;
            // people add heat.
            sp + 0.08 * (1.0 - self.insulation) * (self.outdoor_c(t) - sp) * 5.0
                + 0.03 * self.occupancy(t)
                + 0.15 * noise.next()
        });
        let hvac = each(&mut |t| {
            let demand = (self.setpoint_c(t) - self.outdoor_c(t)).abs() * (1.3 - self.insulation);
            (0.4 * demand + 0.08 * self.occupancy(t) + 0.1 * noise.next()).max(0.0)
        });
        vec![
            series("zone_temperature", "Cel", &ts, zone),
            series("outdoor_temperature", "Cel", &ts, outdoor),
            series("occupancy", "{people}", &ts, occupancy),
            series("setpoint", "Cel", &ts, setpoint),
            series("hvac_power", "kW", &ts, hvac),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offices_fill_on_weekdays_and_hvac_works_harder_in_winter() {
        let c: SimulatorConfig = toml::from_str("scenario = \"building\"\nseed = 5").unwrap();
        let z = BuildingZone::new(&c);
        let hour = 3_600_000_000_000i64;
        // Scan two simulated weeks hour by hour from the zone's epoch.
        let t0 = -(z.phase_s * 1e9) as i64;
        let occupied: Vec<bool> = (0..24 * 14)
            .map(|h| z.occupancy(t0 + h * hour) > 0.0)
            .collect();
        let per_day: Vec<usize> = occupied
            .chunks(24)
            .map(|d| d.iter().filter(|o| **o).count())
            .collect();
        assert_eq!(
            per_day.iter().filter(|&&n| n > 0).count(),
            10,
            "{per_day:?}"
        );
        assert!(per_day.iter().all(|&n| n == 0 || n == 10), "{per_day:?}");
        // Mid-January vs mid-July at noon: colder outside, more HVAC power.
        let day = 24 * hour;
        let jan = t0 + 15 * day + 12 * hour;
        let jul = t0 + 196 * day + 12 * hour;
        assert!(z.outdoor_c(jan) < z.outdoor_c(jul) - 10.0);
    }
}
