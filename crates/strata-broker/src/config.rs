//! Broker configuration.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of an embedded broker. `Config::default()` listens on
/// 127.0.0.1:1883 in plain text.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the plain-text TCP listener; port 0 picks a free port (see
    /// [`crate::BrokerHandle::local_addr`]). Used only with `plaintext`.
    pub bind: SocketAddr,
    /// Whether to run the plain-text listener at all.
    pub plaintext: bool,
    /// A TLS listener (with client certificates when its rustls config
    /// asks for them), beside or instead of the plain-text one.
    pub tls: Option<TlsListener>,
    /// Largest packet accepted from a client, fixed header included
    /// (default 1 MiB). Also advertised in the v5 CONNACK.
    pub max_packet_size: usize,
    /// Inbound QoS 1/2 publishes a connection may have awaiting their
    /// acknowledgement (the per-connection FIFO of pending acks); reading
    /// pauses when it is full. Advertised as v5 Receive Maximum. Default 1024.
    pub max_inflight_inbound: u16,
    /// Outbound QoS 1 messages sent to a client and not yet acknowledged,
    /// further capped by the client's v5 Receive Maximum. Default 256.
    pub max_inflight_outbound: u16,
    /// Messages queued per session (online but slow, or offline) before the
    /// oldest is dropped. Default 10,000.
    pub max_queued_messages: usize,
    /// Bytes of messages queued per session (see `max_queued_messages`)
    /// before the oldest is dropped; the newest is kept even when larger.
    /// Default 64 MiB.
    pub max_queued_bytes: usize,
    /// Subscriptions one session may hold; more are refused (v5 SUBACK
    /// 0x97 quota exceeded), so one client cannot grow the routing tree
    /// without bound. Default 1,000.
    pub max_subscriptions_per_session: usize,
    /// v5 Topic Alias Maximum accepted from clients (0 disables). Default 64.
    pub topic_alias_maximum: u16,
    /// Time a new connection has to send CONNECT. Default 10 s.
    pub connect_timeout: Duration,
    /// Grace period for closing connections at shutdown. Default 5 s.
    pub shutdown_grace: Duration,
}

/// A TLS listener.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// Its address; port 0 picks a free port (see
    /// [`crate::BrokerHandle::tls_addr`]).
    pub bind: SocketAddr,
    /// The server's certificate, key and client-certificate policy.
    pub server: std::sync::Arc<rustls::ServerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            plaintext: true,
            tls: None,
            max_packet_size: strata_mqtt::DEFAULT_MAX_PACKET_SIZE,
            max_inflight_inbound: 1024,
            max_inflight_outbound: 256,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 << 20,
            max_subscriptions_per_session: 1_000,
            topic_alias_maximum: 64,
            connect_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Default settings listening on `bind`.
    pub fn with_bind(bind: SocketAddr) -> Self {
        Self {
            bind,
            ..Self::default()
        }
    }
}
