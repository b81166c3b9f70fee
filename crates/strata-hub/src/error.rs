//! The hub's error type. Every error knows its HTTP status and whether a
//! retry can help; the API and the ingest acknowledgement both read that
//! here rather than deciding on their own.

use strata_store::Error as StoreError;

/// A hub result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the hub.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// No credentials, or wrong ones.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing being created exists, or the state forbids the change.
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The hub is starting or stopping, or a component is down.
    #[error("{0}")]
    Unavailable(String),
    /// Too many attempts: try again after `retry_after_s`.
    #[error("{message}")]
    TooManyRequests {
        /// What was refused and for how long.
        message: String,
        /// Seconds until a new attempt is considered.
        retry_after_s: u64,
        /// The first attempt refused in this wait (the rest are counted,
        /// not audited one by one).
        first: bool,
    },
    /// A byte range outside the resource.
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// An OTA release or artifact failed a check (signature, expiry,
    /// version, hash...); the code names which.
    #[error("refused: {0}")]
    Refused(#[from] strata_ota::Refusal),
}

impl Error {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::Conflict(_) => 409,
            Error::Store(StoreError::NotFound(_)) => 404,
            Error::Store(StoreError::Conflict(_)) => 409,
            Error::Store(e) if e.is_retryable() => 503,
            Error::Store(_) => 500,
            Error::Unavailable(_) => 503,
            Error::RangeNotSatisfiable(_) => 416,
            Error::Refused(_) => 422,
            Error::TooManyRequests { .. } => 429,
        }
    }

    /// Whether the same request may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(e) => e.is_retryable(),
            Error::Unavailable(_) | Error::TooManyRequests { .. } => true,
            _ => false,
        }
    }

    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) | Error::Store(StoreError::NotFound(_)) => "not_found",
            Error::Conflict(_) | Error::Store(StoreError::Conflict(_)) => "conflict",
            Error::Store(_) => "storage",
            Error::Unavailable(_) => "unavailable",
            Error::RangeNotSatisfiable(_) => "range_not_satisfiable",
            Error::TooManyRequests { .. } => "too_many_requests",
            Error::Refused(r) => r.code(),
        }
    }
}
