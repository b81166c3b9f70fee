//! The device registry: sites, devices, enrollment and revocation, and the
//! in-memory identity cache the broker authenticates against.
//!
//! The cache is filled from storage at start and updated on every change,
//! so an MQTT CONNECT costs a hash and a map lookup, never a query.
//! Revocation updates storage, then the cache, then kicks the live session:
//! from that moment the device can neither publish nor reconnect.
//!
//! A registry that several hub replicas share (`[shared] postgres`)
//! changes behind this hub's back too: every `refresh_ms` the hub asks the
//! store whether anything changed ([`RegistryStore::changes`]), reloads
//! the cache if so, and closes the sessions of devices revoked elsewhere
//! ([`Registry::refresh`], called by [`crate::shared`]). A reload and a
//! change made here take turns, so a reload never puts back a state the
//! change replaced. Presence and
//! last-seen times for a shared registry are written from a thread of
//! their own (`recorder.rs`), never the storage writer's.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use serde::{Deserialize, Serialize};
use strata_proto::{DeviceId, SiteId};
use strata_store::{
    Device, DeviceState, DeviceUpdate, EnrollOutcome, NewDevice, RegistryStore, Site,
};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::shared::Freshness;
use crate::{now_ns, secret};

mod recorder;

/// What the broker needs to know about a device.
#[derive(Debug, Clone)]
struct Identity {
    state: DeviceState,
    credential_sha256: Option<[u8; 32]>,
    signals: Arc<BTreeMap<String, String>>,
}

/// The outcome of checking a device's MQTT credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialCheck {
    /// Known, active, right credential.
    Valid,
    /// No such device.
    Unknown,
    /// Revoked.
    Revoked,
    /// Registered but not enrolled yet, or the credential is wrong.
    Invalid,
}

/// A request to register a device.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    /// The device id: letters, digits, '.', '_' and '-', at most 64.
    #[schema(value_type = String)]
    pub id: DeviceId,
    /// The site it belongs to.
    #[schema(value_type = String)]
    pub site: SiteId,
    /// Tags for selecting rollout targets.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Declared signals (name to unit). When given, other signals are refused.
    #[serde(default)]
    pub signals: BTreeMap<String, String>,
}

/// A registered device and its one-time enrollment token (shown once).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedDevice {
    /// The device.
    pub device: Device,
    /// One-time token the device trades for its credential at `/api/v1/enroll`.
    pub enrollment_token: String,
    /// When the token expires, ns since the Unix epoch.
    pub token_expires_ns: i64,
}

/// A site to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    /// The site id.
    #[schema(value_type = String)]
    pub id: SiteId,
    /// Human name; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// Region the site is in (recorded and shown; not yet enforced).
    pub region: String,
}

/// A device's state as ingest needs it, as of a registry generation.
#[derive(Debug, Clone, Default)]
pub struct DeviceSnapshot {
    /// [`Registry::generation`] when it was taken.
    pub generation: u64,
    /// Whether the device may send data.
    pub active: bool,
    /// The signals it declared (empty: any).
    pub signals: Arc<BTreeMap<String, String>>,
}

/// Write access to the registry's cache; counts a change when it ends,
/// still holding the lock, so a reader that sees the new count sees the
/// change.
struct CacheWrite<'a> {
    guard: std::sync::RwLockWriteGuard<'a, HashMap<DeviceId, Identity>>,
    generation: &'a AtomicU64,
}

impl std::ops::Deref for CacheWrite<'_> {
    type Target = HashMap<DeviceId, Identity>;
    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl std::ops::DerefMut for CacheWrite<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
    }
}

impl Drop for CacheWrite<'_> {
    fn drop(&mut self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// The registry.
pub struct Registry {
    store: Arc<dyn RegistryStore>,
    cache: RwLock<HashMap<DeviceId, Identity>>,
    /// Counts changes of `cache`, so that a connection can keep what it
    /// looked up about its device until the next change ([`Registry::snapshot`]).
    generation: AtomicU64,
    /// SHA-256 of each valid certificate the CA issued -> (device, not after ns).
    certificates: RwLock<HashMap<[u8; 32], (DeviceId, i64)>>,
    token_ttl_ns: i64,
    broker: OnceLock<strata_broker::BrokerHandle>,
    /// Writes presence off the storage writer's thread (shared registries only).
    recorder: Option<recorder::Recorder>,
    /// The store's change count the cache holds, and the turn changes
    /// made here and reloads take.
    freshness: Freshness,
}

/// Every device's identity, as the store has it now.
fn identities(store: &dyn RegistryStore) -> Result<HashMap<DeviceId, Identity>> {
    Ok(store
        .credentials()?
        .into_iter()
        .map(|c| {
            let identity = Identity {
                state: c.state,
                credential_sha256: c.credential_sha256,
                signals: Arc::new(c.signals),
            };
            (c.device, identity)
        })
        .collect())
}

impl Registry {
    /// Loads the registry from storage.
    pub fn load(store: Arc<dyn RegistryStore>, token_ttl_s: u64) -> Result<Self> {
        // The count first: a change after it makes the next refresh reload.
        let changes = store.changes()?;
        let cache = identities(&*store)?;
        Ok(Registry {
            recorder: changes.map(|_| recorder::Recorder::start(store.clone())),
            store,
            cache: RwLock::new(cache),
            freshness: Freshness::new(changes),
            generation: AtomicU64::new(0),
            certificates: RwLock::new(HashMap::new()),
            token_ttl_ns: i64::try_from(token_ttl_s)
                .unwrap_or(i64::MAX / 2)
                .saturating_mul(1_000_000_000),
            broker: OnceLock::new(),
        })
    }

    /// For a registry other replicas share: reloads the cache if the store
    /// changed since it was last loaded, and closes the live sessions of
    /// devices no longer active. Returns whether it reloaded.
    pub fn refresh(&self) -> Result<bool> {
        let _turn = self.freshness.turn();
        let Some(changes) = self.freshness.moved(self.store.changes()?) else {
            return Ok(false);
        };
        let fresh = identities(&*self.store)?;
        let cut_off: Vec<DeviceId> = {
            let mut cache = self.cache_write();
            let cut_off = fresh
                .iter()
                .filter(|(id, now)| {
                    now.state != DeviceState::Active
                        && cache
                            .get(*id)
                            .is_some_and(|before| before.state == DeviceState::Active)
                })
                .map(|(id, _)| id.clone())
                .collect();
            *cache = fresh;
            cut_off
        };
        self.freshness.reloaded(changes);
        for id in &cut_off {
            if let Some(broker) = self.broker.get() {
                broker.disconnect(id.as_str());
            }
            tracing::info!(device = %id, "device revoked through another hub");
        }
        Ok(true)
    }

    /// The store's change count the cache holds.
    pub fn freshness(&self) -> &Freshness {
        &self.freshness
    }

    /// Gives the registry the broker, so revocation can cut live sessions.
    pub fn attach_broker(&self, broker: strata_broker::BrokerHandle) {
        let _ = self.broker.set(broker);
    }

    fn cache_write(&self) -> CacheWrite<'_> {
        CacheWrite {
            guard: self.cache.write().unwrap_or_else(|e| e.into_inner()),
            generation: &self.generation,
        }
    }

    /// The count of registry changes so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// What ingest needs about a device, with the generation it is from.
    pub fn snapshot(&self, id: &DeviceId) -> DeviceSnapshot {
        // The generation first: a change after it makes the snapshot look
        // stale, never the other way round.
        let generation = self.generation();
        let cache = self.cache_read();
        let identity = cache.get(id);
        DeviceSnapshot {
            generation,
            active: identity.is_some_and(|i| i.state == DeviceState::Active),
            signals: identity.map(|i| i.signals.clone()).unwrap_or_default(),
        }
    }

    fn cache_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<DeviceId, Identity>> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a site.
    pub fn create_site(&self, req: CreateSite) -> Result<Site> {
        if req.region.trim().is_empty() {
            return Err(Error::BadRequest(
                "a site needs a region (e.g. \"eu-west\")".into(),
            ));
        }
        let site = Site {
            name: req.name.unwrap_or_else(|| req.id.to_string()),
            id: req.id,
            region: req.region,
            created_ns: now_ns(),
        };
        self.store.create_site(&site)?;
        Ok(site)
    }

    /// All sites.
    pub fn sites(&self) -> Result<Vec<Site>> {
        Ok(self.store.sites()?)
    }

    /// Registers a device and returns its one-time enrollment token.
    pub fn create_device(&self, req: CreateDevice) -> Result<CreatedDevice> {
        let token = secret::generate(secret::TOKEN_PREFIX);
        let now = now_ns();
        let expires = now.saturating_add(self.token_ttl_ns);
        let turn = self.freshness.turn();
        self.store.create_device(&NewDevice {
            id: req.id.clone(),
            site: req.site,
            tags: req.tags,
            signals: req.signals.clone(),
            token_sha256: secret::hash(token.as_bytes()),
            token_expires_ns: expires,
            created_ns: now,
        })?;
        self.cache_write().insert(
            req.id.clone(),
            Identity {
                state: DeviceState::Pending,
                credential_sha256: None,
                signals: Arc::new(req.signals),
            },
        );
        drop(turn);
        let device = self.device(&req.id)?;
        Ok(CreatedDevice {
            device,
            enrollment_token: token,
            token_expires_ns: expires,
        })
    }

    /// One device.
    pub fn device(&self, id: &DeviceId) -> Result<Device> {
        self.store
            .device(id)?
            .ok_or_else(|| Error::NotFound(format!("device {id} is not registered")))
    }

    /// Online/offline changes in a window (see `RegistryStore::presence_log`).
    pub fn presence_log(&self, from_ns: i64, to_ns: i64) -> Result<Vec<(DeviceId, i64, bool)>> {
        Ok(self.store.presence_log(from_ns, to_ns)?)
    }

    /// Deletes the presence changes before `before_ns` but each device's
    /// state then (see `RegistryStore::forget_presence`).
    pub fn forget_presence(&self, before_ns: i64) -> Result<u64> {
        Ok(self.store.forget_presence(before_ns)?)
    }

    /// The presence changes of `[from_ns, to_ns]`, per device, oldest first.
    pub fn presence_by_device(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<BTreeMap<DeviceId, Vec<(i64, bool)>>> {
        let mut log: BTreeMap<DeviceId, Vec<(i64, bool)>> = BTreeMap::new();
        for (d, ts, online) in self.presence_log(from_ns, to_ns)? {
            log.entry(d).or_default().push((ts, online));
        }
        Ok(log)
    }

    /// All devices, optionally of one site.
    pub fn devices(&self, site: Option<&SiteId>) -> Result<Vec<Device>> {
        Ok(self.store.devices(site)?)
    }

    /// Every device, by id (what drift and accuracy segment by).
    pub fn devices_by_id(&self) -> Result<BTreeMap<DeviceId, Device>> {
        Ok(self
            .devices(None)?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect())
    }

    /// Trades a one-time enrollment token for the device's credential.
    pub fn enroll(&self, id: &DeviceId, token: &str) -> Result<String> {
        let credential = secret::generate(secret::CREDENTIAL_PREFIX);
        let credential_hash = secret::hash(credential.as_bytes());
        let _turn = self.freshness.turn();
        let outcome = self.store.enroll(
            id,
            &secret::hash(token.as_bytes()),
            &credential_hash,
            now_ns(),
        )?;
        match outcome {
            EnrollOutcome::Enrolled => {
                // Only a pending entry becomes active: a revocation that
                // landed between the store update and this one wins.
                if let Some(identity) = self.cache_write().get_mut(id)
                    && identity.state == DeviceState::Pending
                {
                    identity.state = DeviceState::Active;
                    identity.credential_sha256 = Some(credential_hash);
                }
                Ok(credential)
            }
            // One answer for an unknown device, a wrong token and a device
            // already enrolled or revoked: this route needs no admin token,
            // so it must not tell which device ids exist.
            EnrollOutcome::UnknownDevice | EnrollOutcome::BadToken | EnrollOutcome::NotPending => {
                Err(Error::Unauthorized(format!(
                    "enrollment refused for {id}: unknown device, wrong token, or token already used"
                )))
            }
            EnrollOutcome::Expired => Err(Error::Unauthorized(format!(
                "enrollment token of {id} has expired; ask an operator to issue a new one"
            ))),
        }
    }

    /// Issues a new enrollment token to a device that has not enrolled yet.
    pub fn reissue_token(&self, id: &DeviceId) -> Result<CreatedDevice> {
        let token = secret::generate(secret::TOKEN_PREFIX);
        let expires = now_ns().saturating_add(self.token_ttl_ns);
        if !self
            .store
            .reissue_token(id, &secret::hash(token.as_bytes()), expires)?
        {
            let device = self.device(id)?;
            return Err(Error::Conflict(format!(
                "device {id} is {:?}; only pending devices get enrollment tokens",
                device.state
            )));
        }
        Ok(CreatedDevice {
            device: self.device(id)?,
            enrollment_token: token,
            token_expires_ns: expires,
        })
    }

    /// Revokes a device: its credential stops working and its live MQTT
    /// session, if any, is closed now.
    pub fn revoke(&self, id: &DeviceId) -> Result<Device> {
        let turn = self.freshness.turn();
        let changed = self.store.revoke(id, now_ns())?;
        if !changed && self.store.device(id)?.is_none() {
            return Err(Error::NotFound(format!("device {id} is not registered")));
        }
        if let Some(identity) = self.cache_write().get_mut(id) {
            identity.state = DeviceState::Revoked;
            identity.credential_sha256 = None;
        }
        drop(turn);
        if let Some(broker) = self.broker.get() {
            broker.disconnect(id.as_str());
        }
        tracing::info!(device = %id, "device revoked");
        self.device(id)
    }

    /// Changes tags, versions or declared signals.
    pub fn update_device(&self, id: &DeviceId, update: &DeviceUpdate) -> Result<Device> {
        let turn = self.freshness.turn();
        if !self.store.update_device(id, update)? {
            return Err(Error::NotFound(format!("device {id} is not registered")));
        }
        if let Some(signals) = &update.signals
            && let Some(identity) = self.cache_write().get_mut(id)
        {
            identity.signals = Arc::new(signals.clone());
        }
        drop(turn);
        self.device(id)
    }

    /// Checks an MQTT password against the device's credential.
    pub fn check_credential(&self, id: &str, password: &[u8]) -> CredentialCheck {
        let Ok(id) = DeviceId::new(id) else {
            return CredentialCheck::Unknown;
        };
        let cache = self.cache_read();
        let Some(identity) = cache.get(&id) else {
            return CredentialCheck::Unknown;
        };
        match (identity.state, identity.credential_sha256) {
            (DeviceState::Revoked, _) => CredentialCheck::Revoked,
            (DeviceState::Active, Some(expected))
                if secret::same(&expected, &secret::hash(password)) =>
            {
                CredentialCheck::Valid
            }
            _ => CredentialCheck::Invalid,
        }
    }

    /// Records a certificate issued to `device`, so it can connect with it.
    pub fn add_certificate(&self, sha256: [u8; 32], device: DeviceId, not_after_ns: i64) {
        self.certificates
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha256, (device, not_after_ns));
    }

    /// Checks a client certificate (DER; the TLS layer verified its chain
    /// and validity) for client id `id`: it must be one the CA issued to
    /// that very device, and the device must be active. Also returns when
    /// the certificate expires (ns since the Unix epoch; 0 when unknown).
    pub fn check_certificate(&self, id: &str, der: &[u8]) -> (CredentialCheck, i64) {
        let owner = self
            .certificates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&secret::hash(der))
            .cloned();
        let Some((device, not_after_ns)) = owner else {
            return (CredentialCheck::Unknown, 0);
        };
        if device.as_str() != id || not_after_ns <= crate::now_ns() {
            return (CredentialCheck::Invalid, not_after_ns);
        }
        let check = match self.cache_read().get(&device).map(|i| i.state) {
            Some(DeviceState::Active) => CredentialCheck::Valid,
            Some(DeviceState::Revoked) => CredentialCheck::Revoked,
            _ => CredentialCheck::Invalid,
        };
        (check, not_after_ns)
    }

    /// Whether a device may use its credential right now.
    pub fn is_active(&self, id: &DeviceId) -> bool {
        self.cache_read()
            .get(id)
            .is_some_and(|i| i.state == DeviceState::Active)
    }

    /// Records devices connecting or disconnecting, in order.
    /// (A shared registry's are queued for its recorder thread, so the
    /// caller never waits on the network.)
    pub fn set_presence(&self, changes: &[(DeviceId, bool, i64)]) {
        if let Some(recorder) = &self.recorder {
            recorder.presence(changes);
        } else if let Err(e) = self.store.set_presence(changes) {
            tracing::warn!("cannot record presence of {} devices: {e}", changes.len());
        }
    }

    /// Marks every device still marked online offline, as of just after it
    /// was last heard from; returns how many. For a hub whose broker no
    /// device can be connected to yet (one starting alone).
    pub fn offline_since_last_heard(&self) -> Result<usize> {
        let now = now_ns();
        let stale: Vec<(DeviceId, bool, i64)> = self
            .devices(None)?
            .into_iter()
            .filter(|d| d.online)
            .map(|d| {
                // Just after: the presence log keeps one change per instant,
                // and the device may have connected at that very one.
                let at = d.last_seen_ns.map_or(now, |t| t.saturating_add(1).min(now));
                (d.id, false, at)
            })
            .collect();
        self.store.set_presence(&stale)?;
        Ok(stale.len())
    }

    /// Records when devices were last heard from (queued, as presence is).
    pub fn touch(&self, seen: &[(DeviceId, i64)]) {
        if let Some(recorder) = &self.recorder {
            recorder.seen(seen);
        } else if let Err(e) = self.store.touch(seen) {
            tracing::warn!("cannot record last-seen times: {e}");
        }
    }
}
