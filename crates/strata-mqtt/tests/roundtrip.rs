//! Property tests: any valid packet encodes and decodes back to itself in both
//! protocol versions, a stream of packets fed in arbitrary chunks decodes to
//! the same packets as the whole stream, and arbitrary bytes never panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use strata_mqtt::*;

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9/+#é ]{0,12}"
}

fn bin() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn props() -> impl Strategy<Value = Properties> {
    (
        (
            proptest::option::of(0u8..=1),
            proptest::option::of(any::<u32>()),
            proptest::option::of(text()),
            proptest::option::of(bin()),
            proptest::collection::vec(1u32..=MAX_VAR_INT, 0..3),
            proptest::option::of(any::<u32>()),
        ),
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(text()),
            proptest::option::of(1u16..),
            proptest::option::of(any::<u16>()),
            proptest::collection::vec((text(), text()), 0..3),
            proptest::option::of(1u32..),
            proptest::option::of(0u8..=1),
        ),
    )
        .prop_map(
            |((pfi, mei, ct, cd, sids, sei), (ska, rs, rm, ta, up, mps, ra))| Properties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                content_type: ct,
                correlation_data: cd,
                subscription_identifiers: sids,
                session_expiry_interval: sei,
                server_keep_alive: ska,
                reason_string: rs,
                receive_maximum: rm,
                topic_alias: ta,
                user_properties: up,
                maximum_packet_size: mps,
                retain_available: ra,
                ..Properties::default()
            },
        )
}

fn packet() -> impl Strategy<Value = Packet> {
    let connect = (
        any::<bool>(),
        any::<u16>(),
        props(),
        text(),
        proptest::option::of((text(), bin(), qos(), any::<bool>(), props())),
        proptest::option::of(text()),
        proptest::option::of(bin()),
    )
        .prop_map(
            |(clean_start, keep_alive, properties, client_id, will, username, password)| {
                Packet::Connect(Box::new(Connect {
                    protocol: ProtocolVersion::V5,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will: will.map(|(topic, payload, qos, retain, properties)| LastWill {
                        topic,
                        payload,
                        qos,
                        retain,
                        properties,
                    }),
                    username,
                    password,
                }))
            },
        );
    let publish = (
        any::<bool>(),
        qos(),
        any::<bool>(),
        text(),
        1u16..,
        props(),
        bin(),
    )
        .prop_map(|(dup, qos, retain, topic, id, properties, payload)| {
            let at_most_once = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !at_most_once,
                qos,
                retain,
                topic,
                packet_id: if at_most_once { 0 } else { id },
                properties,
                payload,
            })
        });
    let ack = (0u8..4, 1u16.., any::<u8>(), props()).prop_map(
        |(k, packet_id, reason_code, properties)| {
            let a = PubAck {
                packet_id,
                reason_code,
                properties,
            };
            match k {
                0 => Packet::PubAck(a),
                1 => Packet::PubRec(a),
                2 => Packet::PubRel(a),
                _ => Packet::PubComp(a),
            }
        },
    );
    let subscribe = (
        1u16..,
        props(),
        proptest::collection::vec((text(), qos(), any::<bool>(), any::<bool>(), 0u8..3), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters: filters
                    .into_iter()
                    .map(|(filter, qos, no_local, rap, rh)| SubscribeFilter {
                        filter,
                        options: SubscriptionOptions {
                            qos,
                            no_local,
                            retain_as_published: rap,
                            retain_handling: match rh {
                                0 => RetainHandling::OnSubscribe,
                                1 => RetainHandling::OnNewSubscription,
                                _ => RetainHandling::Never,
                            },
                        },
                    })
                    .collect(),
            })
        });
    let suback = (
        any::<u16>(),
        props(),
        proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(2), Just(0x80)], 1..4),
    )
        .prop_map(|(packet_id, properties, return_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                return_codes,
            })
        });
    let unsubscribe = (1u16.., props(), proptest::collection::vec(text(), 1..4)).prop_map(
        |(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        },
    );
    let unsuback = (
        any::<u16>(),
        props(),
        proptest::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
        });
    let connack =
        (any::<bool>(), any::<u8>(), props()).prop_map(|(session_present, code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                code,
                properties,
            })
        });
    let disconnect = (any::<u8>(), props()).prop_map(|(reason_code, properties)| {
        Packet::Disconnect(Disconnect {
            reason_code,
            properties,
        })
    });
    let auth = (any::<u8>(), props()).prop_map(|(reason_code, properties)| {
        Packet::Auth(Auth {
            reason_code,
            properties,
        })
    });
    prop_oneof![
        connect,
        connack,
        publish,
        ack,
        subscribe,
        suback,
        unsubscribe,
        unsuback,
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect,
        auth,
    ]
}

/// Removes what MQTT 3.1.1 cannot carry, so the packet round-trips in 3.1.1.
fn as_v311(p: Packet) -> Option<Packet> {
    let none = Properties::default;
    Some(match p {
        Packet::Connect(mut c) => {
            c.protocol = ProtocolVersion::V311;
            c.properties = none();
            if let Some(w) = &mut c.will {
                w.properties = none();
            }
            if c.username.is_none() {
                c.password = None;
            }
            Packet::Connect(c)
        }
        Packet::ConnAck(mut c) => {
            c.properties = none();
            Packet::ConnAck(c)
        }
        Packet::Publish(mut x) => {
            x.properties = none();
            Packet::Publish(x)
        }
        Packet::PubAck(a) => Packet::PubAck(PubAck::new(a.packet_id)),
        Packet::PubRec(a) => Packet::PubRec(PubAck::new(a.packet_id)),
        Packet::PubRel(a) => Packet::PubRel(PubAck::new(a.packet_id)),
        Packet::PubComp(a) => Packet::PubComp(PubAck::new(a.packet_id)),
        Packet::Subscribe(mut s) => {
            s.properties = none();
            for f in &mut s.filters {
                f.options = SubscriptionOptions {
                    qos: f.options.qos,
                    ..SubscriptionOptions::default()
                };
            }
            Packet::Subscribe(s)
        }
        Packet::SubAck(mut s) => {
            s.properties = none();
            Packet::SubAck(s)
        }
        Packet::Unsubscribe(mut u) => {
            u.properties = none();
            Packet::Unsubscribe(u)
        }
        Packet::UnsubAck(u) => Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            ..UnsubAck::default()
        }),
        Packet::Disconnect(_) => Packet::Disconnect(Disconnect::default()),
        Packet::Auth(_) => return None,
        other => other,
    })
}

fn roundtrip(version: ProtocolVersion, p: &Packet) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    p.encode(version, &mut buf).expect("valid packet encodes");
    let decoded = Decoder::new(usize::MAX).decode(&mut buf, version);
    prop_assert_eq!(decoded, Ok(Some(p.clone())));
    prop_assert!(buf.is_empty());
    Ok(())
}

proptest! {
    #[test]
    fn v5_round_trip(p in packet()) {
        roundtrip(ProtocolVersion::V5, &p)?;
    }

    #[test]
    fn v311_round_trip(p in packet()) {
        if let Some(p) = as_v311(p) {
            roundtrip(ProtocolVersion::V311, &p)?;
        }
    }

    #[test]
    fn chunked_stream_equals_batch(
        packets in proptest::collection::vec(packet(), 1..6),
        chunk in 1usize..17,
    ) {
        let v = ProtocolVersion::V5;
        let mut stream = BytesMut::new();
        for p in &packets {
            p.encode(v, &mut stream).unwrap();
        }
        let decoder = Decoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(p) = decoder.decode(&mut buf, v).unwrap() {
                out.push(p);
            }
        }
        prop_assert_eq!(out, packets);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let mut buf = BytesMut::from(&bytes[..]);
            let decoder = Decoder::new(48);
            while let Ok(Some(_)) = decoder.decode(&mut buf, v) {}
        }
    }

    #[test]
    fn mutated_valid_packets_never_panic(p in packet(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut buf = BytesMut::new();
        p.encode(ProtocolVersion::V5, &mut buf).unwrap();
        let i = pos % buf.len();
        buf[i] = byte;
        let _ = Decoder::default().decode(&mut buf, ProtocolVersion::V5);
    }
}
