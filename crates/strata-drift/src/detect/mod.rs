//! Streaming change detectors: fed one value at a time (a feature, a model
//! output, an error), they say when the stream's distribution has changed.
//! Both follow river 0.26 step for step, so the same stream and parameters
//! flag the same indices; like river's, a detector starts afresh on the
//! value after a detection.

mod adwin;
mod page_hinkley;

use serde::{Deserialize, Serialize};

pub use adwin::{Adwin, AdwinParams};
pub use page_hinkley::{PageHinkley, PageHinkleyMode, PageHinkleyParams};

/// A streaming change detector.
pub trait Detector {
    /// Feeds one value; true when this value completes a detected change.
    fn update(&mut self, x: f64) -> bool;

    /// Feeds every value of `xs` and returns the indices (into `xs`) that
    /// completed a detection.
    fn detections(&mut self, xs: &[f64]) -> Vec<usize> {
        xs.iter()
            .enumerate()
            .filter_map(|(i, &x)| self.update(x).then_some(i))
            .collect()
    }
}

/// Which detector, with its parameters (as a config names it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DetectorParams {
    /// ADWIN.
    Adwin(AdwinParams),
    /// Page-Hinkley.
    PageHinkley(PageHinkleyParams),
}

impl DetectorParams {
    /// A fresh detector.
    pub fn build(&self) -> Box<dyn Detector + Send> {
        match self {
            DetectorParams::Adwin(p) => Box::new(Adwin::new(*p)),
            DetectorParams::PageHinkley(p) => Box::new(PageHinkley::new(*p)),
        }
    }
}
