//! The uplink: sends outbox batches to the hub over MQTT (QoS 1), in order,
//! with a bounded window in flight, and removes each batch from the outbox
//! only when the hub has acknowledged it.
//!
//! On any connection error everything unacknowledged is resent from the
//! outbox after a reconnect with jittered exponential backoff (so a fleet
//! that lost its hub does not come back as one synchronized storm). The
//! delays start again from the shortest only once the hub takes data (it
//! acknowledges a batch) or the connection has stayed up 30 s: a hub that
//! accepts connections but cannot store closes each one at the first
//! batch, and the fleet must keep backing off from it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use strata_proto::payload::{Encoding, encode_health};
use strata_proto::{DeviceId, Direction, Health, Topic, TopicKind};
use tokio::sync::Notify;

use crate::outbox::{MAX_PAYLOAD_BYTES, Outbox};

/// How the uplink connects.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// The device id.
    pub device: DeviceId,
    /// The hub's MQTT address.
    pub mqtt: SocketAddr,
    /// The device credential.
    pub credential: String,
    /// Unacknowledged batches in flight at once.
    pub window: u16,
    /// TLS with the identity in this directory (read again at every
    /// connect, so a renewed certificate is used from the next one).
    pub tls_dir: Option<std::path::PathBuf>,
}

/// What the hub sends down, and the twin's reports back: desired
/// documents received go to `desired`; the reported document is published
/// on every connect and whenever it changes; the site gate and approvals
/// go to the closed-loop rules.
#[derive(Debug, Clone)]
pub struct Downlink {
    /// The newest desired twin received (a newer one replaces one the
    /// twin task has not read yet).
    pub desired: tokio::sync::watch::Sender<Option<Vec<u8>>>,
    /// What to report.
    pub reported: Arc<crate::twin::Reported>,
    /// The newest site gate received (`down/control`).
    pub gate: tokio::sync::watch::Sender<Option<strata_proto::ControlGate>>,
    /// Approvals of proposed actions (`down/cmd`).
    pub approvals: tokio::sync::mpsc::Sender<strata_proto::Approval>,
}

/// Backoff between reconnects: exponential with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `base`, doubles up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            attempt: 0,
            base,
            max,
        }
    }

    /// The next delay: uniformly random in [0, min(max, base * 2^attempt)].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let mut r = [0u8; 8];
        let _ = getrandom::fill(&mut r);
        ceiling.mul_f64(u64::from_le_bytes(r) as f64 / u64::MAX as f64)
    }

    /// After a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A connection up this long counts as good, as one the hub takes data
/// on does at once: the next reconnect starts from the shortest delay.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// Marks a publish in flight that is not an outbox row.
const NOT_OUTBOX: i64 = -1;

/// The largest message the agent takes from the hub (a desired twin with
/// many models, their drift profiles and updates).
const MAX_INCOMING_BYTES: usize = 16 << 20;

/// Runs the uplink until the task is dropped.
pub async fn run(config: UplinkConfig, outbox: Arc<Outbox>, appended: Arc<Notify>, twin: Downlink) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let started = Instant::now();
    loop {
        match session(&config, &outbox, &appended, &twin, &mut backoff, started).await {
            Ok(()) => return,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::info!(device = %config.device, "uplink down ({e}); reconnecting in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn options(config: &UplinkConfig) -> Result<MqttOptions, String> {
    let mut o = MqttOptions::new(
        config.device.as_str(),
        config.mqtt.ip().to_string(),
        config.mqtt.port(),
    );
    match &config.tls_dir {
        // The certificate is the identity; no password goes over the wire.
        Some(dir) => {
            let tls = crate::identity::client_config(dir)?;
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls),
            ));
        }
        None => {
            o.set_credentials(config.device.as_str(), config.credential.as_str());
        }
    }
    // rumqttc's default is 10 KiB either way: one batch of a 1 kHz
    // waveform, or a twin with a few models' drift profiles, is more.
    // Batches are kept within MAX_PAYLOAD_BYTES; the topic and header add
    // little.
    o.set_max_packet_size(MAX_INCOMING_BYTES, MAX_PAYLOAD_BYTES + 4096);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_inflight(config.window.max(1));
    o.set_clean_session(true);
    let will = Topic::new(config.device.clone(), Direction::Up, TopicKind::Health);
    let offline = encode_health(
        &Health {
            online: false,
            ts_ns: 0,
            uptime_s: 0,
        },
        Encoding::Protobuf,
    );
    o.set_last_will(LastWill::new(
        will.to_string(),
        offline,
        QoS::AtLeastOnce,
        false,
    ));
    Ok(o)
}

/// Drives `event_loop` in a task of its own, since rumqttc's `poll` is not
/// safe to cancel (dropped while it writes a packet, it loses the packet)
/// and its callers wait on other things too; its events arrive on the
/// receiver. After an error the task polls again (which reconnects) only
/// once told to on the sender, first calling `before_reconnect`; dropping
/// the sender ends it, as does dropping the guard.
pub(crate) fn poll_in_a_task(
    mut event_loop: rumqttc::EventLoop,
    mut before_reconnect: impl FnMut(&mut rumqttc::EventLoop) + Send + 'static,
) -> (
    tokio::sync::mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
    tokio::sync::mpsc::Sender<()>,
    AbortOnDrop,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (reconnect, mut told) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(async move {
        loop {
            let event = event_loop.poll().await;
            let failed = event.is_err();
            if tx.send(event).await.is_err() || (failed && told.recv().await.is_none()) {
                return;
            }
            if failed {
                before_reconnect(&mut event_loop);
            }
        }
    });
    (rx, reconnect, AbortOnDrop(task))
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection's life: returns an error when it ends.
async fn session(
    config: &UplinkConfig,
    outbox: &Arc<Outbox>,
    appended: &Notify,
    twin: &Downlink,
    backoff: &mut Backoff,
    started: Instant,
) -> Result<(), String> {
    let window = usize::from(config.window.max(1));
    // Room for the window, three subscriptions, the reported twin and the
    // health message of a connect.
    let (client, event_loop) = AsyncClient::new(options(config)?, window + 5);
    // rumqttc's `poll` is not safe to cancel: dropped while it writes a
    // packet (a slow link, a full write buffer), it loses the packet yet
    // counts it in flight. So it runs in a task of its own that only
    // polls, and the loop below, which also waits on other things, takes
    // its events from a channel.
    // A session ends at its connection's first error: it never tells the
    // poller to reconnect.
    let (mut events, _reconnect, _poller) = poll_in_a_task(event_loop, |_| {});
    let topic = Topic::new(config.device.clone(), Direction::Up, TopicKind::Telemetry).to_string();
    let sketch_topic =
        Topic::new(config.device.clone(), Direction::Up, TopicKind::Sketch).to_string();
    let desired_topic =
        Topic::new(config.device.clone(), Direction::Down, TopicKind::Twin).to_string();
    let reported_topic =
        Topic::new(config.device.clone(), Direction::Up, TopicKind::Twin).to_string();
    let events_topic =
        Topic::new(config.device.clone(), Direction::Up, TopicKind::Events).to_string();
    let gate_topic =
        Topic::new(config.device.clone(), Direction::Down, TopicKind::Control).to_string();
    let cmd_topic = Topic::new(config.device.clone(), Direction::Down, TopicKind::Cmd).to_string();
    let health_topic =
        Topic::new(config.device.clone(), Direction::Up, TopicKind::Health).to_string();
    // A publish that is not an outbox row (the reported twin, the health
    // message of a connect) is queued as NOT_OUTBOX, so packet ids still
    // pair with the right rows.
    let report = |client: &AsyncClient, queued: &mut VecDeque<i64>| -> Result<(), String> {
        if let Some(doc) = twin.reported.latest() {
            client
                .try_publish(reported_topic.as_str(), QoS::AtLeastOnce, false, doc)
                .map_err(|e| format!("cannot queue the reported twin: {e}"))?;
            queued.push_back(NOT_OUTBOX);
        }
        Ok(())
    };
    // Outbox rows handed to the client, in order, until it assigns a packet id.
    let mut queued: VecDeque<i64> = VecDeque::new();
    let mut in_flight: HashMap<u16, i64> = HashMap::new();
    let mut cursor = 0i64;
    let mut connected = false;
    let mut connected_at: Option<Instant> = None;
    let mut acked = Vec::new();
    loop {
        if connected_at.is_some_and(|at| at.elapsed() >= STABLE_CONNECTION) {
            // Up for a while with nothing to send: good too.
            backoff.reset();
            connected_at = None;
        }
        if connected {
            if !acked.is_empty() {
                // A durable delete waits for the disk: off the runtime's
                // threads, which other agents' tasks (or this agent's
                // twin) share.
                let (o, ids) = (outbox.clone(), std::mem::take(&mut acked));
                tokio::task::spawn_blocking(move || o.remove(&ids))
                    .await
                    .map_err(|e| format!("outbox task failed: {e}"))?
                    .map_err(|e| e.to_string())?;
            }
            let room = window.saturating_sub(queued.len() + in_flight.len());
            if room > 0 {
                for e in outbox.peek(cursor, room).map_err(|e| e.to_string())? {
                    if e.payload.len() > MAX_PAYLOAD_BYTES {
                        // Kept by a release that did not limit batches: it
                        // would fail the connection every time it is sent.
                        tracing::warn!(
                            device = %config.device, stream = %e.stream, seq = e.seq,
                            bytes = e.payload.len(),
                            "dropping a batch too large to send in one message"
                        );
                        outbox.discard(&[e.id]).map_err(|e| e.to_string())?;
                        cursor = e.id;
                        continue;
                    }
                    // Drift sketches and closed-loop action records have
                    // their own topics; everything else is telemetry.
                    let to = if e.stream.starts_with("sketch:") {
                        &sketch_topic
                    } else if e.stream == crate::control::CONTROL_STREAM {
                        &events_topic
                    } else {
                        &topic
                    };
                    client
                        .try_publish(to.as_str(), QoS::AtLeastOnce, false, e.payload)
                        .map_err(|e| format!("cannot queue a publish: {e}"))?;
                    queued.push_back(e.id);
                    cursor = e.id;
                }
            }
        }
        tokio::select! {
            event = events.recv() => match event {
                Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    // Not yet a reason to reconnect quickly next time: a
                    // hub that cannot store answers a publish by closing
                    // the connection, and the fleet must then back off.
                    connected = true;
                    connected_at = Some(Instant::now());
                    tracing::info!(device = %config.device, "uplink connected");
                    for t in [&desired_topic, &gate_topic, &cmd_topic] {
                        client
                            .try_subscribe(t.as_str(), QoS::AtLeastOnce)
                            .map_err(|e| format!("cannot subscribe to {t}: {e}"))?;
                    }
                    report(&client, &mut queued)?;
                    // Online, said on the health topic as the will says
                    // offline: a hub behind an upstream broker sees no
                    // connection, only messages.
                    let online = encode_health(
                        &Health {
                            online: true,
                            ts_ns: crate::now_ns(),
                            uptime_s: started.elapsed().as_secs(),
                        },
                        Encoding::Protobuf,
                    );
                    client
                        .try_publish(health_topic.as_str(), QoS::AtLeastOnce, false, online)
                        .map_err(|e| format!("cannot queue the health message: {e}"))?;
                    queued.push_back(NOT_OUTBOX);
                }
                Some(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == desired_topic => {
                    twin.desired.send_replace(Some(p.payload.to_vec()));
                }
                Some(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == gate_topic => {
                    match serde_json::from_slice::<strata_proto::ControlGate>(&p.payload) {
                        Ok(gate) => {
                            twin.gate.send_replace(Some(gate));
                        }
                        Err(e) => tracing::warn!(device = %config.device, "ignoring a malformed site gate: {e}"),
                    }
                }
                Some(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == cmd_topic => {
                    match serde_json::from_slice::<strata_proto::Approval>(&p.payload) {
                        Ok(a) => {
                            if twin.approvals.try_send(a).is_err() {
                                tracing::warn!(device = %config.device, "approval dropped: the control task is busy or not running");
                            }
                        }
                        Err(_) => tracing::debug!(device = %config.device, "command is not an approval; no handler for it here"),
                    }
                }
                Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(id) = queued.pop_front() {
                        in_flight.insert(pkid, id);
                    }
                }
                Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    if let Some(id) = in_flight.remove(&ack.pkid).filter(|&id| id != NOT_OUTBOX) {
                        acked.push(id);
                        // The hub takes data: the connection is good.
                        backoff.reset();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the MQTT event loop ended".into()),
            },
            _ = appended.notified(), if connected => {}
            _ = twin.reported.changed.notified(), if connected => report(&client, &mut queued)?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..40).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[..1].iter().all(|d| *d <= Duration::from_millis(100)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 30, "delays are jittered");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    /// A hub that takes connections but cannot store telemetry: it asks
    /// for every batch again by closing the connection, as the hub's
    /// ingest does when its storage fails.
    #[derive(Default)]
    struct CannotStore {
        connects: std::sync::atomic::AtomicUsize,
    }

    impl strata_broker::Hooks for CannotStore {
        fn authenticate(&self, _: &strata_broker::ConnectInfo<'_>) -> strata_broker::AuthDecision {
            strata_broker::AuthDecision::Allow
        }
        fn authorize_publish(&self, _: strata_broker::Client<'_>, _: &str) -> bool {
            true
        }
        fn authorize_subscribe(&self, _: strata_broker::Client<'_>, _: &str) -> bool {
            true
        }
        fn on_publish(
            &self,
            _: strata_broker::Client<'_>,
            msg: &strata_broker::InboundPublish,
        ) -> strata_broker::PublishDecision {
            if !msg.topic.ends_with("/up/telemetry") {
                return strata_broker::PublishDecision::Route;
            }
            let (done, answer) = tokio::sync::oneshot::channel();
            let _ = done.send(Err(strata_broker::IngestRefusal::Retry));
            strata_broker::PublishDecision::RouteAfter(answer)
        }
        fn on_connect(&self, _: &str) {
            self.connects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hub_that_takes_no_data_sees_the_device_back_off() {
        let hooks = Arc::new(CannotStore::default());
        let config = strata_broker::Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Default::default()
        };
        let broker = strata_broker::Broker::start(config, hooks.clone())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(
            Outbox::open(
                dir.path(),
                1 << 20,
                crate::outbox::DropPolicy::DropOldest,
                crate::outbox::Durability::Process,
            )
            .unwrap(),
        );
        outbox
            .append("plant", |seq| seq.to_le_bytes().to_vec())
            .unwrap();
        let (desired, _) = tokio::sync::watch::channel(None);
        let (gate, _) = tokio::sync::watch::channel(None);
        let (approvals, _approved) = tokio::sync::mpsc::channel(1);
        let downlink = Downlink {
            desired,
            reported: Arc::default(),
            gate,
            approvals,
        };
        let uplink = UplinkConfig {
            device: DeviceId::new("press-1").unwrap(),
            mqtt: broker.local_addr(),
            credential: "secret".into(),
            window: 8,
            tls_dir: None,
        };
        let task = tokio::spawn(run(uplink, outbox.clone(), Arc::default(), downlink));
        tokio::time::sleep(Duration::from_secs(4)).await;
        task.abort();
        // Each connection is accepted, then closed at the batch's publish.
        // With delays that start again from the shortest at every connect
        // (0 to 200 ms) that is some 30 connections in 4 s; with delays
        // that keep growing (0 to 200 ms, 400 ms, 800 ms, ...), a handful.
        let connects = hooks.connects.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            connects >= 2,
            "the device came back after the first refusal"
        );
        assert!(
            connects <= 12,
            "{connects} connections in 4 s: the device did not back off"
        );
        // Nothing was lost meanwhile.
        assert_eq!(outbox.peek(0, 10).unwrap().len(), 1);
        broker.shutdown().await;
    }
}
