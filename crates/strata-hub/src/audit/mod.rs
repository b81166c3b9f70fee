//! The tamper-evident audit log: every security-relevant and fleet-changing
//! action, appended to a hash chain whose head is signed at every append.
//!
//! Entry `n`'s hash is SHA-256 over entry `n-1`'s hash and entry `n`'s
//! fields ([`chain::entry_hash`]), so editing, deleting or reordering any
//! entry breaks every hash after it. Each append also stores a checkpoint:
//! the head's seq and hash signed with the hub's audit key (Ed25519, in
//! `audit.key`, readable by the hub only). Someone who can write the
//! database but not read the key can rewrite the chain but not re-sign it;
//! [`verify`] finds both. Cutting entries off the end together with their
//! checkpoints is only caught against a checkpoint kept elsewhere (an
//! anchor), as with Certificate Transparency's signed tree heads.
//!
//! Replicas sharing a database (`[shared] postgres`) each keep their log
//! there, under their key's id ([`strata_store::postgres::PostgresAudit`]);
//! any of them lists every replica's entries and verifies every log.

pub mod chain;
mod verify;

use std::path::Path;
use std::sync::{Arc, Mutex};

use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::Value;
use strata_store::{AuditCheckpoint, AuditEntry, AuditStore};

pub use verify::{Anchor, ReplicaReport, Report, verify, verify_replicas};

use crate::error::{Error, Result};
use crate::now_ns;

/// Name of the audit signing key in the data directory (PKCS#8).
pub const AUDIT_KEY_FILE: &str = "audit.key";

/// Something to record.
#[derive(Debug, Clone)]
pub struct Event {
    /// Who: a user, a service account, `device:<id>` or a hub component.
    pub actor: String,
    /// What, e.g. `device.revoke`.
    pub action: String,
    /// To what, e.g. a path or an id.
    pub target: String,
    /// `ok`, `denied`, `failed` or an HTTP status.
    pub outcome: String,
    /// More, as JSON (never a secret).
    pub detail: Value,
}

impl Event {
    /// An event with outcome `ok` and no detail.
    pub fn ok(actor: impl Into<String>, action: &str, target: impl Into<String>) -> Event {
        Event {
            actor: actor.into(),
            action: action.to_owned(),
            target: target.into(),
            outcome: "ok".into(),
            detail: Value::Null,
        }
    }

    /// The same event with another outcome.
    pub fn outcome(mut self, outcome: impl Into<String>) -> Event {
        self.outcome = outcome.into();
        self
    }

    /// The same event with detail.
    pub fn detail(mut self, detail: Value) -> Event {
        self.detail = detail;
        self
    }
}

/// The log's writer. One per hub: it holds the head, so appends are
/// serialised here.
pub struct Audit {
    store: Arc<dyn AuditStore>,
    key: Ed25519KeyPair,
    key_id: String,
    head: Mutex<(u64, [u8; 32])>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl Audit {
    /// Opens the log in `store`, with the key in `data_dir` (made on first start).
    pub fn open(store: Arc<dyn AuditStore>, data_dir: &Path) -> Result<Arc<Audit>> {
        let key = audit_key(data_dir)?;
        let key_id = chain::key_id(key.public_key().as_ref());
        let head = match store.audit_head()? {
            Some(e) => (
                e.seq,
                chain::unhex32(&e.sha256).ok_or_else(|| {
                    Error::Unavailable(format!("audit entry {} has a malformed hash", e.seq))
                })?,
            ),
            None => (0, chain::GENESIS),
        };
        Ok(Arc::new(Audit {
            store,
            key,
            key_id,
            head: Mutex::new(head),
        }))
    }

    /// The public half of the audit key, in hex: what a verifier checks
    /// checkpoints against.
    pub fn public_key_hex(&self) -> String {
        chain::hex(self.key.public_key().as_ref())
    }

    /// Appends `events` as consecutive entries with one checkpoint; durable
    /// when it returns. Returns the last entry's seq.
    pub fn record_all(&self, events: Vec<Event>) -> Result<u64> {
        if events.is_empty() {
            return Ok(self.head.lock().unwrap_or_else(|e| e.into_inner()).0);
        }
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        let (mut seq, mut prev) = *head;
        let ts_ns = now_ns();
        let mut entries = Vec::with_capacity(events.len());
        for ev in events {
            seq += 1;
            let mut entry = AuditEntry {
                seq,
                ts_ns,
                actor: ev.actor,
                action: ev.action,
                target: ev.target,
                outcome: ev.outcome,
                detail: if ev.detail.is_null() {
                    "{}".into()
                } else {
                    ev.detail.to_string()
                },
                sha256: String::new(),
                replica: None,
            };
            prev = chain::entry_hash(&prev, &entry);
            entry.sha256 = chain::hex(&prev);
            entries.push(entry);
        }
        let message = chain::checkpoint_message(seq, &prev, ts_ns);
        let checkpoint = AuditCheckpoint {
            seq,
            sha256: chain::hex(&prev),
            ts_ns,
            key_id: self.key_id.clone(),
            signature: chain::hex(self.key.sign(&message).as_ref()),
        };
        if let Err(e) = self.store.append_audit(&entries, &checkpoint) {
            // The commit may have landed with only its answer lost (a
            // PostgreSQL connection dropped at the wrong moment): then the
            // stored head is these entries', and the log goes on from
            // there instead of offering taken seqs for ever after.
            let landed = self
                .store
                .audit_head()
                .is_ok_and(|h| h.is_some_and(|h| h.seq == seq && h.sha256 == checkpoint.sha256));
            if !landed {
                return Err(e.into());
            }
            tracing::warn!(
                seq,
                "the audit log's append reported {e}, but it was stored"
            );
        }
        *head = (seq, prev);
        Ok(seq)
    }

    /// Appends one event; on failure logs it (the action it describes has
    /// already happened) and returns the error.
    pub fn record(&self, event: Event) -> Result<u64> {
        let action = event.action.clone();
        self.record_all(vec![event]).inspect_err(|e| {
            tracing::error!(action, error = %e, "cannot append to the audit log");
        })
    }

    /// The newest entries, newest first.
    pub fn recent(
        &self,
        actor: Option<&str>,
        action: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        Ok(self.store.recent_audit(actor, action, limit)?)
    }

    /// The latest checkpoint: keep it elsewhere as an anchor.
    pub fn head(&self) -> Result<Option<AuditCheckpoint>> {
        let seq = self.head.lock().unwrap_or_else(|e| e.into_inner()).0;
        Ok(self
            .store
            .audit_checkpoints(seq.saturating_sub(1), 1)?
            .into_iter()
            .find(|c| c.seq == seq))
    }

    /// Checks the whole log against this hub's key and, with replicas
    /// sharing a database, every other replica's log against its own.
    pub fn verify(&self, anchor: Option<&Anchor>) -> Result<Report> {
        let key = chain::unhex32(&self.public_key_hex()).expect("our own key");
        let mut report = verify(self.store.as_ref(), &key, anchor)?;
        report.replicas = verify::verify_replicas(self.store.as_ref(), &self.key_id)?;
        Ok(report)
    }
}

/// The id and public half (hex) of the audit key in `data_dir`, making the
/// key on first start: what names this hub's log among replicas'.
pub fn key_of(data_dir: &Path) -> Result<(String, String)> {
    let key = audit_key(data_dir)?;
    let public = key.public_key().as_ref();
    Ok((chain::key_id(public), chain::hex(public)))
}

/// The public half of the audit key in `data_dir`, without making one.
pub fn read_public_key(data_dir: &Path) -> Result<[u8; 32]> {
    let path = data_dir.join(AUDIT_KEY_FILE);
    let pkcs8 = std::fs::read(&path)
        .map_err(|e| Error::Unavailable(format!("cannot read {}: {e}", path.display())))?;
    let key = Ed25519KeyPair::from_pkcs8(&pkcs8)
        .map_err(|e| Error::Unavailable(format!("cannot use {}: {e}", path.display())))?;
    Ok(key
        .public_key()
        .as_ref()
        .try_into()
        .expect("an Ed25519 public key is 32 bytes"))
}

/// Reads the audit key, making it (readable by the hub only) on first start.
fn audit_key(data_dir: &Path) -> Result<Ed25519KeyPair> {
    let path = data_dir.join(AUDIT_KEY_FILE);
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        Error::Unavailable(format!("{what} {}: {e}", path.display()))
    };
    let pkcs8 = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| unavailable("cannot make", &"the random source failed"))?;
            crate::write_private(&path, pkcs8.as_ref())
                .map_err(|e| unavailable("cannot write", &e))?;
            tracing::info!(path = %path.display(), "created the audit key");
            pkcs8.as_ref().to_vec()
        }
        Err(e) => return Err(unavailable("cannot read", &e)),
    };
    Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| unavailable("cannot use", &e))
}

#[cfg(test)]
mod tests;
