//! [`AuditStore`] for SQLite.

use rusqlite::{Row, params};

use super::SqliteStore;
use crate::audit::{AuditCheckpoint, AuditEntry, AuditStore};
use crate::error::{Context, Result};

const ENTRY_COLUMNS: &str = "seq, ts_ns, actor, action, target, outcome, detail, sha256";

fn entry(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get::<_, i64>(0)? as u64,
        ts_ns: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        outcome: r.get(5)?,
        detail: r.get(6)?,
        sha256: r.get(7)?,
        replica: None,
    })
}

impl AuditStore for SqliteStore {
    fn append_audit(&self, entries: &[AuditEntry], checkpoint: &AuditCheckpoint) -> Result<()> {
        self.write(|w| {
            let tx = w.conn.transaction().context(|| "cannot begin".into())?;
            {
                let mut insert = tx
                    .prepare_cached(&format!(
                        "INSERT INTO audit_log ({ENTRY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                    ))
                    .context(|| "cannot prepare an audit insert".into())?;
                for e in entries {
                    insert
                        .execute(params![
                            e.seq as i64,
                            e.ts_ns,
                            e.actor,
                            e.action,
                            e.target,
                            e.outcome,
                            e.detail,
                            e.sha256
                        ])
                        .context(|| format!("cannot append audit entry {}", e.seq))?;
                }
            }
            tx.execute(
                "INSERT OR REPLACE INTO audit_checkpoints (seq, sha256, ts_ns, key_id, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    checkpoint.seq as i64,
                    checkpoint.sha256,
                    checkpoint.ts_ns,
                    checkpoint.key_id,
                    checkpoint.signature
                ],
            )
            .context(|| format!("cannot store audit checkpoint {}", checkpoint.seq))?;
            tx.commit().context(|| "cannot commit audit entries".into())
        })
    }

    fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                ))
                .context(|| "cannot read the audit log".into())?;
            stmt.query_map(params![after as i64, limit as i64], entry)
                .and_then(|rows| rows.collect())
                .context(|| "cannot read the audit log".into())
        })
    }

    fn recent_audit(
        &self,
        actor: Option<&str>,
        action: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM audit_log
                     WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2)
                     ORDER BY seq DESC LIMIT ?3"
                ))
                .context(|| "cannot read the audit log".into())?;
            stmt.query_map(params![actor, action, limit as i64], entry)
                .and_then(|rows| rows.collect())
                .context(|| "cannot read the audit log".into())
        })
    }

    fn audit_checkpoints(&self, after: u64, limit: usize) -> Result<Vec<AuditCheckpoint>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, sha256, ts_ns, key_id, signature FROM audit_checkpoints
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .context(|| "cannot read audit checkpoints".into())?;
            stmt.query_map(params![after as i64, limit as i64], |r| {
                Ok(AuditCheckpoint {
                    seq: r.get::<_, i64>(0)? as u64,
                    sha256: r.get(1)?,
                    ts_ns: r.get(2)?,
                    key_id: r.get(3)?,
                    signature: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect())
            .context(|| "cannot read audit checkpoints".into())
        })
    }

    fn audit_head(&self) -> Result<Option<AuditEntry>> {
        Ok(self.recent_audit(None, None, 1)?.pop())
    }

    fn audit_entries_below_one(&self) -> Result<u64> {
        self.read(|conn| {
            conn.query_row("SELECT COUNT(*) FROM audit_log WHERE seq < 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .context(|| "cannot count the audit log's entries".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Durability;

    fn e(seq: u64) -> AuditEntry {
        AuditEntry {
            seq,
            ts_ns: seq as i64,
            actor: "alice".into(),
            action: if seq.is_multiple_of(2) { "even" } else { "odd" }.into(),
            target: format!("t{seq}"),
            outcome: "ok".into(),
            detail: "{}".into(),
            sha256: format!("{seq:064x}"),
            replica: None,
        }
    }

    fn cp(seq: u64) -> AuditCheckpoint {
        AuditCheckpoint {
            seq,
            sha256: format!("{seq:064x}"),
            ts_ns: 0,
            key_id: "k".into(),
            signature: "00".into(),
        }
    }

    #[test]
    fn entries_append_in_order_and_a_taken_seq_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Durability::Process).unwrap();
        assert_eq!(store.audit_head().unwrap(), None);
        store.append_audit(&[e(1), e(2)], &cp(2)).unwrap();
        store.append_audit(&[e(3)], &cp(3)).unwrap();
        assert!(store.append_audit(&[e(3)], &cp(3)).is_err());
        let all = store.audit_entries(0, 10).unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(store.audit_entries(1, 1).unwrap(), vec![e(2)]);
        assert_eq!(store.audit_head().unwrap(), Some(e(3)));
        let odd = store.recent_audit(None, Some("odd"), 10).unwrap();
        assert_eq!(odd.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 1]);
        let cps = store.audit_checkpoints(0, 10).unwrap();
        assert_eq!(cps.iter().map(|c| c.seq).collect::<Vec<_>>(), [2, 3]);
    }
}
