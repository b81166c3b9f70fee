//! Application messages as the broker stores and fans them out: one
//! reference-counted [`Message`] shared by every [`Delivery`] of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_mqtt::{Properties, QoS};

/// A routed application message.
#[derive(Debug)]
pub(crate) struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Forwardable v5 properties (no topic alias, no subscription ids).
    pub properties: Properties,
    /// From the v5 Message Expiry Interval.
    pub expires_at: Option<Instant>,
    /// About the memory it holds, in bytes: what session queues count.
    pub size: usize,
}

impl Message {
    pub(crate) fn new(
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: Properties,
    ) -> Arc<Self> {
        let expires_at = properties
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        // A user property of two empty strings is 5 bytes on the wire but
        // two Strings in memory.
        let size = std::mem::size_of::<Self>()
            + topic.len()
            + payload.len()
            + properties
                .user_properties
                .iter()
                .map(|(k, v)| 2 * std::mem::size_of::<String>() + k.len() + v.len())
                .sum::<usize>()
            + properties.correlation_data.as_ref().map_or(0, Bytes::len)
            + properties.content_type.as_ref().map_or(0, String::len)
            + properties.response_topic.as_ref().map_or(0, String::len);
        Arc::new(Self {
            topic,
            payload,
            qos,
            retain,
            properties,
            expires_at,
            size,
        })
    }

    /// The same message holding its own copy of the payload. A payload
    /// read from a connection is a slice of that connection's read
    /// buffer, which it keeps whole: a message that stays queued or
    /// retained must not hold on to a buffer it shares with others.
    pub(crate) fn detached(&self) -> Arc<Self> {
        Arc::new(Self {
            topic: self.topic.clone(),
            payload: Bytes::copy_from_slice(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.clone(),
            expires_at: self.expires_at,
            size: self.size,
        })
    }

    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub msg: Arc<Message>,
    /// Delivery QoS: min(message, subscription, 1).
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// v5 subscription identifiers of the matching subscriptions.
    pub subscription_ids: Vec<u32>,
}
