//! The benchmark's publisher: sends pre-encoded batches as fast as the
//! broker acknowledges them, with `rumqttc`, a client written outside this
//! project, so what it measures is the hub as any device would see it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// A device's MQTT identity.
#[derive(Debug, Clone)]
pub struct Login {
    /// Device id (client id and username).
    pub device: String,
    /// Its credential (password).
    pub credential: String,
}

fn options(addr: SocketAddr, client_id: &str, login: Option<&Login>, inflight: u16) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(inflight);
    o.set_clean_session(true);
    if let Some(l) = login {
        o.set_credentials(&l.device, &l.credential);
    }
    o
}

/// Publishes `payloads` to `topic` with QoS 1, at most `inflight` unacknowledged
/// at a time; returns once every one is acknowledged.
pub async fn publish_all(
    addr: SocketAddr,
    client_id: &str,
    login: Option<&Login>,
    topic: &str,
    payloads: Vec<Bytes>,
    inflight: u16,
) -> anyhow::Result<()> {
    let total = payloads.len();
    let (client, mut eventloop) =
        AsyncClient::new(options(addr, client_id, login, inflight), inflight as usize);
    let topic = topic.to_owned();
    let sender = client.clone();
    let feeder = tokio::spawn(async move {
        for p in payloads {
            if sender
                .publish_bytes(topic.clone(), QoS::AtLeastOnce, false, p)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut acked = 0;
    while acked < total {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => {
                feeder.abort();
                bail!(
                    "{client_id}: MQTT connection failed after {acked} of {total} acknowledgements: {e}"
                );
            }
        }
    }
    let _ = feeder.await;
    let _ = client.disconnect().await;
    // Let the DISCONNECT go out before dropping the connection.
    for _ in 0..4 {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(())
}
