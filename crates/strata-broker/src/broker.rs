//! Broker state shared by all connections (session registry, subscription
//! router, retained store, counters) and the public [`Broker`] /
//! [`BrokerHandle`] API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use strata_mqtt::topic::validate_topic_name;
use strata_mqtt::{Properties, QoS};
use tokio::sync::{Mutex as AsyncMutex, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::BrokerError;
use crate::hooks::Hooks;
use crate::message::{Delivery, Message};
use crate::retained::RetainedStore;
use crate::router::Router;
use crate::session::{Kick, Session, lock};
use crate::stats::{Counters, Stats};

/// State shared by the listener, every connection and the handle.
pub(crate) struct Shared {
    pub config: Config,
    pub hooks: Arc<dyn Hooks>,
    pub router: Router,
    pub retained: RetainedStore,
    pub sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    pub counters: Counters,
    pub next_conn_id: AtomicU64,
    pub shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// Stores (if retained) and fans a message out to matching sessions.
    /// `origin` is the publishing session, for v5 No Local.
    pub(crate) fn route(&self, msg: Arc<Message>, origin: Option<&Arc<Session>>) {
        let targets = self.router.targets(&msg.topic);
        if targets.is_empty() && !msg.retain {
            return;
        }
        let msg = msg.detached();
        if msg.retain {
            self.retained.store(&msg);
        }
        for t in targets {
            if t.no_local && origin.is_some_and(|o| Arc::ptr_eq(o, &t.session)) {
                continue;
            }
            let qos = msg.qos.min(t.qos).min(QoS::AtLeastOnce);
            let delivery = Delivery {
                msg: Arc::clone(&msg),
                qos,
                retain: t.retain_as_published && msg.retain,
                subscription_ids: t.subscription_ids,
            };
            t.session.enqueue(
                delivery,
                (
                    self.config.max_queued_messages,
                    self.config.max_queued_bytes,
                ),
                &self.counters,
            );
        }
    }

    /// Revokes `client_id` (see [`BrokerHandle::disconnect`]); whether a
    /// session existed.
    pub(crate) fn revoke(&self, client_id: &str) -> bool {
        // Revoked under the sessions' lock: a connection waiting to take
        // the session over looks under it too, so it cannot miss this.
        let Some(session) = ({
            let mut sessions = lock(&self.sessions);
            let session = sessions.remove(client_id);
            if let Some(s) = &session {
                s.revoke();
            }
            session
        }) else {
            return false;
        };
        self.drop_subscriptions(&session);
        let kick = {
            let mut st = session.state();
            st.queue.clear();
            st.parked_inflight.clear();
            st.link.as_mut().and_then(|l| l.kick.take())
        };
        if let Some(kick) = kick {
            let _ = kick.send(Kick::Revoked);
        }
        true
    }

    /// Removes a session's subscriptions from the router.
    pub(crate) fn drop_subscriptions(&self, session: &Arc<Session>) {
        let filters: Vec<String> = session.state().subscriptions.drain().collect();
        for f in filters {
            self.router.unsubscribe(&f, session);
        }
    }
}

/// Entry point: starts an embedded broker.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// Binds the listener and starts accepting connections on the current
    /// Tokio runtime.
    pub async fn start(config: Config, hooks: Arc<dyn Hooks>) -> Result<BrokerHandle, BrokerError> {
        if config.max_inflight_inbound == 0 || config.max_inflight_outbound == 0 {
            return Err(BrokerError::Config("in-flight limits must be at least 1"));
        }
        if config.max_packet_size < 16 {
            return Err(BrokerError::Config(
                "max_packet_size must be at least 16 bytes",
            ));
        }
        if !config.plaintext && config.tls.is_none() {
            return Err(BrokerError::Config(
                "no listener: enable plain text or configure TLS",
            ));
        }
        let plain = match config.plaintext {
            true => Some(crate::listener::bind(config.bind).await?),
            false => None,
        };
        let tls = match &config.tls {
            Some(t) => Some((
                crate::listener::bind(t.bind).await?,
                tokio_rustls::TlsAcceptor::from(Arc::clone(&t.server)),
                t.bind,
            )),
            None => None,
        };
        let addr_of = |l: &tokio::net::TcpListener, addr: SocketAddr| {
            l.local_addr()
                .map_err(|source| BrokerError::Bind { addr, source })
        };
        let plain_addr = plain
            .as_ref()
            .map(|l| addr_of(l, config.bind))
            .transpose()?;
        let tls_addr = tls.as_ref().map(|(l, _, a)| addr_of(l, *a)).transpose()?;
        let local_addr = plain_addr.or(tls_addr).expect("one listener");
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            hooks,
            router: Router::default(),
            retained: RetainedStore::default(),
            sessions: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            next_conn_id: AtomicU64::new(1),
            shutdown: shutdown_rx,
        });
        let mut accept = Vec::new();
        if let Some(l) = plain {
            accept.push(tokio::spawn(crate::listener::accept_loop(
                l,
                None,
                Arc::clone(&shared),
            )));
            tracing::info!(%local_addr, "MQTT broker listening (plain text)");
        }
        if let Some((l, acceptor, _)) = tls {
            accept.push(tokio::spawn(crate::listener::accept_loop(
                l,
                Some(acceptor),
                Arc::clone(&shared),
            )));
            tracing::info!(tls_addr = %tls_addr.expect("bound"), "MQTT broker listening (TLS)");
        }
        Ok(BrokerHandle {
            inner: Arc::new(HandleInner {
                shared,
                local_addr,
                tls_addr,
                shutdown_tx,
                accept: AsyncMutex::new(accept),
            }),
        })
    }
}

struct HandleInner {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    accept: AsyncMutex<Vec<JoinHandle<()>>>,
}

/// Control handle of a running broker; cheap to clone.
#[derive(Clone)]
pub struct BrokerHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl BrokerHandle {
    /// The plain-text listener's bound address (the real port when 0 was
    /// asked), or the TLS listener's when there is no plain-text one.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The TLS listener's bound address, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.inner.tls_addr
    }

    /// Publishes from inside the process: routed (QoS capped at 1) and
    /// retained like any client message; hooks are not called.
    pub fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<(), BrokerError> {
        validate_topic_name(topic).map_err(|source| BrokerError::InvalidTopic {
            topic: topic.to_owned(),
            source,
        })?;
        let msg = Message::new(
            topic.to_owned(),
            payload,
            qos.min(QoS::AtLeastOnce),
            retain,
            Properties::default(),
        );
        self.inner.shared.route(msg, None);
        Ok(())
    }

    /// Revokes a client: its session (subscriptions, queued messages) is
    /// discarded at once, and its live connection, if any, is closed (v5
    /// DISCONNECT 0x98) without publishing its will. Returns whether a
    /// session existed.
    pub fn disconnect(&self, client_id: &str) -> bool {
        self.inner.shared.revoke(client_id)
    }

    /// Number of clients with a live, accepted connection.
    pub fn connected_clients(&self) -> usize {
        self.inner.shared.counters.connected.load(Ordering::Relaxed)
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.inner.shared.counters.snapshot()
    }

    /// Stops accepting, closes every connection (v5 DISCONNECT 0x8B, no
    /// wills) and waits for them to finish, up to the configured grace.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown_tx.send(true);
        let accept = std::mem::take(&mut *self.inner.accept.lock().await);
        for task in accept {
            let _ = task.await;
        }
    }
}
