//! UNSUBSCRIBE: a list of topic filters to remove.

use bytes::{BufMut, BytesMut};

use super::{ProtocolVersion, kind};
use crate::Properties;
use crate::error::{Error, Result};
use crate::wire::{Reader, put_fixed_header, put_string};

const NAME: &str = "UNSUBSCRIBE";

/// UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// v5 properties.
    pub properties: Properties,
    /// At least one filter, exactly as subscribed.
    pub filters: Vec<String>,
}

impl Unsubscribe {
    pub(crate) fn read(mut r: Reader, version: ProtocolVersion) -> Result<Self> {
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(Error::Malformed {
                packet: NAME,
                reason: "packet identifier 0",
            });
        }
        let properties = super::read_props(&mut r, version)?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(r.string()?);
        }
        if filters.is_empty() {
            return Err(Error::Malformed {
                packet: NAME,
                reason: "no topic filter",
            });
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<()> {
        if self.packet_id == 0 || self.filters.is_empty() {
            return Err(Error::InvalidForEncoding {
                packet: NAME,
                reason: "needs a non-zero packet identifier and at least one filter",
            });
        }
        let len = 2
            + super::props_len(&self.properties, version)
            + self.filters.iter().map(|f| 2 + f.len()).sum::<usize>();
        put_fixed_header(out, kind::UNSUBSCRIBE << 4 | 0b0010, len, NAME)?;
        out.put_u16(self.packet_id);
        super::write_props(&self.properties, version, out)?;
        for f in &self.filters {
            put_string(out, f, "topic filter")?;
        }
        Ok(())
    }
}
