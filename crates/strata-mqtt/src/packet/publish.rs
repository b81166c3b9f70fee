//! PUBLISH: an application message. The payload is a zero-copy slice of the
//! read buffer. Topic syntax is not checked here; receivers use
//! [`crate::topic::validate_topic_name`] (an empty topic is legal in v5 when a
//! topic alias is present).

use bytes::{BufMut, Bytes, BytesMut};

use super::{ProtocolVersion, QoS, kind};
use crate::Properties;
use crate::error::{Error, Result};
use crate::wire::{Reader, put_fixed_header, put_string};

const NAME: &str = "PUBLISH";

/// PUBLISH packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Redelivery flag.
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name (may be empty in v5 when `properties.topic_alias` is set).
    pub topic: String,
    /// Packet identifier; 0 for QoS 0 (not on the wire), non-zero otherwise.
    pub packet_id: u16,
    /// v5 PUBLISH properties.
    pub properties: Properties,
    /// Application payload.
    pub payload: Bytes,
}

impl Publish {
    pub(crate) fn read(flags: u8, mut r: Reader, version: ProtocolVersion) -> Result<Self> {
        let dup = flags & 0x08 != 0;
        let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(Error::InvalidQoS(NAME))?;
        let retain = flags & 0x01 != 0;
        if qos == QoS::AtMostOnce && dup {
            return Err(Error::Malformed {
                packet: NAME,
                reason: "DUP flag set on a QoS 0 message",
            });
        }
        let topic = r.string()?;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            let id = r.u16()?;
            if id == 0 {
                return Err(Error::Malformed {
                    packet: NAME,
                    reason: "packet identifier 0 on a QoS 1/2 message",
                });
            }
            id
        };
        let properties = super::read_props(&mut r, version)?;
        let payload = r.rest();
        Ok(Self {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            properties,
            payload,
        })
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<()> {
        encode_publish(
            out,
            version,
            PublishHeader {
                dup: self.dup,
                qos: self.qos,
                retain: self.retain,
                packet_id: self.packet_id,
            },
            &self.topic,
            &self.properties,
            &self.payload,
        )
        .map(|_| ())
    }
}

/// Flags and packet identifier of a PUBLISH, for [`encode_publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishHeader {
    /// Redelivery flag (must be false for QoS 0).
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Packet identifier, non-zero for QoS 1/2, ignored for QoS 0.
    pub packet_id: u16,
}

/// Encodes a PUBLISH from borrowed parts, so a broker can fan one stored
/// message out to many connections without cloning topic or properties.
/// Returns the number of bytes written.
pub fn encode_publish(
    out: &mut BytesMut,
    version: ProtocolVersion,
    header: PublishHeader,
    topic: &str,
    properties: &Properties,
    payload: &[u8],
) -> Result<usize> {
    if header.qos != QoS::AtMostOnce && header.packet_id == 0 {
        return Err(Error::InvalidForEncoding {
            packet: NAME,
            reason: "QoS 1/2 requires a non-zero packet identifier",
        });
    }
    if header.qos == QoS::AtMostOnce && header.dup {
        return Err(Error::InvalidForEncoding {
            packet: NAME,
            reason: "DUP must be false for QoS 0",
        });
    }
    let start = out.len();
    let id_len = if header.qos == QoS::AtMostOnce { 0 } else { 2 };
    let len = 2 + topic.len() + id_len + super::props_len(properties, version) + payload.len();
    let mut first = kind::PUBLISH << 4 | (header.qos as u8) << 1;
    if header.dup {
        first |= 0x08;
    }
    if header.retain {
        first |= 0x01;
    }
    put_fixed_header(out, first, len, NAME)?;
    put_string(out, topic, "topic name")?;
    if id_len > 0 {
        out.put_u16(header.packet_id);
    }
    super::write_props(properties, version, out)?;
    out.put_slice(payload);
    Ok(out.len() - start)
}
