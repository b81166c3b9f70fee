//! The batch format: every signal of one batch in one blob, packed on the
//! connection's task so the storage writer only copies bytes; a commit puts
//! the blobs of each stream into one [`crate::block`].
//!
//! Layout: 1 byte version (1), varint signal count, then per signal: varint
//! length + name, varint length + unit, varint length + a [`chunk`]. A query
//! for one signal skips the others by their lengths without decoding them.
//!
//! The signal count and the chunk lengths are known only once what follows
//! is written, so they go in two bytes kept for them (a varint with a
//! continuation byte, `0x80 | low, high`, even below 128; readers take any
//! varint), and only a chunk of 16 KiB or more moves the bytes after its
//! length to make room.

use strata_proto::view::Readings;
use strata_proto::{SignalSeries, TelemetryBatch};

use crate::chunk::{self, get_varint, insert_varint, put_varint};

/// Keeps two bytes at the end of `out` for a length written later with
/// [`fill_length`]; returns where.
fn keep_length(out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[0x80, 0]);
    out.len() - 2
}

/// Writes `len` into the two bytes kept at `at` (making room for a longer
/// varint when it needs more than 14 bits).
fn fill_length(out: &mut Vec<u8>, at: usize, len: u64) {
    if len < 1 << 14 {
        out[at] = 0x80 | (len & 0x7f) as u8;
        out[at + 1] = (len >> 7) as u8;
    } else {
        out.drain(at..at + 2);
        insert_varint(out, at, len);
    }
}
use crate::{Error, Point, Result};

const VERSION: u8 = 1;

/// Where one signal of a batch sits in its blob, and its newest reading,
/// kept so the writer can maintain latest values and the series list
/// without decoding (see [`EncodedBatch::signals`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalSummary {
    /// Byte range of the name in the blob.
    name: (u32, u32),
    /// Byte range of the unit in the blob.
    unit: (u32, u32),
    /// Its newest reading in the batch.
    last: Point,
}

/// A validated batch, packed for storage.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedBatch {
    /// Producer stream inside the device.
    pub stream: String,
    /// Sequence number in the stream.
    pub seq: u64,
    /// Earliest timestamp (0 when the batch has no readings).
    pub t_min: i64,
    /// Latest timestamp (0 when the batch has no readings).
    pub t_max: i64,
    /// Number of readings.
    pub readings: u64,
    /// Per-signal summaries.
    summaries: Vec<SignalSummary>,
    /// The packed readings.
    pub data: Vec<u8>,
}

impl EncodedBatch {
    /// Packs a batch. Signals without readings are left out.
    pub fn encode(batch: &TelemetryBatch) -> EncodedBatch {
        Self::pack(
            &batch.stream,
            batch.seq,
            batch
                .signals
                .iter()
                .map(|s| (s.name.as_str(), s.unit.as_str(), s)),
        )
    }

    /// Packs the signals `(name, unit, readings)` of a batch, however their
    /// readings are held (decoded, or borrowed from the payload). Signals
    /// without readings are left out.
    pub fn pack<'s, R: Readings + 's>(
        stream: &str,
        seq: u64,
        signals: impl Iterator<Item = (&'s str, &'s str, &'s R)>,
    ) -> EncodedBatch {
        let mut data = Vec::with_capacity(512);
        data.push(VERSION);
        let count_at = keep_length(&mut data);
        let (mut t_min, mut t_max, mut readings) = (i64::MAX, i64::MIN, 0u64);
        let mut summaries = Vec::with_capacity(signals.size_hint().0);
        for (name, unit, s) in signals {
            let n = s.len();
            if n == 0 {
                continue;
            }
            let name = put_str(&mut data, name);
            let unit = put_str(&mut data, unit);
            // The chunk's length goes in front once it is written.
            let length_at = keep_length(&mut data);
            let span = chunk::encode(s, &mut data);
            let chunk_len = (data.len() - length_at - 2) as u64;
            fill_length(&mut data, length_at, chunk_len);
            t_min = t_min.min(span.t_min);
            t_max = t_max.max(span.t_max);
            let last = span.newest;
            readings += n as u64;
            summaries.push(SignalSummary {
                name,
                unit,
                last: Point {
                    ts_ns: s.ts_ns(last),
                    value: s.value(last),
                    quality: s.quality(last),
                },
            });
        }
        let count = summaries.len() as u64;
        let grown = data.len();
        fill_length(&mut data, count_at, count);
        // A count past two bytes moved the ranges taken before it.
        let moved = (data.len() - grown) as u32;
        if moved > 0 {
            for s in &mut summaries {
                s.name = (s.name.0 + moved, s.name.1 + moved);
                s.unit = (s.unit.0 + moved, s.unit.1 + moved);
            }
        }
        if readings == 0 {
            (t_min, t_max) = (0, 0);
        }
        EncodedBatch {
            stream: stream.to_owned(),
            seq,
            t_min,
            t_max,
            readings,
            summaries,
            data,
        }
    }

    /// Each signal's name, unit and newest reading.
    pub fn signals(&self) -> impl Iterator<Item = (&str, &str, Point)> + '_ {
        let text = |(from, to): (u32, u32)| {
            std::str::from_utf8(&self.data[from as usize..to as usize]).expect("written from a str")
        };
        self.summaries
            .iter()
            .map(move |s| (text(s.name), text(s.unit), s.last))
    }
}

/// Writes a length-prefixed string; returns the byte range of its text.
fn put_str(out: &mut Vec<u8>, s: &str) -> (u32, u32) {
    put_varint(out, s.len() as u64);
    let from = out.len() as u32;
    out.extend_from_slice(s.as_bytes());
    (from, out.len() as u32)
}

fn get_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8]> {
    let len = get_varint(buf, pos)? as usize;
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| Error::Corrupt("batch blob field runs past its end".into()))?;
    let out = &buf[*pos..end];
    *pos = end;
    Ok(out)
}

/// Calls `each(name, unit, readings)` for every signal of a blob, decoding
/// readings only for signals where `wanted(name)` is true.
pub fn for_each_signal(
    blob: &[u8],
    mut wanted: impl FnMut(&str) -> bool,
    mut each: impl FnMut(&str, &str, &mut dyn FnMut(&mut dyn FnMut(Point)) -> Result<()>) -> Result<()>,
) -> Result<()> {
    if blob.first() != Some(&VERSION) {
        return Err(Error::Corrupt("batch blob has an unknown version".into()));
    }
    let mut pos = 1;
    let n = get_varint(blob, &mut pos)?;
    for _ in 0..n {
        let name = std::str::from_utf8(get_bytes(blob, &mut pos)?)
            .map_err(|_| Error::Corrupt("signal name is not UTF-8".into()))?;
        let unit = std::str::from_utf8(get_bytes(blob, &mut pos)?)
            .map_err(|_| Error::Corrupt("unit is not UTF-8".into()))?;
        let column = get_bytes(blob, &mut pos)?;
        if wanted(name) {
            each(name, unit, &mut |f| chunk::decode(column, f))?;
        }
    }
    if pos != blob.len() {
        return Err(Error::Corrupt("batch blob has trailing bytes".into()));
    }
    Ok(())
}

/// A whole stored batch back as the batch it was (signals with readings).
pub fn decode_batch(stream: &str, seq: u64, blob: &[u8]) -> Result<TelemetryBatch> {
    let mut signals = Vec::new();
    for_each_signal(
        blob,
        |_| true,
        |name, unit, decode| {
            let mut series = SignalSeries {
                name: name.to_owned(),
                unit: unit.to_owned(),
                ..SignalSeries::default()
            };
            decode(&mut |p: Point| {
                series.ts_ns.push(p.ts_ns);
                series.values.push(p.value);
                series.quality.push(p.quality);
            })?;
            signals.push(series);
            Ok(())
        },
    )?;
    Ok(TelemetryBatch {
        stream: stream.to_owned(),
        seq,
        signals,
    })
}

/// The readings of `signal` in a blob, in stored order.
pub fn signal_points(blob: &[u8], signal: &str, mut each: impl FnMut(Point)) -> Result<()> {
    for_each_signal(
        blob,
        |name| name == signal,
        |_, _, decode| decode(&mut each),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn series(name: &str, ts: Vec<i64>, values: Vec<f64>) -> SignalSeries {
        SignalSeries {
            name: name.into(),
            unit: "u".into(),
            ts_ns: ts,
            values,
            quality: vec![],
        }
    }

    #[test]
    fn summaries_and_bounds() {
        let b = TelemetryBatch {
            stream: "s".into(),
            seq: 9,
            signals: vec![
                series("a", vec![5, 3, 7], vec![1.0, 2.0, 3.0]),
                series("b", vec![], vec![]),
                series("c", vec![1], vec![4.0]),
            ],
        };
        let e = EncodedBatch::encode(&b);
        assert_eq!((e.t_min, e.t_max, e.readings), (1, 7, 4));
        let signals: Vec<_> = e.signals().collect();
        assert_eq!(signals.len(), 2, "empty signals are left out");
        assert_eq!((signals[0].0, signals[0].1, signals[1].0), ("a", "u", "c"));
        assert_eq!(
            signals[0].2,
            Point {
                ts_ns: 7,
                value: 3.0,
                quality: 0
            }
        );
        let mut got = Vec::new();
        signal_points(&e.data, "a", |p| got.push(p.value)).unwrap();
        assert_eq!(got, vec![1.0, 2.0, 3.0]);
        got.clear();
        signal_points(&e.data, "zz", |p| got.push(p.value)).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn lengths_that_outgrow_their_two_bytes_make_room() {
        // A chunk over 16 KiB (its length needs three bytes), then a small
        // one; and a batch of 20,000 signals (so does the count).
        let mut state = 0x9e37_79b9_u64;
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            f64::from_bits(state >> 2)
        };
        let big = series(
            "big",
            (0..3000).map(|i| i * 7 + (i % 5)).collect(),
            (0..3000).map(|_| noise()).collect(),
        );
        let many: Vec<SignalSeries> = (0..20_000)
            .map(|i| series(&format!("s{i}"), vec![i], vec![i as f64]))
            .collect();
        for signals in [
            vec![big, series("small", vec![1, 2], vec![0.5, 0.25])],
            many,
        ] {
            let batch = TelemetryBatch {
                stream: "s".into(),
                seq: 1,
                signals,
            };
            let e = EncodedBatch::encode(&batch);
            let names: Vec<&str> = e.signals().map(|(n, _, _)| n).collect();
            let expected: Vec<&str> = batch.signals.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, expected);
            let last = e.signals().last().unwrap().2;
            let want = batch.signals.last().unwrap();
            assert_eq!(last.value, *want.values.last().unwrap());
            let back = decode_batch("s", 1, &e.data).unwrap();
            assert_eq!(back.signals.len(), batch.signals.len());
            for (b, want) in back.signals.iter().zip(&batch.signals) {
                assert_eq!(b.ts_ns, want.ts_ns);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&b.values), bits(&want.values));
            }
        }
    }

    #[test]
    fn truncated_blobs_are_errors() {
        let b = TelemetryBatch {
            stream: "s".into(),
            seq: 1,
            signals: vec![series("a", vec![1, 2], vec![1.0, 2.0])],
        };
        let data = EncodedBatch::encode(&b).data;
        for cut in 0..data.len() {
            assert!(
                signal_points(&data[..cut], "a", |_| {}).is_err(),
                "cut at {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn every_signal_reads_back(cols in prop::collection::vec(prop::collection::vec((any::<i64>(), any::<f64>()), 1..50), 1..6)) {
            let batch = TelemetryBatch {
                stream: "s".into(),
                seq: 1,
                signals: cols.iter().enumerate().map(|(i, c)| series(&format!("s{i}"), c.iter().map(|r| r.0).collect(), c.iter().map(|r| r.1).collect())).collect(),
            };
            let e = EncodedBatch::encode(&batch);
            for (i, c) in cols.iter().enumerate() {
                let mut got = Vec::new();
                signal_points(&e.data, &format!("s{i}"), |p| got.push((p.ts_ns, p.value.to_bits()))).unwrap();
                let want: Vec<_> = c.iter().map(|r| (r.0, r.1.to_bits())).collect();
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn whole_batches_decode_back(cols in prop::collection::vec(prop::collection::vec((any::<i64>(), any::<f64>()), 1..50), 1..6)) {
            let batch = TelemetryBatch {
                stream: "s".into(),
                seq: 7,
                signals: cols.iter().enumerate().map(|(i, c)| series(&format!("s{i}"), c.iter().map(|r| r.0).collect(), c.iter().map(|r| r.1).collect())).collect(),
            };
            let e = EncodedBatch::encode(&batch);
            let back = decode_batch("s", 7, &e.data).unwrap();
            prop_assert_eq!(back.signals.len(), batch.signals.len());
            for (a, b) in back.signals.iter().zip(&batch.signals) {
                prop_assert_eq!(&a.name, &b.name);
                prop_assert_eq!(&a.ts_ns, &b.ts_ns);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&a.values), bits(&b.values));
            }
        }
    }
}
