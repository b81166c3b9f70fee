//! Deploying a model version to devices through their twins: the hub sets
//! the `models` key of each device's desired twin and publishes it,
//! retained, on `strata/v1/{device}/down/twin`; the agent downloads the
//! artifact (checked against its hash), swaps the model in, and reports
//! back on `up/twin`.
//!
//! This is the direct path (all selected devices at once). Phased rollouts
//! with signed manifests build on the same twin key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_proto::{DesiredTwin, DeviceId, Direction, ModelAssignment, SiteId, Topic, TopicKind};
use strata_store::{DeviceState, ModelVersion, Twin, TwinStore};

use super::{ModelRegistry, VersionRef};
use crate::downlink::{Downlink, Reach};
use crate::error::{Error, Result};
use crate::registry::Registry;

/// Which devices a deployment targets; all given filters must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSelector {
    /// These devices.
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    /// Devices of this site.
    #[serde(default)]
    pub site: Option<String>,
    /// Devices carrying all these tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A deployment request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Version number or alias (e.g. `champion`).
    pub version: String,
    /// The pipeline vector the model reads on the devices (defaults to the
    /// one recorded with the version).
    #[serde(default)]
    pub vector: Option<String>,
    /// Target devices (active devices only); all active devices when empty.
    #[serde(default, flatten)]
    pub target: DeviceSelector,
    /// Run it as a shadow challenger beside the serving version: its
    /// predictions are kept (`{model}.shadow.{output}`) and nothing acts on
    /// them.
    #[serde(default)]
    pub shadow: bool,
}

/// What a deployment did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeployResult {
    /// The model.
    pub model: String,
    /// The version deployed.
    pub version: u32,
    /// Devices whose desired twin now names it.
    pub devices: Vec<String>,
}

/// Sets desired twins and publishes them.
pub struct Deployer {
    twins: Arc<dyn TwinStore>,
    registry: Arc<Registry>,
    models: Arc<ModelRegistry>,
    drift: Arc<crate::drift::Drift>,
    downlink: Downlink,
    /// How far this replica has followed the log of desired changes of a
    /// twin store other replicas change too (`None`: only this hub does).
    followed: Mutex<Option<i64>>,
    /// What this replica last published per device.
    published: Mutex<Published>,
    /// The twin store's epoch, sent with every desired twin.
    epoch: String,
}

/// What this replica published per device.
///
/// A twin older than the newest it published is not published (with other
/// replicas changing twins, a change made here may be published after a
/// newer one made there); the same version again is (a republish restores
/// what a broker lost).
///
/// Behind an upstream broker, two replicas changing one device's twin at
/// nearly the same moment each send their version there, and the two can
/// arrive in either order, leaving the older retained. So the replica
/// that sent a version upstream lately, and then finds a newer one in the
/// log of changes, sends that one upstream too ([`Published::raced`]).
#[derive(Debug, Default)]
struct Published(HashMap<DeviceId, Sent>);

/// What was published for one device.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// The newest version.
    version: u64,
    /// The version last sent upstream too, and when.
    upstream: Option<(u64, Instant)>,
}

/// How long after sending a twin upstream a newer one found in the log is
/// sent upstream again ([`Published::raced`]): far longer than two
/// publishes take to reach the broker.
const RACE: Duration = Duration::from_secs(10);

impl Published {
    /// Whether a twin of `device` at `version` may be published.
    fn admits(&self, device: &DeviceId, version: u64) -> bool {
        self.0.get(device).is_none_or(|s| s.version <= version)
    }

    /// A twin of `device` at `version` was published, as far as `reach`,
    /// at `now`.
    fn mark(&mut self, device: &DeviceId, version: u64, reach: Reach, now: Instant) {
        let sent = self.0.entry(device.clone()).or_insert(Sent {
            version,
            upstream: None,
        });
        sent.version = sent.version.max(version);
        if reach == Reach::Everywhere {
            sent.upstream = Some((version, now));
        }
    }

    /// Whether a twin of `device` at `version`, found in the log of
    /// changes at `now`, may have arrived at the upstream broker before
    /// an older one this replica sent there lately.
    fn raced(&self, device: &DeviceId, version: u64, now: Instant) -> bool {
        self.0
            .get(device)
            .and_then(|s| s.upstream)
            .is_some_and(|(sent, at)| sent < version && now.saturating_duration_since(at) < RACE)
    }
}

/// The most twins changed elsewhere published in one look.
const FOLLOW_BATCH: usize = 10_000;

impl Deployer {
    /// A deployer over the hub's stores, sending twins on `downlink`.
    pub fn new(
        twins: Arc<dyn TwinStore>,
        registry: Arc<Registry>,
        models: Arc<ModelRegistry>,
        drift: Arc<crate::drift::Drift>,
        downlink: Downlink,
    ) -> Result<Self> {
        Ok(Deployer {
            epoch: twins.twin_epoch()?,
            twins,
            registry,
            models,
            drift,
            downlink,
            followed: Mutex::new(None),
            published: Mutex::new(Published::default()),
        })
    }

    /// The devices a selector picks (active ones only), in id order.
    pub fn select(&self, target: &DeviceSelector) -> Result<Vec<DeviceId>> {
        let site = target
            .site
            .as_deref()
            .map(SiteId::new)
            .transpose()
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        let mut picked = Vec::new();
        for d in self.registry.devices(site.as_ref())? {
            let listed = target
                .devices
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|i| i == d.id.as_str()));
            let tagged = target.tags.iter().all(|(k, v)| d.tags.get(k) == Some(v));
            if listed && tagged && d.state == DeviceState::Active {
                picked.push(d.id);
            }
        }
        if let Some(ids) = &target.devices {
            for id in ids {
                if !picked.iter().any(|p| p.as_str() == id) {
                    return Err(Error::BadRequest(format!(
                        "device {id} is not an active device matching the selector"
                    )));
                }
            }
        }
        Ok(picked)
    }

    /// Deploys a version of `model` to the selected devices.
    pub fn deploy(&self, model: &str, req: &DeployRequest) -> Result<DeployResult> {
        let v = self
            .models
            .version(model, &VersionRef::parse(&req.version)?)?;
        let vector = req
            .vector
            .clone()
            .or_else(|| v.vector.clone())
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "{model} v{} is bound to no pipeline vector; say which one with \"vector\"",
                    v.version
                ))
            })?;
        let devices = self.select(&req.target)?;
        if devices.is_empty() {
            return Err(Error::BadRequest(
                "the selector matches no active device".into(),
            ));
        }
        let mut assignment = assignment(&v, vector);
        assignment.drift = self.drift.settings(&v)?;
        assignment.shadow = req.shadow;
        for device in &devices {
            self.edit_models(device, |models| {
                models.retain(|m| (m.name.as_str(), m.shadow) != (model, req.shadow));
                models.push(assignment.clone());
            })?;
        }
        tracing::info!(
            model,
            version = v.version,
            devices = devices.len(),
            shadow = req.shadow,
            "model deployed"
        );
        Ok(DeployResult {
            model: model.to_owned(),
            version: v.version,
            devices: devices.iter().map(|d| d.to_string()).collect(),
        })
    }

    /// Promotes a shadow challenger: `version` serves on `devices` (the
    /// shadow's drift settings and vector kept), and no device shadows
    /// `model` any more. One twin change per device.
    pub fn promote(&self, model: &str, version: u32, devices: &[DeviceId]) -> Result<()> {
        let v = self.models.version(model, &VersionRef::Number(version))?;
        let vector = v.vector.clone().ok_or_else(|| {
            Error::BadRequest(format!("{model} v{version} is bound to no pipeline vector"))
        })?;
        let mut serving = assignment(&v, vector);
        serving.drift = self.drift.settings(&v)?;
        for twin in self.twins.desired_twins()? {
            let device = &twin.device;
            let promoted = devices.contains(device);
            let shadows = desired_list::<ModelAssignment>(&twin, "models")?
                .iter()
                .any(|m| m.name == model && m.shadow);
            if !promoted && !shadows {
                continue;
            }
            self.edit_models(device, |models| {
                models.retain(|m| m.name != model || (!m.shadow && !promoted));
                if promoted {
                    models.push(serving.clone());
                }
            })?;
        }
        tracing::info!(model, version, devices = devices.len(), "model promoted");
        Ok(())
    }

    /// Stops every shadow of `model` (a challenger that lost).
    pub fn end_shadow(&self, model: &str) -> Result<usize> {
        let mut ended = 0;
        for twin in self.twins.desired_twins()? {
            let shadows = desired_list::<ModelAssignment>(&twin, "models")?
                .iter()
                .any(|m| m.name == model && m.shadow);
            if shadows {
                self.edit_models(&twin.device, |models| {
                    models.retain(|m| m.name != model || !m.shadow)
                })?;
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// The active devices whose desired twin serves `model` (not as a
    /// shadow), in id order. A revoked device keeps its twin, but nothing
    /// can be deployed to it any more: counted in, it would fail every
    /// retraining cycle's shadow step.
    pub fn serving(&self, model: &str) -> Result<Vec<DeviceId>> {
        let mut out = Vec::new();
        for twin in self.twins.desired_twins()? {
            if !self.registry.is_active(&twin.device) {
                continue;
            }
            if desired_list::<ModelAssignment>(&twin, "models")?
                .iter()
                .any(|m| m.name == model && !m.shadow)
            {
                out.push(twin.device);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The version of `model` most active devices serve (not as a
    /// shadow); the highest of equals. `None` when no device serves it.
    pub fn most_served_version(&self, model: &str) -> Result<Option<u32>> {
        let mut counts: std::collections::BTreeMap<u32, usize> = Default::default();
        for twin in self.twins.desired_twins()? {
            if !self.registry.is_active(&twin.device) {
                continue;
            }
            for m in desired_list::<ModelAssignment>(&twin, "models")? {
                if m.name == model && !m.shadow {
                    *counts.entry(m.version).or_default() += 1;
                }
            }
        }
        Ok(counts
            .into_iter()
            .max_by_key(|&(version, n)| (n, version))
            .map(|(version, _)| version))
    }

    /// Changes the device's model assignments and publishes its twin.
    /// The read and the write are one step of the store, so edits made at
    /// once (two deployments, a rollout beside a retraining cycle, two
    /// hubs) all land.
    fn edit_models(
        &self,
        device: &DeviceId,
        mut edit: impl FnMut(&mut Vec<ModelAssignment>) + Send,
    ) -> Result<()> {
        let twin = self
            .twins
            .edit_desired(device, "models", crate::now_ns(), &mut |current| {
                let mut models: Vec<ModelAssignment> = list_of(device, "models", current)?;
                edit(&mut models);
                models.sort_by(|a, b| (&a.name, a.shadow).cmp(&(&b.name, b.shadow)));
                Ok(serde_json::to_value(&models).expect("JSON of assignments"))
            })?;
        self.publish(&twin)
    }

    /// Replaces (or adds) the device's signed update for the same release
    /// kind and name, and publishes the twin.
    pub fn assign_update(
        &self,
        device: &DeviceId,
        update: &strata_ota::SignedUpdate,
    ) -> Result<()> {
        let (kind, name, _) = release_of(update).ok_or_else(|| {
            Error::BadRequest("the signed update's release is not readable".into())
        })?;
        self.set_update(device, &kind, &name, Some(update))
    }

    /// Removes the device's signed update of a release kind and name.
    pub fn remove_update(&self, device: &DeviceId, kind: &str, name: &str) -> Result<()> {
        self.set_update(device, kind, name, None)
    }

    fn set_update(
        &self,
        device: &DeviceId,
        kind: &str,
        name: &str,
        update: Option<&strata_ota::SignedUpdate>,
    ) -> Result<()> {
        let twin = self
            .twins
            .edit_desired(device, "updates", crate::now_ns(), &mut |current| {
                let mut updates: Vec<strata_ota::SignedUpdate> =
                    list_of(device, "updates", current)?;
                updates.retain(|u| {
                    release_of(u).is_none_or(|(k, n, _)| (k.as_str(), n.as_str()) != (kind, name))
                });
                updates.extend(update.cloned());
                Ok(serde_json::to_value(&updates).expect("JSON of updates"))
            })?;
        self.publish(&twin)
    }

    /// The version of a release kind and name the device's desired twin
    /// names, if any.
    pub fn desired_version(
        &self,
        device: &DeviceId,
        kind: &str,
        name: &str,
    ) -> Result<Option<u64>> {
        let twin = self.twins.twin(device)?;
        let updates: Vec<strata_ota::SignedUpdate> = desired_list(&twin, "updates")?;
        Ok(updates
            .iter()
            .filter_map(release_of)
            .find_map(|(k, n, v)| (k == kind && n == name).then_some(v)))
    }

    /// Publishes a device's desired twin (retained, so a device that
    /// connects later gets it at once).
    pub fn publish(&self, twin: &Twin) -> Result<()> {
        self.send(Reach::Everywhere, twin)
    }

    fn send(&self, reach: Reach, twin: &Twin) -> Result<()> {
        let (topic, payload) = match twin_message(twin, &self.epoch) {
            Ok(message) => message,
            // A twin this hub cannot read (written by a newer replica
            // during a rolling upgrade, say) must not stop the twins of
            // every other device: it is skipped, said, and left as is.
            Err(e) => {
                tracing::warn!(device = %twin.device, "cannot send the desired twin: {e}");
                return Ok(());
            }
        };
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        if !published.admits(&twin.device, twin.desired_version) {
            return Ok(());
        }
        self.downlink
            .send(reach, &topic, payload, true)
            .map_err(|e| {
                Error::Unavailable(format!("cannot publish the twin of {}: {e}", twin.device))
            })?;
        published.mark(&twin.device, twin.desired_version, reach, Instant::now());
        Ok(())
    }

    /// Publishes every desired twin again, as far as `reach`: the broker
    /// keeps retained messages in memory, so a starting hub restores them
    /// from storage (and sends them upstream again once it is connected
    /// there). With a twin store other replicas change, this is also where
    /// this replica starts following their changes.
    pub fn republish_all(&self, reach: Reach) -> Result<usize> {
        let position = self.twins.desired_position()?;
        let twins = self.twins.desired_twins()?;
        for twin in &twins {
            self.send(reach, twin)?;
        }
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        // Never back: a reconnection's republish may run beside a look.
        *followed = match (*followed, position) {
            (Some(was), Some(now)) => Some(was.max(now)),
            (was, now) => now.or(was),
        };
        Ok(twins.len())
    }

    /// Publishes on this replica's broker the desired twins other replicas
    /// changed since the last look (and this one's own, again: a device
    /// ignores a twin it already applied), so a device connected here gets
    /// them. Returns how many; nothing to do where only this hub changes
    /// twins.
    pub fn follow_changes(&self) -> Result<usize> {
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let Some(position) = *followed else {
            return Ok(0);
        };
        let (twins, reached) = self.twins.desired_after(position, FOLLOW_BATCH)?;
        for twin in &twins {
            let raced = self.downlink.has_upstream()
                && self
                    .published
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .raced(&twin.device, twin.desired_version, Instant::now());
            let reach = if raced {
                tracing::debug!(device = %twin.device, version = twin.desired_version,
                    "sending the twin upstream again: it may have lost a race there");
                Reach::Everywhere
            } else {
                Reach::Here
            };
            self.send(reach, twin)?;
        }
        *followed = Some(reached);
        Ok(twins.len())
    }

    /// A device's twin.
    pub fn twin(&self, device: &DeviceId) -> Result<Twin> {
        self.registry.device(device)?;
        Ok(self.twins.twin(device)?)
    }
}

/// A list under `key` of a desired twin (empty when absent).
fn desired_list<T: serde::de::DeserializeOwned>(twin: &Twin, key: &str) -> Result<Vec<T>> {
    let value = twin.desired.get(key).unwrap_or(&serde_json::Value::Null);
    Ok(list_of(&twin.device, key, value)?)
}

/// The list a desired twin's `key` holds (empty when null).
fn list_of<T: serde::de::DeserializeOwned>(
    device: &DeviceId,
    key: &str,
    value: &serde_json::Value,
) -> strata_store::Result<Vec<T>> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    serde_json::from_value(value.clone()).map_err(|e| {
        strata_store::Error::Conflict(format!(
            "the desired twin of {device} is damaged ({key}): {e}"
        ))
    })
}

/// The kind, name and version of a signed update's release (as the hub
/// delivered it; devices verify it themselves).
fn release_of(update: &strata_ota::SignedUpdate) -> Option<(String, String, u64)> {
    let r: serde_json::Value = serde_json::from_str(&update.release.payload).ok()?;
    Some((
        r["kind"].as_str()?.to_owned(),
        r["name"].as_str()?.to_owned(),
        r["version"].as_u64()?,
    ))
}

fn assignment(v: &ModelVersion, vector: String) -> ModelAssignment {
    ModelAssignment {
        name: v.model.clone(),
        version: v.version,
        sha256: v.sha256.clone(),
        size: v.size,
        vector,
        features: v.features.clone(),
        drift: None,
        shadow: false,
    }
}

/// The retained message that carries `twin`'s desired document.
fn twin_message(twin: &Twin, epoch: &str) -> Result<(String, Bytes)> {
    let desired = DesiredTwin {
        desired_version: twin.desired_version,
        epoch: epoch.to_owned(),
        models: desired_list(twin, "models")?,
        updates: desired_list(twin, "updates")?,
    };
    let topic = Topic::new(twin.device.clone(), Direction::Down, TopicKind::Twin).to_string();
    let payload = Bytes::from(serde_json::to_vec(&desired).expect("JSON of a twin"));
    Ok((topic, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_twin_older_than_the_one_published_is_not_published() {
        let (press, pump) = (
            DeviceId::new("press-1").unwrap(),
            DeviceId::new("pump-1").unwrap(),
        );
        let now = Instant::now();
        let mut published = Published::default();
        assert!(published.admits(&press, 1), "nothing published yet");
        published.mark(&press, 3, Reach::Here, now);
        assert!(!published.admits(&press, 2), "older");
        assert!(published.admits(&press, 3), "the same again");
        assert!(published.admits(&press, 4), "newer");
        assert!(published.admits(&pump, 1), "per device");
        published.mark(&press, 2, Reach::Here, now);
        assert!(
            !published.admits(&press, 2),
            "marking an older one keeps the newest"
        );
    }

    #[test]
    fn a_newer_twin_goes_upstream_again_only_soon_after_this_replica_sent_one_there() {
        let press = DeviceId::new("press-1").unwrap();
        let now = Instant::now();
        let mut published = Published::default();
        published.mark(&press, 4, Reach::Here, now);
        assert!(!published.raced(&press, 5, now), "nothing sent upstream");
        published.mark(&press, 5, Reach::Everywhere, now);
        assert!(!published.raced(&press, 5, now), "the same version");
        assert!(published.raced(&press, 6, now + Duration::from_secs(1)));
        assert!(!published.raced(&press, 6, now + RACE), "long after");
        published.mark(&press, 6, Reach::Here, now);
        assert!(
            published.raced(&press, 6, now),
            "sent here only, not upstream"
        );
        published.mark(&press, 6, Reach::Everywhere, now);
        assert!(!published.raced(&press, 6, now), "now sent upstream too");
    }
}
