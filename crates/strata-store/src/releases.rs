//! The record of an accepted OTA release.

use serde::{Deserialize, Serialize};

/// A signed release the hub accepted, with the envelope kept verbatim so
/// devices check the very bytes the release key signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseRecord {
    /// `model`, `config` or `bundle`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// SHA-256 of the signed payload, hex (how assignments name it).
    pub digest: String,
    /// The signing key's id.
    pub key_id: String,
    /// The artifact's SHA-256, hex.
    pub sha256: String,
    /// The artifact's size.
    pub size: u64,
    /// When it stops being installable, ns.
    pub expires_ns: i64,
    /// When the hub accepted it, ns.
    pub accepted_ns: i64,
    /// The signed envelope, as JSON.
    pub envelope: String,
}
