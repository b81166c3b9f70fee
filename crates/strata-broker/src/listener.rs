//! The listeners: binding with actionable errors and the accept loop that
//! spawns one task per connection (after the TLS handshake on a TLS
//! listener) and drains them at shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::broker::Shared;
use crate::error::BrokerError;
use crate::stats::add;

pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            BrokerError::AddressInUse { addr }
        } else {
            BrokerError::Bind { addr, source }
        }
    })
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let mut shutdown = shared.shutdown.clone();
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            Ok(()) = shutdown.changed() => {
                if *shutdown.borrow() {
                    break;
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    match &tls {
                        None => {
                            tasks.spawn(crate::connection::serve(stream, peer, None, shared));
                        }
                        Some(acceptor) => {
                            tasks.spawn(serve_tls(acceptor.clone(), stream, peer, shared));
                        }
                    }
                }
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let grace = shared.config.shutdown_grace;
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tasks.abort_all();
    }
}

/// Completes the TLS handshake (within the CONNECT timeout), then serves
/// the connection with the client's certificate, if it sent one.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let handshake = tokio::time::timeout(shared.config.connect_timeout, acceptor.accept(stream));
    let stream = match handshake.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            add(&shared.counters.tls_failures, 1);
            tracing::debug!(%peer, error = %e, "MQTT TLS handshake failed");
            return;
        }
        Err(_) => {
            add(&shared.counters.tls_failures, 1);
            tracing::debug!(%peer, "MQTT TLS handshake timed out");
            return;
        }
    };
    add(&shared.counters.tls_handshakes, 1);
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.as_ref().to_vec());
    crate::connection::serve(stream, peer, certificate, shared).await;
}
