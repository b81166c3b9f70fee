//! The OPC UA source: one client session to a server, one subscription
//! with a monitored item per configured node. The server pushes changes;
//! the client library reconnects and recreates the subscription by itself,
//! and this source counts every loss and reconnection for health.
//!
//! Only the `None` security policy with anonymous identity is offered for
//! now; signed and encrypted channels need the platform CA (security issue).

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken, SessionPollResult};
use opcua::types::{
    DataValue, MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NodeId, ReadValueId, TimestampsToReturn, UserTokenPolicy, Variant,
};
use serde::Deserialize;
use strata_proto::Quality;

use super::frame::{FrameBuilder, FrameSender, SourceStats};
use crate::AbortOnDrop;

/// Configuration of an OPC UA source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaConfig {
    /// Stream name its readings are sent under.
    pub stream: String,
    /// The server's endpoint URL, e.g. `opc.tcp://plc:4840/`.
    pub endpoint: String,
    /// How often the server samples each node, in milliseconds.
    #[serde(default = "default_sampling")]
    pub sampling_ms: u64,
    /// How often the server sends what changed, in milliseconds.
    #[serde(default = "default_publishing")]
    pub publishing_ms: u64,
    /// Send what arrived every this many milliseconds.
    #[serde(default = "default_batch")]
    pub batch_ms: u64,
    /// A node whose value has not changed for this many milliseconds is
    /// sent again, stamped now, while the session is up: a subscription
    /// reports changes only, and a steady signal would otherwise look
    /// dead to a control rule (stale) and to the hub. A value is sent
    /// again only once the server has reported it since the last
    /// reconnection. `0` sends changes only.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// The nodes to monitor, one signal each.
    pub nodes: Vec<NodeConfig>,
}

/// One monitored node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node id in OPC UA text form, e.g. `ns=2;s=Line1.Temperature`.
    pub node: String,
    /// Signal name.
    pub name: String,
    /// Unit of the scaled value.
    #[serde(default)]
    pub unit: String,
    /// The reading is `value * scale + offset`.
    #[serde(default = "one")]
    pub scale: f64,
    /// See `scale`.
    #[serde(default)]
    pub offset: f64,
}

fn default_sampling() -> u64 {
    100
}
fn default_publishing() -> u64 {
    500
}
fn default_batch() -> u64 {
    1000
}
fn default_heartbeat() -> u64 {
    10_000
}
fn one() -> f64 {
    1.0
}

/// Values queued between the client's callback and this source; when full,
/// values are counted and dropped rather than blocking the session.
const QUEUE: usize = 65_536;

impl OpcuaConfig {
    /// Checks the configuration; the message names the node.
    pub fn validate(&self) -> Result<(), String> {
        if !self.endpoint.starts_with("opc.tcp://") {
            return Err(format!(
                "opcua source {:?}: endpoint {:?} must start with opc.tcp://",
                self.stream, self.endpoint
            ));
        }
        if self.nodes.is_empty() {
            return Err(format!("opcua source {:?}: no nodes", self.stream));
        }
        if self.sampling_ms == 0 || self.publishing_ms == 0 || self.batch_ms == 0 {
            return Err(format!(
                "opcua source {:?}: sampling_ms, publishing_ms and batch_ms must be > 0",
                self.stream
            ));
        }
        let mut ids = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let id = NodeId::from_str(&n.node).map_err(|_| {
                format!(
                    "opcua source {:?}: nodes[{i}].node {:?} is not a node id (e.g. ns=2;s=Name or ns=2;i=42)",
                    self.stream, n.node
                )
            })?;
            // One node twice: values arrive for one of the two signals.
            if ids.contains(&id) {
                return Err(format!(
                    "opcua source {:?}: nodes[{i}].node {:?} is monitored twice",
                    self.stream, n.node
                ));
            }
            ids.push(id);
            // Two signals of one name: the hub drops the whole batch, and
            // a pipeline takes the second reading as late.
            if self.nodes[..i].iter().any(|o| o.name == n.name) {
                return Err(format!(
                    "opcua source {:?}: two nodes are named {:?}",
                    self.stream, n.name
                ));
            }
            if !n.scale.is_finite() || !n.offset.is_finite() {
                return Err(format!(
                    "opcua source {:?}: nodes[{i}] ({}) scale and offset must be finite",
                    self.stream, n.name
                ));
            }
            if !strata_proto::validate::valid_unit(&n.unit) {
                return Err(format!(
                    "opcua source {:?}: nodes[{i}] ({}) unit {:?} must be at most 32 bytes, without control characters",
                    self.stream, n.name, n.unit
                ));
            }
        }
        Ok(())
    }

    /// Checks the signal names the hub would refuse (it drops a whole
    /// batch for one): for a source whose names go to the hub as they are,
    /// with no pipeline to rename them.
    pub fn check_names_for_the_hub(&self) -> Result<(), String> {
        match self
            .nodes
            .iter()
            .find(|n| !strata_proto::validate::valid_name(&n.name))
        {
            Some(n) => Err(format!(
                "opcua source {:?}: node name {:?} must be 1 to 128 of A-Z a-z 0-9 _ . : - \
                 (or renamed by a [pipeline])",
                self.stream, n.name
            )),
            None => Ok(()),
        }
    }
}

/// Runs the source until the task is dropped. `pki_dir` holds the client's
/// certificate store (the client library insists on one).
pub async fn run(
    config: OpcuaConfig,
    pki_dir: PathBuf,
    frames: FrameSender,
    stats: Arc<SourceStats>,
) {
    let nodes: Vec<NodeId> = match config
        .nodes
        .iter()
        .map(|n| NodeId::from_str(&n.node))
        .collect::<Result<_, _>>()
    {
        Ok(n) => n,
        Err(_) => {
            tracing::error!(stream = %config.stream, "opcua source: invalid node id (checked at start)");
            return;
        }
    };
    let index: HashMap<NodeId, usize> = nodes.iter().cloned().zip(0..).collect();
    let (session, event_loop) = match connect(&config.endpoint, pki_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(stream = %config.stream, "{e}");
            return;
        }
    };

    let (values_tx, mut values) = tokio::sync::mpsc::channel::<Change>(QUEUE);
    let index = Arc::new(index);
    let callback = || {
        let (index, values_tx, stats) = (index.clone(), values_tx.clone(), stats.clone());
        DataChangeCallback::new(move |value, item| {
            let Some(&i) = index.get(&item.item_to_monitor().node_id) else {
                return;
            };
            // Read here: what waits in the queue is a few numbers, never an
            // array or a string a node turned out to hold.
            let Some((ts, raw, quality)) = reading(&value) else {
                stats.error();
                return;
            };
            let server_ns = value
                .server_timestamp
                .and_then(|t| t.as_chrono().timestamp_nanos_opt())
                .unwrap_or(ts);
            let change = Change {
                index: i,
                ts,
                raw,
                quality,
                server_ns,
            };
            if values_tx.try_send(change).is_err() {
                stats.error();
            }
        })
    };

    // The event loop drives the connection; its events tell us about losses.
    let loop_stats = stats.clone();
    let stream_name = config.stream.clone();
    let loop_session = session.clone();
    let events = tokio::spawn(async move {
        let events = event_loop.enter();
        tokio::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(SessionPollResult::ConnectionLost(code)) => {
                    loop_stats.set_connected(false);
                    loop_stats.error();
                    tracing::warn!(stream = %stream_name, "opcua connection lost: {code}");
                }
                Ok(SessionPollResult::ReconnectFailed(code)) => {
                    loop_stats.error();
                    tracing::debug!(stream = %stream_name, "opcua reconnect failed: {code}");
                }
                Ok(SessionPollResult::Reconnected(mode)) => {
                    loop_stats.set_connected(true);
                    tracing::info!(stream = %stream_name, "opcua connected ({mode:?})");
                    // The library recreates the subscription on a new session
                    // but may not publish for it until its publish timeout
                    // (a minute); ask for a publish now, and once more after
                    // the recreation has settled.
                    loop_session.trigger_publish_now();
                    let session = loop_session.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        session.trigger_publish_now();
                    });
                }
                Ok(_) => {}
                Err(code) => {
                    tracing::error!(stream = %stream_name, "opcua session ended: {code}");
                    return;
                }
            }
        }
    });
    // Dropping the source (agent shutdown) stops the session's event loop.
    let _events = AbortOnDrop(events);

    // Subscribe once; after a reconnect the client library recreates the
    // subscription and its monitored items on the new session.
    loop {
        if !session.wait_for_connection().await {
            tracing::error!(stream = %config.stream, "opcua session gave up connecting");
            return;
        }
        match subscribe(&session, &config, &nodes, callback()).await {
            Ok(refused) => {
                for node in refused {
                    stats.error();
                    tracing::warn!(stream = %config.stream, node, "opcua server refused to monitor node; asking again every {} s", REMONITOR.as_secs());
                }
                stats.set_connected(true);
                break;
            }
            Err(e) => {
                stats.error();
                tracing::warn!(stream = %config.stream, "opcua subscription failed: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    let mut builder = FrameBuilder::new(
        &config.stream,
        config
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.unit.clone())),
    );
    // Each node's last reading: carried by a Bad reading that has none,
    // and sent again while it holds.
    let mut held = Held::new(
        config.nodes.len(),
        config.heartbeat_ms,
        config.sampling_ms + config.publishing_ms,
    );
    let mut flush = tokio::time::interval(Duration::from_millis(config.batch_ms));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut remonitor = tokio::time::interval(REMONITOR);
    remonitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Nodes missing at the last look, and the request for missing ones
    // under way (its own task: a slow server must not hold up readings).
    let mut suspects: Vec<usize> = Vec::new();
    let mut asking: Option<AbortOnDrop> = None;
    // Whether the last look found no subscription at all.
    let mut unsubscribed = false;
    let shared = Arc::new((config.clone(), nodes.clone()));
    loop {
        tokio::select! {
            _ = flush.tick() => {
                if stats.connected.load(Ordering::Relaxed) {
                    let epoch = stats.reconnects.load(Ordering::Relaxed);
                    for (i, ts, v, quality) in held.due(Instant::now(), crate::now_ns(), epoch) {
                        builder.push(i, ts, v, quality);
                        stats.readings.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !builder.send(&frames).await {
                    return;
                }
            }
            _ = remonitor.tick() => {
                if asking.as_ref().is_some_and(|t| !t.0.is_finished()) {
                    continue;
                }
                let Some((id, missing)) = missing_nodes(&session, &nodes) else {
                    suspects.clear();
                    // No subscription while connected: the library could
                    // not recreate it after a reconnect (it then drops it),
                    // and nothing would ever arrive again. At two looks in
                    // a row, subscribe again.
                    let connected = stats.connected.load(Ordering::Relaxed);
                    let again = connected && unsubscribed;
                    unsubscribed = connected && !again;
                    if again {
                        let (session, shared, callback) = (session.clone(), shared.clone(), callback());
                        let stats = stats.clone();
                        asking = Some(AbortOnDrop(tokio::spawn(async move {
                            let (config, nodes) = &*shared;
                            match subscribe(&session, config, nodes, callback).await {
                                Ok(_) => tracing::warn!(stream = %config.stream, "opcua subscription was gone; subscribed again"),
                                Err(e) => {
                                    stats.error();
                                    tracing::warn!(stream = %config.stream, "opcua subscription is gone and cannot be made again now: {e}");
                                }
                            }
                        })));
                    }
                    continue;
                };
                unsubscribed = false;
                // Only what was missing at two looks in a row: after a
                // reconnect the library re-creates the items a while.
                let ask: Vec<usize> = missing.iter().copied().filter(|i| suspects.contains(i)).collect();
                suspects = missing;
                if !ask.is_empty() {
                    let (session, shared) = (session.clone(), shared.clone());
                    asking = Some(AbortOnDrop(tokio::spawn(async move {
                        let (config, nodes) = &*shared;
                        monitor(&session, config, nodes, id, &ask).await;
                    })));
                }
            }
            change = values.recv() => {
                let Some(Change { index: i, ts, raw, quality, server_ns }) = change else { return };
                let node = &config.nodes[i];
                // A Bad status without a value (a failed sensor, as the
                // spec allows) still goes out as a Bad reading, so rules
                // disarm now rather than when the signal goes stale;
                // windows skip it.
                let v = match raw {
                    Some(raw) => raw * node.scale + node.offset,
                    None => held.value(i).unwrap_or(0.0),
                };
                if v.is_finite() {
                    builder.push(i, ts, v, quality);
                    let epoch = stats.reconnects.load(Ordering::Relaxed);
                    held.record(i, (ts, v, quality), server_ns, Instant::now(), crate::now_ns(), epoch);
                    stats.readings.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.error();
                }
            }
        }
    }
}

/// One data change as the callback read it.
struct Change {
    index: usize,
    ts: i64,
    /// None for a Bad one without a value.
    raw: Option<f64>,
    quality: Quality,
    /// When the server sent it, on its clock.
    server_ns: i64,
}

/// How often nodes the subscription does not monitor are asked for again.
const REMONITOR: Duration = Duration::from_secs(5);

/// Each node's last reading, and when it was last sent.
struct Held {
    heartbeat: Option<Duration>,
    /// How much earlier than the server's time now a reading sent again
    /// is stamped (ns): a change the server has sampled but not yet
    /// published (up to a sampling and a publishing interval) must not
    /// come out older than it, or the pipeline would drop it as late.
    margin_ns: i64,
    /// The server's clock minus ours (ns), from its last notification:
    /// readings sent again are stamped on the server's clock, as the
    /// others are.
    offset_ns: i64,
    nodes: Vec<Option<HeldReading>>,
}

#[derive(Debug, Clone, Copy)]
struct HeldReading {
    ts: i64,
    value: f64,
    quality: Quality,
    sent: Instant,
    /// The source's reconnection count when the server reported it: a
    /// value from before a reconnection may have changed meanwhile.
    epoch: u64,
}

impl Held {
    fn new(nodes: usize, heartbeat_ms: u64, margin_ms: u64) -> Held {
        Held {
            heartbeat: (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms)),
            margin_ns: i64::try_from(margin_ms)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000),
            offset_ns: 0,
            nodes: vec![None; nodes],
        }
    }

    fn value(&self, i: usize) -> Option<f64> {
        self.nodes[i].map(|r| r.value)
    }

    /// Node `i` reported `value` stamped `ts`, in a notification the
    /// server sent at `server_ns` and we received at `now` (`now_ns` on
    /// our wall clock).
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        i: usize,
        (ts, value, quality): (i64, f64, Quality),
        server_ns: i64,
        now: Instant,
        now_ns: i64,
        epoch: u64,
    ) {
        self.offset_ns = server_ns.saturating_sub(now_ns);
        self.nodes[i] = Some(HeldReading {
            ts,
            value,
            quality,
            sent: now,
            epoch,
        });
    }

    /// The readings to send again at `now` (`now_ns` on our wall clock),
    /// with the connection in reconnection `epoch`: those unsent for a
    /// heartbeat and reported since the last reconnection. Each is stamped
    /// on the server's clock, less the margin, and after its last reading.
    fn due(&mut self, now: Instant, now_ns: i64, epoch: u64) -> Vec<(usize, i64, f64, Quality)> {
        let Some(heartbeat) = self.heartbeat else {
            return Vec::new();
        };
        let stamp = now_ns
            .saturating_add(self.offset_ns)
            .saturating_sub(self.margin_ns);
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let Some(r) = node else { continue };
            if r.epoch != epoch || now.saturating_duration_since(r.sent) < heartbeat {
                continue;
            }
            r.ts = stamp.max(r.ts.saturating_add(1));
            r.sent = now;
            out.push((i, r.ts, r.value, r.quality));
        }
        out
    }
}

/// The monitored item of node `i` of `config`.
fn item(config: &OpcuaConfig, i: usize, node: &NodeId) -> MonitoredItemCreateRequest {
    MonitoredItemCreateRequest::new(
        ReadValueId::from(node.clone()),
        MonitoringMode::Reporting,
        MonitoringParameters {
            client_handle: i as u32 + 1,
            sampling_interval: config.sampling_ms as f64,
            queue_size: 100,
            discard_oldest: true,
            ..Default::default()
        },
    )
}

/// The session's subscription and the nodes it does not monitor: refused
/// at start (a node the server does not have yet, as while a PLC program
/// loads), or lost when the client library recreated the subscription
/// after a server restart and the server refused them then. `None` while
/// there is no subscription.
fn missing_nodes(session: &opcua::client::Session, nodes: &[NodeId]) -> Option<(u32, Vec<usize>)> {
    let state = session.subscription_state().lock();
    let id = state.subscription_ids()?.first().copied()?;
    let monitored: std::collections::HashSet<&NodeId> = state
        .get(id)?
        .monitored_items()
        .map(|m| &m.item_to_monitor().node_id)
        .collect();
    let missing = (0..nodes.len())
        .filter(|&i| !monitored.contains(&nodes[i]))
        .collect();
    Some((id, missing))
}

/// Asks subscription `id` to monitor the nodes `missing` (indices into
/// `config.nodes`).
async fn monitor(
    session: &opcua::client::Session,
    config: &OpcuaConfig,
    nodes: &[NodeId],
    id: u32,
    missing: &[usize],
) {
    for chunk in missing.chunks(ITEMS_PER_CALL) {
        monitor_chunk(session, config, nodes, id, chunk).await;
    }
}

/// [`monitor`] for at most [`ITEMS_PER_CALL`] nodes.
async fn monitor_chunk(
    session: &opcua::client::Session,
    config: &OpcuaConfig,
    nodes: &[NodeId],
    id: u32,
    missing: &[usize],
) {
    let items = missing
        .iter()
        .map(|&i| item(config, i, &nodes[i]))
        .collect();
    match session
        .create_monitored_items(id, TimestampsToReturn::Both, items)
        .await
    {
        Ok(results) => {
            for (r, &i) in results.iter().zip(missing) {
                let node = &config.nodes[i].node;
                if r.result.status_code.is_good() {
                    tracing::info!(stream = %config.stream, node, "opcua node monitored now");
                } else {
                    tracing::debug!(stream = %config.stream, node, "opcua server still refuses to monitor node: {}", r.result.status_code);
                }
            }
        }
        Err(e) => {
            tracing::debug!(stream = %config.stream, "opcua: cannot monitor the missing nodes yet: {e}")
        }
    }
}

/// A client session to `endpoint` (security policy `None`, anonymous)
/// that reconnects by itself; the event loop must be polled to drive it.
/// `pki_dir` holds the client's certificate store.
pub(crate) fn connect(
    endpoint: &str,
    pki_dir: PathBuf,
) -> Result<
    (
        Arc<opcua::client::Session>,
        opcua::client::SessionEventLoop<opcua::client::transport::TcpConnector>,
    ),
    String,
> {
    let mut client = ClientBuilder::new()
        .application_name("Strata edge agent")
        .application_uri("urn:strata:edge")
        .product_uri("urn:strata")
        .pki_dir(pki_dir)
        .create_sample_keypair(false)
        .trust_server_certs(true)
        .session_retry_limit(-1)
        .session_retry_initial(Duration::from_millis(200))
        .session_retry_max(Duration::from_secs(10))
        .keep_alive_interval(Duration::from_secs(2))
        .max_failed_keep_alive_count(3)
        .client()
        .map_err(|e| format!("opcua client: {}", e.join("; ")))?;
    let endpoint: opcua::types::EndpointDescription = (
        endpoint,
        "http://opcfoundation.org/UA/SecurityPolicy#None",
        MessageSecurityMode::None,
        UserTokenPolicy::anonymous(),
    )
        .into();
    client
        .connect_to_endpoint_directly(endpoint, IdentityToken::Anonymous)
        .map_err(|e| format!("opcua endpoint: {e}"))
}

/// Creates the subscription and its monitored items; returns the nodes the
/// server refused to monitor.
async fn subscribe<'a>(
    session: &opcua::client::Session,
    config: &'a OpcuaConfig,
    nodes: &[NodeId],
    callback: DataChangeCallback,
) -> Result<Vec<&'a str>, opcua::types::Error> {
    let id = session
        .create_subscription(
            Duration::from_millis(config.publishing_ms),
            60,
            10,
            0,
            0,
            true,
            callback,
        )
        .await?;
    // In chunks: servers limit the items of one call (often to 100 or
    // 1,000). A failure leaves no subscription behind to be found later.
    let mut refused = Vec::new();
    for first in (0..nodes.len()).step_by(ITEMS_PER_CALL) {
        let chunk = first..(first + ITEMS_PER_CALL).min(nodes.len());
        let items: Vec<MonitoredItemCreateRequest> =
            chunk.clone().map(|i| item(config, i, &nodes[i])).collect();
        match session
            .create_monitored_items(id, TimestampsToReturn::Both, items)
            .await
        {
            Ok(results) => refused.extend(
                results
                    .iter()
                    .zip(&config.nodes[chunk])
                    .filter(|(r, _)| !r.result.status_code.is_good())
                    .map(|(_, n)| n.node.as_str()),
            ),
            Err(e) => {
                let _ = session.delete_subscription(id).await;
                return Err(e);
            }
        }
    }
    Ok(refused)
}

/// Monitored items asked for in one call.
const ITEMS_PER_CALL: usize = 100;

/// (timestamp, value, quality) of a data change. The value is `None` for
/// a Bad one that carries none (or an empty one); `None` altogether when a
/// Good or Uncertain one has no value or not a number.
fn reading(value: &DataValue) -> Option<(i64, Option<f64>, Quality)> {
    let quality = match value.status {
        None => Quality::Good,
        Some(s) if s.is_good() => Quality::Good,
        Some(s) if s.is_uncertain() => Quality::Uncertain,
        Some(_) => Quality::Bad,
    };
    let v = match value.value.as_ref() {
        Some(Variant::Boolean(b)) => Some(f64::from(u8::from(*b))),
        None | Some(Variant::Empty) if quality == Quality::Bad => None,
        Some(other) => Some(other.as_f64()?),
        None => return None,
    };
    let ts = value
        .source_timestamp
        .or(value.server_timestamp)
        .and_then(|t| t.as_chrono().timestamp_nanos_opt())
        .unwrap_or_else(crate::now_ns);
    Some((ts, v, quality))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(node: &str, endpoint: &str) -> OpcuaConfig {
        OpcuaConfig {
            stream: "ua".into(),
            endpoint: endpoint.into(),
            sampling_ms: 100,
            publishing_ms: 100,
            batch_ms: 100,
            heartbeat_ms: 10_000,
            nodes: vec![NodeConfig {
                node: node.into(),
                name: "t".into(),
                unit: String::new(),
                scale: 1.0,
                offset: 0.0,
            }],
        }
    }

    #[test]
    fn node_ids_and_endpoints_are_checked() {
        config("ns=2;s=Line1.Temperature", "opc.tcp://h:4840/")
            .validate()
            .unwrap();
        config("ns=2;i=42", "opc.tcp://h:4840").validate().unwrap();
        let e = config("temperature", "opc.tcp://h:4840")
            .validate()
            .unwrap_err();
        assert!(e.contains("nodes[0].node"), "{e}");
        let e = config("ns=2;i=1", "http://h").validate().unwrap_err();
        assert!(e.contains("opc.tcp://"), "{e}");
        let twice = |change: fn(&mut NodeConfig)| {
            let mut c = config("ns=2;i=42", "opc.tcp://h:4840");
            let mut second = c.nodes[0].clone();
            change(&mut second);
            c.nodes.push(second);
            c.validate()
        };
        let e = twice(|n| n.name = "u".into()).unwrap_err();
        assert!(e.contains("monitored twice"), "{e}");
        let e = twice(|n| n.node = "ns=2;i=43".into()).unwrap_err();
        assert!(e.contains("two nodes are named \"t\""), "{e}");
        let e = twice(|n| {
            n.node = "ns=2;i=43".into();
            n.name = "u".into();
            n.offset = f64::INFINITY;
        })
        .unwrap_err();
        assert!(e.contains("finite"), "{e}");
        let e = twice(|n| {
            n.node = "ns=2;i=43".into();
            n.name = "u".into();
            n.unit = "deg\nC".into();
        })
        .unwrap_err();
        assert!(e.contains("unit"), "{e}");
        let mut spaced = config("ns=2;i=42", "opc.tcp://h:4840");
        spaced.nodes[0].name = "Line 1".into();
        spaced.validate().unwrap();
        let e = spaced.check_names_for_the_hub().unwrap_err();
        assert!(e.contains("\"Line 1\""), "{e}");
    }

    #[test]
    fn a_steady_value_is_sent_again_while_the_session_holds_it() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        const NS: i64 = 1_000_000_000;
        // Sampling and publishing add up to a 0.5 s margin.
        let mut held = Held::new(2, 10_000, 500);
        // Both clocks agree (the server sent the notification when we
        // received it); node 0 last changed long ago.
        held.record(0, (1_000, 7.5, Quality::Good), 100 * NS, t0, 100 * NS, 0);
        held.record(
            1,
            (2 * NS, 3.0, Quality::Bad),
            105 * NS,
            t0 + 5 * s,
            105 * NS,
            0,
        );
        assert!(held.due(t0 + 9 * s, 109 * NS, 0).is_empty());
        assert_eq!(
            held.due(t0 + 10 * s, 110 * NS, 0),
            vec![(0, 110 * NS - NS / 2, 7.5, Quality::Good)]
        );
        // Sent again a heartbeat after the last sending, not every tick.
        assert!(held.due(t0 + 11 * s, 111 * NS, 0).is_empty());
        // A server clock 60 s behind ours: stamped on the server's clock,
        // so its next change is not older than the reading sent again.
        held.record(
            0,
            (50 * NS, 7.5, Quality::Good),
            52 * NS,
            t0 + 12 * s,
            112 * NS,
            0,
        );
        assert_eq!(
            held.due(t0 + 15 * s, 115 * NS, 0),
            vec![(1, 55 * NS - NS / 2, 3.0, Quality::Bad)]
        );
        // Never before the node's last reading.
        held.record(
            1,
            (80 * NS, 3.0, Quality::Bad),
            52 * NS,
            t0 + 16 * s,
            112 * NS,
            0,
        );
        assert_eq!(held.due(t0 + 26 * s, 112 * NS, 0)[1].1, 80 * NS + 1);
        // After a reconnection, only values reported again are sent again.
        held.record(
            1,
            (90 * NS, 4.0, Quality::Good),
            90 * NS,
            t0 + 30 * s,
            90 * NS,
            1,
        );
        assert!(held.due(t0 + 39 * s, 99 * NS, 1).is_empty());
        assert_eq!(
            held.due(t0 + 40 * s, 100 * NS, 1),
            vec![(1, 100 * NS - NS / 2, 4.0, Quality::Good)]
        );
        // 0 sends changes only.
        let mut off = Held::new(1, 0, 500);
        off.record(0, (1, 1.0, Quality::Good), 1, t0, 1, 0);
        assert!(off.due(t0 + 3600 * s, 5, 0).is_empty());
    }

    #[test]
    fn data_values_become_readings_with_quality() {
        let mut dv = DataValue::new_now(Variant::Int16(-7));
        let (_, v, q) = reading(&dv).unwrap();
        assert_eq!((v, q), (Some(-7.0), Quality::Good));
        dv.status = Some(opcua::types::StatusCode::BadSensorFailure);
        assert_eq!(reading(&dv).unwrap().2, Quality::Bad);
        dv.status = Some(opcua::types::StatusCode::UncertainLastUsableValue);
        assert_eq!(reading(&dv).unwrap().2, Quality::Uncertain);
        dv.value = Some(Variant::Boolean(true));
        assert_eq!(reading(&dv).unwrap().1, Some(1.0));
        dv.value = Some(Variant::from("text"));
        assert!(reading(&dv).is_none());
        dv.value = None;
        assert!(reading(&dv).is_none());
        // A Bad status without a value is still a (Bad) reading.
        dv.status = Some(opcua::types::StatusCode::BadSensorFailure);
        assert_eq!(reading(&dv).map(|r| (r.1, r.2)), Some((None, Quality::Bad)));
        dv.value = Some(Variant::Empty);
        assert_eq!(reading(&dv).map(|r| (r.1, r.2)), Some((None, Quality::Bad)));
        dv.value = Some(Variant::from("text"));
        assert!(reading(&dv).is_none());
    }
}
