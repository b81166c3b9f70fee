//! Why a drift computation could not run.

/// A drift statistic that cannot be computed on the given input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    /// One side has no finite values.
    #[error("the {0} sample is empty (no finite values)")]
    Empty(&'static str),
    /// A sketch was compared or merged with one over other bins.
    #[error("sketches over different bins cannot be {0}")]
    BinMismatch(&'static str),
    /// A test that needs numbers was asked of categories.
    #[error("{0} needs a numeric feature")]
    NotCategorical(&'static str),
    /// A sketch or profile that cannot describe a distribution.
    #[error("invalid sketch: {0}")]
    InvalidSketch(String),
}
