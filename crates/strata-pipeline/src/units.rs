//! Units of measure the `convert` transform knows, and the affine conversion
//! between two of them.
//!
//! Unit codes follow UCUM where it is unambiguous (`Cel`, `K`, `kPa`, `mm/s`)
//! and also accept the bracketed UCUM forms and everyday spellings that the
//! devices we meet use (`[degF]` and `degF`, `[psi]` and `psi`). A pair of
//! units converts only within one dimension; anything else is a
//! configuration error, never a guess.

/// What a unit measures; conversion is only possible within one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dimension {
    Temperature,
    Pressure,
    Length,
    Speed,
    Acceleration,
    Power,
    Energy,
    Current,
    Voltage,
    Frequency,
    Time,
    VolumeFlow,
    Ratio,
}

impl Dimension {
    fn name(self) -> &'static str {
        match self {
            Dimension::Temperature => "temperature",
            Dimension::Pressure => "pressure",
            Dimension::Length => "length",
            Dimension::Speed => "speed",
            Dimension::Acceleration => "acceleration",
            Dimension::Power => "power",
            Dimension::Energy => "energy",
            Dimension::Current => "current",
            Dimension::Voltage => "voltage",
            Dimension::Frequency => "frequency",
            Dimension::Time => "time",
            Dimension::VolumeFlow => "volume flow",
            Dimension::Ratio => "ratio",
        }
    }
}

/// Pound-force per square inch in pascal: 0.45359237 kg * 9.80665 m/s² / (0.0254 m)².
const PSI_PA: f64 = 0.453_592_37 * 9.806_65 / (0.0254 * 0.0254);

/// `(codes, dimension, factor, offset)`: a value `v` in this unit is
/// `v * factor + offset` in the dimension's SI unit (K, Pa, m, m/s, ...).
const UNITS: &[(&[&str], Dimension, f64, f64)] = {
    use Dimension::*;
    &[
        (&["K"], Temperature, 1.0, 0.0),
        (&["Cel", "degC", "°C"], Temperature, 1.0, 273.15),
        (
            &["[degF]", "degF", "°F"],
            Temperature,
            5.0 / 9.0,
            459.67 * 5.0 / 9.0,
        ),
        (&["Pa"], Pressure, 1.0, 0.0),
        (&["hPa"], Pressure, 1e2, 0.0),
        (&["kPa"], Pressure, 1e3, 0.0),
        (&["MPa"], Pressure, 1e6, 0.0),
        (&["mbar"], Pressure, 1e2, 0.0),
        (&["bar"], Pressure, 1e5, 0.0),
        (&["[psi]", "psi"], Pressure, PSI_PA, 0.0),
        (&["m"], Length, 1.0, 0.0),
        (&["cm"], Length, 1e-2, 0.0),
        (&["mm"], Length, 1e-3, 0.0),
        (&["um"], Length, 1e-6, 0.0),
        (&["[in_i]", "in"], Length, 0.0254, 0.0),
        (&["[ft_i]", "ft"], Length, 0.3048, 0.0),
        (&["m/s"], Speed, 1.0, 0.0),
        (&["mm/s"], Speed, 1e-3, 0.0),
        (&["[in_i]/s", "in/s"], Speed, 0.0254, 0.0),
        (&["[ft_i]/s", "ft/s"], Speed, 0.3048, 0.0),
        (&["km/h"], Speed, 1.0 / 3.6, 0.0),
        (&["m/s2"], Acceleration, 1.0, 0.0),
        (&["mm/s2"], Acceleration, 1e-3, 0.0),
        (&["[g]"], Acceleration, 9.806_65, 0.0),
        (&["W"], Power, 1.0, 0.0),
        (&["kW"], Power, 1e3, 0.0),
        (&["MW"], Power, 1e6, 0.0),
        (&["J"], Energy, 1.0, 0.0),
        (&["kJ"], Energy, 1e3, 0.0),
        (&["MJ"], Energy, 1e6, 0.0),
        (&["W.h", "Wh"], Energy, 3.6e3, 0.0),
        (&["kW.h", "kWh"], Energy, 3.6e6, 0.0),
        (&["MW.h", "MWh"], Energy, 3.6e9, 0.0),
        (&["A"], Current, 1.0, 0.0),
        (&["mA"], Current, 1e-3, 0.0),
        (&["V"], Voltage, 1.0, 0.0),
        (&["mV"], Voltage, 1e-3, 0.0),
        (&["kV"], Voltage, 1e3, 0.0),
        (&["Hz"], Frequency, 1.0, 0.0),
        (&["kHz"], Frequency, 1e3, 0.0),
        (&["/min", "rpm"], Frequency, 1.0 / 60.0, 0.0),
        (&["s"], Time, 1.0, 0.0),
        (&["ms"], Time, 1e-3, 0.0),
        (&["min"], Time, 60.0, 0.0),
        (&["h"], Time, 3600.0, 0.0),
        (&["m3/s"], VolumeFlow, 1.0, 0.0),
        (&["m3/h"], VolumeFlow, 1.0 / 3600.0, 0.0),
        (&["L/s"], VolumeFlow, 1e-3, 0.0),
        (&["L/min"], VolumeFlow, 1e-3 / 60.0, 0.0),
        (&["1"], Ratio, 1.0, 0.0),
        (&["%"], Ratio, 1e-2, 0.0),
    ]
};

fn lookup(code: &str) -> Option<(Dimension, f64, f64)> {
    UNITS
        .iter()
        .find(|(codes, ..)| codes.contains(&code))
        .map(|&(_, dim, factor, offset)| (dim, factor, offset))
}

/// Every unit code `convert` accepts, for error messages and documentation.
pub fn known_units() -> impl Iterator<Item = &'static str> {
    UNITS.iter().flat_map(|(codes, ..)| codes.iter().copied())
}

/// The conversion from `from` to `to` as `(a, b)` with `to = from * a + b`,
/// or a message saying why there is none.
pub fn conversion(from: &str, to: &str) -> Result<(f64, f64), String> {
    let unknown = |code: &str| {
        format!(
            "unknown unit {code:?}; known units: {}",
            known_units().collect::<Vec<_>>().join(", ")
        )
    };
    let (dim_from, f1, o1) = lookup(from).ok_or_else(|| unknown(from))?;
    let (dim_to, f2, o2) = lookup(to).ok_or_else(|| unknown(to))?;
    if dim_from != dim_to {
        return Err(format!(
            "cannot convert {from:?} ({}) to {to:?} ({})",
            dim_from.name(),
            dim_to.name()
        ));
    }
    // si = v * f1 + o1 and out = (si - o2) / f2.
    Ok((f1 / f2, (o1 - o2) / f2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(v: f64, from: &str, to: &str) -> f64 {
        let (a, b) = conversion(from, to).unwrap();
        v * a + b
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn temperatures() {
        assert!(close(convert(212.0, "degF", "Cel"), 100.0));
        assert!(close(convert(32.0, "[degF]", "Cel"), 0.0));
        assert!(close(convert(-40.0, "Cel", "degF"), -40.0));
        assert!(close(convert(0.0, "Cel", "K"), 273.15));
        assert!(close(convert(0.0, "K", "degF"), -459.67));
        assert!(close(convert(20.0, "Cel", "Cel"), 20.0));
    }

    #[test]
    fn pressure_length_speed_power() {
        assert!(close(convert(1.0, "bar", "kPa"), 100.0));
        assert!(close(convert(1.0, "psi", "Pa"), 6894.757293168361));
        assert!(close(convert(14.503773773, "psi", "bar"), 1.0));
        assert!(close(convert(1.0, "in/s", "mm/s"), 25.4));
        assert!(close(convert(2500.0, "W", "kW"), 2.5));
        assert!(close(convert(1.0, "kWh", "J"), 3.6e6));
        assert!(close(convert(1.0, "[g]", "m/s2"), 9.80665));
        assert!(close(convert(3000.0, "rpm", "Hz"), 50.0));
        assert!(close(convert(50.0, "%", "1"), 0.5));
    }

    #[test]
    fn refuses_unknown_and_mixed_units() {
        let err = conversion("degF", "furlong").unwrap_err();
        assert!(err.contains("\"furlong\""), "{err}");
        let err = conversion("bar", "Cel").unwrap_err();
        assert!(
            err.contains("pressure") && err.contains("temperature"),
            "{err}"
        );
    }
}
