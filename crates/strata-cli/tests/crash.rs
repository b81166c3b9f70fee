//! SIGKILL the hub in the middle of a stream: after a restart every batch
//! it acknowledged is stored, exactly once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;
use strata_proto::payload::{Encoding, encode_telemetry};
use strata_proto::{SignalSeries, TelemetryBatch};

fn batch(seq: u64, base: i64) -> Vec<u8> {
    let b = TelemetryBatch {
        stream: "main".into(),
        seq,
        signals: vec![SignalSeries {
            name: "count".into(),
            unit: "1".into(),
            ts_ns: vec![base + seq as i64],
            values: vec![seq as f64],
            quality: vec![],
        }],
    };
    encode_telemetry(&b, Encoding::Protobuf)
}

/// Publishes seq `from..` with up to 20 in flight until the connection
/// breaks or `until` is acknowledged; returns the acknowledged seqs.
async fn publish(
    addr: std::net::SocketAddr,
    cred: &str,
    from: u64,
    until: u64,
    base: i64,
) -> Vec<u64> {
    let mut o = MqttOptions::new("crash-1", addr.ip().to_string(), addr.port());
    o.set_credentials("crash-1", cred);
    o.set_inflight(20);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(o, 20);
    let feeder = tokio::spawn(async move {
        for seq in from..=until {
            if client
                .publish(
                    "strata/v1/crash-1/up/telemetry",
                    QoS::AtLeastOnce,
                    false,
                    batch(seq, base),
                )
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut next_seq = from;
    let mut in_flight: HashMap<u16, u64> = HashMap::new();
    let mut acked = Vec::new();
    loop {
        match events.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                in_flight.insert(pkid, next_seq);
                next_seq += 1;
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let seq = in_flight
                    .remove(&ack.pkid)
                    .expect("ack for a publish in flight");
                acked.push(seq);
                if seq == until {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    feeder.abort();
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let base = now_ns() - 1_000_000_000_000;
    let mut acked_total = Vec::new();
    let mut next = 1;
    let mut cred = String::new();
    for round in 0..3 {
        let hub = HubProcess::start(dir.path());
        if round == 0 {
            cred = hub.provision("crash-1", json!({}));
        }
        let addr = hub.mqtt;
        let c = cred.clone();
        let stream = tokio::spawn(async move { publish(addr, &c, next, u64::MAX, base).await });
        // Kill the hub once the stream is well under way.
        tokio::task::block_in_place(|| {
            eventually(Duration::from_secs(60), "batches stored", || {
                hub.metric("strata_batches_stored_total") >= 150.0
            })
        });
        hub.kill();
        let acked = stream.await.unwrap();
        assert!(
            !acked.is_empty(),
            "round {round}: some batches were acknowledged"
        );
        eprintln!(
            "round {round}: {} batches acknowledged before SIGKILL, up to seq {}",
            acked.len(),
            acked.iter().max().unwrap()
        );
        // Like a device's outbox: resume right after the last acknowledged
        // batch, resending whatever was in flight when the hub died.
        next = *acked.iter().max().unwrap() + 1;
        acked_total.extend(acked);
    }

    let hub = HubProcess::start(dir.path());
    // Resend a few already-acknowledged batches: they must not be stored twice.
    let resent = publish(hub.mqtt, &cred, next - 5, next + 4, base).await;
    assert_eq!(resent.len(), 10);
    acked_total.extend(resent);

    let stored: Vec<u64> = tokio::task::block_in_place(|| hub.readings("crash-1", "count"))
        .into_iter()
        .map(|(_, v)| v as u64)
        .collect();
    let mut unique = stored.clone();
    unique.dedup();
    assert_eq!(unique.len(), stored.len(), "a batch was stored twice");
    let stored: std::collections::HashSet<u64> = stored.into_iter().collect();
    let missing: Vec<u64> = acked_total
        .iter()
        .copied()
        .filter(|s| !stored.contains(s))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(
        acked_total.len() > 300,
        "the test streamed enough ({})",
        acked_total.len()
    );
}
