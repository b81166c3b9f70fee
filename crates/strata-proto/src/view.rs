//! Zero-copy reading of protobuf telemetry: ingest's fast path.
//!
//! [`TelemetryView::parse`] reads a batch in the form every Strata agent
//! sends (each column one packed field, no quality flags) straight from the
//! payload bytes, and checks it against the [`Limits`]. It accepts only what
//! [`crate::payload::decode_telemetry`] followed by
//! [`crate::validate::validate`] would pass unchanged; anything else (JSON,
//! unpacked or split columns, quality flags, unknown fields, a reading to
//! remove, a shape error) gives `None`, and the caller takes that slower path,
//! which decodes, repairs or refuses with the precise reason. So the two
//! paths store the same bytes; the fast one allocates nothing per reading.

use crate::v1::SignalSeries;
use crate::validate::{Limits, MIN_TS_NS, valid_name, valid_unit};

/// The readings of one signal, column by column, however they are held.
pub trait Readings {
    /// Number of readings.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Timestamp of reading `i`, nanoseconds since the Unix epoch.
    fn ts_ns(&self, i: usize) -> i64;
    /// Value of reading `i`.
    fn value(&self, i: usize) -> f64;
    /// Quality code of reading `i` (0, good, when there are no flags).
    fn quality(&self, i: usize) -> i32;
    /// Whether any reading has a quality other than good.
    fn has_quality(&self) -> bool;
    /// The timestamps and values as packed little-endian `i64`s and
    /// `f64`s, where they are held so (a payload's columns): a faster path
    /// for encoders than reading them one by one.
    fn packed_columns(&self) -> Option<(&[u8], &[u8])> {
        None
    }
}

impl Readings for SignalSeries {
    fn len(&self) -> usize {
        self.values.len()
    }
    fn ts_ns(&self, i: usize) -> i64 {
        self.ts_ns[i]
    }
    fn value(&self, i: usize) -> f64 {
        self.values[i]
    }
    fn quality(&self, i: usize) -> i32 {
        self.quality.get(i).copied().unwrap_or(0)
    }
    fn has_quality(&self) -> bool {
        self.quality.iter().any(|&q| q != 0)
    }
}

/// One signal of a [`TelemetryView`], borrowed from the payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalView<'a> {
    /// Signal name.
    pub name: &'a str,
    /// Unit (possibly empty).
    pub unit: &'a str,
    /// Packed little-endian `sfixed64` timestamps.
    ts: &'a [u8],
    /// Packed little-endian `double` values, as many as timestamps.
    values: &'a [u8],
}

impl SignalView<'_> {
    /// Whether every value is finite and every timestamp within
    /// [`MIN_TS_NS`, `horizon`]: one pass without branches over the packed
    /// columns (the range as one unsigned comparison).
    fn readings_ok(&self, horizon: i64) -> bool {
        let span = horizon.wrapping_sub(MIN_TS_NS) as u64;
        horizon >= MIN_TS_NS
            && self
                .values
                .chunks_exact(8)
                .zip(self.ts.chunks_exact(8))
                .fold(true, |ok, (v, t)| {
                    let v = f64::from_le_bytes(v.try_into().expect("8 bytes"));
                    let t = i64::from_le_bytes(t.try_into().expect("8 bytes"));
                    ok & v.is_finite() & (t.wrapping_sub(MIN_TS_NS) as u64 <= span)
                })
    }
}

impl Readings for SignalView<'_> {
    fn len(&self) -> usize {
        self.values.len() / 8
    }
    #[inline]
    fn ts_ns(&self, i: usize) -> i64 {
        i64::from_le_bytes(self.ts[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    }
    #[inline]
    fn value(&self, i: usize) -> f64 {
        f64::from_le_bytes(self.values[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    }
    fn quality(&self, _: usize) -> i32 {
        0
    }
    fn has_quality(&self) -> bool {
        false
    }
    fn packed_columns(&self) -> Option<(&[u8], &[u8])> {
        Some((self.ts, self.values))
    }
}

/// A telemetry batch borrowed from its protobuf payload.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryView<'a> {
    /// Producer stream inside the device.
    pub stream: &'a str,
    /// Sequence number in the stream.
    pub seq: u64,
    /// Signals with at least one reading, in payload order (as validation
    /// leaves them).
    pub signals: Vec<SignalView<'a>>,
}

/// Most signals a view compares pairwise for duplicates; larger batches
/// take the slow path.
const MAX_VIEW_SIGNALS: usize = 64;

impl<'a> TelemetryView<'a> {
    /// Reads and checks `payload`; `None` means "use the slow path".
    pub fn parse(payload: &'a [u8], limits: &Limits, now_ns: i64) -> Option<TelemetryView<'a>> {
        let mut view = Self::read(payload)?;
        if !view.is_clean(limits, now_ns) {
            return None;
        }
        // Validation checks empty signals too, then leaves them out.
        view.signals.retain(|s| !s.is_empty());
        Some(view)
    }

    fn read(payload: &'a [u8]) -> Option<TelemetryView<'a>> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        let (mut stream, mut seq) = (None, None);
        let mut signals = Vec::new();
        while !r.done() {
            match r.key()? {
                (1, LEN) if stream.is_none() => stream = Some(r.str()?),
                (2, VARINT) if seq.is_none() => seq = Some(r.varint()?),
                (3, LEN) => signals.push(read_signal(r.bytes()?)?),
                _ => return None,
            }
        }
        Some(TelemetryView {
            stream: stream.unwrap_or(""),
            seq: seq.unwrap_or(0),
            signals,
        })
    }

    /// Whether validation would pass the batch unchanged (empty signals
    /// aside, which both paths leave out).
    fn is_clean(&self, limits: &Limits, now_ns: i64) -> bool {
        let horizon = now_ns.saturating_add(limits.max_future_ns);
        let readings: usize = self.signals.iter().map(Readings::len).sum();
        valid_name(self.stream)
            && readings <= limits.max_readings
            && self.signals.len() <= limits.max_signals.min(MAX_VIEW_SIGNALS)
            && self.signals.iter().enumerate().all(|(i, s)| {
                valid_name(s.name)
                    && valid_unit(s.unit)
                    && self.signals[..i].iter().all(|o| o.name != s.name)
                    && s.readings_ok(horizon)
            })
    }
}

/// A signal, or `None` for a form the fast path leaves to the slow one.
/// A signal without readings reads as one with empty columns.
fn read_signal(buf: &[u8]) -> Option<SignalView<'_>> {
    let mut r = Reader { buf, pos: 0 };
    let (mut name, mut unit, mut ts, mut values) = (None, None, None, None);
    while !r.done() {
        match r.key()? {
            (1, LEN) if name.is_none() => name = Some(r.str()?),
            (2, LEN) if unit.is_none() => unit = Some(r.str()?),
            (3, LEN) if ts.is_none() => ts = Some(r.bytes()?),
            (4, LEN) if values.is_none() => values = Some(r.bytes()?),
            // Quality flags present (even all good): the slow path.
            _ => return None,
        }
    }
    let (ts, values) = (ts.unwrap_or(&[]), values.unwrap_or(&[]));
    if ts.len() != values.len() || values.len() % 8 != 0 {
        return None;
    }
    Some(SignalView {
        name: name.unwrap_or(""),
        unit: unit.unwrap_or(""),
        ts,
        values,
    })
}

const VARINT: u8 = 0;
const LEN: u8 = 2;

/// How many signals (field 3) a protobuf telemetry batch holds, counted
/// without decoding it; `None` when it is not well-formed protobuf. A
/// decoder allocates a series for each, even an empty one (two bytes of
/// payload), before any limit can be checked.
pub fn protobuf_signal_count(payload: &[u8]) -> Option<usize> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let mut signals = 0;
    while !r.done() {
        let (field, wire) = r.key()?;
        match wire {
            VARINT => {
                r.varint()?;
            }
            LEN => {
                r.bytes()?;
            }
            // Fixed 64 and 32 bits.
            1 | 5 => {
                let width = if wire == 1 { 8 } else { 4 };
                r.pos = r.pos.checked_add(width).filter(|&e| e <= r.buf.len())?;
            }
            _ => return None,
        }
        signals += usize::from(field == 3);
    }
    Some(signals)
}

/// A protobuf wire reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                // A tenth byte may only carry the top bit.
                return (shift < 63 || b <= 1).then_some(v);
            }
        }
        None
    }

    /// (field number, wire type).
    fn key(&mut self) -> Option<(u64, u8)> {
        let k = self.varint()?;
        Some((k >> 3, (k & 7) as u8))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.buf.len())?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Some(out)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Encoding, decode_telemetry, encode_telemetry};
    use crate::v1::TelemetryBatch;
    use crate::validate::tests::signal as series;
    use crate::validate::validate;
    use proptest::prelude::*;

    const NOW: i64 = 1_764_064_800_000_000_000;

    /// What the slow path makes of `payload`, if it passes unchanged.
    fn slow(payload: &[u8]) -> Option<TelemetryBatch> {
        let mut b = decode_telemetry(payload).ok()?;
        let removed = validate(&mut b, &Limits::default(), NOW).ok()?;
        (removed.total() == 0).then_some(b)
    }

    fn same(view: &TelemetryView<'_>, batch: &TelemetryBatch) -> bool {
        view.stream == batch.stream
            && view.seq == batch.seq
            && view.signals.len() == batch.signals.len()
            && view.signals.iter().zip(&batch.signals).all(|(v, s)| {
                v.name == s.name
                    && v.unit == s.unit
                    && v.len() == s.len()
                    && (0..v.len()).all(|i| {
                        v.ts_ns(i) == s.ts_ns[i] && v.value(i).to_bits() == s.values[i].to_bits()
                    })
            })
    }

    #[test]
    fn timestamps_are_clean_from_2000_to_the_horizon() {
        let limits = Limits::default();
        let horizon = NOW + limits.max_future_ns;
        let clean = |t: i64| {
            let batch = TelemetryBatch {
                stream: "main".into(),
                seq: 1,
                signals: vec![series("temp", vec![t], vec![1.0])],
            };
            let payload = encode_telemetry(&batch, Encoding::Protobuf);
            TelemetryView::parse(&payload, &limits, NOW).is_some()
        };
        assert!(clean(MIN_TS_NS) && clean(NOW) && clean(horizon));
        for t in [MIN_TS_NS - 1, 0, -1, i64::MIN, horizon + 1, i64::MAX] {
            assert!(!clean(t), "{t}");
        }
    }

    #[test]
    fn signals_are_counted_without_decoding() {
        let batch = TelemetryBatch {
            stream: "main".into(),
            seq: 7,
            signals: vec![
                series("a", vec![NOW], vec![1.0]),
                series("b", vec![], vec![]),
            ],
        };
        let payload = encode_telemetry(&batch, Encoding::Protobuf);
        assert_eq!(protobuf_signal_count(&payload), Some(2));
        // 1 MiB of empty signals: half a million.
        assert_eq!(
            protobuf_signal_count(&[0x1a, 0].repeat(1 << 19)),
            Some(1 << 19)
        );
        assert_eq!(protobuf_signal_count(&payload[..payload.len() - 1]), None);
        assert_eq!(protobuf_signal_count(b""), Some(0));
    }

    #[test]
    fn an_agent_batch_reads_without_copying() {
        let batch = TelemetryBatch {
            stream: "main".into(),
            seq: 7,
            signals: vec![
                series("temp", vec![NOW - 10, NOW], vec![21.5, 21.75]),
                series("empty", vec![], vec![]),
            ],
        };
        let payload = encode_telemetry(&batch, Encoding::Protobuf);
        let view = TelemetryView::parse(&payload, &Limits::default(), NOW).unwrap();
        assert_eq!((view.stream, view.seq, view.signals.len()), ("main", 7, 1));
        assert_eq!(view.signals[0].ts_ns(1), NOW);
        assert_eq!(view.signals[0].value(0), 21.5);
    }

    #[test]
    fn what_validation_would_change_or_refuse_takes_the_slow_path() {
        let limits = Limits::default();
        let cases = [
            series("temp", vec![NOW], vec![f64::NAN]),
            series("temp", vec![NOW + limits.max_future_ns + 1], vec![1.0]),
            series("bad name", vec![NOW], vec![1.0]),
            SignalSeries {
                quality: vec![0],
                ..series("temp", vec![NOW], vec![1.0])
            },
        ];
        for s in cases {
            let batch = TelemetryBatch {
                stream: "main".into(),
                seq: 1,
                signals: vec![s.clone()],
            };
            let payload = encode_telemetry(&batch, Encoding::Protobuf);
            assert!(
                TelemetryView::parse(&payload, &limits, NOW).is_none(),
                "{s:?}"
            );
        }
        let twice = TelemetryBatch {
            stream: "main".into(),
            seq: 1,
            signals: vec![
                series("a", vec![NOW], vec![1.0]),
                series("a", vec![NOW], vec![2.0]),
            ],
        };
        let payload = encode_telemetry(&twice, Encoding::Protobuf);
        assert!(TelemetryView::parse(&payload, &limits, NOW).is_none());
        let json = encode_telemetry(&twice, Encoding::Json);
        assert!(TelemetryView::parse(&json, &limits, NOW).is_none());
    }

    proptest! {
        /// Whatever the bytes, a view is only ever what the slow path
        /// would have made of them.
        #[test]
        fn a_view_agrees_with_decode_and_validate(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Some(view) = TelemetryView::parse(&bytes, &Limits::default(), NOW) {
                let batch = slow(&bytes);
                prop_assert!(batch.as_ref().is_some_and(|b| same(&view, b)), "{view:?} vs {batch:?}");
            }
        }

        /// The same for damaged agent batches: a byte changed anywhere.
        #[test]
        fn a_damaged_batch_is_read_as_the_slow_path_reads_it(
            values in prop::collection::vec(-1e3f64..1e3, 1..10),
            at in any::<prop::sample::Index>(), byte in any::<u8>(),
        ) {
            let batch = TelemetryBatch {
                stream: "main".into(),
                seq: 3,
                signals: vec![
                    series("a", (0..values.len() as i64).map(|i| NOW - i).collect(), values.clone()),
                    series("b", vec![NOW], vec![1.0]),
                ],
            };
            let mut payload = encode_telemetry(&batch, Encoding::Protobuf);
            let i = at.index(payload.len());
            payload[i] = byte;
            if let Some(view) = TelemetryView::parse(&payload, &Limits::default(), NOW) {
                let slow = slow(&payload);
                prop_assert!(slow.as_ref().is_some_and(|b| same(&view, b)), "{view:?} vs {slow:?}");
            }
        }

        #[test]
        fn encoded_batches_read_the_same_both_ways(
            stream in "[a-z]{1,8}", seq in any::<u64>(),
            cols in prop::collection::vec(prop::collection::vec((NOW - 1_000_000i64..NOW, -1e9f64..1e9), 0..20), 0..5),
        ) {
            let batch = TelemetryBatch {
                stream,
                seq,
                signals: cols.iter().enumerate().map(|(i, c)| series(&format!("s{i}"), c.iter().map(|r| r.0).collect(), c.iter().map(|r| r.1).collect())).collect(),
            };
            let payload = encode_telemetry(&batch, Encoding::Protobuf);
            let view = TelemetryView::parse(&payload, &Limits::default(), NOW).expect("an agent's batch takes the fast path");
            let slow = slow(&payload).expect("valid");
            prop_assert!(same(&view, &slow));
        }
    }
}
