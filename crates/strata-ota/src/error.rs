//! Why an update is refused. Each reason has a short code the agent reports
//! through its twin and the hub records against the campaign.

/// A refused update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A document or key could not be read.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// Signed by a key this device does not trust for that role.
    #[error("{document} is signed by key {key_id}, which is not a trusted {role} key")]
    UnknownKey {
        /// The document type.
        document: &'static str,
        /// The signer's key id.
        key_id: String,
        /// The role the key would need (`release` or `rollout`).
        role: &'static str,
    },
    /// The signature does not verify.
    #[error("{document}: the signature does not match its content")]
    BadSignature {
        /// The document type.
        document: &'static str,
    },
    /// Past its expiry.
    #[error("{document} expired at {expired_ns} ns (now {now_ns} ns)")]
    Expired {
        /// The document type.
        document: &'static str,
        /// Its expiry.
        expired_ns: i64,
        /// The device's clock.
        now_ns: i64,
    },
    /// Meant for another device, site or group.
    #[error("not for this device: {0}")]
    NotForThisDevice(String),
    /// The assignment and the release do not belong together.
    #[error("the assignment and the release disagree on {field}: {assignment} vs {release}")]
    Mismatch {
        /// The field.
        field: &'static str,
        /// The assignment's value.
        assignment: String,
        /// The release's value.
        release: String,
    },
    /// Older than what may still be installed (the anti-rollback floor).
    #[error("{kind} {name} version {offered} is below {floor}, the lowest version allowed here")]
    Rollback {
        /// Release kind.
        kind: String,
        /// Release name.
        name: String,
        /// The version offered.
        offered: u64,
        /// The lowest version allowed: at the hub, one above the newest
        /// release accepted; on a device, the floor its committed release
        /// set.
        floor: u64,
    },
    /// The artifact's content is not the signed one.
    #[error("the artifact hashes to {actual}, the release says {expected}")]
    HashMismatch {
        /// The signed hash.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// The artifact's size is not the signed one.
    #[error("the artifact has {actual} bytes, the release says {expected}")]
    SizeMismatch {
        /// The signed size.
        expected: u64,
        /// What arrived (so far, when it is too much).
        actual: u64,
    },
}

impl Refusal {
    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed { .. } => "malformed",
            Refusal::UnknownKey { .. } => "unknown_key",
            Refusal::BadSignature { .. } => "bad_signature",
            Refusal::Expired { .. } => "expired",
            Refusal::NotForThisDevice(_) => "not_for_this_device",
            Refusal::Mismatch { .. } => "mismatch",
            Refusal::Rollback { .. } => "rollback",
            Refusal::HashMismatch { .. } => "hash_mismatch",
            Refusal::SizeMismatch { .. } => "size_mismatch",
        }
    }
}
