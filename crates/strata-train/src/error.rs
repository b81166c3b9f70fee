//! The crate's one error type. Training runs as a hub job on data and
//! parameters a person chose, so every message says what to change: which
//! row and feature, which parameter and its allowed range.

/// Everything that can go wrong while preparing data, training or scoring.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The data's shape does not add up (lengths, names, row counts).
    #[error("invalid data: {0}")]
    Shape(String),

    /// A value is NaN or infinite; training needs finite numbers.
    #[error(
        "{what} at row {row}, feature \"{feature}\" is {value}; training data must be finite \
         (fill or drop missing readings first)"
    )]
    NonFinite {
        /// `features` or `target`.
        what: &'static str,
        /// Row index, from 0, in the order given.
        row: usize,
        /// Feature name (for the target, `target`).
        feature: String,
        /// The offending value, as text (`NaN`, `inf`, `-inf`).
        value: String,
    },

    /// The target does not suit the task (missing, or not 0/1 for a
    /// classifier, or a single class).
    #[error("invalid target: {0}")]
    Target(String),

    /// A training parameter is out of range or inconsistent.
    #[error("parameter \"{param}\": {message}")]
    Param {
        /// The parameter's name as it appears in the JSON parameters.
        param: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },

    /// A hold-out split cannot be made as asked.
    #[error("cannot split: {0}")]
    Split(String),

    /// The ridge system could not be solved (it is not positive definite,
    /// which a positive `alpha` rules out unless the data is degenerate).
    #[error("ridge solve failed: {0}")]
    Solve(String),

    /// The progress callback said to stop (the job was cancelled or ran
    /// past its time).
    #[error("training stopped after step {done} of {total}")]
    Stopped {
        /// Steps finished.
        done: usize,
        /// Steps in the whole run.
        total: usize,
    },

    /// A metric was asked of inputs it is not defined for (mismatched
    /// lengths, empty, a single class for ROC AUC).
    #[error("metric {metric}: {message}")]
    Metric {
        /// The metric's name, e.g. `roc_auc`.
        metric: &'static str,
        /// Why it is undefined.
        message: String,
    },
}

impl Error {
    pub(crate) fn param(param: &'static str, message: impl Into<String>) -> Self {
        Error::Param {
            param,
            message: message.into(),
        }
    }

    pub(crate) fn metric(metric: &'static str, message: impl Into<String>) -> Self {
        Error::Metric {
            metric,
            message: message.into(),
        }
    }

    /// Whether trying again could help: never, training is deterministic,
    /// so the data or the parameters must change.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
