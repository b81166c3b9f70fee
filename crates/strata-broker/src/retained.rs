//! Retained messages: the last retained message per topic, replaced by each
//! new one and cleared by an empty retained payload; looked up by filter when
//! a client subscribes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use strata_mqtt::topic::topic_matches;

use crate::message::Message;

#[derive(Debug, Default)]
pub(crate) struct RetainedStore {
    by_topic: RwLock<HashMap<String, Arc<Message>>>,
}

impl RetainedStore {
    /// Stores or (empty payload) clears the retained message of its topic.
    pub(crate) fn store(&self, msg: &Arc<Message>) {
        let mut map = self
            .by_topic
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if msg.payload.is_empty() {
            map.remove(&msg.topic);
        } else {
            map.insert(msg.topic.clone(), Arc::clone(msg));
        }
    }

    /// Unexpired retained messages whose topic matches `filter`.
    pub(crate) fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = Instant::now();
        let map = self
            .by_topic
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.values()
            .filter(|m| !m.is_expired(now) && topic_matches(filter, &m.topic))
            .cloned()
            .collect()
    }
}
