//! Bit-level writer and reader, most significant bit first, for the value
//! column of a chunk (see [`crate::chunk`]).

use crate::{Error, Result};

/// Appends bits to a byte vector, a 64-bit word at a time (version 2
/// chunks; only the tests write those now).
#[cfg(test)]
pub(crate) struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Pending bits, left-aligned: the top `used` bits are filled.
    acc: u64,
    used: u32,
}

#[cfg(test)]
impl<'a> BitWriter<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter {
            out,
            acc: 0,
            used: 0,
        }
    }

    /// Writes the low `k` bits of `v` (`k` at most 64).
    #[inline]
    pub(crate) fn write(&mut self, v: u64, k: u32) {
        debug_assert!(k <= 64 && (k == 64 || v >> k == 0));
        if k == 0 {
            return;
        }
        let free = 64 - self.used;
        if k < free {
            self.acc |= v << (free - k);
            self.used += k;
        } else {
            let rest = k - free;
            self.acc |= v >> rest;
            self.out.extend_from_slice(&self.acc.to_be_bytes());
            self.acc = if rest == 0 { 0 } else { v << (64 - rest) };
            self.used = rest;
        }
    }

    /// Writes the pending bits, the last byte padded with zero bits.
    pub(crate) fn finish(self) {
        let bytes = self.used.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_be_bytes()[..bytes]);
    }
}

/// Reads bits written by [`BitWriter`].
pub(crate) struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
    acc: u128,
    n: u32,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        BitReader {
            buf,
            pos: 0,
            acc: 0,
            n: 0,
        }
    }

    /// Reads `k` bits (at most 64).
    #[inline]
    pub(crate) fn read(&mut self, k: u32) -> Result<u64> {
        if k == 0 {
            return Ok(0);
        }
        while self.n < k {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| Error::Corrupt("chunk value bits end early".into()))?;
            self.pos += 1;
            self.acc = (self.acc << 8) | u128::from(b);
            self.n += 8;
        }
        self.n -= k;
        let v = (self.acc >> self.n) as u64 & (u64::MAX >> (64 - k));
        self.acc &= (1u128 << self.n) - 1;
        Ok(v)
    }

    /// Fails unless every byte was read and the padding bits are zero.
    pub(crate) fn finish(self) -> Result<()> {
        if self.pos != self.buf.len() || self.n >= 8 || self.acc != 0 {
            return Err(Error::Corrupt(
                "chunk value bits do not end where they should".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_across_byte_edges() {
        let fields: Vec<(u64, u32)> = (0..=64)
            .map(|k| (if k == 0 { 0 } else { u64::MAX >> (64 - k) } ^ 0x5, k))
            .map(|(v, k)| (if k == 64 { v } else { v & ((1u64 << k) - 1) }, k))
            .collect();
        let mut out = Vec::new();
        let mut w = BitWriter::new(&mut out);
        for &(v, k) in &fields {
            w.write(v, k);
        }
        w.finish();
        let mut r = BitReader::new(&out);
        for &(v, k) in &fields {
            assert_eq!(r.read(k).unwrap(), v, "{k} bits");
        }
        r.finish().unwrap();
    }

    #[test]
    fn fixture_is_msb_first() {
        let mut out = Vec::new();
        let mut w = BitWriter::new(&mut out);
        w.write(0b1, 1);
        w.write(0b01, 2);
        w.write(0xff, 8);
        w.finish();
        assert_eq!(out, [0b1011_1111, 0b1110_0000]);
    }
}
