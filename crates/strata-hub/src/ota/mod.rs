//! Over-the-air updates at the hub (`docs/design/ota.md`): the intake of
//! signed releases, the hub's own rollout key, and rollout campaigns
//! ([`campaign`] decides, [`rollout`] carries them out).
//!
//! A release is accepted only if a release key this hub trusts (from its
//! config; the secret halves stay offline) signed it, it has not expired,
//! its artifact is in the artifact store with exactly the signed size and
//! hash, and its version is above every earlier release of its kind and
//! name. Every refusal says why, and is counted by reason.

pub mod campaign;
pub mod rollout;

use std::path::PathBuf;
use std::sync::Arc;

use strata_ota::{ArtifactCheck, DocumentType, Envelope, KeyPair, PublicKey, Refusal, Release};
use strata_store::{ReleaseRecord, ReleaseStore};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::models::ArtifactStore;

/// File in the data directory holding the hub's rollout key (PKCS#8).
pub const ROLLOUT_KEY_FILE: &str = "rollout.key";

/// Where the rollout key is.
#[derive(Debug, Clone, PartialEq)]
pub enum RolloutKey {
    /// The hub's own, made at this path on first start.
    Own(PathBuf),
    /// One given to the hub (`[ota] rollout_key_file`), which must exist.
    Given(PathBuf),
}

/// The hub's OTA side.
pub struct Ota {
    store: Arc<dyn ReleaseStore>,
    artifacts: ArtifactStore,
    release_keys: Vec<PublicKey>,
    rollout_key: KeyPair,
    metrics: Arc<Metrics>,
}

impl Ota {
    /// Loads the rollout key (making the hub's own on first start) and the
    /// trusted release keys from the config.
    pub fn open(
        store: Arc<dyn ReleaseStore>,
        artifacts: ArtifactStore,
        rollout_key: &RolloutKey,
        release_keys: &[String],
        metrics: Arc<Metrics>,
    ) -> Result<Ota> {
        let release_keys = release_keys
            .iter()
            .map(|k| PublicKey::from_hex(k))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::BadRequest(format!("[ota] release_keys: {e}")))?;
        let rollout_key = load_rollout_key(rollout_key)?;
        // The hub holds its rollout key: trusted to sign releases too, a
        // stolen hub could sign a release of anything.
        if release_keys.contains(&rollout_key.public()) {
            return Err(Error::BadRequest(format!(
                "[ota] release_keys names the hub's own rollout key ({}): releases must be signed by a key the hub does not hold",
                rollout_key.public().to_hex()
            )));
        }
        Ok(Ota {
            store,
            artifacts,
            release_keys,
            rollout_key,
            metrics,
        })
    }

    /// The release keys trusted, and the rollout key's public half: what an
    /// agent is configured to trust.
    pub fn trust(&self) -> (Vec<PublicKey>, PublicKey) {
        (self.release_keys.clone(), self.rollout_key.public())
    }

    /// Checks and stores a signed release.
    pub fn accept(&self, envelope: &Envelope) -> Result<ReleaseRecord> {
        let checked = self.check(envelope);
        if let Err(e) = &checked {
            let reason = match e {
                Error::Refused(r) => r.code(),
                other => other.code(),
            };
            self.metrics.ota_refusal(reason);
            tracing::warn!(reason, "release refused: {e}");
        }
        let (release, record) = checked?;
        self.store.add_release(&record)?;
        tracing::info!(
            kind = release.kind.as_str(),
            name = release.name,
            version = release.version,
            "release accepted"
        );
        Ok(record)
    }

    fn check(&self, envelope: &Envelope) -> Result<(Release, ReleaseRecord)> {
        let release: Release = envelope.open(DocumentType::Release, &self.release_keys)?;
        let now = crate::now_ns();
        if now >= release.expires_ns {
            return Err(Refusal::Expired {
                document: "release",
                expired_ns: release.expires_ns,
                now_ns: now,
            }
            .into());
        }
        let kind = release.kind.as_str();
        if release.min_version.is_some_and(|m| m > release.version) {
            return Err(Refusal::Malformed {
                what: "release",
                detail: format!(
                    "its min_version {} is above its version {}",
                    release.min_version.unwrap_or_default(),
                    release.version
                ),
            }
            .into());
        }
        if let Some(latest) = self.store.latest_release_version(kind, &release.name)?
            && release.version <= latest
        {
            return Err(Refusal::Rollback {
                kind: kind.into(),
                name: release.name.clone(),
                offered: release.version,
                floor: latest + 1,
            }
            .into());
        }
        if !crate::models::artifacts::is_sha256_hex(&release.artifact.sha256) {
            return Err(Error::BadRequest(format!(
                "the release's artifact sha256 {:?} is not 64 lowercase hex digits",
                release.artifact.sha256
            )));
        }
        let bytes = match self.artifacts.get_named(&release.artifact.sha256) {
            Ok(bytes) => bytes,
            Err(Error::NotFound(_)) => {
                return Err(Error::BadRequest(format!(
                    "artifact {} is not uploaded; POST it to /api/v1/artifacts first",
                    release.artifact.sha256
                )));
            }
            Err(e) => return Err(e),
        };
        ArtifactCheck::whole(&release.artifact, &bytes)?;
        let record = ReleaseRecord {
            kind: kind.into(),
            name: release.name.clone(),
            version: release.version,
            digest: envelope.digest(),
            key_id: envelope.key_id.clone(),
            sha256: release.artifact.sha256.clone(),
            size: release.artifact.size,
            expires_ns: release.expires_ns,
            accepted_ns: now,
            envelope: serde_json::to_string(envelope).expect("JSON of an envelope"),
        };
        Ok((release, record))
    }

    /// Signs, for each device, an assignment of the release (kind, name,
    /// version) valid for `lifetime_ns`.
    pub fn assign(
        &self,
        kind: &str,
        name: &str,
        version: u64,
        devices: &[strata_proto::DeviceId],
        campaign: &str,
        lifetime_ns: i64,
    ) -> Result<Vec<(strata_proto::DeviceId, strata_ota::SignedUpdate)>> {
        let (record, release, r) = self.stored(kind, name, version)?;
        let now = crate::now_ns();
        Ok(devices
            .iter()
            .map(|d| {
                let assignment = strata_ota::Assignment {
                    device: d.to_string(),
                    release_digest: record.digest.clone(),
                    kind: r.kind,
                    name: r.name.clone(),
                    version: r.version,
                    campaign: campaign.to_owned(),
                    issued_ns: now,
                    expires_ns: now.saturating_add(lifetime_ns),
                };
                let signed = strata_ota::SignedUpdate {
                    assignment: Envelope::sign(
                        DocumentType::Assignment,
                        &assignment,
                        &self.rollout_key,
                    ),
                    release: release.clone(),
                };
                (d.clone(), signed)
            })
            .collect())
    }

    /// An accepted release.
    pub fn release(&self, kind: &str, name: &str, version: u64) -> Result<Release> {
        Ok(self.stored(kind, name, version)?.2)
    }

    /// An accepted release: its record, its envelope and what it says.
    fn stored(
        &self,
        kind: &str,
        name: &str,
        version: u64,
    ) -> Result<(ReleaseRecord, Envelope, Release)> {
        let record = self
            .store
            .releases(Some(kind), Some(name))?
            .into_iter()
            .find(|r| r.version == version)
            .ok_or_else(|| {
                Error::NotFound(format!("no release {kind} {name} version {version}"))
            })?;
        let damaged =
            |e: serde_json::Error| Error::Conflict(format!("stored release is damaged: {e}"));
        let envelope: Envelope = serde_json::from_str(&record.envelope).map_err(damaged)?;
        let release: Release = serde_json::from_str(&envelope.payload).map_err(damaged)?;
        Ok((record, envelope, release))
    }

    /// Accepted releases, newest first.
    pub fn releases(&self, kind: Option<&str>, name: Option<&str>) -> Result<Vec<ReleaseRecord>> {
        Ok(self.store.releases(kind, name)?)
    }
}

/// Reads the rollout key, making the hub's own (readable by the hub only)
/// on first start.
fn load_rollout_key(place: &RolloutKey) -> Result<KeyPair> {
    let (RolloutKey::Own(path) | RolloutKey::Given(path)) = place;
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        Error::Unavailable(format!("{what} {}: {e}", path.display()))
    };
    match std::fs::read(path) {
        Ok(bytes) => KeyPair::from_pkcs8(&bytes).map_err(|e| unavailable("cannot use", &e)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && matches!(place, RolloutKey::Given(_)) =>
        {
            Err(unavailable(
                "[ota] rollout_key_file: cannot read",
                &format!(
                    "{e} (make the key once with `strata release keygen FILE` and give every \
                     replica the same file)"
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (key, pkcs8) = KeyPair::generate().map_err(|e| unavailable("cannot make", &e))?;
            crate::write_private(path, &pkcs8).map_err(|e| unavailable("cannot write", &e))?;
            tracing::info!(path = %path.display(), key_id = key.public().key_id(), "created the rollout key");
            Ok(key)
        }
        Err(e) => Err(unavailable("cannot read", &e)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use strata_store::{Durability, SqliteStore};

    use super::*;

    /// The hub's OTA side over `data_dir`, its rollout key at `key`.
    fn open(data_dir: &Path, key: &RolloutKey) -> Result<Ota> {
        let store = Arc::new(SqliteStore::open(data_dir, Durability::Process).unwrap());
        let artifacts = ArtifactStore::open(data_dir).unwrap();
        Ota::open(store, artifacts, key, &[], Arc::new(Metrics::default()))
    }

    fn rollout_key_id(ota: &Ota) -> String {
        ota.trust().1.key_id()
    }

    #[test]
    fn replicas_given_one_rollout_key_file_sign_with_one_key_and_a_missing_one_stops_the_hub() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        // Each hub's own key: made on first start, kept after.
        let own_a = RolloutKey::Own(a.join(ROLLOUT_KEY_FILE));
        let first = rollout_key_id(&open(&a, &own_a).unwrap());
        assert_eq!(rollout_key_id(&open(&a, &own_a).unwrap()), first);
        let own_b = RolloutKey::Own(b.join(ROLLOUT_KEY_FILE));
        assert_ne!(rollout_key_id(&open(&b, &own_b).unwrap()), first);

        // One file given to both: one key, and neither made another.
        let shared = dir.path().join("rollout-shared.key");
        let given = RolloutKey::Given(shared.clone());
        let err = open(&a, &given)
            .err()
            .expect("a missing key file stops the hub");
        assert!(err.to_string().contains("strata release keygen"), "{err}");
        assert!(!shared.exists());
        let (key, pkcs8) = KeyPair::generate().unwrap();
        crate::write_private(&shared, &pkcs8).unwrap();
        let id = key.public().key_id();
        assert_eq!(rollout_key_id(&open(&a, &given).unwrap()), id);
        assert_eq!(rollout_key_id(&open(&b, &given).unwrap()), id);

        // Its own rollout key as a release key: refused.
        let store = Arc::new(SqliteStore::open(&a, Durability::Process).unwrap());
        let own = key.public().to_hex();
        let err = Ota::open(
            store,
            ArtifactStore::open(&a).unwrap(),
            &given,
            &[own],
            Arc::new(Metrics::default()),
        )
        .err()
        .expect("the rollout key as a release key stops the hub");
        assert!(err.to_string().contains("rollout key"), "{err}");
    }
}
