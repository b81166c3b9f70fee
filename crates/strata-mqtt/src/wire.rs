//! Primitive MQTT data types on the wire: big-endian integers, variable byte
//! integers, length-prefixed UTF-8 strings and binary data, for both reading
//! (zero-copy over [`Bytes`]) and writing (into [`BytesMut`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};

/// Largest value a variable byte integer can hold (268,435,455).
pub const MAX_VAR_INT: u32 = 268_435_455;

/// A cursor over one packet's body. `ctx` names the packet for error messages.
pub(crate) struct Reader {
    buf: Bytes,
    ctx: &'static str,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, ctx: &'static str) -> Self {
        Self { buf, ctx }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn need(&self, n: usize) -> Result<()> {
        if self.buf.remaining() < n {
            Err(Error::Truncated(self.ctx))
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn var_int(&mut self) -> Result<u32> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::MalformedVarInt(self.ctx))
    }

    pub(crate) fn binary(&mut self) -> Result<Bytes> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }

    pub(crate) fn string(&mut self) -> Result<String> {
        let raw = self.binary()?;
        bytes_to_string(raw, self.ctx)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Splits off a sub-reader of `n` bytes (for property blocks).
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader> {
        Ok(Reader::new(self.take(n)?, self.ctx))
    }

    pub(crate) fn rest(&mut self) -> Bytes {
        self.buf.split_to(self.buf.len())
    }

    pub(crate) fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes(self.ctx))
        }
    }

    pub(crate) fn ctx(&self) -> &'static str {
        self.ctx
    }
}

/// Validates MQTT UTF-8 rules (well-formed, no U+0000) and converts.
pub(crate) fn bytes_to_string(raw: Bytes, ctx: &'static str) -> Result<String> {
    let s = std::str::from_utf8(&raw).map_err(|_| Error::InvalidString(ctx))?;
    if s.contains('\0') {
        return Err(Error::InvalidString(ctx));
    }
    Ok(s.to_owned())
}

/// Number of bytes the variable byte integer encoding of `v` takes.
pub(crate) fn var_int_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_var_int(out: &mut BytesMut, mut v: usize, what: &'static str) -> Result<()> {
    if v > MAX_VAR_INT as usize {
        return Err(Error::TooLongToEncode(what));
    }
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if v == 0 {
            return Ok(());
        }
    }
}

pub(crate) fn put_binary(out: &mut BytesMut, data: &[u8], what: &'static str) -> Result<()> {
    let len = u16::try_from(data.len()).map_err(|_| Error::TooLongToEncode(what))?;
    out.put_u16(len);
    out.put_slice(data);
    Ok(())
}

pub(crate) fn put_string(out: &mut BytesMut, s: &str, what: &'static str) -> Result<()> {
    put_binary(out, s.as_bytes(), what)
}

/// Writes the fixed header: first byte and remaining length.
pub(crate) fn put_fixed_header(
    out: &mut BytesMut,
    first: u8,
    remaining: usize,
    what: &'static str,
) -> Result<()> {
    if remaining > MAX_VAR_INT as usize {
        return Err(Error::TooLongToEncode(what));
    }
    out.reserve(1 + var_int_len(remaining) + remaining);
    out.put_u8(first);
    put_var_int(out, remaining, what)
}
