//! The pipeline's error type. Only building a pipeline can fail: once built,
//! pushing readings never fails (bad readings are dropped or flagged and
//! counted, see [`crate::Stats`]).

/// A pipeline result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a pipeline could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid. `key` is its path from the
    /// `pipeline` table, e.g. `pipeline.windows[1].hop_ms`.
    #[error("{key}: {message}")]
    Config {
        /// Where the value is, e.g. `pipeline.windows[1].hop_ms`.
        key: String,
        /// What is wrong with it and, where possible, what would be right.
        message: String,
    },
}

impl Error {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Whether trying again could help: never, a configuration must be fixed.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
