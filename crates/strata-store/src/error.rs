//! The storage error type.

/// A storage result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database reported an error.
    #[error("{context}: {source}")]
    Sqlite {
        /// What the store was doing.
        context: String,
        /// The database's error.
        source: rusqlite::Error,
    },
    /// The data directory or database file could not be used.
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// PostgreSQL reported an error (or could not be reached).
    #[cfg(feature = "postgres")]
    #[error("{context}: {}", postgres_message(.source))]
    Postgres {
        /// What the store was doing.
        context: String,
        /// The database's error.
        source: postgres::Error,
    },
    /// Something asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something being created exists already.
    #[error("{0}")]
    Conflict(String),
    /// Stored data could not be read back (a bug or corruption).
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// A [`Error::Corrupt`] saying what could not be read back.
pub(crate) fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Corrupt(e.to_string())
}

impl Error {
    /// Whether trying the same operation again may succeed (a busy or
    /// locked database, an I/O hiccup) as opposed to a permanent refusal.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::OutOfMemory
                )
            ),
            Error::Io { .. } => true,
            // A lost connection, a serialization failure, a deadlock: the
            // transaction did not commit and may be tried again.
            #[cfg(feature = "postgres")]
            // Whatever the server did not refuse itself (a lost or broken
            // connection), and what it refused for the moment: 40 a
            // serialization failure or deadlock, 08 the connection, 57P0x
            // shutting down or restarting, 53 out of resources.
            Error::Postgres { source, .. } => match source.code() {
                None => true,
                Some(c) => {
                    let c = c.code();
                    ["40", "08", "57P0", "53"].iter().any(|p| c.starts_with(p))
                }
            },
            Error::NotFound(_) | Error::Conflict(_) | Error::Corrupt(_) => false,
        }
    }
}

/// Adds context to database errors.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, rusqlite::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Sqlite {
            context: what(),
            source,
        })
    }
}

#[cfg(feature = "postgres")]
impl<T> Context<T> for std::result::Result<T, postgres::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Postgres {
            context: what(),
            source,
        })
    }
}

/// The server's own message where there is one (the client's display of a
/// database error is only "db error").
#[cfg(feature = "postgres")]
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
