//! Strata's storage: the traits the hub writes and reads through, and the
//! embedded SQLite backend that needs no setup.
//!
//! Ingest only ever talks to [`TelemetryStore`] and the registry to
//! [`RegistryStore`], so another engine (PostgreSQL at scale) is one more
//! implementation of these traits, not a change to ingest.
//!
//! Readings are kept as one packed blob per batch (see [`blob`] and
//! [`chunk`]) rather than one row per reading: a batch of 100 readings costs
//! one row, which is what lets one SQLite file take millions of readings a
//! second.

pub mod blob;
pub mod chunk;
mod error;
pub mod model;
pub mod sqlite;

pub use blob::EncodedBatch;
pub use error::{Error, Result};
pub use model::*;
pub use sqlite::{Durability, SqliteStore};

use strata_proto::{DeviceId, SiteId};

/// Where telemetry goes and comes back from.
///
/// Writes are synchronous and durable when they return: the ingest path calls
/// them from a dedicated writer thread and acknowledges MQTT only afterwards.
pub trait TelemetryStore: Send + Sync + 'static {
    /// Stores `batches` in one transaction. Each batch is stored at most once
    /// per (device, stream, seq): the result says, batch by batch, whether it
    /// was new or a duplicate of one already stored.
    fn write_batches(&self, batches: &[BatchWrite]) -> Result<Vec<WriteOutcome>>;

    /// The series (device, signal) known, optionally for one device only.
    fn series(&self, device: Option<&DeviceId>) -> Result<Vec<SeriesInfo>>;

    /// The most recent reading of every signal of `device`.
    fn latest(&self, device: &DeviceId) -> Result<Vec<LatestReading>>;

    /// Readings of one signal in `[from_ns, to_ns]`, raw or downsampled.
    fn range(&self, query: &RangeQuery) -> Result<RangeResult>;

    /// How many batches are stored for `device` (all devices when `None`).
    fn batch_count(&self, device: Option<&DeviceId>) -> Result<u64>;
}

/// Sites, devices and their credentials.
pub trait RegistryStore: Send + Sync + 'static {
    /// Creates a site; fails if the id exists.
    fn create_site(&self, site: &Site) -> Result<()>;
    /// All sites.
    fn sites(&self) -> Result<Vec<Site>>;
    /// One site.
    fn site(&self, id: &SiteId) -> Result<Option<Site>>;
    /// Creates a device in state `pending`, with the hash of its enrollment
    /// token; fails if the id exists or the site does not.
    fn create_device(&self, device: &NewDevice) -> Result<()>;
    /// All devices, optionally of one site.
    fn devices(&self, site: Option<&SiteId>) -> Result<Vec<Device>>;
    /// One device.
    fn device(&self, id: &DeviceId) -> Result<Option<Device>>;
    /// All device credentials, to fill the broker's authentication cache.
    fn credentials(&self) -> Result<Vec<DeviceCredential>>;
    /// Trades a valid enrollment token for a credential: if the device is
    /// pending and `token_sha256` matches an unexpired token, stores
    /// `credential_sha256`, clears the token and makes the device active.
    fn enroll(
        &self,
        id: &DeviceId,
        token_sha256: &[u8; 32],
        credential_sha256: &[u8; 32],
        now_ns: i64,
    ) -> Result<EnrollOutcome>;
    /// Replaces a pending device's enrollment token (e.g. the first expired).
    fn reissue_token(
        &self,
        id: &DeviceId,
        token_sha256: &[u8; 32],
        expires_ns: i64,
    ) -> Result<bool>;
    /// Revokes a device: its credential stops working for good.
    fn revoke(&self, id: &DeviceId, now_ns: i64) -> Result<bool>;
    /// Updates tags and versions of a device.
    fn update_device(&self, id: &DeviceId, update: &DeviceUpdate) -> Result<bool>;
    /// Records devices going online or offline, in order, in one transaction.
    fn set_presence(&self, changes: &[(DeviceId, bool, i64)]) -> Result<()>;
    /// Records that devices were heard from (batched by the caller).
    fn touch(&self, seen: &[(DeviceId, i64)]) -> Result<()>;
}
