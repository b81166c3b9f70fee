//! Byte-level tests with a raw TCP client built on `strata-mqtt`: ordered
//! acknowledgements with `RouteAfter`, malformed and oversized packets, and
//! v5 topic aliases.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use std::sync::{Arc, Mutex};
use strata_broker::*;
use strata_mqtt::{
    Connect, Decoder, LastWill, Packet, Properties, ProtocolVersion, Publish, Subscribe,
    SubscribeFilter, SubscriptionOptions, reason,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const V5: ProtocolVersion = ProtocolVersion::V5;

struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    version: ProtocolVersion,
}

impl Raw {
    /// A TCP connection to the broker, nothing sent yet.
    async fn open(port: u16, version: ProtocolVersion) -> Raw {
        Raw {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            buf: BytesMut::new(),
            version,
        }
    }

    async fn connect(port: u16, client_id: &str, version: ProtocolVersion) -> Raw {
        let mut raw = Raw::open(port, version).await;
        raw.send(&Packet::Connect(Box::new(Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 30,
            properties: Properties::default(),
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
        })))
        .await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, 0),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw
    }

    async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        p.encode(self.version, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// Next packet, or None when the server closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        let decoder = Decoder::default();
        loop {
            if let Some(p) = decoder.decode(&mut self.buf, self.version).unwrap() {
                return Some(p);
            }
            let n = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("server answered in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }
}

/// Subscribes `raw` to `filter` at QoS 1 and waits for the SUBACK.
async fn subscribe_qos1(raw: &mut Raw, filter: &str) {
    raw.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
        }],
    }))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
}

fn publish(topic: &str, packet_id: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id,
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    })
}

type IngestSender = oneshot::Sender<Result<(), IngestRefusal>>;

/// Holds every publish until the test resolves its receiver.
#[derive(Default)]
struct HoldingHooks {
    held: Mutex<Vec<(String, IngestSender)>>,
    base: TestHooks,
}

impl Hooks for HoldingHooks {
    fn authenticate(&self, info: &ConnectInfo<'_>) -> AuthDecision {
        self.base.authenticate(info)
    }
    fn authorize_publish(&self, c: Client<'_>, t: &str) -> bool {
        self.base.authorize_publish(c, t)
    }
    fn authorize_subscribe(&self, c: Client<'_>, f: &str) -> bool {
        self.base.authorize_subscribe(c, f)
    }
    fn on_publish(&self, _client: Client<'_>, msg: &InboundPublish) -> PublishDecision {
        if !msg.topic.starts_with("ingest/") {
            return PublishDecision::Route;
        }
        let (tx, rx) = oneshot::channel();
        self.held.lock().unwrap().push((msg.topic.clone(), tx));
        PublishDecision::RouteAfter(rx)
    }
    fn on_disconnect(&self, c: &str, r: DisconnectReason) {
        self.base.on_disconnect(c, r);
    }
}

async fn start_holding() -> (BrokerHandle, Arc<HoldingHooks>) {
    let hooks = Arc::new(HoldingHooks::default());
    let b = start_with(
        Config::with_bind("127.0.0.1:0".parse().unwrap()),
        hooks.clone(),
    )
    .await;
    (b, hooks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_after_acks_in_order_without_blocking_reads() {
    let (b, hooks) = start_holding().await;
    let port = b.local_addr().port();
    let mut watcher = Sub::spawn(port, "mqttv5", &["-t", "ingest/#"]);
    watcher.wait_ready(&b, "ingest/ready").await;

    let mut client = Raw::connect(port, "ordered", V5).await;
    for id in 1..=5u16 {
        client
            .send(&publish(&format!("ingest/{id}"), id, b"data"))
            .await;
    }
    // All five reached the hook while none was resolved: reading never stopped.
    wait_until("five held publishes", || {
        hooks.held.lock().unwrap().len() == 5
    })
    .await;
    let mut held = std::mem::take(&mut *hooks.held.lock().unwrap());
    // Resolve in reverse order; #3 is refused for good.
    while let Some((topic, tx)) = held.pop() {
        let result = if topic == "ingest/3" {
            Err(IngestRefusal::Refused {
                v5_reason: reason::PAYLOAD_FORMAT_INVALID,
                reason_string: Some("bad schema".into()),
            })
        } else {
            Ok(())
        };
        tx.send(result).unwrap();
    }
    for id in 1..=5u16 {
        match client.recv().await {
            Some(Packet::PubAck(ack)) => {
                assert_eq!(ack.packet_id, id, "PUBACKs in arrival order");
                let expected = if id == 3 {
                    reason::PAYLOAD_FORMAT_INVALID
                } else {
                    0
                };
                assert_eq!(ack.reason_code, expected);
            }
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
    // Routed in order, after resolution; the refused one not at all.
    for id in [1, 2, 4, 5] {
        assert_eq!(watcher.next_line().await, Some(format!("ingest/{id} data")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_after_retry_closes_without_ack() {
    let (b, hooks) = start_holding().await;
    let port = b.local_addr().port();
    let mut client = Raw::connect(port, "retry", V5).await;
    client.send(&publish("ingest/r", 7, b"x")).await;
    wait_until("held publish", || hooks.held.lock().unwrap().len() == 1).await;
    let (_, tx) = hooks.held.lock().unwrap().pop().unwrap();
    tx.send(Err(IngestRefusal::Retry)).unwrap();
    match client.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, reason::SERVER_BUSY),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert_eq!(client.recv().await, None, "closed without PUBACK");
    wait_until("disconnect hook", || {
        hooks.base.disconnect_reason("retry").is_some()
    })
    .await;
    assert_eq!(
        hooks.base.disconnect_reason("retry"),
        Some(DisconnectReason::IngestRetry)
    );
}

/// Holds `ingest/` publishes on tickets: keeps each connection's tickets
/// (and what `attach` gave it, to show it comes back) until the test marks
/// them done or failed.
#[derive(Default)]
struct TicketHooks {
    issued: Mutex<Vec<(String, Arc<Acks>, u64)>>,
    base: TestHooks,
}

impl Hooks for TicketHooks {
    fn authenticate(&self, info: &ConnectInfo<'_>) -> AuthDecision {
        self.base.authenticate(info)
    }
    fn attach(&self, client_id: &str) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        Some(Box::new(format!("session of {client_id}")))
    }
    fn authorize_publish(&self, c: Client<'_>, t: &str) -> bool {
        self.base.authorize_publish(c, t)
    }
    fn authorize_subscribe(&self, c: Client<'_>, f: &str) -> bool {
        self.base.authorize_subscribe(c, f)
    }
    fn on_publish(&self, client: Client<'_>, msg: &InboundPublish) -> PublishDecision {
        if !msg.topic.starts_with("ingest/") {
            return PublishDecision::Route;
        }
        assert_eq!(
            client.session::<String>().map(String::as_str),
            Some(format!("session of {}", client.id).as_str())
        );
        let acks = client.acks.expect("a live connection has tickets");
        let ticket = acks.issue();
        self.issued
            .lock()
            .unwrap()
            .push((msg.topic.clone(), Arc::clone(acks), ticket));
        PublishDecision::AfterTicket(ticket)
    }
    fn on_disconnect(&self, c: &str, r: DisconnectReason) {
        self.base.on_disconnect(c, r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_acknowledge_in_order_as_they_are_done() {
    let hooks = Arc::new(TicketHooks::default());
    let b = start_with(
        Config::with_bind("127.0.0.1:0".parse().unwrap()),
        hooks.clone(),
    )
    .await;
    let port = b.local_addr().port();
    let mut watcher = Sub::spawn(port, "mqttv5", &["-t", "ingest/#"]);
    watcher.wait_ready(&b, "ingest/ready").await;
    let mut client = Raw::connect(port, "ticketed", V5).await;
    for id in 1..=5u16 {
        client
            .send(&publish(&format!("ingest/{id}"), id, b"data"))
            .await;
    }
    wait_until("five tickets", || hooks.issued.lock().unwrap().len() == 5).await;
    let issued = std::mem::take(&mut *hooks.issued.lock().unwrap());
    let tickets: Vec<u64> = issued.iter().map(|(_, _, t)| *t).collect();
    assert_eq!(tickets, [1, 2, 3, 4, 5]);
    let acks = Arc::clone(&issued[0].1);
    // Three done: exactly those are acknowledged and routed, in order.
    acks.done_through(3);
    for id in 1..=3u16 {
        match client.recv().await {
            Some(Packet::PubAck(ack)) => assert_eq!((ack.packet_id, ack.reason_code), (id, 0)),
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
    for id in 1..=3 {
        assert_eq!(watcher.next_line().await, Some(format!("ingest/{id} data")));
    }
    // Marking an older ticket done again changes nothing; the rest follow.
    acks.done_through(2);
    acks.done_through(5);
    for id in 4..=5u16 {
        match client.recv().await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, id),
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
    // A failed ticket closes the connection without acknowledging it.
    client.send(&publish("ingest/6", 6, b"data")).await;
    wait_until("sixth ticket", || hooks.issued.lock().unwrap().len() == 1).await;
    acks.fail();
    match client.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, reason::SERVER_BUSY),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert_eq!(client.recv().await, None, "closed without PUBACK");
    wait_until("disconnect hook", || {
        hooks.base.disconnect_reason("ticketed").is_some()
    })
    .await;
    assert_eq!(
        hooks.base.disconnect_reason("ticketed"),
        Some(DisconnectReason::IngestRetry)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bytes_close_only_that_connection() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let mut healthy = Sub::spawn(port, "mqttv311", &["-t", "h/#"]);
    healthy.wait_ready(&b, "h/ready").await;

    // Garbage before CONNECT.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[0x00, 0x00, 0xde, 0xad]).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "server closed the connection");

    // A valid session that then sends a 5-byte remaining length.
    let mut client = Raw::connect(port, "garbage", ProtocolVersion::V311).await;
    client
        .stream
        .write_all(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01])
        .await
        .unwrap();
    assert_eq!(client.recv().await, None);
    assert_eq!(b.stats().malformed_packets, 2);

    b.publish("h/still", Bytes::from_static(b"ok"), QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!(healthy.next_line().await.as_deref(), Some("h/still ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_v5_packet_gets_disconnect_0x95() {
    let hooks = Arc::new(TestHooks::default());
    let mut config = Config::with_bind("127.0.0.1:0".parse().unwrap());
    config.max_packet_size = 1024;
    let b = start_with(config, hooks.clone()).await;
    let mut client = Raw::connect(b.local_addr().port(), "big5", V5).await;
    // Only the header of a 100 kB PUBLISH: refused before the body arrives.
    client
        .stream
        .write_all(&[0x32, 0xa0, 0x8d, 0x06])
        .await
        .unwrap();
    match client.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, reason::PACKET_TOO_LARGE),
        other => panic!("expected DISCONNECT 0x95, got {other:?}"),
    }
    assert_eq!(b.stats().dropped_too_large, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_topic_alias_subscription_id_and_suback_codes() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let mut client = Raw::connect(port, "alias", V5).await;
    let props = Properties {
        subscription_identifiers: vec![42],
        ..Properties::default()
    };
    client
        .send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: props,
            filters: ["al/#", "secret/x", "bad/#/x"]
                .iter()
                .map(|f| SubscribeFilter {
                    filter: (*f).into(),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        ..SubscriptionOptions::default()
                    },
                })
                .collect(),
        }))
        .await;
    match client.recv().await {
        Some(Packet::SubAck(s)) => assert_eq!(
            s.return_codes,
            vec![1, reason::NOT_AUTHORIZED, reason::TOPIC_FILTER_INVALID]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // Set alias 3 with a topic, then publish with the alias alone.
    for (topic, payload) in [("al/one", &b"a"[..]), ("", &b"b"[..])] {
        let properties = Properties {
            topic_alias: Some(3),
            ..Properties::default()
        };
        client
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic.into(),
                packet_id: 0,
                properties,
                payload: Bytes::copy_from_slice(payload),
            }))
            .await;
    }
    for payload in [&b"a"[..], &b"b"[..]] {
        match client.recv().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.topic, "al/one");
                assert_eq!(&p.payload[..], payload);
                assert_eq!(p.properties.subscription_identifiers, vec![42]);
                assert_eq!(p.properties.topic_alias, None);
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    // An alias never set is a protocol error.
    let properties = Properties {
        topic_alias: Some(9),
        ..Properties::default()
    };
    client
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: String::new(),
            packet_id: 0,
            properties,
            payload: Bytes::new(),
        }))
        .await;
    match client.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, reason::PROTOCOL_ERROR),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_qos1_is_redelivered_with_dup_on_reconnect() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let connect = |clean| {
        Packet::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V311,
            clean_start: clean,
            keep_alive: 30,
            properties: Properties::default(),
            client_id: "redeliver".into(),
            will: None,
            username: None,
            password: None,
        }))
    };
    let mut raw = Raw::open(port, ProtocolVersion::V311).await;
    raw.send(&connect(false)).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(a)) if !a.session_present));
    subscribe_qos1(&mut raw, "q/#").await;
    b.publish("q/1", Bytes::from_static(b"once"), QoS::AtLeastOnce, false)
        .unwrap();
    let first_id = match raw.recv().await {
        Some(Packet::Publish(p)) => {
            assert!(!p.dup);
            p.packet_id
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    drop(raw); // no PUBACK

    let mut raw = Raw::open(port, ProtocolVersion::V311).await;
    raw.send(&connect(false)).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(a)) if a.session_present));
    match raw.recv().await {
        Some(Packet::Publish(p)) => {
            assert!(p.dup, "redelivery carries DUP");
            assert_eq!(p.packet_id, first_id);
            assert_eq!(&p.payload[..], b"once");
        }
        other => panic!("expected redelivered PUBLISH, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_beyond_the_session_quota_are_refused() {
    let config = Config {
        max_subscriptions_per_session: 2,
        ..Config::with_bind("127.0.0.1:0".parse().unwrap())
    };
    let b = start_with(config, Arc::new(TestHooks::default())).await;
    let mut client = Raw::connect(b.local_addr().port(), "quota", V5).await;
    client
        .send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            // The third new filter is over the quota; repeating one held
            // already is not a new subscription.
            filters: ["q/1", "q/2", "q/3", "q/1"]
                .iter()
                .map(|f| SubscribeFilter {
                    filter: (*f).into(),
                    options: SubscriptionOptions::default(),
                })
                .collect(),
        }))
        .await;
    match client.recv().await {
        Some(Packet::SubAck(s)) => {
            assert_eq!(s.return_codes, vec![0, 0, reason::QUOTA_EXCEEDED, 0])
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// A client that keeps sending without ever reading what it is answered is
/// no longer read once a megabyte of answers waits for it: TCP then holds
/// it back, instead of the broker buffering answers without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_held_back() {
    let (b, _) = start().await;
    let mut client = Raw::connect(b.local_addr().port(), "deaf", ProtocolVersion::V311).await;
    // PINGREQs, each answered with a PINGRESP as long: 2 MiB a write.
    let pings = [0xc0u8, 0x00].repeat(1 << 20);
    let mut sent = 0usize;
    let held_back = loop {
        let write = client.stream.write_all(&pings);
        match tokio::time::timeout(std::time::Duration::from_secs(2), write).await {
            Ok(Ok(())) => {
                sent += pings.len();
                if sent >= 256 << 20 {
                    break false;
                }
            }
            Ok(Err(e)) => panic!("the broker closed the connection: {e}"),
            Err(_) => break true,
        }
    };
    assert!(
        held_back,
        "{sent} bytes read from a client that reads nothing"
    );
}

/// A will whose topic no message could have (a wildcard, or empty) is
/// refused at CONNECT: with "topic name invalid" in MQTT 5, by closing the
/// connection in 3.1.1, which has no code for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_topic_with_a_wildcard_is_refused_at_connect() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    for (version, topic) in [
        (V5, "will/#"),
        (V5, ""),
        (ProtocolVersion::V311, "will/+/x"),
    ] {
        let mut raw = Raw::open(port, version).await;
        raw.send(&Packet::Connect(Box::new(Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 30,
            properties: Properties::default(),
            client_id: "wild-will".into(),
            will: Some(LastWill {
                topic: topic.into(),
                payload: Bytes::from_static(b"x"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties::default(),
            }),
            username: None,
            password: None,
        })))
        .await;
        match (version, raw.recv().await) {
            (V5, Some(Packet::ConnAck(ack))) => {
                assert_eq!(ack.code, reason::TOPIC_NAME_INVALID, "{topic:?}")
            }
            (ProtocolVersion::V311, None) => {}
            (_, other) => panic!("{version:?} {topic:?}: {other:?}"),
        }
    }
    assert_eq!(b.stats().malformed_packets, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keep_alive_counts_whole_packets_not_bytes() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let mut raw = Raw::open(port, ProtocolVersion::V311).await;
    raw.send(&Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 1,
        properties: Properties::default(),
        client_id: "trickle".into(),
        will: None,
        username: None,
        password: None,
    })))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(a)) if a.code == 0));
    // A PUBLISH sent a byte every 200 ms: bytes keep coming, but no whole
    // packet for far longer than 1.5 times the keep-alive.
    let mut bytes = BytesMut::new();
    publish("slow/topic", 1, &[7u8; 200])
        .encode(ProtocolVersion::V311, &mut bytes)
        .unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    for byte in bytes.iter() {
        if raw.stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let read = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            raw.stream.read_buf(&mut raw.buf),
        )
        .await;
        if matches!(read, Ok(Ok(0) | Err(_))) {
            closed = true;
            break;
        }
        if started.elapsed() > std::time::Duration::from_secs(10) {
            break;
        }
    }
    assert!(
        closed,
        "still open after {:?} without a whole packet, keep-alive 1 s",
        started.elapsed()
    );
}

/// A v3.1.1 CONNECT resuming the session of `client_id`.
fn resume(client_id: &str) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V311,
        clean_start: false,
        keep_alive: 30,
        properties: Properties::default(),
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
    }))
}

/// Messages [`stuck_subscriber`] has been sent.
const STUCK_MESSAGES: u8 = 64;

/// A session `client_id` subscribed at QoS 1 to `q/#`, sent 16 MiB it never
/// reads through a small receive buffer: when it is taken over, its last
/// write waits (up to a second) on it.
async fn stuck_subscriber(b: &BrokerHandle, client_id: &str) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(([127, 0, 0, 1], b.local_addr().port()).into())
        .await
        .unwrap();
    let mut raw = Raw {
        stream,
        buf: BytesMut::new(),
        version: ProtocolVersion::V311,
    };
    raw.send(&resume(client_id)).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(_))));
    subscribe_qos1(&mut raw, "q/#").await;
    for i in 0..STUCK_MESSAGES {
        let payload = Bytes::from(vec![i; 256 * 1024]);
        b.publish("q/big", payload, QoS::AtLeastOnce, false)
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_that_cannot_wait_loses_nothing_in_flight() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let v311 = ProtocolVersion::V311;
    const N: u8 = STUCK_MESSAGES;
    let first = stuck_subscriber(&b, "storm").await;

    // Two reconnects with the same id, the second while the first waits
    // for the old connection to let go: it cannot wait in turn.
    let mut second = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut bytes = BytesMut::new();
    resume("storm").encode(v311, &mut bytes).unwrap();
    second.write_all(&bytes).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    third.write_all(&bytes).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    drop((first, second, third));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Every message reaches the session in the end, none acknowledged yet.
    let mut last = Raw::open(port, v311).await;
    last.send(&resume("storm")).await;
    assert!(matches!(last.recv().await, Some(Packet::ConnAck(a)) if a.session_present));
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < usize::from(N) {
        match last.recv().await {
            Some(Packet::Publish(p)) => {
                seen.insert(p.payload[0]);
                last.send(&Packet::PubAck(strata_mqtt::PubAck::new(p.packet_id)))
                    .await;
            }
            other => panic!("after {} of {N} messages: {other:?}", seen.len()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_revoked_while_it_takes_its_session_over_is_refused() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let _first = stuck_subscriber(&b, "revoked").await;
    let mut second = Raw::open(port, ProtocolVersion::V311).await;
    second.send(&resume("revoked")).await;
    // The second connection waits for the first to let go; the client is
    // revoked meanwhile.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(b.disconnect("revoked"));
    match second.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, reason::v311::NOT_AUTHORIZED),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(second.recv().await.is_none());
}

fn subscribe_to(filters: &[&str]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: filters
            .iter()
            .map(|f| SubscribeFilter {
                filter: (*f).into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            })
            .collect(),
    })
}

/// More filters in one SUBSCRIBE than a session may hold close the
/// connection; a filter deeper than the level limit is refused alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_filters_and_deep_filters_are_refused() {
    let config = Config {
        max_subscriptions_per_session: 3,
        ..Config::with_bind("127.0.0.1:0".parse().unwrap())
    };
    let b = start_with(config, Arc::new(TestHooks::default())).await;
    let port = b.local_addr().port();
    let mut client = Raw::connect(port, "deep", V5).await;
    let deep = format!("a/{}b", "/".repeat(300));
    client.send(&subscribe_to(&["ok/1", &deep])).await;
    match client.recv().await {
        Some(Packet::SubAck(s)) => {
            assert_eq!(s.return_codes, vec![1, reason::TOPIC_FILTER_INVALID])
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut flood = Raw::connect(port, "flood", V5).await;
    flood.send(&subscribe_to(&["f/1"; 13])).await;
    match flood.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, reason::QUOTA_EXCEEDED),
        other => panic!("expected DISCONNECT 0x97, got {other:?}"),
    }
    // The same for UNSUBSCRIBE; within the bound it is answered per filter.
    let mut flood = Raw::connect(port, "unflood", V5).await;
    let unsubscribe = |filters: &[&str]| {
        Packet::Unsubscribe(strata_mqtt::Unsubscribe {
            packet_id: 9,
            properties: Properties::default(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        })
    };
    flood.send(&unsubscribe(&["f/1", "f/2"])).await;
    match flood.recv().await {
        Some(Packet::UnsubAck(a)) => assert_eq!(
            a.reason_codes,
            [
                reason::NO_SUBSCRIPTION_EXISTED,
                reason::NO_SUBSCRIPTION_EXISTED
            ]
        ),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    flood.send(&unsubscribe(&["f/1"; 13])).await;
    match flood.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, reason::QUOTA_EXCEEDED),
        other => panic!("expected DISCONNECT 0x97, got {other:?}"),
    }
}

/// Only a normal disconnection (0x00) discards the will in MQTT 5: a
/// client that leaves with an error code has its will published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v5_disconnect_with_an_error_code_publishes_the_will() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let mut watcher = Raw::connect(port, "watcher", V5).await;
    subscribe_qos1(&mut watcher, "wills/#").await;
    for (client_id, code) in [("leaves-ok", reason::SUCCESS), ("fails", 0x80)] {
        let mut raw = Raw::open(port, V5).await;
        raw.send(&Packet::Connect(Box::new(Connect {
            protocol: V5,
            clean_start: true,
            keep_alive: 30,
            properties: Properties::default(),
            client_id: client_id.into(),
            will: Some(LastWill {
                topic: format!("wills/{client_id}"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties::default(),
            }),
            username: None,
            password: None,
        })))
        .await;
        assert!(matches!(raw.recv().await, Some(Packet::ConnAck(_))));
        raw.send(&Packet::Disconnect(strata_mqtt::Disconnect {
            reason_code: code,
            properties: Properties::default(),
        }))
        .await;
        assert!(raw.recv().await.is_none());
    }
    match watcher.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic, "wills/fails"),
        other => panic!("expected the failing client's will, got {other:?}"),
    }
}

/// A PUBLISH carrying properties meant for other packets reaches
/// subscribers without them; those a receiver may get are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_properties_a_receiver_may_get_are_forwarded() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let mut sub = Raw::connect(port, "props-sub", V5).await;
    subscribe_qos1(&mut sub, "props/#").await;
    let mut publisher = Raw::connect(port, "props-pub", V5).await;
    publisher
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "props/t".into(),
            packet_id: 7,
            properties: Properties {
                receive_maximum: Some(5),
                session_expiry_interval: Some(60),
                content_type: Some("text/plain".into()),
                user_properties: vec![("k".into(), "v".into())],
                ..Properties::default()
            },
            payload: Bytes::from_static(b"x"),
        }))
        .await;
    match sub.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.properties.receive_maximum, None);
            assert_eq!(p.properties.session_expiry_interval, None);
            assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
            assert_eq!(p.properties.user_properties, vec![("k".into(), "v".into())]);
        }
        other => panic!("expected the PUBLISH, got {other:?}"),
    }
}

/// CONNACK says Maximum QoS 1: a v5 QoS 2 PUBLISH, or will, is refused
/// with 0x9B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_qos2_is_refused_with_0x9b() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let mut client = Raw::connect(port, "qos2", V5).await;
    client
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "q2/t".into(),
            packet_id: 1,
            properties: Properties::default(),
            payload: Bytes::from_static(b"x"),
        }))
        .await;
    match client.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, reason::QOS_NOT_SUPPORTED),
        other => panic!("expected DISCONNECT 0x9B, got {other:?}"),
    }
    let mut raw = Raw::open(port, V5).await;
    raw.send(&Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 30,
        properties: Properties::default(),
        client_id: "qos2-will".into(),
        will: Some(LastWill {
            topic: "wills/q2".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: Properties::default(),
        }),
        username: None,
        password: None,
    })))
    .await;
    match raw.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, reason::QOS_NOT_SUPPORTED),
        other => panic!("expected CONNACK 0x9B, got {other:?}"),
    }
}

/// An offline session's queue is bounded by bytes as well as by count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_sessions_queue_is_bounded_by_bytes() {
    let config = Config {
        max_queued_bytes: 20_000,
        ..Config::with_bind("127.0.0.1:0".parse().unwrap())
    };
    let b = start_with(config, Arc::new(TestHooks::default())).await;
    let port = b.local_addr().port();
    let mut raw = Raw::connect(port, "away", ProtocolVersion::V311).await;
    raw.send(&resume("away")).await;
    drop(raw);
    let mut raw = Raw::open(port, ProtocolVersion::V311).await;
    raw.send(&resume("away")).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(_))));
    subscribe_qos1(&mut raw, "bulk/#").await;
    drop(raw);
    wait_until("the session offline", || b.connected_clients() == 0).await;
    for i in 0..40u8 {
        b.publish(
            "bulk/t",
            Bytes::from(vec![i; 4096]),
            QoS::AtLeastOnce,
            false,
        )
        .unwrap();
    }
    let drops = b.stats().queue_drops;
    assert!((30..40).contains(&drops), "{drops} of 40 dropped");
    // The newest are the ones kept.
    let mut raw = Raw::open(port, ProtocolVersion::V311).await;
    raw.send(&resume("away")).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(_))));
    let mut firsts = Vec::new();
    for _ in 0..40 - drops {
        match raw.recv().await {
            Some(Packet::Publish(p)) => firsts.push(p.payload[0]),
            other => panic!("expected a queued PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(firsts.last(), Some(&39));
}

/// Hooks that keep nothing retained from clients.
struct NoRetain(TestHooks);

impl Hooks for NoRetain {
    fn authenticate(&self, info: &ConnectInfo<'_>) -> AuthDecision {
        self.0.authenticate(info)
    }
    fn authorize_publish(&self, client: Client<'_>, topic: &str) -> bool {
        self.0.authorize_publish(client, topic)
    }
    fn authorize_subscribe(&self, client: Client<'_>, filter: &str) -> bool {
        self.0.authorize_subscribe(client, filter)
    }
    fn may_retain(&self, _: Client<'_>, _: &str) -> bool {
        false
    }
    fn on_publish(&self, client: Client<'_>, msg: &InboundPublish) -> PublishDecision {
        self.0.on_publish(client, msg)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_can_keep_clients_from_retaining() {
    let b = start_with(
        Config::with_bind("127.0.0.1:0".parse().unwrap()),
        Arc::new(NoRetain(TestHooks::default())),
    )
    .await;
    let port = b.local_addr().port();
    let mut client = Raw::connect(port, "retainer", V5).await;
    client
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "r/client".into(),
            packet_id: 1,
            properties: Properties::default(),
            payload: Bytes::from_static(b"x"),
        }))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
    // The application's own retained messages are kept.
    b.publish("r/app", Bytes::from_static(b"y"), QoS::AtLeastOnce, true)
        .unwrap();
    let mut sub = Raw::connect(port, "late", V5).await;
    sub.send(&subscribe_to(&["r/#"])).await;
    let mut topics = Vec::new();
    while let Ok(p) = tokio::time::timeout(std::time::Duration::from_millis(500), sub.recv()).await
    {
        match p {
            Some(Packet::Publish(p)) => topics.push(p.topic),
            Some(Packet::SubAck(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(topics, vec!["r/app".to_string()]);
}

/// Publishes still waiting on their receiver when the client sends
/// DISCONNECT are routed once settled, in order, not dropped with the
/// connection; the one behind them (not held) too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_sent_before_a_disconnect_are_still_routed() {
    let (b, hooks) = start_holding().await;
    let port = b.local_addr().port();
    let mut watcher = Sub::spawn(port, "mqttv5", &["-t", "#"]);
    watcher.wait_ready(&b, "ingest/ready").await;
    let mut client = Raw::connect(port, "leaving", V5).await;
    client.send(&publish("ingest/1", 1, b"held")).await;
    client
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "result/2".into(),
            packet_id: 0,
            properties: Properties::default(),
            payload: Bytes::from_static(b"behind"),
        }))
        .await;
    client
        .send(&Packet::Disconnect(strata_mqtt::Disconnect {
            reason_code: reason::SUCCESS,
            properties: Properties::default(),
        }))
        .await;
    wait_until("the held publish", || hooks.held.lock().unwrap().len() == 1).await;
    // Resolved only once the broker has read the DISCONNECT.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, tx) = hooks.held.lock().unwrap().pop().unwrap();
    let _ = tx.send(Ok(()));
    assert_eq!(watcher.next_line().await, Some("ingest/1 held".into()));
    assert_eq!(watcher.next_line().await, Some("result/2 behind".into()));
}

/// Hooks that revoke "late" between its authentication and its attach.
struct RevokedWhileConnecting(TestHooks);

impl Hooks for RevokedWhileConnecting {
    fn authenticate(&self, info: &ConnectInfo<'_>) -> AuthDecision {
        self.0.authenticate(info)
    }
    fn still_allowed(&self, client_id: &str) -> bool {
        client_id != "late"
    }
    fn authorize_publish(&self, client: Client<'_>, topic: &str) -> bool {
        self.0.authorize_publish(client, topic)
    }
    fn authorize_subscribe(&self, client: Client<'_>, filter: &str) -> bool {
        self.0.authorize_subscribe(client, filter)
    }
    fn on_publish(&self, client: Client<'_>, msg: &InboundPublish) -> PublishDecision {
        self.0.on_publish(client, msg)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_revoked_between_authentication_and_attach_is_refused() {
    let b = start_with(
        Config::with_bind("127.0.0.1:0".parse().unwrap()),
        Arc::new(RevokedWhileConnecting(TestHooks::default())),
    )
    .await;
    let port = b.local_addr().port();
    for version in [V5, ProtocolVersion::V311] {
        let mut raw = Raw::open(port, version).await;
        raw.send(&Packet::Connect(Box::new(Connect {
            protocol: version,
            clean_start: false,
            keep_alive: 30,
            properties: Properties {
                session_expiry_interval: Some(3600),
                ..Properties::default()
            },
            client_id: "late".into(),
            will: None,
            username: None,
            password: None,
        })))
        .await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => assert_ne!(ack.code, 0, "{version:?}"),
            other => panic!("expected a refusing CONNACK, got {other:?}"),
        }
    }
    // Its session is not kept either.
    assert!(!b.disconnect("late"));
    Raw::connect(port, "on-time", V5).await;
}

/// A QoS 2 publish received before a reconnection and not released yet
/// belongs to the session (MQTT 3.1.1 §4.1): sent again with DUP after the
/// reconnection, it is acknowledged but not routed a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_publish_resent_after_a_reconnection_is_routed_once() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let mut watcher = Sub::spawn(port, "mqttv311", &["-t", "q2/#"]);
    watcher.wait_ready(&b, "q2/ready").await;
    let qos2 = |dup: bool, payload: &'static [u8]| {
        Packet::Publish(Publish {
            dup,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "q2/t".into(),
            packet_id: 9,
            properties: Properties::default(),
            payload: Bytes::from_static(payload),
        })
    };
    let connect = || async {
        let mut raw = Raw::open(port, ProtocolVersion::V311).await;
        raw.send(&resume("exactly-once")).await;
        assert!(matches!(raw.recv().await, Some(Packet::ConnAck(_))));
        raw
    };
    let mut raw = connect().await;
    raw.send(&qos2(false, b"once")).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(_))));
    drop(raw);
    wait_until("the session offline", || b.connected_clients() == 1).await;
    let mut raw = connect().await;
    raw.send(&qos2(true, b"once")).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(_))));
    raw.send(&Packet::PubRel(strata_mqtt::PubAck::new(9))).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubComp(_))));
    b.publish(
        "q2/after",
        Bytes::from_static(b"marker"),
        QoS::AtMostOnce,
        false,
    )
    .unwrap();
    assert_eq!(watcher.next_line().await, Some("q2/t once".into()));
    assert_eq!(watcher.next_line().await, Some("q2/after marker".into()));
}

/// Two reconnections while the old connection lets go: the newest takes
/// the session and keeps it; the older one is refused, not attached in
/// its turn over the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_reconnections_during_a_takeover_the_newest_keeps_the_session() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let v311 = ProtocolVersion::V311;
    let _old = stuck_subscriber(&b, "twice").await;
    let connect = || async {
        let mut raw = Raw::open(port, v311).await;
        raw.send(&resume("twice")).await;
        raw
    };
    let mut older = connect().await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut newest = connect().await;
    match newest.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0),
        other => panic!("the newest: {other:?}"),
    }
    match older.recv().await {
        Some(Packet::ConnAck(a)) => assert_ne!(a.code, 0),
        other => panic!("the older: {other:?}"),
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    newest.send(&Packet::PingReq).await;
    loop {
        match newest.recv().await {
            Some(Packet::PingResp) => break,
            // What the old connection had in flight comes to the newest.
            Some(Packet::Publish(_)) => {}
            other => panic!("the newest lost its session: {other:?}"),
        }
    }
}

/// A client that connects and drops in a loop, each time asking for a
/// day-long session and a will delayed by a day, leaves no sleeping task
/// behind (each held its will, or a discarded session, for the day): the
/// next connection aborts what the last disconnect left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_and_dropping_in_a_loop_leaves_no_tasks_behind() {
    let (b, _) = start().await;
    let port = b.local_addr().port();
    let round = |clean_start: bool| async move {
        let mut raw = Raw::open(port, V5).await;
        raw.send(&Packet::Connect(Box::new(Connect {
            protocol: V5,
            clean_start,
            keep_alive: 30,
            properties: Properties {
                session_expiry_interval: Some(86_400),
                ..Properties::default()
            },
            client_id: "looping".into(),
            will: Some(LastWill {
                topic: "wills/looping".into(),
                payload: Bytes::from(vec![7u8; 1000]),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties {
                    will_delay_interval: Some(86_400),
                    ..Properties::default()
                },
            }),
            username: None,
            password: None,
        })))
        .await;
        assert!(matches!(raw.recv().await, Some(Packet::ConnAck(_))));
        // Dropped without a DISCONNECT: the will is due after its delay.
        drop(raw);
    };
    let metrics = tokio::runtime::Handle::current().metrics();
    round(false).await;
    wait_until("the first drop seen", || b.connected_clients() == 0).await;
    let before = metrics.num_alive_tasks();
    for i in 0..60 {
        // Resuming the session, and starting afresh in its place.
        round(i % 2 == 0).await;
        wait_until("the drop seen", || b.connected_clients() == 0).await;
    }
    wait_until("no task left behind", || {
        metrics.num_alive_tasks() <= before
    })
    .await;
}

/// Publishes waiting for storage are bounded by bytes as well as by
/// count: a client sending large publishes while storage lags is not read
/// past about 32 MiB of them, and loses none once storage catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_waiting_for_storage_are_bounded_by_bytes() {
    let (b, hooks) = start_holding().await;
    let port = b.local_addr().port();
    let client = Raw::connect(port, "heavy", V5).await;
    let (mut rx, mut tx) = client.stream.into_split();
    let version = client.version;
    let sender = tokio::spawn(async move {
        for id in 1..=100u16 {
            let p = Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: format!("ingest/{id}"),
                packet_id: id,
                properties: Properties::default(),
                payload: Bytes::from(vec![b'x'; 512 * 1024]),
            });
            let mut out = BytesMut::new();
            p.encode(version, &mut out).unwrap();
            tx.write_all(&out).await.unwrap();
        }
        tx
    });
    // 64 publishes of 512 KiB make 32 MiB: reading stops about there.
    wait_until("the byte budget filled", || {
        hooks.held.lock().unwrap().len() >= 64
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let held = hooks.held.lock().unwrap().len();
    assert!(held < 80, "{held} publishes read past the byte budget");
    // Storage catches up: every publish is read and acknowledged.
    let mut acked = 0;
    let mut buf = BytesMut::new();
    let decoder = Decoder::default();
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{acked} acknowledged"
        );
        for (_, done) in std::mem::take(&mut *hooks.held.lock().unwrap()) {
            done.send(Ok(())).unwrap();
        }
        while let Some(p) = decoder.decode(&mut buf, version).unwrap() {
            assert!(matches!(p, Packet::PubAck(_)), "{p:?}");
            acked += 1;
        }
        // Briefly: publishes read meanwhile wait to be released above.
        let read = std::time::Duration::from_millis(100);
        if let Ok(n) = tokio::time::timeout(read, rx.read_buf(&mut buf)).await {
            assert!(
                n.unwrap() > 0 || acked == 100,
                "the broker closed the connection"
            );
        }
    }
    sender.await.unwrap();
}
