//! Strata's stream preprocessing: what happens to readings between a source
//! and the uplink or a model. Per signal, a transform chain (scale and
//! offset, unit conversion, range check, deadband, resample); over the
//! transformed signals, tumbling and sliding windows computing features
//! (statistics and FFT band energies); and feature vectors joining window
//! features that end at the same instant, which models are bound to.
//!
//! It is pure computation: no I/O, no clock, no async. The output depends
//! only on each signal's readings, not on how they were split into pushes,
//! so the hub can replay stored telemetry through the same pipeline for
//! backtests and get what the edge got.
//!
//! Rules for awkward input, each counted in [`Stats`] and never a panic:
//! - a reading not later than the signal's previous one (out of order or a
//!   duplicate timestamp) is dropped as late; so is one outside
//!   [`transform::MIN_TS_NS`]..=[`transform::MAX_TS_NS`];
//! - a NaN or infinite value (on input or after scaling) is dropped;
//! - a Bad reading (flagged by a source or the range check; unknown quality
//!   codes count as Bad) is sent upstream but skipped by windows, though it
//!   still moves the signal's time on;
//! - a series whose columns differ in length is dropped whole;
//! - a window whose features are not finite in `f32` produces nothing, so
//!   vectors only ever hold finite values.
//!
//! ```
//! use strata_pipeline::{Output, Pipeline, PipelineConfig};
//! use strata_proto::SignalSeries;
//!
//! let config: PipelineConfig = toml::from_str(r#"
//!     [[signals]]
//!     name = "vibration"
//!     resample_ms = 1
//!
//!     [[windows]]
//!     name = "vib"
//!     signals = ["vibration"]
//!     size_ms = 100
//!     hop_ms = 50
//!     features = ["rms", "kurtosis"]
//!     fft_bands_hz = [[10.0, 100.0]]
//!
//!     [[vectors]]
//!     name = "machine"
//!     features = ["vib.vibration.rms", "vib.vibration.band_10_100"]
//! "#).unwrap();
//! let mut pipeline = Pipeline::new(&config).unwrap();
//! assert_eq!(pipeline.vector_schema("machine").unwrap().width(), 2);
//!
//! let ts_ns: Vec<i64> = (0..1000).map(|i| i * 1_000_000).collect();
//! let values = ts_ns.iter().map(|&t| (t as f64 * 2e-7).sin()).collect();
//! let series = SignalSeries { name: "vibration".into(), ts_ns, values, ..Default::default() };
//! let mut out = Output::new();
//! pipeline.push_series(&series, &mut out);
//! assert_eq!(out.series()[0].values.len(), 999); // the last interval is still open
//! assert_eq!(out.vectors().len(), 19); // windows ending at 50 ms, 100 ms, ..., 950 ms
//! out.clear(); // reuse the buffers for the next push
//! ```

pub mod config;
pub mod error;
pub mod features;
pub mod join;
pub mod output;
pub mod pipeline;
pub mod transform;
pub mod units;
pub mod window;

pub use config::{
    Convert, Feature, PipelineConfig, RangeAction, RangeCheck, ResampleMode, SignalConfig,
    Unlisted, VectorConfig, WindowConfig,
};
pub use error::{Error, Result};
pub use join::VectorStats;
pub use output::{FeatureVector, Output, VectorSchema};
pub use pipeline::{Pipeline, Stats};
pub use transform::SignalStats;
pub use window::WindowStats;
