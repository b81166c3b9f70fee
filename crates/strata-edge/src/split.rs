//! Keeps every telemetry batch the agent sends small enough for the hub
//! to take. A source or pipeline step can make more readings at once than
//! one MQTT packet should carry (a 100 kHz vibration waveform sent once a
//! second is 1.6 MB); such readings go out as several batches, in time
//! order, each with a seq of its own.

use strata_proto::SignalSeries;

/// The most bytes an encoded batch may take: a quarter of the hub's
/// default MQTT packet limit (`[mqtt] max_packet_bytes`, 1 MiB).
pub const MAX_BATCH_BYTES: usize = 256 << 10;

/// The most readings a batch may carry: half the hub's default limit
/// (`max_readings`, 100,000).
pub const MAX_BATCH_READINGS: usize = 50_000;

/// The most signals a batch may carry: half the hub's default limit
/// (`max_signals_per_batch`, 1,000), which drops a batch over it whole.
pub const MAX_BATCH_SIGNALS: usize = 500;

/// Splits `signals` into batches of at most [`MAX_BATCH_SIGNALS`]
/// signals and at most `max_readings` readings for
/// which `fits` holds, halving every signal's readings (by position, so by
/// time) until each part does. The parts come in order: each signal's
/// readings in a part precede its readings in the next. A single reading
/// that still does not fit is left alone, for the outbox to refuse.
pub fn split(
    signals: Vec<SignalSeries>,
    max_readings: usize,
    fits: &impl Fn(&[SignalSeries]) -> bool,
) -> Vec<Vec<SignalSeries>> {
    if signals.len() > MAX_BATCH_SIGNALS {
        // Each signal goes whole into one group: its readings stay in
        // order, and the groups' parts follow one another.
        let mut rest = signals;
        let mut parts = Vec::new();
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(MAX_BATCH_SIGNALS));
            parts.extend(split(rest, max_readings, fits));
            rest = tail;
        }
        return parts;
    }
    let readings: usize = signals.iter().map(|s| s.values.len()).sum();
    if readings <= max_readings && fits(&signals) {
        return vec![signals];
    }
    let (mut first, mut second) = (Vec::new(), Vec::new());
    if signals.iter().all(|s| s.values.len() <= 1) {
        // Nothing left to halve within a signal: halve the signals.
        if signals.len() <= 1 {
            return vec![signals];
        }
        let mut signals = signals;
        second = signals.split_off(signals.len() / 2);
        first = signals;
    } else {
        for s in signals {
            let (a, b) = halve(s);
            first.extend(a);
            second.extend(b);
        }
    }
    let mut parts = split(first, max_readings, fits);
    parts.extend(split(second, max_readings, fits));
    parts
}

/// Puts parts made by [`split`] back together: one series per signal,
/// its readings in the parts' order. A part whose readings are all good
/// (no quality) joined to one with flags gets good flags filled in.
pub fn join(parts: Vec<Vec<SignalSeries>>) -> Vec<SignalSeries> {
    let mut joined: Vec<SignalSeries> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    for s in parts.into_iter().flatten() {
        let Some(&i) = index.get(&s.name) else {
            index.insert(s.name.clone(), joined.len());
            joined.push(s);
            continue;
        };
        let into = &mut joined[i];
        if into.quality.is_empty() != s.quality.is_empty() {
            into.quality.resize(into.values.len(), 0);
        }
        into.ts_ns.extend(s.ts_ns);
        into.values.extend(s.values);
        if !into.quality.is_empty() {
            let good = into.values.len() - into.quality.len() - s.quality.len();
            into.quality.extend(std::iter::repeat_n(0, good));
            into.quality.extend(s.quality);
        }
    }
    joined
}

/// A signal's older and newer half (a half without readings is `None`).
fn halve(mut s: SignalSeries) -> (Option<SignalSeries>, Option<SignalSeries>) {
    let n = s.values.len();
    if n <= 1 {
        return (Some(s).filter(|_| n == 1), None);
    }
    let mid = n.div_ceil(2);
    let newer = SignalSeries {
        name: s.name.clone(),
        unit: s.unit.clone(),
        ts_ns: s.ts_ns.split_off(mid.min(s.ts_ns.len())),
        values: s.values.split_off(mid),
        quality: if s.quality.len() > mid {
            s.quality.split_off(mid)
        } else {
            Vec::new()
        },
    };
    (Some(s), Some(newer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::payload::telemetry_len;

    fn signal(name: &str, n: usize, quality: bool) -> SignalSeries {
        SignalSeries {
            name: name.into(),
            unit: "g".into(),
            ts_ns: (0..n as i64).map(|i| 1_000_000 + i).collect(),
            values: (0..n).map(|i| i as f64).collect(),
            quality: if quality {
                (0..n as i32).map(|i| i % 3).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Every reading of every part, per signal, in order.
    fn readings(parts: &[Vec<SignalSeries>], name: &str) -> Vec<(i64, f64, i32)> {
        parts
            .iter()
            .flatten()
            .filter(|s| s.name == name)
            .flat_map(|s| {
                (0..s.values.len()).map(move |i| {
                    (
                        s.ts_ns[i],
                        s.values[i],
                        s.quality.get(i).copied().unwrap_or(0),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn a_batch_that_fits_stays_whole() {
        let signals = vec![signal("a", 100, false), signal("b", 3, true)];
        let parts = split(signals.clone(), MAX_BATCH_READINGS, &|_| true);
        assert_eq!(parts, vec![signals]);
    }

    #[test]
    fn joined_parts_are_the_readings_split() {
        let signals = vec![signal("a", 1_000, true), signal("b", 10, false)];
        let parts = split(signals.clone(), 100, &|_| true);
        assert!(parts.len() >= 10);
        assert_eq!(join(parts), signals);
        // Good flags are filled in where one part had none.
        let mut flagged = signal("a", 2, true);
        flagged.quality = vec![0, 2];
        let joined = join(vec![vec![signal("a", 2, false)], vec![flagged.clone()]]);
        assert_eq!(joined[0].quality, vec![0, 0, 0, 2]);
        let joined = join(vec![vec![flagged], vec![signal("a", 1, false)]]);
        assert_eq!(joined[0].quality, vec![0, 2, 0]);
    }

    /// The hub drops a batch of more than 1,000 signals whole (and
    /// acknowledges it, so the outbox let it go): a Modbus source of
    /// 1,500 registers once lost every batch that way.
    #[test]
    fn many_signals_go_out_in_parts_of_at_most_500() {
        let signals: Vec<SignalSeries> = (0..1_500)
            .map(|i| signal(&format!("r{i}"), 1, false))
            .collect();
        let parts = split(signals.clone(), MAX_BATCH_READINGS, &|_| true);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.len() <= MAX_BATCH_SIGNALS));
        assert_eq!(parts.concat(), signals);
    }

    #[test]
    fn a_large_batch_becomes_parts_that_fit_losing_nothing() {
        let signals = vec![
            signal("vibration", 100_000, false),
            signal("temperature", 7, true),
            signal("flag", 1, false),
        ];
        let fits = |s: &[SignalSeries]| telemetry_len("line", u64::MAX, s) <= MAX_BATCH_BYTES;
        let parts = split(signals.clone(), MAX_BATCH_READINGS, &fits);
        assert!(
            parts.len() >= 8,
            "1.6 MB in parts of 256 KiB: {}",
            parts.len()
        );
        for part in &parts {
            assert!(fits(part));
            assert!(part.iter().map(|s| s.values.len()).sum::<usize>() <= MAX_BATCH_READINGS);
            assert!(part.iter().all(|s| !s.values.is_empty()));
        }
        for name in ["vibration", "temperature", "flag"] {
            let whole = readings(std::slice::from_ref(&signals), name);
            assert_eq!(
                readings(&parts, name),
                whole,
                "{name}: every reading once, in order"
            );
        }
    }

    #[test]
    fn the_readings_limit_splits_too() {
        let parts = split(
            vec![signal("a", 10, false), signal("b", 10, false)],
            6,
            &|_| true,
        );
        assert!(
            parts
                .iter()
                .all(|p| p.iter().map(|s| s.values.len()).sum::<usize>() <= 6)
        );
        assert_eq!(
            readings(&parts, "a"),
            readings(&[vec![signal("a", 10, false)]], "a")
        );
    }

    #[test]
    fn signals_of_one_reading_each_are_split_by_signal() {
        let signals: Vec<_> = (0..10)
            .map(|i| signal(&format!("s{i}"), 1, false))
            .collect();
        let parts = split(signals, 3, &|_| true);
        assert!(parts.iter().all(|p| p.len() <= 3));
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 10);
        // A reading that can never fit is handed on alone, not dropped.
        let parts = split(vec![signal("x", 1, false)], 10, &|_| false);
        assert_eq!(parts.len(), 1);
    }
}
