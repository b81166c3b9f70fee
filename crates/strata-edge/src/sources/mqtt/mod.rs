//! The MQTT subscribe source: readings published by local devices to a
//! broker on the shop floor (a Mosquitto on the gateway, say). Each topic
//! filter maps its messages to a signal; the payload is a plain number or
//! JSON with the value (and optionally the timestamp) at a JSON pointer.

mod acks;
mod payload;
mod subscriptions;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use serde::Deserialize;
use strata_proto::Quality;

pub use payload::{PayloadFormat, TimestampUnit};

use super::frame::{FrameBuilder, FrameSender, SourceStats};

/// Configuration of an MQTT subscribe source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Stream name its readings are sent under.
    pub stream: String,
    /// The local broker, `host:port`.
    pub broker: String,
    /// Client id (default: `strata-edge-{device}-{stream}`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name, when the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// Send what arrived every this many milliseconds.
    #[serde(default = "default_batch")]
    pub batch_ms: u64,
    /// Messages larger than this many bytes are refused and counted.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Whether the broker forgets the source's session when it
    /// disconnects. With `false` (a persistent session) the broker keeps
    /// what is published on the topics (at QoS 1) while the agent is down,
    /// and delivers it at the reconnect; a message without a timestamp in
    /// its payload is then stamped when it arrives, late. The source then
    /// acknowledges a message only once its reading is in the outbox (or
    /// in a `[pipeline]` window, which a restart empties), so one received
    /// but not yet kept when the agent stopped is delivered again. A
    /// reading the outbox refuses for now (full with `refuse_new`, or a
    /// database error) is counted once in `outbox_errors` and offered
    /// again every second, oldest first, its message unacknowledged until
    /// the outbox takes it; readings that come meanwhile queue behind it,
    /// and messages are acknowledged in the order they came. Once its
    /// limit of messages in flight is reached, the broker queues the rest
    /// (up to its own queue limit); closed-loop rules on this source's
    /// signals then go stale and disarm until the outbox has room (with
    /// `drop_oldest`, the default, they stay live). With a `[pipeline]`,
    /// outputs the outbox refuses are let go (their readings are in the
    /// windows already) and their messages acknowledged. A frame goes early
    /// when 10 messages wait: a broker that lets fewer than 10 be in flight
    /// to a client holds the source to that many per `batch_ms`. The
    /// source unsubscribes from the filters of topics since removed from
    /// this config (the session keeps them). Default: a persistent session
    /// when every topic has a `timestamp`, else clean.
    #[serde(default)]
    pub clean_session: Option<bool>,
    /// The topics to subscribe to.
    pub topics: Vec<TopicConfig>,
    /// Whether names built from topic levels go to the hub as they are
    /// (no `[pipeline]` to rename them), so that one the hub would refuse
    /// is refused here: set by the agent's config, not a key.
    #[serde(skip)]
    pub names_for_the_hub: bool,
}

/// One topic filter and how its messages become readings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// MQTT topic filter; `+` and `#` wildcards allowed.
    pub filter: String,
    /// Signal name; `{N}` is replaced by level N (from 0) of the topic, so
    /// `line/+/temp` with `signal = "{1}.temp"` gives one signal per machine.
    pub signal: String,
    /// Unit of the scaled value.
    #[serde(default)]
    pub unit: String,
    /// How the payload holds the value.
    #[serde(default)]
    pub format: PayloadFormat,
    /// JSON pointer to the value (JSON format), e.g. `/value`; the whole
    /// document when absent.
    #[serde(default)]
    pub value: Option<String>,
    /// JSON pointer to the reading's timestamp; arrival time when absent.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Unit of the timestamp number.
    #[serde(default)]
    pub timestamp_unit: TimestampUnit,
    /// The reading is `value * scale + offset`.
    #[serde(default = "one")]
    pub scale: f64,
    /// See `scale`.
    #[serde(default)]
    pub offset: f64,
}

fn default_batch() -> u64 {
    1000
}
fn default_max_payload() -> usize {
    64 * 1024
}
fn one() -> f64 {
    1.0
}

/// Distinct signals one source may create from topic levels; beyond this,
/// messages are refused and counted so a misbehaving publisher cannot grow
/// the agent's memory without bound.
const MAX_SIGNALS: usize = 4096;

/// How long a connection must last before a reconnect waits briefly again.
const STABLE: Duration = Duration::from_secs(30);

/// The largest packet the source takes off the broker (a payload over
/// `max_payload_bytes` is counted and dropped; one over this fails the
/// connection).
const MAX_PACKET_BYTES: usize = 16 << 20;

impl MqttSourceConfig {
    /// Whether the session is clean: as configured, else clean unless
    /// every topic's messages carry their own time (a message kept for
    /// the agent while it was down would otherwise be stamped late).
    pub fn clean_session(&self) -> bool {
        self.clean_session
            .unwrap_or_else(|| self.topics.iter().any(|t| t.timestamp.is_none()))
    }

    /// Checks the configuration; the message names the topic.
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err(format!("mqtt source {:?}: no topics", self.stream));
        }
        if self.batch_ms == 0 {
            return Err(format!(
                "mqtt source {:?}: batch_ms must be > 0",
                self.stream
            ));
        }
        for (i, t) in self.topics.iter().enumerate() {
            if !rumqttc::valid_filter(&t.filter) {
                return Err(format!(
                    "mqtt source {:?}: topics[{i}].filter {:?} is not a valid MQTT filter",
                    self.stream, t.filter
                ));
            }
            for p in [&t.value, &t.timestamp].into_iter().flatten() {
                if !p.starts_with('/') {
                    return Err(format!(
                        "mqtt source {:?}: topics[{i}]: JSON pointer {p:?} must start with '/'",
                        self.stream
                    ));
                }
            }
            if t.format == PayloadFormat::Number && (t.value.is_some() || t.timestamp.is_some()) {
                return Err(format!(
                    "mqtt source {:?}: topics[{i}]: value/timestamp pointers need format = \"json\"",
                    self.stream
                ));
            }
            if t.signal.is_empty() {
                return Err(format!(
                    "mqtt source {:?}: topics[{i}].signal is empty",
                    self.stream
                ));
            }
            if !t.scale.is_finite() || !t.offset.is_finite() {
                return Err(format!(
                    "mqtt source {:?}: topics[{i}]: scale and offset must be finite",
                    self.stream
                ));
            }
            if !strata_proto::validate::valid_unit(&t.unit) {
                return Err(format!(
                    "mqtt source {:?}: topics[{i}]: unit {:?} must be at most 32 bytes, without control characters",
                    self.stream, t.unit
                ));
            }
        }
        if broker_address(&self.broker).is_none() {
            return Err(format!(
                "mqtt source {:?}: broker {:?} is not host:port",
                self.stream, self.broker
            ));
        }
        Ok(())
    }

    /// Checks the signal names the hub would refuse (it drops a whole
    /// batch for one), for an agent with no pipeline: a name without topic
    /// levels in it is known now; one built from topic levels is checked
    /// as each message arrives.
    pub fn check_names_for_the_hub(&self) -> Result<(), String> {
        match self.topics.iter().enumerate().find(|(_, t)| {
            !t.signal.contains('{') && !strata_proto::validate::valid_name(&t.signal)
        }) {
            Some((i, t)) => Err(format!(
                "mqtt source {:?}: topics[{i}].signal {:?} must be 1 to 128 of A-Z a-z 0-9 _ . : - \
                 (or renamed by a [pipeline])",
                self.stream, t.signal
            )),
            None => Ok(()),
        }
    }
}

/// `host:port` of the broker.
fn broker_address(broker: &str) -> Option<(&str, u16)> {
    broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse().ok()?)))
        .filter(|(h, _)| !h.is_empty())
}

/// The signal name for a topic: `{N}` replaced by the topic's level N.
fn signal_name(template: &str, topic: &str) -> Option<String> {
    if !template.contains('{') {
        return Some(template.to_string());
    }
    let levels: Vec<&str> = topic.split('/').collect();
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let level: usize = rest[open + 1..close].parse().ok()?;
        out.push_str(levels.get(level)?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Runs the source until the task is dropped; a persistent session's
/// filters are remembered in `data_dir`.
pub async fn run(
    config: MqttSourceConfig,
    data_dir: &std::path::Path,
    frames: FrameSender,
    stats: Arc<SourceStats>,
) {
    let mut builder = FrameBuilder::new(&config.stream, std::iter::empty());
    let mut signals: HashMap<String, usize> = HashMap::new();
    let period = Duration::from_millis(config.batch_ms);
    let mut flush = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff =
        crate::uplink::Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let (host, port) = match broker_address(&config.broker) {
        Some(hp) => hp,
        None => {
            tracing::error!(stream = %config.stream, "mqtt source: broker {:?} is not host:port", config.broker);
            return;
        }
    };
    let client_id = config
        .client_id
        .clone()
        .unwrap_or_else(|| format!("strata-edge-{}", config.stream));
    let mut options = MqttOptions::new(client_id.clone(), host, port);
    options.set_keep_alive(Duration::from_secs(15));
    // Larger than the payload limit, so that a payload over it arrives and
    // is counted (rumqttc fails the connection on a packet over its own
    // limit, and a retained one would fail every reconnect).
    options.set_max_packet_size(
        (config.max_payload_bytes + 1024).max(MAX_PACKET_BYTES),
        config.max_payload_bytes + 1024,
    );
    if let Some(user) = &config.username {
        options.set_credentials(user, config.password.clone().unwrap_or_default());
    }
    let persistent = !config.clean_session();
    options.set_clean_session(!persistent);
    // A persistent session keeps what is not acknowledged: acknowledge
    // only what the outbox holds.
    options.set_manual_acks(persistent);
    let (client, event_loop) = AsyncClient::new(options, 16);
    let connection = persistent.then(|| Arc::new(acks::Connection::default()));
    // The event loop runs in a task of its own (the loop below also waits
    // on its timer). With acknowledgements held, before reconnecting it
    // moves `connection` on (see [`acks::Connection`]).
    let next_connection = connection.clone();
    let (mut events, reconnect, _poller) =
        crate::uplink::poll_in_a_task(event_loop, move |event_loop| {
            if let Some(connection) = &next_connection {
                connection.next(|| event_loop.clean());
            }
        });
    let lost = connection.clone();
    let stream: Arc<str> = config.stream.as_str().into();
    let mut acks = connection.map(|c| acks::Acks::start(client.clone(), c, stream, frames.clone()));
    let configured: Vec<String> = config.topics.iter().map(|t| t.filter.clone()).collect();
    let mut subscriptions = persistent.then(|| {
        subscriptions::Subscriptions::open(data_dir, &config.stream, &client_id, &configured)
    });
    let mut unsubscribing = 0;
    let mut connected_at = None;
    loop {
        tokio::select! {
            _ = flush.tick() => {
                if !send(&mut builder, &frames, acks.as_mut()).await {
                    return;
                }
            }
            // The poller ends only by panicking; the source then stops.
            event = events.recv() => match event.unwrap_or(Err(rumqttc::ConnectionError::RequestsDone)) {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    stats.set_connected(true);
                    connected_at = Some(tokio::time::Instant::now());
                    tracing::info!(stream = %config.stream, broker = %config.broker, "mqtt source connected");
                    // Subscribing again on every connect: a clean session
                    // has none, and a persistent one may have been
                    // forgotten (a broker restarted without persistence).
                    // One SUBSCRIBE for all: one request each would
                    // overflow the client's queue of 16 past 16 filters.
                    let filters: Vec<SubscribeFilter> = config
                        .topics
                        .iter()
                        .map(|t| SubscribeFilter::new(t.filter.clone(), QoS::AtLeastOnce))
                        .collect();
                    // A persistent session keeps the filters of topics
                    // since removed from the config.
                    let stale = subscriptions.as_ref().map(|s| s.stale()).unwrap_or_default();
                    unsubscribing = stale.len();
                    if !stale.is_empty() {
                        tracing::info!(stream = %config.stream, filters = ?stale, "unsubscribing from filters no longer configured");
                    }
                    // Awaited in a task of its own: the client's queue may
                    // be full for a moment (acknowledgements), and the
                    // loop must go on taking events meanwhile.
                    let client = client.clone();
                    tokio::spawn(async move {
                        if client.subscribe_many(filters).await.is_err() {
                            return;
                        }
                        for filter in stale {
                            if client.unsubscribe(filter).await.is_err() {
                                return;
                            }
                        }
                    });
                }
                Ok(Event::Incoming(Packet::UnsubAck(_))) if unsubscribing > 0 => {
                    unsubscribing -= 1;
                    if unsubscribing == 0
                        && let Some(subscriptions) = &mut subscriptions
                    {
                        subscriptions.unsubscribed();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = p.topic.as_str();
                    match reading(&config, topic, &p.payload, p.retain) {
                        Ok((name, unit, ts, value)) => {
                            let index = match signals.get(&name) {
                                Some(&i) => Some(i),
                                None if signals.len() < MAX_SIGNALS => {
                                    let i = builder.add_signal(name.clone(), unit.to_string());
                                    signals.insert(name, i);
                                    Some(i)
                                }
                                None => None,
                            };
                            match index {
                                Some(index) => {
                                    builder.push(index, ts, value, Quality::Good);
                                    stats.readings.fetch_add(1, Ordering::Relaxed);
                                }
                                None => stats.error(),
                            }
                        }
                        Err(e) => {
                            stats.error();
                            tracing::debug!(stream = %config.stream, topic, "message refused: {e}");
                        }
                    }
                    let send_now = acks.as_mut().is_some_and(|acks| acks.hold(p));
                    if send_now && !send(&mut builder, &frames, acks.as_mut()).await {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    stats.set_connected(false);
                    stats.error();
                    // Its messages not acknowledged are sent again on the
                    // next connection: their readings waiting to be
                    // offered again are let go from now on.
                    if let Some(connection) = &lost {
                        connection.next(|| ());
                    }
                    // The wait starts short again only after a connection
                    // that lasted: one taken over at once (another client
                    // with this id) waits longer each time.
                    if connected_at.take().is_some_and(|at| at.elapsed() >= STABLE) {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(stream = %config.stream, broker = %config.broker, "mqtt source: {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    if reconnect.send(()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Sends the frame collected so far (through `acks` when the source holds
/// acknowledgements); `false` when the pipeline has gone.
async fn send(
    builder: &mut FrameBuilder,
    frames: &FrameSender,
    acks: Option<&mut acks::Acks>,
) -> bool {
    match acks {
        Some(acks) => acks.send(builder, frames).await,
        None => builder.send(frames).await,
    }
}

/// One message as (signal, unit, timestamp, value), or why it was refused.
/// A retained message (the broker's copy of the last one, sent again at
/// every subscribe) is taken only with a timestamp in its payload: stamped
/// with its arrival, an old value would pass for a fresh one (to a control
/// rule, a live sensor).
fn reading<'a>(
    config: &'a MqttSourceConfig,
    topic: &str,
    payload: &[u8],
    retained: bool,
) -> Result<(String, &'a str, i64, f64), String> {
    if payload.len() > config.max_payload_bytes {
        return Err(format!("payload of {} bytes is too large", payload.len()));
    }
    let t = config
        .topics
        .iter()
        .find(|t| rumqttc::matches(topic, &t.filter))
        .ok_or("no topic filter matches")?;
    let name =
        signal_name(&t.signal, topic).ok_or("signal template names a missing topic level")?;
    // The hub would drop it with every other signal of its batch (a
    // pipeline may rename it).
    if config.names_for_the_hub && !strata_proto::validate::valid_name(&name) {
        return Err(format!(
            "signal name {name:?} is not 1 to 128 of A-Z a-z 0-9 _ . : -"
        ));
    }
    let (value, ts) = payload::parse(t, payload)?;
    if retained && ts.is_none() {
        return Err("a retained message without a timestamp: how old it is is unknown".into());
    }
    let value = value * t.scale + t.offset;
    if !value.is_finite() {
        return Err("value is not a finite number".into());
    }
    Ok((name, &t.unit, ts.unwrap_or_else(crate::now_ns), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_take_topic_levels() {
        assert_eq!(signal_name("temp", "a/b").unwrap(), "temp");
        assert_eq!(signal_name("{1}.temp", "line/m7/temp").unwrap(), "m7.temp");
        assert_eq!(signal_name("{0}-{2}", "a/b/c").unwrap(), "a-c");
        assert!(signal_name("{5}", "a/b").is_none());
        assert!(signal_name("{x}", "a/b").is_none());
        assert!(signal_name("{1", "a/b").is_none());
    }

    fn config(topics: Vec<TopicConfig>) -> MqttSourceConfig {
        MqttSourceConfig {
            stream: "local".into(),
            broker: "127.0.0.1:1883".into(),
            client_id: None,
            username: None,
            password: None,
            batch_ms: 100,
            max_payload_bytes: 64,
            clean_session: None,
            topics,
            names_for_the_hub: true,
        }
    }

    fn topic(filter: &str, format: PayloadFormat, value: Option<&str>) -> TopicConfig {
        TopicConfig {
            filter: filter.into(),
            signal: "{1}".into(),
            unit: "Cel".into(),
            format,
            value: value.map(Into::into),
            timestamp: None,
            timestamp_unit: TimestampUnit::Ms,
            scale: 2.0,
            offset: 1.0,
        }
    }

    #[test]
    fn the_session_persists_by_default_only_when_every_message_carries_its_time() {
        let stamped = TopicConfig {
            timestamp: Some("/ts".into()),
            ..topic("a/+", PayloadFormat::Json, Some("/v"))
        };
        let unstamped = topic("b/+", PayloadFormat::Number, None);
        assert!(!config(vec![stamped.clone()]).clean_session());
        assert!(config(vec![stamped.clone(), unstamped.clone()]).clean_session());
        let chosen = MqttSourceConfig {
            clean_session: Some(false),
            ..config(vec![unstamped])
        };
        assert!(!chosen.clean_session());
        let chosen = MqttSourceConfig {
            clean_session: Some(true),
            ..config(vec![stamped])
        };
        assert!(chosen.clean_session());
    }

    #[test]
    fn messages_become_scaled_readings_or_clear_refusals() {
        let c = config(vec![
            topic("plain/+", PayloadFormat::Number, None),
            topic("json/+", PayloadFormat::Json, Some("/v")),
        ]);
        c.validate().unwrap();
        let (name, unit, _, v) = reading(&c, "plain/t1", b" 20.5\n", false).unwrap();
        assert_eq!((name.as_str(), unit, v), ("t1", "Cel", 42.0));
        let (name, _, _, v) = reading(&c, "json/t2", br#"{"v": 3}"#, false).unwrap();
        assert_eq!((name.as_str(), v), ("t2", 7.0));
        assert!(
            reading(&c, "other/x", b"1", false)
                .unwrap_err()
                .contains("no topic filter")
        );
        assert!(reading(&c, "plain/t1", b"abc", false).is_err());
        assert!(reading(&c, "plain/t1", b"NaN", false).is_err());
        assert!(reading(&c, "json/t2", br#"{"w": 3}"#, false).is_err());
        assert!(
            reading(&c, "plain/t1", &[b'1'; 65], false)
                .unwrap_err()
                .contains("too large")
        );
        // A topic level the hub would not take as a name: that message is
        // refused, not the whole batch at the hub; with a pipeline (which
        // may rename it) it goes on.
        assert!(
            reading(&c, "plain/Press 3", b"1", false)
                .unwrap_err()
                .contains("\"Press 3\"")
        );
        let piped = MqttSourceConfig {
            names_for_the_hub: false,
            ..c.clone()
        };
        assert!(reading(&piped, "plain/Press 3", b"1", false).is_ok());
    }

    #[test]
    fn a_retained_message_is_taken_only_with_its_own_timestamp() {
        let mut stamped = topic("json/+", PayloadFormat::Json, Some("/v"));
        stamped.timestamp = Some("/t".into());
        let c = config(vec![topic("plain/+", PayloadFormat::Number, None), stamped]);
        c.validate().unwrap();
        assert!(
            reading(&c, "plain/t1", b"20", true)
                .unwrap_err()
                .contains("retained")
        );
        assert!(reading(&c, "plain/t1", b"20", false).is_ok());
        let (_, _, ts, _) = reading(&c, "json/t2", br#"{"v": 3, "t": 1000}"#, true).unwrap();
        assert_eq!(ts, 1_000_000_000);
    }

    #[test]
    fn bad_filters_and_pointers_are_refused_at_start() {
        let e = config(vec![topic("a/#/b", PayloadFormat::Number, None)])
            .validate()
            .unwrap_err();
        assert!(e.contains("topics[0].filter"), "{e}");
        let e = config(vec![topic("a/+", PayloadFormat::Json, Some("v"))])
            .validate()
            .unwrap_err();
        assert!(e.contains("must start with '/'"), "{e}");
        let e = config(vec![topic("a/+", PayloadFormat::Number, Some("/v"))])
            .validate()
            .unwrap_err();
        assert!(e.contains("format = \"json\""), "{e}");
        let mut nan = topic("a/+", PayloadFormat::Number, None);
        nan.scale = f64::NAN;
        let e = config(vec![nan]).validate().unwrap_err();
        assert!(e.contains("finite"), "{e}");
        let mut long_unit = topic("a/+", PayloadFormat::Number, None);
        long_unit.unit = "u".repeat(33);
        let e = config(vec![long_unit]).validate().unwrap_err();
        assert!(e.contains("unit"), "{e}");
        let mut no_port = config(vec![topic("a/+", PayloadFormat::Number, None)]);
        no_port.broker = "localhost".into();
        let e = no_port.validate().unwrap_err();
        assert!(e.contains("host:port"), "{e}");
        // Without a pipeline, a fixed name the hub would refuse.
        let mut spaced = topic("a/+", PayloadFormat::Number, None);
        spaced.signal = "Motor Temp".into();
        let c = config(vec![spaced]);
        c.validate().unwrap();
        let e = c.check_names_for_the_hub().unwrap_err();
        assert!(e.contains("\"Motor Temp\""), "{e}");
    }
}
