//! Over-the-air updates, the part every side shares: what a release and a
//! rollout assignment say, how they are signed, and the checks a device
//! makes before it installs anything (`docs/design/ota.md`).
//!
//! - A [`Release`] (what may be installed) is signed with an offline
//!   release key; an [`Assignment`] (this device, that release, now) with
//!   the hub's online rollout key. [`Trust`] keeps the two roles apart.
//! - [`verify`] runs every check of an assignment and its release against
//!   a [`Device`] and the version it last committed, and names the reason
//!   of a refusal ([`Refusal`]).
//! - [`ArtifactCheck`] checks an artifact while it streams in: never more
//!   bytes than signed, and the signed SHA-256 at the end.

mod artifact;
mod envelope;
mod error;
mod keys;
mod release;
mod verify;

pub use artifact::{ArtifactCheck, sha256_hex};
pub use envelope::{DocumentType, Envelope};
pub use error::Refusal;
pub use keys::{KeyPair, PublicKey, hex, unhex};
pub use release::{
    Artifact, Assignment, BundleDetails, GoldenCase, Kind, ModelDetails, Release, SignedUpdate,
    Target,
};
pub use verify::{Device, Trust, Verified, verify};
