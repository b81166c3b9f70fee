//! The audit logs of hub replicas sharing a database: each replica
//! appends to a log of its own, a hash chain signed with its own key, so
//! replicas never wait on one another's head, and any replica lists and
//! verifies them all.
//!
//! - `shared_audit_logs`: each replica's id (its audit key's id) and
//!   public key, registered when it starts.
//! - `shared_audit_entries` and `shared_audit_checkpoints`: what the SQLite
//!   store keeps in `audit_log` and `audit_checkpoints`, per replica.
//!
//! A replica holds a lock on its log while it runs (an advisory lock, like
//! [`super::PostgresLease`]): a second replica started with the same audit
//! key would write the same chain, and is refused at start.

use std::sync::Arc;

use postgres::Row;

use super::{Connection, PostgresLease};
use crate::audit::{AuditCheckpoint, AuditEntry, AuditStore, ReplicaLog};
use crate::error::{Context, Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_audit_logs (
    replica    TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    created_ns BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS shared_audit_entries (
    replica TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    ts_ns   BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL,
    sha256  TEXT NOT NULL,
    PRIMARY KEY (replica, seq)
);
CREATE INDEX IF NOT EXISTS shared_audit_entries_by_time ON shared_audit_entries (ts_ns);
CREATE TABLE IF NOT EXISTS shared_audit_checkpoints (
    replica   TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    sha256    TEXT NOT NULL,
    ts_ns     BIGINT NOT NULL,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (replica, seq)
);
";

const ENTRY_COLUMNS: &str = "seq, ts_ns, actor, action, target, outcome, detail, sha256, replica";

fn entry(r: &Row) -> AuditEntry {
    AuditEntry {
        seq: r.get::<_, i64>(0) as u64,
        ts_ns: r.get(1),
        actor: r.get(2),
        action: r.get(3),
        target: r.get(4),
        outcome: r.get(5),
        detail: r.get(6),
        sha256: r.get(7),
        replica: Some(r.get(8)),
    }
}

/// One replica's log in PostgreSQL (and, to read, the others').
pub struct PostgresAudit {
    db: Arc<Connection>,
    replica: String,
    /// Held while this replica writes its log; none in a view of another
    /// replica's log.
    writing: Option<PostgresLease>,
}

impl PostgresAudit {
    /// Connects to the database at `url` as the replica whose audit key has
    /// id `replica` and public key `public_key` (hex), makes the tables if
    /// needed, registers the log, and takes the lock on it: an error if
    /// another running replica writes it (the same audit key).
    pub fn connect(url: &str, replica: &str, public_key: &str) -> Result<Self> {
        let db = Connection::open(url, SCHEMA, "audit")?;
        let writing = PostgresLease::connect(url, &format!("audit log {replica}"))?;
        if !writing.held()? {
            return Err(Error::Conflict(format!(
                "another running replica writes audit log {replica}: it was started with the \
                 same audit key (audit.key); give each replica its own data directory"
            )));
        }
        let (replica_owned, public_key) = (replica.to_owned(), public_key.to_owned());
        db.with(move |c| {
            c.execute(
                "INSERT INTO shared_audit_logs (replica, public_key, created_ns)
                 VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1e9)::BIGINT)
                 ON CONFLICT (replica) DO NOTHING",
                &[&replica_owned, &public_key],
            )
            .context(|| format!("cannot register audit log {replica_owned}"))
        })?;
        Ok(PostgresAudit {
            db: Arc::new(db),
            replica: replica.to_owned(),
            writing: Some(writing),
        })
    }

    /// Connects to the database at `url` to read and verify the replicas'
    /// logs (`strata audit verify --postgres`), as none of them: it writes
    /// nothing, and its own log is empty.
    pub fn reader(url: &str) -> Result<Self> {
        Ok(PostgresAudit {
            db: Arc::new(Connection::open(url, SCHEMA, "audit")?),
            replica: String::new(),
            writing: None,
        })
    }
}

impl AuditStore for PostgresAudit {
    fn append_audit(&self, entries: &[AuditEntry], checkpoint: &AuditCheckpoint) -> Result<()> {
        if self.writing.is_none() {
            return Err(Error::Conflict(format!(
                "audit log {} is another replica's",
                self.replica
            )));
        }
        let replica = &self.replica;
        self.db.with(|c| {
            let what = || format!("cannot append to audit log {replica}");
            let mut tx = c.transaction().context(what)?;
            let insert = tx
                .prepare(&format!(
                    "INSERT INTO shared_audit_entries ({ENTRY_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .context(what)?;
            for e in entries {
                tx.execute(
                    &insert,
                    &[
                        &(e.seq as i64),
                        &e.ts_ns,
                        &e.actor,
                        &e.action,
                        &e.target,
                        &e.outcome,
                        &e.detail,
                        &e.sha256,
                        replica,
                    ],
                )
                .context(|| format!("cannot append audit entry {} to log {replica}", e.seq))?;
            }
            tx.execute(
                "INSERT INTO shared_audit_checkpoints
                     (replica, seq, sha256, ts_ns, key_id, signature)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (replica, seq) DO UPDATE SET sha256 = $3, ts_ns = $4,
                     key_id = $5, signature = $6",
                &[
                    replica,
                    &(checkpoint.seq as i64),
                    &checkpoint.sha256,
                    &checkpoint.ts_ns,
                    &checkpoint.key_id,
                    &checkpoint.signature,
                ],
            )
            .and_then(|_| tx.commit())
            .context(what)
        })
    }

    fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.with(|c| {
            Ok(c.query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM shared_audit_entries
                         WHERE replica = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                ),
                &[&self.replica, &(after as i64), &limit],
            )
            .context(|| format!("cannot read audit log {}", self.replica))?
            .iter()
            .map(entry)
            .collect())
        })
    }

    fn recent_audit(
        &self,
        actor: Option<&str>,
        action: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.with(|c| {
            Ok(c.query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM shared_audit_entries
                         WHERE ($1::TEXT IS NULL OR actor = $1)
                           AND ($2::TEXT IS NULL OR action = $2)
                           AND replica IN (SELECT replica FROM shared_audit_logs)
                         ORDER BY ts_ns DESC, replica, seq DESC LIMIT $3"
                ),
                &[&actor, &action, &limit],
            )
            .context(|| "cannot read the audit logs".into())?
            .iter()
            .map(entry)
            .collect())
        })
    }

    fn audit_checkpoints(&self, after: u64, limit: usize) -> Result<Vec<AuditCheckpoint>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.with(|c| {
            Ok(c.query(
                "SELECT seq, sha256, ts_ns, key_id, signature FROM shared_audit_checkpoints
                     WHERE replica = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&self.replica, &(after as i64), &limit],
            )
            .context(|| format!("cannot read the checkpoints of audit log {}", self.replica))?
            .iter()
            .map(|r| AuditCheckpoint {
                seq: r.get::<_, i64>(0) as u64,
                sha256: r.get(1),
                ts_ns: r.get(2),
                key_id: r.get(3),
                signature: r.get(4),
            })
            .collect())
        })
    }

    fn audit_head(&self) -> Result<Option<AuditEntry>> {
        self.db.with(|c| {
            Ok(c.query_opt(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM shared_audit_entries
                         WHERE replica = $1 ORDER BY seq DESC LIMIT 1"
                ),
                &[&self.replica],
            )
            .context(|| format!("cannot read the head of audit log {}", self.replica))?
            .map(|r| entry(&r)))
        })
    }

    fn audit_entries_below_one(&self) -> Result<u64> {
        self.db.with(|c| {
            Ok(c.query_one(
                "SELECT COUNT(*) FROM shared_audit_entries WHERE replica = $1 AND seq < 1",
                &[&self.replica],
            )
            .context(|| format!("cannot count the entries of audit log {}", self.replica))?
            .get::<_, i64>(0) as u64)
        })
    }

    fn replica_logs(&self) -> Result<Vec<ReplicaLog>> {
        self.db.with(|c| {
            Ok(c.query(
                "SELECT replica, public_key FROM shared_audit_logs ORDER BY created_ns, replica",
                &[],
            )
            .context(|| "cannot list the audit logs".into())?
            .iter()
            .map(|r| ReplicaLog {
                replica: r.get(0),
                public_key: r.get(1),
            })
            .collect())
        })
    }

    fn replica_log(&self, replica: &str) -> Option<Box<dyn AuditStore>> {
        Some(Box::new(PostgresAudit {
            db: self.db.clone(),
            replica: replica.to_owned(),
            writing: None,
        }))
    }
}
