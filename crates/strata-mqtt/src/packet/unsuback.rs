//! UNSUBACK: acknowledges UNSUBSCRIBE; in v5 with one reason code per filter.

use bytes::{BufMut, BytesMut};

use super::{ProtocolVersion, kind};
use crate::Properties;
use crate::error::Result;
use crate::wire::{Reader, put_fixed_header};

const NAME: &str = "UNSUBACK";

/// UNSUBACK packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// v5 properties.
    pub properties: Properties,
    /// v5 reason codes, one per filter (0x00 success, 0x11 no subscription
    /// existed, ...); empty and not sent in 3.1.1.
    pub reason_codes: Vec<u8>,
}

impl UnsubAck {
    pub(crate) fn read(mut r: Reader, version: ProtocolVersion) -> Result<Self> {
        let packet_id = r.u16()?;
        let properties = super::read_props(&mut r, version)?;
        let reason_codes = if version.is_v5() {
            r.rest().to_vec()
        } else {
            Vec::new()
        };
        r.finish()?;
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<()> {
        let codes = if version.is_v5() {
            &self.reason_codes[..]
        } else {
            &[]
        };
        let len = 2 + super::props_len(&self.properties, version) + codes.len();
        put_fixed_header(out, kind::UNSUBACK << 4, len, NAME)?;
        out.put_u16(self.packet_id);
        super::write_props(&self.properties, version, out)?;
        out.put_slice(codes);
        Ok(())
    }
}
