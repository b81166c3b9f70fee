//! The hub's extension points: authentication, per-topic ACLs, the publish
//! hook that can hold an acknowledgement until data is durable, and
//! connect/disconnect notifications. Hooks run on the connection's task and
//! must return quickly; slow work belongs behind [`PublishDecision::RouteAfter`]
//! or [`PublishDecision::AfterTicket`].

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use strata_mqtt::{Properties, ProtocolVersion, QoS};
use tokio::sync::{Notify, oneshot};

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

/// The connection a hook is asked about.
#[derive(Clone, Copy)]
pub struct Client<'a> {
    /// Client identifier.
    pub id: &'a str,
    /// What [`Hooks::attach`] kept for this connection (`None` for a will,
    /// which is published after its connection ended).
    pub session: Option<&'a (dyn Any + Send + Sync)>,
    /// The connection's acknowledgement tickets (`None` for a will).
    pub acks: Option<&'a Arc<Acks>>,
}

impl<'a> Client<'a> {
    /// A client known by its id only.
    pub fn id(id: &'a str) -> Self {
        Client {
            id,
            session: None,
            acks: None,
        }
    }

    /// The attached session data, if it is a `T`.
    pub fn session<T: 'static>(&self) -> Option<&'a T> {
        self.session.and_then(|s| s.downcast_ref())
    }
}

impl std::fmt::Debug for Client<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("id", &self.id).finish()
    }
}

/// One connection's acknowledgement tickets: a publish whose PUBACK must
/// wait takes the next ticket ([`Acks::issue`], then
/// [`PublishDecision::AfterTicket`]), and whoever stores the data marks
/// tickets done, in order, from any thread. A counter per connection
/// instead of a channel per publish: the storing side wakes a connection
/// once for everything it made durable.
#[derive(Debug, Default)]
pub struct Acks {
    issued: AtomicU64,
    done: AtomicU64,
    failed: AtomicBool,
    wake: Notify,
}

impl Acks {
    /// The next ticket (tickets start at 1 and count up).
    pub fn issue(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Every ticket up to `ticket` is durable: their publishes are
    /// acknowledged (in order) and routed.
    pub fn done_through(&self, ticket: u64) {
        self.done.fetch_max(ticket, Ordering::Release);
        self.wake.notify_one();
    }

    /// A ticket not yet done can no longer be: the connection closes
    /// without acknowledging it, so the client sends it again.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether `ticket` is done (`Some(true)`), failed (`Some(false)`) or
    /// still waiting. After a failure every ticket not yet acknowledged
    /// counts as failed, even one marked done later: the client sends them
    /// all again, and what was stored is recognised as a duplicate.
    pub(crate) fn state(&self, ticket: u64) -> Option<bool> {
        if self.failed.load(Ordering::Acquire) {
            Some(false)
        } else if self.done.load(Ordering::Acquire) >= ticket {
            Some(true)
        } else {
            None
        }
    }

    /// Resolves after the next [`Acks::done_through`] or [`Acks::fail`]
    /// (at once if one came since the last wait).
    pub(crate) async fn changed(&self) {
        self.wake.notified().await;
    }
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
    /// Acknowledge and route once the ticket (from this connection's
    /// [`Client::acks`]) is done; if it fails, close the connection without
    /// acknowledging ([`IngestRefusal::Retry`]).
    AfterTicket(u64),
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
    /// What to keep for an accepted connection (what the hooks would
    /// otherwise look up on every publish); handed back as
    /// [`Client::session`].
    fn attach(&self, client_id: &str) -> Option<Box<dyn Any + Send + Sync>> {
        let _ = client_id;
        None
    }
    /// Asked once more when the client's session is attached, before its
    /// CONNACK: may it still connect? A revocation between
    /// [`Hooks::authenticate`] and the attach found no session to close
    /// ([`crate::BrokerHandle::disconnect`]); from the attach on, it does.
    /// Default: yes.
    fn still_allowed(&self, client_id: &str) -> bool {
        let _ = client_id;
        true
    }
    /// May the client publish to `topic`? Also asked for its will message.
    fn authorize_publish(&self, client: Client<'_>, topic: &str) -> bool;
    /// May the client subscribe to `filter` (exactly as sent, including any
    /// `$share/{group}/` prefix)?
    fn authorize_subscribe(&self, client: Client<'_>, filter: &str) -> bool;
    /// Whether a PUBLISH (or will) `client` sends to `topic` with the
    /// RETAIN flag is kept as the topic's retained message; when not, it
    /// is routed as an ordinary one. Retained messages are kept until
    /// replaced, one per topic, so an application whose clients have
    /// nothing to retain keeps them from filling memory. Default: yes.
    fn may_retain(&self, client: Client<'_>, topic: &str) -> bool {
        let _ = (client, topic);
        true
    }
    /// Called for every authorized PUBLISH a client sends (QoS 0/1/2), and for
    /// a will message about to be published, BEFORE routing.
    fn on_publish(&self, client: Client<'_>, msg: &InboundPublish) -> PublishDecision;
    /// A client connected (after its CONNACK was queued).
    fn on_connect(&self, client_id: &str) {
        let _ = client_id;
    }
    /// A connection that had been accepted ended.
    fn on_disconnect(&self, client_id: &str, reason: DisconnectReason) {
        let _ = (client_id, reason);
    }
}
