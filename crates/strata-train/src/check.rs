//! Parameter checks shared by the trainers' `validate` methods, so every
//! range error reads the same way.

use crate::error::{Error, Result};

/// `value` in `low..=high`.
pub(crate) fn check_range<T: PartialOrd + std::fmt::Display>(
    param: &'static str,
    value: T,
    low: T,
    high: T,
) -> Result<()> {
    if value >= low && value <= high {
        Ok(())
    } else {
        Err(Error::param(
            param,
            format!("must be in {low}..={high}, got {value}"),
        ))
    }
}

/// `value` in (0, 1].
pub(crate) fn check_unit(param: &'static str, value: f64) -> Result<()> {
    if value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        Err(Error::param(
            param,
            format!("must be in (0, 1] (above 0, at most 1), got {value}"),
        ))
    }
}

/// `value` finite and >= 0.
pub(crate) fn check_non_negative(param: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::param(
            param,
            format!("must be a finite number >= 0, got {value}"),
        ))
    }
}
