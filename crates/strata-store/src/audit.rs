//! The audit log as stored: entries in order, each carrying the hash that
//! chains it to the one before, and signed checkpoints of the chain's head.
//!
//! The store only keeps rows; computing hashes, signing and verifying are
//! the hub's (`strata_hub::audit`), so a verifier never trusts the store.
//!
//! Hub replicas sharing a database each keep a log of their own there
//! ([`crate::postgres::PostgresAudit`]), signed with their own key: one
//! chain per replica, so replicas never wait on each other's head.
//! Listing reads them all.

use serde::{Deserialize, Serialize};

use crate::Result;

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When it happened, ns since the epoch.
    pub ts_ns: i64,
    /// Who did it: a user, a service account, a device or a hub component.
    pub actor: String,
    /// What was done, e.g. `device.revoke` or `auth.login`.
    pub action: String,
    /// What it was done to, e.g. the request path or a device id.
    pub target: String,
    /// How it ended: `ok`, `denied`, `failed`, or an HTTP status.
    pub outcome: String,
    /// More about it, as JSON text (never a secret).
    pub detail: String,
    /// SHA-256 over the previous entry's hash and this entry, in hex.
    pub sha256: String,
    /// In a store hub replicas share, the replica whose log holds it (the
    /// id of its audit key); none in a hub's own store. Not part of the
    /// hash: each replica's log is a chain of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// One replica's log in a store replicas share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaLog {
    /// The replica: the id of its audit key (the first 16 bytes of the
    /// key's SHA-256, in hex).
    pub replica: String,
    /// Its audit public key, in hex, as the replica registered it.
    pub public_key: String,
}

/// A signed statement that the log's entry `seq` has hash `sha256`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditCheckpoint {
    /// The last entry it covers.
    pub seq: u64,
    /// That entry's hash, in hex.
    pub sha256: String,
    /// When it was signed, ns since the epoch.
    pub ts_ns: i64,
    /// The signing key's id.
    pub key_id: String,
    /// The Ed25519 signature, in hex.
    pub signature: String,
}

/// Where the audit log goes.
pub trait AuditStore: Send + Sync + 'static {
    /// Appends entries and the checkpoint that covers them, in one
    /// transaction. Refuses an entry whose seq is already taken.
    fn append_audit(&self, entries: &[AuditEntry], checkpoint: &AuditCheckpoint) -> Result<()>;
    /// Entries with seq above `after`, oldest first, at most `limit`.
    fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>>;
    /// The newest entries (optionally only of `actor` or `action`), newest
    /// first, at most `limit`; in a store replicas share, of every
    /// registered replica's log (entries under no registered key are
    /// verified by nobody, so not shown).
    fn recent_audit(
        &self,
        actor: Option<&str>,
        action: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>>;
    /// Checkpoints with seq above `after`, oldest first, at most `limit`.
    fn audit_checkpoints(&self, after: u64, limit: usize) -> Result<Vec<AuditCheckpoint>>;
    /// The entry with the highest seq.
    fn audit_head(&self) -> Result<Option<AuditEntry>>;
    /// How many entries have a seq below 1: verification reads the chain
    /// from seq 1 up, and a row put below it by hand would otherwise go
    /// unseen (yet listed).
    fn audit_entries_below_one(&self) -> Result<u64>;

    /// In a store replicas share, every replica's log, this one's too
    /// (none in a hub's own store).
    fn replica_logs(&self) -> Result<Vec<ReplicaLog>> {
        Ok(Vec::new())
    }

    /// In a store replicas share, replica `replica`'s log, to read and
    /// verify (`None` in a hub's own store).
    fn replica_log(&self, _replica: &str) -> Option<Box<dyn AuditStore>> {
        None
    }
}
