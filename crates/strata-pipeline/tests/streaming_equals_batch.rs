//! Property tests: the streaming pipeline, fed random readings split into
//! random pushes, equals a batch computation over all the readings written
//! here from the definitions (naive formulas, an O(N²) DFT); splitting the
//! same readings differently gives bit-identical output; and no input,
//! however malformed, makes the pipeline panic or emit a non-finite value.
//!
//! Tolerances: transformed values within 1e-9 relative (the unit conversion
//! is computed differently here); statistics, which travel as f32, within
//! 1e-5 relative (plus 1e-5 absolute for values that should be 0, such as
//! the skewness of two readings); band energies within 1e-6 of the window's
//! total energy about its mean.

use std::collections::BTreeMap;

use proptest::prelude::*;
use strata_pipeline::{
    Convert, Feature, Output, Pipeline, PipelineConfig, RangeAction, RangeCheck, ResampleMode,
    SignalConfig, VectorConfig, WindowConfig,
};
use strata_proto::{SignalSeries, TelemetryBatch};

const MS: i64 = 1_000_000;
const GOOD: i32 = 0;
const BAD: i32 = 2;
const MIN_TS: i64 = -(1 << 62);
const MAX_TS: i64 = 1 << 62;

const STATS: [Feature; 9] = [
    Feature::Count,
    Feature::Mean,
    Feature::Std,
    Feature::Min,
    Feature::Max,
    Feature::Rms,
    Feature::PeakToPeak,
    Feature::Kurtosis,
    Feature::Skewness,
];

/// The configurable part of the test pipeline.
#[derive(Debug, Clone)]
struct Params {
    scale: f64,
    offset: f64,
    convert: bool,
    range: Option<(f64, f64, RangeAction)>,
    /// The band and the longest a steady signal is held back (ms).
    deadband: Option<(f64, u64)>,
    resample: Option<(u64, ResampleMode)>,
    size_ms: u64,
    hop_ms: u64,
    min_readings: usize,
    rate_hz: f64,
}

impl Params {
    fn bands(&self) -> Vec<[f64; 2]> {
        let fs = self.rate_hz;
        vec![[0.0, fs / 4.0], [fs / 4.0, fs]]
    }

    /// Signal `a` goes through the configured chain and comes out as
    /// `a_out`; `b` is not configured (passed through). Window `w` covers
    /// both, window `u` (twice as long, same hop) covers `a_out`.
    fn config(&self) -> PipelineConfig {
        let a = SignalConfig {
            name: "a".into(),
            rename: Some("a_out".into()),
            scale: self.scale,
            offset: self.offset,
            unit: None,
            convert: self.convert.then(|| Convert {
                from: "degF".into(),
                to: "Cel".into(),
            }),
            range: self.range.map(|(min, max, action)| RangeCheck {
                min: Some(min),
                max: Some(max),
                action,
            }),
            deadband: self.deadband.map(|(band, _)| band),
            deadband_max_ms: self.deadband.map_or(10_000, |(_, ms)| ms),
            resample_ms: self.resample.map(|(ms, _)| ms),
            resample: self.resample.map_or(ResampleMode::Last, |(_, m)| m),
        };
        let window = |name: &str, signals: &[&str], size_ms: u64| WindowConfig {
            name: name.into(),
            signals: signals.iter().map(|s| s.to_string()).collect(),
            size_ms,
            hop_ms: Some(self.hop_ms),
            features: STATS.to_vec(),
            fft_bands_hz: self.bands(),
            sample_rate_hz: Some(self.rate_hz),
            min_readings: self.min_readings,
        };
        PipelineConfig {
            signals: vec![a],
            windows: vec![
                window("w", &["a_out", "b"], self.size_ms),
                window("u", &["a_out"], 2 * self.size_ms),
            ],
            vectors: vec![VectorConfig {
                name: "v".into(),
                features: self.vector_features(),
            }],
            ..Default::default()
        }
    }

    /// Every feature of `w.a_out`, `w.b`, then `u.a_out.mean` and its bands.
    fn vector_features(&self) -> Vec<String> {
        let mut names = Vec::new();
        for prefix in ["w.a_out", "w.b"] {
            for f in STATS {
                names.push(format!("{prefix}.{}", f.name()));
            }
            for [lo, hi] in self.bands() {
                names.push(format!("{prefix}.band_{lo}_{hi}"));
            }
        }
        names.push("u.a_out.mean".into());
        for [lo, hi] in self.bands() {
            names.push(format!("u.a_out.band_{lo}_{hi}"));
        }
        names
    }
}

fn params() -> impl Strategy<Value = Params> {
    (
        (
            prop_oneof![Just(1.0), Just(0.1), Just(-2.5), -3.0..3.0f64],
            prop_oneof![Just(0.0), -50.0..50.0f64],
            any::<bool>(),
            prop::option::of((
                -400.0..-100.0f64,
                100.0..400.0f64,
                prop_oneof![Just(RangeAction::Flag), Just(RangeAction::Drop)],
            )),
            prop::option::of((
                prop_oneof![Just(0.0), 0.0..50.0f64],
                prop_oneof![Just(0u64), Just(15), Just(10_000)],
            )),
            prop::option::of((
                prop_oneof![Just(2u64), Just(5), Just(7), Just(10)],
                prop_oneof![Just(ResampleMode::Last), Just(ResampleMode::Mean)],
            )),
        ),
        prop_oneof![Just(20u64), Just(40), Just(60), Just(100)],
        0usize..3,
        1usize..4,
        prop_oneof![Just(100.0), Just(200.0), Just(250.0), Just(500.0)],
    )
        .prop_map(
            |(
                (scale, offset, convert, range, deadband, resample),
                size_ms,
                hop,
                min_readings,
                rate_hz,
            )| {
                let hop_ms = [size_ms, size_ms / 2, 10][hop];
                Params {
                    scale,
                    offset,
                    convert,
                    range,
                    deadband,
                    resample,
                    size_ms,
                    hop_ms,
                    min_readings,
                    rate_hz,
                }
            },
        )
}

/// One input reading: (timestamp, value, quality).
type Raw = (i64, f64, i32);

/// Readings of one signal, starting at 0..50 ms (a common start is added
/// later): mostly in order a few ms apart, with
/// duplicates, readings from the past, timestamps out of range, non-finite
/// and huge values, and unknown quality codes mixed in.
fn readings() -> impl Strategy<Value = Vec<Raw>> {
    let step = prop_oneof![
        12 => (1..15 * MS).prop_map(Some),
        1 => Just(Some(0)),
        1 => (-20 * MS..0).prop_map(Some),
        1 => Just(None),
    ];
    let value = prop_oneof![
        60 => -500.0..500.0f64,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(-1e300),
    ];
    let quality = prop_oneof![12 => Just(0), 3 => Just(1), 2 => Just(2), 1 => Just(7)];
    let extreme = prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(MAX_TS + 1),
        Just(MIN_TS)
    ];
    (
        0..50 * MS,
        prop::collection::vec((step, value, quality, extreme), 0..150),
    )
        .prop_map(|(start, items)| {
            let mut t = start;
            items
                .into_iter()
                .map(|(step, v, q, extreme)| match step {
                    Some(s) => {
                        t += s;
                        (t, v, q)
                    }
                    None => (extreme, v, q),
                })
                .collect()
        })
}

/// How to feed: chunk sizes per signal and which signal goes next.
fn splitting() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<u8>)> {
    (
        prop::collection::vec(1usize..40, 1..20),
        prop::collection::vec(1usize..40, 1..20),
        prop::collection::vec(0u8..3, 1..40),
    )
}

// ---------------------------------------------------------------------------
// The streaming side.

/// Everything a run produced: per output signal, its readings; the vectors.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    series: BTreeMap<String, Vec<Raw>>,
    vectors: Vec<(i64, Vec<f32>)>,
}

fn series(name: &str, readings: &[Raw]) -> SignalSeries {
    SignalSeries {
        name: name.into(),
        unit: "u".into(),
        ts_ns: readings.iter().map(|r| r.0).collect(),
        values: readings.iter().map(|r| r.1).collect(),
        quality: readings.iter().map(|r| r.2).collect(),
    }
}

fn collect(out: &mut Output, run: &mut Run) {
    for s in out.series() {
        let q = |i: usize| s.quality.get(i).copied().unwrap_or(GOOD);
        assert!(s.quality.is_empty() || s.quality.len() == s.values.len());
        let readings = run.series.entry(s.name.clone()).or_default();
        readings.extend((0..s.values.len()).map(|i| (s.ts_ns[i], s.values[i], q(i))));
    }
    for v in out.vectors() {
        assert_eq!(&*v.name, "v");
        run.vectors.push((v.ts_ns, v.values.clone()));
    }
    out.clear();
}

/// Feeds `a` and `b` in chunks: `order` picks a's next chunk (0), b's (1),
/// or both in one batch (2); leftovers go at the end.
fn stream(p: &Params, a: &[Raw], b: &[Raw], split: &(Vec<usize>, Vec<usize>, Vec<u8>)) -> Run {
    let mut pipeline = Pipeline::new(&p.config()).expect("test config is valid");
    let mut out = Output::new();
    let mut run = Run {
        series: BTreeMap::new(),
        vectors: Vec::new(),
    };
    let (mut ia, mut ib, mut ka, mut kb) = (0, 0, 0, 0);
    let next = |data: &[Raw], at: &mut usize, k: &mut usize, sizes: &[usize]| {
        let n = sizes[*k % sizes.len()].min(data.len() - *at);
        *k += 1;
        let chunk = data[*at..*at + n].to_vec();
        *at += n;
        chunk
    };
    let mut order = split.2.iter().cycle();
    while ia < a.len() || ib < b.len() {
        let mut which = *order.next().unwrap();
        // Once one signal is used up, the other goes on alone.
        if ia == a.len() {
            which = 1;
        } else if ib == b.len() {
            which = 0;
        }
        let mut batch = TelemetryBatch::default();
        if which != 1 && ia < a.len() {
            batch
                .signals
                .push(series("a", &next(a, &mut ia, &mut ka, &split.0)));
        }
        if which != 0 && ib < b.len() {
            batch
                .signals
                .push(series("b", &next(b, &mut ib, &mut kb, &split.1)));
        }
        pipeline.push_batch(&batch, &mut out);
        collect(&mut out, &mut run);
    }
    pipeline.finish(&mut out);
    collect(&mut out, &mut run);
    run
}

// ---------------------------------------------------------------------------
// The batch reference, from the definitions.

/// In-order readings in range, as the chain's first step keeps them.
fn in_order(input: &[Raw]) -> Vec<Raw> {
    let mut kept: Vec<Raw> = Vec::new();
    for &(t, v, q) in input {
        if !(MIN_TS..=MAX_TS).contains(&t) {
            continue;
        }
        if kept.last().is_some_and(|last| t <= last.0) {
            continue;
        }
        let q = if q == 0 || q == 1 { q } else { BAD };
        kept.push((t, v, q));
    }
    kept
}

fn reference_a(p: &Params, input: &[Raw]) -> Vec<Raw> {
    let mut passed: Vec<Raw> = Vec::new();
    let mut last_passed: Option<(f64, i32, i64)> = None;
    for (t, x, mut q) in in_order(input) {
        let mut y = x * p.scale + p.offset;
        if p.convert {
            y = (y - 32.0) * 5.0 / 9.0;
        }
        if !y.is_finite() {
            continue;
        }
        if let Some((min, max, action)) = p.range
            && (y < min || y > max)
        {
            if action == RangeAction::Drop {
                continue;
            }
            q = BAD;
        }
        if let Some((band, max_ms)) = p.deadband {
            if let Some((last, last_q, last_t)) = last_passed
                && q == last_q
                && (y - last).abs() <= band
                && (max_ms == 0 || t - last_t < max_ms as i64 * MS)
            {
                continue;
            }
            last_passed = Some((y, q, t));
        }
        passed.push((t, y, q));
    }
    let Some((ms, mode)) = p.resample else {
        return passed;
    };
    let period = ms as i64 * MS;
    let mut groups: BTreeMap<i64, Vec<Raw>> = BTreeMap::new();
    for r in passed {
        groups.entry(r.0.div_euclid(period)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(k, g)| {
            let ts = k * period;
            match mode {
                ResampleMode::Last => {
                    let last = g[g.len() - 1];
                    (ts, last.1, last.2)
                }
                ResampleMode::Mean => {
                    let good: Vec<&Raw> = g.iter().filter(|r| r.2 != BAD).collect();
                    if good.is_empty() {
                        let sum: f64 = g.iter().map(|r| r.1).sum();
                        (ts, sum / g.len() as f64, BAD)
                    } else {
                        let sum: f64 = good.iter().map(|r| r.1).sum();
                        let q = good.iter().map(|r| r.2).max().unwrap();
                        (ts, sum / good.len() as f64, q)
                    }
                }
            }
        })
        .collect()
}

fn reference_b(input: &[Raw]) -> Vec<Raw> {
    in_order(input)
        .into_iter()
        .filter(|r| r.1.is_finite())
        .collect()
}

/// The statistics and band energies of one window, or None if any is not
/// finite in f32. `start` is the window start, `readings` its usable ones.
fn window_features(
    p: &Params,
    size_ms: u64,
    start: i64,
    readings: &[Raw],
) -> Option<(Vec<f64>, f64)> {
    let x: Vec<f64> = readings.iter().map(|r| r.1).collect();
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let central = |k: i32| x.iter().map(|v| (v - mean).powi(k)).sum::<f64>() / n;
    let (m2, m3, m4) = (central(2), central(3), central(4));
    let min = x.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut values = vec![
        n,
        mean,
        m2.sqrt(),
        min,
        max,
        (x.iter().map(|v| v * v).sum::<f64>() / n).sqrt(),
        max - min,
        if m2 > 0.0 { m4 / (m2 * m2) - 3.0 } else { 0.0 },
        if m2 > 0.0 { m3 / m2.powf(1.5) } else { 0.0 },
    ];
    // Band energies with a naive DFT over the slot grid.
    let period = (1e9 / p.rate_hz).round() as i64;
    let slots = (size_ms as i64 * MS / period) as usize;
    let mut grid = vec![0.0; slots];
    for r in readings {
        let slot = ((r.0 - start) / period) as usize;
        if slot < slots {
            grid[slot] = r.1 - mean;
        }
    }
    let total: f64 = grid.iter().map(|g| g * g).sum();
    let fs = 1e9 / period as f64;
    for [lo, hi] in p.bands() {
        let mut energy = 0.0;
        for k in 0..=slots / 2 {
            let f = k as f64 * fs / slots as f64;
            if !(lo <= f && f < hi) {
                continue;
            }
            let (mut re, mut im) = (0.0, 0.0);
            for (j, g) in grid.iter().enumerate() {
                let angle = -2.0 * std::f64::consts::PI * (k * j) as f64 / slots as f64;
                re += g * angle.cos();
                im += g * angle.sin();
            }
            let weight = if k == 0 || 2 * k == slots { 1.0 } else { 2.0 };
            energy += weight * (re * re + im * im) / slots as f64;
        }
        values.push(energy);
    }
    values
        .iter()
        .all(|v| v.is_finite() && (*v as f32).is_finite())
        .then_some((values, total))
}

/// Per window end, the features of one window over one signal's output.
fn reference_window(p: &Params, size_ms: u64, output: &[Raw]) -> BTreeMap<i64, (Vec<f64>, f64)> {
    let (size, hop) = (size_ms as i64 * MS, p.hop_ms as i64 * MS);
    let Some(latest) = output.last().map(|r| r.0) else {
        return BTreeMap::new();
    };
    let usable: Vec<Raw> = output.iter().copied().filter(|r| r.2 != BAD).collect();
    let mut ends: Vec<i64> = Vec::new();
    for r in &usable {
        // Ends e (multiples of hop) with e - size <= ts < e.
        let mut e = r.0.div_euclid(hop) * hop + hop;
        while e - size <= r.0 {
            ends.push(e);
            e += hop;
        }
    }
    ends.sort_unstable();
    ends.dedup();
    let mut windows = BTreeMap::new();
    for e in ends.into_iter().filter(|&e| e <= latest) {
        let inside: Vec<Raw> = usable
            .iter()
            .copied()
            .filter(|r| e - size <= r.0 && r.0 < e)
            .collect();
        if inside.len() < p.min_readings {
            continue;
        }
        if let Some(f) = window_features(p, size_ms, e - size, &inside) {
            windows.insert(e, f);
        }
    }
    windows
}

/// The expected vectors: (end, values with each value's tolerance).
fn reference_vectors(p: &Params, a: &[Raw], b: &[Raw]) -> Vec<(i64, Vec<(f64, f64)>)> {
    let wa = reference_window(p, p.size_ms, a);
    let wb = reference_window(p, p.size_ms, b);
    let ua = reference_window(p, 2 * p.size_ms, a);
    let stat_tol = |v: f64| 1e-5 * v.abs().max(1.0);
    let mut vectors = Vec::new();
    for (&end, (fa, ta)) in &wa {
        let (Some((fb, tb)), Some((fu, tu))) = (wb.get(&end), ua.get(&end)) else {
            continue;
        };
        let mut values = Vec::new();
        for (f, total) in [(fa, ta), (fb, tb)] {
            values.extend(f[..9].iter().map(|&v| (v, stat_tol(v))));
            values.extend(f[9..].iter().map(|&v| (v, 1e-6 * (total + v.abs()) + 1e-9)));
        }
        values.push((fu[1], stat_tol(fu[1])));
        values.extend(fu[9..].iter().map(|&v| (v, 1e-6 * (tu + v.abs()) + 1e-9)));
        vectors.push((end, values));
    }
    vectors
}

fn assert_series_close(name: &str, got: &[Raw], want: &[Raw]) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        got.len(),
        want.len(),
        "{} readings: {:?} vs {:?}",
        name,
        got,
        want
    );
    for (g, w) in got.iter().zip(want) {
        prop_assert_eq!((g.0, g.2), (w.0, w.2), "{}: {:?} vs {:?}", name, g, w);
        prop_assert!(
            (g.1 - w.1).abs() <= 1e-9 * w.1.abs().max(1.0),
            "{}: {:?} vs {:?}",
            name,
            g,
            w
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn streaming_equals_batch_and_splitting_does_not_matter(
        p in params(),
        start in -2_000 * MS..2_000 * MS,
        a in readings(),
        b in readings(),
        split1 in splitting(),
        split2 in splitting(),
    ) {
        let shift = |r: &Vec<Raw>| -> Vec<Raw> {
            r.iter()
                .map(|&(t, v, q)| (if (MIN_TS..=MAX_TS).contains(&t) { t + start } else { t }, v, q))
                .collect()
        };
        let (a, b) = (shift(&a), shift(&b));
        let run = stream(&p, &a, &b, &split1);
        let again = stream(&p, &a, &b, &split2);
        prop_assert_eq!(&run, &again, "two splittings disagree");

        let want_a = reference_a(&p, &a);
        let want_b = reference_b(&b);
        let none = Vec::new();
        assert_series_close("a_out", run.series.get("a_out").unwrap_or(&none), &want_a)?;
        assert_series_close("b", run.series.get("b").unwrap_or(&none), &want_b)?;
        prop_assert!(run.series.keys().all(|k| k == "a_out" || k == "b"));

        let want = reference_vectors(&p, &want_a, &want_b);
        let got_ends: Vec<i64> = run.vectors.iter().map(|v| v.0).collect();
        let want_ends: Vec<i64> = want.iter().map(|v| v.0).collect();
        prop_assert_eq!(got_ends, want_ends);
        for ((end, got), (_, want)) in run.vectors.iter().zip(&want) {
            prop_assert_eq!(got.len(), want.len());
            for (i, (g, (w, tol))) in got.iter().zip(want).enumerate() {
                prop_assert!(
                    (f64::from(*g) - w).abs() <= *tol,
                    "vector at {} feature {} ({}): got {} want {} (tolerance {})",
                    end, i, p.vector_features()[i], g, w, tol
                );
            }
        }
    }

    #[test]
    fn no_input_makes_it_panic_or_emit_non_finite_values(
        p in params(),
        batches in prop::collection::vec(
            prop::collection::vec(
                (
                    prop_oneof![Just("a".to_string()), Just("b".to_string()), "[a-c]{1,2}"],
                    prop::collection::vec(any::<i64>(), 0..20),
                    prop::collection::vec(any::<f64>(), 0..20),
                    prop::collection::vec(any::<i32>(), 0..20),
                ),
                0..4,
            ),
            0..12,
        ),
    ) {
        let mut pipeline = Pipeline::new(&p.config()).unwrap();
        let mut out = Output::new();
        let mut last_ts: BTreeMap<String, i64> = BTreeMap::new();
        let mut last_end = i64::MIN;
        for signals in &batches {
            let batch = TelemetryBatch {
                stream: "s".into(),
                seq: 1,
                signals: signals
                    .iter()
                    .map(|(name, ts, values, quality)| SignalSeries {
                        name: name.clone(),
                        unit: String::new(),
                        ts_ns: ts.clone(),
                        values: values.clone(),
                        quality: quality.clone(),
                    })
                    .collect(),
            };
            pipeline.push_batch(&batch, &mut out);
            for s in out.series() {
                prop_assert_eq!(s.ts_ns.len(), s.values.len());
                prop_assert!(s.quality.is_empty() || s.quality.len() == s.values.len());
                prop_assert!(s.values.iter().all(|v| v.is_finite()));
                prop_assert!(s.quality.iter().all(|q| (0..=2).contains(q)));
                let last = last_ts.entry(s.name.clone()).or_insert(i64::MIN);
                for &t in &s.ts_ns {
                    prop_assert!(t > *last, "{} went back in time", s.name);
                    *last = t;
                }
            }
            for v in out.vectors() {
                prop_assert!(v.values.iter().all(|x| x.is_finite()));
                prop_assert!(v.ts_ns > last_end);
                last_end = v.ts_ns;
            }
            out.clear();
        }
        pipeline.finish(&mut out);
        let stats = pipeline.stats();
        let malformed = batches
            .iter()
            .flatten()
            .filter(|(_, ts, values, quality)| {
                ts.len() != values.len() || (!quality.is_empty() && quality.len() != values.len())
            })
            .count() as u64;
        prop_assert_eq!(stats.malformed_series, malformed);
    }
}
