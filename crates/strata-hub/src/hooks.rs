//! The hub's policy for its embedded broker: who may connect (device
//! credentials), what each device may touch (its own topics only), and what
//! happens to what it publishes (telemetry goes to ingest).

use std::sync::Arc;

use std::sync::Mutex;

use strata_broker::{
    AuthDecision, Client, ConnectInfo, DisconnectReason, Hooks, InboundPublish, PublishDecision,
};
use strata_proto::{DeviceId, Direction, ReportedTwin, Topic, TopicKind, payload};
use strata_store::TwinStore;

use crate::drift::{Drift, SketchRefusal};
use crate::ingest::Ingest;
use crate::metrics::{Metrics, RejectReason};
use crate::registry::{CredentialCheck, DeviceSnapshot, Registry};
use crate::wake::Wake;

/// The broker hooks of a hub: what they check against and where they
/// hand what devices send.
pub struct HubHooks {
    /// Drift sketches.
    pub drift: Arc<Drift>,
    /// Device identities (credentials, certificates, state).
    pub registry: Arc<Registry>,
    /// Telemetry ingest.
    pub ingest: Arc<Ingest>,
    /// Counters of refusals.
    pub metrics: Arc<Metrics>,
    /// Reported twins.
    pub twins: Arc<dyn TwinStore>,
    /// Woken when a device reports its twin (campaigns wait for that).
    pub reported: Arc<Wake>,
    /// Where closed-loop action records go.
    pub actions: Arc<dyn strata_store::ControlStore>,
    /// Where closed-loop actions are also recorded as fleet changes.
    pub audit: Arc<crate::audit::Audit>,
}

impl HubHooks {
    /// Stores a reported twin (off the connection's task: it is a write)
    /// and acknowledges it once stored.
    fn reported_twin(&self, device: &DeviceId, payload: &[u8]) -> PublishDecision {
        let reported: ReportedTwin = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.reject(RejectReason::Malformed, 1, || {
                    format!("device {device}: reported twin: {e}")
                });
                return PublishDecision::Drop {
                    v5_reason: crate::ingest::PAYLOAD_FORMAT_INVALID,
                };
            }
        };
        let value = serde_json::to_value(&reported).expect("JSON of a twin");
        let running = running_models(&reported);
        let (twins, device, wake) = (self.twins.clone(), device.clone(), self.reported.clone());
        let registry = self.registry.clone();
        // Acknowledged once stored (a report lost here would leave a
        // rollout waiting on a device that already answered).
        let (done, stored) = tokio::sync::oneshot::channel();
        let store = move || {
            let result = match twins.set_reported(&device, &value, crate::now_ns()) {
                Ok(()) => {
                    wake.wake();
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(%device, "cannot store a reported twin: {e}");
                    Err(strata_broker::IngestRefusal::Retry)
                }
            };
            let _ = done.send(result);
            // The registry's model version follows what the device runs.
            let changed = registry.device(&device).is_ok_and(|d| {
                d.model_version.as_deref() != Some(running.as_str())
                    && !(running.is_empty() && d.model_version.is_none())
            });
            if changed {
                let update = strata_store::DeviceUpdate {
                    model_version: Some(running),
                    ..Default::default()
                };
                if let Err(e) = registry.update_device(&device, &update) {
                    tracing::warn!(%device, "cannot record the model version it runs: {e}");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(store)),
            Err(_) => store(),
        }
        PublishDecision::RouteAfter(stored)
    }
}

impl HubHooks {
    /// A closed-loop action record: kept once per (device, seq), then
    /// acknowledged.
    fn control_action(&self, device: &DeviceId, payload: &[u8]) -> PublishDecision {
        let action: strata_proto::ControlAction = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(e) => {
                self.metrics.reject(RejectReason::Malformed, 1, || {
                    format!("device {device}: control action: {e}")
                });
                return PublishDecision::Drop {
                    v5_reason: crate::ingest::PAYLOAD_FORMAT_INVALID,
                };
            }
        };
        let (done, acked) = tokio::sync::oneshot::channel();
        let (store, metrics, audit) = (
            self.actions.clone(),
            self.metrics.clone(),
            self.audit.clone(),
        );
        let record = strata_store::StoredAction {
            device: device.clone(),
            received_ns: crate::now_ns(),
            action,
        };
        let keep = move || {
            let result = match store.record_action(&record) {
                Ok(new) => {
                    if new {
                        let a = &record.action;
                        let event = crate::audit::Event::ok(
                            format!("device:{}", record.device),
                            "control.action",
                            format!("{}/{}", record.device, a.action),
                        )
                        .outcome(a.outcome.as_str())
                        .detail(serde_json::json!({"rule": a.rule, "seq": a.seq}));
                        let _ = audit.record(event);
                    }
                    let counter = if new {
                        &metrics.control_actions_stored
                    } else {
                        &metrics.control_actions_duplicate
                    };
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(device = %record.device, "cannot store a control action: {e}");
                    Err(strata_broker::IngestRefusal::Retry)
                }
            };
            let _ = done.send(result);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(keep)),
            Err(_) => keep(),
        }
        PublishDecision::RouteAfter(acked)
    }

    /// Checks a drift sketch batch and stores it off the connection's task
    /// (the check may read a profile from the artifact store); the PUBACK
    /// waits for the commit.
    fn sketches(&self, device: &DeviceId, payload: &[u8]) -> PublishDecision {
        let (done, acked) = tokio::sync::oneshot::channel();
        let (drift, metrics, device) = (self.drift.clone(), self.metrics.clone(), device.clone());
        let (horizon_ns, payload) = (self.ingest.horizon_ns(), payload.to_vec());
        let keep = move || {
            let refused = |reason: RejectReason, why: String| {
                metrics.reject(reason, 1, || format!("device {device}: sketches: {why}"));
                Err(strata_broker::IngestRefusal::Refused {
                    v5_reason: crate::ingest::PAYLOAD_FORMAT_INVALID,
                    reason_string: None,
                })
            };
            let result = match drift.check(&payload) {
                // A window in the future would count in every report up to
                // then.
                Ok(b) if b.end_ns > horizon_ns => refused(
                    RejectReason::FutureTimestamp,
                    format!("the window ends at {} ns, in the future", b.end_ns),
                ),
                Ok(batch) => match drift.store_batch(&device, &batch) {
                    Ok(new) => {
                        let counter = if new {
                            &metrics.sketch_batches_stored
                        } else {
                            &metrics.sketch_batches_duplicate
                        };
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => {
                        tracing::warn!(%device, "cannot store sketches: {e}");
                        Err(strata_broker::IngestRefusal::Retry)
                    }
                },
                Err(SketchRefusal::Malformed(why)) => refused(RejectReason::Malformed, why),
                Err(SketchRefusal::Mismatch(why)) => refused(RejectReason::SketchMismatch, why),
                Err(SketchRefusal::Unavailable(why)) => {
                    // Not the device's fault: no acknowledgement, so it
                    // sends the batch again.
                    tracing::debug!(%device, "sketches not checked now: {why}");
                    Err(strata_broker::IngestRefusal::Retry)
                }
            };
            let _ = done.send(result);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(keep)),
            Err(_) => keep(),
        }
        PublishDecision::RouteAfter(acked)
    }
}

/// Whether `topic` is one a device may publish: `strata/v1/{device}/up/{kind}`.
pub fn device_may_publish(device: &str, topic: &str) -> bool {
    matches!(Topic::parse(topic), Ok(t) if t.device.as_str() == device && t.direction == Direction::Up)
}

/// Whether `filter` is one of the device's own downlinks:
/// `strata/v1/{device}/down/` and then `twin`, `cmd`, `control`, `+` or `#`.
/// Nothing else is ever sent to a device, and a filter of any other shape
/// (a device's own uplinks, a filter thousands of levels deep) would only
/// cost the broker memory.
pub fn device_may_subscribe(device: &str, filter: &str) -> bool {
    let prefix = Topic::device_prefix(device);
    filter
        .strip_prefix(prefix.as_str())
        .and_then(|rest| rest.strip_prefix("down/"))
        .is_some_and(|kind| matches!(kind, "twin" | "cmd" | "control" | "+" | "#"))
}

/// MQTT 5 reason code "not authorized".
const NOT_AUTHORIZED: u8 = 0x87;

impl HubHooks {
    fn is_active(&self, client_id: &str) -> bool {
        DeviceId::new(client_id).is_ok_and(|id| self.registry.is_active(&id))
    }

    fn refuse_inactive(&self, client_id: &str) {
        self.metrics.reject(RejectReason::RevokedDevice, 1, || {
            format!("device {client_id} is no longer active")
        });
    }
}

/// What the hooks keep for a device's connection ([`Hooks::attach`]): its
/// id and topic prefix, parsed once, and what the registry says about it,
/// looked up again only when the registry has changed since.
struct DeviceSession {
    device: DeviceId,
    /// `strata/v1/{device}/`.
    prefix: String,
    /// Only the connection's task locks it.
    known: Mutex<DeviceSnapshot>,
}

impl DeviceSession {
    fn new(device: DeviceId, registry: &Registry) -> Self {
        DeviceSession {
            prefix: Topic::device_prefix(device.as_str()),
            known: Mutex::new(registry.snapshot(&device)),
            device,
        }
    }

    /// The device's state, as the registry has it now.
    fn current(&self, registry: &Registry) -> std::sync::MutexGuard<'_, DeviceSnapshot> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.generation != registry.generation() {
            *known = registry.snapshot(&self.device);
        }
        known
    }

    /// What an uplink topic of this device carries (`None`: not one).
    fn uplink(&self, topic: &str) -> Option<TopicKind> {
        topic
            .strip_prefix(self.prefix.as_str())
            .and_then(Topic::uplink_kind)
    }
}

impl HubHooks {
    /// What a device's message on one of its uplink topics does, wherever
    /// it came from (the embedded broker, or an upstream broker): the
    /// device is known and active, `snapshot` is its registry state.
    /// Telemetry is acknowledged through the connection's tickets when it
    /// has them (`acks`), else through a channel of its own.
    pub fn uplink(
        &self,
        device: &DeviceId,
        kind: TopicKind,
        payload: &[u8],
        snapshot: &DeviceSnapshot,
        acks: Option<&Arc<strata_broker::Acks>>,
    ) -> PublishDecision {
        match kind {
            TopicKind::Telemetry | TopicKind::Inference => {
                self.ingest
                    .telemetry(device, kind, payload, &snapshot.signals, acks)
            }
            TopicKind::Health => {
                match payload::decode_health(payload) {
                    Ok(health) => self.ingest.presence(device, health.online),
                    Err(e) => {
                        self.metrics.reject(RejectReason::Malformed, 1, || {
                            format!("device {device}: {e}")
                        });
                        return PublishDecision::Drop {
                            v5_reason: crate::ingest::PAYLOAD_FORMAT_INVALID,
                        };
                    }
                }
                PublishDecision::Route
            }
            TopicKind::Twin => self.reported_twin(device, payload),
            TopicKind::Sketch => self.sketches(device, payload),
            TopicKind::Events => self.control_action(device, payload),
            _ => PublishDecision::Route,
        }
    }
}

impl Hooks for HubHooks {
    fn authenticate(&self, info: &ConnectInfo<'_>) -> AuthDecision {
        let refuse = |reason: RejectReason, decision: AuthDecision, why: &str| {
            self.metrics.reject(reason, 1, || {
                format!(
                    "connection from {} as {:?}: {why}",
                    info.peer, info.client_id
                )
            });
            decision
        };
        if let Some(der) = info.peer_certificate {
            if info.username.is_some_and(|u| u != info.client_id) {
                return refuse(
                    RejectReason::BadCredentials,
                    AuthDecision::Deny,
                    "the username, if any, must be the client id",
                );
            }
            let (check, not_after_ns) = self.registry.check_certificate(info.client_id, der);
            return match check {
                // A session lasts no longer than its certificate.
                CredentialCheck::Valid => AuthDecision::AllowUntil(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_nanos(not_after_ns.max(0) as u64),
                ),
                CredentialCheck::Unknown => refuse(
                    RejectReason::UnknownDevice,
                    AuthDecision::Deny,
                    "a certificate this hub did not issue or no longer knows",
                ),
                CredentialCheck::Revoked => refuse(
                    RejectReason::RevokedDevice,
                    AuthDecision::Deny,
                    "the certificate's device is revoked",
                ),
                CredentialCheck::Invalid => refuse(
                    RejectReason::BadCredentials,
                    AuthDecision::Deny,
                    "the client id is not the device the certificate names",
                ),
            };
        }
        let (Some(username), Some(password)) = (info.username, info.password) else {
            return refuse(
                RejectReason::BadCredentials,
                AuthDecision::BadCredentials,
                "no username or password",
            );
        };
        if username != info.client_id {
            return refuse(
                RejectReason::BadCredentials,
                AuthDecision::Deny,
                "the client id must be the device id given as username",
            );
        }
        match self.registry.check_credential(username, password) {
            CredentialCheck::Valid => AuthDecision::Allow,
            CredentialCheck::Unknown => refuse(
                RejectReason::UnknownDevice,
                AuthDecision::Deny,
                "unknown device",
            ),
            CredentialCheck::Revoked => refuse(
                RejectReason::RevokedDevice,
                AuthDecision::Deny,
                "device is revoked",
            ),
            CredentialCheck::Invalid => refuse(
                RejectReason::BadCredentials,
                AuthDecision::BadCredentials,
                "wrong credential or device not enrolled",
            ),
        }
    }

    fn still_allowed(&self, client_id: &str) -> bool {
        self.is_active(client_id)
    }

    fn attach(&self, client_id: &str) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        let device = DeviceId::new(client_id).ok()?;
        Some(Box::new(DeviceSession::new(device, &self.registry)))
    }

    fn authorize_publish(&self, client: Client<'_>, topic: &str) -> bool {
        let client_id = client.id;
        // Asked for every publish and every will: a device revoked while
        // connected (or while its connection was being set up) is cut off
        // here even if its session outlived the kick.
        let ok = match client.session::<DeviceSession>() {
            Some(session) => {
                if !session.current(&self.registry).active {
                    self.refuse_inactive(client_id);
                    return false;
                }
                session.uplink(topic).is_some()
            }
            None => {
                if !self.is_active(client_id) {
                    self.refuse_inactive(client_id);
                    return false;
                }
                device_may_publish(client_id, topic)
            }
        };
        if !ok {
            self.metrics.reject(RejectReason::AclPublish, 1, || {
                format!("device {client_id} may not publish to {topic:?}")
            });
        }
        ok
    }

    fn authorize_subscribe(&self, client: Client<'_>, filter: &str) -> bool {
        let client_id = client.id;
        if !self.is_active(client_id) {
            self.refuse_inactive(client_id);
            return false;
        }
        let ok = device_may_subscribe(client_id, filter);
        if !ok {
            self.metrics.reject(RejectReason::AclSubscribe, 1, || {
                format!("device {client_id} may not subscribe to {filter:?}")
            });
        }
        ok
    }

    /// Nothing a device sends is kept retained: the hub stores what it
    /// needs, and each device's topics would otherwise hold a message of
    /// up to the packet limit in memory until the hub stops.
    fn may_retain(&self, _: Client<'_>, _: &str) -> bool {
        false
    }

    fn on_publish(&self, client: Client<'_>, msg: &InboundPublish) -> PublishDecision {
        let client_id = client.id;
        let unknown_topic = || {
            self.metrics.reject(RejectReason::UnknownTopic, 1, || {
                format!("device {client_id}: topic {:?}", msg.topic)
            });
            PublishDecision::Drop { v5_reason: 0x90 }
        };
        let inactive = PublishDecision::Drop {
            v5_reason: NOT_AUTHORIZED,
        };
        // A connection's publishes take its session's device and registry
        // state; a will (its connection gone) looks them up.
        let (device, kind, snapshot) = match client.session::<DeviceSession>() {
            Some(session) => {
                let known = session.current(&self.registry);
                if !known.active {
                    return inactive;
                }
                let Some(kind) = session.uplink(&msg.topic) else {
                    return unknown_topic();
                };
                (session.device.clone(), kind, known.clone())
            }
            None => {
                if !self.is_active(client_id) {
                    return inactive;
                }
                let Ok(topic) = Topic::parse(&msg.topic) else {
                    return unknown_topic();
                };
                let snapshot = self.registry.snapshot(&topic.device);
                (topic.device, topic.kind, snapshot)
            }
        };
        self.uplink(&device, kind, &msg.payload, &snapshot, client.acks)
    }

    fn on_connect(&self, client_id: &str) {
        if let Ok(id) = DeviceId::new(client_id) {
            self.ingest.presence(&id, true);
        }
    }

    fn on_disconnect(&self, client_id: &str, _reason: DisconnectReason) {
        if let Ok(id) = DeviceId::new(client_id) {
            self.ingest.presence(&id, false);
        }
    }
}

/// The serving models a device reports running, deployed through its twin
/// or installed by a signed release it committed, as `name@version`, comma
/// separated in name order ("" when none).
fn running_models(reported: &ReportedTwin) -> String {
    let deployed = reported
        .models
        .iter()
        .filter(|m| m.state == "running" && !m.shadow)
        .map(|m| format!("{}@{}", m.name, m.version));
    let released = reported
        .updates
        .iter()
        .filter(|u| u.kind == "model" && u.state == "committed")
        .map(|u| format!("{}@{}", u.name, u.version));
    let running: std::collections::BTreeSet<String> = deployed.chain(released).collect();
    running.into_iter().collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_stay_in_their_own_topics() {
        assert!(device_may_publish("gw-1", "strata/v1/gw-1/up/telemetry"));
        assert!(!device_may_publish("gw-1", "strata/v1/gw-2/up/telemetry"));
        assert!(!device_may_publish("gw-1", "strata/v1/gw-1/down/cmd"));
        assert!(!device_may_publish("gw-1", "strata/v1/gw-1/up/unknown"));
        assert!(!device_may_publish("gw-1", "other/topic"));

        assert!(device_may_subscribe("gw-1", "strata/v1/gw-1/down/#"));
        assert!(device_may_subscribe("gw-1", "strata/v1/gw-1/down/cmd"));
        assert!(!device_may_subscribe("gw-1", "strata/v1/gw-2/down/#"));
        assert!(!device_may_subscribe("gw-1", "strata/v1/+/down/#"));
        assert!(!device_may_subscribe("gw-1", "strata/v1/#"));
        assert!(!device_may_subscribe("gw-1", "#"));
        assert!(!device_may_subscribe("gw-1", "strata/v1/gw-1/"));
        assert!(!device_may_subscribe("gw-10", "strata/v1/gw-1/down/#"));
        assert!(device_may_subscribe("gw-1", "strata/v1/gw-1/down/control"));
        assert!(device_may_subscribe("gw-1", "strata/v1/gw-1/down/+"));
        assert!(!device_may_subscribe("gw-1", "strata/v1/gw-1/#"));
        assert!(!device_may_subscribe(
            "gw-1",
            "strata/v1/gw-1/up/cmd-result"
        ));
        assert!(!device_may_subscribe("gw-1", "strata/v1/gw-1/down/cmd/x"));
        let deep = format!("strata/v1/gw-1/down/{}", "/".repeat(60_000));
        assert!(!device_may_subscribe("gw-1", &deep));
    }

    #[test]
    fn the_running_serving_models_are_the_devices_model_version() {
        let report =
            |name: &str, version: u32, state: &str, shadow: bool| strata_proto::ModelReport {
                name: name.into(),
                version,
                state: state.into(),
                error: None,
                shadow,
            };
        let update =
            |kind: &str, name: &str, version: u64, state: &str| strata_proto::UpdateReport {
                kind: kind.into(),
                name: name.into(),
                version,
                state: state.into(),
                reason: None,
                error: None,
                campaign: None,
            };
        let twin = ReportedTwin {
            desired_version: 3,
            models: vec![
                report("rul", 2, "running", false),
                report("rul", 3, "running", true),
                report("anomaly", 1, "running", false),
                report("spares", 4, "failed", false),
            ],
            updates: vec![
                update("model", "vib", 5, "committed"),
                update("model", "vib", 6, "failed"),
                update("bundle", "app", 2, "committed"),
            ],
        };
        assert_eq!(running_models(&twin), "anomaly@1,rul@2,vib@5");
        assert_eq!(running_models(&ReportedTwin::default()), "");
    }
}
