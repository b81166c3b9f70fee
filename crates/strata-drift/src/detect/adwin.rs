//! ADWIN, adaptive windowing (Bifet & Gavaldà 2007), in its ADWIN2 form
//! with exponential buckets: the window is summarised as rows of buckets,
//! row i holding up to `max_buckets` summaries of 2^i values each. Every
//! `clock` values, every split of the window into an older and a newer
//! part is tested; when their means differ by more than the Hoeffding-style
//! bound, the oldest bucket is dropped and a change is reported.
//!
//! The arithmetic (the streaming variance update, the merge of two
//! buckets, the cut bound) is river's, in the same order, so detections
//! land on the same indices as `river.drift.ADWIN`.

use serde::{Deserialize, Serialize};

use super::Detector;

/// ADWIN parameters (river's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdwinParams {
    /// Confidence of the cut test: smaller means fewer, surer detections.
    pub delta: f64,
    /// Test for a change every `clock` values.
    pub clock: u32,
    /// Buckets per row before two are merged into the next row.
    pub max_buckets: usize,
    /// Neither part of a split may hold fewer values than this.
    pub min_window_length: u32,
    /// No test before the window holds more values than this.
    pub grace_period: u32,
}

impl Default for AdwinParams {
    fn default() -> Self {
        AdwinParams {
            delta: 0.002,
            clock: 32,
            max_buckets: 5,
            min_window_length: 5,
            grace_period: 10,
        }
    }
}

/// One bucket: the sum of its values and their sum of squared deviations.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    total: f64,
    variance: f64,
}

/// An ADWIN detector.
#[derive(Debug, Clone)]
pub struct Adwin {
    params: AdwinParams,
    /// rows[i]: buckets of 2^i values each, oldest first.
    rows: Vec<Vec<Bucket>>,
    /// Values in the window.
    width: f64,
    /// Their sum.
    total: f64,
    /// Their sum of squared deviations from the mean.
    variance: f64,
    tick: u64,
    detected: bool,
}

impl Adwin {
    /// A fresh detector.
    pub fn new(params: AdwinParams) -> Self {
        Adwin {
            params,
            rows: vec![Vec::with_capacity(params.max_buckets + 1)],
            width: 0.0,
            total: 0.0,
            variance: 0.0,
            tick: 0,
            detected: false,
        }
    }

    /// How many values the window holds.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// The mean of the window (0 when empty).
    pub fn estimation(&self) -> f64 {
        if self.width == 0.0 {
            0.0
        } else {
            self.total / self.width
        }
    }

    fn insert(&mut self, value: f64) {
        self.rows[0].push(Bucket {
            total: value,
            variance: 0.0,
        });
        self.width += 1.0;
        let mut incremental = 0.0;
        if self.width > 1.0 {
            let d = value - self.total / (self.width - 1.0);
            incremental = (self.width - 1.0) * d * d / self.width;
        }
        self.variance += incremental;
        self.total += value;
        self.compress();
    }

    /// Merges the two oldest buckets of every full row into the next row.
    fn compress(&mut self) {
        let full = self.params.max_buckets + 1;
        let mut i = 0;
        while self.rows[i].len() == full {
            let n = (1u64 << i) as f64;
            let (b0, b1) = (self.rows[i][0], self.rows[i][1]);
            let (mu0, mu1) = (b0.total / n, b1.total / n);
            let merged = Bucket {
                total: b0.total + b1.total,
                variance: b0.variance + b1.variance + n * 0.5 * (mu0 - mu1) * (mu0 - mu1),
            };
            if i + 1 == self.rows.len() {
                self.rows.push(Vec::with_capacity(full));
            }
            self.rows[i + 1].push(merged);
            self.rows[i].drain(..2);
            if self.rows[i + 1].len() <= self.params.max_buckets {
                break;
            }
            i += 1;
        }
    }

    /// Drops the oldest bucket from the window.
    fn drop_oldest(&mut self) {
        let last = self.rows.len() - 1;
        let n = (1u64 << last) as f64;
        let b = self.rows[last][0];
        let mu = b.total / n;
        self.width -= n;
        self.total -= b.total;
        let mu_window = self.total / self.width;
        self.variance -=
            b.variance + n * self.width * (mu - mu_window) * (mu - mu_window) / (n + self.width);
        self.rows[last].remove(0);
        if self.rows[last].is_empty() {
            self.rows.pop();
        }
    }

    /// Tests every split, oldest buckets first; on a significant one drops
    /// the oldest bucket and tests again.
    fn detect(&mut self) -> bool {
        self.tick += 1;
        let p = self.params;
        if self.tick % u64::from(p.clock) != 0 || self.width <= f64::from(p.grace_period) {
            return false;
        }
        let min_len = f64::from(p.min_window_length);
        let mut changed = false;
        'retest: loop {
            let (mut n0, mut n1) = (0.0, self.width);
            let (mut u0, mut u1) = (0.0, self.total);
            for i in (0..self.rows.len()).rev() {
                let size = (1u64 << i) as f64;
                let len = self.rows[i].len();
                for k in 0..len {
                    let t = self.rows[i][k].total;
                    n0 += size;
                    n1 -= size;
                    u0 += t;
                    u1 -= t;
                    if i == 0 && k == len - 1 {
                        break 'retest;
                    }
                    let delta_mean = u0 / n0 - u1 / n1;
                    if n1 >= min_len && n0 >= min_len && self.cut(n0, n1, delta_mean) {
                        changed = true;
                        if self.width > 0.0 {
                            self.drop_oldest();
                            continue 'retest;
                        }
                    }
                }
            }
            break;
        }
        changed
    }

    /// The cut test for a split into n0 older and n1 newer values.
    fn cut(&self, n0: f64, n1: f64, delta_mean: f64) -> bool {
        let min_len = f64::from(self.params.min_window_length);
        let delta_prime = (2.0 * self.width.ln() / self.params.delta).ln();
        let m_recip = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
        let epsilon = (2.0 * m_recip * (self.variance / self.width) * delta_prime).sqrt()
            + 2.0 / 3.0 * delta_prime * m_recip;
        delta_mean.abs() > epsilon
    }
}

impl Detector for Adwin {
    fn update(&mut self, x: f64) -> bool {
        if self.detected {
            *self = Adwin::new(self.params);
        }
        self.insert(x);
        self.detected = self.detect();
        self.detected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_grows_on_a_constant_stream() {
        let mut a = Adwin::new(AdwinParams::default());
        for _ in 0..5000 {
            assert!(!a.update(1.0));
        }
        assert_eq!(a.width(), 5000.0);
        assert_eq!(a.estimation(), 1.0);
    }

    #[test]
    fn a_mean_shift_is_found_soon_after_it_happens() {
        let mut a = Adwin::new(AdwinParams::default());
        let mut xs: Vec<f64> = (0..1000).map(|i| f64::from(i % 2)).collect();
        xs.extend((0..1000).map(|i| 4.0 + f64::from(i % 4)));
        let found = a.detections(&xs);
        assert!(!found.is_empty());
        assert!(found[0] >= 1000 && found[0] < 1100, "{found:?}");
    }

    #[test]
    fn bucket_rows_hold_every_value() {
        let mut a = Adwin::new(AdwinParams::default());
        for i in 0..1000 {
            a.update(f64::from(i % 7));
        }
        let counted: f64 = a
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| row.len() as f64 * (1u64 << i) as f64)
            .sum();
        assert_eq!(counted, a.width());
        assert!(a.rows.iter().all(|r| r.len() <= 5));
    }
}
