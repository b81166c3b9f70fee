//! Strata's embedded MQTT broker: a spec-conforming MQTT 3.1.1 and 5 broker
//! the hub runs in-process, with hooks for authentication, per-topic ACLs and
//! durable ingestion (acknowledgements held until the hub has stored data).
//!
//! Supported: QoS 0/1 both ways (inbound QoS 2 handshake; outbound capped at
//! QoS 1), retained messages, last will (with v5 will delay), keep alive,
//! client-id takeover, persistent sessions (kept in memory only: they do not
//! survive a broker restart), wildcard and `$share/{group}/{filter}`
//! subscriptions, v5 topic aliases from clients, receive maximum, reason codes.

mod broker;
mod config;
mod connection;
mod error;
mod hooks;
mod listener;
mod message;
mod retained;
mod router;
mod session;
mod stats;

pub use broker::{Broker, BrokerHandle};
pub use config::{Config, TlsListener};
pub use error::BrokerError;
pub use hooks::{
    Acks, AuthDecision, Client, ConnectInfo, DisconnectReason, Hooks, InboundPublish,
    IngestRefusal, PublishDecision,
};
pub use stats::Stats;
pub use strata_mqtt::{ProtocolVersion, QoS};
pub use tokio_rustls::rustls;
