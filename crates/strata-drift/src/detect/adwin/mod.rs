//! ADWIN, adaptive windowing (Bifet & Gavaldà 2007), in its ADWIN2 form
//! with exponential buckets: the window is summarised as rows of buckets,
//! row i holding up to `max_buckets` summaries of 2^i values. Every
//! `clock` values, every split of the window into an older and a newer
//! part is tested; when their means differ by more than the Hoeffding-style
//! bound, the oldest bucket is dropped and a change is reported.
//!
//! The arithmetic (the streaming variance update, the merge of two
//! buckets, the cut bound) is river's, in the same order, so detections
//! land on the same indices as `river.drift.ADWIN`. What makes it fast
//! without changing an answer:
//! - the rows are a tree of aligned blocks ([`buckets`]), so 32 values
//!   arrive in one vectorized pass with the same merges river makes one
//!   value at a time;
//! - once the running sums of those 32 values are known (in river's
//!   order), their variance increments do not depend on one another, so
//!   their divisions run side by side; the batch path is also compiled
//!   for AVX2 and takes it where the CPU has it (`pulp` picks at run time,
//!   so one binary still runs on older gateways);
//! - at a test, a screen without divisions or roots clears the splits that
//!   provably do not cut, and river's own test runs only on the rest
//!   ([`cut`]).
//!
//! After a detection river drops old buckets and tests again; that runs on
//! a literal copy of the rows ([`explicit`]), once per detection.

mod buckets;
mod cut;
mod explicit;
#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use super::Detector;
use buckets::{BLOCK, Buckets};
use cut::{CutTest, Window};
use explicit::Rows;

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

/// An ADWIN detector.
#[derive(Debug, Clone)]
pub struct Adwin {
    params: AdwinParams,
    buckets: Buckets,
    window: Window,
    detected: bool,
    cut: CutTest,
}

impl Adwin {
    /// A fresh detector.
    pub fn new(params: AdwinParams) -> Self {
        let mut cut = CutTest::default();
        cut.reset();
        Adwin {
            params,
            buckets: Buckets::new(params.max_buckets),
            window: Window::default(),
            detected: false,
            cut,
        }
    }

    /// How many values the window holds.
    pub fn width(&self) -> f64 {
        self.window.width
    }

    /// The mean of the window (0 when empty).
    pub fn estimation(&self) -> f64 {
        if self.window.width == 0.0 {
            0.0
        } else {
            self.window.total / self.window.width
        }
    }

    /// Starts afresh, as river does on the value after a detection.
    fn reset(&mut self) {
        self.buckets = Buckets::new(self.params.max_buckets);
        self.window = Window::default();
        self.detected = false;
        self.cut.reset();
    }

    /// Takes one value: river's variance update, then the buckets.
    fn insert(&mut self, x: f64) {
        let w = &mut self.window;
        let mut incremental = 0.0;
        if w.width + 1.0 > 1.0 {
            let d = x - w.total / w.width;
            incremental = w.width * d * d / (w.width + 1.0);
        }
        w.width += 1.0;
        w.variance += incremental;
        w.total += x;
        self.buckets.push(x);
    }

    /// Takes 32 values, the count so far a multiple of 32: the same as
    /// [`Adwin::insert`] on each. `ahead` is the window after them when
    /// already known ([`after_block`]).
    #[inline(always)]
    fn insert_block(&mut self, xs: &[f64; BLOCK], ahead: Option<Window>) {
        self.window = ahead.unwrap_or_else(|| after_block(self.window, xs));
        self.buckets.push_block(xs);
    }

    /// Takes `run` (values up to the next test at most); `ahead` as in
    /// [`Adwin::insert_block`] for its first block.
    #[inline(always)]
    fn insert_run(&mut self, run: &[f64], mut ahead: Option<Window>) {
        let mut rest = run;
        while !rest.is_empty() {
            let aligned = self.buckets.count().is_multiple_of(BLOCK as u64);
            match rest.split_first_chunk::<BLOCK>() {
                Some((block, tail)) if aligned => {
                    self.insert_block(block, ahead.take());
                    rest = tail;
                }
                _ => {
                    debug_assert!(ahead.is_none());
                    self.insert(rest[0]);
                    rest = &rest[1..];
                }
            }
        }
    }

    /// The test after the value that completes a clock period: river tests
    /// once the window holds more than `grace_period` values; on a cut it
    /// drops the oldest bucket and tests again until nothing cuts.
    #[inline(always)]
    fn test(&mut self) -> bool {
        let p = self.params;
        if !self.buckets.count().is_multiple_of(u64::from(p.clock))
            || self.window.width <= f64::from(p.grace_period)
            || !self.cut.has_cut(&self.buckets, self.window, &p)
        {
            return false;
        }
        let Window {
            width,
            total,
            variance,
            ..
        } = self.window;
        let mut rows = Rows {
            rows: self.buckets.materialize(),
            width,
            total,
            variance,
        };
        loop {
            if rows.width <= 0.0 {
                break;
            }
            rows.drop_oldest();
            if !rows.has_cut(&p) {
                break;
            }
        }
        self.window = Window {
            width: rows.width,
            total: rows.total,
            variance: rows.variance,
        };
        true
    }

    /// [`Detector::detections`] itself.
    #[inline(always)]
    fn scan(&mut self, xs: &[f64]) -> Vec<usize> {
        let mut found = Vec::new();
        let clock = u64::from(self.params.clock);
        let mut ahead = None;
        let mut i = 0;
        while i < xs.len() {
            if self.detected {
                self.reset();
            }
            // Values up to and including the next one that tests.
            let to_test = (clock - self.buckets.count() % clock) as usize;
            let run = &xs[i..(i + to_test).min(xs.len())];
            self.insert_run(run, ahead.take());
            if run.len() == to_test {
                // When a whole block follows, its window's running sums
                // (two serial chains) go ahead of the test, whose own
                // chain of sums runs beside them; a detection throws
                // them away, as the detector starts afresh.
                let next = &xs[i + run.len()..];
                if let Some((block, _)) = next.split_first_chunk::<BLOCK>()
                    && clock >= BLOCK as u64
                    && self.buckets.count().is_multiple_of(BLOCK as u64)
                {
                    ahead = Some(after_block(self.window, block));
                }
                self.detected = self.test();
                if self.detected {
                    found.push(i + run.len() - 1);
                    ahead = None;
                }
            }
            i += run.len();
        }
        found
    }
}

/// The window after the 32 values `xs`, as [`Adwin::insert`] makes it
/// value by value. The running sums advance value by value in river's
/// order; given them, the 32 variance increments do not depend on one
/// another, so their divisions run side by side.
#[inline(always)]
fn after_block(w: Window, xs: &[f64; BLOCK]) -> Window {
    let Window {
        mut width,
        mut total,
        mut variance,
    } = w;
    // The window's sum before each value, in river's order.
    let mut before = [0.0; BLOCK];
    for (b, &x) in before.iter_mut().zip(xs) {
        *b = total;
        total += x;
    }
    let mut incs = [0.0; BLOCK];
    for (k, inc) in incs.iter_mut().enumerate() {
        let w = width + k as f64;
        let d = xs[k] - before[k] / w;
        *inc = w * d * d / (w + 1.0);
    }
    if width == 0.0 {
        // River adds nothing for the first value.
        incs[0] = 0.0;
    }
    for inc in incs {
        variance += inc;
    }
    width += BLOCK as f64;
    Window {
        width,
        total,
        variance,
    }
}

impl Detector for Adwin {
    fn update(&mut self, x: f64) -> bool {
        if self.detected {
            self.reset();
        }
        self.insert(x);
        self.detected = self.test();
        self.detected
    }

    /// The same as updating value by value, faster: values between two
    /// tests arrive 32 at a time.
    fn detections(&mut self, xs: &[f64]) -> Vec<usize> {
        pulp::Arch::new().dispatch(Scan { adwin: self, xs })
    }
}

/// [`Adwin::scan`] compiled for AVX2 where the CPU has it (a struct, not
/// a closure, so that all of it is inlined into the version that `pulp`
/// picks at run time). Not AVX-512: on an Intel Xeon its 512-bit
/// vectors made the whole scan about a fifth slower (5.7 against 4.5 ns
/// a value), where on a Zen 4 they had saved a twentieth.
struct Scan<'a> {
    adwin: &'a mut Adwin,
    xs: &'a [f64],
}

impl pulp::WithSimd for Scan<'_> {
    type Output = Vec<usize>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<usize> {
        self.adwin.scan(self.xs)
    }
}
