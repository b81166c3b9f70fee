//! Control packet types: the [`Packet`] enum, shared enums ([`QoS`],
//! [`ProtocolVersion`]) and the per-type modules that decode and encode each
//! packet's variable header and payload.

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::wire::{Reader, put_fixed_header};

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod publish;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

pub use ack::PubAck;
pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, LastWill};
pub use disconnect::Disconnect;
pub use publish::{Publish, PublishHeader, encode_publish};
pub use suback::SubAck;
pub use subscribe::{RetainHandling, Subscribe, SubscribeFilter, SubscriptionOptions};
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;

/// Negotiated MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte sent in CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }

    /// True for MQTT 5.
    pub fn is_v5(self) -> bool {
        self == Self::V5
    }
}

/// Quality of service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// QoS 0: fire and forget.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: acknowledged with PUBACK, may duplicate.
    AtLeastOnce = 1,
    /// QoS 2: four-way handshake, exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two-bit QoS value; 3 is invalid.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// Packet type numbers from the fixed header's high nibble.
pub(crate) mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (client to server); boxed because it carries two property
    /// blocks (connect and will) and would bloat every other variant.
    Connect(Box<Connect>),
    /// CONNACK (server to client).
    ConnAck(ConnAck),
    /// PUBLISH (both ways).
    Publish(Publish),
    /// PUBACK: QoS 1 acknowledgement.
    PubAck(PubAck),
    /// PUBREC: QoS 2 step 1.
    PubRec(PubAck),
    /// PUBREL: QoS 2 step 2.
    PubRel(PubAck),
    /// PUBCOMP: QoS 2 step 3.
    PubComp(PubAck),
    /// SUBSCRIBE (client to server).
    Subscribe(Subscribe),
    /// SUBACK (server to client).
    SubAck(SubAck),
    /// UNSUBSCRIBE (client to server).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (server to client).
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT (client to server in 3.1.1; both ways in 5).
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(Auth),
}

impl Packet {
    /// Short upper-case name of the packet type, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect(_) => "CONNECT",
            Self::ConnAck(_) => "CONNACK",
            Self::Publish(_) => "PUBLISH",
            Self::PubAck(_) => "PUBACK",
            Self::PubRec(_) => "PUBREC",
            Self::PubRel(_) => "PUBREL",
            Self::PubComp(_) => "PUBCOMP",
            Self::Subscribe(_) => "SUBSCRIBE",
            Self::SubAck(_) => "SUBACK",
            Self::Unsubscribe(_) => "UNSUBSCRIBE",
            Self::UnsubAck(_) => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect(_) => "DISCONNECT",
            Self::Auth(_) => "AUTH",
        }
    }

    /// Decodes one packet body. `first` is the fixed header's first byte and
    /// `body` exactly the remaining-length bytes that follow it.
    pub(crate) fn read(first: u8, body: Bytes, version: ProtocolVersion) -> Result<Self> {
        let packet_type = first >> 4;
        let flags = first & 0x0f;
        let expect_flags = |name: &'static str, want: u8| {
            if flags == want {
                Ok(())
            } else {
                Err(Error::InvalidFlags {
                    packet: name,
                    flags,
                })
            }
        };
        let empty = |name: &'static str, body: &Bytes| {
            if body.is_empty() {
                Ok(())
            } else {
                Err(Error::TrailingBytes(name))
            }
        };
        Ok(match packet_type {
            kind::CONNECT => {
                expect_flags("CONNECT", 0)?;
                Self::Connect(Box::new(Connect::read(Reader::new(body, "CONNECT"))?))
            }
            kind::CONNACK => {
                expect_flags("CONNACK", 0)?;
                Self::ConnAck(ConnAck::read(Reader::new(body, "CONNACK"), version)?)
            }
            kind::PUBLISH => {
                Self::Publish(Publish::read(flags, Reader::new(body, "PUBLISH"), version)?)
            }
            kind::PUBACK => {
                expect_flags("PUBACK", 0)?;
                Self::PubAck(PubAck::read(Reader::new(body, "PUBACK"), version)?)
            }
            kind::PUBREC => {
                expect_flags("PUBREC", 0)?;
                Self::PubRec(PubAck::read(Reader::new(body, "PUBREC"), version)?)
            }
            kind::PUBREL => {
                expect_flags("PUBREL", 0b0010)?;
                Self::PubRel(PubAck::read(Reader::new(body, "PUBREL"), version)?)
            }
            kind::PUBCOMP => {
                expect_flags("PUBCOMP", 0)?;
                Self::PubComp(PubAck::read(Reader::new(body, "PUBCOMP"), version)?)
            }
            kind::SUBSCRIBE => {
                expect_flags("SUBSCRIBE", 0b0010)?;
                Self::Subscribe(Subscribe::read(Reader::new(body, "SUBSCRIBE"), version)?)
            }
            kind::SUBACK => {
                expect_flags("SUBACK", 0)?;
                Self::SubAck(SubAck::read(Reader::new(body, "SUBACK"), version)?)
            }
            kind::UNSUBSCRIBE => {
                expect_flags("UNSUBSCRIBE", 0b0010)?;
                Self::Unsubscribe(Unsubscribe::read(
                    Reader::new(body, "UNSUBSCRIBE"),
                    version,
                )?)
            }
            kind::UNSUBACK => {
                expect_flags("UNSUBACK", 0)?;
                Self::UnsubAck(UnsubAck::read(Reader::new(body, "UNSUBACK"), version)?)
            }
            kind::PINGREQ => {
                expect_flags("PINGREQ", 0)?;
                empty("PINGREQ", &body)?;
                Self::PingReq
            }
            kind::PINGRESP => {
                expect_flags("PINGRESP", 0)?;
                empty("PINGRESP", &body)?;
                Self::PingResp
            }
            kind::DISCONNECT => {
                expect_flags("DISCONNECT", 0)?;
                Self::Disconnect(Disconnect::read(Reader::new(body, "DISCONNECT"), version)?)
            }
            kind::AUTH if version.is_v5() => {
                expect_flags("AUTH", 0)?;
                Self::Auth(Auth::read(Reader::new(body, "AUTH"))?)
            }
            other => return Err(Error::InvalidPacketType(other)),
        })
    }

    /// Appends the encoded packet to `out`. For [`Packet::Connect`] the version
    /// is taken from the packet itself and `version` is ignored.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<()> {
        match self {
            Self::Connect(p) => p.encode(out),
            Self::ConnAck(p) => p.encode(version, out),
            Self::Publish(p) => p.encode(version, out),
            Self::PubAck(p) => p.encode(kind::PUBACK << 4, "PUBACK", version, out),
            Self::PubRec(p) => p.encode(kind::PUBREC << 4, "PUBREC", version, out),
            Self::PubRel(p) => p.encode(kind::PUBREL << 4 | 0b0010, "PUBREL", version, out),
            Self::PubComp(p) => p.encode(kind::PUBCOMP << 4, "PUBCOMP", version, out),
            Self::Subscribe(p) => p.encode(version, out),
            Self::SubAck(p) => p.encode(version, out),
            Self::Unsubscribe(p) => p.encode(version, out),
            Self::UnsubAck(p) => p.encode(version, out),
            Self::PingReq => put_fixed_header(out, kind::PINGREQ << 4, 0, "PINGREQ"),
            Self::PingResp => put_fixed_header(out, kind::PINGRESP << 4, 0, "PINGRESP"),
            Self::Disconnect(p) => p.encode(version, out),
            Self::Auth(p) => {
                if !version.is_v5() {
                    return Err(Error::InvalidForEncoding {
                        packet: "AUTH",
                        reason: "AUTH exists only in MQTT 5",
                    });
                }
                p.encode(out)
            }
        }
    }
}

/// Reads the v5 property block, or returns empty properties for 3.1.1.
pub(crate) fn read_props(r: &mut Reader, version: ProtocolVersion) -> Result<crate::Properties> {
    if version.is_v5() {
        crate::Properties::read(r)
    } else {
        Ok(crate::Properties::default())
    }
}

/// Wire length of the property block for `version` (0 for 3.1.1).
pub(crate) fn props_len(p: &crate::Properties, version: ProtocolVersion) -> usize {
    if version.is_v5() { p.wire_len() } else { 0 }
}

/// Writes the property block for v5; nothing for 3.1.1.
pub(crate) fn write_props(
    p: &crate::Properties,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<()> {
    if version.is_v5() {
        p.write(out)
    } else {
        Ok(())
    }
}
