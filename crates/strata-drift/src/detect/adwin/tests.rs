use super::explicit::{Rows, cuts};
use super::oracle::Oracle;
use super::*;
use crate::detect::adwin::cut::{Screen, Window};

/// A small deterministic generator.
struct Xorshift(u64);

impl Xorshift {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize
    }
}

/// Streams with changes of several kinds and scales.
fn streams() -> Vec<(&'static str, Vec<f64>)> {
    let mut rng = Xorshift(0x1234_5678);
    let mut make = |n: usize, f: &mut dyn FnMut(usize, f64) -> f64| -> Vec<f64> {
        (0..n).map(|i| f(i, rng.uniform())).collect()
    };
    vec![
        (
            "steps",
            make(12_000, &mut |i, u| u + [0.0, 0.8, 0.2][(i / 3000) % 3]),
        ),
        ("ramp", make(8_000, &mut |i, u| i as f64 * 1e-3 + u)),
        ("constant", make(3_000, &mut |_, _| 2.5)),
        (
            "bernoulli",
            make(8_000, &mut |i, u| f64::from(u < [0.1, 0.4][(i / 4000) % 2])),
        ),
        (
            "spikes",
            make(6_000, &mut |i, u| {
                if u < 0.01 {
                    50.0
                } else {
                    (i / 3000) as f64 * 0.5
                }
            }),
        ),
        (
            "tiny",
            make(6_000, &mut |i, u| {
                1e-80 * u + 1e-81 * ((i / 2000) % 2) as f64
            }),
        ),
        (
            "huge",
            make(6_000, &mut |i, u| {
                -1e82 + 1e80 * u + 1e79 * ((i / 2000) % 2) as f64
            }),
        ),
        (
            "offset",
            make(6_000, &mut |i, u| {
                1e6 + 1e-3 * u + 2e-4 * ((i / 2000) % 2) as f64
            }),
        ),
    ]
}

/// Parameter sets: river's defaults, river's reference runs and a spread
/// of clocks (aligned with the blocks of 32 or not) and row sizes.
fn param_sets() -> Vec<AdwinParams> {
    let d = AdwinParams::default();
    let mut sets = vec![d];
    for (clock, max_buckets, min_window_length, grace_period, delta) in [
        (1, 5, 5, 10, 0.01),
        (16, 3, 10, 50, 0.0001),
        (4, 2, 1, 5, 0.05),
        (7, 1, 1, 0, 0.1),
        (64, 5, 5, 10, 0.002),
        (96, 10, 3, 40, 0.002),
        (32, 1, 2, 3, 0.02),
        (100, 4, 5, 10, 0.002),
    ] {
        sets.push(AdwinParams {
            delta,
            clock,
            max_buckets,
            min_window_length,
            grace_period,
        });
    }
    sets
}

fn assert_same_window(a: &Adwin, o: &Oracle, what: &str) {
    let w = &o.window;
    assert_eq!(
        (
            a.window.width,
            a.window.total.to_bits(),
            a.window.variance.to_bits()
        ),
        (w.width, w.total.to_bits(), w.variance.to_bits()),
        "{what}: width, sum and variance"
    );
}

#[test]
fn every_stream_and_parameter_set_detects_as_river_written_out() {
    let mut detections = 0;
    for (name, xs) in streams() {
        for params in param_sets() {
            let mut oracle = Oracle::new(params);
            let theirs: Vec<usize> = (0..xs.len()).filter(|&i| oracle.update(xs[i])).collect();
            let what = format!("{name}, {params:?}");

            let mut whole = Adwin::new(params);
            assert_eq!(whole.detections(&xs), theirs, "{what}: all at once");
            assert_same_window(&whole, &oracle, &what);

            let mut one = Adwin::new(params);
            let by_value: Vec<usize> = (0..xs.len()).filter(|&i| one.update(xs[i])).collect();
            assert_eq!(by_value, theirs, "{what}: value by value");
            assert_same_window(&one, &oracle, &what);

            // In pieces of any length, so blocks start anywhere.
            let mut rng = Xorshift(0x9e37_79b9 ^ xs.len() as u64);
            let mut pieces = Adwin::new(params);
            let mut found = Vec::new();
            let mut at = 0;
            while at < xs.len() {
                let len = (1 + rng.below(100)).min(xs.len() - at);
                found.extend(pieces.detections(&xs[at..at + len]).iter().map(|i| i + at));
                if rng.below(4) == 0 && at + len < xs.len() {
                    found.extend(pieces.update(xs[at + len]).then_some(at + len));
                    at += 1;
                }
                at += len;
            }
            assert_eq!(found, theirs, "{what}: in pieces");
            detections += theirs.len();
        }
    }
    assert!(detections > 200, "{detections} detections");
}

#[test]
fn the_tree_holds_river_s_rows_after_every_value() {
    let mut rng = Xorshift(77);
    for max_buckets in [1, 2, 3, 5, 8, 40] {
        let params = AdwinParams {
            max_buckets,
            clock: 1_000_000,
            ..AdwinParams::default()
        };
        let mut oracle = Oracle::new(params);
        let mut a = Adwin::new(params);
        let xs: Vec<f64> = (0..5_000).map(|_| rng.uniform() * 10.0 - 3.0).collect();
        for (i, &x) in xs.iter().enumerate() {
            oracle.update(x);
            a.update(x);
            if i < 300 || i % 97 == 0 {
                assert_eq!(
                    a.buckets.materialize(),
                    oracle.window.rows,
                    "max_buckets {max_buckets}, after {} values",
                    i + 1
                );
            }
        }
        // And the same after blocks of 32.
        let mut blocks = Adwin::new(params);
        blocks.detections(&xs);
        assert_eq!(blocks.buckets.materialize(), oracle.window.rows);
    }
}

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
fn the_screen_never_clears_a_split_that_cuts() {
    // Splits placed right at the bound (the difference of means within a
    // relative 1e-6 down to 1e-15 of river's epsilon either side, or at
    // half or twice it), at every scale from 1e-90 to 1e90 and with
    // offsets that make the means nearly equal: wherever the screen
    // clears, river does not cut.
    let mut rng = Xorshift(0x0dd_ba11);
    let (mut cleared, mut near) = (0, 0);
    for _ in 0..200_000 {
        let scale = 10f64.powf(rng.uniform() * 180.0 - 90.0);
        let offset = scale * [0.0, 1.0, 1e6, -1e9][rng.below(4)];
        let width = (2.0 + rng.uniform() * 1e6).floor();
        let min_len = (1.0 + rng.uniform() * 10.0).floor();
        let n0 = (1.0 + rng.uniform() * (width - 1.0)).floor();
        let n1 = width - n0;
        let var = scale * scale * (1e-3 + rng.uniform());
        let dp = (2.0 * width.ln() / 0.002).ln();
        let m = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
        let eps = (2.0 * m * var * dp).sqrt() + 2.0 / 3.0 * dp * m;
        let rel = [1e-6, 1e-10, 1e-13, 1e-15][rng.below(4)];
        let gap = eps * (1.0 + (rng.uniform() - 0.5) * 2.0 * rel) * [1.0, 0.5, 2.0][near % 3];
        let mean1 = offset + scale * (rng.uniform() - 0.5);
        let mean0 = mean1 + if rng.uniform() < 0.5 { gap } else { -gap };
        let (u0, u1) = (mean0 * n0, mean1 * n1);
        // The smallest slack the screen can have: no bucket sums cancel.
        let abs_sum = u0.abs() + u1.abs();
        let window = Window {
            width,
            total: u0 + u1,
            variance: var * width,
        };
        let Some(screen) = Screen::new(var, dp, window, abs_sum, min_len, 100) else {
            continue;
        };
        near += 1;
        if n0 < min_len || n1 < min_len {
            continue;
        }
        if screen.clears(n0, u0) {
            cleared += 1;
            assert!(
                !cuts(n0, n1, u0, u1, var, dp, min_len),
                "cleared a cut: n0 {n0} n1 {n1} u0 {u0:e} u1 {u1:e} var {var:e}"
            );
        }
    }
    assert!(cleared > 10_000 && near > 100_000, "{cleared} of {near}");
}

#[test]
fn screened_tests_answer_as_river_s_test_of_every_split() {
    // At every test of streams at several scales, with and without
    // changes, the screened answer is river's test run on every split.
    for (scale, offset, step) in [
        (1.0, 0.0, 0.3),
        (1e-80, 1e-78, 1e-81),
        (1e80, -1e82, 0.0),
        (1e-3, 1e6, 2e-4),
        (0.0, 5.0, 0.0),
    ] {
        let mut rng = Xorshift(0x5eed);
        let params = AdwinParams::default();
        let mut a = Adwin::new(params);
        let (mut tested, mut cut) = (0, 0);
        for i in 0..30_000 {
            let x = offset + scale * rng.uniform() + step * f64::from((i / 4000) % 2);
            a.insert(x);
            if !a.buckets.count().is_multiple_of(32) || a.window.width <= 10.0 {
                continue;
            }
            let rows = Rows {
                rows: a.buckets.materialize(),
                width: a.window.width,
                total: a.window.total,
                variance: a.window.variance,
            };
            let exact = rows.has_cut(&params);
            assert_eq!(
                a.cut.has_cut(&a.buckets, a.window, &params),
                exact,
                "scale {scale:e}, value {i}"
            );
            tested += 1;
            if exact {
                cut += 1;
                a.reset();
            }
        }
        assert!(tested > 900, "{tested} tests");
        // (ADWIN's bound has a term that does not scale with the data:
        // at the small scales no change is big enough.)
        assert!(
            scale != 1.0 || cut > 3,
            "scale {scale:e}: {cut} changes found"
        );
    }
}
