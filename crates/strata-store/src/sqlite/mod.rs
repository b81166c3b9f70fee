//! The embedded backend: one SQLite database in WAL mode in the data
//! directory.
//!
//! One writer connection (behind a mutex; the ingest writer thread is its
//! main user) and a small pool of reader connections, which WAL lets run
//! beside the writer without blocking it.
//!
//! Checkpoints (copying the WAL back into the database file) run on a
//! thread of their own, not inside whichever commit crosses the WAL's size
//! threshold: a commit, and so the acknowledgement of every batch in it,
//! never waits for one.
//!
//! With [`Durability::Fsync`] the store syncs the WAL file itself after a
//! commit instead of letting SQLite do it inside the commit
//! (`synchronous = NORMAL` plus `fdatasync` of the WAL: the same guarantee,
//! since SQLite still syncs around every checkpoint). That lets a writer
//! start its next transaction while the last one syncs
//! ([`TelemetryStore::write_batches_unsynced`]) and one sync cover every
//! commit made meanwhile (the hub's ingest writer syncs each commit
//! itself: on two cores a sync thread cost more than it saved).
//!
//! [`TelemetryStore::write_batches_unsynced`]: crate::TelemetryStore::write_batches_unsynced

mod access;
mod alerts;
mod audit;
mod campaigns;
mod certs;
mod control;
mod drift;
mod jobs;
mod labels;
mod models;
mod registry;
mod releases;
mod retention;
mod retrain;
mod schema;
mod telemetry;
mod twins;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _};

use crate::error::{Context, Error, Result};

/// How hard a commit works to be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Each commit is on stable storage (its WAL frames fsynced) before it
    /// counts as done; survives power loss.
    #[default]
    Fsync,
    /// A commit survives the process being killed but may be lost if the
    /// machine loses power before the next checkpoint.
    Process,
}

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    /// The bytes of telemetry blocks (their rows say where).
    segments: crate::segment::Segments,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    checkpointer: Option<Checkpointer>,
    /// Present with [`Durability::Fsync`].
    wal_sync: Option<WalSync>,
}

struct Writer {
    conn: Connection,
    /// device -> signal -> series id, so the hot path skips a lookup.
    series: FastMap<String, FastMap<String, i64>>,
    /// device -> stream name -> the stream's id and its series so far.
    streams: FastMap<String, FastMap<String, telemetry::StreamIds>>,
    /// stream id -> its exactly-once ledger, for the streams written so far.
    ledgers: FastMap<i64, crate::seqset::SeqSet>,
}

/// The writer's maps: a fast hash (keys are ids and names of
/// authenticated devices, bounded in length, not attacker-chosen floods).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "strata.db";

/// Directory of the telemetry segment files inside the data directory.
pub const SEGMENTS_DIR: &str = "telemetry";

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| Error::Io {
            context: format!("cannot create data directory {}", data_dir.display()),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let conn = open_connection(&path)?;
        schema::migrate(&conn)
            .context(|| format!("cannot prepare the schema of {}", path.display()))?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .context(|| format!("cannot configure database {}", path.display()))?;
        let checkpointer = Checkpointer::start(open_connection(&path)?)?;
        let wal_sync = (durability == Durability::Fsync).then(|| WalSync::new(&path));
        let segments = crate::segment::Segments::open(
            &data_dir.join(SEGMENTS_DIR),
            durability == Durability::Fsync,
            |segment| {
                // The newest row is in the newest segment with anything
                // recorded.
                let last: Option<(i64, i64)> = conn
                    .query_row(
                        "SELECT segment, seg_offset + seg_length FROM blocks
                         WHERE segment IS NOT NULL ORDER BY id DESC LIMIT 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .context(|| {
                        format!("cannot read the telemetry blocks of {}", path.display())
                    })?;
                Ok(match last {
                    Some((s, end)) if s == i64::from(segment) => end as u64,
                    _ => 0,
                })
            },
        )?;
        Ok(SqliteStore {
            wal_sync,
            segments,
            path,
            writer: Mutex::new(Writer {
                conn,
                series: FastMap::default(),
                streams: FastMap::default(),
                ledgers: FastMap::default(),
            }),
            readers: Mutex::new(Vec::new()),
            checkpointer: Some(checkpointer),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a write on the writer connection; durable when it returns.
    fn write<T>(&self, f: impl FnOnce(&mut Writer) -> Result<T>) -> Result<T> {
        let (out, commit) = self.write_unsynced(f);
        let out = out?;
        self.sync_through(commit)?;
        Ok(out)
    }

    /// Runs a write on the writer connection; returns its result and the
    /// commit number that [`SqliteStore::sync_through`] makes durable.
    fn write_unsynced<T>(&self, f: impl FnOnce(&mut Writer) -> Result<T>) -> (Result<T>, u64) {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut w);
        let commit = match &self.wal_sync {
            Some(s) => s.committed.fetch_add(1, Ordering::AcqRel) + 1,
            None => 0,
        };
        drop(w);
        if let Some(c) = &self.checkpointer {
            c.nudge();
        }
        (out, commit)
    }

    /// Returns once every write up to commit `commit` is on stable storage
    /// (at once with [`Durability::Process`]).
    fn sync_through(&self, commit: u64) -> Result<()> {
        match &self.wal_sync {
            Some(s) => s.sync_through(commit),
            None => Ok(()),
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.path)?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }
}

/// Syncs the WAL file on behalf of the commits made without a sync.
struct WalSync {
    wal: PathBuf,
    dir: PathBuf,
    /// Commits made so far (each one's frames are in the WAL file).
    committed: AtomicU64,
    state: Mutex<WalSyncState>,
}

#[derive(Default)]
struct WalSyncState {
    /// The WAL file and its inode, to notice it being replaced.
    file: Option<(File, u64)>,
    /// Commits known to be on stable storage.
    synced: u64,
}

impl WalSync {
    fn new(db: &Path) -> WalSync {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        WalSync {
            wal: PathBuf::from(wal),
            dir: db.parent().map(Path::to_owned).unwrap_or_default(),
            committed: AtomicU64::new(0),
            state: Mutex::new(WalSyncState::default()),
        }
    }

    /// One `fdatasync` covers every commit made before it starts, so
    /// callers that queue up behind a sync usually find their commit done.
    fn sync_through(&self, commit: u64) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.synced >= commit {
            return Ok(());
        }
        let target = self.committed.load(Ordering::Acquire);
        let io = |source| Error::Io {
            context: format!("cannot sync {}", self.wal.display()),
            source,
        };
        let inode = std::fs::metadata(&self.wal).map_err(io)?.ino();
        if st.file.as_ref().is_none_or(|(_, i)| *i != inode) {
            let file = File::open(&self.wal).map_err(io)?;
            // A new WAL file: its directory entry must survive a power cut too.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
            st.file = Some((file, inode));
        }
        st.file
            .as_ref()
            .expect("opened above")
            .0
            .sync_data()
            .map_err(io)?;
        st.synced = target;
        Ok(())
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(c) = self.checkpointer.take() {
            c.stop();
        }
    }
}

/// WAL frames left uncopied past which the checkpointer runs again at once.
const CHECKPOINT_PAGES: i64 = 1_000;
/// How often the checkpointer runs when anything was written since its last
/// run (writes only mark themselves; they never wake it).
const CHECKPOINT_TICK: Duration = Duration::from_secs(1);

/// The checkpoint thread, the count of writes it looks at, and its stop flag.
struct Checkpointer {
    signal: Arc<(Mutex<CheckpointSignal>, Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

#[derive(Default)]
struct CheckpointSignal {
    writes: u64,
    stop: bool,
}

impl Checkpointer {
    fn start(conn: Connection) -> Result<Checkpointer> {
        let signal = Arc::new((Mutex::new(CheckpointSignal::default()), Condvar::new()));
        let shared = Arc::clone(&signal);
        let thread = std::thread::Builder::new()
            .name("strata-checkpoint".into())
            .spawn(move || checkpoint_loop(&conn, &shared))
            .map_err(|source| Error::Io {
                context: "cannot start the checkpoint thread".into(),
                source,
            })?;
        Ok(Checkpointer { signal, thread })
    }

    /// Tells the thread that something was written (it looks at its next
    /// tick: many commits share one checkpoint and its syncs).
    fn nudge(&self) {
        let (lock, _) = &*self.signal;
        lock.lock().unwrap_or_else(|e| e.into_inner()).writes += 1;
    }

    /// Stops the thread after a last checkpoint (a passive one: stopping
    /// never waits on a reader in another process).
    fn stop(self) {
        let (lock, cond) = &*self.signal;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        cond.notify_one();
        let _ = self.thread.join();
    }
}

fn checkpoint_loop(conn: &Connection, signal: &(Mutex<CheckpointSignal>, Condvar)) {
    let (lock, cond) = signal;
    let mut seen_writes = 0;
    let mut backlog = 0i64;
    let mut last_warning = None;
    loop {
        {
            let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
            // Run again at once while the WAL is long; otherwise once a
            // tick if anything was written.
            if backlog < CHECKPOINT_PAGES && !st.stop {
                st = cond
                    .wait_timeout(st, CHECKPOINT_TICK)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if st.stop {
                drop(st);
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                return;
            }
            if st.writes == seen_writes && backlog == 0 {
                continue;
            }
            seen_writes = st.writes;
        }
        // (busy, frames in the WAL, frames copied back); a passive
        // checkpoint never blocks the writer or the readers.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            Ok((frames, copied)) => {
                let left = (frames - copied).max(0);
                // Frames a reader still needs cannot be copied yet: do not
                // spin on them, wait for the next tick.
                backlog = if left > 0 && left == backlog { 0 } else { left };
            }
            Err(e) => {
                // Retried on the next tick; logged at most once a minute.
                if last_warning.is_none_or(|t: std::time::Instant| t.elapsed().as_secs() >= 60) {
                    tracing::warn!("a WAL checkpoint failed, will retry: {e}");
                    last_warning = Some(std::time::Instant::now());
                }
                backlog = 0;
            }
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn =
        Connection::open(path).context(|| format!("cannot open database {}", path.display()))?;
    // NORMAL whatever the durability: SQLite syncs around checkpoints, and
    // commits are synced by the store itself when asked to (WalSync).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 10000;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA cache_size = -65536;",
    )
    .context(|| format!("cannot configure database {}", path.display()))?;
    Ok(conn)
}
