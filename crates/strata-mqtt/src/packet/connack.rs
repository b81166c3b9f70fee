//! CONNACK: the server's answer to CONNECT (session present flag and
//! return/reason code, plus v5 server capabilities as properties).

use bytes::{BufMut, BytesMut};

use super::{ProtocolVersion, kind};
use crate::Properties;
use crate::error::{Error, Result};
use crate::wire::{Reader, put_fixed_header};

const NAME: &str = "CONNACK";

/// CONNACK packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Whether the server resumed an existing session.
    pub session_present: bool,
    /// 3.1.1 return code (0..=5) or v5 reason code (see [`crate::reason`]).
    pub code: u8,
    /// v5 CONNACK properties.
    pub properties: Properties,
}

impl ConnAck {
    pub(crate) fn read(mut r: Reader, version: ProtocolVersion) -> Result<Self> {
        let flags = r.u8()?;
        if flags & 0xfe != 0 {
            return Err(Error::Malformed {
                packet: NAME,
                reason: "reserved acknowledge flags are set",
            });
        }
        let code = r.u8()?;
        let properties = super::read_props(&mut r, version)?;
        r.finish()?;
        Ok(Self {
            session_present: flags & 1 != 0,
            code,
            properties,
        })
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<()> {
        let len = 2 + super::props_len(&self.properties, version);
        put_fixed_header(out, kind::CONNACK << 4, len, NAME)?;
        out.put_u8(u8::from(self.session_present));
        out.put_u8(self.code);
        super::write_props(&self.properties, version, out)
    }
}
