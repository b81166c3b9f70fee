//! The embedded backend: one SQLite database in WAL mode in the data
//! directory.
//!
//! One writer connection (behind a mutex; the ingest writer thread is its
//! main user) and a small pool of reader connections, which WAL lets run
//! beside the writer without blocking it.

mod campaigns;
mod jobs;
mod models;
mod registry;
mod releases;
mod schema;
mod telemetry;
mod twins;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;

use crate::error::{Context, Error, Result};

/// How hard a commit works to be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// `synchronous = FULL`: each commit is fsynced; survives power loss.
    #[default]
    Fsync,
    /// `synchronous = NORMAL`: a commit survives the process being killed
    /// but may be lost if the machine loses power before the next checkpoint.
    Process,
}

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    durability: Durability,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
}

struct Writer {
    conn: Connection,
    /// device -> signal -> series id, so the hot path skips a lookup.
    series: HashMap<String, HashMap<String, i64>>,
    /// device -> stream name -> stream id.
    streams: HashMap<String, HashMap<String, i64>>,
}

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "strata.db";

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| Error::Io {
            context: format!("cannot create data directory {}", data_dir.display()),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let conn = open_connection(&path, durability)?;
        schema::migrate(&conn)
            .context(|| format!("cannot prepare the schema of {}", path.display()))?;
        Ok(SqliteStore {
            path,
            durability,
            writer: Mutex::new(Writer {
                conn,
                series: HashMap::new(),
                streams: HashMap::new(),
            }),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write<T>(&self, f: impl FnOnce(&mut Writer) -> Result<T>) -> Result<T> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut w)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.path, self.durability)?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }
}

fn open_connection(path: &Path, durability: Durability) -> Result<Connection> {
    let conn =
        Connection::open(path).context(|| format!("cannot open database {}", path.display()))?;
    let synchronous = match durability {
        Durability::Fsync => "FULL",
        Durability::Process => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 10000;
         PRAGMA cache_size = -65536;"
    ))
    .context(|| format!("cannot configure database {}", path.display()))?;
    Ok(conn)
}
