//! What the hub sends devices: desired twins (deployments, signed
//! updates), site gates and commands, on `strata/v1/{device}/down/...`.
//!
//! Everything goes out on the embedded broker. With `[upstream]`, where
//! devices at scale connect to a broker cluster instead, it also goes to
//! that broker, through the hub's connection there (`upstream.rs`), in the
//! order it was sent. Retained messages (twins, gates) are what a device
//! gets when it connects; after the hub's connection to the upstream
//! broker is made again, they are all sent there again, since what was
//! queued on the lost connection may not have reached it.
//!
//! Replicas with devices connected straight to them each reach only their
//! own devices: the desired twins they follow in the shared store
//! (`shared.rs`), the gates each measures itself, and commands through the
//! relay ([`crate::relay`]).

use std::sync::Arc;

use bytes::Bytes;
use strata_broker::{BrokerHandle, QoS};
use strata_proto::{DeviceId, Direction, Topic, TopicKind};
use tokio::sync::mpsc;

use crate::relay::CommandRelay;

/// One message for the upstream broker.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its topic (`strata/v1/{device}/down/...`).
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// Whether the broker keeps it for devices that connect later.
    pub retain: bool,
    /// When the hub sent it.
    pub sent: std::time::Instant,
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The embedded broker only: what the upstream broker has already
    /// (another replica sent it there, or it will be sent again once the
    /// connection there is made).
    Here,
    /// The embedded broker and the upstream broker.
    Everywhere,
}

/// Where the hub sends what it has for devices.
#[derive(Clone)]
pub struct Downlink {
    broker: BrokerHandle,
    upstream: Option<mpsc::UnboundedSender<Message>>,
    relay: Option<Arc<CommandRelay>>,
}

/// The topic a device takes commands on: `strata/v1/{device}/down/cmd`.
pub fn command_topic(device: &DeviceId) -> String {
    Topic::new(device.clone(), Direction::Down, TopicKind::Cmd).to_string()
}

impl Downlink {
    /// Sends on `broker`, and with `upstream`, to the queue of the hub's
    /// connection to the upstream broker.
    pub fn new(broker: BrokerHandle, upstream: Option<mpsc::UnboundedSender<Message>>) -> Self {
        Downlink {
            broker,
            upstream,
            relay: None,
        }
    }

    /// Whether devices may be connected to an upstream broker.
    pub fn has_upstream(&self) -> bool {
        self.upstream.is_some()
    }

    /// Also records every command in the replicas' command log, for the
    /// devices connected to other replicas.
    pub fn with_relay(self, relay: Arc<CommandRelay>) -> Self {
        Downlink {
            relay: Some(relay),
            ..self
        }
    }

    /// Sends `device` a command (`down/cmd`, not retained), wherever it is
    /// connected: here, upstream, or through another replica. It is
    /// recorded for the other replicas first, so that when that fails it
    /// is sent nowhere, and sending it again (a workflow step's retry)
    /// sends it once.
    pub fn command(&self, device: &DeviceId, payload: Bytes) -> Result<(), String> {
        if let Some(relay) = &self.relay {
            relay
                .record(device, &payload)
                .map_err(|e| format!("cannot relay it to the other replicas: {e}"))?;
        }
        self.send(Reach::Everywhere, &command_topic(device), payload, false)
    }

    /// Sends one message at QoS 1.
    pub fn send(
        &self,
        reach: Reach,
        topic: &str,
        payload: Bytes,
        retain: bool,
    ) -> Result<(), String> {
        self.broker
            .publish(topic, payload.clone(), QoS::AtLeastOnce, retain)
            .map_err(|e| e.to_string())?;
        if let (Reach::Everywhere, Some(upstream)) = (reach, &self.upstream) {
            // Gone only while the hub stops.
            let _ = upstream.send(Message {
                topic: topic.to_owned(),
                payload,
                retain,
                sent: std::time::Instant::now(),
            });
        }
        Ok(())
    }
}
