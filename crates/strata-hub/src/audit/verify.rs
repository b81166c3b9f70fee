//! Checking a log: the chain, the checkpoints' signatures, and optionally
//! that the log still extends an anchor kept elsewhere.

use std::str::FromStr;

use ring::signature::{ED25519, UnparsedPublicKey};
use serde::Serialize;
use strata_store::AuditStore;
use utoipa::ToSchema;

use super::chain::{self, GENESIS};
use crate::error::Result;

/// A checkpoint kept outside the hub, as `seq:sha256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The entry.
    pub seq: u64,
    /// Its hash.
    pub sha256: [u8; 32],
}

impl FromStr for Anchor {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Anchor, String> {
        let (seq, hash) = s
            .split_once(':')
            .ok_or_else(|| format!("anchor {s:?} is not seq:sha256"))?;
        Ok(Anchor {
            seq: seq
                .parse()
                .map_err(|_| format!("anchor {s:?}: {seq:?} is not a number"))?,
            sha256: chain::unhex32(hash)
                .ok_or_else(|| format!("anchor {s:?}: the hash is not 64 hex characters"))?,
        })
    }
}

/// What a verification found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    /// Entries read.
    pub entries: u64,
    /// Checkpoints whose signature was checked.
    pub checkpoints: u64,
    /// The last entry's seq.
    pub head_seq: u64,
    /// The last entry's hash, as recomputed.
    pub head_sha256: String,
    /// Every problem, in log order; empty when the log is intact.
    pub problems: Vec<String>,
    /// With replicas sharing a database, each other replica's log, checked
    /// against the public key it registered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaReport>,
}

/// What a verification found in another replica's log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplicaReport {
    /// The replica (its audit key's id).
    pub replica: String,
    /// The public key it registered, in hex.
    pub public_key: String,
    /// Entries read.
    pub entries: u64,
    /// Checkpoints whose signature was checked.
    pub checkpoints: u64,
    /// The last entry's seq.
    pub head_seq: u64,
    /// Every problem, in log order; empty when the log is intact.
    pub problems: Vec<String>,
}

impl Report {
    /// Whether the log is intact (and every other replica's checked with
    /// it).
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.replicas.iter().all(|r| r.problems.is_empty())
    }
}

/// Checks every replica's log in `store` but `own`'s against the public
/// key that replica registered, which must be the one the log's id names
/// (so a key put in its place by someone who can write the database, to
/// sign a rewritten log, is refused).
pub fn verify_replicas(store: &dyn AuditStore, own: &str) -> Result<Vec<ReplicaReport>> {
    let mut reports = Vec::new();
    for log in store.replica_logs()? {
        if log.replica == own {
            continue;
        }
        let key = chain::unhex32(&log.public_key).filter(|k| chain::key_id(k) == log.replica);
        let mut report = ReplicaReport {
            replica: log.replica,
            public_key: log.public_key,
            entries: 0,
            checkpoints: 0,
            head_seq: 0,
            problems: Vec::new(),
        };
        match (key, store.replica_log(&report.replica)) {
            (Some(key), Some(other)) => {
                let found = verify(other.as_ref(), &key, None)?;
                report.entries = found.entries;
                report.checkpoints = found.checkpoints;
                report.head_seq = found.head_seq;
                report.problems = found.problems;
            }
            (None, _) => report.problems.push(format!(
                "the public key registered for replica {} is not the key that id names",
                report.replica
            )),
            (Some(_), None) => report.problems.push(format!(
                "the log of replica {} cannot be read from this store",
                report.replica
            )),
        }
        reports.push(report);
    }
    Ok(reports)
}

const PAGE: usize = 10_000;

/// Walks the whole log in `store`, recomputing every hash, and checks every
/// checkpoint against `public_key`.
pub fn verify(
    store: &dyn AuditStore,
    public_key: &[u8; 32],
    anchor: Option<&Anchor>,
) -> Result<Report> {
    let key = UnparsedPublicKey::new(&ED25519, public_key);
    let key_id = chain::key_id(public_key);
    let mut report = Report {
        entries: 0,
        checkpoints: 0,
        head_seq: 0,
        head_sha256: chain::hex(&GENESIS),
        problems: Vec::new(),
        replicas: Vec::new(),
    };
    let mut prev = GENESIS;
    let mut seq = 0u64;
    let mut checkpoints = store
        .audit_checkpoints(0, usize::MAX >> 1)?
        .into_iter()
        .peekable();
    let mut last_checkpoint = 0u64;
    let mut anchor_seen = anchor.is_none();
    loop {
        let page = store.audit_entries(seq, PAGE)?;
        if page.is_empty() {
            break;
        }
        for e in page {
            if e.seq != seq + 1 {
                report.problems.push(if e.seq == seq + 2 {
                    format!("entry {} is missing (deleted)", seq + 1)
                } else {
                    format!("entries {} to {} are missing (deleted)", seq + 1, e.seq - 1)
                });
            }
            let computed = chain::entry_hash(&prev, &e);
            if chain::hex(&computed) != e.sha256 {
                report.problems.push(format!(
                    "entry {} ({} by {}) does not match its hash: it or an entry before it was edited, deleted or moved",
                    e.seq, e.action, e.actor
                ));
            }
            // Go on from the stored hash, so one edit is reported once.
            prev = chain::unhex32(&e.sha256).unwrap_or(computed);
            seq = e.seq;
            report.entries += 1;
            if let Some(a) = anchor.filter(|a| a.seq == seq) {
                anchor_seen = true;
                if a.sha256 != computed {
                    report.problems.push(format!(
                        "entry {seq} differs from the anchor: the log was rewritten since the anchor was taken"
                    ));
                }
            }
            while let Some(c) = checkpoints.next_if(|c| c.seq <= seq) {
                report.checkpoints += 1;
                last_checkpoint = c.seq;
                if c.seq != seq {
                    report.problems.push(format!(
                        "checkpoint {} names an entry that is not in the log",
                        c.seq
                    ));
                    continue;
                }
                let signed = chain::checkpoint_message(c.seq, &computed, c.ts_ns);
                let signature = chain::unhex(&c.signature).unwrap_or_default();
                if c.key_id != key_id || key.verify(&signed, &signature).is_err() {
                    report.problems.push(format!(
                        "checkpoint {} is not signed by audit key {key_id} over the entries as they are now",
                        c.seq
                    ));
                }
            }
        }
    }
    for c in checkpoints {
        report.checkpoints += 1;
        report.problems.push(format!(
            "checkpoint {} names an entry past the end of the log: entries {} to {} were cut off",
            c.seq,
            seq + 1,
            c.seq
        ));
    }
    if last_checkpoint < seq {
        report.problems.push(format!(
            "entries {} to {seq} are not covered by a signed checkpoint",
            last_checkpoint + 1
        ));
    }
    if !anchor_seen {
        let a = anchor.expect("an anchor when not seen");
        report.problems.push(format!(
            "the anchor names entry {} but the log ends at {seq}: entries were cut off",
            a.seq
        ));
    }
    let unchained = store.audit_entries_below_one()?;
    if unchained > 0 {
        report.problems.push(format!(
            "{unchained} entries lie outside the chain (a seq of 0 or below): they were added by hand"
        ));
    }
    report.head_seq = seq;
    report.head_sha256 = chain::hex(&prev);
    Ok(report)
}
