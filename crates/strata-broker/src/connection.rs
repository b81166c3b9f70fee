//! One client connection, generic over any `AsyncRead + AsyncWrite` stream
//! (TCP today, TLS later): the CONNECT handshake, session attach/takeover,
//! the read/decode/handle loop with its FIFO of pending acknowledgements,
//! outbound delivery with in-flight tracking, keep alive, and the will and
//! session bookkeeping when the connection ends.
//!
//! One task owns the connection. Reads are buffered (many packets decoded per
//! read) and writes are batched (all queued packets written, then one flush).
//! The read side never waits on a `RouteAfter` receiver: acknowledgements wait
//! in `pending`, and reading pauses only when that FIFO is full.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use strata_mqtt::topic::{parse_shared, validate_topic_filter, validate_topic_name};
use strata_mqtt::{
    ConnAck, Connect, Decoder, Disconnect, Error as CodecError, LastWill, Packet, Properties,
    ProtocolVersion, PubAck, Publish, PublishHeader, QoS, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, encode_publish, reason,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use crate::broker::Shared;
use crate::hooks::{
    Acks, AuthDecision, Client, ConnectInfo, DisconnectReason, InboundPublish, IngestRefusal,
    PublishDecision,
};
use crate::message::{Delivery, Message};
use crate::router::Subscriber;
use crate::session::{Kick, Link, NEVER_EXPIRES, Session, lock};
use crate::stats::add;

const READ_CHUNK: usize = 16 * 1024;
/// Stop pulling from the session queue while this much is waiting to be written.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Answers (acknowledgements, pings, deliveries) waiting for a client
/// beyond which it is not read until it reads some.
const UNREAD_LIMIT: usize = 4 * WRITE_HIGH_WATER;
const DRAIN_BATCH: usize = 64;
/// Publishes waiting to be acknowledged (their storage not done yet) may
/// hold this many bytes (payloads and properties) before the client is
/// not read: besides their count (`max_inflight_inbound`), so a client
/// sending large publishes, or ones swollen with user properties, cannot
/// make one connection hold gigabytes while storage catches up.
const PENDING_BYTES_LIMIT: usize = 32 * 1024 * 1024;
/// How long a new connection waits for the one it takes over to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long publishes sent before a client's DISCONNECT may take to be
/// settled by their receivers before the connection lets them go.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

type IngestReceiver = oneshot::Receiver<Result<(), IngestRefusal>>;

/// Which acknowledgement an inbound packet is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckKind {
    /// QoS 0: nothing to send, but routing still keeps its place in the FIFO.
    None,
    PubAck,
    PubRec,
    PubComp,
}

#[derive(Debug)]
enum Outcome {
    Ack {
        reason: u8,
        reason_string: Option<String>,
        route: bool,
    },
    Retry,
}

#[derive(Debug)]
enum PendingState {
    Ready(Outcome),
    Waiting(IngestReceiver),
    /// Waiting for this ticket of the connection's [`Acks`].
    Ticket(u64),
}

#[derive(Debug)]
struct PendingAck {
    ack: AckKind,
    packet_id: u16,
    msg: Option<Arc<Message>>,
    state: PendingState,
}

impl PendingAck {
    /// What its publish holds ([`Message::size`]; none when dropped).
    fn bytes(&self) -> usize {
        self.msg.as_ref().map_or(0, |m| m.size)
    }
}

/// How and why the connection ends.
#[derive(Debug, Clone, Copy)]
struct Close {
    reason: DisconnectReason,
    /// v5 DISCONNECT reason code to send before closing, if any.
    v5_code: Option<u8>,
}

impl Close {
    fn new(reason: DisconnectReason, v5_code: Option<u8>) -> Self {
        Self { reason, v5_code }
    }

    fn protocol(code: u8) -> Self {
        Self::new(DisconnectReason::ProtocolError, Some(code))
    }
}

fn outcome_of(result: Result<Result<(), IngestRefusal>, oneshot::error::RecvError>) -> Outcome {
    match result {
        Ok(Ok(())) => Outcome::Ack {
            reason: reason::SUCCESS,
            reason_string: None,
            route: true,
        },
        Ok(Err(IngestRefusal::Refused {
            v5_reason,
            reason_string,
        })) => Outcome::Ack {
            reason: v5_reason,
            reason_string,
            route: false,
        },
        Ok(Err(IngestRefusal::Retry)) | Err(_) => Outcome::Retry,
    }
}

/// Serves one accepted stream until it closes.
pub(crate) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    peer_certificate: Option<Vec<u8>>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let decoder = Decoder::new(shared.config.max_packet_size);
    let connect = match tokio::time::timeout(
        shared.config.connect_timeout,
        read_connect(&mut rd, &mut wr, &mut rbuf, &decoder, &shared, peer),
    )
    .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(_) => {
            tracing::debug!(%peer, "MQTT client sent no CONNECT in time");
            return;
        }
    };
    let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let Some((conn, kick_rx, release_tx)) = handshake(
        connect,
        conn_id,
        Remote {
            addr: peer,
            certificate: peer_certificate.as_deref(),
        },
        rbuf,
        decoder,
        &mut wr,
        &shared,
    )
    .await
    else {
        return;
    };
    run(conn, rd, wr, kick_rx, release_tx, shared).await;
}

/// Reads until the first packet, which must be CONNECT.
async fn read_connect<R, W>(
    rd: &mut R,
    wr: &mut W,
    rbuf: &mut BytesMut,
    decoder: &Decoder,
    shared: &Shared,
    peer: SocketAddr,
) -> Option<Connect>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        match decoder.decode(rbuf, ProtocolVersion::V311) {
            Ok(Some(Packet::Connect(c))) => return Some(*c),
            Ok(Some(other)) => {
                add(&shared.counters.malformed_packets, 1);
                tracing::warn!(%peer, packet = other.name(), "MQTT client sent a packet before CONNECT; closing");
                return None;
            }
            Ok(None) => {}
            Err(CodecError::UnsupportedProtocolLevel(level)) => {
                add(&shared.counters.connections_refused, 1);
                tracing::info!(%peer, level, "MQTT client asked for an unsupported protocol level");
                let _ = wr
                    .write_all(&[
                        0x20,
                        0x02,
                        0x00,
                        reason::v311::UNACCEPTABLE_PROTOCOL_VERSION,
                    ])
                    .await;
                let _ = wr.flush().await;
                return None;
            }
            Err(e @ CodecError::PacketTooLarge { .. }) => {
                add(&shared.counters.dropped_too_large, 1);
                tracing::warn!(%peer, error = %e, "MQTT CONNECT too large; closing");
                return None;
            }
            Err(e) => {
                add(&shared.counters.malformed_packets, 1);
                tracing::warn!(%peer, error = %e, "malformed MQTT CONNECT; closing");
                return None;
            }
        }
        rbuf.reserve(READ_CHUNK);
        match rd.read_buf(rbuf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => add(&shared.counters.bytes_in, n as u64),
        }
    }
}

/// The per-connection state used after CONNACK.
struct Conn {
    shared: Arc<Shared>,
    session: Arc<Session>,
    client_id: Arc<str>,
    conn_id: u64,
    peer: SocketAddr,
    version: ProtocolVersion,
    keep_alive: Option<Duration>,
    /// A whole packet was decoded since the main loop last looked: the
    /// keep-alive counts packets, not bytes (a byte now and then must
    /// not keep a connection).
    heard: bool,
    /// When the connection must end ([`AuthDecision::AllowUntil`]).
    ends_at: Option<Instant>,
    decoder: Decoder,
    rbuf: BytesMut,
    wbuf: BytesMut,
    pending: VecDeque<PendingAck>,
    /// What the publishes in `pending` hold ([`Message::size`]).
    pending_bytes: usize,
    inbound_limit: usize,
    awaiting_rel: HashSet<u16>,
    inflight: VecDeque<(u16, Delivery)>,
    send_quota: usize,
    next_packet_id: u16,
    client_max_packet: usize,
    topic_aliases: HashMap<u16, String>,
    will: Option<LastWill>,
    batch: Vec<Delivery>,
    /// What the hooks attached to this connection ([`crate::Hooks::attach`]).
    attached: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// The connection's acknowledgement tickets.
    acks: Arc<Acks>,
}

async fn refuse<W: AsyncWrite + Unpin>(
    wr: &mut W,
    shared: &Shared,
    version: ProtocolVersion,
    code: u8,
) {
    add(&shared.counters.connections_refused, 1);
    let mut out = BytesMut::new();
    let ack = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    });
    if ack.encode(version, &mut out).is_ok() {
        let _ = tokio::time::timeout(FINAL_WRITE_TIMEOUT, async {
            let _ = wr.write_all(&out).await;
            let _ = wr.flush().await;
        })
        .await;
    }
}

/// Who is on the other end of a connection.
struct Remote<'a> {
    addr: SocketAddr,
    /// Its TLS client certificate (DER), if it sent one.
    certificate: Option<&'a [u8]>,
}

/// Authenticates, attaches the session and queues CONNACK.
async fn handshake<W: AsyncWrite + Unpin>(
    connect: Connect,
    conn_id: u64,
    remote: Remote<'_>,
    rbuf: BytesMut,
    decoder: Decoder,
    wr: &mut W,
    shared: &Arc<Shared>,
) -> Option<(Conn, oneshot::Receiver<Kick>, oneshot::Sender<()>)> {
    let (peer, peer_certificate) = (remote.addr, remote.certificate);
    let version = connect.protocol;
    let v5 = version.is_v5();
    let mut assigned = None;
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        if !v5 && !connect.clean_start {
            refuse(wr, shared, version, reason::v311::IDENTIFIER_REJECTED).await;
            return None;
        }
        let id = format!("strata-auto-{conn_id}");
        assigned = Some(id.clone());
        id.into()
    } else {
        connect.client_id.as_str().into()
    };
    if let Some(will) = &connect.will
        && let Err(e) = validate_topic_name(&will.topic)
    {
        // A will is published like any message: its topic must be one a
        // message can have. MQTT 3.1.1 has no code for it: only a close.
        tracing::debug!(%peer, "CONNECT refused: will topic: {e}");
        add(&shared.counters.malformed_packets, 1);
        if v5 {
            refuse(wr, shared, version, reason::TOPIC_NAME_INVALID).await;
        }
        return None;
    }
    if v5
        && connect
            .will
            .as_ref()
            .is_some_and(|w| w.qos == QoS::ExactlyOnce)
    {
        // Above the Maximum QoS of 1 this broker supports (§3.2.2.3.4).
        tracing::debug!(%peer, "CONNECT refused: a QoS 2 will");
        refuse(wr, shared, version, reason::QOS_NOT_SUPPORTED).await;
        return None;
    }
    if v5 && connect.properties.authentication_method.is_some() {
        // Enhanced (AUTH packet) authentication is not supported.
        refuse(wr, shared, version, 0x8C).await;
        return None;
    }
    let decision = shared.hooks.authenticate(&ConnectInfo {
        client_id: &client_id,
        username: connect.username.as_deref(),
        password: connect.password.as_deref(),
        protocol: version,
        peer,
        clean_start: connect.clean_start,
        peer_certificate,
    });
    let refusal = match (decision, v5) {
        (AuthDecision::Allow | AuthDecision::AllowUntil(_), _) => None,
        (AuthDecision::Deny, false) => Some(reason::v311::NOT_AUTHORIZED),
        (AuthDecision::Deny, true) => Some(reason::NOT_AUTHORIZED),
        (AuthDecision::BadCredentials, false) => Some(reason::v311::BAD_USERNAME_OR_PASSWORD),
        (AuthDecision::BadCredentials, true) => Some(reason::BAD_USERNAME_OR_PASSWORD),
        (AuthDecision::ServerUnavailable, false) => Some(reason::v311::SERVER_UNAVAILABLE),
        (AuthDecision::ServerUnavailable, true) => Some(reason::SERVER_UNAVAILABLE),
    };
    if let Some(code) = refusal {
        tracing::info!(%peer, client_id = %client_id, ?decision, "MQTT connection refused");
        refuse(wr, shared, version, code).await;
        return None;
    }
    let expiry = if v5 {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        NEVER_EXPIRES
    };
    let attached = shared.hooks.attach(&client_id);
    let (kick_tx, kick_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let outcome = attach(
        shared,
        &client_id,
        connect.clean_start,
        Link {
            conn_id,
            kick: Some(kick_tx),
            released: Some(release_rx),
        },
        expiry,
    )
    .await;
    // The session, or why the client is refused after all (with the v5
    // and 3.1.1 codes).
    let not_authorized = (reason::NOT_AUTHORIZED, reason::v311::NOT_AUTHORIZED);
    let taken = match outcome {
        Ok(taken) if shared.hooks.still_allowed(&client_id) => Ok(taken),
        Ok(_) => {
            shared.revoke(&client_id);
            Err(("the client was revoked while it connected", not_authorized))
        }
        Err(NotAttached::Revoked) => Err((
            "the client was revoked while it took its session over",
            not_authorized,
        )),
        Err(NotAttached::Superseded) => Err((
            "a newer connection of the client takes its session",
            (reason::SERVER_BUSY, reason::v311::SERVER_UNAVAILABLE),
        )),
    };
    let (session, present) = match taken {
        Ok(taken) => taken,
        Err((why, (v5_code, v311_code))) => {
            tracing::info!(%peer, client_id = %client_id, "MQTT connection refused: {why}");
            refuse(wr, shared, version, if v5 { v5_code } else { v311_code }).await;
            return None;
        }
    };

    // QoS 2 publishes received before a reconnection and not released
    // yet are part of the session: a copy sent again must not be routed.
    let awaiting_rel = std::mem::take(&mut session.state().awaiting_rel);
    let cfg = &shared.config;
    let mut properties = Properties::default();
    if v5 {
        properties.receive_maximum = Some(cfg.max_inflight_inbound);
        properties.maximum_qos = Some(1);
        properties.retain_available = Some(1);
        properties.maximum_packet_size = u32::try_from(cfg.max_packet_size).ok();
        properties.topic_alias_maximum =
            (cfg.topic_alias_maximum > 0).then_some(cfg.topic_alias_maximum);
        properties.wildcard_subscription_available = Some(1);
        properties.subscription_identifier_available = Some(1);
        properties.shared_subscription_available = Some(1);
        properties.assigned_client_identifier = assigned;
    }
    let client_receive_max = connect.properties.receive_maximum.unwrap_or(u16::MAX);
    let mut conn = Conn {
        shared: Arc::clone(shared),
        session,
        client_id,
        conn_id,
        peer,
        version,
        keep_alive: (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500)),
        heard: false,
        ends_at: match decision {
            AuthDecision::AllowUntil(at) => Some(
                Instant::now()
                    + at.duration_since(std::time::SystemTime::now())
                        .unwrap_or_default(),
            ),
            _ => None,
        },
        decoder,
        rbuf,
        wbuf: BytesMut::with_capacity(READ_CHUNK),
        pending: VecDeque::new(),
        pending_bytes: 0,
        inbound_limit: usize::from(cfg.max_inflight_inbound),
        awaiting_rel,
        inflight: VecDeque::new(),
        send_quota: usize::from(client_receive_max.min(cfg.max_inflight_outbound)),
        next_packet_id: 0,
        client_max_packet: connect
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize),
        topic_aliases: HashMap::new(),
        will: connect.will,
        batch: Vec::with_capacity(DRAIN_BATCH),
        attached,
        acks: Arc::default(),
    };
    conn.write(&Packet::ConnAck(ConnAck {
        session_present: present,
        code: reason::SUCCESS,
        properties,
    }));
    add(&shared.counters.connections_accepted, 1);
    shared.counters.connected.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, client_id = %conn.client_id, ?version, present, "MQTT client connected");
    shared.hooks.on_connect(&conn.client_id);
    // Unacknowledged QoS 1 messages of a resumed session go first, with DUP.
    let parked = std::mem::take(&mut conn.session.state().parked_inflight);
    for (packet_id, delivery) in parked {
        conn.send_delivery(delivery, Some(packet_id));
    }
    Some((conn, kick_rx, release_tx))
}

enum AttachStep {
    Done(Arc<Session>, bool, Option<Arc<Session>>),
    Wait(Arc<Session>, Option<oneshot::Receiver<()>>),
}

/// Why a connection could not attach to its session.
enum NotAttached {
    /// The client was revoked while this waited (it authenticated before).
    Revoked,
    /// A newer connection with the same client id came while this waited
    /// for the old one to let go: the newest takes the session.
    Superseded,
}

/// Finds or creates the session, taking over (and waiting for) any live
/// connection with the same client id first. Of several connections that
/// come while the old one lets go, the newest takes the session.
async fn attach(
    shared: &Arc<Shared>,
    client_id: &Arc<str>,
    clean_start: bool,
    link: Link,
    expiry: u32,
) -> Result<(Arc<Session>, bool), NotAttached> {
    let conn_id = link.conn_id;
    let mut link = Some(link);
    let mut force = false;
    let started = Instant::now();
    // The session a takeover waited on: revoked meanwhile (under the
    // sessions' lock, where this looks), the client is refused.
    let mut waited_on: Option<Arc<Session>> = None;
    loop {
        let step = {
            let mut map = lock(&shared.sessions);
            if waited_on.as_ref().is_some_and(|s| s.is_revoked()) {
                return Err(NotAttached::Revoked);
            }
            let existing = map.get(client_id).cloned();
            if let Some(s) = &existing {
                // A connection accepted before this one whose slower
                // authentication brings it here only after a newer one
                // came does not take the session from the newer one.
                let mut st = s.state();
                if st.newest_attach > conn_id {
                    return Err(NotAttached::Superseded);
                }
                st.newest_attach = conn_id;
            }
            let busy = existing.as_ref().and_then(|s| {
                let mut st = s.state();
                match st.link.as_mut() {
                    Some(live) if !force => {
                        if let Some(kick) = live.kick.take() {
                            let _ = kick.send(Kick::TakenOver);
                        }
                        Some(live.released.take())
                    }
                    _ => None,
                }
            });
            match (busy, existing) {
                (Some(wait), Some(held)) => AttachStep::Wait(held, wait),
                (_, existing) => {
                    let (session, present, discarded) = match existing {
                        Some(old) if !clean_start => (old, true, None),
                        old => {
                            if let Some(old) = &old {
                                // A connection came for the old session's
                                // client: its delayed will is not due,
                                // nor is its expiry (it is discarded).
                                let mut st = old.state();
                                st.generation += 1;
                                st.abort_pending();
                            }
                            let fresh = Session::new(Arc::clone(client_id));
                            map.insert(Arc::clone(client_id), Arc::clone(&fresh));
                            (fresh, false, old)
                        }
                    };
                    let mut st = session.state();
                    st.abort_pending();
                    st.link = link.take();
                    st.expiry_secs = expiry;
                    st.generation += 1;
                    st.newest_attach = st.newest_attach.max(conn_id);
                    drop(st);
                    AttachStep::Done(session, present, discarded)
                }
            }
        };
        match step {
            AttachStep::Done(session, present, discarded) => {
                if let Some(old) = discarded {
                    shared.drop_subscriptions(&old);
                }
                return Ok((session, present));
            }
            AttachStep::Wait(held, Some(released)) => {
                waited_on = Some(held);
                if tokio::time::timeout(TAKEOVER_WAIT, released).await.is_err() {
                    force = true;
                }
            }
            AttachStep::Wait(held, None) => {
                // Another connection is already waiting on the same
                // takeover: it gives up for this newer one once the old
                // one lets go, which this looks for now and then.
                waited_on = Some(held);
                tokio::time::sleep(Duration::from_millis(20)).await;
                force = started.elapsed() >= TAKEOVER_WAIT;
            }
        }
    }
}

/// Writes what is buffered, then flushes once all of it is written (TLS
/// holds records back until then); returns the bytes written. Dropped at
/// either await (another branch of the loop won), it leaves `unflushed`
/// set, so the next round flushes.
async fn send<W: AsyncWrite + Unpin>(
    wr: &mut W,
    wbuf: &mut BytesMut,
    unflushed: &mut bool,
) -> std::io::Result<usize> {
    let mut n = 0;
    if !wbuf.is_empty() {
        n = wr.write_buf(wbuf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        *unflushed = true;
    }
    if wbuf.is_empty() && *unflushed {
        wr.flush().await?;
        *unflushed = false;
    }
    Ok(n)
}

/// The main loop and the end-of-connection bookkeeping.
async fn run<S>(
    mut conn: Conn,
    mut rd: ReadHalf<S>,
    mut wr: WriteHalf<S>,
    mut kick_rx: oneshot::Receiver<Kick>,
    release_tx: oneshot::Sender<()>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = shared.shutdown.clone();
    let session = Arc::clone(&conn.session);
    let idle = conn.keep_alive.unwrap_or(Duration::from_secs(86_400));
    let mut last_heard = Instant::now();
    let keepalive = tokio::time::sleep(idle);
    tokio::pin!(keepalive);
    let ends = tokio::time::sleep_until(conn.ends_at.unwrap_or(last_heard + idle).into());
    tokio::pin!(ends);
    let acks = Arc::clone(&conn.acks);
    let mut unflushed = false;

    let close = loop {
        if *shutdown.borrow() {
            break Close::new(
                DisconnectReason::Shutdown,
                Some(reason::SERVER_SHUTTING_DOWN),
            );
        }
        if let Err(close) = conn.process_input() {
            break close;
        }
        conn.drain_outbound();
        let acks_full = conn.acks_full();
        // Reads paused by our own backpressure are not a silent client:
        // the keep-alive clock must not run against it either.
        if std::mem::take(&mut conn.heard) || acks_full {
            last_heard = Instant::now();
        }
        // A client that sends without reading its answers is not read
        // while too many wait (TCP then holds it back); the keep-alive
        // clock runs on, so one that never reads is closed in the end.
        let can_read = !acks_full && conn.wbuf.len() < UNREAD_LIMIT;
        if can_read && conn.rbuf.capacity() - conn.rbuf.len() < READ_CHUNK / 2 {
            conn.rbuf.reserve(READ_CHUNK);
        }
        // The oldest pending acknowledgement, when it waits on something:
        // its receiver's answer, or a change of the tickets (`None`; the next
        // `process_input` looks at them).
        let head = async {
            match conn.pending.front_mut() {
                Some(PendingAck {
                    state: PendingState::Waiting(rx),
                    ..
                }) => Some(rx.await),
                Some(PendingAck {
                    state: PendingState::Ticket(_),
                    ..
                }) => {
                    acks.changed().await;
                    None
                }
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            kick = &mut kick_rx => {
                break match kick {
                    Ok(Kick::TakenOver) => Close::new(DisconnectReason::TakenOver, Some(reason::SESSION_TAKEN_OVER)),
                    Ok(Kick::Revoked) | Err(_) => Close::new(DisconnectReason::Kicked, Some(reason::ADMINISTRATIVE_ACTION)),
                };
            }
            Ok(()) = shutdown.changed() => {
                if *shutdown.borrow() {
                    break Close::new(DisconnectReason::Shutdown, Some(reason::SERVER_SHUTTING_DOWN));
                }
            }
            // Not awaited outside the select: a TLS client that stops
            // reading stalls the flush, and kicks, revocation, shutdown
            // and the keep-alive must still be heard meanwhile.
            sent = send(&mut wr, &mut conn.wbuf, &mut unflushed), if !conn.wbuf.is_empty() || unflushed => match sent {
                Ok(n) => add(&shared.counters.bytes_out, n as u64),
                Err(_) => break Close::new(DisconnectReason::Abnormal, None),
            },
            resolved = head => {
                if let (Some(resolved), Some(front)) = (resolved, conn.pending.front_mut()) {
                    front.state = PendingState::Ready(outcome_of(resolved));
                }
            }
            read = rd.read_buf(&mut conn.rbuf), if can_read => match read {
                Ok(0) | Err(_) => break Close::new(DisconnectReason::Abnormal, None),
                Ok(n) => add(&shared.counters.bytes_in, n as u64),
            },
            _ = session.notify.notified() => {}
            _ = &mut ends, if conn.ends_at.is_some() => {
                tracing::info!(peer = %conn.peer, client_id = %conn.client_id, "MQTT connection reached the end of its allowed time");
                break Close::new(DisconnectReason::Expired, Some(reason::MAXIMUM_CONNECT_TIME));
            }
            _ = &mut keepalive, if conn.keep_alive.is_some() => {
                let deadline = last_heard + idle;
                if deadline <= Instant::now() {
                    break Close::new(DisconnectReason::KeepAliveTimeout, Some(reason::KEEP_ALIVE_TIMEOUT));
                }
                keepalive.as_mut().reset(deadline.into());
            }
        }
    };

    if close.reason == DisconnectReason::Clean {
        // What the client sent before its DISCONNECT is still routed (MQTT
        // §4.6 keeps its order): publishes that wait on their receiver get
        // a bounded while to be settled.
        // A kick (a takeover, a revocation) or shutdown stops waiting.
        tokio::select! {
            _ = tokio::time::timeout(SETTLE_TIMEOUT, conn.settle_pending()) => {}
            Ok(_) = &mut kick_rx => {}
            Ok(()) = shutdown.changed() => {}
        }
    }
    if conn.version.is_v5()
        && let Some(code) = close.v5_code
    {
        conn.write(&Packet::Disconnect(Disconnect {
            reason_code: code,
            properties: Properties::default(),
        }));
    }
    if close.reason != DisconnectReason::Abnormal {
        let wbuf = std::mem::take(&mut conn.wbuf);
        let _ = tokio::time::timeout(FINAL_WRITE_TIMEOUT, async {
            if wr.write_all(&wbuf).await.is_ok() {
                add(&shared.counters.bytes_out, wbuf.len() as u64);
            }
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
        })
        .await;
    }
    drop((rd, wr));
    conn.finish(close);
    drop(release_tx);
}

impl Conn {
    /// Whether as many publishes wait for their acknowledgement as the
    /// client may have read: by count or by bytes.
    fn acks_full(&self) -> bool {
        self.pending.len() >= self.inbound_limit || self.pending_bytes >= PENDING_BYTES_LIMIT
    }

    fn write(&mut self, packet: &Packet) {
        if let Err(e) = packet.encode(self.version, &mut self.wbuf) {
            tracing::error!(error = %e, packet = packet.name(), "cannot encode MQTT packet");
        }
    }

    fn v5(&self) -> bool {
        self.version.is_v5()
    }

    /// Applies resolved acknowledgements, then decodes and handles buffered
    /// packets while the pending FIFO has room.
    fn process_input(&mut self) -> Result<(), Close> {
        self.flush_pending()?;
        loop {
            if self.session.is_revoked() {
                return Err(Close::new(
                    DisconnectReason::Kicked,
                    Some(reason::ADMINISTRATIVE_ACTION),
                ));
            }
            if self.acks_full() {
                return Ok(());
            }
            match self.decoder.decode(&mut self.rbuf, self.version) {
                Ok(Some(packet)) => {
                    self.heard = true;
                    self.handle(packet)?;
                }
                Ok(None) => return Ok(()),
                Err(e @ CodecError::PacketTooLarge { .. }) => {
                    add(&self.shared.counters.dropped_too_large, 1);
                    tracing::warn!(peer = %self.peer, client_id = %self.client_id, error = %e, "MQTT packet too large; closing connection");
                    return Err(Close::protocol(reason::PACKET_TOO_LARGE));
                }
                Err(e) => {
                    return Err(self.malformed(&e.to_string(), reason::MALFORMED_PACKET));
                }
            }
        }
    }

    fn malformed(&self, what: &str, code: u8) -> Close {
        add(&self.shared.counters.malformed_packets, 1);
        tracing::warn!(peer = %self.peer, client_id = %self.client_id, error = what, "malformed MQTT packet or protocol violation; closing connection");
        Close::protocol(code)
    }

    fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(a) => {
                self.on_puback(a.packet_id);
                Ok(())
            }
            Packet::PubRec(a) => {
                // The broker never sends QoS 2; release whatever the client thinks it got.
                let mut rel = PubAck::new(a.packet_id);
                if self.v5() {
                    rel.reason_code = reason::PACKET_IDENTIFIER_NOT_FOUND;
                }
                self.write(&Packet::PubRel(rel));
                Ok(())
            }
            Packet::PubRel(a) => {
                let found = self.awaiting_rel.remove(&a.packet_id);
                let code = if found || !self.v5() {
                    reason::SUCCESS
                } else {
                    reason::PACKET_IDENTIFIER_NOT_FOUND
                };
                self.push_ack(PendingAck {
                    ack: AckKind::PubComp,
                    packet_id: a.packet_id,
                    msg: None,
                    state: PendingState::Ready(Outcome::Ack {
                        reason: code,
                        reason_string: None,
                        route: false,
                    }),
                })
            }
            Packet::PubComp(_) => Ok(()),
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => {
                self.write(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => {
                // Only a normal disconnection (0x00) discards the will
                // (MQTT 5 §3.14.4): 0x04 asks for it, and an error code
                // sent by a failing client is not a normal end either.
                if !self.v5() || d.reason_code == reason::SUCCESS {
                    self.will = None;
                }
                if let Some(expiry) = d.properties.session_expiry_interval {
                    let mut st = self.session.state();
                    // A session that was to end with the connection cannot be revived here.
                    if st.expiry_secs != 0 {
                        st.expiry_secs = expiry;
                    }
                }
                Err(Close::new(DisconnectReason::Clean, None))
            }
            other => Err(self.malformed(
                &format!("unexpected {} from a client", other.name()),
                reason::PROTOCOL_ERROR,
            )),
        }
    }

    /// Sends an acknowledgement now if nothing is queued ahead of it,
    /// otherwise queues it so acknowledgements leave in arrival order.
    fn push_ack(&mut self, entry: PendingAck) -> Result<(), Close> {
        if self.pending.is_empty()
            && let PendingState::Ready(outcome) = entry.state
        {
            return self.apply(entry.ack, entry.packet_id, entry.msg, outcome);
        }
        self.pending_bytes += entry.bytes();
        self.pending.push_back(entry);
        Ok(())
    }

    /// Waits for every pending publish to be settled, routing and
    /// acknowledging each in order; stops at the first that asks for a
    /// retry (it and those after it are not acknowledged, so the client
    /// sends them again).
    async fn settle_pending(&mut self) {
        let acks = Arc::clone(&self.acks);
        loop {
            if self.flush_pending().is_err() {
                return;
            }
            match self.pending.front_mut() {
                None => return,
                Some(PendingAck {
                    state: PendingState::Waiting(rx),
                    ..
                }) => {
                    let resolved = rx.await;
                    if let Some(front) = self.pending.front_mut() {
                        front.state = PendingState::Ready(outcome_of(resolved));
                    }
                }
                Some(PendingAck {
                    state: PendingState::Ticket(_),
                    ..
                }) => acks.changed().await,
                Some(_) => {}
            }
        }
    }

    fn flush_pending(&mut self) -> Result<(), Close> {
        while let Some(front) = self.pending.front_mut() {
            let ready = match &mut front.state {
                PendingState::Ready(_) => true,
                PendingState::Waiting(rx) => match rx.try_recv() {
                    Ok(result) => {
                        front.state = PendingState::Ready(outcome_of(Ok(result)));
                        true
                    }
                    Err(oneshot::error::TryRecvError::Empty) => false,
                    Err(oneshot::error::TryRecvError::Closed) => {
                        front.state = PendingState::Ready(Outcome::Retry);
                        true
                    }
                },
                PendingState::Ticket(ticket) => match self.acks.state(*ticket) {
                    Some(true) => {
                        front.state = PendingState::Ready(outcome_of(Ok(Ok(()))));
                        true
                    }
                    Some(false) => {
                        front.state = PendingState::Ready(Outcome::Retry);
                        true
                    }
                    None => false,
                },
            };
            if !ready {
                return Ok(());
            }
            let popped = self.pending.pop_front();
            if let Some(entry) = &popped {
                self.pending_bytes -= entry.bytes();
            }
            if let Some(entry) = popped
                && let PendingState::Ready(outcome) = entry.state
            {
                self.apply(entry.ack, entry.packet_id, entry.msg, outcome)?;
            }
        }
        Ok(())
    }

    fn apply(
        &mut self,
        ack: AckKind,
        packet_id: u16,
        msg: Option<Arc<Message>>,
        outcome: Outcome,
    ) -> Result<(), Close> {
        let (code, reason_string, route) = match outcome {
            Outcome::Ack {
                reason,
                reason_string,
                route,
            } => (reason, reason_string, route),
            Outcome::Retry if ack == AckKind::None => return Ok(()),
            Outcome::Retry => {
                tracing::info!(client_id = %self.client_id, "ingest asked for a retry; closing without acknowledging");
                return Err(Close::new(
                    DisconnectReason::IngestRetry,
                    Some(reason::SERVER_BUSY),
                ));
            }
        };
        if route && let Some(msg) = msg {
            self.shared.route(msg, Some(&self.session));
        }
        let mut body = PubAck::new(packet_id);
        if self.v5() {
            body.reason_code = code;
            body.properties.reason_string = reason_string;
        }
        match ack {
            AckKind::None => {}
            AckKind::PubAck => self.write(&Packet::PubAck(body)),
            AckKind::PubRec => {
                if code < 0x80 || !self.v5() {
                    self.awaiting_rel.insert(packet_id);
                }
                self.write(&Packet::PubRec(body));
            }
            AckKind::PubComp => self.write(&Packet::PubComp(body)),
        }
        Ok(())
    }

    fn on_publish(&mut self, p: Publish) -> Result<(), Close> {
        add(&self.shared.counters.messages_in, 1);
        let Publish {
            dup,
            qos,
            retain,
            mut topic,
            packet_id,
            mut properties,
            payload,
        } = p;
        if self.v5() {
            if let Some(alias) = properties.topic_alias.take() {
                if alias == 0 || alias > self.shared.config.topic_alias_maximum {
                    return Err(
                        self.malformed("topic alias out of range", reason::TOPIC_ALIAS_INVALID)
                    );
                }
                if topic.is_empty() {
                    match self.topic_aliases.get(&alias) {
                        Some(t) => topic.clone_from(t),
                        None => {
                            return Err(
                                self.malformed("unknown topic alias", reason::PROTOCOL_ERROR)
                            );
                        }
                    }
                } else {
                    self.topic_aliases.insert(alias, topic.clone());
                }
            }
            properties = forwardable(properties);
        }
        if validate_topic_name(&topic).is_err() {
            return Err(self.malformed("invalid topic name in PUBLISH", reason::TOPIC_NAME_INVALID));
        }
        if self.v5() && qos == QoS::ExactlyOnce {
            // CONNACK advertised a Maximum QoS of 1 (MQTT 5 §3.2.2.3.4).
            return Err(self.malformed(
                "QoS 2 PUBLISH above the Maximum QoS of 1",
                reason::QOS_NOT_SUPPORTED,
            ));
        }
        let ack = match qos {
            QoS::AtMostOnce => AckKind::None,
            QoS::AtLeastOnce => AckKind::PubAck,
            QoS::ExactlyOnce => AckKind::PubRec,
        };
        let ready = |reason, route| {
            PendingState::Ready(Outcome::Ack {
                reason,
                reason_string: None,
                route,
            })
        };
        if qos == QoS::ExactlyOnce && self.awaiting_rel.contains(&packet_id) {
            // Resent before our PUBREC arrived: acknowledge again, route once.
            return self.push_ack(PendingAck {
                ack,
                packet_id,
                msg: None,
                state: ready(reason::SUCCESS, false),
            });
        }
        let hooks = Arc::clone(&self.shared.hooks);
        let client = Client {
            id: &self.client_id,
            session: self.attached.as_deref(),
            acks: Some(&self.acks),
        };
        if !hooks.authorize_publish(client, &topic) {
            add(&self.shared.counters.dropped_acl, 1);
            tracing::debug!(client_id = %self.client_id, topic, "publish denied by ACL");
            if !self.v5() {
                return Err(Close::new(DisconnectReason::PublishDenied, None));
            }
            return self.push_ack(PendingAck {
                ack,
                packet_id,
                msg: None,
                state: ready(reason::NOT_AUTHORIZED, false),
            });
        }
        let retain = retain && hooks.may_retain(client, &topic);
        let inbound = InboundPublish {
            topic,
            payload,
            qos,
            retain,
            dup,
            properties,
            protocol: self.version,
        };
        let decision = hooks.on_publish(client, &inbound);
        let InboundPublish {
            topic,
            payload,
            properties,
            ..
        } = inbound;
        let msg = Message::new(topic, payload, qos, retain, properties);
        let (msg, state) = match decision {
            PublishDecision::Route => (Some(msg), ready(reason::SUCCESS, true)),
            PublishDecision::RouteAfter(rx) => (Some(msg), PendingState::Waiting(rx)),
            PublishDecision::AfterTicket(ticket) => (Some(msg), PendingState::Ticket(ticket)),
            PublishDecision::Drop { v5_reason } => (None, ready(v5_reason, false)),
        };
        self.push_ack(PendingAck {
            ack,
            packet_id,
            msg,
            state,
        })
    }

    fn on_puback(&mut self, packet_id: u16) {
        if let Some(i) = self.inflight.iter().position(|(id, _)| *id == packet_id) {
            self.inflight.remove(i);
        }
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Close> {
        let v5 = self.v5();
        // Many times more filters in one packet than a session may hold can
        // only be a flood: each takes the routing tree's lock and a look
        // through every retained message, on this connection's thread.
        let quota = self.shared.config.max_subscriptions_per_session;
        if quota > 0 && s.filters.len() > quota.saturating_mul(4) {
            return Err(self.malformed(
                "a SUBSCRIBE with many times more filters than a session may hold",
                reason::QUOTA_EXCEEDED,
            ));
        }
        // Retained messages are sent once per filter of a packet.
        let mut scanned = std::collections::HashSet::new();
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let hooks = Arc::clone(&self.shared.hooks);
        for f in s.filters {
            let failure = |v5_code| {
                if v5 {
                    v5_code
                } else {
                    reason::v311::SUBACK_FAILURE
                }
            };
            if validate_topic_filter(&f.filter).is_err() {
                codes.push(failure(reason::TOPIC_FILTER_INVALID));
                continue;
            }
            let client = Client {
                id: &self.client_id,
                session: self.attached.as_deref(),
                acks: Some(&self.acks),
            };
            if !hooks.authorize_subscribe(client, &f.filter) {
                add(&self.shared.counters.subscriptions_denied, 1);
                tracing::debug!(client_id = %self.client_id, filter = f.filter, "subscription denied by ACL");
                codes.push(failure(reason::NOT_AUTHORIZED));
                continue;
            }
            let full = {
                let state = self.session.state();
                state.subscriptions.len() >= self.shared.config.max_subscriptions_per_session
                    && !state.subscriptions.contains(&f.filter)
            };
            if full {
                tracing::debug!(client_id = %self.client_id, filter = f.filter, "subscription quota exceeded");
                codes.push(failure(reason::QUOTA_EXCEEDED));
                continue;
            }
            let granted = f.options.qos.min(QoS::AtLeastOnce);
            let options = SubscriptionOptions {
                qos: granted,
                ..f.options
            };
            let existed = !self.session.state().subscriptions.insert(f.filter.clone());
            self.shared.router.subscribe(
                &f.filter,
                Subscriber {
                    session: Arc::clone(&self.session),
                    qos: granted,
                    no_local: options.no_local,
                    retain_as_published: options.retain_as_published,
                    subscription_id: sub_id,
                },
            );
            let is_shared = matches!(parse_shared(&f.filter), Ok(Some(_)));
            let send_retained = !is_shared
                && match options.retain_handling {
                    RetainHandling::OnSubscribe => true,
                    RetainHandling::OnNewSubscription => !existed,
                    RetainHandling::Never => false,
                };
            if send_retained && scanned.insert(f.filter.clone()) {
                for msg in self.shared.retained.matching(&f.filter) {
                    retained.push(Delivery {
                        qos: msg.qos.min(granted),
                        msg,
                        retain: true,
                        subscription_ids: sub_id.into_iter().collect(),
                    });
                }
            }
            codes.push(granted as u8);
        }
        self.write(&Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            properties: Properties::default(),
            return_codes: codes,
        }));
        for d in retained {
            let config = &self.shared.config;
            self.session.enqueue(
                d,
                (config.max_queued_messages, config.max_queued_bytes),
                &self.shared.counters,
            );
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), Close> {
        // As for SUBSCRIBE: a packet of many times more filters than a
        // session may hold can only be a flood.
        let quota = self.shared.config.max_subscriptions_per_session;
        if quota > 0 && u.filters.len() > quota.saturating_mul(4) {
            return Err(self.malformed(
                "an UNSUBSCRIBE with many times more filters than a session may hold",
                reason::QUOTA_EXCEEDED,
            ));
        }
        let mut codes = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            let existed = self.session.state().subscriptions.remove(f);
            // Only a filter the session holds is in the routing tree: the
            // others need not take its lock.
            if existed {
                self.shared.router.unsubscribe(f, &self.session);
            }
            codes.push(if existed {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        self.write(&Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: Properties::default(),
            reason_codes: codes,
        }));
        Ok(())
    }

    /// Moves queued deliveries into the write buffer while the client's
    /// in-flight window and the write high-water mark allow.
    fn drain_outbound(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        loop {
            if self.wbuf.len() >= WRITE_HIGH_WATER {
                break;
            }
            {
                let mut st = self.session.state();
                let mut qos1 = 0;
                while batch.len() < DRAIN_BATCH {
                    let Some(front) = st.queue.front() else { break };
                    if front.qos != QoS::AtMostOnce {
                        if self.inflight.len() + qos1 >= self.send_quota {
                            break;
                        }
                        qos1 += 1;
                    }
                    if let Some(d) = st.queue.pop_front() {
                        batch.push(d);
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            for d in batch.drain(..) {
                self.send_delivery(d, None);
            }
        }
        self.batch = batch;
    }

    fn alloc_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
            let id = self.next_packet_id;
            if !self.inflight.iter().any(|(p, _)| *p == id) {
                return id;
            }
        }
    }

    /// Encodes one delivery; `resend` carries the packet id of a redelivery.
    fn send_delivery(&mut self, d: Delivery, resend: Option<u16>) {
        let now = Instant::now();
        if d.msg.is_expired(now) {
            return;
        }
        let qos1 = d.qos != QoS::AtMostOnce;
        let packet_id = match (qos1, resend) {
            (false, _) => 0,
            (true, Some(id)) => id,
            (true, None) => self.alloc_packet_id(),
        };
        let start = self.wbuf.len();
        let written = {
            let props: Cow<'_, Properties> =
                if self.v5() && (!d.subscription_ids.is_empty() || d.msg.expires_at.is_some()) {
                    let mut p = d.msg.properties.clone();
                    p.subscription_identifiers.clone_from(&d.subscription_ids);
                    if let Some(at) = d.msg.expires_at {
                        let left = at.saturating_duration_since(now).as_secs();
                        p.message_expiry_interval = Some(u32::try_from(left).unwrap_or(u32::MAX));
                    }
                    Cow::Owned(p)
                } else {
                    Cow::Borrowed(&d.msg.properties)
                };
            encode_publish(
                &mut self.wbuf,
                self.version,
                PublishHeader {
                    dup: resend.is_some() && qos1,
                    qos: d.qos,
                    retain: d.retain,
                    packet_id,
                },
                &d.msg.topic,
                &props,
                &d.msg.payload,
            )
        };
        match written {
            Ok(n) if n > self.client_max_packet => {
                self.wbuf.truncate(start);
                add(&self.shared.counters.dropped_too_large, 1);
            }
            Ok(_) => {
                add(&self.shared.counters.messages_out, 1);
                if qos1 {
                    self.inflight.push_back((packet_id, d));
                }
            }
            Err(e) => {
                self.wbuf.truncate(start);
                tracing::warn!(client_id = %self.client_id, error = %e, "cannot encode outbound PUBLISH; dropped");
            }
        }
    }

    /// Detaches from the session (parking in-flight messages or discarding
    /// the session), publishes the will when due, and notifies the hooks.
    fn finish(mut self, close: Close) {
        let shared = Arc::clone(&self.shared);
        let session = Arc::clone(&self.session);
        let mut expiry_timer = None;
        let mut discard = false;
        // The attach this connection left; `None` when another connection
        // has taken the session over already. A delayed will goes only if
        // no connection follows.
        let generation;
        {
            let mut map = lock(&shared.sessions);
            let mut st = session.state();
            let mine = st.link.as_ref().is_some_and(|l| l.conn_id == self.conn_id);
            generation = mine.then_some(st.generation);
            let resumed = map
                .get(&session.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, &session));
            if !mine && resumed && !session.is_revoked() {
                // Taken over before this connection let go (a takeover
                // that could not wait, as when a third connection comes
                // meanwhile): the one that resumed the session has sent
                // what was parked already, so what this one still had in
                // flight goes first in the queue, to be sent again.
                for (_, delivery) in self.inflight.drain(..).rev() {
                    st.queue.push_front(delivery);
                }
                if st.link.is_some() {
                    session.notify.notify_one();
                }
            }
            if mine {
                st.link = None;
                if !session.is_revoked() && st.expiry_secs > 0 {
                    st.parked_inflight = self.inflight.drain(..).collect();
                    st.awaiting_rel = std::mem::take(&mut self.awaiting_rel);
                    st.queue.retain(|d| d.qos != QoS::AtMostOnce);
                    if st.expiry_secs != NEVER_EXPIRES {
                        expiry_timer = Some((st.expiry_secs, st.generation));
                    }
                } else {
                    discard = true;
                    drop(st);
                    if map
                        .get(&session.client_id)
                        .is_some_and(|s| Arc::ptr_eq(s, &session))
                    {
                        map.remove(&session.client_id);
                    }
                }
            }
        }
        if discard {
            shared.drop_subscriptions(&session);
        }
        if let Some((secs, generation)) = expiry_timer {
            let shared = Arc::clone(&shared);
            let waiting = Arc::clone(&session);
            let task = tokio::spawn(async move {
                let session = waiting;
                tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
                let expired = {
                    let mut map = lock(&shared.sessions);
                    let st = session.state();
                    let expired = st.link.is_none() && st.generation == generation;
                    drop(st);
                    if expired
                        && map
                            .get(&session.client_id)
                            .is_some_and(|s| Arc::ptr_eq(s, &session))
                    {
                        map.remove(&session.client_id);
                    }
                    expired
                };
                if expired {
                    shared.drop_subscriptions(&session);
                }
            });
            keep_pending(&session, generation, task.abort_handle());
        }
        if (close.reason.publishes_will()
            || (close.reason == DisconnectReason::Clean && self.will.is_some()))
            && let Some(will) = self.will.take()
        {
            let delay = will
                .properties
                .will_delay_interval
                .unwrap_or(0)
                .min(session.state().expiry_secs);
            schedule_will(
                &shared,
                (Arc::clone(&session), generation),
                will,
                self.version,
                delay,
            );
        }
        shared.counters.connected.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(peer = %self.peer, client_id = %self.client_id, reason = ?close.reason, "MQTT client disconnected");
        shared.hooks.on_disconnect(&self.client_id, close.reason);
    }
}

/// Publishes a will now, or after `delay_secs` unless the client has
/// connected again by then (v5 Will Delay Interval), even if that
/// connection has ended too: `left` is the session and the generation of
/// the attach that ended (`None`: taken over, so connected again already).
fn schedule_will(
    shared: &Arc<Shared>,
    left: (Arc<Session>, Option<u64>),
    will: LastWill,
    version: ProtocolVersion,
    delay_secs: u32,
) {
    let (session, generation) = left;
    if delay_secs == 0 {
        publish_will(shared, &session.client_id, will, version);
        return;
    }
    let Some(generation) = generation else {
        return;
    };
    let shared = Arc::clone(shared);
    let waiting = Arc::clone(&session);
    let task = tokio::spawn(async move {
        let session = waiting;
        tokio::time::sleep(Duration::from_secs(u64::from(delay_secs))).await;
        if !connected_since(&session, generation) {
            publish_will(&shared, &session.client_id, will, version);
        }
    });
    keep_pending(&session, generation, task.abort_handle());
}

/// Keeps `task` for the session's next attach to abort; aborts it at once
/// when a connection has already come since the attach numbered
/// `generation` (it would find nothing to do).
fn keep_pending(session: &Session, generation: u64, task: tokio::task::AbortHandle) {
    let mut st = session.state();
    if st.generation != generation || st.link.is_some() {
        task.abort();
    } else {
        st.pending.push(task);
    }
}

/// Whether a connection has come for `session`'s client since the attach
/// numbered `generation`: to that session, or to a fresh one in its place
/// (which moves the old one's generation too).
fn connected_since(session: &Session, generation: u64) -> bool {
    let st = session.state();
    st.generation != generation || st.link.is_some()
}

/// The properties of a PUBLISH a receiver may be sent (MQTT 5 §3.3.2.3):
/// others (a Receive Maximum, a Session Expiry, an Authentication Method)
/// make strict clients close the connection, and a retained or queued
/// message carrying one would do so at every delivery.
fn forwardable(p: Properties) -> Properties {
    Properties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        ..Properties::default()
    }
}

fn publish_will(shared: &Arc<Shared>, client_id: &str, will: LastWill, version: ProtocolVersion) {
    if !shared
        .hooks
        .authorize_publish(Client::id(client_id), &will.topic)
    {
        add(&shared.counters.dropped_acl, 1);
        return;
    }
    let properties = forwardable(will.properties);
    let retain = will.retain && shared.hooks.may_retain(Client::id(client_id), &will.topic);
    let inbound = InboundPublish {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain,
        dup: false,
        properties,
        protocol: version,
    };
    let decision = shared.hooks.on_publish(Client::id(client_id), &inbound);
    let msg = Message::new(
        inbound.topic,
        inbound.payload,
        inbound.qos,
        inbound.retain,
        inbound.properties,
    );
    match decision {
        PublishDecision::Route => shared.route(msg, None),
        PublishDecision::RouteAfter(rx) => {
            let shared = Arc::clone(shared);
            tokio::spawn(async move {
                // Nobody can resend a will, so only a definitive refusal drops it.
                if !matches!(rx.await, Ok(Err(IngestRefusal::Refused { .. }))) {
                    shared.route(msg, None);
                }
            });
        }
        // A will has no tickets: nothing would mark one done.
        PublishDecision::AfterTicket(_) | PublishDecision::Drop { .. } => {}
    }
}
