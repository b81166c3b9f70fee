//! PUBACK, PUBREC, PUBREL and PUBCOMP: they share one layout (packet
//! identifier, then in v5 an optional reason code and properties), so one
//! struct serves all four; [`super::Packet`] tells them apart.

use bytes::{BufMut, BytesMut};

use super::ProtocolVersion;
use crate::Properties;
use crate::error::{Error, Result};
use crate::wire::{Reader, put_fixed_header};

/// Body of a PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PubAck {
    /// Packet identifier of the PUBLISH being acknowledged.
    pub packet_id: u16,
    /// v5 reason code (0 = success); always 0 in 3.1.1.
    pub reason_code: u8,
    /// v5 properties (reason string, user properties).
    pub properties: Properties,
}

impl PubAck {
    /// A success acknowledgement for `packet_id`.
    pub fn new(packet_id: u16) -> Self {
        Self {
            packet_id,
            ..Self::default()
        }
    }

    pub(crate) fn read(mut r: Reader, version: ProtocolVersion) -> Result<Self> {
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(Error::Malformed {
                packet: r.ctx(),
                reason: "packet identifier 0",
            });
        }
        let mut ack = Self::new(packet_id);
        if version.is_v5() {
            if !r.is_empty() {
                ack.reason_code = r.u8()?;
            }
            if !r.is_empty() {
                ack.properties = Properties::read(&mut r)?;
            }
        }
        r.finish()?;
        Ok(ack)
    }

    pub(crate) fn encode(
        &self,
        first: u8,
        name: &'static str,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<()> {
        if self.packet_id == 0 {
            return Err(Error::InvalidForEncoding {
                packet: name,
                reason: "packet identifier 0",
            });
        }
        let v5 = version.is_v5();
        let with_props = v5 && !self.properties.is_empty();
        let with_reason = v5 && (self.reason_code != 0 || with_props);
        let len = 2
            + usize::from(with_reason)
            + if with_props {
                self.properties.wire_len()
            } else {
                0
            };
        put_fixed_header(out, first, len, name)?;
        out.put_u16(self.packet_id);
        if with_reason {
            out.put_u8(self.reason_code);
        }
        if with_props {
            self.properties.write(out)?;
        }
        Ok(())
    }
}
