//! The hash chain's definitions: how an entry is hashed and what a
//! checkpoint signs. Verifiers outside the hub need only this file.
//!
//! Every field goes in with its length first, so no two different entries
//! encode alike.

use sha2::{Digest, Sha256};
use strata_store::AuditEntry;

/// The hash before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

const ENTRY_DOMAIN: &[u8] = b"strata-audit-entry-v1\0";
const CHECKPOINT_DOMAIN: &[u8] = b"strata-audit-checkpoint-v1\0";

/// SHA-256 over the previous hash and the entry's fields (not its stored hash).
pub fn entry_hash(prev: &[u8; 32], e: &AuditEntry) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ENTRY_DOMAIN);
    h.update(prev);
    h.update(e.seq.to_be_bytes());
    h.update(e.ts_ns.to_be_bytes());
    for field in [&e.actor, &e.action, &e.target, &e.outcome, &e.detail] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().into()
}

/// The bytes a checkpoint's signature covers.
pub fn checkpoint_message(seq: u64, sha256: &[u8; 32], ts_ns: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 48);
    m.extend_from_slice(CHECKPOINT_DOMAIN);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(sha256);
    m.extend_from_slice(&ts_ns.to_be_bytes());
    m
}

/// A key's id: the first 16 bytes of its SHA-256, in hex.
pub fn key_id(public_key: &[u8]) -> String {
    hex(&Sha256::digest(public_key)[..16])
}

pub use strata_ota::{hex, unhex};

/// 32 bytes from 64 hex characters.
pub fn unhex32(text: &str) -> Option<[u8; 32]> {
    unhex(text)?.try_into().ok()
}
