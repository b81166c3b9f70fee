//! The chunk format: the readings of one signal from one batch, packed and
//! compressed the way time-series engines do it: timestamps as deltas (a
//! regularly sampled signal's in two numbers), values as the XOR with the
//! one before (Gorilla, VLDB 2015), which is mostly zeros for a slowly
//! changing signal.
//!
//! Layout of version 3 (what [`encode`] writes), little-endian varints:
//! - 1 byte version (3), 1 byte flags (bit 0: quality column present; bit
//!   1: regular timestamps)
//! - varint count `n`
//! - timestamps, regular: the first as a zigzag varint, then (with two or
//!   more readings) the step as a zigzag varint; otherwise the first as a
//!   zigzag varint, the second as a zigzag delta, then zigzag
//!   delta-of-deltas
//! - values: the first value's 8 bytes; then per value the XOR of its bits
//!   with the one before, byte-aligned: a control byte (high nibble: its
//!   leading zero bytes, 8 for no change; low nibble: its meaningful bytes)
//!   and those bytes, least significant first
//! - quality: `n` bytes, only when flagged (all-good chunks omit it)
//!
//! Byte-aligned XORs cost a control byte per value more than Gorilla's
//! bit stream at most, and encode and decode several times faster: ingest
//! packs every batch on the connection's task.
//!
//! Versions 1 (deltas as varints, values as raw `f64`) and 2 (delta-of-delta
//! varints for every timestamp, a Gorilla bit stream of the values) are
//! still read: data stored by earlier releases stays readable.

use strata_proto::view::Readings;

use crate::bits::BitReader;
use crate::{Error, Point, Result};

const VERSION_PLAIN: u8 = 1;
const VERSION_GORILLA: u8 = 2;
const VERSION: u8 = 3;
const HAS_QUALITY: u8 = 1;
const REGULAR: u8 = 2;

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Inserts `v` as a varint at `at` (a length known only once what follows
/// was written); returns the bytes inserted.
pub(crate) fn insert_varint(out: &mut Vec<u8>, at: usize, mut v: u64) -> usize {
    let (mut buf, mut n) = ([0u8; 10], 0);
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    out.splice(at..at, buf[..=n].iter().copied());
    n + 1
}

pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| Error::Corrupt("chunk ends inside a varint".into()))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Error::Corrupt("chunk varint longer than 10 bytes".into()))
}

/// The time span of an encoded signal, found while encoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Earliest timestamp (`i64::MAX` without readings).
    pub t_min: i64,
    /// Latest timestamp (`i64::MIN` without readings).
    pub t_max: i64,
    /// Index of the newest reading (the last of those at `t_max`).
    pub newest: usize,
}

/// Encodes one signal's readings; returns their time span.
pub fn encode<R: Readings + ?Sized>(r: &R, out: &mut Vec<u8>) -> Span {
    let n = r.len();
    let has_quality = r.has_quality();
    let (first, step) = match n {
        0 => (0, 0),
        1 => (r.ts_ns(0), 0),
        _ => (r.ts_ns(0), r.ts_ns(1).wrapping_sub(r.ts_ns(0))),
    };
    // Each stamp one step after the one before: `first + step * i`.
    let regular = match r.packed_columns() {
        Some((ts, _)) => ts
            .chunks_exact(8)
            .zip(ts.chunks_exact(8).skip(1))
            .all(|(a, b)| le_i64(b).wrapping_sub(le_i64(a)) == step),
        None => (2..n).all(|i| r.ts_ns(i).wrapping_sub(r.ts_ns(i - 1)) == step),
    };
    let span = match regular_span(first, step, n) {
        Some(span) if regular => span,
        _ => span_of(r),
    };
    let flags = if has_quality { HAS_QUALITY } else { 0 } | if regular { REGULAR } else { 0 };
    out.reserve(24 + n * 10);
    out.extend_from_slice(&[VERSION, flags]);
    put_varint(out, n as u64);
    if regular {
        if n > 0 {
            put_varint(out, zigzag(first));
        }
        if n > 1 {
            put_varint(out, zigzag(step));
        }
    } else {
        put_deltas(r, out);
    }
    put_values(r, out);
    if has_quality {
        out.extend((0..n).map(|i| r.quality(i) as u8));
    }
    span
}

/// The span of `n` readings stamped `first + step * i`, found without
/// reading them; `None` when there are none or the stamps would wrap
/// around.
fn regular_span(first: i64, step: i64, n: usize) -> Option<Span> {
    let last = step
        .checked_mul(i64::try_from(n.checked_sub(1)?).ok()?)
        .and_then(|d| first.checked_add(d))?;
    Some(if step < 0 {
        Span {
            t_min: last,
            t_max: first,
            newest: 0,
        }
    } else {
        // With equal stamps the newest is the last of them.
        Span {
            t_min: first,
            t_max: last,
            newest: n - 1,
        }
    })
}

/// The span of any readings, one by one.
fn span_of<R: Readings + ?Sized>(r: &R) -> Span {
    let mut span = Span {
        t_min: i64::MAX,
        t_max: i64::MIN,
        newest: 0,
    };
    for i in 0..r.len() {
        let t = r.ts_ns(i);
        span.t_min = span.t_min.min(t);
        if t >= span.t_max {
            (span.t_max, span.newest) = (t, i);
        }
    }
    span
}

/// Timestamps as the first, the second as a delta, then delta-of-deltas.
fn put_deltas<R: Readings + ?Sized>(r: &R, out: &mut Vec<u8>) {
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    for i in 0..r.len() {
        let t = r.ts_ns(i);
        let delta = t.wrapping_sub(prev);
        let field = if i < 2 {
            delta
        } else {
            delta.wrapping_sub(prev_delta)
        };
        put_varint(out, zigzag(field));
        (prev, prev_delta) = (t, if i == 0 { 0 } else { delta });
    }
}

/// The values: the first as 8 bytes, then each XOR with the one before,
/// byte-aligned.
fn put_values<R: Readings + ?Sized>(r: &R, out: &mut Vec<u8>) {
    let n = r.len();
    if n == 0 {
        return;
    }
    let start = out.len();
    out.resize(start + 8 + 9 * n, 0);
    let buf = &mut out[start..];
    let first = r.value(0).to_bits();
    buf[..8].copy_from_slice(&first.to_le_bytes());
    let end = match r.packed_columns() {
        Some((_, values)) => put_xors(
            first,
            values[8..].chunks_exact(8).map(|v| le_i64(v) as u64),
            buf,
        ),
        None => put_xors(first, (1..n).map(|i| r.value(i).to_bits()), buf),
    };
    out.truncate(start + end);
}

/// An 8-byte little-endian integer.
#[inline]
fn le_i64(bytes: &[u8]) -> i64 {
    i64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

/// Writes each value's XOR with the one before after the first value's 8
/// bytes; returns where they end. Every XOR is written as 8 bytes into room
/// made ahead (9 bytes a value) and the end moved by its length, so the loop
/// has no branch on its size.
fn put_xors(first: u64, rest: impl Iterator<Item = u64>, buf: &mut [u8]) -> usize {
    let (mut prev, mut pos) = (first, 8);
    for bits in rest {
        let x = bits ^ prev;
        prev = bits;
        let lead = x.leading_zeros() / 8;
        let trail = if x == 0 { 0 } else { x.trailing_zeros() / 8 };
        let len = 8 - lead - trail;
        let room: &mut [u8; 9] = (&mut buf[pos..pos + 9])
            .try_into()
            .expect("9 bytes a value made ahead");
        room[0] = ((lead << 4) | len) as u8;
        room[1..].copy_from_slice(&(x >> (8 * trail)).to_le_bytes());
        pos += 1 + len as usize;
    }
    pos
}

/// Reads the values [`put_values`] wrote; returns where they end.
fn get_values(buf: &[u8], n: usize, out: &mut Vec<f64>) -> Result<usize> {
    let corrupt = |what: &str| Error::Corrupt(format!("chunk values {what}"));
    if n == 0 {
        return Ok(0);
    }
    let first = buf.get(..8).ok_or_else(|| corrupt("end early"))?;
    let mut prev = u64::from_le_bytes(first.try_into().expect("8 bytes"));
    out.push(f64::from_bits(prev));
    let mut pos = 8;
    for _ in 1..n {
        let c = *buf.get(pos).ok_or_else(|| corrupt("end early"))?;
        let (lead, len) = (u32::from(c >> 4), usize::from(c & 0x0f));
        if lead + len as u32 > 8 {
            return Err(corrupt("have a control byte out of range"));
        }
        let bytes = buf
            .get(pos + 1..pos + 1 + len)
            .ok_or_else(|| corrupt("end early"))?;
        let mut word = [0u8; 8];
        word[..len].copy_from_slice(bytes);
        let trail = 8 - lead - len as u32;
        if len > 0 {
            prev ^= u64::from_le_bytes(word) << (8 * trail);
        }
        out.push(f64::from_bits(prev));
        pos += 1 + len;
    }
    Ok(pos)
}

/// Decodes `n` values from a Gorilla XOR stream (version 2).
fn decode_gorilla(buf: &[u8], n: usize, out: &mut Vec<f64>) -> Result<()> {
    let mut r = BitReader::new(buf);
    if n > 0 {
        let mut prev = r.read(64)?;
        out.push(f64::from_bits(prev));
        let (mut win_lead, mut win_trail) = (64u32, 0u32);
        for _ in 1..n {
            if r.read(1)? == 1 {
                if r.read(1)? == 1 {
                    win_lead = r.read(5)? as u32;
                    let meaningful = r.read(6)? as u32 + 1;
                    if win_lead + meaningful > 64 {
                        return Err(Error::Corrupt("chunk value window is too wide".into()));
                    }
                    win_trail = 64 - win_lead - meaningful;
                } else if win_lead == 64 {
                    return Err(Error::Corrupt(
                        "chunk value reuses a window before any".into(),
                    ));
                }
                prev ^= r.read(64 - win_lead - win_trail)? << win_trail;
            }
            out.push(f64::from_bits(prev));
        }
    }
    r.finish()
}

/// Decodes a chunk, calling `each` for every reading in order.
pub fn decode(buf: &[u8], mut each: impl FnMut(Point)) -> Result<()> {
    let corrupt = |what: &str| Error::Corrupt(format!("chunk {what}"));
    let version = buf.first().copied().unwrap_or(0);
    if buf.len() < 2 || !(VERSION_PLAIN..=VERSION).contains(&version) {
        return Err(corrupt("has an unknown version"));
    }
    let has_quality = buf[1] & HAS_QUALITY != 0;
    let regular = version == VERSION && buf[1] & REGULAR != 0;
    let mut pos = 2;
    let n = get_varint(buf, &mut pos)? as usize;
    if n > buf.len() {
        return Err(corrupt("count exceeds its size"));
    }
    let mut ts = Vec::with_capacity(n);
    if regular {
        let first = if n > 0 {
            unzigzag(get_varint(buf, &mut pos)?)
        } else {
            0
        };
        let step = if n > 1 {
            unzigzag(get_varint(buf, &mut pos)?)
        } else {
            0
        };
        ts.extend((0..n).map(|i| first.wrapping_add(step.wrapping_mul(i as i64))));
    } else {
        let (mut prev, mut prev_delta) = (0i64, 0i64);
        for i in 0..n {
            let field = unzigzag(get_varint(buf, &mut pos)?);
            let delta = if version != VERSION_PLAIN && i >= 2 {
                prev_delta.wrapping_add(field)
            } else {
                field
            };
            prev = prev.wrapping_add(delta);
            prev_delta = if i == 0 { 0 } else { delta };
            ts.push(prev);
        }
    }
    let mut values = Vec::with_capacity(n);
    match version {
        VERSION => pos += get_values(&buf[pos..], n, &mut values)?,
        VERSION_GORILLA => {
            let len = get_varint(buf, &mut pos)? as usize;
            let end = pos
                .checked_add(len)
                .filter(|&e| e <= buf.len())
                .ok_or_else(|| corrupt("values run past its end"))?;
            decode_gorilla(&buf[pos..end], n, &mut values)?;
            pos = end;
        }
        _ => {
            let end = pos
                .checked_add(n * 8)
                .filter(|&e| e <= buf.len())
                .ok_or_else(|| corrupt("length does not match its count"))?;
            values.extend(
                buf[pos..end]
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))),
            );
            pos = end;
        }
    }
    let quality_end = pos + if has_quality { n } else { 0 };
    if buf.len() != quality_end {
        return Err(corrupt("length does not match its count"));
    }
    for (i, (&t, &value)) in ts.iter().zip(&values).enumerate() {
        let quality = if has_quality {
            i32::from(buf[pos + i])
        } else {
            0
        };
        each(Point {
            ts_ns: t,
            value,
            quality,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bits::BitWriter;
    use proptest::prelude::*;
    use strata_proto::SignalSeries;

    /// Version 2, as earlier releases wrote it: what `decode` must still read.
    fn encode_v2<R: Readings + ?Sized>(r: &R, out: &mut Vec<u8>) {
        let n = r.len();
        let has_quality = r.has_quality();
        out.reserve(8 + n * 4 + if has_quality { n } else { 0 });
        out.push(VERSION_GORILLA);
        out.push(if has_quality { HAS_QUALITY } else { 0 });
        put_varint(out, n as u64);
        // Version 2 wrote every timestamp as version 3 writes irregular ones.
        put_deltas(r, out);
        // The bit stream goes straight into `out`; its length is put in front
        // afterwards (moving a few hundred bytes costs less than a second buffer).
        let start = out.len();
        encode_gorilla(r, out);
        let bits_len = (out.len() - start) as u64;
        insert_varint(out, start, bits_len);
        if has_quality {
            out.extend((0..n).map(|i| r.quality(i) as u8));
        }
    }

    /// The Gorilla XOR stream of the values.
    fn encode_gorilla<R: Readings + ?Sized>(r: &R, out: &mut Vec<u8>) {
        let mut w = BitWriter::new(out);
        if r.is_empty() {
            return;
        }
        let mut prev = r.value(0).to_bits();
        w.write(prev, 64);
        // The window (leading, trailing zeros) of the last explicit XOR; a
        // leading count of 64 means no window yet.
        let (mut win_lead, mut win_trail) = (64u32, 0u32);
        for i in 1..r.len() {
            let bits = r.value(i).to_bits();
            let x = bits ^ prev;
            prev = bits;
            if x == 0 {
                w.write(0, 1);
                continue;
            }
            let lead = x.leading_zeros().min(31);
            let trail = x.trailing_zeros();
            if win_lead < 64 && lead >= win_lead && trail >= win_trail {
                let meaningful = 64 - win_lead - win_trail;
                if meaningful <= 62 {
                    // Control bits and value in one write.
                    w.write((0b10 << meaningful) | (x >> win_trail), meaningful + 2);
                } else {
                    w.write(0b10, 2);
                    w.write(x >> win_trail, meaningful);
                }
            } else {
                let meaningful = 64 - lead - trail;
                let header = (0b11 << 11) | (u64::from(lead) << 6) | u64::from(meaningful - 1);
                w.write(header, 13);
                w.write(x >> trail, meaningful);
                (win_lead, win_trail) = (lead, trail);
            }
        }
        w.finish();
    }

    fn series(ts: &[i64], values: &[f64], quality: &[i32]) -> SignalSeries {
        SignalSeries {
            ts_ns: ts.to_vec(),
            values: values.to_vec(),
            quality: quality.to_vec(),
            ..SignalSeries::default()
        }
    }

    fn encode(ts: &[i64], values: &[f64], quality: &[i32], out: &mut Vec<u8>) {
        super::encode(&series(ts, values, quality), out);
    }

    #[test]
    fn the_span_names_the_newest_reading() {
        let mut out = Vec::new();
        let s = SignalSeries {
            ts_ns: vec![5, 9, 2, 9, 7],
            values: vec![0.0; 5],
            ..SignalSeries::default()
        };
        let span = super::encode(&s, &mut out);
        assert_eq!((span.t_min, span.t_max, span.newest), (2, 9, 3));
    }

    #[test]
    fn fixture() {
        let mut out = Vec::new();
        encode(&[1000, 1010, 1020], &[1.0, 1.0, -2.0], &[], &mut out);
        #[rustfmt::skip]
        let expected = [
            3, 2, 3,                // version, flags (regular), count
            0xd0, 0x0f, 20,         // zigzag(1000) = 2000, zigzag(step 10) = 20
            0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // 1.0
            0x80,                   // 1.0 again: XOR 0, eight leading zero bytes
            // -2.0 ^ 1.0 = 0xfff0_0000_0000_0000: no leading zero byte, two
            // meaningful bytes (and six trailing zero ones)
            0x02, 0xf0, 0xff,
        ];
        assert_eq!(out, expected);
        let mut back = Vec::new();
        decode(&out, |p| back.push((p.ts_ns, p.value))).unwrap();
        assert_eq!(back, [(1000, 1.0), (1010, 1.0), (1020, -2.0)]);
    }

    #[test]
    fn irregular_timestamps_are_delta_of_deltas() {
        let mut out = Vec::new();
        encode(&[1000, 1010, 1030], &[0.5, 0.5, 0.5], &[1, 0, 2], &mut out);
        #[rustfmt::skip]
        let expected = [
            3, 1, 3,                // version, flags (quality), count
            0xd0, 0x0f, 20, 20,     // 1000, delta 10, delta-of-delta 10
            0, 0, 0, 0, 0, 0, 0xe0, 0x3f, // 0.5
            0x80, 0x80,             // unchanged twice
            1, 0, 2,                // quality
        ];
        assert_eq!(out, expected);
    }

    #[test]
    // The binary literals are grouped by bit field, not by nibble.
    #[allow(clippy::unusual_byte_groupings)]
    fn version_2_chunks_still_read() {
        #[rustfmt::skip]
        let gorilla = [
            2, 0, 3,                // version, flags, count
            0xd0, 0x0f, 20, 0,      // zigzag(1000) = 2000, zigzag(10) = 20, delta-of-delta 0
            12,                     // 90 bits of values in 12 bytes:
            0x3f, 0xf0, 0, 0, 0, 0, 0, 0, // 1.0 in 64 bits
            // `0` (1.0 again); -2.0 ^ 1.0 = 0xfff0_0000_0000_0000: `11`,
            // 0 leading zeros (5 bits), 12 - 1 meaningful (6 bits), 0xfff (12 bits)
            0b0_11_00000, 0b001011_11, 0b1111_1111, 0b11_000000,
        ];
        let mut out = Vec::new();
        encode_v2(
            &series(&[1000, 1010, 1020], &[1.0, 1.0, -2.0], &[]),
            &mut out,
        );
        assert_eq!(out, gorilla);
        let mut back = Vec::new();
        decode(&gorilla, |p| back.push((p.ts_ns, p.value))).unwrap();
        assert_eq!(back, [(1000, 1.0), (1010, 1.0), (1020, -2.0)]);
    }

    #[test]
    fn version_1_chunks_still_read() {
        #[rustfmt::skip]
        let plain = [
            1, 0, 2,
            0xd0, 0x0f, 20,
            0, 0, 0, 0, 0, 0, 0xf0, 0x3f,
            0, 0, 0, 0, 0, 0, 0x00, 0xc0,
        ];
        let mut back = Vec::new();
        decode(&plain, |p| back.push((p.ts_ns, p.value))).unwrap();
        assert_eq!(back, [(1000, 1.0), (1010, -2.0)]);
    }

    #[test]
    fn regular_slowly_changing_signals_compress() {
        let ts: Vec<i64> = (0..100)
            .map(|i| 1_764_064_800_000_000_000 + i * 1_000_000)
            .collect();
        let values: Vec<f64> = (0..100).map(|i| 20.0 + f64::from(i) * 0.25).collect();
        let mut out = Vec::new();
        encode(&ts, &values, &[], &mut out);
        assert!(out.len() < 100 * 4, "{} bytes for 100 readings", out.len());
    }

    #[test]
    fn corrupt_chunks_are_errors() {
        let mut out = Vec::new();
        encode(&[1, 2, 3], &[1.0, 2.0, 3.0], &[0, 1, 2], &mut out);
        for cut in 0..out.len() {
            assert!(decode(&out[..cut], |_| {}).is_err(), "cut at {cut}");
        }
        assert!(decode(&[9, 0, 0], |_| {}).is_err());
        // A control byte claiming more than eight bytes.
        let mut bad = Vec::new();
        encode(&[1, 2], &[1.0, 3.0], &[], &mut bad);
        let at = bad.len() - 3;
        bad[at] = 0x55;
        assert!(decode(&bad, |_| {}).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(rows in prop::collection::vec((any::<i64>(), any::<f64>(), 0i32..3), 0..300)) {
            let ts: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let values: Vec<f64> = rows.iter().map(|r| r.1).collect();
            let quality: Vec<i32> = rows.iter().map(|r| r.2).collect();
            let mut buf = Vec::new();
            encode(&ts, &values, &quality, &mut buf);
            let mut back = Vec::new();
            decode(&buf, |p| back.push(p)).unwrap();
            prop_assert_eq!(back.len(), rows.len());
            for (p, r) in back.iter().zip(&rows) {
                prop_assert_eq!(p.ts_ns, r.0);
                prop_assert_eq!(p.value.to_bits(), r.1.to_bits());
                prop_assert_eq!(p.quality, r.2);
            }
        }

        #[test]
        fn version_2_round_trip(rows in prop::collection::vec((any::<i64>(), any::<f64>(), 0i32..3), 0..300)) {
            let s = series(
                &rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                &rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                &rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            );
            let mut buf = Vec::new();
            encode_v2(&s, &mut buf);
            let mut back = Vec::new();
            decode(&buf, |p| back.push(p)).unwrap();
            prop_assert_eq!(back.len(), rows.len());
            for (p, r) in back.iter().zip(&rows) {
                prop_assert_eq!((p.ts_ns, p.value.to_bits(), p.quality), (r.0, r.1.to_bits(), r.2));
            }
        }

        #[test]
        fn damaged_chunks_are_errors_or_readings(mut buf in prop::collection::vec(any::<u8>(), 0..80), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut good = Vec::new();
            encode(&[5, 9, 20], &[1.5, -3.25, 1e300], &[], &mut good);
            buf.extend_from_slice(&good);
            let i = at.index(buf.len());
            buf[i] = byte;
            // Never a panic: an error or some readings.
            let _ = decode(&buf, |_| {});
        }

        #[test]
        fn payload_columns_encode_as_decoded_ones(
            ts in prop_oneof![
                prop::collection::vec(any::<i64>(), 0..40),
                (any::<i64>(), any::<i64>(), 0usize..40).prop_map(|(first, step, n)| {
                    (0..n).map(|i| first.wrapping_add(step.wrapping_mul(i as i64))).collect()
                }),
                (any::<i64>(), -1000i64..1000, 0usize..40).prop_map(|(first, step, n)| {
                    (0..n).map(|i| first.wrapping_add(step.wrapping_mul(i as i64))).collect()
                }),
            ],
            seed in any::<u64>(),
        ) {
            // The packed columns of a payload take the fast path; the same
            // readings decoded take the general one. Same bytes, same span,
            // and the span is what a plain scan finds. Timestamps are moved
            // into what the hub stores (from 2000 on), keeping their steps
            // but where they wrap.
            let min = strata_proto::validate::MIN_TS_NS;
            let ts: Vec<i64> = ts.iter().map(|t| min + t.rem_euclid(i64::MAX - min)).collect();
            let values: Vec<f64> = (0..ts.len())
                .map(|i| (seed.wrapping_mul(i as u64 + 1) % 1000) as f64 * 0.5)
                .collect();
            let decoded = series(&ts, &values, &[]);
            let payload = strata_proto::payload::encode_telemetry(
                &strata_proto::TelemetryBatch {
                    stream: "s".into(),
                    seq: 1,
                    signals: vec![SignalSeries { name: "x".into(), ..decoded.clone() }],
                },
                strata_proto::payload::Encoding::Protobuf,
            );
            let limits = strata_proto::validate::Limits::default();
            let view = strata_proto::view::TelemetryView::parse(&payload, &limits, i64::MAX)
                .expect("a clean batch");
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            let fast_span = match view.signals.first() {
                Some(packed) => super::encode(packed, &mut fast),
                // No readings: the view leaves the signal out.
                None => super::encode(&decoded, &mut fast),
            };
            let slow_span = super::encode(&decoded, &mut slow);
            prop_assert_eq!(&fast, &slow);
            prop_assert_eq!(fast_span, slow_span);
            let t_max = ts.iter().copied().max().unwrap_or(i64::MIN);
            prop_assert_eq!(slow_span.t_min, ts.iter().copied().min().unwrap_or(i64::MAX));
            prop_assert_eq!(slow_span.t_max, t_max);
            prop_assert_eq!(slow_span.newest, ts.iter().rposition(|&t| t == t_max).unwrap_or(0));
        }

        #[test]
        fn round_trip_of_sensor_like_series(
            start in any::<i64>(), step in 1i64..10_000_000, jitter in prop::collection::vec(-3i64..3, 1..200),
            base in -1e6f64..1e6, noise in prop::collection::vec(-1.0f64..1.0, 1..200),
        ) {
            let n = jitter.len().min(noise.len());
            let ts: Vec<i64> = (0..n).map(|i| start.wrapping_add(step * i as i64 + jitter[i])).collect();
            let values: Vec<f64> = (0..n).map(|i| base + (noise[i] * 100.0).round() / 100.0).collect();
            let mut buf = Vec::new();
            encode(&ts, &values, &[], &mut buf);
            let mut back = Vec::new();
            decode(&buf, |p| back.push(p)).unwrap();
            prop_assert_eq!(back.iter().map(|p| p.ts_ns).collect::<Vec<_>>(), ts);
            prop_assert_eq!(back.iter().map(|p| p.value.to_bits()).collect::<Vec<_>>(), values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
    }
}
