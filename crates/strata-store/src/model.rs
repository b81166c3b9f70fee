//! The records the stores hold and return.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_proto::{DeviceId, SiteId};

use crate::blob::EncodedBatch;
use crate::error::{Result, corrupt};

/// A batch to store, already validated and packed (packing runs on the
/// caller's thread, so the single storage writer only runs SQL).
#[derive(Debug, Clone)]
pub struct BatchWrite {
    /// The device that sent it (from the authenticated connection, never
    /// from the payload).
    pub device: DeviceId,
    /// When the hub received it, nanoseconds since the Unix epoch.
    pub received_ns: i64,
    /// The packed batch.
    pub batch: EncodedBatch,
}

/// What happened to one batch of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored now.
    Stored,
    /// (device, stream, seq) was stored before; nothing written.
    Duplicate,
}

/// What one retention pass deleted ([`crate::TelemetryStore::expire`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expired {
    /// Blocks (a stream's batches of one commit) deleted.
    pub blocks: u64,
    /// Batches in them.
    pub batches: u64,
    /// Readings in them.
    pub readings: u64,
    /// Segment files removed.
    pub segments: u64,
    /// Bytes those files held.
    pub bytes: u64,
}

/// A series: one signal of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeriesInfo {
    /// The device.
    pub device: DeviceId,
    /// The signal name.
    pub signal: String,
    /// Its unit, as first reported.
    pub unit: String,
    /// The latest reading, if any.
    pub latest: Option<LatestReading>,
}

/// The most recent reading of a signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LatestReading {
    /// The signal name.
    pub signal: String,
    /// Its unit.
    pub unit: String,
    /// Timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// The value.
    pub value: f64,
    /// Quality code (0 good, 1 uncertain, 2 bad).
    pub quality: i32,
}

/// A range query over one series.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeQuery {
    /// The device.
    pub device: DeviceId,
    /// The signal.
    pub signal: String,
    /// Start of the range, inclusive, ns.
    pub from_ns: i64,
    /// End of the range, inclusive, ns.
    pub to_ns: i64,
    /// Bucket width for downsampling; raw readings when `None`.
    pub bucket_ns: Option<i64>,
    /// Most raw points or buckets returned; the result says if it was cut.
    pub limit: usize,
}

/// One raw reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Point {
    /// Timestamp, ns.
    pub ts_ns: i64,
    /// Value.
    pub value: f64,
    /// Quality code.
    pub quality: i32,
}

/// One downsampling bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bucket {
    /// Start of the bucket, ns (a multiple of the bucket width).
    pub start_ns: i64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub avg: f64,
    /// Number of readings.
    pub count: u64,
}

/// The answer to a [`RangeQuery`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RangeResult {
    /// Raw readings in time order (raw queries).
    pub points: Vec<Point>,
    /// Buckets in time order (downsampled queries); empty buckets omitted.
    pub buckets: Vec<Bucket>,
    /// Whether the limit cut the answer short.
    pub truncated: bool,
}

/// A site: a plant, a building, a line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Site {
    /// Its id.
    pub id: SiteId,
    /// Human name.
    pub name: String,
    /// Region the site is in, e.g. "eu-west": recorded for data sovereignty,
    /// not yet enforced (see docs/design/security.md).
    pub region: String,
    /// Creation time, ns.
    pub created_ns: i64,
}

/// Lifecycle of a device's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Registered, waiting to enroll with its one-time token.
    Pending,
    /// Enrolled: holds a credential.
    Active,
    /// Cut off for good.
    Revoked,
}

impl DeviceState {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeviceState::Pending),
            "active" => Some(DeviceState::Active),
            "revoked" => Some(DeviceState::Revoked),
            _ => None,
        }
    }

    /// A state as a store keeps it; anything else is corrupt.
    pub(crate) fn stored(s: &str) -> Result<Self> {
        Self::parse(s).ok_or_else(|| corrupt(format!("device state {s:?}")))
    }
}

/// A hash (credential, enrollment token) as a store keeps it: 32 bytes
/// or none; any other length is corrupt.
pub(crate) fn stored_hash(bytes: Option<Vec<u8>>) -> Result<Option<[u8; 32]>> {
    bytes
        .map(|b| <[u8; 32]>::try_from(b.as_slice()).map_err(|_| corrupt("hash is not 32 bytes")))
        .transpose()
}

/// Tags or declared signals as a store keeps them: JSON.
pub(crate) fn map_json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).expect("JSON of a string map")
}

/// A device as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Device {
    /// Its id (also its MQTT client id and username).
    pub id: DeviceId,
    /// The site it belongs to.
    pub site: SiteId,
    /// Free-form tags, e.g. `line = "2"`, used to select rollout targets.
    pub tags: BTreeMap<String, String>,
    /// Version of the model it runs, as last reported.
    pub model_version: Option<String>,
    /// Firmware or agent version, as last reported.
    pub firmware_version: Option<String>,
    /// Identity lifecycle.
    pub state: DeviceState,
    /// Whether it is connected now.
    pub online: bool,
    /// When it was last heard from, ns.
    pub last_seen_ns: Option<i64>,
    /// When it was registered, ns.
    pub created_ns: i64,
    /// When it was revoked, ns.
    pub revoked_ns: Option<i64>,
    /// Declared signals (name to unit); when not empty, other signals are refused.
    pub signals: BTreeMap<String, String>,
}

/// A device to register.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Its id.
    pub id: DeviceId,
    /// Its site.
    pub site: SiteId,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Declared signals (name to unit); empty accepts any signal.
    pub signals: BTreeMap<String, String>,
    /// SHA-256 of the one-time enrollment token.
    pub token_sha256: [u8; 32],
    /// When the token expires, ns.
    pub token_expires_ns: i64,
    /// Now, ns.
    pub created_ns: i64,
}

/// Changes to a device's descriptive fields; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceUpdate {
    /// New tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// New model version.
    pub model_version: Option<String>,
    /// New firmware version.
    pub firmware_version: Option<String>,
    /// New declared signals.
    pub signals: Option<BTreeMap<String, String>>,
}

/// A device's credential hash and state, for the authentication cache.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceCredential {
    /// The device.
    pub device: DeviceId,
    /// Its state.
    pub state: DeviceState,
    /// SHA-256 of its credential, once enrolled.
    pub credential_sha256: Option<[u8; 32]>,
    /// Declared signals.
    pub signals: BTreeMap<String, String>,
}

/// The result of an enrollment attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// Enrolled; the credential is stored.
    Enrolled,
    /// No such device.
    UnknownDevice,
    /// The device is already enrolled or revoked.
    NotPending,
    /// The token does not match.
    BadToken,
    /// The token expired.
    Expired,
}

/// Compares two hashes in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl EnrollOutcome {
    /// What presenting the token hashed `presented` at `now_ns` comes to,
    /// for a device in `state` holding the token `token` until
    /// `expires_ns`: [`EnrollOutcome::Enrolled`] when it may enroll.
    pub(crate) fn judge(
        state: DeviceState,
        token: Option<[u8; 32]>,
        expires_ns: Option<i64>,
        presented: &[u8; 32],
        now_ns: i64,
    ) -> EnrollOutcome {
        if state != DeviceState::Pending {
            return EnrollOutcome::NotPending;
        }
        match token {
            Some(token) if constant_time_eq(&token, presented) => {}
            _ => return EnrollOutcome::BadToken,
        }
        if expires_ns.is_some_and(|e| e < now_ns) {
            return EnrollOutcome::Expired;
        }
        EnrollOutcome::Enrolled
    }
}
