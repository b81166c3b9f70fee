//! SUBACK: one return/reason code per filter of the SUBSCRIBE it answers.

use bytes::{BufMut, BytesMut};

use super::{ProtocolVersion, kind};
use crate::Properties;
use crate::error::{Error, Result};
use crate::wire::{Reader, put_fixed_header};

const NAME: &str = "SUBACK";

/// SUBACK packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// v5 properties.
    pub properties: Properties,
    /// Granted QoS (0, 1, 2) or a failure code (0x80 in 3.1.1; >= 0x80 in v5).
    pub return_codes: Vec<u8>,
}

impl SubAck {
    pub(crate) fn read(mut r: Reader, version: ProtocolVersion) -> Result<Self> {
        let packet_id = r.u16()?;
        let properties = super::read_props(&mut r, version)?;
        let return_codes = r.rest().to_vec();
        if return_codes.is_empty() {
            return Err(Error::Malformed {
                packet: NAME,
                reason: "no return code",
            });
        }
        if !version.is_v5() && return_codes.iter().any(|c| !matches!(c, 0 | 1 | 2 | 0x80)) {
            return Err(Error::Malformed {
                packet: NAME,
                reason: "3.1.1 return codes must be 0, 1, 2 or 0x80",
            });
        }
        Ok(Self {
            packet_id,
            properties,
            return_codes,
        })
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<()> {
        let len = 2 + super::props_len(&self.properties, version) + self.return_codes.len();
        put_fixed_header(out, kind::SUBACK << 4, len, NAME)?;
        out.put_u16(self.packet_id);
        super::write_props(&self.properties, version, out)?;
        out.put_slice(&self.return_codes);
        Ok(())
    }
}
