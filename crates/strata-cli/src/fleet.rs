//! MQTT publishers for the demo and the benchmarks: a simulated device that
//! streams plausible machine signals, and a bulk publisher that sends
//! pre-encoded batches as fast as the broker acknowledges them.
//!
//! Both use `rumqttc`, a client written outside this project, so what they
//! measure and exercise is the hub as any device would see it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use strata_proto::payload::{Encoding, encode_telemetry};
use strata_proto::{SignalSeries, TelemetryBatch};

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

/// A deterministic noise source (xorshift), so simulations repeat exactly.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }
}

/// One second of a simulated machine: temperature, vibration and motor
/// current, `per_second` readings each, as batch `seq` of stream `sim`.
pub fn machine_batch(
    device_index: u64,
    seq: u64,
    start_ns: i64,
    per_second: usize,
) -> TelemetryBatch {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15 ^ (device_index << 32) ^ seq);
    let step = 1_000_000_000 / per_second as i64;
    let ts: Vec<i64> = (0..per_second as i64)
        .map(|i| start_ns + i * step)
        .collect();
    let t = |i: usize| (ts[i] as f64) / 1e9;
    let phase = device_index as f64 * 0.7;
    let series = |name: &str, unit: &str, f: &mut dyn FnMut(usize) -> f64| SignalSeries {
        name: name.into(),
        unit: unit.into(),
        ts_ns: ts.clone(),
        values: (0..per_second).map(&mut *f).collect(),
        quality: vec![],
    };
    TelemetryBatch {
        stream: "sim".into(),
        seq,
        signals: vec![
            series("temperature", "Cel", &mut |i| {
                55.0 + 5.0 * (t(i) / 60.0 + phase).sin() + noise.next()
            }),
            series("vibration_rms", "mm/s", &mut |i| {
                2.0 + 0.5 * (t(i) / 7.0 + phase).sin().abs() + 0.2 * noise.next()
            }),
            series("current", "A", &mut |i| {
                12.0 + 1.5 * (t(i) / 30.0 + phase).cos() + 0.3 * noise.next()
            }),
        ],
    }
}

/// Streams simulated machine telemetry once a second until the task is
/// cancelled, reconnecting (with backoff) whenever the connection drops.
pub async fn simulate_machine(
    addr: SocketAddr,
    login: Login,
    device_index: u64,
) -> anyhow::Result<()> {
    let topic = format!("strata/v1/{}/up/telemetry", login.device);
    let (client, mut eventloop) =
        AsyncClient::new(options(addr, &login.device, Some(&login), 32), 64);
    let publisher = client.clone();
    // Sequence numbers start from the clock so a restarted simulator never
    // reuses one (the hub would take it for a retry).
    let first_seq = (strata_hub::now_ns() / 1_000_000_000) as u64;
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for seq in first_seq.. {
            tick.tick().await;
            let start = strata_hub::now_ns() - 1_000_000_000;
            let payload = encode_telemetry(
                &machine_batch(device_index, seq, start, 10),
                Encoding::Protobuf,
            );
            if publisher
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut backoff = Duration::from_millis(200);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => backoff = Duration::from_millis(200),
            Ok(_) => {}
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                ticker.abort();
                return Err(anyhow::anyhow!(
                    "{}: the hub refused the connection: {code:?}",
                    login.device
                ))
                .context("is the device revoked?");
            }
            Err(e) => {
                tracing::debug!(device = %login.device, "connection lost, retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_batches_are_valid_and_repeatable() {
        let a = machine_batch(3, 7, 1_700_000_000_000_000_000, 10);
        assert_eq!(a, machine_batch(3, 7, 1_700_000_000_000_000_000, 10));
        assert_ne!(a, machine_batch(4, 7, 1_700_000_000_000_000_000, 10));
        let mut b = a.clone();
        let removed = strata_proto::validate::validate(
            &mut b,
            &Default::default(),
            1_800_000_000_000_000_000,
        )
        .unwrap();
        assert_eq!(removed.total(), 0);
        assert_eq!(b.signals.iter().map(|s| s.values.len()).sum::<usize>(), 30);
    }
}
