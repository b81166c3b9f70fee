//! Ingest from an upstream MQTT broker: the scale-out path.
//!
//! At scale, devices connect to a broker cluster (Mosquitto, EMQX, NATS's
//! MQTT listener, ...) instead of the hub's embedded broker, and each hub
//! replica takes its share of their uplink through one shared subscription
//! (`$share/{group}/strata/v1/+/up/{kind}`). What a replica receives goes
//! through the same checks and storage as a device's publish to the
//! embedded broker ([`HubHooks::uplink`]), and it is acknowledged to the
//! upstream broker only once stored. The hub's session there is
//! persistent, so a message the hub had not acknowledged when it stopped,
//! crashed or lost the connection is sent again; the exactly-once ledger
//! keeps a message sent twice from being stored twice. With several
//! replicas, telemetry belongs in a store they share (`[storage]
//! postgres`).
//!
//! The upstream broker authenticates devices and must keep each to its
//! own topics (e.g. Mosquitto's `pattern write strata/v1/%u/up/#`): the hub
//! sees only the topic, and takes a message for the device it names if the
//! registry knows that device and it is active.
//!
//! What the hub sends devices (desired twins, site gates, commands) goes
//! to the upstream broker on the same connection, retained where it is on
//! the embedded broker (`downlink.rs`), so the broker must let the hub
//! write `strata/v1/+/down/#` and each device read its own
//! (`pattern read strata/v1/%u/down/#`). After every connection the hub
//! sends the retained ones again.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde::Deserialize;
use strata_broker::rustls;
use strata_broker::rustls::pki_types::CertificateDer;
use strata_broker::rustls::pki_types::pem::PemObject;
use strata_broker::{IngestRefusal, PublishDecision};
use strata_proto::{Direction, Topic, TopicKind};
use tokio::sync::{mpsc, oneshot, watch};

use crate::downlink::Message;
use crate::hooks::HubHooks;
use crate::metrics::RejectReason;

/// The uplink kinds the hub stores, by their topic level.
const KINDS: [TopicKind; 6] = [
    TopicKind::Telemetry,
    TopicKind::Inference,
    TopicKind::Health,
    TopicKind::Twin,
    TopicKind::Sketch,
    TopicKind::Events,
];

/// `[upstream]`: where the hub takes device messages from besides its
/// embedded broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// `mqtt://host:port` or `mqtts://host:port`; unset, no upstream.
    pub url: Option<String>,
    /// The hub's client id there: one per replica (its session, and what
    /// it has not acknowledged yet, are kept under it). Default:
    /// `strata-hub-{host name}`, so replicas sharing one configuration do
    /// not take each other's session.
    pub client_id: String,
    /// The shared-subscription group the replicas share ("": a plain
    /// subscription, every hub receives everything).
    pub group: String,
    /// The uplink kinds to take: telemetry, inference, health, twin,
    /// sketch, events.
    pub kinds: Vec<String>,
    /// The hub's user name at the upstream broker.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// For `mqtts://`: the CA that signed the broker's certificate (PEM;
    /// relative to the data directory); unset, the public web CAs.
    pub ca_file: Option<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: None,
            client_id: default_client_id(),
            group: "strata-hubs".into(),
            kinds: KINDS.iter().map(|k| k.as_str().to_owned()).collect(),
            username: None,
            password: None,
            ca_file: None,
        }
    }
}

/// `strata-hub-{host name}` (`strata-hub` where the host has none).
fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(100)
        .collect();
    if host.is_empty() {
        "strata-hub".into()
    } else {
        format!("strata-hub-{host}")
    }
}

/// A parsed `url`.
#[derive(Debug, Clone, PartialEq)]
struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
}

impl UpstreamConfig {
    /// Checks the section; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        let endpoint = endpoint(url)?;
        if self.client_id.is_empty() || self.client_id.len() > 128 {
            return Err("[upstream] client_id must be 1 to 128 characters".into());
        }
        if self.group.contains(['/', '+', '#']) {
            return Err(format!(
                "[upstream] group {:?} may not contain '/', '+' or '#'",
                self.group
            ));
        }
        self.kinds()?;
        if self.password.is_some() && self.username.is_none() {
            return Err("[upstream] a password needs a username".into());
        }
        if self.ca_file.is_some() && !endpoint.tls {
            return Err("[upstream] ca_file is for mqtts:// URLs only".into());
        }
        Ok(())
    }

    fn kinds(&self) -> Result<Vec<TopicKind>, String> {
        if self.kinds.is_empty() {
            return Err("[upstream] kinds may not be empty".into());
        }
        self.kinds
            .iter()
            .map(|name| {
                KINDS
                    .into_iter()
                    .find(|k| k.as_str() == name)
                    .ok_or_else(|| {
                        format!(
                            "[upstream] kinds: {name:?} is not one of telemetry, inference, health, twin, sketch, events"
                        )
                    })
            })
            .collect()
    }

    /// The subscriptions: one per kind, shared by the group.
    fn filters(&self) -> Result<Vec<String>, String> {
        Ok(self
            .kinds()?
            .into_iter()
            .map(|k| {
                let filter = format!("strata/v1/+/up/{}", k.as_str());
                if self.group.is_empty() {
                    filter
                } else {
                    format!("$share/{}/{filter}", self.group)
                }
            })
            .collect())
    }

    /// The client's options: a persistent session, acknowledgements sent
    /// by the hub once a message is stored.
    fn options(&self, url: &str, data_dir: &Path) -> Result<MqttOptions, String> {
        let e = endpoint(url)?;
        let mut o = MqttOptions::new(self.client_id.clone(), e.host, e.port);
        o.set_clean_session(false);
        o.set_manual_acks(true);
        o.set_keep_alive(Duration::from_secs(30));
        // Out: what an agent takes (a desired twin of many models can
        // pass 1 MiB; one over the limit would end every session at once).
        o.set_max_packet_size(16 << 20, 16 << 20);
        o.set_request_channel_capacity(REQUESTS);
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if e.tls {
            let tls = client_tls(self.ca_file.as_ref().map(|f| data_dir.join(f)).as_deref())?;
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls),
            ));
        }
        Ok(o)
    }
}

/// Room for the hub's requests to the client (acknowledgements,
/// subscriptions) between two polls of its connection.
const REQUESTS: usize = 4096;

fn endpoint(url: &str) -> Result<Endpoint, String> {
    let bad = |why: &str| format!("[upstream] url {url:?}: {why}");
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else {
        return Err(bad("must start with mqtt:// or mqtts://"));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port = port.parse().map_err(|_| bad("the port is not a number"))?;
            (host, port)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return Err(bad("no host, or a path after it"));
    }
    Ok(Endpoint {
        tls,
        host: host.to_owned(),
        port,
    })
}

/// A TLS client configuration trusting `ca_file`, or the web's CAs.
fn client_tls(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("[upstream] cannot read ca_file {}: {e}", path.display()))?;
            let certificates: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
            if certificates.is_empty() {
                return Err(format!(
                    "[upstream] ca_file {} holds no PEM certificate",
                    path.display()
                ));
            }
            for der in certificates {
                roots
                    .add(der)
                    .map_err(|e| format!("[upstream] ca_file {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("[upstream] TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Where a received message stands: settled (acknowledge it), or waiting
/// for storage.
enum Waiting {
    Settled(Result<(), IngestRefusal>),
    Storing(oneshot::Receiver<Result<(), IngestRefusal>>),
}

impl Waiting {
    async fn outcome(&mut self) -> Result<(), IngestRefusal> {
        match self {
            Waiting::Settled(r) => r.clone(),
            Waiting::Storing(rx) => rx.await.unwrap_or(Err(IngestRefusal::Retry)),
        }
    }
}

/// What the consumer hands messages to (the hooks hold the registry and
/// the metrics), and which kinds it takes.
struct Consumer {
    hooks: Arc<HubHooks>,
    kinds: Vec<TopicKind>,
}

impl Consumer {
    /// Checks and hands on one message.
    fn take(&self, p: &Publish) -> Waiting {
        let (registry, metrics) = (&self.hooks.registry, &self.hooks.metrics);
        metrics.upstream_messages.fetch_add(1, Relaxed);
        let topic = match Topic::parse(&p.topic) {
            Ok(t) if t.direction == Direction::Up && self.kinds.contains(&t.kind) => t,
            _ => {
                metrics.reject(RejectReason::UnknownTopic, 1, || {
                    format!("upstream: topic {:?}", p.topic)
                });
                return Waiting::Settled(Ok(()));
            }
        };
        let device = &topic.device;
        let mut snapshot = registry.snapshot(device);
        if !snapshot.active {
            // The broker acknowledged the device long ago: what is
            // acknowledged here and not stored is lost. So only a device
            // the store itself says is unknown or revoked is refused; one
            // registered at another replica since this one's cache was
            // loaded is taken (the cache reloaded), and a store that
            // cannot answer gets the message again later.
            let refuse = |reason, why: &str| {
                metrics.reject(reason, 1, || {
                    format!("upstream: device {device} {why} ({:?})", p.topic)
                });
                Waiting::Settled(Ok(()))
            };
            match registry.device(device) {
                Ok(d) if d.state == strata_store::DeviceState::Active => {
                    if let Err(e) = registry.refresh() {
                        tracing::warn!("upstream: cannot reload the registry for {device}: {e}");
                    }
                    snapshot = registry.snapshot(device);
                    if !snapshot.active {
                        return Waiting::Settled(Err(IngestRefusal::Retry));
                    }
                }
                Ok(_) => return refuse(RejectReason::RevokedDevice, "is not active"),
                Err(crate::error::Error::NotFound(_)) => {
                    return refuse(RejectReason::UnknownDevice, "is not registered");
                }
                Err(e) => {
                    tracing::warn!("upstream: cannot look up device {device}: {e}");
                    return Waiting::Settled(Err(IngestRefusal::Retry));
                }
            }
        }
        match self
            .hooks
            .uplink(device, topic.kind, &p.payload, &snapshot, None)
        {
            PublishDecision::RouteAfter(stored) => Waiting::Storing(stored),
            // Refused for good (counted), or nothing to store.
            PublishDecision::Route | PublishDecision::Drop { .. } => Waiting::Settled(Ok(())),
            // Tickets belong to embedded-broker connections; none was given.
            PublishDecision::AfterTicket(_) => Waiting::Settled(Err(IngestRefusal::Retry)),
        }
    }
}

/// Sends every retained message for devices again (twins, gates).
pub type Resend = Arc<dyn Fn() -> crate::error::Result<()> + Send + Sync>;

/// What the hub sends devices, for the upstream broker ([`Downlink`]'s
/// queue), and how to send the retained part of it all again once a
/// connection is made.
///
/// [`Downlink`]: crate::downlink::Downlink
pub struct Downlinks {
    /// The queue (`None` without `[upstream]`).
    pub queue: Option<mpsc::UnboundedReceiver<Message>>,
    /// Sends every retained message again (through the queue).
    pub resend: Resend,
}

/// What waits to be handed to the client for the upstream broker: the
/// hub's queue, and what came from it while the client's own queue was
/// full (kept from one connection to the next).
struct Outbound {
    queue: mpsc::UnboundedReceiver<Message>,
    waiting: VecDeque<Message>,
}

impl Outbound {
    /// Between connections, so that what waits for the upstream broker
    /// stays small however long it is out of reach: drops the retained
    /// messages (twins and gates, all sent again once subscribed) and the
    /// commands older than [`crate::relay::MAX_AGE`] (too late to act on);
    /// returns how many it dropped.
    fn prune(&mut self) -> usize {
        while let Ok(m) = self.queue.try_recv() {
            self.waiting.push_back(m);
        }
        let before = self.waiting.len();
        self.waiting
            .retain(|m| !m.retain && m.sent.elapsed() < crate::relay::MAX_AGE);
        before - self.waiting.len()
    }
}

/// Starts consuming from the upstream broker, if `[upstream] url` is set,
/// and sending it what the hub has for devices; stops when `stop` turns
/// true.
pub fn spawn(
    config: &UpstreamConfig,
    data_dir: &Path,
    hooks: Arc<HubHooks>,
    downlinks: Downlinks,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let Some(url) = &config.url else {
        return Ok(());
    };
    let options = config.options(url, data_dir)?;
    let filters = config.filters()?;
    let consumer = Consumer {
        hooks,
        kinds: config.kinds()?,
    };
    let Downlinks { queue, resend } = downlinks;
    let mut downlink = Outbound {
        queue: queue.ok_or("[upstream]: no queue for what the hub sends devices")?,
        waiting: VecDeque::new(),
    };
    let url = url.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let ended = tokio::select! {
                ended = session(&options, &filters, &consumer, &mut downlink, &resend) => ended,
                _ = stop.wait_for(|s| *s) => return,
            };
            consumer.hooks.metrics.upstream_connected.store(0, Relaxed);
            let dropped = downlink.prune();
            consumer
                .hooks
                .metrics
                .upstream_downlinks_dropped
                .fetch_add(dropped as u64, Relaxed);
            let (worked, why) = ended;
            if worked {
                backoff = Duration::from_millis(100);
            }
            tracing::warn!(%url, "upstream broker: {why}; connecting again in {backoff:?}");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    Ok(())
}

/// Drives `event_loop` in a task of its own; its events (up to the first
/// error) arrive on the receiver. The task ends with the guard.
fn poll_in_a_task(
    mut event_loop: rumqttc::EventLoop,
) -> (
    tokio::sync::mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
    AbortOnDrop,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(async move {
        loop {
            let event = event_loop.poll().await;
            let ended = event.is_err();
            if tx.send(event).await.is_err() || ended {
                return;
            }
        }
    });
    (rx, AbortOnDrop(task))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection: subscribes, takes messages and acknowledges each once
/// it is settled, in the order they came. Returns, when the connection
/// ends, whether it worked (it was accepted, and did not end because
/// storage failed: then the next try waits longer each time), and why it
/// ended. Messages not yet acknowledged then come again on the next
/// connection (the session is persistent).
///
/// Meanwhile it sends what the hub has for devices (`downlink`), in
/// order; once subscribed, it has every retained message sent again
/// (`resend`): what the client had taken on an earlier connection but not
/// sent is lost with it.
async fn session(
    options: &MqttOptions,
    filters: &[String],
    consumer: &Consumer,
    downlink: &mut Outbound,
    resend: &Resend,
) -> (bool, String) {
    let (client, event_loop) = AsyncClient::new(options.clone(), REQUESTS);
    // rumqttc's `poll` is not safe to cancel: dropped while it writes a
    // packet (an acknowledgement, a downlink), it loses the packet. So it
    // runs in a task of its own that only polls, and the loop below,
    // which also waits on ingest, takes its events from a channel.
    let (mut events, _poller) = poll_in_a_task(event_loop);
    let mut connected = false;
    let mut queue: VecDeque<(Publish, Waiting)> = VecDeque::new();
    let mut front: Option<(Publish, Waiting)> = None;
    // Acknowledgements the client's request queue had no room for yet: it
    // takes them as its connection drains it.
    let mut unsent: VecDeque<Publish> = VecDeque::new();
    loop {
        while let Some(publish) = unsent.front() {
            if client.try_ack(publish).is_err() {
                break;
            }
            unsent.pop_front();
        }
        while let Some(m) = downlink.waiting.front() {
            let sent = client.try_publish(
                m.topic.as_str(),
                QoS::AtLeastOnce,
                m.retain,
                m.payload.clone(),
            );
            if sent.is_err() {
                break;
            }
            downlink.waiting.pop_front();
            consumer
                .hooks
                .metrics
                .upstream_downlinks
                .fetch_add(1, Relaxed);
        }
        if front.is_none() {
            front = queue.pop_front();
        }
        tokio::select! {
            outcome = async { front.as_mut().expect("guarded").1.outcome().await }, if front.is_some() => {
                let (publish, _) = front.take().expect("guarded");
                match outcome {
                    // Stored, or refused for good: either way acknowledged.
                    Ok(()) | Err(IngestRefusal::Refused { .. }) => {
                        if !unsent.is_empty() || client.try_ack(&publish).is_err() {
                            unsent.push_back(publish);
                        }
                    }
                    Err(IngestRefusal::Retry) => {
                        return (
                            false,
                            "a message could not be stored; reconnecting so that the broker sends it again".into(),
                        );
                    }
                }
            }
            event = events.recv() => match event {
                Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    connected = true;
                    consumer.hooks.metrics.upstream_connections.fetch_add(1, Relaxed);
                    let subscriptions = filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(subscriptions) {
                        return (connected, format!("cannot subscribe: {e}"));
                    }
                }
                // Connected counts from the subscriptions' acknowledgement:
                // from then on, nothing for the hub is missed. A refused
                // subscription is the broker's configuration (its ACL):
                // said, and the hub does not count as connected.
                Some(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                    let refused = refused(filters, &ack);
                    if refused.is_empty() {
                        consumer.hooks.metrics.upstream_connected.store(1, Relaxed);
                        tracing::info!(filters = ?filters, "subscribed at the upstream broker");
                        let resend = resend.clone();
                        tokio::task::spawn_blocking(move || {
                            if let Err(e) = resend() {
                                tracing::warn!("cannot send devices' twins and gates to the upstream broker again: {e}");
                            }
                        });
                    } else {
                        tracing::error!(
                            refused = ?refused,
                            "the upstream broker refused subscriptions (its ACL must let the hub read them)"
                        );
                    }
                }
                Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let waiting = consumer.take(&p);
                    queue.push_back((p, waiting));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return (connected, e.to_string()),
                None => return (connected, "the MQTT event loop ended".into()),
            },
            message = downlink.queue.recv(), if downlink.waiting.len() < REQUESTS => match message {
                Some(m) => downlink.waiting.push_back(m),
                None => return (connected, "the hub is stopping".into()),
            },
        }
    }
}

/// The filters a SUBACK refuses (its codes are in the SUBSCRIBE's order).
fn refused<'f>(filters: &'f [String], ack: &rumqttc::SubAck) -> Vec<&'f String> {
    filters
        .iter()
        .zip(&ack.return_codes)
        .filter(|(_, code)| matches!(code, rumqttc::SubscribeReasonCode::Failure))
        .map(|(filter, _)| filter)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<UpstreamConfig, String> {
        let c: UpstreamConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map(|()| c)
    }

    #[test]
    fn between_connections_only_fresh_commands_wait_for_the_upstream_broker() {
        let (tx, rx) = mpsc::unbounded_channel();
        let message = |topic: &str, retain: bool, age_s: u64| Message {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"{}"),
            retain,
            sent: std::time::Instant::now()
                .checked_sub(Duration::from_secs(age_s))
                .unwrap(),
        };
        let mut outbound = Outbound {
            queue: rx,
            waiting: VecDeque::from([message("strata/v1/a/down/twin", true, 0)]),
        };
        for m in [
            message("strata/v1/a/down/cmd", false, 90),
            message("strata/v1/b/down/control", true, 0),
            message("strata/v1/b/down/cmd", false, 1),
            message("strata/v1/c/down/cmd", false, 2),
        ] {
            tx.send(m).unwrap();
        }
        assert_eq!(outbound.prune(), 3);
        let topics: Vec<_> = outbound.waiting.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["strata/v1/b/down/cmd", "strata/v1/c/down/cmd"]);
        assert_eq!(outbound.prune(), 0);
    }

    #[test]
    fn urls_are_read_with_default_ports() {
        let e = |u: &str| endpoint(u).unwrap();
        assert_eq!(
            e("mqtt://broker.local"),
            Endpoint {
                tls: false,
                host: "broker.local".into(),
                port: 1883
            }
        );
        assert_eq!(e("mqtts://10.0.0.2:9883/").port, 9883);
        assert!(e("mqtts://10.0.0.2").tls);
        assert_eq!(e("mqtt://[::1]:1884").host, "::1");
        assert!(endpoint("http://x").unwrap_err().contains("mqtt://"));
        assert!(endpoint("mqtt://x:port").unwrap_err().contains("port"));
        assert!(endpoint("mqtt://").is_err());
    }

    #[test]
    fn the_section_is_checked() {
        assert!(config("").is_ok());
        let c = config("url = \"mqtt://b:1883\"\nkinds = [\"telemetry\"]\ngroup = \"g\"").unwrap();
        assert_eq!(c.filters().unwrap(), ["$share/g/strata/v1/+/up/telemetry"]);
        let c = config("url = \"mqtt://b\"\ngroup = \"\"").unwrap();
        assert_eq!(c.filters().unwrap().len(), 6);
        assert_eq!(c.filters().unwrap()[0], "strata/v1/+/up/telemetry");
        for (text, error) in [
            ("url = \"mqtt://b\"\nkinds = [\"cmd\"]", "kinds"),
            ("url = \"mqtt://b\"\nkinds = []", "kinds"),
            ("url = \"mqtt://b\"\ngroup = \"a/b\"", "group"),
            ("url = \"mqtt://b\"\npassword = \"p\"", "username"),
            ("url = \"mqtt://b\"\nca_file = \"ca.pem\"", "ca_file"),
            ("url = \"mqtt://b\"\nclient_id = \"\"", "client_id"),
            ("url = \"tcp://b\"", "mqtt://"),
            ("urls = \"mqtt://b\"", "unknown field"),
        ] {
            let e = config(text).unwrap_err();
            assert!(e.contains(error), "{text}: {e}");
        }
    }

    #[test]
    fn refused_subscriptions_are_named() {
        use rumqttc::SubscribeReasonCode::{Failure, Success};
        let filters = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let ack = |codes| rumqttc::SubAck::new(1, codes);
        assert!(refused(&filters, &ack(vec![Success(QoS::AtLeastOnce); 3])).is_empty());
        let codes = vec![Success(QoS::AtMostOnce), Failure, Failure];
        assert_eq!(refused(&filters, &ack(codes)), [&filters[1], &filters[2]]);
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let c = config("url = \"mqtts://b\"\nca_file = \"ca.pem\"").unwrap();
        let e = c.options("mqtts://b", dir.path()).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = c
            .options("mqtts://b", Path::new("/nonexistent"))
            .unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
