//! Turning Modbus registers into numbers. Devices disagree on the order of
//! words in a wide value and sometimes of bytes in a word, so both are
//! configurable per register.

use serde::Deserialize;

/// How one value is laid out in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// One register, unsigned.
    #[default]
    U16,
    /// One register, two's complement.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, two's complement.
    I32,
    /// Two registers, IEEE 754 single precision.
    F32,
    /// Four registers, unsigned.
    U64,
    /// Four registers, two's complement.
    I64,
    /// Four registers, IEEE 754 double precision.
    F64,
}

/// Which register holds the most significant word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// The first register holds the most significant word ("ABCD").
    #[default]
    Big,
    /// The first register holds the least significant word ("CDAB").
    Little,
}

impl DataType {
    /// Registers one value takes.
    pub fn registers(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    /// The value in `words` (exactly [`Self::registers`] of them).
    pub fn decode(self, words: &[u16], order: WordOrder, byte_swap: bool) -> f64 {
        let mut bits: u64 = 0;
        let mut push = |w: u16| {
            let w = if byte_swap { w.swap_bytes() } else { w };
            bits = (bits << 16) | u64::from(w);
        };
        match order {
            WordOrder::Big => words.iter().copied().for_each(&mut push),
            WordOrder::Little => words.iter().rev().copied().for_each(&mut push),
        }
        match self {
            DataType::U16 => bits as u16 as f64,
            DataType::I16 => bits as u16 as i16 as f64,
            DataType::U32 => bits as u32 as f64,
            DataType::I32 => bits as u32 as i32 as f64,
            DataType::F32 => f64::from(f32::from_bits(bits as u32)),
            DataType::U64 => bits as f64,
            DataType::I64 => bits as i64 as f64,
            DataType::F64 => f64::from_bits(bits),
        }
    }

    /// The registers that hold `value` (the inverse of [`Self::decode`]);
    /// integers are rounded to the nearest, and a value the type cannot
    /// hold is an error.
    pub fn encode(self, value: f64, order: WordOrder, byte_swap: bool) -> Result<Vec<u16>, String> {
        if !value.is_finite() {
            return Err(format!("{value} is not a number a register can hold"));
        }
        let r = value.round();
        let fits = |lo: f64, hi: f64| {
            if r < lo || r > hi {
                Err(format!("{value} does not fit in {self:?}"))
            } else {
                Ok(())
            }
        };
        let bits: u64 = match self {
            DataType::U16 => fits(0.0, 65535.0).map(|()| r as u64)?,
            DataType::I16 => fits(-32768.0, 32767.0).map(|()| r as i16 as u16 as u64)?,
            DataType::U32 => fits(0.0, 4_294_967_295.0).map(|()| r as u64)?,
            DataType::I32 => {
                fits(-2_147_483_648.0, 2_147_483_647.0).map(|()| r as i32 as u32 as u64)?
            }
            DataType::F32 => u64::from((value as f32).to_bits()),
            DataType::U64 => fits(0.0, 1.8e19).map(|()| r as u64)?,
            DataType::I64 => fits(-9.2e18, 9.2e18).map(|()| r as i64 as u64)?,
            DataType::F64 => value.to_bits(),
        };
        let n = usize::from(self.registers());
        let mut words: Vec<u16> = (0..n)
            .map(|i| (bits >> (16 * (n - 1 - i))) as u16)
            .map(|w| if byte_swap { w.swap_bytes() } else { w })
            .collect();
        if order == WordOrder::Little {
            words.reverse();
        }
        Ok(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_and_order() {
        assert_eq!(
            DataType::U16.decode(&[0xfffe], WordOrder::Big, false),
            65534.0
        );
        assert_eq!(DataType::I16.decode(&[0xfffe], WordOrder::Big, false), -2.0);
        assert_eq!(DataType::I16.decode(&[0xfeff], WordOrder::Big, true), -2.0);
        assert_eq!(
            DataType::U32.decode(&[0x0001, 0x0002], WordOrder::Big, false),
            65538.0
        );
        assert_eq!(
            DataType::U32.decode(&[0x0002, 0x0001], WordOrder::Little, false),
            65538.0
        );
        assert_eq!(
            DataType::I32.decode(&[0xffff, 0xfffd], WordOrder::Big, false),
            -3.0
        );
        // 12.5f32 = 0x41480000
        assert_eq!(
            DataType::F32.decode(&[0x4148, 0x0000], WordOrder::Big, false),
            12.5
        );
        assert_eq!(
            DataType::F32.decode(&[0x0000, 0x4148], WordOrder::Little, false),
            12.5
        );
        assert_eq!(
            DataType::F32.decode(&[0x4841, 0x0000], WordOrder::Big, true),
            12.5
        );
        let w = (-1234.5f64).to_bits();
        let words = [
            (w >> 48) as u16,
            (w >> 32) as u16,
            (w >> 16) as u16,
            w as u16,
        ];
        assert_eq!(DataType::F64.decode(&words, WordOrder::Big, false), -1234.5);
        let rev = [words[3], words[2], words[1], words[0]];
        assert_eq!(
            DataType::F64.decode(&rev, WordOrder::Little, false),
            -1234.5
        );
        assert_eq!(
            DataType::I64.decode(&[0xffff, 0xffff, 0xffff, 0xff00], WordOrder::Big, false),
            -256.0
        );
        assert_eq!(
            DataType::U64.decode(&[0, 0, 1, 0], WordOrder::Big, false),
            65536.0
        );
    }

    #[test]
    fn encode_is_the_inverse_of_decode() {
        let types = [
            DataType::U16,
            DataType::I16,
            DataType::U32,
            DataType::I32,
            DataType::F32,
            DataType::U64,
            DataType::I64,
            DataType::F64,
        ];
        for t in types {
            for order in [WordOrder::Big, WordOrder::Little] {
                for swap in [false, true] {
                    for v in [0.0f64, 1.0, 12.5, 300.0, 65535.0] {
                        let v = if matches!(t, DataType::F32 | DataType::F64) {
                            v
                        } else {
                            v.round()
                        };
                        if t == DataType::I16 && v > 32767.0 {
                            continue;
                        }
                        let words = t.encode(v, order, swap).unwrap();
                        assert_eq!(words.len(), usize::from(t.registers()));
                        let back = t.decode(&words, order, swap);
                        assert_eq!(back, v, "{t:?} {order:?} {swap}");
                    }
                }
            }
        }
        assert_eq!(
            DataType::I16.encode(-2.0, WordOrder::Big, false).unwrap(),
            [0xfffe]
        );
        assert_eq!(
            DataType::U16.encode(2.4, WordOrder::Big, false).unwrap(),
            [2]
        );
        assert!(DataType::U16.encode(-1.0, WordOrder::Big, false).is_err());
        assert!(
            DataType::I16
                .encode(40_000.0, WordOrder::Big, false)
                .is_err()
        );
        assert!(
            DataType::F32
                .encode(f64::NAN, WordOrder::Big, false)
                .is_err()
        );
    }
}
