//! DISCONNECT: empty in 3.1.1; in v5 an optional reason code and properties,
//! and may be sent by the server too.

use bytes::{BufMut, BytesMut};

use super::{ProtocolVersion, kind};
use crate::Properties;
use crate::error::Result;
use crate::wire::{Reader, put_fixed_header};

const NAME: &str = "DISCONNECT";

/// DISCONNECT packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// v5 reason code (0 = normal disconnection, 0x04 = with will message).
    pub reason_code: u8,
    /// v5 properties (session expiry, reason string, server reference).
    pub properties: Properties,
}

impl Disconnect {
    pub(crate) fn read(mut r: Reader, version: ProtocolVersion) -> Result<Self> {
        let mut d = Self::default();
        if version.is_v5() {
            if !r.is_empty() {
                d.reason_code = r.u8()?;
            }
            if !r.is_empty() {
                d.properties = Properties::read(&mut r)?;
            }
        }
        r.finish()?;
        Ok(d)
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<()> {
        if !version.is_v5() {
            return put_fixed_header(out, kind::DISCONNECT << 4, 0, NAME);
        }
        let with_props = !self.properties.is_empty();
        let with_reason = self.reason_code != 0 || with_props;
        let len = usize::from(with_reason)
            + if with_props {
                self.properties.wire_len()
            } else {
                0
            };
        put_fixed_header(out, kind::DISCONNECT << 4, len, NAME)?;
        if with_reason {
            out.put_u8(self.reason_code);
        }
        if with_props {
            self.properties.write(out)?;
        }
        Ok(())
    }
}
