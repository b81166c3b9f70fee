//! Tampering with any entry, checkpoint or their order is detected.

use std::sync::Arc;

use serde_json::json;
use strata_store::{Durability, SqliteStore};

use super::*;

struct Log {
    dir: tempfile::TempDir,
    audit: Arc<Audit>,
}

impl Log {
    /// A log of `n` entries, appended one to three at a time.
    fn new(n: u64) -> Log {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), Durability::Process).unwrap());
        let audit = Audit::open(store, dir.path()).unwrap();
        let mut i = 0;
        while i < n {
            let batch = (1 + i % 3).min(n - i);
            let events = (i..i + batch)
                .map(|k| {
                    Event::ok(
                        format!("user{}", k % 4),
                        "device.revoke",
                        format!("dev-{k}"),
                    )
                    .detail(json!({"k": k}))
                })
                .collect();
            audit.record_all(events).unwrap();
            i += batch;
        }
        Log { dir, audit }
    }

    fn sql(&self, statement: &str) {
        let db = rusqlite::Connection::open(self.dir.path().join("strata.db")).unwrap();
        let changed = db.execute(statement, []).unwrap();
        assert!(changed > 0, "{statement} changed nothing");
    }

    fn problems(&self) -> Vec<String> {
        self.audit.verify(None).unwrap().problems
    }
}

#[test]
fn an_untouched_log_verifies_and_survives_a_reopen() {
    let log = Log::new(20);
    let report = log.audit.verify(None).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.entries, report.head_seq), (20, 20));
    assert!(report.checkpoints >= 7);

    // Reopened, it continues the same chain with the same key.
    let store = Arc::new(SqliteStore::open(log.dir.path(), Durability::Process).unwrap());
    let again = Audit::open(store, log.dir.path()).unwrap();
    assert_eq!(again.public_key_hex(), log.audit.public_key_hex());
    assert_eq!(
        again
            .record(Event::ok("admin", "auth.login", "admin"))
            .unwrap(),
        21
    );
    let report = again.verify(None).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    let head = again.head().unwrap().unwrap();
    assert_eq!((head.seq, head.sha256), (21, report.head_sha256));
}

#[test]
fn editing_any_field_of_any_entry_is_detected() {
    for column in ["ts_ns", "actor", "action", "target", "outcome", "detail"] {
        for seq in [1, 7, 20] {
            let log = Log::new(20);
            let value = if column == "ts_ns" {
                "ts_ns + 1"
            } else {
                "'x'"
            };
            log.sql(&format!(
                "UPDATE audit_log SET {column} = {value} WHERE seq = {seq}"
            ));
            let problems = log.problems();
            assert!(
                problems[0].starts_with(&format!("entry {seq} ")),
                "{column} of {seq}: {problems:?}"
            );
        }
    }
}

#[test]
fn rewriting_the_chain_after_an_edit_is_caught_by_the_signatures() {
    let log = Log::new(10);
    log.sql("UPDATE audit_log SET actor = 'mallory' WHERE seq = 4");
    // Recompute every hash from 4 on, as someone without the key could.
    let db = rusqlite::Connection::open(log.dir.path().join("strata.db")).unwrap();
    let store = SqliteStore::open(log.dir.path(), Durability::Process).unwrap();
    let mut prev = chain::unhex32(&store.audit_entries(2, 1).unwrap()[0].sha256).unwrap();
    for e in store.audit_entries(3, 100).unwrap() {
        prev = chain::entry_hash(&prev, &e);
        db.execute(
            "UPDATE audit_log SET sha256 = ?1 WHERE seq = ?2",
            rusqlite::params![chain::hex(&prev), e.seq as i64],
        )
        .unwrap();
    }
    let problems = log.problems();
    assert!(!problems.is_empty());
    assert!(
        problems
            .iter()
            .all(|p| p.contains("is not signed by audit key")),
        "{problems:?}"
    );
}

#[test]
fn deleting_an_entry_is_detected() {
    let log = Log::new(10);
    log.sql("DELETE FROM audit_log WHERE seq = 5");
    let problems = log.problems();
    assert_eq!(problems[0], "entry 5 is missing (deleted)");
}

#[test]
fn cutting_off_the_tail_is_detected_by_its_checkpoint_or_an_anchor() {
    let log = Log::new(10);
    let anchor: Anchor = {
        let head = log.audit.head().unwrap().unwrap();
        format!("{}:{}", head.seq, head.sha256).parse().unwrap()
    };
    assert!(log.audit.verify(Some(&anchor)).unwrap().ok());

    log.sql("DELETE FROM audit_log WHERE seq > 8");
    assert!(log.problems().iter().any(|p| p.contains("were cut off")));

    // With the checkpoints gone too, only the anchor knows.
    log.sql("DELETE FROM audit_checkpoints WHERE seq > 8");
    let problems = log.problems();
    assert!(
        problems.iter().all(|p| p.contains("not covered")),
        "{problems:?}"
    );
    let problems = log.audit.verify(Some(&anchor)).unwrap().problems;
    assert!(
        problems
            .iter()
            .any(|p| p.contains("the anchor names entry 10"))
    );
}

#[test]
fn reordering_entries_is_detected() {
    let log = Log::new(10);
    // Swap the contents of 3 and 6, hashes and all.
    log.sql("UPDATE audit_log SET seq = -3 WHERE seq = 3");
    log.sql("UPDATE audit_log SET seq = 3 WHERE seq = 6");
    log.sql("UPDATE audit_log SET seq = 6 WHERE seq = -3");
    let problems = log.problems();
    assert!(problems[0].starts_with("entry 3 "), "{problems:?}");
}

#[test]
fn a_forged_checkpoint_is_detected() {
    let log = Log::new(6);
    log.sql("UPDATE audit_checkpoints SET signature = substr(signature, 3) || '00' WHERE seq = 6");
    assert!(log.problems()[0].starts_with("checkpoint 6 is not signed"));
}

#[test]
fn a_log_checked_with_another_key_fails() {
    let log = Log::new(3);
    let other = Log::new(0);
    let key = chain::unhex32(&other.audit.public_key_hex()).unwrap();
    let store = SqliteStore::open(log.dir.path(), Durability::Process).unwrap();
    let report = verify(&store, &key, None).unwrap();
    assert!(!report.ok());
}

#[test]
fn the_key_file_is_private() {
    let log = Log::new(1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(log.dir.path().join(AUDIT_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }
    assert!(!format!("{:?}", log.audit).contains("key:"));
}

/// A store whose next append commits but answers with an error, as when a
/// database connection drops between the commit and its answer.
struct LostAnswer {
    store: SqliteStore,
    lose_next: std::sync::atomic::AtomicBool,
}

impl AuditStore for LostAnswer {
    fn append_audit(
        &self,
        entries: &[AuditEntry],
        checkpoint: &AuditCheckpoint,
    ) -> strata_store::Result<()> {
        self.store.append_audit(entries, checkpoint)?;
        if self
            .lose_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(strata_store::Error::Io {
                context: "cannot append to the audit log".into(),
                source: std::io::Error::other("connection lost"),
            });
        }
        Ok(())
    }
    fn audit_entries(&self, after: u64, limit: usize) -> strata_store::Result<Vec<AuditEntry>> {
        self.store.audit_entries(after, limit)
    }
    fn recent_audit(
        &self,
        actor: Option<&str>,
        action: Option<&str>,
        limit: usize,
    ) -> strata_store::Result<Vec<AuditEntry>> {
        self.store.recent_audit(actor, action, limit)
    }
    fn audit_checkpoints(
        &self,
        after: u64,
        limit: usize,
    ) -> strata_store::Result<Vec<AuditCheckpoint>> {
        self.store.audit_checkpoints(after, limit)
    }
    fn audit_head(&self) -> strata_store::Result<Option<AuditEntry>> {
        self.store.audit_head()
    }
    fn audit_entries_below_one(&self) -> strata_store::Result<u64> {
        self.store.audit_entries_below_one()
    }
}

#[test]
fn an_append_stored_but_answered_with_an_error_does_not_stop_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LostAnswer {
        store: SqliteStore::open(dir.path(), Durability::Process).unwrap(),
        lose_next: false.into(),
    });
    let audit = Audit::open(store.clone(), dir.path()).unwrap();
    audit
        .record(Event::ok("alice", "site.create", "plant"))
        .unwrap();
    store
        .lose_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        audit
            .record(Event::ok("alice", "device.create", "press"))
            .unwrap(),
        2
    );
    assert_eq!(
        audit
            .record(Event::ok("alice", "device.revoke", "press"))
            .unwrap(),
        3
    );
    let report = audit.verify(None).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.entries, 3);
}
