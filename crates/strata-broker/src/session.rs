//! Client sessions: subscriptions, the queue of messages waiting to be sent,
//! in-flight QoS 1 messages parked while the client is offline, and the link
//! to the live connection (used for takeover and revocation).
//!
//! Sessions live in memory only: they do not survive a broker restart.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use strata_mqtt::QoS;
use tokio::sync::{Notify, oneshot};

use crate::message::Delivery;
use crate::stats::{Counters, add};

/// Session expiry meaning "never" (3.1.1 persistent sessions, v5 0xFFFFFFFF).
pub(crate) const NEVER_EXPIRES: u32 = u32::MAX;

/// Why the broker tells a live connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    TakenOver,
    Revoked,
}

/// Control link to the connection currently attached to a session.
#[derive(Debug)]
pub(crate) struct Link {
    pub conn_id: u64,
    pub kick: Option<oneshot::Sender<Kick>>,
    /// Resolves (sender dropped) once the connection has detached.
    pub released: Option<oneshot::Receiver<()>>,
}

/// Messages waiting to be sent to one session, with their size.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    items: VecDeque<Delivery>,
    bytes: usize,
}

impl Queue {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Bytes held by the queued messages ([`crate::message::Message::size`]).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn front(&self) -> Option<&Delivery> {
        self.items.front()
    }

    pub(crate) fn push_back(&mut self, d: Delivery) {
        self.bytes += d.msg.size;
        self.items.push_back(d);
    }

    pub(crate) fn push_front(&mut self, d: Delivery) {
        self.bytes += d.msg.size;
        self.items.push_front(d);
    }

    pub(crate) fn pop_front(&mut self) -> Option<Delivery> {
        let d = self.items.pop_front()?;
        self.bytes -= d.msg.size;
        Some(d)
    }

    pub(crate) fn retain(&mut self, keep: impl FnMut(&Delivery) -> bool) {
        self.items.retain(keep);
        self.bytes = self.items.iter().map(|d| d.msg.size).sum();
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }
}

#[derive(Debug, Default)]
pub(crate) struct SessionState {
    pub queue: Queue,
    pub parked_inflight: Vec<(u16, Delivery)>,
    /// Packet ids of QoS 2 publishes received (PUBREC sent) and not yet
    /// released, while no connection holds the session.
    pub awaiting_rel: HashSet<u16>,
    /// Filters exactly as subscribed (the router holds the options).
    pub subscriptions: HashSet<String>,
    pub link: Option<Link>,
    pub expiry_secs: u32,
    /// Bumped on every attach, so delayed tasks can tell a reconnect happened.
    pub generation: u64,
    /// The id of the newest connection that came to attach: one that
    /// waited on a takeover gives up when a newer one came meanwhile.
    pub newest_attach: u64,
    /// Tasks the last disconnect left waiting (the session's expiry, a
    /// delayed will): the next attach aborts them, so a client that
    /// connects and drops in a loop leaves no pile of sleeping tasks,
    /// each holding a will or a discarded session, behind.
    pub pending: Vec<tokio::task::AbortHandle>,
}

impl SessionState {
    /// Aborts the tasks the last disconnect left waiting.
    pub fn abort_pending(&mut self) {
        for task in self.pending.drain(..) {
            task.abort();
        }
    }
}

/// A session, shared by the registry, the subscription tree and its connection.
#[derive(Debug)]
pub(crate) struct Session {
    pub client_id: Arc<str>,
    state: Mutex<SessionState>,
    pub notify: Notify,
    revoked: AtomicBool,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Session {
    pub(crate) fn new(client_id: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            client_id,
            state: Mutex::new(SessionState::default()),
            notify: Notify::new(),
            revoked: AtomicBool::new(false),
        })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, SessionState> {
        lock(&self.state)
    }

    pub(crate) fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    /// Queues a delivery. Offline sessions keep only QoS 1 messages. When the
    /// queue is full, by count or by bytes (`max`), the oldest messages are
    /// dropped and counted; the newest stays, however large.
    pub(crate) fn enqueue(&self, delivery: Delivery, max: (usize, usize), counters: &Counters) {
        let (max_queued, max_bytes) = max;
        let online = {
            let mut st = self.state();
            let online = st.link.is_some();
            if !online && delivery.qos == QoS::AtMostOnce {
                return;
            }
            st.queue.push_back(delivery);
            while st.queue.len() > 1
                && (st.queue.len() > max_queued || st.queue.bytes() > max_bytes)
            {
                st.queue.pop_front();
                add(&counters.queue_drops, 1);
            }
            online
        };
        if online {
            self.notify.notify_one();
        }
    }
}
