//! The hub's extension points: authentication, per-topic ACLs, the publish
//! hook that can hold an acknowledgement until data is durable, and
//! connect/disconnect notifications. Hooks run on the connection's task and
//! must return quickly; slow work belongs behind [`PublishDecision::RouteAfter`].

use std::net::SocketAddr;

use bytes::Bytes;
use strata_mqtt::{Properties, ProtocolVersion, QoS};
use tokio::sync::oneshot;

/// What the broker knows about a connecting client when asking to authenticate.
#[derive(Debug, Clone, Copy)]
pub struct ConnectInfo<'a> {
    /// Client identifier (after the broker assigned one if it was empty).
    pub client_id: &'a str,
    /// User name from CONNECT.
    pub username: Option<&'a str>,
    /// Password from CONNECT.
    pub password: Option<&'a [u8]>,
    /// Protocol version the client speaks.
    pub protocol: ProtocolVersion,
    /// Remote socket address.
    pub peer: SocketAddr,
    /// Clean session (3.1.1) / clean start (5) flag.
    pub clean_start: bool,
    /// The client's certificate (DER), when it connected over TLS with one;
    /// the TLS layer has already checked it chains to a trusted CA and is
    /// within its validity.
    pub peer_certificate: Option<&'a [u8]>,
}

/// Answer of [`Hooks::authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthDecision {
    /// Accept the connection.
    Allow,
    /// Accept the connection until this time (when the client's certificate
    /// expires, say); the broker then closes it (v5 DISCONNECT 0xA0, maximum
    /// connect time), and the client must connect again with what is valid.
    AllowUntil(std::time::SystemTime),
    /// Not authorized (3.1.1 code 5, v5 0x87).
    Deny,
    /// Bad user name or password (3.1.1 code 4, v5 0x86).
    BadCredentials,
    /// Service unavailable (3.1.1 code 3, v5 0x88).
    ServerUnavailable,
}

/// A PUBLISH received from a client, as shown to [`Hooks::on_publish`].
#[derive(Debug, Clone)]
pub struct InboundPublish {
    /// Topic name (topic aliases already resolved).
    pub topic: String,
    /// Payload, a zero-copy slice of the read buffer.
    pub payload: Bytes,
    /// QoS the client published with.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// DUP flag (the client says it may have sent this before).
    pub dup: bool,
    /// v5 properties with transport-only ones (topic alias, subscription
    /// identifiers) removed; empty for 3.1.1.
    pub properties: Properties,
    /// Protocol version of the publishing client.
    pub protocol: ProtocolVersion,
}

/// Why a `RouteAfter` receiver resolved with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestRefusal {
    /// The data is rejected for good: acknowledge (v5 with `v5_reason`, which
    /// should be >= 0x80) and do not route.
    Refused {
        /// v5 PUBACK/PUBREC reason code.
        v5_reason: u8,
        /// Optional v5 reason string sent with the acknowledgement.
        reason_string: Option<String>,
    },
    /// Not stored, try again: close the connection without acknowledging so
    /// the client resends. QoS 0 messages are simply dropped.
    Retry,
}

/// Answer of [`Hooks::on_publish`].
#[derive(Debug)]
pub enum PublishDecision {
    /// Route to subscribers and acknowledge at once (after any earlier
    /// publishes of the same connection still awaiting their receivers).
    Route,
    /// Acknowledge only when the receiver resolves; `Ok` routes and
    /// acknowledges; see [`IngestRefusal`] for errors. A dropped sender counts
    /// as [`IngestRefusal::Retry`].
    RouteAfter(oneshot::Receiver<Result<(), IngestRefusal>>),
    /// Do not route; still acknowledge (v5 with the reason code).
    Drop {
        /// v5 reason code for the PUBACK/PUBREC.
        v5_reason: u8,
    },
}

/// Why a connection ended, as reported to [`Hooks::on_disconnect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT (v5 reason 0x04 still publishes the will).
    Clean,
    /// The network connection dropped without DISCONNECT; will published.
    Abnormal,
    /// No packet within 1.5 times the keep alive; will published.
    KeepAliveTimeout,
    /// Malformed packet, oversized packet or protocol violation; will published.
    ProtocolError,
    /// 3.1.1 client published to a topic it may not use; will published.
    PublishDenied,
    /// A `RouteAfter` receiver asked for a retry; will published.
    IngestRetry,
    /// Another connection with the same client id took over; will published.
    TakenOver,
    /// [`crate::BrokerHandle::disconnect`] revoked the client; no will.
    Kicked,
    /// The time [`AuthDecision::AllowUntil`] gave ran out; will published.
    Expired,
    /// The broker is shutting down; no will.
    Shutdown,
}

impl DisconnectReason {
    /// Whether the will message is published for this kind of ending.
    pub fn publishes_will(self) -> bool {
        !matches!(self, Self::Clean | Self::Kicked | Self::Shutdown)
    }
}

/// Callbacks the embedding application (the hub) implements.
pub trait Hooks: Send + Sync + 'static {
    /// Decides whether a client may connect.
    fn authenticate(&self, info: &ConnectInfo<'_>) -> AuthDecision;
    /// May `client_id` publish to `topic`? Also asked for its will message.
    fn authorize_publish(&self, client_id: &str, topic: &str) -> bool;
    /// May `client_id` subscribe to `filter` (exactly as sent, including any
    /// `$share/{group}/` prefix)?
    fn authorize_subscribe(&self, client_id: &str, filter: &str) -> bool;
    /// Called for every authorized PUBLISH a client sends (QoS 0/1/2), and for
    /// a will message about to be published, BEFORE routing.
    fn on_publish(&self, client_id: &str, msg: &InboundPublish) -> PublishDecision;
    /// A client connected (after its CONNACK was queued).
    fn on_connect(&self, client_id: &str) {
        let _ = client_id;
    }
    /// A connection that had been accepted ended.
    fn on_disconnect(&self, client_id: &str, reason: DisconnectReason) {
        let _ = (client_id, reason);
    }
}
