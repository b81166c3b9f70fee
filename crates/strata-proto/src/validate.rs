//! Validation of decoded telemetry before it is stored.
//!
//! A batch whose shape is wrong (empty stream name, columns of different
//! lengths, too many readings) is refused whole: the sender has a bug and
//! storing part of it would hide that. Individual bad readings (NaN or
//! infinite values, timestamps too far in the future) are removed and
//! counted, so one broken sensor never stops the good data beside it.

use std::collections::HashSet;

use crate::v1::{Quality, TelemetryBatch};

/// Limits a batch must respect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most readings in one batch, over all signals.
    pub max_readings: usize,
    /// Most signals in one batch.
    pub max_signals: usize,
    /// How far ahead of the hub's clock a timestamp may be, in nanoseconds.
    pub max_future_ns: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_readings: 100_000,
            max_signals: 1_000,
            max_future_ns: 5 * 60 * 1_000_000_000,
        }
    }
}

/// The earliest timestamp stored: 2000-01-01T00:00:00Z, in ns. Older
/// ones are removed and counted: a gateway whose clock never got set
/// (1970), or a timestamp sent in seconds, would otherwise land decades
/// back (and, in PostgreSQL, make a day partition each).
pub const MIN_TS_NS: i64 = 946_684_800_000_000_000;

/// Longest stream or signal name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest unit, in bytes.
pub const MAX_UNIT_LEN: usize = 32;

/// Why a whole batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The stream name is empty, too long or has forbidden characters.
    #[error("stream name {0:?} is invalid: use 1..=128 of [A-Za-z0-9_.:-]")]
    Stream(String),
    /// A signal name is empty, too long or has forbidden characters.
    #[error("signal name {0:?} is invalid: use 1..=128 of [A-Za-z0-9_.:-]")]
    SignalName(String),
    /// A unit is too long or has control characters.
    #[error("unit {unit:?} of signal {signal:?} is invalid")]
    Unit {
        /// The signal.
        signal: String,
        /// The unit.
        unit: String,
    },
    /// The same signal appears twice in one batch.
    #[error("signal {0:?} appears more than once in the batch")]
    DuplicateSignal(String),
    /// Columns of one signal have different lengths.
    #[error(
        "signal {signal:?} has {ts} timestamps, {values} values and {quality} quality flags; they must match (quality may be empty)"
    )]
    Columns {
        /// The signal.
        signal: String,
        /// Number of timestamps.
        ts: usize,
        /// Number of values.
        values: usize,
        /// Number of quality flags.
        quality: usize,
    },
    /// An unknown quality code.
    #[error("signal {signal:?} has unknown quality code {code}")]
    QualityCode {
        /// The signal.
        signal: String,
        /// The code.
        code: i32,
    },
    /// Over [`Limits::max_readings`] or [`Limits::max_signals`].
    #[error(
        "batch has {readings} readings in {signals} signals; the limit is {max_readings} readings in {max_signals} signals"
    )]
    TooLarge {
        /// Readings in the batch.
        readings: usize,
        /// Signals in the batch.
        signals: usize,
        /// The reading limit.
        max_readings: usize,
        /// The signal limit.
        max_signals: usize,
    },
}

/// What validation removed from an accepted batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Readings whose value was NaN or infinite.
    pub non_finite: usize,
    /// Readings stamped further ahead than [`Limits::max_future_ns`].
    pub future: usize,
    /// Readings stamped before [`MIN_TS_NS`].
    pub past: usize,
    /// The first NaN or infinite reading, for a log line.
    pub first_non_finite: Option<String>,
    /// The first reading from the future, for a log line.
    pub first_future: Option<String>,
    /// The first reading from before 2000, for a log line.
    pub first_past: Option<String>,
}

impl Removed {
    /// Total readings removed.
    pub fn total(&self) -> usize {
        self.non_finite + self.future + self.past
    }
}

/// Whether a unit is one validation accepts (possibly empty).
pub fn valid_unit(s: &str) -> bool {
    s.len() <= MAX_UNIT_LEN && !s.chars().any(char::is_control)
}

/// Whether `s` is a stream or signal name the hub takes: 1 to 128 of
/// `A-Z a-z 0-9 _ . : -`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Checks `batch` against `limits` at hub time `now_ns`, removing bad readings
/// in place. Signals left with no readings are removed too.
pub fn validate(
    batch: &mut TelemetryBatch,
    limits: &Limits,
    now_ns: i64,
) -> Result<Removed, BatchError> {
    if !valid_name(&batch.stream) {
        return Err(BatchError::Stream(batch.stream.clone()));
    }
    let readings: usize = batch.signals.iter().map(|s| s.values.len()).sum();
    if readings > limits.max_readings || batch.signals.len() > limits.max_signals {
        return Err(BatchError::TooLarge {
            readings,
            signals: batch.signals.len(),
            max_readings: limits.max_readings,
            max_signals: limits.max_signals,
        });
    }
    let mut seen = HashSet::with_capacity(batch.signals.len());
    for s in &batch.signals {
        if !valid_name(&s.name) {
            return Err(BatchError::SignalName(s.name.clone()));
        }
        if !valid_unit(&s.unit) {
            return Err(BatchError::Unit {
                signal: s.name.clone(),
                unit: s.unit.clone(),
            });
        }
        if !seen.insert(s.name.as_str()) {
            return Err(BatchError::DuplicateSignal(s.name.clone()));
        }
        let (ts, values, quality) = (s.ts_ns.len(), s.values.len(), s.quality.len());
        if ts != values || (quality != 0 && quality != values) {
            return Err(BatchError::Columns {
                signal: s.name.clone(),
                ts,
                values,
                quality,
            });
        }
        if let Some(&code) = s.quality.iter().find(|&&q| Quality::try_from(q).is_err()) {
            return Err(BatchError::QualityCode {
                signal: s.name.clone(),
                code,
            });
        }
    }

    let horizon = now_ns.saturating_add(limits.max_future_ns);
    let mut removed = Removed::default();
    for s in &mut batch.signals {
        let clean = s.values.iter().all(|v| v.is_finite())
            && s.ts_ns.iter().all(|&t| (MIN_TS_NS..=horizon).contains(&t));
        if clean {
            continue;
        }
        let has_quality = !s.quality.is_empty();
        let mut keep = 0;
        for i in 0..s.values.len() {
            let (t, v) = (s.ts_ns[i], s.values[i]);
            if !v.is_finite() {
                removed.non_finite += 1;
                removed.first_non_finite.get_or_insert_with(|| {
                    format!("signal {:?} value {v} at {t} is not finite", s.name)
                });
            } else if t > horizon {
                removed.future += 1;
                removed.first_future.get_or_insert_with(|| {
                    let ahead = limits.max_future_ns / 1_000_000_000;
                    format!(
                        "signal {:?} timestamp {t} is more than {ahead} s ahead of the hub clock",
                        s.name
                    )
                });
            } else if t < MIN_TS_NS {
                removed.past += 1;
                removed.first_past.get_or_insert_with(|| {
                    format!(
                        "signal {:?} timestamp {t} is before 2000-01-01 (a clock never set, or not in ns?)",
                        s.name
                    )
                });
            } else {
                s.ts_ns[keep] = t;
                s.values[keep] = v;
                if has_quality {
                    s.quality[keep] = s.quality[i];
                }
                keep += 1;
            }
        }
        s.ts_ns.truncate(keep);
        s.values.truncate(keep);
        if has_quality {
            s.quality.truncate(keep);
        }
    }
    batch.signals.retain(|s| !s.values.is_empty());
    Ok(removed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::v1::SignalSeries;

    /// A signal in `Cel` with all-good readings (shared with the view's tests).
    pub(crate) fn signal(name: &str, ts: Vec<i64>, values: Vec<f64>) -> SignalSeries {
        SignalSeries {
            name: name.into(),
            unit: "Cel".into(),
            ts_ns: ts,
            values,
            quality: vec![],
        }
    }

    fn batch(signals: Vec<SignalSeries>) -> TelemetryBatch {
        TelemetryBatch {
            stream: "main".into(),
            seq: 1,
            signals,
        }
    }

    /// 2023-11-14, in ns.
    const T: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn removes_non_finite_future_and_past_readings_only() {
        let now = T + 1_000_000_000_000;
        let mut b = batch(vec![
            signal(
                "a",
                vec![T + 1, T + 2, T + 3, T + 4],
                vec![1.0, f64::NAN, f64::INFINITY, 4.0],
            ),
            signal(
                "b",
                vec![T + 1, now + 3_600_000_000_000, T / 1_000_000_000],
                vec![1.0, 2.0, 3.0],
            ),
            signal("c", vec![T + 1], vec![f64::NEG_INFINITY]),
            signal("d", vec![MIN_TS_NS - 1, MIN_TS_NS], vec![1.0, 2.0]),
        ]);
        let removed = validate(&mut b, &Limits::default(), now).unwrap();
        assert_eq!(
            (removed.non_finite, removed.future, removed.past),
            (3, 1, 2)
        );
        assert_eq!(removed.total(), 6);
        assert!(removed.first_non_finite.unwrap().contains("not finite"));
        assert!(
            removed
                .first_future
                .unwrap()
                .contains("ahead of the hub clock")
        );
        assert!(removed.first_past.unwrap().contains("before 2000"));
        assert_eq!(b.signals.len(), 3, "signal c had no good reading left");
        assert_eq!(b.signals[0].values, vec![1.0, 4.0]);
        assert_eq!(b.signals[0].ts_ns, vec![T + 1, T + 4]);
        assert_eq!(b.signals[1].values, vec![1.0]);
        assert_eq!(b.signals[2].ts_ns, vec![MIN_TS_NS]);
    }

    #[test]
    fn keeps_quality_aligned() {
        let mut s = signal("a", vec![T + 1, T + 2, T + 3], vec![1.0, f64::NAN, 3.0]);
        s.quality = vec![0, 1, 2];
        let mut b = batch(vec![s]);
        validate(&mut b, &Limits::default(), T + 10).unwrap();
        assert_eq!(b.signals[0].quality, vec![0, 2]);
    }

    #[test]
    fn refuses_bad_shapes() {
        let cases: Vec<(TelemetryBatch, &str)> = vec![
            (
                TelemetryBatch {
                    stream: "".into(),
                    ..batch(vec![])
                },
                "stream",
            ),
            (batch(vec![signal("a", vec![1], vec![])]), "timestamps"),
            (batch(vec![signal("a b", vec![], vec![])]), "signal name"),
            (
                batch(vec![
                    signal("a", vec![], vec![]),
                    signal("a", vec![], vec![]),
                ]),
                "more than once",
            ),
            (
                batch(vec![SignalSeries {
                    quality: vec![7],
                    ..signal("a", vec![1], vec![1.0])
                }]),
                "quality code",
            ),
            (
                batch(vec![signal("a", vec![0; 10], vec![0.0; 10])]),
                "limit",
            ),
        ];
        let limits = Limits {
            max_readings: 5,
            ..Limits::default()
        };
        for (mut b, needle) in cases {
            let err = validate(&mut b, &limits, 0).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }
}
