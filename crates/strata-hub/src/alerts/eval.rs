//! The alert evaluator: for each (rule, device), what the rule has seen and
//! whether an alert is open. Pure logic, no storage or clock: readings and
//! presence go in, changes come out, so every condition is unit-tested.
//!
//! Deduplication lives here: while an alert of a (rule, device) is open,
//! further breaches are reported as [`Verdict::Breach`] (counted on the
//! open alert), never as a second alert. Readings that no longer meet the
//! condition for `clear_for_s` clear it (at once by default); the next
//! breach after that raises a new alert.

use std::collections::{HashMap, VecDeque};

use super::rules::{AlertRule, Condition};

/// What one reading (or presence check) means for a (rule, device).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Raise an alert: the condition has held for `for_s`.
    Raise {
        /// The value that breached (the reading, the rate or the z-score).
        value: f64,
        /// Since when the condition has held, ns.
        since_ns: i64,
    },
    /// The open alert saw another breach.
    Breach {
        /// Its value.
        value: f64,
    },
    /// The condition no longer holds: clear the open alert.
    Clear {
        /// The value that ended it.
        value: f64,
    },
}

/// What a (rule, device) remembers.
#[derive(Debug, Default)]
struct Track {
    /// The previous reading, for the rate of change.
    prev: Option<(i64, f64)>,
    /// Since when the condition has held without a break.
    breach_since: Option<i64>,
    /// Since when an open alert's condition has not held.
    normal_since: Option<i64>,
    /// Whether an alert is open.
    open: bool,
    /// `anomaly`: the recent normal readings, with their sum and sum of
    /// squares (recomputed every window, so rounding cannot build up).
    baseline: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    pushes: usize,
}

impl Track {
    fn push_baseline(&mut self, v: f64, window: usize) {
        self.baseline.push_back(v);
        self.sum += v;
        self.sum_sq += v * v;
        if self.baseline.len() > window {
            let old = self.baseline.pop_front().unwrap_or(0.0);
            self.sum -= old;
            self.sum_sq -= old * old;
        }
        self.pushes += 1;
        if self.pushes.is_multiple_of(window) {
            self.sum = self.baseline.iter().sum();
            self.sum_sq = self.baseline.iter().map(|x| x * x).sum();
        }
    }

    /// How many standard deviations `v` is from the baseline's mean, once
    /// the baseline is full.
    fn z_score(&self, v: f64, window: usize) -> Option<f64> {
        if self.baseline.len() < window {
            return None;
        }
        let n = self.baseline.len() as f64;
        let mean = self.sum / n;
        let var = ((self.sum_sq - n * mean * mean) / (n - 1.0)).max(0.0);
        let std = var.sqrt();
        let off = (v - mean).abs();
        Some(if std > 0.0 {
            off / std
        } else if off > 0.0 {
            f64::INFINITY
        } else {
            0.0
        })
    }
}

/// The evaluator of a fixed set of rules.
#[derive(Debug)]
pub struct Evaluator {
    rules: Vec<AlertRule>,
    tracks: HashMap<(usize, String), Track>,
}

impl Evaluator {
    /// An evaluator of `rules`, with no history.
    pub fn new(rules: Vec<AlertRule>) -> Self {
        Evaluator {
            rules,
            tracks: HashMap::new(),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Marks an alert of (rule, device) as open (one found in storage at
    /// start), so the next breach is counted on it, not raised again.
    pub fn mark_open(&mut self, rule: usize, device: &str) {
        self.track(rule, device).open = true;
    }

    /// Marks (rule, device) as having no open alert.
    pub fn mark_closed(&mut self, rule: usize, device: &str) {
        let t = self.track(rule, device);
        t.open = false;
        t.breach_since = None;
        t.normal_since = None;
    }

    fn track(&mut self, rule: usize, device: &str) -> &mut Track {
        self.tracks.entry((rule, device.to_owned())).or_default()
    }

    /// Evaluates one reading of rule `rule`'s signal from `device`.
    /// Readings must come in time order per device; an older one is ignored.
    pub fn reading(&mut self, rule: usize, device: &str, ts_ns: i64, v: f64) -> Option<Verdict> {
        let r = &self.rules[rule];
        let (condition, threshold, window) = (r.condition, r.threshold(), r.window);
        let (for_ns, clear_ns) = ((r.for_s * 1e9) as i64, (r.clear_for_s * 1e9) as i64);
        let t = self.track(rule, device);
        if t.prev.is_some_and(|(pt, _)| ts_ns <= pt) {
            return None;
        }
        let prev = t.prev.replace((ts_ns, v));
        let measured = match condition {
            Condition::Above => Some((v > threshold, v)),
            Condition::Below => Some((v < threshold, v)),
            Condition::RateAbove => prev.map(|(pt, pv)| {
                let rate = (v - pv).abs() / ((ts_ns - pt) as f64 / 1e9);
                (rate > threshold, rate)
            }),
            Condition::Anomaly => {
                let z = t.z_score(v, window);
                let breach = z.is_some_and(|z| z > threshold);
                // A reading that is itself anomalous stays out of the
                // baseline, so a long fault does not become the new normal.
                if !breach {
                    t.push_baseline(v, window);
                }
                z.map(|z| (breach, z))
            }
            Condition::Offline => None,
        };
        let (breach, value) = measured?;
        // A z-score over a flat baseline, or a rate over a nanosecond, can
        // be infinite; JSON has no infinity, and a stored alert must read
        // back.
        let value = value.clamp(-f64::MAX, f64::MAX);
        Self::step(t, breach, value, ts_ns, for_ns, clear_ns)
    }

    /// Evaluates an `offline` rule for `device`: `offline_since_ns` is when
    /// it went offline (`None` while it is online), at time `now_ns`.
    pub fn presence(
        &mut self,
        rule: usize,
        device: &str,
        offline_since_ns: Option<i64>,
        now_ns: i64,
    ) -> Option<Verdict> {
        let r = &self.rules[rule];
        let (for_ns, clear_ns) = ((r.for_s * 1e9) as i64, (r.clear_for_s * 1e9) as i64);
        let t = self.track(rule, device);
        match offline_since_ns {
            Some(since) => {
                t.breach_since = Some(since);
                let held_s = (now_ns - since) as f64 / 1e9;
                Self::step(t, true, held_s, now_ns, for_ns, clear_ns)
            }
            None => Self::step(t, false, 0.0, now_ns, for_ns, clear_ns),
        }
    }

    fn step(
        t: &mut Track,
        breach: bool,
        value: f64,
        ts_ns: i64,
        for_ns: i64,
        clear_ns: i64,
    ) -> Option<Verdict> {
        if !breach {
            t.breach_since = None;
            if !t.open {
                return None;
            }
            let normal_since = *t.normal_since.get_or_insert(ts_ns);
            if ts_ns - normal_since < clear_ns {
                return None;
            }
            t.open = false;
            t.normal_since = None;
            return Some(Verdict::Clear { value });
        }
        t.normal_since = None;
        let since = *t.breach_since.get_or_insert(ts_ns);
        if t.open {
            Some(Verdict::Breach { value })
        } else if ts_ns - since >= for_ns {
            t.open = true;
            Some(Verdict::Raise {
                value,
                since_ns: since,
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn evaluator(text: &str) -> Evaluator {
        let rule: AlertRule = toml::from_str(text).unwrap();
        rule.validate().unwrap();
        Evaluator::new(vec![rule])
    }

    /// Feeds `values` one a second; returns the verdicts with their index.
    fn feed(e: &mut Evaluator, device: &str, values: &[f64]) -> Vec<(usize, Verdict)> {
        values
            .iter()
            .enumerate()
            .filter_map(|(i, &v)| e.reading(0, device, i as i64 * S, v).map(|x| (i, x)))
            .collect()
    }

    #[test]
    fn a_threshold_raises_once_counts_repeats_and_clears() {
        let mut e =
            evaluator("name = \"hot\"\nsignal = \"t\"\ncondition = \"above\"\nvalue = 80\n");
        let got = feed(&mut e, "m1", &[70.0, 85.0, 90.0, 60.0, 81.0]);
        assert_eq!(
            got,
            vec![
                (
                    1,
                    Verdict::Raise {
                        value: 85.0,
                        since_ns: S
                    }
                ),
                (2, Verdict::Breach { value: 90.0 }),
                (3, Verdict::Clear { value: 60.0 }),
                (
                    4,
                    Verdict::Raise {
                        value: 81.0,
                        since_ns: 4 * S
                    }
                ),
            ]
        );
        // Devices are tracked apart.
        assert!(e.reading(0, "m2", 0, 70.0).is_none());
    }

    #[test]
    fn for_s_needs_the_condition_to_hold_without_a_break() {
        let mut e = evaluator(
            "name = \"low\"\nsignal = \"p\"\ncondition = \"below\"\nvalue = 2\nfor_s = 2\n",
        );
        // Below at 1, 2; a break at 3; below from 4: raised at 6 (4 + 2 s).
        let got = feed(&mut e, "m", &[5.0, 1.0, 1.5, 3.0, 1.0, 1.0, 1.0]);
        assert_eq!(
            got,
            vec![(
                6,
                Verdict::Raise {
                    value: 1.0,
                    since_ns: 4 * S
                }
            )]
        );
    }

    #[test]
    fn clear_for_s_keeps_a_hovering_signal_from_flapping() {
        let mut e = evaluator(
            "name = \"hot\"\nsignal = \"t\"\ncondition = \"above\"\nvalue = 80\nclear_for_s = 2\n",
        );
        // Dips below 80 for under 2 s do not clear; 2 s below does.
        let got = feed(&mut e, "m", &[85.0, 79.0, 81.0, 79.0, 78.0, 77.0, 90.0]);
        assert_eq!(
            got,
            vec![
                (
                    0,
                    Verdict::Raise {
                        value: 85.0,
                        since_ns: 0
                    }
                ),
                (2, Verdict::Breach { value: 81.0 }),
                (5, Verdict::Clear { value: 77.0 }),
                (
                    6,
                    Verdict::Raise {
                        value: 90.0,
                        since_ns: 6 * S
                    }
                ),
            ]
        );
    }

    #[test]
    fn rate_of_change_in_units_per_second_either_way() {
        let mut e =
            evaluator("name = \"jump\"\nsignal = \"t\"\ncondition = \"rate_above\"\nvalue = 5\n");
        let got = feed(&mut e, "m", &[10.0, 12.0, 20.0, 21.0, 14.0]);
        assert_eq!(
            got[0],
            (
                2,
                Verdict::Raise {
                    value: 8.0,
                    since_ns: 2 * S
                }
            )
        );
        assert_eq!(got[1], (3, Verdict::Clear { value: 1.0 }));
        assert_eq!(
            got[2],
            (
                4,
                Verdict::Raise {
                    value: 7.0,
                    since_ns: 4 * S
                }
            )
        );
        // The first reading has no rate; an out-of-order one is ignored.
        assert!(e.reading(0, "m", 2 * S, 100.0).is_none());
    }

    #[test]
    fn an_anomaly_over_a_flat_baseline_has_a_finite_score() {
        let mut e = evaluator(
            "name = \"odd\"\nsignal = \"v\"\ncondition = \"anomaly\"\nvalue = 4\nwindow = 10\n",
        );
        let mut values = vec![5.0; 10];
        values.push(6.0);
        let got = feed(&mut e, "m", &values);
        assert_eq!(
            got,
            vec![(
                10,
                Verdict::Raise {
                    value: f64::MAX,
                    since_ns: 10 * S
                }
            )]
        );
    }

    #[test]
    fn an_anomaly_stands_out_from_a_baseline_it_does_not_join() {
        let mut e = evaluator(
            "name = \"odd\"\nsignal = \"v\"\ncondition = \"anomaly\"\nvalue = 4\nwindow = 10\n",
        );
        // Ten normal readings alternating 1 and 2: mean 1.5, std ~0.527.
        let mut values: Vec<f64> = (0..10).map(|i| 1.0 + (i % 2) as f64).collect();
        values.extend([9.0, 9.0, 9.0, 2.0]);
        let got = feed(&mut e, "m", &values);
        let Verdict::Raise { value: z, .. } = got[0].1 else {
            panic!("{got:?}")
        };
        assert_eq!(got[0].0, 10);
        let std = (10.0f64 * 0.25 / 9.0).sqrt();
        assert!((z - 7.5 / std).abs() < 1e-9, "{z}");
        // The fault stays anomalous: it never joined the baseline.
        assert_eq!(got[1], (11, Verdict::Breach { value: 7.5 / std }));
        assert!(matches!(got[3], (13, Verdict::Clear { .. })), "{got:?}");
    }

    #[test]
    fn offline_after_for_s_and_back_online_clears() {
        let mut e = evaluator("name = \"gone\"\ncondition = \"offline\"\nfor_s = 30\n");
        assert_eq!(e.presence(0, "m", None, 0), None);
        assert_eq!(e.presence(0, "m", Some(10 * S), 20 * S), None);
        assert_eq!(
            e.presence(0, "m", Some(10 * S), 40 * S),
            Some(Verdict::Raise {
                value: 30.0,
                since_ns: 10 * S
            })
        );
        assert_eq!(
            e.presence(0, "m", Some(10 * S), 41 * S),
            Some(Verdict::Breach { value: 31.0 })
        );
        assert_eq!(
            e.presence(0, "m", None, 42 * S),
            Some(Verdict::Clear { value: 0.0 })
        );
    }

    #[test]
    fn an_alert_open_at_start_is_not_raised_twice() {
        let mut e =
            evaluator("name = \"hot\"\nsignal = \"t\"\ncondition = \"above\"\nvalue = 80\n");
        e.mark_open(0, "m");
        assert_eq!(
            e.reading(0, "m", S, 90.0),
            Some(Verdict::Breach { value: 90.0 })
        );
        assert_eq!(
            e.reading(0, "m", 2 * S, 10.0),
            Some(Verdict::Clear { value: 10.0 })
        );
    }
}
