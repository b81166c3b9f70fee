//! The broker's error type.

use std::net::SocketAddr;

use strata_mqtt::topic::TopicError;

/// Errors returned by [`crate::Broker::start`] and [`crate::BrokerHandle`].
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken by another process.
    #[error(
        "MQTT listener cannot bind {addr}: address already in use (is another broker such as Mosquitto running? choose another port)"
    )]
    AddressInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Any other bind failure (permission for ports below 1024, unknown
    /// interface address, ...).
    #[error("MQTT listener cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid MQTT broker configuration: {0}")]
    Config(&'static str),
    /// [`crate::BrokerHandle::publish`] was given an unusable topic.
    #[error("cannot publish to topic {topic:?}: {source}")]
    InvalidTopic {
        /// The topic given.
        topic: String,
        /// What is wrong with it.
        source: TopicError,
    },
}
