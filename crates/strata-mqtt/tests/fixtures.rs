//! Byte-literal fixtures for every control packet in MQTT 3.1.1 and 5, written
//! by hand from the specification, plus malformed inputs that must yield
//! errors.

use bytes::{Bytes, BytesMut};
use strata_mqtt::*;

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Decodes `bytes` into `expected`, encodes `expected` back into `bytes`, and
/// checks that every strict prefix is reported as incomplete.
fn check(version: ProtocolVersion, bytes: &[u8], expected: Packet) {
    let decoder = Decoder::default();
    let mut buf = BytesMut::from(bytes);
    let decoded = decoder.decode(&mut buf, version).expect("decodes");
    assert_eq!(decoded, Some(expected.clone()));
    assert!(buf.is_empty(), "whole fixture consumed");
    let mut out = BytesMut::new();
    expected.encode(version, &mut out).expect("encodes");
    assert_eq!(&out[..], bytes, "encoding of {}", expected.name());
    for cut in 0..bytes.len() {
        let mut part = BytesMut::from(&bytes[..cut]);
        assert_eq!(decoder.decode(&mut part, version), Ok(None), "prefix {cut}");
    }
}

fn decode(version: ProtocolVersion, bytes: &[u8]) -> Result<Option<Packet>> {
    Decoder::default().decode(&mut BytesMut::from(bytes), version)
}

#[test]
fn connect_v311_with_will_and_credentials() {
    let bytes = [
        0x10, 0x1B, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xEE, 0x00, 0x3C, 0x00, 0x03, b'a',
        b'b', b'c', 0x00, 0x01, b'w', 0x00, 0x01, b'x', 0x00, 0x01, b'u', 0x00, 0x01, b'p',
    ];
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V3,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: "abc".into(),
        will: Some(LastWill {
            topic: "w".into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
    }));
    // CONNECT is self-describing: the version argument does not matter.
    check(V3, &bytes, expected.clone());
    check(V5, &bytes, expected);
}

#[test]
fn connect_v5_with_session_expiry() {
    let bytes = [
        0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x0A, 0x05, 0x11, 0x00,
        0x00, 0x00, 0x78, 0x00, 0x01, b'c',
    ];
    check(
        V3,
        &bytes,
        Packet::Connect(Box::new(Connect {
            protocol: V5,
            clean_start: true,
            keep_alive: 10,
            properties: Properties {
                session_expiry_interval: Some(120),
                ..Properties::default()
            },
            client_id: "c".into(),
            will: None,
            username: None,
            password: None,
        })),
    );
}

#[test]
fn connect_v5_with_will_properties() {
    let bytes = [
        0x10, 0x1B, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x06, 0x00, 0x00, 0x00, 0x00, 0x01,
        b'c', 0x05, 0x18, 0x00, 0x00, 0x00, 0x05, 0x00, 0x01, b't', 0x00, 0x02, b'b', b'y',
    ];
    check(
        V5,
        &bytes,
        Packet::Connect(Box::new(Connect {
            protocol: V5,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::default(),
            client_id: "c".into(),
            will: Some(LastWill {
                topic: "t".into(),
                payload: Bytes::from_static(b"by"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties {
                    will_delay_interval: Some(5),
                    ..Properties::default()
                },
            }),
            username: None,
            password: None,
        })),
    );
}

#[test]
fn connack_both_versions() {
    check(
        V3,
        &[0x20, 0x02, 0x01, 0x00],
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: 0,
            properties: Properties::default(),
        }),
    );
    check(
        V5,
        &[0x20, 0x08, 0x00, 0x00, 0x05, 0x21, 0x00, 0x14, 0x24, 0x01],
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: 0,
            properties: Properties {
                receive_maximum: Some(20),
                maximum_qos: Some(1),
                ..Properties::default()
            },
        }),
    );
    check(
        V5,
        &[0x20, 0x03, 0x00, 0x87, 0x00],
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: reason::NOT_AUTHORIZED,
            properties: Properties::default(),
        }),
    );
}

#[test]
fn publish_v311() {
    check(
        V3,
        &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "a/b".into(),
            packet_id: 0,
            properties: Properties::default(),
            payload: Bytes::from_static(b"hi"),
        }),
    );
    check(
        V3,
        &[0x3B, 0x06, 0x00, 0x01, b't', 0x00, 0x0A, b'x'],
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "t".into(),
            packet_id: 10,
            properties: Properties::default(),
            payload: Bytes::from_static(b"x"),
        }),
    );
}

#[test]
fn publish_v5_with_properties_and_alias() {
    check(
        V5,
        &[
            0x32, 0x13, 0x00, 0x01, b't', 0x00, 0x01, 0x0C, 0x01, 0x01, 0x23, 0x00, 0x02, 0x26,
            0x00, 0x01, b'k', 0x00, 0x01, b'v', b'p',
        ],
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t".into(),
            packet_id: 1,
            properties: Properties {
                payload_format_indicator: Some(1),
                topic_alias: Some(2),
                user_properties: vec![("k".into(), "v".into())],
                ..Properties::default()
            },
            payload: Bytes::from_static(b"p"),
        }),
    );
    check(
        V5,
        &[0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x05, b'z'],
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: String::new(),
            packet_id: 0,
            properties: Properties {
                topic_alias: Some(5),
                ..Properties::default()
            },
            payload: Bytes::from_static(b"z"),
        }),
    );
}

#[test]
fn publish_acks_both_versions() {
    for v in [V3, V5] {
        check(v, &[0x40, 0x02, 0x00, 0x07], Packet::PubAck(PubAck::new(7)));
        check(v, &[0x50, 0x02, 0x00, 0x01], Packet::PubRec(PubAck::new(1)));
        check(v, &[0x62, 0x02, 0x00, 0x01], Packet::PubRel(PubAck::new(1)));
        check(
            v,
            &[0x70, 0x02, 0x00, 0x01],
            Packet::PubComp(PubAck::new(1)),
        );
    }
    check(
        V5,
        &[0x40, 0x03, 0x00, 0x07, 0x87],
        Packet::PubAck(PubAck {
            packet_id: 7,
            reason_code: reason::NOT_AUTHORIZED,
            properties: Properties::default(),
        }),
    );
    check(
        V5,
        &[
            0x40, 0x09, 0x00, 0x07, 0x10, 0x05, 0x1F, 0x00, 0x02, b'n', b'o',
        ],
        Packet::PubAck(PubAck {
            packet_id: 7,
            reason_code: reason::NO_MATCHING_SUBSCRIBERS,
            properties: Properties {
                reason_string: Some("no".into()),
                ..Properties::default()
            },
        }),
    );
    check(
        V5,
        &[0x62, 0x03, 0x00, 0x01, 0x92],
        Packet::PubRel(PubAck {
            packet_id: 1,
            reason_code: reason::PACKET_IDENTIFIER_NOT_FOUND,
            properties: Properties::default(),
        }),
    );
    // A v5 ack may spell out reason 0 with no properties; it decodes as success.
    assert_eq!(
        decode(V5, &[0x40, 0x03, 0x00, 0x07, 0x00]),
        Ok(Some(Packet::PubAck(PubAck::new(7))))
    );
}

#[test]
fn subscribe_both_versions() {
    check(
        V3,
        &[
            0x82, 0x0E, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'+', 0x01, 0x00, 0x03, b'b', b'/',
            b'#', 0x00,
        ],
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![
                SubscribeFilter {
                    filter: "a/+".into(),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..SubscriptionOptions::default()
                    },
                },
                SubscribeFilter {
                    filter: "b/#".into(),
                    options: SubscriptionOptions::default(),
                },
            ],
        }),
    );
    check(
        V5,
        &[
            0x82, 0x09, 0x00, 0x02, 0x02, 0x0B, 0x05, 0x00, 0x01, b'x', 0x2D,
        ],
        Packet::Subscribe(Subscribe {
            packet_id: 2,
            properties: Properties {
                subscription_identifiers: vec![5],
                ..Properties::default()
            },
            filters: vec![SubscribeFilter {
                filter: "x".into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
            }],
        }),
    );
}

#[test]
fn suback_unsubscribe_unsuback_both_versions() {
    check(
        V3,
        &[0x90, 0x04, 0x00, 0x01, 0x01, 0x80],
        Packet::SubAck(SubAck {
            packet_id: 1,
            properties: Properties::default(),
            return_codes: vec![1, 0x80],
        }),
    );
    check(
        V5,
        &[0x90, 0x05, 0x00, 0x02, 0x00, 0x01, 0x87],
        Packet::SubAck(SubAck {
            packet_id: 2,
            properties: Properties::default(),
            return_codes: vec![1, reason::NOT_AUTHORIZED],
        }),
    );
    let unsub = |props| {
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 3,
            properties: props,
            filters: vec!["a".into()],
        })
    };
    check(
        V3,
        &[0xA2, 0x05, 0x00, 0x03, 0x00, 0x01, b'a'],
        unsub(Properties::default()),
    );
    check(
        V5,
        &[0xA2, 0x06, 0x00, 0x03, 0x00, 0x00, 0x01, b'a'],
        unsub(Properties::default()),
    );
    check(
        V3,
        &[0xB0, 0x02, 0x00, 0x03],
        Packet::UnsubAck(UnsubAck {
            packet_id: 3,
            ..UnsubAck::default()
        }),
    );
    check(
        V5,
        &[0xB0, 0x05, 0x00, 0x03, 0x00, 0x00, 0x11],
        Packet::UnsubAck(UnsubAck {
            packet_id: 3,
            properties: Properties::default(),
            reason_codes: vec![0x00, reason::NO_SUBSCRIPTION_EXISTED],
        }),
    );
}

#[test]
fn ping_disconnect_auth() {
    for v in [V3, V5] {
        check(v, &[0xC0, 0x00], Packet::PingReq);
        check(v, &[0xD0, 0x00], Packet::PingResp);
        check(v, &[0xE0, 0x00], Packet::Disconnect(Disconnect::default()));
    }
    check(
        V5,
        &[0xE0, 0x01, 0x04],
        Packet::Disconnect(Disconnect {
            reason_code: reason::DISCONNECT_WITH_WILL,
            properties: Properties::default(),
        }),
    );
    check(
        V5,
        &[0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00],
        Packet::Disconnect(Disconnect {
            reason_code: 0,
            properties: Properties {
                session_expiry_interval: Some(0),
                ..Properties::default()
            },
        }),
    );
    check(V5, &[0xF0, 0x00], Packet::Auth(Auth::default()));
    check(
        V5,
        &[0xF0, 0x06, 0x18, 0x04, 0x15, 0x00, 0x01, b'm'],
        Packet::Auth(Auth {
            reason_code: 0x18,
            properties: Properties {
                authentication_method: Some("m".into()),
                ..Properties::default()
            },
        }),
    );
}

#[test]
fn malformed_inputs_are_errors() {
    let cases: &[(ProtocolVersion, &[u8], Error)] = &[
        (
            V3,
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Error::MalformedRemainingLength,
        ),
        (V3, &[0x00, 0x00], Error::InvalidPacketType(0)),
        (V3, &[0xF0, 0x00], Error::InvalidPacketType(15)),
        (
            V3,
            &[0x10, 0x03, 0x00, 0x04, b'M'],
            Error::Truncated("CONNECT"),
        ),
        (
            V3,
            &[0x60, 0x02, 0x00, 0x01],
            Error::InvalidFlags {
                packet: "PUBREL",
                flags: 0,
            },
        ),
        (
            V3,
            &[
                0x10, 0x0C, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x00,
            ],
            Error::UnsupportedProtocolName("MQIsdp".into()),
        ),
        (
            V3,
            &[
                0x10, 0x0A, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x00,
            ],
            Error::UnsupportedProtocolLevel(6),
        ),
        (
            V3,
            &[0x30, 0x04, 0x00, 0x01, 0xFF, b'x'],
            Error::InvalidString("PUBLISH"),
        ),
        (
            V3,
            &[0x36, 0x04, 0x00, 0x01, b't', b'x'],
            Error::InvalidQoS("PUBLISH"),
        ),
        (
            V3,
            &[0x40, 0x03, 0x00, 0x01, 0x00],
            Error::TrailingBytes("PUBACK"),
        ),
        (V3, &[0xC0, 0x01, 0x00], Error::TrailingBytes("PINGREQ")),
        (
            V5,
            &[0x40, 0x05, 0x00, 0x01, 0x00, 0x02, 0x7F],
            Error::Truncated("PUBACK"),
        ),
        (
            V5,
            &[0x40, 0x06, 0x00, 0x01, 0x00, 0x02, 0x7F, 0x00],
            Error::UnknownProperty(0x7F),
        ),
    ];
    for (version, bytes, expected) in cases {
        assert_eq!(
            &decode(*version, bytes).unwrap_err(),
            expected,
            "{bytes:02x?}"
        );
    }
    // Reserved CONNECT flag, QoS 1 PUBLISH with packet id 0, empty SUBSCRIBE.
    assert!(
        decode(
            V3,
            &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x00, 0x00, 0x00
            ]
        )
        .is_err()
    );
    assert!(decode(V3, &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00]).is_err());
    assert!(decode(V3, &[0x82, 0x02, 0x00, 0x01]).is_err());
}

#[test]
fn oversized_packet_is_refused_before_its_body_arrives() {
    let decoder = Decoder::new(1024);
    // PUBLISH declaring 2,000,000 bytes of body; only the header is present.
    let mut buf = BytesMut::from(&[0x30u8, 0x80, 0x89, 0x7A][..]);
    assert_eq!(
        decoder.decode(&mut buf, V3),
        Err(Error::PacketTooLarge {
            size: 2_000_004,
            max: 1024
        })
    );
}
