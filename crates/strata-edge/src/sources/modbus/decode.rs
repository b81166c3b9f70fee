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
}
