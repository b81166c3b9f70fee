//! The per-signal transform chain: scale and offset, unit conversion, range
//! check, deadband and resample, applied to one reading at a time.
//!
//! Before any of them, a reading must be in time order: its timestamp must be
//! later than every earlier reading of the signal (equal counts as late) and
//! within [`MIN_TS_NS`]..=[`MAX_TS_NS`]; a reading whose value is not finite
//! after scaling and conversion is removed. Each removal is counted in the
//! signal's [`SignalStats`].

use crate::config::{RangeAction, ResampleMode, SignalConfig};
use crate::error::{Error, Result};
use crate::units;

/// Earliest timestamp accepted (about the year 1824); earlier readings are
/// dropped as `bad_timestamp`. The bounds keep window arithmetic in range.
pub const MIN_TS_NS: i64 = -(1 << 62);
/// Latest timestamp accepted (about the year 2116).
pub const MAX_TS_NS: i64 = 1 << 62;

/// Longest resample interval, window size or hop: 366 days.
pub const MAX_INTERVAL_MS: u64 = 366 * 24 * 3_600_000;

/// Quality code Good, as on the wire.
pub(crate) const GOOD: i32 = 0;
/// Quality code Uncertain.
pub(crate) const UNCERTAIN: i32 = 1;
/// Quality code Bad; unknown codes are read as Bad.
pub(crate) const BAD: i32 = 2;

/// Maps a wire quality code to Good, Uncertain or Bad.
pub(crate) fn normalise_quality(code: i32) -> i32 {
    match code {
        GOOD | UNCERTAIN => code,
        _ => BAD,
    }
}

/// What happened to one signal's readings since the pipeline was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignalStats {
    /// Readings received.
    pub readings_in: u64,
    /// Readings emitted (after resampling, one per interval).
    pub readings_out: u64,
    /// Dropped: timestamp not later than the previous reading's.
    pub late: u64,
    /// Dropped: timestamp outside `MIN_TS_NS..=MAX_TS_NS`.
    pub bad_timestamp: u64,
    /// Dropped: value NaN or infinite (on input or after conversion).
    pub non_finite: u64,
    /// Kept with quality Bad: outside the range (`action = "flag"`).
    pub out_of_range_flagged: u64,
    /// Dropped: outside the range (`action = "drop"`).
    pub out_of_range_dropped: u64,
    /// Dropped by the deadband.
    pub deadband_suppressed: u64,
    /// Emitted readings with quality Bad, which windows skip.
    pub bad_quality_skipped: u64,
}

impl SignalStats {
    /// Readings removed as unusable: late, bad timestamp, not finite, or out
    /// of range with `action = "drop"`. Deadband suppression and resampling
    /// are asked for, so they are not drops.
    pub fn dropped(&self) -> u64 {
        self.late + self.bad_timestamp + self.non_finite + self.out_of_range_dropped
    }
}

/// A reading leaving the chain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub ts: i64,
    pub value: f64,
    pub quality: i32,
}

/// The open resample interval.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Interval index: the interval is `[index * period, (index + 1) * period)`.
    index: i64,
    last: Reading,
    usable_sum: f64,
    usable_count: u64,
    usable_worst: i32,
    bad_sum: f64,
    bad_count: u64,
}

/// One signal's configured chain and its state.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    /// Output name.
    pub name: String,
    /// Output unit; `None` keeps the input series' unit.
    pub unit: Option<String>,
    /// The unit of the latest input series that produced output.
    pub input_unit: String,
    scale: f64,
    offset: f64,
    convert: Option<(f64, f64)>,
    range: Option<(f64, f64, RangeAction)>,
    /// The band, and the longest a steady signal is held back (ns; 0 for
    /// ever).
    deadband: Option<(f64, i64)>,
    resample: Option<(i64, ResampleMode)>,
    /// Readings must have `ts >= next_ts`.
    next_ts: i64,
    /// The value, quality and timestamp of the last reading the deadband
    /// passed.
    last_passed: Option<(f64, i32, i64)>,
    bucket: Option<Bucket>,
    pub stats: SignalStats,
}

impl Chain {
    /// The identity chain (signals passed through or windowed unconfigured).
    pub fn identity(name: &str) -> Chain {
        Chain {
            name: name.to_owned(),
            unit: None,
            input_unit: String::new(),
            scale: 1.0,
            offset: 0.0,
            convert: None,
            range: None,
            deadband: None,
            resample: None,
            next_ts: MIN_TS_NS,
            last_passed: None,
            bucket: None,
            stats: SignalStats::default(),
        }
    }

    /// Builds and checks the chain of `pipeline.signals[index]`.
    pub fn new(index: usize, c: &SignalConfig) -> Result<Chain> {
        let key = |field: &str| format!("pipeline.signals[{index}].{field}");
        let mut chain = Chain::identity(c.rename.as_deref().unwrap_or(&c.name));
        if !c.scale.is_finite() {
            return Err(Error::config(
                key("scale"),
                format!("{} must be finite", c.scale),
            ));
        }
        if !c.offset.is_finite() {
            return Err(Error::config(
                key("offset"),
                format!("{} must be finite", c.offset),
            ));
        }
        chain.scale = c.scale;
        chain.offset = c.offset;
        chain.unit = c.unit.clone();
        if let Some(convert) = &c.convert {
            if c.unit.is_some() {
                return Err(Error::config(
                    key("unit"),
                    "set either `unit` or `convert`; `convert.to` is the output unit",
                ));
            }
            let pair = units::conversion(&convert.from, &convert.to)
                .map_err(|message| Error::config(key("convert"), message))?;
            chain.convert = Some(pair);
            chain.unit = Some(convert.to.clone());
        }
        if let Some(r) = &c.range {
            let min = r.min.unwrap_or(f64::NEG_INFINITY);
            let max = r.max.unwrap_or(f64::INFINITY);
            if r.min.is_none() && r.max.is_none() {
                return Err(Error::config(key("range"), "needs `min`, `max` or both"));
            }
            if r.min.is_some_and(f64::is_nan) || r.max.is_some_and(f64::is_nan) || min > max {
                return Err(Error::config(
                    key("range"),
                    format!("min {min} and max {max} must be numbers with min <= max"),
                ));
            }
            chain.range = Some((min, max, r.action));
        }
        if let Some(d) = c.deadband {
            if !(d.is_finite() && d >= 0.0) {
                return Err(Error::config(
                    key("deadband"),
                    format!("{d} must be a finite number >= 0"),
                ));
            }
            let max_ns = i64::try_from(c.deadband_max_ms)
                .ok()
                .and_then(|ms| ms.checked_mul(1_000_000))
                .ok_or_else(|| {
                    Error::config(
                        key("deadband_max_ms"),
                        format!("{} ms is too long", c.deadband_max_ms),
                    )
                })?;
            chain.deadband = Some((d, max_ns));
        }
        if let Some(ms) = c.resample_ms {
            chain.resample = Some((interval_ns(&key("resample_ms"), ms)?, c.resample));
        }
        Ok(chain)
    }

    /// The unit of emitted readings.
    pub fn output_unit(&self) -> &str {
        self.unit.as_deref().unwrap_or(&self.input_unit)
    }

    /// The resample interval in nanoseconds, if the chain resamples.
    pub fn resample_ns(&self) -> Option<i64> {
        self.resample.map(|(ns, _)| ns)
    }

    /// Takes one input reading; returns the reading to emit, if any. With
    /// resampling that is the previous interval's reading, once this one
    /// starts a later interval.
    #[inline]
    pub fn step(&mut self, ts: i64, value: f64, quality: i32) -> Option<Reading> {
        self.stats.readings_in += 1;
        if !(MIN_TS_NS..=MAX_TS_NS).contains(&ts) {
            self.stats.bad_timestamp += 1;
            return None;
        }
        if ts < self.next_ts {
            self.stats.late += 1;
            return None;
        }
        self.next_ts = ts + 1;
        let mut quality = normalise_quality(quality);
        let mut value = value * self.scale + self.offset;
        if let Some((a, b)) = self.convert {
            value = value * a + b;
        }
        if !value.is_finite() {
            self.stats.non_finite += 1;
            return None;
        }
        if let Some((min, max, action)) = self.range
            && !(min..=max).contains(&value)
        {
            match action {
                RangeAction::Flag => {
                    self.stats.out_of_range_flagged += 1;
                    quality = BAD;
                }
                RangeAction::Drop => {
                    self.stats.out_of_range_dropped += 1;
                    return None;
                }
            }
        }
        if let Some((band, max_ns)) = self.deadband {
            if let Some((last, last_quality, last_ts)) = self.last_passed
                && last_quality == quality
                && (value - last).abs() <= band
                && (max_ns == 0 || ts - last_ts < max_ns)
            {
                self.stats.deadband_suppressed += 1;
                return None;
            }
            self.last_passed = Some((value, quality, ts));
        }
        let reading = Reading { ts, value, quality };
        match self.resample {
            None => Some(self.emitted(reading)),
            Some((period, _)) => {
                let index = ts.div_euclid(period);
                let closed = match self.bucket {
                    Some(b) if b.index == index => None,
                    _ => self.flush_bucket(),
                };
                self.add_to_bucket(index, reading);
                closed
            }
        }
    }

    /// Ends the stream: emits the open resample interval, if any. Later
    /// readings inside that interval count as late.
    pub fn finish(&mut self) -> Option<Reading> {
        let (period, _) = self.resample?;
        let index = self.bucket?.index;
        // The interval's end is at most MAX_TS_NS + period, far from overflow.
        self.next_ts = self.next_ts.max((index + 1) * period);
        self.flush_bucket()
    }

    fn add_to_bucket(&mut self, index: i64, r: Reading) {
        let b = self.bucket.get_or_insert(Bucket {
            index,
            last: r,
            usable_sum: 0.0,
            usable_count: 0,
            usable_worst: GOOD,
            bad_sum: 0.0,
            bad_count: 0,
        });
        b.last = r;
        if r.quality == BAD {
            b.bad_sum += r.value;
            b.bad_count += 1;
        } else {
            b.usable_sum += r.value;
            b.usable_count += 1;
            b.usable_worst = b.usable_worst.max(r.quality);
        }
    }

    fn flush_bucket(&mut self) -> Option<Reading> {
        let b = self.bucket.take()?;
        let (period, mode) = self.resample?;
        let ts = b.index * period;
        let reading = match mode {
            ResampleMode::Last => Reading { ts, ..b.last },
            ResampleMode::Mean if b.usable_count > 0 => Reading {
                ts,
                value: b.usable_sum / b.usable_count as f64,
                quality: b.usable_worst,
            },
            ResampleMode::Mean => Reading {
                ts,
                value: b.bad_sum / b.bad_count as f64,
                quality: BAD,
            },
        };
        if !reading.value.is_finite() {
            // A mean of finite values can still overflow.
            self.stats.non_finite += 1;
            return None;
        }
        Some(self.emitted(reading))
    }

    fn emitted(&mut self, r: Reading) -> Reading {
        self.stats.readings_out += 1;
        if r.quality == BAD {
            self.stats.bad_quality_skipped += 1;
        }
        r
    }
}

/// Checks a millisecond interval and returns it in nanoseconds.
pub(crate) fn interval_ns(key: &str, ms: u64) -> Result<i64> {
    if ms == 0 {
        return Err(Error::config(key, "0 must be > 0"));
    }
    if ms > MAX_INTERVAL_MS {
        return Err(Error::config(
            key,
            format!("{ms} must be <= {MAX_INTERVAL_MS} (366 days)"),
        ));
    }
    Ok(ms as i64 * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Convert, RangeCheck};

    fn config(name: &str) -> SignalConfig {
        SignalConfig {
            name: name.into(),
            rename: None,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            convert: None,
            range: None,
            deadband: None,
            deadband_max_ms: 10_000,
            resample_ms: None,
            resample: ResampleMode::Last,
        }
    }

    fn run(chain: &mut Chain, input: &[(i64, f64, i32)]) -> Vec<(i64, f64, i32)> {
        let mut out: Vec<(i64, f64, i32)> = input
            .iter()
            .filter_map(|&(t, v, q)| chain.step(t, v, q))
            .map(|r| (r.ts, r.value, r.quality))
            .collect();
        out.extend(chain.finish().map(|r| (r.ts, r.value, r.quality)));
        out
    }

    const MS: i64 = 1_000_000;

    #[test]
    fn scale_offset_then_convert() {
        let mut c = config("t");
        c.scale = 0.1;
        c.offset = 2.0;
        c.convert = Some(Convert {
            from: "degF".into(),
            to: "Cel".into(),
        });
        let mut chain = Chain::new(0, &c).unwrap();
        assert_eq!(chain.unit.as_deref(), Some("Cel"));
        // 2100 * 0.1 + 2 = 212 degF = 100 Cel.
        let out = run(&mut chain, &[(1, 2100.0, 0)]);
        assert_eq!(out.len(), 1);
        assert!((out[0].1 - 100.0).abs() < 1e-9, "{out:?}");
    }

    #[test]
    fn range_flags_or_drops() {
        let mut c = config("p");
        c.range = Some(RangeCheck {
            min: Some(0.0),
            max: Some(10.0),
            action: RangeAction::Flag,
        });
        let mut chain = Chain::new(0, &c).unwrap();
        let input = [(1, -1.0, 0), (2, 0.0, 0), (3, 10.0, 1), (4, 10.5, 0)];
        assert_eq!(
            run(&mut chain, &input),
            vec![
                (1, -1.0, BAD),
                (2, 0.0, GOOD),
                (3, 10.0, UNCERTAIN),
                (4, 10.5, BAD)
            ]
        );
        assert_eq!(chain.stats.out_of_range_flagged, 2);
        assert_eq!(chain.stats.bad_quality_skipped, 2);

        c.range.as_mut().unwrap().action = RangeAction::Drop;
        let mut chain = Chain::new(0, &c).unwrap();
        assert_eq!(
            run(&mut chain, &input),
            vec![(2, 0.0, GOOD), (3, 10.0, UNCERTAIN)]
        );
        assert_eq!(chain.stats.out_of_range_dropped, 2);
    }

    #[test]
    fn deadband_passes_changes_larger_than_the_band_or_of_quality() {
        let mut c = config("d");
        c.deadband = Some(0.5);
        let mut chain = Chain::new(0, &c).unwrap();
        let input = [
            (1, 10.0, 0), // first: passes
            (2, 10.4, 0), // 0.4 from 10.0: suppressed
            (3, 10.5, 0), // exactly 0.5: suppressed (must exceed)
            (4, 10.6, 0), // 0.6 from 10.0: passes
            (5, 10.6, 1), // same value, quality changed: passes
            (6, 10.0, 1), // 0.6 below 10.6: passes
        ];
        assert_eq!(
            run(&mut chain, &input),
            vec![(1, 10.0, 0), (4, 10.6, 0), (5, 10.6, 1), (6, 10.0, 1)]
        );
        assert_eq!(chain.stats.deadband_suppressed, 2);
    }

    #[test]
    fn deadband_lets_a_steady_signal_through_at_its_maximum_interval() {
        let mut c = config("d");
        c.deadband = Some(0.5);
        c.deadband_max_ms = 10_000;
        let mut chain = Chain::new(0, &c).unwrap();
        const S: i64 = 1_000 * MS;
        // One reading a second, all within the band.
        let input: Vec<(i64, f64, i32)> = (0..25)
            .map(|i| (i * S, 10.0 + 0.01 * i as f64, 0))
            .collect();
        let out = run(&mut chain, &input);
        let times: Vec<i64> = out.iter().map(|r| r.0 / S).collect();
        assert_eq!(times, vec![0, 10, 20], "{out:?}");
        assert_eq!(chain.stats.deadband_suppressed, 22);

        // 0 holds it back for good.
        c.deadband_max_ms = 0;
        let mut chain = Chain::new(0, &c).unwrap();
        assert_eq!(run(&mut chain, &input).len(), 1);

        c.deadband_max_ms = u64::MAX;
        let err = Chain::new(0, &c).unwrap_err().to_string();
        assert!(
            err.starts_with("pipeline.signals[0].deadband_max_ms"),
            "{err}"
        );
    }

    #[test]
    fn resample_last_and_mean() {
        let mut c = config("r");
        c.resample_ms = Some(100);
        let input = [
            (5 * MS, 1.0, 0),
            (50 * MS, 2.0, 1),
            (99 * MS, 4.0, 2),
            (100 * MS, 8.0, 0),
            (350 * MS, 16.0, 2),
        ];
        let mut chain = Chain::new(0, &c).unwrap();
        assert_eq!(
            run(&mut chain, &input),
            vec![(0, 4.0, BAD), (100 * MS, 8.0, GOOD), (300 * MS, 16.0, BAD)]
        );
        c.resample = ResampleMode::Mean;
        let mut chain = Chain::new(0, &c).unwrap();
        assert_eq!(
            run(&mut chain, &input),
            vec![
                (0, 1.5, UNCERTAIN),
                (100 * MS, 8.0, GOOD),
                (300 * MS, 16.0, BAD)
            ]
        );
    }

    #[test]
    fn resample_aligns_negative_timestamps_to_the_epoch() {
        let mut c = config("r");
        c.resample_ms = Some(100);
        let mut chain = Chain::new(0, &c).unwrap();
        assert_eq!(
            run(&mut chain, &[(-MS, 1.0, 0), (MS, 2.0, 0)]),
            vec![(-100 * MS, 1.0, GOOD), (0, 2.0, GOOD)]
        );
    }

    #[test]
    fn late_bad_timestamp_and_non_finite_are_dropped_and_counted() {
        let mut c = config("x");
        c.scale = 1e300;
        let mut chain = Chain::new(0, &c).unwrap();
        let input = [
            (10, 1.0, 0),
            (10, 2.0, 0),           // duplicate timestamp: late
            (5, 3.0, 0),            // earlier: late
            (i64::MAX, 4.0, 0),     // beyond MAX_TS_NS
            (11, f64::NAN, 0),      // NaN
            (12, f64::INFINITY, 0), // infinite
            (13, 1e10, 0),          // finite, but 1e310 after scaling
            (14, -2.0, 7),          // unknown quality code: Bad
        ];
        assert_eq!(
            run(&mut chain, &input),
            vec![(10, 1e300, GOOD), (14, -2e300, BAD)]
        );
        let s = &chain.stats;
        assert_eq!((s.late, s.bad_timestamp, s.non_finite), (2, 1, 3));
        assert_eq!((s.readings_in, s.readings_out), (8, 2));
    }

    #[test]
    fn finish_closes_the_interval_for_good() {
        let mut c = config("r");
        c.resample_ms = Some(100);
        let mut chain = Chain::new(0, &c).unwrap();
        assert_eq!(chain.step(10 * MS, 1.0, 0), None);
        assert_eq!(
            chain.finish(),
            Some(Reading {
                ts: 0,
                value: 1.0,
                quality: GOOD
            })
        );
        assert_eq!(chain.finish(), None);
        // Inside the flushed interval: late, so it is never emitted twice.
        assert_eq!(chain.step(20 * MS, 2.0, 0), None);
        assert_eq!(chain.stats.late, 1);
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut c = config("x");
        c.resample_ms = Some(0);
        let err = Chain::new(3, &c).unwrap_err().to_string();
        assert_eq!(err, "pipeline.signals[3].resample_ms: 0 must be > 0");
        let mut c = config("x");
        c.deadband = Some(-1.0);
        let err = Chain::new(0, &c).unwrap_err().to_string();
        assert!(err.starts_with("pipeline.signals[0].deadband: -1"), "{err}");
        let mut c = config("x");
        c.convert = Some(Convert {
            from: "degF".into(),
            to: "bar".into(),
        });
        let err = Chain::new(1, &c).unwrap_err().to_string();
        assert!(
            err.starts_with("pipeline.signals[1].convert: cannot convert"),
            "{err}"
        );
        let mut c = config("x");
        c.range = Some(RangeCheck {
            min: Some(2.0),
            max: Some(1.0),
            action: RangeAction::Flag,
        });
        let err = Chain::new(0, &c).unwrap_err().to_string();
        assert!(err.starts_with("pipeline.signals[0].range: "), "{err}");
    }
}
