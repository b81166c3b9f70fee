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
        Arc::new(Self {
            topic,
            payload,
            qos,
            retain,
            properties,
            expires_at,
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
