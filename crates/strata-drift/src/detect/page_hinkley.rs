//! The Page-Hinkley test (Page 1954): a cumulative sum of each value's
//! deviation from the running mean, with a forgetting factor; a change is
//! flagged when the sum has risen (or fallen) more than `threshold` from
//! its extreme. Same arithmetic as `river.drift.PageHinkley`.

use serde::{Deserialize, Serialize};

use super::Detector;

/// Which direction of change to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageHinkleyMode {
    /// Increases of the mean only.
    Up,
    /// Decreases of the mean only.
    Down,
    /// Both.
    Both,
}

/// Page-Hinkley parameters (river's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PageHinkleyParams {
    /// Values seen before a change may be flagged.
    pub min_instances: u64,
    /// The magnitude of change tolerated.
    pub delta: f64,
    /// The cumulative deviation that flags a change.
    pub threshold: f64,
    /// Forgetting factor applied to the cumulative sums.
    pub alpha: f64,
    /// Which direction to watch.
    pub mode: PageHinkleyMode,
}

impl Default for PageHinkleyParams {
    fn default() -> Self {
        PageHinkleyParams {
            min_instances: 30,
            delta: 0.005,
            threshold: 50.0,
            alpha: 1.0 - 0.0001,
            mode: PageHinkleyMode::Both,
        }
    }
}

/// A Page-Hinkley detector.
#[derive(Debug, Clone)]
pub struct PageHinkley {
    params: PageHinkleyParams,
    n: f64,
    mean: f64,
    sum_increase: f64,
    sum_decrease: f64,
    min_increase: f64,
    max_decrease: f64,
    detected: bool,
}

impl PageHinkley {
    /// A fresh detector.
    pub fn new(params: PageHinkleyParams) -> Self {
        PageHinkley {
            params,
            n: 0.0,
            mean: 0.0,
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: f64::INFINITY,
            max_decrease: -1.0,
            detected: false,
        }
    }

    fn reset(&mut self) {
        *self = PageHinkley::new(self.params);
    }

    /// The running mean since the last reset.
    pub fn mean(&self) -> f64 {
        self.mean
    }
}

impl Detector for PageHinkley {
    fn update(&mut self, x: f64) -> bool {
        if self.detected {
            self.reset();
        }
        // river's stats.Mean: n += 1; mean += (1 / n) * (x - mean).
        self.n += 1.0;
        self.mean += (1.0 / self.n) * (x - self.mean);
        let dev = x - self.mean;
        let p = &self.params;
        self.sum_increase = p.alpha * self.sum_increase + dev - p.delta;
        self.sum_decrease = p.alpha * self.sum_decrease + dev + p.delta;
        if self.sum_increase < self.min_increase {
            self.min_increase = self.sum_increase;
        }
        if self.sum_decrease > self.max_decrease {
            self.max_decrease = self.sum_decrease;
        }
        if self.n >= p.min_instances as f64 {
            let up = self.sum_increase - self.min_increase;
            let down = self.max_decrease - self.sum_decrease;
            self.detected = match p.mode {
                PageHinkleyMode::Up => up > p.threshold,
                PageHinkleyMode::Down => down > p.threshold,
                PageHinkleyMode::Both => up > p.threshold || down > p.threshold,
            };
        }
        self.detected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_up_is_found_and_a_flat_stream_is_not() {
        let mut ph = PageHinkley::new(PageHinkleyParams::default());
        let flat = vec![1.0; 2000];
        assert!(ph.detections(&flat).is_empty());
        let mut ph = PageHinkley::new(PageHinkleyParams::default());
        let mut step = vec![0.0; 500];
        step.extend(vec![5.0; 500]);
        let found = ph.detections(&step);
        assert!(
            !found.is_empty() && found[0] > 500 && found[0] < 520,
            "{found:?}"
        );
    }

    #[test]
    fn up_mode_ignores_a_drop() {
        let params = PageHinkleyParams {
            mode: PageHinkleyMode::Up,
            ..PageHinkleyParams::default()
        };
        let mut ph = PageHinkley::new(params);
        let mut drop = vec![5.0; 500];
        drop.extend(vec![0.0; 500]);
        assert!(ph.detections(&drop).is_empty());
    }
}
