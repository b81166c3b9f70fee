//! The pipeline's configuration: serde types meant to be embedded in the edge
//! agent's TOML under `[pipeline]`. Parsing checks the shape (unknown keys
//! are refused); [`crate::Pipeline::new`] checks the values and names the
//! offending key, e.g. `pipeline.windows[1].hop_ms: 0 must be > 0`.
//!
//! ```toml
//! [[pipeline.signals]]
//! name = "temperature"
//! rename = "temp_c"
//! scale = 0.1
//! convert = { from = "degF", to = "Cel" }
//! range = { min = -40.0, max = 150.0, action = "flag" }
//! deadband = 0.05
//! resample_ms = 1000
//! resample = "mean"
//!
//! [[pipeline.windows]]
//! name = "vib"
//! signals = ["vibration"]
//! size_ms = 1000
//! hop_ms = 500
//! features = ["mean", "rms", "kurtosis"]
//! fft_bands_hz = [[10.0, 50.0], [50.0, 200.0]]
//!
//! [[pipeline.vectors]]
//! name = "machine"
//! features = ["vib.vibration.rms", "vib.vibration.band_10_50"]
//! ```

use serde::{Deserialize, Serialize};

/// The whole pipeline: per-signal transforms, windows over the transformed
/// signals, and feature vectors joined from the windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// What to do with signals that no `signals` entry names and no window
    /// uses: `pass` them on unchanged (the default) or `drop` them.
    #[serde(default)]
    pub unlisted: Unlisted,
    /// Transform chains, one per input signal.
    #[serde(default)]
    pub signals: Vec<SignalConfig>,
    /// Windows computing features over transformed signals.
    #[serde(default)]
    pub windows: Vec<WindowConfig>,
    /// Feature vectors: ordered window features, joined on the window end.
    #[serde(default)]
    pub vectors: Vec<VectorConfig>,
}

/// What happens to a signal that no `signals` entry names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unlisted {
    /// Pass it on unchanged (late, duplicate and non-finite readings are
    /// still removed, since the hub would refuse them).
    #[default]
    Pass,
    /// Drop it (counted in [`crate::Stats::unknown_series`]).
    Drop,
}

/// The transform chain of one input signal, applied in this order: scale and
/// offset, unit conversion, range check, deadband, resample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    /// The input signal's name, as the source reports it.
    pub name: String,
    /// The output name, if it should differ. Windows refer to this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<String>,
    /// Multiplier: `value * scale + offset` (e.g. raw counts to a quantity).
    #[serde(default = "one")]
    pub scale: f64,
    /// Added after `scale`.
    #[serde(default)]
    pub offset: f64,
    /// The output unit after `scale`/`offset`, when there is no `convert`
    /// (e.g. `"mm/s"` for a scaled raw count). Default: the input's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Unit conversion, applied after `scale`/`offset`; the output unit is
    /// `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convert: Option<Convert>,
    /// Plausible range of the converted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<RangeCheck>,
    /// Pass a reading only if it differs from the last passed reading by
    /// more than this (in the output unit), or its quality differs. The
    /// first reading always passes. `0.0` removes exact repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<f64>,
    /// With a deadband, a reading still passes when the last one passed
    /// this many milliseconds before it (by the readings' timestamps), so
    /// that a steady signal keeps being heard: a control rule would
    /// otherwise judge it stale, and the hub a device gone quiet. `0`
    /// lets the deadband hold a steady signal back for good.
    #[serde(default = "default_deadband_max_ms")]
    pub deadband_max_ms: u64,
    /// Resample to one reading per interval of this many milliseconds,
    /// aligned to the epoch clock and stamped with the interval's start.
    /// Intervals without readings produce nothing (no filling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resample_ms: Option<u64>,
    /// How an interval's readings become one: `last` (the default) or
    /// `mean`.
    #[serde(default)]
    pub resample: ResampleMode,
}

fn one() -> f64 {
    1.0
}

/// Shorter than an OPC UA source's heartbeat (10 s), so that each reading
/// it sends again passes, whatever the jitter between them.
fn default_deadband_max_ms() -> u64 {
    5_000
}

/// A unit conversion; see [`crate::units`] for the known units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Convert {
    /// The unit the value is in after `scale`/`offset`, e.g. `"degF"`.
    pub from: String,
    /// The unit to convert to, e.g. `"Cel"`; becomes the series' unit.
    pub to: String,
}

/// A range check on the converted value; bounds are inclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeCheck {
    /// Lowest plausible value, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest plausible value, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// What to do with a value outside the range: `flag` (the default)
    /// or `drop`.
    #[serde(default)]
    pub action: RangeAction,
}

/// What the range check does with an implausible value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeAction {
    /// Keep the reading with quality Bad (windows then skip it).
    #[default]
    Flag,
    /// Remove the reading.
    Drop,
}

/// How a resample interval's readings become one reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResampleMode {
    /// The interval's last reading, value and quality. Never invents a value
    /// that was not measured (right for states and setpoints).
    #[default]
    Last,
    /// The mean of the interval's Good and Uncertain readings, with quality
    /// Uncertain if any of them was; if all were Bad, the mean of the Bad
    /// ones with quality Bad. Right for noisy analog signals.
    Mean,
}

/// A window over one or more transformed signals. Each signal gets its own
/// window state and features, named `<window>.<signal>.<feature>`.
///
/// Windows are aligned to the epoch clock: they end at multiples of `hop_ms`
/// and the window ending at `e` holds readings with `e - size <= ts < e`. So
/// windows with the same hop close at the same instants and can be joined.
/// A window closes when its signal reports a reading at or after its end.
/// Readings with quality Bad are skipped; Good and Uncertain are used.
/// Windows without enough readings (`min_readings`) produce nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// The window's name: non-empty, without `.`.
    pub name: String,
    /// Output names of the signals to window.
    pub signals: Vec<String>,
    /// Window length in milliseconds.
    pub size_ms: u64,
    /// Distance between window ends in milliseconds: absent or equal to
    /// `size_ms` for tumbling windows, smaller for sliding windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop_ms: Option<u64>,
    /// Statistics to compute, in this order; see [`Feature`].
    #[serde(default)]
    pub features: Vec<Feature>,
    /// Band energies `[lo, hi)` in Hz, after the statistics, named
    /// `band_<lo>_<hi>` (e.g. `band_10_50`, `band_12.5_50`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fft_bands_hz: Vec<[f64; 2]>,
    /// Sample rate for the FFT. Default: each signal's `resample_ms`, which
    /// then must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate_hz: Option<f64>,
    /// Fewest usable readings for a window to produce features (default 1).
    #[serde(default = "one_usize")]
    pub min_readings: usize,
}

fn one_usize() -> usize {
    1
}

/// A statistic over a window's `n` usable readings `x_1..x_n`, with
/// `mean = Σx/n` and central moments `m_k = Σ(x - mean)^k / n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// `n`, the number of readings used.
    Count,
    /// `Σx / n`.
    Mean,
    /// Population standard deviation `sqrt(m_2)` (divides by `n`, as
    /// numpy's default `ddof=0`).
    Std,
    /// Smallest reading.
    Min,
    /// Largest reading.
    Max,
    /// Root mean square `sqrt(Σx² / n)` (the mean is not removed).
    Rms,
    /// `max - min`.
    PeakToPeak,
    /// Excess kurtosis, population form: `m_4 / m_2² - 3` (0 for a normal
    /// distribution; scipy's `kurtosis(bias=True)`). 0 when `m_2 = 0`.
    Kurtosis,
    /// Skewness, population form: `m_3 / m_2^1.5` (scipy's
    /// `skew(bias=True)`). 0 when `m_2 = 0`.
    Skewness,
}

impl Feature {
    /// The feature's name in vector references.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Count => "count",
            Feature::Mean => "mean",
            Feature::Std => "std",
            Feature::Min => "min",
            Feature::Max => "max",
            Feature::Rms => "rms",
            Feature::PeakToPeak => "peak_to_peak",
            Feature::Kurtosis => "kurtosis",
            Feature::Skewness => "skewness",
        }
    }
}

/// A feature vector: the input of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorConfig {
    /// The vector's name, which models bind to.
    pub name: String,
    /// Window features `<window>.<signal>.<feature>`, in the order of the
    /// model's input. All their windows must have the same hop.
    pub features: Vec<String>,
}
