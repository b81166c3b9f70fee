//! River's ADWIN written out literally, value by value, with rows of
//! buckets and every split tested in river's arithmetic: no blocks, no
//! screen. The tests hold [`super::Adwin`] to it, bucket by bucket and
//! detection by detection.

use super::AdwinParams;
use super::explicit::Rows;

#[derive(Debug, Clone)]
pub(super) struct Oracle {
    params: AdwinParams,
    pub window: Rows,
    tick: u64,
    detected: bool,
}

impl Oracle {
    pub fn new(params: AdwinParams) -> Self {
        Oracle {
            params,
            window: Rows {
                rows: vec![Vec::new()],
                width: 0.0,
                total: 0.0,
                variance: 0.0,
            },
            tick: 0,
            detected: false,
        }
    }

    pub fn update(&mut self, x: f64) -> bool {
        if self.detected {
            *self = Oracle::new(self.params);
        }
        let w = &mut self.window;
        let mut incremental = 0.0;
        if w.width + 1.0 > 1.0 {
            let d = x - w.total / w.width;
            incremental = w.width * d * d / (w.width + 1.0);
        }
        w.width += 1.0;
        w.variance += incremental;
        w.total += x;
        w.rows[0].push((x, 0.0));
        self.compress();
        self.detected = self.detect();
        self.detected
    }

    /// A row that reaches `max_buckets + 1` buckets merges its two oldest
    /// into one bucket of the next row.
    fn compress(&mut self) {
        let cap = self.params.max_buckets.max(1) + 1;
        let rows = &mut self.window.rows;
        let mut i = 0;
        while rows[i].len() >= cap {
            let n = (1u64 << i) as f64;
            let inv = 1.0 / n;
            let (t0, v0) = rows[i][0];
            let (t1, v1) = rows[i][1];
            let (mu0, mu1) = (t0 * inv, t1 * inv);
            let merged = (t0 + t1, v0 + v1 + n * 0.5 * (mu0 - mu1) * (mu0 - mu1));
            rows[i].drain(..2);
            if i + 1 == rows.len() {
                rows.push(Vec::new());
            }
            rows[i + 1].push(merged);
            i += 1;
        }
    }

    fn detect(&mut self) -> bool {
        self.tick += 1;
        let p = self.params;
        if !self.tick.is_multiple_of(u64::from(p.clock))
            || self.window.width <= f64::from(p.grace_period)
        {
            return false;
        }
        let mut changed = false;
        while self.window.has_cut(&p) {
            changed = true;
            if self.window.width <= 0.0 {
                break;
            }
            self.window.drop_oldest();
        }
        changed
    }
}
