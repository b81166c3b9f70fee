//! Broker counters: lock-free atomics updated on the hot path, and the
//! [`Stats`] snapshot handed to the hub.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A point-in-time copy of the broker's counters (monotonic since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections that completed CONNECT with a success CONNACK.
    pub connections_accepted: u64,
    /// Connections refused at CONNECT (auth, bad client id, bad protocol).
    pub connections_refused: u64,
    /// PUBLISH packets received from clients.
    pub messages_in: u64,
    /// PUBLISH packets written to clients.
    pub messages_out: u64,
    /// Bytes read from client sockets.
    pub bytes_in: u64,
    /// Bytes written to client sockets.
    pub bytes_out: u64,
    /// Publishes refused by `authorize_publish` (and wills likewise refused).
    pub dropped_acl: u64,
    /// Subscription filters refused by `authorize_subscribe`.
    pub subscriptions_denied: u64,
    /// Packets over the maximum packet size: inbound (connection closed) or
    /// outbound (over the client's v5 Maximum Packet Size, not delivered).
    pub dropped_too_large: u64,
    /// Messages dropped from a full session queue (oldest first).
    pub queue_drops: u64,
    /// Connections closed for a malformed packet or protocol violation.
    pub malformed_packets: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS handshakes that failed (no or a bad client certificate, a
    /// protocol error, a timeout).
    pub tls_failures: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dropped_acl: AtomicU64,
    pub subscriptions_denied: AtomicU64,
    pub dropped_too_large: AtomicU64,
    pub queue_drops: AtomicU64,
    pub malformed_packets: AtomicU64,
    pub tls_handshakes: AtomicU64,
    pub tls_failures: AtomicU64,
    pub connected: AtomicUsize,
}

/// Adds `n` to a counter; relaxed ordering is enough for statistics.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections_accepted: get(&self.connections_accepted),
            connections_refused: get(&self.connections_refused),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            dropped_acl: get(&self.dropped_acl),
            subscriptions_denied: get(&self.subscriptions_denied),
            dropped_too_large: get(&self.dropped_too_large),
            queue_drops: get(&self.queue_drops),
            malformed_packets: get(&self.malformed_packets),
            tls_handshakes: get(&self.tls_handshakes),
            tls_failures: get(&self.tls_failures),
        }
    }
}
