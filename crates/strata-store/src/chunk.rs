//! The chunk format: the readings of one signal from one batch, packed.
//!
//! Layout, little-endian:
//! - 1 byte version (1), 1 byte flags (bit 0: quality column present)
//! - varint count `n`
//! - timestamps: the first as a zigzag varint, then zigzag varint deltas
//!   (regular sampling makes every delta the same small number)
//! - values: `n` × f64
//! - quality: `n` bytes, only when flagged (all-good chunks omit it)

use crate::{Error, Point, Result};

const VERSION: u8 = 1;
const HAS_QUALITY: u8 = 1;

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
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

/// Encodes one signal's readings. `quality` is empty or as long as `values`.
pub fn encode(ts_ns: &[i64], values: &[f64], quality: &[i32], out: &mut Vec<u8>) {
    debug_assert_eq!(ts_ns.len(), values.len());
    let has_quality = quality.iter().any(|&q| q != 0);
    out.reserve(2 + 10 + ts_ns.len() * 10 + if has_quality { ts_ns.len() } else { 0 });
    out.push(VERSION);
    out.push(if has_quality { HAS_QUALITY } else { 0 });
    put_varint(out, ts_ns.len() as u64);
    let mut prev = 0i64;
    for &t in ts_ns {
        put_varint(out, zigzag(t.wrapping_sub(prev)));
        prev = t;
    }
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    if has_quality {
        out.extend(quality.iter().map(|&q| q as u8));
    }
}

/// Decodes a chunk, calling `each` for every reading in order.
pub fn decode(buf: &[u8], mut each: impl FnMut(Point)) -> Result<()> {
    let corrupt = |what: &str| Error::Corrupt(format!("chunk {what}"));
    if buf.len() < 2 || buf[0] != VERSION {
        return Err(corrupt("has an unknown version"));
    }
    let has_quality = buf[1] & HAS_QUALITY != 0;
    let mut pos = 2;
    let n = get_varint(buf, &mut pos)? as usize;
    if n > buf.len() {
        return Err(corrupt("count exceeds its size"));
    }
    let mut ts = Vec::with_capacity(n);
    let mut prev = 0i64;
    for _ in 0..n {
        prev = prev.wrapping_add(unzigzag(get_varint(buf, &mut pos)?));
        ts.push(prev);
    }
    let values_end = pos + n * 8;
    let quality_end = values_end + if has_quality { n } else { 0 };
    if buf.len() != quality_end {
        return Err(corrupt("length does not match its count"));
    }
    for (i, &t) in ts.iter().enumerate() {
        let at = pos + i * 8;
        let value = f64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        let quality = if has_quality {
            i32::from(buf[values_end + i])
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
    use proptest::prelude::*;

    #[test]
    fn fixture() {
        let mut out = Vec::new();
        encode(&[1000, 1010], &[1.0, -2.0], &[], &mut out);
        #[rustfmt::skip]
        let expected = [
            1, 0, 2,                // version, flags, count
            0xd0, 0x0f, 20,         // zigzag(1000) = 2000, zigzag(10) = 20
            0, 0, 0, 0, 0, 0, 0xf0, 0x3f,
            0, 0, 0, 0, 0, 0, 0x00, 0xc0,
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn corrupt_chunks_are_errors() {
        let mut out = Vec::new();
        encode(&[1, 2, 3], &[1.0, 2.0, 3.0], &[0, 1, 2], &mut out);
        for cut in 0..out.len() {
            assert!(decode(&out[..cut], |_| {}).is_err(), "cut at {cut}");
        }
        assert!(decode(&[9, 0, 0], |_| {}).is_err());
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
    }
}
