//! Drift: is the data a model sees now still the data it was trained on?
//!
//! Pure computation, shared by the edge agent and the hub:
//! - [`stats`]: two-sample drift statistics between a reference sample (the
//!   model's training data) and a current window, with Evidently's
//!   definitions, binning and default thresholds (Kolmogorov-Smirnov,
//!   normed Wasserstein, Jensen-Shannon, PSI, chi-squared);
//! - [`detect`]: streaming change detectors (ADWIN, Page-Hinkley) that flag
//!   the same indices as river with the same parameters;
//! - [`sketch`]: a mergeable histogram of a feature over its reference bins,
//!   so a site can send counts instead of readings and the hub still gets
//!   PSI, Jensen-Shannon and chi-squared exactly (KS and Wasserstein as
//!   bounds from the bins).
//!
//! Non-finite values are never part of a sample: callers drop them first
//! and count them ([`Sample::new`] does both).

pub mod detect;
mod error;
pub mod profile;
mod sample;
pub mod sketch;
mod special;
pub mod stats;

pub use error::DriftError;
pub use sample::Sample;
