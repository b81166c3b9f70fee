//! Strata's storage: the traits the hub writes and reads through, and the
//! embedded SQLite backend that needs no setup.
//!
//! Ingest only ever talks to [`TelemetryStore`] and the registry to
//! [`RegistryStore`], so another engine (PostgreSQL at scale) is one more
//! implementation of these traits, not a change to ingest.
//!
//! Readings are kept as compressed packed batches ([`blob`], [`chunk`]),
//! and a commit stores each stream's batches as one row ([`block`]) with
//! the exactly-once ledger beside them ([`seqset`]), rather than a row per
//! reading or per batch: that is what lets one SQLite file take millions of
//! readings a second.

pub mod access;
pub mod alerts;
pub mod audit;
mod bits;
pub mod blob;
pub mod block;
pub mod campaigns;
pub mod certs;
pub mod chunk;
pub mod commands;
pub mod control;
pub mod drift;
mod error;
pub mod jobs;
pub mod labels;
pub mod model;
pub mod models;
#[cfg(feature = "postgres")]
pub mod postgres;
mod range;
pub mod releases;
pub mod retrain;
pub mod segment;
pub mod seqset;
pub mod sqlite;
pub mod twin;

pub use access::{AccessStore, ApiToken, User, UserChange};
pub use alerts::{
    AlertEvent, AlertFilter, AlertStore, Delivery, NewDelivery, StoredAlert, StoredRun,
};
pub use audit::{AuditCheckpoint, AuditEntry, AuditStore, ReplicaLog};
pub use blob::EncodedBatch;
pub use campaigns::{Campaign, CampaignDevice, CampaignLock, CampaignStore};
pub use certs::{CertificateStore, DeviceCertificate};
pub use commands::{CommandLog, RelayedCommand};
pub use control::{ActionFilter, ControlStore, StoredAction};
pub use drift::{DriftStore, StoredSketches};
pub use error::{Error, Result};
pub use jobs::{Job, JobClaim, JobLogLine, JobState, MAX_JOB_ATTEMPTS};
pub use labels::{Label, LabelStore};
pub use model::*;
pub use models::{Lineage, ModelInfo, ModelOutputInfo, ModelVersion};
pub use releases::ReleaseRecord;
pub use retrain::{RetrainStore, StoredCycle};
pub use sqlite::{Durability, SqliteStore};
pub use twin::Twin;

use strata_proto::{DeviceId, SiteId, TelemetryBatch};

/// Where telemetry goes and comes back from.
///
/// Writes are synchronous and durable when they return (or, through
/// `write_batches_unsynced`, once `sync` returns): the ingest path calls them
/// from dedicated threads and acknowledges MQTT only afterwards.
pub trait TelemetryStore: Send + Sync + 'static {
    /// Stores `batches` in one transaction. Each batch is stored at most once
    /// per (device, stream, seq): the result says, batch by batch, whether it
    /// was new or a duplicate of one already stored.
    fn write_batches(&self, batches: &[BatchWrite]) -> Result<Vec<WriteOutcome>>;

    /// Like [`TelemetryStore::write_batches`], but may return before the
    /// transaction is on stable storage; [`TelemetryStore::sync`] with the
    /// commit number returned makes it so. A writer can then start its next
    /// transaction while the last one syncs. Stores that are durable on
    /// commit need not override either.
    fn write_batches_unsynced(&self, batches: &[BatchWrite]) -> Result<(Vec<WriteOutcome>, u64)> {
        Ok((self.write_batches(batches)?, 0))
    }

    /// Returns once every write up to `commit` (a number from
    /// [`TelemetryStore::write_batches_unsynced`]) is durable.
    fn sync(&self, commit: u64) -> Result<()> {
        let _ = commit;
        Ok(())
    }

    /// The series (device, signal) known, optionally for one device only.
    fn series(&self, device: Option<&DeviceId>) -> Result<Vec<SeriesInfo>>;

    /// The most recent reading of every signal of `device`.
    fn latest(&self, device: &DeviceId) -> Result<Vec<LatestReading>> {
        Ok(self
            .series(Some(device))?
            .into_iter()
            .filter_map(|s| s.latest)
            .collect())
    }

    /// Readings of one signal in `[from_ns, to_ns]`, raw or downsampled.
    fn range(&self, query: &RangeQuery) -> Result<RangeResult>;

    /// How many batches are stored for `device` (all devices when `None`).
    fn batch_count(&self, device: Option<&DeviceId>) -> Result<u64>;

    /// Retention: deletes the telemetry whose newest reading is older than
    /// `before_ns`, in whole blocks (a block reaching past `before_ns` stays
    /// whole), and frees the space it took. Latest values and the
    /// exactly-once ledger stay: a batch sent again after its readings
    /// expired is still recognised as a duplicate.
    fn expire(&self, before_ns: i64) -> Result<Expired>;

    /// Retention by size: deletes the oldest telemetry, a segment file at a
    /// time, until the files take at most `max_bytes` (the newest stays,
    /// whatever its size). Latest values and the ledger stay, as with
    /// [`TelemetryStore::expire`].
    fn shrink_to(&self, max_bytes: u64) -> Result<Expired>;

    /// Replays the stored batches of `device` that overlap `[from_ns,
    /// to_ns]` (of one stream, or all), decoded, in order of their first
    /// reading: what a backtest or a training dataset is built from.
    fn replay(
        &self,
        device: &DeviceId,
        stream: Option<&str>,
        from_ns: i64,
        to_ns: i64,
        each: &mut dyn FnMut(TelemetryBatch) -> Result<()>,
    ) -> Result<()>;
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
    /// Records devices going online or offline, in order, in one
    /// transaction, and keeps each change in the presence history.
    fn set_presence(&self, changes: &[(DeviceId, bool, i64)]) -> Result<()>;
    /// The presence changes in `[from_ns, to_ns]` and the last one before
    /// each device's first (the state the window opens in), by device then
    /// time: (device, time, online).
    fn presence_log(&self, from_ns: i64, to_ns: i64) -> Result<Vec<(DeviceId, i64, bool)>>;
    /// Deletes the presence changes before `before_ns` but each device's
    /// last one before it (its state from then on, which uptime over a
    /// later window starts from); returns how many.
    fn forget_presence(&self, before_ns: i64) -> Result<u64>;
    /// Records that devices were heard from (batched by the caller).
    fn touch(&self, seen: &[(DeviceId, i64)]) -> Result<()>;
    /// For a registry other hubs write too: a count that moves with every
    /// change to a device's state, credential or declared signals, so a
    /// hub knows when to reload its authentication cache. `None`: only this
    /// hub writes the registry, so its cache is always current.
    fn changes(&self) -> Result<Option<i64>> {
        Ok(None)
    }
}

/// The model registry: models, versions and aliases.
pub trait ModelStore: Send + Sync + 'static {
    /// Registers a version of `v.model` (creating the model if new) and
    /// returns its number: one more than the newest so far. `v.version` is
    /// ignored.
    fn add_model_version(&self, v: &ModelVersion) -> Result<u32>;
    /// All models.
    fn models(&self) -> Result<Vec<ModelInfo>>;
    /// One model.
    fn model(&self, name: &str) -> Result<Option<ModelInfo>>;
    /// The versions of a model, oldest first.
    fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>>;
    /// One version.
    fn model_version(&self, name: &str, version: u32) -> Result<Option<ModelVersion>>;
    /// Points `alias` at `version` (which must exist); returns the version
    /// it pointed at before.
    fn set_alias(&self, name: &str, alias: &str, version: u32, now_ns: i64) -> Result<Option<u32>>;
    /// Points `alias` at `to` only if it points at `from` now (`None`: the
    /// model has no such alias yet), in one step; false when it points
    /// elsewhere (or `to` is no version of the model), and then nothing
    /// changes. For a change decided on what the alias was, which must not
    /// undo a move made meanwhile.
    fn move_alias(
        &self,
        name: &str,
        alias: &str,
        from: Option<u32>,
        to: u32,
        now_ns: i64,
    ) -> Result<bool>;
    /// Removes an alias; false when there was none.
    fn remove_alias(&self, name: &str, alias: &str) -> Result<bool>;
}

/// Long-running jobs, durable across restarts.
pub trait JobStore: Send + Sync + 'static {
    /// Queues a job; returns its id.
    fn create_job(&self, kind: &str, spec: &serde_json::Value, now_ns: i64) -> Result<i64>;
    /// The newest jobs first, at most `limit`.
    fn jobs(&self, limit: usize) -> Result<Vec<Job>>;
    /// One job.
    fn job(&self, id: i64) -> Result<Option<Job>>;
    /// Takes the oldest queued job, marking it running.
    fn claim_job(&self, now_ns: i64) -> Result<Option<Job>>;
    /// Records progress (0..=1) and a status line of a running job, and
    /// appends the line to its log, if the job is still `claim`'s; returns
    /// whether it was (see [`JobClaim`]).
    fn job_progress(&self, claim: JobClaim, progress: f64, line: &str, now_ns: i64)
    -> Result<bool>;
    /// Ends a job, if it is still `claim`'s; returns whether it was (else
    /// nothing is recorded).
    fn finish_job(
        &self,
        claim: JobClaim,
        state: JobState,
        message: &str,
        result: Option<&serde_json::Value>,
        now_ns: i64,
    ) -> Result<bool>;
    /// Cancels a job that has not ended, at `now_ns`, with `reason` as its
    /// message and last log line: a queued job never starts; a running
    /// one's worker finds its writes refused (as for a claim taken back)
    /// and stops. A job past [`JobStore::begin_commit`] is not cancelled.
    /// Returns the job as it is now (unchanged when it was not
    /// cancelled), `None` when there is no such job.
    fn cancel_job(&self, id: i64, reason: &str, now_ns: i64) -> Result<Option<Job>>;
    /// The claim's run is about to record its result beyond the job
    /// (register a model version): from now on the job cannot be
    /// cancelled. Returns whether the job is still the claim's (else it
    /// was cancelled or taken back, and must record nothing).
    fn begin_commit(&self, claim: JobClaim) -> Result<bool>;
    /// A job's log, oldest line first.
    fn job_log(&self, id: i64) -> Result<Vec<JobLogLine>>;
    /// Puts jobs left running by a previous process back in the queue;
    /// returns how many. One cut short [`MAX_JOB_ATTEMPTS`] times (this
    /// one included) fails instead, at `now_ns`. A store other processes share cannot tell
    /// theirs from its own here: it relies on
    /// [`JobStore::requeue_abandoned_jobs`].
    fn requeue_running_jobs(&self, now_ns: i64) -> Result<u64>;
    /// A worker still runs its claim of a job (every few seconds while it
    /// does): in a store processes share, what tells a running job from
    /// one whose worker is gone. Returns whether the job is still the
    /// claim's.
    fn job_alive(&self, claim: JobClaim, now_ns: i64) -> Result<bool>;
    /// Puts a running job back in the queue, if it is still `claim`'s,
    /// without counting it as cut short: its hub stops cleanly. Whatever
    /// the old run still records afterwards is refused (the next run is
    /// another attempt). Returns whether it was the claim's.
    fn release_job(&self, claim: JobClaim) -> Result<bool>;
    /// Puts back in the queue the running jobs whose worker has not said
    /// it is alive for a while (another process that stopped, in a store
    /// processes share); returns how many. One cut short
    /// [`MAX_JOB_ATTEMPTS`] times fails instead.
    fn requeue_abandoned_jobs(&self, _now_ns: i64) -> Result<u64> {
        Ok(0)
    }
}

/// An edit of one key of a desired twin: its value now (null when absent)
/// in, the new value out ([`TwinStore::edit_desired`]).
pub type DesiredEdit<'a> = dyn FnMut(&serde_json::Value) -> Result<serde_json::Value> + Send + 'a;

/// Device twins.
pub trait TwinStore: Send + Sync + 'static {
    /// Which store numbered the desired versions: made once, when the
    /// store was created. A device compares two twins' versions only
    /// within one epoch, so a store started afresh (versions from 1
    /// again) is not taken for an old one.
    fn twin_epoch(&self) -> Result<String>;
    /// Makes the epoch anew (after the store was restored from a backup,
    /// its versions numbered below what devices applied); returns it.
    fn renew_twin_epoch(&self) -> Result<String>;
    /// A device's twin (empty documents when nothing was set).
    fn twin(&self, device: &DeviceId) -> Result<Twin>;
    /// Changes one top-level key of the desired document and bumps its
    /// version; returns the new twin. `edit` gets the key's value (null
    /// when absent) and returns the new one. The read and the write are
    /// one transaction, and edits of one device's twin wait for one
    /// another (on every hub sharing the store), so two edits of the same
    /// key, say two models deployed at once, never lose one of them.
    fn edit_desired(
        &self,
        device: &DeviceId,
        key: &str,
        now_ns: i64,
        edit: &mut DesiredEdit<'_>,
    ) -> Result<Twin>;
    /// Sets one top-level key of the desired document and bumps its
    /// version; returns the new twin.
    fn set_desired(
        &self,
        device: &DeviceId,
        key: &str,
        value: &serde_json::Value,
        now_ns: i64,
    ) -> Result<Twin> {
        self.edit_desired(device, key, now_ns, &mut |_| Ok(value.clone()))
    }
    /// Every twin with a desired document (desired version above 0), in
    /// one read: what the hub publishes again when it starts.
    fn desired_twins(&self) -> Result<Vec<Twin>>;
    /// Where the log of desired changes stands, in a store that other
    /// hubs change too (`None`: only this hub changes it, so there is
    /// nothing to follow). A replica reads it before it first publishes
    /// every desired twin, then follows with [`TwinStore::desired_after`].
    fn desired_position(&self) -> Result<Option<i64>> {
        Ok(None)
    }
    /// The twins whose desired document changed after `position` (at
    /// most `limit`, oldest change first), with the position they bring
    /// the reader to.
    fn desired_after(&self, position: i64, limit: usize) -> Result<(Vec<Twin>, i64)> {
        let _ = limit;
        Ok((Vec::new(), position))
    }
    /// Stores what the device reported.
    fn set_reported(
        &self,
        device: &DeviceId,
        reported: &serde_json::Value,
        now_ns: i64,
    ) -> Result<()>;
}

/// Signed OTA releases the hub accepted.
pub trait ReleaseStore: Send + Sync + 'static {
    /// Stores a release; fails with `Conflict` if its (kind, name, version)
    /// exists.
    fn add_release(&self, release: &ReleaseRecord) -> Result<()>;
    /// Releases, newest first, optionally of one kind and name.
    fn releases(&self, kind: Option<&str>, name: Option<&str>) -> Result<Vec<ReleaseRecord>>;
    /// The highest version of (kind, name), if any.
    fn latest_release_version(&self, kind: &str, name: &str) -> Result<Option<u64>>;
}
