//! The window state of one (window, signal) pair: it keeps the readings the
//! next windows still need, and closes windows as the signal's time passes.
//!
//! The window ending at `e` (a multiple of the hop on the epoch clock) holds
//! the usable readings with `e - size <= ts < e`, and closes when the signal
//! reports a reading (of any quality) at or after `e`. Windows without
//! readings are skipped in one step however long the gap, so a clock jump
//! costs nothing. The *watermark* is the latest window end up to which this
//! state has closed everything; joins use it to know that no more features
//! can come for an end.

use crate::features::FeatureSet;

/// Most readings one window state keeps; further readings are left out of
/// the window (counted in [`WindowStats::overflow`]). At 16 bytes a reading
/// this is 16 MiB, e.g. a 17-minute window at 1 kHz.
pub const MAX_WINDOW_READINGS: usize = 1 << 20;

/// What happened to one (window, signal) pair's windows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Windows that produced features.
    pub closed: u64,
    /// Windows with some readings, but fewer than `min_readings`.
    pub too_few: u64,
    /// Windows whose features came out NaN, infinite or too large for
    /// `f32` (values around 1e150 and above).
    pub non_finite: u64,
    /// Readings left out because the window already held
    /// [`MAX_WINDOW_READINGS`].
    pub overflow: u64,
}

/// One window over one signal.
#[derive(Debug, Clone)]
pub(crate) struct WindowState {
    size: i64,
    hop: i64,
    min_readings: usize,
    features: FeatureSet,
    /// Buffered usable readings from index `head` on, in time order; all
    /// earlier than `next_end`.
    ts: Vec<i64>,
    values: Vec<f64>,
    head: usize,
    /// The next window end that may hold readings.
    next_end: i64,
    /// Every window ending at or before this has been closed.
    pub watermark: i64,
    /// `watermark + hop`: a reading at or after it closes windows.
    watermark_next: i64,
    out: Vec<f64>,
    pub stats: WindowStats,
}

impl WindowState {
    /// A window of `size` nanoseconds every `hop` nanoseconds (both > 0,
    /// at most `MAX_INTERVAL_MS`).
    pub fn new(size: i64, hop: i64, min_readings: usize, features: FeatureSet) -> WindowState {
        WindowState {
            size,
            hop,
            min_readings,
            out: vec![0.0; features.width()],
            features,
            ts: Vec::new(),
            values: Vec::new(),
            head: 0,
            next_end: i64::MIN,
            watermark: i64::MIN,
            watermark_next: i64::MIN,
            stats: WindowStats::default(),
        }
    }

    /// The hop in nanoseconds.
    pub fn hop(&self) -> i64 {
        self.hop
    }

    /// The smallest window end after `ts`.
    fn first_end_after(&self, ts: i64) -> i64 {
        ts.div_euclid(self.hop) * self.hop + self.hop
    }

    /// Takes one reading of the signal, in time order (the transform chain
    /// guarantees it). Windows it closes are passed to `closed` as (end,
    /// features). Returns whether the watermark moved.
    #[inline]
    pub fn push(
        &mut self,
        ts: i64,
        value: f64,
        usable: bool,
        closed: &mut impl FnMut(i64, &[f64]),
    ) -> bool {
        let advanced = ts >= self.watermark_next;
        if advanced {
            self.advance(ts, closed);
        }
        if usable {
            if self.head == self.ts.len() {
                self.next_end = self.next_end.max(self.first_end_after(ts));
            }
            if self.ts.len() - self.head < MAX_WINDOW_READINGS {
                self.ts.push(ts);
                self.values.push(value);
            } else {
                self.stats.overflow += 1;
            }
        }
        advanced
    }

    /// Closes every window ending at or before `t`.
    fn advance(&mut self, t: i64, closed: &mut impl FnMut(i64, &[f64])) {
        while self.head < self.ts.len() {
            let end = self.next_end;
            if end > t {
                break;
            }
            let start = end - self.size;
            let live = &self.ts[self.head..];
            self.head += live.partition_point(|&x| x < start);
            let Some(&oldest) = self.ts.get(self.head) else {
                break;
            };
            if oldest >= end {
                // A gap: jump to the first window holding a reading.
                self.next_end = self.first_end_after(oldest);
                continue;
            }
            // Every buffered reading is earlier than `end`.
            let (ts, values) = (&self.ts[self.head..], &self.values[self.head..]);
            if ts.len() < self.min_readings {
                self.stats.too_few += 1;
            } else if self.features.compute(start, ts, values, &mut self.out) {
                self.stats.closed += 1;
                closed(end, &self.out);
            } else {
                self.stats.non_finite += 1;
            }
            self.next_end = end + self.hop;
        }
        if self.head > 0 && self.head * 2 >= self.ts.len() {
            self.ts.drain(..self.head);
            self.values.drain(..self.head);
            self.head = 0;
        }
        self.watermark = t.div_euclid(self.hop) * self.hop;
        self.watermark_next = self.watermark + self.hop;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Feature;

    const S: i64 = 1_000_000_000;

    fn window(size: i64, hop: i64, min_readings: usize) -> WindowState {
        let features = FeatureSet::new(vec![Feature::Count, Feature::Mean], None);
        WindowState::new(size, hop, min_readings, features)
    }

    fn feed(w: &mut WindowState, readings: &[(i64, f64, bool)]) -> Vec<(i64, Vec<f64>)> {
        let mut out = Vec::new();
        for &(t, v, usable) in readings {
            w.push(t, v, usable, &mut |end, f: &[f64]| {
                out.push((end, f.to_vec()))
            });
        }
        out
    }

    #[test]
    fn tumbling_windows_align_to_the_epoch() {
        let mut w = window(S, S, 1);
        let out = feed(
            &mut w,
            &[
                (S / 2, 1.0, true),
                (S - 1, 3.0, true),
                (S, 10.0, true),         // closes [0, 1s)
                (2 * S + 1, 20.0, true), // closes [1s, 2s)
            ],
        );
        assert_eq!(out, vec![(S, vec![2.0, 2.0]), (2 * S, vec![1.0, 10.0])]);
        assert_eq!(w.watermark, 2 * S);
    }

    #[test]
    fn sliding_windows_overlap() {
        // 1 s windows every 0.5 s; one reading every 0.25 s with value = index.
        let mut w = window(S, S / 2, 1);
        let readings: Vec<_> = (0..9).map(|i| (i * S / 4, i as f64, true)).collect();
        let out = feed(&mut w, &readings);
        // Ends 0.5 s (readings 0,1), 1 s (0..=3), 1.5 s (2..=5), 2 s (4..=7).
        assert_eq!(
            out,
            vec![
                (S / 2, vec![2.0, 0.5]),
                (S, vec![4.0, 1.5]),
                (3 * S / 2, vec![4.0, 3.5]),
                (2 * S, vec![4.0, 5.5]),
            ]
        );
    }

    #[test]
    fn bad_readings_are_skipped_but_move_time() {
        let mut w = window(S, S, 1);
        let out = feed(
            &mut w,
            &[
                (1, 1.0, true),
                (2, 100.0, false),
                (S + 5, 0.0, false),
                (3 * S, 0.0, false),
            ],
        );
        // [0,1s) has one usable reading; [1s,2s) only a Bad one: nothing.
        assert_eq!(out, vec![(S, vec![1.0, 1.0])]);
        assert_eq!(w.watermark, 3 * S);
    }

    #[test]
    fn gaps_are_skipped_in_one_step() {
        let mut w = window(2 * S, S, 1);
        let year = 365 * 24 * 3600 * S;
        let out = feed(
            &mut w,
            &[(0, 1.0, true), (year, 2.0, true), (year + 5 * S, 0.0, true)],
        );
        assert_eq!(
            out,
            vec![
                (S, vec![1.0, 1.0]),
                (2 * S, vec![1.0, 1.0]),
                (year + S, vec![1.0, 2.0]),
                (year + 2 * S, vec![1.0, 2.0]),
            ]
        );
        assert!(w.ts.len() - w.head == 1, "only the last reading is kept");
    }

    #[test]
    fn min_readings_withholds_thin_windows() {
        let mut w = window(S, S, 3);
        let out = feed(
            &mut w,
            &[
                (1, 1.0, true),
                (2, 1.0, true),
                (S, 1.0, true),
                (S + 1, 1.0, true),
                (S + 2, 4.0, true),
                (2 * S, 0.0, true),
            ],
        );
        assert_eq!(out, vec![(2 * S, vec![3.0, 2.0])]);
        assert_eq!((w.stats.closed, w.stats.too_few), (1, 1));
    }

    #[test]
    fn negative_timestamps() {
        let mut w = window(S, S, 1);
        let out = feed(
            &mut w,
            &[(-S / 2, 1.0, true), (0, 2.0, true), (S, 3.0, true)],
        );
        assert_eq!(out, vec![(0, vec![1.0, 1.0]), (S, vec![1.0, 2.0])]);
    }
}
